//! Tier 2, issue 15: unmodified netmap applications on the host, against the real daemon,
//! through the preload library (`libptnet_netmap.so`, `LD_PRELOAD`) and no netmap kernel
//! module. The application is the project's `nm-tx-rx` (written against netmap's API only,
//! compiled here with the system's C compiler); its peers are another `nm-tx-rx` and
//! `ptnet-pktgen`, over a VALE switch and over a pipe. Every count is exact.
#![cfg(feature = "host-tests")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Daemon, target_bin};

/// Frames per second of the senders: VALE drops what a receiver's full ring cannot take,
/// and exact counts need the receivers to keep up on a busy machine.
const PACE: &str = "20000";

/// `nm-tx-rx`, built once per test process.
fn nm_tx_rx() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_tool("nm-tx-rx")).clone()
}

/// `nm-hostile`, built once per test process.
fn nm_hostile() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_tool("nm-hostile")).clone()
}

/// `nm-pingpong`, built once per test process.
fn nm_pingpong() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_tool("nm-pingpong")).clone()
}

/// Builds `guest-driver-linux/tools/NAME.c` with the system's C compiler.
fn build_tool(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("ptnet-{name}-{}", std::process::id()));
    let st = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("ptnet-spec/include"))
        .arg("-o")
        .arg(&out)
        .arg(root.join(format!("guest-driver-linux/tools/{name}.c")))
        .status()
        .expect("run cc (ci/prereqs.sh installs gcc)");
    assert!(st.success(), "{name} did not build");
    out
}

/// `nm-tx-rx ARGS` under the preload library, against daemon `d`.
fn preloaded(d: &Daemon, args: &[&str]) -> Command {
    preloaded_program(d, &nm_tx_rx(), args)
}

