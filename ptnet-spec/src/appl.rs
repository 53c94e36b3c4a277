//! The application side of a ring: the indices an application keeps (netmap's `head`,
//! `cur`, `tail` of a `netmap_ring`, and the `hwcur` it last saw) and the CSB steps of its
//! txsync/rxsync. Every application of a ptnet ring uses these: host clients, the daemon's
//! own in-process applications (NIC workers, virtio-net queue pairs) and the guest drivers,
//! whose kernel-side copy of the indices sits on top of the same two steps.
//!
//! A sync on the application side is netmap's `ptnet_sync_to_csb` then `ptnet_sync_from_csb`:
//! * [`publish`]: write `cur` then `head` into the `atok` entry, and decide whether the
//!   kernel side must be kicked: only if it asked for kicks (`kern_need_kick`, read after a
//!   full fence) and the ring has news for it (`head` moved past `hwcur`) or would block (a
//!   TX ring whose `cur` reached `tail`: a pipe peer then reports the slots it releases).
//!   `NAF_FORCE_RECLAIM` always kicks;
//! * [`read_back`]: read `hwtail` then `hwcur` from the `ktoa` entry. The kernel side is
//!   another agent: an index outside the ring is ignored, never used.

use crate::csb::{CsbAtok, CsbKtoa, KtoaSnapshot, NAF_FORCE_RECLAIM};
use crate::ring::{distance, nm_add, nm_next};

/// The application half of a sync: publishes `head`/`cur` and returns whether to kick the
/// kernel side (with the sync flags already stored for it). `would_block` is "a TX ring whose
/// `cur` is at `tail`"; `reclaim` is `NAF_FORCE_RECLAIM` (`NIOCTXSYNC`, not `poll`).
#[inline]
pub fn publish(
    atok: &CsbAtok,
    ktoa: &CsbKtoa,
    head: u32,
    cur: u32,
    would_block: bool,
    reclaim: bool,
) -> bool {
    let before = ktoa.appl_read();
    let news = head != before.hwcur;
    let kick = (atok.appl_publish(ktoa, head, cur) && (news || would_block)) || reclaim;
    if kick {
        atok.appl_set_sync_flags(if reclaim { NAF_FORCE_RECLAIM } else { 0 });
    }
    kick
}

/// The kernel side's `hwcur`/`hwtail`, if both lie inside a ring of `num_slots` slots.
#[inline]
pub fn read_back(ktoa: &CsbKtoa, num_slots: u32) -> Option<KtoaSnapshot> {
    let s = ktoa.appl_read();
    (s.hwcur < num_slots && s.hwtail < num_slots).then_some(s)
}

/// The indices one application keeps for one ring.
///
/// Invariant: every index is below `num_slots` (the constructors and [`ApplRing::read_back`]
/// accept nothing else), so slot accesses with them stay inside the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplRing {
    num_slots: u32,
    /// First slot the application has not handed to the kernel side.
    pub(crate) head: u32,
    /// Where the application wants to be woken (netmap's `cur`; equal to `head` except while
    /// a TX application waits for room).
    pub(crate) cur: u32,
    /// First slot the kernel side has not handed to the application.
    pub(crate) tail: u32,
    /// The kernel side's `hwcur` as last read.
    pub(crate) hwcur: u32,
}

impl ApplRing {
    /// The application's starting point: the indices the kernel side published in the CSB
    /// when it attached (netmap's `ptnet_sync_from_csb` at registration). `None` if the ring
    /// size is out of range or any index lies outside the ring.
    pub fn from_csb(num_slots: u32, atok: &CsbAtok, ktoa: &CsbKtoa) -> Option<Self> {
        if num_slots == 0 {
            return None;
        }
        let a = atok.kern_read();
        let s = read_back(ktoa, num_slots)?;
        (a.head < num_slots && a.cur < num_slots).then_some(ApplRing {
            num_slots,
            head: a.head,
            cur: a.cur,
            tail: s.hwtail,
            hwcur: s.hwcur,
        })
    }

    /// A ring of `num_slots` slots whose indices are all 0 (an application that could not
    /// trust the CSB it found; the kernel side resets a ring it disagrees with).
    pub const fn empty(num_slots: u32) -> Self {
        ApplRing {
            num_slots,
            head: 0,
            cur: 0,
            tail: 0,
            hwcur: 0,
        }
    }

