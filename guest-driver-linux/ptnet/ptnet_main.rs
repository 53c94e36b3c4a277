// SPDX-License-Identifier: GPL-2.0

//! `ptnet`: the Linux guest driver of ptnet's netmap passthrough device.
//!
//! A ptnet device (ptnet-spec/SPEC.md §3) is a virtio device whose shared-memory region 0
//! *is* the host port's netmap memory, whose virtqueues are the rings' doorbells and
//! interrupts, and whose CSB (in guest RAM, allocated here) carries the ring indices in
//! both directions. This module binds such devices through the virtio core ([`virtio`]),
//! or, on QEMUs without the virtio transport, through the stock `ivshmem-doorbell` device
//! ([`ivshmem`], [`ivshmem_probe`]: SPEC §6, the CSB in the port's region, the doorbell for
//! kicks), maps region 0 write-back cached, and offers netmap's API on `/dev/netmap`
//! ([`netmap`]): netmap applications in the guest register the port by name (`ptnet0`,
//! ...), `mmap` the region and use its rings in place; the driver's txsync/rxsync are the
//! CSB protocol plus a kick, and `poll()` sleeps on the rings' interrupts.
//!
//! Every value read from region 0 is treated as hostile (the guest application shares that
//! memory, and the device writes it): ring locations are computed and checked once at
//! start-up and kept in the driver; indices from the rings are validated with netmap's
//! prologues (`ptnet_spec::ring`); indices from the CSB are range-checked. Region 0 and the
//! CSB are only ever touched through [`shm`]; losing the backend and finding it again is
//! [`recovery`].

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{
    new_mutex, new_poll_condvar,
    prelude::*,
    sync::{poll::PollCondVar, Arc, Mutex, SetOnce},
    time::{delay::fsleep, Delta},
    workqueue::{new_work, Work},
};
use ptnet_spec::{
    appl,
    csb::{CsbAtok, CsbKtoa},
    device::{
        PtnetConfig, PTNET_CONFIG_CSB_ATOK_OFFSET, PTNET_CONFIG_CSB_KTOA_OFFSET, PTNET_CONFIG_SIZE,
        PTNET_F_STATUS, PTNET_F_VNET_HDR, PTNET_SHMID_ALLOCATOR, PTNET_S_MEM_READY,
        PTNET_VNET_HDR_LEN, VIRTIO_F_VERSION_1, VIRTIO_ID_PTNET,
    },
    netmap::{
        NetmapIf, NetmapRing, NetmapSlot, NETMAP_API, NETMAP_IF_RING_OFS, NETMAP_RING_SLOTS_OFS,
    },
    ring::{KringIndices, RingError},
};

mod ivshmem;
mod ivshmem_probe;
mod miscdev;
mod netdev;
mod netmap;
mod nic;
mod recovery;
mod shm;
mod virtio;
mod work;

module! {
    type: PtnetModule,
    name: "ptnet",
    authors: ["ptnet developers"],
    description: "ptnet: netmap passthrough guest driver",
    license: "GPL",
    params: {
        start_timeout_ms: u32 {
            default: 10000,
            description: "How long probe waits for the device to map its memory (ms)",
        },
        vnet_hdr: u32 {
            default: 1,
            description: "Ask for the virtio-net header (checksum and TSO offloads for the kernel stack; netmap applications must then pass NR_ACCEPT_VNET_HDR). 0 for packet generators and middleboxes",
        },
    },
}

/// Most ptnet devices one guest drives at once (`ptnet0` .. `ptnet7`).
pub(crate) const MAX_DEVICES: usize = 8;
/// Event buffers kept posted on every queue (SPEC §3.3: "a few", at least 4 bytes each).
const EVENT_BUFS: usize = 4;
/// Bytes of one event buffer.
const EVENT_BUF_LEN: usize = 16;

/// Direction of a ring.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Dir {
    Tx,
    Rx,
}

/// The driver's side of one ring: where it lives with its kring indices (what the
/// application was last allowed to see), and its users.
pub(crate) struct Ring {
    pub(crate) dir: Dir,
    /// Index in CSB order (TX rings, then RX rings) = virtqueue index.
    pub(crate) k: u32,
    /// Its header, slots and buffers in region 0, and the kring indices behind its `busy`
    /// flag (checked at start-up to lie inside the region).
    pub(crate) shm: shm::RingHandle,
    /// Open files registered on this ring.
    pub(crate) users: AtomicU32,
    /// A registration holds the ring exclusively (`NR_EXCLUSIVE`).
    pub(crate) exclusive: AtomicBool,
    /// Kicks sent on this ring's doorbell.
    kicks: AtomicU64,
    /// Interrupts taken on this ring.
    irqs: AtomicU64,
}

impl AsRef<shm::RingHandle> for Ring {
    fn as_ref(&self) -> &shm::RingHandle {
        &self.shm
    }
}

