//! Ports served to VMs over vhost-user: as a ptnet device (`ptnet-device`) or as a
//! virtio-net device (`ptnet-virtio-net`). A served port is claimed like an attachment.
//!
//! Their sockets live in one directory the daemon owns (`[daemon] vm_socket_dir`), named by a
//! file name, never a path: root then creates, replaces and removes only its own files there,
//! whatever a request says, and nobody else can swap an entry (or a symlink) in.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use ptnet_datapath::kloop::Mode;
use ptnet_datapath::switch::vale::mac_str;
use ptnet_device::default_mac;
use ptnet_proto::{VmDevice, VmEntry, VmRequest, VmTransport};
use ptnet_spec::name::PortKey;

use crate::error::{DaemonError, Result, error_chain, parse, parse_mac};
use crate::registry::{Key, State, VmHandle, VmState};

/// Longest socket name (a Unix socket's path, directory included, must fit 107 bytes).
pub(crate) const MAX_SOCKET_NAME: usize = 64;

/// The file name of a VM's socket: `name` checked (letters, digits, `.`, `_`, `-`; not
/// starting with `.`; at most [`MAX_SOCKET_NAME`] bytes), or one made from the port's
/// canonical name (`vale0:vm1` → `vale0-vm1.sock`, `pipe0{1` → `pipe0-m1.sock`).
pub(crate) fn socket_name(name: Option<&str>, port: &str) -> Result<String> {
    let Some(n) = name else {
        let canonical = PortKey(&parse(port)?).to_string();
        let mut s = String::with_capacity(canonical.len() + 6);
        for c in canonical.chars() {
            match c {
                ':' => s.push('-'),
                '{' => s.push_str("-m"),
                '}' => s.push_str("-s"),
                c if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' => s.push(c),
                _ => s.push('_'),
            }
        }
        s.push_str(".sock");
        return Ok(s);
    };
    let ok = !n.is_empty()
        && n.len() <= MAX_SOCKET_NAME
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !ok {
        return Err(DaemonError::Invalid(format!(
            "socket {n:?}: a file name in the daemon's VM socket directory (letters, digits, \
             '.', '_', '-', at most {MAX_SOCKET_NAME} bytes, not starting with '.'), not a path"
        )));
    }
    Ok(n.to_owned())
}

