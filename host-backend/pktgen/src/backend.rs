//! The port a traffic loop drives, behind a small trait.
//!
//! [`Backend`] is what the loops in [`crate::run`] need from a netmap-style port: attach,
//! geometry, fill and drain rings in batches, txsync/rxsync, and sleep until a ring is ready.
//! It is implemented for [`ptnet_client::Port`] (a host client of `ptnetd`) here, and for
//! [`crate::netmap::NetmapPort`] (netmap's ioctl API on `/dev/netmap`, inside guests), and
//! for [`crate::packet::PacketPort`] (a Linux interface through an AF_PACKET socket).
//! The batch methods are generic over their closures, so the per-packet work inlines.

use std::io;
use std::time::Duration;

use ptnet_client::proto::PortRequest;
use ptnet_client::{ClientError, Port};
use ptnet_spec::netmap::NetmapSlot;

use crate::payload::Mac;

/// Which rings a [`Backend::wait`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Room in a TX ring.
    Tx,
    /// Frames in an RX ring.
    Rx,
}

/// How to attach a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// netmap port name (`vale0:a`, `pipe0{1`; `netmap:ptnet0` for the netmap backend,
    /// `packet:eth0` for the AF_PACKET backend).
    pub port: String,
    /// ptnetd's control socket (host client), or the netmap device (netmap backend).
    pub socket: String,
    /// Ask for a busy-polling sync loop (the caller then spins instead of waiting).
    pub busy_poll: bool,
    /// Receive frames of every EtherType (`fwd`), not only pktgen's. Only the AF_PACKET
    /// backend filters; a switch port gets what its switch sends it either way.
    pub all_ethertypes: bool,
}

/// Rings of an attached port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// TX rings.
    pub tx_rings: u32,
    /// RX rings.
    pub rx_rings: u32,
    /// Slots per TX ring.
    pub tx_slots: u32,
    /// Slots per RX ring.
    pub rx_slots: u32,
    /// Size of every buffer.
    pub buf_size: u32,
}

/// A netmap-style port.
pub trait Backend: Sized {
    /// Why attaching failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Attaches the port `opts` names.
    fn attach(opts: &AttachOptions) -> Result<Self, Self::Error>;

    /// The port's canonical name.
    fn name(&self) -> &str;

    /// Ring counts and sizes.
    fn rings(&self) -> Geometry;

    /// Whether the other side busy-polls, so that [`Backend::wait`] is never needed.
    fn busy_poll(&self) -> bool;

    /// Largest frame the port can send, if it has a limit of its own beyond the buffers
    /// (a network interface: its MTU plus the Ethernet header).
    fn max_frame(&self) -> Option<usize> {
        None
    }

    /// The port's own MAC address, if it has one (a network interface): the default source
    /// of what it sends, so that replies reach it without promiscuous mode.
    fn own_mac(&self) -> Option<Mac> {
        None
    }

    /// Free slots in TX ring `r` (as of the last sync).
    fn tx_space(&self, r: u32) -> u32;

    /// Received slots waiting in RX ring `r` (as of the last sync).
    fn rx_pending(&self, r: u32) -> u32;

    /// Fills up to `max` free slots of TX ring `r`, one frame per slot: `fill(i, buf)` writes
    /// frame `i` and returns its length. Returns the frames queued.
    fn tx_batch<F: FnMut(u32, &mut [u8]) -> u16>(&mut self, r: u32, max: u32, fill: F) -> u32;

    /// Queues one frame made of `frags`, one slot each (NS_MOREFRAG chain); false if the ring
    /// lacks room.
    fn tx_frags(&mut self, r: u32, frags: &[&[u8]]) -> bool;

    /// Consumes up to `max` received slots of RX ring `r`: `eat(bytes, slot)` sees each.
    /// Returns the slots consumed.
    fn rx_batch<F: FnMut(&[u8], &NetmapSlot)>(&mut self, r: u32, max: u32, eat: F) -> u32;

    /// Hands queued frames of TX ring `r` over and reads back the room.
    fn txsync(&mut self, r: u32);

    /// txsync that also asks the other side to reclaim completed slots now (netmap's
    /// NAF_FORCE_RECLAIM), for a sender waiting for its ring to empty.
    fn txsync_reclaim(&mut self, r: u32);

    /// Gives consumed slots of RX ring `r` back and reads what has arrived.
    fn rxsync(&mut self, r: u32);

    /// Sleeps until a ring of kind `want` is ready or `timeout` passes; whether one is.
    fn wait(&mut self, want: Want, timeout: Option<Duration>) -> io::Result<bool>;
}

/// A host client of `ptnetd`.
impl Backend for Port {
    type Error = ClientError;

    fn attach(opts: &AttachOptions) -> Result<Self, ClientError> {
        Port::attach(
            &opts.socket,
            PortRequest {
                port: opts.port.clone(),
                busy_poll: opts.busy_poll,
                ..Default::default()
            },
        )
    }

    fn name(&self) -> &str {
        &self.info().port
    }

    fn rings(&self) -> Geometry {
        let i = self.info();
        Geometry {
            tx_rings: i.num_tx_rings,
            rx_rings: i.num_rx_rings,
            tx_slots: i.num_tx_slots,
            rx_slots: i.num_rx_slots,
            buf_size: i.buf_size,
        }
    }

    fn busy_poll(&self) -> bool {
        self.info().busy_poll
    }

    fn tx_space(&self, r: u32) -> u32 {
        Port::tx_space(self, r)
    }

    fn rx_pending(&self, r: u32) -> u32 {
        Port::rx_pending(self, r)
    }

    fn tx_batch<F: FnMut(u32, &mut [u8]) -> u16>(&mut self, r: u32, max: u32, fill: F) -> u32 {
        Port::tx_batch(self, r, max, fill)
    }

    fn tx_frags(&mut self, r: u32, frags: &[&[u8]]) -> bool {
        Port::tx_frags(self, r, frags)
    }

    fn rx_batch<F: FnMut(&[u8], &NetmapSlot)>(&mut self, r: u32, max: u32, eat: F) -> u32 {
        Port::rx_batch(self, r, max, eat)
    }

    fn txsync(&mut self, r: u32) {
        Port::txsync(self, r)
    }

    fn txsync_reclaim(&mut self, r: u32) {
        Port::txsync_reclaim(self, r)
    }

    fn rxsync(&mut self, r: u32) {
        Port::rxsync(self, r)
    }

    fn wait(&mut self, want: Want, timeout: Option<Duration>) -> io::Result<bool> {
        let want = match want {
            Want::Tx => ptnet_client::Want::Tx,
            Want::Rx => ptnet_client::Want::Rx,
        };
        Port::wait(self, want, timeout)
    }
}

/// poll() timeout in milliseconds, rounded up so that a short wait does not become a spin.
pub(crate) fn poll_timeout(t: Option<Duration>) -> i32 {
    t.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    })
}
