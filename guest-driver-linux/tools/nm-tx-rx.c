/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * nm-tx-rx: the smallest useful netmap application, written the way netmap applications
 * are written (open /dev/netmap, NIOCCTRL register, mmap, rings from nr_offset with
 * netmap's offset rules, slots, NIOCTXSYNC/NIOCRXSYNC, poll), but compiled against
 * ptnet's generated ABI header only: no netmap header, no ptnet private header. If it
 * works in a ptnet guest, the guest's ABI is netmap's.
 *
 *   nm-tx-rx tx PORT [-n COUNT] [-l LEN] [-r PPS] [-t SECONDS] [-w poll|select|epoll]
 *   nm-tx-rx rx PORT [-n COUNT] [-t SECONDS] [-w poll|select|epoll]
 *
 * -w picks how it waits for the rings (default poll): netmap applications use all three.
 * select and epoll leave the syncs to explicit NIOCTXSYNC/NIOCRXSYNC, as netmap's own
 * applications do with them.
 *
 * PORT is a port or interface name (ptnet0, eth0, vale0:a), optionally prefixed with
 * netmap:. It asks the port's virtio-net header length (NETMAP_REQ_PORT_HDR_GET) as
 * netmap applications do; with one, frames carry a zeroed header (tx) or have it skipped
 * (rx), and the registration says so (NR_ACCEPT_VNET_HDR). tx sends COUNT
 * (default 1000) frames of LEN (default 60) bytes, numbered from 0, optionally paced at
 * PPS frames per second, waits for the rings to drain and prints
 * "nm-tx-rx: tx N frames". rx receives COUNT frames, checks each one's payload pattern
 * and prints "nm-tx-rx: rx N frames, B bad"; frames of other EtherTypes are ignored
 * (counted on stderr). Both give up after SECONDS (default 60).
 *
 * Exit status: 0 if COUNT frames went out (tx) or came in with no bad one (rx), 1 if not,
 * 2 on a usage or set-up error.
 *
 * Frame: Ethernet to ff:ff:ff:ff:ff:ff from 02:6e:6d:00:00:01, EtherType 0x88b6 (local
 * experimental), magic "nmtr", the sequence number (32 bits, little endian), then byte i
 * of the frame is (seq + i) & 0xff up to LEN.
 */

#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/select.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ptnet_spec.h"

/* netmap_user.h's offset rules, with the generated structures. */
#define NETMAP_IF(base, ofs) \
	((struct ptnet_nm_if *)(void *)((char *)(base) + (ofs)))
#define NETMAP_TXRING(nifp, i) \
	((struct ptnet_nm_ring *)(void *)((char *)(nifp) + (nifp)->ring_ofs[(i)]))
#define NETMAP_RXRING(nifp, i)                                              \
	((struct ptnet_nm_ring *)(void *)((char *)(nifp) +                  \
	    (nifp)->ring_ofs[(i) + (nifp)->ni_tx_rings +                    \
	    (nifp)->ni_host_tx_rings]))
#define NETMAP_BUF(ring, idx) \
	((uint8_t *)(ring) + (ring)->buf_ofs + (size_t)(idx) * (ring)->nr_buf_size)

#define FRAME_TYPE	0x88b6
#define HDR_LEN		22	/* Ethernet 14, magic 4, sequence 4 */
#define MIN_LEN		60
#define NETMAP_DEV	"/dev/netmap"

static uint32_t
nm_ring_next(const struct ptnet_nm_ring *ring, uint32_t i)
{
	return (i + 1 == ring->num_slots ? 0 : i + 1);
}

/* Slots the application may use: tail - cur, modulo the ring. */
static uint32_t
nm_ring_space(const struct ptnet_nm_ring *ring)
{
	int64_t n = (int64_t)ring->tail - ring->cur;

	return (uint32_t)(n < 0 ? n + ring->num_slots : n);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: nm-tx-rx tx PORT [-n COUNT] [-l LEN] [-r PPS] [-t SECONDS] [-w WAIT]\n"
	    "       nm-tx-rx rx PORT [-n COUNT] [-t SECONDS] [-w WAIT]\n"
	    "       WAIT: poll (default), select or epoll\n");
	exit(2);
}

