//! Virtqueue helpers for a batching device.
//!
//! `virtio-queue`'s `add_used` stores the used index once per element, and its
//! `needs_notification` ignores `VRING_AVAIL_F_NO_INTERRUPT`. A batch here writes its used
//! elements, then stores the used index once (release: the elements and the buffers they
//! describe are visible to a driver that sees the new index), then decides on one
//! notification for the whole batch: with `VIRTIO_RING_F_EVENT_IDX`, `vring_need_event` over
//! the batch's range of used indices; without, the driver's `NO_INTERRUPT` flag.
//!
//! Every address comes from the queue (checked to lie in guest memory at start) or from a
//! descriptor, and every access goes through `vm-memory`'s checked accessors: a hostile
//! driver gets an error, never an access outside its memory.

use std::num::Wrapping;
use std::sync::atomic::{Ordering, fence};

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, VolatileSlice};

/// Guest memory as the vhost-user handler maps it.
pub type Mem = vm_memory::GuestMemoryMmap<()>;

/// Bytes of the used ring header (`flags`, `idx`).
const USED_RING_HEADER: u64 = 4;
/// Bytes of one used element (`id`, `len`).
const USED_ELEM_SIZE: u64 = 8;
/// Bytes of the avail ring header (`flags`, `idx`).
const AVAIL_RING_HEADER: u64 = 4;

/// A guest-memory access failed (the driver gave an address outside its memory).
#[derive(Debug, thiserror::Error)]
#[error("guest address {addr:#x} (+{len}) is outside guest memory")]
pub struct BadAddress {
    /// Guest physical address.
    pub addr: u64,
    /// Bytes.
    pub len: usize,
}

/// The used elements of one batch, kept in a buffer allocated once.
#[derive(Debug)]
pub struct UsedBatch {
    elems: Vec<(u16, u32)>,
}

impl UsedBatch {
    /// A batch of at most `cap` elements without reallocation.
    pub fn with_capacity(cap: usize) -> Self {
        UsedBatch {
            elems: Vec::with_capacity(cap),
        }
    }

    /// Adds one completed chain: its head and the bytes the device wrote into it.
    #[inline]
    pub fn push(&mut self, head: u16, len: u32) {
        self.elems.push((head, len));
    }

    /// Elements queued.
    #[inline]
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    /// Whether nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    /// Sets the length of every element from index `mark` on to 0 (a frame dropped after it
    /// took several chains: each completes empty).
    #[inline]
    pub fn zero_from(&mut self, mark: usize) {
        for e in self.elems.iter_mut().skip(mark) {
            e.1 = 0;
        }
    }

    /// Forgets the last `n` elements (a frame that did not fit is rolled back).
    #[inline]
    pub fn truncate_last(&mut self, n: usize) {
        self.elems.truncate(self.elems.len().saturating_sub(n));
    }

