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
//!   the same, one IR rule per region and protocol — cut only from the named ports
//!   whose numbers the rule's positive ports allow, so usually nothing is cut.
//!
//! Rules that can never match (`services`, an impossible `ipVersion`, an empty
//! positive set) lower to no IR rule at all; Log rules are not lowered either (they
//! never decide, and tiergate does not log packets).
//!
//! # Shared address lists
//! A named port expands, per rule, into every endpoint defining it (thousands of
//! `/32`s per port number at cluster scale), and the same lists recur in every rule
//! and program naming them. Every list this module produces is therefore *interned*
//! ([`Interner`]: one [`Nets`] allocation per distinct content, kept by the lowering
//! memo across generations), and the set arithmetic on lists (intersection, union,
//! simplification) is computed once per distinct pair of interned inputs, keyed by
//! their addresses. Equal lists being one allocation, rules and rule lists can be
//! compared and hashed by list address ([`match_eq`], [`match_hash`]); that is only
//! ever an under-approximation of content equality (two equal lists from different
//! allocations compare unequal, which costs sharing, never a wrong verdict).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use dataplane::program::{Action, Family, IcmpMatch, Match, Nets, PortRange, Rule, proto};
use ipnet::IpNet;

use super::nets::{contains, intersect, normalize, simplify, union};
use crate::cluster::{Cluster, PeerMatch, PolicyRule, rendered_for_version};
use crate::model::{IcmpFields, Port, RuleAction};
use crate::selector::{LabelChain, Selector};

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

/// The distinct address lists of a lowering: one allocation per content.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    lists: HashSet<Nets>,
}

impl Interner {
    /// The interned list with the content of `v`.
    pub(crate) fn intern(&mut self, v: Vec<IpNet>) -> Nets {
        if let Some(n) = self.lists.get(v.as_slice()) {
            return n.clone();
        }
        let n: Nets = v.into();
        self.lists.insert(n.clone());
        n
    }

    /// Forgets the lists nothing else holds.
    pub(crate) fn prune(&mut self) {
        self.lists.retain(|n| Arc::strong_count(n) > 1);
    }

    /// Bytes of the distinct lists, roughly.
    pub(crate) fn bytes(&self) -> usize {
        self.lists
            .iter()
            .map(|n| n.len() * size_of::<IpNet>() + 2 * size_of::<usize>())
            .sum::<usize>()
            + self.lists.capacity() * size_of::<Nets>()
    }
}

/// The address of a list: equal addresses are the same list while either is alive.
fn addr(n: &Nets) -> usize {
    Arc::as_ptr(n) as *const IpNet as usize
}

fn addr_opt(n: Option<&Nets>) -> usize {
    n.map_or(0, addr)
}

