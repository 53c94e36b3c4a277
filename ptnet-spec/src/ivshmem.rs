//! The ptnet device on QEMU's `ivshmem-doorbell` (the stock-QEMU transport). SPEC.md §6 is
//! normative.
//!
//! The device's BAR 2 is the port's netmap region itself. The region's last page holds a
//! directory ([`IvshmemDir`]); the directory locates one *device block* per `netmap_if`
//! object of the region, and the block of a guest is the one of its ivshmem peer id
//! (`IVPosition`, BAR 0 offset 8): block `id - 1`. A block starts with an [`IvshmemHeader`]
//! (identity, features, the driver's status and the port's [`PtnetConfig`], the CSB offsets
//! in it) and holds the guest's two CSB arrays. The guest kicks ring *k* by writing
//! `daemon_peer << 16 | k` to the doorbell (BAR 0 offset 12); the daemon interrupts it on
//! MSI-X vector *k*. Vector `ctrl_vector` (the number of rings) carries the driver's start
//! and reset requests one way and configuration-change interrupts the other.

use core::mem::{offset_of, size_of};

use crate::csb::CSB_ENTRY_SIZE;
use crate::device::{PtnetConfig, PTNET_MAX_RINGS};

shared_consts! {
    /// The ivshmem transport: identity, registers, layout.
    group IVSHMEM_CONSTS;
    /// PCI vendor id of QEMU's ivshmem devices (Red Hat / Qumranet).
    pub const PCI_VENDOR_ID_IVSHMEM: u16 = 0x1af4;
    /// PCI device id of QEMU's ivshmem devices (plain and doorbell alike).
    pub const PCI_DEVICE_ID_IVSHMEM: u16 = 0x1110;
    /// BAR 0 register: the guest's own peer id (read only).
    pub const IVSHMEM_REG_IVPOSITION: u32 = 8;
    /// BAR 0 register: write `peer << 16 | vector` to ring that peer's vector.
    pub const IVSHMEM_REG_DOORBELL: u32 = 12;
    /// `ptnet_ivshmem_dir.signature`: the bytes `"ptnetdir"`, read as a little-endian u64.
    pub const PTNET_IVSHMEM_DIR_SIGNATURE: u64 = u64::from_le_bytes(*b"ptnetdir");
    /// `ptnet_ivshmem_header.signature`: the bytes `"ptnetblk"`, read as a little-endian u64.
    pub const PTNET_IVSHMEM_HDR_SIGNATURE: u64 = u64::from_le_bytes(*b"ptnetblk");
    /// Version of this layout.
    pub const PTNET_IVSHMEM_VERSION: u32 = 1;
    /// Bytes at the end of BAR 2 that hold the directory (one page).
    pub const PTNET_IVSHMEM_DIR_SIZE: u32 = 4096;
    /// Bytes of a device block before its CSB arrays (the header's page).
    pub const PTNET_IVSHMEM_HDR_SIZE: u32 = 4096;
    /// Most rings (TX plus RX) a port served over ivshmem has: one doorbell vector each, and
    /// QEMU's doorbell register carries 8 bits of vector.
    pub const PTNET_IVSHMEM_MAX_RINGS: u32 = 2 * PTNET_MAX_RINGS;
}

shared_consts! {
    /// `ptnet_ivshmem_header.driver_status`, written by the driver.
    group IVSHMEM_DRIVER_STATUS;
    /// The driver set the port up (features written) and wants the device started.
    pub const PTNET_IVS_DRIVER_OK: u32 = 1;
}

shared_struct! {
    /// The directory (`struct ptnet_ivshmem_dir`): the last [`PTNET_IVSHMEM_DIR_SIZE`] bytes of
    /// BAR 2, little endian, written by the device before it answers the guest's QEMU.
    #[c_name = "ptnet_ivshmem_dir"]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct IvshmemDir {
        /// PTNET_IVSHMEM_DIR_SIGNATURE: BAR 2 is a ptnet region (any other ivshmem device is
        /// not the driver's).
        pub signature: u64,
        /// PTNET_IVSHMEM_VERSION.
        pub version: u32,
        /// Bytes of each device block (a multiple of 4096).
        pub block_size: u32,
        /// Offset in BAR 2 of block 0 (the block of peer id 1).
        pub blocks_offset: u64,
        /// Number of blocks: the peer ids 1 ..= num_blocks have one.
        pub num_blocks: u32,
        /// Reserved, zero.
        pub reserved: u32,
    }
}

