//! In-process end-to-end tests of the datapath: real sync loop threads on the daemon side,
//! the real client library on the application side, the CSB protocol between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::pipe::{Pipe, PipePortSync};
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};

fn attach(port: Arc<dyn SyncPort>, mode: Mode) -> (HostClient, Port) {
    let (hc, files) = HostClient::attach(port, mode).expect("attach");
    let p = Port::from_parts(hc.info().clone(), files).expect("client side");
    (hc, p)
}

fn vale_port(sw: &Arc<Switch>, name: &str, slots: u32) -> Arc<dyn SyncPort> {
    let spec = VPortSpec {
        slots,
        ..Default::default()
    };
    let port = sw.add_port(name, &spec).expect("add port");
    Arc::new(ValePortSync {
        switch: Arc::clone(sw),
        port,
    })
}

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

/// Writes an Ethernet frame from `src` to `dst` carrying `seq`, of `len` bytes.
fn frame(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> u16 {
    buf[..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&[0x88, 0xb5]);
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    for (k, b) in buf[22..len].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(k as u8);
    }
    len as u16
}

fn check_frame(buf: &[u8], seq: u64, len: usize) {
    assert_eq!(buf.len(), len, "frame {seq} length");
    let got = u64::from_le_bytes(buf[14..22].try_into().unwrap());
    assert_eq!(got, seq, "frames out of order");
    for (k, b) in buf[22..].iter().enumerate() {
        assert_eq!(
            *b,
            (seq as u8).wrapping_add(k as u8),
            "payload of frame {seq} byte {k}"
        );
    }
}

/// Sends `count` frames from `tx` to `rx` in bursts the receiver's ring can hold (VALE drops
/// when a destination is full), receiving each burst completely before the next, with both
/// sides sleeping on interrupts when they must; checks every frame.
fn exchange(tx: &mut Port, rx: &mut Port, dst: [u8; 6], src: [u8; 6], count: u64, len: usize) {
    let burst = u64::from(rx.info().num_rx_slots - 1).min(200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut sent, mut got) = (0u64, 0u64);
    while got < count {
        let target = (sent + burst).min(count);
        while sent < target {
            assert!(Instant::now() < deadline, "stalled sending at {sent}");
            let n = tx.tx_batch(0, (target - sent) as u32, |i, buf| {
                frame(buf, dst, src, sent + u64::from(i), len)
            });
            sent += u64::from(n);
            tx.txsync(0);
            if sent < target && tx.tx_space(0) == 0 {
                tx.wait(Want::Tx, Some(Duration::from_millis(100))).unwrap();
            }
        }
        while got < sent {
            assert!(
                Instant::now() < deadline,
                "stalled: sent {sent}, received {got}"
            );
            rx.rxsync(0);
            let n = rx.rx_batch(0, u32::MAX, |buf, _| {
                check_frame(buf, got, len);
                got += 1;
            });
            if n > 0 {
                rx.rxsync(0);
            } else {
                rx.wait(Want::Rx, Some(Duration::from_millis(500))).unwrap();
            }
        }
    }
}

#[test]
fn two_clients_exchange_frames_across_a_vale_switch() {
    let sw = Switch::new("vale0");
    let a = vale_port(&sw, "a", 256);
    let b = vale_port(&sw, "b", 256);
    let (_ha, mut pa) = attach(Arc::clone(&a), Mode::default());
    let (_hb, mut pb) = attach(Arc::clone(&b), Mode::default());
    exchange(&mut pa, &mut pb, mac(2), mac(1), 20_000, 60);
    exchange(&mut pb, &mut pa, mac(1), mac(2), 5_000, 1514);
    let sa = a.stats().snapshot();
    let sb = b.stats().snapshot();
    assert_eq!(sa.tx_packets, 20_000);
    assert_eq!((sb.rx_packets, sb.rx_drops), (20_000, 0));
    assert_eq!(sb.tx_packets, 5_000);
}