fn same_opt(a: Option<&Nets>, b: Option<&Nets>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Whether two matches are equal, their lists compared by address (equal lists that
/// are different allocations compare unequal).
pub(crate) fn match_eq(a: &Match, b: &Match) -> bool {
    let Match {
        family,
        protocol,
        not_protocol,
        src_nets,
        not_src_nets,
        dst_nets,
        not_dst_nets,
        src_ports,
        not_src_ports,
        dst_ports,
        not_dst_ports,
        icmp,
        not_icmp,
    } = a;
    *family == b.family
        && *protocol == b.protocol
        && *not_protocol == b.not_protocol
        && same_opt(src_nets.as_ref(), b.src_nets.as_ref())
        && Arc::ptr_eq(not_src_nets, &b.not_src_nets)
        && same_opt(dst_nets.as_ref(), b.dst_nets.as_ref())
        && Arc::ptr_eq(not_dst_nets, &b.not_dst_nets)
        && *src_ports == b.src_ports
        && *not_src_ports == b.not_src_ports
        && *dst_ports == b.dst_ports
        && *not_dst_ports == b.not_dst_ports
        && *icmp == b.icmp
        && *not_icmp == b.not_icmp
}

/// A hash consistent with [`match_eq`] (lists hashed by address).
pub(crate) fn match_hash<H: Hasher>(m: &Match, h: &mut H) {
    let Match {
        family,
        protocol,
        not_protocol,
        src_nets,
        not_src_nets,
        dst_nets,
        not_dst_nets,
        src_ports,
        not_src_ports,
        dst_ports,
        not_dst_ports,
        icmp,
        not_icmp,
    } = m;
    family.hash(h);
    protocol.hash(h);
    not_protocol.hash(h);
    addr_opt(src_nets.as_ref()).hash(h);
    addr(not_src_nets).hash(h);
    addr_opt(dst_nets.as_ref()).hash(h);
    addr(not_dst_nets).hash(h);
    src_ports.hash(h);
    not_src_ports.hash(h);
    dst_ports.hash(h);
    not_dst_ports.hash(h);
    icmp.hash(h);
    not_icmp.hash(h);
}

/// A match as a set key, compared by [`match_eq`].
struct ByLists(Match);

impl PartialEq for ByLists {
    fn eq(&self, o: &Self) -> bool {
        match_eq(&self.0, &o.0)
    }
}

impl Eq for ByLists {}

impl Hash for ByLists {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match_hash(&self.0, h);
    }
}

/// The list operations [`Resolver`] memoizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Intersect,
    Union,
    Family(Family),
}

/// The store's endpoints as the selectors read them, kept by the caller between
/// lowerings ([`crate::lower::Live`] keeps one group per behaviour): a selector's
/// endpoints are then found by one bit per group instead of by matching it against
/// every endpoint's labels. It must describe the store it is given with exactly:
/// every endpoint with addresses in one group, each group's addresses its
/// endpoints' (host prefixes), the bits those of every selector of `numbers` on
/// their labels, the ports theirs. A selector not in `numbers` is matched by the
/// scan as without an index.
#[derive(Debug)]
pub(crate) struct PeerIndex<'a> {
    /// The selectors the groups' bits are for, by number.
    pub(crate) numbers: &'a HashMap<Selector, u32>,
    /// Per group: bit `i` set when selector `i` matches its endpoints, their named
    /// ports, their prefixes.
    pub(crate) groups: Vec<PeerGroup<'a>>,
}

/// One group of a [`PeerIndex`].
#[derive(Debug)]
pub(crate) struct PeerGroup<'a> {
    pub(crate) selects: &'a [u64],
    pub(crate) ports: &'a [crate::model::EndpointPort],
    pub(crate) nets: &'a [IpNet],
}

/// The slow twin of a [`PeerIndex`]: whether it resolves every selector of
/// `selectors` and every port name of `ports` (alone, and under each selector) to
/// the lists the scan of `cluster` gives.
#[cfg(test)]
pub(crate) fn peer_index_agrees(
    cluster: &Cluster,
    peers: PeerIndex<'_>,
    selectors: &[Selector],
    ports: &[&str],
) -> bool {
    let mut scan = Resolver::new(cluster, Interner::default());
    let mut indexed = Resolver::new(cluster, Interner::default());
    indexed.set_peers(peers);
    let same = |a: &Nets, b: &Nets| **a == **b;
    for s in selectors {
        if !same(&scan.selector_nets(s), &indexed.selector_nets(s)) {
            return false;
        }
    }
    for sel in std::iter::once(None).chain(selectors.iter().map(Some)) {
        for p in ports {
            let (a, b) = (scan.named_ports(&[p], sel), indexed.named_ports(&[p], sel));
            if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0 || !same(x.1, y.1)) {
                return false;
            }
        }
    }
    true
}

impl PeerGroup<'_> {
    fn selected(&self, i: u32) -> bool {
        self.selects
            .get(i as usize / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }
}

