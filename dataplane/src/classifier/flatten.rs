//! Flattening: one view of a [`Program`] in one address family becomes a first-match
//! list of (multi-range box, decision) entries.
//!
//! A [`Match`] is a conjunction of per-field criteria, each a union of intervals minus
//! another union, so in one family it is a product of interval sets — a [`MBox`] —
//! except `not_icmp` with a code, which is the union of two such boxes. Log rules
//! never decide and vanish. A Pass rule (or a `TierDefault::Pass`) is replaced by its
//! box intersected with every entry of the flattened continuation (later tiers,
//! then the profiles), the hit prepended to each continuation trace. The list ends
//! with a catch-all (a tier's default Deny or the final profile deny), so the first
//! entry containing a packet always exists and carries that packet's verdict and
//! trace. Entries after a catch-all can never be first and are dropped.

use std::rc::Rc;

use foldhash::HashMap;
use ipnet::IpNet;

use crate::program::{
    Action, Family, Hit, HitAction, Match, Policy, PolicyId, Program, TierDefault, Verdict, View,
    proto,
};

/// An inclusive interval.
pub(crate) type Iv = (u128, u128);

/// The fields of a key, as classified: source, destination, source port (ICMP type),
/// destination port (ICMP code), protocol.
pub(crate) const DIMS: usize = 5;
pub(crate) const SRC: usize = 0;
pub(crate) const DST: usize = 1;
pub(crate) const SPORT: usize = 2;
pub(crate) const DPORT: usize = 3;
pub(crate) const PROTO: usize = 4;

/// Bit width of each field in a family.
pub(crate) const fn widths(f: Family) -> [u32; DIMS] {
    match f {
        Family::V4 => [32, 32, 16, 16, 8],
        Family::V6 => [128, 128, 16, 16, 8],
    }
}

/// The largest value of a field of `width` bits.
pub(crate) const fn max_of(width: u32) -> u128 {
    if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    }
}

/// A sorted set of disjoint, non-adjacent inclusive intervals.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IvSet(pub(crate) Vec<Iv>);

impl IvSet {
    pub(crate) fn full(width: u32) -> Self {
        IvSet(vec![(0, max_of(width))])
    }

    pub(crate) fn from_unsorted(mut v: Vec<Iv>) -> Self {
        v.retain(|&(lo, hi)| lo <= hi);
        v.sort_unstable();
        let mut out: Vec<Iv> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        IvSet(out)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn intersect(&self, o: &IvSet) -> IvSet {
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        while i < self.0.len() && j < o.0.len() {
            let (a, b) = (self.0[i], o.0[j]);
            let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
            if lo <= hi {
                out.push((lo, hi));
            }
            if a.1 < b.1 { i += 1 } else { j += 1 }
        }
        IvSet(out)
    }

    /// The complement within `[0, max]`.
    pub(crate) fn complement(&self, max: u128) -> IvSet {
        let mut out = Vec::new();
        let mut next = Some(0u128);
        for &(lo, hi) in &self.0 {
            if let Some(n) = next
                && lo > n
            {
                out.push((n, lo - 1));
            }
            next = hi.checked_add(1);
        }
        if let Some(n) = next
            && n <= max
        {
            out.push((n, max));
        }
        IvSet(out)
    }

    pub(crate) fn minus(&self, o: &IvSet, max: u128) -> IvSet {
        if o.is_empty() {
            return self.clone();
        }
        self.intersect(&o.complement(max))
    }
}

/// A multi-range box: the product of one interval set per field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MBox(pub(crate) [IvSet; DIMS]);

impl MBox {
    pub(crate) fn universe(f: Family) -> Self {
        let w = widths(f);
        MBox(std::array::from_fn(|d| IvSet::full(w[d])))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().any(IvSet::is_empty)
    }

    pub(crate) fn intersect(&self, o: &MBox) -> MBox {
        MBox(std::array::from_fn(|d| self.0[d].intersect(&o.0[d])))
    }

