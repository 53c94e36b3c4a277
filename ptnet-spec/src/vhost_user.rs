//! The vhost-user protocol subset that ptnet uses, with the numbering of the rust-vmm `vhost`
//! crate 0.18 (the daemon's tests assert equality with that crate's constants).
//!
//! SHMEM is protocol feature bit 22 and GET_SHMEM_CONFIG is front-end request 44, as in the
//! `vhost` crate and upstream QEMU's series; older QEMU patch revisions used other numbers.

shared_consts! {
    /// vhost-user protocol feature bits ptnet devices use.
    group PROTOCOL_FEATURES;
    /// Several queues (`GET_QUEUE_NUM`).
    pub const VHOST_USER_PROTOCOL_F_MQ: u32 = 0;
    /// Replies to requests with the NEED_REPLY flag.
    pub const VHOST_USER_PROTOCOL_F_REPLY_ACK: u32 = 3;
    /// The back-end request channel (back-end to front-end messages).
    pub const VHOST_USER_PROTOCOL_F_BACKEND_REQ: u32 = 5;
    /// Device configuration space (`GET_CONFIG` / `SET_CONFIG`).
    pub const VHOST_USER_PROTOCOL_F_CONFIG: u32 = 9;
    /// `GET_MAX_MEM_SLOTS` / `ADD_MEM_REG` / `REM_MEM_REG`.
    pub const VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS: u32 = 15;
    /// `SET_STATUS` / `GET_STATUS`.
    pub const VHOST_USER_PROTOCOL_F_STATUS: u32 = 16;
    /// VIRTIO shared memory regions (`GET_SHMEM_CONFIG`, `SHMEM_MAP`, `SHMEM_UNMAP`).
    pub const VHOST_USER_PROTOCOL_F_SHMEM: u32 = 22;
    /// The virtio feature bit that announces vhost-user protocol features.
    pub const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;
}

shared_consts! {
    /// Front-end requests (front-end to back-end) beyond the basic vring set-up.
    group FRONTEND_REQUESTS;
    /// Read the device configuration space.
    pub const VHOST_USER_GET_CONFIG: u32 = 24;
    /// Write the device configuration space (the driver's CSB addresses).
    pub const VHOST_USER_SET_CONFIG: u32 = 25;
    /// Ask for the sizes of the shared memory regions.
    pub const VHOST_USER_GET_SHMEM_CONFIG: u32 = 44;
}

shared_consts! {
    /// Back-end requests (back-end to front-end).
    group BACKEND_REQUESTS;
    /// The configuration space changed: raise a config interrupt.
    pub const VHOST_USER_BACKEND_CONFIG_CHANGE_MSG: u32 = 2;
    /// Map a file descriptor into a shared memory region.
    pub const VHOST_USER_BACKEND_SHMEM_MAP: u32 = 9;
    /// Unmap a range of a shared memory region.
    pub const VHOST_USER_BACKEND_SHMEM_UNMAP: u32 = 10;
    /// `SHMEM_MAP` flag: the mapping is writable.
    pub const VHOST_USER_SHMEM_MAP_WRITABLE: u64 = 1;
}
