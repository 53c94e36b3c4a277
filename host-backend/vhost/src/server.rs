//! Serving one port on one vhost-user socket: a thread that accepts one frontend at a time
//! (QEMU's `-chardev socket` connects as a client), gives it a fresh device, and reclaims the
//! port when the frontend goes away, then waits for the next one.

use std::fs;
use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_proto::Profile;
use ptnet_spec::device::{PTNET_CONFIG_SIZE, VIRTIO_ID_PTNET};
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;

use crate::config::DeviceConfig;
use crate::device::{Device, DeviceOptions, DeviceStats, StatsSnapshot, thread_name};
use crate::socket::{self, ClaimError, Stop};
use crate::vring;

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The port cannot be a ptnet device.
    #[error("port {port} cannot be a ptnet device: {why}")]
    Port {
        /// Port name.
        port: String,
        /// Why.
        why: String,
    },
    /// The profile does not match the port's memory.
    #[error(
        "port {0} shares its memory region with other ports: serving it to a VM needs the \
         trusted profile"
    )]
    NotPrivate(String),
    /// The socket path cannot be served (taken, in use, or bind failed).
    #[error(transparent)]
    Socket(#[from] ClaimError),
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
    /// MAC address the guest sees (default: locally administered, derived from the port
    /// name).
    pub mac: Option<[u8; 6]>,
    /// Trust profile. *Untrusted* requires the port to have a region of its own (a VALE port
    /// created without a shared region); *trusted* accepts any port (a pipe end, a VALE port
    /// in its switch's shared region). The guest always sees exactly the port's region.
    pub profile: Profile,
    /// Sync loop mode.
    pub mode: Mode,
    /// Largest virtqueue a frontend may configure (a power of two; QEMU's default `vq_size`
    /// is 64).
    pub max_queue_size: u16,
    /// Permissions of the socket (e.g. 0o660 with a group QEMU runs in); `None` keeps what
    /// the umask gives.
    pub socket_mode: Option<u32>,
    /// Measurement only (`tests/kick_path.rs`): kicks pass through vhost-user-backend's vring
    /// worker thread before they reach the sync loop.
    #[doc(hidden)]
    pub kicks_via_worker: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            mac: None,
            profile: Profile::Untrusted,
            mode: Mode::default(),
            max_queue_size: 1024,
            socket_mode: None,
            kicks_via_worker: false,
        }
    }
}

