//! The counters of a live run's workers and sockets as plain values: what the AF_XDP
//! workers publish (`afxdp::LiveWorker::snapshot`) and what the
//! management plane reports (`stats`, the counters printout, Prometheus metrics). Kept
//! out of the `afxdp` module so that readers of the counters build without AF_XDP.

/// How worker threads are scheduled (see the `afxdp` module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sched {
    /// SCHED_FIFO priority 1; the worker sleeps as soon as its rx rings are empty.
    #[default]
    Fifo,
    /// The normal time-sharing policy; an idle worker polls a while before sleeping.
    Other,
}

impl Sched {
    /// `fifo` or `other`, as counters and messages name the policy.
    pub fn name(self) -> &'static str {
        match self {
            Sched::Fifo => "fifo",
            Sched::Other => "other",
        }
    }
}

/// Per-socket counters kept by the port (plain integers; published by the worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmission on this socket.
    pub tx: u64,
    /// Frames dropped because this socket's tx ring was full.
    pub tx_ring_full: u64,
    /// Times the fill ring wanted frames and the free list had none at all.
    pub fill_ring_empty: u64,
}

/// The kernel's counters of one socket (XDP_STATISTICS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Frames dropped by the kernel for other reasons (e.g. too big for the frame).
    pub rx_dropped: u64,
    /// Frames dropped because the rx ring was full (userspace too slow).
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub rx_fill_ring_empty: u64,
    /// Times the kernel found the tx ring empty when asked to send.
    pub tx_ring_empty: u64,
    /// Invalid descriptors (rx + tx): a bug if not zero.
    pub invalid_descs: u64,
}

/// A snapshot of one socket's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Interface slot (0 or 1).
    pub iface: usize,
    /// Queue id.
    pub queue: u32,
    /// Port counters.
    pub port: QueueCounters,
    /// Kernel counters.
    pub kernel: KernelCounters,
}

/// A snapshot of one worker's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Worker number.
    pub worker: usize,
    /// Core it is pinned to.
    pub core: Option<usize>,
    /// Scheduling policy in effect.
    pub sched: Sched,
    /// Frames received (with flow offload: also those the XDP program forwarded, as
    /// merged so far).
    pub rx: u64,
    /// Frames forwarded (likewise).
    pub forwarded: u64,
    /// Parsed packets dropped by the enforced verdict.
    pub dropped_policy: u64,
    /// Frames dropped because they did not parse (truncated, malformed, non-IP).
    pub dropped_parse: u64,
    /// Non-IP frames forwarded without policy (wire mode).
    pub non_ip_passed: u64,
    /// Packets the pending verdict would deny.
    pub pending_deny: u64,
    /// Batches processed.
    pub batches: u64,
    /// Batch latency percentiles (ns): p50, p90, p99, p99.9, max.
    pub latency_ns: [u64; 5],
    /// Connections tracked now.
    pub flows: u64,
    /// Flow-table capacity.
    pub flow_capacity: u64,
    /// Flow-table evictions.
    pub evictions: u64,
    /// Connections not tracked because the table could not take them.
    pub insert_failures: u64,
    /// Policy generation the worker runs.
    pub generation: u64,
    /// Flow records lost (record channel full).
    pub records_dropped: u64,
    /// Packets the XDP program forwarded (flow offload), merged into flow entries so
    /// far (also in `rx` and `forwarded`).
    pub offloaded: u64,
    /// The worker's flow-offload counters (`None`: no offload).
    pub offload: Option<crate::worker::OffloadStats>,
    /// Per socket.
    pub queues: Vec<QueueSnapshot>,
}

impl WorkerSnapshot {
    /// Average frames per batch.
    pub fn frames_per_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.rx as f64 / self.batches as f64
        }
    }
}
