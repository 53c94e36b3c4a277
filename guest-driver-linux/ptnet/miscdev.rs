// SPDX-License-Identifier: GPL-2.0

//! A small, safe layer over a misc character device with file operations of its own, and
//! over copies of plain request structs between user space and the kernel: what
//! `/dev/netmap` needs and the kernel crate of Linux 7.3 lacks (its `MiscDevice` has no
//! `poll` and cannot map device memory). Like [`crate::virtio`] and [`crate::netdev`], it is
//! the only place of the driver that calls these bindings; [`crate::netmap`] implements
//! [`FileOps`] on top of it.
//!
//! # Invariants
//!
//! * A [`MiscDevice<T>`] is registered from [`MiscDevice::register`] until it is dropped;
//!   its `miscdevice` and `file_operations` are pinned in one box for that long.
//! * From `open` to `release`, a file's `private_data` holds the `Pin<KBox<T>>` that
//!   [`FileOps::open`] returned (as a foreign pointer); the operations in between borrow it,
//!   `release` takes it back.

use core::{marker::PhantomData, mem::size_of};
use kernel::{
    bindings,
    fs::File,
    mm::virt::VmaNew,
    prelude::*,
    sync::poll::PollTable,
    types::{ForeignOwnable, Opaque},
    uaccess::{UserPtr, UserSlice},
};
use ptnet_spec::netmap::{NmreqHeader, NmreqPortHdr, NmreqPortInfoGet, NmreqRegister};

/// What a misc device's files do. Callbacks run in process context, as the VFS calls them.
pub(crate) trait FileOps: Sized + Sync + 'static {
    /// A file is opened: its state, until [`FileOps::release`].
    fn open() -> Result<Pin<KBox<Self>>>;
    /// The file's last reference went away.
    fn release(this: Pin<KBox<Self>>);
    /// `ioctl` (and the 32-bit compatibility `ioctl`): `Ok` is the return value.
    fn ioctl(&self, cmd: u32, arg: c_ulong) -> Result<isize>;
    /// `mmap`, with the VMA being set up.
    fn mmap(&self, vma: &VmaNew) -> Result;
    /// `poll`: registers the waits in `table` and returns the ready events among `events`
    /// (all of them when the caller passed no table).
    fn poll(&self, file: &File, table: &PollTable<'_>, events: u32) -> u32;
}

/// The misc device and its file operations, pinned together: the misc core keeps pointers
/// to both.
struct MiscInner {
    /// The file operations, with `owner` set to the module.
    fops: bindings::file_operations,
    misc: Opaque<bindings::miscdevice>,
}

/// A registered misc device whose files are `T`s; deregistered on drop.
pub(crate) struct MiscDevice<T: FileOps> {
    inner: Pin<KBox<MiscInner>>,
    _t: PhantomData<T>,
}

// SAFETY: the registration is only touched at module init and exit.
unsafe impl<T: FileOps> Send for MiscDevice<T> {}
// SAFETY: `&MiscDevice` exposes nothing.
unsafe impl<T: FileOps> Sync for MiscDevice<T> {}

impl<T: FileOps> MiscDevice<T> {
    /// Registers `/dev/<name>` (a dynamic minor, permissions `mode`) for `module`.
    pub(crate) fn register(
        name: &'static CStr,
        mode: u16,
        module: &'static ThisModule,
    ) -> Result<Self> {
        let mut fops = Fops::<T>::VTABLE;
        fops.owner = module.as_ptr();
        let inner = KBox::pin(
            MiscInner {
                fops,
                misc: Opaque::zeroed(),
            },
            GFP_KERNEL,
        )?;
        let m = inner.misc.get();
        // SAFETY: `m` is the pinned, zeroed miscdevice of `inner`, which outlives the
        // registration (deregistered in `drop` before the box is freed); `fops` is pinned
        // in the same box; `name` is static.
        unsafe {
            (*m).minor = bindings::MISC_DYNAMIC_MINOR as _;
            (*m).name = name.as_char_ptr();
            (*m).fops = &inner.fops;
            (*m).mode = mode;
            kernel::error::to_result(bindings::misc_register(m))?;
        }
        Ok(MiscDevice {
            inner,
            _t: PhantomData,
        })
    }
}

impl<T: FileOps> Drop for MiscDevice<T> {
    fn drop(&mut self) {
        // SAFETY: registered in `register` (a `MiscDevice` only exists once it is).
        unsafe { bindings::misc_deregister(self.inner.misc.get()) };
    }
}

