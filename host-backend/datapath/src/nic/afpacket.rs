//! AF_PACKET sockets with TPACKET_V3 memory-mapped rings: an RX ring of blocks the kernel
//! fills and retires, and a TX ring of fixed frames flushed with one `sendto` per batch.
//!
//! It serves the AF_PACKET backend of NIC ports ([`AfPacketBackend`]) and the benchmarks'
//! kernel peer (veth + AF_PACKET). All `unsafe` for the socket and its rings lives in this module;
//! the frame data the kernel hands over is only read through bounds-checked slices of the
//! mapping.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::backend::{BackendKind, NicBackend, NicError, RX_CSUM_PARTIAL};

// <linux/if_packet.h> values.
const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
/// PACKET_FANOUT_HASH: flows spread over the group's sockets by the kernel's flow hash.
const PACKET_FANOUT_HASH: u32 = 0;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// Where the frame data starts in a TX slot: TPACKET_ALIGN(sizeof(struct tpacket3_hdr)).
const TX_DATA_OFFSET: usize = 48;
/// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then tpacket_hdr_v1).
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
const BLOCK_LEN: usize = 20;
/// Offsets in `struct tpacket3_hdr`.
const PKT_NEXT: usize = 0;
const PKT_SNAPLEN: usize = 12;
const PKT_LEN: usize = 16;
const PKT_STATUS: usize = 20;
const PKT_MAC: usize = 24;

#[repr(C)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

/// Ring geometry.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Bytes per block (a multiple of the page size).
    pub block_size: u32,
    /// Blocks.
    pub blocks: u32,
    /// Bytes per TX frame slot (RX frames are packed into blocks).
    pub frame_size: u32,
    /// Milliseconds after which the kernel retires a partly filled RX block.
    pub retire_ms: u32,
    /// Bypass the qdisc layer on transmit (PACKET_QDISC_BYPASS).
    pub qdisc_bypass: bool,
    /// RX: put the interface in promiscuous mode for as long as the socket lives
    /// (PACKET_MR_PROMISC: reference counted by the kernel, undone when the socket closes).
    pub promisc: bool,
    /// RX: do not receive the frames the host itself transmits on the interface
    /// (PACKET_IGNORE_OUTGOING).
    pub ignore_outgoing: bool,
    /// RX: join fanout group `id` (PACKET_FANOUT_HASH), so that several sockets on one
    /// interface share its traffic by flow.
    pub fanout: Option<u16>,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 1 << 20,
            blocks: 16,
            frame_size: 2048,
            retire_ms: 1,
            qdisc_bypass: true,
            promisc: false,
            ignore_outgoing: false,
            fanout: None,
        }
    }
}

/// Which ring a socket has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Receives every frame of the interface.
    Rx,
    /// Transmits on the interface.
    Tx,
}

/// An AF_PACKET socket bound to one interface with one TPACKET_V3 ring.
///
/// Invariant: `map` points to `map_len` bytes, the ring the kernel shares with us; it stays
/// mapped until drop.
#[derive(Debug)]
pub struct PacketRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    cfg: RingConfig,
    dir: Direction,
    /// RX: the next block to look at. TX: the next frame slot.
    next: u32,
    frames: u32,
    /// TX: frames queued since the last flush.
    queued: u32,
    ifindex: u32,
}

/// What the kernel says about one received frame besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// Length on the wire; larger than the slice when the kernel truncated the frame.
    pub len: u32,
    /// The frame's `tp_status` bits (TP_STATUS_CSUMNOTREADY, ...).
    pub status: u32,
}

/// `tp_status` bit: the frame's transport checksum was left to offload (not filled in).
pub const TP_STATUS_CSUMNOTREADY: u32 = 8;

/// Counters the kernel keeps for an RX socket (PACKET_STATISTICS, reset on every read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Frames the socket saw.
    pub packets: u32,
    /// Frames dropped because the ring was full.
    pub drops: u32,
}

// SAFETY: the mapping belongs to this value alone; the kernel side is synchronised through the
// status words, read and written atomically.
unsafe impl Send for PacketRing {}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid T for the duration of the call and its size is passed along.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

