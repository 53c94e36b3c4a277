//! The exported functions an application calls instead of the C library's: `open` and
//! friends, `close`, `ioctl`, `mmap`, `poll`/`ppoll`. Each one passes anything that is not a
//! netmap file straight to the C library, and for netmap files copies the application's
//! arguments in, calls [`NmFile`](crate::nmfile::NmFile), and copies the results out.
//!
//! Control requests are copied in and out of the application with `process_vm_readv` and
//! `process_vm_writev` on the process itself: a bad address is `EFAULT`, as from netmap,
//! never a fault. `poll`'s array, `select`'s sets and `epoll`'s events are read where they
//! are: a bad one faults in the application instead of failing with `EFAULT`.
//!
//! `open`, `openat` and `ioctl` are variadic in C. They are defined here with their one
//! optional argument as a named parameter, which the x86-64 and AArch64 System V calling
//! conventions pass in the same register either way; other targets are refused at build
//! time.

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the preload library's variadic interposers assume the x86-64 or AArch64 ABI");

use std::ffi::{CStr, c_void};
use std::ptr;

use ptnet_client::Port;
use ptnet_client::proto::{self, PortRequest};
use ptnet_spec::netmap::{NIOCCTRL, NIOCRXSYNC, NIOCTXSYNC, NmreqHeader};

use crate::nmfile::{Body, Errno};
use crate::{real, table};

const NETMAP_DEV: &CStr = c"/dev/netmap";

fn set_errno(e: Errno) {
    // SAFETY: errno is thread-local; its address is valid on this thread.
    unsafe { *libc::__errno_location() = e };
}

fn fail<T>(e: Errno, v: T) -> T {
    set_errno(e);
    v
}

/// `open("/dev/netmap")`: a descriptor of our own (an epoll set, which the port's interrupt
/// eventfds join once it is registered, so that a plain `poll` on it wakes up too).
fn open_netmap(flags: libc::c_int) -> libc::c_int {
    let cloexec = if flags & libc::O_CLOEXEC != 0 {
        libc::EPOLL_CLOEXEC
    } else {
        0
    };
    // SAFETY: epoll_create1 takes no pointers.
    let fd = unsafe { libc::epoll_create1(cloexec) };
    if fd < 0 {
        return fd;
    }
    if !table::insert(fd) {
        // SAFETY: our own descriptor, never handed out.
        unsafe { real::close(fd) };
        return fail(libc::EMFILE, -1);
    }
    fd
}

/// Whether `path` names the netmap device.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
unsafe fn is_netmap_path(path: *const libc::c_char) -> bool {
    // SAFETY: by the caller's contract.
    !path.is_null() && unsafe { CStr::from_ptr(path) } == NETMAP_DEV
}

/// An `open`-like interposer: `/dev/netmap` is ours, every other path the C library's.
macro_rules! open_like {
    ($(#[$m:meta])* $name:ident($($dir:ident: $dt:ty,)?)) => {
        $(#[$m])*
        ///
        /// # Safety
        /// As the C library's function of that name.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            $($dir: $dt,)?
            path: *const libc::c_char,
            flags: libc::c_int,
            mode: libc::c_uint,
        ) -> libc::c_int {
            // SAFETY: the application passes a path, as the call requires (an absolute path
            // ignores a directory descriptor).
            if unsafe { is_netmap_path(path) } {
                return open_netmap(flags);
            }
            // SAFETY: the application's arguments, unchanged.
            unsafe { real::$name($($dir,)? path, flags, mode) }
        }
    };
}

open_like!(
    /// `open(2)`.
    open()
);
open_like!(
    /// `open64(2)`.
    open64()
);
open_like!(
    /// `openat(2)`.
    openat(dirfd: libc::c_int,)
);
open_like!(
    /// `openat64(2)`.
    openat64(dirfd: libc::c_int,)
);

/// `close(2)`: a netmap file lets go of its port.
///
/// # Safety
/// As `close(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: libc::c_int) -> libc::c_int {
    if table::is_netmap(fd) || table::epoll_has_netmap(fd) {
        table::epoll_forget(fd);
    }
    if table::is_netmap(fd) {
        // Dropped outside the table's lock: it closes the port's descriptors.
        drop(table::remove(fd));
    }
    // SAFETY: the application's descriptor, as it asked.
    unsafe { real::close(fd) }
}

