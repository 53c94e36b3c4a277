//! The virtio-net header (`struct virtio_net_hdr_v1`, 12 bytes, little endian) as it travels
//! in front of a frame in netmap buffers when a port carries offloads: on a VALE port whose
//! header length is 12, on a ptnet device with `PTNET_F_VNET_HDR`, and in a virtio-net
//! device's buffers. The switch resolves it in software toward ports without one.

shared_consts! {
    /// Virtio-net header flags and GSO types (virtio 1.x, 5.1.6).
    group VNET_HDR;
    /// Length of the header on every ptnet path (`virtio_net_hdr_v1`, with `num_buffers`).
    pub const VNET_HDR_LEN: u32 = 12;
    /// `flags`: the checksum from `csum_start` to the end must be computed and stored at
    /// `csum_start + csum_offset` (the field holds the pseudo-header sum).
    pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u32 = 1;
    /// `flags`: the frame's checksums are known good (a device's word: a driver must not set
    /// it, virtio 1.x 5.1.6.2).
    pub const VIRTIO_NET_HDR_F_DATA_VALID: u32 = 2;
    /// `flags`: the frame was coalesced by receive segment coalescing (device only too).
    pub const VIRTIO_NET_HDR_F_RSC_INFO: u32 = 4;
    /// `gso_type`: not a GSO frame.
    pub const VIRTIO_NET_HDR_GSO_NONE: u32 = 0;
    /// `gso_type`: TCP over IPv4, to be cut into `gso_size`-byte segments.
    pub const VIRTIO_NET_HDR_GSO_TCPV4: u32 = 1;
    /// `gso_type`: UDP fragmentation offload (obsolete, never produced by ptnet).
    pub const VIRTIO_NET_HDR_GSO_UDP: u32 = 3;
    /// `gso_type`: TCP over IPv6.
    pub const VIRTIO_NET_HDR_GSO_TCPV6: u32 = 4;
    /// `gso_type` bit: the TCP stream uses ECN (CWR on the first segment only).
    pub const VIRTIO_NET_HDR_GSO_ECN: u32 = 0x80;
}

shared_struct! {
    /// `struct virtio_net_hdr_v1`.
    #[c_name = "ptnet_vnet_hdr"]
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct VnetHdr {
        /// VIRTIO_NET_HDR_F_* bits.
        pub flags: u8,
        /// VIRTIO_NET_HDR_GSO_* value (with the ECN bit).
        pub gso_type: u8,
        /// Length of the headers to copy in front of every segment (a hint: ptnet derives it).
        pub hdr_len: u16,
        /// Payload bytes per segment.
        pub gso_size: u16,
        /// Where checksumming starts (the L4 header).
        pub csum_start: u16,
        /// Where the checksum goes, from `csum_start`.
        pub csum_offset: u16,
        /// Buffers merged into this frame (virtio-net `MRG_RXBUF`); 0 in netmap buffers.
        pub num_buffers: u16,
    }
}

const _: () = {
    assert!(core::mem::size_of::<VnetHdr>() == VNET_HDR_LEN as usize);
    assert!(core::mem::offset_of!(VnetHdr, hdr_len) == 2);
    assert!(core::mem::offset_of!(VnetHdr, csum_start) == 6);
    assert!(core::mem::offset_of!(VnetHdr, num_buffers) == 10);
};

impl VnetHdr {
    /// Parses the first 12 bytes of `b` (little endian); `None` if `b` is shorter.
    pub fn from_le_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 12] = b.get(..12)?.try_into().ok()?;
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        })
    }

    /// The header as its 12 little-endian bytes.
    pub fn to_le_bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// Whether the frame needs nothing done: no checksum to fill, no segmentation.
    pub fn is_plain(&self) -> bool {
        u32::from(self.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0
            && u32::from(self.gso_type & !(VIRTIO_NET_HDR_GSO_ECN as u8)) == VIRTIO_NET_HDR_GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 74,
            gso_size: 1440,
            csum_start: 54,
            csum_offset: 16,
            num_buffers: 0,
        };
        assert_eq!(VnetHdr::from_le_bytes(&h.to_le_bytes()), Some(h));
        assert!(!h.is_plain());
        assert!(VnetHdr::default().is_plain());
        assert_eq!(VnetHdr::from_le_bytes(&[0; 11]), None);
    }
}
