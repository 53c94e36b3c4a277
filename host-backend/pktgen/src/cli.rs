//! ptnet-pktgen's command line (clap) and the [`Config`] it makes; the man page
//! `ptnet-pktgen(8)` is generated from it.

use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use ptnet_client::proto;

use crate::config::{NETMAP_DEVICE, NETMAP_PREFIX, PACKET_PREFIX, PACKET_SOCKET};
use crate::payload::{Mac, parse_mac};
use crate::{BackendKind, Config, Error, Mode};

/// A pkt-gen-like traffic tool for ptnet ports.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Cmd {
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

/// What every mode takes.
#[derive(Debug, ClapArgs)]
pub struct Common {
    /// Port name (`vale0:a`, `pipe0{1`: a client of ptnetd; `netmap:ptnet0`: netmap's API on
    /// /dev/netmap, in a guest; `packet:eth0`: a Linux interface through AF_PACKET); twice
    /// for fwd.
    #[arg(short = 'i', long = "port", value_name = "NAME", required = true)]
    pub ports: Vec<String>,
    /// ptnetd's control socket [default: $PTNET_SOCKET or /run/ptnetd/ptnetd.sock]; not for
    /// netmap: and packet: ports.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<String>,
    /// Frame size on the wire without CRC (tx, ping); above the buffer size tx uses
    /// multi-slot frames.
    #[arg(short = 'l', long, value_name = "BYTES", default_value_t = 60)]
    pub size: usize,
    /// Slots per batch.
    #[arg(short, long, value_name = "N", default_value_t = 512)]
    pub batch: u32,
    /// Rate limit in packets per second (tx, ping).
    #[arg(short = 'R', long = "rate", value_name = "PPS")]
    pub rate: Option<u64>,
    /// Packets to send, receive, echo or forward (pings for ping); rx counts the frames it
    /// did not get as lost.
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Stop after this many seconds without traffic, once traffic was seen (rx, pong, fwd).
    #[arg(long, value_name = "SECS")]
    pub idle: Option<f64>,
    /// How long a ping waits for its pong, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub ping_timeout: u64,
    /// Source MAC; for rx and pong the port's own address, announced to a VALE switch so it
    /// does not flood [default: 02:70:74:00:00:01; rx, pong: 02:70:74:00:00:02; packet:
    /// ports: the interface's own MAC].
    #[arg(long, value_name = "MAC", value_parser = mac)]
    pub src_mac: Option<Mac>,
    /// Destination MAC [default: 02:70:74:00:00:02; packet: ports: ff:ff:ff:ff:ff:ff, which
    /// an interface accepts without promiscuous mode].
    #[arg(long, value_name = "MAC", value_parser = mac)]
    pub dst_mac: Option<Mac>,
    /// Ask ptnetd for a busy-polling sync loop and spin instead of sleeping.
    #[arg(long)]
    pub busy_poll: bool,
    /// Verify sequence numbers and payloads (rx): lost, out_of_order, bad_payload.
    #[arg(long)]
    pub check: bool,
    /// Exit 1 if rx saw loss, reordering or a bad payload (implies --check), or a ping went
    /// unanswered.
    #[arg(long)]
    pub expect_no_loss: bool,
    /// Print the final summary as one JSON object (live lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// No live lines.
    #[arg(short, long)]
    pub quiet: bool,
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
