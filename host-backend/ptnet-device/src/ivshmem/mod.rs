//! The ptnet device on QEMU's `ivshmem-doorbell`, the transport every QEMU has (SPEC.md §6):
//! the daemon is the ivshmem server of a port's socket. QEMU connects at start-up
//! (`-chardev socket,...` + `-device ivshmem-doorbell,chardev=...,vectors=N`) and gets the
//! port's region as BAR 2, the daemon's kick eventfds as the doorbell's targets and the
//! guest's interrupt eventfds as its MSI-X vectors ([`conn`]). The CSB lives in the region's
//! device block for the port, not in guest RAM: the daemon never maps guest memory on this
//! transport.
//!
//! One thread per served port accepts one QEMU at a time and answers its driver's start and
//! reset requests; the port's sync loop is the same as a host client's. QEMU takes the shared
//! memory once per VM lifetime, so a daemon restart cannot hand a running VM new memory: the
//! VM must be restarted (SPEC.md §6.5).

pub mod conn;

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use ptnet_datapath::port::SyncPort;
use ptnet_proto::Profile;
use ptnet_vhost_user::socket::{self, SocketFile, thread_name};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::config::DeviceConfig;
use crate::device::port_takes_vnet_hdr;
use crate::server::{ServeConfig, ServeError};
use conn::{Conn, ConnOptions};

/// Counters of a port served over ivshmem, across QEMU connections.
#[derive(Debug, Default)]
pub struct IvshmemStats {
    /// QEMU connections accepted.
    pub connections: AtomicU64,
    /// Device starts.
    pub starts: AtomicU64,
    /// Device stops.
    pub stops: AtomicU64,
    /// Start requests refused, and QEMUs turned away while another was connected.
    pub refused: AtomicU64,
    /// Interrupts raised to the guest (ring vectors).
    pub irqs: AtomicU64,
    /// Whether the device runs now.
    pub running: AtomicBool,
    /// Whether the running device carries the virtio-net header.
    pub vnet_hdr: AtomicBool,
}

/// A point-in-time copy of [`IvshmemStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IvshmemSnapshot {
    /// QEMU connections accepted.
    pub connections: u64,
    /// Device starts.
    pub starts: u64,
    /// Device stops.
    pub stops: u64,
    /// Start requests refused and QEMUs turned away.
    pub refused: u64,
    /// Interrupts raised to the guest (ring vectors).
    pub irqs: u64,
    /// Whether the device runs now.
    pub running: bool,
    /// Whether the running device carries the virtio-net header.
    pub vnet_hdr: bool,
}

impl IvshmemStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> IvshmemSnapshot {
        IvshmemSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            starts: self.starts.load(Ordering::Relaxed),
            stops: self.stops.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            irqs: self.irqs.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            vnet_hdr: self.vnet_hdr.load(Ordering::Relaxed),
        }
    }
}

/// A port served over ivshmem; stopping it (or dropping it) ends the connection, stops the
/// device and removes the socket.
#[derive(Debug)]
pub struct IvshmemHandle {
    path: PathBuf,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    file: SocketFile,
    stats: Arc<IvshmemStats>,
}

impl IvshmemHandle {
    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counters.
    pub fn stats(&self) -> IvshmemSnapshot {
        self.stats.snapshot()
    }

    /// Stops serving and waits for the serving thread.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the ivshmem server of {} panicked", self.path.display());
            }
            self.file.remove();
        }
    }
}

impl Drop for IvshmemHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The QEMU arguments of a VM whose ptnet device is `port` served over ivshmem at `socket`.
/// Unlike the virtio transport, guest RAM need not be shared: the daemon never maps it.
pub fn qemu_args(socket: &Path, id: &str, port: &dyn SyncPort) -> Vec<String> {
    let ifc = port.interface();
    let vectors = ifc.tx.len() + ifc.rx.len() + 1;
    vec![
        "-chardev".into(),
        format!("socket,id={id},path={}", socket.display()),
        "-device".into(),
        format!("ivshmem-doorbell,id={id},chardev={id},vectors={vectors}"),
    ]
}

