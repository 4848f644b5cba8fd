//! Longest-prefix match from an address to a small value (the local endpoint it
//! belongs to): a multibit trie with 8-bit strides and leaf pushing, one per family.
//!
//! Lookup walks at most 4 (IPv4) or 16 (IPv6) nodes of 256 slots, one load each; it
//! never allocates or panics. Build is off the packet path.

use ipnet::IpNet;

/// Slot encoding: 0 = no prefix covers it; `LEAF | v` = value `v`; otherwise the index
/// of the child node (node 0 is the root, never a child).
const LEAF: u32 = 1 << 31;
const STRIDE: u32 = 8;
const FANOUT: usize = 1 << STRIDE;

/// One family's trie.
#[derive(Clone, Debug)]
struct Trie {
    width: u32,
    /// Nodes of `FANOUT` slots each, node 0 the root.
    slots: Vec<u32>,
}

impl Trie {
    fn new(width: u32) -> Self {
        Trie {
            width,
            slots: vec![0; FANOUT],
        }
    }

    /// Inserts `addr/len → value`; prefixes must arrive in order of nondecreasing length
    /// so that a longer prefix overrides a shorter one.
    fn insert(&mut self, addr: u128, len: u32, value: u32) {
        self.insert_raw(addr, len, LEAF | value);
    }

    /// [`Trie::insert`] of a raw slot value (`0` = no prefix).
    fn insert_raw(&mut self, addr: u128, len: u32, raw: u32) {
        let mut node = 0usize;
        let mut depth = 0u32; // bits consumed
        loop {
            let shift = self.width - depth - STRIDE;
            let idx = ((addr >> shift) as usize) & (FANOUT - 1);
            if len <= depth + STRIDE {
                // The prefix ends in this node: it covers 2^(depth+STRIDE-len) slots.
                let span = 1usize << (depth + STRIDE - len);
                let first = idx & !(span - 1);
                for i in first..first + span {
                    self.set_subtree(node * FANOUT + i, raw);
                }
                return;
            }
            let slot = self.slots[node * FANOUT + idx];
            node = if slot != 0 && slot & LEAF == 0 {
                slot as usize
            } else {
                // New child; push the shorter prefix (if any) down into it.
                let child = self.slots.len() / FANOUT;
                self.slots.extend(std::iter::repeat_n(slot, FANOUT));
                self.slots[node * FANOUT + idx] = child as u32;
                child
            };
            depth += STRIDE;
        }
    }

    /// Sets a slot, or, if it points to a child, every slot below it (the new prefix is
    /// at least as long as everything inserted before, so it overrides them all).
    fn set_subtree(&mut self, slot: usize, v: u32) {
        let cur = self.slots[slot];
        if cur != 0 && cur & LEAF == 0 {
            let base = cur as usize * FANOUT;
            for i in base..base + FANOUT {
                self.set_subtree(i, v);
            }
        } else {
            self.slots[slot] = v;
        }
    }

    #[inline]
    fn lookup(&self, addr: u128) -> Option<u32> {
        let mut node = 0usize;
        let mut shift = self.width;
        while shift >= STRIDE {
            shift -= STRIDE;
            let idx = ((addr >> shift) as usize) & (FANOUT - 1);
            let slot = *self.slots.get(node * FANOUT + idx)?;
            if slot & LEAF != 0 {
                return Some(slot & !LEAF);
            }
            if slot == 0 {
                return None;
            }
            node = slot as usize;
        }
        None
    }
}

/// Why an [`Lpm`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LpmError {
    /// Two entries with the same prefix.
    #[error("prefix {0} appears twice")]
    Duplicate(IpNet),
    /// A value does not fit the slot encoding.
    #[error("value {0} is too large (at most 2^31-1)")]
    ValueTooLarge(u32),
}

/// Longest-prefix match over IPv4 and IPv6 prefixes.
#[derive(Clone, Debug)]
pub struct Lpm {
    v4: Trie,
    v6: Trie,
}

