// SPDX-License-Identifier: GPL-2.0

//! Binding a ptnet device that came through QEMU's stock `ivshmem-doorbell` (SPEC §6): find
//! the guest's device block from `IVPosition` and BAR 2's directory, ask the device to start
//! through the control vector, then run exactly what the virtio transport runs (the rings,
//! the CSB, netmap's API, the network interface) with the CSB in the block and the doorbell
//! register for kicks. Everything found in BAR 2 is checked before use, as on the virtio
//! transport: an ivshmem device without a ptnet directory is not ours.

use crate::{
    announce, check_buffers, find_rings, ivshmem, module_parameters, netmap, ptnet_names,
    register_netdev, shm, PtnetDev, Transport, MAX_DEVICES,
};
use core::sync::atomic::{fence, Ordering};
use kernel::{
    prelude::*,
    sync::Arc,
    time::{delay::fsleep, Delta},
};
use ptnet_spec::{
    device::{PTNET_F_STATUS, PTNET_F_VNET_HDR, PTNET_S_MEM_READY, PTNET_VNET_HDR_LEN},
    ivshmem::{
        IvshmemDir, IvshmemHeader, IVSHMEM_DRIVER_FEATURES_OFFSET, IVSHMEM_DRIVER_STATUS_OFFSET,
        IVSHMEM_STATUS_OFFSET, PTNET_IVSHMEM_DIR_SIZE, PTNET_IVSHMEM_HDR_SIGNATURE,
        PTNET_IVS_DRIVER_OK,
    },
};

/// What the PCI core keeps for a bound ivshmem device: the handlers on its vectors (they
/// hold the device data), freed in remove before the data can go.
pub(crate) struct PtnetIvshmem {
    dev: Arc<PtnetDev>,
    irqs: Option<ivshmem::Irqs<PtnetDev>>,
}

/// The device's `status`, as it is now in the block.
fn status(region: &shm::Region, block: usize) -> u16 {
    region.read(block + IVSHMEM_STATUS_OFFSET).unwrap_or(0)
}

/// Writes `driver_status` and rings the control vector, then waits (at most
/// `start_timeout_ms`) until `status` satisfies `done`.
fn request(
    dev: &ivshmem::Device,
    regs: &ivshmem::Regs,
    region: &shm::Region,
    block: usize,
    hdr: &IvshmemHeader,
    driver_status: u32,
    done: impl Fn(u16) -> bool,
) -> Result {
    fence(Ordering::SeqCst);
    region.write(block + IVSHMEM_DRIVER_STATUS_OFFSET, driver_status);
    fence(Ordering::SeqCst);
    regs.doorbell(hdr.daemon_peer, hdr.ctrl_vector);
    let timeout = module_parameters::start_timeout_ms.value();
    let mut waited = 0u32;
    while !done(status(region, block)) {
        if waited >= timeout {
            let what = if driver_status == 0 { "reset" } else { "start" };
            dev_err!(
                dev.as_dev(),
                "the device did not answer a {} request within {} ms (status {:#x})\n",
                what,
                timeout,
                status(region, block)
            );
            return Err(ETIMEDOUT);
        }
        fsleep(Delta::from_millis(10));
        waited += 10;
    }
    Ok(())
}

