//! What a guest is made of and the QEMU command line that boots it.
//!
//! The command line is built here, as plain data, so that it can be checked without QEMU:
//! `-nodefaults -display none -no-reboot -nic none`, the accelerator (TCG with `qemu64` on
//! these machines, `-accel kvm -cpu host` on a real KVM host), a q35 machine, the serial
//! console into a log file, and the kernel and initramfs given directly to QEMU.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// Environment variable naming the QEMU binary (default `qemu-system-x86_64` from `PATH`).
pub const ENV_QEMU: &str = "PTNET_QEMU";
/// Environment variable choosing the accelerator: `tcg` (default) or `kvm`.
pub const ENV_ACCEL: &str = "PTNET_ACCEL";
/// The id of the guest RAM backend when [`VmConfig::shared_memory`] is on; vhost-user
/// devices map this memory.
pub const SHARED_MEMORY_ID: &str = "ptnet-mem";
/// The id of the serial console's character device.
pub const CONSOLE_CHARDEV_ID: &str = "ptnet-console";

/// Errors in a guest's configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The accelerator name is not one we know.
    #[error("unknown accelerator {0:?} (use tcg or kvm)")]
    UnknownAccel(String),
    /// An environment variable holds something that is not Unicode.
    #[error("environment variable {0} is not valid Unicode")]
    NotUnicode(&'static str),
}

/// How QEMU runs the guest's CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Accel {
    /// Software emulation, multi-threaded, with the `qemu64` CPU model: what works on
    /// these machines (their KVM cannot run a Linux guest kernel in useful time).
    #[default]
    Tcg,
    /// Hardware virtualisation on a real KVM host, with the host's CPU model.
    Kvm,
}

impl Accel {
    /// The accelerator from `PTNET_ACCEL`, or TCG when it is unset or empty.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var(ENV_ACCEL) {
            Ok(v) if v.is_empty() => Ok(Self::default()),
            Ok(v) => v.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode(ENV_ACCEL)),
        }
    }

    /// The QEMU arguments that select this accelerator and its CPU model.
    pub fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Self::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "qemu64"],
            Self::Kvm => ["-accel", "kvm", "-cpu", "host"],
        }
    }
}

impl FromStr for Accel {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcg" => Ok(Self::Tcg),
            "kvm" => Ok(Self::Kvm),
            other => Err(ConfigError::UnknownAccel(other.to_owned())),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcg => "tcg",
            Self::Kvm => "kvm",
        })
    }
}

/// Everything needed to boot one guest.
///
/// Fields are public so tests can set what they need; [`VmConfig::new`] fills in the
/// defaults (QEMU and accelerator from the environment, 2 CPUs, 256 MiB, 120 s).
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// A short name for logs and error messages (`guest-a`, `hello`).
    pub name: String,
    /// The QEMU binary: a path, or a name looked up in `PATH`.
    pub qemu: PathBuf,
    /// The kernel image (`bzImage`).
    pub kernel: PathBuf,
    /// The initramfs (gzip'ed newc cpio).
    pub initrd: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// The QEMU machine type.
    pub machine: String,
    /// Number of virtual CPUs.
    pub cpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Back guest RAM with a shared memfd (`-object memory-backend-memfd,share=on`), as
    /// vhost-user devices require.
    pub shared_memory: bool,
    /// Kernel command-line words appended after the defaults (`console=ttyS0 panic=-1`).
    pub cmdline: Vec<String>,
    /// QEMU arguments appended at the end (devices, chardevs, objects).
    pub qemu_args: Vec<String>,
    /// Where the serial console (ttyS0) is written; QEMU's own stderr goes next to it,
    /// with `.stderr` appended.
    pub console_log: PathBuf,
    /// How long the guest may run before it is killed.
    pub timeout: Duration,
}

