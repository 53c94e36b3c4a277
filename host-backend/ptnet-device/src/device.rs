//! One frontend connection's ptnet device: the vhost-user backend callbacks, and the device's
//! life cycle (SPEC.md §3.5).
//!
//! * **Start**, when every queue has a kick and a call eventfd, is ready and enabled,
//!   `VIRTIO_F_VERSION_1` was acked, the backend request channel exists and the CSB addresses
//!   the driver wrote are valid: the CSB is placed in guest memory, the port's rings are bound
//!   to it with one [`VirtqueueInterrupt`] per ring, and the port's sync loop (`kloop`) runs on
//!   duplicates of the queues' kick eventfds. All of that happens synchronously in the
//!   request handler that completed the conditions. Then the *mapper* thread sends
//!   `SHMEM_MAP` of the port's memfd as region 0 and, once the frontend acknowledged it, sets
//!   `status = MEM_READY | LINK_UP`.
//! * **Stop**, on `GET_VRING_BASE`, a disabled or replaced queue, `RESET_DEVICE` or a
//!   disconnect: synchronously, before the handler replies (the guest may reuse its memory
//!   right after), the interrupts are deactivated, the sync loop stopped, the rings unbound,
//!   the status cleared and the CSB addresses forgotten; the mapper then sends `SHMEM_UNMAP`.
//!
//! Backend requests never leave a request handler: QEMU waits for the reply to its own
//! request without reading the backend channel, so a `SHMEM_MAP` sent from a handler would
//! deadlock both. The mapper never holds the device lock while it talks to the frontend, and
//! the handlers never wait for the mapper.
//!
//! The crate's own vring worker threads are not used (`queues_per_thread` is empty): the
//! port's sync loop is the only reader of the kick eventfds. Two readers of one eventfd lose
//! wake-ups (whoever reads first clears the counter), the sync loop must own its thread for
//! its lingering and busy-poll modes, and a VM then runs exactly the loop a host client runs.
//!
//! `vhost` 0.18 cannot send `CONFIG_CHANGE_MSG` (its `Backend` leaves the message
//! unimplemented and keeps the socket private), so the driver polls `status` after DRIVER_OK,
//! as SPEC.md §3.5 allows; every guest read of the config space reaches `GET_CONFIG`.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;

use ptnet_datapath::kloop::{self, KloopHandle, Mode};
use ptnet_datapath::kring::ClientBinding;
use ptnet_datapath::kring::Interrupt;
use ptnet_datapath::port::SyncPort;
use ptnet_spec::device::{
    ConfigError, PTNET_F_STATUS, PTNET_F_VNET_HDR, PTNET_SHMID_ALLOCATOR, PTNET_VNET_HDR_LEN,
    VIRTIO_F_VERSION_1,
};
use vhost::vhost_user::message::{
    VhostUserMMap, VhostUserMMapFlags, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use ptnet_vhost_user::guest::{self, CsbError, FileId, GuestMem, MemWatch};
use ptnet_vhost_user::relay::{BACKEND_REQ_TIMEOUT, BackendChannel, Watchdog};
use ptnet_vhost_user::vring::{self, Change, HookedVring, VringHook};
use ptnet_vhost_user::{PortDevice, thread_name};

use crate::config::{DeviceConfig, STATUS_RUNNING};
use crate::irq::{IrqStats, VirtqueueInterrupt};

/// Counters of one served port, across frontend connections.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Frontend connections accepted.
    pub connections: AtomicU64,
    /// Device starts (sync loop running).
    pub starts: AtomicU64,
    /// Device stops.
    pub stops: AtomicU64,
    /// Starts refused (invalid CSB, broken queue, ...).
    pub refused: AtomicU64,
    /// `SHMEM_MAP` requests the frontend accepted.
    pub maps: AtomicU64,
    /// `SHMEM_MAP` requests that failed.
    pub map_failures: AtomicU64,
    /// Interrupts and event buffers.
    pub irq: Arc<IrqStats>,
    /// Whether the device runs now.
    pub running: AtomicBool,
    /// Whether region 0 is mapped and `MEM_READY` set now.
    pub mem_ready: AtomicBool,
    /// Whether the running device carries the virtio-net header (`PTNET_F_VNET_HDR`).
    pub vnet_hdr: AtomicBool,
}

