//! The reference evaluator: for a flow and a policy store, what Calico enforces now and
//! what it would do if the staged policies were enforced — per reporter, as an action
//! and the ordered policy hits in Calico's hit-string form.
//!
//! It is written to be obviously correct, not fast: every step is a direct
//! transcription of CALICO_SEMANTICS (§ numbers in comments), nothing is indexed, and
//! every faster path of tiergate (the classifier, the flow cache) is tested against it.
//! Its two views are the semantic contract of `dataplane::program` (module doc there),
//! which was checked against Calico's source: [`View::Enforced`] is what felix's data
//! plane does and reports in `policies.enforced`, [`View::Pending`] is felix's
//! userspace re-evaluation with staged policies promoted (`policies.pending`).
//!
//! # Which endpoints a flow involves
//! - The **source reporter** is the endpoint owning the source address (its egress
//!   policy), the **destination reporter** the endpoint owning the destination address
//!   (its ingress policy). Endpoints are workload endpoints (`ipNetworks`) and host
//!   endpoints (`expectedIPs`); when several own an address, the first workload
//!   endpoint in (namespace, name) order wins, then the first host endpoint by name.
//! - Every endpoint is treated as local, so both ends of a pod-to-pod flow are
//!   evaluated (in Calico each on its own node).
//! - An end that is no endpoint (a network set member, any other address) has no
//!   reporter: no policy applies there. With neither end known, the flow is allowed in
//!   both views and the reporter list is empty.
//! - Network sets are never endpoints; they only make addresses selectable by rule
//!   selectors.
//!
//! # Deviations from Calico (listed in the README)
//! - Host endpoints: only traffic to or from the host endpoint's own addresses is
//!   evaluated, with its normal (filter-table) policies. Forwarded traffic
//!   (`applyOnForward`), `preDNAT` and `doNotTrack` policies (felix's raw/mangle
//!   chains) and failsafe ports are not modelled: `preDNAT`/`doNotTrack` policies are
//!   ignored, `applyOnForward` policies apply like any other.
//! - Felix computes the pending trace only for local workload endpoints; tiergate also
//!   computes it for host endpoints, the same way.
//! - Kubernetes Services are not modelled: a rule with a `services` criterion never
//!   matches. `http` criteria (L7) are ignored, as felix's data plane ignores them.
//! - A policy in a tier that does not exist is evaluated after every existing tier with
//!   an end-of-tier deny in both views (felix's data plane does this; its pending
//!   checker fails the evaluation instead).
//! - Workload endpoints without `orchestrator` are taken as Kubernetes pods: they get
//!   `projectcalico.org/orchestrator=k8s` and, without explicit `profiles`, the
//!   `kns.<ns>` (and `ksa.<ns>.<sa>`) profiles.

pub mod report;

#[cfg(test)]
mod example_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use dataplane::program::{HitAction, View};

pub use crate::cluster::{
    self, AppliedTier, Cluster, ClusterError, Endpoint, EndpointKind, Evaluation, Flow, L4,
    MixedFamilies, NO_MATCH_NAME, NetworkSet, Outcome, PeerMatch, Policy, PolicyHit, PolicyRule,
    ProfileInfo, ReporterOutcome, TierInfo, Verdict, compare_policies, compare_tiers,
    rendered_for_version,
};

use crate::cluster::PROFILE_TIER;
use crate::cluster::Reporter;
use crate::model::{PolicyType, RuleAction, TierDefaultAction};

// ---------------------------------------------------------------------------------
// Evaluation

/// Evaluates a flow: the source endpoint's egress and the destination endpoint's
/// ingress, each in both views.
pub fn evaluate(cluster: &Cluster, flow: &Flow) -> Evaluation {
    let mut reporters = Vec::new();
    for (reporter, ip, direction) in [
        (Reporter::Src, flow.src, PolicyType::Egress),
        (Reporter::Dst, flow.dst, PolicyType::Ingress),
    ] {
        if let Some(ep) = cluster.endpoint_at(ip) {
            reporters.push(ReporterOutcome {
                reporter,
                endpoint: ep.key.clone(),
                endpoint_kind: ep.kind,
                endpoint_name: ep.display_name(),
                enforced: evaluate_endpoint(cluster, ep, direction, flow, View::Enforced),
                pending: evaluate_endpoint(cluster, ep, direction, flow, View::Pending),
            });
        }
    }
    Evaluation {
        flow: *flow,
        reporters,
    }
}

