//! `tiergate run --metrics ADDR`: the `/metrics` server of a run and how the run loop
//! feeds it (see [`crate::metrics`] for what is exported).
//!
//! The server runs on the run's control thread ([`crate::server::ControlThread`]),
//! the runtime the control socket shares.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::flowlog::FlowActivity;
use crate::metrics::{self, Metrics, MetricsServer, WorkerSnapshot};

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
    /// [`RunMetrics::start`], and says on stderr where the metrics are served.
    pub fn start_announced(
        handle: &tokio::runtime::Handle,
        addr: SocketAddr,
        allow_remote: bool,
    ) -> Result<RunMetrics, String> {
        let m = RunMetrics::start(handle, addr, allow_remote)?;
        crate::errln!("tiergate run: metrics at http://{}/metrics", m.local_addr());
        Ok(m)
    }

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

    /// Refreshes the worker counters (`snaps`, taken only when due: at most every
    /// [`REFRESH`]) and the flow-log records written.
    pub fn refresh(
        &mut self,
        snaps: impl FnOnce() -> Vec<WorkerSnapshot>,
        ifaces: &[String],
        flow_log_records: u64,
    ) {
        if self.due(false) {
            self.metrics.set_workers(snaps(), ifaces);
            self.metrics.set_flow_log_records(flow_log_records);
        }
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
