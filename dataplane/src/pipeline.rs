//! Running workers: N pinned [`Worker`]s, a replay dispatcher, record collection and
//! the [`RunReport`].
//!
//! This module owns the threads. [`Pipeline::run`] replays a capture: one dispatcher
//! thread reads frames (streaming from a file, or from memory), computes each frame's
//! **symmetric** flow hash (the canonical connection key's, so both directions of a
//! connection — and ICMP errors about it, and later fragments of its datagrams — reach
//! the same worker) and hands each worker its share. [`Pipeline::run_ports`] runs one
//! worker per caller-supplied [`Port`] (in-memory ports for benchmarks, AF_XDP queues)
//! without a dispatcher, the way NIC RSS queues feed cores.
//!
//! The dispatcher hands out *chunks*: a shared, immutable block of frames plus, per
//! worker, the list of frame indices it owns, over a bounded crossbeam channel per
//! worker (each worker reads its channel through the chunk port of
//! [`crate::port`], which also holds the pacer of recorded-speed replay). One channel operation per chunk (thousands of frames) instead of per frame
//! keeps synchronisation off the per-packet budget, and the bounded depth gives
//! back-pressure so a fast reader never buffers a whole capture. Within a worker,
//! frames keep capture order.
//!
//! Flow records leave the workers through one bounded channel and are collected on
//! the calling thread while the workers run (workers never block on it; a full
//! channel drops and counts).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, bounded};
use pcap::capture::{CaptureCut, CaptureError, CaptureReader, Frames};

use crate::arch::huge::AllocError;

use crate::flow::{ConnKey, FlowRecord, KeyHasher};
use crate::packet::{FragmentTracker, parse};
use crate::port::Port;
use crate::port::chunk::{ChunkPort, Pacer, Work};
use crate::program::Classify;
use crate::worker::{ClassifierSlot, RecordOut, Worker, WorkerConfig, WorkerReport, WorkerStats};

/// How fast a capture is replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pace {
    /// As fast as the workers go.
    #[default]
    Max,
    /// At the capture's recorded inter-packet timing.
    Recorded,
}

/// What is replayed.
#[derive(Clone, Debug)]
pub enum ReplaySource {
    /// A pcap/pcapng file, streamed.
    File(PathBuf),
    /// Frames already in memory.
    Frames(Arc<Frames>),
}

/// Configuration of a run.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Number of workers (≥ 1).
    pub workers: usize,
    /// Pin worker `k` to core `k mod cores` (core_affinity).
    pub pin: bool,
    /// Per-worker configuration.
    pub worker: WorkerConfig,
    /// Capacity of the flow-record channel.
    pub record_capacity: usize,
    /// Frames per dispatcher chunk.
    pub chunk_frames: usize,
    /// Chunks queued per worker before the dispatcher waits.
    pub chunk_depth: usize,
    /// Replay pace.
    pub pace: Pace,
    /// At [`Pace::Recorded`], the longest wait between two frames (ns): a longer gap
    /// in capture time (a capture restarted, a clock jump of years) is shortened to
    /// this and counted in [`RunReport::gaps_capped`].
    pub max_gap_ns: u64,
    /// Record each frame's forward/drop decision (1 byte per frame).
    pub frame_verdicts: bool,
    /// Frames dispatched so far (for progress display), if given.
    pub progress: Option<Arc<AtomicU64>>,
}

/// Default [`PipelineConfig::max_gap_ns`]: 10 s.
pub const DEFAULT_MAX_GAP_NS: u64 = 10_000_000_000;

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 1,
            pin: true,
            worker: WorkerConfig::default(),
            record_capacity: 1 << 16,
            chunk_frames: 4096,
            chunk_depth: 4,
            pace: Pace::Max,
            max_gap_ns: DEFAULT_MAX_GAP_NS,
            frame_verdicts: false,
            progress: None,
        }
    }
}