/// `ioctl(2)`: `NIOCCTRL`, `NIOCTXSYNC` and `NIOCRXSYNC` on a netmap file.
///
/// # Safety
/// As `ioctl(2)`. (For `NIOCCTRL` on a netmap file any address is safe: the request is
/// copied with `process_vm_readv`, and a bad one is `EFAULT`.)
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(
    fd: libc::c_int,
    request: libc::c_ulong,
    arg: *mut c_void,
) -> libc::c_int {
    if !table::is_netmap(fd) {
        // SAFETY: the application's arguments, unchanged.
        return unsafe { real::ioctl(fd, request, arg) };
    }
    let res = match u32::try_from(request).unwrap_or(0) {
        NIOCTXSYNC => table::with(fd, |f| f.sync(true)),
        NIOCRXSYNC => table::with(fd, |f| f.sync(false)),
        NIOCCTRL => ctrl(fd, arg as usize),
        _ => Some(Err(libc::ENOTTY)),
    };
    match res {
        Some(Ok(())) => 0,
        Some(Err(e)) => fail(e, -1),
        None => fail(libc::EBADF, -1),
    }
}

/// Copies a `T` in from the application's address `addr` with `process_vm_readv` on this
/// very process: an address that is not mapped readable is `EFAULT`, as from the kernel,
/// not a fault in the application.
fn copy_in<T: Copy>(addr: usize) -> Result<T, Errno> {
    let mut v = std::mem::MaybeUninit::<T>::uninit();
    let size = std::mem::size_of::<T>();
    let local = libc::iovec {
        iov_base: v.as_mut_ptr().cast(),
        iov_len: size,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: size,
    };
    // SAFETY: the kernel writes at most `size` bytes into `v` and reads the remote range
    // only if it is mapped readable (else EFAULT).
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n != size as isize {
        return Err(libc::EFAULT);
    }
    // SAFETY: all `size` bytes were written; every request struct is plain integers and
    // byte arrays, valid for any bit pattern.
    Ok(unsafe { v.assume_init() })
}

/// Copies `v` out to the application's address `addr` (`EFAULT` if it is not writable).
fn copy_out<T: Copy>(addr: usize, v: &T) -> Result<(), Errno> {
    let size = std::mem::size_of::<T>();
    let local = libc::iovec {
        iov_base: (v as *const T).cast_mut().cast(),
        iov_len: size,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: size,
    };
    // SAFETY: the kernel reads `size` bytes of `v` and writes the remote range only if it
    // is mapped writable (else EFAULT).
    let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n != size as isize {
        return Err(libc::EFAULT);
    }
    Ok(())
}

/// `NIOCCTRL`: copies the header and its body in, serves them, copies the body out. Bad
/// addresses are `EFAULT`, as from netmap.
fn ctrl(fd: i32, hdr: usize) -> Option<Result<(), Errno>> {
    let h: NmreqHeader = match copy_in(hdr) {
        Ok(h) => h,
        Err(e) => return Some(Err(e)),
    };
    let Some(mut body) = Body::for_reqtype(h.nr_reqtype) else {
        return Some(Err(libc::EOPNOTSUPP));
    };
    let at = h.nr_body as usize;
    if at == 0 {
        return Some(Err(libc::EINVAL));
    }
    let read = match &mut body {
        Body::Register(b) => copy_in(at).map(|v| *b = v),
        Body::PortInfo(b) => copy_in(at).map(|v| *b = v),
        Body::PortHdr(b) => copy_in(at).map(|v| *b = v),
    };
    if let Err(e) = read {
        return Some(Err(e));
    }
    let res = table::with(fd, |f| f.ctrl(&h, &mut body, attach))?;
    if res.is_err() {
        return Some(res);
    }
    let written = match &body {
        Body::Register(b) => copy_out(at, b),
        Body::PortInfo(b) => copy_out(at, b),
        Body::PortHdr(b) => copy_out(at, b),
    };
    // The port's interrupts wake a plain poll/epoll on the netmap descriptor too.
    table::with(fd, |f| {
        if let Some(n) = f.notify_fd() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            // SAFETY: adds one descriptor to our own epoll set; EEXIST on a repeat is
            // harmless.
            unsafe { real::epoll_ctl(fd, libc::EPOLL_CTL_ADD, n, &mut ev) };
        }
    });
    Some(written)
}

