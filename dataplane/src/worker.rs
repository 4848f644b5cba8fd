//! The worker pipeline: the batch loop every packet goes through.
//!
//! This module owns [`Worker`] (one per core, pinned), the [`Port`] seam it pulls
//! frames from and pushes verdicts to, the [`ClassifierSlot`] through which a new
//! policy generation is published, and [`WorkerStats`]. A worker loop is:
//!
//! ```text
//! rx batch ─► parse ─► fragment follow ─► related ICMP? ─► flow lookup ─┬─ hit: cached verdict
//!                                                                      └─ miss/stale: queue key
//!          ─► classify all queued keys in one call ─► settle entries ─► conntrack + counters
//!          ─► tx batch (forward) / drop batch ─► sweep a few buckets, export interval records
//! ```
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

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;
use hdrhistogram::Histogram;

use crate::arch::huge::AllocError;
use crate::flow::{
    ConnKey, Dir, EndReason, FlowRecord, FlowTable, FlowTableConfig, FlowTableStats, Placement,
    Slot,
};
use crate::packet::{
    Disposition, Fragment, FragmentTracker, ParseCounters, ParseError, ParsedPacket,
    UnparsedPolicy, parse_common, parse_full,
};
use crate::program::{Classify, FlowKey, FlowVerdicts, Verdict};

/// The largest batch a worker processes at once.
pub const MAX_BATCH: usize = 256;

/// One received frame: where its bytes are (port-specific handle), when it arrived,
/// how long it was on the wire, and on which interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxFrame {
    /// Port-specific handle (UMEM address, frame index, ...).
    pub handle: u64,
    /// Arrival time (ns; packet time for replay).
    pub ts_ns: u64,
    /// Length on the wire.
    pub wire_len: u32,
    /// Receiving interface, copied into the flow key.
    pub ifindex: u16,
}

/// What a [`Port::rx_batch`] call produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rx {
    /// This many frames were written to the start of the batch (≥ 1).
    Frames(usize),
    /// Nothing right now (a live port); the worker polls again.
    Idle,
    /// The source is exhausted (replay); the worker drains and stops.
    End,
}

/// The seam between a worker and its packet I/O: AF_XDP sockets, pcap replay, or an
/// in-memory port in tests. Implementations must not allocate per frame.
pub trait Port {
    /// Receives up to `out.len()` frames.
    fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx;
    /// The bytes of a frame received by the last `rx_batch` call.
    fn data(&self, frame: &RxFrame) -> &[u8];
    /// Forwards frames of the last batch.
    fn tx_batch(&mut self, frames: &[RxFrame]);
    /// Releases dropped frames of the last batch.
    fn drop_batch(&mut self, frames: &[RxFrame]);
}

/// A classifier with the generation number it was compiled for.
#[derive(Debug)]
pub struct Published<C> {
    /// Policy generation (control's store generation, truncated to 32 bits).
    pub generation: u32,
    /// The compiled classifier.
    pub classifier: C,
}

/// Where the current classifier is published for all workers (arc-swap). Workers
/// pick up a new one at their next batch boundary and report the generation they
/// run; [`ClassifierSlot::reclaim`] frees retired classifiers on the caller's thread
/// once no worker runs them.
#[derive(Debug)]
pub struct ClassifierSlot<C> {
    current: ArcSwap<Published<C>>,
    /// The generation of `current`, on a cache line of its own that only `publish`
    /// writes: workers poll it every batch with a plain load (no arc-swap guard, so
    /// nothing shared is written on the packet path).
    published: CachePadded<AtomicU32>,
    retired: Mutex<Vec<Arc<Published<C>>>>,
    seats: Mutex<Vec<Arc<AtomicU32>>>,
}

impl<C> ClassifierSlot<C> {
    /// A slot holding `initial`.
    pub fn new(initial: Published<C>) -> Self {
        ClassifierSlot {
            published: CachePadded::new(AtomicU32::new(initial.generation)),
            current: ArcSwap::from_pointee(initial),
            retired: Mutex::new(Vec::new()),
            seats: Mutex::new(Vec::new()),
        }
    }

    /// Publishes a new generation; the previous one is retired (kept alive here until
    /// [`ClassifierSlot::reclaim`] sees no worker using it).
    pub fn publish(&self, next: Published<C>) {
        let generation = next.generation;
        let old = self.current.swap(Arc::new(next));
        self.published.store(generation, Ordering::Release);
        if let Ok(mut r) = self.retired.lock() {
            r.push(old);
        }
    }

    /// The generation currently published.
    pub fn generation(&self) -> u32 {
        self.current.load().generation
    }

    /// The currently published classifier.
    pub fn load(&self) -> Arc<Published<C>> {
        self.current.load_full()
    }

    /// Frees retired classifiers that no registered worker runs any more. Returns
    /// how many are still retained.
    pub fn reclaim(&self) -> usize {
        let in_use: Vec<u32> = match self.seats.lock() {
            Ok(s) => s.iter().map(|a| a.load(Ordering::Acquire)).collect(),
            Err(_) => return usize::MAX,
        };
        match self.retired.lock() {
            Ok(mut r) => {
                r.retain(|p| in_use.contains(&p.generation));
                r.len()
            }
            Err(_) => usize::MAX,
        }
    }

    fn register(&self, generation: u32) -> Arc<AtomicU32> {
        let seat = Arc::new(AtomicU32::new(generation));
        if let Ok(mut s) = self.seats.lock() {
            s.push(Arc::clone(&seat));
        }
        seat
    }
}

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

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes (wire length).
    pub bytes: u64,
}

impl Count {
    #[inline]
    fn add(&mut self, len: u32) {
        self.packets += 1;
        self.bytes += u64::from(len);
    }

    fn merge(&mut self, o: &Count) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// Per-worker counters: plain integers written only by their worker, summed on read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Frames received.
    pub rx: Count,
    /// Frames forwarded (tx).
    pub forwarded: Count,
    /// Frames dropped.
    pub dropped: Count,
    /// Parse outcomes (sum = `rx.packets`).
    pub parse: ParseCounters,
    /// Unparsed frames passed by [`UnparsedPolicy`].
    pub unparsed_passed: u64,
    /// Parsed packets by (enforced, pending) outcome: `[enforced][pending]`, index 0 =
    /// allow, 1 = deny.
    pub outcome: [[Count; 2]; 2],
    /// Reply packets passed by an allowed connection (subset of `outcome`).
    pub replies: Count,
    /// ICMP errors passed as related to an allowed connection (subset of `outcome`).
    pub related: Count,
    /// Keys handed to the classifier.
    pub classified: u64,
    /// Classifier calls (one per batch with misses).
    pub classify_calls: u64,
    /// Entries re-classified after a policy change.
    pub reevaluated: u64,
    /// Responder packets of a denied flow classified as new connections.
    pub reverse_attempts: u64,
    /// Packets classified without a flow entry (table could not take them).
    pub uncached: u64,
    /// Batches processed.
    pub batches: u64,
    /// Policy generations picked up.
    pub generation_swaps: u64,
    /// Flow records handed to the record channel.
    pub records_sent: u64,
    /// Flow records lost because the channel was full or gone.
    pub records_dropped: u64,
    /// Later fragments that found their first fragment.
    pub fragments_resolved: u64,
    /// Later fragments that did not.
    pub fragments_unresolved: u64,
    /// Flow table counters.
    pub flows: FlowTableStats,
}

