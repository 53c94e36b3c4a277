//! The netmap ABI, API version 14, binary compatible with netmap's `sys/net/netmap.h`.
//!
//! Shared-memory objects ([`NetmapSlot`], [`NetmapRing`], [`NetmapIf`]) and the control
//! requests (`nmreq_*`) carried by `NIOCCTRL`. Field names are netmap's own. Sizes and offsets
//! are asserted at compile time against the values of netmap's headers on LP64 (x86_64), so a
//! netmap application compiled against netmap's headers reads these structures unchanged.

use core::mem::{offset_of, size_of};
use core::sync::atomic::AtomicU32;

shared_consts! {
    /// netmap API versions and limits.
    group API_CONSTS;
    /// The API version this ABI implements (`NETMAP_API`).
    pub const NETMAP_API: u16 = 14;
    /// Oldest API version accepted in `nr_version`.
    pub const NETMAP_MIN_API: u16 = 14;
    /// Newest API version accepted in `nr_version`.
    pub const NETMAP_MAX_API: u16 = 15;
    /// Size of `nmreq_header.nr_name`, including the terminating NUL.
    pub const NETMAP_REQ_IFNAMSIZ: u32 = 64;
    /// Maximum size of a whole request, options included.
    pub const NETMAP_REQ_MAXSIZE: u32 = 4096;
    /// Alignment of the `sem` area in `netmap_ring`.
    pub const NM_CACHE_ALIGN: u32 = 128;
    /// Maximum number of slots in one NS_MOREFRAG chain.
    pub const NETMAP_MAX_FRAGS: u32 = 64;
    /// Mask of the ring number in `nr_ringid`.
    pub const NETMAP_RING_MASK: u16 = 0x0fff;
    /// Buffer indices below this are reserved (0 and 1 are netmap's "fake" buffers).
    pub const NETMAP_BUF_RESERVED: u32 = 2;
}

shared_consts! {
    /// `netmap_slot.flags`.
    group SLOT_FLAGS;
    /// The application changed `buf_idx` (the kernel also sets it when it does).
    pub const NS_BUF_CHANGED: u16 = 0x0001;
    /// Ask for a notification when this slot is processed.
    pub const NS_REPORT: u16 = 0x0002;
    /// Forward between NIC and host rings (with NR_FORWARD on the ring).
    pub const NS_FORWARD: u16 = 0x0004;
    /// VALE: do not learn the source MAC of this frame.
    pub const NS_NO_LEARN: u16 = 0x0008;
    /// VALE TX only: the data is at the user pointer `ptr`.
    pub const NS_INDIRECT: u16 = 0x0010;
    /// More fragments follow in the next slot; `len` is per fragment.
    pub const NS_MOREFRAG: u16 = 0x0020;
    /// Monitor copy that came from the TX direction.
    pub const NS_TXMON: u16 = 0x0040;
    /// Shift of the port byte (VALE TX: destination override; VALE RX: fragment count).
    pub const NS_PORT_SHIFT: u16 = 8;
    /// Mask of the port byte.
    pub const NS_PORT_MASK: u16 = 0xff00;
}

shared_consts! {
    /// `netmap_ring.flags`, `netmap_ring.dir` and `netmap_if.ni_flags`.
    group RING_FLAGS;
    /// Update the ring timestamp on every sync.
    pub const NR_TIMESTAMP: u32 = 0x0002;
    /// Enable NS_FORWARD on this ring.
    pub const NR_FORWARD: u32 = 0x0004;
    /// `netmap_ring.dir` of a TX ring.
    pub const NR_TX: u16 = 0;
    /// `netmap_ring.dir` of an RX ring.
    pub const NR_RX: u16 = 1;
    /// `netmap_if.ni_flags`: the interface uses a private memory region.
    pub const NI_PRIV_MEM: u32 = 0x1;
}

