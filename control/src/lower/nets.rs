//! Prefix-set arithmetic for lowering: the IR's positive address criterion is one
//! OR-list of prefixes and its negated criterion another, so ANDed positive criteria
//! (nets, selectors, named ports) are intersected and negated ones united here.
//!
//! Every set is kept *normalized*: host bits cleared, sorted, no prefix contained in
//! another. Two prefixes are either nested or disjoint, which makes intersection a
//! pairwise "keep the longer of two nested prefixes".

use ipnet::IpNet;

/// Whether prefix `a` contains prefix `b` (`IpNet::contains` without its generic
/// detour through network and broadcast addresses; this is the hot operation here).
#[inline]
pub(crate) fn contains(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(a), IpNet::V4(b)) => {
            let len = a.prefix_len();
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            len <= b.prefix_len() && (u32::from(a.addr()) ^ u32::from(b.addr())) & mask == 0
        }
        (IpNet::V6(a), IpNet::V6(b)) => {
            let len = a.prefix_len();
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            len <= b.prefix_len() && (u128::from(a.addr()) ^ u128::from(b.addr())) & mask == 0
        }
        _ => false,
    }
}

/// `IpNet`'s order as one integer comparison: family, then address, then length
/// (`IpNet`'s own `Ord` compares byte arrays through an enum, and lowering sorts and
/// merges millions of prefixes).
#[inline]
pub(crate) fn order_key(n: &IpNet) -> (u8, u128, u8) {
    match n {
        IpNet::V4(n) => (4, u128::from(u32::from(n.addr())), n.prefix_len()),
        IpNet::V6(n) => (6, u128::from(n.addr()), n.prefix_len()),
    }
}

#[inline]
fn le(a: &IpNet, b: &IpNet) -> bool {
    order_key(a) <= order_key(b)
}

#[inline]
fn lt(a: &IpNet, b: &IpNet) -> bool {
    order_key(a) < order_key(b)
}

/// Normalizes a prefix list (see the module doc). The result matches exactly the
/// addresses the input matches.
pub(crate) fn normalize(mut nets: Vec<IpNet>) -> Vec<IpNet> {
    for n in &mut nets {
        *n = n.trunc();
    }
    nets.sort_unstable_by_key(order_key);
    drop_contained(nets)
}

/// Drops prefixes contained in an earlier one from a sorted list of truncated prefixes.
fn drop_contained(sorted: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    // Sorted by (family, network address, prefix length): a prefix comes before
    // everything it contains, and the last kept prefix is the only one that can
    // contain the next (anything kept in between would lie inside it).
    let mut out: Vec<IpNet> = Vec::new();
    for n in sorted {
        if out.last().is_some_and(|last| contains(last, &n)) {
            continue;
        }
        out.push(n);
    }
    out
}

/// The addresses in both normalized sets, normalized. Linear: both lists are sorted
/// and disjoint, so a merge walk sees every overlapping pair.
pub(crate) fn intersect(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        if contains(&x, &y) {
            out.push(y);
            j += 1;
        } else if contains(&y, &x) {
            out.push(x);
            i += 1;
        } else if lt(&x, &y) {
            // Disjoint and sorted: everything in x lies before y.
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The addresses in either normalized set, normalized (a linear merge).
pub(crate) fn union(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let (mut i, mut j) = (0, 0);
    let merged = std::iter::from_fn(|| {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if le(x, y) => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, None) => return None,
        };
        Some(next)
    });
    drop_contained(merged)
}

/// Whether two prefixes share an address (prefixes are nested or disjoint).
#[cfg(test)]
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
/// Whether a normalized set has a prefix containing `x` (binary search: the only
/// candidate is the last prefix that sorts at or before `x`).
pub(crate) fn covers(set: &[IpNet], x: &IpNet) -> bool {
    let i = set.partition_point(|n| le(n, x));
    i > 0 && contains(&set[i - 1], x)
}

/// Whether a normalized set has a prefix overlapping `x`.
#[cfg(test)]
fn touches(set: &[IpNet], x: &IpNet) -> bool {
    // A prefix containing x sorts before it; prefixes inside x follow it directly.
    covers(set, x)
        || set
            .get(set.partition_point(|n| lt(n, x)))
            .is_some_and(|n| contains(x, n))
}

