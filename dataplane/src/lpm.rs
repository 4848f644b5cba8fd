//! Longest-prefix match from an address to a small value (the local endpoint it
//! belongs to, or an address class): multibit tries with leaf pushing.
//!
//! IPv4 starts with a 2^16-slot first level (one slot per /16, DIR-16-8-8 style) by
//! default, then two levels of 256 slots (a table whose only prefix is the default
//! route keeps a first level of one slot: a rule set for every address costs no
//! 256 KiB table, and its lookups read one word); IPv6 walks 16 levels of 256 slots. A
//! lookup is one load per level, at most 3 (IPv4) or 16 (IPv6); it never allocates
//! or panics. [`Lpm`]`<8>` keeps IPv4 at 8-bit strides throughout (four levels, 1 KiB
//! first level) for tables that only a control path reads. [`WideLpm`] is the IPv4
//! table with 63-bit values, for a stage that wants two 32-bit values per address
//! without a second dependent load. Build is off the packet path.
//!
//! A table's first level and its nodes are each one flat slice shared between
//! clones ([`crate::flat::Flat`]): a clone that sets a host prefix writes a few slots
//! into a recycled buffer (the one its predecessor's predecessor read, once that
//! generation is dropped) instead of copying the table, and lookups read the slices
//! as they would read a `Vec`.

use ipnet::{IpNet, Ipv4Net};

use crate::arch::walk::{self, Kernel};
use crate::classifier::slot::BLOCK;
use crate::flat::Flat;

/// Bits of every level after the first.
const STRIDE: u32 = 8;
const FANOUT: usize = 1 << STRIDE;

/// A slot of a trie: zero = no prefix covers it; with [`Slot::LEAF`] set, a value;
/// otherwise the index of the child node (node 0 is never a child).
trait Slot: Copy + Eq + Default + std::fmt::Debug {
    const LEAF: Self;
    fn is_leaf(self) -> bool;
    fn is_empty(self) -> bool {
        self == Self::default()
    }
    fn child(self) -> usize;
    fn of_child(i: usize) -> Self;
}

impl Slot for u32 {
    const LEAF: u32 = 1 << 31;
    #[inline(always)]
    fn is_leaf(self) -> bool {
        self & Self::LEAF != 0
    }
    #[inline(always)]
    fn child(self) -> usize {
        self as usize
    }
    fn of_child(i: usize) -> u32 {
        i as u32
    }
}

impl Slot for u64 {
    const LEAF: u64 = 1 << 63;
    #[inline(always)]
    fn is_leaf(self) -> bool {
        self & Self::LEAF != 0
    }
    #[inline(always)]
    fn child(self) -> usize {
        self as usize
    }
    fn of_child(i: usize) -> u64 {
        i as u64
    }
}

/// One family's trie over `WIDTH`-bit addresses: a first level of 2^`FIRST` slots,
/// then nodes of [`FANOUT`] slots. `WIDTH - FIRST` is a multiple of [`STRIDE`].
#[derive(Clone, Debug)]
struct Trie<S, const WIDTH: u32, const FIRST: u32> {
    /// Empty until the first insert (an empty table costs no first level), then
    /// 2^`FIRST` slots; a single slot while the only prefix is the default route
    /// (`/0`, which covers every slot alike). Its length is a power of two and the
    /// walk masks its index by `len - 1`.
    root: Flat<S>,
    /// Nodes of `FANOUT` slots each; node 0 stays empty and is never a child.
    nodes: Flat<S>,
}

impl<S: Slot, const WIDTH: u32, const FIRST: u32> Trie<S, WIDTH, FIRST> {
    fn new() -> Self {
        Trie {
            root: Flat::default(),
            nodes: Flat::from_vec(vec![S::default(); FANOUT]),
        }
    }

