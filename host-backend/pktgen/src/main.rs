//! `ptnet-pktgen`: send, receive, ping, answer and forward traffic on ptnet ports.
//!
//! ```text
//! ptnet-pktgen rx -i vale0:b --check
//! ptnet-pktgen tx -i vale0:a -l 60 -b 512 -d 5
//! ptnet-pktgen tx -i netmap:ptnet0 -n 1000      # in a guest: netmap's API on /dev/netmap
//! ptnet-pktgen tx -i packet:eth0 -n 1000        # any Linux interface: AF_PACKET
//! ```

use std::process::ExitCode;

use clap::Parser;
use ptnet_client::Port;
use ptnet_client::proto::error_chain;
use ptnet_pktgen::cli::Args;
use ptnet_pktgen::netmap::NetmapPort;
use ptnet_pktgen::packet::PacketPort;
use ptnet_pktgen::{BackendKind, Config, run};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cfg = match Config::try_from(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ptnet-pktgen: {}", error_chain(&e));
            return ExitCode::from(e.exit_code());
        }
    };
    run::install_signal_handlers();
    let report = match cfg.backend() {
        BackendKind::Client => run::run::<Port>(&cfg),
        BackendKind::Netmap => run::run::<NetmapPort>(&cfg),
        BackendKind::Packet => run::run::<PacketPort>(&cfg),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ptnet-pktgen: {}", error_chain(&e));
            return ExitCode::from(e.exit_code());
        }
    };
    if cfg.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    match run::verdict(&cfg, &report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ptnet-pktgen: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