/// Attaches to a port through the daemon (`$PTNET_SOCKET` or the default socket), saying why
/// not on standard error: the application will only see an errno. A port its previous
/// client is still leaving (the daemon reclaims asynchronously: this process may have just
/// let go of it, after a request it then refused) is asked for again for up to 200 ms.
fn attach(req: PortRequest) -> Result<Port, ptnet_client::ClientError> {
    let name = req.port.clone();
    let mut tries = 0;
    loop {
        match Port::attach(&proto::socket_path(), req.clone()) {
            Err(ptnet_client::ClientError::Refused(m)) if m.contains("busy") && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            r => {
                return r.inspect_err(|e| {
                    eprintln!(
                        "libptnet-netmap: {name}: {}",
                        ptnet_client::proto::error_chain(e)
                    )
                });
            }
        }
    }
}

/// `mmap(2)`: of a registered netmap file, maps the port's region.
///
/// # Safety
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: libc::size_t,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: libc::c_int,
    offset: libc::off_t,
) -> *mut c_void {
    let fd = if table::is_netmap(fd) {
        match table::with(fd, |f| f.mmap_target(len, offset)) {
            Some(Ok(region)) => region,
            Some(Err(e)) => return fail(e, libc::MAP_FAILED),
            None => return fail(libc::EBADF, libc::MAP_FAILED),
        }
    } else {
        fd
    };
    // SAFETY: the application's arguments, with a netmap file's region in its place (which
    // stays open while the file is).
    unsafe { real::mmap(addr, len, prot, flags, fd, offset) }
}

/// `mmap64(2)`.
///
/// # Safety
/// As `mmap(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: libc::size_t,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: libc::c_int,
    offset: libc::off_t,
) -> *mut c_void {
    // SAFETY: the same call (off_t is 64 bits on the targets this builds for).
    unsafe { mmap(addr, len, prot, flags, fd, offset) }
}

/// `poll(2)`.
///
/// # Safety
/// As `poll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: libc::c_int,
) -> libc::c_int {
    // SAFETY: as poll(2): `fds` holds `nfds` entries.
    unsafe { poll_with(fds, nfds, timeout, |f, n, t| real::poll(f, n, t)) }
}

/// `__poll_chk`, what `poll` becomes under `_FORTIFY_SOURCE`.
///
/// # Safety
/// As `poll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: libc::c_int,
    _fdslen: libc::size_t,
) -> libc::c_int {
    // SAFETY: as poll(2).
    unsafe { poll(fds, nfds, timeout) }
}

/// `ppoll(2)`.
///
/// # Safety
/// As `ppoll(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> libc::c_int {
    let ms = if ts.is_null() {
        -1
    } else {
        // SAFETY: a non-null timeout points to a timespec (ppoll(2)).
        let t = unsafe { *ts };
        t.tv_sec
            .saturating_mul(1000)
            .saturating_add(t.tv_nsec / 1_000_000)
            .clamp(0, i32::MAX.into()) as i32
    };
    // SAFETY: as ppoll(2).
    unsafe {
        poll_with(fds, nfds, ms, |f, n, t| {
            if t < 0 {
                real::ppoll(f, n, ptr::null(), sigmask)
            } else {
                let ts = libc::timespec {
                    tv_sec: (t / 1000) as libc::time_t,
                    tv_nsec: ((t % 1000) * 1_000_000) as libc::c_long,
                };
                real::ppoll(f, n, &ts, sigmask)
            }
        })
    }
}

