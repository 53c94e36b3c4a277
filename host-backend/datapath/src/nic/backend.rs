//! What every NIC backend is and says: the backend trait the worker drives, the opener that
//! (re)opens it, the interface's link state, the errors, and the constants they share.

use std::fmt;
use std::io;

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
    /// The host stack's tap of a NIC port ([`super::tap`]); never chosen for an interface.
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
    /// netmap if `/dev/netmap` exists, otherwise AF_PACKET (see [`super::HostInterface`]).
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

impl NicError {
    /// The error for a failed `what` on `ifname`, for `map_err`.
    pub fn io(what: &'static str, ifname: &str) -> impl FnOnce(io::Error) -> NicError + use<> {
        let ifname = ifname.to_owned();
        move |source| NicError::Io {
            what,
            ifname,
            source,
        }
    }
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

    pub(crate) fn from_u8(v: u8) -> Link {
        match v {
            0 => Link::Up,
            1 => Link::Down,
            _ => Link::Gone,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
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

pub use ptnet_proto::error_chain;