#[test]
fn pipe_ends_exchange_frames_without_copying_and_without_loss() {
    let pipe = Pipe::new("pipe0", "1", 1, 128, 0, None).unwrap();
    let m: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.master),
        peer: Arc::clone(&pipe.slave),
    });
    let s: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.slave),
        peer: Arc::clone(&pipe.master),
    });
    let (_hm, mut pm) = attach(Arc::clone(&m), Mode::default());
    let (_hs, mut ps) = attach(Arc::clone(&s), Mode::default());
    assert_eq!(
        pm.info().mem_id,
        ps.info().mem_id,
        "both ends share one region"
    );
    let master_bufs: std::collections::HashSet<u32> = (0..128)
        .map(|i| pipe.master.interface().tx[0].read_slot(i).buf_idx)
        .collect();

    // The sender outpaces the ring many times over; a pipe never drops: the sender waits.
    let count = 50_000u64;
    let (mut sent, mut got) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < count {
        assert!(Instant::now() < deadline, "stalled: sent {sent} got {got}");
        if sent < count {
            let max = (count - sent).min(64) as u32;
            let n = pm.tx_batch(0, max, |i, buf| {
                frame(buf, mac(2), mac(1), sent + u64::from(i), 128)
            });
            sent += u64::from(n);
            pm.txsync(0);
        }
        ps.rxsync(0);
        let n = ps.rx_batch(0, 32, |buf, slot| {
            assert!(
                master_bufs.contains(&slot.buf_idx),
                "frame crossed in a copied buffer"
            );
            check_frame(buf, got, 128);
            got += 1;
        });
        ps.rxsync(0);
        if n == 0 && sent < count && pm.tx_space(0) == 0 {
            pm.wait(Want::Tx, Some(Duration::from_millis(200))).unwrap();
        } else if n == 0 {
            ps.wait(Want::Rx, Some(Duration::from_millis(200))).unwrap();
        }
    }
    assert_eq!(got, count);
    let st = pipe.slave.stats().snapshot();
    assert_eq!(st.rx_packets, count);
    assert_eq!(pipe.master.stats().snapshot().tx_packets, count);
}

#[test]
fn broadcast_reaches_every_other_port_once() {
    let sw = Switch::new("vale1");
    let ports: Vec<_> = (0..6)
        .map(|i| vale_port(&sw, &format!("p{i}"), 64))
        .collect();
    let mut clients: Vec<_> = ports
        .iter()
        .map(|p| attach(Arc::clone(p), Mode::default()))
        .collect();
    let (_, p0) = &mut clients[0];
    assert_eq!(
        p0.tx_batch(0, 1, |_, buf| frame(buf, [0xff; 6], mac(1), 7, 60)),
        1
    );
    p0.txsync(0);
    for (i, (_, p)) in clients.iter_mut().enumerate().skip(1) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got == 0 {
            assert!(Instant::now() < deadline, "port {i} got nothing");
            p.wait(Want::Rx, Some(Duration::from_millis(200))).unwrap();
            got += p.rx_batch(0, u32::MAX, |buf, _| check_frame(buf, 7, 60));
        }
        assert_eq!(got, 1, "port {i}");
    }
    let (_, p0) = &mut clients[0];
    p0.rxsync(0);
    assert_eq!(
        p0.rx_pending(0),
        0,
        "the sender does not hear its own broadcast"
    );
    assert_eq!(ports[0].stats().snapshot().tx_packets, 1);
    // The switch counted one lookup, one flood, and learned the sender.
    let c = sw.counters();
    assert_eq!((c.lookups, c.floods, c.learned), (1, 1, Some(1)), "{c:?}");
}

