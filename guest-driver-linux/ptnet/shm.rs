// SPDX-License-Identifier: GPL-2.0

//! The memory the driver shares, and the only module that touches it: region 0 (the host
//! port's netmap memory, mapped write-back: [`Region`]), the CSB ([`Csb`]), and each ring's
//! header, slots and buffers in region 0 with the driver's kring copy behind the ring's
//! `busy` flag ([`RingHandle`], [`KringGuard`], [`SlotRef`], [`Buf`]). The driver logic holds
//! no raw pointer into any of it.
//!
//! Region 0 changes under the driver at any moment: the device (the host port) writes it,
//! and so do the guest's netmap applications, which map it whole; the device writes the CSB.
//! Hence the rules every access here follows:
//! * no Rust reference to a non-atomic field of shared memory is ever made: plain fields (the
//!   `netmap_if`, ring offsets, a ring header's fixed fields, slots) are read and written by
//!   value with volatile accesses, buffer bytes are moved with raw copies; only atomics (a
//!   ring's `head`/`cur`/`tail`, the CSB entries) are reached through references;
//! * every access is bounds-checked against the mapping before it is made: by [`Region`] on
//!   each call, by [`RingHandle::new`] once for the ring's header and slots, by
//!   [`RingHandle::buf`] for each buffer, so no value found in shared memory can move an
//!   access outside it;
//! * what is read is a copy, made once: the caller validates it, then uses only the copy.
//!
//! # Invariants
//!
//! * [`Region`]: `base` is a `memremap` mapping of `len` bytes, inside the device's
//!   shared-memory window, live until the `Region` is dropped.
//! * [`Csb`]: its memory holds an atok array and a ktoa array of `num_rings` 64-byte entries
//!   each (`num_rings > 0`), 64-byte aligned: one page-aligned allocation (virtio: the atok
//!   array, then the ktoa array, zeroed when allocated), or two ranges checked to lie inside a
//!   region it keeps mapped (ivshmem).
//! * [`RingHandle`]: its header (8-byte aligned) and its `num_slots > 0` slots lie inside its
//!   region, which it keeps mapped (an [`Arc`]). Its kring copy is reached only through a
//!   [`KringGuard`], and one exists only while it holds the ring's `busy` flag.
//! * [`SlotRef`] and [`Buf`]: a slot, or `len` bytes, inside a region that a [`RingHandle`]
//!   borrowed for `'a` keeps mapped.

use crate::{
    netdev::{RxSkb, Skb},
    virtio,
};
use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    mem::{offset_of, size_of, MaybeUninit},
    ops::{Deref, DerefMut},
    ptr::NonNull,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};
use kernel::{bindings, error::to_result, mm::virt::VmaNew, prelude::*, sync::Arc};
use ptnet_spec::{
    csb::{CsbAtok, CsbKtoa, CSB_ENTRY_SIZE},
    ivshmem::{IvshmemDir, IvshmemHeader},
    netmap::{NetmapIf, NetmapRing, NetmapSlot, NETMAP_RING_SLOTS_OFS},
    ring::KringIndices,
};

/// Plain data: any bytes make a valid value, so it may be read out of memory that others
/// write.
///
/// # Safety
///
/// Every bit pattern of `size_of::<Self>()` bytes must be a valid `Self`, and `Self` must have
/// no padding.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: an integer: every bit pattern is a value, no padding.
unsafe impl Plain for u16 {}
// SAFETY: as for `u16`.
unsafe impl Plain for u32 {}
// SAFETY: as for `u16`.
unsafe impl Plain for i64 {}
// SAFETY: a byte array and `u32`s, `repr(C)` without padding (ptnet-spec lays it out for
// netmap's ABI: 56 bytes).
unsafe impl Plain for NetmapIf {}
// SAFETY: integers, `repr(C)` without padding (ptnet-spec asserts its 32-byte layout).
unsafe impl Plain for IvshmemDir {}
// SAFETY: integers and a `PtnetConfig` (integers and a byte array), `repr(C)` without padding
// (ptnet-spec asserts the 96- and 64-byte layouts).
unsafe impl Plain for IvshmemHeader {}

