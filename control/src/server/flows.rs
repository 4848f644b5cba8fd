//! The live flow records of `flows` and `impact --live`: each flow record a worker
//! exports (per connection and export interval, and when a connection ends), named
//! with the policy generation it was classified in, kept in a bounded ring.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use dataplane::flow::{EndReason, FlowRecord};
use dataplane::program::{Classify, Verdict, proto};
use serde::Serialize;

use super::proto::FlowFilter;
use crate::flowlog::Reporter;
use crate::flowlog::proto_name;
use crate::impact::{self, ConnectionImpact, ImpactReport, ReporterVerdicts};
use crate::lower::Names;

/// Records kept for `flows` (the oldest are dropped first).
pub const RING_CAPACITY: usize = 100_000;

/// One end's verdicts in a [`FlowEntry`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndVerdicts {
    /// `src` (the source endpoint's egress) or `dst` (the destination's ingress).
    pub reporter: Reporter,
    /// Enforced action at this end.
    pub action: String,
    /// Pending action at this end.
    pub pending_action: String,
    /// Enforced trace (Calico hit strings).
    pub enforced: Vec<String>,
    /// Pending trace (Calico hit strings).
    pub pending: Vec<String>,
}

/// One live flow record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowEntry {
    /// Sequence number (1, 2, ... in arrival order).
    pub seq: u64,
    /// Last packet (ns since the UNIX epoch).
    pub last_ns: u64,
    /// Initiator address.
    pub src_ip: IpAddr,
    /// Initiator port (0 without ports).
    pub src_port: u16,
    /// Responder address.
    pub dst_ip: IpAddr,
    /// Responder port (0 without ports).
    pub dst_port: u16,
    /// Protocol name.
    pub proto: String,
    /// Initiator's name (aggregated, as flow logs write it).
    pub src_name: String,
    /// Initiator's namespace or `-`.
    pub src_namespace: String,
    /// Responder's name.
    pub dst_name: String,
    /// Responder's namespace or `-`.
    pub dst_namespace: String,
    /// The enforced action applied to the connection (`allow`/`deny`): an established
    /// connection keeps the verdict it was decided with.
    pub action: String,
    /// The pending action under the generation of the record.
    pub pending_action: String,
    /// Policy generation of the traces.
    pub generation: u32,
    /// Generation the applied action was decided in.
    pub applied_generation: u32,
    /// Per end with policy.
    pub ends: Vec<EndVerdicts>,
    /// Packets from the initiator in the record's interval.
    pub packets_fwd: u64,
    /// Bytes from the initiator.
    pub bytes_fwd: u64,
    /// Packets from the responder.
    pub packets_rev: u64,
    /// Bytes from the responder.
    pub bytes_rev: u64,
    /// `closed`, `timeout`, `evicted`, `replaced`, `drained` when the connection ended
    /// with this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

fn name(v: Verdict) -> String {
    match v {
        Verdict::Allow => "allow".into(),
        Verdict::Deny => "deny".into(),
    }
}

/// Renders a worker's record with the generation it was classified in (`None` when
/// that generation is no longer held: ends and traces are then left empty).
pub fn render<C: Classify>(
    seq: u64,
    rec: &FlowRecord,
    generation: Option<(&Names, &C)>,
) -> FlowEntry {
    let k = &rec.key;
    let (src_ip, dst_ip) = (k.src_ip(), k.dst_ip());
    let ports = proto::has_ports(k.proto);
    let (src, dst) = match generation {
        Some((l, _)) => (
            rec.verdicts
                .egress
                .and_then(|(e, _)| l.endpoint(e))
                .map(|e| e.meta.clone())
                .unwrap_or_else(|| l.peer(src_ip)),
            rec.verdicts
                .ingress
                .and_then(|(e, _)| l.endpoint(e))
                .map(|e| e.meta.clone())
                .unwrap_or_else(|| l.peer(dst_ip)),
        ),
        None => (
            crate::cluster::EndpointMeta::network(src_ip),
            crate::cluster::EndpointMeta::network(dst_ip),
        ),
    };
    let ends = match generation {
        Some((l, c)) => [
            (Reporter::Src, rec.verdicts.egress),
            (Reporter::Dst, rec.verdicts.ingress),
        ]
        .into_iter()
        .filter_map(|(reporter, v)| {
            v.map(|(_, v)| EndVerdicts {
                reporter,
                action: name(v.enforced.verdict),
                pending_action: name(v.pending.verdict),
                enforced: l.hit_strings(c.trace(v.enforced.trace)),
                pending: l.hit_strings(c.trace(v.pending.trace)),
            })
        })
        .collect(),
        None => Vec::new(),
    };
    FlowEntry {
        seq,
        last_ns: rec.last_ns,
        src_ip,
        src_port: if ports { k.sport } else { 0 },
        dst_ip,
        dst_port: if ports { k.dport } else { 0 },
        proto: proto_name(k.proto),
        src_name: src.name,
        src_namespace: src.namespace,
        dst_name: dst.name,
        dst_namespace: dst.namespace,
        action: name(rec.applied),
        pending_action: name(rec.verdicts.pending()),
        generation: rec.generation,
        applied_generation: rec.applied_generation,
        ends,
        packets_fwd: rec.packets_fwd,
        bytes_fwd: rec.bytes_fwd,
        packets_rev: rec.packets_rev,
        bytes_rev: rec.bytes_rev,
        end: rec.end.map(|e| {
            match e {
                EndReason::Closed => "closed",
                EndReason::Timeout => "timeout",
                EndReason::Evicted => "evicted",
                EndReason::Replaced => "replaced",
                EndReason::Drained => "drained",
            }
            .to_string()
        }),
    }
}

