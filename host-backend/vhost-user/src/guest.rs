//! The few unsafe operations of the backend, each behind a checked wrapper: a CSB in guest
//! memory (reached through the vhost-user memory table), and the eventfds a frontend hands us.
//!
//! Guest memory and frontend descriptors are hostile input. Every address is checked against
//! the memory table before a pointer is made, and every descriptor is checked to be an eventfd
//! and made non-blocking before the datapath reads or writes it (a blocking or foreign
//! descriptor could stall a VALE sender's sync loop, which raises the receiver's interrupts).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ptnet_datapath::csb::CsbRef;
use ptnet_datapath::fault;
use ptnet_spec::csb::{CSB_ENTRY_SIZE, CsbAtok, CsbKtoa};
use vhost_user_backend::ShutdownHandle;
use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
};
use vmm_sys_util::eventfd::EventFd;

/// The guest memory handle every part of the backend shares (no dirty bitmap: ptnet devices
/// cannot migrate).
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Why a CSB cannot be placed where the driver said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsbError {
    /// The two arrays overlap.
    #[error(
        "the atok array at {atok:#x} and the ktoa array at {ktoa:#x} overlap ({len} bytes each)"
    )]
    Overlap {
        /// atok address.
        atok: u64,
        /// ktoa address.
        ktoa: u64,
        /// Bytes of each array.
        len: u64,
    },
    /// An array is not entirely inside one guest memory region.
    #[error("CSB array at {gpa:#x} ({len} bytes) is not inside one guest RAM region")]
    OutsideRam {
        /// Its guest-physical address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// An array lies in the port's own shared memory region (mapped into the guest as BAR
    /// memory, and therefore also in the memory table): the CSB must be guest RAM.
    #[error("CSB array at {gpa:#x} lies in the port's shared memory region, not in guest RAM")]
    InPortRegion {
        /// Its guest-physical address.
        gpa: u64,
    },
}

/// Keeps the guest memory mapping behind a CSB alive, whatever memory table the frontend sends
/// next (the regions are reference counted; an old mapping stays valid until the last user
/// drops it).
struct GuestBacking(Arc<GuestMemoryMmap<()>>);

impl fmt::Debug for GuestBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestBacking({} regions)", self.0.num_regions())
    }
}

/// Identity of a file: device and inode.
pub type FileId = (u64, u64);

/// The identity of `file`.
pub fn file_id(file: &File) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Host address of `[gpa, gpa + len)` if it lies entirely in one region, and that region's
/// backing file identity (if any).
fn host_range(
    mem: &GuestMemoryMmap<()>,
    gpa: u64,
    len: u64,
) -> Option<(NonNull<u8>, Option<FileId>)> {
    let (region, raddr) = mem.to_region_addr(GuestAddress(gpa))?;
    let end = raddr.0.checked_add(len)?;
    if end > region.len() {
        return None;
    }
    let host = region.get_host_address(raddr).ok()?;
    let id = region.file_offset().and_then(|fo| file_id(fo.file()).ok());
    Some((NonNull::new(host)?, id))
}

/// Places a CSB of `n` entries per array at the guest-physical addresses the driver wrote.
///
/// The caller has checked the addresses with `PtnetConfig::validate_csb` (non-zero, 64-byte
/// aligned, not wrapping). This checks that the arrays do not overlap, that each lies inside
/// one guest RAM region, and that neither lies in a region backed by `port_region` (the port's
/// memfd, which the frontend adds to the memory table once it maps it into the guest).
pub fn guest_csb(
    mem: &GuestMem,
    atok: u64,
    ktoa: u64,
    n: u32,
    port_region: Option<FileId>,
) -> Result<CsbRef, CsbError> {
    let len = u64::from(n) * u64::from(CSB_ENTRY_SIZE);
    if atok < ktoa.saturating_add(len) && ktoa < atok.saturating_add(len) {
        return Err(CsbError::Overlap { atok, ktoa, len });
    }
    let snapshot = mem.memory().into_inner();
    let mut ptrs = [NonNull::dangling(); 2];
    for (p, gpa) in ptrs.iter_mut().zip([atok, ktoa]) {
        let (host, id) =
            host_range(&snapshot, gpa, len).ok_or(CsbError::OutsideRam { gpa, len })?;
        if id.is_some() && id == port_region {
            return Err(CsbError::InPortRegion { gpa });
        }
        if host.as_ptr() as usize % CSB_ENTRY_SIZE as usize != 0 {
            // Guest RAM regions are page aligned on the host, so this follows from the
            // 64-byte aligned guest address; checked anyway, as from_raw requires it.
            return Err(CsbError::OutsideRam { gpa, len });
        }
        *p = host;
    }
    // SAFETY: both arrays were checked to lie entirely inside one mapped, read-write guest RAM
    // region each (the vhost-user memory table maps regions PROT_READ | PROT_WRITE, and
    // `MemWatch::accept` refused regions past the end of their file, and watches them for pages
    // taken away later), and to be
    // 64-byte aligned on the host. The mapping is kept alive by `GuestBacking`, which holds the
    // memory snapshot the pointers were taken from. The guest may write the memory at any time;
    // CsbRef only accesses it through the entries' atomics.
    Ok(unsafe {
        CsbRef::from_raw(
            ptrs[0].cast::<CsbAtok>(),
            ptrs[1].cast::<CsbKtoa>(),
            n,
            Arc::new(GuestBacking(snapshot)),
        )
    })
}