/// A point-in-time copy of [`DeviceStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frontend connections accepted.
    pub connections: u64,
    /// Device starts.
    pub starts: u64,
    /// Device stops.
    pub stops: u64,
    /// Starts refused.
    pub refused: u64,
    /// Region 0 mappings accepted by the frontend.
    pub maps: u64,
    /// Region 0 mappings refused or failed.
    pub map_failures: u64,
    /// Interrupts raised.
    pub irqs_raised: u64,
    /// Event buffers completed.
    pub event_buffers: u64,
    /// Interrupts raised without an event buffer.
    pub irqs_without_buffer: u64,
    /// Running now.
    pub running: bool,
    /// Region 0 mapped and `MEM_READY` now.
    pub mem_ready: bool,
    /// The running device carries the virtio-net header.
    pub vnet_hdr: bool,
}

impl DeviceStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: r(&self.connections),
            starts: r(&self.starts),
            stops: r(&self.stops),
            refused: r(&self.refused),
            maps: r(&self.maps),
            map_failures: r(&self.map_failures),
            irqs_raised: r(&self.irq.raised),
            event_buffers: r(&self.irq.completed),
            irqs_without_buffer: r(&self.irq.no_buffer),
            running: self.running.load(Ordering::Relaxed),
            mem_ready: self.mem_ready.load(Ordering::Relaxed),
            vnet_hdr: self.vnet_hdr.load(Ordering::Relaxed),
        }
    }
}

/// What the device offers and how it runs.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// MAC address in the config space.
    pub mac: [u8; 6],
    /// Sync loop mode.
    pub mode: Mode,
    /// Largest virtqueue the frontend may configure (a power of two).
    pub max_queue_size: u16,
    /// Measurement only: let vhost-user-backend's vring worker read the kicks and forward
    /// each to the sync loop through an eventfd of ours (the design this crate rejects; see
    /// the module documentation and `tests/kick_path.rs`). At most 64 queues.
    pub kicks_via_worker: bool,
    /// Tests only: what the frontend reads of the config space is passed through this first
    /// (a device that lies about its geometry, for the guest driver's hostile-device test).
    pub tamper: Option<fn(&mut ptnet_spec::device::PtnetConfig)>,
}