    pub(crate) fn is_universe(&self, f: Family) -> bool {
        *self == MBox::universe(f)
    }
}

fn net_interval(n: &IpNet) -> Iv {
    match n {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn nets_set(nets: &[IpNet], f: Family) -> IvSet {
    let same = |n: &&IpNet| {
        matches!(
            (n, f),
            (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)
        )
    };
    IvSet::from_unsorted(nets.iter().filter(same).map(net_interval).collect())
}

fn ports_set(r: &[crate::program::PortRange]) -> IvSet {
    IvSet::from_unsorted(
        r.iter()
            .map(|r| (u128::from(r.lo), u128::from(r.hi)))
            .collect(),
    )
}

fn single(v: u128) -> IvSet {
    IvSet(vec![(v, v)])
}

/// The boxes (0, 1 or 2) whose union is the set of `f`-family packets `m` matches.
pub(crate) fn match_boxes(m: &Match, f: Family) -> Vec<MBox> {
    if m.family.is_some_and(|x| x != f) {
        return Vec::new();
    }
    let w = widths(f);
    let mut b = MBox::universe(f);
    let restrict = |b: &mut MBox, d: usize, pos: Option<IvSet>, neg: Option<IvSet>| {
        if let Some(p) = pos {
            b.0[d] = b.0[d].intersect(&p);
        }
        if let Some(n) = neg {
            b.0[d] = b.0[d].minus(&n, max_of(w[d]));
        }
    };
    restrict(
        &mut b,
        PROTO,
        m.protocol.map(|p| single(p.into())),
        m.not_protocol.map(|p| single(p.into())),
    );
    restrict(
        &mut b,
        SRC,
        m.src_nets.as_deref().map(|n| nets_set(n, f)),
        Some(nets_set(&m.not_src_nets, f)),
    );
    restrict(
        &mut b,
        DST,
        m.dst_nets.as_deref().map(|n| nets_set(n, f)),
        Some(nets_set(&m.not_dst_nets, f)),
    );
    let port_criteria = m.src_ports.is_some()
        || m.dst_ports.is_some()
        || !m.not_src_ports.is_empty()
        || !m.not_dst_ports.is_empty();
    if port_criteria {
        let with_ports = [proto::TCP, proto::UDP, proto::SCTP].map(u128::from);
        restrict(
            &mut b,
            PROTO,
            Some(IvSet::from_unsorted(with_ports.map(|p| (p, p)).to_vec())),
            None,
        );
    }
    restrict(
        &mut b,
        SPORT,
        m.src_ports.as_deref().map(ports_set),
        Some(ports_set(&m.not_src_ports)),
    );
    restrict(
        &mut b,
        DPORT,
        m.dst_ports.as_deref().map(ports_set),
        Some(ports_set(&m.not_dst_ports)),
    );
    if m.icmp.is_some() || m.not_icmp.is_some() {
        let icmp = match f {
            Family::V4 => proto::ICMP,
            Family::V6 => proto::ICMPV6,
        };
        restrict(&mut b, PROTO, Some(single(icmp.into())), None);
    }
    if let Some(i) = m.icmp {
        restrict(&mut b, SPORT, Some(single(i.icmp_type.into())), None);
        if let Some(c) = i.code {
            restrict(&mut b, DPORT, Some(single(c.into())), None);
        }
    }
    let mut out = Vec::new();
    match m.not_icmp {
        None => out.push(b),
        Some(i) => {
            let t = single(i.icmp_type.into());
            // Not (type == t [and code == c]) = type != t, or type == t and code != c.
            let mut other_type = b.clone();
            other_type.0[SPORT] = other_type.0[SPORT].minus(&t, max_of(w[SPORT]));
            out.push(other_type);
            if let Some(c) = i.code {
                let mut same_type = b;
                same_type.0[SPORT] = same_type.0[SPORT].intersect(&t);
                same_type.0[DPORT] = same_type.0[DPORT].minus(&single(c.into()), max_of(w[DPORT]));
                out.push(same_type);
            }
        }
    }
    out.retain(|b| !b.is_empty());
    out
}

/// One entry of a flattened view: the first entry whose box contains a packet gives
/// that packet's verdict and trace.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) mbox: MBox,
    pub(crate) verdict: Verdict,
    pub(crate) trace: Vec<Hit>,
}

/// The flattened list grew past its limit.
#[derive(Debug)]
pub(crate) struct TooLarge;

struct Flattener<'a> {
    family: Family,
    view: View,
    limit: usize,
    boxes: &'a BoxMemo,
}

/// [`match_boxes`] of one family, memoized by match: the two views of a program, and
/// the programs of one set (which share most of their rules), ask for the same rules'
/// boxes again. A pure function's memo: the lists are the same with or without it.
/// Off, it only computes: on the ClassBench sets (one program, every rule distinct)
/// keeping the boxes cost 2-10 % of the build time.
#[derive(Default)]
pub(crate) struct BoxMemo {
    on: bool,
    map: std::cell::RefCell<HashMap<Match, Rc<[MBox]>>>,
}

impl BoxMemo {
    /// A memo that keeps what it computes (`on`) or not.
    pub(crate) fn new(on: bool) -> BoxMemo {
        BoxMemo {
            on,
            map: Default::default(),
        }
    }

