//! Large buffers in huge pages. A fresh 16-20 MB buffer comes straight from
//! the OS (the addon fixes glibc's mmap threshold: see `js/mod.rs`), and its
//! first touch costs a page fault per 4 KiB page: about 4,900 faults for a
//! 100,000 x 50 matrix, three times as long as copying the bytes in. Asking
//! for transparent huge pages before the first touch makes that about ten
//! faults of 2 MiB. The advice changes where the memory comes from, never
//! what it holds; where the kernel has THP off (`never`), or the buffer was
//! already touched, it is ignored. `SCENARIO_MATRIX_CACHE_HUGE_PAGES=0`
//! turns it off.

use std::sync::OnceLock;

/// Buffers smaller than one huge page gain nothing.
const HUGE_PAGE: usize = 2 << 20;

/// `vec![0u8; n]`, advised into huge pages when large.
pub fn zeroed_bytes(n: usize) -> Vec<u8> {
    // Zeroed memory this size comes from the OS untouched (calloc skips the
    // zeroing), so the advice lands before the first touch.
    let v = vec![0u8; n];
    advise(v.as_ptr() as usize, n);
    v
}

/// `vec![0f32; n]`, advised into huge pages when large.
pub fn zeroed_f32(n: usize) -> Vec<f32> {
    let v = vec![0f32; n];
    advise(v.as_ptr() as usize, n * 4);
    v
}

/// `Vec::with_capacity(n)` for bytes, its room advised into huge pages when large.
pub fn with_capacity_bytes(n: usize) -> Vec<u8> {
    let v = Vec::with_capacity(n);
    advise(v.as_ptr() as usize, n);
    v
}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SCENARIO_MATRIX_CACHE_HUGE_PAGES").as_deref() != Ok("0"))
}

/// `madvise(MADV_HUGEPAGE)` over the whole pages inside `[addr, addr + len)`.
fn advise(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    if len >= HUGE_PAGE && enabled() {
        const PAGE: usize = 4096;
        const MADV_HUGEPAGE: std::os::raw::c_int = 14;
        extern "C" {
            fn madvise(
                addr: *mut std::os::raw::c_void,
                len: usize,
                advice: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        let start = addr.next_multiple_of(PAGE);
        let end = (addr + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: the range lies within one live allocation of ours, and
            // MADV_HUGEPAGE only changes how its pages are backed, not their
            // contents; a refusal (EINVAL where THP is unavailable) is harmless.
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
    fn buffers_are_what_they_would_be_without_advice() {
        for n in [0, 1, 4095, HUGE_PAGE - 1, HUGE_PAGE, 5 * HUGE_PAGE + 17] {
            assert!(zeroed_bytes(n).iter().all(|&b| b == 0));
            assert_eq!(zeroed_bytes(n).len(), n);
            assert!(zeroed_f32(n).iter().all(|&x| x.to_bits() == 0));
            let v = with_capacity_bytes(n);
            assert!(v.is_empty() && v.capacity() >= n);
        }
    }
}
