//! Tier 2: a hostile frontend (QEMU and guest both under the attacker's control). Bad CSB
//! addresses, garbage config writes, virtqueues outside guest RAM, foreign descriptors,
//! garbage messages, random CSB and virtqueue contents under traffic, disconnects: the daemon
//! never panics, the port is reclaimed, and the other ports of the switch keep working.

#![cfg(feature = "sim-tests")]

mod sim;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_device::{ServeConfig, ServeHandle, serve};
use ptnet_spec::device::PTNET_S_MEM_READY;
use sim::{HIGH_GPA, KTOA_OFFSET, LOW_SIZE, Rng, Vm, eventually, exchange, init_log};
use vhost::VhostBackend;
use vhost::vhost_user::VhostUserFrontend;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vmm_sys_util::eventfd::EventFd;

fn vale_port(sw: &Arc<Switch>, name: &str, slots: u32) -> Arc<dyn SyncPort> {
    let spec = VPortSpec {
        slots,
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

/// A switch with the VM's port and two bystander host clients.
struct Rig {
    h: ServeHandle,
    a: (HostClient, Port),
    b: (HostClient, Port),
    path: std::path::PathBuf,
}

fn rig(name: &str) -> Rig {
    init_log();
    let sw = Switch::new(name);
    let vm_port = vale_port(&sw, "vm", 256);
    let a = host(&vale_port(&sw, "a", 256));
    let b = host(&vale_port(&sw, "b", 256));
    let path = sim::socket_path(name);
    let h = serve(&path, Arc::clone(&vm_port), ServeConfig::default()).unwrap();
    Rig { h, a, b, path }
}

impl Rig {
    /// The bystanders still exchange frames, intact.
    fn bystanders_work(&mut self) {
        let e = exchange(&mut self.a.1, &mut self.b.1, mac(12), mac(11), 3000, 100);
        let f = exchange(&mut self.b.1, &mut self.a.1, mac(11), mac(12), 3000, 100);
        assert_eq!(e.timeouts + f.timeouts, 0);
    }

    /// A well-behaved VM can still use the port.
    fn a_good_vm_works(&mut self) {
        let mut vm = Vm::connect(&self.path);
        let mut g = vm.driver_start();
        let e = exchange(&mut g.port, &mut self.a.1, mac(11), mac(10), 1000, 60);
        assert_eq!(e.timeouts, 0);
    }
}

/// Starts the queues with CSB addresses (`atok`, `ktoa`) and checks the device refuses.
fn assert_refused(vm: &mut Vm, h: &ServeHandle, atok: u64, ktoa: u64) {
    let before = h.stats().refused;
    vm.write_csb(atok, ktoa);
    vm.start_queues();
    assert!(
        !vm.wait_mem_ready(Duration::from_millis(200)),
        "started with atok {atok:#x} ktoa {ktoa:#x}"
    );
    let s = h.stats();
    assert!(!s.running, "atok {atok:#x} ktoa {ktoa:#x}");
    assert!(s.refused > before, "atok {atok:#x} ktoa {ktoa:#x}: {s:?}");
    vm.stop_queues();
}

#[test]
fn csb_addresses_outside_ram_misaligned_overlapping_or_in_region_0_are_refused() {
    let mut r = rig("vale-h1");
    let mut vm = Vm::connect(&r.path);
    let k = HIGH_GPA + KTOA_OFFSET;
    for (atok, ktoa) in [
        (0, k),                              // zero
        (HIGH_GPA + 8, k),                   // misaligned
        (HIGH_GPA, k + 4),                   // misaligned
        (HIGH_GPA, HIGH_GPA + 64),           // overlapping (2 rings: 128 bytes each)
        (k, k),                              // the same array
        (0x7000_0000_0000, k),               // outside guest RAM
        (HIGH_GPA, LOW_SIZE as u64 - 64),    // crosses the end of low RAM
        (HIGH_GPA, HIGH_GPA + 0x10000 - 64), // crosses the end of high RAM
        (u64::MAX - 63, k),                  // wraps
        (HIGH_GPA, !63),                     // wraps
    ] {
        assert_refused(&mut vm, &r.h, atok, ktoa);
    }
    // A good start now works on the same connection...
    let g = vm.driver_start();
    drop(g);
    // ...and once QEMU made region 0 guest memory, a CSB inside it is refused: the CSB must
    // be guest RAM, not the port's own memory.
    let bar = vm.add_bar_region(0x2_0000_0000);
    vm.stop_queues();
    assert_refused(&mut vm, &r.h, 0x2_0000_0000, k);
    assert_refused(&mut vm, &r.h, HIGH_GPA, 0x2_0000_0000 + 0x1000);
    drop(bar);
    assert_eq!(r.h.stats().starts, 1);
    drop(vm);
    r.bystanders_work();
    r.a_good_vm_works();
}

#[test]
fn config_garbage_never_breaks_the_device_or_its_geometry() {
    let mut r = rig("vale-h2");
    let mut vm = Vm::connect(&r.path);
    let geometry = vm.read_config();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..500 {
        let offset = rng.below(300) as u32;
        let size = 1 + rng.below(64) as usize;
        let bytes: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        // The vhost crate refuses offsets past its 256-byte limit locally; the rest reach
        // the device, which ignores what is outside the writable window.
        let _ = vm
            .fe
            .set_config(offset, VhostUserConfigFlags::WRITABLE, &bytes);
    }
    let c = vm.read_config();
    let mut expect = geometry;
    expect.csb_atok_gpa = c.csb_atok_gpa;
    expect.csb_ktoa_gpa = c.csb_ktoa_gpa;
    assert_eq!(c, expect, "only the CSB addresses are writable");
    // Whatever garbage addresses are left: starting refuses or works, never breaks.
    vm.start_queues();
    thread::sleep(Duration::from_millis(50));
    vm.stop_queues();
    let _ = vm.driver_start();
    drop(vm);

    // Garbage on the socket itself: the connection ends, the next frontend is served.
    let mut rng = Rng(42);
    for len in [1usize, 11, 12, 13, 100, 4096] {
        let mut s = UnixStream::connect(&r.path).unwrap();
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = s.write_all(&junk);
        drop(s);
    }
    // A header claiming a huge body, then nothing.
    let mut s = UnixStream::connect(&r.path).unwrap();
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&24u32.to_le_bytes()); // GET_CONFIG
    hdr.extend_from_slice(&1u32.to_le_bytes());
    hdr.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
    let _ = s.write_all(&hdr);
    drop(s);
    r.bystanders_work();
    r.a_good_vm_works();
}

#[test]
fn virtqueues_outside_guest_ram_or_foreign_descriptors_keep_the_device_stopped() {
    let mut r = rig("vale-h3");
    // Ring addresses the memory table cannot translate: the request fails, and the
    // connection ends (the vhost crate's choice), with the port untouched.
    let mut vm = Vm::connect(&r.path);
    vm.write_csb(HIGH_GPA, HIGH_GPA + KTOA_OFFSET);
    assert!(
        vm.start_queues_with(|_, c| c.desc_table_addr = 0x10)
            .is_err(),
        "a descriptor table outside every region was accepted"
    );
    drop(vm);

    // Translatable start, but the table runs off the end of low RAM: refused at start.
    let mut vm = Vm::connect(&r.path);
    vm.write_csb(HIGH_GPA, HIGH_GPA + KTOA_OFFSET);
    let end = vm.low.va(LOW_SIZE as u64 - 256);
    vm.start_queues_with(|i, c| {
        if i == 1 {
            c.desc_table_addr = end;
        }
    })
    .unwrap();
    assert!(!vm.wait_mem_ready(Duration::from_millis(200)));
    assert!(!r.h.stats().running);
    vm.stop_queues();

    // A kick "eventfd" that is a pipe: dropped, the queue never becomes ready.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the EventFd wrapper only passes the descriptor on; we own both ends.
    let fake = unsafe { EventFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let _w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
    vm.start_queues();
    vm.fe.set_vring_kick(0, &fake).unwrap();
    assert!(!vm.wait_mem_ready(Duration::from_millis(200)));
    // (The good kick went first, so the device started, then stopped when it was
    // replaced by one it cannot use.)
    assert!(!r.h.stats().running);
    vm.stop_queues();

    // Then everything right on the same connection.
    let mut g = vm.driver_start();
    let e = exchange(&mut g.port, &mut r.a.1, mac(11), mac(10), 500, 60);
    assert_eq!(e.timeouts, 0);
    drop(g);
    drop(vm);
    r.bystanders_work();
}

#[test]
fn random_csb_and_virtqueue_contents_under_traffic_hurt_only_the_vm() {
    init_log();
    let sw = Switch::new("vale-h4");
    let vm_port = vale_port(&sw, "vm", 256);
    let (pa, pb) = (vale_port(&sw, "a", 256), vale_port(&sw, "b", 256));
    let path = sim::socket_path("vale-h4");
    let h = serve(&path, Arc::clone(&vm_port), ServeConfig::default()).unwrap();
    // Two bystanders exchange frames all along, in their own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let bystanders = thread::spawn(move || {
        let (_ha, mut a) = host(&pa);
        let (_hb, mut b) = host(&pb);
        let mut rounds = 0;
        while !stop2.load(Ordering::Relaxed) || rounds < 3 {
            let e = exchange(&mut a, &mut b, mac(12), mac(11), 500, 100);
            let f = exchange(&mut b, &mut a, mac(11), mac(12), 500, 100);
            assert_eq!(e.timeouts + f.timeouts, 0, "a bystander lost an interrupt");
            rounds += 1;
        }
        rounds
    });

    let mut vm = Vm::connect(&path);
    let mut g = vm.driver_start();
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let until = Instant::now() + Duration::from_millis(1500);
    let nq = vm.nq as u64;
    let mut last_tx = Instant::now();
    while Instant::now() < until {
        match rng.below(6) {
            // Random atok words (head, cur, appl_need_kick, sync_flags) and a kick.
            0 | 1 => {
                let q = rng.below(nq);
                let w = rng.below(4);
                vm.high.write(HIGH_GPA + q * 64 + 4 * w, rng.next() as u32);
                let _ = vm.kicks[q as usize].write(1);
            }
            // Random ktoa words (the device's own: it must not trust them either).
            2 => {
                let q = rng.below(nq);
                vm.high.write(
                    HIGH_GPA + KTOA_OFFSET + q * 64 + 4 * rng.below(3),
                    rng.next() as u32,
                );
            }
            // Random event-buffer queue state: avail index, ring entries, descriptors.
            3 => {
                let q = rng.below(nq) as usize;
                let base = sim::queue_base(q);
                match rng.below(3) {
                    0 => vm.low.write(base + 0x802, rng.next() as u16),
                    1 => vm
                        .low
                        .write(base + 0x804 + 2 * rng.below(64), rng.next() as u16),
                    _ => vm.low.write(base + 16 * rng.below(64), rng.next()),
                }
            }
            // Garbage slots and pointers through the rings.
            4 => {
                let k = rng.below(nq) as usize;
                g.port.unchecked_write_slot(
                    k,
                    rng.below(512) as u32,
                    ptnet_spec::netmap::NetmapSlot {
                        buf_idx: rng.next() as u32,
                        len: rng.next() as u16,
                        flags: rng.next() as u16,
                        ptr: rng.next(),
                    },
                );
                g.port
                    .unchecked_publish(k, rng.next() as u32, rng.next() as u32);
            }
            // Frames to itself (the switch drops them after learning the source), at most
            // one batch per millisecond: the bystanders must not lose frames to a full ring.
            _ if last_tx.elapsed() >= Duration::from_millis(1) => {
                last_tx = Instant::now();
                g.port.tx_batch(0, 32, |_, buf| {
                    buf[..6].copy_from_slice(&mac(66));
                    buf[6..12].copy_from_slice(&mac(66));
                    64
                });
                g.port.txsync(0);
                let _ = g.port.wait(Want::Rx, Some(Duration::from_millis(1)));
            }
            _ => {}
        }
    }
    // The VM hangs up in the middle of it.
    drop(g);
    drop(vm);
    assert!(
        eventually(Duration::from_secs(5), || !h.stats().running),
        "the port was not reclaimed"
    );
    stop.store(true, Ordering::Relaxed);
    assert!(bystanders.join().expect("the bystanders failed") >= 3);
    assert!(
        vm_port.stats().snapshot().ring_resets > 0,
        "garbage pointers were noticed"
    );
    // A good VM gets the port back.
    let (_hc, mut hp) = host(&vale_port(&sw, "c", 256));
    let mut vm = Vm::connect(&path);
    let mut g = vm.driver_start();
    let e = exchange(&mut g.port, &mut hp, mac(13), mac(10), 1000, 60);
    assert_eq!(e.timeouts, 0);
}

