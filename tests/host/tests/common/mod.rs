//! What the tier-2 test files share: the real `ptnetd` on a private socket, and child
//! processes (test clients, generators) whose last stdout line is their JSON result.
//!
//! Build the binaries first (`cargo build -p ptnetd -p ptnetctl`, same profile as the
//! tests); `ci/tier2.sh` does.
#![allow(dead_code)] // every test file uses its own part of this module

pub mod frontend;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ptnet_client::proto::{self, Reply, Request};

/// A workspace binary next to the test executable (tests run from target/<profile>/deps/).
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build -p {name}, same profile as the tests)",
        bin.display()
    );
    bin
}

/// A running daemon on a private socket; killed (by PID) when dropped, its log kept if the
/// test failed.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: String,
}

impl Daemon {
    pub fn start(test: &str) -> Self {
        Self::start_with(test, None)
    }

    /// Starts the daemon with the configuration `toml` (on the private socket all the same).
    pub fn start_with_config(test: &str, toml: &str) -> Self {
        Self::start_with(test, Some(toml))
    }

    fn start_with(test: &str, toml: Option<&str>) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ptnet-t2-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Other users' clients reach the socket in here (the socket's mode then decides).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("ptnetd.sock").to_string_lossy().into_owned();
        let log = std::fs::File::create(dir.join("ptnetd.log")).unwrap();
        let mut cmd = Command::new(target_bin("ptnetd"));
        if let Some(t) = toml {
            let path = dir.join("ptnetd.toml");
            std::fs::write(&path, t).unwrap();
            cmd.arg("--config").arg(path);
        }
        // VMs' sockets in the test's directory, unless the configuration says where.
        if !toml.is_some_and(|t| t.contains("vm_socket_dir")) {
            cmd.arg("--vm-socket-dir").arg(&dir);
        }
        let child = cmd
            .args(["--socket", &socket])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ptnetd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "ptnetd did not start (see {})",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, dir, socket }
    }

    /// Starts a test client (`ptnet-test-client`); waits for its "ready" line when
    /// `wait_ready`.
    pub fn client(&self, args: &[&str], wait_ready: bool) -> Proc {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ptnet-test-client"));
        c.args(args).args(["--socket", &self.socket]);
        Proc::spawn(c, wait_ready)
    }

    /// Runs `ptnetctl` against this daemon: success and everything it printed.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new(target_bin("ptnetctl"))
            .args(["--socket", &self.socket])
            .args(args)
            .output()
            .expect("ptnetctl");
        let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&o.stderr));
        (o.status.success(), text)
    }

    /// Runs `prog` (a [`Daemon::public_bin`]) with `args` as user `uid` (group `uid`) with
    /// the supplementary `groups`, through util-linux's `setpriv`; `$PTNET_SOCKET` names this
    /// daemon's socket.
    pub fn run_as(&self, uid: u32, groups: &[u32], prog: &Path, args: &[&str]) -> (bool, String) {
        let groups = if groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let g: Vec<String> = groups.iter().map(u32::to_string).collect();
            format!("--groups={}", g.join(","))
        };
        let o = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg(groups)
            .arg(prog)
            .args(args)
            .env("PTNET_SOCKET", &self.socket)
            .output()
            .expect("setpriv");
        let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&o.stderr));
        (o.status.success(), text)
    }

    /// A copy of binary `path` in the daemon's directory that any user may run (the build
    /// can live under a directory only root enters, such as `/root`).
    pub fn public_bin(&self, path: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let to = self.dir.join(path.file_name().expect("a binary's name"));
        std::fs::copy(path, &to).expect("copy the binary");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        to
    }

    pub fn list(&self) -> (Vec<proto::SwitchEntry>, Vec<proto::PortEntry>) {
        match proto::call(&self.socket, Request::List).expect("list").0 {
            Reply::Listing { switches, pipes } => (switches, pipes),
            r => panic!("unexpected reply {r:?}"),
        }
    }

    /// Waits until no client holds port `name`: a client's exit reaches the daemon as a
    /// hang-up on its socket, which the daemon reclaims asynchronously.
    pub fn wait_detached(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.port(name).is_some_and(|p| p.attached) {
            assert!(
                Instant::now() < deadline,
                "port {name} still held 10 s after its client exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self, name: &str) -> Option<proto::PortEntry> {
        let (sw, pipes) = self.list();
        sw.into_iter()
            .flat_map(|s| s.ports)
            .chain(pipes)
            .find(|p| p.name == name)
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("daemon log kept in {}", self.dir.display());
        }
    }
}

/// A child process with piped output; its last stdout line is its JSON result. Killed (by
/// PID) if still running when dropped.
pub struct Proc {
    pub child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Proc {
    pub fn spawn(mut c: Command, wait_ready: bool) -> Self {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        if wait_ready {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert!(line.contains("ready"), "not ready: {line:?}");
        }
        Proc { child, out }
    }

    /// Waits for the process; its exit success and its last stdout line (JSON), or the raw
    /// line and its stderr.
    pub fn finish(mut self) -> (bool, serde_json::Value) {
        let status = self.child.wait().expect("wait");
        let mut last = String::new();
        for l in (&mut self.out).lines() {
            last = l.expect("read");
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        let v = serde_json::from_str(&last)
            .unwrap_or_else(|_| serde_json::json!({ "raw": last, "stderr": err }));
        (status.success(), v)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// DPDK's test application, the virtio-user client of the virtio-net tests.
pub const TESTPMD: &str = "dpdk-testpmd";

/// `dpdk-testpmd` with one virtio-user port on `socket`, in `mode` (`txonly`, `rxonly`),
/// stopped with SIGINT after `secs` (testpmd prints its totals on the way out).
pub fn testpmd(socket: &Path, prefix: &str, mac: &str, mode: &str, secs: u32) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-s", "INT", &secs.to_string(), TESTPMD])
        .args(["-l", "0,1", "--no-huge", "-m", "512", "--no-pci"])
        .arg(format!("--file-prefix={prefix}"))
        .arg("--vdev")
        .arg(format!(
            "net_virtio_user0,path={},queues=1,mac={mac}",
            socket.display()
        ))
        .args([
            "--",
            "--nb-cores=1",
            "--total-num-mbufs=16384",
            "--stats-period",
            "1",
        ])
        .arg(format!("--forward-mode={mode}"));
    c.stdin(Stdio::null());
    c
}

/// The port-0 totals testpmd printed at exit: (RX-packets, TX-packets).
pub fn totals(o: &Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&o.stdout);
    let block = text
        .split("Forward statistics for port 0")
        .nth(1)
        .unwrap_or_else(|| panic!("no totals in testpmd's output:\n{text}"));
    let field = |name: &str| -> u64 {
        block
            .split(name)
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in testpmd's totals:\n{block}"))
    };
    (field("RX-packets:"), field("TX-packets:"))
}
