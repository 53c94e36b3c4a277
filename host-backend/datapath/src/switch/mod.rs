//! Where frames meet: the VALE learning switch, zero-copy pipes, and the software offloads
//! VALE applies between ports with and without a virtio-net header.
//!
//! * [`vale`]: the VALE learning switch;
//! * [`pipe`]: zero-copy netmap pipes;
//! * [`vnet`]: software offloads (checksums, TCP segmentation) for ports without a
//!   virtio-net header.

pub mod pipe;
pub mod vale;
pub mod vnet;
