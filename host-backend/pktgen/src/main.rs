//! `ptnet-pktgen`: send, receive, ping, answer and forward traffic on ptnet ports.
//!
//! ```text
//! ptnet-pktgen rx -i vale0:b --check
//! ptnet-pktgen tx -i vale0:a -l 60 -b 512 -d 5
//! ptnet-pktgen tx -i netmap:ptnet0 -n 1000      # in a guest: netmap's API on /dev/netmap
//! ptnet-pktgen tx -i packet:eth0 -n 1000        # any Linux interface: AF_PACKET
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use ptnet_client::Port;
use ptnet_client::proto::{self, error_chain};
use ptnet_pktgen::config::{NETMAP_DEVICE, NETMAP_PREFIX, PACKET_PREFIX, PACKET_SOCKET};
use ptnet_pktgen::netmap::NetmapPort;
use ptnet_pktgen::packet::PacketPort;
use ptnet_pktgen::payload::{Mac, parse_mac};
use ptnet_pktgen::{BackendKind, Config, Error, Mode, run};

/// A pkt-gen-like traffic tool for ptnet ports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send numbered frames.
    Tx(Common),
    /// Receive frames (and check them with --check).
    Rx(Common),
    /// Send pings one at a time and report round-trip times.
    Ping(Common),
    /// Answer pings.
    Pong(Common),
    /// Copy everything between two ports, both ways (-i A -i B).
    Fwd(Common),
}

#[derive(Debug, ClapArgs)]
struct Common {
    /// Port name (`vale0:a`, `pipe0{1`: a client of ptnetd; `netmap:ptnet0`: netmap's API on
    /// /dev/netmap, in a guest; `packet:eth0`: a Linux interface through AF_PACKET); twice
    /// for fwd.
    #[arg(short = 'i', long = "port", value_name = "NAME", required = true)]
    ports: Vec<String>,
    /// ptnetd's control socket [default: $PTNET_SOCKET or /run/ptnetd/ptnetd.sock]; not for
    /// netmap: and packet: ports.
    #[arg(long, value_name = "PATH")]
    socket: Option<String>,
    /// Frame size on the wire without CRC (tx, ping); above the buffer size tx uses
    /// multi-slot frames.
    #[arg(short = 'l', long, value_name = "BYTES", default_value_t = 60)]
    size: usize,
    /// Slots per batch.
    #[arg(short, long, value_name = "N", default_value_t = 512)]
    batch: u32,
    /// Rate limit in packets per second (tx, ping).
    #[arg(short = 'R', long = "rate", value_name = "PPS")]
    rate: Option<u64>,
    /// Packets to send, receive, echo or forward (pings for ping); rx counts the frames it
    /// did not get as lost.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECS")]
    duration: Option<f64>,
    /// Stop after this many seconds without traffic, once traffic was seen (rx, pong, fwd).
    #[arg(long, value_name = "SECS")]
    idle: Option<f64>,
    /// How long a ping waits for its pong, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    ping_timeout: u64,
    /// Source MAC; for rx and pong the port's own address, announced to a VALE switch so it
    /// does not flood [default: 02:70:74:00:00:01; rx, pong: 02:70:74:00:00:02; packet:
    /// ports: the interface's own MAC].
    #[arg(long, value_name = "MAC", value_parser = mac)]
    src_mac: Option<Mac>,
    /// Destination MAC [default: 02:70:74:00:00:02; packet: ports: ff:ff:ff:ff:ff:ff, which
    /// an interface accepts without promiscuous mode].
    #[arg(long, value_name = "MAC", value_parser = mac)]
    dst_mac: Option<Mac>,
    /// Ask ptnetd for a busy-polling sync loop and spin instead of sleeping.
    #[arg(long)]
    busy_poll: bool,
    /// Verify sequence numbers and payloads (rx): lost, out_of_order, bad_payload.
    #[arg(long)]
    check: bool,
    /// Exit 1 if rx saw loss, reordering or a bad payload (implies --check), or a ping went
    /// unanswered.
    #[arg(long)]
    expect_no_loss: bool,
    /// Print the final summary as one JSON object (live lines go to stderr).
    #[arg(long)]
    json: bool,
    /// No live lines.
    #[arg(short, long)]
    quiet: bool,
}

fn mac(s: &str) -> Result<Mac, String> {
    parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
}

fn seconds(what: &str, s: Option<f64>) -> Result<Option<Duration>, Error> {
    s.map(|v| {
        Duration::try_from_secs_f64(v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Error::Usage(format!("--{what} {v}: a positive number of seconds")))
    })
    .transpose()
}

impl TryFrom<Args> for Config {
    type Error = Error;

    fn try_from(a: Args) -> Result<Self, Error> {
        let (mode, c) = match a.cmd {
            Cmd::Tx(c) => (Mode::Tx, c),
            Cmd::Rx(c) => (Mode::Rx, c),
            Cmd::Ping(c) => (Mode::Ping, c),
            Cmd::Pong(c) => (Mode::Pong, c),
            Cmd::Fwd(c) => (Mode::Fwd, c),
        };
        let kind = c
            .ports
            .iter()
            .map(|p| BackendKind::of(p))
            .find(|&k| k != BackendKind::Client)
            .unwrap_or(BackendKind::Client);
        let socket = match (kind, c.socket) {
            (BackendKind::Netmap, Some(s)) => {
                return Err(Error::Usage(format!(
                    "--socket {s}: netmap ports ({NETMAP_PREFIX}NAME) use {NETMAP_DEVICE}, not ptnetd"
                )));
            }
            (BackendKind::Packet, Some(s)) => {
                return Err(Error::Usage(format!(
                    "--socket {s}: packet ports ({PACKET_PREFIX}IFNAME) use an AF_PACKET socket, \
                     not ptnetd"
                )));
            }
            (BackendKind::Netmap, None) => NETMAP_DEVICE.to_owned(),
            (BackendKind::Packet, None) => PACKET_SOCKET.to_owned(),
            (BackendKind::Client, s) => s.unwrap_or_else(proto::socket_path),
        };
        let mut cfg = Config::new(mode, c.ports, socket);
        cfg.size = c.size;
        cfg.batch = c.batch;
        cfg.rate_pps = c.rate;
        cfg.count = c.count;
        cfg.duration = seconds("duration", c.duration)?;
        cfg.idle = seconds("idle", c.idle)?;
        cfg.ping_timeout = Duration::from_millis(c.ping_timeout.max(1));
        if let Some(m) = c.src_mac {
            cfg.src_mac = m;
            cfg.src_mac_from_port = false;
        }
        if let Some(m) = c.dst_mac {
            cfg.dst_mac = m;
        }
        cfg.busy_poll = c.busy_poll;
        cfg.check = c.check || c.expect_no_loss;
        cfg.expect_no_loss = c.expect_no_loss;
        cfg.json = c.json;
        cfg.quiet = c.quiet;
        cfg.validate()?;
        Ok(cfg)
    }
}

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
