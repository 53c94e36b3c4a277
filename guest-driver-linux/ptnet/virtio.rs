// SPDX-License-Identifier: GPL-2.0

//! A small, safe Rust layer over Linux's virtio core: driver registration, configuration
//! space, virtqueues used as doorbells and interrupt sources, shared-memory regions, and
//! coherent memory the device can address.
//!
//! The kernel crate of Linux 7.3 has no virtio abstraction; this module is that
//! abstraction, kept next to the one driver that needs it. It calls the C API through
//! `kernel::bindings` (the guest kernel's `kernel-patches/0001` adds the virtio and netdev
//! headers and helpers for the inline functions) and is the only place of the driver that
//! does so for virtio.
//!
//! # Invariants
//!
//! * A [`Device<T>`] is only ever handed out by this module's probe/remove trampolines of
//!   driver `T`, for the duration of the callback, so its `struct virtio_device` is alive and
//!   bound to `T` while the reference exists.
//! * A [`Virtqueue`] is created by [`Device::find_vqs`] and destroyed by [`Device::del_vqs`];
//!   the driver keeps them, in [`EventQueues`] with their event buffers, in its device data,
//!   which is dropped (in `remove`, or when probe fails) only after `del_vqs`.
//! * Buffers are posted on and taken back from a queue by [`EventQueues`] alone, and only
//!   with `&mut self` (which the driver has before it publishes its data, so before any
//!   interrupt can reach them) or from that queue's own interrupt (a [`QueueIrq`] of it),
//!   which the core never runs twice at once: calls on one queue are serialised.
//! * `vdev->priv` holds the driver's `Pin<KBox<T>>` (as a foreign pointer) from the end of a
//!   successful probe until the start of remove; the virtqueue callback trampoline reads it,
//!   which is safe because callbacks are only enabled by `device_ready` (after `priv` is set)
//!   and are disabled by the reset in `remove` before `priv` is taken back.

use core::{marker::PhantomData, ptr::NonNull};
use kernel::{bindings, error::to_result, prelude::*, types::ForeignOwnable};

/// What a virtio driver implements.
pub(crate) trait Driver: Sized + Send + Sync + 'static {
    /// The virtio device id this driver binds.
    const DEVICE_ID: u32;
    /// The feature bits the driver accepts (the core negotiates the intersection), read
    /// once when the driver registers (so a module parameter can decide them).
    fn features() -> &'static [u32];

    /// Binds a device. On success the returned data lives until [`Driver::remove`].
    fn probe(dev: &Device<Self>) -> Result<Pin<KBox<Self>>>;

    /// Unbinds the device: must reset it and delete its virtqueues, then drop `data`.
    fn remove(dev: &Device<Self>, data: Pin<KBox<Self>>);

    /// A virtqueue's interrupt (hard-IRQ context), for the queue `irq.index()`.
    fn vq_interrupt(&self, irq: &QueueIrq<'_>);

    /// The device signalled a configuration change.
    fn config_changed(&self) {}
}

/// A virtio device bound to (or being probed by) driver `T` of this module.
pub(crate) struct Device<T: Driver> {
    raw: NonNull<bindings::virtio_device>,
    _driver: PhantomData<fn() -> T>,
}

// SAFETY: `struct virtio_device` may be used from any thread; its config accessors and the
// virtqueue API do their own locking where needed.
unsafe impl<T: Driver> Send for Device<T> {}
// SAFETY: see `Send`; the methods take `&self` and only call thread-safe C functions.
unsafe impl<T: Driver> Sync for Device<T> {}

/// A bound device kept by the driver beyond a callback, for work it defers to process
/// context (handling a configuration change can sleep; the callback cannot).
///
/// # Invariants
///
/// Only [`BoundDevice::get`] reaches the device, and its caller promises what the type
/// cannot know: that remove has not returned yet (a driver cancels its deferred work at the
/// start of remove, after which the core delivers no configuration change).
pub(crate) struct BoundDevice<T: Driver> {
    raw: NonNull<bindings::virtio_device>,
    _driver: PhantomData<fn() -> T>,
}