impl PacketRing {
    /// Opens a socket on `ifname` with a ring for `dir` (root or CAP_NET_RAW).
    pub fn open(ifname: &str, dir: Direction, cfg: RingConfig) -> io::Result<Self> {
        let name = CString::new(ifname).map_err(|_| io::Error::other("interface name with NUL"))?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        if cfg.block_size % 4096 != 0
            || cfg.frame_size < 128
            || cfg.block_size % cfg.frame_size != 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad ring geometry",
            ));
        }
        // Receive everything (ETH_P_ALL) on the RX socket; nothing on the TX one.
        let proto = if dir == Direction::Rx {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        // SAFETY: plain socket creation.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        })?;
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, PACKET_VERSION, &TPACKET_V3)?;
        if dir == Direction::Tx && cfg.qdisc_bypass {
            setsockopt(&fd, PACKET_QDISC_BYPASS, &1i32)?;
        }
        if dir == Direction::Rx && cfg.ignore_outgoing {
            setsockopt(&fd, PACKET_IGNORE_OUTGOING, &1i32)?;
        }
        let frames = cfg.block_size / cfg.frame_size * cfg.blocks;
        let req = TpacketReq3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.blocks,
            tp_frame_size: cfg.frame_size,
            tp_frame_nr: frames,
            tp_retire_blk_tov: if dir == Direction::Rx {
                cfg.retire_ms
            } else {
                0
            },
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(
            &fd,
            if dir == Direction::Rx {
                PACKET_RX_RING
            } else {
                PACKET_TX_RING
            },
            &req,
        )?;
        let map_len = cfg.block_size as usize * cfg.blocks as usize;
        // SAFETY: maps the ring just configured on our socket, at an address of the kernel's
        // choosing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        let ring = PacketRing {
            fd,
            // PANIC: mmap never returns null on success.
            map: NonNull::new(p.cast()).expect("mmap returned null"),
            map_len,
            cfg,
            dir,
            next: 0,
            frames,
            queued: 0,
            ifindex,
        };
        // SAFETY: a fully initialised sockaddr_ll and its size.
        cvt(unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if dir == Direction::Rx && cfg.promisc {
            let mr = libc::packet_mreq {
                mr_ifindex: ifindex as i32,
                mr_type: PACKET_MR_PROMISC,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(&ring.fd, PACKET_ADD_MEMBERSHIP, &mr)?;
        }
        if let (Direction::Rx, Some(id)) = (dir, cfg.fanout) {
            setsockopt(
                &ring.fd,
                PACKET_FANOUT,
                &(u32::from(id) | PACKET_FANOUT_HASH << 16),
            )?;
        }
        Ok(ring)
    }

    /// The socket, for poll.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Takes the socket's pending error (SO_ERROR): ENETDOWN after the interface went down or
    /// away.
    pub fn take_error(&self) -> Option<io::Error> {
        crate::sys::socket_error(&self.fd)
    }

    /// RX: the kernel's counters since the last call (PACKET_STATISTICS).
    pub fn stats(&self) -> io::Result<SocketStats> {
        // struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt.
        let mut v = [0u32; 3];
        let mut l = std::mem::size_of_val(&v) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `l` bytes into `v`, which we own.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                v.as_mut_ptr().cast(),
                &mut l,
            )
        })?;
        Ok(SocketStats {
            packets: v[0],
            drops: v[1],
        })
    }

    /// TX: bytes a frame may have.
    pub fn tx_room(&self) -> usize {
        self.cfg.frame_size as usize - TX_DATA_OFFSET
    }

    /// The status word at byte offset `ofs` of the mapping.
    fn word(&self, ofs: usize) -> &AtomicU32 {
        assert!(ofs % 4 == 0 && ofs + 4 <= self.map_len);
        // SAFETY: in bounds and aligned (checked); the kernel and we access it atomically.
        unsafe { &*self.map.as_ptr().add(ofs).cast::<AtomicU32>() }
    }

    fn u32_at(&self, ofs: usize) -> u32 {
        self.word(ofs).load(Ordering::Relaxed)
    }

    /// RX: hands every frame of the blocks the kernel has retired to `f`, returns the blocks
    /// to the kernel, and returns the number of frames.
    pub fn rx_burst(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        self.rx_burst_meta(|b, _| f(b))
    }

    /// RX: as [`PacketRing::rx_burst`], with each frame's wire length and status.
    pub fn rx_burst_meta(&mut self, mut f: impl FnMut(&[u8], RxMeta)) -> usize {
        let bs = self.cfg.block_size as usize;
        let mut count = 0;
        for _ in 0..self.cfg.blocks {
            let block = self.next as usize * bs;
            if self.word(block + BLOCK_STATUS).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let n = self.u32_at(block + BLOCK_NUM_PKTS);
            let len = (self.u32_at(block + BLOCK_LEN) as usize).min(bs);
            let mut ofs = self.u32_at(block + BLOCK_FIRST_PKT) as usize;
            for _ in 0..n {
                // Every offset comes from the kernel; still, never leave the block.
                if ofs + 48 > len || ofs % 4 != 0 {
                    break;
                }
                let p = block + ofs;
                let snap = self.u32_at(p + PKT_SNAPLEN) as usize;
                let meta = RxMeta {
                    len: self.u32_at(p + PKT_LEN),
                    status: self.u32_at(p + PKT_STATUS),
                };
                // tp_mac is the first u16 of the word at PKT_MAC (tp_net the second).
                let w = self.u32_at(p + PKT_MAC).to_ne_bytes();
                let mac = usize::from(u16::from_ne_bytes([w[0], w[1]]));
                if ofs + mac + snap <= len {
                    // SAFETY: the frame lies inside this block of the mapping (checked), which
                    // the kernel does not write while the block is ours (TP_STATUS_USER).
                    f(
                        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(p + mac), snap) },
                        meta,
                    );
                    count += 1;
                }
                let next = self.u32_at(p + PKT_NEXT) as usize;
                if next == 0 {
                    break;
                }
                ofs += next;
            }
            self.word(block + BLOCK_STATUS)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.next = (self.next + 1) % self.cfg.blocks;
        }
        count
    }

    /// Waits up to `timeout_ms` for the socket to become readable (RX) or writable (TX).
    pub fn poll(&self, timeout_ms: i32) -> io::Result<bool> {
        let events = if self.dir == Direction::Rx {
            libc::POLLIN
        } else {
            libc::POLLOUT
        };
        Ok(crate::sys::poll_one(&self.fd, events, timeout_ms)? != 0)
    }

    /// TX: fills up to `n` free frame slots with `fill` (which writes a frame and returns its
    /// length), then asks the kernel to send them with one `sendto`. Returns frames queued.
    pub fn tx_burst(
        &mut self,
        n: u32,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> io::Result<u32> {
        let mut queued = 0;
        while queued < n {
            let Some(buf) = self.tx_slot() else {
                break;
            };
            let len = fill(buf);
            self.tx_commit(len);
            queued += 1;
        }
        self.tx_flush()?;
        Ok(queued)
    }

    /// TX: the data area of the next free frame slot, or `None` while the ring is full. Write
    /// a frame into it and call [`PacketRing::tx_commit`]; nothing is queued otherwise.
    pub fn tx_slot(&mut self) -> Option<&mut [u8]> {
        let fs = self.cfg.frame_size as usize;
        let slot = self.next as usize * fs;
        let st = self.word(slot + PKT_STATUS).load(Ordering::Acquire);
        if st != TP_STATUS_AVAILABLE && st & TP_STATUS_WRONG_FORMAT == 0 {
            return None;
        }
        // SAFETY: the slot's data area is inside the mapping and ours while its status says
        // available; the slice borrows `self` mutably, so no second one exists.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_ptr().add(slot + TX_DATA_OFFSET),
                fs - TX_DATA_OFFSET,
            )
        })
    }

    /// TX: queues the frame written into the slot [`PacketRing::tx_slot`] returned.
    pub fn tx_commit(&mut self, len: usize) {
        let fs = self.cfg.frame_size as usize;
        let slot = self.next as usize * fs;
        let len = len.min(fs - TX_DATA_OFFSET) as u32;
        self.word(slot + PKT_LEN).store(len, Ordering::Relaxed);
        self.word(slot + PKT_SNAPLEN).store(len, Ordering::Relaxed);
        self.word(slot + PKT_NEXT).store(0, Ordering::Relaxed);
        self.word(slot + PKT_STATUS)
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (self.next + 1) % self.frames;
        self.queued += 1;
    }

    /// TX: asks the kernel to send every queued frame (one `sendto`, not waiting).
    pub fn tx_flush(&mut self) -> io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        self.queued = 0;
        match crate::sys::kick_tx(&self.fd) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }
}

