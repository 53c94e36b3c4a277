//! Host NIC ports: a host interface attached to a VALE switch, as netmap's `vale-ctl -a`
//! does. Frames arriving on the interface enter the switch (learned like any port's); frames
//! the switch sends to the port leave through the interface.
//!
//! **How the NIC plugs into VALE.** The NIC port is an ordinary VALE port ([`VPort`]) whose
//! application side is a worker thread in the daemon, playing the part a host client plays:
//! it copies frames from the interface's socket into the port's TX ring and runs the port's
//! txsync itself (the switch forwards them in the same call), and it copies what the switch
//! delivered to the port's RX ring out to the socket. The switch, its leases, drop-when-full
//! and learning are untouched, and every frame costs one more copy than a switch port whose
//! rings *are* the socket's would: less than the switch's whole per-frame work (47 ns at 60
//! bytes, 78 at 1514), against the microseconds the kernel spends per frame around an
//! AF_PACKET or AF_XDP socket (docs/architecture.md has the numbers).
//!
//! The worker sleeps in `poll` on the socket(s), on the port's RX interrupt eventfd (the switch
//! delivered frames) and on a stop eventfd. It moves whole batches: no allocation, lock or
//! system call per frame (the kring locks are taken once per batch by txsync, the socket is
//! flushed once per batch).
//!
//! Backends sit behind [`NicBackend`] and are opened by a [`NicOpener`]: [`HostInterface`]
//! opens AF_PACKET ([`AfPacketBackend`]), AF_XDP ([`crate::xdp`]) or says why native netmap
//! is not available; [`fake`] is an in-memory wire for tests without privileges. The worker
//! watches the interface's state: when it goes down or disappears the port goes down (frames
//! for it are dropped and counted), and when it is back up the backend is opened again.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::afpacket::{Direction, PacketRing, RingConfig};
use crate::app::AppRing;
use crate::csb::{CsbMem, CsbRef};
use crate::kloop::ClientBinding;
use crate::port::SyncPort;
use crate::vale::{MAX_FRAGS, Switch, VPort, ValePortSync};
use crate::vnet;

/// Bytes a frame may add to the interface's MTU: the Ethernet header and one VLAN tag.
pub const L2_OVERHEAD: u32 = 18;

/// Receive flag: the frame's TCP/UDP checksum was left to an offload that never ran (frames
/// from the host's own stack, a veth peer or a tap with checksum offload on). The port
/// finishes it, as the kernel's `skb_checksum_help` would, before the frame enters the switch.
pub const RX_CSUM_PARTIAL: u32 = 1;

/// The backends a NIC port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// AF_PACKET with TPACKET_V3 rings: any interface.
    AfPacket,
    /// AF_XDP in copy mode with the project's XDP redirect program.
    AfXdp,
    /// Native netmap (`/dev/netmap`).
    Netmap,
    /// The host stack's tap of a NIC port ([`crate::tap`]); never chosen for an interface.
    Tap,
}

impl BackendKind {
    /// The name used in configuration, requests and listings.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::AfPacket => "af_packet",
            BackendKind::AfXdp => "af_xdp",
            BackendKind::Netmap => "netmap",
            BackendKind::Tap => "tap",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// netmap if `/dev/netmap` exists, otherwise AF_PACKET (see [`HostInterface::open`]).
    #[default]
    Auto,
    /// This one (AF_XDP falls back to AF_PACKET, saying why).
    Only(BackendKind),
}

impl std::str::FromStr for BackendChoice {
    type Err = NicError;

    fn from_str(s: &str) -> Result<Self, NicError> {
        Ok(match s {
            "auto" | "" => BackendChoice::Auto,
            "af_packet" | "afpacket" | "packet" => BackendChoice::Only(BackendKind::AfPacket),
            "af_xdp" | "afxdp" | "xdp" => BackendChoice::Only(BackendKind::AfXdp),
            "netmap" | "native" => BackendChoice::Only(BackendKind::Netmap),
            _ => {
                return Err(NicError::Config(format!(
                    "unknown NIC backend {s:?}: auto, af_packet, af_xdp or netmap"
                )));
            }
        })
    }
}

/// Errors of NIC ports.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// The interface does not exist.
    #[error("no interface {0}")]
    NoInterface(String),
    /// The interface's frames do not fit the port's buffers.
    #[error(
        "{ifname}: MTU {mtu} allows frames of {need} bytes, more than the {max}-byte buffers of \
         the switch port (lower the MTU to {fit} or give the port larger buffers)"
    )]
    Mtu {
        /// Interface.
        ifname: String,
        /// Its MTU.
        mtu: u32,
        /// MTU + Ethernet header + VLAN tag.
        need: u32,
        /// The port's buffer size.
        max: u32,
        /// The largest MTU that fits.
        fit: u32,
    },
    /// A backend cannot run here.
    #[error("{kind} backend unavailable on {ifname}: {reason}")]
    Unavailable {
        /// Backend.
        kind: BackendKind,
        /// Interface.
        ifname: String,
        /// Why, precisely.
        reason: String,
    },
    /// A socket or system call failed.
    #[error("{what} on {ifname}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Interface.
        ifname: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

