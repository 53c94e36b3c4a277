//! Direct NIC ports (`netmap:eth0`) over fake interfaces (no privileges): a host client owns
//! the port; every frame of a wire reaches the client's RX ring of that wire, whatever its
//! addresses, and the client's flows are spread over the wires, each flow in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::nic::direct::{DirectNic, DirectSpec};
use ptnet_datapath::nic::fake::FakeNic;
use ptnet_datapath::nic::{BackendChoice, NicOpener};
use ptnet_datapath::port::SyncPort;

/// An IPv4/UDP frame of flow `sport` carrying `seq` (in the IP identification field).
fn udp(sport: u16, seq: u16, dst_mac: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst_mac]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[18..20].copy_from_slice(&seq.to_be_bytes());
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f
}

fn key(f: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([f[34], f[35]]),
        u16::from_be_bytes([f[18], f[19]]),
    )
}

struct Bench {
    _client: HostClient,
    port: Port,
    wires: Vec<FakeNic>,
    nic: DirectNic,
}

fn setup(rings: u32) -> Bench {
    let wires: Vec<FakeNic> = (0..rings).map(|_| FakeNic::new("fake0")).collect();
    let openers = wires
        .iter()
        .map(|w| Box::new(w.clone()) as Box<dyn NicOpener>)
        .collect();
    let spec = DirectSpec {
        rings,
        slots: 1024,
        buf_size: 2048,
        choice: BackendChoice::Auto,
    };
    let nic = DirectNic::start_with("fake0", &spec, openers).unwrap();
    let sync: Arc<dyn SyncPort> = Arc::new(nic.sync());
    let (hc, files) = HostClient::attach(sync, Mode::default()).unwrap();
    let port = Port::from_parts(hc.info().clone(), files).unwrap();
    Bench {
        _client: hc,
        port,
        wires,
        nic,
    }
}

/// Receives `want` frames from every RX ring; returns them per ring.
fn receive(p: &mut Port, want: usize) -> Vec<Vec<Vec<u8>>> {
    let until = Instant::now() + Duration::from_secs(10);
    let mut got = vec![Vec::new(); p.num_rx_rings() as usize];
    while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < until {
        let mut n = 0;
        for (r, g) in got.iter_mut().enumerate() {
            p.rxsync(r as u32);
            let k = p.rx_batch(r as u32, u32::MAX, |b, _| g.push(b.to_vec()));
            if k > 0 {
                p.rxsync(r as u32);
            }
            n += k;
        }
        if n == 0 {
            let _ = p.wait(Want::Rx, Some(Duration::from_millis(20)));
        }
    }
    got
}

#[test]
fn every_frame_of_each_wire_reaches_the_client_ring_of_that_wire() {
    let mut b = setup(2);
    // Unicast to a station nobody announced and frames whose source and destination are the
    // same station: a learning bridge would flood or drop some; a direct port delivers all.
    for (k, w) in b.wires.iter().enumerate() {
        w.with(|w| {
            for i in 0..200u16 {
                let mut f = udp(k as u16, i, 9);
                if i % 2 == 1 {
                    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
                }
                w.inbound.push_back(f);
            }
        });
    }
    let got = receive(&mut b.port, 400);
    for (k, g) in got.iter().enumerate() {
        assert_eq!(g.len(), 200, "ring {k}");
        for (i, f) in g.iter().enumerate() {
            assert_eq!(
                key(f),
                (k as u16, i as u16),
                "ring {k} in order, its wire's frames"
            );
        }
    }
    // The workers count a batch after handing it over.
    let until = Instant::now() + Duration::from_secs(5);
    while b.nic.snapshot().rx_packets < 400 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = b.nic.snapshot();
    assert_eq!((s.rx_packets, s.rx_drops), (400, 0));
    let per_ring: Vec<u64> = b
        .nic
        .ring_snapshots()
        .iter()
        .map(|s| s.rx_packets)
        .collect();
    assert_eq!(per_ring, [200, 200]);
}

#[test]
fn the_clients_flows_are_spread_over_the_wires_each_in_order() {
    let mut b = setup(2);
    let total = 64 * 20u32;
    let mut sent = 0u32;
    let until = Instant::now() + Duration::from_secs(10);
    while sent < total && Instant::now() < until {
        let s0 = sent;
        sent += b.port.tx_batch(0, total - sent, |i, buf| {
            let n = s0 + i;
            let f = udp((n % 64) as u16, (n / 64) as u16, 2);
            buf[..f.len()].copy_from_slice(&f);
            f.len() as u16
        });
        b.port.txsync(0);
        if sent < total {
            let _ = b.port.wait(Want::Tx, Some(Duration::from_millis(20)));
        }
    }
    let until = Instant::now() + Duration::from_secs(10);
    let count = |b: &Bench| -> usize {
        b.wires
            .iter()
            .map(|w| w.with_quiet(|w| w.outbound.len()))
            .sum()
    };
    while count(&b) < total as usize && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut flows_of_wire = Vec::new();
    for w in &b.wires {
        let out = w.with_quiet(|w| std::mem::take(&mut w.outbound));
        let mut next: BTreeMap<u16, u16> = BTreeMap::new();
        for f in &out {
            let (flow, seq) = key(f);
            let e = next.entry(flow).or_insert(0);
            assert_eq!(seq, *e, "flow {flow} in order on its wire");
            *e += 1;
        }
        assert!(next.values().all(|&n| n == 20), "whole flows on one wire");
        flows_of_wire.push(next.len());
    }
    assert_eq!(flows_of_wire.iter().sum::<usize>(), 64, "{flows_of_wire:?}");
    assert!(
        flows_of_wire.iter().all(|&n| n >= 16),
        "both wires carry flows: {flows_of_wire:?}"
    );
    let until = Instant::now() + Duration::from_secs(5);
    while b.nic.snapshot().tx_packets < u64::from(total) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = b.nic.snapshot();
    assert_eq!((s.tx_packets, s.tx_drops), (u64::from(total), 0));
}
