//! The linear reference classifier: evaluates a [`Program`] rule by rule, exactly as
//! the contract in [`crate::program`] says, with no precomputation.
//!
//! It is the slow, obviously-correct twin of the compiled classifier
//! ([`crate::classifier`]): property tests check that both agree on every verdict and
//! every trace. [`evaluate`] is the contract written as code; [`LinearClassifier`]
//! wraps it behind [`Classify`] (endpoint lookup by a scan of the bindings) so the
//! pipeline can run on it too.
//!
//! To hand out [`TraceId`]s without allocating or locking on the packet path,
//! [`LinearClassifier::new`] enumerates every trace a program could produce (an
//! over-approximation: every Allow/Deny/Pass rule and tier default is taken to be
//! reachable) into a trie of hits; classification walks that trie while it evaluates.
//! Programs whose Pass rules make that enumeration larger than
//! [`LinearClassifier::MAX_TRACE_NODES`] are refused with an error.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::program::{
    Action, Classify, Decision, EndpointBinding, FlowKey, FlowVerdicts, Hit, HitAction, Match,
    Outcome, Policy, PolicyId, PolicySet, Program, ProgramId, TierDefault, TraceId, Verdict,
    Verdicts, View, proto,
};

/// Whether `m` matches the packet `k` (module doc of [`crate::program`], "Match semantics").
pub fn matches(m: &Match, k: &FlowKey) -> bool {
    if m.family.is_some_and(|f| f != k.family) {
        return false;
    }
    if m.protocol.is_some_and(|p| p != k.proto) {
        return false;
    }
    if m.not_protocol.is_some_and(|p| p == k.proto) {
        return false;
    }
    let (src, dst) = (k.src_ip(), k.dst_ip());
    if !nets_match(m.src_nets.as_deref(), &m.not_src_nets, src)
        || !nets_match(m.dst_nets.as_deref(), &m.not_dst_nets, dst)
    {
        return false;
    }
    let port_criteria = m.src_ports.is_some()
        || m.dst_ports.is_some()
        || !m.not_src_ports.is_empty()
        || !m.not_dst_ports.is_empty();
    if port_criteria && !proto::has_ports(k.proto) {
        return false;
    }
    if !ports_match(m.src_ports.as_deref(), &m.not_src_ports, k.sport)
        || !ports_match(m.dst_ports.as_deref(), &m.not_dst_ports, k.dport)
    {
        return false;
    }
    if m.icmp.is_some() || m.not_icmp.is_some() {
        let is_icmp = matches!(
            (k.family, k.proto),
            (crate::program::Family::V4, proto::ICMP) | (crate::program::Family::V6, proto::ICMPV6)
        );
        if !is_icmp {
            return false;
        }
        let icmp_is = |i: &crate::program::IcmpMatch| {
            k.sport == u16::from(i.icmp_type) && i.code.is_none_or(|c| k.dport == u16::from(c))
        };
        if m.icmp.as_ref().is_some_and(|i| !icmp_is(i)) {
            return false;
        }
        if m.not_icmp.as_ref().is_some_and(icmp_is) {
            return false;
        }
    }
    true
}

fn nets_match(pos: Option<&[ipnet::IpNet]>, neg: &[ipnet::IpNet], a: IpAddr) -> bool {
    // `IpNet::contains` is false across families, which is the contract.
    pos.is_none_or(|nets| nets.iter().any(|n| n.contains(&a)))
        && !neg.iter().any(|n| n.contains(&a))
}

fn ports_match(
    pos: Option<&[crate::program::PortRange]>,
    neg: &[crate::program::PortRange],
    p: u16,
) -> bool {
    pos.is_none_or(|rs| rs.iter().any(|r| r.contains(p))) && !neg.iter().any(|r| r.contains(p))
}

/// Receives the hits of one evaluation in order.
trait HitSink {
    fn hit(&mut self, h: Hit);
}

impl HitSink for Vec<Hit> {
    fn hit(&mut self, h: Hit) {
        self.push(h);
    }
}

fn visible(p: &Policy, view: View) -> bool {
    view == View::Pending || !p.staged
}

/// The first Allow/Deny/Pass rule of `policies` (in order) that matches.
fn first_decider<'a>(
    policies: impl Iterator<Item = &'a Policy>,
    k: &FlowKey,
) -> Option<(PolicyId, &'a crate::program::Rule)> {
    for p in policies {
        for r in &p.rules {
            if r.action != Action::Log && matches(&r.matches, k) {
                return Some((p.id, r));
            }
        }
    }
    None
}

