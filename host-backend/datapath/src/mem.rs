//! Memory regions ("allocators") laid out exactly like netmap's: a `netmap_if` pool, a ring
//! pool and a buffer pool, in one memfd that the daemon maps and hands to clients.
//!
//! A [`Region`] owns the memfd and the daemon's mapping (surrounded by guard pages). Objects are
//! carved out of it only at set-up time ([`Region::create_interface`]); the data path then uses
//! [`RingView`] for slots and [`Region::buf`] for buffers ([`Buf`]), both bounds-checked,
//! never handing out Rust references into memory a client can write.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ptnet_spec::csb::CSB_ENTRY_SIZE;
use ptnet_spec::ivshmem::{
    self, IvshmemDir, IvshmemHeader, PTNET_IVSHMEM_DIR_SIGNATURE, PTNET_IVSHMEM_DIR_SIZE,
    PTNET_IVSHMEM_HDR_SIZE, PTNET_IVSHMEM_MAX_RINGS, PTNET_IVSHMEM_VERSION,
};
use ptnet_spec::netmap::{
    NETMAP_API, NETMAP_BUF_RESERVED, NETMAP_IF_RING_OFS, NETMAP_RING_SLOTS_OFS, NR_RX, NR_TX,
    NetmapIf, NetmapRing, NetmapSlot, NmreqPoolsInfo,
};
use ptnet_spec::ring::{MAX_SLOTS, MIN_SLOTS};
use vm_memory::VolatileSlice;

use crate::csb::CsbRef;
use crate::fault;
use crate::sys::{self, GuardedMapping, HUGE_PAGE_SIZE, PAGE_SIZE, round_up};

/// Errors of region creation and object allocation.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// A size parameter is out of range.
    #[error("invalid region configuration: {0}")]
    Config(&'static str),
    /// The memfd or its mapping could not be created.
    #[error("cannot create the shared memory region")]
    Sys(#[source] std::io::Error),
    /// A hugetlb region's mapping cannot be watched for lost pages.
    #[error("cannot watch the region's mapping")]
    Watch(#[source] fault::WatchError),
    /// The region has no room left for the objects asked for.
    #[error("region {id} is out of {what}")]
    Exhausted {
        /// Region id.
        id: u16,
        /// Which pool.
        what: &'static str,
    },
    /// All 65535 region ids are in use (by regions that exist).
    #[error("no free memory region id")]
    NoId,
}

/// Whether to back regions with huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Use hugetlb pages when the machine offers them, plain pages otherwise.
    #[default]
    Auto,
    /// Always plain pages.
    Never,
}

/// Sizes of a region's pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionConfig {
    /// Number of `netmap_if` objects.
    pub if_objs: u32,
    /// Number of ring objects.
    pub ring_objs: u32,
    /// Largest ring the region must hold (sizes each ring object).
    pub max_slots: u32,
    /// Number of buffers, the two reserved ones included.
    pub num_bufs: u32,
    /// Size of each buffer (a multiple of 64).
    pub buf_size: u32,
    /// Huge page policy.
    pub huge_pages: HugePages,
}

/// Most extra buffers one interface may ask for (`ni_bufs_head`): 128 MiB of 2 KiB buffers.
pub const MAX_EXTRA_BUFS: u32 = 1 << 16;

/// Size of each `netmap_if` object (netmap's default; fits 121 ring offsets).
pub const IF_OBJSIZE: usize = 1024;
/// Most rings one `netmap_if` holds the offsets of.
pub const MAX_IF_RINGS: u32 = ((IF_OBJSIZE - NETMAP_IF_RING_OFS) / size_of::<i64>()) as u32;
/// Default netmap buffer size.
pub const DEFAULT_BUF_SIZE: u32 = 2048;

impl RegionConfig {
    /// A region for `ifs` interfaces with `rings` rings of `slots` slots in total, each ring
    /// with its own buffers, plus `extra_bufs`.
    pub fn for_rings(ifs: u32, rings: u32, slots: u32, extra_bufs: u32) -> Self {
        RegionConfig {
            if_objs: ifs,
            ring_objs: rings,
            max_slots: slots,
            // Saturating: an absurd request becomes a region too large to create, never a
            // wrapped count (RegionLayout::new refuses it).
            num_bufs: NETMAP_BUF_RESERVED
                .saturating_add(rings.saturating_mul(slots))
                .saturating_add(extra_bufs),
            buf_size: DEFAULT_BUF_SIZE,
            huge_pages: HugePages::Auto,
        }
    }
}

/// Where the pools are, as netmap reports them with NETMAP_REQ_POOLS_INFO_GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    /// Offset of the `netmap_if` pool.
    pub if_pool_ofs: usize,
    /// Objects in it.
    pub if_objtotal: u32,
    /// Offset of the ring pool.
    pub ring_pool_ofs: usize,
    /// Size of each ring object.
    pub ring_objsize: usize,
    /// Objects in it.
    pub ring_objtotal: u32,
    /// Offset of the buffer pool.
    pub buf_pool_ofs: usize,
    /// Size of each buffer.
    pub buf_size: u32,
    /// Buffers in it, reserved ones included.
    pub num_bufs: u32,
    /// Offset of the ivshmem device blocks, one per `netmap_if` object (0 in a region this
    /// process did not lay out).
    pub ivs_blocks_ofs: usize,
    /// Size of each device block (0: none).
    pub ivs_block_size: usize,
    /// Total size of the region (mapping length): a power of two in regions this process
    /// lays out, because QEMU's ivshmem BAR 2 (the region itself) must be one. The
    /// ivshmem directory is in its last page.
    pub size: usize,
}

