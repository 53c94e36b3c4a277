//! Tier 3: the `ptnet` guest driver on the patched QEMU and the real `ptnetd`.
//!
//! Needs (ci/tier3-vm.sh sets them):
//! - `PTNET_KERNEL_DIR`: the guest kernel build directory;
//! - `PTNET_PTNET_KO`: `ptnet.ko` from `guest-driver-linux/build-module.sh`;
//! - `PTNET_QEMU`: the patched QEMU (`qemu-patches/build-qemu.sh`);
//! - `PTNET_BIN_DIR`: `ptnetd`, `ptnetctl`, `ptnet-pktgen` for the host side.
//!
//! Missing inputs fail the test with a message; they never skip it.
#![cfg(feature = "vm-tests")]

use std::path::PathBuf;
use std::time::Duration;

use ptnet_vmtest::{Initramfs, Ptnetd, Vm, VmConfig};

/// A required input from the environment, or a failure that says how to provide it.
fn required_path(var: &str, what: &str) -> PathBuf {
    let value = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("{var} is not set: it must name {what}; run ci/tier3-vm.sh, which builds it")
        });
    let path = PathBuf::from(value);
    assert!(
        path.exists(),
        "{var}={} does not exist (it must name {what})",
        path.display()
    );
    path
}

/// Where a test keeps its images, sockets and logs (read them after a failure).
fn work_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("vmtest")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's work directory");
    dir
}

struct Inputs {
    kernel: PathBuf,
    ko: PathBuf,
}

fn inputs() -> Inputs {
    let kernel_dir = required_path("PTNET_KERNEL_DIR", "the guest kernel build directory");
    let kernel = kernel_dir.join("arch/x86/boot/bzImage");
    assert!(kernel.is_file(), "{} is missing", kernel.display());
    Inputs {
        kernel,
        ko: required_path("PTNET_PTNET_KO", "the ptnet.ko guest driver"),
    }
}

/// Boots one guest with the ptnet device of `port` and runs `script` in it.
fn run_guest(
    inp: &Inputs,
    dir: &std::path::Path,
    name: &str,
    device_args: Vec<String>,
    script: String,
    extra_bins: &[PathBuf],
) -> ptnet_vmtest::VmOutcome {
    let mut image = Initramfs::new(script).module(&inp.ko);
    for b in extra_bins {
        image = image.bin(b);
    }
    let initrd = image
        .build(&dir.join(format!("{name}.initrd.gz")))
        .unwrap_or_else(|e| panic!("building the initramfs failed: {e}"));
    let config = VmConfig::new(
        name,
        &inp.kernel,
        initrd,
        dir.join(format!("{name}.console.log")),
    )
    .expect("guest configuration from PTNET_QEMU/PTNET_ACCEL")
    .cpus(1)
    .memory_mib(256)
    .shared_memory()
    .qemu_args(device_args)
    .timeout(Duration::from_secs(240));
    let outcome = Vm::start(config)
        .and_then(Vm::wait)
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
    let outcome = run_guest(&inp, &dir, "g1", args, script, &[]);
    let log = d.log();
    if let Err(e) = outcome.check() {
        panic!("{e}\n--- ptnetd log ---\n{log}");
    }
    assert!(
        outcome.console.contains("ptnet0: 1 TX + 1 RX rings"),
        "no probe line on the console:\n{}",
        outcome.console
    );
}
