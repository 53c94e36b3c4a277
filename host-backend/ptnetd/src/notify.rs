//! systemd's readiness protocol (`sd_notify(3)`), for `Type=notify` units: `READY=1` once the
//! control socket listens, `RELOADING=1` … `READY=1` around a `SIGHUP` reload, `STOPPING=1`
//! at shutdown. One datagram to `$NOTIFY_SOCKET` each; without that variable (not started by
//! systemd) nothing is sent. Never blocks: the socket is non-blocking, and a notification
//! that cannot be sent is logged and dropped.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where systemd listens: a path, or an abstract name written `@name`.
fn address() -> Option<std::io::Result<SocketAddr>> {
    let raw = std::env::var_os("NOTIFY_SOCKET")?;
    let bytes = raw.as_os_str().as_bytes();
    Some(match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&raw),
    })
}

/// Sends `state` (`KEY=VALUE` lines) to systemd if it asked for notifications.
pub fn notify(state: &str) {
    let Some(addr) = address() else { return };
    let sent = addr.and_then(|addr| {
        let s = UnixDatagram::unbound()?;
        s.set_nonblocking(true)?;
        s.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        log::warn!("sd_notify {:?}: {e}", state.lines().next().unwrap_or(""));
    }
}

/// The daemon serves: `READY=1` with its PID and a status line.
pub fn ready(status: &str) {
    notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS={status}",
        std::process::id()
    ));
}
