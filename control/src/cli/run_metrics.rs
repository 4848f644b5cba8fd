//! `tiergate run --metrics ADDR`: the `/metrics` server of a run and how the run loop
//! feeds it (see [`crate::metrics`] for what is exported).
//!
//! The server runs on a tokio runtime. Until the run has a control thread with a
//! runtime of its own, [`runtime`] makes a small one for it; the one place to swap in
//! another runtime's handle is [`RunMetrics::start`]'s `handle` argument.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::flowlog::FlowActivity;
use crate::metrics::{self, Metrics, MetricsServer};

/// The runtime the metrics server runs on when the run has none: one worker thread.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tiergate-metrics")
        .enable_all()
        .build()
}

/// How often the run loop refreshes the worker counters.
pub const REFRESH: Duration = Duration::from_secs(1);

/// A run's metrics and their server.
#[derive(Debug)]
pub struct RunMetrics {
    metrics: Metrics,
    server: MetricsServer,
    last: Option<Instant>,
}

impl RunMetrics {
    /// Checks `addr` (loopback unless `allow_remote`), binds it and serves `/metrics` on
    /// `handle`. The error is a usage message.
    pub fn start(
        handle: &tokio::runtime::Handle,
        addr: SocketAddr,
        allow_remote: bool,
    ) -> Result<RunMetrics, String> {
        metrics::check_addr(addr, allow_remote)?;
        let m = Metrics::new();
        let server = metrics::serve(handle, addr, m.clone())
            .map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))?;
        Ok(RunMetrics {
            metrics: m,
            server,
            last: None,
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The metrics, to feed.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts the policy hits of a flow-log activity.
    pub fn add_activity(&self, a: &FlowActivity) {
        self.metrics.add_activity(a);
    }

    /// Whether the worker counters are due for a refresh (at most every [`REFRESH`]);
    /// `force` for the last one.
    pub fn due(&mut self, force: bool) -> bool {
        let now = Instant::now();
        if force || self.last.is_none_or(|t| now.duration_since(t) >= REFRESH) {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// The metrics view of the AF_XDP workers' snapshots.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
pub fn worker_stats(
    snaps: &[dataplane::port::afxdp::WorkerSnapshot],
    names: &[String; 2],
) -> Vec<metrics::WorkerStats> {
    snaps
        .iter()
        .map(|s| metrics::WorkerStats {
            worker: s.worker,
            forwarded: s.forwarded,
            dropped_policy: s.dropped_policy,
            dropped_parse: s.dropped_parse,
            non_ip_passed: s.non_ip_passed,
            pending_deny: s.pending_deny,
            batches: s.batches,
            latency_ns: s.latency_ns,
            flows: s.flows,
            flow_capacity: s.flow_capacity,
            evictions: s.evictions,
            insert_failures: s.insert_failures,
            generation: s.generation,
            records_dropped: s.records_dropped,
            queues: s
                .queues
                .iter()
                .map(|q| metrics::QueueStats {
                    iface: names.get(q.iface).cloned().unwrap_or_default(),
                    queue: q.queue,
                    rx: q.port.rx,
                    tx: q.port.tx,
                    tx_ring_full: q.port.tx_ring_full,
                    fill_ring_empty: q.port.fill_ring_empty,
                    kernel_rx_dropped: q.kernel.rx_dropped,
                    kernel_rx_ring_full: q.kernel.rx_ring_full,
                    kernel_rx_fill_ring_empty: q.kernel.rx_fill_ring_empty,
                    kernel_tx_ring_empty: q.kernel.tx_ring_empty,
                    kernel_invalid_descs: q.kernel.invalid_descs,
                })
                .collect(),
        })
        .collect()
}
