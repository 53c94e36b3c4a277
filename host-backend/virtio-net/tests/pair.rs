//! A queue pair's data path against virtqueues a mock driver fills in guest memory, on a VALE
//! switch whose other port is a host client: frames both ways, merged receive buffers,
//! backpressure, and hostile chains (bad addresses, wrong directions, oversized frames, a
//! runaway avail index).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptnet_client::Port;
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_vhost_user::guest::GuestMem;
use ptnet_vhost_user::vring::HookedVring;
use ptnet_virtio_net::device::{NetStats, bind_port, features};
use ptnet_virtio_net::group::PollGroup;
use ptnet_virtio_net::worker::{Pair, PairConfig};
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

const QSIZE: u16 = 64;
const MEM_SIZE: usize = 0x40_0000;
const RXQ: u64 = 0x1_0000;
const TXQ: u64 = 0x2_0000;
/// Packet buffers live from here on.
const BUFS: u64 = 0x10_0000;
const HDR: usize = 12;

struct Rig {
    mem: GuestMem,
    pair: Pair,
    stats: Arc<NetStats>,
    host: Port,
    _client: HostClient,
    vport: Arc<dyn SyncPort>,
}

fn avail_addr(base: u64) -> u64 {
    base + 16 * u64::from(QSIZE)
}

fn used_addr(base: u64) -> u64 {
    (avail_addr(base) + 4 + 2 * u64::from(QSIZE) + 2 + 3) & !3
}

/// A queue at `base`: descriptor table, avail ring, used ring, laid out as a driver does.
fn vring(mem: &GuestMem, base: u64) -> HookedVring {
    let v = HookedVring::new(mem.clone(), QSIZE).unwrap();
    v.set_queue_size(QSIZE);
    v.set_queue_info(base, avail_addr(base), used_addr(base))
        .unwrap();
    v.set_queue_ready(true);
    v.set_enabled(true);
    v
}

fn rig(name: &str, acked: u64) -> Rig {
    rig_with(name, acked, (0, 0))
}

/// A rig whose VM port and host port have the given virtio-net header lengths; the pair
/// carries headers when the VM port has one.
fn rig_with(name: &str, acked: u64, (vm_hdr, host_hdr): (u32, u32)) -> Rig {
    let sw = Switch::new(name);
    let vport: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw.add_port("vm", &VPortSpec::default()).unwrap(),
    });
    let hport: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw.add_port("host", &VPortSpec::default()).unwrap(),
    });
    vport.set_vnet_hdr_len(vm_hdr).unwrap();
    hport.set_vnet_hdr_len(host_hdr).unwrap();
    let (client, files) = HostClient::attach(hport, Mode::default()).unwrap();
    let host = Port::from_parts(client.info().clone(), files).unwrap();
    let mem = GuestMemoryAtomic::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
    );
    let b = bind_port(&*vport, 1).unwrap();
    let stats = Arc::new(NetStats::default());
    let pair = Pair::new(PairConfig {
        index: 0,
        port: Arc::clone(&vport),
        csb: b.csb,
        mem: mem.clone(),
        rxq: vring(&mem, RXQ),
        txq: vring(&mem, TXQ),
        ctrl: None,
        features: acked,
        carry_hdr: vm_hdr != 0,
        stats: Arc::clone(&stats),
    });
    Rig {
        mem,
        pair,
        stats,
        host,
        _client: client,
        vport,
    }
}

