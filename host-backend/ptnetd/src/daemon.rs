//! The daemon's state (switches, ports, pipes, attachments) and the control socket server.
//!
//! Every connection gets a thread: it reads one request and answers it. An `attach` keeps the
//! connection (and the thread, asleep in `read`) for as long as the client stays; when the
//! connection closes, for whatever reason, the client's sync loop stops and its port is
//! released (an on-demand port is removed, a configured one stays).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::mem::{DEFAULT_BUF_SIZE, Region, RegionConfig};
use ptnet_datapath::nic::direct::{DirectNic, DirectSpec};
use ptnet_datapath::nic::tap::TapOpener;
use ptnet_datapath::nic::{BackendChoice, HostInterface, NicPort, NicSnapshot};
use ptnet_datapath::port::{PortStats, SyncPort};
use ptnet_datapath::switch::pipe::{End, Pipe, PipePortSync};
use ptnet_datapath::switch::vale::{Switch, VPort, VPortSpec, ValePortSync};
use ptnet_proto::{
    self as proto, Counters, Envelope, NicEntry, PROTO_VERSION, PortEntry, PortRequest, Profile,
    Reply, Request, SwitchEntry, VmDevice, VmEntry, VmRequest,
};
use ptnet_spec::name::{Base, PipeRole, PortKey, PortName, RingSelection};

use crate::config::{Config, PortSection};

/// Default geometry of ports created on demand.
const DEFAULT_SLOTS: u32 = 1024;

/// Errors reported to clients (their text is the reply's message).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad port name.
    #[error("bad port name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Something does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// Something exists already.
    #[error("{0} already exists")]
    Exists(String),
    /// The port has a client already.
    #[error("port {0} is busy (a client is attached)")]
    Busy(String),
    /// Not supported (yet).
    #[error("{0}")]
    Unsupported(String),
    /// A limit was hit or a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The datapath refused.
    #[error("{0}")]
    Datapath(String),
}

type Result<T> = std::result::Result<T, DaemonError>;

struct PortState {
    vport: Arc<VPort>,
    persistent: bool,
    attached: bool,
    profile: Profile,
    slots: u32,
    /// A host interface attached to the switch: its worker is the port's client.
    nic: Option<NicPort>,
    /// The port of the host stack's tap that came with this interface (`--host-stack`), on the
    /// same switch: it goes when the interface is detached.
    host_stack: Option<String>,
}

struct SwitchState {
    sw: Arc<Switch>,
    ports: BTreeMap<String, PortState>,
    /// The region trusted ports share, made on first use.
    shared: Option<Arc<Region>>,
    trusted_ports: u32,
}

struct PipeState {
    pipe: Pipe,
    persistent: bool,
    attached: [bool; 2],
    rings: u32,
    slots: u32,
}

/// A host interface given directly to one client (`eth0`, `netmap:eth0`).
struct DirectState {
    nic: DirectNic,
    persistent: bool,
    attached: bool,
    slots: u32,
}

/// The server of a port served to a VM, by device.
enum VmHandle {
    Ptnet(ptnet_device::ServeHandle),
    VirtioNet(ptnet_virtio_net::ServeHandle),
}

impl VmHandle {
    fn stop(self) {
        match self {
            VmHandle::Ptnet(h) => h.stop(),
            VmHandle::VirtioNet(h) => h.stop(),
        }
    }
}

/// A port served to a VM (claimed like an attachment while it is served).
struct VmState {
    handle: VmHandle,
    socket: PathBuf,
    key: Key,
    port: Arc<dyn SyncPort>,
}

#[derive(Default)]
struct State {
    switches: BTreeMap<String, SwitchState>,
    /// Keyed by "parent{id".
    pipes: BTreeMap<String, PipeState>,
    /// Ports served to VMs, by canonical port name.
    vms: BTreeMap<String, VmState>,
    /// Host interfaces given directly to a client, by interface name.
    directs: BTreeMap<String, DirectState>,
}

/// What identifies an attachment, to release it.
#[derive(Debug, Clone)]
enum Key {
    Vale { switch: String, port: String },
    Pipe { key: String, end: End },
    Direct { ifname: String },
}

/// A client's hold on a port.
#[derive(Debug)]
pub struct Attachment {
    key: Key,
    client: HostClient,
}

/// The daemon.
pub struct Daemon {
    cfg: Config,
    state: Mutex<State>,
}

fn end_index(e: End) -> usize {
    match e {
        End::Master => 0,
        End::Slave => 1,
    }
}

fn counters(s: &PortStats) -> Counters {
    s.snapshot()
}

