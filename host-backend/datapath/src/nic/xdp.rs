//! AF_XDP in copy mode, with the project's own XDP program: the NIC port backend for
//! interfaces whose frames should bypass the host stack entirely.
//!
//! Nothing beyond the kernel is needed (no libbpf, no clang at build time): the program is six
//! hand-assembled instructions loaded with the raw `bpf()` system call,
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)          ; ctx->rx_queue_index
//! r1 = map_fd (ld_imm64, pseudo)  ; the XSKMAP
//! r3 = XDP_PASS                   ; what to do if no socket is bound to that queue
//! call bpf_redirect_map           ; → the AF_XDP socket of this queue
//! exit
//! ```
//!
//! and attached with a BPF link (native mode if the driver has it, generic mode otherwise): the
//! program goes away with the link's descriptor, so a daemon that dies leaves no program on the
//! interface. The socket binds queue 0 with `XDP_USE_NEED_WAKEUP` in zero-copy mode
//! (`XDP_ZEROCOPY`) when the driver supports it, and otherwise in copy mode (`XDP_COPY`, the
//! mode every driver has, veth included; the kernel refuses zero copy with `EOPNOTSUPP` or
//! `EINVAL` for a driver without it or an XDP program in generic mode); interfaces with several RX queues are refused
//! (a frame on another queue would bypass the switch), and so are frames larger than a UMEM
//! chunk leaves room for (3840 bytes: no multi-buffer XDP).
//!
//! All `unsafe` for the rings and the UMEM is in this module: the four rings and the UMEM are
//! mappings owned by [`XdpBackend`]; ring indices are free-running `u32` words shared with the
//! kernel and accessed atomically; every descriptor the kernel hands back is checked to lie in
//! the UMEM before its bytes are touched.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::backend::{BackendKind, NicBackend, NicError};

const AF_XDP: libc::c_int = 44;
const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_PGOFF_RX_RING: libc::off_t = 0;
const XDP_PGOFF_TX_RING: libc::off_t = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: libc::off_t = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: libc::off_t = 0x1_8000_0000;
const XDP_COPY: u16 = 1 << 1;
const XDP_ZEROCOPY: u16 = 1 << 2;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
const XDP_RING_NEED_WAKEUP: u32 = 1;
/// Headroom the kernel keeps in front of every frame in a UMEM chunk.
const XDP_PACKET_HEADROOM: u32 = 256;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_PASS: i32 = 2;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

/// Entries of each ring, and UMEM chunks (half for RX, half for TX).
const RING: u32 = 2048;
const CHUNKS: u32 = 2 * RING;

/// The program, with the map descriptor to patch into instruction 1.
fn program(map_fd: RawFd) -> [u64; 6] {
    // struct bpf_insn: code, dst_reg:4 | src_reg:4, off: s16, imm: s32 (little endian).
    let insn = |code: u8, dst: u8, src: u8, off: i16, imm: i32| -> u64 {
        u64::from(code)
            | u64::from(dst | src << 4) << 8
            | u64::from(off as u16) << 16
            | u64::from(imm as u32) << 32
    };
    [
        insn(0x61, 2, 1, 16, 0),                    // ldxw r2, [r1 + 16]
        insn(0x18, 1, 1, 0, map_fd),                // lddw r1, map (BPF_PSEUDO_MAP_FD)
        0,                                          // (second half of lddw)
        insn(0xb7, 3, 0, 0, XDP_PASS),              // mov64 r3, XDP_PASS
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP), // call bpf_redirect_map
        insn(0x95, 0, 0, 0, 0),                     // exit
    ]
}

/// A `union bpf_attr`, zeroed, written field by field at the kernel's offsets.
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

