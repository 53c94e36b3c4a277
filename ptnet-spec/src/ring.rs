//! Ring arithmetic and the sync prologue checks, as pure functions.
//!
//! netmap's indices live in `[0, num_slots)` and move forward modulo the ring size. The kernel
//! side of a ring (the "kring") keeps `hwcur` (first slot not yet processed by the kernel),
//! `hwtail` (first slot not yet handed to the application) and the last validated application
//! pointers `rhead`, `rcur`, `rtail`. Before every txsync/rxsync the application's `head` and
//! `cur`, which come from untrusted memory, must satisfy (modulo the ring)
//!
//! ```text
//! hwcur <= rhead <= head <= cur <= tail <= hwtail
//! ```
//!
//! [`KringIndices::txsync_prologue`] and [`KringIndices::rxsync_prologue`] check exactly the
//! conditions of netmap's `nm_txsync_prologue` / `nm_rxsync_prologue`.

use core::fmt;

/// Smallest ring this crate accepts.
pub const MIN_SLOTS: u32 = 2;
/// Largest ring this crate accepts.
pub const MAX_SLOTS: u32 = 32768;

/// `i + 1` modulo `n` (netmap's `nm_next`). `i` must be below `n`.
#[inline]
pub const fn nm_next(i: u32, n: u32) -> u32 {
    if i + 1 == n {
        0
    } else {
        i + 1
    }
}

/// `i - 1` modulo `n` (netmap's `nm_prev`). `i` must be below `n`.
#[inline]
pub const fn nm_prev(i: u32, n: u32) -> u32 {
    if i == 0 {
        n - 1
    } else {
        i - 1
    }
}

/// `i + k` modulo `n`, for `i < n` and `k <= n`.
#[inline]
pub const fn nm_add(i: u32, k: u32, n: u32) -> u32 {
    let s = i + k;
    if s >= n {
        s - n
    } else {
        s
    }
}

/// Number of steps from `from` forward to `to`, modulo `n` (both below `n`).
#[inline]
pub const fn distance(from: u32, to: u32, n: u32) -> u32 {
    if to >= from {
        to - from
    } else {
        to + n - from
    }
}

/// Whether `x` lies in the circular interval `[lo, hi]` of a ring of `n` slots.
#[inline]
pub const fn in_circular_range(lo: u32, x: u32, hi: u32, n: u32) -> bool {
    distance(lo, x, n) <= distance(lo, hi, n)
}

/// Slots available to the application: `tail - cur` modulo `n` (netmap's `nm_ring_space`).
#[inline]
pub const fn ring_space(cur: u32, tail: u32, n: u32) -> u32 {
    distance(cur, tail, n)
}

/// Why a ring's indices were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The ring size is outside `[MIN_SLOTS, MAX_SLOTS]`.
    BadSize {
        /// The size.
        num_slots: u32,
    },
    /// A kernel-side index is out of range: the kring itself is corrupt.
    BadKring {
        /// The offending index value.
        index: u32,
    },
    /// The application's `head` is outside the window it may move into.
    BadHead {
        /// Proposed head.
        head: u32,
    },
    /// The application's `cur` is outside `[head, limit]`.
    BadCur {
        /// Proposed cur.
        cur: u32,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::BadSize { num_slots } => write!(f, "ring size {num_slots} out of range"),
            RingError::BadKring { index } => write!(f, "kernel ring index {index} out of range"),
            RingError::BadHead { head } => write!(f, "head {head} outside the allowed window"),
            RingError::BadCur { cur } => write!(f, "cur {cur} outside [head, tail]"),
        }
    }
}

/// The kernel side's view of one ring (netmap's kring indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KringIndices {
    /// Ring size.
    pub num_slots: u32,
    /// First slot the kernel side has not processed yet.
    pub hwcur: u32,
    /// First slot the kernel side has not handed to the application yet.
    pub hwtail: u32,
    /// Last validated application `head`.
    pub rhead: u32,
    /// Last validated application `cur`.
    pub rcur: u32,
    /// `tail` as last published to the application.
    pub rtail: u32,
}

/// Application pointers that passed a prologue check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    /// The new head.
    pub head: u32,
    /// The new cur.
    pub cur: u32,
}

impl KringIndices {
    /// A freshly reset TX kring of `n` slots: the whole ring but one slot is free.
    pub const fn new_tx(n: u32) -> Self {
        KringIndices {
            num_slots: n,
            hwcur: 0,
            hwtail: n - 1,
            rhead: 0,
            rcur: 0,
            rtail: n - 1,
        }
    }

