//! Any kring state and any application pointers: the prologue never panics, and whatever it
//! accepts lies inside the ring and inside the window it documents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptnet_spec::ring::{KringIndices, distance};

fuzz_target!(|v: [u32; 8]| {
    let k = KringIndices {
        num_slots: v[0] % 40_000,
        hwcur: v[1],
        hwtail: v[2],
        rhead: v[3],
        rcur: v[3],
        rtail: v[4],
    };
    let n = k.num_slots;
    if let Ok(ok) = k.txsync_prologue(v[5], v[6]) {
        assert!(ok.head < n && ok.cur < n);
        assert!(distance(k.rhead, ok.head, n) <= distance(k.rhead, k.rtail, n));
        assert!(distance(ok.head, ok.cur, n) <= distance(ok.head, k.rtail, n));
    }
    if let Ok(ok) = k.rxsync_prologue(v[5], v[7]) {
        assert!(ok.head < n && ok.cur < n);
        assert!(distance(k.hwcur, ok.head, n) <= distance(k.hwcur, k.hwtail, n));
    }
});
