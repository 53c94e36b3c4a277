//! ptnetd: the ptnet host daemon as a library (the binary is a thin wrapper), so tests can
//! run it in-process too.
//!
//! * [`cli`]: the command line (and the man page's source);
//! * [`config`]: the TOML configuration and its embedded default;
//! * [`cpus`]: the CPUs the daemon's threads run on;
//! * [`daemon`]: the daemon, its state's lock, host clients' attachments;
//! * `error`: what a client is told when a request fails;
//! * `registry`: switches, ports, pipes and direct NIC ports, claimed, released, listed;
//! * `nic`: host interfaces on switches or given directly to a client;
//! * `vm`: ports served to VMs over vhost-user;
//! * [`control`]: the control socket and its requests;
//! * [`policy`]: who may do what over it, from [`creds`] (the kernel's word on who connected);
//! * `reload`: `SIGHUP`, the configuration read again and applied;
//! * [`metrics`]: the Prometheus exposition of the same counters;
//! * [`signals`]: the termination signals, taken by one thread;
//! * [`notify`]: systemd's readiness notifications (`Type=notify`).

pub mod cli;
pub mod config;
pub mod control;
pub mod cpus;
pub mod creds;
pub mod daemon;
mod error;
pub mod metrics;
mod nic;
pub mod notify;
pub mod policy;
mod registry;
mod reload;
pub mod signals;
mod vm;
