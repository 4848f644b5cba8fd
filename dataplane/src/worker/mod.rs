//! The worker pipeline: the batch loop every packet goes through.
//!
//! This module owns [`Worker`] (one per core, pinned): its configuration, its life
//! (`new`, `run`, `poll`, `finish`) and where its flow records go ([`RecordOut`]).
//! The submodules hold the rest: `batch` (the per-batch phases of
//! `Worker::process`: parse, flow lookup, classify, settle, transmit, housekeeping),
//! `publish` ([`ClassifierSlot`], through which a new policy generation is published)
//! and `stats` ([`WorkerStats`], [`Count`], the batch-latency histogram). The
//! [`Port`] seam a worker pulls frames from and pushes verdicts to is in
//! [`crate::port`] (re-exported here). A worker loop is:
//!
//! ```text
//! rx batch ─► parse ─► fragment follow ─► related ICMP? ─► flow lookup ─┬─ hit: cached verdict
//!                                                                      └─ miss/stale: queue key
//!          ─► classify all queued keys in one call ─► settle entries ─► conntrack + counters
//!          ─► tx batch (forward) / drop batch ─► offload: install/remove touched connections
//!          ─► sweep a few buckets, export interval records
//! ```
//!
//! With a flow offload ([`Worker::with_offload`], the AF_XDP port's `--offload`), the
//! established connections a worker allows are forwarded outside it; the `offload`
//! module keeps its flow records exact (counters merged before every read of an
//! entry) and the policy semantics below unchanged (a new generation makes every
//! offloaded entry stale, so the connection's next packet comes back here).
//!
//! # Promises
//! - No allocation, lock or formatting per packet: all scratch arrays are sized at
//!   construction for [`MAX_BATCH`]; stats are plain per-worker counters aggregated on
//!   read; each batch polls the published generation (an atomic on its own cache
//!   line) with a plain load, and the `arc-swap` load runs only when it changed; flow
//!   records leave through a bounded channel with `try_send` (counted when full).
//! - **Enforced decides, pending is tracked.** Forwarding follows the *applied*
//!   enforced verdict of the packet's connection; every packet is also counted under
//!   its (enforced, pending) outcome pair.
//! - **Stateful like Calico** (CALICO_SEMANTICS §3.7): replies of an allowed
//!   connection pass without policy; ICMP errors quoting an allowed connection pass
//!   as related. A packet from the responder of a *denied* flow is not a reply (no
//!   connection exists): it is classified as a new connection from that side.
//! - **Policy updates at batch boundaries.** A new generation is picked up before the
//!   next batch. Existing allowed connections keep their applied enforced verdict by
//!   default ([`WorkerConfig::reevaluate_enforced`] re-decides them); denied flows and
//!   every pending verdict are re-evaluated at the flow's next packet. The old
//!   classifier is freed by the publisher ([`ClassifierSlot::reclaim`]), never by a
//!   worker.

mod batch;
mod offload;
mod publish;
mod stats;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::arch::huge::AllocError;
use crate::flow::{FlowRecord, FlowTable, FlowTableConfig, Slot};
use crate::packet::{FragmentTracker, ParseError, ParsedPacket, UnparsedPolicy};
use crate::program::{Classify, FlowKey, FlowVerdicts};

use batch::{Deferred, Job, OUT_NONE, PktMeta};

// The port seam lived here before ports had a module of their own.
pub use crate::port::{MemPort, Port, Rx, RxFrame};
pub use offload::{FlowOffload, Install, OffloadCounters, OffloadStats};
pub use publish::{ClassifierSlot, Published, Waker};
pub use stats::{Count, WorkerStats, new_latency_histogram};

/// Offloaded connections an idle worker merges per wake-up ([`Worker::idle`]), and
/// the flow-table slots it looks at to find them.
const IDLE_SYNCS: usize = 64;
const IDLE_SYNC_SCAN: usize = 4096;

/// The largest batch a worker processes at once.
pub const MAX_BATCH: usize = 256;

