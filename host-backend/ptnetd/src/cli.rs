//! ptnetd's command line (clap), and how it overrides the configuration file; the man page
//! `ptnetd(8)` is generated from it.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, ConfigError};

/// The ptnet host daemon.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// Configuration file (TOML); without it, the embedded default (switch vale0).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Control socket path (overrides the file).
    #[arg(short, long)]
    pub socket: Option<PathBuf>,
    /// Control socket permissions, octal (overrides the file).
    #[arg(long)]
    pub socket_mode: Option<String>,
    /// Directory of VMs' vhost-user sockets (overrides the file; default /run/ptnetd/vm).
    #[arg(long)]
    pub vm_socket_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this TCP address, e.g. 127.0.0.1:9477 (overrides the
    /// file).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Run every client's sync loop in busy-poll mode.
    #[arg(long)]
    pub busy_poll: bool,
    /// Microseconds an idle sync loop keeps polling before it sleeps (overrides the file).
    #[arg(long)]
    pub linger_us: Option<u64>,
    /// Run every thread of the daemon (ports' workers included) on these CPUs, e.g. `1` or
    /// `2-3,6` (overrides the file).
    #[arg(long, value_name = "LIST", value_parser = cpu_list)]
    pub cpus: Option<String>,
    /// Serve every virtio-net queue pair from N shared threads (poll groups), not a thread
    /// each (overrides the file; 0: a thread each).
    #[arg(long, value_name = "N")]
    pub poll_groups: Option<usize>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
}

/// `--cpus`: checked as a `CpuList`, kept as written.
fn cpu_list(s: &str) -> Result<String, String> {
    crate::cpus::CpuList::parse(s).map(|_| s.to_owned())
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(a: Args) -> Result<Self, Self::Error> {
        let mut c = match &a.config {
            Some(p) => Config::load(p)?,
            None => Config::embedded(),
        };
        if let Some(s) = a.socket {
            c.daemon.socket = s;
        }
        if let Some(m) = a.socket_mode {
            c.daemon.socket_mode = m;
            c.socket_mode()?;
        }
        if let Some(d) = a.vm_socket_dir {
            c.daemon.vm_socket_dir = d;
        }
        if let Some(m) = a.metrics {
            c.daemon.metrics = Some(m);
        }
        c.daemon.busy_poll |= a.busy_poll;
        if let Some(l) = a.linger_us {
            c.daemon.linger_us = l;
        }
        if let Some(n) = a.poll_groups {
            if n > crate::config::MAX_POLL_GROUPS {
                return Err(ConfigError::Invalid(format!(
                    "--poll-groups must be at most {}",
                    crate::config::MAX_POLL_GROUPS
                )));
            }
            c.daemon.poll_groups = n;
        }
        if let Some(l) = a.cpus {
            c.daemon.cpus = Some(l);
        }
        Ok(c)
    }
}
