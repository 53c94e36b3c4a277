//! virtio-net ports with a real client nobody here wrote: DPDK's `virtio_user` PMD in
//! `dpdk-testpmd` (a userspace virtio-net driver and vhost-user frontend), through vale0, to
//! and from a host client, with the counts checked at every hop. Needs `dpdk-testpmd`
//! (`ci/prereqs.sh dpdk`, package dpdk-dev): without it the test fails, it does not skip.
#![cfg(feature = "host-tests")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, Proc, TESTPMD, target_bin, testpmd, totals};
use ptnet_client::proto::PortEntry;

fn port(d: &Daemon, name: &str) -> PortEntry {
    d.port(name)
        .unwrap_or_else(|| panic!("{name} missing: {:?}", d.list()))
}

/// Waits until the frontend started the device on `name`.
fn wait_running(d: &Daemon, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !port(d, name).vm.is_some_and(|v| v.running) {
        assert!(
            Instant::now() < deadline,
            "testpmd did not start the virtio-net device on {name}: {:?}",
            port(d, name).vm
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The same exchanges with a worker thread per queue pair (the default) and with every pair
/// in one poll group (`poll_groups = 1`), one after the other.
#[test]
fn dpdk_virtio_user_exchanges_counted_frames_with_a_host_client_through_vale0() {
    let have = Command::new(TESTPMD)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        have.is_ok(),
        "{TESTPMD} not found: install it with `ci/prereqs.sh dpdk` (package dpdk-dev)"
    );
    let d = Daemon::start("virtio-net");
    exchanges(&d, "t");
    drop(d);

    let d = Daemon::start_with_config(
        "virtio-net-group",
        "[daemon]\npoll_groups = 1\n\n[[switch]]\nname = \"vale0\"\n",
    );
    exchanges(&d, "g");
    // One thread served every pair: each joined the group and left it when its testpmd
    // went away; no pair had a thread of its own.
    let log = std::fs::read_to_string(d.dir.join("ptnetd.log")).unwrap();
    for line in [
        "vnet-g0: vale0:vm1 pair 0 joined",
        "vnet-g0: vale0:vm1 pair 0 left",
        "vnet-g0: vale0:vm2 pair 0 left",
        "vnet-g0: vale0:mq pair 1 joined",
        "vnet-g0: vale0:mq pair 1 left",
    ] {
        assert!(log.contains(line), "{line:?} missing:\n{log}");
    }
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", d.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    assert!(threads.iter().any(|t| t == "vnet-g0"), "{threads:?}");
    assert!(
        !threads
            .iter()
            .any(|t| t.starts_with("vnet0") || t.starts_with("vnet1")),
        "{threads:?}"
    );
}

/// Guest → host, host → guest and two queue pairs, each counted at every hop, on daemon `d`
/// (`tag` keeps DPDK's runtime folders apart).
fn exchanges(d: &Daemon, tag: &str) {
    let pid = format!("{}{tag}", std::process::id());
    let sock1 = d.dir.join("vm1.sock");
    let sock2 = d.dir.join("vm2.sock");
    for (port, sock, mac) in [
        ("vale0:vm1", &sock1, "02:00:00:00:01:01"),
        ("vale0:vm2", &sock2, "02:00:00:00:01:02"),
    ] {
        let (ok, out) = d.ctl(&[
            "serve-virtio-net",
            port,
            "--socket",
            &sock.file_name().unwrap().to_string_lossy(),
            "--mac",
            mac,
        ]);
        assert!(ok, "serve-virtio-net {port}: {out}");
    }
    // Persistent host ports: their counters outlive the host clients.
    for p in ["vale0:h1", "vale0:h2"] {
        let (ok, out) = d.ctl(&["create-port", p]);
        assert!(ok, "create-port {p}: {out}");
    }
    let (ok, list) = d.ctl(&["list"]);
    assert!(ok && list.contains("virtio-net"), "listed: {list}");

    // Guest → host: testpmd txonly on vm1 for 3 s, a host client counting on h1.
    let pktgen = target_bin("ptnet-pktgen");
    let mut rx = Command::new(&pktgen);
    rx.args(["rx", "-i", "vale0:h1", "--socket", &d.socket])
        .args([
            "--idle",
            "2",
            "--json",
            "-q",
            "--src-mac",
            "02:00:00:00:02:01",
        ]);
    let rx = Proc::spawn(rx, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !port(d, "vale0:h1").attached {
        assert!(Instant::now() < deadline, "the host client did not attach");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut tx = testpmd(
        &sock1,
        &format!("ptnet-{pid}-tx"),
        "02:00:00:00:01:01",
        "txonly",
        3,
    );
    tx.args(["--txpkts=64", "--eth-peer=0,02:00:00:00:02:01"]);
    let out = tx.output().expect("run dpdk-testpmd");
    let (_, sent) = totals(&out);
    let (ok, v) = rx.finish();
    assert!(ok, "host receiver: {v}");
    let received = v["packets"].as_u64().expect("packets");
    let vm1 = port(d, "vale0:vm1");
    let h1 = port(d, "vale0:h1");
    eprintln!("guest→host: testpmd sent {sent}, host client received {received}, {vm1:?}, {h1:?}");
    assert!(sent > 1000, "testpmd sent only {sent} frames");
    assert_eq!(
        vm1.stats.tx_packets, sent,
        "every frame the guest sent entered the switch"
    );
    assert_eq!(vm1.vm.as_ref().map(|v| v.bad_chains), Some(0));
    assert_eq!(
        h1.stats.rx_packets + h1.stats.rx_drops,
        sent,
        "the switch forwarded or (ring full) dropped each one"
    );
    assert_eq!(
        received, h1.stats.rx_packets,
        "the host client got every delivered frame"
    );

    // Host → guest: a host client sends a known number, rate-limited, to testpmd rxonly.
    const N: u64 = 20_000;
    let rxpmd = testpmd(
        &sock2,
        &format!("ptnet-{pid}-rx"),
        "02:00:00:00:01:02",
        "rxonly",
        // Start-up (EAL init, device start), 2 s of settling, 1 s of traffic, and room for a
        // loaded machine: testpmd counts only what it polled before the SIGINT.
        12,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start dpdk-testpmd");
    wait_running(d, "vale0:vm2", Duration::from_secs(6));
    // testpmd flushes its receive queues when forwarding starts, a moment after the device
    // started: frames that arrive before that are discarded uncounted.
    std::thread::sleep(Duration::from_secs(2));
    let generator = Command::new(&pktgen)
        .args(["tx", "-i", "vale0:h2", "--socket", &d.socket])
        .args([
            "-n",
            &N.to_string(),
            "-R",
            "20000",
            "-l",
            "60",
            "--json",
            "-q",
        ])
        .args([
            "--src-mac",
            "02:00:00:00:02:02",
            "--dst-mac",
            "02:00:00:00:01:02",
        ])
        .output()
        .expect("run ptnet-pktgen tx");
    assert!(
        generator.status.success(),
        "ptnet-pktgen tx: {}",
        String::from_utf8_lossy(&generator.stderr)
    );
    let out = rxpmd.wait_with_output().expect("dpdk-testpmd rxonly");
    let (got, _) = totals(&out);
    let vm2 = port(d, "vale0:vm2");
    eprintln!("host→guest: {N} sent, testpmd received {got}, {vm2:?}");
    assert_eq!(
        vm2.stats.rx_packets + vm2.stats.rx_drops,
        N,
        "every frame reached the guest's port"
    );
    assert_eq!(
        got, vm2.stats.rx_packets,
        "the guest got every frame its port took"
    );
    assert!(got >= N / 2, "at 20 kpps most frames arrive: {got} of {N}");
    assert_eq!(vm2.vm.as_ref().map(|v| v.bad_chains), Some(0));

    // Two queue pairs (MQ, with virtio_user's control queue): a port with two ring pairs,
    // testpmd transmitting on both queues; every frame enters the switch.
    let (ok, out) = d.ctl(&["create-port", "vale0:mq", "--rings", "2"]);
    assert!(ok, "create-port: {out}");
    let sock3 = d.dir.join("mq.sock");
    let (ok, out) = d.ctl(&[
        "serve-virtio-net",
        "vale0:mq",
        "--socket",
        "mq.sock",
        "--mac",
        "02:00:00:00:01:03",
    ]);
    assert!(ok, "serve-virtio-net vale0:mq: {out}");
    let mut mq = Command::new("timeout");
    mq.args(["-s", "INT", "3", TESTPMD])
        .args(["-l", "0,1", "--no-huge", "-m", "512", "--no-pci"])
        .arg(format!("--file-prefix=ptnet-{pid}-mq"))
        .arg("--vdev")
        .arg(format!(
            "net_virtio_user0,path={},queues=2,cq=1,mac=02:00:00:00:01:03",
            sock3.display()
        ))
        .args([
            "--",
            "--nb-cores=1",
            "--total-num-mbufs=16384",
            "--stats-period",
            "1",
        ])
        .args(["--rxq=2", "--txq=2", "--forward-mode=txonly", "--txpkts=64"])
        .stdin(Stdio::null());
    let out = mq.output().expect("run dpdk-testpmd with two queues");
    let (_, sent) = totals(&out);
    let port_mq = port(d, "vale0:mq");
    eprintln!("two queue pairs: testpmd sent {sent}, {port_mq:?}");
    assert!(sent > 1000, "testpmd sent only {sent} frames on two queues");
    assert_eq!(
        port_mq.stats.tx_packets, sent,
        "both queue pairs' frames entered the switch"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TX-packets"),
        "testpmd output"
    );
}