shared_consts! {
    /// `nmreq_header.nr_reqtype`.
    group REQ_TYPES;
    /// Register a port (bind rings to the file descriptor).
    pub const NETMAP_REQ_REGISTER: u16 = 1;
    /// Ask for ring/slot counts and memory size of a port.
    pub const NETMAP_REQ_PORT_INFO_GET: u16 = 2;
    /// Attach a port to a VALE switch.
    pub const NETMAP_REQ_VALE_ATTACH: u16 = 3;
    /// Detach a port from a VALE switch.
    pub const NETMAP_REQ_VALE_DETACH: u16 = 4;
    /// List VALE ports.
    pub const NETMAP_REQ_VALE_LIST: u16 = 5;
    /// Set the virtio-net header length of a port.
    pub const NETMAP_REQ_PORT_HDR_SET: u16 = 6;
    /// Get the virtio-net header length of a port.
    pub const NETMAP_REQ_PORT_HDR_GET: u16 = 7;
    /// Create a persistent VALE port.
    pub const NETMAP_REQ_VALE_NEWIF: u16 = 8;
    /// Delete a persistent VALE port.
    pub const NETMAP_REQ_VALE_DELIF: u16 = 9;
    /// Enable VALE polling.
    pub const NETMAP_REQ_VALE_POLLING_ENABLE: u16 = 10;
    /// Disable VALE polling.
    pub const NETMAP_REQ_VALE_POLLING_DISABLE: u16 = 11;
    /// Describe the pools of a memory region.
    pub const NETMAP_REQ_POOLS_INFO_GET: u16 = 12;
    /// Start the in-kernel sync loop.
    pub const NETMAP_REQ_SYNC_KLOOP_START: u16 = 13;
    /// Stop the in-kernel sync loop.
    pub const NETMAP_REQ_SYNC_KLOOP_STOP: u16 = 14;
    /// Enable CSB mode.
    pub const NETMAP_REQ_CSB_ENABLE: u16 = 15;
}

shared_consts! {
    /// `nmreq_option.nro_reqtype`.
    group OPT_TYPES;
    /// External memory.
    pub const NETMAP_REQ_OPT_EXTMEM: u32 = 1;
    /// Eventfds for the sync loop.
    pub const NETMAP_REQ_OPT_SYNC_KLOOP_EVENTFDS: u32 = 2;
    /// CSB addresses.
    pub const NETMAP_REQ_OPT_CSB: u32 = 3;
    /// Sync loop mode.
    pub const NETMAP_REQ_OPT_SYNC_KLOOP_MODE: u32 = 4;
    /// Buffer offsets.
    pub const NETMAP_REQ_OPT_OFFSETS: u32 = 5;
    /// One past the last option type.
    pub const NETMAP_REQ_OPT_MAX: u32 = 6;
}

shared_consts! {
    /// `nmreq_register.nr_mode`.
    group REG_MODES;
    /// Backward compatibility: the mode is taken from `nr_ringid`.
    pub const NR_REG_DEFAULT: u32 = 0;
    /// All hardware (NIC) ring pairs.
    pub const NR_REG_ALL_NIC: u32 = 1;
    /// All host (software) rings.
    pub const NR_REG_SW: u32 = 2;
    /// All NIC and host rings.
    pub const NR_REG_NIC_SW: u32 = 3;
    /// One NIC ring pair, `nr_ringid`.
    pub const NR_REG_ONE_NIC: u32 = 4;
    /// Deprecated: pipe master (the pipe is now part of the name).
    pub const NR_REG_PIPE_MASTER: u32 = 5;
    /// Deprecated: pipe slave (the pipe is now part of the name).
    pub const NR_REG_PIPE_SLAVE: u32 = 6;
    /// No rings at all.
    pub const NR_REG_NULL: u32 = 7;
    /// One host ring pair, `nr_ringid`.
    pub const NR_REG_ONE_SW: u32 = 8;
}

