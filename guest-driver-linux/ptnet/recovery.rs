// SPDX-License-Identifier: GPL-2.0

//! Losing the backend and finding it again (SPEC §3.5): when QEMU reports a disconnect, a
//! reconnected backend, or a resumed VM whose backend stopped the device while it was
//! paused, a configuration interrupt queues [`PtnetDev::recover`] (the device's work item),
//! which puts the rings on hold, hands the new backend the CSB again, checks that it serves
//! the same port, and takes the rings up where the new backend has them.
//!
//! What makes the hold safe is the order in [`PtnetDev::try_hold`]: a sync takes its ring,
//! then looks at `lost` (both sequentially consistent), so once recovery has set `lost` and
//! waited for the rings to be free ([`PtnetDev::quiesce`]) no sync touches them until it
//! clears `lost` again.

use crate::{
    kring_from_csb, locate_rings, module_parameters, read_config, shm, work, Device, Dir, PtnetDev,
    STATUS_OFFSET,
};
use core::sync::atomic::Ordering;
use kernel::{
    prelude::*,
    sync::Arc,
    time::{delay::fsleep, Delta},
    workqueue::{impl_has_work, WorkItem},
};
use ptnet_spec::device::{
    PtnetConfig, PTNET_CONFIG_CSB_ATOK_OFFSET, PTNET_CONFIG_CSB_KTOA_OFFSET, PTNET_S_MEM_READY,
};

/// Offset of `num_tx_rings` in the configuration space (never 0 while a backend is
/// connected).
const NUM_TX_RINGS_OFFSET: u32 = core::mem::offset_of!(PtnetConfig, num_tx_rings) as u32;

impl_has_work! {
    impl HasWork<Self> for PtnetDev { self.recover_work }
}

impl WorkItem for PtnetDev {
    type Pointer = Arc<PtnetDev>;

    fn run(this: Arc<PtnetDev>) {
        this.recover();
    }
}

/// After a configuration interrupt: queues [`PtnetDev::recover`] (atomic context: the work
/// reads the configuration and may wait for the device). An already queued run reads it
/// anyway.
pub(crate) fn schedule(dev: &Arc<PtnetDev>) {
    let _ = work::system_dfl().enqueue(dev.clone());
}

/// At remove: takes a queued recovery off its queue and waits for a running one. The core
/// delivers no configuration change afterwards, so none runs again.
pub(crate) fn cancel(dev: &Arc<PtnetDev>) {
    work::cancel_sync(dev);
}

impl PtnetDev {
    /// Waits until no sync runs on any ring (after `dead` or `lost` is set, none starts).
    pub(crate) fn quiesce(&self) {
        for r in self.rings.iter() {
            while r.shm.is_taken() {
                fsleep(Delta::from_millis(1));
            }
        }
    }

    /// After a configuration interrupt (process context): if the device lost its backend
    /// (QEMU reports a disconnect, a reconnected backend, or a resumed VM whose backend
    /// stopped the device while it was paused), stop touching the rings, give the new
    /// backend the CSB addresses again (it starts the port on them and maps its memory,
    /// SPEC §3.5), and once it says `MEM_READY` check that it is the same port and take the
    /// rings up where the new backend has them.
    ///
    /// What is preserved is the device: the interface, its addresses, open netmap files
    /// and their mappings. What is not: frames that were in the rings, and the ring indices
    /// (the new backend's rings start afresh; applications see them reset, as after
    /// netmap's `netmap_ring_reinit`).
    fn recover(&self) {
        if self.dead.load(Ordering::Acquire) {
            return;
        }
        // Only the virtio transport's backend can come back (SPEC §6.5).
        let crate::Transport::Virtio { vdev, .. } = &self.transport else {
            return;
        };
        // SAFETY: this runs as `recover_work`, which remove cancels (waiting for a running
        // instance) before it returns; the device is bound until then.
        let vdev = unsafe { vdev.get() };
        let _g = self.mode_lock.lock();
        let status = vdev.read_config_u16(STATUS_OFFSET);
        let was_lost = self.lost.load(Ordering::SeqCst);
        if status & PTNET_S_MEM_READY != 0 && !was_lost {
            return;
        }
        if !was_lost {
            self.lost.store(true, Ordering::SeqCst);
            dev_warn!(
                vdev.as_dev(),
                "ptnet{}: the device stopped under the driver (status {:#x}: backend gone or restarted, or the VM paused); rings on hold\n",
                self.unit,
                status
            );
            if let Some(nd) = self.netdev.as_ref() {
                nd.set_carrier(false);
            }
        }
        // Syncs that started before `lost` was set finish; no other starts.
        self.quiesce();
        if status & PTNET_S_MEM_READY == 0 && !self.restart_backend(&vdev) {
            return;
        }
        if let Err(why) = self.same_port(&vdev) {
            dev_err!(
                vdev.as_dev(),
                "ptnet{}: the new backend serves a different port ({}); reload the driver\n",
                self.unit,
                why
            );
            return;
        }
        // Every ring is taken however long another sync holds it (`lost` is set, so no new
        // sync starts and the wait is short), and given back once `lost` is clear again.
        let held = shm::AllHeld::take(
            &self.rings[..],
            || fsleep(Delta::from_millis(1)),
            |r, kr| {
                let (atok, ktoa) = self.csb.entries(r.k);
                let kring = kring_from_csb(atok, ktoa, r.dir == Dir::Tx, r.shm.num_slots());
                atok.appl_disable_notifications();
                *kr = kring;
                r.shm.reinit(&kring);
            },
        );
        self.restore_layout();
        self.lost.store(false, Ordering::SeqCst);
        drop(held);
        let n = self.recoveries.fetch_add(1, Ordering::Relaxed) + 1;
        dev_info!(
            vdev.as_dev(),
            "ptnet{}: backend back, rings resynchronised (recovery {})\n",
            self.unit,
            n
        );
        if let Some(nd) = self.netdev.as_ref() {
            if self.nic_up.load(Ordering::Acquire) {
                nd.set_carrier(true);
            }
            if self.kernel_mode.load(Ordering::Acquire) {
                nd.schedule_napi();
            }
        }
        self.tx_wait.notify_all();
        self.rx_wait.notify_all();
    }

