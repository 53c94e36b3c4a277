//! `ptnet-bench`: throughput of ptnet's host datapath, measured with the real sync loops and
//! the real client library in one process (clients and daemon threads share nothing but the
//! regions, CSBs and eventfds, exactly as across processes).
//!
//! Each scenario prints one JSON line: rate, bytes, drops, and the CPU seconds used by the
//! client threads and by the daemon's sync loops (from /proc/self/task). `bench/run.sh` turns
//! the lines, and the peers' results, into the table of docs/benchmarks.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::pipe::{Pipe, PipePortSync};
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Pipe master → slave (zero copy).
    Pipe,
    /// VALE: one sender, one receiver.
    Vale,
    /// VALE: one sender to N receivers (round robin by MAC).
    OneToN,
    /// VALE: N senders to one receiver.
    NToOne,
    /// Peer: the kernel path, AF_PACKET with TPACKET_V3 rings over a veth pair
    /// (`--tx-if`/`--rx-if`, created by the caller; root).
    AfPacket,
    /// A NIC port: a generator in namespace `--netns` transmits on `--gen-if` (a veth whose
    /// peer `--nic-if` is attached to a switch with `--backend`); a host client on the switch
    /// receives (root; `bench/nic.sh` makes the namespace).
    Nic,
    /// Peer of `nic`: the same generator, the kernel's Linux bridge between two veths, and an
    /// AF_PACKET TPACKET_V3 receiver on `--rx-if` in namespace `--rx-netns`.
    Bridge,
}

/// ptnet host datapath benchmark.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Frame size in bytes (without CRC).
    #[arg(short = 'l', long, default_value_t = 60)]
    size: u16,
    /// Slots per client batch.
    #[arg(short, long, default_value_t = 512)]
    batch: u32,
    /// Ports on the far side (OneToN, NToOne).
    #[arg(short, long, default_value_t = 1)]
    ports: u32,
    /// Seconds measured (after a short warm-up).
    #[arg(short, long, default_value_t = 3.0)]
    duration: f64,
    /// Sync loops and clients busy-poll instead of sleeping.
    #[arg(long)]
    busy_poll: bool,
    /// Slots per ring.
    #[arg(long, default_value_t = 1024)]
    slots: u32,
    /// af-packet: the interface to transmit on.
    #[arg(long, default_value = "ptbench-a")]
    tx_if: String,
    /// af-packet: the interface to receive on.
    #[arg(long, default_value = "ptbench-b")]
    rx_if: String,
    /// Microseconds a client polls before sleeping in `wait` (eventfd mode). On a machine with
    /// fewer cores than busy threads this takes CPU from the threads it waits for.
    #[arg(long, default_value_t = 0)]
    client_linger_us: u64,
    /// nic/bridge: the generator's namespace.
    #[arg(long, default_value = "ptbench-gen")]
    netns: String,
    /// nic/bridge: the generator's interface in its namespace.
    #[arg(long, default_value = "eth0")]
    gen_if: String,
    /// nic: the interface attached to the switch.
    #[arg(long, default_value = "ptbench-nic")]
    nic_if: String,
    /// nic: the backend (af_packet, af_xdp).
    #[arg(long, default_value = "af_packet")]
    backend: String,
    /// bridge: the receiver's namespace.
    #[arg(long, default_value = "ptbench-rx")]
    rx_netns: String,
    /// Microseconds an idle sync loop polls before sleeping (eventfd mode).
    #[arg(long, default_value_t = ptnet_datapath::kloop::DEFAULT_LINGER.as_micros() as u64)]
    linger_us: u64,
}

#[derive(Debug, Serialize)]
struct Result {
    scenario: String,
    mode: &'static str,
    size: u16,
    batch: u32,
    ports: u32,
    seconds: f64,
    tx_packets: u64,
    rx_packets: u64,
    /// Frames the senders got accepted (by the switch: delivered or dropped at a full ring).
    tx_mpps: f64,
    rx_mpps: f64,
    rx_gbps: f64,
    drops: u64,
    /// CPU seconds per second of the client threads.
    client_cpu: f64,
    /// CPU seconds per second of the daemon's sync loops.
    daemon_cpu: f64,
    /// Nanoseconds of CPU (all threads) per delivered packet.
    cpu_ns_per_packet: f64,
    /// Nanoseconds of the daemon's CPU per frame sent: the switch's (or pipe's) own cost.
    daemon_ns_per_packet: f64,
    /// nic/bridge: CPU of the generator thread (its kernel work included: the veth transmit
    /// and, mostly, the receiving side's softirq work run in its context).
    #[serde(skip_serializing_if = "Option::is_none")]
    gen_cpu: Option<f64>,
    /// nic/bridge: softirq CPU of the machine (the kernel's packet processing).
    #[serde(skip_serializing_if = "Option::is_none")]
    softirq_cpu: Option<f64>,
    /// nic/bridge: busy CPU of the whole machine (/proc/stat), in cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    total_cpu: Option<f64>,
}