/// A host interface backend as the worker drives it.
pub trait NicBackend: Send {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// The interface index the backend is bound to (a re-created interface has a new one).
    fn ifindex(&self) -> u32;
    /// Adds the descriptors to poll to `fds`: readable when frames arrived, writable when TX
    /// room came back (asked for with `want_tx`). Returns how many were written.
    fn poll_fds(&self, want_tx: bool, fds: &mut [libc::pollfd]) -> usize;
    /// Hands every frame that arrived to `sink(bytes, wire_len, flags)` (`wire_len` >
    /// `bytes.len()` when the kernel truncated it; `flags` has [`RX_CSUM_PARTIAL`] when its
    /// transport checksum was left unfinished). Returns the number of frames.
    fn rx(&mut self, sink: &mut dyn FnMut(&[u8], u32, u32)) -> usize;
    /// The data area of a free TX frame, or `None` while TX is full.
    fn tx_slot(&mut self) -> Option<&mut [u8]>;
    /// Queues the frame written into the last [`NicBackend::tx_slot`].
    fn tx_commit(&mut self, len: usize);
    /// Sends what was queued (one system call at most).
    fn tx_flush(&mut self) -> io::Result<()>;
    /// A pending socket error (ENETDOWN when the interface went down or away).
    fn take_error(&mut self) -> Option<io::Error>;
    /// Frames the kernel dropped since the last call (its ring was full).
    fn kernel_drops(&mut self) -> u64 {
        0
    }
}

/// Whether an interface is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Administratively up with carrier.
    Up,
    /// Down, or up without carrier.
    Down,
    /// No interface of that name.
    Gone,
}

impl Link {
    /// For listings.
    pub fn name(self) -> &'static str {
        match self {
            Link::Up => "up",
            Link::Down => "down",
            Link::Gone => "gone",
        }
    }

    fn from_u8(v: u8) -> Link {
        match v {
            0 => Link::Up,
            1 => Link::Down,
            _ => Link::Gone,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Link::Up => 0,
            Link::Down => 1,
            Link::Gone => 2,
        }
    }
}

/// Opens the backend of one interface, again after each time it went away, and reports the
/// interface's state.
pub trait NicOpener: Send {
    /// Interface name.
    fn ifname(&self) -> &str;
    /// The interface's state and index (0 when gone).
    fn link(&self) -> (Link, u32);
    /// Opens a backend; `Ok` carries a note when it is not the one asked for (a fallback).
    fn open(&mut self) -> Result<(Box<dyn NicBackend>, Option<String>), NicError>;
}

/// An error and its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Host interfaces.

/// One ioctl on an interface by name (SIOCGIFFLAGS, SIOCGIFMTU).
fn if_ioctl(ifname: &str, req: libc::c_ulong) -> io::Result<libc::ifreq> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name",
        ));
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours; the ioctl reads the name and writes one field of `ifr`, which we
    // own and which is as large as the kernel expects.
    let r = unsafe { libc::ioctl(fd, req, &mut ifr) };
    let e = io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above, used by nothing else.
    unsafe { libc::close(fd) };
    if r < 0 { Err(e) } else { Ok(ifr) }
}

/// The index of `ifname`, 0 if it does not exist.
pub fn ifindex(ifname: &str) -> u32 {
    let Ok(c) = CString::new(ifname) else {
        return 0;
    };
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// The MTU of `ifname`.
pub fn mtu(ifname: &str) -> io::Result<u32> {
    let ifr = if_ioctl(ifname, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu }.max(0) as u32)
}

/// The state of `ifname` and its index.
pub fn link_state(ifname: &str) -> (Link, u32) {
    let idx = ifindex(ifname);
    if idx == 0 {
        return (Link::Gone, 0);
    }
    match if_ioctl(ifname, libc::SIOCGIFFLAGS) {
        Ok(ifr) => {
            // SAFETY: SIOCGIFFLAGS filled the ifru_flags member of the union.
            let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
            let up = flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0;
            (if up { Link::Up } else { Link::Down }, idx)
        }
        Err(_) => (Link::Gone, 0),
    }
}

/// Whether the netmap kernel module is there.
pub fn netmap_present() -> bool {
    std::path::Path::new("/dev/netmap").exists()
}

/// A real host interface: checks its MTU against the port's buffers and opens the backend
/// asked for.
#[derive(Debug, Clone)]
pub struct HostInterface {
    /// Interface name.
    pub ifname: String,
    /// Backend.
    pub choice: BackendChoice,
    /// Largest frame the port carries (its buffer size).
    pub max_frame: u32,
}

impl HostInterface {
    /// Checks that the interface exists and that its frames fit.
    pub fn check(&self) -> Result<(), NicError> {
        if ifindex(&self.ifname) == 0 {
            return Err(NicError::NoInterface(self.ifname.clone()));
        }
        let m = mtu(&self.ifname).map_err(|source| NicError::Io {
            what: "reading the MTU",
            ifname: self.ifname.clone(),
            source,
        })?;
        let need = m.saturating_add(L2_OVERHEAD);
        if need > self.max_frame {
            return Err(NicError::Mtu {
                ifname: self.ifname.clone(),
                mtu: m,
                need,
                max: self.max_frame,
                fit: self.max_frame.saturating_sub(L2_OVERHEAD),
            });
        }
        Ok(())
    }

