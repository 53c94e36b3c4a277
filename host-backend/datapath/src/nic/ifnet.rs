//! The few facts about a host interface the NIC ports need, by name: index, MTU, link state
//! (ioctls on a datagram socket), and whether native netmap is there.

use std::ffi::CString;
use std::io;

use super::backend::{L2_OVERHEAD, Link, NicError};

/// One ioctl on an interface by name (SIOCGIFFLAGS, SIOCGIFMTU).
fn if_ioctl(ifname: &str, req: libc::c_ulong) -> io::Result<libc::ifreq> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name",
        ));
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours; the ioctl reads the name and writes one field of `ifr`, which we
    // own and which is as large as the kernel expects.
    let r = unsafe { libc::ioctl(fd, req, &mut ifr) };
    let e = io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above, used by nothing else.
    unsafe { libc::close(fd) };
    if r < 0 { Err(e) } else { Ok(ifr) }
}

/// The index of `ifname`, 0 if it does not exist.
pub fn ifindex(ifname: &str) -> u32 {
    let Ok(c) = CString::new(ifname) else {
        return 0;
    };
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// The MTU of `ifname`.
pub fn mtu(ifname: &str) -> io::Result<u32> {
    let ifr = if_ioctl(ifname, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu }.max(0) as u32)
}

/// The state of `ifname` and its index.
pub fn link_state(ifname: &str) -> (Link, u32) {
    let idx = ifindex(ifname);
    if idx == 0 {
        return (Link::Gone, 0);
    }
    match if_ioctl(ifname, libc::SIOCGIFFLAGS) {
        Ok(ifr) => {
            // SAFETY: SIOCGIFFLAGS filled the ifru_flags member of the union.
            let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
            let up = flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0;
            (if up { Link::Up } else { Link::Down }, idx)
        }
        Err(_) => (Link::Gone, 0),
    }
}

/// Whether the netmap kernel module is there.
pub fn netmap_present() -> bool {
    std::path::Path::new("/dev/netmap").exists()
}

/// Reads `ifname`'s MTU and checks that its frames fit in `max_frame` bytes; returns the MTU.
pub fn check_mtu(ifname: &str, max_frame: u32) -> Result<u32, NicError> {
    let mtu = mtu(ifname).map_err(NicError::io("reading the MTU", ifname))?;
    let need = mtu.saturating_add(L2_OVERHEAD);
    if need > max_frame {
        return Err(NicError::Mtu {
            ifname: ifname.to_owned(),
            mtu,
            need,
            max: max_frame,
            fit: max_frame.saturating_sub(L2_OVERHEAD),
        });
    }
    Ok(mtu)
}
