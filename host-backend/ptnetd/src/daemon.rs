//! The daemon: its configuration, its state behind one lock, and host clients' attachments.
//! The state and what can be done to it are the layers below (`registry`: switches, ports,
//! pipes and direct NIC ports; `nic`: interfaces on switches; `vm`: ports served to VMs); the
//! control socket above it is [`control`](crate::control).

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_proto::{PortRequest, VmRequest};
use ptnet_spec::name::{Base, PortName};

use crate::config::{Config, PortSection};
use crate::creds;
use crate::error::Result;
pub use crate::error::{DaemonError, error_chain};
use crate::nic::{HostStack, NicRequest, nic_section};
use crate::policy::Policy;
use crate::registry::{Key, State};

/// A client's hold on a port.
#[derive(Debug)]
pub struct Attachment {
    pub(crate) key: Key,
    pub(crate) client: HostClient,
}

/// The daemon.
pub struct Daemon {
    /// The configuration in force (a reload replaces it).
    cfg: RwLock<Arc<Config>>,
    /// The control socket's rules, from that configuration.
    policy: RwLock<Arc<Policy>>,
    state: Mutex<State>,
}

/// The sync loop mode for a client that asked (or not) for busy polling, under `cfg`.
fn mode_for(cfg: &Config, busy_poll: bool) -> Mode {
    if busy_poll || cfg.daemon.busy_poll {
        Mode::BusyPoll
    } else {
        Mode::Eventfd {
            linger: Duration::from_micros(cfg.daemon.linger_us),
        }
    }
}

impl Daemon {
    /// Builds the daemon's state from its configuration: switches and persistent ports.
    pub fn new(cfg: Config) -> Result<Arc<Self>> {
        let policy = Policy::new(&cfg, creds::effective_uid())
            .map_err(|e| DaemonError::Invalid(e.to_string()))?;
        let vnet_groups = match cfg.daemon.poll_groups {
            0 => None,
            n => Some(
                ptnet_virtio_net::PollGroups::spawn(n, mode_for(&cfg, false))
                    .map_err(|e| DaemonError::Invalid(format!("poll groups: {e}")))?,
            ),
        };
        let d = Arc::new(Daemon {
            policy: RwLock::new(Arc::new(policy)),
            state: Mutex::new(State {
                max_switches: cfg.daemon.max_switches,
                vnet_groups,
                ..State::default()
            }),
            cfg: RwLock::new(Arc::new(cfg.clone())),
        });
        create_sections(&mut d.lock(), &cfg, None)?;
        Ok(d)
    }

