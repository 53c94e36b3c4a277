//! `ptnetd`: owns VALE switches, netmap pipes and host NIC ports, and serves them to host
//! clients over a control socket and to VMs over vhost-user.

use std::process::ExitCode;

use clap::Parser;
use ptnetd::cli::Args;
use ptnetd::config::Config;
use ptnetd::daemon::{self, Daemon};

/// SIGHUP: the configuration file again (with the same overrides), applied; what changed is
/// logged, and a file that does not parse changes nothing.
fn reload(d: &Daemon, args: &Args) {
    if args.config.is_none() {
        log::warn!("SIGHUP: no configuration file (the embedded default): nothing to reload");
        return;
    }
    ptnetd::notify::notify("RELOADING=1");
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
    ptnetd::notify::ready("reloaded");
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
    // Before any thread starts, so that every later one inherits the CPUs.
    let pinned = cfg
        .cpus()
        .map_err(|e| daemon::error_chain(&e))
        .and_then(|l| ptnetd::cpus::apply(l.as_ref()).map_err(|e| format!("cpus: {e}")));
    if let Err(e) = pinned {
        eprintln!("ptnetd: {e}");
        return ExitCode::from(2);
    }
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
                ptnetd::notify::notify("STOPPING=1");
                let _ = std::fs::remove_file(&s2);
                std::process::exit(0);
            }
        })
        .expect("spawn the signal thread");
    log::info!("ptnetd listening on {}", socket.display());
    ptnetd::notify::ready(&format!("listening on {}", socket.display()));
    if let Err(e) = d.serve(listener) {
        eprintln!("ptnetd: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