    /// Writes the batch into the used ring, publishes the used index once, and returns
    /// whether the driver wants a notification for it. The batch is empty afterwards.
    pub fn publish<M: GuestMemory>(&mut self, q: &mut Queue, mem: &M) -> Result<bool, BadAddress> {
        if self.elems.is_empty() {
            return Ok(false);
        }
        let size = q.size();
        let used = GuestAddress(q.used_ring());
        let old = Wrapping(q.next_used());
        let mut idx = old;
        for &(head, len) in &self.elems {
            let slot = u64::from(idx.0 % size);
            let addr = at(used, USED_RING_HEADER + slot * USED_ELEM_SIZE, 8)?;
            // id (u32) then len (u32), little endian.
            let elem = (u64::from(len) << 32) | u64::from(head);
            mem.write_obj(elem.to_le(), addr).map_err(|_| BadAddress {
                addr: addr.0,
                len: USED_ELEM_SIZE as usize,
            })?;
            idx += Wrapping(1);
        }
        self.elems.clear();
        let idx_addr = at(used, 2, 2)?;
        mem.store(idx.0.to_le(), idx_addr, Ordering::Release)
            .map_err(|_| BadAddress {
                addr: idx_addr.0,
                len: 2,
            })?;
        q.set_next_used(idx.0);
        // The used index store must be visible before the driver's event index or flags are
        // read (pairs with the driver's barrier between publishing its event index and
        // re-checking the used index).
        fence(Ordering::SeqCst);
        let avail = GuestAddress(q.avail_ring());
        if q.event_idx_enabled() {
            let ev_addr = at(avail, AVAIL_RING_HEADER + 2 * u64::from(size), 2)?;
            let used_event: u16 = mem
                .load(ev_addr, Ordering::Acquire)
                .map(u16::from_le)
                .map_err(|_| BadAddress {
                    addr: ev_addr.0,
                    len: 2,
                })?;
            Ok(need_event(used_event, idx.0, old.0))
        } else {
            let flags: u16 = mem
                .load(avail, Ordering::Acquire)
                .map(u16::from_le)
                .map_err(|_| BadAddress {
                    addr: avail.0,
                    len: 2,
                })?;
            Ok(u32::from(flags) & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }
    }
}

/// One descriptor, as read from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address of the buffer.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// Why a chain's descriptors cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadDesc {
    /// A `next` index outside the table.
    #[error("descriptor index {0} outside the table")]
    Index(u16),
    /// More descriptors than the table holds: a loop.
    #[error("descriptor chain loops")]
    Loop,
    /// An indirect table (`VIRTIO_RING_F_INDIRECT_DESC` is not offered).
    #[error("indirect descriptor, not negotiated")]
    Indirect,
}

/// The driver's avail index ran more than a queue size ahead of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("avail index {avail} is {ahead} entries ahead of {next} (queue size {size})")]
pub struct Runaway {
    /// The driver's index.
    pub avail: u16,
    /// The device's next entry.
    pub next: u16,
    /// How far ahead.
    pub ahead: u16,
    /// Queue size.
    pub size: u16,
}

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const VRING_DESC_F_INDIRECT: u16 = 4;

/// A split virtqueue's three rings as guest-memory slices, resolved once per batch: after
/// that only buffer addresses need translating (measured with `examples/pair-cost.rs`: the
/// memory table lookups of `virtio-queue`'s per-descriptor reads were a quarter of the
/// path's time). Every offset is checked against the slices; a value the driver wrote is
/// read once.
pub struct Rings<'a> {
    desc: VolatileSlice<'a>,
    avail: VolatileSlice<'a>,
    used: VolatileSlice<'a>,
    size: u16,
}

impl<'a> Rings<'a> {
    /// The rings of `q` in `mem`, or an error if one is not inside one memory region.
    pub fn new(mem: &'a Mem, q: &Queue) -> Result<Self, BadAddress> {
        let size = q.size().max(1);
        let n = usize::from(size);
        Ok(Rings {
            desc: guest_slice(mem, GuestAddress(q.desc_table()), 16 * n)?,
            avail: guest_slice(mem, GuestAddress(q.avail_ring()), 4 + 2 * n + 2)?,
            used: guest_slice(mem, GuestAddress(q.used_ring()), 4 + 8 * n + 2)?,
            size,
        })
    }

    /// Entries the driver made available after `next` (acquire: their contents are visible).
    pub fn pending(&self, next: u16) -> Result<u16, Runaway> {
        let avail: u16 = self
            .avail
            .load::<u16>(2, Ordering::Acquire)
            .map(u16::from_le)
            .unwrap_or(next);
        let ahead = avail.wrapping_sub(next);
        if ahead > self.size {
            return Err(Runaway {
                avail,
                next,
                ahead,
                size: self.size,
            });
        }
        Ok(ahead)
    }

    /// The head of avail entry `i` (modulo the queue size), or `None` if the driver put an
    /// index outside the table there.
    pub fn head(&self, i: u16) -> Option<u16> {
        let at = 4 + 2 * usize::from(i % self.size);
        // Ordered after the avail index by `pending`'s acquire load.
        let h = self
            .avail
            .load::<u16>(at, Ordering::Relaxed)
            .ok()
            .map(u16::from_le)?;
        (h < self.size).then_some(h)
    }

