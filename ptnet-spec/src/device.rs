//! The ptnet device model: a virtio device (modern virtio-pci transport) whose shared memory
//! region 0 is the port's netmap allocator, whose virtqueues are the rings' doorbells and
//! interrupts, and whose configuration space describes the port. SPEC.md is normative.

use core::mem::{offset_of, size_of};

use crate::csb::CSB_ENTRY_SIZE;

shared_consts! {
    /// Identity of the ptnet virtio device.
    group DEVICE_IDS;
    /// Virtio device id. Unofficial: the top of the range the modern virtio-pci transport can
    /// carry (PCI device id 0x1040 + 63 = 0x107f), far from the ids OASIS has allocated.
    pub const VIRTIO_ID_PTNET: u16 = 63;
    /// PCI vendor id of virtio devices.
    pub const PCI_VENDOR_ID_VIRTIO: u16 = 0x1af4;
    /// PCI device id of the ptnet device on the modern virtio-pci transport.
    pub const PCI_DEVICE_ID_PTNET: u16 = 0x1040 + VIRTIO_ID_PTNET;
    /// Shared memory region id of the netmap allocator.
    pub const PTNET_SHMID_ALLOCATOR: u8 = 0;
    /// Size of the device configuration space in bytes.
    pub const PTNET_CONFIG_SIZE: u32 = 64;
    /// Most rings per direction (one virtqueue and one MSI-X vector per ring).
    pub const PTNET_MAX_RINGS: u32 = 64;
    /// Length of the virtio-net header when PTNET_F_VNET_HDR is negotiated
    /// (`struct virtio_net_hdr_v1`).
    pub const PTNET_VNET_HDR_LEN: u16 = 12;
}

shared_consts! {
    /// Virtio feature bits of the ptnet device.
    group FEATURES;
    /// Frames in the rings carry a 12-byte virtio-net header (checksum and GSO offloads).
    pub const PTNET_F_VNET_HDR: u32 = 0;
    /// The device's config `status` field is valid (always offered).
    pub const PTNET_F_STATUS: u32 = 1;
    /// Virtio 1.0 (mandatory: ptnet has no legacy interface).
    pub const VIRTIO_F_VERSION_1: u32 = 32;
}

shared_consts! {
    /// Bits of `ptnet_config.status`.
    group STATUS_BITS;
    /// The port is up: frames can flow.
    pub const PTNET_S_LINK_UP: u16 = 1;
    /// Shared memory region 0 is mapped and holds the port's rings: the driver may access it.
    pub const PTNET_S_MEM_READY: u16 = 2;
}

shared_struct! {
    /// The device configuration space (`struct ptnet_config`), little endian.
    ///
    /// Every field is read-only for the driver except the two CSB addresses, which the driver
    /// writes before setting DRIVER_OK and the device reads when the driver starts it.
    #[c_name = "ptnet_config"]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct PtnetConfig {
        /// Port MAC address.
        pub mac: [u8; 6],
        /// PTNET_S_* bits.
        pub status: u16,
        /// Number of TX rings (queues 0 .. num_tx_rings - 1).
        pub num_tx_rings: u32,
        /// Number of RX rings (the queues after the TX rings).
        pub num_rx_rings: u32,
        /// Slots per TX ring.
        pub num_tx_slots: u32,
        /// Slots per RX ring.
        pub num_rx_slots: u32,
        /// Offset of the port's netmap_if within shared memory region 0.
        pub nifp_offset: u64,
        /// Bytes of region 0 used by the allocator (the size a netmap application mmaps).
        pub mem_size: u64,
        /// Allocator id: ports with equal ids share one allocator (zero copy between them).
        pub mem_id: u16,
        /// Virtio-net header length used when PTNET_F_VNET_HDR is negotiated, else 0.
        pub vnet_hdr_len: u16,
        /// Size of every netmap buffer.
        pub buf_size: u32,
        /// Guest-physical address of the atok array (driver-written, 64-byte aligned).
        pub csb_atok_gpa: u64,
        /// Guest-physical address of the ktoa array (driver-written, 64-byte aligned).
        pub csb_ktoa_gpa: u64,
    }
}

