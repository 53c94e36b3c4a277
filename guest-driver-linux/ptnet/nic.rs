// SPDX-License-Identifier: GPL-2.0

//! The ptnet device as a NIC for the kernel stack, while no netmap application holds it.
//!
//! The kernel plays the netmap application on TX ring 0 and on every RX ring: `xmit`
//! copies a socket buffer into slots (chained with `NS_MOREFRAG` when it is larger than a
//! buffer) and publishes them through the CSB; the NAPI poll copies received frames into
//! socket buffers, gives the slots back, and re-enables the ring interrupts with the CSB's
//! double check when it runs out of work. The rings' kring copies are the same ones the
//! netmap API uses, so switching modes hands the rings over as they are: a netmap
//! application that registers sees exactly the slots the kernel had not consumed.
//!
//! Kernel mode is on while the interface is up and no netmap application is registered
//! ([`PtnetDev::update_mode`]); frames the stack sends meanwhile are dropped and counted,
//! as netmap drops host-stack traffic when no host ring is bound.
//!
//! With `PTNET_F_VNET_HDR` every frame in the rings starts with the 12-byte virtio-net
//! header: `xmit` writes it (made by the kernel from the socket buffer: partial checksum,
//! TSO) in front of the frame in the first slot of the chain, and the poll parses it and
//! lets the kernel apply it (see [`crate::netdev`]), so TCP between guests moves 64 KiB
//! frames with no checksum computed by anyone (ptnet's equivalent of netmap's
//! `ptnet_vnet_hdr`).

use crate::{
    netdev::{NetDev, Ops, Skb, Stats},
    read_back, Dir, PtnetDev, Ring, SyncError,
};
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use ptnet_spec::{
    appl,
    netmap::{NETMAP_MAX_FRAGS, NS_MOREFRAG},
    ring::{distance, nm_next, KringIndices},
    vnet::{
        VnetHdr, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
        VNET_HDR_LEN,
    },
};

/// Largest frame without the virtio-net header (no GSO frames then).
const MAX_FRAME: u32 = 65535;
/// Largest GSO frame the stack builds without BIG TCP (`GSO_LEGACY_MAX_SIZE`).
const MAX_GSO_FRAME: u32 = 65536;

/// Kernel-mode counters (`ip -s link`).
#[derive(Default)]
pub(crate) struct NicStats {
    rx_packets: core::sync::atomic::AtomicU64,
    rx_bytes: core::sync::atomic::AtomicU64,
    tx_packets: core::sync::atomic::AtomicU64,
    tx_bytes: core::sync::atomic::AtomicU64,
    rx_dropped: core::sync::atomic::AtomicU64,
    tx_dropped: core::sync::atomic::AtomicU64,
    /// Offloads (with the virtio-net header): TSO frames sent.
    pub(crate) tx_tso: core::sync::atomic::AtomicU64,
    /// Frames sent with their checksum left to the receiver (`NEEDS_CSUM`).
    pub(crate) tx_csum: core::sync::atomic::AtomicU64,
    /// GSO frames received.
    pub(crate) rx_gso: core::sync::atomic::AtomicU64,
    /// Frames received with a partial checksum (`NEEDS_CSUM`).
    pub(crate) rx_csum_partial: core::sync::atomic::AtomicU64,
    /// Frames received with a known good checksum (`DATA_VALID`).
    pub(crate) rx_csum_valid: core::sync::atomic::AtomicU64,
    /// Frames dropped for a header the kernel refused (or a first slot too short for one).
    pub(crate) rx_bad_hdr: core::sync::atomic::AtomicU64,
}