shared_struct! {
    /// The header of a device block (`struct ptnet_ivshmem_header`), little endian. The
    /// device writes everything but `driver_features` and `driver_status`; in `config`, the
    /// two CSB fields hold the *offsets in BAR 2* of the block's atok and ktoa arrays (on the
    /// virtio transport the driver writes guest-physical addresses there).
    #[c_name = "ptnet_ivshmem_header"]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct IvshmemHeader {
        /// PTNET_IVSHMEM_HDR_SIGNATURE, written last when the device fills the block.
        pub signature: u64,
        /// The guest's ivshmem peer id this block belongs to (its `IVPosition`).
        pub peer_id: u16,
        /// The peer id of the device: doorbell writes go to `daemon_peer << 16 | vector`.
        pub daemon_peer: u16,
        /// Vectors the device uses: one per ring, then the control vector.
        pub num_vectors: u16,
        /// The control vector (the number of rings): the driver's doorbell for start and
        /// reset requests, the device's configuration-change interrupt.
        pub ctrl_vector: u16,
        /// PTNET_F_* bits the device offers (PTNET_F_VNET_HDR only if the port takes it).
        pub device_features: u32,
        /// PTNET_F_* bits the driver accepts (driver-written, before PTNET_IVS_DRIVER_OK).
        pub driver_features: u32,
        /// PTNET_IVS_DRIVER_OK to ask for a start, 0 to ask for a reset (driver-written).
        pub driver_status: u32,
        /// Bumped by the device at every start and stop.
        pub generation: u32,
        /// The port (`struct ptnet_config`), `status` included.
        pub config: PtnetConfig,
    }
}

const _: () = {
    assert!(size_of::<IvshmemDir>() == 32);
    assert!(offset_of!(IvshmemDir, blocks_offset) == 16);
    assert!(offset_of!(IvshmemDir, num_blocks) == 24);
    assert!(size_of::<IvshmemHeader>() == 96);
    assert!(offset_of!(IvshmemHeader, peer_id) == 8);
    assert!(offset_of!(IvshmemHeader, device_features) == 16);
    assert!(offset_of!(IvshmemHeader, driver_features) == 20);
    assert!(offset_of!(IvshmemHeader, driver_status) == 24);
    assert!(offset_of!(IvshmemHeader, generation) == 28);
    assert!(offset_of!(IvshmemHeader, config) == 32);
    assert!(size_of::<IvshmemHeader>() <= PTNET_IVSHMEM_HDR_SIZE as usize);
};

/// Offset of `driver_features` in a block.
pub const IVSHMEM_DRIVER_FEATURES_OFFSET: usize = offset_of!(IvshmemHeader, driver_features);
/// Offset of `driver_status` in a block.
pub const IVSHMEM_DRIVER_STATUS_OFFSET: usize = offset_of!(IvshmemHeader, driver_status);
/// Offset of `config.status` in a block.
pub const IVSHMEM_STATUS_OFFSET: usize =
    offset_of!(IvshmemHeader, config) + offset_of!(PtnetConfig, status);

/// Bytes of one CSB array of a block holding up to `max_rings` rings, page rounded.
pub const fn csb_array_size(max_rings: u32) -> u64 {
    let b = max_rings as u64 * CSB_ENTRY_SIZE as u64;
    (b + 4095) & !4095
}

/// Bytes of one device block for ports of up to `max_rings` rings: the header page, then the
/// atok and the ktoa arrays.
pub const fn block_size(max_rings: u32) -> u64 {
    PTNET_IVSHMEM_HDR_SIZE as u64 + 2 * csb_array_size(max_rings)
}

/// Where the directory is in a BAR 2 of `bar_size` bytes.
pub const fn dir_offset(bar_size: u64) -> u64 {
    bar_size - PTNET_IVSHMEM_DIR_SIZE as u64
}

