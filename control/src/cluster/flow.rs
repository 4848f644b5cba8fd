//! A flow and what the evaluation of one gives (per reporter, both views, the policy
//! hits): the shape the reference evaluator (`eval`) and the lowered program (`lower`)
//! both produce, so that they can be compared.

use std::fmt;
use std::net::IpAddr;

use dataplane::program::{FlowKey, HitAction, proto};

pub use dataplane::program::Verdict;

use super::{EndpointKind, PROFILE_TIER, Policy, Reporter};
use crate::model::{Kind, ResourceKey};

/// The name of the "no profile matched" hit in the enforced view (felix's
/// `NoMatchNameStr`, rule index 0).
pub const NO_MATCH_NAME: &str = "__NO_MATCH__";

// ---------------------------------------------------------------------------------
// Flows

/// The layer-4 part of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP, UDP or SCTP ports.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6) type and code.
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
    /// Any other protocol.
    Other,
}

/// A flow as the evaluator sees it: the first packet of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Ports or ICMP type/code.
    pub l4: L4,
}

/// A flow that cannot exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("source {src} and destination {dst} are of different address families")]
pub struct MixedFamilies {
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
}

impl Flow {
    /// A flow; `sport`/`dport` are read as ports for TCP/UDP/SCTP, as ICMP type/code for
    /// ICMP over IPv4 and ICMPv6 over IPv6 (as [`FlowKey`] stores them), and ignored
    /// otherwise.
    pub fn new(
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> Result<Flow, MixedFamilies> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(MixedFamilies { src, dst });
        }
        let icmp =
            (src.is_ipv4() && proto == proto::ICMP) || (src.is_ipv6() && proto == proto::ICMPV6);
        let l4 = if proto::has_ports(proto) {
            L4::Ports {
                src: sport,
                dst: dport,
            }
        } else if icmp {
            L4::Icmp {
                icmp_type: u8::try_from(sport).unwrap_or(u8::MAX),
                code: u8::try_from(dport).unwrap_or(u8::MAX),
            }
        } else {
            L4::Other
        };
        Ok(Flow {
            src,
            dst,
            proto,
            l4,
        })
    }

    /// The flow of a data-plane key.
    pub fn from_key(key: &FlowKey) -> Flow {
        let (src, dst) = (key.src_ip(), key.dst_ip());
        // Families of a FlowKey always agree.
        Flow::new(src, dst, key.proto, key.sport, key.dport).unwrap_or(Flow {
            src,
            dst,
            proto: key.proto,
            l4: L4::Other,
        })
    }

    /// The data-plane key of this flow.
    pub fn key(&self) -> Option<FlowKey> {
        let (sport, dport) = match self.l4 {
            L4::Ports { src, dst } => (src, dst),
            L4::Icmp { icmp_type, code } => (u16::from(icmp_type), u16::from(code)),
            L4::Other => (0, 0),
        };
        FlowKey::new(self.src, self.dst, self.proto, sport, dport)
    }

    /// Source and destination ports, for TCP, UDP and SCTP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Ports { src, dst } => Some((src, dst)),
            _ => None,
        }
    }

    /// ICMP type and code, for ICMP and ICMPv6.
    pub fn icmp(&self) -> Option<(u8, u8)> {
        match self.l4 {
            L4::Icmp { icmp_type, code } => Some((icmp_type, code)),
            _ => None,
        }
    }

    /// 4 or 6.
    pub fn ip_version(&self) -> u8 {
        if self.src.is_ipv4() { 4 } else { 6 }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = crate::model::Protocol(self.proto);
        let addr = |ip: IpAddr, port: Option<u16>| match (ip, port) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        let (sp, dp) = match self.ports() {
            Some((s, d)) => (Some(s), Some(d)),
            None => (None, None),
        };
        write!(
            f,
            "{} -> {} {proto}",
            addr(self.src, sp),
            addr(self.dst, dp)
        )?;
        if let Some((t, c)) = self.icmp() {
            write!(f, " type {t} code {c}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Hits and outcomes

/// One entry of a policy trace: Goldmane's `PolicyHit` without its position.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyHit {
    /// Tier name, or `__PROFILE__` for profiles.
    pub tier: String,
    /// Policy kind, or [`Kind::Profile`].
    pub kind: Kind,
    /// Namespace of namespaced kinds.
    pub namespace: Option<String>,
    /// Policy or profile name (`__NO_MATCH__` / `__PROFILE__` for the no-profile deny).
    pub name: String,
    /// What happened.
    pub action: HitAction,
    /// Index of the matching rule, `-1` for a tier's default action (and the pending
    /// view's no-profile deny).
    pub rule_index: i32,
}

impl PolicyHit {
    /// A hit of `policy` in `tier`.
    pub(crate) fn policy(
        tier: &str,
        policy: &Policy,
        action: HitAction,
        rule_index: i32,
    ) -> PolicyHit {
        PolicyHit {
            tier: tier.to_string(),
            kind: policy.key.kind,
            namespace: policy.key.namespace.clone(),
            name: policy.key.name.clone(),
            action,
            rule_index,
        }
    }

    /// A hit of profile `name`.
    pub(crate) fn profile(name: &str, action: HitAction, rule_index: i32) -> PolicyHit {
        PolicyHit {
            tier: PROFILE_TIER.to_string(),
            kind: Kind::Profile,
            namespace: None,
            name: name.to_string(),
            action,
            rule_index,
        }
    }

    /// The policy this hit names (kind, namespace, name).
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for PolicyHit {
    /// `<tier>|<kindShort>:[<ns>/]<name>|<action>|<ruleIndex>` (felix `RuleID`
    /// flow-log name + index; the trace position is added by [`Outcome::hit_strings`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.kind.hit_short().unwrap_or("pro");
        write!(f, "{}|{short}:", self.tier)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}|{}|{}", self.name, self.action, self.rule_index)
    }
}

/// The result of one view for one endpoint-direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Final action.
    pub verdict: Verdict,
    /// Ordered hits.
    pub hits: Vec<PolicyHit>,
}

