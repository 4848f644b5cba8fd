//! `bench calico-sets`: Calico-shaped ClassBench sets, lowered from the synthetic
//! clusters of `bench scale` (see BENCHMARKS.md "Calico-shaped sets").
//!
//! A cluster (`--pods`, `--policies`, `--seed`; [`crate::scale::Shape`]) is lowered
//! by `control::lower::lower` to per-endpoint rule programs, and every endpoint's
//! **ingress** program is flattened into first-match 5-tuple filters whose
//! destination is the endpoint's prefix (with `--egress`: every **egress** program,
//! source = the endpoint's prefix; a packet is classified by its source's egress and
//! its destination's ingress program, two lookups that cannot share one first-match
//! list, so the two directions are two sets):
//!
//! - each IR rule (Allow or Deny) becomes one filter per *box* of its match: source
//!   prefixes × destination prefixes × source port ranges × destination port ranges ×
//!   protocols. Negated criteria (`notNets`, `notSelector`, `notPorts`, which the
//!   lowering turns into negated address lists and port ranges) are subtracted
//!   before the boxes are cut: the source box list is the positive prefixes minus
//!   the negated ones, re-cut into disjoint aligned prefixes (and likewise for
//!   destinations and ports). Named ports were already resolved by the lowering
//!   into several IR rules. A port criterion without a protocol (which only matches
//!   TCP, UDP and SCTP) becomes one box per port-carrying protocol.
//! - a tier whose default is Deny ends with a catch-all filter of the endpoint (its
//!   end-of-tier hit); nothing after it is reachable in the pending view, so
//!   nothing after it is written. An endpoint whose program reaches its profiles
//!   gets their rules, then a catch-all for "no profile matched". A rule whose one
//!   box is the whole endpoint (a profile allowing everything) ends the endpoint's
//!   filters too.
//! - endpoints are written longest prefix first (the data plane finds an address's
//!   endpoint by longest prefix), and each ends with its catch-all, so no packet to
//!   one endpoint reaches the filters of another; a last `0.0.0.0/0` filter stands
//!   for "not a local endpoint" (no ingress policy), so every header has a first
//!   match.
//!
//! Why this asks the classifier the same question: the filters of one IR rule cover
//! exactly the packets the rule matches on that endpoint (the boxes are disjoint and
//! their union is the rule's match), and they are written in program order, so the
//! first filter a header matches belongs to the first IR rule the endpoint's program
//! matches — the hit of the **pending** view (staged policies promoted: every policy
//! is visited). No negated match is written as an earlier "skip" filter: ClassBench
//! and rte_acl have no action that falls through to a later filter, so an earlier
//! filter for the negated part would stop the lookup where the program goes on.
//! Subtracting is exact, at the price of more boxes. The enforced category of the
//! suite stays its usual one (every 10th filter staged, `rte_acl_bench -s 10`), since
//! rte_acl_bench stages by index; `<set>.rules` records each filter's IR rule with
//! its policy's own `staged` flag.
//!
//! Not flattened (an error names them): Pass rules (a first-match list cannot jump
//! to the next tier), ICMP criteria and `notProtocol` (not expressible as a 5-tuple
//! box that both classifiers read the same way).
//!
//! The trace: `--per-rule` headers drawn uniformly from every filter's box, plus
//! `--traffic` headers of pod-to-pod TCP ([`crate::scale::keys`]) with one in ten
//! from a random outside address; shuffled. Its FILTER column is the 0-based first
//! match (brute force), which is also written to `<set>_trace.firstmatch`. The same
//! arguments always write the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use control::eval::Cluster;
use control::model::{Resource, Rule as CalicoRule};
use dataplane::program::{
    Action, EndpointBinding, EndpointId, Family, Hit, HitAction, Match, PolicyId, PolicySet,
    PortRange, Program, TierDefault, Verdict, proto,
};
use ipnet::IpNet;
use pcap::classbench::{Filter, Header};

use crate::scale::{Rng, Shape};