fn desc(addr: u64, len: u32, write: bool) -> RawDescriptor {
    let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

/// Posts chains (descriptors taken in order after those posted before), as a driver does.
fn post(r: &Rig, base: u64, chains: &[Vec<RawDescriptor>]) {
    post_in(&r.mem, base, chains);
}

/// [`post`] into guest memory `mem`.
fn post_in(mem: &GuestMem, base: u64, chains: &[Vec<RawDescriptor>]) {
    let m = mem.memory();
    let idx_at = GuestAddress(avail_addr(base) + 2);
    let mut idx: u16 = m.read_obj(idx_at).unwrap();
    // Descriptors are taken round robin; the cursor lives in a scratch word of the queue's
    // page.
    let cursor = GuestAddress(base + 0x8000);
    let mut next: u16 = m.read_obj(cursor).unwrap();
    for c in chains {
        let head = next;
        for (i, d) in c.iter().enumerate() {
            let d = Descriptor::from(*d);
            let more = i + 1 < c.len();
            let n = (next + 1) % QSIZE;
            let flags = d.flags() | if more { VRING_DESC_F_NEXT as u16 } else { 0 };
            let raw = RawDescriptor::from(Descriptor::new(d.addr().0, d.len(), flags, n));
            m.write_obj(raw, GuestAddress(base + 16 * u64::from(next)))
                .unwrap();
            next = n;
        }
        m.write_obj(
            head,
            GuestAddress(avail_addr(base) + 4 + 2 * u64::from(idx % QSIZE)),
        )
        .unwrap();
        idx = idx.wrapping_add(1);
    }
    m.write_obj(next, cursor).unwrap();
    m.write_obj(idx, idx_at).unwrap();
}

/// The buffer address of descriptor `head`.
fn desc_addr(r: &Rig, base: u64, head: u32) -> u64 {
    r.mem
        .memory()
        .read_obj(GuestAddress(base + 16 * u64::from(head)))
        .unwrap()
}

fn used(r: &Rig, base: u64) -> Vec<(u32, u32)> {
    let m = r.mem.memory();
    let ua = used_addr(base);
    let idx: u16 = m.read_obj(GuestAddress(ua + 2)).unwrap();
    (0..idx)
        .map(|i| {
            let e: u64 = m
                .read_obj(GuestAddress(ua + 4 + 8 * u64::from(i % QSIZE)))
                .unwrap();
            (e as u32, (e >> 32) as u32)
        })
        .collect()
}

fn frame(i: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0xff; 6]); // broadcast: flooded to the other port
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x10 + i]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    for (k, b) in f[14..].iter_mut().enumerate() {
        *b = i.wrapping_add(k as u8);
    }
    f
}