// SAFETY: as for `Device`.
unsafe impl<T: Driver> Send for BoundDevice<T> {}
// SAFETY: as for `Device`.
unsafe impl<T: Driver> Sync for BoundDevice<T> {}

impl<T: Driver> BoundDevice<T> {
    /// Keeps `dev` (called in probe).
    pub(crate) fn new(dev: &Device<T>) -> Self {
        BoundDevice {
            raw: dev.raw,
            _driver: PhantomData,
        }
    }

    /// The device.
    ///
    /// # Safety
    ///
    /// The device must still be bound to this driver: called from work that remove cancels
    /// (and waits for) before it returns.
    pub(crate) unsafe fn get(&self) -> Device<T> {
        Device {
            raw: self.raw,
            _driver: PhantomData,
        }
    }
}

/// A shared-memory region of a device (`struct virtio_shm_region`): guest-physical.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShmRegion {
    /// Guest-physical start address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

impl<T: Driver> Device<T> {
    fn as_ptr(&self) -> *mut bindings::virtio_device {
        self.raw.as_ptr()
    }

    /// The `struct device` of the virtio device (for `dev_info!` and friends).
    pub(crate) fn as_dev(&self) -> &kernel::device::Device {
        // SAFETY: `dev` is embedded in a live `virtio_device` (type invariant), and
        // `kernel::device::Device` is a transparent wrapper of `struct device`.
        unsafe { kernel::device::Device::from_raw(&raw mut (*self.as_ptr()).dev) }
    }

    /// The `struct device` of the virtio device, as the parent of devices the driver
    /// creates (valid while the device is bound).
    pub(crate) fn raw_dev(&self) -> *mut bindings::device {
        // SAFETY: the device is live (type invariant); we only compute a field address.
        unsafe { &raw mut (*self.as_ptr()).dev }
    }

    /// Whether feature bit `bit` was negotiated by driver `T`. A bit `T` did not ask for is
    /// never negotiated (and the core's `virtio_has_feature` would BUG on it).
    pub(crate) fn has_feature(&self, bit: u32) -> bool {
        if !T::features().contains(&bit) {
            return false;
        }
        // SAFETY: the device is live (type invariant) and `bit` is in the driver's feature
        // table, as `virtio_has_feature` requires.
        unsafe { bindings::virtio_has_feature(self.as_ptr(), bit) }
    }

