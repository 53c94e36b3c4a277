//! Tier 2: the ptnet device driven by a frontend simulator (QEMU plus a guest driver, see
//! `sim/mod.rs`), exchanging frames with host clients across a VALE switch and through a
//! pipe, with interrupts delivered only through completed event buffers.

#![cfg(feature = "sim-tests")]

mod sim;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ptnet_client::Port;
use ptnet_client::proto::Profile;
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::mem::{Region, RegionConfig};
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::pipe::{Pipe, PipePortSync};
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_device::{ServeConfig, ServeError, serve};
use ptnet_spec::device::PTNET_F_VNET_HDR;
use ptnet_spec::netmap::NetmapIf;
use sim::{Vm, eventually, exchange, init_log, socket_path};

fn vale_port(sw: &Arc<Switch>, name: &str, region: Option<Arc<Region>>) -> Arc<dyn SyncPort> {
    let spec = VPortSpec {
        slots: 256,
        region,
        ..Default::default()
    };
    Arc::new(ValePortSync {
        switch: Arc::clone(sw),
        port: sw.add_port(name, &spec).unwrap(),
    })
}

fn host(port: &Arc<dyn SyncPort>) -> (HostClient, Port) {
    let (hc, files) = HostClient::attach(Arc::clone(port), Mode::default()).unwrap();
    let p = Port::from_parts(hc.info().clone(), files).unwrap();
    (hc, p)
}

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

/// Every interrupt the device raised completed exactly one event buffer, and the guest saw
/// every completed buffer.
fn assert_interrupts_carried_event_buffers(h: &ptnet_device::ServeHandle, vm: &sim::GuestPort) {
    let ok = eventually(Duration::from_secs(5), || {
        let s = h.stats();
        s.event_buffers == s.irqs_raised
            && vm.virq.stats.completed.load(Ordering::Relaxed) == s.event_buffers
    });
    let s = h.stats();
    let v = &vm.virq.stats;
    assert!(
        ok,
        "device {s:?}, guest completed {} delivered {} spurious {}",
        v.completed.load(Ordering::Relaxed),
        v.delivered.load(Ordering::Relaxed),
        v.spurious.load(Ordering::Relaxed)
    );
    assert_eq!(s.irqs_without_buffer, 0);
    assert_eq!(v.bogus.load(Ordering::Relaxed), 0);
    assert!(s.irqs_raised > 0, "the guest slept at least once");
    assert!(v.delivered.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_vm_and_a_host_client_exchange_frames_across_vale_both_ways() {
    init_log();
    let sw = Switch::new("vale0");
    let vm_port = vale_port(&sw, "vm", None);
    let host_port = vale_port(&sw, "h", None);
    let path = socket_path("vale-both-ways");
    let h = serve(&path, Arc::clone(&vm_port), ServeConfig::default()).unwrap();

    let mut vm = Vm::connect(&path);
    assert_eq!(vm.cfg.mac, ptnet_device::default_mac("vale0:vm"));
    assert_ne!(
        vm.offered & (1 << PTNET_F_VNET_HDR),
        0,
        "a VALE port takes the virtio-net header: VNET_HDR offered"
    );
    assert_eq!(vm_port.vnet_hdr_len(), 0, "offering it changes nothing");
    assert_eq!(
        vm.shm_size(),
        vm_port.interface().region().size() as u64,
        "region 0 is the port's region"
    );
    let mut g = vm.driver_start();
    let s = h.stats();
    assert!(s.running && s.mem_ready, "{s:?}");
    assert_eq!(vm.shm.inner.lock().unwrap().maps, 1);

    let (_hc, mut hp) = host(&host_port);
    let e1 = exchange(&mut g.port, &mut hp, mac(2), mac(1), 20_000, 60);
    let e2 = exchange(&mut hp, &mut g.port, mac(1), mac(2), 5_000, 1514);
    assert_eq!(
        e1.timeouts + e2.timeouts,
        0,
        "a wait timed out: a lost interrupt"
    );

    let sv = vm_port.stats().snapshot();
    let sh = host_port.stats().snapshot();
    assert_eq!(
        (sv.tx_packets, sh.rx_packets, sh.rx_drops),
        (20_000, 20_000, 0)
    );
    assert_eq!(
        (sh.tx_packets, sv.rx_packets, sv.rx_drops),
        (5_000, 5_000, 0)
    );
    assert_eq!(sv.ring_resets, 0);
    assert!(sv.kicks > 0, "the guest kicked through its kick eventfds");
    assert_interrupts_carried_event_buffers(&h, &g);
    assert_eq!(h.stats().connections, 1);
}

#[test]
fn a_vm_on_a_pipe_end_exchanges_frames_with_a_host_client_without_copies() {
    init_log();
    let pipe = Pipe::new("pipe0", "1", 1, 128, 0, None).unwrap();
    let m: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.master),
        peer: Arc::clone(&pipe.slave),
    });
    let s: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.slave),
        peer: Arc::clone(&pipe.master),
    });
    let path = socket_path("pipe");
    // A pipe end shares its region with its peer: only the trusted profile may serve it.
    assert!(matches!(
        serve(&path, Arc::clone(&m), ServeConfig::default()),
        Err(ServeError::NotPrivate(_))
    ));
    let cfg = ServeConfig {
        profile: Profile::Trusted,
        ..Default::default()
    };
    let h = serve(&path, Arc::clone(&m), cfg).unwrap();
    let mut vm = Vm::connect(&path);
    assert_eq!(
        vm.offered & (1 << PTNET_F_VNET_HDR),
        0,
        "a pipe carries no virtio-net header: VNET_HDR not offered"
    );
    let mut g = vm.driver_start();
    let (_hc, mut hp) = host(&s);
    assert_eq!(
        g.port.info().mem_id,
        hp.info().mem_id,
        "one region, zero copy"
    );

    let e1 = exchange(&mut g.port, &mut hp, mac(2), mac(1), 10_000, 128);
    let e2 = exchange(&mut hp, &mut g.port, mac(1), mac(2), 10_000, 1000);
    assert_eq!(e1.timeouts + e2.timeouts, 0);
    assert_eq!(pipe.slave.stats().snapshot().rx_packets, 10_000);
    assert_eq!(pipe.master.stats().snapshot().rx_packets, 10_000);
    assert_interrupts_carried_event_buffers(&h, &g);
}

