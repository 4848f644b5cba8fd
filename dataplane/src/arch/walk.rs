//! SIMD tree walks: the classifier's lockstep block of walks advanced on vector lanes.
//!
//! On the slots the builder makes, each kernel computes exactly what
//! `Block::walk_scalar` computes (the step of `classifier::slot`), eight (AVX-512) or
//! four (AVX2) walks per register: select the key word, take the node's window of it
//! (a rotate, or with AVX512-VBMI one `vpmultishiftqb` that also spreads it over the
//! lane's bytes for the compare), count run starts for ranged nodes, gather
//! the child's node word (tabled nodes' run starts come from the starts table: a
//! second gather, masked to the walks on tabled nodes and skipped when there are
//! none). Arena indices are clamped to the arena and starts-table indices to the
//! table, each gather masked to the walks that need it, so no load leaves `slots` or
//! the table whatever their contents. On a malformed arena the clamped loads differ
//! from the scalar step's (which reads past-the-end slots as `EMPTY`); the classifier
//! resolves any walk that does not end on a leaf to its sentinel.
//!
//! Like the scalar walk, every kernel takes at most `slot::MAX_LEVELS` steps per walk
//! (deeper than any tree the builder makes), so even a cyclic arena cannot hang it.
//!
//! [`Kernel`] values for a SIMD kernel exist only when the CPU has its features
//! (checked with `is_x86_feature_detected!`), which is what makes calling the
//! `#[target_feature]` functions sound.

use crate::classifier::slot::{BLOCK, Block, Slot};
use crate::program::{Decision, FlowKey, Verdicts};

/// Which walk kernel a classifier uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel(Kind);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx512Vbmi,
}

impl Kernel {
    /// The portable scalar walk (always available).
    pub const SCALAR: Kernel = Kernel(Kind::Scalar);

    /// Every kernel this CPU can run, slowest first.
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Kernel(Kind::Avx2));
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                v.push(Kernel(Kind::Avx512));
                if std::arch::is_x86_feature_detected!("avx512vbmi") {
                    v.push(Kernel(Kind::Avx512Vbmi));
                }
            }
        }
        v
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Kernel {
        Kernel::available()
            .last()
            .copied()
            .unwrap_or(Kernel::SCALAR)
    }

    /// The kernel called `name` (`scalar`, `avx2`, `avx512`, `avx512vbmi`), if this
    /// CPU can run it.
    pub fn by_name(name: &str) -> Option<Kernel> {
        Kernel::available().into_iter().find(|k| k.name() == name)
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self.0 {
            Kind::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512Vbmi => "avx512vbmi",
        }
    }
}

/// Advances every walk of `b` to its leaf in `slots` with kernel `k`.
#[inline]
pub(crate) fn walk(k: Kernel, slots: &[Slot], table: &[u64], b: &mut Block) {
    match k.0 {
        Kind::Scalar => b.walk_scalar(slots, table),
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => {
            // SAFETY: a `Kind::Avx2` kernel is only made by `Kernel::available`, after
            // `is_x86_feature_detected!("avx2")` held.
            unsafe { x86::walk_avx2(slots, table, b) }
        }
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 => {
            // SAFETY: a `Kind::Avx512` kernel is only made by `Kernel::available`, after
            // `is_x86_feature_detected!` held for avx512f and avx512bw.
            unsafe { x86::walk_avx512(slots, table, b) }
        }
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512Vbmi => {
            // SAFETY: a `Kind::Avx512Vbmi` kernel is only made by `Kernel::available`,
            // after `is_x86_feature_detected!` held for avx512f, avx512bw and avx512vbmi.
            unsafe { x86::walk_avx512vbmi(slots, table, b) }
        }
    }
}

const _: () = assert!(BLOCK.is_multiple_of(8));

/// Sets up `b` as `Block::set_all(keys, r4, _)` does when every key is IPv4 (and at
/// most [`BLOCK`] are given), with kernel `k`'s vector loads: eight keys' key words
/// per round. Returns `false` when `k` has no such set-up, `keys` is empty or some key
/// is IPv6; `b`
/// may then be partly written and must be set up by `Block::set_all`.
#[inline]
pub(crate) fn set_all_v4(k: Kernel, keys: &[FlowKey], r4: Slot, b: &mut Block) -> bool {
    match k.0 {
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 | Kind::Avx512Vbmi => {
            // SAFETY: AVX-512 kernels are only made by `Kernel::available`, after
            // `is_x86_feature_detected!` held for avx512f and avx512bw.
            unsafe { x86::set_all_v4_avx512(keys, r4, b) }
        }
        _ => false,
    }
}

/// With kernel `k`'s vector loads, writes `out[j] = verdicts[s[j] as u32]` for every
/// `j < out.len()` (at most [`BLOCK`]) whose slot is a precomputed leaf (`LEAF` set,
/// `LIST` clear) with an index inside `verdicts`, and returns the mask of the other
/// `j` (left untouched, for the caller to resolve). `None` when `k` has no such
/// resolution (nothing is written).
#[inline]
pub(crate) fn resolve_leaves(
    k: Kernel,
    s: &[Slot; BLOCK],
    verdicts: &[Verdicts],
    out: &mut [Verdicts],
) -> Option<u64> {
    match k.0 {
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 | Kind::Avx512Vbmi => {
            // SAFETY: as in `set_all_v4`.
            Some(unsafe { x86::resolve_leaves_avx512(s, verdicts, out) })
        }
        _ => None,
    }
}

/// With kernel `k`'s gathers, for every `j < n` (at most [`BLOCK`]) whose slot
/// `s[j]` is a precomputed leaf (`LEAF` set, `LIST` clear) with an index inside
/// `pairs`, lowers each 32-bit half of `pos[j]` to that half of `pairs[s[j] as
/// u32]` if it is below (the first positions of a partitioned lookup, both views in
/// one word); walks not on a leaf, or on a leaf past the table, add no position and
/// are left as they are. Returns the mask of the walks on leaf lists, untouched, for
/// the caller to scan. `None` when `k` has no such resolution (nothing is written).
#[inline]
pub(crate) fn min_positions(
    k: Kernel,
    s: &[Slot; BLOCK],
    n: usize,
    pairs: &[u64],
    pos: &mut [u64; BLOCK],
) -> Option<u64> {
    match k.0 {
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 | Kind::Avx512Vbmi => {
            // SAFETY: as in `set_all_v4`.
            Some(unsafe { x86::min_positions_avx512(s, n, pairs, pos) })
        }
        _ => None,
    }
}