impl Lpm {
    /// Builds the tables from `(prefix, value)` pairs. Host bits are ignored.
    pub fn new(entries: &[(IpNet, u32)]) -> Result<Self, LpmError> {
        let mut sorted: Vec<(IpNet, u32)> = entries.iter().map(|&(n, v)| (n.trunc(), v)).collect();
        sorted.sort_by_key(|(n, _)| (n.prefix_len(), *n));
        for w in sorted.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(LpmError::Duplicate(w[0].0));
            }
        }
        let mut lpm = Lpm {
            v4: Trie::new(32),
            v6: Trie::new(128),
        };
        for (n, v) in sorted {
            if v & LEAF != 0 {
                return Err(LpmError::ValueTooLarge(v));
            }
            match n {
                IpNet::V4(n) => {
                    lpm.v4
                        .insert(u32::from(n.network()).into(), n.prefix_len().into(), v)
                }
                IpNet::V6(n) => lpm
                    .v6
                    .insert(u128::from(n.network()), n.prefix_len().into(), v),
            }
        }
        Ok(lpm)
    }

    /// The value of the longest prefix containing the IPv4 address `a`: the walk of
    /// [`Trie::lookup`] in 32-bit arithmetic (four strides, no 128-bit shifts).
    #[inline]
    pub fn lookup_v4(&self, a: u32) -> Option<u32> {
        let slots = &self.v4.slots;
        let mut node = 0usize;
        for shift in [24u32, 16, 8, 0] {
            let idx = ((a >> shift) as usize) & (FANOUT - 1);
            let slot = *slots.get(node * FANOUT + idx)?;
            if slot & LEAF != 0 {
                return Some(slot & !LEAF);
            }
            if slot == 0 {
                return None;
            }
            node = slot as usize;
        }
        None
    }

    /// The value of the longest prefix containing the IPv6 address `a`.
    #[inline]
    pub fn lookup_v6(&self, a: u128) -> Option<u32> {
        self.v6.lookup(a)
    }

    /// Sets what one host address (IPv4 `/32` when `!six`, IPv6 `/128` when `six`)
    /// maps to, `None` for no value, leaving every other address as it was. This is
    /// how a prefix that is longer than every other is added, and how such a host
    /// prefix is removed (pass the value of the longest prefix still containing it).
    pub fn set_host(&mut self, six: bool, addr: u128, value: Option<u32>) -> Result<(), LpmError> {
        let raw = match value {
            Some(v) if v & LEAF != 0 => return Err(LpmError::ValueTooLarge(v)),
            Some(v) => LEAF | v,
            None => 0,
        };
        if six {
            self.v6.insert_raw(addr, 128, raw);
        } else {
            self.v4.insert_raw(u128::from(addr as u32), 32, raw);
        }
        Ok(())
    }

    /// Bytes held by the tables.
    pub fn bytes(&self) -> usize {
        (self.v4.slots.len() + self.v6.slots.len()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::net;
    use proptest::prelude::*;

    fn brute(entries: &[(IpNet, u32)], a: std::net::IpAddr) -> Option<u32> {
        entries
            .iter()
            .filter(|(n, _)| n.contains(&a))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|e| e.1)
    }

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let e = vec![
            (net("0.0.0.0/0"), 1),
            (net("10.0.0.0/8"), 2),
            (net("10.1.2.0/23"), 3),
            (net("10.1.2.3/32"), 4),
            (net("2001:db8::/32"), 5),
            (net("2001:db8::1/128"), 6),
        ];
        let l = Lpm::new(&e).expect("builds");
        assert_eq!(l.lookup_v4(0x0a01_0203), Some(4));
        assert_eq!(l.lookup_v4(0x0a01_0303), Some(3));
        assert_eq!(l.lookup_v4(0x0a01_0403), Some(2));
        assert_eq!(l.lookup_v4(0x0b00_0000), Some(1));
        assert_eq!(l.lookup_v6(0x2001_0db8 << 96 | 1), Some(6));
        assert_eq!(l.lookup_v6(0x2001_0db8 << 96 | 2), Some(5));
        assert_eq!(l.lookup_v6(1), None);
        let dup = Lpm::new(&[(net("10.0.0.1/8"), 1), (net("10.0.0.0/8"), 2)]);
        assert!(matches!(dup, Err(LpmError::Duplicate(n)) if n == net("10.0.0.0/8")));
    }

    fn arb_entry() -> impl Strategy<Value = (IpNet, u32)> {
        prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(
                    |(a, l)| IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).expect("len")).trunc()
                ),
            (any::<u128>(), 0u8..=128)
                .prop_map(
                    |(a, l)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).expect("len")).trunc()
                ),
        ]
        .prop_flat_map(|n| (Just(n), 0u32..1000))
    }

    proptest! {
        #[test]
        fn matches_brute_force(entries in prop::collection::vec(arb_entry(), 0..40), probes in prop::collection::vec(any::<u128>(), 20)) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<_> = entries.into_iter().filter(|(n, _)| seen.insert(*n)).collect();
            let l = Lpm::new(&entries).expect("builds");
            // Probe inside each prefix too, not only at random.
            let mut addrs: Vec<std::net::IpAddr> = Vec::new();
            for (i, p) in probes.iter().enumerate() {
                addrs.push(std::net::IpAddr::V4((*p as u32).into()));
                addrs.push(std::net::IpAddr::V6((*p).into()));
                if let Some((n, _)) = entries.get(i) {
                    addrs.push(n.network());
                    addrs.push(n.broadcast());
                }
            }
            for a in addrs {
                let got = match a {
                    std::net::IpAddr::V4(a) => l.lookup_v4(a.into()),
                    std::net::IpAddr::V6(a) => l.lookup_v6(a.into()),
                };
                prop_assert_eq!(got, brute(&entries, a));
            }
        }
    }
}
