//! Memory another process can take away: surviving the SIGBUS.
//!
//! The daemon maps files that other processes hold too: a VM's guest RAM (QEMU's memfd or a
//! hugetlbfs file, from the vhost-user memory table) and its own regions (memfds it hands to
//! clients and to QEMU). A holder can make pages of such a file disappear under the daemon:
//! `ftruncate` on guest RAM that QEMU did not seal, or `fallocate(PUNCH_HOLE)` on a hugetlb
//! memfd followed by draining the huge page pool (seals cannot stop a punch on a file
//! others must map writable). The daemon's next access to such a page raises SIGBUS, and by
//! default SIGBUS kills the process: every VM and client with it.
//!
//! Each such mapping is [`watch`]ed: while the [`Watch`] lives, a SIGBUS at an address inside
//! it is survived. The handler maps private zeroed memory over the page that faulted (a whole
//! huge page on hugetlb mappings), so the access that faulted runs again and reads zeros;
//! nothing of the holder's file is reached any more through that page. It then wakes the
//! *fault reaper*, a thread that calls the watch's `on_fault` outside the signal context:
//! the owner ends what the mapping belonged to (a vhost-user connection, a port's clients)
//! and logs it. A SIGBUS anywhere else (a bug of the daemon's own) is passed to the handler
//! that was there before (Rust's, then the default): the process dies as it always did.
//!
//! The handler only loads atomics, calls `mmap` and `write` (both async-signal-safe system
//! calls) and restores `errno`. Watches live in a fixed table ([`MAX_WATCHES`] entries) the
//! handler scans without a lock; a watch leaves it only once no handler is running, so the
//! handler never maps over memory that is no longer the watched file's.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread;

/// Watches that can live at once, over the whole process.
pub const MAX_WATCHES: usize = 4096;

/// What a watch's owner is told: how many faults the handler took in it since the last call,
/// and the address of the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Faults since the last report.
    pub count: u64,
    /// Address of the last one.
    pub addr: usize,
}

type OnFault = Arc<dyn Fn(Fault) + Send + Sync>;

const FREE: u8 = 0;
const TAKEN: u8 = 1;
const LIVE: u8 = 2;

/// One watched range: written by [`watch`] and [`Watch::drop`] (under `OWNERS`), read by the
/// handler (lock-free: `state` is stored with Release after the range, and loaded with
/// Acquire before it).
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    page: AtomicUsize,
    /// Faults not reported yet (the handler adds, the reaper takes).
    pending: AtomicU64,
    /// Address of the last fault.
    addr: AtomicUsize,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            page: AtomicUsize::new(0),
            pending: AtomicU64::new(0),
            addr: AtomicUsize::new(0),
        }
    }
}

static SLOTS: [Slot; MAX_WATCHES] = [const { Slot::new() }; MAX_WATCHES];
/// Each slot's owner callback (`None` for free slots). The lock orders taking and freeing
/// slots against the reaper.
static OWNERS: Mutex<Vec<Option<OnFault>>> = Mutex::new(Vec::new());
/// Handlers running now: a slot is freed only when none is.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// Faults survived since the process started.
static FAULTS: AtomicU64 = AtomicU64::new(0);
/// The reaper's eventfd (-1 until it runs).
static REAPER: AtomicI32 = AtomicI32::new(-1);
/// The SIGBUS action before ours, restored for a fault outside every watch.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: Once = Once::new();
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// SIGBUS faults survived since the process started (a metric).
pub fn faults() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

/// While it lives, a SIGBUS inside its range is survived and reported to its owner. Dropping
/// it ends that, before the range may be unmapped.
#[derive(Debug)]
pub struct Watch {
    slot: usize,
}

/// Why a range cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The range is empty or not aligned to its page size.
    #[error("range {start:#x}+{len:#x} is not whole pages of {page} bytes")]
    Unaligned {
        /// Start address.
        start: usize,
        /// Length.
        len: usize,
        /// Page size.
        page: usize,
    },
    /// Every slot is taken.
    #[error("{MAX_WATCHES} mappings are watched already")]
    Full,
    /// The handler or the reaper could not be set up.
    #[error("cannot install the SIGBUS handler")]
    Install(#[source] io::Error),
}

