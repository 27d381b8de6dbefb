//! A counting global allocator for this test binary: [`peak`] runs a closure and returns
//! the most bytes it held allocated at once, and [`allocations`] how many blocks it asked
//! for, counted on the calling thread only, so that tests running in parallel do not
//! disturb each other's figures.
//!
//! It forwards every call to the system allocator and only keeps two per-thread counters;
//! the `unsafe` this needs is allowed in this file and nowhere else in the binary.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Bytes allocated now by this thread (wrapping: blocks freed by another thread than
    /// the one that allocated them move it below zero) and the most since the last reset.
    static HELD: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
    /// Blocks this thread asked for (allocations and reallocations).
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

fn call() {
    let _ = CALLS.try_with(|calls| calls.set(calls.get() + 1));
}

fn count(delta: i64) {
    // `try_with`: the thread's counters may already be gone while it exits.
    let _ = HELD.try_with(|held| {
        let now = held.get().wrapping_add(delta);
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counters are plain
// thread-local integers that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        call();
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        call();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: `ptr` and `layout` come from a matching call on `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        call();
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the most bytes it held allocated at once (on this
/// thread, beyond what was held when it started).
pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = HELD.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let top = PEAK.with(Cell::get);
    (out, usize::try_from(top - start).unwrap_or(0))
}

/// Runs `f` and returns its result and how many blocks it allocated or reallocated (on this
/// thread).
// synod-examples' test binary includes this file too, and uses `peak` only.
#[allow(dead_code)]
pub fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let start = CALLS.with(Cell::get);
    let out = f();
    (out, CALLS.with(Cell::get) - start)
}