    /// Inserts `addr/len → raw` (a leaf, or zero for "no prefix"); prefixes must
    /// arrive in order of nondecreasing length so that a longer prefix overrides a
    /// shorter one.
    fn insert(&mut self, addr: u128, len: u32, raw: S) {
        if self.root.is_empty() {
            // A default route alone needs one slot (a table of a single endpoint
            // covering every address costs 4 bytes, not 2^FIRST slots).
            self.root
                .extend_fill(if len == 0 { 1 } else { 1 << FIRST }, S::default());
        } else if self.root.len() == 1 && len > 0 {
            // A longer prefix after the default route: the level gets its slots, each
            // the default route's value (a leaf or empty, never a child).
            let v = self.root[0];
            self.root.extend_fill((1 << FIRST) - 1, v);
        }
        let idx = ((addr >> (WIDTH - FIRST)) as usize) & self.root_mask();
        if len <= FIRST {
            // The prefix ends in the first level: it covers 2^(FIRST-len) slots (all
            // of them, one, when the level is a single slot).
            let span = (1usize << (FIRST - len)).min(self.root.len());
            let first = idx & !(span - 1);
            for i in first..first + span {
                let cur = self.root[i];
                if !cur.is_empty() && !cur.is_leaf() {
                    self.set_subtree(cur.child(), raw);
                } else if cur != raw {
                    self.root.set(i, raw);
                }
            }
            return;
        }
        let slot = self.root[idx];
        let mut node = if !slot.is_empty() && !slot.is_leaf() {
            slot.child()
        } else {
            let child = self.push_node(slot);
            self.root.set(idx, S::of_child(child));
            child
        };
        let mut depth = FIRST; // bits consumed
        loop {
            let shift = WIDTH - depth - STRIDE;
            let idx = ((addr >> shift) as usize) & (FANOUT - 1);
            if len <= depth + STRIDE {
                let span = 1usize << (depth + STRIDE - len);
                let first = idx & !(span - 1);
                for i in first..first + span {
                    let cur = self.nodes[node * FANOUT + i];
                    if !cur.is_empty() && !cur.is_leaf() {
                        self.set_subtree(cur.child(), raw);
                    } else if cur != raw {
                        self.nodes.set(node * FANOUT + i, raw);
                    }
                }
                return;
            }
            let slot = self.nodes[node * FANOUT + idx];
            node = if !slot.is_empty() && !slot.is_leaf() {
                slot.child()
            } else {
                // New child; push the shorter prefix (if any) down into it.
                let child = self.push_node(slot);
                self.nodes.set(node * FANOUT + idx, S::of_child(child));
                child
            };
            depth += STRIDE;
        }
    }

    /// The first level's index mask: 2^`FIRST` - 1, 0 for a single slot (and all
    /// ones for an empty level, whose every read then misses).
    #[inline(always)]
    fn root_mask(&self) -> usize {
        self.root.len().wrapping_sub(1)
    }

    /// A new node with every slot `fill`; its index.
    fn push_node(&mut self, fill: S) -> usize {
        let child = self.nodes.len() / FANOUT;
        self.nodes.extend_fill(FANOUT, fill);
        child
    }

    /// Sets every slot of node `node` and below it to `v` (the new prefix is at least
    /// as long as everything inserted before, so it overrides them all).
    fn set_subtree(&mut self, node: usize, v: S) {
        let base = node * FANOUT;
        for i in base..base + FANOUT {
            let cur = self.nodes[i];
            if !cur.is_empty() && !cur.is_leaf() {
                self.set_subtree(cur.child(), v);
            } else if cur != v {
                self.nodes.set(i, v);
            }
        }
    }

    /// The leaf of the longest prefix containing `addr`, if any.
    #[inline]
    fn lookup(&self, addr: u128) -> Option<S> {
        self.walk(|shift| (addr >> shift) as usize)
    }

    /// [`Trie::lookup`] for a 32-bit trie in 32-bit arithmetic (no 128-bit shifts).
    #[inline(always)]
    fn lookup32(&self, a: u32) -> Option<S> {
        self.walk(|shift| (a >> shift) as usize)
    }

    /// The walk of both lookups: `bits(shift)` is the address shifted right by
    /// `shift` (its low bits are what a level indexes by).
    #[inline(always)]
    fn walk(&self, bits: impl Fn(u32) -> usize) -> Option<S> {
        let s = *self.root.get(bits(WIDTH - FIRST) & self.root_mask())?;
        if s.is_leaf() {
            return Some(s);
        }
        if s.is_empty() {
            return None;
        }
        let mut node = s.child();
        let mut shift = WIDTH - FIRST;
        while shift >= STRIDE {
            shift -= STRIDE;
            let s = *self
                .nodes
                .get(node * FANOUT + (bits(shift) & (FANOUT - 1)))?;
            if s.is_leaf() {
                return Some(s);
            }
            if s.is_empty() {
                return None;
            }
            node = s.child();
        }
        None
    }

