/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * ptnet_spec.h: ptnet's shared binary layouts for C (QEMU, the FreeBSD driver).
 *
 * GENERATED from the ptnet-spec crate; do not edit. Regenerate with
 *   PTNET_BLESS=1 cargo test -p ptnet-spec --test c_header
 * ptnet-spec/SPEC.md is the normative prose; all multi-byte fields are little endian.
 */
#ifndef PTNET_SPEC_H
#define PTNET_SPEC_H

#ifdef _KERNEL
#include <sys/types.h>
#else
#include <stdint.h>
#include <stddef.h>
#endif

/* netmap API versions and limits. */
/* The API version this ABI implements (`NETMAP_API`). */
#define PTNET_NETMAP_API 14u
/* Oldest API version accepted in `nr_version`. */
#define PTNET_NETMAP_MIN_API 14u
/* Newest API version accepted in `nr_version`. */
#define PTNET_NETMAP_MAX_API 15u
/* Size of `nmreq_header.nr_name`, including the terminating NUL. */
#define PTNET_NETMAP_REQ_IFNAMSIZ 64u
/* Maximum size of a whole request, options included. */
#define PTNET_NETMAP_REQ_MAXSIZE 0x1000u
/* Alignment of the `sem` area in `netmap_ring`. */
#define PTNET_NM_CACHE_ALIGN 128u
/* Maximum number of slots in one NS_MOREFRAG chain. */
#define PTNET_NETMAP_MAX_FRAGS 64u
/* Mask of the ring number in `nr_ringid`. */
#define PTNET_NETMAP_RING_MASK 0xfffu
/* Buffer indices below this are reserved (0 and 1 are netmap's "fake" buffers). */
#define PTNET_NETMAP_BUF_RESERVED 2u

/* `netmap_slot.flags`. */
/* The application changed `buf_idx` (the kernel also sets it when it does). */
#define PTNET_NS_BUF_CHANGED 1u
/* Ask for a notification when this slot is processed. */
#define PTNET_NS_REPORT 2u
/* Forward between NIC and host rings (with NR_FORWARD on the ring). */
#define PTNET_NS_FORWARD 4u
/* VALE: do not learn the source MAC of this frame. */
#define PTNET_NS_NO_LEARN 8u
/* VALE TX only: the data is at the user pointer `ptr`. */
#define PTNET_NS_INDIRECT 16u
/* More fragments follow in the next slot; `len` is per fragment. */
#define PTNET_NS_MOREFRAG 32u
/* Monitor copy that came from the TX direction. */
#define PTNET_NS_TXMON 64u
/* Shift of the port byte (VALE TX: destination override; VALE RX: fragment count). */
#define PTNET_NS_PORT_SHIFT 8u
/* Mask of the port byte. */
#define PTNET_NS_PORT_MASK 0xff00u

/* `netmap_ring.flags`, `netmap_ring.dir` and `netmap_if.ni_flags`. */
/* Update the ring timestamp on every sync. */
#define PTNET_NR_TIMESTAMP 2u
/* Enable NS_FORWARD on this ring. */
#define PTNET_NR_FORWARD 4u
/* `netmap_ring.dir` of a TX ring. */
#define PTNET_NR_TX 0u
/* `netmap_ring.dir` of an RX ring. */
#define PTNET_NR_RX 1u
/* `netmap_if.ni_flags`: the interface uses a private memory region. */
#define PTNET_NI_PRIV_MEM 1u

/* `nmreq_header.nr_reqtype`. */
/* Register a port (bind rings to the file descriptor). */
#define PTNET_NETMAP_REQ_REGISTER 1u
/* Ask for ring/slot counts and memory size of a port. */
#define PTNET_NETMAP_REQ_PORT_INFO_GET 2u
/* Attach a port to a VALE switch. */
#define PTNET_NETMAP_REQ_VALE_ATTACH 3u
/* Detach a port from a VALE switch. */
#define PTNET_NETMAP_REQ_VALE_DETACH 4u
/* List VALE ports. */
#define PTNET_NETMAP_REQ_VALE_LIST 5u
/* Set the virtio-net header length of a port. */
#define PTNET_NETMAP_REQ_PORT_HDR_SET 6u
/* Get the virtio-net header length of a port. */
#define PTNET_NETMAP_REQ_PORT_HDR_GET 7u
/* Create a persistent VALE port. */
#define PTNET_NETMAP_REQ_VALE_NEWIF 8u
/* Delete a persistent VALE port. */
#define PTNET_NETMAP_REQ_VALE_DELIF 9u
/* Enable VALE polling. */
#define PTNET_NETMAP_REQ_VALE_POLLING_ENABLE 10u
/* Disable VALE polling. */
#define PTNET_NETMAP_REQ_VALE_POLLING_DISABLE 11u
/* Describe the pools of a memory region. */
#define PTNET_NETMAP_REQ_POOLS_INFO_GET 12u
/* Start the in-kernel sync loop. */
#define PTNET_NETMAP_REQ_SYNC_KLOOP_START 13u
/* Stop the in-kernel sync loop. */
#define PTNET_NETMAP_REQ_SYNC_KLOOP_STOP 14u
/* Enable CSB mode. */
#define PTNET_NETMAP_REQ_CSB_ENABLE 15u

/* `nmreq_option.nro_reqtype`. */
/* External memory. */
#define PTNET_NETMAP_REQ_OPT_EXTMEM 1u
/* Eventfds for the sync loop. */
#define PTNET_NETMAP_REQ_OPT_SYNC_KLOOP_EVENTFDS 2u
/* CSB addresses. */
#define PTNET_NETMAP_REQ_OPT_CSB 3u
/* Sync loop mode. */
#define PTNET_NETMAP_REQ_OPT_SYNC_KLOOP_MODE 4u
/* Buffer offsets. */
#define PTNET_NETMAP_REQ_OPT_OFFSETS 5u
/* One past the last option type. */
#define PTNET_NETMAP_REQ_OPT_MAX 6u

