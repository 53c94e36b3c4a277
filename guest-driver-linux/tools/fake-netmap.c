/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fake-netmap.so: an LD_PRELOAD stand-in for /dev/netmap, to run netmap applications
 * (nm-tx-rx, ptnet-pktgen -i netmap:NAME) natively on a host without netmap. Used by
 * host-test.sh; never installed anywhere.
 *
 * open("/dev/netmap") returns a memfd. NIOCCTRL NETMAP_REQ_REGISTER of $FAKE_NETMAP_NAME
 * (default ptnet0) lays a region out in it the way netmap does, with deliberate twists an
 * application must cope with: the netmap_if is not at offset 0, the RX ring lies before the
 * TX ring, and the port reports one host ring pair (not bound: ring_ofs 0), so the RX ring
 * is only found with NETMAP_RXRING's "+ ni_host_tx_rings" rule. txsync appends the slots in
 * [hwcur, head) to the file $FAKE_NETMAP_WIRE (len, flags, bytes); rxsync releases
 * [hwcur, head) and fills free RX slots from that file, so "tx" in one process and "rx" in
 * the next exchange frames. poll() syncs (the implicit txsync included), reports POLLOUT
 * when TX cur != tail and POLLIN when RX cur != tail, and sleeps at most 10 ms. Head and
 * cur are checked as netmap's prologues do; a bad one fails the ioctl with EINVAL.
 */

#define _GNU_SOURCE
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ptnet_spec.h"

#define NIFP_OFS	1024
#define RX_RING_OFS	8192
#define TX_RING_OFS	(RX_RING_OFS + 8 * 4096)
#define POOL_OFS	(TX_RING_OFS + 8 * 4096)
#define BUF_SIZE	2048
#define MAX_SLOTS	1024

static int nm_fd = -1;
static uint8_t *mem;
static uint32_t nbufs;
static struct ptnet_nm_ring *txr, *rxr;
/* The kernel's own copies of the ring indices (never read back from the region). */
static uint32_t tx_hwcur, tx_hwtail, rx_hwcur, rx_hwtail;
static FILE *wire_out, *wire_in;

static void *
real(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);

	if (f == NULL) {
		fprintf(stderr, "fake-netmap: no %s\n", name);
		abort();
	}
	return (f);
}

static int
fake_open(const char *path)
{
	if (strcmp(path, "/dev/netmap") != 0)
		return (-2);
	if (nm_fd >= 0) {
		errno = EBUSY;	/* one open file per process is all the tests need */
		return (-1);
	}
	nm_fd = memfd_create("fake-netmap", MFD_CLOEXEC);
	return (nm_fd);
}

