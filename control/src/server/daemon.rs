//! The daemon's state and operations, independent of the socket: the policy store,
//! the published classifier generations, the live flow records.
//!
//! A change (apply, delete, SIGHUP reload) is, under one writer lock:
//! validate and apply to a copy of the store → normalise ([`Cluster`]) → the next
//! generation from the [`Engine`] (the tree [`Trees`]: lower and compile; the
//! [`Identity`] engine: [`crate::lower::Live::update`], which takes the endpoint fast
//! path or an incremental policy change when it can) → [`Persist::commit`] → publish
//! to the workers. Any failure leaves the store, the engine, the published generation
//! and the persisted state as they were, and the error names what is wrong. Readers
//! (`get`, `flows`, `health`) never wait for a change: they read the last published
//! [`View`].
//!
//! A change runs on the thread that asked for it, at the nice value set with
//! [`Daemon::set_change_nice`] (`tiergate run --change-nice`, -10 by default) for as
//! long as it lasts: on a node that also runs other work (builds, batch jobs) a pod's
//! arrival then waits for its own CPU time, not for a share of a busy core. Background
//! work (the identity engine's compaction thread) keeps its normal priority until
//! the tree parts it is to compact reach 16 (`lower::Live`, `RAISE_AT`).
//!
//! The daemon is generic over its engine (the workers' classifier type follows), so
//! the packet path stays monomorphic.

pub use super::engine::{Engine, Identity, Trees};

use super::docs::SharedMap;
use super::engine::Built;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dataplane::flow::FlowRecord;
use dataplane::worker::{ClassifierSlot, Published};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::flows::{FlowEntry, FlowRing, render};
use super::proto::{ErrorBody, FlowFilter, KeyRef, Op, Reply, Request, SourceText, VERSION};
use crate::cluster::Cluster;
use crate::flowlog::FlowActivity;
use crate::lower::Names;
use crate::model::{Format, Kind, Resource, ResourceKey};
use crate::persist::Persist;
use crate::policy::{self, PolicyError};
use crate::store::Store;

/// Retired generations kept to name the flow records classified in them.
const KEEP_RETIRED: usize = 8;
/// How long a retired generation is kept for naming records at most.
const KEEP_RETIRED_FOR: Duration = Duration::from_secs(60);
/// How long a change waits for every worker to run it before replying.
const PICKUP_WAIT: Duration = Duration::from_secs(2);

/// What the daemon knows of the running data plane (set once the workers run).
pub struct DataplaneInfo {
    /// The policy generation each worker runs.
    pub generations: Box<dyn Fn() -> Vec<u64> + Send + Sync>,
    /// The live counters: a JSON document and its text rendering.
    pub stats: Box<dyn Fn() -> (Value, String) + Send + Sync>,
}

impl std::fmt::Debug for DataplaneInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataplaneInfo").finish_non_exhaustive()
    }
}

/// One published policy generation.
#[derive(Debug)]
pub struct Generation<C> {
    /// Generation number (as the workers report it).
    pub number: u32,
    /// The id → name tables of its classifier.
    pub names: Arc<Names>,
    /// The classifier the workers run.
    pub published: Arc<Published<C>>,
}

/// A published generation of engine `E`.
type Shared<E> = Arc<Generation<<E as Engine>::Classifier>>;

/// What readers see: the last published state.
#[derive(Debug)]
pub struct View {
    /// Policy generation.
    pub generation: u32,
    /// Every stored resource's document as JSON text, in key order.
    pub docs: SharedMap<ResourceKey, Arc<str>>,
    /// Resources per kind (built-in tiers excluded).
    pub counts: BTreeMap<Kind, usize>,
    /// When the generation was published.
    pub published_at: Instant,
}

struct Writer<E> {
    store: Store,
    /// The store normalised: kept up to date per change ([`Cluster::update`]).
    cluster: Cluster,
    engine: E,
    persist: Box<dyn Persist>,
    generation: u32,
    docs: SharedMap<ResourceKey, Arc<str>>,
}

struct Retired<C> {
    generation: Arc<Generation<C>>,
    since: Option<Instant>,
}

/// Timings of one change (ms).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ChangeTimings {
    /// Reading and validating the input, applying it to a copy of the store and
    /// normalising the result.
    pub validate_ms: f64,
    /// Lowering the store to data-plane programs (0 with the identity engine, which
    /// lowers what it needs as part of its change).
    pub lower_ms: f64,
    /// Compiling the classifier (with the identity engine: the whole
    /// [`crate::lower::Live::update`] and the copy of its names).
    pub compile_ms: f64,
    /// Persisting the store.
    pub persist_ms: f64,
    /// The changed documents and counts for `get` and `health`, the publication to
    /// the workers' slot, the views and the old store freed.
    pub publish_ms: f64,
    /// From the publication until every worker ran the generation.
    pub pickup_ms: f64,
    /// The whole change.
    pub total_ms: f64,
    /// CPU time of the change on its thread, from reading the request to the
    /// publication (the other timings are wall time, which on a busy machine also
    /// counts the time other work had the CPU).
    pub cpu_ms: f64,
    /// The nice value the change ran at ([`Daemon::set_change_nice`]; `None`: the
    /// thread's own).
    pub nice: Option<i32>,
}