    /// Ring size.
    #[inline]
    pub const fn num_slots(&self) -> u32 {
        self.num_slots
    }

    /// `head`.
    #[inline]
    pub const fn head(&self) -> u32 {
        self.head
    }

    /// `cur`.
    #[inline]
    pub const fn cur(&self) -> u32 {
        self.cur
    }

    /// `tail`.
    #[inline]
    pub const fn tail(&self) -> u32 {
        self.tail
    }

    /// Slots the application holds from `head` on (TX: free, RX: received): `tail - head`
    /// modulo the ring (netmap's `nm_ring_space` with `cur` at `head`).
    #[inline]
    pub const fn space(&self) -> u32 {
        distance(self.head, self.tail, self.num_slots)
    }

    /// Whether the application holds no slot (netmap's `nm_ring_empty`).
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// The slot after `i` (netmap's `nm_ring_next`); `i` must be an index of this ring.
    #[inline]
    pub const fn next(&self, i: u32) -> u32 {
        nm_next(i, self.num_slots)
    }

    /// The slot `k` after `head`, for `k <= space()`.
    #[inline]
    pub const fn after_head(&self, k: u32) -> u32 {
        let space = self.space();
        nm_add(self.head, if k < space { k } else { space }, self.num_slots)
    }

    /// Hands `k` slots from `head` on to the kernel side (at most [`ApplRing::space`]):
    /// `head` and `cur` move past them.
    #[inline]
    pub fn advance(&mut self, k: u32) {
        self.head = self.after_head(k);
        self.cur = self.head;
    }

    /// Sets `cur` at `tail` ("wake me when `tail` moves past here": a TX application that
    /// waits for room).
    #[inline]
    pub fn cur_at_tail(&mut self) {
        self.cur = self.tail;
    }

    /// Sets `cur` back at `head` (done waiting).
    #[inline]
    pub fn cur_at_head(&mut self) {
        self.cur = self.head;
    }

    /// Takes `head` and `cur` as a netmap application wrote them into its ring header,
    /// checked as netmap's sync prologues check them: `head` may only move forward, up to
    /// `tail`, and `cur` lies between `head` and `tail` (modulo the ring). Out of range: the
    /// ring keeps its indices (netmap reinitialises the ring the same way).
    #[inline]
    pub fn take_app_indices(&mut self, head: u32, cur: u32) -> Result<(), (u32, u32)> {
        let n = self.num_slots;
        let within =
            |from: u32, x: u32, to: u32| x < n && distance(from, x, n) <= distance(from, to, n);
        if within(self.head, head, self.tail) && within(head, cur, self.tail) {
            self.head = head;
            self.cur = cur;
            Ok(())
        } else {
            Err((head, cur))
        }
    }

    /// Publishes `head`/`cur` without deciding on a kick: for in-process applications that
    /// run the port's sync themselves.
    #[inline]
    pub fn write(&self, atok: &CsbAtok) {
        atok.appl_write(self.head, self.cur);
    }

    /// The application half of a txsync (`tx`) or rxsync: see [`publish`].
    #[inline]
    pub fn publish(&self, atok: &CsbAtok, ktoa: &CsbKtoa, tx: bool, reclaim: bool) -> bool {
        let would_block = tx && self.cur == self.tail;
        publish(atok, ktoa, self.head, self.cur, would_block, reclaim)
    }

    /// Reads back the kernel side's indices (see [`read_back`]); returns whether `tail`
    /// moved. Indices outside the ring leave the ring as it was.
    #[inline]
    pub fn read_back(&mut self, ktoa: &CsbKtoa) -> bool {
        match read_back(ktoa, self.num_slots) {
            Some(s) => {
                let moved = s.hwtail != self.tail;
                self.tail = s.hwtail;
                self.hwcur = s.hwcur;
                moved
            }
            None => false,
        }
    }