    fn bytes(&self) -> usize {
        self.root.bytes() + self.nodes.bytes()
    }
}

/// Why an [`Lpm`] could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LpmError {
    /// Two entries with the same prefix.
    #[error("prefix {0} appears twice")]
    Duplicate(IpNet),
    /// A value does not fit the slot encoding.
    #[error("value {0} is too large (at most 2^31-1, or 2^63-1 in a wide table)")]
    ValueTooLarge(u64),
}

/// `entries` with host bits cleared, shortest prefix first; refused on a duplicate.
fn sorted<N: Copy + Ord + Into<IpNet>, V: Copy>(
    entries: &[(N, V)],
    trunc: impl Fn(N) -> N,
    len: impl Fn(&N) -> u8,
) -> Result<Vec<(N, V)>, LpmError> {
    let mut sorted: Vec<(N, V)> = entries.iter().map(|&(n, v)| (trunc(n), v)).collect();
    sorted.sort_by_key(|(n, _)| (len(n), *n));
    for w in sorted.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(LpmError::Duplicate(w[0].0.into()));
        }
    }
    Ok(sorted)
}

/// Longest-prefix match over IPv4 and IPv6 prefixes; `FIRST4` is the IPv4 first
/// level's stride: 16 (the default, for packet paths) or 8 (compact).
#[derive(Clone, Debug)]
pub struct Lpm<const FIRST4: u32 = 16> {
    v4: Trie<u32, 32, FIRST4>,
    v6: Trie<u32, 128, 8>,
}

impl<const FIRST4: u32> Lpm<FIRST4> {
    /// Builds the tables from `(prefix, value)` pairs. Host bits are ignored.
    pub fn new(entries: &[(IpNet, u32)]) -> Result<Self, LpmError> {
        let sorted = sorted(entries, |n: IpNet| n.trunc(), IpNet::prefix_len)?;
        let mut lpm = Lpm {
            v4: Trie::new(),
            v6: Trie::new(),
        };
        for (n, v) in sorted {
            if v.is_leaf() {
                return Err(LpmError::ValueTooLarge(v.into()));
            }
            match n {
                IpNet::V4(n) => lpm.v4.insert(
                    u32::from(n.network()).into(),
                    n.prefix_len().into(),
                    u32::LEAF | v,
                ),
                IpNet::V6(n) => lpm.v6.insert(
                    u128::from(n.network()),
                    n.prefix_len().into(),
                    u32::LEAF | v,
                ),
            }
        }
        Ok(lpm)
    }

    /// The value of the longest prefix containing the IPv4 address `a`.
    #[inline]
    pub fn lookup_v4(&self, a: u32) -> Option<u32> {
        self.v4.lookup32(a).map(|s| s & !u32::LEAF)
    }

    /// The value of the longest prefix containing the IPv6 address `a`.
    #[inline]
    pub fn lookup_v6(&self, a: u128) -> Option<u32> {
        self.v6.lookup(a).map(|s| s & !u32::LEAF)
    }

    /// Sets what one host address (IPv4 `/32` when `!six`, IPv6 `/128` when `six`)
    /// maps to, `None` for no value, leaving every other address as it was. This is
    /// how a prefix that is longer than every other is added, and how such a host
    /// prefix is removed (pass the value of the longest prefix still containing it).
    pub fn set_host(&mut self, six: bool, addr: u128, value: Option<u32>) -> Result<(), LpmError> {
        let raw = match value {
            Some(v) if v.is_leaf() => return Err(LpmError::ValueTooLarge(v.into())),
            Some(v) => u32::LEAF | v,
            None => 0,
        };
        if six {
            self.v6.insert(addr, 128, raw);
        } else {
            self.v4.insert(u128::from(addr as u32), 32, raw);
        }
        Ok(())
    }

    /// Bytes held by the tables.
    pub fn bytes(&self) -> usize {
        self.v4.bytes() + self.v6.bytes()
    }
}

