// SPDX-License-Identifier: GPL-2.0

//! netmap's API on `/dev/netmap` for the ptnet devices of this guest.
//!
//! Binary compatible with netmap's public headers (`ptnet_spec::netmap`, ABI 14):
//! `NIOCCTRL` with `NETMAP_REQ_REGISTER`, `NETMAP_REQ_PORT_INFO_GET` and
//! `NETMAP_REQ_PORT_HDR_GET`/`_SET` (the device's virtio-net header length; setting it to
//! what it is), `mmap` of the port's whole region (so `NETMAP_IF(base, nr_offset)` works),
//! `NIOCTXSYNC`/`NIOCRXSYNC`, and `poll()` woken by the rings' interrupts. Every other
//! request fails with `EOPNOTSUPP` (logged once). Ports are named `ptnet0`, `ptnet1`, ... in
//! probe order, and answer to their interface's name too (`netmap:eth0`), as netmap ports do.
//!
//! The file operations sit on [`crate::miscdev`], a small module-local layer over
//! `struct file_operations`: the kernel crate's `MiscDevice` has no `poll` and no way to map
//! device memory.

use crate::{
    miscdev::{read_user, write_user, FileOps, MiscDevice},
    Dir, PtnetDev, SyncError, MAX_DEVICES,
};
use core::sync::atomic::Ordering;
use kernel::{
    bindings,
    fs::File,
    global_lock,
    mm::virt::VmaNew,
    new_mutex,
    prelude::*,
    sync::{poll::PollTable, Arc, Mutex},
};
use ptnet_spec::netmap::{
    NmreqHeader, NmreqPortHdr, NmreqPortInfoGet, NmreqRegister, NETMAP_MAX_API, NETMAP_MIN_API,
    NETMAP_REQ_PORT_HDR_GET, NETMAP_REQ_PORT_HDR_SET, NETMAP_REQ_PORT_INFO_GET,
    NETMAP_REQ_REGISTER, NETMAP_RING_MASK, NIOCCTRL, NIOCRXSYNC, NIOCTXSYNC, NR_ACCEPT_VNET_HDR,
    NR_EXCLUSIVE, NR_NO_TX_POLL, NR_REG_ALL_NIC, NR_REG_DEFAULT, NR_REG_ONE_NIC, NR_RX_RINGS_ONLY,
    NR_TX_RINGS_ONLY,
};

/// The devices `/dev/netmap` can register, by `ptnetN` number.
pub(crate) struct Registry {
    devs: [Option<Arc<PtnetDev>>; MAX_DEVICES],
    reserved: [bool; MAX_DEVICES],
}

global_lock! {
    // SAFETY: initialised in `NetmapMisc::register`, before the driver registers, so before
    // any probe, open or ioctl can take it.
    unsafe(uninit) static REGISTRY: Mutex<Registry> = Registry {
        devs: [const { None }; MAX_DEVICES],
        reserved: [false; MAX_DEVICES],
    };
}

/// Reserves a `ptnetN` number for a device being probed.
pub(crate) fn reserve_unit() -> Option<usize> {
    let mut reg = REGISTRY.lock();
    let unit = (0..MAX_DEVICES).find(|&i| !reg.reserved[i])?;
    reg.reserved[unit] = true;
    Some(unit)
}

/// Gives back a number reserved by a probe that failed.
pub(crate) fn release_unit(unit: usize) {
    let mut reg = REGISTRY.lock();
    reg.reserved[unit] = false;
    reg.devs[unit] = None;
}

/// Makes a probed device registrable.
pub(crate) fn publish(unit: usize, dev: &Arc<PtnetDev>) {
    REGISTRY.lock().devs[unit] = Some(dev.clone());
}

/// Makes a device unreachable for new registrations (open files keep their reference).
pub(crate) fn unpublish(unit: usize) {
    release_unit(unit);
}

/// What a registration holds.
struct Binding {
    dev: Arc<PtnetDev>,
    /// TX rings `tx.0 .. tx.1` and RX rings `rx.0 .. rx.1`, ring numbers per direction.
    tx: (u32, u32),
    rx: (u32, u32),
    flags: u64,
    exclusive: bool,
}

impl Binding {
    fn rings(&self, dir: Dir) -> impl Iterator<Item = &crate::Ring> {
        let (a, b) = match dir {
            Dir::Tx => self.tx,
            Dir::Rx => self.rx,
        };
        (a..b).filter_map(move |i| self.dev.ring(dir, i))
    }

