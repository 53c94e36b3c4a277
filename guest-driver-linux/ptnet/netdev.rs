// SPDX-License-Identifier: GPL-2.0

//! A small Rust layer over Linux's `net_device`, NAPI and `sk_buff` API: just what a
//! copying Ethernet driver needs. Like [`crate::virtio`], it exists because the kernel crate
//! of Linux 7.3 has no such abstraction; the driver logic ([`crate::nic`]) calls no netdev
//! binding directly.
//!
//! # Invariants
//!
//! * A [`NetDev`] owns a `struct net_device` from `alloc_etherdev_mqs` until drop
//!   (`free_netdev`), registered between [`NetDev::register`] and drop
//!   (`unregister_netdev` first). Its private area holds a [`Priv`].
//! * The callbacks of [`Ops`] receive that device; they reach the driver through
//!   `Priv::data`, a pointer the owner keeps alive for as long as the device exists.
//! * An [`Skb`] is an owned `struct sk_buff`: it is freed on drop unless handed to the
//!   stack ([`NetDev::receive`]). An [`RxSkb`] is one being filled, with at most one page
//!   of its own not yet attached as a fragment (freed on drop).
//!
//! Offloads: the virtio-net header of a frame (`ptnet_spec::vnet::VnetHdr`) is made from a
//! socket buffer and applied to one by the kernel's own `virtio_net_hdr_from_skb` and
//! `virtio_net_hdr_to_skb`, which virtio_net and tun use too: whatever a hostile host puts
//! in a header is validated exactly as for those drivers.

use core::ptr::NonNull;
use kernel::{bindings, error::to_result, prelude::*};
use ptnet_spec::vnet::{VnetHdr, VIRTIO_NET_HDR_F_DATA_VALID};

/// Bytes of a large received frame copied into the socket buffer's head (the protocol
/// headers); the rest goes into page fragments.
const RX_HEAD: u32 = 256;
/// Frames up to this size are received into the head alone.
const RX_LINEAR_MAX: u32 = 2048;
/// Bytes of a page.
const PAGE_SIZE: u32 = bindings::PAGE_SIZE as u32;

/// What the driver implements for its network device. Callbacks run in the contexts the
/// netdev core documents (open/stop: process context under RTNL; xmit: BH; poll: NAPI).
pub(crate) trait Ops: Sized + Sync + 'static {
    /// The interface is brought up.
    fn open(&self, dev: &NetDev) -> Result;
    /// The interface is brought down.
    fn stop(&self, dev: &NetDev);
    /// Transmit `skb`; `Err(skb)` asks the core to retry it later (NETDEV_TX_BUSY).
    fn xmit(&self, dev: &NetDev, skb: Skb) -> core::result::Result<(), Skb>;
    /// NAPI poll with `budget`; returns the work done.
    fn poll(&self, dev: &NetDev, budget: i32) -> i32;
    /// Counters.
    fn stats(&self) -> Stats;
}

/// Interface counters.
#[derive(Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) rx_packets: u64,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_packets: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_dropped: u64,
    pub(crate) tx_dropped: u64,
}

/// The private area of our `net_device`.
#[repr(C)]
struct Priv {
    napi: bindings::napi_struct,
    data: *const (),
}

/// A network device owned by the driver.
pub(crate) struct NetDev {
    raw: NonNull<bindings::net_device>,
    registered: core::sync::atomic::AtomicBool,
}

// SAFETY: `net_device` is designed for concurrent use; our methods call thread-safe API.
unsafe impl Send for NetDev {}
// SAFETY: see `Send`.
unsafe impl Sync for NetDev {}

