//! The compiled trees' slot format and the scalar step: the contract between the
//! builder (`tree`), which writes slots, and every lookup kernel, which reads them —
//! the scalar step here and the SIMD walks in `crate::arch::walk`.
//!
//! A tree lives in one arena of [`Slot`]s, one `u64` each:
//! - a precomputed leaf: `LEAF | index` (into the verdicts table, or into the
//!   position-pairs table in a partitioned program);
//! - a leaf list: `LEAF | LIST | count << 32 | offset` (items checked in order);
//! - an inner node: the offset of its children (bits 0..24, so an arena holds at most
//!   [`MAX_SLOTS`] slots), up to [`INLINE_STARTS`] inline run starts or a
//!   starts-table index (bytes 3..6), the window (bits 48..54), the flags [`RANGED`]
//!   and [`TABLED`] (bits 54, 55), the width less one (bits 56..59; widths
//!   1..=[`MAX_CUT_BITS`]; for diagnostics, lookups do not read it) and the key word
//!   it cuts (bits 60..63).
//!
//! A node cuts `bits` bits of key word `word` (see [`Words`]) from bit `shift`: the
//! cut value `v`. A lookup reads the *window* instead: the 8 bits of the key word
//! from bit `window = shift + bits - 8` (modulo 64, wrapping around the word: one
//! rotate, or one `vpmultishiftqb` byte), so `v` is the window's top `bits` bits and
//! the bits below it are whatever the key holds there. No lookup masks by width:
//! - a plain node has 256 children at the offset and the child is `offset + window`;
//!   the builder repeats each of its `2^bits` children `2^(8 - bits)` times;
//! - a ranged node stores one child per run of equal children, at most [`MAX_RUNS`]
//!   runs; run 0 starts at 0 and the child is `offset + #{run starts <= v}`. Its
//!   other run starts (ascending, nonzero) are a starts word: bytes
//!   `(start << (8 - bits)) - 1`, unused bytes `0xff`. Since `start <= v` exactly
//!   when `start << (8 - bits) <= window`, the count is `#{bytes < window}`, and
//!   unused bytes never count (`window <= 255`).
//!
//! With at most [`INLINE_STARTS`] starts (at most 4 runs) the bytes sit in the node
//! word itself. With more, the node is [`TABLED`]: its starts word is entry
//! `(node >> TABLE_AT) & 0xff_ffff` of the arena's starts table, where each distinct
//! starts word is stored once (a few thousand words at most on the ClassBench sets,
//! so the table stays in the first-level cache).
//!
//! So a step of a walk reads one arena slot, and one table word when the node is
//! tabled: a SIMD step is one gather from the arena, plus one from the table masked
//! to the walks on tabled nodes (none when there are no such walks). Every slot the
//! builder makes stays inside the arena for every key, every table index inside the
//! table; kernels clamp their loads to the arena and the table all the same.

use crate::program::{Family, FlowKey};

/// One tree slot: a leaf, or a node word (the pointer to an inner node's children,
/// carrying its cut).
pub(crate) type Slot = u64;

