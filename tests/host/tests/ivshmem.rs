//! Tier 2: ptnet devices on the ivshmem transport, through the real daemon. `ptnetctl
//! serve-vm --transport ivshmem` and a guest played by `ptnet_client::ivshmem` (what QEMU's
//! `ivshmem-doorbell` and the driver do) exchanging frames with a host client; and Debian's
//! **stock** QEMU (`qemu-system-x86_64` from bookworm-backports, unmodified) taking the
//! daemon's ivshmem server at start-up, driven through its qtest accelerator instead of a
//! guest kernel: BAR 2 is the port's region, the guest's doorbell reaches the daemon, and the
//! daemon's interrupt comes back as the guest's MSI-X message.

#![cfg(feature = "host-tests")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use ptnet_client::ivshmem::IvshmemGuest;
use ptnet_client::proto::{PortRequest, VmTransport};
use ptnet_client::{Port, Want};

const T: Duration = Duration::from_secs(10);

/// The socket of the VM served on `port`.
fn vm_socket(d: &Daemon, port: &str) -> PathBuf {
    let e = d.port(port).and_then(|p| p.vm).expect("a VM entry");
    assert_eq!(e.transport, VmTransport::Ivshmem);
    PathBuf::from(e.socket)
}

/// Sends `count` broadcast frames from `tx`, receives them all on `rx` (VALE floods them):
/// exact count, in order.
fn flood(tx: &mut Port, rx: &mut Port, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut sent, mut got) = (0u64, 0u64);
    while got < count {
        assert!(Instant::now() < deadline, "sent {sent}, received {got}");
        let burst = (count - sent).min(100) as u32;
        if sent - got < 100 {
            let n = tx.tx_batch(0, burst, |i, b| {
                b[..6].copy_from_slice(&[0xff; 6]);
                b[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
                b[12..14].copy_from_slice(&[0x88, 0xb5]);
                b[14..22].copy_from_slice(&(sent + u64::from(i)).to_le_bytes());
                60
            });
            sent += u64::from(n);
            tx.txsync(0);
        }
        rx.rxsync(0);
        let n = rx.rx_batch(0, u32::MAX, |b, _| {
            if b.len() >= 22 && b[6..12] == [2, 0, 0, 0, 0, 9] {
                let seq = u64::from_le_bytes(b[14..22].try_into().unwrap());
                assert_eq!(seq, got, "frames out of order");
                got += 1;
            }
        });
        if n > 0 {
            rx.rxsync(0);
        } else if sent > got {
            rx.wait(Want::Rx, Some(Duration::from_millis(100))).unwrap();
        }
    }
}

#[test]
fn serve_vm_over_ivshmem_and_a_guest_exchanges_frames_with_a_host_client() {
    let d = Daemon::start("ivshmem");
    let (ok, out) = d.ctl(&["serve-vm", "vale0:vm", "--transport", "ivshmem"]);
    assert!(ok, "{out}");
    let (ok, out) = d.ctl(&["qemu-args", "vale0:vm"]);
    assert!(ok, "{out}");
    for want in ["-chardev", "ivshmem-doorbell", "vectors=3"] {
        assert!(out.contains(want), "qemu-args lacks {want}: {out}");
    }
    assert!(
        !out.contains("memory-backend"),
        "no shared guest RAM: {out}"
    );
    let (ok, out) = d.ctl(&["serve-virtio-net", "vale0:x", "--transport", "ivshmem"]);
    assert!(
        !ok && out.contains("ivshmem transport is for ptnet devices"),
        "{out}"
    );

    let sock = vm_socket(&d, "vale0:vm");
    let g = IvshmemGuest::connect(&sock, T).expect("connect as QEMU does");
    let mut gp = g.start(0, T).expect("driver start");
    let (ok, out) = d.ctl(&["list"]);
    assert!(
        ok && out.contains("ptnet/ivshmem") && out.contains("running"),
        "{out}"
    );
    let mut hp = Port::attach(
        &d.socket,
        PortRequest {
            port: "vale0:h".into(),
            ..Default::default()
        },
    )
    .expect("attach a host client");
    flood(&mut gp, &mut hp, 5000);
    flood(&mut hp, &mut gp, 5000);
    let e = d.port("vale0:vm").and_then(|p| p.vm).unwrap();
    assert_eq!((e.connections, e.starts, e.refused), (1, 1, 0), "{e:?}");

    // stop-vm ends the connection and frees the port.
    drop(gp);
    let (ok, out) = d.ctl(&["stop-vm", "vale0:vm"]);
    assert!(ok, "{out}");
    assert!(!sock.exists());
}

/// A QEMU under TCG with no guest but its firmware (SeaBIOS enumerates PCI and places the
/// BARs, then finds nothing to boot), watched through QMP. Debian's QEMU has no qtest
/// accelerator, so this is how a test without a guest kernel sees the device.
struct Qemu {
    child: Child,
    r: BufReader<UnixStream>,
    w: UnixStream,
    dir: PathBuf,
}

