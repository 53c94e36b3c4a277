/*
 * Compiled by tests/c_header.rs against the generated header. The header's own
 * _Static_asserts compare every size and offset with rustc's; the checks below compare the
 * header with facts that do not come from the Rust code at all (the C library's ioctl
 * encoding, netmap's documented constants).
 */
#include <sys/ioctl.h>
#include <stdio.h>

#include "ptnet_spec.h"

_Static_assert(PTNET_NIOCCTRL == _IOWR('i', 151, struct ptnet_nmreq_header), "NIOCCTRL");
_Static_assert(PTNET_NIOCTXSYNC == _IO('i', 148), "NIOCTXSYNC");
_Static_assert(PTNET_NIOCRXSYNC == _IO('i', 149), "NIOCRXSYNC");
_Static_assert(PTNET_NIOCCTRL == 0xC0586997u, "NIOCCTRL literal");
_Static_assert(sizeof(struct ptnet_config) == PTNET_CONFIG_SIZE, "config size");
_Static_assert(PTNET_PCI_DEVICE_ID_PTNET == 0x107f, "PCI device id");
_Static_assert(sizeof(struct ptnet_csb_atok) == PTNET_CSB_ENTRY_SIZE, "atok entry");
_Static_assert(sizeof(struct ptnet_csb_ktoa) == PTNET_CSB_ENTRY_SIZE, "ktoa entry");

int
main(void)
{
	/* Print what C computed, so the Rust side can compare it with its own numbers too. */
	printf("netmap_slot %zu\n", sizeof(struct ptnet_nm_slot));
	printf("netmap_ring %zu %zu\n", sizeof(struct ptnet_nm_ring),
	    offsetof(struct ptnet_nm_ring, slot));
	printf("netmap_if %zu %zu\n", sizeof(struct ptnet_nm_if),
	    offsetof(struct ptnet_nm_if, ring_ofs));
	printf("nmreq_header %zu\n", sizeof(struct ptnet_nmreq_header));
	printf("nmreq_register %zu\n", sizeof(struct ptnet_nmreq_register));
	printf("ptnet_config %zu\n", sizeof(struct ptnet_config));
	return (0);
}
