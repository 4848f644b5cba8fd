//! CPU-specific code for the packet path. The data plane's only `unsafe` lives here.
//!
//! [`walk`] holds the classifier's SIMD tree walks (AVX-512 and AVX2 gathers, chosen
//! at run time). [`prefetch`] asks the CPU to start loading a cache line the next phase of a batch
//! will read, so the flow-table misses of a whole batch overlap instead of being
//! paid one after another (as DPDK's and VPP's batch loops do). A prefetch never
//! faults and never changes program state; on other architectures it is a no-op.
//! [`tags`] matches a flow-table bucket's eight tags at once. [`huge`] keeps the
//! classifier's arena and the flow tables in transparent huge pages.
#![allow(unsafe_code)]

pub mod huge;
pub mod tags;

/// Hints the CPU to bring the cache line holding `*r` into all cache levels.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache hierarchy: it performs no access
    // that can fault, and `r` is a valid reference anyway. SSE is part of the
    // x86_64 baseline, so the required target feature is always present.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

pub mod walk;