struct Fops<T>(PhantomData<T>);

impl<T: FileOps> Fops<T> {
    const VTABLE: bindings::file_operations = bindings::file_operations {
        open: Some(Self::open),
        release: Some(Self::release),
        unlocked_ioctl: Some(Self::ioctl),
        compat_ioctl: Some(Self::ioctl),
        mmap: Some(Self::mmap),
        poll: Some(Self::poll),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// Called by the VFS with a file being opened on the device.
    unsafe extern "C" fn open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        let f = match T::open() {
            Ok(f) => f,
            Err(e) => return e.to_errno(),
        };
        // SAFETY: the file is being opened; we own its private data from now on.
        unsafe { (*file).private_data = f.into_foreign().cast() };
        0
    }

    /// # Safety
    ///
    /// `file` was opened by `open` and not released yet.
    unsafe fn state<'a>(file: *mut bindings::file) -> Pin<&'a T> {
        // SAFETY: `open` stored a `Pin<KBox<T>>`, given back only in `release` (module
        // invariant).
        unsafe { <Pin<KBox<T>> as ForeignOwnable>::borrow((*file).private_data.cast()) }
    }

    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `open` stored the box; release is the last call on the file.
        let f =
            unsafe { <Pin<KBox<T>> as ForeignOwnable>::from_foreign((*file).private_data.cast()) };
        T::release(f);
        0
    }

    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: the VFS calls ioctl on an opened file.
        let f = unsafe { Self::state(file) };
        match f.ioctl(cmd, arg) {
            Ok(v) => v as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }

    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: the VFS calls mmap on an opened file.
        let f = unsafe { Self::state(file) };
        // SAFETY: the core passes a live VMA being set up for this file, for this call.
        let vma = unsafe { VmaNew::from_raw(vma) };
        match f.mmap(vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    unsafe extern "C" fn poll(
        file: *mut bindings::file,
        pt: *mut bindings::poll_table,
    ) -> bindings::__poll_t {
        // SAFETY: the VFS calls poll on an opened file.
        let f = unsafe { Self::state(file) };
        // netmap's poll_requested_events(): all events when there is no table.
        let events = if pt.is_null() {
            !0
        } else {
            // SAFETY: `pt` is a valid poll table for this call (not null, checked above).
            unsafe { (*pt)._key }
        };
        // SAFETY: `pt` is null or valid for this call.
        let table = unsafe { PollTable::from_raw(pt) };
        // SAFETY: `file` is a valid file for the duration of this call.
        let kfile = unsafe { File::from_raw_file(file) };
        f.poll(kfile, &table, events)
    }
}

/// Plain request structs: integers and byte arrays, valid for any bit pattern.
///
/// # Safety
///
/// Implementors must be `repr(C)` and valid for every bit pattern.
pub(crate) unsafe trait Pod: Copy {}
// SAFETY: integers and a byte array (ptnet-spec, `repr(C)`).
unsafe impl Pod for NmreqHeader {}
// SAFETY: integers only (ptnet-spec, `repr(C)`).
unsafe impl Pod for NmreqRegister {}
// SAFETY: integers only (ptnet-spec, `repr(C)`).
unsafe impl Pod for NmreqPortInfoGet {}
// SAFETY: integers only (ptnet-spec, `repr(C)`).
unsafe impl Pod for NmreqPortHdr {}

/// Reads a `T` from user address `addr`.
pub(crate) fn read_user<T: Pod>(addr: u64) -> Result<T> {
    let mut buf = [0u8; 256];
    let n = size_of::<T>();
    let bytes = buf.get_mut(..n).ok_or(EINVAL)?;
    UserSlice::new(UserPtr::from_addr(addr as usize), n)
        .reader()
        .read_slice(bytes)?;
    // SAFETY: `bytes` holds `size_of::<T>()` initialised bytes and `T: Pod` accepts any.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Writes `v` to user address `addr`.
pub(crate) fn write_user<T: Pod>(addr: u64, v: &T) -> Result {
    // SAFETY: `T: Pod` has no padding-dependent invariants; we view its bytes.
    let bytes =
        unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) };
    UserSlice::new(UserPtr::from_addr(addr as usize), bytes.len())
        .writer()
        .write_slice(bytes)
}
