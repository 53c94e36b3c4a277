//! The host stack's side of a NIC port (netmap's host rings, `vale-ctl -h`): a tap device the
//! daemon creates and attaches to the switch as one more port, so that the host keeps its
//! connectivity while its interface is on the switch. Frames the host stack sends through the
//! tap enter the switch; frames the switch sends to the tap port go up the host stack.
//!
//! The tap is driven by the NIC worker of [`crate::nic`] like any interface: [`TapOpener`]
//! owns the device (it exists as long as the opener holds its descriptor, whatever the link
//! does) and hands the worker a [`TapBackend`] on a duplicate of that descriptor.
//!
//! **The limit.** A tap moves one frame per `read`/`write`: the kernel has no batched receive
//! or send on a tap file (vhost-net batches through an in-kernel interface user space cannot
//! reach). The backend batches everything else — a wake-up drains up to [`TAP_BATCH`] frames,
//! the switch forwards them in one txsync, and frames for the host are queued in preallocated
//! slots and written back to back — but the system call per frame stays. The host stack's
//! own per-frame cost (a socket, IP, TCP) is of the same order, so the tap is not the
//! bottleneck of host-stack traffic; it is the wrong path for bulk traffic, which belongs on
//! the interface itself or on a switch port.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::backend::{BackendKind, Link, NicBackend, NicError, NicOpener};
use super::ifnet::check_mtu;

/// Most frames one wake-up reads from the tap, and most frames queued for it before a flush.
pub const TAP_BATCH: usize = 256;

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

fn ifreq_named(ifname: &str) -> io::Result<libc::ifreq> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['/', ':', '%']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name: 1 to 15 bytes, no '/', ':', '%'",
        ));
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// One interface ioctl through a throwaway datagram socket.
fn sock_ioctl(req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours; `ifr` is a whole ifreq we own, as the interface ioctls expect.
    let r = unsafe { libc::ioctl(fd, req, ifr as *mut libc::ifreq) };
    let e = io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above, used by nothing else.
    unsafe { libc::close(fd) };
    if r < 0 { Err(e) } else { Ok(()) }
}

/// The MAC address of `ifname`.
pub fn hwaddr(ifname: &str) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq_named(ifname)?;
    sock_ioctl(libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the ifru_hwaddr member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// A tap device: created by [`TapDevice::create`], gone when dropped.
#[derive(Debug)]
pub struct TapDevice {
    ifname: String,
    fd: OwnedFd,
}

impl TapDevice {
    /// Creates tap `ifname` (no packet information header, no offloads: frames leave the host
    /// stack with finished checksums and at most MTU long), gives it `mac` if set, and brings
    /// it up. Fails if an interface of that name exists.
    pub fn create(ifname: &str, mac: Option<[u8; 6]>) -> Result<Self, NicError> {
        let io = |what| NicError::io(what, ifname);
        if crate::nic::ifindex(ifname) != 0 {
            return Err(NicError::Config(format!(
                "{ifname} exists already: give the host-stack tap another name"
            )));
        }
        let mut ifr = ifreq_named(ifname).map_err(io("naming the tap"))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(io("opening /dev/net/tun"))?;
        let fd = OwnedFd::from(file);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: `fd` is an open /dev/net/tun; TUNSETIFF reads and writes one whole ifreq,
        // which we own.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr as *mut libc::ifreq) };
        if r < 0 {
            return Err(io("creating the tap (TUNSETIFF)")(
                io::Error::last_os_error(),
            ));
        }
        set_nonblocking(&fd).map_err(io("making the tap non-blocking"))?;
        let tap = TapDevice {
            ifname: ifname.to_owned(),
            fd,
        };
        if let Some(mac) = mac {
            let mut ifr = ifreq_named(ifname).map_err(io("naming the tap"))?;
            // SAFETY: writing a plain-data member of the union we own.
            unsafe {
                ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
                for (d, s) in ifr.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                    *d = s as libc::c_char;
                }
            }
            sock_ioctl(libc::SIOCSIFHWADDR, &mut ifr).map_err(io("setting the tap's MAC"))?;
        }
        let mut ifr = ifreq_named(ifname).map_err(io("naming the tap"))?;
        sock_ioctl(libc::SIOCGIFFLAGS, &mut ifr).map_err(io("reading the tap's flags"))?;
        // SAFETY: SIOCGIFFLAGS filled ifru_flags; we set IFF_UP in it.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        sock_ioctl(libc::SIOCSIFFLAGS, &mut ifr).map_err(io("bringing the tap up"))?;
        Ok(tap)
    }

    /// The tap's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the worker's backend on a tap it owns: the tap lives as long as the opener.
#[derive(Debug)]
pub struct TapOpener {
    tap: TapDevice,
    max_frame: u32,
}

impl TapOpener {
    /// Creates the tap (see [`TapDevice::create`]) for a port of `max_frame`-byte buffers.
    pub fn create(ifname: &str, mac: Option<[u8; 6]>, max_frame: u32) -> Result<Self, NicError> {
        Ok(TapOpener {
            tap: TapDevice::create(ifname, mac)?,
            max_frame,
        })
    }
}

impl NicOpener for TapOpener {
    fn ifname(&self) -> &str {
        &self.tap.ifname
    }

    fn link(&self) -> (Link, u32) {
        crate::nic::link_state(&self.tap.ifname)
    }

    fn open(&mut self) -> Result<(Box<dyn NicBackend>, Option<String>), NicError> {
        let ifname = self.tap.ifname.clone();
        check_mtu(&ifname, self.max_frame)?;
        let fd = self
            .tap
            .fd
            .try_clone()
            .map_err(NicError::io("duplicating the tap descriptor", &ifname))?;
        let frame = self.max_frame as usize;
        Ok((
            Box::new(TapBackend {
                file: File::from(fd),
                ifindex: crate::nic::ifindex(&ifname),
                rx_buf: vec![0; frame].into_boxed_slice(),
                tx_bufs: vec![0; frame * TAP_BATCH].into_boxed_slice(),
                tx_lens: [0; TAP_BATCH],
                tx_queued: 0,
                frame,
                error: None,
            }),
            None,
        ))
    }
}

/// The worker's side of a tap: one read per received frame, queued frames written back to
/// back at a flush (see the module's note on the limit).
pub struct TapBackend {
    file: File,
    ifindex: u32,
    rx_buf: Box<[u8]>,
    /// [`TAP_BATCH`] frames of `frame` bytes, allocated once.
    tx_bufs: Box<[u8]>,
    tx_lens: [usize; TAP_BATCH],
    tx_queued: usize,
    frame: usize,
    error: Option<io::Error>,
}

impl TapBackend {
    fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }
}