/* `nmreq_register.nr_mode`. */
/* Backward compatibility: the mode is taken from `nr_ringid`. */
#define PTNET_NR_REG_DEFAULT 0u
/* All hardware (NIC) ring pairs. */
#define PTNET_NR_REG_ALL_NIC 1u
/* All host (software) rings. */
#define PTNET_NR_REG_SW 2u
/* All NIC and host rings. */
#define PTNET_NR_REG_NIC_SW 3u
/* One NIC ring pair, `nr_ringid`. */
#define PTNET_NR_REG_ONE_NIC 4u
/* Deprecated: pipe master (the pipe is now part of the name). */
#define PTNET_NR_REG_PIPE_MASTER 5u
/* Deprecated: pipe slave (the pipe is now part of the name). */
#define PTNET_NR_REG_PIPE_SLAVE 6u
/* No rings at all. */
#define PTNET_NR_REG_NULL 7u
/* One host ring pair, `nr_ringid`. */
#define PTNET_NR_REG_ONE_SW 8u

/* `nmreq_register.nr_flags`. */
/* Monitor the TX rings. */
#define PTNET_NR_MONITOR_TX UINT64_C(0x100)
/* Monitor the RX rings. */
#define PTNET_NR_MONITOR_RX UINT64_C(0x200)
/* Zero-copy monitor. */
#define PTNET_NR_ZCOPY_MON UINT64_C(0x400)
/* Exclusive access to the selected rings. */
#define PTNET_NR_EXCLUSIVE UINT64_C(0x800)
/* Bind only the RX rings. */
#define PTNET_NR_RX_RINGS_ONLY UINT64_C(0x2000)
/* Bind only the TX rings. */
#define PTNET_NR_TX_RINGS_ONLY UINT64_C(0x4000)
/* The application accepts a virtio-net header in front of each frame. */
#define PTNET_NR_ACCEPT_VNET_HDR UINT64_C(0x8000)
/* poll() on the file descriptor also syncs the RX rings. */
#define PTNET_NR_DO_RX_POLL UINT64_C(0x10000)
/* poll() does not implicitly sync the TX rings. */
#define PTNET_NR_NO_TX_POLL UINT64_C(0x20000)

/* ioctl numbers on Linux (FreeBSD's `_IO` adds IOC_VOID: 0x20000000). */
/* `_IOWR('i', 151, struct nmreq_header)`. */
#define PTNET_NIOCCTRL 0xc0586997u
/* `_IO('i', 148)`: sync the TX rings bound to the file descriptor. */
#define PTNET_NIOCTXSYNC 0x6994u
/* `_IO('i', 149)`: sync the RX rings bound to the file descriptor. */
#define PTNET_NIOCRXSYNC 0x6995u

/* CSB entry size and `sync_flags`. */
/* Size and alignment of each CSB entry. */
#define PTNET_CSB_ENTRY_SIZE 64u
/* `sync_flags`: the application wants the RX ring refreshed even if nothing moved. */
#define PTNET_NAF_FORCE_READ 1u
/* `sync_flags`: the application wants completed TX slots reclaimed now. */
#define PTNET_NAF_FORCE_RECLAIM 2u

/* Identity of the ptnet virtio device. */
/*
 * Virtio device id. Unofficial: the top of the range the modern virtio-pci transport can
 * carry (PCI device id 0x1040 + 63 = 0x107f), far from the ids OASIS has allocated.
 */
#define PTNET_VIRTIO_ID_PTNET 63u
/* PCI vendor id of virtio devices. */
#define PTNET_PCI_VENDOR_ID_VIRTIO 0x1af4u
/* PCI device id of the ptnet device on the modern virtio-pci transport. */
#define PTNET_PCI_DEVICE_ID_PTNET 0x107fu
/* Shared memory region id of the netmap allocator. */
#define PTNET_SHMID_ALLOCATOR 0u
/* Size of the device configuration space in bytes. */
#define PTNET_CONFIG_SIZE 64u
/* Most rings per direction (one virtqueue and one MSI-X vector per ring). */
#define PTNET_MAX_RINGS 64u
/*
 * Length of the virtio-net header when PTNET_F_VNET_HDR is negotiated
 * (`struct virtio_net_hdr_v1`).
 */
#define PTNET_VNET_HDR_LEN 12u

/* Virtio feature bits of the ptnet device. */
/* Frames in the rings carry a 12-byte virtio-net header (checksum and GSO offloads). */
#define PTNET_F_VNET_HDR 0u
/* The device's config `status` field is valid (always offered). */
#define PTNET_F_STATUS 1u
/* Virtio 1.0 (mandatory: ptnet has no legacy interface). */
#define PTNET_VIRTIO_F_VERSION_1 32u

/* Bits of `ptnet_config.status`. */
/* The port is up: frames can flow. */
#define PTNET_S_LINK_UP 1u
/* Shared memory region 0 is mapped and holds the port's rings: the driver may access it. */
#define PTNET_S_MEM_READY 2u

/* The ivshmem transport: identity, registers, layout. */
/* PCI vendor id of QEMU's ivshmem devices (Red Hat / Qumranet). */
#define PTNET_PCI_VENDOR_ID_IVSHMEM 0x1af4u
/* PCI device id of QEMU's ivshmem devices (plain and doorbell alike). */
#define PTNET_PCI_DEVICE_ID_IVSHMEM 0x1110u
/* BAR 0 register: the guest's own peer id (read only). */
#define PTNET_IVSHMEM_REG_IVPOSITION 8u
/* BAR 0 register: write `peer << 16 | vector` to ring that peer's vector. */
#define PTNET_IVSHMEM_REG_DOORBELL 12u
/* `ptnet_ivshmem_dir.signature`: the bytes `"ptnetdir"`, read as a little-endian u64. */
#define PTNET_IVSHMEM_DIR_SIGNATURE UINT64_C(0x72696474656e7470)
/* `ptnet_ivshmem_header.signature`: the bytes `"ptnetblk"`, read as a little-endian u64. */
#define PTNET_IVSHMEM_HDR_SIGNATURE UINT64_C(0x6b6c6274656e7470)
/* Version of this layout. */
#define PTNET_IVSHMEM_VERSION 1u
/* Bytes at the end of BAR 2 that hold the directory (one page). */
#define PTNET_IVSHMEM_DIR_SIZE 0x1000u
/* Bytes of a device block before its CSB arrays (the header's page). */
#define PTNET_IVSHMEM_HDR_SIZE 0x1000u
/*
 * Most rings (TX plus RX) a port served over ivshmem has: one doorbell vector each, and
 * QEMU's doorbell register carries 8 bits of vector.
 */