/// Finds and checks the guest's block (SPEC §6.1). `ENODEV`: not a ptnet device.
fn find_block(
    dev: &ivshmem::Device,
    regs: &ivshmem::Regs,
    region: &shm::Region,
    bar_len: u64,
) -> Result<(usize, IvshmemHeader)> {
    let id = regs.ivposition();
    let dir: IvshmemDir = region
        .read((bar_len - u64::from(PTNET_IVSHMEM_DIR_SIZE)) as usize)
        .ok_or(ENODEV)?;
    let peer = u16::try_from(id).map_err(|_| ENODEV)?;
    let block = dir.block_offset(bar_len, peer).map_err(|e| {
        dev_info!(dev.as_dev(), "not a ptnet device ({:?}): left alone\n", e);
        ENODEV
    })? as usize;
    let hdr: IvshmemHeader = region.read(block).ok_or(ENODEV)?;
    if hdr.signature != PTNET_IVSHMEM_HDR_SIGNATURE || hdr.peer_id != peer {
        dev_info!(
            dev.as_dev(),
            "no ptnet device block for peer {}: left alone\n",
            peer
        );
        return Err(ENODEV);
    }
    let c = &hdr.config;
    if let Err(e) = c.validate_geometry() {
        dev_err!(dev.as_dev(), "bad geometry: {:?}\n", e);
        return Err(EINVAL);
    }
    let rings = c.num_rings();
    if c.mem_size > bar_len
        || u32::from(hdr.ctrl_vector) != rings
        || u32::from(hdr.num_vectors) != rings + 1
    {
        dev_err!(
            dev.as_dev(),
            "block of peer {}: mem_size {:#x} (BAR 2 {:#x}), {} vectors, control vector {}, {} rings\n",
            peer,
            c.mem_size,
            bar_len,
            hdr.num_vectors,
            hdr.ctrl_vector,
            rings
        );
        return Err(EINVAL);
    }
    Ok((block, hdr))
}

impl ivshmem::Driver for PtnetIvshmem {
    fn probe(dev: &ivshmem::Device) -> Result<Pin<KBox<Self>>> {
        dev.enable(c"ptnet")?;
        probe_enabled(dev).inspect_err(|_| dev.disable())
    }

    fn remove(dev: &ivshmem::Device, mut data: Pin<KBox<Self>>) {
        let d = data.dev.clone();
        if let Some(nd) = d.netdev.as_ref() {
            nd.unregister();
        }
        netmap::unpublish(d.unit);
        d.dead.store(true, Ordering::Release);
        d.tx_wait.notify_all();
        d.rx_wait.notify_all();
        d.quiesce();
        if let Transport::Ivshmem {
            regs,
            daemon_peer,
            ctrl_vector,
            block,
        } = &d.transport
        {
            // The device stops (and frees the port); nobody waits for its answer.
            d.region.write(*block + IVSHMEM_DRIVER_STATUS_OFFSET, 0u32);
            fence(Ordering::SeqCst);
            regs.doorbell(*daemon_peer, *ctrl_vector);
        }
        // The handlers go first: they hold the device data.
        Pin::get_mut(data.as_mut()).irqs.take();
        dev.free_vectors();
        dev.disable();
        d.report_removed(dev.as_dev());
    }
}

