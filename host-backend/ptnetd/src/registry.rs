//! The registry: every switch, port, pipe, direct NIC port and VM port the daemon holds,
//! who is attached to what; creating them (on demand too), claiming and releasing them,
//! destroying them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ptnet_datapath::mem::{DEFAULT_BUF_SIZE, MAX_EXTRA_BUFS, MAX_IF_RINGS, Region, RegionConfig};
use ptnet_datapath::nic::direct::{DirectNic, DirectSpec};
use ptnet_datapath::nic::{BackendChoice, NicPort};
use ptnet_datapath::port::{PortStats, SyncPort};
use ptnet_datapath::switch::pipe::{End, Pipe, PipePortSync};
use ptnet_datapath::switch::vale::{Switch, VPort, VPortSpec, ValePortSync};
use ptnet_proto::{Counters, PortRequest, Profile};
use ptnet_spec::name::{Base, PipeRole, PortName, RingSelection};

use crate::error::{DaemonError, Result, error_chain, parse, parse_mac};

/// Default geometry of ports created on demand.
pub(crate) const DEFAULT_SLOTS: u32 = 1024;

/// Most rings of a port: a `netmap_if` holds [`MAX_IF_RINGS`] ring offsets, and a host client
/// receives its region, its CSB and two descriptors per ring in one `SCM_RIGHTS` message.
pub(crate) const MAX_CLIENT_RINGS: u32 = {
    let by_message = (ptnet_proto::MAX_FDS as u32 - 2) / 2;
    if MAX_IF_RINGS < by_message {
        MAX_IF_RINGS
    } else {
        by_message
    }
};

pub(crate) struct PortState {
    pub(crate) vport: Arc<VPort>,
    pub(crate) persistent: bool,
    pub(crate) attached: bool,
    pub(crate) profile: Profile,
    pub(crate) slots: u32,
    /// A host interface attached to the switch: its worker is the port's client.
    pub(crate) nic: Option<NicPort>,
    /// The port of the host stack's tap that came with this interface (`--host-stack`), on the
    /// same switch: it goes when the interface is detached.
    pub(crate) host_stack: Option<String>,
    /// The source MAC the operator locked the port to (`create-port --mac-lock`); a VM served
    /// on the port locks it to its device's MAC while it is served, and this comes back after.
    pub(crate) mac_lock: Option<[u8; 6]>,
    /// The client (not an administrator) that created the port with `create-port`: the one
    /// client that may destroy it.
    pub(crate) owner: Option<u32>,
}

pub(crate) struct SwitchState {
    pub(crate) sw: Arc<Switch>,
    pub(crate) ports: BTreeMap<String, PortState>,
    /// The region trusted ports share, made on first use.
    pub(crate) shared: Option<Arc<Region>>,
    pub(crate) trusted_ports: u32,
}

pub(crate) struct PipeState {
    pub(crate) pipe: Pipe,
    pub(crate) persistent: bool,
    pub(crate) attached: [bool; 2],
    pub(crate) rings: u32,
    pub(crate) slots: u32,
}

/// A host interface given directly to one client (`eth0`, `netmap:eth0`).
pub(crate) struct DirectState {
    pub(crate) nic: DirectNic,
    pub(crate) persistent: bool,
    pub(crate) attached: bool,
    pub(crate) slots: u32,
}

/// Everything the daemon holds, behind the daemon's one lock.
#[derive(Default)]
pub(crate) struct State {
    /// Most switches (the configuration's `max_switches`).
    pub(crate) max_switches: usize,
    pub(crate) switches: BTreeMap<String, SwitchState>,
    /// Keyed by "parent{id".
    pub(crate) pipes: BTreeMap<String, PipeState>,
    /// Ports served to VMs, by canonical port name.
    pub(crate) vms: BTreeMap<String, VmState>,
    /// Host interfaces given directly to a client, by interface name.
    pub(crate) directs: BTreeMap<String, DirectState>,
    /// `[daemon] poll_groups`: the threads that serve virtio-net queue pairs (none: a
    /// thread per pair).
    pub(crate) vnet_groups: Option<std::sync::Arc<ptnet_virtio_net::PollGroups>>,
}

/// What identifies an attachment, to release it.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    Vale { switch: String, port: String },
    Pipe { key: String, end: End },
    Direct { ifname: String },
}

pub(crate) fn end_index(e: End) -> usize {
    match e {
        End::Master => 0,
        End::Slave => 1,
    }
}

