//! The virtio-net configuration space (virtio 1.2 §5.1.4): `mac`, `status`,
//! `max_virtqueue_pairs`. Served by `GET_CONFIG` to frontends that ask (QEMU's virtio-net
//! takes the MAC from its own `mac=` property instead; DPDK's from its `mac=` devarg).

use std::mem::{offset_of, size_of};

use virtio_bindings::virtio_net::{VIRTIO_NET_S_LINK_UP, virtio_net_config};

/// Bytes of the configuration space the device serves (up to and including
/// `max_virtqueue_pairs`).
pub const NET_CONFIG_SIZE: usize =
    offset_of!(virtio_net_config, max_virtqueue_pairs) + size_of::<u16>();

/// The configuration space of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    bytes: [u8; NET_CONFIG_SIZE],
}

impl NetConfig {
    /// A configuration with `mac`, the link up, and `pairs` queue pairs.
    pub fn new(mac: [u8; 6], pairs: u16) -> Self {
        let mut bytes = [0u8; NET_CONFIG_SIZE];
        let m = offset_of!(virtio_net_config, mac);
        bytes[m..m + 6].copy_from_slice(&mac);
        let s = offset_of!(virtio_net_config, status);
        bytes[s..s + 2].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        let p = offset_of!(virtio_net_config, max_virtqueue_pairs);
        bytes[p..p + 2].copy_from_slice(&pairs.max(1).to_le_bytes());
        NetConfig { bytes }
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let m = offset_of!(virtio_net_config, mac);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.bytes[m..m + 6]);
        mac
    }

    /// Sets the MAC address (`VIRTIO_NET_CTRL_MAC_ADDR_SET`).
    pub fn set_mac(&mut self, mac: [u8; 6]) {
        let m = offset_of!(virtio_net_config, mac);
        self.bytes[m..m + 6].copy_from_slice(&mac);
    }

    /// `size` bytes at `offset`; bytes past the end read as zero (never an error: the vhost
    /// crate would end the connection).
    pub fn read(&self, offset: u32, size: u32) -> Vec<u8> {
        let size = size.min(256) as usize;
        (0..size)
            .map(|i| {
                (offset as usize)
                    .checked_add(i)
                    .and_then(|o| self.bytes.get(o))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// `SET_CONFIG`: only the MAC is writable (legacy drivers set it this way); returns false
    /// for a write outside it.
    pub fn write(&mut self, offset: u32, buf: &[u8]) -> bool {
        let m = offset_of!(virtio_net_config, mac);
        let (Ok(o), Some(end)) = (
            usize::try_from(offset),
            (offset as usize).checked_add(buf.len()),
        ) else {
            return false;
        };
        if o < m || end > m + 6 {
            return false;
        }
        // PANIC: m <= o <= end <= m + 6, inside the config space (checked above).
        self.bytes[o..end].copy_from_slice(buf);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_has_mac_link_up_and_pairs_at_the_virtio_offsets() {
        let c = NetConfig::new([2, 1, 2, 3, 4, 5], 4);
        assert_eq!(NET_CONFIG_SIZE, 10);
        assert_eq!(c.read(0, 6), vec![2, 1, 2, 3, 4, 5]);
        assert_eq!(c.read(6, 2), vec![1, 0], "VIRTIO_NET_S_LINK_UP");
        assert_eq!(c.read(8, 2), vec![4, 0]);
        assert_eq!(
            c.read(8, 8),
            vec![4, 0, 0, 0, 0, 0, 0, 0],
            "zero past the end"
        );
        assert_eq!(c.read(u32::MAX, 4), vec![0; 4]);
    }

    #[test]
    fn only_the_mac_is_writable() {
        let mut c = NetConfig::new([2, 0, 0, 0, 0, 1], 1);
        assert!(c.write(4, &[9, 9]));
        assert_eq!(c.mac(), [2, 0, 0, 0, 9, 9]);
        assert!(!c.write(6, &[0, 0]));
        assert!(!c.write(5, &[0, 0]));
        assert!(!c.write(u32::MAX, &[0]));
    }
}
