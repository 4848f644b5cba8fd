//! Prometheus metrics of a running data plane (`tiergate run --metrics ADDR`), served at
//! `/metrics` by [`serve`] (axum, on a tokio runtime the caller owns).
//!
//! The exposition is `prometheus-client`'s text encoding (OpenMetrics text: counters
//! carry `_total`, units are name suffixes). What is exported:
//!
//! - per socket (`worker`, `iface`, `queue`): `tiergate_rx_packets_total`,
//!   `tiergate_tx_packets_total`, `tiergate_fill_ring_empty_events_total`,
//!   `tiergate_tx_ring_full_events_total`, and the kernel's XDP socket statistics
//!   `tiergate_kernel_rx_dropped_packets_total`, `tiergate_kernel_rx_ring_full_events_total`,
//!   `tiergate_kernel_fill_ring_empty_events_total`,
//!   `tiergate_kernel_tx_ring_empty_events_total`, `tiergate_kernel_invalid_descriptors_total`;
//! - per worker (`worker`): `tiergate_forwarded_packets_total`,
//!   `tiergate_policy_dropped_packets_total`, `tiergate_parse_errors_total` (frames
//!   dropped because they did not parse), `tiergate_non_ip_passed_packets_total`,
//!   `tiergate_pending_deny_packets_total`, `tiergate_offloaded_packets_total`, `tiergate_batches_total`,
//!   `tiergate_batch_latency_seconds{quantile}` (a gauge per quantile: 0.5, 0.9, 0.99,
//!   0.999 and 1 for the maximum, over the worker's life), `tiergate_flow_table_entries`,
//!   `tiergate_flow_table_capacity_entries`, `tiergate_flow_table_evictions_total`,
//!   `tiergate_flow_table_insert_failures_total`, `tiergate_flow_records_dropped_total`,
//!   `tiergate_policy_generation` (the classifier generation the worker runs);
//! - per worker running flow offload (`--offload`; absent otherwise; packets are
//!   `tiergate_offloaded_packets_total` above): `tiergate_offload_bytes_total`,
//!   `tiergate_offload_installs_total`, `tiergate_offload_install_failures_total`,
//!   `tiergate_offload_held_elsewhere_total`, `tiergate_offload_removals_total`;
//! - `tiergate_flow_log_records_total` (flow-log records written);
//! - policy hits, from the flow records the workers export at each flow-log interval
//!   (so they lag by up to one interval), for both views (`view="enforced"` and
//!   `view="pending"`, the latter with staged policies as if enforced):
//!   `tiergate_policy_hit_packets_total` / `tiergate_policy_hit_bytes_total`
//!   `{view, direction, tier, policy}` and `tiergate_rule_hit_packets_total` /
//!   `tiergate_rule_hit_bytes_total` `{view, direction, tier, policy, rule, action}`.
//!   `policy` is the flow-log name (`gnp:security.block`, `np:ns/name`, ...), `rule`
//!   the rule index (`-1`: the end of the tier, its default action), `direction` which
//!   end evaluated it (`egress` at the source, `ingress` at the destination). A hit
//!   counts the packets and bytes the connection's initiator sent in the interval: the
//!   packets the rule classified (replies pass by connection tracking).
//!
//! Counters that come from the workers are refreshed by the run loop (about once a
//! second), not at scrape time.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::flowlog::{FlowActivity, Reporter};

/// The workers' counters the metrics export: the data plane's own snapshot type.
pub use dataplane::port::counters::{QueueSnapshot, WorkerSnapshot};
use dataplane::worker::OffloadStats;

/// (view, direction, tier, policy, rule, action).
type RuleKey = (&'static str, &'static str, String, String, String, String);
/// (view, direction, tier, policy).
type PolicyKey = (&'static str, &'static str, String, String);

#[derive(Debug, Default)]
struct State {
    workers: Vec<WorkerSnapshot>,
    /// Interface names, by the snapshots' interface slot.
    ifaces: Vec<String>,
    flow_log_records: u64,
    rules: BTreeMap<RuleKey, (u64, u64)>,
    policies: BTreeMap<PolicyKey, (u64, u64)>,
}