/// One bound ptnet device.
#[pin_data]
pub(crate) struct PtnetDev {
    /// `ptnetN`.
    pub(crate) unit: usize,
    pub(crate) cfg: PtnetConfig,
    /// The port's `netmap_if` header as found (and checked) at probe.
    nif: NetmapIf,
    /// Kernel mapping of region 0 (write-back), `cfg.mem_size` bytes.
    pub(crate) region: Arc<shm::Region>,
    csb: shm::Csb,
    rings: KVec<Ring>,
    /// How the device is reached: its doorbells, and what recovery needs.
    transport: Transport,
    /// Set once remove has started: no new sync, register or mmap.
    pub(crate) dead: AtomicBool,
    /// The network device for the kernel stack.
    netdev: SetOnce<netdev::NetDev>,
    /// Serialises mode switches (interface up/down, netmap registrations).
    #[pin]
    pub(crate) mode_lock: Mutex<()>,
    /// The interface is up.
    nic_up: AtomicBool,
    /// netmap registrations on this device.
    pub(crate) netmap_users: AtomicU32,
    /// The kernel stack drives the rings (up and no netmap registration).
    kernel_mode: AtomicBool,
    nic_stats: nic::NicStats,
    /// Ring resets after invalid application pointers (rate-limits their log lines).
    ring_resets: AtomicU64,
    /// Woken by TX-ring interrupts (and on removal).
    #[pin]
    pub(crate) tx_wait: PollCondVar,
    /// Woken by RX-ring interrupts (and on removal).
    #[pin]
    pub(crate) rx_wait: PollCondVar,
    /// The device has no backend that knows this driver (it went away, or a new one has
    /// not started yet: SPEC §3.5): no ring, slot or CSB entry is touched until
    /// [`PtnetDev::recover`] has synchronised them with the new backend.
    lost: AtomicBool,
    /// Backends lost and found again.
    recoveries: AtomicU64,
    /// Runs [`PtnetDev::recover`] in process context after a configuration interrupt.
    #[pin]
    recover_work: Work<PtnetDev>,
}

/// The transport a device came through (SPEC §3 or §6): the only part of the device data
/// that differs between them.
pub(crate) enum Transport {
    /// The virtio transport.
    Virtio {
        /// One virtqueue per ring (CSB order), each with EVENT_BUFS event buffers posted.
        queues: virtio::EventQueues,
        /// The virtio device, for [`PtnetDev::recover`] (configuration space).
        vdev: virtio::BoundDevice<PtnetDriver>,
    },
    /// QEMU's ivshmem-doorbell.
    Ivshmem {
        /// BAR 0: the doorbell.
        regs: ivshmem::Regs,
        /// The device's peer id (doorbell destination).
        daemon_peer: u16,
        /// The control vector (start and reset requests).
        ctrl_vector: u16,
        /// Offset of the guest's device block in region 0.
        block: usize,
    },
}

/// Why a sync did not happen.
pub(crate) enum SyncError {
    /// Another sync runs on the ring (netmap's NM_KR_BUSY).
    Busy,
    /// The device is going away.
    Gone,
    /// The application's head/cur failed the prologue; the ring was reset to the driver's
    /// state.
    Bad(RingError),
    /// The device lost its backend; nothing happens until a new one took over.
    Lost,
}

/// A ring's kernel indices as the device published them at start (CSB order `k`); a fresh
/// kring if any of them lies outside the ring.
fn kring_from_csb(atok: &CsbAtok, ktoa: &CsbKtoa, tx: bool, n: u32) -> KringIndices {
    let a = atok.kern_read();
    let mut kring = if tx {
        KringIndices::new_tx(n)
    } else {
        KringIndices::new_rx(n)
    };
    let s = appl::read_back(ktoa, n).filter(|_| a.head < n && a.cur < n);
    if let Some(s) = s {
        kring.hwcur = s.hwcur;
        kring.hwtail = s.hwtail;
        kring.rtail = s.hwtail;
        kring.rhead = a.head;
        kring.rcur = a.cur;
    }
    kring
}

/// Takes the device's `hwcur`/`hwtail` from `ktoa` into the kring `kr`, unless one lies
/// outside the ring: the device is not trusted with the driver's indices either.
fn read_back(kr: &mut KringIndices, ktoa: &CsbKtoa) {
    if let Some(s) = appl::read_back(ktoa, kr.num_slots) {
        kr.hwcur = s.hwcur;
        kr.hwtail = s.hwtail;
        kr.rtail = s.hwtail;
    }
}

