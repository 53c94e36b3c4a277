//! An in-memory interface, for tests without privileges (built for the crate's own tests and
//! with the `fake` feature): tests put frames "on the wire" towards the port, read what the
//! port transmitted, and switch the link down, up or away.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::backend::{BackendKind, Link, NicBackend, NicError, NicOpener, RX_CSUM_PARTIAL};

/// The shared state of a fake interface.
#[derive(Debug)]
pub struct FakeWire {
    /// Frames waiting to be received by the port.
    pub inbound: VecDeque<Vec<u8>>,
    /// Frames the port transmitted.
    pub outbound: Vec<Vec<u8>>,
    /// Link state.
    pub link: Link,
    /// Interface index (change it to simulate a re-created interface).
    pub ifindex: u32,
    /// Most frames `outbound` takes before TX is full.
    pub tx_capacity: usize,
    /// Opens so far.
    pub opens: u32,
    /// Largest frame a TX slot holds.
    pub tx_room: usize,
    /// Inbound frames come with unfinished checksums ([`RX_CSUM_PARTIAL`]).
    pub csum_partial: bool,
}

/// A handle on a fake interface: clone it to keep one for the test.
#[derive(Debug, Clone)]
pub struct FakeNic {
    /// Name.
    pub ifname: String,
    /// State shared with the backend.
    pub wire: Arc<Mutex<FakeWire>>,
    /// Signalled when inbound frames or TX room are added.
    pub ready: Arc<EventFd>,
}

impl FakeNic {
    /// A fake interface that is up.
    pub fn new(ifname: &str) -> Self {
        FakeNic {
            ifname: ifname.to_owned(),
            wire: Arc::new(Mutex::new(FakeWire {
                inbound: VecDeque::new(),
                outbound: Vec::new(),
                link: Link::Up,
                ifindex: 7,
                tx_capacity: usize::MAX,
                opens: 0,
                tx_room: 2048,
                csum_partial: false,
            })),
            // PANIC: tests only; an eventfd always can be created there.
            ready: Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")),
        }
    }

    /// Runs `f` on the wire, then wakes the worker.
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeWire) -> R) -> R {
        let r = self.with_quiet(f);
        let _ = self.ready.write(1);
        r
    }

    /// Runs `f` on the wire.
    pub fn with_quiet<R>(&self, f: impl FnOnce(&mut FakeWire) -> R) -> R {
        f(&mut self.wire.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl NicOpener for FakeNic {
    fn ifname(&self) -> &str {
        &self.ifname
    }

    fn link(&self) -> (Link, u32) {
        let w = self.wire.lock().unwrap_or_else(|e| e.into_inner());
        (w.link, if w.link == Link::Gone { 0 } else { w.ifindex })
    }

    fn open(&mut self) -> Result<(Box<dyn NicBackend>, Option<String>), NicError> {
        let mut w = self.wire.lock().unwrap_or_else(|e| e.into_inner());
        if w.link != Link::Up {
            return Err(NicError::NoInterface(self.ifname.clone()));
        }
        w.opens += 1;
        Ok((
            Box::new(FakeBackend {
                nic: self.clone(),
                ifindex: w.ifindex,
                slot: vec![0; w.tx_room],
                queued: Vec::new(),
            }),
            None,
        ))
    }
}

struct FakeBackend {
    nic: FakeNic,
    ifindex: u32,
    slot: Vec<u8>,
    queued: Vec<Vec<u8>>,
}

impl NicBackend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AfPacket
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn poll_fds(&self, _want_tx: bool, fds: &mut [libc::pollfd]) -> usize {
        match fds.first_mut() {
            Some(p) => {
                *p = libc::pollfd {
                    fd: self.nic.ready.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                1
            }
            None => 0,
        }
    }

    fn rx(&mut self, sink: &mut dyn FnMut(&[u8], u32, u32)) -> usize {
        let _ = self.nic.ready.read();
        let frames: Vec<Vec<u8>> = {
            let mut w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
            if w.link != Link::Up {
                return 0;
            }
            w.inbound.drain(..).collect()
        };
        let flags = if self.nic.with_quiet(|w| w.csum_partial) {
            RX_CSUM_PARTIAL
        } else {
            0
        };
        for f in &frames {
            sink(f, f.len() as u32, flags);
        }
        frames.len()
    }

    fn tx_slot(&mut self) -> Option<&mut [u8]> {
        let w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
        (w.outbound.len() + self.queued.len() < w.tx_capacity).then_some(&mut self.slot[..])
    }

    fn tx_commit(&mut self, len: usize) {
        self.queued
            .push(self.slot[..len.min(self.slot.len())].to_vec());
    }

    fn tx_flush(&mut self) -> io::Result<()> {
        let mut w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
        if w.link != Link::Up {
            self.queued.clear();
            return Err(io::Error::from_raw_os_error(libc::ENETDOWN));
        }
        w.outbound.append(&mut self.queued);
        Ok(())
    }

    fn take_error(&mut self) -> Option<io::Error> {
        let w = self.nic.wire.lock().unwrap_or_else(|e| e.into_inner());
        (w.link != Link::Up || w.ifindex != self.ifindex)
            .then(|| io::Error::from_raw_os_error(libc::ENETDOWN))
    }
}
