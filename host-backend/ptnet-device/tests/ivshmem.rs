//! Tier 2: the ptnet device on the ivshmem transport (SPEC.md §6), driven the way QEMU's
//! stock `ivshmem-doorbell` and a guest driver drive it (`ptnet_client::ivshmem`): frames
//! both ways with a host client across VALE and through a pipe with exact counts, driver
//! resets and QEMU reconnecting, and a hostile guest (garbage in its block, doorbell storms,
//! a second QEMU on the socket).

#![cfg(feature = "sim-tests")]

mod sim;

use std::sync::Arc;
use std::time::Duration;

use ptnet_client::Port;
use ptnet_client::ivshmem::IvshmemGuest;
use ptnet_client::proto::Profile;
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::pipe::{Pipe, PipePortSync};
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_device::ivshmem::{self, IvshmemHandle};
use ptnet_device::{ServeConfig, ServeError};
use ptnet_spec::device::{PTNET_F_STATUS, PTNET_F_VNET_HDR, PTNET_S_LINK_UP, PTNET_S_MEM_READY};
use ptnet_spec::ivshmem::{IVSHMEM_DRIVER_FEATURES_OFFSET, IVSHMEM_DRIVER_STATUS_OFFSET};
use sim::{eventually, exchange, init_log, socket_path};

const T: Duration = Duration::from_secs(5);

fn vale_port(sw: &Arc<Switch>, name: &str) -> Arc<dyn SyncPort> {
    let spec = VPortSpec {
        slots: 256,
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

fn serve(
    name: &str,
    port: &Arc<dyn SyncPort>,
    profile: Profile,
) -> (IvshmemHandle, std::path::PathBuf) {
    let path = socket_path(name);
    let cfg = ServeConfig {
        profile,
        ..Default::default()
    };
    (ivshmem::serve(&path, Arc::clone(port), &cfg).unwrap(), path)
}

fn both_ways(guest: &mut Port, host: &mut Port, count: u64) {
    let ex = exchange(guest, host, mac(2), mac(1), count, 60);
    assert_eq!(ex.timeouts, 0, "guest → host: lost interrupts");
    let ex = exchange(host, guest, mac(1), mac(2), count, 1514);
    assert_eq!(ex.timeouts, 0, "host → guest: lost interrupts");
}

#[test]
fn a_guest_on_ivshmem_and_a_host_client_exchange_frames_across_vale() {
    init_log();
    let sw = Switch::new("vale-ivs");
    let vm_port = vale_port(&sw, "vm");
    let host_port = vale_port(&sw, "h");
    let (h, path) = serve("ivs-vale", &vm_port, Profile::Untrusted);
    let (_hc, mut hp) = host(&host_port);

    let g = IvshmemGuest::connect(&path, T).unwrap();
    let hdr = g.header().unwrap();
    assert_eq!(g.peer_id(), 1, "the only interface of a private region");
    assert_eq!(hdr.config.num_rings(), 2);
    assert_eq!(hdr.ctrl_vector, 2);
    assert_eq!(
        hdr.device_features,
        1 << PTNET_F_VNET_HDR | 1 << PTNET_F_STATUS,
        "a VALE port takes the virtio-net header"
    );
    assert!(g.shm().size().is_power_of_two());
    assert_eq!(hdr.config.status, 0, "stopped until the driver starts it");

    let mut gp = g.start(0, T).unwrap();
    let hdr = g.header().unwrap();
    assert_eq!(hdr.config.status, PTNET_S_LINK_UP | PTNET_S_MEM_READY);
    assert_eq!(hdr.config.vnet_hdr_len, 0);
    assert!(
        eventually(T, || g.config_interrupts() > 0),
        "start interrupt"
    );
    both_ways(&mut gp, &mut hp, 3000);

    // A driver reset stops the device; the next start takes the rings where they are.
    drop(gp);
    g.reset(T).unwrap();
    let s = h.stats();
    assert_eq!((s.starts, s.stops, s.running), (1, 1, false));
    let mut gp = g.start(0, T).unwrap();
    both_ways(&mut gp, &mut hp, 500);

    // QEMU goes away (the VM ended): the device stops; the next VM gets the same block.
    drop(gp);
    drop(g);
    assert!(eventually(T, || !h.stats().running));
    let g = IvshmemGuest::connect(&path, T).unwrap();
    assert_eq!(g.peer_id(), 1);
    let mut gp = g.start(1 << PTNET_F_VNET_HDR, T).unwrap();
    assert_eq!(g.header().unwrap().config.vnet_hdr_len, 12);
    assert_eq!(vm_port.vnet_hdr_len(), 12);
    drop(gp);
    g.reset(T).unwrap();
    assert_eq!(vm_port.vnet_hdr_len(), 0, "the header goes with the driver");
    gp = g.start(0, T).unwrap();
    both_ways(&mut gp, &mut hp, 200);
    let s = h.stats();
    assert_eq!((s.connections, s.starts, s.refused), (2, 4, 0), "{s:?}");
    drop(gp);
    drop(g);
    h.stop();
    assert!(!path.exists(), "the socket goes with the server");
}

#[test]
fn a_guest_on_ivshmem_uses_both_ends_of_a_trusted_pipe() {
    init_log();
    let pipe = Pipe::new("pipe-ivs", "1", 1, 256, 0, None).unwrap();
    let master: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.master),
        peer: Arc::clone(&pipe.slave),
    });
    let slave: Arc<dyn SyncPort> = Arc::new(PipePortSync {
        end: Arc::clone(&pipe.slave),
        peer: Arc::clone(&pipe.master),
    });
    // The two ends share one region: only the trusted profile serves one to a VM.
    let path = socket_path("ivs-pipe-untrusted");
    assert!(matches!(
        ivshmem::serve(&path, Arc::clone(&master), &ServeConfig::default()),
        Err(ServeError::NotPrivate(_))
    ));
    let (h, path) = serve("ivs-pipe", &master, Profile::Trusted);
    let (_hc, mut hp) = host(&slave);
    let g = IvshmemGuest::connect(&path, T).unwrap();
    assert_eq!(
        g.header().unwrap().device_features,
        1 << PTNET_F_STATUS,
        "a pipe takes no virtio-net header"
    );
    let mut gp = g.start(0, T).unwrap();
    both_ways(&mut gp, &mut hp, 2000);
    drop(gp);
    drop(g);
    h.stop();
}

