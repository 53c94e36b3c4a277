//! Serving one port on one vhost-user socket, whatever the device kind: a thread accepts one
//! frontend at a time (QEMU's `-chardev socket` and DPDK's `virtio_user` connect as clients),
//! gives it a fresh device, and reclaims the port when the frontend goes away, then waits for
//! the next one (a restarted VM, or a frontend reconnecting with QEMU's `reconnect-ms`).
//!
//! A device kind says what it is through [`PortDevice`]; the ptnet device and the virtio-net
//! device are the two there are.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};

use ptnet_datapath::port::SyncPort;
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon};

use crate::guest::{GuestMem, MemWatch};
use crate::relay::{BackendChannel, Relay};
use crate::socket::{self, ClaimError, Stop, thread_name};
use crate::vring::{self, HookedVring, VringHook};

/// A device kind served on a vhost-user socket, one fresh device per frontend connection.
pub trait PortDevice:
    VhostUserBackend<Bitmap = (), Vring = HookedVring> + VringHook + Sized + 'static
{
    /// What every connection's device is made from; a connection may leave changes for the
    /// next one ([`PortDevice::carry_over`]).
    type Options: Clone + Send + 'static;
    /// Counters across connections.
    type Stats: Send + Sync + 'static;
    /// A point-in-time copy of them.
    type Snapshot;
    /// What the device is, for logs ("ptnet device", "virtio-net device").
    const KIND: &'static str;
    /// The prefix of the serving thread's name.
    const THREAD: &'static str;

    /// The device of one new connection to `port`.
    fn connect(
        port: &Arc<dyn SyncPort>,
        opts: &Self::Options,
        stats: &Arc<Self::Stats>,
    ) -> io::Result<Arc<Self>>;
    /// The guest memory handle the vhost-user handler updates.
    fn guest_memory(&self) -> GuestMem;
    /// What watches that memory (every table goes through [`MemWatch::accept`]): a page the
    /// frontend takes away ends the connection.
    fn memory_watch(&self) -> &MemWatch;
    /// Takes the queues the handler created, in queue order (already hooked to the device).
    fn set_vrings(&self, vrings: Vec<HookedVring>);
    /// The connection's backend request channel, for [`Watchdog`](crate::relay::Watchdog)s
    /// around the device's backend requests.
    fn set_backend_channel(&self, _ch: BackendChannel) {}
    /// The frontend went away: stop, and reclaim the port.
    fn shutdown(&self);
    /// After a connection: what the next connection's device keeps of this one.
    fn carry_over(&self, _opts: &mut Self::Options) {}
    /// The counter of accepted connections.
    fn connections(stats: &Self::Stats) -> &AtomicU64;
    /// Reads the counters.
    fn snapshot(stats: &Self::Stats) -> Self::Snapshot;
}

/// Errors of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket path cannot be served (taken, in use, or bind failed).
    #[error(transparent)]
    Socket(#[from] ClaimError),
    /// Creating the serving thread or its wake-up failed.
    #[error("cannot serve on {path}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
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

/// Numbers the relays' private sockets.
static RELAY_SEQ: AtomicU64 = AtomicU64::new(0);

struct Shared<D: PortDevice> {
    stop: Stop,
    opts: Mutex<D::Options>,
    device: Mutex<Option<Arc<D>>>,
}

/// A port being served on a socket. Dropping it (or [`ServeHandle::stop`]) disconnects the
/// frontend, reclaims the port and removes the socket.
pub struct ServeHandle<D: PortDevice> {
    path: PathBuf,
    listener: UnixListener,
    /// The socket's entry, removed at stop (only if it is still ours).
    file: socket::SocketFile,
    shared: Arc<Shared<D>>,
    stats: Arc<D::Stats>,
    thread: Option<JoinHandle<()>>,
}

impl<D: PortDevice> std::fmt::Debug for ServeHandle<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("kind", &D::KIND)
            .field("path", &self.path)
            .finish()
    }
}

impl<D: PortDevice> ServeHandle<D> {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counters across connections.
    pub fn stats(&self) -> D::Snapshot {
        D::snapshot(&self.stats)
    }

