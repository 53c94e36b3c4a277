//! The application side of a port's ring, in process: what a host client does through its
//! mapping, done by the daemon itself for the ports it drives (NIC workers, virtio-net queue
//! pairs). The indices and the CSB steps are ptnet-spec's [`ApplRing`]; this adds the ring's
//! slots and buffers and runs the port's txsync/rxsync in the calling thread, so no sync
//! loop and no kick sits between the application and the switch.
//!
//! The daemon's own memory is not more trusted for being its own: a port's region may be
//! shared with clients (a trusted switch), so every buffer index and length read from a slot
//! is checked before use, exactly as on the kernel side.

use ptnet_spec::appl::ApplRing;
use ptnet_spec::netmap::{NS_MOREFRAG, NetmapSlot};

use crate::csb::CsbRef;
use crate::mem::{Buf, RingView};
use crate::port::SyncPort;

/// How many txsync rounds one [`AppRing::txsync`] runs while the port says a batch limit left
/// work behind.
const TXSYNC_ROUNDS: usize = 4;

/// One ring of a port, driven from the application side by a thread of the daemon.
#[derive(Debug)]
pub struct AppRing {
    view: RingView,
    csb: CsbRef,
    /// This ring's entry in the CSB (TX rings, then RX rings).
    entry: u32,
    /// Ring number within its direction (for the port's txsync/rxsync).
    ring: u32,
    idx: ApplRing,
}

impl AppRing {
    /// Ring `ring` of a port (`view`), bound to entry `entry` of `csb`. It starts where the
    /// CSB says (the port published its state when the application was bound), or from an
    /// empty ring if the entry is missing or holds indices outside the ring; interrupts are
    /// off until [`AppRing::enable_notifications`].
    pub fn new(view: RingView, csb: CsbRef, ring: u32, entry: u32) -> Self {
        let n = view.num_slots();
        let idx = match (csb.atok(entry), csb.ktoa(entry)) {
            (Some(a), Some(k)) => {
                a.appl_disable_notifications();
                ApplRing::from_csb(n, a, k)
            }
            _ => None,
        }
        .unwrap_or(ApplRing::empty(n));
        AppRing {
            view,
            csb,
            entry,
            ring,
            idx,
        }
    }

    /// As [`AppRing::new`], but `None` unless the CSB entry exists and holds indices inside
    /// the ring (an application in another process, which must not start from a guess).
    pub fn try_new(view: RingView, csb: CsbRef, ring: u32, entry: u32) -> Option<Self> {
        let (a, k) = (csb.atok(entry)?, csb.ktoa(entry)?);
        let idx = ApplRing::from_csb(view.num_slots(), a, k)?;
        a.appl_disable_notifications();
        Some(AppRing {
            view,
            csb,
            entry,
            ring,
            idx,
        })
    }

    /// The ring's slots.
    #[inline]
    pub fn view(&self) -> &RingView {
        &self.view
    }

    /// The application's indices.
    #[inline]
    pub fn indices(&self) -> &ApplRing {
        &self.idx
    }

    /// `head`.
    #[inline]
    pub fn head(&self) -> u32 {
        self.idx.head()
    }

    /// `cur`.
    #[inline]
    pub fn cur(&self) -> u32 {
        self.idx.cur()
    }

    /// `tail`.
    #[inline]
    pub fn tail(&self) -> u32 {
        self.idx.tail()
    }

    /// Sets `cur` at `tail`: "wake me when `tail` moves past here" (a TX application that
    /// waits for room).
    #[inline]
    pub fn cur_at_tail(&mut self) {
        self.idx.cur_at_tail();
    }

    /// Sets `cur` back at `head`.
    #[inline]
    pub fn cur_at_head(&mut self) {
        self.idx.cur_at_head();
    }

    /// Slots held from `head` on (TX: free, RX: received).
    #[inline]
    pub fn avail(&self) -> u32 {
        self.idx.space()
    }

