//! netmap pipes: `X{N` (master) and `X}N` (slave), two ends in one region, zero copy.
//!
//! Each direction pairs the sender's TX ring with the receiver's RX ring *in lockstep*: slot
//! *k* of one is slot *k* of the other, and both start with the same buffers. Transmitting
//! copies the slot descriptors `[hwcur, head)` of the TX ring into the same slots of the RX
//! ring (buffers never move, only indices do) and publishes them to the receiver; releasing
//! copies the receiver's slots back (it may have swapped buffers) and gives the space back to
//! the sender. Only complete frames cross: a trailing NS_MOREFRAG chain waits for its end.
//!
//! Invariants of a direction: `rx.hwtail == tx.hwcur` and `tx.hwtail == prev(rx.hwcur)`.
//! Both ends can read and write each other's buffers: pipes are for mutually trusted peers.

use std::fmt;
use std::sync::{Arc, Mutex};

use ptnet_spec::netmap::{NS_MOREFRAG, NetmapSlot};
use ptnet_spec::ring::{nm_next, nm_prev};

use crate::kring::ClientBinding;
use crate::kring::{Dir, Interrupt, Kring, raise};
use crate::mem::{Interface, InterfaceSpec, MemError, Region, RegionConfig};
use crate::port::{PortStats, RingUse, SyncOutcome, SyncPort, locked, report_bad_ring};

/// One direction: the sender's TX kring and the receiver's RX kring.
struct PipeDir {
    tx: Kring,
    rx: Kring,
}

/// Which end of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `X{N`.
    Master,
    /// `X}N`.
    Slave,
}

/// One end of a pipe.
pub struct PipeEnd {
    name: String,
    ifc: Interface,
    /// Per ring pair: the direction this end sends on, and the one it receives on.
    send: Vec<Arc<Mutex<PipeDir>>>,
    recv: Vec<Arc<Mutex<PipeDir>>>,
    stats: PortStats,
}

impl fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeEnd").field("name", &self.name).finish()
    }
}

/// A pipe: both ends, created and destroyed together.
#[derive(Debug)]
pub struct Pipe {
    /// `X{N` end.
    pub master: Arc<PipeEnd>,
    /// `X}N` end.
    pub slave: Arc<PipeEnd>,
}

impl Pipe {
    /// Creates pipe `id` on `parent` with `rings` ring pairs of `slots` slots, in `region`
    /// (the parent's, for netmap semantics) or in a new region.
    pub fn new(
        parent: &str,
        id: &str,
        rings: u32,
        slots: u32,
        extra_bufs: u32,
        region: Option<Arc<Region>>,
    ) -> Result<Self, MemError> {
        if rings == 0 || rings > 64 {
            return Err(MemError::Config("1..=64 ring pairs per pipe"));
        }
        let region = match region {
            Some(r) => r,
            None => Region::new(
                &format!("{parent}{{{id}"),
                // Two interfaces; the slave's rings share the master's buffers.
                &RegionConfig::for_rings(2, 4 * rings, slots, extra_bufs.saturating_mul(2))
                    .with_bufs_for_rings(2 * rings, slots, extra_bufs.saturating_mul(2)),
            )?,
        };
        let r = rings as usize;
        let master_name = format!("{parent}{{{id}");
        let slave_name = format!("{parent}}}{id}");
        let m = region.create_interface(&InterfaceSpec {
            name: &master_name,
            tx_slots: vec![slots; r],
            rx_slots: vec![slots; r],
            extra_bufs,
            ..Default::default()
        })?;
        let s = region.create_interface(&InterfaceSpec {
            name: &slave_name,
            tx_slots: vec![slots; r],
            rx_slots: vec![slots; r],
            tx_shares: m.rx.iter().map(Some).collect(),
            rx_shares: m.tx.iter().map(Some).collect(),
            extra_bufs,
        })?;
        let m_to_s: Vec<_> = (0..r)
            .map(|i| {
                Arc::new(Mutex::new(PipeDir {
                    tx: Kring::new(m.tx[i].clone(), Dir::Tx),
                    rx: Kring::new(s.rx[i].clone(), Dir::Rx),
                }))
            })
            .collect();
        let s_to_m: Vec<_> = (0..r)
            .map(|i| {
                Arc::new(Mutex::new(PipeDir {
                    tx: Kring::new(s.tx[i].clone(), Dir::Tx),
                    rx: Kring::new(m.rx[i].clone(), Dir::Rx),
                }))
            })
            .collect();
        log::info!("pipe {master_name} / {slave_name}: region {}", region.id());
        Ok(Pipe {
            master: Arc::new(PipeEnd {
                name: master_name,
                ifc: m,
                send: m_to_s.clone(),
                recv: s_to_m.clone(),
                stats: PortStats::default(),
            }),
            slave: Arc::new(PipeEnd {
                name: slave_name,
                ifc: s,
                send: s_to_m,
                recv: m_to_s,
                stats: PortStats::default(),
            }),
        })
    }