fn mac(i: u32) -> [u8; 6] {
    [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn attach(port: Arc<dyn SyncPort>, mode: Mode, client_linger: Duration) -> (HostClient, Port) {
    let (hc, files) = HostClient::attach(port, mode).expect("attach");
    let mut p = Port::from_parts(hc.info().clone(), files).expect("client side");
    p.set_linger(client_linger);
    (hc, p)
}

/// CPU seconds used so far by this process's threads, by name prefix.
fn thread_cpu() -> HashMap<String, f64> {
    let hz = ptnet_datapath::sys::clock_ticks();
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(l), Some(r)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[l + 1..r];
        let f: Vec<&str> = stat[r + 2..].split(' ').collect();
        let t = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        let key = if name.starts_with("kloop") || name.starts_with("nic-") {
            "daemon"
        } else if name.starts_with("bench-gen") {
            "gen"
        } else if name.starts_with("bench-") {
            "client"
        } else {
            "other"
        };
        *out.entry(key.to_owned()).or_insert(0.0) += t / hz;
    }
    out
}

struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
    tx: AtomicU64,
    rx: AtomicU64,
}

/// Sends frames on ring 0 of each port in `ports`, to `dsts` round robin, until told to stop.
fn sender(
    mut ports: Vec<Port>,
    dsts: Vec<[u8; 6]>,
    src: [u8; 6],
    size: u16,
    batch: u32,
    busy: bool,
    sh: &Shared,
) {
    let mut next = 0usize;
    let mut initialised = vec![false; ports.len()];
    while !sh.stop.load(Ordering::Relaxed) {
        let mut sent = 0u64;
        for (k, p) in ports.iter_mut().enumerate() {
            let first = !initialised[k];
            let n = p.tx_batch(0, batch, |_, buf| {
                if first || dsts.len() > 1 {
                    buf[..6].copy_from_slice(&dsts[next % dsts.len()]);
                    buf[6..12].copy_from_slice(&src);
                    buf[12..14].copy_from_slice(&[0x88, 0xb5]);
                    next += 1;
                }
                size
            });
            // Also when nothing was queued: txsync is how a busy-polling client learns that
            // room came back.
            p.txsync(0);
            if p.tx_space(0) == 0 && n == 0 {
                initialised[k] = true;
            }
            sent += u64::from(n);
        }
        if sh.measuring.load(Ordering::Relaxed) {
            sh.tx.fetch_add(sent, Ordering::Relaxed);
        }
        if sent == 0 {
            idle(&mut ports, busy, Want::Tx);
        }
    }
}

/// A side that moved nothing: one port in eventfd mode sleeps on it, otherwise the thread
/// yields (several ports have no one fd to sleep on).
fn idle(ports: &mut [Port], busy: bool, want: Want) {
    match ports {
        [p] if !busy => {
            let _ = p.wait(want, Some(Duration::from_millis(100)));
        }
        _ => thread::yield_now(),
    }
}

/// Receives on ring 0 of each port until told to stop.
fn receiver(mut ports: Vec<Port>, busy: bool, sh: &Shared) {
    while !sh.stop.load(Ordering::Relaxed) {
        let mut got = 0u64;
        for p in ports.iter_mut() {
            p.rxsync(0);
            let n = p.rx_batch(0, u32::MAX, |_, _| {});
            if n > 0 {
                p.rxsync(0);
            }
            got += u64::from(n);
        }
        if sh.measuring.load(Ordering::Relaxed) {
            sh.rx.fetch_add(got, Ordering::Relaxed);
        }
        if got == 0 {
            idle(&mut ports, busy, Want::Rx);
        }
    }
}

