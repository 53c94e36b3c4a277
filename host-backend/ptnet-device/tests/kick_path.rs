//! Measurement: who reads a VM's kicks. ptnet-device lets the port's sync loop sleep on the
//! kick eventfds itself; the alternative is vhost-user-backend's vring worker reading them
//! and passing each on to the sync loop (one more thread hop per kick). This compares both
//! with a host client (the same sync loop, no vhost-user at all), through the frontend
//! simulator, with the sync loops' lingering off so that every wake-up is a kick.
//!
//! ```sh
//! cargo test --release -p ptnet-device --features sim-tests --test kick_path -- --ignored --nocapture
//! ```
//!
//! Outside the measurement, `both_kick_paths_carry_traffic` (run by tier 2) keeps the
//! worker path honest.

#![cfg(feature = "sim-tests")]

mod sim;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_device::{ServeConfig, ServeHandle, serve};
use sim::{GuestPort, Vm, exchange, init_log};

const NO_LINGER: Mode = Mode::Eventfd {
    linger: Duration::ZERO,
};

fn vale_port(sw: &Arc<Switch>, name: &str) -> Arc<dyn SyncPort> {
    let spec = VPortSpec {
        slots: 256,
        ..Default::default()
    };
    Arc::new(ValePortSync {
        switch: Arc::clone(sw),
        port: sw.add_port(name, &spec).unwrap(),
    })
}

fn host(port: &Arc<dyn SyncPort>, mode: Mode) -> (HostClient, Port) {
    let (hc, files) = HostClient::attach(Arc::clone(port), mode).unwrap();
    let p = Port::from_parts(hc.info().clone(), files).unwrap();
    (hc, p)
}

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

/// The client side of the measured port: a VM through ptnet-device, or a host client.
enum Side {
    Vm(Box<(ServeHandle, Vm, GuestPort)>),
    Host {
        _client: HostClient,
        port: Box<Port>,
    },
}

impl Side {
    fn port(&mut self) -> &mut Port {
        match self {
            Side::Vm(b) => &mut b.2.port,
            Side::Host { port, .. } => port,
        }
    }
}

/// Who reads the kicks of the measured port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// A host client (no vhost-user).
    Host,
    /// A VM; the sync loop sleeps on the kick eventfds (ptnet-device's design).
    VmDirect,
    /// A VM; vhost-user-backend's worker reads the kicks and passes them on.
    VmViaWorker,
}

fn side(path: Path, port: &Arc<dyn SyncPort>, mode: Mode, tag: &str) -> Side {
    match path {
        Path::Host => {
            let (hc, p) = host(port, mode);
            Side::Host {
                _client: hc,
                port: Box::new(p),
            }
        }
        Path::VmDirect | Path::VmViaWorker => {
            let sock = sim::socket_path(tag);
            let cfg = ServeConfig {
                mode,
                kicks_via_worker: path == Path::VmViaWorker,
                ..Default::default()
            };
            let h = serve(&sock, Arc::clone(port), cfg).unwrap();
            let mut vm = Vm::connect(&sock);
            let g = vm.driver_start();
            Side::Vm(Box::new((h, vm, g)))
        }
    }
}