/// One view of one endpoint-direction (§3.4–3.5, §5; the contract in
/// `dataplane::program`).
pub fn evaluate_endpoint(
    cluster: &Cluster,
    ep: &Endpoint,
    direction: PolicyType,
    flow: &Flow,
    view: View,
) -> Outcome {
    let mut hits = Vec::new();

    for applied in cluster.tiers_for(ep, direction) {
        // §5: the enforced view ignores staged policies; a tier left without policies
        // is skipped entirely, its default action included.
        let visible: Vec<&Policy> = applied
            .policies
            .iter()
            .copied()
            .filter(|p| view == View::Pending || !p.is_staged())
            .collect();
        let (Some(first), Some(last)) = (visible.first(), visible.last()) else {
            continue;
        };
        let tier = applied.tier.name.as_str();

        let mut passed = false;
        'policies: for policy in &visible {
            // §3.4: the first matching non-Log rule of a policy decides; a policy without
            // one falls through to the next policy.
            match first_decision(cluster, policy.rules(direction), flow) {
                Some((i, RuleAction::Allow)) => {
                    hits.push(PolicyHit::policy(tier, policy, HitAction::Allow, i));
                    return Outcome {
                        verdict: Verdict::Allow,
                        hits,
                    };
                }
                Some((i, RuleAction::Deny)) => {
                    hits.push(PolicyHit::policy(tier, policy, HitAction::Deny, i));
                    return Outcome {
                        verdict: Verdict::Deny,
                        hits,
                    };
                }
                Some((i, _pass)) => {
                    hits.push(PolicyHit::policy(tier, policy, HitAction::Pass, i));
                    passed = true;
                    break 'policies;
                }
                None => {}
            }
        }
        if passed {
            continue;
        }

        // §3.4, §5: the tier's default action, attributed to the last enforced policy
        // (data plane) or the first policy (pending checker).
        let trigger = match view {
            View::Enforced => last,
            View::Pending => first,
        };
        match applied.tier.default_action {
            TierDefaultAction::Deny => {
                hits.push(PolicyHit::policy(tier, trigger, HitAction::Deny, -1));
                return Outcome {
                    verdict: Verdict::Deny,
                    hits,
                };
            }
            TierDefaultAction::Pass => {
                hits.push(PolicyHit::policy(tier, trigger, HitAction::Pass, -1));
            }
        }
    }

    // §3.5: profiles.
    let profiles = cluster.profiles_for(ep);
    for (name, profile) in &profiles {
        let Some(profile) = profile else { continue };
        match first_decision(cluster, profile.rules(direction), flow) {
            Some((i, RuleAction::Allow)) => {
                hits.push(PolicyHit::profile(name, HitAction::Allow, i));
                return Outcome {
                    verdict: Verdict::Allow,
                    hits,
                };
            }
            Some((i, RuleAction::Deny)) => {
                hits.push(PolicyHit::profile(name, HitAction::Deny, i));
                return Outcome {
                    verdict: Verdict::Deny,
                    hits,
                };
            }
            // A profile Pass: the data plane moves on to the next profile and reports
            // nothing for it; the pending checker denies.
            Some((i, _pass)) => match view {
                View::Enforced => {}
                View::Pending => {
                    hits.push(PolicyHit::profile(name, HitAction::Deny, i));
                    return Outcome {
                        verdict: Verdict::Deny,
                        hits,
                    };
                }
            },
            None => {}
        }
    }
    match view {
        View::Enforced => hits.push(PolicyHit::profile(NO_MATCH_NAME, HitAction::Deny, 0)),
        View::Pending if profiles.is_empty() => {
            hits.push(PolicyHit::profile(PROFILE_TIER, HitAction::Deny, -1));
        }
        View::Pending => {}
    }
    Outcome {
        verdict: Verdict::Deny,
        hits,
    }
}