/// Watches `[start, start + len)`, a shared mapping of a file others hold, made of pages of
/// `page` bytes (the file's: 2 MiB on hugetlbfs); `on_fault` runs on the reaper thread after
/// faults in it (it may run once more after the watch is dropped, and must not block long).
pub fn watch(
    start: usize,
    len: usize,
    page: usize,
    on_fault: impl Fn(Fault) + Send + Sync + 'static,
) -> Result<Watch, WatchError> {
    if len == 0
        || !page.is_power_of_two()
        || start % page != 0
        || len % page != 0
        || start.checked_add(len).is_none()
    {
        return Err(WatchError::Unaligned { start, len, page });
    }
    install()?;
    let mut owners = OWNERS.lock().unwrap_or_else(|e| e.into_inner());
    if owners.is_empty() {
        owners.resize_with(MAX_WATCHES, || None);
    }
    let slot = (0..MAX_WATCHES)
        .find(|&i| owners[i].is_none())
        .ok_or(WatchError::Full)?;
    let s = &SLOTS[slot];
    s.state.store(TAKEN, Ordering::Relaxed);
    s.start.store(start, Ordering::Relaxed);
    s.len.store(len, Ordering::Relaxed);
    s.page.store(page, Ordering::Relaxed);
    s.pending.store(0, Ordering::Relaxed);
    s.state.store(LIVE, Ordering::Release);
    owners[slot] = Some(Arc::new(on_fault));
    Ok(Watch { slot })
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut owners = OWNERS.lock().unwrap_or_else(|e| e.into_inner());
        let s = &SLOTS[self.slot];
        s.state.store(TAKEN, Ordering::SeqCst);
        // A handler that saw the slot live may still be mapping over the range: wait for it
        // (handlers are a few system calls long, and none waits for anything).
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        s.state.store(FREE, Ordering::Release);
        owners[self.slot] = None;
    }
}

/// Installs the handler and starts the reaper (one thread for the life of the process), once;
/// [`watch`] does it at the first watch. For code that counts its threads before it watches.
pub fn install() -> Result<(), WatchError> {
    INSTALL.call_once(|| {
        let r = start_reaper().and_then(|()| set_handler());
        let _ = INSTALLED.set(r.map_err(|e| e.raw_os_error().unwrap_or(libc::EINVAL)));
    });
    match INSTALLED.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(WatchError::Install(io::Error::from_raw_os_error(*e))),
        None => Err(WatchError::Install(io::Error::other("not installed"))),
    }
}

fn start_reaper() -> io::Result<()> {
    let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_CLOEXEC)?;
    REAPER.store(std::os::fd::AsRawFd::as_raw_fd(&evt), Ordering::Release);
    thread::Builder::new()
        .name("fault-reaper".into())
        .spawn(move || {
            // The eventfd is the daemon's own: nobody else holds it, a blocking read is safe.
            while evt.read().is_ok() {
                report();
            }
            log::error!("the SIGBUS fault reaper stopped");
        })?;
    Ok(())
}

/// Tells the owners of slots with pending faults.
fn report() {
    let calls: Vec<(OnFault, Fault)> = {
        let owners = OWNERS.lock().unwrap_or_else(|e| e.into_inner());
        SLOTS
            .iter()
            .zip(owners.iter())
            .filter_map(|(s, o)| {
                let count = s.pending.swap(0, Ordering::AcqRel);
                let addr = s.addr.load(Ordering::Relaxed);
                Some((Arc::clone(o.as_ref()?), Fault { count, addr })).filter(|_| count > 0)
            })
            .collect()
    };
    for (f, fault) in calls {
        f(fault);
    }
}

