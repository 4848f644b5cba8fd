//! Fixed-length arrays in memory the kernel is asked to back with transparent huge
//! pages.
//!
//! The classifier's tree walks jump around an arena of up to 128 MiB, and the flow
//! table's lookups around buckets and entries of several MiB per worker; with 4 KiB
//! pages such arrays span more pages than the second-level TLB maps, so many lookups
//! would add a page walk to their load. Arrays of at least [`HUGE_PAGE`] bytes are
//! therefore allocated aligned to a huge page and advised `MADV_HUGEPAGE` before they
//! are written (Linux; elsewhere, and where the kernel declines, they are ordinary
//! memory — the contents are the same either way).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Size (and alignment) of a transparent huge page on x86_64 and most aarch64 kernels.
pub const HUGE_PAGE: usize = 2 << 20;

/// An array could not be allocated: its size overflows, or the allocator refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate {items} items of {item_bytes} bytes ({})", describe(*.items, *.item_bytes))]
pub struct AllocError {
    /// Items asked for.
    pub items: usize,
    /// Bytes per item.
    pub item_bytes: usize,
}

fn describe(items: usize, item_bytes: usize) -> String {
    match items.checked_mul(item_bytes) {
        Some(b) => format!(
            "{:.1} GiB: the allocator refused",
            b as f64 / f64::from(1u32 << 30)
        ),
        None => "more bytes than the address space holds".to_string(),
    }
}

/// A fixed array of `T`, in huge-page-backed memory when it is large (like a
/// `Box<[T]>` otherwise).
pub struct HugeSlice<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// `None` when nothing was allocated (an empty array, or zero-sized `T`).
    layout: Option<Layout>,
}

// SAFETY: `HugeSlice` owns its allocation of `T`s like a `Box<[T]>` does, so it may
// move to another thread when `T` may.
unsafe impl<T: Copy + Send> Send for HugeSlice<T> {}
// SAFETY: shared access only hands out `&[T]`, as a `Box<[T]>` does.
unsafe impl<T: Copy + Sync> Sync for HugeSlice<T> {}

impl<T: Copy> HugeSlice<T> {
    /// `n` copies of `value`. Aborts if the memory cannot be allocated (see
    /// [`HugeSlice::try_from_elem`]).
    pub fn from_elem(value: T, n: usize) -> Self {
        Self::try_fill(n, |_| value).unwrap_or_else(|_| handle_alloc_error(Layout::new::<T>()))
    }

    /// `n` copies of `value`, or an error when the size overflows or the allocator
    /// refuses (for sizes a user chose: the caller reports instead of aborting).
    pub fn try_from_elem(value: T, n: usize) -> Result<Self, AllocError> {
        Self::try_fill(n, |_| value)
    }

    /// A copy of `items`.
    pub fn from_slice(items: &[T]) -> Self {
        Self::try_fill(items.len(), |i| items[i])
            .unwrap_or_else(|_| handle_alloc_error(Layout::new::<T>()))
    }

    /// An array of `n` items, item `i` being `item(i)`.
    fn try_fill(n: usize, item: impl Fn(usize) -> T) -> Result<Self, AllocError> {
        let err = AllocError {
            items: n,
            item_bytes: size_of::<T>(),
        };
        let bytes = size_of::<T>().checked_mul(n).ok_or(err)?;
        if bytes == 0 {
            return Ok(HugeSlice {
                ptr: NonNull::dangling(),
                len: n,
                layout: None,
            });
        }
        let huge = bytes >= HUGE_PAGE;
        let align = if huge {
            HUGE_PAGE
        } else {
            align_of::<T>().max(64)
        };
        let layout = match bytes
            .checked_next_multiple_of(align)
            .map(|size| Layout::from_size_align(size, align))
        {
            Some(Ok(l)) => l,
            // Sizes near `isize::MAX`: no such allocation can succeed.
            _ => return Err(err),
        };
        // SAFETY: `layout` has a nonzero size.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<T>()) else {
            return Err(err);
        };
        #[cfg(target_os = "linux")]
        if huge {
            // SAFETY: `[raw, raw + layout.size())` is this allocation, aligned to a huge
            // page (so to a base page); advice changes no contents and a refusal is
            // harmless.
            unsafe {
                libc::madvise(raw.cast(), layout.size(), libc::MADV_HUGEPAGE);
            }
        }
        for i in 0..n {
            // SAFETY: the allocation holds `n` items of `T` (`layout.size() >= bytes`)
            // and is aligned for `T` (`align >= align_of::<T>()`); item `i` is written
            // once, before anything reads it.
            unsafe { ptr.as_ptr().add(i).write(item(i)) };
        }
        Ok(HugeSlice {
            ptr,
            len: n,
            layout: Some(layout),
        })
    }

    /// Whether the array was allocated for huge pages (the kernel may still have
    /// backed it with base pages).
    pub fn is_huge(&self) -> bool {
        self.layout.is_some_and(|l| l.align() == HUGE_PAGE)
    }
}

impl<T: Copy> Deref for HugeSlice<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialized items owned by `self` (or is
        // dangling and well aligned, with nothing to read: `len == 0` or a zero-sized
        // `T`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeSlice<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeSlice<T> {
    fn drop(&mut self) {
        if let Some(layout) = self.layout {
            // SAFETY: `ptr` was allocated by `alloc` with exactly `layout`; `T: Copy`
            // has no drop glue.
            unsafe { dealloc(self.ptr.as_ptr().cast(), layout) };
        }
    }
}

impl<T: Copy> std::fmt::Debug for HugeSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeSlice")
            .field("len", &self.len)
            .field("huge", &self.is_huge())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_its_items() {
        let words = HUGE_PAGE / 8;
        for n in [0, 1, 7, words - 1, words, words + 3] {
            let items: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .collect();
            let mut h = HugeSlice::from_slice(&items);
            assert_eq!(&*h, items.as_slice(), "{n} words");
            assert_eq!(h.is_huge(), n >= words, "{n} words");
            if n > 0 {
                assert_eq!(h.as_ptr() as usize % 64, 0, "{n} words: aligned");
                h[n - 1] = 7;
                assert_eq!(h[n - 1], 7);
            }
            if h.is_huge() {
                assert_eq!(
                    h.as_ptr() as usize % HUGE_PAGE,
                    0,
                    "{n} words: huge-page aligned"
                );
            }
        }
        #[derive(Clone, Copy, PartialEq, Debug)]
        #[repr(align(128))]
        struct Wide(u8);
        let w = HugeSlice::from_elem(Wide(3), 5);
        assert!(w.iter().all(|&x| x == Wide(3)) && w.len() == 5);
        assert_eq!(w.as_ptr() as usize % 128, 0);
        let z = HugeSlice::from_elem((), 10);
        assert_eq!(z.len(), 10);
    }

    #[test]
    fn impossible_sizes_are_errors_not_aborts() {
        // Overflows the byte count.
        let e = HugeSlice::try_from_elem(0u64, usize::MAX).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot allocate {} items of 8 bytes (more bytes than the address space holds)",
                usize::MAX
            )
        );
        // Fits in usize but not in any layout (larger than isize::MAX).
        let e = HugeSlice::try_from_elem(0u8, usize::MAX / 2 + 1).unwrap_err();
        assert_eq!(e.items, usize::MAX / 2 + 1);
        // A size the address space cannot map (2^62 bytes) is refused by the allocator.
        assert!(HugeSlice::try_from_elem(0u64, 1 << 59).is_err());
        let ok = HugeSlice::try_from_elem(7u32, 3).unwrap();
        assert_eq!(&*ok, &[7, 7, 7]);
    }
}