    /// One end.
    pub fn end(&self, e: End) -> &Arc<PipeEnd> {
        match e {
            End::Master => &self.master,
            End::Slave => &self.slave,
        }
    }
}

impl RegionConfig {
    /// Sizes the buffer pool for `rings` rings of `slots` slots plus `extra` buffers (when
    /// some rings share buffers and [`RegionConfig::for_rings`] would over-count).
    pub fn with_bufs_for_rings(mut self, rings: u32, slots: u32, extra: u32) -> Self {
        self.num_bufs = ptnet_spec::netmap::NETMAP_BUF_RESERVED
            .saturating_add(rings.saturating_mul(slots))
            .saturating_add(extra);
        self
    }
}

impl PipeEnd {
    /// `X{N` or `X}N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The end's interface.
    pub fn interface(&self) -> &Interface {
        &self.ifc
    }

    /// Counters.
    pub fn stats(&self) -> &PortStats {
        &self.stats
    }

    /// How full this end's rings are now (each direction's lock taken briefly).
    pub fn ring_use(&self) -> RingUse {
        RingUse {
            tx: self
                .send
                .iter()
                .map(|m| u64::from(locked(m).tx.used()))
                .sum(),
            rx: self
                .recv
                .iter()
                .map(|m| u64::from(locked(m).rx.used()))
                .sum(),
        }
    }

    /// Binds (or unbinds) a client. The rings keep their state, so packets in flight survive
    /// a client reconnecting to this end; the peer is not disturbed.
    pub fn bind(&self, client: Option<&ClientBinding>) -> bool {
        let ntx = self.send.len() as u32;
        // A new client finds the layout intact (the slots stay: buffers may be in flight
        // between the two ends).
        self.ifc.restore_layout();
        let mut ok = true;
        for (i, d) in self.send.iter().enumerate() {
            let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
            match client {
                Some(c) => ok &= d.tx.bind(c.ring(i as u32)),
                None => d.tx.unbind(),
            }
        }
        for (i, d) in self.recv.iter().enumerate() {
            let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
            match client {
                Some(c) => ok &= d.rx.bind(c.ring(ntx + i as u32)),
                None => d.rx.unbind(),
            }
        }
        ok
    }
}