impl NicBackend for TapBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Tap
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn poll_fds(&self, want_tx: bool, fds: &mut [libc::pollfd]) -> usize {
        match fds.first_mut() {
            Some(p) => {
                *p = libc::pollfd {
                    fd: self.fd(),
                    events: libc::POLLIN | if want_tx { libc::POLLOUT } else { 0 },
                    revents: 0,
                };
                1
            }
            None => 0,
        }
    }

    fn rx(&mut self, sink: &mut dyn FnMut(&[u8], u32, u32)) -> usize {
        let mut n = 0;
        while n < TAP_BATCH {
            // SAFETY: reads at most rx_buf.len() bytes into our own buffer.
            let r = unsafe {
                libc::read(
                    self.fd(),
                    self.rx_buf.as_mut_ptr().cast(),
                    self.rx_buf.len(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    self.error = Some(e);
                }
                break;
            }
            if r == 0 {
                break;
            }
            let len = r as usize;
            // A frame as long as the buffer may have been cut: say its length is larger, so
            // the worker drops and counts it.
            let wire = if len == self.rx_buf.len() {
                len + 1
            } else {
                len
            };
            sink(&self.rx_buf[..len], wire as u32, 0);
            n += 1;
        }
        n
    }

    fn tx_slot(&mut self) -> Option<&mut [u8]> {
        if self.tx_queued == TAP_BATCH {
            return None;
        }
        let o = self.tx_queued * self.frame;
        self.tx_bufs.get_mut(o..o + self.frame)
    }

    fn tx_commit(&mut self, len: usize) {
        if self.tx_queued < TAP_BATCH {
            self.tx_lens[self.tx_queued] = len.min(self.frame);
            self.tx_queued += 1;
        }
    }

    /// Writes every queued frame. A frame the tap refuses for lack of room (its queue towards
    /// the host stack is full) is dropped, as a full NIC queue drops; any other error is
    /// returned after the batch.
    fn tx_flush(&mut self) -> io::Result<()> {
        let mut err = None;
        for i in 0..self.tx_queued {
            let o = i * self.frame;
            let len = self.tx_lens[i];
            // SAFETY: writes `len` <= frame bytes of our own buffer.
            let r = unsafe { libc::write(self.fd(), self.tx_bufs[o..].as_ptr().cast(), len) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock {
                    err = Some(e);
                }
            }
        }
        self.tx_queued = 0;
        err.map_or(Ok(()), Err)
    }

    fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }
}