impl RegionLayout {
    /// Computes the layout of `cfg`, rounding the total to `align`.
    pub fn new(cfg: &RegionConfig, align: usize) -> Result<Self, MemError> {
        if cfg.if_objs == 0 || cfg.ring_objs == 0 {
            return Err(MemError::Config(
                "a region needs interface and ring objects",
            ));
        }
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&cfg.max_slots) {
            return Err(MemError::Config("ring size out of range"));
        }
        if cfg.buf_size < 64 || cfg.buf_size % 64 != 0 || cfg.buf_size > 65536 {
            return Err(MemError::Config(
                "buffer size must be a multiple of 64 in 64..=65536",
            ));
        }
        if cfg.num_bufs <= NETMAP_BUF_RESERVED {
            return Err(MemError::Config(
                "a region needs buffers beyond the two reserved",
            ));
        }
        let ring_objsize = round_up(
            NETMAP_RING_SLOTS_OFS + cfg.max_slots as usize * size_of::<NetmapSlot>(),
            PAGE_SIZE,
        );
        if cfg.if_objs >= u32::from(u16::MAX) {
            // An interface's ivshmem peer id is its object's index plus one, 16 bits.
            return Err(MemError::Config("a region holds at most 65534 interfaces"));
        }
        let if_pool_ofs = 0;
        let ring_pool_ofs = round_up(cfg.if_objs as usize * IF_OBJSIZE, PAGE_SIZE);
        let buf_pool_ofs = ring_pool_ofs + cfg.ring_objs as usize * ring_objsize;
        // One ivshmem device block per interface, sized for as many rings as one interface
        // can have here; the directory in the last page.
        let ivs_block_size =
            ivshmem::block_size(cfg.ring_objs.min(PTNET_IVSHMEM_MAX_RINGS)) as usize;
        let too_large = MemError::Config("region larger than 1 TiB");
        let ivs_blocks_ofs = buf_pool_ofs
            .checked_add(cfg.num_bufs as usize * cfg.buf_size as usize)
            .map(|s| round_up(s, PAGE_SIZE))
            .ok_or(too_large)?;
        let size = (cfg.if_objs as usize)
            .checked_mul(ivs_block_size)
            .and_then(|b| b.checked_add(ivs_blocks_ofs))
            .and_then(|e| e.checked_add(PTNET_IVSHMEM_DIR_SIZE as usize))
            .and_then(usize::checked_next_power_of_two)
            .map(|s| s.max(align))
            .filter(|s| *s <= 1 << 40)
            .ok_or(MemError::Config("region larger than 1 TiB"))?;
        Ok(RegionLayout {
            if_pool_ofs,
            if_objtotal: cfg.if_objs,
            ring_pool_ofs,
            ring_objsize,
            ring_objtotal: cfg.ring_objs,
            buf_pool_ofs,
            buf_size: cfg.buf_size,
            num_bufs: cfg.num_bufs,
            ivs_blocks_ofs,
            ivs_block_size,
            size,
        })
    }

    /// The ivshmem directory this layout puts in the region's last page.
    pub fn ivshmem_dir(&self) -> IvshmemDir {
        IvshmemDir {
            signature: PTNET_IVSHMEM_DIR_SIGNATURE,
            version: PTNET_IVSHMEM_VERSION,
            block_size: self.ivs_block_size as u32,
            blocks_offset: self.ivs_blocks_ofs as u64,
            num_blocks: self.if_objtotal,
            reserved: 0,
        }
    }
}

/// Where the ivshmem device block of one interface is (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvshmemBlock {
    /// The guest's ivshmem peer id: the interface's object index plus one.
    pub peer_id: u16,
    /// Offset of the block (its header) in the region.
    pub offset: usize,
    /// Offset of its atok array.
    pub atok: usize,
    /// Offset of its ktoa array.
    pub ktoa: usize,
    /// Most CSB entries each array holds.
    pub max_rings: u32,
}

/// Plain data: any bytes make a valid value, so it may be read out of (or written into)
/// memory that someone else controls.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid `Self`, and `Self` must have
/// no padding that a read would expose.
pub unsafe trait Plain: Copy {}

// SAFETY: integers: every bit pattern is a value.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for i64 {}
// SAFETY: a byte array and integers, laid out without padding (ptnet-spec asserts the ABI
// offsets and size).
unsafe impl Plain for NetmapIf {}
// SAFETY: integers, 16 bytes without padding (ptnet-spec asserts it).
unsafe impl Plain for NetmapSlot {}
// SAFETY: integers, 32 bytes without padding (ptnet-spec asserts the size and offsets).
unsafe impl Plain for IvshmemDir {}
// SAFETY: integers and a `PtnetConfig` (integers and a byte array), 96 bytes without
// padding (ptnet-spec asserts the sizes and offsets).
unsafe impl Plain for IvshmemHeader {}

/// Free lists of a region; touched only when objects are created or destroyed.
#[derive(Debug)]
struct Pools {
    free_ifs: Vec<u32>,
    free_rings: Vec<u32>,
    free_bufs: Vec<u32>,
}

/// Region ids (netmap's `nr_mem_id`, 16 bits) in use: a region gives its id back when it
/// goes, so ports can be created and destroyed forever. Id 0 is never handed out.
static REGION_IDS: Mutex<RegionIds> = Mutex::new(RegionIds {
    used: [0; 1024],
    next: 1,
});

struct RegionIds {
    /// One bit per id.
    used: [u64; 1024],
    /// Where the next search starts (ids are not reused at once: a client that kept a stale
    /// id sees a different region, not an immediate namesake).
    next: u16,
}

impl RegionIds {
    fn take(&mut self) -> Option<u16> {
        for k in 0..u16::MAX {
            let id = self.next.wrapping_add(k).max(1);
            let (w, b) = (usize::from(id) / 64, id % 64);
            if self.used[w] & (1 << b) == 0 {
                self.used[w] |= 1 << b;
                self.next = id.wrapping_add(1).max(1);
                return Some(id);
            }
        }
        None
    }

    fn give_back(&mut self, id: u16) {
        self.used[usize::from(id) / 64] &= !(1 << (id % 64));
    }
}

/// A region id taken from [`REGION_IDS`], given back when dropped.
#[derive(Debug)]
struct IdGuard(u16);

impl IdGuard {
    fn take() -> Result<Self, MemError> {
        let mut ids = REGION_IDS.lock().unwrap_or_else(|e| e.into_inner());
        ids.take().map(IdGuard).ok_or(MemError::NoId)
    }
}

impl Drop for IdGuard {
    fn drop(&mut self) {
        REGION_IDS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(self.0);
    }
}

/// Watches a hugetlb region's mapping: a page a holder of the memfd punched out (and the
/// pool could not refill) reads as zeros from then on, in the daemon only. That holder is one
/// of the region's own clients (or its VM's QEMU): it cut itself off from its ports; the
/// other regions, and so the other tenants of an untrusted switch, are not touched.
fn watch_region(
    id: u16,
    name: &str,
    map: &GuardedMapping,
    faults: &Arc<AtomicU64>,
) -> Result<fault::Watch, MemError> {
    let (base, name, count) = (map.base() as usize, name.to_owned(), Arc::clone(faults));
    fault::watch(base, map.len(), HUGE_PAGE_SIZE, move |f| {
        count.fetch_add(f.count, Ordering::Relaxed);
        log::error!(
            "region {id} ({name}): {} huge page(s) taken away under the daemon, the last at \
             offset {:#x} (a holder of the region's memfd punched a hole the pool could not \
             refill); the daemon now sees zeros there, and its ports no longer share that \
             memory with their clients",
            f.count,
            f.addr.wrapping_sub(base)
        );
    })
    .map_err(MemError::Watch)
}

/// One shared memory region: a memfd laid out as a netmap allocator, mapped by the daemon.
#[derive(Debug)]
pub struct Region {
    id: u16,
    /// The id's hold, for regions this process created (an attached region's id is the
    /// creator's).
    _id: Option<IdGuard>,
    file: File,
    /// A hugetlb region's pages can be taken away by anyone holding the memfd (a punched hole
    /// the pool cannot refill): the daemon survives touching such a page (see [`fault`]).
    /// Dropped before `map`, as a watch must be.
    _watch: Option<fault::Watch>,
    /// Faults survived in this region.
    faults: Arc<AtomicU64>,
    map: GuardedMapping,
    layout: RegionLayout,
    huge: bool,
    pools: Mutex<Pools>,
}