impl PtnetDev {
    /// The device data of a probe that found everything (`transport` says how it came).
    #[allow(clippy::too_many_arguments)]
    fn new(
        unit: usize,
        cfg: PtnetConfig,
        nif: NetmapIf,
        region: Arc<shm::Region>,
        csb: shm::Csb,
        rings: KVec<Ring>,
        transport: Transport,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(PtnetDev {
            unit,
            cfg,
            nif,
            region,
            csb,
            rings,
            transport,
            dead: AtomicBool::new(false),
            netdev: SetOnce::new(),
            mode_lock <- new_mutex!(()),
            nic_up: AtomicBool::new(false),
            netmap_users: AtomicU32::new(0),
            kernel_mode: AtomicBool::new(false),
            nic_stats: nic::NicStats::default(),
            ring_resets: AtomicU64::new(0),
            tx_wait <- new_poll_condvar!("ptnet_tx"),
            rx_wait <- new_poll_condvar!("ptnet_rx"),
            lost: AtomicBool::new(false),
            recoveries: AtomicU64::new(0),
            recover_work <- new_work!("ptnet_recover"),
        })
    }

    /// Ring `k`'s interrupt (hard-IRQ context), whatever the transport: interrupts off
    /// until someone sleeps again, NAPI or the sleepers woken.
    fn ring_interrupt(&self, k: u32) {
        let Some(r) = self.rings.get(k as usize) else {
            return;
        };
        r.irqs.fetch_add(1, Ordering::Relaxed);
        let (atok, _) = self.csb.entries(r.k);
        atok.appl_disable_notifications();
        if self.kernel_mode.load(Ordering::Acquire) {
            if let Some(nd) = self.netdev.as_ref() {
                nd.schedule_napi();
            }
        }
        self.wait_for(r.dir).notify_all();
    }

    /// The last words of a removed device: its kicks, interrupts and recoveries, and its
    /// offload counters when the rings carried the virtio-net header.
    pub(crate) fn report_removed(&self, dev: &kernel::device::Device) {
        let (mut kicks, mut irqs) = (0u64, 0u64);
        for r in self.rings.iter() {
            kicks += r.kicks.load(Ordering::Relaxed);
            irqs += r.irqs.load(Ordering::Relaxed);
        }
        dev_info!(
            dev,
            "ptnet{} removed ({} kicks sent, {} interrupts taken, {} backend recoveries)\n",
            self.unit,
            kicks,
            irqs,
            self.recoveries.load(Ordering::Relaxed)
        );
        if self.vnet_hdr() {
            let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let s = &self.nic_stats;
            dev_info!(
                dev,
                "ptnet{} offloads: tx {} TSO frames, {} partial checksums; rx {} GSO frames, {} partial and {} valid checksums, {} bad headers\n",
                self.unit,
                n(&s.tx_tso),
                n(&s.tx_csum),
                n(&s.rx_gso),
                n(&s.rx_csum_partial),
                n(&s.rx_csum_valid),
                n(&s.rx_bad_hdr)
            );
        }
    }

    /// Whether the kernel stack knows this device's interface as `name` (netmap looks ports
    /// up by interface name).
    pub(crate) fn ifname_is(&self, name: &[u8]) -> bool {
        self.netdev
            .as_ref()
            .is_some_and(|nd| nd.name().to_bytes() == name)
    }

    pub(crate) fn ring(&self, dir: Dir, i: u32) -> Option<&Ring> {
        let k = match dir {
            Dir::Tx if i < self.cfg.num_tx_rings => i,
            Dir::Rx if i < self.cfg.num_rx_rings => self.cfg.num_tx_rings + i,
            _ => return None,
        };
        self.rings.get(k as usize)
    }

    /// txsync or rxsync of ring `r`, netmap style: validate the application's head/cur
    /// against the kring, publish them in the CSB, kick the device if it asked for kicks
    /// and the ring has news (or would block), then read back the device's indices and
    /// publish the new tail to the application. Returns whether the ring is ready
    /// (room to transmit, frames to receive) afterwards.
    ///
    /// `reclaim` is netmap's `NAF_FORCE_RECLAIM`, which `NIOCTXSYNC` (not `poll`) passes:
    /// the device is kicked even without news, with the flag in the CSB, so that it
    /// reports completed transmissions now (a pipe peer's released slots, say).
    pub(crate) fn sync(&self, r: &Ring, reclaim: bool) -> Result<bool, SyncError> {
        if self.dead.load(Ordering::Acquire) {
            return Err(SyncError::Gone);
        }
        let mut kr = self.try_hold(r)?;
        let res = self.sync_locked(r, &mut kr, reclaim && r.dir == Dir::Tx);
        drop(kr);
        res
    }