/// When a change started, in wall and in thread CPU time, and the thread's priority
/// for the change (put back when the change ends and this is dropped).
struct Start {
    wall: Instant,
    cpu: Duration,
    /// The guard holding the thread at the change's nice value, and that value.
    nice: Option<(crate::sys::Nice, i32)>,
}

/// The daemon, publishing the generations of engine `E`.
pub struct Daemon<E: Engine = Trees> {
    writer: Mutex<Writer<E>>,
    view: RwLock<Arc<View>>,
    gens: Mutex<BTreeMap<u32, Retired<E::Classifier>>>,
    ring: Mutex<FlowRing>,
    follow: broadcast::Sender<Arc<FlowEntry>>,
    dataplane: RwLock<Option<DataplaneInfo>>,
    slot: Arc<ClassifierSlot<E::Classifier>>,
    started: Instant,
    /// The nice value changes run at; [`NICE_UNSET`]: the thread's own.
    change_nice: AtomicI32,
}

/// [`Daemon::change_nice`]'s "leave the thread's priority alone".
const NICE_UNSET: i32 = i32::MIN;

impl<E: Engine> std::fmt::Debug for Daemon<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("generation", &self.view().generation)
            .finish_non_exhaustive()
    }
}

/// Why a change failed: the reply's error.
pub type OpError = ErrorBody;