/// Leaf flag of a slot.
pub(crate) const LEAF: u64 = 1 << 63;
/// With [`LEAF`]: the leaf is a short list of items (`offset | count << 32`) rather
/// than a table index.
pub(crate) const LIST: u64 = 1 << 62;
/// Bits of an inner node's child offset.
pub(crate) const OFFSET_BITS: u32 = 24;
/// Most slots an arena holds (child offsets have [`OFFSET_BITS`] bits).
pub(crate) const MAX_SLOTS: usize = 1 << OFFSET_BITS;
/// Mask of an inner node's child offset.
pub(crate) const OFFSET_MASK: u64 = MAX_SLOTS as u64 - 1;
/// Bit position of the inline run starts (bytes 3..6) or the starts-table index.
pub(crate) const STARTS_AT: u32 = 24;
/// Bit position of a tabled node's starts-table index (24 bits).
pub(crate) const TABLE_AT: u32 = STARTS_AT;
/// Most entries of a starts table.
pub(crate) const MAX_TABLE: usize = 1 << 24;
/// Most run starts held in the node word.
pub(crate) const INLINE_STARTS: usize = 3;
/// The bytes of a node word that are not inline run starts, set: or-ed into the node
/// word, they make those bytes `0xff`, which never count.
pub(crate) const NOT_STARTS: u64 = !(0xff_ffff << STARTS_AT);
/// Bit position of the window (6 bits).
pub(crate) const SHIFT_AT: u32 = 48;
/// An inner node stored as runs of equal children.
pub(crate) const RANGED: u64 = 1 << 54;
/// With [`RANGED`]: the run starts are in the starts table.
pub(crate) const TABLED: u64 = 1 << 55;
/// Bit position of the cut width less one (3 bits).
pub(crate) const BITS_AT: u32 = 56;
/// Bit position of the key word index (3 bits).
pub(crate) const WORD_AT: u32 = 60;
/// Widest cut.
pub(crate) const MAX_CUT_BITS: u32 = 8;
/// Most runs of a ranged node.
pub(crate) const MAX_RUNS: usize = 9;
/// A leaf slot that is never a valid table index (reads as "no decision").
pub(crate) const EMPTY: Slot = LEAF | u32::MAX as u64;

const _: () = assert!(WORDS <= 8 && MAX_CUT_BITS <= 8 && MAX_RUNS - 1 <= 8);

/// Key words per walk: the 64-bit words a tree indexes.
pub(crate) const WORDS: usize = 5;

/// A key as the trees index it. IPv4: `src << 32 | dst`, then
/// `sport << 48 | dport << 32 | proto`. IPv6: source high and low halves, destination
/// high and low halves, then the ports-and-protocol word.
pub(crate) type Words = [u64; WORDS];

/// Where field lane `lane` of a family (IPv4: src, dst, sport, dport, proto; IPv6:
/// four src words, four dst words, sport, dport, proto) sits: (word, bit offset).
pub(crate) const fn lane_position(f: Family, lane: u32) -> (u32, u32) {
    match f {
        Family::V4 => match lane {
            0 => (0, 32),
            1 => (0, 0),
            2 => (1, 48),
            3 => (1, 32),
            _ => (1, 0),
        },
        Family::V6 => match lane {
            0..8 => (lane / 2, 32 * (1 - lane % 2)),
            8 => (4, 48),
            9 => (4, 32),
            _ => (4, 0),
        },
    }
}

/// The key words of `k`.
#[inline]
pub(crate) fn words_of(k: &FlowKey) -> Words {
    let ports = (u64::from(k.sport) << 48) | (u64::from(k.dport) << 32) | u64::from(k.proto);
    match k.family {
        Family::V4 => [
            ((k.src as u64) << 32) | (k.dst as u32 as u64),
            ports,
            0,
            0,
            0,
        ],
        Family::V6 => [
            (k.src >> 64) as u64,
            k.src as u64,
            (k.dst >> 64) as u64,
            k.dst as u64,
            ports,
        ],
    }
}

/// A precomputed leaf holding `index`.
pub(crate) const fn leaf(index: u32) -> Slot {
    LEAF | index as u64
}

/// A plain inner slot: `2^bits` children at `offset`; `None` if the offset or the
/// cut does not fit its bits.
pub(crate) fn plain(word: u32, shift: u32, bits: u32, offset: usize) -> Option<Slot> {
    Some(header(word, shift, bits)? | offset_bits(offset)?)
}

/// The starts word of a `bits`-bit cut's runs starting at 0 and at each of `starts`
/// (ascending, nonzero, below `2^bits`, fewer than `MAX_RUNS`); `None` if they are
/// not.
pub(crate) fn starts_word(starts: &[u8], bits: u32) -> Option<u64> {
    let ascending = starts.windows(2).all(|w| w[0] < w[1]);
    let fit =
        (1..=MAX_CUT_BITS).contains(&bits) && starts.iter().all(|&st| u32::from(st) >> bits == 0);
    if starts.len() >= MAX_RUNS || starts.contains(&0) || !ascending || !fit {
        return None;
    }
    // Stored as `(start << (8 - bits)) - 1` (the windows below it are the values
    // below `start`), unused bytes 0xff (never below a window).
    let mut packed = u64::MAX;
    for (i, &st) in starts.iter().enumerate() {
        packed &= !(0xff << (8 * i));
        packed |= ((u64::from(st) << (8 - bits)) - 1) << (8 * i);
    }
    Some(packed)
}

