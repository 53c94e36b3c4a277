//! A vhost-user message relay between the frontend and the `vhost` crate's request handler:
//! every connection goes through it, for what the handler cannot do itself.
//!
//! **The backend request channel must not block the daemon.** The frontend hands the backend
//! a socket for backend requests (`SET_BACKEND_REQ_FD`); the `vhost` crate's `Backend` sends
//! `SHMEM_MAP` on it and waits for the reply, with no timeout and no way to set one (it
//! retries a receive timeout forever). A QEMU that never answers would hold the mapper thread
//! (and the guest memory it maps) forever. The relay keeps a copy of that socket in a
//! [`BackendChannel`], with which a [`Watchdog`] shuts the socket down when a request has
//! waited [`BACKEND_REQ_TIMEOUT`]: the request fails, the frontend has lost its backend
//! channel (its own device goes without), and the thread goes on.
//!
//! QEMU's `virtio-net` sends `SET_VRING_ENABLE` before `SET_FEATURES`: when the guest writes
//! its features (`virtio_net_set_features` → `peer_attach`) and again when it starts the
//! device (`vhost_net_start` restores each queue's enable state before `vhost_dev_start`
//! sends the features). The vhost-user spec lets `SET_VRING_ENABLE` be sent only once
//! `VHOST_USER_F_PROTOCOL_FEATURES` is negotiated, and `vhost` 0.18's handler enforces it by
//! ending the connection, so a guest's virtio-net driver could never start the device.
//!
//! The relay passes every message through unchanged (payload and descriptors), except a
//! `SET_VRING_ENABLE` that arrives before `SET_FEATURES` on the connection (or after a
//! reset): it acknowledges it itself when the frontend asked for a reply, and replays the
//! latest such state of each queue to the handler right after `SET_FEATURES` — the order
//! the protocol wants, with the meaning QEMU intended. Replies go back unchanged. A message
//! larger than [`MAX_PAYLOAD`] ends the connection (the handler would refuse it too).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use vhost::vhost_user::message::{FrontendReq, VhostUserHeaderFlag};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::socket::thread_name;

// The requests the relay looks at, with the `vhost` crate's numbering.
const SET_FEATURES: u32 = FrontendReq::SET_FEATURES as u32;
const RESET_OWNER: u32 = FrontendReq::RESET_OWNER as u32;
const SET_VRING_ENABLE: u32 = FrontendReq::SET_VRING_ENABLE as u32;
const RESET_DEVICE: u32 = FrontendReq::RESET_DEVICE as u32;
const SET_BACKEND_REQ_FD: u32 = FrontendReq::SET_BACKEND_REQ_FD as u32;
/// How long a backend request (`SHMEM_MAP`, `SHMEM_UNMAP`) may wait for the frontend: QEMU
/// answers in milliseconds, even under load.
pub const BACKEND_REQ_TIMEOUT: Duration = Duration::from_secs(5);

/// The backend request channel of one connection, as the relay saw it go by: what a
/// [`Watchdog`] shuts down.
#[derive(Debug, Clone, Default)]
pub struct BackendChannel(Arc<Mutex<Option<OwnedFd>>>);

impl BackendChannel {
    fn set(&self, fd: OwnedFd) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(fd);
    }

    /// Shuts the channel down both ways: a request waiting on it fails at once.
    pub fn abort(&self) {
        if let Some(fd) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            ptnet_datapath::sys::shutdown(fd);
        }
    }
}

/// Aborts a [`BackendChannel`] unless disarmed within a time limit: put one around every
/// backend request.
#[derive(Debug)]
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    /// Starts the count; `ch` is aborted after `limit` unless [`Watchdog::disarm`] comes first.
    pub fn arm(ch: &BackendChannel, limit: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let (ch, f) = (ch.clone(), Arc::clone(&fired));
        let spawned = thread::Builder::new()
            .name("vhu-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    f.store(true, Ordering::Release);
                    ch.abort();
                }
            });
        if let Err(e) = spawned {
            log::warn!("no watchdog for a backend request: {e}");
        }
        Watchdog {
            done: Some(tx),
            fired,
        }
    }

    /// The request ended: stops the count. Returns whether it had fired (the request failed
    /// because the frontend did not answer in time).
    pub fn disarm(mut self) -> bool {
        drop(self.done.take());
        self.fired.load(Ordering::Acquire)
    }
}
/// Header flags: protocol version 1 (the value in the `VERSION` bits), reply, reply wanted.
const VERSION: u32 = 0x1;
const REPLY: u32 = VhostUserHeaderFlag::REPLY.bits();
const NEED_REPLY: u32 = VhostUserHeaderFlag::NEED_REPLY.bits();
/// Largest payload relayed (the handler's own limit is 4 KiB for most messages; a config
/// or memory table fits easily).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Most descriptors one message carries (`SET_MEM_TABLE`: 8).
const MAX_FDS: usize = 32;