const fn vidx(v: Verdict) -> usize {
    match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
    }
}

#[inline]
fn set_code(codes: &mut [u8], i: usize, enforced: Verdict, pending: Verdict) {
    if let Some(c) = codes.get_mut(i) {
        *c = outcome_code(enforced, pending);
    }
}

impl WorkerStats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &WorkerStats) {
        self.rx.merge(&o.rx);
        self.forwarded.merge(&o.forwarded);
        self.dropped.merge(&o.dropped);
        self.parse.add(&o.parse);
        self.unparsed_passed += o.unparsed_passed;
        for e in 0..2 {
            for p in 0..2 {
                self.outcome[e][p].merge(&o.outcome[e][p]);
            }
        }
        self.replies.merge(&o.replies);
        self.related.merge(&o.related);
        self.classified += o.classified;
        self.classify_calls += o.classify_calls;
        self.reevaluated += o.reevaluated;
        self.reverse_attempts += o.reverse_attempts;
        self.uncached += o.uncached;
        self.batches += o.batches;
        self.generation_swaps += o.generation_swaps;
        self.records_sent += o.records_sent;
        self.records_dropped += o.records_dropped;
        self.fragments_resolved += o.fragments_resolved;
        self.fragments_unresolved += o.fragments_unresolved;
        self.flows.add(&o.flows);
    }

    /// Packets by outcome.
    pub fn outcome(&self, enforced: Verdict, pending: Verdict) -> Count {
        self.outcome[vidx(enforced)][vidx(pending)]
    }
}

/// Why a packet waits for the classifier.
#[derive(Clone, Copy, Debug)]
enum JobKind {
    /// First packet of a new connection in `slot` (already started).
    New,
    /// Cached verdicts are from an older generation.
    Reevaluate,
    /// A responder packet of a denied flow: a new connection attempt from that side.
    Reverse,
    /// No slot could be claimed: classify, decide, forget.
    Uncached,
}

#[derive(Clone, Copy, Debug)]
struct Job {
    kind: JobKind,
    slot: Slot,
    /// Index of the packet in the batch that caused the job.
    pkt: u16,
}

/// A packet whose decision waits for its entry's verdict.
#[derive(Clone, Copy, Debug)]
struct Deferred {
    pkt: u16,
    slot: Slot,
    dir: Dir,
    /// An ICMP error whose related connection was awaiting its verdict.
    related: bool,
}

/// How a frame of the batch was parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parsed {
    /// It was not: its disposition is already in its outcome code.
    No,
    /// By [`parse_common`]: a plain TCP/UDP packet (`L4::Ports`, no fragment); its
    /// flow key is rebuilt from the connection key when needed ([`packet_key`]).
    Fast,
    /// By [`parse_full`]; the packet is kept in `Worker::parsed`.
    Full,
}

/// Per-packet facts kept between the phases of a batch.
#[derive(Clone, Copy, Debug)]
struct PktMeta {
    ck: ConnKey,
    place: Placement,
    /// Wire length as the parser reports it.
    wire_len: u32,
    tcp_flags: u8,
    dir_b: bool,
    parsed: Parsed,
}

impl PktMeta {
    const EMPTY: PktMeta = PktMeta {
        ck: ConnKey::EMPTY,
        place: Placement {
            b1: 0,
            b2: 0,
            tag: 0,
        },
        wire_len: 0,
        tcp_flags: 0,
        dir_b: false,
        parsed: Parsed::No,
    };

    #[inline]
    fn dir(&self) -> Dir {
        if self.dir_b { Dir::BtoA } else { Dir::AtoB }
    }
}

/// The classification key of packet `i` of the batch. A fast-parsed packet is a plain
/// TCP/UDP packet, whose canonical key holds its addresses and ports: oriented by
/// its direction, they are its flow key (a test checks this against the parser).
#[inline]
fn packet_key(
    m: &PktMeta,
    f: &RxFrame,
    parsed: &[Result<ParsedPacket, ParseError>],
    i: usize,
) -> Option<FlowKey> {
    match m.parsed {
        Parsed::No => None,
        Parsed::Fast => {
            let ck = &m.ck;
            let (src, sport, dst, dport) = if m.dir_b {
                (ck.b, ck.pb(), ck.a, ck.pa())
            } else {
                (ck.a, ck.pa(), ck.b, ck.pb())
            };
            Some(FlowKey {
                src,
                dst,
                sport,
                dport,
                proto: ck.proto(),
                family: ck.family(),
                ifindex: f.ifindex,
            })
        }
        Parsed::Full => match parsed.get(i) {
            Some(Ok(p)) => Some(p.key),
            _ => None,
        },
    }
}

// Per-packet outcome codes, decided by phases 1–4 and acted on by phase 5:
// `2 * vidx(enforced) + vidx(pending)` for a packet with verdicts, or one of these.
/// Not parsed, passed without policy ([`UnparsedPolicy`]).
const OUT_PASS: u8 = 4;
/// No verdict: not parsed and dropped (or, defensively, left undecided).
const OUT_NONE: u8 = 5;
/// Codes that forward the frame: enforced allow, or passed unparsed.
const OUT_FORWARD: u32 = 0b1_0011;

#[inline]
const fn outcome_code(enforced: Verdict, pending: Verdict) -> u8 {
    (2 * vidx(enforced) + vidx(pending)) as u8
}

/// Where flow records go: a bounded channel, or nowhere (counted as dropped).
#[derive(Debug)]
pub struct RecordOut {
    tx: Option<crossbeam::channel::Sender<FlowRecord>>,
    sent: u64,
    dropped: u64,
}

impl RecordOut {
    /// Records go to `tx` (a bounded channel: when full, records are dropped and counted).
    pub fn channel(tx: crossbeam::channel::Sender<FlowRecord>) -> Self {
        RecordOut {
            tx: Some(tx),
            sent: 0,
            dropped: 0,
        }
    }

    /// Records are discarded (benchmarks); they still count as dropped.
    pub fn none() -> Self {
        RecordOut {
            tx: None,
            sent: 0,
            dropped: 0,
        }
    }

    #[inline]
    fn emit(&mut self, r: FlowRecord) {
        match &self.tx {
            Some(tx) if tx.try_send(r).is_ok() => self.sent += 1,
            _ => self.dropped += 1,
        }
    }
}

