//! The guest's side of the ivshmem transport, in a host process (SPEC.md §6): what QEMU's
//! `ivshmem-doorbell` receives from `ptnetd`'s ivshmem server ([`IvshmemGuest::connect`]),
//! and what the guest driver then does with it ([`IvshmemGuest::start`],
//! [`IvshmemGuest::reset`]). A kick written here is what QEMU's doorbell ioeventfd writes; an
//! interrupt read here is what QEMU turns into the guest's MSI-X vector. Tests and tools drive
//! a port with it exactly as a guest on stock QEMU does, without a VM.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptnet_datapath::mem::Region;
use ptnet_datapath::sys;
use ptnet_proto::AttachInfo;
use ptnet_spec::device::PTNET_S_MEM_READY;
use ptnet_spec::ivshmem::{
    self, IVSHMEM_DRIVER_FEATURES_OFFSET, IVSHMEM_DRIVER_STATUS_OFFSET, IVSHMEM_STATUS_OFFSET,
    IvshmemDir, IvshmemHeader, PTNET_IVS_DRIVER_OK, PTNET_IVSHMEM_HDR_SIGNATURE,
};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::port::{ClientError, Port};

/// Most vectors a peer may announce (QEMU's doorbell register carries 8 bits of vector).
const MAX_VECTORS: usize = 256;

/// Reads one message of QEMU's ivshmem protocol: a little-endian i64 and at most one
/// descriptor.
fn recv(sock: &UnixStream) -> Result<(i64, Option<File>), ClientError> {
    let mut buf = [0u8; 8];
    let mut raw = [-1 as RawFd; 1];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the iovec describes `buf`, which we own and which may receive any bytes.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut raw) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    // SAFETY: recvmsg just installed this descriptor for us; nothing else owns it.
    let fd = (nfds > 0).then(|| unsafe { File::from_raw_fd(raw[0]) });
    if n == 0 {
        return Err(ClientError::Bad("the ivshmem server closed the connection"));
    }
    if n < buf.len() {
        (&*sock).read_exact(&mut buf[n..])?;
    }
    Ok((i64::from_le_bytes(buf), fd))
}

/// A guest's ptnet device on ivshmem, as QEMU and the driver see it.
#[derive(Debug)]
pub struct IvshmemGuest {
    sock: UnixStream,
    shm: Arc<Region>,
    shm_file: File,
    peer_id: u16,
    /// Vectors of the other peers (the daemon's: kicks, then control), by peer id.
    peers: Vec<(u16, Vec<EventFd>)>,
    /// The guest's own vectors (interrupts, then configuration change).
    own: Vec<EventFd>,
    /// Offset of the guest's device block.
    block: u64,
}

