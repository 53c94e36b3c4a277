//! One open `/dev/netmap`: what netmap's kernel module keeps per file descriptor, served by
//! an attached ptnetd port. Everything here is safe Rust over values the interposer copied
//! out of the application; the requests an application may send are checked here, once.

use ptnet_client::proto::PortRequest;
use ptnet_client::{ClientError, Port};
use ptnet_spec::netmap::{
    NETMAP_API, NETMAP_REQ_PORT_HDR_GET, NETMAP_REQ_PORT_HDR_SET, NETMAP_REQ_PORT_INFO_GET,
    NETMAP_REQ_REGISTER, NR_ACCEPT_VNET_HDR, NR_EXCLUSIVE, NR_NO_TX_POLL, NR_REG_ALL_NIC,
    NR_REG_DEFAULT, NR_REG_NIC_SW, NR_REG_NULL, NR_REG_ONE_NIC, NR_REG_ONE_SW, NR_REG_PIPE_MASTER,
    NR_REG_PIPE_SLAVE, NR_REG_SW, NR_RX_RINGS_ONLY, NR_TX_RINGS_ONLY, NmreqHeader, NmreqPortHdr,
    NmreqPortInfoGet, NmreqRegister,
};
use std::ops::Range;

/// An `errno` value.
pub type Errno = i32;

/// The `nr_flags` a registration may carry: everything else is refused with `EINVAL`, as
/// netmap refuses flags it does not know (monitors and zero-copy monitors included: ptnetd
/// has no monitor ports).
const KNOWN_FLAGS: u64 = NR_EXCLUSIVE
    | NR_RX_RINGS_ONLY
    | NR_TX_RINGS_ONLY
    | NR_ACCEPT_VNET_HDR
    | NR_NO_TX_POLL
    | ptnet_spec::netmap::NR_DO_RX_POLL;

/// The body of a control request, as the interposer copied it from the application.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// `NETMAP_REQ_REGISTER`.
    Register(NmreqRegister),
    /// `NETMAP_REQ_PORT_INFO_GET`.
    PortInfo(NmreqPortInfoGet),
    /// `NETMAP_REQ_PORT_HDR_GET` / `_SET`.
    PortHdr(NmreqPortHdr),
}

impl Body {
    /// An empty body of the kind `reqtype` carries; `None` for request types the preload
    /// library does not serve (VALE administration, kloops, CSB mode, pools).
    pub fn for_reqtype(reqtype: u16) -> Option<Self> {
        match reqtype {
            NETMAP_REQ_REGISTER => Some(Body::Register(NmreqRegister::default())),
            NETMAP_REQ_PORT_INFO_GET => Some(Body::PortInfo(NmreqPortInfoGet::default())),
            NETMAP_REQ_PORT_HDR_GET | NETMAP_REQ_PORT_HDR_SET => {
                Some(Body::PortHdr(NmreqPortHdr::default()))
            }
            _ => None,
        }
    }
}

/// How the port behind a netmap file was bound.
#[derive(Debug)]
struct Bound {
    port: Port,
    /// TX rings the application syncs (indices into the port's rings).
    tx: Range<usize>,
    /// RX rings, likewise (after the TX rings: CSB order).
    rx: Range<usize>,
    no_tx_poll: bool,
}

/// One open `/dev/netmap`.
#[derive(Debug, Default)]
pub struct NmFile {
    bound: Option<Bound>,
}

/// netmap's name of the port: `nr_name` up to its NUL; `None` if it has none or is not
/// UTF-8 (netmap names are ASCII).
fn port_name(hdr: &NmreqHeader) -> Option<&str> {
    let end = hdr.nr_name.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&hdr.nr_name[..end])
        .ok()
        .filter(|s| !s.is_empty())
}

/// The daemon's refusal as the errno netmap gives for it.
fn refusal(e: &ClientError) -> Errno {
    match e {
        ClientError::Refused(m) => {
            let m = m.to_ascii_lowercase();
            if m.contains("busy") || m.contains("in use") || m.contains("attached") {
                libc::EBUSY
            } else if m.contains("not allowed") || m.contains("permission") || m.contains("policy")
            {
                libc::EPERM
            } else if m.contains("limit") || m.contains("too many") {
                libc::ENOMEM
            } else {
                libc::ENXIO
            }
        }
        ClientError::Proto(_) => libc::ENXIO,
        ClientError::Bad(_) | ClientError::Io(_) => libc::EIO,
    }
}