    /// The descriptors of the chain that starts at `head` (`head` < queue size).
    pub fn chain(&self, head: u16) -> Chain<'_, 'a> {
        Chain {
            rings: self,
            next: Some(head),
            ttl: self.size,
        }
    }

    /// Descriptor `i`: two aligned 8-byte loads (`len`, `flags` and `next` share the second;
    /// the table is 16-byte aligned, checked when the frontend set it).
    fn desc(&self, i: u16) -> Option<(u64, u32, u16, u16)> {
        let at = 16 * usize::from(i);
        let addr = u64::from_le(self.desc.load::<u64>(at, Ordering::Relaxed).ok()?);
        let w = u64::from_le(self.desc.load::<u64>(at + 8, Ordering::Relaxed).ok()?);
        Some((addr, w as u32, (w >> 32) as u16, (w >> 48) as u16))
    }

    /// Writes `batch` into the used ring, stores the used index once, and returns whether
    /// the driver wants a notification (as [`UsedBatch::publish`]).
    pub fn publish(&self, q: &mut Queue, batch: &mut UsedBatch) -> Result<bool, BadAddress> {
        if batch.elems.is_empty() {
            return Ok(false);
        }
        let old = Wrapping(q.next_used());
        let mut idx = old;
        let used_ring = q.used_ring();
        let bad = |at: usize| BadAddress {
            addr: used_ring.wrapping_add(at as u64),
            len: 8,
        };
        for &(head, len) in &batch.elems {
            // Two 4-byte stores: an element is only 4-byte aligned. The release store of
            // the index below publishes them.
            let at = 4 + 8 * usize::from(idx.0 % self.size);
            self.used
                .store(u32::from(head).to_le(), at, Ordering::Relaxed)
                .map_err(|_| bad(at))?;
            self.used
                .store(len.to_le(), at + 4, Ordering::Relaxed)
                .map_err(|_| bad(at))?;
            idx += Wrapping(1);
        }
        batch.elems.clear();
        self.used
            .store(idx.0.to_le(), 2, Ordering::Release)
            .map_err(|_| bad(2))?;
        q.set_next_used(idx.0);
        fence(Ordering::SeqCst);
        if q.event_idx_enabled() {
            let at = 4 + 2 * usize::from(self.size);
            let used_event = self
                .avail
                .load::<u16>(at, Ordering::Acquire)
                .map(u16::from_le)
                .map_err(|_| bad(at))?;
            Ok(need_event(used_event, idx.0, old.0))
        } else {
            let flags = self
                .avail
                .load::<u16>(0, Ordering::Acquire)
                .map(u16::from_le)
                .map_err(|_| bad(0))?;
            Ok(u32::from(flags) & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }
    }
}

/// The descriptors of one chain, followed with every index checked and at most a queue
/// size of them (a loop ends it with [`BadDesc::Loop`]).
pub struct Chain<'r, 'a> {
    rings: &'r Rings<'a>,
    next: Option<u16>,
    ttl: u16,
}

impl Iterator for Chain<'_, '_> {
    type Item = Result<Desc, BadDesc>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.next.take()?;
        if i >= self.rings.size {
            return Some(Err(BadDesc::Index(i)));
        }
        if self.ttl == 0 {
            return Some(Err(BadDesc::Loop));
        }
        self.ttl -= 1;
        let Some((addr, len, flags, next)) = self.rings.desc(i) else {
            return Some(Err(BadDesc::Index(i)));
        };
        if flags & VRING_DESC_F_INDIRECT != 0 {
            return Some(Err(BadDesc::Indirect));
        }
        if flags & VRING_DESC_F_NEXT != 0 {
            self.next = Some(next);
        }
        Some(Ok(Desc {
            addr,
            len,
            write: flags & VRING_DESC_F_WRITE != 0,
        }))
    }
}

/// `base + ofs`, or an error if that wraps around (a hostile ring address).
#[inline]
fn at(base: GuestAddress, ofs: u64, len: usize) -> Result<GuestAddress, BadAddress> {
    base.checked_add(ofs)
        .ok_or(BadAddress { addr: base.0, len })
}

