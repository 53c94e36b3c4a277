//! The netmap backend: a port opened through netmap's own API, as in a ptnet guest.
//!
//! `-i netmap:ptnet0` opens `/dev/netmap`, registers `ptnet0` (`NIOCCTRL`,
//! `NETMAP_REQ_REGISTER`, `NR_REG_ALL_NIC`), maps `nr_memsize` bytes of the device and finds
//! the rings with netmap's offset rules ([`crate::nifp`]). From then on it is a netmap
//! application like any other: it fills and drains slots in batches, writes `head`/`cur`,
//! hands them over with `NIOCTXSYNC`/`NIOCRXSYNC` and reads `tail` back, and sleeps in
//! `poll()` (POLLOUT for room, POLLIN for frames). The system calls sit behind [`Kernel`],
//! so the same port runs against a fake kernel in tests; nothing here makes a system call
//! or allocates per packet.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use ptnet_spec::netmap::{
    NETMAP_API, NETMAP_REQ_IFNAMSIZ, NETMAP_REQ_REGISTER, NIOCCTRL, NIOCRXSYNC, NIOCTXSYNC,
    NR_REG_ALL_NIC, NetmapSlot, NmreqHeader, NmreqRegister,
};

use crate::backend::{AttachOptions, Backend, Geometry, Want, poll_timeout};
use crate::nifp::{LayoutError, Nifp};
use ptnet_datapath::mem::{MemError, Region};