/// The probe once the device is enabled; the caller disables it on failure.
fn probe_enabled(dev: &ivshmem::Device) -> Result<Pin<KBox<PtnetIvshmem>>> {
    let regs = dev.map_regs()?;
    let (bar_addr, bar_len) = dev.bar(2);
    if !bar_len.is_power_of_two() || bar_len < 2 * u64::from(PTNET_IVSHMEM_DIR_SIZE) {
        return Err(ENODEV);
    }
    let window = crate::virtio::ShmRegion {
        addr: bar_addr,
        len: bar_len,
    };
    let region = shm::Region::map(window, bar_len as usize).ok_or(ENOMEM)?;
    let region = Arc::new(region, GFP_KERNEL)?;
    let (block, hdr) = find_block(dev, &regs, &region, bar_len)?;
    // A device still running for a previous driver (a rebooted guest whose QEMU kept going,
    // a reloaded module) is reset first (SPEC §6.3).
    if hdr.config.status != 0 {
        request(dev, &regs, &region, block, &hdr, 0, |s| s == 0)?;
    }
    let mut features = 1 << PTNET_F_STATUS;
    if module_parameters::vnet_hdr.value() != 0 {
        features |= hdr.device_features & (1 << PTNET_F_VNET_HDR);
    }
    region.write(block + IVSHMEM_DRIVER_FEATURES_OFFSET, features);
    request(dev, &regs, &region, block, &hdr, PTNET_IVS_DRIVER_OK, |s| {
        s & PTNET_S_MEM_READY != 0
    })?;
    // What the device runs with now: the CSB offsets, `vnet_hdr_len`.
    let hdr: IvshmemHeader = region.read(block).ok_or(EINVAL)?;
    let mut cfg = hdr.config;
    let want = if features & (1 << PTNET_F_VNET_HDR) != 0 {
        PTNET_VNET_HDR_LEN
    } else {
        0
    };
    if cfg.vnet_hdr_len != want {
        dev_err!(
            dev.as_dev(),
            "vnet_hdr_len {} but the driver asked for {}\n",
            cfg.vnet_hdr_len,
            want
        );
        return Err(EINVAL);
    }
    cfg.status = 0;
    let csb = shm::Csb::in_region(&region, cfg.csb_atok_gpa, cfg.csb_ktoa_gpa, cfg.num_rings())
        .inspect_err(|_| {
            dev_err!(
                dev.as_dev(),
                "CSB at {:#x}/{:#x} outside BAR 2\n",
                cfg.csb_atok_gpa,
                cfg.csb_ktoa_gpa
            )
        })?;
    let (nif, rings) = find_rings(dev.as_dev(), &cfg, &region, &csb)?;
    let nvec = cfg.num_rings() + 1;
    dev.alloc_vectors(nvec).inspect_err(|e| {
        dev_err!(
            dev.as_dev(),
            "cannot allocate {} MSI-X vectors: {:?}\n",
            nvec,
            e
        )
    })?;
    let unit = netmap::reserve_unit().ok_or_else(|| {
        dev_err!(dev.as_dev(), "more than {} ptnet devices\n", MAX_DEVICES);
        dev.free_vectors();
        EBUSY
    })?;
    let fail = |e: Error| {
        netmap::release_unit(unit);
        dev.free_vectors();
        e
    };
    let dev_arc: Arc<PtnetDev> = Arc::pin_init(
        PtnetDev::new(
            unit,
            cfg,
            nif,
            region,
            csb,
            rings,
            Transport::Ivshmem {
                regs,
                daemon_peer: hdr.daemon_peer,
                ctrl_vector: hdr.ctrl_vector,
                block,
            },
        ),
        GFP_KERNEL,
    )
    .map_err(fail)?;
    // The vectors are named as the virtio transport's queues are (`ptnet-tx0`, ...).
    let ntx = cfg.num_tx_rings;
    let name = |k: u32| match k {
        k if k < ntx => ptnet_names::TX[k as usize],
        k if k < nvec - 1 => ptnet_names::RX[(k - ntx) as usize],
        _ => c"ptnet-config",
    };
    let irqs = dev
        .request_irqs(dev_arc.clone(), nvec, name)
        .map_err(fail)?;
    let raw = dev.raw_dev();
    if let Err(e) = check_buffers(dev.as_dev(), &cfg)
        .and_then(|()| register_netdev(dev.as_dev(), raw, &dev_arc))
    {
        drop(irqs);
        return Err(fail(e));
    }
    netmap::publish(unit, &dev_arc);
    announce(dev.as_dev(), &dev_arc);
    dev_info!(
        dev.as_dev(),
        "ptnet{}: on ivshmem, peer {}, device block at {:#x}\n",
        unit,
        hdr.peer_id,
        block
    );
    KBox::pin(
        PtnetIvshmem {
            dev: dev_arc,
            irqs: Some(irqs),
        },
        GFP_KERNEL,
    )
    .map_err(|e| {
        netmap::unpublish(unit);
        e.into()
    })
}

impl ivshmem::Vectors for PtnetDev {
    fn vector(&self, k: u32) {
        if k < self.cfg.num_rings() {
            self.ring_interrupt(k);
            return;
        }
        // The configuration vector: the device stopped (the VM's port was taken away, or
        // the daemon went: SPEC §6.5) or started again for us. Only a stop matters here.
        let Transport::Ivshmem { block, .. } = &self.transport else {
            return;
        };
        if self.dead.load(Ordering::Acquire) {
            // The driver's own reset in remove.
            return;
        }
        if status(&self.region, *block) & PTNET_S_MEM_READY == 0
            && !self.lost.swap(true, Ordering::SeqCst)
        {
            pr_warn!(
                "ptnet{}: the device stopped under the driver (ivshmem: the host took the port away); rings on hold until the module is reloaded\n",
                self.unit
            );
            self.tx_wait.notify_all();
            self.rx_wait.notify_all();
        }
    }
}
