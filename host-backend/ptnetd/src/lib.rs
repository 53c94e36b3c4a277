//! ptnetd: the ptnet host daemon as a library (the binary is a thin wrapper), so tests can
//! run it in-process too.
//!
//! * [`config`]: the TOML configuration and its embedded default;
//! * [`daemon`]: switches, ports, pipes, attachments and the control socket server.

pub mod config;
pub mod daemon;