impl Daemon {
    /// Builds the daemon's state from its configuration: switches and persistent ports.
    pub fn new(cfg: Config) -> Result<Arc<Self>> {
        let d = Arc::new(Daemon {
            cfg,
            state: Mutex::new(State::default()),
        });
        {
            let mut st = d.lock();
            for s in &d.cfg.switches {
                d.create_switch(&mut st, &s.name, s.trusted_ports)?;
            }
            for p in &d.cfg.ports {
                let req = PortRequest {
                    port: p.name.clone(),
                    tx_rings: Some(p.tx_rings),
                    rx_rings: Some(p.rx_rings),
                    slots: Some(p.slots),
                    extra_bufs: p.extra_bufs,
                    profile: p.profile,
                    busy_poll: false,
                };
                let _: &PortSection = p;
                if let Ok(PortName {
                    base: Base::Nic { ifname },
                    pipe: None,
                    ..
                }) = PortName::parse(&p.name)
                {
                    d.create_direct(
                        &mut st,
                        ifname,
                        p.backend.as_deref(),
                        p.buf_size,
                        p.tx_rings,
                        Some(p.slots),
                        true,
                    )?;
                    continue;
                }
                if let Some((switch, ifname)) = nic_section(p) {
                    let host_stack = match (&p.host_stack_tap, p.host_stack) {
                        (Some(t), _) => Some(t.as_str()),
                        (None, Some(true)) => Some(""),
                        _ => None,
                    };
                    d.attach_nic(
                        &mut st,
                        switch,
                        ifname,
                        p.backend.as_deref(),
                        p.buf_size,
                        p.slots,
                        host_stack,
                    )?;
                    continue;
                }
                d.create_port(&mut st, &req, true)?;
            }
            for v in &d.cfg.vms {
                // The geometry of the port's own [[port]] section, if it has one.
                let geometry = d.cfg.ports.iter().find(|p| p.name == v.port);
                let req = VmRequest {
                    port: PortRequest {
                        port: v.port.clone(),
                        tx_rings: geometry.map(|p| p.tx_rings),
                        rx_rings: geometry.map(|p| p.rx_rings),
                        slots: geometry.map(|p| p.slots),
                        extra_bufs: geometry.map_or(0, |p| p.extra_bufs),
                        profile: v.profile,
                        busy_poll: v.busy_poll,
                    },
                    socket: v.socket.display().to_string(),
                    mac: v.mac.clone(),
                    device: v.device,
                };
                d.serve_vm(&mut st, &req)?;
            }
        }
        Ok(d)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create_switch(&self, st: &mut State, name: &str, trusted_ports: u32) -> Result<()> {
        if st.switches.contains_key(name) {
            return Err(DaemonError::Exists(format!("switch {name}")));
        }
        if st.switches.len() >= self.cfg.daemon.max_switches {
            return Err(DaemonError::Invalid(format!(
                "too many switches (max_switches = {})",
                self.cfg.daemon.max_switches
            )));
        }
        let ok = name.starts_with("vale")
            && name.len() <= 15
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(DaemonError::Invalid(format!(
                "switch name {name:?}: vale[0-9A-Za-z_]*, at most 15 bytes"
            )));
        }
        st.switches.insert(
            name.to_owned(),
            SwitchState {
                sw: Switch::new(name),
                ports: BTreeMap::new(),
                shared: None,
                trusted_ports,
            },
        );
        log::info!("switch {name} created");
        Ok(())
    }

    /// Creates a port (VALE port or pipe) as `req` says; returns its canonical name.
    fn create_port(&self, st: &mut State, req: &PortRequest, persistent: bool) -> Result<String> {
        let name = parse(&req.port)?;
        let tx_rings = req.tx_rings.unwrap_or(1);
        let rx_rings = req.rx_rings.unwrap_or(1);
        let slots = req.slots.unwrap_or(DEFAULT_SLOTS);
        if !(1..=64).contains(&tx_rings)
            || !(1..=64).contains(&rx_rings)
            || !(64..=16384).contains(&slots)
        {
            return Err(DaemonError::Invalid(
                "rings must be in 1..=64 per direction and slots in 64..=16384".into(),
            ));
        }
        match (name.base, name.pipe) {
            (Base::Vale { switch, port }, None) => {
                if !st.switches.contains_key(switch) {
                    self.create_switch(st, switch, 8)?;
                }
                // PANIC: created just above if it was missing.
                let ss = st.switches.get_mut(switch).expect("switch exists");
                if ss.ports.contains_key(port) {
                    return Err(DaemonError::Exists(format!("port {switch}:{port}")));
                }
                if ptnet_datapath::nic::ifindex(port) != 0 {
                    return Err(DaemonError::Invalid(format!(
                        "{switch}:{port} names the host interface {port}: attach it with \
                         `ptnetctl attach-nic {switch} {port}` (a virtual port cannot take an \
                         interface's name)"
                    )));
                }
                let region = match req.profile {
                    Profile::Untrusted => None,
                    Profile::Trusted => Some(shared_region(ss, switch)?),
                };
                let spec = VPortSpec {
                    tx_rings,
                    rx_rings,
                    slots,
                    extra_bufs: req.extra_bufs,
                    region,
                    ..Default::default()
                };
                let vport = ss
                    .sw
                    .add_port(port, &spec)
                    .map_err(|e| DaemonError::Datapath(error_chain(&e)))?;
                ss.ports.insert(
                    port.to_owned(),
                    PortState {
                        vport,
                        persistent,
                        attached: false,
                        profile: req.profile,
                        slots,
                        nic: None,
                        host_stack: None,
                    },
                );
                Ok(format!("{switch}:{port}"))
            }
            (_, Some(p)) => {
                let parent = match name.base {
                    Base::Vale { switch, port } => format!("{switch}:{port}"),
                    Base::Nic { ifname } => ifname.to_owned(),
                };
                let key = format!("{parent}{{{}", p.id);
                if let Some(ps) = st.pipes.get_mut(&key) {
                    if persistent && !ps.persistent {
                        ps.persistent = true;
                        return Ok(key);
                    }
                    return Err(DaemonError::Exists(format!("pipe {key}")));
                }
                if tx_rings != rx_rings {
                    return Err(DaemonError::Invalid(
                        "pipes have as many TX as RX rings".into(),
                    ));
                }
                let pipe = Pipe::new(&parent, p.id, tx_rings, slots, req.extra_bufs, None)
                    .map_err(|e| DaemonError::Datapath(error_chain(&e)))?;
                st.pipes.insert(
                    key.clone(),
                    PipeState {
                        pipe,
                        persistent,
                        attached: [false; 2],
                        rings: tx_rings,
                        slots,
                    },
                );
                Ok(key)
            }
            (Base::Nic { ifname }, None) => {
                let rings = req.tx_rings.or(req.rx_rings).unwrap_or(1);
                if tx_rings != rx_rings {
                    return Err(DaemonError::Invalid(
                        "a direct NIC port has as many TX as RX rings".into(),
                    ));
                }
                self.create_direct(st, ifname, None, None, rings, Some(slots), persistent)?;
                Ok(ifname.to_owned())
            }
        }
    }