/// Why the device did not start (it starts at the next change that completes its set-up).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The driver must speak virtio 1.
    #[error("the frontend did not ack VIRTIO_F_VERSION_1")]
    NoVersion1,
    /// Region 0 can only be mapped through the backend request channel.
    #[error("no backend request channel (BACKEND_REQ): region 0 cannot be mapped")]
    NoBackendChannel,
    /// The CSB addresses the driver wrote are unusable.
    #[error("CSB addresses atok {atok:#x} ktoa {ktoa:#x}: {why}")]
    CsbAddresses {
        /// `csb_atok_gpa`.
        atok: u64,
        /// `csb_ktoa_gpa`.
        ktoa: u64,
        /// What is wrong with them.
        why: ConfigError,
    },
    /// The CSB cannot be placed in guest memory.
    #[error(transparent)]
    CsbPlacement(#[from] CsbError),
    /// A virtqueue's rings are not in guest RAM.
    #[error("virtqueue {0} lies outside guest RAM")]
    QueueOutside(usize),
    /// A virtqueue has no kick eventfd.
    #[error("virtqueue {0} has no kick eventfd")]
    NoKick(usize),
    /// A virtqueue's kick eventfd cannot be duplicated.
    #[error("virtqueue {queue} kick eventfd")]
    Kick {
        /// The queue.
        queue: usize,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// An eventfd of ours cannot be created.
    #[error("eventfd")]
    Eventfd(#[source] io::Error),
    /// The port refused the binding (or it does not cover every ring).
    #[error("the port refused the binding")]
    Binding,
    /// The port refused the virtio-net header length.
    #[error("virtio-net header length {len}: {why}")]
    VnetHdr {
        /// The length.
        len: u32,
        /// The port's reason.
        why: &'static str,
    },
    /// The sync loop thread did not start.
    #[error("cannot start the sync loop")]
    SyncLoop(#[source] io::Error),
}

/// The running part of a started device.
struct Running {
    kloop: KloopHandle,
    irqs: Vec<Arc<VirtqueueInterrupt>>,
}

/// Work for the mapper thread.
enum Job {
    /// Map region 0 for start number `generation`.
    Map { generation: u64 },
    /// Unmap region 0.
    Unmap,
}

struct State {
    config: DeviceConfig,
    acked_features: u64,
    vrings: Vec<HookedVring>,
    backend_req: Option<Backend>,
    running: Option<Running>,
    /// Bumped at every start and stop: a mapping acknowledged for an older generation is
    /// stale.
    generation: u64,
    /// Region 0 is mapped (acknowledged) for the current generation.
    mapped: bool,
    /// The last reason a start was refused, to log each distinct reason once.
    last_refusal: Option<String>,
    /// `SET_CONFIG` requests outside the config space (rate-limits their log).
    bad_config_writes: u64,
    gone: bool,
}

/// The ptnet device of one frontend connection.
pub struct Device {
    port: Arc<dyn SyncPort>,
    name: String,
    opts: DeviceOptions,
    region_file: File,
    region_id: Option<FileId>,
    region_size: u64,
    nrings: u32,
    /// The port takes a virtio-net header: the device offers `PTNET_F_VNET_HDR`.
    vnet_hdr_ok: bool,
    mem: GuestMem,
    /// Watches every memory table the frontend sends (see [`MemWatch`]).
    watch: MemWatch,
    stats: Arc<DeviceStats>,
    state: Mutex<State>,
    mapper: Mutex<Option<Sender<Job>>>,
    /// With `kicks_via_worker`: the eventfds the worker forwards kicks to, per queue.
    forward: Mutex<Vec<Arc<EventFd>>>,
    /// With `kicks_via_worker`: ends the worker thread (the daemon only does it in `serve`).
    worker_exit: Mutex<Option<EventNotifier>>,
    /// The backend request channel, shut down if a request waits too long.
    channel: Mutex<BackendChannel>,
}

/// The virtio feature bits the device always offers; `PTNET_F_VNET_HDR` is added when the
/// port takes the header ([`port_takes_vnet_hdr`]).
pub const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << PTNET_F_STATUS)
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// The protocol features the device offers (SPEC.md §3.6). Not `STATUS`: vhost 0.18's
/// request handler does not know `SET_STATUS` and would end the connection on it.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::BACKEND_REQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::SHMEM
}

/// Whether `port` carries a virtio-net header (SPEC.md §3.1: the device offers
/// `PTNET_F_VNET_HDR` only then). Asked by trying: a port already at 12 takes it; otherwise
/// the length is set to 12 and back to 0 (the port has no client yet, so no frame sees the
/// trial). Only VALE ports say yes; pipes and NIC ports refuse.
pub fn port_takes_vnet_hdr(port: &dyn SyncPort) -> bool {
    let len = u32::from(PTNET_VNET_HDR_LEN);
    if port.vnet_hdr_len() == len {
        return true;
    }
    if port.set_vnet_hdr_len(len).is_err() {
        return false;
    }
    port.set_vnet_hdr_len(0).is_ok()
}

impl Device {
    /// A device for one connection to `port`.
    pub fn new(
        port: Arc<dyn SyncPort>,
        opts: DeviceOptions,
        stats: Arc<DeviceStats>,
    ) -> io::Result<Arc<Self>> {
        let ifc = port.interface();
        let region = ifc.region();
        let region_file = region.file().try_clone()?;
        let region_id = guest::file_id(&region_file).ok();
        let nrings = (ifc.tx.len() + ifc.rx.len()) as u32;
        let config = DeviceConfig::for_port(&*port, opts.mac);
        let vnet_hdr_ok = port_takes_vnet_hdr(&*port);
        let watch = MemWatch::new(port.name());
        let (tx, rx) = mpsc::channel();
        let dev = Arc::new(Device {
            name: port.name().to_owned(),
            region_size: region.size() as u64,
            port,
            opts,
            region_file,
            region_id,
            nrings,
            vnet_hdr_ok,
            mem: GuestMem::new(vm_memory::GuestMemoryMmap::new()),
            watch,
            stats,
            state: Mutex::new(State {
                config,
                acked_features: 0,
                vrings: Vec::new(),
                backend_req: None,
                running: None,
                generation: 0,
                mapped: false,
                last_refusal: None,
                bad_config_writes: 0,
                gone: false,
            }),
            mapper: Mutex::new(Some(tx)),
            forward: Mutex::new(Vec::new()),
            worker_exit: Mutex::new(None),
            channel: Mutex::new(BackendChannel::default()),
        });
        let weak = Arc::downgrade(&dev);
        thread::Builder::new()
            .name(thread_name("vmap", &dev.name))
            .spawn(move || mapper(&weak, &rx))?;
        Ok(dev)
    }

    /// The frontend went away: stops the port (without unmapping: the frontend dropped its
    /// mappings with the connection) and ends the mapper.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        self.stop(&mut st, "frontend disconnected", false);
        st.backend_req = None;
        st.gone = true;
        st.vrings.clear();
        drop(st);
        self.mapper.lock().unwrap_or_else(|e| e.into_inner()).take();
        let exit = self
            .worker_exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(e) = exit {
            let _ = e.notify();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &*self.mapper.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(job);
        }
    }

    /// Starts the device if everything it needs is there.
    fn maybe_start(&self, st: &mut State) {
        if st.running.is_some() || st.gone {
            return;
        }
        let live = st.vrings.len() == self.nrings as usize
            && st.vrings.iter().all(|v| vring::is_live(&v.get_ref()));
        if !live {
            // Still being set up: not worth a word.
            return;
        }
        match self.try_start(st) {
            Ok(r) => {
                st.running = Some(r);
                st.generation += 1;
                st.mapped = false;
                st.last_refusal = None;
                self.stats.starts.fetch_add(1, Ordering::Relaxed);
                self.stats.running.store(true, Ordering::Relaxed);
                let vnet = self.vnet_hdr_acked(st);
                self.stats.vnet_hdr.store(vnet, Ordering::Relaxed);
                let g = st.config.get();
                log::info!(
                    "{}: ptnet device started: {} queues, CSB atok {:#x} ktoa {:#x}, {:?}, \
                     virtio-net header {}",
                    self.name,
                    self.nrings,
                    g.csb_atok_gpa,
                    g.csb_ktoa_gpa,
                    self.opts.mode,
                    if vnet { "on" } else { "off" }
                );
                self.send(Job::Map {
                    generation: st.generation,
                });
            }
            Err(e) => {
                let why = ptnet_datapath::error_chain(&e);
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                if st.last_refusal.as_deref() != Some(why.as_str()) {
                    // A driver that restarts a running device (a resumed VM, a restarted
                    // daemon: SPEC §3.5 step 5) writes the CSB addresses one at a time
                    // after the queues are live: an address still 0 is not worth a warning.
                    let g = st.config.get();
                    if g.csb_atok_gpa == 0 || g.csb_ktoa_gpa == 0 {
                        log::debug!("{}: ptnet device not started yet: {why}", self.name);
                    } else {
                        log::warn!("{}: ptnet device not started: {why}", self.name);
                    }
                    st.last_refusal = Some(why);
                }
            }
        }
    }

    /// The driver acked `PTNET_F_VNET_HDR` (which is only offered when the port takes it).
    fn vnet_hdr_acked(&self, st: &State) -> bool {
        self.vnet_hdr_ok && st.acked_features & (1 << PTNET_F_VNET_HDR) != 0
    }

    fn try_start(&self, st: &State) -> Result<Running, StartError> {
        if st.acked_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(StartError::NoVersion1);
        }
        if st.backend_req.is_none() {
            return Err(StartError::NoBackendChannel);
        }
        let cfg = *st.config.get();
        cfg.validate_csb().map_err(|why| StartError::CsbAddresses {
            atok: cfg.csb_atok_gpa,
            ktoa: cfg.csb_ktoa_gpa,
            why,
        })?;
        let csb = guest::guest_csb(
            &self.mem,
            cfg.csb_atok_gpa,
            cfg.csb_ktoa_gpa,
            self.nrings,
            self.region_id,
        )?;
        let mem = self.mem.memory();
        let mut kicks = Vec::with_capacity(st.vrings.len());
        let mut irqs = Vec::with_capacity(st.vrings.len());
        let mut forward = Vec::new();
        for (i, v) in st.vrings.iter().enumerate() {
            let s = v.get_ref();
            if !s.get_queue().is_valid(&*mem) {
                return Err(StartError::QueueOutside(i));
            }
            let kick = s.get_kick().as_ref().ok_or(StartError::NoKick(i))?;
            if self.opts.kicks_via_worker {
                let f = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(StartError::Eventfd)?);
                kicks.push(f.try_clone().map_err(StartError::Eventfd)?);
                forward.push(f);
            } else {
                kicks.push(
                    guest::dup_eventfd(kick)
                        .map_err(|source| StartError::Kick { queue: i, source })?,
                );
            }
            irqs.push(Arc::new(VirtqueueInterrupt::new(
                v.clone(),
                self.mem.clone(),
                Arc::clone(&self.stats.irq),
            )));
        }
        let binding = ClientBinding::with_interrupts(
            csb.clone(),
            irqs.iter()
                .map(|i| Arc::clone(i) as Arc<dyn Interrupt>)
                .collect(),
        )
        .ok_or(StartError::Binding)?;
        // netmap's PORT_HDR_SET: frames the guest sends start with the header, frames it
        // receives get one. Set before the sync loop sees a frame.
        let hdr_len = if self.vnet_hdr_acked(st) {
            u32::from(PTNET_VNET_HDR_LEN)
        } else {
            0
        };
        self.port
            .set_vnet_hdr_len(hdr_len)
            .map_err(|why| StartError::VnetHdr { len: hdr_len, why })?;
        if !self.port.bind(Some(&binding)) {
            self.port.bind(None);
            let _ = self.port.set_vnet_hdr_len(0);
            return Err(StartError::Binding);
        }
        match kloop::spawn(Arc::clone(&self.port), csb, kicks, self.opts.mode) {
            Ok(kloop) => {
                *self.forward.lock().unwrap_or_else(|e| e.into_inner()) = forward;
                Ok(Running { kloop, irqs })
            }
            Err(e) => {
                self.port.bind(None);
                let _ = self.port.set_vnet_hdr_len(0);
                Err(StartError::SyncLoop(e))
            }
        }
    }

    /// Stops the device if it runs; `unmap` sends `SHMEM_UNMAP` afterwards.
    fn stop(&self, st: &mut State, why: &str, unmap: bool) {
        let Some(r) = st.running.take() else {
            return;
        };
        for i in &r.irqs {
            i.deactivate();
        }
        r.kloop.stop();
        self.port.bind(None);
        // The port goes back to plain frames until the next start says otherwise.
        if let Err(e) = self.port.set_vnet_hdr_len(0) {
            log::warn!("{}: cannot clear the virtio-net header: {e}", self.name);
        }
        self.stats.vnet_hdr.store(false, Ordering::Relaxed);
        st.config.set_status(0);
        st.config.forget_csb();
        st.generation += 1;
        let was_mapped = std::mem::take(&mut st.mapped);
        self.stats.stops.fetch_add(1, Ordering::Relaxed);
        self.stats.running.store(false, Ordering::Relaxed);
        self.stats.mem_ready.store(false, Ordering::Relaxed);
        log::info!("{}: ptnet device stopped ({why})", self.name);
        if unmap && was_mapped {
            self.send(Job::Unmap);
        }
    }

    fn shmem_msg(&self, map: bool) -> VhostUserMMap {
        VhostUserMMap {
            shmid: PTNET_SHMID_ALLOCATOR,
            fd_offset: 0,
            shm_offset: 0,
            len: self.region_size,
            flags: if map {
                VhostUserMMapFlags::WRITABLE.bits()
            } else {
                0
            },
            ..Default::default()
        }
    }

    /// The mapper's side of a start: sends `SHMEM_MAP` (no lock held), then sets the status.
    fn map(&self, generation: u64) {
        let backend = {
            let st = self.lock();
            if st.generation != generation || st.running.is_none() {
                return;
            }
            st.backend_req.clone()
        };
        let Some(backend) = backend else { return };
        let res = self.bounded(|| backend.shmem_map(&self.shmem_msg(true), &self.region_file));
        let mut st = self.lock();
        match res {
            Ok(_) if st.generation == generation => {
                st.mapped = true;
                st.config.set_status(STATUS_RUNNING);
                self.stats.maps.fetch_add(1, Ordering::Relaxed);
                self.stats.mem_ready.store(true, Ordering::Relaxed);
                log::info!(
                    "{}: region 0 mapped ({} KiB): MEM_READY, LINK_UP",
                    self.name,
                    self.region_size / 1024
                );
            }
            Ok(_) => {
                // Stopped while the frontend was mapping: take the mapping back.
                drop(st);
                self.stats.maps.fetch_add(1, Ordering::Relaxed);
                self.unmap(&backend);
            }
            Err(e) => {
                self.stats.map_failures.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "{}: the frontend refused SHMEM_MAP of region 0 ({} bytes): {e}; the \
                     driver will not see MEM_READY",
                    self.name,
                    self.region_size
                );
            }
        }
    }

    /// Runs a backend request under a [`Watchdog`]: a frontend that does not answer within
    /// [`BACKEND_REQ_TIMEOUT`] loses its backend channel, and the request fails.
    fn bounded<T, E>(&self, req: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let ch = self
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let dog = Watchdog::arm(&ch, BACKEND_REQ_TIMEOUT);
        let res = req();
        if dog.disarm() {
            log::error!(
                "{}: the frontend did not answer a backend request in {:?}: its backend \
                 channel is closed",
                self.name,
                BACKEND_REQ_TIMEOUT
            );
        }
        res
    }

    fn unmap(&self, backend: &Backend) {
        match self.bounded(|| backend.shmem_unmap(&self.shmem_msg(false))) {
            Ok(_) => log::debug!("{}: region 0 unmapped", self.name),
            // Expected after a device reset: the frontend already dropped its mappings.
            Err(e) => log::debug!("{}: SHMEM_UNMAP not acknowledged: {e}", self.name),
        }
    }

    /// The device's status bits and CSB addresses now (for tests and listings).
    pub fn config(&self) -> ptnet_spec::device::PtnetConfig {
        *self.lock().config.get()
    }
}

