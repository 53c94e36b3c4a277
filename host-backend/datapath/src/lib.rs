//! ptnet-datapath: the host side of ptnet, shared by `ptnetd`, the tests, the fuzzers and
//! the benchmarks.
//!
//! * [`sys`]: memfds and shared mappings between guard pages;
//! * [`mem`]: netmap-layout memory regions, interfaces, rings and buffers;
//! * [`csb`]: where a client's CSB lives and safe access to its entries;
//! * [`kring`]: kernel-side rings, the sync prologue, publication, RX leases;
//! * [`port`]: what the sync loop needs from a port, and per-port counters;
//! * [`vale`]: the VALE learning switch;
//! * [`vnet`]: software offloads (checksums, TCP segmentation) for ports without a
//!   virtio-net header;
//! * [`pipe`]: zero-copy netmap pipes;
//! * [`kloop`]: the per-client sync loop;
//! * [`app`]: the application side of a port's ring, for the ports the daemon drives itself;
//! * [`host`]: attaching host clients (the daemon side of `attach`);
//! * [`afpacket`]: AF_PACKET sockets with TPACKET_V3 rings;
//! * [`xdp`]: AF_XDP sockets and the XDP redirect program that feeds them;
//! * [`nic`]: host NIC ports: an interface on a VALE switch, its worker and backends;
//! * [`tap`]: the host stack's tap beside a NIC port (netmap's host rings);
//! * [`direct`]: a host interface given directly to one client (`netmap:eth0`), fanout rings.

pub mod afpacket;
pub mod app;
pub mod csb;
pub mod direct;
pub mod host;
pub mod kloop;
pub mod kring;
pub mod mem;
pub mod nic;
pub mod pipe;
pub mod port;
pub mod sys;
pub mod tap;
pub mod vale;
pub mod vnet;
pub mod xdp;
