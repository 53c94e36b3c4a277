//! Serving one port as a virtio-net device on one vhost-user socket: a thread accepts one
//! frontend at a time (QEMU's `-chardev socket` and DPDK's `virtio_user` connect as clients),
//! gives it a fresh device, and unbinds the port when the frontend goes away, then waits for
//! the next one (a restarted VM, or a frontend reconnecting with QEMU's `reconnect=`).

use std::fs;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_vhost::default_mac;
use ptnet_vhost::device::thread_name;
use ptnet_vhost::socket::{self, ClaimError, Stop};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;

use crate::device::{self, DeviceOptions, NetDevice, NetStats, NetStatsSnapshot};
use crate::proxy::Relay;

/// Numbers the relays' private sockets.
static RELAY_SEQ: AtomicU64 = AtomicU64::new(0);

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket path cannot be served (taken, in use, or bind failed).
    #[error(transparent)]
    Socket(#[from] ClaimError),
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
    /// Creating the socket or the serving thread failed.
    #[error("cannot serve on {path}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
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
    /// Permissions of the socket; `None` keeps what the umask gives.
    pub socket_mode: Option<u32>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            mac: None,
            mode: Mode::default(),
            max_queue_size: 1024,
            socket_mode: None,
        }
    }
}

/// The QEMU arguments that attach a VM's virtio-net device to a served port (besides shared
/// guest RAM: `-object memory-backend-memfd,id=mem,size=...,share=on -machine
/// memory-backend=mem`).
pub fn qemu_args(socket: &Path, id: &str, mac: [u8; 6], pairs: u16) -> Vec<String> {
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
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

struct Shared {
    stop: Stop,
    mac: Mutex<[u8; 6]>,
}

/// A port being served on a socket. Dropping it (or [`ServeHandle::stop`]) disconnects the
/// frontend, unbinds the port and removes the socket.
pub struct ServeHandle {
    path: PathBuf,
    listener: UnixListener,
    shared: Arc<Shared>,
    stats: Arc<NetStats>,
    pairs: u16,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl ServeHandle {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters across connections.
    pub fn stats(&self) -> NetStatsSnapshot {
        self.stats.snapshot()
    }

    /// The MAC address offered (the last one a driver set, once one did).
    pub fn mac(&self) -> [u8; 6] {
        *self.shared.mac.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue pairs offered.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// Disconnects the frontend (if any), unbinds the port, removes the socket.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(t) = self.thread.take() else { return };
        self.shared.stop.request(&self.listener);
        if t.join().is_err() {
            log::error!(
                "{}: the virtio-net serving thread panicked",
                self.path.display()
            );
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.stop_now();
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
    let io_err = |source| ServeError::Io {
        path: socket.to_owned(),
        source,
    };
    let listener = socket::claim(socket, cfg.socket_mode)?;
    let mac = cfg.mac.unwrap_or_else(|| default_mac(&name));
    let shared = Arc::new(Shared {
        stop: Stop::new().map_err(io_err)?,
        mac: Mutex::new(mac),
    });
    let stats = Arc::new(NetStats::default());
    let opts = DeviceOptions {
        mac,
        mode: cfg.mode,
        max_queue_size: cfg.max_queue_size,
    };
    let pairs = NetDevice::new(Arc::clone(&port), opts.clone(), Arc::clone(&stats)).pairs();
    let l2 = listener.try_clone().map_err(io_err)?;
    let (s2, st2, path2) = (Arc::clone(&shared), Arc::clone(&stats), socket.to_owned());
    let thread = thread::Builder::new()
        .name(thread_name("vnet", &name))
        .spawn(move || {
            if let Err(e) = accept_loop(&l2, &port, &opts, &s2, &st2) {
                log::error!("{}: virtio-net server failed: {e}", path2.display());
            }
        })
        .map_err(io_err)?;
    log::info!(
        "{name}: serving as a virtio-net device on {} ({pairs} queue pair(s))",
        socket.display()
    );
    Ok(ServeHandle {
        path: socket.to_owned(),
        listener,
        shared,
        stats,
        pairs,
        thread: Some(thread),
    })
}

fn accept_loop(
    listener: &UnixListener,
    port: &Arc<dyn SyncPort>,
    opts: &DeviceOptions,
    shared: &Shared,
    stats: &Arc<NetStats>,
) -> io::Result<()> {
    let mut waiter = shared.stop.waiter(listener)?;
    let name = port.name().to_owned();
    let mut opts = opts.clone();
    while waiter.wait()? {
        let dev = NetDevice::new(Arc::clone(port), opts.clone(), Arc::clone(stats));
        let (daemon, vrings) = device::collect(|| {
            VhostUserDaemon::new(
                thread_name("vnet", &name),
                Arc::clone(&dev),
                dev.guest_memory(),
            )
        });
        let mut daemon = daemon.map_err(|e| io::Error::other(e.to_string()))?;
        dev.register(vrings);
        // The frontend talks to the relay (see `proxy`), the relay to the handler over a
        // private abstract socket.
        let front = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                dev.shutdown();
                if shared.stop.stopping() {
                    return Ok(());
                }
                log::warn!("{name}: vhost-user accept failed: {e}");
                continue;
            }
        };
        let addr = SocketAddr::from_abstract_name(format!(
            "ptnet-vnet-{}-{}",
            std::process::id(),
            RELAY_SEQ.fetch_add(1, Ordering::Relaxed)
        ))?;
        let internal = UnixListener::bind_addr(&addr)?;
        let back = UnixStream::connect_addr(&addr)?;
        let relay = Relay::start(front, back, &name)?;
        let mut l = Listener::from(internal);
        if let Err(e) = daemon.start(&mut l) {
            dev.shutdown();
            relay.stop();
            if shared.stop.stopping() {
                return Ok(());
            }
            log::warn!("{name}: vhost-user handler did not start: {e}");
            continue;
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        log::info!("{name}: virtio-net frontend connected");
        let res = shared
            .stop
            .serve(daemon.shutdown_handle(), || daemon.wait());
        relay.stop();
        dev.shutdown();
        // A MAC the driver set survives a reconnection (the config space is the device's).
        opts.mac = dev.mac();
        *shared.mac.lock().unwrap_or_else(|e| e.into_inner()) = opts.mac;
        match res {
            Err(e) if !socket::ended_normally(&e) => {
                log::warn!("{name}: vhost-user connection ended: {e}; port unbound")
            }
            _ => log::info!(
                "{name}: virtio-net frontend disconnected; port unbound; {:?}",
                stats.snapshot()
            ),
        }
    }
    Ok(())
}
