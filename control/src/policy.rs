//! One library path from policy sources to a [`Cluster`]: read (files, directories,
//! stdin or in-memory text) → apply to a [`Store`] all-or-nothing → normalise for the
//! evaluator and the lowering.
//!
//! Every failure is one [`PolicyError`] whose lines are `FILE:DOC: FIELD: REASON`; the
//! CLI prints them and maps [`PolicyError::exit_code`] to its exit status (2 unreadable
//! input, 1 invalid or empty set). A daemon uses the same calls: [`read_text`] for what a
//! control socket receives, [`apply`] to change its live store (the store is untouched
//! on any error, including a set the evaluator refuses), [`delete`] likewise, and
//! [`cluster`] to rebuild the [`Cluster`] from a store. A datastore watcher feeds
//! [`apply`] and [`delete`] exactly like a socket.
//!
//! ```no_run
//! use control::policy;
//!
//! // A command: `-f` paths into a fresh store.
//! let set = match policy::load_paths(&["policies/"], false) {
//!     Ok(set) => set,
//!     Err(e) => {
//!         for line in e.lines() {
//!             eprintln!("{line}"); // FILE:DOC: FIELD: REASON
//!         }
//!         std::process::exit(i32::from(e.exit_code()));
//!     }
//! };
//! println!("{} resources", set.counts.values().sum::<usize>());
//!
//! // A daemon: apply text received on a socket to the live store, all or nothing.
//! let mut store = set.store;
//! let read = policy::read_text("kind: Tier\n...", "<socket>", control::model::Format::Yaml)?;
//! let cluster = policy::apply(&mut store, read.items)?;
//! # let _ = cluster;
//! # Ok::<(), policy::PolicyError>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

use crate::cluster::{Cluster, ClusterError};
use crate::model::{self, Format, Kind, LoadErrors, Loaded, ResourceKey};
use crate::store::{ApplySummary, Store, StoreErrors};

/// Exit code of a command for an invalid (or empty) policy set.
pub const EXIT_INVALID: u8 = 1;
/// Exit code of a command for input that could not be read.
pub const EXIT_UNREADABLE: u8 = 2;

/// Why a policy set could not be read, applied or normalised. Every variant renders as
/// one `FILE:DOC: FIELD: REASON` line per problem (see [`PolicyError::lines`]).
#[derive(Debug, Error)]
pub enum PolicyError {
    /// Some input could not be read at all (missing file, permission, a FIFO, socket or
    /// device, a dangling symlink). Exit code 2. Other problems found while reading are
    /// listed too.
    #[error("{0}")]
    Unreadable(#[source] LoadErrors),
    /// The input was read but is not a valid resource set: every problem (up to
    /// [`model::MAX_REPORTED_ERRORS`]), in input order. Exit code 1.
    #[error("{0}")]
    Invalid(#[source] LoadErrors),
    /// The sources hold no resource and an empty set was not allowed; the one error names
    /// what was read and what to do. Exit code 1.
    #[error("{0}")]
    Empty(#[source] LoadErrors),
    /// The store refused the apply (a policy naming a tier that neither the set nor the
    /// store defines, ...): every reason. The store is unchanged. Exit code 1.
    #[error("{errors}")]
    Rejected {
        /// Every reason.
        #[source]
        errors: StoreErrors,
        /// Notes about what was read (see [`Read::notes`]), still worth showing.
        notes: Vec<String>,
    },
    /// The evaluator cannot normalise the stored set (input that validation should have
    /// refused). The store is unchanged. Exit code 1.
    #[error("{0}")]
    Cluster(#[source] ClusterError),
}

/// One problem of a [`PolicyError`], split into its parts (serialised as `tiergate
/// check -o json|yaml` prints it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// File, `<stdin>`, the in-memory source's name, or the resource key when no source
    /// is known.
    pub source: String,
    /// 1-based document number.
    pub document: Option<usize>,
    /// Field path.
    pub field: Option<String>,
    /// What is wrong and what would be accepted.
    pub reason: String,
    /// The whole problem as one line: `FILE:DOC: FIELD: REASON`.
    pub message: String,
}

impl PolicyError {
    /// The exit code a command returns for this error: 2 unreadable, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            PolicyError::Unreadable(_) => EXIT_UNREADABLE,
            _ => EXIT_INVALID,
        }
    }

    /// Whether some input could not be read.
    pub fn is_unreadable(&self) -> bool {
        matches!(self, PolicyError::Unreadable(_))
    }

    /// Notes about valid input that were gathered before the error (empty unless the
    /// store refused the set).
    pub fn notes(&self) -> &[String] {
        match self {
            PolicyError::Rejected { notes, .. } => notes,
            _ => &[],
        }
    }

    /// Every problem, in input order.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            PolicyError::Unreadable(e) | PolicyError::Invalid(e) | PolicyError::Empty(e) => e
                .errors()
                .iter()
                .map(|e| Problem {
                    source: e.source.clone(),
                    document: e.document,
                    field: e.field.clone(),
                    reason: e.reason.clone(),
                    message: e.to_string(),
                })
                .collect(),
            PolicyError::Rejected { errors, .. } => errors
                .0
                .iter()
                .map(|e| Problem {
                    source: e
                        .origin
                        .as_ref()
                        .map_or_else(|| e.key.to_string(), |o| o.source.clone()),
                    document: e.origin.as_ref().map(|o| o.document),
                    field: match (&e.origin, &e.field) {
                        (Some(o), Some(f)) => Some(o.field(f)),
                        (_, f) => f.clone(),
                    },
                    reason: e.reason.clone(),
                    message: e.to_string(),
                })
                .collect(),
            PolicyError::Cluster(e) => vec![Problem {
                source: e.resource.to_string(),
                document: None,
                field: Some(e.field.clone()),
                reason: e.reason.clone(),
                message: e.to_string(),
            }],
        }
    }

    /// Every problem as one line each (what a command prints on stderr).
    pub fn lines(&self) -> Vec<String> {
        self.problems().into_iter().map(|p| p.message).collect()
    }
}