/// The mapper thread: sends backend requests, one at a time, outside every request handler.
/// A frontend that never answers blocks only this thread, which holds no lock meanwhile.
fn mapper(dev: &Weak<Device>, jobs: &Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        let Some(d) = dev.upgrade() else { return };
        match job {
            Job::Map { generation } => d.map(generation),
            Job::Unmap => {
                let backend = d.lock().backend_req.clone();
                if let Some(b) = backend {
                    d.unmap(&b);
                }
            }
        }
    }
}

impl PortDevice for Device {
    type Options = DeviceOptions;
    type Stats = DeviceStats;
    type Snapshot = StatsSnapshot;
    const KIND: &'static str = "ptnet device";
    const THREAD: &'static str = "vhost";

    fn connect(
        port: &Arc<dyn SyncPort>,
        opts: &DeviceOptions,
        stats: &Arc<DeviceStats>,
    ) -> io::Result<Arc<Self>> {
        Device::new(Arc::clone(port), opts.clone(), Arc::clone(stats))
    }

    fn guest_memory(&self) -> GuestMem {
        self.mem.clone()
    }

    fn memory_watch(&self) -> &MemWatch {
        &self.watch
    }

    fn set_vrings(&self, vrings: Vec<HookedVring>) {
        self.lock().vrings = vrings;
    }

