//! Interrupts are a trait: a client bound with its own `Interrupt` implementation (a VM's
//! virtqueue, here a counter) is raised exactly where an eventfd would be written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ptnet_client::Port;
use ptnet_datapath::csb::CsbMem;
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::kring::ClientBinding;
use ptnet_datapath::kring::Interrupt;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};

#[derive(Debug, Default)]
struct Counter(AtomicU32);

impl Interrupt for Counter {
    fn raise(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_custom_interrupt_is_raised_when_frames_reach_a_ring_that_asked_for_one() {
    let sw = Switch::new("vale-irq");
    let spec = VPortSpec {
        slots: 64,
        ..Default::default()
    };
    let a: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw.add_port("a", &spec).unwrap(),
    });
    let b: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw.add_port("b", &spec).unwrap(),
    });

    // Port b's client: a CSB and two counting interrupts (TX ring 0, RX ring 0).
    let csb_mem = CsbMem::new(2).unwrap();
    let counters: Vec<Arc<Counter>> = (0..2).map(|_| Arc::new(Counter::default())).collect();
    let binding = ClientBinding::with_interrupts(
        csb_mem.csb(),
        counters
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn Interrupt>)
            .collect(),
    )
    .unwrap();
    assert!(
        ClientBinding::with_interrupts(csb_mem.csb(), Vec::new()).is_none(),
        "one interrupt per ring is required"
    );
    assert!(b.bind(Some(&binding)));
    // Binding asks for interrupts on every ring (netmap's CSB_ENABLE).
    assert!(csb_mem.csb().atok(1).unwrap().appl_wants_interrupt());

    let (_ha, files) = HostClient::attach(Arc::clone(&a), Mode::default()).unwrap();
    let mut pa = Port::from_parts(_ha.info().clone(), files).unwrap();
    let n = pa.tx_batch(0, 3, |i, buf| {
        buf[..6].copy_from_slice(&[0xff; 6]);
        buf[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        buf[12] = i as u8;
        60
    });
    assert_eq!(n, 3);
    pa.txsync(0);

    let deadline = Instant::now() + Duration::from_secs(10);
    while counters[1].0.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "RX interrupt never raised");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        counters[0].0.load(Ordering::SeqCst),
        0,
        "nothing happened on b's TX ring"
    );
    assert_eq!(csb_mem.csb().ktoa(1).unwrap().appl_read().hwtail, 3);
    assert!(b.stats().snapshot().irqs >= 1);
    b.bind(None);
}
