//! Tier 2 (host integration): the real `ptnetd` and `ptnet-pktgen` processes exchanging
//! traffic across vale0 and across a pipe, and ping/pong.
//!
//! Run with `cargo test -p ptnet-pktgen --features host-tests`. Each test starts its own
//! daemon on a socket in a fresh temporary directory and kills only the processes it started.
//!
//! Finding `ptnetd`: cargo only exposes `CARGO_BIN_EXE_*` for binaries of the package under
//! test, and a binary cannot be a dev-dependency. So the tests look for `ptnetd` next to
//! `ptnet-pktgen` (the same `target/<profile>/` directory, which honours `CARGO_TARGET_DIR`),
//! or at `$PTNETD` if set. If it is missing they fail with the command that builds it
//! (`cargo build -p ptnetd`, with `--release` for a release test run); they do not run cargo
//! themselves, which would wait on the build-directory lock the outer `cargo test` may hold.
#![cfg(feature = "host-tests")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ptnet_client::proto::{self, Counters, PortEntry, PortRequest, Reply, Request};
use serde_json::Value;

const PKTGEN: &str = env!("CARGO_BIN_EXE_ptnet-pktgen");

fn ptnetd_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PTNETD") {
        return PathBuf::from(p);
    }
    let dir = Path::new(PKTGEN).parent().expect("target directory");
    let p = dir.join("ptnetd");
    assert!(
        p.exists(),
        "{} is missing: build it first with `cargo build -p ptnetd{}` (or set $PTNETD)",
        p.display(),
        if dir.ends_with("release") {
            " --release"
        } else {
            ""
        }
    );
    p
}

/// A `ptnetd` of our own on a temporary socket; killed (by its PID) when dropped.
struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: String,
}

