//! Flow logs: per-interval aggregation of flow activity, keyed like Calico's flow logs,
//! with `policies.enforced` and `policies.pending` as Calico hit strings.
//!
//! This module owns the record format (JSON lines, one [`FlowLog`] per line) and the
//! aggregation rules. It knows nothing of packets: callers hand it [`FlowActivity`]
//! records (one per connection, reporter and interval) whose endpoints and traces are
//! already resolved to names.
//!
//! Aggregation follows felix/Goldmane at their default level (CALICO_SEMANTICS §6):
//! within one interval, activity is merged when source and destination (aggregated
//! name, namespace, type), destination port, protocol, reporter, action and the policy
//! trace (enforced *and* pending, as Goldmane's `FlowKey.policies`) are equal. Source
//! ports and IPs are dropped. Labels are the intersection over the merged endpoints.
//!
//! Packet/byte directions are relative to the reporting endpoint, as felix reports
//! them: for the source reporter, `*_out` counts packets the source sent (forward
//! direction) and `*_in` the replies; for the destination reporter it is the reverse.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use serde::Serialize;

pub use crate::cluster::{EndpointMeta, EndpointType, Reporter, Verdict, VerdictName};

/// One connection's activity seen by one reporter during one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowActivity {
    /// Time of the first packet in this interval (ns since the UNIX epoch).
    pub first_ns: u64,
    /// Time of the last packet in this interval (ns since the UNIX epoch).
    pub last_ns: u64,
    /// Source (initiator) end.
    pub src: EndpointMeta,
    /// Destination end.
    pub dst: EndpointMeta,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
    /// Which end's verdict this is.
    pub reporter: Reporter,
    /// Enforced verdict.
    pub action: Verdict,
    /// Pending verdict (staged policies as if enforced).
    pub pending_action: Verdict,
    /// Enforced trace as hit strings.
    pub enforced: Vec<String>,
    /// Pending trace as hit strings.
    pub pending: Vec<String>,
    /// Packets from source to destination.
    pub packets_fwd: u64,
    /// Bytes from source to destination.
    pub bytes_fwd: u64,
    /// Packets from destination to source.
    pub packets_rev: u64,
    /// Bytes from destination to source.
    pub bytes_rev: u64,
    /// The connection started in this interval.
    pub started: bool,
    /// The connection completed (closed or timed out) in this interval.
    pub completed: bool,
    /// The connection was still open at the end of this interval.
    pub live: bool,
}

/// The policy trace of a flow log record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PolicyTrace {
    /// What the data plane did (staged policies ignored).
    pub enforced: Vec<String>,
    /// What would happen if the staged policies were enforced.
    pub pending: Vec<String>,
}

/// One aggregated flow log record: one JSON line of the flow log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowLog {
    /// Interval start (s since the UNIX epoch).
    pub start_time: u64,
    /// Interval end (s since the UNIX epoch).
    pub end_time: u64,
    /// Source aggregated name.
    pub source_name: String,
    /// Source namespace or `-`.
    pub source_namespace: String,
    /// Source type.
    pub source_type: EndpointType,
    /// Labels common to every merged source.
    pub source_labels: Vec<String>,
    /// Destination aggregated name.
    pub dest_name: String,
    /// Destination namespace or `-`.
    pub dest_namespace: String,
    /// Destination type.
    pub dest_type: EndpointType,
    /// Labels common to every merged destination.
    pub dest_labels: Vec<String>,
    /// Destination port.
    pub dest_port: u16,
    /// Protocol name (`tcp`, `udp`, `icmp`, …) or number.
    pub proto: String,
    /// Reporter.
    pub reporter: Reporter,
    /// Enforced action.
    pub action: VerdictName,
    /// Pending action.
    pub pending_action: VerdictName,
    /// Policy traces.
    pub policies: PolicyTrace,
    /// Packets into the reporting endpoint.
    pub packets_in: u64,
    /// Packets out of the reporting endpoint.
    pub packets_out: u64,
    /// Bytes into the reporting endpoint.
    pub bytes_in: u64,
    /// Bytes out of the reporting endpoint.
    pub bytes_out: u64,
    /// Connections started in the interval.
    pub num_connections_started: u64,
    /// Connections completed in the interval.
    pub num_connections_completed: u64,
    /// Connections still open at the end of the interval.
    pub num_connections_live: u64,
}