impl Qemu {
    fn start(qemu: &Path, dir: &Path, args: &[String]) -> Self {
        let qmp = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp);
        let log = std::fs::File::create(dir.join("qemu.log")).unwrap();
        let child = Command::new(qemu)
            .args([
                "-machine", "pc", "-accel", "tcg", "-cpu", "qemu64", "-m", "128",
            ])
            .args(["-nodefaults", "-display", "none", "-serial", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", qemu.display()));
        let deadline = Instant::now() + T;
        let s = loop {
            match UnixStream::connect(&qmp) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!(
                    "QEMU's QMP socket did not come up: {e}; its log: {}",
                    std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default()
                ),
            }
        };
        s.set_read_timeout(Some(T)).unwrap();
        let mut q = Qemu {
            child,
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            dir: dir.to_owned(),
        };
        q.line(); // greeting
        q.qmp(serde_json::json!({"execute": "qmp_capabilities"}));
        q
    }

    fn line(&mut self) -> serde_json::Value {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("a QMP line");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("QMP said {l:?}: {e}"))
    }

    /// One command; its `return` (events in between are skipped).
    fn qmp(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        writeln!(self.w, "{cmd}").unwrap();
        loop {
            let v = self.line();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            assert!(v.get("error").is_none(), "{cmd}: {v}");
        }
    }

    fn hmp(&mut self, line: &str) -> String {
        let r = self.qmp(serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": {"command-line": line}
        }));
        r.as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("QEMU log kept in {}", self.dir.display());
        }
    }
}

/// Debian's stock QEMU binaries: bookworm-backports' on the host, and unstable's in its
/// chroot (`PTNET_UNSTABLE_QEMU`, printed by `vm-images/unstable-qemu.sh`, which
/// `ci/tier2.sh` runs).
fn stock_qemus() -> Vec<PathBuf> {
    let unstable = std::env::var_os("PTNET_UNSTABLE_QEMU").unwrap_or_else(|| {
        panic!(
            "PTNET_UNSTABLE_QEMU is not set: run vm-images/unstable-qemu.sh (root) and export \
             the path it prints (ci/tier2.sh does)"
        )
    });
    vec![PathBuf::from("qemu-system-x86_64"), PathBuf::from(unstable)]
}

/// Debian's own QEMU binaries (bookworm-backports' 10.0 and unstable's 11.1, unmodified)
/// realize the `ivshmem-doorbell` device on the daemon's ivshmem server: each takes the
/// set-up, BAR 2 is a power of two, and reading guest-physical memory at BAR 2 (where the
/// firmware placed it) shows the port's region: the directory in its last page and the
/// guest's device block. The doorbell and MSI-X paths are the guests' (tier 3).
#[test]
fn stock_qemu_maps_the_ports_region_as_the_ivshmem_bar() {
    for (i, qemu) in stock_qemus().iter().enumerate() {
        stock_qemu_maps_the_region(qemu, &format!("ivshmem-qemu{i}"));
    }
}

fn stock_qemu_maps_the_region(qemu: &Path, name: &str) {
    let d = Daemon::start(name);
    let (ok, out) = d.ctl(&["serve-vm", "vale0:vm", "--transport", "ivshmem"]);
    assert!(ok, "{out}");
    let (ok, out) = d.ctl(&["--json", "qemu-args", "vale0:vm"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    let args: Vec<String> = v["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(v["memory"].as_array().is_some_and(Vec::is_empty), "{out}");
    let mut q = Qemu::start(qemu, &d.dir, &args);
    let e = d.port("vale0:vm").and_then(|p| p.vm).unwrap();
    assert_eq!(
        e.connections, 1,
        "QEMU connected to the ivshmem server: {e:?}"
    );

    // The device's BAR 2, once the firmware placed it.
    let deadline = Instant::now() + T;
    let (addr, size) = loop {
        let buses = q.qmp(serde_json::json!({"execute": "query-pci"}));
        let bar2 = buses[0]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"]["vendor"] == 0x1af4 && d["id"]["device"] == 0x1110)
            .and_then(|d| {
                d["regions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["bar"] == 2)
                    .cloned()
            })
            .expect("an ivshmem device with a BAR 2");
        // An unplaced BAR reads as -1.
        let num = |v: &serde_json::Value| v.as_u64().or_else(|| v.as_i64().map(|i| i as u64));
        let (a, s) = (num(&bar2["address"]).unwrap(), num(&bar2["size"]).unwrap());
        if a != 0 && a != u64::MAX && a != u64::from(u32::MAX) {
            break (a, s);
        }
        assert!(
            Instant::now() < deadline,
            "the firmware never placed BAR 2: {bar2}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(size.is_power_of_two(), "BAR 2 of {size:#x} bytes");
    // The directory is in the region's last page: found at the end of BAR 2, BAR 2 is the
    // region, whole.
    let xp = |q: &mut Qemu, at: u64| -> u64 {
        let out = q.hmp(&format!("xp /1gx {at:#x}"));
        let hex = out
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("xp: {out}"));
        u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
    };
    assert_eq!(&xp(&mut q, addr + size - 4096).to_le_bytes(), b"ptnetdir");
    let blocks = xp(&mut q, addr + size - 4096 + 16);
    assert_eq!(&xp(&mut q, addr + blocks).to_le_bytes(), b"ptnetblk");
    let ids = xp(&mut q, addr + blocks + 8);
    assert_eq!(
        (ids & 0xffff, ids >> 32 & 0xffff),
        (1, 3),
        "peer id 1, 3 vectors"
    );

    // QEMU goes away: the daemon sees it, the port is free again.
    drop(q);
    let deadline = Instant::now() + T;
    loop {
        let (ok, out) = d.ctl(&["stop-vm", "vale0:vm"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