/// A frame's fate in a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameVerdict {
    /// Not reached (the run was stopped).
    Unseen = 0,
    /// Forwarded.
    Forwarded = 1,
    /// Dropped.
    Dropped = 2,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The capture could not be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A worker or the dispatcher thread panicked (a bug; reported, not hidden).
    #[error("{0} thread panicked")]
    Panicked(&'static str),
    /// A worker's flow table could not be allocated.
    #[error("flow table: {0}")]
    FlowTable(#[from] AllocError),
    /// A thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// One report per worker.
    pub workers: Vec<WorkerReport>,
    /// Sum of all workers' counters.
    pub totals: WorkerStats,
    /// Every flow record the workers emitted (interval and final records), when the
    /// run collected them (`run`, `run_ports`; empty for the `*_with` variants).
    pub records: Vec<FlowRecord>,
    /// Wall time from the first worker start to the last worker's end.
    pub elapsed: Duration,
    /// Per frame, in capture order, when requested.
    pub frame_verdicts: Option<Vec<FrameVerdict>>,
    /// Where the capture file ended in the middle of a frame (the frames before it
    /// were replayed).
    pub capture_cut: Option<CaptureCut>,
    /// Gaps in capture time longer than [`PipelineConfig::max_gap_ns`] that a
    /// recorded-pace replay shortened.
    pub gaps_capped: u64,
}

impl RunReport {
    /// Frames received per second over the run, in millions.
    pub fn mpps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.totals.rx.packets as f64 / s / 1e6
        } else {
            0.0
        }
    }
}

/// The worker a canonical key belongs to, among `n`.
#[inline]
pub fn worker_of(hasher: &KeyHasher, k: &ConnKey, n: usize) -> usize {
    ((u128::from(hasher.hash(k)) * n as u128) >> 64) as usize
}

/// The dispatcher's hash seed, derived from the flow-table seed but different from
/// it, so a worker's share of keys is not skewed within its own table's buckets.
fn dispatch_seed(flow_seed: u64) -> u64 {
    flow_seed ^ 0x6469_7370_6174_6368
}

/// Runs workers over ports and replays.
#[derive(Debug)]
pub struct Pipeline;

/// Routes frames to workers by symmetric flow hash.
struct Router {
    hasher: KeyHasher,
    frags: FragmentTracker,
    n: usize,
    unparsed: usize,
}

impl Router {
    fn route(&mut self, data: &[u8], wire_len: u32, ts_ns: u64) -> usize {
        if self.n == 1 {
            return 0;
        }
        match parse(data, wire_len, 0) {
            Ok(mut p) => {
                self.frags.resolve(&mut p, ts_ns);
                // ICMP errors go where the connection they quote lives.
                let tuple = p.related().unwrap_or_else(|| p.conn());
                let (k, _) = ConnKey::canonical(&tuple);
                worker_of(&self.hasher, &k, self.n)
            }
            Err(_) => {
                // Unparsed frames carry no flow: spread them round robin.
                self.unparsed = (self.unparsed + 1) % self.n;
                self.unparsed
            }
        }
    }
}