/// Configuration of one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Frames per rx batch (1..=[`MAX_BATCH`]).
    pub batch: usize,
    /// Flow table sizing, seed and timeouts.
    pub flow: FlowTableConfig,
    /// What happens to frames that do not parse.
    pub unparsed: UnparsedPolicy,
    /// Re-decide existing allowed connections when policy changes (default: keep).
    pub reevaluate_enforced: bool,
    /// What a packet from the responder of a denied connection is.
    pub denied_responder: DeniedResponder,
    /// Buckets examined for expiry after each batch.
    pub sweep_buckets: usize,
    /// Export interval for flow records (packet time, ns); `None` = only final records.
    pub export_interval_ns: Option<u64>,
    /// Slots of the fragment tracker.
    pub fragment_slots: usize,
    /// Prefetch flow-table buckets and entries for the whole batch before the
    /// lookups (on by default; off only to measure what it buys).
    pub prefetch: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch: 64,
            flow: FlowTableConfig::default(),
            unparsed: UnparsedPolicy::default(),
            reevaluate_enforced: false,
            denied_responder: DeniedResponder::NewConnection,
            sweep_buckets: 4,
            export_interval_ns: Some(15_000_000_000),
            fragment_slots: 1024,
            prefetch: true,
        }
    }
}

/// What a packet from the responder of a connection whose enforced verdict is deny
/// is taken to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeniedResponder {
    /// A connection attempt of its own from the responder's side, classified (and, if
    /// allowed, taking over the entry) — what a stateful firewall does with live
    /// traffic: the denied request never reached the responder, so anything the
    /// responder sends is new.
    #[default]
    NewConnection,
    /// Part of the denied connection: counted in its reverse direction, given its
    /// verdicts (dropped by the enforced view). For replaying captures, where the
    /// responder's packets exist only because the request was let through when the
    /// capture was taken: they would not exist under the policy being tried.
    JoinConnection,
}

/// Where flow records go: a bounded channel, or nowhere (counted as dropped).
#[derive(Debug)]
pub struct RecordOut {
    tx: Option<crossbeam::channel::Sender<FlowRecord>>,
    sent: u64,
    dropped: u64,
    /// Added to the times of every record (a live port's monotonic clock to wall).
    offset_ns: u64,
}

impl RecordOut {
    /// Records go to `tx` (a bounded channel: when full, records are dropped and counted).
    pub fn channel(tx: crossbeam::channel::Sender<FlowRecord>) -> Self {
        RecordOut {
            tx: Some(tx),
            sent: 0,
            dropped: 0,
            offset_ns: 0,
        }
    }

    /// Adds `ns` to the times of every record (`first_ns`, `interval_first_ns`,
    /// `last_ns`): a live port stamps frames with a monotonic clock, and records
    /// carry wall time.
    pub fn with_time_offset(self, ns: u64) -> Self {
        RecordOut {
            offset_ns: ns,
            ..self
        }
    }

    /// Records are discarded (benchmarks); they still count as dropped.
    pub fn none() -> Self {
        RecordOut {
            tx: None,
            sent: 0,
            dropped: 0,
            offset_ns: 0,
        }
    }

    #[inline]
    fn emit(&mut self, mut r: FlowRecord) {
        if self.offset_ns != 0 {
            r.first_ns = r.first_ns.saturating_add(self.offset_ns);
            r.interval_first_ns = r.interval_first_ns.saturating_add(self.offset_ns);
            r.last_ns = r.last_ns.saturating_add(self.offset_ns);
        }
        match &self.tx {
            Some(tx) if tx.try_send(r).is_ok() => self.sent += 1,
            _ => self.dropped += 1,
        }
    }
}

/// One worker: owns its flow table, fragment tracker, scratch arrays and counters.
#[derive(Debug)]
pub struct Worker<C> {
    cfg: WorkerConfig,
    table: FlowTable,
    frags: FragmentTracker,
    stats: WorkerStats,
    latency: Histogram<u64>,
    slot: Arc<ClassifierSlot<C>>,
    current: Arc<Published<C>>,
    seat: Arc<publish::Seat>,
    /// Whether the seat says the worker is asleep ([`Worker::asleep`]).
    asleep: bool,
    records: RecordOut,
    next_export_ns: u64,
    last_ns: u64,
    // Scratch, sized once.
    frames: Vec<RxFrame>,
    meta: Vec<PktMeta>,
    /// Packets of the full parser (only slots with `Parsed::Full` are meaningful).
    parsed: Vec<Result<ParsedPacket, ParseError>>,
    /// Outcome code per packet (see [`outcome_code`]).
    codes: Vec<u8>,
    keys: Vec<FlowKey>,
    jobs: Vec<Job>,
    out: Vec<FlowVerdicts>,
    deferred: Vec<Deferred>,
    tx: Vec<RxFrame>,
    drop: Vec<RxFrame>,
    /// Flow offload, when the port has one ([`Worker::with_offload`]).
    offload: Option<offload::Offloader>,
    /// Slots of allowed connections that saw a packet this batch (offload only).
    touched: Vec<Slot>,
}