    /// Reads `buf.len()` bytes of configuration space from `offset`, a byte at a time.
    pub(crate) fn read_config(&self, offset: u32, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: the device is live; the transport bounds-checks config accesses.
            *b = unsafe { bindings::virtio_cread8(self.as_ptr(), offset + i as u32) };
        }
    }

    /// Reads a 16-bit little-endian configuration field.
    pub(crate) fn read_config_u16(&self, offset: u32) -> u16 {
        // SAFETY: the device is live (type invariant).
        unsafe { bindings::virtio_cread16(self.as_ptr(), offset) }
    }

    /// Writes a 64-bit little-endian configuration field.
    pub(crate) fn write_config_u64(&self, offset: u32, value: u64) {
        // SAFETY: the device is live (type invariant).
        unsafe { bindings::virtio_cwrite64(self.as_ptr(), offset, value) }
    }

    /// Finds the device's shared-memory region `id`.
    pub(crate) fn shm_region(&self, id: u8) -> Option<ShmRegion> {
        let mut region = bindings::virtio_shm_region { addr: 0, len: 0 };
        // SAFETY: the device is live; `region` is a valid out-parameter.
        let found = unsafe { bindings::virtio_get_shm_region(self.as_ptr(), &mut region, id) };
        found.then_some(ShmRegion {
            addr: region.addr,
            len: region.len,
        })
    }

    /// Creates `names.len()` virtqueues whose interrupts call `T::vq_interrupt` (the
    /// callback trampoline reads `vdev->priv` as a `Pin<KBox<T>>`: `T` is the driver the
    /// device is bound to, type invariant).
    pub(crate) fn find_vqs(&self, names: &[&'static CStr]) -> Result<KVec<Virtqueue>> {
        let n = names.len();
        let mut infos = KVec::with_capacity(n, GFP_KERNEL)?;
        let mut raws: KVec<*mut bindings::virtqueue> = KVec::with_capacity(n, GFP_KERNEL)?;
        for name in names {
            infos.push(
                bindings::virtqueue_info {
                    name: name.as_char_ptr(),
                    callback: Some(vq_callback::<T>),
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
            raws.push(core::ptr::null_mut(), GFP_KERNEL)?;
        }
        // SAFETY: the device is live; both arrays hold `n` elements.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                self.as_ptr(),
                n as u32,
                raws.as_mut_ptr(),
                infos.as_mut_ptr(),
                core::ptr::null_mut(),
            )
        })?;
        let mut vqs = KVec::with_capacity(n, GFP_KERNEL)?;
        for raw in raws.iter() {
            let Some(raw) = NonNull::new(*raw) else {
                self.del_vqs();
                return Err(EINVAL);
            };
            vqs.push(
                Virtqueue {
                    raw,
                    _not_send: PhantomData,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(vqs)
    }

    /// Deletes every virtqueue of the device. Any [`Virtqueue`] must not be used afterwards.
    pub(crate) fn del_vqs(&self) {
        // SAFETY: the device is live; `del_vqs` is valid after `find_vqs` (and a no-op list
        // walk before it).
        unsafe { bindings::virtio_del_vqs(self.as_ptr()) }
    }

    /// Sets DRIVER_OK: virtqueue callbacks may run from now on.
    pub(crate) fn ready(&self) {
        // SAFETY: the device is live (type invariant).
        unsafe { bindings::virtio_device_ready(self.as_ptr()) }
    }

    /// Resets the device: it stops using every queue and region, and no callback runs
    /// after this returns.
    pub(crate) fn reset(&self) {
        // SAFETY: the device is live (type invariant).
        unsafe { bindings::virtio_reset_device(self.as_ptr()) }
    }

    /// Allocates `size` zeroed bytes the device can address (DMA-coherent, on the
    /// transport's parent device).
    pub(crate) fn alloc_coherent(&self, size: usize) -> Result<Coherent> {
        // SAFETY: the device is live; `parent` is its transport's (PCI) device.
        let dma_dev = unsafe { (*self.as_ptr()).dev.parent };
        let mut handle: bindings::dma_addr_t = 0;
        // SAFETY: `dma_dev` is a live device; `handle` is a valid out-parameter.
        let cpu = unsafe {
            bindings::dma_alloc_attrs(
                dma_dev,
                size,
                &mut handle,
                bindings::GFP_KERNEL | bindings::__GFP_ZERO,
                0,
            )
        };
        let cpu = NonNull::new(cpu.cast::<u8>()).ok_or(ENOMEM)?;
        Ok(Coherent {
            dma_dev,
            cpu,
            dma: handle,
            size,
        })
    }
}

/// Coherent memory shared with a device; freed on drop.
pub(crate) struct Coherent {
    dma_dev: *mut bindings::device,
    cpu: NonNull<u8>,
    dma: bindings::dma_addr_t,
    size: usize,
}

// SAFETY: the allocation is plain memory; the `device` pointer is only used to free it.
unsafe impl Send for Coherent {}
// SAFETY: `&Coherent` only exposes addresses; accesses go through atomics in the users.
unsafe impl Sync for Coherent {}

impl Coherent {
    /// Kernel virtual address.
    pub(crate) fn cpu_addr(&self) -> *mut u8 {
        self.cpu.as_ptr()
    }

    /// Address as the device sees it.
    pub(crate) fn dma_addr(&self) -> u64 {
        self.dma
    }
}

impl Drop for Coherent {
    fn drop(&mut self) {
        // SAFETY: allocated by `dma_alloc_attrs` with exactly these arguments.
        unsafe {
            bindings::dma_free_attrs(
                self.dma_dev,
                self.size,
                self.cpu.as_ptr().cast(),
                self.dma,
                0,
            )
        };
    }
}

/// One virtqueue of a device (the driver keeps it in an [`EventQueues`]).
pub(crate) struct Virtqueue {
    raw: NonNull<bindings::virtqueue>,
    _not_send: PhantomData<*mut ()>,
}

// SAFETY: the virtqueue API may be called from any context as long as calls on one queue
// are serialised, which the users of `&mut Virtqueue` / the driver's locks guarantee;
// `notify` alone is safe concurrently (it only writes the doorbell).
unsafe impl Send for Virtqueue {}
// SAFETY: see `Send`: the only `&self` operation is `notify`.
unsafe impl Sync for Virtqueue {}

impl Virtqueue {
    /// Rings the queue's doorbell (the device's kick eventfd).
    fn notify(&self) -> bool {
        // SAFETY: the queue is live (module invariant); notify only writes the doorbell.
        unsafe { bindings::virtqueue_notify(self.raw.as_ptr()) }
    }

    /// Posts `buf` as a device-writable buffer with `token` as its cookie.
    ///
    /// # Safety
    ///
    /// `buf` must stay valid and unused by the CPU until the device returns it (through
    /// [`Virtqueue::get_buf`]) or the queue is deleted; the caller serialises calls on
    /// this queue.
    unsafe fn add_inbuf(
        &self,
        buf: *mut u8,
        len: u32,
        token: *mut u8,
        gfp: bindings::gfp_t,
    ) -> Result {
        // SAFETY: `sg` is a local out-parameter fully initialised by `sg_init_one`.
        let mut sg: bindings::scatterlist = unsafe { core::mem::zeroed() };
        // SAFETY: `buf` is a linear-map kernel address of `len` bytes (caller).
        unsafe { bindings::sg_init_one(&mut sg, buf.cast(), len) };
        // SAFETY: the queue is live; `sg` describes one valid buffer (caller).
        to_result(unsafe {
            bindings::virtqueue_add_inbuf(self.raw.as_ptr(), &mut sg, 1, token.cast(), gfp)
        })
    }

    /// Takes back one buffer the device completed, returning its token.
    ///
    /// # Safety
    ///
    /// The caller serialises calls on this queue.
    unsafe fn get_buf(&self) -> Option<NonNull<u8>> {
        let mut len = 0u32;
        // SAFETY: the queue is live; calls are serialised (caller).
        NonNull::new(unsafe { bindings::virtqueue_get_buf(self.raw.as_ptr(), &mut len) }.cast())
    }
}

/// The interrupt of one virtqueue, being handled: what [`Driver::vq_interrupt`] gets, for
/// the duration of the callback (it can be neither kept nor sent elsewhere).
pub(crate) struct QueueIrq<'a> {
    vq: NonNull<bindings::virtqueue>,
    index: u32,
    _callback: PhantomData<&'a *mut ()>,
}

impl QueueIrq<'_> {
    /// The queue's index.
    pub(crate) fn index(&self) -> u32 {
        self.index
    }
}

