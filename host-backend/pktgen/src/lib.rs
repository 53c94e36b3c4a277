//! ptnet-pktgen: a pkt-gen-like traffic generator, sink, pinger and forwarder for ptnet
//! ports: on the host a client of `ptnetd` (`ptnet-client`), in a guest a netmap application
//! on `/dev/netmap` (`-i netmap:ptnet0`), and on any Linux interface an AF_PACKET socket
//! (`-i packet:eth0`, the stock-NIC baseline), all behind the same trait.
//!
//! * [`backend`]: the `Backend` trait the loops drive, implemented for `ptnet_client::Port`;
//! * [`netmap`]: the netmap backend (`NIOCCTRL`, `mmap`, `NIOCTXSYNC`/`NIOCRXSYNC`, `poll`);
//! * [`nifp`]: a `netmap_if` and its rings in any mapped region, validated, netmap's rules;
//! * [`packet`]: the AF_PACKET backend (`sendmmsg`/`recvmmsg` batches, `poll`);
//! * [`cli`]: the command line (and the man page's source);
//! * [`config`]: the validated command line, and the errors with their exit codes;
//! * [`payload`]: the frame format (sequence number, timestamp, pattern) and `rx --check`;
//! * [`rate`]: the token bucket behind `--rate`, consulted per batch;
//! * [`run`]: the `tx`, `rx`, `ping`, `pong` and `fwd` loops;
//! * [`stats`]: CPU time, the RTT histogram, live lines and the final report;
//! * [`sys`]: signals that end a run, the process's CPU time.

pub mod backend;
pub mod cli;
pub mod config;
#[cfg(test)]
mod fake;
pub mod netmap;
pub mod nifp;
pub mod packet;
pub mod payload;
pub mod rate;
pub mod run;
pub mod stats;
pub mod sys;

pub use backend::{Backend, Want};
pub use config::{BackendKind, Config, Error, Mode};
pub use stats::Report;