#[test]
fn interrupts_without_event_buffers_are_still_signalled_and_counted() {
    let mut r = rig("vale-h5");
    let mut vm = Vm::connect(&r.path);
    vm.quirks.no_event_buffers = true;
    let mut g = vm.driver_start();
    // The guest sleeps on RX; a bystander sends it a frame meanwhile.
    let slept = thread::scope(|sc| {
        let a = &mut r.a.1;
        sc.spawn(move || {
            thread::sleep(Duration::from_millis(50));
            a.tx_batch(0, 1, |_, buf| sim::frame(buf, [0xff; 6], mac(11), 0, 60));
            a.txsync(0);
        });
        let t = Instant::now();
        g.port
            .wait(Want::Rx, Some(Duration::from_millis(500)))
            .unwrap();
        t.elapsed()
    });
    // The device signalled the call eventfd without a buffer to complete: Linux (and the
    // simulator) drop such an interrupt, so the guest slept through it. A driver must keep
    // event buffers posted.
    assert!(
        eventually(Duration::from_secs(2), || r.h.stats().irqs_without_buffer
            > 0),
        "{:?}",
        r.h.stats()
    );
    assert!(slept >= Duration::from_millis(450), "woken after {slept:?}");
    assert_eq!(r.h.stats().event_buffers, 0);
    assert!(g.virq.stats.spurious.load(Ordering::Relaxed) > 0);
    drop(g);
    drop(vm);
    r.bystanders_work();
}

