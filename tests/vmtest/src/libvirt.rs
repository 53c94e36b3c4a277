//! libvirt for the VM tests: the system daemon (`qemu:///system`), started here when none
//! answers (these machines have no systemd to start it), and domains defined from XML that
//! are destroyed and undefined when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The connection every call uses: the system instance, whose QEMU runs as its own user.
pub const URI: &str = "qemu:///system";

/// Runs `virsh -c qemu:///system ARGS`: success, and stdout and stderr together.
pub fn virsh(args: &[&str]) -> (bool, String) {
    match Command::new("virsh").arg("-c").arg(URI).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("virsh: {e}")),
    }
}

/// The system libvirtd: the running one, or `virtlogd` and `libvirtd` started here (in the
/// foreground, as children, with their logs in `dir`) and killed by PID when dropped.
pub struct Libvirtd {
    started: Vec<Child>,
}

impl Libvirtd {
    /// Connects to the running daemon, or starts one; fails if it does not answer in 30 s.
    pub fn ensure(dir: &Path) -> Result<Self, String> {
        let mut d = Libvirtd {
            started: Vec::new(),
        };
        if virsh(&["version"]).0 {
            return Ok(d);
        }
        for prog in ["virtlogd", "libvirtd"] {
            let log = std::fs::File::create(dir.join(format!("{prog}.log")))
                .map_err(|e| format!("{prog}.log: {e}"))?;
            let child = Command::new(prog)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {prog}: {e} (ci/prereqs.sh libvirt installs it)"))?;
            d.started.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out) = virsh(&["version"]);
            if ok {
                return Ok(d);
            }
            if Instant::now() > deadline {
                return Err(format!("libvirtd does not answer: {out}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // libvirtd first: it may still talk to virtlogd.
        for c in self.started.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A domain defined (and validated against libvirt's schema) from XML; destroyed if running
/// and undefined when dropped.
pub struct Domain {
    name: String,
}

impl Domain {
    /// `virsh define --validate FILE` of `xml` written to `file`; a domain of the same name
    /// left by an earlier run is removed first.
    pub fn define(name: &str, xml: &str, file: &Path) -> Result<Self, String> {
        let _ = virsh(&["destroy", name]);
        let _ = virsh(&["undefine", name]);
        std::fs::write(file, xml).map_err(|e| format!("{}: {e}", file.display()))?;
        let (ok, out) = virsh(&["define", "--validate", &file.to_string_lossy()]);
        if !ok {
            return Err(format!("virsh define {}: {out}", file.display()));
        }
        Ok(Domain { name: name.into() })
    }

    /// `virsh start`.
    pub fn start(&self) -> Result<(), String> {
        match virsh(&["start", &self.name]) {
            (true, _) => Ok(()),
            (false, out) => Err(format!("virsh start {}: {out}", self.name)),
        }
    }

    /// `virsh destroy` (the VM is killed, as a host would pull its plug).
    pub fn destroy(&self) -> Result<(), String> {
        match virsh(&["destroy", &self.name]) {
            (true, _) => Ok(()),
            (false, out) => Err(format!("virsh destroy {}: {out}", self.name)),
        }
    }

    /// `virsh domstate`: `running`, `shut off`, ...
    pub fn state(&self) -> String {
        virsh(&["domstate", &self.name]).1.trim().to_owned()
    }

    /// Waits until the domain is shut off (its guest powered off).
    pub fn wait_shut_off(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.state();
            if s == "shut off" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{} is still {s:?} after {timeout:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
    }
}
