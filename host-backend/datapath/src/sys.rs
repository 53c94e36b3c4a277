//! The few system calls the datapath makes that `vmm-sys-util` does not wrap: memfds and
//! shared mappings surrounded by guard pages, eventfd reads and writes that say exactly what
//! they may wait for, signals to one thread. All `unsafe` for memory mappings lives here.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// Page size assumed for layout and guard pages.
pub const PAGE_SIZE: usize = 4096;
/// Huge page size used when the machine offers hugetlb pages.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Rounds `v` up to a multiple of `align` (a power of two).
pub const fn round_up(v: usize, align: usize) -> usize {
    (v + align - 1) & !(align - 1)
}

/// Creates a memfd of `size` bytes whose size is then sealed; with `huge`, backed by hugetlb
/// pages (the size must then be a multiple of [`HUGE_PAGE_SIZE`]).
///
/// Clients and QEMU receive these memfds: without the seals one of them could `ftruncate`
/// the file and the daemon's next access to its own mapping would die of SIGBUS.
pub fn memfd(name: &CStr, size: usize, huge: bool) -> io::Result<File> {
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if huge {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create has no other inputs.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(size as u64)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS only changes the seals of the memfd we just created.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Takes a socket's pending error (SO_ERROR): e.g. ENETDOWN after its interface went down.
pub fn socket_error(fd: &impl std::os::fd::AsRawFd) -> Option<io::Error> {
    let mut v: libc::c_int = 0;
    let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `l` bytes into `v`, a c_int we own.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut libc::c_int).cast(),
            &mut l,
        )
    };
    (r == 0 && v != 0).then(|| io::Error::from_raw_os_error(v))
}

/// Asks the kernel to send what a socket's TX ring holds (`sendto` with no buffer, not
/// waiting): how AF_PACKET and AF_XDP sockets are kicked.
pub fn kick_tx(fd: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    // SAFETY: sendto with a null buffer of length 0 and no address reads no memory of ours; it
    // only tells the kernel to process the socket's TX ring.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `poll(2)` on `fds`, waiting at most `timeout_ms` (-1: forever); the number of descriptors
/// with events (their `revents` set).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a slice of initialised pollfds we own; poll writes only their
    // `revents` fields, within the length passed.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Polls one descriptor for `events`; returns its `revents` (0 on timeout).
pub fn poll_one(fd: &impl std::os::fd::AsRawFd, events: i16, timeout_ms: i32) -> io::Result<i16> {
    let mut pfd = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }];
    poll(&mut pfd, timeout_ms)?;
    Ok(pfd[0].revents)
}

/// Shuts a socket down both ways: a thread blocked in `accept` or `read` on it returns.
pub fn shutdown(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: shutdown only changes the state of the socket; an error (not a socket) is
    // harmless and ignored.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}

/// An eventfd as a plain file, to pass it to another process.
pub fn eventfd_file(e: vmm_sys_util::eventfd::EventFd) -> File {
    // SAFETY: `into_raw_fd` gives up the descriptor, which the File then owns alone.
    unsafe { File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(e)) }
}

/// A descriptor received from another process used as an eventfd (the inverse of
/// [`eventfd_file`]). `EventFd` only reads and writes 8-byte counters: on a descriptor that
/// is not an eventfd those calls fail, nothing worse.
pub fn file_eventfd(f: File) -> vmm_sys_util::eventfd::EventFd {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `into_raw_fd` gives up the descriptor, which the EventFd then owns alone.
    unsafe { vmm_sys_util::eventfd::EventFd::from_raw_fd(f.into_raw_fd()) }
}

/// Reads an eventfd's counter (and resets it) without ever waiting, whatever the open file's
/// `O_NONBLOCK` says: `preadv2(RWF_NOWAIT)`. `Ok(None)` when the counter is zero. Kernels
/// before 5.12 refuse the flag on eventfds (`EOPNOTSUPP`).
pub fn eventfd_read_nowait(fd: &impl AsRawFd) -> io::Result<Option<u64>> {
    let mut v = 0u64;
    let iov = libc::iovec {
        iov_base: (&raw mut v).cast(),
        iov_len: 8,
    };
    // SAFETY: one iovec over the 8 bytes of `v`, which the kernel may fill; offset -1 reads
    // at the file's position, as `read` does.
    let r = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    match r {
        8 => Ok(Some(v)),
        r if r < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            }
        }
        _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
    }
}

/// `read(2)` of an eventfd's counter: waits while it is zero if the open file is blocking.
pub fn eventfd_read(fd: &impl AsRawFd) -> io::Result<u64> {
    let mut v = [0u8; 8];
    // SAFETY: the kernel writes at most 8 bytes into `v`.
    let r = unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
    match r {
        8 => Ok(u64::from_ne_bytes(v)),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
    }
}

/// `write(2)` of `v` to an eventfd: waits while the counter cannot take it if the open file
/// is blocking.
pub fn eventfd_write(fd: &impl AsRawFd, v: u64) -> io::Result<()> {
    let b = v.to_ne_bytes();
    // SAFETY: the kernel reads the 8 bytes of `b`.
    let r = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 8) };
    match r {
        8 => Ok(()),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
    }
}

