//! Test support for the no-allocation proofs of the packet paths: a global
//! allocator that forwards to the system one and counts, per thread, every
//! allocation and reallocation. A test binary installs it with
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: alloc_count::Counting = alloc_count::Counting;
//! ```
//!
//! and checks that `alloc_count::allocs()` did not move across the call
//! under test (or that `alloc_count::bytes()` moved by less than a bound:
//! what a call cost at most, counted, not sampled from RSS). Per thread,
//! because the test harness runs tests in parallel and each must count
//! only its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator (install it as the test binary's `#[global_allocator]`).
#[derive(Debug)]
pub struct Counting;

thread_local! {
    // Const-initialised, no destructor: safe to touch from inside the allocator.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    ALLOCS.with(|c| c.set(c.get() + 1));
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    BYTES.with(|c| c.set(c.get().saturating_add(bytes)));
}

/// Allocations and reallocations this thread has made so far.
pub fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Bytes this thread has asked for so far (each allocation's size, each
/// reallocation's new size; frees are not subtracted): an upper bound on
/// what a call had live at its peak.
pub fn bytes() -> u64 {
    BYTES.with(Cell::get)
}

// JUSTIFICATION: counting allocations needs a global allocator, which is an
// unsafe trait; every method forwards to the system allocator unchanged.
// SAFETY: each method returns exactly what `System` returns for the same
// arguments, so this allocator upholds `GlobalAlloc`'s contract whenever
// `System` does; the counter is a const-initialised thread-local `Cell`
// (no allocation, no destructor), so counting never re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract (a non-zero-sized
        // layout); it is passed on unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout`, i.e. from
        // `System` (every allocation is forwarded), as `dealloc` requires.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: `ptr` came from `System` with `layout` (every allocation
        // is forwarded) and the caller upholds `realloc`'s size contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