impl NetDev {
    /// Allocates an Ethernet device driven by `data` (which must outlive the device),
    /// child of `parent`, with `mac` and an MTU up to `max_mtu`.
    ///
    /// # Safety
    ///
    /// `data` must stay valid until the returned device is dropped; `parent` must be a live
    /// device that outlives it.
    pub(crate) unsafe fn new<T: Ops>(
        data: &T,
        parent: *mut bindings::device,
        mac: [u8; 6],
        max_mtu: u32,
    ) -> Result<Self> {
        // SAFETY: plain allocation; one TX and one RX queue.
        let raw =
            unsafe { bindings::alloc_etherdev_mqs(core::mem::size_of::<Priv>() as c_int, 1, 1) };
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        let nd = NetDev {
            raw,
            registered: core::sync::atomic::AtomicBool::new(false),
        };
        // SAFETY: `raw` is a fresh device whose private area is sized for `Priv`; the
        // ops table is static; `parent` outlives the device (caller).
        unsafe {
            let p = bindings::netdev_priv(raw.as_ptr()).cast::<Priv>();
            (*p).data = (data as *const T).cast();
            (*raw.as_ptr()).netdev_ops = &OpsTable::<T>::VTABLE;
            (*raw.as_ptr()).max_mtu = max_mtu;
            (*raw.as_ptr()).dev.parent = parent;
            bindings::eth_hw_addr_set(raw.as_ptr(), mac.as_ptr());
            bindings::netif_napi_add(raw.as_ptr(), &raw mut (*p).napi, Some(napi_poll::<T>));
        }
        Ok(nd)
    }

    fn as_ptr(&self) -> *mut bindings::net_device {
        self.raw.as_ptr()
    }

    fn napi_ptr(&self) -> *mut bindings::napi_struct {
        // SAFETY: the private area is a `Priv` (type invariant).
        unsafe { &raw mut (*bindings::netdev_priv(self.as_ptr()).cast::<Priv>()).napi }
    }

    /// Schedules the NAPI poll (if it is enabled and not already scheduled); from any
    /// context, an interrupt included.
    pub(crate) fn schedule_napi(&self) {
        // SAFETY: the NAPI context was added in `new` and lives as long as the device, which
        // `&self` keeps alive; scheduling is IRQ- and thread-safe.
        unsafe { bindings::napi_schedule(self.napi_ptr()) };
    }

    /// Announces the checksum and TSO offloads of the virtio-net header (before
    /// [`NetDev::register`]): scatter-gather, checksum offload on TX and RX, TSO for IPv4
    /// and IPv6 (with ECN), and GSO frames of at most `tso_max_size` bytes.
    pub(crate) fn enable_offloads(&self, tso_max_size: u32) {
        let f = |bit: u32| -> bindings::netdev_features_t { 1 << bit };
        let features = f(bindings::NETIF_F_SG_BIT)
            | f(bindings::NETIF_F_HW_CSUM_BIT)
            | f(bindings::NETIF_F_RXCSUM_BIT)
            | f(bindings::NETIF_F_TSO_BIT)
            | f(bindings::NETIF_F_TSO6_BIT)
            | f(bindings::NETIF_F_TSO_ECN_BIT);
        // SAFETY: the device is live and not registered yet, so nothing else reads its
        // feature words; `netif_set_tso_max_size` is meant for drivers before registration.
        unsafe {
            let d = self.as_ptr();
            (*d).hw_features |= features;
            (*d).features |= features;
            bindings::netif_set_tso_max_size(d, tso_max_size);
        }
    }

    /// Whether the stack wants received checksums trusted (`NETIF_F_RXCSUM`, which the user
    /// may turn off).
    fn rx_csum_enabled(&self) -> bool {
        // SAFETY: the device is live; a racy read of a feature word is what drivers do.
        let f = unsafe { core::ptr::read_volatile(&raw const (*self.as_ptr()).features) };
        f & (1 << bindings::NETIF_F_RXCSUM_BIT) != 0
    }