#define PTNET_IVSHMEM_MAX_RINGS 128u

/* `ptnet_ivshmem_header.driver_status`, written by the driver. */
/* The driver set the port up (features written) and wants the device started. */
#define PTNET_IVS_DRIVER_OK 1u

/* vhost-user protocol feature bits ptnet devices use. */
/* Several queues (`GET_QUEUE_NUM`). */
#define PTNET_VHOST_USER_PROTOCOL_F_MQ 0u
/* Replies to requests with the NEED_REPLY flag. */
#define PTNET_VHOST_USER_PROTOCOL_F_REPLY_ACK 3u
/* The back-end request channel (back-end to front-end messages). */
#define PTNET_VHOST_USER_PROTOCOL_F_BACKEND_REQ 5u
/* Device configuration space (`GET_CONFIG` / `SET_CONFIG`). */
#define PTNET_VHOST_USER_PROTOCOL_F_CONFIG 9u
/* `GET_MAX_MEM_SLOTS` / `ADD_MEM_REG` / `REM_MEM_REG`. */
#define PTNET_VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15u
/* `SET_STATUS` / `GET_STATUS`. */
#define PTNET_VHOST_USER_PROTOCOL_F_STATUS 16u
/* VIRTIO shared memory regions (`GET_SHMEM_CONFIG`, `SHMEM_MAP`, `SHMEM_UNMAP`). */
#define PTNET_VHOST_USER_PROTOCOL_F_SHMEM 22u
/* The virtio feature bit that announces vhost-user protocol features. */
#define PTNET_VHOST_USER_F_PROTOCOL_FEATURES 30u

/* Front-end requests (front-end to back-end) beyond the basic vring set-up. */
/* Read the device configuration space. */
#define PTNET_VHOST_USER_GET_CONFIG 24u
/* Write the device configuration space (the driver's CSB addresses). */
#define PTNET_VHOST_USER_SET_CONFIG 25u
/* Ask for the sizes of the shared memory regions. */
#define PTNET_VHOST_USER_GET_SHMEM_CONFIG 44u

/* Back-end requests (back-end to front-end). */
/* The configuration space changed: raise a config interrupt. */
#define PTNET_VHOST_USER_BACKEND_CONFIG_CHANGE_MSG 2u
/* Map a file descriptor into a shared memory region. */
#define PTNET_VHOST_USER_BACKEND_SHMEM_MAP 9u
/* Unmap a range of a shared memory region. */
#define PTNET_VHOST_USER_BACKEND_SHMEM_UNMAP 10u
/* `SHMEM_MAP` flag: the mapping is writable. */
#define PTNET_VHOST_USER_SHMEM_MAP_WRITABLE UINT64_C(1)

/* Virtio-net header flags and GSO types (virtio 1.x, 5.1.6). */
/* Length of the header on every ptnet path (`virtio_net_hdr_v1`, with `num_buffers`). */
#define PTNET_VNET_HDR_LEN 12u
/*
 * `flags`: the checksum from `csum_start` to the end must be computed and stored at
 * `csum_start + csum_offset` (the field holds the pseudo-header sum).
 */
#define PTNET_VIRTIO_NET_HDR_F_NEEDS_CSUM 1u
/*
 * `flags`: the frame's checksums are known good (a device's word: a driver must not set
 * it, virtio 1.x 5.1.6.2).
 */
#define PTNET_VIRTIO_NET_HDR_F_DATA_VALID 2u
/* `flags`: the frame was coalesced by receive segment coalescing (device only too). */
#define PTNET_VIRTIO_NET_HDR_F_RSC_INFO 4u
/* `gso_type`: not a GSO frame. */
#define PTNET_VIRTIO_NET_HDR_GSO_NONE 0u
/* `gso_type`: TCP over IPv4, to be cut into `gso_size`-byte segments. */
#define PTNET_VIRTIO_NET_HDR_GSO_TCPV4 1u
/* `gso_type`: UDP fragmentation offload (obsolete, never produced by ptnet). */
#define PTNET_VIRTIO_NET_HDR_GSO_UDP 3u
/* `gso_type`: TCP over IPv6. */
#define PTNET_VIRTIO_NET_HDR_GSO_TCPV6 4u
/* `gso_type` bit: the TCP stream uses ECN (CWR on the first segment only). */
#define PTNET_VIRTIO_NET_HDR_GSO_ECN 128u

/* One slot of a netmap ring (`struct netmap_slot`). */
struct ptnet_nm_slot {
	/* Buffer index in the region's buffer pool. */
	uint32_t buf_idx;
	/* Length of the data in the buffer (of this fragment). */
	uint16_t len;
	/* NS_* flags, plus the port byte (NS_PORT_MASK). */
	uint16_t flags;
	/* User pointer (NS_INDIRECT) or buffer offset (OFFSETS option). */
	uint64_t ptr;
};