#[derive(clap::Args, Debug)]
pub struct CalicoArgs {
    /// Directory the set is written to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Set name (files `NAME`, `NAME_trace`, `NAME_trace.firstmatch`, `NAME.rules`).
    #[arg(long)]
    name: String,
    /// Workload endpoints.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Policies (half staged).
    #[arg(long, default_value_t = 50)]
    policies: usize,
    /// Cluster shape: 0 = the lowering bench's cluster; others skewed random.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Every policy also allows TCP to `[443, http]` from anywhere but
    /// `notNets: [10.0.0.0/8, 192.168.0.0/16]`.
    #[arg(long)]
    notnets: bool,
    /// Flatten the egress programs (source = the endpoint) instead of the ingress ones.
    #[arg(long)]
    egress: bool,
    /// Trace headers drawn from each filter.
    #[arg(long, default_value_t = 6)]
    per_rule: usize,
    /// Trace headers of pod traffic (default: 4 per filter).
    #[arg(long)]
    traffic: Option<usize>,
}

/// The synthetic cluster of `bench scale --seed S` with `pods` and `policies`; with
/// `notnets` every policy gets one more ingress rule whose source is everything but
/// two private blocks.
pub fn cluster(seed: u64, pods: usize, policies: usize, notnets: bool) -> Result<Cluster, String> {
    let mut rs = Shape::new(seed).resources(pods, policies);
    if notnets {
        let rule: CalicoRule = serde_json::from_value(serde_json::json!({
            "action": "Allow",
            "protocol": "TCP",
            "source": {"notNets": ["10.0.0.0/8", "192.168.0.0/16"]},
            "destination": {"ports": [443, "http"]},
        }))
        .map_err(|e| e.to_string())?;
        for r in &mut rs {
            if let Resource::NetworkPolicy(o) | Resource::StagedNetworkPolicy(o) = r {
                o.spec.ingress.push(rule.clone());
            }
        }
    }
    Cluster::from_resources(&rs).map_err(|e| e.to_string())
}

/// What the first match on a filter means, in the pending view of the endpoint's
/// ingress program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meaning {
    /// The endpoint (`None`: the address is no local endpoint's, no policy applies).
    pub endpoint: Option<EndpointId>,
    /// The pending verdict.
    pub verdict: Verdict,
    /// The first (here the only) hit of the pending trace.
    pub hit: Option<Hit>,
    /// The policy of the rule is staged (`false` for catch-alls).
    pub staged: bool,
}

/// A flattened set: filters in priority order and what each one's match means.
#[derive(Debug, Default)]
pub struct Flat {
    pub filters: Vec<Filter>,
    pub meanings: Vec<Meaning>,
}

/// Inclusive `u64` intervals, sorted and disjoint.
type Spans = Vec<(u64, u64)>;

/// Sorts and merges overlapping or adjacent intervals.
fn merged(mut v: Spans) -> Spans {
    v.sort_unstable();
    let mut out: Spans = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `a` minus `b` (both merged).
fn minus(a: &Spans, b: &Spans) -> Spans {
    let mut out = Vec::new();
    let mut j = 0;
    for &(lo, hi) in a {
        let mut lo = lo;
        while j < b.len() && b[j].1 < lo {
            j += 1;
        }
        let mut k = j;
        while lo <= hi {
            match b.get(k) {
                Some(&(blo, bhi)) if blo <= hi => {
                    if blo > lo {
                        out.push((lo, blo - 1));
                    }
                    if bhi >= hi {
                        lo = hi + 1;
                    } else {
                        lo = bhi + 1;
                    }
                    k += 1;
                }
                _ => {
                    out.push((lo, hi));
                    break;
                }
            }
        }
    }
    out
}

/// `a` ∩ `b` (both merged).
fn intersect(a: &Spans, b: &Spans) -> Spans {
    let all = vec![(0, u64::MAX)];
    minus(a, &minus(&all, b))
}

/// The IPv4 spans of a prefix list (IPv6 prefixes never match an IPv4 packet).
fn v4_spans(nets: &[IpNet]) -> Spans {
    merged(
        nets.iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => {
                    let lo = u64::from(u32::from(n.network()));
                    let hi = u64::from(u32::from(n.broadcast()));
                    Some((lo, hi))
                }
                IpNet::V6(_) => None,
            })
            .collect(),
    )
}

const ANY_V4: (u64, u64) = (0, u32::MAX as u64);

/// Disjoint aligned prefixes covering exactly `spans` (within 32 bits).
fn prefixes(spans: &Spans) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    for &(lo, hi) in spans {
        let mut lo = lo;
        while lo <= hi {
            // The largest block aligned at `lo` that fits in `lo..=hi`.
            let mut size: u64 = if lo == 0 {
                1 << 32
            } else {
                lo & lo.wrapping_neg()
            };
            while size > hi - lo + 1 {
                size >>= 1;
            }
            out.push((lo as u32, 32 - size.trailing_zeros() as u8));
            lo += size;
        }
    }
    out
}