/// A batch-latency histogram (ns), 1 ns .. 10 s at 2 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, 10_000_000_000, 2).expect("valid histogram bounds")
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
    seat: Arc<AtomicU32>,
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
            cfg,
        })
    }

    /// Counters so far (flow-table counters included).
    pub fn stats(&self) -> WorkerStats {
        let mut s = self.stats;
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

    /// Ends the run: final records for every tracked connection.
    pub fn finish(mut self) -> WorkerReport {
        let now = self.last_ns;
        let records = &mut self.records;
        self.table.drain(now, &mut |r| records.emit(r));
        WorkerReport {
            stats: self.stats(),
            latency: self.latency,
            flow_table_bytes: self.table.memory_bytes(),
            flow_table_capacity: self.table.capacity(),
        }
    }

    /// Picks up a newly published classifier, if any (batch boundary).
    fn refresh_classifier(&mut self) {
        if self.slot.published.load(Ordering::Acquire) != self.current.generation {
            let next = self.slot.load();
            // Drop ours before telling the publisher, so the publisher's `reclaim`
            // is the one that frees it.
            self.current = next;
            self.seat.store(self.current.generation, Ordering::Release);
            self.stats.generation_swaps += 1;
        }
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

    /// Classifies one key outside the batch call (rare paths only).
    fn classify_one(&mut self, key: FlowKey) -> FlowVerdicts {
        let mut out = [FlowVerdicts::default()];
        self.current
            .classifier
            .classify(std::slice::from_ref(&key), &mut out);
        self.stats.classified += 1;
        self.stats.classify_calls += 1;
        out[0]
    }

    /// Packet `i` came from the responder of a denied flow in `slot` and was
    /// classified as its own connection attempt (`fv`). If allowed, the responder's
    /// connection replaces the denied flow in the entry (the denied flow's record
    /// ends); either way the packet gets `fv`'s verdicts.
    fn reverse_attempt(&mut self, i: usize, slot: Slot, fv: &FlowVerdicts, generation: u32) {
        self.stats.reverse_attempts += 1;
        let (Some(&meta), Some(&f)) = (self.meta.get(i), self.frames.get(i)) else {
            return;
        };
        let now = f.ts_ns;
        let len = f.wire_len;
        if let Some(e) = self.table.entry_mut(slot) {
            e.clear_awaiting();
        }
        if fv.enforced() == Verdict::Allow
            && let Some(key) = packet_key(&meta, &f, &self.parsed, i)
            && let Some(e) = self.table.entry_mut(slot)
        {
            let dir = meta.dir();
            self.records.emit(e.record(Some(EndReason::Replaced)));
            e.start(&meta.ck, dir, &key, meta.tcp_flags, now);
            e.set_verdicts(fv, generation, true);
            e.on_packet(dir, meta.tcp_flags, len, now);
            self.table.touch(slot, now);
        }
        set_code(&mut self.codes, i, fv.enforced(), fv.pending());
    }

    fn process<P: Port>(&mut self, port: &mut P, n: usize) {
        let generation = self.current.generation;
        let n = n.min(self.frames.len());
        self.keys.clear();
        self.jobs.clear();
        self.deferred.clear();
        self.stats.batches += 1;
        let mut batch_now = self.last_ns;
        let mut rx_bytes = 0u64;
        let mut parsed_fast = 0u64;

        // Phase 0: parse every frame, compute its connection key and hash, and start
        // loading its flow-table bucket, so the batch's cache misses overlap. Plain
        // TCP/UDP frames take the parser's fast path and leave nothing else behind.
        let frames = self.frames.get(..n).unwrap_or_default().iter();
        let metas = self.meta.iter_mut();
        let codes = self.codes.iter_mut();
        let slots = self.parsed.iter_mut();
        for (((f, m), code), slot) in frames.zip(metas).zip(codes).zip(slots) {
            rx_bytes += u64::from(f.wire_len);
            batch_now = batch_now.max(f.ts_ns);
            *code = OUT_NONE;
            let data = port.data(f);
            let (ck, dir) = if let Some(p) = parse_common(data, f.wire_len, f.ifindex) {
                parsed_fast += 1;
                m.parsed = Parsed::Fast;
                m.wire_len = p.wire_len;
                m.tcp_flags = p.tcp_flags;
                ConnKey::canonical(&p.conn())
            } else {
                *slot = parse_full(data, f.wire_len, f.ifindex);
                self.stats.parse.record(slot);
                match slot {
                    Ok(p) => {
                        if p.fragment != Fragment::None {
                            self.frags.resolve(p, f.ts_ns);
                        }
                        m.parsed = Parsed::Full;
                        m.wire_len = p.wire_len;
                        m.tcp_flags = p.tcp_flags;
                        ConnKey::canonical(&p.conn())
                    }
                    Err(e) => {
                        m.parsed = Parsed::No;
                        if self.cfg.unparsed.disposition(*e) == Disposition::Pass {
                            *code = OUT_PASS;
                            self.stats.unparsed_passed += 1;
                        }
                        continue;
                    }
                }
            };
            let place = self.table.placement(self.table.hash(&ck));
            if self.cfg.prefetch {
                self.table.prefetch_bucket(&place);
            }
            m.ck = ck;
            m.dir_b = dir == Dir::BtoA;
            m.place = place;
        }
        self.stats.parse.parsed += parsed_fast;
        self.stats.rx.packets += n as u64;
        self.stats.rx.bytes += rx_bytes;

        // Phase 0b: with the buckets arriving, start loading the candidate entries.
        if self.cfg.prefetch {
            for m in self.meta.get(..n).unwrap_or_default() {
                if m.parsed != Parsed::No {
                    self.table.prefetch_entry(&m.place);
                }
            }
        }

        // Phase 1: look up, decide hits; queue what needs the classifier.
        let timeouts = *self.table.timeouts();
        let by_class = *self.table.timeout_table();
        let frames = self.frames.get(..n).unwrap_or_default();
        for (i, (m, f)) in self.meta.iter().zip(frames).enumerate() {
            let now = f.ts_ns;
            let len = m.wire_len;
            let pkt = i as u16;
            match m.parsed {
                Parsed::No => continue,
                Parsed::Fast => {}
                Parsed::Full => {
                    let related = match self.parsed.get(i) {
                        Some(Ok(p)) => p.related(),
                        _ => None,
                    };
                    if let Some(q) = related {
                        let (qk, qdir) = ConnKey::canonical(&q);
                        let h = self.table.hash(&qk);
                        let found = self.table.find(&qk, h);
                        if let Some(s) = found
                            && self.table.entry(s).is_some_and(|e| e.awaiting_verdict())
                        {
                            // Decided once the related connection's verdict is known.
                            self.deferred.push(Deferred {
                                pkt,
                                slot: s,
                                dir: qdir.flip(),
                                related: true,
                            });
                            continue;
                        }
                        if let Some(s) = found
                            && let Some(e) = self.table.entry_mut(s)
                            && e.applied() == Verdict::Allow
                            && !e.is_expired(now, &timeouts)
                        {
                            // The error travels towards the quoted packet's sender.
                            e.on_packet(qdir.flip(), 0, len, now);
                            let pending = e.pending();
                            self.table.touch(s, now);
                            set_code(&mut self.codes, i, Verdict::Allow, pending);
                            self.stats.related.add(len);
                            continue;
                        }
                    }
                }
            }

            let ck = &m.ck;
            let dir = m.dir();
            let flags = m.tcp_flags;
            match self.table.lookup_placed(ck, &m.place) {
                Some(s) => {
                    let Some(e) = self.table.entry_mut(s) else {
                        continue;
                    };
                    if e.awaiting_verdict() {
                        self.deferred.push(Deferred {
                            pkt,
                            slot: s,
                            dir,
                            related: false,
                        });
                        continue;
                    }
                    let expired = e.is_expired_by(now, &by_class);
                    if expired || e.is_reopen(flags) {
                        let Some(key) = packet_key(m, f, &self.parsed, i) else {
                            continue;
                        };
                        let reason = if expired {
                            if e.state().is_closed() {
                                EndReason::Closed
                            } else {
                                EndReason::Timeout
                            }
                        } else {
                            EndReason::Replaced
                        };
                        self.records.emit(e.record(Some(reason)));
                        e.start(ck, dir, &key, flags, now);
                        self.table.touch(s, now);
                        self.keys.push(key);
                        self.jobs.push(Job {
                            kind: JobKind::New,
                            slot: s,
                            pkt,
                        });
                        self.deferred.push(Deferred {
                            pkt,
                            slot: s,
                            dir,
                            related: false,
                        });
                        continue;
                    }
                    if e.generation() != generation {
                        e.set_awaiting();
                        self.keys.push(e.initiator_key());
                        self.jobs.push(Job {
                            kind: JobKind::Reevaluate,
                            slot: s,
                            pkt,
                        });
                        self.deferred.push(Deferred {
                            pkt,
                            slot: s,
                            dir,
                            related: false,
                        });
                        continue;
                    }
                    let from_initiator = dir == e.initiator_dir();
                    if !from_initiator
                        && e.applied() == Verdict::Deny
                        && self.cfg.denied_responder == DeniedResponder::NewConnection
                    {
                        let Some(key) = packet_key(m, f, &self.parsed, i) else {
                            continue;
                        };
                        // Later packets of this flow in the batch wait for the outcome.
                        e.set_awaiting();
                        self.keys.push(key);
                        self.jobs.push(Job {
                            kind: JobKind::Reverse,
                            slot: s,
                            pkt,
                        });
                        continue;
                    }
                    e.on_packet(dir, flags, len, now);
                    let (enforced, pending) = (e.applied(), e.pending());
                    // Counted without a branch: replies come and go with traffic.
                    let reply = u64::from(!from_initiator & (enforced == Verdict::Allow));
                    self.stats.replies.packets += reply;
                    self.stats.replies.bytes += reply * u64::from(len);
                    self.table.touch(s, now);
                    set_code(&mut self.codes, i, enforced, pending);
                }
                None => {
                    let Some(key) = packet_key(m, f, &self.parsed, i) else {
                        continue;
                    };
                    let records = &mut self.records;
                    match self
                        .table
                        .claim_placed(&m.place, now, &mut |r| records.emit(r))
                    {
                        Some(s) => {
                            if let Some(e) = self.table.entry_mut(s) {
                                e.start(ck, dir, &key, flags, now);
                            }
                            self.keys.push(key);
                            self.jobs.push(Job {
                                kind: JobKind::New,
                                slot: s,
                                pkt,
                            });
                            self.deferred.push(Deferred {
                                pkt,
                                slot: s,
                                dir,
                                related: false,
                            });
                        }
                        None => {
                            self.keys.push(key);
                            self.jobs.push(Job {
                                kind: JobKind::Uncached,
                                slot: 0,
                                pkt,
                            });
                        }
                    }
                }
            }
        }

        // Phase 2: one classifier call for every queued key.
        let m = self.keys.len().min(self.out.len());
        if m > 0 {
            self.current
                .classifier
                .classify(&self.keys[..m], &mut self.out[..m]);
            self.stats.classified += m as u64;
            self.stats.classify_calls += 1;
        }

        // Phase 3: settle entries with their verdicts.
        for j in 0..m {
            let (Some(&job), Some(&fv)) = (self.jobs.get(j), self.out.get(j)) else {
                continue;
            };
            let i = usize::from(job.pkt);
            match job.kind {
                JobKind::New => {
                    if let Some(e) = self.table.entry_mut(job.slot) {
                        e.set_verdicts(&fv, generation, true);
                    }
                }
                JobKind::Reevaluate => {
                    self.stats.reevaluated += 1;
                    let keep = !self.cfg.reevaluate_enforced;
                    if let Some(e) = self.table.entry_mut(job.slot) {
                        let apply = !keep || e.applied() == Verdict::Deny;
                        e.set_verdicts(&fv, generation, apply);
                    }
                }
                JobKind::Reverse => self.reverse_attempt(i, job.slot, &fv, generation),
                JobKind::Uncached => {
                    self.stats.uncached += 1;
                    set_code(&mut self.codes, i, fv.enforced(), fv.pending());
                }
            }
        }

        // Phase 4: packets that waited for their entry, in arrival order.
        for d in 0..self.deferred.len() {
            let Some(&Deferred {
                pkt,
                slot,
                dir,
                related,
            }) = self.deferred.get(d)
            else {
                continue;
            };
            let i = usize::from(pkt);
            let (Some(&f), Some(&meta)) = (self.frames.get(i), self.meta.get(i)) else {
                continue;
            };
            let flags = meta.tcp_flags;
            let Some(e) = self.table.entry_mut(slot) else {
                continue;
            };
            if related {
                if e.applied() == Verdict::Allow {
                    e.on_packet(dir, 0, f.wire_len, f.ts_ns);
                    set_code(&mut self.codes, i, Verdict::Allow, e.pending());
                    self.stats.related.add(f.wire_len);
                    self.table.touch(slot, f.ts_ns);
                } else if let Some(key) = packet_key(&meta, &f, &self.parsed, i) {
                    // Related to a denied flow: judged on its own, without an entry
                    // (rare: the error raced its flow's first packet in one batch).
                    let fv = self.classify_one(key);
                    self.stats.uncached += 1;
                    set_code(&mut self.codes, i, fv.enforced(), fv.pending());
                }
                continue;
            }
            if e.is_reopen(flags)
                && let Some(key) = packet_key(&meta, &f, &self.parsed, i)
            {
                // A new SYN after the connection closed earlier in this batch: a new
                // connection, as it would have been one packet at a time (rare path).
                self.records.emit(e.record(Some(EndReason::Replaced)));
                e.start(&meta.ck, dir, &key, flags, f.ts_ns);
                let fv = self.classify_one(key);
                if let Some(e) = self.table.entry_mut(slot) {
                    e.set_verdicts(&fv, generation, true);
                }
            }
            let Some(e) = self.table.entry_mut(slot) else {
                continue;
            };
            let from_initiator = dir == e.initiator_dir();
            if from_initiator
                || e.applied() == Verdict::Allow
                || self.cfg.denied_responder == DeniedResponder::JoinConnection
            {
                e.on_packet(dir, flags, f.wire_len, f.ts_ns);
                if !from_initiator && e.applied() == Verdict::Allow {
                    self.stats.replies.add(f.wire_len);
                }
                set_code(&mut self.codes, i, e.applied(), e.pending());
                self.table.touch(slot, f.ts_ns);
            } else if let Some(key) = packet_key(&meta, &f, &self.parsed, i) {
                // The responder of a flow denied earlier in this batch: a new
                // connection attempt from its side, classified now (rare path).
                let fv = self.classify_one(key);
                self.reverse_attempt(i, slot, &fv, generation);
            }
        }

        // Phase 5: forward or drop, count per outcome once per batch. Each frame is
        // written to both lists and only the chosen one's length advances: verdicts
        // vary from packet to packet, a branch on them would not be predicted.
        let (mut ntx, mut ndrop) = (0usize, 0usize);
        let mut counts = [Count::default(); 6];
        let frames = self.frames.get(..n).unwrap_or_default();
        for (f, &code) in frames.iter().zip(&self.codes) {
            if let Some(c) = counts.get_mut(usize::from(code)) {
                c.add(f.wire_len);
            }
            let forward = ((OUT_FORWARD >> code) & 1) as usize;
            if let Some(t) = self.tx.get_mut(ntx) {
                *t = *f;
            }
            if let Some(d) = self.drop.get_mut(ndrop) {
                *d = *f;
            }
            ntx += forward;
            ndrop += 1 - forward;
        }
        let [aa, ad, da, dd, pass, none] = counts;
        for (o, c) in [(0, aa), (1, ad), (2, da), (3, dd)] {
            self.stats.outcome[o / 2][o % 2].merge(&c);
        }
        for c in [aa, ad, pass] {
            self.stats.forwarded.merge(&c);
        }
        for c in [da, dd, none] {
            self.stats.dropped.merge(&c);
        }
        if let Some(tx) = self.tx.get(..ntx)
            && !tx.is_empty()
        {
            port.tx_batch(tx);
        }
        if let Some(drop) = self.drop.get(..ndrop)
            && !drop.is_empty()
        {
            port.drop_batch(drop);
        }

        // Housekeeping at the batch boundary.
        self.last_ns = batch_now;
        let records = &mut self.records;
        self.table
            .sweep(batch_now, self.cfg.sweep_buckets, &mut |r| records.emit(r));
        if let Some(iv) = self.cfg.export_interval_ns
            && iv > 0
        {
            if self.next_export_ns == 0 {
                self.next_export_ns = (batch_now / iv + 1) * iv;
            } else if batch_now >= self.next_export_ns {
                self.table
                    .export_interval(self.next_export_ns, &mut |r| records.emit(r));
                self.next_export_ns = (batch_now / iv + 1) * iv;
            }
        }
    }
}

/// An in-memory port over a set of frames (tests and benchmarks): each frame is
/// delivered `loops` times (timestamps advanced per loop so time moves forward);
/// verdicts can be recorded per delivered frame.
#[derive(Debug)]
pub struct MemPort {
    frames: Arc<pcap::capture::Frames>,
    /// The frames to deliver, in order, prepared once (no per-frame work at rx).
    order: Vec<RxFrame>,
    pos: usize,
    loops: usize,
    loop_no: usize,
    span_ns: u64,
    /// Verdict of each delivered frame in delivery order (`true` = forwarded), when
    /// recording.
    pub verdicts: Option<Vec<(u32, bool)>>,
    /// Frames forwarded.
    pub tx_count: u64,
    /// Frames dropped.
    pub drop_count: u64,
}

impl MemPort {
    /// A port delivering `order` (indices into `frames`) `loops` times.
    pub fn new(frames: Arc<pcap::capture::Frames>, order: Vec<u32>, loops: usize) -> Self {
        let (lo, hi) = order
            .iter()
            .filter_map(|&i| frames.get(i as usize))
            .fold((u64::MAX, 0u64), |(lo, hi), f| {
                (lo.min(f.ts_ns), hi.max(f.ts_ns))
            });
        let span_ns = hi.saturating_sub(lo) + 1_000_000;
        let order = order
            .iter()
            .filter_map(|&i| {
                frames.get(i as usize).map(|f| RxFrame {
                    handle: u64::from(i),
                    ts_ns: f.ts_ns,
                    wire_len: f.orig_len.max(f.data.len() as u32),
                    ifindex: 0,
                })
            })
            .collect();
        MemPort {
            frames,
            order,
            pos: 0,
            loops: loops.max(1),
            loop_no: 0,
            span_ns,
            verdicts: None,
            tx_count: 0,
            drop_count: 0,
        }
    }

    /// Every frame, in file order, once.
    pub fn all(frames: Arc<pcap::capture::Frames>) -> Self {
        let order = (0..frames.len() as u32).collect();
        Self::new(frames, order, 1)
    }

    /// Records each frame's verdict (allocates; tests only).
    pub fn recording(mut self) -> Self {
        self.verdicts = Some(Vec::new());
        self
    }

    /// Sets the ifindex reported for every frame.
    pub fn with_ifindex(mut self, ifindex: u16) -> Self {
        for f in &mut self.order {
            f.ifindex = ifindex;
        }
        self
    }
}

impl Port for MemPort {
    fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx {
        if self.pos == self.order.len() {
            self.loop_no += 1;
            self.pos = 0;
        }
        if self.loop_no >= self.loops || self.order.is_empty() {
            return Rx::End;
        }
        let src = &self.order[self.pos..];
        let n = out.len().min(src.len());
        out[..n].copy_from_slice(&src[..n]);
        if self.loop_no > 0 {
            let shift = self.loop_no as u64 * self.span_ns;
            for f in &mut out[..n] {
                f.ts_ns += shift;
            }
        }
        self.pos += n;
        if n == 0 { Rx::End } else { Rx::Frames(n) }
    }

    #[inline]
    fn data(&self, frame: &RxFrame) -> &[u8] {
        self.frames
            .get(frame.handle as usize)
            .map_or(&[], |f| f.data)
    }

    fn tx_batch(&mut self, frames: &[RxFrame]) {
        self.tx_count += frames.len() as u64;
        if let Some(v) = &mut self.verdicts {
            v.extend(frames.iter().map(|f| (f.handle as u32, true)));
        }
    }

    fn drop_batch(&mut self, frames: &[RxFrame]) {
        self.drop_count += frames.len() as u64;
        if let Some(v) = &mut self.verdicts {
            v.extend(frames.iter().map(|f| (f.handle as u32, false)));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::packet::tcp_flags::*;
    use crate::packet::testpkt::{tcp4_flags, udp4};
    use crate::program::{Decision, EndpointId, Hit, TraceId, Verdicts};
    use pcap::capture::{FrameRef, Frames};

    /// Test policy: the endpoint at `10.0.0.2` has an ingress program that allows
    /// destination ports in `allow` (enforced) and in `pending_allow` (pending view).
    /// Every other destination is not local (no verdict: allowed).
    #[derive(Debug, Clone)]
    pub(crate) struct PortPolicy {
        pub allow: Vec<u16>,
        pub pending_allow: Vec<u16>,
    }

    pub(crate) const SERVER: [u8; 4] = [10, 0, 0, 2];
    pub(crate) const CLIENT: [u8; 4] = [10, 0, 0, 1];

    impl Classify for PortPolicy {
        fn classify(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
            for (k, o) in keys.iter().zip(out.iter_mut()) {
                let local = k.dst == u128::from(u32::from_be_bytes(SERVER));
                let d = |allow: bool| Decision {
                    verdict: if allow { Verdict::Allow } else { Verdict::Deny },
                    trace: TraceId(u32::from(allow)),
                };
                *o = FlowVerdicts {
                    egress: None,
                    ingress: local.then(|| {
                        (
                            EndpointId(2),
                            Verdicts {
                                enforced: d(self.allow.contains(&k.dport)),
                                pending: d(self.pending_allow.contains(&k.dport)),
                            },
                        )
                    }),
                };
            }
        }
        fn trace(&self, _id: TraceId) -> &[Hit] {
            &[]
        }
    }

    pub(crate) fn slot(
        allow: &[u16],
        pending: &[u16],
        generation: u32,
    ) -> Arc<ClassifierSlot<PortPolicy>> {
        Arc::new(ClassifierSlot::new(Published {
            generation,
            classifier: PortPolicy {
                allow: allow.to_vec(),
                pending_allow: pending.to_vec(),
            },
        }))
    }

    fn frames(list: &[Vec<u8>]) -> Arc<Frames> {
        let mut f = Frames::new();
        for (i, d) in list.iter().enumerate() {
            f.push(FrameRef {
                ts_ns: 1_000_000_000 + i as u64 * 1_000_000,
                orig_len: d.len() as u32,
                data: d,
            });
        }
        Arc::new(f)
    }

    fn handshake(sport: u16, dport: u16) -> Vec<Vec<u8>> {
        vec![
            tcp4_flags(CLIENT, SERVER, sport, dport, SYN, b""),
            tcp4_flags(SERVER, CLIENT, dport, sport, SYN | ACK, b""),
            tcp4_flags(CLIENT, SERVER, sport, dport, ACK, b""),
            tcp4_flags(CLIENT, SERVER, sport, dport, ACK, b"GET /"),
            tcp4_flags(SERVER, CLIENT, dport, sport, ACK, b"200 OK"),
            tcp4_flags(CLIENT, SERVER, sport, dport, FIN | ACK, b""),
            tcp4_flags(SERVER, CLIENT, dport, sport, FIN | ACK, b""),
        ]
    }

    fn run(
        slot: Arc<ClassifierSlot<PortPolicy>>,
        cfg: WorkerConfig,
        port: &mut MemPort,
    ) -> (WorkerReport, Vec<FlowRecord>) {
        let (tx, rx) = crossbeam::channel::bounded(10_000);
        let w = Worker::new(cfg, slot, RecordOut::channel(tx));
        let rep = w.run(port, &|| true);
        (rep, rx.try_iter().collect())
    }

    fn verdicts(port: &MemPort) -> Vec<bool> {
        let mut v = port.verdicts.clone().expect("recording");
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect()
    }

    #[test]
    fn allowed_connection_and_its_replies_pass() {
        for batch in [1, 3, 64] {
            let mut port = MemPort::all(frames(&handshake(40000, 80))).recording();
            let cfg = WorkerConfig {
                batch,
                ..Default::default()
            };
            let (rep, recs) = run(slot(&[80], &[80], 1), cfg, &mut port);
            assert_eq!(verdicts(&port), vec![true; 7], "batch {batch}");
            let s = rep.stats;
            assert_eq!(s.classified, 1, "one classification per connection");
            assert_eq!(s.replies.packets, 3);
            assert_eq!(s.outcome(Verdict::Allow, Verdict::Allow).packets, 7);
            assert_eq!(s.forwarded.packets, 7);
            assert_eq!(recs.len(), 1);
            let r = recs[0];
            assert_eq!((r.packets_fwd, r.packets_rev), (4, 3));
            assert_eq!(r.key.dport, 80);
            assert_eq!(r.state, crate::flow::ConnState::FinsSeen);
            assert_eq!(r.end, Some(EndReason::Drained));
            assert!(r.started);
        }
    }

    #[test]
    fn denied_flow_drops_and_responder_is_not_a_reply() {
        let list = vec![
            tcp4_flags(CLIENT, SERVER, 40001, 22, SYN, b""),
            // The server answers anyway: not a reply of an allowed connection.
            tcp4_flags(SERVER, CLIENT, 22, 40001, SYN | ACK, b""),
            tcp4_flags(CLIENT, SERVER, 40001, 22, SYN, b""),
        ];
        let mut port = MemPort::all(frames(&list)).recording();
        let (rep, _) = run(slot(&[80], &[], 1), WorkerConfig::default(), &mut port);
        // The client's packets are denied by the server's ingress policy; the server's
        // packet is a new connection to a non-local address (no policy): allowed, and
        // from then on the entry is the server's connection, so the client's retry is
        // its reply.
        assert_eq!(verdicts(&port), vec![false, true, true]);
        assert_eq!(rep.stats.reverse_attempts, 1);
        assert_eq!(rep.stats.outcome(Verdict::Deny, Verdict::Deny).packets, 1);
    }

    #[test]
    fn joined_responder_packets_stay_with_the_denied_connection() {
        for batch in [1, 2, 64] {
            let mut port = MemPort::all(frames(&handshake(40003, 6379))).recording();
            let cfg = WorkerConfig {
                batch,
                denied_responder: DeniedResponder::JoinConnection,
                ..Default::default()
            };
            let (rep, recs) = run(slot(&[], &[6379], 1), cfg, &mut port);
            // Every packet of the connection, both directions, is denied now and
            // allowed in the pending view; nothing is reclassified or passed as a reply.
            assert_eq!(verdicts(&port), vec![false; 7], "batch {batch}");
            let s = rep.stats;
            assert_eq!(s.reverse_attempts, 0);
            assert_eq!(s.replies.packets, 0);
            assert_eq!(s.classified, 1);
            assert_eq!(s.outcome(Verdict::Deny, Verdict::Allow).packets, 7);
            assert_eq!(recs.len(), 1);
            assert_eq!((recs[0].packets_fwd, recs[0].packets_rev), (4, 3));
            assert_eq!(recs[0].applied, Verdict::Deny);
        }
    }

    #[test]
    fn pending_outcome_is_tracked_next_to_enforced() {
        let mut port = MemPort::all(frames(&handshake(40002, 6379))).recording();
        let (rep, recs) = run(slot(&[], &[6379], 1), WorkerConfig::default(), &mut port);
        // Enforced: deny (SYN dropped, SYN-ACK is a reverse attempt to a non-local
        // address and is allowed, so the rest flows as the server's connection).
        let s = rep.stats;
        assert_eq!(s.outcome(Verdict::Deny, Verdict::Allow).packets, 1);
        assert!(
            recs.iter()
                .any(|r| r.key.dport == 6379 && r.applied == Verdict::Deny)
        );
    }

    #[test]
    fn same_new_flow_twice_in_a_batch_is_classified_once() {
        let list = vec![
            udp4(CLIENT, SERVER, 5000, 53, b"q1"),
            udp4(CLIENT, SERVER, 5000, 53, b"q2"),
            udp4(SERVER, CLIENT, 53, 5000, b"a1"),
        ];
        let mut port = MemPort::all(frames(&list)).recording();
        let (rep, recs) = run(slot(&[53], &[53], 1), WorkerConfig::default(), &mut port);
        assert_eq!(verdicts(&port), vec![true; 3]);
        assert_eq!(rep.stats.classified, 1);
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].packets_fwd, recs[0].packets_rev), (2, 1));
    }

    /// A port that publishes a new classifier after `at` frames were delivered.
    struct SwapPort<F: FnMut()> {
        inner: MemPort,
        delivered: usize,
        at: usize,
        swap: Option<F>,
    }

    impl<F: FnMut()> Port for SwapPort<F> {
        fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx {
            if self.delivered >= self.at
                && let Some(mut f) = self.swap.take()
            {
                f();
            }
            let r = self.inner.rx_batch(out);
            if let Rx::Frames(n) = r {
                self.delivered += n;
            }
            r
        }
        fn data(&self, f: &RxFrame) -> &[u8] {
            self.inner.data(f)
        }
        fn tx_batch(&mut self, f: &[RxFrame]) {
            self.inner.tx_batch(f)
        }
        fn drop_batch(&mut self, f: &[RxFrame]) {
            self.inner.drop_batch(f)
        }
    }

    fn swap_run(
        reevaluate_enforced: bool,
    ) -> (
        Vec<bool>,
        WorkerReport,
        Vec<FlowRecord>,
        Arc<ClassifierSlot<PortPolicy>>,
    ) {
        let mut list = handshake(40003, 80);
        list.push(tcp4_flags(CLIENT, SERVER, 40004, 80, SYN, b""));
        let s = slot(&[80], &[80], 1);
        let s2 = Arc::clone(&s);
        let mut port = SwapPort {
            inner: MemPort::all(frames(&list)).recording(),
            delivered: 0,
            at: 3,
            swap: Some(move || {
                s2.publish(Published {
                    generation: 2,
                    classifier: PortPolicy {
                        allow: vec![],
                        pending_allow: vec![],
                    },
                })
            }),
        };
        let cfg = WorkerConfig {
            batch: 1,
            reevaluate_enforced,
            ..Default::default()
        };
        let (tx, rx) = crossbeam::channel::bounded(100);
        let rep = Worker::new(cfg, Arc::clone(&s), RecordOut::channel(tx)).run(&mut port, &|| true);
        (verdicts(&port.inner), rep, rx.try_iter().collect(), s)
    }

    #[test]
    fn policy_change_keeps_existing_connections_and_reevaluates_pending() {
        let (v, rep, recs, s) = swap_run(false);
        // Handshake done under generation 1; the rest of the connection survives
        // the deny-all generation 2; a new connection does not.
        assert_eq!(v, vec![true, true, true, true, true, true, true, false]);
        assert_eq!(rep.stats.generation_swaps, 1);
        assert_eq!(rep.stats.reevaluated, 1);
        let kept = recs.iter().find(|r| r.key.sport == 40003).expect("record");
        assert_eq!(kept.applied, Verdict::Allow);
        assert_eq!(kept.applied_generation, 1);
        assert_eq!(kept.generation, 2);
        assert_eq!(
            kept.verdicts.pending(),
            Verdict::Deny,
            "pending re-evaluated"
        );
        // Packets after the swap count as (allow, deny).
        assert_eq!(rep.stats.outcome(Verdict::Allow, Verdict::Deny).packets, 4);
        // The worker moved on and no longer holds generation 1: reclaim frees it.
        assert_eq!(s.reclaim(), 0);
    }

    #[test]
    fn policy_change_with_reevaluation_cuts_existing_connections() {
        let (v, rep, _, _) = swap_run(true);
        // The client's data is cut by the deny-all generation. The server's next
        // packet is then no reply (nothing is allowed) but a connection of its own to
        // the client, which has no policy: allowed, and the client's FIN rides on it.
        assert_eq!(v, vec![true, true, true, false, true, true, true, false]);
        assert_eq!(rep.stats.reverse_attempts, 1);
        assert_eq!(rep.stats.reevaluated, 1);
    }

    #[test]
    fn icmp_error_related_to_an_allowed_flow_passes() {
        let q = udp4(CLIENT, SERVER, 5353, 9999, b"x");
        let mut err = Vec::new();
        etherparse::PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4([10, 0, 0, 2], CLIENT, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut err, &q[14..14 + 28])
            .expect("write");
        let list = vec![q.clone(), err.clone()];
        let mut port = MemPort::all(frames(&list)).recording();
        let (rep, _) = run(
            slot(&[9999], &[9999], 1),
            WorkerConfig::default(),
            &mut port,
        );
        assert_eq!(verdicts(&port), vec![true, true]);
        assert_eq!(rep.stats.related.packets, 1);
        assert_eq!(rep.stats.classified, 1);
        // Without the flow, the error is just a packet to a non-local address.
        let mut port = MemPort::all(frames(&[err])).recording();
        let (rep, _) = run(slot(&[], &[], 1), WorkerConfig::default(), &mut port);
        assert_eq!(rep.stats.related.packets, 0);
        assert_eq!(rep.stats.classified, 1);
    }

    #[test]
    fn unparsed_frames_follow_the_policy() {
        let mut arp = udp4(CLIENT, SERVER, 1, 2, b"");
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let list = vec![arp.clone(), arp[..10].to_vec()];
        let mut port = MemPort::all(frames(&list)).recording();
        let (rep, _) = run(slot(&[], &[], 1), WorkerConfig::default(), &mut port);
        assert_eq!(verdicts(&port), vec![false, false]);
        assert_eq!((rep.stats.parse.non_ip, rep.stats.parse.truncated), (1, 1));
        let cfg = WorkerConfig {
            unparsed: UnparsedPolicy {
                non_ip: Disposition::Pass,
                invalid: Disposition::Drop,
            },
            ..Default::default()
        };
        let mut port = MemPort::all(frames(&list)).recording();
        let (rep, _) = run(slot(&[], &[], 1), cfg, &mut port);
        assert_eq!(verdicts(&port), vec![true, false]);
        assert_eq!(rep.stats.unparsed_passed, 1);
    }

    /// A flood of unique flows far larger than the table: the table never grows,
    /// every flow beyond capacity evicts one (counted), nothing panics.
    #[test]
    fn flood_of_unique_flows_keeps_memory_flat() {
        let cap = 256;
        let n = 20_000u32;
        let mut list = Vec::new();
        for i in 0..n {
            let src = [10, 1, (i >> 8) as u8, i as u8];
            list.push(udp4(src, SERVER, 1024 + (i % 50_000) as u16, 53, b""));
        }
        let f = frames(&list);
        let cfg = WorkerConfig {
            flow: FlowTableConfig {
                capacity: cap,
                ..Default::default()
            },
            export_interval_ns: None,
            ..Default::default()
        };
        let (tx, rx) = crossbeam::channel::bounded(16);
        let mut w = Worker::new(cfg, slot(&[53], &[53], 1), RecordOut::channel(tx));
        let mem0 = w.flow_table().memory_bytes();
        let mut port = MemPort::all(f);
        let mut batches = 0;
        while let Rx::Frames(_) = w.poll(&mut port) {
            batches += 1;
            assert!(w.flow_table().len() <= cap);
            assert_eq!(w.flow_table().memory_bytes(), mem0);
            let _ = rx.try_iter().count();
        }
        assert!(batches > 0);
        let s = w.stats();
        assert_eq!(s.rx.packets, u64::from(n));
        assert_eq!(s.forwarded.packets, u64::from(n));
        assert_eq!(s.flows.inserts, u64::from(n));
        assert_eq!(
            s.flows.evictions + s.flows.expired,
            u64::from(n) - cap as u64
        );
        assert_eq!(w.flow_table().len(), cap);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// A fast-parsed packet keeps only its canonical key and direction; the flow
        /// key rebuilt from them equals the one the parser produced.
        #[test]
        fn fast_path_key_is_the_parsed_key(
            src in proptest::prelude::any::<[u8; 4]>(),
            dst in proptest::prelude::any::<[u8; 4]>(),
            sport in proptest::prelude::any::<u16>(),
            dport in proptest::prelude::any::<u16>(),
            tcp in proptest::prelude::any::<bool>(),
            ifindex in proptest::prelude::any::<u16>(),
        ) {
            let frame = if tcp {
                tcp4_flags(src, dst, sport, dport, SYN, b"")
            } else {
                // A minimum-size frame: shorter ones are left to the full parser.
                udp4(src, dst, sport, dport, &[0; 18])
            };
            let wire = frame.len() as u32;
            let p = parse_common(&frame, wire, ifindex).expect("plain TCP/UDP takes the fast path");
            let (ck, dir) = ConnKey::canonical(&p.conn());
            let m = PktMeta {
                ck,
                dir_b: dir == Dir::BtoA,
                parsed: Parsed::Fast,
                ..PktMeta::EMPTY
            };
            let f = RxFrame { ifindex, ..RxFrame::default() };
            proptest::prop_assert_eq!(packet_key(&m, &f, &[], 0), Some(p.key));
        }
    }

    fn arb_packet() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let hosts = [CLIENT, SERVER, [10, 0, 0, 3]];
        (
            0usize..3,
            0usize..3,
            0usize..3,
            0usize..3,
            0u8..7,
            any::<bool>(),
        )
            .prop_map(move |(s, d, sp, dp, fl, udp)| {
                let ports = [80u16, 6379, 40000];
                let flags = [SYN, SYN | ACK, ACK, FIN | ACK, RST, ACK, ACK][usize::from(fl)];
                if udp {
                    udp4(hosts[s], hosts[d], ports[sp], ports[dp], b"u")
                } else {
                    tcp4_flags(hosts[s], hosts[d], ports[sp], ports[dp], flags, b"")
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Batching is invisible: per-packet verdicts and outcome counters are the same
        /// whether packets are processed one by one (the obviously-sequential twin) or
        /// in batches where several packets of a flow wait for one classification.
        #[test]
        fn batching_is_invisible(
            pkts in proptest::collection::vec(arb_packet(), 1..120),
            batch in 2usize..70,
            cap in proptest::sample::select(vec![4usize, 1024]),
        ) {
            let f = frames(&pkts);
            let cfg = |batch| WorkerConfig {
                batch,
                flow: FlowTableConfig { capacity: cap, ..Default::default() },
                ..Default::default()
            };
            let mut one = MemPort::all(Arc::clone(&f)).recording();
            let (r1, rec1) = run(slot(&[80], &[80, 6379], 1), cfg(1), &mut one);
            let mut many = MemPort::all(f).recording();
            let (rn, recn) = run(slot(&[80], &[80, 6379], 1), cfg(batch), &mut many);
            let pressure = |s: &WorkerStats| s.flows.evictions + s.flows.insert_failures > 0;
            if !pressure(&r1.stats) && !pressure(&rn.stats) {
                proptest::prop_assert_eq!(verdicts(&one), verdicts(&many));
                proptest::prop_assert_eq!(r1.stats.outcome, rn.stats.outcome);
                proptest::prop_assert_eq!(r1.stats.replies, rn.stats.replies);
                // The same records; emission order within a batch may differ.
                let sorted = |v: &[FlowRecord]| {
                    let mut d: Vec<String> = v.iter().map(|r| format!("{r:?}")).collect();
                    d.sort();
                    d
                };
                proptest::prop_assert_eq!(sorted(&rec1), sorted(&recn));
            } else {
                // Under eviction pressure the victims depend on batch composition
                // (entries awaiting their verdict are never evicted), so only the
                // accounting must hold.
                for r in [&r1, &rn] {
                    let total: u64 = r.stats.outcome.iter().flatten().map(|c| c.packets).sum();
                    proptest::prop_assert_eq!(total, r.stats.parse.parsed);
                    proptest::prop_assert_eq!(r.stats.rx.packets, pkts.len() as u64);
                }
            }
        }
    }
}