impl Region {
    /// Creates and maps a region.
    pub fn new(name: &str, cfg: &RegionConfig) -> Result<Arc<Self>, MemError> {
        let guard = IdGuard::take()?;
        let id = guard.0;
        let cname = CString::new(format!("ptnet-{name}"))
            .map_err(|_| MemError::Config("region name contains NUL"))?;
        let try_huge = cfg.huge_pages == HugePages::Auto && huge_pages_available();
        let faults = Arc::new(AtomicU64::new(0));
        let huge = try_huge
            .then(|| {
                let layout = RegionLayout::new(cfg, HUGE_PAGE_SIZE)?;
                let f = sys::memfd(&cname, layout.size, true).map_err(MemError::Sys)?;
                let m = GuardedMapping::with_align(&f, layout.size, HUGE_PAGE_SIZE)
                    .map_err(MemError::Sys)?;
                // A plain memfd's pages cannot disappear: it is sealed against shrinking, and
                // a hole punched in shmem reads back as zeros. A hugetlb page punched out may
                // not come back (the pool may be empty by then).
                let w = watch_region(id, name, &m, &faults)?;
                Ok::<_, MemError>((f, m, layout, Some(w)))
            })
            .and_then(|r| {
                r.inspect_err(|e| {
                    log::debug!("region {id}: hugetlb unavailable ({e}), using plain pages")
                })
                .ok()
            });
        let (file, map, layout, watch, huge) = match huge {
            Some((f, m, layout, w)) => (f, m, layout, w, true),
            None => {
                let layout = RegionLayout::new(cfg, PAGE_SIZE)?;
                let f = sys::memfd(&cname, layout.size, false).map_err(MemError::Sys)?;
                let m = GuardedMapping::new(&f, layout.size).map_err(MemError::Sys)?;
                (f, m, layout, None, false)
            }
        };
        let pools = Pools {
            free_ifs: (0..layout.if_objtotal).rev().collect(),
            free_rings: (0..layout.ring_objtotal).rev().collect(),
            free_bufs: (NETMAP_BUF_RESERVED..layout.num_bufs).rev().collect(),
        };
        let region = Arc::new(Region {
            id,
            _id: Some(guard),
            file,
            _watch: watch,
            faults,
            map,
            layout,
            huge,
            pools: Mutex::new(pools),
        });
        region.write_ivshmem_dir();
        Ok(region)
    }

    /// Maps a region someone else laid out: the first `size` bytes of `file`, as an
    /// application sees a port's memory (`id` is its `nr_mem_id`). It has no pools (nothing is
    /// allocated from it) and no buffers until [`Region::set_buffers`] says where they are.
    pub fn attach(file: File, size: usize, id: u16) -> Result<Self, MemError> {
        let meta = file.metadata().map_err(MemError::Sys)?;
        // A memfd must hold what was announced; a device (`/dev/netmap`) says nothing of its
        // size, its mmap does.
        if meta.is_file() && meta.len() < size as u64 {
            return Err(MemError::Config("memory file smaller than announced"));
        }
        if size == 0 {
            return Err(MemError::Config("empty region"));
        }
        // A region the daemon backed with huge pages must be mapped at a huge page boundary;
        // its size says so (any other region is a whole number of plain pages).
        let align = if size % HUGE_PAGE_SIZE == 0 {
            HUGE_PAGE_SIZE
        } else {
            PAGE_SIZE
        };
        // The mapping covers whole pages; only `size` bytes of it are the region.
        let map = GuardedMapping::with_align(&file, round_up(size, align), align)
            .map_err(MemError::Sys)?;
        let layout = RegionLayout {
            if_pool_ofs: 0,
            if_objtotal: 0,
            ring_pool_ofs: 0,
            ring_objsize: 0,
            ring_objtotal: 0,
            buf_pool_ofs: 0,
            buf_size: 0,
            num_bufs: 0,
            ivs_blocks_ofs: 0,
            ivs_block_size: 0,
            size,
        };
        Ok(Region {
            id,
            _id: None,
            file,
            _watch: None,
            faults: Arc::new(AtomicU64::new(0)),
            map,
            layout,
            huge: false,
            pools: Mutex::new(Pools {
                free_ifs: Vec::new(),
                free_rings: Vec::new(),
                free_bufs: Vec::new(),
            }),
        })
    }

    /// Sets where the buffers of an attached region are: `buf_size`-byte buffers from byte
    /// `pool_ofs` on, as many as fit in the region.
    pub fn set_buffers(&mut self, pool_ofs: u64, buf_size: u32) -> Result<(), MemError> {
        let pool = usize::try_from(pool_ofs)
            .ok()
            .filter(|&p| p <= self.layout.size)
            .ok_or(MemError::Config("buffer pool outside the region"))?;
        if buf_size == 0 {
            return Err(MemError::Config("buffer size 0"));
        }
        let n = (self.layout.size - pool) / buf_size as usize;
        self.layout.buf_pool_ofs = pool;
        self.layout.buf_size = buf_size;
        self.layout.num_bufs = u32::try_from(n).unwrap_or(u32::MAX);
        Ok(())
    }

    /// SIGBUS faults the daemon survived in this region: pages a holder of its memfd took
    /// away (always 0 for regions on plain pages).
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// The region's id (netmap's `nr_mem_id`).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The memfd, to hand to clients.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Size of the region in bytes.
    pub fn size(&self) -> usize {
        self.layout.size
    }

    /// Whether it is backed by huge pages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// The pool layout.
    pub fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    /// The ivshmem device block of the interface whose `netmap_if` is at `nifp_offset`, if
    /// this region laid one out for it.
    pub fn ivshmem_block(&self, nifp_offset: u64) -> Option<IvshmemBlock> {
        let l = &self.layout;
        let rel = usize::try_from(nifp_offset)
            .ok()?
            .checked_sub(l.if_pool_ofs)?;
        let k = rel / IF_OBJSIZE;
        if l.ivs_block_size == 0 || rel % IF_OBJSIZE != 0 || k >= l.if_objtotal as usize {
            return None;
        }
        let offset = l.ivs_blocks_ofs + k * l.ivs_block_size;
        let array = (l.ivs_block_size - PTNET_IVSHMEM_HDR_SIZE as usize) / 2;
        Some(IvshmemBlock {
            peer_id: u16::try_from(k + 1).ok()?,
            offset,
            atok: offset + PTNET_IVSHMEM_HDR_SIZE as usize,
            ktoa: offset + PTNET_IVSHMEM_HDR_SIZE as usize + array,
            max_rings: (array / CSB_ENTRY_SIZE as usize) as u32,
        })
    }

    /// (Re)writes the ivshmem directory in the region's last page: at creation, and for each
    /// VM that connects (the previous one may have scribbled over it).
    pub fn write_ivshmem_dir(&self) {
        if self.layout.ivs_block_size > 0 {
            let at = ivshmem::dir_offset(self.layout.size as u64) as usize;
            self.write_at(at, self.layout.ivshmem_dir());
        }
    }

    /// A CSB of `n` rings inside this region: `n` atok entries at `atok`, `n` ktoa entries at
    /// `ktoa` (an ivshmem device block's), if both arrays lie inside, 64-byte aligned.
    pub fn csb_at(self: &Arc<Self>, atok: usize, ktoa: usize, n: u32) -> Option<CsbRef> {
        let len = (n as usize).checked_mul(CSB_ENTRY_SIZE as usize)?;
        let fits = |o: usize| {
            o % CSB_ENTRY_SIZE as usize == 0
                && o.checked_add(len).is_some_and(|e| e <= self.layout.size)
        };
        if n == 0 || !fits(atok) || !fits(ktoa) {
            return None;
        }
        let base = self.map.base();
        // SAFETY: both arrays of n entries lie inside the mapping, 64-byte aligned (checked
        // just above); the Arc keeps the mapping alive as long as the CsbRef; every access to
        // the entries is atomic.
        Some(unsafe {
            CsbRef::from_raw(
                NonNull::new(base.add(atok).cast())?,
                NonNull::new(base.add(ktoa).cast())?,
                n,
                Arc::clone(self) as Arc<dyn crate::csb::CsbBacking>,
            )
        })
    }

