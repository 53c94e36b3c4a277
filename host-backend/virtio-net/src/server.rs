//! Serving one port as a virtio-net device: the options, the QEMU arguments; the socket, one
//! frontend at a time (QEMU's `-chardev socket` and DPDK's `virtio_user`), and the port's
//! unbinding when a frontend goes away are `ptnet-vhost-user`'s ([`vhu::serve`]).

use std::path::Path;
use std::sync::Arc;

use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::mac_str;
use ptnet_vhost_user::{self as vhu, default_mac};

use crate::device::{self, DeviceOptions, NetDevice, NetStats, NetStatsSnapshot};
use crate::group::PollGroups;

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A bad option or a port that cannot be a virtio-net device.
    #[error("{0}")]
    Invalid(String),
    /// The socket cannot be served.
    #[error(transparent)]
    Serve(#[from] vhu::ServeError),
}

/// How to serve a port.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// MAC address in the config space (default: derived from the port name, as for the
    /// ptnet device).
    pub mac: Option<[u8; 6]>,
    /// How the queue-pair workers wait.
    pub mode: Mode,
    /// Largest virtqueue a frontend may configure (a power of two).
    pub max_queue_size: u16,
    /// Permissions and group of the socket.
    pub access: vhu::Access,
    /// Poll groups that serve the queue pairs (none: a thread per pair).
    pub groups: Option<Arc<PollGroups>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            mac: None,
            mode: Mode::default(),
            max_queue_size: 1024,
            access: vhu::Access::default(),
            groups: None,
        }
    }
}

/// The QEMU arguments that attach a VM's virtio-net device to a served port (besides shared
/// guest RAM: `-object memory-backend-memfd,id=mem,size=...,share=on -machine
/// memory-backend=mem`).
pub fn qemu_args(socket: &Path, id: &str, mac: [u8; 6], pairs: u16) -> Vec<String> {
    let mac = mac_str(mac);
    let mq = if pairs > 1 {
        format!(",mq=on,vectors={}", 2 * pairs + 2)
    } else {
        String::new()
    };
    let queues = if pairs > 1 {
        format!(",queues={pairs}")
    } else {
        String::new()
    };
    vec![
        "-chardev".into(),
        format!("socket,id={id},path={},reconnect-ms=1000", socket.display()),
        "-netdev".into(),
        format!("vhost-user,id={id},chardev={id}{queues}"),
        "-device".into(),
        format!("virtio-net-pci,netdev={id},mac={mac},mrg_rxbuf=on{mq}"),
    ]
}

/// A port being served as a virtio-net device. Dropping it (or [`ServeHandle::stop`])
/// disconnects the frontend, unbinds the port and removes the socket.
#[derive(Debug)]
pub struct ServeHandle {
    inner: vhu::ServeHandle<NetDevice>,
    pairs: u16,
}

impl ServeHandle {
    /// The socket path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// Counters across connections.
    pub fn stats(&self) -> NetStatsSnapshot {
        self.inner.stats()
    }

    /// The MAC address offered (the last one a driver set, once one did).
    pub fn mac(&self) -> [u8; 6] {
        match self.inner.device() {
            Some(d) => d.mac(),
            None => self.inner.options().mac,
        }
    }

    /// Queue pairs offered.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// Disconnects the frontend (if any), unbinds the port, removes the socket.
    pub fn stop(self) {
        self.inner.stop();
    }
}

/// Serves `port` as a virtio-net device on the vhost-user socket `socket` until the handle is
/// stopped or dropped. One frontend at a time; each connection gets a fresh device. The
/// guest never sees the port's memory (frames are copied), so any port will do: a VALE port
/// with a private or a shared region, or a pipe end.
pub fn serve(
    socket: &Path,
    port: Arc<dyn SyncPort>,
    cfg: ServeConfig,
) -> Result<ServeHandle, ServeError> {
    let name = port.name().to_owned();
    if !cfg.max_queue_size.is_power_of_two() {
        return Err(ServeError::Invalid(format!(
            "virtqueue size {} is not a power of two",
            cfg.max_queue_size
        )));
    }
    let ifc = port.interface();
    if ifc.tx.is_empty() || ifc.rx.is_empty() {
        return Err(ServeError::Invalid(format!(
            "port {name} needs at least one TX and one RX ring"
        )));
    }
    let opts = DeviceOptions {
        mac: cfg.mac.unwrap_or_else(|| default_mac(&name)),
        mode: cfg.mode,
        max_queue_size: cfg.max_queue_size,
        groups: cfg.groups.clone(),
    };
    let pairs = device::pairs_of(&*port);
    let stats = Arc::new(NetStats::default());
    let inner = vhu::serve::<NetDevice>(socket, cfg.access, port, opts, stats)?;
    log::info!(
        "{name}: serving as a virtio-net device on {} ({pairs} queue pair(s))",
        socket.display()
    );
    Ok(ServeHandle { inner, pairs })
}
