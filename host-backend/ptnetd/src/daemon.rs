//! The daemon: its configuration, its state behind one lock, and host clients' attachments.
//! What it does is split by concern, each an `impl Daemon` of its own:
//!
//! * `registry`: switches, ports, pipes and direct NIC ports, claimed and released;
//! * `nic`: host interfaces attached to switches or given directly to a client;
//! * `vm`: ports served to VMs over vhost-user;
//! * [`control`](crate::control): the control socket, its connections and requests.

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_proto::{PortRequest, VmRequest};
use ptnet_spec::name::{Base, PortName};

use crate::config::{Config, PortSection};
use crate::nic::{HostStack, NicRequest, nic_section};
use crate::registry::{Key, State};

/// Default geometry of ports created on demand.
pub(crate) const DEFAULT_SLOTS: u32 = 1024;

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

pub(crate) type Result<T> = std::result::Result<T, DaemonError>;

/// A client's hold on a port.
#[derive(Debug)]
pub struct Attachment {
    pub(crate) key: Key,
    pub(crate) client: HostClient,
}

/// The daemon.
pub struct Daemon {
    pub(crate) cfg: Config,
    state: Mutex<State>,
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
                    d.attach_nic(&mut st, &req)?;
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        self.release(&mut st, &key);
    }
}

pub use ptnet_proto::error_chain;