    /// The options the next connection's device gets (what the last one left).
    pub fn options(&self) -> D::Options {
        self.shared
            .opts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current connection's device, if a frontend is connected.
    pub fn device(&self) -> Option<Arc<D>> {
        self.shared
            .device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        self.file.remove();
    }
}

impl<D: PortDevice> Drop for ServeHandle<D> {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Serves `port` as a `D` on the vhost-user socket `socket` (permissions and group from
/// `access`) until the handle is stopped or dropped. One frontend at a time; each connection
/// gets a fresh device, and the port is reclaimed (unbound, free for the next client) when the
/// frontend disconnects. The caller validated `port` and `opts` for the device kind.
pub fn serve<D: PortDevice>(
    socket: &Path,
    access: socket::Access,
    port: Arc<dyn SyncPort>,
    opts: D::Options,
    stats: Arc<D::Stats>,
) -> Result<ServeHandle<D>, ServeError> {
    let io_err = |source| ServeError::Io {
        path: socket.to_owned(),
        source,
    };
    let (listener, file) = socket::claim(socket, access)?;
    let shared = Arc::new(Shared::<D> {
        stop: Stop::new().map_err(io_err)?,
        opts: Mutex::new(opts),
        device: Mutex::new(None),
    });
    let l2 = listener.try_clone().map_err(io_err)?;
    let (s2, st2, path2) = (Arc::clone(&shared), Arc::clone(&stats), socket.to_owned());
    let thread = thread::Builder::new()
        .name(thread_name(D::THREAD, port.name()))
        .spawn(move || {
            if let Err(e) = accept_loop(&l2, &port, &s2, &st2) {
                log::error!("{}: vhost-user server failed: {e}", path2.display());
            }
        })
        .map_err(io_err)?;
    Ok(ServeHandle {
        path: socket.to_owned(),
        listener,
        file,
        shared,
        stats,
        thread: Some(thread),
    })
}

/// The relay for an accepted frontend connection `front`: the handler accepts on the private
/// listener returned, whose one connection leads to the relay.
fn relayed(
    front: UnixStream,
    name: &str,
    channel: BackendChannel,
) -> io::Result<(UnixListener, Relay)> {
    let addr = private_addr()?;
    let internal = UnixListener::bind_addr(&addr)?;
    let back = UnixStream::connect_addr(&addr)?;
    let relay = Relay::start(front, back, name, channel)?;
    Ok((internal, relay))
}

fn private_addr() -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!(
        "ptnet-vhu-{}-{}",
        std::process::id(),
        RELAY_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

fn accept_loop<D: PortDevice>(
    listener: &UnixListener,
    port: &Arc<dyn SyncPort>,
    shared: &Shared<D>,
    stats: &Arc<D::Stats>,
) -> io::Result<()> {
    let mut waiter = shared.stop.waiter(listener)?;
    let name = port.name().to_owned();
    while waiter.wait()? {
        let opts = shared
            .opts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let dev = D::connect(port, &opts, stats)?;
        let (daemon, vrings) = vring::collect(|| {
            VhostUserDaemon::new(
                thread_name(D::THREAD, &name),
                Arc::clone(&dev),
                dev.guest_memory(),
            )
        });
        let mut daemon = daemon.map_err(|e| io::Error::other(e.to_string()))?;
        let hook: Weak<dyn VringHook> = Arc::downgrade(&dev) as Weak<dyn VringHook>;
        for (i, v) in vrings.iter().enumerate() {
            v.set_hook(hook.clone(), i as u16);
        }
        dev.set_vrings(vrings);
        // Every frontend talks to the handler through the relay (see `relay`).
        let mut relay = None;
        let channel = BackendChannel::default();
        dev.set_backend_channel(channel.clone());
        let started = match listener.accept() {
            Ok((front, _)) => relayed(front, &name, channel).and_then(|(l, r)| {
                relay = Some(r);
                daemon
                    .start(&mut Listener::from(l))
                    .map_err(|e| io::Error::other(e.to_string()))
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            dev.shutdown();
            if let Some(r) = relay {
                r.stop();
            }
            if shared.stop.stopping() {
                return Ok(());
            }
            log::warn!("{name}: vhost-user accept failed: {e}");
            continue;
        }
        if let Some(h) = daemon.shutdown_handle() {
            dev.memory_watch().set_connection(h);
        }
        D::connections(stats).fetch_add(1, Ordering::Relaxed);
        log::info!("{name}: vhost-user frontend connected ({})", D::KIND);
        *shared.device.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&dev));
        let res = shared
            .stop
            .serve(daemon.shutdown_handle(), || daemon.wait());
        shared
            .device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = relay {
            r.stop();
        }
        dev.shutdown();
        dev.carry_over(&mut shared.opts.lock().unwrap_or_else(|e| e.into_inner()));
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

    #[test]
    fn default_macs_are_local_unicast_and_differ_by_port() {
        let a = default_mac("vale0:vm1");
        let b = default_mac("vale0:vm2");
        assert_eq!(a[0] & 3, 2, "locally administered, unicast");
        assert_ne!(a, b);
        assert_eq!(a, default_mac("vale0:vm1"));
    }
}