/// Region 0 mapped write-back for the driver; unmapped on drop.
pub(crate) struct Region {
    base: NonNull<u8>,
    /// Bytes mapped (the configuration's `mem_size`).
    len: usize,
    /// Guest-physical base of the device's shared-memory window.
    phys: u64,
    /// Length of that window (at least `len`).
    window: u64,
}

// SAFETY: the mapping is memory any CPU may access; `Region` gives out no reference into it
// (values are copied in and out with volatile accesses), so it may move and be shared across
// threads like the address it is.
unsafe impl Send for Region {}
// SAFETY: see `Send`.
unsafe impl Sync for Region {}

impl Region {
    /// Maps the first `len` bytes of the device's shared-memory window `win` (a CPU mapping
    /// only: the device maps its own side). `None` if `len` exceeds the window or the mapping
    /// fails.
    pub(crate) fn map(win: virtio::ShmRegion, len: usize) -> Option<Self> {
        if len as u64 > win.len {
            return None;
        }
        // SAFETY: `win.addr..win.addr + len` lies inside the device's shared-memory window
        // (checked just above), memory that no one else in the kernel maps.
        let p = unsafe { bindings::memremap(win.addr, len, bindings::MEMREMAP_WB as c_ulong) };
        NonNull::new(p.cast::<u8>()).map(|base| Region {
            base,
            len,
            phys: win.addr,
            window: win.len,
        })
    }

    /// Guest-physical base of region 0.
    pub(crate) fn phys(&self) -> u64 {
        self.phys
    }

    /// Where `size_of::<T>()` bytes from byte `ofs` on are, if they lie inside the mapping.
    fn at<T>(&self, ofs: usize) -> Option<*mut T> {
        let end = ofs.checked_add(size_of::<T>())?;
        if end > self.len {
            return None;
        }
        // SAFETY: `ofs + size_of::<T>() <= len`: inside the mapping (type invariant).
        Some(unsafe { self.base.as_ptr().add(ofs) }.cast::<T>())
    }

    /// Reads the `T` at byte `ofs` once, or `None` if it does not lie inside the mapping.
    /// Whatever is there (half written by someone else, say) is a valid `T`: the caller
    /// validates it.
    pub(crate) fn read<T: Plain>(&self, ofs: usize) -> Option<T> {
        let p = self.at::<T>(ofs)?;
        if p.is_aligned() {
            // SAFETY: `p` is inside the mapping (`at`) and aligned; `T: Plain` takes any
            // bytes.
            return Some(unsafe { p.read_volatile() });
        }
        // A misaligned offset (the device chooses `nifp_offset`): a byte at a time.
        let mut v = MaybeUninit::<T>::uninit();
        let (src, dst) = (p.cast::<u8>(), v.as_mut_ptr().cast::<u8>());
        for i in 0..size_of::<T>() {
            // SAFETY: byte `i < size_of::<T>()` of the source (inside the mapping, `at`) and
            // of the local `v`.
            unsafe { dst.add(i).write(src.add(i).read_volatile()) };
        }
        // SAFETY: every byte of `v` was written just above, and `T: Plain` takes any bytes.
        Some(unsafe { v.assume_init() })
    }

    /// Writes `v` at byte `ofs`; does nothing (and returns false) if it does not lie inside
    /// the mapping.
    pub(crate) fn write<T: Plain>(&self, ofs: usize, v: T) -> bool {
        let Some(p) = self.at::<T>(ofs) else {
            return false;
        };
        if p.is_aligned() {
            // SAFETY: `p` is inside the mapping (`at`) and aligned; plain data, no reference
            // to the destination is made.
            unsafe { p.write_volatile(v) };
            return true;
        }
        let (src, dst) = ((&raw const v).cast::<u8>(), p.cast::<u8>());
        for i in 0..size_of::<T>() {
            // SAFETY: byte `i < size_of::<T>()` of the local `v` (`T: Plain`: no padding, so
            // every byte is initialised) and of the destination (inside the mapping).
            unsafe { dst.add(i).write_volatile(src.add(i).read()) };
        }
        true
    }

