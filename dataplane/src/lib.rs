//! tiergate's fast path: packets, flows, rule programs, the classifier and verdicts.
//!
//! This crate knows nothing of Calico, YAML or selectors; the control plane lowers
//! policy into [`program::Program`]s and maps the opaque ids in verdicts back to names.
//!
//! The packet path, in the order a frame meets it: [`port`] (where frames come from
//! and verdicts go: the [`port::Port`] seam and its implementations), [`packet`] (the
//! no-panic parser), [`flow`] (connection keys, conntrack, the per-worker flow table),
//! [`classifier`] (the compiled decision trees; [`linear`] is their reference) over
//! the rules of [`program`], and [`worker`] (the batch loop that ties them together,
//! phase by phase). [`pipeline`] runs pinned workers over ports or replays a capture
//! through a dispatcher. [`arch`] holds the crate's `unsafe` (prefetch, SIMD, huge
//! pages).

pub mod arch;
pub(crate) mod chunked;
pub mod classbench;
pub mod classifier;
pub(crate) mod flat;
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
