//! What a run does (the validated command line) and how a run fails.

use std::time::Duration;

use crate::payload::{HEADER_LEN, MAX_FRAME, Mac};

/// Default source MAC of senders (`tx`, `ping`): locally administered, "pt".
pub const DEFAULT_SRC_MAC: Mac = [0x02, 0x70, 0x74, 0x00, 0x00, 0x01];
/// Default destination MAC of senders, and the own address of receivers (`rx`, `pong`), which
/// they announce to a VALE switch: distinct from the source, so the switch learns both ends
/// and does not flood.
pub const DEFAULT_DST_MAC: Mac = [0x02, 0x70, 0x74, 0x00, 0x00, 0x02];
/// Most slots one frame may take (`-l` above the buffer size).
pub const MAX_FRAGS: usize = 64;
pub use crate::netmap::{NETMAP_DEVICE, NETMAP_PREFIX};
pub use crate::packet::{PACKET_PREFIX, PACKET_SOCKET};
/// The broadcast address: the default destination of packet ports, which every interface
/// accepts without promiscuous mode.
pub const BROADCAST_MAC: Mac = [0xff; 6];

/// Which [`crate::Backend`] serves a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A host client of `ptnetd` (`vale0:a`, `pipe0{1`): [`ptnet_client::Port`].
    Client,
    /// netmap's API on `/dev/netmap` (`netmap:ptnet0`, in a guest):
    /// [`crate::netmap::NetmapPort`].
    Netmap,
    /// A Linux interface through an AF_PACKET socket (`packet:eth0`):
    /// [`crate::packet::PacketPort`].
    Packet,
}

impl BackendKind {
    /// The backend of port `name`.
    pub fn of(name: &str) -> Self {
        if name.starts_with(NETMAP_PREFIX) {
            BackendKind::Netmap
        } else if name.starts_with(PACKET_PREFIX) {
            BackendKind::Packet
        } else {
            BackendKind::Client
        }
    }
}

/// The subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send frames.
    Tx,
    /// Receive (and optionally check) frames.
    Rx,
    /// Send pings one at a time and time their pongs.
    Ping,
    /// Answer pings.
    Pong,
    /// Copy everything between two ports.
    Fwd,
}

impl Mode {
    /// The name, also the prefix of the rate metrics (`tx_mpps`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tx => "tx",
            Mode::Rx => "rx",
            Mode::Ping => "ping",
            Mode::Pong => "pong",
            Mode::Fwd => "fwd",
        }
    }
}

/// A validated run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// What to do.
    pub mode: Mode,
    /// Port names: one, or two for `fwd`.
    pub ports: Vec<String>,
    /// ptnetd's control socket (host client), the netmap device (netmap backend), or
    /// [`PACKET_SOCKET`] (AF_PACKET backend).
    pub socket: String,
    /// Frame size on the wire without CRC (tx, ping).
    pub size: usize,
    /// Slots per batch.
    pub batch: u32,
    /// Rate limit in packets per second (tx, ping).
    pub rate_pps: Option<u64>,
    /// Packets to send, receive, echo or forward (pings for `ping`).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this long without traffic, once traffic was seen (rx, pong, fwd).
    pub idle: Option<Duration>,
    /// How long a ping waits for its pong.
    pub ping_timeout: Duration,
    /// Source MAC (tx, ping); the own address of rx and pong, announced to a VALE switch.
    pub src_mac: Mac,
    /// Destination MAC (tx, ping).
    pub dst_mac: Mac,
    /// Send from the attached port's own MAC (its interface's address) instead of
    /// `src_mac`, if it has one: the default for packet ports, so that a peer's replies and
    /// a learning switch reach it without promiscuous mode.
    pub src_mac_from_port: bool,
    /// Busy-poll: ask ptnetd for a busy-polling sync loop and spin instead of sleeping.
    pub busy_poll: bool,
    /// Verify sequence and payload of received frames (rx).
    pub check: bool,
    /// Fail (exit 1) if the check saw any loss, reordering or bad payload (rx), or a ping
    /// went unanswered (ping).
    pub expect_no_loss: bool,
    /// Final summary as one JSON object on stdout; live lines on stderr.
    pub json: bool,
    /// No live lines.
    pub quiet: bool,
}

impl Config {
    /// A configuration with pkt-gen's defaults for `mode` on `ports`.
    pub fn new(mode: Mode, ports: Vec<String>, socket: String) -> Self {
        let packet = ports
            .first()
            .is_some_and(|p| BackendKind::of(p) == BackendKind::Packet);
        Config {
            mode,
            ports,
            socket,
            size: 60,
            batch: 512,
            rate_pps: None,
            count: None,
            duration: None,
            idle: None,
            ping_timeout: Duration::from_secs(1),
            src_mac: if matches!(mode, Mode::Rx | Mode::Pong) {
                DEFAULT_DST_MAC
            } else {
                DEFAULT_SRC_MAC
            },
            dst_mac: if packet {
                BROADCAST_MAC
            } else {
                DEFAULT_DST_MAC
            },
            src_mac_from_port: packet,
            busy_poll: false,
            check: false,
            expect_no_loss: false,
            json: false,
            quiet: false,
        }
    }

