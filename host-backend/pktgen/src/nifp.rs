//! A `netmap_if` and its rings in a mapped region, from the application's side.
//!
//! The region is the datapath's own [`Region`], attached to `/dev/netmap` (the netmap backend)
//! or to a memfd (tests). [`Nifp`] finds the `netmap_if` at the registration's `nr_offset`
//! and the rings from its `ring_ofs[]` exactly as netmap's `NETMAP_IF`, `NETMAP_TXRING`,
//! `NETMAP_RXRING` and `NETMAP_BUF` do: NIC TX rings first, then host TX rings, then NIC RX
//! rings (`ring_ofs[i + ni_tx_rings + ni_host_tx_rings]`), each offset relative to the
//! `netmap_if`; buffer `i` of a ring at `ring + buf_ofs + i * nr_buf_size`.
//!
//! Who writes what (netmap's rules; the region is shared with the kernel and, through the
//! ptnet device, with the host):
//!
//! * `head`, `cur`: written by the application (this module, at the end of every batch and
//!   before every sync), read by the kernel during txsync/rxsync/poll;
//! * `tail`: written by the kernel during a sync, read here after it;
//! * slots and buffers in `[head, tail)` belong to the application, the others to the kernel.
//!
//! The region is not trusted. Every offset, count and index is read once into a local,
//! validated against the mapping and netmap's invariants, and only the local is used: a bad
//! layout fails [`Nifp::new`]; a bad `tail`, `buf_idx` or `len` met on the data path is
//! ignored (the ring stays where it was, the slot carries no data), logged once with its
//! values and counted in [`Nifp::rejected`]. Nothing read from the region is ever followed
//! outside the mapping, and nothing panics on it.

use std::mem::{align_of, offset_of, size_of};
use std::sync::Arc;

use ptnet_datapath::mem::{Buf, Region, RingView};

use ptnet_spec::netmap::{
    NETMAP_IF_RING_OFS, NETMAP_RING_SLOTS_OFS, NR_RX, NR_TX, NS_MOREFRAG, NetmapIf, NetmapRing,
    NetmapSlot, NmreqRegister,
};
use ptnet_spec::ring::{MAX_SLOTS, MIN_SLOTS, distance, in_circular_range, nm_next, nm_prev};

use crate::backend::Geometry;

/// Most rings per direction accepted from a registration.
pub const MAX_RINGS: u32 = 1024;
/// Largest buffer accepted (a slot's `len` is 16 bits).
pub const MAX_BUF_SIZE: u32 = 65536;

/// A ring, for messages: direction and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingId {
    /// A TX ring (else RX).
    pub tx: bool,
    /// Ring number within its direction.
    pub r: u32,
}

impl std::fmt::Display for RingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ring {}", if self.tx { "TX" } else { "RX" }, self.r)
    }
}

/// Why a region does not hold a usable `netmap_if`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `nr_offset` does not leave room for the `netmap_if` and its ring offsets.
    #[error("netmap_if at {offset:#x} outside the {size:#x}-byte region")]
    NifpOutside {
        /// `nr_offset`.
        offset: u64,
        /// Size of the mapping.
        size: usize,
    },
    /// The registration's ring counts are out of range.
    #[error("{tx} TX and {rx} RX rings: need 1..={MAX_RINGS} of each")]
    RingCount {
        /// TX rings.
        tx: u32,
        /// RX rings.
        rx: u32,
    },
    /// The `netmap_if` and the registration disagree on the ring counts.
    #[error(
        "netmap_if has {nifp_tx} TX and {nifp_rx} RX rings, the registration {reg_tx} and {reg_rx}"
    )]
    RingCountMismatch {
        /// `ni_tx_rings`.
        nifp_tx: u32,
        /// `ni_rx_rings`.
        nifp_rx: u32,
        /// `nr_tx_rings`.
        reg_tx: u32,
        /// `nr_rx_rings`.
        reg_rx: u32,
    },
    /// `ni_host_tx_rings` or `ni_host_rx_rings` is out of range.
    #[error("{tx} host TX and {rx} host RX rings: at most {MAX_RINGS}")]
    HostRingCount {
        /// Host TX rings.
        tx: u32,
        /// Host RX rings.
        rx: u32,
    },
    /// A ring's `ring_ofs` entry is 0: the ring is not mapped.
    #[error("{0} is not mapped (ring_ofs 0)")]
    Unmapped(RingId),
    /// A ring does not lie (aligned) inside the mapping.
    #[error("{ring} at netmap_if {ring_ofs:+#x} lies outside the region")]
    RingOutside {
        /// The ring.
        ring: RingId,
        /// Its `ring_ofs` entry.
        ring_ofs: i64,
    },
    /// A ring's size differs from the registration's, or is out of range.
    #[error("{ring} has {num_slots} slots, the registration {want}")]
    RingSize {
        /// The ring.
        ring: RingId,
        /// `num_slots`.
        num_slots: u32,
        /// `nr_tx_slots` or `nr_rx_slots`.
        want: u32,
    },
    /// A ring's `dir` is not its direction's.
    #[error("{ring} has dir {dir}")]
    RingDir {
        /// The ring.
        ring: RingId,
        /// `dir`.
        dir: u16,
    },
    /// A ring's buffer size is out of range or differs from the first ring's.
    #[error("{ring} has {nr_buf_size}-byte buffers (first ring: {first})")]
    BufSize {
        /// The ring.
        ring: RingId,
        /// `nr_buf_size`.
        nr_buf_size: u32,
        /// The first ring's buffer size (0 for the first ring itself).
        first: u32,
    },
    /// A ring's buffer pool starts outside the mapping.
    #[error("{ring}: buffer pool at ring {buf_ofs:+#x} lies outside the region")]
    BufPool {
        /// The ring.
        ring: RingId,
        /// `buf_ofs`.
        buf_ofs: i64,
    },
    /// A ring's `head`, `cur` or `tail` is not a slot index.
    #[error("{ring}: head {head}, cur {cur}, tail {tail} not all below {num_slots}")]
    Pointers {
        /// The ring.
        ring: RingId,
        /// `head`.
        head: u32,
        /// `cur`.
        cur: u32,
        /// `tail`.
        tail: u32,
        /// `num_slots`.
        num_slots: u32,
    },
}