impl From<LoadErrors> for PolicyError {
    fn from(e: LoadErrors) -> PolicyError {
        if e.is_io() {
            PolicyError::Unreadable(e)
        } else {
            PolicyError::Invalid(e)
        }
    }
}

/// Resources read from sources, defaulted and validated, not yet applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Read {
    /// The resources, in input order, each with where it came from.
    pub items: Vec<Loaded>,
    /// Notes for the user about valid input that was defaulted
    /// (`FILE: note: N namespaced resources without metadata.namespace placed in
    /// namespace default`).
    pub notes: Vec<String>,
}

/// Reads the files, directories (`*.yaml`, `*.yml`, `*.json`) and `-` (stdin) named by
/// `paths` as one set. Zero resources is [`PolicyError::Empty`] unless `allow_empty`.
pub fn read_paths<P: AsRef<Path>>(paths: &[P], allow_empty: bool) -> Result<Read, PolicyError> {
    let (items, report) = model::load_set(paths, true)?;
    if items.is_empty() && !allow_empty {
        return Err(PolicyError::Empty(LoadErrors(vec![
            model::empty_set_error(paths, &report),
        ])));
    }
    Ok(Read {
        items,
        notes: report.notes(),
    })
}

/// Reads in-memory `text` (what a control socket receives), named `source` in errors.
/// Zero resources is not an error here: a caller that needs some checks `items`.
pub fn read_text(text: &str, source: &str, format: Format) -> Result<Read, PolicyError> {
    Ok(Read {
        items: model::load_text(text, source, format)?,
        notes: Vec::new(),
    })
}

/// Applies `items` to `store` all-or-nothing and returns the [`Cluster`] of the new
/// store. On any error (the store refuses an item, or the evaluator refuses the result)
/// `store` is left exactly as it was.
pub fn apply(store: &mut Store, items: Vec<Loaded>) -> Result<Cluster, PolicyError> {
    let mut next = store.clone();
    next.apply(items).map_err(|errors| PolicyError::Rejected {
        errors,
        notes: Vec::new(),
    })?;
    let cluster = cluster(&next)?;
    *store = next;
    Ok(cluster)
}

/// Deletes `keys` from `store` all-or-nothing and returns the [`Cluster`] of the new
/// store (what a socket `delete` or a datastore watcher's delete event does). On any
/// error (a key not found, a built-in tier, a tier still named by a policy, or a set the
/// evaluator refuses) `store` is left exactly as it was.
pub fn delete(store: &mut Store, keys: &[ResourceKey]) -> Result<Cluster, PolicyError> {
    let mut next = store.clone();
    next.delete(keys).map_err(|errors| PolicyError::Rejected {
        errors,
        notes: Vec::new(),
    })?;
    let cluster = cluster(&next)?;
    *store = next;
    Ok(cluster)
}

/// The [`Cluster`] of everything in `store`.
pub fn cluster(store: &Store) -> Result<Cluster, PolicyError> {
    Cluster::from_resources(store.resources()).map_err(PolicyError::Cluster)
}