static mode_t
mode_arg(int flags, va_list ap)
{
	return ((flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0);
}

#define OPEN_WRAPPER(name)                                                  \
int                                                                         \
name(const char *path, int flags, ...)                                      \
{                                                                           \
	int (*f)(const char *, int, ...) = real(#name);                     \
	va_list ap;                                                         \
	mode_t mode;                                                        \
	int fd = fake_open(path);                                           \
                                                                            \
	if (fd != -2)                                                       \
		return (fd);                                                \
	va_start(ap, flags);                                                \
	mode = mode_arg(flags, ap);                                         \
	va_end(ap);                                                         \
	return (f(path, flags, mode));                                      \
}

#define OPENAT_WRAPPER(name)                                                \
int                                                                         \
name(int dirfd, const char *path, int flags, ...)                           \
{                                                                           \
	int (*f)(int, const char *, int, ...) = real(#name);                \
	va_list ap;                                                         \
	mode_t mode;                                                        \
	int fd = fake_open(path);                                           \
                                                                            \
	if (fd != -2)                                                       \
		return (fd);                                                \
	va_start(ap, flags);                                                \
	mode = mode_arg(flags, ap);                                         \
	va_end(ap);                                                         \
	return (f(dirfd, path, flags, mode));                               \
}

OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

static uint32_t
next(uint32_t i, uint32_t n)
{
	return (i + 1 == n ? 0 : i + 1);
}

static uint32_t
dist(uint32_t from, uint32_t to, uint32_t n)
{
	return (to >= from ? to - from : to + n - from);
}

static uint8_t *
buf(const struct ptnet_nm_ring *ring, uint32_t idx)
{
	return ((uint8_t *)ring + ring->buf_ofs + (size_t)idx * BUF_SIZE);
}

static struct ptnet_nm_ring *
ring_init(size_t ofs, uint16_t dir, uint32_t slots, uint32_t first_buf)
{
	struct ptnet_nm_ring *r = (struct ptnet_nm_ring *)(void *)(mem + ofs);
	uint32_t i;

	r->buf_ofs = (int64_t)POOL_OFS - (int64_t)ofs;
	r->num_slots = slots;
	r->nr_buf_size = BUF_SIZE;
	r->dir = dir;
	r->head = r->cur = 0;
	r->tail = dir == PTNET_NR_TX ? slots - 1 : 0;
	for (i = 0; i < slots; i++)
		r->slot[i].buf_idx = first_buf + i;
	return (r);
}

static int
fail(int e)
{
	errno = e;
	return (-1);
}

static int
do_register(struct ptnet_nmreq_header *h)
{
	struct ptnet_nmreq_register *req;
	struct ptnet_nm_if *nifp;
	const char *name = getenv("FAKE_NETMAP_NAME");
	const char *s = getenv("FAKE_NETMAP_SLOTS");
	uint32_t slots = s != NULL ? (uint32_t)atoi(s) : 64;
	size_t size;

	if (name == NULL)
		name = "ptnet0";
	if (h->nr_version != PTNET_NETMAP_API ||
	    h->nr_reqtype != PTNET_NETMAP_REQ_REGISTER || h->nr_body == 0 ||
	    h->nr_options != 0 || memchr(h->nr_name, 0, sizeof(h->nr_name)) == NULL)
		return (fail(EINVAL));
	if (strcmp((const char *)h->nr_name, name) != 0)
		return (fail(ENXIO));
	req = (struct ptnet_nmreq_register *)(uintptr_t)h->nr_body;
	if (req->nr_mode != PTNET_NR_REG_ALL_NIC &&
	    req->nr_mode != PTNET_NR_REG_DEFAULT)
		return (fail(EOPNOTSUPP));
	if (mem != NULL || slots < 2 || slots > MAX_SLOTS)
		return (fail(EBUSY));
	nbufs = 2 + 2 * slots;
	size = POOL_OFS + (size_t)nbufs * BUF_SIZE;
	if (ftruncate(nm_fd, (off_t)size) != 0)
		return (-1);
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, nm_fd, 0);
	if (mem == MAP_FAILED) {
		mem = NULL;
		return (-1);
	}
	nifp = (struct ptnet_nm_if *)(void *)(mem + NIFP_OFS);
	strncpy((char *)nifp->ni_name, name, sizeof(nifp->ni_name) - 1);
	nifp->ni_version = PTNET_NETMAP_API;
	nifp->ni_tx_rings = 1;
	nifp->ni_rx_rings = 1;
	nifp->ni_host_tx_rings = 1;
	nifp->ni_host_rx_rings = 1;
	/* NIC TX, host TX (not bound), NIC RX, host RX (not bound). */
	nifp->ring_ofs[0] = TX_RING_OFS - NIFP_OFS;
	nifp->ring_ofs[1] = 0;
	nifp->ring_ofs[2] = RX_RING_OFS - NIFP_OFS;
	nifp->ring_ofs[3] = 0;
	txr = ring_init(TX_RING_OFS, PTNET_NR_TX, slots, 2);
	tx_hwtail = slots - 1;
	rxr = ring_init(RX_RING_OFS, PTNET_NR_RX, slots, 2 + slots);
	req->nr_offset = NIFP_OFS;
	req->nr_memsize = size;
	req->nr_tx_slots = req->nr_rx_slots = slots;
	req->nr_tx_rings = req->nr_rx_rings = 1;
	req->nr_host_tx_rings = req->nr_host_rx_rings = 1;
	req->nr_mem_id = 7;
	return (0);
}

static FILE *
wire(FILE **f, const char *mode)
{
	const char *path = getenv("FAKE_NETMAP_WIRE");

	if (*f == NULL && path != NULL)
		*f = fopen(path, mode);
	return (*f);
}

/* netmap's txsync prologue, then "transmit" [hwcur, head) onto the wire. */
static int
txsync(void)
{
	uint32_t n = txr->num_slots, head = txr->head, cur = txr->cur;
	FILE *w = wire(&wire_out, "ab");

	if (head >= n || cur >= n ||
	    dist(tx_hwcur, head, n) > dist(tx_hwcur, tx_hwtail, n) ||
	    dist(head, cur, n) > dist(head, tx_hwtail, n))
		return (fail(EINVAL));
	for (; tx_hwcur != head; tx_hwcur = next(tx_hwcur, n)) {
		struct ptnet_nm_slot *s = &txr->slot[tx_hwcur];
		uint16_t meta[2] = { s->len, s->flags };

		if (s->len > BUF_SIZE || s->buf_idx >= nbufs)
			return (fail(EINVAL));
		if (w != NULL && (fwrite(meta, sizeof(meta), 1, w) != 1 ||
		    fwrite(buf(txr, s->buf_idx), s->len, 1, w) != (s->len != 0)))
			return (fail(EIO));
	}
	if (w != NULL)
		fflush(w);
	tx_hwtail = tx_hwcur == 0 ? n - 1 : tx_hwcur - 1;
	txr->tail = tx_hwtail;
	return (0);
}

/* netmap's rxsync prologue, release [hwcur, head), then "receive" from the wire. */
static int
rxsync(void)
{
	uint32_t n = rxr->num_slots, head = rxr->head, cur = rxr->cur;
	FILE *w = wire(&wire_in, "rb");

	if (head >= n || cur >= n ||
	    dist(rx_hwcur, head, n) > dist(rx_hwcur, rx_hwtail, n) ||
	    dist(head, cur, n) > dist(head, rx_hwtail, n))
		return (fail(EINVAL));
	rx_hwcur = head;
	while (w != NULL && next(rx_hwtail, n) != rx_hwcur) {
		struct ptnet_nm_slot *s = &rxr->slot[rx_hwtail];
		uint16_t meta[2];

		if (fread(meta, sizeof(meta), 1, w) != 1)
			break;
		if (meta[0] > BUF_SIZE ||
		    fread(buf(rxr, s->buf_idx), meta[0], 1, w) != (meta[0] != 0))
			return (fail(EIO));
		s->len = meta[0];
		s->flags = meta[1];
		rx_hwtail = next(rx_hwtail, n);
	}
	rxr->tail = rx_hwtail;
	return (0);
}

int
ioctl(int fd, unsigned long request, ...)
{
	int (*f)(int, unsigned long, ...) = real("ioctl");
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (fd < 0 || fd != nm_fd)
		return (f(fd, request, arg));
	switch (request) {
	case PTNET_NIOCCTRL:
		return (do_register(arg));
	case PTNET_NIOCTXSYNC:
		return (mem == NULL ? fail(ENXIO) : txsync());
	case PTNET_NIOCRXSYNC:
		return (mem == NULL ? fail(ENXIO) : rxsync());
	default:
		return (fail(ENOTTY));
	}
}

int
poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
	int (*f)(struct pollfd *, nfds_t, int) = real("poll");
	short ev, rev = 0;

	if (nfds != 1 || fds[0].fd < 0 || fds[0].fd != nm_fd)
		return (f(fds, nfds, timeout));
	ev = fds[0].events;
	if (mem == NULL || txsync() != 0 || ((ev & POLLIN) && rxsync() != 0)) {
		fds[0].revents = POLLERR;
		return (1);
	}
	if ((ev & POLLOUT) && txr->cur != txr->tail)
		rev |= POLLOUT;
	if ((ev & POLLIN) && rxr->cur != rxr->tail)
		rev |= POLLIN;
	if (rev == 0 && timeout != 0)
		usleep((timeout < 0 || timeout > 10 ? 10 : timeout) * 1000);
	fds[0].revents = rev;
	return (rev != 0);
}