    /// The fixed fields of the ring header at byte `ofs`, read once each, or `None` if the
    /// header does not lie inside the mapping.
    pub(crate) fn read_ring_layout(&self, ofs: usize) -> Option<RingLayout> {
        self.at::<NetmapRing>(ofs)?;
        Some(RingLayout {
            ofs,
            buf_ofs: self.read(ofs + offset_of!(NetmapRing, buf_ofs))?,
            nr_buf_size: self.read(ofs + offset_of!(NetmapRing, nr_buf_size))?,
            ringid: self.read(ofs + offset_of!(NetmapRing, ringid))?,
            dir: self.read(ofs + offset_of!(NetmapRing, dir))?,
        })
    }

    /// Maps the whole region (rounded up to pages) into the VMA an application's `mmap` of
    /// `/dev/netmap` is setting up. `EINVAL` for an offset, or a length beyond the region.
    pub(crate) fn map_to_user(&self, vma: &VmaNew) -> Result {
        // SAFETY: `vma` is being set up by the core for this call (`VmaNew`), and `vm_pgoff`
        // is a plain field the core filled in before calling `mmap`.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let page = bindings::PAGE_SIZE as u64;
        let len = (self.len as u64).div_ceil(page) * page;
        if pgoff != 0 || (vma.end() - vma.start()) as u64 > len || len > self.window {
            return Err(EINVAL);
        }
        // SAFETY: maps `len` bytes of the device's own shared-memory window (checked to fit
        // above) into a VMA being set up; the helper checks the VMA's size against `len`.
        to_result(unsafe { bindings::vm_iomap_memory(vma.as_ptr(), self.phys, len as _) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: returned by `memremap` in `map`; the owner is going away, and every
        // `RingHandle` keeps its `Arc` of the region, so nothing can use the mapping any more.
        unsafe { bindings::memunmap(self.base.as_ptr().cast()) };
    }
}

/// Where a CSB lives.
enum CsbMem {
    /// The virtio transport: guest memory the driver allocated, the atok array then the ktoa
    /// array.
    Coherent(virtio::Coherent),
    /// The ivshmem transport: the device block in region 0 (SPEC §6.1), the arrays at the
    /// offsets the device gave, kept mapped by the `Arc`.
    InRegion {
        region: Arc<Region>,
        atok: usize,
        ktoa: usize,
    },
}

/// The CSB: per ring an atok entry (the driver writes it) and a ktoa entry (the device
/// writes it), in memory the device can address.
pub(crate) struct Csb {
    mem: CsbMem,
    num_rings: u32,
}

impl Csb {
    /// Allocates the two arrays of `num_rings` entries, zeroed.
    pub(crate) fn alloc<T: virtio::Driver>(
        dev: &virtio::Device<T>,
        num_rings: u32,
    ) -> Result<Self> {
        if num_rings == 0 {
            return Err(EINVAL);
        }
        let array = num_rings as usize * CSB_ENTRY_SIZE as usize;
        Ok(Csb {
            mem: CsbMem::Coherent(dev.alloc_coherent(2 * array)?),
            num_rings,
        })
    }

    /// The CSB the device keeps in region 0: `num_rings` atok entries at byte `atok`, as many
    /// ktoa entries at `ktoa`. `EINVAL` unless both arrays lie inside the mapping, 64-byte
    /// aligned, and `num_rings > 0`.
    pub(crate) fn in_region(
        region: &Arc<Region>,
        atok: u64,
        ktoa: u64,
        num_rings: u32,
    ) -> Result<Self> {
        let len = num_rings as usize * CSB_ENTRY_SIZE as usize;
        let fits = |o: u64| {
            usize::try_from(o).ok().filter(|o| {
                o % CSB_ENTRY_SIZE as usize == 0
                    && o.checked_add(len).is_some_and(|e| e <= region.len)
            })
        };
        match (fits(atok), fits(ktoa)) {
            (Some(atok), Some(ktoa)) if num_rings > 0 => Ok(Csb {
                mem: CsbMem::InRegion {
                    region: region.clone(),
                    atok,
                    ktoa,
                },
                num_rings,
            }),
            _ => Err(EINVAL),
        }
    }

    /// The device address of the atok array (virtio transport; 0 on ivshmem, where the
    /// device chose it).
    pub(crate) fn atok_addr(&self) -> u64 {
        match &self.mem {
            CsbMem::Coherent(m) => m.dma_addr(),
            CsbMem::InRegion { .. } => 0,
        }
    }

    /// The device address of the ktoa array (virtio transport; 0 on ivshmem).
    pub(crate) fn ktoa_addr(&self) -> u64 {
        match &self.mem {
            CsbMem::Coherent(m) => {
                m.dma_addr() + u64::from(self.num_rings) * u64::from(CSB_ENTRY_SIZE)
            }
            CsbMem::InRegion { .. } => 0,
        }
    }

    /// The entries of ring `k` (CSB order: TX rings, then RX rings), `k` taken modulo the
    /// number of rings.
    pub(crate) fn entries(&self, k: u32) -> (&CsbAtok, &CsbKtoa) {
        let entry = CSB_ENTRY_SIZE as usize;
        // PANIC: `num_rings > 0` (type invariant), so `%` cannot divide by zero.
        let k = (k % self.num_rings) as usize;
        let (atok, ktoa) = match &self.mem {
            CsbMem::Coherent(m) => {
                let base = m.cpu_addr();
                // SAFETY: the allocation holds two arrays of `num_rings` entries (type
                // invariant): both offsets are inside it.
                unsafe { (base, base.add(self.num_rings as usize * entry)) }
            }
            // SAFETY: `in_region` checked that both arrays lie inside the mapping.
            CsbMem::InRegion { region, atok, ktoa } => unsafe {
                let base = region.base.as_ptr();
                (base.add(*atok), base.add(*ktoa))
            },
        };
        // SAFETY: each array holds `num_rings` 64-byte entries, 64-byte aligned (type
        // invariant; a region mapping is page aligned), and `k < num_rings`; both entry types
        // are 64-byte structs of atomics only, valid for any bit pattern, so references to
        // them are sound however the device (or, on ivshmem, a guest application mapping
        // region 0) writes them; the memory lives as long as `self`.
        unsafe {
            (
                &*atok.add(k * entry).cast::<CsbAtok>(),
                &*ktoa.add(k * entry).cast::<CsbKtoa>(),
            )
        }
    }
}

/// Where a ring is and what its header's fixed fields were when the driver found it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingLayout {
    /// Offset of the `netmap_ring` in region 0.
    pub(crate) ofs: usize,
    pub(crate) buf_ofs: i64,
    pub(crate) nr_buf_size: u32,
    pub(crate) ringid: u16,
    pub(crate) dir: u16,
}

/// One ring in region 0 (header, slots, buffers) and the driver's kring copy of its indices.
pub(crate) struct RingHandle {
    region: Arc<Region>,
    /// The `netmap_ring` header (inside `region`, 8-byte aligned).
    hdr: NonNull<NetmapRing>,
    /// Its slot array (inside `region`, `num_slots` entries).
    slots: NonNull<NetmapSlot>,
    /// Slots in the ring (from the configuration, not from the shared header).
    num_slots: u32,
    /// The ring's place and its header's fixed fields as found at probe, rewritten at every
    /// registration (an earlier application may have scribbled over them).
    layout: RingLayout,
    /// Offset in region 0 of this ring's buffer 0 (from `buf_ofs` as read once at probe).
    buf_base: usize,
    /// Bytes of a buffer (from the configuration).
    buf_size: usize,
    /// Kernel copy of the indices; only reached through a [`KringGuard`].
    kring: UnsafeCell<KringIndices>,
    /// netmap's `nm_kr_tryget`: one sync at a time per ring (netmap API, NAPI, xmit).
    busy: AtomicBool,
}

// SAFETY: `hdr` and `slots` point into the region the handle keeps mapped, and are only
// accessed with atomics (`head`, `cur`, `tail`) and volatile reads and writes; the kring copy
// is only reached through a `KringGuard`, which holds `busy` (taken with an atomic swap), so
// one thread at a time touches it.
unsafe impl Send for RingHandle {}
// SAFETY: see `Send`.
unsafe impl Sync for RingHandle {}

impl RingHandle {
    /// The ring of `num_slots` slots found at `layout.ofs` in `region`, with buffers of
    /// `buf_size` bytes from byte `buf_base` of the region on, and `kring` as its kernel
    /// indices. `None` unless its header (8-byte aligned) and all its slots lie inside the
    /// region and `num_slots > 0`.
    pub(crate) fn new(
        region: &Arc<Region>,
        layout: RingLayout,
        num_slots: u32,
        buf_base: usize,
        buf_size: u32,
        kring: KringIndices,
    ) -> Option<Self> {
        let ofs = layout.ofs;
        let end = (num_slots as usize)
            .checked_mul(size_of::<NetmapSlot>())?
            .checked_add(NETMAP_RING_SLOTS_OFS)?
            .checked_add(ofs)?;
        if num_slots == 0 || ofs % 8 != 0 || end > region.len {
            return None;
        }
        // SAFETY: `ofs + NETMAP_RING_SLOTS_OFS + num_slots * size_of::<NetmapSlot>() <= len`
        // (checked above), so both offsets are inside the mapping.
        let (hdr, slots) = unsafe {
            let h = region.base.as_ptr().add(ofs);
            (
                NonNull::new_unchecked(h.cast::<NetmapRing>()),
                NonNull::new_unchecked(h.add(NETMAP_RING_SLOTS_OFS).cast::<NetmapSlot>()),
            )
        };
        Some(RingHandle {
            region: region.clone(),
            hdr,
            slots,
            num_slots,
            layout,
            buf_base,
            buf_size: buf_size as usize,
            kring: UnsafeCell::new(kring),
            busy: AtomicBool::new(false),
        })
    }

