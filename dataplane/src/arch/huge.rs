//! A read-only array of words in memory the kernel is asked to back with transparent
//! huge pages.
//!
//! The classifier's tree walks jump around an arena of up to 128 MiB; with 4 KiB pages
//! a 10K-rule arena (~12 MiB) spans more pages than the second-level TLB maps, so many
//! steps of a walk would add a page walk to their gather. Arenas of at least
//! [`HUGE_PAGE`] bytes are therefore allocated aligned to a huge page and advised
//! `MADV_HUGEPAGE` before they are written (Linux; elsewhere, and where the kernel
//! declines, they are ordinary memory — the contents are the same either way).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ops::Deref;
use std::ptr::NonNull;

/// Size (and alignment) of a transparent huge page on x86_64 and most aarch64 kernels.
pub const HUGE_PAGE: usize = 2 << 20;

/// A fixed array of `u64`, in huge-page-backed memory when it is large.
pub struct HugeWords {
    ptr: NonNull<u64>,
    len: usize,
    /// `None` for an empty array (nothing allocated).
    layout: Option<Layout>,
}

// SAFETY: `HugeWords` owns its allocation of plain `u64`s (like a `Box<[u64]>`) and
// never hands out mutable access after construction.
unsafe impl Send for HugeWords {}
// SAFETY: as above: shared access is read-only.
unsafe impl Sync for HugeWords {}

impl HugeWords {
    /// A copy of `words`.
    pub fn from_slice(words: &[u64]) -> Self {
        let bytes = size_of_val(words);
        if bytes == 0 {
            return HugeWords {
                ptr: NonNull::dangling(),
                len: 0,
                layout: None,
            };
        }
        let huge = bytes >= HUGE_PAGE;
        let (size, align) = if huge {
            (bytes.next_multiple_of(HUGE_PAGE), HUGE_PAGE)
        } else {
            (bytes, 64)
        };
        let layout = match Layout::from_size_align(size, align) {
            Ok(l) => l,
            // Only for sizes near `isize::MAX`, which no slice of words has.
            Err(_) => handle_alloc_error(Layout::new::<u64>()),
        };
        // SAFETY: `layout` has a nonzero size.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<u64>()) else {
            handle_alloc_error(layout)
        };
        #[cfg(target_os = "linux")]
        if huge {
            // SAFETY: `[raw, raw + size)` is this allocation, aligned to a huge page
            // (so to a base page); advice changes no contents and a refusal is fine.
            unsafe {
                libc::madvise(raw.cast(), size, libc::MADV_HUGEPAGE);
            }
        }
        // SAFETY: the allocation holds at least `words.len()` u64s (`size >= bytes`),
        // is aligned for u64 (align >= 64), and does not overlap `words`.
        unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), ptr.as_ptr(), words.len()) };
        HugeWords {
            ptr,
            len: words.len(),
            layout: Some(layout),
        }
    }
}

impl Deref for HugeWords {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        // SAFETY: `ptr` points to `len` initialized u64s owned by `self` (or is
        // dangling with `len == 0`, which a slice allows).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for HugeWords {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: `ptr` was allocated by `alloc` with exactly `layout`.
            unsafe { dealloc(self.ptr.as_ptr().cast(), layout) };
        }
    }
}

impl std::fmt::Debug for HugeWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeWords")
            .field("len", &self.len)
            .field("huge", &self.layout.is_some_and(|l| l.align() == HUGE_PAGE))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_copy_of_its_words() {
        for n in [0, 1, 7, HUGE_PAGE / 8 - 1, HUGE_PAGE / 8, HUGE_PAGE / 8 + 3] {
            let words: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            let h = HugeWords::from_slice(&words);
            assert_eq!(&*h, words.as_slice(), "{n} words");
            if n > 0 {
                assert_eq!(h.as_ptr() as usize % 64, 0, "{n} words: aligned");
            }
            if size_of_val(words.as_slice()) >= HUGE_PAGE {
                assert_eq!(
                    h.as_ptr() as usize % HUGE_PAGE,
                    0,
                    "{n} words: huge-page aligned"
                );
            }
        }
    }
}
