//! A hostile client: random CSB pointers and random slot contents on its rings, while two
//! honest clients exchange traffic across the same switch. The daemon must not panic, must
//! reset the hostile rings (and count it), must never touch memory outside the regions it may
//! write (the regions sit between guard pages, so a stray access would crash this process),
//! and the honest clients must not notice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::mem::Region;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_spec::netmap::{NS_MOREFRAG, NetmapSlot};

/// A small xorshift generator: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly near-valid values, sometimes anything at all.
    fn index(&mut self, n: u32) -> u32 {
        match self.next() % 4 {
            0 => self.next() as u32,
            1 => n + (self.next() % 4) as u32,
            _ => (self.next() % u64::from(n)) as u32,
        }
    }
}

fn attach(port: Arc<dyn SyncPort>) -> (HostClient, Port) {
    let (hc, files) = HostClient::attach(port, Mode::default()).unwrap();
    let p = Port::from_parts(hc.info().clone(), files).unwrap();
    (hc, p)
}

/// The extra buffers of an interface: the daemon never writes them.
fn extra_buffers(region: &Region, nifp: u64) -> Vec<(usize, Vec<u8>)> {
    let mut head = [0u8; 4];
    assert!(region.copy_out(nifp as usize + 32, &mut head));
    let mut b = u32::from_le_bytes(head);
    let mut out = Vec::new();
    while b != 0 {
        let ofs = region.layout().buf_pool_ofs + b as usize * region.buf_size() as usize;
        let mut bytes = vec![0u8; region.buf_size() as usize];
        assert!(region.copy_out(ofs, &mut bytes));
        b = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        out.push((ofs, bytes));
    }
    out
}

#[test]
fn hostile_client_cannot_disturb_the_switch_or_other_ports() {
    let sw = Switch::new("vale9");
    let spec = VPortSpec {
        slots: 128,
        extra_bufs: 32,
        ..Default::default()
    };
    let mk = |name: &str| -> Arc<dyn SyncPort> {
        Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port(name, &spec).unwrap(),
        })
    };
    let (h, b, c) = (mk("h"), mk("b"), mk("c"));
    let before: Vec<_> = [&b, &c]
        .iter()
        .map(|p| extra_buffers(p.interface().region(), p.interface().nifp_offset()))
        .collect();

    let (hh, mut ph) = attach(Arc::clone(&h));
    let (_hb, mut pb) = attach(Arc::clone(&b));
    let (_hc, mut pc) = attach(Arc::clone(&c));

    // Teach the switch where C lives, so B's frames go to C only.
    assert_eq!(
        pc.tx_batch(0, 1, |_, buf| eth(
            buf,
            [2, 0, 0, 0, 0, 0xb],
            [2, 0, 0, 0, 0, 0xc],
            0
        )),
        1
    );
    pc.txsync(0);

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let hostile = thread::spawn(move || {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let n = 128u32;
        let mut rounds = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            for _ in 0..(rng.next() % 64) {
                let i = rng.index(n);
                let flags = if rng.next() % 3 == 0 {
                    NS_MOREFRAG
                } else {
                    rng.next() as u16
                };
                ph.unchecked_write_slot(
                    0,
                    i,
                    NetmapSlot {
                        buf_idx: rng.index(300),
                        len: rng.next() as u16,
                        flags,
                        ptr: rng.next(),
                    },
                );
            }
            let ring = (rng.next() % 2) as usize;
            ph.unchecked_publish(ring, rng.index(n), rng.index(n));
            rounds += 1;
            if rounds % 64 == 0 {
                thread::sleep(Duration::from_micros(50));
            }
        }
        (ph, rounds)
    });

    // Meanwhile B sends C frames in bursts C's ring can hold; every one must arrive intact.
    let count = 20_000u64;
    let (mut sent, mut got) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < count {
        let target = (sent + 100).min(count);
        while sent < target {
            let s0 = sent;
            sent += u64::from(pb.tx_batch(0, (target - sent) as u32, |i, buf| {
                eth(
                    buf,
                    [2, 0, 0, 0, 0, 0xc],
                    [2, 0, 0, 0, 0, 0xb],
                    s0 + u64::from(i),
                )
            }));
            pb.txsync(0);
            if sent < target {
                pb.wait(Want::Tx, Some(Duration::from_millis(50))).unwrap();
            }
        }
        while got < sent {
            assert!(
                Instant::now() < deadline,
                "honest traffic stalled at {got}/{sent}"
            );
            pc.rxsync(0);
            pc.rx_batch(0, u32::MAX, |buf, _| {
                // Frames from the hostile port may be mixed in (it floods); ours are in order.
                if buf.len() == 60 && buf[6..12] == [2, 0, 0, 0, 0, 0xb] {
                    assert_eq!(u64::from_le_bytes(buf[14..22].try_into().unwrap()), got);
                    got += 1;
                }
            });
            pc.rxsync(0);
            if got < sent {
                pc.wait(Want::Rx, Some(Duration::from_millis(50))).unwrap();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ph, rounds) = hostile.join().expect("hostile thread");
    assert!(
        rounds > 100,
        "the hostile client barely ran ({rounds} rounds)"
    );
    let hs = h.stats().snapshot();
    assert!(hs.ring_resets > 0, "bad pointers must reset the ring");
    assert!(hs.tx_drops > 0, "bad slots must be dropped");
    assert_eq!(
        hs.tx_drops,
        hs.tx_drops_bad_slot + hs.tx_drops_no_destination + hs.tx_drops_lookup,
        "every drop has its cause: {hs:?}"
    );
    assert!(hs.tx_drops_bad_slot > 0, "{hs:?}");

    // Other regions: the buffers the daemon may never write are untouched.
    let after: Vec<_> = [&b, &c]
        .iter()
        .map(|p| extra_buffers(p.interface().region(), p.interface().nifp_offset()))
        .collect();
    assert_eq!(before, after);

    // The hostile client leaves; an honest one on the same port works normally.
    drop(ph);
    hh.detach();
    let (_hh2, mut ph2) = attach(Arc::clone(&h));
    assert_eq!(
        ph2.tx_batch(0, 10, |i, buf| eth(
            buf,
            [2, 0, 0, 0, 0, 0xc],
            [2, 0, 0, 0, 0, 0xa],
            1000 + u64::from(i)
        )),
        10
    );
    ph2.txsync(0);
    let mut from_h = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while from_h < 10 {
        assert!(
            Instant::now() < deadline,
            "re-attached port does not forward"
        );
        pc.wait(Want::Rx, Some(Duration::from_millis(100))).unwrap();
        pc.rx_batch(0, u32::MAX, |buf, _| {
            if buf[6..12] == [2, 0, 0, 0, 0, 0xa] {
                from_h += 1;
            }
        });
        pc.rxsync(0);
    }
}

fn eth(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], seq: u64) -> u16 {
    buf[..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&[0x88, 0xb5]);
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    60
}