    /// A freshly reset RX kring of `n` slots: empty.
    pub const fn new_rx(n: u32) -> Self {
        KringIndices {
            num_slots: n,
            hwcur: 0,
            hwtail: 0,
            rhead: 0,
            rcur: 0,
            rtail: 0,
        }
    }

    fn check_self(&self) -> Result<u32, RingError> {
        let n = self.num_slots;
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&n) {
            return Err(RingError::BadSize { num_slots: n });
        }
        for index in [self.hwcur, self.hwtail, self.rhead, self.rcur, self.rtail] {
            if index >= n {
                return Err(RingError::BadKring { index });
            }
        }
        Ok(n)
    }

    /// Checks the application's `head`/`cur` before a txsync (netmap's `nm_txsync_prologue`):
    /// `rhead <= head <= rtail` and `head <= cur <= rtail`, modulo the ring.
    pub fn txsync_prologue(&self, head: u32, cur: u32) -> Result<Validated, RingError> {
        let n = self.check_self()?;
        if head >= n || !in_circular_range(self.rhead, head, self.rtail, n) {
            return Err(RingError::BadHead { head });
        }
        if cur >= n || !in_circular_range(head, cur, self.rtail, n) {
            return Err(RingError::BadCur { cur });
        }
        Ok(Validated { head, cur })
    }

    /// Checks the application's `head`/`cur` before an rxsync (netmap's `nm_rxsync_prologue`):
    /// `hwcur <= head <= hwtail` and `head <= cur <= hwtail`, modulo the ring.
    pub fn rxsync_prologue(&self, head: u32, cur: u32) -> Result<Validated, RingError> {
        let n = self.check_self()?;
        if head >= n || !in_circular_range(self.hwcur, head, self.hwtail, n) {
            return Err(RingError::BadHead { head });
        }
        if cur >= n || !in_circular_range(head, cur, self.hwtail, n) {
            return Err(RingError::BadCur { cur });
        }
        Ok(Validated { head, cur })
    }

    /// Free TX slots from the kernel's point of view (`hwtail - hwcur`, netmap's `nm_kr_txspace`).
    pub const fn tx_space(&self) -> u32 {
        distance(self.hwcur, self.hwtail, self.num_slots)
    }

    /// Received slots not yet released by the application (`hwtail - hwcur`, `nm_kr_rxspace`).
    pub const fn rx_pending(&self) -> u32 {
        distance(self.hwcur, self.hwtail, self.num_slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_and_prev_wrap_at_the_ring_size() {
        assert_eq!(nm_next(3, 4), 0);
        assert_eq!(nm_next(2, 4), 3);
        assert_eq!(nm_prev(0, 4), 3);
        assert_eq!(nm_add(3, 4, 4), 3);
        assert_eq!(distance(3, 1, 4), 2);
    }

    #[test]
    fn txsync_accepts_head_anywhere_up_to_tail() {
        let k = KringIndices::new_tx(8);
        assert!(k.txsync_prologue(7, 7).is_ok());
        assert!(k.txsync_prologue(3, 5).is_ok());
    }

    #[test]
    fn txsync_rejects_head_beyond_tail() {
        let mut k = KringIndices::new_tx(8);
        k.rtail = 4;
        k.hwtail = 4;
        assert_eq!(k.txsync_prologue(5, 5), Err(RingError::BadHead { head: 5 }));
    }

    #[test]
    fn txsync_rejects_cur_behind_head() {
        let k = KringIndices::new_tx(8);
        assert_eq!(k.txsync_prologue(3, 2), Err(RingError::BadCur { cur: 2 }));
    }

    #[test]
    fn rxsync_rejects_head_past_hwtail() {
        let mut k = KringIndices::new_rx(8);
        k.hwtail = 2;
        assert!(k.rxsync_prologue(2, 2).is_ok());
        assert_eq!(k.rxsync_prologue(3, 3), Err(RingError::BadHead { head: 3 }));
    }

    #[test]
    fn prologue_rejects_indices_outside_the_ring() {
        let k = KringIndices::new_tx(8);
        assert_eq!(k.txsync_prologue(8, 8), Err(RingError::BadHead { head: 8 }));
        assert_eq!(
            k.txsync_prologue(u32::MAX, 0),
            Err(RingError::BadHead { head: u32::MAX })
        );
        let bad = KringIndices { num_slots: 0, ..k };
        assert_eq!(
            bad.txsync_prologue(0, 0),
            Err(RingError::BadSize { num_slots: 0 })
        );
    }
}