/// The kernel peer: one thread transmits on `tx_if` through a TPACKET_V3 TX ring, one
/// receives on `rx_if` through a TPACKET_V3 RX ring.
fn af_packet(a: &Args) -> Result {
    use ptnet_datapath::nic::afpacket::{Direction, PacketRing, RingConfig};
    let mut tx =
        PacketRing::open(&a.tx_if, Direction::Tx, RingConfig::default()).unwrap_or_else(|e| {
            panic!(
                "AF_PACKET TX ring on {}: {e} (root, and an existing interface)",
                a.tx_if
            )
        });
    let mut rx = PacketRing::open(&a.rx_if, Direction::Rx, RingConfig::default())
        .unwrap_or_else(|e| panic!("AF_PACKET RX ring on {}: {e}", a.rx_if));
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        tx: AtomicU64::new(0),
        rx: AtomicU64::new(0),
    });
    let (size, batch) = (usize::from(a.size), a.batch);
    let sh_t = Arc::clone(&sh);
    let t = thread::Builder::new()
        .name("bench-tx".into())
        .spawn(move || {
            packet_sender(&mut tx, batch, mac(2), size, &sh_t);
        })
        .expect("spawn");
    let sh_r = Arc::clone(&sh);
    let r = thread::Builder::new()
        .name("bench-rx".into())
        .spawn(move || {
            while !sh_r.stop.load(Ordering::Relaxed) {
                let n = rx.rx_burst(|_| {});
                if sh_r.measuring.load(Ordering::Relaxed) {
                    sh_r.rx.fetch_add(n as u64, Ordering::Relaxed);
                }
                if n == 0 {
                    let _ = rx.poll(10);
                }
            }
        })
        .expect("spawn");
    thread::sleep(Duration::from_millis(500));
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    sh.measuring.store(true, Ordering::Relaxed);
    thread::sleep(Duration::from_secs_f64(a.duration));
    sh.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = thread_cpu();
    sh.stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    let _ = r.join();
    let d = |k: &str| cpu1.get(k).copied().unwrap_or(0.0) - cpu0.get(k).copied().unwrap_or(0.0);
    let (txp, rxp) = (sh.tx.load(Ordering::Relaxed), sh.rx.load(Ordering::Relaxed));
    Result {
        scenario: "veth-af_packet-v3".into(),
        mode: "kernel",
        size: a.size,
        batch: a.batch,
        ports: 1,
        seconds: secs,
        tx_packets: txp,
        rx_packets: rxp,
        tx_mpps: txp as f64 / secs / 1e6,
        rx_mpps: rxp as f64 / secs / 1e6,
        rx_gbps: rxp as f64 * (f64::from(a.size) + 24.0) * 8.0 / secs / 1e9,
        drops: txp.saturating_sub(rxp),
        // Both threads are clients of the kernel; the kernel's own work shows up as their
        // system time (and in softirq threads, not counted).
        client_cpu: d("client") / secs,
        daemon_cpu: 0.0,
        cpu_ns_per_packet: if rxp > 0 {
            d("client") * 1e9 / rxp as f64
        } else {
            0.0
        },
        daemon_ns_per_packet: 0.0,
        gen_cpu: None,
        softirq_cpu: None,
        total_cpu: None,
    }
}

/// Sends frames of `size` bytes to `dst` on an AF_PACKET TX ring, `batch` at a time, until
/// told to stop, counting them while measuring.
fn packet_sender(
    tx: &mut ptnet_datapath::nic::afpacket::PacketRing,
    batch: u32,
    dst: [u8; 6],
    size: usize,
    sh: &Shared,
) {
    while !sh.stop.load(Ordering::Relaxed) {
        let n = tx
            .tx_burst(batch, |buf| {
                buf[..6].copy_from_slice(&dst);
                buf[6..12].copy_from_slice(&mac(1));
                buf[12..14].copy_from_slice(&[0x88, 0xb5]);
                size
            })
            .unwrap_or(0);
        if sh.measuring.load(Ordering::Relaxed) {
            sh.tx.fetch_add(u64::from(n), Ordering::Relaxed);
        }
        if n == 0 {
            let _ = tx.poll(10);
        }
    }
}

/// Moves the calling thread into network namespace `name` (made by `ip netns add`).
fn enter_netns(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("namespace {name}: {e} (bench/nic.sh makes it)"));
    if let Err(e) = ptnet_datapath::sys::enter_net_namespace(&f) {
        panic!("setns {name}: {e}");
    }
}

