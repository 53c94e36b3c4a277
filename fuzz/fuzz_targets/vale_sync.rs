//! Any sequence of client actions on two VALE ports (slot contents, CSB pointers, syncs):
//! the sync steps never panic and never touch memory outside the regions (which sit between
//! guard pages: a stray access crashes the fuzzer).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ptnet_datapath::csb::CsbMem;
use ptnet_datapath::kring::ClientBinding;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_spec::netmap::NetmapSlot;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

struct Rig {
    ports: Vec<Arc<dyn SyncPort>>,
    csbs: Vec<Arc<CsbMem>>,
}

fn rig() -> &'static Rig {
    static R: OnceLock<Rig> = OnceLock::new();
    R.get_or_init(|| {
        let sw = Switch::new("vale0");
        let spec = VPortSpec { slots: 64, tx_rings: 1, rx_rings: 2, ..Default::default() };
        let mut ports: Vec<Arc<dyn SyncPort>> = Vec::new();
        let mut csbs = Vec::new();
        for name in ["a", "b"] {
            let port = sw.add_port(name, &spec).expect("port");
            ports.push(Arc::new(ValePortSync { switch: Arc::clone(&sw), port }));
            csbs.push(CsbMem::new(3).expect("csb"));
        }
        Rig { ports, csbs }
    })
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }
}

fuzz_target!(|data: &[u8]| {
    let r = rig();
    for (p, c) in r.ports.iter().zip(&r.csbs) {
        let irqs = (0..3).map(|_| Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"))).collect();
        let b = ClientBinding::new(c.csb(), irqs).expect("binding");
        assert!(p.bind(Some(&b)));
    }
    let mut d = Bytes(data);
    while let Some(op) = d.u8() {
        let port = usize::from(op >> 7);
        let p = &r.ports[port];
        let csb = r.csbs[port].csb();
        let ring = u32::from((op >> 5) & 3) % 3;
        match op & 3 {
            0 => {
                let (Some(i), Some(buf_idx), Some(len), Some(flags)) = (d.u16(), d.u32(), d.u16(), d.u16()) else { break };
                let ifc = p.interface();
                let view = if ring == 0 { &ifc.tx[0] } else { &ifc.rx[(ring - 1) as usize] };
                view.write_slot(u32::from(i) % 64, NetmapSlot { buf_idx, len, flags, ptr: 0 });
            }
            1 => {
                let (Some(head), Some(cur)) = (d.u32(), d.u32()) else { break };
                // Mostly plausible values, sometimes anything.
                let fix = |v: u32| if v & 0x8000_0000 != 0 { v } else { v % 66 };
                csb.atok(ring).expect("entry").appl_write(fix(head), fix(cur));
            }
            2 => {
                p.txsync(0);
            }
            _ => {
                p.rxsync(u32::from(op >> 2) & 1);
            }
        }
    }
    for p in &r.ports {
        p.bind(None);
    }
});