#[test]
fn status_is_never_mem_ready_without_a_mapping() {
    // The frontend refuses SHMEM_MAP (its region-size answer was tampered with): the port
    // runs but the driver never sees MEM_READY, and the failure is counted.
    let r = rig("vale-h6");
    let mut vm = Vm::connect(&r.path);
    vm.shm.inner.lock().unwrap().region_size = 4096;
    vm.write_csb(HIGH_GPA, HIGH_GPA + KTOA_OFFSET);
    vm.start_queues();
    assert!(eventually(Duration::from_secs(5), || r
        .h
        .stats()
        .map_failures
        == 1));
    assert_eq!(vm.read_config().status & PTNET_S_MEM_READY, 0);
    vm.stop_queues();
}

#[test]
fn a_frontend_that_never_answers_shmem_map_holds_nothing_of_the_daemon() {
    // The frontend takes SHMEM_MAP and never answers. The request times out (once it waited
    // forever, holding the mapper thread and the guest's memory): the failure is counted, the
    // driver never sees MEM_READY, the daemon's threads come back to what they were when the
    // frontend goes, and the next frontend gets the device.
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let mut r = rig("vale-h8");
    // The SIGBUS reaper is one thread for the process's life, started by the first memory
    // table any test of this process sends: started before counting.
    ptnet_datapath::fault::install().unwrap();
    let before = threads();
    let mut vm = Vm::connect(&r.path);
    vm.shm
        .stall
        .store(true, std::sync::atomic::Ordering::Relaxed);
    vm.write_csb(HIGH_GPA, HIGH_GPA + KTOA_OFFSET);
    vm.start_queues();
    assert!(
        eventually(Duration::from_secs(15), || r.h.stats().map_failures == 1),
        "{:?}",
        r.h.stats()
    );
    assert_eq!(vm.read_config().status & PTNET_S_MEM_READY, 0);
    vm.shm
        .stall
        .store(false, std::sync::atomic::Ordering::Relaxed);
    vm.stop_queues();
    drop(vm);
    assert!(
        eventually(Duration::from_secs(5), || threads() <= before),
        "{} threads, {before} before the frontend came",
        threads()
    );
    r.bystanders_work();
    r.a_good_vm_works();
}

