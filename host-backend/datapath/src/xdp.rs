//! AF_XDP (placeholder while it is written).

use crate::nic::{BackendKind, NicBackend, NicError};

/// The AF_XDP backend.
pub struct XdpBackend;

impl XdpBackend {
    /// Opens an AF_XDP socket on `ifname`.
    pub fn open(ifname: &str, _max_frame: u32) -> Result<Box<dyn NicBackend>, NicError> {
        Err(NicError::Unavailable {
            kind: BackendKind::AfXdp,
            ifname: ifname.to_owned(),
            reason: "not built into this version".into(),
        })
    }
}
