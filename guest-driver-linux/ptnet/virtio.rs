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
//! * A [`Device`] is only ever handed out by this module's probe/remove trampolines, for the
//!   duration of the callback, so its `struct virtio_device` is alive and bound to our
//!   driver while the reference exists.
//! * A [`Virtqueue`] is created by [`Device::find_vqs`] and destroyed by [`Device::del_vqs`];
//!   the driver keeps them in its device data, which is dropped (in `remove`) only after
//!   `del_vqs`.
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
    fn probe(dev: &Device) -> Result<Pin<KBox<Self>>>;

    /// Unbinds the device: must reset it and delete its virtqueues, then drop `data`.
    fn remove(dev: &Device, data: Pin<KBox<Self>>);

    /// A virtqueue's interrupt (hard-IRQ context): `index` is the queue index.
    fn vq_interrupt(&self, index: u32);

    /// The device signalled a configuration change.
    fn config_changed(&self) {}
}

/// A virtio device bound to (or being probed by) a driver of this module.
pub(crate) struct Device {
    raw: NonNull<bindings::virtio_device>,
}

// SAFETY: `struct virtio_device` may be used from any thread; its config accessors and the
// virtqueue API do their own locking where needed.
unsafe impl Send for Device {}
// SAFETY: see `Send`; the methods take `&self` and only call thread-safe C functions.
unsafe impl Sync for Device {}

/// A bound device kept by the driver beyond a callback, for work it defers to process
/// context (handling a configuration change can sleep; the callback cannot).
///
/// # Invariants
///
/// Only [`BoundDevice::get`] reaches the device, and its caller promises what the type
/// cannot know: that remove has not returned yet (a driver cancels its deferred work at the
/// start of remove, after which the core delivers no configuration change).
pub(crate) struct BoundDevice {
    raw: NonNull<bindings::virtio_device>,
}

// SAFETY: as for `Device`.
unsafe impl Send for BoundDevice {}
// SAFETY: as for `Device`.
unsafe impl Sync for BoundDevice {}

impl BoundDevice {
    /// Keeps `dev` (called in probe).
    pub(crate) fn new(dev: &Device) -> Self {
        BoundDevice { raw: dev.raw }
    }

    /// The device.
    ///
    /// # Safety
    ///
    /// The device must still be bound to this driver: called from work that remove cancels
    /// (and waits for) before it returns.
    pub(crate) unsafe fn get(&self) -> Device {
        Device { raw: self.raw }
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

impl Device {
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
    pub(crate) fn has_feature<T: Driver>(&self, bit: u32) -> bool {
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

    /// Creates `names.len()` virtqueues whose interrupts call `T::vq_interrupt`.
    ///
    /// # Safety
    ///
    /// `T` must be the driver type this device was probed with (the callback trampoline
    /// reads `vdev->priv` as a `Pin<KBox<T>>`).
    pub(crate) unsafe fn find_vqs<T: Driver>(
        &self,
        names: &[&'static CStr],
    ) -> Result<KVec<Virtqueue>> {
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

/// One virtqueue of a device.
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
    pub(crate) fn notify(&self) -> bool {
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
    pub(crate) unsafe fn add_inbuf(
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
    pub(crate) unsafe fn get_buf(&self) -> Option<NonNull<u8>> {
        let mut len = 0u32;
        // SAFETY: the queue is live; calls are serialised (caller).
        NonNull::new(unsafe { bindings::virtqueue_get_buf(self.raw.as_ptr(), &mut len) }.cast())
    }
}

unsafe extern "C" fn vq_callback<T: Driver>(vq: *mut bindings::virtqueue) {
    // SAFETY: the core calls this with a live queue of a device bound to `T` (find_vqs'
    // safety contract), after DRIVER_OK, so `priv` holds the driver data (module invariant).
    unsafe {
        let vdev = (*vq).vdev;
        let data = (*vdev).priv_;
        if data.is_null() {
            return;
        }
        let this = <Pin<KBox<T>> as ForeignOwnable>::borrow(data);
        this.vq_interrupt((*vq).index);
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
    let dev = Device { raw };
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
    let dev = Device { raw };
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
