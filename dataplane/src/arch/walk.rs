//! SIMD tree walks: the classifier's lockstep block of walks advanced on vector lanes.
//!
//! Each kernel computes exactly what `Block::walk_scalar` computes (the step of
//! `classifier::slot`), eight (AVX-512) or four (AVX2) walks per register: select the
//! key word, shift and mask the cut value, count run starts for ranged nodes, gather
//! the child slot. Every gather index is clamped to the arena and masked to the walks
//! still on inner nodes, so no load leaves `slots` whatever the slot contents.
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

    /// The kernel called `name` (`scalar`, `avx2`, `avx512`), if this CPU can run it.
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
        }
    }
}

/// Advances every walk of `b` to its leaf in `slots` with kernel `k`.
#[inline]
pub(crate) fn walk(k: Kernel, slots: &[Slot], b: &mut Block) {
    match k.0 {
        Kind::Scalar => b.walk_scalar(slots),
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => {
            // SAFETY: a `Kind::Avx2` kernel is only made by `Kernel::available`, after
            // `is_x86_feature_detected!("avx2")` held.
            unsafe { x86::walk_avx2(slots, b) }
        }
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 => {
            // SAFETY: a `Kind::Avx512` kernel is only made by `Kernel::available`, after
            // `is_x86_feature_detected!` held for avx512f and avx512bw.
            unsafe { x86::walk_avx512(slots, b) }
        }
    }
}

