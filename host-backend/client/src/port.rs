//! The application side of a ptnet port, for host processes.
//!
//! [`Port::attach`] asks `ptnetd` for a port, maps its region and CSB, and from then on the
//! client owns the user side of the rings exactly as a guest driver does: it moves `head`/`cur`
//! locally, publishes them through the CSB, kicks only when the daemon asked for kicks, reads
//! `hwcur`/`hwtail` back, and sleeps on its interrupt eventfds only after enabling
//! notifications with the double check. The netmap ring headers in the region are kept up to
//! date too, so netmap-style code reading `ring->tail` sees the same state.

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ptnet_spec::appl::ApplRing;
use ptnet_spec::csb::{CsbAtok, CsbKtoa};
use ptnet_spec::netmap::{
    NETMAP_IF_RING_OFS, NETMAP_RING_SLOTS_OFS, NS_MOREFRAG, NetmapIf, NetmapRing, NetmapSlot,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::proto::{self, AttachInfo, PortRequest, ProtoError, Reply, Request};

/// Errors of attaching and using a port.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Talking to the daemon failed.
    #[error("cannot talk to ptnetd")]
    Proto(#[from] ProtoError),
    /// The daemon refused.
    #[error("ptnetd: {0}")]
    Refused(String),
    /// The daemon's reply does not describe a usable port.
    #[error("ptnetd sent an unusable port description: {0}")]
    Bad(&'static str),
    /// A system call failed.
    #[error("system call failed")]
    Io(#[from] io::Error),
}

/// A shared read-write mapping of a whole memfd.
///
/// Invariant: `base` points to `len` mapped bytes for the life of the value.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(file: &File, len: usize) -> io::Result<Self> {
        if len == 0 || file.metadata()?.len() < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "memfd smaller than announced",
            ));
        }
        // SAFETY: a fresh shared mapping of a file we hold, at an address of the kernel's
        // choosing: it aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            // PANIC: mmap never returns null on success.
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }

    /// Pointer to `ofs` if `[ofs, ofs + size)` lies inside the mapping and `ofs` is aligned.
    fn at(&self, ofs: u64, size: usize, align: usize) -> Option<*mut u8> {
        let ofs = usize::try_from(ofs).ok()?;
        (ofs.checked_add(size)? <= self.len && ofs % align == 0)
            // SAFETY: in bounds, checked just above.
            .then(|| unsafe { self.base.as_ptr().add(ofs) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no pointer into it outlives the Port.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The client's view of one ring (netmap's guest-side kring).
#[derive(Debug)]
struct Ring {
    /// The ring header in the region.
    hdr: *mut NetmapRing,
    /// First slot.
    slots: *mut NetmapSlot,
    /// Start of the buffer pool as seen from this ring.
    bufs: *mut u8,
    num_slots: u32,
    buf_size: u32,
    /// Buffers addressable inside the region.
    num_bufs: u32,
    /// `head`, `cur`, `tail` and the `hwcur` last read.
    idx: ApplRing,
    is_tx: bool,
    /// Free slots the application is waiting for (TX: the size of the frame that did not
    /// fit); `wait` returns when this many are free.
    want: u32,
}

impl Ring {
    fn space(&self) -> u32 {
        self.idx.space()
    }

    /// Whether what the application waits for is there.
    fn ready(&self) -> bool {
        self.space() >= self.want.max(1)
    }

    fn slot(&self, i: u32) -> *mut NetmapSlot {
        // An out-of-range index (a caller bug) stays inside the ring.
        let i = if i < self.num_slots { i } else { 0 };
        // SAFETY: i < num_slots and the ring's slots were checked to lie in the region.
        unsafe { self.slots.add(i as usize) }
    }

    fn buf(&self, idx: u32) -> Option<*mut u8> {
        // SAFETY: idx < num_bufs keeps the buffer inside the region (checked at attach).
        (idx < self.num_bufs)
            .then(|| unsafe { self.bufs.add(idx as usize * self.buf_size as usize) })
    }

    fn write_header(&self) {
        // SAFETY: `hdr` points to this ring's header inside the region; the pointer fields
        // are atomics, so these stores are sound under the daemon's concurrent reads.
        let h = unsafe { &*self.hdr.cast::<RingPointers>() };
        h.head.store(self.idx.head(), Ordering::Relaxed);
        h.cur.store(self.idx.cur(), Ordering::Relaxed);
        h.tail.store(self.idx.tail(), Ordering::Release);
    }
}

/// The `head`, `cur`, `tail` words of a `netmap_ring` header, at their ABI offsets.
#[repr(C)]
struct RingPointers {
    _pad: [u32; 5],
    head: AtomicU32,
    cur: AtomicU32,
    tail: AtomicU32,
}

const _: () = {
    assert!(std::mem::offset_of!(RingPointers, head) == std::mem::offset_of!(NetmapRing, head));
    assert!(std::mem::offset_of!(RingPointers, tail) == std::mem::offset_of!(NetmapRing, tail));
};

/// Which rings a [`Port::wait`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Room in a TX ring.
    Tx,
    /// Frames in an RX ring.
    Rx,
}

/// An attached port.
#[derive(Debug)]
pub struct Port {
    info: AttachInfo,
    region: Mapping,
    csb: Mapping,
    /// TX rings then RX rings (CSB order).
    rings: Vec<Ring>,
    kicks: Vec<EventFd>,
    irqs: Vec<EventFd>,
    epoll: Epoll,
    /// Kicks sent, for the statistics of tools.
    kicks_sent: u64,
    /// How long `wait` polls before it asks for an interrupt and sleeps.
    linger: Duration,
    _conn: Option<UnixStream>,
}

// SAFETY: the raw pointers address the port's own mappings, owned by the value; nothing is
// tied to the creating thread.
unsafe impl Send for Port {}

impl Port {
    /// Attaches to `port` through the daemon at `$PTNET_SOCKET` (or the default socket).
    pub fn open(port: &str) -> Result<Self, ClientError> {
        Self::attach(
            &proto::socket_path(),
            PortRequest {
                port: port.to_owned(),
                ..Default::default()
            },
        )
    }

    /// Attaches with full options through the daemon listening at `socket`.
    pub fn attach(socket: &str, req: PortRequest) -> Result<Self, ClientError> {
        let (reply, files, conn) = proto::call(socket, Request::Attach(req))?;
        let info = match reply {
            Reply::Attached(info) => info,
            Reply::Error { message } => return Err(ClientError::Refused(message)),
            _ => return Err(ClientError::Bad("unexpected reply to attach")),
        };
        let mut port = Self::from_parts(info, files)?;
        port._conn = Some(conn);
        Ok(port)
    }

    /// Builds a port from an attach description and its descriptors (region, CSB, kicks,
    /// interrupts), validating every offset against the mappings. Used by [`Port::attach`],
    /// and directly by in-process tests and benchmarks.
    pub fn from_parts(info: AttachInfo, files: Vec<File>) -> Result<Self, ClientError> {
        let n = (info.num_tx_rings + info.num_rx_rings) as usize;
        if info.num_tx_rings == 0 || info.num_rx_rings == 0 || n > 128 {
            return Err(ClientError::Bad("ring counts"));
        }
        if files.len() != 2 + 2 * n {
            return Err(ClientError::Bad("wrong number of descriptors"));
        }
        let mut files = files.into_iter();
        let region_file = files.next().ok_or(ClientError::Bad("no region"))?;
        let csb_file = files.next().ok_or(ClientError::Bad("no CSB"))?;
        let region = Mapping::new(
            &region_file,
            usize::try_from(info.region_size).map_err(|_| ClientError::Bad("region size"))?,
        )?;
        let csb = Mapping::new(
            &csb_file,
            usize::try_from(info.csb_size).map_err(|_| ClientError::Bad("CSB size"))?,
        )?;
        let csb_need = n * size_of::<CsbAtok>();
        if csb.at(0, csb_need, 64).is_none() || csb.at(info.csb_ktoa_offset, csb_need, 64).is_none()
        {
            return Err(ClientError::Bad("CSB arrays outside the CSB memfd"));
        }
        let eventfd = |f: File| -> EventFd {
            // SAFETY: the daemon sent eventfds in these positions; EventFd only reads and
            // writes 8-byte counters, harmless on any descriptor.
            unsafe {
                <EventFd as std::os::fd::FromRawFd>::from_raw_fd(
                    std::os::fd::IntoRawFd::into_raw_fd(OwnedFd::from(f)),
                )
            }
        };
        let kicks: Vec<EventFd> = files.by_ref().take(n).map(eventfd).collect();
        let irqs: Vec<EventFd> = files.map(eventfd).collect();

        let nifp = region
            .at(info.nifp_offset, NETMAP_IF_RING_OFS + n * 8, 8)
            .ok_or(ClientError::Bad("netmap_if outside the region"))?;
        // SAFETY: checked in bounds and aligned; plain data read once.
        let ni: NetmapIf = unsafe { nifp.cast::<NetmapIf>().read_volatile() };
        if ni.ni_tx_rings != info.num_tx_rings || ni.ni_rx_rings != info.num_rx_rings {
            return Err(ClientError::Bad(
                "netmap_if ring counts differ from the reply",
            ));
        }
        let mut rings = Vec::with_capacity(n);
        for k in 0..n {
            let is_tx = k < info.num_tx_rings as usize;
            // SAFETY: ring_ofs[k] lies inside the netmap_if object checked above.
            let ofs: i64 = unsafe {
                nifp.add(NETMAP_IF_RING_OFS + 8 * k)
                    .cast::<i64>()
                    .read_volatile()
            };
            let ring_ofs = (info.nifp_offset as i64)
                .checked_add(ofs)
                .and_then(|o| u64::try_from(o).ok())
                .ok_or(ClientError::Bad("ring offset"))?;
            let want = if is_tx {
                info.num_tx_slots
            } else {
                info.num_rx_slots
            };
            let hdr = region
                .at(
                    ring_ofs,
                    NETMAP_RING_SLOTS_OFS + want as usize * size_of::<NetmapSlot>(),
                    64,
                )
                .ok_or(ClientError::Bad("ring outside the region"))?;
            // SAFETY: header checked in bounds; fields read once.
            let (num_slots, buf_size, buf_ofs) = unsafe {
                (
                    hdr.add(8).cast::<u32>().read_volatile(),
                    hdr.add(12).cast::<u32>().read_volatile(),
                    hdr.cast::<i64>().read_volatile(),
                )
            };
            if num_slots != want || buf_size != info.buf_size || buf_size == 0 {
                return Err(ClientError::Bad("ring geometry differs from the reply"));
            }
            let pool = (ring_ofs as i64)
                .checked_add(buf_ofs)
                .and_then(|p| u64::try_from(p).ok())
                .filter(|p| *p <= info.region_size)
                .ok_or(ClientError::Bad("buffer pool offset"))?;
            let num_bufs =
                ((info.region_size - pool) / u64::from(buf_size)).min(u64::from(u32::MAX)) as u32;
            let bufs = region
                .at(pool, 0, 1)
                .ok_or(ClientError::Bad("buffer pool"))?;
            // Start from what the daemon published in the CSB (netmap's ptnet_sync_from_csb).
            let (atok, ktoa) = csb_entries(&csb, &info, k);
            let idx = ApplRing::from_csb(num_slots, atok, ktoa)
                .ok_or(ClientError::Bad("CSB indices outside the ring"))?;
            let r = Ring {
                hdr: hdr.cast(),
                // SAFETY: the slots follow the header, inside the checked range.
                slots: unsafe { hdr.add(NETMAP_RING_SLOTS_OFS).cast() },
                bufs,
                num_slots,
                buf_size,
                num_bufs,
                idx,
                is_tx,
                want: 1,
            };
            r.write_header();
            rings.push(r);
        }
        let epoll = Epoll::new()?;
        for (i, irq) in irqs.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                irq.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        let port = Port {
            info,
            region,
            csb,
            rings,
            kicks,
            irqs,
            epoll,
            kicks_sent: 0,
            linger: Duration::ZERO,
            _conn: None,
        };
        // We are working: no interrupts until we wait.
        for k in 0..n {
            port.entries(k).0.appl_disable_notifications();
        }
        Ok(port)
    }

    /// What the daemon said about the port.
    pub fn info(&self) -> &AttachInfo {
        &self.info
    }

    /// Number of TX rings.
    pub fn num_tx_rings(&self) -> u32 {
        self.info.num_tx_rings
    }

    /// Number of RX rings.
    pub fn num_rx_rings(&self) -> u32 {
        self.info.num_rx_rings
    }

    /// Makes [`Port::wait`] poll the CSB for up to `linger` before it enables interrupts and
    /// sleeps: a peer that answers within a few microseconds then costs no interrupt and no
    /// context switch (zero, the default, sleeps at once).
    pub fn set_linger(&mut self, linger: Duration) {
        self.linger = linger;
    }

    /// Kicks sent so far.
    pub fn kicks_sent(&self) -> u64 {
        self.kicks_sent
    }

    fn entries(&self, k: usize) -> (&CsbAtok, &CsbKtoa) {
        csb_entries(&self.csb, &self.info, k)
    }

    fn tx_index(&self, r: u32) -> usize {
        (r.min(self.info.num_tx_rings - 1)) as usize
    }

    fn rx_index(&self, r: u32) -> usize {
        (self.info.num_tx_rings + r.min(self.info.num_rx_rings - 1)) as usize
    }

    /// Free slots in TX ring `r`.
    pub fn tx_space(&self, r: u32) -> u32 {
        self.rings[self.tx_index(r)].space()
    }

    /// Received slots waiting in RX ring `r`.
    pub fn rx_pending(&self, r: u32) -> u32 {
        self.rings[self.rx_index(r)].space()
    }

    /// Fills up to `max` free slots of TX ring `r`, one frame per slot: `fill(i, buf)` writes
    /// frame `i` into the buffer and returns its length. Advances `head` and `cur`; returns the
    /// number of frames queued. Call [`Port::txsync`] to hand them over.
    pub fn tx_batch(
        &mut self,
        r: u32,
        max: u32,
        mut fill: impl FnMut(u32, &mut [u8]) -> u16,
    ) -> u32 {
        let k = self.tx_index(r);
        let ring = &mut self.rings[k];
        let n = ring.space().min(max);
        let mut i = ring.idx.head();
        for k in 0..n {
            let sp = ring.slot(i);
            // SAFETY: the slot belongs to us (it is in [head, tail)) and lies in the ring.
            let mut s = unsafe { sp.read_volatile() };
            let len = match ring.buf(s.buf_idx) {
                Some(b) => {
                    // SAFETY: the buffer is ours while its slot is in [head, tail), lies in the
                    // region (checked by `buf`), and no other reference to it exists now.
                    let buf = unsafe { std::slice::from_raw_parts_mut(b, ring.buf_size as usize) };
                    fill(k, buf).min(ring.buf_size.min(u32::from(u16::MAX)) as u16)
                }
                None => 0,
            };
            s.len = len;
            s.flags &= !NS_MOREFRAG;
            // SAFETY: as above.
            unsafe { sp.write_volatile(s) };
            i = ring.idx.next(i);
        }
        ring.idx.advance(n);
        if n > 0 {
            ring.want = 1;
        }
        n
    }

    /// Queues one frame made of `frags` (one slot each, chained with NS_MOREFRAG). Returns
    /// false, queuing nothing, if the ring lacks room or a fragment exceeds a buffer.
    pub fn tx_frags(&mut self, r: u32, frags: &[&[u8]]) -> bool {
        let k = self.tx_index(r);
        let ring = &mut self.rings[k];
        if frags.is_empty() || frags.iter().any(|f| f.len() > ring.buf_size as usize) {
            return false;
        }
        if frags.len() as u32 > ring.space() {
            // `wait(Want::Tx)` now waits for room for the whole frame.
            ring.want = (frags.len() as u32).min(ring.num_slots - 1);
            return false;
        }
        ring.want = 1;
        let mut i = ring.idx.head();
        for (j, f) in frags.iter().enumerate() {
            let sp = ring.slot(i);
            // SAFETY: the slot is ours ([head, tail)) and inside the ring.
            let mut s = unsafe { sp.read_volatile() };
            if let Some(b) = ring.buf(s.buf_idx) {
                // SAFETY: our buffer (slot in [head, tail)), inside the region, f.len() <=
                // buf_size checked above; `f` is ordinary memory, not the buffer.
                unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), b, f.len()) };
            }
            s.len = f.len() as u16;
            s.flags = if j + 1 < frags.len() {
                s.flags | NS_MOREFRAG
            } else {
                s.flags & !NS_MOREFRAG
            };
            // SAFETY: as above.
            unsafe { sp.write_volatile(s) };
            i = ring.idx.next(i);
        }
        ring.idx.advance(frags.len() as u32);
        true
    }

    /// The client's and the CSB's view of ring `k` (CSB order), for debugging stalls.
    #[doc(hidden)]
    pub fn debug_ring(&self, k: usize) -> String {
        let k = k.min(self.rings.len() - 1);
        let r = &self.rings[k];
        let (atok, ktoa) = csb_entries(&self.csb, &self.info, k);
        let a = atok.kern_read();
        let s = ktoa.appl_read();
        format!(
            "ring {k}: head {} cur {} tail {} want {} | atok head {} cur {} need_irq {} | ktoa hwcur {} hwtail {} need_kick {}",
            r.idx.head(),
            r.idx.cur(),
            r.idx.tail(),
            r.want,
            a.head,
            a.cur,
            atok.appl_wants_interrupt(),
            s.hwcur,
            s.hwtail,
            ktoa.kern_wants_kick()
        )
    }

    /// Protocol-breaking access for tests of the daemon's defences: writes slot `i` of ring
    /// `k` (CSB order) as given. Memory safe (the index is kept inside the ring), but the
    /// values are whatever the caller chose.
    #[doc(hidden)]
    pub fn unchecked_write_slot(&mut self, k: usize, i: u32, slot: NetmapSlot) {
        let k = k.min(self.rings.len() - 1);
        // SAFETY: `slot()` keeps the index inside the ring, which lies in our mapping.
        unsafe { self.rings[k].slot(i).write_volatile(slot) };
    }

    /// Protocol-breaking access for tests: publishes arbitrary `head`/`cur` for ring `k` and
    /// kicks.
    #[doc(hidden)]
    pub fn unchecked_publish(&mut self, k: usize, head: u32, cur: u32) {
        let k = k.min(self.rings.len() - 1);
        let (atok, _) = csb_entries(&self.csb, &self.info, k);
        atok.appl_write(head, cur);
        let _ = self.kicks[k].write(1);
    }

    /// Consumes up to `max` received frames of RX ring `r`: `eat(buf, slot)` sees each
    /// fragment's bytes and its slot. Advances `head` and `cur`; returns the number of slots
    /// consumed. Call [`Port::rxsync`] to give them back.
    pub fn rx_batch(&mut self, r: u32, max: u32, mut eat: impl FnMut(&[u8], &NetmapSlot)) -> u32 {
        let k = self.rx_index(r);
        let ring = &mut self.rings[k];
        let n = ring.space().min(max);
        let mut i = ring.idx.head();
        for _ in 0..n {
            // SAFETY: the slot is ours ([head, tail)) and inside the ring.
            let s = unsafe { ring.slot(i).read_volatile() };
            let len = u32::from(s.len).min(ring.buf_size) as usize;
            match ring.buf(s.buf_idx) {
                // SAFETY: the buffer is ours until released, inside the region; the daemon
                // does not write it while its slot is in [head, tail).
                Some(b) => eat(unsafe { std::slice::from_raw_parts(b, len) }, &s),
                None => eat(&[], &s),
            }
            i = ring.idx.next(i);
        }
        ring.idx.advance(n);
        n
    }

    /// txsync of TX ring `r`: publishes the queued frames, kicks the daemon if it asked for
    /// kicks, and reads back how much room there is.
    pub fn txsync(&mut self, r: u32) {
        let k = self.tx_index(r);
        self.sync(k, false);
    }

    /// rxsync of RX ring `r`: gives back consumed slots and reads what has arrived.
    pub fn rxsync(&mut self, r: u32) {
        let k = self.rx_index(r);
        self.sync(k, false);
    }

    /// txsync that also asks the daemon to reclaim completed slots now.
    pub fn txsync_reclaim(&mut self, r: u32) {
        let k = self.tx_index(r);
        self.sync(k, true);
    }

    fn sync(&mut self, k: usize, reclaim: bool) {
        let (atok, ktoa) = csb_entries(&self.csb, &self.info, k);
        let ring = &mut self.rings[k];
        atok.appl_disable_notifications();
        if ring.idx.publish(atok, ktoa, ring.is_tx, reclaim) {
            let _ = self.kicks[k].write(1);
            self.kicks_sent += 1;
        }
        // The daemon is trusted, but an index outside the ring must not reach our pointers:
        // read_back ignores it.
        ring.idx.read_back(ktoa);
        ring.write_header();
    }

    /// Sleeps until one of the rings of kind `want` is ready (room to transmit, frames to
    /// receive) or `timeout` passes; returns whether one is ready. Notifications are enabled
    /// only for the rings that would block, with the double check, so a wake-up is never lost.
    pub fn wait(&mut self, want: Want, timeout: Option<Duration>) -> io::Result<bool> {
        let range = match want {
            Want::Tx => 0..self.info.num_tx_rings as usize,
            Want::Rx => self.info.num_tx_rings as usize..self.rings.len(),
        };
        let mut ready = false;
        if !self.linger.is_zero() {
            for k in range.clone() {
                self.sync(k, false);
            }
            let until = std::time::Instant::now() + self.linger;
            'poll: while std::time::Instant::now() < until {
                for _ in 0..64 {
                    for k in range.clone() {
                        let s = csb_entries(&self.csb, &self.info, k).1.appl_read();
                        if s.hwtail != self.rings[k].idx.tail() {
                            break 'poll;
                        }
                    }
                    std::hint::spin_loop();
                }
            }
        }
        for k in range.clone() {
            self.sync(k, false);
            if self.rings[k].ready() {
                ready = true;
                continue;
            }
            // The point that must move before this ring is worth waking for: for TX, netmap's
            // "wake me when tail passes cur" (cur set at tail tells the daemon this ring would
            // block; a pipe peer then reports the slots it releases), for RX the tail itself.
            let mark = if self.rings[k].is_tx {
                // Publish cur at the current tail; if the tail moved meanwhile, again.
                let mut moved_away = false;
                for _ in 0..8 {
                    let ring = &mut self.rings[k];
                    ring.idx.cur_at_tail();
                    let published = ring.idx.cur();
                    self.sync(k, false);
                    if self.rings[k].ready() {
                        moved_away = true;
                        break;
                    }
                    if self.rings[k].idx.tail() == published {
                        break;
                    }
                }
                if moved_away {
                    ready = true;
                    continue;
                }
                self.rings[k].idx.cur()
            } else {
                self.rings[k].idx.tail()
            };
            let (atok, ktoa) = csb_entries(&self.csb, &self.info, k);
            let ring = &mut self.rings[k];
            if ring.idx.enable_notifications(atok, ktoa, mark) {
                ring.idx.read_back(ktoa);
                ring.write_header();
                ready = true;
            }
        }
        if !ready {
            let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
            let mut evs = [EpollEvent::default(); 16];
            let n = loop {
                match self.epoll.wait(ms, &mut evs) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            for ev in &evs[..n] {
                if let Some(fd) = self.irqs.get(ev.data() as usize) {
                    let _ = fd.read();
                }
            }
        }
        for k in range {
            csb_entries(&self.csb, &self.info, k)
                .0
                .appl_disable_notifications();
            self.rings[k].idx.cur_at_head();
            self.sync(k, false);
            ready |= self.rings[k].ready();
        }
        Ok(ready)
    }

    /// Size of the region (what a netmap application would mmap).
    pub fn region_size(&self) -> usize {
        self.region.len
    }
}

fn csb_entries<'a>(csb: &'a Mapping, info: &AttachInfo, k: usize) -> (&'a CsbAtok, &'a CsbKtoa) {
    let n = (info.num_tx_rings + info.num_rx_rings) as usize;
    let k = k.min(n - 1);
    // SAFETY: both arrays were checked at attach to hold n 64-byte aligned entries inside the
    // CSB mapping, which lives as long as the Port; the entries are all atomics.
    unsafe {
        (
            &*csb.base.as_ptr().cast::<CsbAtok>().add(k),
            &*csb
                .base
                .as_ptr()
                .add(info.csb_ktoa_offset as usize)
                .cast::<CsbKtoa>()
                .add(k),
        )
    }
}