/* The header of a netmap ring (`struct netmap_ring`); the slots follow at offset 256. */
struct ptnet_nm_ring {
	/* Offset of the buffer pool from this ring (buffer i is at `ring + buf_ofs + i * nr_buf_size`). */
	int64_t buf_ofs;
	/* Number of slots. */
	uint32_t num_slots;
	/* Size of each buffer. */
	uint32_t nr_buf_size;
	/* Ring number within its direction. */
	uint16_t ringid;
	/* NR_TX or NR_RX. */
	uint16_t dir;
	/* First slot owned by the application (written by the application). */
	uint32_t head;
	/* Wake-up point (written by the application). */
	uint32_t cur;
	/* First slot owned by the kernel (written by the kernel side). */
	uint32_t tail;
	/* NR_TIMESTAMP, NR_FORWARD. */
	uint32_t flags;
	/* Padding to the timestamp. */
	uint32_t pad0;
	/* Timestamp of the last sync, seconds. */
	int64_t ts_sec;
	/* Timestamp of the last sync, microseconds. */
	int64_t ts_usec;
	/* Mask of the offset bits in `netmap_slot.ptr` (OFFSETS option). */
	uint64_t offset_mask;
	/* Alignment required for buffer offsets (OFFSETS option). */
	uint64_t buf_align;
	/* Padding to the `sem` area. */
	uint8_t pad1[56];
	/* Opaque to applications (netmap's `sem[128]`, aligned to NM_CACHE_ALIGN). */
	uint8_t sem[128];
	struct ptnet_nm_slot slot[];
};

/* The header of a netmap interface descriptor (`struct netmap_if`); `ring_ofs[]` follows. */
struct ptnet_nm_if {
	/* Port name, NUL terminated. */
	uint8_t ni_name[16];
	/* API version. */
	uint32_t ni_version;
	/* NI_PRIV_MEM. */
	uint32_t ni_flags;
	/* Number of NIC TX rings. */
	uint32_t ni_tx_rings;
	/* Number of NIC RX rings. */
	uint32_t ni_rx_rings;
	/* Head of the list of extra buffers (chained through their first u32). */
	uint32_t ni_bufs_head;
	/* Number of host TX rings. */
	uint32_t ni_host_tx_rings;
	/* Number of host RX rings. */
	uint32_t ni_host_rx_rings;
	/* Reserved. */
	uint32_t spare[3];
	int64_t ring_ofs[];
};

/* The header of every `NIOCCTRL` request (`struct nmreq_header`). */
struct ptnet_nmreq_header {
	/* API version (NETMAP_API). */
	uint16_t nr_version;
	/* NETMAP_REQ_* request type. */
	uint16_t nr_reqtype;
	/* Must be zero. */
	uint32_t nr_reserved;
	/* Port name, NUL terminated. */
	uint8_t nr_name[64];
	/* User pointer to the first `nmreq_option`, or 0. */
	uint64_t nr_options;
	/* User pointer to the request body. */
	uint64_t nr_body;
};

/* Body of NETMAP_REQ_REGISTER (`struct nmreq_register`). */
struct ptnet_nmreq_register {
	/* Out: offset of the netmap_if in the memory region. */
	uint64_t nr_offset;
	/* Out: size of the memory region. */
	uint64_t nr_memsize;
	/* In/out: slots per TX ring. */
	uint32_t nr_tx_slots;
	/* In/out: slots per RX ring. */
	uint32_t nr_rx_slots;
	/* In/out: NIC TX rings. */
	uint16_t nr_tx_rings;
	/* In/out: NIC RX rings. */
	uint16_t nr_rx_rings;
	/* In/out: host TX rings. */
	uint16_t nr_host_tx_rings;
	/* In/out: host RX rings. */
	uint16_t nr_host_rx_rings;
	/* In/out: memory allocator id (0 = let the kernel choose). */
	uint16_t nr_mem_id;
	/* Ring number for NR_REG_ONE_NIC / NR_REG_ONE_SW. */
	uint16_t nr_ringid;
	/* NR_REG_* mode. */
	uint32_t nr_mode;
	/* In/out: extra buffers wanted / obtained. */
	uint32_t nr_extra_bufs;
	/* Padding. */
	uint32_t pad;
	/* NR_* flags. */
	uint64_t nr_flags;
};

/* Body of NETMAP_REQ_PORT_INFO_GET (`struct nmreq_port_info_get`). */
struct ptnet_nmreq_port_info_get {
	/* Size of the memory region. */
	uint64_t nr_memsize;
	/* Slots per TX ring. */
	uint32_t nr_tx_slots;
	/* Slots per RX ring. */
	uint32_t nr_rx_slots;
	/* NIC TX rings. */
	uint16_t nr_tx_rings;
	/* NIC RX rings. */
	uint16_t nr_rx_rings;
	/* Host TX rings. */
	uint16_t nr_host_tx_rings;
	/* Host RX rings. */
	uint16_t nr_host_rx_rings;
	/* Memory allocator id. */
	uint16_t nr_mem_id;
	/* Padding. */
	uint16_t pad[3];
};

/* Body of NETMAP_REQ_POOLS_INFO_GET (`struct nmreq_pools_info`). */
struct ptnet_nmreq_pools_info {
	/* Size of the memory region. */
	uint64_t nr_memsize;
	/* Memory allocator id. */
	uint16_t nr_mem_id;
	/* Padding. */
	uint16_t pad1[3];
	/* Offset of the netmap_if pool. */
	uint64_t nr_if_pool_offset;
	/* Objects in the netmap_if pool. */
	uint32_t nr_if_pool_objtotal;
	/* Size of each netmap_if object. */
	uint32_t nr_if_pool_objsize;
	/* Offset of the ring pool. */
	uint64_t nr_ring_pool_offset;
	/* Objects in the ring pool. */
	uint32_t nr_ring_pool_objtotal;
	/* Size of each ring object. */
	uint32_t nr_ring_pool_objsize;
	/* Offset of the buffer pool. */
	uint64_t nr_buf_pool_offset;
	/* Buffers in the buffer pool. */
	uint32_t nr_buf_pool_objtotal;
	/* Size of each buffer. */
	uint32_t nr_buf_pool_objsize;
};

/* Header of every request option (`struct nmreq_option`), chained through `nro_next`. */
struct ptnet_nmreq_option {
	/* User pointer to the next option, or 0. */
	uint64_t nro_next;
	/* NETMAP_REQ_OPT_* type. */
	uint32_t nro_reqtype;
	/* Out: 0 or an errno for this option. */
	uint32_t nro_status;
	/* Size of the whole option, for variable-size options. */
	uint64_t nro_size;
};

