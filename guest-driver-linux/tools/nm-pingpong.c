/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * nm-pingpong: round trips through netmap rings, written as netmap applications are
 * (against ptnet's generated ABI header only, like nm-tx-rx): one side pings, the other
 * echoes.
 *
 *   nm-pingpong ping PORT [-n COUNT] [-t SECONDS]
 *   nm-pingpong pong PORT [-n COUNT] [-t SECONDS]
 *
 * ping sends COUNT (default 1000) frames one at a time, each waiting at most a second for
 * its echo, and prints "nm-pingpong: N replies, L lost, rtt us min M p50 P max X". pong
 * echoes COUNT frames of ping's kind back to their sender and prints
 * "nm-pingpong: echoed N"; other frames are ignored. Both give up after SECONDS (default
 * 60). Like nm-tx-rx it asks the port's virtio-net header length and carries a zeroed
 * header when there is one.
 *
 * Frame: Ethernet to ff:ff:ff:ff:ff:ff from 02:6e:6d:00:00:02 (ping) or the ping's source
 * back to it from 02:6e:6d:00:00:03 (pong), EtherType 0x88b7, magic "nmpp", the sequence
 * number (32 bits, little endian); 60 bytes.
 *
 * Exit status: 0 if every ping was answered (ping) or COUNT echoes went out (pong), 1 if
 * not, 2 on a usage or set-up error.
 */

#include <sys/ioctl.h>
#include <sys/mman.h>

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

#define FRAME_TYPE	0x88b7
#define FRAME_LEN	60
#define MAX_COUNT	1000000

static void
usage(void)
{
	fprintf(stderr,
	    "usage: nm-pingpong ping|pong PORT [-n COUNT] [-t SECONDS]\n");
	exit(2);
}

static void
die(const char *what)
{
	fprintf(stderr, "nm-pingpong: %s: %s\n", what, strerror(errno));
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
		fprintf(stderr, "nm-pingpong: %s %s: a number in %lu..%lu\n", opt,
		    s, min, max);
		exit(2);
	}
	return (v);
}

static uint32_t
nm_ring_next(const struct ptnet_nm_ring *ring, uint32_t i)
{
	return (i + 1 == ring->num_slots ? 0 : i + 1);
}

/* The sequence number of a frame of ours, or -1. */
static long
seq_of(const uint8_t *p, unsigned len)
{
	if (len < FRAME_LEN || (p[12] << 8 | p[13]) != FRAME_TYPE ||
	    memcmp(p + 14, "nmpp", 4) != 0)
		return (-1);
	return ((long)(p[18] | p[19] << 8 | p[20] << 16 | (uint32_t)p[21] << 24));
}

struct port {
	int fd;
	struct ptnet_nm_ring *tx, *rx;
	uint32_t vh;	/* virtio-net header length */
};

/* Queues one frame (`f`, FRAME_LEN bytes) behind a zeroed header; 0 if the ring is full. */
static int
send_frame(struct port *p, const uint8_t *f)
{
	struct ptnet_nm_ring *r = p->tx;
	struct ptnet_nm_slot *s;

	if (r->cur == r->tail)
		return (0);
	s = &r->slot[r->cur];
	memset(NETMAP_BUF(r, s->buf_idx), 0, p->vh);
	memcpy(NETMAP_BUF(r, s->buf_idx) + p->vh, f, FRAME_LEN);
	s->len = p->vh + FRAME_LEN;
	s->flags = 0;
	r->head = r->cur = nm_ring_next(r, r->cur);
	if (ioctl(p->fd, PTNET_NIOCTXSYNC, NULL) != 0)
		die("NIOCTXSYNC");
	return (1);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return ((x > y) - (x < y));
}

