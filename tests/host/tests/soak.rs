//! Tier 2, issue 13: a soak. The real daemon carries steady traffic on eight switch port pairs
//! and a pipe (client processes) while clients join and leave on-demand ports all along, and
//! VMs come and go on two virtio-net ports (DPDK's `virtio_user` in `dpdk-testpmd`, a run of
//! about three seconds sending to a host sink, started again and again, alternating ports),
//! for `PTNET_SOAK_SECONDS` (default 60; `PTNET_SOAK_SECONDS=600` for the ten-minute run,
//! `host-backend/bench/soak.sh`, which also sets `PTNET_SOAK_OUT` to keep the numbers as JSON). At the end: the daemon's resident memory and descriptor count
//! did not grow after the warm-up, every steady port still moves frames (no stuck ring), the
//! pipe lost nothing, and every frame each VM sent entered the switch, run after run.
#![cfg(feature = "host-tests")]

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, testpmd, totals};
use ptnet_client::Port;
use ptnet_client::proto::PortRequest;

/// `VmRSS` (KiB) and open descriptors of process `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

/// The VMs of the soak: the one running now (port index, its testpmd), and per port the runs
/// finished and the frames they sent.
#[derive(Default)]
struct Vms {
    running: Option<(usize, Child)>,
    runs: [u64; 2],
    sent: [u64; 2],
}

impl Vms {
    /// Collects the running VM's totals once it has exited (or waits for it with `wait`).
    fn reap(&mut self, wait: bool) {
        let Some((_, c)) = self.running.as_mut() else {
            return;
        };
        if !wait && c.try_wait().ok().flatten().is_none() {
            return;
        }
        let (k, c) = self.running.take().expect("a running VM");
        let out = c.wait_with_output().expect("dpdk-testpmd");
        self.runs[k] += 1;
        self.sent[k] += totals(&out).1;
    }
}