/// Writes `marker` into every buffer of every ring of `p` (the buffers it owns now).
fn mark_buffers(p: &mut Port, marker: &[u8; 16]) -> u32 {
    let mut n = 0;
    for r in 0..p.num_tx_rings() {
        n += p.tx_batch(r, u32::MAX, |_, buf| {
            buf[..16].copy_from_slice(marker);
            0
        });
    }
    n
}

fn count_marker(file: &std::fs::File, marker: &[u8; 16]) -> usize {
    use std::io::Read;
    let mut all = Vec::new();
    let mut f = file.try_clone().unwrap();
    std::io::Seek::rewind(&mut f).unwrap();
    f.read_to_end(&mut all).unwrap();
    all.windows(16).filter(|w| w == marker).count()
}

#[test]
fn an_untrusted_vm_sees_only_its_own_region() {
    init_log();
    let sw = Switch::new("vale5");
    let vm_port = vale_port(&sw, "vm", None);
    let other = vale_port(&sw, "other", None);
    let path = socket_path("private");
    let _h = serve(&path, Arc::clone(&vm_port), ServeConfig::default()).unwrap();
    let mut vm = Vm::connect(&path);
    let _g = vm.driver_start();
    let (_hc, mut op) = host(&other);
    let marker = *b"OTHER-PORT-SECRT";
    assert!(mark_buffers(&mut op, &marker) > 0);

    let shm = vm.shm.inner.lock().unwrap();
    let (mapped, len) = shm.map.as_ref().unwrap();
    // The mapping is the VM port's memfd, whole, and nothing else.
    let own = vm_port.interface().region().file().metadata().unwrap();
    let theirs = other.interface().region().file().metadata().unwrap();
    let m = mapped.metadata().unwrap();
    assert_eq!((m.dev(), m.ino()), (own.dev(), own.ino()));
    assert_ne!((m.dev(), m.ino()), (theirs.dev(), theirs.ino()));
    assert_eq!(*len, vm_port.interface().region().size() as u64);
    assert_eq!(m.len(), *len, "the memfd is exactly the region");
    // Its interface pool holds one netmap_if: the VM port's.
    assert_eq!(vm_port.interface().region().layout().if_objtotal, 1);
    let mut nifp = [0u8; size_of::<NetmapIf>()];
    std::os::unix::fs::FileExt::read_exact_at(mapped, &mut nifp, vm.cfg.nifp_offset).unwrap();
    assert!(nifp.starts_with(b"vale5:vm\0"), "{:?}", &nifp[..16]);
    // No buffer of the other port is in it.
    assert_eq!(count_marker(mapped, &marker), 0);
    assert!(count_marker(other.interface().region().file(), &marker) > 0);
}