    /// Registers the device with the stack (`ethN`).
    pub(crate) fn register(&mut self) -> Result {
        // SAFETY: the device is fully set up (`new`).
        to_result(unsafe { bindings::register_netdev(self.as_ptr()) })?;
        self.registered
            .store(true, core::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Unregisters the device from the stack (brings it down first); idempotent.
    pub(crate) fn unregister(&self) {
        if self
            .registered
            .swap(false, core::sync::atomic::Ordering::AcqRel)
        {
            // SAFETY: registered in `register` and not unregistered since.
            unsafe { bindings::unregister_netdev(self.as_ptr()) };
        }
    }

    /// The interface name (valid once registered).
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: `name` is a NUL-terminated array inside the live device.
        unsafe { CStr::from_char_ptr((*self.as_ptr()).name.as_ptr()) }
    }

    /// Enables NAPI polling.
    pub(crate) fn napi_enable(&self) {
        // SAFETY: the NAPI context was added in `new`.
        unsafe { bindings::napi_enable(self.napi_ptr()) }
    }

    /// Disables NAPI polling, waiting for a running poll to finish.
    pub(crate) fn napi_disable(&self) {
        // SAFETY: the NAPI context was added in `new` and enabled by the caller.
        unsafe { bindings::napi_disable(self.napi_ptr()) }
    }

    /// Ends a NAPI poll that did `work` (< budget); false if polling must go on.
    pub(crate) fn napi_complete(&self, work: i32) -> bool {
        // SAFETY: called from our NAPI poll.
        unsafe { bindings::napi_complete_done(self.napi_ptr(), work) }
    }

    /// Carrier on or off.
    pub(crate) fn set_carrier(&self, on: bool) {
        // SAFETY: the device is live.
        unsafe {
            if on {
                bindings::netif_carrier_on(self.as_ptr())
            } else {
                bindings::netif_carrier_off(self.as_ptr())
            }
        }
    }

    /// Starts the TX queue.
    pub(crate) fn start_queue(&self) {
        // SAFETY: the device is live.
        unsafe { bindings::netif_start_queue(self.as_ptr()) }
    }

    /// Stops the TX queue.
    pub(crate) fn stop_queue(&self) {
        // SAFETY: the device is live.
        unsafe { bindings::netif_stop_queue(self.as_ptr()) }
    }

    /// Wakes a stopped TX queue.
    pub(crate) fn wake_queue(&self) {
        // SAFETY: the device is live.
        unsafe { bindings::netif_wake_queue(self.as_ptr()) }
    }

    /// Whether the TX queue is stopped.
    pub(crate) fn queue_stopped(&self) -> bool {
        // SAFETY: the device is live.
        unsafe { bindings::netif_queue_stopped(self.as_ptr()) }
    }

    /// A socket buffer to receive a frame of `len` bytes into (NAPI poll only): small
    /// frames go into its head, large ones (GSO frames) into its head and page fragments.
    pub(crate) fn alloc_rx(&self, len: u32) -> Option<RxSkb> {
        let head = if len <= RX_LINEAR_MAX { len } else { RX_HEAD };
        // SAFETY: called from our NAPI poll on a live device.
        let p = unsafe { bindings::napi_alloc_skb(self.napi_ptr(), head) };
        NonNull::new(p).map(|p| RxSkb {
            skb: Skb(p),
            head_room: head,
            page: None,
            frags: 0,
        })
    }

    /// Hands a received frame to the stack (GRO), setting its protocol. With `hdr` (the
    /// frame's virtio-net header) the offloads are applied first, as virtio_net does:
    /// `DATA_VALID` makes the checksum trusted (if RXCSUM is on), `NEEDS_CSUM` makes it
    /// partial (`csum_start`/`csum_offset`), a GSO type makes a GSO frame (`gso_size`,
    /// `SKB_GSO_DODGY`: the stack checks its headers). A header the kernel refuses drops the
    /// frame: `Err(())`.
    pub(crate) fn receive(&self, skb: Skb, hdr: Option<&VnetHdr>) -> core::result::Result<(), ()> {
        let p = skb.0.as_ptr();
        if let Some(h) = hdr {
            let k = bindings::virtio_net_hdr {
                flags: h.flags,
                gso_type: h.gso_type,
                hdr_len: h.hdr_len.to_le(),
                gso_size: h.gso_size.to_le(),
                csum_start: h.csum_start.to_le(),
                csum_offset: h.csum_offset.to_le(),
            };
            if u32::from(h.flags) & VIRTIO_NET_HDR_F_DATA_VALID != 0 && self.rx_csum_enabled() {
                // SAFETY: `p` is our owned skb; `ip_summed` is a bitfield of its header
                // group, written through bindgen's accessor.
                unsafe {
                    (*p).__bindgen_anon_4
                        .__bindgen_anon_1
                        .as_mut()
                        .set_ip_summed(bindings::CHECKSUM_UNNECESSARY as u8)
                };
            }
            // SAFETY: `p` is our owned skb whose data starts at the Ethernet header, with
            // `dev` set (napi_alloc_skb); `k` is a valid header. The helper validates every
            // field against the frame.
            if unsafe { bindings::virtio_net_hdr_to_skb(p, &k, true) } != 0 {
                drop(skb);
                return Err(());
            }
        }
        core::mem::forget(skb);
        // SAFETY: `p` is an owned skb whose data is an Ethernet frame; ownership passes to
        // the stack.
        unsafe {
            let proto = bindings::eth_type_trans(p, self.as_ptr());
            (*p).__bindgen_anon_4.__bindgen_anon_1.as_mut().protocol = proto;
            bindings::napi_gro_receive(self.napi_ptr(), p);
        }
        Ok(())
    }
}

/// A page of an [`RxSkb`] being filled, not attached to the socket buffer yet.
struct RxPage {
    page: NonNull<bindings::page>,
    used: u32,
}

impl Drop for RxPage {
    fn drop(&mut self) {
        // SAFETY: the page was allocated by `alloc_pages(_, 0)` in `RxSkb::push` and its
        // only reference is ours (it was not attached).
        unsafe { bindings::__free_pages(self.page.as_ptr(), 0) };
    }
}

/// A received frame being copied into a socket buffer: the head first, then whole pages
/// attached as fragments (at most `MAX_SKB_FRAGS`).
pub(crate) struct RxSkb {
    skb: Skb,
    head_room: u32,
    page: Option<RxPage>,
    frags: u32,
}

impl RxSkb {
    /// Appends the `len` bytes at `src`; fails (the frame is to be dropped) when no page can
    /// be had or the frame would need more fragments than a socket buffer holds.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of `len` bytes for the duration of the call. Others may
    /// write them meanwhile (shared memory): they are only read with raw copies, no reference
    /// to them is made.
    pub(crate) unsafe fn push_raw(&mut self, mut src: *const u8, mut len: usize) -> Result {
        let n = len.min(self.head_room as usize);
        if n > 0 {
            // SAFETY: `src` is valid for reads of `n <= len` bytes (caller).
            unsafe { self.skb.put_raw(src, n) };
            self.head_room -= n as u32;
            // SAFETY: `n <= len`: inside the caller's range, or just past its end.
            src = unsafe { src.add(n) };
            len -= n;
        }
        while len > 0 {
            if self.page.is_none() {
                if self.frags >= bindings::MAX_SKB_FRAGS {
                    return Err(EMSGSIZE);
                }
                // SAFETY: a plain order-0 allocation, allowed in NAPI (atomic) context.
                let p = unsafe {
                    bindings::alloc_pages(bindings::GFP_ATOMIC | bindings::__GFP_NOWARN, 0)
                };
                self.page = Some(RxPage {
                    page: NonNull::new(p).ok_or(ENOMEM)?,
                    used: 0,
                });
            }
            let Some(pg) = self.page.as_mut() else {
                return Err(ENOMEM);
            };
            let n = len.min((PAGE_SIZE - pg.used) as usize);
            // SAFETY: the page is ours and mapped by `kmap_local_page` for PAGE_SIZE bytes;
            // `used + n <= PAGE_SIZE`; `src` is valid for reads of `n <= len` bytes (caller);
            // the mapping is dropped right after the copy.
            unsafe {
                let va = bindings::kmap_local_page(pg.page.as_ptr()).cast::<u8>();
                core::ptr::copy_nonoverlapping(src, va.add(pg.used as usize), n);
                bindings::kunmap_local(va.cast());
            }
            pg.used += n as u32;
            // SAFETY: `n <= len`: inside the caller's range, or just past its end.
            src = unsafe { src.add(n) };
            len -= n;
            if pg.used == PAGE_SIZE {
                self.attach();
            }
        }
        Ok(())
    }