    /// Hands the backend the CSB addresses (it starts the port on them and maps its memory,
    /// as at probe) and waits for `MEM_READY`. Writes them again every 100 ms: a write that
    /// reached no backend (QEMU drops it between two connections) is not lost for long.
    /// Gives up when no backend is connected (the configuration reads as zeroes; QEMU
    /// interrupts again when one connects) or after `start_timeout_ms`.
    fn restart_backend(&self, vdev: &Device) -> bool {
        let timeout = module_parameters::start_timeout_ms.value();
        let mut waited = 0u32;
        loop {
            if vdev.read_config_u16(NUM_TX_RINGS_OFFSET) == 0 {
                dev_info!(
                    vdev.as_dev(),
                    "ptnet{}: no backend connected; waiting for one\n",
                    self.unit
                );
                return false;
            }
            vdev.write_config_u64(PTNET_CONFIG_CSB_ATOK_OFFSET as u32, self.csb.atok_addr());
            vdev.write_config_u64(PTNET_CONFIG_CSB_KTOA_OFFSET as u32, self.csb.ktoa_addr());
            for _ in 0..10 {
                if vdev.read_config_u16(STATUS_OFFSET) & PTNET_S_MEM_READY != 0 {
                    return true;
                }
                fsleep(Delta::from_millis(10));
                waited += 10;
            }
            if waited >= timeout || self.dead.load(Ordering::Acquire) {
                dev_info!(
                    vdev.as_dev(),
                    "ptnet{}: the backend did not start the device within {} ms; waiting for the next configuration change\n",
                    self.unit,
                    waited
                );
                return false;
            }
        }
    }

    /// Whether the started device is the port this driver set up at probe: same geometry,
    /// same `netmap_if` and ring places (a restarted daemon with the same configuration
    /// builds the same layout).
    fn same_port(&self, vdev: &Device) -> core::result::Result<(), &'static str> {
        let c = read_config(vdev);
        let o = &self.cfg;
        if c.mac != o.mac
            || c.num_tx_rings != o.num_tx_rings
            || c.num_rx_rings != o.num_rx_rings
            || c.num_tx_slots != o.num_tx_slots
            || c.num_rx_slots != o.num_rx_slots
            || c.nifp_offset != o.nifp_offset
            || c.mem_size != o.mem_size
            || c.buf_size != o.buf_size
        {
            return Err("geometry changed");
        }
        if c.vnet_hdr_len != o.vnet_hdr_len {
            return Err("virtio-net header length changed");
        }
        let (nif, offs) =
            locate_rings(vdev.as_dev(), &c, &self.region).map_err(|_| "bad layout")?;
        if nif.ni_name != self.nif.ni_name {
            return Err("another netmap_if");
        }
        let moved = self
            .rings
            .iter()
            .zip(offs.iter())
            .any(|(r, off)| r.shm.layout().ofs != *off);
        if moved {
            return Err("rings moved");
        }
        // The driver finds buffers from what it read at probe (`buf_base`); the new backend
        // must put them where they were. (`restore_layout` then rewrites these fields anyway,
        // for the applications.)
        let bufs_moved = self.rings.iter().any(|r| {
            let was = r.shm.layout();
            // The header lies inside the region at the same offset as at probe (checked just
            // above).
            self.region
                .read_ring_layout(was.ofs)
                .is_none_or(|now| now.buf_ofs != was.buf_ofs || now.nr_buf_size != was.nr_buf_size)
        });
        if bufs_moved {
            return Err("buffers moved");
        }
        Ok(())
    }
}
