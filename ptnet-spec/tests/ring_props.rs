//! The prologue checks agree with two independent models on every ring state:
//! a model on unwrapped (absolute) positions, and a transliteration of netmap's own case
//! analysis in `nm_txsync_prologue` / `nm_rxsync_prologue`.

use proptest::prelude::*;
use ptnet_spec::ring::{distance, nm_add, nm_next, nm_prev, KringIndices, RingError};

/// Is there an absolute position `lo_abs + k`, `0 <= k <= len`, that lands on `x` modulo `n`?
fn abs_window_contains(lo: u32, len: u32, x: u32, n: u32) -> bool {
    x < n && (0..=len).any(|k| (lo + k) % n == x)
}

/// netmap's nm_txsync_prologue conditions, case by case (kept in netmap's shape on purpose).
#[allow(clippy::nonminimal_bool)]
fn netmap_tx_ok(rhead: u32, rtail: u32, head: u32, cur: u32, n: u32) -> bool {
    if head >= n || cur >= n {
        return false;
    }
    if rtail >= rhead {
        !(head < rhead || head > rtail) && !(cur < head || cur > rtail)
    } else {
        if head > rtail && head < rhead {
            return false;
        }
        if head <= rtail {
            !(cur < head || cur > rtail)
        } else {
            !(cur > rtail && cur < head)
        }
    }
}

/// netmap's nm_rxsync_prologue conditions, case by case (kept in netmap's shape on purpose).
#[allow(clippy::nonminimal_bool)]
fn netmap_rx_ok(hwcur: u32, hwtail: u32, head: u32, cur: u32, n: u32) -> bool {
    if head >= n || cur >= n {
        return false;
    }
    if hwtail >= hwcur {
        !(head < hwcur || head > hwtail) && !(cur < head || cur > hwtail)
    } else {
        if head < hwcur && head > hwtail {
            return false;
        }
        if head <= hwtail {
            !(cur < head || cur > hwtail)
        } else {
            !(cur < head && cur > hwtail)
        }
    }
}

/// A consistent TX kring: hwcur <= rhead <= rtail (= hwtail), window below n.
fn tx_kring() -> impl Strategy<Value = KringIndices> {
    (2u32..=64).prop_flat_map(|n| {
        (Just(n), 0..n, 0..n, 0..n).prop_map(|(n, hwcur, a, b)| {
            let (x, y) = if a <= b { (a, b) } else { (b, a) };
            let y = y.min(n - 1);
            let rhead = nm_add(hwcur, x.min(y), n);
            let rtail = nm_add(hwcur, y, n);
            KringIndices {
                num_slots: n,
                hwcur,
                hwtail: rtail,
                rhead,
                rcur: rhead,
                rtail,
            }
        })
    })
}

/// A consistent RX kring: hwcur <= hwtail, window below n.
fn rx_kring() -> impl Strategy<Value = KringIndices> {
    (2u32..=64).prop_flat_map(|n| {
        (Just(n), 0..n, 0..n).prop_map(|(n, hwcur, w)| {
            let hwtail = nm_add(hwcur, w.min(n - 1), n);
            KringIndices {
                num_slots: n,
                hwcur,
                hwtail,
                rhead: hwcur,
                rcur: hwcur,
                rtail: hwtail,
            }
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn txsync_prologue_matches_both_models(k in tx_kring(), head in 0u32..70, cur in 0u32..70) {
        let n = k.num_slots;
        let want_abs = abs_window_contains(k.rhead, distance(k.rhead, k.rtail, n), head, n)
            && head < n
            && abs_window_contains(head, distance(head, k.rtail, n), cur, n);
        let want_netmap = netmap_tx_ok(k.rhead, k.rtail, head, cur, n);
        prop_assert_eq!(want_abs, want_netmap);
        prop_assert_eq!(k.txsync_prologue(head, cur).is_ok(), want_abs);
    }

    #[test]
    fn rxsync_prologue_matches_both_models(k in rx_kring(), head in 0u32..70, cur in 0u32..70) {
        let n = k.num_slots;
        let want_abs = abs_window_contains(k.hwcur, distance(k.hwcur, k.hwtail, n), head, n)
            && head < n
            && abs_window_contains(head, distance(head, k.hwtail, n), cur, n);
        let want_netmap = netmap_rx_ok(k.hwcur, k.hwtail, head, cur, n);
        prop_assert_eq!(want_abs, want_netmap);
        prop_assert_eq!(k.rxsync_prologue(head, cur).is_ok(), want_abs);
    }

    #[test]
    fn prologue_never_accepts_an_index_outside_the_ring(
        k in tx_kring(), head in any::<u32>(), cur in any::<u32>()
    ) {
        let n = k.num_slots;
        if let Ok(v) = k.txsync_prologue(head, cur) {
            prop_assert!(v.head < n && v.cur < n);
        }
        if let Ok(v) = k.rxsync_prologue(head, cur) {
            prop_assert!(v.head < n && v.cur < n);
        }
    }

    #[test]
    fn corrupt_kring_is_reported_not_trusted(
        n in 0u32..70, idx in any::<u32>(), head in 0u32..70, cur in 0u32..70
    ) {
        let k = KringIndices { num_slots: n, hwcur: 0, hwtail: idx, rhead: 0, rcur: 0, rtail: idx };
        let r = k.txsync_prologue(head, cur);
        if !(2..=32768).contains(&n) {
            prop_assert_eq!(r, Err(RingError::BadSize { num_slots: n }));
        } else if idx >= n {
            prop_assert_eq!(r, Err(RingError::BadKring { index: idx }));
        }
    }

    #[test]
    fn next_prev_add_and_distance_are_consistent(n in 2u32..5000, i in 0u32..5000, k in 0u32..5000) {
        let i = i % n;
        let k = k % (n + 1);
        prop_assert_eq!(nm_prev(nm_next(i, n), n), i);
        prop_assert_eq!(nm_add(i, k, n), (i + k) % n);
        prop_assert_eq!(distance(i, nm_add(i, k % n, n), n), k % n);
    }
}