    /// `match_boxes(m, family)`; `family` must be the same on every call.
    fn get(&self, m: &Match, family: Family) -> Rc<[MBox]> {
        if !self.on {
            return match_boxes(m, family).into();
        }
        if let Some(b) = self.map.borrow().get(m) {
            return b.clone();
        }
        let b: Rc<[MBox]> = match_boxes(m, family).into();
        self.map.borrow_mut().insert(m.clone(), b.clone());
        b
    }
}

fn hit(policy: PolicyId, action: HitAction, rule_index: i32) -> Hit {
    Hit {
        policy,
        action,
        rule_index,
    }
}

impl Flattener<'_> {
    /// Appends `e` to `out` unless it is empty or `out` already ends in a catch-all.
    fn push(&self, out: &mut Vec<Entry>, e: Entry) -> Result<(), TooLarge> {
        if e.mbox.is_empty() || out.last().is_some_and(|l| l.mbox.is_universe(self.family)) {
            return Ok(());
        }
        if out.len() >= self.limit {
            return Err(TooLarge);
        }
        out.push(e);
        Ok(())
    }

    /// `prefix` then the continuation `rest`, restricted to `mbox`.
    fn continue_into(
        &self,
        out: &mut Vec<Entry>,
        mbox: &MBox,
        prefix: Option<Hit>,
        rest: &[Entry],
    ) -> Result<(), TooLarge> {
        for f in rest {
            let mut trace = Vec::with_capacity(f.trace.len() + 1);
            trace.extend(prefix);
            trace.extend_from_slice(&f.trace);
            let e = Entry {
                mbox: mbox.intersect(&f.mbox),
                verdict: f.verdict,
                trace,
            };
            self.push(out, e)?;
        }
        Ok(())
    }

    fn profiles(&self, profiles: &[Policy]) -> Result<Vec<Entry>, TooLarge> {
        let end = match (self.view, profiles.is_empty()) {
            (View::Enforced, _) => vec![hit(PolicyId::NO_PROFILE_MATCH, HitAction::Deny, 0)],
            (View::Pending, true) => vec![hit(PolicyId::NO_PROFILE_MATCH, HitAction::Deny, -1)],
            (View::Pending, false) => Vec::new(),
        };
        let mut rest = vec![Entry {
            mbox: MBox::universe(self.family),
            verdict: Verdict::Deny,
            trace: end,
        }];
        for profile in profiles.iter().rev() {
            let mut out = Vec::new();
            for r in &profile.rules {
                let idx = r.index as i32;
                let (action, verdict) = match (r.action, self.view) {
                    (Action::Log, _) => continue,
                    (Action::Allow, _) => (HitAction::Allow, Verdict::Allow),
                    (Action::Deny, _) | (Action::Pass, View::Pending) => {
                        (HitAction::Deny, Verdict::Deny)
                    }
                    (Action::Pass, View::Enforced) => {
                        // Leaves the profile without a hit: the later profiles decide.
                        for b in self.boxes.get(&r.matches, self.family).iter() {
                            self.continue_into(&mut out, b, None, &rest)?;
                        }
                        continue;
                    }
                };
                for b in self.boxes.get(&r.matches, self.family).iter() {
                    let e = Entry {
                        mbox: b.clone(),
                        verdict,
                        trace: vec![hit(profile.id, action, idx)],
                    };
                    self.push(&mut out, e)?;
                }
            }
            for f in rest {
                self.push(&mut out, f)?;
            }
            rest = out;
        }
        Ok(rest)
    }

