//! A running guest: start QEMU, watch its console, wait for its verdict, clean up.
//!
//! The guest's test script reports its exit status on the serial console as a line
//! `PTNET-EXIT=<status>` just before the guest powers off. [`Vm::wait`] waits for QEMU to
//! exit or for the timeout, whichever comes first; a guest still running at the timeout,
//! and any [`Vm`] dropped while its QEMU runs, is killed (by its own PID, nothing else)
//! and reaped.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::config::VmConfig;

/// The marker the guest's init prints before it powers off.
pub const EXIT_MARKER: &str = "PTNET-EXIT=";

/// How often a waiting caller looks at QEMU and the console.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many console lines an error message quotes.
const TAIL_LINES: usize = 40;

/// Errors while running a guest, and guests that did not pass.
#[derive(Debug, Error)]
pub enum VmError {
    /// A file the guest needs does not exist.
    #[error("{what} {path} does not exist")]
    MissingFile {
        /// What the file is for (`kernel`, `initrd`).
        what: &'static str,
        /// The path that was given.
        path: PathBuf,
    },
    /// A log file could not be created or read.
    #[error("cannot use log file {path}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// QEMU could not be started.
    #[error("cannot start {qemu} for VM {name}")]
    Spawn {
        /// The VM's name.
        name: String,
        /// The QEMU binary.
        qemu: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Waiting for or killing QEMU failed.
    #[error("cannot wait for or kill QEMU of VM {name}")]
    Wait {
        /// The VM's name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The console did not show an expected text before the deadline or QEMU's exit.
    #[error("VM {name}: console did not show {needle:?} ({why}); console ends with:\n{tail}")]
    ConsoleMissing {
        /// The VM's name.
        name: String,
        /// The text that was expected.
        needle: String,
        /// `timed out after N s` or `QEMU exited: ...`.
        why: String,
        /// The last lines of the console.
        tail: String,
    },
    /// The guest ran into its timeout and was killed.
    #[error("VM {name} timed out after {secs:.1} s and was killed; console ends with:\n{tail}")]
    TimedOut {
        /// The VM's name.
        name: String,
        /// The timeout.
        secs: f64,
        /// The last lines of the console.
        tail: String,
    },
    /// The guest's test script reported a non-zero status.
    #[error("VM {name}: test script exited with status {status}; console ends with:\n{tail}")]
    GuestFailed {
        /// The VM's name.
        name: String,
        /// The status from `PTNET-EXIT=`.
        status: i32,
        /// The last lines of the console.
        tail: String,
    },
    /// QEMU ended without the guest reporting a status (QEMU error, kernel panic, ...).
    #[error(
        "VM {name}: no {EXIT_MARKER} line on the console (QEMU {qemu_status}); \
         QEMU stderr:\n{stderr}\nconsole ends with:\n{tail}"
    )]
    NoExitStatus {
        /// The VM's name.
        name: String,
        /// How QEMU ended.
        qemu_status: String,
        /// QEMU's stderr.
        stderr: String,
        /// The last lines of the console.
        tail: String,
    },
}

/// What became of a guest.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The VM's name.
    pub name: String,
    /// The status the guest's test script reported, if the console shows one.
    pub exit_status: Option<i32>,
    /// The whole console text.
    pub console: String,
    /// QEMU's stderr.
    pub qemu_stderr: String,
    /// The guest was killed at its timeout.
    pub timed_out: bool,
    /// How QEMU exited (a signal when it was killed).
    pub qemu_status: ExitStatus,
    /// Wall time from start to QEMU's exit.
    pub elapsed: Duration,
    /// The configured timeout.
    pub timeout: Duration,
}

impl VmOutcome {
    /// The guest finished in time and its test script exited with status 0.
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.exit_status == Some(0)
    }

    /// `Ok` if the guest succeeded, otherwise an error that quotes the end of the console.
    pub fn check(&self) -> Result<(), VmError> {
        let tail = console_tail(&self.console, TAIL_LINES);
        if self.timed_out {
            return Err(VmError::TimedOut {
                name: self.name.clone(),
                secs: self.timeout.as_secs_f64(),
                tail,
            });
        }
        match self.exit_status {
            Some(0) => Ok(()),
            Some(status) => Err(VmError::GuestFailed {
                name: self.name.clone(),
                status,
                tail,
            }),
            None => Err(VmError::NoExitStatus {
                name: self.name.clone(),
                qemu_status: self.qemu_status.to_string(),
                stderr: self.qemu_stderr.trim_end().to_owned(),
                tail,
            }),
        }
    }
}

