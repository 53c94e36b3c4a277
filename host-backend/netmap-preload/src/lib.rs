//! ptnet-netmap: `/dev/netmap` for unmodified netmap applications on the host, served by
//! ptnetd, with no netmap kernel module.
//!
//! Built as `libptnet_netmap.so` and loaded with `LD_PRELOAD`, it answers the calls a
//! dynamically linked netmap application makes on `/dev/netmap`: `open` gives a descriptor of
//! its own, `ioctl(NIOCCTRL)` registers a port by attaching to it over ptnetd's control socket
//! (`$PTNET_SOCKET`, or the default), `mmap` maps the port's region itself (so the
//! application's view is byte for byte netmap's), `NIOCTXSYNC`/`NIOCRXSYNC` and `poll` sync
//! the rings through the port's CSB exactly as a ptnet guest driver does, and `close` lets go
//! of the port. Every other descriptor and call goes straight to the C library.
//!
//! * [`nmfile`]: one open `/dev/netmap` and the requests it serves (safe Rust, unit tested
//!   and fuzzed);
//! * `real`: the C library's own functions, found with `dlsym(RTLD_NEXT)`;
//! * `table`: which descriptors are netmap files, checked without a lock;
//! * `interpose`: the exported `open`, `close`, `ioctl`, `mmap` and `poll` (feature
//!   `interpose`, on by default).

pub mod nmfile;

#[cfg(feature = "interpose")]
mod interpose;
#[cfg(feature = "interpose")]
mod real;
#[cfg(feature = "interpose")]
mod table;

pub use nmfile::{Body, Errno, NmFile};