/// netmap's `poll` over the netmap files among `fds`, the real one over the rest: sync and
/// look; if nothing is ready and the caller may wait, arm the netmap files' interrupts and
/// wait on everything at once; then disarm, sync and look again.
///
/// # Safety
/// `fds` holds `nfds` entries (or `nfds` is 0).
unsafe fn poll_with(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: libc::c_int,
    wait: impl Fn(*mut libc::pollfd, libc::nfds_t, libc::c_int) -> libc::c_int,
) -> libc::c_int {
    let n = nfds as usize;
    if fds.is_null() || n == 0 {
        return wait(fds, nfds, timeout);
    }
    // SAFETY: the caller's array of `n` entries.
    let entries = unsafe { std::slice::from_raw_parts_mut(fds, n) };
    if !entries.iter().any(|p| table::is_netmap(p.fd)) {
        return wait(fds, nfds, timeout);
    }
    // Netmap files: sync and look.
    let look = |entries: &mut [libc::pollfd]| -> bool {
        let mut any = false;
        for p in entries.iter_mut().filter(|p| table::is_netmap(p.fd)) {
            p.revents = table::with(p.fd, |f| f.poll_events(p.events)).unwrap_or(libc::POLLNVAL);
            any |= p.revents != 0;
        }
        any
    };
    // The others, as the caller asked for them, with netmap files left out (fd -1). With
    // none and no waiting (the common case: one netmap file), no copy and no system call.
    let only_netmap = entries.iter().all(|p| table::is_netmap(p.fd));
    let others = |entries: &mut [libc::pollfd], t: libc::c_int| -> libc::c_int {
        if only_netmap && t == 0 {
            return 0;
        }
        let mut copy: Vec<libc::pollfd> = entries
            .iter()
            .map(|p| libc::pollfd {
                fd: if table::is_netmap(p.fd) { -1 } else { p.fd },
                events: p.events,
                revents: 0,
            })
            .collect();
        let r = wait(copy.as_mut_ptr(), copy.len() as libc::nfds_t, t);
        for (p, c) in entries.iter_mut().zip(&copy) {
            if !table::is_netmap(p.fd) {
                p.revents = if r < 0 { 0 } else { c.revents };
            }
        }
        r
    };
    let count = |entries: &[libc::pollfd]| entries.iter().filter(|p| p.revents != 0).count();

    if look(entries) || timeout == 0 {
        let r = others(entries, 0);
        return if r < 0 {
            r
        } else {
            count(entries) as libc::c_int
        };
    }
    // Arm, with the double check: a ring that became ready meanwhile needs no sleep.
    let mut ready = false;
    for p in entries.iter().filter(|p| table::is_netmap(p.fd)) {
        ready |= table::with(p.fd, |f| f.poll_arm(p.events)).unwrap_or(true);
    }
    let r = if ready {
        others(entries, 0)
    } else {
        // Sleep on everything: a netmap file's own descriptor (its epoll set of interrupt
        // eventfds) stands for it.
        let mut all: Vec<libc::pollfd> = entries
            .iter()
            .map(|p| libc::pollfd {
                fd: p.fd,
                events: if table::is_netmap(p.fd) {
                    libc::POLLIN
                } else {
                    p.events
                },
                revents: 0,
            })
            .collect();
        let r = wait(all.as_mut_ptr(), all.len() as libc::nfds_t, timeout);
        for (p, a) in entries.iter_mut().zip(&all) {
            if !table::is_netmap(p.fd) {
                p.revents = if r < 0 { 0 } else { a.revents };
            }
        }
        r
    };
    for p in entries.iter().filter(|p| table::is_netmap(p.fd)) {
        table::with(p.fd, |f| f.poll_disarm());
    }
    if r < 0 {
        return r;
    }
    look(entries);
    count(entries) as libc::c_int
}

/// `select(2)`: with a netmap file among the sets, served as `poll` over every descriptor
/// in them (netmap's `select` is its `poll`).
///
/// # Safety
/// As `select(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    nfds: libc::c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> libc::c_int {
    let n = nfds.clamp(0, libc::FD_SETSIZE as libc::c_int);
    // SAFETY: each set is null or an fd_set (select(2)); FD_ISSET reads within FD_SETSIZE.
    let is_set = |s: *mut libc::fd_set, fd: i32| !s.is_null() && unsafe { libc::FD_ISSET(fd, s) };
    let involved =
        (0..n).any(|fd| table::is_netmap(fd) && (is_set(r, fd) || is_set(w, fd) || is_set(e, fd)));
    if !involved {
        // SAFETY: the application's arguments, unchanged.
        return unsafe { real::select(nfds, r, w, e, timeout) };
    }
    let mut fds: Vec<libc::pollfd> = (0..n)
        .filter_map(|fd| {
            let mut events = 0;
            if is_set(r, fd) {
                events |= libc::POLLIN;
            }
            if is_set(w, fd) {
                events |= libc::POLLOUT;
            }
            if is_set(e, fd) {
                events |= libc::POLLPRI;
            }
            (events != 0).then_some(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        })
        .collect();
    let ms = if timeout.is_null() {
        -1
    } else {
        // SAFETY: a non-null timeout points to a timeval (select(2)).
        let t = unsafe { *timeout };
        t.tv_sec
            .saturating_mul(1000)
            .saturating_add(t.tv_usec / 1000)
            .clamp(0, i32::MAX.into()) as i32
    };
    // SAFETY: `fds` is our own array of `fds.len()` entries.
    let res = unsafe {
        poll_with(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ms,
            |f, k, t| real::poll(f, k, t),
        )
    };
    if res < 0 {
        return res;
    }
    let mut count = 0;
    for set in [r, w, e] {
        if !set.is_null() {
            // SAFETY: a set the application passed (select(2)).
            unsafe { libc::FD_ZERO(set) };
        }
    }
    for p in &fds {
        let hit = |set: *mut libc::fd_set, mask: i16| {
            if !set.is_null() && p.revents & mask != 0 {
                // SAFETY: as above; p.fd < FD_SETSIZE.
                unsafe { libc::FD_SET(p.fd, set) };
                1
            } else {
                0
            }
        };
        count += hit(r, libc::POLLIN | libc::POLLHUP | libc::POLLERR);
        count += hit(w, libc::POLLOUT | libc::POLLERR);
        count += hit(e, libc::POLLPRI);
    }
    count
}

