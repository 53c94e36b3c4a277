// SPDX-License-Identifier: GPL-2.0

//! The ivshmem transport (SPEC §6): a small, safe layer over Linux's PCI core for QEMU's
//! stock `ivshmem-doorbell` device (1af4:1110) when it carries a ptnet port. BAR 0 holds the
//! device's registers (`IVPosition`, the doorbell), BAR 2 is the port's region, and the
//! MSI-X vectors are the rings' interrupts plus the configuration-change vector. Whether an
//! ivshmem device is a ptnet one is the driver's call (its BAR 2 carries a ptnet directory);
//! any other is refused with `ENODEV` and left to whoever else wants it.
//!
//! This module is the only place of the driver that calls the PCI and IRQ C API.
//!
//! # Invariants
//!
//! * A [`Device`] is only handed out by this module's probe/remove trampolines of driver
//!   `T`, for the duration of the callback, so its `struct pci_dev` is alive and bound to `T`.
//! * The device's driver data (`drvdata`) holds the driver's `Pin<KBox<T>>` (as a foreign
//!   pointer) from the end of a successful probe until the start of remove.
//! * [`Regs`]: `base` is a `pci_iomap` of at least [`REGS_LEN`] bytes of BAR 0 of `pdev`,
//!   unmapped on drop; the `Regs` lives no longer than the device is bound (the driver keeps
//!   it in its device data, dropped in remove).
//! * [`Irqs`]: every vector in `registered` has its handler requested with the matching
//!   `ctx` entry as cookie; `ctx` is never resized after the requests, and `target` (kept
//!   alive by the `Arc`) outlives them: `free_irq` runs in `drop`, before both go.

use core::{marker::PhantomData, ptr::NonNull};
use kernel::{bindings, error::to_result, prelude::*, sync::Arc, types::ForeignOwnable};
use ptnet_spec::ivshmem::{
    IVSHMEM_REG_DOORBELL, IVSHMEM_REG_IVPOSITION, PCI_DEVICE_ID_IVSHMEM, PCI_VENDOR_ID_IVSHMEM,
};

/// Bytes of BAR 0 the driver maps (QEMU's register BAR is 256 bytes).
pub(crate) const REGS_LEN: usize = 256;

/// What an ivshmem driver implements.
pub(crate) trait Driver: Sized + Send + Sync + 'static {
    /// Binds a device (`ENODEV`: not ours). On success the data lives until remove.
    fn probe(dev: &Device) -> Result<Pin<KBox<Self>>>;
    /// Unbinds it: must stop the device, free its vectors, then drop `data`.
    fn remove(dev: &Device, data: Pin<KBox<Self>>);
}

/// An ivshmem PCI device being probed or removed by a driver of this module.
pub(crate) struct Device {
    pdev: NonNull<bindings::pci_dev>,
}

impl Device {
    /// The `struct device` of the PCI device (for `dev_info!` and friends).
    pub(crate) fn as_dev(&self) -> &kernel::device::Device {
        // SAFETY: the PCI device is alive during the callback (module invariant);
        // `kernel::device::Device` is a transparent wrapper of `struct device`.
        unsafe { &*(&raw mut (*self.pdev.as_ptr()).dev).cast::<kernel::device::Device>() }
    }

    /// The `struct device` of the PCI device, as a parent for devices the driver creates.
    pub(crate) fn raw_dev(&self) -> *mut bindings::device {
        // SAFETY: the device is live (module invariant); we only compute a field address.
        unsafe { &raw mut (*self.pdev.as_ptr()).dev }
    }

    /// Enables memory decoding and bus mastering (MSI-X writes), and claims BARs 0 and 2.
    pub(crate) fn enable(&self, name: &'static CStr) -> Result {
        let p = self.pdev.as_ptr();
        // SAFETY: a live device (module invariant) being probed by us.
        to_result(unsafe { bindings::pci_enable_device_mem(p) })?;
        // SAFETY: as above.
        unsafe { bindings::pci_set_master(p) };
        for bar in [0, 2] {
            // SAFETY: as above; `name` is a static string.
            let r = to_result(unsafe { bindings::pci_request_region(p, bar, name.as_char_ptr()) });
            if let Err(e) = r {
                if bar == 2 {
                    // SAFETY: region 0 was requested just before.
                    unsafe { bindings::pci_release_region(p, 0) };
                }
                // SAFETY: enabled above.
                unsafe { bindings::pci_disable_device(p) };
                return Err(e);
            }
        }
        Ok(())
    }

    /// Undoes [`Device::enable`].
    pub(crate) fn disable(&self) {
        let p = self.pdev.as_ptr();
        // SAFETY: `enable` succeeded on this live device (the caller's promise).
        unsafe {
            bindings::pci_release_region(p, 2);
            bindings::pci_release_region(p, 0);
            bindings::pci_disable_device(p);
        }
    }

