//! The compiled trees' slot format and the scalar step: the contract between the
//! builder (`tree`), which writes slots, and every lookup kernel, which reads them —
//! the scalar step here and the SIMD walks in `crate::arch::walk`.
//!
//! A tree lives in one arena of [`Slot`]s, two `u64` words each. The first word is
//! - a precomputed leaf: `LEAF | index` (into the verdicts table, or into the
//!   position-pairs table in a partitioned program);
//! - a leaf list: `LEAF | LIST | count << 32 | offset` (items checked in order);
//! - an inner node: the offset of its children (bits 0..32), the key word it cuts
//!   (byte 4), flags (byte 5: [`RANGED`]), the shift (byte 6) and the width (byte 7,
//!   at most [`MAX_CUT_BITS`]). The cut value `v` is `bits` bits of key word `word`
//!   (see [`Words`]) from bit `shift`. A plain node's `2^bits` children sit at the
//!   offset and the child is `offset + v`.
//!
//! The second word holds a ranged node's run starts: such a node stores one child per
//! run of equal children, at most [`MAX_RUNS`] runs; run 0 starts at 0 and the other
//! starts (ascending, nonzero) are the bytes of the second word, unused bytes 0. The
//! child is `offset + #{start bytes <= v}`: unused starts always count, so the builder
//! stores the offset lowered by their number (the arena begins with that many
//! padding slots). Leaves and plain nodes have a zero second word.
//!
//! So one step reads one slot, whatever the node: a SIMD step is two gathers that do
//! not depend on each other, and every field sits in its own byte. Every slot the
//! builder makes stays inside the arena for every key; kernels clamp their loads to
//! the arena all the same.

use crate::program::{Family, FlowKey};

/// One tree slot: the node word and the run-starts word.
pub(crate) type Slot = [u64; 2];

/// Leaf flag of a slot's first word.
pub(crate) const LEAF: u64 = 1 << 63;
/// With [`LEAF`]: the leaf is a short list of items (`offset | count << 32`) rather
/// than a table index.
pub(crate) const LIST: u64 = 1 << 62;
/// An inner node stored as runs of equal children.
pub(crate) const RANGED: u64 = 1 << 40;
/// Bit position of the key word index (byte 4).
pub(crate) const WORD_AT: u32 = 32;
/// Bit position of the shift (byte 6).
pub(crate) const SHIFT_AT: u32 = 48;
/// Bit position of the cut width (byte 7).
pub(crate) const BITS_AT: u32 = 56;
/// Widest cut.
pub(crate) const MAX_CUT_BITS: u32 = 8;
/// Most runs of a ranged node.
pub(crate) const MAX_RUNS: usize = 9;
/// Padding slots at the start of the arena (ranged offsets are lowered by up to this).
pub(crate) const ARENA_PAD: usize = MAX_RUNS - 1;
/// A leaf slot that is never a valid table index (reads as "no decision").
pub(crate) const EMPTY: Slot = [LEAF | u32::MAX as u64, 0];

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
    [LEAF | index as u64, 0]
}

/// A plain inner slot: `2^bits` children at `offset`; `None` if the offset does not
/// fit its bits.
pub(crate) fn plain(word: u32, shift: u32, bits: u32, offset: usize) -> Option<Slot> {
    let off = u32::try_from(offset).ok()?;
    Some([header(word, shift, bits) | u64::from(off), 0])
}

/// A ranged inner slot: runs start at 0 and at each of `starts` (ascending, nonzero,
/// fewer than `MAX_RUNS`), their children at `offset` (at least `ARENA_PAD`); `None`
/// if the offset does not fit its bits.
pub(crate) fn ranged(
    word: u32,
    shift: u32,
    bits: u32,
    offset: usize,
    starts: &[u8],
) -> Option<Slot> {
    if starts.len() >= MAX_RUNS || offset < ARENA_PAD {
        return None;
    }
    // Unused starts are 0 and always count: lower the offset by their number.
    let off = u32::try_from(offset - (MAX_RUNS - 1 - starts.len())).ok()?;
    let mut packed = 0u64;
    for (i, &st) in starts.iter().enumerate() {
        packed |= u64::from(st) << (8 * i);
    }
    Some([header(word, shift, bits) | RANGED | u64::from(off), packed])
}