static void
die(const char *what)
{
	fprintf(stderr, "nm-tx-rx: %s: %s\n", what, strerror(errno));
	exit(2);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (ts.tv_sec + ts.tv_nsec / 1e9);
}

static unsigned long
number(const char *opt, const char *s, unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *s == '\0' || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "nm-tx-rx: %s %s: a number in %lu..%lu\n", opt, s,
		    min, max);
		exit(2);
	}
	return (v);
}

static void
fill(uint8_t *p, uint32_t seq, unsigned len)
{
	static const uint8_t hdr[14] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0x02, 0x6e, 0x6d, 0x00, 0x00, 0x01,
		FRAME_TYPE >> 8, FRAME_TYPE & 0xff,
	};
	unsigned i;

	memcpy(p, hdr, sizeof(hdr));
	memcpy(p + 14, "nmtr", 4);
	p[18] = seq & 0xff;
	p[19] = (seq >> 8) & 0xff;
	p[20] = (seq >> 16) & 0xff;
	p[21] = seq >> 24;
	for (i = HDR_LEN; i < len; i++)
		p[i] = (uint8_t)(seq + i);
}

/* 0: good, 1: not ours (another EtherType), -1: bad. */
static int
check(const uint8_t *p, unsigned len)
{
	uint32_t seq;
	unsigned i;

	if (len >= 14 && (p[12] << 8 | p[13]) != FRAME_TYPE)
		return (1);
	if (len < MIN_LEN || memcmp(p + 14, "nmtr", 4) != 0)
		return (-1);
	seq = p[18] | p[19] << 8 | p[20] << 16 | (uint32_t)p[21] << 24;
	for (i = HDR_LEN; i < len; i++)
		if (p[i] != (uint8_t)(seq + i))
			return (-1);
	return (0);
}

enum wait { WAIT_POLL, WAIT_SELECT, WAIT_EPOLL };

/*
 * Waits at most 100 ms for the rings: poll() syncs them itself; after select() or
 * epoll_wait() the caller syncs with NIOCTXSYNC/NIOCRXSYNC.
 */
static void
wait_rings(enum wait how, int fd, int ep, int tx)
{
	struct pollfd pfd = { .fd = fd, .events = tx ? POLLOUT : POLLIN };
	struct epoll_event ev;
	struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
	fd_set set;
	int r;

	switch (how) {
	case WAIT_POLL:
		r = poll(&pfd, 1, 100);
		if (r > 0 && (pfd.revents & (POLLERR | POLLNVAL))) {
			errno = EIO;
			die("poll");
		}
		break;
	case WAIT_SELECT:
		FD_ZERO(&set);
		FD_SET(fd, &set);
		r = select(fd + 1, tx ? NULL : &set, tx ? &set : NULL, NULL, &tv);
		break;
	default:
		r = epoll_wait(ep, &ev, 1, 100);
		break;
	}
	if (r < 0 && errno != EINTR)
		die(how == WAIT_POLL ? "poll" : how == WAIT_SELECT ? "select" : "epoll_wait");
	if (how != WAIT_POLL &&
	    ioctl(fd, tx ? PTNET_NIOCTXSYNC : PTNET_NIOCRXSYNC, NULL) != 0)
		die(tx ? "NIOCTXSYNC" : "NIOCRXSYNC");
}