/* Body of NETMAP_REQ_PORT_HDR_SET/GET (`struct nmreq_port_hdr`). */
struct ptnet_nmreq_port_hdr {
	/* Virtio-net header length (0, 10 or 12). */
	uint32_t nr_hdr_len;
	/* Padding. */
	uint32_t pad;
};

/* Application to kernel entry (`struct nm_csb_atok`); written only by the application. */
struct ptnet_csb_atok {
	/* The application's ring head. */
	uint32_t head;
	/* The application's ring cur. */
	uint32_t cur;
	/* 1 = the application wants an interrupt when the ring moves. */
	uint32_t appl_need_kick;
	/* NAF_* flags of the last sync request. */
	uint32_t sync_flags;
	/* Padding to 64 bytes. */
	uint32_t pad[12];
};

/* Kernel to application entry (`struct nm_csb_ktoa`); written only by the kernel side. */
struct ptnet_csb_ktoa {
	/* The kernel side's hwcur. */
	uint32_t hwcur;
	/* The kernel side's hwtail. */
	uint32_t hwtail;
	/* 1 = the kernel side wants a kick when the application publishes work. */
	uint32_t kern_need_kick;
	/* Padding to 64 bytes. */
	uint32_t pad[13];
};

/* The device configuration space (`struct ptnet_config`), little endian. */
struct ptnet_config {
	/* Port MAC address. */
	uint8_t mac[6];
	/* PTNET_S_* bits. */
	uint16_t status;
	/* Number of TX rings (queues 0 .. num_tx_rings - 1). */
	uint32_t num_tx_rings;
	/* Number of RX rings (the queues after the TX rings). */
	uint32_t num_rx_rings;
	/* Slots per TX ring. */
	uint32_t num_tx_slots;
	/* Slots per RX ring. */
	uint32_t num_rx_slots;
	/* Offset of the port's netmap_if within shared memory region 0. */
	uint64_t nifp_offset;
	/* Bytes of region 0 used by the allocator (the size a netmap application mmaps). */
	uint64_t mem_size;
	/* Allocator id: ports with equal ids share one allocator (zero copy between them). */
	uint16_t mem_id;
	/* Virtio-net header length used when PTNET_F_VNET_HDR is negotiated, else 0. */
	uint16_t vnet_hdr_len;
	/* Size of every netmap buffer. */
	uint32_t buf_size;
	/* Guest-physical address of the atok array (driver-written, 64-byte aligned). */
	uint64_t csb_atok_gpa;
	/* Guest-physical address of the ktoa array (driver-written, 64-byte aligned). */
	uint64_t csb_ktoa_gpa;
};

/*
 * The directory (`struct ptnet_ivshmem_dir`): the last [`PTNET_IVSHMEM_DIR_SIZE`] bytes of
 * BAR 2, little endian, written by the device before it answers the guest's QEMU.
 */
struct ptnet_ivshmem_dir {
	/*
	 * PTNET_IVSHMEM_DIR_SIGNATURE: BAR 2 is a ptnet region (any other ivshmem device is
	 * not the driver's).
	 */
	uint64_t signature;
	/* PTNET_IVSHMEM_VERSION. */
	uint32_t version;
	/* Bytes of each device block (a multiple of 4096). */
	uint32_t block_size;
	/* Offset in BAR 2 of block 0 (the block of peer id 1). */
	uint64_t blocks_offset;
	/* Number of blocks: the peer ids 1 ..= num_blocks have one. */
	uint32_t num_blocks;
	/* Reserved, zero. */
	uint32_t reserved;
};

/*
 * The header of a device block (`struct ptnet_ivshmem_header`), little endian. The
 * device writes everything but `driver_features` and `driver_status`; in `config`, the
 * two CSB fields hold the *offsets in BAR 2* of the block's atok and ktoa arrays (on the
 * virtio transport the driver writes guest-physical addresses there).
 */
struct ptnet_ivshmem_header {
	/* PTNET_IVSHMEM_HDR_SIGNATURE, written last when the device fills the block. */
	uint64_t signature;
	/* The guest's ivshmem peer id this block belongs to (its `IVPosition`). */
	uint16_t peer_id;
	/* The peer id of the device: doorbell writes go to `daemon_peer << 16 | vector`. */
	uint16_t daemon_peer;
	/* Vectors the device uses: one per ring, then the control vector. */
	uint16_t num_vectors;
	/*
	 * The control vector (the number of rings): the driver's doorbell for start and
	 * reset requests, the device's configuration-change interrupt.
	 */
	uint16_t ctrl_vector;
	/* PTNET_F_* bits the device offers (PTNET_F_VNET_HDR only if the port takes it). */
	uint32_t device_features;
	/* PTNET_F_* bits the driver accepts (driver-written, before PTNET_IVS_DRIVER_OK). */
	uint32_t driver_features;
	/* PTNET_IVS_DRIVER_OK to ask for a start, 0 to ask for a reset (driver-written). */
	uint32_t driver_status;
	/* Bumped by the device at every start and stop. */
	uint32_t generation;
	/* The port (`struct ptnet_config`), `status` included. */
	struct ptnet_config config;
};

/* `struct virtio_net_hdr_v1`. */
struct ptnet_vnet_hdr {
	/* VIRTIO_NET_HDR_F_* bits. */
	uint8_t flags;
	/* VIRTIO_NET_HDR_GSO_* value (with the ECN bit). */
	uint8_t gso_type;
	/* Length of the headers to copy in front of every segment (a hint: ptnet derives it). */
	uint16_t hdr_len;
	/* Payload bytes per segment. */
	uint16_t gso_size;
	/* Where checksumming starts (the L4 header). */
	uint16_t csum_start;
	/* Where the checksum goes, from `csum_start`. */
	uint16_t csum_offset;
	/* Buffers merged into this frame (virtio-net `MRG_RXBUF`); 0 in netmap buffers. */
	uint16_t num_buffers;
};

