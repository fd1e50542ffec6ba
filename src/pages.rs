//! Large buffers in huge pages. A fresh 16-20 MB buffer comes straight from
//! the OS (the addon fixes glibc's mmap threshold: see `js/mod.rs`), and its
//! first touch costs a page fault per 4 KiB page: about 4,900 faults for a
//! 100,000 x 50 matrix, three times as long as copying the bytes in. Asking
//! for transparent huge pages before the first touch makes that about ten
//! faults of 2 MiB. The advice changes where the memory comes from, never
//! what it holds; where the kernel has THP off (`never`) it is ignored, and
//! it is only given to buffers that are mappings of their own (in the addon,
//! every buffer of 256 KiB or more; in a plain Rust program, where glibc's
//! threshold adapts, often not). `SCENARIO_MATRIX_CACHE_HUGE_PAGES=0` turns
//! it off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;

/// Buffers smaller than one huge page gain nothing.
const HUGE_PAGE: usize = 2 << 20;

/// `vec![0u8; n]`, in huge pages when large.
pub fn zeroed_bytes(n: usize) -> Vec<u8> {
    zeroed(n)
}

/// `vec![0f32; n]`, in huge pages when large.
pub fn zeroed_f32(n: usize) -> Vec<f32> {
    zeroed(n)
}

/// A zeroed Vec of `n` values whose allocation, when large, is made a whole
/// number of huge pages long, so that the OS can place it on a huge-page
/// boundary and back all of it (not only its aligned middle) with huge
/// pages, and is advised so before its first touch. With glibc a large
/// calloc is its own mapping `request + 16` bytes long, rounded up to a page;
/// Linux (6.7 and later) aligns a mapping whose length is a multiple of 2 MiB
/// to 2 MiB. Where either does otherwise, only the edges miss out (about 800
/// small-page faults at 16 MB, measured); the contents are the same.
fn zeroed<T: Zeroable>(n: usize) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    // glibc's chunk header and rounding: 32 bytes keep the mapping within
    // the next multiple of 2 MiB.
    const MALLOC_OVERHEAD: usize = 32;
    let cap = n
        .checked_mul(size)
        .filter(|&bytes| bytes >= HUGE_PAGE && enabled())
        .and_then(|bytes| bytes.checked_add(MALLOC_OVERHEAD))
        .and_then(|b| b.checked_next_multiple_of(HUGE_PAGE))
        .map(|b| (b - MALLOC_OVERHEAD) / size);
    let Some(layout) = cap.and_then(|c| Layout::array::<T>(c).ok()) else {
        // Small, turned off, or too large for any allocation (which `vec!`
        // reports as such).
        return vec![T::ZERO; n];
    };
    let cap = layout.size() / size;
    assert!(cap >= n, "padded capacity below the length");
    // SAFETY: `layout` has a non-zero size (cap >= n > 0); the memory is
    // zeroed, which is a valid T (see `Zeroable`), and the Vec is built with
    // the capacity and alignment it was allocated with, so it frees it
    // with the same layout; its length is at most that capacity.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        advise(ptr as usize, cap * size);
        Vec::from_raw_parts(ptr, n, cap)
    }
}

/// The addon's allocator: the system's, except that an allocation of a huge
/// page or more gets the same treatment as [`zeroed`]'s buffers (a whole
/// number of huge pages, advised before first touch). That reaches the large
/// buffers other crates make for us: a 16 MB Redis reply is copied by the
/// client into a Vec of its own, and its 4,000 small-page faults were a
/// quarter of a Redis hit (perf). Installed by the addon only (`js/mod.rs`);
/// a Rust program using the crate keeps its own allocator.
pub struct LargeInHugePages;

/// `layout`, its size padded as [`zeroed`] pads, when large.
fn padded(layout: Layout) -> Layout {
    let size = layout.size();
    // Only glibc on Linux gains (see `advise`); elsewhere padding would only
    // commit or reserve more.
    if size < HUGE_PAGE || !cfg!(all(target_os = "linux", target_env = "gnu")) || !enabled() {
        return layout;
    }
    const MALLOC_OVERHEAD: usize = 32;
    size.checked_add(MALLOC_OVERHEAD)
        .and_then(|b| b.checked_next_multiple_of(HUGE_PAGE))
        .and_then(|b| Layout::from_size_align(b - MALLOC_OVERHEAD, layout.align()).ok())
        .unwrap_or(layout)
}

