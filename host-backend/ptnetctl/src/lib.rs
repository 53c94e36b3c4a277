//! `ptnetctl`: list, create and destroy ptnetd's switches and ports, attach host interfaces to
//! switches or give them to one client, serve ports to VMs (and print their QEMU arguments),
//! and show the counters. A library so the man pages can be generated from the command line.
//!
//! * [`cli`]: the commands, and the request each sends;
//! * [`show`]: how each reply prints;
//! * [`libvirt`]: domain XML for served ports (`libvirt-xml`);
//! * [`top`]: the live views (`top`, `list --watch`).

pub mod cli;
pub mod libvirt;
pub mod show;
pub mod top;
