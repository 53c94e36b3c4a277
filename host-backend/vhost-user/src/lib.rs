//! ptnet-vhost-user: the vhost-user plumbing every device kind of `ptnetd` shares. A device
//! kind (the ptnet device in `ptnet-device`, virtio-net in `ptnet-virtio-net`) implements
//! [`PortDevice`] and the vhost-user callbacks; everything around them
//! is here.
//!
//! * [`server`]: serving a port on a vhost-user socket, one frontend at a time, a fresh
//!   device per connection ([`serve`]);
//! * [`socket`]: taking the socket path, waiting for the next frontend, stopping;
//! * [`vring`]: virtqueues that report their state changes to the device ([`HookedVring`]);
//! * [`guest`]: the checked unsafe wrappers: a CSB in guest memory, the memory table, the
//!   frontend's eventfds;
//! * [`relay`]: the message relay that puts QEMU's early `SET_VRING_ENABLE` after
//!   `SET_FEATURES`.

pub mod guest;
pub mod relay;
pub mod server;
pub mod socket;
pub mod vring;

pub use guest::GuestMem;
pub use server::{PortDevice, ServeError, ServeHandle, default_mac, serve};
pub use socket::{Access, thread_name};
pub use vring::{Change, HookedVring, VringHook};

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
