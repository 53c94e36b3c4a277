//! ptnet-client: the user side of ptnet ports for host processes. A host client is a guest
//! without a VM: it receives the port's region, a CSB and eventfds from `ptnetd` and drives
//! the rings through the CSB, exactly as the guest drivers do.
//!
//! * [`proto`]: the control protocol (the `ptnet-proto` crate, re-exported);
//! * [`port`]: an attached port: rings, txsync/rxsync, waiting for interrupts;
//! * [`ivshmem`]: a port reached the way a guest on stock QEMU reaches it (ptnetd's ivshmem
//!   server, the CSB in the region).

pub mod ivshmem;
pub mod port;
pub use ptnet_proto as proto;

pub use port::{ClientError, Port, Want};
