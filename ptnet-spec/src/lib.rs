//! ptnet-spec: the one source of truth for every binary layout ptnet shares between
//! processes, kernels and languages. `no_std`, no dependencies; SPEC.md is the normative
//! prose and `include/ptnet_spec.h` the generated C view.
//!
//! * [`c`]: the declaration macros and the C header generator;
//! * [`netmap`]: the netmap ABI v14 (slots, rings, `netmap_if`, `nmreq_*`, ioctls);
//! * [`name`]: the netmap port-name grammar (`valeX:Y`, pipes, suffixes);
//! * [`ring`]: ring arithmetic and the txsync/rxsync prologue checks;
//! * [`appl`]: the application side of a ring: its indices and the CSB steps of its syncs;
//! * [`csb`]: the CSB entries and their ordering and notification protocol;
//! * [`device`]: the ptnet virtio device (ids, features, configuration space);
//! * [`ivshmem`]: the same device on QEMU's ivshmem-doorbell (directory, device blocks);
//! * [`vhost_user`]: the vhost-user protocol subset ptnet uses;
//! * [`vnet`]: the virtio-net header carried in front of frames by ports with offloads.
#![no_std]

#[macro_use]
pub mod c;
pub mod appl;
pub mod csb;
pub mod device;
pub mod ivshmem;
pub mod name;
pub mod netmap;
pub mod ring;
pub mod vhost_user;
pub mod vnet;

use c::{CConstGroup, CStruct, HeaderContents, SharedLayout};

const GROUPS: &[CConstGroup] = &[
    netmap::API_CONSTS,
    netmap::SLOT_FLAGS,
    netmap::RING_FLAGS,
    netmap::REQ_TYPES,
    netmap::OPT_TYPES,
    netmap::REG_MODES,
    netmap::REG_FLAGS,
    netmap::IOCTLS,
    csb::CSB_CONSTS,
    device::DEVICE_IDS,
    device::FEATURES,
    device::STATUS_BITS,
    ivshmem::IVSHMEM_CONSTS,
    ivshmem::IVSHMEM_DRIVER_STATUS,
    vhost_user::PROTOCOL_FEATURES,
    vhost_user::FRONTEND_REQUESTS,
    vhost_user::BACKEND_REQUESTS,
    vnet::VNET_HDR,
];

const STRUCTS: &[CStruct] = &[
    netmap::NetmapSlot::C_LAYOUT,
    netmap::NetmapRing::C_LAYOUT,
    netmap::NetmapIf::C_LAYOUT,
    netmap::NmreqHeader::C_LAYOUT,
    netmap::NmreqRegister::C_LAYOUT,
    netmap::NmreqPortInfoGet::C_LAYOUT,
    netmap::NmreqPoolsInfo::C_LAYOUT,
    netmap::NmreqOption::C_LAYOUT,
    netmap::NmreqPortHdr::C_LAYOUT,
    csb::CsbAtok::C_LAYOUT,
    csb::CsbKtoa::C_LAYOUT,
    device::PtnetConfig::C_LAYOUT,
    ivshmem::IvshmemDir::C_LAYOUT,
    ivshmem::IvshmemHeader::C_LAYOUT,
    vnet::VnetHdr::C_LAYOUT,
];

/// Everything `include/ptnet_spec.h` holds.
pub const HEADER: HeaderContents = HeaderContents {
    groups: GROUPS,
    structs: STRUCTS,
};