impl FlowFilter {
    /// The filter with its values parsed once, for matching many records: what
    /// `flows` uses. [`FlowFilter::matches`] is its obviously-correct twin.
    pub fn matcher(&self) -> Matcher<'_> {
        Matcher {
            f: self,
            ip: self.ip.as_deref().map(|s| s.parse::<IpAddr>().ok()),
            policy: self
                .policy
                .as_deref()
                .map(|p| (p, p.contains('|') || p.contains(':'))),
        }
    }

    /// Whether `e` passes every given condition (the reference for
    /// [`FlowFilter::matcher`]).
    pub fn matches(&self, e: &FlowEntry) -> bool {
        if let Some(a) = &self.action
            && !a.eq_ignore_ascii_case(&e.action)
        {
            return false;
        }
        if let Some(a) = &self.pending_action
            && !a.eq_ignore_ascii_case(&e.pending_action)
        {
            return false;
        }
        if let Some(ns) = &self.namespace
            && *ns != e.src_namespace
            && *ns != e.dst_namespace
        {
            return false;
        }
        if let Some(ip) = &self.ip {
            let ip = ip.parse::<IpAddr>().ok();
            if ip != Some(e.src_ip) && ip != Some(e.dst_ip) {
                return false;
            }
        }
        if let Some(p) = self.port
            && p != e.src_port
            && p != e.dst_port
        {
            return false;
        }
        if let Some(p) = &self.policy {
            let named = e.ends.iter().any(|end| {
                end.enforced
                    .iter()
                    .chain(&end.pending)
                    .any(|h| hit_names(h, p))
            });
            if !named {
                return false;
            }
        }
        true
    }

    /// Checks the values that have a fixed vocabulary.
    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("action", &self.action),
            ("pending_action", &self.pending_action),
        ] {
            if let Some(v) = v
                && !v.eq_ignore_ascii_case("allow")
                && !v.eq_ignore_ascii_case("deny")
            {
                return Err(format!("{field} {v:?}: expected allow or deny"));
            }
        }
        if let Some(ip) = &self.ip
            && ip.parse::<IpAddr>().is_err()
        {
            return Err(format!("ip {ip:?} is not an IP address"));
        }
        Ok(())
    }
}

/// A [`FlowFilter`] ready to match many records without allocating.
#[derive(Debug)]
pub struct Matcher<'a> {
    f: &'a FlowFilter,
    /// The parsed `ip` (`Some(None)`: given but not an address, matches nothing).
    ip: Option<Option<IpAddr>>,
    /// `policy`, and whether it is matched as a substring of the hit string.
    policy: Option<(&'a str, bool)>,
}

