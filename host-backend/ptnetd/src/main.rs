//! `ptnetd`: owns VALE switches, netmap pipes and host NIC ports, and serves them to host
//! clients over a control socket and to VMs over vhost-user.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ptnetd::config::{Config, ConfigError};
use ptnetd::daemon::{self, Daemon};

/// The ptnet host daemon.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); without it, the embedded default (switch vale0).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Control socket path (overrides the file).
    #[arg(short, long)]
    socket: Option<PathBuf>,
    /// Control socket permissions, octal (overrides the file).
    #[arg(long)]
    socket_mode: Option<String>,
    /// Directory of VMs' vhost-user sockets (overrides the file; default /run/ptnetd/vm).
    #[arg(long)]
    vm_socket_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this TCP address, e.g. 127.0.0.1:9477 (overrides the
    /// file).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Run every client's sync loop in busy-poll mode.
    #[arg(long)]
    busy_poll: bool,
    /// Microseconds an idle sync loop keeps polling before it sleeps (overrides the file).
    #[arg(long)]
    linger_us: Option<u64>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
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
        Ok(c)
    }
}

/// SIGHUP: the configuration file again (with the same overrides), applied; what changed is
/// logged, and a file that does not parse changes nothing.
fn reload(d: &Daemon, args: &Args) {
    if args.config.is_none() {
        log::warn!("SIGHUP: no configuration file (the embedded default): nothing to reload");
        return;
    }
    match Config::try_from(args.clone()) {
        Ok(cfg) => match d.reload(cfg) {
            Ok(changes) => {
                log::info!("SIGHUP: configuration reloaded");
                for c in changes {
                    log::info!("reload: {c}");
                }
            }
            Err(e) => log::error!("reload: {e}"),
        },
        Err(e) => log::error!("SIGHUP: {} (nothing changed)", daemon::error_chain(&e)),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", ptnetd::config::EMBEDDED_DEFAULT);
        return ExitCode::SUCCESS;
    }
    // SIGHUP reads the file again, with the same command-line overrides.
    let reload_args = args.clone();
    let cfg = match Config::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ptnetd: {}", daemon::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    // SIGINT, SIGTERM and SIGHUP are taken by one thread (blocked everywhere else): the first
    // two remove the socket and exit, SIGHUP reloads the configuration.
    let socket = cfg.daemon.socket.clone();
    let metrics = cfg.daemon.metrics.clone();
    ptnetd::signals::block_termination();
    let mode = cfg.socket_mode().unwrap_or(0o660);
    let group = match cfg.socket_group() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("ptnetd: {e}");
            return ExitCode::from(2);
        }
    };
    let d = match Daemon::new(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ptnetd: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match ptnetd::control::bind_socket(&socket, mode, group) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ptnetd: cannot listen on {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = metrics {
        let served = std::net::TcpListener::bind(&addr)
            .and_then(|l| ptnetd::metrics::serve(std::sync::Arc::clone(&d), l));
        match served {
            Ok(()) => log::info!("metrics on http://{addr}/metrics"),
            Err(e) => {
                eprintln!("ptnetd: cannot serve metrics on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let s2 = socket.clone();
    let d2 = std::sync::Arc::clone(&d);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let sig = ptnetd::signals::wait_termination();
                if sig == libc::SIGHUP {
                    reload(&d2, &reload_args);
                    continue;
                }
                log::info!("signal {sig}: shutting down");
                let _ = std::fs::remove_file(&s2);
                std::process::exit(0);
            }
        })
        .expect("spawn the signal thread");
    log::info!("ptnetd listening on {}", socket.display());
    if let Err(e) = d.serve(listener) {
        eprintln!("ptnetd: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
