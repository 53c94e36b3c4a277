//! A ring's interrupt when the client is a VM: its virtqueue.
//!
//! Linux's `vring_interrupt()` ignores an interrupt that completed no buffer, so the driver
//! keeps a few device-writable *event buffers* posted on each ring's virtqueue, and every
//! interrupt the daemon raises first completes one of them (used length 0), then signals the
//! queue's call eventfd (a KVM irqfd under QEMU). Interrupts are rare under CSB suppression:
//! this costs one lock and a few guest-memory accesses per interrupt, never per packet.

use std::num::Wrapping;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ptnet_datapath::kring::Interrupt;
use ptnet_vhost_user::vring::HookedVring;
use vhost_user_backend::VringT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryMmap};

use ptnet_vhost_user::GuestMem;

/// Interrupt counters of one device (all its rings), updated per interrupt.
#[derive(Debug, Default)]
pub struct IrqStats {
    /// Interrupts raised (call eventfd signalled).
    pub raised: AtomicU64,
    /// Event buffers completed (one per interrupt when the driver keeps them posted).
    pub completed: AtomicU64,
    /// Interrupts raised with no event buffer available (the driver did not post enough, or
    /// its virtqueue is broken): Linux drops these.
    pub no_buffer: AtomicU64,
}

/// The interrupt of one ring of a VM: completes an event buffer on its virtqueue, then signals
/// the call eventfd.
pub struct VirtqueueInterrupt {
    vring: HookedVring,
    mem: GuestMem,
    /// Cleared when the device stops; checked under the vring lock, so that once
    /// [`VirtqueueInterrupt::deactivate`] returns no raise touches the virtqueue again.
    active: AtomicBool,
    stats: Arc<IrqStats>,
}

impl std::fmt::Debug for VirtqueueInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtqueueInterrupt")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}

impl VirtqueueInterrupt {
    /// The interrupt of the ring whose virtqueue is `vring`.
    pub fn new(vring: HookedVring, mem: GuestMem, stats: Arc<IrqStats>) -> Self {
        VirtqueueInterrupt {
            vring,
            mem,
            active: AtomicBool::new(true),
            stats,
        }
    }

    /// Stops raising: waits for a raise in progress, and makes later ones no-ops.
    pub fn deactivate(&self) {
        let _guard = self.vring.get_mut();
        self.active.store(false, Ordering::Release);
    }
}

impl Interrupt for VirtqueueInterrupt {
    fn raise(&self) {
        // One writer at a time: several sync loops may raise the same ring (VALE senders
        // delivering to this port), and the vhost-user handler changes the queue under this lock.
        let mut st = self.vring.get_mut();
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let call = self.vring.call();
        if st.get_queue().ready() {
            let mem = self.mem.memory();
            match complete_one(st.get_queue_mut(), &mem) {
                Ok(()) => {
                    self.stats.completed.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => {
                    let n = self.stats.no_buffer.fetch_add(1, Ordering::Relaxed);
                    // Rate-limited: the guest decides how often this happens. Running out of
                    // posted buffers is ordinary (interrupts raised faster than the guest
                    // handles them, or while it shuts down) and only counted; a broken queue
                    // is worth a warning.
                    if n < 10 || n % 10_000 == 0 {
                        if why == NoBuffer::Empty {
                            log::debug!("interrupt with no event buffer posted (#{})", n + 1);
                        } else {
                            log::warn!("interrupt without an event buffer ({why:?}, #{})", n + 1);
                        }
                    }
                }
            }
        }
        // Signalled with the lock dropped, and never waiting: QEMU shares the call eventfd,
        // and a sender of another VM may be the one raising.
        drop(st);
        if let Some(c) = call {
            c.signal();
        }
        self.stats.raised.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why no event buffer was completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBuffer {
    /// The driver has none posted.
    Empty,
    /// The available index is unreadable or further ahead than the queue size.
    BadAvailIndex,
    /// The posted head index is outside the queue.
    BadHead,
    /// The used ring could not be written.
    UsedRing,
}

/// Completes the next available buffer of `q` with length 0. Every index the guest wrote is
/// checked here first, so that virtio-queue (which logs every error it meets) only sees valid
/// ones: a guest must not be able to flood the daemon's log.
pub fn complete_one(q: &mut Queue, mem: &GuestMemoryMmap<()>) -> Result<(), NoBuffer> {
    let avail = q
        .avail_idx(mem, Ordering::Acquire)
        .map_err(|_| NoBuffer::BadAvailIndex)?;
    let pending = (avail - Wrapping(q.next_avail())).0;
    if pending == 0 {
        return Err(NoBuffer::Empty);
    }
    if pending > q.size() {
        return Err(NoBuffer::BadAvailIndex);
    }
    let chain = q.pop_descriptor_chain(mem).ok_or(NoBuffer::BadAvailIndex)?;
    if chain.head_index() >= q.size() {
        // Consumed: the driver posted garbage, and it stays consumed.
        return Err(NoBuffer::BadHead);
    }
    q.add_used(mem, chain.head_index(), 0)
        .map_err(|_| NoBuffer::UsedRing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;

    fn setup(size: u16) -> (Queue, GuestMemoryMmap<()>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut q = Queue::new(size).unwrap();
        q.set_size(size);
        q.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
        q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
        q.set_ready(true);
        assert!(q.is_valid(&mem));
        (q, mem)
    }

    fn post(mem: &GuestMemoryMmap<()>, slot: u16, head: u16, avail_idx: u16) {
        mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * u64::from(slot)))
            .unwrap();
        mem.write_obj(avail_idx, GuestAddress(AVAIL + 2)).unwrap();
    }

    fn used_idx(mem: &GuestMemoryMmap<()>) -> u16 {
        mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    #[test]
    fn an_interrupt_completes_one_posted_event_buffer_with_length_zero() {
        let (mut q, mem) = setup(8);
        assert_eq!(complete_one(&mut q, &mem), Err(NoBuffer::Empty));
        post(&mem, 0, 5, 1);
        post(&mem, 1, 6, 2);
        assert_eq!(complete_one(&mut q, &mem), Ok(()));
        assert_eq!(used_idx(&mem), 1);
        let id: u32 = mem.read_obj(GuestAddress(USED + 4)).unwrap();
        let len: u32 = mem.read_obj(GuestAddress(USED + 8)).unwrap();
        assert_eq!((id, len), (5, 0));
        assert_eq!(complete_one(&mut q, &mem), Ok(()));
        assert_eq!(complete_one(&mut q, &mem), Err(NoBuffer::Empty));
        assert_eq!(used_idx(&mem), 2);
    }

    #[test]
    fn garbage_avail_indices_and_heads_complete_nothing() {
        let (mut q, mem) = setup(8);
        // More buffers "posted" than the queue holds.
        post(&mem, 0, 1, 9);
        assert_eq!(complete_one(&mut q, &mem), Err(NoBuffer::BadAvailIndex));
        post(&mem, 0, 1, 0xfff0);
        assert_eq!(complete_one(&mut q, &mem), Err(NoBuffer::BadAvailIndex));
        // A head outside the queue is consumed, never completed.
        post(&mem, 0, 8, 1);
        assert_eq!(complete_one(&mut q, &mem), Err(NoBuffer::BadHead));
        post(&mem, 1, 0xffff, 2);
        assert_eq!(complete_one(&mut q, &mem), Err(NoBuffer::BadHead));
        assert_eq!(used_idx(&mem), 0);
        post(&mem, 2, 3, 3);
        assert_eq!(complete_one(&mut q, &mem), Ok(()));
        assert_eq!(used_idx(&mem), 1);
    }
}