/// Longest-prefix match over IPv4 prefixes to values below 2^63, laid out as
/// [`Lpm`]'s IPv4 table (a 2^16-slot first level, then two levels of 256 slots):
/// at most three dependent loads give the whole value.
#[derive(Clone, Debug)]
pub struct WideLpm {
    v4: Trie<u64, 32, 16>,
}

impl WideLpm {
    /// Builds the table from `(prefix, value)` pairs. Host bits are ignored.
    pub fn new(entries: &[(Ipv4Net, u64)]) -> Result<Self, LpmError> {
        let sorted = sorted(entries, |n: Ipv4Net| n.trunc(), Ipv4Net::prefix_len)?;
        let mut t = Trie::new();
        for (n, v) in sorted {
            if v.is_leaf() {
                return Err(LpmError::ValueTooLarge(v));
            }
            t.insert(
                u32::from(n.network()).into(),
                n.prefix_len().into(),
                u64::LEAF | v,
            );
        }
        Ok(WideLpm { v4: t })
    }

    /// Set in [`WideLpm::lookup_block`]'s answers that are values.
    pub const HIT: u64 = u64::LEAF;

    /// The value of the longest prefix containing `a`.
    #[inline(always)]
    pub fn lookup(&self, a: u32) -> Option<u64> {
        self.v4.lookup32(a).map(|s| s & !u64::LEAF)
    }

    /// [`WideLpm::lookup`] of a block of addresses, all levels of eight addresses
    /// at a time with kernel `k`'s gathers where it has them: `out[j]` is
    /// [`WideLpm::HIT`]` | value` of `a[j]`, or 0 for no value.
    #[inline]
    pub(crate) fn lookup_block(&self, k: Kernel, a: &[u32; BLOCK], out: &mut [u64; BLOCK]) {
        if !walk::lpm16_block(k, &self.v4.root, &self.v4.nodes, a, out) {
            for (o, &x) in out.iter_mut().zip(a) {
                *o = self.v4.lookup32(x).unwrap_or(0);
            }
        }
    }

    /// Sets what the host address `a` (a `/32`) maps to, `None` for no value, leaving
    /// every other address as it was (as [`Lpm::set_host`]).
    pub fn set_host(&mut self, a: u32, value: Option<u64>) -> Result<(), LpmError> {
        let raw = match value {
            Some(v) if v.is_leaf() => return Err(LpmError::ValueTooLarge(v)),
            Some(v) => u64::LEAF | v,
            None => 0,
        };
        self.v4.insert(a.into(), 32, raw);
        Ok(())
    }

    /// Bytes held by the table.
    pub fn bytes(&self) -> usize {
        self.v4.bytes()
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
        let l = Lpm::<16>::new(&e).expect("builds");
        assert_eq!(l.lookup_v4(0x0a01_0203), Some(4));
        assert_eq!(l.lookup_v4(0x0a01_0303), Some(3));
        assert_eq!(l.lookup_v4(0x0a01_0403), Some(2));
        assert_eq!(l.lookup_v4(0x0b00_0000), Some(1));
        assert_eq!(l.lookup_v6(0x2001_0db8 << 96 | 1), Some(6));
        assert_eq!(l.lookup_v6(0x2001_0db8 << 96 | 2), Some(5));
        assert_eq!(l.lookup_v6(1), None);
        let dup = Lpm::<16>::new(&[(net("10.0.0.1/8"), 1), (net("10.0.0.0/8"), 2)]);
        assert!(matches!(dup, Err(LpmError::Duplicate(n)) if n == net("10.0.0.0/8")));
    }

    /// IPv4 prefixes that overlap often: a few base addresses, lengths biased to
    /// /0, /32 and the level boundaries.
    fn arb_v4() -> impl Strategy<Value = Ipv4Net> {
        let base = prop_oneof![
            prop::sample::select(vec![0x0a00_0000u32, 0x0a00_1234, 0x0a01_ff00, 0xc0a8_0101]),
            any::<u32>(),
        ];
        let len = prop_oneof![
            Just(0u8),
            Just(32u8),
            prop::sample::select(vec![8u8, 15, 16, 17, 23, 24, 25, 31]),
            0u8..=32,
        ];
        (base, len, any::<u16>()).prop_map(|(b, l, jitter)| {
            Ipv4Net::new((b ^ u32::from(jitter & 0x0f0f)).into(), l)
                .expect("len")
                .trunc()
        })
    }