    fn program(&self, p: &Program) -> Result<Vec<Entry>, TooLarge> {
        let mut rest = self.profiles(&p.profiles)?;
        for tier in p.tiers.iter().rev() {
            let visible: Vec<&Policy> = tier
                .policies
                .iter()
                .filter(|p| self.view == View::Pending || !p.staged)
                .collect();
            let (Some(first), Some(last)) = (visible.first(), visible.last()) else {
                continue; // skipped: the continuation is unchanged
            };
            let mut out = Vec::new();
            for pol in &visible {
                for r in &pol.rules {
                    let idx = r.index as i32;
                    let (action, verdict) = match r.action {
                        Action::Log => continue,
                        Action::Allow => (HitAction::Allow, Verdict::Allow),
                        Action::Deny => (HitAction::Deny, Verdict::Deny),
                        Action::Pass => {
                            let h = hit(pol.id, HitAction::Pass, idx);
                            for b in self.boxes.get(&r.matches, self.family).iter() {
                                self.continue_into(&mut out, b, Some(h), &rest)?;
                            }
                            continue;
                        }
                    };
                    for b in self.boxes.get(&r.matches, self.family).iter() {
                        let e = Entry {
                            mbox: b.clone(),
                            verdict,
                            trace: vec![hit(pol.id, action, idx)],
                        };
                        self.push(&mut out, e)?;
                    }
                }
            }
            let trigger = match self.view {
                View::Pending => first.id,
                View::Enforced => last.id,
            };
            let universe = MBox::universe(self.family);
            match tier.default_action {
                TierDefault::Deny => {
                    let e = Entry {
                        mbox: universe,
                        verdict: Verdict::Deny,
                        trace: vec![hit(trigger, HitAction::Deny, -1)],
                    };
                    self.push(&mut out, e)?;
                }
                TierDefault::Pass => {
                    let h = hit(trigger, HitAction::Pass, -1);
                    self.continue_into(&mut out, &universe, Some(h), &rest)?;
                }
            }
            rest = out;
        }
        Ok(rest)
    }
}

/// The first-match list of `view` of `program` for `family` packets, or `TooLarge`
/// when it would exceed `limit` entries.
pub(crate) fn flatten(
    program: &Program,
    family: Family,
    view: View,
    limit: usize,
    boxes: &BoxMemo,
) -> Result<Vec<Entry>, TooLarge> {
    Flattener {
        family,
        view,
        limit,
        boxes,
    }
    .program(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_sets() {
        let a = IvSet::from_unsorted(vec![(5, 9), (0, 2), (3, 4), (20, 30), (12, 11)]);
        assert_eq!(a.0, vec![(0, 9), (20, 30)]);
        assert_eq!(a.complement(40).0, vec![(10, 19), (31, 40)]);
        assert_eq!(IvSet::full(8).complement(255).0, vec![]);
        assert_eq!(IvSet(vec![]).complement(255).0, vec![(0, 255)]);
        let full128 = IvSet::full(128);
        assert_eq!(full128.complement(u128::MAX).0, vec![]);
        assert_eq!(
            IvSet(vec![(u128::MAX, u128::MAX)]).complement(u128::MAX).0,
            vec![(0, u128::MAX - 1)]
        );
        let b = IvSet(vec![(8, 25)]);
        assert_eq!(a.intersect(&b).0, vec![(8, 9), (20, 25)]);
        assert_eq!(a.minus(&b, 40).0, vec![(0, 7), (26, 30)]);
    }
}