/// Simplifies a positive set against a negated one (both normalized) without
/// changing what the pair matches: positive prefixes inside a negated prefix can never
/// match, and negated prefixes disjoint from every positive prefix can never exclude
/// anything.
pub(crate) fn simplify(pos: &mut Option<Vec<IpNet>>, neg: &mut Vec<IpNet>) {
    let Some(p) = pos else { return };
    if neg.is_empty() {
        return;
    }
    // Both sorted: one forward walk each instead of a binary search per prefix. The
    // only prefix of a sorted set that can contain `x` is the last one at or before it.
    let mut j = 0;
    p.retain(|x| {
        while j < neg.len() && le(&neg[j], x) {
            j += 1;
        }
        !(j > 0 && contains(&neg[j - 1], x))
    });
    let mut i = 0;
    neg.retain(|n| {
        while i < p.len() && le(&p[i], n) {
            i += 1;
        }
        // A positive prefix containing n sorts at or before it; one inside n follows.
        (i > 0 && contains(&p[i - 1], n)) || p.get(i).is_some_and(|q| contains(n, q))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().expect("prefix")).collect()
    }

    #[test]
    fn normalize_drops_contained_and_duplicate_prefixes() {
        assert_eq!(
            normalize(nets(&[
                "10.0.0.7/32",
                "10.0.0.5/24",
                "10.1.0.0/16",
                "10.0.0.0/24",
                "fd00::1/128",
                "10.1.2.0/24",
                "fd00::/64",
            ])),
            nets(&["10.0.0.0/24", "10.1.0.0/16", "fd00::/64"])
        );
    }

    #[test]
    fn intersect_keeps_the_longer_of_nested_prefixes() {
        let a = nets(&["10.0.0.0/8", "192.168.1.0/24", "fd00::/16"]);
        let b = nets(&[
            "10.1.0.0/16",
            "10.2.3.4/32",
            "192.168.0.0/16",
            "172.16.0.0/12",
        ]);
        assert_eq!(
            intersect(&a, &b),
            nets(&["10.1.0.0/16", "10.2.3.4/32", "192.168.1.0/24"])
        );
        assert!(intersect(&a, &nets(&["11.0.0.0/8", "fd01::/16"])).is_empty());
    }

    #[test]
    fn union_and_simplify() {
        let a = nets(&["10.0.0.0/24", "10.0.1.0/24"]);
        let b = nets(&["10.0.0.0/16"]);
        assert_eq!(union(&a, &b), b);
        let mut pos = Some(nets(&["10.0.0.1/32", "10.0.1.1/32", "10.9.0.1/32"]));
        let mut neg = normalize(nets(&["10.0.0.0/24", "192.168.0.0/16", "10.9.0.0/30"]));
        simplify(&mut pos, &mut neg);
        assert_eq!(pos, Some(nets(&["10.0.1.1/32"])));
        assert!(neg.is_empty());
        let mut pos = None;
        let mut neg = nets(&["10.0.0.0/24"]);
        simplify(&mut pos, &mut neg);
        assert_eq!(neg, nets(&["10.0.0.0/24"]));
        // A negated prefix inside a positive one stays; one containing it removes it.
        let mut pos = Some(nets(&["10.0.0.0/16", "10.1.0.0/16"]));
        let mut neg = nets(&["10.0.5.0/24", "10.1.0.0/15", "fd00::/8"]);
        simplify(&mut pos, &mut neg);
        assert_eq!(pos, Some(nets(&["10.0.0.0/16"])));
        assert_eq!(neg, nets(&["10.0.5.0/24"]));
    }

    #[test]
    fn fast_contains_is_ipnet_contains() {
        let all = nets(&[
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.0.0.0/31",
            "10.0.0.1/32",
            "10.0.0.2/32",
            "11.0.0.0/8",
            "::/0",
            "fd00::/8",
            "fd00::1/128",
            "fd00::/127",
            "fe00::/8",
        ]);
        for a in &all {
            for b in &all {
                assert_eq!(contains(a, b), a.contains(b), "{a} ⊇ {b}");
            }
        }
    }

    /// The merge walks agree with the obvious quadratic definitions.
    #[test]
    fn linear_set_operations_match_their_definitions() {
        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;
        let prefix = (0u32..64, 26u8..=32).prop_map(|(a, len)| {
            IpNet::V4(
                ipnet::Ipv4Net::new((10u32 << 24 | a).into(), len)
                    .expect("len")
                    .trunc(),
            )
        });
        let set = proptest::collection::vec(prefix, 0..8).prop_map(normalize);
        TestRunner::default()
            .run(&(set.clone(), set), |(a, b)| {
                let mut slow: Vec<IpNet> = Vec::new();
                for x in &a {
                    for y in &b {
                        if x.contains(y) {
                            slow.push(*y);
                        } else if y.contains(x) {
                            slow.push(*x);
                        }
                    }
                }
                prop_assert_eq!(intersect(&a, &b), normalize(slow));
                let both: Vec<IpNet> = a.iter().chain(&b).copied().collect();
                prop_assert_eq!(union(&a, &b), normalize(both));
                for x in &b {
                    prop_assert_eq!(covers(&a, x), a.iter().any(|n| n.contains(x)));
                    prop_assert_eq!(touches(&a, x), a.iter().any(|n| overlaps(n, x)));
                }
                // The merge-walk simplify is the binary-search definition.
                let (mut pos, mut neg) = (Some(a.clone()), b.clone());
                simplify(&mut pos, &mut neg);
                let want_pos: Vec<IpNet> = a.iter().copied().filter(|x| !covers(&b, x)).collect();
                let want_neg: Vec<IpNet> = b
                    .iter()
                    .copied()
                    .filter(|n| touches(&want_pos, n))
                    .collect();
                prop_assert_eq!(pos, Some(want_pos));
                prop_assert_eq!(neg, want_neg);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
