//! Prefix-set arithmetic for lowering: the IR's positive address criterion is one
//! OR-list of prefixes and its negated criterion another, so ANDed positive criteria
//! (nets, selectors, named ports) are intersected and negated ones united here.
//!
//! Every set is kept *normalized*: host bits cleared, sorted, no prefix contained in
//! another. Two prefixes are either nested or disjoint, which makes intersection a
//! pairwise "keep the longer of two nested prefixes".

use ipnet::IpNet;

/// Normalizes a prefix list (see the module doc). The result matches exactly the
/// addresses the input matches.
pub(crate) fn normalize(mut nets: Vec<IpNet>) -> Vec<IpNet> {
    for n in &mut nets {
        *n = n.trunc();
    }
    // Sorted by (family, network address, prefix length): a prefix comes before
    // everything it contains, and the last kept prefix is the only one that can
    // contain the next (anything kept in between would lie inside it).
    nets.sort_unstable();
    nets.dedup();
    let mut out: Vec<IpNet> = Vec::with_capacity(nets.len());
    for n in nets {
        if out.last().is_some_and(|last| last.contains(&n)) {
            continue;
        }
        out.push(n);
    }
    out
}

/// The addresses in both normalized sets, normalized.
pub(crate) fn intersect(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if x.contains(y) {
                out.push(*y);
            } else if y.contains(x) {
                out.push(*x);
            }
        }
    }
    normalize(out)
}

/// `None` (any address) intersected with a set is the set.
pub(crate) fn intersect_opt(a: Option<Vec<IpNet>>, b: Option<&[IpNet]>) -> Option<Vec<IpNet>> {
    match (a, b) {
        (None, None) => None,
        (Some(a), None) => Some(a),
        (None, Some(b)) => Some(b.to_vec()),
        (Some(a), Some(b)) => Some(intersect(&a, b)),
    }
}

/// The addresses in either set, normalized.
pub(crate) fn union(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    normalize(a.iter().chain(b).copied().collect())
}

/// Whether two prefixes share an address (prefixes are nested or disjoint).
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Simplifies a positive set against a negated one without changing what the pair
/// matches: positive prefixes inside a negated prefix can never match, and negated
/// prefixes disjoint from every positive prefix can never exclude anything.
pub(crate) fn simplify(pos: &mut Option<Vec<IpNet>>, neg: &mut Vec<IpNet>) {
    if let Some(p) = pos {
        p.retain(|x| !neg.iter().any(|n| n.contains(x)));
        neg.retain(|n| p.iter().any(|x| overlaps(x, n)));
    }
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
        assert_eq!(intersect_opt(None, Some(&a)), Some(a.clone()));
        assert_eq!(intersect_opt(Some(a.clone()), None), Some(a));
    }

    #[test]
    fn union_and_simplify() {
        let a = nets(&["10.0.0.0/24", "10.0.1.0/24"]);
        let b = nets(&["10.0.0.0/16"]);
        assert_eq!(union(&a, &b), b);
        let mut pos = Some(nets(&["10.0.0.1/32", "10.0.1.1/32", "10.9.0.1/32"]));
        let mut neg = nets(&["10.0.0.0/24", "192.168.0.0/16", "10.9.0.0/30"]);
        simplify(&mut pos, &mut neg);
        assert_eq!(pos, Some(nets(&["10.0.1.1/32"])));
        assert!(neg.is_empty());
        let mut pos = None;
        let mut neg = nets(&["10.0.0.0/24"]);
        simplify(&mut pos, &mut neg);
        assert_eq!(neg, nets(&["10.0.0.0/24"]));
    }
}
