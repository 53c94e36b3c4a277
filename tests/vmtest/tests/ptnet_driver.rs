//! Tier 3: the `ptnet` guest driver on the patched QEMU and the real `ptnetd`.
//!
//! Needs (ci/tier3-vm.sh sets them):
//! - `PTNET_KERNEL_DIR`: the guest kernel build directory;
//! - `PTNET_PTNET_KO`: `ptnet.ko` from `guest-driver-linux/build-module.sh`;
//! - `PTNET_QEMU`: the patched QEMU (`qemu-patches/build-qemu.sh`);
//! - `PTNET_BIN_DIR`: `ptnetd`, `ptnetctl`, `ptnet-pktgen` for the host side.
//!
//! Missing inputs fail the test with a message; they never skip it.
//!
//! Guests that run netmap applications load the driver with `vnet_hdr=0`: those
//! applications (like netmap's pkt-gen) do not pass `NR_ACCEPT_VNET_HDR`, and a packet
//! generator gains nothing from offloads (netmap's own advice for `ptnet_vnet_hdr`). Guests
//! that use the kernel stack keep the default, the virtio-net header with checksum and TSO
//! offloads.
#![cfg(feature = "vm-tests")]

use std::path::PathBuf;
use std::time::Duration;

use ptnet_vmtest::testenv::{required_path, work_dir};
use ptnet_vmtest::{Initramfs, Ptnetd, Vm, VmConfig};

struct Inputs {
    kernel: PathBuf,
    ko: PathBuf,
    /// Static `ptnet-pktgen` for the guest (netmap backend on /dev/netmap).
    pktgen: PathBuf,
    /// Static `nm-tx-rx`, the C netmap application.
    nm_tx_rx: PathBuf,
    /// Static `nm-hostile`, the lying netmap application.
    nm_hostile: PathBuf,
}

fn inputs() -> Inputs {
    let kernel_dir = required_path("PTNET_KERNEL_DIR", "the guest kernel build directory");
    let kernel = kernel_dir.join("arch/x86/boot/bzImage");
    assert!(kernel.is_file(), "{} is missing", kernel.display());
    Inputs {
        kernel,
        ko: required_path("PTNET_PTNET_KO", "the ptnet.ko guest driver"),
        pktgen: required_path(
            "PTNET_GUEST_PKTGEN",
            "a static ptnet-pktgen (guest-driver-linux/tools/build-guest-tools.sh)",
        ),
        nm_tx_rx: required_path(
            "PTNET_GUEST_NM_TX_RX",
            "the static nm-tx-rx (guest-driver-linux/tools/build-guest-tools.sh)",
        ),
        nm_hostile: required_path(
            "PTNET_GUEST_NM_HOSTILE",
            "the static nm-hostile (guest-driver-linux/tools/build-guest-tools.sh)",
        ),
    }
}

/// Starts one guest with the ptnet device in `device_args`, running `script` with the
/// driver and the guest tools in its image.
fn start_guest(
    inp: &Inputs,
    dir: &std::path::Path,
    name: &str,
    device_args: Vec<String>,
    script: String,
) -> Vm {
    start_guest_on(inp, dir, name, device_args, script, None)
}

/// [`start_guest`] on the QEMU binary `qemu` (default: `PTNET_QEMU`'s).
fn start_guest_on(
    inp: &Inputs,
    dir: &std::path::Path,
    name: &str,
    device_args: Vec<String>,
    script: String,
    qemu: Option<&std::path::Path>,
) -> Vm {
    let initrd = Initramfs::new(script)
        .module(&inp.ko)
        .bin(&inp.pktgen)
        .bin(&inp.nm_tx_rx)
        .bin(&inp.nm_hostile)
        .build(&dir.join(format!("{name}.initrd.gz")))
        .unwrap_or_else(|e| panic!("building the initramfs failed: {e}"));
    let mut config = VmConfig::new(
        name,
        &inp.kernel,
        initrd,
        dir.join(format!("{name}.console.log")),
    )
    .expect("guest configuration from PTNET_QEMU/PTNET_ACCEL");
    if let Some(q) = qemu {
        config.qemu = q.to_owned();
    }
    let config = config
        .cpus(1)
        .memory_mib(256)
        .shared_memory()
        .qemu_args(device_args)
        .timeout(Duration::from_secs(240));
    Vm::start(config).unwrap_or_else(|e| panic!("starting guest {name} failed: {e}"))
}

/// Waits for a guest and reports where its console log is.
fn finish(vm: Vm, dir: &std::path::Path, name: &str) -> ptnet_vmtest::VmOutcome {
    let outcome = vm
        .wait()
        .unwrap_or_else(|e| panic!("running guest {name} failed: {e}"));
    eprintln!(
        "guest {name} ran {:.1} s, console log: {}",
        outcome.elapsed.as_secs_f64(),
        dir.join(format!("{name}.console.log")).display()
    );
    outcome
}

/// The driver binds the device, finds the port's `netmap_if` in the shared-memory BAR
/// (name and version), creates `/dev/netmap`, has a vector per ring, and unloads cleanly;
/// the daemon sees the device start and stop.
#[test]
fn driver_binds_the_ptnet_device_and_unloads() {
    let inp = inputs();
    let dir = work_dir("ptnet_bind");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let args = d
        .serve_vm("vale0:g1", &dir.join("g1.sock"), false)
        .expect("serve vale0:g1 to a VM");
    let script = "insmod /modules/ptnet.ko\n\
         dmesg | grep -q \"netmap_if 'vale0:g1' version 14\"\n\
         dmesg | grep 'ptnet'\n\
         test -c /dev/netmap\n\
         grep -c 'ptnet-[tr]x' /proc/interrupts\n\
         rmmod ptnet\n\
         dmesg | grep -q 'ptnet0 removed'\n"
        .to_owned();
    let vm = start_guest(&inp, &dir, "g1", args, script);
    let outcome = finish(vm, &dir, "g1");
    let log = d.log();
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{log}");
    }
    assert!(
        outcome.console.contains("ptnet0: 1 TX + 1 RX rings"),
        "no probe line on the console:\n{}",
        outcome.console
    );
    // A VALE port takes the header: offloads by default, 64 KiB TSO frames (2 KiB buffers).
    assert!(
        outcome
            .console
            .contains("virtio-net header: checksum offload, TSO up to 65536 bytes"),
        "no offloads on a VALE port:\n{}",
        outcome.console
    );
}

/// A host client on `port` receiving `n` frames with `--expect-no-loss` (it announces its
/// MAC, so frames for it are not flooded), giving up after `secs` seconds.
fn host_sink(d: &Ptnetd, port: &str, n: &str, secs: &str) -> std::process::Child {
    d.pktgen(&[
        "rx",
        "-i",
        port,
        "-n",
        n,
        "--expect-no-loss",
        "--json",
        "-q",
        "-d",
        secs,
    ])
    .expect("host rx")
}

