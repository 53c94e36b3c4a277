//! What serving a port on a vhost-user socket needs whatever the device: taking the socket
//! path (a live server or a file is not taken over, a stale socket of an earlier run is), a
//! serving thread that waits for the next frontend or a stop request, the connection being
//! served, and stopping all of it from another thread ([`crate::server`] serves every device
//! kind this way).

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
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

/// A served socket's directory entry, held by a descriptor of its directory: whatever
/// happens to the directory's path afterwards (renamed, swapped for a symlink), the entry is
/// checked and removed in the directory it was made in, and only if it is still the socket
/// this process bound.
#[derive(Debug)]
pub struct SocketFile {
    dir: OwnedFd,
    name: CString,
    /// Device and inode of the socket bound.
    id: (u64, u64),
}

impl SocketFile {
    /// `fstatat` of the entry, not following a symlink.
    fn stat(dir: &OwnedFd, name: &CStr) -> Option<libc::stat> {
        // SAFETY: a zeroed stat is valid for fstatat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, a NUL-terminated name, a stat we own.
        let r = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        (r == 0).then_some(st)
    }

    fn unlink(dir: &OwnedFd, name: &CStr) -> io::Result<()> {
        // SAFETY: unlinkat of a name in a directory we hold a descriptor of.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The entry's path through this process's descriptor of its directory (for `bind` and
    /// `connect`, which take paths).
    fn proc_path(dir: &OwnedFd, name: &CStr) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .join(std::ffi::OsStr::from_bytes(name.to_bytes()))
    }

    /// Removes the socket, if the entry is still the one bound.
    pub fn remove(&self) {
        if Self::stat(&self.dir, &self.name).is_some_and(|st| {
            st.st_mode & libc::S_IFMT == libc::S_IFSOCK && (st.st_dev, st.st_ino) == self.id
        }) {
            let _ = Self::unlink(&self.dir, &self.name);
        }
    }
}

/// Binds a listening socket at `socket` (with the permissions and group `access` gives). A
/// socket nobody listens on any more (a crashed earlier run) is replaced; a live one, or any
/// other file, is left alone. Everything after opening the directory happens relative to
/// its descriptor (see [`SocketFile`]).
pub fn claim(socket: &Path, access: Access) -> Result<(UnixListener, SocketFile), ClaimError> {
    let io_err = |source| ClaimError::Io {
        path: socket.to_owned(),
        source,
    };
    let parent = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = socket
        .file_name()
        .and_then(|n| CString::new(n.as_bytes()).ok())
        .ok_or_else(|| ClaimError::PathTaken(socket.to_owned()))?;
    let dir: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(parent)
        .map_err(io_err)?
        .into();
    let here = SocketFile::proc_path(&dir, &name);
    match SocketFile::stat(&dir, &name) {
        Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {
            if UnixStream::connect(&here).is_ok() {
                return Err(ClaimError::InUse(socket.to_owned()));
            }
            SocketFile::unlink(&dir, &name).map_err(io_err)?;
        }
        Some(_) => return Err(ClaimError::PathTaken(socket.to_owned())),
        None => {}
    }
    let listener = UnixListener::bind(&here).map_err(io_err)?;
    let st = SocketFile::stat(&dir, &name)
        .ok_or_else(|| io_err(io::Error::from(io::ErrorKind::NotFound)))?;
    let file = SocketFile {
        dir,
        name,
        id: (st.st_dev, st.st_ino),
    };
    // The group first: until the mode is set, the umask's bits keep others out.
    if let Some(gid) = access.group {
        // SAFETY: fchownat of our socket's entry, not following a symlink.
        let r = unsafe {
            libc::fchownat(
                file.dir.as_raw_fd(),
                file.name.as_ptr(),
                u32::MAX,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
    }
    if let Some(mode) = access.mode {
        // SAFETY: fchmodat of our socket's entry in the directory we hold (Linux has no
        // AT_SYMLINK_NOFOLLOW here; the entry was just bound and checked above).
        let r = unsafe {
            libc::fchmodat(
                file.dir.as_raw_fd(),
                file.name.as_ptr(),
                mode as libc::mode_t,
                0,
            )
        };
        if r != 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
    }
    Ok((listener, file))
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