impl Matcher<'_> {
    /// Whether `e` passes every given condition (as [`FlowFilter::matches`]).
    pub fn matches(&self, e: &FlowEntry) -> bool {
        let f = self.f;
        if let Some(a) = &f.action
            && !a.eq_ignore_ascii_case(&e.action)
        {
            return false;
        }
        if let Some(a) = &f.pending_action
            && !a.eq_ignore_ascii_case(&e.pending_action)
        {
            return false;
        }
        if let Some(p) = f.port
            && p != e.src_port
            && p != e.dst_port
        {
            return false;
        }
        if let Some(ip) = self.ip
            && ip != Some(e.src_ip)
            && ip != Some(e.dst_ip)
        {
            return false;
        }
        if let Some(ns) = &f.namespace
            && *ns != e.src_namespace
            && *ns != e.dst_namespace
        {
            return false;
        }
        if let Some((p, raw)) = self.policy {
            let named = e.ends.iter().any(|end| {
                // A hit naming `p` contains it: most hits are rejected by one
                // substring search.
                end.enforced
                    .iter()
                    .chain(&end.pending)
                    .any(|h| h.contains(p) && (raw || hit_names_fast(h, p)))
            });
            if !named {
                return false;
            }
        }
        true
    }
}

/// [`hit_names`] for a `p` without `|` or `:`, without allocating.
fn hit_names_fast(hit: &str, p: &str) -> bool {
    hit.split('|').any(|part| {
        let name = part.split_once(':').map_or(part, |(_, n)| n);
        name == p
            || name
                .strip_suffix(p)
                .is_some_and(|head| head.ends_with('/') || head.ends_with('.'))
    })
}

/// Whether the hit string `hit` (`index|tier|kind:ns/name|action|rule`) names policy
/// `p`: its policy part, without the kind prefix, is `p`, or ends with `/p` or `.p`;
/// when `p` holds a `|` or a `:`, whether `hit` contains it.
fn hit_names(hit: &str, p: &str) -> bool {
    if p.contains('|') || p.contains(':') {
        return hit.contains(p);
    }
    hit.split('|').any(|part| {
        let name = part.split_once(':').map_or(part, |(_, n)| n);
        name == p || name.ends_with(&format!("/{p}")) || name.ends_with(&format!(".{p}"))
    })
}

/// The bounded ring of live flow records.
#[derive(Debug, Default)]
pub struct FlowRing {
    entries: VecDeque<std::sync::Arc<FlowEntry>>,
    next_seq: u64,
}

impl FlowRing {
    /// The sequence number the next record gets.
    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Adds a record, dropping the oldest beyond [`RING_CAPACITY`].
    pub fn push(&mut self, e: std::sync::Arc<FlowEntry>) {
        if self.entries.len() == RING_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(e);
    }

