//! Who is at the other end of a control connection, as the kernel says (`SO_PEERCRED`,
//! `SO_PEERGROUPS`: the credentials the peer had when it connected, which it cannot forge),
//! and what the user and group names of the configuration mean (`getpwnam_r`, `getgrnam_r`,
//! so that names from NSS resolve as `id` resolves them). All of this module's `unsafe` is
//! these calls.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// Most supplementary groups read for one peer (Linux's `NGROUPS_MAX`).
const MAX_GROUPS: usize = 65_536;

/// A connected peer's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id when it connected.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl PeerCred {
    /// Whether the peer is in group `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// The credentials of the process at the other end of `s`.
pub fn peer_cred(s: &UnixStream) -> io::Result<PeerCred> {
    let fd = s.as_raw_fd();
    let mut uc = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `uc`, a ucred we own.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut uc).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the vector's buffer, which holds
        // that many.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let need = len as usize / 4;
        if r == 0 {
            groups.truncate(need);
            break;
        }
        let e = io::Error::last_os_error();
        // ERANGE: `len` now says how much is needed.
        if e.raw_os_error() == Some(libc::ERANGE) && need > groups.len() && need <= MAX_GROUPS {
            groups.resize(need, 0);
            continue;
        }
        return Err(e);
    }
    Ok(PeerCred {
        pid: uc.pid,
        uid: uc.uid,
        gid: uc.gid,
        groups,
    })
}

/// The user the daemon runs as (effective uid).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The user id of a user name (or of a decimal id).
pub fn uid_of(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = CString::new(name).ok()?;
    lookup(|buf| {
        // SAFETY: a zeroed passwd is a valid out-parameter.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        // SAFETY: getpwnam_r fills `pw` with strings inside `buf` (of the length given) and
        // sets `out` to `&pw` or null; nothing is kept past this call.
        let r =
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        (r, (!out.is_null()).then_some(pw.pw_uid))
    })
}

/// The group id of a group name (or of a decimal id).
pub fn gid_of(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = CString::new(name).ok()?;
    lookup(|buf| {
        // SAFETY: a zeroed group is a valid out-parameter.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        // SAFETY: getgrnam_r fills `gr` with strings inside `buf` (of the length given) and
        // sets `out` to `&gr` or null; nothing is kept past this call.
        let r =
            unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
        (r, (!out.is_null()).then_some(gr.gr_gid))
    })
}

/// Runs a `get*nam_r` call with a buffer that grows on `ERANGE` (up to 1 MiB).
fn lookup(mut f: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, Option<u32>)) -> Option<u32> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        match f(&mut buf) {
            (libc::ERANGE, _) if size < 1 << 20 => size *= 4,
            (0, id) => return id,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connected_peer_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.pid, std::process::id() as i32);
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((c.uid, c.gid), (uid, gid));
    }

    #[test]
    fn names_and_numbers_resolve() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(gid_of("root"), Some(0));
        assert_eq!(uid_of("4242"), Some(4242));
        assert_eq!(gid_of("no-such-group-ptnet"), None);
    }
}