#[test]
fn guest_memory_past_the_end_of_its_file_is_refused_before_anything_touches_it() {
    // A 4 KiB memfd announced as 4 MiB of guest RAM: mapping it works, touching it past the
    // first page would kill the daemon with SIGBUS. The memory table is refused (the
    // connection ends), and the next frontend is served.
    use vhost::VhostUserMemoryRegionInfo;
    use vhost::vhost_user::Frontend;
    let mut r = rig("vale-h7");
    let mut fe = Frontend::connect(&r.path, 128).unwrap();
    fe.set_owner().unwrap();
    let _ = fe.get_features().unwrap();
    fe.set_features(sim::DRIVER_FEATURES).unwrap();
    let _ = fe.get_protocol_features().unwrap();
    fe.set_protocol_features(sim::wanted_protocol_features())
        .unwrap();
    fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
    let ram = sim::GuestRam::new("short-ram", 0, 4096);
    let res = fe.set_mem_table(&[VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: 4 << 20,
        userspace_addr: ram.va(0),
        mmap_offset: 0,
        mmap_handle: ram.file.as_raw_fd(),
    }]);
    assert!(
        res.is_err(),
        "a memory table past the end of its file was accepted"
    );
    drop(fe);
    r.bystanders_work();
    r.a_good_vm_works();
}