    /// netmap's `nm_kr_tryget`: takes ring `r` for one sync (or NAPI poll, or transmit),
    /// unless another holds it or the device lost its backend. The order (take, then look
    /// at `lost`, both sequentially consistent) is what lets [`PtnetDev::recover`] wait
    /// for the syncs that started before it set `lost` and know no later one touches the
    /// ring. The ring is held until the guard is dropped.
    pub(crate) fn try_hold<'r>(&self, r: &'r Ring) -> Result<shm::KringGuard<'r>, SyncError> {
        let kr = r.shm.try_take().ok_or(SyncError::Busy)?;
        if self.lost.load(Ordering::SeqCst) {
            drop(kr);
            return Err(SyncError::Lost);
        }
        Ok(kr)
    }

    /// The sync itself, on ring `r` held as `kr`.
    fn sync_locked(
        &self,
        r: &Ring,
        kr: &mut KringIndices,
        reclaim: bool,
    ) -> Result<bool, SyncError> {
        let (head, cur) = r.shm.head_cur();
        let v = match r.dir {
            Dir::Tx => kr.txsync_prologue(head, cur),
            Dir::Rx => kr.rxsync_prologue(head, cur),
        };
        let v = match v {
            Ok(v) => v,
            Err(e) => {
                // netmap_ring_reinit: the application sees the driver's state again.
                r.shm.reinit(kr);
                return Err(SyncError::Bad(e));
            }
        };
        kr.rhead = v.head;
        kr.rcur = v.cur;
        let (atok, ktoa) = self.csb.entries(r.k);
        let would_block = r.dir == Dir::Tx && kr.rcur == kr.rtail;
        if appl::publish(atok, ktoa, kr.rhead, kr.rcur, would_block, reclaim) {
            self.kick(r);
        }
        read_back(kr, ktoa);
        r.shm.set_tail(kr.rtail);
        Ok(kr.rcur != kr.rtail)
    }

    /// Rings ring `r`'s doorbell.
    pub(crate) fn kick(&self, r: &Ring) {
        match &self.transport {
            Transport::Virtio { queues, .. } => queues.notify(r.k as usize),
            Transport::Ivshmem {
                regs, daemon_peer, ..
            } => regs.doorbell(*daemon_peer, r.k as u16),
        }
        r.kicks.fetch_add(1, Ordering::Relaxed);
    }

    /// Before sleeping on ring `r`: enable its interrupt with the double check. Returns
    /// whether the device moved meanwhile (the caller should sync again instead of sleeping).
    pub(crate) fn arm(&self, r: &Ring) -> bool {
        let (atok, ktoa) = self.csb.entries(r.k);
        let kr = match self.try_hold(r) {
            Ok(kr) => kr,
            Err(SyncError::Busy) => return true,
            // Sleep: recovery wakes everyone when the rings are back.
            Err(_) => return false,
        };
        let s = atok.appl_enable_notifications(ktoa);
        let moved = s.hwtail != kr.hwtail;
        if moved {
            atok.appl_disable_notifications();
        }
        drop(kr);
        moved
    }

    /// Rewrites what an application could have scribbled over in the port's layout: the
    /// `netmap_if` header, its ring offsets, and every ring header's fixed fields, from the
    /// copies taken at probe. Called at every registration, so that each application finds
    /// the layout netmap would give it, whatever the previous one did. All of it lies
    /// inside the region (`locate_rings` checked at probe).
    pub(crate) fn restore_layout(&self) {
        let nifp = self.cfg.nifp_offset as usize;
        let host_tx = self.nif.ni_host_tx_rings as usize;
        self.region.write(nifp, self.nif);
        for r in self.rings.iter() {
            let k = r.k as usize;
            let slot_ix = if r.dir == Dir::Tx { k } else { k + host_tx };
            let ofs = r.shm.layout().ofs;
            self.region.write(
                nifp + NETMAP_IF_RING_OFS + slot_ix * 8,
                ofs as i64 - nifp as i64,
            );
            r.shm.restore_header();
        }
    }

    /// Counts a ring reset after invalid application pointers; says whether to log it
    /// (the first few, then at powers of two: an application must not flood the log).
    pub(crate) fn note_ring_reset(&self) -> Option<u64> {
        let n = self.ring_resets.fetch_add(1, Ordering::Relaxed) + 1;
        (n <= 4 || n.is_power_of_two()).then_some(n)
    }

    /// Resets the application's view of ring `r` to the driver's (at registration).
    pub(crate) fn reinit_user_ring(&self, r: &Ring) {
        let Ok(kr) = self.try_hold(r) else {
            return;
        };
        r.shm.reinit(&kr);
    }

    /// A netmap registration starts (`delta` 1) or ends (`-1`): the kernel stack gives the
    /// rings up or takes them back.
    pub(crate) fn netmap_users_changed(&self, delta: i32) {
        let _g = self.mode_lock.lock();
        if delta > 0 {
            self.netmap_users.fetch_add(1, Ordering::AcqRel);
        } else {
            self.netmap_users.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(nd) = self.netdev.as_ref() {
            self.update_mode(nd);
        }
    }

    pub(crate) fn wait_for(&self, dir: Dir) -> &PollCondVar {
        match dir {
            Dir::Tx => &self.tx_wait,
            Dir::Rx => &self.rx_wait,
        }
    }
}