const _: () = {
    assert!(size_of::<PtnetConfig>() == PTNET_CONFIG_SIZE as usize);
    assert!(offset_of!(PtnetConfig, status) == 6);
    assert!(offset_of!(PtnetConfig, num_tx_rings) == 8);
    assert!(offset_of!(PtnetConfig, nifp_offset) == 24);
    assert!(offset_of!(PtnetConfig, mem_size) == 32);
    assert!(offset_of!(PtnetConfig, mem_id) == 40);
    assert!(offset_of!(PtnetConfig, vnet_hdr_len) == 42);
    assert!(offset_of!(PtnetConfig, buf_size) == 44);
    assert!(offset_of!(PtnetConfig, csb_atok_gpa) == 48);
    assert!(offset_of!(PtnetConfig, csb_ktoa_gpa) == 56);
};

/// Offset of `csb_atok_gpa` in the configuration space.
pub const PTNET_CONFIG_CSB_ATOK_OFFSET: usize = offset_of!(PtnetConfig, csb_atok_gpa);
/// Offset of `csb_ktoa_gpa` in the configuration space.
pub const PTNET_CONFIG_CSB_KTOA_OFFSET: usize = offset_of!(PtnetConfig, csb_ktoa_gpa);

/// The largest buffer a port has (netmap's buffers are at most 64 KiB).
pub const MAX_BUF_SIZE: u32 = 65536;

/// Why a configuration (from a daemon, or as written by a driver) is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// A ring count is 0 or above PTNET_MAX_RINGS.
    RingCount(u32),
    /// A slot count is outside the ring sizes ptnet-spec accepts.
    SlotCount(u32),
    /// A CSB address is zero, misaligned, or its array would wrap the address space.
    CsbAddress(u64),
    /// The netmap_if lies outside the memory the allocator uses.
    NifpOffset(u64),
    /// The buffer size is not a multiple of 64 in `64..=65536`.
    BufSize(u32),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::RingCount(n) => write!(f, "ring count {n} not in 1..={PTNET_MAX_RINGS}"),
            ConfigError::SlotCount(n) => write!(f, "slot count {n} out of range"),
            ConfigError::CsbAddress(a) => write!(f, "CSB address {a:#x} unusable"),
            ConfigError::NifpOffset(o) => write!(f, "nifp offset {o:#x} outside the region"),
            ConfigError::BufSize(b) => {
                write!(
                    f,
                    "buffer size {b} not a multiple of 64 in 64..={MAX_BUF_SIZE}"
                )
            }
        }
    }
}

impl PtnetConfig {
    /// Total number of rings, which is also the number of virtqueues.
    pub const fn num_rings(&self) -> u32 {
        self.num_tx_rings + self.num_rx_rings
    }

    /// The virtqueue (and CSB entry, and MSI-X vector) of TX ring `i`.
    pub const fn tx_queue(&self, i: u32) -> u32 {
        i
    }

    /// The virtqueue (and CSB entry, and MSI-X vector) of RX ring `i`.
    pub const fn rx_queue(&self, i: u32) -> u32 {
        self.num_tx_rings + i
    }

    /// Bytes of each CSB array (one 64-byte entry per ring).
    pub const fn csb_array_size(&self) -> u64 {
        self.num_rings() as u64 * CSB_ENTRY_SIZE as u64
    }

    /// Checks the geometry a device advertises (what a driver must verify before use).
    pub fn validate_geometry(&self) -> Result<(), ConfigError> {
        for n in [self.num_tx_rings, self.num_rx_rings] {
            if n == 0 || n > PTNET_MAX_RINGS {
                return Err(ConfigError::RingCount(n));
            }
        }
        for s in [self.num_tx_slots, self.num_rx_slots] {
            if !(crate::ring::MIN_SLOTS..=crate::ring::MAX_SLOTS).contains(&s) {
                return Err(ConfigError::SlotCount(s));
            }
        }
        if self.nifp_offset >= self.mem_size {
            return Err(ConfigError::NifpOffset(self.nifp_offset));
        }
        // A driver multiplies it by ring and chain sizes: bounded, nothing overflows.
        if !(64..=MAX_BUF_SIZE).contains(&self.buf_size) || self.buf_size % 64 != 0 {
            return Err(ConfigError::BufSize(self.buf_size));
        }
        Ok(())
    }

    /// Checks the CSB addresses a driver wrote (what the device must verify before use):
    /// non-zero, 64-byte aligned, arrays not wrapping the address space. Whether they lie in
    /// guest RAM is for the device to check against its memory map.
    pub fn validate_csb(&self) -> Result<(), ConfigError> {
        let len = self.csb_array_size();
        for a in [self.csb_atok_gpa, self.csb_ktoa_gpa] {
            if a == 0 || a % CSB_ENTRY_SIZE as u64 != 0 || a.checked_add(len).is_none() {
                return Err(ConfigError::CsbAddress(a));
            }
        }
        Ok(())
    }