fn host_receive(r: &mut Rig, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        r.host.rxsync(0);
        r.host.rx_batch(0, 64, |b, _| got.push(b.to_vec()));
        r.host.rxsync(0);
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

fn host_send(r: &mut Rig, frames: &[Vec<u8>]) {
    let mut i = 0;
    r.host.tx_batch(0, frames.len() as u32, |k, buf| {
        let f = &frames[k as usize];
        buf[..f.len()].copy_from_slice(f);
        i += 1;
        f.len() as u16
    });
    r.host.txsync(0);
}

/// Runs rx passes until `n` frames were delivered (the host's sync loop forwards
/// asynchronously).
fn rx_until(r: &mut Rig, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.stats.snapshot().rx_packets + r.stats.snapshot().rx_bad < n {
        assert!(Instant::now() < deadline, "frames did not arrive");
        r.pair.rx_pass().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn guest_frames_reach_a_host_client_without_their_header_in_one_batch() {
    let mut r = rig("vnet-t1", features(1));
    let m = r.mem.memory();
    let mut chains = Vec::new();
    let mut want = Vec::new();
    for i in 0..5u8 {
        let f = frame(i, 60 + usize::from(i) * 100);
        let a = BUFS + u64::from(i) * 0x1000;
        m.write_slice(&[0u8; HDR], GuestAddress(a)).unwrap();
        if i % 2 == 0 {
            // Header and frame in one descriptor (DPDK, Linux with ANY_LAYOUT).
            m.write_slice(&f, GuestAddress(a + HDR as u64)).unwrap();
            chains.push(vec![desc(a, (HDR + f.len()) as u32, false)]);
        } else {
            // Header alone, then the frame in two pieces.
            let b = a + 0x100;
            m.write_slice(&f, GuestAddress(b)).unwrap();
            chains.push(vec![
                desc(a, HDR as u32, false),
                desc(b, 20, false),
                desc(b + 20, (f.len() - 20) as u32, false),
            ]);
        }
        want.push(f);
    }
    drop(m);
    post(&r, TXQ, &chains);
    assert_eq!(r.pair.tx_pass().unwrap(), 5);
    let u = used(&r, TXQ);
    assert_eq!(u.len(), 5, "every chain completed");
    assert!(
        u.iter().all(|&(_, len)| len == 0),
        "TX completions carry no length"
    );
    let got = host_receive(&mut r, 5);
    assert_eq!(got, want);
    let s = r.stats.snapshot();
    assert_eq!((s.tx_packets, s.tx_bad), (5, 0));
    assert_eq!(r.vport.stats().snapshot().tx_packets, 5);
}

#[test]
fn host_frames_reach_the_guest_behind_a_zeroed_header_with_num_buffers() {
    let mut r = rig("vnet-t2", features(1));
    let frames: Vec<_> = (0..3u8).map(|i| frame(i, 100 + usize::from(i))).collect();
    post(
        &r,
        RXQ,
        &(0..8)
            .map(|i| vec![desc(BUFS + i * 0x1000, 2048, true)])
            .collect::<Vec<_>>(),
    );
    host_send(&mut r, &frames);
    rx_until(&mut r, 3);
    let u = used(&r, RXQ);
    assert_eq!(u.len(), 3);
    let m = r.mem.memory();
    for (k, (head, len)) in u.iter().enumerate() {
        let f = &frames[k];
        assert_eq!(*len as usize, HDR + f.len());
        let mut buf = vec![0u8; *len as usize];
        m.read_slice(&mut buf, GuestAddress(desc_addr(&r, RXQ, *head)))
            .unwrap();
        let mut hdr = [0u8; HDR];
        hdr[10] = 1; // num_buffers
        assert_eq!(&buf[..HDR], &hdr);
        assert_eq!(&buf[HDR..], &f[..]);
    }
}

#[test]
fn merged_receive_buffers_carry_a_frame_larger_than_one_buffer() {
    let mut r = rig("vnet-t3", features(1));
    post(
        &r,
        RXQ,
        &(0..8)
            .map(|i| vec![desc(BUFS + i * 0x1000, 512, true)])
            .collect::<Vec<_>>(),
    );
    let f = frame(7, 1200);
    host_send(&mut r, std::slice::from_ref(&f));
    rx_until(&mut r, 1);
    let u = used(&r, RXQ);
    assert_eq!(u.len(), 3, "12 + 1200 bytes in 512-byte buffers");
    assert_eq!(u.iter().map(|e| e.1).sum::<u32>() as usize, HDR + f.len());
    let m = r.mem.memory();
    let mut all = Vec::new();
    for (head, len) in &u {
        let mut b = vec![0u8; *len as usize];
        m.read_slice(&mut b, GuestAddress(desc_addr(&r, RXQ, *head)))
            .unwrap();
        all.extend(b);
    }
    assert_eq!(u16::from_le_bytes([all[10], all[11]]), 3, "num_buffers");
    assert_eq!(&all[HDR..], &f[..]);
}

#[test]
fn without_mergeable_buffers_a_frame_too_large_for_the_buffer_is_dropped_alone() {
    let acked = features(1) & !(1 << VIRTIO_NET_F_MRG_RXBUF);
    let mut r = rig("vnet-t4", acked);
    post(
        &r,
        RXQ,
        &(0..4)
            .map(|i| vec![desc(BUFS + i * 0x1000, 256, true)])
            .collect::<Vec<_>>(),
    );
    host_send(&mut r, &[frame(1, 600), frame(2, 100)]);
    rx_until(&mut r, 2);
    let u = used(&r, RXQ);
    assert_eq!(u.len(), 2);
    assert_eq!(u[0].1, 0, "the large frame's buffer comes back empty");
    assert_eq!(u[1].1 as usize, HDR + 100);
    let s = r.stats.snapshot();
    assert_eq!((s.rx_packets, s.rx_bad), (1, 1));
}

#[test]
fn frames_wait_in_the_port_until_the_guest_posts_buffers() {
    let mut r = rig("vnet-t5", features(1));
    host_send(&mut r, &[frame(1, 80), frame(2, 80)]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.vport.stats().snapshot().rx_packets < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r.pair.rx_pass().unwrap(), 0, "no buffers: nothing moves");
    assert_eq!(used(&r, RXQ).len(), 0);
    post(&r, RXQ, &[vec![desc(BUFS, 2048, true)]]);
    r.pair.rx_pass().unwrap();
    assert_eq!(used(&r, RXQ).len(), 1, "one buffer, one frame");
    post(&r, RXQ, &[vec![desc(BUFS + 0x1000, 2048, true)]]);
    r.pair.rx_pass().unwrap();
    assert_eq!(used(&r, RXQ).len(), 2);
    assert_eq!(r.stats.snapshot().rx_packets, 2);
}

#[test]
fn hostile_tx_chains_are_completed_empty_and_the_rest_still_flows() {
    let mut r = rig("vnet-t6", features(1));
    let m = r.mem.memory();
    let good = frame(3, 64);
    m.write_slice(&[0u8; HDR], GuestAddress(BUFS)).unwrap();
    m.write_slice(&good, GuestAddress(BUFS + HDR as u64))
        .unwrap();
    drop(m);
    post(
        &r,
        TXQ,
        &[
            // Outside guest memory.
            vec![desc(MEM_SIZE as u64 - 8, 100, false)],
            vec![desc(u64::MAX - 4, 100, false)],
            // A device-writable descriptor in a TX chain.
            vec![desc(BUFS, 100, true)],
            // Longer than a port's fragment chain (64 buffers of 2048 bytes).
            vec![desc(BUFS, (HDR + 64 * 2048 + 1) as u32, false)],
            // Shorter than the header.
            vec![desc(BUFS, 4, false)],
            // And a good one.
            vec![desc(BUFS, (HDR + good.len()) as u32, false)],
        ],
    );
    assert_eq!(r.pair.tx_pass().unwrap(), 6);
    assert_eq!(used(&r, TXQ).len(), 6);
    let s = r.stats.snapshot();
    assert_eq!((s.tx_packets, s.tx_bad), (1, 5));
    assert_eq!(host_receive(&mut r, 1), vec![good]);
}

#[test]
fn hostile_rx_chains_lose_only_their_frame() {
    let mut r = rig("vnet-t7", features(1));
    post(
        &r,
        RXQ,
        &[
            vec![desc(BUFS, 2048, false)],                // read-only
            vec![desc(MEM_SIZE as u64 - 16, 2048, true)], // runs off guest memory
            vec![desc(BUFS, 4, true)],                    // cannot hold the header
            vec![desc(BUFS + 0x1000, 2048, true)],
        ],
    );
    let frames: Vec<_> = (0..4u8).map(|i| frame(i, 90)).collect();
    host_send(&mut r, &frames);
    rx_until(&mut r, 4);
    let u = used(&r, RXQ);
    assert_eq!(
        u.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![0, 0, 0, 102]
    );
    let s = r.stats.snapshot();
    assert_eq!((s.rx_packets, s.rx_bad), (1, 3));
}

#[test]
fn an_avail_index_running_ahead_of_the_queue_breaks_only_this_queue() {
    let mut r = rig("vnet-t8", features(1));
    let m = r.mem.memory();
    m.write_obj(QSIZE + 5, GuestAddress(TXQ + 16 * u64::from(QSIZE) + 2))
        .unwrap();
    drop(m);
    assert!(r.pair.tx_pass().is_err());
    // The receive side still works.
    post(&r, RXQ, &[vec![desc(BUFS, 2048, true)]]);
    host_send(&mut r, &[frame(1, 70)]);
    rx_until(&mut r, 1);
}

#[test]
fn looping_out_of_range_and_indirect_chains_are_completed_empty() {
    let mut r = rig("vnet-t9", features(1));
    let m = r.mem.memory();
    let good = frame(5, 64);
    m.write_slice(&[0u8; HDR], GuestAddress(BUFS)).unwrap();
    m.write_slice(&good, GuestAddress(BUFS + HDR as u64))
        .unwrap();
    let next = VRING_DESC_F_NEXT as u16;
    let raw = |addr: u64, len: u32, flags: u16, n: u16| {
        RawDescriptor::from(Descriptor::new(addr, len, flags, n))
    };
    let table = [
        // 0 → 1 → 0 → ...: a loop.
        raw(BUFS, 8, next, 1),
        raw(BUFS, 8, next, 0),
        // 2 → 999: a next index outside the table.
        raw(BUFS, 8, next, 999),
        // 3: an indirect table (not negotiated).
        raw(BUFS, 16, 4, 0),
        // 4: a good frame.
        raw(BUFS, (HDR + good.len()) as u32, 0, 0),
    ];
    for (i, d) in table.iter().enumerate() {
        m.write_obj(*d, GuestAddress(TXQ + 16 * i as u64)).unwrap();
    }
    for (k, head) in [0u16, 2, 3, 4].iter().enumerate() {
        m.write_obj(*head, GuestAddress(avail_addr(TXQ) + 4 + 2 * k as u64))
            .unwrap();
    }
    m.write_obj(4u16, GuestAddress(avail_addr(TXQ) + 2))
        .unwrap();
    drop(m);
    assert_eq!(r.pair.tx_pass().unwrap(), 4);
    let u = used(&r, TXQ);
    assert_eq!(u.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0, 2, 3, 4]);
    let s = r.stats.snapshot();
    assert_eq!((s.tx_packets, s.tx_bad), (1, 3));
    assert_eq!(host_receive(&mut r, 1), vec![good]);
}

#[test]
fn a_head_index_outside_the_table_breaks_only_this_queue() {
    let mut r = rig("vnet-t10", features(1));
    let m = r.mem.memory();
    m.write_obj(QSIZE + 3, GuestAddress(avail_addr(TXQ) + 4))
        .unwrap();
    m.write_obj(1u16, GuestAddress(avail_addr(TXQ) + 2))
        .unwrap();
    drop(m);
    assert!(r.pair.tx_pass().is_err());
    post(&r, RXQ, &[vec![desc(BUFS, 2048, true)]]);
    host_send(&mut r, &[frame(2, 70)]);
    rx_until(&mut r, 1);
}

/// Joins the host client's fragment chains into frames.
fn host_receive_frames(r: &mut Rig, want: usize) -> Vec<Vec<u8>> {
    use ptnet_spec::netmap::NS_MOREFRAG;
    let (mut got, mut cur) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        r.host.rxsync(0);
        r.host.rx_batch(0, 256, |b, s| {
            cur.extend_from_slice(b);
            if s.flags & NS_MOREFRAG == 0 {
                got.push(std::mem::take(&mut cur));
            }
        });
        r.host.rxsync(0);
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

/// Posts one TX chain: the header, then the frame in pieces of at most 4 KiB.
fn post_tx(r: &Rig, hdr: &[u8; HDR], f: &[u8]) {
    let m = r.mem.memory();
    m.write_slice(hdr, GuestAddress(BUFS)).unwrap();
    m.write_slice(f, GuestAddress(BUFS + 0x1000)).unwrap();
    let mut chain = vec![desc(BUFS, HDR as u32, false)];
    for (i, c) in f.chunks(4096).enumerate() {
        chain.push(desc(BUFS + 0x1000 + 4096 * i as u64, c.len() as u32, false));
    }
    drop(m);
    post(r, TXQ, &[chain]);
}

#[test]
fn a_frame_longer_than_a_port_buffer_crosses_as_a_fragment_chain() {
    let mut r = rig("vnet-t10", features(1));
    let f = frame(5, 9000);
    post_tx(&r, &[0; HDR], &f);
    assert_eq!(r.pair.tx_pass().unwrap(), 1);
    assert_eq!(host_receive_frames(&mut r, 1), vec![f]);
}

#[test]
fn tso_frames_are_segmented_in_software_when_the_port_carries_no_header() {
    use ptnet_datapath::switch::vnet::testing::{check_tcp4, tcp4_partial};
    let mut r = rig("vnet-t11", features(1));
    let (h, f) = tcp4_partial([0xff; 6], [2, 0, 0, 0, 0, 9], 20_000, 1448);
    post_tx(&r, &h.to_le_bytes(), &f);
    assert_eq!(r.pair.tx_pass().unwrap(), 1);
    let segs = host_receive_frames(&mut r, 14);
    assert_eq!(segs.len(), 14, "20000 bytes in 1448-byte segments");
    let mut payload = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let (seq, p) = check_tcp4(s).unwrap_or_else(|e| panic!("segment {i}: {e}"));
        assert_eq!(seq, 1000 + 1448 * i as u32);
        payload.extend_from_slice(p);
    }
    assert_eq!(payload, f[54..]);
    assert_eq!(r.stats.snapshot().tx_bad, 0);
}

#[test]
fn tso_frames_cross_with_their_header_and_the_switch_resolves_them_for_a_plain_port() {
    use ptnet_datapath::switch::vnet::testing::{check_tcp4, tcp4_partial};
    // The VM port carries headers, the host client's port does not: the switch segments.
    let mut r = rig_with("vnet-t12", features(1), (12, 0));
    let (h, f) = tcp4_partial([0xff; 6], [2, 0, 0, 0, 0, 9], 5000, 1000);
    post_tx(&r, &h.to_le_bytes(), &f);
    assert_eq!(r.pair.tx_pass().unwrap(), 1);
    let segs = host_receive_frames(&mut r, 5);
    assert_eq!(segs.len(), 5);
    for s in &segs {
        check_tcp4(s).unwrap();
    }
    // Plain frames from the host reach the guest behind a zero header (the switch adds it,
    // the pair passes it on with num_buffers).
    post(&r, RXQ, &[vec![desc(BUFS + 0x20_000, 2048, true)]]);
    let back = frame(1, 100);
    host_send(&mut r, std::slice::from_ref(&back));
    rx_until(&mut r, 1);
    let u = used(&r, RXQ);
    let mut buf = vec![0u8; u[0].1 as usize];
    r.mem
        .memory()
        .read_slice(&mut buf, GuestAddress(BUFS + 0x20_000))
        .unwrap();
    let mut hdr = [0u8; HDR];
    hdr[10] = 1;
    assert_eq!(buf[..HDR], hdr);
    assert_eq!(buf[HDR..], back[..]);
}

#[test]
fn a_header_from_a_peer_that_carries_one_reaches_the_guest_as_it_came() {
    // Both ports carry headers: what the host client puts in front reaches the guest.
    let mut r = rig_with("vnet-t13", features(1), (12, 12));
    post(
        &r,
        RXQ,
        &(0..4)
            .map(|i| vec![desc(BUFS + i * 0x1000, 1024, true)])
            .collect::<Vec<_>>(),
    );
    let (h, f) = ptnet_datapath::switch::vnet::testing::tcp4_partial(
        [0xff; 6],
        [2, 0, 0, 0, 0, 8],
        2000,
        1448,
    );
    let mut sent = h.to_le_bytes().to_vec();
    sent.extend_from_slice(&f);
    // 2066 bytes: two host slots.
    let parts: Vec<&[u8]> = sent.chunks(2048).collect();
    assert!(r.host.tx_frags(0, &parts));
    r.host.txsync(0);
    rx_until(&mut r, 1);
    let u = used(&r, RXQ);
    assert_eq!(u.len(), 3, "12 + 2054 bytes in 1024-byte buffers");
    let m = r.mem.memory();
    let mut all = Vec::new();
    for (head, len) in &u {
        let mut b = vec![0u8; *len as usize];
        m.read_slice(&mut b, GuestAddress(desc_addr(&r, RXQ, *head)))
            .unwrap();
        all.extend(b);
    }
    let mut want_hdr = h;
    want_hdr.num_buffers = 3;
    assert_eq!(all[..HDR], want_hdr.to_le_bytes());
    assert_eq!(all[HDR..], f[..]);
}

#[test]
fn flags_only_a_device_may_set_do_not_cross_the_switch() {
    use ptnet_spec::vnet::{VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM};
    // Both ports carry headers. A guest that sets DATA_VALID (and RSC_INFO, bit 2) on a frame
    // it sends, against virtio 1.x 5.1.6.2: its peer sees neither; NEEDS_CSUM stays.
    let mut r = rig_with("vnet-t14", features(1), (12, 12));
    let f = frame(3, 200);
    let mut hdr = [0u8; HDR];
    hdr[0] = (VIRTIO_NET_HDR_F_DATA_VALID | 4) as u8;
    post_tx(&r, &hdr, &f);
    assert_eq!(r.pair.tx_pass().unwrap(), 1);
    let got = host_receive_frames(&mut r, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][0], 0, "device-only flags cleared");
    assert_eq!(got[0][HDR..], f[..]);
    // A partial checksum request keeps its flag.
    let (h, f) = ptnet_datapath::switch::vnet::testing::tcp4_partial(
        [0xff; 6],
        [2, 0, 0, 0, 0, 9],
        500,
        1448,
    );
    let mut b = h.to_le_bytes();
    b[0] |= VIRTIO_NET_HDR_F_DATA_VALID as u8;
    post_tx(&r, &b, &f);
    assert_eq!(r.pair.tx_pass().unwrap(), 1);
    let got = host_receive_frames(&mut r, 1);
    assert_eq!(got[0][0], VIRTIO_NET_HDR_F_NEEDS_CSUM as u8);
    assert_eq!(got[0][1..HDR], h.to_le_bytes()[1..]);
}

/// Frame `i` (60 bytes) behind a zero header at buffer `slot`, posted on the TX queue.
fn guest_send(mem: &GuestMem, i: u8, slot: u64) -> Vec<u8> {
    let f = frame(i, 60);
    let a = BUFS + slot * 0x1000;
    let m = mem.memory();
    m.write_slice(&[0u8; HDR], GuestAddress(a)).unwrap();
    m.write_slice(&f, GuestAddress(a + HDR as u64)).unwrap();
    drop(m);
    post_in(mem, TXQ, &[vec![desc(a, (HDR + f.len()) as u32, false)]]);
    f
}

/// Until `stats` says `f` holds (5 s at most).
fn until(stats: &NetStats, what: &str, f: impl Fn(&ptnet_virtio_net::NetStatsSnapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f(&stats.snapshot()) {
        assert!(Instant::now() < deadline, "{what}: {:?}", stats.snapshot());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One poll group thread serves two pairs: each one's guest frames reach its host client; a
/// pair whose queue breaks leaves the group and the other goes on; leaving is synchronous,
/// so nothing posted afterwards is taken.
#[test]
fn a_poll_group_serves_two_pairs_and_a_broken_one_leaves_alone() {
    let g = PollGroup::spawn("vnet-gt", Mode::BusyPoll).unwrap();
    let Rig {
        mem: mem_a,
        pair,
        stats: stats_a,
        host: mut host_a,
        _client: _ca,
        ..
    } = rig("vnet-ga", features(1));
    let member_a = g.join(pair, Vec::new(), Arc::clone(&stats_a)).unwrap();
    let Rig {
        mem: mem_b,
        pair,
        stats: stats_b,
        host: mut host_b,
        _client: _cb,
        ..
    } = rig("vnet-gb", features(1));
    let member_b = g.join(pair, Vec::new(), Arc::clone(&stats_b)).unwrap();

    let receive = |host: &mut Port, want: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() {
            assert!(Instant::now() < deadline, "no frame reached the host");
            host.rxsync(0);
            host.rx_batch(0, 64, |b, _| got.push(b.to_vec()));
            host.rxsync(0);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, [want.to_vec()]);
    };
    let f = guest_send(&mem_a, 1, 0);
    receive(&mut host_a, &f);
    let f = guest_send(&mem_b, 2, 0);
    receive(&mut host_b, &f);

    // b's avail index runs a whole queue ahead: its queue breaks, it leaves the group.
    mem_b
        .memory()
        .write_obj(QSIZE + 5, GuestAddress(TXQ + 16 * u64::from(QSIZE) + 2))
        .unwrap();
    until(&stats_b, "b broke", |s| s.broken == 1);
    let f = guest_send(&mem_a, 3, 1);
    receive(&mut host_a, &f);
    member_b.leave();

    member_a.leave();
    let sent = stats_a.snapshot().tx_packets;
    guest_send(&mem_a, 4, 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        stats_a.snapshot().tx_packets,
        sent,
        "a pair that left is not served"
    );
    assert_eq!(stats_a.snapshot().broken, 0);
}