/// A port's counters as the control protocol carries them.
pub(crate) fn counters(s: &PortStats) -> Counters {
    s.snapshot()
}

/// The server of a port served to a VM, by device.
pub(crate) enum VmHandle {
    Ptnet(ptnet_device::ServeHandle),
    PtnetIvshmem(ptnet_device::ivshmem::IvshmemHandle),
    VirtioNet(ptnet_virtio_net::ServeHandle),
}

impl VmHandle {
    pub(crate) fn stop(self) {
        match self {
            VmHandle::Ptnet(h) => h.stop(),
            VmHandle::PtnetIvshmem(h) => h.stop(),
            VmHandle::VirtioNet(h) => h.stop(),
        }
    }
}

/// A port served to a VM (claimed like an attachment while it is served).
pub(crate) struct VmState {
    pub(crate) handle: VmHandle,
    pub(crate) socket: PathBuf,
    pub(crate) key: Key,
    pub(crate) port: Arc<dyn SyncPort>,
}

impl State {
    pub(crate) fn create_switch(&mut self, name: &str, trusted_ports: u32) -> Result<()> {
        if self.switches.contains_key(name) {
            return Err(DaemonError::Exists(format!("switch {name}")));
        }
        if self.switches.len() >= self.max_switches {
            return Err(DaemonError::Invalid(format!(
                "too many switches (max_switches = {})",
                self.max_switches
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
        self.switches.insert(
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
    pub(crate) fn create_port(&mut self, req: &PortRequest, persistent: bool) -> Result<String> {
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
        if tx_rings + rx_rings > MAX_CLIENT_RINGS {
            return Err(DaemonError::Invalid(format!(
                "{tx_rings} TX + {rx_rings} RX rings: at most {MAX_CLIENT_RINGS} in all (what \
                 one netmap_if holds offsets for, and one message descriptors for)"
            )));
        }
        if req.extra_bufs > MAX_EXTRA_BUFS {
            return Err(DaemonError::Invalid(format!(
                "{} extra buffers: at most {MAX_EXTRA_BUFS}",
                req.extra_bufs
            )));
        }
        let mac_lock = req.mac_lock.as_deref().map(parse_mac).transpose()?;
        if mac_lock.is_some() && !matches!((&name.base, &name.pipe), (Base::Vale { .. }, None)) {
            return Err(DaemonError::Invalid(format!(
                "{}: only switch ports can be locked to a MAC (a pipe or a NIC has no \
                 neighbours to protect)",
                req.port
            )));
        }
        match (name.base, name.pipe) {
            (Base::Vale { switch, port }, None) => {
                if !self.switches.contains_key(switch) {
                    self.create_switch(switch, 8)?;
                }
                // PANIC: created just above if it was missing.
                let ss = self.switches.get_mut(switch).expect("switch exists");
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
                vport.set_mac_lock(mac_lock);
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
                        mac_lock,
                        owner: None,
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
                if let Some(ps) = self.pipes.get_mut(&key) {
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
                self.pipes.insert(
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
                self.create_direct(ifname, None, None, rings, Some(slots), persistent)?;
                Ok(ifname.to_owned())
            }
        }
    }

    /// Finds (or creates: on demand, or `persistent`) the port `req` names and claims it for
    /// one client, a host process or a VM: nobody else can attach until it is released.
    pub(crate) fn claim(
        &mut self,
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
                let exists = self
                    .switches
                    .get(switch)
                    .is_some_and(|s| s.ports.contains_key(port));
                if !exists {
                    self.create_port(req, persistent)?;
                }
                // PANIC: the port exists or was just created.
                let ss = self.switches.get_mut(switch).expect("switch exists");
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
                if !self.pipes.contains_key(&key) {
                    self.create_port(req, persistent)?;
                }
                // PANIC: exists or was just created.
                let ps = self.pipes.get_mut(&key).expect("pipe exists");
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
                if !self.directs.contains_key(ifname) {
                    let rings = req.tx_rings.or(req.rx_rings).unwrap_or(1);
                    self.create_direct(ifname, None, None, rings, req.slots, persistent)?;
                }
                // PANIC: exists or was just created.
                let ds = self.directs.get_mut(ifname).expect("direct port exists");
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

    pub(crate) fn release(&mut self, key: &Key) {
        match key {
            Key::Vale { switch, port } => {
                let Some(ss) = self.switches.get_mut(switch) else {
                    return;
                };
                let remove = match ss.ports.get_mut(port) {
                    Some(ps) => {
                        ps.attached = false;
                        ps.vport.set_mac_lock(ps.mac_lock);
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
                let remove = match self.pipes.get_mut(key) {
                    Some(ps) => {
                        ps.attached[end_index(*end)] = false;
                        !ps.persistent && ps.attached == [false; 2]
                    }
                    None => false,
                };
                if remove {
                    self.pipes.remove(key);
                    log::info!("pipe {key} removed");
                }
            }
            Key::Direct { ifname } => {
                let remove = match self.directs.get_mut(ifname) {
                    Some(ds) => {
                        ds.attached = false;
                        !ds.persistent
                    }
                    None => false,
                };
                if remove {
                    self.directs.remove(ifname);
                    log::info!("{ifname}: direct NIC port removed");
                }
            }
        }
    }

    /// Gives host interface `ifname` a stand-alone port for one client (netmap's
    /// `netmap:eth0`), with `rings` ring pairs (AF_PACKET fanout when more than one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_direct(
        &mut self,
        ifname: &str,
        backend: Option<&str>,
        buf_size: Option<u32>,
        rings: u32,
        slots: Option<u32>,
        persistent: bool,
    ) -> Result<()> {
        if let Some(ds) = self.directs.get_mut(ifname) {
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
        let (choice, buf_size, slots) =
            nic_options(backend, buf_size, slots.unwrap_or(DEFAULT_SLOTS))?;
        if self
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
        self.directs.insert(
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

    pub(crate) fn destroy_switch(&mut self, name: &str) -> Result<()> {
        let ss = self
            .switches
            .get(name)
            .ok_or_else(|| DaemonError::Missing(format!("switch {name}")))?;
        if let Some((p, _)) = ss.ports.iter().find(|(_, p)| p.attached) {
            return Err(DaemonError::Busy(format!("{name}:{p}")));
        }
        if let Some(ss) = self.switches.remove(name) {
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

    /// The client that created VALE port `port`, if a client did.
    pub(crate) fn port_owner(&self, port: &str) -> Option<u32> {
        match parse(port).ok()? {
            PortName {
                base: Base::Vale { switch, port },
                pipe: None,
                ..
            } => self.switches.get(switch)?.ports.get(port)?.owner,
            _ => None,
        }
    }

    /// Records that client `uid` created VALE port `port` (canonical name).
    pub(crate) fn set_port_owner(&mut self, port: &str, uid: u32) {
        if let Ok(PortName {
            base: Base::Vale { switch, port },
            pipe: None,
            ..
        }) = parse(port)
        {
            if let Some(ps) = self
                .switches
                .get_mut(switch)
                .and_then(|s| s.ports.get_mut(port))
            {
                ps.owner = Some(uid);
            }
        }
    }

    pub(crate) fn destroy_port(&mut self, port: &str) -> Result<()> {
        let name = parse(port)?;
        match (name.base, name.pipe) {
            (Base::Vale { switch, port: p }, None) => {
                let ss = self
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
                let ps = self
                    .pipes
                    .get(&key)
                    .ok_or_else(|| DaemonError::Missing(format!("pipe {key}")))?;
                if ps.attached != [false; 2] {
                    return Err(DaemonError::Busy(key));
                }
                self.pipes.remove(&key);
                Ok(())
            }
            (Base::Nic { ifname }, None) => {
                let ds = self
                    .directs
                    .get(ifname)
                    .ok_or_else(|| DaemonError::Missing(format!("port {port}")))?;
                if ds.attached {
                    return Err(DaemonError::Busy(port.to_owned()));
                }
                self.directs.remove(ifname);
                Ok(())
            }
        }
    }
}

pub(crate) fn check_geometry(req: &PortRequest, vport: &VPort, slots: u32) -> Result<()> {
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

pub(crate) fn shared_region(ss: &mut SwitchState, switch: &str) -> Result<Arc<Region>> {
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

/// Removes port `name` of a switch: stops its NIC worker if it has one, and removes the
/// host-stack tap that came with it (the tap device disappears with its worker).
pub(crate) fn remove_switch_port(ss: &mut SwitchState, name: &str) {
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

/// A NIC port's backend choice, buffer size and ring size, checked (defaults when absent).
pub(crate) fn nic_options(
    backend: Option<&str>,
    buf_size: Option<u32>,
    slots: u32,
) -> Result<(BackendChoice, u32, u32)> {
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
    if !(64..=16384).contains(&slots) {
        return Err(DaemonError::Invalid("slots must be in 64..=16384".into()));
    }
    Ok((choice, buf_size, slots))
}