impl IvshmemGuest {
    /// Connects to the ivshmem server at `socket` as QEMU's `ivshmem-doorbell` does, and
    /// finds the guest's device block in the shared memory as the driver does. Waits at most
    /// `timeout` for the set-up.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let sock = UnixStream::connect(socket)?;
        sock.set_read_timeout(Some(timeout))?;
        let (version, fd) = recv(&sock)?;
        if version != 0 || fd.is_some() {
            return Err(ClientError::Bad("ivshmem protocol version"));
        }
        let (id, fd) = recv(&sock)?;
        let peer_id = u16::try_from(id)
            .ok()
            .filter(|_| fd.is_none())
            .ok_or(ClientError::Bad("ivshmem peer id"))?;
        let (shm_msg, shm_file) = recv(&sock)?;
        let shm_file = shm_file
            .filter(|_| shm_msg == -1)
            .ok_or(ClientError::Bad("no shared memory message"))?;
        let size = shm_file.metadata()?.len();
        if !size.is_power_of_two() || size < 2 * sys::PAGE_SIZE as u64 {
            return Err(ClientError::Bad("shared memory size is not a PCI BAR's"));
        }
        let shm = Region::attach(shm_file.try_clone()?, size as usize, 0)
            .map_err(|e| ClientError::Io(io::Error::other(e)))?;
        let shm = Arc::new(shm);
        let dir: IvshmemDir = shm
            .read(ivshmem::dir_offset(size))
            .ok_or(ClientError::Bad("no directory"))?;
        let block = dir
            .block_offset(size, peer_id)
            .map_err(|_| ClientError::Bad("no device block for the peer id"))?;
        let mut g = IvshmemGuest {
            sock,
            shm,
            shm_file,
            peer_id,
            peers: Vec::new(),
            own: Vec::new(),
            block,
        };
        let h = g.header()?;
        let want = usize::from(h.num_vectors);
        // The vectors follow, one message each, the daemon's first.
        let deadline = Instant::now() + timeout;
        while g.own.len() < want || g.vectors(h.daemon_peer).len() < want {
            if Instant::now() > deadline {
                return Err(ClientError::Bad("the ivshmem server sent too few vectors"));
            }
            let (id, fd) = recv(&g.sock)?;
            let (Ok(id), Some(fd)) = (u16::try_from(id), fd) else {
                return Err(ClientError::Bad("unexpected ivshmem message"));
            };
            let list = if id == peer_id {
                &mut g.own
            } else if let Some((_, v)) = g.peers.iter_mut().find(|(p, _)| *p == id) {
                v
            } else {
                g.peers.push((id, Vec::new()));
                &mut g.peers.last_mut().expect("just pushed").1
            };
            if list.len() >= MAX_VECTORS {
                return Err(ClientError::Bad("too many vectors"));
            }
            list.push(sys::file_eventfd(fd));
        }
        Ok(g)
    }

    fn vectors(&self, peer: u16) -> &[EventFd] {
        self.peers
            .iter()
            .find(|(p, _)| *p == peer)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The guest's ivshmem peer id (its `IVPosition`).
    pub fn peer_id(&self) -> u16 {
        self.peer_id
    }

    /// The shared memory (BAR 2).
    pub fn shm(&self) -> &Arc<Region> {
        &self.shm
    }

    /// Offset of the guest's device block in BAR 2.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// The device block's header as it is now, if its signature is there.
    pub fn header(&self) -> Result<IvshmemHeader, ClientError> {
        let h: IvshmemHeader = self
            .shm
            .read(self.block)
            .ok_or(ClientError::Bad("device block outside BAR 2"))?;
        if h.signature != PTNET_IVSHMEM_HDR_SIGNATURE || h.peer_id != self.peer_id {
            return Err(ClientError::Bad("device block signature or peer id"));
        }
        Ok(h)
    }

    /// Rings `vector` of the daemon, as the guest's doorbell write does.
    pub fn doorbell(&self, vector: u16) -> Result<(), ClientError> {
        let h = self.header()?;
        let v = self
            .vectors(h.daemon_peer)
            .get(usize::from(vector))
            .ok_or(ClientError::Bad("no such vector"))?;
        v.write(1)?;
        Ok(())
    }

    /// Waits until the device's status is `want` (after a configuration-change interrupt, or
    /// by polling, as SPEC §6.3 allows).
    fn wait_status(
        &self,
        want: impl Fn(u16) -> bool,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let s: u16 = self
                .shm
                .read(self.block + IVSHMEM_STATUS_OFFSET as u64)
                .unwrap_or(0);
            if want(s) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClientError::Bad("the device did not answer in time"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The configuration-change interrupts received so far, cleared (the guest's last
    /// vector).
    pub fn config_interrupts(&self) -> u64 {
        self.own
            .last()
            .and_then(|e| sys::eventfd_read_nowait(e).ok().flatten())
            .unwrap_or(0)
    }

    /// The driver's start: accepts `features` (PTNET_F_* bits), asks for DRIVER_OK, rings the
    /// control vector, waits for `PTNET_S_MEM_READY`, then takes the rings from the CSB the
    /// block holds.
    pub fn start(&self, features: u32, timeout: Duration) -> Result<Port, ClientError> {
        let h = self.header()?;
        let c = h.config;
        c.validate_geometry()
            .map_err(|_| ClientError::Bad("device geometry"))?;
        let n = c.num_rings() as usize;
        if usize::from(h.ctrl_vector) != n || usize::from(h.num_vectors) != n + 1 {
            return Err(ClientError::Bad("vector layout"));
        }
        let field = |f: usize| self.block + f as u64;
        self.shm
            .write(field(IVSHMEM_DRIVER_FEATURES_OFFSET), features);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.shm
            .write(field(IVSHMEM_DRIVER_STATUS_OFFSET), PTNET_IVS_DRIVER_OK);
        self.doorbell(h.ctrl_vector)?;
        self.wait_status(|s| s & PTNET_S_MEM_READY != 0, timeout)?;
        let info = AttachInfo {
            port: String::new(),
            region_size: self.shm.size() as u64,
            nifp_offset: c.nifp_offset,
            mem_id: c.mem_id,
            num_tx_rings: c.num_tx_rings,
            num_rx_rings: c.num_rx_rings,
            num_tx_slots: c.num_tx_slots,
            num_rx_slots: c.num_rx_slots,
            buf_size: c.buf_size,
            csb_size: 0,
            csb_ktoa_offset: 0,
            busy_poll: false,
        };
        let dup = |v: &[EventFd]| -> Result<Vec<EventFd>, ClientError> {
            Ok(v.iter()
                .take(n)
                .map(EventFd::try_clone)
                .collect::<io::Result<_>>()?)
        };
        let kicks = dup(self.vectors(h.daemon_peer))?;
        let irqs = dup(&self.own)?;
        let (atok, ktoa) = (c.csb_atok_gpa, c.csb_ktoa_gpa);
        Port::build(
            info,
            self.shm_file.try_clone()?,
            |region| {
                let ofs = |o: u64| usize::try_from(o).map_err(|_| ClientError::Bad("CSB offset"));
                region
                    .csb_at(ofs(atok)?, ofs(ktoa)?, n as u32)
                    .ok_or(ClientError::Bad("CSB outside BAR 2"))
            },
            kicks,
            irqs,
        )
    }

    /// The driver's reset: clears DRIVER_OK, rings the control vector, waits for status 0.
    pub fn reset(&self, timeout: Duration) -> Result<(), ClientError> {
        let h = self.header()?;
        self.shm
            .write(self.block + IVSHMEM_DRIVER_STATUS_OFFSET as u64, 0u32);
        self.doorbell(h.ctrl_vector)?;
        self.wait_status(|s| s == 0, timeout)
    }
}