    /// The layout in netmap's NETMAP_REQ_POOLS_INFO_GET form.
    pub fn pools_info(&self) -> NmreqPoolsInfo {
        let l = &self.layout;
        NmreqPoolsInfo {
            nr_memsize: l.size as u64,
            nr_mem_id: self.id,
            pad1: [0; 3],
            nr_if_pool_offset: l.if_pool_ofs as u64,
            nr_if_pool_objtotal: l.if_objtotal,
            nr_if_pool_objsize: IF_OBJSIZE as u32,
            nr_ring_pool_offset: l.ring_pool_ofs as u64,
            nr_ring_pool_objtotal: l.ring_objtotal,
            nr_ring_pool_objsize: l.ring_objsize as u32,
            nr_buf_pool_offset: l.buf_pool_ofs as u64,
            nr_buf_pool_objtotal: l.num_bufs,
            nr_buf_pool_objsize: l.buf_size,
        }
    }

    /// Buffer `idx`, or `None` if `idx` is not a buffer of this region. Buffers 0 and 1 are
    /// valid targets: they are the reserved scratch buffers.
    #[inline]
    pub fn buf(&self, idx: u32) -> Option<Buf<'_>> {
        if idx >= self.layout.num_bufs {
            return None;
        }
        let ofs = self.layout.buf_pool_ofs + idx as usize * self.layout.buf_size as usize;
        // SAFETY: idx < num_bufs, so ofs + buf_size <= size: the buffer lies inside the
        // mapping, which lives as long as `self` (and so as long as the returned handle).
        Some(unsafe { Buf::new(self.map.base().add(ofs), self.layout.buf_size as usize) })
    }

    /// Buffer `idx` and its index, or the reserved scratch buffer 0 when `idx` is not a
    /// buffer of this region: where a frame goes when a kernel-owned slot names a bad buffer
    /// (the owner's own corruption: its frame is lost, nothing outside the region is touched).
    #[inline]
    pub fn buf_or_scratch(&self, idx: u32) -> (u32, Buf<'_>) {
        match self.buf(idx) {
            Some(b) => (idx, b),
            // Buffer 0 exists in every region the daemon lays out (RegionLayout::new wants
            // more than the two reserved buffers); an attached region without buffers gets a
            // buffer of no bytes.
            None => (0, self.buf(0).unwrap_or(Buf::EMPTY)),
        }
    }

    /// Copies `out.len()` bytes from offset `ofs` (for inspection: tests, dumps). Returns
    /// false if the range is outside the region.
    pub fn copy_out(&self, ofs: usize, out: &mut [u8]) -> bool {
        if ofs
            .checked_add(out.len())
            .is_none_or(|end| end > self.layout.size)
        {
            return false;
        }
        // SAFETY: the range is inside the mapping (checked); `out` is ordinary memory.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.base().add(ofs), out.as_mut_ptr(), out.len())
        };
        true
    }

    /// Size of every buffer.
    #[inline]
    pub fn buf_size(&self) -> u32 {
        self.layout.buf_size
    }

    /// Writes `value` at byte offset `ofs` (set-up time only).
    fn write_at<T: Plain>(&self, ofs: usize, value: T) {
        assert!(ofs % std::mem::align_of::<T>() == 0 && ofs + size_of::<T>() <= self.layout.size);
        // SAFETY: checked in bounds and aligned just above; plain-old-data write into our
        // shared mapping (a client may race, which can only corrupt its own view).
        unsafe { self.map.base().add(ofs).cast::<T>().write_volatile(value) };
    }

    fn read_at<T: Plain>(&self, ofs: usize) -> T {
        assert!(ofs % std::mem::align_of::<T>() == 0 && ofs + size_of::<T>() <= self.layout.size);
        // SAFETY: checked in bounds and aligned just above; `T` is plain data, valid for any
        // bytes a client may have written.
        unsafe { self.map.base().add(ofs).cast::<T>().read_volatile() }
    }

    /// Reads a `T` at byte offset `ofs` once, or `None` if it does not lie (aligned) inside
    /// the region: how an application finds its way through a layout it does not trust.
    pub fn read<T: Plain>(&self, ofs: u64) -> Option<T> {
        let ofs = usize::try_from(ofs).ok()?;
        let end = ofs.checked_add(size_of::<T>())?;
        (end <= self.layout.size && ofs % std::mem::align_of::<T>() == 0).then(|| self.read_at(ofs))
    }

    /// Writes `value` at byte offset `ofs` once, if it lies (aligned) inside the region;
    /// whether it did. For applications (and tests playing hostile ones).
    pub fn write<T: Plain>(&self, ofs: u64, value: T) -> bool {
        let Some(ofs) = usize::try_from(ofs).ok() else {
            return false;
        };
        let fits = ofs
            .checked_add(size_of::<T>())
            .is_some_and(|end| end <= self.layout.size)
            && ofs % std::mem::align_of::<T>() == 0;
        if fits {
            self.write_at(ofs, value);
        }
        fits
    }

    /// Offset of buffer `idx` in the region, if it is one of its buffers.
    pub fn buf_offset(&self, idx: u32) -> Option<usize> {
        (idx < self.layout.num_bufs)
            .then(|| self.layout.buf_pool_ofs + idx as usize * self.layout.buf_size as usize)
    }

    /// The ring of `num_slots` slots whose header is at byte offset `ofs`, if it lies
    /// (64-byte aligned) inside the region with all its slots. For applications of a mapped
    /// region ([`Region::attach`]); the daemon's own rings come from
    /// [`Region::create_interface`].
    pub fn ring(self: &Arc<Self>, ofs: u64, num_slots: u32) -> Option<RingView> {
        let ofs = usize::try_from(ofs).ok()?;
        let end =
            ofs.checked_add(NETMAP_RING_SLOTS_OFS + num_slots as usize * size_of::<NetmapSlot>())?;
        let ok = (MIN_SLOTS..=MAX_SLOTS).contains(&num_slots)
            && ofs % 64 == 0
            && end <= self.layout.size;
        ok.then(|| RingView {
            region: Arc::clone(self),
            ofs,
            num_slots,
        })
    }

    fn alloc_bufs(&self, pools: &mut Pools, n: u32) -> Result<Vec<u32>, MemError> {
        if (pools.free_bufs.len() as u64) < u64::from(n) {
            return Err(MemError::Exhausted {
                id: self.id,
                what: "buffers",
            });
        }
        let at = pools.free_bufs.len() - n as usize;
        Ok(pools.free_bufs.split_off(at))
    }

    /// Creates a `netmap_if` with its rings. Each ring gets its own buffers, except the RX
    /// rings listed in `tx_shares`/`rx_shares`, which start with the slots (and so the
    /// buffers) of the given ring, as the two sides of a pipe do. `extra_bufs` are chained on `ni_bufs_head`.
    pub fn create_interface(
        self: &Arc<Self>,
        spec: &InterfaceSpec<'_>,
    ) -> Result<Interface, MemError> {
        let ntx = spec.tx_slots.len();
        let nrx = spec.rx_slots.len();
        let nrings = ntx + nrx;
        if spec.extra_bufs > MAX_EXTRA_BUFS {
            return Err(MemError::Config("more extra buffers than MAX_EXTRA_BUFS"));
        }
        if NETMAP_IF_RING_OFS + nrings * size_of::<i64>() > IF_OBJSIZE {
            return Err(MemError::Config("too many rings for one netmap_if"));
        }
        let share_of = |k: usize| -> Option<&RingView> {
            if k < ntx {
                spec.tx_shares.get(k).copied().flatten()
            } else {
                spec.rx_shares.get(k - ntx).copied().flatten()
            }
        };
        let slots_of = |k: usize| {
            if k < ntx {
                spec.tx_slots[k]
            } else {
                spec.rx_slots[k - ntx]
            }
        };
        let mut own_bufs = spec.extra_bufs;
        for k in 0..nrings {
            let n = slots_of(k);
            if !(MIN_SLOTS..=MAX_SLOTS).contains(&n) || n as usize > self.max_slots() {
                return Err(MemError::Config("ring size out of range for this region"));
            }
            match share_of(k) {
                Some(src) if !Arc::ptr_eq(&src.region, self) || src.num_slots != n => {
                    return Err(MemError::Config(
                        "a shared ring must be in the same region and of the same size",
                    ));
                }
                Some(_) => {}
                None => own_bufs += n,
            }
        }

        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if pools.free_ifs.is_empty() {
            return Err(MemError::Exhausted {
                id: self.id,
                what: "netmap_if objects",
            });
        }
        if pools.free_rings.len() < nrings {
            return Err(MemError::Exhausted {
                id: self.id,
                what: "ring objects",
            });
        }
        let mut bufs = self.alloc_bufs(&mut pools, own_bufs)?;
        // PANIC: emptiness checked above.
        let if_idx = pools.free_ifs.pop().expect("checked non-empty");
        let at = pools.free_rings.len() - nrings;
        let ring_idx = pools.free_rings.split_off(at);
        drop(pools);

        let nifp = self.layout.if_pool_ofs + if_idx as usize * IF_OBJSIZE;
        let mut owned_bufs = Vec::with_capacity(bufs.len());
        let mut initial = Vec::with_capacity(nrings);
        let mut tx = Vec::with_capacity(ntx);
        let mut rx = Vec::with_capacity(nrx);
        for (k, &obj) in ring_idx.iter().enumerate() {
            let n = slots_of(k);
            let (dir, ringid) = if k < ntx {
                (NR_TX, k)
            } else {
                (NR_RX, k - ntx)
            };
            let ofs = self.layout.ring_pool_ofs + obj as usize * self.layout.ring_objsize;
            let hdr = NetmapRing {
                buf_ofs: self.layout.buf_pool_ofs as i64 - ofs as i64,
                num_slots: n,
                nr_buf_size: self.layout.buf_size,
                ringid: ringid as u16,
                dir,
                head: 0.into(),
                cur: 0.into(),
                tail: (if dir == NR_TX { n - 1 } else { 0 }).into(),
                flags: 0,
                pad0: 0,
                ts_sec: 0,
                ts_usec: 0,
                offset_mask: 0,
                buf_align: 0,
                pad1: [0; 56],
                sem: [0; 128],
            };
            // SAFETY: ofs is the start of a ring object we own, inside the mapping and
            // 8-byte aligned (page-aligned pool, page-multiple objects).
            unsafe {
                self.map
                    .base()
                    .add(ofs)
                    .cast::<NetmapRing>()
                    .write_volatile(hdr)
            };
            let view = RingView {
                region: Arc::clone(self),
                ofs,
                num_slots: n,
            };
            for i in 0..n {
                let slot = match share_of(k) {
                    Some(src) => src.read_slot(i),
                    None => {
                        // PANIC: own_bufs counted one buffer per slot of every unshared ring.
                        let b = bufs.pop().expect("buffers counted above");
                        owned_bufs.push(b);
                        NetmapSlot {
                            buf_idx: b,
                            len: 0,
                            flags: 0,
                            ptr: 0,
                        }
                    }
                };
                view.write_slot(i, slot);
            }
            initial.push((0..n).map(|i| view.read_slot(i).buf_idx).collect());
            self.write_at(
                nifp + NETMAP_IF_RING_OFS + k * size_of::<i64>(),
                ofs as i64 - nifp as i64,
            );
            if dir == NR_TX {
                tx.push(view);
            } else {
                rx.push(view);
            }
        }

        let extra: Vec<u32> = std::mem::take(&mut bufs);
        owned_bufs.extend_from_slice(&extra);
        let head = self.chain_extra(&extra);
        let mut name = [0u8; 16];
        for (d, s) in name.iter_mut().zip(spec.name.bytes().take(15)) {
            *d = s;
        }
        let if_hdr = NetmapIf {
            ni_name: name,
            ni_version: u32::from(NETMAP_API),
            ni_flags: ptnet_spec::netmap::NI_PRIV_MEM,
            ni_tx_rings: ntx as u32,
            ni_rx_rings: nrx as u32,
            ni_bufs_head: head,
            ni_host_tx_rings: 0,
            ni_host_rx_rings: 0,
            spare: [0; 3],
        };
        self.write_at(nifp, if_hdr);
        Ok(Interface {
            if_hdr,
            region: Arc::clone(self),
            if_idx,
            ring_idx,
            nifp_offset: nifp as u64,
            owned_bufs,
            initial,
            extra,
            tx,
            rx,
        })
    }

    /// Writes the fixed fields of the ring header at `ofs` (everything but head/cur/tail and
    /// the timestamps): what a client can scribble over and a later one must find intact.
    fn write_ring_layout(&self, ofs: usize, num_slots: u32, dir: u16, ringid: u16) {
        self.write_at(
            ofs + std::mem::offset_of!(NetmapRing, buf_ofs),
            self.layout.buf_pool_ofs as i64 - ofs as i64,
        );
        self.write_at(ofs + std::mem::offset_of!(NetmapRing, num_slots), num_slots);
        self.write_at(
            ofs + std::mem::offset_of!(NetmapRing, nr_buf_size),
            self.layout.buf_size,
        );
        self.write_at(ofs + std::mem::offset_of!(NetmapRing, ringid), ringid);
        self.write_at(ofs + std::mem::offset_of!(NetmapRing, dir), dir);
    }

    /// Chains `extra` through each buffer's first u32 (ending with 0); returns the head.
    fn chain_extra(&self, extra: &[u32]) -> u32 {
        let mut head = 0u32;
        for &b in extra {
            // The indices come from this region's own pool, so `buf` finds them all.
            if let Some(p) = self.buf(b) {
                p.write(0, &head.to_ne_bytes());
            }
            head = b;
        }
        head
    }

    fn max_slots(&self) -> usize {
        (self.layout.ring_objsize - NETMAP_RING_SLOTS_OFS) / size_of::<NetmapSlot>()
    }
}