/// The metrics of one daemon: cheap to clone, shared by the run loop (which feeds it)
/// and the HTTP server (which encodes it).
#[derive(Clone, Debug)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Metrics {
        let state = Arc::new(Mutex::new(State::default()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(Arc::clone(&state))));
        Metrics {
            state,
            registry: Arc::new(registry),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters: still fine to read.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the worker counters with a fresh snapshot; `ifaces` names the
    /// snapshots' interface slots.
    pub fn set_workers(&self, workers: Vec<WorkerSnapshot>, ifaces: &[String]) {
        let mut s = self.lock();
        s.workers = workers;
        if s.ifaces != ifaces {
            s.ifaces = ifaces.to_vec();
        }
    }

    /// Sets the number of flow-log records written.
    pub fn set_flow_log_records(&self, n: u64) {
        self.lock().flow_log_records = n;
    }

    /// Counts the policy and rule hits of one flow-log activity (both views).
    pub fn add_activity(&self, a: &FlowActivity) {
        let direction = match a.reporter {
            Reporter::Src => "egress",
            Reporter::Dst => "ingress",
        };
        let (p, b) = (a.packets_fwd, a.bytes_fwd);
        if p == 0 && b == 0 {
            return;
        }
        let mut s = self.lock();
        for (view, trace) in [("enforced", &a.enforced), ("pending", &a.pending)] {
            for hit in trace {
                let Some((tier, policy, action, rule)) = parse_hit(hit) else {
                    continue;
                };
                let c = s
                    .policies
                    .entry((view, direction, tier.to_string(), policy.to_string()))
                    .or_default();
                c.0 += p;
                c.1 += b;
                let c = s
                    .rules
                    .entry((
                        view,
                        direction,
                        tier.to_string(),
                        policy.to_string(),
                        rule.to_string(),
                        action.to_string(),
                    ))
                    .or_default();
                c.0 += p;
                c.1 += b;
            }
        }
    }

    /// The exposition text ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A Calico hit string `INDEX|TIER|POLICY|ACTION|RULE` as (tier, policy, action, rule).
fn parse_hit(hit: &str) -> Option<(&str, &str, &str, &str)> {
    let mut it = hit.split('|');
    let _index = it.next()?;
    let tier = it.next()?;
    let policy = it.next()?;
    let action = it.next()?;
    let rule = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some((tier, policy, action, rule))
}

/// Encodes the current [`State`] at each scrape.
#[derive(Debug)]
struct Snapshot(Arc<Mutex<State>>);

type Labels = Vec<(&'static str, String)>;

fn counters(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<N>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, N)>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let mut m = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let ifaces = &s.ifaces;
        let queues: Vec<(Labels, &QueueSnapshot)> = s
            .workers
            .iter()
            .flat_map(|w| {
                w.queues.iter().map(move |q| {
                    (
                        vec![
                            ("worker", w.worker.to_string()),
                            ("iface", ifaces.get(q.iface).cloned().unwrap_or_default()),
                            ("queue", q.queue.to_string()),
                        ],
                        q,
                    )
                })
            })
            .collect();
        type QField = fn(&QueueSnapshot) -> u64;
        let per_queue: [(&str, &str, QField); 9] = [
            (
                "tiergate_rx_packets",
                "Frames received on the socket.",
                |q| q.port.rx,
            ),
            ("tiergate_tx_packets", "Frames sent on the socket.", |q| {
                q.port.tx
            }),
            (
                "tiergate_fill_ring_empty_events",
                "Times the socket's fill ring was found empty.",
                |q| q.port.fill_ring_empty,
            ),
            (
                "tiergate_tx_ring_full_events",
                "Times the socket's TX ring was full.",
                |q| q.port.tx_ring_full,
            ),
            (
                "tiergate_kernel_rx_dropped_packets",
                "Kernel: frames dropped for lack of a buffer (XDP_STATISTICS rx_dropped).",
                |q| q.kernel.rx_dropped,
            ),
            (
                "tiergate_kernel_rx_ring_full_events",
                "Kernel: times the RX ring was full (rx_ring_full).",
                |q| q.kernel.rx_ring_full,
            ),
            (
                "tiergate_kernel_fill_ring_empty_events",
                "Kernel: times the fill ring was empty (rx_fill_ring_empty_descs).",
                |q| q.kernel.rx_fill_ring_empty,
            ),
            (
                "tiergate_kernel_tx_ring_empty_events",
                "Kernel: times the TX ring was empty (tx_ring_empty_descs).",
                |q| q.kernel.tx_ring_empty,
            ),
            (
                "tiergate_kernel_invalid_descriptors",
                "Kernel: invalid RX and TX descriptors.",
                |q| q.kernel.invalid_descs,
            ),
        ];
        for (name, help, f) in per_queue {
            counters(
                &mut enc,
                name,
                help,
                queues.iter().map(|(l, q)| (l.clone(), f(q))),
            )?;
        }
        let worker = |w: &WorkerSnapshot| -> Labels { vec![("worker", w.worker.to_string())] };
        type WField = fn(&WorkerSnapshot) -> u64;
        let per_worker: [(&str, &str, WField); 10] = [
            (
                "tiergate_forwarded_packets",
                "Frames forwarded to the other interface.",
                |w| w.forwarded,
            ),
            (
                "tiergate_policy_dropped_packets",
                "Packets dropped by the enforced policy verdict.",
                |w| w.dropped_policy,
            ),
            (
                "tiergate_parse_errors",
                "Frames dropped because they did not parse (truncated, malformed).",
                |w| w.dropped_parse,
            ),
            (
                "tiergate_non_ip_passed_packets",
                "Non-IP frames forwarded without policy (wire mode).",
                |w| w.non_ip_passed,
            ),
            (
                "tiergate_offloaded_packets",
                "Packets the XDP program forwarded itself (flow offload), merged so far.",
                |w| w.offloaded,
            ),
            (
                "tiergate_pending_deny_packets",
                "Packets the pending verdict (staged policies enforced) would deny.",
                |w| w.pending_deny,
            ),
            ("tiergate_batches", "Batches processed.", |w| w.batches),
            (
                "tiergate_flow_table_evictions",
                "Connections evicted from the flow table.",
                |w| w.evictions,
            ),
            (
                "tiergate_flow_table_insert_failures",
                "Connections the flow table could not take.",
                |w| w.insert_failures,
            ),
            (
                "tiergate_flow_records_dropped",
                "Flow records lost because the export channel was full.",
                |w| w.records_dropped,
            ),
        ];
        for (name, help, f) in per_worker {
            counters(
                &mut enc,
                name,
                help,
                s.workers.iter().map(|w| (worker(w), f(w))),
            )?;
        }
        // Flow offload (`--offload`): only the workers that run it have these series.
        type OField = fn(&OffloadStats) -> u64;
        let per_offload: [(&str, &str, OField); 5] = [
            (
                "tiergate_offload_bytes",
                "Bytes the XDP program forwarded itself (flow offload), merged so far.",
                |o| o.bytes,
            ),
            (
                "tiergate_offload_installs",
                "Connections installed in the XDP program's map (re-installs included).",
                |o| o.installs,
            ),
            (
                "tiergate_offload_install_failures",
                "Installs the XDP program's map refused (e.g. full).",
                |o| o.install_failures,
            ),
            (
                "tiergate_offload_held_elsewhere",
                "Installs not made because another worker holds the connection.",
                |o| o.held_elsewhere,
            ),
            (
                "tiergate_offload_removals",
                "Connections removed from the XDP program's map.",
                |o| o.removals,
            ),
        ];
        for (name, help, f) in per_offload {
            counters(
                &mut enc,
                name,
                help,
                s.workers
                    .iter()
                    .filter_map(|w| w.offload.as_ref().map(|o| (worker(w), f(o)))),
            )?;
        }
        let quantiles = ["0.5", "0.9", "0.99", "0.999", "1"];
        gauges(
            &mut enc,
            "tiergate_batch_latency_seconds",
            "Time to process one batch, by quantile over the worker's life (1: the maximum).",
            s.workers.iter().flat_map(|w| {
                quantiles.iter().zip(w.latency_ns).map(move |(q, ns)| {
                    let mut l = worker(w);
                    l.push(("quantile", (*q).to_string()));
                    (l, ns as f64 / 1e9)
                })
            }),
        )?;
        type GField = fn(&WorkerSnapshot) -> i64;
        let per_worker_gauges: [(&str, &str, GField); 3] = [
            (
                "tiergate_flow_table_entries",
                "Connections tracked now.",
                |w| i64::try_from(w.flows).unwrap_or(i64::MAX),
            ),
            (
                "tiergate_flow_table_capacity_entries",
                "Flow-table capacity.",
                |w| i64::try_from(w.flow_capacity).unwrap_or(i64::MAX),
            ),
            (
                "tiergate_policy_generation",
                "Classifier generation the worker runs.",
                |w| i64::try_from(w.generation).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, f) in per_worker_gauges {
            gauges(
                &mut enc,
                name,
                help,
                s.workers.iter().map(|w| (worker(w), f(w))),
            )?;
        }
        ConstCounter::new(s.flow_log_records).encode(enc.encode_descriptor(
            "tiergate_flow_log_records",
            "Flow-log records written.",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?)?;
        let policy_labels = |k: &PolicyKey| -> Labels {
            vec![
                ("view", k.0.to_string()),
                ("direction", k.1.to_string()),
                ("tier", k.2.clone()),
                ("policy", k.3.clone()),
            ]
        };
        let rule_labels = |k: &RuleKey| -> Labels {
            vec![
                ("view", k.0.to_string()),
                ("direction", k.1.to_string()),
                ("tier", k.2.clone()),
                ("policy", k.3.clone()),
                ("rule", k.4.clone()),
                ("action", k.5.clone()),
            ]
        };
        counters(
            &mut enc,
            "tiergate_policy_hit_packets",
            "Packets a policy decided, as of the last flow-log interval (initiator's packets).",
            s.policies.iter().map(|(k, v)| (policy_labels(k), v.0)),
        )?;
        counters(
            &mut enc,
            "tiergate_policy_hit_bytes",
            "Bytes a policy decided, as of the last flow-log interval (initiator's bytes).",
            s.policies.iter().map(|(k, v)| (policy_labels(k), v.1)),
        )?;
        counters(
            &mut enc,
            "tiergate_rule_hit_packets",
            "Packets a rule matched (rule -1: the tier's default action), as of the last flow-log interval.",
            s.rules.iter().map(|(k, v)| (rule_labels(k), v.0)),
        )?;
        counters(
            &mut enc,
            "tiergate_rule_hit_bytes",
            "Bytes a rule matched (rule -1: the tier's default action), as of the last flow-log interval.",
            s.rules.iter().map(|(k, v)| (rule_labels(k), v.1)),
        )?;
        Ok(())
    }
}

/// Whether `addr` may serve metrics without `allow_remote`: loopback addresses only.
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "--metrics {addr}: not a loopback address; metrics name every policy and rule, so they are served on localhost unless --metrics-allow-remote is given"
        ))
    }
}

/// A running `/metrics` server; stops when dropped (or by [`MetricsServer::stop`]).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MetricsServer {
    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; requests in flight finish.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr` now (so a bad address or a port in use is reported at once) and serves
/// `GET /metrics` on `handle`'s runtime.
pub fn serve(
    handle: &tokio::runtime::Handle,
    addr: SocketAddr,
    metrics: Metrics,
) -> io::Result<MetricsServer> {
    use axum::Router;
    use axum::http::header;
    use axum::routing::get;

    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let listener = {
        let _guard = handle.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode()) }
        }),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    handle.spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Ok(MetricsServer {
        addr: local,
        stop: Some(tx),
    })
}

#[cfg(test)]
mod tests;