/// The lowercase name of an IP protocol as flow logs write it.
pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AggKey {
    interval_start: u64,
    src: (EndpointType, String, String),
    dst: (EndpointType, String, String),
    dst_port: u16,
    proto: u8,
    reporter: Reporter,
    action: VerdictName,
    pending_action: VerdictName,
    policies: PolicyTrace,
}

#[derive(Clone, Debug, Default)]
struct AggStats {
    src_labels: Option<BTreeSet<String>>,
    dst_labels: Option<BTreeSet<String>>,
    packets_in: u64,
    packets_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    started: u64,
    completed: u64,
    live: u64,
}

fn intersect(acc: &mut Option<BTreeSet<String>>, labels: &[String]) {
    match acc {
        None => *acc = Some(labels.iter().cloned().collect()),
        Some(set) => set.retain(|l| labels.contains(l)),
    }
}

/// Aggregates [`FlowActivity`] into per-interval [`FlowLog`] records.
#[derive(Debug)]
pub struct Aggregator {
    interval_ns: u64,
    buckets: BTreeMap<AggKey, AggStats>,
}

/// The default aggregation interval, as felix's (15 s).
pub const DEFAULT_INTERVAL_SECS: u64 = 15;

/// The longest aggregation interval an [`Aggregator`] takes (s): its length in
/// nanoseconds must fit in a `u64`.
pub const MAX_INTERVAL_SECS: u64 = u64::MAX / 1_000_000_000;

/// An aggregation interval [`Aggregator::new`] refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("flow-log interval of {0} s: expected 1 to {MAX_INTERVAL_SECS} s")]
pub struct IntervalError(pub u64);

impl Aggregator {
    /// An aggregator with intervals of `interval_secs` seconds, from 1 to
    /// [`MAX_INTERVAL_SECS`].
    pub fn new(interval_secs: u64) -> Result<Self, IntervalError> {
        let interval_ns = interval_secs
            .checked_mul(1_000_000_000)
            .filter(|&ns| ns > 0)
            .ok_or(IntervalError(interval_secs))?;
        Ok(Aggregator {
            interval_ns,
            buckets: BTreeMap::new(),
        })
    }

    /// Adds one record. Its interval is the one containing `last_ns`.
    pub fn add(&mut self, a: &FlowActivity) {
        let interval_start = a.last_ns / self.interval_ns * self.interval_ns;
        let key = AggKey {
            interval_start,
            src: (a.src.kind, a.src.name.clone(), a.src.namespace.clone()),
            dst: (a.dst.kind, a.dst.name.clone(), a.dst.namespace.clone()),
            dst_port: a.dst_port,
            proto: a.proto,
            reporter: a.reporter,
            action: a.action.into(),
            pending_action: a.pending_action.into(),
            policies: PolicyTrace {
                enforced: a.enforced.clone(),
                pending: a.pending.clone(),
            },
        };
        let s = self.buckets.entry(key).or_default();
        intersect(&mut s.src_labels, &a.src.labels);
        intersect(&mut s.dst_labels, &a.dst.labels);
        let (pin, bin, pout, bout) = match a.reporter {
            Reporter::Src => (a.packets_rev, a.bytes_rev, a.packets_fwd, a.bytes_fwd),
            Reporter::Dst => (a.packets_fwd, a.bytes_fwd, a.packets_rev, a.bytes_rev),
        };
        s.packets_in += pin;
        s.bytes_in += bin;
        s.packets_out += pout;
        s.bytes_out += bout;
        s.started += u64::from(a.started);
        s.completed += u64::from(a.completed);
        s.live += u64::from(a.live);
    }