fn set_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid for sigaction to fill.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: only reads the current action into `old`.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Saved before ours is installed: the handler always has an action to fall back on.
    let _ = PREVIOUS.set(old);
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value to fill in.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_sigbus as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `act.sa_mask` is ours to initialise.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: installs a handler that only does async-signal-safe work (see `on_sigbus`);
    // `act` is valid for the call.
    if unsafe { libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The SIGBUS handler. Async-signal-safe: atomics, `mmap`, `write`, `sigaction`, `errno`.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; its address is valid on this thread.
    let errno = unsafe { *libc::__errno_location() };
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for SIGBUS,
    // si_addr is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    let handled = SLOTS.iter().any(|s| cover(s, addr));
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    if handled {
        FAULTS.fetch_add(1, Ordering::Relaxed);
        let one = 1u64.to_ne_bytes();
        let fd = REAPER.load(Ordering::Acquire);
        // SAFETY: write(2) of 8 bytes we own to the reaper's eventfd; a failure only delays
        // the report to the next fault.
        unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
    } else if let Some(old) = PREVIOUS.get() {
        // Not ours: the fault happens again on return, under the previous action.
        // SAFETY: restores the action that was installed before ours, saved by sigaction.
        unsafe { libc::sigaction(libc::SIGBUS, old, std::ptr::null_mut()) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// If `addr` lies in slot `s`'s live range, replaces the page there by private zeroed memory;
/// whether it did.
fn cover(s: &Slot, addr: usize) -> bool {
    if s.state.load(Ordering::Acquire) != LIVE {
        return false;
    }
    let (start, len, page) = (
        s.start.load(Ordering::Relaxed),
        s.len.load(Ordering::Relaxed),
        s.page.load(Ordering::Relaxed),
    );
    if addr < start || addr - start >= len {
        return false;
    }
    let at = start + ((addr - start) & !(page - 1));
    // SAFETY: `[at, at + page)` is a whole page of a watched mapping, which the watch's owner
    // keeps mapped while the slot is live (a `Watch` is dropped before its range is unmapped,
    // and its drop waits for running handlers). Whatever was there is a page of a file that
    // someone else took away; private anonymous memory in its place reads as zeros and keeps
    // the mapping's protection.
    let r = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return false;
    }
    s.addr.store(addr, Ordering::Relaxed);
    s.pending.fetch_add(1, Ordering::Release);
    true
}

/// The page size of the file `fd` is mapped with: the huge page size on hugetlbfs, the base
/// page size otherwise.
pub fn file_page_size(fd: &impl std::os::fd::AsRawFd) -> io::Result<usize> {
    const HUGETLBFS_MAGIC: libc::c_long = 0x9584_58f6;
    // SAFETY: a zeroed statfs is valid for fstatfs to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes into `st`, which we own.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.f_type as libc::c_long == HUGETLBFS_MAGIC {
        Ok(st.f_bsize as usize)
    } else {
        Ok(crate::sys::PAGE_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{GuardedMapping, PAGE_SIZE};
    use std::fs::File;
    use std::os::fd::FromRawFd;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A memfd anyone may shrink (no seals), of `pages` pages.
    fn unsealed(pages: usize) -> File {
        // SAFETY: a valid name and no flags; the new descriptor is owned by the File.
        let f = unsafe { File::from_raw_fd(libc::memfd_create(c"f".as_ptr(), 0)) };
        f.set_len((pages * PAGE_SIZE) as u64).unwrap();
        f
    }

    #[test]
    fn a_truncated_watched_mapping_reads_zeros_and_its_owner_is_told() {
        let f = unsealed(4);
        let m = GuardedMapping::new(&f, 4 * PAGE_SIZE).unwrap();
        let base = m.base();
        // SAFETY: inside the mapping, while the file is whole.
        unsafe { base.add(3 * PAGE_SIZE).write_volatile(7) };
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let w = watch(base as usize, 4 * PAGE_SIZE, PAGE_SIZE, move |f| {
            let _ = tx.lock().unwrap().send(f);
        })
        .unwrap();
        let before = faults();
        f.set_len(PAGE_SIZE as u64).unwrap();
        // SAFETY: inside the mapping; the page is gone from the file, which is the point.
        let v = unsafe { base.add(3 * PAGE_SIZE + 5).read_volatile() };
        assert_eq!(v, 0);
        // SAFETY: the page the handler put in place is writable and private.
        unsafe { base.add(3 * PAGE_SIZE).write_volatile(9) };
        // SAFETY: as above (another lost page).
        let v = unsafe { base.add(2 * PAGE_SIZE).read_volatile() };
        assert_eq!(v, 0);
        let mut seen = 0;
        while seen < 2 {
            let r = rx.recv_timeout(Duration::from_secs(5)).expect("reported");
            seen += r.count;
            assert!(r.addr >= base as usize + 2 * PAGE_SIZE);
        }
        assert!(faults() >= before + 2);
        // The first page is still the file's.
        // SAFETY: inside the mapping and the file.
        unsafe { base.write_volatile(3) };
        drop(w);
        drop(m);
    }

    #[test]
    fn ranges_must_be_whole_pages() {
        assert!(matches!(
            watch(4096, 100, 4096, |_| {}),
            Err(WatchError::Unaligned { .. })
        ));
        assert!(matches!(
            watch(4096, 2 << 20, 2 << 20, |_| {}),
            Err(WatchError::Unaligned { .. })
        ));
        assert!(matches!(
            watch(0, 4096, 3000, |_| {}),
            Err(WatchError::Unaligned { .. })
        ));
    }

    #[test]
    fn a_sigbus_outside_every_watch_still_kills_the_process() {
        let f = unsealed(2);
        let m = GuardedMapping::new(&f, 2 * PAGE_SIZE).unwrap();
        // Something else is watched, so the handler is installed.
        let other = GuardedMapping::new(&unsealed(1), PAGE_SIZE).unwrap();
        let _w = watch(other.base() as usize, PAGE_SIZE, PAGE_SIZE, |_| {}).unwrap();
        f.set_len(0).unwrap();
        // SAFETY: fork; the child only touches the lost page (its death is the test) and
        // calls _exit, both fine after fork in a threaded process.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                m.base().add(PAGE_SIZE).read_volatile();
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
            "child status {status:#x}"
        );
    }

    #[test]
    fn the_page_size_of_a_memfd_is_the_base_page() {
        assert_eq!(file_page_size(&unsealed(1)).unwrap(), PAGE_SIZE);
    }
}
