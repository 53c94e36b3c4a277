//! What a VM's driver controls of the ptnet device (ptnet-device): config-space writes, the CSB
//! addresses (placed in guest memory or refused), and the event-buffer virtqueue's indices and
//! contents. Never a panic, never an access outside guest memory, read-only config fields
//! never change, and a buffer is completed only for a valid posted head.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_device::config::DeviceConfig;
use ptnet_vhost_user::guest::{GuestMem, guest_csb};
use ptnet_device::irq::complete_one;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

fn port() -> &'static Arc<dyn SyncPort> {
    static P: OnceLock<Arc<dyn SyncPort>> = OnceLock::new();
    P.get_or_init(|| {
        let sw = Switch::new("vale0");
        let spec = VPortSpec { slots: 64, tx_rings: 2, rx_rings: 2, ..Default::default() };
        Arc::new(ValePortSync { switch: Arc::clone(&sw), port: sw.add_port("vm", &spec).expect("port") })
    })
}

struct Bytes_<'a>(&'a [u8]);

impl Bytes_<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8()?;
        }
        Some(u64::from_le_bytes(b))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Bytes_(data);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 0x8000),
        (GuestAddress(0x10_0000), 0x1000),
    ])
    .expect("guest memory");

    // Config space: writes anywhere, only the CSB addresses may change.
    let mut cfg = DeviceConfig::for_port(&**port(), [2, 0, 0, 0, 0, 1]);
    let before = *cfg.get();
    for _ in 0..d.u8().unwrap_or(0) % 8 {
        let (Some(off), Some(len)) = (d.u8(), d.u8()) else { break };
        let bytes = d.take(usize::from(len % 72)).to_vec();
        cfg.write(u32::from(off), &bytes);
        let _ = cfg.read(u32::from(off), u32::from(len));
    }
    let mut after = *cfg.get();
    after.csb_atok_gpa = before.csb_atok_gpa;
    after.csb_ktoa_gpa = before.csb_ktoa_gpa;
    assert_eq!(after, before, "a read-only config field changed");

    // CSB addresses: refused, or every entry lies in guest memory.
    let (Some(atok), Some(ktoa), Some(n)) = (d.u64(), d.u64(), d.u8()) else { return };
    let n = u32::from(n % 128) + 1;
    let atomic: GuestMem = GuestMemoryAtomic::new(mem.clone());
    let mut c = *cfg.get();
    c.csb_atok_gpa = atok;
    c.csb_ktoa_gpa = ktoa;
    if c.validate_csb().is_ok() {
        if let Ok(csb) = guest_csb(&atomic, atok, ktoa, n, None) {
            for i in 0..n {
                csb.ktoa(i).expect("entry").kern_write(i, i + 1);
                let _ = csb.atok(i).expect("entry").kern_read();
            }
        }
    }

    // The event-buffer queue: any size, addresses and contents the device accepted at start.
    let (Some(sz), Some(desc), Some(avail), Some(used), Some(next)) =
        (d.u8(), d.u16(), d.u16(), d.u16(), d.u16())
    else {
        return;
    };
    let size = 1u16 << (sz % 9);
    let Ok(mut q) = Queue::new(size) else { return };
    q.set_size(size);
    if q.try_set_desc_table_address(GuestAddress(u64::from(desc))).is_err()
        || q.try_set_avail_ring_address(GuestAddress(u64::from(avail))).is_err()
        || q.try_set_used_ring_address(GuestAddress(u64::from(used))).is_err()
    {
        return;
    }
    q.set_ready(true);
    if !q.is_valid(&mem) {
        return;
    }
    q.set_next_avail(next);
    for _ in 0..8 {
        // The guest rewrites part of its memory between interrupts.
        let (Some(at), Some(len)) = (d.u16(), d.u8()) else { break };
        let bytes = d.take(usize::from(len)).to_vec();
        let _ = mem.write_slice(&bytes, GuestAddress(u64::from(at)));
        let used_before = q.next_used();
        let avail_idx: u16 = mem.read_obj(GuestAddress(u64::from(avail) + 2)).unwrap_or(0);
        match complete_one(&mut q, &mem) {
            Ok(()) => {
                assert_eq!(q.next_used(), used_before.wrapping_add(1));
                assert!(avail_idx.wrapping_sub(q.next_avail().wrapping_sub(1)) <= size);
            }
            Err(_) => assert_eq!(q.next_used(), used_before),
        }
    }
});