/// `vring_need_event`: whether moving the used index from `old` to `new` crossed the
/// driver's `event` index.
#[inline]
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// `len` bytes of guest memory at `addr`, or an error if any of it is outside guest memory
/// (or straddles two memory regions, which no driver does for a packet buffer).
#[inline]
pub fn guest_slice(
    mem: &Mem,
    addr: GuestAddress,
    len: usize,
) -> Result<VolatileSlice<'_>, BadAddress> {
    mem.get_slice(addr, len)
        .map_err(|_| BadAddress { addr: addr.0, len })
}

/// Why a queue cannot be served any more (the frontend must reset the device).
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    /// The avail ring is unusable (its index ran more than a queue size ahead).
    #[error("{queue} virtqueue: {source}")]
    Queue {
        /// Which queue.
        queue: &'static str,
        /// The queue's error.
        #[source]
        source: virtio_queue::Error,
    },
    /// The driver's avail index ran away, or put an index outside the table in the ring.
    #[error("{queue} virtqueue: avail ring")]
    Avail {
        /// Which queue.
        queue: &'static str,
        /// What was wrong.
        #[source]
        source: Option<Runaway>,
    },
    /// The used ring is outside guest memory.
    #[error("{queue} virtqueue: used ring")]
    Used {
        /// Which queue.
        queue: &'static str,
        /// The failed access.
        #[source]
        source: BadAddress,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn need_event_matches_the_virtio_definition() {
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(need_event(5, 10, 3), "event inside the batch");
        assert!(!need_event(10, 10, 3));
        assert!(need_event(65535, 2, 65534), "across the wrap");
    }

    #[test]
    fn a_batch_stores_the_used_index_once_with_every_element() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut b = UsedBatch::with_capacity(8);
        for i in 0..5 {
            b.push(i, 100 + u32::from(i));
        }
        assert!(
            b.publish(&mut q, &m).unwrap(),
            "no NO_INTERRUPT flag: notify"
        );
        assert!(b.is_empty());
        assert_eq!(vq.used().idx().load(), 5);
        for i in 0..5u16 {
            let e = vq.used().ring().ref_at(usize::from(i)).unwrap().load();
            assert_eq!((e.id(), e.len()), (u32::from(i), 100 + u32::from(i)));
        }
        assert_eq!(q.next_used(), 5);
        // NO_INTERRUPT suppresses the notification.
        m.write_obj(VRING_AVAIL_F_NO_INTERRUPT as u16, vq.avail_addr())
            .unwrap();
        b.push(7, 1);
        assert!(!b.publish(&mut q, &m).unwrap());
        assert_eq!(vq.used().idx().load(), 6);
    }

    #[test]
    fn with_event_idx_only_a_batch_crossing_used_event_notifies() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        // The mock lays the used ring over the avail ring's tail: move it away.
        q.set_used_ring_address(Some(0x2000), Some(0));
        q.set_event_idx(true);
        // used_event follows the avail ring's 16 entries.
        m.write_obj(3u16, vq.avail_addr().unchecked_add(4 + 2 * 16))
            .unwrap();
        let mut b = UsedBatch::with_capacity(8);
        b.push(0, 1);
        b.push(1, 1);
        assert!(
            !b.publish(&mut q, &m).unwrap(),
            "used 0..2 does not cross 3"
        );
        b.push(2, 1);
        b.push(3, 1);
        assert!(b.publish(&mut q, &m).unwrap(), "used 2..4 crosses 3");
    }

    #[test]
    fn a_used_ring_outside_guest_memory_is_an_error_not_a_panic() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        q.set_used_ring_address(Some(0xffff_0000), Some(0));
        let mut b = UsedBatch::with_capacity(1);
        b.push(0, 1);
        assert!(b.publish(&mut q, &m).is_err());
        // Offsets from a ring at the very top of the address space must not wrap.
        q.set_used_ring_address(Some(0xffff_fffc), Some(0xffff_ffff));
        b.push(0, 1);
        assert!(b.publish(&mut q, &m).is_err());
    }
}
