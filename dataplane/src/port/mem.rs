//! [`MemPort`]: an in-memory port over a set of frames, for tests and benchmarks.

use std::sync::Arc;

use super::{Port, Rx, RxFrame};

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
