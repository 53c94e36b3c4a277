//! ptnetd's configuration: a TOML file, command-line overrides, and the embedded default
//! (one switch, `vale0`) that makes `ptnetd` useful with no file at all.

use std::path::PathBuf;

use crate::cpus::CpuList;
use ptnet_proto::{DEFAULT_SOCKET, Profile, VmDevice, VmTransport};
use ptnet_spec::name::{Base, PortName};
use serde::Deserialize;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration in {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (with line and column).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A value is out of range or inconsistent, at a known place.
    #[error("{place}: {msg}")]
    At {
        /// `FILE:LINE: [section] key` (the line when the key, or its section, is found).
        place: String,
        /// What is wrong.
        msg: String,
    },
}

/// Where a configuration came from: its path and text, to say where a value is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    path: PathBuf,
    text: String,
}

impl Origin {
    /// The line (1-based) of `key` in section `table` (`[table]`, or the `index`th
    /// `[[table]]`), else of the section's header; `None` if neither is found (a value from
    /// the defaults or the command line, or an unusual layout).
    fn line_of(&self, table: &str, index: Option<usize>, key: &str) -> Option<usize> {
        let (one, many) = (format!("[{table}]"), format!("[[{table}]]"));
        let (mut seen, mut inside, mut header) = (0usize, false, None);
        for (n, raw) in self.text.lines().enumerate() {
            let l = raw.split('#').next().unwrap_or("").trim();
            if l.starts_with('[') {
                inside = match index {
                    None => l == one,
                    Some(i) if l == many => {
                        seen += 1;
                        seen == i + 1
                    }
                    Some(_) => false,
                };
                if inside {
                    header = Some(n + 1);
                }
                continue;
            }
            if inside && l.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
                return Some(n + 1);
            }
        }
        header
    }

    /// `FILE:LINE: [table] key`, for messages.
    pub fn place(&self, table: &str, index: Option<usize>, key: &str) -> String {
        let section = match index {
            Some(_) => format!("[[{table}]]"),
            None => format!("[{table}]"),
        };
        match self.line_of(table, index, key) {
            Some(line) => format!("{}:{line}: {section} {key}", self.path.display()),
            None => format!("{}: {section} {key}", self.path.display()),
        }
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Control socket path.
    pub socket: PathBuf,
    /// Permission bits of the socket (octal string, e.g. "0660").
    pub socket_mode: String,
    /// Group that owns the socket (name or number): with `socket_mode` "0660", its members
    /// can connect. Unset: the daemon's group.
    pub socket_group: Option<String>,
    /// Members of this group (name or number) may do everything root may over the socket.
    pub admin_group: Option<String>,
    /// Where VMs' vhost-user sockets are made (created if missing; must be writable by the
    /// daemon's user only).
    pub vm_socket_dir: PathBuf,
    /// Serve Prometheus metrics on this TCP address (`127.0.0.1:9477`); unset: none.
    pub metrics: Option<String>,
    /// Run every client's sync loop in busy-poll mode unless the client asks otherwise.
    pub busy_poll: bool,
    /// Most switches created on demand by clients.
    pub max_switches: usize,
    /// How long (µs) an idle sync loop keeps polling before it sleeps (0: sleep at once).
    pub linger_us: u64,
    /// The CPUs every thread of the daemon runs on (`"1"`, `"2-3"`, `"0,4-5"`); unset: those
    /// it was started with.
    pub cpus: Option<String>,
    /// Threads that serve every virtio-net queue pair between them, each pair in the one
    /// with the fewest (0: a thread per queue pair).
    pub poll_groups: usize,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: "0660".into(),
            socket_group: None,
            admin_group: None,
            vm_socket_dir: PathBuf::from(DEFAULT_VM_SOCKET_DIR),
            metrics: None,
            busy_poll: false,
            max_switches: 64,
            linger_us: ptnet_datapath::kloop::DEFAULT_LINGER.as_micros() as u64,
            cpus: None,
            poll_groups: 0,
        }
    }
}

/// Most poll groups (`[daemon] poll_groups`).
pub const MAX_POLL_GROUPS: usize = 64;

/// `[[switch]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSection {
    /// `valeX`.
    pub name: String,
    /// Trusted ports this switch's shared region can hold.
    #[serde(default = "default_trusted_ports")]
    pub trusted_ports: u32,
    /// Users (names or numbers) who may attach to this switch's ports and create and destroy
    /// their own, without being administrators.
    #[serde(default)]
    pub open_to_users: Vec<String>,
    /// Groups (names or numbers) whose members may, likewise.
    #[serde(default)]
    pub open_to_groups: Vec<String>,
}

