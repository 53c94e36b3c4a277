//! Tier 2: regions backed by hugetlb pages when the machine has them. The test reserves huge
//! pages itself (root), so the huge page path runs in CI even on machines that boot with none.
#![cfg(feature = "host-tests")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::mem::{Region, RegionConfig};
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};

const NR: &str = "/proc/sys/vm/nr_hugepages";

/// Gives the huge pages back when the test ends, however it ends (a failed assertion must not
/// leave every later region of the machine on huge pages).
struct Reserved(u64);

impl Drop for Reserved {
    fn drop(&mut self) {
        let _ = std::fs::write(NR, self.0.to_string());
    }
}

/// Makes sure at least `n` huge pages are reserved; returns the previous setting.
fn reserve(n: u64) -> u64 {
    let before: u64 = std::fs::read_to_string(NR)
        .expect("read nr_hugepages")
        .trim()
        .parse()
        .unwrap();
    if before < n {
        std::fs::write(NR, n.to_string()).expect("reserve huge pages (needs root)");
    }
    let now: u64 = std::fs::read_to_string(NR).unwrap().trim().parse().unwrap();
    assert!(now >= n, "the kernel reserved only {now} of {n} huge pages");
    before
}

#[test]
fn regions_use_huge_pages_and_traffic_flows_through_them() {
    let _restore = Reserved(reserve(64));
    let r = Region::new("huge-test", &RegionConfig::for_rings(1, 2, 1024, 0)).unwrap();
    assert!(
        r.is_huge(),
        "a region should be on hugetlb pages when they are available"
    );
    assert_eq!(
        r.size() % (2 << 20),
        0,
        "hugetlb regions are whole 2 MiB pages"
    );
    drop(r);

    let sw = Switch::new("vale7");
    let spec = VPortSpec {
        slots: 256,
        ..Default::default()
    };
    let mk = |n: &str| -> Arc<dyn SyncPort> {
        Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port(n, &spec).unwrap(),
        })
    };
    let (a, b) = (mk("a"), mk("b"));
    assert!(a.interface().region().is_huge() && b.interface().region().is_huge());
    let (ha, fa) = HostClient::attach(a, Mode::default()).unwrap();
    let (hb, fb) = HostClient::attach(b, Mode::default()).unwrap();
    let mut pa = Port::from_parts(ha.info().clone(), fa).unwrap();
    let mut pb = Port::from_parts(hb.info().clone(), fb).unwrap();
    let sent = pa.tx_batch(0, 200, |i, buf| {
        buf[..6].copy_from_slice(&[0xff; 6]);
        buf[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        buf[12] = i as u8;
        60
    });
    pa.txsync(0);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < sent {
        assert!(Instant::now() < deadline, "got {got} of {sent}");
        pb.wait(Want::Rx, Some(Duration::from_millis(100))).unwrap();
        pb.rx_batch(0, u32::MAX, |f, _| {
            assert_eq!(f[12], got as u8, "frames in order, intact");
            got += 1;
        });
        pb.rxsync(0);
    }
    drop((pa, pb, ha, hb));
}