    /// Number of aggregated records held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Removes and returns every record, ordered by interval start and then key.
    pub fn drain(&mut self) -> Vec<FlowLog> {
        let all = std::mem::take(&mut self.buckets);
        self.render(all)
    }

    /// Removes and returns the records of intervals that ended at or before `now_ns`
    /// (a live run writes each interval once it is over); later ones stay.
    pub fn drain_ended(&mut self, now_ns: u64) -> Vec<FlowLog> {
        let iv = self.interval_ns;
        let (done, keep): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.buckets)
            .into_iter()
            .partition(|(k, _)| k.interval_start.saturating_add(iv) <= now_ns);
        self.buckets = keep;
        self.render(done)
    }

    fn render(&self, buckets: BTreeMap<AggKey, AggStats>) -> Vec<FlowLog> {
        let interval_s = self.interval_ns / 1_000_000_000;
        buckets
            .into_iter()
            .map(|(k, s)| FlowLog {
                start_time: k.interval_start / 1_000_000_000,
                end_time: k.interval_start / 1_000_000_000 + interval_s,
                source_name: k.src.1,
                source_namespace: k.src.2,
                source_type: k.src.0,
                source_labels: s.src_labels.unwrap_or_default().into_iter().collect(),
                dest_name: k.dst.1,
                dest_namespace: k.dst.2,
                dest_type: k.dst.0,
                dest_labels: s.dst_labels.unwrap_or_default().into_iter().collect(),
                dest_port: k.dst_port,
                proto: proto_name(k.proto),
                reporter: k.reporter,
                action: k.action,
                pending_action: k.pending_action,
                policies: k.policies,
                packets_in: s.packets_in,
                packets_out: s.packets_out,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                num_connections_started: s.started,
                num_connections_completed: s.completed,
                num_connections_live: s.live,
            })
            .collect()
    }
}