    fn open_kind(&self, kind: BackendKind) -> Result<Box<dyn NicBackend>, NicError> {
        match kind {
            BackendKind::AfPacket => Ok(Box::new(AfPacketBackend::open(
                &self.ifname,
                self.max_frame,
            )?)),
            BackendKind::AfXdp => crate::xdp::XdpBackend::open(&self.ifname, self.max_frame),
            BackendKind::Tap => Err(NicError::Config(format!(
                "{}: the tap backend serves only the host stack's port (--host-stack)",
                self.ifname
            ))),
            BackendKind::Netmap => Err(NicError::Unavailable {
                kind,
                ifname: self.ifname.clone(),
                reason: if netmap_present() {
                    "/dev/netmap exists, but this build of ptnetd does not drive native netmap \
                     ports yet"
                        .into()
                } else {
                    "/dev/netmap is absent (the netmap kernel module is not loaded)".into()
                },
            }),
        }
    }
}

impl NicOpener for HostInterface {
    fn ifname(&self) -> &str {
        &self.ifname
    }

    fn link(&self) -> (Link, u32) {
        link_state(&self.ifname)
    }

    /// `Auto` takes native netmap when `/dev/netmap` exists and AF_PACKET otherwise: AF_XDP
    /// diverts every frame of the interface away from the host's own stack (see
    /// docs/user-guide.md), so it is used only when asked for by name. A named backend that
    /// cannot run falls back to AF_PACKET, and the note says why.
    fn open(&mut self) -> Result<(Box<dyn NicBackend>, Option<String>), NicError> {
        self.check()?;
        let first = match self.choice {
            BackendChoice::Only(k) => k,
            BackendChoice::Auto if netmap_present() => BackendKind::Netmap,
            BackendChoice::Auto => BackendKind::AfPacket,
        };
        match self.open_kind(first) {
            Ok(b) => Ok((b, None)),
            Err(e) if first != BackendKind::AfPacket => {
                let note = format!("{}; using af_packet", error_chain(&e));
                log::warn!("{}: {note}", self.ifname);
                Ok((self.open_kind(BackendKind::AfPacket)?, Some(note)))
            }
            Err(e) => Err(e),
        }
    }
}

/// The AF_PACKET backend: a TPACKET_V3 RX ring (promiscuous, ignoring the host's own
/// transmissions) and a TX ring with PACKET_QDISC_BYPASS.
#[derive(Debug)]
pub struct AfPacketBackend {
    rx: PacketRing,
    tx: PacketRing,
}

impl AfPacketBackend {
    /// Opens both sockets on `ifname`, with TX frames of at least `max_frame` bytes.
    pub fn open(ifname: &str, max_frame: u32) -> Result<Self, NicError> {
        Self::open_fanout(ifname, max_frame, None)
    }

    /// [`AfPacketBackend::open`], with the RX socket in fanout group `fanout` (hash): the
    /// sockets of one group share the interface's frames, each flow to one socket.
    pub fn open_fanout(
        ifname: &str,
        max_frame: u32,
        fanout: Option<u16>,
    ) -> Result<Self, NicError> {
        let io = |what| {
            let ifname = ifname.to_owned();
            move |source| NicError::Io {
                what,
                ifname,
                source,
            }
        };
        // RX: 64 blocks of 128 KiB, retired after 1 ms (the latency bound of a lone frame).
        let block = (128u32 << 10).max((max_frame + 128).next_power_of_two());
        let rx = PacketRing::open(
            ifname,
            Direction::Rx,
            RingConfig {
                block_size: block,
                blocks: 64,
                frame_size: 2048,
                retire_ms: 1,
                qdisc_bypass: false,
                promisc: true,
                ignore_outgoing: true,
                fanout,
            },
        )
        .map_err(io("opening the AF_PACKET RX ring"))?;
        // TX: 1024 frames (the port's ring size) of a power of two holding the largest frame.
        let frame = (max_frame + 48).next_power_of_two().max(2048);
        let per_block = ((64u32 << 10) / frame).max(1);
        let tx = PacketRing::open(
            ifname,
            Direction::Tx,
            RingConfig {
                block_size: per_block * frame,
                blocks: 1024_u32.div_ceil(per_block),
                frame_size: frame,
                retire_ms: 0,
                qdisc_bypass: true,
                promisc: false,
                ignore_outgoing: false,
                fanout: None,
            },
        )
        .map_err(io("opening the AF_PACKET TX ring"))?;
        Ok(AfPacketBackend { rx, tx })
    }
}