/// [`cluster`] kept up to date: turns `cluster`, the [`Cluster`] of a store before a
/// change, into the [`Cluster`] of `store` after it, normalising only the resources
/// under `changed` (every key created, replaced or deleted; see [`Cluster::update`]).
/// The result equals `cluster(store)`. On error `cluster` is unchanged.
pub fn update_cluster(
    cluster: &mut Cluster,
    store: &Store,
    changed: &[ResourceKey],
) -> Result<(), PolicyError> {
    cluster.update(store, changed).map_err(PolicyError::Cluster)
}

/// A policy set applied into a fresh store, without the evaluator's normalisation
/// (what `tiergate check` needs).
#[derive(Clone, Debug)]
pub struct Stored {
    /// The store holding the set (and the built-in tiers).
    pub store: Store,
    /// Resources of the set per kind (built-ins not counted).
    pub counts: BTreeMap<Kind, usize>,
    /// Notes for the user (see [`Read::notes`]).
    pub notes: Vec<String>,
}

/// A policy set applied into a fresh store and normalised.
#[derive(Clone, Debug)]
pub struct PolicySet {
    /// The store holding the set (and the built-in tiers).
    pub store: Store,
    /// The set as the evaluator and the lowering see it.
    pub cluster: Cluster,
    /// Resources of the set per kind (built-ins not counted).
    pub counts: BTreeMap<Kind, usize>,
    /// Notes for the user (see [`Read::notes`]).
    pub notes: Vec<String>,
}

/// Applies `read` as one apply into an empty store (so a policy naming a tier the set
/// does not define is an error). A [`PolicyError::Rejected`] keeps the read's notes.
pub fn store(read: Read) -> Result<Stored, PolicyError> {
    store_with(read, Store::apply)
}

/// [`read_paths`] then [`store`], without validating the resources a second time: the
/// loader's output goes into the store untouched.
pub(crate) fn read_and_store<P: AsRef<Path>>(
    paths: &[P],
    allow_empty: bool,
) -> Result<Stored, PolicyError> {
    store_with(read_paths(paths, allow_empty)?, Store::apply_validated)
}

/// `read`'s items applied by `apply` into an empty store.
fn store_with(
    read: Read,
    apply: impl FnOnce(&mut Store, Vec<Loaded>) -> Result<ApplySummary, StoreErrors>,
) -> Result<Stored, PolicyError> {
    let mut store = Store::new();
    if let Err(errors) = apply(&mut store, read.items) {
        return Err(PolicyError::Rejected {
            errors,
            notes: read.notes,
        });
    }
    Ok(Stored {
        counts: store.counts(),
        store,
        notes: read.notes,
    })
}

/// What [`check_paths`] found: the set is valid, with these resources per kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Resources of the set per kind, as [`Stored::counts`].
    pub counts: BTreeMap<Kind, usize>,
    /// Notes for the user (see [`Read::notes`]).
    pub notes: Vec<String>,
}

/// [`read_paths`] then [`store`] as far as `tiergate check` needs them: the same
/// verdict, errors, counts and notes, but each resource is dropped once validated and
/// only its key, origin and tier are kept for the store's checks
/// ([`Store::check_apply`]), so a large set is never held in memory.
pub(crate) fn check_paths<P: AsRef<Path>>(
    paths: &[P],
    allow_empty: bool,
) -> Result<Checked, PolicyError> {
    let (outlines, report) = model::load::load_outlines(paths)?;
    if outlines.is_empty() && !allow_empty {
        return Err(PolicyError::Empty(LoadErrors(vec![
            model::empty_set_error(paths, &report),
        ])));
    }
    let notes = report.notes();
    match Store::new().check_apply(outlines) {
        Ok(counts) => Ok(Checked { counts, notes }),
        Err(errors) => Err(PolicyError::Rejected { errors, notes }),
    }
}

/// [`store`], then the [`Cluster`] of the result.
pub fn build(read: Read) -> Result<PolicySet, PolicyError> {
    build_stored(store(read)?)
}

fn build_stored(stored: Stored) -> Result<PolicySet, PolicyError> {
    let Stored {
        store,
        counts,
        notes,
    } = stored;
    let cluster = cluster(&store)?;
    Ok(PolicySet {
        store,
        cluster,
        counts,
        notes,
    })
}

/// [`read_paths`] then [`build`]: the `-f` sources of a command as a [`PolicySet`].
pub fn load_paths<P: AsRef<Path>>(
    paths: &[P],
    allow_empty: bool,
) -> Result<PolicySet, PolicyError> {
    build_stored(read_and_store(paths, allow_empty)?)
}

/// [`read_text`] then [`build`]: in-memory text as a [`PolicySet`] in a fresh store.
pub fn load_text(text: &str, source: &str, format: Format) -> Result<PolicySet, PolicyError> {
    build(read_text(text, source, format)?)
}

#[cfg(test)]
mod tests;
