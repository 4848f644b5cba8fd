//! Rule programs: what one endpoint-direction evaluates, and the verdicts it yields.
//!
//! This module owns the data plane's policy vocabulary. It knows nothing of Calico
//! names, YAML or selectors: `control::lower` turns a policy store into [`Program`]s
//! whose policies and rules carry opaque ids ([`PolicyId`], [`Rule::index`]) that the
//! control plane maps back to Calico hit strings.
//!
//! # Semantics (the contract every classifier implements)
//!
//! This is Calico's behaviour, checked against its source (projectcalico/calico
//! @ 87c15906f20c): the enforced view is what felix's data plane does and reports
//! (`felix/rules/endpoints.go`, `felix/calc/endpoint_lookup_cache.go`,
//! `felix/collector/collector.go`, `felix/collector/stats.go`); the pending view is
//! felix's userspace re-evaluation with staged policies promoted
//! (`app-policy/checker/check.go` `checkTiers` with `StagedAsEnforced`, called from
//! `felix/collector/collector.go` `evaluatePendingRuleTrace`). `control::eval` is the
//! independent reference implementation of both.
//!
//! A [`Program`] is evaluated twice per packet, once per [`View`]:
//! - [`View::Enforced`]: staged policies are ignored. A tier whose policies are all
//!   staged is skipped entirely, its default action included.
//! - [`View::Pending`]: staged policies are treated as enforced ("what if the staged
//!   policies went live now").
//!
//! In each view, tiers are walked in order (a tier with no policy visible in the view
//! is skipped). Inside a tier, policies are walked in order and inside a policy,
//! rules in order. The first rule whose [`Match`] holds decides for the tier:
//! - [`Action::Allow`] / [`Action::Deny`]: final. The hit `(policy, Allow|Deny, rule
//!   index)` is recorded and evaluation stops.
//! - [`Action::Pass`]: the hit `(policy, Pass, rule index)` is recorded; evaluation
//!   continues with the next tier (or with the profiles after the last tier).
//! - [`Action::Log`]: records nothing in the trace and evaluation goes on with the next
//!   rule (a log rule never decides).
//!
//! If no rule of a visited tier decided, the tier's [`TierDefault`] applies and is
//! recorded as an end-of-tier hit `(trigger, Deny|Pass, -1)` — a `TierDefault::Pass`
//! is recorded too, with action Pass. The *trigger* policy is:
//! - enforced view: the **last** enforced policy of the tier (felix attributes the
//!   end-of-tier NFLOG to the last non-staged policy that selected the endpoint);
//! - pending view: the **first** policy of the tier, staged or not (the checker
//!   attributes it to the first policy that had no match, and every policy of the tier
//!   had none).
//!
//! `TierDefault::Deny` is final; `TierDefault::Pass` continues with the next tier.
//!
//! After the tiers (or a Pass out of the last visited tier) come the profiles, in
//! order. Profiles are never staged (the `staged` flag of a profile is ignored), but
//! the two views treat them differently, exactly as Calico does:
//! - Both views: in each profile, rules are walked in order; Log records nothing; a
//!   profile in which no rule matched is left for the next profile. A matching Allow
//!   rule records `(profile, Allow, rule index)` and allows; a matching Deny rule
//!   records `(profile, Deny, rule index)` and denies.
//! - A matching **Pass** rule in a profile: in the enforced view it ends that profile
//!   *without a hit* (the data plane's pass mark only skips to the next profile, and
//!   the collector overwrites the pass record with the verdict that follows) and
//!   evaluation continues with the next profile; in the pending view it **denies**,
//!   recording `(profile, Deny, rule index)` (the checker maps a profile Pass to deny).
//! - No profile decided, enforced view: deny with the hit
//!   `(PolicyId::NO_PROFILE_MATCH, Deny, 0)` (felix's "no profile matched" NFLOG,
//!   reported as `__PROFILE__|pro:__NO_MATCH__|deny|0`), whether or not the endpoint
//!   has profiles.
//! - No profile decided, pending view: if the program has **no** profiles, deny with
//!   the hit `(PolicyId::NO_PROFILE_MATCH, Deny, -1)` (reported as
//!   `__PROFILE__|pro:__PROFILE__|deny|-1`); if it has profiles but none decided, deny
//!   with **no** hit.
//!
//! The result of one view is an [`Outcome`]: the final action (allow or deny) and the
//! trace, the ordered list of [`Hit`]s.
//!
//! # Match semantics
//!
//! All present criteria of a [`Match`] must hold (AND). Within one set it is OR.
//! A `None` positive set means "any"; `Some(empty)` matches nothing. A negated set
//! excludes every packet it contains (an empty negated set is absent). Port criteria
//! (a `Some` positive set or a non-empty negated set) only match packets whose
//! protocol carries ports (TCP, UDP, SCTP); ICMP criteria (`icmp` or `not_icmp`) only
//! match ICMP (IPv4, protocol 1) or ICMPv6 (IPv6, protocol 58) packets. Prefixes of
//! the other address family than the packet's never match it (so a positive set with
//! only such prefixes matches nothing, a negated one excludes nothing). A prefix
//! matches by its leading `prefix_len` bits (host bits are ignored); a port range
//! with `lo > hi` contains no port. `icmp` matches when the type equals the key's
//! `sport` and, if a code is given, the code equals its `dport`; `not_icmp` excludes
//! exactly the packets `icmp` with the same value would match.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// IP protocol numbers the semantics above refer to.
pub mod proto {
    /// ICMP (IPv4).
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;