/// Serves `port` as a ptnet device over ivshmem on the socket `socket` until the handle is
/// stopped or dropped; `cfg`'s MAC, profile, mode and access apply.
pub fn serve(
    socket: &Path,
    port: Arc<dyn SyncPort>,
    cfg: &ServeConfig,
) -> Result<IvshmemHandle, ServeError> {
    let name = port.name().to_owned();
    let bad = |why: String| ServeError::Port {
        port: name.clone(),
        why,
    };
    let ifc = port.interface();
    let dc = DeviceConfig::for_port(&*port, [0; 6]);
    dc.get()
        .validate_geometry()
        .map_err(|e| bad(e.to_string()))?;
    let region = ifc.region();
    let nrings = (ifc.tx.len() + ifc.rx.len()) as u32;
    if region
        .ivshmem_block(ifc.nifp_offset())
        .is_none_or(|b| b.max_rings < nrings)
    {
        return Err(bad(format!(
            "its region has no ivshmem device block for {nrings} rings"
        )));
    }
    if cfg.profile == Profile::Untrusted && region.layout().if_objtotal != 1 {
        return Err(ServeError::NotPrivate(name));
    }
    let opts = ConnOptions {
        mac: cfg.mac.unwrap_or_else(|| crate::default_mac(&name)),
        mode: cfg.mode,
        vnet_hdr_ok: port_takes_vnet_hdr(&*port),
    };
    let (listener, file) = socket::claim(socket, cfg.access)
        .map_err(|e| ServeError::Serve(ptnet_vhost_user::ServeError::Socket(e)))?;
    let io_err = |e: io::Error| {
        ServeError::Serve(ptnet_vhost_user::ServeError::Io {
            path: socket.to_owned(),
            source: e,
        })
    };
    let stop = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(io_err)?);
    let stats = Arc::new(IvshmemStats::default());
    let server = Server {
        port,
        opts,
        stats: Arc::clone(&stats),
        stop: Arc::clone(&stop),
    };
    let thread = thread::Builder::new()
        .name(thread_name("ivsh", &name))
        .spawn(move || server.run(&listener))
        .map_err(io_err)?;
    log::info!(
        "{name}: serving it as a ptnet device over ivshmem on {} ({:?})",
        socket.display(),
        cfg.profile
    );
    Ok(IvshmemHandle {
        path: socket.to_owned(),
        stop,
        thread: Some(thread),
        file,
        stats,
    })
}

const LISTENER: u64 = 0;
const STOP: u64 = 1;
const QEMU: u64 = 2;
const CTRL: u64 = 3;

/// The serving thread's state.
struct Server {
    port: Arc<dyn SyncPort>,
    opts: ConnOptions,
    stats: Arc<IvshmemStats>,
    stop: Arc<EventFd>,
}

impl Server {
    fn run(self, listener: &UnixListener) {
        if let Err(e) = self.serve(listener) {
            log::error!("{}: the ivshmem server failed: {e}", self.port.name());
        }
    }

    fn serve(&self, listener: &UnixListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        let add = |fd: i32, token| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(listener.as_raw_fd(), LISTENER)?;
        add(self.stop.as_raw_fd(), STOP)?;
        let mut current: Option<(UnixStream, Conn)> = None;
        let mut events = [EpollEvent::default(); 4];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                match ev.data() {
                    STOP => return Ok(()),
                    LISTENER => {
                        while let Ok((stream, _)) = listener.accept() {
                            if current.is_some() {
                                // One VM per port: a second QEMU is turned away (its device
                                // fails to realize when the socket closes).
                                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                                log::warn!(
                                    "{}: a second QEMU connected while one is served: refused",
                                    self.port.name()
                                );
                                continue;
                            }
                            current = self.connect(&epoll, stream);
                        }
                    }
                    CTRL => {
                        if let Some((_, c)) = &mut current {
                            c.control();
                        }
                    }
                    QEMU => {
                        // QEMU never sends anything: readable means it went away (or talks
                        // nonsense, which ends the connection as well).
                        if let Some((s, c)) = current.take() {
                            let _ = epoll.ctl(
                                ControlOperation::Delete,
                                s.as_raw_fd(),
                                EpollEvent::default(),
                            );
                            let _ = epoll.ctl(
                                ControlOperation::Delete,
                                c.ctrl().as_raw_fd(),
                                EpollEvent::default(),
                            );
                            log::info!(
                                "{}: QEMU disconnected (peer {})",
                                self.port.name(),
                                c.peer_id()
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sets up a new QEMU: its device, its set-up messages, its place in the epoll set.
    fn connect(&self, epoll: &Epoll, stream: UnixStream) -> Option<(UnixStream, Conn)> {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let name = self.port.name();
        let conn = stream.set_nonblocking(true).and_then(|()| {
            let c = Conn::new(Arc::clone(&self.port), self.opts, Arc::clone(&self.stats))?;
            c.send_setup(&stream)?;
            epoll.ctl(
                ControlOperation::Add,
                stream.as_raw_fd(),
                EpollEvent::new(
                    EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP,
                    QEMU,
                ),
            )?;
            if let Err(e) = epoll.ctl(
                ControlOperation::Add,
                c.ctrl().as_raw_fd(),
                EpollEvent::new(EventSet::IN, CTRL),
            ) {
                let _ = epoll.ctl(
                    ControlOperation::Delete,
                    stream.as_raw_fd(),
                    EpollEvent::default(),
                );
                return Err(e);
            }
            Ok(c)
        });
        match conn {
            Ok(c) => {
                log::info!(
                    "{name}: QEMU connected over ivshmem (guest peer {})",
                    c.peer_id()
                );
                Some((stream, c))
            }
            Err(e) => {
                log::warn!("{name}: cannot set up the QEMU that connected: {e}");
                None
            }
        }
    }
}
