//! The policy set `tiergate run` starts with: `-f` sources, or what `--state-dir`
//! restores.
//!
//! Decision (documented in the README): on start with a state directory that holds a
//! generation, the state wins over `-f` (stderr says so, and the `-f` sources are not
//! read): the state is what the daemon last acknowledged, including every change applied
//! while it ran. With an empty (or new) state directory, the `-f` sources (or no policy)
//! seed generation 1, so the next start restores them. To start over from `-f`, give an
//! empty `--state-dir` (or move the old one away).

use std::path::{Path, PathBuf};

use crate::cluster::Cluster;
use crate::errln;
use crate::policy;
use crate::state::StateDir;
use crate::store::Store;

/// The policy set a run starts with.
#[derive(Debug)]
pub struct Initial {
    /// The store (built-in tiers and every applied resource).
    pub store: Store,
    /// Its normalised form.
    pub cluster: Cluster,
    /// The open state directory (holding its lock), to commit later changes to.
    pub state: Option<StateDir>,
}

/// Loads `-f` (or no policy) or restores `state_dir`; prints the errors and returns
/// the exit code on failure (1 invalid policy or unusable state, 2 unreadable input or
/// a state directory in use).
/// `allow_empty` accepts `-f` sources holding no resource.
pub fn initial(
    policies: &[PathBuf],
    allow_empty: bool,
    state_dir: Option<&Path>,
) -> Result<Initial, u8> {
    let Some(dir) = state_dir else {
        let (store, cluster) = from_sources(policies, allow_empty)?;
        return Ok(Initial {
            store,
            cluster,
            state: None,
        });
    };
    let (mut sd, restored) = StateDir::open(dir).map_err(|e| {
        errln!("tiergate run: {e}");
        e.exit_code()
    })?;
    if let Some(store) = restored {
        let cluster = policy::cluster(&store).map_err(|e| {
            for line in e.lines() {
                errln!("tiergate run: --state-dir {}: {line}", dir.display());
            }
            e.exit_code()
        })?;
        let what = format!(
            "restored generation {} ({} resources) from --state-dir {}",
            sd.generation(),
            store.counts().values().sum::<usize>(),
            dir.display()
        );
        if policies.is_empty() {
            errln!("tiergate run: {what}");
        } else {
            errln!(
                "tiergate run: {what}; the state wins over -f, which was not read (to start over from -f, give an empty --state-dir)"
            );
        }
        return Ok(Initial {
            store,
            cluster,
            state: Some(sd),
        });
    }
    let (store, cluster) = from_sources(policies, allow_empty)?;
    let n = sd.commit_store(&store).map_err(|e| {
        errln!("tiergate run: {e}");
        e.exit_code()
    })?;
    errln!(
        "tiergate run: --state-dir {} was empty: seeded generation {n} ({} resources) from {}",
        dir.display(),
        store.counts().values().sum::<usize>(),
        if policies.is_empty() {
            "no policy"
        } else {
            "-f"
        }
    );
    Ok(Initial {
        store,
        cluster,
        state: Some(sd),
    })
}

/// `-f` sources into a fresh store (as `replay` loads them), their keys recorded as
/// from `-f` ([`Store::file_keys`]); none: no policy.
fn from_sources(policies: &[PathBuf], allow_empty: bool) -> Result<(Store, Cluster), u8> {
    let set = if policies.is_empty() {
        policy::build(policy::Read::default())
    } else {
        policy::load_paths(policies, allow_empty)
    };
    let (mut store, cluster) = set
        .map(|s| (s.store, s.cluster))
        .map_err(|e| super::eval::print_error(&e))?;
    // Built-in tiers have no origin; everything else came from the files.
    let keys = store
        .entries()
        .filter(|(_, s)| s.origin.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    store.set_file_keys(keys);
    Ok((store, cluster))
}