    /// The newest `limit` records matching `f`, oldest first.
    pub fn select(&self, f: &FlowFilter, limit: usize) -> Vec<std::sync::Arc<FlowEntry>> {
        let m = f.matcher();
        let mut v: Vec<_> = self
            .entries
            .iter()
            .rev()
            .filter(|e| m.matches(e))
            .take(limit)
            .cloned()
            .collect();
        v.reverse();
        v
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The impact report over the held records: one connection per 5-tuple (its
    /// latest verdicts, its packets summed over its records).
    pub fn impact(&self, top: usize) -> ImpactReport {
        let mut conns: HashMap<(IpAddr, u16, IpAddr, u16, String), ConnectionImpact> =
            HashMap::new();
        for e in &self.entries {
            let key = (e.src_ip, e.src_port, e.dst_ip, e.dst_port, e.proto.clone());
            let packets = e.packets_fwd + e.packets_rev;
            let bytes = e.bytes_fwd + e.bytes_rev;
            let reporters = e
                .ends
                .iter()
                .map(|end| ReporterVerdicts {
                    reporter: end.reporter,
                    enforced: verdict(&end.action),
                    pending: verdict(&end.pending_action),
                    pending_trace: end.pending.clone(),
                })
                .collect();
            let c = conns.entry(key).or_insert_with(|| ConnectionImpact {
                src: display(&e.src_namespace, &e.src_name, e.src_ip),
                dst: display(&e.dst_namespace, &e.dst_name, e.dst_ip),
                proto: proto_number(&e.proto),
                dst_port: e.dst_port,
                packets: 0,
                bytes: 0,
                reporters: Vec::new(),
            });
            c.packets += packets;
            c.bytes += bytes;
            if !e.ends.is_empty() {
                c.reporters = reporters;
            }
        }
        let mut v: Vec<ConnectionImpact> = conns.into_values().collect();
        v.sort_by(|a, b| (&a.src, &a.dst, a.dst_port).cmp(&(&b.src, &b.dst, b.dst_port)));
        impact::report(&v, top)
    }
}

fn verdict(s: &str) -> Verdict {
    if s == "deny" {
        Verdict::Deny
    } else {
        Verdict::Allow
    }
}

fn display(ns: &str, name: &str, ip: IpAddr) -> String {
    match name {
        "pub" | "pvt" => ip.to_string(),
        _ if ns == "-" => name.to_string(),
        _ => format!("{ns}/{name}"),
    }
}

fn proto_number(p: &str) -> u8 {
    match p {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "icmpv6" => 58,
        "sctp" => 132,
        other => other.parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_filter_matches_names_and_hit_strings() {
        let h = "0|default|np:wire/server-ingress|allow|0";
        assert!(hit_names(h, "server-ingress"));
        assert!(hit_names(h, "wire/server-ingress"));
        assert!(hit_names(h, "np:wire/server-ingress"));
        assert!(hit_names(h, "default|np:wire/server-ingress"));
        assert!(!hit_names(h, "server"));
        assert!(hit_names("0|sec|gnp:sec.deny-all|deny|-1", "deny-all"));
    }

    const HITS: [&str; 5] = [
        "0|default|np:wire/server-ingress|allow|0",
        "1|sec|gnp:sec.deny-all|deny|-1",
        "0|default|gnp:x|allow|2",
        "2|default|snp:wire/staged.p|deny|0",
        "0|default|knp:wire/knp.default.web|allow|1",
    ];
    const IPS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "fd00::1", "::ffff:10.0.0.1"];

    fn entry() -> impl proptest::strategy::Strategy<Value = FlowEntry> {
        use proptest::prelude::*;
        let end = (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(0..HITS.len(), 0..3),
            proptest::collection::vec(0..HITS.len(), 0..3),
        )
            .prop_map(|(a, p, enf, pen)| EndVerdicts {
                reporter: if a { Reporter::Src } else { Reporter::Dst },
                action: if a { "allow" } else { "deny" }.into(),
                pending_action: if p { "allow" } else { "deny" }.into(),
                enforced: enf.iter().map(|i| HITS[*i].to_string()).collect(),
                pending: pen.iter().map(|i| HITS[*i].to_string()).collect(),
            });
        (
            (0..IPS.len(), 0..IPS.len(), 0u16..4, 0u16..4),
            (0..3usize, 0..3usize, any::<bool>(), any::<bool>()),
            proptest::collection::vec(end, 0..3),
        )
            .prop_map(|((si, di, sp, dp), (sn, dn, a, p), ends)| {
                let ns = ["a", "b", "-"];
                FlowEntry {
                    seq: 1,
                    last_ns: 0,
                    src_ip: IPS[si].parse().unwrap(),
                    src_port: sp,
                    dst_ip: IPS[di].parse().unwrap(),
                    dst_port: dp,
                    proto: "udp".into(),
                    src_name: "s".into(),
                    src_namespace: ns[sn].into(),
                    dst_name: "d".into(),
                    dst_namespace: ns[dn].into(),
                    action: if a { "allow" } else { "Deny" }.into(),
                    pending_action: if p { "allow" } else { "deny" }.into(),
                    generation: 1,
                    applied_generation: 1,
                    ends,
                    packets_fwd: 0,
                    bytes_fwd: 0,
                    packets_rev: 0,
                    bytes_rev: 0,
                    end: None,
                }
            })
    }

    fn filter() -> impl proptest::strategy::Strategy<Value = FlowFilter> {
        use proptest::prelude::*;
        let pick = |v: &'static [&'static str]| {
            proptest::option::of(proptest::sample::select(v)).prop_map(|o| o.map(String::from))
        };
        (
            pick(&["allow", "deny", "DENY"]),
            pick(&["allow", "deny"]),
            pick(&[
                "server-ingress",
                "deny-all",
                "x",
                "p",
                "wire/server-ingress",
                "sec|gnp",
                "np:wire/server-ingress",
                "ingress",
                "staged.p",
                "web",
                "default.web",
                "all",
            ]),
            pick(&["a", "b", "-", "c"]),
            pick(&[
                "10.0.0.1",
                "10.0.0.2",
                "fd00::1",
                "FD00::1",
                "fd00:0::1",
                "::FFFF:10.0.0.1",
                "nope",
            ]),
            proptest::option::of(0u16..4),
        )
            .prop_map(
                |(action, pending_action, policy, namespace, ip, port)| FlowFilter {
                    action,
                    pending_action,
                    policy,
                    namespace,
                    ip,
                    port,
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn the_matcher_agrees_with_the_reference(f in filter(), e in entry()) {
            proptest::prop_assert_eq!(f.matcher().matches(&e), f.matches(&e));
        }
    }
}