/// What a worker reports when it stops.
#[derive(Clone, Debug)]
pub struct WorkerReport {
    /// Counters.
    pub stats: WorkerStats,
    /// Batch latency (ns).
    pub latency: Histogram<u64>,
    /// Bytes of flow-table memory.
    pub flow_table_bytes: usize,
    /// Flow-table slots.
    pub flow_table_capacity: usize,
}

impl<C: Classify> Worker<C> {
    /// A worker reading classifiers from `slot`, sending records to `records`. Panics
    /// if the flow table cannot be allocated ([`Worker::try_new`] reports it).
    pub fn new(cfg: WorkerConfig, slot: Arc<ClassifierSlot<C>>, records: RecordOut) -> Self {
        Self::try_new(cfg, slot, records).unwrap_or_else(|e| panic!("flow table: {e}"))
    }

    /// [`Worker::new`], or the error of allocating the flow table.
    pub fn try_new(
        cfg: WorkerConfig,
        slot: Arc<ClassifierSlot<C>>,
        records: RecordOut,
    ) -> Result<Self, AllocError> {
        let batch = cfg.batch.clamp(1, MAX_BATCH);
        let cfg = WorkerConfig { batch, ..cfg };
        let table = FlowTable::try_new(cfg.flow)?;
        let current = slot.load();
        let seat = slot.register(current.generation);
        Ok(Worker {
            table,
            frags: FragmentTracker::new(cfg.fragment_slots, cfg.flow.seed ^ 0x6672_6167),
            stats: WorkerStats::default(),
            latency: new_latency_histogram(),
            slot,
            current,
            seat,
            asleep: false,
            records,
            next_export_ns: 0,
            last_ns: 0,
            frames: vec![RxFrame::default(); batch],
            meta: vec![PktMeta::EMPTY; batch],
            parsed: vec![Err(ParseError::Truncated); batch],
            codes: vec![OUT_NONE; batch],
            keys: Vec::with_capacity(batch),
            jobs: Vec::with_capacity(batch),
            out: vec![FlowVerdicts::default(); batch],
            deferred: Vec::with_capacity(batch),
            tx: vec![RxFrame::default(); batch],
            drop: vec![RxFrame::default(); batch],
            offload: None,
            touched: Vec::new(),
            cfg,
        })
    }

    /// Offloads the established connections this worker allows to `imp` (see the
    /// `offload` module docs): they are installed there after the batch that
    /// established them, and what `imp` counts is merged into their flow entries
    /// before anything reads them, so flow records stay what they would be without
    /// it. Allocates the per-slot bookkeeping (about 90 bytes per flow-table slot).
    pub fn with_offload(mut self, imp: Box<dyn FlowOffload>) -> Self {
        let mut o = offload::Offloader::new(imp, self.table.capacity());
        o.publish_generation(self.current.generation);
        self.offload = Some(o);
        self.touched = Vec::with_capacity(self.cfg.batch * 2);
        self
    }

    /// Counters of the offload (`None` without one).
    pub fn offload_stats(&self) -> Option<OffloadStats> {
        self.offload.as_ref().map(|o| o.stats)
    }

    /// Counters so far (flow-table counters included).
    pub fn stats(&self) -> WorkerStats {
        let mut s = self.stats;
        if let Some(o) = &self.offload {
            s.offloaded = Count {
                packets: o.stats.packets,
                bytes: o.stats.bytes,
            };
        }
        s.flows = self.table.stats();
        s.records_sent = self.records.sent;
        s.records_dropped = self.records.dropped;
        s.fragments_resolved = self.frags.resolved;
        s.fragments_unresolved = self.frags.unresolved;
        s
    }

    /// The flow table (read-only).
    pub fn flow_table(&self) -> &FlowTable {
        &self.table
    }