/// The application's view of one ring: its place in the region (a bounds-checked
/// [`RingView`]) and the application's indices.
///
/// Invariant (checked by [`Nifp::new`]): `head`, `cur`, `tail` are below the ring's size.
#[derive(Debug)]
struct Ring {
    view: RingView,
    /// Our copy of `head` (the one in the region is only written, never trusted).
    head: u32,
    /// Our copy of `cur`.
    cur: u32,
    /// `tail` as last read and validated.
    tail: u32,
    /// TX: free slots the application waits for (a multi-slot frame that did not fit).
    want: u32,
    id: RingId,
}

impl Ring {
    fn num_slots(&self) -> u32 {
        self.view.num_slots()
    }

    /// Slots the application owns: `tail - head` (netmap's `nm_ring_space`, with `cur`
    /// at `head` outside of waits).
    fn space(&self) -> u32 {
        distance(self.head, self.tail, self.num_slots())
    }

    /// Writes our `head` and `cur` into the ring (netmap: `ring->head = ring->cur = i`).
    fn publish(&self) {
        self.view.publish_head_cur(self.head, self.cur);
    }

    /// Buffer `idx`, if it is one of the region's.
    fn buf(&self, idx: u32) -> Option<Buf<'_>> {
        self.view.region().buf(idx)
    }

    fn buf_size(&self) -> u32 {
        self.view.region().buf_size()
    }

    fn num_bufs(&self) -> u32 {
        self.view.region().layout().num_bufs
    }
}

/// A registered `netmap_if` and its NIC rings in an attached [`Region`] (the mapping of
/// `/dev/netmap`, or of a memfd).
#[derive(Debug)]
pub struct Nifp {
    /// TX rings, then RX rings.
    rings: Vec<Ring>,
    tx_rings: u32,
    rx_rings: u32,
    buf_size: u32,
    /// Data-path values rejected (bad tail, buf_idx or len).
    rejected: u64,
    region: Arc<Region>,
}

/// Reads field `$f` of the ring header at `$at` (an offset in `$map`).
macro_rules! ring_field {
    ($map:expr, $at:expr, $t:ty, $f:ident) => {
        $map.read::<$t>($at + offset_of!(NetmapRing, $f) as u64)
    };
}

/// What validating one ring found, before the region's buffers are known.
struct Found {
    at: u64,
    num_slots: u32,
    buf_size: u32,
    pool: u64,
    head: u32,
    tail: u32,
    id: RingId,
}

impl Nifp {
    /// Finds and validates the `netmap_if` the registration `reg` describes (`nr_offset`,
    /// ring and slot counts) in `map`, which holds the whole region (`nr_memsize` bytes).
    pub fn new(mut map: Region, reg: &NmreqRegister) -> Result<Self, LayoutError> {
        let (tx, rx) = (u32::from(reg.nr_tx_rings), u32::from(reg.nr_rx_rings));
        if !(1..=MAX_RINGS).contains(&tx) || !(1..=MAX_RINGS).contains(&rx) {
            return Err(LayoutError::RingCount { tx, rx });
        }
        let outside = LayoutError::NifpOutside {
            offset: reg.nr_offset,
            size: map.size(),
        };
        // ring_ofs[] holds 8-byte words: the netmap_if is 8-aligned (netmap's always is).
        if reg.nr_offset % align_of::<i64>() as u64 != 0 {
            return Err(outside);
        }
        let ni: NetmapIf = map.read(reg.nr_offset).ok_or(outside.clone())?;
        if (ni.ni_tx_rings, ni.ni_rx_rings) != (tx, rx) {
            return Err(LayoutError::RingCountMismatch {
                nifp_tx: ni.ni_tx_rings,
                nifp_rx: ni.ni_rx_rings,
                reg_tx: tx,
                reg_rx: rx,
            });
        }
        let (htx, hrx) = (ni.ni_host_tx_rings, ni.ni_host_rx_rings);
        if htx > MAX_RINGS || hrx > MAX_RINGS {
            return Err(LayoutError::HostRingCount { tx: htx, rx: hrx });
        }
        // ring_ofs[]: NIC TX, host TX, NIC RX, host RX (all below 4 * MAX_RINGS: no overflow).
        let entries = (tx + htx + rx + hrx) as usize;
        let last_entry =
            reg.nr_offset + (NETMAP_IF_RING_OFS + (entries - 1) * size_of::<i64>()) as u64;
        map.read::<i64>(last_entry).ok_or(outside)?;
        let mut found = Vec::with_capacity((tx + rx) as usize);
        let mut buf_size = 0;
        let order = (0..tx)
            .map(|r| (RingId { tx: true, r }, r))
            .chain((0..rx).map(|r| (RingId { tx: false, r }, tx + htx + r)));
        for (id, entry) in order {
            let ring_ofs: i64 = map
                .read(reg.nr_offset + (NETMAP_IF_RING_OFS + entry as usize * 8) as u64)
                .unwrap_or(0);
            let want = if id.tx {
                reg.nr_tx_slots
            } else {
                reg.nr_rx_slots
            };
            let f = Self::ring(&map, reg.nr_offset, ring_ofs, id, want, buf_size)?;
            buf_size = f.buf_size;
            found.push(f);
        }
        // One buffer pool for the whole region, as netmap lays it out: every ring must see
        // the buffers at the same place.
        let pool = found[0].pool;
        if let Some(f) = found.iter().find(|f| f.pool != pool) {
            return Err(LayoutError::BufPool {
                ring: f.id,
                buf_ofs: f.pool as i64 - f.at as i64,
            });
        }
        map.set_buffers(pool, buf_size)
            .map_err(|_| LayoutError::BufPool {
                ring: found[0].id,
                buf_ofs: pool as i64 - found[0].at as i64,
            })?;
        let region = Arc::new(map);
        let mut rings = Vec::with_capacity(found.len());
        for f in found {
            let view = region
                .ring(f.at, f.num_slots)
                .ok_or(LayoutError::RingOutside {
                    ring: f.id,
                    ring_ofs: f.at as i64 - reg.nr_offset as i64,
                })?;
            // netmap's application pointers start where the kernel left them; cur goes back
            // to head (no wake-up point set).
            rings.push(Ring {
                view,
                head: f.head,
                cur: f.head,
                tail: f.tail,
                want: 1,
                id: f.id,
            });
        }
        Ok(Nifp {
            rings,
            tx_rings: tx,
            rx_rings: rx,
            buf_size,
            rejected: 0,
            region,
        })
    }

