//! The seam between a daemon that changes its policy [`Store`] and whatever keeps that
//! store across restarts.
//!
//! A daemon calls [`Persist::commit`] with the store it is about to publish, after the
//! change has been validated, lowered and compiled and before any worker runs it. When
//! `commit` fails the daemon keeps the previous generation and reports the error to the
//! client: a change is either durable and running, or neither.

use std::io;

use crate::store::Store;

/// Keeps applied policy across restarts.
pub trait Persist: Send {
    /// Makes `store` durable as the current generation; on error nothing of it is kept.
    fn commit(&mut self, store: &Store) -> io::Result<()>;
}

/// The daemon without `--state-dir`: nothing survives a restart.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPersist;

impl Persist for NoPersist {
    fn commit(&mut self, _store: &Store) -> io::Result<()> {
        Ok(())
    }
}
