//! What a frame costs the daemon between two virtio-net ports, without scheduling: one
//! thread plays two guests and runs both ports' queue-pair passes. Guest A's TX virtqueue
//! always holds 256 chains (header + frame), guest B's RX virtqueue 256 buffers; each round
//! pass A moves them through VALE into port B's RX ring and pass B copies them into B's
//! buffers. Prints ns per frame for the whole daemon path (two copies into and out of the
//! switch, the switch's own copy, both used rings).
//!
//! `cargo run --release -p ptnet-virtio-net --example pair-cost -- [FRAME_BYTES] [FRAMES]`
//! (`PAIR_COST_FLOOD=1`: the receiver's MAC unknown, every frame flooded). One JSON line;
//! `host-backend/bench/report.py --pair-cost` turns a file of them into the table and a plot.

use std::sync::Arc;
use std::time::Instant;

use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_vhost_user::guest::GuestMem;
use ptnet_vhost_user::vring::HookedVring;
use ptnet_virtio_net::device::{NetStats, bind_port, features};
use ptnet_virtio_net::worker::{Pair, PairConfig};
use vhost_user_backend::VringT;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

const Q: u16 = 256;
const HDR: usize = 12;

fn avail(base: u64) -> u64 {
    base + 16 * u64::from(Q)
}

fn used(base: u64) -> u64 {
    (avail(base) + 4 + 2 * u64::from(Q) + 2 + 3) & !3
}

fn vring(mem: &GuestMem, base: u64) -> HookedVring {
    let v = HookedVring::new(mem.clone(), Q).unwrap();
    v.set_queue_size(Q);
    v.set_queue_info(base, avail(base), used(base)).unwrap();
    v.set_queue_ready(true);
    v.set_enabled(true);
    v
}

/// Descriptor i of the queue at `base` is buffer `bufs + i * 2048`, `len` bytes.
fn descriptors(m: &GuestMemoryMmap, base: u64, bufs: u64, len: u32, write: bool) {
    let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
    for i in 0..Q {
        let d = Descriptor::new(bufs + u64::from(i) * 2048, len, flags, 0);
        m.write_obj(
            RawDescriptor::from(d),
            GuestAddress(base + 16 * u64::from(i)),
        )
        .unwrap();
    }
}

/// Makes all Q descriptors available again (the driver's refill), one index store.
fn refill(m: &GuestMemoryMmap, base: u64) {
    let idx: u16 = m.read_obj(GuestAddress(avail(base) + 2)).unwrap();
    for k in 0..Q {
        let slot = idx.wrapping_add(k) % Q;
        m.write_obj(slot, GuestAddress(avail(base) + 4 + 2 * u64::from(slot)))
            .unwrap();
    }
    m.write_obj(idx.wrapping_add(Q), GuestAddress(avail(base) + 2))
        .unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().map_or(60, |a| a.parse().expect("frame bytes"));
    let frames: u64 = args
        .next()
        .map_or(4_000_000, |a| a.parse().expect("frames"));
    let sw = Switch::new("cost");
    let port = |name: &str| -> Arc<dyn SyncPort> {
        Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port(name, &VPortSpec::default()).unwrap(),
        })
    };
    let (pa, pb) = (port("a"), port("b"));
    let mem: GuestMem = GuestMemoryAtomic::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap(),
    );
    let (txq_a, rxq_a, txq_b, rxq_b) = (0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000);
    let (bufs_a, bufs_b) = (0x10_0000, 0x30_0000);
    {
        let m = mem.memory();
        let mut f = vec![0u8; HDR + size];
        f[HDR..HDR + 6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[HDR + 6..HDR + 12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        for i in 0..u64::from(Q) {
            m.write_slice(&f, GuestAddress(bufs_a + i * 2048)).unwrap();
        }
        descriptors(&m, txq_a, bufs_a, (HDR + size) as u32, false);
        descriptors(&m, rxq_b, bufs_b, 2048, true);
    }
    let mk = |p: &Arc<dyn SyncPort>, rx: u64, tx: u64| {
        let b = bind_port(&**p, 1).unwrap();
        Pair::new(PairConfig {
            index: 0,
            port: Arc::clone(p),
            csb: b.csb,
            mem: mem.clone(),
            rxq: vring(&mem, rx),
            txq: vring(&mem, tx),
            ctrl: None,
            features: features(1),
            carry_hdr: false,
            stats: Arc::new(NetStats::default()),
        })
    };
    let mut a = mk(&pa, rxq_a, txq_a);
    let mut b = mk(&pb, rxq_b, txq_b);
    let flooded = std::env::var_os("PAIR_COST_FLOOD").is_some();
    if !flooded {
        // Teach the switch where B is (one frame from B), so A's frames are unicast and
        // not flooded (set PAIR_COST_FLOOD to measure the flooding path).
        let m = mem.memory();
        let mut f = vec![0u8; HDR + 60];
        f[HDR..HDR + 6].copy_from_slice(&[0xff; 6]);
        f[HDR + 6..HDR + 12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        m.write_slice(&f, GuestAddress(0x50_0000)).unwrap();
        let d = Descriptor::new(0x50_0000, f.len() as u32, 0, 0);
        m.write_obj(RawDescriptor::from(d), GuestAddress(txq_b))
            .unwrap();
        m.write_obj(0u16, GuestAddress(avail(txq_b) + 4)).unwrap();
        m.write_obj(1u16, GuestAddress(avail(txq_b) + 2)).unwrap();
        drop(m);
        b.tx_pass().unwrap();
        a.rx_pass().unwrap();
    }
    let mut moved = 0u64;
    let t0 = Instant::now();
    while moved < frames {
        {
            let m = mem.memory();
            refill(&m, txq_a);
            refill(&m, rxq_b);
        }
        a.tx_pass().unwrap();
        moved += u64::from(b.rx_pass().unwrap());
    }
    let dt = t0.elapsed();
    let s = pb.stats().snapshot();
    println!(
        "{{\"frame_bytes\":{size},\"flooded\":{flooded},\"frames\":{moved},\"ns_per_frame\":{:.1},\"mpps\":{:.2},\"port_b_rx_drops\":{}}}",
        dt.as_nanos() as f64 / moved as f64,
        moved as f64 / dt.as_secs_f64() / 1e6,
        s.rx_drops
    );
}