/// Moves everything that can move in one direction: the receiver's released slots go back to
/// the sender, the sender's complete frames go to the receiver. Returns the interrupts due.
///
/// Releases are normally picked up whenever the sender syncs. Only a sender blocked on a full
/// ring needs the receiver to kick when it releases: then this arms the receiver's RX kick
/// request, with the double check (if the receiver released meanwhile, that is processed
/// now). Only the sender's own sync disarms it, when the sender is not blocked: the receiver's
/// side sees the sender in transition (between publishing cur and asking for an interrupt)
/// and must not take the request away. A receiver consuming a stream thus makes no system
/// call while its sender keeps sending.
fn pipe_sync(
    d: &mut PipeDir,
    names: (&str, &str),
    ring: u32,
    stats: (&PortStats, &PortStats),
    from_sender: bool,
) -> [Option<Arc<dyn Interrupt>>; 2] {
    let PipeDir { tx, rx } = d;
    let n = tx.num_slots();
    let (old_rx_tail, old_tx_tail) = (rx.k.hwtail, tx.k.hwtail);

    for _ in 0..4 {
        // Receiver side: slots [hwcur, head) were consumed; their descriptors go back.
        match rx.prologue() {
            Ok((v, _)) => {
                let mut k = rx.k.hwcur;
                while k != v.head {
                    tx.ring.write_slot(k, rx.ring.read_slot(k));
                    k = nm_next(k, n);
                }
                rx.k.hwcur = v.head;
            }
            Err(bad) => report_bad_ring(names.1, Dir::Rx, ring, &bad, rx.resets, stats.1),
        }

        // Sender side: complete frames in [hwcur, head) cross.
        match tx.prologue() {
            Ok((v, _)) => {
                let region = Arc::clone(tx.ring.region());
                let buf_size = region.buf_size();
                let mut j = tx.k.hwcur;
                let mut done = j;
                let (mut pkts, mut bytes, mut pkt_bytes) = (0u64, 0u64, 0u64);
                while j != v.head {
                    let s = tx.ring.read_slot(j);
                    // Trusted peers, but an index outside the region still never crosses.
                    let ok = region.buf(s.buf_idx).is_some() && u32::from(s.len) <= buf_size;
                    let s = if ok {
                        s
                    } else {
                        NetmapSlot {
                            buf_idx: 0,
                            len: 0,
                            ..s
                        }
                    };
                    rx.ring.write_slot(j, s);
                    j = nm_next(j, n);
                    pkt_bytes += u64::from(s.len);
                    if s.flags & NS_MOREFRAG == 0 {
                        done = j;
                        pkts += 1;
                        bytes += pkt_bytes;
                        pkt_bytes = 0;
                    }
                }
                tx.k.hwcur = done;
                rx.k.hwtail = done;
                rx.k.rtail = done;
                PortStats::add(&stats.0.tx_packets, pkts);
                PortStats::add(&stats.0.tx_bytes, bytes);
                PortStats::add(&stats.1.rx_packets, pkts);
                PortStats::add(&stats.1.rx_bytes, bytes);
            }
            Err(bad) => report_bad_ring(names.0, Dir::Tx, ring, &bad, tx.resets, stats.0),
        }
        tx.k.hwtail = nm_prev(rx.k.hwcur, n);
        tx.k.rtail = tx.k.hwtail;

        // netmap's "would block": the sender's cur reached its tail (a full ring, or a client
        // that set cur at its tail because it needs more room than it has).
        let sender_blocked = tx.k.rcur == tx.k.hwtail
            || tx
                .entries()
                .is_some_and(|(atok, _)| atok.appl_wants_interrupt());
        match rx.entries() {
            // Released while we were arming: take it now, and look again.
            Some((atok, ktoa))
                if sender_blocked && ktoa.kern_enable_kicks(atok).head != rx.k.rhead =>
            {
                continue;
            }
            Some((_, ktoa)) if !sender_blocked && from_sender => ktoa.kern_disable_kicks(),
            _ => {}
        }
        break;
    }

    let irq_tx = tx.publish(tx.k.hwtail != old_tx_tail);
    let irq_rx = rx.publish(rx.k.hwtail != old_rx_tail);
    if irq_tx.is_some() {
        PortStats::add(&stats.0.irqs, 1);
    }
    if irq_rx.is_some() {
        PortStats::add(&stats.1.irqs, 1);
    }
    [irq_tx, irq_rx]
}

/// A pipe end driven by its client's sync loop.
pub struct PipePortSync {
    /// This end.
    pub end: Arc<PipeEnd>,
    /// The other end (for its name and counters).
    pub peer: Arc<PipeEnd>,
}

impl PipePortSync {
    /// Syncs ring pair `i` in the direction this end sends on (`sending`) or receives on,
    /// and reports this end's ring of it.
    fn sync_direction(&self, i: u32, sending: bool) -> SyncOutcome {
        let dirs = if sending {
            &self.end.send
        } else {
            &self.end.recv
        };
        let Some(m) = dirs.get(i as usize) else {
            return SyncOutcome::NONE;
        };
        let (sender, receiver) = if sending {
            (&self.end, &self.peer)
        } else {
            (&self.peer, &self.end)
        };
        let mut d = m.lock().unwrap_or_else(|e| e.into_inner());
        let irqs = pipe_sync(
            &mut d,
            (&sender.name, &receiver.name),
            i,
            (&sender.stats, &receiver.stats),
            sending,
        );
        let mine = if sending { &d.tx.k } else { &d.rx.k };
        let (rhead, rcur) = (mine.rhead, mine.rcur);
        drop(d);
        irqs.into_iter().for_each(raise);
        SyncOutcome {
            rhead,
            rcur,
            more: false,
        }
    }
}

impl SyncPort for PipePortSync {
    fn name(&self) -> &str {
        &self.end.name
    }

    fn interface(&self) -> &Interface {
        &self.end.ifc
    }

    fn txsync(&self, i: u32) -> SyncOutcome {
        self.sync_direction(i, true)
    }

    fn rxsync(&self, i: u32) -> SyncOutcome {
        self.sync_direction(i, false)
    }

    fn rx_needs_kicks(&self) -> bool {
        true
    }

    fn linger_helps(&self) -> bool {
        false
    }

    fn stats(&self) -> &PortStats {
        &self.end.stats
    }

    fn bind(&self, client: Option<&ClientBinding>) -> bool {
        self.end.bind(client)
    }

    fn kind(&self) -> &'static str {
        "pipe"
    }
}