    /// Whether packets of this protocol carry source and destination ports.
    pub const fn has_ports(p: u8) -> bool {
        matches!(p, TCP | UDP | SCTP)
    }
}

/// IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Family {
    /// IPv4.
    V4 = 4,
    /// IPv6.
    V6 = 6,
}

/// The classification key of a packet: what the classifier and the flow table see.
///
/// Addresses are stored as `u128`; an IPv4 address occupies the low 32 bits (it is
/// *not* v4-mapped). For ICMP and ICMPv6 packets `sport` holds the ICMP type and
/// `dport` the ICMP code; for protocols without ports both are 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FlowKey {
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// Source port (ICMP: type).
    pub sport: u16,
    /// Destination port (ICMP: code).
    pub dport: u16,
    /// IP protocol number (IPv6: the upper-layer protocol after extension headers).
    pub proto: u8,
    /// Address family of `src` and `dst`.
    pub family: Family,
    /// Interface (port index) the packet arrived on.
    pub ifindex: u16,
}

impl FlowKey {
    /// Builds a key from std addresses. Returns `None` if the families differ.
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Option<Self> {
        let (family, src, dst) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                (Family::V4, u32::from(s) as u128, u32::from(d) as u128)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => (Family::V6, u128::from(s), u128::from(d)),
            _ => return None,
        };
        Some(FlowKey {
            src,
            dst,
            sport,
            dport,
            proto,
            family,
            ifindex: 0,
        })
    }

    /// The source address as a std address.
    pub fn src_ip(&self) -> IpAddr {
        addr_of(self.family, self.src)
    }

    /// The destination address as a std address.
    pub fn dst_ip(&self) -> IpAddr {
        addr_of(self.family, self.dst)
    }

    /// The same flow seen from the other end (addresses and ports swapped; ICMP
    /// type/code are left as they are).
    pub fn reversed(&self) -> Self {
        let icmp = matches!(
            (self.family, self.proto),
            (Family::V4, proto::ICMP) | (Family::V6, proto::ICMPV6)
        );
        let (sport, dport) = if icmp {
            (self.sport, self.dport)
        } else {
            (self.dport, self.sport)
        };
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport,
            dport,
            ..*self
        }
    }
}

/// Converts a stored address back to a std address.
pub fn addr_of(family: Family, a: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4((a as u32).into()),
        Family::V6 => IpAddr::V6(a.into()),
    }
}

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Accept; final.
    Allow,
    /// Drop; final.
    Deny,
    /// Leave this tier; continue with the next tier (or the profiles).
    Pass,
    /// Record and continue with the next rule; never decides.
    Log,
}

/// What a tier does when none of its rules decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TierDefault {
    /// End-of-tier drop (the usual default).
    Deny,
    /// Continue with the next tier.
    Pass,
}

/// An inclusive port range `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port in the range.
    pub lo: u16,
    /// Last port in the range (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// A range of one port.
    pub const fn single(p: u16) -> Self {
        PortRange { lo: p, hi: p }
    }

    /// Whether `p` lies in the range.
    pub const fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

/// An ICMP type, optionally with a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IcmpMatch {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code; `None` = any code.
    pub code: Option<u8>,
}

/// An address list of a [`Match`]: shared, because a control plane that expands peer
/// criteria into addresses names the same long list from many rules and programs
/// (cloning a rule or a program copies no address).
pub type Nets = Arc<[IpNet]>;