/// A device's virtqueues as doorbells and interrupt sources, each keeping `per_queue` event
/// buffers of `len` bytes posted for the device to complete when it interrupts (ptnet SPEC
/// §3.3). The CPU never touches the buffers.
///
/// Invariants: `bufs` holds `vqs.len() * per_queue` buffers of `len > 0` bytes; buffers are
/// posted and taken back only as the module invariants say (so calls on a queue are
/// serialised), and the driver drops this only after deleting the queues.
pub(crate) struct EventQueues {
    vqs: KVec<Virtqueue>,
    bufs: KVec<u8>,
    per_queue: usize,
    len: usize,
}

impl EventQueues {
    /// Takes the queues `vqs` and allocates `per_queue` zeroed event buffers of `len` bytes
    /// for each ([`EventQueues::post_all`] posts them).
    pub(crate) fn new(vqs: KVec<Virtqueue>, per_queue: usize, len: usize) -> Result<Self> {
        if len == 0 || len > u32::MAX as usize {
            return Err(EINVAL);
        }
        let n = vqs
            .len()
            .checked_mul(per_queue)
            .and_then(|n| n.checked_mul(len))
            .ok_or(EINVAL)?;
        Ok(EventQueues {
            bufs: KVec::from_elem(0u8, n, GFP_KERNEL)?,
            vqs,
            per_queue,
            len,
        })
    }

