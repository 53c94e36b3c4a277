//! The daemon: its configuration, its state behind one lock, and host clients' attachments.
//! The state and what can be done to it are the layers below (`registry`: switches, ports,
//! pipes and direct NIC ports; `nic`: interfaces on switches; `vm`: ports served to VMs); the
//! control socket above it is [`control`](crate::control).

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};
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
    pub(crate) cfg: Config,
    pub(crate) policy: Policy,
    state: Mutex<State>,
}

impl Daemon {
    /// Builds the daemon's state from its configuration: switches and persistent ports.
    pub fn new(cfg: Config) -> Result<Arc<Self>> {
        let policy = Policy::new(&cfg, creds::effective_uid())
            .map_err(|e| DaemonError::Invalid(e.to_string()))?;
        let d = Arc::new(Daemon {
            policy,
            state: Mutex::new(State {
                max_switches: cfg.daemon.max_switches,
                ..State::default()
            }),
            cfg,
        });
        {
            let mut st = d.lock();
            // What fails here names the section it came from (file, line, key).
            let at = |table: &str, i: usize, key: &str| {
                let place = d.cfg.origin.place(table, Some(i), key);
                move |e: DaemonError| DaemonError::Invalid(format!("{place}: {e}"))
            };
            for (i, s) in d.cfg.switches.iter().enumerate() {
                st.create_switch(&s.name, s.trusted_ports)
                    .map_err(at("switch", i, "name"))?;
            }
            for (i, p) in d.cfg.ports.iter().enumerate() {
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
                let _: &PortSection = p;
                if let Ok(PortName {
                    base: Base::Nic { ifname },
                    pipe: None,
                    ..
                }) = PortName::parse(&p.name)
                {
                    st.create_direct(
                        ifname,
                        p.backend.as_deref(),
                        p.buf_size,
                        p.tx_rings,
                        Some(p.slots),
                        true,
                    )
                    .map_err(at("port", i, "name"))?;
                    continue;
                }
                if let Some((switch, ifname)) = nic_section(p) {
                    if p.mac_lock.is_some() {
                        return Err(at("port", i, "mac_lock")(DaemonError::Invalid(format!(
                            "port {}: mac_lock applies to virtual switch ports, not to the \
                             host interface {ifname}",
                            p.name
                        ))));
                    }
                    let req = NicRequest {
                        switch,
                        ifname,
                        backend: p.backend.as_deref(),
                        buf_size: p.buf_size,
                        slots: p.slots,
                        host_stack: HostStack::new(
                            p.host_stack_tap.as_deref(),
                            p.host_stack.unwrap_or(false),
                        ),
                    };
                    st.attach_nic(&req).map_err(at("port", i, "name"))?;
                    continue;
                }
                st.create_port(&req, true).map_err(at("port", i, "name"))?;
            }
            for (i, v) in d.cfg.vms.iter().enumerate() {
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
                        mac_lock: None,
                    },
                    socket: v.socket.clone(),
                    mac: v.mac.clone(),
                    device: v.device,
                    mac_lock: v.mac_lock,
                };
                let mode = d.mode(req.port.busy_poll);
                st.serve_vm(
                    &req,
                    mode,
                    &d.cfg.daemon.vm_socket_dir,
                    d.cfg.socket_mode().ok(),
                )
                .map_err(at("vm", i, "port"))?;
            }
        }
        Ok(d)
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
        if busy_poll || self.cfg.daemon.busy_poll {
            Mode::BusyPoll
        } else {
            Mode::Eventfd {
                linger: Duration::from_micros(self.cfg.daemon.linger_us),
            }
        }
    }

    /// Detaches a client; an on-demand port without clients is removed.
    pub fn detach(&self, att: Attachment) {
        let Attachment { key, client } = att;
        client.detach();
        let mut st = self.lock();
        st.release(&key);
    }
}