    /// Runs until the port reports [`Rx::End`], then drains the flow table into final
    /// records and returns the report. `keep_going` is polled between batches; when
    /// it returns false the worker stops as if the port had ended.
    // Never inlined: called once per worker, and a stable frame for profilers.
    #[inline(never)]
    pub fn run<P: Port>(mut self, port: &mut P, keep_going: &dyn Fn() -> bool) -> WorkerReport {
        while keep_going() {
            match self.poll(port) {
                Rx::End => break,
                Rx::Idle => std::hint::spin_loop(),
                Rx::Frames(_) => {}
            }
        }
        self.finish()
    }

    /// Ends every tracked connection now: final records for all of them, and the
    /// offloaded ones out of the offload with their last counters merged (into the
    /// records and the worker's counters). [`Worker::finish`] does it too; a live
    /// port calls it first, so that its final counters include the drain.
    pub fn drain_flows(&mut self) {
        let now = self.last_ns;
        let records = &mut self.records;
        self.table
            .drain_hooked(now, &mut self.offload, &mut |r| records.emit(r));
        self.take_offload_counts();
    }

    /// Ends the run: final records for every tracked connection.
    pub fn finish(mut self) -> WorkerReport {
        self.drain_flows();
        WorkerReport {
            stats: self.stats(),
            latency: self.latency,
            flow_table_bytes: self.table.memory_bytes(),
            flow_table_capacity: self.table.capacity(),
        }
    }

    /// The worker is about to sleep until frames arrive (or a timeout): until it next
    /// receives or idles, the publisher may count it as running every generation
    /// published meanwhile, since it takes the newest one before processing anything
    /// ([`publish::Seat`]). A worker that sleeps without saying so is waited for until
    /// it wakes.
    ///
    /// Not with a flow offload: while the worker sleeps, the XDP program keeps
    /// forwarding its connections under the generation the worker last wrote into
    /// the offload, so a change waits until the worker takes it (at the latest when
    /// its sleep times out).
    pub fn asleep(&mut self) {
        if self.offload.is_some() {
            return;
        }
        self.seat.asleep.store(true, Ordering::SeqCst);
        self.asleep = true;
    }

    /// Picks up a newly published classifier, if any (batch boundary).
    fn refresh_classifier(&mut self) {
        // Awake again: say so before reading the generation (sequentially
        // consistent, [`publish::Seat`]).
        let published = if self.asleep {
            self.asleep = false;
            self.seat.asleep.store(false, Ordering::SeqCst);
            self.slot.published.load(Ordering::SeqCst)
        } else {
            self.slot.published.load(Ordering::Acquire)
        };
        if published != self.current.generation {
            let next = self.slot.load();
            // Drop ours before telling the publisher, so the publisher's `reclaim`
            // is the one that frees it.
            self.current = next;
            self.seat
                .generation
                .store(self.current.generation, Ordering::Release);
            self.stats.generation_swaps += 1;
            if let Some(o) = &mut self.offload {
                o.publish_generation(self.current.generation);
            }
        }
    }

    /// A live port had nothing to receive at `now_ns` (its clock): picks up a new
    /// policy generation and runs the batch-boundary housekeeping (timeouts, interval
    /// records), so idle connections still expire and report; with an offload, also
    /// merges the counters of a few offloaded connections (round robin), so live
    /// counters follow what the offload forwards.
    pub fn idle(&mut self, now_ns: u64) {
        self.refresh_classifier();
        if now_ns > self.last_ns {
            self.housekeeping(now_ns);
        }
        if let Some(o) = &mut self.offload {
            // Idle time: merge a few offloaded connections' counters, round robin.
            o.sync_some(&mut self.table, self.last_ns, IDLE_SYNCS, IDLE_SYNC_SCAN);
            self.take_offload_counts();
        }
    }

    /// Adds the packets the offload forwarded (merged since the last call) to the
    /// worker's counters.
    fn take_offload_counts(&mut self) {
        if let Some(o) = &mut self.offload {
            let c = o.take_counts();
            self.stats.merge(&c);
        }
    }

    /// Batch latency so far (ns).
    pub fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// The policy generation this worker runs.
    pub fn generation(&self) -> u32 {
        self.current.generation
    }

    /// Receives and processes one batch.
    pub fn poll<P: Port>(&mut self, port: &mut P) -> Rx {
        let batch = self.cfg.batch;
        let n = match port.rx_batch(&mut self.frames[..batch]) {
            Rx::Frames(n) => n.min(batch),
            other => return other,
        };
        let t0 = Instant::now();
        self.refresh_classifier();
        self.process(port, n);
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.max(1));
        Rx::Frames(n)
    }
}