fn bump(c: &core::sync::atomic::AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl PtnetDev {
    /// Switches between kernel mode and netmap mode after a change of `up` or of the number
    /// of netmap registrations. Callers hold `mode_lock`; may sleep (NAPI disable).
    pub(crate) fn update_mode(&self, nd: &NetDev) {
        let want =
            self.nic_up.load(Ordering::Acquire) && self.netmap_users.load(Ordering::Acquire) == 0;
        let have = self.kernel_mode.load(Ordering::Acquire);
        if want == have {
            return;
        }
        if want {
            self.kernel_mode.store(true, Ordering::Release);
            nd.napi_enable();
            nd.start_queue();
            // Whatever arrived meanwhile, and the interrupts from now on.
            nd.schedule_napi();
        } else {
            self.kernel_mode.store(false, Ordering::Release);
            nd.stop_queue();
            nd.napi_disable();
        }
    }

    /// Reads the device's indices for ring `r`, held by the kernel as `kr`.
    fn refresh(&self, r: &Ring, kr: &mut KringIndices) {
        let (_, ktoa) = self.csb.entries(r.k);
        read_back(kr, ktoa);
    }

    /// Publishes the kernel's head/cur for ring `r` (held as `kr`) and kicks if the device
    /// asked for it and there is news (the kernel never waits for room in the ring, nor
    /// forces a reclaim).
    fn publish(&self, r: &Ring, kr: &KringIndices) {
        let (atok, ktoa) = self.csb.entries(r.k);
        if appl::publish(atok, ktoa, kr.rhead, kr.rcur, false, false) {
            self.kick(r);
        }
    }

    /// Copies `skb` into TX ring `r` (held as `kr`), behind its virtio-net header if the
    /// device carries one. `Ok(false)`: no room now.
    fn xmit_locked(&self, r: &Ring, kr: &mut KringIndices, skb: &Skb) -> Result<bool> {
        self.refresh(r, kr);
        let len = skb.len();
        let bs = self.slot_bytes();
        let max = if self.vnet_hdr() {
            MAX_GSO_FRAME
        } else {
            MAX_FRAME
        };
        if len == 0 || len > max {
            return Err(EINVAL);
        }
        let hdr = if self.vnet_hdr() {
            Some(skb.vnet_hdr().ok_or(EINVAL)?)
        } else {
            None
        };
        let hlen = self.hdr_len();
        let need = (len + hlen).div_ceil(bs);
        if need > NETMAP_MAX_FRAGS || distance(kr.rcur, kr.rtail, kr.num_slots) < need {
            if need > NETMAP_MAX_FRAGS {
                return Err(EMSGSIZE);
            }
            return Ok(false);
        }
        let mut off = 0u32;
        let mut i = kr.rcur;
        let mut first = true;
        while off < len {
            // The slot is ours (between cur and tail). Its buffer index is read once: it is
            // untrusted.
            let slot = r.shm.slot(i);
            let buf = r.shm.buf(slot.buf_idx()).ok_or(EINVAL)?;
            // The header opens the chain's first buffer (buffers hold at least 64 bytes).
            let at = match hdr.filter(|_| first) {
                Some(h) => {
                    buf.write(0, &h.to_le_bytes());
                    hlen
                }
                None => 0,
            };
            first = false;
            let chunk = (len - off).min(bs - at);
            // `at + chunk <= bs`: inside the buffer, and a length a slot can say.
            buf.copy_from_skb(at, skb, off, chunk)?;
            let flags = if off + chunk < len { NS_MOREFRAG } else { 0 };
            slot.set_len_flags((at + chunk) as u16, flags);
            off += chunk;
            i = nm_next(i, kr.num_slots);
        }
        if let Some(h) = hdr {
            if h.gso_type != VIRTIO_NET_HDR_GSO_NONE as u8 {
                bump(&self.nic_stats.tx_tso, 1);
            }
            if u32::from(h.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                bump(&self.nic_stats.tx_csum, 1);
            }
        }
        kr.rcur = i;
        kr.rhead = i;
        self.publish(r, kr);
        Ok(true)
    }

    /// Receives up to `budget` frames from RX ring `r` (held as `kr`).
    fn rx_locked(&self, r: &Ring, kr: &mut KringIndices, nd: &NetDev, budget: i32) -> i32 {
        self.refresh(r, kr);
        let n = kr.num_slots;
        let mut work = 0;
        while work < budget && kr.rcur != kr.rtail {
            // Find the frame's slots: [rcur, end], all before rtail.
            let mut total = 0u32;
            let mut frags = 0u32;
            let mut i = kr.rcur;
            let mut complete = false;
            let mut bad = false;
            loop {
                let (len, flags) = r.shm.slot(i).len_flags();
                frags += 1;
                if len as u32 > self.cfg.buf_size {
                    bad = true;
                }
                total += len as u32;
                let next = nm_next(i, n);
                if flags & NS_MOREFRAG == 0 {
                    complete = true;
                    break;
                }
                if next == kr.rtail || frags >= NETMAP_MAX_FRAGS {
                    bad = frags >= NETMAP_MAX_FRAGS;
                    break;
                }
                i = next;
            }
            if !complete && !bad {
                break; // the rest of the frame has not arrived yet
            }
            let end = nm_next(i, n);
            if !bad {
                self.rx_frame(r, nd, kr.rcur, end, total);
            } else {
                bump(&self.nic_stats.rx_dropped, 1);
            }
            kr.rcur = end;
            kr.rhead = end;
            work += 1;
        }
        self.publish(r, kr);
        work
    }

    /// Receives the frame in slots `[start, end)` of RX ring `r` (`total` bytes, every slot
    /// length already checked against the buffer size), behind its virtio-net header if the
    /// device carries one. Drops (and counts) what cannot be received.
    fn rx_frame(&self, r: &Ring, nd: &NetDev, start: u32, end: u32, total: u32) {
        let n = r.shm.num_slots();
        let hlen = self.hdr_len();
        let drop_it = |bad_hdr: bool| {
            bump(&self.nic_stats.rx_dropped, 1);
            if bad_hdr {
                bump(&self.nic_stats.rx_bad_hdr, 1);
            }
        };
        let (first_len, _) = r.shm.slot(start).len_flags();
        if u32::from(first_len) < hlen {
            // The header must open the first slot.
            return drop_it(true);
        }
        if total < hlen + 14 {
            return drop_it(false);
        }
        let Some(mut skb) = nd.alloc_rx(total - hlen) else {
            return drop_it(false);
        };
        let mut hdr_bytes = [0u8; VNET_HDR_LEN as usize];
        let mut j = start;
        while j != end {
            // Read again, so bounded again: a hostile host may have changed the slot since
            // the caller looked at it.
            let slot = r.shm.slot(j);
            let len = u32::from(slot.len_flags().0).min(self.cfg.buf_size);
            let Some(buf) = r.shm.buf(slot.buf_idx()) else {
                return drop_it(false);
            };
            // The buffer holds `buf_size >= len` bytes; a host writing it meanwhile only
            // garbles this copy.
            let from = if j == start && hlen != 0 {
                if len < hlen {
                    return drop_it(true);
                }
                buf.read(0, &mut hdr_bytes);
                hlen
            } else {
                0
            };
            if buf
                .append_to(from as usize, (len - from) as usize, &mut skb)
                .is_err()
            {
                return drop_it(false);
            }
            j = nm_next(j, n);
        }
        let skb = skb.finish();
        let hdr = (hlen != 0)
            .then(|| VnetHdr::from_le_bytes(&hdr_bytes))
            .flatten();
        if nd.receive(skb, hdr.as_ref()).is_err() {
            return drop_it(true);
        }
        bump(&self.nic_stats.rx_packets, 1);
        bump(&self.nic_stats.rx_bytes, u64::from(total - hlen));
        if let Some(h) = hdr {
            if h.gso_type != VIRTIO_NET_HDR_GSO_NONE as u8 {
                bump(&self.nic_stats.rx_gso, 1);
            }
            if u32::from(h.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                bump(&self.nic_stats.rx_csum_partial, 1);
            } else if u32::from(h.flags) & VIRTIO_NET_HDR_F_DATA_VALID != 0 {
                bump(&self.nic_stats.rx_csum_valid, 1);
            }
        }
    }

    /// Frees TX space known to the device and wakes the queue if it was stopped for lack of
    /// room; returns whether the queue is (still) stopped.
    fn reclaim_tx(&self, nd: &NetDev) -> bool {
        let Some(r) = self.ring(Dir::Tx, 0) else {
            return false;
        };
        let held = if nd.queue_stopped() {
            self.try_hold(r).ok()
        } else {
            None
        };
        let Some(mut kr) = held else {
            return nd.queue_stopped();
        };
        self.refresh(r, &mut kr);
        let room = distance(kr.rcur, kr.rtail, kr.num_slots);
        drop(kr);
        if room >= self.tx_wake_threshold() {
            nd.wake_queue();
            false
        } else {
            true
        }
    }

    /// Room the TX ring must have for the queue to run: the largest frame's slots.
    fn tx_wake_threshold(&self) -> u32 {
        ((self.max_tx_frame() + self.hdr_len()).div_ceil(self.cfg.buf_size)).max(1)
    }

    /// The largest MTU: one buffer less the Ethernet header (and the virtio-net header).
    pub(crate) fn mtu_max(&self) -> u32 {
        self.cfg
            .buf_size
            .saturating_sub(14 + self.hdr_len())
            .min(MAX_FRAME - 14)
    }

    /// Whether frames carry the virtio-net header (`PTNET_F_VNET_HDR` negotiated).
    pub(crate) fn vnet_hdr(&self) -> bool {
        self.cfg.vnet_hdr_len != 0
    }

    /// Bytes of virtio-net header in front of every frame (0 or 12).
    fn hdr_len(&self) -> u32 {
        if self.vnet_hdr() {
            VNET_HDR_LEN
        } else {
            0
        }
    }

    /// The bytes one slot carries: its buffer, as much of it as a slot's 16-bit length can
    /// say (a device may offer 64 KiB buffers; 65,536 would read as 0).
    fn slot_bytes(&self) -> u32 {
        self.cfg.buf_size.min(u32::from(u16::MAX))
    }

    /// The largest GSO frame the interface accepts: what fits, behind the header, in the
    /// longest chain a TX ring can hold (`NETMAP_MAX_FRAGS` slots, and one slot of the ring
    /// always stays empty), at most 64 KiB.
    pub(crate) fn tso_max_size(&self) -> u32 {
        let chain = NETMAP_MAX_FRAGS.min(self.cfg.num_tx_slots.saturating_sub(1));
        (chain * self.slot_bytes())
            .saturating_sub(VNET_HDR_LEN)
            .min(MAX_GSO_FRAME)
    }

    /// The largest frame the stack sends us (a VLAN tag on an MTU-sized frame included).
    fn max_tx_frame(&self) -> u32 {
        let plain = self.mtu_max() + 18;
        if self.vnet_hdr() {
            self.tso_max_size().max(plain)
        } else {
            plain
        }
    }
}

impl Ops for PtnetDev {
    fn open(&self, nd: &NetDev) -> Result {
        let _g = self.mode_lock.lock();
        self.nic_up.store(true, Ordering::Release);
        // Without a backend the link is down until recovery brings it up.
        nd.set_carrier(!self.lost.load(Ordering::Acquire));
        self.update_mode(nd);
        Ok(())
    }

    fn stop(&self, nd: &NetDev) {
        let _g = self.mode_lock.lock();
        self.nic_up.store(false, Ordering::Release);
        self.update_mode(nd);
        nd.set_carrier(false);
    }

    fn xmit(&self, nd: &NetDev, skb: Skb) -> core::result::Result<(), Skb> {
        let Some(r) = self.ring(Dir::Tx, 0) else {
            bump(&self.nic_stats.tx_dropped, 1);
            return Ok(());
        };
        if !self.kernel_mode.load(Ordering::Acquire) || self.dead.load(Ordering::Acquire) {
            bump(&self.nic_stats.tx_dropped, 1);
            return Ok(());
        }
        let mut kr = match self.try_hold(r) {
            Ok(kr) => kr,
            Err(SyncError::Busy) => return Err(skb),
            Err(_) => {
                // No backend: the frame has nowhere to go.
                bump(&self.nic_stats.tx_dropped, 1);
                return Ok(());
            }
        };
        let len = skb.len();
        let res = self.xmit_locked(r, &mut kr, &skb);
        let room = distance(kr.rcur, kr.rtail, kr.num_slots);
        drop(kr);
        let ret = match res {
            Ok(true) => {
                bump(&self.nic_stats.tx_packets, 1);
                bump(&self.nic_stats.tx_bytes, len as u64);
                Ok(())
            }
            Ok(false) => {
                nd.stop_queue();
                Err(skb)
            }
            Err(_) => {
                bump(&self.nic_stats.tx_dropped, 1);
                Ok(())
            }
        };
        if ret.is_ok() && room < self.tx_wake_threshold() {
            nd.stop_queue();
        }
        if nd.queue_stopped() {
            // Ask for the TX interrupt, then look again (the double check).
            if self.arm(r) || !self.reclaim_tx(nd) {
                nd.wake_queue();
            }
        }
        ret
    }

    fn poll(&self, nd: &NetDev, budget: i32) -> i32 {
        let mut work = 0;
        for i in 0..self.cfg.num_rx_rings {
            let Some(r) = self.ring(Dir::Rx, i) else {
                break;
            };
            let Ok(mut kr) = self.try_hold(r) else {
                continue;
            };
            work += self.rx_locked(r, &mut kr, nd, budget - work);
            drop(kr);
            if work >= budget {
                break;
            }
        }
        let tx_stopped = self.reclaim_tx(nd);
        if work < budget && nd.napi_complete(work) {
            let mut again = false;
            for i in 0..self.cfg.num_rx_rings {
                if let Some(r) = self.ring(Dir::Rx, i) {
                    again |= self.arm(r);
                }
            }
            if tx_stopped {
                if let Some(r) = self.ring(Dir::Tx, 0) {
                    again |= self.arm(r);
                }
            }
            if again {
                nd.schedule_napi();
            }
        }
        work
    }

    fn stats(&self) -> Stats {
        let s = &self.nic_stats;
        Stats {
            rx_packets: s.rx_packets.load(Ordering::Relaxed),
            rx_bytes: s.rx_bytes.load(Ordering::Relaxed),
            tx_packets: s.tx_packets.load(Ordering::Relaxed),
            tx_bytes: s.tx_bytes.load(Ordering::Relaxed),
            rx_dropped: s.rx_dropped.load(Ordering::Relaxed),
            tx_dropped: s.tx_dropped.load(Ordering::Relaxed),
        }
    }
}