    /// Before sleeping: asks for interrupts with the double check
    /// ([`CsbAtok::appl_enable_notifications`]) and returns whether the kernel side has
    /// moved `hwtail` away from `mark` meanwhile (then the caller has work and should not
    /// sleep). A `hwtail` outside the ring is no news.
    #[inline]
    pub fn enable_notifications(&self, atok: &CsbAtok, ktoa: &CsbKtoa, mark: u32) -> bool {
        let s = atok.appl_enable_notifications(ktoa);
        s.hwtail < self.num_slots && s.hwtail != mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (CsbAtok, CsbKtoa) {
        (CsbAtok::default(), CsbKtoa::default())
    }

    #[test]
    fn from_csb_takes_the_published_indices_and_refuses_any_outside_the_ring() {
        let (a, k) = pair();
        a.kern_init(3, 4);
        k.kern_init(3, 7);
        let r = ApplRing::from_csb(8, &a, &k).unwrap();
        assert_eq!((r.head(), r.cur(), r.tail(), r.space()), (3, 4, 7, 4));
        k.kern_write(3, 8);
        assert_eq!(ApplRing::from_csb(8, &a, &k), None);
        k.kern_write(3, 7);
        a.appl_write(9, 9);
        assert_eq!(ApplRing::from_csb(8, &a, &k), None);
        assert_eq!(ApplRing::from_csb(0, &a, &k), None);
    }

    #[test]
    fn advance_never_passes_tail() {
        let mut r = ApplRing::empty(8);
        r.tail = 6;
        r.advance(4);
        assert_eq!((r.head(), r.cur(), r.space()), (4, 4, 2));
        r.advance(5);
        assert_eq!((r.head(), r.space()), (6, 0));
        assert!(r.is_empty());
        r.tail = 2;
        r.advance(3);
        assert_eq!(r.head(), 1);
        assert_eq!(r.next(7), 0);
    }

    #[test]
    fn publish_kicks_only_when_asked_and_there_is_news_or_a_tx_ring_would_block() {
        let (a, k) = pair();
        let mut r = ApplRing::empty(8);
        // The kernel side does not want kicks: never, unless reclaiming.
        k.kern_disable_kicks();
        r.head = 2;
        r.cur = 2;
        assert!(!r.publish(&a, &k, true, false));
        assert!(r.publish(&a, &k, true, true));
        assert_eq!(a.kern_read().sync_flags, NAF_FORCE_RECLAIM);
        // It wants kicks: news kicks; no news kicks only a TX ring at its tail.
        k.kern_init(2, 5);
        r.read_back(&k);
        assert!(!r.publish(&a, &k, true, false));
        r.advance(1);
        assert!(r.publish(&a, &k, false, false));
        assert_eq!(a.kern_read().sync_flags, 0);
        k.kern_write(3, 5);
        r.read_back(&k);
        r.cur_at_tail();
        assert!(r.publish(&a, &k, true, false));
        assert!(!r.publish(&a, &k, false, false));
    }

    #[test]
    fn read_back_ignores_indices_outside_the_ring() {
        let (a, k) = pair();
        let mut r = ApplRing::empty(8);
        k.kern_write(1, 5);
        assert!(r.read_back(&k));
        assert!(!r.read_back(&k));
        k.kern_write(1, 8);
        assert!(!r.read_back(&k));
        assert_eq!(r.tail(), 5);
        k.kern_write(9, 6);
        assert!(!r.read_back(&k));
        assert_eq!(r.tail(), 5);
        k.kern_write(1, 6);
        assert!(r.enable_notifications(&a, &k, 5));
        assert!(!r.enable_notifications(&a, &k, 6));
        assert!(a.appl_wants_interrupt());
    }

    #[test]
    fn an_applications_indices_are_taken_only_inside_its_part_of_the_ring() {
        let mut r = ApplRing {
            num_slots: 8,
            head: 6,
            cur: 6,
            tail: 2,
            hwcur: 6,
        };
        // Forward across the wrap, cur up to tail.
        assert_eq!(r.take_app_indices(7, 1), Ok(()));
        assert_eq!((r.head(), r.cur()), (7, 1));
        assert_eq!(r.take_app_indices(0, 2), Ok(()));
        // Backwards, past tail, outside the ring: refused, indices kept.
        for (h, c) in [(7, 7), (3, 3), (0, 3), (8, 0), (1, 0)] {
            assert_eq!(r.take_app_indices(h, c), Err((h, c)), "{h} {c}");
            assert_eq!((r.head(), r.cur()), (0, 2));
        }
    }
}
