//! ptnet-datapath: the host side of ptnet, shared by `ptnetd`, the tests, the fuzzers and
//! the benchmarks.
//!
//! The core, at the top level: memory, the CSB, the kernel and application sides of a ring,
//! and the sync loop.
//!
//! * [`sys`]: memfds and shared mappings between guard pages;
//! * [`fault`]: surviving a SIGBUS in memory another process took away;
//! * [`mem`]: netmap-layout memory regions, interfaces, rings and bounded buffer handles;
//! * [`csb`]: where a client's CSB lives and safe access to its entries;
//! * [`kring`]: kernel-side rings, their binding to a client, the sync prologue,
//!   publication, RX leases;
//! * [`port`]: what the sync loop needs from a port, and per-port counters;
//! * [`peer`]: eventfds a client or QEMU also holds, read and written so that they cannot
//!   stop a daemon thread;
//! * [`kloop`]: the per-client sync loop;
//! * [`app`]: the application side of a port's ring, for the ports the daemon drives itself;
//! * [`host`]: attaching host clients (the daemon side of `attach`).
//!
//! Then the ports:
//!
//! * [`switch`]: the VALE switch, pipes, and the software offloads between them;
//! * [`nic`]: host NIC ports, their backends (AF_PACKET, AF_XDP, the host stack's tap), and
//!   interfaces given directly to one client.

pub mod app;
pub mod csb;
pub mod fault;
pub mod host;
pub mod kloop;
pub mod kring;
pub mod mem;
pub mod nic;
pub mod peer;
pub mod port;
pub mod switch;
pub mod sys;

pub use ptnet_proto::error_chain;