/// The criteria of one rule. See the module documentation for the semantics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Match {
    /// Only packets of this family (Calico `ipVersion`); `None` = both.
    pub family: Option<Family>,
    /// Only packets of this protocol.
    pub protocol: Option<u8>,
    /// Not packets of this protocol.
    pub not_protocol: Option<u8>,
    /// Source address in one of these prefixes; `None` = any.
    pub src_nets: Option<Nets>,
    /// Source address in none of these prefixes.
    pub not_src_nets: Nets,
    /// Destination address in one of these prefixes; `None` = any.
    pub dst_nets: Option<Nets>,
    /// Destination address in none of these prefixes.
    pub not_dst_nets: Nets,
    /// Source port in one of these ranges; `None` = any.
    pub src_ports: Option<Vec<PortRange>>,
    /// Source port in none of these ranges.
    pub not_src_ports: Vec<PortRange>,
    /// Destination port in one of these ranges; `None` = any.
    pub dst_ports: Option<Vec<PortRange>>,
    /// Destination port in none of these ranges.
    pub not_dst_ports: Vec<PortRange>,
    /// ICMP type/code must equal this.
    pub icmp: Option<IcmpMatch>,
    /// ICMP type/code must not equal this.
    pub not_icmp: Option<IcmpMatch>,
}

/// Opaque policy (or profile) id, mapped back to a name by the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(pub u32);

impl PolicyId {
    /// The "no profile matched" hit of the final deny when no profile decided (rule
    /// index `0` in the enforced view, `-1` in the pending view; see the module doc).
    pub const NO_PROFILE_MATCH: PolicyId = PolicyId(u32::MAX);
}

/// Opaque tier id, mapped back to a name by the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierId(pub u32);

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The rule index reported in hits (the position of the source rule in its
    /// policy; several rules lowered from one source rule share it).
    pub index: u32,
    /// What happens when the rule matches.
    pub action: Action,
    /// When it matches.
    pub matches: Match,
}

/// One policy: an ordered list of rules, staged or enforced.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Opaque id reported in hits.
    pub id: PolicyId,
    /// A staged policy is only seen by [`View::Pending`].
    pub staged: bool,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// One tier: ordered policies and a default action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tier {
    /// Opaque id.
    pub id: TierId,
    /// Applied when no rule of a visited tier decided.
    pub default_action: TierDefault,
    /// Policies in evaluation order (only those that apply to the endpoint-direction).
    pub policies: Vec<Policy>,
}

/// What one endpoint-direction evaluates: tiers, then profiles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Program {
    /// Tiers in evaluation order.
    pub tiers: Vec<Tier>,
    /// Profiles in order (never staged).
    pub profiles: Vec<Policy>,
}

impl Program {
    /// Bytes it holds beyond its own struct: tiers, policies, rules and port ranges.
    /// Address lists are shared (`Nets`), so only their handles count; their
    /// addresses belong to whoever interned them.
    pub fn heap_bytes(&self) -> usize {
        let policy = |p: &Policy| {
            size_of::<Policy>()
                + p.rules
                    .iter()
                    .map(|r| {
                        let m = &r.matches;
                        let ports = |v: &[PortRange]| size_of_val(v);
                        size_of::<Rule>()
                            + m.src_ports.as_deref().map_or(0, ports)
                            + ports(&m.not_src_ports)
                            + m.dst_ports.as_deref().map_or(0, ports)
                            + ports(&m.not_dst_ports)
                    })
                    .sum::<usize>()
        };
        self.tiers
            .iter()
            .map(|t| size_of::<Tier>() + t.policies.iter().map(policy).sum::<usize>())
            .sum::<usize>()
            + self.profiles.iter().map(policy).sum::<usize>()
    }
}

/// Which of the two evaluations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    /// Staged policies ignored: what the data plane does.
    Enforced,
    /// Staged policies treated as enforced: what would happen if they went live.
    Pending,
}

/// The action a hit records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HitAction {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Passed to the next tier.
    Pass,
}

impl fmt::Display for HitAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HitAction::Allow => "allow",
            HitAction::Deny => "deny",
            HitAction::Pass => "pass",
        })
    }
}

/// One entry of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hit {
    /// The policy (or profile) whose rule matched, or the end-of-tier trigger.
    pub policy: PolicyId,
    /// What the hit did.
    pub action: HitAction,
    /// The matching rule's [`Rule::index`], or `-1` for a tier default. For
    /// [`PolicyId::NO_PROFILE_MATCH`]: `0` in the enforced view, `-1` in the pending view.
    pub rule_index: i32,
}

/// The final action of a view.
///
/// Four bytes wide, so a [`Decision`] and a [`Verdicts`] have no padding and copy as
/// plain words (the classifier copies one `Verdicts` per lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Verdict {
    /// Let the packet through.
    Allow,
    /// Drop it.
    Deny,
}

