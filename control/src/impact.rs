//! The impact report: per staged policy, which connections it would newly deny or newly
//! allow if it were enforced — the preview a policy author reads before enforcing.
//!
//! Input is one [`ConnectionImpact`] per connection (both reporters' verdicts and
//! pending traces as Calico hit strings). A connection is *newly denied* when its
//! enforced verdict allows and its pending verdict denies, *newly allowed* in the
//! opposite case. The change is attributed, per reporter whose verdict changed, to:
//! 1. the policy of the deciding (last) hit of the pending trace, if it is a staged
//!    kind (`snp`, `sgnp`, `sknp`) — including an end-of-tier hit whose trigger is staged;
//! 2. otherwise, every staged policy that appears earlier in that pending trace (a
//!    staged `pass` sent the flow elsewhere);
//! 3. otherwise, to the pseudo-policy [`UNATTRIBUTED`].
//!
//! Every staged policy that appears in a pending trace is also counted as having
//! *evaluated* the connection, so a staged policy that changes nothing still shows up.
//! Staged policies with `stagedAction: Delete` never reach the data plane (as in
//! Calico), so they have no impact and do not appear.

use std::collections::{BTreeMap, HashMap};

use dataplane::program::Verdict;
use serde::Serialize;

use crate::flowlog::{Reporter, proto_name};

/// Attribution used when no staged policy explains a change.
pub const UNATTRIBUTED: &str = "(no staged policy)";

/// One reporter's part of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReporterVerdicts {
    /// Which end.
    pub reporter: Reporter,
    /// Enforced verdict at this end.
    pub enforced: Verdict,
    /// Pending verdict at this end.
    pub pending: Verdict,
    /// Pending trace as hit strings.
    pub pending_trace: Vec<String>,
}

/// One connection, as the impact report needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionImpact {
    /// Source display name (e.g. `default/frontend-*` or `10.0.0.1`).
    pub src: String,
    /// Destination display name.
    pub dst: String,
    /// IP protocol.
    pub proto: u8,
    /// Destination port.
    pub dst_port: u16,
    /// Packets in both directions.
    pub packets: u64,
    /// Bytes in both directions.
    pub bytes: u64,
    /// Reporters that are known endpoints.
    pub reporters: Vec<ReporterVerdicts>,
}

impl ConnectionImpact {
    fn combined(&self, pick: impl Fn(&ReporterVerdicts) -> Verdict) -> Verdict {
        if self.reporters.iter().any(|r| pick(r) == Verdict::Deny) {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }
}

/// Connections, packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Connections.
    pub connections: u64,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Volume {
    fn add(&mut self, c: &ConnectionImpact) {
        self.connections += 1;
        self.packets += c.packets;
        self.bytes += c.bytes;
    }
}

/// A ranked item (peer pair or port) with its number of affected connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ranked {
    /// What (e.g. `default/frontend-* -> default/database` or `tcp/6379`).
    pub item: String,
    /// Connections.
    pub connections: u64,
}

/// The impact of one staged policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyImpact {
    /// The policy as in hit strings: `<tier>|<kind>:[<ns>/]<name>`.
    pub policy: String,
    /// Connections whose pending trace includes this policy.
    pub evaluated: Volume,
    /// Connections that are allowed now and would be denied.
    pub newly_denied: Volume,
    /// Connections that are denied now and would be allowed.
    pub newly_allowed: Volume,
    /// Most affected source → destination pairs (denied and allowed changes).
    pub top_peers: Vec<Ranked>,
    /// Most affected protocol/port pairs.
    pub top_ports: Vec<Ranked>,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImpactReport {
    /// Connections considered.
    pub connections: u64,
    /// Connections whose verdict would change.
    pub changed: u64,
    /// Per staged policy, sorted by the number of changed connections (descending),
    /// then by name.
    pub policies: Vec<PolicyImpact>,
}

/// A hit string split into its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParsedHit<'a> {
    tier: &'a str,
    kind_and_name: &'a str,
}

