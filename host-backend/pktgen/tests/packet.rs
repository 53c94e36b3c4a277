//! Tier 2 (host integration): the AF_PACKET backend (`-i packet:IFNAME`) on a veth pair.
//!
//! Run with `cargo test -p ptnet-pktgen --features host-tests`, as root (`ci/tier2.sh`). Each
//! test creates a network namespace of its own holding both ends of a veth pair, runs
//! `ptnet-pktgen` inside it (`ip netns exec`), and deletes the namespace (with the pair) when
//! it ends: all traffic stays inside. Processes it started are killed by their PID. Without
//! root, `ip` or `setpriv` the tests fail, saying what is missing; they never skip.
#![cfg(feature = "host-tests")]

use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PKTGEN: &str = env!("CARGO_BIN_EXE_ptnet-pktgen");

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e} (the packet tests need iproute2)"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed (root needed): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A network namespace holding a veth pair `vetha` ↔ `vethb`, both up with IPv6 off (so the
/// kernel sends nothing on them by itself); deleted, with the pair, on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("ptpg-{}-{tag}", std::process::id());
        let _ = run("ip", &["netns", "del", &name]);
        ok("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "vetha", "type", "veth", "peer", "name", "vethb",
        ]);
        for dev in ["vetha", "vethb"] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.0];
        a.extend_from_slice(args);
        ok("ip", &a)
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.0];
        a.extend_from_slice(args);
        ok("ip", &a)
    }

    fn mac(&self, dev: &str) -> String {
        self.exec(&["cat", &format!("/sys/class/net/{dev}/address")])
    }

    /// `ptnet-pktgen args` inside the namespace, optionally through `prefix` (setpriv).
    fn pktgen_via(&self, prefix: &[&str], args: &[&str]) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(prefix)
            .arg(PKTGEN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ptnet-pktgen");
        Proc(Some(child))
    }

    fn pktgen(&self, args: &[&str]) -> Proc {
        self.pktgen_via(&[], args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// A pktgen we started; killed by its PID if the test ends before it does.
struct Proc(Option<Child>);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Waits until the process has a packet socket bound for pktgen's EtherType (read from
    /// its own namespace's /proc/PID/net/packet: `ip netns exec` execs in place).
    fn wait_bound(&mut self) {
        let path = format!("/proc/{}/net/packet", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let bound = std::fs::read_to_string(&path).is_ok_and(|t| {
                t.lines()
                    .skip(1)
                    .any(|l| l.split_whitespace().nth(3) == Some("88b5"))
            });
            if bound {
                return;
            }
            if let Some(s) = self.0.as_mut().expect("running").try_wait().expect("wait") {
                let (_, out, err) = self.finish(Duration::from_secs(1));
                panic!("ptnet-pktgen exited ({s}) before binding: {out}{err}");
            }
            assert!(
                Instant::now() < deadline,
                "no packet socket bound in {path}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits with a deadline (killing it if it overruns): exit status, stdout, stderr.
    fn finish(&mut self, limit: Duration) -> (ExitStatus, String, String) {
        let mut c = self.0.take().expect("running");
        let deadline = Instant::now() + limit;
        while c.try_wait().expect("wait").is_none() {
            if Instant::now() >= deadline {
                let _ = c.kill();
                let out = c.wait_with_output().expect("output");
                panic!(
                    "ptnet-pktgen overran {limit:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = c.wait_with_output().expect("output");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs to completion, requires exit code `code`, parses the JSON summary.
    fn summary(mut self, code: i32) -> Value {
        let (status, out, err) = self.finish(Duration::from_secs(120));
        assert_eq!(status.code(), Some(code), "stdout: {out}\nstderr: {err}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
    }

    /// Runs to completion, requires exit code `code`; stderr.
    fn error(mut self, code: i32) -> String {
        let (status, out, err) = self.finish(Duration::from_secs(30));
        assert_eq!(status.code(), Some(code), "stdout: {out}\nstderr: {err}");
        err
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Sends `n` frames of `size` bytes from vetha to vethb (`extra` tx options) and checks
/// that every one arrives, in order and intact; returns (tx, rx) summaries.
fn stream(ns: &Netns, n: u64, size: usize, extra: &[&str]) -> (Value, Value) {
    let (n_s, size_s) = (n.to_string(), size.to_string());
    let mut rx = ns.pktgen(&[
        "rx",
        "-i",
        "packet:vethb",
        "-n",
        &n_s,
        "--expect-no-loss",
        "-d",
        "60",
        "--json",
        "-q",
    ]);
    rx.wait_bound();
    let mut args = vec![
        "tx",
        "-i",
        "packet:vetha",
        "-n",
        &n_s,
        "-l",
        &size_s,
        "--json",
        "-q",
    ];
    args.extend_from_slice(extra);
    let t = ns.pktgen(&args).summary(0);
    let r = rx.summary(0);
    assert_eq!(
        (u(&t, "packets"), u(&t, "tx_pending_at_exit")),
        (n, 0),
        "{t}"
    );
    assert_eq!(
        (u(&r, "packets"), u(&r, "bytes")),
        (n, n * size as u64),
        "{r}"
    );
    assert_eq!(
        (
            u(&r, "good"),
            u(&r, "lost"),
            u(&r, "out_of_order"),
            u(&r, "bad_payload")
        ),
        (n, 0, 0, 0),
        "{r}"
    );
    (t, r)
}

#[test]
fn tx_to_rx_across_a_veth_pair_loses_nothing() {
    let ns = Netns::new("stream");
    // Unpaced: veth hands each frame to the receiving socket as it is sent, and the
    // receiver's 16 MiB socket buffer holds the whole run should it be descheduled.
    let (t, r) = stream(&ns, 10_000, 60, &[]);
    eprintln!(
        "packet:vetha -> packet:vethb, 10000 x 60 B: tx {:.3} Mpps ({:.0}% CPU), rx {:.3} Mpps \
         ({:.0}% CPU)",
        f(&t, "tx_mpps"),
        f(&t, "cpu_percent"),
        f(&r, "rx_mpps"),
        f(&r, "cpu_percent")
    );
    // Paced, at the MTU.
    let (t, r) = stream(&ns, 10_000, 1514, &["-R", "200000"]);
    eprintln!(
        "packet:vetha -> packet:vethb, 10000 x 1514 B at -R 200000: tx {:.3} Mpps, rx {:.3} \
         Mpps",
        f(&t, "tx_mpps"),
        f(&r, "rx_mpps")
    );
}

#[test]
fn unicast_to_the_peers_mac_and_ping_pong_work_without_promiscuous_mode() {
    let ns = Netns::new("pong");
    let peer = ns.mac("vethb");
    stream(&ns, 2000, 128, &["--dst-mac", &peer]);
    let mut pong = ns.pktgen(&[
        "pong",
        "-i",
        "packet:vethb",
        "-n",
        "500",
        "-d",
        "60",
        "--json",
        "-q",
    ]);
    pong.wait_bound();
    let p = ns
        .pktgen(&[
            "ping",
            "-i",
            "packet:vetha",
            "-n",
            "500",
            "--dst-mac",
            &peer,
            "--expect-no-loss",
            "--json",
            "-q",
        ])
        .summary(0);
    let q = pong.summary(0);
    assert_eq!((u(&p, "pings_sent"), u(&p, "pongs_received")), (500, 500));
    assert_eq!(u(&q, "packets"), 500);
    assert!(f(&p, "rtt_us_min") > 0.0, "{p}");
    for dev in ["vetha", "vethb"] {
        let flags = ns.exec(&["cat", &format!("/sys/class/net/{dev}/flags")]);
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).expect("flags");
        assert_eq!(flags & 0x100, 0, "{dev} is promiscuous (IFF_PROMISC)");
    }
}

#[test]
fn a_missing_or_down_interface_an_mtu_too_small_and_no_privilege_are_usage_errors() {
    let ns = Netns::new("errors");
    let err = ns
        .pktgen(&["tx", "-i", "packet:nosuch0", "-n", "1"])
        .error(2);
    assert!(
        err.contains("no network interface nosuch0"),
        "missing: {err}"
    );
    ns.ip(&["link", "set", "vethb", "mtu", "1000"]);
    let err = ns
        .pktgen(&["tx", "-i", "packet:vethb", "-n", "1", "-l", "1015"])
        .error(2);
    assert!(err.contains("MTU, 1000"), "MTU: {err}");
    ns.ip(&["link", "set", "vetha", "down"]);
    let err = ns.pktgen(&["rx", "-i", "packet:vetha", "-n", "1"]).error(2);
    assert!(err.contains("vetha is down"), "down: {err}");
    let err = ns
        .pktgen_via(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ],
            &["tx", "-i", "packet:vethb", "-n", "1"],
        )
        .error(2);
    assert!(err.contains("CAP_NET_RAW"), "unprivileged: {err}");
}