    /// The slot after `i`.
    #[inline]
    pub fn next(&self, i: u32) -> u32 {
        self.idx.next(i)
    }

    /// The slot `k` after `head` (`k <= avail()`).
    #[inline]
    pub fn after_head(&self, k: u32) -> u32 {
        self.idx.after_head(k)
    }

    /// The size of the ring's buffers, as much of it as a slot's 16-bit length can say.
    #[inline]
    pub fn buf_size(&self) -> usize {
        (self.view.region().buf_size() as usize).min(usize::from(u16::MAX))
    }

    /// Reads back `hwtail`/`hwcur`; returns whether `tail` moved.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        match self.csb.ktoa(self.entry) {
            Some(k) => self.idx.read_back(k),
            None => false,
        }
    }

    /// Hands `k` slots from `head` on back to the port (at most [`AppRing::avail`]); they
    /// reach it with the next [`AppRing::publish`].
    #[inline]
    pub fn advance(&mut self, k: u32) {
        self.idx.advance(k);
    }

    /// Publishes `head` (and `cur` at `head`) in the CSB.
    #[inline]
    pub fn publish(&self) {
        if let Some(a) = self.csb.atok(self.entry) {
            self.idx.write(a);
        }
    }

    /// The application half of a sync for an application in another process: notifications
    /// off, `head`/`cur` published, and whether the port must be kicked (`tx`: a TX ring;
    /// `reclaim`: `NAF_FORCE_RECLAIM`). Read back with [`AppRing::refresh`] after the kick.
    #[inline]
    pub fn publish_for_kick(&self, tx: bool, reclaim: bool) -> bool {
        match (self.csb.atok(self.entry), self.csb.ktoa(self.entry)) {
            (Some(a), Some(k)) => {
                a.appl_disable_notifications();
                self.idx.publish(a, k, tx, reclaim)
            }
            _ => false,
        }
    }

    /// Whether the port has published a `hwtail` other than `mark` (no read-back): polling
    /// without touching the ring.
    #[inline]
    pub fn hwtail_moved_from(&self, mark: u32) -> bool {
        self.csb
            .ktoa(self.entry)
            .is_some_and(|k| k.appl_read().hwtail != mark)
    }

    /// Writes `head`, `cur` and `tail` into the ring's header, for netmap-style code that
    /// reads `ring->tail` (the port itself reads the CSB, never the header).
    #[inline]
    pub fn write_header(&self) {
        self.view
            .reset_pointers(self.idx.head(), self.idx.cur(), self.idx.tail());
    }

    /// Takes `head`/`cur` from the ring header, where a netmap application moves them
    /// itself (see [`ApplRing::take_app_indices`]); out of range, the header is set back to
    /// the ring's indices (netmap's ring reinit) and the values are returned.
    pub fn take_header(&mut self) -> Result<(), (u32, u32)> {
        let (head, cur) = self.view.app_head_cur();
        self.idx.take_app_indices(head, cur).inspect_err(|_| {
            self.write_header();
        })
    }

    /// Writes only `tail` into the ring header (the application owns `head` and `cur`).
    #[inline]
    pub fn write_tail(&self) {
        self.view.publish_tail(self.idx.tail());
    }

    /// Protocol-breaking access for tests of the daemon's defences: publishes `head` and
    /// `cur` as given, whatever the ring's state.
    #[doc(hidden)]
    pub fn unchecked_publish(&self, head: u32, cur: u32) {
        if let Some(a) = self.csb.atok(self.entry) {
            a.appl_write(head, cur);
        }
    }

    /// The application's and the CSB's view of the ring, for debugging stalls.
    pub fn debug_csb(&self) -> String {
        let (Some(atok), Some(ktoa)) = (self.csb.atok(self.entry), self.csb.ktoa(self.entry))
        else {
            return format!("entry {}: no such CSB entry", self.entry);
        };
        let a = atok.kern_read();
        let s = ktoa.appl_read();
        format!(
            "head {} cur {} tail {} | atok head {} cur {} need_irq {} | ktoa hwcur {} hwtail {} \
             need_kick {}",
            self.idx.head(),
            self.idx.cur(),
            self.idx.tail(),
            a.head,
            a.cur,
            atok.appl_wants_interrupt(),
            s.hwcur,
            s.hwtail,
            ktoa.kern_wants_kick()
        )
    }

    /// Publishes `head`, runs the port's txsync (again while a batch limit left work, a few
    /// times at most) and reads back the room there is.
    pub fn txsync<P: SyncPort + ?Sized>(&mut self, port: &P) {
        for _ in 0..TXSYNC_ROUNDS {
            self.publish();
            let o = port.txsync(self.ring);
            self.refresh();
            if !o.more {
                break;
            }
        }
    }

    /// Publishes `head` and runs the port's rxsync: the slots before `head` go back to it.
    pub fn rxsync<P: SyncPort + ?Sized>(&mut self, port: &P) {
        self.publish();
        port.rxsync(self.ring);
    }

    /// Slot `i`.
    #[inline]
    pub fn slot(&self, i: u32) -> NetmapSlot {
        self.view.read_slot(i)
    }

    /// Writes slot `i`.
    #[inline]
    pub fn set_slot(&self, i: u32, s: NetmapSlot) {
        self.view.write_slot(i, s);
    }

    /// Slot `i` and its buffer, both bounded by [`AppRing::buf_size`] (the handle and the
    /// slot's `len`); `None` if the slot names no buffer of the region.
    #[inline]
    pub fn buffer(&self, i: u32) -> Option<(Buf<'_>, NetmapSlot)> {
        let mut s = self.view.read_slot(i);
        let size = self.buf_size();
        let b = self.view.region().buf(s.buf_idx)?.prefix(size);
        s.len = s.len.min(size as u16);
        Some((b, s))
    }

    /// The frame that starts at held slot `from`: how many slots it spans (following
    /// `NS_MOREFRAG`, at most `max_frags`, never past `tail`) and its bytes (each slot's
    /// length bounded by the buffer size).
    pub fn frame_at(&self, from: u32, max_frags: u32) -> (u32, usize) {
        let tail = self.idx.tail();
        let size = self.buf_size();
        let (mut i, mut slots, mut bytes) = (from, 0u32, 0usize);
        loop {
            let s = self.view.read_slot(i);
            bytes += usize::from(s.len).min(size);
            slots += 1;
            i = self.idx.next(i);
            if s.flags & NS_MOREFRAG == 0 || slots >= max_frags || i == tail {
                return (slots, bytes);
            }
        }
    }

    /// Slots [`AppRing::put_frame`] needs for a frame of `len` bytes.
    #[inline]
    pub fn slots_for(&self, len: usize) -> u32 {
        slots_for(len, self.buf_size())
    }

    /// Writes `frame` into the slots from `head` on, as a chain of as many slots as it needs
    /// (one for an empty frame), and moves `head` past them. The caller checked the room
    /// ([`AppRing::slots_for`] against [`AppRing::avail`]). Returns the slots used.
    pub fn put_frame(&mut self, frame: &[u8]) -> u32 {
        let size = self.buf_size();
        let k = slots_for(frame.len(), size);
        let mut i = self.idx.head();
        let chunks = frame
            .chunks(size)
            .chain(frame.is_empty().then_some(&[][..]));
        for (c, chunk) in chunks.enumerate() {
            let mut s = self.view.read_slot(i);
            if let Some(b) = self.view.region().buf(s.buf_idx) {
                b.write(0, chunk);
            }
            s.len = chunk.len() as u16;
            s.flags = if (c as u32) + 1 < k { NS_MOREFRAG } else { 0 };
            self.view.write_slot(i, s);
            i = self.idx.next(i);
        }
        self.idx.advance(k);
        k
    }

    /// Stops interrupts for this ring (the application is working).
    #[inline]
    pub fn disable_notifications(&self) {
        if let Some(a) = self.csb.atok(self.entry) {
            a.appl_disable_notifications();
        }
    }

    /// Before sleeping: asks for an interrupt with the double check. Returns whether `hwtail`
    /// moved away from the `tail` last read (the caller should work instead of sleeping).
    #[inline]
    pub fn enable_notifications(&self) -> bool {
        self.enable_notifications_past(self.idx.tail())
    }

    /// As [`AppRing::enable_notifications`], with the point `hwtail` must move from to be
    /// news (a TX application waiting for room: its `cur`).
    #[inline]
    pub fn enable_notifications_past(&self, mark: u32) -> bool {
        match (self.csb.atok(self.entry), self.csb.ktoa(self.entry)) {
            (Some(a), Some(k)) => self.idx.enable_notifications(a, k, mark),
            _ => false,
        }
    }
}