#[test]
fn steady_traffic_and_churning_clients_leave_the_daemon_flat() {
    let secs: u64 = std::env::var("PTNET_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .max(30);
    let d = Daemon::start("soak");
    let pid = d.child.id();
    let timeout = (secs + 60).to_string();
    // Eight pairs on vale0 (stations 10+i → 30+i), paced, until killed.
    let mut steady = Vec::new();
    for i in 0..8u8 {
        let (me, to) = ((10 + i).to_string(), (30 + i).to_string());
        steady.push(d.client(
            &[
                "recv",
                "-p",
                &format!("vale0:r{i}"),
                "--me",
                &to,
                "--to",
                &me,
                "-c",
                "1000000000",
                "--timeout",
                &timeout,
                "--announce-ms",
                "20",
            ],
            true,
        ));
        steady.push(d.client(
            &[
                "send",
                "-p",
                &format!("vale0:s{i}"),
                "--me",
                &me,
                "--to",
                &to,
                "-c",
                "0",
                "--burst",
                "32",
                "--pause-us",
                "1000",
                "--timeout",
                &timeout,
            ],
            false,
        ));
    }
    // A pipe: it never drops, so every frame must arrive.
    let pipe_frames = (secs * 20_000).to_string();
    let pipe_rx = d.client(
        &[
            "recv",
            "-p",
            "soak{1",
            "-c",
            &pipe_frames,
            "--timeout",
            &timeout,
        ],
        true,
    );
    let pipe_tx = d.client(
        &[
            "send",
            "-p",
            "soak}1",
            "-c",
            &pipe_frames,
            "--burst",
            "64",
            "--pause-us",
            "2000",
            "--timeout",
            &timeout,
        ],
        false,
    );

    // Two virtio-net ports for VMs that come and go, and a host sink for what they send.
    let vms = ["vale0:v0", "vale0:v1"];
    for (k, port) in vms.iter().enumerate() {
        let (ok, out) = d.ctl(&[
            "serve-virtio-net",
            port,
            "--socket",
            &format!("v{k}.sock"),
            "--mac",
            &format!("02:00:00:00:01:0{k}"),
        ]);
        assert!(ok, "serve-virtio-net {port}: {out}");
    }
    let sink = common::Proc::spawn(
        {
            let mut c = std::process::Command::new(common::target_bin("ptnet-pktgen"));
            c.args(["rx", "-i", "vale0:vsink", "--socket", &d.socket])
                .args(["-d", &(secs + 30).to_string(), "-q", "--json"])
                .args(["--src-mac", "02:00:00:00:02:00"]);
            c
        },
        false,
    );
    let mut vms_run = Vms::default();
    let pid_tag = std::process::id();
    let mut next_vm = Instant::now();

    // Clients join and leave on-demand ports for the whole run, up to CHURN at a time: with
    // the 16 steady ports, the pipe's two ends, two VM ports and the sink, 64 ports at the
    // peak.
    const CHURN: usize = 43;
    let mut peak_ports = 0usize;
    let start = Instant::now();
    let warm = Duration::from_secs(15);
    let mut warm_usage = None;
    let mut held: Vec<Port> = Vec::new();
    let mut joins = 0u64;
    let rx_at = |name: &str| d.port(name).map_or(0, |p| p.stats.rx_packets);
    // Waits until every churning client's port is gone (the daemon reclaims a port when its
    // client's connection closes, asynchronously): usage is compared in that same state.
    let settle = || {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let (sw, _) = d.list();
            let left = sw
                .iter()
                .flat_map(|s| &s.ports)
                .filter(|p| p.name.starts_with("vale0:c"))
                .count();
            if left == 0 {
                return;
            }
            assert!(Instant::now() < until, "{left} churned ports not reclaimed");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut last_rx: Vec<u64> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let name = format!("vale0:c{}", joins % CHURN as u64);
        if held.len() >= CHURN {
            held.remove(0);
        }
        // A name still held by an earlier client is busy: skip it this round.
        if let Ok(p) = Port::attach(
            &d.socket,
            PortRequest {
                port: name,
                ..Default::default()
            },
        ) {
            held.push(p);
        }
        joins += 1;
        if held.len() == CHURN {
            let (switches, pipe_ends) = d.list();
            let live = switches.iter().map(|s| s.ports.len()).sum::<usize>() + pipe_ends.len();
            peak_ports = peak_ports.max(live);
        }
        if joins % 60 == 0 {
            held.truncate(held.len() / 2);
        }
        vms_run.reap(false);
        if vms_run.running.is_none() && Instant::now() >= next_vm {
            let k = (vms_run.runs[0] + vms_run.runs[1]) as usize % 2;
            let mut c = testpmd(
                &d.dir.join(format!("v{k}.sock")),
                &format!("ptnet-soak-{pid_tag}-{k}"),
                &format!("02:00:00:00:01:0{k}"),
                "txonly",
                3,
            );
            c.args(["--txpkts=64", "--eth-peer=0,02:00:00:00:02:00"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            vms_run.running = Some((
                k,
                c.spawn().expect("start dpdk-testpmd (ci/prereqs.sh dpdk)"),
            ));
            next_vm = Instant::now() + Duration::from_secs(5);
        }
        if warm_usage.is_none() && start.elapsed() >= warm {
            held.clear();
            // Measured with no VM connected, as at the end (a VM's memory is mapped while
            // it runs).
            vms_run.reap(true);
            settle();
            warm_usage = Some(usage(pid));
            last_rx = (0..8).map(|i| rx_at(&format!("vale0:r{i}"))).collect();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    held.clear();
    vms_run.reap(true);
    settle();
    let (vm_runs, vm_sent) = (vms_run.runs, vms_run.sent);
    let (rss0, fds0) = warm_usage.expect("the run outlasts the warm-up");
    let (rss1, fds1) = usage(pid);
    eprintln!(
        "soak {secs} s: {joins} joins, {peak_ports} ports at the peak, VM runs {vm_runs:?} \
         sending {vm_sent:?} frames; daemon RSS {rss0} → {rss1} KiB, descriptors {fds0} → {fds1}"
    );
    if let Some(out) = std::env::var_os("PTNET_SOAK_OUT") {
        let line = serde_json::json!({
            "seconds": secs, "client_joins": joins, "vm_runs": vm_runs, "vm_frames": vm_sent,
            "rss_kib": [rss0, rss1], "descriptors": [fds0, fds1], "peak_ports": peak_ports,
        });
        std::fs::write(out, format!("{line}\n")).expect("write PTNET_SOAK_OUT");
    }
    // Every VM run connected, and every frame every run sent entered the switch.
    for (k, port) in vms.iter().enumerate() {
        let p = d.port(port).expect("a served virtio-net port");
        let v = p.vm.expect("served");
        assert_eq!(v.connections, vm_runs[k], "{port}: {v:?}");
        assert!(
            !v.running,
            "{port} still runs after its last VM left: {v:?}"
        );
        assert_eq!(v.bad_chains, 0, "{port}: {v:?}");
        assert_eq!(
            p.stats.tx_packets, vm_sent[k],
            "{port}: frames lost on the way in"
        );
    }
    assert!(vm_runs[0] >= 1 && vm_runs[1] >= 1, "VM runs: {vm_runs:?}");
    assert!(peak_ports >= 64, "only {peak_ports} ports lived at once");
    // Every steady receiver moved frames since the warm-up: no ring is stuck.
    for (i, before) in last_rx.iter().enumerate() {
        let now = rx_at(&format!("vale0:r{i}"));
        assert!(
            now > *before,
            "vale0:r{i} received nothing after the warm-up"
        );
    }
    assert!(
        rss1 <= rss0 + 32 * 1024,
        "the daemon grew from {rss0} to {rss1} KiB"
    );
    assert!(
        fds1 <= fds0 + 16,
        "the daemon's descriptors grew from {fds0} to {fds1}"
    );
    let (ok_tx, vtx) = pipe_tx.finish();
    let (ok_rx, vrx) = pipe_rx.finish();
    assert!(ok_tx && ok_rx, "pipe: {vtx} / {vrx}");
    assert_eq!(vrx["received"].as_u64(), Some(secs * 20_000), "{vrx}");
    assert_eq!(vrx["bad_payload"].as_u64(), Some(0), "{vrx}");
    let (_, sunk) = sink.finish();
    assert!(
        sunk["packets"].as_u64().unwrap_or(0) > 0,
        "the host sink got nothing from the VMs: {sunk}"
    );
    drop(steady);
    assert!(d.ctl(&["list"]).0);
}