fn rule_hit(policy: PolicyId, rule: &crate::program::Rule) -> (Hit, Option<Verdict>) {
    let (action, verdict) = match rule.action {
        Action::Allow => (HitAction::Allow, Some(Verdict::Allow)),
        Action::Deny => (HitAction::Deny, Some(Verdict::Deny)),
        // Log rules never decide (filtered by `first_decider`); Pass continues.
        Action::Pass | Action::Log => (HitAction::Pass, None),
    };
    let hit = Hit {
        policy,
        action,
        rule_index: rule.index as i32,
    };
    (hit, verdict)
}

fn run(program: &Program, k: &FlowKey, view: View, sink: &mut impl HitSink) -> Verdict {
    for tier in &program.tiers {
        let mut vis = tier.policies.iter().filter(|p| visible(p, view));
        let Some(first) = vis.next() else {
            continue; // no policy visible in this view: the tier is skipped
        };
        let vis = tier.policies.iter().filter(|p| visible(p, view));
        if let Some((pid, rule)) = first_decider(vis, k) {
            let (hit, verdict) = rule_hit(pid, rule);
            sink.hit(hit);
            match verdict {
                Some(v) => return v,
                None => continue,
            }
        }
        let trigger = match view {
            View::Pending => first.id,
            View::Enforced => {
                let last = tier.policies.iter().rfind(|p| visible(p, view));
                last.map_or(first.id, |p| p.id)
            }
        };
        let action = match tier.default_action {
            TierDefault::Deny => HitAction::Deny,
            TierDefault::Pass => HitAction::Pass,
        };
        sink.hit(Hit {
            policy: trigger,
            action,
            rule_index: -1,
        });
        if tier.default_action == TierDefault::Deny {
            return Verdict::Deny;
        }
    }
    for profile in &program.profiles {
        let Some((pid, rule)) = first_decider(std::iter::once(profile), k) else {
            continue;
        };
        match (rule.action, view) {
            (Action::Allow, _) => {
                sink.hit(hit_of(pid, HitAction::Allow, rule.index as i32));
                return Verdict::Allow;
            }
            // The pending checker turns a profile Pass into a deny.
            (Action::Deny, _) | (Action::Pass, View::Pending) => {
                sink.hit(hit_of(pid, HitAction::Deny, rule.index as i32));
                return Verdict::Deny;
            }
            // Enforced: a profile Pass leaves the profile without a hit.
            (Action::Pass, View::Enforced) | (Action::Log, _) => {}
        }
    }
    match view {
        View::Enforced => sink.hit(hit_of(PolicyId::NO_PROFILE_MATCH, HitAction::Deny, 0)),
        View::Pending if program.profiles.is_empty() => {
            sink.hit(hit_of(PolicyId::NO_PROFILE_MATCH, HitAction::Deny, -1));
        }
        View::Pending => {} // profiles exist but none decided: deny without a hit
    }
    Verdict::Deny
}

fn hit_of(policy: PolicyId, action: HitAction, rule_index: i32) -> Hit {
    Hit {
        policy,
        action,
        rule_index,
    }
}

/// Evaluates `program` for the packet `k` in `view`: the contract of
/// [`crate::program`], rule by rule.
pub fn evaluate(program: &Program, k: &FlowKey, view: View) -> Outcome {
    let mut trace = Vec::new();
    let verdict = run(program, k, view, &mut trace);
    Outcome { verdict, trace }
}

/// Why a [`LinearClassifier`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinearError {
    /// A binding names a program that is not in the set.
    #[error("endpoint binding {net} refers to program {program} but the set has {count} programs")]
    UnknownProgram {
        /// The binding's prefix.
        net: ipnet::IpNet,
        /// The missing program index.
        program: u32,
        /// How many programs the set has.
        count: usize,
    },
    /// Two bindings have the same prefix.
    #[error("two endpoint bindings have the same prefix {net}")]
    DuplicateEndpoint {
        /// The prefix.
        net: ipnet::IpNet,
    },
    /// The possible traces of the programs do not fit the trace table.
    #[error(
        "the programs can produce more than {limit} distinct trace prefixes (Pass rules in many tiers); the linear classifier cannot intern them"
    )]
    TooManyTraces {
        /// The limit ([`LinearClassifier::MAX_TRACE_NODES`]).
        limit: usize,
    },
}