    /// The configuration in force.
    pub fn cfg(&self) -> Arc<Config> {
        Arc::clone(&self.cfg.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The control socket's rules in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `cfg` and its `policy` in force (a reload, once the state follows them).
    pub(crate) fn replace_config(&self, cfg: Config, policy: Policy) {
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cfg);
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a host client to the port `req` names, creating it on demand.
    pub fn attach(&self, req: &PortRequest) -> Result<(Attachment, Vec<File>)> {
        let mode = self.mode(req.busy_poll);
        let mut st = self.lock();
        let (key, sync) = st.claim(req, false)?;
        match HostClient::attach(sync, mode) {
            Ok((client, files)) => Ok((Attachment { key, client }, files)),
            Err(e) => {
                st.release(&key);
                Err(DaemonError::Datapath(format!("cannot attach: {e}")))
            }
        }
    }

    /// The sync loop mode for a client that asked (or not) for busy polling.
    pub(crate) fn mode(&self, busy_poll: bool) -> Mode {
        mode_for(&self.cfg(), busy_poll)
    }

    /// Detaches a client; an on-demand port without clients is removed.
    pub fn detach(&self, att: Attachment) {
        let Attachment { key, client } = att;
        client.detach();
        let mut st = self.lock();
        st.release(&key);
    }
}

/// Creates what `cfg` lists — switches, persistent ports (NIC ports too), VMs — that `old` (the
/// configuration in force before a reload) did not list; everything at start-up (`None`).
/// What fails names the section it came from (file, line, key). Returns what was created.
pub(crate) fn create_sections(
    st: &mut State,
    cfg: &Config,
    old: Option<&Config>,
) -> Result<Vec<String>> {
    let at = |table: &str, i: usize, key: &str| {
        let place = cfg.origin.place(table, Some(i), key);
        move |e: DaemonError| DaemonError::Invalid(format!("{place}: {e}"))
    };
    let mut done = Vec::new();
    for (i, s) in cfg.switches.iter().enumerate() {
        if old.is_some_and(|o| o.switches.iter().any(|x| x.name == s.name)) {
            continue;
        }
        st.create_switch(&s.name, s.trusted_ports)
            .map_err(at("switch", i, "name"))?;
        done.push(format!("switch {}", s.name));
    }
    for (i, p) in cfg.ports.iter().enumerate() {
        if old.is_some_and(|o| o.ports.iter().any(|x| x.name == p.name)) {
            continue;
        }
        create_port_section(st, p).map_err(at("port", i, "name"))?;
        done.push(format!("port {}", p.name));
    }
    for (i, v) in cfg.vms.iter().enumerate() {
        if old.is_some_and(|o| o.vms.iter().any(|x| x.port == v.port)) {
            continue;
        }
        // The geometry of the port's own [[port]] section, if it has one.
        let geometry = cfg.ports.iter().find(|p| p.name == v.port);
        let req = VmRequest {
            port: PortRequest {
                port: v.port.clone(),
                tx_rings: geometry.map(|p| p.tx_rings),
                rx_rings: geometry.map(|p| p.rx_rings),
                slots: geometry.map(|p| p.slots),
                extra_bufs: geometry.map_or(0, |p| p.extra_bufs),
                profile: v.profile,
                busy_poll: v.busy_poll,
                mac_lock: None,
            },
            socket: v.socket.clone(),
            mac: v.mac.clone(),
            device: v.device,
            mac_lock: v.mac_lock,
            transport: v.transport,
        };
        st.serve_vm(
            &req,
            mode_for(cfg, req.port.busy_poll),
            &cfg.daemon.vm_socket_dir,
            cfg.vm_socket_access(),
        )
        .map_err(at("vm", i, "port"))?;
        done.push(format!("VM on {}", v.port));
    }
    Ok(done)
}

/// One `[[port]]` section: a host interface given directly to clients, one on a switch, or a
/// virtual port or pipe.
fn create_port_section(st: &mut State, p: &PortSection) -> Result<()> {
    let req = PortRequest {
        port: p.name.clone(),
        tx_rings: Some(p.tx_rings),
        rx_rings: Some(p.rx_rings),
        slots: Some(p.slots),
        extra_bufs: p.extra_bufs,
        profile: p.profile,
        busy_poll: false,
        mac_lock: p.mac_lock.clone(),
    };
    if let Ok(PortName {
        base: Base::Nic { ifname },
        pipe: None,
        ..
    }) = PortName::parse(&p.name)
    {
        return st.create_direct(
            ifname,
            p.backend.as_deref(),
            p.buf_size,
            p.tx_rings,
            Some(p.slots),
            true,
        );
    }
    if let Some((switch, ifname)) = nic_section(p) {
        if p.mac_lock.is_some() {
            return Err(DaemonError::Invalid(format!(
                "port {}: mac_lock applies to virtual switch ports, not to the host interface \
                 {ifname}",
                p.name
            )));
        }
        let req = NicRequest {
            switch,
            ifname,
            backend: p.backend.as_deref(),
            buf_size: p.buf_size,
            slots: p.slots,
            host_stack: HostStack::new(p.host_stack_tap.as_deref(), p.host_stack.unwrap_or(false)),
        };
        return st.attach_nic(&req).map(|_| ());
    }
    st.create_port(&req, true).map(|_| ())
}