    fn set_backend_channel(&self, ch: BackendChannel) {
        *self.channel.lock().unwrap_or_else(|e| e.into_inner()) = ch;
    }

    fn shutdown(&self) {
        Device::shutdown(self);
    }

    fn connections(stats: &DeviceStats) -> &AtomicU64 {
        &stats.connections
    }

    fn snapshot(stats: &DeviceStats) -> StatsSnapshot {
        stats.snapshot()
    }
}

impl VringHook for Device {
    fn changed(&self, index: u16, what: Change) {
        let mut st = self.lock();
        if st.running.is_some() {
            match what {
                // The loop sleeps on duplicates of the old kick eventfds: restart on the new.
                Change::Kick => self.stop(&mut st, &format!("queue {index} kick replaced"), true),
                Change::Enabled(false) => {
                    self.stop(&mut st, &format!("queue {index} disabled"), true)
                }
                Change::Ready(false) => self.stop(&mut st, &format!("queue {index} stopped"), true),
                // A new call eventfd (QEMU swaps it when the guest masks a vector) is picked up
                // by the interrupt at its next raise.
                _ => {}
            }
        }
        self.maybe_start(&mut st);
    }
}

impl VhostUserBackend for Device {
    type Bitmap = ();
    type Vring = HookedVring;

    fn num_queues(&self) -> usize {
        self.nrings as usize
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.opts.max_queue_size)
    }

    fn features(&self) -> u64 {
        if self.vnet_hdr_ok {
            FEATURES | (1 << PTNET_F_VNET_HDR)
        } else {
            FEATURES
        }
    }

    fn acked_features(&self, features: u64) {
        let mut st = self.lock();
        st.acked_features = features;
        let vnet = self.vnet_hdr_acked(&st);
        st.config.set_vnet_hdr(vnet);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn reset_device(&self) {
        let mut st = self.lock();
        self.stop(&mut st, "device reset", true);
        st.acked_features = 0;
        st.config.set_vnet_hdr(false);
        st.config.forget_csb();
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let st = self.lock();
        match self.opts.tamper {
            None => st.config.read(offset, size),
            Some(lie) => {
                let mut told = st.config.clone();
                told.tamper(lie);
                told.read(offset, size)
            }
        }
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        if st.running.is_some() {
            let mut probe = st.config.clone();
            if probe.write(offset, buf) && probe.get() != st.config.get() {
                log::warn!(
                    "{}: SET_CONFIG while running ignored (the CSB cannot move under a \
                     running port)",
                    self.name
                );
            }
            return Ok(());
        }
        if !st.config.write(offset, buf) {
            st.bad_config_writes += 1;
            let n = st.bad_config_writes;
            // Rate-limited: the frontend decides how often this happens.
            if n <= 5 || n % 1000 == 0 {
                log::warn!(
                    "{}: SET_CONFIG of {} bytes at {offset} outside the 64-byte config space                      ignored (#{n})",
                    self.name,
                    buf.len()
                );
            }
        }
        self.maybe_start(&mut st);
        // Never an error: the vhost crate would end the connection.
        Ok(())
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        // The handler updated the GuestMemoryAtomic we gave it, which every part of the device
        // shares (a running CSB keeps the mapping it was placed in). An error ends the
        // connection before anything touches the new memory.
        match self.watch.accept(&mem.memory()) {
            Ok(0) => Ok(()),
            Ok(n) => {
                log::debug!(
                    "{}: {n} guest memory region(s) not sealed against shrinking",
                    self.name
                );
                Ok(())
            }
            Err(e) => {
                log::warn!("{}: memory table refused: {e}", self.name);
                Err(io::Error::new(io::ErrorKind::InvalidInput, e))
            }
        }
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        let mut st = self.lock();
        st.backend_req = Some(backend);
        self.maybe_start(&mut st);
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        if self.opts.kicks_via_worker {
            return vec![u64::MAX >> (64 - self.nrings.clamp(1, 64))];
        }
        // No vring worker threads: the sync loop reads the kicks.
        Vec::new()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (c, n) = new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()?;
        *self.worker_exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(n.try_clone().ok()?);
        Some((c, n))
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let mut st = self.lock();
        self.stop(
            &mut st,
            &format!("GET_VRING_BASE on queue {queue_index}"),
            true,
        );
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        _vrings: &[HookedVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // Only with `kicks_via_worker` (measurement): the worker read the kick of queue
        // `device_event` (its index in the one worker's mask), pass it on.
        let f = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = f.get(usize::from(device_event)) {
            let _ = e.write(1);
        }
        Ok(())
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        Ok(VhostUserShMemConfig::new(1, &[self.region_size]))
    }
}