/// What the virtio core keeps for a bound device.
struct PtnetDriver {
    dev: Arc<PtnetDev>,
}

/// A ptnet device as the virtio layer hands it to this driver.
type Device = virtio::Device<PtnetDriver>;

mod ptnet_names {
    use kernel::prelude::*;
    macro_rules! names {
        ($($n:literal)*) => {
            /// Virtqueue names of the TX rings.
            pub(crate) const TX: [&CStr; 64] = [$(kernel::c_str!(concat!("ptnet-tx", $n)),)*];
            /// Virtqueue names of the RX rings.
            pub(crate) const RX: [&CStr; 64] = [$(kernel::c_str!(concat!("ptnet-rx", $n)),)*];
        };
    }
    names!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30
        31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
        60 61 62 63);
}

/// Offset of `status` in the configuration space.
const STATUS_OFFSET: u32 = core::mem::offset_of!(PtnetConfig, status) as u32;
/// Offset of `vnet_hdr_len` in the configuration space.
const VNET_HDR_LEN_OFFSET: u32 = core::mem::offset_of!(PtnetConfig, vnet_hdr_len) as u32;

/// Reads the whole configuration space.
fn read_config(dev: &Device) -> PtnetConfig {
    let mut b = [0u8; PTNET_CONFIG_SIZE as usize];
    dev.read_config(0, &mut b);
    PtnetConfig::from_le_bytes(&b)
}

/// Checks the `netmap_if` at `nifp_offset` and every ring it points to, returning the ring
/// headers' offsets in region 0 (CSB order).
fn locate_rings(
    dev: &kernel::device::Device,
    cfg: &PtnetConfig,
    region: &shm::Region,
) -> Result<(NetmapIf, KVec<usize>)> {
    let mem = cfg.mem_size as usize;
    let nifp = cfg.nifp_offset as usize;
    let nrings = cfg.num_rings() as usize;
    // host rings: netmap_if lists NIC TX, host TX, NIC RX, host RX ring offsets.
    let if_end = nifp.checked_add(NETMAP_IF_RING_OFS).ok_or(EINVAL)?;
    if if_end > mem {
        dev_err!(
            dev,
            "netmap_if at {:#x} outside the {:#x}-byte region\n",
            nifp,
            mem
        );
        return Err(EINVAL);
    }
    // `nifp + size_of::<NetmapIf>() <= mem_size`, the region's length (checked above).
    let nif: NetmapIf = region.read(nifp).ok_or(EINVAL)?;
    let name_len = nif
        .ni_name
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(nif.ni_name.len());
    let name = core::str::from_utf8(&nif.ni_name[..name_len]).unwrap_or("?");
    if nif.ni_version != NETMAP_API as u32
        || nif.ni_tx_rings != cfg.num_tx_rings
        || nif.ni_rx_rings != cfg.num_rx_rings
    {
        dev_err!(
            dev,
            "netmap_if mismatch: version {} rings {}/{} (config {}/{})\n",
            nif.ni_version,
            nif.ni_tx_rings,
            nif.ni_rx_rings,
            cfg.num_tx_rings,
            cfg.num_rx_rings
        );
        return Err(EINVAL);
    }
    dev_info!(
        dev,
        "netmap_if '{}' version {} at {:#x}: {} TX + {} RX rings, {}/{} slots\n",
        name,
        nif.ni_version,
        nifp,
        nif.ni_tx_rings,
        nif.ni_rx_rings,
        cfg.num_tx_slots,
        cfg.num_rx_slots
    );
    let host_tx = nif.ni_host_tx_rings as usize;
    let mut offs = KVec::with_capacity(nrings, GFP_KERNEL)?;
    for k in 0..nrings {
        let (slot_ix, slots) = if k < cfg.num_tx_rings as usize {
            (k, cfg.num_tx_slots)
        } else {
            (k + host_tx, cfg.num_rx_slots)
        };
        let ofs_at = if_end + slot_ix * 8;
        if ofs_at + 8 > mem {
            return Err(EINVAL);
        }
        let rel: i64 = region.read(ofs_at).ok_or(EINVAL)?;
        let at = (nifp as i64).checked_add(rel).ok_or(EINVAL)?;
        let end = (slots as usize)
            .checked_mul(core::mem::size_of::<NetmapSlot>())
            .and_then(|s| s.checked_add(NETMAP_RING_SLOTS_OFS))
            .and_then(|s| s.checked_add(at as usize))
            .ok_or(EINVAL)?;
        if at < 0 || at as usize % 8 != 0 || end > mem {
            dev_err!(dev, "ring {} at {:#x} outside the region\n", k, at);
            return Err(EINVAL);
        }
        // The ring the device built and the geometry it announces must agree: a driver that
        // believed a smaller ring would misread every index the device publishes.
        let built: u32 = region
            .read(at as usize + core::mem::offset_of!(NetmapRing, num_slots))
            .ok_or(EINVAL)?;
        if built != slots {
            dev_err!(
                dev,
                "ring {} has {} slots, the device says {}\n",
                k,
                built,
                slots
            );
            return Err(EINVAL);
        }
        offs.push(at as usize, GFP_KERNEL)?;
    }
    Ok((nif, offs))
}