/// The port spans a positive and a negated port criterion leave.
fn port_spans(pos: &Option<Vec<PortRange>>, neg: &[PortRange]) -> Vec<(u16, u16)> {
    let span = |r: &PortRange| (u64::from(r.lo), u64::from(r.hi));
    let pos = match pos {
        Some(v) => merged(v.iter().filter(|r| r.lo <= r.hi).map(span).collect()),
        None => vec![(0, 65535)],
    };
    let neg = merged(neg.iter().filter(|r| r.lo <= r.hi).map(span).collect());
    minus(&pos, &neg)
        .into_iter()
        .map(|(lo, hi)| (lo as u16, hi as u16))
        .collect()
}

/// The boxes of one IR match on the endpoint's own prefix `own` (its destination
/// for ingress, its source for egress), as filters.
fn boxes(m: &Match, own: &Spans, egress: bool) -> Result<Vec<Filter>, String> {
    if m.icmp.is_some() || m.not_icmp.is_some() {
        return Err("an ICMP criterion is not a 5-tuple box".into());
    }
    if m.family == Some(Family::V6) {
        return Ok(Vec::new());
    }
    let ported = m.src_ports.is_some()
        || m.dst_ports.is_some()
        || !m.not_src_ports.is_empty()
        || !m.not_dst_ports.is_empty();
    // (value, mask) of the protocol byte.
    let protos: Vec<(u8, u8)> = match (m.protocol, m.not_protocol) {
        (Some(p), Some(q)) if p == q => Vec::new(),
        (Some(p), _) if ported && !proto::has_ports(p) => Vec::new(),
        (Some(p), _) => vec![(p, 0xFF)],
        (None, Some(_)) => return Err("notProtocol without a protocol is not a box".into()),
        (None, None) if ported => [proto::TCP, proto::UDP, proto::SCTP]
            .iter()
            .map(|&p| (p, 0xFF))
            .collect(),
        (None, None) => vec![(0, 0)],
    };
    let on_own = |nets: &Option<dataplane::program::Nets>, here: bool| {
        let pos = nets.as_deref().map_or(vec![ANY_V4], v4_spans);
        if here { intersect(&pos, own) } else { pos }
    };
    let src = minus(&on_own(&m.src_nets, egress), &v4_spans(&m.not_src_nets));
    let dst = minus(&on_own(&m.dst_nets, !egress), &v4_spans(&m.not_dst_nets));
    let (src, dst) = (prefixes(&src), prefixes(&dst));
    let sports = port_spans(&m.src_ports, &m.not_src_ports);
    let dports = port_spans(&m.dst_ports, &m.not_dst_ports);
    let mut out = Vec::new();
    for &p in &protos {
        for &s in &src {
            for &d in &dst {
                for &sp in &sports {
                    for &dp in &dports {
                        out.push(Filter {
                            src: s,
                            dst: d,
                            sport: sp,
                            dport: dp,
                            proto: p,
                            flags: (0, 0),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A filter matching every packet to (from, if `egress`) the prefix `own`.
fn catch_all(own: (u32, u8), egress: bool) -> Filter {
    let (src, dst) = if egress { (own, (0, 0)) } else { ((0, 0), own) };
    Filter {
        src,
        dst,
        sport: (0, 65535),
        dport: (0, 65535),
        proto: (0, 0),
        flags: (0, 0),
    }
}

impl Flat {
    fn push_all(&mut self, fs: Vec<Filter>, m: Meaning) {
        self.meanings.extend(std::iter::repeat_n(m, fs.len()));
        self.filters.extend(fs);
    }

    /// Appends the ingress (egress) program `p` of endpoint `b` (IPv4 only).
    fn program(&mut self, b: &EndpointBinding, p: &Program, egress: bool) -> Result<(), String> {
        let IpNet::V4(net) = b.net.trunc() else {
            return Ok(());
        };
        let pfx = (u32::from(net.network()), net.prefix_len());
        let own = vec![(
            u64::from(u32::from(net.network())),
            u64::from(u32::from(net.broadcast())),
        )];
        let meaning = |verdict, hit, staged| Meaning {
            endpoint: Some(b.endpoint),
            verdict,
            hit,
            staged,
        };
        let rule_hit = |policy: PolicyId, action: Action, index: u32| {
            let (verdict, action) = match action {
                Action::Allow => (Verdict::Allow, HitAction::Allow),
                _ => (Verdict::Deny, HitAction::Deny),
            };
            (
                verdict,
                Hit {
                    policy,
                    action,
                    rule_index: index as i32,
                },
            )
        };
        for tier in &p.tiers {
            let Some(first) = tier.policies.first() else {
                continue;
            };
            for pol in &tier.policies {
                for r in &pol.rules {
                    match r.action {
                        Action::Log => continue,
                        Action::Pass => {
                            return Err(format!(
                                "policy {} rule {}: a Pass rule is not flattened",
                                pol.id.0, r.index
                            ));
                        }
                        Action::Allow | Action::Deny => {
                            let (v, h) = rule_hit(pol.id, r.action, r.index);
                            let fs = boxes(&r.matches, &own, egress)?;
                            let all = fs == [catch_all(pfx, egress)];
                            self.push_all(fs, meaning(v, Some(h), pol.staged));
                            if all {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            if tier.default_action == TierDefault::Deny {
                // Pending view: the end-of-tier hit names the tier's first policy.
                let hit = Hit {
                    policy: first.id,
                    action: HitAction::Deny,
                    rule_index: -1,
                };
                self.push_all(
                    vec![catch_all(pfx, egress)],
                    meaning(Verdict::Deny, Some(hit), false),
                );
                return Ok(());
            }
        }
        for prof in &p.profiles {
            for r in &prof.rules {
                match r.action {
                    Action::Log => continue,
                    Action::Pass => {
                        return Err(format!(
                            "profile {} rule {}: a Pass rule is not flattened",
                            prof.id.0, r.index
                        ));
                    }
                    Action::Allow | Action::Deny => {
                        let (v, h) = rule_hit(prof.id, r.action, r.index);
                        let fs = boxes(&r.matches, &own, egress)?;
                        // A rule matching every packet to the endpoint (a profile
                        // allowing all) leaves nothing for the filters after it.
                        let all = fs == [catch_all(pfx, egress)];
                        self.push_all(fs, meaning(v, Some(h), false));
                        if all {
                            return Ok(());
                        }
                    }
                }
            }
        }
        // No profile decided (pending view): a hit only if there are no profiles.
        let hit = p.profiles.is_empty().then_some(Hit {
            policy: PolicyId::NO_PROFILE_MATCH,
            action: HitAction::Deny,
            rule_index: -1,
        });
        self.push_all(
            vec![catch_all(pfx, egress)],
            meaning(Verdict::Deny, hit, false),
        );
        Ok(())
    }
}

/// Flattens the ingress (or egress) programs of `set` into first-match filters
/// (module doc).
pub fn flatten(set: &PolicySet, egress: bool) -> Result<Flat, String> {
    let mut flat = Flat::default();
    let mut bindings: Vec<&EndpointBinding> = set.endpoints.iter().collect();
    bindings.sort_by_key(|b| std::cmp::Reverse(b.net.prefix_len()));
    for b in bindings {
        match if egress { b.egress } else { b.ingress } {
            Some(p) => {
                let p = set
                    .programs
                    .get(p.0 as usize)
                    .ok_or_else(|| format!("binding {} names no program", b.net))?;
                flat.program(b, p, egress)?;
            }
            None => {
                if let IpNet::V4(n) = b.net.trunc() {
                    let m = Meaning {
                        endpoint: None,
                        verdict: Verdict::Allow,
                        hit: None,
                        staged: false,
                    };
                    flat.push_all(
                        vec![catch_all((u32::from(n.network()), n.prefix_len()), egress)],
                        m,
                    );
                }
            }
        }
    }
    flat.push_all(
        vec![catch_all((0, 0), false)],
        Meaning {
            endpoint: None,
            verdict: Verdict::Allow,
            hit: None,
            staged: false,
        },
    );
    Ok(flat)
}

/// A point drawn uniformly from a filter's box.
fn draw(f: &Filter, rng: &mut Rng) -> Header {
    let r32 = |rng: &mut Rng| ((rng.next() << 16) ^ rng.next()) as u32;
    let addr = |(a, len): (u32, u8), rng: &mut Rng| {
        let host = if len >= 32 {
            0
        } else {
            r32(rng) & (u32::MAX >> len)
        };
        (a & !(u32::MAX.checked_shr(u32::from(len)).unwrap_or(0))) | host
    };
    let port =
        |(lo, hi): (u16, u16), rng: &mut Rng| lo + (rng.below(usize::from(hi - lo) + 1) as u16);
    let proto = if f.proto.1 == 0 {
        [proto::TCP, proto::TCP, proto::UDP, proto::ICMP][rng.below(4)]
    } else {
        f.proto.0
    };
    Header {
        src: addr(f.src, rng),
        dst: addr(f.dst, rng),
        sport: port(f.sport, rng),
        dport: port(f.dport, rng),
        proto,
        flags: 0,
        filter: 0,
    }
}

/// The trace of a flattened set (module doc); FILTER columns are the first matches.
pub fn trace(flat: &Flat, pods: usize, per_rule: usize, traffic: usize, seed: u64) -> Vec<Header> {
    let mut rng = Rng::new(seed ^ 0xca1c0);
    let mut out: Vec<Header> = Vec::new();
    for f in &flat.filters {
        for _ in 0..per_rule {
            out.push(draw(f, &mut rng));
        }
    }
    for k in crate::scale::keys(pods, traffic, seed) {
        let outside = rng.below(10) == 0;
        let src = if outside {
            ((rng.next() << 16) ^ rng.next()) as u32
        } else {
            k.src as u32
        };
        out.push(Header {
            src,
            dst: k.dst as u32,
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            flags: 0,
            filter: 0,
        });
    }
    // Fisher-Yates.
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i + 1));
    }
    let fm = crate::suite::first_matches(&flat.filters, &out, 2);
    for (h, m) in out.iter_mut().zip(fm) {
        // The last filter matches every header.
        h.filter = m.unwrap_or(flat.filters.len() as u32 - 1);
    }
    out
}

fn dotted(a: u32) -> String {
    let b = a.to_be_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

/// A filter line as ClassBench writes it.
pub fn filter_line(f: &Filter) -> String {
    format!(
        "@{}/{}\t{}/{}\t{} : {}\t{} : {}\t0x{:02X}/0x{:02X}\t0x{:04X}/0x{:04X}\t",
        dotted(f.src.0),
        f.src.1,
        dotted(f.dst.0),
        f.dst.1,
        f.sport.0,
        f.sport.1,
        f.dport.0,
        f.dport.1,
        f.proto.0,
        f.proto.1,
        f.flags.0,
        f.flags.1
    )
}

fn write(path: PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `bench calico-sets`.
pub fn main(a: &CalicoArgs) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    let cl = cluster(a.seed, a.pods, a.policies, a.notnets)?;
    let lowered = control::lower::lower(&cl).map_err(|e| e.to_string())?;
    let flat = flatten(&lowered.set, a.egress)?;
    let traffic = a.traffic.unwrap_or(4 * flat.filters.len());
    let tr = trace(&flat, a.pods, a.per_rule, traffic, a.seed);
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let mut rules = String::new();
    let mut meta = String::from("# filter endpoint verdict policy rule_index action staged\n");
    for (i, (f, m)) in flat.filters.iter().zip(&flat.meanings).enumerate() {
        let _ = writeln!(rules, "{}", filter_line(f));
        let ep = m.endpoint.map_or("-".to_string(), |e| e.0.to_string());
        let (pol, idx, act) = m.hit.map_or(("-".to_string(), "-".to_string(), "-"), |h| {
            let name = lowered.names.policy(h.policy).map_or_else(
                || format!("#{}", h.policy.0),
                |p| format!("{}/{}", p.tier, p.key),
            );
            (
                name,
                h.rule_index.to_string(),
                match h.action {
                    HitAction::Allow => "allow",
                    HitAction::Deny => "deny",
                    HitAction::Pass => "pass",
                },
            )
        });
        let _ = writeln!(
            meta,
            "{i} {ep} {:?} {pol} {idx} {act} {}",
            m.verdict, m.staged
        );
    }
    let mut text = String::with_capacity(tr.len() * 48);
    let mut firsts = String::with_capacity(tr.len() * 6);
    for h in &tr {
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            h.src, h.dst, h.sport, h.dport, h.proto, h.flags, h.filter
        );
        let _ = writeln!(firsts, "{}", h.filter);
    }
    let base = a.out.join(&a.name);
    write(base.clone(), &rules)?;
    write(a.out.join(format!("{}.rules", a.name)), &meta)?;
    write(a.out.join(format!("{}_trace", a.name)), &text)?;
    write(a.out.join(format!("{}_trace.firstmatch", a.name)), &firsts)?;
    let ir_rules = lowered.set.rules().count();
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &flat.meanings {
        let k = match m.hit {
            Some(h) if h.rule_index >= 0 => "rule",
            Some(_) => "tier-end",
            None if m.endpoint.is_some() => "no-profile",
            None => "not-local",
        };
        *hist.entry(k).or_insert(0) += 1;
    }
    println!(
        "calico-sets set={} pods={} policies={} seed={} notnets={} egress={} programs={} ir_rules={} bindings={} filters={} {:?} trace={} secs={:.1}",
        base.display(),
        a.pods,
        a.policies,
        a.seed,
        a.notnets,
        a.egress,
        lowered.set.programs.len(),
        ir_rules,
        lowered.set.endpoints.len(),
        flat.filters.len(),
        hist,
        tr.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::classbench::key_of;
    use dataplane::linear::LinearClassifier;
    use dataplane::program::Classify;

    #[test]
    fn spans_and_prefixes() {
        let a = merged(vec![(0, 9), (5, 20), (22, 30)]);
        assert_eq!(a, vec![(0, 20), (22, 30)]);
        assert_eq!(
            minus(&a, &vec![(3, 4), (18, 25)]),
            vec![(0, 2), (5, 17), (26, 30)]
        );
        assert_eq!(intersect(&a, &vec![(10, 23)]), vec![(10, 20), (22, 23)]);
        assert_eq!(prefixes(&vec![ANY_V4]), vec![(0, 0)]);
        // 10.0.0.0/8 taken out of everything: 8 prefixes below, 8 above... covering
        // exactly the rest.
        let rest = minus(&vec![ANY_V4], &vec![(0x0a00_0000, 0x0aff_ffff)]);
        let p = prefixes(&rest);
        let covered: u64 = p.iter().map(|&(_, l)| 1u64 << (32 - l)).sum();
        assert_eq!(covered, (1u64 << 32) - (1 << 24));
        assert!(p.iter().all(|&(a, l)| l == 32 || a & (u32::MAX >> l) == 0));
    }

    #[test]
    fn boxes_of_one_match() {
        let net = |s: &str| -> IpNet { s.parse().expect("net") };
        let dst = vec![(0x0a00_0001, 0x0a00_0001)];
        // Ports without a protocol: one box per port-carrying protocol; the negated
        // source prefix and port are cut out.
        let m = Match {
            src_nets: Some(vec![net("10.0.0.0/30")].into()),
            not_src_nets: vec![net("10.0.0.1/32"), net("::/0")].into(),
            dst_ports: Some(vec![PortRange { lo: 80, hi: 90 }]),
            not_dst_ports: vec![PortRange::single(85)],
            ..Match::default()
        };
        let b = boxes(&m, &dst, false).expect("boxes");
        // 3 protocols x {10.0.0.0/32, 10.0.0.2/31} x {80-84, 86-90}.
        assert_eq!(b.len(), 12);
        let hdr = |src: u32, dport: u16, proto: u8| Header {
            src,
            dst: 0x0a00_0001,
            sport: 1,
            dport,
            proto,
            flags: 0,
            filter: 0,
        };
        for src in 0x0a00_0000..0x0a00_0004u32 {
            for dport in 79..92 {
                for p in [proto::TCP, proto::UDP, proto::SCTP, proto::ICMP] {
                    let h = hdr(src, dport, p);
                    let want = dataplane::linear::matches(&m, &dataplane::classbench::key_of(&h));
                    assert_eq!(
                        b.iter().filter(|f| f.matches(&h)).count(),
                        usize::from(want),
                        "{h:?}"
                    );
                }
            }
        }
        // Outside the endpoint, an IPv6-only rule, a protocol and its negation: nothing.
        let other = Match {
            dst_nets: Some(vec![net("10.0.0.2/32")].into()),
            ..Match::default()
        };
        assert!(boxes(&other, &dst, false).expect("boxes").is_empty());
        let v6 = Match {
            family: Some(Family::V6),
            ..Match::default()
        };
        assert!(boxes(&v6, &dst, false).expect("boxes").is_empty());
        let none = Match {
            protocol: Some(proto::TCP),
            not_protocol: Some(proto::TCP),
            ..Match::default()
        };
        assert!(boxes(&none, &dst, false).expect("boxes").is_empty());
        let not_only = Match {
            not_protocol: Some(proto::TCP),
            ..Match::default()
        };
        assert!(boxes(&not_only, &dst, false).is_err());
    }

    /// The flattening asks the same question as the lowered programs: on headers
    /// drawn from the filters, from pod traffic and at random, the first matching
    /// filter's meaning is the pending view of the linear reference (endpoint,
    /// verdict, hit), for three cluster shapes, with and without notNets, ingress and
    /// egress.
    #[test]
    fn first_match_is_the_programs_pending_view() {
        for egress in [false, true] {
            agrees_with_pending_view(egress);
        }
    }

    fn agrees_with_pending_view(egress: bool) {
        // Headers whose first match was: an Allow rule, a Deny rule, a tier end,
        // an endpoint's last filter, no local endpoint.
        let mut seen = [0usize; 5];
        for (seed, pods, policies, notnets) in
            [(0, 60, 8, false), (3, 60, 8, true), (5, 40, 6, true)]
        {
            let cl = cluster(seed, pods, policies, notnets).expect("cluster");
            let lowered = control::lower::lower(&cl).expect("lowers");
            let flat = flatten(&lowered.set, egress).expect("flattens");
            assert_eq!(flat.filters.len(), flat.meanings.len());
            let mut hs = trace(&flat, pods, 2, 400, seed);
            let mut rng = Rng::new(seed);
            for _ in 0..400 {
                let r = |rng: &mut Rng| ((rng.next() << 16) ^ rng.next()) as u32;
                let src = if rng.below(2) == 0 {
                    0x0a00_0000 | rng.below(pods + 4) as u32
                } else {
                    r(&mut rng)
                };
                hs.push(Header {
                    src,
                    dst: 0x0a00_0000 | rng.below(pods + 4) as u32,
                    sport: rng.below(65536) as u16,
                    dport: [22, 80, 443, 8000, 8003, 8006, 9000][rng.below(7)],
                    proto: [proto::TCP, proto::UDP, proto::ICMP][rng.below(3)],
                    flags: 0,
                    filter: u32::MAX,
                });
            }
            let linear = LinearClassifier::new(lowered.set.clone()).expect("linear");
            for h in &hs {
                let i =
                    crate::suite::first_match(&flat.filters, h).expect("last filter matches all");
                assert!(h.filter == u32::MAX || h.filter == i, "{h:?}");
                // The suite's view of a filter is tiergate's (ports need TCP/UDP/SCTP).
                assert!(crate::suite::tiergate_matches(&flat.filters[i as usize], h));
                let m = flat.meanings[i as usize];
                let v = linear.classify_one(&key_of(h));
                let got = if egress { v.egress } else { v.ingress };
                match (m.endpoint, got) {
                    (None, None) => seen[4] += 1,
                    (Some(e), Some((ge, v))) => {
                        assert_eq!(e, ge, "{h:?}");
                        assert_eq!(v.pending.verdict, m.verdict, "{h:?} filter {i}");
                        assert_eq!(
                            linear.trace(v.pending.trace),
                            m.hit.as_slice(),
                            "{h:?} filter {i}"
                        );
                        seen[match m.hit {
                            Some(h) if h.rule_index >= 0 && h.action == HitAction::Allow => 0,
                            Some(h) if h.rule_index >= 0 => 1,
                            Some(h) if h.policy != PolicyId::NO_PROFILE_MATCH => 2,
                            _ => 3,
                        }] += 1;
                    }
                    (e, g) => panic!("{h:?}: filter {i} says endpoint {e:?}, linear {g:?}"),
                }
            }
        }
        // Every kind of answer was compared, not only catch-alls (these clusters'
        // namespace profiles allow everything, so no endpoint ends unmatched).
        assert!(
            [0, 1, 2, 4].iter().all(|&k| seen[k] > 20),
            "egress={egress}: {seen:?}"
        );
    }

    #[test]
    fn generation_is_deterministic() {
        let cl = cluster(3, 30, 4, true).expect("cluster");
        let l = control::lower::lower(&cl).expect("lowers");
        let f = flatten(&l.set, false).expect("flattens");
        let a = trace(&f, 30, 2, 50, 3);
        let b = trace(&f, 30, 2, 50, 3);
        assert_eq!(a, b);
        let text: String = f.filters.iter().map(|x| filter_line(x) + "\n").collect();
        let back =
            pcap::classbench::parse_filters(&text, std::path::Path::new("x")).expect("parses");
        assert_eq!(back, f.filters);
    }
}
