//! ptnet-vhost: the ptnet device over vhost-user. A VM's ptnet device (virtio id 63, QEMU's
//! generic vhost-user device) becomes one more client of a port of the datapath: its shared
//! memory region 0 *is* the port's region, its virtqueues are the rings' doorbells and
//! interrupts, and its CSB lives in guest RAM. The port runs the same sync loop as a host
//! client's (SPEC.md §3).
//!
//! * [`server`]: serving a port on a vhost-user socket ([`serve`]), the QEMU arguments;
//! * [`socket`]: what any vhost-user server needs (taking the socket path, waiting for the
//!   next frontend, stopping), shared with `ptnet-virtio-net`;
//! * [`device`]: one connection's device: vhost-user callbacks, start and stop, region 0
//!   mapping;
//! * [`config`]: the configuration space (`GET_CONFIG`/`SET_CONFIG`);
//! * [`vring`]: virtqueues that report their state changes to the device;
//! * [`irq`]: a ring's interrupt for a VM (complete an event buffer, signal the call fd);
//! * [`guest`]: the checked unsafe wrappers: CSB in guest memory, frontend eventfds.

pub mod config;
pub mod device;
pub mod guest;
pub mod irq;
pub mod server;
pub mod socket;
pub mod vring;

pub use device::StatsSnapshot;
pub use server::{ServeConfig, ServeError, ServeHandle, default_mac, qemu_args, serve};

#[cfg(test)]
mod tests {
    use ptnet_spec::vhost_user::*;
    use vhost::vhost_user::message::{BackendReq, FrontendReq, VhostUserProtocolFeatures};

    #[test]
    fn spec_numbers_match_the_vhost_crate() {
        let f = |bit: u32| VhostUserProtocolFeatures::from_bits_truncate(1 << bit);
        assert_eq!(f(VHOST_USER_PROTOCOL_F_MQ), VhostUserProtocolFeatures::MQ);
        assert_eq!(
            f(VHOST_USER_PROTOCOL_F_REPLY_ACK),
            VhostUserProtocolFeatures::REPLY_ACK
        );
        assert_eq!(
            f(VHOST_USER_PROTOCOL_F_BACKEND_REQ),
            VhostUserProtocolFeatures::BACKEND_REQ
        );
        assert_eq!(
            f(VHOST_USER_PROTOCOL_F_CONFIG),
            VhostUserProtocolFeatures::CONFIG
        );
        assert_eq!(
            f(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS),
            VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        );
        assert_eq!(
            f(VHOST_USER_PROTOCOL_F_STATUS),
            VhostUserProtocolFeatures::STATUS
        );
        assert_eq!(
            f(VHOST_USER_PROTOCOL_F_SHMEM),
            VhostUserProtocolFeatures::SHMEM
        );
        assert_eq!(VHOST_USER_GET_CONFIG, u32::from(FrontendReq::GET_CONFIG));
        assert_eq!(VHOST_USER_SET_CONFIG, u32::from(FrontendReq::SET_CONFIG));
        assert_eq!(
            VHOST_USER_GET_SHMEM_CONFIG,
            u32::from(FrontendReq::GET_SHMEM_CONFIG)
        );
        assert_eq!(
            VHOST_USER_BACKEND_CONFIG_CHANGE_MSG,
            u32::from(BackendReq::CONFIG_CHANGE_MSG)
        );
        assert_eq!(
            VHOST_USER_BACKEND_SHMEM_MAP,
            u32::from(BackendReq::SHMEM_MAP)
        );
        assert_eq!(
            VHOST_USER_BACKEND_SHMEM_UNMAP,
            u32::from(BackendReq::SHMEM_UNMAP)
        );
        assert_eq!(
            1u64 << VHOST_USER_F_PROTOCOL_FEATURES,
            vhost::vhost_user::message::VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
        );
        assert_eq!(
            VHOST_USER_SHMEM_MAP_WRITABLE,
            vhost::vhost_user::message::VhostUserMMapFlags::WRITABLE.bits()
        );
    }
}
