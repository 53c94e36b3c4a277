//! NIC ports over a fake interface (no privileges): frames cross between the "wire" and a host
//! client on the same switch, both ways, and the port survives its link going down, coming
//! back and its interface being re-created.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::nic::fake::FakeNic;
use ptnet_datapath::nic::{Link, NicPort};
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

fn frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_le_bytes());
    for (k, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(7).wrapping_add(k as u8);
    }
    f
}

fn seq_of(f: &[u8]) -> Option<u32> {
    let seq = u32::from_le_bytes(f.get(14..18)?.try_into().ok()?);
    f[18..]
        .iter()
        .enumerate()
        .all(|(k, b)| *b == (seq as u8).wrapping_mul(7).wrapping_add(k as u8))
        .then_some(seq)
}

struct Bench {
    _client: HostClient,
    port: Port,
    nic: FakeNic,
    nic_port: NicPort,
}

fn setup() -> Bench {
    let sw = Switch::new("vale0");
    let nic = FakeNic::new("fake0");
    let vport = sw.add_port("fake0", &VPortSpec::default()).unwrap();
    let nic_port = NicPort::start(Arc::clone(&sw), vport, Box::new(nic.clone())).unwrap();
    let host: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw.add_port("h", &VPortSpec::default()).unwrap(),
    });
    let (hc, files) = HostClient::attach(host, Mode::default()).unwrap();
    let port = Port::from_parts(hc.info().clone(), files).unwrap();
    Bench {
        _client: hc,
        port,
        nic,
        nic_port,
    }
}

fn receive(p: &mut Port, want: usize, deadline: Duration) -> Vec<Vec<u8>> {
    let until = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < until {
        p.rxsync(0);
        let n = p.rx_batch(0, u32::MAX, |b, _| got.push(b.to_vec()));
        if n > 0 {
            p.rxsync(0);
        } else {
            let _ = p.wait(Want::Rx, Some(Duration::from_millis(20)));
        }
    }
    got
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn frames_cross_between_the_wire_and_a_host_client_both_ways() {
    let mut b = setup();
    // Wire → host client (flooded: the switch does not know the client yet).
    b.nic.with(|w| {
        for i in 0..300 {
            w.inbound
                .push_back(frame(mac(2), mac(1), i, 60 + i as usize));
        }
    });
    let got = receive(&mut b.port, 300, Duration::from_secs(10));
    assert_eq!(got.len(), 300);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(seq_of(f), Some(i as u32));
        assert_eq!(f.len(), 60 + i);
    }
    // Host client → wire: mac(1) was learned on the NIC port.
    let mut sent = 0u32;
    while sent < 500 {
        let s0 = sent;
        sent += b.port.tx_batch(0, 500 - sent, |i, buf| {
            let f = frame(mac(1), mac(2), s0 + i, 1514);
            buf[..f.len()].copy_from_slice(&f);
            f.len() as u16
        });
        b.port.txsync(0);
    }
    wait_for("500 frames on the wire", || {
        b.nic.with(|w| w.outbound.len()) >= 500
    });
    let out = b.nic.with(|w| std::mem::take(&mut w.outbound));
    assert_eq!(out.len(), 500);
    for (i, f) in out.iter().enumerate() {
        assert_eq!(seq_of(f), Some(i as u32), "frame {i}");
        assert_eq!(f.len(), 1514);
    }
    let s = b.nic_port.snapshot();
    assert_eq!((s.rx_packets, s.tx_packets), (300, 500));
    assert_eq!((s.rx_drops, s.tx_drops), (0, 0));
    assert_eq!(s.link, Link::Up);
}