// Probe, step by step. Each step logs why it fails; `probe` undoes what the steps before
// it did.

/// Checks what the device offers before anything is set up: `VIRTIO_F_VERSION_1`, a
/// geometry within ptnet's limits (`ptnet_spec::device`), and a shared-memory region 0 that
/// holds `mem_size` bytes. Returns the configuration and region 0's window.
fn check_device(dev: &Device) -> Result<(PtnetConfig, virtio::ShmRegion)> {
    if !dev.has_feature(VIRTIO_F_VERSION_1) {
        dev_err!(dev.as_dev(), "device does not offer VIRTIO_F_VERSION_1\n");
        return Err(ENODEV);
    }
    let cfg = read_config(dev);
    if let Err(e) = cfg.validate_geometry() {
        dev_err!(dev.as_dev(), "bad geometry: {:?}\n", e);
        return Err(EINVAL);
    }
    let window = dev.shm_region(PTNET_SHMID_ALLOCATOR).ok_or_else(|| {
        dev_err!(
            dev.as_dev(),
            "no shared-memory region {}\n",
            PTNET_SHMID_ALLOCATOR
        );
        ENODEV
    })?;
    if cfg.mem_size > window.len {
        dev_err!(
            dev.as_dev(),
            "mem_size {:#x} exceeds the {:#x}-byte region\n",
            cfg.mem_size,
            window.len
        );
        return Err(EINVAL);
    }
    Ok((cfg, window))
}

/// Allocates the CSB (the atok array, then the ktoa array, zeroed, page aligned so 64-byte
/// aligned, in memory the device can address) and gives the device its addresses.
fn hand_over_csb(dev: &Device, cfg: &PtnetConfig) -> Result<shm::Csb> {
    let csb = shm::Csb::alloc(dev, cfg.num_rings())?;
    dev.write_config_u64(PTNET_CONFIG_CSB_ATOK_OFFSET as u32, csb.atok_addr());
    dev.write_config_u64(PTNET_CONFIG_CSB_KTOA_OFFSET as u32, csb.ktoa_addr());
    Ok(csb)
}

/// Creates one virtqueue per ring, in CSB order (`ptnet-txN`, then `ptnet-rxN`).
fn find_queues(dev: &Device, cfg: &PtnetConfig) -> Result<KVec<virtio::Virtqueue>> {
    let nrings = cfg.num_rings() as usize;
    let ntx = cfg.num_tx_rings as usize;
    let mut qnames = KVec::with_capacity(nrings, GFP_KERNEL)?;
    for k in 0..nrings {
        let name = if k < ntx {
            ptnet_names::TX[k]
        } else {
            ptnet_names::RX[k - ntx]
        };
        qnames.push(name, GFP_KERNEL)?;
    }
    dev.find_vqs(&qnames)
}

/// Maps region 0 (`mem_size` bytes of `window`) write-back. A CPU mapping only: nothing
/// reads it before the device says `MEM_READY`.
fn map_region(
    dev: &Device,
    window: virtio::ShmRegion,
    cfg: &PtnetConfig,
) -> Result<Arc<shm::Region>> {
    let region = shm::Region::map(window, cfg.mem_size as usize).ok_or_else(|| {
        dev_err!(dev.as_dev(), "cannot map region 0 at {:#x}\n", window.addr);
        ENOMEM
    })?;
    Ok(Arc::new(region, GFP_KERNEL)?)
}

/// Waits for the device to map its memory (`MEM_READY`: ptnetd cannot send a configuration
/// interrupt), at most `start_timeout_ms`, then returns the `vnet_hdr_len` it runs with,
/// checked against the negotiated features.
fn wait_until_started(dev: &Device) -> Result<u16> {
    let timeout = module_parameters::start_timeout_ms.value();
    let mut waited = 0u32;
    while dev.read_config_u16(STATUS_OFFSET) & PTNET_S_MEM_READY == 0 {
        if waited >= timeout {
            dev_err!(
                dev.as_dev(),
                "device did not map its memory within {} ms\n",
                timeout
            );
            return Err(ETIMEDOUT);
        }
        fsleep(Delta::from_millis(10));
        waited += 10;
    }
    // The device learns the negotiated features when it starts (QEMU forwards them at
    // DRIVER_OK): only now does `vnet_hdr_len` say what the rings carry.
    let vnet = dev.has_feature(PTNET_F_VNET_HDR);
    let hdr_len = dev.read_config_u16(VNET_HDR_LEN_OFFSET);
    let want = if vnet { PTNET_VNET_HDR_LEN } else { 0 };
    if hdr_len != want {
        dev_err!(
            dev.as_dev(),
            "vnet_hdr_len {} but PTNET_F_VNET_HDR {}\n",
            hdr_len,
            if vnet { "negotiated" } else { "not negotiated" }
        );
        return Err(EINVAL);
    }
    Ok(hdr_len)
}