    /// Slots in the ring.
    pub(crate) fn num_slots(&self) -> u32 {
        self.num_slots
    }

    /// Where the ring is, and its header's fixed fields, as found at probe.
    pub(crate) fn layout(&self) -> &RingLayout {
        &self.layout
    }

    fn head(&self) -> &AtomicU32 {
        // SAFETY: the header lies inside the mapped region (type invariant); `head` is an
        // atomic, so a reference to it is sound however others write it.
        unsafe { &*(&raw const (*self.hdr.as_ptr()).head) }
    }

    fn cur(&self) -> &AtomicU32 {
        // SAFETY: as in `head`.
        unsafe { &*(&raw const (*self.hdr.as_ptr()).cur) }
    }

    fn tail(&self) -> &AtomicU32 {
        // SAFETY: as in `head`.
        unsafe { &*(&raw const (*self.hdr.as_ptr()).tail) }
    }

    /// The application's `head` and `cur` (in that order), unvalidated.
    pub(crate) fn head_cur(&self) -> (u32, u32) {
        let head = self.head().load(Ordering::Acquire);
        let cur = self.cur().load(Ordering::Acquire);
        (head, cur)
    }

    /// Publishes `tail` to the application (after the slots it hands over).
    pub(crate) fn set_tail(&self, tail: u32) {
        self.tail().store(tail, Ordering::Release);
    }