/// Exits with a message naming the process's output.
fn wait_ok(name: &str, child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("wait for a host process");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Frames per exchange: fewer than a ring holds (1024 slots), so frames that arrive before
/// the receiving application registers wait in its RX ring instead of being dropped, and
/// "ready" only has to mean "the driver is loaded".
const FRAMES: u32 = 1000;

/// Guest ↔ host client across vale0, both directions, with exact counts and payload checks
/// (`--expect-no-loss`). The guest uses netmap's API through the driver (`ptnet-pktgen -i
/// netmap:ptnet0`), so this also proves the device chain: the daemon counts the guest's
/// doorbell kicks and raises interrupts the guest takes (its /proc/interrupts line for the
/// RX ring's vector is non-zero).
#[test]
fn guest_and_host_client_exchange_frames_over_vale0() {
    guest_and_host_client("ptnet_host", None);
}

/// Issue 12: the same on Debian's stock QEMU over the ivshmem transport (the doorbell's
/// ioeventfd for kicks, the guest's MSI-X vectors for interrupts).
#[test]
fn guest_and_host_client_on_stock_qemu_over_ivshmem() {
    for (name, stock) in stock_qemus() {
        guest_and_host_client(&format!("ivs_host_{name}"), Some(&stock));
    }
}

/// Issue 12: a hostile guest on the ivshmem transport (root, no driver: `nm-hostile
/// --ivshmem` maps the device's BARs through sysfs) storms the doorbell with bogus peers and
/// vectors and the daemon's own vectors with random start and reset requests, and writes
/// garbage over its device block, its CSB and the directory, while two host clients exchange
/// frames across the same switch: they lose none, the daemon lives, and the port serves the
/// next VM (a guest with the driver, exact counts to a host client).
#[test]
fn a_hostile_guest_on_ivshmem_breaks_only_its_own_port() {
    let inp = inputs();
    let (_, stock) = stock_qemus()[0].clone();
    let dir = work_dir("ivs_hostile");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    // Locked to its device's MAC: whatever garbage its rings carry out is dropped at the
    // switch instead of reaching the host clients' checkers.
    d.ctl(&[
        "serve-vm",
        "vale0:evil",
        "--socket",
        "evil.sock",
        "--transport",
        "ivshmem",
        "--mac-lock",
    ])
    .expect("serve vale0:evil over ivshmem");
    let args = d.qemu_args("vale0:evil").expect("qemu-args");
    // Host traffic first, then the attack while it flows.
    let n = "20000";
    let sink = host_sink(&d, "vale0:h1", n, "120");
    // The sender starts once the sink is attached (and has announced its MAC).
    let t = std::time::Instant::now();
    while d.port_stats("vale0:h1").is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the host sink never attached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let src = d
        .pktgen(&[
            "tx", "-i", "vale0:h2", "-n", n, "-R", "2000", "-q", "--json",
        ])
        .expect("host tx");
    let script = "nm-hostile --ivshmem -n 1000000 -s 7\n".to_owned();
    let vm = start_guest_on(&inp, &dir, "evil", args.clone(), script, Some(&stock));
    let out = finish(vm, &dir, "evil");
    if let Err(e) = out.check() {
        panic!("hostile guest: {e}\n--- ptnetd log ---\n{}", d.log());
    }
    let want = "nm-hostile: ivshmem peer 1, 1000000 rounds";
    assert!(out.console.contains(want), "no {want:?}:\n{}", out.console);
    wait_ok("host ptnet-pktgen tx", src);
    let rx = wait_ok("host ptnet-pktgen rx (no loss expected)", sink);
    eprintln!("host rx during the attack: {}", rx.trim());
    let e = d.vm_entry("vale0:evil").expect("the daemon answers");
    eprintln!("vale0:evil after the attack: {e}");

    // The next VM on the same port: the driver binds, frames reach a host client.
    let fresh = d
        .pktgen(&[
            "rx",
            "-i",
            "vale0:h3",
            "-n",
            "1000",
            "--expect-no-loss",
            "-q",
            "--json",
            "-d",
            "120",
        ])
        .expect("host rx");
    let script = "insmod /modules/ptnet.ko vnet_hdr=0\n\
                  mac=$(cat /sys/bus/pci/drivers/ptnet-ivshmem/*/net/*/address)\n\
                  ptnet-pktgen tx -i netmap:ptnet0 --src-mac $mac -n 1000 -R 20000 -q --json\n\
                  rmmod ptnet\n"
        .to_owned();
    let vm = start_guest_on(&inp, &dir, "next", args, script, Some(&stock));
    let out = finish(vm, &dir, "next");
    if let Err(e) = out.check() {
        panic!("the next guest: {e}\n--- ptnetd log ---\n{}", d.log());
    }
    wait_ok("host ptnet-pktgen rx of the next guest's frames", fresh);
}

/// [`guest_and_host_client_exchange_frames_over_vale0`], on the stock QEMU `stock` over
/// ivshmem when given.
fn guest_and_host_client(test: &str, stock: Option<&std::path::Path>) {
    let inp = inputs();
    let dir = work_dir(test);
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let transport = transport_for(stock);
    let args = d
        .serve_vm_over("vale0:g1", &dir.join("g1.sock"), false, transport)
        .expect("serve vale0:g1 to a VM");
    let n = FRAMES.to_string();
    // Host sink first: it announces its MAC, so the guest's frames are not flooded.
    let sink = host_sink(&d, "vale0:h1", &n, "200");
    let script = format!(
        "insmod /modules/ptnet.ko vnet_hdr=0\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n {n} -R 20000 -q --json\n\
         echo guest-rx-ready\n\
         ptnet-pktgen rx -i netmap:ptnet0 --src-mac 02:70:74:00:00:12 -n {n} --expect-no-loss -q --json -d 200\n\
         grep 'ptnet-' /proc/interrupts\n\
         irqs=$(grep 'ptnet-rx0' /proc/interrupts | awk '{{print $2}}')\n\
         echo \"rx0 interrupts: $irqs\"\n\
         test \"$irqs\" -gt 0\n\
         rmmod ptnet\n"
    );
    let mut vm = start_guest_on(&inp, &dir, "g1", args, script, stock);
    let host_rx = wait_ok("host ptnet-pktgen rx", sink);
    eprintln!("host rx: {}", host_rx.trim());
    vm.wait_for_console("guest-rx-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    let src = d
        .pktgen(&[
            "tx",
            "-i",
            "vale0:h2",
            "-n",
            &n,
            "-R",
            "5000",
            "--dst-mac",
            "02:70:74:00:00:12",
            "-q",
            "--json",
        ])
        .expect("host tx");
    let host_tx = wait_ok("host ptnet-pktgen tx", src);
    eprintln!("host tx: {}", host_tx.trim());
    let outcome = finish(vm, &dir, "g1");
    let stats = d.port_stats("vale0:g1").expect("stats of vale0:g1");
    eprintln!("vale0:g1 counters: {stats}");
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{}", d.log());
    }
    assert!(
        stats["kicks"].as_u64().unwrap_or(0) > 0,
        "the daemon counted no kick: {stats}"
    );
    assert!(
        stats["irqs"].as_u64().unwrap_or(0) > 0,
        "the daemon raised no interrupt: {stats}"
    );
    assert_eq!(stats["tx_packets"].as_u64(), Some(FRAMES as u64), "{stats}");
    assert_eq!(stats["rx_packets"].as_u64(), Some(FRAMES as u64), "{stats}");
    let vm = d.vm_entry("vale0:g1").expect("vm entry");
    assert!(
        vm["irqs"].as_u64().unwrap_or(0) > 0,
        "the device counted no interrupt: {vm}"
    );
}

/// Two guests exchange frames through ports `a` and `b` (served with `trusted`): first
/// `ptnet-pktgen` tx → rx with exact counts and payload checks, then the C netmap
/// application (`nm-tx-rx`, built against the generated header only) tx → rx. Each phase
/// boots the receiver first and starts the sender once the receiver's driver is up.
fn two_guests(test: &str, a: &str, b: &str, trusted: bool) {
    two_guests_on(test, a, b, trusted, None);
}

/// [`two_guests`], on Debian's stock QEMU `stock` over the ivshmem transport when given.
fn two_guests_on(test: &str, a: &str, b: &str, trusted: bool, stock: Option<&std::path::Path>) {
    let inp = inputs();
    let dir = work_dir(test);
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let transport = transport_for(stock);
    let args_a = d
        .serve_vm_over(a, &dir.join("a.sock"), trusted, transport)
        .expect("serve port a");
    let args_b = d
        .serve_vm_over(b, &dir.join("b.sock"), trusted, transport)
        .expect("serve port b");
    let n = FRAMES;
    let phases = [
        (
            "pktgen",
            format!("ptnet-pktgen rx -i netmap:ptnet0 -n {n} --expect-no-loss --json -d 200"),
            format!("ptnet-pktgen tx -i netmap:ptnet0 -n {n} -R 20000 --json"),
        ),
        (
            "nm-tx-rx",
            format!("nm-tx-rx rx ptnet0 -n {n} -t 200"),
            format!("nm-tx-rx tx ptnet0 -n {n} -r 20000 -t 200"),
        ),
    ];
    for (phase, rx, tx) in phases {
        let rx_name = format!("{phase}-rx");
        let tx_name = format!("{phase}-tx");
        let rx_script = format!(
            "insmod /modules/ptnet.ko vnet_hdr=0\necho receiver-ready\n{rx}\nrmmod ptnet\n"
        );
        let tx_script = format!("insmod /modules/ptnet.ko vnet_hdr=0\n{tx}\nrmmod ptnet\n");
        let mut rx_vm = start_guest_on(&inp, &dir, &rx_name, args_b.clone(), rx_script, stock);
        rx_vm
            .wait_for_console("receiver-ready", Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
        let tx_vm = start_guest_on(&inp, &dir, &tx_name, args_a.clone(), tx_script, stock);
        let tx_out = finish(tx_vm, &dir, &tx_name);
        let rx_out = finish(rx_vm, &dir, &rx_name);
        for (name, o) in [(&tx_name, &tx_out), (&rx_name, &rx_out)] {
            if let Err(e) = o.check() {
                panic!("guest {name}: {e}\n--- ptnetd log ---\n{}", d.log());
            }
        }
        if phase == "nm-tx-rx" {
            let want = format!("nm-tx-rx: rx {n} frames, 0 bad");
            assert!(
                rx_out.console.contains(&want),
                "no {want:?} in:\n{}",
                rx_out.console
            );
        }
    }
}

/// Issue 6, test 1: two guests on vale0, untrusted profile (the switch copies).
#[test]
fn two_guests_over_vale0_untrusted() {
    two_guests("ptnet_vale", "vale0:ga", "vale0:gb", false);
}

/// Issue 6, test 2: two guests on the two ends of a pipe, trusted profile (zero copy).
#[test]
fn two_guests_over_a_pipe_trusted() {
    two_guests("ptnet_pipe", "pipe0{1", "pipe0}1", true);
}

/// The transport a test's ports are served over: ivshmem when it runs on a stock QEMU
/// (`stock`), vhost-user on the patched one.
fn transport_for(stock: Option<&std::path::Path>) -> &'static str {
    if stock.is_some() {
        "ivshmem"
    } else {
        "vhost-user"
    }
}

/// Debian's stock QEMU binaries, each checked to be Debian's, with a short name for work
/// directories: bookworm-backports' on the host (`PTNET_STOCK_QEMU`) and unstable's in its
/// chroot (`PTNET_UNSTABLE_QEMU`, `vm-images/unstable-qemu.sh`).
fn stock_qemus() -> [(&'static str, std::path::PathBuf); 2] {
    let check = |q: std::path::PathBuf| {
        let version = std::process::Command::new(&q)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("{} --version: {e}", q.display()));
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        eprintln!("stock QEMU: {}", version.lines().next().unwrap_or_default());
        assert!(version.contains("Debian"), "not Debian's QEMU: {version}");
        q
    };
    [
        (
            "bpo",
            check(required_path(
                "PTNET_STOCK_QEMU",
                "Debian's stock qemu-system-x86_64 (ci/prereqs.sh qemu)",
            )),
        ),
        (
            "sid",
            check(required_path(
                "PTNET_UNSTABLE_QEMU",
                "Debian unstable's qemu-system-x86_64 in its chroot (vm-images/unstable-qemu.sh)",
            )),
        ),
    ]
}

/// Issue 12: ptnet guests on Debian's **stock** QEMU (no patch: bookworm-backports' 10.0 and
/// unstable's 11.1), through `ivshmem-doorbell` with `ptnetd` as its ivshmem server: two
/// guests over vale0, netmap pktgen and a C netmap program, exact counts.
#[test]
fn two_guests_over_vale0_on_stock_qemu_over_ivshmem() {
    for (name, stock) in stock_qemus() {
        let test = format!("ivs_vale_{name}");
        two_guests_on(&test, "vale0:ia", "vale0:ib", false, Some(&stock));
    }
}

/// Issue 12: the same on the two ends of a pipe (trusted: both guests map one region).
#[test]
fn two_guests_over_a_pipe_on_stock_qemu_over_ivshmem() {
    for (name, stock) in stock_qemus() {
        let test = format!("ivs_pipe_{name}");
        two_guests_on(&test, "pipe1{1", "pipe1}1", true, Some(&stock));
    }
}

/// Issue 15: a netmap application as it is, on the driver as it loads by default (the
/// virtio-net header on, `vnet_hdr=1`): `nm-tx-rx` asks the port's header length
/// (`NETMAP_REQ_PORT_HDR_GET`), registers with `NR_ACCEPT_VNET_HDR`, and names the port by
/// its interface (`netmap:eth0`), as on netmap. Two guests over vale0, exact counts and
/// payloads.
#[test]
fn nm_tx_rx_by_interface_name_with_the_header_between_two_guests() {
    let inp = inputs();
    let dir = work_dir("nm_ifname_hdr");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let args_a = d
        .serve_vm("vale0:ha", &dir.join("a.sock"), false)
        .expect("serve port a");
    let args_b = d
        .serve_vm("vale0:hb", &dir.join("b.sock"), false)
        .expect("serve port b");
    let n = FRAMES;
    let up = "insmod /modules/ptnet.ko\n\
              dev=$(basename $(ls -d /sys/bus/virtio/drivers/ptnet/virtio*/net/* | head -n1))\n\
              echo \"interface $dev\"\n";
    let rx_script =
        format!("{up}echo receiver-ready\nnm-tx-rx rx netmap:$dev -n {n} -t 200\nrmmod ptnet\n");
    let tx_script = format!("{up}nm-tx-rx tx netmap:$dev -n {n} -r 20000 -t 200\nrmmod ptnet\n");
    let mut rx_vm = start_guest(&inp, &dir, "hdr-rx", args_b, rx_script);
    rx_vm
        .wait_for_console("receiver-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    let tx_vm = start_guest(&inp, &dir, "hdr-tx", args_a, tx_script);
    let tx_out = finish(tx_vm, &dir, "hdr-tx");
    let rx_out = finish(rx_vm, &dir, "hdr-rx");
    for (name, o) in [("hdr-tx", &tx_out), ("hdr-rx", &rx_out)] {
        if let Err(e) = o.check() {
            panic!("guest {name}: {e}\n--- ptnetd log ---\n{}", d.log());
        }
        let ifname = o
            .console
            .lines()
            .find_map(|l| l.strip_prefix("interface "))
            .unwrap_or_else(|| panic!("guest {name} named no interface:\n{}", o.console));
        assert!(
            !ifname.starts_with("ptnet"),
            "guest {name}: the interface is {ifname}, the test wants a name that is not the port's"
        );
    }
    for (o, want) in [
        (&tx_out, format!("nm-tx-rx: tx {n} frames")),
        (&rx_out, format!("nm-tx-rx: rx {n} frames, 0 bad")),
    ] {
        assert!(o.console.contains(&want), "no {want:?} in:\n{}", o.console);
    }
}

/// Shell lines that load the driver with module parameters `params` (none: offloads on)
/// and bring its interface up with `addr`.
fn nic_up(addr: &str, params: &str) -> String {
    format!(
        "insmod /modules/ptnet.ko {params}\n\
         dev=$(basename $(ls -d /sys/bus/virtio/drivers/ptnet/virtio*/net/* \
         /sys/bus/pci/drivers/ptnet-ivshmem/*/net/* 2>/dev/null | head -n1))\n\
         echo \"interface $dev\"\n\
         ip link set \"$dev\" up\n\
         ip addr add {addr}/24 dev \"$dev\"\n"
    )
}

/// The SHA-256 a guest printed after `marker` (`sha256sum` output on the next line).
fn sha_after(console: &str, marker: &str) -> String {
    let at = console
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} on the console:\n{console}"));
    console[at + marker.len()..]
        .split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no SHA-256 after {marker:?}:\n{console}"))
        .to_owned()
}

/// A ptnet guest of [`ping_and_tcp`] at `addr`, the driver loaded with `params`; it unloads
/// the driver at the end, which prints its offload counters.
fn ptnet_guest(args: Vec<String>, addr: &str, params: &str) -> Guest {
    Guest {
        args,
        up: nic_up(addr, params),
        down: "rmmod ptnet\n",
        qemu: None,
    }
}

/// The offload counters a ptnet guest's driver printed when it was removed: TSO frames
/// sent, partial checksums sent, GSO frames received, partial and valid checksums received,
/// bad headers.
fn offloads(console: &str) -> [u64; 6] {
    let line = console
        .lines()
        .find_map(|l| l.split_once("ptnet0 offloads:").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no offload counters on the console:\n{console}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect();
    n.try_into()
        .unwrap_or_else(|n| panic!("unexpected offload counters {n:?} in {line:?}"))
}

/// Average bytes per frame a port sent into the switch: above 1514, frames larger than the
/// MTU (TSO frames) crossed it.
fn tx_bytes_per_frame(d: &Ptnetd, port: &str) -> u64 {
    let s = d.port_stats(port).expect("port stats");
    let (b, p) = (s["tx_bytes"].as_u64(), s["tx_packets"].as_u64());
    let (Some(b), Some(p)) = (b, p) else {
        panic!("no tx counters for {port}: {s}")
    };
    assert!(p > 0, "{port} sent nothing: {s}");
    eprintln!(
        "{port}: {p} frames, {b} bytes into the switch ({} bytes each)",
        b / p
    );
    b / p
}

/// Issue 6, test 4 (ptnet part): the kernel stack over ptnet. Two guests on vale0 ping each
/// other and move 4 MiB over TCP; the receiver's SHA-256 must equal the sender's. (The
/// server waits for a second connection before it stops: its data may still be in flight
/// when its `nc` exits.) The drivers negotiate the virtio-net header: the sender's TCP
/// goes out as TSO frames with partial checksums, which cross vale0 whole (the port's
/// frames average more than an MTU) and arrive as GSO frames.
#[test]
fn kernel_stack_ping_and_tcp_between_two_guests() {
    let dir = work_dir("ptnet_stack_daemon");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let a = d
        .serve_vm("vale0:sa", &dir.join("a.sock"), false)
        .expect("serve a");
    let b = d
        .serve_vm("vale0:sb", &dir.join("b.sock"), false)
        .expect("serve b");
    let t = ping_and_tcp(
        "ptnet_stack",
        ptnet_guest(a, "10.0.0.1", ""),
        ptnet_guest(b, "10.0.0.2", ""),
    );
    let (srv, cli) = (offloads(&t.server), offloads(&t.client));
    eprintln!("offloads: server {srv:?}, client {cli:?}");
    assert!(srv[0] > 0 && srv[1] > 0, "the sender used no TSO: {srv:?}");
    assert!(cli[2] > 0, "the receiver got no GSO frame: {cli:?}");
    assert_eq!((srv[5], cli[5]), (0, 0), "bad headers");
    assert!(tx_bytes_per_frame(&d, "vale0:sa") > 1514);
}

/// Issue 12: the kernel stack over the ivshmem transport on Debian's stock QEMU: ping and a
/// TCP transfer with matching SHA-256 between two guests, the virtio-net header (offloads)
/// on as the driver loads by default.
#[test]
fn kernel_stack_between_two_guests_on_stock_qemu_over_ivshmem() {
    for (name, stock) in stock_qemus() {
        kernel_stack_on_ivshmem(name, stock);
    }
}

/// [`kernel_stack_between_two_guests_on_stock_qemu_over_ivshmem`] on one stock QEMU.
fn kernel_stack_on_ivshmem(name: &str, stock: std::path::PathBuf) {
    let dir = work_dir(&format!("ivs_stack_daemon_{name}"));
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let serve = |port: &str, sock: &str| {
        d.serve_vm_over(port, &dir.join(sock), false, "ivshmem")
            .expect("serve over ivshmem")
    };
    let guest = |args, addr| Guest {
        qemu: Some(stock.clone()),
        ..ptnet_guest(args, addr, "")
    };
    let t = ping_and_tcp(
        &format!("ivs_stack_{name}"),
        guest(serve("vale0:sa", "a.sock"), "10.0.0.1"),
        guest(serve("vale0:sb", "b.sock"), "10.0.0.2"),
    );
    let srv = offloads(&t.server);
    assert!(srv[0] > 0, "the sender used no TSO: {srv:?}");
    for p in ["vale0:sa", "vale0:sb"] {
        let e = d.vm_entry(p).expect("vm entry");
        assert_eq!(e["transport"], "ivshmem", "{e}");
        assert_eq!(e["starts"], 1, "{e}");
    }
}

/// The same without the header (`vnet_hdr=0` on both): every frame fits an MTU and every
/// checksum is computed by the sender (the baseline of the offloads).
#[test]
fn kernel_stack_ping_and_tcp_between_two_guests_without_offloads() {
    let dir = work_dir("ptnet_stack_plain_daemon");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let a = d
        .serve_vm("vale0:sa", &dir.join("a.sock"), false)
        .expect("serve a");
    let b = d
        .serve_vm("vale0:sb", &dir.join("b.sock"), false)
        .expect("serve b");
    let t = ping_and_tcp(
        "ptnet_stack_plain",
        ptnet_guest(a, "10.0.0.1", "vnet_hdr=0"),
        ptnet_guest(b, "10.0.0.2", "vnet_hdr=0"),
    );
    assert!(
        t.server.contains("no virtio-net header (no offloads)"),
        "{}",
        t.server
    );
    assert!(tx_bytes_per_frame(&d, "vale0:sa") <= 1514);
}

/// Offloads on one side only: the switch's mismatch path. A guest with the header and one
/// without exchange TCP both ways round: TSO frames of the first are cut into segments
/// with their checksums filled in software on their way to the second, and the second's
/// frames get an empty header on their way to the first; the SHA-256s match.
#[test]
fn kernel_stack_across_the_header_mismatch_path() {
    for (phase, server_params, client_params) in [
        ("offload-to-plain", "", "vnet_hdr=0"),
        ("plain-to-offload", "vnet_hdr=0", ""),
    ] {
        let dir = work_dir(&format!("ptnet_mismatch_{phase}_daemon"));
        let d = Ptnetd::start(&dir).expect("start ptnetd");
        let a = d
            .serve_vm("vale0:ma", &dir.join("a.sock"), false)
            .expect("serve a");
        let b = d
            .serve_vm("vale0:mb", &dir.join("b.sock"), false)
            .expect("serve b");
        let t = ping_and_tcp(
            &format!("ptnet_mismatch_{phase}"),
            ptnet_guest(a, "10.0.0.1", server_params),
            ptnet_guest(b, "10.0.0.2", client_params),
        );
        if server_params.is_empty() {
            let srv = offloads(&t.server);
            eprintln!("{phase}: server offloads {srv:?}");
            assert!(srv[0] > 0, "the sender used no TSO: {srv:?}");
            assert!(tx_bytes_per_frame(&d, "vale0:ma") > 1514);
        } else {
            let cli = offloads(&t.client);
            eprintln!("{phase}: client offloads {cli:?}");
            assert_eq!(cli[5], 0, "bad headers: {cli:?}");
            assert_eq!(
                cli[2], 0,
                "GSO frames from a port without the header: {cli:?}"
            );
        }
    }
}

/// Issue 6, test 5: unloading the driver with traffic running both ways (a host client
/// sends to the guest all along; the guest's own sender is killed with frames in flight)
/// leaves neither side stuck: the daemon stops and restarts the device, and after the
/// reload the port carries traffic again in both directions.
#[test]
fn module_reload_under_traffic() {
    reload_under_traffic("ptnet_reload", None);
}

/// Issue 12: the same on the ivshmem transport, Debian's stock QEMU.
#[test]
fn module_reload_under_traffic_on_stock_qemu_over_ivshmem() {
    let (_, stock) = stock_qemus()[0].clone();
    reload_under_traffic("ivs_reload", Some(&stock));
}

/// [`module_reload_under_traffic`] on the stock QEMU `stock` over ivshmem when given.
fn reload_under_traffic(test: &str, stock: Option<&std::path::Path>) {
    let inp = inputs();
    let dir = work_dir(test);
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let transport = transport_for(stock);
    let args = d
        .serve_vm_over("vale0:g1", &dir.join("g1.sock"), false, transport)
        .expect("serve vale0:g1 to a VM");
    // The guest first makes vale0 learn the MAC its receiver will use, so that the host's
    // stream is not flooded to h2 (guests do not announce themselves).
    let script = "insmod /modules/ptnet.ko vnet_hdr=0\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n 1 --src-mac 02:70:74:00:00:22 --dst-mac 02:70:74:00:00:01 -q\n\
         echo announced\n\
         ptnet-pktgen tx -i netmap:ptnet0 -R 50000 -d 60 --src-mac 02:70:74:00:00:31 --dst-mac 02:70:74:00:00:01 -q &\n\
         sleep 3\n\
         echo killing\n\
         kill -9 $!\n\
         wait || true\n\
         echo killed\n\
         rmmod ptnet\n\
         echo unloaded-under-traffic\n\
         sleep 1\n\
         insmod /modules/ptnet.ko vnet_hdr=0\n\
         ptnet-pktgen rx -i netmap:ptnet0 --src-mac 02:70:74:00:00:22 -n 2000 -d 60 -q --json\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n 1000 -R 20000 -q --json\n\
         rmmod ptnet\n"
        .to_owned();
    let mut vm = start_guest_on(&inp, &dir, "g1", args, script, stock);
    vm.wait_for_console("announced", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    // Host → guest from now on, through the rest of the test.
    let flood = d
        .pktgen(&[
            "tx",
            "-i",
            "vale0:h1",
            "--dst-mac",
            "02:70:74:00:00:22",
            "-R",
            "20000",
            "-d",
            "120",
            "-q",
            "--json",
        ])
        .expect("host tx");
    // Guest → host after the reload. (The killed sender's frames, including those it had
    // published but the daemon had not forwarded when the device stopped, which go out
    // when the device restarts, are addressed to h1's learnt MAC: they never reach h2.)
    vm.wait_for_console("unloaded-under-traffic", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    let sink = d
        .pktgen(&[
            "rx",
            "-i",
            "vale0:h2",
            "-n",
            "1000",
            "--expect-no-loss",
            "-q",
            "--json",
            "-d",
            "200",
        ])
        .expect("host rx");
    let host_rx = wait_ok("host ptnet-pktgen rx", sink);
    eprintln!("host rx after the reload: {}", host_rx.trim());
    let outcome = finish(vm, &dir, "g1");
    let mut flood = flood;
    let _ = flood.kill();
    let _ = flood.wait();
    let log = d.log();
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{log}");
    }
    assert!(
        outcome.console.contains("\"packets\":2000"),
        "the guest did not receive 2000 frames after the reload:\n{}",
        outcome.console
    );
    let kind = if stock.is_some() { "ivshmem" } else { "ptnet" };
    let starts = log
        .matches(&format!("vale0:g1: {kind} device started"))
        .count();
    let stops = log
        .matches(&format!("vale0:g1: {kind} device stopped"))
        .count();
    assert!(
        starts >= 2 && stops >= 2,
        "expected two starts and two stops of the device, got {starts}/{stops}:\n{log}"
    );
}

/// Several rings and several open files: a port with 2 TX and 2 RX rings, and a guest
/// receiving and transmitting at the same time from two processes (two registrations of
/// the port, each syncing the rings it uses while the other's poll syncs them too), with a
/// host client at each end; exact counts both ways (frames spread over two rings may be
/// reordered, as in netmap: only the counts and payloads are checked).
#[test]
fn two_rings_and_two_open_files_at_once() {
    two_rings("ptnet_multi", None);
}

/// Issue 12: the same on the ivshmem transport, Debian's stock QEMU (a vector per ring).
#[test]
fn two_rings_and_two_open_files_on_stock_qemu_over_ivshmem() {
    let (_, stock) = stock_qemus()[0].clone();
    two_rings("ivs_multi", Some(&stock));
}

/// [`two_rings_and_two_open_files_at_once`] on the stock QEMU `stock` over ivshmem when
/// given.
fn two_rings(test: &str, stock: Option<&std::path::Path>) {
    let inp = inputs();
    let dir = work_dir(test);
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    d.ctl(&["create-port", "vale0:m", "--rings", "2"])
        .expect("create a 2-ring port");
    let transport = transport_for(stock);
    let args = d
        .serve_vm_over("vale0:m", &dir.join("m.sock"), false, transport)
        .expect("serve vale0:m to a VM");
    let n = FRAMES.to_string();
    let script = format!(
        "insmod /modules/ptnet.ko vnet_hdr=0\n\
         dmesg | grep -q 'ptnet0: 2 TX + 2 RX rings'\n\
         grep -c 'ptnet-[tr]x[01]' /proc/interrupts\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n 1 --src-mac 02:70:74:00:00:22 --dst-mac 02:70:74:00:00:01 -q\n\
         echo announced\n\
         sleep 2\n\
         ptnet-pktgen rx -i netmap:ptnet0 --src-mac 02:70:74:00:00:22 -n {n} --expect-no-loss -q --json -d 200 &\n\
         rx=$!\n\
         echo guest-ready\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n {n} -R 10000 -q --json\n\
         wait $rx\n\
         rmmod ptnet\n"
    );
    let mut vm = start_guest_on(&inp, &dir, "g1", args, script, stock);
    // The sink attaches after the guest's announcement (which floods) and before its traffic.
    vm.wait_for_console("announced", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    let sink = d
        .pktgen(&[
            "rx", "-i", "vale0:h1", "-n", &n, "--check", "--json", "-q", "-d", "200",
        ])
        .expect("host rx");
    vm.wait_for_console("guest-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    let src = d
        .pktgen(&[
            "tx",
            "-i",
            "vale0:h2",
            "-n",
            &n,
            "-R",
            "5000",
            "--dst-mac",
            "02:70:74:00:00:22",
            "-q",
            "--json",
        ])
        .expect("host tx");
    let host_tx = wait_ok("host ptnet-pktgen tx", src);
    let host_rx = wait_ok("host ptnet-pktgen rx", sink);
    eprintln!("host tx: {}\nhost rx: {}", host_tx.trim(), host_rx.trim());
    let outcome = finish(vm, &dir, "g1");
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{}", d.log());
    }
    let r: serde_json::Value = serde_json::from_str(host_rx.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("host rx printed no JSON ({e}): {host_rx}"));
    assert_eq!(r["good"].as_u64(), Some(FRAMES as u64), "host rx: {r}");
    assert_eq!(r["bad_payload"].as_u64(), Some(0), "host rx: {r}");
}

/// Kernel stack → netmap → kernel stack on one device: a guest pings over its interface, a
/// netmap application then takes the rings (the kernel stack gives them up) and sends
/// frames, and once it closes the interface works again.
#[test]
fn rings_hand_over_between_the_kernel_stack_and_netmap() {
    let inp = inputs();
    let dir = work_dir("ptnet_handover");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let args_a = d
        .serve_vm("vale0:ha", &dir.join("a.sock"), false)
        .expect("serve a");
    let args_b = d
        .serve_vm("vale0:hb", &dir.join("b.sock"), false)
        .expect("serve b");
    let server = format!(
        "{}echo server-ready\n\
         nc -l -p 5001 > /dev/null\n\
         cat /proc/net/dev\n",
        nic_up("10.0.0.1", "vnet_hdr=0")
    );
    let client = format!(
        "{}ping -c 2 -W 10 10.0.0.1\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n {FRAMES} -R 20000 -q --json\n\
         echo netmap-done\n\
         ping -c 2 -W 10 10.0.0.1\n\
         nc 10.0.0.1 5001 < /dev/null\n\
         cat /proc/net/dev\n",
        nic_up("10.0.0.2", "vnet_hdr=0")
    );
    let mut a = start_guest(&inp, &dir, "server", args_a, server);
    a.wait_for_console("server-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let b = start_guest(&inp, &dir, "client", args_b, client);
    let b_out = finish(b, &dir, "client");
    let a_out = finish(a, &dir, "server");
    for (name, o) in [("client", &b_out), ("server", &a_out)] {
        if let Err(e) = o.check() {
            panic!("guest {name}: {e}\n--- ptnetd log ---\n{}", d.log());
        }
    }
    let ok = b_out
        .console
        .matches("2 packets transmitted, 2 packets received")
        .count();
    assert_eq!(
        ok, 2,
        "ping before and after the netmap application:\n{}",
        b_out.console
    );
    let stats = d.port_stats("vale0:hb").expect("stats of vale0:hb");
    assert!(
        stats["tx_packets"].as_u64().unwrap_or(0) >= FRAMES as u64,
        "the netmap application's frames did not leave: {stats}"
    );
}
/// Shell lines that bring the guest's virtio-net interface up with `addr` (stock driver).
fn virtio_net_up(addr: &str) -> String {
    format!(
        "dev=$(basename $(ls -d /sys/bus/virtio/drivers/virtio_net/virtio*/net/* | head -n1))\n\
         echo \"interface $dev (virtio_net)\"\n\
         echo \"mac $(cat /sys/class/net/$dev/address)\"\n\
         ip link set \"$dev\" up\n\
         ip addr add {addr}/24 dev \"$dev\"\n"
    )
}

/// One guest of [`ping_and_tcp`]: its device arguments, the shell lines that bring its
/// interface up at its address, and those it runs at the end.
struct Guest {
    args: Vec<String>,
    up: String,
    down: &'static str,
    /// Another QEMU binary than `PTNET_QEMU`'s.
    qemu: Option<std::path::PathBuf>,
}

/// A stock virtio_net guest of [`ping_and_tcp`] at `addr`.
fn virtio_net_guest(args: Vec<String>, addr: &str) -> Guest {
    Guest {
        args,
        up: virtio_net_up(addr),
        down: "",
        qemu: None,
    }
}

/// What [`ping_and_tcp`] saw: both consoles, and the transfer's time on the client.
struct Transfer {
    server: String,
    client: String,
}

/// Bytes [`ping_and_tcp`] moves: 4 MiB, or `PTNET_TCP_MIB` MiB (for a longer, better timed
/// transfer when comparing rates by hand).
fn tcp_bytes() -> u64 {
    std::env::var("PTNET_TCP_MIB")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
        .filter(|m| (1..=128).contains(m))
        .unwrap_or(4)
        << 20
}

/// Ping and a 4 MiB ([`tcp_bytes`]) TCP transfer from a server guest (its interface up at 10.0.0.1) to a
/// client guest (10.0.0.2) across vale0; the SHA-256s must match. Prints the transfer's
/// rate as the client timed it (TCG guests: a comparison between runs, not a benchmark).
fn ping_and_tcp(test: &str, server: Guest, client: Guest) -> Transfer {
    let inp = inputs();
    let dir = work_dir(test);
    let bytes = tcp_bytes();
    let server_script = format!(
        "{}dd if=/dev/urandom of=/tmp/f bs=64k count={} 2>/dev/null\n\
         echo sent-sha\n\
         sha256sum /tmp/f\n\
         echo server-ready\n\
         nc -l -p 5000 -e cat /tmp/f\n\
         nc -l -p 5001 > /dev/null\n\
         cat /proc/net/dev\n{}",
        server.up,
        bytes >> 16,
        server.down
    );
    let client_script = format!(
        "{}ping -c 3 -W 10 10.0.0.1\n\
         t0=$(cut -d' ' -f1 /proc/uptime)\n\
         nc 10.0.0.1 5000 > /tmp/f\n\
         t1=$(cut -d' ' -f1 /proc/uptime)\n\
         echo \"transfer-time $t0 $t1\"\n\
         echo got-sha\n\
         sha256sum /tmp/f\n\
         nc 10.0.0.1 5001 < /dev/null\n\
         cat /proc/net/dev\n{}",
        client.up, client.down
    );
    let mut a = start_guest_on(
        &inp,
        &dir,
        "server",
        server.args,
        server_script,
        server.qemu.as_deref(),
    );
    a.wait_for_console("server-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let b = start_guest_on(
        &inp,
        &dir,
        "client",
        client.args,
        client_script,
        client.qemu.as_deref(),
    );
    let b_out = finish(b, &dir, "client");
    let a_out = finish(a, &dir, "server");
    for (name, o) in [("client", &b_out), ("server", &a_out)] {
        if let Err(e) = o.check() {
            panic!("guest {name}: {e}");
        }
    }
    assert!(
        b_out
            .console
            .contains("3 packets transmitted, 3 packets received"),
        "ping failed:\n{}",
        b_out.console
    );
    let sent = sha_after(&a_out.console, "sent-sha");
    let got = sha_after(&b_out.console, "got-sha");
    assert_eq!(
        sent, got,
        "the TCP transfer corrupted or truncated the file"
    );
    let secs = b_out
        .console
        .lines()
        .find_map(|l| l.strip_prefix("transfer-time "))
        .and_then(|t| {
            let (t0, t1) = t.trim().split_once(' ')?;
            Some(t1.parse::<f64>().ok()? - t0.parse::<f64>().ok()?)
        })
        .unwrap_or_else(|| panic!("no transfer time on the client's console"));
    eprintln!(
        "{test}: {} MiB over TCP in {secs:.2} s: {:.1} MB/s",
        bytes >> 20,
        bytes as f64 / secs.max(0.01) / 1e6
    );
    Transfer {
        server: a_out.console,
        client: b_out.console,
    }
}

/// Issue 6, test 4 (mixed part): a ptnet guest and a guest with the stock virtio-net driver
/// on the same switch, ping and TCP both through the kernel stacks.
#[test]
fn kernel_stack_between_a_ptnet_guest_and_a_virtio_net_guest() {
    let dir = work_dir("mixed_daemon");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let ptnet = d
        .serve_vm("vale0:p", &dir.join("p.sock"), false)
        .expect("serve ptnet");
    let vnet = d
        .serve_virtio_net("vale0:v", &dir.join("v.sock"))
        .expect("serve virtio-net");
    let t = ping_and_tcp(
        "mixed",
        ptnet_guest(ptnet, "10.0.0.1", ""),
        virtio_net_guest(vnet, "10.0.0.2"),
    );
    // Both ports carry the header: the ptnet guest's TSO frames reach the virtio_net guest
    // whole.
    let srv = offloads(&t.server);
    eprintln!("ptnet guest offloads: {srv:?}");
    assert!(srv[0] > 0, "the ptnet guest sent no TSO frame: {srv:?}");
    assert_eq!(srv[5], 0, "bad headers: {srv:?}");
}

/// Issue 4: two unmodified guests (stock `virtio_net` over `-netdev vhost-user` +
/// `virtio-net-pci`) on vale0: ping and a TCP transfer with matching SHA-256.
#[test]
fn two_virtio_net_guests_over_vale0() {
    let dir = work_dir("vnet_daemon");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let a = d
        .serve_virtio_net("vale0:va", &dir.join("a.sock"))
        .expect("serve virtio-net a");
    let b = d
        .serve_virtio_net("vale0:vb", &dir.join("b.sock"))
        .expect("serve virtio-net b");
    ping_and_tcp(
        "vnet",
        virtio_net_guest(a, "10.0.0.1"),
        virtio_net_guest(b, "10.0.0.2"),
    );
}

/// Issue 18: the user guide says any QEMU will do for a virtio-net port. Two stock
/// `virtio_net` guests on Debian's own `qemu-system-x86_64` (`PTNET_STOCK_QEMU`: tier 3 sets it
/// to bookworm-backports' binary, not the patched build): ping and a TCP transfer over vale0.
#[test]
fn two_virtio_net_guests_on_debians_stock_qemu() {
    let stock = required_path(
        "PTNET_STOCK_QEMU",
        "Debian's stock qemu-system-x86_64 (ci/prereqs.sh qemu)",
    );
    let version = std::process::Command::new(&stock)
        .arg("--version")
        .output()
        .expect("stock QEMU --version");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    eprintln!("stock QEMU: {}", version.lines().next().unwrap_or_default());
    assert!(version.contains("Debian"), "not Debian's QEMU: {version}");
    let dir = work_dir("vnet_stock_daemon");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let guest = |port: &str, sock: &str, addr: &str| Guest {
        qemu: Some(stock.clone()),
        ..virtio_net_guest(
            d.serve_virtio_net(port, &dir.join(sock))
                .expect("serve virtio-net"),
            addr,
        )
    };
    ping_and_tcp(
        "vnet_stock",
        guest("vale0:sa", "a.sock", "10.0.0.1"),
        guest("vale0:sb", "b.sock", "10.0.0.2"),
    );
}

/// Issue 4: an unmodified guest (stock `virtio_net`) and a host client across vale0, both
/// directions, exact counts and payload checks (`ptnet-pktgen -i packet:eth0` in the guest).
#[test]
fn virtio_net_guest_and_host_client_over_vale0() {
    let inp = inputs();
    let dir = work_dir("vnet_host");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let args = d
        .serve_virtio_net("vale0:v1", &dir.join("v1.sock"))
        .expect("serve virtio-net");
    let n = FRAMES.to_string();
    let sink = host_sink(&d, "vale0:h1", &n, "200");
    let script = format!(
        // No IPv6: its router and neighbour solicitations would be flooded to the sink. A
        // socket buffer for a whole burst, and a slow host sender (500 frames/s): a TCG guest
        // starved of CPU by other tests must not drop from its few virtio RX buffers. The
        // receiver is ready once its packet socket is bound and running (/proc/net/packet:
        // Iface and R columns): frames that arrive before have no taker and are dropped by
        // the guest's stack (this raced with the host's sender, 3-6 frames lost in 1 of 4
        // runs).
        "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6\n\
         echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6\n\
         echo 16777216 > /proc/sys/net/core/rmem_max\n\
         {}ptnet-pktgen tx -i packet:eth0 --dst-mac 02:70:74:00:00:02 -n {n} -R 20000 -q --json\n\
         ptnet-pktgen rx -i packet:eth0 -n {n} --expect-no-loss -q --json -d 200 &\n\
         rx=$!\n\
         i=0\n\
         while [ $i -lt 100 ] && ! awk 'NR > 1 && $5 != 0 && $6 == 1 {{ f = 1 }} END {{ exit !f }}' /proc/net/packet; do sleep 0.1; i=$((i + 1)); done\n\
         echo guest-rx-ready\n\
         wait $rx\n",
        virtio_net_up("10.0.0.9")
    );
    let mut vm = start_guest(&inp, &dir, "g1", args, script);
    let host_rx = wait_ok("host ptnet-pktgen rx", sink);
    eprintln!("host rx: {}", host_rx.trim());
    vm.wait_for_console("guest-rx-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    // To the guest's own MAC, which vale0 learnt from its frames.
    let mac = guest_mac(&vm.console().expect("console"));
    let src = d
        .pktgen(&[
            "tx",
            "-i",
            "vale0:h2",
            "-n",
            &n,
            "-R",
            "500",
            "--dst-mac",
            &mac,
            "-q",
            "--json",
        ])
        .expect("host tx");
    let host_tx = wait_ok("host ptnet-pktgen tx", src);
    eprintln!("host tx: {}", host_tx.trim());
    let outcome = finish(vm, &dir, "g1");
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{}", d.log());
    }
}

/// The MAC a guest printed as `mac XX:XX:...` (see `virtio_net_up`).
fn guest_mac(console: &str) -> String {
    console
        .lines()
        .find_map(|l| l.strip_prefix("mac "))
        .map(|m| m.trim().to_owned())
        .unwrap_or_else(|| panic!("the guest printed no MAC:\n{console}"))
}

/// A hostile guest application: garbage in every index, slot, ring header and ring offset
/// it can reach, interleaved with syncs and polls, and malformed control requests (all must
/// be refused). The guest kernel must not oops and the daemon must keep serving. The slots'
/// buffer indices the application scrambled stay scrambled, as in netmap (an application
/// may move buffers between slots); a driver reload restarts the device, whose start
/// restores the port's layout, and then a well-behaved application exchanges frames with a
/// host client through the same port.
#[test]
fn hostile_guest_application_does_not_hurt_the_driver_or_the_daemon() {
    let inp = inputs();
    let dir = work_dir("ptnet_hostile");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let args = d
        .serve_vm("vale0:evil", &dir.join("evil.sock"), false)
        .expect("serve vale0:evil");
    let n = FRAMES.to_string();
    let sink = host_sink(&d, "vale0:h1", &n, "300");
    let script = format!(
        "insmod /modules/ptnet.ko vnet_hdr=0\n\
         nm-hostile ptnet0 -n 20000 -s 7\n\
         nm-hostile ptnet0 -n 20000 -s 8\n\
         if dmesg | grep -E 'BUG|Oops|WARNING|general protection'; then exit 1; fi\n\
         echo hostile-done\n\
         rmmod ptnet\n\
         insmod /modules/ptnet.ko vnet_hdr=0\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n {n} -R 20000 -q --json\n\
         rmmod ptnet\n"
    );
    let vm = start_guest(&inp, &dir, "g1", args, script);
    let outcome = finish(vm, &dir, "g1");
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{}", d.log());
    }
    let host_rx = wait_ok("host ptnet-pktgen rx", sink);
    eprintln!("host rx after the hostile run: {}", host_rx.trim());
    assert!(
        outcome.console.contains("0 accepted"),
        "a malformed request was accepted:\n{}",
        outcome.console
    );
}

/// A hostile peer of the offloads: a guest application (`nm-hostile -v`, registered with
/// `NR_ACCEPT_VNET_HDR`) broadcasts 20 000 TCP/IPv4 frames behind garbage virtio-net
/// headers, which vale0 carries unchanged to a guest whose kernel stack uses the header (to
/// its driver they are what a hostile host could write). The receiving kernel must not oops
/// or warn, its driver must count the headers the kernel refused, and afterwards the two
/// guests ping each other through the same ports.
#[test]
fn garbage_virtio_net_headers_from_a_peer_are_refused_or_survived() {
    let inp = inputs();
    let dir = work_dir("ptnet_hostile_hdr");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    let args_a = d
        .serve_vm("vale0:va", &dir.join("a.sock"), false)
        .expect("serve a");
    let args_b = d
        .serve_vm("vale0:vb", &dir.join("b.sock"), false)
        .expect("serve b");
    let victim = format!(
        "{}echo victim-ready\n\
         nc -l -p 5001 > /dev/null\n\
         cat /proc/net/dev\n\
         if dmesg | grep -E 'BUG|Oops|WARNING|general protection'; then exit 1; fi\n\
         rmmod ptnet\n",
        nic_up("10.0.0.1", "")
    );
    let attacker = "insmod /modules/ptnet.ko\n\
         nm-hostile ptnet0 -v -n 20000 -s 11\n\
         dev=$(basename $(ls -d /sys/bus/virtio/drivers/ptnet/virtio*/net/* | head -n1))\n\
         ip link set \"$dev\" up\n\
         ip addr add 10.0.0.2/24 dev \"$dev\"\n\
         ping -c 3 -W 10 10.0.0.1\n\
         nc 10.0.0.1 5001 < /dev/null\n"
        .to_owned();
    let mut a = start_guest(&inp, &dir, "victim", args_a, victim);
    a.wait_for_console("victim-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let b = start_guest(&inp, &dir, "attacker", args_b, attacker);
    let b_out = finish(b, &dir, "attacker");
    let a_out = finish(a, &dir, "victim");
    for (name, o) in [("attacker", &b_out), ("victim", &a_out)] {
        if let Err(e) = o.check() {
            panic!("guest {name}: {e}\n--- ptnetd log ---\n{}", d.log());
        }
    }
    assert!(
        b_out
            .console
            .contains("nm-hostile: 20000 frames behind garbage headers"),
        "{}",
        b_out.console
    );
    assert!(
        b_out
            .console
            .contains("3 packets transmitted, 3 packets received"),
        "no ping after the garbage:\n{}",
        b_out.console
    );
    let v = offloads(&a_out.console);
    eprintln!("victim's offload counters: {v:?}");
    assert!(v[5] > 0, "the kernel refused no header: {v:?}");
}

/// A veth pair whose far end is in a network namespace of this test; removed on drop.
struct NsVeth {
    ns: String,
    host_if: String,
}

impl NsVeth {
    fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let ns = format!("ptvm-{id}-{tag}");
        let host_if = format!("pv{id}{tag}");
        let peer = format!("pw{id}{tag}");
        let run = |args: &[&str]| {
            let st = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("run ip");
            assert!(st.success(), "ip {} failed (root needed)", args.join(" "));
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .status();
        run(&["netns", "add", &ns]);
        run(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["link", "set", &peer, "netns", &ns]);
        run(&["link", "set", &host_if, "up"]);
        run(&["-n", &ns, "link", "set", &peer, "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        run(&["-n", &ns, "addr", "add", "10.77.0.2/24", "dev", &peer]);
        NsVeth { ns, host_if }
    }

    fn peer(&self) -> String {
        self.host_if.replacen("pv", "pw", 1)
    }
}

impl Drop for NsVeth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .status();
    }
}

/// Issue 7: a host interface given directly to one VM (netmap's `netmap:eth0`): the guest's
/// ptnet device is a direct NIC port on a veth whose far end is in a namespace. The guest's
/// kernel stack pings the namespace, then netmap pktgen in the guest sends frames that a
/// receiver on the far end counts exactly (the driver loaded with `vnet_hdr=0`: the port
/// would take the header, which pktgen does not accept).
#[test]
fn a_host_interface_given_directly_to_a_vm() {
    let inp = inputs();
    let dir = work_dir("ptnet_direct_nic");
    let veth = NsVeth::new("d");
    let d = Ptnetd::start(&dir).expect("start ptnetd");
    d.ctl(&["create-nic-port", &veth.host_if])
        .expect("create the direct NIC port");
    let args = d
        .serve_vm(&veth.host_if, &dir.join("nic.sock"), false)
        .expect("serve the NIC port to a VM");
    let n = FRAMES.to_string();
    let sink = std::process::Command::new("ip")
        .args(["netns", "exec", &veth.ns])
        .arg(ptnet_vmtest::daemon::host_bin("ptnet-pktgen").expect("ptnet-pktgen"))
        .args([
            "rx",
            "-i",
            &format!("packet:{}", veth.peer()),
            "-n",
            &n,
            "--expect-no-loss",
            "-q",
            "--json",
            "-d",
            "200",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the receiver in the namespace");
    let script = format!(
        "{}ping -c 3 -W 10 10.77.0.2\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n {n} -R 10000 -q --json\n\
         rmmod ptnet\n",
        nic_up("10.77.0.1", "vnet_hdr=0")
    );
    let vm = start_guest(&inp, &dir, "g1", args, script);
    let outcome = finish(vm, &dir, "g1");
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{}", d.log());
    }
    assert!(
        outcome
            .console
            .contains("3 packets transmitted, 3 packets received"),
        "ping through the direct NIC port failed:\n{}",
        outcome.console
    );
    let rx = wait_ok("ptnet-pktgen rx in the namespace", sink);
    eprintln!("namespace rx: {}", rx.trim());
}

/// Issue 4: two unmodified guests on virtio-net ports that `ptnetd` serves from its
/// configuration; the daemon is killed (SIGKILL) and started again under the client's
/// pings. QEMU reconnects (`reconnect-ms` in the arguments `ptnetctl qemu-args` prints),
/// the restarted daemon serves the same ports, and the pings get through again without a
/// guest reboot.
#[test]
fn virtio_net_guests_keep_talking_across_a_daemon_restart() {
    let inp = inputs();
    let dir = work_dir("vnet_restart");
    let (mut d, args1, args2) = daemon_serving_two_vms(
        &dir,
        [
            (
                "r1",
                "device = \"virtio-net\"\nmac = \"02:00:00:00:07:01\"\n",
            ),
            (
                "r2",
                "device = \"virtio-net\"\nmac = \"02:00:00:00:07:02\"\n",
            ),
        ],
    );
    let server = format!(
        "{}echo server-ready\nnc -l -p 5001 > /dev/null\n",
        virtio_net_up("10.0.0.2")
    );
    let client = format!(
        "{}{PINGS_ACROSS}nc 10.0.0.2 5001 < /dev/null\n",
        virtio_net_up("10.0.0.1")
    );
    let mut a = start_guest(&inp, &dir, "server", args2, server);
    a.wait_for_console("server-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = start_guest(&inp, &dir, "client", args1, client);
    b.wait_for_console("before-restart", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    std::thread::sleep(Duration::from_secs(3));
    d.restart().expect("restart ptnetd");
    let b_out = finish(b, &dir, "client");
    let a_out = finish(a, &dir, "server");
    for (name, o) in [("client", &b_out), ("server", &a_out)] {
        if let Err(e) = o.check() {
            panic!("guest {name}: {e}\n--- ptnetd log ---\n{}", d.log());
        }
    }
    assert_pings_came_back(&b_out.console, &d, "the restart");
}

/// The client side of the restart tests: 3 pings to 10.0.0.2, `before-restart`, then 80
/// pings 0.25 s apart (20 s, through whatever the test does meanwhile) and how many of the
/// last 10 were answered.
const PINGS_ACROSS: &str = "ping -c 3 -W 10 10.0.0.2\n\
     echo before-restart\n\
     ping -c 80 -i 0.25 -W 1 10.0.0.2 > /tmp/p || true\n\
     tail -n 3 /tmp/p\n\
     echo \"answered-at-the-end $(grep -c 'seq=7[0-9] ' /tmp/p)\"\n";

/// At least half of the last 10 pings of [`PINGS_ACROSS`] were answered after `what`.
fn assert_pings_came_back(console: &str, d: &Ptnetd, what: &str) {
    let answered: u32 = console
        .lines()
        .find_map(|l| l.strip_prefix("answered-at-the-end "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ping summary:\n{console}"));
    assert!(
        answered >= 5,
        "only {answered} of the last 10 pings were answered after {what}:\n{console}\n--- ptnetd log ---\n{}",
        d.log()
    );
}

/// A `ptnetd` started from a configuration that serves ports `vale0:<name>` to two VMs (a
/// ptnet device unless `extra`, more `[[vm]]` keys, says otherwise) on sockets in `dir`: the
/// daemon a restart test kills and starts again, and the QEMU arguments of the two VMs.
fn daemon_serving_two_vms(
    dir: &std::path::Path,
    vms: [(&str, &str); 2],
) -> (Ptnetd, Vec<String>, Vec<String>) {
    let mut toml = format!(
        "[daemon]\nsocket = \"{}\"\n\n[[switch]]\nname = \"vale0\"\n",
        Ptnetd::socket_in(dir).display()
    );
    for (name, extra) in vms {
        toml += &format!("\n[[vm]]\nport = \"vale0:{name}\"\nsocket = \"{name}.sock\"\n{extra}");
    }
    let d = Ptnetd::start_with_config(dir, &toml).expect("start ptnetd from a config");
    let args = |name: &str| {
        d.qemu_args(&format!("vale0:{name}"))
            .unwrap_or_else(|e| panic!("qemu args of vale0:{name}: {e}"))
    };
    let (a, b) = (args(vms[0].0), args(vms[1].0));
    (d, a, b)
}

/// Sends one HMP command to a guest's monitor socket (`-monitor unix:...`).
fn hmp(sock: &std::path::Path, cmd: &str) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("monitor {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut banner = [0u8; 512];
    let _ = s.read(&mut banner);
    s.write_all(format!("{cmd}\n").as_bytes())
        .unwrap_or_else(|e| panic!("monitor {}: {e}", sock.display()));
    // The prompt after the command: it ran.
    let _ = s.read(&mut banner);
}

/// Issue 5 (lifecycle): two ptnet guests whose ports `ptnetd` serves from its configuration
/// talk through the kernel stack; the daemon is killed (SIGKILL) under the client's pings
/// and started again, and later the client VM is paused for two seconds (its daemon stops
/// the device meanwhile). QEMU (`reconnect-ms`, qemu-patches 0009) connects to the new
/// daemon, starts the device again and raises a configuration interrupt (also at the
/// resume); each driver gives the daemon its CSB, waits for the port's memory, checks it
/// is the same port and takes the rings up where the daemon has them. The pings get through
/// again and a TCP transfer afterwards arrives intact, without a guest reboot or a driver
/// reload.
#[test]
fn ptnet_guests_keep_talking_across_a_daemon_restart_and_a_pause() {
    let inp = inputs();
    let dir = work_dir("ptnet_restart");
    let (mut d, args1, args2) = daemon_serving_two_vms(&dir, [("k1", ""), ("k2", "")]);
    assert!(
        args1.iter().any(|a| a.contains("reconnect-ms=")),
        "ptnetctl qemu-args prints no reconnect-ms: {args1:?}"
    );
    let server = format!(
        "{}dd if=/dev/urandom of=/tmp/f bs=64k count=16 2>/dev/null\n\
         echo sent-sha\n\
         sha256sum /tmp/f\n\
         echo server-ready\n\
         nc -l -p 5000 -e cat /tmp/f\n\
         nc -l -p 5001 > /dev/null\n\
         rmmod ptnet\n",
        nic_up("10.0.0.2", "")
    );
    let client = format!(
        "{}{PINGS_ACROSS}nc 10.0.0.2 5000 > /tmp/f\n\
         echo got-sha\n\
         sha256sum /tmp/f\n\
         nc 10.0.0.2 5001 < /dev/null\n\
         rmmod ptnet\n",
        nic_up("10.0.0.1", "")
    );
    let mut a = start_guest(&inp, &dir, "server", args2, server);
    a.wait_for_console("server-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    let monitor = dir.join("client.monitor");
    let mut args1 = args1;
    args1.extend([
        "-monitor".to_owned(),
        format!("unix:{},server=on,wait=off", monitor.display()),
    ]);
    let mut b = start_guest(&inp, &dir, "client", args1, client);
    b.wait_for_console("before-restart", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    std::thread::sleep(Duration::from_secs(3));
    d.restart().expect("restart ptnetd");
    std::thread::sleep(Duration::from_secs(5));
    hmp(&monitor, "stop");
    std::thread::sleep(Duration::from_secs(2));
    hmp(&monitor, "cont");
    // The daemon sees the resumed VM's device running and mapped again, with the header.
    let mut vm = serde_json::Value::Null;
    for _ in 0..100 {
        vm = d.vm_entry("vale0:k1").expect("ptnetctl --json list");
        if vm["running"] == true && vm["mem_ready"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        vm["running"] == true && vm["mem_ready"] == true && vm["vnet_hdr_len"] == 12,
        "vale0:k1 after the resume: {vm}\n--- ptnetd log ---\n{}",
        d.log()
    );
    let b_out = finish(b, &dir, "client");
    let a_out = finish(a, &dir, "server");
    // The server recovers once (the restart), the client twice (the restart, the resume).
    for (name, o, n) in [("client", &b_out, 2), ("server", &a_out, 1)] {
        if let Err(e) = o.check() {
            panic!("guest {name}: {e}\n--- ptnetd log ---\n{}", d.log());
        }
        assert!(
            o.console.contains(&format!(
                "backend back, rings resynchronised (recovery {n})"
            )) && o.console.contains(&format!("{n} backend recoveries")),
            "guest {name}'s driver did not recover {n} time(s):\n{}\n--- ptnetd log ---\n{}",
            o.console,
            d.log()
        );
    }
    assert_pings_came_back(&b_out.console, &d, "the restart and the pause");
    assert_eq!(
        sha_after(&a_out.console, "sent-sha"),
        sha_after(&b_out.console, "got-sha"),
        "the TCP transfer after the restart corrupted or truncated the file"
    );
}

/// Issue 5 (lifecycle), netmap side: a netmap application keeps its registration and its
/// mapping of the port across a `ptnetd` restart. The receiver guest runs one `ptnet-pktgen
/// rx` for 2×2000 frames; the sender sends 2000, the daemon is killed and restarted (the
/// receiver's `poll()` sleeps while its driver has no backend), and 15 s later the sender
/// sends 2000 more from a new run. The receiver, on the same open file and mapping, must
/// count all 4000.
#[test]
fn a_netmap_application_keeps_its_rings_across_a_daemon_restart() {
    let inp = inputs();
    let dir = work_dir("ptnet_restart_netmap");
    let (mut d, args_tx, args_rx) = daemon_serving_two_vms(&dir, [("n1", ""), ("n2", "")]);
    let half = 2000;
    let rx_script = format!(
        "insmod /modules/ptnet.ko vnet_hdr=0\n\
         echo receiver-ready\n\
         ptnet-pktgen rx -i netmap:ptnet0 -n {} -d 150 --json > /tmp/r\n\
         cat /tmp/r\n\
         echo \"rx-packets $(grep -o '\"packets\":[0-9]*' /tmp/r | cut -d: -f2)\"\n\
         rmmod ptnet\n",
        2 * half
    );
    let tx_script = format!(
        "insmod /modules/ptnet.ko vnet_hdr=0\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n {half} -R 5000 --json\n\
         echo first-half-sent\n\
         sleep 15\n\
         ptnet-pktgen tx -i netmap:ptnet0 -n {half} -R 5000 --json\n\
         rmmod ptnet\n"
    );
    let mut rx = start_guest(&inp, &dir, "rx", args_rx, rx_script);
    rx.wait_for_console("receiver-ready", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    let mut tx = start_guest(&inp, &dir, "tx", args_tx, tx_script);
    tx.wait_for_console("first-half-sent", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n--- ptnetd log ---\n{}", d.log()));
    std::thread::sleep(Duration::from_secs(2));
    d.restart().expect("restart ptnetd");
    let tx_out = finish(tx, &dir, "tx");
    let rx_out = finish(rx, &dir, "rx");
    for (name, o) in [("tx", &tx_out), ("rx", &rx_out)] {
        if let Err(e) = o.check() {
            panic!("guest {name}: {e}\n--- ptnetd log ---\n{}", d.log());
        }
        assert!(
            o.console.contains("1 backend recoveries"),
            "guest {name}'s driver did not recover once:\n{}",
            o.console
        );
    }
    let got: u64 = rx_out
        .console
        .lines()
        .find_map(|l| l.strip_prefix("rx-packets "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no receiver count:\n{}", rx_out.console));
    assert_eq!(
        got,
        2 * half,
        "the receiver's netmap rings did not come back intact:\n{}\n--- ptnetd log ---\n{}",
        rx_out.console,
        d.log()
    );
}

/// Issue 13, item 9: a hostile device. Seven ptnet devices whose config spaces lie to the
/// driver (`ptnet-device`'s `ptnet-hostile-device` example: buffer sizes, ring and slot counts,
/// the `netmap_if` outside the memory, memory beyond the BAR), all in one guest: the driver
/// binds none of them and says why for each, the kernel neither oopses nor warns, and the
/// module unloads.
#[test]
fn the_driver_refuses_devices_that_lie_about_their_geometry() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let inp = inputs();
    let dir = work_dir("ptnet_hostile_device");
    let bin = required_path(
        "PTNET_HOSTILE_DEVICE",
        "the ptnet-hostile-device example of ptnet-device (ci/tier3-vm.sh builds it)",
    );
    let log = std::fs::File::create(dir.join("hostile-device.log")).expect("log file");
    let mut liar = Command::new(bin)
        .arg(&dir)
        .arg("300")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start ptnet-hostile-device");
    let mut lies = Vec::new();
    let mut args = Vec::new();
    for line in BufReader::new(liar.stdout.take().expect("stdout")).lines() {
        let line = line.expect("read ptnet-hostile-device");
        if line == "ready" {
            break;
        }
        let rest = line.strip_prefix("lie ").expect("a lie line");
        let (name, qemu) = rest.split_once(' ').expect("name and arguments");
        lies.push(name.to_owned());
        args.extend(qemu.split('\t').map(str::to_owned));
    }
    assert_eq!(lies.len(), 7, "{lies:?}");
    let script = "insmod /modules/ptnet.ko\n\
         echo \"bound $(ls -d /sys/bus/virtio/drivers/ptnet/virtio* 2>/dev/null | wc -l)\"\n\
         echo \"refused $(dmesg | grep -cE 'ptnet virtio[0-9]+: (bad geometry|mem_size|ring [0-9]+ has)')\"\n\
         rmmod ptnet\n\
         echo unloaded\n"
        .to_owned();
    let vm = start_guest(&inp, &dir, "guest", args, script);
    let outcome = finish(vm, &dir, "guest");
    let _ = liar.kill();
    let _ = liar.wait();
    if let Err(e) = outcome.check() {
        panic!("{e}");
    }
    let console = &outcome.console;
    assert!(
        console.contains("bound 0"),
        "a lying device was bound:\n{console}"
    );
    assert!(
        console.contains("refused 7"),
        "not every lie refused:\n{console}"
    );
    assert!(console.contains("unloaded"), "{console}");
    for bad in [
        "Oops",
        "BUG:",
        "WARNING:",
        "Kernel panic",
        "general protection",
        "Call Trace",
    ] {
        assert!(!console.contains(bad), "{bad} on the console:\n{console}");
    }
}

/// Issue 18, libvirt: a ptnet guest (the patched QEMU as the domain's emulator, the device
/// through `<qemu:commandline>`) and a stock virtio_net guest (libvirt's own
/// `<interface type='vhostuser'>` on Debian's QEMU) defined from `ptnetctl libvirt-xml
/// --domain` and started by the system libvirtd, whose QEMU runs as `libvirt-qemu`: it
/// reaches the daemon's sockets only through their group (`socket_group = "ptnet"`, of which
/// `ci/prereqs.sh libvirt` makes `libvirt-qemu` a member). Ping and TCP across vale0, then
/// `virsh destroy` of the ptnet guest and its port is reclaimed.
#[test]
fn libvirt_domains_of_both_kinds_on_vale0() {
    use ptnet_vmtest::libvirt::{Domain, Libvirtd};
    let inp = inputs();
    let patched = required_path(
        "PTNET_QEMU",
        "the patched QEMU (qemu-patches/build-qemu.sh)",
    );
    let dir = work_dir("libvirt");
    let _libvirtd = Libvirtd::ensure(&dir).unwrap_or_else(|e| panic!("{e}"));
    let d = Ptnetd::start_with_config(
        &dir,
        &format!(
            "[daemon]\nsocket = \"{}\"\nsocket_group = \"ptnet\"\nsocket_mode = \"0660\"\n",
            Ptnetd::socket_in(&dir).display()
        ),
    )
    .expect("start ptnetd");
    d.ctl(&["serve-vm", "vale0:lp", "--socket", "lp.sock"])
        .expect("serve-vm");
    d.ctl(&["serve-virtio-net", "vale0:lv", "--socket", "lv.sock"])
        .expect("serve-virtio-net");
    // libvirt hands the kernel to its QEMU user (and gives it back): a copy of our own.
    let kernel = dir.join("bzImage");
    std::fs::copy(&inp.kernel, &kernel).expect("copy the kernel");
    let accel = match ptnet_vmtest::Accel::from_env().expect("PTNET_ACCEL") {
        ptnet_vmtest::Accel::Tcg => "tcg",
        ptnet_vmtest::Accel::Kvm => "kvm",
    };
    let bytes = tcp_bytes();
    let guest = |name: &str, port: &str, script: String, emulator: Option<&std::path::Path>| {
        let initrd = Initramfs::new(script)
            .module(&inp.ko)
            .build(&dir.join(format!("{name}.initrd.gz")))
            .unwrap_or_else(|e| panic!("building the initramfs failed: {e}"));
        let console = dir.join(format!("{name}.console.log"));
        let (k, i, c) = (
            kernel.to_string_lossy().into_owned(),
            initrd.to_string_lossy().into_owned(),
            console.to_string_lossy().into_owned(),
        );
        let mut args = vec![
            "libvirt-xml",
            port,
            "--domain",
            name,
            "--accel",
            accel,
            "--memory",
            "256",
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--cmdline",
            "console=ttyS0 panic=-1",
            "--serial-log",
            &c,
        ];
        let e = emulator.map(|e| e.to_string_lossy().into_owned());
        if let Some(e) = &e {
            args.extend(["--emulator", e.as_str()]);
        }
        let xml = d.ctl(&args).expect("ptnetctl libvirt-xml");
        let dom = Domain::define(name, &xml, &dir.join(format!("{name}.xml")))
            .unwrap_or_else(|e| panic!("{e}"));
        (dom, console)
    };
    let console = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait_for = |p: &std::path::Path, needle: &str, secs: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while !console(p).contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} within {secs} s on {}:\n{}\n--- ptnetd ---\n{}",
                p.display(),
                console(p),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };

    // The ptnet guest serves a file, then waits to be destroyed.
    let (server, server_log) = guest(
        "ptnet-t3-server",
        "vale0:lp",
        format!(
            "{}dd if=/dev/urandom of=/tmp/f bs=64k count={} 2>/dev/null\n\
             echo sent-sha\n\
             sha256sum /tmp/f\n\
             echo server-ready\n\
             nc -l -p 5000 -e cat /tmp/f\n\
             echo served\n\
             sleep 3600\n",
            nic_up("10.0.0.1", ""),
            bytes >> 16
        ),
        Some(&patched),
    );
    // The virtio_net guest, on libvirt's default emulator (Debian's QEMU), fetches it.
    let (client, client_log) = guest(
        "ptnet-t3-client",
        "vale0:lv",
        format!(
            "{}ping -c 3 -W 10 10.0.0.1\n\
             nc 10.0.0.1 5000 > /tmp/f\n\
             echo got-sha\n\
             sha256sum /tmp/f\n",
            virtio_net_up("10.0.0.2")
        ),
        None,
    );
    server.start().unwrap_or_else(|e| panic!("{e}"));
    wait_for(&server_log, "server-ready", 180);
    client.start().unwrap_or_else(|e| panic!("{e}"));
    client
        .wait_shut_off(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}:\n{}", console(&client_log)));
    let c = console(&client_log);
    assert_eq!(
        ptnet_vmtest::parse_exit_status(&c),
        Some(0),
        "the virtio_net guest failed:\n{c}"
    );
    assert!(
        c.contains("3 packets transmitted, 3 packets received"),
        "ping failed:\n{c}"
    );
    wait_for(&server_log, "served", 60);
    assert_eq!(
        sha_after(&console(&server_log), "sent-sha"),
        sha_after(&c, "got-sha"),
        "the file changed on the way"
    );

    // Both VMs' devices ran; the ptnet one still does until its domain is destroyed.
    let vm = d.vm_entry("vale0:lp").expect("vale0:lp's VM");
    assert_eq!(vm["running"], true, "{vm}");
    assert!(vm["starts"].as_u64().unwrap_or(0) >= 1, "{vm}");
    server.destroy().unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let vm = d.vm_entry("vale0:lp").expect("vale0:lp's VM");
        if vm["running"] == false && vm["mem_ready"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "vale0:lp not reclaimed after virsh destroy: {vm}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for port in ["vale0:lp", "vale0:lv"] {
        d.ctl(&["stop-vm", port]).expect("stop-vm");
        d.ctl(&["destroy-port", port])
            .unwrap_or_else(|e| panic!("{port} is still held after its VM went: {e}"));
    }
}