/// Resolves peer criteria against one cluster; caches selector → prefixes.
#[derive(Debug)]
pub(crate) struct Resolver<'c> {
    cluster: &'c Cluster,
    /// Endpoints by what selectors read of them, when the caller keeps that.
    peers: Option<PeerIndex<'c>>,
    /// Every endpoint's and network set's labels (inherited ones included), built on
    /// first use: a lowering that takes every rule from the memo (a pod's own
    /// programs) reads none, and building them is a walk of the whole store.
    endpoint_labels: Option<Vec<LabelChain<'c>>>,
    set_labels: Option<Vec<LabelChain<'c>>>,
    selector_nets: HashMap<Selector, Nets>,
    /// The endpoints by (own labels, profiles), which give all their labels; made
    /// on first use.
    groups: Option<Vec<Vec<usize>>>,
    named_ports: HashMap<(Vec<String>, Option<Selector>), NamedPorts>,
    /// Negated-port regions by (names, selector, numeric ports).
    regions: HashMap<RegionKey, Vec<NotPortRegion>>,
    /// Every list produced (taken from and given back to the lowering memo).
    interner: Interner,
    /// Results of list operations by the addresses of their (interned, so alive
    /// while the resolver is) operands.
    ops: HashMap<(Op, usize, usize), Nets>,
    simplified: HashMap<(usize, usize), (Option<Nets>, Nets)>,
    empty: Nets,
    /// Upper bound on IR rules per source rule.
    pub(crate) max_rules: usize,
}

/// What negated-port regions depend on: port names, positive selector, numeric ports,
/// and the ports the positive alternative allows.
type RegionKey = (
    Vec<String>,
    Option<Selector>,
    Vec<PortRange>,
    Option<Vec<PortRange>>,
);

/// Named ports resolved: (protocol, port) → normalized prefixes of the endpoints.
type NamedPorts = BTreeMap<(u8, u16), Nets>;

/// One way a side's positive port criterion can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortAlt {
    /// The peer address must also be in these (a named port's endpoints).
    nets: Option<Nets>,
    /// The packet must be of this protocol (a named port's protocol).
    protocol: Option<u8>,
    /// Port in one of these.
    ports: Option<Vec<PortRange>>,
}

/// A region of the peer address space with what the negated ports exclude there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NotPortRegion {
    /// Inside these (None = anywhere)...
    nets: Option<Nets>,
    /// ...but not inside these.
    not_nets: Nets,
    /// The packet must be of this protocol (when the excluded ports depend on it).
    protocol: Option<u8>,
    /// Ports excluded.
    not_ports: Vec<PortRange>,
}

/// Everything one side (source or destination) of a rule contributes.
#[derive(Clone, Debug)]
struct Side {
    /// Positive address set (None = any).
    nets: Option<Nets>,
    /// Negated address set.
    not_nets: Nets,
    /// Alternatives of the positive port criterion (one `any` if there is none), each
    /// with the regions of the negated port criterion that matter for it (one
    /// `anywhere` if it has no named ports).
    alts: Vec<(PortAlt, Vec<NotPortRegion>)>,
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

    /// A resolver producing its lists into `interner` (given back in
    /// [`Resolver::interner`]).
    pub(crate) fn new(cluster: &'c Cluster, mut interner: Interner) -> Self {
        let empty = interner.intern(Vec::new());
        Resolver {
            cluster,
            peers: None,
            endpoint_labels: None,
            set_labels: None,
            selector_nets: HashMap::new(),
            groups: None,
            named_ports: HashMap::new(),
            regions: HashMap::new(),
            interner,
            ops: HashMap::new(),
            simplified: HashMap::new(),
            empty,
            max_rules: Self::MAX_RULES,
        }
    }

    /// Answers selectors and named ports from `peers` from now on.
    pub(crate) fn set_peers(&mut self, peers: PeerIndex<'c>) {
        self.peers = Some(peers);
    }

    /// The interned lists, the resolver's caches dropped.
    pub(crate) fn into_interner(self) -> Interner {
        self.interner
    }

    fn intern(&mut self, v: Vec<IpNet>) -> Nets {
        self.interner.intern(v)
    }