    /// netmap's `netmap_ring_reinit`: the application sees the kring's `rhead`, `rcur` and
    /// `rtail` again.
    pub(crate) fn reinit(&self, kr: &KringIndices) {
        self.head().store(kr.rhead, Ordering::Relaxed);
        self.cur().store(kr.rcur, Ordering::Relaxed);
        self.tail().store(kr.rtail, Ordering::Release);
    }

    /// Rewrites the header's fixed fields from the layout found at probe.
    pub(crate) fn restore_header(&self) {
        let (r, l) = (&self.region, &self.layout);
        r.write(l.ofs + offset_of!(NetmapRing, buf_ofs), l.buf_ofs);
        r.write(l.ofs + offset_of!(NetmapRing, num_slots), self.num_slots);
        r.write(l.ofs + offset_of!(NetmapRing, nr_buf_size), l.nr_buf_size);
        r.write(l.ofs + offset_of!(NetmapRing, ringid), l.ringid);
        r.write(l.ofs + offset_of!(NetmapRing, dir), l.dir);
    }

    /// Slot `i` of this ring (`i` taken modulo the ring size).
    pub(crate) fn slot(&self, i: u32) -> SlotRef<'_> {
        // PANIC: `num_slots > 0` (type invariant).
        let i = (i % self.num_slots) as usize;
        // SAFETY: the slot array of `num_slots` entries lies inside the mapping (type
        // invariant) and `i < num_slots`.
        let ptr = unsafe { NonNull::new_unchecked(self.slots.as_ptr().add(i)) };
        SlotRef {
            ptr,
            _ring: PhantomData,
        }
    }