fn parse_hit(s: &str) -> Option<ParsedHit<'_>> {
    let mut it = s.split('|');
    let _idx = it.next()?;
    let tier = it.next()?;
    let kind_and_name = it.next()?;
    let _action = it.next()?;
    let _rule_index = it.next()?;
    Some(ParsedHit {
        tier,
        kind_and_name,
    })
}

fn is_staged(h: &ParsedHit<'_>) -> bool {
    let kind = h.kind_and_name.split(':').next().unwrap_or("");
    matches!(kind, "snp" | "sgnp" | "sknp")
}

fn policy_label(h: &ParsedHit<'_>) -> String {
    format!("{}|{}", h.tier, h.kind_and_name)
}

/// The staged policies a reporter's changed pending verdict is attributed to.
fn attribute(trace: &[String]) -> Vec<String> {
    let hits: Vec<ParsedHit<'_>> = trace.iter().filter_map(|s| parse_hit(s)).collect();
    if let Some(last) = hits.last()
        && is_staged(last)
    {
        return vec![policy_label(last)];
    }
    let mut earlier: Vec<String> = hits
        .iter()
        .filter(|h| is_staged(h))
        .map(policy_label)
        .collect();
    earlier.dedup();
    if earlier.is_empty() {
        vec![UNATTRIBUTED.to_string()]
    } else {
        earlier
    }
}

#[derive(Default)]
struct Acc {
    evaluated: Volume,
    denied: Volume,
    allowed: Volume,
    peers: HashMap<String, u64>,
    ports: HashMap<String, u64>,
}

fn top(map: HashMap<String, u64>, n: usize) -> Vec<Ranked> {
    let mut v: Vec<Ranked> = map
        .into_iter()
        .map(|(item, connections)| Ranked { item, connections })
        .collect();
    v.sort_by(|a, b| {
        b.connections
            .cmp(&a.connections)
            .then_with(|| a.item.cmp(&b.item))
    });
    v.truncate(n);
    v
}