/// The calling thread's kernel id.
pub fn thread_id() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Sends `sig` to thread `tid` of this process (`tgkill`). A thread that has exited gives
/// `ESRCH`; no other process can be reached.
pub fn signal_thread(tid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: tgkill reads no memory of ours; the thread group is our own.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Clock ticks per second, the unit of `/proc`'s CPU times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Moves the calling thread into the network namespace `ns` is a descriptor of.
pub fn enter_net_namespace(ns: &File) -> io::Result<()> {
    // SAFETY: setns changes only this thread's network namespace; a descriptor of anything
    // else makes it fail.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A `MAP_SHARED` read-write mapping of a whole file, with one inaccessible guard page on each
/// side, so that an access running off either end faults instead of touching other memory.
///
/// Invariant: `base` points to `len` bytes mapped read-write for as long as the value lives,
/// inside a reservation `[resv, resv + total)` that is otherwise `PROT_NONE`, with at least one
/// inaccessible page on each side of the mapping.
#[derive(Debug)]
pub struct GuardedMapping {
    base: NonNull<u8>,
    len: usize,
    resv: NonNull<u8>,
    total: usize,
}

// SAFETY: the mapping is plain shared memory, valid from any thread; all accesses to its
// contents go through raw pointers whose users uphold the ring protocol.
unsafe impl Send for GuardedMapping {}
// SAFETY: as above; `&GuardedMapping` only hands out the base pointer and length.
unsafe impl Sync for GuardedMapping {}

impl GuardedMapping {
    /// Maps `len` bytes of `file` (from offset 0) between two guard pages.
    pub fn new(file: &File, len: usize) -> io::Result<Self> {
        Self::with_align(file, len, PAGE_SIZE)
    }

    /// As [`GuardedMapping::new`], with the mapping aligned to `align` (a power of two that
    /// `len` is a multiple of): hugetlb files must be mapped at huge page boundaries.
    pub fn with_align(file: &File, len: usize, align: usize) -> io::Result<Self> {
        if len == 0 || !align.is_power_of_two() || align < PAGE_SIZE || len % align != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping length must be a non-zero multiple of the (power of two) alignment",
            ));
        }
        // Room for a guard page before, the aligned mapping, and a guard page after.
        let total = len + PAGE_SIZE + align + PAGE_SIZE;
        // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's choosing
        // cannot alias any existing Rust object.
        let resv = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if resv == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = round_up(resv as usize + PAGE_SIZE, align) - resv as usize;
        // SAFETY: `resv + start .. + len` lies inside the reservation we own (start <= PAGE_SIZE
        // + align - PAGE_SIZE, so start + len + PAGE_SIZE <= total), so MAP_FIXED replaces only
        // our own PROT_NONE pages.
        let inner = unsafe {
            libc::mmap(
                resv.cast::<u8>().add(start).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            )
        };
        if inner == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            // SAFETY: unmapping the reservation we just created and nobody else uses.
            unsafe { libc::munmap(resv, total) };
            return Err(err);
        }
        Ok(GuardedMapping {
            // PANIC: mmap never returns a null pointer on success.
            base: NonNull::new(inner.cast()).expect("mmap returned null"),
            len,
            // PANIC: as above.
            resv: NonNull::new(resv.cast()).expect("mmap returned null"),
            total,
        })
    }

    /// First byte of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length of the accessible part.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for GuardedMapping {
    fn drop(&mut self) {
        // SAFETY: this unmaps exactly the reservation created in `with_align` (guards
        // included); no pointer into it outlives `self` because users hold the mapping while
        // they use it.
        unsafe { libc::munmap(self.resv.as_ptr().cast(), self.total) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_mapping_is_shared_with_the_file() {
        let f = memfd(c"t", 2 * PAGE_SIZE, false).unwrap();
        let a = GuardedMapping::new(&f, 2 * PAGE_SIZE).unwrap();
        let b = GuardedMapping::new(&f, 2 * PAGE_SIZE).unwrap();
        // SAFETY: both pointers are inside their mappings; no references are created.
        unsafe {
            a.base().add(PAGE_SIZE + 7).write_volatile(0x5a);
            assert_eq!(b.base().add(PAGE_SIZE + 7).read_volatile(), 0x5a);
        }
    }

    #[test]
    fn a_client_cannot_shrink_or_grow_a_memfd() {
        let f = memfd(c"t", 2 * PAGE_SIZE, false).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 2 * PAGE_SIZE as u64);
        for len in [0, PAGE_SIZE as u64, 4 * PAGE_SIZE as u64] {
            let e = f.set_len(len).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "set_len({len})");
        }
    }

    #[test]
    fn mapping_length_must_be_page_multiple() {
        let f = memfd(c"t", PAGE_SIZE, false).unwrap();
        assert!(GuardedMapping::new(&f, 100).is_err());
    }
}
