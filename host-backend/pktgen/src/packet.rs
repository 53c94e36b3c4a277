//! The AF_PACKET backend: a Linux network interface driven through a raw packet socket, so
//! that the same tool measures a guest with a stock NIC (virtio-net) as it measures ptnet.
//!
//! `-i packet:eth0` opens an `AF_PACKET`/`SOCK_RAW` socket, looks the interface up by name
//! (`SIOCGIFINDEX`, `SIOCGIFFLAGS`, `SIOCGIFMTU`, `SIOCGIFHWADDR`: no NSS, so the static
//! guest binary is fine), sets `PACKET_QDISC_BYPASS` (frames go straight to the driver's
//! transmit routine, as a netmap TX ring's do) and `PACKET_IGNORE_OUTGOING`, and binds to the
//! interface by index for pktgen's EtherType 0x88B5 (every EtherType for `fwd`). Promiscuous
//! mode is not set: frames must be addressed to the interface's own MAC or be broadcast, which
//! is why packet ports default to the interface's MAC as source and broadcast as destination
//! (`--dst-mac` sends unicast to a peer's address).
//!
//! The [`Backend`] ring model maps onto socket batches: the port has one TX and one RX
//! *pseudo ring* whose slots are a preallocated buffer ([`Slots`]), with netmap's indices.
//! `tx_batch` fills slots at `head`; `txsync` hands `[hwcur, head)` to one `sendmmsg` (two
//! when the range wraps) and advances `hwcur` by what the kernel took. `rxsync` gives the
//! consumed slots back and fills the free ones with one `recvmmsg` (two when they wrap);
//! `rx_batch` reads them at `head`. `wait` is `poll()` on the socket. Nothing here makes a
//! system call or allocates per packet. The system calls sit behind [`Sock`], so the ring
//! logic runs against a fake socket in the unit tests.
//!
//! # Why `sendmmsg`/`recvmmsg` and not TPACKET rings
//!
//! Both give one system call per batch. With `PACKET_QDISC_BYPASS` both end in one skb and
//! one `ndo_start_xmit` per frame, and for frames of a few hundred bytes `tpacket_snd` copies
//! as `sendmmsg` does; a TPACKET_V3 RX ring saves the one copy per received frame that
//! `recvmmsg` makes. What the rings cost is a second structure shared with the kernel (frame
//! status words to validate, a frame size fixed when the socket is set up, a block timeout
//! that delays a half-empty RX block) and a `send` kick whose outcome is per ring rather than
//! per frame. `sendmmsg` reports how many frames the kernel took and why it stopped
//! (`EAGAIN`: socket buffer full; `ENOBUFS`: the driver's queue is full), which is exactly
//! txsync's "room"; the slots are the batch. The baseline this backend exists for is the
//! guest's NIC and kernel path, which both APIs share; the copy on RX is the price, and it
//! is the same for every interface measured.
//!
//! # Backpressure
//!
//! `EAGAIN` (the socket's send buffer is full of frames the driver has not completed) leaves
//! the frames queued and `wait(Tx)` polls for `POLLOUT`. `ENOBUFS` (the driver's queue is
//! stopped; with the qdisc bypassed nothing holds the frame and nothing signals when the
//! queue restarts) also leaves them queued, and `wait(Tx)` sleeps [`TX_BUSY_BACKOFF`] before
//! trying again: a bounded back-off, not a spin. A frame the kernel refuses as such
//! (`EMSGSIZE`, `EINVAL`) is dropped, counted and logged once; any other error (the
//! interface went down) is returned by the next `wait`, which ends the run.

use std::fmt;
use std::io;
use std::mem;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use ptnet_spec::netmap::NetmapSlot;
use ptnet_spec::ring::{distance, nm_add, nm_next, nm_prev};

use crate::backend::{AttachOptions, Backend, Geometry, Want, poll_timeout};
use crate::payload::{ETHERTYPE, MAX_FRAME, Mac};

/// Bytes of Ethernet header the kernel adds to the MTU for the largest frame.
pub const ETH_HLEN: usize = 14;
/// An 802.1Q tag a received frame may still carry.
const VLAN_HLEN: usize = 4;
/// Most slots of a pseudo ring (netmap's default ring size).
pub const MAX_SLOTS: u32 = 1024;
/// Fewest slots of a pseudo ring (jumbo MTUs get fewer, larger slots).
const MIN_SLOTS: u32 = 64;
/// Bytes of buffer each pseudo ring aims at: 1024 slots of 1536 bytes at MTU 1500.
const RING_BYTES: usize = 4 << 20;
/// Socket send and receive buffer asked for: room for several batches of frames the driver
/// has not completed (TX) or the receiver has not read yet (RX); the defaults (about 200 KiB)
/// hold only a few hundred small frames.
const SOCKET_BUFFER: libc::c_int = 16 << 20;
/// How long `wait(Tx)` sleeps when the driver's queue was full (`ENOBUFS`).
pub const TX_BUSY_BACKOFF: Duration = Duration::from_micros(50);

// <linux/if_packet.h> and <asm-generic/socket.h>; not exported by the libc crate for glibc.
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SO_SNDBUFFORCE: libc::c_int = 32;
const SO_RCVBUFFORCE: libc::c_int = 33;