    /// Attaches the page being filled as the next fragment.
    fn attach(&mut self) {
        let Some(pg) = self.page.take() else {
            return;
        };
        let pg = core::mem::ManuallyDrop::new(pg);
        // SAFETY: the skb is ours; `frags < MAX_SKB_FRAGS` (checked when the page was
        // allocated); `used <= PAGE_SIZE` bytes of the page are filled; the page's
        // reference passes to the skb (hence no drop of `pg`).
        unsafe {
            bindings::skb_add_rx_frag(
                self.skb.0.as_ptr(),
                self.frags as c_int,
                pg.page.as_ptr(),
                0,
                pg.used as c_int,
                PAGE_SIZE,
            )
        };
        self.frags += 1;
    }

    /// The filled socket buffer.
    pub(crate) fn finish(mut self) -> Skb {
        self.attach();
        self.skb
    }
}

impl Drop for NetDev {
    fn drop(&mut self) {
        self.unregister();
        // SAFETY: the device is ours and no longer registered.
        unsafe {
            bindings::netif_napi_del(self.napi_ptr());
            bindings::free_netdev(self.as_ptr());
        }
    }
}

/// An owned socket buffer.
pub(crate) struct Skb(NonNull<bindings::sk_buff>);

impl Skb {
    /// Frame length.
    pub(crate) fn len(&self) -> u32 {
        // SAFETY: owned, live skb.
        unsafe { (*self.0.as_ptr()).len }
    }