fn default_trusted_ports() -> u32 {
    8
}

/// `[[port]]`: a persistent port, created at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// `valeX:Y`, or a pipe end `X{N` / `X}N`.
    pub name: String,
    /// TX rings.
    #[serde(default = "one")]
    pub tx_rings: u32,
    /// RX rings.
    #[serde(default = "one")]
    pub rx_rings: u32,
    /// Slots per ring.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Extra buffers.
    #[serde(default)]
    pub extra_bufs: u32,
    /// Trust profile.
    #[serde(default)]
    pub profile: Profile,
    /// `valeX:IF` attaches host interface IF: `true` insists (start-up fails if IF is
    /// missing), `false` makes a virtual port; unset, an existing IF is attached.
    #[serde(default)]
    pub nic: Option<bool>,
    /// NIC backend: `auto` (default), `af_packet`, `af_xdp`, `netmap`; implies `nic = true`.
    #[serde(default)]
    pub backend: Option<String>,
    /// Buffer size of a NIC port (default 2048): the largest frame it carries.
    #[serde(default)]
    pub buf_size: Option<u32>,
    /// A NIC port's host stack joins the switch too, through a tap `ptnet-IF` the daemon
    /// creates (`ptnetctl attach-nic --host-stack`).
    #[serde(default)]
    pub host_stack: Option<bool>,
    /// The host-stack tap's name (implies `host_stack = true`).
    #[serde(default)]
    pub host_stack_tap: Option<String>,
    /// VALE ports: the only source MAC the port may send from (`02:..`).
    #[serde(default)]
    pub mac_lock: Option<String>,
}

fn one() -> u32 {
    1
}

fn default_slots() -> u32 {
    1024
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Daemon settings.
    #[serde(default)]
    pub daemon: DaemonSection,
    /// Switches created at start-up.
    #[serde(default, rename = "switch")]
    pub switches: Vec<SwitchSection>,
    /// Persistent ports created at start-up.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortSection>,
    /// Ports served to VMs as ptnet devices over vhost-user.
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmSection>,
    /// Where the text came from (for messages that say where a value is).
    #[serde(skip)]
    pub origin: Origin,
}

/// `[[vm]]`: serve a port (created if needed, with the geometry of its `[[port]]` section or
/// the defaults) to a VM as a ptnet device, or with `device = "virtio-net"` as a virtio-net
/// device (any guest, or DPDK's `virtio_user`); QEMU connects to `socket`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSection {
    /// `valeX:Y`, or a pipe end.
    pub port: String,
    /// The vhost-user socket's name in `[daemon] vm_socket_dir` (default: after the port).
    #[serde(default)]
    pub socket: Option<String>,
    /// Trust profile (a pipe end or a shared-region port needs `trusted`).
    #[serde(default)]
    pub profile: Profile,
    /// MAC address the guest sees, `02:..` (default: derived from the port name).
    #[serde(default)]
    pub mac: Option<String>,
    /// Busy-poll this VM's sync loop.
    #[serde(default)]
    pub busy_poll: bool,
    /// `ptnet` (default) or `virtio-net`.
    #[serde(default)]
    pub device: VmDevice,
    /// `true`: the VM sends from its device's MAC only; `false`: from any; unset: the
    /// device's default (locked for virtio-net, not for ptnet).
    #[serde(default)]
    pub mac_lock: Option<bool>,
    /// `vhost-user` (default) or `ivshmem` (a ptnet device on QEMU's stock
    /// `ivshmem-doorbell`).
    #[serde(default)]
    pub transport: VmTransport,
}

/// Where VMs' vhost-user sockets go unless `[daemon] vm_socket_dir` says otherwise.
pub const DEFAULT_VM_SOCKET_DIR: &str = "/run/ptnetd/vm";

/// The configuration used when no file is given.
pub const EMBEDDED_DEFAULT: &str = r#"
# ptnetd's embedded default: one VALE switch; host clients attach to vale0:<anything>.
[daemon]
socket = "/run/ptnetd/ptnetd.sock"

[[switch]]
name = "vale0"
"#;