/// A ranged inner slot with inline starts: runs start at 0 and at each of `starts`
/// (ascending, nonzero, at most `INLINE_STARTS`), their children at `offset`; `None`
/// if the offset or the cut does not fit its bits or the starts do not fit.
pub(crate) fn ranged(
    word: u32,
    shift: u32,
    bits: u32,
    offset: usize,
    starts: &[u8],
) -> Option<Slot> {
    if starts.len() > INLINE_STARTS {
        return None;
    }
    let packed = starts_word(starts, bits)?;
    let node = header(word, shift, bits)? | RANGED | offset_bits(offset)?;
    Some(node | ((packed & 0xff_ffff) << STARTS_AT))
}

/// A ranged inner slot whose starts word (`starts_word` of its starts and `bits`) is
/// entry `entry` of the starts table, its children at `offset`; `None` if a field
/// does not fit its bits.
pub(crate) fn tabled(
    word: u32,
    shift: u32,
    bits: u32,
    offset: usize,
    entry: usize,
) -> Option<Slot> {
    if entry >= MAX_TABLE {
        return None;
    }
    let node = header(word, shift, bits)? | RANGED | TABLED | offset_bits(offset)?;
    Some(node | ((entry as u64) << TABLE_AT))
}

/// `offset` as an inner node's offset field, if it fits.
fn offset_bits(offset: usize) -> Option<u64> {
    (offset < MAX_SLOTS).then_some(offset as u64)
}

/// The cut fields of an inner slot for a cut of `bits` bits from bit `shift` of key
/// word `word`, if they fit: the word, the width and the window.
fn header(word: u32, shift: u32, bits: u32) -> Option<u64> {
    let fits = (word as usize) < WORDS
        && (1..=MAX_CUT_BITS).contains(&bits)
        && shift.checked_add(bits).is_some_and(|top| top <= 64);
    // Lazily: `bits - 1` and the window are only meaningful (and only computed) once
    // `1 <= bits` and `shift + bits <= 64`.
    fits.then(|| {
        let window = (shift + bits + 56) % 64; // shift + bits - 8, modulo 64
        (u64::from(word) << WORD_AT)
            | (u64::from(bits - 1) << BITS_AT)
            | (u64::from(window) << SHIFT_AT)
    })
}

/// (word, window, bits) of an inner slot.
#[inline(always)]
pub(crate) const fn decode(s: u64) -> (usize, u32, u32) {
    (
        ((s >> WORD_AT) & 0x7) as usize,
        ((s >> SHIFT_AT) & 0x3f) as u32,
        ((s >> BITS_AT) & 0x7) as u32 + 1,
    )
}

/// The window of inner node word `s` in key word `x`: its 8 bits from bit `window`,
/// wrapping around the word.
#[inline(always)]
pub(crate) fn window(s: u64, x: u64) -> u64 {
    x.rotate_right(decode(s).1) & 0xff
}

/// The starts word of ranged node word `s` (scaled `start - 1`, unused `0xff`).
#[inline(always)]
pub(crate) fn starts_of(s: u64, table: &[u64]) -> u64 {
    if s & TABLED != 0 {
        let entry = (s >> TABLE_AT) as usize & (MAX_TABLE - 1);
        table.get(entry).copied().unwrap_or(u64::MAX)
    } else {
        s | NOT_STARTS
    }
}

/// The child index (from the slot's offset) of inner node word `s` for key words `w`.
#[inline(always)]
pub(crate) fn child_index(s: u64, table: &[u64], w: &Words) -> u64 {
    let x = w.get(decode(s).0).copied().unwrap_or(0);
    let v = window(s, x);
    if s & RANGED == 0 {
        return v;
    }
    starts_of(s, table)
        .to_le_bytes()
        .iter()
        .map(|&st| u64::from(u64::from(st) < v))
        .sum()
}

