//! tiergate's control plane: the Calico policy model and its exact semantics, the
//! management plane, and the pieces of the `tiergate` binary.
//!
//! Nothing here runs on the packet path. Policy flows one way:
//! `model` (load, default, validate) → `store` → `lower` → `dataplane::program`.

pub mod cli;
pub mod cluster;
pub mod eval;
pub mod flowlog;
pub mod impact;
pub mod k8s;
pub mod lower;
pub mod model;
pub mod policy;
pub mod replay;
pub mod selector;
pub mod store;
pub mod sys;