int
main(int argc, char **argv)
{
	struct ptnet_nmreq_header hdr;
	struct ptnet_nmreq_register req;
	struct ptnet_nmreq_port_hdr ph;
	struct ptnet_nm_if *nifp;
	struct pollfd pfd;
	struct port p;
	const char *name;
	unsigned long count = 1000, secs = 60, done = 0, lost = 0;
	double deadline, *rtt;
	uint8_t frame[FRAME_LEN];
	void *mem;
	int ping, a;

	if (argc < 3)
		usage();
	if (strcmp(argv[1], "ping") == 0)
		ping = 1;
	else if (strcmp(argv[1], "pong") == 0)
		ping = 0;
	else
		usage();
	name = argv[2];
	if (strncmp(name, "netmap:", 7) == 0)
		name += 7;
	if (*name == '\0' || strlen(name) >= sizeof(hdr.nr_name))
		usage();
	for (a = 3; a < argc; a += 2) {
		if (a + 1 >= argc)
			usage();
		if (strcmp(argv[a], "-n") == 0)
			count = number("-n", argv[a + 1], 1, MAX_COUNT);
		else if (strcmp(argv[a], "-t") == 0)
			secs = number("-t", argv[a + 1], 1, 86400);
		else
			usage();
	}
	rtt = calloc(count, sizeof(*rtt));
	if (rtt == NULL)
		die("calloc");

	p.fd = open("/dev/netmap", O_RDWR);
	if (p.fd < 0)
		die("/dev/netmap");
	memset(&hdr, 0, sizeof(hdr));
	memset(&ph, 0, sizeof(ph));
	hdr.nr_version = PTNET_NETMAP_API;
	hdr.nr_reqtype = PTNET_NETMAP_REQ_PORT_HDR_GET;
	memcpy(hdr.nr_name, name, strlen(name));
	hdr.nr_body = (uintptr_t)&ph;
	p.vh = ioctl(p.fd, PTNET_NIOCCTRL, &hdr) == 0 ? ph.nr_hdr_len : 0;
	if (p.vh > 64) {
		fprintf(stderr, "nm-pingpong: %s: a %u-byte header?\n", name, p.vh);
		return (2);
	}
	memset(&hdr, 0, sizeof(hdr));
	memset(&req, 0, sizeof(req));
	hdr.nr_version = PTNET_NETMAP_API;
	hdr.nr_reqtype = PTNET_NETMAP_REQ_REGISTER;
	memcpy(hdr.nr_name, name, strlen(name));
	hdr.nr_body = (uintptr_t)&req;
	req.nr_mode = PTNET_NR_REG_ALL_NIC;
	if (p.vh != 0)
		req.nr_flags = PTNET_NR_ACCEPT_VNET_HDR;
	if (ioctl(p.fd, PTNET_NIOCCTRL, &hdr) != 0)
		die("NIOCCTRL register");
	mem = mmap(NULL, req.nr_memsize, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	nifp = NETMAP_IF(mem, req.nr_offset);
	p.tx = NETMAP_TXRING(nifp, 0);
	p.rx = NETMAP_RXRING(nifp, 0);
	if (p.vh + FRAME_LEN > p.tx->nr_buf_size) {
		fprintf(stderr, "nm-pingpong: %s: %u-byte buffers\n", name,
		    p.tx->nr_buf_size);
		return (2);
	}
	pfd.fd = p.fd;
	pfd.events = POLLIN;
	deadline = now() + secs;

	memset(frame, 0, sizeof(frame));
	memset(frame, 0xff, 6);
	memcpy(frame + 6, "\x02\x6e\x6d\x00\x00\x02", 6);
	frame[12] = FRAME_TYPE >> 8;
	frame[13] = FRAME_TYPE & 0xff;
	memcpy(frame + 14, "nmpp", 4);
	if (ping)
		fprintf(stderr, "nm-pingpong: pinging on %s (%u-byte header)\n", name, p.vh);
	else
		fprintf(stderr, "nm-pingpong: echoing on %s (%u-byte header)\n", name, p.vh);

	while (done + lost < count && now() < deadline) {
		double sent = 0;
		int answered = 0;

		if (ping) {
			unsigned long seq = done + lost;

			frame[18] = seq & 0xff;
			frame[19] = (seq >> 8) & 0xff;
			frame[20] = (seq >> 16) & 0xff;
			frame[21] = (seq >> 24) & 0xff;
			while (!send_frame(&p, frame))
				if (poll(&pfd, 1, 10) < 0 && errno != EINTR)
					die("poll");
			sent = now();
		}
		/* Receive until the echo (ping) or for a while (pong). */
		while (!answered && now() < deadline && (!ping || now() < sent + 1.0)) {
			struct ptnet_nm_ring *r = p.rx;
			uint32_t i;

			if (poll(&pfd, 1, 10) < 0 && errno != EINTR)
				die("poll");
			for (i = r->cur; i != r->tail; i = nm_ring_next(r, i)) {
				uint8_t *b = NETMAP_BUF(r, r->slot[i].buf_idx);
				unsigned len = r->slot[i].len;
				long seq;

				if (len < p.vh || len > r->nr_buf_size)
					continue;
				seq = seq_of(b + p.vh, len - p.vh);
				if (seq < 0)
					continue;
				if (ping) {
					if ((unsigned long)seq == done + lost) {
						rtt[done] = (now() - sent) * 1e6;
						answered = 1;
					}
				} else if (done < count) {
					uint8_t echo[FRAME_LEN];

					memcpy(echo, b + p.vh, FRAME_LEN);
					memcpy(echo, b + p.vh + 6, 6);
					memcpy(echo + 6, "\x02\x6e\x6d\x00\x00\x03", 6);
					while (!send_frame(&p, echo))
						if (poll(&pfd, 1, 10) < 0 && errno != EINTR)
							die("poll");
					done++;
				}
			}
			r->head = r->cur = r->tail;
			if (!ping && done >= count)
				break;
		}
		if (ping) {
			if (answered)
				done++;
			else
				lost++;
		}
	}
	if (ping) {
		qsort(rtt, done, sizeof(*rtt), cmp_double);
		printf("nm-pingpong: %lu replies, %lu lost, rtt us min %.1f p50 %.1f max %.1f\n",
		    done, lost, done ? rtt[0] : 0.0, done ? rtt[done / 2] : 0.0,
		    done ? rtt[done - 1] : 0.0);
		return (done == count ? 0 : 1);
	}
	printf("nm-pingpong: echoed %lu\n", done);
	return (done == count ? 0 : 1);
}