/// One step of a walk without branches: a leaf stays where it is, an inner node word
/// moves to its child's. Loads past the arena read as [`EMPTY`].
#[inline(always)]
pub(crate) fn step(slots: &[Slot], table: &[u64], s: u64, w: &Words) -> u64 {
    let at = (s & OFFSET_MASK).wrapping_add(child_index(s, table, w));
    let next = slots.get(at as usize).copied().unwrap_or(EMPTY);
    if s & LEAF != 0 { s } else { next }
}

/// One step of an inner node word, `None` past the arena (diagnostics).
pub(crate) fn step_checked(slots: &[Slot], table: &[u64], s: u64, w: &Words) -> Option<u64> {
    let at = (s & OFFSET_MASK).wrapping_add(child_index(s, table, w));
    slots.get(at as usize).copied()
}

/// Most steps a walk takes. Every node of a builder-made tree fixes at least one more
/// key bit than its parent, and a key has at most 296 bits (IPv6: two addresses, two
/// ports, the protocol), so no such tree is deeper; a walk still on an inner node after
/// this many steps (only on a malformed, cyclic arena) stops there and resolves to the
/// classifier's sentinel.
pub(crate) const MAX_LEVELS: usize = 320;

/// Walks advanced in lockstep by one kernel call.
pub(crate) const BLOCK: usize = 64;

/// The walks of one lockstep block, laid out for vector loads: `s[j]` is walk `j`'s
/// current slot, `w[x][j]` its key word `x`. Unused walks sit on a leaf.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub(crate) struct Block {
    pub(crate) s: [u64; BLOCK],
    pub(crate) w: [[u64; BLOCK]; WORDS],
    /// Whether any walk has an IPv6 key (words 2.. are in use).
    pub(crate) v6: bool,
}

impl Block {
    pub(crate) fn new() -> Self {
        Block {
            s: [LEAF; BLOCK],
            w: [[0; BLOCK]; WORDS],
            v6: false,
        }
    }

    /// Sets walk `j` to start at `root` with key `k`.
    #[inline]
    pub(crate) fn set(&mut self, j: usize, root: Slot, k: &FlowKey) {
        let w = words_of(k);
        // An IPv4 tree only cuts words 0 and 1 (`lane_position`): the other columns
        // of an IPv4 walk are never read, so they are not written.
        let used = if k.family == Family::V4 { 2 } else { WORDS };
        for (x, col) in self.w.iter_mut().enumerate().take(used) {
            col[j] = w[x];
        }
        self.v6 |= k.family == Family::V6;
        self.s[j] = root;
    }

    /// Sets walks `0..keys.len()` to start at the root of their key's family
    /// (`r4`, `r6`) with their keys, and parks the rest; same as [`Block::set`] for
    /// each key and [`Block::clear`] for each other walk. At most [`BLOCK`] keys are
    /// taken.
    #[inline]
    pub(crate) fn set_all(&mut self, keys: &[FlowKey], r4: Slot, r6: Slot) {
        let keys = &keys[..keys.len().min(BLOCK)];
        let mut v6 = false;
        let [w0, w1, w2, w3, w4] = &mut self.w;
        for (j, k) in keys.iter().enumerate() {
            let w = words_of(k);
            let four = k.family == Family::V4;
            self.s[j] = if four { r4 } else { r6 };
            w0[j] = w[0];
            w1[j] = w[1];
            if !four {
                // Only IPv6 trees read the other columns (see `set`).
                w2[j] = w[2];
                w3[j] = w[3];
                w4[j] = w[4];
                v6 = true;
            }
        }
        for s in &mut self.s[keys.len()..] {
            *s = LEAF;
        }
        self.v6 = v6;
    }

    /// Parks walk `j` on a leaf.
    #[inline]
    pub(crate) fn clear(&mut self, j: usize) {
        self.s[j] = LEAF;
    }

