//! A queue pair's data path: one thread that is both the application side of one TX and one
//! RX ring of the port and the kernel side that syncs them (it calls the port's
//! txsync/rxsync itself, so no sync loop thread and no kick sits between the guest and the
//! switch).
//!
//! * **TX** (guest → switch): up to [`TX_BATCH`] chains are popped (never more than the port
//!   TX ring has free slots for), each is copied once from guest memory into the port's
//!   buffers — one slot, or an `NS_MOREFRAG` chain of up to 64 for a longer frame; the
//!   copies are queued while the chains are walked and done together before anything is
//!   published (`copies`) — all
//!   chains are completed with one used-index store and at most one notification, then
//!   `head` is published and txsync run once.
//! * **RX** (switch → guest): the frames the switch put in the RX ring (whole `NS_MOREFRAG`
//!   chains) are copied once into guest buffers behind the virtio-net header, merging
//!   buffers with `VIRTIO_NET_F_MRG_RXBUF`; a frame that finds no (or not enough) guest
//!   buffers stays in the ring, its chains given back to the avail ring, until the driver
//!   posts more (backpressure: the switch drops when the ring is full, as for any port).
//! * **Offloads**: when the guest takes every receive offload, the port *carries* the
//!   virtio-net header (its header length is 12): the guest's header goes into the slots in
//!   front of the frame and the header a frame brings from the switch goes to the guest, so
//!   checksum and TSO requests cross the switch untouched between such ports (the switch
//!   resolves them for the others). Otherwise frames cross without a header: TX offload
//!   requests are resolved here in software (checksum filled, TSO frames cut into segments,
//!   through a scratch buffer allocated once) and the guest gets a zero header.
//! * **Sleeping** is the poll group's ([`crate::group`]; a pair of its own has a group of one):
//!   `Pair::arm` re-enables the TX virtqueue's notifications (and the RX virtqueue's when
//!   frames wait for buffers) and the RX ring's interrupt and says whether work came
//!   meanwhile; `Pair::disarm` turns them off again.
//!
//! A malformed chain (writable descriptor on TX, read-only on RX, address outside guest
//! memory, a frame longer than 64 port buffers, an offload request that cannot be resolved)
//! is completed with length 0 and counted; a
//! broken queue (an avail index more than a queue size ahead, rings outside guest memory)
//! stops this worker until the frontend resets the device. Neither panics nor touches
//! anything outside the guest's memory and the port's region.

use std::sync::Arc;

use ptnet_datapath::app::{AppRing, slots_for};
use ptnet_datapath::csb::CsbRef;
use ptnet_datapath::port::SyncPort;
use ptnet_spec::netmap::{NETMAP_MAX_FRAGS, NS_MOREFRAG};
use ptnet_spec::ring::nm_next;
use ptnet_vhost_user::guest::GuestMem;
use ptnet_vhost_user::vring::HookedVring;
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{Address, GuestAddress, GuestAddressSpace, VolatileSlice};

use ptnet_datapath::switch::vnet::{self, MAX_GSO_FRAME, Segments, Unresolvable};
use ptnet_spec::vnet::{VNET_HDR_LEN, VnetHdr};

use crate::copies::Copies;
use crate::ctrl::Ctrl;
use crate::stats::NetStats;
pub use crate::virtq::Broken;
use crate::virtq::{BadAddress, BadDesc, Mem, Rings, UsedBatch, guest_slice};

/// Most TX chains moved per pass.
pub const TX_BATCH: u32 = 256;
/// Most RX frames moved per pass.
pub const RX_BATCH: u32 = 256;
/// Most writable descriptors of one RX chain that are used (the rest are ignored): drivers
/// post one buffer per chain with MRG_RXBUF, and without it (no guest TSO offered) one or
/// two.
const MAX_RX_DESCS: usize = 8;

