//! ptnet-proto: the control protocol between `ptnetd` and its clients (`ptnetctl`, host
//! applications, the daemon's own tests). One module: the messages, their framing and the
//! descriptor passing.
//!
//! A Unix stream socket carries frames of a 4-byte little-endian length followed by that many
//! bytes of JSON. A client sends one [`Request`] and reads one [`Reply`]; an `attach` reply
//! also carries file descriptors (SCM_RIGHTS) in this order: the region memfd, the CSB memfd,
//! one kick eventfd per ring, one interrupt eventfd per ring (rings in CSB order: TX rings,
//! then RX rings). An attached client keeps the connection open; closing it (or dying)
//! detaches the port. SPEC.md §4 is the normative description.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// Where `ptnetd` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ptnetd/ptnetd.sock";
/// Environment variable naming another socket.
pub const SOCKET_ENV: &str = "PTNET_SOCKET";
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// Most file descriptors in one reply (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 253;
/// Protocol version carried in every request.
pub const PROTO_VERSION: u32 = 1;

/// An error and its sources, on one line: how a reply's message carries an error, and how
/// the daemon and the tools print one.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The socket path clients use: `$PTNET_SOCKET` or [`DEFAULT_SOCKET`].
pub fn socket_path() -> String {
    std::env::var(SOCKET_ENV).unwrap_or_else(|_| DEFAULT_SOCKET.to_owned())
}

/// Trust profile of a port (SPEC.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// A private region; the switch copies.
    #[default]
    Untrusted,
    /// A region shared with the other trusted ports of the switch (their clients map it
    /// too); the switch still copies between ports. Pipes are zero copy.
    Trusted,
}

/// Geometry and options of a port to attach or create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortRequest {
    /// netmap port name (`vale0:a`, `pipe0{1`, ...).
    pub port: String,
    /// TX rings (default 1).
    #[serde(default)]
    pub tx_rings: Option<u32>,
    /// RX rings (default 1).
    #[serde(default)]
    pub rx_rings: Option<u32>,
    /// Slots per ring (default 1024).
    #[serde(default)]
    pub slots: Option<u32>,
    /// Extra buffers for the client.
    #[serde(default)]
    pub extra_bufs: u32,
    /// Trust profile (VALE ports only).
    #[serde(default)]
    pub profile: Profile,
    /// Run this client's sync loop in busy-poll mode.
    #[serde(default)]
    pub busy_poll: bool,
    /// VALE ports: the only source MAC the port may send from (`02:00:00:00:00:01`); frames
    /// from any other are dropped before the switch learns from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_lock: Option<String>,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Attach to a port (created on demand, as netmap does), receiving its memory.
    Attach(PortRequest),
    /// Create a persistent port without attaching.
    CreatePort(PortRequest),
    /// Destroy a persistent port (it must not be attached).
    DestroyPort {
        /// Port name.
        port: String,
    },
    /// Create a VALE switch.
    CreateSwitch {
        /// `valeX`.
        name: String,
    },
    /// Destroy a VALE switch and its ports (none may be attached).
    DestroySwitch {
        /// `valeX`.
        name: String,
    },
    /// List switches, ports and counters.
    List,
    /// Attach host interface `ifname` to switch `switch` as port `switch:ifname` (netmap's
    /// `vale-ctl -a`); the switch is created if needed.
    AttachNic {
        /// `valeX`.
        switch: String,
        /// An existing host interface.
        ifname: String,
        /// `auto` (default), `af_packet`, `af_xdp` or `netmap`.
        #[serde(default)]
        backend: Option<String>,
        /// Buffer size of the port (default 2048): the largest frame it carries.
        #[serde(default)]
        buf_size: Option<u32>,
        /// Also connect the host's own stack to the switch through a tap the daemon creates
        /// (netmap's host rings, `vale-ctl -h`); it is named `ptnet-IFNAME` unless
        /// `host_stack_tap` names it (which implies this).
        #[serde(default)]
        host_stack: bool,
        /// The host-stack tap's name.
        #[serde(default)]
        host_stack_tap: Option<String>,
    },
    /// Detach a host interface from a switch (and its host-stack tap, if it has one).
    DetachNic {
        /// `valeX`.
        switch: String,
        /// The interface.
        ifname: String,
    },
    /// Give host interface `ifname` a stand-alone port for one client or VM (netmap's
    /// `netmap:eth0`): the port named `ifname` (or `netmap:ifname`), persistent. Attaching to
    /// that name also creates it on demand, with the defaults.
    CreateNicPort {
        /// An existing host interface.
        ifname: String,
        /// `auto` (default), `af_packet`, `af_xdp` or `netmap`.
        #[serde(default)]
        backend: Option<String>,
        /// Buffer size (default 2048): the largest frame.
        #[serde(default)]
        buf_size: Option<u32>,
        /// Ring pairs (default 1); more than one come from AF_PACKET's fanout (hash).
        #[serde(default)]
        rings: Option<u32>,
    },
    /// Serve a port to a VM as a ptnet device over vhost-user (QEMU connects to `socket`);
    /// the port is created (persistent) if needed and belongs to the VM while served.
    ServeVm(VmRequest),
    /// Stop serving a port to a VM (the VM, if connected, loses the device).
    StopVm {
        /// Port name.
        port: String,
    },
    /// The QEMU arguments that give a VM the ptnet device of a served port.
    QemuArgs {
        /// Port name.
        port: String,
    },
}

