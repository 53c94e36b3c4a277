//! One QEMU connected to a port's ivshmem server: the device block it gets, the setup
//! messages of QEMU's ivshmem protocol, and the device's start and stop (SPEC.md §6).
//!
//! The daemon is peer [`DAEMON_PEER`] of the connection; the guest is the peer whose id is its
//! interface's block ([`IvshmemBlock::peer_id`]). The daemon's vectors are one kick eventfd
//! per ring (read by the port's sync loop) and the control eventfd; the guest's are one
//! interrupt eventfd per ring and the configuration-change eventfd. QEMU holds copies of all
//! of them, so the daemon reads and writes them only through `ptnet_datapath::peer`.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use ptnet_datapath::kloop::{self, KloopHandle, Mode};
use ptnet_datapath::kring::{ClientBinding, Interrupt};
use ptnet_datapath::mem::{IvshmemBlock, Region};
use ptnet_datapath::peer::{self, PeerEventFd};
use ptnet_datapath::port::SyncPort;
use ptnet_spec::device::{PTNET_F_STATUS, PTNET_F_VNET_HDR, PTNET_VNET_HDR_LEN};
use ptnet_spec::ivshmem::{
    IVSHMEM_DRIVER_FEATURES_OFFSET, IVSHMEM_DRIVER_STATUS_OFFSET, IvshmemHeader,
    PTNET_IVS_DRIVER_OK, PTNET_IVSHMEM_HDR_SIGNATURE,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::IvshmemStats;
use crate::config::{DeviceConfig, STATUS_RUNNING};

/// The daemon's peer id on every connection: the guest rings `0 << 16 | vector`.
pub const DAEMON_PEER: u16 = 0;

/// Version of QEMU's ivshmem server protocol (its first message).
const PROTOCOL_VERSION: i64 = 0;

/// One message of the ivshmem protocol: a little-endian i64, with a descriptor or without.
/// The socket is non-blocking: a QEMU that does not read cannot stall the daemon's thread
/// (the set-up is a few hundred bytes, far below a socket buffer; `EAGAIN` ends the
/// connection).
fn send(sock: &UnixStream, value: i64, fd: Option<RawFd>) -> io::Result<()> {
    let bytes = value.to_le_bytes();
    let fds: &[RawFd] = match &fd {
        Some(f) => std::slice::from_ref(f),
        None => &[],
    };
    let n = sock
        .send_with_fds(&[&bytes[..]], fds)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    if n != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write of an ivshmem message",
        ));
    }
    Ok(())
}

/// A ring's interrupt toward the guest: its MSI-X vector's eventfd, counted.
#[derive(Debug)]
struct GuestIrq {
    fd: PeerEventFd,
    stats: Arc<IvshmemStats>,
}

impl Interrupt for GuestIrq {
    #[inline]
    fn raise(&self) {
        self.stats.irqs.fetch_add(1, Ordering::Relaxed);
        self.fd.signal();
    }
}

/// What a connection's device is made of.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// The MAC the guest reads.
    pub mac: [u8; 6],
    /// The sync loop mode.
    pub mode: Mode,
    /// Whether the port takes the virtio-net header (`PTNET_F_VNET_HDR` offered).
    pub vnet_hdr_ok: bool,
}

/// One connected QEMU.
#[derive(Debug)]
pub struct Conn {
    port: Arc<dyn SyncPort>,
    region: Arc<Region>,
    block: IvshmemBlock,
    nrings: u32,
    opts: ConnOptions,
    /// The daemon's vectors: one kick per ring (duplicated for each start's sync loop).
    kicks: Vec<EventFd>,
    /// The daemon's control vector.
    ctrl: EventFd,
    /// The guest's vectors: one interrupt per ring.
    irqs: Vec<Arc<GuestIrq>>,
    /// The guest's configuration-change vector.
    config_irq: PeerEventFd,
    running: Option<KloopHandle>,
    generation: u32,
    /// Start requests refused on this connection (their warnings are rate-limited: a guest
    /// ringing the control vector in a loop must not flood the daemon's log).
    refusals: u64,
    stats: Arc<IvshmemStats>,
}

