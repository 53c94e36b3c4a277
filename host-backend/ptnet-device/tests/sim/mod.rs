//! A vhost-user *frontend simulator*: QEMU and a ptnet guest driver in one test process.
//!
//! * QEMU's part: guest RAM in memfds shared with `SET_MEM_TABLE` (low RAM at GPA 0 for the
//!   virtqueues and event buffers, high RAM at 4 GiB for the CSB), the vhost start sequence
//!   QEMU's `vhost_dev_start` sends, config writes as QEMU forwards them (the whole 64 bytes
//!   on each 32-bit guest write), kick and call eventfds, and the backend request channel on
//!   which it validates and "maps" `SHMEM_MAP` like the patched QEMU does.
//! * The guest driver's part: it reads and validates the config, places the CSB in its RAM,
//!   posts event buffers on every queue, starts the device, waits for `MEM_READY` and then
//!   drives the rings through the mapped region and its CSB with `ptnet_client::Port` (the
//!   same protocol code a guest driver follows).
//! * Interrupts: a virtual interrupt controller thread plays Linux's `vring_interrupt()`: a
//!   call-eventfd signal that completed no event buffer is dropped, exactly as Linux ignores
//!   it; one that did reposts the buffers and only then wakes the "guest" (its own eventfds,
//!   on which `Port::wait` sleeps). A device that raised an interrupt without completing a
//!   buffer would leave the guest asleep.