const _: () = assert!(BLOCK.is_multiple_of(8));

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::classifier::slot::{BITS_AT, BLOCK, Block, LEAF, RANGED, SHIFT_AT, Slot, WORD_AT};

    /// `vpshufb` control moving byte `at` of each 64-bit lane to byte 0 and zeroing
    /// the others, for the lower and the upper qword of a 128-bit lane (`vpshufb`
    /// indices are per 128-bit lane).
    const fn byte_to_low(at: u32) -> [i64; 2] {
        let base = 0x8080_8080_8080_8000u64;
        [(base | at as u64) as i64, (base | (at as u64 + 8)) as i64]
    }
    /// Control copying byte 0 of each 64-bit lane into all its bytes.
    const REPLICATE: [i64; 2] = [0, 0x0808_0808_0808_0808];
    const SHIFT_CTL: [i64; 2] = byte_to_low(SHIFT_AT / 8);
    const BITS_CTL: [i64; 2] = byte_to_low(BITS_AT / 8);
    const _: () = assert!(SHIFT_AT.is_multiple_of(8) && BITS_AT == 56 && BLOCK == 64);

    #[target_feature(enable = "avx512f")]
    fn pair512(c: [i64; 2]) -> __m512i {
        _mm512_set_epi64(c[1], c[0], c[1], c[0], c[1], c[0], c[1], c[0])
    }

    /// The AVX-512 walk: 8 walks per register, all of the block's registers stepped
    /// per round so their gathers overlap.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bw.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn walk_avx512(slots: &[Slot], b: &mut Block) {
        const R: usize = BLOCK / 8;
        if slots.is_empty() {
            return;
        }
        let first = slots.as_ptr().cast::<i64>();
        // SAFETY: `slots` is not empty, so its first slot's second word is in bounds.
        let second = unsafe { first.add(1) };
        let last = _mm512_set1_epi64(slots.len() as i64 - 1);
        let leaf = _mm512_set1_epi64(LEAF as i64);
        let ranged = _mm512_set1_epi64(RANGED as i64);
        let wbit = [0, 1, 2].map(|i| _mm512_set1_epi64(1i64 << (WORD_AT + i)));
        let low32 = _mm512_set1_epi64(0xffff_ffff);
        let ones = _mm512_set1_epi64(-1);
        let byte_one = _mm512_set1_epi8(1);
        let zero = _mm512_setzero_si512();
        let (shift_ctl, bits_ctl, replicate) =
            (pair512(SHIFT_CTL), pair512(BITS_CTL), pair512(REPLICATE));
        let load = |a: &[u64; BLOCK], r: usize| {
            // SAFETY: `8 * r + 8 <= BLOCK` for every `r < R`: the 64 bytes read lie in `a`.
            unsafe { _mm512_loadu_si512(a.as_ptr().add(8 * r).cast()) }
        };
        let v6 = b.v6;
        // One step of the 8 walks of register `r` at slots (`a`, `t`); also the mask of
        // the walks that were still on inner nodes.
        let step = |a: __m512i, t: __m512i, r: usize| -> (__m512i, __m512i, u8) {
            let k = _mm512_testn_epi64_mask(a, leaf);
            let odd = _mm512_test_epi64_mask(a, wbit[0]);
            let mut x = _mm512_mask_blend_epi64(odd, load(&b.w[0], r), load(&b.w[1], r));
            if v6 {
                let y = _mm512_mask_blend_epi64(odd, load(&b.w[2], r), load(&b.w[3], r));
                x = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(a, wbit[1]), x, y);
                let w4 = load(&b.w[4], r);
                x = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(a, wbit[2]), x, w4);
            }
            let shift = _mm512_shuffle_epi8(a, shift_ctl);
            let bits = _mm512_shuffle_epi8(a, bits_ctl);
            let v = _mm512_andnot_si512(_mm512_sllv_epi64(ones, bits), _mm512_srlv_epi64(x, shift));
            // Ranged nodes: count the run-start bytes <= v (unused starts are 0).
            let le = _mm512_cmple_epu8_mask(t, _mm512_shuffle_epi8(v, replicate));
            let count = _mm512_sad_epu8(_mm512_maskz_mov_epi8(le, byte_one), zero);
            let idx = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(a, ranged), v, count);
            let at = _mm512_min_epu64(_mm512_add_epi64(_mm512_and_si512(a, low32), idx), last);
            let at2 = _mm512_add_epi64(at, at);
            // SAFETY: `at <= slots.len() - 1`, so words `2 * at` and `2 * at + 1` are in
            // `slots`; masked-off lanes load nothing.
            let (na, nt) = unsafe {
                (
                    _mm512_mask_i64gather_epi64::<8>(a, k, at2, first),
                    _mm512_mask_i64gather_epi64::<8>(t, k, at2, second),
                )
            };
            (na, nt, k)
        };
        let mut s: [__m512i; R] = std::array::from_fn(|r| load(&b.s, r));
        let mut t: [__m512i; R] = std::array::from_fn(|r| load(&b.t, r));
        loop {
            let mut active = 0;
            // Unrolled by hand so every register stays in a register.
            macro_rules! steps {
                ($($r:literal)*) => {$(
                    let (a, tt, k) = step(s[$r], t[$r], $r);
                    s[$r] = a;
                    t[$r] = tt;
                    active |= k;
                )*};
            }
            steps!(0 1 2 3 4 5 6 7);
            if active == 0 {
                break;
            }
        }
        for r in 0..R {
            // SAFETY: `8 * r + 8 <= BLOCK`: the 64 bytes written lie in `b.s` / `b.t`.
            unsafe {
                _mm512_storeu_si512(b.s.as_mut_ptr().add(8 * r).cast(), s[r]);
                _mm512_storeu_si512(b.t.as_mut_ptr().add(8 * r).cast(), t[r]);
            }
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
    pub(super) unsafe fn walk_avx2(slots: &[Slot], b: &mut Block) {
        const R: usize = BLOCK / 4;
        if slots.is_empty() {
            return;
        }
        let first = slots.as_ptr().cast::<i64>();
        // SAFETY: `slots` is not empty, so its first slot's second word is in bounds.
        let second = unsafe { first.add(1) };
        let last = _mm256_set1_epi64x(slots.len() as i64 - 1);
        let leaf = _mm256_set1_epi64x(LEAF as i64);
        let ranged = _mm256_set1_epi64x(RANGED as i64);
        let wbit = [0, 1, 2].map(|i| _mm256_set1_epi64x(1i64 << (WORD_AT + i)));
        let low32 = _mm256_set1_epi64x(0xffff_ffff);
        let ones = _mm256_set1_epi64x(-1);
        let byte_one = _mm256_set1_epi8(1);
        let zero = _mm256_setzero_si256();
        let (shift_ctl, bits_ctl, replicate) =
            (pair256(SHIFT_CTL), pair256(BITS_CTL), pair256(REPLICATE));
        // A lane's mask (all ones) where `v & bit` is set.
        let has = |v: __m256i, bit: __m256i| _mm256_cmpeq_epi64(_mm256_and_si256(v, bit), bit);
        let load = |a: &[u64; BLOCK], r: usize| {
            // SAFETY: `4 * r + 4 <= BLOCK` for every `r < R`: the 32 bytes read lie in `a`.
            unsafe { _mm256_loadu_si256(a.as_ptr().add(4 * r).cast()) }
        };
        let mut s: [__m256i; R] = std::array::from_fn(|r| load(&b.s, r));
        let mut t: [__m256i; R] = std::array::from_fn(|r| load(&b.t, r));
        let v6 = b.v6;
        loop {
            let mut active = false;
            for r in 0..R {
                let (a, tr) = (s[r], t[r]);
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
                let shift = _mm256_shuffle_epi8(a, shift_ctl);
                let bits = _mm256_shuffle_epi8(a, bits_ctl);
                let v =
                    _mm256_andnot_si256(_mm256_sllv_epi64(ones, bits), _mm256_srlv_epi64(x, shift));
                // Ranged nodes: count the run-start bytes <= v (unused starts are 0).
                let vv = _mm256_shuffle_epi8(v, replicate);
                let le = _mm256_cmpeq_epi8(_mm256_max_epu8(tr, vv), vv);
                let count = _mm256_sad_epu8(_mm256_and_si256(le, byte_one), zero);
                let idx = _mm256_blendv_epi8(v, count, has(a, ranged));
                // Indices stay below 2^33, so signed compares order them.
                let at = _mm256_add_epi64(_mm256_and_si256(a, low32), idx);
                let at = _mm256_blendv_epi8(at, last, _mm256_cmpgt_epi64(at, last));
                let at2 = _mm256_add_epi64(at, at);
                // SAFETY: `at <= slots.len() - 1`, so words `2 * at` and `2 * at + 1` are
                // in `slots`; masked-off lanes load nothing.
                unsafe {
                    s[r] = _mm256_mask_i64gather_epi64::<8>(a, first, at2, k);
                    t[r] = _mm256_mask_i64gather_epi64::<8>(tr, second, at2, k);
                }
            }
            if !active {
                break;
            }
        }
        for r in 0..R {
            // SAFETY: `4 * r + 4 <= BLOCK`: the 32 bytes written lie in `b.s` / `b.t`.
            unsafe {
                _mm256_storeu_si256(b.s.as_mut_ptr().add(4 * r).cast(), s[r]);
                _mm256_storeu_si256(b.t.as_mut_ptr().add(4 * r).cast(), t[r]);
            }
        }
    }
}