    /// Guest-physical start and length of BAR `bar`.
    pub(crate) fn bar(&self, bar: i32) -> (u64, u64) {
        // SAFETY: reads two fields of a live device's resource table.
        unsafe {
            (
                bindings::pci_resource_start(self.pdev.as_ptr(), bar) as u64,
                bindings::pci_resource_len(self.pdev.as_ptr(), bar) as u64,
            )
        }
    }

    /// Maps the register BAR.
    pub(crate) fn map_regs(&self) -> Result<Regs> {
        // SAFETY: BAR 0 of a live, enabled device; at most `REGS_LEN` bytes.
        let p = unsafe { bindings::pci_iomap(self.pdev.as_ptr(), 0, REGS_LEN as _) };
        let base = NonNull::new(p.cast::<u8>()).ok_or(ENOMEM)?;
        if self.bar(0).1 < REGS_LEN as u64 {
            // SAFETY: mapped just above.
            unsafe { bindings::pci_iounmap(self.pdev.as_ptr(), p) };
            return Err(ENODEV);
        }
        Ok(Regs {
            pdev: self.pdev,
            base,
        })
    }

    /// Allocates exactly `n` MSI-X vectors.
    pub(crate) fn alloc_vectors(&self, n: u32) -> Result {
        // SAFETY: a live, enabled device.
        let r = unsafe {
            bindings::pci_alloc_irq_vectors(self.pdev.as_ptr(), n, n, bindings::PCI_IRQ_MSIX)
        };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }

    /// Frees the vectors of [`Device::alloc_vectors`] (their handlers freed first).
    pub(crate) fn free_vectors(&self) {
        // SAFETY: a live device; freeing no vectors is harmless.
        unsafe { bindings::pci_free_irq_vectors(self.pdev.as_ptr()) };
    }

    /// Requests a handler on each of the `n` vectors, vector `k` calling
    /// `target.vector(k)` and named `name(k)` (in `/proc/interrupts`).
    pub(crate) fn request_irqs<T: Vectors>(
        &self,
        target: Arc<T>,
        n: u32,
        name: impl Fn(u32) -> &'static CStr,
    ) -> Result<Irqs<T>> {
        let mut ctx = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for k in 0..n {
            ctx.push(
                VectorCtx {
                    target: &*target as *const T,
                    k,
                },
                GFP_KERNEL,
            )?;
        }
        let mut irqs = Irqs {
            registered: KVec::with_capacity(n as usize, GFP_KERNEL)?,
            ctx,
            _target: target,
        };
        for k in 0..n as usize {
            // SAFETY: vectors were allocated on this live device.
            let irq = unsafe { bindings::pci_irq_vector(self.pdev.as_ptr(), k as u32) };
            if irq < 0 {
                return Err(Error::from_errno(irq));
            }
            let cookie = (&raw mut irqs.ctx[k]).cast::<c_void>();
            // SAFETY: `handler::<T>` matches `irq_handler_t`; `cookie` points into `ctx`,
            // which is neither resized nor dropped before `free_irq` (type invariant).
            to_result(unsafe {
                bindings::request_threaded_irq(
                    irq as u32,
                    Some(handler::<T>),
                    None,
                    0,
                    name(k as u32).as_char_ptr(),
                    cookie,
                )
            })?;
            irqs.registered.push((irq as u32, k), GFP_KERNEL)?;
        }
        Ok(irqs)
    }
}

/// The device's registers (BAR 0).
pub(crate) struct Regs {
    pdev: NonNull<bindings::pci_dev>,
    base: NonNull<u8>,
}

// SAFETY: MMIO registers any CPU may access; the accesses are single 32-bit reads and writes.
unsafe impl Send for Regs {}
// SAFETY: see `Send`.
unsafe impl Sync for Regs {}

impl Regs {
    /// The guest's own ivshmem peer id.
    pub(crate) fn ivposition(&self) -> u32 {
        // SAFETY: inside the `REGS_LEN`-byte mapping (type invariant), 4-byte aligned.
        unsafe {
            bindings::readl(
                self.base
                    .as_ptr()
                    .add(IVSHMEM_REG_IVPOSITION as usize)
                    .cast(),
            )
        }
    }

    /// Rings `vector` of peer `peer` (an ioeventfd under KVM: no exit to QEMU).
    pub(crate) fn doorbell(&self, peer: u16, vector: u16) {
        let v = u32::from(peer) << 16 | u32::from(vector);
        // SAFETY: as in `ivposition`.
        unsafe {
            bindings::writel(
                v,
                self.base.as_ptr().add(IVSHMEM_REG_DOORBELL as usize).cast(),
            )
        };
    }
}

impl Drop for Regs {
    fn drop(&mut self) {
        // SAFETY: mapped by `map_regs` on this device, which is still bound (type invariant).
        unsafe { bindings::pci_iounmap(self.pdev.as_ptr(), self.base.as_ptr().cast()) };
    }
}

/// Who takes a device's interrupts: vector `k`, in hard-IRQ context.
pub(crate) trait Vectors: Send + Sync + 'static {
    /// Vector `k` fired.
    fn vector(&self, k: u32);
}

