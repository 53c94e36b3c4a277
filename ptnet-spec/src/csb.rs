//! The CSB (Communication Status Block): per-ring shared state between the application side
//! (guest driver or host client, "appl") and the kernel side (the daemon's sync loop, "kern").
//!
//! Two arrays of 64-byte entries, one entry per ring, TX rings first then RX rings:
//! [`CsbAtok`] (application to kernel; only the application writes it) and [`CsbKtoa`]
//! (kernel to application; only the kernel side writes it). Each entry fills one cache line,
//! so the two writers never share a line.
//!
//! Ordering (netmap's `nm_sync_kloop_appl_write` and friends):
//! * the application publishes `cur` then `head` ([`CsbAtok::appl_write`]); the kernel side
//!   reads `head` then `cur` ([`CsbAtok::kern_read`]). A reader may see a newer `cur` with an
//!   older `head` (harmless), never a newer `head` with an older `cur`;
//! * the kernel side publishes `hwcur` then `hwtail` ([`CsbKtoa::kern_write`]); the
//!   application reads `hwtail` then `hwcur` ([`CsbKtoa::appl_read`]);
//! * slot and buffer writes happen before the index that hands them over (release), and are
//!   read after the index that received them (acquire).
//!
//! Notification suppression: each side clears its own "need kick" flag while it works and
//! sets it before sleeping, then issues a full fence and re-reads the shared indices (the
//! double check), so that work published between its last check and the flag store is never
//! missed ([`CsbAtok::appl_enable_notifications`], [`CsbKtoa::kern_enable_kicks`]). The
//! notifying side needs the mirror image: a full fence between publishing its indices and
//! reading the peer's flag ([`CsbAtok::appl_publish`], [`CsbKtoa::kern_publish`]), as virtio
//! does before reading the event index. Without it, a store-load reordering lets the sleeper
//! read the old indices while the notifier reads the old flag, and both wait forever.

use core::sync::atomic::{fence, AtomicU32, Ordering};

shared_consts! {
    /// CSB entry size and `sync_flags`.
    group CSB_CONSTS;
    /// Size and alignment of each CSB entry.
    pub const CSB_ENTRY_SIZE: u32 = 64;
    /// `sync_flags`: the application wants the RX ring refreshed even if nothing moved.
    pub const NAF_FORCE_READ: u32 = 1;
    /// `sync_flags`: the application wants completed TX slots reclaimed now.
    pub const NAF_FORCE_RECLAIM: u32 = 2;
}

shared_struct! {
    /// Application to kernel entry (`struct nm_csb_atok`); written only by the application.
    #[c_name = "ptnet_csb_atok"]
    #[repr(align(64))]
    #[derive(Debug, Default)]
    pub struct CsbAtok {
        /// The application's ring head.
        pub head: AtomicU32,
        /// The application's ring cur.
        pub cur: AtomicU32,
        /// 1 = the application wants an interrupt when the ring moves.
        pub appl_need_kick: AtomicU32,
        /// NAF_* flags of the last sync request.
        pub sync_flags: AtomicU32,
        /// Padding to 64 bytes.
        pub pad: [AtomicU32; 12],
    }
}

shared_struct! {
    /// Kernel to application entry (`struct nm_csb_ktoa`); written only by the kernel side.
    #[c_name = "ptnet_csb_ktoa"]
    #[repr(align(64))]
    #[derive(Debug, Default)]
    pub struct CsbKtoa {
        /// The kernel side's hwcur.
        pub hwcur: AtomicU32,
        /// The kernel side's hwtail.
        pub hwtail: AtomicU32,
        /// 1 = the kernel side wants a kick when the application publishes work.
        pub kern_need_kick: AtomicU32,
        /// Padding to 64 bytes.
        pub pad: [AtomicU32; 13],
    }
}

const _: () = {
    assert!(core::mem::size_of::<CsbAtok>() == CSB_ENTRY_SIZE as usize);
    assert!(core::mem::size_of::<CsbKtoa>() == CSB_ENTRY_SIZE as usize);
    assert!(core::mem::offset_of!(CsbAtok, cur) == 4);
    assert!(core::mem::offset_of!(CsbAtok, appl_need_kick) == 8);
    assert!(core::mem::offset_of!(CsbAtok, sync_flags) == 12);
    assert!(core::mem::offset_of!(CsbKtoa, hwtail) == 4);
    assert!(core::mem::offset_of!(CsbKtoa, kern_need_kick) == 8);
};

/// What the kernel side reads from an `atok` entry in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtokSnapshot {
    /// Application head (untrusted until validated).
    pub head: u32,
    /// Application cur (untrusted until validated).
    pub cur: u32,
    /// NAF_* flags (untrusted).
    pub sync_flags: u32,
}

/// What the application reads from a `ktoa` entry in one go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KtoaSnapshot {
    /// Kernel hwcur.
    pub hwcur: u32,
    /// Kernel hwtail.
    pub hwtail: u32,
}

impl CsbAtok {
    /// Application side: publishes `cur`, then `head`. Slot writes made before this call are
    /// visible to a kernel side that observes the new `head`.
    #[inline]
    pub fn appl_write(&self, head: u32, cur: u32) {
        self.cur.store(cur, Ordering::Release);
        self.head.store(head, Ordering::Release);
    }