/// Locates and checks the port's `netmap_if` and every ring (once: what is found here is
/// what the driver uses), takes each ring's indices from the CSB, and turns its interrupts
/// off until someone sleeps on it.
fn find_rings(
    dev: &kernel::device::Device,
    cfg: &PtnetConfig,
    region: &Arc<shm::Region>,
    csb: &shm::Csb,
) -> Result<(NetmapIf, KVec<Ring>)> {
    let (nif, offs) = locate_rings(dev, cfg, region)?;
    let mut rings = KVec::with_capacity(offs.len(), GFP_KERNEL)?;
    for (k, off) in offs.iter().enumerate() {
        let tx = k < cfg.num_tx_rings as usize;
        let (atok, ktoa) = csb.entries(k as u32);
        let n = if tx {
            cfg.num_tx_slots
        } else {
            cfg.num_rx_slots
        };
        let kring = kring_from_csb(atok, ktoa, tx, n);
        // Interrupts stay off until someone sleeps on the ring.
        atok.appl_disable_notifications();
        // The header and the ring's slots lie inside the region (locate_rings); its fixed
        // fields, `buf_ofs` among them, are read once, here.
        let layout = region.read_ring_layout(*off).ok_or(EINVAL)?;
        let buf_ofs = layout.buf_ofs;
        let buf_base = (*off as i64)
            .checked_add(buf_ofs)
            .filter(|b| *b >= 0 && (*b as u64) < cfg.mem_size)
            .ok_or_else(|| {
                dev_err!(
                    dev,
                    "ring {} buffers at {:#x} outside the region\n",
                    k,
                    buf_ofs
                );
                EINVAL
            })? as usize;
        let handle =
            shm::RingHandle::new(region, layout, n, buf_base, cfg.buf_size, kring).ok_or(EINVAL)?;
        let ring = Ring {
            dir: if tx { Dir::Tx } else { Dir::Rx },
            k: k as u32,
            shm: handle,
            users: AtomicU32::new(0),
            exclusive: AtomicBool::new(false),
            kicks: AtomicU64::new(0),
            irqs: AtomicU64::new(0),
        };
        rings.push(ring, GFP_KERNEL)?;
    }
    Ok((nif, rings))
}

/// Buffers must hold a virtio-net header and an Ethernet frame's headers.
fn check_buffers(dev: &kernel::device::Device, cfg: &PtnetConfig) -> Result {
    if cfg.buf_size < 64 {
        dev_err!(dev, "buffers of {} bytes are too small\n", cfg.buf_size);
        return Err(EINVAL);
    }
    Ok(())
}

/// Creates and registers the network interface (with the offloads when the rings carry the
/// virtio-net header).
fn register_netdev(
    dev: &kernel::device::Device,
    parent: *mut kernel::bindings::device,
    d: &Arc<PtnetDev>,
) -> Result {
    // SAFETY: the device data outlives the net_device: it is unregistered in `remove` and
    // freed with the device data; the virtio device is its parent for as long.
    let nd = unsafe { netdev::NetDev::new(&**d, parent, d.cfg.mac, d.mtu_max()) };
    let nd = nd.inspect(|nd| {
        if d.vnet_hdr() {
            nd.enable_offloads(d.tso_max_size());
        }
    });
    let nd = nd
        .and_then(|mut nd| nd.register().map(|()| nd))
        .inspect_err(|e| {
            dev_err!(dev, "cannot register the network interface: {:?}\n", e);
        })?;
    if d.vnet_hdr() {
        dev_info!(
            dev,
            "ptnet{}: network interface {}, virtio-net header: checksum offload, TSO up to {} bytes\n",
            d.unit,
            nd.name(),
            d.tso_max_size()
        );
    } else {
        dev_info!(
            dev,
            "ptnet{}: network interface {}, no virtio-net header (no offloads)\n",
            d.unit,
            nd.name()
        );
    }
    d.netdev.populate(nd);
    Ok(())
}

/// The probe's last line: what was bound.
fn announce(dev: &kernel::device::Device, d: &PtnetDev) {
    let cfg = &d.cfg;
    dev_info!(
        dev,
        "ptnet{}: {} TX + {} RX rings, region {:#x} bytes at {:#x}, mem id {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\n",
        d.unit,
        cfg.num_tx_rings,
        cfg.num_rx_rings,
        cfg.mem_size,
        d.region.phys(),
        cfg.mem_id,
        cfg.mac[0],
        cfg.mac[1],
        cfg.mac[2],
        cfg.mac[3],
        cfg.mac[4],
        cfg.mac[5]
    );
}