impl NicBackend for AfPacketBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AfPacket
    }

    fn ifindex(&self) -> u32 {
        self.rx.ifindex()
    }

    fn poll_fds(&self, want_tx: bool, fds: &mut [libc::pollfd]) -> usize {
        let mut n = 0;
        for (fd, ev) in [
            (self.rx.raw_fd(), libc::POLLIN),
            (self.tx.raw_fd(), if want_tx { libc::POLLOUT } else { 0 }),
        ] {
            if let Some(p) = fds.get_mut(n) {
                *p = libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                };
                n += 1;
            }
        }
        n
    }

    fn rx(&mut self, sink: &mut dyn FnMut(&[u8], u32, u32)) -> usize {
        self.rx.rx_burst_meta(|b, m| {
            let partial = m.status & crate::afpacket::TP_STATUS_CSUMNOTREADY != 0;
            sink(b, m.len, if partial { RX_CSUM_PARTIAL } else { 0 })
        })
    }

    fn tx_slot(&mut self) -> Option<&mut [u8]> {
        self.tx.tx_slot()
    }

    fn tx_commit(&mut self, len: usize) {
        self.tx.tx_commit(len);
    }

    fn tx_flush(&mut self) -> io::Result<()> {
        self.tx.tx_flush()
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.rx.take_error().or_else(|| self.tx.take_error())
    }

    fn kernel_drops(&mut self) -> u64 {
        self.rx.stats().map_or(0, |s| u64::from(s.drops))
    }
}

// ---------------------------------------------------------------------------------------------
// Counters.

/// Counters of a NIC port, from the interface's point of view, updated once per batch.
#[derive(Debug, Default)]
pub struct NicStats {
    /// Frames received on the interface and handed to the switch.
    pub rx_packets: AtomicU64,
    /// Their bytes.
    pub rx_bytes: AtomicU64,
    /// Frames received but dropped: too large for the port's buffers, truncated, or dropped
    /// by the kernel because the socket's ring was full.
    pub rx_drops: AtomicU64,
    /// Frames the switch sent to the port and the interface transmitted.
    pub tx_packets: AtomicU64,
    /// Their bytes.
    pub tx_bytes: AtomicU64,
    /// Frames for the interface dropped: link down, too large for a TX frame, or a failed send.
    pub tx_drops: AtomicU64,
    /// Times the link went down or came back.
    pub link_changes: AtomicU64,
    /// Times the backend was opened (1 + reopenings after the link came back).
    pub opens: AtomicU64,
    link: AtomicU8,
    backend: AtomicU8,
    note: Mutex<Option<String>>,
}

/// A point-in-time copy of [`NicStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSnapshot {
    /// Interface.
    pub ifname: String,
    /// Backend in use (`None` while the link is down and nothing is open).
    pub backend: Option<BackendKind>,
    /// Why the backend is not the one asked for, if it is not.
    pub note: Option<String>,
    /// Link state.
    pub link: Link,
    /// See [`NicStats`].
    pub rx_packets: u64,
    /// See [`NicStats`].
    pub rx_bytes: u64,
    /// See [`NicStats`].
    pub rx_drops: u64,
    /// See [`NicStats`].
    pub tx_packets: u64,
    /// See [`NicStats`].
    pub tx_bytes: u64,
    /// See [`NicStats`].
    pub tx_drops: u64,
    /// See [`NicStats`].
    pub link_changes: u64,
    /// See [`NicStats`].
    pub opens: u64,
}

const NO_BACKEND: u8 = 0;

fn backend_code(k: Option<BackendKind>) -> u8 {
    match k {
        None => NO_BACKEND,
        Some(BackendKind::AfPacket) => 1,
        Some(BackendKind::AfXdp) => 2,
        Some(BackendKind::Netmap) => 3,
        Some(BackendKind::Tap) => 4,
    }
}

fn backend_of(v: u8) -> Option<BackendKind> {
    match v {
        1 => Some(BackendKind::AfPacket),
        2 => Some(BackendKind::AfXdp),
        3 => Some(BackendKind::Netmap),
        4 => Some(BackendKind::Tap),
        _ => None,
    }
}