    /// An operation on interned lists, computed once per pair of operands.
    fn op(&mut self, op: Op, a: &Nets, b: &Nets) -> Nets {
        let key = (op, addr(a), addr(b));
        if let Some(r) = self.ops.get(&key) {
            return r.clone();
        }
        let r = match op {
            Op::Intersect => intersect(a, b),
            Op::Union => union(a, b),
            Op::Family(f) => a
                .iter()
                .copied()
                .filter(|n| (f == Family::V4) == matches!(n, IpNet::V4(_)))
                .collect(),
        };
        let r = self.intern(r);
        self.ops.insert(key, r.clone());
        r
    }

    /// `None` (any address) intersected with a set is the set.
    fn intersect_opt(&mut self, a: Option<&Nets>, b: Option<&Nets>) -> Option<Nets> {
        match (a, b) {
            (None, None) => None,
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => Some(a.clone()),
            (Some(a), Some(b)) => Some(self.op(Op::Intersect, a, b)),
        }
    }

    fn union(&mut self, a: &Nets, b: &Nets) -> Nets {
        if b.is_empty() || Arc::ptr_eq(a, b) {
            a.clone()
        } else if a.is_empty() {
            b.clone()
        } else {
            self.op(Op::Union, a, b)
        }
    }

    /// The prefixes of one family.
    fn only(&mut self, f: Family, a: &Nets) -> Nets {
        let v4 = f == Family::V4;
        if a.iter().all(|n| v4 == matches!(n, IpNet::V4(_))) {
            a.clone()
        } else {
            self.op(Op::Family(f), a, a)
        }
    }

    /// [`simplify`] on interned lists.
    fn simplify(&mut self, pos: Option<Nets>, neg: Nets) -> (Option<Nets>, Nets) {
        let Some(p) = &pos else {
            return (pos, neg);
        };
        if neg.is_empty() {
            return (pos, neg);
        }
        let key = (addr(p), addr(&neg));
        if let Some(r) = self.simplified.get(&key) {
            return r.clone();
        }
        let (mut p2, mut n2) = (Some(p.to_vec()), neg.to_vec());
        simplify(&mut p2, &mut n2);
        let p2 = p2.map(|v| {
            if v.len() == p.len() {
                p.clone() // simplify only drops prefixes
            } else {
                self.intern(v)
            }
        });
        let n2 = if n2.len() == neg.len() {
            neg.clone()
        } else {
            self.intern(n2)
        };
        self.simplified.insert(key, (p2.clone(), n2.clone()));
        (p2, n2)
    }

    /// The prefixes of every endpoint `s` matches, by matching it against every
    /// group of endpoints with the same labels and profiles (what a [`PeerIndex`]
    /// answers from its bits).
    fn scan_selector(&mut self, s: &Selector, nets: &mut Vec<IpNet>) {
        let c = self.cluster;
        // A selector matches all of a group or none of it: ask it once per group.
        let groups = self.groups.get_or_insert_with(|| {
            let mut at: HashMap<(&BTreeMap<String, String>, &[String]), usize> = HashMap::new();
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for (i, e) in c.endpoints.iter().enumerate() {
                let g = *at
                    .entry((&e.labels, e.profiles.as_slice()))
                    .or_insert(groups.len());
                if g == groups.len() {
                    groups.push(Vec::new());
                }
                groups[g].push(i);
            }
            groups
        });
        let endpoint_labels = self
            .endpoint_labels
            .get_or_insert_with(|| endpoint_labels_of(c));
        for g in groups.iter() {
            if s.matches(&endpoint_labels[g[0]]) {
                nets.extend(g.iter().flat_map(|&i| c.endpoints[i].nets.iter().copied()));
            }
        }
    }

