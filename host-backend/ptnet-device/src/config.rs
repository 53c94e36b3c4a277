//! The device configuration space (SPEC.md §3.2): what `GET_CONFIG` serves and what
//! `SET_CONFIG` may change.
//!
//! Everything is read-only for the driver except the two CSB addresses (bytes 48..64). QEMU
//! sends the whole 64 bytes on each 32-bit guest write, with stale copies of the read-only
//! fields, so `SET_CONFIG` takes only the bytes of the writable window and never fails: the
//! vhost crate ends the connection when a handler returns an error, and a half-written address
//! (Linux writes the low word first) is normal. The addresses are validated when the device
//! starts.
//!
//! `vnet_hdr_len` is 12 once the driver acked `PTNET_F_VNET_HDR` (QEMU forwards the acked
//! features with `SET_FEATURES` when the driver sets DRIVER_OK, so a driver reads it after
//! `MEM_READY`), 0 otherwise and after a reset.

use ptnet_spec::device::{
    PTNET_CONFIG_CSB_ATOK_OFFSET, PTNET_CONFIG_SIZE, PTNET_S_LINK_UP, PTNET_S_MEM_READY,
    PTNET_VNET_HDR_LEN, PtnetConfig,
};

use ptnet_datapath::port::SyncPort;

/// Size of the configuration space.
pub const CONFIG_SIZE: usize = PTNET_CONFIG_SIZE as usize;
/// The driver-writable window: `csb_atok_gpa` and `csb_ktoa_gpa`.
pub const WRITABLE: std::ops::Range<usize> = PTNET_CONFIG_CSB_ATOK_OFFSET..CONFIG_SIZE;
/// Status once region 0 is mapped and the port runs.
pub const STATUS_RUNNING: u16 = PTNET_S_LINK_UP | PTNET_S_MEM_READY;

/// The device's view of its configuration space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Geometry, MAC and status; the CSB fields hold what the driver wrote.
    cfg: PtnetConfig,
}

impl DeviceConfig {
    /// The configuration of `port` with MAC `mac`, status 0 and no CSB addresses.
    pub fn for_port(port: &dyn SyncPort, mac: [u8; 6]) -> Self {
        let ifc = port.interface();
        let region = ifc.region();
        DeviceConfig {
            cfg: PtnetConfig {
                mac,
                status: 0,
                num_tx_rings: ifc.tx.len() as u32,
                num_rx_rings: ifc.rx.len() as u32,
                num_tx_slots: ifc.tx.first().map_or(0, |r| r.num_slots()),
                num_rx_slots: ifc.rx.first().map_or(0, |r| r.num_slots()),
                nifp_offset: ifc.nifp_offset(),
                mem_size: region.size() as u64,
                mem_id: region.id(),
                vnet_hdr_len: 0,
                buf_size: region.buf_size(),
                csb_atok_gpa: 0,
                csb_ktoa_gpa: 0,
            },
        }
    }

    /// The structured configuration.
    pub fn get(&self) -> &PtnetConfig {
        &self.cfg
    }

    /// Changes the configuration with `f` (tests: a device that lies to the driver).
    pub fn tamper(&mut self, f: fn(&mut PtnetConfig)) {
        f(&mut self.cfg);
    }

    /// `GET_CONFIG`: `size` bytes at `offset`, or nothing if the range is outside the space
    /// (the vhost crate then answers with an empty payload, which tells QEMU it failed).
    pub fn read(&self, offset: u32, size: u32) -> Vec<u8> {
        let bytes = self.cfg.to_le_bytes();
        let start = offset as usize;
        match start.checked_add(size as usize) {
            // PANIC: start <= end <= CONFIG_SIZE, the array's length.
            Some(end) if end <= CONFIG_SIZE => bytes[start..end].to_vec(),
            _ => Vec::new(),
        }
    }