impl Config {
    /// Parses and validates TOML text (`path` is for messages).
    pub fn parse(text: &str, path: PathBuf) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            source: Box::new(e),
        })?;
        cfg.origin = Origin {
            path,
            text: text.to_owned(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path.to_owned())
    }

    /// The embedded default.
    pub fn embedded() -> Self {
        // PANIC: the embedded text is fixed and covered by a test.
        Self::parse(EMBEDDED_DEFAULT, "<embedded>".into()).expect("embedded default parses")
    }

    /// Socket mode as bits.
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.daemon.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "socket_mode {:?} is not an octal permission like \"0660\"",
                    self.daemon.socket_mode
                ))
            })
    }

    /// The socket's group as an id (`socket_group` resolved), if set.
    pub fn socket_group(&self) -> Result<Option<u32>, ConfigError> {
        self.daemon
            .socket_group
            .as_deref()
            .map(|g| {
                crate::creds::gid_of(g).ok_or_else(|| {
                    self.bad(
                        "daemon",
                        None,
                        "socket_group",
                        format!("no group {g:?} on this system"),
                    )
                })
            })
            .transpose()
    }

    /// Who may connect to VMs' vhost-user sockets: the control socket's mode and group
    /// (checked when the daemon starts, so a value that does not resolve is left unset).
    pub fn vm_socket_access(&self) -> ptnet_vhost_user::Access {
        ptnet_vhost_user::Access {
            mode: self.socket_mode().ok(),
            group: self.socket_group().ok().flatten(),
        }
    }

    /// An error about `key` of section `table` (`index`: which `[[table]]`).
    pub fn bad(&self, table: &str, index: Option<usize>, key: &str, msg: String) -> ConfigError {
        ConfigError::At {
            place: self.origin.place(table, index, key),
            msg,
        }
    }

    /// `[daemon] cpus`, parsed (checked when the file is read).
    pub fn cpus(&self) -> Result<Option<CpuList>, ConfigError> {
        self.daemon
            .cpus
            .as_deref()
            .map(|s| {
                CpuList::parse(s)
                    .map_err(|e| self.bad("daemon", None, "cpus", format!("{s:?}: {e}")))
            })
            .transpose()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.cpus()?;
        self.socket_mode().map_err(|e| {
            let msg = match e {
                ConfigError::Invalid(m) => m,
                e => e.to_string(),
            };
            self.bad("daemon", None, "socket_mode", msg)
        })?;
        let mut sockets = std::collections::HashSet::new();
        for (i, v) in self.vms.iter().enumerate() {
            PortName::parse(&v.port)
                .map_err(|e| self.bad("vm", Some(i), "port", format!("{:?}: {e}", v.port)))?;
            let name = crate::vm::socket_name(v.socket.as_deref(), &v.port)
                .map_err(|e| self.bad("vm", Some(i), "socket", e.to_string()))?;
            if !sockets.insert(name.clone()) {
                return Err(self.bad("vm", Some(i), "socket", format!("socket {name} used twice")));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.switches.iter().enumerate() {
            let bad = |msg: String| self.bad("switch", Some(i), "name", msg);
            if !s.name.starts_with("vale")
                || s.name.len() > 15
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(bad(format!(
                    "switch name {:?}: VALE switches are named vale[0-9A-Za-z_]*, at most 15 bytes",
                    s.name
                )));
            }
            if !names.insert(&s.name) {
                return Err(bad(format!("switch {} listed twice", s.name)));
            }
        }
        let mut ports = std::collections::HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let bad = |key: &str, msg: String| self.bad("port", Some(i), key, msg);
            let n = PortName::parse(&p.name)
                .map_err(|e| bad("name", format!("port {:?}: {e}", p.name)))?;
            if let (Base::Vale { switch, .. }, None) = (n.base, n.pipe) {
                if !names.contains(&switch.to_owned()) {
                    return Err(bad(
                        "name",
                        format!(
                            "port {}: switch {switch} is not configured (add a [[switch]])",
                            p.name
                        ),
                    ));
                }
            } else if n.pipe.is_none() {
                // `IF` or `netmap:IF`: the interface given directly to one client.
                if p.tx_rings != p.rx_rings
                    || p.tx_rings > ptnet_datapath::nic::direct::MAX_DIRECT_RINGS
                {
                    return Err(bad(
                        "tx_rings",
                        format!(
                            "port {}: a NIC port given directly to a client has as many TX as \
                             RX rings, at most {}",
                            p.name,
                            ptnet_datapath::nic::direct::MAX_DIRECT_RINGS
                        ),
                    ));
                }
                if p.host_stack.is_some() || p.host_stack_tap.is_some() {
                    return Err(bad(
                        "host_stack",
                        format!(
                            "port {}: host_stack connects the host to a switch: name the port \
                             valeX:IFNAME",
                            p.name
                        ),
                    ));
                }
            }
            if !(1..=64).contains(&p.tx_rings) || !(1..=64).contains(&p.rx_rings) {
                let key = if (1..=64).contains(&p.tx_rings) {
                    "rx_rings"
                } else {
                    "tx_rings"
                };
                return Err(bad(
                    key,
                    format!("port {}: 1..=64 rings per direction", p.name),
                ));
            }
            if !(64..=16384).contains(&p.slots) {
                return Err(bad(
                    "slots",
                    format!("port {}: slots must be in 64..=16384", p.name),
                ));
            }
            if let Some(b) = &p.backend {
                b.parse::<ptnet_datapath::nic::BackendChoice>()
                    .map_err(|e| bad("backend", format!("port {}: {e}", p.name)))?;
            }
            if (p.nic == Some(true)
                || p.backend.is_some()
                || p.host_stack == Some(true)
                || p.host_stack_tap.is_some())
                && n.pipe.is_some()
            {
                return Err(bad(
                    "name",
                    format!(
                        "port {}: NIC options apply to valeX:IFNAME and IFNAME ports, not to \
                         pipe ends",
                        p.name
                    ),
                ));
            }
            if p.mac_lock.is_some() && !(matches!(n.base, Base::Vale { .. }) && n.pipe.is_none()) {
                return Err(bad(
                    "mac_lock",
                    format!("port {}: mac_lock applies to switch ports only", p.name),
                ));
            }
            if !ports.insert(&p.name) {
                return Err(bad("name", format!("port {} listed twice", p.name)));
            }
        }
        if self.daemon.poll_groups > MAX_POLL_GROUPS {
            return Err(self.bad(
                "daemon",
                None,
                "poll_groups",
                format!("poll_groups must be at most {MAX_POLL_GROUPS}"),
            ));
        }
        if self.daemon.linger_us > 1_000_000 {
            return Err(self.bad(
                "daemon",
                None,
                "linger_us",
                "linger_us must be at most 1000000 (1 s)".into(),
            ));
        }
        if self.daemon.max_switches == 0 {
            return Err(self.bad(
                "daemon",
                None,
                "max_switches",
                "max_switches must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_has_vale0() {
        let c = Config::embedded();
        assert_eq!(c.switches[0].name, "vale0");
        assert_eq!(c.socket_mode().unwrap(), 0o660);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let bad = |t: &str| Config::parse(t, "t.toml".into()).unwrap_err().to_string();
        let e = format!(
            "{:?}",
            Config::parse("[daemon]\nsockett = 1", "t.toml".into()).unwrap_err()
        );
        assert!(e.contains("unknown field"), "{e}");
        assert!(bad("[[switch]]\nname = \"sw0\"").contains("vale"));
        assert!(bad("[[port]]\nname = \"vale1:a\"").contains("not configured"));
        assert!(
            bad("[[switch]]\nname=\"vale0\"\n[[port]]\nname = \"vale0:a\"\nslots = 3")
                .contains("slots")
        );
        assert!(bad("[daemon]\nsocket_mode = \"999\"").contains("octal"));
        assert!(
            bad("[[port]]\nname = \"eth0\"\ntx_rings = 2").contains("as many TX as RX"),
            "a direct NIC port has ring pairs"
        );
        assert!(bad("[[port]]\nname = \"eth0\"\nhost_stack = true").contains("valeX:IFNAME"));
        let sw = "[[switch]]\nname=\"vale0\"\n";
        assert!(
            bad(&format!(
                "{sw}[[port]]\nname = \"vale0:eth1\"\nbackend = \"dpdk\""
            ))
            .contains("unknown NIC backend")
        );
        assert!(
            bad("[[port]]\nname = \"pipe0{1\"\nnic = true").contains("valeX:IFNAME"),
            "NIC options only on switch ports"
        );
        assert!(
            bad("[[port]]\nname = \"pipe0{1\"\nmac_lock = \"02:00:00:00:00:01\"")
                .contains("switch ports only")
        );
    }

    #[test]
    fn nic_ports_parse() {
        let c = Config::parse(
            "[[switch]]\nname = \"vale0\"\n[[port]]\nname = \"vale0:eth1\"\n\
             backend = \"af_xdp\"\nbuf_size = 4096\n",
            "t.toml".into(),
        )
        .unwrap();
        assert_eq!(c.ports[0].backend.as_deref(), Some("af_xdp"));
        assert_eq!(c.ports[0].buf_size, Some(4096));
        let c = Config::parse(
            "[[switch]]\nname = \"vale0\"\n[[port]]\nname = \"vale0:eth1\"\n\
             host_stack = true\n[[port]]\nname = \"netmap:eth2\"\nbackend = \"af_packet\"\n\
             tx_rings = 2\nrx_rings = 2\n",
            "t.toml".into(),
        )
        .unwrap();
        assert_eq!(c.ports[0].host_stack, Some(true));
        assert_eq!(c.ports[1].tx_rings, 2);
    }

    #[test]
    fn a_full_file_parses() {
        let c = Config::parse(
            r#"
            [daemon]
            socket = "/tmp/x.sock"
            busy_poll = true
            [[switch]]
            name = "vale1"
            trusted_ports = 4
            [[port]]
            name = "vale1:vm1"
            slots = 2048
            profile = "trusted"
            [[port]]
            name = "pipe0{1"
            "#,
            "t.toml".into(),
        )
        .unwrap();
        assert_eq!(c.ports[0].profile, Profile::Trusted);
        assert!(c.vms.is_empty());
        assert_eq!(c.ports[1].slots, 1024);
    }

    #[test]
    fn vm_sections_choose_ptnet_by_default_or_virtio_net() {
        let c = Config::parse(
            r#"
            [[vm]]
            port = "vale0:a"
            socket = "a.sock"
            [[vm]]
            port = "vale0:b"
            device = "virtio-net"
            "#,
            "t.toml".into(),
        )
        .unwrap();
        assert_eq!(c.vms[0].device, VmDevice::Ptnet);
        assert_eq!(c.vms[1].device, VmDevice::VirtioNet);
        assert_eq!(c.vms[1].socket, None);
        assert!(
            Config::parse(
                "[[vm]]\nport = \"vale0:a\"\nsocket = \"x\"\ndevice = \"e1000\"\n",
                "t.toml".into()
            )
            .is_err()
        );
    }

    #[test]
    fn semantic_errors_name_the_file_the_line_and_the_key() {
        let text = "\
# ptnetd
[daemon]
linger_us = 5000000

[[switch]]
name = \"vale0\"

[[port]]
name = \"vale0:a\"

[[port]]
name = \"vale0:b\"
slots = 3
";
        let e = Config::parse(text, "/etc/ptnetd.toml".into())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/ptnetd.toml:13: [[port]] slots: port vale0:b: slots"),
            "{e}"
        );
        let e = Config::parse(&text.replace("slots = 3", ""), "p.toml".into())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:3: [daemon] linger_us: "), "{e}");
        let e = Config::parse(
            "[[switch]]\nname = \"vale0\"\n[[switch]]\nname = \"bad!\"\n",
            "s.toml".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("s.toml:4: [[switch]] name: "), "{e}");
        // A key that makes no sense for the section's port: its own line.
        let e = Config::parse(
            "[[switch]]\nname = \"vale0\"\n\n[[port]]\nname = \"pipe0{1\"\nmac_lock = \"02:00:00:00:00:01\"\n",
            "m.toml".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("m.toml:6: [[port]] mac_lock: "), "{e}");
    }

    #[test]
    fn the_daemon_and_the_policy_name_the_line_too() {
        let cfg = Config::parse(
            "[[switch]]\nname = \"vale0\"\nopen_to_groups = [\"no-such-group-ptnet\"]\n",
            "g.toml".into(),
        )
        .unwrap();
        let e = crate::policy::Policy::new(&cfg, 0).unwrap_err().to_string();
        assert!(
            e.starts_with("g.toml:3: [[switch]] open_to_groups: no group"),
            "{e}"
        );
        let cfg = Config::parse(
            "[[switch]]\nname = \"vale0\"\n\n[[port]]\nname = \"vale0:a\"\nextra_bufs = 4000000\n",
            "x.toml".into(),
        )
        .unwrap();
        let e = match crate::daemon::Daemon::new(cfg) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("4,000,000 extra buffers accepted"),
        };
        assert!(e.starts_with("x.toml:5: [[port]] name: "), "{e}");
    }

    #[test]
    fn vm_sockets_are_names_and_each_is_used_once() {
        let bad = |t: &str| Config::parse(t, "t.toml".into()).unwrap_err().to_string();
        let e = bad("[[vm]]\nport = \"vale0:a\"\nsocket = \"/tmp/a.sock\"\n");
        assert!(e.contains("not a path"), "{e}");
        // Named after the port by default: vale0:a's would be vale0-a.sock.
        let e = bad(
            "[[vm]]\nport = \"vale0:a\"\n[[vm]]\nport = \"vale0:b\"\nsocket = \"vale0-a.sock\"\n",
        );
        assert!(e.contains("vale0-a.sock used twice"), "{e}");
    }
}
