//! The daemon's errors: what a client is told when a request fails.

use ptnet_spec::name::PortName;

pub use ptnet_proto::error_chain;

/// Errors reported to clients (their text is the reply's message).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad port name.
    #[error("bad port name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Something does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// Something exists already.
    #[error("{0} already exists")]
    Exists(String),
    /// The port has a client already.
    #[error("port {0} is busy (a client is attached)")]
    Busy(String),
    /// Not supported (yet).
    #[error("{0}")]
    Unsupported(String),
    /// A limit was hit or a value is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The datapath refused.
    #[error("{0}")]
    Datapath(String),
}

pub(crate) type Result<T> = std::result::Result<T, DaemonError>;

/// Parses a port name, or says why it is not one.
pub(crate) fn parse(name: &str) -> Result<PortName<'_>> {
    PortName::parse(name).map_err(|e| DaemonError::Name {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses a unicast MAC address, `02:00:00:00:00:01`.
pub(crate) fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    let ok = parts.len() == 6
        && parts
            .iter()
            .zip(mac.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if !ok || mac[0] & 1 != 0 {
        return Err(DaemonError::Invalid(format!(
            "MAC {s:?}: six hex bytes like 02:00:00:00:00:01, unicast"
        )));
    }
    Ok(mac)
}