/// An AF_PACKET socket that receives nothing and only holds `ifname` in promiscuous mode
/// (PACKET_MR_PROMISC: reference counted by the kernel, released when the socket closes, so a
/// crashed daemon leaves the interface as it found it).
pub fn promisc_holder(ifname: &str) -> io::Result<OwnedFd> {
    let name = CString::new(ifname).map_err(|_| io::Error::other("interface name with NUL"))?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket creation (protocol 0: no frame is ever queued to it).
    let raw =
        cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mr = libc::packet_mreq {
        mr_ifindex: ifindex as i32,
        mr_type: PACKET_MR_PROMISC,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(&fd, PACKET_ADD_MEMBERSHIP, &mr)?;
    Ok(fd)
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmaps the ring mapped in `open`; no slice into it outlives `&mut self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// The AF_PACKET backend: a TPACKET_V3 RX ring (promiscuous, ignoring the host's own
/// transmissions) and a TX ring with PACKET_QDISC_BYPASS.
#[derive(Debug)]
pub struct AfPacketBackend {
    rx: PacketRing,
    tx: PacketRing,
}

impl AfPacketBackend {
    /// Opens both sockets on `ifname`, with TX frames of at least `max_frame` bytes.
    pub fn open(ifname: &str, max_frame: u32) -> Result<Self, NicError> {
        Self::open_fanout(ifname, max_frame, None)
    }

    /// [`AfPacketBackend::open`], with the RX socket in fanout group `fanout` (hash): the
    /// sockets of one group share the interface's frames, each flow to one socket.
    pub fn open_fanout(
        ifname: &str,
        max_frame: u32,
        fanout: Option<u16>,
    ) -> Result<Self, NicError> {
        let io = |what| NicError::io(what, ifname);
        // RX: 64 blocks of 128 KiB, retired after 1 ms (the latency bound of a lone frame).
        let block = (128u32 << 10).max((max_frame + 128).next_power_of_two());
        let rx = PacketRing::open(
            ifname,
            Direction::Rx,
            RingConfig {
                block_size: block,
                blocks: 64,
                frame_size: 2048,
                retire_ms: 1,
                qdisc_bypass: false,
                promisc: true,
                ignore_outgoing: true,
                fanout,
            },
        )
        .map_err(io("opening the AF_PACKET RX ring"))?;
        // TX: 1024 frames (the port's ring size) of a power of two holding the largest frame.
        let frame = (max_frame + 48).next_power_of_two().max(2048);
        let per_block = ((64u32 << 10) / frame).max(1);
        let tx = PacketRing::open(
            ifname,
            Direction::Tx,
            RingConfig {
                block_size: per_block * frame,
                blocks: 1024_u32.div_ceil(per_block),
                frame_size: frame,
                retire_ms: 0,
                qdisc_bypass: true,
                promisc: false,
                ignore_outgoing: false,
                fanout: None,
            },
        )
        .map_err(io("opening the AF_PACKET TX ring"))?;
        Ok(AfPacketBackend { rx, tx })
    }
}

impl NicBackend for AfPacketBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AfPacket
    }

    fn ifindex(&self) -> u32 {
        self.rx.ifindex()
    }

    fn poll_fds(&self, want_tx: bool, fds: &mut [libc::pollfd]) -> usize {
        let mut n = 0;
        for (fd, ev) in [
            (self.rx.raw_fd(), libc::POLLIN),
            (self.tx.raw_fd(), if want_tx { libc::POLLOUT } else { 0 }),
        ] {
            if let Some(p) = fds.get_mut(n) {
                *p = libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                };
                n += 1;
            }
        }
        n
    }

    fn rx(&mut self, sink: &mut dyn FnMut(&[u8], u32, u32)) -> usize {
        self.rx.rx_burst_meta(|b, m| {
            let partial = m.status & TP_STATUS_CSUMNOTREADY != 0;
            sink(b, m.len, if partial { RX_CSUM_PARTIAL } else { 0 })
        })
    }

    fn tx_slot(&mut self) -> Option<&mut [u8]> {
        self.tx.tx_slot()
    }

    fn tx_commit(&mut self, len: usize) {
        self.tx.tx_commit(len);
    }

    fn tx_flush(&mut self) -> io::Result<()> {
        self.tx.tx_flush()
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.rx.take_error().or_else(|| self.tx.take_error())
    }

    fn kernel_drops(&mut self) -> u64 {
        self.rx.stats().map_or(0, |s| u64::from(s.drops))
    }
}