    /// Syncs every bound ring of `dir` (`reclaim`: netmap's NAF_FORCE_RECLAIM, for
    /// `NIOCTXSYNC`); returns whether one is ready afterwards.
    fn sync_all(&self, dir: Dir, reclaim: bool) -> Result<bool> {
        let mut ready = false;
        for r in self.rings(dir) {
            match self.dev.sync(r, reclaim) {
                Ok(rdy) => ready |= rdy,
                // Lost: the rings are on hold until the backend is back (poll sleeps).
                Err(SyncError::Busy | SyncError::Lost) => {}
                Err(SyncError::Gone) => return Err(ENXIO),
                Err(SyncError::Bad(e)) => {
                    if let Some(n) = self.dev.note_ring_reset() {
                        pr_warn!(
                            "ptnet{}: ring {} reset: {:?} ({} resets so far)\n",
                            self.dev.unit,
                            r.k,
                            e,
                            n
                        );
                    }
                }
            }
        }
        Ok(ready)
    }

    /// Before sleeping: arm every bound ring of `dir`; if one moved meanwhile, sync again.
    fn arm_all(&self, dir: Dir) -> Result<bool> {
        let mut moved = false;
        for r in self.rings(dir) {
            moved |= self.dev.arm(r);
        }
        if moved {
            self.sync_all(dir, false)
        } else {
            Ok(false)
        }
    }

    fn release(&self) {
        self.dev.netmap_users_changed(-1);
        let _reg = REGISTRY.lock();
        for dir in [Dir::Tx, Dir::Rx] {
            for r in self.rings(dir) {
                r.users.fetch_sub(1, Ordering::AcqRel);
                if self.exclusive {
                    r.exclusive.store(false, Ordering::Release);
                }
            }
        }
    }
}

/// Per open file.
#[pin_data]
struct NmFile {
    #[pin]
    binding: Mutex<Option<Binding>>,
}

/// The unit of netmap's port name `ptnetN`.
fn parse_unit(name: &[u8]) -> Result<usize> {
    let digits = name.strip_prefix(b"ptnet").ok_or(ENXIO)?;
    if digits.is_empty() || digits.len() > 2 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ENXIO);
    }
    let unit = digits
        .iter()
        .fold(0usize, |a, d| a * 10 + (d - b'0') as usize);
    if unit >= MAX_DEVICES {
        return Err(ENXIO);
    }
    Ok(unit)
}

/// The unit `nr_name` designates: the port's netmap name (`ptnet0`, ...) or the name the
/// kernel stack knows its interface by (`eth0`): on netmap a port's name is its interface's
/// name, and applications look the interface up by it (its MTU, its MAC).
fn find_unit(name: &[u8; 64]) -> Result<usize> {
    let len = name.iter().position(|&c| c == 0).ok_or(EINVAL)?;
    let name = &name[..len];
    if let Ok(unit) = parse_unit(name) {
        return Ok(unit);
    }
    REGISTRY
        .lock()
        .devs
        .iter()
        .position(|d| d.as_ref().is_some_and(|d| d.ifname_is(name)))
        .ok_or(ENXIO)
}

fn unsupported(reqtype: u16) -> Error {
    kernel::pr_info_once!(
        "/dev/netmap: only REGISTER, PORT_INFO_GET and PORT_HDR_GET/SET are supported (got request {})\n",
        reqtype
    );
    EOPNOTSUPP
}