#[test]
fn a_trusted_vm_on_a_shared_region_sees_its_neighbours_buffers() {
    // The counter-check of the test above: in a shared region the scan does find them.
    init_log();
    let sw = Switch::new("vale6");
    let mut cfg = RegionConfig::for_rings(4, 8, 256, 64);
    cfg.huge_pages = ptnet_datapath::mem::HugePages::Never;
    let shared = Region::new("vale6-trusted", &cfg).unwrap();
    let vm_port = vale_port(&sw, "vm", Some(Arc::clone(&shared)));
    let other = vale_port(&sw, "other", Some(Arc::clone(&shared)));
    let path = socket_path("shared");
    assert!(matches!(
        serve(&path, Arc::clone(&vm_port), ServeConfig::default()),
        Err(ServeError::NotPrivate(_))
    ));
    let trusted = ServeConfig {
        profile: Profile::Trusted,
        ..Default::default()
    };
    let _h = serve(&path, Arc::clone(&vm_port), trusted).unwrap();
    let mut vm = Vm::connect(&path);
    let mut g = vm.driver_start();
    let (_hc, mut op) = host(&other);
    let marker = *b"NEIGHBOUR-BUFFER";
    let n = mark_buffers(&mut op, &marker);
    let shm = vm.shm.inner.lock().unwrap();
    let (mapped, _) = shm.map.as_ref().unwrap();
    assert_eq!(count_marker(mapped, &marker), n as usize);
    drop(shm);
    // And zero copy between them: frames cross in the sender's buffers.
    let vm_bufs: HashSet<u32> = (0..256)
        .map(|i| vm_port.interface().tx[0].read_slot(i).buf_idx)
        .collect();
    assert_eq!(vm_bufs.len(), 256);
    let e = exchange(&mut g.port, &mut op, mac(2), mac(1), 1000, 60);
    assert_eq!(e.timeouts, 0);
}

#[test]
fn the_device_stops_on_get_vring_base_and_starts_again() {
    init_log();
    let sw = Switch::new("vale7");
    let vm_port = vale_port(&sw, "vm", None);
    let host_port = vale_port(&sw, "h", None);
    let path = socket_path("restart");
    let h = serve(&path, Arc::clone(&vm_port), ServeConfig::default()).unwrap();
    let mut vm = Vm::connect(&path);
    let (_hc, mut hp) = host(&host_port);
    for round in 0..3u64 {
        let mut g = vm.driver_start();
        let e = exchange(&mut g.port, &mut hp, mac(2), mac(1), 1000, 60);
        assert_eq!(e.timeouts, 0);
        exchange(&mut hp, &mut g.port, mac(1), mac(2), 1000, 60);
        drop(g);
        // QEMU's vhost_dev_stop (driver reset, guest reboot).
        vm.stop_queues();
        let c = vm.read_config();
        assert_eq!(c.status, 0, "status cleared at stop");
        assert_eq!((c.csb_atok_gpa, c.csb_ktoa_gpa), (0, 0), "CSB forgotten");
        assert!(
            eventually(Duration::from_secs(5), || vm
                .shm
                .inner
                .lock()
                .unwrap()
                .map
                .is_none()),
            "region 0 unmapped after the stop (round {round})"
        );
        let s = h.stats();
        assert!(!s.running && !s.mem_ready);
        assert_eq!((s.starts, s.stops), (round + 1, round + 1));
    }
    let s = h.stats();
    assert_eq!((s.maps, s.map_failures, s.refused), (3, 0, 0));
    assert_eq!(vm.shm.inner.lock().unwrap().unmaps, 3);
}