/// `PROGRAM ARGS` under the preload library, against daemon `d`.
fn preloaded_program(d: &Daemon, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .env("LD_PRELOAD", target_bin("libptnet_netmap.so"))
        .env("PTNET_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Starts a receiver and waits until its port is attached.
fn receiver(d: &Daemon, port: &str, mut c: Command) -> Child {
    let child = c.spawn().expect("start the receiver");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !d.port(port).is_some_and(|p| p.attached) {
        assert!(
            std::time::Instant::now() < deadline,
            "{port} was not attached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn nm_tx_rx_exchanges_every_frame_with_itself_over_vale_and_a_pipe() {
    let d = Daemon::start("nm-preload");
    for (tx, rx) in [("vale0:a", "vale0:b"), ("nmp{1", "nmp}1")] {
        let r = receiver(
            &d,
            rx,
            preloaded(
                &d,
                &["rx", &format!("netmap:{rx}"), "-n", "2000", "-t", "20"],
            ),
        );
        let t = preloaded(
            &d,
            &["tx", tx, "-n", "2000", "-l", "300", "-r", PACE, "-t", "20"],
        )
        .output()
        .unwrap();
        let (out, err) = text(&t);
        assert!(t.status.success(), "tx on {tx}: {out}{err}");
        assert_eq!(out.trim(), "nm-tx-rx: tx 2000 frames");
        let o = r.wait_with_output().unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "rx on {rx}: {out}{err}");
        assert_eq!(out.trim(), "nm-tx-rx: rx 2000 frames, 0 bad");
    }
}

#[test]
fn nm_tx_rx_and_ptnet_pktgen_count_each_others_frames() {
    let d = Daemon::start("nm-pktgen");
    // nm-tx-rx → ptnet-pktgen: every frame counted by the receiver.
    let mut c = Command::new(target_bin("ptnet-pktgen"));
    c.args(["rx", "-i", "vale0:p", "--socket", &d.socket])
        .args(["--idle", "2", "-d", "30", "--json", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let r = receiver(&d, "vale0:p", c);
    let t = preloaded(&d, &["tx", "vale0:n", "-n", "3000", "-r", PACE, "-t", "20"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{:?}", text(&t));
    let o = r.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("pktgen's JSON");
    assert_eq!(v["packets"].as_u64(), Some(3000), "{v}");

    // ptnet-pktgen → nm-tx-rx: its frames are not nm-tx-rx's kind, so they are counted as
    // ignored, every one.
    let r = receiver(
        &d,
        "vale0:m",
        preloaded(&d, &["rx", "vale0:m", "-n", "1", "-t", "4"]),
    );
    let st = Command::new(target_bin("ptnet-pktgen"))
        .args(["tx", "-i", "vale0:g", "--socket", &d.socket])
        .args([
            "-n",
            "2500",
            "-R",
            PACE,
            "-q",
            "--dst-mac",
            "ff:ff:ff:ff:ff:ff",
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let o = r.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert!(
        err.contains("nm-tx-rx: 2500 frames of other types ignored"),
        "{out}{err}"
    );
}

#[test]
fn a_port_the_daemon_refuses_is_an_errno_and_a_reason() {
    let d = Daemon::start("nm-refused");
    // A switch that does not exist and may not be made on demand by name: ENXIO-style
    // failure, and the library says why on standard error.
    let o = preloaded(&d, &["rx", "not-a-switch", "-n", "1", "-t", "2"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("libptnet-netmap: not-a-switch:"), "{err}");
}

#[test]
fn nm_tx_rx_waits_with_select_and_epoll_as_well_as_poll() {
    // netmap applications wait with select() and epoll too, then sync explicitly.
    let d = Daemon::start("nm-waits");
    for (k, how) in ["select", "epoll"].iter().enumerate() {
        let (tx, rx) = (format!("vale0:t{k}"), format!("vale0:r{k}"));
        let r = receiver(
            &d,
            &rx,
            preloaded(&d, &["rx", &rx, "-n", "3000", "-t", "20", "-w", how]),
        );
        let t = preloaded(
            &d,
            &["tx", &tx, "-n", "3000", "-r", PACE, "-t", "20", "-w", how],
        )
        .output()
        .unwrap();
        let (out, err) = text(&t);
        assert!(t.status.success(), "tx -w {how}: {out}{err}");
        let o = r.wait_with_output().unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "rx -w {how}: {out}{err}");
        assert_eq!(out.trim(), "nm-tx-rx: rx 3000 frames, 0 bad", "-w {how}");
    }
}

#[test]
fn a_hostile_netmap_application_hurts_nobody_but_itself() {
    // nm-hostile scribbles over its rings, slots and netmap_if, syncs, polls, and sends
    // malformed requests (bad versions, options, names, bodies at bad addresses): every
    // malformed request must fail, and the daemon and the other ports must not notice.
    let d = Daemon::start("nm-hostile");
    let o = preloaded_program(&d, &nm_hostile(), &["vale0:evil", "-n", "20000", "-s", "7"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "nm-hostile: {out}{err}");
    assert!(out.contains(" 0 accepted"), "{out}");
    let r = receiver(
        &d,
        "vale0:b",
        preloaded(&d, &["rx", "vale0:b", "-n", "1000", "-t", "20"]),
    );
    let t = preloaded(&d, &["tx", "vale0:a", "-n", "1000", "-r", PACE, "-t", "20"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{:?}", text(&t));
    let o = r.wait_with_output().unwrap();
    assert_eq!(text(&o).0.trim(), "nm-tx-rx: rx 1000 frames, 0 bad");
    assert!(d.ctl(&["list"]).0);
}

#[test]
fn nm_pingpong_round_trips_through_vale0() {
    let d = Daemon::start("nm-pingpong");
    let pong = receiver(
        &d,
        "vale0:pong",
        preloaded_program(
            &d,
            &nm_pingpong(),
            &["pong", "vale0:pong", "-n", "500", "-t", "30"],
        ),
    );
    let ping = preloaded_program(
        &d,
        &nm_pingpong(),
        &["ping", "vale0:ping", "-n", "500", "-t", "30"],
    )
    .output()
    .unwrap();
    let (out, err) = text(&ping);
    assert!(ping.status.success(), "ping: {out}{err}");
    assert!(out.starts_with("nm-pingpong: 500 replies, 0 lost"), "{out}");
    let o = pong.wait_with_output().unwrap();
    assert_eq!(text(&o).0.trim(), "nm-pingpong: echoed 500");
}

#[test]
fn ptnet_pktgen_through_netmaps_api_and_the_library_receives_every_frame() {
    // ptnet-pktgen's own netmap backend (the one guests use) duplicates its /dev/netmap
    // descriptor before it maps the region: the library follows the duplicate.
    let d = Daemon::start("nm-pktgen-api");
    let mut c = Command::new(target_bin("ptnet-pktgen"));
    c.args(["rx", "-i", "netmap:vale0:y", "-n", "3000", "-d", "30"])
        .args(["--expect-no-loss", "--json", "-q"])
        .env("LD_PRELOAD", target_bin("libptnet_netmap.so"))
        .env("PTNET_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let r = receiver(&d, "vale0:y", c);
    let t = Command::new(target_bin("ptnet-pktgen"))
        .args(["tx", "-i", "vale0:x", "--socket", &d.socket])
        .args(["-n", "3000", "-R", PACE, "-q", "--json"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{t:?}");
    let o = r.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "rx through the library: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("pktgen's JSON");
    assert_eq!(v["packets"].as_u64(), Some(3000), "{v}");
}
