//! The VALE switch: a userspace learning bridge in the style of netmap's VALE/mSwitch.
//!
//! Forwarding runs in the sender's context (its sync loop's txsync), in batches of up to
//! [`VALE_BATCH`] slots and two passes: pass 1 looks up every frame's destination with the
//! switch's [`Lookup`] module (learning bridge by default); pass 2 visits each destination
//! once, reserves slots in its RX ring with a *lease* (so several senders copy into one ring in
//! parallel), copies the frames outside any lock, then completes the lease, publishes the new
//! `hwtail` and interrupts the receiver if it asked. A destination without room drops: a slow
//! port never blocks a sender. Each port has its own region unless created in a shared one, so
//! every frame crossing the switch is copied between regions.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ptnet_spec::netmap::{
    NETMAP_BUF_RESERVED, NS_MOREFRAG, NS_NO_LEARN, NS_PORT_SHIFT, NetmapSlot,
};
use ptnet_spec::ring::nm_next;
use ptnet_spec::vnet::{VNET_HDR_LEN, VnetHdr};

use crate::kring::{Dir, Kring, Lease, Leases, raise};
use crate::mem::{Interface, InterfaceSpec, MemError, Region, RegionConfig, RingView};
use crate::port::{PortStats, RingUse, SyncOutcome, SyncPort, locked, report_bad_ring};
use crate::switch::vnet::{self, MAX_GSO_FRAME, Segments, Unresolvable};

/// Most ports on one switch (index 254 and 255 are netmap's broadcast and drop).
pub const VALE_MAX_PORTS: usize = 254;
/// Most slots forwarded in one batch.
pub const VALE_BATCH: usize = 1024;
/// Most fragments in one frame (netmap's `NETMAP_MAX_FRAGS`).
pub const MAX_FRAGS: usize = 64;
/// Bytes of each frame's head handed to the lookup (a local copy, never shared memory).
pub const MAX_HEADER: usize = 64;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// One port, one of its RX rings.
    Port {
        /// Port index on the switch.
        port: u8,
        /// RX ring of that port (clamped to its ring count).
        ring: u16,
    },
    /// Every port but the sender (ring 0).
    Broadcast,
    /// Nowhere.
    Drop,
}

/// The start of a frame, copied out of shared memory for the lookup.
#[derive(Debug, Clone, Copy)]
pub struct FrameHead<'a> {
    /// The first `min(len, header_len())` bytes of the frame.
    pub bytes: &'a [u8],
    /// Total frame length (all fragments).
    pub len: u32,
    /// Slot flags of the first fragment.
    pub flags: u16,
}

/// A forwarding module (netmap's `netmap_bdg_ops.lookup`).
pub trait Lookup: Send + Sync + fmt::Debug {
    /// How many leading bytes of each frame `lookup` needs (at most [`MAX_HEADER`]).
    fn header_len(&self) -> usize {
        14
    }
    /// Chooses the destination of a frame sent by port `src`.
    fn lookup(&self, frame: &FrameHead<'_>, src: u8) -> Dest;
    /// Port `port` left the switch: forget what points at it.
    fn port_removed(&self, _port: u8) {}
    /// How many stations the module has learned, if it learns (for the counters; a scan is
    /// fine, it is called per scrape, not per frame).
    fn learned(&self) -> Option<usize> {
        None
    }
}

/// Entries in the learning bridge's hash table (netmap's `NM_BDG_HASH`).
pub const BRIDGE_HASH_SIZE: usize = 1024;

/// netmap's default module: learn source MACs, forward known unicast, flood the rest.
///
/// The table is lock free: each entry is `mac << 16 | (port + 1)` in one atomic word (0 =
/// empty). A hash collision overwrites, as in netmap; there is no ageing.
pub struct LearningBridge {
    table: Box<[AtomicU64]>,
}

impl fmt::Debug for LearningBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LearningBridge")
    }
}

