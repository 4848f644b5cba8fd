//! The per-worker flow table: connection tracking plus cached verdicts.
//!
//! This module owns [`FlowTable`], one per worker, never shared. It promises:
//!
//! - **Bounded memory.** The table is allocated once with `capacity` slots (rounded
//!   up to a multiple of [`WAYS`]) and never grows: 128 bytes per [`FlowEntry`] plus
//!   64 bytes of metadata per bucket of 8 slots (136 bytes per flow all in).
//! - **Seeded hashing.** Keys come from the wire, so bucket choice uses a hash seeded
//!   per table ([`KeyHasher`], a keyed multiply-fold over the fixed-size key); an
//!   attacker cannot aim flows at one bucket without the seed.
//! - **One entry per connection.** Both directions map to one canonical [`ConnKey`];
//!   [`Dir`] tells which side sent a packet, and the entry remembers which side
//!   initiated.
//! - **Set-associative, two choices.** A key may live in one of two buckets of 8 ways
//!   (like DPDK's `rte_hash`, without cuckoo displacement). A lookup reads one 64-byte
//!   metadata line per bucket (16-bit tags and coarse last-seen stamps), matches the
//!   eight tags at once ([`crate::arch::tags`]) and compares full keys only on a tag
//!   match.
//! - **Eviction when full.** When both buckets are full, the entry idle the longest
//!   (oldest coarse stamp among the 16 candidates; first in bucket order on ties) is
//!   evicted, counted, and its [`FlowRecord`] handed out with [`EndReason::Evicted`];
//!   then the insert goes on. Entries still awaiting their verdict in the current
//!   batch are never evicted.
//! - **Conntrack.** Each entry runs a TCP state machine (SYN, SYN-ACK, ACK, FIN each
//!   way, RST; mid-stream pickup counts as established, like Linux's `tcp_loose`) and
//!   a per-state idle timeout ([`Timeouts`], defaults from felix's BPF conntrack). An
//!   expired entry is a new connection on its next packet; [`FlowTable::sweep`]
//!   retires expired entries incrementally.
//! - **Cached verdicts with their generation.** An entry holds the [`FlowVerdicts`](crate::program::FlowVerdicts) of
//!   the latest classification of its initiator's key, the classifier generation they
//!   came from, and separately the *applied* enforced verdict with the generation it
//!   was decided in (existing connections keep it across policy changes).
//!
//! `model::ModelTable` (built for tests and for fuzzing, `--cfg fuzzing`) is the slow,
//! obviously-correct twin (a plain vector of buckets); a proptest checks both agree on
//! every lookup, insert and eviction.
//!
//! Layout: `key` (the canonical [`ConnKey`], [`Dir`], the seeded [`KeyHasher`]),
//! `conntrack` ([`ConnState`], [`Timeouts`], the TCP state machine and expiry of an
//! entry), `entry` ([`FlowEntry`], [`FlowRecord`], [`EndReason`]), `table`
//! ([`FlowTable`]: placement, lookup, eviction, sweep, export), `model` (the twin);
//! everything public is re-exported here.

mod conntrack;
mod entry;
mod key;
mod table;

#[cfg(any(test, fuzzing))]
pub mod model;
#[cfg(test)]
mod tests;

pub use conntrack::{ConnState, TimeoutTable, Timeouts, timeout_class};
pub use entry::{EndReason, FlowEntry, FlowRecord};
pub use key::{ConnKey, Dir, KeyClass, KeyHasher};
pub use table::{
    EntryHook, FlowTable, FlowTableConfig, FlowTableStats, NoHook, Placement, Slot, WAYS,
    placement, stamp,
};