impl Outcome {
    /// The trace as Calico hit strings `<index>|<tier>|<kind>:[<ns>/]<name>|<action>|<rule>`.
    pub fn hit_strings(&self) -> Vec<String> {
        self.hits
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{i}|{h}"))
            .collect()
    }
}

/// Both views' results at one end of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReporterOutcome {
    /// Source (egress) or destination (ingress).
    pub reporter: Reporter,
    /// The endpoint at that end.
    pub endpoint: ResourceKey,
    /// Workload or host endpoint.
    pub endpoint_kind: EndpointKind,
    /// `<ns>/<name>` for workload endpoints, `<name>` for host endpoints.
    pub endpoint_name: String,
    /// What is enforced now.
    pub enforced: Outcome,
    /// What would happen with the staged policies enforced.
    pub pending: Outcome,
}

/// The evaluation of one flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The flow.
    pub flow: Flow,
    /// Source reporter (if the source is an endpoint), then destination reporter.
    pub reporters: Vec<ReporterOutcome>,
}

impl Evaluation {
    /// The reporter of one end, if that end is an endpoint.
    pub fn reporter(&self, r: Reporter) -> Option<&ReporterOutcome> {
        self.reporters.iter().find(|x| x.reporter == r)
    }

    /// Combined enforced action: every reporter must allow (§3.7).
    pub fn enforced(&self) -> Verdict {
        combine(self.reporters.iter().map(|r| r.enforced.verdict))
    }

    /// Combined pending action: every reporter must allow.
    pub fn pending(&self) -> Verdict {
        combine(self.reporters.iter().map(|r| r.pending.verdict))
    }
}

fn combine(mut verdicts: impl Iterator<Item = Verdict>) -> Verdict {
    if verdicts.any(|v| v == Verdict::Deny) {
        Verdict::Deny
    } else {
        Verdict::Allow
    }
}
