//! What the sync loop needs from a port, whatever its kind (VALE port, pipe end, NIC port),
//! and the per-port counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::kring::{BadRing, Dir};
use crate::mem::Interface;

/// The result of one txsync/rxsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The application head the sync validated and processed up to.
    pub rhead: u32,
    /// The application cur the sync saw (a client may publish a new cur alone, to say it
    /// would block).
    pub rcur: u32,
    /// Work is left that needs no new kick (a batch limit was hit): sync again.
    pub more: bool,
}

impl SyncOutcome {
    /// Nothing was processed (no such ring).
    pub const NONE: SyncOutcome = SyncOutcome {
        rhead: 0,
        rcur: 0,
        more: false,
    };

    /// Whether the client published something since this sync (head or cur moved).
    #[inline]
    pub fn superseded_by(&self, a: &ptnet_spec::csb::AtokSnapshot) -> bool {
        a.head != self.rhead || a.cur != self.rcur
    }
}

/// A port the sync loop can drive on behalf of one client.
pub trait SyncPort: Send + Sync {
    /// Name for logs (the port name).
    fn name(&self) -> &str;
    /// The port's `netmap_if` and rings.
    fn interface(&self) -> &Interface;
    /// Runs txsync on TX ring `i`: reads the client's pointers from the CSB, validates them,
    /// processes the new slots, publishes `hwcur`/`hwtail` and interrupts if asked.
    fn txsync(&self, i: u32) -> SyncOutcome;
    /// Runs rxsync on RX ring `i` (the client released slots).
    fn rxsync(&self, i: u32) -> SyncOutcome;
    /// Whether the port may want to hear about RX slots its client releases. Such a port
    /// arms `kern_need_kick` on an RX ring itself when it needs the kick (a pipe whose sender
    /// is blocked on a full ring) and disarms it otherwise; the sync loop runs rxsync on every
    /// wake-up. VALE ports reclaim RX space lazily and never need RX kicks.
    fn rx_needs_kicks(&self) -> bool;
    /// The port's counters.
    fn stats(&self) -> &PortStats;
    /// Binds a client to every ring (CSB order), or unbinds with `None`. Returns false if the
    /// binding does not cover every ring.
    fn bind(&self, client: Option<&crate::kring::ClientBinding>) -> bool;
    /// Whether the sync loop should linger for more work before sleeping. A VALE sender's
    /// loop does the switch's work, and catching the next batch saves a wake-up (what that
    /// buys: [`DEFAULT_LINGER`](crate::kloop::DEFAULT_LINGER)); a pipe's loop only moves
    /// descriptors, and on a machine with fewer cores than threads its lingering takes the core
    /// from the clients (15.8 → 12.0 Mpps, `ptnet-bench pipe --linger-us {0,20}` on the
    /// project machine).
    fn linger_helps(&self) -> bool {
        true
    }
    /// The kind of port (`vale`, `pipe`), for listings.
    fn kind(&self) -> &'static str;
    /// Sets the length of the virtio-net header in front of every frame of this port (0 or
    /// [`VNET_HDR_LEN`](ptnet_spec::vnet::VNET_HDR_LEN)), netmap's `PORT_HDR_SET`: frames the
    /// client sends start with one, and frames it receives get one. Only switch ports carry
    /// the header (the switch resolves it in software toward ports without one); other ports
    /// refuse any length but 0.
    fn set_vnet_hdr_len(&self, len: u32) -> Result<(), &'static str> {
        if len == 0 {
            Ok(())
        } else {
            Err("this kind of port carries no virtio-net header")
        }
    }
    /// The current virtio-net header length (see [`SyncPort::set_vnet_hdr_len`]).
    fn vnet_hdr_len(&self) -> u32 {
        0
    }
}

impl std::fmt::Debug for dyn SyncPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of one port, updated once per batch.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Packets the client transmitted and the port accepted.
    pub tx_packets: AtomicU64,
    /// Their bytes.
    pub tx_bytes: AtomicU64,
    /// Packets delivered to the client.
    pub rx_packets: AtomicU64,
    /// Their bytes.
    pub rx_bytes: AtomicU64,
    /// Packets for this port dropped because its RX ring was full.
    pub rx_drops: AtomicU64,
    /// Packets from this port dropped (bad slot, no destination, runt frame).
    pub tx_drops: AtomicU64,
    /// Of those: bad slots.
    pub tx_drops_bad_slot: AtomicU64,
    /// Of those: no destination.
    pub tx_drops_no_destination: AtomicU64,
    /// Of those: dropped by the forwarding module.
    pub tx_drops_lookup: AtomicU64,
    /// Of those: a source MAC the port is not locked to.
    pub tx_drops_mac_lock: AtomicU64,
    /// Rings reset after the client published invalid pointers.
    pub ring_resets: AtomicU64,
    /// Sync loop wake-ups caused by client kicks.
    pub kicks: AtomicU64,
    /// Interrupts raised to the client.
    pub irqs: AtomicU64,
}

/// A point-in-time copy of [`PortStats`]: the control protocol's counters, field for field.
pub type StatsSnapshot = ptnet_proto::Counters;

/// How full a port's rings are (the control protocol's type).
pub use ptnet_proto::RingUse;

/// A ring's lock, taken even if a thread panicked holding it (the indices it guards are
/// validated on every sync anyway).
pub fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PortStats {
    /// Adds to a counter (relaxed: counters order nothing).
    #[inline]
    pub fn add(c: &AtomicU64, v: u64) {
        if v != 0 {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            tx_packets: r(&self.tx_packets),
            tx_bytes: r(&self.tx_bytes),
            rx_packets: r(&self.rx_packets),
            rx_bytes: r(&self.rx_bytes),
            rx_drops: r(&self.rx_drops),
            tx_drops: r(&self.tx_drops),
            tx_drops_bad_slot: r(&self.tx_drops_bad_slot),
            tx_drops_no_destination: r(&self.tx_drops_no_destination),
            tx_drops_lookup: r(&self.tx_drops_lookup),
            tx_drops_mac_lock: r(&self.tx_drops_mac_lock),
            ring_resets: r(&self.ring_resets),
            kicks: r(&self.kicks),
            irqs: r(&self.irqs),
        }
    }
}

/// Logs a ring reset caused by invalid client pointers, with every index, and counts it.
/// Rate-limited per kring: the first ten, then every thousandth.
pub fn report_bad_ring(
    port: &str,
    dir: Dir,
    ring: u32,
    bad: &BadRing,
    resets: u64,
    stats: &PortStats,
) {
    PortStats::add(&stats.ring_resets, 1);
    if resets <= 10 || resets % 1000 == 0 {
        let k = &bad.k;
        log::warn!(
            "{port}: {dir:?} ring {ring} reset (#{resets}): client head {} cur {} outside \
             hwcur {} rhead {} rcur {} rtail {} hwtail {} (num_slots {})",
            bad.head,
            bad.cur,
            k.hwcur,
            k.rhead,
            k.rcur,
            k.rtail,
            k.hwtail,
            k.num_slots
        );
    }
}

/// A shared handle to any port.
pub type PortRef = Arc<dyn SyncPort>;