impl Daemon {
    fn start(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ptnet-pktgen-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let socket = dir.join("ptnetd.sock");
        let log = std::fs::File::create(dir.join("ptnetd.log")).expect("log file");
        let child = Command::new(ptnetd_path())
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ptnetd");
        let d = Daemon {
            child,
            dir,
            socket: socket.to_string_lossy().into_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while proto::call(&d.socket, Request::List).is_err() {
            assert!(Instant::now() < deadline, "ptnetd did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn request(&self, r: Request) -> Reply {
        proto::call(&self.socket, r).expect("talk to ptnetd").0
    }

    fn create_port(&self, name: &str) {
        let r = self.request(Request::CreatePort(PortRequest {
            port: name.into(),
            ..Default::default()
        }));
        assert_eq!(r, Reply::Ok, "create {name}");
    }

    fn port(&self, name: &str) -> Option<PortEntry> {
        match self.request(Request::List) {
            Reply::Listing { switches, pipes } => switches
                .into_iter()
                .flat_map(|s| s.ports)
                .chain(pipes)
                .find(|p| p.name == name),
            r => panic!("unexpected reply {r:?}"),
        }
    }

    fn stats(&self, name: &str) -> Counters {
        self.port(name)
            .unwrap_or_else(|| panic!("no port {name}"))
            .stats
    }

    fn wait_attached(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.port(name).is_some_and(|p| p.attached) {
            assert!(Instant::now() < deadline, "{name} never attached");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pktgen(&self, args: &[&str]) -> Child {
        Command::new(PKTGEN)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ptnet-pktgen")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for a pktgen with a deadline (killing it if it overruns); its exit status, stdout
/// and stderr.
fn finish(mut c: Child, limit: Duration) -> (ExitStatus, String, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(_status) = c.try_wait().expect("wait") {
            break;
        }
        if Instant::now() >= deadline {
            let _ = c.kill();
            let out = c.wait_with_output().expect("output");
            panic!(
                "ptnet-pktgen overran {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c.wait_with_output().expect("output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs to completion and parses the JSON summary, requiring exit code `code`.
fn summary(c: Child, code: i32) -> Value {
    let (status, out, err) = finish(c, Duration::from_secs(120));
    assert_eq!(status.code(), Some(code), "stdout: {out}\nstderr: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

const COUNT: u64 = 100_000;

#[test]
fn tx_to_rx_across_vale0_delivers_every_frame_or_counts_its_drop() {
    let d = Daemon::start("vale");
    // Persistent ports keep their counters after the clients detach.
    d.create_port("vale0:tx");
    d.create_port("vale0:rx");
    // A bystander: the switch must not flood the stream to it.
    d.create_port("vale0:other");
    let n = COUNT.to_string();
    let rx = d.pktgen(&[
        "rx", "-i", "vale0:rx", "--check", "-n", &n, "--idle", "3", "-d", "60", "--json", "-q",
    ]);
    d.wait_attached("vale0:rx");
    // The receiver announces its address with one frame the switch learns from and drops.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.stats("vale0:rx").tx_drops == 0 {
        assert!(Instant::now() < deadline, "rx never announced its address");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Paced: VALE drops when the receiver's ring is full, and a paced sender gives a receiver
    // that is scheduled normally no reason to fall 1024 frames behind.
    let tx = d.pktgen(&[
        "tx", "-i", "vale0:tx", "-n", &n, "-R", "200000", "--json", "-q",
    ]);
    let t = summary(tx, 0);
    let r = summary(rx, 0);
    assert_eq!(u(&t, "packets"), COUNT);
    assert_eq!(u(&t, "tx_pending_at_exit"), 0);
    assert_eq!(d.stats("vale0:tx").tx_packets, COUNT);
    let drops = d.stats("vale0:rx").rx_drops;
    if drops > 0 {
        eprintln!("vale0:rx dropped {drops} frames (receiver descheduled?)");
    }
    assert_eq!(u(&r, "packets") + drops, COUNT, "{r}");
    assert_eq!(
        u(&r, "lost"),
        drops,
        "every missing frame is a counted drop"
    );
    assert_eq!((u(&r, "out_of_order"), u(&r, "bad_payload")), (0, 0));
    assert_eq!(d.stats("vale0:rx").rx_packets, u(&r, "packets"));
    let other = d.stats("vale0:other");
    assert_eq!(
        (other.rx_packets, other.rx_drops),
        (0, 0),
        "unicast, not flooded"
    );
}

#[test]
fn tx_to_rx_across_a_pipe_loses_nothing() {
    let d = Daemon::start("pipe");
    let n = COUNT.to_string();
    let rx = d.pktgen(&[
        "rx",
        "-i",
        "pk}1",
        "--expect-no-loss",
        "-n",
        &n,
        "-d",
        "60",
        "--json",
        "-q",
    ]);
    d.wait_attached("pk}1");
    // Unpaced: a pipe never drops, the sender waits for room.
    let tx = d.pktgen(&["tx", "-i", "pk{1", "-n", &n, "-l", "128", "--json", "-q"]);
    let t = summary(tx, 0);
    let r = summary(rx, 0);
    assert_eq!(u(&t, "packets"), COUNT);
    assert_eq!(u(&r, "packets"), COUNT);
    assert_eq!(u(&r, "bytes"), COUNT * 128);
    assert_eq!(
        (
            u(&r, "good"),
            u(&r, "lost"),
            u(&r, "out_of_order"),
            u(&r, "bad_payload")
        ),
        (COUNT, 0, 0, 0)
    );
}

#[test]
fn multi_slot_frames_cross_a_pipe_intact() {
    let d = Daemon::start("frags");
    let rx = d.pktgen(&[
        "rx",
        "-i",
        "pj}1",
        "--expect-no-loss",
        "-n",
        "2000",
        "-d",
        "60",
        "--json",
        "-q",
    ]);
    d.wait_attached("pj}1");
    let tx = d.pktgen(&[
        "tx", "-i", "pj{1", "-n", "2000", "-l", "9000", "--json", "-q",
    ]);
    assert_eq!(u(&summary(tx, 0), "packets"), 2000);
    let r = summary(rx, 0);
    assert_eq!((u(&r, "good"), u(&r, "bytes")), (2000, 2000 * 9000));
}

#[test]
fn ping_pong_across_vale0_times_every_round_trip() {
    let d = Daemon::start("ping");
    let pong = d.pktgen(&[
        "pong",
        "-i",
        "vale0:pong",
        "-n",
        "2000",
        "-d",
        "60",
        "--json",
        "-q",
    ]);
    d.wait_attached("vale0:pong");
    let ping = d.pktgen(&[
        "ping",
        "-i",
        "vale0:ping",
        "-n",
        "2000",
        "--expect-no-loss",
        "--json",
        "-q",
    ]);
    let p = summary(ping, 0);
    let q = summary(pong, 0);
    assert_eq!((u(&p, "pings_sent"), u(&p, "pongs_received")), (2000, 2000));
    assert_eq!(u(&q, "packets"), 2000);
    let rtt: Vec<f64> = ["min", "p50", "p90", "p99", "max"]
        .iter()
        .map(|k| p[format!("rtt_us_{k}")].as_f64().expect("rtt"))
        .collect();
    assert!(rtt[0] > 0.0, "{p}");
    assert!(
        rtt.windows(2).all(|w| w[0] <= w[1]),
        "percentiles in order: {rtt:?}"
    );
}

#[test]
fn a_short_stream_fails_expect_no_loss_with_exit_code_1() {
    let d = Daemon::start("loss");
    let rx = d.pktgen(&[
        "rx",
        "-i",
        "pl}1",
        "--expect-no-loss",
        "-n",
        "100",
        "--idle",
        "1",
        "-d",
        "30",
        "--json",
        "-q",
    ]);
    d.wait_attached("pl}1");
    let tx = d.pktgen(&["tx", "-i", "pl{1", "-n", "60", "--json", "-q"]);
    assert_eq!(u(&summary(tx, 0), "packets"), 60);
    let r = summary(rx, 1);
    assert_eq!((u(&r, "packets"), u(&r, "lost")), (60, 40));
}

#[test]
fn usage_and_attach_errors_exit_with_code_2() {
    let d = Daemon::start("usage");
    let (s, _, err) = finish(
        d.pktgen(&["tx", "-i", "vale0:a", "-l", "20"]),
        Duration::from_secs(10),
    );
    assert_eq!(s.code(), Some(2), "{err}");
    assert!(err.contains("frame size 20"), "{err}");
    let (s, _, err) = finish(
        Command::new(PKTGEN)
            .args([
                "rx",
                "-i",
                "vale0:a",
                "--socket",
                "/nonexistent/ptnetd.sock",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start"),
        Duration::from_secs(10),
    );
    assert_eq!(s.code(), Some(2), "{err}");
    assert!(err.contains("cannot attach vale0:a"), "{err}");
    let (s, _, err) = finish(
        d.pktgen(&["tx", "-i", "nosuchswitch:a", "-n", "1"]),
        Duration::from_secs(10),
    );
    assert_eq!(s.code(), Some(2), "{err}");
}

#[test]
fn fwd_relays_a_stream_between_two_pipes_intact() {
    let d = Daemon::start("fwd");
    let n = COUNT.to_string();
    let rx = d.pktgen(&[
        "rx",
        "-i",
        "fb}1",
        "--expect-no-loss",
        "-n",
        &n,
        "-d",
        "60",
        "--json",
        "-q",
    ]);
    let fwd = d.pktgen(&[
        "fwd", "-i", "fa}1", "-i", "fb{1", "-n", &n, "-d", "60", "--json", "-q",
    ]);
    d.wait_attached("fb}1");
    d.wait_attached("fb{1");
    d.wait_attached("fa}1");
    let tx = d.pktgen(&["tx", "-i", "fa{1", "-n", &n, "-l", "200", "--json", "-q"]);
    assert_eq!(u(&summary(tx, 0), "packets"), COUNT);
    let f = summary(fwd, 0);
    assert_eq!((u(&f, "packets"), u(&f, "bytes")), (COUNT, COUNT * 200));
    let r = summary(rx, 0);
    assert_eq!((u(&r, "good"), u(&r, "lost")), (COUNT, 0));
}