/// Writes records as JSON lines.
pub fn write_jsonl<W: Write>(mut w: W, logs: &[FlowLog]) -> io::Result<()> {
    for l in logs {
        serde_json::to_writer(&mut w, l).map_err(io::Error::other)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_checked_not_multiplied_blindly() {
        assert_eq!(Aggregator::new(0).unwrap_err(), IntervalError(0));
        assert!(Aggregator::new(MAX_INTERVAL_SECS).is_ok());
        let e = Aggregator::new(MAX_INTERVAL_SECS + 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "flow-log interval of {} s: expected 1 to {MAX_INTERVAL_SECS} s",
                MAX_INTERVAL_SECS + 1
            )
        );
        assert!(Aggregator::new(u64::MAX).is_err());
        // The longest interval still aggregates and renders.
        let mut agg = Aggregator::new(MAX_INTERVAL_SECS).unwrap();
        agg.add(&activity(20, Reporter::Src));
        let logs = agg.drain();
        assert_eq!(
            (logs[0].start_time, logs[0].end_time),
            (0, MAX_INTERVAL_SECS)
        );
    }

    #[test]
    fn drain_ended_keeps_open_intervals() {
        let mut agg = Aggregator::new(15).unwrap();
        agg.add(&activity(20, Reporter::Src));
        agg.add(&activity(31, Reporter::Src));
        // Interval [15, 30) ended at 30 s; [30, 45) is still open at 40 s.
        let done = agg.drain_ended(40_000_000_000);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].start_time, done[0].end_time), (15, 30));
        assert_eq!(agg.len(), 1);
        assert!(agg.drain_ended(44_999_999_999).is_empty());
        assert_eq!(agg.drain_ended(45_000_000_000).len(), 1);
        assert!(agg.is_empty());
    }

    fn wep(name: &str, ns: &str, labels: &[&str]) -> EndpointMeta {
        EndpointMeta {
            kind: EndpointType::Workload,
            name: name.into(),
            namespace: ns.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn activity(last_s: u64, reporter: Reporter) -> FlowActivity {
        FlowActivity {
            first_ns: last_s * 1_000_000_000,
            last_ns: last_s * 1_000_000_000,
            src: wep("frontend-*", "default", &["app=web", "role=frontend"]),
            dst: wep("database", "default", &["role=database"]),
            proto: 6,
            dst_port: 6379,
            reporter,
            action: Verdict::Allow,
            pending_action: Verdict::Allow,
            enforced: vec!["0|default|np:default/allow-all|allow|0".into()],
            pending: vec!["0|default|snp:default/default.allow-tcp-6379|allow|0".into()],
            packets_fwd: 3,
            bytes_fwd: 180,
            packets_rev: 2,
            bytes_rev: 120,
            started: true,
            completed: false,
            live: true,
        }
    }

    #[test]
    fn merges_connections_in_one_interval_and_splits_across_intervals() {
        let mut agg = Aggregator::new(15).unwrap();
        agg.add(&activity(30, Reporter::Dst));
        let mut second = activity(44, Reporter::Dst);
        second.src.labels = vec!["role=frontend".into()];
        agg.add(&second);
        agg.add(&activity(45, Reporter::Dst));
        let logs = agg.drain();
        assert_eq!(logs.len(), 2);
        assert_eq!((logs[0].start_time, logs[0].end_time), (30, 45));
        assert_eq!(logs[0].num_connections_started, 2);
        assert_eq!(
            logs[0].packets_in, 6,
            "dst reporter: forward packets are inbound"
        );
        assert_eq!(logs[0].bytes_out, 240);
        assert_eq!(logs[0].source_labels, vec!["role=frontend".to_string()]);
        assert_eq!(logs[1].start_time, 45);
        assert!(agg.is_empty());
    }

    #[test]
    fn src_reporter_counts_forward_packets_as_outbound() {
        let mut agg = Aggregator::new(15).unwrap();
        agg.add(&activity(1, Reporter::Src));
        let l = &agg.drain()[0];
        assert_eq!((l.packets_out, l.packets_in), (3, 2));
        assert_eq!((l.bytes_out, l.bytes_in), (180, 120));
    }

    #[test]
    fn different_pending_traces_are_separate_records() {
        let mut agg = Aggregator::new(15).unwrap();
        agg.add(&activity(1, Reporter::Dst));
        let mut other = activity(2, Reporter::Dst);
        other.pending_action = Verdict::Deny;
        other.pending = vec!["0|default|snp:default/default.allow-tcp-6379|deny|-1".into()];
        agg.add(&other);
        assert_eq!(agg.len(), 2);
    }

    #[test]
    fn json_line_has_calico_field_names() {
        let mut agg = Aggregator::new(15).unwrap();
        agg.add(&activity(1, Reporter::Dst));
        let mut out = Vec::new();
        write_jsonl(&mut out, &agg.drain()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["reporter"], "dst");
        assert_eq!(v["action"], "allow");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["source_type"], "wep");
        assert_eq!(
            v["policies"]["pending"][0],
            "0|default|snp:default/default.allow-tcp-6379|allow|0"
        );
        assert_eq!(v["dest_port"], 6379);
    }

    #[test]
    fn network_ends_are_pub_or_pvt() {
        for (ip, name) in [
            ("10.1.2.3", "pvt"),
            ("172.16.0.1", "pvt"),
            ("172.32.0.1", "pub"),
            ("192.168.9.9", "pvt"),
            ("8.8.8.8", "pub"),
            ("fd00::1", "pub"),
        ] {
            let m = EndpointMeta::network(ip.parse().unwrap());
            assert_eq!(m.name, name, "{ip}");
            assert_eq!(m.namespace, "-");
        }
    }
}
