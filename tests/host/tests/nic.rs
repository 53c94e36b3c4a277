//! Tier 2: host interfaces attached to VALE switches (NIC ports), with the real `ptnetd`,
//! `ptnetctl` and client processes. Every interface is a veth pair whose far end lives in a
//! network namespace the test creates; both are removed when the test ends, and all traffic
//! stays inside them.
//!
//! Build the daemon and ptnetctl first (`cargo build -p ptnetd -p ptnetctl`, same profile);
//! `ci/tier2.sh` does. Needs root, `ip`, `ethtool`, `python3` and busybox.
#![cfg(feature = "host-tests")]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ptnet_client::proto::{self, NicEntry, Reply, Request};

mod common;

use common::{Daemon, Proc};

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nsframes.py").to_owned()
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace, deleted on drop (with every interface inside it).
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Self {
        let _ = run("ip", &["netns", "del", name]);
        ok("ip", &["netns", "add", name]);
        ok("ip", &["-n", name, "link", "set", "lo", "up"]);
        Netns(name.to_owned())
    }

    /// A command run inside the namespace.
    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, prog]).args(args);
        c
    }

    fn out(&self, prog: &str, args: &[&str]) -> Output {
        self.cmd(prog, args).output().expect("ip netns exec")
    }

    /// The MAC of `dev` in the namespace, as 12 hex digits.
    fn mac(&self, dev: &str) -> String {
        let o = self.out("cat", &[&format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&o.stdout).trim().replace(':', "")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// A veth pair: `host` stays in the test's namespace (and is attached to a switch), its peer
/// becomes `eth0` inside `ns`, up, IPv6 off (so it sends nothing by itself), transmit
/// offloads off (frames leave it complete and at most MTU long, as from a real NIC), with
/// `addr` if given.
fn veth(host: &str, ns: &Netns, addr: Option<&str>) {
    veth_offloads(host, ns, addr, &["tx", "off"]);
}

/// [`veth`] with the peer's offloads set by `ethtool -K eth0 <offloads>`.
fn veth_offloads(host: &str, ns: &Netns, addr: Option<&str>, offloads: &[&str]) {
    let _ = run("ip", &["link", "del", host]);
    ok(
        "ip",
        &[
            "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ],
    );
    ok(
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{host}.disable_ipv6=1")],
    );
    ok("ip", &["link", "set", host, "up"]);
    let sh = |args: &[&str]| {
        let o = ns.out(args[0], &args[1..]);
        assert!(
            o.status.success(),
            "{args:?} in {}: {}",
            ns.0,
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]);
    let mut k = vec!["ethtool", "-K", "eth0"];
    k.extend_from_slice(offloads);
    sh(&k);
    sh(&["ip", "link", "set", "eth0", "up"]);
    if let Some(a) = addr {
        sh(&["ip", "addr", "add", a, "dev", "eth0"]);
    }
}

/// Removes a host-side veth (its peer goes with it) when dropped.
struct VethGuard(&'static str);

impl Drop for VethGuard {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", self.0]);
    }
}

/// What the NIC tests add to the shared daemon harness.
trait NicDaemon {
    fn attach_nic(&self, switch: &str, ifname: &str, backend: &str) -> String;
    fn nic(&self, port: &str) -> Option<NicEntry>;
    fn wait_link(&self, port: &str, link: &str);
}

impl NicDaemon for Daemon {
    fn attach_nic(&self, switch: &str, ifname: &str, backend: &str) -> String {
        let (good, text) = self.ctl(&["attach-nic", switch, ifname, "--backend", backend]);
        assert!(good, "attach-nic {ifname}: {text}");
        text
    }

    fn nic(&self, port: &str) -> Option<NicEntry> {
        match proto::call(&self.socket, Request::List).expect("list").0 {
            Reply::Listing { switches, .. } => switches
                .into_iter()
                .flat_map(|s| s.ports)
                .find(|p| p.name == port)
                .and_then(|p| p.nic),
            r => panic!("unexpected reply {r:?}"),
        }
    }

    fn wait_link(&self, port: &str, link: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.nic(port);
            if n.as_ref().is_some_and(|n| n.link == link) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{port} never became {link}: {n:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// MAC of the test clients' station `i` (ptnet-host-tests' `mac`), as hex.
fn station(i: u8) -> String {
    format!("02000000000{i:x}")
}

/// A host client on vale0 and a process in a namespace behind a veth attached to vale0
/// exchange frames both ways: exact counts, payloads checked, in order.
fn exchange_with_a_namespace(tag: &str, backend: &str) {
    let host_if = leak(format!("ptx{tag}"));
    let ns = Netns::new(&format!("ptnet-x{tag}"));
    veth(host_if, &ns, None);
    let _guard = VethGuard(host_if);
    let d = Daemon::start(&format!("nic-x{tag}"));
    let text = d.attach_nic("vale0", host_if, backend);
    assert!(text.contains(backend), "backend in use: {text}");
    let port = format!("vale0:{host_if}");
    let count = "3000";

    // Namespace → host client. The client announces station 2 first (so the switch learns
    // it); the namespace's frames are then unicast to it.
    let rx = d.client(
        &[
            "recv",
            "-p",
            "vale0:h",
            "--me",
            "2",
            "-c",
            count,
            "--announce-ms",
            "100",
            "--timeout",
            "30",
        ],
        true,
    );
    std::thread::sleep(Duration::from_millis(150));
    let tx = Proc::spawn(
        ns.cmd(
            "python3",
            &[
                &script(),
                "send",
                "eth0",
                count,
                &station(2),
                &station(1),
                "300",
            ],
        ),
        false,
    );
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx, "namespace sender: {vtx}");
    assert!(ok_rx, "host client: {vrx}");
    assert_eq!(vrx["received"], 3000);

    // Host client → namespace: station 1 was learned on the NIC port.
    let rx = Proc::spawn(ns.cmd("python3", &[&script(), "recv", "eth0", count]), true);
    let tx = d.client(
        &[
            "send",
            "-p",
            "vale0:h",
            "--me",
            "2",
            "--to",
            "1",
            "-c",
            count,
            "--burst",
            "100",
            "--pause-us",
            "2000",
            "-l",
            "1000",
        ],
        false,
    );
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx, "host client sender: {vtx}");
    assert!(ok_rx, "namespace receiver: {vrx}");
    assert_eq!(vrx["received"], 3000);

    // The interface's counters: the namespace sent nothing but the test's frames; the port
    // transmitted those plus the client's announcement.
    let n = d.nic(&port).expect("NIC port listed");
    assert_eq!(n.backend.as_deref(), Some(backend));
    assert_eq!(n.link, "up");
    assert_eq!(n.rx_packets, 3000, "{n:?}");
    assert_eq!(n.rx_bytes, 3000 * 300, "{n:?}");
    assert_eq!(n.tx_packets, 3001, "{n:?}");
    assert_eq!((n.rx_drops, n.tx_drops), (0, 0), "{n:?}");
    let (good, json) = d.ctl(&["list", "--json"]);
    assert!(good && json.contains("\"nic\""), "{json}");
    let (good, _) = d.ctl(&["detach-nic", "vale0", host_if]);
    assert!(good);
    assert!(d.nic(&port).is_none(), "detached");
}

#[test]
fn a_host_client_and_a_namespace_exchange_frames_through_an_af_packet_port() {
    exchange_with_a_namespace("p", "af_packet");
}

#[test]
fn a_host_client_and_a_namespace_exchange_frames_through_an_af_xdp_port() {
    exchange_with_a_namespace("d", "af_xdp");
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn two_namespaces_behind_two_af_packet_ports_reach_each_other() {
    two_namespaces_reach_each_other("p", "af_packet");
}

#[test]
fn two_namespaces_behind_two_af_xdp_ports_reach_each_other() {
    two_namespaces_reach_each_other("d", "af_xdp");
}

/// Learning across NIC ports: two namespaces behind two veths on one switch ping each other
/// and move a TCP stream whose checksum both ends compare. The senders keep checksum offload
/// on (only segmentation offload is off): with AF_PACKET the port finishes their checksums.
fn two_namespaces_reach_each_other(tag: &str, backend: &str) {
    let (ia, ib) = (leak(format!("ptl{tag}a")), leak(format!("ptl{tag}b")));
    let a = Netns::new(&format!("ptnet-l{tag}a"));
    let b = Netns::new(&format!("ptnet-l{tag}b"));
    let offloads: &[&str] = if backend == "af_packet" {
        &["tso", "off", "gso", "off"]
    } else {
        &["tx", "off"]
    };
    veth_offloads(ia, &a, Some("198.18.0.1/24"), offloads);
    let _ga = VethGuard(ia);
    veth_offloads(ib, &b, Some("198.18.0.2/24"), offloads);
    let _gb = VethGuard(ib);
    let d = Daemon::start(&format!("nic-learn-{tag}"));
    d.attach_nic("vale0", ia, backend);
    d.attach_nic("vale0", ib, backend);

    let o = a.out("busybox", &["ping", "-c", "5", "-W", "2", "198.18.0.2"]);
    assert!(
        o.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = b.out("busybox", &["ping", "-c", "3", "-W", "2", "198.18.0.1"]);
    assert!(o.status.success(), "ping back");

    // A TCP transfer; both ends hash what they saw.
    let server = Proc::spawn(
        b.cmd(
            "python3",
            &[
                &script(),
                "tcp-server",
                "198.18.0.2",
                "5001",
                "--timeout",
                "30",
            ],
        ),
        true,
    );
    let client = Proc::spawn(
        a.cmd(
            "python3",
            &[&script(), "tcp-client", "198.18.0.2", "5001", "8000000"],
        ),
        false,
    );
    let (ok_c, vc) = client.finish();
    let (ok_s, vs) = server.finish();
    assert!(ok_c && ok_s, "client {vc}, server {vs}");
    assert_eq!(vc["bytes"], 8_000_000);
    assert_eq!(vc, vs, "what was sent is what arrived");

    // Both stations were learned behind their NIC ports: unicast did not flood to a third.
    let na = d.nic(&format!("vale0:{ia}")).unwrap();
    let nb = d.nic(&format!("vale0:{ib}")).unwrap();
    assert_eq!(na.backend.as_deref(), Some(backend));
    // (Not exact: under load the switch may drop a few frames toward B's full ring, and the
    // TCP transfer still completes; 2 % covers it, where a flood would show as a shortfall
    // only toward the third port, not here.)
    assert!(
        na.rx_packets > 5000 && nb.tx_packets * 100 >= na.rx_packets * 98,
        "{na:?} {nb:?}"
    );
    assert_eq!(na.rx_drops + nb.tx_drops, 0, "{na:?} {nb:?}");
}

#[test]
fn af_packet_ports_survive_link_down_up_and_interface_deletion_under_traffic() {
    survive_link_changes("p", "af_packet");
}

#[test]
fn af_xdp_ports_survive_link_down_up_and_interface_deletion_under_traffic() {
    survive_link_changes("d", "af_xdp");
}

fn survive_link_changes(tag: &str, backend: &str) {
    let (ia, ib) = (leak(format!("ptf{tag}a")), leak(format!("ptf{tag}b")));
    let (pa, pb) = (format!("vale0:{ia}"), format!("vale0:{ib}"));
    let a = Netns::new(&format!("ptnet-f{tag}a"));
    let b = Netns::new(&format!("ptnet-f{tag}b"));
    veth(ia, &a, Some("198.18.1.1/24"));
    let _ga = VethGuard(ia);
    veth(ib, &b, Some("198.18.1.2/24"));
    let _gb = VethGuard(ib);
    let mut d = Daemon::start(&format!("nic-flap-{tag}"));
    d.attach_nic("vale0", ia, backend);
    d.attach_nic("vale0", ib, backend);
    let ping = |from: &Netns, to: &str| {
        from.out("busybox", &["ping", "-c", "2", "-W", "2", to])
            .status
            .success()
    };
    assert!(ping(&a, "198.18.1.2"));
    let mac_b = b.mac("eth0");

    // Traffic under everything that follows: a → b raw frames, and two host clients on the
    // same switch exchanging an exact count.
    let flood = Proc::spawn(
        a.cmd(
            "python3",
            &[&script(), "flood", "eth0", "6", &mac_b, &a.mac("eth0")],
        ),
        false,
    );
    let rx = d.client(
        &[
            "recv",
            "-p",
            "vale0:cb",
            "--me",
            "12",
            "--to",
            "11",
            "-c",
            "30000",
            "--announce-ms",
            "50",
            "--window",
            "512",
        ],
        true,
    );
    let tx = d.client(
        &[
            "send",
            "-p",
            "vale0:ca",
            "--me",
            "11",
            "--to",
            "12",
            "-c",
            "30000",
            "--burst",
            "64",
            "--window",
            "512",
            "--pause-us",
            "100",
        ],
        false,
    );

    // Link down, then up: the port follows, then carries traffic again.
    std::thread::sleep(Duration::from_millis(300));
    ok("ip", &["link", "set", ia, "down"]);
    d.wait_link(&pa, "down");
    std::thread::sleep(Duration::from_millis(300));
    ok("ip", &["link", "set", ia, "up"]);
    d.wait_link(&pa, "up");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(&a, "198.18.1.2") {
        assert!(
            Instant::now() < deadline,
            "no traffic after the link came back"
        );
    }

    // The interface disappears under traffic: the port goes away with it, the switch keeps
    // serving the others.
    ok("ip", &["link", "del", ib]);
    d.wait_link(&pb, "gone");
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx && ok_rx, "host clients: {vtx} {vrx}");
    assert_eq!(vrx["received"], 30000);
    let (_, vf) = flood.finish();
    assert!(vf["sent"].as_u64().unwrap_or(0) > 1000, "flood: {vf}");

    // A new interface of the same name: the port comes back. (Its peer has a new MAC: a
    // forgets the old one.)
    veth(ib, &b, Some("198.18.1.2/24"));
    d.wait_link(&pb, "up");
    let _ = a.out("ip", &["neigh", "flush", "dev", "eth0"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(&a, "198.18.1.2") {
        assert!(
            Instant::now() < deadline,
            "no traffic through the re-created interface"
        );
    }
    let na = d.nic(&pa).unwrap();
    let nb = d.nic(&pb).unwrap();
    assert_eq!(nb.backend.as_deref(), Some(backend), "{nb:?}");
    assert!(na.link_changes >= 2, "{na:?}");
    assert!(nb.link_changes >= 2, "{nb:?}");
    assert!(d.alive(), "the daemon survived");
}

#[test]
fn attach_nic_errors_say_why() {
    let ns = Netns::new("ptnet-e");
    veth("ptea", &ns, None);
    let _g = VethGuard("ptea");
    let d = Daemon::start("nic-errors");
    let err = |args: &[&str]| {
        let (good, text) = d.ctl(args);
        assert!(!good, "{args:?} succeeded: {text}");
        text
    };
    assert!(err(&["attach-nic", "vale0", "ptnone0"]).contains("no interface ptnone0"));
    ok("ip", &["link", "set", "ptea", "mtu", "4000"]);
    let e = err(&["attach-nic", "vale0", "ptea"]);
    assert!(e.contains("MTU 4000") && e.contains("2048"), "{e}");
    // Larger buffers carry larger frames.
    let (good, text) = d.ctl(&["attach-nic", "vale0", "ptea", "--buf-size", "4096"]);
    assert!(good, "{text}");
    assert!(err(&["attach-nic", "vale0", "ptea"]).contains("already"));
    assert!(err(&["attach-nic", "vale0", "ptea", "--backend", "bogus"]).contains("unknown"));
    // A client cannot take the NIC port, nor a virtual port the name of an interface.
    let c = d.client(&["recv", "-p", "vale0:ptea", "-c", "1"], false);
    let (good, v) = c.finish();
    assert!(!good && v.to_string().contains("busy"), "{v}");
    let (good, _) = d.ctl(&["detach-nic", "vale0", "ptea"]);
    assert!(good);
    let c = d.client(&["recv", "-p", "vale0:ptea", "-c", "1"], false);
    let (good, v) = c.finish();
    assert!(!good && v.to_string().contains("attach-nic"), "{v}");
    assert!(err(&["detach-nic", "vale0", "ptea"]).contains("does not exist"));
    // Native netmap: not here; asked for by name, the port falls back to AF_PACKET and says
    // why.
    ok("ip", &["link", "set", "ptea", "mtu", "1500"]);
    let text = d.attach_nic("vale0", "ptea", "netmap");
    assert!(
        text.contains("af_packet") && text.contains("/dev/netmap"),
        "{text}"
    );
}

/// The host stack on the switch (netmap's host rings): the veth is attached with
/// `--host-stack`, the daemon creates a tap for the host's own stack as one more port, and a
/// namespace behind the veth reaches an address of the host's, configured on the tap: ping and
/// a TCP transfer with checksum comparison. Detaching the interface removes the tap.
#[test]
fn a_namespace_reaches_the_host_stack_through_the_host_stack_tap() {
    let (host_if, tap) = ("pths", "pthstap");
    let ns = Netns::new("ptnet-hs");
    veth(host_if, &ns, Some("198.18.3.2/24"));
    let _guard = VethGuard(host_if);
    // The host answers ARP for the tap's address on the tap only (not on the veth as well,
    // Linux's default), as on a host whose NIC is on a switch.
    ok(
        "sysctl",
        &["-qw", &format!("net.ipv4.conf.{host_if}.arp_ignore=1")],
    );
    let d = Daemon::start("nic-host-stack");
    let (good, text) = d.ctl(&[
        "attach-nic",
        "vale0",
        host_if,
        "--backend",
        "af_packet",
        "--host-stack",
        tap,
    ]);
    assert!(
        good && text.contains(tap),
        "attach-nic --host-stack: {text}"
    );
    ok(
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{tap}.disable_ipv6=1")],
    );
    ok("ip", &["addr", "add", "198.18.3.1/24", "dev", tap]);
    let tap_port = format!("vale0:{tap}");
    d.wait_link(&tap_port, "up");

    let o = ns.out("busybox", &["ping", "-c", "5", "-W", "2", "198.18.3.1"]);
    assert!(
        o.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let server = Proc::spawn(
        {
            let mut c = Command::new("python3");
            c.args([
                &script(),
                "tcp-server",
                "198.18.3.1",
                "5003",
                "--timeout",
                "30",
            ]);
            c
        },
        true,
    );
    let client = Proc::spawn(
        ns.cmd(
            "python3",
            &[&script(), "tcp-client", "198.18.3.1", "5003", "8000000"],
        ),
        false,
    );
    let (ok_c, vc) = client.finish();
    let (ok_s, vs) = server.finish();
    assert!(ok_c && ok_s, "client {vc}, server {vs}");
    assert_eq!(vc["bytes"], 8_000_000);
    assert_eq!(vc, vs, "what was sent is what arrived");

    // The traffic went through the tap's port, both ways: the 8 MB of segments to the host
    // (about 5500 of them), the host's acknowledgements (as many as its delayed and stretch
    // acknowledgements make) and ping replies from it.
    let t = d.nic(&tap_port).expect("the tap's port is listed");
    assert_eq!(t.backend.as_deref(), Some("tap"), "{t:?}");
    assert!(t.rx_packets > 100 && t.tx_packets > 5000, "{t:?}");
    assert_eq!(t.rx_drops + t.tx_drops, 0, "{t:?}");
    let (good, _) = d.ctl(&["detach-nic", "vale0", host_if]);
    assert!(good);
    assert!(d.nic(&tap_port).is_none(), "the tap's port went with it");
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "the tap is gone"
    );
    // Again, with the default tap name, removed by destroy-port this time.
    let (good, text) = d.ctl(&["attach-nic", "vale0", host_if, "--host-stack"]);
    assert!(good && text.contains("ptnet-pths"), "{text}");
    assert!(d.nic("vale0:ptnet-pths").is_some());
    let (good, _) = d.ctl(&["destroy-port", &format!("vale0:{host_if}")]);
    assert!(good);
    assert!(d.nic("vale0:ptnet-pths").is_none());
    assert!(!std::path::Path::new("/sys/class/net/ptnet-pths").exists());
}

/// A NIC given directly to one client (netmap's `netmap:eth0`): `create-nic-port` makes the
/// stand-alone port, a host client takes it by the interface's name and exchanges exact counts
/// with a namespace behind the veth, both directions, payloads checked. No learning stands in
/// the way: every frame of the interface reaches the client, whatever its addresses.
#[test]
fn an_interface_given_directly_to_a_host_client_exchanges_frames_with_a_namespace() {
    let host_if = "ptdi";
    let ns = Netns::new("ptnet-di");
    veth(host_if, &ns, None);
    let _guard = VethGuard(host_if);
    let d = Daemon::start("nic-direct");
    let (good, text) = d.ctl(&["create-nic-port", host_if, "--backend", "af_packet"]);
    assert!(good, "create-nic-port: {text}");
    let count = "3000";

    // Namespace → client, to a destination nobody announced (a switch would flood it; here
    // there is nothing else).
    let rx = d.client(
        &[
            "recv",
            "-p",
            &format!("netmap:{host_if}"),
            "-c",
            count,
            "--timeout",
            "30",
        ],
        true,
    );
    let tx = Proc::spawn(
        ns.cmd(
            "python3",
            &[
                &script(),
                "send",
                "eth0",
                count,
                &station(9),
                &station(1),
                "300",
            ],
        ),
        false,
    );
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx, "namespace sender: {vtx}");
    assert!(ok_rx, "host client: {vrx}");
    assert_eq!(vrx["received"], 3000);

    // Client → namespace.
    let rx = Proc::spawn(ns.cmd("python3", &[&script(), "recv", "eth0", count]), true);
    let tx = d.client(
        &[
            "send",
            "-p",
            host_if,
            "--me",
            "2",
            "--to",
            "1",
            "-c",
            count,
            "--burst",
            "100",
            "--pause-us",
            "2000",
            "-l",
            "1000",
        ],
        false,
    );
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx, "host client sender: {vtx}");
    assert!(ok_rx, "namespace receiver: {vrx}");
    assert_eq!(vrx["received"], 3000);

    let p = d.port(host_if).expect("the direct port is listed");
    assert_eq!(p.kind, "nic");
    let n = p.nic.expect("with its interface's counters");
    assert_eq!(n.backend.as_deref(), Some("af_packet"), "{n:?}");
    assert_eq!((n.rx_packets, n.rx_bytes), (3000, 3000 * 300), "{n:?}");
    assert_eq!((n.tx_packets, n.tx_bytes), (3000, 3000 * 1000), "{n:?}");
    assert_eq!((n.rx_drops, n.tx_drops), (0, 0), "{n:?}");

    // One client at a time, and not on a switch at the same time.
    let held = d.client(&["recv", "-p", host_if, "-c", "1", "--timeout", "5"], true);
    let c = d.client(&["recv", "-p", host_if, "-c", "1"], false);
    let (good, v) = c.finish();
    assert!(!good && v.to_string().contains("busy"), "{v}");
    let (good, text) = d.ctl(&["attach-nic", "vale0", host_if]);
    assert!(!good && text.contains("directly"), "{text}");
    drop(held);
    d.wait_detached(host_if);
    let (good, text) = d.ctl(&["destroy-port", host_if]);
    assert!(good, "destroy-port: {text}");
    assert!(d.port(host_if).is_none());
    // A name clients could not write back (`-1` reads as a ring suffix) is refused up front.
    let (good, text) = d.ctl(&["create-nic-port", "ptdi-1"]);
    assert!(!good && text.contains("could not name"), "{text}");
}

/// Fanout: a direct NIC port with two ring pairs gets the interface's frames through two
/// AF_PACKET sockets in one PACKET_FANOUT_HASH group; a namespace sends UDP datagrams of many
/// flows and the client receives all of them, on both rings.
#[test]
fn a_two_ring_nic_port_carries_traffic_on_both_rings() {
    let host_if = "ptfo";
    let ns = Netns::new("ptnet-fo");
    veth(host_if, &ns, Some("198.18.4.1/24"));
    let _guard = VethGuard(host_if);
    // The client's address, resolved statically: the namespace sends nothing but the test's
    // datagrams.
    let o = ns.out(
        "ip",
        &[
            "neigh",
            "add",
            "198.18.4.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "eth0",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = Daemon::start("nic-fanout");
    let (good, text) = d.ctl(&[
        "create-nic-port",
        host_if,
        "--backend",
        "af_packet",
        "--rings",
        "2",
    ]);
    assert!(good, "create-nic-port --rings 2: {text}");
    let p = d.port(host_if).expect("listed");
    assert_eq!((p.tx_rings, p.rx_rings), (2, 2));

    let rx = d.client(
        &[
            "recv",
            "-p",
            host_if,
            "--raw",
            "-c",
            "2000",
            "--timeout",
            "30",
        ],
        true,
    );
    let send = "import socket,time\n\
                s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                for i in range(2000):\n    \
                    s.sendto(b'x'*100,('198.18.4.2',10000+i%200))\n    \
                    time.sleep(0.0002) if i%50==0 else None\n";
    let o = ns.out("python3", &["-c", send]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_rx, "host client: {vrx}");
    assert_eq!(vrx["received"], 2000);
    let per_ring: Vec<u64> = serde_json::from_value(vrx["per_ring"].clone()).unwrap();
    assert_eq!(per_ring.len(), 2, "{vrx}");
    assert!(
        per_ring.iter().all(|&n| n >= 100),
        "both rings carry traffic: {per_ring:?}"
    );
    let n = d.port(host_if).unwrap().nic.unwrap();
    assert_eq!((n.rx_packets, n.rx_drops), (2000, 0), "{n:?}");
}

/// The configuration file's equivalents: a `[[port]]` `valeX:IF` with `host_stack_tap` and a
/// `[[port]]` `netmap:IF` with two ring pairs are there when the daemon has started.
#[test]
fn the_configuration_file_attaches_a_host_stack_and_gives_an_interface_to_a_client() {
    let ns = Netns::new("ptnet-cf");
    let (ia, ib) = ("ptcfa", "ptcfb");
    veth(ia, &ns, None);
    let _ga = VethGuard(ia);
    let _ = run("ip", &["link", "del", ib]);
    ok(
        "ip",
        &[
            "link", "add", ib, "type", "veth", "peer", "name", "eth1", "netns", &ns.0,
        ],
    );
    let _gb = VethGuard(ib);
    ok("ip", &["link", "set", ib, "up"]);
    let dir = std::env::temp_dir().join(format!("ptnet-t2-{}-nic-config", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("ptnetd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[switch]]\nname = \"vale0\"\n\
             [[port]]\nname = \"vale0:{ia}\"\nbackend = \"af_packet\"\nhost_stack_tap = \"ptcftap\"\n\
             [[port]]\nname = \"netmap:{ib}\"\nbackend = \"af_packet\"\ntx_rings = 2\nrx_rings = 2\n"
        ),
    )
    .unwrap();
    let socket = dir.join("ptnetd.sock").to_string_lossy().into_owned();
    let log = std::fs::File::create(dir.join("ptnetd.log")).unwrap();
    let child = Command::new(common::target_bin("ptnetd"))
        .args(["--config", &cfg.to_string_lossy(), "--socket", &socket])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ptnetd");
    let d = Daemon { child, dir, socket };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
        assert!(Instant::now() < deadline, "ptnetd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tap = d.nic("vale0:ptcftap").expect("the host-stack tap's port");
    assert_eq!(tap.backend.as_deref(), Some("tap"), "{tap:?}");
    assert!(std::path::Path::new("/sys/class/net/ptcftap").exists());
    let p = d.port(ib).expect("the direct port");
    assert_eq!((p.kind.as_str(), p.tx_rings, p.rx_rings), ("nic", 2, 2));
    assert_eq!(p.nic.and_then(|n| n.backend).as_deref(), Some("af_packet"));
    drop(d);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new("/sys/class/net/ptcftap").exists() {
        assert!(Instant::now() < deadline, "the tap outlived the daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
}