shared_consts! {
    /// `nmreq_register.nr_flags`.
    group REG_FLAGS;
    /// Monitor the TX rings.
    pub const NR_MONITOR_TX: u64 = 0x100;
    /// Monitor the RX rings.
    pub const NR_MONITOR_RX: u64 = 0x200;
    /// Zero-copy monitor.
    pub const NR_ZCOPY_MON: u64 = 0x400;
    /// Exclusive access to the selected rings.
    pub const NR_EXCLUSIVE: u64 = 0x800;
    /// Bind only the RX rings.
    pub const NR_RX_RINGS_ONLY: u64 = 0x2000;
    /// Bind only the TX rings.
    pub const NR_TX_RINGS_ONLY: u64 = 0x4000;
    /// The application accepts a virtio-net header in front of each frame.
    pub const NR_ACCEPT_VNET_HDR: u64 = 0x8000;
    /// poll() on the file descriptor also syncs the RX rings.
    pub const NR_DO_RX_POLL: u64 = 0x10000;
    /// poll() does not implicitly sync the TX rings.
    pub const NR_NO_TX_POLL: u64 = 0x20000;
}

/// `_IOC` encoding of Linux (x86_64, arm64, riscv): dir:2 size:14 type:8 nr:8.
const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}

shared_consts! {
    /// ioctl numbers on Linux (FreeBSD's `_IO` adds IOC_VOID: 0x20000000).
    group IOCTLS;
    /// `_IOWR('i', 151, struct nmreq_header)`.
    pub const NIOCCTRL: u32 = ioc(3, b'i', 151, size_of::<NmreqHeader>());
    /// `_IO('i', 148)`: sync the TX rings bound to the file descriptor.
    pub const NIOCTXSYNC: u32 = ioc(0, b'i', 148, 0);
    /// `_IO('i', 149)`: sync the RX rings bound to the file descriptor.
    pub const NIOCRXSYNC: u32 = ioc(0, b'i', 149, 0);
}

const _: () = assert!(NIOCCTRL == 0xC058_6997);
const _: () = assert!(NIOCTXSYNC == 0x6994);
const _: () = assert!(NIOCRXSYNC == 0x6995);

shared_struct! {
    /// One slot of a netmap ring (`struct netmap_slot`).
    ///
    /// Slots in `[head, tail)` belong to the application, the others to the kernel side.
    /// Everything here is written by whichever side owns the slot and must be treated as
    /// untrusted by the other side.
    #[c_name = "ptnet_nm_slot"]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct NetmapSlot {
        /// Buffer index in the region's buffer pool.
        pub buf_idx: u32,
        /// Length of the data in the buffer (of this fragment).
        pub len: u16,
        /// NS_* flags, plus the port byte (NS_PORT_MASK).
        pub flags: u16,
        /// User pointer (NS_INDIRECT) or buffer offset (OFFSETS option).
        pub ptr: u64,
    }
}

shared_struct! {
    /// The header of a netmap ring (`struct netmap_ring`); the slots follow at offset 256.
    ///
    /// `head` and `cur` are written by the application, `tail` by the kernel side, both
    /// concurrently with the other side's reads: hence atomics. The rest is written once when
    /// the ring is created.
    #[c_name = "ptnet_nm_ring"]
    #[derive(Debug)]
    pub struct NetmapRing {
        /// Offset of the buffer pool from this ring (buffer i is at `ring + buf_ofs + i * nr_buf_size`).
        pub buf_ofs: i64,
        /// Number of slots.
        pub num_slots: u32,
        /// Size of each buffer.
        pub nr_buf_size: u32,
        /// Ring number within its direction.
        pub ringid: u16,
        /// NR_TX or NR_RX.
        pub dir: u16,
        /// First slot owned by the application (written by the application).
        pub head: AtomicU32,
        /// Wake-up point (written by the application).
        pub cur: AtomicU32,
        /// First slot owned by the kernel (written by the kernel side).
        pub tail: AtomicU32,
        /// NR_TIMESTAMP, NR_FORWARD.
        pub flags: u32,
        /// Padding to the timestamp.
        pub pad0: u32,
        /// Timestamp of the last sync, seconds.
        pub ts_sec: i64,
        /// Timestamp of the last sync, microseconds.
        pub ts_usec: i64,
        /// Mask of the offset bits in `netmap_slot.ptr` (OFFSETS option).
        pub offset_mask: u64,
        /// Alignment required for buffer offsets (OFFSETS option).
        pub buf_align: u64,
        /// Padding to the `sem` area.
        pub pad1: [u8; 56],
        /// Opaque to applications (netmap's `sem[128]`, aligned to NM_CACHE_ALIGN).
        pub sem: [u8; 128],
    }
    flex slot: NetmapSlot;
}