impl VmConfig {
    /// A guest with the defaults, taking the QEMU binary from `PTNET_QEMU` and the
    /// accelerator from `PTNET_ACCEL`.
    pub fn new(
        name: impl Into<String>,
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        console_log: impl Into<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let qemu = match std::env::var_os(ENV_QEMU) {
            Some(q) if !q.is_empty() => PathBuf::from(q),
            _ => PathBuf::from("qemu-system-x86_64"),
        };
        Ok(Self {
            name: name.into(),
            qemu,
            kernel: kernel.into(),
            initrd: initrd.into(),
            accel: Accel::from_env()?,
            machine: "q35".to_owned(),
            cpus: 2,
            memory_mib: 256,
            shared_memory: false,
            cmdline: Vec::new(),
            qemu_args: Vec::new(),
            console_log: console_log.into(),
            timeout: Duration::from_secs(120),
        })
    }

    /// Sets the number of virtual CPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Sets the guest RAM size in MiB.
    pub fn memory_mib(mut self, memory_mib: u32) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    /// Backs guest RAM with a shared memfd named [`SHARED_MEMORY_ID`], so that vhost-user
    /// backends can map it.
    pub fn shared_memory(mut self) -> Self {
        self.shared_memory = true;
        self
    }

    /// Appends one word to the kernel command line (`KEY=VALUE` words the kernel does not
    /// know reach the test script as environment variables).
    pub fn append(mut self, word: impl Into<String>) -> Self {
        self.cmdline.push(word.into());
        self
    }

    /// Appends QEMU arguments.
    pub fn qemu_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.qemu_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where QEMU's stderr is written: the console log's path with `.stderr` appended.
    pub fn stderr_log(&self) -> PathBuf {
        let mut p = self.console_log.clone().into_os_string();
        p.push(".stderr");
        PathBuf::from(p)
    }

    /// The QEMU monitor (HMP) socket the runner asks for the vCPUs' state when the guest
    /// times out, next to the console log; `None` when that path is too long for a Unix
    /// socket (then a hung guest is only killed).
    pub fn monitor_socket(&self) -> Option<PathBuf> {
        let mut p = self.console_log.clone().into_os_string();
        p.push(".monitor");
        (p.len() < 100).then(|| PathBuf::from(p))
    }

    /// The kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        // panic=-1: a guest kernel panic reboots at once, and -no-reboot turns that into
        // QEMU exiting, so a crashed guest ends the test instead of running into the timeout.
        let mut words = vec!["console=ttyS0".to_owned(), "panic=-1".to_owned()];
        words.extend(self.cmdline.iter().cloned());
        words.join(" ")
    }

    /// The arguments passed to the QEMU binary.
    pub fn qemu_command_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |s: &str| args.push(OsString::from(s));
        for a in [
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ] {
            push(a);
        }
        for a in self.accel.qemu_args() {
            push(a);
        }
        let memory = format!("{}M", self.memory_mib);
        if self.shared_memory {
            push("-machine");
            push(&format!(
                "{},memory-backend={SHARED_MEMORY_ID}",
                self.machine
            ));
            push("-object");
            push(&format!(
                "memory-backend-memfd,id={SHARED_MEMORY_ID},size={memory},share=on"
            ));
        } else {
            push("-machine");
            push(&self.machine);
        }
        push("-smp");
        push(&self.cpus.to_string());
        push("-m");
        push(&memory);
        push("-chardev");
        push(&format!(
            "file,id={CONSOLE_CHARDEV_ID},path={}",
            qemu_opt_escape(&self.console_log)
        ));
        push("-serial");
        push(&format!("chardev:{CONSOLE_CHARDEV_ID}"));
        if let Some(m) = self.monitor_socket() {
            push("-monitor");
            push(&format!("unix:{},server=on,wait=off", qemu_opt_escape(&m)));
        }
        push("-kernel");
        args.push(self.kernel.clone().into_os_string());
        args.push("-initrd".into());
        args.push(self.initrd.clone().into_os_string());
        args.push("-append".into());
        args.push(self.kernel_cmdline().into());
        args.extend(self.qemu_args.iter().map(OsString::from));
        args
    }
}