/// `epoll_ctl(2)`: a netmap file added to an application's epoll set is remembered (what it
/// waits for, with what data); its own descriptor joins the set as well, so an interrupt
/// wakes the set.
///
/// # Safety
/// As `epoll_ctl(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_ctl(
    epfd: libc::c_int,
    op: libc::c_int,
    fd: libc::c_int,
    event: *mut libc::epoll_event,
) -> libc::c_int {
    if !table::is_netmap(fd) {
        // SAFETY: the application's arguments, unchanged.
        return unsafe { real::epoll_ctl(epfd, op, fd, event) };
    }
    let (events, data) = if event.is_null() {
        (0, 0)
    } else {
        // SAFETY: a non-null event points to an epoll_event (epoll_ctl(2)).
        let ev = unsafe { ptr::read_unaligned(event) };
        (ev.events, ev.u64)
    };
    let mut mine = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: data,
    };
    // SAFETY: our own event for the netmap file's descriptor.
    let r = unsafe { real::epoll_ctl(epfd, op, fd, &mut mine) };
    if r == 0 {
        table::epoll_ctl(epfd, op, table::EpollReg { fd, events, data });
    }
    r
}

/// `epoll_wait(2)`.
///
/// # Safety
/// As `epoll_wait(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: libc::c_int,
    events: *mut libc::epoll_event,
    maxevents: libc::c_int,
    timeout: libc::c_int,
) -> libc::c_int {
    // SAFETY: as epoll_wait(2).
    unsafe {
        epoll_with(epfd, events, maxevents, timeout, |ev, n, t| {
            real::epoll_wait(epfd, ev, n, t)
        })
    }
}

/// `epoll_pwait(2)`.
///
/// # Safety
/// As `epoll_pwait(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: libc::c_int,
    events: *mut libc::epoll_event,
    maxevents: libc::c_int,
    timeout: libc::c_int,
    sigmask: *const libc::sigset_t,
) -> libc::c_int {
    // SAFETY: as epoll_pwait(2).
    unsafe {
        epoll_with(epfd, events, maxevents, timeout, |ev, n, t| {
            real::epoll_pwait(epfd, ev, n, t, sigmask)
        })
    }
}

