//! Tag matching for the flow table's 8-way buckets.
//!
//! A bucket keeps eight 16-bit tags in one 16-byte group. [`match_tags`] answers
//! "which ways hold this tag" for all eight at once: on x86_64 with SSE2 (part of the
//! baseline, so always present) it is one load, one compare and one mask extraction
//! instead of eight compare-and-shift steps. [`match_tags_scalar`] is the obviously
//! correct twin; a proptest checks they agree on every input, and targets without
//! SSE2 use the twin.

/// Ways per bucket (the number of tags matched at once).
pub const TAGS: usize = 8;

/// Bit `w` of the result is set iff `tags[w] == tag`.
#[inline(always)]
pub fn match_tags(tags: &[u16; TAGS], tag: u16) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_set1_epi16, _mm_setzero_si128,
        };
        // SAFETY: `tags` is a valid reference to 16 bytes, exactly what the unaligned
        // 128-bit load reads; SSE2 is part of the x86_64 baseline, so every intrinsic
        // used here is available on every x86_64 CPU.
        unsafe {
            let v = _mm_loadu_si128(tags.as_ptr().cast::<__m128i>());
            let eq = _mm_cmpeq_epi16(v, _mm_set1_epi16(tag as i16));
            // Narrow the eight 0/-1 lanes to bytes so the mask has one bit per way.
            _mm_movemask_epi8(_mm_packs_epi16(eq, _mm_setzero_si128())) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        match_tags_scalar(tags, tag)
    }
}

/// The reference for [`match_tags`]: one comparison per way.
#[inline]
pub fn match_tags_scalar(tags: &[u16; TAGS], tag: u16) -> u32 {
    let mut m = 0u32;
    for (w, &t) in tags.iter().enumerate() {
        m |= u32::from(t == tag) << w;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_every_way_and_only_matching_ones() {
        let tags = [5u16, 0, 5, 0xffff, 0x8000, 5, 1, 0];
        assert_eq!(match_tags(&tags, 5), 0b0010_0101);
        assert_eq!(match_tags(&tags, 0), 0b1000_0010);
        assert_eq!(match_tags(&tags, 0xffff), 0b0000_1000);
        assert_eq!(match_tags(&tags, 0x8000), 0b0001_0000);
        assert_eq!(match_tags(&tags, 2), 0);
        assert_eq!(match_tags(&[7; TAGS], 7), 0xff);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// The SIMD match equals the scalar one, including tags drawn from a tiny
        /// alphabet (many equal lanes) and the sign-bit boundary of 16-bit lanes.
        #[test]
        fn simd_equals_scalar(
            tags in proptest::array::uniform8(prop_oneof![
                any::<u16>(),
                0u16..4,
                0x7ffeu16..0x8002,
                Just(0xffffu16),
            ]),
            pick in 0usize..9,
            other in any::<u16>(),
        ) {
            let tag = tags.get(pick).copied().unwrap_or(other);
            prop_assert_eq!(match_tags(&tags, tag), match_tags_scalar(&tags, tag));
        }
    }
}