impl Conn {
    /// A device for a new connection to `port`: fills its block (the previous connection's
    /// driver state is gone with its VM) and creates its eventfds.
    pub fn new(
        port: Arc<dyn SyncPort>,
        opts: ConnOptions,
        stats: Arc<IvshmemStats>,
    ) -> io::Result<Self> {
        let ifc = port.interface();
        let region = Arc::clone(ifc.region());
        let nrings = (ifc.tx.len() + ifc.rx.len()) as u32;
        let block = region
            .ivshmem_block(ifc.nifp_offset())
            .filter(|b| b.max_rings >= nrings)
            .ok_or_else(|| io::Error::other("the port's region has no ivshmem block for it"))?;
        let new_fd = || EventFd::new(EFD_NONBLOCK);
        let kicks = (0..nrings).map(|_| new_fd()).collect::<io::Result<_>>()?;
        let irqs = (0..nrings)
            .map(|_| {
                new_fd().map(|e| {
                    Arc::new(GuestIrq {
                        fd: PeerEventFd::new(e),
                        stats: Arc::clone(&stats),
                    })
                })
            })
            .collect::<io::Result<_>>()?;
        let conn = Conn {
            port,
            region,
            block,
            nrings,
            opts,
            kicks,
            ctrl: new_fd()?,
            irqs,
            config_irq: PeerEventFd::new(new_fd()?),
            running: None,
            generation: 0,
            refusals: 0,
            stats,
        };
        conn.fill_block();
        Ok(conn)
    }

    /// The features the device offers.
    fn device_features(&self) -> u32 {
        let vnet = if self.opts.vnet_hdr_ok {
            1 << PTNET_F_VNET_HDR
        } else {
            0
        };
        vnet | 1 << PTNET_F_STATUS
    }

    /// Writes the directory and the block's header, the header's signature last.
    fn fill_block(&self) {
        let mut config = *DeviceConfig::for_port(&*self.port, self.opts.mac).get();
        config.csb_atok_gpa = self.block.atok as u64;
        config.csb_ktoa_gpa = self.block.ktoa as u64;
        let hdr = IvshmemHeader {
            signature: 0,
            peer_id: self.block.peer_id,
            daemon_peer: DAEMON_PEER,
            num_vectors: self.nrings as u16 + 1,
            ctrl_vector: self.nrings as u16,
            device_features: self.device_features(),
            driver_features: 0,
            driver_status: 0,
            generation: self.generation,
            config,
        };
        self.region.write_ivshmem_dir();
        let at = self.block.offset as u64;
        self.region.write(at, hdr);
        fence(Ordering::Release);
        self.region.write(at, PTNET_IVSHMEM_HDR_SIGNATURE);
    }

    /// The guest's peer id.
    pub fn peer_id(&self) -> u16 {
        self.block.peer_id
    }

    /// The control eventfd (the serving thread waits on it).
    pub fn ctrl(&self) -> &EventFd {
        &self.ctrl
    }

    /// Whether the device runs.
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// Sends QEMU its set-up, in the order QEMU's own `ivshmem-server` does: the protocol
    /// version, the guest's id, the shared memory (the region), the daemon's vectors, the
    /// guest's vectors.
    pub fn send_setup(&self, sock: &UnixStream) -> io::Result<()> {
        send(sock, PROTOCOL_VERSION, None)?;
        send(sock, i64::from(self.block.peer_id), None)?;
        send(sock, -1, Some(self.region.file().as_raw_fd()))?;
        for k in self.kicks.iter().chain(std::iter::once(&self.ctrl)) {
            send(sock, i64::from(DAEMON_PEER), Some(k.as_raw_fd()))?;
        }
        let own = self.irqs.iter().map(|i| i.fd.eventfd());
        for i in own.chain(std::iter::once(self.config_irq.eventfd())) {
            send(sock, i64::from(self.block.peer_id), Some(i.as_raw_fd()))?;
        }
        Ok(())
    }

    fn read_u32(&self, field: usize) -> u32 {
        self.region
            .read::<u32>((self.block.offset + field) as u64)
            .unwrap_or(0)
    }