/// Round trips of one frame between `a` (measured) and a host client `b` that echoes it,
/// both sleeping on interrupts. Returns the RTTs.
fn ping_pong(a: &mut Port, b: &mut Port, n: u32) -> Vec<Duration> {
    let mut rtts = Vec::with_capacity(n as usize);
    thread::scope(|s| {
        s.spawn(|| {
            let mut echoed = 0;
            while echoed < n {
                b.rxsync(0);
                let mut got = 0;
                b.rx_batch(0, u32::MAX, |_, _| got += 1);
                b.rxsync(0);
                for _ in 0..got {
                    b.tx_batch(0, 1, |_, buf| sim::frame(buf, mac(1), mac(2), 0, 60));
                }
                if got > 0 {
                    b.txsync(0);
                    echoed += got;
                } else {
                    b.wait(Want::Rx, Some(Duration::from_secs(1))).unwrap();
                }
            }
        });
        for i in 0..n {
            let t = Instant::now();
            a.tx_batch(0, 1, |_, buf| {
                sim::frame(buf, mac(2), mac(1), u64::from(i), 60)
            });
            a.txsync(0);
            loop {
                a.rxsync(0);
                if a.rx_batch(0, u32::MAX, |_, _| {}) > 0 {
                    a.rxsync(0);
                    break;
                }
                a.wait(Want::Rx, Some(Duration::from_secs(1))).unwrap();
            }
            rtts.push(t.elapsed());
        }
    });
    rtts
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

struct Sample {
    rtt_p50_us: f64,
    rtt_p90_us: f64,
    stream_mpps: f64,
}

fn measure(path: Path, run: u32) -> Sample {
    let sw = Switch::new(&format!("vk{run}{path:?}"));
    let a_port = vale_port(&sw, "a");
    let b_port = vale_port(&sw, "b");
    // RTT with lingering off: every wake-up is a kick or an interrupt.
    let mut a = side(path, &a_port, NO_LINGER, &format!("rtt-{run}-{path:?}"));
    let (_hb, mut b) = host(&b_port, NO_LINGER);
    // Teach the switch both stations.
    exchange(a.port(), &mut b, mac(2), mac(1), 10, 60);
    exchange(&mut b, a.port(), mac(1), mac(2), 10, 60);
    let mut rtts = ping_pong(a.port(), &mut b, 3000);
    let rtt_p50_us = percentile(&mut rtts, 0.5).as_secs_f64() * 1e6;
    let rtt_p90_us = percentile(&mut rtts, 0.9).as_secs_f64() * 1e6;
    drop(a);
    drop(_hb);
    // A stream from the measured side, with the default (lingering) sync loops.
    let mut a = side(
        path,
        &a_port,
        Mode::default(),
        &format!("st-{run}-{path:?}"),
    );
    let (_hb, mut b) = host(&b_port, Mode::default());
    let n = 200_000;
    let t = Instant::now();
    exchange(a.port(), &mut b, mac(2), mac(1), n, 60);
    let stream_mpps = n as f64 / t.elapsed().as_secs_f64() / 1e6;
    Sample {
        rtt_p50_us,
        rtt_p90_us,
        stream_mpps,
    }
}

#[test]
fn both_kick_paths_carry_traffic() {
    init_log();
    for path in [Path::VmDirect, Path::VmViaWorker] {
        let sw = Switch::new(&format!("vk-smoke-{path:?}"));
        let a_port = vale_port(&sw, "a");
        let b_port = vale_port(&sw, "b");
        let mut a = side(path, &a_port, NO_LINGER, &format!("smoke-{path:?}"));
        let (_hb, mut b) = host(&b_port, NO_LINGER);
        let e = exchange(a.port(), &mut b, mac(2), mac(1), 2000, 60);
        assert_eq!(e.timeouts, 0, "{path:?}");
        assert_eq!(ping_pong(a.port(), &mut b, 100).len(), 100);
    }
}

/// The measurement behind docs/benchmarks.md ("who reads a VM's kicks"). It asserts no timing
/// (these machines are shared); CI runs it once per path in debug mode, which keeps the code
/// working; `PTNET_KICK_PATH_RUNS=3` with `--release --nocapture` gives the table's medians,
/// and `PTNET_KICK_PATH_OUT=FILE` also writes them as JSON lines (the plot's input:
/// `host-backend/bench/report.py --kick-path FILE --svg PLOT`).
#[test]
fn kick_path_rtt_and_stream_rate() {
    init_log();
    let paths = [Path::Host, Path::VmDirect, Path::VmViaWorker];
    let mut results: Vec<Vec<Sample>> = paths.iter().map(|_| Vec::new()).collect();
    let runs: u32 = std::env::var("PTNET_KICK_PATH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    // Interleaved runs: the machine is shared, its load drifts.
    for run in 0..runs {
        for (k, p) in paths.iter().enumerate() {
            results[k].push(measure(*p, run));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!("\n| kicks read by | rtt_p50_us (min-max) | rtt_p90_us | stream_mpps (min-max) |");
    println!("|---|---|---|---|");
    let mut lines = String::new();
    for (k, p) in paths.iter().enumerate() {
        let (r50, r50lo, r50hi) = med(&mut results[k].iter().map(|s| s.rtt_p50_us).collect());
        let (r90, _, _) = med(&mut results[k].iter().map(|s| s.rtt_p90_us).collect());
        let (m, mlo, mhi) = med(&mut results[k].iter().map(|s| s.stream_mpps).collect());
        let name = match p {
            Path::Host => "host client (sync loop, no vhost-user)",
            Path::VmDirect => "VM: sync loop on the kick eventfds",
            Path::VmViaWorker => "VM: vhost-user-backend worker, then sync loop",
        };
        println!(
            "| {name} | {r50:.1} ({r50lo:.1}-{r50hi:.1}) | {r90:.1} | {m:.2} ({mlo:.2}-{mhi:.2}) |"
        );
        lines.push_str(&format!(
            "{{\"path\": \"{name}\", \"runs\": {runs}, \"rtt_p50_us\": {r50:.1}, \
             \"rtt_p50_us_min\": {r50lo:.1}, \"rtt_p50_us_max\": {r50hi:.1}, \"rtt_p90_us\": {r90:.1}, \
             \"stream_mpps\": {m:.2}, \"stream_mpps_min\": {mlo:.2}, \"stream_mpps_max\": {mhi:.2}}}\n"
        ));
    }
    if let Some(out) = std::env::var_os("PTNET_KICK_PATH_OUT") {
        std::fs::write(&out, lines).expect("write PTNET_KICK_PATH_OUT");
    }
}