/// CPU seconds the machine spent in softirq (the kernel's packet processing, which this
/// kernel accounts apart from the tasks it interrupts), and busy CPU seconds of the machine,
/// from /proc/stat.
fn kernel_cpu() -> (f64, f64) {
    let hz = ptnet_datapath::sys::clock_ticks();
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let l = s.lines().next()?.to_owned();
            let v: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal guest guest_nice: busy = all but
            // idle and iowait (guest time is already in user).
            let busy = v.iter().take(8).sum::<f64>() - v.get(3)? - v.get(4)?;
            Some((v.get(6)? / hz, busy / hz))
        })
        .unwrap_or((0.0, 0.0))
}

/// A generator thread in namespace `ns`: TPACKET_V3 TX ring on `ifname`, frames to `dst`.
fn generator(
    ns: String,
    ifname: String,
    dst: [u8; 6],
    size: usize,
    batch: u32,
    sh: Arc<Shared>,
) -> thread::JoinHandle<()> {
    use ptnet_datapath::nic::afpacket::{Direction, PacketRing, RingConfig};
    thread::Builder::new()
        .name("bench-gen".into())
        .spawn(move || {
            enter_netns(&ns);
            let mut tx = PacketRing::open(&ifname, Direction::Tx, RingConfig::default())
                .unwrap_or_else(|e| panic!("TX ring on {ifname} in {ns}: {e}"));
            packet_sender(&mut tx, batch, dst, size, &sh);
        })
        .expect("spawn")
}

/// `nic` and `bridge`: a generator in a namespace, and either a NIC port + host client or the
/// kernel bridge + an AF_PACKET receiver.
fn nic_path(a: &Args) -> Result {
    use ptnet_datapath::nic::{HostInterface, NicPort};
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        tx: AtomicU64::new(0),
        rx: AtomicU64::new(0),
    });
    let dst = mac(1000);
    let mut keep = None;
    let mut drops_of: Vec<Arc<dyn SyncPort>> = Vec::new();
    let recv = if a.scenario == Scenario::Nic {
        let sw = Switch::new("vale0");
        let spec = VPortSpec {
            slots: a.slots,
            ..Default::default()
        };
        let vport = sw.add_port(&a.nic_if, &spec).expect("port");
        let nic = NicPort::start(
            Arc::clone(&sw),
            vport,
            Box::new(HostInterface {
                ifname: a.nic_if.clone(),
                choice: a.backend.parse().expect("backend"),
                max_frame: ptnet_datapath::mem::DEFAULT_BUF_SIZE,
            }),
        )
        .unwrap_or_else(|e| {
            panic!(
                "NIC port on {}: {}",
                a.nic_if,
                ptnet_datapath::nic::error_chain(&e)
            )
        });
        let s = nic.snapshot();
        assert_eq!(
            s.backend.map(|b| b.name()),
            Some(a.backend.as_str()),
            "backend: {:?}",
            s.note
        );
        let rxp: Arc<dyn SyncPort> = Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port("rx", &spec).expect("port"),
        });
        drops_of.push(Arc::clone(&rxp));
        let (h, mut p) = attach(rxp, Mode::default(), Duration::ZERO);
        p.tx_batch(0, 1, |_, buf| {
            buf[..6].copy_from_slice(&[0xff; 6]);
            buf[6..12].copy_from_slice(&dst);
            60
        });
        p.txsync(0);
        keep = Some((h, nic));
        let sh_r = Arc::clone(&sh);
        thread::Builder::new()
            .name("bench-rx".into())
            .spawn(move || receiver(vec![p], false, &sh_r))
            .expect("spawn")
    } else {
        use ptnet_datapath::nic::afpacket::{Direction, PacketRing, RingConfig};
        let (ns, ifname, sh_r) = (a.rx_netns.clone(), a.rx_if.clone(), Arc::clone(&sh));
        thread::Builder::new()
            .name("bench-rx".into())
            .spawn(move || {
                enter_netns(&ns);
                let mut rx = PacketRing::open(&ifname, Direction::Rx, RingConfig::default())
                    .unwrap_or_else(|e| panic!("RX ring on {ifname} in {ns}: {e}"));
                while !sh_r.stop.load(Ordering::Relaxed) {
                    let mut n = 0u64;
                    rx.rx_burst(|f| n += u64::from(f.get(12..14) == Some(&[0x88, 0xb5][..])));
                    if sh_r.measuring.load(Ordering::Relaxed) {
                        sh_r.rx.fetch_add(n, Ordering::Relaxed);
                    }
                    if n == 0 {
                        let _ = rx.poll(10);
                    }
                }
            })
            .expect("spawn")
    };
    thread::sleep(Duration::from_millis(200));
    let g = generator(
        a.netns.clone(),
        a.gen_if.clone(),
        dst,
        usize::from(a.size),
        a.batch,
        Arc::clone(&sh),
    );
    thread::sleep(Duration::from_millis(500));
    let drops0: u64 = drops_of.iter().map(|p| p.stats().snapshot().rx_drops).sum();
    let cpu0 = thread_cpu();
    let (soft0, total0) = kernel_cpu();
    let t0 = Instant::now();
    sh.measuring.store(true, Ordering::Relaxed);
    thread::sleep(Duration::from_secs_f64(a.duration));
    sh.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = thread_cpu();
    let (soft1, total1) = kernel_cpu();
    let drops1: u64 = drops_of.iter().map(|p| p.stats().snapshot().rx_drops).sum();
    sh.stop.store(true, Ordering::Relaxed);
    let _ = g.join();
    let _ = recv.join();
    let nic_drops = keep.as_ref().map_or(0, |(_, n)| n.snapshot().rx_drops);
    drop(keep);
    let d = |k: &str| cpu1.get(k).copied().unwrap_or(0.0) - cpu0.get(k).copied().unwrap_or(0.0);
    let (txp, rxp) = (sh.tx.load(Ordering::Relaxed), sh.rx.load(Ordering::Relaxed));
    Result {
        scenario: if a.scenario == Scenario::Nic {
            format!("nic-{}", a.backend)
        } else {
            "bridge".into()
        },
        mode: if a.scenario == Scenario::Nic {
            "eventfd"
        } else {
            "kernel"
        },
        size: a.size,
        batch: a.batch,
        ports: 1,
        seconds: secs,
        tx_packets: txp,
        rx_packets: rxp,
        tx_mpps: txp as f64 / secs / 1e6,
        rx_mpps: rxp as f64 / secs / 1e6,
        rx_gbps: rxp as f64 * (f64::from(a.size) + 24.0) * 8.0 / secs / 1e9,
        drops: drops1 - drops0 + nic_drops,
        client_cpu: d("client") / secs,
        daemon_cpu: d("daemon") / secs,
        cpu_ns_per_packet: if rxp > 0 {
            (total1 - total0) * 1e9 / rxp as f64
        } else {
            0.0
        },
        daemon_ns_per_packet: if txp > 0 {
            d("daemon") * 1e9 / txp as f64
        } else {
            0.0
        },
        gen_cpu: Some(d("gen") / secs),
        softirq_cpu: Some((soft1 - soft0) / secs),
        total_cpu: Some((total1 - total0) / secs),
    }
}