/// Waits until `p` has a frame; returns how many it got (0 on timeout).
fn frames_within(p: &mut Port, wait: Duration, mut each: impl FnMut(&[u8])) -> u32 {
    let deadline = Instant::now() + wait;
    let mut got = 0;
    while got == 0 && Instant::now() < deadline {
        p.wait(Want::Rx, Some(Duration::from_millis(50))).unwrap();
        got += p.rx_batch(0, u32::MAX, |buf, _| each(buf));
        p.rxsync(0);
    }
    got
}

#[test]
fn a_port_locked_to_its_mac_cannot_take_another_stations_traffic() {
    let sw = Switch::new("vale7");
    let spec = VPortSpec {
        slots: 64,
        ..Default::default()
    };
    let sync = |port| -> Arc<dyn SyncPort> {
        Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port,
        })
    };
    let victim = sw.add_port("victim", &spec).unwrap();
    let thief = sw.add_port("thief", &spec).unwrap();
    let peer = sw.add_port("peer", &spec).unwrap();
    thief.set_mac_lock(Some(mac(3)));
    assert_eq!(thief.mac_lock(), Some(mac(3)));
    let (_hv, mut pv) = attach(sync(Arc::clone(&victim)), Mode::default());
    let (_ht, mut pt) = attach(sync(Arc::clone(&thief)), Mode::default());
    let (_hp, mut pp) = attach(sync(Arc::clone(&peer)), Mode::default());
    let wait = Duration::from_secs(5);
    // The victim speaks: the switch learns where mac(1) is.
    pv.tx_batch(0, 1, |_, buf| frame(buf, [0xff; 6], mac(1), 1, 60));
    pv.txsync(0);
    assert_eq!(frames_within(&mut pp, wait, |b| check_frame(b, 1, 60)), 1);
    assert_eq!(frames_within(&mut pt, wait, |b| check_frame(b, 1, 60)), 1);
    // The thief claims mac(1): dropped before the switch learns from it or floods it.
    pt.tx_batch(0, 1, |_, buf| frame(buf, [0xff; 6], mac(1), 2, 60));
    pt.txsync(0);
    let deadline = Instant::now() + wait;
    while thief.stats().snapshot().tx_drops == 0 {
        assert!(
            Instant::now() < deadline,
            "the spoofed frame was not dropped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = thief.stats().snapshot();
    assert_eq!(s.tx_packets, 0);
    assert_eq!(
        (s.tx_drops, s.tx_drops_mac_lock),
        (1, 1),
        "the cause: {s:?}"
    );
    // Traffic for mac(1) still reaches the victim, not the thief.
    pp.tx_batch(0, 1, |_, buf| frame(buf, mac(1), mac(2), 3, 60));
    pp.txsync(0);
    assert_eq!(frames_within(&mut pv, wait, |b| check_frame(b, 3, 60)), 1);
    // Nobody got the spoofed broadcast; the thief got nothing more.
    let quiet = Duration::from_millis(200);
    assert_eq!(frames_within(&mut pv, quiet, |_| ()), 0);
    assert_eq!(frames_within(&mut pt, quiet, |_| ()), 0);
    // From its own address it is an ordinary port.
    pt.tx_batch(0, 1, |_, buf| frame(buf, mac(2), mac(3), 4, 60));
    pt.txsync(0);
    assert_eq!(frames_within(&mut pp, wait, |b| check_frame(b, 4, 60)), 1);
    // Unlocked, a port sends from any address (a VM served with --any-mac, a router).
    thief.set_mac_lock(None);
    assert_eq!(thief.mac_lock(), None);
    pt.tx_batch(0, 1, |_, buf| frame(buf, mac(2), mac(9), 5, 60));
    pt.txsync(0);
    assert_eq!(frames_within(&mut pp, wait, |b| check_frame(b, 5, 60)), 1);
}

#[test]
fn a_full_destination_drops_and_never_blocks_the_sender() {
    let sw = Switch::new("vale2");
    let a = vale_port(&sw, "a", 64);
    let b = vale_port(&sw, "b", 64);
    let (_ha, mut pa) = attach(Arc::clone(&a), Mode::default());
    let (_hb, mut pb) = attach(Arc::clone(&b), Mode::default());
    let mut sent = 0u64;
    for _ in 0..10 {
        let n = pa.tx_batch(0, 63, |i, buf| {
            frame(buf, mac(2), mac(1), sent + u64::from(i), 60)
        });
        sent += u64::from(n);
        pa.txsync(0);
        // The switch consumed the whole batch: the sender has room again at once.
        assert!(
            pa.wait(Want::Tx, Some(Duration::from_secs(5))).unwrap(),
            "sender blocked"
        );
        assert_eq!(pa.tx_space(0), 63);
    }
    pb.rxsync(0);
    assert_eq!(pb.rx_pending(0), 63, "the receiver's ring is full");
    let sb = b.stats().snapshot();
    assert_eq!(sb.rx_packets, 63);
    assert_eq!(sb.rx_drops, sent - 63);
    // What did arrive is the beginning, intact.
    let mut got = 0;
    pb.rx_batch(0, u32::MAX, |buf, _| {
        check_frame(buf, got, 60);
        got += 1;
    });
}

#[test]
fn busy_poll_clients_exchange_frames_without_kicks() {
    let sw = Switch::new("vale3");
    let a = vale_port(&sw, "a", 256);
    let b = vale_port(&sw, "b", 256);
    let (_ha, mut pa) = attach(Arc::clone(&a), Mode::BusyPoll);
    let (_hb, mut pb) = attach(Arc::clone(&b), Mode::BusyPoll);
    assert!(pa.info().busy_poll);
    exchange(&mut pa, &mut pb, mac(2), mac(1), 10_000, 64);
    assert_eq!(pa.kicks_sent(), 0, "busy-poll mode never asks for kicks");
}

#[test]
fn fragmented_frames_cross_the_switch_whole() {
    let sw = Switch::new("vale4");
    let a = vale_port(&sw, "a", 64);
    let b = vale_port(&sw, "b", 64);
    let (_ha, mut pa) = attach(Arc::clone(&a), Mode::default());
    let (_hb, mut pb) = attach(Arc::clone(&b), Mode::default());
    let mut head = [0u8; 60];
    frame(&mut head, mac(2), mac(1), 1, 60);
    let body = vec![0xabu8; 2048];
    let tail = vec![0xcdu8; 100];
    assert!(pa.tx_frags(0, &[&head, &body, &tail]));
    pa.txsync(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frags = Vec::new();
    while frags.len() < 3 {
        assert!(Instant::now() < deadline);
        pb.wait(Want::Rx, Some(Duration::from_millis(200))).unwrap();
        pb.rx_batch(0, u32::MAX, |buf, slot| {
            frags.push((buf.to_vec(), slot.flags))
        });
    }
    assert_eq!(frags.len(), 3);
    assert_eq!(frags[0].0, head);
    assert_eq!(frags[1].0, body);
    assert_eq!(frags[2].0, tail);
    use ptnet_spec::netmap::NS_MOREFRAG;
    assert!(frags[0].1 & NS_MOREFRAG != 0 && frags[1].1 & NS_MOREFRAG != 0);
    assert!(frags[2].1 & NS_MOREFRAG == 0);
    assert_eq!(b.stats().snapshot().rx_bytes, 60 + 2048 + 100);
}

#[test]
fn a_pipe_sender_waiting_for_room_for_a_whole_frame_is_woken() {
    // 16 slots and 5-slot frames: the sender often has room, but not enough. Its wait must
    // tell the daemon it would block, so that the receiver's releases wake it.
    let pipe = Pipe::new("pipe9", "0", 1, 16, 0, None).unwrap();
    let m: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.master),
        peer: Arc::clone(&pipe.slave),
    });
    let s: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.slave),
        peer: Arc::clone(&pipe.master),
    });
    let (_hm, mut pm) = attach(m, Mode::default());
    let (_hs, mut ps) = attach(s, Mode::default());
    let frag = [0x5au8; 100];
    let frames = 2000u32;
    let bstate = Arc::new(std::sync::Mutex::new(String::new()));
    let bstate2 = Arc::clone(&bstate);
    let receiver = std::thread::spawn(move || {
        let mut slots = 0u32;
        let deadline = Instant::now() + Duration::from_secs(30);
        while slots < frames * 5 {
            assert!(
                Instant::now() < deadline,
                "receiver stalled at {slots} slots"
            );
            ps.rxsync(0);
            // Consume a few slots at a time, so the sender keeps finding partial room.
            let n = ps.rx_batch(0, 3, |buf, _| assert_eq!(buf, &[0x5au8; 100][..]));
            slots += n;
            ps.rxsync(0);
            *bstate2.lock().unwrap() = ps.debug_ring(1);
            if n == 0 {
                ps.wait(Want::Rx, Some(Duration::from_millis(200))).unwrap();
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while sent < frames {
        assert!(Instant::now() < deadline, "sender stalled at {sent}");
        let f: &[u8] = &frag;
        if pm.tx_frags(0, &[f; 5]) {
            sent += 1;
            pm.txsync(0);
        } else {
            pm.txsync(0);
            let t = Instant::now();
            pm.wait(Want::Tx, Some(Duration::from_secs(5))).unwrap();
            assert!(
                t.elapsed() < Duration::from_secs(4),
                "sender slept through the receiver's releases at frame {sent}: A {} / B {} / {:?} {:?}",
                pm.debug_ring(0),
                bstate.lock().unwrap(),
                pipe.master.stats().snapshot(),
                pipe.slave.stats().snapshot()
            );
        }
    }
    receiver.join().expect("receiver");
}

/// A TSO frame from `src` to `dst` with its virtio-net header in front.
fn tso_frame(dst: [u8; 6], src: [u8; 6], payload: usize, mss: u16) -> Vec<u8> {
    let (h, f) = ptnet_datapath::switch::vnet::testing::tcp4_partial(dst, src, payload, mss);
    let mut out = h.to_le_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

/// Receives whole frames (fragment chains joined) until `want` arrived.
fn receive_frames(p: &mut Port, want: usize) -> Vec<Vec<u8>> {
    use ptnet_spec::netmap::NS_MOREFRAG;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut frames, mut cur) = (Vec::new(), Vec::new());
    while frames.len() < want {
        assert!(Instant::now() < deadline, "got {} of {want}", frames.len());
        p.wait(Want::Rx, Some(Duration::from_millis(200))).unwrap();
        p.rx_batch(0, u32::MAX, |buf, slot| {
            cur.extend_from_slice(buf);
            if slot.flags & NS_MOREFRAG == 0 {
                frames.push(std::mem::take(&mut cur));
            }
        });
        p.rxsync(0);
    }
    frames
}

#[test]
fn virtio_net_headers_cross_between_ports_that_carry_them_and_are_resolved_for_others() {
    use ptnet_datapath::switch::vnet::testing::check_tcp4;
    let sw = Switch::new("vale5");
    let a = vale_port(&sw, "a", 128);
    let b = vale_port(&sw, "b", 128);
    let c = vale_port(&sw, "c", 128);
    a.set_vnet_hdr_len(12).unwrap();
    c.set_vnet_hdr_len(12).unwrap();
    assert!(a.set_vnet_hdr_len(10).is_err());
    let (_ha, mut pa) = attach(Arc::clone(&a), Mode::default());
    let (_hb, mut pb) = attach(Arc::clone(&b), Mode::default());
    let (_hc, mut pc) = attach(Arc::clone(&c), Mode::default());

    // b and c announce themselves (b without a header, c with a zero one); a learns them.
    let mut hello = [0u8; 60];
    frame(&mut hello, mac(1), mac(2), 0, 60);
    assert!(pb.tx_frags(0, &[&hello]));
    pb.txsync(0);
    let got = receive_frames(&mut pa, 1);
    assert_eq!(got[0][..12], [0; 12], "a zero header in front");
    assert_eq!(got[0][12..], hello, "then the frame as sent");
    let got = receive_frames(&mut pc, 1);
    assert_eq!(got[0].len(), 72);
    let mut hello_c = vec![0u8; 12];
    hello_c.extend_from_slice(&hello);
    hello_c[18..24].copy_from_slice(&mac(3));
    assert!(pc.tx_frags(0, &[&hello_c]));
    pc.txsync(0);
    assert_eq!(
        receive_frames(&mut pa, 1)[0],
        hello_c,
        "header to header: untouched"
    );
    let got = receive_frames(&mut pb, 1);
    assert_eq!(got[0], hello_c[12..], "header stripped");

    // a sends one 4000-byte TSO frame (3 slots) to b: three valid segments arrive.
    let big = tso_frame(mac(2), mac(1), 4000, 1448);
    let parts: Vec<&[u8]> = big.chunks(2048).collect();
    assert!(pa.tx_frags(0, &parts));
    pa.txsync(0);
    let segs = receive_frames(&mut pb, 3);
    let mut payload = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let (seq, p) = check_tcp4(s).unwrap_or_else(|e| panic!("segment {i}: {e}"));
        assert_eq!(seq, 1000 + 1448 * i as u32);
        payload.extend_from_slice(p);
    }
    assert_eq!(payload, big[12 + 54..]);
    assert_eq!(segs[2][47], 0x18, "PSH on the last segment only");
    assert_eq!(segs[0][47], 0x10);

    // The same frame to c (a header too) crosses whole, header included.
    let mut to_c = big.clone();
    to_c[12..18].copy_from_slice(&mac(3));
    let parts: Vec<&[u8]> = to_c.chunks(2048).collect();
    assert!(pa.tx_frags(0, &parts));
    pa.txsync(0);
    assert_eq!(receive_frames(&mut pc, 1)[0], to_c);

    // A hostile header (checksum offset past the end) toward b is dropped and counted.
    let mut bad = big.clone();
    bad[8..10].copy_from_slice(&60000u16.to_le_bytes());
    bad[1] = 0;
    let parts: Vec<&[u8]> = bad.chunks(2048).collect();
    let drops = b.stats().snapshot().rx_drops;
    assert!(pa.tx_frags(0, &parts));
    pa.txsync(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats().snapshot().rx_drops == drops {
        assert!(Instant::now() < deadline, "the bad frame was not dropped");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_cannot_vouch_for_checksums_its_peers_would_then_skip() {
    use ptnet_spec::vnet::{
        VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_RSC_INFO,
    };
    // Both ports carry the virtio-net header (a ptnet guest's, a host client's). The sender
    // sets DATA_VALID and RSC_INFO, which only a device may set (virtio 1.x 5.1.6.2): the
    // receiver sees neither, NEEDS_CSUM and the rest of the header and frame as sent.
    let sw = Switch::new("vale8");
    let a = vale_port(&sw, "a", 64);
    let b = vale_port(&sw, "b", 64);
    a.set_vnet_hdr_len(12).unwrap();
    b.set_vnet_hdr_len(12).unwrap();
    let (_ha, mut pa) = attach(Arc::clone(&a), Mode::default());
    let (_hb, mut pb) = attach(Arc::clone(&b), Mode::default());
    for (sent, want) in [
        (VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_RSC_INFO, 0),
        (
            VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_NEEDS_CSUM,
            VIRTIO_NET_HDR_F_NEEDS_CSUM,
        ),
    ] {
        let mut f = vec![0u8; 12 + 60];
        f[0] = sent as u8;
        f[1..12].copy_from_slice(&[7; 11]);
        frame(&mut f[12..], [0xff; 6], mac(1), 0, 60);
        assert!(pa.tx_frags(0, &[&f]));
        pa.txsync(0);
        let got = receive_frames(&mut pb, 1);
        assert_eq!(got[0][0], want as u8, "flags {sent:#x} arrive as {want:#x}");
        assert_eq!(got[0][1..], f[1..], "everything else as sent");
    }
}

#[test]
fn a_frame_longer_than_a_slot_can_say_reaches_a_port_of_64_kib_buffers_whole() {
    // A port with 65536-byte buffers (a NIC port for jumbo frames) receives, through the
    // switch's software path, a frame of more than 65535 bytes: a slot's length is 16 bits,
    // so the frame must span two slots (it once arrived as 0 + the remainder).
    let sw = Switch::new("vale9");
    let a = vale_port(&sw, "a", 64);
    a.set_vnet_hdr_len(12).unwrap();
    let b: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw
            .add_port(
                "b",
                &VPortSpec {
                    slots: 64,
                    buf_size: 65536,
                    ..Default::default()
                },
            )
            .unwrap(),
    });
    let (_ha, mut pa) = attach(Arc::clone(&a), Mode::default());
    let (_hb, mut pb) = attach(Arc::clone(&b), Mode::default());
    // A plain frame (no offload asked) of 65549 bytes (the largest IPv4 datagram behind an
    // Ethernet header) behind a zero header, in 2048-byte slots, to b's address once b is
    // learned.
    let mut hello = [0u8; 60];
    frame(&mut hello, mac(1), mac(2), 0, 60);
    assert!(pb.tx_frags(0, &[&hello]));
    pb.txsync(0);
    assert_eq!(receive_frames(&mut pa, 1).len(), 1);
    let mut big = vec![0u8; 12 + 65549];
    frame(&mut big[12..], mac(2), mac(1), 7, 65549);
    let parts: Vec<&[u8]> = big.chunks(2048).collect();
    assert!(pa.tx_frags(0, &parts));
    pa.txsync(0);
    let got = receive_frames(&mut pb, 1);
    assert_eq!(got[0].len(), 65549);
    assert_eq!(got[0][..], big[12..]);
}

/// The ring occupancy the daemon reports (listings, metrics): frames delivered and not yet
/// released by the receiving client, from the daemon's own indices; zero once released.
#[test]
fn ring_use_counts_the_frames_a_client_has_not_released() {
    let sw = Switch::new("vale8");
    let spec = VPortSpec {
        slots: 64,
        ..Default::default()
    };
    let (pa, pb) = (
        sw.add_port("a", &spec).unwrap(),
        sw.add_port("b", &spec).unwrap(),
    );
    let sync = |p: &Arc<ptnet_datapath::switch::vale::VPort>| -> Arc<dyn SyncPort> {
        Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: Arc::clone(p),
        })
    };
    let (_ha, mut a) = attach(sync(&pa), Mode::default());
    let (_hb, mut b) = attach(sync(&pb), Mode::default());
    assert_eq!(
        a.tx_batch(0, 10, |i, buf| frame(buf, mac(2), mac(1), u64::from(i), 60)),
        10
    );
    a.txsync(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pb.ring_use().rx < 10 {
        assert!(Instant::now() < deadline, "{:?}", pb.ring_use());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pb.ring_use().rx, 10);
    let mut got = 0;
    while got < 10 {
        assert!(Instant::now() < deadline, "received {got}");
        b.wait(Want::Rx, Some(Duration::from_millis(100))).unwrap();
        got += b.rx_batch(0, u32::MAX, |_, _| {});
    }
    b.rxsync(0);
    while pb.ring_use().rx != 0 {
        assert!(Instant::now() < deadline, "{:?}", pb.ring_use());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pa.ring_use().tx, 0, "the sender's slots were consumed");
}