/// What [`Region::create_interface`] builds.
#[derive(Debug, Default)]
pub struct InterfaceSpec<'a> {
    /// Name written into `ni_name` (truncated to 15 bytes).
    pub name: &'a str,
    /// Slots of each TX ring.
    pub tx_slots: Vec<u32>,
    /// Slots of each RX ring.
    pub rx_slots: Vec<u32>,
    /// For TX ring i, `Some(ring)` makes it start with that ring's slots, and so share its
    /// buffers (the two ends of a pipe); the ring must be in the same region.
    pub tx_shares: Vec<Option<&'a RingView>>,
    /// The same for RX rings.
    pub rx_shares: Vec<Option<&'a RingView>>,
    /// Extra buffers on `ni_bufs_head`.
    pub extra_bufs: u32,
}

/// A `netmap_if` and its rings in a region; returns its objects to the region when dropped.
#[derive(Debug)]
pub struct Interface {
    region: Arc<Region>,
    if_idx: u32,
    ring_idx: Vec<u32>,
    nifp_offset: u64,
    owned_bufs: Vec<u32>,
    /// Buffer of every slot at creation, per ring (TX rings then RX rings).
    initial: Vec<Vec<u32>>,
    /// The extra buffers, in chain order.
    extra: Vec<u32>,
    /// The `netmap_if` header as written at creation.
    if_hdr: NetmapIf,
    /// TX rings.
    pub tx: Vec<RingView>,
    /// RX rings.
    pub rx: Vec<RingView>,
}

