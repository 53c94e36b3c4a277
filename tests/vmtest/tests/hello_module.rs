//! Tier 3: a TCG guest running the project's guest kernel loads and unloads the project's
//! Rust module (`guest-driver-linux/hello`).
//!
//! Needs (ci/tier3-vm.sh sets them):
//! - `PTNET_KERNEL_DIR`: the kernel build directory printed by `vm-images/build-kernel.sh`;
//! - `PTNET_HELLO_KO`: `ptnet_hello.ko` from `guest-driver-linux/build-module.sh`;
//! - optionally `PTNET_INITRAMFS_SCRIPT`, `PTNET_QEMU`, `PTNET_ACCEL`.
//!
//! Missing inputs fail the test with a message; they never skip it.
#![cfg(feature = "vm-tests")]

use std::time::Duration;

use ptnet_vmtest::testenv::{required_path, work_dir};
use ptnet_vmtest::{Initramfs, Vm, VmConfig};

const RINGS: u32 = 6;
/// What the module computes for `rings=6`: slots of 256 << (ring % 4), summed.
const TOTAL_SLOTS: u32 = 256 + 512 + 1024 + 2048 + 256 + 512;

#[test]
fn guest_loads_and_unloads_the_project_rust_module() {
    let kernel_dir = required_path("PTNET_KERNEL_DIR", "the guest kernel build directory");
    let ko = required_path("PTNET_HELLO_KO", "the ptnet_hello.ko module");
    let kernel = kernel_dir.join("arch/x86/boot/bzImage");
    assert!(kernel.is_file(), "{} is missing", kernel.display());

    let dir = work_dir("hello_module");
    let script = format!(
        "insmod /modules/ptnet_hello.ko rings={RINGS}\n\
         grep '^ptnet_hello ' /proc/modules\n\
         rmmod ptnet_hello\n\
         if grep -q '^ptnet_hello ' /proc/modules; then echo 'still loaded after rmmod'; exit 1; fi\n\
         dmesg | grep 'ptnet_hello:'\n"
    );
    let initrd = Initramfs::new(script)
        .module(&ko)
        .build(&dir.join("initrd.gz"))
        .unwrap_or_else(|e| panic!("building the initramfs failed: {e}"));

    let config = VmConfig::new("hello", kernel, initrd, dir.join("console.log"))
        .expect("guest configuration from PTNET_QEMU/PTNET_ACCEL")
        .cpus(1)
        .timeout(Duration::from_secs(180));
    let outcome = Vm::start(config)
        .and_then(Vm::wait)
        .unwrap_or_else(|e| panic!("running the guest failed: {e}"));
    eprintln!(
        "guest ran {:.1} s, console log: {}",
        outcome.elapsed.as_secs_f64(),
        dir.join("console.log").display()
    );
    if let Err(e) = outcome.check() {
        panic!("{e}");
    }

    // printk lines carry a timestamp: "[    1.234567] ptnet_hello: ...".
    let hello = format!("] ptnet_hello: hello from Rust, rings={RINGS} total_slots={TOTAL_SLOTS}");
    let goodbye = format!("] ptnet_hello: goodbye from Rust, released {RINGS} rings");
    let console = &outcome.console;
    let hello_at = console
        .find(&hello)
        .unwrap_or_else(|| panic!("no load line {hello:?} on the console:\n{console}"));
    let goodbye_at = console
        .find(&goodbye)
        .unwrap_or_else(|| panic!("no unload line {goodbye:?} on the console:\n{console}"));
    assert!(
        hello_at < goodbye_at,
        "the unload line came before the load line:\n{console}"
    );
    assert_eq!(outcome.exit_status, Some(0));
}
