//! Tier 2: AF_PACKET sockets with TPACKET_V3 rings carry frames across a veth pair the test
//! creates (and removes) itself.
#![cfg(feature = "host-tests")]

use std::process::Command;
use std::time::{Duration, Instant};

use ptnet_datapath::nic::afpacket::{Direction, PacketRing, RingConfig};

struct Veth(&'static str);

impl Veth {
    fn new(a: &'static str, b: &str) -> Self {
        let _ = Command::new("ip").args(["link", "del", a]).status();
        let ok = |args: &[&str]| {
            assert!(
                Command::new("ip")
                    .args(args)
                    .status()
                    .expect("ip")
                    .success(),
                "ip {args:?}"
            )
        };
        ok(&["link", "add", a, "type", "veth", "peer", "name", b]);
        ok(&["link", "set", a, "up"]);
        ok(&["link", "set", b, "up"]);
        Veth(a)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

#[test]
fn tpacket_v3_rings_carry_frames_across_a_veth_pair() {
    let _v = Veth::new("ptt2-a", "ptt2-b");
    let mut tx = PacketRing::open("ptt2-a", Direction::Tx, RingConfig::default()).unwrap();
    let mut rx = PacketRing::open("ptt2-b", Direction::Rx, RingConfig::default()).unwrap();
    let total = 5000u32;
    let mut sent = 0u32;
    let mut seen = 0u32;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen < total {
        assert!(Instant::now() < deadline, "received {seen} of {total}");
        if sent < total {
            let s0 = sent;
            sent += tx
                .tx_burst((total - sent).min(64), |buf| {
                    buf[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
                    buf[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
                    buf[12..14].copy_from_slice(&[0x88, 0xb5]);
                    buf[14..18].copy_from_slice(&s0.to_le_bytes());
                    100
                })
                .unwrap();
        }
        rx.rx_burst(|f| {
            // The kernel may also deliver its own traffic (IPv6 router solicitations...).
            if f.len() == 100 && f[12..14] == [0x88, 0xb5] {
                seen += 1;
            }
        });
        let _ = rx.poll(5);
    }
    assert_eq!(seen, total);
}