#[inline]
fn add(c: &AtomicU64, v: u64) {
    if v != 0 {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

impl NicStats {
    fn snapshot(&self, ifname: &str) -> NicSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NicSnapshot {
            ifname: ifname.to_owned(),
            backend: backend_of(self.backend.load(Ordering::Relaxed)),
            note: self.note.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            link: Link::from_u8(self.link.load(Ordering::Relaxed)),
            rx_packets: r(&self.rx_packets),
            rx_bytes: r(&self.rx_bytes),
            rx_drops: r(&self.rx_drops),
            tx_packets: r(&self.tx_packets),
            tx_bytes: r(&self.tx_bytes),
            tx_drops: r(&self.tx_drops),
            link_changes: r(&self.link_changes),
            opens: r(&self.opens),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The application side of the port's rings, driven by the worker.

/// The NIC worker's side of its VALE port: both rings and the sync entry points.
struct AppSide {
    sync: ValePortSync,
    tx: AppRing,
    rx: AppRing,
}

/// Frames and bytes of one batch.
#[derive(Debug, Default, Clone, Copy)]
struct Batch {
    packets: u64,
    bytes: u64,
    drops: u64,
}

impl AppSide {
    fn new(sync: ValePortSync, csb: CsbRef) -> Self {
        let ifc = sync.port.interface();
        let ntx = ifc.tx.len() as u32;
        // The worker never sleeps on its TX ring (txsync frees it at once) and asks for RX
        // interrupts only before sleeping (AppRing starts with them off).
        let tx = AppRing::new(ifc.tx[0].clone(), csb.clone(), 0, 0);
        let rx = AppRing::new(ifc.rx[0].clone(), csb, 0, ntx);
        AppSide { sync, tx, rx }
    }

    /// Copies one frame from the wire into the TX ring (finishing its checksum if `csum`);
    /// false if the ring is full. The caller dropped frames larger than a buffer.
    #[inline]
    fn push(&mut self, frame: &[u8], csum: bool) -> bool {
        if self.tx.avail() == 0 {
            return false;
        }
        let first = self.tx.head();
        self.tx.put_frame(frame);
        if csum {
            if let (Some((at, c)), Some((b, _))) =
                (vnet::partial_checksum(frame), self.tx.buffer(first))
            {
                b.write(at, &c.to_be_bytes());
            }
        }
        true
    }

    /// Publishes the TX ring and runs txsync: the switch forwards every queued frame.
    fn flush_tx(&mut self) {
        self.tx.txsync(&self.sync);
    }

    /// Sends what the switch delivered through `b`, whole frames, until TX is full. Returns
    /// the batch and whether TX filled up.
    fn send_to_wire(&mut self, b: &mut dyn NicBackend) -> (Batch, bool) {
        let mut out = Batch::default();
        let mut full = false;
        let r = &mut self.rx;
        while r.avail() > 0 {
            // One frame: its fragments, up to MAX_FRAGS, all held (the switch publishes whole
            // frames).
            let (frags, total) = r.frame_at(r.head(), MAX_FRAGS as u32);
            let Some(dst) = b.tx_slot() else {
                full = true;
                break;
            };
            if total > dst.len() || total < 14 {
                out.drops += 1;
            } else {
                let mut ofs = 0;
                let mut k = r.head();
                for _ in 0..frags {
                    if let Some((src, s)) = r.buffer(k) {
                        let len = usize::from(s.len);
                        // ofs + len <= total <= dst.len(): each slot's length was bounded the
                        // same way when the frame was measured.
                        ofs += src.read(0, &mut dst[ofs..ofs + len]);
                    }
                    k = r.next(k);
                }
                b.tx_commit(total);
                out.packets += 1;
                out.bytes += total as u64;
            }
            r.advance(frags);
        }
        (out, full)
    }

    /// Drops everything delivered (the link is down). Returns the frames dropped.
    fn drop_rx(&mut self) -> u64 {
        let r = &mut self.rx;
        let mut frames = 0;
        while r.avail() > 0 {
            let (slots, _) = r.frame_at(r.head(), MAX_FRAGS as u32);
            r.advance(slots);
            frames += 1;
        }
        r.publish();
        frames
    }
}

// ---------------------------------------------------------------------------------------------
// The worker.

/// How often the worker looks at the interface's state while it is up (a socket error makes
/// it look at once) and while it is down or gone.
const LINK_CHECK_UP: Duration = Duration::from_secs(1);
const LINK_CHECK_DOWN: Duration = Duration::from_millis(200);

/// Interrupt moderation: after a wake-up that brought fewer than [`COALESCE_BELOW`] frames
/// from the wire, the worker lets frames accumulate this long before looking again, instead
/// of waking once per frame. AF_XDP signals every frame: at 0.4 Mpps of 60-byte frames the
/// worker and the host client used 1.15 cores without it, 0.29 with it (`bench/nic.sh`);
/// AF_PACKET's TPACKET_V3 blocks batch already. The added latency is at most this, and only
/// while frames keep coming (the first frame after an idle period is handled at once).
const COALESCE: Duration = Duration::from_micros(50);
const COALESCE_BELOW: usize = 32;

struct Worker {
    opener: Box<dyn NicOpener>,
    backend: Option<Box<dyn NicBackend>>,
    app: AppSide,
    rx_irq: Arc<EventFd>,
    stop: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
    stats: Arc<NicStats>,
    link: Link,
    /// Frames dropped on the way in since the last log line (rate limit).
    logged_oversize: u64,
    /// Failed reopenings in a row (rate limit of their log lines).
    reopen_failures: u64,
}

impl Worker {
    fn set_link(&mut self, l: Link) {
        if l != self.link {
            log::info!(
                "{}: link {} -> {}",
                self.opener.ifname(),
                self.link.name(),
                l.name()
            );
            self.link = l;
            self.stats.link.store(l.to_u8(), Ordering::Relaxed);
            add(&self.stats.link_changes, 1);
        }
    }

    fn set_backend(&mut self, b: Option<Box<dyn NicBackend>>) {
        self.stats.backend.store(
            backend_code(b.as_ref().map(|b| b.kind())),
            Ordering::Relaxed,
        );
        self.backend = b;
    }

    /// Looks at the interface; closes the backend when it is not usable and opens it again
    /// when it is back (a new interface of the same name included).
    fn check_link(&mut self) {
        let (l, idx) = self.opener.link();
        if l != Link::Up {
            if self.backend.is_some() {
                self.set_backend(None);
            }
            self.set_link(l);
            return;
        }
        let stale = self.backend.as_ref().is_some_and(|b| b.ifindex() != idx);
        if self.backend.is_none() || stale || self.link != Link::Up {
            self.set_backend(None);
            match self.opener.open() {
                Ok((b, note)) => {
                    self.reopen_failures = 0;
                    *self.stats.note.lock().unwrap_or_else(|e| e.into_inner()) = note;
                    add(&self.stats.opens, 1);
                    self.set_backend(Some(b));
                    self.set_link(Link::Up);
                }
                Err(e) => {
                    // Retried every LINK_CHECK_DOWN: say it the first time, then now and then.
                    self.reopen_failures += 1;
                    if self.reopen_failures % 50 == 1 {
                        log::warn!(
                            "{}: cannot reopen (attempt {}): {}",
                            self.opener.ifname(),
                            self.reopen_failures,
                            error_chain(&e)
                        );
                    }
                    self.set_link(Link::Down);
                }
            }
        }
    }

    fn run(&mut self) {
        let mut next_check = Instant::now() + LINK_CHECK_UP;
        let mut next_stats = Instant::now();
        let mut tx_full = false;
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 8];
        log::info!(
            "{}: NIC worker started ({})",
            self.opener.ifname(),
            self.backend
                .as_ref()
                .map_or("no backend", |b| b.kind().name())
        );
        while !self.stopping.load(Ordering::Acquire) {
            let mut work = false;
            let mut error = false;
            let mut from_wire = 0;
            let buf_size = self.app.tx.buf_size();
            if let Some(b) = self.backend.as_deref_mut() {
                // Wire → switch.
                let app = &mut self.app;
                let mut batch = Batch::default();
                let n = b.rx(&mut |frame, wire_len, flags| {
                    let len = frame.len();
                    if wire_len as usize != len || len > buf_size || len < 14 {
                        batch.drops += 1;
                        return;
                    }
                    let csum = flags & RX_CSUM_PARTIAL != 0;
                    if !app.push(frame, csum) {
                        app.flush_tx();
                        if !app.push(frame, csum) {
                            batch.drops += 1;
                            return;
                        }
                    }
                    batch.packets += 1;
                    batch.bytes += len as u64;
                });
                if batch.packets > 0 {
                    app.flush_tx();
                }
                work |= n > 0;
                from_wire = n;
                add(&self.stats.rx_packets, batch.packets);
                add(&self.stats.rx_bytes, batch.bytes);
                add(&self.stats.rx_drops, batch.drops);
                if batch.drops > 0 {
                    self.logged_oversize += batch.drops;
                    if self.logged_oversize == batch.drops || self.logged_oversize % 10000 == 0 {
                        log::warn!(
                            "{}: dropped received frames larger than the port's {buf_size}-byte \
                             buffers, truncated or runt ({} so far; are GRO/LRO or the \
                             senders' TSO on?)",
                            self.opener.ifname(),
                            self.logged_oversize
                        );
                    }
                }
                // Switch → wire.
                if self.app.rx.refresh() || self.app.rx.avail() > 0 {
                    let (out, full) = self.app.send_to_wire(b);
                    tx_full = full;
                    let sent = b.tx_flush();
                    // VALE reclaims RX slots lazily: publishing them is enough.
                    self.app.rx.publish();
                    work |= out.packets + out.drops > 0;
                    match sent {
                        Ok(()) => {
                            add(&self.stats.tx_packets, out.packets);
                            add(&self.stats.tx_bytes, out.bytes);
                            add(&self.stats.tx_drops, out.drops);
                        }
                        Err(e) => {
                            add(&self.stats.tx_drops, out.packets + out.drops);
                            log::debug!("{}: send failed: {e}", self.opener.ifname());
                            error = true;
                        }
                    }
                } else {
                    tx_full = false;
                }
                if Instant::now() >= next_stats {
                    add(&self.stats.rx_drops, b.kernel_drops());
                    next_stats = Instant::now() + Duration::from_millis(500);
                }
            } else if self.app.rx.refresh() || self.app.rx.avail() > 0 {
                add(&self.stats.tx_drops, self.app.drop_rx());
            }
            if let Some(b) = self.backend.as_deref_mut() {
                if let Some(e) = b.take_error() {
                    log::info!("{}: socket error: {e}", self.opener.ifname());
                    error = true;
                }
            }
            let now = Instant::now();
            if error || now >= next_check {
                self.check_link();
                next_check = now
                    + if self.link == Link::Up {
                        LINK_CHECK_UP
                    } else {
                        LINK_CHECK_DOWN
                    };
            }
            if work && !tx_full {
                if (1..COALESCE_BELOW).contains(&from_wire) {
                    thread::sleep(COALESCE);
                }
                continue;
            }
            // Sleep until the wire, the switch, TX room, a stop or the next link check.
            if !tx_full && self.app.rx.enable_notifications() {
                self.app.rx.disable_notifications();
                continue;
            }
            let mut n = 0;
            for (fd, ev) in [
                (self.rx_irq.as_raw_fd(), libc::POLLIN),
                (self.stop.as_raw_fd(), libc::POLLIN),
            ] {
                fds[n] = libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                };
                n += 1;
            }
            if let Some(b) = self.backend.as_deref() {
                n += b.poll_fds(tx_full, &mut fds[n..]);
            }
            let timeout = next_check
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, 1000) as i32;
            // SAFETY: `fds[..n]` are initialised pollfds we own.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout) };
            if r > 0 {
                if fds[0].revents & libc::POLLIN != 0 {
                    let _ = self.rx_irq.read();
                }
                if fds[2..n]
                    .iter()
                    .any(|p| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
                {
                    next_check = Instant::now();
                }
            }
            self.app.rx.disable_notifications();
        }
        log::info!("{}: NIC worker stopped", self.opener.ifname());
    }
}

/// A running NIC port: the worker thread and its counters. Stopping it (or dropping it) joins
/// the worker and unbinds the VALE port; removing the port from the switch is the caller's.
pub struct NicPort {
    ifname: String,
    port: Arc<VPort>,
    switch: Arc<Switch>,
    stats: Arc<NicStats>,
    stop: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for NicPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NicPort")
            .field("ifname", &self.ifname)
            .field("port", &self.port.name())
            .finish()
    }
}

impl NicPort {
    /// Binds the worker to `port` (a port of `switch` with one TX and one RX ring), opens the
    /// interface through `opener` and starts the worker. The first open must succeed: its
    /// error (no such interface, MTU too large, no privileges) is returned.
    pub fn start(
        switch: Arc<Switch>,
        port: Arc<VPort>,
        mut opener: Box<dyn NicOpener>,
    ) -> Result<Self, NicError> {
        let ifname = opener.ifname().to_owned();
        let ioerr = |what| {
            let ifname = ifname.clone();
            move |source| NicError::Io {
                what,
                ifname,
                source,
            }
        };
        let (backend, note) = opener.open()?;
        let ifc = port.interface();
        let n = (ifc.tx.len() + ifc.rx.len()) as u32;
        let csb_mem = CsbMem::new(n).map_err(ioerr("creating the port's CSB"))?;
        let csb = csb_mem.csb();
        let irqs = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()
            .map_err(ioerr("creating eventfds"))?;
        let rx_irq = Arc::clone(&irqs[ifc.tx.len()]);
        let binding = ClientBinding::new(csb.clone(), irqs)
            .ok_or_else(|| NicError::Config("binding does not match the CSB".into()))?;
        let sync = ValePortSync {
            switch: Arc::clone(&switch),
            port: Arc::clone(&port),
        };
        if !sync.bind(Some(&binding)) {
            sync.bind(None);
            return Err(NicError::Config(format!(
                "{}: cannot bind the NIC worker to every ring",
                port.name()
            )));
        }
        let stats = Arc::new(NicStats::default());
        *stats.note.lock().unwrap_or_else(|e| e.into_inner()) = note;
        stats
            .backend
            .store(backend_code(Some(backend.kind())), Ordering::Relaxed);
        add(&stats.opens, 1);
        let stop = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(ioerr("creating eventfds"))?);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut w = Worker {
            opener,
            backend: Some(backend),
            app: AppSide::new(sync, csb),
            rx_irq,
            stop: Arc::clone(&stop),
            stopping: Arc::clone(&stopping),
            stats: Arc::clone(&stats),
            link: Link::Up,
            logged_oversize: 0,
            reopen_failures: 0,
        };
        let name: String = format!("nic-{ifname}").chars().take(15).collect();
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || w.run())
            .map_err(ioerr("starting the worker thread"));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                ValePortSync {
                    switch: Arc::clone(&switch),
                    port: Arc::clone(&port),
                }
                .bind(None);
                return Err(e);
            }
        };
        log::info!("{}: attached {ifname}", port.name());
        Ok(NicPort {
            ifname,
            port,
            switch,
            stats,
            stop,
            stopping,
            thread: Some(thread),
        })
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The VALE port.
    pub fn port(&self) -> &Arc<VPort> {
        &self.port
    }

    /// The counters now.
    pub fn snapshot(&self) -> NicSnapshot {
        self.stats.snapshot(&self.ifname)
    }

    /// Stops the worker and unbinds the port.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        let _ = self.stop.write(1);
        if t.join().is_err() {
            log::error!("{}: the NIC worker panicked", self.ifname);
        }
        ValePortSync {
            switch: Arc::clone(&self.switch),
            port: Arc::clone(&self.port),
        }
        .bind(None);
        log::info!("{}: detached {}", self.port.name(), self.ifname);
    }
}

