//! Opening a real host interface: its MTU checked against the port's buffers, the backend
//! asked for opened, or AF_PACKET with a note saying why not.

use super::afpacket::AfPacketBackend;
use super::backend::{
    BackendChoice, BackendKind, Link, NicBackend, NicError, NicOpener, error_chain,
};
use super::ifnet::{check_mtu, ifindex, link_state, netmap_present};
use super::xdp::XdpBackend;

/// A real host interface: checks its MTU against the port's buffers and opens the backend
/// asked for.
#[derive(Debug, Clone)]
pub struct HostInterface {
    /// Interface name.
    pub ifname: String,
    /// Backend.
    pub choice: BackendChoice,
    /// Largest frame the port carries (its buffer size).
    pub max_frame: u32,
}

impl HostInterface {
    /// Checks that the interface exists and that its frames fit.
    pub fn check(&self) -> Result<(), NicError> {
        if ifindex(&self.ifname) == 0 {
            return Err(NicError::NoInterface(self.ifname.clone()));
        }
        check_mtu(&self.ifname, self.max_frame)?;
        Ok(())
    }

    fn open_kind(&self, kind: BackendKind) -> Result<Box<dyn NicBackend>, NicError> {
        match kind {
            BackendKind::AfPacket => Ok(Box::new(AfPacketBackend::open(
                &self.ifname,
                self.max_frame,
            )?)),
            BackendKind::AfXdp => XdpBackend::open(&self.ifname, self.max_frame),
            BackendKind::Tap => Err(NicError::Config(format!(
                "{}: the tap backend serves only the host stack's port (--host-stack)",
                self.ifname
            ))),
            BackendKind::Netmap => Err(NicError::Unavailable {
                kind,
                ifname: self.ifname.clone(),
                reason: if netmap_present() {
                    "/dev/netmap exists, but this build of ptnetd does not drive native netmap \
                     ports yet"
                        .into()
                } else {
                    "/dev/netmap is absent (the netmap kernel module is not loaded)".into()
                },
            }),
        }
    }
}

impl NicOpener for HostInterface {
    fn ifname(&self) -> &str {
        &self.ifname
    }

    fn link(&self) -> (Link, u32) {
        link_state(&self.ifname)
    }

    /// `Auto` takes native netmap when `/dev/netmap` exists and AF_PACKET otherwise: AF_XDP
    /// diverts every frame of the interface away from the host's own stack (see
    /// docs/user-guide.md), so it is used only when asked for by name. A named backend that
    /// cannot run falls back to AF_PACKET, and the note says why.
    fn open(&mut self) -> Result<(Box<dyn NicBackend>, Option<String>), NicError> {
        self.check()?;
        let first = match self.choice {
            BackendChoice::Only(k) => k,
            BackendChoice::Auto if netmap_present() => BackendKind::Netmap,
            BackendChoice::Auto => BackendKind::AfPacket,
        };
        match self.open_kind(first) {
            Ok(b) => Ok((b, None)),
            Err(e) if first != BackendKind::AfPacket => {
                let note = format!("{}; using af_packet", error_chain(&e));
                log::warn!("{}: {note}", self.ifname);
                Ok((self.open_kind(BackendKind::AfPacket)?, Some(note)))
            }
            Err(e) => Err(e),
        }
    }
}