impl Interface {
    /// Offset of the `netmap_if` in the region.
    pub fn nifp_offset(&self) -> u64 {
        self.nifp_offset
    }

    /// The region.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Gives every slot its original buffer back, rebuilds the extra-buffer list and rewrites
    /// the layout ([`Interface::restore_layout`]), undoing whatever a previous client did
    /// (a new client then starts from a clean port: a guest application that scrambled its
    /// ring offsets cannot keep the next driver instance from finding the rings).
    pub fn restore(&self) {
        self.restore_layout();
        for (ring, bufs) in self.tx.iter().chain(self.rx.iter()).zip(&self.initial) {
            for (i, &b) in bufs.iter().enumerate() {
                ring.write_slot(
                    i as u32,
                    NetmapSlot {
                        buf_idx: b,
                        len: 0,
                        flags: 0,
                        ptr: 0,
                    },
                );
            }
        }
        let head = self.region.chain_extra(&self.extra);
        self.region.write_at(
            self.nifp_offset as usize + std::mem::offset_of!(NetmapIf, ni_bufs_head),
            head,
        );
    }

    /// Rewrites the `netmap_if` (header and ring offsets) and every ring header's fixed
    /// fields, leaving the slots alone (a pipe end's slots hold buffers in flight between
    /// its two ends). A client attaching finds the layout netmap would give it.
    pub fn restore_layout(&self) {
        let nifp = self.nifp_offset as usize;
        for (k, ring) in self.tx.iter().chain(self.rx.iter()).enumerate() {
            let (dir, ringid) = if k < self.tx.len() {
                (NR_TX, k)
            } else {
                (NR_RX, k - self.tx.len())
            };
            self.region
                .write_ring_layout(ring.ofs, ring.num_slots, dir, ringid as u16);
            self.region.write_at(
                nifp + NETMAP_IF_RING_OFS + k * size_of::<i64>(),
                ring.ofs as i64 - nifp as i64,
            );
        }
        // The header, keeping the extra-buffer list head as it is (the list belongs to the
        // client between restores).
        let head: u32 = self
            .region
            .read_at(nifp + std::mem::offset_of!(NetmapIf, ni_bufs_head));
        self.region.write_at(
            nifp,
            NetmapIf {
                ni_bufs_head: head,
                ..self.if_hdr
            },
        );
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        let mut pools = self.region.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.free_ifs.push(self.if_idx);
        pools.free_rings.append(&mut self.ring_idx);
        pools.free_bufs.append(&mut self.owned_bufs);
    }
}

/// Access to one ring's slots in a region, for the kernel side.
///
/// Invariant: `ofs` is the offset of a ring object of `region` with `num_slots` slots, so
/// every slot index below `num_slots` addresses memory inside the mapping.
#[derive(Debug, Clone)]
pub struct RingView {
    region: Arc<Region>,
    ofs: usize,
    num_slots: u32,
}

impl RingView {
    /// Number of slots (fixed at creation; the copy in shared memory is never trusted).
    #[inline]
    pub fn num_slots(&self) -> u32 {
        self.num_slots
    }

    /// The region holding the ring and its buffers.
    #[inline]
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Offset of the ring in its region.
    pub fn offset(&self) -> usize {
        self.ofs
    }

    #[inline]
    fn slot_ptr(&self, i: u32) -> *mut NetmapSlot {
        // An index at or past the end is a caller bug (indices are validated first); map it
        // to slot 0 rather than leave the ring.
        let i = if i < self.num_slots { i } else { 0 };
        let ofs = self.ofs + NETMAP_RING_SLOTS_OFS + i as usize * size_of::<NetmapSlot>();
        // SAFETY: i < num_slots, so the slot lies inside this ring object (type invariant).
        unsafe { self.region.map.base().add(ofs).cast() }
    }

    /// Reads slot `i` once (the client may change it at any time).
    #[inline]
    pub fn read_slot(&self, i: u32) -> NetmapSlot {
        // SAFETY: slot_ptr is in bounds and 16-byte aligned; a volatile read of plain data
        // from shared memory.
        unsafe { self.slot_ptr(i).read_volatile() }
    }

    /// Writes slot `i`.
    #[inline]
    pub fn write_slot(&self, i: u32, slot: NetmapSlot) {
        // SAFETY: as in read_slot.
        unsafe { self.slot_ptr(i).write_volatile(slot) }
    }

    /// The header's `head`, `cur` and `tail` words, as atomics (the application writes the
    /// first two, the kernel side the third).
    fn pointer_words(&self) -> [&AtomicU32; 3] {
        let word = |f: usize| {
            let p = self.region.map.base().wrapping_add(self.ofs + f);
            // SAFETY: the header lies inside the mapping, 64-byte aligned (type invariant),
            // so each u32 field is in bounds and aligned; an AtomicU32 has the layout of a u32
            // and may be shared with writers in other processes; the mapping lives as long as
            // `self.region`, which the reference borrows.
            unsafe { &*p.cast::<AtomicU32>() }
        };
        [
            word(std::mem::offset_of!(NetmapRing, head)),
            word(std::mem::offset_of!(NetmapRing, cur)),
            word(std::mem::offset_of!(NetmapRing, tail)),
        ]
    }

    /// Application side: writes `cur`, then `head` into the header (release: slots and
    /// buffers written before are visible to whoever reads the new `head`).
    #[inline]
    pub fn publish_head_cur(&self, head: u32, cur: u32) {
        let [h, c, _] = self.pointer_words();
        c.store(cur, Ordering::Release);
        h.store(head, Ordering::Release);
    }

    /// Application side: the header's `tail` (acquire: the slots and buffers the kernel side
    /// handed over with it are visible). Untrusted: the caller validates it.
    #[inline]
    pub fn tail(&self) -> u32 {
        self.pointer_words()[2].load(Ordering::Acquire)
    }