/// A driver that acks `PTNET_F_VNET_HDR` gets a port whose frames carry the 12-byte header
/// (netmap's PORT_HDR_SET) and reads 12 in `vnet_hdr_len`; the port goes back to plain frames
/// when the device stops, and a driver that does not ack it finds 0 everywhere. Two such
/// VMs on one switch exchange frames (header included) unchanged.
#[test]
fn the_virtio_net_header_follows_the_negotiated_features() {
    init_log();
    let sw = Switch::new("vale8");
    let a_port = vale_port(&sw, "a", None);
    let b_port = vale_port(&sw, "b", None);
    let (pa, pb) = (socket_path("vnet-a"), socket_path("vnet-b"));
    let ha = serve(&pa, Arc::clone(&a_port), ServeConfig::default()).unwrap();
    let _hb = serve(&pb, Arc::clone(&b_port), ServeConfig::default()).unwrap();
    let mut va = Vm::connect(&pa);
    let mut vb = Vm::connect(&pb);
    for vm in [&mut va, &mut vb] {
        assert_ne!(vm.offered & (1 << PTNET_F_VNET_HDR), 0);
        vm.driver_features |= 1 << PTNET_F_VNET_HDR;
    }
    let mut ga = va.driver_start();
    let mut gb = vb.driver_start();
    assert_eq!(va.read_config().vnet_hdr_len, 12);
    assert_eq!((a_port.vnet_hdr_len(), b_port.vnet_hdr_len()), (12, 12));
    assert!(ha.stats().vnet_hdr);
    let e = exchange(&mut ga.port, &mut gb.port, mac(2), mac(1), 1000, 1000);
    assert_eq!(e.timeouts, 0);
    drop((ga, gb));

    va.stop_queues();
    assert_eq!(a_port.vnet_hdr_len(), 0, "plain frames after the stop");
    assert!(!ha.stats().vnet_hdr);
    // A driver (reloaded with the header off) that does not ack it.
    va.driver_features &= !(1 << PTNET_F_VNET_HDR);
    let _g = va.driver_start();
    assert_eq!(va.read_config().vnet_hdr_len, 0);
    assert_eq!(a_port.vnet_hdr_len(), 0);
    assert!(!ha.stats().vnet_hdr);
    assert!(ha.stats().running);
}

#[test]
fn a_disconnect_mid_traffic_reclaims_the_port_for_the_next_vm() {
    init_log();
    let sw = Switch::new("vale8");
    let vm_port = vale_port(&sw, "vm", None);
    let host_port = vale_port(&sw, "h", None);
    let path = socket_path("disconnect");
    let h = serve(&path, Arc::clone(&vm_port), ServeConfig::default()).unwrap();
    let (_hc, mut hp) = host(&host_port);
    for _ in 0..2 {
        let mut vm = Vm::connect(&path);
        let mut g = vm.driver_start();
        // Frames in flight both ways, then the VM vanishes.
        g.port.tx_batch(0, 100, |i, buf| {
            sim::frame(buf, mac(2), mac(1), u64::from(i), 60)
        });
        g.port.txsync(0);
        hp.tx_batch(0, 100, |i, buf| {
            sim::frame(buf, mac(1), mac(2), u64::from(i), 60)
        });
        hp.txsync(0);
        drop(g);
        drop(vm);
        assert!(
            eventually(Duration::from_secs(5), || !h.stats().running),
            "the port was not reclaimed"
        );
        // Drain what the host received.
        hp.rxsync(0);
        hp.rx_batch(0, u32::MAX, |_, _| {});
        hp.rxsync(0);
    }
    // The next VM gets a clean port.
    let mut vm = Vm::connect(&path);
    let mut g = vm.driver_start();
    g.port.rxsync(0);
    assert_eq!(g.port.rx_pending(0), 0, "a fresh start has empty RX rings");
    let e = exchange(&mut g.port, &mut hp, mac(2), mac(1), 2000, 60);
    assert_eq!(e.timeouts, 0);
    assert_eq!(h.stats().connections, 3);
}