impl NmFile {
    fn ctrl(&self, arg: u64) -> Result<isize> {
        let hdr: NmreqHeader = read_user(arg)?;
        if !(NETMAP_MIN_API..=NETMAP_MAX_API).contains(&hdr.nr_version) || hdr.nr_reserved != 0 {
            return Err(EINVAL);
        }
        if hdr.nr_options != 0 {
            kernel::pr_info_once!("/dev/netmap: request options are not supported\n");
            return Err(EOPNOTSUPP);
        }
        let unit = find_unit(&hdr.nr_name)?;
        match hdr.nr_reqtype {
            NETMAP_REQ_REGISTER => self.register(unit, hdr.nr_body),
            NETMAP_REQ_PORT_INFO_GET => {
                let dev = REGISTRY.lock().devs[unit].clone().ok_or(ENXIO)?;
                let c = &dev.cfg;
                let info = NmreqPortInfoGet {
                    nr_memsize: c.mem_size,
                    nr_tx_slots: c.num_tx_slots,
                    nr_rx_slots: c.num_rx_slots,
                    nr_tx_rings: c.num_tx_rings as u16,
                    nr_rx_rings: c.num_rx_rings as u16,
                    nr_mem_id: c.mem_id,
                    ..Default::default()
                };
                write_user(hdr.nr_body, &info)?;
                Ok(0)
            }
            // The header length is the device's (negotiated at probe, `vnet_hdr`): netmap
            // reports it, and accepts setting it to what it is.
            NETMAP_REQ_PORT_HDR_GET => {
                let dev = REGISTRY.lock().devs[unit].clone().ok_or(ENXIO)?;
                let h = NmreqPortHdr {
                    nr_hdr_len: u32::from(dev.cfg.vnet_hdr_len),
                    ..Default::default()
                };
                write_user(hdr.nr_body, &h)?;
                Ok(0)
            }
            NETMAP_REQ_PORT_HDR_SET => {
                let dev = REGISTRY.lock().devs[unit].clone().ok_or(ENXIO)?;
                let h: NmreqPortHdr = read_user(hdr.nr_body)?;
                if h.nr_hdr_len == u32::from(dev.cfg.vnet_hdr_len) {
                    Ok(0)
                } else {
                    kernel::pr_info_once!(
                        "/dev/netmap: the virtio-net header length is the device's ({} bytes): load ptnet with vnet_hdr=0 or 1 to change it\n",
                        dev.cfg.vnet_hdr_len
                    );
                    Err(EINVAL)
                }
            }
            t => Err(unsupported(t)),
        }
    }

    fn register(&self, unit: usize, body: u64) -> Result<isize> {
        let mut req: NmreqRegister = read_user(body)?;
        let mut binding = self.binding.lock();
        if binding.is_some() {
            return Err(EBUSY);
        }
        let reg = REGISTRY.lock();
        let dev = reg.devs[unit].clone().ok_or(ENXIO)?;
        if dev.dead.load(Ordering::Acquire) {
            return Err(ENXIO);
        }
        let c = &dev.cfg;
        let (ntx, nrx) = (c.num_tx_rings, c.num_rx_rings);
        let (mut tx, mut rx) = match req.nr_mode {
            NR_REG_DEFAULT | NR_REG_ALL_NIC => ((0, ntx), (0, nrx)),
            NR_REG_ONE_NIC => {
                let i = (req.nr_ringid & NETMAP_RING_MASK) as u32;
                if i >= ntx.max(nrx) {
                    return Err(EINVAL);
                }
                (
                    (i.min(ntx), (i + 1).min(ntx)),
                    (i.min(nrx), (i + 1).min(nrx)),
                )
            }
            mode => {
                kernel::pr_info_once!(
                    "/dev/netmap: register mode {} not supported (no host rings)\n",
                    mode
                );
                return Err(EOPNOTSUPP);
            }
        };
        if req.nr_flags & NR_TX_RINGS_ONLY != 0 {
            rx = (0, 0);
        }
        if req.nr_flags & NR_RX_RINGS_ONLY != 0 {
            tx = (0, 0);
        }
        if c.vnet_hdr_len != 0 && req.nr_flags & NR_ACCEPT_VNET_HDR == 0 {
            // netmap's rule: frames start with the header, the application must say it
            // knows.
            kernel::pr_info_once!(
                "/dev/netmap: the port carries a virtio-net header: register with NR_ACCEPT_VNET_HDR, or load ptnet with vnet_hdr=0\n"
            );
            return Err(EINVAL);
        }
        if req.nr_mem_id != 0 && req.nr_mem_id != c.mem_id {
            return Err(EINVAL);
        }
        let exclusive = req.nr_flags & NR_EXCLUSIVE != 0;
        let b = Binding {
            dev: dev.clone(),
            tx,
            rx,
            flags: req.nr_flags,
            exclusive,
        };
        // Exclusivity is checked and taken under the registry lock.
        for dir in [Dir::Tx, Dir::Rx] {
            for r in b.rings(dir) {
                if r.exclusive.load(Ordering::Acquire)
                    || (exclusive && r.users.load(Ordering::Acquire) != 0)
                {
                    return Err(EBUSY);
                }
            }
        }
        for dir in [Dir::Tx, Dir::Rx] {
            for r in b.rings(dir) {
                r.users.fetch_add(1, Ordering::AcqRel);
                if exclusive {
                    r.exclusive.store(true, Ordering::Release);
                }
            }
        }
        drop(reg);
        // The kernel stack gives the rings up before the application sees them, and the
        // application finds the layout intact.
        dev.netmap_users_changed(1);
        dev.restore_layout();
        for dir in [Dir::Tx, Dir::Rx] {
            for r in b.rings(dir) {
                dev.reinit_user_ring(r);
            }
        }
        req.nr_offset = c.nifp_offset;
        req.nr_memsize = c.mem_size;
        req.nr_tx_slots = c.num_tx_slots;
        req.nr_rx_slots = c.num_rx_slots;
        req.nr_tx_rings = ntx as u16;
        req.nr_rx_rings = nrx as u16;
        req.nr_host_tx_rings = 0;
        req.nr_host_rx_rings = 0;
        req.nr_mem_id = c.mem_id;
        req.nr_extra_bufs = 0;
        if let Err(e) = write_user(body, &req) {
            b.release();
            return Err(e);
        }
        *binding = Some(b);
        Ok(0)
    }