fn spawn_workers<C, P>(
    ports: Vec<P>,
    slot: &Arc<ClassifierSlot<C>>,
    cfg: &PipelineConfig,
    records: &Sender<FlowRecord>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<WorkerHandle>, PipelineError>
where
    C: Classify + 'static,
    P: Port + Send + 'static,
{
    let cores = if cfg.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    ports
        .into_iter()
        .enumerate()
        .map(|(k, mut port)| {
            let slot = Arc::clone(slot);
            let tx = records.clone();
            let wcfg = cfg.worker;
            let core = (!cores.is_empty()).then(|| cores[k % cores.len()]);
            let stop = Arc::clone(stop);
            std::thread::Builder::new()
                .name(format!("tiergate-worker-{k}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let w = Worker::try_new(wcfg, slot, RecordOut::channel(tx))?;
                    Ok(w.run(&mut port, &|| !stop.load(Ordering::Relaxed)))
                })
                .map_err(|source| PipelineError::Spawn {
                    what: "worker",
                    source,
                })
        })
        .collect()
}

/// A worker thread: its report, or the error of allocating its flow table.
type WorkerHandle = std::thread::JoinHandle<Result<WorkerReport, AllocError>>;

fn collect(
    handles: Vec<WorkerHandle>,
    rx: Receiver<FlowRecord>,
    started: Instant,
    on_record: &mut dyn FnMut(FlowRecord),
) -> Result<(Vec<WorkerReport>, Duration), PipelineError> {
    // Drains until every worker dropped its sender (they do when they end).
    for r in rx.iter() {
        on_record(r);
    }
    let mut reports = Vec::with_capacity(handles.len());
    for h in handles {
        reports.push(h.join().map_err(|_| PipelineError::Panicked("worker"))??);
    }
    Ok((reports, started.elapsed()))
}

fn totals(reports: &[WorkerReport]) -> WorkerStats {
    let mut t = WorkerStats::default();
    for r in reports {
        t.merge(&r.stats);
    }
    t
}

impl Pipeline {
    /// Runs one worker per port until every port ends (or `stop` is set). No
    /// dispatcher: each port is one worker's queue. Flow records are collected into
    /// [`RunReport::records`].
    pub fn run_ports<C, P>(
        ports: Vec<P>,
        slot: Arc<ClassifierSlot<C>>,
        cfg: &PipelineConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<RunReport, PipelineError>
    where
        C: Classify + 'static,
        P: Port + Send + 'static,
    {
        let mut records = Vec::new();
        let mut r = Self::run_ports_with(ports, slot, cfg, stop, &mut |x| records.push(x))?;
        r.records = records;
        Ok(r)
    }

    /// [`Pipeline::run_ports`], handing each flow record to `on_record` on the
    /// calling thread as it arrives (for bounded-memory aggregation, e.g. flow logs);
    /// [`RunReport::records`] stays empty.
    pub fn run_ports_with<C, P>(
        ports: Vec<P>,
        slot: Arc<ClassifierSlot<C>>,
        cfg: &PipelineConfig,
        stop: Arc<AtomicBool>,
        on_record: &mut dyn FnMut(FlowRecord),
    ) -> Result<RunReport, PipelineError>
    where
        C: Classify + 'static,
        P: Port + Send + 'static,
    {
        let (tx, rx) = bounded(cfg.record_capacity.max(1));
        let started = Instant::now();
        let handles = spawn_workers(ports, &slot, cfg, &tx, &stop)?;
        drop(tx);
        let (workers, elapsed) = collect(handles, rx, started, on_record)?;
        slot.reclaim();
        Ok(RunReport {
            totals: totals(&workers),
            workers,
            records: Vec::new(),
            elapsed,
            frame_verdicts: None,
            capture_cut: None,
            gaps_capped: 0,
        })
    }

    /// Replays a capture through `cfg.workers` workers (see the module docs); flow
    /// records are collected into [`RunReport::records`].
    pub fn run<C>(
        source: ReplaySource,
        slot: Arc<ClassifierSlot<C>>,
        cfg: &PipelineConfig,
    ) -> Result<RunReport, PipelineError>
    where
        C: Classify + 'static,
    {
        let mut records = Vec::new();
        let mut r = Self::run_with(source, slot, cfg, &mut |x| records.push(x))?;
        r.records = records;
        Ok(r)
    }

    /// [`Pipeline::run`], handing each flow record to `on_record` on the calling
    /// thread while the replay runs (bounded memory for long captures and floods);
    /// [`RunReport::records`] stays empty.
    pub fn run_with<C>(
        source: ReplaySource,
        slot: Arc<ClassifierSlot<C>>,
        cfg: &PipelineConfig,
        on_record: &mut dyn FnMut(FlowRecord),
    ) -> Result<RunReport, PipelineError>
    where
        C: Classify + 'static,
    {
        let n = cfg.workers.max(1);
        // Open the file before starting threads so a bad path is a clean error.
        let reader = match &source {
            ReplaySource::File(p) => Some(CaptureReader::open(p)?),
            ReplaySource::Frames(_) => None,
        };
        let mut senders = Vec::with_capacity(n);
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = bounded::<Work>(cfg.chunk_depth.max(1));
            senders.push(tx);
            ports.push(ChunkPort::new(rx));
        }
        let (rtx, rrx) = bounded(cfg.record_capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let handles = spawn_workers(ports, &slot, cfg, &rtx, &stop)?;
        drop(rtx);

        let dcfg = cfg.clone();
        let dispatcher = std::thread::Builder::new()
            .name("tiergate-dispatch".into())
            .spawn(move || dispatch(source, reader, senders, &dcfg))
            .map_err(|source| PipelineError::Spawn {
                what: "dispatcher",
                source,
            })?;

        let (workers, elapsed) = collect(handles, rrx, started, on_record)?;
        let Dispatched {
            verdict_chunks,
            capture_cut,
            gaps_capped,
        } = dispatcher
            .join()
            .map_err(|_| PipelineError::Panicked("dispatcher"))??;
        slot.reclaim();
        let frame_verdicts = cfg.frame_verdicts.then(|| {
            verdict_chunks
                .iter()
                .flat_map(|c| c.iter())
                .map(|v| match v.load(Ordering::Relaxed) {
                    1 => FrameVerdict::Forwarded,
                    2 => FrameVerdict::Dropped,
                    _ => FrameVerdict::Unseen,
                })
                .collect()
        });
        Ok(RunReport {
            totals: totals(&workers),
            workers,
            records: Vec::new(),
            elapsed,
            frame_verdicts,
            capture_cut,
            gaps_capped,
        })
    }
}

/// What the dispatcher hands back.
struct Dispatched {
    /// Per-chunk verdict arrays in capture order (empty unless frame verdicts were
    /// requested).
    verdict_chunks: Vec<Arc<Vec<AtomicU8>>>,
    /// Where the capture file was cut short, if it was.
    capture_cut: Option<CaptureCut>,
    /// Gaps the pacer shortened.
    gaps_capped: u64,
}

/// The dispatcher thread: reads, routes, hands out chunks.
fn dispatch(
    source: ReplaySource,
    reader: Option<CaptureReader>,
    senders: Vec<Sender<Work>>,
    cfg: &PipelineConfig,
) -> Result<Dispatched, PipelineError> {
    let n = senders.len();
    let mut router = Router {
        hasher: KeyHasher::new(dispatch_seed(cfg.worker.flow.seed)),
        frags: FragmentTracker::new(cfg.worker.fragment_slots, cfg.worker.flow.seed),
        n,
        unparsed: 0,
    };
    let chunk = cfg.chunk_frames.max(1);
    let mut pacer = Pacer::new(cfg.pace, cfg.max_gap_ns);
    let mut capture_cut = None;
    let mut verdict_chunks = Vec::new();
    let new_verdicts = |len: usize| {
        cfg.frame_verdicts
            .then(|| Arc::new((0..len).map(|_| AtomicU8::new(0)).collect::<Vec<_>>()))
    };
    let send =
        |frames: &Arc<Frames>, lists: &mut Vec<Vec<u32>>, verdicts: &Option<Arc<Vec<AtomicU8>>>| {
            for (w, list) in lists.iter_mut().enumerate() {
                if !list.is_empty() {
                    let work = Work {
                        frames: Arc::clone(frames),
                        idx: std::mem::take(list),
                        verdicts: verdicts.clone(),
                    };
                    // A worker that is gone has panicked; the join reports it.
                    let _ = senders[w].send(work);
                }
            }
        };
    let progress = |k: usize| {
        if let Some(p) = &cfg.progress {
            p.fetch_add(k as u64, Ordering::Relaxed);
        }
    };
    match (source, reader) {
        (_, Some(mut reader)) => loop {
            let mut frames = Frames::new();
            let mut lists = vec![Vec::new(); n];
            while frames.len() < chunk {
                match reader.next_frame() {
                    None => break,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(f)) => {
                        let w = router.route(f.data, f.orig_len, f.ts_ns);
                        lists[w].push(frames.len() as u32);
                        let ts = f.ts_ns;
                        frames.push(f);
                        if pacer.due(ts) {
                            break;
                        }
                    }
                }
            }
            capture_cut = reader.cut();
            if frames.is_empty() {
                break;
            }
            let len = frames.len();
            let frames = Arc::new(frames);
            let verdicts = new_verdicts(len);
            send(&frames, &mut lists, &verdicts);
            progress(len);
            if let Some(v) = verdicts {
                verdict_chunks.push(v);
            }
            pacer.wait();
        },
        (ReplaySource::Frames(frames), None) => {
            let verdicts = new_verdicts(frames.len());
            let mut lists = vec![Vec::new(); n];
            let mut pending = 0;
            for (i, f) in frames.iter().enumerate() {
                let w = router.route(f.data, f.orig_len, f.ts_ns);
                lists[w].push(i as u32);
                pending += 1;
                if pending == chunk || pacer.due(f.ts_ns) {
                    send(&frames, &mut lists, &verdicts);
                    progress(pending);
                    pending = 0;
                    pacer.wait();
                }
            }
            send(&frames, &mut lists, &verdicts);
            progress(pending);
            if let Some(v) = verdicts {
                verdict_chunks.push(v);
            }
        }
        (ReplaySource::File(_), None) => {}
    }
    Ok(Dispatched {
        verdict_chunks,
        capture_cut,
        gaps_capped: pacer.gaps_capped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags::*;
    use crate::packet::testpkt::{tcp4_flags, udp4};
    use crate::program::Verdict;
    use crate::worker::MemPort;
    use crate::worker::tests::{CLIENT, SERVER, slot};
    use pcap::capture::FrameRef;

    fn traffic(flows: u16) -> Arc<Frames> {
        let mut f = Frames::new();
        let mut t = 1_000_000_000u64;
        let mut push = |d: Vec<u8>| {
            t += 1000;
            f.push(FrameRef {
                ts_ns: t,
                orig_len: d.len() as u32,
                data: &d,
            });
        };
        for i in 0..flows {
            let sport = 10_000 + i;
            let dport = if i % 3 == 0 { 22 } else { 80 };
            push(tcp4_flags(CLIENT, SERVER, sport, dport, SYN, b""));
            push(tcp4_flags(SERVER, CLIENT, dport, sport, SYN | ACK, b""));
            push(tcp4_flags(CLIENT, SERVER, sport, dport, ACK, b"x"));
            push(udp4(CLIENT, SERVER, sport, 53, b"q"));
            push(udp4(SERVER, CLIENT, 53, sport, b"a"));
        }
        Arc::new(f)
    }

    fn cfg(workers: usize) -> PipelineConfig {
        PipelineConfig {
            workers,
            pin: false,
            chunk_frames: 37,
            frame_verdicts: true,
            ..Default::default()
        }
    }

    #[test]
    fn replay_is_the_same_with_one_or_two_workers() {
        let frames = traffic(200);
        let one = Pipeline::run(
            ReplaySource::Frames(Arc::clone(&frames)),
            slot(&[80, 53], &[80], 1),
            &cfg(1),
        )
        .expect("run");
        let two = Pipeline::run(
            ReplaySource::Frames(Arc::clone(&frames)),
            slot(&[80, 53], &[80], 1),
            &cfg(2),
        )
        .expect("run");
        assert_eq!(one.totals.rx.packets, 1000);
        assert_eq!(two.totals.rx.packets, 1000);
        assert_eq!(one.frame_verdicts, two.frame_verdicts);
        assert_eq!(one.totals.outcome, two.totals.outcome);
        assert_eq!(one.totals.replies, two.totals.replies);
        assert_eq!(one.records.len(), two.records.len());
        // Both workers got work, and every connection stayed on one worker
        // (replies counted as replies, one classification per flow).
        assert!(two.workers.iter().all(|w| w.stats.rx.packets > 0));
        assert_eq!(two.totals.classified, one.totals.classified);
        assert_eq!(one.totals.flows.inserts, 400);
        let v = one.frame_verdicts.expect("verdicts");
        assert!(v.iter().all(|v| *v != FrameVerdict::Unseen));
        // Port 22 SYNs are dropped; their SYN-ACKs open the server's own connection.
        assert_eq!(
            v.iter().filter(|v| **v == FrameVerdict::Dropped).count(),
            67
        );
        assert_eq!(one.totals.outcome(Verdict::Deny, Verdict::Deny).packets, 67);
    }

    #[test]
    fn replay_from_a_file_streams_in_chunks() {
        let frames = traffic(50);
        let dir = std::env::temp_dir().join(format!("tiergate-pipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.pcap");
        frames
            .write(&path, pcap::capture::CaptureFormat::Pcap)
            .expect("write");
        let mem = Pipeline::run(
            ReplaySource::Frames(frames),
            slot(&[80, 53], &[80], 1),
            &cfg(2),
        )
        .expect("mem");
        let file = Pipeline::run(
            ReplaySource::File(path.clone()),
            slot(&[80, 53], &[80], 1),
            &cfg(2),
        )
        .expect("file");
        assert_eq!(mem.frame_verdicts, file.frame_verdicts);
        assert_eq!(mem.totals.outcome, file.totals.outcome);
        let missing = Pipeline::run(
            ReplaySource::File(dir.join("missing.pcap")),
            slot(&[], &[], 1),
            &cfg(1),
        );
        assert!(matches!(missing, Err(PipelineError::Capture(_))));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn run_ports_one_worker_per_port() {
        let frames = traffic(10);
        let ports = vec![MemPort::all(Arc::clone(&frames)), MemPort::all(frames)];
        let r = Pipeline::run_ports(
            ports,
            slot(&[80, 53], &[], 1),
            &cfg(2),
            Arc::new(AtomicBool::new(false)),
        )
        .expect("run");
        assert_eq!(r.workers.len(), 2);
        assert_eq!(r.totals.rx.packets, 100);
        assert!(r.mpps() > 0.0);
        // Per worker: a final record per connection (20), plus the 4 denied port-22
        // flows replaced when their server's SYN-ACK opened its own connection.
        assert_eq!(r.records.len(), 2 * (20 + 4));
    }

    /// A flood of unique flows, 100× the table, through the replay path: every packet
    /// is processed, the tables never exceed their configured size, each flow beyond
    /// capacity costs one counted eviction, and records stream out (counted, not kept).
    #[test]
    fn flood_through_the_replay_keeps_tables_bounded() {
        let flows = 25_600u32;
        let mut f = Frames::new();
        for i in 0..flows {
            let src = [10, 9, (i >> 8) as u8, i as u8];
            let d = udp4(src, SERVER, 1024 + (i % 60_000) as u16, 53, b"");
            f.push(FrameRef {
                ts_ns: 1_000_000_000 + u64::from(i),
                orig_len: d.len() as u32,
                data: &d,
            });
        }
        let cfg = PipelineConfig {
            workers: 2,
            pin: false,
            record_capacity: 64,
            worker: WorkerConfig {
                flow: crate::flow::FlowTableConfig {
                    capacity: 128,
                    ..Default::default()
                },
                export_interval_ns: None,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut seen = 0u64;
        let r = Pipeline::run_with(
            ReplaySource::Frames(Arc::new(f)),
            slot(&[53], &[53], 1),
            &cfg,
            &mut |_| seen += 1,
        )
        .expect("run");
        assert_eq!(r.totals.rx.packets, u64::from(flows));
        assert_eq!(r.totals.forwarded.packets, u64::from(flows));
        for w in &r.workers {
            assert_eq!(w.flow_table_capacity, 128);
            assert_eq!(w.flow_table_bytes, 128 * 128 + 16 * 64);
        }
        let s = r.totals.flows;
        // A tiny table under a flood: a few new flows find both candidate buckets full
        // of flows still awaiting their verdict in the same batch; they are classified
        // without an entry (counted), never dropped for lack of room.
        assert_eq!(s.inserts + s.insert_failures, u64::from(flows));
        assert_eq!(r.totals.uncached, s.insert_failures);
        assert_eq!(s.evictions + s.expired, s.inserts - 2 * 128);
        // Every tracked flow ends in exactly one final record: evicted or drained at
        // the end; records the channel could not take are counted, never blocking.
        assert_eq!(seen + r.totals.records_dropped, s.inserts);
        assert_eq!(seen, r.totals.records_sent);
        assert!(r.records.is_empty());
    }

    /// Recorded pace replays no faster than the capture's own timing (a lower bound
    /// only: a loaded machine may be slower, never faster).
    #[test]
    fn recorded_pace_follows_capture_time() {
        let mut f = Frames::new();
        for i in 0..40u64 {
            let d = udp4(CLIENT, SERVER, 5000, 53, b"q");
            f.push(FrameRef {
                ts_ns: 1_000_000_000 + i * 2_000_000, // 2 ms apart: 78 ms in all
                orig_len: d.len() as u32,
                data: &d,
            });
        }
        let cfg = PipelineConfig {
            pace: Pace::Recorded,
            ..cfg(2)
        };
        let t = std::time::Instant::now();
        let r = Pipeline::run(
            ReplaySource::Frames(Arc::new(f)),
            slot(&[53], &[53], 1),
            &cfg,
        )
        .expect("run");
        assert!(
            t.elapsed() >= Duration::from_millis(78),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(r.totals.rx.packets, 40);
    }

    /// A jump of decades in capture time is waited for only up to `max_gap_ns`, and
    /// counted; the other gaps are kept.
    #[test]
    fn recorded_pace_caps_long_gaps() {
        let mut f = Frames::new();
        let jump = 136 * 365 * 86_400 * 1_000_000_000u64;
        for (i, ts) in [
            1_000_000_000,
            1_030_000_000,
            1_030_000_000 + jump,
            1_060_000_000 + jump,
        ]
        .into_iter()
        .enumerate()
        {
            let d = udp4(CLIENT, SERVER, 5000 + i as u16, 53, b"q");
            f.push(FrameRef {
                ts_ns: ts,
                orig_len: d.len() as u32,
                data: &d,
            });
        }
        let cfg = PipelineConfig {
            pace: Pace::Recorded,
            max_gap_ns: 40_000_000,
            ..cfg(1)
        };
        let t = std::time::Instant::now();
        let r = Pipeline::run(
            ReplaySource::Frames(Arc::new(f)),
            slot(&[53], &[53], 1),
            &cfg,
        )
        .expect("run");
        // 30 ms, then 40 ms (capped) before the third frame; the last frame is sent
        // without a wait after it.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(70), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(r.gaps_capped, 1);
        assert_eq!(r.totals.rx.packets, 4);
    }

    /// A flow table that cannot be allocated is an error of the run, not an abort.
    #[test]
    fn an_impossible_flow_table_is_an_error() {
        let mut cfg = cfg(2);
        cfg.worker.flow.capacity = usize::MAX;
        let e = Pipeline::run(
            ReplaySource::Frames(traffic(3)),
            slot(&[53], &[53], 1),
            &cfg,
        )
        .unwrap_err();
        assert!(matches!(e, PipelineError::FlowTable(_)), "{e}");
        assert!(
            e.to_string().starts_with("flow table: cannot allocate"),
            "{e}"
        );
    }
}