#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ptnet_client::Port;
use ptnet_client::proto::AttachInfo;
use ptnet_spec::device::{
    PTNET_CONFIG_CSB_ATOK_OFFSET, PTNET_F_STATUS, PTNET_S_MEM_READY, PtnetConfig,
    VIRTIO_F_VERSION_1,
};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserMMap, VhostUserMMapFlags,
    VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{
    Frontend, FrontendReqHandler, HandlerResult, VhostUserFrontend, VhostUserFrontendReqHandler,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Low guest RAM (virtqueues, event buffers): GPA 0, 4 MiB.
pub const LOW_SIZE: usize = 4 << 20;
/// High guest RAM (the CSB): GPA 4 GiB, 64 KiB.
pub const HIGH_GPA: u64 = 1 << 32;
/// Size of high RAM.
pub const HIGH_SIZE: usize = 64 << 10;
/// Offset of the ktoa array in high RAM (the atok array is at its start).
pub const KTOA_OFFSET: u64 = 32 << 10;
/// Virtqueue size (QEMU's default `vq_size`).
pub const QSIZE: u16 = 64;
/// Where queue `i`'s structures start in low RAM.
pub fn queue_base(i: usize) -> u64 {
    0x10000 + i as u64 * 0x4000
}
/// `VRING_DESC_F_WRITE`.
const VRING_DESC_F_WRITE: u16 = 2;
/// Page size of the patched QEMU's checks.
const PAGE: u64 = 4096;

/// Guest RAM: a memfd mapped in this process, at a guest-physical address.
pub struct GuestRam {
    pub file: File,
    base: NonNull<u8>,
    pub size: usize,
    pub gpa: u64,
}

// SAFETY: plain shared memory; every access below is volatile or atomic.
unsafe impl Send for GuestRam {}
// SAFETY: as above.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    pub fn new(name: &str, gpa: u64, size: usize) -> Self {
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: a valid NUL-terminated name; a new descriptor or -1.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: a fresh descriptor nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(size as u64).unwrap();
        Self::from_file(file, gpa, size)
    }

    /// Maps `size` bytes of `file` as guest memory at `gpa`.
    pub fn from_file(file: File, gpa: u64, size: usize) -> Self {
        // SAFETY: a new shared mapping of a file we hold, at an address of the kernel's choice.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        GuestRam {
            file,
            base: NonNull::new(p.cast()).unwrap(),
            size,
            gpa,
        }
    }

    /// The host (frontend process) address of `gpa`.
    pub fn va(&self, gpa: u64) -> u64 {
        self.ptr(gpa, 1) as u64
    }

    fn ptr(&self, gpa: u64, len: usize) -> *mut u8 {
        let off = gpa.checked_sub(self.gpa).expect("below this RAM") as usize;
        assert!(off + len <= self.size, "{gpa:#x} outside this RAM");
        // SAFETY: in bounds, checked above.
        unsafe { self.base.as_ptr().add(off) }
    }

    pub fn write<T: Copy>(&self, gpa: u64, v: T) {
        // SAFETY: in bounds; guest RAM is plain memory the backend may access concurrently,
        // hence volatile.
        unsafe { self.ptr(gpa, size_of::<T>()).cast::<T>().write_volatile(v) }
    }

    pub fn read<T: Copy>(&self, gpa: u64) -> T {
        // SAFETY: as in `write`.
        unsafe { self.ptr(gpa, size_of::<T>()).cast::<T>().read_volatile() }
    }

    pub fn u16_at(&self, gpa: u64) -> &AtomicU16 {
        assert_eq!(gpa % 2, 0);
        // SAFETY: in bounds and aligned; the memory lives as long as `self`; the other side
        // accesses it atomically too.
        unsafe { &*self.ptr(gpa, 2).cast::<AtomicU16>() }
    }

    pub fn fill(&self, byte: u8) {
        // SAFETY: the whole mapping.
        unsafe { std::ptr::write_bytes(self.base.as_ptr(), byte, self.size) }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

fn dup(fd: RawFd) -> File {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    assert!(n >= 0, "dup");
    // SAFETY: fresh descriptor.
    unsafe { File::from_raw_fd(n) }
}

/// What the frontend received on the backend channel.
#[derive(Default)]
pub struct ShmInner {
    /// The current mapping of region 0: the fd (duplicated) and its length.
    pub map: Option<(File, u64)>,
    pub maps: u32,
    pub unmaps: u32,
    pub refused: u32,
    /// The size `GET_SHMEM_CONFIG` announced for region 0.
    pub region_size: u64,
}

/// The backend request channel's handler: validates `SHMEM_MAP` like the patched QEMU.
#[derive(Default)]
pub struct Shm {
    pub inner: Mutex<ShmInner>,
    /// While set, a `SHMEM_MAP` is held unanswered (a frontend that stalls or is stopped).
    pub stall: std::sync::atomic::AtomicBool,
}

impl VhostUserFrontendReqHandler for Shm {
    fn shmem_map(&self, req: &VhostUserMMap, fd: &dyn AsRawFd) -> HandlerResult<u64> {
        while self.stall.load(std::sync::atomic::Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
        let mut s = self.inner.lock().unwrap();
        let (shmid, fd_offset, shm_offset, len, flags) =
            (req.shmid, req.fd_offset, req.shm_offset, req.len, req.flags);
        let file = dup(fd.as_raw_fd());
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let ok = shmid == 0
            && len > 0
            && fd_offset % PAGE == 0
            && shm_offset % PAGE == 0
            && len % PAGE == 0
            && shm_offset
                .checked_add(len)
                .is_some_and(|e| e <= s.region_size)
            && fd_offset.checked_add(len).is_some_and(|e| e <= file_len)
            && flags & !VhostUserMMapFlags::WRITABLE.bits() == 0
            && s.map.is_none();
        if !ok {
            s.refused += 1;
            return Err(io::Error::other("SHMEM_MAP refused"));
        }
        // The guest maps the region at offset 0 of its BAR, whole: what a driver relies on.
        assert_eq!(
            (fd_offset, shm_offset),
            (0, 0),
            "region 0 must start at offset 0"
        );
        assert_ne!(
            flags & VhostUserMMapFlags::WRITABLE.bits(),
            0,
            "rings need writes"
        );
        s.map = Some((file, len));
        s.maps += 1;
        Ok(0)
    }

    fn shmem_unmap(&self, req: &VhostUserMMap) -> HandlerResult<u64> {
        let mut s = self.inner.lock().unwrap();
        let (shm_offset, len) = (req.shm_offset, req.len);
        match &s.map {
            Some((_, l)) if shm_offset == 0 && len == *l => {
                s.map = None;
                s.unmaps += 1;
                Ok(0)
            }
            _ => {
                s.refused += 1;
                Err(io::Error::other("no such mapping"))
            }
        }
    }
}

/// Counters of the virtual interrupt controller.
#[derive(Debug, Default)]
pub struct VirqStats {
    /// Event buffers the device completed (seen in the used rings).
    pub completed: AtomicU64,
    /// Call-eventfd signals that completed no buffer (Linux: IRQ_NONE, dropped).
    pub spurious: AtomicU64,
    /// Interrupts delivered to the guest.
    pub delivered: AtomicU64,
    /// Malformed used entries (id out of range, non-zero length).
    pub bogus: AtomicU64,
}

struct VirqQueue {
    avail: u64,
    used: u64,
    last_used: u16,
    avail_idx: u16,
}

/// The virtual interrupt controller thread (Linux's `vring_interrupt()` for every queue).
pub struct Virq {
    pub stats: Arc<VirqStats>,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Virq {
    fn start(ram: Arc<GuestRam>, calls: Vec<EventFd>, guest: Vec<EventFd>) -> Self {
        let stats = Arc::new(VirqStats::default());
        let stop = EventFd::new(EFD_NONBLOCK).unwrap();
        let stop2 = stop.try_clone().unwrap();
        let st = Arc::clone(&stats);
        let thread = thread::Builder::new()
            .name("sim-virq".into())
            .spawn(move || virq_loop(&ram, &calls, &guest, &stop2, &st))
            .unwrap();
        Virq {
            stats,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Virq {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn virq_loop(ram: &GuestRam, calls: &[EventFd], guest: &[EventFd], stop: &EventFd, st: &VirqStats) {
    let epoll = Epoll::new().unwrap();
    for (i, c) in calls.iter().enumerate() {
        epoll
            .ctl(
                ControlOperation::Add,
                c.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )
            .unwrap();
    }
    epoll
        .ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, u64::MAX),
        )
        .unwrap();
    let mut qs: Vec<VirqQueue> = (0..calls.len())
        .map(|i| VirqQueue {
            avail: queue_base(i) + 0x800,
            used: queue_base(i) + 0x1000,
            last_used: 0,
            avail_idx: QSIZE,
        })
        .collect();
    let mut evs = [EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut evs) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("virq epoll: {e}"),
        };
        for ev in &evs[..n] {
            let i = ev.data() as usize;
            if i == u64::MAX as usize {
                return;
            }
            let _ = calls[i].read();
            let q = &mut qs[i];
            let used = ram.u16_at(q.used + 2).load(Ordering::Acquire);
            let new = used.wrapping_sub(q.last_used);
            if new == 0 {
                st.spurious.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if new > QSIZE {
                st.bogus.fetch_add(1, Ordering::Relaxed);
            }
            for k in 0..new.min(QSIZE) {
                let slot = u64::from(q.last_used.wrapping_add(k) % QSIZE);
                let id: u32 = ram.read(q.used + 4 + 8 * slot);
                let len: u32 = ram.read(q.used + 8 + 8 * slot);
                if id >= u32::from(QSIZE) || len != 0 {
                    st.bogus.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Repost the buffer, as the driver's interrupt handler does.
                ram.write(q.avail + 4 + 2 * u64::from(q.avail_idx % QSIZE), id as u16);
                q.avail_idx = q.avail_idx.wrapping_add(1);
            }
            ram.u16_at(q.avail + 2)
                .store(q.avail_idx, Ordering::Release);
            q.last_used = used;
            st.completed.fetch_add(u64::from(new), Ordering::Relaxed);
            st.delivered.fetch_add(1, Ordering::Relaxed);
            let _ = guest[i].write(1);
        }
    }
}

/// What a simulated VM does differently (the hostile tests' knobs).
#[derive(Debug, Clone, Default)]
pub struct Quirks {
    /// Post no event buffers.
    pub no_event_buffers: bool,
}

/// QEMU plus a guest driver, connected to one ptnet vhost-user socket.
pub struct Vm {
    pub fe: Frontend,
    pub low: Arc<GuestRam>,
    pub high: GuestRam,
    pub cfg: PtnetConfig,
    pub nq: usize,
    pub kicks: Vec<EventFd>,
    pub calls: Vec<EventFd>,
    pub shm: Arc<Shm>,
    /// QEMU's copy of the config space (refreshed by every read, merged into every write).
    pub config_cache: [u8; 64],
    chan_fd: RawFd,
    chan_thread: Option<JoinHandle<()>>,
    pub quirks: Quirks,
    /// The features the device offered.
    pub offered: u64,
    /// The features the simulated driver acks at start ([`DRIVER_FEATURES`] unless a test
    /// changes them, e.g. to add `PTNET_F_VNET_HDR`).
    pub driver_features: u64,
}

/// The protocol features the simulated QEMU wants.
pub fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::SHMEM
}

/// The virtio features the simulated driver acks.
pub const DRIVER_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << PTNET_F_STATUS)
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

impl Vm {
    /// Connects and negotiates like QEMU's realize: features, protocol features, queue
    /// number, backend channel, shared memory config, config space, memory table.
    pub fn connect(path: &Path) -> Self {
        let mut fe = Frontend::connect(path, 128).expect("connect");
        fe.set_owner().unwrap();
        let features = fe.get_features().unwrap();
        assert_eq!(
            features & DRIVER_FEATURES,
            DRIVER_FEATURES,
            "VERSION_1, PTNET_F_STATUS and PROTOCOL_FEATURES offered"
        );
        let offered = fe.get_protocol_features().unwrap();
        assert!(offered.contains(wanted_protocol_features()), "{offered:?}");
        fe.set_protocol_features(wanted_protocol_features())
            .unwrap();
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        let nq = fe.get_queue_num().unwrap() as usize;

        let shm = Arc::new(Shm::default());
        let mut handler = FrontendReqHandler::new(Arc::clone(&shm)).unwrap();
        handler.set_reply_ack_flag(true);
        let chan_fd = handler.as_raw_fd();
        fe.set_backend_request_fd(&RawFdRef(handler.get_tx_raw_fd()))
            .unwrap();
        let chan_thread = thread::Builder::new()
            .name("sim-backend-ch".into())
            .spawn(move || {
                loop {
                    match handler.handle_request() {
                        Ok(_) => {}
                        // A refused request was answered with an error; keep serving.
                        Err(vhost::vhost_user::Error::ReqHandlerError(_)) => {}
                        Err(_) => return,
                    }
                }
            })
            .unwrap();

        let sc = fe.get_shmem_config().unwrap();
        assert_eq!(sc.nregions, 1);
        shm.inner.lock().unwrap().region_size = sc.memory_sizes[0];

        let low = Arc::new(GuestRam::new("sim-low-ram", 0, LOW_SIZE));
        let high = GuestRam::new("sim-high-ram", HIGH_GPA, HIGH_SIZE);
        let mut vm = Vm {
            fe,
            low,
            high,
            cfg: PtnetConfig::default(),
            nq,
            kicks: (0..nq)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            calls: (0..nq)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            shm,
            config_cache: [0; 64],
            chan_fd,
            chan_thread: Some(chan_thread),
            quirks: Quirks::default(),
            offered: features,
            driver_features: DRIVER_FEATURES,
        };
        vm.cfg = vm.read_config();
        vm.cfg.validate_geometry().expect("the device's geometry");
        assert_eq!(vm.cfg.num_rings() as usize, nq, "one queue per ring");
        assert!(
            vm.shm_size() >= vm.cfg.mem_size,
            "region 0 holds the allocator"
        );
        vm.set_mem_table();
        vm
    }

    /// The size `GET_SHMEM_CONFIG` announced.
    pub fn shm_size(&self) -> u64 {
        self.shm.inner.lock().unwrap().region_size
    }

    pub fn set_mem_table(&self) {
        let regions = [
            VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: LOW_SIZE as u64,
                userspace_addr: self.low.va(0),
                mmap_offset: 0,
                mmap_handle: self.low.file.as_raw_fd(),
            },
            VhostUserMemoryRegionInfo {
                guest_phys_addr: HIGH_GPA,
                memory_size: HIGH_SIZE as u64,
                userspace_addr: self.high.va(HIGH_GPA),
                mmap_offset: 0,
                mmap_handle: self.high.file.as_raw_fd(),
            },
        ];
        self.fe.set_mem_table(&regions).unwrap();
    }

    /// A guest read of the config space (QEMU refreshes its copy with `GET_CONFIG`).
    pub fn read_config(&mut self) -> PtnetConfig {
        let (_, bytes) = self
            .fe
            .get_config(0, 64, VhostUserConfigFlags::WRITABLE, &[0; 64])
            .expect("GET_CONFIG");
        self.config_cache.copy_from_slice(&bytes);
        PtnetConfig::from_le_bytes(&self.config_cache)
    }

    /// A 32-bit guest write to the config space at `offset`, forwarded as QEMU does: the
    /// whole space, with the written bytes merged into its copy.
    pub fn write_config_u32(&mut self, offset: usize, v: u32) -> vhost::Result<()> {
        self.config_cache[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
        let c = self.config_cache;
        self.fe.set_config(0, VhostUserConfigFlags::WRITABLE, &c)
    }

    /// The driver writes the CSB addresses (low words first, as Linux does).
    pub fn write_csb(&mut self, atok: u64, ktoa: u64) {
        let o = PTNET_CONFIG_CSB_ATOK_OFFSET;
        for (i, a) in [atok, ktoa].into_iter().enumerate() {
            self.write_config_u32(o + 8 * i, a as u32).unwrap();
            self.write_config_u32(o + 8 * i + 4, (a >> 32) as u32)
                .unwrap();
        }
    }

    /// Lays out queue `i` in low RAM and posts its event buffers.
    fn layout_queue(&self, i: usize) {
        let b = queue_base(i);
        let (desc, avail, used, bufs) = (b, b + 0x800, b + 0x1000, b + 0x2000);
        for j in 0..u64::from(QSIZE) {
            self.low.write(desc + 16 * j, bufs + 8 * j); // addr
            self.low.write(desc + 16 * j + 8, 8u32); // len
            self.low.write(desc + 16 * j + 12, VRING_DESC_F_WRITE); // flags
            self.low.write(desc + 16 * j + 14, 0u16); // next
            self.low.write(avail + 4 + 2 * j, j as u16);
        }
        self.low.u16_at(avail).store(0, Ordering::Relaxed);
        let posted = if self.quirks.no_event_buffers {
            0
        } else {
            QSIZE
        };
        self.low.u16_at(avail + 2).store(posted, Ordering::Release);
        self.low.u16_at(used).store(0, Ordering::Relaxed);
        self.low.u16_at(used + 2).store(0, Ordering::Relaxed);
    }

    /// The vring addresses of queue `i` as the frontend sends them (its own virtual
    /// addresses).
    pub fn vring_config(&self, i: usize) -> VringConfigData {
        let b = queue_base(i);
        VringConfigData {
            queue_max_size: QSIZE,
            queue_size: QSIZE,
            flags: 0,
            desc_table_addr: self.low.va(b),
            used_ring_addr: self.low.va(b + 0x1000),
            avail_ring_addr: self.low.va(b + 0x800),
            log_addr: None,
        }
    }

    /// QEMU's `vhost_dev_start` after DRIVER_OK: features, then every queue's size, base,
    /// addresses, kick and call, then enable them.
    pub fn start_queues(&mut self) {
        self.start_queues_with(|_, _| {}).unwrap();
    }

    /// [`Vm::start_queues`], with each queue's addresses passed through `edit` first.
    pub fn start_queues_with(
        &mut self,
        edit: impl Fn(usize, &mut VringConfigData),
    ) -> vhost::Result<()> {
        self.fe.set_features(self.driver_features)?;
        for i in 0..self.nq {
            self.layout_queue(i);
            self.fe.set_vring_num(i, QSIZE)?;
            self.fe.set_vring_base(i, 0)?;
            let mut c = self.vring_config(i);
            edit(i, &mut c);
            self.fe.set_vring_addr(i, &c)?;
            self.fe.set_vring_kick(i, &self.kicks[i])?;
            self.fe.set_vring_call(i, &self.calls[i])?;
        }
        for i in 0..self.nq {
            self.fe.set_vring_enable(i, true)?;
        }
        Ok(())
    }

    /// What QEMU does once it mapped region 0 into the BAR at `gpa`: the BAR becomes guest
    /// memory, and the backend hears about it with `ADD_MEM_REG`. Returns the local mapping.
    pub fn add_bar_region(&mut self, gpa: u64) -> GuestRam {
        let (file, len) = {
            let s = self.shm.inner.lock().unwrap();
            let (f, l) = s.map.as_ref().expect("region 0 mapped");
            (f.try_clone().unwrap(), *l as usize)
        };
        let bar = GuestRam::from_file(file, gpa, len);
        self.fe
            .add_mem_region(&VhostUserMemoryRegionInfo {
                guest_phys_addr: gpa,
                memory_size: len as u64,
                userspace_addr: bar.va(gpa),
                mmap_offset: 0,
                mmap_handle: bar.file.as_raw_fd(),
            })
            .expect("ADD_MEM_REG");
        bar
    }

    /// QEMU's `vhost_dev_stop`: `GET_VRING_BASE` on every queue.
    pub fn stop_queues(&mut self) {
        for i in 0..self.nq {
            self.fe.get_vring_base(i).unwrap();
        }
    }

    /// Polls `status` until `MEM_READY` (the driver's wait after DRIVER_OK).
    pub fn wait_mem_ready(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.read_config().status & PTNET_S_MEM_READY != 0 {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// The whole driver start: CSB addresses, queues with event buffers, DRIVER_OK, wait for
    /// `MEM_READY`, then the rings through the mapped region. Panics if the device does not
    /// come up.
    pub fn driver_start(&mut self) -> GuestPort {
        self.high.fill(0);
        self.write_csb(HIGH_GPA, HIGH_GPA + KTOA_OFFSET);
        self.start_queues();
        assert!(
            self.wait_mem_ready(Duration::from_secs(10)),
            "the device never set MEM_READY"
        );
        self.guest_port()
    }

    /// The guest's netmap port over the mapped region and its CSB, with the interrupt
    /// controller in front of its interrupt eventfds.
    pub fn guest_port(&mut self) -> GuestPort {
        let cfg = self.read_config();
        let (region, len) = {
            let s = self.shm.inner.lock().unwrap();
            let (f, l) = s.map.as_ref().expect("MEM_READY without a mapping");
            (f.try_clone().unwrap(), *l)
        };
        let guest_irqs: Vec<EventFd> = (0..self.nq)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let info = AttachInfo {
            port: "guest".into(),
            region_size: len,
            nifp_offset: cfg.nifp_offset,
            mem_id: cfg.mem_id,
            num_tx_rings: cfg.num_tx_rings,
            num_rx_rings: cfg.num_rx_rings,
            num_tx_slots: cfg.num_tx_slots,
            num_rx_slots: cfg.num_rx_slots,
            buf_size: cfg.buf_size,
            csb_size: HIGH_SIZE as u64,
            csb_ktoa_offset: KTOA_OFFSET,
            busy_poll: false,
        };
        let mut files = vec![region, self.high.file.try_clone().unwrap()];
        files.extend(self.kicks.iter().map(|k| dup(k.as_raw_fd())));
        files.extend(guest_irqs.iter().map(|k| dup(k.as_raw_fd())));
        let port = Port::from_parts(info, files).expect("the guest's view of the port");
        let virq = Virq::start(
            Arc::clone(&self.low),
            self.calls.iter().map(|c| c.try_clone().unwrap()).collect(),
            guest_irqs,
        );
        GuestPort { port, virq }
    }
}

/// A borrowed raw fd for the `vhost` API.
struct RawFdRef(RawFd);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SAFETY: shutting down our end of the backend channel wakes its serving thread.
        unsafe { libc::shutdown(self.chan_fd, libc::SHUT_RDWR) };
        if let Some(t) = self.chan_thread.take() {
            let _ = t.join();
        }
    }
}

/// The guest's port and its interrupt controller.
pub struct GuestPort {
    pub port: Port,
    pub virq: Virq,
}

/// Polls `f` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    f()
}

/// A unique socket path for a test.
pub fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ptnet-device-{}-{name}.sock", std::process::id()))
}

/// Starts logging once (RUST_LOG=debug shows the device's life cycle).
pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// An Ethernet frame from `src` to `dst` carrying `seq`, of `len` bytes.
pub fn frame(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> u16 {
    buf[..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&[0x88, 0xb5]);
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    for (k, b) in buf[22..len].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(k as u8);
    }
    len as u16
}

/// Checks a frame made by [`frame`].
pub fn check_frame(buf: &[u8], seq: u64, len: usize) {
    assert_eq!(buf.len(), len, "frame {seq} length");
    let got = u64::from_le_bytes(buf[14..22].try_into().unwrap());
    assert_eq!(got, seq, "frames out of order");
    for (k, b) in buf[22..].iter().enumerate() {
        assert_eq!(
            *b,
            (seq as u8).wrapping_add(k as u8),
            "payload of frame {seq} byte {k}"
        );
    }
}

/// Result of an exchange.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exchange {
    /// Waits of the sender and receiver that timed out with nothing ready (a lost interrupt).
    pub timeouts: u32,
    /// Frames from other senders the receiver skipped.
    pub foreign: u64,
}