shared_struct! {
    /// The header of a netmap interface descriptor (`struct netmap_if`); `ring_ofs[]` follows.
    ///
    /// `ring_ofs[]` holds, relative to this header, the offsets of the NIC TX rings, the host
    /// TX rings, the NIC RX rings and the host RX rings, in that order; 0 means not mapped.
    #[c_name = "ptnet_nm_if"]
    #[derive(Debug, Clone, Copy)]
    pub struct NetmapIf {
        /// Port name, NUL terminated.
        pub ni_name: [u8; 16],
        /// API version.
        pub ni_version: u32,
        /// NI_PRIV_MEM.
        pub ni_flags: u32,
        /// Number of NIC TX rings.
        pub ni_tx_rings: u32,
        /// Number of NIC RX rings.
        pub ni_rx_rings: u32,
        /// Head of the list of extra buffers (chained through their first u32).
        pub ni_bufs_head: u32,
        /// Number of host TX rings.
        pub ni_host_tx_rings: u32,
        /// Number of host RX rings.
        pub ni_host_rx_rings: u32,
        /// Reserved.
        pub spare: [u32; 3],
    }
    flex ring_ofs: i64;
}

shared_struct! {
    /// The header of every `NIOCCTRL` request (`struct nmreq_header`).
    #[c_name = "ptnet_nmreq_header"]
    #[derive(Debug, Clone, Copy)]
    pub struct NmreqHeader {
        /// API version (NETMAP_API).
        pub nr_version: u16,
        /// NETMAP_REQ_* request type.
        pub nr_reqtype: u16,
        /// Must be zero.
        pub nr_reserved: u32,
        /// Port name, NUL terminated.
        pub nr_name: [u8; 64],
        /// User pointer to the first `nmreq_option`, or 0.
        pub nr_options: u64,
        /// User pointer to the request body.
        pub nr_body: u64,
    }
}

shared_struct! {
    /// Body of NETMAP_REQ_REGISTER (`struct nmreq_register`).
    #[c_name = "ptnet_nmreq_register"]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct NmreqRegister {
        /// Out: offset of the netmap_if in the memory region.
        pub nr_offset: u64,
        /// Out: size of the memory region.
        pub nr_memsize: u64,
        /// In/out: slots per TX ring.
        pub nr_tx_slots: u32,
        /// In/out: slots per RX ring.
        pub nr_rx_slots: u32,
        /// In/out: NIC TX rings.
        pub nr_tx_rings: u16,
        /// In/out: NIC RX rings.
        pub nr_rx_rings: u16,
        /// In/out: host TX rings.
        pub nr_host_tx_rings: u16,
        /// In/out: host RX rings.
        pub nr_host_rx_rings: u16,
        /// In/out: memory allocator id (0 = let the kernel choose).
        pub nr_mem_id: u16,
        /// Ring number for NR_REG_ONE_NIC / NR_REG_ONE_SW.
        pub nr_ringid: u16,
        /// NR_REG_* mode.
        pub nr_mode: u32,
        /// In/out: extra buffers wanted / obtained.
        pub nr_extra_bufs: u32,
        /// Padding.
        pub pad: u32,
        /// NR_* flags.
        pub nr_flags: u64,
    }
}

shared_struct! {
    /// Body of NETMAP_REQ_PORT_INFO_GET (`struct nmreq_port_info_get`).
    #[c_name = "ptnet_nmreq_port_info_get"]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct NmreqPortInfoGet {
        /// Size of the memory region.
        pub nr_memsize: u64,
        /// Slots per TX ring.
        pub nr_tx_slots: u32,
        /// Slots per RX ring.
        pub nr_rx_slots: u32,
        /// NIC TX rings.
        pub nr_tx_rings: u16,
        /// NIC RX rings.
        pub nr_rx_rings: u16,
        /// Host TX rings.
        pub nr_host_tx_rings: u16,
        /// Host RX rings.
        pub nr_host_rx_rings: u16,
        /// Memory allocator id.
        pub nr_mem_id: u16,
        /// Padding.
        pub pad: [u16; 3],
    }
}