impl Drop for NicPort {
    fn drop(&mut self) {
        self.stop_now();
    }
}

// ---------------------------------------------------------------------------------------------
// A fake wire, for tests without privileges.

pub mod fake {
    //! An in-memory interface: tests put frames "on the wire" towards the port and read what
    //! the port transmitted, and switch the link down, up or away.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The shared state of a fake interface.
    #[derive(Debug)]
    pub struct FakeWire {
        /// Frames waiting to be received by the port.
        pub inbound: VecDeque<Vec<u8>>,
        /// Frames the port transmitted.
        pub outbound: Vec<Vec<u8>>,
        /// Link state.
        pub link: Link,
        /// Interface index (change it to simulate a re-created interface).
        pub ifindex: u32,
        /// Most frames `outbound` takes before TX is full.
        pub tx_capacity: usize,
        /// Opens so far.
        pub opens: u32,
        /// Largest frame a TX slot holds.
        pub tx_room: usize,
        /// Inbound frames come with unfinished checksums ([`RX_CSUM_PARTIAL`]).
        pub csum_partial: bool,
    }

    /// A handle on a fake interface: clone it to keep one for the test.
    #[derive(Debug, Clone)]
    pub struct FakeNic {
        /// Name.
        pub ifname: String,
        /// State shared with the backend.
        pub wire: Arc<Mutex<FakeWire>>,
        /// Signalled when inbound frames or TX room are added.
        pub ready: Arc<EventFd>,
    }