    /// The prefixes of every endpoint and network set the selector matches (labels
    /// inherited from profiles included), normalized.
    pub(crate) fn selector_nets(&mut self, s: &Selector) -> Nets {
        if let Some(n) = self.selector_nets.get(s) {
            return n.clone();
        }
        let c = self.cluster;
        let mut nets = Vec::new();
        match self
            .peers
            .as_ref()
            .and_then(|p| Some((p, *p.numbers.get(s)?)))
        {
            Some((peers, i)) => {
                for g in peers.groups.iter().filter(|g| g.selected(i)) {
                    nets.extend_from_slice(g.nets);
                }
            }
            None => self.scan_selector(s, &mut nets),
        }
        let set_labels = self.set_labels.get_or_insert_with(|| {
            c.network_sets
                .iter()
                .map(|s| c.labels_of(&s.labels, &s.profiles))
                .collect()
        });
        for (set, labels) in c.network_sets.iter().zip(set_labels.iter()) {
            if s.matches(labels) {
                nets.extend(set.nets.iter().copied());
            }
        }
        let nets = normalize(nets);
        let nets = self.intern(nets);
        self.selector_nets.insert(s.clone(), nets.clone());
        nets
    }

    /// Named ports called one of `names` on endpoints matching `selector` (any endpoint
    /// when `None`): (protocol, port) → the endpoints' prefixes.
    fn named_ports(&mut self, names: &[&str], selector: Option<&Selector>) -> NamedPorts {
        let mut key_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        key_names.sort_unstable();
        key_names.dedup();
        let key = (key_names, selector.cloned());
        if let Some(n) = self.named_ports.get(&key) {
            return n.clone();
        }
        let c = self.cluster;
        let mut out: BTreeMap<(u8, u16), Vec<IpNet>> = BTreeMap::new();
        let indexed = self.peers.as_ref().and_then(|p| match selector {
            None => Some((p, None)),
            Some(s) => Some((p, Some(*p.numbers.get(s)?))),
        });
        if let Some((peers, sel)) = indexed {
            for g in &peers.groups {
                if g.nets.is_empty() || sel.is_some_and(|i| !g.selected(i)) {
                    continue;
                }
                for p in g.ports.iter().filter(|p| names.contains(&p.name.as_str())) {
                    out.entry((p.protocol.0, p.port))
                        .or_default()
                        .extend_from_slice(g.nets);
                }
            }
            return self.named_ports_done(key, out);
        }
        let endpoint_labels = self
            .endpoint_labels
            .get_or_insert_with(|| endpoint_labels_of(c));
        for (e, labels) in c.endpoints.iter().zip(endpoint_labels.iter()) {
            if e.nets.is_empty() || !e.ports.iter().any(|p| names.contains(&p.name.as_str())) {
                continue;
            }
            if selector.is_some_and(|s| !s.matches(labels)) {
                continue;
            }
            for p in e.ports.iter().filter(|p| names.contains(&p.name.as_str())) {
                out.entry((p.protocol.0, p.port))
                    .or_default()
                    .extend(e.nets.iter().copied());
            }
        }
        self.named_ports_done(key, out)
    }

    /// Named ports resolved, interned and kept under `key`.
    fn named_ports_done(
        &mut self,
        key: (Vec<String>, Option<Selector>),
        out: BTreeMap<(u8, u16), Vec<IpNet>>,
    ) -> NamedPorts {
        let out: NamedPorts = out
            .into_iter()
            .map(|(k, v)| (k, self.intern(normalize(v))))
            .collect();
        self.named_ports.insert(key, out.clone());
        out
    }

