//! Eventfds a peer also holds: a host client's kicks and interrupts, QEMU's kick and call
//! eventfds. None of them can stop a daemon thread.
//!
//! An eventfd's `O_NONBLOCK` flag belongs to the open file, and the peer holds the same open
//! file: it can clear the flag, and then a read of an empty counter, or a write to a counter
//! at its maximum (2^64 − 2, which the peer can write itself), waits until the peer does
//! something. The thread that waits may be a VALE sender raising a receiver's interrupt with
//! the switch's port list locked, and every attach, detach and sender would queue behind it.
//! So the daemon touches such a descriptor only here:
//!
//! * [`drain`] reads a kick with `preadv2(RWF_NOWAIT)`, which never waits whatever the file's
//!   flags say (Linux 5.12 and later; on older kernels the read runs under the watchdog below);
//! * [`PeerEventFd::signal`] writes an interrupt. Eventfds have no per-call non-blocking write,
//!   so the write runs under a watchdog: a thread that wakes every [`TICK`] and sends
//!   [`interrupt_signal`] to any thread it finds inside the same guarded call twice running.
//!   The interrupted write fails with `EINTR`, and the eventfd is then *stuck*: never written
//!   again. A peer that blocks its own counter loses its own notifications; the daemon loses
//!   at most two ticks on one of its threads, once.
//!
//! The watchdog costs the fast path two uncontended atomic increments around the system call
//! it guards, and the process one wake-up per tick.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::sys;

/// How often the watchdog looks for threads stuck in a guarded call: a stuck call lasts at
/// most two ticks.
pub const TICK: Duration = Duration::from_millis(20);

/// The signal the watchdog interrupts a stuck call with (`SIGRTMIN + 1`; its handler does
/// nothing, and it is installed without `SA_RESTART`, so the call returns `EINTR`).
pub fn interrupt_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

/// A thread's presence in the watchdog's list.
#[derive(Debug)]
struct Slot {
    tid: libc::pid_t,
    /// Guarded calls entered plus left: odd while inside one.
    calls: AtomicU64,
    /// `calls` as the watchdog saw it at its last tick.
    seen: AtomicU64,
}

/// Every thread that has made a guarded call and not exited.
static SLOTS: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());
static WATCHDOG: Once = Once::new();
/// Calls the watchdog interrupted, process-wide.
static INTERRUPTED: AtomicU64 = AtomicU64::new(0);

/// The calling thread's slot; leaving the list when the thread exits (before its id can be
/// reused) is what makes signalling a listed thread safe.
struct Registered(Arc<Slot>);

impl Registered {
    fn new() -> Self {
        start_watchdog();
        let slot = Arc::new(Slot {
            tid: sys::thread_id(),
            calls: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        });
        SLOTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&slot));
        Registered(slot)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        SLOTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

thread_local! {
    static SLOT: Registered = Registered::new();
}

extern "C" fn on_interrupt(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing: being delivered is the point (the interrupted call returns EINTR).
}

fn start_watchdog() {
    WATCHDOG.call_once(|| {
        if let Err(e) =
            vmm_sys_util::signal::register_signal_handler(interrupt_signal(), on_interrupt)
        {
            log::error!("cannot install the stuck-descriptor signal handler: {e}");
            return;
        }
        let spawned = thread::Builder::new().name("fd-watchdog".into()).spawn(|| {
            loop {
                thread::sleep(TICK);
                tick();
            }
        });
        if let Err(e) = spawned {
            log::error!("cannot start the stuck-descriptor watchdog: {e}");
        }
    });
}

