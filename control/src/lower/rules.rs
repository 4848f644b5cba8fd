//! One Calico rule → the IR rules that match exactly the same packets.
//!
//! A rule's criteria are a conjunction, which the IR's [`Match`] expresses directly,
//! except where Calico's criteria depend on the *peer endpoint*:
//! - selectors, `notSelector`, `namespaceSelector`, `serviceAccounts` become the
//!   prefixes of every endpoint and network set they select (felix renders them as IP
//!   sets); positive ones are intersected with `nets`, negated ones united with
//!   `notNets`;
//! - a named port is a set of (address, protocol, port) triples — the peer endpoints
//!   that define the name (filtered by the rule's positive selector, as felix's rule
//!   scanner does). `ports: [80, http]` is "port 80, or one of these triples", a
//!   disjunction across dimensions, so the rule is split into several IR rules sharing
//!   the source rule's index and action (first match over them ≡ the one rule);
//! - a negated named port (`notPorts: [http]`) excludes those triples: the address
//!   space is cut into regions inside which the excluded (protocol, port) pairs are
//!   constant, one IR rule per region (and per protocol when several are excluded).
//!
//! Rules that can never match (`services`, an impossible `ipVersion`, an empty
//! positive set) lower to no IR rule at all; Log rules are not lowered either (they
//! never decide, and tiergate does not log packets).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use dataplane::program::{Action, Family, IcmpMatch, Match, PortRange, Rule, proto};
use ipnet::IpNet;

use super::nets::{intersect_opt, normalize, simplify, union};
use crate::eval::{Cluster, PeerMatch, PolicyRule};
use crate::model::{IcmpFields, Port, RuleAction};
use crate::selector::Selector;

/// The protocols whose packets carry ports (a port criterion implies one of them).
const PORT_PROTOCOLS: [u8; 3] = [proto::TCP, proto::UDP, proto::SCTP];

/// Every port: the criterion that only says "the packet has ports".
const ANY_PORT: PortRange = PortRange {
    lo: 0,
    hi: u16::MAX,
};

/// A source rule would lower to more IR rules than this (named ports on both sides
/// of many endpoints multiply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooManyRules {
    /// How many it would have needed, at least.
    pub(crate) count: usize,
}

/// Resolves peer criteria against one cluster; caches selector → prefixes.
#[derive(Debug)]
pub(crate) struct Resolver<'c> {
    cluster: &'c Cluster,
    selector_nets: HashMap<Selector, Vec<IpNet>>,
    /// Upper bound on IR rules per source rule.
    pub(crate) max_rules: usize,
}

/// One way a side's positive port criterion can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortAlt {
    /// The peer address must also be in these (a named port's endpoints).
    nets: Option<Vec<IpNet>>,
    /// The packet must be of this protocol (a named port's protocol).
    protocol: Option<u8>,
    /// Port in one of these.
    ports: Option<Vec<PortRange>>,
}

/// A region of the peer address space with what the negated ports exclude there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NotPortRegion {
    /// Inside these (None = anywhere)...
    nets: Option<Vec<IpNet>>,
    /// ...but not inside these.
    not_nets: Vec<IpNet>,
    /// The packet must be of this protocol (when the excluded ports depend on it).
    protocol: Option<u8>,
    /// Ports excluded.
    not_ports: Vec<PortRange>,
}

/// Everything one side (source or destination) of a rule contributes.
#[derive(Clone, Debug)]
struct Side {
    /// Positive address set (None = any).
    nets: Option<Vec<IpNet>>,
    /// Negated address set.
    not_nets: Vec<IpNet>,
    /// Alternatives of the positive port criterion (one `any` if there is none).
    alts: Vec<PortAlt>,
    /// Regions of the negated port criterion (one `anywhere` if it has no named ports).
    regions: Vec<NotPortRegion>,
    /// The side has a port criterion, so only packets with ports can match.
    needs_ports: bool,
}

fn icmp_match(i: Option<IcmpFields>) -> Option<IcmpMatch> {
    // A code without a type is invalid input; like `eval`, such a criterion is absent.
    i.and_then(|i| {
        i.icmp_type.map(|t| IcmpMatch {
            icmp_type: t,
            code: i.code,
        })
    })
}

fn numeric(ports: &[Port]) -> Vec<PortRange> {
    ports
        .iter()
        .filter_map(|p| match p {
            Port::Number(n) => Some(PortRange::single(*n)),
            Port::Range(lo, hi) => Some(PortRange { lo: *lo, hi: *hi }),
            Port::Named(_) => None,
        })
        .collect()
}