#[test]
fn a_hostile_guest_on_ivshmem_breaks_only_its_own_port() {
    init_log();
    let sw = Switch::new("vale-ivh");
    let vm_port = vale_port(&sw, "vm");
    let a = vale_port(&sw, "a");
    let b = vale_port(&sw, "b");
    let (h, path) = serve("ivs-hostile", &vm_port, Profile::Untrusted);
    let (_ha, mut pa) = host(&a);
    let (_hb, mut pb) = host(&b);
    let g = IvshmemGuest::connect(&path, T).unwrap();

    // A second QEMU on the same socket is turned away; the first keeps its device.
    let second = IvshmemGuest::connect(&path, Duration::from_millis(300));
    assert!(second.is_err(), "a second QEMU got a device");
    assert!(eventually(T, || h.stats().refused == 1));

    // Features the device does not offer: the start is refused, nothing runs.
    let field = |f: usize| g.block() + f as u64;
    g.shm()
        .write(field(IVSHMEM_DRIVER_FEATURES_OFFSET), u32::MAX);
    g.shm().write(field(IVSHMEM_DRIVER_STATUS_OFFSET), 1u32);
    g.doorbell(g.header().unwrap().ctrl_vector).unwrap();
    assert!(eventually(T, || h.stats().refused == 2));
    assert!(!h.stats().running);

    // A storm on every daemon vector while the header page is garbage, the directory
    // scribbled over and the CSB random.
    let hdr = g.header().unwrap();
    let mut rng = sim::Rng(0x1f5e_55ed);
    for round in 0..2000u32 {
        let at = g.block() + 8 + u64::from(round % 1000) * 4;
        g.shm().write(at, rng.next() as u32);
        let dir_at = g.shm().size() as u64 - 4096 + u64::from(round % 8) * 4;
        g.shm().write(dir_at, rng.next() as u32);
        let _ = g.doorbell((round % u32::from(hdr.num_vectors)) as u16);
    }
    // The other tenants did not notice.
    let ex = exchange(&mut pa, &mut pb, mac(4), mac(3), 2000, 60);
    assert_eq!(ex.timeouts, 0);
    // The daemon survived and stopped what the driver's garbage asked (a start with
    // features it offers, or not).
    let s = h.stats();
    assert!(s.connections == 1, "{s:?}");
    assert!(
        eventually(T, || !h.stats().running || h.stats().starts > 0),
        "{:?}",
        h.stats()
    );
    // The guest's QEMU goes away: its port is free for the next VM, which runs normally.
    drop(g);
    assert!(eventually(T, || !h.stats().running));
    let g = IvshmemGuest::connect(&path, T).unwrap();
    let mut gp = g.start(0, T).unwrap();
    let ex = exchange(&mut gp, &mut pa, mac(3), mac(5), 500, 60);
    assert_eq!(ex.timeouts, 0);
    drop(gp);
    drop(g);
    h.stop();
}