/// Why a netmap port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum NetmapError {
    /// The name is not `netmap:NAME` with a usable `NAME`.
    #[error("{0:?} is not a netmap port name (netmap:NAME, NAME of 1 to 63 bytes)")]
    Name(String),
    /// The device could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The device.
        path: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// `NIOCCTRL` `NETMAP_REQ_REGISTER` failed.
    #[error("NIOCCTRL register of {name} failed")]
    Register {
        /// `nr_name`.
        name: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The region could not be mapped.
    #[error("cannot map the {size}-byte region")]
    Map {
        /// `nr_memsize`.
        size: u64,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The region does not hold what the registration described.
    #[error("the mapped region does not hold a usable netmap_if")]
    Layout(#[source] LayoutError),
}

/// The system calls of a netmap application on its file descriptor.
pub trait Kernel: Sized {
    /// Opens the device and registers the port `opts` names; returns the kernel side and
    /// the port's rings in the mapped region.
    fn attach(opts: &AttachOptions) -> Result<(Self, Nifp), NetmapError>;
    /// `ioctl(NIOCTXSYNC)`: hand the TX rings' `[hwcur, head)` over, update their `tail`.
    fn txsync(&mut self) -> io::Result<()>;
    /// `ioctl(NIOCRXSYNC)`: release the RX rings' `[hwcur, head)`, update their `tail`.
    fn rxsync(&mut self) -> io::Result<()>;
    /// `poll()` for `events` (POLLIN, POLLOUT) for up to `timeout_ms` (-1: no limit);
    /// returns `revents`. Syncs the rings it reports on, as netmap's poll does.
    fn poll(&mut self, events: i16, timeout_ms: i32) -> io::Result<i16>;
}

/// An open `/dev/netmap`.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
}

impl Device {
    /// Opens the netmap device at `path`.
    pub fn open(path: &str) -> io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(Device { fd: f.into() })
    }

    /// Registers `nr_name`'s NIC rings on this descriptor (`NR_REG_ALL_NIC`, no flags) and
    /// returns what the kernel filled in (`nr_offset`, `nr_memsize`, ring and slot counts,
    /// `nr_mem_id`).
    pub fn register(&self, nr_name: &str) -> io::Result<NmreqRegister> {
        let mut name = [0u8; NETMAP_REQ_IFNAMSIZ as usize];
        if nr_name.is_empty() || nr_name.len() >= name.len() || nr_name.contains('\0') {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        name[..nr_name.len()].copy_from_slice(nr_name.as_bytes());
        let mut req = NmreqRegister {
            nr_mode: NR_REG_ALL_NIC,
            ..Default::default()
        };
        let mut hdr = NmreqHeader {
            nr_version: NETMAP_API,
            nr_reqtype: NETMAP_REQ_REGISTER,
            nr_reserved: 0,
            nr_name: name,
            nr_options: 0,
            nr_body: (&raw mut req) as u64,
        };
        // SAFETY: NIOCCTRL reads and writes one nmreq_header, whose nr_body points to our
        // nmreq_register; both live across the call and nothing else refers to them.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), NIOCCTRL as _, &raw mut hdr) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(req)
    }

    fn ioctl(&self, request: u32) -> io::Result<()> {
        // SAFETY: NIOCTXSYNC and NIOCRXSYNC take no argument and touch no user memory.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as _) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Kernel for Device {
    /// Opens `opts.socket` (the netmap device, `/dev/netmap`) and registers `opts.port`
    /// (`netmap:NAME`): NIOCCTRL, then mmap of `nr_memsize` bytes.
    fn attach(opts: &AttachOptions) -> Result<(Self, Nifp), NetmapError> {
        let name = nr_name(&opts.port)?;
        let dev = Device::open(&opts.socket).map_err(|source| NetmapError::Open {
            path: opts.socket.clone(),
            source,
        })?;
        let reg = dev.register(name).map_err(|source| NetmapError::Register {
            name: name.to_owned(),
            source,
        })?;
        let map_err = |source| NetmapError::Map {
            size: reg.nr_memsize,
            source,
        };
        let size = usize::try_from(reg.nr_memsize)
            .map_err(|_| map_err(io::Error::from(io::ErrorKind::InvalidData)))?;
        // The region is mapped from a duplicate of the registered descriptor (the same
        // open file: the same netmap registration).
        let file = std::fs::File::from(dev.as_fd().try_clone_to_owned().map_err(map_err)?);
        let map = Region::attach(file, size, reg.nr_mem_id).map_err(|e| match e {
            MemError::Sys(source) => map_err(source),
            other => map_err(io::Error::new(io::ErrorKind::InvalidData, other)),
        })?;
        let nifp = Nifp::new(map, &reg).map_err(NetmapError::Layout)?;
        log::info!(
            "{}: {} TX and {} RX rings of {} and {} slots, {}-byte region, mem id {}",
            opts.port,
            reg.nr_tx_rings,
            reg.nr_rx_rings,
            reg.nr_tx_slots,
            reg.nr_rx_slots,
            reg.nr_memsize,
            reg.nr_mem_id
        );
        Ok((dev, nifp))
    }

    fn txsync(&mut self) -> io::Result<()> {
        self.ioctl(NIOCTXSYNC)
    }

    fn rxsync(&mut self) -> io::Result<()> {
        self.ioctl(NIOCRXSYNC)
    }

    fn poll(&mut self, events: i16, timeout_ms: i32) -> io::Result<i16> {
        ptnet_datapath::sys::poll_one(&self.fd, events, timeout_ms)
    }
}

/// The prefix of port names served by the netmap backend (`-i netmap:ptnet0`), as in
/// netmap's pkt-gen; the rest of the name is the `nr_name` registered.
pub const NETMAP_PREFIX: &str = "netmap:";
/// The device the netmap backend opens.
pub const NETMAP_DEVICE: &str = "/dev/netmap";

/// `nr_name` of a `netmap:NAME` port name.
pub fn nr_name(port: &str) -> Result<&str, NetmapError> {
    port.strip_prefix(NETMAP_PREFIX)
        .filter(|n| !n.is_empty() && n.len() < NETMAP_REQ_IFNAMSIZ as usize && !n.contains('\0'))
        .ok_or_else(|| NetmapError::Name(port.to_owned()))
}

/// A port registered through netmap's API.
#[derive(Debug)]
pub struct NetmapPort<K: Kernel = Device> {
    name: String,
    nifp: Nifp,
    kernel: K,
    busy_poll: bool,
    /// Failed syncs (logged once).
    sync_errors: u64,
}

impl<K: Kernel> NetmapPort<K> {
    /// A port named `name` on the rings in `nifp`, synced by `kernel`. With `busy_poll`, the
    /// loops spin on txsync/rxsync instead of sleeping in poll().
    pub fn new(name: String, nifp: Nifp, kernel: K, busy_poll: bool) -> Self {
        NetmapPort {
            name,
            nifp,
            kernel,
            busy_poll,
            sync_errors: 0,
        }
    }

    /// The rings.
    pub fn nifp(&self) -> &Nifp {
        &self.nifp
    }

    /// The kernel side.
    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// Syncs that failed so far.
    pub fn sync_errors(&self) -> u64 {
        self.sync_errors
    }

    fn sync(&mut self, tx: bool) {
        self.nifp.before_sync(tx);
        let res = if tx {
            self.kernel.txsync()
        } else {
            self.kernel.rxsync()
        };
        if let Err(e) = res {
            if self.sync_errors == 0 {
                log::warn!(
                    "{}: {} failed: {e} (later failures are only counted)",
                    self.name,
                    if tx { "NIOCTXSYNC" } else { "NIOCRXSYNC" }
                );
            }
            self.sync_errors += 1;
        }
        self.nifp.after_sync(tx);
    }
}

impl<K: Kernel> Backend for NetmapPort<K> {
    type Error = NetmapError;

    fn attach(opts: &AttachOptions) -> Result<Self, NetmapError> {
        let (kernel, nifp) = K::attach(opts)?;
        Ok(NetmapPort::new(
            opts.port.clone(),
            nifp,
            kernel,
            opts.busy_poll,
        ))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn rings(&self) -> Geometry {
        self.nifp.geometry()
    }

    fn busy_poll(&self) -> bool {
        self.busy_poll
    }

    fn tx_space(&self, r: u32) -> u32 {
        self.nifp.tx_space(r)
    }

    fn rx_pending(&self, r: u32) -> u32 {
        self.nifp.rx_pending(r)
    }

    fn tx_batch<F: FnMut(u32, &mut [u8]) -> u16>(&mut self, r: u32, max: u32, fill: F) -> u32 {
        self.nifp.tx_batch(r, max, fill)
    }

    fn tx_frags(&mut self, r: u32, frags: &[&[u8]]) -> bool {
        self.nifp.tx_frags(r, frags)
    }

    fn rx_batch<F: FnMut(&[u8], &NetmapSlot)>(&mut self, r: u32, max: u32, eat: F) -> u32 {
        self.nifp.rx_batch(r, max, eat)
    }

    /// `NIOCTXSYNC` syncs every TX ring bound to the file descriptor, whatever `r`.
    fn txsync(&mut self, _r: u32) {
        self.sync(true)
    }

    /// netmap's txsync always reclaims what the other side completed: a plain txsync.
    fn txsync_reclaim(&mut self, _r: u32) {
        self.sync(true)
    }

    /// `NIOCRXSYNC` syncs every RX ring bound to the file descriptor, whatever `r`.
    fn rxsync(&mut self, _r: u32) {
        self.sync(false)
    }

    /// netmap's poll(). For TX, rings short of room get `cur` at `tail` first, so the
    /// kernel wakes us only when `tail` moves on; `cur` returns to `head` afterwards.
    fn wait(&mut self, want: Want, timeout: Option<Duration>) -> io::Result<bool> {
        let tx = want == Want::Tx;
        if tx {
            self.nifp.set_tx_wake_points();
        } else {
            self.nifp.before_sync(false);
        }
        let events = if tx { libc::POLLOUT } else { libc::POLLIN };
        let res = self.kernel.poll(events, poll_timeout(timeout));
        self.nifp.after_sync(tx);
        if tx {
            self.nifp.clear_wake_points(true);
        }
        match res {
            // A signal: the caller checks its stop conditions and comes back.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
            Ok(rev) if rev & (libc::POLLERR | libc::POLLNVAL) != 0 => {
                return Err(io::Error::other(format!(
                    "poll() on the netmap device returned revents {rev:#x}"
                )));
            }
            Ok(_) => {}
        }
        Ok(self.nifp.ready(tx))
    }
}

#[cfg(test)]
mod tests {
    use ptnet_spec::netmap::NS_MOREFRAG;
    use ptnet_spec::ring::{KringIndices, distance, nm_next, nm_prev};

    use super::*;
    use crate::config::{Config, Mode, NETMAP_DEVICE};
    use crate::nifp::tests::{Fixture, fixture};
    use crate::run;

    /// A fake kernel: a port whose TX ring `t` is looped back into RX ring `t % rx_rings`,
    /// like a NIC cabled to itself. Frames that find the RX ring full are dropped; with
    /// `stalled`, TX slots are never consumed (a peer that stopped).
    struct Loopback {
        f: Fixture,
        tx: Vec<KringIndices>,
        rx: Vec<KringIndices>,
        stalled: bool,
        dropped: u64,
        /// (cur, tail) of TX ring 0 at every poll.
        polled_tx0: Vec<(u32, u32)>,
    }

    impl Loopback {
        fn port(tx: usize, rx: usize, slots: u32) -> NetmapPort<Loopback> {
            let f = fixture(tx, rx, slots, slots);
            let nifp = f.nifp();
            let k = Loopback {
                tx: f
                    .ifc
                    .tx
                    .iter()
                    .map(|r| KringIndices::new_tx(r.num_slots()))
                    .collect(),
                rx: f
                    .ifc
                    .rx
                    .iter()
                    .map(|r| KringIndices::new_rx(r.num_slots()))
                    .collect(),
                f,
                stalled: false,
                dropped: 0,
                polled_tx0: Vec::new(),
            };
            NetmapPort::new("netmap:lo0".into(), nifp, k, false)
        }

        fn einval() -> io::Error {
            io::Error::from_raw_os_error(libc::EINVAL)
        }

        /// Copies TX slot `s` into the next free slot of RX ring `r`, if any.
        fn deliver(&mut self, s: NetmapSlot, r: usize) {
            let view = &self.f.ifc.rx[r];
            let k = &mut self.rx[r];
            let n = k.num_slots;
            if distance(k.hwtail, nm_prev(k.hwcur, n), n) == 0 {
                self.dropped += 1;
                return;
            }
            let d = view.read_slot(k.hwtail);
            let (from, to) = (self.f.region.buf(s.buf_idx), self.f.region.buf(d.buf_idx));
            let len = s.len.min(self.f.region.buf_size() as u16);
            if let (Some(from), Some(to)) = (from, to) {
                to.copy_from(from, len.into());
            }
            view.write_slot(
                k.hwtail,
                NetmapSlot {
                    len,
                    flags: s.flags & NS_MOREFRAG,
                    ..d
                },
            );
            k.hwtail = nm_next(k.hwtail, n);
        }
    }

    impl Kernel for Loopback {
        fn attach(_: &AttachOptions) -> Result<(Self, Nifp), NetmapError> {
            Err(NetmapError::Name(
                "loopback ports are built by the tests".into(),
            ))
        }

        fn txsync(&mut self) -> io::Result<()> {
            let nrx = self.rx.len();
            for t in 0..self.tx.len() {
                let view = self.f.ifc.tx[t].clone();
                let (head, cur, _) = self.f.pointers(&view);
                let v = self.tx[t]
                    .txsync_prologue(head, cur)
                    .map_err(|_| Self::einval())?;
                let n = view.num_slots();
                while !self.stalled && self.tx[t].hwcur != v.head {
                    let s = view.read_slot(self.tx[t].hwcur);
                    self.deliver(s, t % nrx);
                    self.tx[t].hwcur = nm_next(self.tx[t].hwcur, n);
                }
                let k = &mut self.tx[t];
                (k.rhead, k.rcur) = (v.head, v.cur);
                k.hwtail = nm_prev(k.hwcur, n);
                k.rtail = k.hwtail;
                view.reset_pointers(head, cur, k.rtail);
            }
            for (view, k) in self.f.ifc.rx.iter().zip(&self.rx) {
                let (head, cur, _) = self.f.pointers(view);
                view.reset_pointers(head, cur, k.hwtail);
            }
            Ok(())
        }

        fn rxsync(&mut self) -> io::Result<()> {
            for (view, k) in self.f.ifc.rx.iter().zip(&mut self.rx) {
                let (head, cur, _) = self.f.pointers(view);
                let v = k.rxsync_prologue(head, cur).map_err(|_| Self::einval())?;
                (k.hwcur, k.rhead, k.rcur) = (v.head, v.head, v.cur);
                k.rtail = k.hwtail;
                view.reset_pointers(head, cur, k.hwtail);
            }
            Ok(())
        }

        fn poll(&mut self, events: i16, _timeout_ms: i32) -> io::Result<i16> {
            let (_, cur, tail) = self.f.pointers(&self.f.ifc.tx[0]);
            self.polled_tx0.push((cur, tail));
            self.txsync()?;
            self.rxsync()?;
            Ok(events)
        }
    }

    fn cfg(mode: Mode, n: u64) -> Config {
        let mut c = Config::new(mode, vec!["netmap:lo0".into()], NETMAP_DEVICE.into());
        c.count = Some(n);
        c.duration = Some(Duration::from_secs(20));
        c.quiet = true;
        c.batch = 7;
        c.check = mode == Mode::Rx;
        c
    }

    #[test]
    fn the_tx_and_rx_loops_run_over_netmap_rings() {
        for (size, count) in [(60, 200), (1514, 100), (5000, 60)] {
            let mut p = Loopback::port(2, 1, 256);
            let mut c = cfg(Mode::Tx, count);
            c.size = size;
            let t = run::tx(&mut p, &c).unwrap();
            assert_eq!(
                (t.packets, t.tx_pending_at_exit),
                (count, Some(0)),
                "size {size}"
            );
            let r = run::rx(&mut p, &cfg(Mode::Rx, count)).unwrap();
            assert_eq!(r.packets, count, "size {size}");
            let k = r.check.unwrap();
            assert_eq!(
                (k.good, k.lost, k.out_of_order, k.bad_payload),
                (count, 0, 0, 0)
            );
            assert_eq!(
                (p.kernel().dropped, p.sync_errors(), p.nifp().rejected()),
                (0, 0, 0)
            );
            assert_eq!(r.ports, ["netmap:lo0"]);
        }
    }

    #[test]
    fn a_sender_short_of_room_asks_to_be_woken_when_tail_passes_cur() {
        let mut p = Loopback::port(1, 1, 64);
        p.kernel().stalled = true;
        assert_eq!(p.tx_batch(0, 62, |_, _| 60), 62);
        p.txsync(0);
        assert_eq!(p.tx_space(0), 1);
        // A two-slot frame does not fit: the wait must not return for the one free slot.
        assert!(!p.tx_frags(0, &[&[1; 100], &[2; 100]]));
        assert!(!p.wait(Want::Tx, Some(Duration::from_millis(1))).unwrap());
        assert_eq!(
            p.kernel().polled_tx0,
            [(63, 63)],
            "cur at tail during the poll"
        );
        let f = &p.kernel().f;
        assert_eq!(
            f.pointers(&f.ifc.tx[0]).1,
            62,
            "cur back at head afterwards"
        );
        // The peer resumes: the ring drains into the RX ring, and the frame fits.
        p.kernel().stalled = false;
        assert!(p.wait(Want::Tx, None).unwrap());
        assert!(p.wait(Want::Rx, Some(Duration::ZERO)).unwrap());
        assert_eq!(p.rx_pending(0), 62);
        assert!(p.tx_frags(0, &[&[1; 100], &[2; 100]]));
    }

    #[test]
    fn nr_name_is_the_rest_of_a_netmap_name() {
        assert_eq!(nr_name("netmap:ptnet0").unwrap(), "ptnet0");
        assert_eq!(nr_name("netmap:eth0-1").unwrap(), "eth0-1");
        for bad in [
            "ptnet0",
            "netmap:",
            "vale0:a",
            &format!("netmap:{}", "x".repeat(64)),
        ] {
            assert!(matches!(nr_name(bad), Err(NetmapError::Name(_))), "{bad}");
        }
        assert!(nr_name(&format!("netmap:{}", "x".repeat(63))).is_ok());
    }

    #[test]
    fn poll_timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(poll_timeout(None), -1);
        assert_eq!(poll_timeout(Some(Duration::ZERO)), 0);
        assert_eq!(poll_timeout(Some(Duration::from_micros(1))), 1);
        assert_eq!(poll_timeout(Some(Duration::from_millis(100))), 100);
        assert_eq!(poll_timeout(Some(Duration::from_secs(1 << 40))), i32::MAX);
    }

    fn attach(port: &str, device: &str) -> Result<NetmapPort, NetmapError> {
        NetmapPort::attach(&AttachOptions {
            port: port.into(),
            socket: device.into(),
            busy_poll: false,
            all_ethertypes: false,
        })
    }

    #[test]
    fn attach_without_a_netmap_device_fails_cleanly() {
        let e = attach("netmap:ptnet0", "/nonexistent/netmap").unwrap_err();
        assert!(matches!(e, NetmapError::Open { .. }), "{e:?}");
        // A device that is not netmap's refuses the ioctl.
        let e = attach("netmap:ptnet0", "/dev/null").unwrap_err();
        assert!(matches!(e, NetmapError::Register { .. }), "{e:?}");
        let e = attach("ptnet0", "/dev/null").unwrap_err();
        assert!(matches!(e, NetmapError::Name(_)), "{e:?}");
    }
}