    /// Checks what can be checked before attaching.
    pub fn validate(&self) -> Result<(), Error> {
        let want_ports = if self.mode == Mode::Fwd { 2 } else { 1 };
        if self.ports.len() != want_ports {
            return Err(Error::Usage(format!(
                "{} needs {want_ports} port(s) (-i), got {}",
                self.mode.name(),
                self.ports.len()
            )));
        }
        if self.mode == Mode::Fwd && self.ports[0] == self.ports[1] {
            return Err(Error::Usage("fwd needs two different ports".into()));
        }
        if self
            .ports
            .iter()
            .any(|p| BackendKind::of(p) != self.backend())
        {
            return Err(Error::Usage(format!(
                "{}: netmap ports ({NETMAP_PREFIX}NAME), packet ports ({PACKET_PREFIX}IFNAME) \
                 and ptnetd ports cannot be mixed",
                self.ports.join(", ")
            )));
        }
        for p in &self.ports {
            let bad = match self.backend() {
                BackendKind::Netmap => crate::netmap::nr_name(p).err().map(|e| e.to_string()),
                BackendKind::Packet => crate::packet::ifname(p).err().map(|e| e.to_string()),
                BackendKind::Client => None,
            };
            if let Some(e) = bad {
                return Err(Error::Usage(e));
            }
        }
        if !(HEADER_LEN..=MAX_FRAME).contains(&self.size) {
            return Err(Error::Usage(format!(
                "frame size {} out of range {HEADER_LEN}..={MAX_FRAME}",
                self.size
            )));
        }
        if self.batch == 0 {
            return Err(Error::Usage("batch must be at least 1".into()));
        }
        if self.rate_pps == Some(0) {
            return Err(Error::Usage("rate must be at least 1 pps".into()));
        }
        if self.src_mac == self.dst_mac
            && !self.src_mac_from_port
            && matches!(self.mode, Mode::Tx | Mode::Ping)
        {
            return Err(Error::Usage(
                "source and destination MAC must differ (a VALE switch would not deliver)".into(),
            ));
        }
        Ok(())
    }

    /// The backend serving the ports ([`Config::validate`] checks that they agree).
    pub fn backend(&self) -> BackendKind {
        self.ports
            .first()
            .map_or(BackendKind::Client, |p| BackendKind::of(p))
    }

    /// Checks the frame size against the largest frame the attached port sends
    /// ([`crate::Backend::max_frame`]: a network interface's MTU plus its Ethernet header).
    pub fn check_max_frame(&self, port: &str, max: Option<usize>) -> Result<(), Error> {
        match max {
            Some(m) if self.size > m => Err(Error::Usage(format!(
                "{port}: {}-byte frames exceed the {m} bytes the interface sends (its MTU, {}, \
                 plus the 14-byte Ethernet header): use -l {m} or less, or raise the MTU",
                self.size,
                m.saturating_sub(crate::packet::ETH_HLEN)
            ))),
            _ => Ok(()),
        }
    }