/// A locally administered unicast MAC derived from the port name (FNV-1a).
pub fn default_mac(port: &str) -> [u8; 6] {
    let h = port
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
        .to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

/// The QEMU arguments that attach a VM to a served port (besides shared guest RAM:
/// `-object memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem`).
/// `reconnect-ms` makes QEMU (patched: qemu-patches 0009) wait for the daemon at start and
/// connect again when a restarted daemon serves the socket; the driver then hands the new
/// daemon its CSB and takes the rings up again (SPEC §3.5).
pub fn qemu_args(socket: &Path, id: &str, port: &dyn SyncPort) -> Vec<String> {
    let ifc = port.interface();
    let nvqs = ifc.tx.len() + ifc.rx.len();
    vec![
        "-chardev".into(),
        format!("socket,id={id},path={},reconnect-ms=1000", socket.display()),
        "-device".into(),
        format!(
            "vhost-user-test-device-pci,id={id},chardev={id},virtio-id={VIRTIO_ID_PTNET},\
             num_vqs={nvqs},config_size={PTNET_CONFIG_SIZE}"
        ),
    ]
}

struct Shared {
    stop: Stop,
    device: Mutex<Option<Arc<Device>>>,
}

/// A port being served on a socket. Dropping it (or [`ServeHandle::stop`]) disconnects the
/// frontend, reclaims the port and removes the socket.
pub struct ServeHandle {
    path: PathBuf,
    listener: UnixListener,
    shared: Arc<Shared>,
    stats: Arc<DeviceStats>,
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
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The config space as the current frontend sees it (`None` while none is connected).
    pub fn config(&self) -> Option<ptnet_spec::device::PtnetConfig> {
        let d = self.shared.device.lock().unwrap_or_else(|e| e.into_inner());
        d.as_ref().map(|d| d.config())
    }

    /// Disconnects the frontend (if any), reclaims the port, removes the socket.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(t) = self.thread.take() else { return };
        self.shared.stop.request(&self.listener);
        if t.join().is_err() {
            log::error!(
                "{}: the vhost-user serving thread panicked",
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

/// Serves `port` as a ptnet device on the vhost-user socket `socket` until the handle is
/// stopped or dropped. One frontend at a time; each connection gets a fresh device, and the
/// port is reclaimed (unbound, free for the next client) when the frontend disconnects.
pub fn serve(
    socket: &Path,
    port: Arc<dyn SyncPort>,
    cfg: ServeConfig,
) -> Result<ServeHandle, ServeError> {
    let name = port.name().to_owned();
    let bad = |why: String| ServeError::Port {
        port: name.clone(),
        why,
    };
    let dc = DeviceConfig::for_port(&*port, [0; 6]);
    dc.get()
        .validate_geometry()
        .map_err(|e| bad(e.to_string()))?;
    if !cfg.max_queue_size.is_power_of_two() {
        return Err(bad(format!(
            "virtqueue size {} is not a power of two",
            cfg.max_queue_size
        )));
    }
    let region = port.interface().region();
    if cfg.profile == Profile::Untrusted && region.layout().if_objtotal != 1 {
        return Err(ServeError::NotPrivate(name));
    }
    let io_err = |source| ServeError::Io {
        path: socket.to_owned(),
        source,
    };
    let listener = socket::claim(socket, cfg.socket_mode)?;
    let shared = Arc::new(Shared {
        stop: Stop::new().map_err(io_err)?,
        device: Mutex::new(None),
    });
    let stats = Arc::new(DeviceStats::default());
    let opts = DeviceOptions {
        mac: cfg.mac.unwrap_or_else(|| default_mac(&name)),
        mode: cfg.mode,
        max_queue_size: cfg.max_queue_size,
        kicks_via_worker: cfg.kicks_via_worker,
    };
    let l2 = listener.try_clone().map_err(io_err)?;
    let (s2, st2, path2) = (Arc::clone(&shared), Arc::clone(&stats), socket.to_owned());
    let thread = thread::Builder::new()
        .name(thread_name("vhost", &name))
        .spawn(move || {
            if let Err(e) = accept_loop(&l2, &port, &opts, &s2, &st2) {
                log::error!("{}: vhost-user server failed: {e}", path2.display());
            }
        })
        .map_err(io_err)?;
    log::info!(
        "{}: serving {} as a ptnet device on {} ({:?})",
        name,
        region_kind(&cfg.profile),
        socket.display(),
        cfg.profile
    );
    Ok(ServeHandle {
        path: socket.to_owned(),
        listener,
        shared,
        stats,
        thread: Some(thread),
    })
}

fn region_kind(p: &Profile) -> &'static str {
    match p {
        Profile::Untrusted => "a private region",
        Profile::Trusted => "a shared region",
    }
}

fn accept_loop(
    listener: &UnixListener,
    port: &Arc<dyn SyncPort>,
    opts: &DeviceOptions,
    shared: &Shared,
    stats: &Arc<DeviceStats>,
) -> io::Result<()> {
    let mut waiter = shared.stop.waiter(listener)?;
    let name = port.name().to_owned();
    while waiter.wait()? {
        let dev = Device::new(Arc::clone(port), opts.clone(), Arc::clone(stats))?;
        let (daemon, vrings) = vring::collect(|| {
            VhostUserDaemon::new(
                thread_name("vhost", &name),
                Arc::clone(&dev),
                dev.guest_memory(),
            )
        });
        let mut daemon = daemon.map_err(|e| io::Error::other(e.to_string()))?;
        dev.register(vrings);
        let mut l = Listener::from(listener.try_clone()?);
        if let Err(e) = daemon.start(&mut l) {
            dev.shutdown();
            if shared.stop.stopping() {
                return Ok(());
            }
            log::warn!("{name}: vhost-user accept failed: {e}");
            continue;
        }
        stats.connections.fetch_add(1, Ordering::Relaxed);
        log::info!("{name}: vhost-user frontend connected");
        *shared.device.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&dev));
        let res = shared
            .stop
            .serve(daemon.shutdown_handle(), || daemon.wait());
        shared
            .device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        dev.shutdown();
        match res {
            Err(e) if !socket::ended_normally(&e) => {
                log::warn!("{name}: vhost-user connection ended: {e}; port reclaimed")
            }
            _ => log::info!("{name}: vhost-user frontend disconnected; port reclaimed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_socket_in_use_or_a_file_is_not_taken_over_but_a_stale_socket_is() {
        use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
        let sw = Switch::new("vale-srv");
        let port: Arc<dyn SyncPort> = Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port("p", &VPortSpec::default()).unwrap(),
        });
        let dir = std::env::temp_dir().join(format!("ptnet-vhost-srv-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.sock");
        // A stale socket (its listener is gone) is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let cfg = ServeConfig {
            socket_mode: Some(0o660),
            ..Default::default()
        };
        let h = serve(&path, Arc::clone(&port), cfg.clone()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(
            serve(&path, Arc::clone(&port), cfg.clone()),
            Err(ServeError::Socket(ClaimError::InUse(_)))
        ));
        h.stop();
        assert!(!path.exists(), "the socket is removed at stop");
        let file = dir.join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            serve(&file, port, cfg),
            Err(ServeError::Socket(ClaimError::PathTaken(_)))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_macs_are_local_unicast_and_differ_by_port() {
        let a = default_mac("vale0:vm1");
        let b = default_mac("vale0:vm2");
        assert_eq!(a[0] & 3, 2, "locally administered, unicast");
        assert_ne!(a, b);
        assert_eq!(a, default_mac("vale0:vm1"));
    }
}