/// The device a served port appears as in the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VmDevice {
    /// The ptnet passthrough device (the port's memory is mapped into the VM).
    #[default]
    Ptnet,
    /// A virtio-net device (`-netdev vhost-user` + `virtio-net-pci`): any guest driver, or
    /// DPDK's `virtio_user`; frames are copied between guest buffers and the port.
    VirtioNet,
}

impl std::fmt::Display for VmDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmDevice::Ptnet => "ptnet",
            VmDevice::VirtioNet => "virtio-net",
        })
    }
}

/// How QEMU carries a ptnet device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VmTransport {
    /// vhost-user and QEMU's generic vhost-user device (needs the project's QEMU patches).
    #[default]
    VhostUser,
    /// QEMU's stock `ivshmem-doorbell` device, with the daemon as its ivshmem server: any
    /// QEMU, no guest RAM shared with the daemon (ptnet devices only).
    Ivshmem,
}

impl std::str::FromStr for VmTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vhost-user" => Ok(VmTransport::VhostUser),
            "ivshmem" => Ok(VmTransport::Ivshmem),
            _ => Err(format!("transport {s:?}: vhost-user or ivshmem")),
        }
    }
}

impl std::fmt::Display for VmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmTransport::VhostUser => "vhost-user",
            VmTransport::Ivshmem => "ivshmem",
        })
    }
}

