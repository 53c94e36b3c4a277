//! `ptnet-vmtest`: boots ptnet guests under QEMU for tests and for people.
//!
//! A test describes a guest with a [`VmConfig`] (QEMU binary, kernel, initramfs,
//! accelerator, CPUs, memory, extra kernel and QEMU arguments, console log, timeout),
//! starts it with [`Vm::start`] and collects a [`VmOutcome`] with [`Vm::wait`]: the exit
//! status that the guest's test script reported on the console (`PTNET-EXIT=<status>`,
//! printed by the init of `vm-images/build-initramfs.sh`), the console text, and whether
//! the timeout struck. Several guests can run at once, each with its own console log.
//!
//! Modules:
//! - [`config`]: [`VmConfig`], [`Accel`] and the QEMU command line they produce.
//! - [`vm`]: the running guest ([`Vm`]), its outcome, killing it on timeout and on drop.
//! - [`initramfs`]: builds a test initramfs by calling `vm-images/build-initramfs.sh`.
//! - [`scratch`]: a private scratch directory for a test's logs and images.
//! - [`testenv`]: the VM tests' inputs from the environment and their work folders.
//! - [`daemon`]: the host side: `ptnetd` on a private socket, `ptnetctl`, host clients.
//! - [`libvirt`]: the system libvirtd (started if none runs) and domains defined from XML.

pub mod config;
pub mod daemon;
pub mod initramfs;
pub mod libvirt;
pub mod scratch;
pub mod testenv;
pub mod vm;

pub use config::{Accel, ConfigError, VmConfig};
pub use daemon::{DaemonError, Ptnetd};
pub use initramfs::{Initramfs, InitramfsError};
pub use scratch::ScratchDir;
pub use vm::{Vm, VmError, VmOutcome, parse_exit_status};