/// A [`Classify`] implementation that evaluates every packet with [`evaluate`]'s rules
/// and finds endpoints by scanning the bindings. Slow by design; a reference.
#[derive(Debug)]
pub struct LinearClassifier {
    set: PolicySet,
    /// Trie of hits: (parent node, hit) → child node. Node 0 is the empty trace.
    edges: HashMap<(u32, Hit), u32>,
    /// The full trace of each node.
    paths: Vec<Vec<Hit>>,
}

/// Walks the trace trie alongside an evaluation.
struct TrieWalk<'a> {
    edges: &'a HashMap<(u32, Hit), u32>,
    node: Option<u32>,
}

impl HitSink for TrieWalk<'_> {
    fn hit(&mut self, h: Hit) {
        self.node = self.node.and_then(|n| self.edges.get(&(n, h)).copied());
    }
}

impl LinearClassifier {
    /// Upper bound on the number of trace-trie nodes.
    pub const MAX_TRACE_NODES: usize = 1 << 20;

    /// Prepares `set` for classification.
    pub fn new(set: PolicySet) -> Result<Self, LinearError> {
        for b in &set.endpoints {
            for p in [b.ingress, b.egress].into_iter().flatten() {
                if p.0 as usize >= set.programs.len() {
                    return Err(LinearError::UnknownProgram {
                        net: b.net,
                        program: p.0,
                        count: set.programs.len(),
                    });
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for b in &set.endpoints {
            if !seen.insert(b.net.trunc()) {
                return Err(LinearError::DuplicateEndpoint { net: b.net });
            }
        }
        let mut me = LinearClassifier {
            set: PolicySet::default(),
            edges: HashMap::new(),
            paths: vec![Vec::new()],
        };
        for program in &set.programs {
            for view in [View::Enforced, View::Pending] {
                me.enumerate_tiers(program, view, 0, 0)?;
            }
        }
        me.set = set;
        Ok(me)
    }

    fn child(&mut self, node: u32, h: Hit) -> Result<u32, LinearError> {
        if let Some(&c) = self.edges.get(&(node, h)) {
            return Ok(c);
        }
        if self.paths.len() >= Self::MAX_TRACE_NODES {
            return Err(LinearError::TooManyTraces {
                limit: Self::MAX_TRACE_NODES,
            });
        }
        let c = self.paths.len() as u32;
        let mut path = self.paths[node as usize].clone();
        path.push(h);
        self.paths.push(path);
        self.edges.insert((node, h), c);
        Ok(c)
    }

    fn enumerate_tiers(
        &mut self,
        program: &Program,
        view: View,
        from: usize,
        node: u32,
    ) -> Result<(), LinearError> {
        for (t, tier) in program.tiers.iter().enumerate().skip(from) {
            let vis: Vec<&Policy> = tier.policies.iter().filter(|p| visible(p, view)).collect();
            let (Some(first), Some(last)) = (vis.first(), vis.last()) else {
                continue;
            };
            for p in &vis {
                for r in p.rules.iter().filter(|r| r.action != Action::Log) {
                    let (hit, verdict) = rule_hit(p.id, r);
                    let c = self.child(node, hit)?;
                    if verdict.is_none() {
                        self.enumerate_tiers(program, view, t + 1, c)?;
                    }
                }
            }
            let trigger = if view == View::Pending {
                first.id
            } else {
                last.id
            };
            return match tier.default_action {
                TierDefault::Deny => {
                    let hit = Hit {
                        policy: trigger,
                        action: HitAction::Deny,
                        rule_index: -1,
                    };
                    self.child(node, hit).map(|_| ())
                }
                TierDefault::Pass => {
                    let hit = Hit {
                        policy: trigger,
                        action: HitAction::Pass,
                        rule_index: -1,
                    };
                    let c = self.child(node, hit)?;
                    self.enumerate_tiers(program, view, t + 1, c)
                }
            };
        }
        self.enumerate_profiles(program, view, node)
    }

    fn enumerate_profiles(
        &mut self,
        program: &Program,
        view: View,
        node: u32,
    ) -> Result<(), LinearError> {
        for profile in &program.profiles {
            for r in &profile.rules {
                match (r.action, view) {
                    (Action::Allow, _) => {
                        self.child(node, hit_of(profile.id, HitAction::Allow, r.index as i32))?;
                    }
                    (Action::Deny, _) | (Action::Pass, View::Pending) => {
                        self.child(node, hit_of(profile.id, HitAction::Deny, r.index as i32))?;
                    }
                    (Action::Pass, View::Enforced) | (Action::Log, _) => {}
                }
            }
        }
        match view {
            View::Enforced => {
                self.child(node, hit_of(PolicyId::NO_PROFILE_MATCH, HitAction::Deny, 0))?;
            }
            View::Pending if program.profiles.is_empty() => {
                self.child(
                    node,
                    hit_of(PolicyId::NO_PROFILE_MATCH, HitAction::Deny, -1),
                )?;
            }
            View::Pending => {}
        }
        Ok(())
    }

    /// The policy set this classifier evaluates.
    pub fn policy_set(&self) -> &PolicySet {
        &self.set
    }

    /// The binding whose prefix contains `a` with the longest prefix length.
    fn endpoint_of(&self, a: IpAddr) -> Option<&EndpointBinding> {
        self.set
            .endpoints
            .iter()
            .filter(|b| b.net.contains(&a))
            .max_by_key(|b| b.net.prefix_len())
    }

    fn decide(&self, program: ProgramId, k: &FlowKey) -> Option<Verdicts> {
        let program = self.set.programs.get(program.0 as usize)?;
        let one = |view| {
            let mut walk = TrieWalk {
                edges: &self.edges,
                node: Some(0),
            };
            let verdict = run(program, k, view, &mut walk);
            // The enumeration covers every trace `run` can produce; a miss would be a
            // bug in it, reported as the empty trace rather than a panic.
            Decision {
                verdict,
                trace: TraceId(walk.node.unwrap_or(0)),
            }
        };
        Some(Verdicts {
            enforced: one(View::Enforced),
            pending: one(View::Pending),
        })
    }

    /// The verdicts of one packet.
    pub fn classify_one(&self, k: &FlowKey) -> FlowVerdicts {
        let side = |b: Option<&EndpointBinding>, ingress: bool| {
            let b = b?;
            let p = if ingress { b.ingress } else { b.egress }?;
            Some((b.endpoint, self.decide(p, k)?))
        };
        FlowVerdicts {
            egress: side(self.endpoint_of(k.src_ip()), false),
            ingress: side(self.endpoint_of(k.dst_ip()), true),
        }
    }
}

impl Classify for LinearClassifier {
    fn classify(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            *o = self.classify_one(k);
        }
    }

    fn trace(&self, id: TraceId) -> &[Hit] {
        self.paths.get(id.0 as usize).map_or(&[], |p| p.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::program::{Family, HitAction as H, IcmpMatch, PortRange, TierDefault as D};

    fn both(p: &Program, k: &FlowKey) -> (Outcome, Outcome) {
        (
            evaluate(p, k, View::Enforced),
            evaluate(p, k, View::Pending),
        )
    }

    fn out(verdict: Verdict, trace: Vec<Hit>) -> Outcome {
        Outcome { verdict, trace }
    }

    fn dport(ports: &[(u16, u16)]) -> Match {
        Match {
            dst_ports: Some(ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect()),
            ..Match::default()
        }
    }

    #[test]
    fn allow_and_deny_are_final() {
        let p = program(
            vec![tier(
                1,
                D::Deny,
                vec![policy(
                    10,
                    false,
                    vec![any(0, Action::Allow), any(1, Action::Deny)],
                )],
            )],
            vec![],
        );
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(e, out(Verdict::Allow, vec![hit(10, H::Allow, 0)]));
        assert_eq!(pe, e);
    }

    #[test]
    fn pass_continues_with_next_tier_and_log_never_decides() {
        let p = program(
            vec![
                tier(
                    1,
                    D::Deny,
                    vec![policy(
                        10,
                        false,
                        vec![any(0, Action::Log), any(1, Action::Pass)],
                    )],
                ),
                tier(
                    2,
                    D::Deny,
                    vec![policy(
                        20,
                        false,
                        vec![
                            any(0, Action::Log),
                            rule(3, Action::Deny, dport(&[(22, 22)])),
                        ],
                    )],
                ),
            ],
            vec![allow_profile(99)],
        );
        let (e, _) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 22));
        assert_eq!(
            e,
            out(
                Verdict::Deny,
                vec![hit(10, H::Pass, 1), hit(20, H::Deny, 3)]
            )
        );
        // Port 80: tier 2 has no matching rule, its default denies (trigger: its only policy).
        let (e, _) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(
            e,
            out(
                Verdict::Deny,
                vec![hit(10, H::Pass, 1), hit(20, H::Deny, -1)]
            )
        );
    }

    #[test]
    fn pass_out_of_last_tier_reaches_profiles() {
        let p = program(
            vec![tier(
                1,
                D::Deny,
                vec![policy(10, false, vec![any(0, Action::Pass)])],
            )],
            vec![allow_profile(99)],
        );
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(
            e,
            out(
                Verdict::Allow,
                vec![hit(10, H::Pass, 0), hit(99, H::Allow, 0)]
            )
        );
        assert_eq!(pe, e);
    }

    #[test]
    fn tier_default_pass_is_recorded_and_continues() {
        let p = program(
            vec![tier(
                1,
                D::Pass,
                vec![policy(
                    10,
                    false,
                    vec![rule(0, Action::Deny, dport(&[(22, 22)]))],
                )],
            )],
            vec![allow_profile(99)],
        );
        let (e, _) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(
            e,
            out(
                Verdict::Allow,
                vec![hit(10, H::Pass, -1), hit(99, H::Allow, 0)]
            )
        );
    }

    #[test]
    fn staged_only_tier_is_skipped_in_the_enforced_view() {
        let p = program(
            vec![
                tier(
                    1,
                    D::Deny,
                    vec![policy(
                        10,
                        true,
                        vec![rule(0, Action::Allow, dport(&[(443, 443)]))],
                    )],
                ),
                tier(
                    2,
                    D::Deny,
                    vec![policy(
                        20,
                        false,
                        vec![rule(0, Action::Allow, dport(&[(80, 80)]))],
                    )],
                ),
            ],
            vec![],
        );
        // Port 80: enforced skips tier 1 entirely (no end-of-tier deny); pending hits
        // tier 1's default, attributed to its first policy.
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(e, out(Verdict::Allow, vec![hit(20, H::Allow, 0)]));
        assert_eq!(pe, out(Verdict::Deny, vec![hit(10, H::Deny, -1)]));
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 443));
        assert_eq!(e, out(Verdict::Deny, vec![hit(20, H::Deny, -1)]));
        assert_eq!(pe, out(Verdict::Allow, vec![hit(10, H::Allow, 0)]));
    }