    /// Gives host interface `ifname` a stand-alone port for one client (netmap's
    /// `netmap:eth0`), with `rings` ring pairs (AF_PACKET fanout when more than one).
    #[allow(clippy::too_many_arguments)]
    fn create_direct(
        &self,
        st: &mut State,
        ifname: &str,
        backend: Option<&str>,
        buf_size: Option<u32>,
        rings: u32,
        slots: Option<u32>,
        persistent: bool,
    ) -> Result<()> {
        if let Some(ds) = st.directs.get_mut(ifname) {
            if persistent && !ds.persistent {
                ds.persistent = true;
                return Ok(());
            }
            return Err(DaemonError::Exists(format!("port {ifname}")));
        }
        // Clients name the port by the interface's name: it must parse back to exactly that
        // (netmap's grammar reads `-`, `{`, `}`, `*`, `^`, `@`, `/` as suffixes, and a leading
        // `vale` as a switch).
        let reachable = matches!(
            PortName::parse(ifname),
            Ok(PortName {
                base: Base::Nic { ifname: n },
                pipe: None,
                rings: RingSelection::AllNic,
                flags: 0,
                mem_id: None,
            }) if n == ifname
        );
        if !reachable {
            return Err(DaemonError::Invalid(format!(
                "{ifname:?}: clients could not name this port (netmap's port-name grammar reads \
                 '-', '{{', '}}', '*', '^', '@', '/' as suffixes and 'vale...' as a switch); \
                 rename the interface or attach it to a switch"
            )));
        }
        let choice: BackendChoice = backend
            .unwrap_or("auto")
            .parse()
            .map_err(|e: ptnet_datapath::nic::NicError| DaemonError::Invalid(e.to_string()))?;
        let buf_size = buf_size.unwrap_or(DEFAULT_BUF_SIZE);
        if !(64..=65536).contains(&buf_size) || buf_size % 64 != 0 {
            return Err(DaemonError::Invalid(format!(
                "buf_size {buf_size}: a multiple of 64 in 64..=65536"
            )));
        }
        let slots = slots.unwrap_or(DEFAULT_SLOTS);
        if !(64..=16384).contains(&slots) {
            return Err(DaemonError::Invalid("slots must be in 64..=16384".into()));
        }
        if st
            .switches
            .values()
            .any(|ss| ss.ports.get(ifname).is_some_and(|p| p.nic.is_some()))
        {
            return Err(DaemonError::Busy(format!(
                "{ifname} (the interface is attached to a switch)"
            )));
        }
        let nic = DirectNic::start(
            ifname,
            &DirectSpec {
                rings,
                slots,
                buf_size,
                choice,
            },
        )
        .map_err(|e| DaemonError::Invalid(error_chain(&e)))?;
        st.directs.insert(
            ifname.to_owned(),
            DirectState {
                nic,
                persistent,
                attached: false,
                slots,
            },
        );
        Ok(())
    }

