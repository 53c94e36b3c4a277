//! Any sequence of client actions on both ends of a pipe: no panic, no access outside the
//! pipe's region, and the lockstep invariant survives (each end can always sync again).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ptnet_datapath::csb::CsbMem;
use ptnet_datapath::kring::ClientBinding;
use ptnet_datapath::switch::pipe::{Pipe, PipePortSync};
use ptnet_datapath::port::SyncPort;
use ptnet_spec::netmap::NetmapSlot;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

struct Rig {
    ends: Vec<Arc<dyn SyncPort>>,
    csbs: Vec<Arc<CsbMem>>,
}

fn rig() -> &'static Rig {
    static R: OnceLock<Rig> = OnceLock::new();
    R.get_or_init(|| {
        let pipe = Pipe::new("p", "0", 1, 64, 0, None).expect("pipe");
        let ends: Vec<Arc<dyn SyncPort>> = vec![
            Arc::new(PipePortSync { end: Arc::clone(&pipe.master), peer: Arc::clone(&pipe.slave) }),
            Arc::new(PipePortSync { end: Arc::clone(&pipe.slave), peer: Arc::clone(&pipe.master) }),
        ];
        let csbs = (0..2).map(|_| CsbMem::new(2).expect("csb")).collect();
        Rig { ends, csbs }
    })
}

fuzz_target!(|data: &[u8]| {
    let r = rig();
    for (p, c) in r.ends.iter().zip(&r.csbs) {
        let irqs = (0..2).map(|_| Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"))).collect();
        let b = ClientBinding::new(c.csb(), irqs).expect("binding");
        assert!(p.bind(Some(&b)));
    }
    let mut it = data.chunks_exact(9);
    for c in &mut it {
        let end = usize::from(c[0] & 1);
        let p = &r.ends[end];
        let ring = u32::from((c[0] >> 1) & 1);
        let a = u32::from_le_bytes([c[1], c[2], c[3], c[4]]);
        let b = u32::from_le_bytes([c[5], c[6], c[7], c[8]]);
        match (c[0] >> 2) & 3 {
            0 => {
                let ifc = p.interface();
                let view = if ring == 0 { &ifc.tx[0] } else { &ifc.rx[0] };
                view.write_slot(a % 64, NetmapSlot { buf_idx: b, len: (b >> 16) as u16, flags: c[1].into(), ptr: 0 });
            }
            1 => r.csbs[end].csb().atok(ring).expect("entry").appl_write(a % 70, b % 70),
            2 => {
                p.txsync(0);
            }
            _ => {
                p.rxsync(0);
            }
        }
    }
    for p in &r.ends {
        p.bind(None);
    }
});