    /// The driver rang the control vector: start or stop as `driver_status` says. Anything
    /// else in the block is the driver's business; a request the device cannot honour is
    /// refused and counted, and the device stays stopped.
    pub fn control(&mut self) {
        if !peer::drain(&self.ctrl) {
            return;
        }
        let want = self.read_u32(IVSHMEM_DRIVER_STATUS_OFFSET) & PTNET_IVS_DRIVER_OK != 0;
        match (want, self.running.is_some()) {
            (true, false) => {
                if let Err(why) = self.start() {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    self.refusals += 1;
                    let n = self.refusals;
                    if n <= 3 || n.is_power_of_two() {
                        log::warn!(
                            "{}: ivshmem device not started: {why} ({n} refused on this \
                             connection)",
                            self.port.name()
                        );
                    }
                }
            }
            (false, true) => self.stop("the driver reset it"),
            // A reset of a stopped device still gets its answer (status 0 and an interrupt).
            (false, false) => self.config_changed(),
            (true, true) => {}
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let offered = self.device_features();
        let accepted = self.read_u32(IVSHMEM_DRIVER_FEATURES_OFFSET);
        if accepted & !offered != 0 {
            return Err(format!(
                "the driver accepted features {accepted:#x}, the device offers {offered:#x}"
            ));
        }
        let vnet = accepted & 1 << PTNET_F_VNET_HDR != 0;
        let hdr_len = if vnet { PTNET_VNET_HDR_LEN } else { 0 };
        let csb = self
            .region
            .csb_at(self.block.atok, self.block.ktoa, self.nrings)
            .ok_or("the CSB arrays lie outside the region")?;
        let binding = ClientBinding::new(csb.clone(), self.irqs.clone())
            .ok_or("one interrupt per ring is needed")?;
        self.port
            .set_vnet_hdr_len(u32::from(hdr_len))
            .map_err(|e| format!("virtio-net header of {hdr_len} bytes: {e}"))?;
        if !self.port.bind(Some(&binding)) {
            self.port.bind(None);
            let _ = self.port.set_vnet_hdr_len(0);
            return Err("cannot bind every ring".into());
        }
        let kicks = self
            .kicks
            .iter()
            .map(EventFd::try_clone)
            .collect::<io::Result<Vec<_>>>()
            .and_then(|k| kloop::spawn(Arc::clone(&self.port), csb, k, self.opts.mode));
        match kicks {
            Ok(k) => self.running = Some(k),
            Err(e) => {
                self.port.bind(None);
                let _ = self.port.set_vnet_hdr_len(0);
                return Err(format!("cannot start the sync loop: {e}"));
            }
        }
        self.set_config(hdr_len, STATUS_RUNNING);
        self.stats.starts.fetch_add(1, Ordering::Relaxed);
        self.stats.running.store(true, Ordering::Relaxed);
        self.stats.vnet_hdr.store(vnet, Ordering::Relaxed);
        log::info!(
            "{}: ivshmem device started: {} rings, peer {}, {:?}, virtio-net header {}",
            self.port.name(),
            self.nrings,
            self.block.peer_id,
            self.opts.mode,
            if vnet { "on" } else { "off" }
        );
        Ok(())
    }

    /// Stops the device if it runs (the driver asked, or QEMU went away).
    pub fn stop(&mut self, why: &str) {
        let Some(k) = self.running.take() else {
            return;
        };
        k.stop();
        self.port.bind(None);
        if let Err(e) = self.port.set_vnet_hdr_len(0) {
            log::warn!(
                "{}: cannot clear the virtio-net header: {e}",
                self.port.name()
            );
        }
        self.set_config(0, 0);
        self.stats.stops.fetch_add(1, Ordering::Relaxed);
        self.stats.running.store(false, Ordering::Relaxed);
        self.stats.vnet_hdr.store(false, Ordering::Relaxed);
        log::info!("{}: ivshmem device stopped ({why})", self.port.name());
    }

    /// Publishes `vnet_hdr_len` and `status`, bumps the generation, interrupts the driver.
    fn set_config(&mut self, vnet_hdr_len: u16, status: u16) {
        use std::mem::offset_of;
        let at = |f: usize| (self.block.offset + f) as u64;
        let cfg = offset_of!(IvshmemHeader, config);
        let pc = |f: usize| at(cfg + f);
        use ptnet_spec::device::PtnetConfig;
        self.region
            .write(pc(offset_of!(PtnetConfig, vnet_hdr_len)), vnet_hdr_len);
        self.generation = self.generation.wrapping_add(1);
        self.region
            .write(at(offset_of!(IvshmemHeader, generation)), self.generation);
        fence(Ordering::Release);
        self.region
            .write(pc(offset_of!(PtnetConfig, status)), status);
        self.config_changed();
    }

    fn config_changed(&self) {
        fence(Ordering::SeqCst);
        self.config_irq.signal();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.stop("QEMU disconnected");
    }
}