    impl FakeNic {
        /// A fake interface that is up.
        pub fn new(ifname: &str) -> Self {
            FakeNic {
                ifname: ifname.to_owned(),
                wire: Arc::new(Mutex::new(FakeWire {
                    inbound: VecDeque::new(),
                    outbound: Vec::new(),
                    link: Link::Up,
                    ifindex: 7,
                    tx_capacity: usize::MAX,
                    opens: 0,
                    tx_room: 2048,
                    csum_partial: false,
                })),
                // PANIC: tests only; an eventfd always can be created there.
                ready: Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")),
            }
        }

        /// Runs `f` on the wire, then wakes the worker.
        pub fn with<R>(&self, f: impl FnOnce(&mut FakeWire) -> R) -> R {
            let r = self.with_quiet(f);
            let _ = self.ready.write(1);
            r
        }

        /// Runs `f` on the wire.
        pub fn with_quiet<R>(&self, f: impl FnOnce(&mut FakeWire) -> R) -> R {
            f(&mut self.wire.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }

    impl NicOpener for FakeNic {
        fn ifname(&self) -> &str {
            &self.ifname
        }

        fn link(&self) -> (Link, u32) {
            let w = self.wire.lock().unwrap_or_else(|e| e.into_inner());
            (w.link, if w.link == Link::Gone { 0 } else { w.ifindex })
        }

        fn open(&mut self) -> Result<(Box<dyn NicBackend>, Option<String>), NicError> {
            let mut w = self.wire.lock().unwrap_or_else(|e| e.into_inner());
            if w.link != Link::Up {
                return Err(NicError::NoInterface(self.ifname.clone()));
            }
            w.opens += 1;
            Ok((
                Box::new(FakeBackend {
                    nic: self.clone(),
                    ifindex: w.ifindex,
                    slot: vec![0; w.tx_room],
                    queued: Vec::new(),
                }),
                None,
            ))
        }
    }

    struct FakeBackend {
        nic: FakeNic,
        ifindex: u32,
        slot: Vec<u8>,
        queued: Vec<Vec<u8>>,
    }

    impl NicBackend for FakeBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::AfPacket
        }