/// A path as a value inside a QEMU option list, where `,` separates options and `,,`
/// stands for a literal comma.
fn qemu_opt_escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(accel: Accel) -> VmConfig {
        VmConfig {
            name: "t".into(),
            qemu: "qemu-system-x86_64".into(),
            kernel: "/k/bzImage".into(),
            initrd: "/k/initrd.gz".into(),
            accel,
            machine: "q35".into(),
            cpus: 2,
            memory_mib: 256,
            shared_memory: false,
            cmdline: vec![],
            qemu_args: vec![],
            console_log: "/logs/console.log".into(),
            timeout: Duration::from_secs(10),
        }
    }

    fn args(c: &VmConfig) -> Vec<String> {
        c.qemu_command_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn has_pair(args: &[String], key: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == key && w[1] == value)
    }

    #[test]
    fn tcg_guest_uses_multithreaded_tcg_with_qemu64() {
        let a = args(&config(Accel::Tcg));
        assert!(has_pair(&a, "-accel", "tcg,thread=multi"));
        assert!(has_pair(&a, "-cpu", "qemu64"));
        assert!(!a.iter().any(|x| x.contains("kvm")));
    }

    #[test]
    fn kvm_guest_uses_kvm_with_the_host_cpu() {
        let a = args(&config(Accel::Kvm));
        assert!(has_pair(&a, "-accel", "kvm"));
        assert!(has_pair(&a, "-cpu", "host"));
        assert!(!a.iter().any(|x| x.contains("tcg")));
    }

    #[test]
    fn guest_has_no_network_no_display_and_does_not_reboot() {
        let a = args(&config(Accel::Tcg));
        for flag in ["-nodefaults", "-no-reboot"] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing from {a:?}");
        }
        assert!(has_pair(&a, "-nic", "none"));
        assert!(has_pair(&a, "-display", "none"));
    }

    #[test]
    fn console_goes_to_the_log_file_on_the_first_serial_port() {
        let a = args(&config(Accel::Tcg));
        assert!(has_pair(
            &a,
            "-chardev",
            "file,id=ptnet-console,path=/logs/console.log"
        ));
        assert!(has_pair(&a, "-serial", "chardev:ptnet-console"));
        assert!(
            config(Accel::Tcg)
                .kernel_cmdline()
                .contains("console=ttyS0")
        );
    }

    #[test]
    fn commas_in_the_console_path_are_escaped_for_qemu() {
        let mut c = config(Accel::Tcg);
        c.console_log = "/logs/a,b.log".into();
        let a = args(&c);
        assert!(has_pair(
            &a,
            "-chardev",
            "file,id=ptnet-console,path=/logs/a,,b.log"
        ));
    }

    #[test]
    fn shared_memory_backs_all_guest_ram_with_a_shared_memfd() {
        let c = config(Accel::Tcg).memory_mib(512).shared_memory();
        let a = args(&c);
        assert!(has_pair(&a, "-machine", "q35,memory-backend=ptnet-mem"));
        assert!(has_pair(
            &a,
            "-object",
            "memory-backend-memfd,id=ptnet-mem,size=512M,share=on"
        ));
        assert!(has_pair(&a, "-m", "512M"));
    }

    #[test]
    fn extra_kernel_words_and_qemu_args_come_after_the_defaults() {
        let c = config(Accel::Tcg)
            .append("PTNET_ROLE=a")
            .qemu_args(["-device", "virtio-rng-pci"]);
        assert_eq!(c.kernel_cmdline(), "console=ttyS0 panic=-1 PTNET_ROLE=a");
        let a = args(&c);
        assert_eq!(&a[a.len() - 2..], ["-device", "virtio-rng-pci"]);
        assert!(has_pair(&a, "-kernel", "/k/bzImage"));
        assert!(has_pair(&a, "-initrd", "/k/initrd.gz"));
    }

    #[test]
    fn accelerator_names_parse_and_unknown_ones_are_rejected() {
        assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
        assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
        assert!(matches!(
            "hvf".parse::<Accel>(),
            Err(ConfigError::UnknownAccel(s)) if s == "hvf"
        ));
    }

    #[test]
    fn stderr_log_sits_next_to_the_console_log() {
        assert_eq!(
            config(Accel::Tcg).stderr_log(),
            PathBuf::from("/logs/console.log.stderr")
        );
    }
}