    fn sync(&self, dir: Dir) -> Result<isize> {
        let guard = self.binding.lock();
        let b = guard.as_ref().ok_or(ENXIO)?;
        b.sync_all(dir, dir == Dir::Tx)?;
        Ok(0)
    }
}

impl FileOps for NmFile {
    fn open() -> Result<Pin<KBox<Self>>> {
        KBox::pin_init(
            pin_init!(NmFile { binding <- new_mutex!(None) }),
            GFP_KERNEL,
        )
    }

    fn release(this: Pin<KBox<Self>>) {
        if let Some(b) = this.binding.lock().take() {
            b.release();
        }
    }

    fn ioctl(&self, cmd: u32, arg: c_ulong) -> Result<isize> {
        match cmd {
            NIOCCTRL => self.ctrl(arg as u64),
            NIOCTXSYNC => self.sync(Dir::Tx),
            NIOCRXSYNC => self.sync(Dir::Rx),
            _ => Err(ENOTTY),
        }
    }

    /// The whole region, from offset 0 (as netmap maps its memory).
    fn mmap(&self, vma: &VmaNew) -> Result {
        let guard = self.binding.lock();
        let b = guard.as_ref().ok_or(EINVAL)?;
        if b.dev.dead.load(Ordering::Acquire) {
            return Err(ENXIO);
        }
        b.dev.region.map_to_user(vma)
    }

    fn poll(&self, file: &File, pt: &PollTable<'_>, events: u32) -> u32 {
        let guard = self.binding.lock();
        let Some(b) = guard.as_ref() else {
            return bindings::POLLERR;
        };
        let want_tx = events & (bindings::POLLOUT | bindings::POLLWRNORM) != 0;
        let want_rx = events & (bindings::POLLIN | bindings::POLLRDNORM) != 0;
        if want_tx {
            pt.register_wait(file, &b.dev.tx_wait);
        }
        if want_rx {
            pt.register_wait(file, &b.dev.rx_wait);
        }
        let mut mask = 0;
        // The implicit txsync (unless NR_NO_TX_POLL), and the TX readiness.
        if want_tx || b.flags & NR_NO_TX_POLL == 0 {
            match b.sync_all(Dir::Tx, false) {
                Ok(true) if want_tx => mask |= bindings::POLLOUT | bindings::POLLWRNORM,
                Ok(false) if want_tx => {
                    if let Ok(true) = b.arm_all(Dir::Tx) {
                        mask |= bindings::POLLOUT | bindings::POLLWRNORM;
                    }
                }
                Ok(_) => {}
                Err(_) => return bindings::POLLERR,
            }
        }
        if want_rx {
            match b.sync_all(Dir::Rx, false) {
                Ok(true) => mask |= bindings::POLLIN | bindings::POLLRDNORM,
                Ok(false) => {
                    if let Ok(true) = b.arm_all(Dir::Rx) {
                        mask |= bindings::POLLIN | bindings::POLLRDNORM;
                    }
                }
                Err(_) => return bindings::POLLERR,
            }
        }
        mask
    }
}

/// The registered `/dev/netmap`; deregistered on drop.
pub(crate) struct NetmapMisc {
    _misc: MiscDevice<NmFile>,
}

impl NetmapMisc {
    pub(crate) fn register(module: &'static ThisModule) -> Result<Self> {
        // SAFETY: called once, at module init, before anything can take the lock.
        unsafe { REGISTRY.init() };
        Ok(NetmapMisc {
            _misc: MiscDevice::register(c"netmap", 0o600, module)?,
        })
    }
}
