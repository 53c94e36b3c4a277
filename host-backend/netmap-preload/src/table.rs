//! Which descriptors are netmap files, and their state.
//!
//! Every `close`, `ioctl`, `mmap` and `poll` of the application passes through the
//! interposer, the library's own included (attaching a port opens and closes sockets and
//! maps memfds): the question "is this a netmap file?" is one atomic load, and the state
//! lock is only taken for netmap files. Nothing done under the lock calls back into a netmap
//! file's path, so it never re-enters itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::nmfile::NmFile;

/// Descriptors at or above this cannot be netmap files (`open` refuses with `EMFILE`).
pub const MAX_FD: usize = 1 << 16;

static IS_NETMAP: [AtomicBool; MAX_FD] = [const { AtomicBool::new(false) }; MAX_FD];
/// Each descriptor's open file: descriptors made with `dup` share it, as the kernel's do, and
/// it is dropped with the last of them.
static FILES: Mutex<Option<HashMap<i32, Arc<Mutex<NmFile>>>>> = Mutex::new(None);

/// Whether `fd` is a netmap file (no lock).
#[inline]
pub fn is_netmap(fd: i32) -> bool {
    usize::try_from(fd)
        .ok()
        .and_then(|i| IS_NETMAP.get(i))
        .is_some_and(|b| b.load(Ordering::Acquire))
}

/// The netmap files, locked.
fn files() -> MutexGuard<'static, Option<HashMap<i32, Arc<Mutex<NmFile>>>>> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes `fd` a netmap file with a new open file; `false` if it is out of range.
pub fn insert(fd: i32) -> bool {
    insert_file(fd, Arc::new(Mutex::new(NmFile::default())))
}

/// Makes `new` a duplicate of netmap file `old` (`dup`, `F_DUPFD`): the same open file.
pub fn insert_dup(new: i32, old: i32) -> bool {
    let file = files().as_ref().and_then(|m| m.get(&old)).cloned();
    file.is_some_and(|f| insert_file(new, f))
}

fn insert_file(fd: i32, file: Arc<Mutex<NmFile>>) -> bool {
    let Some(flag) = usize::try_from(fd).ok().and_then(|i| IS_NETMAP.get(i)) else {
        return false;
    };
    files().get_or_insert_with(HashMap::new).insert(fd, file);
    flag.store(true, Ordering::Release);
    true
}

/// `fd` is a netmap file no more; its open file, to drop after the lock (dropping the last
/// reference closes the port's descriptors, whose `close` passes through the interposer).
pub fn remove(fd: i32) -> Option<Arc<Mutex<NmFile>>> {
    let flag = IS_NETMAP.get(usize::try_from(fd).ok()?)?;
    flag.store(false, Ordering::Release);
    files().as_mut()?.remove(&fd)
}

/// Runs `f` on netmap file `fd`'s open file, under its lock; `None` if it is not one.
pub fn with<T>(fd: i32, f: impl FnOnce(&mut NmFile) -> T) -> Option<T> {
    let file = files().as_ref()?.get(&fd).cloned()?;
    let mut g = file.lock().unwrap_or_else(|e| e.into_inner());
    Some(f(&mut g))
}

/// A netmap file in an application's epoll set: what it asked for, and the data it gets
/// back.
#[derive(Debug, Clone, Copy)]
pub struct EpollReg {
    /// The netmap file.
    pub fd: i32,
    /// `EPOLLIN`/`EPOLLOUT`... as registered.
    pub events: u32,
    /// The application's data.
    pub data: u64,
}

static IN_EPOLL: [AtomicBool; MAX_FD] = [const { AtomicBool::new(false) }; MAX_FD];
static EPOLLS: Mutex<Option<HashMap<i32, Vec<EpollReg>>>> = Mutex::new(None);

/// Whether epoll set `epfd` holds a netmap file (no lock).
#[inline]
pub fn epoll_has_netmap(epfd: i32) -> bool {
    usize::try_from(epfd)
        .ok()
        .and_then(|i| IN_EPOLL.get(i))
        .is_some_and(|b| b.load(Ordering::Acquire))
}

/// Records `epoll_ctl(epfd, op, reg.fd, ...)` for a netmap file.
pub fn epoll_ctl(epfd: i32, op: i32, reg: EpollReg) {
    let Some(flag) = usize::try_from(epfd).ok().and_then(|i| IN_EPOLL.get(i)) else {
        return;
    };
    let mut all = EPOLLS.lock().unwrap_or_else(|e| e.into_inner());
    let regs = all
        .get_or_insert_with(HashMap::new)
        .entry(epfd)
        .or_default();
    regs.retain(|r| r.fd != reg.fd);
    if op != libc::EPOLL_CTL_DEL {
        regs.push(reg);
    }
    flag.store(!regs.is_empty(), Ordering::Release);
}

/// The netmap files in epoll set `epfd`.
pub fn epoll_regs(epfd: i32) -> Vec<EpollReg> {
    let all = EPOLLS.lock().unwrap_or_else(|e| e.into_inner());
    all.as_ref()
        .and_then(|m| m.get(&epfd))
        .cloned()
        .unwrap_or_default()
}

/// Forgets descriptor `fd` in every epoll set (it was closed: the kernel drops it from them
/// too), and `fd` as an epoll set.
pub fn epoll_forget(fd: i32) {
    let mut all = EPOLLS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(m) = all.as_mut() else { return };
    m.remove(&fd);
    if let Some(f) = usize::try_from(fd).ok().and_then(|i| IN_EPOLL.get(i)) {
        f.store(false, Ordering::Release);
    }
    for (epfd, regs) in m.iter_mut() {
        regs.retain(|r| r.fd != fd);
        if regs.is_empty() {
            if let Some(f) = usize::try_from(*epfd).ok().and_then(|i| IN_EPOLL.get(i)) {
                f.store(false, Ordering::Release);
            }
        }
    }
}
