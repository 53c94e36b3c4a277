//! Ports served to VMs over vhost-user: as a ptnet device (`ptnet-device`) or as a
//! virtio-net device (`ptnet-virtio-net`). A served port is claimed like an attachment.

use std::path::PathBuf;
use std::sync::Arc;

use ptnet_datapath::kloop::Mode;
use ptnet_proto::{VmDevice, VmEntry, VmRequest};
use ptnet_spec::name::PortKey;

use crate::error::{DaemonError, Result, error_chain, parse};
use crate::registry::{State, VmHandle, VmState};

impl State {
    /// Serves a port to a VM over vhost-user (the port is created, persistent, if needed),
    /// its device running in `mode`, its socket with permissions `socket_mode`.
    pub(crate) fn serve_vm(
        &mut self,
        req: &VmRequest,
        mode: Mode,
        socket_mode: Option<u32>,
    ) -> Result<()> {
        let canonical = PortKey(&parse(&req.port.port)?).to_string();
        if let Some(v) = self.vms.get(&canonical) {
            return Err(DaemonError::Busy(format!(
                "{canonical} (already served to a VM at {})",
                v.socket.display()
            )));
        }
        let mac = match &req.mac {
            Some(m) => Some(parse_mac(m)?),
            None => None,
        };
        let (key, port) = self.claim(&req.port, true)?;
        let socket = PathBuf::from(&req.socket);
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
                self.vms.insert(
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
                self.release(&key);
                Err(DaemonError::Datapath(e))
            }
        }
    }

    /// Stops serving a port to a VM and releases it.
    pub(crate) fn stop_vm(&mut self, port: &str) -> Result<()> {
        let canonical = PortKey(&parse(port)?).to_string();
        let vm = self
            .vms
            .remove(&canonical)
            .ok_or_else(|| DaemonError::Missing(format!("a VM served on {canonical}")))?;
        vm.handle.stop();
        self.release(&vm.key);
        log::info!("{canonical}: no longer served to a VM");
        Ok(())
    }

    /// The QEMU arguments of the VM a port is served to.
    pub(crate) fn qemu_args(&self, port: &str) -> Result<Vec<String>> {
        let canonical = PortKey(&parse(port)?).to_string();
        let vm = self.vms.get(&canonical).ok_or_else(|| {
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
}

pub(crate) fn vm_entry(st: &State, port: &str) -> Option<VmEntry> {
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

pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6]> {
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