/// Builds the report; `top_n` bounds the peer and port lists.
pub fn report<'a>(
    connections: impl IntoIterator<Item = &'a ConnectionImpact>,
    top_n: usize,
) -> ImpactReport {
    let mut accs: BTreeMap<String, Acc> = BTreeMap::new();
    let mut total = 0;
    let mut changed = 0;
    for c in connections {
        total += 1;
        let mut seen: Vec<String> = c
            .reporters
            .iter()
            .flat_map(|r| r.pending_trace.iter())
            .filter_map(|s| parse_hit(s))
            .filter(is_staged)
            .map(|h| policy_label(&h))
            .collect();
        seen.sort();
        seen.dedup();
        for p in &seen {
            accs.entry(p.clone()).or_default().evaluated.add(c);
        }
        let enforced = c.combined(|r| r.enforced);
        let pending = c.combined(|r| r.pending);
        if enforced == pending {
            continue;
        }
        changed += 1;
        let mut blamed: Vec<String> = c
            .reporters
            .iter()
            .filter(|r| r.enforced != r.pending && r.pending == pending)
            .flat_map(|r| attribute(&r.pending_trace))
            .collect();
        blamed.sort();
        blamed.dedup();
        for p in blamed {
            let a = accs.entry(p).or_default();
            if pending == Verdict::Deny {
                a.denied.add(c);
            } else {
                a.allowed.add(c);
            }
            *a.peers
                .entry(format!("{} -> {}", c.src, c.dst))
                .or_default() += 1;
            *a.ports
                .entry(format!("{}/{}", proto_name(c.proto), c.dst_port))
                .or_default() += 1;
        }
    }
    let mut policies: Vec<PolicyImpact> = accs
        .into_iter()
        .map(|(policy, a)| PolicyImpact {
            policy,
            evaluated: a.evaluated,
            newly_denied: a.denied,
            newly_allowed: a.allowed,
            top_peers: top(a.peers, top_n),
            top_ports: top(a.ports, top_n),
        })
        .collect();
    policies.sort_by(|a, b| {
        let ca = a.newly_denied.connections + a.newly_allowed.connections;
        let cb = b.newly_denied.connections + b.newly_allowed.connections;
        cb.cmp(&ca).then_with(|| a.policy.cmp(&b.policy))
    });
    ImpactReport {
        connections: total,
        changed,
        policies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(
        dst_port: u16,
        enforced: Verdict,
        pending: Verdict,
        trace: &[&str],
    ) -> ConnectionImpact {
        ConnectionImpact {
            src: "default/frontend-*".into(),
            dst: "default/database".into(),
            proto: 6,
            dst_port,
            packets: 10,
            bytes: 1000,
            reporters: vec![ReporterVerdicts {
                reporter: Reporter::Dst,
                enforced,
                pending,
                pending_trace: trace.iter().map(|s| s.to_string()).collect(),
            }],
        }
    }

    const STAGED_ALLOW: &str = "0|default|snp:default/default.allow-tcp-6379|allow|0";
    const STAGED_EOT: &str = "0|default|snp:default/default.allow-tcp-6379|deny|-1";

    #[test]
    fn staged_end_of_tier_deny_is_newly_denied_by_that_policy() {
        let cs = [
            conn(6379, Verdict::Allow, Verdict::Allow, &[STAGED_ALLOW]),
            conn(5432, Verdict::Allow, Verdict::Deny, &[STAGED_EOT]),
            conn(5432, Verdict::Allow, Verdict::Deny, &[STAGED_EOT]),
        ];
        let r = report(&cs, 5);
        assert_eq!((r.connections, r.changed), (3, 2));
        assert_eq!(r.policies.len(), 1);
        let p = &r.policies[0];
        assert_eq!(p.policy, "default|snp:default/default.allow-tcp-6379");
        assert_eq!(p.evaluated.connections, 3);
        assert_eq!(
            p.newly_denied,
            Volume {
                connections: 2,
                packets: 20,
                bytes: 2000
            }
        );
        assert_eq!(p.newly_allowed.connections, 0);
        assert_eq!(
            p.top_ports,
            vec![Ranked {
                item: "tcp/5432".into(),
                connections: 2
            }]
        );
        assert_eq!(
            p.top_peers[0].item,
            "default/frontend-* -> default/database"
        );
    }

    #[test]
    fn staged_allow_over_deny_is_newly_allowed() {
        let cs = [conn(6379, Verdict::Deny, Verdict::Allow, &[STAGED_ALLOW])];
        let r = report(&cs, 5);
        assert_eq!(r.policies[0].newly_allowed.connections, 1);
        assert_eq!(r.policies[0].newly_denied.connections, 0);
    }

    #[test]
    fn staged_pass_is_blamed_when_an_enforced_policy_decides() {
        let trace = [
            "0|security|sgnp:pass-web|pass|0",
            "1|default|np:default/deny-web|deny|0",
        ];
        let r = report(&[conn(80, Verdict::Allow, Verdict::Deny, &trace)], 5);
        assert_eq!(r.policies.len(), 1);
        assert_eq!(r.policies[0].policy, "security|sgnp:pass-web");
        assert_eq!(r.policies[0].newly_denied.connections, 1);
    }

    #[test]
    fn unexplained_change_is_reported_unattributed() {
        let trace = ["0|default|np:default/deny-web|deny|0"];
        let r = report(&[conn(80, Verdict::Allow, Verdict::Deny, &trace)], 5);
        assert_eq!(r.policies[0].policy, UNATTRIBUTED);
    }

    #[test]
    fn unchanged_reporter_is_not_blamed() {
        // The source end allows in both views; only the destination end changes.
        let mut c = conn(5432, Verdict::Allow, Verdict::Deny, &[STAGED_EOT]);
        c.reporters.push(ReporterVerdicts {
            reporter: Reporter::Src,
            enforced: Verdict::Allow,
            pending: Verdict::Allow,
            pending_trace: vec!["0|default|sgnp:egress-all|allow|0".into()],
        });
        let r = report(&[c], 5);
        let egress = r
            .policies
            .iter()
            .find(|p| p.policy == "default|sgnp:egress-all")
            .unwrap();
        assert_eq!(egress.evaluated.connections, 1);
        assert_eq!(egress.newly_denied.connections, 0);
        assert_eq!(
            r.policies[0].policy,
            "default|snp:default/default.allow-tcp-6379"
        );
    }
}
