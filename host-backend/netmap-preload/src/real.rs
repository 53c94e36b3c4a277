//! The C library's own `open`, `close`, `ioctl`, `mmap` and `poll`, found once with
//! `dlsym(RTLD_NEXT)`: what the interposer calls for every descriptor that is not a netmap
//! file, and for the real work behind the ones that are.

use std::ffi::{CStr, c_void};
use std::sync::OnceLock;

/// A function of the next object in the lookup order (the C library), as an address.
fn next(name: &CStr) -> usize {
    // SAFETY: dlsym with a valid NUL-terminated name; RTLD_NEXT searches the objects loaded
    // after this one.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if f.is_null() {
        // Nothing sensible is left to do in an application that has no C library.
        std::process::abort();
    }
    f as usize
}

macro_rules! real_fn {
    // A variadic C function: `fixed` are its declared parameters, `extra` the one optional
    // argument passed on (the C library's callers pass it the same way).
    ($(#[$m:meta])* $name:ident, $sym:literal, fn($($a:ident: $t:ty),*; $x:ident: $xt:ty) -> $r:ty) => {
        $(#[$m])*
        pub unsafe fn $name($($a: $t,)* $x: $xt) -> $r {
            static F: OnceLock<usize> = OnceLock::new();
            let f = *F.get_or_init(|| next($sym));
            // SAFETY: `f` is the C library's variadic function of that name, whose fixed
            // parameters these are; the optional argument has the type it reads.
            unsafe {
                let f: unsafe extern "C" fn($($t),*, ...) -> $r = std::mem::transmute(f);
                f($($a),*, $x)
            }
        }
    };
    ($(#[$m:meta])* $name:ident, $sym:literal, fn($($a:ident: $t:ty),*) -> $r:ty) => {
        $(#[$m])*
        pub unsafe fn $name($($a: $t),*) -> $r {
            static F: OnceLock<usize> = OnceLock::new();
            let f = *F.get_or_init(|| next($sym));
            // SAFETY: `f` is the C library's function of that name, whose C signature this
            // is.
            unsafe {
                let f: unsafe extern "C" fn($($t),*) -> $r = std::mem::transmute(f);
                f($($a),*)
            }
        }
    };
}

real_fn!(
    /// `open(path, flags, mode)`.
    open, c"open", fn(path: *const libc::c_char, flags: libc::c_int; mode: libc::c_uint) -> libc::c_int
);
real_fn!(
    /// `open64(path, flags, mode)`.
    open64, c"open64", fn(path: *const libc::c_char, flags: libc::c_int; mode: libc::c_uint) -> libc::c_int
);
real_fn!(
    /// `openat(dirfd, path, flags, mode)`.
    openat, c"openat", fn(dirfd: libc::c_int, path: *const libc::c_char, flags: libc::c_int; mode: libc::c_uint) -> libc::c_int
);
real_fn!(
    /// `openat64(dirfd, path, flags, mode)`.
    openat64, c"openat64", fn(dirfd: libc::c_int, path: *const libc::c_char, flags: libc::c_int; mode: libc::c_uint) -> libc::c_int
);
real_fn!(
    /// `close(fd)`.
    close, c"close", fn(fd: libc::c_int) -> libc::c_int
);
real_fn!(
    /// `ioctl(fd, request, arg)`.
    ioctl, c"ioctl", fn(fd: libc::c_int, request: libc::c_ulong; arg: *mut c_void) -> libc::c_int
);
real_fn!(
    /// `mmap(addr, len, prot, flags, fd, offset)`.
    mmap, c"mmap", fn(addr: *mut c_void, len: libc::size_t, prot: libc::c_int, flags: libc::c_int, fd: libc::c_int, offset: libc::off_t) -> *mut c_void
);
real_fn!(
    /// `poll(fds, nfds, timeout)`.
    poll, c"poll", fn(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: libc::c_int) -> libc::c_int
);
real_fn!(
    /// `ppoll(fds, nfds, timeout, sigmask)`.
    ppoll, c"ppoll", fn(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: *const libc::timespec, sigmask: *const libc::sigset_t) -> libc::c_int
);
real_fn!(
    /// `select(nfds, readfds, writefds, exceptfds, timeout)`.
    select, c"select", fn(nfds: libc::c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *mut libc::timeval) -> libc::c_int
);
real_fn!(
    /// `epoll_ctl(epfd, op, fd, event)`.
    epoll_ctl, c"epoll_ctl", fn(epfd: libc::c_int, op: libc::c_int, fd: libc::c_int, event: *mut libc::epoll_event) -> libc::c_int
);
real_fn!(
    /// `epoll_wait(epfd, events, maxevents, timeout)`.
    epoll_wait, c"epoll_wait", fn(epfd: libc::c_int, events: *mut libc::epoll_event, maxevents: libc::c_int, timeout: libc::c_int) -> libc::c_int
);
real_fn!(
    /// `epoll_pwait(epfd, events, maxevents, timeout, sigmask)`.
    epoll_pwait, c"epoll_pwait", fn(epfd: libc::c_int, events: *mut libc::epoll_event, maxevents: libc::c_int, timeout: libc::c_int, sigmask: *const libc::sigset_t) -> libc::c_int
);
real_fn!(
    /// `dup(fd)`.
    dup, c"dup", fn(fd: libc::c_int) -> libc::c_int
);
real_fn!(
    /// `dup2(fd, new)`.
    dup2, c"dup2", fn(fd: libc::c_int, new: libc::c_int) -> libc::c_int
);
real_fn!(
    /// `dup3(fd, new, flags)`.
    dup3, c"dup3", fn(fd: libc::c_int, new: libc::c_int, flags: libc::c_int) -> libc::c_int
);
real_fn!(
    /// `fcntl(fd, cmd, arg)`.
    fcntl, c"fcntl", fn(fd: libc::c_int, cmd: libc::c_int; arg: libc::c_long) -> libc::c_int
);
real_fn!(
    /// `fcntl64(fd, cmd, arg)`.
    fcntl64, c"fcntl64", fn(fd: libc::c_int, cmd: libc::c_int; arg: libc::c_long) -> libc::c_int
);