    fn arb_entry() -> impl Strategy<Value = (IpNet, u32)> {
        prop_oneof![
            arb_v4().prop_map(IpNet::V4),
            (any::<u128>(), 0u8..=128)
                .prop_map(
                    |(a, l)| IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).expect("len")).trunc()
                ),
        ]
        .prop_flat_map(|n| (Just(n), 0u32..1000))
    }

    /// Addresses worth probing for `entries`: each prefix's first and last address,
    /// their neighbours, and `random` ones.
    fn probes(entries: &[IpNet], random: &[u128]) -> Vec<std::net::IpAddr> {
        let mut addrs: Vec<std::net::IpAddr> = Vec::new();
        for p in random {
            addrs.push(std::net::IpAddr::V4((*p as u32).into()));
            addrs.push(std::net::IpAddr::V6((*p).into()));
        }
        for n in entries {
            addrs.push(n.network());
            addrs.push(n.broadcast());
            if let (IpNet::V4(_), std::net::IpAddr::V4(lo), std::net::IpAddr::V4(hi)) =
                (n, n.network(), n.broadcast())
            {
                addrs.push(std::net::IpAddr::V4(u32::from(lo).wrapping_sub(1).into()));
                addrs.push(std::net::IpAddr::V4(u32::from(hi).wrapping_add(1).into()));
            }
        }
        addrs
    }

    fn lookup<const F: u32>(l: &Lpm<F>, a: std::net::IpAddr) -> Option<u32> {
        match a {
            std::net::IpAddr::V4(a) => l.lookup_v4(a.into()),
            std::net::IpAddr::V6(a) => l.lookup_v6(a.into()),
        }
    }

    proptest! {
        #[test]
        fn matches_brute_force(entries in prop::collection::vec(arb_entry(), 0..40), random in prop::collection::vec(any::<u128>(), 20)) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<_> = entries.into_iter().filter(|(n, _)| seen.insert(*n)).collect();
            let l = Lpm::<16>::new(&entries).expect("builds");
            let nets: Vec<IpNet> = entries.iter().map(|e| e.0).collect();
            for a in probes(&nets, &random) {
                prop_assert_eq!(lookup(&l, a), brute(&entries, a));
            }
        }

        /// The /16-first-level table against the 8-bit-stride walk (every level 256
        /// slots, the layout before the first level grew) and a wide table of the
        /// same prefixes, also after host prefixes are set and cleared.
        #[test]
        fn first_level_strides_and_widths_agree(
            entries in prop::collection::vec((arb_v4(), 0u32..1000), 0..40),
            hosts in prop::collection::vec((any::<u32>(), prop::option::of(0u32..1000)), 0..8),
            random in prop::collection::vec(any::<u128>(), 20),
        ) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<(IpNet, u32)> = entries
                .into_iter()
                .filter(|(n, _)| seen.insert(*n))
                .map(|(n, v)| (IpNet::V4(n), v))
                .collect();
            let mut fast = Lpm::<16>::new(&entries).expect("builds");
            let mut walk = Lpm::<8>::new(&entries).expect("builds");
            let wide_entries: Vec<(Ipv4Net, u64)> = entries
                .iter()
                .filter_map(|&(n, v)| match n {
                    IpNet::V4(n) => Some((n, u64::from(v) << 32 | 7)),
                    IpNet::V6(_) => None,
                })
                .collect();
            let mut wide = WideLpm::new(&wide_entries).expect("builds");
            let shared = fast.clone(); // shares the first level until `fast` changes it
            let mut nets: Vec<IpNet> = entries.iter().map(|e| e.0).collect();
            let check = |fast: &Lpm<16>, walk: &Lpm<8>, wide: &WideLpm, nets: &[IpNet]| -> Result<(), TestCaseError> {
                for a in probes(nets, &random) {
                    if let std::net::IpAddr::V4(a) = a {
                        let a = u32::from(a);
                        prop_assert_eq!(fast.lookup_v4(a), walk.lookup_v4(a));
                        prop_assert_eq!(wide.lookup(a), walk.lookup_v4(a).map(|v| u64::from(v) << 32 | 7));
                    }
                }
                // Blocks of the same addresses, through every kernel.
                let v4: Vec<u32> = probes(nets, &random)
                    .into_iter()
                    .filter_map(|a| match a {
                        std::net::IpAddr::V4(a) => Some(a.into()),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                for chunk in v4.chunks(BLOCK) {
                    let mut a = [0u32; BLOCK];
                    a[..chunk.len()].copy_from_slice(chunk);
                    for k in Kernel::available() {
                        let mut out = [1u64; BLOCK];
                        wide.lookup_block(k, &a, &mut out);
                        for (x, o) in a.iter().zip(&out) {
                            let want = wide.lookup(*x).map_or(0, |v| v | WideLpm::HIT);
                            prop_assert_eq!(*o, want, "{} at {:#x}", k.name(), x);
                        }
                    }
                }
                Ok(())
            };
            check(&fast, &walk, &wide, &nets)?;
            for &(h, v) in &hosts {
                fast.set_host(false, h.into(), v).expect("fits");
                walk.set_host(false, h.into(), v).expect("fits");
                wide.set_host(h, v.map(|v| u64::from(v) << 32 | 7)).expect("fits");
                nets.push(IpNet::V4(Ipv4Net::new(h.into(), 32).expect("len")));
            }
            check(&fast, &walk, &wide, &nets)?;
            // The clone taken before the host changes still answers as the build did.
            for a in probes(&nets, &random) {
                if a.is_ipv4() {
                    prop_assert_eq!(lookup(&shared, a), brute(&entries, a));
                }
            }
        }
    }

    proptest! {
        /// Host prefixes set generation after generation, each generation a clone of
        /// the last whose writes go into recycled buffers while the `lag` generations
        /// before it are still read: every generation answers as the prefixes and
        /// hosts it was given (brute force), and the kept ones as they did.
        #[test]
        fn generations_of_host_changes_agree_with_brute_force(
            entries in prop::collection::vec((arb_v4(), 0u32..1000), 0..20),
            hosts in prop::collection::vec((0u32..3, any::<u16>(), prop::option::of(0u32..1000)), 1..40),
            lag in 0usize..3,
        ) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<(IpNet, u32)> = entries
                .into_iter()
                .filter(|(n, _)| seen.insert(*n))
                .map(|(n, v)| (IpNet::V4(n), v))
                .collect();
            let wide_of = |v: u32| u64::from(v) << 32 | 7;
            let wide_entries: Vec<(Ipv4Net, u64)> = entries
                .iter()
                .filter_map(|&(n, v)| match n {
                    IpNet::V4(n) => Some((n, wide_of(v))),
                    IpNet::V6(_) => None,
                })
                .collect();
            let mut lpm = Lpm::<16>::new(&entries).expect("builds");
            let mut wide = WideLpm::new(&wide_entries).expect("builds");
            let mut set: std::collections::BTreeMap<u32, Option<u32>> = Default::default();
            let want = |set: &std::collections::BTreeMap<u32, Option<u32>>, a: u32| match set.get(&a) {
                Some(&v) => v,
                None => brute(&entries, std::net::IpAddr::V4(a.into())),
            };
            let probe = |set: &std::collections::BTreeMap<u32, Option<u32>>| -> Vec<u32> {
                set.keys().flat_map(|&a| [a, a ^ 1, a ^ 0x100]).collect()
            };
            let mut readers = std::collections::VecDeque::new();
            // A few /16s and /24s, so that hosts share nodes and add new ones.
            let bases = [0x0a00_0000u32, 0x0a01_0000, 0xc0a8_0000];
            for (b, low, v) in hosts {
                readers.push_back((lpm.clone(), wide.clone(), set.clone()));
                if readers.len() > lag {
                    readers.pop_front();
                }
                let a = bases[b as usize] | u32::from(low);
                lpm = {
                    let mut next = lpm.clone();
                    next.set_host(false, a.into(), v).expect("fits");
                    next
                };
                wide = {
                    let mut next = wide.clone();
                    next.set_host(a, v.map(wide_of)).expect("fits");
                    next
                };
                set.insert(a, v);
                for x in probe(&set) {
                    prop_assert_eq!(lpm.lookup_v4(x), want(&set, x), "at {:#x}", x);
                    prop_assert_eq!(wide.lookup(x), want(&set, x).map(wide_of), "at {:#x}", x);
                }
            }
            for (l, w, s) in &readers {
                for x in probe(&set) {
                    prop_assert_eq!(l.lookup_v4(x), want(s, x), "kept, at {:#x}", x);
                    prop_assert_eq!(w.lookup(x), want(s, x).map(wide_of), "kept, at {:#x}", x);
                }
            }
        }
    }

    #[test]
    fn a_default_route_alone_is_one_slot_until_a_longer_prefix_comes() {
        let e = [(net("0.0.0.0/0"), 7), (net("::/0"), 8)];
        let l = Lpm::<16>::new(&e).expect("builds");
        assert_eq!((l.v4.root.len(), l.v6.root.len()), (1, 1));
        for a in [0u32, 0x0a00_0001, 0xffff_ffff, 0x8000_0000] {
            assert_eq!(l.lookup_v4(a), Some(7), "at {a:#x}");
        }
        assert_eq!((l.lookup_v6(0), l.lookup_v6(u128::MAX)), (Some(8), Some(8)));
        // A host set on a clone gives that clone the whole level, the default
        // route's value in every other slot; the original keeps its one slot.
        let mut h = l.clone();
        h.set_host(false, 0x0a00_0001, Some(9)).expect("fits");
        h.set_host(true, 5, None).expect("fits");
        assert_eq!((h.v4.root.len(), h.v6.root.len()), (1 << 16, 1 << 8));
        assert_eq!(
            (
                h.lookup_v4(0x0a00_0001),
                h.lookup_v4(0x0a00_0002),
                h.lookup_v4(0xffff_ffff)
            ),
            (Some(9), Some(7), Some(7))
        );
        assert_eq!((h.lookup_v6(5), h.lookup_v6(6)), (None, Some(8)));
        assert_eq!(
            (l.lookup_v4(0x0a00_0001), l.lookup_v6(5)),
            (Some(7), Some(8))
        );
        assert_eq!(l.v4.root.len(), 1);
        // Built from a /0 and a longer prefix, the level is whole from the start.
        let both =
            Lpm::<16>::new(&[(net("0.0.0.0/0"), 1), (net("10.0.0.0/8"), 2)]).expect("builds");
        assert_eq!(both.v4.root.len(), 1 << 16);
        assert_eq!(
            (both.lookup_v4(0x0a00_0001), both.lookup_v4(0x0b00_0001)),
            (Some(2), Some(1))
        );
    }

    #[test]
    fn a_host_under_a_known_16_leaves_the_first_level_shared() {
        let mut a = WideLpm::new(&[("10.0.0.0/24".parse().expect("net"), 1)]).expect("builds");
        a.set_host(0x0a00_0005, Some(2)).expect("fits");
        let mut b = a.clone();
        b.set_host(0x0a00_0107, Some(3)).expect("fits");
        assert!(a.v4.root.shares_buffer(&b.v4.root));
        assert_eq!(
            (b.lookup(0x0a00_0107), a.lookup(0x0a00_0107)),
            (Some(3), None)
        );
        // A host under a /16 with no node yet writes the first level: a copy.
        b.set_host(0x0b00_0001, Some(4)).expect("fits");
        assert!(!a.v4.root.shares_buffer(&b.v4.root));
        assert_eq!(
            (b.lookup(0x0b00_0001), a.lookup(0x0b00_0001)),
            (Some(4), None)
        );
    }

    #[test]
    fn wide_values_keep_all_63_bits() {
        let top = (1u64 << 63) - 1;
        let l = WideLpm::new(&[
            ("0.0.0.0/0".parse().expect("net"), top),
            ("10.0.0.0/16".parse().expect("net"), 1 << 40),
        ])
        .expect("builds");
        assert_eq!(l.lookup(0x0a00_0001), Some(1 << 40));
        assert_eq!(l.lookup(0x0b00_0001), Some(top));
        assert_eq!(
            WideLpm::new(&[("0.0.0.0/0".parse().expect("net"), 1 << 63)]).err(),
            Some(LpmError::ValueTooLarge(1 << 63))
        );
    }
}
