//! `tiergate run --pcap FILE`: a packet source that needs no privilege. The frames of
//! a capture are fed to one worker (the same [`Worker`] loop as the AF_XDP run), once
//! or in a loop (`--loop`), as fast as the worker takes them or at `--pcap-rate`
//! frames per second, stamped with the wall clock. "Forwarding" a frame counts it;
//! for captures of at most [`PER_FRAME_LIMIT`] frames the counts are kept per frame
//! (sent and forwarded), which `stats` reports: a test can count what each flow sent
//! and what got through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use dataplane::flow::FlowRecord;
use dataplane::program::Classify;
use dataplane::worker::{
    ClassifierSlot, Port, RecordOut, Rx, RxFrame, Worker, WorkerConfig, WorkerReport,
};
use pcap::capture::Frames;
use serde_json::{Value, json};

use super::now_ns;

/// Captures up to this many frames get per-frame counters.
pub const PER_FRAME_LIMIT: usize = 1 << 16;
/// How often the worker publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// The source's live counters (written by the worker, read by anyone).
#[derive(Debug, Default)]
struct Live {
    rx: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    dropped_policy: AtomicU64,
    pending_deny: AtomicU64,
    batches: AtomicU64,
    flows: AtomicU64,
    generation: AtomicU64,
    generation_swaps: AtomicU64,
    records_dropped: AtomicU64,
    passes: AtomicU64,
    exhausted: AtomicBool,
    sent: Vec<AtomicU64>,
    fwd: Vec<AtomicU64>,
}

/// The port over the capture.
struct PcapPort {
    frames: Arc<Frames>,
    pos: usize,
    looping: bool,
    rate: Option<u64>,
    t0: Instant,
    epoch_ns: u64,
    emitted: u64,
    live: Arc<Live>,
}