impl BpfAttr {
    fn new() -> Self {
        BpfAttr([0; 128])
    }
    fn u32(mut self, ofs: usize, v: u32) -> Self {
        self.0[ofs..ofs + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, ofs: usize, v: u64) -> Self {
        self.0[ofs..ofs + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

/// A `bpf()` command that returns a new descriptor.
fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> io::Result<OwnedFd> {
    let r = bpf_raw(cmd, attr)?;
    // SAFETY: the commands used with this function return a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// A `bpf()` command; its non-negative result.
fn bpf_raw(cmd: libc::c_long, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a 128-byte bpf_attr we own; pointers written into it (instructions,
    // license, log buffer, key, value) point to memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<BpfAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// One of the four shared rings.
///
/// Invariant: `base` maps `len` bytes of the socket's ring; `producer`, `consumer`, `flags` and
/// `desc` are the kernel-reported offsets inside it, `size` entries of `entry` bytes.
struct XRing {
    base: NonNull<u8>,
    len: usize,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    size: u32,
    entry: usize,
    /// Our copy of the index we own (producer of a fill/TX ring, consumer of an RX/completion
    /// ring).
    local: u32,
}

impl XRing {
    fn map(
        fd: &OwnedFd,
        pgoff: libc::off_t,
        ofs: &[u64; 4],
        size: u32,
        entry: usize,
    ) -> io::Result<Self> {
        let len = ofs[2] as usize + size as usize * entry;
        // SAFETY: maps the ring the socket just created, at the kernel's page offset for it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let r = XRing {
            // PANIC: mmap never returns null on success.
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
            producer: ofs[0] as usize,
            consumer: ofs[1] as usize,
            desc: ofs[2] as usize,
            flags: ofs[3] as usize,
            size,
            entry,
            local: 0,
        };
        if [r.producer, r.consumer, r.flags]
            .iter()
            .any(|&o| o % 4 != 0 || o + 4 > r.desc)
        {
            return Err(io::Error::other("ring offsets out of range"));
        }
        Ok(r)
    }

    fn word(&self, ofs: usize) -> &AtomicU32 {
        // SAFETY: ofs is one of the checked, aligned offsets below `desc` inside the mapping;
        // the kernel and we access these words atomically.
        unsafe { &*self.base.as_ptr().add(ofs).cast::<AtomicU32>() }
    }

    fn entry_ptr(&self, i: u32) -> *mut u8 {
        let k = (i & (self.size - 1)) as usize;
        // SAFETY: k < size, so the entry lies inside the mapping (invariant).
        unsafe { self.base.as_ptr().add(self.desc + k * self.entry) }
    }

    /// Producer side: entries free for us.
    fn free(&self) -> u32 {
        let cons = self.word(self.consumer).load(Ordering::Acquire);
        self.size - self.local.wrapping_sub(cons)
    }

    /// Producer side: publishes every entry written so far.
    fn publish(&self) {
        self.word(self.producer)
            .store(self.local, Ordering::Release);
    }

    /// Consumer side: entries waiting for us.
    fn available(&self) -> u32 {
        let prod = self.word(self.producer).load(Ordering::Acquire);
        prod.wrapping_sub(self.local).min(self.size)
    }

    /// Consumer side: releases every entry read so far.
    fn release(&self) {
        self.word(self.consumer)
            .store(self.local, Ordering::Release);
    }

    fn needs_wakeup(&self) -> bool {
        self.word(self.flags).load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    fn write_addr(&self, i: u32, addr: u64) {
        // SAFETY: an 8-byte, 8-aligned entry of a fill ring inside the mapping, ours until
        // published.
        unsafe { self.entry_ptr(i).cast::<u64>().write_volatile(addr) }
    }

    fn read_addr(&self, i: u32) -> u64 {
        // SAFETY: an 8-byte entry of a completion ring the kernel produced.
        unsafe { self.entry_ptr(i).cast::<u64>().read_volatile() }
    }

    /// (addr, len) of an RX descriptor.
    fn read_desc(&self, i: u32) -> (u64, u32) {
        let p = self.entry_ptr(i);
        // SAFETY: a 16-byte struct xdp_desc {addr: u64, len: u32, options: u32} the kernel
        // produced, inside the mapping.
        unsafe {
            (
                p.cast::<u64>().read_volatile(),
                p.add(8).cast::<u32>().read_volatile(),
            )
        }
    }

    fn write_desc(&self, i: u32, addr: u64, len: u32) {
        let p = self.entry_ptr(i);
        // SAFETY: a TX descriptor slot inside the mapping, ours until published.
        unsafe {
            p.cast::<u64>().write_volatile(addr);
            p.add(8).cast::<u32>().write_volatile(len);
            p.add(12).cast::<u32>().write_volatile(0);
        }
    }
}

impl Drop for XRing {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `map`; no pointer into it outlives the ring.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The AF_XDP backend: one socket on queue 0 in copy mode, its UMEM, the XSKMAP and the
/// program's link.
pub struct XdpBackend {
    // Dropped first: detaches the program before the socket goes.
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
    /// An AF_PACKET socket holding the interface's promiscuous mode (released with it).
    _promisc: Option<OwnedFd>,
    rx: XRing,
    tx: XRing,
    fill: XRing,
    comp: XRing,
    fd: OwnedFd,
    /// Declared after the rings and the socket: unmapped after they are gone.
    umem: Umem,
    chunk: u32,
    /// Free TX chunks (addresses), a stack.
    tx_free: Vec<u64>,
    /// The chunk handed out by the last `tx_slot`.
    tx_pending: Option<u64>,
    ifindex: u32,
    /// Mode the program runs in, for logs.
    pub native: bool,
    last_drops: u64,
}

// SAFETY: the mappings belong to this value alone; the kernel side is synchronised through the
// ring indices, accessed atomically.
unsafe impl Send for XdpBackend {}

fn sockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid T for the call and its size is passed along.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn rx_queues(ifname: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
}

/// The UMEM: anonymous memory in which the kernel and the backend exchange frames, in chunks.
///
/// Invariant: `base` points to `len` bytes mapped read-write (privately) for the value's life.
struct Umem {
    base: NonNull<u8>,
    len: usize,
}

impl Umem {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping at an address of the kernel's choosing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Umem {
            // PANIC: mmap never returns null on success.
            base: NonNull::new(p.cast::<u8>()).expect("mmap returned null"),
            len,
        })
    }

    /// `len` bytes from UMEM address `addr`, if they lie inside it.
    ///
    /// # Safety
    /// Nobody may write them while the slice lives (the kernel does not write a chunk the
    /// backend holds: an RX chunk until it goes back through the fill ring).
    unsafe fn slice(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(u64::from(len))?;
        // SAFETY: [addr, end) lies inside the mapping (checked); nobody writes it (contract).
        (end <= self.len as u64).then(|| unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(addr as usize), len as usize)
        })
    }

    /// As [`Umem::slice`], mutable.
    ///
    /// # Safety
    /// Nobody else may read or write them while the slice lives (a TX chunk on the free list
    /// is the backend's alone).
    unsafe fn slice_mut(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let end = addr.checked_add(u64::from(len))?;
        // SAFETY: as in `slice`; `&mut self` makes it the only slice the backend has.
        (end <= self.len as u64).then(|| unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(addr as usize), len as usize)
        })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; the rings and the socket that refer to it
        // are fields declared before it in XdpBackend, so they are gone first.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The errors of opening the backend on one interface.
struct Why<'a>(&'a str);

impl Why<'_> {
    fn unavailable(&self, reason: String) -> NicError {
        NicError::Unavailable {
            kind: BackendKind::AfXdp,
            ifname: self.0.to_owned(),
            reason,
        }
    }

    fn sys(&self, what: &'static str) -> impl Fn(io::Error) -> NicError + '_ {
        move |e| self.unavailable(format!("{what}: {e}"))
    }
}

/// The UMEM chunk size for frames of `max_frame` bytes.
fn umem_chunk(max_frame: u32) -> Result<u32, String> {
    if max_frame + XDP_PACKET_HEADROOM <= 2048 {
        Ok(2048)
    } else if max_frame + XDP_PACKET_HEADROOM <= 4096 {
        Ok(4096)
    } else {
        Err(format!(
            "frames of {max_frame} bytes do not fit a 4096-byte UMEM chunk after the kernel's \
             {XDP_PACKET_HEADROOM}-byte headroom (no multi-buffer AF_XDP here)"
        ))
    }
}

/// The four rings of an AF_XDP socket (RX, TX, fill, completion), sized and mapped, with the
/// UMEM registered; the fill ring holds the first half of the UMEM's chunks.
fn rings(fd: &OwnedFd, umem: &Umem, chunk: u32, why: &Why<'_>) -> Result<[XRing; 4], NicError> {
    // struct xdp_umem_reg { addr, len: u64; chunk_size, headroom, flags, tx_metadata_len }.
    #[repr(C)]
    struct UmemReg {
        addr: u64,
        len: u64,
        chunk_size: u32,
        headroom: u32,
        flags: u32,
        tx_metadata_len: u32,
    }
    let reg = UmemReg {
        addr: umem.base.as_ptr() as u64,
        len: umem.len as u64,
        chunk_size: chunk,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    sockopt(fd, XDP_UMEM_REG, &reg).map_err(why.sys("XDP_UMEM_REG"))?;
    for opt in [
        XDP_UMEM_FILL_RING,
        XDP_UMEM_COMPLETION_RING,
        XDP_RX_RING,
        XDP_TX_RING,
    ] {
        sockopt(fd, opt, &RING).map_err(why.sys("ring sizes"))?;
    }
    // struct xdp_mmap_offsets: rx, tx, fr, cr; each {producer, consumer, desc, flags}.
    let mut off = [[0u64; 4]; 4];
    let mut l = std::mem::size_of_val(&off) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `l` bytes into `off`, which we own.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            XDP_MMAP_OFFSETS,
            off.as_mut_ptr().cast(),
            &mut l,
        )
    };
    if r < 0 || l as usize != std::mem::size_of_val(&off) {
        return Err(why.sys("XDP_MMAP_OFFSETS")(io::Error::last_os_error()));
    }
    let ring = |pg, o: &[u64; 4], e| XRing::map(fd, pg, o, RING, e).map_err(why.sys("ring mmap"));
    let rx = ring(XDP_PGOFF_RX_RING, &off[0], 16)?;
    let tx = ring(XDP_PGOFF_TX_RING, &off[1], 16)?;
    let mut fill = ring(XDP_UMEM_PGOFF_FILL_RING, &off[2], 8)?;
    let comp = ring(XDP_UMEM_PGOFF_COMPLETION_RING, &off[3], 8)?;
    for i in 0..RING {
        fill.write_addr(fill.local, u64::from(i * chunk));
        fill.local = fill.local.wrapping_add(1);
    }
    fill.publish();
    Ok([rx, tx, fill, comp])
}

/// Binds the socket to queue 0 of interface `ifindex`: zero copy when the driver has it, copy
/// mode otherwise. A socket closed a moment ago (a previous port on this queue, a reopening
/// after the link came back) leaves the queue busy until the kernel's deferred release runs:
/// tries again for up to a second.
fn bind_queue0(fd: &OwnedFd, ifindex: u32, why: &Why<'_>) -> Result<(), NicError> {
    #[repr(C)]
    struct SockaddrXdp {
        family: u16,
        flags: u16,
        ifindex: u32,
        queue_id: u32,
        shared_umem_fd: u32,
    }
    let mut sa = SockaddrXdp {
        family: AF_XDP as u16,
        flags: XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP,
        ifindex,
        queue_id: 0,
        shared_umem_fd: 0,
    };
    let mut tries = 0;
    loop {
        // SAFETY: a fully initialised sockaddr_xdp and its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const SockaddrXdp).cast(),
                std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // No zero copy on this interface (driver, or the program in generic mode): copy mode,
        // which every driver has.
        if sa.flags & XDP_ZEROCOPY != 0
            && matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(524 /* ENOTSUPP */)
            )
        {
            log::debug!("{}: no AF_XDP zero copy ({e}); copy mode", why.0);
            sa.flags = XDP_COPY | XDP_USE_NEED_WAKEUP;
            continue;
        }
        tries += 1;
        if e.raw_os_error() != Some(libc::EBUSY) || tries >= 50 {
            return Err(why.sys("binding the AF_XDP socket")(e));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The XSKMAP with the socket in it, the program that redirects into it, and the link that
/// attaches the program to interface `ifindex` (native mode if the driver has it, generic
/// otherwise; the bool says which).
fn attach_program(
    fd: &OwnedFd,
    ifindex: u32,
    why: &Why<'_>,
) -> Result<(OwnedFd, OwnedFd, OwnedFd, bool), NicError> {
    let mut a = BpfAttr::new()
        .u32(0, BPF_MAP_TYPE_XSKMAP)
        .u32(4, 4)
        .u32(8, 4)
        .u32(12, 1);
    let map = bpf(BPF_MAP_CREATE, &mut a).map_err(why.sys("BPF_MAP_CREATE (XSKMAP)"))?;
    let key = 0u32;
    let val = fd.as_raw_fd() as u32;
    let mut a = BpfAttr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, &val as *const u32 as u64);
    bpf_raw(BPF_MAP_UPDATE_ELEM, &mut a).map_err(why.sys("adding the socket to the XSKMAP"))?;
    let insns = program(map.as_raw_fd());
    let license = c"Dual BSD/GPL";
    let mut log = vec![0u8; 4096];
    let mut a = BpfAttr::new()
        .u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64)
        .u32(68, BPF_XDP);
    let prog = bpf(BPF_PROG_LOAD, &mut a).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let v = String::from_utf8_lossy(&log[..end])
            .trim()
            .replace('\n', "; ");
        why.unavailable(format!("loading the XDP program: {e} (verifier: {v})"))
    })?;
    let mut errs = Vec::new();
    for (flags, native) in [(XDP_FLAGS_DRV_MODE, true), (XDP_FLAGS_SKB_MODE, false)] {
        let mut a = BpfAttr::new()
            .u32(0, prog.as_raw_fd() as u32)
            .u32(4, ifindex)
            .u32(8, BPF_XDP)
            .u32(12, flags);
        match bpf(BPF_LINK_CREATE, &mut a) {
            Ok(link) => return Ok((map, prog, link, native)),
            Err(e) => errs.push(format!(
                "{} mode: {e}",
                if native { "native" } else { "generic" }
            )),
        }
    }
    Err(why.unavailable(format!(
        "attaching the XDP program failed ({}; is another XDP program on it?)",
        errs.join(", ")
    )))
}