/// The status from the last `PTNET-EXIT=<status>` on the console, if any.
pub fn parse_exit_status(console: &str) -> Option<i32> {
    console.rmatch_indices(EXIT_MARKER).find_map(|(i, _)| {
        let rest = &console[i + EXIT_MARKER.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// The last `lines` lines of a console, without carriage returns.
fn console_tail(console: &str, lines: usize) -> String {
    let all: Vec<&str> = console.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A guest whose QEMU was started by [`Vm::start`].
#[derive(Debug)]
pub struct Vm {
    config: VmConfig,
    /// `None` once QEMU has been reaped.
    child: Option<Child>,
    started: Instant,
}

impl Vm {
    /// Starts QEMU for `config`. The console log (and QEMU's stderr log next to it) is
    /// created afresh; a stale log from an earlier run is removed first.
    pub fn start(config: VmConfig) -> Result<Self, VmError> {
        for (what, path) in [("kernel", &config.kernel), ("initrd", &config.initrd)] {
            if !path.is_file() {
                return Err(VmError::MissingFile {
                    what,
                    path: path.clone(),
                });
            }
        }
        let log_err = |path: &Path| {
            let path = path.to_owned();
            move |source| VmError::Log { path, source }
        };
        if let Some(dir) = config
            .console_log
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            fs::create_dir_all(dir).map_err(log_err(dir))?;
        }
        // QEMU truncates the file itself; creating it here means a reader never races
        // with its creation and never sees a previous run's text.
        File::create(&config.console_log).map_err(log_err(&config.console_log))?;
        let stderr_path = config.stderr_log();
        let stderr = File::create(&stderr_path).map_err(log_err(&stderr_path))?;

        log::info!(
            "starting VM {}: {} {:?}",
            config.name,
            config.qemu.display(),
            config.qemu_command_args()
        );
        let child = Command::new(&config.qemu)
            .args(config.qemu_command_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| VmError::Spawn {
                name: config.name.clone(),
                qemu: config.qemu.clone(),
                source,
            })?;
        Ok(Self {
            config,
            child: Some(child),
            started: Instant::now(),
        })
    }

    /// The configuration the guest was started with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// QEMU's process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The console text so far.
    pub fn console(&self) -> Result<String, VmError> {
        read_lossy(&self.config.console_log)
    }

    /// Waits until the console contains `needle`, for at most `timeout`. Fails if QEMU exits
    /// first or the time runs out (the guest keeps running in that case).
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> Result<(), VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read before checking QEMU's exit: text written just before it exited counts.
            let console = self.console()?;
            if console.contains(needle) {
                return Ok(());
            }
            let why = if let Some(status) = self.try_reap()? {
                Some(format!("QEMU exited: {status}"))
            } else if Instant::now() >= deadline {
                Some(format!("timed out after {:.1} s", timeout.as_secs_f64()))
            } else {
                None
            };
            if let Some(why) = why {
                let console = self.console()?;
                if console.contains(needle) {
                    return Ok(());
                }
                return Err(VmError::ConsoleMissing {
                    name: self.config.name.clone(),
                    needle: needle.to_owned(),
                    why,
                    tail: console_tail(&console, TAIL_LINES),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits for QEMU to exit or for the timeout (counted from the start), kills the guest
    /// at the timeout, and returns what happened. A guest that failed is an `Ok` outcome:
    /// call [`VmOutcome::check`] to turn it into an error.
    pub fn wait(self) -> Result<VmOutcome, VmError> {
        self.wait_inner(None)
    }

    /// Like [`Vm::wait`], and copies the console to `out` as it grows.
    pub fn wait_echo(self, out: &mut dyn Write) -> Result<VmOutcome, VmError> {
        self.wait_inner(Some(out))
    }

    /// Kills QEMU (by its PID) and reaps it. Does nothing if it has already exited.
    pub fn kill(&mut self) -> Result<(), VmError> {
        if let Some(mut child) = self.child.take() {
            let name = &self.config.name;
            let wait_err = |source| VmError::Wait {
                name: name.clone(),
                source,
            };
            if child.try_wait().map_err(wait_err)?.is_none() {
                log::warn!("killing QEMU of VM {name} (pid {})", child.id());
                child.kill().map_err(wait_err)?;
            }
            child.wait().map_err(wait_err)?;
        }
        Ok(())
    }

    /// QEMU's exit status if it has exited (reaping it), `None` while it runs.
    fn try_reap(&mut self) -> Result<Option<ExitStatus>, VmError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(VmError::Wait {
                name: self.config.name.clone(),
                source,
            }),
        }
    }

    fn wait_inner(mut self, mut echo: Option<&mut dyn Write>) -> Result<VmOutcome, VmError> {
        let deadline = self.started + self.config.timeout;
        let mut echoed = 0u64;
        let mut timed_out = false;
        let name = self.config.name.clone();
        let qemu_status = loop {
            if let Some(out) = echo.as_deref_mut() {
                echoed = self.echo_new_console(out, echoed)?;
            }
            let Some(child) = self.child.as_mut() else {
                // Only reachable after a failed wait_for_console reaped QEMU.
                break None;
            };
            let status = child.try_wait().map_err(|source| VmError::Wait {
                name: name.clone(),
                source,
            })?;
            if let Some(status) = status {
                self.child = None;
                break Some(status);
            }
            if Instant::now() >= deadline {
                timed_out = true;
                // Where the guest is stuck, before it is gone: the vCPUs' registers from the
                // monitor, the instruction pointer named from the kernel's System.map.
                if let Some(sock) = self.config.monitor_socket() {
                    report_vcpu_state(&name, &sock);
                }
                log::warn!(
                    "VM {name} timed out after {:.1} s, killing QEMU (pid {})",
                    self.config.timeout.as_secs_f64(),
                    child.id()
                );
                child.kill().map_err(|source| VmError::Wait {
                    name: name.clone(),
                    source,
                })?;
                let status = child.wait().map_err(|source| VmError::Wait {
                    name: name.clone(),
                    source,
                })?;
                self.child = None;
                break Some(status);
            }
            thread::sleep(POLL_INTERVAL);
        };
        let elapsed = self.started.elapsed();
        if let Some(out) = echo {
            self.echo_new_console(out, echoed)?;
        }
        let console = self.console()?;
        let qemu_stderr = read_lossy(&self.config.stderr_log())?;
        let qemu_status = match qemu_status {
            Some(status) => status,
            // QEMU was reaped by wait_for_console; its status is gone, report a failure.
            None => exit_status_unknown(),
        };
        Ok(VmOutcome {
            name,
            exit_status: parse_exit_status(&console),
            console,
            qemu_stderr,
            timed_out,
            qemu_status,
            elapsed,
            timeout: self.config.timeout,
        })
    }

    /// Writes the console bytes after `from` to `out`; returns the new offset.
    fn echo_new_console(&self, out: &mut dyn Write, from: u64) -> Result<u64, VmError> {
        let path = &self.config.console_log;
        let log_err = |source| VmError::Log {
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(log_err)?;
        file.seek(SeekFrom::Start(from)).map_err(log_err)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(log_err)?;
        // The echo is for people watching; a closed stdout must not fail the run.
        let _ = out.write_all(&buf).and_then(|()| out.flush());
        Ok(from + buf.len() as u64)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            log::error!("{e}");
        }
    }
}

/// A file's contents as text, with invalid UTF-8 replaced; a missing file is empty.
fn read_lossy(path: &Path) -> Result<String, VmError> {
    match fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(VmError::Log {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A failing exit status for a QEMU whose real status was consumed elsewhere.
fn exit_status_unknown() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(255 << 8)
}

/// Asks a timed-out guest's monitor for its vCPUs' state (`info registers`, `info cpus`),
/// keeps it next to the console log (`.state`) and prints where each vCPU's RIP is (a symbol
/// of `$PTNET_KERNEL_DIR/System.map` when there is one). Best effort: a monitor that does not
/// answer within 2 s is left alone.
fn report_vcpu_state(name: &str, sock: &Path) {
    use std::os::unix::net::UnixStream;
    let ask = || -> std::io::Result<String> {
        let mut s = UnixStream::connect(sock)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.write_all(b"info cpus\ninfo registers -a\n")?;
        let mut text = Vec::new();
        let until = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(_) if !text.is_empty() => break,
                Err(_) => {}
            }
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    };
    let Ok(state) = ask() else { return };
    let path = sock.with_extension("state");
    let _ = std::fs::write(&path, &state);
    let map = std::env::var_os("PTNET_KERNEL_DIR")
        .map(|d| PathBuf::from(d).join("System.map"))
        .and_then(|p| std::fs::read_to_string(p).ok());
    for rip in state
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("RIP="))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
    {
        let symbol = map.as_deref().and_then(|m| symbol_of(m, rip));
        eprintln!(
            "VM {name} timed out with a vCPU at RIP {rip:#x}{} (state: {})",
            symbol.map(|s| format!(" = {s}")).unwrap_or_default(),
            path.display()
        );
    }
}

/// The `System.map` symbol `addr` falls in, as `name+0xoffset`.
fn symbol_of(map: &str, addr: u64) -> Option<String> {
    map.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let a = u64::from_str_radix(w.next()?, 16).ok()?;
            let _kind = w.next()?;
            Some((a, w.next()?))
        })
        .filter(|(a, _)| *a <= addr)
        .max_by_key(|(a, _)| *a)
        .map(|(a, n)| format!("{n}+{:#x}", addr - a))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_address_is_named_after_the_symbol_it_falls_in() {
        let map =
            "ffffffff81000000 T _stext\nffffffff81001000 T do_idle\nffffffff81002000 t later\n";
        assert_eq!(
            super::symbol_of(map, 0xffff_ffff_8100_1234).as_deref(),
            Some("do_idle+0x234")
        );
        assert_eq!(super::symbol_of(map, 0x1000), None);
    }

    use super::*;
    use crate::config::Accel;
    use crate::scratch::ScratchDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn exit_status_is_read_from_the_last_marker_line() {
        let console =
            "boot\r\nPTNET-EXIT=3\r\nmore\r\n\r\nPTNET-EXIT=0\r\n[ 1.0] reboot: Power down\r\n";
        assert_eq!(parse_exit_status(console), Some(0));
        assert_eq!(parse_exit_status("x\nPTNET-EXIT=127\n"), Some(127));
    }

    #[test]
    fn console_without_a_marker_has_no_exit_status() {
        assert_eq!(parse_exit_status("Kernel panic - not syncing\n"), None);
        assert_eq!(parse_exit_status("PTNET-EXIT=\n"), None);
    }

    #[test]
    fn marker_without_digits_does_not_hide_an_earlier_valid_one() {
        assert_eq!(
            parse_exit_status("PTNET-EXIT=1\nPTNET-EXIT=oops\n"),
            Some(1)
        );
    }

    #[test]
    fn console_tail_keeps_the_last_lines_without_carriage_returns() {
        assert_eq!(console_tail("a\r\nb\r\nc\r\n", 2), "b\nc");
        assert_eq!(console_tail("", 2), "");
    }

    /// A stand-in for QEMU, shared by every test of this process: a shell script that
    /// finds the console log in its arguments and sources `<console log>.fake`, which each
    /// test writes. It is written once, before any test spawns it: writing an executable
    /// while another thread forks makes exec fail with ETXTBSY.
    fn fake_qemu() -> PathBuf {
        static FAKE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        FAKE.get_or_init(|| {
            let dir = std::env::temp_dir();
            let path = dir.join("ptnet-vmtest-fake-qemu-v1");
            let script = "#!/bin/sh\n\
                 for a in \"$@\"; do case \"$a\" in file,id=ptnet-console,path=*) log=${a#*path=};; esac; done\n\
                 . \"$log.fake\"\n";
            let tmp = dir.join(format!("ptnet-vmtest-fake-qemu.{}", std::process::id()));
            fs::write(&tmp, script).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&tmp, &path).unwrap();
            path
        })
        .clone()
    }

    /// A guest whose fake QEMU writes `body` (printf syntax) to the console, then runs
    /// the shell commands `then`.
    fn fake_vm(dir: &ScratchDir, name: &str, body: &str, then: &str) -> VmConfig {
        let config = fake_config(dir, name, fake_qemu());
        let mut fake = config.console_log.clone().into_os_string();
        fake.push(".fake");
        fs::write(fake, format!("printf '{body}' > \"$log\"\n{then}\n")).unwrap();
        config
    }

    fn fake_config(dir: &ScratchDir, name: &str, qemu: PathBuf) -> VmConfig {
        let kernel = dir.path().join("bzImage");
        let initrd = dir.path().join("initrd.gz");
        fs::write(&kernel, b"k").unwrap();
        fs::write(&initrd, b"i").unwrap();
        VmConfig {
            name: name.into(),
            qemu,
            kernel,
            initrd,
            accel: Accel::Tcg,
            machine: "q35".into(),
            cpus: 1,
            memory_mib: 64,
            shared_memory: false,
            cmdline: vec![],
            qemu_args: vec![],
            console_log: dir.path().join(format!("{name}.console.log")),
            timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn guest_that_reports_zero_succeeds() {
        let dir = ScratchDir::new("vm-ok").unwrap();
        let vm = Vm::start(fake_vm(&dir, "ok", "booting\\nPTNET-EXIT=0\\n", "exit 0")).unwrap();
        let outcome = vm.wait().unwrap();
        assert_eq!(outcome.exit_status, Some(0));
        assert!(outcome.console.contains("booting"));
        assert!(outcome.succeeded());
        outcome.check().unwrap();
    }

    #[test]
    fn guest_that_reports_a_failure_is_an_error_quoting_the_console() {
        let dir = ScratchDir::new("vm-fail").unwrap();
        let config = fake_vm(&dir, "fail", "step one broke\\nPTNET-EXIT=2\\n", "exit 0");
        let outcome = Vm::start(config).unwrap().wait().unwrap();
        let err = outcome.check().unwrap_err();
        assert!(matches!(err, VmError::GuestFailed { status: 2, .. }));
        assert!(err.to_string().contains("step one broke"));
    }

    #[test]
    fn qemu_exiting_without_a_status_is_reported_with_its_stderr() {
        let dir = ScratchDir::new("vm-nostatus").unwrap();
        let then = "echo 'qemu: bad option' >&2; exit 1";
        let outcome = Vm::start(fake_vm(&dir, "nostatus", "half a boot\\n", then))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(outcome.exit_status, None);
        let err = outcome.check().unwrap_err().to_string();
        assert!(err.contains("qemu: bad option"), "{err}");
    }

    #[test]
    fn guest_running_past_its_timeout_is_killed() {
        let dir = ScratchDir::new("vm-timeout").unwrap();
        let config =
            fake_vm(&dir, "slow", "stuck\\n", "exec sleep 30").timeout(Duration::from_millis(300));
        let started = Instant::now();
        let outcome = Vm::start(config).unwrap().wait().unwrap();
        assert!(outcome.timed_out);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(outcome.check(), Err(VmError::TimedOut { .. })));
    }

    #[test]
    fn dropping_a_running_vm_kills_its_qemu() {
        let dir = ScratchDir::new("vm-drop").unwrap();
        let vm = Vm::start(fake_vm(&dir, "dropped", "up\\n", "exec sleep 30")).unwrap();
        let pid = vm.pid().unwrap();
        drop(vm);
        // Reaped by drop: the PID no longer names our child (/proc entry gone or reused
        // by an unrelated process that is not a sleeping fake QEMU of ours).
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains("sleep"));
    }

    #[test]
    fn several_guests_run_at_once_each_with_its_own_console() {
        let dir = ScratchDir::new("vm-many").unwrap();
        let a = fake_vm(&dir, "a", "guest a\\nPTNET-EXIT=0\\n", "sleep 0.2");
        let b = fake_vm(&dir, "b", "guest b\\nPTNET-EXIT=5\\n", "sleep 0.2");
        let vm_a = Vm::start(a).unwrap();
        let vm_b = Vm::start(b).unwrap();
        let (out_a, out_b) = (vm_a.wait().unwrap(), vm_b.wait().unwrap());
        assert_eq!(out_a.exit_status, Some(0));
        assert!(out_a.console.contains("guest a") && !out_a.console.contains("guest b"));
        assert_eq!(out_b.exit_status, Some(5));
        assert!(out_b.console.contains("guest b"));
    }

    #[test]
    fn wait_for_console_sees_text_and_fails_when_qemu_exits_without_it() {
        let dir = ScratchDir::new("vm-console").unwrap();
        let config = fake_vm(&dir, "console", "ready\\n", "sleep 0.3; exit 0");
        let mut vm = Vm::start(config).unwrap();
        vm.wait_for_console("ready", Duration::from_secs(10))
            .unwrap();
        let err = vm
            .wait_for_console("never printed", Duration::from_secs(10))
            .unwrap_err();
        assert!(matches!(err, VmError::ConsoleMissing { .. }), "{err}");
    }

    #[test]
    fn missing_kernel_is_reported_before_starting_qemu() {
        let dir = ScratchDir::new("vm-missing").unwrap();
        let mut config = fake_config(&dir, "missing", "/nonexistent/qemu".into());
        config.kernel = dir.path().join("no-such-bzImage");
        assert!(matches!(
            Vm::start(config),
            Err(VmError::MissingFile { what: "kernel", .. })
        ));
    }

    #[test]
    fn missing_qemu_binary_is_a_spawn_error() {
        let dir = ScratchDir::new("vm-noqemu").unwrap();
        let config = fake_config(&dir, "noqemu", "/nonexistent/qemu".into());
        assert!(matches!(Vm::start(config), Err(VmError::Spawn { .. })));
    }
}