// SAFETY: every call goes to `System` with a layout at least as large as the
// caller's and the same alignment, and the same padded layout is given back
// on free and realloc (padding is a pure function of size and alignment);
// the advice never changes contents.
unsafe impl GlobalAlloc for LargeInHugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(padded(layout));
        if !p.is_null() {
            advise(p as usize, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(padded(layout));
        if !p.is_null() {
            advise(p as usize, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, padded(layout))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        let p = System.realloc(ptr, padded(layout), padded(new).size());
        if !p.is_null() {
            // A grown mapping keeps its advice; a buffer that just became
            // large gets it for the pages not yet touched.
            advise(p as usize, new_size);
        }
        p
    }
}

/// Types for which all-zero bytes are a valid value (zero).
trait Zeroable: Copy {
    const ZERO: Self;
}
impl Zeroable for u8 {
    const ZERO: Self = 0;
}
impl Zeroable for f32 {
    const ZERO: Self = 0.0;
}

/// The OS page size (4 KiB on x86-64; 16 or 64 KiB on some arm64 kernels).
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    const SC_PAGESIZE: std::os::raw::c_int = 30;
    extern "C" {
        fn sysconf(name: std::os::raw::c_int) -> std::os::raw::c_long;
    }
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf only reads a system constant.
    *PAGE.get_or_init(|| {
        usize::try_from(unsafe { sysconf(SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(1)
    })
}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SCENARIO_MATRIX_CACHE_HUGE_PAGES").as_deref() != Ok("0"))
}

/// `madvise(MADV_HUGEPAGE)` over the pages that hold `[addr, addr + len)`,
/// when that is an allocation of its own mapping.
/// Rounded outward, not inward: a huge page must lie wholly inside the
/// advised range, and an allocation starts a few bytes into its first page
/// (glibc's chunk header), so rounding inward would leave its first and last
/// 2 MiB on small pages (about 1,000 faults for 16 MB, measured). The advice
/// may reach a few bytes of a neighbour's page; it changes no contents.
fn advise(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    if len >= HUGE_PAGE && enabled() {
        let page = page_size();
        const MADV_HUGEPAGE: std::os::raw::c_int = 14;
        extern "C" {
            fn madvise(
                addr: *mut std::os::raw::c_void,
                len: usize,
                advice: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // Only an allocation that is a mapping of its own, untouched: glibc
        // places such a chunk 16 bytes into its first page. One from the heap
        // was zeroed by calloc already, and advising it would mark its
        // neighbours' pages too (which the kernel may later back with huge
        // pages, raising RSS).
        if addr % page != 16 {
            return;
        }
        let start = addr / page * page;
        let end = (addr + len).next_multiple_of(page);
        if end > start {
            // SAFETY: the range is mapped (it holds a live allocation of ours),
            // and MADV_HUGEPAGE only changes how its pages are backed, never
            // their contents; a refusal (EINVAL where THP is unavailable) is
            // harmless.
            unsafe {
                madvise(start as *mut _, end - start, MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len, enabled);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_past_any_allocation_are_refused_not_wrapped() {
        // n * 4 wraps around: `vec!` reports it rather than a short buffer.
        let r = std::panic::catch_unwind(|| zeroed_f32(usize::MAX / 2).len());
        assert!(r.is_err());
    }

    #[test]
    fn buffers_are_what_they_would_be_without_advice() {
        for n in [0, 1, 4095, HUGE_PAGE - 1, HUGE_PAGE, 5 * HUGE_PAGE + 17] {
            assert!(zeroed_bytes(n).iter().all(|&b| b == 0));
            assert_eq!(zeroed_bytes(n).len(), n);
            assert!(zeroed_f32(n).iter().all(|&x| x.to_bits() == 0));
        }
    }
}
