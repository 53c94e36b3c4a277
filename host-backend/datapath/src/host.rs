//! Attaching a host client to a port: the daemon side of the control protocol's `attach`.
//!
//! The daemon creates the client's CSB (a memfd) and one kick and one interrupt eventfd per
//! ring (the client holds them too: the daemon only touches them through [`crate::peer`]), binds them to the port's rings, starts the client's sync loop, and hands the client
//! duplicates of the region memfd, the CSB memfd and the eventfds. Detaching stops the loop and
//! unbinds the rings; the port itself stays.

use std::fs::File;
use std::io;
use std::sync::Arc;

use ptnet_proto::AttachInfo;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::csb::CsbMem;
use crate::kloop::{self, KloopHandle, Mode};
use crate::kring::ClientBinding;
use crate::peer::PeerEventFd;
use crate::port::SyncPort;

/// A host client attached to a port.
#[derive(Debug)]
pub struct HostClient {
    port: Arc<dyn SyncPort>,
    kloop: Option<KloopHandle>,
    info: AttachInfo,
}

fn dup_eventfd(e: &EventFd) -> io::Result<File> {
    Ok(crate::sys::eventfd_file(e.try_clone()?))
}

impl HostClient {
    /// Attaches a client to `port`. Returns the client and the descriptors to send it, in the
    /// control protocol's order: region, CSB, kicks, interrupts.
    pub fn attach(port: Arc<dyn SyncPort>, mode: Mode) -> io::Result<(Self, Vec<File>)> {
        let ifc = port.interface();
        let ntx = ifc.tx.len() as u32;
        let nrx = ifc.rx.len() as u32;
        let n = ntx + nrx;
        let csb_mem = CsbMem::new(n)?;
        let csb = csb_mem.csb();
        let kicks = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let irqs = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(|e| Arc::new(PeerEventFd::new(e))))
            .collect::<io::Result<Vec<_>>>()?;
        let mut files = Vec::with_capacity(2 + 2 * n as usize);
        files.push(ifc.region().file().try_clone()?);
        files.push(csb_mem.file().try_clone()?);
        for k in &kicks {
            files.push(dup_eventfd(k)?);
        }
        for i in &irqs {
            files.push(dup_eventfd(i.eventfd())?);
        }
        let binding = ClientBinding::new(csb.clone(), irqs)
            .ok_or_else(|| io::Error::other("binding does not match the CSB"))?;
        if !port.bind(Some(&binding)) {
            port.bind(None);
            return Err(io::Error::other("cannot bind the client to every ring"));
        }
        let info = AttachInfo {
            port: port.name().to_owned(),
            region_size: ifc.region().size() as u64,
            nifp_offset: ifc.nifp_offset(),
            mem_id: ifc.region().id(),
            num_tx_rings: ntx,
            num_rx_rings: nrx,
            num_tx_slots: ifc.tx.first().map_or(0, |r| r.num_slots()),
            num_rx_slots: ifc.rx.first().map_or(0, |r| r.num_slots()),
            buf_size: ifc.region().buf_size(),
            csb_size: csb_mem.size() as u64,
            csb_ktoa_offset: csb_mem.ktoa_offset() as u64,
            busy_poll: mode == Mode::BusyPoll,
        };
        let kloop = match kloop::spawn(Arc::clone(&port), csb, kicks, mode) {
            Ok(k) => k,
            Err(e) => {
                port.bind(None);
                return Err(e);
            }
        };
        log::info!("{}: client attached", port.name());
        Ok((
            HostClient {
                port,
                kloop: Some(kloop),
                info,
            },
            files,
        ))
    }

    /// What the client is told.
    pub fn info(&self) -> &AttachInfo {
        &self.info
    }

    /// The port.
    pub fn port(&self) -> &Arc<dyn SyncPort> {
        &self.port
    }

    /// Stops the sync loop and unbinds the rings.
    pub fn detach(mut self) {
        self.detach_now();
    }

    fn detach_now(&mut self) {
        if let Some(k) = self.kloop.take() {
            k.stop();
            self.port.bind(None);
            log::info!("{}: client detached", self.port.name());
        }
    }
}

impl Drop for HostClient {
    fn drop(&mut self) {
        self.detach_now();
    }
}
