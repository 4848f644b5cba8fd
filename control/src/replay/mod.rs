//! Replay: a capture through the data plane against a policy set, and what the staged
//! policies would change.
//!
//! This module owns the glue between the packet pipeline and the policy names: it
//! runs [`Pipeline::run`] with a classifier compiled from a [`Lowered`] policy set,
//! then turns the pipeline's per-connection [`FlowRecord`]s into
//! - flow logs ([`crate::flowlog`]): one [`FlowActivity`] per record and reporter
//!   (the source endpoint's egress verdict, the destination endpoint's ingress
//!   verdict), traces rendered as Calico hit strings;
//! - the impact report ([`crate::impact`]): one [`ConnectionImpact`] per connection;
//! - a [`Summary`] of packets, connections and verdicts in both views.
//!
//! Only ends that are local endpoints (workload or host endpoints) report, as in
//! Calico; a connection between two addresses that are not endpoints is forwarded
//! without policy and counted as *unpoliced*.

pub mod scenario;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use dataplane::flow::{EndReason, FlowRecord};
use dataplane::pipeline::{Pipeline, PipelineConfig, PipelineError, ReplaySource, RunReport};
use dataplane::program::{Classify, EndpointId, FlowKey, FlowVerdicts, Verdict, Verdicts, proto};
use dataplane::worker::{ClassifierSlot, DeniedResponder, Published, WorkerStats};
use pcap::capture::CaptureCut;
use serde::Serialize;

use crate::flowlog::{Aggregator, EndpointMeta, FlowActivity, FlowLog, Reporter, VerdictName};
use crate::impact::{self, ConnectionImpact, ImpactReport, ReporterVerdicts};
use crate::lower::{Lowered, Names};

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Pipeline settings (workers, pace, flow table, export interval, ...).
    pub pipeline: PipelineConfig,
    /// Flow-log aggregation interval (s).
    pub interval_secs: u64,
    /// Length of the peer/port lists of the impact report.
    pub top_n: usize,
}

impl Default for ReplayConfig {
    /// Pipeline defaults, except that packets from the responder of a denied
    /// connection stay with that connection ([`DeniedResponder::JoinConnection`]): in a
    /// capture they are answers to a request the policy under test would have dropped.
    fn default() -> Self {
        let mut pipeline = PipelineConfig::default();
        pipeline.worker.denied_responder = DeniedResponder::JoinConnection;
        ReplayConfig {
            pipeline,
            interval_secs: crate::flowlog::DEFAULT_INTERVAL_SECS,
            top_n: 5,
        }
    }
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Packets.
    pub packets: u64,
    /// Bytes (wire length).
    pub bytes: u64,
}

/// Packet counts of a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PacketSummary {
    /// Frames read from the capture.
    pub total: u64,
    /// Frames parsed into a flow key.
    pub parsed: u64,
    /// Frames cut short before their headers ended.
    pub truncated: u64,
    /// Frames whose headers are inconsistent.
    pub malformed: u64,
    /// Frames that are not IPv4/IPv6 (ARP, MPLS, ...).
    pub non_ip: u64,
    /// Unparsed frames forwarded by the unparsed-frame policy.
    pub unparsed_passed: u64,
    /// Frames forwarded (enforced view).
    pub forwarded: Volume,
    /// Frames dropped (enforced view, plus unparsed frames dropped).
    pub dropped: Volume,
    /// Parsed packets allowed by the enforced view.
    pub enforced_allow: Volume,
    /// Parsed packets denied by the enforced view.
    pub enforced_deny: Volume,
    /// Parsed packets the pending view would allow.
    pub pending_allow: Volume,
    /// Parsed packets the pending view would deny.
    pub pending_deny: Volume,
}

/// Connection counts of a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// Connections seen.
    pub total: u64,
    /// Connections with no local endpoint at either end (no policy applies).
    pub unpoliced: u64,
    /// Allowed by the enforced view.
    pub enforced_allow: u64,
    /// Denied by the enforced view.
    pub enforced_deny: u64,
    /// Would be allowed with the staged policies enforced.
    pub pending_allow: u64,
    /// Would be denied with the staged policies enforced.
    pub pending_deny: u64,
    /// Allowed now, denied once the staged policies are enforced.
    pub newly_denied: u64,
    /// Denied now, allowed once the staged policies are enforced.
    pub newly_allowed: u64,
}

/// The summary a replay ends with.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Packets.
    pub packets: PacketSummary,
    /// Connections.
    pub connections: FlowSummary,
    /// Workers used.
    pub workers: usize,
    /// Wall time of the pipeline run (ms).
    pub elapsed_ms: f64,
    /// Frames per second over the run, in millions.
    pub mpps: f64,
    /// Flow-table evictions (table full).
    pub evictions: u64,
    /// Flow records lost (record channel full); flow logs are incomplete when > 0.
    pub records_dropped: u64,
    /// Where the capture file ended in the middle of a frame (`null` when it did not);
    /// the frames before it were replayed.
    pub capture_cut: Option<CutSummary>,
    /// Gaps in capture time that a `--pace recorded` replay shortened to the maximum
    /// gap.
    pub gaps_capped: u64,
}

