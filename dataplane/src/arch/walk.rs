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
//! [`Kernel`] values for a SIMD kernel exist only when the CPU has its features
//! (checked with `is_x86_feature_detected!`), which is what makes calling the
//! `#[target_feature]` functions sound.

use crate::classifier::slot::{BLOCK, Block, Slot};

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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::classifier::slot::{
        BLOCK, Block, LEAF, MAX_TABLE, NOT_STARTS, OFFSET_MASK, RANGED, SHIFT_AT, Slot, TABLE_AT,
        TABLED, WORD_AT,
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
                loop {
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
        loop {
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
}