    /// Buffer `idx` of this ring, if it lies inside the region.
    pub(crate) fn buf(&self, idx: u32) -> Option<Buf<'_>> {
        let bs = self.buf_size;
        let start = (idx as usize).checked_mul(bs)?.checked_add(self.buf_base)?;
        if start.checked_add(bs)? > self.region.len {
            return None;
        }
        // SAFETY: `start + buf_size <= len`, so the buffer lies inside the mapping, which
        // `self` keeps mapped for as long as the handle is borrowed.
        let ptr = unsafe { NonNull::new_unchecked(self.region.base.as_ptr().add(start)) };
        Some(Buf {
            ptr,
            len: bs,
            _ring: PhantomData,
        })
    }

    /// netmap's `nm_kr_tryget` (its first half: whether the device still has a backend is
    /// the caller's to check): takes the ring's `busy` flag (a sequentially consistent swap)
    /// unless someone holds it. The guard gives the kring indices and releases the flag when
    /// dropped.
    pub(crate) fn try_take(&self) -> Option<KringGuard<'_>> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(KringGuard { ring: self })
    }

    /// Takes the ring however long another holds it, calling `wait` between tries.
    fn take_waiting(&self, wait: &impl Fn()) -> KringGuard<'_> {
        while self.busy.swap(true, Ordering::SeqCst) {
            wait();
        }
        KringGuard { ring: self }
    }

    /// Whether someone holds the ring (a sequentially consistent load).
    pub(crate) fn is_taken(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Ends what [`RingHandle::try_take`] started.
    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// A ring's `busy` flag, held: access to its kring indices (netmap's `nm_kr_tryget` ...
/// `nm_kr_put`). Released when dropped.
pub(crate) struct KringGuard<'a> {
    ring: &'a RingHandle,
}

impl Deref for KringGuard<'_> {
    type Target = KringIndices;

    fn deref(&self) -> &KringIndices {
        // SAFETY: the guard holds `busy` (it exists only then), so nothing else reaches the
        // kring copy until it is dropped.
        unsafe { &*self.ring.kring.get() }
    }
}

impl DerefMut for KringGuard<'_> {
    fn deref_mut(&mut self) -> &mut KringIndices {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.ring.kring.get() }
    }
}

impl Drop for KringGuard<'_> {
    fn drop(&mut self) {
        self.ring.release();
    }
}

/// Every ring of a set held at once (recovery: their indices change together), released in
/// order when dropped.
pub(crate) struct AllHeld<'a, R: AsRef<RingHandle>> {
    rings: &'a [R],
}

impl<'a, R: AsRef<RingHandle>> AllHeld<'a, R> {
    /// Takes every ring of `rings` in order, however long another holds it (calling `wait`
    /// between tries), and once it is taken calls `each` with it and its kring indices.
    pub(crate) fn take(
        rings: &'a [R],
        wait: impl Fn(),
        mut each: impl FnMut(&R, &mut KringIndices),
    ) -> Self {
        for r in rings {
            let mut g = r.as_ref().take_waiting(&wait);
            each(r, &mut g);
            // Held on behalf of `Self`, which releases it.
            core::mem::forget(g);
        }
        AllHeld { rings }
    }
}