        fn ifindex(&self) -> u32 {
            self.ifindex
        }

        fn poll_fds(&self, _want_tx: bool, fds: &mut [libc::pollfd]) -> usize {
            match fds.first_mut() {
                Some(p) => {
                    *p = libc::pollfd {
                        fd: self.nic.ready.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    1
                }
                None => 0,
            }
        }

        fn rx(&mut self, sink: &mut dyn FnMut(&[u8], u32, u32)) -> usize {
            let _ = self.nic.ready.read();
            let frames: Vec<Vec<u8>> = {
                let mut w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
                if w.link != Link::Up {
                    return 0;
                }
                w.inbound.drain(..).collect()
            };
            let flags = if self.nic.with_quiet(|w| w.csum_partial) {
                RX_CSUM_PARTIAL
            } else {
                0
            };
            for f in &frames {
                sink(f, f.len() as u32, flags);
            }
            frames.len()
        }

        fn tx_slot(&mut self) -> Option<&mut [u8]> {
            let w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
            (w.outbound.len() + self.queued.len() < w.tx_capacity).then_some(&mut self.slot[..])
        }

        fn tx_commit(&mut self, len: usize) {
            self.queued
                .push(self.slot[..len.min(self.slot.len())].to_vec());
        }

        fn tx_flush(&mut self) -> io::Result<()> {
            let mut w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
            if w.link != Link::Up {
                self.queued.clear();
                return Err(io::Error::from_raw_os_error(libc::ENETDOWN));
            }
            w.outbound.append(&mut self.queued);
            Ok(())
        }

        fn take_error(&mut self) -> Option<io::Error> {
            let w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
            (w.link != Link::Up || w.ifindex != self.ifindex)
                .then(|| io::Error::from_raw_os_error(libc::ENETDOWN))
        }
    }
}
