//! Counters of a NIC port, from the interface's point of view.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::backend::{BackendKind, Link};

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
    pub(crate) link: AtomicU8,
    pub(crate) backend: AtomicU8,
    pub(crate) note: Mutex<Option<String>>,
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

pub(crate) const NO_BACKEND: u8 = 0;

pub(crate) fn backend_code(k: Option<BackendKind>) -> u8 {
    match k {
        None => NO_BACKEND,
        Some(BackendKind::AfPacket) => 1,
        Some(BackendKind::AfXdp) => 2,
        Some(BackendKind::Netmap) => 3,
        Some(BackendKind::Tap) => 4,
    }
}

pub(crate) fn backend_of(v: u8) -> Option<BackendKind> {
    match v {
        1 => Some(BackendKind::AfPacket),
        2 => Some(BackendKind::AfXdp),
        3 => Some(BackendKind::Netmap),
        4 => Some(BackendKind::Tap),
        _ => None,
    }
}

#[inline]
pub(crate) fn add(c: &AtomicU64, v: u64) {
    if v != 0 {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

impl NicStats {
    pub(crate) fn snapshot(&self, ifname: &str) -> NicSnapshot {
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
