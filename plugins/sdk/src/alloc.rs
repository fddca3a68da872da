//! The plugin's global allocator (cargo feature `allocator`, on by default): size classes with
//! free lists in front of the standard allocator.
//!
//! The canonical ABI lowers every event of a `process` call into several small guest allocations
//! (value, header list, each header's name and value) through `cabi_realloc`, and the plugin
//! frees them before the call returns: two thousand allocate-then-free pairs in a batch of 500.
//! Through wasi-libc's dlmalloc they took over a quarter of the host's time per record
//! (bench/README.md, plugin-bench); popping and pushing a free list is a few instructions.
//!
//! Blocks of at most [`MAX_SMALL`] bytes are rounded up to a power of two and carved from
//! [`CHUNK`]-byte chunks taken from the standard allocator; a freed block goes onto its class's
//! list and serves the next allocation of that class. Chunks are never given back, so a plugin
//! holds on to its peak of small blocks; state kept across calls (maps, buffers) is unaffected,
//! since blocks are reused only once freed. Larger or more strictly aligned blocks go to the
//! standard allocator as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The largest block served from a size class.
const MAX_SMALL: usize = 1024;
/// The smallest class, and the alignment every class block has.
const MIN_SMALL: usize = 16;
/// Classes 16, 32, … [`MAX_SMALL`].
const CLASSES: usize = (MAX_SMALL.trailing_zeros() - MIN_SMALL.trailing_zeros() + 1) as usize;
/// What the classes take from the standard allocator at a time.
const CHUNK: usize = 64 << 10;

/// The allocator: one instance, as the `#[global_allocator]`.
pub struct SizeClasses(UnsafeCell<State>);

struct State {
    /// Heads of the free lists; a free block holds the address of the next.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

// A component instance runs one thread (the build has no `atomics`, see lib.rs), so the state
// is never touched concurrently; native unit tests use their own instance from one thread.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    /// An allocator with no chunk yet.
    pub const fn new() -> Self {
        SizeClasses(UnsafeCell::new(State {
            free: [ptr::null_mut(); CLASSES],
            next: ptr::null_mut(),
            end: ptr::null_mut(),
        }))
    }
}

/// The class of `layout`, if it is small enough for one.
fn class(layout: &Layout) -> Option<usize> {
    class_of(layout.size()).filter(|_| layout.align() <= MIN_SMALL)
}

fn class_of(size: usize) -> Option<usize> {
    (size <= MAX_SMALL).then(|| {
        let bits = usize::BITS - (size.max(MIN_SMALL) - 1).leading_zeros();
        (bits - MIN_SMALL.trailing_zeros()) as usize
    })
}

impl State {
    /// # Safety
    /// Only one caller at a time.
    unsafe fn alloc(&mut self, class: usize) -> *mut u8 {
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: a free block is at least MIN_SMALL bytes and starts with the next pointer.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = MIN_SMALL << class;
        if (self.end as usize) - (self.next as usize) < size {
            // SAFETY: CHUNK is not zero.
            let chunk =
                unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, MIN_SMALL)) };
            if chunk.is_null() {
                return chunk;
            }
            // The rest of the old chunk (under one block of this class) is given up.
            self.next = chunk;
            self.end = chunk.wrapping_add(CHUNK);
        }
        let block = self.next;
        self.next = block.wrapping_add(size);
        block
    }

    /// # Safety
    /// `block` came from `alloc(class)` and is no longer used.
    unsafe fn free(&mut self, block: *mut u8, class: usize) {
        // SAFETY: the block is ours again, aligned and large enough for a pointer.
        unsafe { block.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = block;
    }
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            // SAFETY: single-threaded, see the `Sync` impl.
            Some(c) => unsafe { (*self.0.get()).alloc(c) },
            // SAFETY: the caller's guarantees, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            Some(_) => {
                // SAFETY: as `alloc`; the block has at least `layout.size()` bytes.
                let block = unsafe { self.alloc(layout) };
                if !block.is_null() {
                    unsafe { block.write_bytes(0, layout.size()) };
                }
                block
            }
            // Fresh memory from the standard allocator needs no clearing.
            // SAFETY: the caller's guarantees, passed on.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class(&layout) {
            // SAFETY: `layout` is the one `block` was allocated with, so it is of this class.
            Some(c) => unsafe { (*self.0.get()).free(block, c) },
            // SAFETY: the caller's guarantees, passed on.
            None => unsafe { System.dealloc(block, layout) },
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class(&layout);
        // SAFETY: the caller guarantees `new_size` rounded to `layout.align()` fits an isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = class(&new_layout);
        match (old, new) {
            (Some(o), Some(n)) if o == n => block,
            // SAFETY: the caller's guarantees, passed on.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: the caller's guarantees; the old block is valid for `layout.size()`
                // bytes and the new one for `new_size`, and they do not overlap.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_power_of_two_classes() {
        assert_eq!(CLASSES, 7);
        assert_eq!(class_of(1), Some(0));
        assert_eq!(class_of(16), Some(0));
        assert_eq!(class_of(17), Some(1));
        assert_eq!(class_of(200), Some(4));
        assert_eq!(class_of(1024), Some(6));
        assert_eq!(class_of(1025), None);
        let aligned = Layout::from_size_align(64, 32).unwrap();
        assert_eq!(class(&aligned), None);
    }

    #[test]
    fn blocks_are_reused_only_once_freed_and_keep_their_bytes_across_moves() {
        let a = SizeClasses::new();
        let small = Layout::from_size_align(200, 1).unwrap();
        unsafe {
            let live = a.alloc(small);
            live.write_bytes(7, 200);
            let freed = a.alloc(small);
            assert_ne!(live, freed);
            a.dealloc(freed, small);
            // The freed block serves the next allocation of its class; the live one is untouched.
            assert_eq!(a.alloc(small), freed);
            assert!((0..200).all(|i| *live.add(i) == 7));
            // Within the class the block stays put; across classes and to the standard
            // allocator it moves with its contents.
            assert_eq!(a.realloc(live, small, 250), live);
            let grown = a.realloc(live, Layout::from_size_align(250, 1).unwrap(), 5000);
            assert!((0..200).all(|i| *grown.add(i) == 7));
            let shrunk = a.realloc(grown, Layout::from_size_align(5000, 1).unwrap(), 100);
            assert!((0..100).all(|i| *shrunk.add(i) == 7));
            a.dealloc(shrunk, Layout::from_size_align(100, 1).unwrap());
            let zeroed = a.alloc_zeroed(Layout::from_size_align(100, 8).unwrap());
            assert_eq!(zeroed, shrunk);
            assert!((0..100).all(|i| *zeroed.add(i) == 0));
        }
    }
}