impl NmFile {
    /// Whether a port is bound.
    pub fn is_bound(&self) -> bool {
        self.bound.is_some()
    }

    /// The bound port.
    pub fn port(&self) -> Option<&Port> {
        self.bound.as_ref().map(|b| &b.port)
    }

    /// `NIOCCTRL`: serves `hdr` with `body` (already copied from the application; the
    /// caller copies it back on success). `attach` asks the daemon for a port.
    pub fn ctrl(
        &mut self,
        hdr: &NmreqHeader,
        body: &mut Body,
        attach: impl FnOnce(PortRequest) -> Result<Port, ClientError>,
    ) -> Result<(), Errno> {
        if hdr.nr_version != NETMAP_API || hdr.nr_reserved != 0 {
            return Err(libc::EINVAL);
        }
        // Options (extmem, CSB mode, offsets...) are not served: netmap fails a request
        // with an option it does not know with EOPNOTSUPP.
        if hdr.nr_options != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        let name = port_name(hdr).ok_or(libc::EINVAL)?;
        match (hdr.nr_reqtype, body) {
            (NETMAP_REQ_REGISTER, Body::Register(req)) => self.register(name, req, attach),
            (NETMAP_REQ_PORT_INFO_GET, Body::PortInfo(info)) => {
                // netmap answers for a port without binding it; ptnetd attaches to learn
                // the geometry and lets go at once (an on-demand VALE port goes with it).
                let port = match &self.bound {
                    Some(b) if b.port.info().port == name => None,
                    _ => Some(attach(request(name, None)).map_err(|e| refusal(&e))?),
                };
                let p = port
                    .as_ref()
                    .or(self.bound.as_ref().map(|b| &b.port))
                    .ok_or(libc::ENXIO)?;
                let i = p.info();
                *info = NmreqPortInfoGet {
                    nr_memsize: i.region_size,
                    nr_tx_slots: i.num_tx_slots,
                    nr_rx_slots: i.num_rx_slots,
                    nr_tx_rings: i.num_tx_rings as u16,
                    nr_rx_rings: i.num_rx_rings as u16,
                    nr_host_tx_rings: 0,
                    nr_host_rx_rings: 0,
                    nr_mem_id: i.mem_id,
                    pad: [0; 3],
                };
                Ok(())
            }
            // Host clients' ports carry no virtio-net header: netmap's answer for a port
            // without one is 0, and only 0 may be set.
            (NETMAP_REQ_PORT_HDR_GET, Body::PortHdr(h)) => {
                h.nr_hdr_len = 0;
                Ok(())
            }
            (NETMAP_REQ_PORT_HDR_SET, Body::PortHdr(h)) => {
                if h.nr_hdr_len == 0 {
                    Ok(())
                } else {
                    Err(libc::EINVAL)
                }
            }
            (t, _) if Body::for_reqtype(t).is_none() => Err(libc::EOPNOTSUPP),
            _ => Err(libc::EINVAL),
        }
    }