/// How to serve a port to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VmRequest {
    /// The port (geometry and profile as in [`PortRequest`]).
    #[serde(flatten)]
    pub port: PortRequest,
    /// The vhost-user socket QEMU connects to: a file name (no `/`) in the daemon's VM socket
    /// directory (`[daemon] vm_socket_dir`). `None`: named after the port. `qemu-args` prints
    /// the whole path.
    #[serde(default)]
    pub socket: Option<String>,
    /// MAC address the guest sees (`02:..`), default derived from the port name.
    #[serde(default)]
    pub mac: Option<String>,
    /// The device the VM sees (default: ptnet).
    #[serde(default)]
    pub device: VmDevice,
    /// Port security for a VALE port: `Some(true)` lets the VM send only from its device's
    /// MAC (`mac`, or the default), so it cannot take another station's traffic by claiming
    /// its address; `Some(false)` lets it send from any. `None`: locked for a virtio-net
    /// device (a kernel stack sends from its own MAC), not for a ptnet device (netmap
    /// applications choose their source addresses: generators, bridges, middleboxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_lock: Option<bool>,
    /// How QEMU carries the device (default: vhost-user).
    #[serde(default, skip_serializing_if = "is_default")]
    pub transport: VmTransport,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A request with the protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTO_VERSION`].
    pub version: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// What an attached client needs to map and drive its port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachInfo {
    /// Canonical port name.
    pub port: String,
    /// Size of the region memfd.
    pub region_size: u64,
    /// Offset of the port's `netmap_if` in the region.
    pub nifp_offset: u64,
    /// Region id (`nr_mem_id`).
    pub mem_id: u16,
    /// TX rings.
    pub num_tx_rings: u32,
    /// RX rings.
    pub num_rx_rings: u32,
    /// Slots per TX ring.
    pub num_tx_slots: u32,
    /// Slots per RX ring.
    pub num_rx_slots: u32,
    /// Buffer size.
    pub buf_size: u32,
    /// Size of the CSB memfd.
    pub csb_size: u64,
    /// Offset of the ktoa array in the CSB memfd (the atok array is at 0).
    pub csb_ktoa_offset: u64,
    /// Whether the daemon runs this client's sync loop in busy-poll mode (then no kicks are
    /// ever needed).
    pub busy_poll: bool,
}

/// How full a port's rings are now, summed over its rings, from the daemon's own indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RingUse {
    /// TX slots the client filled that the port has not consumed yet.
    pub tx: u64,
    /// RX slots holding frames the client has not released yet.
    pub rx: u64,
}

/// Counters of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Counters {
    /// Packets the port's client transmitted and the port accepted.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets delivered to the port's client.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Packets for the port dropped because its RX ring was full.
    pub rx_drops: u64,
    /// Packets from the port dropped, for any of the causes below.
    pub tx_drops: u64,
    /// Of those: bad slots (a buffer index or length outside the port's memory).
    #[serde(default)]
    pub tx_drops_bad_slot: u64,
    /// Of those: no destination (the switch's module pointed back at the sender or at a
    /// port that is gone).
    #[serde(default)]
    pub tx_drops_no_destination: u64,
    /// Of those: dropped by the switch's forwarding module (a runt frame, for the learning
    /// bridge).
    #[serde(default)]
    pub tx_drops_lookup: u64,
    /// Of those: a source MAC other than the one the port is locked to.
    #[serde(default)]
    pub tx_drops_mac_lock: u64,
    /// Ring resets after invalid client pointers.
    pub ring_resets: u64,
    /// Kicks received.
    pub kicks: u64,
    /// Interrupts raised.
    pub irqs: u64,
}

/// One port in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    /// Full name.
    pub name: String,
    /// `vale`, `pipe`.
    pub kind: String,
    /// Whether a client is attached.
    pub attached: bool,
    /// Region id.
    pub mem_id: u16,
    /// Trust profile.
    pub profile: Profile,
    /// TX rings.
    pub tx_rings: u32,
    /// RX rings.
    pub rx_rings: u32,
    /// Slots per ring.
    pub slots: u32,
    /// Counters (the switch's view: `tx` is what the port's client, here the NIC worker, gave
    /// the switch).
    pub stats: Counters,
    /// For a NIC port: the interface, its backend and the interface's counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicEntry>,
    /// For a port served to a VM: its vhost-user socket and device state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmEntry>,
    /// The only source MAC the port may send from, if locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_lock: Option<String>,
    /// How full its rings are now.
    #[serde(default)]
    pub ring_use: RingUse,
}

/// A port served to a VM (as a ptnet or a virtio-net device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VmEntry {
    /// vhost-user socket.
    pub socket: String,
    /// The device the VM sees.
    #[serde(default)]
    pub device: VmDevice,
    /// How QEMU carries it.
    #[serde(default)]
    pub transport: VmTransport,
    /// Frontend connections so far.
    pub connections: u64,
    /// Device starts (driver DRIVER_OK with a valid CSB) so far.
    pub starts: u64,
    /// Starts refused (bad CSB addresses, ...).
    pub refused: u64,
    /// Whether the device is running now.
    pub running: bool,
    /// Whether the port's region is mapped into the VM now.
    pub mem_ready: bool,
    /// Interrupts raised to the VM (virtio-net: used-ring notifications).
    pub irqs: u64,
    /// virtio-net only: chains refused (malformed, outside guest memory, oversized).
    #[serde(default)]
    pub bad_chains: u64,
    /// Bytes of virtio-net header in front of the port's frames now (12 while a driver that
    /// negotiated the offloads runs, else 0).
    #[serde(default)]
    pub vnet_hdr_len: u32,
    /// virtio-net only: the MAC address the device offers (`02:..`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// virtio-net only: queue pairs offered (0 for a ptnet device).
    #[serde(default)]
    pub queue_pairs: u16,
}

/// The host-interface side of a NIC port (the interface's point of view: `rx` came in from the
/// wire, `tx` went out to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NicEntry {
    /// Interface name.
    pub ifname: String,
    /// Backend in use (`af_packet`, `af_xdp`, `netmap`), none while the link is down.
    #[serde(default)]
    pub backend: Option<String>,
    /// Why the backend is not the one asked for, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `up`, `down` or `gone`.
    pub link: String,
    /// Frames received on the interface and handed to the switch.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Received frames dropped (too large, truncated, kernel ring full).
    pub rx_drops: u64,
    /// Frames transmitted on the interface.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames for the interface dropped (link down, too large, send failed).
    pub tx_drops: u64,
    /// Times the link went down or came back.
    pub link_changes: u64,
}

/// One switch in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchEntry {
    /// `valeX`.
    pub name: String,
    /// Its ports.
    pub ports: Vec<PortEntry>,
    /// Frames looked up by its forwarding module so far.
    #[serde(default)]
    pub lookups: u64,
    /// Frames flooded to every other port so far (broadcast, multicast, unknown unicast).
    #[serde(default)]
    pub floods: u64,
    /// Stations (source MACs) learned now; absent for a module that does not learn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<u64>,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Done.
    Ok,
    /// Failed.
    Error {
        /// Why.
        message: String,
    },
    /// Attached; the descriptors come with this frame.
    Attached(AttachInfo),
    /// A host interface was attached to a switch.
    NicAttached {
        /// Port name, `valeX:ifname`.
        port: String,
        /// The host-stack tap attached with it (port `valeX:TAP`), if asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_stack: Option<String>,
        /// The interface side.
        nic: NicEntry,
    },
    /// QEMU arguments (see [`Request::QemuArgs`]).
    QemuArgs {
        /// Arguments, one per element.
        args: Vec<String>,
    },
    /// The daemon's switches and pipes.
    Listing {
        /// Switches.
        switches: Vec<SwitchEntry>,
        /// Ports outside switches: pipe ends (kind `pipe`) and host interfaces given
        /// directly to one client (kind `nic`).
        pipes: Vec<PortEntry>,
    },
}

/// Protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Socket error.
    #[error("control socket I/O failed")]
    Io(#[from] io::Error),
    /// The peer closed the connection.
    #[error("the peer closed the control connection")]
    Closed,
    /// A frame over [`MAX_FRAME`].
    #[error("control frame of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a valid message.
    #[error("malformed control message")]
    Json(#[from] serde_json::Error),
}

/// Writes one frame, with `fds` attached.
pub fn send<T: Serialize>(sock: &UnixStream, msg: &T, fds: &[RawFd]) -> Result<(), ProtoError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(ProtoError::TooLarge(body.len()));
    }
    let len = (body.len() as u32).to_le_bytes();
    let bufs = [IoSlice::new(&len), IoSlice::new(&body)];
    let total = len.len() + body.len();
    let sent = if fds.is_empty() {
        (&*sock).write_vectored(&bufs)?
    } else {
        sock.send_with_fds(&[&len[..], &body[..]], fds)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?
    };
    if sent < total {
        // The descriptors went with the first bytes; the rest is plain data.
        let mut rest = Vec::with_capacity(total - sent);
        rest.extend_from_slice(&len);
        rest.extend_from_slice(&body);
        (&*sock).write_all(&rest[sent..])?;
    }
    Ok(())
}

/// Reads one frame and the descriptors that came with it (owned `File`s).
pub fn recv<T: for<'de> Deserialize<'de>>(sock: &UnixStream) -> Result<(T, Vec<File>), ProtoError> {
    recv_by(sock, None)
}

/// As [`recv`], but the whole frame must have arrived by `deadline` (however the sender
/// spreads its bytes; a timeout per read would let one byte every few seconds hold a reader
/// forever): after it, `Io` with `WouldBlock` or `TimedOut`. Changes the socket's read timeout.
pub fn recv_within<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
    deadline: std::time::Instant,
) -> Result<(T, Vec<File>), ProtoError> {
    recv_by(sock, Some(deadline))
}

/// Sets the read timeout to what is left until `deadline` (at least 1 ms: zero means "none").
fn time_left(sock: &UnixStream, deadline: Option<std::time::Instant>) -> io::Result<()> {
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        sock.set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))?;
    }
    Ok(())
}

fn recv_by<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
    deadline: Option<std::time::Instant>,
) -> Result<(T, Vec<File>), ProtoError> {
    time_left(sock, deadline)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut raw = [-1 as RawFd; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the iovec describes `buf`, which we own and which may receive any bytes.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut raw) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let files: Vec<File> = raw[..nfds]
        .iter()
        // SAFETY: recvmsg just installed these descriptors for us; nothing else owns them.
        .map(|&fd| unsafe { File::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Err(ProtoError::Closed);
    }
    let mut have = n;
    while have < 4 {
        time_left(sock, deadline)?;
        let k = (&*sock).read(&mut buf[have..])?;
        if k == 0 {
            return Err(ProtoError::Closed);
        }
        have += k;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.resize(4 + len, 0);
    }
    while have < 4 + len {
        time_left(sock, deadline)?;
        let k = (&*sock).read(&mut buf[have..4 + len])?;
        if k == 0 {
            return Err(ProtoError::Closed);
        }
        have += k;
    }
    Ok((serde_json::from_slice(&buf[4..4 + len])?, files))
}

/// Sends `request` over a new connection and returns the reply, its descriptors and the
/// connection (keep it open to stay attached).
///
/// A daemon that refuses a connection outright (too many waiting) answers and closes it at
/// once, maybe before the request is written: the write then fails (`EPIPE`), but the answer
/// is already there to read, and it is what the caller gets.
pub fn call(path: &str, request: Request) -> Result<(Reply, Vec<File>, UnixStream), ProtoError> {
    let sock = UnixStream::connect(path)?;
    let sent = send(
        &sock,
        &Envelope {
            version: PROTO_VERSION,
            request,
        },
        &[],
    );
    let refused_early = |e: &ProtoError| {
        matches!(e, ProtoError::Io(io) if matches!(
            io.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ))
    };
    match sent {
        Err(e) if !refused_early(&e) => return Err(e),
        _ => {}
    }
    match recv(&sock) {
        Ok((reply, files)) => Ok((reply, files, sock)),
        Err(e) => Err(sent.err().unwrap_or(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_json_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        send(&a, &Reply::Ok, &[f.as_raw_fd(), f.as_raw_fd()]).unwrap();
        let (r, files): (Reply, _) = recv(&b).unwrap();
        assert_eq!(r, Reply::Ok);
        assert_eq!(files.len(), 2);
    }

    #[test]
    fn requests_are_tagged_by_op() {
        let e = Envelope {
            version: 1,
            request: Request::DestroyPort {
                port: "vale0:a".into(),
            },
        };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"version":1,"op":"destroy_port","port":"vale0:a"}"#);
        assert_eq!(serde_json::from_str::<Envelope>(&s).unwrap(), e);
        let s = r#"{"version":1,"op":"attach_nic","switch":"vale0","ifname":"eth0"}"#;
        assert_eq!(
            serde_json::from_str::<Envelope>(s).unwrap().request,
            Request::AttachNic {
                switch: "vale0".into(),
                ifname: "eth0".into(),
                backend: None,
                buf_size: None,
                host_stack: false,
                host_stack_tap: None,
            }
        );
    }

    #[test]
    fn oversized_frames_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&(u32::MAX).to_le_bytes()).unwrap();
        assert!(matches!(recv::<Reply>(&b), Err(ProtoError::TooLarge(_))));
    }
}