    /// Attaches host interface `ifname` to `switch` (created if needed) as port
    /// `switch:ifname`, with a worker that moves frames between them. With `host_stack`, the
    /// host's own stack joins the switch too, through a tap of that name (`""`: `ptnet-IF`).
    #[allow(clippy::too_many_arguments)]
    fn attach_nic(
        &self,
        st: &mut State,
        switch: &str,
        ifname: &str,
        backend: Option<&str>,
        buf_size: Option<u32>,
        slots: u32,
        host_stack: Option<&str>,
    ) -> Result<NicEntry> {
        let choice: BackendChoice = backend
            .unwrap_or("auto")
            .parse()
            .map_err(|e: ptnet_datapath::nic::NicError| DaemonError::Invalid(e.to_string()))?;
        let ok_name = !ifname.is_empty()
            && ifname.len() < 16
            && ifname
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'%'));
        if !ok_name {
            return Err(DaemonError::Invalid(format!(
                "{ifname:?} is not an interface name (1 to 15 printable bytes, no '/', ':', '%')"
            )));
        }
        let buf_size = buf_size.unwrap_or(DEFAULT_BUF_SIZE);
        if !(64..=65536).contains(&buf_size) || buf_size % 64 != 0 {
            return Err(DaemonError::Invalid(format!(
                "buf_size {buf_size}: a multiple of 64 in 64..=65536"
            )));
        }
        if !(64..=16384).contains(&slots) {
            return Err(DaemonError::Invalid("slots must be in 64..=16384".into()));
        }
        let tap_name = host_stack.map(|t| {
            if t.is_empty() {
                format!("ptnet-{ifname}").chars().take(15).collect()
            } else {
                t.to_owned()
            }
        });
        if let Some(t) = &tap_name {
            let ok_tap = !t.is_empty()
                && t.len() < 16
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'%'));
            if !ok_tap || t == ifname {
                return Err(DaemonError::Invalid(format!(
                    "{t:?} cannot name the host-stack tap (1 to 15 printable bytes, no '/', \
                     ':', '%', not the interface's own name)"
                )));
            }
        }
        if !st.switches.contains_key(switch) {
            self.create_switch(st, switch, 8)?;
        }
        if st.directs.contains_key(ifname) {
            return Err(DaemonError::Busy(format!(
                "{ifname} (the interface is given directly to a client: destroy-port {ifname})"
            )));
        }
        // PANIC: created just above if it was missing.
        let ss = st.switches.get_mut(switch).expect("switch exists");
        if let Some(t) = tap_name.as_deref().filter(|t| ss.ports.contains_key(*t)) {
            return Err(DaemonError::Exists(format!("port {switch}:{t}")));
        }
        if let Some(ps) = ss.ports.get(ifname) {
            return Err(DaemonError::Exists(if ps.nic.is_some() {
                format!("{switch}:{ifname} (the interface is attached already)")
            } else {
                format!("port {switch}:{ifname} (a virtual port)")
            }));
        }
        let iface = HostInterface {
            ifname: ifname.to_owned(),
            choice,
            max_frame: buf_size,
        };
        // Clear errors before any memory is allocated: no such interface, frames too large.
        iface
            .check()
            .map_err(|e| DaemonError::Invalid(error_chain(&e)))?;
        let spec = VPortSpec {
            slots,
            buf_size,
            ..Default::default()
        };
        let vport = ss
            .sw
            .add_port(ifname, &spec)
            .map_err(|e| DaemonError::Datapath(error_chain(&e)))?;
        let nic = match NicPort::start(Arc::clone(&ss.sw), Arc::clone(&vport), Box::new(iface)) {
            Ok(n) => n,
            Err(e) => {
                ss.sw.remove_port(&vport);
                return Err(DaemonError::Datapath(error_chain(&e)));
            }
        };
        // The host stack's tap, a port of its own beside the interface's.
        let tap = match tap_name
            .as_deref()
            .map(|t| attach_tap(ss, t, buf_size, slots))
        {
            Some(Err(e)) => {
                drop(nic);
                ss.sw.remove_port(&vport);
                return Err(e);
            }
            Some(Ok(ps)) => Some(ps),
            None => None,
        };
        let entry = nic_entry(&nic.snapshot());
        log::info!(
            "{switch}:{ifname}: host interface attached ({}{})",
            entry.backend.as_deref().unwrap_or("-"),
            tap_name
                .as_deref()
                .map(|t| format!(", host stack on tap {t}"))
                .unwrap_or_default()
        );
        if let (Some(t), Some(ps)) = (&tap_name, tap) {
            ss.ports.insert(t.clone(), ps);
        }
        ss.ports.insert(
            ifname.to_owned(),
            PortState {
                vport,
                persistent: true,
                attached: false,
                profile: Profile::Untrusted,
                slots,
                nic: Some(nic),
                host_stack: tap_name,
            },
        );
        Ok(entry)
    }

    /// Attaches a host client to the port `req` names, creating it on demand.
    pub fn attach(&self, req: &PortRequest) -> Result<(Attachment, Vec<File>)> {
        let mode = self.mode(req.busy_poll);
        let mut st = self.lock();
        let (key, sync) = self.claim(&mut st, req, false)?;
        match HostClient::attach(sync, mode) {
            Ok((client, files)) => Ok((Attachment { key, client }, files)),
            Err(e) => {
                self.release(&mut st, &key);
                Err(DaemonError::Datapath(format!("cannot attach: {e}")))
            }
        }
    }

    /// The sync loop mode for a client that asked (or not) for busy polling.
    fn mode(&self, busy_poll: bool) -> Mode {
        if busy_poll || self.cfg.daemon.busy_poll {
            Mode::BusyPoll
        } else {
            Mode::Eventfd {
                linger: Duration::from_micros(self.cfg.daemon.linger_us),
            }
        }
    }

    /// Finds (or creates: on demand, or `persistent`) the port `req` names and claims it for
    /// one client, a host process or a VM: nobody else can attach until it is released.
    fn claim(
        &self,
        st: &mut State,
        req: &PortRequest,
        persistent: bool,
    ) -> Result<(Key, Arc<dyn SyncPort>)> {
        let name = parse(&req.port)?;
        if name.rings != RingSelection::AllNic {
            return Err(DaemonError::Unsupported(format!(
                "{}: ring selection suffixes are not supported; ptnet ports bind all their rings",
                req.port
            )));
        }
        let claimed: (Key, Arc<dyn SyncPort>) = match (name.base, name.pipe) {
            (Base::Vale { switch, port }, None) => {
                let exists = st
                    .switches
                    .get(switch)
                    .is_some_and(|s| s.ports.contains_key(port));
                if !exists {
                    self.create_port(st, req, persistent)?;
                }
                // PANIC: the port exists or was just created.
                let ss = st.switches.get_mut(switch).expect("switch exists");
                let ps = ss.ports.get_mut(port).expect("port exists");
                if ps.nic.is_some() {
                    return Err(DaemonError::Busy(format!(
                        "{switch}:{port} (the host interface {port} is attached to it)"
                    )));
                }
                if ps.attached {
                    return Err(DaemonError::Busy(format!("{switch}:{port}")));
                }
                check_geometry(req, &ps.vport, ps.slots)?;
                ps.attached = true;
                (
                    Key::Vale {
                        switch: switch.to_owned(),
                        port: port.to_owned(),
                    },
                    Arc::new(ValePortSync {
                        switch: Arc::clone(&ss.sw),
                        port: Arc::clone(&ps.vport),
                    }),
                )
            }
            (_, Some(p)) => {
                let parent = match name.base {
                    Base::Vale { switch, port } => format!("{switch}:{port}"),
                    Base::Nic { ifname } => ifname.to_owned(),
                };
                let key = format!("{parent}{{{}", p.id);
                if !st.pipes.contains_key(&key) {
                    self.create_port(st, req, persistent)?;
                }
                // PANIC: exists or was just created.
                let ps = st.pipes.get_mut(&key).expect("pipe exists");
                let end = match p.role {
                    PipeRole::Master => End::Master,
                    PipeRole::Slave => End::Slave,
                };
                if ps.attached[end_index(end)] {
                    return Err(DaemonError::Busy(req.port.clone()));
                }
                if req.slots.is_some_and(|s| s != ps.slots)
                    || req.tx_rings.is_some_and(|r| r != ps.rings)
                    || req.rx_rings.is_some_and(|r| r != ps.rings)
                {
                    return Err(DaemonError::Invalid(format!(
                        "pipe {key} exists with {} ring pairs of {} slots",
                        ps.rings, ps.slots
                    )));
                }
                ps.attached[end_index(end)] = true;
                let (me, peer) = match end {
                    End::Master => (&ps.pipe.master, &ps.pipe.slave),
                    End::Slave => (&ps.pipe.slave, &ps.pipe.master),
                };
                (
                    Key::Pipe { key, end },
                    Arc::new(PipePortSync {
                        end: Arc::clone(me),
                        peer: Arc::clone(peer),
                    }),
                )
            }
            (Base::Nic { ifname }, None) => {
                if !st.directs.contains_key(ifname) {
                    let rings = req.tx_rings.or(req.rx_rings).unwrap_or(1);
                    self.create_direct(st, ifname, None, None, rings, req.slots, persistent)?;
                }
                // PANIC: exists or was just created.
                let ds = st.directs.get_mut(ifname).expect("direct port exists");
                let r = ds.nic.rings();
                if req.tx_rings.is_some_and(|n| n != r)
                    || req.rx_rings.is_some_and(|n| n != r)
                    || req.slots.is_some_and(|n| n != ds.slots)
                {
                    return Err(DaemonError::Invalid(format!(
                        "{ifname} exists with {r} ring pairs of {} slots",
                        ds.slots
                    )));
                }
                if ds.attached {
                    return Err(DaemonError::Busy(ifname.to_owned()));
                }
                ds.attached = true;
                (
                    Key::Direct {
                        ifname: ifname.to_owned(),
                    },
                    Arc::new(ds.nic.sync()),
                )
            }
        };
        Ok(claimed)
    }

    /// Serves a port to a VM over vhost-user (the port is created, persistent, if needed).
    fn serve_vm(&self, st: &mut State, req: &VmRequest) -> Result<()> {
        let canonical = PortKey(&parse(&req.port.port)?).to_string();
        if let Some(v) = st.vms.get(&canonical) {
            return Err(DaemonError::Busy(format!(
                "{canonical} (already served to a VM at {})",
                v.socket.display()
            )));
        }
        let mac = match &req.mac {
            Some(m) => Some(parse_mac(m)?),
            None => None,
        };
        let (key, port) = self.claim(st, &req.port, true)?;
        let socket = PathBuf::from(&req.socket);
        let mode = self.mode(req.port.busy_poll);
        let socket_mode = self.cfg.socket_mode().ok();
        let served = match req.device {
            VmDevice::Ptnet => {
                let cfg = ptnet_device::ServeConfig {
                    mac,
                    profile: req.port.profile,
                    mode,
                    socket_mode,
                    ..Default::default()
                };
                ptnet_device::serve(&socket, Arc::clone(&port), cfg)
                    .map(VmHandle::Ptnet)
                    .map_err(|e| error_chain(&e))
            }
            VmDevice::VirtioNet => {
                let cfg = ptnet_virtio_net::ServeConfig {
                    mac,
                    mode,
                    socket_mode,
                    ..Default::default()
                };
                ptnet_virtio_net::serve(&socket, Arc::clone(&port), cfg)
                    .map(VmHandle::VirtioNet)
                    .map_err(|e| error_chain(&e))
            }
        };
        match served {
            Ok(handle) => {
                log::info!(
                    "{canonical}: served to a VM as a {} device at {}",
                    req.device,
                    socket.display()
                );
                st.vms.insert(
                    canonical,
                    VmState {
                        handle,
                        socket,
                        key,
                        port,
                    },
                );
                Ok(())
            }
            Err(e) => {
                self.release(st, &key);
                Err(DaemonError::Datapath(e))
            }
        }
    }

    fn stop_vm(&self, st: &mut State, port: &str) -> Result<()> {
        let canonical = PortKey(&parse(port)?).to_string();
        let vm = st
            .vms
            .remove(&canonical)
            .ok_or_else(|| DaemonError::Missing(format!("a VM served on {canonical}")))?;
        vm.handle.stop();
        self.release(st, &vm.key);
        log::info!("{canonical}: no longer served to a VM");
        Ok(())
    }

    fn qemu_args(&self, st: &State, port: &str) -> Result<Vec<String>> {
        let canonical = PortKey(&parse(port)?).to_string();
        let vm = st.vms.get(&canonical).ok_or_else(|| {
            DaemonError::Missing(format!("a VM served on {canonical} (serve-vm it first)"))
        })?;
        let id: String = canonical
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Ok(match &vm.handle {
            VmHandle::Ptnet(_) => {
                ptnet_device::qemu_args(&vm.socket, &format!("ptnet-{id}"), &*vm.port)
            }
            VmHandle::VirtioNet(h) => {
                ptnet_virtio_net::qemu_args(&vm.socket, &format!("vnet-{id}"), h.mac(), h.pairs())
            }
        })
    }

    /// Detaches a client; an on-demand port without clients is removed.
    pub fn detach(&self, att: Attachment) {
        let Attachment { key, client } = att;
        client.detach();
        let mut st = self.lock();
        self.release(&mut st, &key);
    }

    fn release(&self, st: &mut State, key: &Key) {
        match key {
            Key::Vale { switch, port } => {
                let Some(ss) = st.switches.get_mut(switch) else {
                    return;
                };
                let remove = match ss.ports.get_mut(port) {
                    Some(ps) => {
                        ps.attached = false;
                        !ps.persistent
                    }
                    None => false,
                };
                if remove {
                    if let Some(ps) = ss.ports.remove(port) {
                        ss.sw.remove_port(&ps.vport);
                    }
                }
            }
            Key::Pipe { key, end } => {
                let remove = match st.pipes.get_mut(key) {
                    Some(ps) => {
                        ps.attached[end_index(*end)] = false;
                        !ps.persistent && ps.attached == [false; 2]
                    }
                    None => false,
                };
                if remove {
                    st.pipes.remove(key);
                    log::info!("pipe {key} removed");
                }
            }
            Key::Direct { ifname } => {
                let remove = match st.directs.get_mut(ifname) {
                    Some(ds) => {
                        ds.attached = false;
                        !ds.persistent
                    }
                    None => false,
                };
                if remove {
                    st.directs.remove(ifname);
                    log::info!("{ifname}: direct NIC port removed");
                }
            }
        }
    }

    /// Answers a management request.
    pub fn handle(&self, req: Request) -> Reply {
        let mut st = self.lock();
        let r = match req {
            Request::Attach(_) => Err(DaemonError::Invalid(
                "attach is handled by the connection".into(),
            )),
            Request::List => return listing(&st),
            Request::CreateSwitch { name } => self.create_switch(&mut st, &name, 8),
            Request::DestroySwitch { name } => destroy_switch(&mut st, &name),
            Request::CreatePort(req) => self.create_port(&mut st, &req, true).map(|_| ()),
            Request::DestroyPort { port } => destroy_port(&mut st, &port),
            Request::AttachNic {
                switch,
                ifname,
                backend,
                buf_size,
                host_stack,
                host_stack_tap,
            } => {
                let hs = match (&host_stack_tap, host_stack) {
                    (Some(t), _) => Some(t.as_str()),
                    (None, true) => Some(""),
                    (None, false) => None,
                };
                return match self.attach_nic(
                    &mut st,
                    &switch,
                    &ifname,
                    backend.as_deref(),
                    buf_size,
                    DEFAULT_SLOTS,
                    hs,
                ) {
                    Ok(nic) => Reply::NicAttached {
                        port: format!("{switch}:{ifname}"),
                        host_stack: st
                            .switches
                            .get(&switch)
                            .and_then(|s| s.ports.get(&ifname))
                            .and_then(|p| p.host_stack.clone()),
                        nic,
                    },
                    Err(e) => Reply::Error {
                        message: e.to_string(),
                    },
                };
            }
            Request::DetachNic { switch, ifname } => detach_nic(&mut st, &switch, &ifname),
            Request::CreateNicPort {
                ifname,
                backend,
                buf_size,
                rings,
            } => self.create_direct(
                &mut st,
                &ifname,
                backend.as_deref(),
                buf_size,
                rings.unwrap_or(1),
                None,
                true,
            ),
            Request::ServeVm(req) => self.serve_vm(&mut st, &req),
            Request::StopVm { port } => self.stop_vm(&mut st, &port),
            Request::QemuArgs { port } => {
                return match self.qemu_args(&st, &port) {
                    Ok(args) => Reply::QemuArgs { args },
                    Err(e) => Reply::Error {
                        message: e.to_string(),
                    },
                };
            }
        };
        match r {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        }
    }

    /// Serves the control socket forever (until the listener fails).
    pub fn serve(self: &Arc<Self>, listener: UnixListener) -> io::Result<()> {
        for conn in listener.incoming() {
            let conn = match conn {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let d = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name("ctl-conn".into())
                .spawn(move || d.connection(conn));
            if let Err(e) = spawned {
                log::error!("cannot start a connection thread: {e}");
            }
        }
        Ok(())
    }

    fn connection(&self, conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let env: Envelope = match proto::recv(&conn) {
            Ok((env, _)) => env,
            Err(proto::ProtoError::Closed) => return,
            Err(e) => {
                let _ = proto::send(
                    &conn,
                    &Reply::Error {
                        message: format!("bad request: {}", error_chain(&e)),
                    },
                    &[],
                );
                return;
            }
        };
        if env.version != PROTO_VERSION {
            let _ = proto::send(
                &conn,
                &Reply::Error {
                    message: format!(
                        "protocol version {} not supported (this daemon speaks {PROTO_VERSION})",
                        env.version
                    ),
                },
                &[],
            );
            return;
        }
        let Request::Attach(req) = env.request else {
            let reply = self.handle(env.request);
            if let Err(e) = proto::send(&conn, &reply, &[]) {
                log::debug!("reply lost: {e}");
            }
            return;
        };
        let (att, files) = match self.attach(&req) {
            Ok(x) => x,
            Err(e) => {
                log::info!("attach {}: {e}", req.port);
                let _ = proto::send(
                    &conn,
                    &Reply::Error {
                        message: e.to_string(),
                    },
                    &[],
                );
                return;
            }
        };
        let fds: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
        let sent = proto::send(&conn, &Reply::Attached(att.client.info().clone()), &fds);
        drop(files);
        if let Err(e) = sent {
            log::warn!("{}: attach reply failed: {}", req.port, error_chain(&e));
        } else {
            // Attached: sleep until the client goes away (EOF, error or anything it sends).
            let _ = conn.set_read_timeout(None);
            let mut b = [0u8; 64];
            loop {
                match (&conn).read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        self.detach(att);
    }
}

/// The `[[port]]` sections that attach a host interface: `valeX:IF` with `nic = true`, a
/// `backend`, or an `IF` that exists when the daemon starts (unless `nic = false`).
fn nic_section(p: &PortSection) -> Option<(&str, &str)> {
    let n = PortName::parse(&p.name).ok()?;
    let (Base::Vale { switch, port }, None) = (n.base, n.pipe) else {
        return None;
    };
    let exists = ptnet_datapath::nic::ifindex(port) != 0;
    let nic = p.nic.unwrap_or(p.backend.is_some() || exists);
    nic.then_some((switch, port))
}

fn nic_entry(s: &NicSnapshot) -> NicEntry {
    NicEntry {
        ifname: s.ifname.clone(),
        backend: s.backend.map(|b| b.name().to_owned()),
        note: s.note.clone(),
        link: s.link.name().to_owned(),
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        rx_drops: s.rx_drops,
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        tx_drops: s.tx_drops,
        link_changes: s.link_changes,
    }
}

fn detach_nic(st: &mut State, switch: &str, ifname: &str) -> Result<()> {
    let ss = st
        .switches
        .get_mut(switch)
        .ok_or_else(|| DaemonError::Missing(format!("switch {switch}")))?;
    if ss.ports.get(ifname).is_none_or(|p| p.nic.is_none()) {
        return Err(DaemonError::Missing(format!(
            "host interface {ifname} on {switch}"
        )));
    }
    remove_switch_port(ss, ifname);
    Ok(())
}

/// Removes port `name` of a switch: stops its NIC worker if it has one, and removes the
/// host-stack tap that came with it (the tap device disappears with its worker).
fn remove_switch_port(ss: &mut SwitchState, name: &str) {
    let Some(mut ps) = ss.ports.remove(name) else {
        return;
    };
    if let Some(n) = ps.nic.take() {
        n.stop();
    }
    ss.sw.remove_port(&ps.vport);
    if let Some(t) = ps.host_stack.take() {
        remove_switch_port(ss, &t);
    }
}

/// Creates the host stack's tap `tap` and its port on the switch of `ss`.
fn attach_tap(ss: &mut SwitchState, tap: &str, buf_size: u32, slots: u32) -> Result<PortState> {
    let opener = TapOpener::create(tap, None, buf_size)
        .map_err(|e| DaemonError::Invalid(error_chain(&e)))?;
    let spec = VPortSpec {
        slots,
        buf_size,
        ..Default::default()
    };
    let vport = ss
        .sw
        .add_port(tap, &spec)
        .map_err(|e| DaemonError::Datapath(error_chain(&e)))?;
    match NicPort::start(Arc::clone(&ss.sw), Arc::clone(&vport), Box::new(opener)) {
        Ok(nic) => Ok(PortState {
            vport,
            persistent: true,
            attached: false,
            profile: Profile::Untrusted,
            slots,
            nic: Some(nic),
            host_stack: None,
        }),
        Err(e) => {
            ss.sw.remove_port(&vport);
            Err(DaemonError::Datapath(error_chain(&e)))
        }
    }
}

fn parse(name: &str) -> Result<PortName<'_>> {
    PortName::parse(name).map_err(|e| DaemonError::Name {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

fn check_geometry(req: &PortRequest, vport: &VPort, slots: u32) -> Result<()> {
    let ifc = vport.interface();
    let differs = req.tx_rings.is_some_and(|r| r as usize != ifc.tx.len())
        || req.rx_rings.is_some_and(|r| r as usize != ifc.rx.len())
        || req.slots.is_some_and(|s| s != slots);
    if differs {
        return Err(DaemonError::Invalid(format!(
            "port {} exists with {} TX / {} RX rings of {slots} slots",
            vport.name(),
            ifc.tx.len(),
            ifc.rx.len()
        )));
    }
    Ok(())
}

fn shared_region(ss: &mut SwitchState, switch: &str) -> Result<Arc<Region>> {
    if let Some(r) = &ss.shared {
        return Ok(Arc::clone(r));
    }
    let n = ss.trusted_ports.max(1);
    // Room for n ports of one ring pair of the default size, plus extra buffers.
    let mut cfg = RegionConfig::for_rings(n, 2 * n, DEFAULT_SLOTS, 64 * n);
    cfg.max_slots = DEFAULT_SLOTS;
    let r = Region::new(&format!("{switch}-trusted"), &cfg)
        .map_err(|e| DaemonError::Datapath(error_chain(&e)))?;
    ss.shared = Some(Arc::clone(&r));
    Ok(r)
}

fn destroy_switch(st: &mut State, name: &str) -> Result<()> {
    let ss = st
        .switches
        .get(name)
        .ok_or_else(|| DaemonError::Missing(format!("switch {name}")))?;
    if let Some((p, _)) = ss.ports.iter().find(|(_, p)| p.attached) {
        return Err(DaemonError::Busy(format!("{name}:{p}")));
    }
    if let Some(ss) = st.switches.remove(name) {
        for (_, mut ps) in ss.ports {
            if let Some(n) = ps.nic.take() {
                n.stop();
            }
            ss.sw.remove_port(&ps.vport);
        }
    }
    log::info!("switch {name} destroyed");
    Ok(())
}

fn destroy_port(st: &mut State, port: &str) -> Result<()> {
    let name = parse(port)?;
    match (name.base, name.pipe) {
        (Base::Vale { switch, port: p }, None) => {
            let ss = st
                .switches
                .get_mut(switch)
                .ok_or_else(|| DaemonError::Missing(format!("switch {switch}")))?;
            let ps = ss
                .ports
                .get(p)
                .ok_or_else(|| DaemonError::Missing(format!("port {port}")))?;
            if ps.attached {
                return Err(DaemonError::Busy(port.to_owned()));
            }
            remove_switch_port(ss, p);
            Ok(())
        }
        (_, Some(p)) => {
            let parent = match name.base {
                Base::Vale { switch, port } => format!("{switch}:{port}"),
                Base::Nic { ifname } => ifname.to_owned(),
            };
            let key = format!("{parent}{{{}", p.id);
            let ps = st
                .pipes
                .get(&key)
                .ok_or_else(|| DaemonError::Missing(format!("pipe {key}")))?;
            if ps.attached != [false; 2] {
                return Err(DaemonError::Busy(key));
            }
            st.pipes.remove(&key);
            Ok(())
        }
        (Base::Nic { ifname }, None) => {
            let ds = st
                .directs
                .get(ifname)
                .ok_or_else(|| DaemonError::Missing(format!("port {port}")))?;
            if ds.attached {
                return Err(DaemonError::Busy(port.to_owned()));
            }
            st.directs.remove(ifname);
            Ok(())
        }
    }
}

fn listing(st: &State) -> Reply {
    let switches = st
        .switches
        .iter()
        .map(|(name, ss)| SwitchEntry {
            name: name.clone(),
            ports: ss
                .ports
                .values()
                .map(|ps| {
                    let ifc = ps.vport.interface();
                    PortEntry {
                        name: ps.vport.name().to_owned(),
                        kind: if ps.nic.is_some() { "nic" } else { "vale" }.into(),
                        attached: ps.attached,
                        mem_id: ifc.region().id(),
                        profile: ps.profile,
                        tx_rings: ifc.tx.len() as u32,
                        rx_rings: ifc.rx.len() as u32,
                        slots: ps.slots,
                        stats: counters(ps.vport.stats()),
                        nic: ps.nic.as_ref().map(|n| nic_entry(&n.snapshot())),
                        vm: vm_entry(st, ps.vport.name()),
                    }
                })
                .collect(),
        })
        .collect();
    let mut pipes = Vec::new();
    for ps in st.pipes.values() {
        for (i, end) in [&ps.pipe.master, &ps.pipe.slave].into_iter().enumerate() {
            pipes.push(PortEntry {
                name: end.name().to_owned(),
                kind: "pipe".into(),
                attached: ps.attached[i],
                mem_id: end.interface().region().id(),
                profile: Profile::Trusted,
                tx_rings: ps.rings,
                rx_rings: ps.rings,
                slots: ps.slots,
                stats: counters(end.stats()),
                nic: None,
                vm: vm_entry(st, end.name()),
            });
        }
    }
    for (ifname, ds) in &st.directs {
        let vp = ds.nic.client_port();
        let ifc = vp.interface();
        pipes.push(PortEntry {
            name: ifname.clone(),
            kind: "nic".into(),
            attached: ds.attached,
            mem_id: ifc.region().id(),
            profile: Profile::Untrusted,
            tx_rings: ifc.tx.len() as u32,
            rx_rings: ifc.rx.len() as u32,
            slots: ds.slots,
            stats: counters(vp.stats()),
            nic: Some(nic_entry(&ds.nic.snapshot())),
            vm: vm_entry(st, ifname),
        });
    }
    Reply::Listing { switches, pipes }
}

fn vm_entry(st: &State, port: &str) -> Option<VmEntry> {
    let vm = st.vms.get(port)?;
    let socket = vm.socket.display().to_string();
    let vnet_hdr_len = vm.port.vnet_hdr_len();
    Some(match &vm.handle {
        VmHandle::Ptnet(h) => {
            let s = h.stats();
            VmEntry {
                socket,
                device: VmDevice::Ptnet,
                connections: s.connections,
                starts: s.starts,
                refused: s.refused,
                running: s.running,
                mem_ready: s.mem_ready,
                irqs: s.irqs_raised,
                bad_chains: 0,
                vnet_hdr_len,
            }
        }
        VmHandle::VirtioNet(h) => {
            let s = h.stats();
            VmEntry {
                socket,
                device: VmDevice::VirtioNet,
                connections: s.connections,
                starts: s.starts,
                refused: s.broken,
                running: s.running,
                mem_ready: false,
                irqs: s.tx_notifies + s.rx_notifies,
                bad_chains: s.tx_bad + s.rx_bad,
                vnet_hdr_len,
            }
        }
    })
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    let ok = parts.len() == 6
        && parts
            .iter()
            .zip(mac.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if !ok || mac[0] & 1 != 0 {
        return Err(DaemonError::Invalid(format!(
            "MAC {s:?}: six hex bytes like 02:00:00:00:00:01, unicast"
        )));
    }
    Ok(mac)
}

/// An error and its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Binds the control socket: creates its directory, replaces a stale socket (one nobody
/// listens on), refuses to steal a live one, and sets its permissions.
pub fn bind_socket(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(name: &str, nic: Option<bool>, backend: Option<&str>) -> PortSection {
        PortSection {
            name: name.into(),
            tx_rings: 1,
            rx_rings: 1,
            slots: 1024,
            extra_bufs: 0,
            profile: Profile::Untrusted,
            nic,
            backend: backend.map(Into::into),
            buf_size: None,
            host_stack: None,
            host_stack_tap: None,
        }
    }

    #[test]
    fn config_ports_naming_existing_interfaces_are_nic_ports_unless_told_otherwise() {
        // Classification only: nothing is attached here.
        assert_eq!(
            nic_section(&section("vale0:lo", None, None)),
            Some(("vale0", "lo"))
        );
        assert_eq!(nic_section(&section("vale0:lo", Some(false), None)), None);
        assert_eq!(nic_section(&section("vale0:ptnoif9", None, None)), None);
        assert_eq!(
            nic_section(&section("vale0:ptnoif9", None, Some("af_packet"))),
            Some(("vale0", "ptnoif9"))
        );
        assert_eq!(nic_section(&section("pipe0{1", Some(true), None)), None);
    }
}