    /// `SET_CONFIG`: merges the bytes of `buf` (at `offset`) that fall in the writable window.
    /// Returns false if the range is outside the space (nothing is changed).
    pub fn write(&mut self, offset: u32, buf: &[u8]) -> bool {
        let start = offset as usize;
        let Some(end) = start.checked_add(buf.len()).filter(|e| *e <= CONFIG_SIZE) else {
            return false;
        };
        let mut bytes = self.cfg.to_le_bytes();
        // PANIC: every i is below end <= CONFIG_SIZE (checked above).
        for (i, b) in (start..end).zip(buf) {
            if WRITABLE.contains(&i) {
                bytes[i] = *b;
            }
        }
        self.cfg = PtnetConfig::from_le_bytes(&bytes);
        true
    }

    /// Sets the status bits.
    pub fn set_status(&mut self, status: u16) {
        self.cfg.status = status;
    }

    /// Says whether the virtio-net header was negotiated (`vnet_hdr_len` 12 or 0).
    pub fn set_vnet_hdr(&mut self, on: bool) {
        self.cfg.vnet_hdr_len = if on { PTNET_VNET_HDR_LEN } else { 0 };
    }

    /// Forgets the CSB addresses (at every stop: the driver writes them again before it
    /// starts the device again, SPEC.md §3.5).
    pub fn forget_csb(&mut self) {
        self.cfg.csb_atok_gpa = 0;
        self.cfg.csb_ktoa_gpa = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
    use std::sync::Arc;

    fn config() -> DeviceConfig {
        let sw = Switch::new("vale-cfg");
        let spec = VPortSpec {
            tx_rings: 2,
            rx_rings: 3,
            slots: 128,
            ..Default::default()
        };
        let port = ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port("p", &spec).unwrap(),
        };
        DeviceConfig::for_port(&port, [2, 0, 0, 0, 0, 7])
    }

    #[test]
    fn the_config_describes_the_port() {
        let c = config();
        let g = c.get();
        assert_eq!((g.num_tx_rings, g.num_rx_rings), (2, 3));
        assert_eq!((g.num_tx_slots, g.num_rx_slots), (128, 128));
        assert_eq!(g.mac, [2, 0, 0, 0, 0, 7]);
        assert!(g.validate_geometry().is_ok());
        assert_eq!(c.read(0, 64), g.to_le_bytes().to_vec());
        assert_eq!(c.read(8, 4), 2u32.to_le_bytes().to_vec());
    }

    #[test]
    fn reads_outside_the_space_return_nothing() {
        let c = config();
        assert!(c.read(60, 8).is_empty());
        assert!(c.read(u32::MAX, 2).is_empty());
        assert!(c.read(0, u32::MAX).is_empty());
    }

    #[test]
    fn set_config_changes_only_the_csb_addresses() {
        let mut c = config();
        let before = *c.get();
        // QEMU: the whole space, read-only fields garbled, one 32-bit word really written.
        let mut bytes = [0xa5u8; 64];
        bytes[48..52].copy_from_slice(&0x1000u32.to_le_bytes());
        bytes[52..64].copy_from_slice(&[0; 12]);
        assert!(c.write(0, &bytes));
        assert_eq!(c.get().csb_atok_gpa, 0x1000);
        assert_eq!(c.get().csb_ktoa_gpa, 0);
        let mut expect = before;
        expect.csb_atok_gpa = 0x1000;
        assert_eq!(c.get(), &expect);
        // A partial write at an offset.
        assert!(c.write(60, &1u32.to_le_bytes()));
        assert_eq!(c.get().csb_ktoa_gpa, 1 << 32);
        // Outside the space: refused, unchanged.
        assert!(!c.write(62, &[1, 2, 3, 4]));
        assert!(!c.write(u32::MAX, &[1]));
        assert_eq!(c.get().csb_ktoa_gpa, 1 << 32);
        c.forget_csb();
        assert_eq!((c.get().csb_atok_gpa, c.get().csb_ktoa_gpa), (0, 0));
    }

    #[test]
    fn vnet_hdr_len_reads_12_only_when_negotiated() {
        let mut c = config();
        assert_eq!(c.get().vnet_hdr_len, 0);
        c.set_vnet_hdr(true);
        assert_eq!(c.read(42, 2), 12u16.to_le_bytes().to_vec());
        // Read-only for the driver.
        assert!(c.write(42, &[0, 0]));
        assert_eq!(c.get().vnet_hdr_len, 12);
        c.set_vnet_hdr(false);
        assert_eq!(c.get().vnet_hdr_len, 0);
    }
}