/// netmap's readiness for the netmap files in epoll set `epfd`, the kernel's for the rest:
/// as [`poll_with`], with the netmap files' own wake-ups (their descriptors in the set)
/// replaced by what their rings hold.
///
/// # Safety
/// `events` holds `maxevents` entries.
unsafe fn epoll_with(
    epfd: libc::c_int,
    events: *mut libc::epoll_event,
    maxevents: libc::c_int,
    timeout: libc::c_int,
    wait: impl Fn(*mut libc::epoll_event, libc::c_int, libc::c_int) -> libc::c_int,
) -> libc::c_int {
    if !table::epoll_has_netmap(epfd) || events.is_null() || maxevents <= 0 {
        return wait(events, maxevents, timeout);
    }
    let max = maxevents as usize;
    let regs = table::epoll_regs(epfd);
    let mask = |ev: u32| -> i16 {
        let mut p = 0;
        if ev & libc::EPOLLIN as u32 != 0 {
            p |= libc::POLLIN;
        }
        if ev & libc::EPOLLOUT as u32 != 0 {
            p |= libc::POLLOUT;
        }
        p
    };
    let ready = |regs: &[table::EpollReg]| -> Vec<libc::epoll_event> {
        regs.iter()
            .filter_map(|r| {
                let rev = table::with(r.fd, |f| f.poll_events(mask(r.events)))?;
                let mut ev = 0u32;
                if rev & libc::POLLIN != 0 {
                    ev |= libc::EPOLLIN as u32;
                }
                if rev & libc::POLLOUT != 0 {
                    ev |= libc::EPOLLOUT as u32;
                }
                if rev & libc::POLLERR != 0 {
                    ev |= libc::EPOLLERR as u32;
                }
                (ev != 0).then_some(libc::epoll_event {
                    events: ev,
                    u64: r.data,
                })
            })
            .collect()
    };
    // The kernel's events for the rest, without the netmap files' own wake-ups.
    let others = |t: libc::c_int, out: &mut Vec<libc::epoll_event>| -> libc::c_int {
        let mut buf = vec![libc::epoll_event { events: 0, u64: 0 }; max];
        let r = wait(buf.as_mut_ptr(), max as libc::c_int, t);
        if r > 0 {
            for ev in &buf[..r as usize] {
                let data = ev.u64;
                if !regs.iter().any(|g| g.data == data) && out.len() < max {
                    out.push(*ev);
                }
            }
        }
        r
    };
    let deadline = (timeout >= 0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout as u64));
    loop {
        let mut out = ready(&regs);
        out.truncate(max);
        let left = deadline.map_or(-1, |d| {
            d.saturating_duration_since(std::time::Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32
        });
        let r = if !out.is_empty() || left == 0 {
            others(0, &mut out)
        } else {
            let mut armed_ready = false;
            for g in &regs {
                armed_ready |= table::with(g.fd, |f| f.poll_arm(mask(g.events))).unwrap_or(true);
            }
            let r = others(if armed_ready { 0 } else { left }, &mut out);
            for g in &regs {
                table::with(g.fd, |f| f.poll_disarm());
            }
            for ev in ready(&regs) {
                if out.len() < max {
                    out.push(ev);
                }
            }
            r
        };
        if r < 0 {
            return r;
        }
        if !out.is_empty() || left == 0 {
            // SAFETY: `events` holds `maxevents` entries; `out` has at most that many.
            unsafe { ptr::copy_nonoverlapping(out.as_ptr(), events, out.len()) };
            return out.len() as libc::c_int;
        }
        // Woken by a netmap file's interrupt with nothing for the application yet (another
        // ring's): wait again until the deadline.
    }
}

/// After a duplicate `new` of `old` was made: a netmap file's duplicate is the same netmap
/// file (a duplicate over an existing netmap descriptor replaced it).
fn duplicated(old: libc::c_int, new: libc::c_int) -> libc::c_int {
    if new >= 0 && new != old {
        if table::is_netmap(new) {
            table::epoll_forget(new);
            drop(table::remove(new));
        }
        if table::is_netmap(old) && !table::insert_dup(new, old) {
            // SAFETY: our own fresh duplicate, never handed out.
            unsafe { real::close(new) };
            return fail(libc::EMFILE, -1);
        }
    }
    new
}

/// `dup(2)`.
///
/// # Safety
/// As `dup(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: libc::c_int) -> libc::c_int {
    // SAFETY: the application's argument.
    let new = unsafe { real::dup(fd) };
    duplicated(fd, new)
}

/// `dup2(2)`.
///
/// # Safety
/// As `dup2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(fd: libc::c_int, new: libc::c_int) -> libc::c_int {
    // SAFETY: the application's arguments.
    let new = unsafe { real::dup2(fd, new) };
    duplicated(fd, new)
}

/// `dup3(2)`.
///
/// # Safety
/// As `dup3(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(
    fd: libc::c_int,
    new: libc::c_int,
    flags: libc::c_int,
) -> libc::c_int {
    // SAFETY: the application's arguments.
    let new = unsafe { real::dup3(fd, new, flags) };
    duplicated(fd, new)
}

/// An `fcntl`-like interposer: `F_DUPFD` and `F_DUPFD_CLOEXEC` of a netmap file make a
/// duplicate of it; everything else is the C library's.
macro_rules! fcntl_like {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// As the C library's function of that name.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            fd: libc::c_int,
            cmd: libc::c_int,
            arg: libc::c_long,
        ) -> libc::c_int {
            // SAFETY: the application's arguments, unchanged.
            let r = unsafe { real::$name(fd, cmd, arg) };
            if (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) && table::is_netmap(fd) {
                return duplicated(fd, r);
            }
            r
        }
    };
}

fcntl_like!(
    /// `fcntl(2)`.
    fcntl
);
fcntl_like!(
    /// `fcntl64(2)`.
    fcntl64
);
