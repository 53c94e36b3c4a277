//! Host NIC ports: a host interface attached to a VALE switch, as netmap's `vale-ctl -a`
//! does. Frames arriving on the interface enter the switch (learned like any port's); frames
//! the switch sends to the port leave through the interface.
//!
//! **How the NIC plugs into VALE.** The NIC port is an ordinary VALE port
//! ([`VPort`](crate::switch::vale::VPort)) whose application side is a worker thread in the
//! daemon, playing the part a host client plays: it copies frames from the interface's socket
//! into the port's TX ring and runs the port's txsync itself (the switch forwards them in the
//! same call), and it copies what the switch delivered to the port's RX ring out to the
//! socket. The switch, its leases, drop-when-full and learning are untouched, and every frame
//! costs one more copy than a switch port whose rings *are* the socket's would: less than the
//! switch's whole per-frame work (47 ns at 60 bytes, 78 at 1514), against the microseconds
//! the kernel spends per frame around an AF_PACKET or AF_XDP socket (docs/architecture.md
//! has the numbers).
//!
//! The worker sleeps in `poll` on the socket(s), on the port's RX interrupt eventfd (the
//! switch delivered frames) and on a stop eventfd. It moves whole batches: no allocation, lock
//! or system call per frame (the kring locks are taken once per batch by txsync, the socket is
//! flushed once per batch). It watches the interface's state: when it goes down or disappears
//! the port goes down (frames for it are dropped and counted), and when it is back up the
//! backend is opened again.
//!
//! * [`backend`]: the backend trait, the opener trait, link states, errors;
//! * [`ifnet`]: interface index, MTU and link state by name;
//! * [`opener`]: a real host interface ([`HostInterface`]): MTU check, backend choice and
//!   fallback;
//! * [`afpacket`]: AF_PACKET sockets with TPACKET_V3 rings, and the AF_PACKET backend;
//! * [`xdp`]: AF_XDP sockets, the XDP redirect program that feeds them, the AF_XDP backend;
//! * [`tap`]: the host stack's tap beside a NIC port (netmap's host rings);
//! * [`stats`]: a NIC port's counters;
//! * `worker`: the worker thread between the port's rings and the backend;
//! * [`port`]: a running NIC port ([`NicPort`]);
//! * [`direct`]: a host interface given directly to one client (`netmap:eth0`), fanout rings;
//! * `fake`: an in-memory wire for tests without privileges (tests and the `fake` feature).

pub mod afpacket;
pub mod backend;
pub mod direct;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod ifnet;
pub mod opener;
pub mod port;
pub mod stats;
pub mod tap;
mod worker;
pub mod xdp;

pub use afpacket::AfPacketBackend;
pub use backend::{
    BackendChoice, BackendKind, L2_OVERHEAD, Link, NicBackend, NicError, NicOpener,
    RX_CSUM_PARTIAL, error_chain,
};
pub use ifnet::{ifindex, link_state, mtu, netmap_present};
pub use opener::HostInterface;
pub use port::NicPort;
pub use stats::{NicSnapshot, NicStats};