    /// The virtio-net header that describes this frame's offloads (the kernel's
    /// `virtio_net_hdr_from_skb`): `NEEDS_CSUM` with `csum_start`/`csum_offset` for a
    /// partial checksum, the GSO type and size for a TSO frame. `None` for a GSO kind the
    /// header cannot carry (the driver announces none).
    pub(crate) fn vnet_hdr(&self) -> Option<VnetHdr> {
        let mut h = bindings::virtio_net_hdr::default();
        // SAFETY: owned, live skb; `h` is a valid out-parameter.
        let r =
            unsafe { bindings::virtio_net_hdr_from_skb(self.0.as_ptr(), &mut h, true, false, 0) };
        (r == 0).then(|| VnetHdr {
            flags: h.flags,
            gso_type: h.gso_type,
            hdr_len: u16::from_le(h.hdr_len),
            gso_size: u16::from_le(h.gso_size),
            csum_start: u16::from_le(h.csum_start),
            csum_offset: u16::from_le(h.csum_offset),
            num_buffers: 0,
        })
    }

    /// Copies `len` bytes of the frame from `offset` to `to`.
    ///
    /// # Safety
    ///
    /// `to` must be valid for writes of `len` bytes.
    pub(crate) unsafe fn copy_to(&self, offset: u32, to: *mut u8, len: u32) -> Result {
        // SAFETY: `to` is valid for `len` bytes (caller); the core checks the range against
        // the skb.
        to_result(unsafe {
            bindings::skb_copy_bits(self.0.as_ptr(), offset as c_int, to.cast(), len as c_int)
        })
    }