    /// Kernel side of a netmap application: the header's `head` and `cur` as the application
    /// left them (acquire: the slots before `head` are visible). Untrusted: the caller
    /// validates them.
    #[inline]
    pub fn app_head_cur(&self) -> (u32, u32) {
        let [h, c, _] = self.pointer_words();
        let head = h.load(Ordering::Acquire);
        (head, c.load(Ordering::Acquire))
    }

    /// Kernel side of a netmap application: writes the header's `tail` only (release: the
    /// slots handed over are visible to whoever reads it); `head` and `cur` are the
    /// application's.
    #[inline]
    pub fn publish_tail(&self, tail: u32) {
        self.pointer_words()[2].store(tail, Ordering::Release);
    }

    /// Rewrites the ring header's `head`, `cur` and `tail` (ring reset).
    pub fn reset_pointers(&self, head: u32, cur: u32, tail: u32) {
        let base = self.ofs;
        self.region
            .write_at(base + std::mem::offset_of!(NetmapRing, head), head);
        self.region
            .write_at(base + std::mem::offset_of!(NetmapRing, cur), cur);
        self.region
            .write_at(base + std::mem::offset_of!(NetmapRing, tail), tail);
    }
}

/// One buffer of a region, bounded: what [`Region::buf`] hands out instead of a pointer.
///
/// Its bytes are shared memory that a client (or a guest) may write at any moment, so no
/// Rust reference to them is ever made: bytes are copied in and out, and a concurrent writer
/// can garble a copy but never extend it past the buffer.
///
/// Invariant: `ptr` addresses `len` bytes inside a region's mapping that outlives `'a`.
#[derive(Clone, Copy)]
pub struct Buf<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _region: PhantomData<&'a Region>,
}

impl fmt::Debug for Buf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf").field("len", &self.len).finish()
    }
}

impl<'a> Buf<'a> {
    /// A buffer of no bytes.
    pub const EMPTY: Buf<'static> = Buf {
        ptr: NonNull::dangling(),
        len: 0,
        _region: PhantomData,
    };

    /// # Safety
    /// `ptr` must address `len` bytes of a mapping that stays mapped for `'a`.
    #[inline]
    unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Buf {
            // SAFETY: a pointer into a live mapping is never null (caller's contract).
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len,
            _region: PhantomData,
        }
    }

    /// Size of the buffer.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no bytes (never, for a region's buffers).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` bytes of the buffer (all of it if `n` is larger).
    #[inline]
    pub fn prefix(self, n: usize) -> Buf<'a> {
        Buf {
            len: n.min(self.len),
            ..self
        }
    }

    /// Copies `src` into the buffer from byte `ofs` on, as much as fits; returns the bytes
    /// copied.
    #[inline]
    pub fn write(&self, ofs: usize, src: &[u8]) -> usize {
        let n = src.len().min(self.len.saturating_sub(ofs));
        // SAFETY: ofs + n <= len keeps the destination inside the buffer (type invariant);
        // `src` is ordinary memory, never a region's (no Rust reference to one exists).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(ofs), n) };
        n
    }

    /// Copies bytes `ofs..` of the buffer into `out`, as many as fit; returns how many.
    #[inline]
    pub fn read(&self, ofs: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len.saturating_sub(ofs));
        // SAFETY: as in `write`, the other way round.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(ofs), out.as_mut_ptr(), n) };
        n
    }

    /// Copies the first `len` bytes of `src` into this buffer, VALE's way: in whole 64-byte
    /// chunks as far as both buffers go (fewer branches than an exact-length copy; the bytes
    /// past `len` are garbage the receiver does not look at). `src` may be this very buffer
    /// (a shared region).
    #[inline]
    pub fn copy_from(&self, src: Buf<'_>, len: usize) {
        let n = ((len + 63) & !63).min(self.len).min(src.len);
        // SAFETY: n is within both buffers (type invariant of each); `ptr::copy` tolerates
        // overlap. A client writing either buffer meanwhile can only garble the bytes.
        unsafe { std::ptr::copy(src.ptr.as_ptr(), self.ptr.as_ptr(), n) };
    }

    /// The buffer as a slice, for an application reading a frame it holds.
    ///
    /// # Safety
    /// Nobody may write the buffer while the slice lives: the caller holds its slot, and the
    /// other side of the ring (the daemon, for a host client) follows the ring protocol.
    #[inline]
    pub unsafe fn as_slice(&self) -> &'a [u8] {
        // SAFETY: `len` bytes at `ptr` are mapped for 'a (type invariant); nobody writes them
        // meanwhile (caller's contract).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer as a mutable slice, for an application writing a frame into a slot it
    /// holds.
    ///
    /// # Safety
    /// Nobody else may read or write the buffer while the slice lives, and the caller makes
    /// no other slice of it: the caller holds its slot, and the other side of the ring (the
    /// daemon, for a host client) follows the ring protocol.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &'a mut [u8] {
        // SAFETY: `len` bytes at `ptr` are mapped for 'a (type invariant); nobody else touches
        // them meanwhile (caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer as vm-memory's volatile slice, for copies to and from guest memory.
    #[inline]
    pub fn volatile_slice(&self) -> VolatileSlice<'a> {
        // SAFETY: `len` bytes at `ptr` stay mapped for 'a (type invariant); VolatileSlice
        // only ever accesses them with volatile or raw copies, never through references.
        unsafe { VolatileSlice::new(self.ptr.as_ptr(), self.len) }
    }
}

