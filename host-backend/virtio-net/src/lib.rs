//! ptnet-virtio-net: a virtio-net device over vhost-user, attached to one port of the
//! datapath (a VALE port or a pipe end). Any unmodified guest (`-netdev vhost-user` +
//! `virtio-net-pci`) or DPDK's `virtio_user` PMD becomes one more client of the port: the
//! device is the application side of the port's rings *and* runs their txsync/rxsync itself,
//! in the same thread, so a frame costs one copy between guest memory and the port's buffers
//! and no system call.
//!
//! * [`server`]: what serving a port as a virtio-net device offers ([`serve`]), the QEMU
//!   arguments;
//! * [`device`]: one connection's device: features, config space, vhost-user callbacks, start
//!   and stop of the queue-pair workers;
//! * [`config`]: the virtio-net configuration space (MAC, status, queue pairs);
//! * [`virtq`]: the split rings read through guest-memory slices resolved once per batch,
//!   a strict chain walker, batched completion (one used-index store and at most one
//!   notification per batch, EVENT_IDX), and what breaks a queue;
//! * [`worker`]: a queue pair's data path: TX virtqueue → port TX ring, port RX ring → RX
//!   virtqueue (MRG_RXBUF), the control queue, lingering and sleeping;
//! * [`ctrl`]: the control virtqueue commands (RX mode, MAC, MQ);
//! * [`group`]: poll groups, one thread serving the queue pairs of many devices;
//! * [`stats`]: the port's counters;
//!
//! The vhost-user plumbing (socket, connections, hooked virtqueues, guest memory, and the
//! relay that puts QEMU's early `SET_VRING_ENABLE` after `SET_FEATURES`) is
//! `ptnet-vhost-user`'s. Offloads: see [`worker`] (the virtio-net header crosses the switch
//! to ports that carry it, and is resolved in software toward the others).

pub mod config;
mod copies;
pub mod ctrl;
pub mod device;
pub mod group;
pub mod server;
pub mod stats;
pub mod virtq;
pub mod worker;

pub use group::PollGroups;
pub use server::{ServeConfig, ServeError, ServeHandle, qemu_args, serve};
pub use stats::{NetStats, NetStatsSnapshot};
