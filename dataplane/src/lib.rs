//! tiergate's fast path: packets, flows, rule programs, the classifier and verdicts.
//!
//! This crate knows nothing of Calico, YAML or selectors; the control plane lowers
//! policy into [`program::Program`]s and maps the opaque ids in verdicts back to names.

pub mod arch;
pub mod classbench;
pub mod classifier;
pub mod flow;
pub mod linear;
pub mod lpm;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod program;
pub mod worker;

#[cfg(test)]
pub(crate) mod fixtures;