impl Default for LearningBridge {
    fn default() -> Self {
        LearningBridge {
            table: (0..BRIDGE_HASH_SIZE).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Marks a locked MAC in [`VPort`]'s `mac_lock` word (above the 48 bits of the address).
const MAC_LOCKED: u64 = 1 << 48;

/// A MAC address as people write it, `02:00:00:00:00:01`.
pub fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn mac_u64(b: &[u8]) -> u64 {
    b[..6].iter().fold(0u64, |a, &x| (a << 8) | u64::from(x))
}

#[inline]
fn mac_hash(mac: u64) -> usize {
    // A multiplicative hash; the top bits are the best mixed.
    (mac.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize & (BRIDGE_HASH_SIZE - 1)
}

impl LearningBridge {
    /// The port a MAC was learned on, if any.
    pub fn port_of(&self, mac: [u8; 6]) -> Option<u8> {
        let m = mac_u64(&mac);
        let e = self.table[mac_hash(m)].load(Ordering::Relaxed);
        (e != 0 && e >> 16 == m).then(|| ((e & 0xffff) - 1) as u8)
    }
}

impl Lookup for LearningBridge {
    fn lookup(&self, frame: &FrameHead<'_>, src: u8) -> Dest {
        if frame.bytes.len() < 14 {
            return Dest::Drop;
        }
        // PANIC: the header holds at least the 14 bytes of an Ethernet header (just above).
        let dst = mac_u64(&frame.bytes[0..6]);
        let smac = mac_u64(&frame.bytes[6..12]);
        if frame.bytes[6] & 1 == 0 && frame.flags & NS_NO_LEARN == 0 {
            let want = smac << 16 | (u64::from(src) + 1);
            let e = &self.table[mac_hash(smac)];
            // Read first: a learned station must not bounce the cache line on every frame.
            if e.load(Ordering::Relaxed) != want {
                e.store(want, Ordering::Relaxed);
            }
        }
        if frame.bytes[0] & 1 == 0 {
            let e = self.table[mac_hash(dst)].load(Ordering::Relaxed);
            if e != 0 && e >> 16 == dst {
                return Dest::Port {
                    port: ((e & 0xffff) - 1) as u8,
                    ring: 0,
                };
            }
        }
        Dest::Broadcast
    }

    fn learned(&self) -> Option<usize> {
        Some(
            self.table
                .iter()
                .filter(|e| e.load(Ordering::Relaxed) != 0)
                .count(),
        )
    }

    fn port_removed(&self, port: u8) {
        for e in self.table.iter() {
            let v = e.load(Ordering::Relaxed);
            if v != 0 && (v & 0xffff) - 1 == u64::from(port) {
                let _ = e.compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

/// Errors of switch management.
#[derive(Debug, thiserror::Error)]
pub enum ValeError {
    /// The switch has 254 ports already.
    #[error("switch {0} is full ({VALE_MAX_PORTS} ports)")]
    Full(String),
    /// A port of that name exists.
    #[error("port {0} already exists")]
    Exists(String),
    /// Bad ring geometry.
    #[error("invalid port geometry: {0}")]
    Geometry(&'static str),
    /// The region could not hold the port.
    #[error("cannot allocate the port's memory")]
    Mem(#[from] MemError),
}

/// How to build a switch port.
#[derive(Debug, Clone)]
pub struct VPortSpec {
    /// TX rings.
    pub tx_rings: u32,
    /// RX rings.
    pub rx_rings: u32,
    /// Slots per ring.
    pub slots: u32,
    /// Extra buffers for the client.
    pub extra_bufs: u32,
    /// Buffer size of a private region.
    pub buf_size: u32,
    /// A shared region (trusted profile); `None` gives the port a private region.
    pub region: Option<Arc<Region>>,
}

impl Default for VPortSpec {
    fn default() -> Self {
        VPortSpec {
            tx_rings: 1,
            rx_rings: 1,
            slots: 1024,
            extra_bufs: 0,
            buf_size: crate::mem::DEFAULT_BUF_SIZE,
            region: None,
        }
    }
}

/// What a switch counts across its ports (added once per batch, never per frame).
#[derive(Debug, Default)]
pub struct SwitchStats {
    /// Frames given to the forwarding module.
    pub lookups: AtomicU64,
    /// Frames sent to every other port (broadcast, multicast, unknown unicast).
    pub floods: AtomicU64,
}

/// A snapshot of [`SwitchStats`] and the module's learned stations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchCounters {
    /// Frames looked up.
    pub lookups: u64,
    /// Frames flooded.
    pub floods: u64,
    /// Stations learned now (`None`: the module does not learn).
    pub learned: Option<u64>,
}

/// A switch's ports by index, and the indices in use (ascending), so that flooding costs the
/// ports that exist, not [`VALE_MAX_PORTS`].
struct PortTable {
    slots: Vec<Option<Arc<VPort>>>,
    live: Vec<u8>,
}

impl PortTable {
    fn get(&self, i: usize) -> Option<&Arc<VPort>> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<VPort>> {
        self.live.iter().filter_map(|&i| self.get(usize::from(i)))
    }
}

/// A VALE switch.
pub struct Switch {
    name: String,
    ports: RwLock<PortTable>,
    lookup: Box<dyn Lookup>,
    stats: SwitchStats,
}

impl fmt::Debug for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switch").field("name", &self.name).finish()
    }
}

impl Switch {
    /// A switch with the learning bridge.
    pub fn new(name: &str) -> Arc<Self> {
        Self::with_lookup(name, Box::new(LearningBridge::default()))
    }

    /// A switch with another forwarding module.
    pub fn with_lookup(name: &str, lookup: Box<dyn Lookup>) -> Arc<Self> {
        Arc::new(Switch {
            name: name.to_owned(),
            ports: RwLock::new(PortTable {
                slots: vec![None; VALE_MAX_PORTS],
                live: Vec::with_capacity(VALE_MAX_PORTS),
            }),
            lookup,
            stats: SwitchStats::default(),
        })
    }

    /// The switch name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The forwarding module.
    pub fn lookup(&self) -> &dyn Lookup {
        &*self.lookup
    }

    /// Frames looked up and flooded so far, and the stations learned now.
    pub fn counters(&self) -> SwitchCounters {
        SwitchCounters {
            lookups: self.stats.lookups.load(Ordering::Relaxed),
            floods: self.stats.floods.load(Ordering::Relaxed),
            learned: self.lookup.learned().map(|n| n as u64),
        }
    }

    /// Creates port `name` (the part after `valeX:`).
    pub fn add_port(
        self: &Arc<Self>,
        name: &str,
        spec: &VPortSpec,
    ) -> Result<Arc<VPort>, ValeError> {
        if spec.tx_rings == 0 || spec.rx_rings == 0 || spec.tx_rings > 64 || spec.rx_rings > 64 {
            return Err(ValeError::Geometry("1..=64 rings per direction"));
        }
        let full = format!("{}:{}", self.name, name);
        let mut ports = self.ports.write().unwrap_or_else(|e| e.into_inner());
        if ports.iter().any(|p| p.name == full) {
            return Err(ValeError::Exists(full));
        }
        let idx = ports
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| ValeError::Full(self.name.clone()))?;
        let nrings = spec.tx_rings + spec.rx_rings;
        let region = match &spec.region {
            Some(r) => Arc::clone(r),
            None => {
                let mut cfg = RegionConfig::for_rings(1, nrings, spec.slots, spec.extra_bufs);
                cfg.buf_size = spec.buf_size;
                Region::new(&full, &cfg)?
            }
        };
        let ifc = region.create_interface(&InterfaceSpec {
            name: &full,
            tx_slots: vec![spec.slots; spec.tx_rings as usize],
            rx_slots: vec![spec.slots; spec.rx_rings as usize],
            extra_bufs: spec.extra_bufs,
            ..Default::default()
        })?;
        let port = Arc::new(VPort::new(idx as u8, full, ifc));
        ports.slots[idx] = Some(Arc::clone(&port));
        let at = ports.live.partition_point(|&i| usize::from(i) < idx);
        ports.live.insert(at, idx as u8);
        log::info!(
            "{}: port {} (index {idx}, region {} of {} KiB{})",
            self.name,
            port.name,
            port.ifc.region().id(),
            port.ifc.region().size() / 1024,
            if spec.region.is_some() {
                ", shared"
            } else {
                ""
            }
        );
        Ok(port)
    }

    /// Removes a port; in-flight forwarding to it finishes first.
    pub fn remove_port(&self, port: &VPort) {
        let mut ports = self.ports.write().unwrap_or_else(|e| e.into_inner());
        let slot = &mut ports.slots[port.idx as usize];
        if slot.as_ref().is_some_and(|p| std::ptr::eq(&**p, port)) {
            *slot = None;
            ports.live.retain(|&i| i != port.idx);
            self.lookup.port_removed(port.idx);
            log::info!("{}: port {} removed", self.name, port.name);
        }
    }

    /// A port by its full name (`valeX:Y`).
    pub fn port(&self, name: &str) -> Option<Arc<VPort>> {
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        ports.iter().find(|p| p.name == name).cloned()
    }

    /// All ports, in index order.
    pub fn ports(&self) -> Vec<Arc<VPort>> {
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        ports.iter().cloned().collect()
    }
}

/// One fragment collected by the preflush.
#[derive(Debug, Clone, Copy, Default)]
struct FtEntry {
    buf_idx: u32,
    len: u16,
}

/// One frame of the batch.
#[derive(Debug, Clone, Copy)]
struct Pkt {
    first: u16,
    frags: u8,
    flags: u16,
    bytes: u32,
    ring: u16,
}

/// The sender-side state of a TX ring: its kring and the forwarding scratch space, allocated
/// once.
struct TxSide {
    kr: Kring,
    ft: Vec<FtEntry>,
    pkts: Vec<Pkt>,
    /// Per destination port: indices into `pkts`, in order.
    lists: Vec<Vec<u16>>,
    touched: Vec<u8>,
    /// Scratch space of the virtio-net header mismatch path, allocated the first time a
    /// frame of this ring takes it.
    mismatch: Option<Box<Mismatch>>,
}

/// Scratch space of the mismatch path: one linearized frame and the frames it becomes.
struct Mismatch {
    lin: Vec<u8>,
    out: Segments,
}

/// Bytes of resolved frames collected before they are delivered (a few TSO frames' worth).
const MISMATCH_BYTES: usize = 4 * MAX_GSO_FRAME;

impl Mismatch {
    fn new() -> Box<Self> {
        Box::new(Mismatch {
            lin: vec![0; MAX_GSO_FRAME + VNET_HDR_LEN as usize],
            out: Segments::with_capacity(MISMATCH_BYTES, VALE_BATCH),
        })
    }
}

/// The receiver-side state of an RX ring.
struct RxSide {
    kr: Kring,
    leases: Leases,
}

/// A port of a switch.
pub struct VPort {
    idx: u8,
    name: String,
    ifc: Interface,
    tx: Vec<Mutex<TxSide>>,
    rx: Vec<Mutex<RxSide>>,
    stats: PortStats,
    /// Length of the virtio-net header in front of this port's frames (0 or 12).
    vnet_hdr_len: AtomicU32,
    /// The only source MAC the port may send from, as [`mac_u64`] gives it with bit 48 set;
    /// 0 when the port may send from any.
    mac_lock: AtomicU64,
}

impl fmt::Debug for VPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VPort")
            .field("idx", &self.idx)
            .field("name", &self.name)
            .finish()
    }
}

impl VPort {
    fn new(idx: u8, name: String, ifc: Interface) -> Self {
        let tx = ifc
            .tx
            .iter()
            .map(|r| {
                Mutex::new(TxSide {
                    kr: Kring::new(r.clone(), Dir::Tx),
                    ft: Vec::with_capacity(VALE_BATCH + MAX_FRAGS),
                    pkts: Vec::with_capacity(VALE_BATCH),
                    lists: (0..VALE_MAX_PORTS).map(|_| Vec::new()).collect(),
                    touched: Vec::with_capacity(VALE_MAX_PORTS),
                    mismatch: None,
                })
            })
            .collect();
        let rx = ifc
            .rx
            .iter()
            .map(|r| {
                let kr = Kring::new(r.clone(), Dir::Rx);
                let mut leases = Leases::default();
                leases.reset(&kr.k);
                Mutex::new(RxSide { kr, leases })
            })
            .collect();
        VPort {
            idx,
            name,
            ifc,
            tx,
            rx,
            stats: PortStats::default(),
            vnet_hdr_len: AtomicU32::new(0),
            mac_lock: AtomicU64::new(0),
        }
    }

    /// Full name, `valeX:Y`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Index on the switch.
    pub fn index(&self) -> u8 {
        self.idx
    }

    /// The port's interface and region.
    pub fn interface(&self) -> &Interface {
        &self.ifc
    }

    /// Counters.
    pub fn stats(&self) -> &PortStats {
        &self.stats
    }

    /// Sets the virtio-net header length of the port's frames: 0 or [`VNET_HDR_LEN`]. Frames
    /// between ports of different lengths take the switch's mismatch path (header added, or
    /// resolved in software: checksums filled, TSO frames segmented).
    pub fn set_vnet_hdr_len(&self, len: u32) -> Result<(), &'static str> {
        if len != 0 && len != VNET_HDR_LEN {
            return Err("a virtio-net header is 0 or 12 bytes long");
        }
        let old = self.vnet_hdr_len.swap(len, Ordering::AcqRel);
        if old != len {
            log::info!("{}: virtio-net header length {old} -> {len}", self.name);
        }
        Ok(())
    }

    /// The port's virtio-net header length.
    pub fn vnet_hdr_len(&self) -> u32 {
        self.vnet_hdr_len.load(Ordering::Acquire)
    }

    /// Locks the port to one source MAC (port security): its frames from any other source
    /// are dropped (counted in `tx_drops`) before the switch looks at them, so the port
    /// cannot take another station's traffic by claiming its address. `None` unlocks.
    pub fn set_mac_lock(&self, mac: Option<[u8; 6]>) {
        let v = mac.map_or(0, |m| mac_u64(&m) | MAC_LOCKED);
        let old = self.mac_lock.swap(v, Ordering::AcqRel);
        if old != v {
            match mac {
                Some(m) => log::info!("{}: may send from {} only", self.name, mac_str(m)),
                None => log::info!("{}: may send from any MAC", self.name),
            }
        }
    }

    /// How full its rings are now (each ring's lock taken briefly, as a sync does).
    pub fn ring_use(&self) -> RingUse {
        RingUse {
            tx: self.tx.iter().map(|m| u64::from(locked(m).kr.used())).sum(),
            rx: self.rx.iter().map(|m| u64::from(locked(m).kr.used())).sum(),
        }
    }

    /// The MAC the port is locked to, if any.
    pub fn mac_lock(&self) -> Option<[u8; 6]> {
        let v = self.mac_lock.load(Ordering::Acquire);
        (v & MAC_LOCKED != 0).then(|| {
            let b = v.to_be_bytes();
            [b[2], b[3], b[4], b[5], b[6], b[7]]
        })
    }

    /// Binds (or, with `None`, unbinds) a client to every ring; rings are reset and every
    /// slot gets its original buffer back.
    pub fn bind(&self, client: Option<&crate::kring::ClientBinding>) -> bool {
        let ntx = self.tx.len() as u32;
        // No sync of this port runs while its slots are rewritten.
        let rx_guards: Vec<_> = self
            .rx
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let tx_guards: Vec<_> = self
            .tx
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        self.ifc.restore();
        drop(tx_guards);
        drop(rx_guards);
        let mut ok = true;
        for (i, m) in self.tx.iter().enumerate() {
            let mut t = m.lock().unwrap_or_else(|e| e.into_inner());
            match client {
                Some(c) => ok &= t.kr.bind(c.ring(i as u32)),
                None => t.kr.unbind(),
            }
            t.kr.reset();
        }
        for (i, m) in self.rx.iter().enumerate() {
            let mut r = m.lock().unwrap_or_else(|e| e.into_inner());
            let RxSide { kr, leases } = &mut *r;
            match client {
                Some(c) => ok &= kr.bind(c.ring(ntx + i as u32)),
                None => kr.unbind(),
            }
            kr.reset();
            leases.reset(&kr.k);
        }
        ok
    }
}

/// A VALE port driven by a client's sync loop.
pub struct ValePortSync {
    /// The switch the port is on.
    pub switch: Arc<Switch>,
    /// The port.
    pub port: Arc<VPort>,
}

impl SyncPort for ValePortSync {
    fn name(&self) -> &str {
        &self.port.name
    }

    fn interface(&self) -> &Interface {
        &self.port.ifc
    }

    fn txsync(&self, i: u32) -> SyncOutcome {
        let Some(m) = self.port.tx.get(i as usize) else {
            return SyncOutcome::NONE;
        };
        let mut tx = m.lock().unwrap_or_else(|e| e.into_inner());
        let v = match tx.kr.prologue() {
            Ok((v, _flags)) => v,
            Err(bad) => {
                report_bad_ring(
                    &self.port.name,
                    Dir::Tx,
                    i,
                    &bad,
                    tx.kr.resets,
                    &self.port.stats,
                );
                let irq = tx.kr.publish(false);
                drop(tx);
                raise(irq);
                return SyncOutcome {
                    rhead: bad.k.rhead,
                    rcur: bad.k.rcur,
                    more: false,
                };
            }
        };
        let start = tx.kr.k.hwcur;
        let done = if start == v.head {
            start
        } else {
            forward(&self.switch, &self.port, &mut tx, v.head)
        };
        let moved = done != start;
        if moved {
            tx.kr.tx_consumed_all(done);
        }
        let irq = tx.kr.publish(moved);
        if irq.is_some() {
            PortStats::add(&self.port.stats.irqs, 1);
        }
        drop(tx);
        raise(irq);
        SyncOutcome {
            rhead: v.head,
            rcur: v.cur,
            more: done != v.head,
        }
    }

    fn rxsync(&self, i: u32) -> SyncOutcome {
        let Some(m) = self.port.rx.get(i as usize) else {
            return SyncOutcome::NONE;
        };
        let mut rx = m.lock().unwrap_or_else(|e| e.into_inner());
        let rhead = rx_reclaim(&self.port, i, &mut rx);
        let rcur = rx.kr.k.rcur;
        let irq = rx.kr.publish(false);
        drop(rx);
        raise(irq);
        SyncOutcome {
            rhead,
            rcur,
            more: false,
        }
    }

    fn rx_needs_kicks(&self) -> bool {
        false
    }

    fn stats(&self) -> &PortStats {
        &self.port.stats
    }

    fn bind(&self, client: Option<&crate::kring::ClientBinding>) -> bool {
        self.port.bind(client)
    }

    fn kind(&self) -> &'static str {
        "vale"
    }

    fn set_vnet_hdr_len(&self, len: u32) -> Result<(), &'static str> {
        self.port.set_vnet_hdr_len(len)
    }

    fn vnet_hdr_len(&self) -> u32 {
        self.port.vnet_hdr_len()
    }
}

/// The receiver's rxsync, run by whoever holds its RX lock: slots the client released
/// (`[hwcur, head)`) become free for new leases. Returns the validated head.
fn rx_reclaim(port: &VPort, ring: u32, rx: &mut RxSide) -> u32 {
    match rx.kr.prologue() {
        Ok((v, _)) => {
            rx.kr.k.hwcur = v.head;
            v.head
        }
        Err(bad) => {
            report_bad_ring(&port.name, Dir::Rx, ring, &bad, rx.kr.resets, &port.stats);
            rx.kr.k.rhead
        }
    }
}

/// Forwards the slots `[hwcur, head)` of a TX ring in batches; returns how far it got
/// (`head`, unless the batch limit stopped it at a frame boundary).
fn forward(sw: &Switch, src: &VPort, tx: &mut TxSide, head: u32) -> u32 {
    let region = Arc::clone(tx.kr.ring.region());
    let n = tx.kr.num_slots();
    let buf_size = u32::from(u16::try_from(region.buf_size()).unwrap_or(u16::MAX));
    let mut j = tx.kr.k.hwcur;

    // Preflush: collect whole frames (fragment chains) into the forwarding table.
    tx.ft.clear();
    tx.pkts.clear();
    let mut bad_frames = 0u64;
    let mut first = 0usize;
    let mut frags = 0usize;
    let mut bytes = 0u32;
    let mut bad = false;
    let mut chain_start = j;
    let mut first_flags = 0u16;
    while j != head && tx.ft.len() < VALE_BATCH {
        let s: NetmapSlot = tx.kr.ring.read_slot(j);
        if frags == 0 {
            first = tx.ft.len();
            bytes = 0;
            bad = false;
            chain_start = j;
            first_flags = s.flags;
        }
        let len = u32::from(s.len);
        // Buffers 0 and 1 are reserved scratch space: never a source of data.
        let ok =
            s.buf_idx >= NETMAP_BUF_RESERVED && region.buf(s.buf_idx).is_some() && len <= buf_size;
        bad |= !ok;
        tx.ft.push(FtEntry {
            buf_idx: s.buf_idx,
            len: if ok { s.len } else { 0 },
        });
        bytes += if ok { len } else { 0 };
        frags += 1;
        j = nm_next(j, n);
        if s.flags & NS_MOREFRAG == 0 || frags == MAX_FRAGS || j == head {
            // A chain cut by `head` is truncated, as netmap does.
            if bad || bytes == 0 {
                bad_frames += 1;
            } else {
                tx.pkts.push(Pkt {
                    first: first as u16,
                    frags: frags as u8,
                    flags: first_flags,
                    bytes,
                    ring: 0,
                });
            }
            frags = 0;
        }
    }
    if frags > 0 {
        // The batch limit fell inside a chain: leave the chain for the next batch.
        tx.ft.truncate(first);
        j = chain_start;
    }
    PortStats::add(&src.stats.tx_drops, bad_frames);
    PortStats::add(&src.stats.tx_drops_bad_slot, bad_frames);
    if !tx.pkts.is_empty() {
        flush(sw, src, tx, &region);
    }
    j
}

/// Pass 1 (lookup) and pass 2 (per destination lease and copy) over the collected frames.
fn flush(sw: &Switch, src: &VPort, tx: &mut TxSide, region: &Arc<Region>) {
    let ports = sw.ports.read().unwrap_or_else(|e| e.into_inner());
    let lookup = &*sw.lookup;
    let hlen = lookup.header_len().min(MAX_HEADER);
    let src_hdr = src.vnet_hdr_len();
    let TxSide {
        ft,
        pkts,
        lists,
        touched,
        mismatch,
        ..
    } = tx;
    let mut hdr = [0u8; MAX_HEADER];
    let mut tx_pkts = 0u64;
    let mut tx_bytes = 0u64;
    // Drops by cause: a locked source MAC, no destination, the module's own verdict.
    let (mut locked_out, mut no_dest, mut refused) = (0u64, 0u64, 0u64);
    let (mut lookups, mut floods) = (0u64, 0u64);
    let mac_lock = src.mac_lock.load(Ordering::Relaxed);

    for (pi, p) in pkts.iter_mut().enumerate() {
        let frags = &ft[usize::from(p.first)..usize::from(p.first) + usize::from(p.frags)];
        let k = if src_hdr == 0 {
            let e = frags[0];
            let k = hlen.min(usize::from(e.len));
            // The buffer was checked in preflush; a client writing it meanwhile can only
            // garble the copy.
            region
                .buf(e.buf_idx)
                .map_or(0, |b| b.read(0, &mut hdr[..k]))
        } else {
            // The Ethernet header follows the virtio-net one, maybe in the next fragment.
            copy_chain(region, frags, src_hdr as usize, &mut hdr[..hlen])
        };
        // Port security: a locked port's frame from another source goes nowhere, and the
        // switch does not learn from it.
        if mac_lock != 0 && (k < 12 || mac_u64(&hdr[6..12]) | MAC_LOCKED != mac_lock) {
            locked_out += 1;
            continue;
        }
        let frame = FrameHead {
            bytes: &hdr[..k],
            len: p.bytes,
            flags: p.flags,
        };
        let add = |d: usize, lists: &mut Vec<Vec<u16>>, touched: &mut Vec<u8>| {
            if lists[d].is_empty() {
                touched.push(d as u8);
                if lists[d].capacity() == 0 {
                    lists[d].reserve_exact(VALE_BATCH);
                }
            }
            lists[d].push(pi as u16);
        };
        lookups += 1;
        match lookup.lookup(&frame, src.idx) {
            Dest::Port { port, ring } => {
                let d = usize::from(port);
                if d == usize::from(src.idx) || ports.get(d).is_none() {
                    no_dest += 1;
                    continue;
                }
                p.ring = ring;
                add(d, lists, touched);
            }
            Dest::Broadcast => {
                floods += 1;
                p.ring = 0;
                for &d in &ports.live {
                    if d != src.idx {
                        add(usize::from(d), lists, touched);
                    }
                }
            }
            Dest::Drop => {
                refused += 1;
                continue;
            }
        }
        tx_pkts += 1;
        tx_bytes += u64::from(p.bytes);
    }
    PortStats::add(&src.stats.tx_packets, tx_pkts);
    PortStats::add(&src.stats.tx_bytes, tx_bytes);
    PortStats::add(&src.stats.tx_drops, locked_out + no_dest + refused);
    PortStats::add(&src.stats.tx_drops_mac_lock, locked_out);
    PortStats::add(&src.stats.tx_drops_no_destination, no_dest);
    PortStats::add(&src.stats.tx_drops_lookup, refused);
    PortStats::add(&sw.stats.lookups, lookups);
    PortStats::add(&sw.stats.floods, floods);

    for &d in touched.iter() {
        let list = &mut lists[usize::from(d)];
        if let Some(dst) = ports.get(usize::from(d)) {
            let dst_hdr = dst.vnet_hdr_len();
            if dst_hdr == src_hdr {
                deliver(dst, list, pkts, ft, region, src_hdr != 0);
            } else {
                let mm = mismatch.get_or_insert_with(Mismatch::new);
                deliver_mismatch(dst, list, pkts, ft, region, (src_hdr, dst_hdr), mm);
            }
        }
        list.clear();
    }
    touched.clear();
}

/// Copies the frames of `list` into `dst`, ring by ring; `hdr`: they carry a virtio-net
/// header, whose device-only flags are cleared on the way ([`vnet::clear_device_only_flags`]).
fn deliver(
    dst: &VPort,
    list: &[u16],
    pkts: &[Pkt],
    ft: &[FtEntry],
    src_region: &Region,
    hdr: bool,
) {
    let nrx = dst.rx.len() as u16;
    let dst_buf = dst.ifc.region().buf_size();
    // Usually every frame goes to ring 0: one pass. Otherwise one pass per ring used.
    let mut ring = 0u16;
    loop {
        let r = ring.min(nrx - 1);
        let mut need = 0u32;
        let mut next_ring = None;
        for &pi in list {
            let p = &pkts[usize::from(pi)];
            let pr = p.ring.min(nrx - 1);
            if pr == r {
                if fits(p, ft, dst_buf) {
                    need += u32::from(p.frags);
                }
            } else if pr > r && next_ring.is_none_or(|x| pr < x) {
                next_ring = Some(pr);
            }
        }
        if need > 0 {
            deliver_ring(dst, r, list, pkts, ft, src_region, need, hdr);
        } else {
            let dropped = list
                .iter()
                .filter(|&&pi| pkts[usize::from(pi)].ring.min(nrx - 1) == r)
                .count();
            PortStats::add(&dst.stats.rx_drops, dropped as u64);
        }
        match next_ring {
            Some(x) => ring = x,
            None => break,
        }
    }
}

fn fits(p: &Pkt, ft: &[FtEntry], dst_buf: u32) -> bool {
    ft[usize::from(p.first)..usize::from(p.first) + usize::from(p.frags)]
        .iter()
        .all(|e| u32::from(e.len) <= dst_buf)
}

#[allow(clippy::too_many_arguments)]
fn deliver_ring(
    dst: &VPort,
    r: u16,
    list: &[u16],
    pkts: &[Pkt],
    ft: &[FtEntry],
    src_region: &Region,
    need: u32,
    hdr: bool,
) {
    let nrx = dst.rx.len() as u16;
    let Some((lease, ring)) = reserve(dst, r, need) else {
        let dropped = list
            .iter()
            .filter(|&&pi| pkts[usize::from(pi)].ring.min(nrx - 1) == r)
            .count();
        PortStats::add(&dst.stats.rx_drops, dropped as u64);
        return;
    };

    let dregion = ring.region();
    let dst_buf = dregion.buf_size();
    let n = ring.num_slots();
    let mut j = lease.start;
    let mut left = lease.len;
    let (mut rx_pkts, mut rx_bytes, mut drops) = (0u64, 0u64, 0u64);
    for &pi in list {
        let p = &pkts[usize::from(pi)];
        if p.ring.min(nrx - 1) != r {
            continue;
        }
        let frags = u32::from(p.frags);
        if !fits(p, ft, dst_buf) || frags > left {
            drops += 1;
            continue;
        }
        for f in 0..usize::from(p.frags) {
            let e = ft[usize::from(p.first) + f];
            let d = ring.read_slot(j);
            // An invalid index in a kernel-owned slot is the receiver's own corruption: its
            // frame lands in its reserved scratch buffer 0, never outside its region.
            let (didx, dbuf) = dregion.buf_or_scratch(d.buf_idx);
            if let Some(sbuf) = src_region.buf(e.buf_idx) {
                dbuf.copy_from(sbuf, usize::from(e.len));
            }
            if hdr && f == 0 {
                // Copied, so the sender cannot change it behind the check.
                vnet::clear_device_only_flags(dbuf);
            }
            let mut flags = u16::from(p.frags) << NS_PORT_SHIFT;
            if f + 1 < usize::from(p.frags) {
                flags |= NS_MOREFRAG;
            }
            ring.write_slot(
                j,
                NetmapSlot {
                    buf_idx: didx,
                    len: e.len,
                    flags,
                    ptr: 0,
                },
            );
            j = nm_next(j, n);
        }
        left -= frags;
        rx_pkts += 1;
        rx_bytes += u64::from(p.bytes);
    }

    // Counted before the frames become visible, so a reader of both never sees fewer.
    PortStats::add(&dst.stats.rx_packets, rx_pkts);
    PortStats::add(&dst.stats.rx_bytes, rx_bytes);
    PortStats::add(&dst.stats.rx_drops, drops);
    complete(dst, r, &ring, lease, left, j);
}

/// Reserves up to `need` slots of RX ring `r` of `dst`: the lease and the ring, or `None` if
/// the ring is full.
fn reserve(dst: &VPort, r: u16, need: u32) -> Option<(Lease, RingView)> {
    let mut rx = dst.rx[usize::from(r)]
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    rx_reclaim(dst, u32::from(r), &mut rx);
    let RxSide { kr, leases } = &mut *rx;
    let lease = leases.reserve(&kr.k, need)?;
    Some((lease, kr.ring.clone()))
}

/// Completes a lease of which `left` slots from `j` on went unused: publishes the ring's new
/// tail if this lease was the oldest and interrupts the receiver if it asked.
fn complete(dst: &VPort, r: u16, ring: &RingView, lease: Lease, left: u32, mut j: u32) {
    let n = ring.num_slots();
    let irq = {
        let mut rx = dst.rx[usize::from(r)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let RxSide { kr, leases } = &mut *rx;
        let mut lease = lease;
        let used = lease.len - left;
        if left > 0 && !leases.shrink(&kr.k, &mut lease, used) {
            // Not the newest lease: the unused slots become empty frames, as in netmap.
            for _ in 0..left {
                let d = ring.read_slot(j);
                ring.write_slot(
                    j,
                    NetmapSlot {
                        len: 0,
                        flags: 0,
                        ..d
                    },
                );
                j = nm_next(j, n);
            }
        }
        match leases.complete(lease) {
            Some(t) => {
                let moved = t != kr.k.hwtail;
                kr.k.hwtail = t;
                kr.k.rtail = t;
                kr.publish(moved)
            }
            None => None,
        }
    };
    if irq.is_some() {
        PortStats::add(&dst.stats.irqs, 1);
    }
    raise(irq);
}

/// Copies bytes `skip..` of a fragment chain of `region` into `out`, as many as fit; returns
/// how many were copied.
fn copy_chain(region: &Region, frags: &[FtEntry], mut skip: usize, out: &mut [u8]) -> usize {
    let mut n = 0;
    for e in frags {
        let len = usize::from(e.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let k = (len - skip).min(out.len() - n);
        // A client writing the buffer meanwhile can only garble the copy.
        if let Some(b) = region.buf(e.buf_idx) {
            b.read(skip, &mut out[n..n + k]);
        }
        n += k;
        skip = 0;
        if n == out.len() {
            break;
        }
    }
    n
}

/// The virtio-net header mismatch path (netmap's `bdg_mismatch_datapath`): frames between
/// ports with different header lengths `(src, dst)` are linearized, given a zero header
/// (toward a port with one) or resolved in software (checksums, TCP segmentation) and
/// delivered in groups as large as the scratch space allows.
fn deliver_mismatch(
    dst: &VPort,
    list: &[u16],
    pkts: &[Pkt],
    ft: &[FtEntry],
    src_region: &Region,
    (src_hdr, dst_hdr): (u32, u32),
    mm: &mut Mismatch,
) {
    let nrx = dst.rx.len() as u16;
    let Mismatch { lin, out } = mm;
    out.clear();
    let mut ring = 0u16;
    let mut dropped = 0u64;
    for &pi in list {
        let p = &pkts[usize::from(pi)];
        let r = p.ring.min(nrx - 1);
        if r != ring && !out.is_empty() {
            deliver_segments(dst, ring, out);
            out.clear();
        }
        ring = r;
        let frags = &ft[usize::from(p.first)..usize::from(p.first) + usize::from(p.frags)];
        let n = copy_chain(src_region, frags, 0, lin);
        if n < p.bytes as usize {
            dropped += 1; // longer than any valid frame
            continue;
        }
        let frame = &lin[..n];
        let mut res = transform(frame, src_hdr, dst_hdr, out);
        if res == Err(Unresolvable::Full) {
            deliver_segments(dst, ring, out);
            out.clear();
            res = transform(frame, src_hdr, dst_hdr, out);
        }
        if let Err(e) = res {
            dropped += 1;
            log::debug!(
                "{}: frame dropped on the header mismatch path: {e}",
                dst.name
            );
        }
    }
    if !out.is_empty() {
        deliver_segments(dst, ring, out);
        out.clear();
    }
    PortStats::add(&dst.stats.rx_drops, dropped);
}

/// One frame of a port with a `src_hdr`-byte header, made fit for a port with `dst_hdr`.
fn transform(
    frame: &[u8],
    src_hdr: u32,
    dst_hdr: u32,
    out: &mut Segments,
) -> Result<usize, Unresolvable> {
    let (h, body) = if src_hdr == 0 {
        (VnetHdr::default(), frame)
    } else {
        let h = VnetHdr::from_le_bytes(frame).ok_or(Unresolvable::Headers)?;
        (h, &frame[src_hdr as usize..])
    };
    if dst_hdr == 0 {
        vnet::resolve(&h, body, out)
    } else {
        vnet::with_header(&h, body, dst_hdr as usize, out).map(|()| 1)
    }
}

/// Copies the linear frames of `segs` into RX ring `r` of `dst` (each frame a chain of as
/// many slots as its length needs).
fn deliver_segments(dst: &VPort, r: u16, segs: &Segments) {
    // A slot's length is 16 bits: a 65536-byte buffer takes at most 65535 of them.
    let dst_buf = (dst.ifc.region().buf_size() as usize).min(usize::from(u16::MAX));
    let slots = |f: &[u8]| f.len().div_ceil(dst_buf).max(1);
    let need: usize = segs.iter().map(slots).filter(|&k| k <= MAX_FRAGS).sum();
    let Some((lease, ring)) = reserve(dst, r, need as u32) else {
        PortStats::add(&dst.stats.rx_drops, segs.len() as u64);
        return;
    };
    let dregion = ring.region();
    let n = ring.num_slots();
    let mut j = lease.start;
    let mut left = lease.len as usize;
    let (mut rx_pkts, mut rx_bytes, mut drops) = (0u64, 0u64, 0u64);
    for f in segs.iter() {
        let k = slots(f);
        if k > MAX_FRAGS || k > left {
            drops += 1;
            continue;
        }
        for (c, chunk) in f.chunks(dst_buf).enumerate() {
            let d = ring.read_slot(j);
            let (didx, dbuf) = dregion.buf_or_scratch(d.buf_idx);
            dbuf.write(0, chunk);
            let mut flags = (k as u16) << NS_PORT_SHIFT;
            if c + 1 < k {
                flags |= NS_MOREFRAG;
            }
            ring.write_slot(
                j,
                NetmapSlot {
                    buf_idx: didx,
                    len: chunk.len() as u16,
                    flags,
                    ptr: 0,
                },
            );
            j = nm_next(j, n);
        }
        left -= k;
        rx_pkts += 1;
        rx_bytes += f.len() as u64;
    }
    PortStats::add(&dst.stats.rx_packets, rx_pkts);
    PortStats::add(&dst.stats.rx_bytes, rx_bytes);
    PortStats::add(&dst.stats.rx_drops, drops);
    complete(dst, r, &ring, lease, left as u32, j);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> [u8; 14] {
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn bridge_learns_sources_and_forwards_known_unicast() {
        let br = LearningBridge::default();
        let look = |f: &[u8], src| {
            br.lookup(
                &FrameHead {
                    bytes: f,
                    len: 60,
                    flags: 0,
                },
                src,
            )
        };
        assert_eq!(
            look(&frame(B, A), 0),
            Dest::Broadcast,
            "unknown unicast floods"
        );
        assert_eq!(br.port_of(A), Some(0));
        assert_eq!(look(&frame(A, B), 3), Dest::Port { port: 0, ring: 0 });
        assert_eq!(look(&frame(BCAST, A), 0), Dest::Broadcast);
        assert_eq!(look(&frame(B, A), 0), Dest::Port { port: 3, ring: 0 });
        assert_eq!(look(&frame(B, A)[..13], 0), Dest::Drop, "runt frame");
    }

    #[test]
    fn bridge_does_not_learn_multicast_sources_or_no_learn_frames() {
        let br = LearningBridge::default();
        let mcast = [3, 0, 0, 0, 0, 1];
        br.lookup(
            &FrameHead {
                bytes: &frame(A, mcast),
                len: 60,
                flags: 0,
            },
            1,
        );
        assert_eq!(br.port_of(mcast), None);
        br.lookup(
            &FrameHead {
                bytes: &frame(A, B),
                len: 60,
                flags: NS_NO_LEARN,
            },
            1,
        );
        assert_eq!(br.port_of(B), None);
    }

    #[test]
    fn removing_a_port_forgets_its_stations() {
        let br = LearningBridge::default();
        br.lookup(
            &FrameHead {
                bytes: &frame(B, A),
                len: 60,
                flags: 0,
            },
            5,
        );
        assert_eq!(br.port_of(A), Some(5));
        br.port_removed(5);
        assert_eq!(br.port_of(A), None);
    }

    #[test]
    fn the_live_list_holds_the_ports_that_exist_in_index_order() {
        let sw = Switch::new("vale9");
        let spec = VPortSpec {
            slots: 64,
            ..Default::default()
        };
        let p: Vec<_> = (0..4)
            .map(|i| sw.add_port(&format!("p{i}"), &spec).unwrap())
            .collect();
        sw.remove_port(&p[1]);
        sw.remove_port(&p[3]);
        // The freed index 1 is taken again; the list stays sorted and holds no gaps.
        let q = sw.add_port("q", &spec).unwrap();
        assert_eq!(q.idx, 1);
        let t = sw.ports.read().unwrap();
        assert_eq!(t.live, [0, 1, 2]);
        let names: Vec<_> = t.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["vale9:p0", "vale9:q", "vale9:p2"]);
    }
}