    /// The scalar walk: every walk to its leaf, one level of all walks per round, at
    /// most [`MAX_LEVELS`] rounds.
    pub(crate) fn walk_scalar(&mut self, slots: &[Slot], table: &[u64]) {
        for _ in 0..MAX_LEVELS {
            let mut all = LEAF;
            for j in 0..BLOCK {
                let w = std::array::from_fn(|x| self.w[x][j]);
                self.s[j] = step(slots, table, self.s[j], &w);
                all &= self.s[j];
            }
            if all & LEAF != 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key word 1 with the `bits` bits from `shift` set to `v` and every other bit
    /// from a pattern (so the window's bits below the cut, or wrapped around from the
    /// top of the word, are not zero).
    fn key(shift: u32, bits: u32, v: u64) -> Words {
        const PATTERN: u64 = 0x5aa5_c33c_0ff0_9669;
        let mask = u64::MAX >> (64 - bits) << shift;
        [u64::MAX, (PATTERN & !mask) | (v << shift), 0, 0, 0]
    }

    /// Checks the scalar child index of a ranged node over `starts` (key word 1, cut
    /// `bits` bits at `shift`) against its definition, `#{run starts <= v}`, for every
    /// cut value, with other bits of the key word set around the cut.
    fn check_runs_at(starts: &[u8], bits: u32, shift: u32) {
        let mut table = vec![0x0102_0304_0506_0708];
        let node = if starts.len() <= INLINE_STARTS {
            ranged(1, shift, bits, 100, starts).expect("inline starts fit")
        } else {
            assert_eq!(
                ranged(1, shift, bits, 100, starts),
                None,
                "too many to be inline"
            );
            table.push(starts_word(starts, bits).expect("valid starts"));
            tabled(1, shift, bits, 100, 1).expect("fits")
        };
        assert_eq!(node & (LEAF | RANGED), RANGED);
        assert_eq!(node & TABLED != 0, starts.len() > INLINE_STARTS);
        assert_eq!(decode(node), (1, (shift + bits + 56) % 64, bits));
        for v in 0..1u64 << bits {
            let w = key(shift, bits, v);
            let want = starts.iter().filter(|&&s| u64::from(s) <= v).count() as u64;
            assert_eq!(
                child_index(node, &table, &w),
                want,
                "starts {starts:?}, v {v}, shift {shift}"
            );
            let slots = vec![EMPTY; 200];
            let moved = step(&slots, &table, node, &w);
            assert_eq!(moved, EMPTY, "a step reads slot 100 + {want}");
        }
    }

    /// [`check_runs_at`] with the cut at the bottom of the word (the window wraps
    /// around), in the middle, and at the top.
    fn check_runs(starts: &[u8], bits: u32) {
        for shift in [0, 8, 64 - bits] {
            check_runs_at(starts, bits, shift);
        }
    }

    #[test]
    fn ranged_nodes_count_their_run_starts() {
        check_runs(&[], 8); // one run (the builder never stores it; still well defined)
        check_runs(&[1], 1); // two runs, one-bit cut
        check_runs(&[1, 2, 3], 2); // four runs, every value its own
        check_runs(&[3, 200, 255], 8); // four runs, the last start at the top value
        check_runs(&[10, 20, 30, 40], 8); // five runs: the first tabled size
        check_runs(&[1, 2, 3, 4, 5, 6, 7, 255], 8); // nine runs: the most
        check_runs(&[2, 3, 5, 7, 11, 13, 17, 19], 5);
        check_runs(&[1, 4, 5, 7], 3);
        // Ten runs, a zero start, unordered starts, a start past the cut: not a node.
        assert_eq!(starts_word(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 8), None);
        assert_eq!(starts_word(&[0, 4], 8), None);
        assert_eq!(starts_word(&[5, 5], 8), None);
        assert_eq!(starts_word(&[6, 5], 8), None);
        assert_eq!(starts_word(&[1, 8], 3), None);
        assert_eq!(starts_word(&[1], 0), None);
    }

    /// A plain node's child is its window: the cut value in the top `bits` bits,
    /// whatever the key holds below it.
    #[test]
    fn plain_nodes_index_by_window() {
        for bits in 1..=MAX_CUT_BITS {
            for shift in [0, 3, 8, 64 - bits] {
                let node = plain(1, shift, bits, 0).expect("fits");
                for v in 0..1u64 << bits {
                    let w = key(shift, bits, v);
                    let c = child_index(node, &[], &w);
                    assert!(c < 256, "bits {bits}, shift {shift}, v {v}: child {c}");
                    assert_eq!(c >> (8 - bits), v, "bits {bits}, shift {shift}");
                }
            }
        }
    }

    #[test]
    fn fields_that_do_not_fit_refuse_the_node() {
        let top = MAX_SLOTS - 1;
        for s in [
            plain(0, 0, 8, top),
            ranged(0, 0, 8, top, &[1, 2, 3]),
            tabled(0, 0, 8, top, MAX_TABLE - 1),
        ] {
            let s = s.expect("the highest offset fits");
            assert_eq!(s & OFFSET_MASK, top as u64);
        }
        assert_eq!(plain(0, 0, 8, MAX_SLOTS), None);
        assert_eq!(ranged(0, 0, 8, MAX_SLOTS, &[1]), None);
        assert_eq!(tabled(0, 0, 8, MAX_SLOTS, 0), None);
        assert_eq!(tabled(0, 0, 8, 0, MAX_TABLE), None);
        assert_eq!(plain(WORDS as u32, 0, 8, 0), None);
        assert_eq!(plain(0, 64, 8, 0), None);
        assert_eq!(plain(0, 57, 8, 0), None); // the cut would leave the word
        assert_eq!(plain(0, 0, 0, 0), None);
        assert_eq!(plain(0, 0, MAX_CUT_BITS + 1, 0), None);
        for (word, shift, bits, window) in [(0, 0, 1, 57), (4, 56, 8, 56), (1, 48, 3, 43)] {
            let s = plain(word, shift, bits, top).expect("fits");
            assert_eq!(decode(s), (word as usize, window, bits));
            assert_eq!(s & (LEAF | RANGED | TABLED), 0);
        }
    }

    proptest::proptest! {
        /// `set_all` leaves a block exactly as `set` per key and `clear` per other
        /// walk do, from the same starting block, for any mix of families.
        #[test]
        fn set_all_is_set_per_key(
            raw in proptest::collection::vec(
                (proptest::prelude::any::<(u128, u128, u16, u16, u8)>(), proptest::bool::ANY),
                0..=BLOCK + 3,
            ),
            start in proptest::prelude::any::<(bool, u64)>(),
        ) {
            let keys: Vec<FlowKey> = raw
                .iter()
                .map(|&((src, dst, sport, dport, proto), six)| FlowKey {
                    src: if six { src } else { src & 0xffff_ffff },
                    dst: if six { dst } else { dst & 0xffff_ffff },
                    sport,
                    dport,
                    proto,
                    family: if six { Family::V6 } else { Family::V4 },
                    ifindex: 0,
                })
                .collect();
            let mut init = Block::new();
            init.v6 = start.0;
            init.w.iter_mut().flatten().for_each(|w| *w = start.1);
            let (r4, r6) = (7, 9);
            let mut fast = init.clone();
            fast.set_all(&keys, r4, r6);
            let mut slow = init;
            slow.v6 = false;
            for j in 0..BLOCK {
                match keys.get(j) {
                    Some(k) => slow.set(j, if k.family == Family::V4 { r4 } else { r6 }, k),
                    None => slow.clear(j),
                }
            }
            proptest::prop_assert_eq!(fast.s, slow.s);
            proptest::prop_assert_eq!(fast.w, slow.w);
            proptest::prop_assert_eq!(fast.v6, slow.v6);
        }
    }

    #[test]
    fn a_tabled_index_past_the_table_counts_nothing() {
        let node = tabled(1, 0, 8, 0, 5).expect("fits");
        let w = [0, 200, 0, 0, 0];
        assert_eq!(child_index(node, &[], &w), 0);
        assert_eq!(child_index(node, &[u64::MAX; 5], &w), 0);
    }
}