    fn side(&mut self, m: &PeerMatch) -> Option<Side> {
        let mut nets = (!m.nets.is_empty()).then(|| self.intern(normalize(m.nets.clone())));
        if let Some(s) = &m.selector {
            let sel = self.selector_nets(s);
            nets = self.intersect_opt(nets.as_ref(), Some(&sel));
        }
        let mut not_nets = if m.not_nets.is_empty() {
            self.empty.clone()
        } else {
            self.intern(normalize(m.not_nets.clone()))
        };
        if let Some(s) = &m.not_selector {
            let sel = self.selector_nets(s);
            not_nets = self.union(&not_nets, &sel);
        }
        let (nets, not_nets) = self.simplify(nets, not_nets);
        if nets.as_ref().is_some_and(|n| n.is_empty()) {
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

        // Negated ports, per alternative: an excluded named port only matters where the
        // alternative allows its port number, so the regions are cut from the named
        // ports restricted to those numbers (often none: one region, no address sets).
        let not_num = numeric(&m.not_ports);
        let not_named = names(&m.not_ports);
        let mut with_regions = Vec::with_capacity(alts.len());
        for alt in alts {
            let regions = if not_named.is_empty() {
                vec![NotPortRegion {
                    nets: None,
                    not_nets: self.empty.clone(),
                    protocol: None,
                    not_ports: not_num.clone(),
                }]
            } else {
                let mut names: Vec<String> = not_named.iter().map(|n| n.to_string()).collect();
                names.sort_unstable();
                names.dedup();
                let key = (
                    names,
                    m.selector.clone(),
                    not_num.clone(),
                    alt.ports.clone(),
                );
                match self.regions.get(&key) {
                    Some(r) => r.clone(),
                    None => {
                        let mut triples = self.named_ports(&not_named, m.selector.as_ref());
                        if let Some(allowed) = &alt.ports {
                            triples
                                .retain(|(_, port), _| allowed.iter().any(|r| r.contains(*port)));
                        }
                        let r = not_port_regions(&triples, &not_num, &mut self.interner);
                        self.regions.insert(key, r.clone());
                        r
                    }
                }
            };
            with_regions.push((alt, regions));
        }

        Some(Side {
            nets,
            not_nets,
            alts: with_regions,
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
        // The versions felix renders the rule for (its `ipVersion`, and the
        // version filtering of its nets/notNets: `cluster::rendered_for_version`).
        let v4 = r.ip_version.is_none_or(|v| v == 4) && rendered_for_version(pr, 4);
        let v6 = r.ip_version.is_none_or(|v| v == 6) && rendered_for_version(pr, 6);
        let family = match (v4, v6) {
            (true, true) => None,
            (true, false) => Some(Family::V4),
            (false, true) => Some(Family::V6),
            (false, false) => return Ok(Vec::new()),
        };
        let (Some(src), Some(dst)) = (self.side(&pr.source), self.side(&pr.destination)) else {
            return Ok(Vec::new());
        };

        let base = Match {
            family,
            protocol: r.protocol.map(|p| p.0),
            not_protocol: r.not_protocol.map(|p| p.0),
            icmp: icmp_match(r.icmp),
            not_icmp: icmp_match(r.not_icmp),
            ..Match::default()
        };
        let src = self.choices(&base, &src)?;
        let dst = self.choices(&base, &dst)?;
        let combos = src.len() * dst.len();
        if combos > self.max_rules {
            return Err(TooManyRules { count: combos });
        }
        // Distinct choices on both sides give distinct matches, except where merging
        // the protocols makes two equal; only then is a (costly) set needed.
        let mut seen = HashSet::new();
        let dedup = src.len() > 1 && dst.len() > 1;
        let mut out = Vec::new();
        for s in &src {
            for d in &dst {
                let Ok(protocol) = merge_protocol(s.protocol, d.protocol) else {
                    continue;
                };
                if protocol.is_some() && protocol == base.not_protocol {
                    continue;
                }
                let m = Match {
                    protocol,
                    not_protocol: if protocol.is_some() {
                        None
                    } else {
                        base.not_protocol
                    },
                    src_nets: s.nets.clone(),
                    not_src_nets: s.not_nets.clone(),
                    src_ports: s.ports.clone(),
                    not_src_ports: s.not_ports.clone(),
                    dst_nets: d.nets.clone(),
                    not_dst_nets: d.not_nets.clone(),
                    dst_ports: d.ports.clone(),
                    not_dst_ports: d.not_ports.clone(),
                    ..base.clone()
                };
                if !dedup || seen.insert(ByLists(m.clone())) {
                    out.push(Rule {
                        index,
                        action,
                        matches: m,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// One way one side of a rule can hold: one positive-port alternative within one
/// negated-port region, with everything it implies resolved.
#[derive(Clone, Debug)]
struct Choice {
    /// Protocol the choice requires (the rule's own, or a named port's).
    protocol: Option<u8>,
    nets: Option<Nets>,
    not_nets: Nets,
    ports: Option<Vec<PortRange>>,
    not_ports: Vec<PortRange>,
}

/// Whether every port of `r` lies in one of `by`.
fn covered(r: &PortRange, by: &[PortRange]) -> bool {
    if r.lo > r.hi {
        return true; // an empty range
    }
    let mut by: Vec<PortRange> = by.iter().filter(|b| b.lo <= b.hi).copied().collect();
    by.sort_unstable();
    let mut next = u32::from(r.lo); // first port not yet shown covered
    for b in by {
        if u32::from(b.lo) > next {
            break;
        }
        next = next.max(u32::from(b.hi) + 1);
        if next > u32::from(r.hi) {
            return true;
        }
    }
    false
}

impl Resolver<'_> {
    /// Every consistent choice of one side (contradictory ones, such as a named port
    /// of another protocol than the rule's, are left out).
    fn choices(&mut self, base: &Match, side: &Side) -> Result<Vec<Choice>, TooManyRules> {
        let count: usize = side.alts.iter().map(|(_, r)| r.len()).sum();
        if count > self.max_rules {
            return Err(TooManyRules { count });
        }
        let mut out: Vec<Choice> = Vec::new();
        for (alt, regions) in &side.alts {
            let Ok(protocol) = merge_protocol(base.protocol, alt.protocol) else {
                continue;
            };
            let alt_nets = self.intersect_opt(side.nets.as_ref(), alt.nets.as_ref());
            for region in regions {
                let Ok(protocol) = merge_protocol(protocol, region.protocol) else {
                    continue;
                };
                if protocol.is_some() && protocol == base.not_protocol {
                    continue;
                }
                let mut nets = self.intersect_opt(alt_nets.as_ref(), region.nets.as_ref());
                let mut not_nets = self.union(&side.not_nets, &region.not_nets);
                if let Some(f) = base.family {
                    nets = nets.map(|p| self.only(f, &p));
                    not_nets = self.only(f, &not_nets);
                }
                let (nets, not_nets) = self.simplify(nets, not_nets);
                if nets.as_ref().is_some_and(|n| n.is_empty()) {
                    continue;
                }
                let mut ports = alt.ports.clone();
                let not_ports = region.not_ports.clone();
                if ports
                    .as_ref()
                    .is_some_and(|p| p.iter().all(|r| covered(r, &not_ports)))
                {
                    continue; // every allowed port is excluded
                }
                // A port criterion whose exclusions resolved to nothing still requires
                // ports.
                if side.needs_ports && ports.is_none() && not_ports.is_empty() {
                    ports = Some(vec![ANY_PORT]);
                }
                let c = Choice {
                    protocol,
                    nets,
                    not_nets,
                    ports,
                    not_ports,
                };
                // Lists are interned: equal lists are one allocation.
                let same = |o: &Choice| {
                    o.protocol == c.protocol
                        && same_opt(o.nets.as_ref(), c.nets.as_ref())
                        && Arc::ptr_eq(&o.not_nets, &c.not_nets)
                        && o.ports == c.ports
                        && o.not_ports == c.not_ports
                };
                if !out.iter().any(same) {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }
}

/// Every endpoint's labels, inherited ones included, in store order.
fn endpoint_labels_of(c: &Cluster) -> Vec<LabelChain<'_>> {
    c.endpoints.iter().map(|e| c.endpoint_labels(e)).collect()
}

/// The negated-port regions of one side: `triples` are the excluded named ports
/// ((protocol, port) → prefixes), `numeric` the excluded numeric ports.
///
/// Let `D` be every prefix of the triples (a laminar family: two prefixes are nested or
/// disjoint) and `B(q)` the (protocol, port) pairs whose prefixes contain `q ∈ D`. An
/// address whose smallest containing prefix in `D` is `s` has exactly `B(s)` excluded;
/// outside every prefix only the numeric ports are. `B` only grows going down the
/// family. So for each distinct excluded set `B`, the addresses with exactly `B`
/// excluded are: inside some prefix `g` with `B(g) = B`, and not inside any smaller
/// prefix `d ⊊ g` with `B(d) ≠ B` (a `d` inside a `g` has `B(d) ⊇ B`, and an address
/// below a `d` with `B(d) ⊋ B` has more excluded). One region per distinct `B` keeps the
/// rule count independent of how many endpoints define the port.
fn not_port_regions(
    triples: &NamedPorts,
    numeric: &[PortRange],
    interner: &mut Interner,
) -> Vec<NotPortRegion> {
    // D sorted: every prefix is followed directly by the prefixes inside it.
    let d: Vec<IpNet> = triples
        .values()
        .flat_map(|l| l.iter())
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // The indices of the prefixes inside `d[i]`: the ones right after it.
    let inside = |i: usize| {
        let n = d[i + 1..].iter().take_while(|x| contains(&d[i], x)).count();
        i + 1..i + 1 + n
    };
    let mut excluded: Vec<BTreeSet<(u8, u16)>> = vec![BTreeSet::new(); d.len()];
    for (pair, prefixes) in triples {
        for p in prefixes.iter() {
            if let Ok(i) = d.binary_search(p) {
                excluded[i].insert(*pair);
                for j in inside(i) {
                    excluded[j].insert(*pair);
                }
            }
        }
    }
    let mut groups: BTreeMap<&BTreeSet<(u8, u16)>, Vec<usize>> = BTreeMap::new();
    for (i, b) in excluded.iter().enumerate() {
        groups.entry(b).or_default().push(i);
    }

    let mut out = vec![NotPortRegion {
        nets: None,
        not_nets: interner.intern(normalize(d.clone())),
        protocol: None,
        not_ports: numeric.to_vec(),
    }];
    for (b, members) in groups {
        let nets = interner.intern(normalize(members.iter().map(|&i| d[i]).collect()));
        let not_nets = interner.intern(normalize(
            members
                .iter()
                .flat_map(|&i| inside(i))
                .filter(|&j| excluded[j] != *b)
                .map(|j| d[j])
                .collect(),
        ));
        // Per port-carrying protocol; a protocol with nothing excluded here gets only the
        // numeric exclusions. (Named ports of other protocols never exclude anything: a
        // port criterion only matches packets with ports.)
        for p in PORT_PROTOCOLS {
            let mut not_ports = numeric.to_vec();
            not_ports.extend(
                b.iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, port)| PortRange::single(*port)),
            );
            out.push(NotPortRegion {
                nets: Some(nets.clone()),
                not_nets: not_nets.clone(),
                protocol: Some(p),
                not_ports,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_port_ranges() {
        let r = |lo, hi| PortRange { lo, hi };
        assert!(covered(&r(80, 80), &[r(80, 80)]));
        assert!(covered(&r(10, 20), &[r(15, 30), r(5, 14)]));
        assert!(covered(&r(0, 65535), &[r(0, 100), r(101, 65535)]));
        assert!(!covered(&r(10, 20), &[r(10, 14), r(16, 20)]));
        assert!(!covered(&r(80, 80), &[]));
        assert!(!covered(&r(65535, 65535), &[r(0, 65534)]));
        // An empty range is covered by anything; an empty exclusion covers nothing.
        assert!(covered(&r(5, 4), &[]));
        assert!(!covered(&r(7, 7), &[r(9, 1)]));
    }
}