/// Whether `buf` is a frame of [`frame`] from `src`.
fn ours(buf: &[u8], src: [u8; 6]) -> bool {
    buf.len() >= 22 && buf[6..12] == src && buf[12..14] == [0x88, 0xb5]
}

/// Waits (up to 2 s) and counts a wait that slept the whole time: with a peer that is
/// sending, that is a lost interrupt. (A wait may return early without its rings being ready:
/// every ring's interrupt wakes it.)
fn timed_wait(p: &mut Port, want: ptnet_client::Want, ex: &mut Exchange) {
    let t = Instant::now();
    let timeout = Duration::from_secs(2);
    if !p.wait(want, Some(timeout)).unwrap() && t.elapsed() >= timeout {
        ex.timeouts += 1;
    }
}

/// Sends `count` frames from `tx` to `rx` in bursts the receiver's ring can hold (VALE drops
/// when a destination is full), each burst received completely before the next, both sides
/// sleeping on interrupts when they must; checks every frame's payload.
pub fn exchange(
    tx: &mut Port,
    rx: &mut Port,
    dst: [u8; 6],
    src: [u8; 6],
    count: u64,
    len: usize,
) -> Exchange {
    use ptnet_client::Want;
    let burst = u64::from(rx.info().num_rx_slots - 1).min(200);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut sent, mut got) = (0u64, 0u64);
    let mut ex = Exchange::default();
    // Whatever an earlier test step left in the receiver's ring is not ours.
    rx.rxsync(0);
    ex.foreign += u64::from(rx.rx_batch(0, u32::MAX, |_, _| {}));
    rx.rxsync(0);
    while got < count {
        let target = (sent + burst).min(count);
        while sent < target {
            assert!(Instant::now() < deadline, "stalled sending at {sent}");
            let n = tx.tx_batch(0, (target - sent) as u32, |i, buf| {
                frame(buf, dst, src, sent + u64::from(i), len)
            });
            sent += u64::from(n);
            tx.txsync(0);
            if sent < target && tx.tx_space(0) == 0 {
                timed_wait(tx, Want::Tx, &mut ex);
            }
        }
        while got < sent {
            assert!(
                Instant::now() < deadline,
                "stalled: sent {sent}, received {got}"
            );
            rx.rxsync(0);
            let n = rx.rx_batch(0, u32::MAX, |buf, _| {
                if ours(buf, src) {
                    check_frame(buf, got, len);
                    got += 1;
                } else {
                    ex.foreign += 1;
                }
            });
            if n > 0 {
                rx.rxsync(0);
            } else {
                timed_wait(rx, Want::Rx, &mut ex);
            }
        }
    }
    ex
}

/// A small deterministic random generator (xorshift64*) for the hostile tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