int
main(int argc, char **argv)
{
	struct ptnet_nmreq_header hdr;
	struct ptnet_nmreq_register req;
	struct ptnet_nmreq_port_hdr ph;
	struct ptnet_nm_if *nifp;
	struct ptnet_nm_ring *ring;
	const char *port;
	unsigned long count = 1000, len = MIN_LEN, pps = 0, secs = 60;
	unsigned long done = 0, bad = 0, other = 0;
	double start, deadline;
	void *mem;
	uint32_t i, r, n, vh;
	enum wait how = WAIT_POLL;
	int fd, ep = -1, tx, a;

	if (argc < 3)
		usage();
	if (strcmp(argv[1], "tx") == 0)
		tx = 1;
	else if (strcmp(argv[1], "rx") == 0)
		tx = 0;
	else
		usage();
	port = argv[2];
	if (strncmp(port, "netmap:", 7) == 0)
		port += 7;
	if (*port == '\0' || strlen(port) >= sizeof(hdr.nr_name))
		usage();
	for (a = 3; a < argc; a += 2) {
		if (a + 1 >= argc)
			usage();
		if (strcmp(argv[a], "-n") == 0)
			count = number("-n", argv[a + 1], 1, UINT32_MAX);
		else if (strcmp(argv[a], "-l") == 0 && tx)
			len = number("-l", argv[a + 1], MIN_LEN, 65535);
		else if (strcmp(argv[a], "-r") == 0 && tx)
			pps = number("-r", argv[a + 1], 1, 100000000);
		else if (strcmp(argv[a], "-t") == 0)
			secs = number("-t", argv[a + 1], 1, 86400);
		else if (strcmp(argv[a], "-w") == 0 &&
		    strcmp(argv[a + 1], "poll") == 0)
			how = WAIT_POLL;
		else if (strcmp(argv[a], "-w") == 0 &&
		    strcmp(argv[a + 1], "select") == 0)
			how = WAIT_SELECT;
		else if (strcmp(argv[a], "-w") == 0 &&
		    strcmp(argv[a + 1], "epoll") == 0)
			how = WAIT_EPOLL;
		else
			usage();
	}

	fd = open(NETMAP_DEV, O_RDWR);
	if (fd < 0)
		die(NETMAP_DEV);
	/*
	 * The port's virtio-net header length, as netmap applications ask it
	 * (pkt-gen does): frames then start with that many bytes of header,
	 * and the registration says the application knows (NR_ACCEPT_VNET_HDR).
	 * A port that cannot say has none.
	 */
	memset(&hdr, 0, sizeof(hdr));
	memset(&ph, 0, sizeof(ph));
	hdr.nr_version = PTNET_NETMAP_API;
	hdr.nr_reqtype = PTNET_NETMAP_REQ_PORT_HDR_GET;
	memcpy(hdr.nr_name, port, strlen(port));
	hdr.nr_body = (uintptr_t)&ph;
	vh = ioctl(fd, PTNET_NIOCCTRL, &hdr) == 0 ? ph.nr_hdr_len : 0;
	if (vh > 64) {
		fprintf(stderr, "nm-tx-rx: %s: a %u-byte header?\n", port, vh);
		return (2);
	}
	memset(&hdr, 0, sizeof(hdr));
	memset(&req, 0, sizeof(req));
	hdr.nr_version = PTNET_NETMAP_API;
	hdr.nr_reqtype = PTNET_NETMAP_REQ_REGISTER;
	memcpy(hdr.nr_name, port, strlen(port));
	hdr.nr_body = (uintptr_t)&req;
	req.nr_mode = PTNET_NR_REG_ALL_NIC;
	if (vh != 0)
		req.nr_flags = PTNET_NR_ACCEPT_VNET_HDR;
	if (ioctl(fd, PTNET_NIOCCTRL, &hdr) != 0)
		die("NIOCCTRL register");
	mem = mmap(NULL, req.nr_memsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	nifp = NETMAP_IF(mem, req.nr_offset);
	if (nifp->ni_tx_rings != req.nr_tx_rings ||
	    nifp->ni_rx_rings != req.nr_rx_rings) {
		fprintf(stderr, "nm-tx-rx: %s: netmap_if has %u/%u rings, "
		    "NIOCCTRL said %u/%u\n", port, nifp->ni_tx_rings,
		    nifp->ni_rx_rings, req.nr_tx_rings, req.nr_rx_rings);
		return (2);
	}
	ring = tx ? NETMAP_TXRING(nifp, 0) : NETMAP_RXRING(nifp, 0);
	if (tx && vh + len > ring->nr_buf_size) {
		fprintf(stderr, "nm-tx-rx: -l %lu: buffers hold %u bytes\n", len,
		    ring->nr_buf_size);
		return (2);
	}
	fprintf(stderr, "nm-tx-rx: %s: %u TX and %u RX rings of %u/%u slots, "
	    "%u-byte buffers, %llu-byte region, mem id %u\n", port,
	    req.nr_tx_rings, req.nr_rx_rings, req.nr_tx_slots, req.nr_rx_slots,
	    ring->nr_buf_size, (unsigned long long)req.nr_memsize, req.nr_mem_id);

	start = now();
	deadline = start + secs;
	if (how == WAIT_EPOLL) {
		struct epoll_event ev = { .events = tx ? EPOLLOUT : EPOLLIN };

		ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
			die("epoll");
	}
	while (done < count && now() < deadline) {
		wait_rings(how, fd, ep, tx);
		for (r = 0; r < (tx ? nifp->ni_tx_rings : nifp->ni_rx_rings) &&
		    done < count; r++) {
			ring = tx ? NETMAP_TXRING(nifp, r) : NETMAP_RXRING(nifp, r);
			n = nm_ring_space(ring);
			if (n > count - done)
				n = count - done;
			if (tx && pps != 0) {
				double allowed = (now() - start) * pps + 1;

				if (done + n > allowed)
					n = allowed > done ? (uint32_t)(allowed - done) : 0;
			}
			i = ring->cur;
			for (; n > 0; n--, done++) {
				struct ptnet_nm_slot *slot = &ring->slot[i];
				uint8_t *buf = NETMAP_BUF(ring, slot->buf_idx);

				if (tx) {
					/* A zeroed header: no offload asked. */
					memset(buf, 0, vh);
					fill(buf + vh, (uint32_t)done, len);
					slot->len = vh + len;
					slot->flags = 0;
				} else if (slot->len > ring->nr_buf_size ||
				    slot->len < vh) {
					bad++;
				} else {
					switch (check(buf + vh, slot->len - vh)) {
					case 1:
						other++;
						done--;	/* not one of ours */
						break;
					case -1:
						bad++;
						break;
					}
				}
				i = nm_ring_next(ring, i);
			}
			/* Hand the slots over (tx) or give them back (rx). */
			ring->head = ring->cur = i;
		}
		if (tx && ioctl(fd, PTNET_NIOCTXSYNC, NULL) != 0)
			die("NIOCTXSYNC");
		if (tx && pps != 0 && done < count)
			usleep(1000);
	}
	if (tx) {
		/* Wait for the other side to take every queued slot. */
		for (;;) {
			int pending = 0;

			if (ioctl(fd, PTNET_NIOCTXSYNC, NULL) != 0)
				die("NIOCTXSYNC");
			for (r = 0; r < nifp->ni_tx_rings; r++) {
				ring = NETMAP_TXRING(nifp, r);
				if (nm_ring_next(ring, ring->tail) != ring->head)
					pending = 1;
			}
			if (!pending || now() >= deadline)
				break;
			usleep(1000);
		}
		printf("nm-tx-rx: tx %lu frames\n", done);
	} else {
		if (ioctl(fd, PTNET_NIOCRXSYNC, NULL) != 0)
			die("NIOCRXSYNC");
		if (other != 0)
			fprintf(stderr, "nm-tx-rx: %lu frames of other types "
			    "ignored\n", other);
		printf("nm-tx-rx: rx %lu frames, %lu bad\n", done, bad);
	}
	if (done < count)
		fprintf(stderr, "nm-tx-rx: %lu of %lu frames after %lu s\n", done,
		    count, secs);
	munmap(mem, req.nr_memsize);
	close(fd);
	return (done == count && bad == 0 ? 0 : 1);
}