/// Why a packet port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The name is not `packet:IFNAME` with a usable `IFNAME`.
    #[error("{0:?} is not a packet port name (packet:IFNAME, IFNAME of 1 to 15 bytes)")]
    Name(String),
    /// socket() refused: not root and no CAP_NET_RAW.
    #[error("cannot open an AF_PACKET socket: run as root or with CAP_NET_RAW")]
    Permission(#[source] io::Error),
    /// socket() failed otherwise.
    #[error("cannot open an AF_PACKET socket")]
    Socket(#[source] io::Error),
    /// No such interface (in this network namespace).
    #[error("no network interface {0} (see `ip link`)")]
    NoInterface(String),
    /// The interface is administratively down.
    #[error("interface {0} is down (ip link set {0} up)")]
    Down(String),
    /// The interface does not carry Ethernet frames.
    #[error("interface {ifname} is not an Ethernet interface (hardware type {hw_type})")]
    NotEthernet {
        /// Interface.
        ifname: String,
        /// Its ARPHRD_* type.
        hw_type: u16,
    },
    /// An interface query failed.
    #[error("{what} of {ifname} failed")]
    Query {
        /// The ioctl.
        what: &'static str,
        /// Interface.
        ifname: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// A socket option the backend needs could not be set.
    #[error("setsockopt {what} failed")]
    Option {
        /// The option.
        what: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// bind() to the interface failed.
    #[error("cannot bind to {ifname}")]
    Bind {
        /// Interface.
        ifname: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

/// The prefix of port names served by the AF_PACKET backend (`-i packet:eth0`); the rest is
/// a Linux interface name.
pub const PACKET_PREFIX: &str = "packet:";
/// What the AF_PACKET backend attaches "through", in its messages.
pub const PACKET_SOCKET: &str = "AF_PACKET";

/// The interface name of a `packet:IFNAME` port name (Linux's `dev_valid_name` rules).
pub fn ifname(port: &str) -> Result<&str, PacketError> {
    port.strip_prefix(PACKET_PREFIX)
        .filter(|n| {
            !n.is_empty()
                && n.len() < libc::IFNAMSIZ
                && *n != "."
                && *n != ".."
                && !n.contains(['/', ':', '\0'])
                && !n.chars().any(char::is_whitespace)
        })
        .ok_or_else(|| PacketError::Name(port.to_owned()))
}

/// What the backend knows of the interface it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface name.
    pub ifname: String,
    /// Interface index (the socket is bound to it).
    pub ifindex: i32,
    /// MTU.
    pub mtu: u32,
    /// The interface's own MAC address.
    pub mac: Mac,
}

impl Link {
    /// Largest frame the interface sends: MTU plus the Ethernet header (the kernel refuses
    /// longer ones with `EMSGSIZE`).
    pub fn max_frame(&self) -> usize {
        (self.mtu as usize + ETH_HLEN).min(MAX_FRAME)
    }

    /// Slot size: the largest frame plus a VLAN tag, rounded up to a cache line.
    pub fn buf_size(&self) -> usize {
        (self.max_frame() + VLAN_HLEN).next_multiple_of(64)
    }

    /// Slots per pseudo ring: about 4 MiB of buffers, from 64 (jumbo MTUs) to
    /// [`MAX_SLOTS`].
    pub fn slots(&self) -> u32 {
        let n = RING_BYTES / self.buf_size();
        (n.min(MAX_SLOTS as usize) as u32).max(MIN_SLOTS)
    }
}

/// `n` frame buffers of `size` bytes with the `iovec` and `mmsghdr` of each, built once: a
/// batch for `sendmmsg`/`recvmmsg` is a range of them.
///
/// Invariant: `iovs[i]` points at slot `i`'s buffer (`iov_len` at most `size`) and
/// `msgs[i]` is an otherwise empty `msghdr` whose one iovec is `iovs[i]`. The three vectors
/// are never resized, and `bufs` and `iovs` are written only through `as_mut_ptr`, which
/// creates no reference to their elements, so the pointers stored in `iovs` and `msgs` stay
/// valid as long as the `Slots` lives (`Vec::as_mut_ptr`'s aliasing guarantee).
pub struct Slots {
    n: u32,
    size: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots")
            .field("n", &self.n)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Slots {
    /// `n` slots of `size` bytes (both at least 1).
    pub fn new(n: u32, size: usize) -> Self {
        let (n, size) = (n.max(1), size.max(1));
        let mut bufs = vec![0u8; n as usize * size];
        let base = bufs.as_mut_ptr();
        let mut iovs: Vec<libc::iovec> = (0..n as usize)
            .map(|i| libc::iovec {
                iov_base: base.wrapping_add(i * size).cast(),
                iov_len: size,
            })
            .collect();
        let iov = iovs.as_mut_ptr();
        let msgs = (0..n as usize)
            .map(|i| {
                // SAFETY: mmsghdr is plain data (pointers, lengths, flags): all zeroes is an
                // empty header with no name and no control data.
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = iov.wrapping_add(i);
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        Slots {
            n,
            size,
            bufs,
            iovs,
            msgs,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> u32 {
        self.n
    }

    /// Whether there are no slots (never: at least one).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes per slot.
    pub fn size(&self) -> usize {
        self.size
    }

    fn check(&self, i: u32) -> usize {
        // PANIC: callers index with ring indices, below n by the ring invariant; a bad index
        // is a bug here, and must not become an access outside the buffers.
        assert!(i < self.n, "slot {i} of {}", self.n);
        i as usize
    }

    /// The whole buffer of slot `i`.
    pub fn buf_mut(&mut self, i: u32) -> &mut [u8] {
        let i = self.check(i);
        // SAFETY: i < n, so [i * size, (i + 1) * size) lies inside bufs' n * size initialized
        // bytes; &mut self makes this the only access to them until the slice is dropped (no
        // system call is in progress outside a method borrowing self).
        unsafe {
            std::slice::from_raw_parts_mut(self.bufs.as_mut_ptr().add(i * self.size), self.size)
        }
    }

    /// The whole buffer of slot `i`, read-only.
    pub fn buf(&self, i: u32) -> &[u8] {
        let i = self.check(i);
        &self.bufs[i * self.size..(i + 1) * self.size]
    }

    /// Sets the length of the frame in slot `i` (what `sendmmsg` sends), at most the slot.
    pub fn set_frame_len(&mut self, i: u32, len: usize) {
        let i = self.check(i);
        // SAFETY: i < n = iovs.len(); written through the vector's pointer, which creates no
        // reference to iovs' elements (the Slots invariant).
        unsafe { (*self.iovs.as_mut_ptr().add(i)).iov_len = len.min(self.size) };
    }

    /// The frame in slot `i`: its first `iov_len` bytes.
    pub fn frame(&self, i: u32) -> &[u8] {
        let len = self.iovs[self.check(i)].iov_len;
        &self.buf(i)[..len]
    }

    /// `msg_len` of slot `i`: bytes received (with `MSG_TRUNC`, the frame's whole length,
    /// which may exceed the slot) or sent by the last call that covered it.
    pub fn msg_len(&self, i: u32) -> u32 {
        self.msgs[self.check(i)].msg_len
    }

    /// Sets `msg_len` of slot `i`, as the kernel does (for fake sockets).
    pub fn set_msg_len(&mut self, i: u32, len: u32) {
        let i = self.check(i);
        self.msgs[i].msg_len = len;
    }

    /// The headers of the slots in `range`, for one `sendmmsg`/`recvmmsg`: a pointer to the
    /// first and their number.
    fn msgs(&mut self, range: Range<u32>) -> (*mut libc::mmsghdr, libc::c_uint) {
        // PANIC: as in check(): ranges come from ring indices.
        assert!(range.start <= range.end && range.end <= self.n, "{range:?}");
        let first = self.msgs.as_mut_ptr().wrapping_add(range.start as usize);
        (first, range.end - range.start)
    }
}

/// The system calls of the backend on its socket.
pub trait Sock: Sized {
    /// Opens a socket bound to the interface `opts.port` names (every EtherType if
    /// `opts.all_ethertypes`, else pktgen's).
    fn open(opts: &AttachOptions) -> Result<(Self, Link), PacketError>;
    /// `sendmmsg` of the frames in `range` of `slots`, without blocking: how many the
    /// kernel took.
    fn send(&mut self, slots: &mut Slots, range: Range<u32>) -> io::Result<usize>;
    /// `recvmmsg` into the slots in `range`, without blocking: how many frames arrived (each
    /// slot's `msg_len` set).
    fn recv(&mut self, slots: &mut Slots, range: Range<u32>) -> io::Result<usize>;
    /// `poll()` for `events` for up to `timeout_ms` (-1: no limit); returns `revents`.
    fn poll(&mut self, events: i16, timeout_ms: i32) -> io::Result<i16>;
    /// The socket's pending error (`SO_ERROR`), after `poll` reported `POLLERR`.
    fn take_error(&mut self) -> io::Error;
}

/// An `AF_PACKET` socket bound to one interface.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    fn ifreq(
        &self,
        what: &'static str,
        req: libc::c_ulong,
        ifname: &str,
    ) -> Result<libc::ifreq, PacketError> {
        // SAFETY: ifreq is plain data (a name and a union of integers, addresses and a
        // pointer): all zeroes is valid.
        let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: the SIOCGIF* requests used here read ifr_name (NUL-terminated: the name is
        // shorter than IFNAMSIZ) and write one member of ifr_ifru, all inside ifr, which lives
        // across the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req as _, &raw mut ifr) };
        if rc < 0 {
            let source = io::Error::last_os_error();
            return Err(if source.raw_os_error() == Some(libc::ENODEV) {
                PacketError::NoInterface(ifname.to_owned())
            } else {
                PacketError::Query {
                    what,
                    ifname: ifname.to_owned(),
                    source,
                }
            });
        }
        Ok(ifr)
    }

    fn set_int(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: passes a pointer to an int and its size; the kernel reads it during the
        // call only.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Asks for `SOCKET_BUFFER` bytes of buffer `what`: beyond the system's limit when
    /// privileged (`*BUFFORCE`), else up to it.
    fn set_buffer(&self, force: libc::c_int, plain: libc::c_int, what: &str) {
        if self
            .set_int(libc::SOL_SOCKET, force, SOCKET_BUFFER)
            .is_err()
        {
            if let Err(e) = self.set_int(libc::SOL_SOCKET, plain, SOCKET_BUFFER) {
                log::warn!("cannot set the socket's {what} buffer: {e}");
            }
        }
    }
}

impl Sock for Socket {
    fn open(opts: &AttachOptions) -> Result<(Self, Link), PacketError> {
        let name = ifname(&opts.port)?;
        // Protocol 0 until bind: the socket receives nothing before it is bound to the
        // interface.
        // SAFETY: socket() takes no pointers.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => PacketError::Permission(e),
                _ => PacketError::Socket(e),
            });
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = Socket { fd };
        let ifr = sock.ifreq("SIOCGIFINDEX", libc::SIOCGIFINDEX, name)?;
        // SAFETY: SIOCGIFINDEX filled ifru_ifindex (and the union is initialized anyway).
        let ifindex = unsafe { ifr.ifr_ifru.ifru_ifindex };
        let ifr = sock.ifreq("SIOCGIFFLAGS", libc::SIOCGIFFLAGS, name)?;
        // SAFETY: SIOCGIFFLAGS filled ifru_flags.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        if flags as libc::c_int & libc::IFF_UP == 0 {
            return Err(PacketError::Down(name.to_owned()));
        }
        let ifr = sock.ifreq("SIOCGIFMTU", libc::SIOCGIFMTU, name)?;
        // SAFETY: SIOCGIFMTU filled ifru_mtu.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu }.max(0) as u32;
        let ifr = sock.ifreq("SIOCGIFHWADDR", libc::SIOCGIFHWADDR, name)?;
        // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr (family ARPHRD_*, address in sa_data).
        let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        if !matches!(hw.sa_family, libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK) {
            return Err(PacketError::NotEthernet {
                ifname: name.to_owned(),
                hw_type: hw.sa_family,
            });
        }
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(hw.sa_data) {
            *m = b as u8;
        }
        sock.set_int(libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            .map_err(|source| PacketError::Option {
                what: "PACKET_QDISC_BYPASS",
                source,
            })?;
        // Frames other programs send on the interface are not ours to count (Linux 4.20+;
        // our own never come back: the qdisc bypass skips the taps).
        if let Err(e) = sock.set_int(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1) {
            log::warn!(
                "{name}: PACKET_IGNORE_OUTGOING: {e}: frames others send on it are received too"
            );
        }
        sock.set_buffer(SO_SNDBUFFORCE, libc::SO_SNDBUF, "send");
        sock.set_buffer(SO_RCVBUFFORCE, libc::SO_RCVBUF, "receive");
        let proto = if opts.all_ethertypes {
            libc::ETH_P_ALL as u16
        } else {
            ETHERTYPE
        };
        // SAFETY: sockaddr_ll is plain data: all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: a pointer to a sockaddr_ll and its size, read during the call only.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&raw const sll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(PacketError::Bind {
                ifname: name.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        let link = Link {
            ifname: name.to_owned(),
            ifindex,
            mtu,
            mac,
        };
        log::info!(
            "{}: AF_PACKET on {name} (index {ifindex}, MTU {mtu}, {}), EtherType {proto:#06x}",
            opts.port,
            crate::payload::format_mac(&mac)
        );
        Ok((sock, link))
    }

    fn send(&mut self, slots: &mut Slots, range: Range<u32>) -> io::Result<usize> {
        let (msgs, n) = slots.msgs(range);
        // SAFETY: by the Slots invariant the n headers from msgs are valid msghdrs, each with
        // one iovec pointing at iov_len bytes inside the slot buffers; `slots` is borrowed
        // mutably for the call, so nothing else reads or writes them meanwhile.
        let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs, n, libc::MSG_DONTWAIT) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    fn recv(&mut self, slots: &mut Slots, range: Range<u32>) -> io::Result<usize> {
        let (msgs, n) = slots.msgs(range);
        // SAFETY: as in send(); the kernel writes at most iov_len (the slot size) bytes into
        // each buffer, and msg_len/msg_flags into each header. No timeout pointer.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs,
                n,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }

    fn poll(&mut self, events: i16, timeout_ms: i32) -> io::Result<i16> {
        ptnet_datapath::sys::poll_one(&self.fd, events, timeout_ms)
    }

    fn take_error(&mut self) -> io::Error {
        let mut err: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: pointers to an int and its length, written during the call only.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut err).cast(),
                &mut len,
            )
        };
        match (rc, err) {
            (r, _) if r < 0 => io::Error::last_os_error(),
            (_, 0) => io::Error::other("poll() reported POLLERR without a socket error"),
            (_, e) => io::Error::from_raw_os_error(e),
        }
    }
}

/// Counters of frames the backend dropped or cut, logged once each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Frames the kernel refused to send (`EMSGSIZE`, `EINVAL`), dropped.
    pub tx_rejected: u64,
    /// Received frames longer than a slot, cut to the slot.
    pub rx_truncated: u64,
}

/// A network interface driven through an AF_PACKET socket, as one TX and one RX ring.
#[derive(Debug)]
pub struct PacketPort<S: Sock = Socket> {
    name: String,
    link: Link,
    sock: S,
    busy_poll: bool,
    tx: Slots,
    /// Next TX slot the application fills.
    tx_head: u32,
    /// Next TX slot to hand to the kernel: `[tx_hwcur, tx_head)` is queued.
    tx_hwcur: u32,
    /// The driver's queue was full at the last send (`ENOBUFS`).
    tx_busy: bool,
    rx: Slots,
    /// Next RX slot the application reads.
    rx_head: u32,
    /// Next RX slot the kernel fills: `[rx_head, rx_hwtail)` is pending.
    rx_hwtail: u32,
    /// An error of a send or receive, returned by the next `wait`.
    error: Option<io::Error>,
    drops: Drops,
}

impl<S: Sock> PacketPort<S> {
    /// A port named `name` on interface `link` through `sock`. With `busy_poll`, the loops
    /// spin on txsync/rxsync instead of sleeping in poll().
    pub fn new(name: String, link: Link, sock: S, busy_poll: bool) -> Self {
        let (n, size) = (link.slots(), link.buf_size());
        PacketPort {
            name,
            sock,
            busy_poll,
            tx: Slots::new(n, size),
            tx_head: 0,
            tx_hwcur: 0,
            tx_busy: false,
            rx: Slots::new(n, size),
            rx_head: 0,
            rx_hwtail: 0,
            error: None,
            drops: Drops::default(),
            link,
        }
    }

    /// The interface.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The socket.
    pub fn sock(&mut self) -> &mut S {
        &mut self.sock
    }

    /// Frames dropped or cut so far.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Frames queued in the TX ring, not yet taken by the kernel.
    pub fn tx_queued(&self) -> u32 {
        distance(self.tx_hwcur, self.tx_head, self.tx.len())
    }

    fn fail(&mut self, what: &str, e: io::Error) {
        if self.error.is_none() {
            log::warn!("{}: {what} failed: {e}", self.name);
        }
        self.error = Some(e);
    }

    /// Hands `[hwcur, head)` to the kernel, one `sendmmsg` per contiguous range.
    fn send_queued(&mut self) {
        let n = self.tx.len();
        while self.tx_hwcur != self.tx_head {
            let end = if self.tx_head > self.tx_hwcur {
                self.tx_head
            } else {
                n
            };
            let want = end - self.tx_hwcur;
            match self.sock.send(&mut self.tx, self.tx_hwcur..end) {
                Ok(k) => {
                    self.tx_busy = false;
                    let k = (k as u32).min(want);
                    self.tx_hwcur = nm_add(self.tx_hwcur, k, n);
                    if k == 0 {
                        break;
                    }
                    // Fewer than asked: the next call says why (EAGAIN, ENOBUFS, ...).
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => {
                        self.tx_busy = false;
                        break;
                    }
                    Some(libc::ENOBUFS) => {
                        self.tx_busy = true;
                        break;
                    }
                    Some(libc::EMSGSIZE | libc::EINVAL) => {
                        let len = self.tx.frame(self.tx_hwcur).len();
                        if self.drops.tx_rejected == 0 {
                            log::warn!(
                                "{}: the kernel refused a {len}-byte frame ({e}); dropped \
                                 (later ones are only counted)",
                                self.name
                            );
                        }
                        self.drops.tx_rejected += 1;
                        self.tx_hwcur = nm_next(self.tx_hwcur, n);
                    }
                    _ => {
                        self.fail("sendmmsg", e);
                        break;
                    }
                },
            }
        }
    }

    /// Fills the free RX slots `[hwtail, head - 1)`, one `recvmmsg` per contiguous range.
    fn receive(&mut self) {
        let n = self.rx.len();
        loop {
            let free = distance(self.rx_hwtail, nm_prev(self.rx_head, n), n);
            let want = free.min(n - self.rx_hwtail);
            if want == 0 {
                return;
            }
            let range = self.rx_hwtail..self.rx_hwtail + want;
            match self.sock.recv(&mut self.rx, range) {
                Ok(k) => {
                    let k = (k as u32).min(want);
                    self.rx_hwtail = nm_add(self.rx_hwtail, k, n);
                    if k < want {
                        return;
                    }
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => return,
                Err(e) => {
                    self.fail("recvmmsg", e);
                    return;
                }
            }
        }
    }

    fn revents(&mut self, res: io::Result<i16>) -> io::Result<()> {
        match res {
            // A signal: the caller checks its stop conditions and comes back.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
            Ok(rev) if rev & libc::POLLNVAL != 0 => Err(io::Error::other(format!(
                "poll() on the packet socket returned revents {rev:#x}"
            ))),
            Ok(rev) if rev & libc::POLLERR != 0 => Err(self.sock.take_error()),
            Ok(_) => Ok(()),
        }
    }
}

impl<S: Sock> Backend for PacketPort<S> {
    type Error = PacketError;

    fn attach(opts: &AttachOptions) -> Result<Self, PacketError> {
        let (sock, link) = S::open(opts)?;
        Ok(PacketPort::new(
            opts.port.clone(),
            link,
            sock,
            opts.busy_poll,
        ))
    }

    fn name(&self) -> &str {
        &self.name
    }

    /// One TX and one RX pseudo ring of [`Link::slots`] slots of [`Link::buf_size`] bytes.
    fn rings(&self) -> Geometry {
        Geometry {
            tx_rings: 1,
            rx_rings: 1,
            tx_slots: self.tx.len(),
            rx_slots: self.rx.len(),
            buf_size: self.tx.size() as u32,
        }
    }

    fn busy_poll(&self) -> bool {
        self.busy_poll
    }

    fn max_frame(&self) -> Option<usize> {
        Some(self.link.max_frame())
    }

    fn own_mac(&self) -> Option<Mac> {
        Some(self.link.mac)
    }

    fn tx_space(&self, _r: u32) -> u32 {
        let n = self.tx.len();
        distance(self.tx_head, nm_prev(self.tx_hwcur, n), n)
    }

    fn rx_pending(&self, _r: u32) -> u32 {
        distance(self.rx_head, self.rx_hwtail, self.rx.len())
    }

    fn tx_batch<F: FnMut(u32, &mut [u8]) -> u16>(&mut self, r: u32, max: u32, mut fill: F) -> u32 {
        let k = self.tx_space(r).min(max);
        let n = self.tx.len();
        for i in 0..k {
            let s = self.tx_head;
            let len = fill(i, self.tx.buf_mut(s));
            self.tx.set_frame_len(s, usize::from(len));
            self.tx_head = nm_next(s, n);
        }
        k
    }

    /// A datagram is one frame: the fragments are joined in one slot, if they fit it.
    fn tx_frags(&mut self, r: u32, frags: &[&[u8]]) -> bool {
        let total: usize = frags.iter().map(|f| f.len()).sum();
        if self.tx_space(r) == 0 || total > self.tx.size() {
            return false;
        }
        let s = self.tx_head;
        let buf = self.tx.buf_mut(s);
        let mut at = 0;
        for f in frags {
            buf[at..at + f.len()].copy_from_slice(f);
            at += f.len();
        }
        self.tx.set_frame_len(s, total);
        self.tx_head = nm_next(s, self.tx.len());
        true
    }

    fn rx_batch<F: FnMut(&[u8], &NetmapSlot)>(&mut self, r: u32, max: u32, mut eat: F) -> u32 {
        let k = self.rx_pending(r).min(max);
        let n = self.rx.len();
        let size = self.rx.size();
        for _ in 0..k {
            let s = self.rx_head;
            let got = self.rx.msg_len(s) as usize;
            if got > size {
                if self.drops.rx_truncated == 0 {
                    log::warn!(
                        "{}: a {got}-byte frame exceeds the {size}-byte slots and was cut \
                         (later ones are only counted)",
                        self.name
                    );
                }
                self.drops.rx_truncated += 1;
            }
            let len = got.min(size).min(MAX_FRAME);
            let slot = NetmapSlot {
                buf_idx: s,
                len: len as u16,
                flags: 0,
                ptr: 0,
            };
            eat(&self.rx.buf(s)[..len], &slot);
            self.rx_head = nm_next(s, n);
        }
        k
    }

    /// One `sendmmsg` per contiguous range of queued slots (two when it wraps).
    fn txsync(&mut self, _r: u32) {
        self.send_queued()
    }

    /// The kernel keeps nothing to reclaim once it took a frame: a plain txsync.
    fn txsync_reclaim(&mut self, _r: u32) {
        self.send_queued()
    }

    /// Frees the consumed slots (moving `head` did) and fills the free ones: one `recvmmsg`
    /// per contiguous range (two when they wrap).
    fn rxsync(&mut self, _r: u32) {
        self.receive()
    }

    /// `poll()` for POLLOUT (socket buffer room) or POLLIN (frames), then a sync. After
    /// `ENOBUFS` (the driver's queue is full, which poll() does not report) a sleep of
    /// [`TX_BUSY_BACKOFF`] instead. A failed send or receive is returned here.
    fn wait(&mut self, want: Want, timeout: Option<Duration>) -> io::Result<bool> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let ready = match want {
            Want::Tx => {
                self.send_queued();
                if self.tx_space(0) == 0 {
                    if self.tx_busy {
                        std::thread::sleep(
                            timeout.map_or(TX_BUSY_BACKOFF, |t| t.min(TX_BUSY_BACKOFF)),
                        );
                    } else {
                        let res = self.sock.poll(libc::POLLOUT, poll_timeout(timeout));
                        self.revents(res)?;
                    }
                    self.send_queued();
                }
                self.tx_space(0) > 0
            }
            Want::Rx => {
                if self.rx_pending(0) == 0 {
                    self.receive();
                }
                if self.rx_pending(0) == 0 && self.error.is_none() {
                    let res = self.sock.poll(libc::POLLIN, poll_timeout(timeout));
                    self.revents(res)?;
                    self.receive();
                }
                self.rx_pending(0) > 0
            }
        };
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(ready),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::config::{BROADCAST_MAC, Config, Mode, PACKET_SOCKET};
    use crate::payload::{self, Kind, Template};
    use crate::run;

    /// A fake socket: what it sends goes onto `wire` (or, with `looped`, into its own
    /// `inbox`, like an interface cabled to itself); `recv` takes from `inbox`.
    #[derive(Default)]
    struct Fake {
        wire: VecDeque<Vec<u8>>,
        inbox: VecDeque<Vec<u8>>,
        looped: bool,
        /// Frames the socket buffer still takes (None: any number); then EAGAIN.
        room: Option<usize>,
        /// Frames longer than this are refused (EMSGSIZE), as beyond an MTU.
        max_len: Option<usize>,
        /// errno of the next send calls, one per call.
        send_errors: VecDeque<i32>,
        recv_error: Option<i32>,
        /// revents of the next poll (None: the events asked for).
        revents: Option<i16>,
        sock_error: i32,
        /// Frames asked for by each send and recv call.
        sends: Vec<u32>,
        recvs: Vec<u32>,
        polls: Vec<i16>,
    }

    fn errno(e: i32) -> io::Error {
        io::Error::from_raw_os_error(e)
    }

    impl Sock for Fake {
        fn open(opts: &AttachOptions) -> Result<(Self, Link), PacketError> {
            Err(PacketError::Name(opts.port.clone()))
        }

        fn send(&mut self, slots: &mut Slots, range: Range<u32>) -> io::Result<usize> {
            self.sends.push(range.end - range.start);
            if let Some(e) = self.send_errors.pop_front() {
                return Err(errno(e));
            }
            let mut k = 0;
            for i in range {
                let f = slots.frame(i).to_vec();
                // As sendmmsg: an error ends the call, and is returned only if it is the
                // first message's.
                let err = if self.max_len.is_some_and(|m| f.len() > m) {
                    Some(libc::EMSGSIZE)
                } else if self.room == Some(0) {
                    Some(libc::EAGAIN)
                } else {
                    None
                };
                if let Some(e) = err {
                    return if k == 0 { Err(errno(e)) } else { Ok(k) };
                }
                if let Some(r) = &mut self.room {
                    *r -= 1;
                }
                slots.set_msg_len(i, f.len() as u32);
                if self.looped {
                    self.inbox.push_back(f);
                } else {
                    self.wire.push_back(f);
                }
                k += 1;
            }
            Ok(k)
        }

        fn recv(&mut self, slots: &mut Slots, range: Range<u32>) -> io::Result<usize> {
            self.recvs.push(range.end - range.start);
            if let Some(e) = self.recv_error.take() {
                return Err(errno(e));
            }
            if self.inbox.is_empty() {
                return Err(errno(libc::EAGAIN));
            }
            let mut k = 0;
            for i in range {
                let Some(f) = self.inbox.pop_front() else {
                    break;
                };
                let buf = slots.buf_mut(i);
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                // MSG_TRUNC: the whole length.
                slots.set_msg_len(i, f.len() as u32);
                k += 1;
            }
            Ok(k)
        }

        fn poll(&mut self, events: i16, _timeout_ms: i32) -> io::Result<i16> {
            self.polls.push(events);
            Ok(self.revents.take().unwrap_or(events))
        }

        fn take_error(&mut self) -> io::Error {
            errno(self.sock_error)
        }
    }

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x42];

    fn link(mtu: u32) -> Link {
        Link {
            ifname: "veth0".into(),
            ifindex: 7,
            mtu,
            mac: MAC,
        }
    }

    fn port(mtu: u32, sock: Fake) -> PacketPort<Fake> {
        PacketPort::new("packet:veth0".into(), link(mtu), sock, false)
    }

    fn looped() -> Fake {
        Fake {
            looped: true,
            ..Fake::default()
        }
    }

    fn cfg(mode: Mode, n: u64) -> Config {
        let mut c = Config::new(mode, vec!["packet:veth0".into()], PACKET_SOCKET.into());
        c.count = Some(n);
        c.duration = Some(Duration::from_secs(20));
        c.quiet = true;
        c.batch = 100;
        c.check = mode == Mode::Rx;
        c
    }

    /// Queues `n` numbered 60-byte frames.
    fn queue(p: &mut PacketPort<Fake>, from: u64, n: u32) -> u32 {
        let t = Template {
            dst: BROADCAST_MAC,
            src: MAC,
            len: 60,
            kind: Kind::Data,
        };
        p.tx_batch(0, n, |i, buf| t.write(buf, from + u64::from(i), 0))
    }

    fn seqs(frames: &VecDeque<Vec<u8>>) -> Vec<u64> {
        frames
            .iter()
            .map(|f| payload::verify(f).expect("a pktgen frame").seq)
            .collect()
    }

    #[test]
    fn the_tx_and_rx_loops_run_over_socket_batches() {
        for size in [60, 1514] {
            let mut p = port(1500, looped());
            let mut c = cfg(Mode::Tx, 3000);
            c.size = size;
            let t = run::tx(&mut p, &c).unwrap();
            assert_eq!((t.packets, t.tx_pending_at_exit), (3000, Some(0)));
            let r = run::rx(&mut p, &cfg(Mode::Rx, 3000)).unwrap();
            let k = r.check.unwrap();
            assert_eq!((r.packets, r.bytes), (3000, 3000 * size as u64));
            assert_eq!(
                (k.good, k.lost, k.out_of_order, k.bad_payload),
                (3000, 0, 0, 0)
            );
            let s = p.sock();
            // A system call per batch (two where the ring wraps), never one per frame.
            assert!(s.sends.iter().all(|&n| n <= 100), "{:?}", s.sends);
            assert!(s.sends.len() <= 30 + 3, "{} sendmmsg calls", s.sends.len());
            assert!(
                s.recvs.len() <= 30 + 3 + 2,
                "{} recvmmsg calls",
                s.recvs.len()
            );
            assert_eq!(p.drops(), Drops::default());
        }
    }

    #[test]
    fn a_batch_wrapping_the_ring_takes_two_calls_in_order() {
        let mut p = port(1500, Fake::default());
        assert_eq!(p.rings().tx_slots, 1024);
        assert_eq!(queue(&mut p, 0, 1000), 1000);
        p.txsync(0);
        assert_eq!(queue(&mut p, 1000, 100), 100);
        p.txsync(0);
        assert_eq!(p.sock().sends, [1000, 24, 76]);
        assert_eq!(seqs(&p.sock().wire), (0..1100).collect::<Vec<_>>());

        let frames: Vec<_> = p.sock().wire.drain(..).collect();
        p.sock().inbox.extend(frames[..1000].iter().cloned());
        p.rxsync(0);
        assert_eq!(p.rx_pending(0), 1000);
        let mut got = VecDeque::new();
        p.rx_batch(0, u32::MAX, |f, _| got.push_back(f.to_vec()));
        p.sock().inbox.extend(frames[1000..].iter().cloned());
        p.rxsync(0);
        assert_eq!(p.rx_pending(0), 100);
        p.rx_batch(0, u32::MAX, |f, _| got.push_back(f.to_vec()));
        assert_eq!(p.sock().recvs, [1023, 24, 999]);
        assert_eq!(seqs(&got), (0..1100).collect::<Vec<_>>());
    }

    #[test]
    fn frames_the_socket_cannot_take_yet_stay_queued_and_go_out_in_order() {
        let mut p = port(1500, Fake::default());
        p.sock().room = Some(5);
        queue(&mut p, 0, 20);
        p.txsync(0);
        assert_eq!((p.sock().wire.len(), p.tx_queued()), (5, 15));
        // The driver's queue is full: nothing goes, nothing is lost.
        p.sock().room = None;
        p.sock().send_errors.push_back(libc::ENOBUFS);
        p.txsync(0);
        assert_eq!(p.tx_queued(), 15);
        // A full ring waits: for POLLOUT after EAGAIN, by a bounded sleep after ENOBUFS
        // (which poll() does not report).
        queue(&mut p, 20, 1023 - 15);
        assert_eq!(p.tx_space(0), 0);
        p.sock().room = Some(0);
        assert!(!p.wait(Want::Tx, Some(Duration::from_millis(1))).unwrap());
        assert_eq!(p.sock().polls, [libc::POLLOUT]);
        p.sock().send_errors.extend([libc::ENOBUFS, libc::ENOBUFS]);
        assert!(!p.wait(Want::Tx, Some(Duration::from_millis(1))).unwrap());
        assert_eq!(p.sock().polls.len(), 1, "no poll for a full driver queue");
        p.sock().room = None;
        assert!(p.wait(Want::Tx, None).unwrap());
        assert_eq!(p.tx_queued(), 0);
        assert_eq!(seqs(&p.sock().wire), (0..1028).collect::<Vec<_>>());
    }

    #[test]
    fn a_frame_the_kernel_refuses_is_dropped_and_counted() {
        let mut p = port(1500, Fake::default());
        p.sock().max_len = Some(100);
        for len in [60u16, 200, 60] {
            p.tx_batch(0, 1, |_, buf| {
                buf[..usize::from(len)].fill(1);
                len
            });
        }
        p.txsync(0);
        let lens: Vec<_> = p.sock().wire.iter().map(Vec::len).collect();
        assert_eq!(lens, [60, 60]);
        assert_eq!((p.tx_queued(), p.drops().tx_rejected), (0, 1));
    }

    #[test]
    fn a_frame_longer_than_a_slot_is_cut_and_counted() {
        let mut p = port(1500, Fake::default());
        let size = p.rings().buf_size as usize;
        p.sock().inbox.push_back(vec![7; size + 100]);
        p.sock().inbox.push_back(vec![8; 60]);
        p.rxsync(0);
        let mut lens = Vec::new();
        p.rx_batch(0, 10, |f, slot| {
            assert_eq!(usize::from(slot.len), f.len());
            lens.push(f.len());
        });
        assert_eq!(lens, [size, 60]);
        assert_eq!(p.drops().rx_truncated, 1);
    }

    #[test]
    fn a_failed_send_or_receive_ends_the_wait_with_its_error() {
        let mut p = port(1500, Fake::default());
        p.sock().send_errors.push_back(libc::ENETDOWN);
        queue(&mut p, 0, 1);
        p.txsync(0);
        let e = p.wait(Want::Tx, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENETDOWN));
        p.sock().recv_error = Some(libc::ENXIO);
        let e = p.wait(Want::Rx, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO));
        // The interface went away while sleeping: POLLERR and the socket's error.
        p.sock().revents = Some(libc::POLLERR);
        p.sock().sock_error = libc::ENETDOWN;
        let e = p.wait(Want::Rx, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENETDOWN));
        // Nothing else pending: the next wait is an ordinary one.
        p.sock().inbox.push_back(vec![1; 60]);
        assert!(p.wait(Want::Rx, None).unwrap());
    }

    #[test]
    fn tx_and_ping_refuse_frames_longer_than_the_mtu_allows() {
        let mut p = port(1500, looped());
        let mut c = cfg(Mode::Tx, 10);
        c.size = 1515;
        let e = run::tx(&mut p, &c).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("MTU, 1500"), "{e}");
        c.mode = Mode::Ping;
        assert_eq!(run::ping(&mut p, &c).unwrap_err().exit_code(), 2);
        assert!(p.sock().sends.is_empty());
        c.mode = Mode::Tx;
        c.size = 1514;
        assert_eq!(run::tx(&mut p, &c).unwrap().packets, 10);
    }

    #[test]
    fn packet_ports_send_from_their_own_mac_to_broadcast_unless_told() {
        let mut p = port(1500, Fake::default());
        let c = run::with_port_mac(&cfg(Mode::Tx, 1), &p);
        assert_eq!((c.src_mac, c.dst_mac), (MAC, BROADCAST_MAC));
        run::tx(&mut p, &c).unwrap();
        assert_eq!(p.sock().wire[0][..12], [[0xff; 6], MAC].concat());
        // --src-mac and --dst-mac win.
        let mut c = cfg(Mode::Tx, 1);
        (c.src_mac, c.dst_mac, c.src_mac_from_port) =
            ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], false);
        let c = run::with_port_mac(&c, &p);
        run::tx(&mut p, &c).unwrap();
        assert_eq!(
            p.sock().wire[1][..12],
            [[2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]].concat()
        );
    }

    #[test]
    fn slots_hold_a_frame_of_the_mtu_and_a_vlan_tag_in_about_4_mib_per_ring() {
        for (mtu, slots) in [(1500, 1024), (9000, 464), (65536, 64), (68, 1024)] {
            let l = link(mtu);
            assert!(
                l.buf_size() >= l.max_frame() + 4 && l.buf_size() % 64 == 0,
                "{mtu}"
            );
            assert_eq!(l.slots(), slots, "MTU {mtu}");
        }
        assert_eq!(link(1500).max_frame(), 1514);
        assert_eq!(link(65536).max_frame(), MAX_FRAME);
    }

    #[test]
    fn packet_port_names_are_linux_interface_names() {
        assert_eq!(ifname("packet:eth0").unwrap(), "eth0");
        assert_eq!(ifname("packet:veth-a.10").unwrap(), "veth-a.10");
        assert!(ifname(&format!("packet:{}", "x".repeat(15))).is_ok());
        for bad in [
            "eth0",
            "packet:",
            "netmap:eth0",
            "packet:a/b",
            "packet:a b",
            "packet:eth0:1",
            "packet:..",
            &format!("packet:{}", "x".repeat(16)),
        ] {
            assert!(matches!(ifname(bad), Err(PacketError::Name(_))), "{bad}");
        }
    }

    #[test]
    fn attaching_a_missing_interface_says_so() {
        let e = PacketPort::<Socket>::attach(&AttachOptions {
            port: "packet:ptpg-none0".into(),
            socket: PACKET_SOCKET.into(),
            busy_poll: false,
            all_ethertypes: false,
        })
        .unwrap_err();
        // Unprivileged, the socket itself is refused first.
        assert!(
            matches!(e, PacketError::NoInterface(ref n) if n == "ptpg-none0")
                || matches!(e, PacketError::Permission(_)),
            "{e:?}"
        );
    }
}
