//! Counters of a virtio-net port, across frontend connections, updated once per batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one served port, across frontend connections (updated once per batch).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames the guest transmitted into the port.
    pub tx_packets: AtomicU64,
    /// Their bytes (without the virtio-net header).
    pub tx_bytes: AtomicU64,
    /// TX chains refused (malformed, outside guest memory, longer than 64 port buffers, an
    /// offload request that cannot be resolved).
    pub tx_bad: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_packets: AtomicU64,
    /// Their bytes (without the virtio-net header).
    pub rx_bytes: AtomicU64,
    /// Frames dropped on RX (malformed guest buffers, frame larger than the buffers).
    pub rx_bad: AtomicU64,
    /// Used-ring notifications (call eventfd writes) on TX queues.
    pub tx_notifies: AtomicU64,
    /// Used-ring notifications on RX queues.
    pub rx_notifies: AtomicU64,
    /// Worker wake-ups from epoll (kicks or port interrupts).
    pub wakeups: AtomicU64,
    /// Frontend connections accepted.
    pub connections: AtomicU64,
    /// Device starts.
    pub starts: AtomicU64,
    /// Workers stopped by a broken queue (until the frontend resets the device).
    pub broken: AtomicU64,
    /// Whether the device runs now.
    pub running: AtomicBool,
}

/// A point-in-time copy of [`NetStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NetStatsSnapshot {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_bad: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_bad: u64,
    pub tx_notifies: u64,
    pub rx_notifies: u64,
    pub wakeups: u64,
    pub connections: u64,
    pub starts: u64,
    pub broken: u64,
    pub running: bool,
}

impl NetStats {
    /// Adds to a counter (relaxed: counters order nothing).
    #[inline]
    pub fn add(c: &AtomicU64, v: u64) {
        if v != 0 {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> NetStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStatsSnapshot {
            tx_packets: r(&self.tx_packets),
            tx_bytes: r(&self.tx_bytes),
            tx_bad: r(&self.tx_bad),
            rx_packets: r(&self.rx_packets),
            rx_bytes: r(&self.rx_bytes),
            rx_bad: r(&self.rx_bad),
            tx_notifies: r(&self.tx_notifies),
            rx_notifies: r(&self.rx_notifies),
            wakeups: r(&self.wakeups),
            connections: r(&self.connections),
            starts: r(&self.starts),
            broken: r(&self.broken),
            running: self.running.load(Ordering::Relaxed),
        }
    }
}