    #[test]
    fn end_of_tier_trigger_is_last_enforced_or_first_policy() {
        // staged 10, enforced 11, staged 12, enforced 13, staged 14: none matches port 9.
        let rules = || vec![rule(0, Action::Allow, dport(&[(1, 1)]))];
        let p = program(
            vec![tier(
                1,
                D::Deny,
                vec![
                    policy(10, true, rules()),
                    policy(11, false, rules()),
                    policy(12, true, rules()),
                    policy(13, false, rules()),
                    policy(14, true, rules()),
                ],
            )],
            vec![allow_profile(99)],
        );
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 9));
        assert_eq!(e, out(Verdict::Deny, vec![hit(13, H::Deny, -1)]));
        assert_eq!(pe, out(Verdict::Deny, vec![hit(10, H::Deny, -1)]));
    }

    #[test]
    fn mixed_tier_keeps_its_default_in_the_enforced_view() {
        // The case of calico#13416: a staged allow next to an enforced policy must not
        // suppress the end-of-tier deny of the enforced view.
        let p = program(
            vec![tier(
                1,
                D::Deny,
                vec![
                    policy(10, true, vec![any(0, Action::Allow)]),
                    policy(11, false, vec![rule(0, Action::Allow, dport(&[(80, 80)]))]),
                ],
            )],
            vec![allow_profile(99)],
        );
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 22));
        assert_eq!(e, out(Verdict::Deny, vec![hit(11, H::Deny, -1)]));
        assert_eq!(pe, out(Verdict::Allow, vec![hit(10, H::Allow, 0)]));
    }

    #[test]
    fn staged_policy_decides_only_in_pending() {
        let p = program(
            vec![tier(
                1,
                D::Deny,
                vec![
                    policy(10, true, vec![rule(0, Action::Deny, dport(&[(80, 80)]))]),
                    policy(11, false, vec![any(0, Action::Allow)]),
                ],
            )],
            vec![],
        );
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(e, out(Verdict::Allow, vec![hit(11, H::Allow, 0)]));
        assert_eq!(pe, out(Verdict::Deny, vec![hit(10, H::Deny, 0)]));
    }

    #[test]
    fn empty_tier_is_skipped_in_both_views() {
        let p = program(vec![tier(1, D::Deny, vec![])], vec![allow_profile(99)]);
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(e, out(Verdict::Allow, vec![hit(99, H::Allow, 0)]));
        assert_eq!(pe, e);
    }

    #[test]
    fn profiles_in_order_and_pass_differs_per_view() {
        let profiles = vec![
            policy(
                90,
                false,
                vec![
                    rule(0, Action::Pass, dport(&[(80, 80)])),
                    rule(1, Action::Deny, dport(&[(80, 81)])),
                ],
            ),
            policy(
                91,
                false,
                vec![
                    rule(0, Action::Log, Match::default()),
                    rule(1, Action::Allow, dport(&[(80, 81)])),
                ],
            ),
        ];
        let p = program(vec![], profiles);
        // Enforced: the Pass leaves profile 90 without a hit; pending: it denies.
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(e, out(Verdict::Allow, vec![hit(91, H::Allow, 1)]));
        assert_eq!(pe, out(Verdict::Deny, vec![hit(90, H::Deny, 0)]));
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 81));
        assert_eq!(e, out(Verdict::Deny, vec![hit(90, H::Deny, 1)]));
        assert_eq!(pe, e);
        // No profile decided: enforced reports "no profile matched" (index 0), pending
        // reports nothing because the program has profiles.
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 82));
        assert_eq!(e, out(Verdict::Deny, vec![npm(0)]));
        assert_eq!(pe, out(Verdict::Deny, vec![]));
    }

    #[test]
    fn no_profiles_deny_in_both_views() {
        let (e, pe) = both(&Program::default(), &tcp("10.0.0.1", "10.0.0.2", 82));
        assert_eq!(e, out(Verdict::Deny, vec![npm(0)]));
        assert_eq!(pe, out(Verdict::Deny, vec![npm(-1)]));
        let p = program(
            vec![tier(
                1,
                D::Pass,
                vec![policy(
                    10,
                    false,
                    vec![rule(0, Action::Deny, dport(&[(22, 22)]))],
                )],
            )],
            vec![],
        );
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(e, out(Verdict::Deny, vec![hit(10, H::Pass, -1), npm(0)]));
        assert_eq!(pe, out(Verdict::Deny, vec![hit(10, H::Pass, -1), npm(-1)]));
    }

    #[test]
    fn staged_flag_of_a_profile_is_ignored() {
        let p = program(vec![], vec![policy(90, true, vec![any(0, Action::Allow)])]);
        let (e, pe) = both(&p, &tcp("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(e, out(Verdict::Allow, vec![hit(90, H::Allow, 0)]));
        assert_eq!(pe, e);
    }

    fn m(f: impl FnOnce(&mut Match)) -> Match {
        let mut x = Match::default();
        f(&mut x);
        x
    }

    #[test]
    fn match_nets_and_negations() {
        let k = tcp("10.1.2.3", "192.168.0.1", 80);
        assert!(matches(
            &m(|x| x.src_nets = Some(vec![net("10.0.0.0/8"), net("11.0.0.0/8")].into())),
            &k
        ));
        assert!(!matches(
            &m(|x| x.src_nets = Some(vec![net("11.0.0.0/8")].into())),
            &k
        ));
        assert!(
            !matches(&m(|x| x.src_nets = Some(vec![].into())), &k),
            "Some(empty) matches nothing"
        );
        assert!(!matches(
            &m(|x| x.not_src_nets = vec![net("10.1.0.0/16")].into()),
            &k
        ));
        assert!(matches(
            &m(|x| x.not_src_nets = vec![net("10.2.0.0/16")].into()),
            &k
        ));
        assert!(!matches(
            &m(|x| {
                x.src_nets = Some(vec![net("10.0.0.0/8")].into());
                x.not_src_nets = vec![net("10.1.2.3/32")].into();
            }),
            &k
        ));
        assert!(matches(
            &m(|x| x.dst_nets = Some(vec![net("192.168.0.1/32")].into())),
            &k
        ));
        assert!(!matches(
            &m(|x| x.not_dst_nets = vec![net("0.0.0.0/0")].into()),
            &k
        ));
        assert!(matches(
            &m(|x| x.dst_nets = Some(vec![net("0.0.0.0/0")].into())),
            &k
        ));
        // Host bits of a prefix are ignored.
        assert!(matches(
            &m(|x| x.src_nets = Some(vec![net("10.1.2.200/24")].into())),
            &k
        ));
    }

    #[test]
    fn match_other_family_prefixes_never_match() {
        let k4 = tcp("10.1.2.3", "10.0.0.1", 80);
        let k6 = tcp("2001:db8::1", "2001:db8::2", 80);
        let v6_only = m(|x| x.src_nets = Some(vec![net("::/0")].into()));
        assert!(!matches(&v6_only, &k4));
        assert!(matches(&v6_only, &k6));
        let not_v6 = m(|x| x.not_src_nets = vec![net("::/0")].into());
        assert!(
            matches(&not_v6, &k4),
            "a negated v6 prefix excludes no v4 packet"
        );
        assert!(!matches(&not_v6, &k6));
        assert!(!matches(
            &m(|x| x.src_nets = Some(vec![net("0.0.0.0/0")].into())),
            &k6
        ));
        assert!(!matches(&m(|x| x.family = Some(Family::V6)), &k4));
        assert!(matches(&m(|x| x.family = Some(Family::V6)), &k6));
        // /128 exact.
        let exact = m(|x| x.dst_nets = Some(vec![net("2001:db8::2/128")].into()));
        assert!(matches(&exact, &k6));
        assert!(!matches(&exact, &tcp("2001:db8::1", "2001:db8::3", 80)));
        // A v4-mapped v6 prefix is a v6 prefix.
        assert!(!matches(
            &m(|x| x.src_nets = Some(vec![net("::ffff:0:0/96")].into())),
            &k4
        ));
    }

    #[test]
    fn match_protocols_and_ports() {
        let t = tcp("10.0.0.1", "10.0.0.2", 80);
        let icmp = key("10.0.0.1", "10.0.0.2", proto::ICMP, 8, 0);
        assert!(matches(&m(|x| x.protocol = Some(proto::TCP)), &t));
        assert!(!matches(&m(|x| x.not_protocol = Some(proto::TCP)), &t));
        assert!(matches(&m(|x| x.not_protocol = Some(proto::UDP)), &t));
        assert!(matches(&dport(&[(80, 80)]), &t));
        assert!(matches(&dport(&[(1, 79), (80, 90)]), &t));
        assert!(!matches(&dport(&[(81, 65535)]), &t));
        // Port criteria never match port-less protocols, negated ones included.
        assert!(!matches(
            &m(|x| x.not_dst_ports = vec![PortRange::single(22)]),
            &icmp
        ));
        assert!(matches(
            &m(|x| x.not_dst_ports = vec![PortRange::single(22)]),
            &t
        ));
        assert!(!matches(
            &m(|x| x.not_src_ports = vec![PortRange { lo: 0, hi: 65535 }]),
            &t
        ));
        // ...but an empty negated set is no criterion.
        assert!(matches(&m(|x| x.not_dst_ports = vec![]), &icmp));
        assert!(!matches(&dport(&[(0, 65535)]), &icmp));
        // Degenerate ranges contain nothing.
        assert!(!matches(&dport(&[(90, 70)]), &t));
        assert!(matches(
            &m(|x| x.not_dst_ports = vec![PortRange { lo: 90, hi: 70 }]),
            &t
        ));
        let sctp = key("10.0.0.1", "10.0.0.2", proto::SCTP, 5, 6);
        assert!(matches(
            &m(|x| x.src_ports = Some(vec![PortRange::single(5)])),
            &sctp
        ));
    }

    #[test]
    fn match_icmp() {
        let echo = key("10.0.0.1", "10.0.0.2", proto::ICMP, 8, 0);
        let unreach = key("10.0.0.1", "10.0.0.2", proto::ICMP, 3, 4);
        let echo6 = key("::1", "::2", proto::ICMPV6, 128, 0);
        let t = tcp("10.0.0.1", "10.0.0.2", 8);
        let ty = |t: u8, c: Option<u8>| IcmpMatch {
            icmp_type: t,
            code: c,
        };
        assert!(matches(&m(|x| x.icmp = Some(ty(8, None))), &echo));
        assert!(matches(&m(|x| x.icmp = Some(ty(8, Some(0)))), &echo));
        assert!(!matches(&m(|x| x.icmp = Some(ty(8, Some(1)))), &echo));
        assert!(
            !matches(&m(|x| x.icmp = Some(ty(8, None))), &t),
            "ICMP criteria need ICMP"
        );
        assert!(!matches(&m(|x| x.not_icmp = Some(ty(3, None))), &t));
        assert!(matches(&m(|x| x.not_icmp = Some(ty(3, None))), &echo));
        assert!(!matches(&m(|x| x.not_icmp = Some(ty(3, None))), &unreach));
        assert!(matches(&m(|x| x.not_icmp = Some(ty(3, Some(3)))), &unreach));
        assert!(!matches(
            &m(|x| x.not_icmp = Some(ty(3, Some(4)))),
            &unreach
        ));
        assert!(matches(&m(|x| x.icmp = Some(ty(128, None))), &echo6));
        // Protocol 58 over IPv4 and protocol 1 over IPv6 are not ICMP.
        assert!(!matches(
            &m(|x| x.icmp = Some(ty(8, None))),
            &key("::1", "::2", proto::ICMP, 8, 0)
        ));
        assert!(!matches(
            &m(|x| x.icmp = Some(ty(8, None))),
            &key("10.0.0.1", "10.0.0.2", proto::ICMPV6, 8, 0)
        ));
    }

    fn set_of(p: Program) -> PolicySet {
        PolicySet {
            programs: vec![p],
            endpoints: vec![
                EndpointBinding {
                    net: net("10.0.0.0/24"),
                    endpoint: crate::program::EndpointId(1),
                    ingress: Some(ProgramId(0)),
                    egress: None,
                },
                EndpointBinding {
                    net: net("10.0.0.7/32"),
                    endpoint: crate::program::EndpointId(2),
                    ingress: Some(ProgramId(0)),
                    egress: Some(ProgramId(0)),
                },
            ],
        }
    }

    #[test]
    fn linear_classifier_uses_longest_prefix_and_interned_traces() {
        let p = program(
            vec![
                tier(
                    1,
                    D::Pass,
                    vec![policy(
                        10,
                        true,
                        vec![rule(0, Action::Deny, dport(&[(22, 22)]))],
                    )],
                ),
                tier(
                    2,
                    D::Deny,
                    vec![policy(
                        20,
                        false,
                        vec![rule(0, Action::Allow, dport(&[(80, 80)]))],
                    )],
                ),
            ],
            vec![allow_profile(99)],
        );
        let c = LinearClassifier::new(set_of(p.clone())).expect("builds");
        let keys = [
            tcp("10.0.0.7", "10.0.0.9", 80),
            tcp("192.168.1.1", "10.0.0.7", 22),
            tcp("10.0.0.9", "192.168.1.1", 80),
        ];
        let mut out = [FlowVerdicts::default(); 3];
        c.classify(&keys, &mut out);
        for (k, o) in keys.iter().zip(&out) {
            for side in [o.egress, o.ingress] {
                let Some((_, v)) = side else { continue };
                let e = evaluate(&p, k, View::Enforced);
                let pe = evaluate(&p, k, View::Pending);
                assert_eq!(c.trace(v.enforced.trace), e.trace.as_slice());
                assert_eq!(v.enforced.verdict, e.verdict);
                assert_eq!(c.trace(v.pending.trace), pe.trace.as_slice());
                assert_eq!(v.pending.verdict, pe.verdict);
            }
        }
        assert_eq!(
            out[0].egress.map(|e| e.0),
            Some(crate::program::EndpointId(2))
        );
        assert_eq!(
            out[0].ingress.map(|e| e.0),
            Some(crate::program::EndpointId(1))
        );
        assert_eq!(out[1].egress, None);
        assert_eq!(
            out[1].ingress.map(|e| e.0),
            Some(crate::program::EndpointId(2))
        );
        assert_eq!(out[2].egress, None, "endpoint 1 has no egress program");
        assert_eq!(out[2].ingress, None);
        let pend = out[1].ingress.expect("bound").1.pending;
        assert_eq!(c.trace(pend.trace), &[hit(10, H::Deny, 0)]);
    }

    #[test]
    fn linear_classifier_rejects_bad_sets() {
        let mut s = set_of(Program::default());
        s.endpoints[0].ingress = Some(ProgramId(5));
        assert!(matches!(
            LinearClassifier::new(s),
            Err(LinearError::UnknownProgram { program: 5, .. })
        ));
        let mut s = set_of(Program::default());
        s.endpoints[1].net = net("10.0.0.9/24");
        assert!(matches!(
            LinearClassifier::new(s),
            Err(LinearError::DuplicateEndpoint { .. })
        ));
    }
}