    /// Checks the frame size against the attached port's buffers: how many slots a frame
    /// takes.
    pub fn slots_per_frame(&self, buf_size: u32, ring_slots: u32) -> Result<usize, Error> {
        let buf = buf_size.max(1) as usize;
        let n = self.size.div_ceil(buf);
        if n > 1 && self.mode != Mode::Tx {
            return Err(Error::Usage(format!(
                "{}: frames of {} bytes exceed the port's {buf}-byte buffers (only tx sends \
                 multi-slot frames)",
                self.mode.name(),
                self.size
            )));
        }
        if n > MAX_FRAGS || n >= ring_slots as usize {
            return Err(Error::Usage(format!(
                "frames of {} bytes need {n} slots of {buf} bytes: too many",
                self.size
            )));
        }
        Ok(n)
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// The port could not be attached.
    #[error("cannot attach {port} through {socket}")]
    Attach {
        /// Port name.
        port: String,
        /// Control socket.
        socket: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Waiting on a port failed.
    #[error("waiting on {port} failed")]
    Wait {
        /// Port name.
        port: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The run completed but its checks failed (its report is still printed).
    #[error("{0}")]
    Check(String),
}

impl Error {
    /// The process exit code: 2 for usage and attach errors, 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Attach { .. } => 2,
            Error::Wait { .. } | Error::Check(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: Mode, ports: &[&str]) -> Config {
        Config::new(
            mode,
            ports.iter().map(|s| s.to_string()).collect(),
            "/tmp/s".into(),
        )
    }

    #[test]
    fn defaults_are_pkt_gens_with_distinct_unicast_macs() {
        let c = cfg(Mode::Tx, &["vale0:a"]);
        assert_eq!((c.size, c.batch), (60, 512));
        assert_ne!(c.src_mac, c.dst_mac);
        assert_eq!(c.dst_mac[0] & 1, 0, "not a multicast/broadcast destination");
        assert!(c.validate().is_ok());
        // rx and pong announce, and pong answers as, the address tx and ping send to.
        assert_eq!(cfg(Mode::Pong, &["vale0:b"]).src_mac, c.dst_mac);
        assert_eq!(cfg(Mode::Rx, &["vale0:b"]).src_mac, c.dst_mac);
    }

    #[test]
    fn fwd_needs_two_distinct_ports_and_the_others_one() {
        assert!(cfg(Mode::Fwd, &["vale0:a"]).validate().is_err());
        assert!(cfg(Mode::Fwd, &["vale0:a", "vale0:a"]).validate().is_err());
        assert!(cfg(Mode::Fwd, &["vale0:a", "vale0:b"]).validate().is_ok());
        assert!(cfg(Mode::Rx, &["vale0:a", "vale0:b"]).validate().is_err());
    }

    #[test]
    fn netmap_prefixed_ports_pick_the_netmap_backend_and_others_the_client() {
        assert_eq!(cfg(Mode::Tx, &["vale0:a"]).backend(), BackendKind::Client);
        assert_eq!(cfg(Mode::Rx, &["pipe0{1"]).backend(), BackendKind::Client);
        assert_eq!(cfg(Mode::Tx, &["ptnet0"]).backend(), BackendKind::Client);
        let c = cfg(Mode::Tx, &["netmap:ptnet0"]);
        assert_eq!(c.backend(), BackendKind::Netmap);
        assert!(c.validate().is_ok());
        assert!(
            cfg(Mode::Fwd, &["netmap:ptnet0", "netmap:ptnet1"])
                .validate()
                .is_ok()
        );
        let mixed = cfg(Mode::Fwd, &["netmap:ptnet0", "vale0:a"]).validate();
        assert_eq!(mixed.unwrap_err().exit_code(), 2);
        assert!(
            cfg(Mode::Fwd, &["vale0:a", "netmap:ptnet0"])
                .validate()
                .is_err()
        );
        assert!(
            cfg(Mode::Rx, &["netmap:"]).validate().is_err(),
            "empty nr_name"
        );
    }

    #[test]
    fn packet_prefixed_ports_pick_the_af_packet_backend_with_broadcast_defaults() {
        let c = cfg(Mode::Tx, &["packet:eth0"]);
        assert_eq!(c.backend(), BackendKind::Packet);
        assert!(c.validate().is_ok());
        assert_eq!(c.dst_mac, BROADCAST_MAC);
        assert!(c.src_mac_from_port);
        let v = cfg(Mode::Tx, &["vale0:a"]);
        assert_eq!((v.dst_mac, v.src_mac_from_port), (DEFAULT_DST_MAC, false));
        assert!(
            cfg(Mode::Fwd, &["packet:eth0", "packet:eth1"])
                .validate()
                .is_ok()
        );
        for mixed in [["packet:eth0", "vale0:a"], ["packet:eth0", "netmap:ptnet0"]] {
            let e = cfg(Mode::Fwd, &mixed).validate().unwrap_err();
            assert_eq!(e.exit_code(), 2, "{mixed:?}");
        }
        let e = cfg(Mode::Rx, &["packet:"]).validate().unwrap_err();
        assert!(e.to_string().contains("packet:IFNAME"), "{e}");
    }

    #[test]
    fn frames_above_a_ports_own_limit_are_usage_errors() {
        let mut c = cfg(Mode::Tx, &["packet:eth0"]);
        c.size = 1514;
        assert!(c.check_max_frame("packet:eth0", Some(1514)).is_ok());
        assert!(c.check_max_frame("vale0:a", None).is_ok());
        c.size = 1515;
        let e = c.check_max_frame("packet:eth0", Some(1514)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("MTU, 1500"), "{e}");
    }

    #[test]
    fn sizes_outside_header_and_slot_limits_are_usage_errors() {
        let mut c = cfg(Mode::Tx, &["vale0:a"]);
        c.size = HEADER_LEN - 1;
        assert_eq!(c.validate().unwrap_err().exit_code(), 2);
        c.size = 9000;
        assert!(c.validate().is_ok());
        assert_eq!(c.slots_per_frame(2048, 1024).unwrap(), 5);
        assert!(c.slots_per_frame(64, 1024).is_err(), "more than MAX_FRAGS");
        c.mode = Mode::Ping;
        assert!(
            c.slots_per_frame(2048, 1024).is_err(),
            "ping frames fit a buffer"
        );
        c.size = 2048;
        assert_eq!(c.slots_per_frame(2048, 1024).unwrap(), 1);
    }
}
