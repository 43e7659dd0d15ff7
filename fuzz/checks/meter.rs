//! A global allocator that counts the heap bytes each thread holds, so a check can bound the
//! memory a parser keeps while it is fed.
//!
//! Counted per thread: checks run one input at a time on one thread, while test harnesses run
//! other tests beside them.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (negative when it frees what another
    /// thread allocated).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting. Install it with `#[global_allocator]`.
pub struct Meter;

impl Meter {
    fn add(bytes: usize, sign: isize) {
        // `try_with`: the counter may already be gone while the thread shuts down.
        let _ = LIVE.try_with(|live| live.set(live.get() + sign * bytes as isize));
    }
}

// SAFETY: every call is passed to `System` unchanged; the counting touches only a
// thread-local `Cell` with a const initializer, which neither allocates nor registers a
// destructor.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            Meter::add(layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            Meter::add(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        Meter::add(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            Meter::add(layout.size(), -1);
            Meter::add(new_size, 1);
        }
        new
    }
}

/// The heap bytes this thread holds now, as counted since it started.
pub fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}