/// Slots a frame of `len` bytes needs in a ring of `buf_size`-byte buffers (one at least).
#[inline]
pub fn slots_for(len: usize, buf_size: usize) -> u32 {
    len.div_ceil(buf_size.max(1)).max(1) as u32
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::csb::CsbMem;
    use crate::mem::{InterfaceSpec, Region, RegionConfig};

    fn ring(slots: u32) -> (Arc<Region>, crate::mem::Interface, CsbRef) {
        let r = Region::new("app", &RegionConfig::for_rings(1, 2, slots, 0)).unwrap();
        let ifc = r
            .create_interface(&InterfaceSpec {
                name: "app",
                tx_slots: vec![slots],
                rx_slots: vec![slots],
                ..Default::default()
            })
            .unwrap();
        let csb = CsbMem::new(2).unwrap().csb();
        (r, ifc, csb)
    }

    #[test]
    fn put_frame_chains_long_frames_and_frame_at_measures_them_back() {
        let (_r, ifc, csb) = ring(8);
        csb.ktoa(0).unwrap().kern_init(0, 7);
        let mut a = AppRing::new(ifc.tx[0].clone(), csb, 0, 0);
        assert_eq!(a.avail(), 7);
        let frame: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        assert_eq!(a.slots_for(frame.len()), 3);
        assert_eq!(a.put_frame(&frame), 3);
        assert_eq!(a.put_frame(&[]), 1);
        assert_eq!((a.head(), a.avail()), (4, 3));
        // The same slots as a receiver holding them sees them: one frame of 3, an empty one.
        let seen = CsbMem::new(2).unwrap().csb();
        seen.ktoa(0).unwrap().kern_init(0, 4);
        let k = AppRing::new(ifc.tx[0].clone(), seen, 0, 0);
        assert_eq!((k.head(), k.avail()), (0, 4));
        let mut back = vec![0u8; 5000];
        let mut at = 0;
        for i in 0..3 {
            let (b, s) = k.buffer(i).unwrap();
            at += b.read(0, &mut back[at..at + usize::from(s.len)]);
        }
        assert_eq!(back, frame);
        assert_eq!(k.frame_at(0, 64), (3, 5000));
        assert_eq!(k.frame_at(0, 2), (2, 4096));
        assert_eq!(k.frame_at(3, 64), (1, 0));
    }

    #[test]
    fn a_bad_csb_entry_starts_an_empty_ring() {
        let (_r, ifc, csb) = ring(8);
        csb.ktoa(1).unwrap().kern_write(0, 99);
        let a = AppRing::new(ifc.rx[0].clone(), csb.clone(), 0, 1);
        assert_eq!((a.head(), a.tail()), (0, 0));
        let a = AppRing::new(ifc.rx[0].clone(), csb, 0, 7);
        assert_eq!(a.avail(), 0);
        a.publish();
        assert!(!a.enable_notifications());
    }
}