    /// Posts every event buffer on its queue (probe, while the driver holds the queues
    /// alone). On failure the caller resets the device and deletes the queues before it
    /// drops `self`.
    pub(crate) fn post_all(&mut self) -> Result {
        for k in 0..self.vqs.len() {
            for slot in 0..self.per_queue {
                self.post(k, slot, bindings::GFP_KERNEL)?;
            }
        }
        Ok(())
    }

    /// Rings the doorbell of queue `k`.
    pub(crate) fn notify(&self, k: usize) {
        if let Some(vq) = self.vqs.get(k) {
            vq.notify();
        }
    }

    /// Posts event buffer `slot` of queue `k`. Callers serialise calls on the queue (module
    /// invariant).
    fn post(&self, k: usize, slot: usize, gfp: bindings::gfp_t) -> Result {
        let (Some(vq), true) = (self.vqs.get(k), slot < self.per_queue) else {
            return Err(EINVAL);
        };
        let ofs = (k * self.per_queue + slot) * self.len;
        let buf = self.bufs.as_ptr().wrapping_add(ofs).cast_mut();
        // SAFETY: `k < vqs.len()` and `slot < per_queue`, so `buf` is `len` bytes of `bufs`
        // (type invariant), which live until after the queues are deleted and which the CPU
        // never touches; calls on the queue are serialised (module invariant).
        unsafe { vq.add_inbuf(buf, self.len as u32, buf, gfp) }
    }

    /// Takes back every event buffer queue `k` completed and posts it again. Callers
    /// serialise calls on the queue (module invariant).
    fn replenish_one(&self, k: usize, gfp: bindings::gfp_t) {
        let Some(vq) = self.vqs.get(k) else {
            return;
        };
        let base = self.bufs.as_ptr() as usize;
        // SAFETY: calls on the queue are serialised (module invariant).
        while let Some(token) = unsafe { vq.get_buf() } {
            let i = (token.as_ptr() as usize).wrapping_sub(base) / self.len;
            if i / self.per_queue == k {
                let _ = self.post(k, i % self.per_queue, gfp);
            }
        }
    }

    /// Takes back the event buffers the interrupting queue completed and posts them again
    /// (from [`Driver::vq_interrupt`]). Nothing if `irq` is not one of these queues.
    pub(crate) fn replenish(&self, irq: &QueueIrq<'_>) {
        let k = irq.index as usize;
        if self.vqs.get(k).is_some_and(|vq| vq.raw == irq.vq) {
            // Serialised: the core runs the queue's callback once at a time.
            self.replenish_one(k, bindings::GFP_ATOMIC);
        }
    }

    /// Takes back the event buffers every queue completed and posts them again (probe, while
    /// the driver holds the queues alone).
    pub(crate) fn replenish_all(&mut self) {
        for k in 0..self.vqs.len() {
            self.replenish_one(k, bindings::GFP_KERNEL);
        }
    }
}

unsafe extern "C" fn vq_callback<T: Driver>(vq: *mut bindings::virtqueue) {
    // SAFETY: the core calls this with a live queue of a device bound to `T` (`find_vqs` of
    // a `Device<T>`), after DRIVER_OK, so `priv` holds the driver data or is null (module
    // invariant); the core runs one queue's callback once at a time.
    unsafe {
        let vdev = (*vq).vdev;
        let data = (*vdev).priv_;
        if data.is_null() {
            return;
        }
        let this = <Pin<KBox<T>> as ForeignOwnable>::borrow(data);
        let irq = QueueIrq {
            vq: NonNull::new_unchecked(vq),
            index: (*vq).index,
            _callback: PhantomData,
        };
        this.vq_interrupt(&irq);
    }
}