/// Why a guest memory table is refused.
#[derive(Debug, thiserror::Error)]
pub enum MemTableError {
    /// The connection has had [`MAX_WATCHED_RANGES`] distinct ranges already.
    #[error("more than {MAX_WATCHED_RANGES} guest memory ranges in one connection")]
    TooManyRanges,
    /// A region cannot be watched for pages taken away.
    #[error("guest memory region at {gpa:#x} cannot be watched")]
    Unwatched {
        /// Guest-physical address of the region.
        gpa: u64,
        /// Why.
        #[source]
        source: Option<fault::WatchError>,
    },
    /// A region maps past the end of its file: touching that memory would raise SIGBUS in
    /// the daemon.
    #[error(
        "guest memory region at {gpa:#x} maps {len} bytes at offset {offset} of a file of \
         {file_len} bytes"
    )]
    PastEof {
        /// Guest-physical address of the region.
        gpa: u64,
        /// Its length.
        len: u64,
        /// Its offset in the file.
        offset: u64,
        /// The file's length.
        file_len: u64,
    },
}

/// Most distinct guest memory ranges one connection may have watched in its life (QEMU
/// offers up to 509 memory slots, and sends the whole table again on every change).
pub const MAX_WATCHED_RANGES: usize = 1024;

/// One connection's guest memory, watched for pages its frontend takes away.
///
/// A frontend (or anything holding the memory's file) can truncate guest RAM that is not
/// sealed against shrinking (QEMU's `memory-backend-memfd` seals by default,
/// `memory-backend-file` cannot), or punch holes in hugetlb RAM the pool cannot refill; the
/// daemon's next access there would die of SIGBUS. Every range of every memory table the
/// connection sends is [watched](ptnet_datapath::fault): such an access reads zeros instead,
/// and the connection is ended (its device stops, the port is reclaimed for the next
/// frontend). The daemon and the other ports go on.
#[derive(Clone)]
pub struct MemWatch(Arc<WatchInner>);

struct WatchInner {
    name: String,
    ranges: Mutex<Vec<((usize, usize), fault::Watch)>>,
    conn: Mutex<Option<ShutdownHandle>>,
    faults: AtomicU64,
}

impl fmt::Debug for MemWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemWatch")
            .field("name", &self.0.name)
            .field("faults", &self.faults())
            .finish()
    }
}

impl MemWatch {
    /// Nothing watched yet; `name` is the port's, for the logs.
    pub fn new(name: &str) -> Self {
        MemWatch(Arc::new(WatchInner {
            name: name.to_owned(),
            ranges: Mutex::new(Vec::new()),
            conn: Mutex::new(None),
            faults: AtomicU64::new(0),
        }))
    }