/// One look at every listed thread: one still inside the call it was in at the last tick is
/// signalled (again, if a signal that arrived just before its system call was lost).
fn tick() {
    let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    for s in slots.iter() {
        let now = s.calls.load(Ordering::SeqCst);
        let before = s.seen.swap(now, Ordering::Relaxed);
        if now % 2 == 1 && now == before {
            // The thread is listed, so it has not exited (it leaves the list first, under
            // the lock held here): the id is still its own.
            // Counted before the signal goes: the interrupted thread may run (and read the
            // count) before this one is scheduled again.
            INTERRUPTED.fetch_add(1, Ordering::SeqCst);
            if sys::signal_thread(s.tid, interrupt_signal()).is_err() {
                INTERRUPTED.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Runs `f` (one system call on a peer's descriptor) where the watchdog can interrupt it.
fn guarded<T>(f: impl FnOnce() -> T) -> T {
    let slot = SLOT.try_with(|r| Arc::clone(&r.0)).ok();
    if let Some(s) = &slot {
        s.calls.fetch_add(1, Ordering::SeqCst);
    }
    let out = f();
    if let Some(s) = &slot {
        s.calls.fetch_add(1, Ordering::SeqCst);
    }
    out
}

/// Calls the watchdog has interrupted in this process.
pub fn interrupted_calls() -> u64 {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Empties a kick eventfd a peer holds, without waiting: whether it had been kicked.
pub fn drain(fd: &impl AsRawFd) -> bool {
    match sys::eventfd_read_nowait(fd) {
        Ok(v) => v.is_some(),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            // A kernel without RWF_NOWAIT on eventfds: an ordinary read, which only waits if
            // the peer cleared O_NONBLOCK, and then no longer than the watchdog allows.
            guarded(|| sys::eventfd_read(fd)).is_ok()
        }
        Err(_) => false,
    }
}

/// An eventfd the daemon signals and a peer reads (a host client's interrupt, QEMU's call
/// eventfd). Signalling never waits longer than the watchdog allows, and after a peer has
/// made it wait once, never again: the eventfd is stuck and signals are dropped.
#[derive(Debug)]
pub struct PeerEventFd {
    fd: EventFd,
    stuck: AtomicBool,
}

impl PeerEventFd {
    /// Wraps an eventfd that is, or will be, shared with a peer.
    pub fn new(fd: EventFd) -> Self {
        PeerEventFd {
            fd,
            stuck: AtomicBool::new(false),
        }
    }

    /// The eventfd (to duplicate it for the peer, or to watch it in tests).
    pub fn eventfd(&self) -> &EventFd {
        &self.fd
    }

    /// Whether a peer made a signal wait and lost its notifications for good.
    pub fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }

    /// Adds one to the counter. A full counter (`EAGAIN`) already means "pending": nothing
    /// is lost.
    #[inline]
    pub fn signal(&self) {
        if self.stuck.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = guarded(|| sys::eventfd_write(&self.fd, 1)) {
            if e.kind() == io::ErrorKind::Interrupted && !self.stuck.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "an interrupt eventfd (fd {}) blocked its writer: its peer cleared O_NONBLOCK and filled the counter; it gets no more interrupts",
                    self.fd.as_raw_fd()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    /// What a hostile peer does to the copy it holds: clear O_NONBLOCK on the shared open
    /// file.
    fn make_blocking(e: &EventFd) {
        let fd = e.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on a descriptor this test owns.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            assert!(libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) == 0);
        }
    }

    #[test]
    fn a_full_counter_on_a_blocking_file_costs_one_bounded_wait_then_nothing() {
        let peer = PeerEventFd::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let theirs = peer.eventfd().try_clone().unwrap();
        make_blocking(&theirs);
        theirs.write(u64::MAX - 1).unwrap();
        let t = Instant::now();
        peer.signal();
        // Two ticks when the watchdog runs on time; generous here, where other tests (or
        // other work on the machine) compete for the CPUs: the point is "not forever".
        let first = t.elapsed();
        assert!(
            first < Duration::from_secs(5),
            "the first signal waited {first:?}"
        );
        assert!(peer.is_stuck());
        let t = Instant::now();
        for _ in 0..1000 {
            peer.signal();
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(interrupted_calls() >= 1);
        assert_eq!(theirs.read().unwrap(), u64::MAX - 1);
    }

    #[test]
    fn an_honest_peer_gets_every_signal() {
        let peer = PeerEventFd::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let theirs = peer.eventfd().try_clone().unwrap();
        for _ in 0..3 {
            peer.signal();
        }
        assert_eq!(theirs.read().unwrap(), 3);
        assert!(!peer.is_stuck());
    }

    #[test]
    fn draining_an_empty_kick_never_waits_even_on_a_blocking_file() {
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        make_blocking(&kick);
        let t = Instant::now();
        assert!(!drain(&kick));
        assert!(t.elapsed() < Duration::from_secs(1));
        kick.write(2).unwrap();
        assert!(drain(&kick));
        assert!(!drain(&kick));
    }
}