/// One message: header, payload, descriptors.
struct Msg {
    hdr: [u8; 12],
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Msg {
    fn code(&self) -> u32 {
        u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]])
    }

    fn flags(&self) -> u32 {
        u32::from_le_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    fn new(code: u32, flags: u32, payload: Vec<u8>) -> Self {
        let mut hdr = [0u8; 12];
        hdr[0..4].copy_from_slice(&code.to_le_bytes());
        hdr[4..8].copy_from_slice(&flags.to_le_bytes());
        hdr[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        Msg {
            hdr,
            payload,
            fds: Vec::new(),
        }
    }
}

/// Reads one message; `None` at a clean end of stream.
fn recv(s: &UnixStream) -> io::Result<Option<Msg>> {
    let mut hdr = [0u8; 12];
    let mut raw = [-1 as RawFd; MAX_FDS];
    let mut fds = Vec::new();
    let mut got = 0usize;
    while got < hdr.len() {
        let mut iov = [libc::iovec {
            iov_base: hdr[got..].as_mut_ptr().cast(),
            iov_len: hdr.len() - got,
        }];
        // SAFETY: the iovec points into `hdr`, which may receive arbitrary bytes; the
        // descriptors received are taken into OwnedFds right below.
        let (n, nfds) = unsafe { s.recv_with_fds(&mut iov, &mut raw) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        for &fd in raw.iter().take(nfds) {
            // SAFETY: recvmsg just installed this descriptor for us; nothing else owns it.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message of {size} bytes"),
        ));
    }
    let mut payload = vec![0u8; size];
    (&*s).read_exact(&mut payload)?;
    Ok(Some(Msg { hdr, payload, fds }))
}

/// Writes one message, its descriptors with its first bytes.
fn send(s: &UnixStream, m: &Msg) -> io::Result<()> {
    let fds: Vec<RawFd> = m.fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut buf = Vec::with_capacity(12 + m.payload.len());
    buf.extend_from_slice(&m.hdr);
    buf.extend_from_slice(&m.payload);
    let n = s
        .send_with_fds(&[&buf[..]], &fds)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    (&*s).write_all(&buf[n..])
}

/// A running relay; its threads end when either side closes.
pub struct Relay {
    threads: Vec<JoinHandle<()>>,
    front: UnixStream,
    back: UnixStream,
}

impl Relay {
    /// Relays between the frontend's connection `front` and the handler's `back`, keeping the
    /// backend request channel in `channel`.
    pub fn start(
        front: UnixStream,
        back: UnixStream,
        name: &str,
        channel: BackendChannel,
    ) -> io::Result<Self> {
        let writer = Arc::new(Mutex::new(front.try_clone()?));
        let (f1, b1) = (front.try_clone()?, back.try_clone()?);
        let w1 = Arc::clone(&writer);
        let n1 = name.to_owned();
        let to_back = thread::Builder::new()
            .name(thread_name("vnrq", name))
            .spawn(move || {
                if let Err(e) = frontend_to_handler(&f1, &b1, &w1, &channel) {
                    log::debug!("{n1}: vhost-user relay: {e}");
                }
                let _ = b1.shutdown(Shutdown::Both);
                let _ = f1.shutdown(Shutdown::Both);
            })?;
        let (f2, b2) = (front.try_clone()?, back.try_clone()?);
        let n2 = name.to_owned();
        let to_front = thread::Builder::new()
            .name(thread_name("vnrp", name))
            .spawn(move || {
                if let Err(e) = handler_to_frontend(&b2, &writer) {
                    log::debug!("{n2}: vhost-user relay: {e}");
                }
                let _ = f2.shutdown(Shutdown::Both);
                let _ = b2.shutdown(Shutdown::Both);
            })?;
        Ok(Relay {
            threads: vec![to_back, to_front],
            front,
            back,
        })
    }

    /// Closes both sides and waits for the threads.
    pub fn stop(mut self) {
        let _ = self.front.shutdown(Shutdown::Both);
        let _ = self.back.shutdown(Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn frontend_to_handler(
    front: &UnixStream,
    back: &UnixStream,
    writer: &Mutex<UnixStream>,
    channel: &BackendChannel,
) -> io::Result<()> {
    let mut features_set = false;
    // Queue index → the last enable state sent too early.
    let mut early: BTreeMap<u32, u32> = BTreeMap::new();
    while let Some(m) = recv(front)? {
        match m.code() {
            SET_VRING_ENABLE if !features_set && m.payload.len() >= 8 => {
                let index =
                    u32::from_le_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
                let num =
                    u32::from_le_bytes([m.payload[4], m.payload[5], m.payload[6], m.payload[7]]);
                early.insert(index, num);
                if m.flags() & NEED_REPLY != 0 {
                    let ack = Msg::new(
                        SET_VRING_ENABLE,
                        VERSION | REPLY,
                        0u64.to_le_bytes().to_vec(),
                    );
                    send(&writer.lock().unwrap_or_else(|e| e.into_inner()), &ack)?;
                }
                continue;
            }
            SET_FEATURES => {
                send(back, &m)?;
                features_set = true;
                for (index, num) in std::mem::take(&mut early) {
                    let mut p = index.to_le_bytes().to_vec();
                    p.extend_from_slice(&num.to_le_bytes());
                    send(back, &Msg::new(SET_VRING_ENABLE, VERSION, p))?;
                }
                continue;
            }
            RESET_OWNER | RESET_DEVICE => features_set = false,
            SET_BACKEND_REQ_FD => {
                if let Some(fd) = m.fds.first().and_then(|f| f.try_clone().ok()) {
                    channel.set(fd);
                }
            }
            _ => {}
        }
        send(back, &m)?;
    }
    Ok(())
}

fn handler_to_frontend(back: &UnixStream, writer: &Mutex<UnixStream>) -> io::Result<()> {
    while let Some(m) = recv(back)? {
        send(&writer.lock().unwrap_or_else(|e| e.into_inner()), &m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(code: u32, flags: u32, payload: &[u8]) -> Msg {
        Msg::new(code, flags, payload.to_vec())
    }

    fn enable(index: u32, num: u32, flags: u32) -> Msg {
        let mut p = index.to_le_bytes().to_vec();
        p.extend_from_slice(&num.to_le_bytes());
        Msg::new(SET_VRING_ENABLE, flags, p)
    }

    #[test]
    fn an_early_vring_enable_is_acknowledged_and_replayed_after_set_features() {
        let (qemu, front) = UnixStream::pair().unwrap();
        let (back, handler) = UnixStream::pair().unwrap();
        let relay = Relay::start(front, back, "t", BackendChannel::default()).unwrap();
        send(&qemu, &msg(1, VERSION, &[])).unwrap(); // GET_FEATURES
        send(&qemu, &enable(0, 1, VERSION | NEED_REPLY)).unwrap();
        send(&qemu, &enable(1, 1, VERSION)).unwrap();
        // The frontend gets its acknowledgement from the relay.
        let ack = recv(&qemu).unwrap().unwrap();
        assert_eq!(
            (ack.code(), ack.flags()),
            (SET_VRING_ENABLE, VERSION | REPLY)
        );
        assert_eq!(ack.payload, 0u64.to_le_bytes());
        send(
            &qemu,
            &msg(SET_FEATURES, VERSION, &(1u64 << 30).to_le_bytes()),
        )
        .unwrap();
        send(&qemu, &enable(1, 0, VERSION)).unwrap();
        // The handler sees GET_FEATURES, SET_FEATURES, the replayed enables, then the rest.
        let seen: Vec<(u32, Vec<u8>)> = (0..5)
            .map(|_| {
                let m = recv(&handler).unwrap().unwrap();
                (m.code(), m.payload)
            })
            .collect();
        let e = |i: u32, n: u32| {
            let mut p = i.to_le_bytes().to_vec();
            p.extend_from_slice(&n.to_le_bytes());
            (SET_VRING_ENABLE, p)
        };
        assert_eq!(seen[0].0, 1);
        assert_eq!(seen[1].0, SET_FEATURES);
        assert_eq!(&seen[2..], &[e(0, 1), e(1, 1), e(1, 0)]);
        // Replies travel back untouched.
        send(&handler, &msg(1, VERSION | REPLY, &7u64.to_le_bytes())).unwrap();
        assert_eq!(recv(&qemu).unwrap().unwrap().payload, 7u64.to_le_bytes());
        relay.stop();
    }

    #[test]
    fn descriptors_travel_with_their_message_and_oversized_messages_end_the_relay() {
        let (qemu, front) = UnixStream::pair().unwrap();
        let (back, handler) = UnixStream::pair().unwrap();
        let relay = Relay::start(front, back, "t", BackendChannel::default()).unwrap();
        let ev = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
        let m = msg(12, VERSION, &[0u8; 8]); // SET_VRING_KICK with an eventfd
        let buf = [&m.hdr[..], &m.payload[..]].concat();
        qemu.send_with_fds(&[&buf[..]], &[ev.as_raw_fd()]).unwrap();
        let got = recv(&handler).unwrap().unwrap();
        assert_eq!((got.code(), got.fds.len()), (12, 1));
        // A header announcing 1 MiB: the relay gives up and closes both sides.
        let mut big = msg(5, VERSION, &[]);
        big.hdr[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
        send(&qemu, &big).unwrap();
        assert!(recv(&handler).map(|m| m.is_none()).unwrap_or(true));
        relay.stop();
    }
}