fn huge_pages_available() -> bool {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: Copy>(r: &Region, ofs: usize) -> T {
        assert!(ofs + size_of::<T>() <= r.size());
        // SAFETY: bounds checked; test-only read of plain data.
        unsafe { r.map.base().add(ofs).cast::<T>().read_volatile() }
    }

    #[test]
    fn interface_reads_back_through_the_netmap_abi_offsets() {
        let r = Region::new("t", &RegionConfig::for_rings(2, 4, 256, 8)).unwrap();
        let spec = InterfaceSpec {
            name: "vale0:a",
            tx_slots: vec![256, 128],
            rx_slots: vec![256],
            extra_bufs: 8,
            ..Default::default()
        };
        let ifc = r.create_interface(&spec).unwrap();
        let nifp = ifc.nifp_offset() as usize;
        let ni: NetmapIf = read(&r, nifp);
        assert_eq!(&ni.ni_name[..7], b"vale0:a");
        assert_eq!((ni.ni_tx_rings, ni.ni_rx_rings), (2, 1));
        let mut seen = std::collections::HashSet::new();
        for k in 0..3 {
            let ring_ofs: i64 = read(&r, nifp + NETMAP_IF_RING_OFS + 8 * k);
            let ring = (nifp as i64 + ring_ofs) as usize;
            let n = [256, 128, 256][k];
            assert_eq!(read::<u32>(&r, ring + 8), n, "num_slots");
            assert_eq!(read::<u32>(&r, ring + 12), 2048, "nr_buf_size");
            let dir: u16 = read(&r, ring + 18);
            assert_eq!(dir, if k < 2 { NR_TX } else { NR_RX });
            let buf_ofs: i64 = read(&r, ring);
            for i in 0..n as usize {
                let s: NetmapSlot = read(&r, ring + 256 + 16 * i);
                let buf = (ring as i64 + buf_ofs) as usize + s.buf_idx as usize * 2048;
                assert!(s.buf_idx >= 2 && buf + 2048 <= r.size());
                assert!(seen.insert(s.buf_idx), "buffer {} used twice", s.buf_idx);
            }
        }
        // Extra buffers chained from ni_bufs_head.
        let mut b = ni.ni_bufs_head;
        let mut extra = 0;
        while b != 0 {
            assert!(seen.insert(b));
            b = read(&r, r.layout().buf_pool_ofs + b as usize * 2048);
            extra += 1;
        }
        assert_eq!(extra, 8);
    }

    #[test]
    fn restore_rewrites_a_scrambled_layout() {
        let r = Region::new("t", &RegionConfig::for_rings(1, 2, 64, 4)).unwrap();
        let spec = InterfaceSpec {
            name: "vale0:x",
            tx_slots: vec![64],
            rx_slots: vec![64],
            extra_bufs: 4,
            ..Default::default()
        };
        let ifc = r.create_interface(&spec).unwrap();
        let nifp = ifc.nifp_offset() as usize;
        let snapshot = |r: &Region| -> Vec<u8> {
            let mut v = vec![0u8; 4096];
            assert!(r.copy_out(nifp, &mut v));
            for ring in ifc.tx.iter().chain(ifc.rx.iter()) {
                let mut h = vec![0u8; 24];
                assert!(r.copy_out(ring.offset(), &mut h));
                v.extend_from_slice(&h[..8]); // buf_ofs
                v.extend_from_slice(&h[8..20]); // num_slots, nr_buf_size, ringid, dir
            }
            v
        };
        let before = snapshot(&r);
        // What a hostile client can do: garbage over the netmap_if and the ring headers.
        for i in 0..(NETMAP_IF_RING_OFS / 8 + 2) {
            r.write_at(nifp + 8 * i, 0x5c65_ad86_2438_fa20u64 ^ i as u64);
        }
        for ring in ifc.tx.iter().chain(ifc.rx.iter()) {
            r.write_at(ring.offset(), -1i64);
            r.write_at(ring.offset() + 8, u64::MAX);
            r.write_at(ring.offset() + 16, u32::MAX);
        }
        assert_ne!(snapshot(&r), before);
        ifc.restore();
        assert_eq!(snapshot(&r), before);
    }

    #[test]
    fn dropping_an_interface_returns_its_objects() {
        let r = Region::new("t", &RegionConfig::for_rings(1, 2, 64, 0)).unwrap();
        let spec = InterfaceSpec {
            name: "x",
            tx_slots: vec![64],
            rx_slots: vec![64],
            ..Default::default()
        };
        let a = r.create_interface(&spec).unwrap();
        assert!(matches!(
            r.create_interface(&spec),
            Err(MemError::Exhausted { .. })
        ));
        drop(a);
        assert!(r.create_interface(&spec).is_ok());
    }

    #[test]
    fn shared_rx_ring_starts_with_the_peer_buffers() {
        let r = Region::new("p", &RegionConfig::for_rings(2, 4, 64, 0)).unwrap();
        let a = r
            .create_interface(&InterfaceSpec {
                name: "a",
                tx_slots: vec![64],
                rx_slots: vec![64],
                ..Default::default()
            })
            .unwrap();
        let b = r
            .create_interface(&InterfaceSpec {
                name: "b",
                tx_slots: vec![64],
                rx_slots: vec![64],
                rx_shares: vec![Some(&a.tx[0])],
                ..Default::default()
            })
            .unwrap();
        for i in 0..64 {
            assert_eq!(b.rx[0].read_slot(i).buf_idx, a.tx[0].read_slot(i).buf_idx);
        }
    }

    #[test]
    fn buffer_lookup_rejects_indices_past_the_pool() {
        let r = Region::new("b", &RegionConfig::for_rings(1, 1, 64, 0)).unwrap();
        let n = r.layout().num_bufs;
        assert!(r.buf(n - 1).is_some());
        assert!(r.buf(n).is_none());
        assert!(r.buf(u32::MAX).is_none());
    }

    /// SPEC §6: QEMU's ivshmem maps the region as BAR 2, which must be a power of two; its
    /// last page is the directory, and every interface has a device block whose CSB arrays
    /// lie inside the region, away from the pools.
    #[test]
    fn regions_are_powers_of_two_with_an_ivshmem_block_per_interface() {
        for (ifs, rings, slots) in [(1, 2, 64), (2, 8, 1024), (3, 300, 256)] {
            let r = Region::new("ivs", &RegionConfig::for_rings(ifs, rings, slots, 0)).unwrap();
            let l = *r.layout();
            assert!(l.size.is_power_of_two(), "{l:?}");
            let dir: IvshmemDir = read(&r, ivshmem::dir_offset(l.size as u64) as usize);
            assert_eq!(dir, l.ivshmem_dir());
            let pools_end = l.buf_pool_ofs + l.num_bufs as usize * l.buf_size as usize;
            let mut seen = Vec::new();
            for k in 0..ifs {
                let nifp = (l.if_pool_ofs + k as usize * IF_OBJSIZE) as u64;
                let b = r.ivshmem_block(nifp).unwrap();
                assert_eq!(b.peer_id as u32, k + 1);
                assert_eq!(
                    dir.block_offset(l.size as u64, b.peer_id),
                    Ok(b.offset as u64)
                );
                assert!(b.offset >= pools_end && b.ktoa > b.atok, "{b:?}");
                assert!(b.max_rings >= rings.min(PTNET_IVSHMEM_MAX_RINGS));
                let csb = r.csb_at(b.atok, b.ktoa, b.max_rings).unwrap();
                csb.ktoa(b.max_rings - 1).unwrap().kern_write(1, 2);
                seen.push(b.offset);
            }
            seen.dedup();
            assert_eq!(seen.len(), ifs as usize);
            // Not an interface, or past the last one: no block.
            assert!(r.ivshmem_block(1).is_none());
            assert!(
                r.ivshmem_block((ifs as usize * IF_OBJSIZE) as u64)
                    .is_none()
            );
            // CSB arrays must lie inside, aligned.
            assert!(r.csb_at(l.size - 64, 0, 2).is_none());
            assert!(r.csb_at(8, 0, 1).is_none());
            assert!(r.csb_at(0, 64, 0).is_none());
        }
    }

    #[test]
    fn region_ids_come_back_when_regions_go() {
        // More regions, one after the other, than there are ids.
        for _ in 0..70_000 {
            let r = Region::new("ids", &RegionConfig::for_rings(1, 1, 64, 0)).unwrap();
            assert_ne!(r.id(), 0);
        }
    }

    #[test]
    fn absurd_buffer_counts_are_refused_not_wrapped() {
        let c = RegionConfig::for_rings(1, 2, 1024, u32::MAX - 1000);
        assert_eq!(c.num_bufs, u32::MAX);
        assert!(matches!(Region::new("big", &c), Err(MemError::Config(_))));
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut c = RegionConfig::for_rings(1, 1, 64, 0);
        c.buf_size = 100;
        assert!(matches!(Region::new("c", &c), Err(MemError::Config(_))));
        c = RegionConfig::for_rings(1, 1, 1, 0);
        assert!(Region::new("c", &c).is_err());
    }
}