impl<R: AsRef<RingHandle>> Drop for AllHeld<'_, R> {
    fn drop(&mut self) {
        for r in self.rings {
            r.as_ref().release();
        }
    }
}

/// One slot of a ring: its fields read and written by value, one volatile access each.
pub(crate) struct SlotRef<'a> {
    ptr: NonNull<NetmapSlot>,
    _ring: PhantomData<&'a RingHandle>,
}

impl SlotRef<'_> {
    /// The slot's buffer index, read once (untrusted).
    pub(crate) fn buf_idx(&self) -> u32 {
        // SAFETY: the slot lies inside a mapped region (type invariant); a plain field read
        // by value.
        unsafe { (&raw const (*self.ptr.as_ptr()).buf_idx).read_volatile() }
    }

    /// The slot's length and flags, read once each (untrusted).
    pub(crate) fn len_flags(&self) -> (u16, u16) {
        let s = self.ptr.as_ptr();
        // SAFETY: as in `buf_idx`.
        unsafe {
            (
                (&raw const (*s).len).read_volatile(),
                (&raw const (*s).flags).read_volatile(),
            )
        }
    }

    /// Sets the slot's length and flags.
    pub(crate) fn set_len_flags(&self, len: u16, flags: u16) {
        let s = self.ptr.as_ptr();
        // SAFETY: as in `buf_idx`; plain stores, no reference to the slot is made.
        unsafe {
            (&raw mut (*s).len).write_volatile(len);
            (&raw mut (*s).flags).write_volatile(flags);
        }
    }
}

/// One buffer of a ring, bounded: bytes are copied in and out (raw copies), never reached
/// through a Rust reference, so a concurrent writer can garble a copy but never extend it
/// past the buffer.
pub(crate) struct Buf<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _ring: PhantomData<&'a RingHandle>,
}

impl Buf<'_> {
    /// Whether `len` bytes from byte `ofs` on lie inside the buffer.
    fn fits(&self, ofs: usize, len: usize) -> bool {
        ofs.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Copies `src` into the buffer from byte `ofs` on, as much as fits; returns how many
    /// bytes were copied.
    pub(crate) fn write(&self, ofs: usize, src: &[u8]) -> usize {
        let n = src.len().min(self.len.saturating_sub(ofs));
        if n == 0 {
            return 0;
        }
        // SAFETY: `ofs + n <= len`, so the destination lies inside the buffer (type
        // invariant); `src` is the caller's own memory, not shared.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(ofs), n) };
        n
    }

    /// Copies bytes `ofs..` of the buffer into `out`, as many as fit; returns how many.
    pub(crate) fn read(&self, ofs: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len.saturating_sub(ofs));
        if n == 0 {
            return 0;
        }
        // SAFETY: as in `write`, the other way round.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(ofs), out.as_mut_ptr(), n) };
        n
    }

    /// Copies `len` bytes of `skb`'s frame from `skb_off` on into the buffer at `ofs`.
    /// `EINVAL` if they do not fit in the buffer.
    pub(crate) fn copy_from_skb(&self, ofs: u32, skb: &Skb, skb_off: u32, len: u32) -> Result {
        if !self.fits(ofs as usize, len as usize) {
            return Err(EINVAL);
        }
        // SAFETY: `ofs + len <= self.len` (checked above): the destination lies inside the
        // buffer (type invariant); the socket-buffer layer writes it with a raw copy.
        unsafe { skb.copy_to(skb_off, self.ptr.as_ptr().add(ofs as usize), len) }
    }

    /// Appends bytes `ofs..ofs + len` of the buffer to the frame being received in `skb`.
    /// `EINVAL` if they do not lie inside the buffer.
    pub(crate) fn append_to(&self, ofs: usize, len: usize, skb: &mut RxSkb) -> Result {
        if !self.fits(ofs, len) {
            return Err(EINVAL);
        }
        // SAFETY: `ofs + len <= self.len` (checked above): the source lies inside the
        // buffer (type invariant), mapped for the borrow of `self`; the socket-buffer layer
        // reads it with raw copies only.
        unsafe { skb.push_raw(self.ptr.as_ptr().add(ofs), len) }
    }
}
