//! The host side of a VM test: the real `ptnetd` on a private socket, `ptnetctl` against
//! it, and host clients (`ptnet-pktgen`).
//!
//! The binaries come from `PTNET_BIN_DIR` (ci/tier3-vm.sh builds them and sets it), or
//! from the test executable's target directory (`target/<profile>/`).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Environment variable naming the directory with `ptnetd`, `ptnetctl` and `ptnet-pktgen`.
pub const ENV_BIN_DIR: &str = "PTNET_BIN_DIR";

/// Errors of the host side.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// A binary is missing.
    #[error(
        "{0} not found: build it (cargo build -p ptnetd -p ptnetctl -p ptnet-pktgen) or set PTNET_BIN_DIR"
    )]
    Missing(PathBuf),
    /// A process could not be started.
    #[error("cannot start {what}")]
    Spawn {
        /// Which process.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The daemon did not create its socket in time.
    #[error("ptnetd did not start within 10 s (log: {0})")]
    NoSocket(PathBuf),
    /// A `ptnetctl` command failed.
    #[error("ptnetctl {args} failed: {output}")]
    Ctl {
        /// Its arguments.
        args: String,
        /// What it printed.
        output: String,
    },
}

/// Where the host binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(ENV_BIN_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    // Tests run from target/<profile>/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/debug"))
}

/// One host binary by name, checked to exist.
pub fn host_bin(name: &str) -> Result<PathBuf, DaemonError> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(DaemonError::Missing(p))
    }
}

/// A running `ptnetd` (embedded default: switch `vale0`); killed by PID when dropped.
pub struct Ptnetd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    /// The configuration file, when started from one ([`Ptnetd::start_with_config`]).
    config: Option<PathBuf>,
}

impl Ptnetd {
    /// Starts the daemon with its socket and log in `dir`.
    pub fn start(dir: &Path) -> Result<Self, DaemonError> {
        Self::spawn(dir.join("ptnetd.sock"), dir.join("ptnetd.log"), None)
    }

    /// Starts the daemon from the configuration `toml` (written to `dir/ptnetd.toml`), whose
    /// `[daemon] socket` must be `dir/ptnetd.sock` (see [`Ptnetd::socket_in`]).
    pub fn start_with_config(dir: &Path, toml: &str) -> Result<Self, DaemonError> {
        let config = dir.join("ptnetd.toml");
        std::fs::write(&config, toml).map_err(|source| DaemonError::Spawn {
            what: format!("ptnetd (config {})", config.display()),
            source,
        })?;
        Self::spawn(Self::socket_in(dir), dir.join("ptnetd.log"), Some(config))
    }

    /// The control socket a daemon of `dir` uses.
    pub fn socket_in(dir: &Path) -> PathBuf {
        dir.join("ptnetd.sock")
    }