#[test]
fn a_frontend_that_blocks_its_call_eventfd_stops_nobody_but_its_vm() {
    // QEMU shares its call eventfds with the daemon. This one clears O_NONBLOCK on the RX
    // queue's (the open file is shared, so the daemon's copy blocks too), fills its counter and
    // has its guest ask for RX interrupts. A bystander's broadcast then makes the bystander's
    // sync loop raise the VM's interrupt: the write gives up once instead of waiting with the
    // switch's port list locked, and nothing else notices.
    let mut r = rig("vale-h9");
    let mut vm = Vm::connect(&r.path);
    let sim::GuestPort { mut port, virq } = vm.driver_start();
    // Nobody reads the call eventfds from now on.
    drop(virq);
    let rx = port.num_tx_rings() as usize;
    let fd = vm.calls[rx].as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor the simulated frontend owns.
    let cleared = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) == 0
    };
    assert!(cleared);
    vm.calls[rx].write(u64::MAX - 1).unwrap();
    port.unchecked_enable_notifications(rx);
    let a = &mut r.a.1;
    assert_eq!(
        a.tx_batch(0, 4, |i, buf| sim::frame(
            buf,
            [0xff; 6],
            mac(11),
            u64::from(i),
            60
        )),
        4
    );
    a.txsync(0);
    // b gets the broadcast too (from a's sync loop, which raised the VM's interrupt first).
    let mut got = 0;
    let b = &mut r.b.1;
    assert!(
        eventually(Duration::from_secs(5), || {
            b.rxsync(0);
            got += b.rx_batch(0, u32::MAX, |_, _| {});
            b.rxsync(0);
            got >= 4
        }),
        "b received {got} of a's 4 broadcast frames"
    );
    r.bystanders_work();
    // The counter is as the frontend left it: the daemon gave up on it instead of waiting.
    assert_eq!(vm.calls[rx].read().unwrap(), u64::MAX - 1);
    assert!(ptnet_datapath::peer::interrupted_calls() >= 1);
    drop(port);
    vm.stop_queues();
    drop(vm);
    r.a_good_vm_works();
}