impl virtio::Driver for PtnetDriver {
    const DEVICE_ID: u32 = VIRTIO_ID_PTNET as u32;

    fn features() -> &'static [u32] {
        if module_parameters::vnet_hdr.value() != 0 {
            &[PTNET_F_STATUS, PTNET_F_VNET_HDR, VIRTIO_F_VERSION_1]
        } else {
            &[PTNET_F_STATUS, VIRTIO_F_VERSION_1]
        }
    }

    fn probe(dev: &Device) -> Result<Pin<KBox<Self>>> {
        let (mut cfg, window) = check_device(dev)?;
        let csb = hand_over_csb(dev, &cfg)?;
        let vqs = find_queues(dev, &cfg)?;
        // Everything below undoes the queues on failure (the rest is dropped normally).
        let undo = |e: Error| {
            dev.reset();
            dev.del_vqs();
            e
        };
        let mut queues = virtio::EventQueues::new(vqs, EVENT_BUFS, EVENT_BUF_LEN).map_err(undo)?;
        queues.post_all().map_err(undo)?;
        let region = map_region(dev, window, &cfg).map_err(undo)?;
        dev.ready();
        cfg.vnet_hdr_len = wait_until_started(dev).map_err(undo)?;
        let (nif, rings) = find_rings(dev.as_dev(), &cfg, &region, &csb).map_err(undo)?;
        // Interrupts taken before the driver data exists found no data and left their event
        // buffers completed: take them back and post them again.
        queues.replenish_all();

        let unit = netmap::reserve_unit().ok_or_else(|| {
            dev_err!(dev.as_dev(), "more than {} ptnet devices\n", MAX_DEVICES);
            undo(EBUSY)
        })?;
        let dev_arc: Arc<PtnetDev> = Arc::pin_init(
            PtnetDev::new(
                unit,
                cfg,
                nif,
                region,
                csb,
                rings,
                Transport::Virtio {
                    queues,
                    vdev: virtio::BoundDevice::new(dev),
                },
            ),
            GFP_KERNEL,
        )
        .map_err(|e| {
            netmap::release_unit(unit);
            undo(e)
        })?;
        if let Err(e) = check_buffers(dev.as_dev(), &cfg)
            .and_then(|()| register_netdev(dev.as_dev(), dev.raw_dev(), &dev_arc))
        {
            netmap::release_unit(unit);
            return Err(undo(e));
        }
        netmap::publish(unit, &dev_arc);
        announce(dev.as_dev(), &dev_arc);
        KBox::pin(PtnetDriver { dev: dev_arc }, GFP_KERNEL).map_err(|e| {
            netmap::unpublish(unit);
            undo(e.into())
        })
    }

    fn remove(dev: &Device, data: Pin<KBox<Self>>) {
        let d = &data.dev;
        // The core delivers no configuration change from now on: after this, no recovery
        // runs or will.
        recovery::cancel(d);
        if let Some(nd) = d.netdev.as_ref() {
            nd.unregister();
        }
        netmap::unpublish(d.unit);
        d.dead.store(true, Ordering::Release);
        d.tx_wait.notify_all();
        d.rx_wait.notify_all();
        d.quiesce();
        dev.reset();
        dev.del_vqs();
        d.report_removed(dev.as_dev());
    }

    fn vq_interrupt(&self, irq: &virtio::QueueIrq<'_>) {
        let d = &self.dev;
        // Give the device its event buffers back (SPEC §3.3).
        if let Transport::Virtio { queues, .. } = &d.transport {
            queues.replenish(irq);
        }
        d.ring_interrupt(irq.index());
    }

    fn config_changed(&self) {
        recovery::schedule(&self.dev);
    }
}

struct PtnetModule {
    _netmap: netmap::NetmapMisc,
    _driver: virtio::Registration<PtnetDriver>,
    _ivshmem: ivshmem::Registration<ivshmem_probe::PtnetIvshmem>,
}

impl kernel::Module for PtnetModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let misc = netmap::NetmapMisc::register(module)?;
        let driver = virtio::Registration::<PtnetDriver>::new(c"ptnet", module)?;
        let ivshmem = ivshmem::Registration::new(c"ptnet-ivshmem", module)?;
        pr_info!(
            "netmap API {} on /dev/netmap, up to {} devices\n",
            NETMAP_API,
            MAX_DEVICES
        );
        Ok(PtnetModule {
            _netmap: misc,
            _driver: driver,
            _ivshmem: ivshmem,
        })
    }
}

impl Drop for PtnetModule {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