/// Why a directory does not describe a usable BAR 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirError {
    /// Not a ptnet region (or not yet filled).
    Signature,
    /// A layout version this code does not know.
    Version(u32),
    /// The blocks do not lie, page aligned, between the start of BAR 2 and the directory.
    Blocks,
    /// The peer id has no block.
    Peer(u16),
}

impl core::fmt::Display for DirError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DirError::Signature => f.write_str("BAR 2 carries no ptnet directory"),
            DirError::Version(v) => write!(f, "ptnet ivshmem layout version {v} unknown"),
            DirError::Blocks => f.write_str("the device blocks lie outside BAR 2"),
            DirError::Peer(p) => write!(f, "peer id {p} has no device block"),
        }
    }
}

impl IvshmemDir {
    /// The offset in BAR 2 of the block of peer `id`, after checking the directory against a
    /// BAR 2 of `bar_size` bytes (what a driver does before it touches a block).
    pub fn block_offset(&self, bar_size: u64, id: u16) -> Result<u64, DirError> {
        if self.signature != PTNET_IVSHMEM_DIR_SIGNATURE {
            return Err(DirError::Signature);
        }
        if self.version != PTNET_IVSHMEM_VERSION {
            return Err(DirError::Version(self.version));
        }
        let bs = u64::from(self.block_size);
        let end = bs
            .checked_mul(u64::from(self.num_blocks))
            .and_then(|b| b.checked_add(self.blocks_offset));
        let fits = bar_size >= u64::from(PTNET_IVSHMEM_DIR_SIZE)
            && bs >= u64::from(PTNET_IVSHMEM_HDR_SIZE)
            && bs % 4096 == 0
            && self.blocks_offset % 4096 == 0
            && end.is_some_and(|e| e <= dir_offset(bar_size));
        if !fits {
            return Err(DirError::Blocks);
        }
        if id == 0 || u32::from(id) > self.num_blocks {
            return Err(DirError::Peer(id));
        }
        Ok(self.blocks_offset + u64::from(id - 1) * bs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> IvshmemDir {
        IvshmemDir {
            signature: PTNET_IVSHMEM_DIR_SIGNATURE,
            version: PTNET_IVSHMEM_VERSION,
            block_size: block_size(4) as u32,
            blocks_offset: 0x10_0000,
            num_blocks: 2,
            reserved: 0,
        }
    }

    #[test]
    fn peer_ids_from_one_find_their_blocks() {
        let d = dir();
        assert_eq!(d.block_size, 3 * 4096);
        assert_eq!(d.block_offset(0x20_0000, 1), Ok(0x10_0000));
        assert_eq!(d.block_offset(0x20_0000, 2), Ok(0x10_3000));
        assert_eq!(d.block_offset(0x20_0000, 0), Err(DirError::Peer(0)));
        assert_eq!(d.block_offset(0x20_0000, 3), Err(DirError::Peer(3)));
    }

    #[test]
    fn a_directory_pointing_outside_bar2_is_refused() {
        let mut d = dir();
        assert_eq!(d.block_offset(0x10_4000, 1), Err(DirError::Blocks));
        d.num_blocks = u32::MAX;
        assert_eq!(d.block_offset(0x20_0000, 1), Err(DirError::Blocks));
        d.block_size = !4095u32;
        d.blocks_offset = !4095u64;
        assert_eq!(d.block_offset(!4095u64, 1), Err(DirError::Blocks));
        d = dir();
        d.blocks_offset = !4095u64;
        assert_eq!(d.block_offset(0x20_0000, 1), Err(DirError::Blocks));
        d = dir();
        d.signature = 0;
        assert_eq!(d.block_offset(0x20_0000, 1), Err(DirError::Signature));
        assert_eq!(d.block_offset(0, 1), Err(DirError::Signature));
        d = dir();
        assert_eq!(d.block_offset(100, 1), Err(DirError::Blocks));
    }

    #[test]
    fn signatures_read_as_their_ascii_bytes() {
        assert_eq!(&PTNET_IVSHMEM_DIR_SIGNATURE.to_le_bytes(), b"ptnetdir");
        assert_eq!(&PTNET_IVSHMEM_HDR_SIGNATURE.to_le_bytes(), b"ptnetblk");
    }
}
