//! A counting global allocator shared by the bench programs: how many allocations a piece of
//! code makes, and how many heap bytes it leaves live.
//!
//! Counting is off except inside [`measure`], so timed runs pay nothing but one relaxed load
//! per allocation, the same for every contender.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed},
};

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static ENABLED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn record(allocated: usize, freed: usize) {
    if ENABLED.load(Relaxed) {
        if allocated > 0 {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        if freed > 0 {
            FREES.fetch_add(1, Relaxed);
        }
        // Layout sizes never exceed isize::MAX.
        LIVE_BYTES.fetch_add(allocated as isize - freed as isize, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 0);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size(), 0);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(0, layout.size());
        // SAFETY: `ptr` came from this allocator, which is the system one.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size, layout.size());
        // SAFETY: as for `dealloc`, with the caller's contract for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What the heap saw while [`measure`] ran its closure.
#[derive(Debug, Clone, Copy)]
pub struct HeapUse {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub allocations: usize,
    /// Calls to `dealloc` and `realloc`: with `allocations`, how many allocations the closure
    /// left live (a `realloc` counts as one of each).
    #[allow(dead_code)] // each bench compiles this module on its own; the idle bench reads it
    pub frees: usize,
    /// Bytes allocated minus bytes freed: what the closure left live.
    pub live_bytes: isize,
}

/// Runs `f` with counting on and reports its heap use. Meant for a quiet moment: allocations
/// made by other threads meanwhile are counted too.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, HeapUse) {
    ALLOCATIONS.store(0, Relaxed);
    FREES.store(0, Relaxed);
    LIVE_BYTES.store(0, Relaxed);
    ENABLED.store(true, Relaxed);
    let value = f();
    ENABLED.store(false, Relaxed);
    let heap = HeapUse {
        allocations: ALLOCATIONS.load(Relaxed),
        frees: FREES.load(Relaxed),
        live_bytes: LIVE_BYTES.load(Relaxed),
    };
    (value, heap)
}