    /// Application side: publishes `head`/`cur` and tells whether the kernel side must be
    /// kicked (the full fence pairs with the one in [`CsbKtoa::kern_enable_kicks`]).
    #[inline]
    pub fn appl_publish(&self, ktoa: &CsbKtoa, head: u32, cur: u32) -> bool {
        self.appl_write(head, cur);
        fence(Ordering::SeqCst);
        ktoa.kern_wants_kick()
    }

    /// Kernel side: reads `head`, then `cur` and `sync_flags`. Slot reads made after this call
    /// see the application's writes that preceded the `head` it returns.
    #[inline]
    pub fn kern_read(&self) -> AtokSnapshot {
        let head = self.head.load(Ordering::Acquire);
        let cur = self.cur.load(Ordering::Acquire);
        let sync_flags = self.sync_flags.load(Ordering::Acquire);
        AtokSnapshot {
            head,
            cur,
            sync_flags,
        }
    }

    /// Application side: records the NAF_* flags of the sync request it is about to kick for.
    #[inline]
    pub fn appl_set_sync_flags(&self, flags: u32) {
        self.sync_flags.store(flags, Ordering::Release);
    }

    /// Kernel side: whether the application asked to be interrupted.
    #[inline]
    pub fn appl_wants_interrupt(&self) -> bool {
        self.appl_need_kick.load(Ordering::Acquire) != 0
    }

    /// Application side: suppress interrupts while working.
    #[inline]
    pub fn appl_disable_notifications(&self) {
        self.appl_need_kick.store(0, Ordering::Relaxed);
    }

    /// Application side, before sleeping: ask for interrupts, full fence, then re-read the
    /// kernel's indices. If they show new work the caller should disable notifications again
    /// and keep going instead of sleeping.
    #[inline]
    pub fn appl_enable_notifications(&self, ktoa: &CsbKtoa) -> KtoaSnapshot {
        self.appl_need_kick.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        ktoa.appl_read()
    }

    /// Kernel side, when a CSB is attached: the application's current state becomes the
    /// starting point and interrupts are on (as netmap's CSB_ENABLE does).
    #[inline]
    pub fn kern_init(&self, head: u32, cur: u32) {
        self.appl_write(head, cur);
        self.appl_need_kick.store(1, Ordering::Relaxed);
        self.sync_flags.store(0, Ordering::Relaxed);
    }
}

impl CsbKtoa {
    /// Kernel side: publishes `hwcur`, then `hwtail`. Slot and buffer writes made before this
    /// call are visible to an application that observes the new `hwtail`.
    #[inline]
    pub fn kern_write(&self, hwcur: u32, hwtail: u32) {
        self.hwcur.store(hwcur, Ordering::Release);
        self.hwtail.store(hwtail, Ordering::Release);
    }

    /// Kernel side: publishes `hwcur`/`hwtail` and tells whether the application must be
    /// interrupted (the full fence pairs with the one in [`CsbAtok::appl_enable_notifications`]).
    #[inline]
    pub fn kern_publish(&self, atok: &CsbAtok, hwcur: u32, hwtail: u32) -> bool {
        self.kern_write(hwcur, hwtail);
        fence(Ordering::SeqCst);
        atok.appl_wants_interrupt()
    }

    /// Application side: reads `hwtail`, then `hwcur`.
    #[inline]
    pub fn appl_read(&self) -> KtoaSnapshot {
        let hwtail = self.hwtail.load(Ordering::Acquire);
        let hwcur = self.hwcur.load(Ordering::Acquire);
        KtoaSnapshot { hwcur, hwtail }
    }

    /// Application side: whether the kernel side wants a kick.
    #[inline]
    pub fn kern_wants_kick(&self) -> bool {
        self.kern_need_kick.load(Ordering::Acquire) != 0
    }

    /// Kernel side: suppress kicks while working.
    #[inline]
    pub fn kern_disable_kicks(&self) {
        self.kern_need_kick.store(0, Ordering::Relaxed);
    }

    /// Kernel side, before sleeping: ask for kicks, full fence, then re-read the application's
    /// indices. If `head` moved the caller should disable kicks again and keep going.
    #[inline]
    pub fn kern_enable_kicks(&self, atok: &CsbAtok) -> AtokSnapshot {
        self.kern_need_kick.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        atok.kern_read()
    }

    /// Kernel side, when a CSB is attached: publish the kring's state and ask for kicks.
    #[inline]
    pub fn kern_init(&self, hwcur: u32, hwtail: u32) {
        self.kern_write(hwcur, hwtail);
        self.kern_need_kick.store(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_one_cache_line_each() {
        assert_eq!(core::mem::align_of::<CsbAtok>(), 64);
        assert_eq!(core::mem::align_of::<CsbKtoa>(), 64);
    }

    #[test]
    fn enable_notifications_returns_the_state_published_before_it() {
        let atok = CsbAtok::default();
        let ktoa = CsbKtoa::default();
        ktoa.kern_write(3, 9);
        let s = atok.appl_enable_notifications(&ktoa);
        assert_eq!(
            s,
            KtoaSnapshot {
                hwcur: 3,
                hwtail: 9
            }
        );
        assert!(atok.appl_wants_interrupt());
        atok.appl_write(5, 6);
        let a = ktoa.kern_enable_kicks(&atok);
        assert_eq!((a.head, a.cur), (5, 6));
        assert!(ktoa.kern_wants_kick());
    }
}