fn main() {
    let a = Args::parse();
    if matches!(a.scenario, Scenario::Nic | Scenario::Bridge) {
        println!(
            "{}",
            serde_json::to_string(&nic_path(&a)).expect("serialise")
        );
        return;
    }
    if a.scenario == Scenario::AfPacket {
        println!(
            "{}",
            serde_json::to_string(&af_packet(&a)).expect("serialise")
        );
        return;
    }
    let cl = Duration::from_micros(a.client_linger_us);
    let mode = if a.busy_poll {
        Mode::BusyPoll
    } else {
        Mode::Eventfd {
            linger: Duration::from_micros(a.linger_us),
        }
    };
    let mut keep: Vec<HostClient> = Vec::new();
    let mut drops_of: Vec<Arc<dyn SyncPort>> = Vec::new();
    let (tx_ports, rx_ports, dsts): (Vec<Port>, Vec<Port>, Vec<[u8; 6]>) = match a.scenario {
        Scenario::Pipe => {
            let pipe = Pipe::new("bench", "0", 1, a.slots, 0, None).expect("pipe");
            let m: Arc<dyn SyncPort> = Arc::new(PipePortSync {
                end: Arc::clone(&pipe.master),
                peer: Arc::clone(&pipe.slave),
            });
            let s: Arc<dyn SyncPort> = Arc::new(PipePortSync {
                end: Arc::clone(&pipe.slave),
                peer: Arc::clone(&pipe.master),
            });
            let (hm, pm) = attach(m, mode, cl);
            let (hs, ps) = attach(s, mode, cl);
            keep.extend([hm, hs]);
            (vec![pm], vec![ps], vec![mac(0xffff)])
        }
        Scenario::AfPacket | Scenario::Nic | Scenario::Bridge => unreachable!("handled above"),
        Scenario::Vale | Scenario::OneToN | Scenario::NToOne => {
            let sw = Switch::new("vale0");
            let spec = VPortSpec {
                slots: a.slots,
                ..Default::default()
            };
            let mk = |name: String| -> Arc<dyn SyncPort> {
                Arc::new(ValePortSync {
                    switch: Arc::clone(&sw),
                    port: sw.add_port(&name, &spec).expect("port"),
                })
            };
            let (ntx, nrx) = match a.scenario {
                Scenario::OneToN => (1, a.ports),
                Scenario::NToOne => (a.ports, 1),
                _ => (1, 1),
            };
            let mut txp = Vec::new();
            let mut rxp = Vec::new();
            let mut dsts = Vec::new();
            for i in 0..nrx {
                let port = mk(format!("rx{i}"));
                drops_of.push(Arc::clone(&port));
                let (h, mut p) = attach(port, mode, cl);
                // Teach the switch this receiver's MAC.
                let m = mac(1000 + i);
                p.tx_batch(0, 1, |_, buf| {
                    buf[..6].copy_from_slice(&[0xff; 6]);
                    buf[6..12].copy_from_slice(&m);
                    60
                });
                p.txsync(0);
                dsts.push(m);
                keep.push(h);
                rxp.push(p);
            }
            for i in 0..ntx {
                let (h, p) = attach(mk(format!("tx{i}")), mode, cl);
                keep.push(h);
                txp.push(p);
            }
            thread::sleep(Duration::from_millis(100));
            // Drain the learning frames.
            for p in rxp.iter_mut() {
                p.rxsync(0);
                p.rx_batch(0, u32::MAX, |_, _| {});
                p.rxsync(0);
            }
            (txp, rxp, dsts)
        }
    };
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        measuring: AtomicBool::new(false),
        tx: AtomicU64::new(0),
        rx: AtomicU64::new(0),
    });
    let busy = a.busy_poll;
    let (size, batch) = (a.size, a.batch);
    let src = mac(1);
    let sh_t = Arc::clone(&sh);
    let sh_r = Arc::clone(&sh);
    let t = thread::Builder::new()
        .name("bench-tx".into())
        .spawn(move || sender(tx_ports, dsts, src, size, batch, busy, &sh_t))
        .expect("spawn");
    let r = thread::Builder::new()
        .name("bench-rx".into())
        .spawn(move || receiver(rx_ports, busy, &sh_r))
        .expect("spawn");

    thread::sleep(Duration::from_millis(500));
    let drops0: u64 = drops_of.iter().map(|p| p.stats().snapshot().rx_drops).sum();
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    sh.measuring.store(true, Ordering::Relaxed);
    thread::sleep(Duration::from_secs_f64(a.duration));
    sh.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = thread_cpu();
    let drops1: u64 = drops_of.iter().map(|p| p.stats().snapshot().rx_drops).sum();
    sh.stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    let _ = r.join();
    drop(keep);

    let d = |k: &str| cpu1.get(k).copied().unwrap_or(0.0) - cpu0.get(k).copied().unwrap_or(0.0);
    let rx = sh.rx.load(Ordering::Relaxed);
    let tx = sh.tx.load(Ordering::Relaxed);
    let res = Result {
        scenario: format!("{:?}", a.scenario).to_lowercase(),
        mode: if busy { "busy-poll" } else { "eventfd" },
        size: a.size,
        batch: a.batch,
        ports: a.ports,
        seconds: secs,
        tx_packets: tx,
        rx_packets: rx,
        tx_mpps: tx as f64 / secs / 1e6,
        rx_mpps: rx as f64 / secs / 1e6,
        // On the wire: frame + CRC + preamble and gap, as line-rate figures are quoted.
        rx_gbps: rx as f64 * (f64::from(a.size) + 24.0) * 8.0 / secs / 1e9,
        drops: drops1 - drops0,
        client_cpu: d("client") / secs,
        daemon_cpu: d("daemon") / secs,
        cpu_ns_per_packet: if rx > 0 {
            (d("client") + d("daemon")) * 1e9 / rx as f64
        } else {
            0.0
        },
        daemon_ns_per_packet: if tx > 0 {
            d("daemon") * 1e9 / tx as f64
        } else {
            0.0
        },
        gen_cpu: None,
        softirq_cpu: None,
        total_cpu: None,
    };
    println!("{}", serde_json::to_string(&res).expect("serialise"));
}