const fn header(word: u32, shift: u32, bits: u32) -> u64 {
    ((word as u64) << WORD_AT) | ((bits as u64) << BITS_AT) | ((shift as u64) << SHIFT_AT)
}

/// (word, shift, bits) of an inner slot.
#[inline(always)]
pub(crate) const fn decode(s: u64) -> (usize, u32, u32) {
    (
        ((s >> WORD_AT) & 0xff) as usize,
        ((s >> SHIFT_AT) & 0xff) as u32,
        ((s >> BITS_AT) & 0xff) as u32,
    )
}

/// The child index (from the slot's offset) of inner slot `s` for key words `w`.
#[inline(always)]
pub(crate) fn child_index(s: Slot, w: &Words) -> u64 {
    let (word, shift, bits) = decode(s[0]);
    let x = w.get(word).copied().unwrap_or(0);
    let v = x.checked_shr(shift).unwrap_or(0) & !u64::MAX.checked_shl(bits).unwrap_or(0);
    if s[0] & RANGED == 0 {
        return v;
    }
    s[1].to_le_bytes()
        .iter()
        .map(|&st| u64::from(u64::from(st) <= v))
        .sum()
}

/// One step of a walk without branches: a leaf stays where it is, an inner slot moves
/// to its child. Loads past the arena read as [`EMPTY`].
#[inline(always)]
pub(crate) fn step(slots: &[Slot], s: Slot, w: &Words) -> Slot {
    let at = (s[0] & 0xffff_ffff).wrapping_add(child_index(s, w));
    let next = slots.get(at as usize).copied().unwrap_or(EMPTY);
    if s[0] & LEAF != 0 { s } else { next }
}

/// One step of an inner slot, `None` past the arena (diagnostics).
pub(crate) fn step_checked(slots: &[Slot], s: Slot, w: &Words) -> Option<Slot> {
    let at = (s[0] & 0xffff_ffff).wrapping_add(child_index(s, w));
    slots.get(at as usize).copied()
}

/// Walks advanced in lockstep by one kernel call.
pub(crate) const BLOCK: usize = 64;

/// The walks of one lockstep block, laid out for vector loads: `s[j]` is walk `j`'s
/// current slot, `w[x][j]` its key word `x`. Unused walks sit on a leaf.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub(crate) struct Block {
    pub(crate) s: [u64; BLOCK],
    /// The second words of the current slots.
    pub(crate) t: [u64; BLOCK],
    pub(crate) w: [[u64; BLOCK]; WORDS],
    /// Whether any walk has an IPv6 key (words 2.. are in use).
    pub(crate) v6: bool,
}

impl Block {
    pub(crate) fn new() -> Self {
        Block {
            s: [LEAF; BLOCK],
            t: [0; BLOCK],
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
        self.s[j] = root[0];
        self.t[j] = root[1];
    }

    /// Parks walk `j` on a leaf.
    #[inline]
    pub(crate) fn clear(&mut self, j: usize) {
        self.s[j] = LEAF;
        self.t[j] = 0;
    }

    /// The scalar walk: every walk to its leaf, one level of all walks per round.
    pub(crate) fn walk_scalar(&mut self, slots: &[Slot]) {
        loop {
            let mut all = LEAF;
            for j in 0..BLOCK {
                let w = std::array::from_fn(|x| self.w[x][j]);
                [self.s[j], self.t[j]] = step(slots, [self.s[j], self.t[j]], &w);
                all &= self.s[j];
            }
            if all & LEAF != 0 {
                return;
            }
        }
    }
}