#[test]
fn oversized_and_runt_frames_from_the_wire_are_dropped_and_counted() {
    let mut b = setup();
    b.nic.with(|w| {
        w.inbound.push_back(frame(mac(2), mac(1), 0, 3000));
        w.inbound.push_back(vec![0u8; 10]);
        w.inbound.push_back(frame(mac(2), mac(1), 1, 100));
    });
    let got = receive(&mut b.port, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(seq_of(&got[0]), Some(1));
    wait_for("drops counted", || b.nic_port.snapshot().rx_drops == 2);
}

#[test]
fn unfinished_checksums_from_the_wire_are_finished_before_the_switch() {
    let mut b = setup();
    // A UDP datagram whose checksum field holds only the pseudo-header sum.
    let mut f = vec![0u8; 14 + 20 + 8 + 4];
    f[..6].copy_from_slice(&mac(2));
    f[6..12].copy_from_slice(&mac(1));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&32u16.to_be_bytes());
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    f[34..36].copy_from_slice(&1000u16.to_be_bytes());
    f[36..38].copy_from_slice(&2000u16.to_be_bytes());
    f[38..40].copy_from_slice(&12u16.to_be_bytes());
    f[42..46].copy_from_slice(b"ping");
    // Pseudo-header sum: addresses, protocol, UDP length.
    let pseudo: u32 = 0xc612 + 0x0001 + 0xc612 + 0x0002 + 17 + 12;
    f[40..42].copy_from_slice(&((pseudo & 0xffff) as u16 + (pseudo >> 16) as u16).to_be_bytes());
    b.nic.with(|w| {
        w.csum_partial = true;
        w.inbound.push_back(f.clone());
    });
    let got = receive(&mut b.port, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    // The one's complement sum of pseudo-header and datagram is now 0xffff.
    let mut sum: u32 = 0xc612 + 0x0001 + 0xc612 + 0x0002 + 17 + 12;
    for c in got[0][34..46].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff, "checksum finished");
    assert_eq!(got[0][..40], f[..40], "headers untouched");
}

#[test]
fn the_port_goes_down_with_its_link_and_comes_back() {
    let mut b = setup();
    b.nic
        .with(|w| w.inbound.push_back(frame(mac(2), mac(1), 0, 60)));
    assert_eq!(receive(&mut b.port, 1, Duration::from_secs(5)).len(), 1);

    b.nic.with(|w| w.link = Link::Down);
    wait_for("link down", || b.nic_port.snapshot().link == Link::Down);
    // Frames for the port while it is down are dropped, not queued for later.
    let n = b.port.tx_batch(0, 10, |i, buf| {
        let f = frame(mac(1), mac(2), i, 60);
        buf[..60].copy_from_slice(&f);
        60
    });
    b.port.txsync(0);
    assert_eq!(n, 10);
    wait_for("drops while down", || b.nic_port.snapshot().tx_drops == 10);

    // Back up as a new interface of the same name: the backend is opened again.
    b.nic.with(|w| {
        w.link = Link::Up;
        w.ifindex = 8;
    });
    wait_for("link up", || b.nic_port.snapshot().link == Link::Up);
    assert_eq!(b.nic.with(|w| w.opens), 2);
    b.nic
        .with(|w| w.inbound.push_back(frame(mac(2), mac(1), 5, 60)));
    let got = receive(&mut b.port, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(seq_of(&got[0]), Some(5));
    b.port.tx_batch(0, 1, |_, buf| {
        buf[..60].copy_from_slice(&frame(mac(1), mac(2), 6, 60));
        60
    });
    b.port.txsync(0);
    wait_for("a frame out after up", || {
        b.nic.with(|w| w.outbound.len()) == 1
    });
    let s = b.nic_port.snapshot();
    assert_eq!(s.link_changes, 2);
    assert!(s.opens >= 2);
}

#[test]
fn a_full_transmit_side_stops_the_worker_without_losing_what_it_took() {
    let mut b = setup();
    b.nic.with(|w| {
        w.tx_capacity = 100;
        w.inbound.push_back(frame(mac(2), mac(1), 0, 60));
    });
    assert_eq!(receive(&mut b.port, 1, Duration::from_secs(5)).len(), 1);
    let n = b.port.tx_batch(0, 300, |i, buf| {
        buf[..60].copy_from_slice(&frame(mac(1), mac(2), i, 60));
        60
    });
    assert_eq!(n, 300);
    b.port.txsync(0);
    wait_for("100 frames out", || b.nic.with(|w| w.outbound.len()) == 100);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        b.nic.with(|w| w.outbound.len()),
        100,
        "TX full: the rest waits"
    );
    // Room comes back: the rest leaves, in order.
    b.nic.with(|w| w.tx_capacity = usize::MAX);
    wait_for("all 300 out", || b.nic.with(|w| w.outbound.len()) == 300);
    let out = b.nic.with(|w| std::mem::take(&mut w.outbound));
    for (i, f) in out.iter().enumerate() {
        assert_eq!(seq_of(f), Some(i as u32));
    }
    assert_eq!(b.nic_port.snapshot().tx_drops, 0);
}

#[test]
fn stopping_the_port_unbinds_it_and_the_switch_keeps_forwarding() {
    let b = setup();
    let Bench {
        port,
        nic_port,
        _client,
        ..
    } = b;
    nic_port.stop();
    drop(port);
    drop(_client);
}