/// The index and action of the first rule that matches and is not a Log rule (a Log
/// rule never decides, §2).
fn first_decision(
    cluster: &Cluster,
    rules: &[PolicyRule],
    flow: &Flow,
) -> Option<(i32, RuleAction)> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.rule.action != RuleAction::Log)
        .find(|(_, r)| rule_matches(cluster, r, flow))
        .map(|(i, r)| (i32::try_from(i).unwrap_or(i32::MAX), r.rule.action))
}

/// Whether every criterion of a rule holds for the flow (§2: all present criteria
/// ANDed; `http` is L7 and ignored).
pub fn rule_matches(cluster: &Cluster, r: &PolicyRule, flow: &Flow) -> bool {
    let rule = &r.rule;
    if rule.ip_version.is_some_and(|v| v != flow.ip_version()) {
        return false;
    }
    if !rendered_for_version(r, flow.ip_version()) {
        return false;
    }
    if rule.protocol.is_some_and(|p| p.0 != flow.proto) {
        return false;
    }
    if rule.not_protocol.is_some_and(|p| p.0 == flow.proto) {
        return false;
    }
    if let Some(t) = rule.icmp.and_then(|i| i.icmp_type.map(|t| (t, i.code))) {
        let (want_type, want_code) = t;
        match flow.icmp() {
            Some((ty, code)) if ty == want_type && want_code.is_none_or(|c| c == code) => {}
            _ => return false,
        }
    }
    // notICMP, like icmp, only matches ICMP packets (validation also requires the
    // rule's protocol to be ICMP/ICMPv6, so this only matters for unvalidated input).
    if let Some((not_type, not_code)) = rule.not_icmp.and_then(|i| i.icmp_type.map(|t| (t, i.code)))
    {
        match flow.icmp() {
            Some((ty, code)) if ty == not_type && not_code.is_none_or(|c| c == code) => {
                return false;
            }
            Some(_) => {}
            None => return false,
        }
    }
    let (sport, dport) = match flow.ports() {
        Some((s, d)) => (Some(s), Some(d)),
        None => (None, None),
    };
    peer_matches(cluster, &r.source, flow.src, sport, flow.proto)
        && peer_matches(cluster, &r.destination, flow.dst, dport, flow.proto)
}

/// Whether one side of a flow (address `ip`, port `port` if the protocol has ports)
/// meets an EntityRule (§2).
pub fn peer_matches(
    cluster: &Cluster,
    m: &PeerMatch,
    ip: IpAddr,
    port: Option<u16>,
    proto: u8,
) -> bool {
    if m.services {
        return false;
    }
    if !m.nets.is_empty() && !m.nets.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    if m.not_nets.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    if let Some(s) = &m.selector
        && !cluster.ip_matches_selector(ip, s)
    {
        return false;
    }
    if let Some(s) = &m.not_selector
        && cluster.ip_matches_selector(ip, s)
    {
        return false;
    }
    let port_in = |ports: &[crate::model::Port], port: u16| {
        use crate::model::Port;
        let numeric = ports.iter().any(|p| match p {
            Port::Number(n) => *n == port,
            Port::Range(lo, hi) => (*lo..=*hi).contains(&port),
            Port::Named(_) => false,
        });
        let names: Vec<&str> = ports
            .iter()
            .filter_map(|p| match p {
                Port::Named(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        // Named ports resolve on the peer endpoint, filtered by the rule's positive
        // selector (felix named-port IP sets).
        numeric
            || (!names.is_empty()
                && cluster.named_port_matches(ip, proto, port, &names, m.selector.as_ref()))
    };
    if !m.ports.is_empty() {
        match port {
            Some(p) if port_in(&m.ports, p) => {}
            _ => return false,
        }
    }
    if !m.not_ports.is_empty() {
        match port {
            Some(p) if !port_in(&m.not_ports, p) => {}
            _ => return false,
        }
    }
    true
}
