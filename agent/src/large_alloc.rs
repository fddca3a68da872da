//! The global allocator of the device builds: large blocks are anonymous mappings of their own,
//! so that a zeroed one costs no memory until it is written.
//!
//! The device builds link zig's libc (`cross/`), whose `calloc` (zig 0.17) writes zeros over
//! every block, fresh pages included. sled allocates 27 MiB of zeroed tables when it opens (41
//! metrics histograms of 512 KiB that `no_metrics` never touches again, and a 4 MiB and a 2 MiB
//! page table that fill only as the tree grows), and each written page stays resident: the
//! device build sat at 42 MiB at 10,000 records/s against 23 for the glibc build. The kernel
//! hands out fresh anonymous pages as zeros, so a large zeroed block needs no writing at all.
//!
//! Which path a block takes is decided by its layout alone (size at least [`LARGE`], alignment
//! at most 4 KiB, which every page size satisfies), so `dealloc` and `realloc`, which are given
//! the layout the block was allocated with, always find the path it came from.
//!
//! A kernel with transparent huge pages set to "always" backs a written block 2 MiB at a time,
//! so there the first write into sled's page tables makes 2 MiB of each resident, not a page.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Blocks of at least this size are mappings of their own: glibc's default threshold for the
/// same choice. zig 0.17's allocator maps every block from about 32 KiB and resizes it with
/// mremap too, so for these blocks what changes is calloc's writing (and zig's 16-byte header,
/// which costs it one page more per block).
pub const LARGE: usize = 128 * 1024;

/// The largest alignment an anonymous mapping is sure to have: the smallest page size.
const MAP_ALIGN: usize = 4096;

/// Large blocks as their own anonymous mappings, everything else from the system allocator.
pub struct LargeMapped;

fn is_large(size: usize, align: usize) -> bool {
    size >= LARGE && align <= MAP_ALIGN
}

/// A fresh private anonymous mapping of `size` bytes: zeros, none of them resident yet.
fn map(size: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping aliases nothing; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Unmaps a block [`map`] returned.
///
/// # Safety
/// `p` and `size` are those of a live mapping from [`map`] (or [`remap`]).
unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: as the caller promised.
    let rc = unsafe { libc::munmap(p.cast(), size) };
    // It fails on a pointer that is not a mapping's (a block sent down the wrong path), or with
    // ENOMEM when splitting a mapping would pass vm.max_map_count; a release build can only
    // leak the block then.
    debug_assert_eq!(rc, 0, "munmap: {}", std::io::Error::last_os_error());
}

/// Grows or shrinks a mapping, moving it if it must; contents up to the smaller size kept.
///
/// # Safety
/// `p` and `old` are those of a live mapping from [`map`] (or an earlier remap).
unsafe fn remap(p: *mut u8, old: usize, new: usize) -> *mut u8 {
    // SAFETY: as the caller promised; on failure the old mapping is left as it was.
    let q = unsafe { libc::mremap(p.cast(), old, new, libc::MREMAP_MAYMOVE) };
    if q == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        q.cast()
    }
}