struct VectorCtx<T> {
    target: *const T,
    k: u32,
}

/// The handlers requested on a device's vectors; freed on drop.
pub(crate) struct Irqs<T: Vectors> {
    registered: KVec<(u32, usize)>,
    ctx: KVec<VectorCtx<T>>,
    _target: Arc<T>,
}

// SAFETY: the context only points at `_target`, which is `Send + Sync`.
unsafe impl<T: Vectors> Send for Irqs<T> {}
// SAFETY: `&Irqs` exposes nothing.
unsafe impl<T: Vectors> Sync for Irqs<T> {}

impl<T: Vectors> Drop for Irqs<T> {
    fn drop(&mut self) {
        for &(irq, k) in self.registered.iter() {
            let cookie = (&raw mut self.ctx[k]).cast::<c_void>();
            // SAFETY: requested with this cookie (type invariant); after `free_irq` returns
            // the handler no longer runs, so the context may go.
            unsafe { bindings::free_irq(irq, cookie) };
        }
    }
}

unsafe extern "C" fn handler<T: Vectors>(
    _irq: c_int,
    cookie: *mut c_void,
) -> bindings::irqreturn_t {
    // SAFETY: the cookie is a `VectorCtx<T>` of a live `Irqs<T>` (its invariant: handlers are
    // freed before the context and the target go).
    let ctx = unsafe { &*cookie.cast::<VectorCtx<T>>() };
    // SAFETY: as above, `target` is kept alive by the `Irqs`.
    unsafe { (*ctx.target).vector(ctx.k) };
    bindings::irqreturn::IRQ_HANDLED
}

/// A registered ivshmem driver; unregistered on drop.
pub(crate) struct Registration<T: Driver> {
    drv: Pin<KBox<RegistrationInner>>,
    _t: PhantomData<T>,
}

struct RegistrationInner {
    drv: bindings::pci_driver,
    ids: [bindings::pci_device_id; 2],
    _pin: core::marker::PhantomPinned,
}

// SAFETY: the registration is only touched at module init and exit.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: `&Registration` exposes nothing.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers the driver under `name` for QEMU's ivshmem devices.
    pub(crate) fn new(name: &'static CStr, module: &'static ThisModule) -> Result<Self> {
        // SAFETY: all-zero is a valid `pci_driver` / `pci_device_id` (plain C structs).
        let (drv, mut id): (bindings::pci_driver, bindings::pci_device_id) =
            unsafe { (core::mem::zeroed(), core::mem::zeroed()) };
        id.vendor = u32::from(PCI_VENDOR_ID_IVSHMEM);
        id.device = u32::from(PCI_DEVICE_ID_IVSHMEM);
        id.subvendor = !0;
        id.subdevice = !0;
        // SAFETY: as above.
        let end: bindings::pci_device_id = unsafe { core::mem::zeroed() };
        let mut inner = KBox::pin(
            RegistrationInner {
                drv,
                ids: [id, end],
                _pin: core::marker::PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: we only fill fields in place; nothing is moved out of the pinned box.
        let p = unsafe { inner.as_mut().get_unchecked_mut() };
        p.drv.name = name.as_char_ptr();
        p.drv.id_table = p.ids.as_ptr();
        p.drv.probe = Some(probe_callback::<T>);
        p.drv.remove = Some(remove_callback::<T>);
        // SAFETY: `drv` is fully initialised, pinned for the registration's life and
        // unregistered in `drop`.
        to_result(unsafe {
            bindings::__pci_register_driver(&mut p.drv, module.as_ptr(), name.as_char_ptr())
        })?;
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
        unsafe { bindings::pci_unregister_driver(&mut p.drv) };
    }
}

unsafe extern "C" fn probe_callback<T: Driver>(
    pdev: *mut bindings::pci_dev,
    _id: *const bindings::pci_device_id,
) -> c_int {
    let Some(raw) = NonNull::new(pdev) else {
        return EINVAL.to_errno();
    };
    let dev = Device { pdev: raw };
    match T::probe(&dev) {
        Ok(data) => {
            // SAFETY: the core probes with a live device; its driver data is ours until
            // remove.
            unsafe { bindings::dev_set_drvdata(&raw mut (*pdev).dev, data.into_foreign().cast()) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn remove_callback<T: Driver>(pdev: *mut bindings::pci_dev) {
    let Some(raw) = NonNull::new(pdev) else {
        return;
    };
    let dev = Device { pdev: raw };
    // SAFETY: remove follows a successful probe, which stored the data (module invariant).
    let data = unsafe {
        let p = bindings::dev_get_drvdata(&raw const (*pdev).dev);
        <Pin<KBox<T>> as ForeignOwnable>::from_foreign(p.cast())
    };
    T::remove(&dev, data);
    // SAFETY: the device is live during remove.
    unsafe { bindings::dev_set_drvdata(&raw mut (*pdev).dev, core::ptr::null_mut()) };
}
