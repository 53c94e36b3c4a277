//! AF_PACKET sockets with TPACKET_V3 memory-mapped rings: an RX ring of blocks the kernel
//! fills and retires, and a TX ring of fixed frames flushed with one `sendto` per batch.
//!
//! Today this serves the benchmarks (the kernel path a user would otherwise take: veth +
//! AF_PACKET); it is the base of the AF_PACKET NIC port. All `unsafe` for the socket and its
//! rings lives in this module; the frame data the kernel hands over is only read through
//! bounds-checked slices of the mapping.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

// <linux/if_packet.h> values.
const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
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
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 1 << 20,
            blocks: 16,
            frame_size: 2048,
            retire_ms: 1,
            qdisc_bypass: true,
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
        };
        // SAFETY: a fully initialised sockaddr_ll and its size.
        cvt(unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(ring)
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
                // tp_mac is the first u16 of the word at PKT_MAC (tp_net the second).
                let w = self.u32_at(p + PKT_MAC).to_ne_bytes();
                let mac = usize::from(u16::from_ne_bytes([w[0], w[1]]));
                if ofs + mac + snap <= len {
                    // SAFETY: the frame lies inside this block of the mapping (checked), which
                    // the kernel does not write while the block is ours (TP_STATUS_USER).
                    f(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(p + mac), snap) });
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
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: if self.dir == Direction::Rx {
                libc::POLLIN
            } else {
                libc::POLLOUT
            },
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
        Ok(r > 0)
    }

    /// TX: fills up to `n` free frame slots with `fill` (which writes a frame and returns its
    /// length), then asks the kernel to send them with one `sendto`. Returns frames queued.
    pub fn tx_burst(
        &mut self,
        n: u32,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> io::Result<u32> {
        let fs = self.cfg.frame_size as usize;
        let room = fs - TX_DATA_OFFSET;
        let mut queued = 0;
        while queued < n {
            let slot = self.next as usize * fs;
            let st = self.word(slot + PKT_STATUS).load(Ordering::Acquire);
            if st != TP_STATUS_AVAILABLE && st & TP_STATUS_WRONG_FORMAT == 0 {
                break;
            }
            // SAFETY: the slot's data area is inside the mapping and ours while its status
            // says available.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(self.map.as_ptr().add(slot + TX_DATA_OFFSET), room)
            };
            let len = fill(buf).min(room) as u32;
            self.word(slot + PKT_LEN).store(len, Ordering::Relaxed);
            self.word(slot + PKT_SNAPLEN).store(len, Ordering::Relaxed);
            self.word(slot + PKT_NEXT).store(0, Ordering::Relaxed);
            self.word(slot + PKT_STATUS)
                .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.next = (self.next + 1) % self.frames;
            queued += 1;
        }
        if queued > 0 {
            // SAFETY: sendto with no buffer flushes the TX ring of our socket.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e);
                }
            }
        }
        Ok(queued)
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmaps the ring mapped in `open`; no slice into it outlives `&mut self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}
