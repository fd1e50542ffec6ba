//! Large payloads of the memory tier kept in sealed memory files, so that a
//! caller's copy of a hit is a mapping, not a copy.
//!
//! A caller gets a `Buffer` it may write to, so it can never be handed the
//! cached bytes themselves. Copying 16 MB costs 2-3 ms and 16 MB of fresh
//! memory per hit. Here the payload is written once into an anonymous
//! memory file (`memfd`), sealed so that nothing can change it any more
//! (`F_SEAL_WRITE`, enforced by the kernel), and each caller gets a private
//! copy-on-write mapping of it: about 1 ms to map 16 MB, its pages shared
//! with the cache's until the caller writes to one, which then becomes the
//! caller's own. Reads from any mapping see the sealed bytes; a write by a
//! caller never reaches the file (measured in the tests below).
//!
//! Linux only; elsewhere, and whenever the OS refuses (no memfd, out of file
//! descriptors), callers get copies as before.

use std::io;

/// Payloads below this are copied: a copy of 1 MiB costs about as much as
/// setting up a mapping.
pub const MIN_LEN: usize = 1 << 20;

/// Sealed payloads alive at once, at most: each holds a file descriptor,
/// which the process's sockets need too. Past it, callers get copies.
pub const MAX_LIVE: usize = 256;

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The sealed file and the cache's own read-only view of it.
    pub struct Sealed {
        fd: OwnedFd,
        ptr: *mut u8,
        len: usize,
        _slot: Slot,
    }

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    /// One of the [`super::MAX_LIVE`] places, given back on drop.
    struct Slot;

    impl Slot {
        fn take() -> io::Result<Slot> {
            if LIVE.fetch_add(1, Ordering::SeqCst) >= super::MAX_LIVE {
                LIVE.fetch_sub(1, Ordering::SeqCst);
                return Err(io::Error::other("as many sealed payloads as allowed"));
            }
            Ok(Slot)
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    // SAFETY: the mapping is read-only and the file sealed against writes, so
    // the bytes never change while any thread reads them.
    unsafe impl Send for Sealed {}
    unsafe impl Sync for Sealed {}

    fn check(r: libc::c_int) -> io::Result<()> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    impl Sealed {
        pub fn new(bytes: &[u8]) -> io::Result<Sealed> {
            if bytes.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty"));
            }
            let slot = Slot::take()?;
            // SAFETY: plain system calls on a descriptor this function owns;
            // every pointer passed is a live slice of the stated length.
            unsafe {
                // Never executable (kernels from 6.3 may insist on saying
                // so); older kernels refuse the flag, and get none.
                let name = c"scenario-matrix-cache".as_ptr();
                let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
                let mut raw = libc::memfd_create(name, flags | libc::MFD_NOEXEC_SEAL);
                if raw < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    raw = libc::memfd_create(name, flags);
                }
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(raw);
                let mut done = 0;
                while done < bytes.len() {
                    let rest = &bytes[done..];
                    let n = libc::pwrite(
                        fd.as_raw_fd(),
                        rest.as_ptr().cast(),
                        rest.len(),
                        done as libc::off_t,
                    );
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(e);
                    }
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    done += n as usize;
                }
                // From here on the kernel refuses any change of size or
                // contents, and any writable shared mapping.
                check(libc::fcntl(
                    fd.as_raw_fd(),
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_WRITE
                        | libc::F_SEAL_SHRINK
                        | libc::F_SEAL_GROW
                        | libc::F_SEAL_SEAL,
                ))?;
                let ptr = libc::mmap(
                    std::ptr::null_mut(),
                    bytes.len(),
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                );
                if ptr == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error());
                }
                Ok(Sealed {
                    fd,
                    ptr: ptr.cast(),
                    len: bytes.len(),
                    _slot: slot,
                })
            }
        }

        /// A private, writable, copy-on-write mapping of the file, its pages
        /// mapped in up front (so the caller's first read does not fault).
        pub fn private_map(&self) -> io::Result<PrivateMap> {
            // SAFETY: maps a sealed file of `len` bytes that this value keeps
            // open; the result owns the new mapping.
            unsafe {
                // Populated read-only first: populating a writable private
                // mapping would copy every page.
                let ptr = libc::mmap(
                    std::ptr::null_mut(),
                    self.len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_POPULATE,
                    self.fd.as_raw_fd(),
                    0,
                );
                if ptr == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error());
                }
                let map = PrivateMap {
                    ptr: ptr.cast(),
                    len: self.len,
                };
                check(libc::mprotect(
                    ptr,
                    self.len,
                    libc::PROT_READ | libc::PROT_WRITE,
                ))?;
                Ok(map)
            }
        }
    }

    impl Sealed {
        #[cfg(test)]
        pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
            use std::os::fd::AsFd;
            self.fd.as_fd()
        }
    }

    impl std::fmt::Debug for Sealed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Sealed({} bytes)", self.len)
        }
    }

    impl AsRef<[u8]> for Sealed {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: a live read-only mapping of `len` bytes, unchanged for
            // its life (the file is sealed).
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    impl Drop for Sealed {
        fn drop(&mut self) {
            // SAFETY: our own mapping, unmapped once; the file closes with `fd`
            // and is freed when the last private mapping of it goes too.
            unsafe {
                libc::munmap(self.ptr.cast(), self.len);
            }
        }
    }

    /// A caller's own copy-on-write mapping of a sealed payload.
    pub struct PrivateMap {
        ptr: *mut u8,
        len: usize,
    }

    // SAFETY: owned memory, like a Vec's.
    unsafe impl Send for PrivateMap {}

    impl PrivateMap {
        pub fn as_mut_ptr(&mut self) -> *mut u8 {
            self.ptr
        }
    }

    impl std::ops::Deref for PrivateMap {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            // SAFETY: a live mapping of `len` bytes owned by self.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    impl std::ops::DerefMut for PrivateMap {
        fn deref_mut(&mut self) -> &mut [u8] {
            // SAFETY: a live, private, writable mapping owned by self.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
        }
    }

    impl Drop for PrivateMap {
        fn drop(&mut self) {
            // SAFETY: our own mapping, unmapped once.
            unsafe {
                libc::munmap(self.ptr.cast(), self.len);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    /// Never built off Linux: callers get copies.
    pub struct Sealed(std::convert::Infallible);

    impl Sealed {
        pub fn new(_bytes: &[u8]) -> io::Result<Sealed> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub fn private_map(&self) -> io::Result<PrivateMap> {
            match self.0 {}
        }
    }

    impl AsRef<[u8]> for Sealed {
        fn as_ref(&self) -> &[u8] {
            match self.0 {}
        }
    }

    impl std::fmt::Debug for Sealed {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.0 {}
        }
    }

    pub struct PrivateMap(std::convert::Infallible);

    impl PrivateMap {
        pub fn as_mut_ptr(&mut self) -> *mut u8 {
            match self.0 {}
        }
    }

    impl std::ops::Deref for PrivateMap {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            match self.0 {}
        }
    }

    impl std::ops::DerefMut for PrivateMap {
        fn deref_mut(&mut self) -> &mut [u8] {
            match self.0 {}
        }
    }
}

pub use imp::{PrivateMap, Sealed};

/// `bytes` sealed, when large enough to gain and the OS allows.
pub fn seal(bytes: &[u8]) -> io::Result<Sealed> {
    if bytes.len() < MIN_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too small to gain",
        ));
    }
    Sealed::new(bytes)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_caller_writing_its_mapping_never_changes_the_payload() {
        let bytes = payload(MIN_LEN + 12_345);
        let sealed = seal(&bytes).unwrap();
        assert_eq!(sealed.as_ref(), &bytes[..]);
        let mut mine = sealed.private_map().unwrap();
        assert_eq!(&mine[..], &bytes[..]);
        mine[0] ^= 0xff;
        let last = mine.len() - 1;
        mine[last] ^= 0xff;
        mine[MIN_LEN / 2..MIN_LEN / 2 + 4096].fill(0);
        // The cache's view and a later caller's mapping still hold the payload.
        assert_eq!(sealed.as_ref(), &bytes[..]);
        assert_eq!(&sealed.private_map().unwrap()[..], &bytes[..]);
        assert_ne!(&mine[..], &bytes[..]);
        // The mapping outlives nothing it needs: the file stays while mapped.
        drop(sealed);
        assert_eq!(mine[1], bytes[1]);
    }

    #[test]
    fn the_kernel_refuses_writes_to_the_sealed_file() {
        use std::os::fd::AsRawFd;
        let bytes = payload(MIN_LEN);
        let sealed = seal(&bytes).unwrap();
        let fd = sealed.fd();
        // SAFETY: a write attempt through the descriptor; it must fail.
        let n = unsafe { libc::pwrite(fd.as_raw_fd(), b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(n, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        assert_eq!(sealed.as_ref(), &bytes[..]);
    }

    #[test]
    fn small_payloads_are_left_to_copies() {
        assert!(seal(&payload(MIN_LEN - 1)).is_err());
    }
}