/* Layout checks: the numbers below were computed by rustc from the Rust declarations. */
#ifndef PTNET_SPEC_NO_ASSERTS
_Static_assert(sizeof(struct ptnet_nm_slot) == 16, "struct ptnet_nm_slot: size");
_Static_assert(offsetof(struct ptnet_nm_slot, buf_idx) == 0, "struct ptnet_nm_slot: buf_idx");
_Static_assert(offsetof(struct ptnet_nm_slot, len) == 4, "struct ptnet_nm_slot: len");
_Static_assert(offsetof(struct ptnet_nm_slot, flags) == 6, "struct ptnet_nm_slot: flags");
_Static_assert(offsetof(struct ptnet_nm_slot, ptr) == 8, "struct ptnet_nm_slot: ptr");
_Static_assert(sizeof(struct ptnet_nm_ring) == 256, "struct ptnet_nm_ring: size");
_Static_assert(offsetof(struct ptnet_nm_ring, buf_ofs) == 0, "struct ptnet_nm_ring: buf_ofs");
_Static_assert(offsetof(struct ptnet_nm_ring, num_slots) == 8, "struct ptnet_nm_ring: num_slots");
_Static_assert(offsetof(struct ptnet_nm_ring, nr_buf_size) == 12, "struct ptnet_nm_ring: nr_buf_size");
_Static_assert(offsetof(struct ptnet_nm_ring, ringid) == 16, "struct ptnet_nm_ring: ringid");
_Static_assert(offsetof(struct ptnet_nm_ring, dir) == 18, "struct ptnet_nm_ring: dir");
_Static_assert(offsetof(struct ptnet_nm_ring, head) == 20, "struct ptnet_nm_ring: head");
_Static_assert(offsetof(struct ptnet_nm_ring, cur) == 24, "struct ptnet_nm_ring: cur");
_Static_assert(offsetof(struct ptnet_nm_ring, tail) == 28, "struct ptnet_nm_ring: tail");
_Static_assert(offsetof(struct ptnet_nm_ring, flags) == 32, "struct ptnet_nm_ring: flags");
_Static_assert(offsetof(struct ptnet_nm_ring, pad0) == 36, "struct ptnet_nm_ring: pad0");
_Static_assert(offsetof(struct ptnet_nm_ring, ts_sec) == 40, "struct ptnet_nm_ring: ts_sec");
_Static_assert(offsetof(struct ptnet_nm_ring, ts_usec) == 48, "struct ptnet_nm_ring: ts_usec");
_Static_assert(offsetof(struct ptnet_nm_ring, offset_mask) == 56, "struct ptnet_nm_ring: offset_mask");
_Static_assert(offsetof(struct ptnet_nm_ring, buf_align) == 64, "struct ptnet_nm_ring: buf_align");
_Static_assert(offsetof(struct ptnet_nm_ring, pad1) == 72, "struct ptnet_nm_ring: pad1");
_Static_assert(offsetof(struct ptnet_nm_ring, sem) == 128, "struct ptnet_nm_ring: sem");
_Static_assert(offsetof(struct ptnet_nm_ring, slot) == 256, "struct ptnet_nm_ring: slot[]");
_Static_assert(sizeof(struct ptnet_nm_if) == 56, "struct ptnet_nm_if: size");
_Static_assert(offsetof(struct ptnet_nm_if, ni_name) == 0, "struct ptnet_nm_if: ni_name");
_Static_assert(offsetof(struct ptnet_nm_if, ni_version) == 16, "struct ptnet_nm_if: ni_version");
_Static_assert(offsetof(struct ptnet_nm_if, ni_flags) == 20, "struct ptnet_nm_if: ni_flags");
_Static_assert(offsetof(struct ptnet_nm_if, ni_tx_rings) == 24, "struct ptnet_nm_if: ni_tx_rings");
_Static_assert(offsetof(struct ptnet_nm_if, ni_rx_rings) == 28, "struct ptnet_nm_if: ni_rx_rings");
_Static_assert(offsetof(struct ptnet_nm_if, ni_bufs_head) == 32, "struct ptnet_nm_if: ni_bufs_head");
_Static_assert(offsetof(struct ptnet_nm_if, ni_host_tx_rings) == 36, "struct ptnet_nm_if: ni_host_tx_rings");
_Static_assert(offsetof(struct ptnet_nm_if, ni_host_rx_rings) == 40, "struct ptnet_nm_if: ni_host_rx_rings");
_Static_assert(offsetof(struct ptnet_nm_if, spare) == 44, "struct ptnet_nm_if: spare");
_Static_assert(offsetof(struct ptnet_nm_if, ring_ofs) == 56, "struct ptnet_nm_if: ring_ofs[]");
_Static_assert(sizeof(struct ptnet_nmreq_header) == 88, "struct ptnet_nmreq_header: size");
_Static_assert(offsetof(struct ptnet_nmreq_header, nr_version) == 0, "struct ptnet_nmreq_header: nr_version");
_Static_assert(offsetof(struct ptnet_nmreq_header, nr_reqtype) == 2, "struct ptnet_nmreq_header: nr_reqtype");
_Static_assert(offsetof(struct ptnet_nmreq_header, nr_reserved) == 4, "struct ptnet_nmreq_header: nr_reserved");
_Static_assert(offsetof(struct ptnet_nmreq_header, nr_name) == 8, "struct ptnet_nmreq_header: nr_name");
_Static_assert(offsetof(struct ptnet_nmreq_header, nr_options) == 72, "struct ptnet_nmreq_header: nr_options");
_Static_assert(offsetof(struct ptnet_nmreq_header, nr_body) == 80, "struct ptnet_nmreq_header: nr_body");
_Static_assert(sizeof(struct ptnet_nmreq_register) == 56, "struct ptnet_nmreq_register: size");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_offset) == 0, "struct ptnet_nmreq_register: nr_offset");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_memsize) == 8, "struct ptnet_nmreq_register: nr_memsize");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_tx_slots) == 16, "struct ptnet_nmreq_register: nr_tx_slots");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_rx_slots) == 20, "struct ptnet_nmreq_register: nr_rx_slots");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_tx_rings) == 24, "struct ptnet_nmreq_register: nr_tx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_rx_rings) == 26, "struct ptnet_nmreq_register: nr_rx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_host_tx_rings) == 28, "struct ptnet_nmreq_register: nr_host_tx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_host_rx_rings) == 30, "struct ptnet_nmreq_register: nr_host_rx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_mem_id) == 32, "struct ptnet_nmreq_register: nr_mem_id");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_ringid) == 34, "struct ptnet_nmreq_register: nr_ringid");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_mode) == 36, "struct ptnet_nmreq_register: nr_mode");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_extra_bufs) == 40, "struct ptnet_nmreq_register: nr_extra_bufs");
_Static_assert(offsetof(struct ptnet_nmreq_register, pad) == 44, "struct ptnet_nmreq_register: pad");
_Static_assert(offsetof(struct ptnet_nmreq_register, nr_flags) == 48, "struct ptnet_nmreq_register: nr_flags");
_Static_assert(sizeof(struct ptnet_nmreq_port_info_get) == 32, "struct ptnet_nmreq_port_info_get: size");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_memsize) == 0, "struct ptnet_nmreq_port_info_get: nr_memsize");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_tx_slots) == 8, "struct ptnet_nmreq_port_info_get: nr_tx_slots");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_rx_slots) == 12, "struct ptnet_nmreq_port_info_get: nr_rx_slots");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_tx_rings) == 16, "struct ptnet_nmreq_port_info_get: nr_tx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_rx_rings) == 18, "struct ptnet_nmreq_port_info_get: nr_rx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_host_tx_rings) == 20, "struct ptnet_nmreq_port_info_get: nr_host_tx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_host_rx_rings) == 22, "struct ptnet_nmreq_port_info_get: nr_host_rx_rings");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, nr_mem_id) == 24, "struct ptnet_nmreq_port_info_get: nr_mem_id");
_Static_assert(offsetof(struct ptnet_nmreq_port_info_get, pad) == 26, "struct ptnet_nmreq_port_info_get: pad");
_Static_assert(sizeof(struct ptnet_nmreq_pools_info) == 64, "struct ptnet_nmreq_pools_info: size");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_memsize) == 0, "struct ptnet_nmreq_pools_info: nr_memsize");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_mem_id) == 8, "struct ptnet_nmreq_pools_info: nr_mem_id");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, pad1) == 10, "struct ptnet_nmreq_pools_info: pad1");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_if_pool_offset) == 16, "struct ptnet_nmreq_pools_info: nr_if_pool_offset");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_if_pool_objtotal) == 24, "struct ptnet_nmreq_pools_info: nr_if_pool_objtotal");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_if_pool_objsize) == 28, "struct ptnet_nmreq_pools_info: nr_if_pool_objsize");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_ring_pool_offset) == 32, "struct ptnet_nmreq_pools_info: nr_ring_pool_offset");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_ring_pool_objtotal) == 40, "struct ptnet_nmreq_pools_info: nr_ring_pool_objtotal");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_ring_pool_objsize) == 44, "struct ptnet_nmreq_pools_info: nr_ring_pool_objsize");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_buf_pool_offset) == 48, "struct ptnet_nmreq_pools_info: nr_buf_pool_offset");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_buf_pool_objtotal) == 56, "struct ptnet_nmreq_pools_info: nr_buf_pool_objtotal");
_Static_assert(offsetof(struct ptnet_nmreq_pools_info, nr_buf_pool_objsize) == 60, "struct ptnet_nmreq_pools_info: nr_buf_pool_objsize");
_Static_assert(sizeof(struct ptnet_nmreq_option) == 24, "struct ptnet_nmreq_option: size");
_Static_assert(offsetof(struct ptnet_nmreq_option, nro_next) == 0, "struct ptnet_nmreq_option: nro_next");
_Static_assert(offsetof(struct ptnet_nmreq_option, nro_reqtype) == 8, "struct ptnet_nmreq_option: nro_reqtype");
_Static_assert(offsetof(struct ptnet_nmreq_option, nro_status) == 12, "struct ptnet_nmreq_option: nro_status");
_Static_assert(offsetof(struct ptnet_nmreq_option, nro_size) == 16, "struct ptnet_nmreq_option: nro_size");
_Static_assert(sizeof(struct ptnet_nmreq_port_hdr) == 8, "struct ptnet_nmreq_port_hdr: size");
_Static_assert(offsetof(struct ptnet_nmreq_port_hdr, nr_hdr_len) == 0, "struct ptnet_nmreq_port_hdr: nr_hdr_len");
_Static_assert(offsetof(struct ptnet_nmreq_port_hdr, pad) == 4, "struct ptnet_nmreq_port_hdr: pad");
_Static_assert(sizeof(struct ptnet_csb_atok) == 64, "struct ptnet_csb_atok: size");
_Static_assert(offsetof(struct ptnet_csb_atok, head) == 0, "struct ptnet_csb_atok: head");
_Static_assert(offsetof(struct ptnet_csb_atok, cur) == 4, "struct ptnet_csb_atok: cur");
_Static_assert(offsetof(struct ptnet_csb_atok, appl_need_kick) == 8, "struct ptnet_csb_atok: appl_need_kick");
_Static_assert(offsetof(struct ptnet_csb_atok, sync_flags) == 12, "struct ptnet_csb_atok: sync_flags");
_Static_assert(offsetof(struct ptnet_csb_atok, pad) == 16, "struct ptnet_csb_atok: pad");
_Static_assert(sizeof(struct ptnet_csb_ktoa) == 64, "struct ptnet_csb_ktoa: size");
_Static_assert(offsetof(struct ptnet_csb_ktoa, hwcur) == 0, "struct ptnet_csb_ktoa: hwcur");
_Static_assert(offsetof(struct ptnet_csb_ktoa, hwtail) == 4, "struct ptnet_csb_ktoa: hwtail");
_Static_assert(offsetof(struct ptnet_csb_ktoa, kern_need_kick) == 8, "struct ptnet_csb_ktoa: kern_need_kick");
_Static_assert(offsetof(struct ptnet_csb_ktoa, pad) == 12, "struct ptnet_csb_ktoa: pad");
_Static_assert(sizeof(struct ptnet_config) == 64, "struct ptnet_config: size");
_Static_assert(offsetof(struct ptnet_config, mac) == 0, "struct ptnet_config: mac");
_Static_assert(offsetof(struct ptnet_config, status) == 6, "struct ptnet_config: status");
_Static_assert(offsetof(struct ptnet_config, num_tx_rings) == 8, "struct ptnet_config: num_tx_rings");
_Static_assert(offsetof(struct ptnet_config, num_rx_rings) == 12, "struct ptnet_config: num_rx_rings");
_Static_assert(offsetof(struct ptnet_config, num_tx_slots) == 16, "struct ptnet_config: num_tx_slots");
_Static_assert(offsetof(struct ptnet_config, num_rx_slots) == 20, "struct ptnet_config: num_rx_slots");
_Static_assert(offsetof(struct ptnet_config, nifp_offset) == 24, "struct ptnet_config: nifp_offset");
_Static_assert(offsetof(struct ptnet_config, mem_size) == 32, "struct ptnet_config: mem_size");
_Static_assert(offsetof(struct ptnet_config, mem_id) == 40, "struct ptnet_config: mem_id");
_Static_assert(offsetof(struct ptnet_config, vnet_hdr_len) == 42, "struct ptnet_config: vnet_hdr_len");
_Static_assert(offsetof(struct ptnet_config, buf_size) == 44, "struct ptnet_config: buf_size");
_Static_assert(offsetof(struct ptnet_config, csb_atok_gpa) == 48, "struct ptnet_config: csb_atok_gpa");
_Static_assert(offsetof(struct ptnet_config, csb_ktoa_gpa) == 56, "struct ptnet_config: csb_ktoa_gpa");
_Static_assert(sizeof(struct ptnet_ivshmem_dir) == 32, "struct ptnet_ivshmem_dir: size");
_Static_assert(offsetof(struct ptnet_ivshmem_dir, signature) == 0, "struct ptnet_ivshmem_dir: signature");
_Static_assert(offsetof(struct ptnet_ivshmem_dir, version) == 8, "struct ptnet_ivshmem_dir: version");
_Static_assert(offsetof(struct ptnet_ivshmem_dir, block_size) == 12, "struct ptnet_ivshmem_dir: block_size");
_Static_assert(offsetof(struct ptnet_ivshmem_dir, blocks_offset) == 16, "struct ptnet_ivshmem_dir: blocks_offset");
_Static_assert(offsetof(struct ptnet_ivshmem_dir, num_blocks) == 24, "struct ptnet_ivshmem_dir: num_blocks");
_Static_assert(offsetof(struct ptnet_ivshmem_dir, reserved) == 28, "struct ptnet_ivshmem_dir: reserved");
_Static_assert(sizeof(struct ptnet_ivshmem_header) == 96, "struct ptnet_ivshmem_header: size");
_Static_assert(offsetof(struct ptnet_ivshmem_header, signature) == 0, "struct ptnet_ivshmem_header: signature");
_Static_assert(offsetof(struct ptnet_ivshmem_header, peer_id) == 8, "struct ptnet_ivshmem_header: peer_id");
_Static_assert(offsetof(struct ptnet_ivshmem_header, daemon_peer) == 10, "struct ptnet_ivshmem_header: daemon_peer");
_Static_assert(offsetof(struct ptnet_ivshmem_header, num_vectors) == 12, "struct ptnet_ivshmem_header: num_vectors");
_Static_assert(offsetof(struct ptnet_ivshmem_header, ctrl_vector) == 14, "struct ptnet_ivshmem_header: ctrl_vector");
_Static_assert(offsetof(struct ptnet_ivshmem_header, device_features) == 16, "struct ptnet_ivshmem_header: device_features");
_Static_assert(offsetof(struct ptnet_ivshmem_header, driver_features) == 20, "struct ptnet_ivshmem_header: driver_features");
_Static_assert(offsetof(struct ptnet_ivshmem_header, driver_status) == 24, "struct ptnet_ivshmem_header: driver_status");
_Static_assert(offsetof(struct ptnet_ivshmem_header, generation) == 28, "struct ptnet_ivshmem_header: generation");
_Static_assert(offsetof(struct ptnet_ivshmem_header, config) == 32, "struct ptnet_ivshmem_header: config");
_Static_assert(sizeof(struct ptnet_vnet_hdr) == 12, "struct ptnet_vnet_hdr: size");
_Static_assert(offsetof(struct ptnet_vnet_hdr, flags) == 0, "struct ptnet_vnet_hdr: flags");
_Static_assert(offsetof(struct ptnet_vnet_hdr, gso_type) == 1, "struct ptnet_vnet_hdr: gso_type");
_Static_assert(offsetof(struct ptnet_vnet_hdr, hdr_len) == 2, "struct ptnet_vnet_hdr: hdr_len");
_Static_assert(offsetof(struct ptnet_vnet_hdr, gso_size) == 4, "struct ptnet_vnet_hdr: gso_size");
_Static_assert(offsetof(struct ptnet_vnet_hdr, csum_start) == 6, "struct ptnet_vnet_hdr: csum_start");
_Static_assert(offsetof(struct ptnet_vnet_hdr, csum_offset) == 8, "struct ptnet_vnet_hdr: csum_offset");
_Static_assert(offsetof(struct ptnet_vnet_hdr, num_buffers) == 10, "struct ptnet_vnet_hdr: num_buffers");
#endif /* !PTNET_SPEC_NO_ASSERTS */

#endif /* !PTNET_SPEC_H */
