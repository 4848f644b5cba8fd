//! How the daemon turns its normalised store into the classifier the workers run: a
//! *generation engine*. Two implement it:
//!
//! - [`Trees`]: every change lowers the whole store ([`lower::lower`]) and compiles it
//!   with the incremental tree [`Compiler`] (which reuses the subtrees of unchanged
//!   programs). The workers run a [`Classifier`].
//! - [`Identity`]: the live generation [`Live`] (an address → identity stage before
//!   the trees). A pod added or removed with a behaviour that already exists is one
//!   LPM insert; a policy change lowers only the programs of the endpoints it applies
//!   to; anything else is a full rebuild ([`Live::update`] picks). The workers run an
//!   [`IdentityClassifier`] (shared with the engine through an [`Arc`]).
//!
//! The daemon is generic over the engine, so the workers' classifier type is known at
//! compile time: the packet path has no dynamic dispatch. `tiergate run
//! --classifier identity|tree` picks one.

use std::sync::Arc;
use std::time::Instant;

use dataplane::classifier::{BuildConfig, Classifier, Compiler, IdentityClassifier};
use dataplane::program::Classify;

use crate::cluster::Cluster;
use crate::lower::{self, Applied, Live, Names};
use crate::model::ResourceKey;

/// What a change built: the classifier to publish and the names of its ids.
#[derive(Debug)]
pub struct Built<C> {
    /// The classifier the workers will run.
    pub classifier: C,
    /// Id → name tables of that classifier (flow records are named with them).
    pub names: Arc<Names>,
    /// How the engine got there: `compiled` (a whole lowering and compile), `fast`
    /// (endpoint fast path: the trees kept), `incremental` (only the changed
    /// programs' trees built) or `rebuilt` (a full identity build).
    pub path: &'static str,
    /// Lowering time (ms), when the engine lowers apart from compiling.
    pub lower_ms: f64,
    /// Compile time (ms), or the whole change when lowering is not apart.
    pub compile_ms: f64,
}

/// A generation engine (see the module doc).
pub trait Engine: Send + Sized + 'static {
    /// The classifier the workers run.
    type Classifier: Classify + 'static;
    /// The name `--classifier` gives it.
    const NAME: &'static str;

    /// The first generation, of `cluster`.
    fn start(cluster: &Cluster) -> Result<(Self, Built<Self::Classifier>), String>;

    /// The generation of `cluster`, which differs from the engine's last one in the
    /// resources under `keys` (every key created, replaced or deleted). On error the
    /// engine is as it was.
    fn change(
        &mut self,
        cluster: &Cluster,
        keys: &[ResourceKey],
    ) -> Result<Built<Self::Classifier>, String>;

    /// Brings the engine back to `cluster` after a [`Engine::change`] to a store that
    /// differed from it in `keys` and was not published (its commit failed).
    fn revert(&mut self, cluster: &Cluster, keys: &[ResourceKey]);
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The tree engine: lower everything, compile incrementally.
#[derive(Debug)]
pub struct Trees {
    compiler: Compiler,
}

impl Trees {
    fn build(&mut self, cluster: &Cluster) -> Result<Built<Classifier>, String> {
        let t = Instant::now();
        let lowered = lower::lower(cluster).map_err(|e| e.to_string())?;
        let lower_ms = ms_since(t);
        let t = Instant::now();
        let classifier = self
            .compiler
            .build(&lowered.set)
            .map_err(|e| e.to_string())?;
        Ok(Built {
            classifier,
            names: Arc::new(lowered.names),
            path: "compiled",
            lower_ms,
            compile_ms: ms_since(t),
        })
    }
}

impl Engine for Trees {
    type Classifier = Classifier;
    const NAME: &'static str = "tree";

    fn start(cluster: &Cluster) -> Result<(Self, Built<Classifier>), String> {
        let mut e = Trees {
            compiler: Compiler::new(BuildConfig::default()),
        };
        let b = e.build(cluster)?;
        Ok((e, b))
    }

    fn change(
        &mut self,
        cluster: &Cluster,
        _: &[ResourceKey],
    ) -> Result<Built<Classifier>, String> {
        self.build(cluster)
    }

    /// Nothing to undo: the compiler's subtree cache is only a cache.
    fn revert(&mut self, _: &Cluster, _: &[ResourceKey]) {}
}

/// The identity engine: a [`Live`] generation.
#[derive(Debug)]
pub struct Identity {
    live: Live,
}

impl Identity {
    fn built(&self, path: &'static str, t: Instant) -> Built<Arc<IdentityClassifier>> {
        Built {
            classifier: Arc::clone(self.live.classifier()),
            names: Arc::new(self.live.names().clone()),
            path,
            lower_ms: 0.0,
            compile_ms: ms_since(t),
        }
    }
}

impl Engine for Identity {
    type Classifier = Arc<IdentityClassifier>;
    const NAME: &'static str = "identity";

    fn start(cluster: &Cluster) -> Result<(Self, Built<Self::Classifier>), String> {
        let t = Instant::now();
        let live = Live::new(cluster.clone(), BuildConfig::default()).map_err(|e| e.to_string())?;
        let e = Identity { live };
        let b = e.built("rebuilt", t);
        Ok((e, b))
    }

    fn change(
        &mut self,
        cluster: &Cluster,
        keys: &[ResourceKey],
    ) -> Result<Built<Self::Classifier>, String> {
        let t = Instant::now();
        let applied = self.live.update(cluster, keys).map_err(|e| e.to_string())?;
        Ok(self.built(path_of(applied), t))
    }

    fn revert(&mut self, cluster: &Cluster, keys: &[ResourceKey]) {
        if self.live.update(cluster, keys).is_err()
            && let Ok(live) = Live::new(cluster.clone(), BuildConfig::default())
        {
            // The way back refused (it cannot: `cluster` built before); a fresh build
            // of the kept store is the slow twin.
            self.live = live;
        }
    }
}

fn path_of(a: Applied) -> &'static str {
    match a {
        Applied::Fast => "fast",
        Applied::Incremental => "incremental",
        _ => "rebuilt",
    }
}