impl Port for PcapPort {
    fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx {
        if self.frames.is_empty() || self.live.exhausted.load(Ordering::Relaxed) {
            return Rx::Idle;
        }
        if self.pos == self.frames.len() {
            self.live.passes.fetch_add(1, Ordering::Relaxed);
            if !self.looping {
                self.live.exhausted.store(true, Ordering::Relaxed);
                return Rx::Idle;
            }
            self.pos = 0;
        }
        let elapsed = self.t0.elapsed();
        let mut n = out.len().min(self.frames.len() - self.pos);
        if let Some(r) = self.rate {
            let allowed =
                u64::try_from(elapsed.as_nanos().saturating_mul(u128::from(r)) / 1_000_000_000)
                    .unwrap_or(u64::MAX);
            let budget = allowed.saturating_sub(self.emitted);
            n = n.min(usize::try_from(budget).unwrap_or(usize::MAX));
            if n == 0 {
                return Rx::Idle;
            }
        }
        let now = self
            .epoch_ns
            .saturating_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        for (i, slot) in out.iter_mut().take(n).enumerate() {
            let idx = self.pos + i;
            let wire_len = self
                .frames
                .get(idx)
                .map_or(0, |f| f.orig_len.max(f.data.len() as u32));
            *slot = RxFrame {
                handle: idx as u64,
                ts_ns: now,
                wire_len,
                ifindex: 0,
            };
            if let Some(c) = self.live.sent.get(idx) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.pos += n;
        self.emitted += n as u64;
        Rx::Frames(n)
    }

    fn data(&self, frame: &RxFrame) -> &[u8] {
        self.frames
            .get(frame.handle as usize)
            .map_or(&[], |f| f.data)
    }

    fn tx_batch(&mut self, frames: &[RxFrame]) {
        for f in frames {
            if let Some(c) = self.live.fwd.get(f.handle as usize) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn drop_batch(&mut self, _frames: &[RxFrame]) {}
}

fn publish<C: Classify>(w: &Worker<C>, live: &Live) {
    let r = Ordering::Relaxed;
    let s = w.stats();
    let policy = s.outcome[1][0].packets + s.outcome[1][1].packets;
    live.rx.store(s.rx.packets, r);
    live.forwarded.store(s.forwarded.packets, r);
    live.dropped.store(s.dropped.packets, r);
    live.dropped_policy.store(policy, r);
    live.pending_deny
        .store(s.outcome[0][1].packets + s.outcome[1][1].packets, r);
    live.batches.store(s.batches, r);
    live.flows.store(w.flow_table().len() as u64, r);
    live.generation.store(u64::from(w.generation()), r);
    live.generation_swaps.store(s.generation_swaps, r);
    live.records_dropped.store(s.records_dropped, r);
}

/// The running source.
pub struct PcapSource {
    name: String,
    frames: usize,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<WorkerReport>>,
    started: Instant,
}

impl std::fmt::Debug for PcapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapSource")
            .field("name", &self.name)
            .finish()
    }
}

impl PcapSource {
    /// Starts one worker over `frames`.
    pub fn start<C: Classify + 'static>(
        name: String,
        frames: Frames,
        looping: bool,
        rate: Option<u64>,
        cfg: WorkerConfig,
        slot: Arc<ClassifierSlot<C>>,
        records: Sender<FlowRecord>,
    ) -> Result<PcapSource, String> {
        let n = frames.len();
        let per_frame = if n <= PER_FRAME_LIMIT { n } else { 0 };
        let live = Arc::new(Live {
            sent: (0..per_frame).map(|_| AtomicU64::new(0)).collect(),
            fwd: (0..per_frame).map(|_| AtomicU64::new(0)).collect(),
            ..Live::default()
        });
        let worker = Worker::try_new(cfg, Arc::clone(&slot), RecordOut::channel(records))
            .map_err(|e| format!("cannot allocate the flow table: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut port = PcapPort {
            frames: Arc::new(frames),
            pos: 0,
            looping,
            rate,
            t0: Instant::now(),
            epoch_ns: now_ns(),
            emitted: 0,
            live: Arc::clone(&live),
        };
        let (l, s) = (Arc::clone(&live), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("tiergate-pcap-0".into())
            .spawn(move || {
                let mut w = worker;
                let mut last = Instant::now();
                // Idle, the worker naps up to 100 µs; a new generation wakes it.
                slot.wake_on_publish();
                while !s.load(Ordering::Relaxed) {
                    if let Rx::Idle | Rx::End = w.poll(&mut port) {
                        w.idle(now_ns());
                        std::thread::park_timeout(Duration::from_micros(100));
                    }
                    if last.elapsed() >= PUBLISH_EVERY {
                        publish(&w, &l);
                        last = Instant::now();
                    }
                }
                publish(&w, &l);
                w.finish()
            })
            .map_err(|e| format!("cannot start the worker: {e}"))?;
        Ok(PcapSource {
            name,
            frames: n,
            live,
            stop,
            handle: Some(handle),
            started: Instant::now(),
        })
    }

    /// Whether the worker thread ended.
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the worker to stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the worker and waits for it (its flow table drains into final records).
    pub fn stop(&mut self) -> Result<(), String> {
        self.request_stop();
        match self.handle.take().map(JoinHandle::join) {
            Some(Err(_)) => Err("the worker panicked".into()),
            _ => Ok(()),
        }
    }

    /// The counters as a JSON document and as text.
    pub fn counters(&self) -> (Value, String) {
        counters(&self.name, self.frames, &self.live, self.started)
    }

    /// A function giving [`PcapSource::counters`] (for the daemon's `stats`).
    pub fn counters_fn(&self) -> impl Fn() -> (Value, String) + Send + Sync + 'static {
        let (name, frames, live, started) = (
            self.name.clone(),
            self.frames,
            Arc::clone(&self.live),
            self.started,
        );
        move || counters(&name, frames, &live, started)
    }

    /// A function giving [`PcapSource::generations`].
    pub fn generations_fn(&self) -> impl Fn() -> Vec<u64> + Send + Sync + 'static {
        let live = Arc::clone(&self.live);
        move || vec![live.generation.load(Ordering::Relaxed)]
    }
}

fn counters(name: &str, frames: usize, l: &Live, started: Instant) -> (Value, String) {
    let r = Ordering::Relaxed;
    let per_frame: Vec<[u64; 2]> = l
        .sent
        .iter()
        .zip(&l.fwd)
        .map(|(s, f)| [s.load(r), f.load(r)])
        .collect();
    let doc = json!({
        "uptime_s": started.elapsed().as_secs_f64(),
        "source": {
            "pcap": name,
            "frames": frames,
            "passes": l.passes.load(r),
            "exhausted": l.exhausted.load(r),
        },
        "workers": [{
            "worker": 0,
            "rx": l.rx.load(r),
            "forwarded": l.forwarded.load(r),
            "dropped": l.dropped.load(r),
            "dropped_policy": l.dropped_policy.load(r),
            "pending_deny": l.pending_deny.load(r),
            "batches": l.batches.load(r),
            "flows": l.flows.load(r),
            "policy_generation": l.generation.load(r),
            "generation_swaps": l.generation_swaps.load(r),
            "records_dropped": l.records_dropped.load(r),
        }],
        "per_frame": per_frame,
    });
    let text = format!(
        "tiergate run (pcap {name}, {frames} frames, pass {}): rx {}  forwarded {}  dropped {} (by policy {})  pending deny {}  flows {}  policy generation {}",
        l.passes.load(r),
        l.rx.load(r),
        l.forwarded.load(r),
        l.dropped.load(r),
        l.dropped_policy.load(r),
        l.pending_deny.load(r),
        l.flows.load(r),
        l.generation.load(r),
    );
    (doc, text)
}