    /// Kills the daemon (SIGKILL, as a crash would) and starts it again with the same
    /// arguments; its log continues in the same file.
    pub fn restart(&mut self) -> Result<(), DaemonError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // (Dropping the old value is harmless: its child is reaped, so kill and wait do
        // nothing.)
        *self = Self::spawn(self.socket.clone(), self.log.clone(), self.config.clone())?;
        Ok(())
    }

    fn spawn(socket: PathBuf, log: PathBuf, config: Option<PathBuf>) -> Result<Self, DaemonError> {
        let _ = std::fs::remove_file(&socket);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| DaemonError::Spawn {
                what: format!("ptnetd (log {})", log.display()),
                source,
            })?;
        let mut cmd = Command::new(host_bin("ptnetd")?);
        match &config {
            Some(c) => cmd.arg("--config").arg(c),
            None => cmd.arg("--socket").arg(&socket),
        };
        // VMs' sockets beside the control socket (see `vm_socket`).
        if let Some(dir) = socket.parent() {
            cmd.arg("--vm-socket-dir").arg(dir);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .map_err(|source| DaemonError::Spawn {
                what: "ptnetd".into(),
                source,
            })?;
        let d = Ptnetd {
            child,
            socket,
            log,
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&d.socket).is_err() {
            if Instant::now() > deadline {
                return Err(DaemonError::NoSocket(d.log.clone()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `ptnetctl ARGS` against this daemon; its stdout on success.
    pub fn ctl(&self, args: &[&str]) -> Result<String, DaemonError> {
        let out: Output = Command::new(host_bin("ptnetctl")?)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(|source| DaemonError::Spawn {
                what: "ptnetctl".into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(DaemonError::Ctl {
                args: args.join(" "),
                output: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
            })
        }
    }

    /// The name under which the daemon makes the VM socket `socket`: VM sockets are names in
    /// the daemon's own directory, here the one of its control socket.
    fn vm_socket(&self, socket: &Path) -> Result<String, DaemonError> {
        match (socket.parent(), socket.file_name()) {
            (Some(dir), Some(name)) if Some(dir) == self.socket.parent() => {
                Ok(name.to_string_lossy().into_owned())
            }
            _ => Err(DaemonError::Ctl {
                args: format!("serve {}", socket.display()),
                output: "a VM socket must be in the daemon's directory".into(),
            }),
        }
    }

    /// Serves `port` to a VM on the vhost-user socket `socket` (in the daemon's directory)
    /// and returns the QEMU arguments of its ptnet device (guest RAM must be shared:
    /// [`crate::VmConfig::shared_memory`]).
    pub fn serve_vm(
        &self,
        port: &str,
        socket: &Path,
        trusted: bool,
    ) -> Result<Vec<String>, DaemonError> {
        self.serve_vm_over(port, socket, trusted, "vhost-user")
    }

    /// [`Ptnetd::serve_vm`] over `transport` (`vhost-user`, or `ivshmem`: QEMU's stock
    /// `ivshmem-doorbell`, no shared guest RAM needed).
    pub fn serve_vm_over(
        &self,
        port: &str,
        socket: &Path,
        trusted: bool,
        transport: &str,
    ) -> Result<Vec<String>, DaemonError> {
        let sock = self.vm_socket(socket)?;
        let mut args = vec![
            "serve-vm",
            port,
            "--socket",
            &sock,
            "--transport",
            transport,
        ];
        if trusted {
            args.push("--trusted");
        }
        self.ctl(&args)?;
        self.qemu_args(port)
    }

    /// Serves `port` to a VM as a virtio-net device (vhost-user, for the stock `virtio_net`
    /// driver) on `socket` and returns its QEMU arguments.
    pub fn serve_virtio_net(&self, port: &str, socket: &Path) -> Result<Vec<String>, DaemonError> {
        let sock = self.vm_socket(socket)?;
        self.ctl(&["serve-virtio-net", port, "--socket", &sock])?;
        self.qemu_args(port)
    }

    /// The QEMU arguments of a port served to a VM (`ptnetctl --json qemu-args`).
    pub fn qemu_args(&self, port: &str) -> Result<Vec<String>, DaemonError> {
        let json = self.ctl(&["--json", "qemu-args", port])?;
        let v: serde_json::Value =
            serde_json::from_str(json.trim()).map_err(|e| DaemonError::Ctl {
                args: format!("--json qemu-args {port}"),
                output: format!("unparsable output {json:?}: {e}"),
            })?;
        let list = v["args"].as_array().ok_or_else(|| DaemonError::Ctl {
            args: format!("--json qemu-args {port}"),
            output: format!("no args in {json:?}"),
        })?;
        Ok(list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect())
    }

    /// The counters of `port` (`ptnetctl --json stats`): `tx_packets`, `rx_packets`,
    /// `kicks`, `irqs`, ...
    pub fn port_stats(&self, port: &str) -> Result<serde_json::Value, DaemonError> {
        let json = self.ctl(&["--json", "stats", port])?;
        let v: serde_json::Value =
            serde_json::from_str(json.trim()).map_err(|e| DaemonError::Ctl {
                args: format!("--json stats {port}"),
                output: format!("unparsable output {json:?}: {e}"),
            })?;
        find_port(&v, port)
            .map(|p| p["stats"].clone())
            .ok_or_else(|| DaemonError::Ctl {
                args: format!("--json stats {port}"),
                output: format!("no port {port} in {json}"),
            })
    }

    /// The VM side of `port` in `ptnetctl --json list` (device state and counters).
    pub fn vm_entry(&self, port: &str) -> Result<serde_json::Value, DaemonError> {
        let json = self.ctl(&["--json", "list"])?;
        let v: serde_json::Value =
            serde_json::from_str(json.trim()).map_err(|e| DaemonError::Ctl {
                args: "--json list".into(),
                output: format!("unparsable output {json:?}: {e}"),
            })?;
        find_port(&v, port)
            .map(|p| p["vm"].clone())
            .filter(|vm| !vm.is_null())
            .ok_or_else(|| DaemonError::Ctl {
                args: "--json list".into(),
                output: format!("no VM on port {port} in {json}"),
            })
    }

    /// Starts `ptnet-pktgen ARGS` against this daemon (a host client).
    pub fn pktgen(&self, args: &[&str]) -> Result<Child, DaemonError> {
        Command::new(host_bin("ptnet-pktgen")?)
            .args(args)
            .env("PTNET_SOCKET", &self.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DaemonError::Spawn {
                what: "ptnet-pktgen".into(),
                source,
            })
    }
}

impl Drop for Ptnetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port entry named `name` anywhere in a `ptnetctl --json` listing.
fn find_port<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("name").and_then(|n| n.as_str()) == Some(name) && m.contains_key("stats") {
                return Some(v);
            }
            m.values().find_map(|x| find_port(x, name))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_port(x, name)),
        _ => None,
    }
}
