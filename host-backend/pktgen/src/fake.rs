//! An in-memory [`Backend`] for unit tests of the traffic loops: frames a port sends go onto
//! a "wire" (a queue another fake port receives from), or, for an echoing port, come back
//! as pongs on its own RX ring. Allocates freely; only the loops under test must not.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use ptnet_spec::netmap::{NS_MOREFRAG, NetmapSlot};

use crate::backend::{AttachOptions, Backend, Geometry, Want};
use crate::payload;

/// One slot on the wire: bytes and NS_* flags.
pub type Slot = (Vec<u8>, u16);
/// A one-way link between fake ports.
pub type Wire = Rc<RefCell<VecDeque<Slot>>>;

/// A new, empty wire.
pub fn wire() -> Wire {
    Rc::default()
}

/// A fake port with one TX and one RX ring.
#[derive(Debug)]
pub struct FakePort {
    name: String,
    slots: u32,
    buf_size: u32,
    /// Written since the last txsync.
    tx_ring: Vec<Slot>,
    /// Where txsync puts frames.
    out: Wire,
    /// Where rxsync takes frames from.
    input: Wire,
    /// Received, not yet consumed.
    rx_ring: VecDeque<Slot>,
    /// Answer pings on our own RX ring instead of sending to `out`.
    echo: Option<payload::Mac>,
    scratch: Vec<u8>,
}

impl FakePort {
    /// A port sending to `out` and receiving from `input`.
    pub fn new(name: &str, out: Wire, input: Wire) -> Self {
        FakePort {
            name: name.into(),
            slots: 64,
            buf_size: 2048,
            tx_ring: Vec::new(),
            out,
            input,
            rx_ring: VecDeque::new(),
            echo: None,
            scratch: vec![0; 2048],
        }
    }

    /// A port whose every ping comes back as a pong from `peer`.
    pub fn echo(name: &str, peer: payload::Mac) -> Self {
        let w = wire();
        let mut p = FakePort::new(name, Rc::clone(&w), w);
        p.echo = Some(peer);
        p
    }
}

impl FakePort {
    /// The wire this port receives from, to tamper with.
    pub fn input_wire(&self) -> std::cell::RefMut<'_, VecDeque<Slot>> {
        self.input.borrow_mut()
    }
}

impl Backend for FakePort {
    type Error = io::Error;

    fn attach(_: &AttachOptions) -> Result<Self, io::Error> {
        Err(io::Error::other("fake ports are built by the tests"))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn rings(&self) -> Geometry {
        Geometry {
            tx_rings: 1,
            rx_rings: 1,
            tx_slots: self.slots,
            rx_slots: self.slots,
            buf_size: self.buf_size,
        }
    }

    fn busy_poll(&self) -> bool {
        false
    }

    fn tx_space(&self, _: u32) -> u32 {
        self.slots - 1 - self.tx_ring.len() as u32
    }

    fn rx_pending(&self, _: u32) -> u32 {
        self.rx_ring.len() as u32
    }

    fn tx_batch<F: FnMut(u32, &mut [u8]) -> u16>(&mut self, r: u32, max: u32, mut fill: F) -> u32 {
        let n = self.tx_space(r).min(max);
        for i in 0..n {
            let len = usize::from(fill(i, &mut self.scratch));
            self.tx_ring.push((self.scratch[..len].to_vec(), 0));
        }
        n
    }

    fn tx_frags(&mut self, r: u32, frags: &[&[u8]]) -> bool {
        if frags.len() as u32 > self.tx_space(r) {
            return false;
        }
        for (j, f) in frags.iter().enumerate() {
            let more = if j + 1 < frags.len() { NS_MOREFRAG } else { 0 };
            self.tx_ring.push((f.to_vec(), more));
        }
        true
    }

    fn rx_batch<F: FnMut(&[u8], &NetmapSlot)>(&mut self, _: u32, max: u32, mut eat: F) -> u32 {
        let n = (self.rx_ring.len() as u32).min(max);
        for _ in 0..n {
            // PANIC: n <= len.
            let (b, flags) = self.rx_ring.pop_front().expect("counted");
            let slot = NetmapSlot {
                len: b.len() as u16,
                flags,
                ..Default::default()
            };
            eat(&b, &slot);
        }
        n
    }

    fn txsync(&mut self, _: u32) {
        for (mut b, flags) in self.tx_ring.drain(..) {
            if let Some(peer) = self.echo {
                if payload::make_pong(&mut b, &peer) {
                    self.out.borrow_mut().push_back((b, flags));
                }
            } else {
                self.out.borrow_mut().push_back((b, flags));
            }
        }
    }

    fn txsync_reclaim(&mut self, r: u32) {
        self.txsync(r)
    }

    fn rxsync(&mut self, _: u32) {
        let mut input = self.input.borrow_mut();
        while self.rx_ring.len() < self.slots as usize - 1 {
            match input.pop_front() {
                Some(s) => self.rx_ring.push_back(s),
                None => break,
            }
        }
    }

    fn wait(&mut self, want: Want, _: Option<Duration>) -> io::Result<bool> {
        Ok(match want {
            Want::Tx => {
                self.txsync(0);
                self.tx_space(0) > 0
            }
            Want::Rx => {
                self.rxsync(0);
                self.rx_pending(0) > 0
            }
        })
    }
}