// SAFETY: large blocks are fresh mappings, page aligned (the alignment `is_large` admits) and
// exactly as long as asked, released only through the same layout; everything else is passed to
// `System` unchanged. Fresh anonymous pages are zero, which is what `alloc_zeroed` promises.
unsafe impl GlobalAlloc for LargeMapped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: as the caller promised for `layout`.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: as the caller promised for `layout`.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            // SAFETY: a block of this layout came from `map` or `remap`.
            unsafe { unmap(p, layout.size()) }
        } else {
            // SAFETY: a block of this layout came from `System`.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        match (is_large(layout.size(), align), is_large(new_size, align)) {
            // SAFETY: both blocks are the system allocator's, as the caller promised.
            (false, false) => unsafe { System.realloc(p, layout, new_size) },
            // SAFETY: the block came from `map` or `remap` with this size.
            (true, true) => unsafe { remap(p, layout.size(), new_size) },
            _ => {
                // SAFETY: the caller promised that `new_size`, rounded up to `align`, does not
                // overflow, which makes it a valid layout.
                let new = unsafe { Layout::from_size_align_unchecked(new_size, align) };
                // SAFETY: the caller promised a non-zero `new_size`.
                let q = unsafe { self.alloc(new) };
                if !q.is_null() {
                    // SAFETY: both blocks are live, distinct, and at least this long.
                    unsafe { ptr::copy_nonoverlapping(p, q, layout.size().min(new_size)) };
                    // SAFETY: `p` was allocated with `layout`, as the caller promised.
                    unsafe { self.dealloc(p, layout) };
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: usize = 4096;

    /// How many of the pages of `[p, p + len)` are resident, by mincore(2).
    fn resident_pages(p: *mut u8, len: usize) -> usize {
        let pages = len.div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: `p` is page aligned and the start of a live mapping at least `len` long.
        let rc = unsafe { libc::mincore(p.cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn a_large_zeroed_block_is_zero_and_costs_no_memory_until_written() {
        let layout = Layout::from_size_align(16 << 20, 8).unwrap();
        // SAFETY: a non-zero layout; released below with the same layout.
        let p = unsafe { LargeMapped.alloc_zeroed(layout) };
        assert!(!p.is_null());
        assert_eq!(p as usize % PAGE, 0);
        assert_eq!(resident_pages(p, layout.size()), 0);
        // With transparent huge pages "always", one write would back 2 MiB at once.
        // SAFETY: advice on a live mapping of this length; it changes no contents.
        unsafe { libc::madvise(p.cast(), layout.size(), libc::MADV_NOHUGEPAGE) };
        // SAFETY: the block is live and `layout.size()` long.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, layout.size()) };
        bytes[5 * PAGE] = 7;
        assert_eq!(resident_pages(p, layout.size()), 1);
        assert!(
            bytes
                .iter()
                .enumerate()
                .all(|(i, &b)| b == u8::from(i == 5 * PAGE) * 7)
        );
        // SAFETY: allocated above with this layout.
        unsafe { LargeMapped.dealloc(p, layout) };
    }

    #[test]
    fn a_large_vec_of_zeros_is_not_resident() {
        // The form sled's histograms take with `miri_optimizations`: `vec![0; n]` asks for a
        // zeroed block.
        let layout = Layout::array::<usize>(1 << 16).unwrap();
        // SAFETY: a non-zero layout; released below with the same layout.
        let p = unsafe { LargeMapped.alloc_zeroed(layout) };
        assert_eq!(resident_pages(p, layout.size()), 0);
        // SAFETY: allocated above with this layout.
        unsafe { LargeMapped.dealloc(p, layout) };
    }

    #[test]
    fn a_large_block_with_an_alignment_above_a_page_is_aligned_and_zeroed() {
        let layout = Layout::from_size_align(LARGE * 2, 64 * 1024).unwrap();
        // SAFETY: a non-zero layout; released below with the same layout.
        let p = unsafe { LargeMapped.alloc_zeroed(layout) };
        assert!(!p.is_null());
        assert_eq!(p as usize % layout.align(), 0);
        // SAFETY: the block is live and `layout.size()` long.
        assert!(
            unsafe { std::slice::from_raw_parts(p, layout.size()) }
                .iter()
                .all(|&b| b == 0)
        );
        // SAFETY: allocated above with this layout.
        unsafe { LargeMapped.dealloc(p, layout) };
    }

    /// Fills `[p, p + len)` with a pattern that depends on `seed` and the position.
    fn fill(p: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: the caller's block is live and at least `len` long.
            unsafe { *p.add(i) = seed.wrapping_add((i % 251) as u8) };
        }
    }

    fn holds(p: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: the caller's block is live and at least `len` long.
        let bytes = unsafe { std::slice::from_raw_parts(p, len) };
        bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| b == seed.wrapping_add((i % 251) as u8))
    }

    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![1..LARGE, LARGE - 16..LARGE + 16, LARGE..LARGE * 20]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A block keeps its contents through any chain of reallocations across the
        /// threshold, in either direction, and each block is released by the path it came from
        /// (a wrong path would crash the test or corrupt the system allocator's heap).
        #[test]
        fn reallocation_across_the_threshold_keeps_the_contents(
            first in size(),
            align in prop_oneof![Just(1usize), Just(8), Just(16), Just(4096), Just(8192)],
            next in proptest::collection::vec(size(), 1..6),
            zeroed in any::<bool>(),
        ) {
            let mut layout = Layout::from_size_align(first, align).unwrap();
            // SAFETY: a non-zero layout, released at the end with the layout it has then.
            let mut p = unsafe {
                if zeroed { LargeMapped.alloc_zeroed(layout) } else { LargeMapped.alloc(layout) }
            };
            prop_assert!(!p.is_null());
            prop_assert_eq!(p as usize % align, 0);
            if zeroed {
                // SAFETY: the block is live and `first` long.
                let bytes = unsafe { std::slice::from_raw_parts(p, first) };
                prop_assert!(bytes.iter().all(|&b| b == 0));
            }
            fill(p, first, 1);
            let mut seed = 1u8;
            for new_size in next {
                // SAFETY: `p` was allocated with `layout`; `new_size` is non-zero and small.
                let q = unsafe { LargeMapped.realloc(p, layout, new_size) };
                prop_assert!(!q.is_null());
                prop_assert_eq!(q as usize % align, 0);
                prop_assert!(holds(q, layout.size().min(new_size), seed));
                seed = seed.wrapping_add(1);
                fill(q, new_size, seed);
                p = q;
                layout = Layout::from_size_align(new_size, align).unwrap();
            }
            // SAFETY: `p` is live with `layout`.
            unsafe { LargeMapped.dealloc(p, layout) };
        }
    }
}