shared_struct! {
    /// Body of NETMAP_REQ_POOLS_INFO_GET (`struct nmreq_pools_info`).
    #[c_name = "ptnet_nmreq_pools_info"]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct NmreqPoolsInfo {
        /// Size of the memory region.
        pub nr_memsize: u64,
        /// Memory allocator id.
        pub nr_mem_id: u16,
        /// Padding.
        pub pad1: [u16; 3],
        /// Offset of the netmap_if pool.
        pub nr_if_pool_offset: u64,
        /// Objects in the netmap_if pool.
        pub nr_if_pool_objtotal: u32,
        /// Size of each netmap_if object.
        pub nr_if_pool_objsize: u32,
        /// Offset of the ring pool.
        pub nr_ring_pool_offset: u64,
        /// Objects in the ring pool.
        pub nr_ring_pool_objtotal: u32,
        /// Size of each ring object.
        pub nr_ring_pool_objsize: u32,
        /// Offset of the buffer pool.
        pub nr_buf_pool_offset: u64,
        /// Buffers in the buffer pool.
        pub nr_buf_pool_objtotal: u32,
        /// Size of each buffer.
        pub nr_buf_pool_objsize: u32,
    }
}

shared_struct! {
    /// Header of every request option (`struct nmreq_option`), chained through `nro_next`.
    #[c_name = "ptnet_nmreq_option"]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct NmreqOption {
        /// User pointer to the next option, or 0.
        pub nro_next: u64,
        /// NETMAP_REQ_OPT_* type.
        pub nro_reqtype: u32,
        /// Out: 0 or an errno for this option.
        pub nro_status: u32,
        /// Size of the whole option, for variable-size options.
        pub nro_size: u64,
    }
}

shared_struct! {
    /// Body of NETMAP_REQ_PORT_HDR_SET/GET (`struct nmreq_port_hdr`).
    #[c_name = "ptnet_nmreq_port_hdr"]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct NmreqPortHdr {
        /// Virtio-net header length (0, 10 or 12).
        pub nr_hdr_len: u32,
        /// Padding.
        pub pad: u32,
    }
}

