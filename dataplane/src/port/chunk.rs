//! The replay dispatcher's port: chunks of a capture handed to one worker over a
//! bounded channel ([`ChunkPort`]), and the [`Pacer`] that holds chunks back to the
//! capture's recorded timing. The dispatcher itself (reading, routing by symmetric
//! flow hash) is in [`crate::pipeline`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use pcap::capture::Frames;

use super::{Port, Rx, RxFrame};
use crate::pipeline::{FrameVerdict, Pace};

/// One chunk for one worker: a shared, immutable block of frames, the indices of the
/// frames this worker owns, and (when requested) the block's per-frame verdicts.
pub(crate) struct Work {
    pub(crate) frames: Arc<Frames>,
    pub(crate) idx: Vec<u32>,
    pub(crate) verdicts: Option<Arc<Vec<AtomicU8>>>,
}

/// A worker's view of the dispatcher: chunks arrive over a channel.
pub(crate) struct ChunkPort {
    rx: Receiver<Work>,
    cur: Option<Work>,
    pos: usize,
}

impl std::fmt::Debug for ChunkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkPort").field("pos", &self.pos).finish()
    }
}

impl ChunkPort {
    /// A port receiving its chunks from `rx`; it ends when every sender is gone.
    pub(crate) fn new(rx: Receiver<Work>) -> Self {
        ChunkPort {
            rx,
            cur: None,
            pos: 0,
        }
    }

    fn mark(&self, frames: &[RxFrame], v: FrameVerdict) {
        if let Some(Some(vs)) = self.cur.as_ref().map(|w| w.verdicts.as_ref()) {
            for f in frames {
                if let Some(slot) = vs.get(f.handle as usize) {
                    slot.store(v as u8, Ordering::Relaxed);
                }
            }
        }
    }
}

impl Port for ChunkPort {
    fn rx_batch(&mut self, out: &mut [RxFrame]) -> Rx {
        loop {
            if let Some(w) = &self.cur
                && self.pos < w.idx.len()
            {
                let mut n = 0;
                while n < out.len() && self.pos < w.idx.len() {
                    let i = w.idx[self.pos];
                    self.pos += 1;
                    if let Some(f) = w.frames.get(i as usize) {
                        out[n] = RxFrame {
                            handle: u64::from(i),
                            ts_ns: f.ts_ns,
                            wire_len: f.orig_len.max(f.data.len() as u32),
                            ifindex: 0,
                        };
                        n += 1;
                    }
                }
                if n > 0 {
                    return Rx::Frames(n);
                }
            }
            match self.rx.recv() {
                Ok(w) => {
                    self.cur = Some(w);
                    self.pos = 0;
                }
                Err(_) => return Rx::End,
            }
        }
    }

    fn data(&self, f: &RxFrame) -> &[u8] {
        self.cur
            .as_ref()
            .and_then(|w| w.frames.get(f.handle as usize))
            .map_or(&[], |f| f.data)
    }

    fn tx_batch(&mut self, frames: &[RxFrame]) {
        self.mark(frames, FrameVerdict::Forwarded);
    }

    fn drop_batch(&mut self, frames: &[RxFrame]) {
        self.mark(frames, FrameVerdict::Dropped);
    }
}

/// Paces replay at recorded speed: chunks close every millisecond of capture time
/// and the dispatcher sleeps until the wall clock catches up. A gap between frames
/// longer than `max_gap` is waited for only `max_gap` (and counted).
pub(crate) struct Pacer {
    on: bool,
    start: Option<(Instant, u64)>,
    chunk_end_ts: u64,
    last_ts: u64,
    /// Longest gap waited for (ns of capture time).
    max_gap: u64,
    /// Capture time skipped by shortened gaps (ns): subtracted from every later
    /// frame's offset.
    skipped: u64,
    /// The latest frame time seen (ns), to measure gaps.
    prev_ts: Option<u64>,
    /// Gaps shortened.
    pub(crate) gaps_capped: u64,
}

const PACE_SLICE_NS: u64 = 1_000_000;

impl Pacer {
    pub(crate) fn new(p: Pace, max_gap: u64) -> Self {
        Pacer {
            on: p == Pace::Recorded,
            start: None,
            chunk_end_ts: 0,
            last_ts: 0,
            max_gap,
            skipped: 0,
            prev_ts: None,
            gaps_capped: 0,
        }
    }

    /// Notes a frame's time; true when the current chunk should be sent.
    pub(crate) fn due(&mut self, ts: u64) -> bool {
        if !self.on {
            return false;
        }
        let (_, t0) = *self.start.get_or_insert((Instant::now(), ts));
        if let Some(prev) = self.prev_ts {
            let gap = ts.saturating_sub(prev);
            if gap > self.max_gap {
                self.skipped = self.skipped.saturating_add(gap - self.max_gap);
                self.gaps_capped += 1;
            }
        }
        self.prev_ts = Some(self.prev_ts.map_or(ts, |p| p.max(ts)));
        self.last_ts = ts.saturating_sub(self.skipped).max(t0);
        if self.chunk_end_ts == 0 {
            self.chunk_end_ts = ts.saturating_add(PACE_SLICE_NS);
        }
        ts >= self.chunk_end_ts
    }

    /// Sleeps until the wall clock reaches the last frame's capture offset.
    pub(crate) fn wait(&mut self) {
        if !self.on {
            return;
        }
        if let Some((wall0, t0)) = self.start {
            let target = Duration::from_nanos(self.last_ts.saturating_sub(t0));
            let now = wall0.elapsed();
            if target > now {
                std::thread::sleep(target - now);
            }
        }
        self.chunk_end_ts = 0;
    }
}
