//! ptnet-pktgen: a pkt-gen-like traffic generator, sink, pinger and forwarder for ptnet
//! ports, on the client library (`ptnet-client`); a netmap ioctl backend for guests can slot
//! in behind the same trait.
//!
//! * [`backend`]: the `Backend` trait the loops drive, implemented for `ptnet_client::Port`;
//! * [`config`]: the validated command line, and the errors with their exit codes;
//! * [`payload`]: the frame format (sequence number, timestamp, pattern) and `rx --check`;
//! * [`rate`]: the token bucket behind `--rate`, consulted per batch;
//! * [`run`]: the `tx`, `rx`, `ping`, `pong` and `fwd` loops;
//! * [`stats`]: CPU time, the RTT histogram, live lines and the final report.

pub mod backend;
pub mod config;
#[cfg(test)]
mod fake;
pub mod payload;
pub mod rate;
pub mod run;
pub mod stats;

pub use backend::{Backend, Want};
pub use config::{Config, Error, Mode};
pub use stats::Report;