/// With kernel `k`'s gathers, for every `j < out.len()` (at most [`BLOCK`]) writes
/// the verdicts of the first positions `pos[j]` (enforced in the low half, pending
/// in the high half): `out[j].enforced = decisions[enforced[e]]` and
/// `out[j].pending = decisions[pending[p]]`, `sentinel` where an index is past its
/// table. `false` (nothing written) when `k` has no such resolution.
#[inline]
pub(crate) fn position_verdicts(
    k: Kernel,
    pos: &[u64; BLOCK],
    enforced: &[u32],
    pending: &[u32],
    decisions: &[Decision],
    sentinel: Decision,
    out: &mut [Verdicts],
) -> bool {
    match k.0 {
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 | Kind::Avx512Vbmi => {
            // SAFETY: as in `set_all_v4`.
            unsafe {
                x86::position_verdicts_avx512(pos, enforced, pending, decisions, sentinel, out)
            };
            true
        }
        _ => false,
    }
}

/// With kernel `k`'s gathers, for every `j` looks address `a[j]` up in a 16-8-8
/// trie of 64-bit slots (`crate::lpm`'s wide IPv4 table: slot 0 = nothing, top bit
/// set = a leaf, otherwise a child node's index; the child's slot for byte `b` is
/// `nodes[child * 256 + b]`) and writes the leaf it ends on to `out[j]`, or 0 when it
/// ends on an empty slot. Returns `false` (nothing written) when `k` has no such
/// lookup, or when `root` does not have 2^16 slots or `nodes` has none. Indices are
/// clamped to the tables, so no load leaves them whatever their contents.
#[inline]
pub(crate) fn lpm16_block(
    k: Kernel,
    root: &[u64],
    nodes: &[u64],
    a: &[u32; BLOCK],
    out: &mut [u64; BLOCK],
) -> bool {
    if root.len() != 1 << 16 || nodes.is_empty() {
        return false;
    }
    match k.0 {
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 | Kind::Avx512Vbmi => {
            // SAFETY: AVX-512 kernels are only made by `Kernel::available`, after
            // `is_x86_feature_detected!` held for avx512f (and avx512bw).
            unsafe { x86::lpm16_avx512(root, nodes, a, out) };
            true
        }
        _ => false,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::program::{Decision, FlowKey, Verdicts};

    use crate::classifier::slot::{
        BLOCK, Block, LEAF, LIST, MAX_LEVELS, MAX_TABLE, NOT_STARTS, OFFSET_MASK, RANGED, SHIFT_AT,
        Slot, TABLE_AT, TABLED, WORD_AT,
    };

    /// `vpshufb` control copying byte 0 of each 64-bit lane into all its bytes (for the
    /// lower and the upper qword of a 128-bit lane: `vpshufb` indices are per 128-bit
    /// lane).
    const REPLICATE: [i64; 2] = [0, 0x0808_0808_0808_0808];
    /// `vpshufb` control copying the window byte of a node word (byte 6; its low 6
    /// bits are the window, all `vpmultishiftqb` reads of a control byte) into all
    /// bytes of its lane.
    const REP_SHIFT: [i64; 2] = [0x0606_0606_0606_0606, 0x0e0e_0e0e_0e0e_0e0e];
    const _: () = assert!(SHIFT_AT == 48);
    const SHIFT_MASK: i64 = 0x3f;
    const _: () = assert!(BLOCK == 64);

    #[target_feature(enable = "avx512f")]
    fn pair512(c: [i64; 2]) -> __m512i {
        _mm512_set_epi64(c[1], c[0], c[1], c[0], c[1], c[0], c[1], c[0])
    }

    /// Steps registers `$r` of `$s` with `$step`, or-ing the masks of walks still on
    /// inner nodes into `$active`: unrolled by hand so every register stays in a
    /// register.
    macro_rules! steps {
        ($step:ident, $s:ident, $active:ident; $($r:literal)*) => {$(
            let (a, k) = $step($s[$r], $r);
            $s[$r] = a;
            $active |= k;
        )*};
    }

    /// An AVX-512 walk: 8 walks per register, all of the block's registers stepped
    /// per round so their gathers overlap. `$vbmi` picks how the cut value is taken
    /// from the key word: `vpmultishiftqb` (AVX512-VBMI), which brings the 8 key bits
    /// at the shift into every byte of the lane at once, or variable shifts and a
    /// `vpshufb` to replicate the value for the run-start compare.
    macro_rules! walk_avx512 {
        ($(#[$doc:meta])* $name:ident, $features:literal, $vbmi:literal) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(slots: &[Slot], table: &[u64], b: &mut Block) {
                const R: usize = BLOCK / 8;
                if slots.is_empty() {
                    return;
                }
                let first = slots.as_ptr().cast::<i64>();
                let last = _mm512_set1_epi64(slots.len() as i64 - 1);
                let leaf = _mm512_set1_epi64(LEAF as i64);
                let ranged = _mm512_set1_epi64(RANGED as i64);
                let tabled = _mm512_set1_epi64(TABLED as i64);
                let not_starts = _mm512_set1_epi64(NOT_STARTS as i64);
                let wbit = [0, 1, 2].map(|i| _mm512_set1_epi64(1i64 << (WORD_AT + i)));
                let offset_mask = _mm512_set1_epi64(OFFSET_MASK as i64);
                let shift_mask = _mm512_set1_epi64(SHIFT_MASK);
                let replicate = pair512(REPLICATE);
                let rep_shift = pair512(REP_SHIFT);
                let low_byte = _mm512_set1_epi64(0xff);
                let byte_one = _mm512_set1_epi8(1);
                let zero = _mm512_setzero_si512();
                let table_at = table.as_ptr().cast::<i64>();
                // With an empty table no node is tabled (and none is looked up).
                let has_table = !table.is_empty();
                let table_last = _mm512_set1_epi64(table.len().max(1) as i64 - 1);
                let entry_mask = _mm512_set1_epi64(MAX_TABLE as i64 - 1);
                let load = |a: &[u64; BLOCK], r: usize| {
                    // SAFETY: `8 * r + 8 <= BLOCK` for every `r < R`: the 64 bytes read
                    // lie in `a`.
                    unsafe { _mm512_loadu_si512(a.as_ptr().add(8 * r).cast()) }
                };
                let v6 = b.v6;
                // One step of the 8 walks of register `r` at node words `a`; also the
                // mask of the walks that were still on inner nodes.
                let step = |a: __m512i, r: usize| -> (__m512i, u8) {
                    let k = _mm512_testn_epi64_mask(a, leaf);
                    if k == 0 {
                        return (a, 0);
                    }
                    let odd = _mm512_test_epi64_mask(a, wbit[0]);
                    let mut x = _mm512_mask_blend_epi64(odd, load(&b.w[0], r), load(&b.w[1], r));
                    if v6 {
                        let y =
                            _mm512_mask_blend_epi64(odd, load(&b.w[2], r), load(&b.w[3], r));
                        x = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(a, wbit[1]), x, y);
                        let w4 = load(&b.w[4], r);
                        x = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(a, wbit[2]), x, w4);
                    }
                    // `v`: the node's window of the key word; `vrep`: it in every byte
                    // (for the compare).
                    let (v, vrep) = if $vbmi {
                        // Every byte of `vrep`: the 8 key bits from the window's start.
                        let ctrl = _mm512_shuffle_epi8(a, rep_shift);
                        // SAFETY: this branch runs only in the kernel made with
                        // `$vbmi` true, whose function enables avx512vbmi.
                        #[allow(unused_unsafe)]
                        let vrep = unsafe { _mm512_multishift_epi64_epi8(ctrl, x) };
                        (_mm512_and_si512(vrep, low_byte), vrep)
                    } else {
                        let window = _mm512_and_si512(_mm512_srli_epi64::<SHIFT_AT>(a), shift_mask);
                        let v = _mm512_and_si512(_mm512_rorv_epi64(x, window), low_byte);
                        (v, _mm512_shuffle_epi8(v, replicate))
                    };
                    // Ranged nodes: count the run-start bytes (scaled `start - 1`,
                    // unused 0xff) below the window, from the node word or, for tabled nodes, the starts table.
                    let mut starts = _mm512_or_si512(a, not_starts);
                    let in_table = _mm512_mask_test_epi64_mask(k, a, tabled);
                    if in_table != 0 && has_table {
                        let entry = _mm512_min_epu64(
                            _mm512_and_si512(_mm512_srli_epi64::<TABLE_AT>(a), entry_mask),
                            table_last,
                        );
                        // SAFETY: `entry <= table.len() - 1` and `table` is not empty, so
                        // every loaded word is in `table`; masked-off lanes load nothing.
                        starts = unsafe {
                            _mm512_mask_i64gather_epi64::<8>(starts, in_table, entry, table_at)
                        };
                    }
                    let lt = _mm512_cmplt_epu8_mask(starts, vrep);
                    let count = _mm512_sad_epu8(_mm512_maskz_mov_epi8(lt, byte_one), zero);
                    let idx = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(a, ranged), v, count);
                    let at = _mm512_add_epi64(_mm512_and_si512(a, offset_mask), idx);
                    let at = _mm512_min_epu64(at, last);
                    // SAFETY: `at <= slots.len() - 1`, so slot `at` is in `slots`;
                    // masked-off lanes load nothing.
                    let na = unsafe { _mm512_mask_i64gather_epi64::<8>(a, k, at, first) };
                    (na, k)
                };
                let mut s: [__m512i; R] = std::array::from_fn(|r| load(&b.s, r));
                for _ in 0..MAX_LEVELS {
                    let mut active = 0;
                    steps!(step, s, active; 0 1 2 3 4 5 6 7);
                    if active == 0 {
                        break;
                    }
                }
                for (r, sr) in s.iter().enumerate() {
                    // SAFETY: `r < R`, so `8 * r + 8 <= BLOCK`: the 64 bytes written lie
                    // in `b.s`.
                    unsafe { _mm512_storeu_si512(b.s.as_mut_ptr().add(8 * r).cast(), *sr) };
                }
            }
        };
    }

    walk_avx512!(
        /// The AVX-512 walk with shifts.
        ///
        /// # Safety
        /// The CPU must support avx512f and avx512bw.
        walk_avx512,
        "avx512f,avx512bw",
        false
    );

    walk_avx512!(
        /// The AVX-512 walk with `vpmultishiftqb`.
        ///
        /// # Safety
        /// The CPU must support avx512f, avx512bw and avx512vbmi.
        walk_avx512vbmi,
        "avx512f,avx512bw,avx512vbmi",
        true
    );

    /// Where the vector set-up reads a key: the low 8 bytes of `src` and of `dst` (an
    /// IPv4 address is their low 4), and the 8 bytes from `sport`: sport, dport,
    /// proto, family, ifindex (no padding among them).
    const KEY_SRC: usize = std::mem::offset_of!(FlowKey, src);
    const KEY_DST: usize = std::mem::offset_of!(FlowKey, dst);
    const KEY_TAIL: usize = std::mem::offset_of!(FlowKey, sport);
    const KEY_STRIDE: usize = size_of::<FlowKey>();
    const _: () = assert!(
        KEY_SRC == 0
            && KEY_DST == 16
            && KEY_TAIL == 32
            && std::mem::offset_of!(FlowKey, dport) == 34
            && std::mem::offset_of!(FlowKey, proto) == 36
            && std::mem::offset_of!(FlowKey, family) == 37
            && std::mem::offset_of!(FlowKey, ifindex) == 38
            && KEY_STRIDE == 48
            && cfg!(target_endian = "little")
    );
    /// `vpshufb` control turning a key's tail bytes (sport, dport, proto, ...) into
    /// key word 1, `sport << 48 | dport << 32 | proto` (`slot::words_of`).
    const PORTS: [i64; 2] = [
        i64::from_le_bytes([4, 0x80, 0x80, 0x80, 2, 3, 0, 1]),
        i64::from_le_bytes([12, 0x80, 0x80, 0x80, 10, 11, 8, 9]),
    ];

    /// The mask of the first `live` of 8 lanes.
    fn first_lanes(live: usize) -> u8 {
        (((1u16 << live.min(8)) - 1) & 0xff) as u8
    }

    /// See `super::set_all_v4`.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bw.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn set_all_v4_avx512(keys: &[FlowKey], r4: Slot, b: &mut Block) -> bool {
        let n = keys.len().min(BLOCK);
        if n == 0 {
            // No key to read (and no offset into an empty slice to form).
            return false;
        }
        let base = keys.as_ptr().cast::<i64>();
        let ports = pair512(PORTS);
        let low8 = _mm512_set1_epi64(0xff);
        let v4 = _mm512_set1_epi64(crate::program::Family::V4 as i64);
        let root = _mm512_set1_epi64(r4 as i64);
        let parked = _mm512_set1_epi64(LEAF as i64);
        // SAFETY: each constant is 64 bytes (16 dwords, 8 qwords): the loads read them.
        let (w0_idx, tail_idx) = unsafe {
            (
                _mm512_loadu_si512(W0_IDX.as_ptr().cast()),
                _mm512_loadu_si512(TAIL_IDX.as_ptr().cast()),
            )
        };
        let (w0_from, tail_from) = (W0_FROM, TAIL_FROM);
        for g in 0..BLOCK / 8 {
            let live = n.saturating_sub(8 * g).min(8);
            let m = first_lanes(live);
            // The group's 8 keys as 6 registers of 8 qwords (48 bytes a key), read in
            // order (contiguous loads, which the hardware prefetches, where 8-lane
            // gathers of the same words are not): qwords past the live keys are
            // masked off and read nothing.
            let words = KEY_STRIDE / 8 * live;
            let r: [__m512i; 6] = std::array::from_fn(|i| {
                let k = first_lanes(words.saturating_sub(8 * i)) & INITIALIZED[i];
                // SAFETY: the lanes `k` enables are qwords `8i..8i + 8` of the group
                // below `words`, so inside the `live` keys `8g..8g + live` of `keys`,
                // and none is a key's padding (`INITIALIZED`): every byte read is an
                // initialized field. Masked-off lanes read nothing. The address is
                // formed with `wrapping_add`, so it may point past `keys` where every
                // lane is off.
                unsafe {
                    _mm512_maskz_loadu_epi64(k, base.wrapping_add(KEY_STRIDE / 8 * 8 * g + 8 * i))
                }
            });
            // One field of the 8 keys from the three pairs of registers.
            let pick = |idx: __m512i, from: [u16; 2], dwords: bool| {
                let p = |a: __m512i, b: __m512i| {
                    if dwords {
                        _mm512_permutex2var_epi32(a, idx, b)
                    } else {
                        _mm512_permutex2var_epi64(a, idx, b)
                    }
                };
                let (t0, t1, t2) = (p(r[0], r[1]), p(r[2], r[3]), p(r[4], r[5]));
                if dwords {
                    let x = _mm512_mask_blend_epi32(from[0], t0, t1);
                    _mm512_mask_blend_epi32(from[1], x, t2)
                } else {
                    let x = _mm512_mask_blend_epi64(from[0] as u8, t0, t1);
                    _mm512_mask_blend_epi64(from[1] as u8, x, t2)
                }
            };
            // Key word 0: per key, the low dword of `dst`, then that of `src`.
            let w0 = _mm512_maskz_mov_epi64(m, pick(w0_idx, w0_from, true));
            let tail = _mm512_maskz_mov_epi64(m, pick(tail_idx, tail_from, false));
            let family = _mm512_and_si512(_mm512_srli_epi64::<40>(tail), low8);
            if _mm512_mask_cmpneq_epu64_mask(m, family, v4) != 0 {
                return false;
            }
            let w1 = _mm512_shuffle_epi8(tail, ports);
            let s = _mm512_mask_blend_epi64(m, parked, root);
            // SAFETY: `8g + 8 <= BLOCK`: the 64 bytes written lie in each column.
            unsafe {
                _mm512_storeu_si512(b.w[0].as_mut_ptr().add(8 * g).cast(), w0);
                _mm512_storeu_si512(b.w[1].as_mut_ptr().add(8 * g).cast(), w1);
                _mm512_storeu_si512(b.s.as_mut_ptr().add(8 * g).cast(), s);
            }
        }
        b.v6 = false;
        true
    }

    /// The `vpermt2d` / `vpermt2q` indices and pair masks that gather one field per
    /// result lane from a group's 6 registers (in lanes of `unit` bytes: 4 or 8).
    /// Lane `l` takes, of key `l / ats.len()`, the field at byte offset
    /// `ats[l % ats.len()]` of `FlowKey`: its index into the pair of registers that
    /// holds it, and (in `from[pair - 1]`) which pair, when not the first.
    const fn picks(ats: &[usize], unit: usize) -> ([u32; 16], [u16; 2]) {
        let per_reg = 64 / unit;
        let (mut idx, mut from) = ([0u32; 16], [0u16; 2]);
        let mut l = 0;
        while l < per_reg {
            let q = (KEY_STRIDE * (l / ats.len()) + ats[l % ats.len()]) / unit;
            idx[l] = (q % (2 * per_reg)) as u32;
            let pair = q / (2 * per_reg);
            if pair > 0 {
                from[pair - 1] |= 1 << l;
            }
            l += 1;
        }
        (idx, from)
    }

    /// Key word 0 (`src << 32 | dst`, low halves), as dwords: dword `2i` of the
    /// result is `dst`'s low dword of key `i`, dword `2i + 1` its `src`'s.
    const W0: ([u32; 16], [u16; 2]) = picks(&[KEY_DST, KEY_SRC], 4);
    const W0_IDX: [u32; 16] = W0.0;
    const W0_FROM: [u16; 2] = W0.1;

    /// Each key's 8 bytes from `sport`, as qwords (indices widened to 64 bits).
    const TAIL: ([u64; 8], [u16; 2]) = {
        let (narrow, from) = picks(&[KEY_TAIL], 8);
        let mut idx = [0u64; 8];
        let mut i = 0;
        while i < 8 {
            idx[i] = narrow[i] as u64;
            i += 1;
        }
        (idx, from)
    };
    const TAIL_IDX: [u64; 8] = TAIL.0;

    /// Per register of a group, the qwords that are not a key's padding: a key's
    /// last qword (bytes 40..48: `ifindex` ends at 40) is padding, never read.
    const INITIALIZED: [u8; 6] = {
        let mut m = [0u8; 6];
        let mut q = 0;
        while q < 48 {
            if q % (KEY_STRIDE / 8) != KEY_STRIDE / 8 - 1 {
                m[q / 8] |= 1 << (q % 8);
            }
            q += 1;
        }
        m
    };
    const _: () =
        assert!(std::mem::offset_of!(FlowKey, ifindex) + 2 <= KEY_STRIDE - 8 && KEY_STRIDE == 48);
    const TAIL_FROM: [u16; 2] = TAIL.1;
    const _: () = assert!(
        KEY_STRIDE.is_multiple_of(8)
            && KEY_SRC.is_multiple_of(8)
            && KEY_DST.is_multiple_of(8)
            && KEY_TAIL.is_multiple_of(8)
    );

    const _: () = assert!(size_of::<Verdicts>() == 16 && align_of::<Verdicts>() <= 16);

    /// Spreads mask bits 0..4 of `m` over pairs of bits (one pair per 16-byte lane).
    fn pairs(m: u8) -> u8 {
        (0..4).fold(0, |acc, i| acc | (((m >> i) & 1) * 3) << (2 * i))
    }

    /// Writes walk `8g + i`'s `Verdicts` for each lane `i` in `m`: its first 8 bytes
    /// from lane `i` of `lo`, its last 8 from lane `i` of `hi`, into the `Verdicts`
    /// array at `dst` (as `i64`s, two per `Verdicts`); nothing for other lanes.
    ///
    /// # Safety
    /// The CPU must support avx512f; for each lane `i` in `m`, the 16 bytes of
    /// `Verdicts` `8g + i` at `dst` must be writable, and the two halves written must
    /// make a valid `Verdicts`.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_verdicts(dst: *mut i64, g: usize, m: u8, lo: __m512i, hi: __m512i) {
        let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        let even = _mm512_unpacklo_epi64(lo, hi); // walks 0, 2, 4, 6: (lo, hi)
        let odd = _mm512_unpackhi_epi64(lo, hi); // walks 1, 3, 5, 7
        let front = _mm512_permutex2var_epi64(even, first, odd); // walks 0..4
        let back = _mm512_permutex2var_epi64(even, second, odd); // walks 4..8
        // SAFETY: the caller makes the 16 bytes of every walk in `m` writable; other
        // lanes store nothing. A half is stored (and its address formed) only when one
        // of its walks is in `m`: walk `8g` (or `8g + 4`), at or below that walk in
        // the same array, is inside it.
        unsafe {
            if m & 0x0f != 0 {
                _mm512_mask_storeu_epi64(dst.add(16 * g), pairs(m), front);
            }
            if m & 0xf0 != 0 {
                _mm512_mask_storeu_epi64(dst.add(16 * g + 8), pairs(m >> 4), back);
            }
        }
    }

    /// See `super::resolve_leaves`.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bw.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn resolve_leaves_avx512(
        s: &[Slot; BLOCK],
        verdicts: &[Verdicts],
        out: &mut [Verdicts],
    ) -> u64 {
        let n = out.len().min(BLOCK);
        if verdicts.is_empty() {
            // Nothing to copy (and no offset into an empty table to form).
            return u64::MAX.checked_shr(64 - n as u32).unwrap_or(0);
        }
        let table = verdicts.as_ptr().cast::<i64>();
        let dst = out.as_mut_ptr().cast::<i64>();
        let len = _mm512_set1_epi64(verdicts.len() as i64);
        let kind = _mm512_set1_epi64((LEAF | LIST) as i64);
        let leaf = _mm512_set1_epi64(LEAF as i64);
        let low32 = _mm512_set1_epi64(0xffff_ffff);
        let zero = _mm512_setzero_si512();
        let mut rest = 0u64;
        for g in 0..n.div_ceil(8) {
            let m = first_lanes(n - 8 * g);
            // SAFETY: `8g + 8 <= BLOCK`: the 64 bytes read lie in `s`.
            let sv = unsafe { _mm512_loadu_si512(s.as_ptr().add(8 * g).cast()) };
            let index = _mm512_and_si512(sv, low32);
            let precomputed = _mm512_mask_cmpeq_epi64_mask(m, _mm512_and_si512(sv, kind), leaf);
            let ok = _mm512_mask_cmplt_epu64_mask(precomputed, index, len);
            rest |= u64::from(m & !ok) << (8 * g);
            if ok == 0 {
                continue;
            }
            // Two i64 per `Verdicts`.
            let at = _mm512_slli_epi64::<1>(index);
            // SAFETY: lanes in `ok` have `index < verdicts.len()`, so both 8-byte
            // halves of `verdicts[index]` lie in `verdicts`; others load nothing.
            let (lo, hi) = unsafe {
                (
                    _mm512_mask_i64gather_epi64::<8>(zero, ok, at, table),
                    _mm512_mask_i64gather_epi64::<8>(zero, ok, at, table.add(1)),
                )
            };
            // SAFETY: lanes in `ok` are walks `8g + i < n <= out.len()`; each is
            // written as both 8-byte halves of a whole `Verdicts` copied from
            // `verdicts` (no padding: every byte is a field's), so a valid `Verdicts`.
            unsafe { store_verdicts(dst, g, ok, lo, hi) };
        }
        rest
    }

    /// See `super::min_positions`.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bw.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn min_positions_avx512(
        s: &[Slot; BLOCK],
        n: usize,
        pairs: &[u64],
        pos: &mut [u64; BLOCK],
    ) -> u64 {
        let n = n.min(BLOCK);
        let table = pairs.as_ptr().cast::<i64>();
        let len = _mm512_set1_epi64(pairs.len() as i64);
        let kind = _mm512_set1_epi64((LEAF | LIST) as i64);
        let leaf = _mm512_set1_epi64(LEAF as i64);
        let low32 = _mm512_set1_epi64(0xffff_ffff);
        let none = _mm512_set1_epi64(-1);
        let mut lists = 0u64;
        for g in 0..n.div_ceil(8) {
            let m = first_lanes(n - 8 * g);
            // SAFETY: `8g + 8 <= BLOCK`: the 64 bytes read lie in `s`.
            let sv = unsafe { _mm512_loadu_si512(s.as_ptr().add(8 * g).cast()) };
            let k = _mm512_and_si512(sv, kind);
            lists |= u64::from(_mm512_mask_cmpeq_epi64_mask(m, k, kind)) << (8 * g);
            let index = _mm512_and_si512(sv, low32);
            let precomputed = _mm512_mask_cmpeq_epi64_mask(m, k, leaf);
            let ok = _mm512_mask_cmplt_epu64_mask(precomputed, index, len);
            if ok == 0 {
                continue;
            }
            // SAFETY: lanes in `ok` have `index < pairs.len()`, so `pairs[index]` is
            // in `pairs` (which is then not empty); others load nothing and keep
            // `none`, whose halves lower nothing.
            let got = unsafe { _mm512_mask_i64gather_epi64::<8>(none, ok, index, table) };
            // SAFETY: `8g + 8 <= BLOCK`: the 64 bytes read and written lie in `pos`.
            unsafe {
                let at = pos.as_mut_ptr().add(8 * g).cast();
                let cur = _mm512_loadu_si512(at);
                _mm512_storeu_si512(at, _mm512_min_epu32(cur, got));
            }
        }
        lists
    }

    const _: () = assert!(
        size_of::<Decision>() == 8
            && std::mem::offset_of!(Verdicts, enforced) % 8 == 0
            && std::mem::offset_of!(Verdicts, pending) % 8 == 0
    );
    /// Whether a `Verdicts`' enforced decision is its first 8 bytes.
    const ENFORCED_FIRST: bool = std::mem::offset_of!(Verdicts, enforced) == 0;

    /// See `super::position_verdicts`.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bw.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn position_verdicts_avx512(
        pos: &[u64; BLOCK],
        enforced: &[u32],
        pending: &[u32],
        decisions: &[Decision],
        sentinel: Decision,
        out: &mut [Verdicts],
    ) {
        let n = out.len().min(BLOCK);
        let table = decisions.as_ptr().cast::<i64>();
        // SAFETY: a `Decision` is 8 bytes with no padding (two 4-byte fields), so
        // its 8 bytes read as one initialized `i64`.
        let sent = _mm512_set1_epi64(unsafe {
            std::ptr::read_unaligned(std::ptr::from_ref(&sentinel).cast::<i64>())
        });
        let low32 = _mm512_set1_epi64(0xffff_ffff);
        let decision_len = _mm512_set1_epi64(decisions.len() as i64);
        let dst = out.as_mut_ptr().cast::<i64>();
        for g in 0..n.div_ceil(8) {
            let m = first_lanes(n - 8 * g);
            // SAFETY: `8g + 8 <= BLOCK`: the 64 bytes read lie in `pos`.
            let pv = unsafe { _mm512_loadu_si512(pos.as_ptr().add(8 * g).cast()) };
            // The decision of each lane's position `at` in `of`.
            let view = |at: __m512i, of: &[u32]| -> __m512i {
                let ok = _mm512_mask_cmplt_epu64_mask(m, at, _mm512_set1_epi64(of.len() as i64));
                let index = if ok == 0 {
                    _mm512_setzero_si512()
                } else {
                    // SAFETY: lanes in `ok` have `at < of.len()`, so `of[at]` is in
                    // `of`; others load nothing.
                    _mm512_cvtepu32_epi64(unsafe {
                        _mm512_mask_i64gather_epi32::<4>(
                            _mm256_setzero_si256(),
                            ok,
                            at,
                            of.as_ptr().cast::<i32>(),
                        )
                    })
                };
                let found = _mm512_mask_cmplt_epu64_mask(ok, index, decision_len);
                // SAFETY: lanes in `found` have `index < decisions.len()`, so
                // `decisions[index]`'s 8 bytes lie in `decisions`; others load
                // nothing and keep the sentinel.
                unsafe { _mm512_mask_i64gather_epi64::<8>(sent, found, index, table) }
            };
            let e = view(_mm512_and_si512(pv, low32), enforced);
            let p = view(_mm512_srli_epi64::<32>(pv), pending);
            let (lo, hi) = if ENFORCED_FIRST { (e, p) } else { (p, e) };
            // SAFETY: lanes in `m` are walks `8g + i < n <= out.len()`; each is
            // written as two whole `Decision`s at the offsets of `enforced` and
            // `pending` (`ENFORCED_FIRST`), so a valid `Verdicts`.
            unsafe { store_verdicts(dst, g, m, lo, hi) };
        }
    }

    #[target_feature(enable = "avx2")]
    fn pair256(c: [i64; 2]) -> __m256i {
        _mm256_set_epi64x(c[1], c[0], c[1], c[0])
    }

    /// The AVX2 walk: 4 walks per register.
    ///
    /// # Safety
    /// The CPU must support avx2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn walk_avx2(slots: &[Slot], table: &[u64], b: &mut Block) {
        const R: usize = BLOCK / 4;
        if slots.is_empty() {
            return;
        }
        let first = slots.as_ptr().cast::<i64>();
        let table_at = table.as_ptr().cast::<i64>();
        let last = _mm256_set1_epi64x(slots.len() as i64 - 1);
        let leaf = _mm256_set1_epi64x(LEAF as i64);
        let ranged = _mm256_set1_epi64x(RANGED as i64);
        let tabled = _mm256_set1_epi64x(TABLED as i64);
        let not_starts = _mm256_set1_epi64x(NOT_STARTS as i64);
        let entry_mask = _mm256_set1_epi64x(MAX_TABLE as i64 - 1);
        // With an empty table no node is tabled (and none is looked up).
        let has_table = !table.is_empty();
        let table_last = _mm256_set1_epi64x(table.len().max(1) as i64 - 1);
        let wbit = [0, 1, 2].map(|i| _mm256_set1_epi64x(1i64 << (WORD_AT + i)));
        let offset_mask = _mm256_set1_epi64x(OFFSET_MASK as i64);
        let shift_mask = _mm256_set1_epi64x(SHIFT_MASK);
        let sixty_four = _mm256_set1_epi64x(64);
        let low_byte = _mm256_set1_epi64x(0xff);
        let byte_one = _mm256_set1_epi8(1);
        let zero = _mm256_setzero_si256();
        let replicate = pair256(REPLICATE);
        // A lane's mask (all ones) where `v & bit` is set.
        let has = |v: __m256i, bit: __m256i| _mm256_cmpeq_epi64(_mm256_and_si256(v, bit), bit);
        let load = |a: &[u64; BLOCK], r: usize| {
            // SAFETY: `4 * r + 4 <= BLOCK` for every `r < R`: the 32 bytes read lie in `a`.
            unsafe { _mm256_loadu_si256(a.as_ptr().add(4 * r).cast()) }
        };
        let mut s: [__m256i; R] = std::array::from_fn(|r| load(&b.s, r));
        let v6 = b.v6;
        for _ in 0..MAX_LEVELS {
            let mut active = false;
            for (r, sr) in s.iter_mut().enumerate() {
                let a = *sr;
                let k = _mm256_cmpeq_epi64(_mm256_and_si256(a, leaf), zero);
                if _mm256_testz_si256(k, k) != 0 {
                    continue;
                }
                active = true;
                let odd = has(a, wbit[0]);
                let mut x = _mm256_blendv_epi8(load(&b.w[0], r), load(&b.w[1], r), odd);
                if v6 {
                    let y = _mm256_blendv_epi8(load(&b.w[2], r), load(&b.w[3], r), odd);
                    x = _mm256_blendv_epi8(x, y, has(a, wbit[1]));
                    x = _mm256_blendv_epi8(x, load(&b.w[4], r), has(a, wbit[2]));
                }
                // The window: the key word rotated right by it (a left shift by 64
                // gives 0), its low byte.
                let window =
                    _mm256_and_si256(_mm256_srli_epi64::<{ SHIFT_AT as i32 }>(a), shift_mask);
                let rotated = _mm256_or_si256(
                    _mm256_srlv_epi64(x, window),
                    _mm256_sllv_epi64(x, _mm256_sub_epi64(sixty_four, window)),
                );
                let v = _mm256_and_si256(rotated, low_byte);
                // Ranged nodes: count the run-start bytes (scaled `start - 1`, unused 0xff)
                // below the window, from the node word or, for tabled nodes, the starts
                // table.
                let in_table = _mm256_and_si256(k, has(a, tabled));
                let mut starts = _mm256_or_si256(a, not_starts);
                if _mm256_testz_si256(in_table, in_table) == 0 && has_table {
                    let entry =
                        _mm256_and_si256(_mm256_srli_epi64::<{ TABLE_AT as i32 }>(a), entry_mask);
                    // Entries stay below 2^24, so signed compares order them.
                    let over = _mm256_cmpgt_epi64(entry, table_last);
                    let entry = _mm256_blendv_epi8(entry, table_last, over);
                    // SAFETY: `entry <= table.len() - 1` and `table` is not empty, so
                    // every loaded word is in `table`; masked-off lanes load nothing.
                    starts = unsafe {
                        _mm256_mask_i64gather_epi64::<8>(starts, table_at, entry, in_table)
                    };
                }
                let vv = _mm256_shuffle_epi8(v, replicate);
                let ge = _mm256_cmpeq_epi8(_mm256_max_epu8(starts, vv), starts);
                let count = _mm256_sad_epu8(_mm256_andnot_si256(ge, byte_one), zero);
                let idx = _mm256_blendv_epi8(v, count, has(a, ranged));
                // Indices stay below 2^25, so signed compares order them.
                let at = _mm256_add_epi64(_mm256_and_si256(a, offset_mask), idx);
                let at = _mm256_blendv_epi8(at, last, _mm256_cmpgt_epi64(at, last));
                // SAFETY: `at <= slots.len() - 1`, so slot `at` is in `slots`; masked-off
                // lanes load nothing.
                *sr = unsafe { _mm256_mask_i64gather_epi64::<8>(a, first, at, k) };
            }
            if !active {
                break;
            }
        }
        for (r, sr) in s.iter().enumerate() {
            // SAFETY: `r < R`, so `4 * r + 4 <= BLOCK`: the 32 bytes written lie in `b.s`.
            unsafe { _mm256_storeu_si256(b.s.as_mut_ptr().add(4 * r).cast(), *sr) };
        }
    }

    /// See `super::lpm16_block`.
    ///
    /// # Safety
    /// The CPU must support avx512f; `root` must not be empty, nor `nodes`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lpm16_avx512(
        root: &[u64],
        nodes: &[u64],
        a: &[u32; BLOCK],
        out: &mut [u64; BLOCK],
    ) {
        let root_max = _mm512_set1_epi64(root.len() as i64 - 1);
        let nodes_max = _mm512_set1_epi64(nodes.len() as i64 - 1);
        let byte = _mm512_set1_epi64(0xff);
        let zero = _mm512_setzero_si512();
        for g in 0..BLOCK / 8 {
            // SAFETY: `8g + 8 <= BLOCK`: the 32 bytes read lie in `a`.
            let av = unsafe { _mm256_loadu_si256(a.as_ptr().add(8 * g).cast()) };
            let a64 = _mm512_cvtepu32_epi64(av);
            let i0 = _mm512_min_epu64(_mm512_srli_epi64::<16>(a64), root_max);
            // SAFETY: every index is clamped to `root.len() - 1`.
            let s = unsafe { _mm512_i64gather_epi64::<8>(i0, root.as_ptr().cast()) };
            // A child index is positive as a signed word (a leaf has the top bit set,
            // an empty slot is 0).
            let inner = _mm512_cmpgt_epi64_mask(s, zero);
            let i1 = _mm512_or_si512(
                _mm512_slli_epi64::<8>(s),
                _mm512_and_si512(_mm512_srli_epi64::<8>(a64), byte),
            );
            let i1 = _mm512_min_epu64(i1, nodes_max);
            // SAFETY: only lanes on a child load, each index clamped to
            // `nodes.len() - 1`.
            let s =
                unsafe { _mm512_mask_i64gather_epi64::<8>(s, inner, i1, nodes.as_ptr().cast()) };
            let inner = _mm512_cmpgt_epi64_mask(s, zero);
            let i2 = _mm512_min_epu64(
                _mm512_or_si512(_mm512_slli_epi64::<8>(s), _mm512_and_si512(a64, byte)),
                nodes_max,
            );
            // SAFETY: as for the previous level.
            let s =
                unsafe { _mm512_mask_i64gather_epi64::<8>(s, inner, i2, nodes.as_ptr().cast()) };
            // Only leaves are values; a walk still on a child (a malformed table) has
            // none.
            let leaves = _mm512_cmplt_epi64_mask(s, zero);
            let r = _mm512_maskz_mov_epi64(leaves, s);
            // SAFETY: `8g + 8 <= BLOCK`: the 64 bytes written lie in `out`.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(8 * g).cast(), r) };
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::classifier::slot::{LEAF, LIST};
    use crate::program::{Decision, Family, TraceId, Verdict};

    fn keys(raw: &[(u32, u32, u16, u16, u8, u16)], six_at: Option<usize>) -> Vec<FlowKey> {
        raw.iter()
            .enumerate()
            .map(|(i, &(src, dst, sport, dport, proto, ifindex))| {
                let six = six_at == Some(i);
                FlowKey {
                    // IPv6 keys get bits above the low 32; IPv4 keys never do.
                    src: u128::from(src) | if six { 1 << 100 } else { 0 },
                    dst: u128::from(dst) | if six { 1 << 70 } else { 0 },
                    sport,
                    dport,
                    proto,
                    family: if six { Family::V6 } else { Family::V4 },
                    ifindex,
                }
            })
            .collect()
    }

    fn verdicts(n: usize) -> Vec<Verdicts> {
        (0..n as u32)
            .map(|i| Verdicts {
                enforced: Decision {
                    verdict: if i % 3 == 0 {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    },
                    trace: TraceId(i.wrapping_mul(2_654_435_761)),
                },
                pending: Decision {
                    verdict: if i % 5 == 0 {
                        Verdict::Deny
                    } else {
                        Verdict::Allow
                    },
                    trace: TraceId(!i),
                },
            })
            .collect()
    }

    /// On a cyclic arena (a plain node whose children are all itself) every kernel
    /// stops after its step bound and leaves the walks on the node.
    #[test]
    fn a_cyclic_arena_does_not_hang_a_walk() {
        let node = crate::classifier::slot::plain(0, 0, 8, 0).expect("fits");
        let slots = vec![node; 256];
        for k in Kernel::available() {
            let mut b = Block::new();
            for j in 0..BLOCK {
                b.s[j] = node;
                b.w[0][j] = j as u64;
            }
            walk(k, &slots, &[], &mut b);
            assert!(b.s.iter().all(|&s| s == node), "{}", k.name());
        }
    }

    /// Empty inputs: no key to set up (the scalar set-up takes over), no table to copy
    /// from (every walk is handed back, nothing is written).
    #[test]
    fn vector_paths_take_empty_inputs() {
        let s = [LEAF; BLOCK];
        let marker = verdicts(1)[0];
        for k in Kernel::available() {
            let mut b = Block::new();
            assert!(!set_all_v4(k, &[], 7, &mut b), "{}", k.name());
            for n in [0, 1, 9, BLOCK] {
                let mut out = vec![marker; n];
                if let Some(rest) = resolve_leaves(k, &s, &[], &mut out) {
                    assert_eq!(rest.count_ones() as usize, n, "{} n {n}", k.name());
                }
                assert!(out.iter().all(|&o| o == marker));
            }
        }
    }

    proptest! {
        /// Every kernel's vector set-up, where it has one, leaves the columns a walk
        /// reads as `Block::set_all` does, and refuses blocks with an IPv6 key.
        #[test]
        fn vector_set_up_is_set_all(
            raw in prop::collection::vec(any::<(u32, u32, u16, u16, u8, u16)>(), 0..=BLOCK),
            six in prop::option::weighted(0.2, any::<prop::sample::Index>()),
            start in any::<u64>(),
        ) {
            let six_at = six.filter(|_| !raw.is_empty()).map(|i| i.index(raw.len()));
            let keys = keys(&raw, six_at);
            let mut want = Block::new();
            want.set_all(&keys, 7, 9);
            for k in Kernel::available() {
                let mut got = Block::new();
                got.w.iter_mut().flatten().for_each(|w| *w = start);
                got.s = [start; BLOCK];
                got.v6 = true;
                if !set_all_v4(k, &keys, 7, &mut got) {
                    let vector = matches!(k.0, Kind::Avx512 | Kind::Avx512Vbmi);
                    prop_assert!(!vector || six_at.is_some() || keys.is_empty(), "{} refused IPv4 keys", k.name());
                    continue;
                }
                prop_assert!(six_at.is_none(), "{} took an IPv6 key", k.name());
                prop_assert_eq!(got.s, want.s, "{}", k.name());
                prop_assert_eq!(&got.w[..2], &want.w[..2], "{}", k.name());
                prop_assert!(!got.v6);
            }
        }

        /// Every kernel's vector resolution, where it has one, writes exactly the
        /// precomputed leaves inside the table, with their table entries, and hands
        /// back every other walk untouched.
        #[test]
        fn vector_resolution_is_the_table_lookup(
            slots in prop::collection::vec((0u8..4, 0u32..40), BLOCK),
            n in 0..=BLOCK,
        ) {
            let table = verdicts(32);
            let s: [Slot; BLOCK] = std::array::from_fn(|j| {
                let (kind, i) = slots[j];
                match kind {
                    0 | 1 => LEAF | u64::from(i),                // precomputed (some past the table)
                    2 => LEAF | LIST | (3 << 32) | u64::from(i), // a leaf list
                    _ => u64::from(i) << 8,                      // not a leaf
                }
            });
            let marker = verdicts(BLOCK + 40)[BLOCK + 39];
            for k in Kernel::available() {
                let mut out = vec![marker; n];
                let Some(rest) = resolve_leaves(k, &s, &table, &mut out) else {
                    prop_assert_eq!(&out, &vec![marker; n]);
                    continue;
                };
                for (j, o) in out.iter().enumerate() {
                    let want = (s[j] & (LEAF | LIST) == LEAF)
                        .then(|| table.get(s[j] as u32 as usize))
                        .flatten();
                    match want {
                        Some(v) => {
                            prop_assert_eq!(o, v, "{} walk {}", k.name(), j);
                            prop_assert_eq!(rest >> j & 1, 0);
                        }
                        None => {
                            prop_assert_eq!(o, &marker, "{} walk {}", k.name(), j);
                            prop_assert_eq!(rest >> j & 1, 1);
                        }
                    }
                }
                prop_assert_eq!(rest.checked_shr(n as u32).unwrap_or(0), 0, "{}: no walk past out", k.name());
            }
        }

        /// Every kernel's vector position minimum, where it has one, lowers each
        /// half of the position word of exactly the walks on precomputed leaves
        /// inside the table to that half of their pair, leaves every other walk's
        /// word as it was, and hands back exactly the walks on leaf lists.
        #[test]
        fn vector_positions_are_the_pair_minimum(
            slots in prop::collection::vec((0u8..4, 0u32..40), BLOCK),
            start in prop::collection::vec(any::<u64>(), BLOCK),
            pairs in prop::collection::vec(any::<u64>(), 0..32),
            n in 0..=BLOCK,
            wide in any::<bool>(),
        ) {
            let s: [Slot; BLOCK] = std::array::from_fn(|j| {
                let (kind, i) = slots[j];
                match kind {
                    0 | 1 => LEAF | u64::from(i),                // precomputed (some past the table)
                    2 => LEAF | LIST | (3 << 32) | u64::from(i), // a leaf list
                    // Not a leaf; with `wide`, a node word whose key-word bits
                    // include the list flag's bit.
                    _ => u64::from(i) << 8 | if wide { LIST } else { 0 },
                }
            });
            let start: [u64; BLOCK] = std::array::from_fn(|j| start[j]);
            for k in Kernel::available() {
                let mut pos = start;
                let Some(rest) = min_positions(k, &s, n, &pairs, &mut pos) else {
                    prop_assert_eq!(pos, start);
                    continue;
                };
                for j in 0..BLOCK {
                    let precomputed = j < n && s[j] & (LEAF | LIST) == LEAF;
                    let list = j < n && s[j] & (LEAF | LIST) == LEAF | LIST;
                    let want = match pairs.get(s[j] as u32 as usize) {
                        Some(&p) if precomputed => {
                            let half = |x: u64, at: u32| (x >> at) as u32;
                            u64::from(half(start[j], 0).min(half(p, 0)))
                                | u64::from(half(start[j], 32).min(half(p, 32))) << 32
                        }
                        _ => start[j],
                    };
                    prop_assert_eq!(pos[j], want, "{} walk {}", k.name(), j);
                    prop_assert_eq!(rest >> j & 1 == 1, list, "{} walk {}", k.name(), j);
                }
            }
        }

        /// Every kernel's vector position resolution, where it has one, writes for
        /// every walk the decisions its two positions name through the views'
        /// tables, the sentinel where an index is past its table, and nothing past
        /// `out`.
        #[test]
        fn vector_position_verdicts_are_the_table_lookups(
            pos in prop::collection::vec((0u32..24, 0u32..24), BLOCK),
            enforced in prop::collection::vec(0u32..20, 0..20),
            pending in prop::collection::vec(0u32..20, 0..20),
            decisions in 0usize..16,
            n in 0..=BLOCK,
        ) {
            let decisions: Vec<Decision> = verdicts(decisions).iter().map(|v| v.pending).collect();
            let sentinel = Decision { verdict: Verdict::Deny, trace: TraceId(7777) };
            let packed: [u64; BLOCK] =
                std::array::from_fn(|j| u64::from(pos[j].0) | u64::from(pos[j].1) << 32);
            let d = |at: u32, of: &[u32]| {
                of.get(at as usize)
                    .and_then(|&i| decisions.get(i as usize))
                    .copied()
                    .unwrap_or(sentinel)
            };
            let marker = verdicts(BLOCK + 40)[BLOCK + 39];
            for k in Kernel::available() {
                let mut out = vec![marker; n + 1];
                if !position_verdicts(k, &packed, &enforced, &pending, &decisions, sentinel, &mut out[..n]) {
                    prop_assert!(out.iter().all(|&o| o == marker));
                    continue;
                }
                for j in 0..n {
                    let want = Verdicts { enforced: d(pos[j].0, &enforced), pending: d(pos[j].1, &pending) };
                    prop_assert_eq!(out[j], want, "{} walk {}", k.name(), j);
                }
                prop_assert_eq!(out[n], marker, "{}: nothing past out", k.name());
            }
        }
    }
}