/// The result of one view: final action and the ordered hits that led to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Outcome {
    /// Final action.
    pub verdict: Verdict,
    /// Ordered hits.
    pub trace: Vec<Hit>,
}

// ---------------------------------------------------------------------------------
// Compact verdicts: what the classifier returns and the flow table caches.

/// Interned trace: an index into the trace table of the classifier generation that
/// produced it (see the classifier's `trace` accessor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub u32);

/// One view's result in compact form: final action plus interned trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Final action.
    pub verdict: Verdict,
    /// The trace that led to it.
    pub trace: TraceId,
}

/// Both views' results for one endpoint-direction, produced by one classification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdicts {
    /// What the data plane does (staged policies ignored).
    pub enforced: Decision,
    /// What would happen if the staged policies were enforced.
    pub pending: Decision,
}

/// Opaque id of a local endpoint, mapped back to a name by the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u32);

/// The verdicts of one packet's flow: the source endpoint's egress program and the
/// destination endpoint's ingress program. An end that is not a local endpoint has
/// `None` (no policy applies there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowVerdicts {
    /// Source endpoint and its egress verdicts.
    pub egress: Option<(EndpointId, Verdicts)>,
    /// Destination endpoint and its ingress verdicts.
    pub ingress: Option<(EndpointId, Verdicts)>,
}

impl FlowVerdicts {
    /// Combined enforced action: both ends must allow (an absent end allows).
    pub fn enforced(&self) -> Verdict {
        combine(
            self.egress.map(|(_, v)| v.enforced.verdict),
            self.ingress.map(|(_, v)| v.enforced.verdict),
        )
    }

    /// Combined pending action: both ends must allow (an absent end allows).
    pub fn pending(&self) -> Verdict {
        combine(
            self.egress.map(|(_, v)| v.pending.verdict),
            self.ingress.map(|(_, v)| v.pending.verdict),
        )
    }
}

fn combine(a: Option<Verdict>, b: Option<Verdict>) -> Verdict {
    if a == Some(Verdict::Deny) || b == Some(Verdict::Deny) {
        Verdict::Deny
    } else {
        Verdict::Allow
    }
}

/// A compiled policy generation that classifies packets. Implemented by the decision
/// tree classifier and by the linear reference; the worker pipeline is generic over it.
pub trait Classify: Send + Sync {
    /// Classifies a batch: `out[i]` receives the verdicts of `keys[i]`.
    /// `out.len()` must be at least `keys.len()`; extra entries are left untouched.
    /// Never allocates, locks or panics.
    fn classify(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]);

    /// The interned trace behind a [`TraceId`] returned by this generation.
    fn trace(&self, id: TraceId) -> &[Hit];
}

/// A generation shared with its builder (a control plane that keeps it to derive the
/// next one from) classifies as the generation itself: one pointer more per batch,
/// still static dispatch.
impl<C: Classify + ?Sized> Classify for Arc<C> {
    #[inline]
    fn classify(&self, keys: &[FlowKey], out: &mut [FlowVerdicts]) {
        (**self).classify(keys, out);
    }

    #[inline]
    fn trace(&self, id: TraceId) -> &[Hit] {
        (**self).trace(id)
    }
}

// ---------------------------------------------------------------------------------
// A policy generation: every Program plus the local endpoints they apply to.

/// Index of a [`Program`] in [`PolicySet::programs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId(pub u32);

/// A local endpoint: the packets whose address lies in `net` belong to it. A packet's
/// source endpoint evaluates its `egress` program, its destination endpoint its
/// `ingress` program. `None` means no policy applies in that direction (the
/// [`FlowVerdicts`] side stays `None`, as for a non-local address).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointBinding {
    /// The endpoint's addresses (usually a /32 or /128). Overlapping bindings are
    /// resolved by longest prefix; two bindings of the same prefix are an error.
    pub net: IpNet,
    /// Reported in [`FlowVerdicts`].
    pub endpoint: EndpointId,
    /// Program for traffic to the endpoint.
    pub ingress: Option<ProgramId>,
    /// Program for traffic from the endpoint.
    pub egress: Option<ProgramId>,
}

/// Everything one classifier generation is compiled from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicySet {
    /// Programs, indexed by [`ProgramId`].
    pub programs: Vec<Program>,
    /// Local endpoints.
    pub endpoints: Vec<EndpointBinding>,
}

impl PolicySet {
    /// Every rule of every program: tier by tier, then the profiles'.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.programs.iter().flat_map(|p| {
            p.tiers
                .iter()
                .flat_map(|t| &t.policies)
                .chain(&p.profiles)
                .flat_map(|pol| &pol.rules)
        })
    }
}
