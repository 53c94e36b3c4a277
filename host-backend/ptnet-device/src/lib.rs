//! ptnet-device: the ptnet device, on its two transports. Over vhost-user, a VM's ptnet
//! device (virtio id 63, QEMU's generic vhost-user device) becomes one more client of a port of the datapath: its shared
//! memory region 0 *is* the port's region, its virtqueues are the rings' doorbells and
//! interrupts, and its CSB lives in guest RAM. The port runs the same sync loop as a host
//! client's (SPEC.md §3). The vhost-user plumbing around it is `ptnet-vhost-user`'s.
//!
//! * [`server`]: what serving a port as a ptnet device checks and offers ([`serve`]), the QEMU
//!   arguments;
//! * [`device`]: one connection's device: vhost-user callbacks, start and stop, region 0
//!   mapping;
//! * [`config`]: the configuration space (`GET_CONFIG`/`SET_CONFIG`);
//! * [`irq`]: a ring's interrupt for a VM (complete an event buffer, signal the call fd);
//! * [`ivshmem`]: the same device on QEMU's stock `ivshmem-doorbell`: the daemon as the ivshmem
//!   server of the port, the CSB in the region's device block (SPEC.md §6).

pub mod config;
pub mod device;
pub mod irq;
pub mod ivshmem;
pub mod server;

pub use device::{Device, DeviceStats, StatsSnapshot};
pub use server::{ServeConfig, ServeError, ServeHandle, default_mac, qemu_args, serve};
