//! The application side of a ptnet port, for host processes.
//!
//! [`Port::attach`] asks `ptnetd` for a port, maps its region and CSB (the datapath's own
//! [`Region`] and [`CsbMem`], attached), and from then on the client owns the user side of
//! the rings ([`AppRing`], as the daemon's NIC workers and virtio-net queues do) exactly as a
//! guest driver does: it moves `head`/`cur`
//! locally, publishes them through the CSB, kicks only when the daemon asked for kicks, reads
//! `hwcur`/`hwtail` back, and sleeps on its interrupt eventfds only after enabling
//! notifications with the double check. The netmap ring headers in the region are kept up to
//! date too, so netmap-style code reading `ring->tail` sees the same state.

use std::fs::File;
use std::io;
use std::mem::offset_of;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use ptnet_datapath::app::AppRing;
use ptnet_datapath::csb::{CsbMem, CsbRef};
use ptnet_datapath::mem::Region;
use ptnet_spec::netmap::{NETMAP_IF_RING_OFS, NS_MOREFRAG, NetmapIf, NetmapRing, NetmapSlot};
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

/// An eventfd the daemon sent (an eventfd of its creation per ring, in these positions).
fn eventfd(f: File) -> EventFd {
    ptnet_datapath::sys::file_eventfd(f)
}

/// The client's view of one ring (netmap's guest-side kring): the application side of the
/// ring in the port's region, driven through the CSB.
#[derive(Debug)]
struct Ring {
    app: AppRing,
    is_tx: bool,
    /// Free slots the application is waiting for (TX: the size of the frame that did not
    /// fit); `wait` returns when this many are free.
    want: u32,
}

impl Ring {
    fn space(&self) -> u32 {
        self.app.avail()
    }