    fn register(
        &mut self,
        name: &str,
        req: &mut NmreqRegister,
        attach: impl FnOnce(PortRequest) -> Result<Port, ClientError>,
    ) -> Result<(), Errno> {
        if self.bound.is_some() {
            return Err(libc::EBUSY);
        }
        if req.nr_flags & !KNOWN_FLAGS != 0 {
            return Err(libc::EINVAL);
        }
        let one = match req.nr_mode {
            NR_REG_DEFAULT | NR_REG_ALL_NIC => None,
            NR_REG_ONE_NIC => Some(usize::from(req.nr_ringid)),
            // ptnetd's ports have no host rings: binding them is what netmap refuses for a
            // port without host rings.
            NR_REG_SW | NR_REG_NIC_SW | NR_REG_ONE_SW => return Err(libc::EINVAL),
            NR_REG_NULL | NR_REG_PIPE_MASTER | NR_REG_PIPE_SLAVE => {
                return Err(libc::EOPNOTSUPP);
            }
            _ => return Err(libc::EINVAL),
        };
        let port = attach(request(name, Some(req))).map_err(|e| refusal(&e))?;
        let info = port.info().clone();
        let (ntx, nrx) = (info.num_tx_rings as usize, info.num_rx_rings as usize);
        let (mut tx, mut rx) = match one {
            None => (0..ntx, ntx..ntx + nrx),
            Some(r) if r < ntx.min(nrx) => (r..r + 1, ntx + r..ntx + r + 1),
            Some(_) => return Err(libc::EINVAL),
        };
        if req.nr_flags & NR_TX_RINGS_ONLY != 0 {
            rx = rx.start..rx.start;
        }
        if req.nr_flags & NR_RX_RINGS_ONLY != 0 {
            tx = tx.start..tx.start;
        }
        *req = NmreqRegister {
            nr_offset: info.nifp_offset,
            nr_memsize: info.region_size,
            nr_tx_slots: info.num_tx_slots,
            nr_rx_slots: info.num_rx_slots,
            nr_tx_rings: ntx as u16,
            nr_rx_rings: nrx as u16,
            nr_host_tx_rings: 0,
            nr_host_rx_rings: 0,
            nr_mem_id: info.mem_id,
            nr_ringid: req.nr_ringid,
            nr_mode: req.nr_mode,
            // No extra buffers: netmap may grant fewer than asked, and says how many here.
            nr_extra_bufs: 0,
            pad: 0,
            nr_flags: req.nr_flags,
        };
        self.bound = Some(Bound {
            port,
            tx,
            rx,
            no_tx_poll: req.nr_flags & NR_NO_TX_POLL != 0,
        });
        Ok(())
    }

    /// `NIOCTXSYNC` (`tx`) or `NIOCRXSYNC`: syncs the bound rings of that direction. A ring
    /// whose header holds indices out of range is reinitialised, as netmap does; the call
    /// still succeeds.
    pub fn sync(&mut self, tx: bool) -> Result<(), Errno> {
        let b = self.bound.as_mut().ok_or(libc::ENXIO)?;
        let rings = if tx { b.tx.clone() } else { b.rx.clone() };
        for k in rings {
            let _ = b.port.netmap_sync(k);
        }
        Ok(())
    }

    /// The first half of `poll`: syncs as netmap's poll does (TX always unless
    /// `NR_NO_TX_POLL`, RX when `POLLIN` is asked) and returns the events ready now.
    pub fn poll_events(&mut self, events: i16) -> i16 {
        let Some(b) = self.bound.as_mut() else {
            return libc::POLLERR;
        };
        let want_out = events & (libc::POLLOUT | libc::POLLWRNORM) != 0;
        let want_in = events & (libc::POLLIN | libc::POLLRDNORM) != 0;
        let mut rev = 0;
        if !b.no_tx_poll || want_out {
            for k in b.tx.clone() {
                let _ = b.port.netmap_sync(k);
            }
        }
        if want_in {
            for k in b.rx.clone() {
                let _ = b.port.netmap_sync(k);
            }
        }
        if want_out && b.tx.clone().any(|k| b.port.netmap_ready(k)) {
            rev |= events & (libc::POLLOUT | libc::POLLWRNORM);
        }
        if want_in && b.rx.clone().any(|k| b.port.netmap_ready(k)) {
            rev |= events & (libc::POLLIN | libc::POLLRDNORM);
        }
        rev
    }

    /// Before sleeping in `poll` for `events`: arms the rings' interrupts; returns whether
    /// one became ready meanwhile (do not sleep then).
    pub fn poll_arm(&mut self, events: i16) -> bool {
        let Some(b) = self.bound.as_mut() else {
            return true;
        };
        let mut ready = false;
        if events & (libc::POLLOUT | libc::POLLWRNORM) != 0 {
            for k in b.tx.clone() {
                ready |= b.port.netmap_arm(k);
            }
        }
        if events & (libc::POLLIN | libc::POLLRDNORM) != 0 {
            for k in b.rx.clone() {
                ready |= b.port.netmap_arm(k);
            }
        }
        ready
    }

    /// After sleeping: interrupts off and consumed.
    pub fn poll_disarm(&mut self) {
        if let Some(b) = self.bound.as_mut() {
            b.port.netmap_disarm();
        }
    }