/// Makes the VM socket directory if it is missing, and checks that only the daemon's user
/// can change it (else another user could swap a file or a symlink in under a socket's name).
pub(crate) fn prepare_socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let fail =
        |why: String| DaemonError::Invalid(format!("vm_socket_dir {}: {why}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| fail(e.to_string()))?;
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !m.is_dir() {
        return Err(fail("not a directory (a symlink is not followed)".into()));
    }
    if m.uid() != crate::creds::effective_uid() || m.mode() & 0o022 != 0 {
        return Err(fail(format!(
            "owned by uid {} with mode {:o}: it must be the daemon's and writable by it only",
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

impl State {
    /// Serves a port to a VM over vhost-user (the port is created, persistent, if needed),
    /// its device running in `mode`, its socket in `dir` with permissions and group `access`.
    pub(crate) fn serve_vm(
        &mut self,
        req: &VmRequest,
        mode: Mode,
        dir: &Path,
        access: ptnet_vhost_user::Access,
    ) -> Result<()> {
        let canonical = PortKey(&parse(&req.port.port)?).to_string();
        if req.device == VmDevice::VirtioNet && req.transport == VmTransport::Ivshmem {
            return Err(DaemonError::Invalid(
                "a virtio-net device is QEMU's own virtio-net-pci over vhost-user, which stock                  QEMU carries already; the ivshmem transport is for ptnet devices"
                    .into(),
            ));
        }
        if let Some(v) = self.vms.get(&canonical) {
            return Err(DaemonError::Busy(format!(
                "{canonical} (already served to a VM at {})",
                v.socket.display()
            )));
        }
        let socket = dir.join(socket_name(req.socket.as_deref(), &req.port.port)?);
        if let Some((p, _)) = self.vms.iter().find(|(_, v)| v.socket == socket) {
            return Err(DaemonError::Busy(format!(
                "socket {} (it serves {p})",
                socket.display()
            )));
        }
        prepare_socket_dir(dir)?;
        // Only the daemon writes here: a socket under this name that no served VM holds was
        // left by an earlier run, and is replaced without connecting to it (a listener that
        // never accepts would hang the connect); anything else is left alone.
        match std::fs::symlink_metadata(&socket) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(&socket)
                    .map_err(|e| DaemonError::Invalid(format!("{}: {e}", socket.display())))?;
            }
            Ok(_) => {
                return Err(DaemonError::Invalid(format!(
                    "{} exists and is not a socket",
                    socket.display()
                )));
            }
            Err(_) => {}
        }
        let mac = match &req.mac {
            Some(m) => Some(parse_mac(m)?),
            None => None,
        };
        let (key, port) = self.claim(&req.port, true)?;
        let mac = match self.lock_to_device_mac(&key, mac, req.mac_lock, req.device) {
            Ok(mac) => mac,
            Err(e) => {
                self.release(&key);
                return Err(e);
            }
        };
        let served = match req.device {
            VmDevice::Ptnet => {
                let cfg = ptnet_device::ServeConfig {
                    mac,
                    profile: req.port.profile,
                    mode,
                    access,
                    ..Default::default()
                };
                match req.transport {
                    VmTransport::VhostUser => {
                        ptnet_device::serve(&socket, Arc::clone(&port), cfg).map(VmHandle::Ptnet)
                    }
                    VmTransport::Ivshmem => {
                        ptnet_device::ivshmem::serve(&socket, Arc::clone(&port), &cfg)
                            .map(VmHandle::PtnetIvshmem)
                    }
                }
                .map_err(|e| error_chain(&e))
            }
            VmDevice::VirtioNet => {
                let cfg = ptnet_virtio_net::ServeConfig {
                    mac,
                    mode,
                    access,
                    groups: self.vnet_groups.clone(),
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
                    "{canonical}: served to a VM as a {} device over {} at {}",
                    req.device,
                    req.transport,
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

    /// Port security for a switch port served to a VM. The VM may send only from its
    /// device's MAC (`mac`, else the one the operator locked the port to, else the port's
    /// default) when `choice` says so, or when it says nothing and the operator locked the
    /// port or the device is virtio-net (whose kernel stack sends from its own MAC; netmap
    /// applications on a ptnet device choose theirs). Returns the device's MAC.
    /// [`State::release`] restores the operator's lock.
    fn lock_to_device_mac(
        &mut self,
        key: &Key,
        mac: Option<[u8; 6]>,
        choice: Option<bool>,
        device: VmDevice,
    ) -> Result<Option<[u8; 6]>> {
        let Key::Vale { switch, port } = key else {
            // A pipe's other end or a host NIC is the VM's only neighbour: nothing to protect.
            return match choice {
                Some(true) => Err(DaemonError::Invalid(
                    "only switch ports can be locked to a MAC (a pipe or a NIC has no \
                     neighbours to protect)"
                        .into(),
                )),
                _ => Ok(mac),
            };
        };
        let Some(ps) = self.switches.get(switch).and_then(|s| s.ports.get(port)) else {
            return Ok(mac);
        };
        let name = ps.vport.name();
        let lock = choice.unwrap_or(ps.mac_lock.is_some() || device == VmDevice::VirtioNet);
        if let (true, Some(want), Some(locked)) = (lock, mac, ps.mac_lock) {
            if want != locked {
                return Err(DaemonError::Invalid(format!(
                    "{name} may send from {} only (create-port --mac-lock): a VM with MAC \
                     {} could send nothing; drop --mac, give it that one, or --any-mac",
                    mac_str(locked),
                    mac_str(want)
                )));
            }
        }
        let device_mac = mac.or(ps.mac_lock).unwrap_or_else(|| default_mac(name));
        ps.vport.set_mac_lock(lock.then_some(device_mac));
        Ok(Some(device_mac))
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
            VmHandle::PtnetIvshmem(_) => {
                ptnet_device::ivshmem::qemu_args(&vm.socket, &format!("ptnet-{id}"), &*vm.port)
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
                transport: VmTransport::VhostUser,
                connections: s.connections,
                starts: s.starts,
                refused: s.refused,
                running: s.running,
                mem_ready: s.mem_ready,
                irqs: s.irqs_raised,
                bad_chains: 0,
                vnet_hdr_len,
                mac: None,
                queue_pairs: 0,
            }
        }
        VmHandle::PtnetIvshmem(h) => {
            let s = h.stats();
            VmEntry {
                socket,
                device: VmDevice::Ptnet,
                transport: VmTransport::Ivshmem,
                connections: s.connections,
                starts: s.starts,
                refused: s.refused,
                running: s.running,
                mem_ready: s.running,
                irqs: s.irqs,
                bad_chains: 0,
                vnet_hdr_len,
                mac: None,
                queue_pairs: 0,
            }
        }
        VmHandle::VirtioNet(h) => {
            let s = h.stats();
            VmEntry {
                socket,
                device: VmDevice::VirtioNet,
                transport: VmTransport::VhostUser,
                connections: s.connections,
                starts: s.starts,
                refused: s.broken,
                running: s.running,
                mem_ready: false,
                irqs: s.tx_notifies + s.rx_notifies,
                bad_chains: s.tx_bad + s.rx_bad,
                vnet_hdr_len,
                mac: Some(mac_str(h.mac())),
                queue_pairs: h.pairs(),
            }
        }
    })
}