    /// Appends the `len` bytes at `src` (the buffer must have been allocated large enough).
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of `len` bytes; they are read with a raw copy only.
    pub(crate) unsafe fn put_raw(&mut self, src: *const u8, len: usize) {
        // SAFETY: owned skb with tailroom for `len` bytes (allocated with the frame's length);
        // `skb_put` checks and panics on overflow, which the callers' length bounds exclude;
        // `src` is valid for `len` bytes (caller).
        unsafe {
            let dst = bindings::skb_put(self.0.as_ptr(), len as c_uint);
            core::ptr::copy_nonoverlapping(src, dst.cast::<u8>(), len);
        }
    }
}

impl Drop for Skb {
    fn drop(&mut self) {
        // SAFETY: owned skb; any context.
        unsafe { bindings::dev_kfree_skb_any(self.0.as_ptr()) }
    }
}

struct OpsTable<T>(core::marker::PhantomData<T>);

impl<T: Ops> OpsTable<T> {
    const VTABLE: bindings::net_device_ops = bindings::net_device_ops {
        ndo_open: Some(ndo_open::<T>),
        ndo_stop: Some(ndo_stop::<T>),
        ndo_start_xmit: Some(ndo_start_xmit::<T>),
        ndo_get_stats64: Some(ndo_get_stats64::<T>),
        ndo_validate_addr: Some(bindings::eth_validate_addr),
        ndo_set_mac_address: Some(bindings::eth_mac_addr),
        ..pin_init::zeroed()
    };
}

/// # Safety
///
/// `dev` is one of ours (module invariant): its private area is a `Priv` whose `data` is a
/// live `T`; the returned references live for the callback.
unsafe fn ctx<'a, T: Ops>(
    dev: *mut bindings::net_device,
) -> (&'a T, core::mem::ManuallyDrop<NetDev>) {
    // SAFETY: see the function's contract.
    unsafe {
        let p = bindings::netdev_priv(dev).cast::<Priv>();
        let t = &*(*p).data.cast::<T>();
        let nd = core::mem::ManuallyDrop::new(NetDev {
            raw: NonNull::new_unchecked(dev),
            registered: core::sync::atomic::AtomicBool::new(true),
        });
        (t, nd)
    }
}

unsafe extern "C" fn ndo_open<T: Ops>(dev: *mut bindings::net_device) -> c_int {
    // SAFETY: called by the core for our device.
    let (t, nd) = unsafe { ctx::<T>(dev) };
    match t.open(&nd) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn ndo_stop<T: Ops>(dev: *mut bindings::net_device) -> c_int {
    // SAFETY: called by the core for our device.
    let (t, nd) = unsafe { ctx::<T>(dev) };
    t.stop(&nd);
    0
}

unsafe extern "C" fn ndo_start_xmit<T: Ops>(
    skb: *mut bindings::sk_buff,
    dev: *mut bindings::net_device,
) -> bindings::netdev_tx_t {
    // SAFETY: called by the core for our device.
    let (t, nd) = unsafe { ctx::<T>(dev) };
    let Some(skb) = NonNull::new(skb) else {
        return bindings::netdev_tx_NETDEV_TX_OK;
    };
    match t.xmit(&nd, Skb(skb)) {
        Ok(()) => bindings::netdev_tx_NETDEV_TX_OK,
        Err(skb) => {
            // The core keeps the buffer and retries it.
            core::mem::forget(skb);
            bindings::netdev_tx_NETDEV_TX_BUSY
        }
    }
}

unsafe extern "C" fn ndo_get_stats64<T: Ops>(
    dev: *mut bindings::net_device,
    out: *mut bindings::rtnl_link_stats64,
) {
    // SAFETY: called by the core for our device with a valid, zeroed `out`.
    let (t, _nd) = unsafe { ctx::<T>(dev) };
    let s = t.stats();
    // SAFETY: `out` is valid for writes (core contract).
    unsafe {
        (*out).rx_packets = s.rx_packets;
        (*out).rx_bytes = s.rx_bytes;
        (*out).tx_packets = s.tx_packets;
        (*out).tx_bytes = s.tx_bytes;
        (*out).rx_dropped = s.rx_dropped;
        (*out).tx_dropped = s.tx_dropped;
    }
}

unsafe extern "C" fn napi_poll<T: Ops>(napi: *mut bindings::napi_struct, budget: c_int) -> c_int {
    // SAFETY: our NAPI contexts live in a `Priv` of one of our devices; `napi->dev` is it.
    let (t, nd) = unsafe { ctx::<T>((*napi).dev) };
    t.poll(&nd, budget)
}