    /// Takes a memory table the frontend sent: watches every region (first, so that a file
    /// cut short from now on is survived), then checks that each lies inside its file as it
    /// is now (the mapping succeeds either way; an access past the end of the file would
    /// fault at once). Returns the number of regions whose file is not sealed against
    /// shrinking. An error ends the connection before its device uses the table.
    pub fn accept(&self, mem: &GuestMemoryMmap<()>) -> Result<usize, MemTableError> {
        let mut unsealed = 0;
        for r in mem.iter() {
            let Some(fo) = r.file_offset() else { continue };
            self.watch(r, fo.file())?;
            let file_len = fo.file().metadata().map(|m| m.len()).unwrap_or(0);
            let (offset, len) = (fo.start(), r.len());
            if offset.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(MemTableError::PastEof {
                    gpa: r.start_addr().0,
                    len,
                    offset,
                    file_len,
                });
            }
            // SAFETY: F_GET_SEALS only reads the seals of an open descriptor (EINVAL on files
            // that cannot be sealed).
            let seals = unsafe { libc::fcntl(fo.file().as_raw_fd(), libc::F_GET_SEALS) };
            if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
                unsealed += 1;
            }
        }
        Ok(unsealed)
    }

    fn watch(&self, r: &GuestRegionMmap<()>, file: &File) -> Result<(), MemTableError> {
        let gpa = r.start_addr().0;
        let start =
            r.get_host_address(MemoryRegionAddress(0))
                .map_err(|_| MemTableError::Unwatched { gpa, source: None })? as usize;
        let len = r.len() as usize;
        let mut ranges = self.0.ranges.lock().unwrap_or_else(|e| e.into_inner());
        if ranges.iter().any(|(k, _)| *k == (start, len)) {
            return Ok(());
        }
        if ranges.len() >= MAX_WATCHED_RANGES {
            return Err(MemTableError::TooManyRanges);
        }
        let page = fault::file_page_size(file).map_err(|e| MemTableError::Unwatched {
            gpa,
            source: Some(fault::WatchError::Install(e)),
        })?;
        let me = Arc::downgrade(&self.0);
        let w = fault::watch(start, len, page, move |f| {
            if let Some(me) = me.upgrade() {
                me.fault(f);
            }
        })
        .map_err(|e| MemTableError::Unwatched {
            gpa,
            source: Some(e),
        })?;
        ranges.push(((start, len), w));
        Ok(())
    }

    /// The connection a fault ends (set once the connection is served).
    pub fn set_connection(&self, h: ShutdownHandle) {
        let faulted = self.faults() > 0;
        if faulted {
            h.shutdown();
        }
        *self.0.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
    }

    /// SIGBUS faults survived in this connection's guest memory.
    pub fn faults(&self) -> u64 {
        self.0.faults.load(Ordering::Relaxed)
    }
}

impl WatchInner {
    fn fault(&self, f: fault::Fault) {
        self.faults.fetch_add(f.count, Ordering::Relaxed);
        log::error!(
            "{}: guest memory was taken away under the daemon ({} fault(s), the last at host \
             address {:#x}: the frontend truncated its memory file or punched a hole in it); \
             the connection is ended and the port reclaimed",
            self.name,
            f.count,
            f.addr
        );
        if let Some(h) = &*self.conn.lock().unwrap_or_else(|e| e.into_inner()) {
            h.shutdown();
        }
    }
}

/// Whether `fd` is an eventfd (the frontend can send any kind of descriptor).
pub fn is_eventfd(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]")
}

/// Makes `fd` non-blocking. (The flag belongs to the open file, which the frontend shares:
/// QEMU creates its ioeventfds and irqfds non-blocking already.)
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only read and change the status flags of an open descriptor;
    // an invalid one fails with EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Accepts a descriptor from the frontend as a kick or call eventfd: it must be an eventfd,
/// and is made non-blocking.
pub fn checked_eventfd(file: File) -> io::Result<File> {
    if !is_eventfd(file.as_raw_fd()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an eventfd",
        ));
    }
    set_nonblocking(file.as_raw_fd())?;
    Ok(file)
}

