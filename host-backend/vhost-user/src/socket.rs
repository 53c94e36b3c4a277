//! What serving a port on a vhost-user socket needs whatever the device: taking the socket
//! path (a live server or a file is not taken over, a stale socket of an earlier run is), a
//! serving thread that waits for the next frontend or a stop request, the connection being
//! served, and stopping all of it from another thread ([`crate::server`] serves every device
//! kind this way).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use vhost::vhost_user::Error as VhostUserError;
use vhost_user_backend::{Error as DaemonError, ShutdownHandle};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// A thread name: `prefix-port`, cut to Linux's 15 bytes.
pub fn thread_name(prefix: &str, port: &str) -> String {
    format!("{prefix}-{port}").chars().take(15).collect()
}

/// Why a socket path cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The path is taken by something that is not a socket.
    #[error("{0} exists and is not a socket")]
    PathTaken(PathBuf),
    /// Another server listens on the path.
    #[error("{0} is served already")]
    InUse(PathBuf),
    /// Creating the socket failed.
    #[error("cannot serve on {path}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Who may connect to a served socket: its permission bits and group (e.g. 0o660 and a group
/// QEMU runs in); `None` keeps what the umask and the process's group give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Access {
    /// Permission bits.
    pub mode: Option<u32>,
    /// Owning group (a gid).
    pub group: Option<u32>,
}

/// Binds a listening socket at `socket` (with the permissions and group `access` gives). A
/// socket nobody listens on any more (a crashed earlier run) is replaced; a live one, or any
/// other file, is left alone.
pub fn claim(socket: &Path, access: Access) -> Result<UnixListener, ClaimError> {
    let io_err = |source| ClaimError::Io {
        path: socket.to_owned(),
        source,
    };
    match fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(socket).is_ok() {
                return Err(ClaimError::InUse(socket.to_owned()));
            }
            fs::remove_file(socket).map_err(io_err)?;
        }
        Ok(_) => return Err(ClaimError::PathTaken(socket.to_owned())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(socket).map_err(io_err)?;
    // The group first: until the mode is set, the umask's bits keep others out.
    if let Some(gid) = access.group {
        std::os::unix::fs::lchown(socket, None, Some(gid)).map_err(io_err)?;
    }
    if let Some(mode) = access.mode {
        fs::set_permissions(socket, fs::Permissions::from_mode(mode)).map_err(io_err)?;
    }
    Ok(listener)
}

/// What a serving thread shares with the handle that stops it.
pub struct Stop {
    stopping: AtomicBool,
    evt: EventFd,
    conn: Mutex<Option<ShutdownHandle>>,
}

impl Stop {
    /// Not stopping, no connection.
    pub fn new() -> io::Result<Self> {
        Ok(Stop {
            stopping: AtomicBool::new(false),
            evt: EventFd::new(EFD_NONBLOCK)?,
            conn: Mutex::new(None),
        })
    }

    /// A stop was requested.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Waits, on the serving thread, until a frontend connects to `listener` or a stop is
    /// requested: [`Waiter::wait`] returns `false` for the stop.
    pub fn waiter<'a>(&'a self, listener: &UnixListener) -> io::Result<Waiter<'a>> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            self.evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 1),
        )?;
        Ok(Waiter { stop: self, epoll })
    }

    /// Serves an accepted connection until it ends: `handle` is its daemon's shutdown handle
    /// (a stop meanwhile ends the connection through it), `wait` its daemon's `wait`.
    pub fn serve(
        &self,
        handle: Option<ShutdownHandle>,
        wait: impl FnOnce() -> Result<(), DaemonError>,
    ) -> Result<(), DaemonError> {
        {
            let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            *conn = handle;
            if self.stopping() {
                if let Some(h) = &*conn {
                    h.shutdown();
                }
            }
        }
        let res = wait();
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        res
    }

    /// Requests the stop (from any thread): wakes the waiter, wakes an `accept()` blocked on
    /// `listener` (Linux returns EINVAL to it), ends the connection being served. The caller
    /// then joins the serving thread.
    pub fn request(&self, listener: &UnixListener) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.evt.write(1);
        ptnet_datapath::sys::shutdown(listener);
        if let Some(h) = &*self.conn.lock().unwrap_or_else(|e| e.into_inner()) {
            h.shutdown();
        }
    }
}

/// See [`Stop::waiter`].
pub struct Waiter<'a> {
    stop: &'a Stop,
    epoll: Epoll,
}

impl Waiter<'_> {
    /// `true`: a frontend is waiting to be accepted; `false`: stop.
    pub fn wait(&mut self) -> io::Result<bool> {
        let mut events = [EpollEvent::default(); 2];
        loop {
            match self.epoll.wait(-1, &mut events) {
                Ok(_) => return Ok(!self.stop.stopping()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a connection that ended with `e` ended the ordinary way: the frontend closed it.
pub fn ended_normally(e: &DaemonError) -> bool {
    matches!(
        e,
        DaemonError::HandleRequest(VhostUserError::Disconnected | VhostUserError::PartialMessage)
    )
}