    /// Whether what the application waits for is there.
    fn ready(&self) -> bool {
        self.space() >= self.want.max(1)
    }
}

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
    region: Arc<Region>,
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
        let n = Self::ring_count(&info)?;
        if files.len() != 2 + 2 * n {
            return Err(ClientError::Bad("wrong number of descriptors"));
        }
        let mut files = files.into_iter();
        let region_file = files.next().ok_or(ClientError::Bad("no region"))?;
        let csb_file = files.next().ok_or(ClientError::Bad("no CSB"))?;
        let size = |v: u64, what| usize::try_from(v).map_err(|_| ClientError::Bad(what));
        let csb = CsbMem::attach(
            csb_file,
            size(info.csb_size, "CSB size")?,
            n as u32,
            info.csb_ktoa_offset,
        )?
        .csb();
        let kicks: Vec<EventFd> = files.by_ref().take(n).map(eventfd).collect();
        let irqs: Vec<EventFd> = files.map(eventfd).collect();
        Self::build(info, region_file, |_| Ok(csb), kicks, irqs)
    }

    /// The number of rings `info` describes, if usable.
    pub(crate) fn ring_count(info: &AttachInfo) -> Result<usize, ClientError> {
        let n = (info.num_tx_rings + info.num_rx_rings) as usize;
        if info.num_tx_rings == 0 || info.num_rx_rings == 0 || n > 128 {
            return Err(ClientError::Bad("ring counts"));
        }
        Ok(n)
    }

    /// Maps the region, finds the rings, and takes the user side of each with the CSB `csb`
    /// gives (it may lie in the region itself), one kick and one interrupt per ring.
    pub(crate) fn build(
        info: AttachInfo,
        region_file: File,
        csb: impl FnOnce(&Arc<Region>) -> Result<CsbRef, ClientError>,
        kicks: Vec<EventFd>,
        irqs: Vec<EventFd>,
    ) -> Result<Self, ClientError> {
        let n = Self::ring_count(&info)?;
        if kicks.len() != n || irqs.len() != n {
            return Err(ClientError::Bad("wrong number of descriptors"));
        }
        let size = |v: u64, what| usize::try_from(v).map_err(|_| ClientError::Bad(what));
        let mut region = Region::attach(
            region_file,
            size(info.region_size, "region size")?,
            info.mem_id,
        )
        .map_err(|e| ClientError::Io(io::Error::other(e)))?;

        let ni: NetmapIf = region
            .read(info.nifp_offset)
            .ok_or(ClientError::Bad("netmap_if outside the region"))?;
        if ni.ni_tx_rings != info.num_tx_rings || ni.ni_rx_rings != info.num_rx_rings {
            return Err(ClientError::Bad(
                "netmap_if ring counts differ from the reply",
            ));
        }
        // Where each ring is, and where its buffers are: every ring must agree on the pool.
        let mut places = Vec::with_capacity(n);
        let mut pool = None;
        for k in 0..n {
            let want = if k < info.num_tx_rings as usize {
                info.num_tx_slots
            } else {
                info.num_rx_slots
            };
            let ofs: i64 = region
                .read(info.nifp_offset + (NETMAP_IF_RING_OFS + 8 * k) as u64)
                .ok_or(ClientError::Bad("netmap_if outside the region"))?;
            let ring_ofs = (info.nifp_offset as i64)
                .checked_add(ofs)
                .and_then(|o| u64::try_from(o).ok())
                .ok_or(ClientError::Bad("ring offset"))?;
            let field = |f: usize| ring_ofs.saturating_add(f as u64);
            let num_slots: Option<u32> = region.read(field(offset_of!(NetmapRing, num_slots)));
            let buf_size: Option<u32> = region.read(field(offset_of!(NetmapRing, nr_buf_size)));
            let buf_ofs: Option<i64> = region.read(field(offset_of!(NetmapRing, buf_ofs)));
            let (Some(num_slots), Some(buf_size), Some(buf_ofs)) = (num_slots, buf_size, buf_ofs)
            else {
                return Err(ClientError::Bad("ring outside the region"));
            };
            if num_slots != want || buf_size != info.buf_size || buf_size == 0 {
                return Err(ClientError::Bad("ring geometry differs from the reply"));
            }
            let p = (ring_ofs as i64)
                .checked_add(buf_ofs)
                .and_then(|p| u64::try_from(p).ok())
                .filter(|p| *p <= info.region_size)
                .ok_or(ClientError::Bad("buffer pool offset"))?;
            if pool.is_some_and(|q| q != p) {
                return Err(ClientError::Bad("rings disagree on the buffer pool"));
            }
            pool = Some(p);
            places.push((ring_ofs, num_slots));
        }
        region
            .set_buffers(pool.unwrap_or(0), info.buf_size)
            .map_err(|_| ClientError::Bad("buffer pool"))?;
        let region = Arc::new(region);
        let csb = csb(&region)?;
        let mut rings = Vec::with_capacity(n);
        for (k, (ofs, num_slots)) in places.into_iter().enumerate() {
            let view = region
                .ring(ofs, num_slots)
                .ok_or(ClientError::Bad("ring outside the region"))?;
            let (ring, entry) = if k < info.num_tx_rings as usize {
                (k as u32, k as u32)
            } else {
                ((k - info.num_tx_rings as usize) as u32, k as u32)
            };
            // Start from what the daemon published in the CSB (netmap's ptnet_sync_from_csb);
            // we are working: no interrupts until we wait.
            let app = AppRing::try_new(view, csb.clone(), ring, entry)
                .ok_or(ClientError::Bad("CSB indices outside the ring"))?;
            app.write_header();
            rings.push(Ring {
                app,
                is_tx: k < info.num_tx_rings as usize,
                want: 1,
            });
        }
        let epoll = Epoll::new()?;
        for (i, irq) in irqs.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                irq.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        Ok(Port {
            info,
            region,
            rings,
            kicks,
            irqs,
            epoll,
            kicks_sent: 0,
            linger: Duration::ZERO,
            _conn: None,
        })
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
        let app = &mut ring.app;
        let n = app.avail().min(max);
        let limit = app.buf_size().min(usize::from(u16::MAX)) as u16;
        for j in 0..n {
            let i = app.after_head(j);
            let mut s = app.slot(i);
            s.len = match app.buffer(i) {
                // SAFETY: slot `i` is in [head, tail), so it and its buffer are ours: ptnetd
                // neither reads nor writes them until we publish `head` past them, and this is
                // the only slice of the buffer.
                Some((b, _)) => fill(j, unsafe { b.as_mut_slice() }).min(limit),
                None => 0,
            };
            s.flags &= !NS_MOREFRAG;
            app.set_slot(i, s);
        }
        app.advance(n);
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
        let app = &mut ring.app;
        if frags.is_empty() || frags.iter().any(|f| f.len() > app.buf_size()) {
            return false;
        }
        if frags.len() as u32 > app.avail() {
            // `wait(Want::Tx)` now waits for room for the whole frame.
            ring.want = (frags.len() as u32).min(app.view().num_slots() - 1);
            return false;
        }
        ring.want = 1;
        for (j, f) in frags.iter().enumerate() {
            let i = app.after_head(j as u32);
            let mut s = app.slot(i);
            if let Some((b, _)) = app.buffer(i) {
                b.write(0, f);
            }
            s.len = f.len() as u16;
            s.flags = if j + 1 < frags.len() {
                s.flags | NS_MOREFRAG
            } else {
                s.flags & !NS_MOREFRAG
            };
            app.set_slot(i, s);
        }
        app.advance(frags.len() as u32);
        true
    }

    /// The client's and the CSB's view of ring `k` (CSB order), for debugging stalls.
    #[doc(hidden)]
    pub fn debug_ring(&self, k: usize) -> String {
        let k = k.min(self.rings.len() - 1);
        let r = &self.rings[k];
        format!("ring {k}: want {} | {}", r.want, r.app.debug_csb())
    }

    /// Protocol-breaking access for tests of the daemon's defences: writes slot `i` of ring
    /// `k` (CSB order) as given. Memory safe (the index is kept inside the ring), but the
    /// values are whatever the caller chose.
    #[doc(hidden)]
    pub fn unchecked_write_slot(&mut self, k: usize, i: u32, slot: NetmapSlot) {
        let k = k.min(self.rings.len() - 1);
        // The view keeps the index inside the ring.
        self.rings[k].app.set_slot(i, slot);
    }

    /// Protocol-breaking access for tests: publishes arbitrary `head`/`cur` for ring `k` and
    /// kicks.
    #[doc(hidden)]
    pub fn unchecked_publish(&mut self, k: usize, head: u32, cur: u32) {
        let k = k.min(self.rings.len() - 1);
        self.rings[k].app.unchecked_publish(head, cur);
        let _ = self.kicks[k].write(1);
    }

    /// Protocol-breaking access for tests: asks for ring `k`'s interrupts (CSB order) and
    /// leaves them asked for, whatever the client then does with its eventfds.
    #[doc(hidden)]
    pub fn unchecked_enable_notifications(&mut self, k: usize) {
        let k = k.min(self.rings.len() - 1);
        let _ = self.rings[k].app.enable_notifications();
    }

    /// Consumes up to `max` received frames of RX ring `r`: `eat(buf, slot)` sees each
    /// fragment's bytes and its slot. Advances `head` and `cur`; returns the number of slots
    /// consumed. Call [`Port::rxsync`] to give them back.
    pub fn rx_batch(&mut self, r: u32, max: u32, mut eat: impl FnMut(&[u8], &NetmapSlot)) -> u32 {
        let k = self.rx_index(r);
        let app = &mut self.rings[k].app;
        let n = app.avail().min(max);
        for j in 0..n {
            let i = app.after_head(j);
            match app.buffer(i) {
                // SAFETY: slot `i` is in [head, tail), so its buffer is ours until we release
                // it: ptnetd does not write it meanwhile.
                Some((b, s)) => eat(unsafe { &b.as_slice()[..usize::from(s.len)] }, &s),
                None => eat(&[], &app.slot(i)),
            }
        }
        app.advance(n);
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
        let ring = &mut self.rings[k];
        if ring.app.publish_for_kick(ring.is_tx, reclaim) {
            let _ = self.kicks[k].write(1);
            self.kicks_sent += 1;
        }
        // The daemon is trusted, but an index outside the ring must not reach our slots:
        // refresh ignores it.
        ring.app.refresh();
        ring.app.write_header();
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
                        let app = &self.rings[k].app;
                        if app.hwtail_moved_from(app.tail()) {
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
                    ring.app.cur_at_tail();
                    let published = ring.app.cur();
                    self.sync(k, false);
                    if self.rings[k].ready() {
                        moved_away = true;
                        break;
                    }
                    if self.rings[k].app.tail() == published {
                        break;
                    }
                }
                if moved_away {
                    ready = true;
                    continue;
                }
                self.rings[k].app.cur()
            } else {
                self.rings[k].app.tail()
            };
            let app = &mut self.rings[k].app;
            if app.enable_notifications_past(mark) {
                app.refresh();
                app.write_header();
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
            self.rings[k].app.disable_notifications();
            self.rings[k].app.cur_at_head();
            self.sync(k, false);
            ready |= self.rings[k].ready();
        }
        Ok(ready)
    }

    /// netmap-style sync of ring `k` (TX rings, then RX rings), for an application that
    /// moves `head` and `cur` in the ring header itself, as netmap's API has it (the preload
    /// library serves `NIOCTXSYNC`/`NIOCRXSYNC` with this): takes them from the header,
    /// checked as netmap's prologue checks them, publishes them through the CSB, kicks when
    /// the daemon asked for kicks, reads back and writes only `tail` into the header.
    /// Indices out of range reset the header to the ring's (netmap's ring reinit) and are
    /// returned; the sync still happens with the ring's own indices.
    pub fn netmap_sync(&mut self, k: usize) -> Result<(), (u32, u32)> {
        let Some(ring) = self.rings.get_mut(k) else {
            return Ok(());
        };
        let taken = ring.app.take_header();
        if ring.app.publish_for_kick(ring.is_tx, false) {
            let _ = self.kicks[k].write(1);
            self.kicks_sent += 1;
        }
        let app = &mut self.rings[k].app;
        app.refresh();
        app.write_tail();
        taken
    }

    /// Whether ring `k` has something for a netmap application after [`Port::netmap_sync`]:
    /// `cur` short of `tail` (room to transmit, frames to receive), netmap's `POLLOUT` and
    /// `POLLIN`.
    pub fn netmap_ready(&self, k: usize) -> bool {
        self.rings
            .get(k)
            .is_some_and(|r| r.app.cur() != r.app.tail())
    }

    /// Before a netmap application sleeps on ring `k`: asks for its interrupt, with the
    /// double check; returns whether it became ready meanwhile (then do not sleep).
    pub fn netmap_arm(&mut self, k: usize) -> bool {
        let Some(ring) = self.rings.get_mut(k) else {
            return false;
        };
        let mark = ring.app.tail();
        if ring.app.enable_notifications_past(mark) {
            ring.app.refresh();
            ring.app.write_tail();
        }
        self.netmap_ready(k)
    }

    /// After a netmap application woke up (or gave up): interrupts off on every ring, and
    /// the ones that fired consumed. Sync the rings again afterwards.
    pub fn netmap_disarm(&mut self) {
        for r in &self.rings {
            r.app.disable_notifications();
        }
        let mut evs = [EpollEvent::default(); 16];
        while let Ok(n) = self.epoll.wait(0, &mut evs) {
            for ev in &evs[..n] {
                if let Some(fd) = self.irqs.get(ev.data() as usize) {
                    let _ = fd.read();
                }
            }
            if n < evs.len() {
                break;
            }
        }
    }

    /// A descriptor that becomes readable when an armed ring's interrupt fires (an epoll set
    /// of the port's interrupt eventfds): what a netmap application's `poll` sleeps on.
    pub fn notify_fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_raw_fd()
    }

    /// The port's memory region (the memfd a netmap application maps).
    pub fn region_file(&self) -> &File {
        self.region.file()
    }

    /// Size of the region (what a netmap application would mmap).
    pub fn region_size(&self) -> usize {
        self.region.size()
    }
}