fn policy_error(what: &str, e: &PolicyError) -> OpError {
    let problems = e.lines();
    ErrorBody {
        code: if e.is_unreadable() {
            "bad_request"
        } else {
            "invalid"
        }
        .into(),
        message: format!(
            "{what} refused, nothing changed: {}",
            problems.first().map_or("invalid input", String::as_str)
        ),
        problems,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A resource as the document `get` prints and `apply` reads back.
pub fn document(r: &Resource) -> Value {
    let m = r.metadata();
    let mut meta = serde_json::to_value(m).unwrap_or_else(|_| json!({}));
    if let Value::Object(o) = &mut meta {
        // Fields the model keeps but does not write out: written back so that the
        // document applies to an identical resource.
        if let Some(g) = &m.generate_name {
            o.insert("generateName".into(), json!(g));
        }
        if let Some(u) = &m.uid {
            o.insert("uid".into(), json!(u));
        }
        if let Some(v) = &m.resource_version {
            o.insert("resourceVersion".into(), json!(v));
        }
        if let Some(t) = &m.creation_timestamp {
            o.insert("creationTimestamp".into(), json!(t));
        }
        if let Some(g) = m.generation {
            o.insert("generation".into(), json!(g));
        }
    }
    let spec = match r {
        Resource::NetworkPolicy(o)
        | Resource::GlobalNetworkPolicy(o)
        | Resource::StagedNetworkPolicy(o)
        | Resource::StagedGlobalNetworkPolicy(o) => serde_json::to_value(&o.spec),
        Resource::StagedKubernetesNetworkPolicy(o) | Resource::KubernetesNetworkPolicy(o) => {
            serde_json::to_value(&o.spec)
        }
        Resource::Tier(o) => serde_json::to_value(&o.spec),
        Resource::NetworkSet(o) | Resource::GlobalNetworkSet(o) => serde_json::to_value(&o.spec),
        Resource::HostEndpoint(o) => serde_json::to_value(&o.spec),
        Resource::WorkloadEndpoint(o) => serde_json::to_value(&o.spec),
        Resource::Profile(o) => serde_json::to_value(&o.spec),
        Resource::Namespace(o) => serde_json::to_value(&o.spec),
    }
    .unwrap_or(Value::Null);
    let k = r.kind();
    let mut doc = serde_json::Map::new();
    doc.insert("apiVersion".into(), json!(k.api_version()));
    doc.insert("kind".into(), json!(k.as_str()));
    doc.insert("metadata".into(), meta);
    if !(spec.is_null() || spec.as_object().is_some_and(|o| o.is_empty())) {
        doc.insert("spec".into(), spec);
    }
    Value::Object(doc)
}

fn doc_text(r: &Resource) -> Arc<str> {
    Arc::from(document(r).to_string())
}

/// The kind a user names: `networkpolicy`, `networkpolicies`, `np`, `gnp`, `tier`,
/// `knp` (Kubernetes NetworkPolicy), ... (case-insensitive).
pub fn parse_kind(s: &str) -> Result<Kind, String> {
    let l = s.to_ascii_lowercase();
    let short = match l.as_str() {
        "np" | "netpol" | "policy" | "policies" => Some(Kind::NetworkPolicy),
        "gnp" => Some(Kind::GlobalNetworkPolicy),
        "snp" => Some(Kind::StagedNetworkPolicy),
        "sgnp" => Some(Kind::StagedGlobalNetworkPolicy),
        "sknp" => Some(Kind::StagedKubernetesNetworkPolicy),
        "knp" | "kubernetesnetworkpolicy" | "kubernetesnetworkpolicies" => {
            Some(Kind::KubernetesNetworkPolicy)
        }
        "ns" => Some(Kind::Namespace),
        "wep" => Some(Kind::WorkloadEndpoint),
        "hep" => Some(Kind::HostEndpoint),
        "netset" => Some(Kind::NetworkSet),
        "gnetset" => Some(Kind::GlobalNetworkSet),
        _ => None,
    };
    if let Some(k) = short {
        return Ok(k);
    }
    let singular = if let Some(b) = l.strip_suffix("ies") {
        format!("{b}y")
    } else if let Some(b) = l.strip_suffix('s') {
        b.to_string()
    } else {
        l.clone()
    };
    Kind::ALL
        .into_iter()
        .filter(|k| *k != Kind::KubernetesNetworkPolicy)
        .find(|k| k.as_str().eq_ignore_ascii_case(&l) || k.as_str().eq_ignore_ascii_case(&singular))
        .ok_or_else(|| {
            format!(
                "unknown resource kind {s:?}: expected one of {} (or np, gnp, snp, sgnp, sknp, knp)",
                Kind::ALL
                    .iter()
                    .filter(|k| **k != Kind::KubernetesNetworkPolicy)
                    .map(|k| k.as_str().to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn key_of(k: &KeyRef) -> Result<ResourceKey, OpError> {
    let kind = parse_kind(&k.kind).map_err(|e| ErrorBody::new("bad_request", e))?;
    if k.name.is_empty() {
        return Err(ErrorBody::new("bad_request", "a key needs a name"));
    }
    Ok(ResourceKey {
        kind,
        namespace: kind
            .is_namespaced()
            .then(|| k.namespace.clone().unwrap_or_else(|| "default".into())),
        name: k.name.clone(),
    })
}

/// What a request produced.
#[derive(Debug)]
pub enum Answer {
    /// One reply line (newline included).
    Line(String),
    /// Stream flow records matching the filter (after the backlog line).
    Follow {
        /// The reply line of the backlog (`more: true`).
        backlog: String,
        /// Which new records to send.
        filter: FlowFilter,
        /// Receives new records.
        rx: broadcast::Receiver<Arc<FlowEntry>>,
    },
}

impl<E: Engine> Daemon<E> {
    /// A daemon publishing `store` as generation 1 into a new classifier slot.
    pub fn new(store: Store, persist: Box<dyn Persist>) -> Result<Daemon<E>, String> {
        let cluster = policy::cluster(&store).map_err(|e| e.lines().join("\n"))?;
        let (engine, built) =
            E::start(&cluster).map_err(|e| format!("cannot compile the policy set: {e}"))?;
        let slot = Arc::new(ClassifierSlot::new(Published {
            generation: 1,
            classifier: built.classifier,
        }));
        let generation = Arc::new(Generation {
            number: 1,
            names: built.names,
            published: slot.load(),
        });
        let docs = SharedMap::from_entries(
            store
                .entries()
                .map(|(k, s)| (k.clone(), doc_text(&s.resource))),
        );
        let view = View {
            generation: 1,
            docs: docs.clone(),
            counts: store.counts(),
            published_at: Instant::now(),
        };
        let mut gens = BTreeMap::new();
        gens.insert(
            1,
            Retired {
                generation,
                since: None,
            },
        );
        Ok(Daemon {
            writer: Mutex::new(Writer {
                store,
                cluster,
                engine,
                persist,
                generation: 1,
                docs,
            }),
            view: RwLock::new(Arc::new(view)),
            gens: Mutex::new(gens),
            ring: Mutex::new(FlowRing::default()),
            follow: broadcast::channel(4096).0,
            dataplane: RwLock::new(None),
            slot,
            started: Instant::now(),
            change_nice: AtomicI32::new(NICE_UNSET),
        })
    }

    /// Makes every later change run at nice value `nice` (-20..=19; lower runs
    /// first) on its thread, the thread's own value put back after it; `None` leaves
    /// the threads' priority alone (the default). Tried at once on the calling thread:
    /// a value the process may not set (lowering it needs CAP_SYS_NICE) is refused
    /// with the system's reason and nothing changes.
    pub fn set_change_nice(&self, nice: Option<i32>) -> Result<(), String> {
        if let Some(n) = nice {
            if !(-20..=19).contains(&n) {
                return Err(format!("nice value {n} is outside -20..=19"));
            }
            // Set and put back at once: only whether the process may.
            drop(
                crate::sys::Nice::set(n)
                    .map_err(|e| format!("cannot run changes at nice {n}: {e}"))?,
            );
        }
        self.change_nice
            .store(nice.unwrap_or(NICE_UNSET), Ordering::Relaxed);
        Ok(())
    }

    /// The nice value changes run at (`None`: the thread's own).
    pub fn change_nice(&self) -> Option<i32> {
        Some(self.change_nice.load(Ordering::Relaxed)).filter(|n| *n != NICE_UNSET)
    }

    /// A change starts now: the clocks read, the thread set to [`Self::change_nice`]
    /// (if the kernel refuses, the change runs at the thread's own priority and its
    /// timings say so).
    fn start(&self) -> Start {
        Start {
            nice: self
                .change_nice()
                .and_then(|n| Some((crate::sys::Nice::set(n).ok()?, n))),
            wall: Instant::now(),
            cpu: crate::sys::thread_cpu(),
        }
    }

    /// The slot the workers read their classifier from.
    pub fn slot(&self) -> Arc<ClassifierSlot<E::Classifier>> {
        Arc::clone(&self.slot)
    }

    /// Tells the daemon about the running data plane.
    pub fn set_dataplane(&self, info: DataplaneInfo) {
        if let Ok(mut d) = self.dataplane.write() {
            *d = Some(info);
        }
    }

    /// The last published state.
    pub fn view(&self) -> Arc<View> {
        self.view
            .read()
            .map(|v| Arc::clone(&v))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// The current generation (for naming records and the flow log).
    pub fn current(&self) -> Option<Shared<E>> {
        let g = self.gens.lock().ok()?;
        g.values()
            .rev()
            .find(|r| r.since.is_none())
            .map(|r| Arc::clone(&r.generation))
    }

    fn generation(&self, n: u32) -> Option<Shared<E>> {
        self.gens
            .lock()
            .ok()?
            .get(&n)
            .map(|r| Arc::clone(&r.generation))
    }

    /// Applies `text` (resources) to the live store, all or nothing.
    pub fn apply_text(&self, text: &str, source: &str) -> Result<Value, OpError> {
        self.apply_sources(&[SourceText {
            source: source.into(),
            text: text.into(),
            json: false,
        }])
    }

    /// Applies the resources of every source as one change, all or nothing.
    pub fn apply_sources(&self, sources: &[SourceText]) -> Result<Value, OpError> {
        let t0 = self.start();
        let read = read_sources(sources, "apply")?;
        if read.is_empty() {
            return Err(ErrorBody::new(
                "invalid",
                format!(
                    "apply refused: {} holds no resource",
                    sources
                        .iter()
                        .map(|s| s.source.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        self.change(t0, "apply", |store| {
            let mut next = store.clone();
            let summary = next.apply(read).map_err(|errors| {
                policy_error(
                    "apply",
                    &PolicyError::Rejected {
                        errors,
                        notes: Vec::new(),
                    },
                )
            })?;
            let changed = summary.created + summary.updated > 0;
            Ok((
                next,
                changed,
                json!({
                    "created": summary.created,
                    "updated": summary.updated,
                    "unchanged": summary.unchanged,
                }),
            ))
        })
    }

    /// Deletes resources, all or nothing.
    pub fn delete(&self, keys: &[KeyRef], sources: &[SourceText]) -> Result<Value, OpError> {
        let t0 = self.start();
        let mut doomed = Vec::new();
        for k in keys {
            doomed.push(key_of(k)?);
        }
        let read = read_sources(sources, "delete")?;
        doomed.extend(read.iter().map(|l| l.resource.key()));
        if doomed.is_empty() {
            return Err(ErrorBody::new(
                "bad_request",
                "delete: nothing named to delete",
            ));
        }
        self.change(t0, "delete", |store| {
            let mut next = store.clone();
            let n = next.delete(&doomed).map_err(|errors| {
                let mut e = policy_error(
                    "delete",
                    &PolicyError::Rejected {
                        errors,
                        notes: Vec::new(),
                    },
                );
                if e.problems.iter().all(|p| p.ends_with("not found")) {
                    e.code = "not_found".into();
                }
                e
            })?;
            Ok((next, n > 0, json!({ "deleted": n })))
        })
    }

    /// Re-reads `paths` (SIGHUP) and makes the live store follow them, as one change:
    /// their resources are applied, and the resources the previous file set held
    /// ([`Store::file_keys`]) that the files no longer hold are deleted. Resources
    /// applied through the socket under other keys are left alone. All or nothing.
    pub fn reload(&self, paths: &[std::path::PathBuf]) -> Result<Value, OpError> {
        let t0 = self.start();
        let read = policy::read_paths(paths, true).map_err(|e| policy_error("reload", &e))?;
        let keys: BTreeSet<ResourceKey> = read.items.iter().map(|l| l.resource.key()).collect();
        self.change(t0, "reload", |store| {
            let mut next = store.clone();
            let summary = if read.items.is_empty() {
                Default::default()
            } else {
                next.apply(read.items).map_err(|errors| {
                    policy_error(
                        "reload",
                        &PolicyError::Rejected {
                            errors,
                            notes: Vec::new(),
                        },
                    )
                })?
            };
            // Applied first, deleted after: a file set that moves its policies to a
            // new tier and drops the old one reloads in one go.
            let gone: Vec<ResourceKey> = store
                .file_keys()
                .difference(&keys)
                .filter(|k| next.entry(k).is_some() && !Store::is_builtin(k))
                .cloned()
                .collect();
            let deleted = if gone.is_empty() {
                0
            } else {
                next.delete(&gone).map_err(|errors| {
                    policy_error(
                        "reload",
                        &PolicyError::Rejected {
                            errors,
                            notes: Vec::new(),
                        },
                    )
                })?
            };
            // A new set of keys is a change even when no resource changed: it is kept
            // (and persisted) for the next reload.
            let keys_changed = *store.file_keys() != keys;
            next.set_file_keys(keys);
            Ok((
                next,
                summary.created + summary.updated + deleted > 0 || keys_changed,
                json!({
                    "created": summary.created,
                    "updated": summary.updated,
                    "unchanged": summary.unchanged,
                    "deleted": deleted,
                }),
            ))
        })
    }

    /// The change pipeline: `edit` makes the next store (and says whether it differs);
    /// then normalise, the engine's next generation, persist, publish, wait for the
    /// workers.
    fn change(
        &self,
        t0: Start,
        what: &str,
        edit: impl FnOnce(&Store) -> Result<(Store, bool, Value), OpError>,
    ) -> Result<Value, OpError> {
        let mut t = ChangeTimings::default();
        let (generation, mut result) = {
            let mut w = self
                .writer
                .lock()
                .map_err(|_| ErrorBody::new("internal", "the policy store lock is poisoned"))?;
            let (next, changed, result) = edit(&w.store)?;
            if !changed {
                let mut result = result;
                result["generation"] = json!(w.generation);
                result["changed"] = json!(false);
                return Ok(result);
            }
            // Every key created, replaced or deleted.
            let keys = w.store.changed_keys(&next);
            // Only the changed resources are normalised again; on any later failure
            // the kept cluster is brought back to the unchanged store.
            policy::update_cluster(&mut w.cluster, &next, &keys)
                .map_err(|e| policy_error(what, &e))?;
            t.validate_ms = ms(t0.wall.elapsed());
            let built = Self::compile(&mut w, &mut t, what, &next, &keys);
            let built = match built {
                Ok(b) => b,
                Err((e, engine_changed)) => {
                    let w = &mut *w;
                    if policy::update_cluster(&mut w.cluster, &w.store, &keys).is_err() {
                        // Cannot happen (the store was normalised before); the slow
                        // twin still gives the right cluster.
                        if let Ok(c) = policy::cluster(&w.store) {
                            w.cluster = c;
                        }
                    }
                    if engine_changed {
                        w.engine.revert(&w.cluster, &keys);
                    }
                    return Err(e);
                }
            };
            let path = built.path;
            // Documents of the resources that changed only.
            let t4 = Instant::now();
            // Documents and counts of the resources that changed only.
            let mut docs = w.docs.clone();
            let mut counts = self.view().counts.clone();
            for k in &keys {
                let user = |s: &crate::store::Stored| s.origin.is_some();
                let was = w.store.entry(k).is_some_and(user);
                match next.entry(k) {
                    Some(s) => docs.insert(k.clone(), doc_text(&s.resource)),
                    None => docs.remove(k),
                }
                let now = next.entry(k).is_some_and(user);
                if was != now {
                    let n = counts.entry(k.kind).or_insert(0);
                    *n = if now { *n + 1 } else { n.saturating_sub(1) };
                    if *n == 0 {
                        counts.remove(&k.kind);
                    }
                }
            }
            let number = w.generation.wrapping_add(1).max(1);
            self.slot.publish(Published {
                generation: number,
                classifier: built.classifier,
            });
            let generation = Arc::new(Generation {
                number,
                names: built.names,
                published: self.slot.load(),
            });
            if let Ok(mut g) = self.gens.lock() {
                for r in g.values_mut() {
                    r.since.get_or_insert_with(Instant::now);
                }
                g.insert(
                    number,
                    Retired {
                        generation,
                        since: None,
                    },
                );
            }
            let view = View {
                generation: number,
                docs: docs.clone(),
                counts,
                published_at: Instant::now(),
            };
            if let Ok(mut v) = self.view.write() {
                *v = Arc::new(view);
            }
            w.store = next;
            w.docs = docs;
            w.generation = number;
            let mut result = result;
            result["classifier"] = json!(E::NAME);
            result["path"] = json!(path);
            t.publish_ms = ms(t4.elapsed());
            t.cpu_ms = ms(crate::sys::thread_cpu().saturating_sub(t0.cpu));
            t.nice = t0.nice.as_ref().map(|n| n.1);
            (number, result)
        };
        let t5 = Instant::now();
        let (running, total) = self.wait_for_workers(generation, PICKUP_WAIT);
        t.pickup_ms = ms(t5.elapsed());
        // The generations no worker runs and no flow record needs any more are freed
        // now rather than at the next periodic housekeeping: the buffers of their
        // identity tables are what the next change writes into instead of copying
        // the tables (`dataplane` `flat` module).
        self.housekeeping();
        t.total_ms = ms(t0.wall.elapsed());
        drop(t0.nice);
        result["generation"] = json!(generation);
        result["changed"] = json!(true);
        result["workers"] = json!({ "running_generation": running, "total": total });
        result["timings"] = serde_json::to_value(t).unwrap_or(Value::Null);
        Ok(result)
    }

    /// The engine's generation of the writer's (updated) cluster, then `next`
    /// persisted: the steps of a change after normalising. On error, whether the
    /// engine changed (and must be brought back).
    fn compile(
        w: &mut Writer<E>,
        t: &mut ChangeTimings,
        what: &str,
        next: &Store,
        keys: &[ResourceKey],
    ) -> Result<Built<E::Classifier>, (OpError, bool)> {
        let built = w.engine.change(&w.cluster, keys).map_err(|e| {
            let e = ErrorBody::new(
                "invalid",
                format!("{what} refused, nothing changed: cannot compile the policy set: {e}"),
            );
            (e, false)
        })?;
        t.lower_ms = built.lower_ms;
        t.compile_ms = built.compile_ms;
        let t3 = Instant::now();
        w.persist.commit(next).map_err(|e| {
            let e = ErrorBody::new(
                "persist",
                format!("{what} refused, nothing changed: cannot persist the policy set: {e}"),
            );
            (e, true)
        })?;
        t.persist_ms = ms(t3.elapsed());
        Ok(built)
    }

    /// Waits until every worker runs `generation` (or a later one) or sleeps waiting
    /// for frames (then it takes the newest generation before it processes anything:
    /// `dataplane::worker::ClassifierSlot::taken_by`), at most `wait`. Returns
    /// (workers that took it, workers).
    pub fn wait_for_workers(&self, generation: u32, wait: Duration) -> (usize, usize) {
        let start = Instant::now();
        let deadline = start + wait;
        loop {
            // A worker asleep waiting for frames has taken it too: it takes the newest
            // generation before it processes anything when it wakes.
            let taken = self.slot.taken_by(generation, newer_or_same);
            let on = taken.iter().filter(|t| **t).count();
            let now = Instant::now();
            if on == taken.len() || now >= deadline {
                return (on, taken.len());
            }
            // Workers take a new generation at their next batch (an idle pcap worker
            // is unparked by the publish), usually within tens of microseconds: the
            // first 200 µs yield (a nap lasts its timer slack, ~50 µs, longer), then
            // short naps, longer ones after a millisecond.
            let waited = now - start;
            if waited < Duration::from_micros(200) {
                std::thread::yield_now();
                continue;
            }
            let nap = if waited < Duration::from_millis(1) {
                20
            } else {
                200
            };
            std::thread::sleep(Duration::from_micros(nap));
        }
    }

    /// Frees retired classifiers no worker runs any more, and the generations kept for
    /// naming records once they are old (the control thread calls this periodically).
    pub fn housekeeping(&self) {
        self.slot.reclaim();
        let running = self.slot.running();
        if let Ok(mut g) = self.gens.lock() {
            let retired: Vec<u32> = g
                .iter()
                .filter(|(n, r)| r.since.is_some() && !running.contains(n))
                .map(|(n, _)| *n)
                .collect();
            let excess = retired.len().saturating_sub(KEEP_RETIRED);
            for (i, n) in retired.iter().enumerate() {
                let old = g
                    .get(n)
                    .and_then(|r| r.since)
                    .is_some_and(|s| s.elapsed() > KEEP_RETIRED_FOR);
                if i < excess || old {
                    g.remove(n);
                }
            }
        }
    }

    /// Takes the workers' flow records: keeps them for `flows`, streams them to
    /// followers, and returns their flow-log activities.
    pub fn ingest(&self, records: impl IntoIterator<Item = FlowRecord>) -> Vec<FlowActivity> {
        let mut out = Vec::new();
        let mut cache: Option<(u32, Option<Shared<E>>)> = None;
        let mut entries = Vec::new();
        for rec in records {
            let g = match &cache {
                Some((n, g)) if *n == rec.generation => g.clone(),
                _ => {
                    let g = self.generation(rec.generation);
                    cache = Some((rec.generation, g.clone()));
                    g
                }
            };
            let named = g.as_ref().map(|g| (&*g.names, &g.published.classifier));
            if let Some((l, c)) = named {
                out.extend(crate::replay::activities(&rec, l, c));
            }
            entries.push((rec, g));
        }
        if entries.is_empty() {
            return out;
        }
        // Rendered before the ring is locked: `flows` readers wait only for the pushes.
        let rendered: Vec<FlowEntry> = entries
            .iter()
            .map(|(rec, g)| {
                render(
                    0,
                    rec,
                    g.as_ref().map(|g| (&*g.names, &g.published.classifier)),
                )
            })
            .collect();
        let Ok(mut ring) = self.ring.lock() else {
            return out;
        };
        for mut e in rendered {
            e.seq = ring.next_seq();
            let e = Arc::new(e);
            ring.push(Arc::clone(&e));
            let _ = self.follow.send(e);
        }
        out
    }

    /// Answers one request.
    pub fn handle(&self, req: Request) -> Answer {
        let id = req.id;
        let line = |r: Result<Value, OpError>| {
            Answer::Line(match r {
                Ok(v) => Reply::ok(id, v).line(),
                Err(e) => Reply::err(Some(id), e).line(),
            })
        };
        match req.op {
            Op::Apply {
                text,
                source,
                mut files,
            } => {
                if let Some(text) = text {
                    files.insert(0, inline(text, source));
                }
                line(self.apply_sources(&files))
            }
            Op::Delete {
                keys,
                text,
                source,
                mut files,
            } => {
                if let Some(text) = text {
                    files.insert(0, inline(text, source));
                }
                line(self.delete(&keys, &files))
            }
            Op::Get {
                kind,
                name,
                namespace,
            } => match self.get(id, &kind, name.as_deref(), namespace.as_deref()) {
                Ok(l) => Answer::Line(l),
                Err(e) => Answer::Line(Reply::err(Some(id), e).line()),
            },
            Op::Flows {
                filter,
                limit,
                follow,
            } => {
                if let Err(e) = filter.validate() {
                    return line(Err(ErrorBody::new("bad_request", e)));
                }
                // Subscribe before reading the backlog so nothing falls in between.
                let rx = self.follow.subscribe();
                let items = self
                    .ring
                    .lock()
                    .map(|r| r.select(&filter, limit.unwrap_or(1000)))
                    .unwrap_or_default();
                let reply = flows_line(id, &items, follow);
                if !follow {
                    return Answer::Line(reply);
                }
                Answer::Follow {
                    backlog: reply,
                    filter,
                    rx,
                }
            }
            Op::Impact { top } => {
                let report = self
                    .ring
                    .lock()
                    .map(|r| r.impact(top.unwrap_or(10).min(1000)))
                    .ok();
                match report {
                    Some(r) => line(Ok(json!({
                        "report": r,
                        "text": crate::cli::replay::impact_table(&r),
                    }))),
                    None => line(Err(ErrorBody::new(
                        "internal",
                        "the flow ring lock is poisoned",
                    ))),
                }
            }
            Op::Stats => line(self.stats()),
            Op::Health => line(Ok(self.health())),
            Op::Version => line(Ok(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "protocol": VERSION,
            }))),
        }
    }

    fn get(
        &self,
        id: u64,
        kind: &str,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<String, OpError> {
        let kind = parse_kind(kind).map_err(|e| ErrorBody::new("bad_request", e))?;
        let view = self.view();
        let lo = ResourceKey {
            kind,
            namespace: None,
            name: String::new(),
        };
        let mut items: Vec<&str> = Vec::new();
        // One name in one place: a lookup, not a walk over the kind.
        let exact = name
            .filter(|_| !kind.is_namespaced() || namespace.is_some())
            .map(|n| ResourceKey {
                kind,
                namespace: namespace
                    .filter(|_| kind.is_namespaced())
                    .map(str::to_string),
                name: n.to_string(),
            });
        if let Some(key) = &exact {
            items.extend(view.docs.get(key).map(|d| &**d));
        }
        for (k, doc) in view.docs.range_from(&lo) {
            if exact.is_some() || k.kind != kind {
                break;
            }
            if kind.is_namespaced()
                && let Some(ns) = namespace
                && k.namespace.as_deref() != Some(ns)
            {
                continue;
            }
            if let Some(n) = name
                && k.name != n
            {
                continue;
            }
            items.push(doc);
        }
        if let Some(n) = name
            && items.is_empty()
        {
            let key = ResourceKey {
                kind,
                namespace: kind
                    .is_namespaced()
                    .then(|| namespace.unwrap_or("default").to_string()),
                name: n.to_string(),
            };
            return Err(ErrorBody::new("not_found", format!("{key} not found")));
        }
        // The documents are serialised once, when they change; a reply only joins them.
        let len = items.iter().map(|d| d.len() + 1).sum::<usize>() + 128;
        let mut s = String::with_capacity(len);
        s.push_str(&format!(
            r#"{{"v":{VERSION},"id":{id},"ok":true,"result":{{"generation":{},"items":["#,
            view.generation
        ));
        for (i, d) in items.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(d);
        }
        s.push_str("]}}\n");
        Ok(s)
    }

    fn stats(&self) -> Result<Value, OpError> {
        let d = self
            .dataplane
            .read()
            .map_err(|_| ErrorBody::new("internal", "lock poisoned"))?;
        let Some(d) = d.as_ref() else {
            return Err(ErrorBody::new(
                "unavailable",
                "the data plane is not running yet",
            ));
        };
        let (doc, text) = (d.stats)();
        let flows = self.ring.lock().map(|r| r.len()).unwrap_or(0);
        Ok(json!({ "counters": doc, "text": text, "flow_records_held": flows }))
    }

    fn health(&self) -> Value {
        let view = self.view();
        let workers = self
            .dataplane
            .read()
            .ok()
            .and_then(|d| d.as_ref().map(|d| (d.generations)()))
            .unwrap_or_default();
        let running = self.slot.running();
        let current = self
            .slot
            .taken_by(view.generation, newer_or_same)
            .iter()
            .all(|t| *t);
        let kept = self.gens.lock().map(|g| g.len()).unwrap_or(0);
        json!({
            "status": if current { "ok" } else { "updating" },
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "generation": view.generation,
            "generation_age_s": view.published_at.elapsed().as_secs_f64(),
            "resources": view.counts.values().sum::<usize>(),
            "workers": workers.iter().enumerate().map(|(i, g)| json!({"worker": i, "generation": g})).collect::<Vec<_>>(),
            "worker_generations": running,
            "generations_held": kept,
            "change_nice": self.change_nice(),
        })
    }
}

/// The reply line of `flows` (`more` for the backlog of a stream): the records are
/// serialised straight into the line, not through a JSON tree.
fn flows_line(id: u64, items: &[Arc<FlowEntry>], more: bool) -> String {
    let refs: Vec<&FlowEntry> = items.iter().map(|e| &**e).collect();
    let mut buf = format!(
        r#"{{"v":{VERSION},"id":{id},"ok":true{},"result":{{"flows":"#,
        if more { r#","more":true"# } else { "" }
    )
    .into_bytes();
    buf.reserve(items.len() * 512);
    match serde_json::to_writer(&mut buf, &refs) {
        Ok(()) => {
            buf.extend_from_slice(b"}}\n");
            String::from_utf8(buf).unwrap_or_default()
        }
        Err(e) => Reply::err(
            Some(id),
            ErrorBody::new("internal", format!("cannot serialize the flows: {e}")),
        )
        .line(),
    }
}

fn inline(text: String, source: Option<String>) -> SourceText {
    SourceText {
        source: source.unwrap_or_else(|| "<request>".into()),
        text,
        json: false,
    }
}

/// Reads every source (each named in its errors); every problem of every source.
fn read_sources(sources: &[SourceText], what: &str) -> Result<Vec<crate::model::Loaded>, OpError> {
    let mut items = Vec::new();
    let mut problems: Option<OpError> = None;
    for s in sources {
        let format = if s.json { Format::Json } else { Format::Yaml };
        match policy::read_text(&s.text, &s.source, format) {
            Ok(r) => items.extend(r.items),
            Err(e) => {
                let e = policy_error(what, &e);
                match &mut problems {
                    Some(p) => p.problems.extend(e.problems),
                    None => problems = Some(e),
                }
            }
        }
    }
    match problems {
        Some(p) => Err(p),
        None => Ok(items),
    }
}

/// Generation numbers wrap at 2^32: `a` is `b` or later.
fn newer_or_same(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < (1 << 31)
}

#[cfg(test)]
mod tests;
