//! tiergate's control plane: the Calico policy model and its exact semantics, the
//! management plane, and the pieces of the `tiergate` binary.
//!
//! Nothing here runs on the packet path. Policy flows one way, and each module imports
//! only from the ones before it:
//! `selector`, `model` (load, default, validate), `k8s` → `store` (all-or-nothing
//! applies) → `cluster` (the normalised set and every type, constant and name the
//! later layers share) → `eval` (the reference evaluator) and, beside it, `lower`
//! (rule programs for `dataplane::program`, names back from ids) → `flowlog`,
//! `impact`, `replay` → `cli`.
//!
//! `policy` is the one path from sources (paths, stdin, in-memory text) through
//! `model` and `store` to a `cluster::Cluster`, with one typed error; every command,
//! and a daemon applying to a live store, loads policy through it.

pub mod cli;
pub mod cluster;
pub mod eval;
pub mod flowlog;
pub mod impact;
pub mod k8s;
pub mod lower;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod policy;
pub mod replay;
pub mod selector;
pub mod state;
pub mod store;
pub mod sys;