    /// Validates one ring (`NETMAP_TXRING`/`NETMAP_RXRING`: the `netmap_if` plus `ring_ofs`).
    fn ring(
        map: &Region,
        nifp: u64,
        ring_ofs: i64,
        id: RingId,
        want: u32,
        first_buf_size: u32,
    ) -> Result<Found, LayoutError> {
        if ring_ofs == 0 {
            return Err(LayoutError::Unmapped(id));
        }
        let outside = LayoutError::RingOutside { ring: id, ring_ofs };
        let at = i64::try_from(nifp)
            .ok()
            .and_then(|n| n.checked_add(ring_ofs))
            .and_then(|a| u64::try_from(a).ok())
            .ok_or(outside.clone())?;
        if at % align_of::<NetmapRing>() as u64 != 0
            || map
                .read::<u64>(at + NETMAP_RING_SLOTS_OFS as u64 - 8)
                .is_none()
        {
            return Err(outside);
        }
        // PANIC: none below; the header is inside the mapping, so every field read succeeds
        // (the fallbacks only satisfy the types).
        let num_slots = ring_field!(map, at, u32, num_slots).unwrap_or(0);
        if num_slots != want || !(MIN_SLOTS..=MAX_SLOTS).contains(&num_slots) {
            return Err(LayoutError::RingSize {
                ring: id,
                num_slots,
                want,
            });
        }
        let last_slot = at
            + (NETMAP_RING_SLOTS_OFS + (num_slots as usize - 1) * size_of::<NetmapSlot>()) as u64;
        map.read::<NetmapSlot>(last_slot).ok_or(outside)?;
        let dir = ring_field!(map, at, u16, dir).unwrap_or(u16::MAX);
        if dir != if id.tx { NR_TX } else { NR_RX } {
            return Err(LayoutError::RingDir { ring: id, dir });
        }
        let buf_size = ring_field!(map, at, u32, nr_buf_size).unwrap_or(0);
        if buf_size == 0
            || buf_size > MAX_BUF_SIZE
            || (first_buf_size != 0 && buf_size != first_buf_size)
        {
            return Err(LayoutError::BufSize {
                ring: id,
                nr_buf_size: buf_size,
                first: first_buf_size,
            });
        }
        let buf_ofs = ring_field!(map, at, i64, buf_ofs).unwrap_or(i64::MIN);
        let pool = i64::try_from(at)
            .ok()
            .and_then(|a| a.checked_add(buf_ofs))
            .and_then(|p| u64::try_from(p).ok())
            .filter(|&p| p <= map.size() as u64);
        let Some(pool) = pool else {
            return Err(LayoutError::BufPool { ring: id, buf_ofs });
        };
        let head = ring_field!(map, at, u32, head).unwrap_or(u32::MAX);
        let cur = ring_field!(map, at, u32, cur).unwrap_or(u32::MAX);
        let tail = ring_field!(map, at, u32, tail).unwrap_or(u32::MAX);
        if head >= num_slots || cur >= num_slots || tail >= num_slots {
            return Err(LayoutError::Pointers {
                ring: id,
                head,
                cur,
                tail,
                num_slots,
            });
        }
        Ok(Found {
            at,
            num_slots,
            buf_size,
            pool,
            head,
            tail,
            id,
        })
    }