/// A duplicate of the eventfd `fd` (checked by [`checked_eventfd`] when it arrived), for the
/// sync loop.
pub fn dup_eventfd(fd: &impl AsRawFd) -> io::Result<EventFd> {
    if !is_eventfd(fd.as_raw_fd()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an eventfd",
        ));
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1) that only we own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor for an eventfd (checked above); EventFd takes sole
    // ownership of it.
    Ok(unsafe { EventFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> GuestMem {
        GuestMemoryAtomic::new(
            GuestMemoryMmap::from_ranges(&[
                (GuestAddress(0x1_0000), 0x1_0000),
                (GuestAddress(0x4_0000), 0x1000),
            ])
            .unwrap(),
        )
    }

    #[test]
    fn a_csb_inside_ram_is_usable_and_reaches_guest_memory() {
        let m = mem();
        let csb = guest_csb(&m, 0x1_0000, 0x1_1000, 4, None).unwrap();
        csb.ktoa(3).unwrap().kern_write(5, 9);
        let g = m.memory();
        let hwtail: u32 =
            vm_memory::Bytes::read_obj(&*g, GuestAddress(0x1_1000 + 3 * 64 + 4)).unwrap();
        assert_eq!(hwtail, 9);
    }

    #[test]
    fn csb_arrays_outside_ram_or_across_regions_or_overlapping_are_refused() {
        let m = mem();
        assert!(matches!(
            guest_csb(&m, 0x9_0000, 0x1_1000, 1, None),
            Err(CsbError::OutsideRam { gpa: 0x9_0000, .. })
        ));
        // Ends past the end of the first region (the gap follows).
        assert!(matches!(
            guest_csb(&m, 0x1_0000, 0x1_ffc0, 2, None),
            Err(CsbError::OutsideRam { .. })
        ));
        // The second region is exactly one page: 64 entries fit, 65 do not.
        assert!(guest_csb(&m, 0x1_0000, 0x4_0000, 64, None).is_ok());
        assert!(guest_csb(&m, 0x1_0000, 0x4_0000, 65, None).is_err());
        assert!(matches!(
            guest_csb(&m, 0x1_0000, 0x1_0040, 2, None),
            Err(CsbError::Overlap { .. })
        ));
        assert!(matches!(
            guest_csb(&m, u64::MAX - 63, 0x1_0000, 1, None),
            Err(CsbError::OutsideRam { .. })
        ));
    }

    #[test]
    fn a_memory_region_past_the_end_of_its_file_is_refused() {
        use vm_memory::FileOffset;
        use vm_memory::mmap::{GuestRegionMmap, MmapRegion};
        let region = |file: &File, offset: u64, len: usize, gpa: u64| {
            let m = MmapRegion::<()>::from_file(
                FileOffset::new(file.try_clone().unwrap(), offset),
                len,
            )
            .unwrap();
            GuestRegionMmap::new(m, GuestAddress(gpa)).unwrap()
        };
        // SAFETY: a new memfd that the File owns.
        let file = unsafe { File::from_raw_fd(libc::memfd_create(c"t".as_ptr(), 0)) };
        file.set_len(0x4000).unwrap();
        let ok = GuestMemoryMmap::from_regions(vec![region(&file, 0x1000, 0x3000, 0)]).unwrap();
        let w = MemWatch::new("t");
        assert!(
            matches!(w.accept(&ok), Ok(1)),
            "inside the file, but not sealed"
        );
        let bad = GuestMemoryMmap::from_regions(vec![region(&file, 0x1000, 0x4000, 0)]).unwrap();
        assert!(matches!(
            w.accept(&bad),
            Err(MemTableError::PastEof {
                file_len: 0x4000,
                ..
            })
        ));
        // SAFETY: a valid NUL-terminated name; a new descriptor (checked by from_raw_fd's use).
        let sealed = unsafe { libc::memfd_create(c"s".as_ptr(), libc::MFD_ALLOW_SEALING) };
        // SAFETY: a new descriptor that the File owns.
        let sealed = unsafe { File::from_raw_fd(sealed) };
        sealed.set_len(0x1000).unwrap();
        // SAFETY: F_ADD_SEALS only changes the seals of our own memfd.
        let r = unsafe { libc::fcntl(sealed.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
        assert_eq!(r, 0);
        let m = GuestMemoryMmap::from_regions(vec![region(&sealed, 0, 0x1000, 0)]).unwrap();
        assert!(matches!(w.accept(&m), Ok(0)));
    }

    #[test]
    fn guest_memory_cut_short_after_it_was_accepted_reads_zeros_and_is_counted() {
        use vm_memory::mmap::{GuestRegionMmap, MmapRegion};
        use vm_memory::{Bytes, FileOffset};
        // SAFETY: a new memfd that the File owns.
        let file = unsafe { File::from_raw_fd(libc::memfd_create(c"t".as_ptr(), 0)) };
        file.set_len(0x4000).unwrap();
        let m = MmapRegion::<()>::from_file(FileOffset::new(file.try_clone().unwrap(), 0), 0x4000)
            .unwrap();
        let mem =
            GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(m, GuestAddress(0)).unwrap()])
                .unwrap();
        let w = MemWatch::new("cut");
        assert!(matches!(w.accept(&mem), Ok(1)));
        mem.write_obj(0x5a5a_5a5au32, GuestAddress(0x3000)).unwrap();
        // The frontend cuts its file short: the daemon's next read there would be a SIGBUS.
        file.set_len(0x1000).unwrap();
        let v: u32 = mem.read_obj(GuestAddress(0x3000)).unwrap();
        assert_eq!(v, 0);
        let t = std::time::Instant::now();
        while w.faults() == 0 && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(w.faults(), 1);
        // The page still in the file is still shared with it.
        mem.write_obj(7u32, GuestAddress(0)).unwrap();
        drop(mem);
    }

    #[test]
    fn only_eventfds_are_accepted_from_the_frontend() {
        let e = EventFd::new(0).unwrap();
        // SAFETY: a duplicate that the File owns.
        let f = unsafe { File::from_raw_fd(libc::dup(e.as_raw_fd())) };
        let f = checked_eventfd(f).unwrap();
        let d = dup_eventfd(&f).unwrap();
        e.write(3).unwrap();
        assert_eq!(d.read().unwrap(), 3);
        // Non-blocking now: an empty counter is EAGAIN, not a hang.
        assert_eq!(d.read().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
        let not = File::open("/dev/null").unwrap();
        assert!(checked_eventfd(not).is_err());
    }
}