    /// What `mmap` of this file maps instead: the port's region, from offset 0 (as the guest
    /// driver maps it, and as netmap applications ask), at most its size.
    pub fn mmap_target(&self, len: usize, offset: i64) -> Result<std::os::fd::RawFd, Errno> {
        use std::os::fd::AsRawFd;
        let b = self.bound.as_ref().ok_or(libc::EINVAL)?;
        if offset != 0 || len == 0 || len > b.port.region_size() {
            return Err(libc::EINVAL);
        }
        Ok(b.port.region_file().as_raw_fd())
    }

    /// What `poll` sleeps on for this file once armed.
    pub fn notify_fd(&self) -> Option<std::os::fd::RawFd> {
        self.bound.as_ref().map(|b| b.port.notify_fd())
    }
}

/// The attach request for netmap's registration (`None`: the defaults, for port info).
fn request(name: &str, req: Option<&NmreqRegister>) -> PortRequest {
    let nz32 = |v: u32| (v != 0).then_some(v);
    let nz16 = |v: u16| (v != 0).then_some(u32::from(v));
    PortRequest {
        port: name.to_owned(),
        tx_rings: req.and_then(|r| nz16(r.nr_tx_rings)),
        rx_rings: req.and_then(|r| nz16(r.nr_rx_rings)),
        slots: req.and_then(|r| nz32(r.nr_tx_slots.max(r.nr_rx_slots))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use ptnet_datapath::host::HostClient;
    use ptnet_datapath::kloop::Mode;
    use ptnet_datapath::port::SyncPort;
    use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};

    fn header(name: &str, reqtype: u16) -> NmreqHeader {
        let mut h = NmreqHeader {
            nr_version: NETMAP_API,
            nr_reqtype: reqtype,
            nr_reserved: 0,
            nr_name: [0; 64],
            nr_options: 0,
            nr_body: 0,
        };
        h.nr_name[..name.len()].copy_from_slice(name.as_bytes());
        h
    }

    /// A switch whose ports host clients attach in process; keeps the attachments alive.
    struct Rig {
        sw: Arc<Switch>,
        held: Vec<HostClient>,
    }

    impl Rig {
        fn new(name: &str) -> Self {
            Rig {
                sw: Switch::new(name),
                held: Vec::new(),
            }
        }

        fn attach(&mut self, req: PortRequest) -> Result<Port, ClientError> {
            let spec = VPortSpec {
                slots: req.slots.unwrap_or(256),
                ..Default::default()
            };
            let port: Arc<dyn SyncPort> = Arc::new(ValePortSync {
                switch: Arc::clone(&self.sw),
                port: self
                    .sw
                    .add_port(&req.port, &spec)
                    .map_err(|e| ClientError::Refused(e.to_string()))?,
            });
            let (hc, files) = HostClient::attach(port, Mode::default())?;
            let p = Port::from_parts(hc.info().clone(), files)?;
            self.held.push(hc);
            Ok(p)
        }

        fn register(&mut self, name: &str, req: NmreqRegister) -> (NmFile, NmreqRegister) {
            let mut f = NmFile::default();
            let mut body = Body::Register(req);
            f.ctrl(&header(name, NETMAP_REQ_REGISTER), &mut body, |r| {
                self.attach(r)
            })
            .unwrap();
            let Body::Register(out) = body else {
                unreachable!()
            };
            (f, out)
        }
    }

    #[test]
    fn registration_answers_as_netmap_does() {
        let mut r = Rig::new("nm-pre1");
        let req = NmreqRegister {
            nr_mode: NR_REG_ALL_NIC,
            nr_tx_slots: 128,
            nr_extra_bufs: 5,
            ..Default::default()
        };
        let (f, out) = r.register("nm-pre1:a", req);
        let info = f.port().unwrap().info().clone();
        assert_eq!(out.nr_offset, info.nifp_offset);
        assert_eq!(out.nr_memsize, info.region_size);
        assert_eq!((out.nr_tx_rings, out.nr_rx_rings), (1, 1));
        assert_eq!((out.nr_host_tx_rings, out.nr_host_rx_rings), (0, 0));
        assert_eq!(out.nr_tx_slots, 128);
        assert_eq!(out.nr_extra_bufs, 0, "none granted, and said so");
    }

    #[test]
    fn requests_netmap_refuses_are_refused_with_its_errno() {
        let mut r = Rig::new("nm-pre2");
        let mut f = NmFile::default();
        let reg = |mode, flags| {
            Body::Register(NmreqRegister {
                nr_mode: mode,
                nr_flags: flags,
                ..Default::default()
            })
        };
        let cases: [(NmreqHeader, Body, Errno); 8] = [
            (
                NmreqHeader {
                    nr_version: 13,
                    ..header("nm-pre2:a", NETMAP_REQ_REGISTER)
                },
                reg(NR_REG_ALL_NIC, 0),
                libc::EINVAL,
            ),
            (
                header("", NETMAP_REQ_REGISTER),
                reg(NR_REG_ALL_NIC, 0),
                libc::EINVAL,
            ),
            (
                NmreqHeader {
                    nr_options: 0x1000,
                    ..header("nm-pre2:a", NETMAP_REQ_REGISTER)
                },
                reg(NR_REG_ALL_NIC, 0),
                libc::EOPNOTSUPP,
            ),
            (
                header("nm-pre2:a", NETMAP_REQ_REGISTER),
                reg(NR_REG_SW, 0),
                libc::EINVAL,
            ),
            (
                header("nm-pre2:a", NETMAP_REQ_REGISTER),
                reg(NR_REG_NULL, 0),
                libc::EOPNOTSUPP,
            ),
            (
                header("nm-pre2:a", NETMAP_REQ_REGISTER),
                reg(NR_REG_ALL_NIC, ptnet_spec::netmap::NR_MONITOR_TX),
                libc::EINVAL,
            ),
            (
                header("nm-pre2:a", 3),
                reg(NR_REG_ALL_NIC, 0),
                libc::EOPNOTSUPP,
            ),
            (
                header("nm-pre2:a", NETMAP_REQ_PORT_HDR_SET),
                Body::PortHdr(NmreqPortHdr {
                    nr_hdr_len: 12,
                    pad: 0,
                }),
                libc::EINVAL,
            ),
        ];
        for (h, mut body, errno) in cases {
            assert_eq!(
                f.ctrl(&h, &mut body, |req| r.attach(req)).unwrap_err(),
                errno,
                "{h:?} {body:?}"
            );
        }
        assert!(!f.is_bound());
        assert_eq!(f.sync(true), Err(libc::ENXIO));
        assert_eq!(f.mmap_target(4096, 0), Err(libc::EINVAL));
        // One NIC ring past the last: refused.
        let mut body = reg(NR_REG_ONE_NIC, 0);
        if let Body::Register(req) = &mut body {
            req.nr_ringid = 1;
        }
        assert_eq!(
            f.ctrl(
                &header("nm-pre2:b", NETMAP_REQ_REGISTER),
                &mut body,
                |req| r.attach(req)
            ),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn poll_reports_room_to_send_and_nothing_to_receive_and_arms_without_sleeping_wrongly() {
        let mut r = Rig::new("nm-pre3");
        let (mut a, _) = r.register("nm-pre3:a", NmreqRegister::default());
        let (mut b, _) = r.register("nm-pre3:b", NmreqRegister::default());
        assert_eq!(b.poll_events(libc::POLLIN), 0, "nothing to receive yet");
        assert_eq!(a.poll_events(libc::POLLOUT), libc::POLLOUT, "room to send");
        assert!(a.sync(true).is_ok() && a.sync(false).is_ok());
        assert_eq!(mmap_check(&a), Ok(()));
        // Arming an empty RX ring finds nothing ready: the caller may sleep.
        assert!(!b.poll_arm(libc::POLLIN));
        b.poll_disarm();
        assert!(b.notify_fd().is_some());
    }

    fn mmap_check(f: &NmFile) -> Result<(), Errno> {
        let size = f.port().unwrap().region_size();
        f.mmap_target(size, 0)?;
        assert_eq!(f.mmap_target(size + 1, 0), Err(libc::EINVAL));
        assert_eq!(f.mmap_target(4096, -4096), Err(libc::EINVAL));
        assert_eq!(f.mmap_target(4096, 4096), Err(libc::EINVAL));
        assert_eq!(f.mmap_target(0, 0), Err(libc::EINVAL));
        Ok(())
    }
}