#[test]
fn guest_ram_cut_short_under_a_running_device_ends_only_its_connection() {
    // QEMU's memory-backend-file cannot seal guest RAM: the frontend (or anything holding the
    // file) may cut it short while the device runs. The CSB lives there; the device's next
    // look at it is a SIGBUS, survived: it reads zeros, the connection is ended and the port
    // reclaimed, and the next frontend is served.
    let mut r = rig("vale-h10");
    let mut vm = Vm::connect(&r.path);
    let sim::GuestPort { mut port, virq } = vm.driver_start();
    let e = exchange(&mut port, &mut r.a.1, mac(11), mac(10), 500, 60);
    assert_eq!(e.timeouts, 0);
    // The simulated driver lets go of its CSB before the RAM goes (it would fault too).
    drop(port);
    let before = ptnet_datapath::fault::faults();
    vm.high.file.set_len(0).unwrap();
    for k in &vm.kicks {
        k.write(1).unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || ptnet_datapath::fault::faults()
            > before),
        "the device never looked at its CSB"
    );
    assert!(
        eventually(Duration::from_secs(5), || vm.fe.get_features().is_err()),
        "the connection was not ended"
    );
    assert!(eventually(Duration::from_secs(5), || !r.h.stats().running));
    drop(virq);
    drop(vm);
    r.bystanders_work();
    r.a_good_vm_works();
}

#[test]
fn a_frontend_that_steals_its_kicks_stops_nobody_but_its_vm() {
    // QEMU shares its kick eventfds with the daemon. This one clears O_NONBLOCK on TX ring
    // 0's (the open file is shared, so the daemon's copy blocks too) and reads every kick
    // itself. The device's sync loop, woken by a kick the thief then took, must not wait for
    // the next one: stopping the device returns at once, and nothing else notices.
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut r = rig("vale-h11");
    let mut vm = Vm::connect(&r.path);
    let sim::GuestPort { mut port, virq } = vm.driver_start();
    let fd = vm.kicks[0].as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor the simulated frontend owns.
    let cleared = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) == 0
    };
    assert!(cleared);
    let stop = Arc::new(AtomicBool::new(false));
    let thief = {
        let (k, stop) = (vm.kicks[0].try_clone().unwrap(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut stolen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if k.read().is_ok() {
                    stolen += 1;
                }
            }
            stolen
        })
    };
    // The guest transmits in bursts; each txsync that asks for a kick feeds the thief.
    for burst in 0..50u64 {
        port.tx_batch(0, 16, |i, buf| {
            sim::frame(buf, [0xff; 6], mac(11), burst * 16 + u64::from(i), 60)
        });
        port.txsync(0);
        std::thread::sleep(Duration::from_millis(2));
    }
    r.bystanders_work();
    let t = std::time::Instant::now();
    drop(port);
    vm.stop_queues();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stopping the device waited {:?} on a blocking kick",
        t.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    vm.kicks[0].write(1).unwrap();
    let stolen = thief.join().unwrap();
    assert!(stolen > 0, "the thief never got a kick");
    drop(virq);
    drop(vm);
    r.bystanders_work();
    r.a_good_vm_works();
}