    /// Ring counts and sizes.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            tx_rings: self.tx_rings,
            rx_rings: self.rx_rings,
            tx_slots: self.rings[0].num_slots(),
            rx_slots: self.rings[self.tx_rings as usize].num_slots(),
            buf_size: self.buf_size,
        }
    }

    /// Data-path values rejected so far (a `tail` outside its window, a `buf_idx` outside the
    /// region, a received `len` above the buffer size).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The region, as mapped.
    pub fn mapping(&self) -> &Region {
        &self.region
    }

    /// Index in `rings` of TX ring `r` (clamped: an out-of-range ring is a caller bug, not a
    /// reason to panic).
    fn tx(&self, r: u32) -> usize {
        r.min(self.tx_rings - 1) as usize
    }

    fn rx(&self, r: u32) -> usize {
        (self.tx_rings + r.min(self.rx_rings - 1)) as usize
    }

    fn dir(&self, tx: bool) -> std::ops::Range<usize> {
        if tx {
            0..self.tx_rings as usize
        } else {
            self.tx_rings as usize..self.rings.len()
        }
    }

    /// Free slots in TX ring `r`, as of the last sync.
    pub fn tx_space(&self, r: u32) -> u32 {
        self.rings[self.tx(r)].space()
    }

    /// Received slots waiting in RX ring `r`, as of the last sync.
    pub fn rx_pending(&self, r: u32) -> u32 {
        self.rings[self.rx(r)].space()
    }

    fn reject(rejected: &mut u64, what: std::fmt::Arguments<'_>) {
        if *rejected == 0 {
            log::warn!("netmap region: {what} (ignored; later ones are only counted)");
        }
        *rejected += 1;
    }

    /// Fills up to `max` free slots of TX ring `r`, one frame each (`fill(i, buf)` returns
    /// frame `i`'s length), advances `head` and `cur` past them and writes both into the
    /// ring. A slot whose `buf_idx` lies outside the region goes out empty. Returns the
    /// frames queued.
    pub fn tx_batch<F: FnMut(u32, &mut [u8]) -> u16>(
        &mut self,
        r: u32,
        max: u32,
        mut fill: F,
    ) -> u32 {
        let k = self.tx(r);
        let Nifp {
            rings, rejected, ..
        } = self;
        let ring = &mut rings[k];
        let n = ring.space().min(max);
        let cap = ring.buf_size().min(u32::from(u16::MAX)) as u16;
        let mut i = ring.head;
        for j in 0..n {
            let mut s = ring.view.read_slot(i);
            s.len = match ring.buf(s.buf_idx) {
                Some(b) => {
                    // SAFETY: the slot is ours ([head, tail)), so by netmap's rules nobody
                    // else touches its buffer until we hand it over, and this is the only
                    // slice of it.
                    fill(j, unsafe { b.as_mut_slice() }).min(cap)
                }
                None => {
                    Self::reject(
                        rejected,
                        format_args!(
                            "{} slot {i}: buf_idx {} outside the {} buffers",
                            ring.id,
                            s.buf_idx,
                            ring.num_bufs()
                        ),
                    );
                    0
                }
            };
            s.flags &= !NS_MOREFRAG;
            ring.view.write_slot(i, s);
            i = nm_next(i, ring.num_slots());
        }
        ring.head = i;
        ring.cur = i;
        if n > 0 {
            ring.want = 1;
            ring.publish();
        }
        n
    }

    /// Queues one frame made of `frags`, one slot each, chained with NS_MOREFRAG. Returns
    /// false, queuing nothing, if a fragment exceeds a buffer or the ring lacks room (then a
    /// wait for room waits for room for the whole frame).
    pub fn tx_frags(&mut self, r: u32, frags: &[&[u8]]) -> bool {
        let k = self.tx(r);
        let Nifp {
            rings, rejected, ..
        } = self;
        let ring = &mut rings[k];
        if frags.is_empty() || frags.iter().any(|f| f.len() > ring.buf_size() as usize) {
            return false;
        }
        if frags.len() as u32 > ring.space() {
            ring.want = (frags.len() as u32).min(ring.num_slots() - 1);
            return false;
        }
        ring.want = 1;
        let mut i = ring.head;
        for (j, f) in frags.iter().enumerate() {
            let mut s = ring.view.read_slot(i);
            match ring.buf(s.buf_idx) {
                Some(b) => {
                    // Our buffer (slot in [head, tail)); f.len() <= buf_size, checked above.
                    b.write(0, f);
                    s.len = f.len() as u16;
                }
                None => {
                    Self::reject(
                        rejected,
                        format_args!(
                            "{} slot {i}: buf_idx {} outside the {} buffers",
                            ring.id,
                            s.buf_idx,
                            ring.num_bufs()
                        ),
                    );
                    s.len = 0;
                }
            }
            if j + 1 < frags.len() {
                s.flags |= NS_MOREFRAG;
            } else {
                s.flags &= !NS_MOREFRAG;
            }
            ring.view.write_slot(i, s);
            i = nm_next(i, ring.num_slots());
        }
        ring.head = i;
        ring.cur = i;
        ring.publish();
        true
    }

    /// Consumes up to `max` received slots of RX ring `r` (`eat(bytes, slot)` sees each),
    /// advances `head` and `cur` past them and writes both into the ring. A slot whose
    /// buffer lies outside the region or whose `len` exceeds the buffer is seen with no
    /// bytes. Returns the slots consumed.
    pub fn rx_batch<F: FnMut(&[u8], &NetmapSlot)>(&mut self, r: u32, max: u32, mut eat: F) -> u32 {
        let k = self.rx(r);
        let Nifp {
            rings, rejected, ..
        } = self;
        let ring = &mut rings[k];
        let n = ring.space().min(max);
        let mut i = ring.head;
        for _ in 0..n {
            let s = ring.view.read_slot(i);
            match ring.buf(s.buf_idx) {
                Some(b) if u32::from(s.len) <= ring.buf_size() => {
                    // SAFETY: the slot is ours until we release it, so the kernel does not
                    // write its buffer meanwhile.
                    eat(unsafe { &b.as_slice()[..usize::from(s.len)] }, &s)
                }
                _ => {
                    Self::reject(
                        rejected,
                        format_args!(
                            "{} slot {i}: buf_idx {} (of {}), len {} (buffers of {})",
                            ring.id,
                            s.buf_idx,
                            ring.num_bufs(),
                            s.len,
                            ring.buf_size()
                        ),
                    );
                    eat(&[], &s)
                }
            }
            i = nm_next(i, ring.num_slots());
        }
        ring.head = i;
        ring.cur = i;
        if n > 0 {
            ring.publish();
        }
        n
    }

    /// Before a txsync (`tx`) or rxsync: writes every ring's `head` and `cur` of that
    /// direction into the region.
    pub fn before_sync(&self, tx: bool) {
        for ring in &self.rings[self.dir(tx)] {
            ring.publish();
        }
    }

    /// After a txsync (`tx`), rxsync or poll: reads every ring's new `tail` in that
    /// direction. A `tail` is accepted only if it moved forward from the last one and not
    /// past the slot before `head` (the kernel never hands the application a slot it already
    /// owns); otherwise the ring keeps its old `tail`.
    pub fn after_sync(&mut self, tx: bool) {
        let range = self.dir(tx);
        let Nifp {
            rings, rejected, ..
        } = self;
        for ring in &mut rings[range] {
            // Acquire: pairs with the kernel's release of tail, so the slots and buffers it
            // handed over are visible.
            let t = ring.view.tail();
            let n = ring.num_slots();
            if t < n && in_circular_range(ring.tail, t, nm_prev(ring.head, n), n) {
                ring.tail = t;
            } else if t != ring.tail {
                Self::reject(
                    rejected,
                    format_args!(
                        "{}: tail {t} outside [{}, {}] ({} slots)",
                        ring.id,
                        ring.tail,
                        nm_prev(ring.head, n),
                        n
                    ),
                );
            }
        }
    }

    /// Before a poll for TX room: on each TX ring without room for what it waits for, sets
    /// `cur` to `tail`, netmap's way of asking to be woken only when `tail` moves past it.
    pub fn set_tx_wake_points(&mut self) {
        let range = self.dir(true);
        for ring in &mut self.rings[range] {
            if ring.space() < ring.want.max(1) {
                ring.cur = ring.tail;
                ring.publish();
            }
        }
    }

    /// After the poll: `cur` back at `head` on every ring of that direction.
    pub fn clear_wake_points(&mut self, tx: bool) {
        let range = self.dir(tx);
        for ring in &mut self.rings[range] {
            ring.cur = ring.head;
            ring.publish();
        }
    }

    /// Whether a ring of that direction is ready: room for what it waits for (TX), frames
    /// waiting (RX).
    pub fn ready(&self, tx: bool) -> bool {
        self.rings[self.dir(tx)]
            .iter()
            .any(|r| r.space() >= if tx { r.want.max(1) } else { 1 })
    }

    /// Offset of ring `k` (TX rings, then RX rings) in the region, for tests and dumps.
    pub fn ring_offset(&self, k: usize) -> Option<usize> {
        let r = self.rings.get(k)?;
        Some(r.view.offset())
    }

    /// Offset of buffer `idx` as seen from ring `k`, if inside the region.
    pub fn buf_offset(&self, k: usize, idx: u32) -> Option<usize> {
        let r = self.rings.get(k)?;
        self.region.buf_offset(idx).filter(|_| r.buf(idx).is_some())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use ptnet_datapath::mem::{
        HugePages, Interface, InterfaceSpec, Region, RegionConfig, RingView,
    };
    use ptnet_spec::netmap::NR_REG_ALL_NIC;

    use super::*;

    /// A zeroed region of `size` bytes that nobody laid out (a memfd).
    fn anonymous(size: usize) -> Region {
        let f = ptnet_datapath::sys::memfd(c"pktgen-test", size, false).unwrap();
        Region::attach(f, size, 0).unwrap()
    }

    /// A port's region as ptnetd builds it (the datapath's allocator), and the registration
    /// the kernel would return for it.
    pub(crate) struct Fixture {
        pub(crate) region: Arc<Region>,
        pub(crate) ifc: Interface,
        pub(crate) reg: NmreqRegister,
    }

    pub(crate) fn fixture(tx: usize, rx: usize, tx_slots: u32, rx_slots: u32) -> Fixture {
        let mut cfg = RegionConfig::for_rings(1, (tx + rx) as u32, tx_slots.max(rx_slots), 0);
        cfg.huge_pages = HugePages::Never;
        let region = Region::new("pktgen-nifp", &cfg).unwrap();
        let ifc = region
            .create_interface(&InterfaceSpec {
                name: "ptnet0",
                tx_slots: vec![tx_slots; tx],
                rx_slots: vec![rx_slots; rx],
                ..Default::default()
            })
            .unwrap();
        let reg = NmreqRegister {
            nr_offset: ifc.nifp_offset(),
            nr_memsize: region.size() as u64,
            nr_tx_slots: tx_slots,
            nr_rx_slots: rx_slots,
            nr_tx_rings: tx as u16,
            nr_rx_rings: rx as u16,
            nr_mem_id: region.id(),
            nr_mode: NR_REG_ALL_NIC,
            ..Default::default()
        };
        Fixture { region, ifc, reg }
    }

    impl Fixture {
        /// The application's own mapping of the region, as mmap of /dev/netmap gives it.
        pub(crate) fn map(&self) -> Region {
            let file = self.region.file().try_clone().unwrap();
            Region::attach(file, self.region.size(), self.region.id()).unwrap()
        }

        pub(crate) fn nifp(&self) -> Nifp {
            Nifp::new(self.map(), &self.reg).unwrap()
        }

        /// `head`, `cur`, `tail` of a ring as the kernel side reads them.
        pub(crate) fn pointers(&self, ring: &RingView) -> (u32, u32, u32) {
            let mut b = [0u8; 12];
            assert!(
                self.region
                    .copy_out(ring.offset() + offset_of!(NetmapRing, head), &mut b)
            );
            let w = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
            (w(0), w(4), w(8))
        }

        /// The kernel side publishes a new `tail`.
        pub(crate) fn set_tail(&self, ring: &RingView, tail: u32) {
            let (head, cur, _) = self.pointers(ring);
            ring.reset_pointers(head, cur, tail);
        }

        pub(crate) fn buf_ofs(&self, idx: u32) -> usize {
            let l = self.region.layout();
            l.buf_pool_ofs + idx as usize * l.buf_size as usize
        }

        /// Buffers wholly inside the mapping.
        pub(crate) fn num_bufs(&self) -> u32 {
            let l = self.region.layout();
            ((l.size - l.buf_pool_ofs) / l.buf_size as usize) as u32
        }

        pub(crate) fn read_buf(&self, idx: u32, len: usize) -> Vec<u8> {
            let mut v = vec![0; len];
            assert!(self.region.copy_out(self.buf_ofs(idx), &mut v));
            v
        }

        /// The kernel side delivers `bytes` in slot `i` of `ring`.
        pub(crate) fn deliver(&self, ring: &RingView, i: u32, bytes: &[u8]) {
            let mut s = ring.read_slot(i);
            let b = self.region.buf(s.buf_idx).unwrap();
            assert_eq!(b.write(0, bytes), bytes.len());
            s.len = bytes.len() as u16;
            ring.write_slot(i, s);
        }
    }

    #[test]
    fn finds_the_rings_and_buffers_the_datapath_laid_out() {
        let f = fixture(2, 3, 256, 128);
        let nifp = f.nifp();
        assert_eq!(
            nifp.geometry(),
            Geometry {
                tx_rings: 2,
                rx_rings: 3,
                tx_slots: 256,
                rx_slots: 128,
                buf_size: 2048
            }
        );
        let views: Vec<&RingView> = f.ifc.tx.iter().chain(&f.ifc.rx).collect();
        for (k, view) in views.iter().enumerate() {
            assert_eq!(nifp.ring_offset(k), Some(view.offset()), "ring {k}");
            for i in [0, 1, view.num_slots() - 1] {
                let idx = view.read_slot(i).buf_idx;
                assert_eq!(
                    nifp.buf_offset(k, idx),
                    Some(f.buf_ofs(idx)),
                    "ring {k} slot {i}"
                );
            }
        }
        assert_eq!(nifp.ring_offset(5), None);
        assert_eq!((nifp.tx_space(0), nifp.tx_space(1)), (255, 255));
        assert_eq!(nifp.rx_pending(2), 0);
        assert!(nifp.ready(true) && !nifp.ready(false));
    }

    #[test]
    fn tx_frames_land_where_the_kernel_side_reads_them() {
        let f = fixture(2, 1, 64, 64);
        let mut nifp = f.nifp();
        let n = nifp.tx_batch(1, 3, |i, buf| {
            buf[..60].fill(i as u8 + 1);
            60
        });
        assert_eq!(n, 3);
        let ring = &f.ifc.tx[1];
        assert_eq!(f.pointers(ring), (3, 3, 63), "head and cur written at once");
        for i in 0..3 {
            let s = ring.read_slot(i);
            assert_eq!((s.len, s.flags & NS_MOREFRAG), (60, 0));
            assert_eq!(f.read_buf(s.buf_idx, 60), vec![i as u8 + 1; 60]);
        }
        assert!(nifp.tx_frags(1, &[&[7; 2048], &[8; 10]]));
        let (a, b) = (ring.read_slot(3), ring.read_slot(4));
        assert_eq!((a.len, a.flags & NS_MOREFRAG), (2048, NS_MOREFRAG));
        assert_eq!((b.len, b.flags & NS_MOREFRAG), (10, 0));
        assert_eq!(f.read_buf(b.buf_idx, 10), vec![8; 10]);
        assert_eq!(f.pointers(ring).0, 5);
        assert!(
            !nifp.tx_frags(1, &[&[0; 2049]]),
            "a fragment above the buffer size"
        );
        assert_eq!(nifp.tx_space(1), 58);
        assert_eq!(
            f.pointers(&f.ifc.tx[0]),
            (0, 0, 63),
            "the other ring untouched"
        );
        assert_eq!(nifp.rejected(), 0);
    }

    #[test]
    fn received_frames_are_read_from_the_kernel_sides_buffers() {
        let f = fixture(1, 2, 64, 64);
        let mut nifp = f.nifp();
        let ring = &f.ifc.rx[1];
        for i in 0..4u32 {
            f.deliver(ring, i, &vec![i as u8; 10 * (i as usize + 1)]);
        }
        f.set_tail(ring, 4);
        assert_eq!(nifp.rx_pending(1), 0, "nothing before the sync");
        nifp.after_sync(false);
        assert_eq!((nifp.rx_pending(0), nifp.rx_pending(1)), (0, 4));
        let mut got = Vec::new();
        assert_eq!(nifp.rx_batch(1, 3, |b, _| got.push(b.to_vec())), 3);
        assert_eq!(f.pointers(ring), (3, 3, 4));
        assert_eq!(nifp.rx_batch(1, 10, |b, _| got.push(b.to_vec())), 1);
        for (i, b) in got.iter().enumerate() {
            assert_eq!(b, &vec![i as u8; 10 * (i + 1)]);
        }
        assert_eq!(f.pointers(ring), (4, 4, 4), "slots released with head");
        assert_eq!(nifp.rejected(), 0);
    }

    #[test]
    fn tail_is_taken_only_forward_and_short_of_head() {
        let f = fixture(1, 1, 64, 64);
        let mut nifp = f.nifp();
        let (tx, rx) = (&f.ifc.tx[0], &f.ifc.rx[0]);
        assert_eq!(nifp.tx_batch(0, 10, |_, _| 60), 10);
        for bad in [64, u32::MAX, 10, 30] {
            f.set_tail(tx, bad);
            nifp.after_sync(true);
            assert_eq!(nifp.tx_space(0), 53, "tail {bad} ignored");
        }
        f.set_tail(tx, 9);
        nifp.after_sync(true);
        assert_eq!(
            nifp.tx_space(0),
            63,
            "everything reclaimed: tail just before head"
        );
        f.set_tail(tx, 5);
        nifp.after_sync(true);
        assert_eq!(nifp.tx_space(0), 63, "tail never moves back");

        f.set_tail(rx, 40);
        nifp.after_sync(false);
        assert_eq!(nifp.rx_pending(0), 40);
        f.set_tail(rx, 20);
        nifp.after_sync(false);
        assert_eq!(nifp.rx_pending(0), 40, "tail never moves back");
        assert_eq!(nifp.rx_batch(0, 40, |_, _| ()), 40);
        f.set_tail(rx, 40 + 64);
        nifp.after_sync(false);
        f.set_tail(rx, 39);
        nifp.after_sync(false);
        assert_eq!(nifp.rx_pending(0), 63, "up to the slot before head");
        assert_eq!(nifp.rejected(), 7);
    }

    #[test]
    fn hostile_slots_are_not_followed_outside_the_region() {
        let f = fixture(1, 1, 64, 64);
        let mut nifp = f.nifp();
        let last = f.num_bufs() - 1;
        let tx = &f.ifc.tx[0];
        for (i, idx) in [(0, u32::MAX), (1, last + 1), (2, last)] {
            tx.write_slot(
                i,
                NetmapSlot {
                    buf_idx: idx,
                    ..tx.read_slot(i)
                },
            );
        }
        let mut filled = 0;
        assert_eq!(
            nifp.tx_batch(0, 3, |_, b| {
                filled += 1;
                b.fill(0xee);
                b.len() as u16
            }),
            3
        );
        assert_eq!(filled, 1, "only the buffer inside the region");
        let lens: Vec<u16> = (0..3).map(|i| tx.read_slot(i).len).collect();
        assert_eq!(lens, [0, 0, 2048]);
        assert_eq!(
            f.read_buf(last, 2048),
            vec![0xee; 2048],
            "the last buffer is usable"
        );
        tx.write_slot(
            3,
            NetmapSlot {
                buf_idx: u32::MAX,
                ..tx.read_slot(3)
            },
        );
        assert!(nifp.tx_frags(0, &[&[1; 100], &[2; 100]]));
        assert_eq!(tx.read_slot(3).len, 0);
        assert_eq!(nifp.rejected(), 3);

        let rx = &f.ifc.rx[0];
        f.deliver(rx, 0, &[1; 60]);
        rx.write_slot(
            0,
            NetmapSlot {
                buf_idx: u32::MAX,
                ..rx.read_slot(0)
            },
        );
        f.deliver(rx, 1, &[2; 60]);
        rx.write_slot(
            1,
            NetmapSlot {
                len: 2049,
                ..rx.read_slot(1)
            },
        );
        f.deliver(rx, 2, &[3; 60]);
        f.set_tail(rx, 3);
        nifp.after_sync(false);
        let mut seen = Vec::new();
        assert_eq!(nifp.rx_batch(0, 10, |b, s| seen.push((b.len(), s.len))), 3);
        assert_eq!(seen, [(0, 60), (0, 2049), (60, 60)]);
        assert_eq!(nifp.rejected(), 5);
    }

    type Mutation = fn(&Fixture, &Region, &mut NmreqRegister);
    type Expect = fn(&LayoutError) -> bool;

    /// Offset of field `f` of ring `k` (TX rings then RX rings).
    fn ring_field(f: &Fixture, k: usize, field: usize) -> u64 {
        let v: Vec<&RingView> = f.ifc.tx.iter().chain(&f.ifc.rx).collect();
        (v[k].offset() + field) as u64
    }

    fn ring_at(f: &Fixture, k: usize) -> i64 {
        ring_field(f, k, 0) as i64
    }

    fn ring_ofs_entry(f: &Fixture, k: usize) -> u64 {
        f.reg.nr_offset + (NETMAP_IF_RING_OFS + 8 * k) as u64
    }

    #[test]
    fn a_hostile_layout_is_rejected_without_a_panic() {
        use LayoutError as E;
        let cases: Vec<(&str, Mutation, Expect)> = vec![
            (
                "nifp past the end",
                |f, _, r| r.nr_offset = f.region.size() as u64 - 8,
                |e| matches!(e, E::NifpOutside { .. }),
            ),
            (
                "nifp far out",
                |_, _, r| r.nr_offset = u64::MAX,
                |e| matches!(e, E::NifpOutside { .. }),
            ),
            (
                "nifp misaligned",
                |_, _, r| r.nr_offset += 4,
                |e| matches!(e, E::NifpOutside { .. }),
            ),
            (
                "no TX rings",
                |_, _, r| r.nr_tx_rings = 0,
                |e| matches!(e, E::RingCount { .. }),
            ),
            (
                "too many RX rings",
                |_, _, r| r.nr_rx_rings = 2000,
                |e| matches!(e, E::RingCount { .. }),
            ),
            (
                "ni_tx_rings differs",
                |f, m, _| {
                    m.write(
                        f.reg.nr_offset + offset_of!(NetmapIf, ni_tx_rings) as u64,
                        3u32,
                    );
                },
                |e| matches!(e, E::RingCountMismatch { nifp_tx: 3, .. }),
            ),
            (
                "host rings beyond any region",
                |f, m, _| {
                    m.write(
                        f.reg.nr_offset + offset_of!(NetmapIf, ni_host_tx_rings) as u64,
                        u32::MAX,
                    );
                },
                |e| matches!(e, E::HostRingCount { .. }),
            ),
            (
                "ring_ofs[] past the end",
                |f, m, _| {
                    m.write(
                        f.reg.nr_offset + offset_of!(NetmapIf, ni_host_rx_rings) as u64,
                        MAX_RINGS,
                    );
                    m.write(
                        f.reg.nr_offset + offset_of!(NetmapIf, ni_host_tx_rings) as u64,
                        MAX_RINGS,
                    );
                },
                |e| matches!(e, E::NifpOutside { .. }) || matches!(e, E::Unmapped(_)),
            ),
            // One host TX ring shifts the RX rings by one entry (NETMAP_RXRING's rule): the
            // last RX ring then finds no offset.
            (
                "a host TX ring",
                |f, m, _| {
                    m.write(
                        f.reg.nr_offset + offset_of!(NetmapIf, ni_host_tx_rings) as u64,
                        1u32,
                    );
                },
                |e| matches!(e, E::Unmapped(RingId { tx: false, r: 1 })),
            ),
            (
                "ring not mapped",
                |f, m, _| {
                    m.write(ring_ofs_entry(f, 0), 0i64);
                },
                |e| matches!(e, E::Unmapped(RingId { tx: true, r: 0 })),
            ),
            (
                "ring far out",
                |f, m, _| {
                    m.write(ring_ofs_entry(f, 1), i64::MAX);
                },
                |e| {
                    matches!(
                        e,
                        E::RingOutside {
                            ring: RingId { tx: false, r: 0 },
                            ..
                        }
                    )
                },
            ),
            (
                "ring before the region",
                |f, m, _| {
                    m.write(ring_ofs_entry(f, 0), -(f.reg.nr_offset as i64) - 4096);
                },
                |e| matches!(e, E::RingOutside { .. }),
            ),
            (
                "ring offset overflows",
                |f, m, _| {
                    m.write(ring_ofs_entry(f, 0), i64::MIN);
                },
                |e| matches!(e, E::RingOutside { .. }),
            ),
            (
                "ring misaligned",
                |f, m, _| {
                    let v: i64 = m.read(ring_ofs_entry(f, 0)).unwrap();
                    m.write(ring_ofs_entry(f, 0), v + 4);
                },
                |e| matches!(e, E::RingOutside { .. }),
            ),
            (
                "slots run past the end",
                |f, m, _| {
                    // A header 512 bytes before the end, claiming the registered slot count.
                    let at = f.region.size() as u64 - 512;
                    m.write(at + offset_of!(NetmapRing, num_slots) as u64, 64u32);
                    m.write(ring_ofs_entry(f, 0), at as i64 - f.reg.nr_offset as i64);
                },
                |e| matches!(e, E::RingOutside { .. }),
            ),
            (
                "slot count differs",
                |f, m, _| {
                    m.write(ring_field(f, 0, offset_of!(NetmapRing, num_slots)), 63u32);
                },
                |e| {
                    matches!(
                        e,
                        E::RingSize {
                            num_slots: 63,
                            want: 64,
                            ..
                        }
                    )
                },
            ),
            (
                "slot count huge",
                |f, m, r| {
                    r.nr_rx_slots = u32::MAX;
                    m.write(
                        ring_field(f, 1, offset_of!(NetmapRing, num_slots)),
                        u32::MAX,
                    );
                },
                |e| matches!(e, E::RingSize { .. }),
            ),
            (
                "TX and RX swapped",
                |f, m, _| {
                    let (a, b): (i64, i64) = (
                        m.read(ring_ofs_entry(f, 0)).unwrap(),
                        m.read(ring_ofs_entry(f, 1)).unwrap(),
                    );
                    m.write(ring_ofs_entry(f, 0), b);
                    m.write(ring_ofs_entry(f, 1), a);
                },
                |e| {
                    matches!(
                        e,
                        E::RingDir {
                            ring: RingId { tx: true, r: 0 },
                            dir: 1
                        }
                    )
                },
            ),
            (
                "zero-sized buffers",
                |f, m, _| {
                    m.write(ring_field(f, 0, offset_of!(NetmapRing, nr_buf_size)), 0u32);
                },
                |e| matches!(e, E::BufSize { nr_buf_size: 0, .. }),
            ),
            (
                "buffer sizes differ",
                |f, m, _| {
                    m.write(
                        ring_field(f, 1, offset_of!(NetmapRing, nr_buf_size)),
                        4096u32,
                    );
                },
                |e| {
                    matches!(
                        e,
                        E::BufSize {
                            nr_buf_size: 4096,
                            first: 2048,
                            ..
                        }
                    )
                },
            ),
            (
                "buffer pool far out",
                |f, m, _| {
                    m.write(ring_field(f, 0, offset_of!(NetmapRing, buf_ofs)), i64::MAX);
                },
                |e| matches!(e, E::BufPool { .. }),
            ),
            (
                "buffer pool past the end",
                |f, m, _| {
                    let end = f.region.size() as i64 + 1;
                    m.write(
                        ring_field(f, 1, offset_of!(NetmapRing, buf_ofs)),
                        end - ring_at(f, 1),
                    );
                },
                |e| matches!(e, E::BufPool { .. }),
            ),
            (
                "buffer pool before the region",
                |f, m, _| {
                    m.write(
                        ring_field(f, 0, offset_of!(NetmapRing, buf_ofs)),
                        -ring_at(f, 0) - 1,
                    );
                },
                |e| matches!(e, E::BufPool { .. }),
            ),
            (
                "head out of range",
                |f, m, _| {
                    m.write(ring_field(f, 0, offset_of!(NetmapRing, head)), 64u32);
                },
                |e| matches!(e, E::Pointers { head: 64, .. }),
            ),
            (
                "cur out of range",
                |f, m, _| {
                    m.write(ring_field(f, 1, offset_of!(NetmapRing, cur)), 1000u32);
                },
                |e| matches!(e, E::Pointers { cur: 1000, .. }),
            ),
            (
                "tail out of range",
                |f, m, _| {
                    m.write(ring_field(f, 1, offset_of!(NetmapRing, tail)), u32::MAX);
                },
                |e| matches!(e, E::Pointers { tail: u32::MAX, .. }),
            ),
        ];
        for (what, mutate, expect) in cases {
            let f = fixture(1, 2, 64, 64);
            let m = f.map();
            let mut reg = f.reg;
            mutate(&f, &m, &mut reg);
            match Nifp::new(f.map(), &reg) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => assert!(expect(&e), "{what}: {e:?}"),
            }
        }
    }

    /// xorshift64: a reproducible stream without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// Random corruption of a real layout, copied into anonymous memory (any region will
    /// do): attaching and a round of batches and syncs must never panic or leave the region.
    #[test]
    fn corrupted_regions_never_panic() {
        let f = fixture(2, 2, 64, 64);
        let headers = f.region.layout().buf_pool_ofs;
        let mut snapshot = vec![0u8; headers];
        assert!(f.region.copy_out(0, &mut snapshot));
        let hot: Vec<u64> = [f.reg.nr_offset]
            .into_iter()
            .chain(f.ifc.tx.iter().chain(&f.ifc.rx).map(|r| r.offset() as u64))
            .collect();
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..150 {
            let m = anonymous(f.region.size());
            for (i, w) in snapshot.chunks_exact(8).enumerate() {
                m.write((i * 8) as u64, u64::from_ne_bytes(w.try_into().unwrap()));
            }
            let mut reg = f.reg;
            for _ in 0..1 + rng.below(3) {
                let base = if rng.below(4) == 0 {
                    rng.below(headers as u64)
                } else {
                    hot[rng.below(hot.len() as u64) as usize] + rng.below(320)
                };
                let v = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(128),
                    2 => u64::MAX - rng.below(4),
                    _ => rng.next(),
                };
                if rng.below(2) == 0 {
                    m.write(base & !3, v as u32);
                } else {
                    m.write(base & !7, v);
                }
            }
            if rng.below(8) == 0 {
                reg.nr_offset ^= 1 << rng.below(20);
            }
            let Ok(mut nifp) = Nifp::new(m, &reg) else {
                rejected += 1;
                continue;
            };
            accepted += 1;
            let g = nifp.geometry();
            for r in 0..g.tx_rings + 1 {
                // The first and last bytes: every buffer handed out must be wholly mapped.
                nifp.tx_batch(r, 100, |i, b| {
                    let (n, k) = (b.len(), b.len().min(8));
                    b[..k].fill(i as u8);
                    b[n - k..].fill(i as u8);
                    n as u16
                });
                nifp.tx_frags(r, &[&[1; 64], &[2; 64]]);
            }
            for tx in [true, false] {
                nifp.before_sync(tx);
                // The "kernel" writes random tails (and slots) behind our back.
                for k in 0..(g.tx_rings + g.rx_rings) as usize {
                    if let Some(o) = nifp.ring_offset(k) {
                        let o = o as u64;
                        nifp.mapping().write(
                            o + offset_of!(NetmapRing, tail) as u64,
                            rng.next() as u32 % 80,
                        );
                        let slot = o + NETMAP_RING_SLOTS_OFS as u64 + 16 * rng.below(64);
                        nifp.mapping().write(slot, rng.next());
                    }
                }
                nifp.after_sync(tx);
                nifp.set_tx_wake_points();
                nifp.clear_wake_points(tx);
            }
            for r in 0..g.rx_rings + 1 {
                nifp.rx_batch(r, u32::MAX, |b, s| assert!(b.len() <= usize::from(s.len)));
            }
        }
        assert!(
            accepted > 15 && rejected > 15,
            "{accepted} accepted, {rejected} rejected"
        );
    }
}