/// Where a capture file was cut short.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CutSummary {
    /// Byte offset of the incomplete record (the end of the last whole one).
    pub offset: u64,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// 1-based number of the frame that is cut (the frames before it were replayed).
    pub frame: u64,
}

/// Everything a replay produced.
#[derive(Debug)]
pub struct Replay {
    /// The pipeline's own report (counters, frame verdicts; records were folded into
    /// the flow logs and the impact report as they arrived).
    pub run: RunReport,
    /// Aggregated flow logs.
    pub flow_logs: Vec<FlowLog>,
    /// The staged-policy impact report.
    pub impact: ImpactReport,
    /// Counts.
    pub summary: Summary,
}

impl Replay {
    /// Records that the capture was cut short at `cut` (the frames before it were
    /// replayed), for a capture read into memory before the replay (the pipeline
    /// notices the cut of a file it streams itself).
    pub fn set_capture_cut(&mut self, cut: CaptureCut) {
        self.run.capture_cut = Some(cut);
        self.summary.capture_cut = Some(CutSummary {
            offset: cut.offset,
            file_bytes: cut.file_bytes,
            frame: cut.frame,
        });
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The pipeline could not run (unreadable capture, thread failure).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The flow-log interval is out of range.
    #[error(transparent)]
    Interval(#[from] crate::flowlog::IntervalError),
}

/// Replays `source` through `classifier` (compiled from `lowered.set`).
pub fn replay<C: Classify + 'static>(
    lowered: &Lowered,
    classifier: C,
    source: ReplaySource,
    cfg: &ReplayConfig,
) -> Result<Replay, ReplayError> {
    let mut agg = Aggregator::new(cfg.interval_secs)?;
    let slot = Arc::new(ClassifierSlot::new(Published {
        generation: 1,
        classifier,
    }));
    // The generation the workers run; it stays alive here for rendering traces.
    let published = slot.load();
    let classifier = &published.classifier;
    let mut connections = Connections::default();
    // Records are folded in as the workers emit them, so memory grows with the
    // number of connections, not with the number of records.
    let run = Pipeline::run_with(source, Arc::clone(&slot), &cfg.pipeline, &mut |rec| {
        for a in activities(&rec, &lowered.names, classifier) {
            agg.add(&a);
        }
        connections.add(&rec);
    })?;
    let connections = connections.list;
    let impacts: Vec<ConnectionImpact> = connections
        .iter()
        .map(|c| connection_impact(c, lowered, classifier))
        .collect();
    let impact = impact::report(&impacts, cfg.top_n);
    let summary = summarize(&run, &connections, cfg.pipeline.workers.max(1));
    Ok(Replay {
        flow_logs: agg.drain(),
        impact,
        summary,
        run,
    })
}

/// One connection: its records merged.
#[derive(Clone, Debug)]
struct Connection {
    key: FlowKey,
    verdicts: FlowVerdicts,
    packets: u64,
    bytes: u64,
}

/// The interval records of each connection (keyed by initiator key and start time)
/// merged, keeping the latest verdicts.
#[derive(Debug, Default)]
struct Connections {
    index: HashMap<(FlowKey, u64), usize>,
    list: Vec<Connection>,
}

impl Connections {
    fn add(&mut self, r: &FlowRecord) {
        let packets = r.packets_fwd + r.packets_rev;
        let bytes = r.bytes_fwd + r.bytes_rev;
        match self.index.get(&(r.key, r.first_ns)) {
            Some(&i) => {
                let c = &mut self.list[i];
                c.packets += packets;
                c.bytes += bytes;
                c.verdicts = r.verdicts;
            }
            None => {
                self.index.insert((r.key, r.first_ns), self.list.len());
                self.list.push(Connection {
                    key: r.key,
                    verdicts: r.verdicts,
                    packets,
                    bytes,
                });
            }
        }
    }
}

fn combined(v: &FlowVerdicts, pick: impl Fn(&Verdicts) -> Verdict) -> Verdict {
    let deny = [v.egress, v.ingress]
        .into_iter()
        .flatten()
        .any(|(_, x)| pick(&x) == Verdict::Deny);
    if deny { Verdict::Deny } else { Verdict::Allow }
}

fn summarize(run: &RunReport, connections: &[Connection], workers: usize) -> Summary {
    let t: &WorkerStats = &run.totals;
    let vol = |c: dataplane::worker::Count| Volume {
        packets: c.packets,
        bytes: c.bytes,
    };
    let sum = |a: dataplane::worker::Count, b: dataplane::worker::Count| Volume {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
    };
    let o = &t.outcome;
    let packets = PacketSummary {
        total: t.rx.packets,
        parsed: t.parse.parsed,
        truncated: t.parse.truncated,
        malformed: t.parse.malformed,
        non_ip: t.parse.non_ip,
        unparsed_passed: t.unparsed_passed,
        forwarded: vol(t.forwarded),
        dropped: vol(t.dropped),
        enforced_allow: sum(o[0][0], o[0][1]),
        enforced_deny: sum(o[1][0], o[1][1]),
        pending_allow: sum(o[0][0], o[1][0]),
        pending_deny: sum(o[0][1], o[1][1]),
    };
    let mut flows = FlowSummary::default();
    for c in connections {
        flows.total += 1;
        if c.verdicts.egress.is_none() && c.verdicts.ingress.is_none() {
            flows.unpoliced += 1;
        }
        let e = combined(&c.verdicts, |v| v.enforced.verdict);
        let p = combined(&c.verdicts, |v| v.pending.verdict);
        match e {
            Verdict::Allow => flows.enforced_allow += 1,
            Verdict::Deny => flows.enforced_deny += 1,
        }
        match p {
            Verdict::Allow => flows.pending_allow += 1,
            Verdict::Deny => flows.pending_deny += 1,
        }
        match (e, p) {
            (Verdict::Allow, Verdict::Deny) => flows.newly_denied += 1,
            (Verdict::Deny, Verdict::Allow) => flows.newly_allowed += 1,
            _ => {}
        }
    }
    Summary {
        packets,
        connections: flows,
        workers,
        elapsed_ms: run.elapsed.as_secs_f64() * 1e3,
        mpps: run.mpps(),
        evictions: t.flows.evictions,
        records_dropped: t.records_dropped,
        capture_cut: run.capture_cut.map(|c| CutSummary {
            offset: c.offset,
            file_bytes: c.file_bytes,
            frame: c.frame,
        }),
        gaps_capped: run.gaps_capped,
    }
}

fn end_meta(names: &Names, ep: Option<EndpointId>, ip: IpAddr) -> EndpointMeta {
    ep.and_then(|id| names.endpoint(id))
        .map(|e| e.meta.clone())
        .unwrap_or_else(|| names.peer(ip))
}

fn end_display(lowered: &Lowered, ep: Option<EndpointId>, ip: IpAddr) -> String {
    ep.and_then(|id| lowered.names.endpoint(id))
        .map(|e| e.display.clone())
        .unwrap_or_else(|| ip.to_string())
}

fn dest_port(key: &FlowKey) -> u16 {
    if proto::has_ports(key.proto) {
        key.dport
    } else {
        0
    }
}

/// The flow-log activity of one record: one per reporting end.
pub(crate) fn activities<C: Classify>(rec: &FlowRecord, names: &Names, c: &C) -> Vec<FlowActivity> {
    let k = &rec.key;
    let (src_ip, dst_ip) = (k.src_ip(), k.dst_ip());
    let src = end_meta(names, rec.verdicts.egress.map(|(e, _)| e), src_ip);
    let dst = end_meta(names, rec.verdicts.ingress.map(|(e, _)| e), dst_ip);
    // A connection still in the table when the capture ends counts as completed if
    // TCP had already closed it (both FINs or a RST), as live otherwise.
    let completed = match rec.end {
        Some(EndReason::Closed | EndReason::Timeout | EndReason::Evicted | EndReason::Replaced) => {
            true
        }
        Some(EndReason::Drained) => rec.state.is_closed(),
        None => false,
    };
    let reporters = [
        (Reporter::Src, rec.verdicts.egress),
        (Reporter::Dst, rec.verdicts.ingress),
    ];
    reporters
        .into_iter()
        .filter_map(|(reporter, v)| v.map(|(_, v)| (reporter, v)))
        .map(|(reporter, v)| FlowActivity {
            first_ns: rec.interval_first_ns,
            last_ns: rec.last_ns,
            src: src.clone(),
            dst: dst.clone(),
            proto: k.proto,
            dst_port: dest_port(k),
            reporter,
            action: v.enforced.verdict,
            pending_action: v.pending.verdict,
            enforced: names.hit_strings(c.trace(v.enforced.trace)),
            pending: names.hit_strings(c.trace(v.pending.trace)),
            packets_fwd: rec.packets_fwd,
            bytes_fwd: rec.bytes_fwd,
            packets_rev: rec.packets_rev,
            bytes_rev: rec.bytes_rev,
            started: rec.started,
            completed,
            live: !completed,
        })
        .collect()
}

fn connection_impact<C: Classify>(c: &Connection, lowered: &Lowered, cl: &C) -> ConnectionImpact {
    let k = &c.key;
    let reporters = [
        (Reporter::Src, c.verdicts.egress),
        (Reporter::Dst, c.verdicts.ingress),
    ]
    .into_iter()
    .filter_map(|(reporter, v)| {
        v.map(|(_, v)| ReporterVerdicts {
            reporter,
            enforced: v.enforced.verdict,
            pending: v.pending.verdict,
            pending_trace: lowered.names.hit_strings(cl.trace(v.pending.trace)),
        })
    })
    .collect();
    ConnectionImpact {
        src: end_display(lowered, c.verdicts.egress.map(|(e, _)| e), k.src_ip()),
        dst: end_display(lowered, c.verdicts.ingress.map(|(e, _)| e), k.dst_ip()),
        proto: k.proto,
        dst_port: dest_port(k),
        packets: c.packets,
        bytes: c.bytes,
        reporters,
    }
}

/// `allow`/`deny` for printing.
pub fn verdict_name(v: Verdict) -> VerdictName {
    v.into()
}