    /// The configuration as the little-endian bytes of the config space.
    pub fn to_le_bytes(&self) -> [u8; PTNET_CONFIG_SIZE as usize] {
        let mut b = [0u8; PTNET_CONFIG_SIZE as usize];
        b[0..6].copy_from_slice(&self.mac);
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..12].copy_from_slice(&self.num_tx_rings.to_le_bytes());
        b[12..16].copy_from_slice(&self.num_rx_rings.to_le_bytes());
        b[16..20].copy_from_slice(&self.num_tx_slots.to_le_bytes());
        b[20..24].copy_from_slice(&self.num_rx_slots.to_le_bytes());
        b[24..32].copy_from_slice(&self.nifp_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.mem_size.to_le_bytes());
        b[40..42].copy_from_slice(&self.mem_id.to_le_bytes());
        b[42..44].copy_from_slice(&self.vnet_hdr_len.to_le_bytes());
        b[44..48].copy_from_slice(&self.buf_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.csb_atok_gpa.to_le_bytes());
        b[56..64].copy_from_slice(&self.csb_ktoa_gpa.to_le_bytes());
        b
    }

    /// Parses the config space bytes (little endian).
    pub fn from_le_bytes(b: &[u8; PTNET_CONFIG_SIZE as usize]) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        PtnetConfig {
            mac: [b[0], b[1], b[2], b[3], b[4], b[5]],
            status: u16_at(6),
            num_tx_rings: u32_at(8),
            num_rx_rings: u32_at(12),
            num_tx_slots: u32_at(16),
            num_rx_slots: u32_at(20),
            nifp_offset: u64_at(24),
            mem_size: u64_at(32),
            mem_id: u16_at(40),
            vnet_hdr_len: u16_at(42),
            buf_size: u32_at(44),
            csb_atok_gpa: u64_at(48),
            csb_ktoa_gpa: u64_at(56),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PtnetConfig {
        PtnetConfig {
            mac: [0x02, 0, 0, 0, 0, 1],
            status: PTNET_S_LINK_UP,
            num_tx_rings: 2,
            num_rx_rings: 2,
            num_tx_slots: 1024,
            num_rx_slots: 1024,
            nifp_offset: 0x1000,
            mem_size: 0x40_0000,
            mem_id: 3,
            vnet_hdr_len: 0,
            buf_size: 2048,
            csb_atok_gpa: 0x1_0000,
            csb_ktoa_gpa: 0x1_1000,
        }
    }

    #[test]
    fn config_bytes_round_trip_little_endian() {
        let c = sample();
        let b = c.to_le_bytes();
        assert_eq!(&b[8..12], &[2, 0, 0, 0]);
        assert_eq!(PtnetConfig::from_le_bytes(&b), c);
    }

    #[test]
    fn rx_queues_follow_tx_queues() {
        let c = sample();
        assert_eq!(c.tx_queue(1), 1);
        assert_eq!(c.rx_queue(0), 2);
        assert_eq!(c.num_rings(), 4);
    }

    #[test]
    fn validate_csb_rejects_misaligned_and_wrapping_addresses() {
        let mut c = sample();
        assert!(c.validate_csb().is_ok());
        c.csb_atok_gpa = 0x1_0008;
        assert_eq!(c.validate_csb(), Err(ConfigError::CsbAddress(0x1_0008)));
        c.csb_atok_gpa = u64::MAX - 63;
        assert!(c.validate_csb().is_err());
        c.csb_atok_gpa = 0;
        assert!(c.validate_csb().is_err());
    }

    #[test]
    fn validate_geometry_rejects_zero_rings_and_nifp_outside_memory() {
        let mut c = sample();
        assert!(c.validate_geometry().is_ok());
        c.num_rx_rings = 0;
        assert_eq!(c.validate_geometry(), Err(ConfigError::RingCount(0)));
        c = sample();
        c.nifp_offset = c.mem_size;
        assert!(c.validate_geometry().is_err());
        for b in [0, 63, 100, 65600, 1 << 26, u32::MAX] {
            c = sample();
            c.buf_size = b;
            assert_eq!(c.validate_geometry(), Err(ConfigError::BufSize(b)), "{b}");
        }
    }
}