// Sizes and offsets from netmap's headers (LP64), independent of the declarations above.
const _: () = {
    assert!(size_of::<NetmapSlot>() == 16);
    assert!(offset_of!(NetmapSlot, len) == 4);
    assert!(offset_of!(NetmapSlot, flags) == 6);
    assert!(offset_of!(NetmapSlot, ptr) == 8);

    assert!(size_of::<NetmapRing>() == 256);
    assert!(offset_of!(NetmapRing, num_slots) == 8);
    assert!(offset_of!(NetmapRing, nr_buf_size) == 12);
    assert!(offset_of!(NetmapRing, ringid) == 16);
    assert!(offset_of!(NetmapRing, dir) == 18);
    assert!(offset_of!(NetmapRing, head) == 20);
    assert!(offset_of!(NetmapRing, cur) == 24);
    assert!(offset_of!(NetmapRing, tail) == 28);
    assert!(offset_of!(NetmapRing, flags) == 32);
    assert!(offset_of!(NetmapRing, ts_sec) == 40);
    assert!(offset_of!(NetmapRing, offset_mask) == 56);
    assert!(offset_of!(NetmapRing, buf_align) == 64);
    assert!(offset_of!(NetmapRing, sem) == NM_CACHE_ALIGN as usize);

    assert!(size_of::<NetmapIf>() == 56);
    assert!(offset_of!(NetmapIf, ni_version) == 16);
    assert!(offset_of!(NetmapIf, ni_flags) == 20);
    assert!(offset_of!(NetmapIf, ni_tx_rings) == 24);
    assert!(offset_of!(NetmapIf, ni_rx_rings) == 28);
    assert!(offset_of!(NetmapIf, ni_bufs_head) == 32);
    assert!(offset_of!(NetmapIf, ni_host_tx_rings) == 36);
    assert!(offset_of!(NetmapIf, ni_host_rx_rings) == 40);

    assert!(size_of::<NmreqHeader>() == 88);
    assert!(offset_of!(NmreqHeader, nr_reqtype) == 2);
    assert!(offset_of!(NmreqHeader, nr_reserved) == 4);
    assert!(offset_of!(NmreqHeader, nr_name) == 8);
    assert!(offset_of!(NmreqHeader, nr_options) == 72);
    assert!(offset_of!(NmreqHeader, nr_body) == 80);

    assert!(size_of::<NmreqRegister>() == 56);
    assert!(offset_of!(NmreqRegister, nr_memsize) == 8);
    assert!(offset_of!(NmreqRegister, nr_tx_slots) == 16);
    assert!(offset_of!(NmreqRegister, nr_rx_slots) == 20);
    assert!(offset_of!(NmreqRegister, nr_tx_rings) == 24);
    assert!(offset_of!(NmreqRegister, nr_rx_rings) == 26);
    assert!(offset_of!(NmreqRegister, nr_host_tx_rings) == 28);
    assert!(offset_of!(NmreqRegister, nr_host_rx_rings) == 30);
    assert!(offset_of!(NmreqRegister, nr_mem_id) == 32);
    assert!(offset_of!(NmreqRegister, nr_ringid) == 34);
    assert!(offset_of!(NmreqRegister, nr_mode) == 36);
    assert!(offset_of!(NmreqRegister, nr_extra_bufs) == 40);
    assert!(offset_of!(NmreqRegister, nr_flags) == 48);

    assert!(size_of::<NmreqPortInfoGet>() == 32);
    assert!(offset_of!(NmreqPortInfoGet, nr_tx_slots) == 8);
    assert!(offset_of!(NmreqPortInfoGet, nr_rx_slots) == 12);
    assert!(offset_of!(NmreqPortInfoGet, nr_tx_rings) == 16);
    assert!(offset_of!(NmreqPortInfoGet, nr_rx_rings) == 18);
    assert!(offset_of!(NmreqPortInfoGet, nr_host_tx_rings) == 20);
    assert!(offset_of!(NmreqPortInfoGet, nr_host_rx_rings) == 22);
    assert!(offset_of!(NmreqPortInfoGet, nr_mem_id) == 24);

    assert!(size_of::<NmreqPoolsInfo>() == 64);
    assert!(offset_of!(NmreqPoolsInfo, nr_mem_id) == 8);
    assert!(offset_of!(NmreqPoolsInfo, nr_if_pool_offset) == 16);
    assert!(offset_of!(NmreqPoolsInfo, nr_if_pool_objtotal) == 24);
    assert!(offset_of!(NmreqPoolsInfo, nr_if_pool_objsize) == 28);
    assert!(offset_of!(NmreqPoolsInfo, nr_ring_pool_offset) == 32);
    assert!(offset_of!(NmreqPoolsInfo, nr_ring_pool_objtotal) == 40);
    assert!(offset_of!(NmreqPoolsInfo, nr_ring_pool_objsize) == 44);
    assert!(offset_of!(NmreqPoolsInfo, nr_buf_pool_offset) == 48);
    assert!(offset_of!(NmreqPoolsInfo, nr_buf_pool_objtotal) == 56);
    assert!(offset_of!(NmreqPoolsInfo, nr_buf_pool_objsize) == 60);

    assert!(size_of::<NmreqOption>() == 24);
    assert!(offset_of!(NmreqOption, nro_reqtype) == 8);
    assert!(offset_of!(NmreqOption, nro_status) == 12);
    assert!(offset_of!(NmreqOption, nro_size) == 16);

    assert!(size_of::<NmreqPortHdr>() == 8);
};

/// The ring offsets of a `netmap_if` start right after its fixed header.
pub const NETMAP_IF_RING_OFS: usize = size_of::<NetmapIf>();

/// Slots start right after the ring header.
pub const NETMAP_RING_SLOTS_OFS: usize = size_of::<NetmapRing>();