impl XdpBackend {
    /// Opens the backend on `ifname` for frames of up to `max_frame` bytes.
    pub fn open(ifname: &str, max_frame: u32) -> Result<Box<dyn NicBackend>, NicError> {
        let why = Why(ifname);
        let chunk = umem_chunk(max_frame).map_err(|r| why.unavailable(r))?;
        let queues = rx_queues(ifname);
        if queues > 1 {
            return Err(why.unavailable(format!(
                "{queues} RX queues; this backend binds queue 0 only, so frames on the others \
                 would miss the switch (ethtool -L {ifname} combined 1)"
            )));
        }
        let ifindex = crate::nic::ifnet::ifindex(ifname);
        if ifindex == 0 {
            return Err(NicError::NoInterface(ifname.to_owned()));
        }
        // SAFETY: plain socket creation.
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(why.sys("socket(AF_XDP)")(io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Umem::new((CHUNKS * chunk) as usize).map_err(why.sys("UMEM mmap"))?;
        // The first half of the UMEM feeds RX (the fill ring), the second is TX's.
        let [rx, tx, fill, comp] = rings(&fd, &umem, chunk, &why)?;
        let tx_free: Vec<u64> = (RING..CHUNKS).map(|i| u64::from(i * chunk)).collect();
        bind_queue0(&fd, ifindex, &why)?;
        let (map, prog, link, native) = attach_program(&fd, ifindex, &why)?;
        let promisc = crate::nic::afpacket::promisc_holder(ifname).ok();
        log::info!(
            "{ifname}: AF_XDP copy mode on queue 0, XDP program in {} mode",
            if native { "native" } else { "generic" }
        );
        Ok(Box::new(XdpBackend {
            _link: link,
            _prog: prog,
            _map: map,
            _promisc: promisc,
            rx,
            tx,
            fill,
            comp,
            fd,
            umem,
            chunk,
            tx_free,
            tx_pending: None,
            ifindex,
            native,
            last_drops: 0,
        }))
    }

    /// Returns completed TX chunks to the free list.
    fn reclaim(&mut self) {
        let n = self.comp.available();
        for _ in 0..n {
            let addr = self.comp.read_addr(self.comp.local);
            self.comp.local = self.comp.local.wrapping_add(1);
            if self.chunk_ok(addr) && self.tx_free.len() < self.tx_free.capacity() {
                self.tx_free.push(addr - addr % u64::from(self.chunk));
            }
        }
        if n > 0 {
            self.comp.release();
        }
    }

    fn chunk_ok(&self, addr: u64) -> bool {
        addr < self.umem.len as u64
    }

    fn kick_tx(&self) -> io::Result<()> {
        // Copy mode sends at most a few dozen frames per call (the kernel's TX batch): keep
        // calling while the kernel has not consumed everything, a bounded number of times.
        for _ in 0..(RING / 16 + 2) {
            if self.tx.free() == self.tx.size {
                return Ok(());
            }
            if let Err(e) = crate::sys::kick_tx(&self.fd) {
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => continue,
                    _ => return Err(e),
                }
            }
            if !self.tx.needs_wakeup() {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl NicBackend for XdpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AfXdp
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn poll_fds(&self, want_tx: bool, fds: &mut [libc::pollfd]) -> usize {
        match fds.first_mut() {
            Some(p) => {
                *p = libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN | if want_tx { libc::POLLOUT } else { 0 },
                    revents: 0,
                };
                1
            }
            None => 0,
        }
    }

    fn rx(&mut self, sink: &mut dyn FnMut(&[u8], u32, u32)) -> usize {
        let n = self.rx.available();
        if n == 0 {
            if self.fill.needs_wakeup() {
                // SAFETY: recvfrom with no buffer wakes the kernel's RX processing.
                unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
            }
            return 0;
        }
        let room = self.fill.free();
        let mut done = 0;
        for _ in 0..n.min(room) {
            let (addr, len) = self.rx.read_desc(self.rx.local);
            self.rx.local = self.rx.local.wrapping_add(1);
            // SAFETY: the kernel does not write this chunk until it goes back through the fill
            // ring below.
            if let Some(f) = unsafe { self.umem.slice(addr, len) } {
                sink(f, len, 0);
            }
            let base = (addr - addr % u64::from(self.chunk)).min(self.umem.len as u64 - 1);
            self.fill.write_addr(self.fill.local, base);
            self.fill.local = self.fill.local.wrapping_add(1);
            done += 1;
        }
        self.rx.release();
        self.fill.publish();
        done
    }

    fn tx_slot(&mut self) -> Option<&mut [u8]> {
        if self.tx_free.is_empty() {
            self.reclaim();
        }
        if self.tx.free() == 0 {
            return None;
        }
        let addr = *self.tx_free.last()?;
        self.tx_pending = Some(addr);
        let room = self.chunk - XDP_PACKET_HEADROOM;
        // SAFETY: a chunk on the free list is the backend's alone until `tx_commit` queues it;
        // the slice borrows `self` mutably.
        unsafe { self.umem.slice_mut(addr, room) }
    }

    fn tx_commit(&mut self, len: usize) {
        let Some(addr) = self.tx_pending.take() else {
            return;
        };
        self.tx_free.pop();
        let len = len.min((self.chunk - XDP_PACKET_HEADROOM) as usize) as u32;
        self.tx.write_desc(self.tx.local, addr, len);
        self.tx.local = self.tx.local.wrapping_add(1);
    }

    fn tx_flush(&mut self) -> io::Result<()> {
        self.tx.publish();
        let r = self.kick_tx();
        self.reclaim();
        r
    }

    fn take_error(&mut self) -> Option<io::Error> {
        crate::sys::socket_error(&self.fd)
    }

    fn kernel_drops(&mut self) -> u64 {
        // struct xdp_statistics: rx_dropped, rx_invalid_descs, tx_invalid_descs, rx_ring_full,
        // rx_fill_ring_empty_descs, tx_ring_empty_descs (cumulative).
        let mut s = [0u64; 6];
        let mut l = std::mem::size_of_val(&s) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `l` bytes into `s`, which we own.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_XDP,
                XDP_STATISTICS,
                s.as_mut_ptr().cast(),
                &mut l,
            )
        };
        if r < 0 {
            return 0;
        }
        let total = s[0] + s[3];
        let d = total.saturating_sub(self.last_drops);
        self.last_drops = total;
        d
    }
}