/// Why one chain was refused (it is completed with length 0).
#[derive(Debug, thiserror::Error)]
pub enum BadChain {
    /// A TX chain with a device-writable descriptor, or an RX chain with a read-only one.
    #[error("descriptor of the wrong direction")]
    Direction,
    /// A descriptor outside guest memory.
    #[error("descriptor outside guest memory")]
    Address(#[from] BadAddress),
    /// A TX frame longer than a fragment chain of the port can hold, or a slot whose
    /// buffer index is bad.
    #[error("frame of at least {0} bytes does not fit a port's fragment chain")]
    TooLong(usize),
    /// A TX frame whose offload request cannot be resolved in software.
    #[error("offload request refused: {0}")]
    Offload(#[from] Unresolvable),
    /// A chain shorter than the virtio-net header, or an RX chain whose first buffer cannot
    /// hold the header.
    #[error("chain of {0} bytes cannot hold the virtio-net header")]
    Short(usize),
    /// An RX frame larger than the chain, without `VIRTIO_NET_F_MRG_RXBUF`.
    #[error("frame of {0} bytes does not fit the receive buffer")]
    NoRoom(usize),
    /// The chain's descriptors cannot be followed.
    #[error("bad descriptor chain")]
    Descriptor(#[from] BadDesc),
}

/// Writes `frames` into the TX slots from `head` on (each a chain of as many slots as it
/// needs) and moves `head` past them; the caller checked the room. Returns the bytes and
/// slots used.
fn put_frames(tx: &mut AppRing, frames: &Segments) -> (usize, u32) {
    frames.iter().fold((0, 0), |(bytes, slots), f| {
        (bytes + f.len(), slots + tx.put_frame(f))
    })
}

/// The writable buffers of one RX chain.
#[derive(Debug, Clone, Copy)]
struct RxChain {
    head: u16,
    descs: [(u64, u32); MAX_RX_DESCS],
    n: usize,
}

impl RxChain {
    fn collect(rings: &Rings<'_>, head: u16) -> Result<Self, BadChain> {
        let mut c = RxChain {
            head,
            descs: [(0, 0); MAX_RX_DESCS],
            n: 0,
        };
        for d in rings.chain(head) {
            let d = d?;
            if !d.write {
                return Err(BadChain::Direction);
            }
            if c.n < MAX_RX_DESCS && d.len > 0 {
                c.descs[c.n] = (d.addr, d.len);
                c.n += 1;
            }
        }
        Ok(c)
    }
}

/// Counters of one pass, added to [`NetStats`] once per pass.
#[derive(Debug, Default)]
struct PassCount {
    packets: u64,
    bytes: u64,
    drops: u64,
}

/// The data path of one queue pair.
pub struct Pair {
    name: String,
    index: u16,
    port: Arc<dyn SyncPort>,
    mem: GuestMem,
    rxq: HookedVring,
    txq: HookedVring,
    ctrl: Option<Ctrl>,
    tx: AppRing,
    rx: AppRing,
    /// Bytes of the virtio-net header (12 with VERSION_1 or MRG_RXBUF, else 10).
    hdr_len: usize,
    mrg: bool,
    /// The port carries the virtio-net header: it goes into the slots in front of the frame
    /// (TX) and comes from them (RX), so offloads cross the switch.
    carry: bool,
    /// The guest may ask for TX offloads (it acked `VIRTIO_NET_F_CSUM`): without `carry`
    /// they are resolved here in software.
    tx_offloads: bool,
    /// Scratch space of that software path, allocated the first time it is needed.
    scratch: Option<Box<TxScratch>>,
    used: UsedBatch,
    copies: Copies,
    stats: Arc<NetStats>,
    /// Frames wait in the RX ring for guest buffers.
    rx_blocked: bool,
    /// The TX ring had no free slot.
    tx_blocked: bool,
    bad_log: RateLimit,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("name", &self.name)
            .field("index", &self.index)
            .finish()
    }
}

/// What a pair is built from.
pub struct PairConfig {
    /// Queue pair index (= port ring index).
    pub index: u16,
    /// The port.
    pub port: Arc<dyn SyncPort>,
    /// The port's CSB (TX entries, then RX entries).
    pub csb: CsbRef,
    /// Guest memory.
    pub mem: GuestMem,
    /// The receive virtqueue (2 × index).
    pub rxq: HookedVring,
    /// The transmit virtqueue (2 × index + 1).
    pub txq: HookedVring,
    /// The control virtqueue, served by pair 0.
    pub ctrl: Option<Ctrl>,
    /// Negotiated features.
    pub features: u64,
    /// The port carries virtio-net headers (its header length was set to 12).
    pub carry_hdr: bool,
    /// Counters.
    pub stats: Arc<NetStats>,
}

/// A TX frame linearized, and the frames its software offloads make of it.
struct TxScratch {
    lin: Vec<u8>,
    segs: Segments,
}

impl Pair {
    /// A pair over port rings `index`.
    pub fn new(c: PairConfig) -> Self {
        use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
        use virtio_bindings::virtio_net::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_MRG_RXBUF};
        let ifc = c.port.interface();
        let ntx = ifc.tx.len() as u32;
        let i = u32::from(c.index);
        // PANIC-free: the device only builds pairs for rings the port has.
        let tx = AppRing::new(ifc.tx[i as usize].clone(), c.csb.clone(), i, i);
        let rx = AppRing::new(ifc.rx[i as usize].clone(), c.csb, i, ntx + i);
        let mrg = c.features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let v1 = c.features & (1 << VIRTIO_F_VERSION_1) != 0;
        let hdr_len = if mrg || v1 { 12 } else { 10 };
        Pair {
            name: c.port.name().to_owned(),
            index: c.index,
            port: c.port,
            mem: c.mem,
            rxq: c.rxq,
            txq: c.txq,
            ctrl: c.ctrl,
            tx,
            rx,
            hdr_len,
            mrg,
            carry: c.carry_hdr && hdr_len == VNET_HDR_LEN as usize,
            tx_offloads: c.features & (1 << VIRTIO_NET_F_CSUM) != 0,
            scratch: None,
            used: UsedBatch::with_capacity(TX_BATCH.max(RX_BATCH) as usize * 2),
            copies: Copies::with_capacity(TX_BATCH.max(RX_BATCH) as usize * 2),
            stats: c.stats,
            rx_blocked: false,
            tx_blocked: false,
            bad_log: RateLimit::default(),
        }
    }

    /// `port pair N`, for the log.
    pub(crate) fn label(&self) -> String {
        format!("{} pair {}", self.name, self.index)
    }

    /// The header and buffer layout the driver chose, for the log.
    pub(crate) fn layout(&self) -> String {
        format!("header {} bytes, mrg_rxbuf {}", self.hdr_len, self.mrg)
    }

    fn bad(&mut self, queue: &str, e: &BadChain) {
        if self.bad_log.hit() {
            log::warn!(
                "{} pair {}: {queue} chain refused: {e} (#{})",
                self.name,
                self.index,
                self.bad_log.count()
            );
        }
    }

    /// One pass over every queue; returns the number of chains and frames moved.
    pub fn pass(&mut self) -> Result<u32, Broken> {
        let mut n = self.tx_pass()?;
        n += self.rx_pass()?;
        if let Some(c) = &mut self.ctrl {
            n += c.pass(&self.mem)?;
        }
        Ok(n)
    }

    /// Guest TX virtqueue → port TX ring.
    pub fn tx_pass(&mut self) -> Result<u32, Broken> {
        self.copies.discard();
        let ns = self.tx.view().num_slots();
        self.tx.refresh();
        if self.tx.avail() == 0 {
            // A ring whose slots are held by a peer (a pipe): ask for them back.
            self.tx.txsync(&*self.port);
        }
        let space = self.tx.avail();
        self.tx_blocked = space == 0;
        if space == 0 {
            return Ok(0);
        }
        let mem = self.mem.memory();
        let mut vr = self.txq.get_mut();
        let q = vr.get_queue_mut();
        if !q.ready() {
            return Ok(0);
        }
        let rings = Rings::new(&mem, q).map_err(|source| Broken::Used {
            queue: "TX",
            source,
        })?;
        let mut next = q.next_avail();
        let pending = rings.pending(next).map_err(|r| Broken::Avail {
            queue: "TX",
            source: Some(r),
        })?;
        let budget = u32::from(pending).min(TX_BATCH);
        let mut space = space;
        let mut c = PassCount::default();
        let mut bad: Option<BadChain> = None;
        let buf_size = self.tx.buf_size();
        let full = ns - 1;
        let mut moved = 0u32;
        while moved < budget && space > 0 {
            let head = rings.head(next).ok_or(Broken::Avail {
                queue: "TX",
                source: None,
            })?;
            let skip = if self.carry { 0 } else { self.hdr_len };
            let hdr = if self.tx_offloads && !self.carry {
                read_header(&mem, &rings, head, self.hdr_len)
            } else {
                None
            };
            let res = match hdr.filter(|h| !h.is_plain()) {
                // An offload to do here: resolve, then write the frames it becomes.
                Some(h) => {
                    let sc = self.scratch.get_or_insert_with(TxScratch::new);
                    match resolve_chain(&mem, &rings, head, self.hdr_len, &h, sc) {
                        Ok(()) => {
                            let need: u32 =
                                sc.segs.iter().map(|f| slots_for(f.len(), buf_size)).sum();
                            if need > space && space < full {
                                // Wait for room; the chain stays in the avail ring.
                                self.tx_blocked = true;
                                break;
                            }
                            if need > space {
                                Err(BadChain::TooLong(need as usize * buf_size))
                            } else {
                                Ok(put_frames(&mut self.tx, &sc.segs))
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
                None => {
                    if space < NETMAP_MAX_FRAGS {
                        // Maybe too long for the room left: measure first.
                        // (A chain that cannot be measured is refused by gather_slots.)
                        if let Ok(len) = chain_len(&rings, head) {
                            let need = slots_for(len.saturating_sub(skip), buf_size);
                            if need > space && space < full {
                                self.tx_blocked = true;
                                break;
                            }
                        }
                    }
                    // A header the guest sends across the switch may carry flags only a
                    // device may set: VALE clears them on delivery.
                    gather_slots(
                        &mem,
                        &rings,
                        head,
                        skip,
                        &mut self.tx,
                        space,
                        &mut self.copies,
                    )
                }
            };
            next = next.wrapping_add(1);
            moved += 1;
            match res {
                Ok((len, k)) => {
                    space -= k;
                    c.packets += 1;
                    c.bytes += len as u64;
                }
                Err(e) => {
                    c.drops += 1;
                    bad = Some(e);
                }
            }
            // The device writes nothing into a TX buffer.
            self.used.push(head, 0);
        }
        q.set_next_avail(next);
        // Every frame's bytes in the port's buffers before the guest may reuse its own and
        // before txsync hands them to the switch.
        self.copies.flush();
        let notify = rings
            .publish(q, &mut self.used)
            .map_err(|source| Broken::Used {
                queue: "TX",
                source,
            })?;
        // Signalled with the queue unlocked and never waiting: the frontend shares the call
        // eventfd.
        drop(vr);
        if notify {
            self.txq.signal_guest();
            NetStats::add(&self.stats.tx_notifies, 1);
        }
        if c.packets > 0 {
            self.tx.txsync(&*self.port);
        }
        NetStats::add(&self.stats.tx_packets, c.packets);
        NetStats::add(&self.stats.tx_bytes, c.bytes);
        NetStats::add(&self.stats.tx_bad, c.drops);
        if let Some(e) = bad {
            self.bad("TX", &e);
        }
        Ok(moved)
    }

    /// Port RX ring → guest RX virtqueue.
    pub fn rx_pass(&mut self) -> Result<u32, Broken> {
        let ns = self.rx.view().num_slots();
        self.rx.refresh();
        let pending = self.rx.avail();
        if pending == 0 {
            self.rx_blocked = false;
            return Ok(0);
        }
        let mem = self.mem.memory();
        let mut vr = self.rxq.get_mut();
        let q = vr.get_queue_mut();
        if !q.ready() {
            return Ok(0);
        }
        let rings = Rings::new(&mem, q).map_err(|source| Broken::Used {
            queue: "RX",
            source,
        })?;
        let start = q.next_avail();
        let buffers = rings.pending(start).map_err(|r| Broken::Avail {
            queue: "RX",
            source: Some(r),
        })?;
        let mut cursor = Cursor {
            next: start,
            end: start.wrapping_add(buffers),
        };
        let mut consumed = 0u32;
        let mut frames = 0u32;
        let mut c = PassCount::default();
        let mut bad: Option<BadChain> = None;
        let mut blocked = false;
        while consumed < pending && frames < RX_BATCH {
            // One frame: slots up to the first without NS_MOREFRAG.
            let first = self.rx.after_head(consumed);
            let mut nslots = 0u32;
            let mut i = first;
            loop {
                nslots += 1;
                let s = self.rx.slot(i);
                if s.flags & NS_MOREFRAG == 0
                    || consumed + nslots == pending
                    || nslots == NETMAP_MAX_FRAGS
                {
                    break;
                }
                i = nm_next(i, ns);
            }
            match Self::scatter(
                &mut self.used,
                &self.rx,
                self.hdr_len,
                self.mrg,
                self.carry,
                &mem,
                &rings,
                &mut cursor,
                first,
                nslots,
            )? {
                Ok(Some(len)) => {
                    c.packets += 1;
                    c.bytes += len as u64;
                }
                Ok(None) => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    c.drops += 1;
                    bad = Some(e);
                }
            }
            consumed += nslots;
            frames += 1;
        }
        self.rx_blocked = blocked;
        q.set_next_avail(cursor.next);
        let notify = rings
            .publish(q, &mut self.used)
            .map_err(|source| Broken::Used {
                queue: "RX",
                source,
            })?;
        // Signalled with the queue unlocked and never waiting: the frontend shares the call
        // eventfd.
        drop(vr);
        if notify {
            self.rxq.signal_guest();
            NetStats::add(&self.stats.rx_notifies, 1);
        }
        if consumed > 0 {
            self.rx.advance(consumed);
            self.rx.rxsync(&*self.port);
        }
        NetStats::add(&self.stats.rx_packets, c.packets);
        NetStats::add(&self.stats.rx_bytes, c.bytes);
        NetStats::add(&self.stats.rx_bad, c.drops);
        if let Some(e) = bad {
            self.bad("RX", &e);
        }
        Ok(frames)
    }

    /// Copies the frame in RX slots `[first, first + nslots)` into guest buffers taken from
    /// `cursor`. Returns the frame's length, `None` if the guest lacks buffers (nothing
    /// consumed, the cursor back where it was), or the reason the frame was dropped (every
    /// chain it took completed with length 0). A head index outside the table breaks the
    /// queue (the outer error).
    #[allow(clippy::too_many_arguments)]
    fn scatter(
        used: &mut UsedBatch,
        rx: &AppRing,
        hdr_len: usize,
        mrg: bool,
        carry: bool,
        mem: &Mem,
        rings: &Rings<'_>,
        cursor: &mut Cursor,
        first: u32,
        nslots: u32,
    ) -> Result<Result<Option<usize>, BadChain>, Broken> {
        let ns = rx.view().num_slots();
        // The header for the guest: the one the frame carries across the switch (the guest
        // validates it, as it does any device's), or all zero.
        let mut hdr = [0u8; 12];
        let mut src_skip = 0usize;
        if carry {
            let got = rx
                .buffer(first)
                .filter(|(_, s)| usize::from(s.len) >= hdr_len);
            match got {
                Some((b, _)) => {
                    b.read(0, &mut hdr[..hdr_len]);
                    src_skip = hdr_len;
                }
                None => {
                    // No header in front: a frame the guest must not see. Drop it without
                    // taking a chain.
                    return Ok(Err(BadChain::Short(0)));
                }
            }
        }
        let mark = used.len();
        let rewind = cursor.next;
        let mut chain = match cursor.take(rings)? {
            None => return Ok(Ok(None)),
            Some((head, Err(e))) => {
                used.push(head, 0);
                return Ok(Err(e));
            }
            Some((_, Ok(c))) => c,
        };
        let mut taken = 1u16;
        if chain.n == 0 || (chain.descs[0].1 as usize) < hdr_len {
            used.push(chain.head, 0);
            return Ok(Err(BadChain::Short(chain.descs[0].1 as usize)));
        }
        let hdr_addr = GuestAddress(chain.descs[0].0);
        let mut d = 0usize;
        let mut off = 0usize;
        // The header is written last, when num_buffers is known; skip its room.
        let mut skip = hdr_len;
        let mut chain_written = 0usize;
        let mut total = 0usize;
        let mut failed: Option<BadChain> = None;
        let mut slot = first;
        'slots: for _ in 0..nslots {
            let Some((src, s)) = rx.buffer(slot) else {
                failed = Some(BadChain::TooLong(0));
                break;
            };
            let src = src.volatile_slice();
            slot = nm_next(slot, ns);
            let len = usize::from(s.len);
            let mut src_off = std::mem::take(&mut src_skip).min(len);
            while src_off < len || skip > 0 {
                if d == chain.n {
                    // This chain is full.
                    if !mrg {
                        failed = Some(BadChain::NoRoom(total + len));
                        break 'slots;
                    }
                    used.push(chain.head, chain_written as u32);
                    chain = match cursor.take(rings)? {
                        None => {
                            // Not enough buffers for the whole frame: give back what was
                            // taken and leave the frame in the ring.
                            cursor.next = rewind;
                            used.truncate_last(used.len() - mark);
                            return Ok(Ok(None));
                        }
                        Some((head, Err(e))) => {
                            // Completed empty below, with the others.
                            chain.head = head;
                            chain.n = 0;
                            failed = Some(e);
                            break 'slots;
                        }
                        Some((_, Ok(c))) => c,
                    };
                    taken = taken.saturating_add(1);
                    d = 0;
                    off = 0;
                    chain_written = 0;
                    continue;
                }
                let (addr, dlen) = chain.descs[d];
                let room = dlen as usize - off;
                if room == 0 {
                    d += 1;
                    off = 0;
                    continue;
                }
                if skip > 0 {
                    let k = room.min(skip);
                    skip -= k;
                    off += k;
                    chain_written += k;
                    continue;
                }
                let k = room.min(len - src_off);
                let at = GuestAddress(addr)
                    .checked_add(off as u64)
                    .ok_or(BadAddress { addr, len: off + k });
                let dst = match at.and_then(|a| guest_slice(mem, a, k)) {
                    Ok(s) => s,
                    Err(e) => {
                        failed = Some(e.into());
                        break 'slots;
                    }
                };
                // PANIC-free: src_off + k <= len <= the buffer's size.
                if let Ok(s) = src.subslice(src_off, k) {
                    s.copy_to_volatile_slice(dst);
                }
                src_off += k;
                off += k;
                chain_written += k;
                total += k;
            }
        }
        used.push(chain.head, chain_written as u32);
        if failed.is_none() {
            // num_buffers = chains used (the field exists in 12-byte headers only).
            hdr[10..12].copy_from_slice(&taken.to_le_bytes());
            if guest_slice(mem, hdr_addr, hdr_len)
                .map(|s| s.copy_from(&hdr[..hdr_len]))
                .is_err()
            {
                failed = Some(BadChain::Short(0));
            }
        }
        if let Some(e) = failed {
            // Every chain of the frame completes with nothing in it.
            used.zero_from(mark);
            return Ok(Err(e));
        }
        Ok(Ok(Some(total)))
    }

    /// Asks for every notification that can bring work, with the double check. Returns true
    /// if work is already there (the caller keeps going instead of sleeping).
    pub(crate) fn arm(&mut self) -> Result<bool, Broken> {
        let mem = self.mem.memory();
        let mut work = {
            let mut vr = self.txq.get_mut();
            vr.get_queue_mut()
                .enable_notification(&*mem)
                .map_err(|source| Broken::Queue {
                    queue: "TX",
                    source,
                })?
        };
        if self.rx_blocked {
            let mut vr = self.rxq.get_mut();
            work |= vr
                .get_queue_mut()
                .enable_notification(&*mem)
                .map_err(|source| Broken::Queue {
                    queue: "RX",
                    source,
                })?;
        }
        if let Some(c) = &self.ctrl {
            work |= c.arm(&*mem)?;
        }
        // New frames are worth a wake-up only if the guest has room for them: while it has
        // none, its RX kick (armed above) is what brings work.
        if !self.rx_blocked {
            work |= self.rx.enable_notifications();
        }
        if self.tx_blocked {
            work |= self.tx.enable_notifications();
        }
        Ok(work)
    }

    /// Back to work: notifications off.
    pub(crate) fn disarm(&mut self) {
        let mem = self.mem.memory();
        let _ = self
            .txq
            .get_mut()
            .get_queue_mut()
            .disable_notification(&*mem);
        let _ = self
            .rxq
            .get_mut()
            .get_queue_mut()
            .disable_notification(&*mem);
        if let Some(c) = &self.ctrl {
            c.disarm(&*mem);
        }
        self.rx.disable_notifications();
        self.tx.disable_notifications();
    }
}

/// Logs the first ten events, then every thousandth.
#[derive(Debug, Default)]
pub(crate) struct RateLimit(u64);

impl RateLimit {
    /// Counts one event; true if it should be logged.
    pub(crate) fn hit(&mut self) -> bool {
        self.0 += 1;
        self.0 <= 10 || self.0 % 1000 == 0
    }

    /// Events so far.
    pub(crate) fn count(&self) -> u64 {
        self.0
    }
}

/// The avail entries a pass may take: `next` up to `end`.
#[derive(Debug)]
struct Cursor {
    next: u16,
    end: u16,
}

impl Cursor {
    /// Takes the next chain: `None` when the guest has posted no more; its head and its
    /// buffers (or why they are unusable) otherwise. A head outside the table breaks the
    /// queue.
    #[allow(clippy::type_complexity)]
    fn take(
        &mut self,
        rings: &Rings<'_>,
    ) -> Result<Option<(u16, Result<RxChain, BadChain>)>, Broken> {
        if self.next == self.end {
            return Ok(None);
        }
        let head = rings.head(self.next).ok_or(Broken::Avail {
            queue: "RX",
            source: None,
        })?;
        self.next = self.next.wrapping_add(1);
        Ok(Some((head, RxChain::collect(rings, head))))
    }
}

impl TxScratch {
    fn new() -> Box<Self> {
        Box::new(TxScratch {
            lin: vec![0; MAX_GSO_FRAME + VNET_HDR_LEN as usize],
            segs: Segments::with_capacity(2 * MAX_GSO_FRAME, 1024),
        })
    }
}

/// The virtio-net header at the start of TX chain `head` (`hdr_len` bytes, a 10-byte one
/// read as the 12-byte layout with `num_buffers` 0); `None` if it cannot be read (the chain
/// is refused later by the copy).
fn read_header(mem: &Mem, rings: &Rings<'_>, head: u16, hdr_len: usize) -> Option<VnetHdr> {
    let mut b = [0u8; 12];
    let mut got = 0usize;
    for d in rings.chain(head) {
        let d = d.ok()?;
        if got == hdr_len || d.write {
            break;
        }
        let k = (d.len as usize).min(hdr_len - got);
        if k > 0 {
            guest_slice(mem, GuestAddress(d.addr), k)
                .ok()?
                .copy_to(&mut b[got..got + k]);
        }
        got += k;
    }
    (got == hdr_len)
        .then(|| VnetHdr::from_le_bytes(&b))
        .flatten()
}

/// Total length of TX chain `head`, header included.
fn chain_len(rings: &Rings<'_>, head: u16) -> Result<usize, BadChain> {
    let mut n = 0usize;
    for d in rings.chain(head) {
        n += d?.len as usize;
    }
    Ok(n)
}

/// Copies TX chain `head` (minus its `hdr_len`-byte header) into the scratch space and
/// resolves the offloads `hdr` asks for into `sc.segs`.
fn resolve_chain(
    mem: &Mem,
    rings: &Rings<'_>,
    head: u16,
    hdr_len: usize,
    hdr: &VnetHdr,
    sc: &mut TxScratch,
) -> Result<(), BadChain> {
    let lin = VolatileSlice::from(&mut sc.lin[..]);
    let len = gather(mem, rings, head, hdr_len, &lin)?;
    sc.segs.clear();
    vnet::resolve(hdr, &sc.lin[..len], &mut sc.segs)?;
    Ok(())
}

/// Walks TX chain `head` past its first `skip` bytes (the virtio-net header, unless the port
/// carries it) and hands each remaining piece of guest memory to `f` as `(address, length)`.
/// A device-writable descriptor, a chain shorter than `skip` or a descriptor `f` refuses ends
/// the walk with the reason.
fn walk_tx_chain(
    rings: &Rings<'_>,
    head: u16,
    mut skip: usize,
    mut f: impl FnMut(GuestAddress, usize) -> Result<(), BadChain>,
) -> Result<(), BadChain> {
    let mut seen = 0usize;
    for d in rings.chain(head) {
        let d = d?;
        if d.write {
            return Err(BadChain::Direction);
        }
        let mut addr = GuestAddress(d.addr);
        let mut len = d.len as usize;
        seen += len;
        if skip > 0 {
            let k = skip.min(len);
            skip -= k;
            addr = addr.checked_add(k as u64).ok_or(BadAddress {
                addr: addr.0,
                len: k,
            })?;
            len -= k;
        }
        if len > 0 {
            f(addr, len)?;
        }
    }
    if skip > 0 {
        return Err(BadChain::Short(seen));
    }
    Ok(())
}

/// Copies TX chain `head` into the port's TX slots from `tx.head` on, skipping its first
/// `skip` bytes (the virtio-net header, unless the port carries it), as a chain of at most
/// `min(max, NETMAP_MAX_FRAGS)` slots; on success moves `tx.head` past it and returns the
/// bytes and slots used. On error nothing is published (the slots stay past `head`).
fn gather_slots(
    mem: &Mem,
    rings: &Rings<'_>,
    head: u16,
    skip: usize,
    tx: &mut AppRing,
    max: u32,
    copies: &mut Copies,
) -> Result<(usize, u32), BadChain> {
    let max = max.min(NETMAP_MAX_FRAGS);
    let size = tx.buf_size();
    let mut slot = tx.head();
    let mut used = 1u32;
    let mut off = 0usize; // bytes in the current slot
    let mut total = 0usize;
    let Some(mut dst) = tx.buffer(slot).map(|(b, _)| b.volatile_slice()) else {
        return Err(BadChain::TooLong(0));
    };
    walk_tx_chain(rings, head, skip, |mut addr, mut len| {
        while len > 0 {
            if off == size {
                // This slot is full: it continues in the next one.
                if used == max {
                    return Err(BadChain::TooLong(total + len));
                }
                let mut s = tx.slot(slot);
                s.len = off as u16;
                s.flags = NS_MOREFRAG;
                tx.set_slot(slot, s);
                slot = tx.next(slot);
                used += 1;
                off = 0;
                dst = match tx.buffer(slot) {
                    Some((b, _)) => b.volatile_slice(),
                    None => return Err(BadChain::TooLong(total)),
                };
            }
            let k = len.min(size - off);
            let src = guest_slice(mem, addr, k)?;
            // PANIC-free: off + k <= size, the buffer's length.
            if let Ok(b) = dst.subslice(off, k) {
                copies.push(&src, &b);
            }
            addr = addr.checked_add(k as u64).ok_or(BadAddress {
                addr: addr.0,
                len: k,
            })?;
            len -= k;
            off += k;
            total += k;
        }
        Ok(())
    })?;
    let mut s = tx.slot(slot);
    s.len = off as u16;
    s.flags = 0;
    tx.set_slot(slot, s);
    tx.advance(used);
    Ok((total, used))
}

/// Copies the TX chain at `head` into `dst`, skipping the first `skip` bytes (the
/// virtio-net header). Returns the frame's length.
pub fn gather(
    mem: &Mem,
    rings: &Rings<'_>,
    head: u16,
    skip: usize,
    dst: &VolatileSlice<'_>,
) -> Result<usize, BadChain> {
    let mut off = 0usize;
    walk_tx_chain(rings, head, skip, |addr, len| {
        if off + len > dst.len() {
            return Err(BadChain::TooLong(off + len));
        }
        let src = guest_slice(mem, addr, len)?;
        // PANIC-free: off + len <= dst.len() (checked above).
        if let Ok(d) = dst.subslice(off, len) {
            src.copy_to_volatile_slice(d);
        }
        off += len;
        Ok(())
    })?;
    Ok(off)
}