fn names(ports: &[Port]) -> Vec<&str> {
    ports
        .iter()
        .filter_map(|p| match p {
            Port::Named(n) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// Agreeing protocol constraints combined; `Err` when they conflict.
fn merge_protocol(a: Option<u8>, b: Option<u8>) -> Result<Option<u8>, ()> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => Err(()),
        (x, y) => Ok(x.or(y)),
    }
}

impl<'c> Resolver<'c> {
    /// Default bound on IR rules per source rule.
    pub(crate) const MAX_RULES: usize = 4096;

    pub(crate) fn new(cluster: &'c Cluster) -> Self {
        Resolver {
            cluster,
            selector_nets: HashMap::new(),
            max_rules: Self::MAX_RULES,
        }
    }

    /// The prefixes of every endpoint and network set the selector matches (labels
    /// inherited from profiles included), normalized.
    pub(crate) fn selector_nets(&mut self, s: &Selector) -> Vec<IpNet> {
        if let Some(n) = self.selector_nets.get(s) {
            return n.clone();
        }
        let c = self.cluster;
        let mut nets = Vec::new();
        for e in &c.endpoints {
            if s.matches(&c.endpoint_labels(e)) {
                nets.extend(e.nets.iter().copied());
            }
        }
        for set in &c.network_sets {
            if s.matches(&c.labels_of(&set.labels, &set.profiles)) {
                nets.extend(set.nets.iter().copied());
            }
        }
        let nets = normalize(nets);
        self.selector_nets.insert(s.clone(), nets.clone());
        nets
    }

    /// Named ports called one of `names` on endpoints matching `selector` (any endpoint
    /// when `None`): (protocol, port) → the endpoints' prefixes.
    fn named_ports(
        &self,
        names: &[&str],
        selector: Option<&Selector>,
    ) -> BTreeMap<(u8, u16), Vec<IpNet>> {
        let c = self.cluster;
        let mut out: BTreeMap<(u8, u16), Vec<IpNet>> = BTreeMap::new();
        for e in &c.endpoints {
            if e.nets.is_empty() || !e.ports.iter().any(|p| names.contains(&p.name.as_str())) {
                continue;
            }
            if selector.is_some_and(|s| !s.matches(&c.endpoint_labels(e))) {
                continue;
            }
            for p in e.ports.iter().filter(|p| names.contains(&p.name.as_str())) {
                out.entry((p.protocol.0, p.port))
                    .or_default()
                    .extend(e.nets.iter().copied());
            }
        }
        out.into_iter().map(|(k, v)| (k, normalize(v))).collect()
    }

    fn side(&mut self, m: &PeerMatch) -> Option<Side> {
        let mut nets = (!m.nets.is_empty()).then(|| normalize(m.nets.clone()));
        if let Some(s) = &m.selector {
            let sel = self.selector_nets(s);
            nets = intersect_opt(nets, Some(&sel));
        }
        let mut not_nets = normalize(m.not_nets.clone());
        if let Some(s) = &m.not_selector {
            let sel = self.selector_nets(s);
            not_nets = union(&not_nets, &sel);
        }
        simplify(&mut nets, &mut not_nets);
        if nets.as_ref().is_some_and(Vec::is_empty) {
            return None;
        }

        // Positive ports: numeric ones, or one of the named ports' triples.
        let mut alts = Vec::new();
        if m.ports.is_empty() {
            alts.push(PortAlt {
                nets: None,
                protocol: None,
                ports: None,
            });
        } else {
            let num = numeric(&m.ports);
            if !num.is_empty() {
                alts.push(PortAlt {
                    nets: None,
                    protocol: None,
                    ports: Some(num),
                });
            }
            let named = names(&m.ports);
            if !named.is_empty() {
                for ((protocol, port), prefixes) in self.named_ports(&named, m.selector.as_ref()) {
                    alts.push(PortAlt {
                        nets: Some(prefixes),
                        protocol: Some(protocol),
                        ports: Some(vec![PortRange::single(port)]),
                    });
                }
            }
        }

        // Negated ports.
        let not_num = numeric(&m.not_ports);
        let not_named = names(&m.not_ports);
        let regions = if not_named.is_empty() {
            vec![NotPortRegion {
                nets: None,
                not_nets: Vec::new(),
                protocol: None,
                not_ports: not_num,
            }]
        } else {
            let triples = self.named_ports(&not_named, m.selector.as_ref());
            not_port_regions(&triples, &not_num)
        };

        Some(Side {
            nets,
            not_nets,
            alts,
            regions,
            needs_ports: !m.ports.is_empty() || !m.not_ports.is_empty(),
        })
    }

    /// The IR rules of one source rule, all with `index`.
    pub(crate) fn lower_rule(
        &mut self,
        pr: &PolicyRule,
        index: u32,
    ) -> Result<Vec<Rule>, TooManyRules> {
        let r = &pr.rule;
        let action = match r.action {
            RuleAction::Allow => Action::Allow,
            RuleAction::Deny => Action::Deny,
            RuleAction::Pass => Action::Pass,
            RuleAction::Log => return Ok(Vec::new()),
        };
        // Kubernetes Services are not modelled: such a rule never matches (as in eval).
        if pr.source.services || pr.destination.services {
            return Ok(Vec::new());
        }
        let family = match r.ip_version {
            None => None,
            Some(4) => Some(Family::V4),
            Some(6) => Some(Family::V6),
            Some(_) => return Ok(Vec::new()),
        };
        let (Some(src), Some(dst)) = (self.side(&pr.source), self.side(&pr.destination)) else {
            return Ok(Vec::new());
        };

        let combos = src.alts.len() * src.regions.len() * dst.alts.len() * dst.regions.len();
        if combos > self.max_rules {
            return Err(TooManyRules { count: combos });
        }

        let base = Match {
            family,
            protocol: r.protocol.map(|p| p.0),
            not_protocol: r.not_protocol.map(|p| p.0),
            icmp: icmp_match(r.icmp),
            not_icmp: icmp_match(r.not_icmp),
            ..Match::default()
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for sa in &src.alts {
            for sr in &src.regions {
                for da in &dst.alts {
                    for dr in &dst.regions {
                        let Some(m) = combine(&base, (&src, sa, sr), (&dst, da, dr)) else {
                            continue;
                        };
                        if seen.insert(m.clone()) {
                            out.push(Rule {
                                index,
                                action,
                                matches: m,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The negated-port regions of one side: `triples` are the excluded named ports
/// ((protocol, port) → prefixes), `numeric` the excluded numeric ports.
///
/// The prefixes form a laminar family; an address in prefix `Q` but in no smaller
/// prefix of the family lies in exactly the prefixes that contain `Q`, so the excluded
/// (protocol, port) pairs are constant on "`Q` minus the smaller prefixes inside it",
/// and outside every prefix only the numeric ports are excluded.
fn not_port_regions(
    triples: &BTreeMap<(u8, u16), Vec<IpNet>>,
    numeric: &[PortRange],
) -> Vec<NotPortRegion> {
    let all: BTreeSet<IpNet> = triples.values().flatten().copied().collect();
    let mut out = vec![NotPortRegion {
        nets: None,
        not_nets: normalize(all.iter().copied().collect()),
        protocol: None,
        not_ports: numeric.to_vec(),
    }];
    for q in &all {
        let inside: Vec<IpNet> = all
            .iter()
            .filter(|x| *x != q && q.contains(*x))
            .copied()
            .collect();
        let mut by_proto: BTreeMap<u8, Vec<PortRange>> = BTreeMap::new();
        for ((protocol, port), prefixes) in triples {
            if prefixes.iter().any(|p| p.contains(q)) {
                by_proto
                    .entry(*protocol)
                    .or_default()
                    .push(PortRange::single(*port));
            }
        }
        let nets = Some(vec![*q]);
        let not_nets = normalize(inside);
        // Per port-carrying protocol; a protocol with nothing excluded here gets only the
        // numeric exclusions. (Named ports of other protocols never exclude anything: a
        // port criterion only matches packets with ports.)
        for p in PORT_PROTOCOLS {
            let mut not_ports = numeric.to_vec();
            not_ports.extend(by_proto.get(&p).into_iter().flatten().copied());
            out.push(NotPortRegion {
                nets: nets.clone(),
                not_nets: not_nets.clone(),
                protocol: Some(p),
                not_ports,
            });
        }
    }
    out
}

/// One IR match from the rule's base criteria and one choice per side; `None` when
/// the choices contradict each other.
fn combine(
    base: &Match,
    (src, sa, sr): (&Side, &PortAlt, &NotPortRegion),
    (dst, da, dr): (&Side, &PortAlt, &NotPortRegion),
) -> Option<Match> {
    let mut m = base.clone();
    for p in [sa.protocol, sr.protocol, da.protocol, dr.protocol] {
        m.protocol = merge_protocol(m.protocol, p).ok()?;
    }
    if let Some(p) = m.protocol {
        if m.not_protocol == Some(p) {
            return None;
        }
        m.not_protocol = None;
    }
    let side_nets = |side: &Side, alt: &PortAlt, region: &NotPortRegion| {
        let mut pos = intersect_opt(side.nets.clone(), alt.nets.as_deref());
        pos = intersect_opt(pos, region.nets.as_deref());
        let mut neg = union(&side.not_nets, &region.not_nets);
        if let Some(f) = base.family {
            let same = |n: &IpNet| (f == Family::V4) == matches!(n, IpNet::V4(_));
            if let Some(p) = &mut pos {
                p.retain(same);
            }
            neg.retain(same);
        }
        simplify(&mut pos, &mut neg);
        (pos, neg)
    };
    let (src_nets, not_src_nets) = side_nets(src, sa, sr);
    let (dst_nets, not_dst_nets) = side_nets(dst, da, dr);
    if src_nets.as_ref().is_some_and(Vec::is_empty) || dst_nets.as_ref().is_some_and(Vec::is_empty)
    {
        return None;
    }
    m.src_nets = src_nets;
    m.not_src_nets = not_src_nets;
    m.dst_nets = dst_nets;
    m.not_dst_nets = not_dst_nets;

    let ports = |side: &Side, alt: &PortAlt, region: &NotPortRegion| {
        let mut pos = alt.ports.clone();
        let neg = region.not_ports.clone();
        // A port criterion whose exclusions resolved to nothing still requires ports.
        if side.needs_ports && pos.is_none() && neg.is_empty() {
            pos = Some(vec![ANY_PORT]);
        }
        (pos, neg)
    };
    (m.src_ports, m.not_src_ports) = ports(src, sa, sr);
    (m.dst_ports, m.not_dst_ports) = ports(dst, da, dr);
    Some(m)
}