/// A registered virtio driver; unregistered on drop.
pub(crate) struct Registration<T: Driver> {
    drv: Pin<KBox<RegistrationInner>>,
    _t: PhantomData<T>,
}

struct RegistrationInner {
    drv: bindings::virtio_driver,
    ids: [bindings::virtio_device_id; 2],
    _pin: core::marker::PhantomPinned,
}

// SAFETY: the registration is only touched at module init and exit.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: `&Registration` exposes nothing.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers the driver under `name` for `T::DEVICE_ID`.
    pub(crate) fn new(name: &'static CStr, module: &'static ThisModule) -> Result<Self> {
        // SAFETY: all-zero is a valid `virtio_driver` / `virtio_device_id` (plain C structs).
        let zeroed_drv: bindings::virtio_driver = unsafe { core::mem::zeroed() };
        let mut inner = KBox::pin(
            RegistrationInner {
                drv: zeroed_drv,
                ids: [
                    bindings::virtio_device_id {
                        device: T::DEVICE_ID,
                        vendor: bindings::VIRTIO_DEV_ANY_ID,
                    },
                    bindings::virtio_device_id {
                        device: 0,
                        vendor: 0,
                    },
                ],
                _pin: core::marker::PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: we only fill fields in place; nothing is moved out of the pinned box.
        let p = unsafe { inner.as_mut().get_unchecked_mut() };
        p.drv.driver.name = name.as_char_ptr();
        p.drv.id_table = p.ids.as_ptr();
        let features = T::features();
        p.drv.feature_table = features.as_ptr();
        p.drv.feature_table_size = features.len() as u32;
        p.drv.probe = Some(probe_callback::<T>);
        p.drv.remove = Some(remove_callback::<T>);
        p.drv.config_changed = Some(config_callback::<T>);
        // SAFETY: `drv` is fully initialised, pinned for the registration's life and
        // unregistered in `drop`.
        to_result(unsafe { bindings::__register_virtio_driver(&mut p.drv, module.as_ptr()) })?;
        Ok(Registration {
            drv: inner,
            _t: PhantomData,
        })
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered in `new`; we only take a pointer, nothing moves.
        let p = unsafe { self.drv.as_mut().get_unchecked_mut() };
        // SAFETY: registered in `new` and not yet unregistered.
        unsafe { bindings::unregister_virtio_driver(&mut p.drv) };
    }
}

unsafe extern "C" fn probe_callback<T: Driver>(vdev: *mut bindings::virtio_device) -> c_int {
    let Some(raw) = NonNull::new(vdev) else {
        return EINVAL.to_errno();
    };
    let dev = Device {
        raw,
        _driver: PhantomData,
    };
    // SAFETY: the core probes with a live device; `priv` is ours until remove.
    unsafe { (*vdev).priv_ = core::ptr::null_mut() };
    match T::probe(&dev) {
        Ok(data) => {
            // SAFETY: as above. The driver called `ready()` inside probe only after it can
            // take interrupts; the callback tolerates a null `priv` until this store.
            unsafe { (*vdev).priv_ = data.into_foreign().cast() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn remove_callback<T: Driver>(vdev: *mut bindings::virtio_device) {
    let Some(raw) = NonNull::new(vdev) else {
        return;
    };
    let dev = Device {
        raw,
        _driver: PhantomData,
    };
    // SAFETY: remove follows a successful probe, which stored the data in `priv`.
    let data = unsafe {
        let p = (*vdev).priv_;
        <Pin<KBox<T>> as ForeignOwnable>::from_foreign(p.cast())
    };
    T::remove(&dev, data);
    // SAFETY: the device is live during remove.
    unsafe { (*vdev).priv_ = core::ptr::null_mut() };
}

unsafe extern "C" fn config_callback<T: Driver>(vdev: *mut bindings::virtio_device) {
    // SAFETY: called for a bound device; `priv` is the driver data or null during probe.
    unsafe {
        let data = (*vdev).priv_;
        if data.is_null() {
            return;
        }
        <Pin<KBox<T>> as ForeignOwnable>::borrow(data.cast()).config_changed();
    }
}
