//! What a guest's virtio-net driver controls of a virtio-net port's data path
//! (`ptnet_virtio_net::worker::Pair`): descriptor tables, avail rings and the bytes in its
//! buffers, including the virtio-net headers it sends. Guest A's TX queue feeds a VALE switch
//! whose other port is guest B's pair, so B's RX queue receives whatever A's chains became,
//! into B's own hostile chains. Features (merged buffers, header carriage, offloads) vary.
//! Never a panic, never an access outside guest memory (mmap'd exactly), and every chain the
//! pair completes is one the guest posted.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_vhost_user::guest::GuestMem;
use ptnet_vhost_user::vring::HookedVring;
use ptnet_virtio_net::device::{NetStats, bind_port, features};
use ptnet_virtio_net::worker::{Pair, PairConfig};
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_MRG_RXBUF};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

const QSIZE: u16 = 16;
const MEM: u64 = 0x4_0000;
/// Queue layouts: descriptor table, avail ring, used ring.
const Q: [u64; 2] = [0x1000, 0x2000];
/// Input bytes one queue takes: 6 per descriptor, then the avail index and ring.
const QUEUE_BYTES: usize = 6 * QSIZE as usize + 2 + 2 * QSIZE as usize;

fn ports() -> &'static (Arc<dyn SyncPort>, Arc<dyn SyncPort>) {
    static P: OnceLock<(Arc<dyn SyncPort>, Arc<dyn SyncPort>)> = OnceLock::new();
    P.get_or_init(|| {
        let sw = Switch::new("vale0");
        let spec = VPortSpec { slots: 64, ..Default::default() };
        let mk = |n: &str| -> Arc<dyn SyncPort> {
            Arc::new(ValePortSync { switch: Arc::clone(&sw), port: sw.add_port(n, &spec).expect("port") })
        };
        (mk("a"), mk("b"))
    })
}

fn vring(mem: &GuestMem, base: u64) -> HookedVring {
    let v = HookedVring::new(mem.clone(), QSIZE).expect("vring");
    v.set_queue_size(QSIZE);
    let avail = base + 16 * u64::from(QSIZE);
    let used = (avail + 4 + 2 * u64::from(QSIZE) + 2 + 3) & !3;
    let _ = v.set_queue_info(base, avail, used);
    v.set_queue_ready(true);
    v.set_enabled(true);
    v
}

/// Writes a queue's descriptor table and avail ring at `base` from the input: per descriptor
/// an address (in 16-byte units, so most land in guest memory and some past it), a length,
/// flags and next; then the avail index and ring.
fn fill_queue(m: &GuestMemoryMmap, base: u64, d: &mut &[u8]) {
    let mut take = |n: usize| -> Vec<u8> {
        let n = n.min(d.len());
        let (a, b) = d.split_at(n);
        *d = b;
        let mut v = a.to_vec();
        v.resize(n.max(v.len()), 0);
        v
    };
    for i in 0..u64::from(QSIZE) {
        let b = take(6);
        let b = [b.first(), b.get(1), b.get(2), b.get(3), b.get(4), b.get(5)].map(|x| x.copied().unwrap_or(0));
        let addr = u64::from(u16::from_le_bytes([b[0], b[1]])) * 16;
        let len = u32::from(u16::from_le_bytes([b[2], b[3]]));
        let flags = u16::from(b[4] & 0x7); // NEXT, WRITE, INDIRECT
        let next = u16::from(b[5]) % (QSIZE + 2);
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let _ = m.write_slice(&raw, GuestAddress(base + 16 * i));
    }
    let avail = base + 16 * u64::from(QSIZE);
    let b = take(2 + 2 * usize::from(QSIZE));
    let idx = u16::from_le_bytes([b.first().copied().unwrap_or(0), b.get(1).copied().unwrap_or(0)]) % (2 * QSIZE);
    let _ = m.write_obj(idx, GuestAddress(avail + 2));
    for i in 0..u64::from(QSIZE) {
        let at = 2 + 2 * i as usize;
        let h = u16::from_le_bytes([b.get(at).copied().unwrap_or(0), b.get(at + 1).copied().unwrap_or(0)]);
        let _ = m.write_obj(h % (QSIZE + 1), GuestAddress(avail + 4 + 2 * i));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, mut d)) = data.split_first() else { return };
    let (a, b) = ports();
    let mut acked = features(1);
    if opts & 1 != 0 {
        acked &= !(1 << VIRTIO_NET_F_MRG_RXBUF);
    }
    if opts & 2 != 0 {
        acked &= !(1 << VIRTIO_NET_F_CSUM);
    }
    let carry = opts & 4 != 0;
    let hdr = if carry { 12 } else { 0 };
    a.set_vnet_hdr_len(hdr).expect("header length");
    b.set_vnet_hdr_len(if opts & 8 != 0 { 12 } else { 0 }).expect("header length");

    // The queues first (130 bytes each), so that short inputs drive them; the rest of the
    // input is the buffers' contents (frames, headers), half for each guest, from 0x8000 on.
    let mut qa = [0u8; QUEUE_BYTES];
    let mut qb = [0u8; QUEUE_BYTES];
    for q in [&mut qa, &mut qb] {
        let n = d.len().min(QUEUE_BYTES);
        q[..n].copy_from_slice(&d[..n]);
        d = &d[n..];
    }
    let (bufs_a, bufs_b) = d.split_at(d.len() / 2);
    let mk_mem = |bufs: &[u8], base: u64, queue: &[u8]| {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM as usize)]).expect("guest memory");
        let n = bufs.len().min(0x2000);
        let _ = m.write_slice(&bufs[..n], GuestAddress(0x8000));
        fill_queue(&m, base, &mut &queue[..]);
        m
    };
    let ma = mk_mem(bufs_a, Q[1], &qa); // A's TX queue
    let mb = mk_mem(bufs_b, Q[0], &qb); // B's RX queue

    let run = |port: &Arc<dyn SyncPort>, m: GuestMemoryMmap, sb: bool| {
        let mem: GuestMem = GuestMemoryAtomic::new(m);
        let bind = bind_port(&**port, 1).expect("bind");
        let pair = Pair::new(PairConfig {
            index: 0,
            port: Arc::clone(port),
            csb: bind.csb,
            mem: mem.clone(),
            rxq: vring(&mem, Q[0]),
            txq: vring(&mem, Q[1]),
            ctrl: None,
            features: acked,
            carry_hdr: if sb { opts & 8 != 0 } else { carry },
            stats: Arc::new(NetStats::default()),
        });
        (pair, mem)
    };
    let (mut pb, _memb) = run(b, mb, true);
    let (mut pa, _mema) = run(a, ma, false);
    for _ in 0..3 {
        let _ = pa.tx_pass();
        let _ = pb.rx_pass();
    }
    drop(pa);
    drop(pb);
    a.bind(None);
    b.bind(None);
});
