//! Tier 2, issue 13: hostile vhost-user frontends and clients against the real daemon.
//!
//! Items 2 (memory another process takes away from under the daemon) and 1 (a frontend
//! blocking the call eventfd it shares with the daemon):
//!
//! * A VM's guest RAM cut short after the memory table was accepted: a vhost-user frontend
//!   (this test, speaking the protocol as QEMU does, with an unsealed memfd as
//!   `memory-backend-file` gives) starts a virtio-net port, truncates its RAM and kicks. The
//!   daemon's worker reads the TX queue there: SIGBUS, survived; the connection is ended and
//!   the port reclaimed for the next frontend, which is served.
//! * A hugetlb region punched by its own client: the client punches every page out of its
//!   port's memfd and the huge page pool is emptied, so the daemon cannot fault them back; a
//!   bystander's broadcast then makes the bystander's sync loop write into that port's ring.
//!
//! Each time: the daemon lives, two bystanders on the same switch exchange every frame
//! before and after, and `ptnet_daemon_memory_faults_total` counts the faults.
#![cfg(feature = "host-tests")]

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::Daemon;
use common::frontend::{NetVm, RAM, memfd};
use ptnet_client::Port;
use ptnet_client::proto::PortRequest;
use vhost::VhostBackend;

fn attach(d: &Daemon, port: &str) -> Port {
    Port::attach(
        &d.socket,
        PortRequest {
            port: port.into(),
            slots: Some(256),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("attach {port}: {e}"))
}

fn frame(buf: &mut [u8], src: u8, seq: u32) -> u16 {
    buf[..6].fill(0xff);
    buf[6..12].copy_from_slice(&[2, 0, 0, 0, 9, src]);
    buf[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    buf[14..18].copy_from_slice(&seq.to_be_bytes());
    60
}

/// `a` broadcasts `n` frames; `b` must get every one of them.
fn exchange(a: &mut Port, b: &mut Port, n: u32) {
    let (mut sent, mut got) = (0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < n {
        assert!(
            Instant::now() < deadline,
            "bystander got {got} of {n} frames ({sent} sent)"
        );
        if sent < n {
            sent += a.tx_batch(0, (n - sent).min(32), |i, buf| frame(buf, 1, sent + i));
            a.txsync(0);
        }
        b.rxsync(0);
        got += b.rx_batch(0, u32::MAX, |f, _| {
            assert_eq!(&f[6..12], &[2, 0, 0, 0, 9, 1], "only a's frames");
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(got, n);
}

/// The daemon's survived-fault counter, from its metrics endpoint.
fn faults(addr: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ptnet_daemon_memory_faults_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("ptnet_daemon_memory_faults_total in the scrape")
}

fn vm_running(d: &Daemon, port: &str) -> bool {
    d.port(port).and_then(|p| p.vm).is_some_and(|v| v.running)
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config(metrics: &str) -> String {
    format!("[daemon]\nmetrics = \"{metrics}\"\n\n[[switch]]\nname = \"vale0\"\n")
}

/// A free TCP address for the daemon's metrics.
fn metrics_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string()
}

/// The huge page pool is the machine's: the test that empties it runs alone (this process's
/// own clients map hugetlb regions too).
static POOL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn guest_ram_cut_short_under_a_running_virtio_net_port_ends_only_its_connection() {
    let _pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let addr = metrics_addr();
    let d = Daemon::start_with_config("memfault-vm", &config(&addr));
    let (ok, out) = d.ctl(&["serve-virtio-net", "vale0:vm", "--socket", "vm.sock"]);
    assert!(ok, "serve-virtio-net: {out}");
    let socket = d.dir.join("vm.sock");
    let mut a = attach(&d, "vale0:a");
    let mut b = attach(&d, "vale0:b");
    exchange(&mut a, &mut b, 500);

    // QEMU's memory-backend-file gives unsealed memory: the frontend may cut it short.
    let vm = NetVm::start(&socket, memfd(c"vm-ram", RAM, false));
    eventually("the device starts", Duration::from_secs(10), || {
        vm_running(&d, "vale0:vm")
    });
    assert_eq!(faults(&addr), 0);
    // From here on nothing in this process touches the RAM (it would fault too).
    vm.ram.set_len(0).unwrap();
    // The worker reads the TX queue's avail index where the RAM was.
    vm.kicks[1].write(1).unwrap();
    // So does delivering a's broadcasts into the guest's RX queue.
    exchange(&mut a, &mut b, 500);
    eventually("the fault is counted", Duration::from_secs(10), || {
        faults(&addr) >= 1
    });
    eventually("the connection is ended", Duration::from_secs(10), || {
        vm.fe.get_features().is_err()
    });
    eventually("the port is reclaimed", Duration::from_secs(10), || {
        !vm_running(&d, "vale0:vm")
    });
    drop(vm);
    let log = std::fs::read_to_string(d.dir.join("ptnetd.log")).unwrap();
    assert!(
        log.contains("vale0:vm: guest memory was taken away under the daemon"),
        "the daemon says what happened: {log}"
    );

    // Everyone else goes on; the next frontend (with sealed RAM this time) is served.
    exchange(&mut a, &mut b, 500);
    let vm = NetVm::start(&socket, memfd(c"vm-ram2", RAM, true));
    eventually(
        "the next frontend's device starts",
        Duration::from_secs(10),
        || vm_running(&d, "vale0:vm"),
    );
    vm.kicks[1].write(1).unwrap();
    exchange(&mut a, &mut b, 500);
    drop(vm);
    let (ok, out) = d.ctl(&["list"]);
    assert!(ok, "the daemon answers: {out}");
}

const NR: &str = "/proc/sys/vm/nr_hugepages";

fn hugepages() -> u64 {
    std::fs::read_to_string(NR).unwrap().trim().parse().unwrap()
}

/// Gives the machine its huge page setting back however the test ends.
struct Restore(u64);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(NR, self.0.to_string());
    }
}

/// The descriptors of memfds this process holds whose name contains `part`.
fn memfds(part: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let link = link.to_string_lossy();
            (link.contains("memfd:") && link.contains(part))
                .then(|| e.file_name().to_string_lossy().parse().ok())?
        })
        .collect()
}

#[test]
fn a_client_punching_its_hugetlb_region_cuts_off_only_itself() {
    let _pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let _restore = Restore(hugepages());
    std::fs::write(NR, "64").expect("reserve huge pages (needs root)");
    assert!(
        hugepages() >= 64,
        "the kernel reserved {} huge pages",
        hugepages()
    );
    let addr = metrics_addr();
    let d = Daemon::start_with_config("memfault-huge", &config(&addr));
    let mut a = attach(&d, "vale0:a");
    let mut b = attach(&d, "vale0:b");
    exchange(&mut a, &mut b, 500);
    // x attaches now, with an empty RX ring that a's next broadcasts will fill.
    let before = memfds("ptnet");
    let x = attach(&d, "vale0:x");
    let fd = memfds("ptnet")
        .into_iter()
        .find(|f| !before.contains(f))
        .expect("x's region memfd");
    let size = x.region_size();
    // SAFETY: `fd` is open (x's region) for as long as this borrow is used.
    let page =
        ptnet_datapath::fault::file_page_size(&unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
            .unwrap();
    assert_eq!(page, 2 << 20, "x's region should be on huge pages");

    // x's client takes every page of its region away, and the pool is emptied so that
    // nobody can fault them back. From here on this process never touches x's memory.
    // SAFETY: fallocate on a descriptor we hold; it changes only the file.
    let r = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            size as libc::off_t,
        )
    };
    assert_eq!(r, 0, "punch: {}", std::io::Error::last_os_error());
    std::fs::write(NR, "0").unwrap();
    std::mem::forget(x);

    // a's broadcasts go to x too: a's sync loop writes x's ring and buffers.
    exchange(&mut a, &mut b, 500);
    eventually("the fault is counted", Duration::from_secs(10), || {
        faults(&addr) >= 1
    });
    exchange(&mut a, &mut b, 500);
    let log = std::fs::read_to_string(d.dir.join("ptnetd.log")).unwrap();
    assert!(
        log.contains("huge page(s) taken away under the daemon"),
        "the daemon says what happened: {log}"
    );
    let (ok, out) = d.ctl(&["list"]);
    assert!(ok, "the daemon answers: {out}");
}

#[test]
fn a_frontend_that_blocks_its_call_eventfd_stops_nobody_but_its_vm() {
    // QEMU shares its call eventfds (irqfds) with the daemon. This frontend clears
    // O_NONBLOCK on the RX queue's (the flag belongs to the open file, so the daemon's copy
    // blocks too) and fills its counter: the next interrupt the device raises would wait
    // forever, in the worker that must also stop when told. The write gives up instead, and
    // neither the bystanders nor the control plane notice.
    let _pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let d = Daemon::start("blocked-call");
    let (ok, out) = d.ctl(&["serve-virtio-net", "vale0:vm", "--socket", "vm.sock"]);
    assert!(ok, "serve-virtio-net: {out}");
    let mut a = attach(&d, "vale0:a");
    let mut b = attach(&d, "vale0:b");
    exchange(&mut a, &mut b, 500);
    let vm = NetVm::start(&d.dir.join("vm.sock"), memfd(c"vm-ram", RAM, true));
    eventually("the device starts", Duration::from_secs(10), || {
        vm_running(&d, "vale0:vm")
    });
    let fd = vm.calls[0].as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor this frontend owns.
    let cleared = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) == 0
    };
    assert!(cleared);
    vm.calls[0].write(u64::MAX - 1).unwrap();
    vm.post_rx(32);
    // a's broadcasts reach the guest too: the device fills its buffers and raises the
    // interrupt on the blocked eventfd.
    exchange(&mut a, &mut b, 500);
    eventually("the guest receives", Duration::from_secs(10), || {
        vm.rx_used() > 0
    });
    // The interrupt for them is raised (and counted) after the used ring is published.
    eventually(
        "the device raises the interrupt",
        Duration::from_secs(10),
        || {
            d.port("vale0:vm")
                .and_then(|p| p.vm)
                .is_some_and(|v| v.irqs > 0)
        },
    );
    exchange(&mut a, &mut b, 500);
    // The counter is as the frontend left it: the daemon gave up instead of waiting, once,
    // and said so.
    assert_eq!(vm.calls[0].read().unwrap(), u64::MAX - 1);
    let log = std::fs::read_to_string(d.dir.join("ptnetd.log")).unwrap();
    assert!(log.contains("blocked its writer"), "{log}");
    let t = Instant::now();
    let (ok, out) = d.ctl(&["stop-vm", "vale0:vm"]);
    assert!(
        ok && t.elapsed() < Duration::from_secs(3),
        "stop-vm: {out} after {:?}",
        t.elapsed()
    );
    drop(vm);
    exchange(&mut a, &mut b, 500);
}
