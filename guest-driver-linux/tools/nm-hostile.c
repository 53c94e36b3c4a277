/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * nm-hostile: a netmap application that lies. It is the guest-side hostile test of the
 * ptnet driver (tier 3): everything a guest application can reach is filled with garbage
 * between syncs, and the driver must survive it (no oops, no hang, no access outside the
 * port's region) while the host keeps serving the port.
 *
 *   nm-hostile PORT [-n ROUNDS] [-s SEED]
 *   nm-hostile PORT -v [-n FRAMES] [-s SEED]
 *   nm-hostile --ivshmem [-n ROUNDS] [-s SEED]
 *
 * For ROUNDS rounds (default 20000) it picks one of: random head/cur/tail on a random ring;
 * random buf_idx/len/flags (NS_MOREFRAG included) on random slots; random bytes over a
 * ring's header (including buf_ofs and num_slots) or over the netmap_if (ring offsets);
 * then NIOCTXSYNC, NIOCRXSYNC or a zero-timeout poll(). Malformed NIOCCTRL requests (bad
 * version, reserved bits, options, unknown request types, overlong and unterminated names,
 * bodies at bad addresses, a second REGISTER) are sent along the way; each must fail with
 * an error, never succeed. Prints "nm-hostile: N rounds, E sync errors, R requests
 * refused, A accepted" and exits 0 if no malformed request was accepted (a crash never
 * returns).
 *
 * With -v (a port that carries the virtio-net header, registered with NR_ACCEPT_VNET_HDR)
 * it is a hostile peer instead: it broadcasts FRAMES TCP/IPv4 frames (to 10.0.0.1, of
 * random lengths and TCP fields) behind garbage virtio-net headers (random flags, GSO
 * types valid and not, GSO sizes, checksum offsets inside, at and beyond the frame), which
 * the switch carries unchanged to receivers with the header: their drivers must refuse or
 * survive every one. Prints "nm-hostile: N frames behind garbage headers".
 *
 * With --ivshmem it is a hostile guest at the device level instead (root, no driver bound):
 * see ivshmem_garbage().
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
#include <unistd.h>

#include "ptnet_spec.h"

#define NETMAP_IF(base, ofs) \
	((struct ptnet_nm_if *)(void *)((char *)(base) + (ofs)))

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
/* Malformed requests the kernel accepted: each one is a failure. */
static unsigned long accepted;

static uint64_t
rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (rng_state * 0x2545f4914f6cdd1dull);
}

static void
die(const char *what)
{
	fprintf(stderr, "nm-hostile: %s: %s\n", what, strerror(errno));
	exit(2);
}

/* A request header for PORT, version and type as given. */
static void
hdr_init(struct ptnet_nmreq_header *h, const char *port, uint16_t type, void *body)
{
	memset(h, 0, sizeof(*h));
	h->nr_version = PTNET_NETMAP_API;
	h->nr_reqtype = type;
	snprintf((char *)h->nr_name, sizeof(h->nr_name), "%s", port);
	h->nr_body = (uint64_t)(uintptr_t)body;
}

/* Sends malformed control requests; returns how many were refused (all should be). */
static unsigned long
bad_requests(int fd, const char *port)
{
	struct ptnet_nmreq_header h;
	struct ptnet_nmreq_register reg;
	unsigned long refused = 0, sent = 0;
	int i;

#define TRY(expr)                                                           \
	do {                                                                \
		sent++;                                                     \
		if ((expr) != 0)                                            \
			refused++;                                          \
		else {                                                      \
			accepted++;                                         \
			fprintf(stderr, "nm-hostile: request at line %d "   \
			    "was accepted\n", __LINE__);                    \
		}                                                           \
	} while (0)

	memset(&reg, 0, sizeof(reg));
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, &reg);
	h.nr_version = 1;
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, &reg);
	h.nr_reserved = 7;
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, &reg);
	h.nr_options = 0x1000;
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, 200, &reg);
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, PTNET_NETMAP_REQ_VALE_ATTACH, &reg);
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, (void *)(uintptr_t)0x10);
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, (void *)(uintptr_t)-8);
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, &reg);
	memset(h.nr_name, 'x', sizeof(h.nr_name)); /* no terminator */
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, "ptnet99", PTNET_NETMAP_REQ_REGISTER, &reg);
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	/* (eth0 may well be a port: the ptnet interface's name.) */
	hdr_init(&h, "nosuch0", PTNET_NETMAP_REQ_REGISTER, &reg);
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, &reg);
	reg.nr_mode = PTNET_NR_REG_PIPE_MASTER;
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	reg.nr_mode = PTNET_NR_REG_ONE_NIC;
	reg.nr_ringid = 63;
	TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	TRY(ioctl(fd, PTNET_NIOCCTRL, (void *)(uintptr_t)0x20));
	TRY(ioctl(fd, 0xdeadbeef, NULL));
	for (i = 0; i < 16; i++) {
		uint64_t words[(sizeof(h) + 7) / 8];
		unsigned int w;

		for (w = 0; w < sizeof(words) / 8; w++)
			words[w] = rnd();
		memcpy(&h, words, sizeof(h));
		h.nr_version = PTNET_NETMAP_API;
		h.nr_reqtype = PTNET_NETMAP_REQ_REGISTER;
		TRY(ioctl(fd, PTNET_NIOCCTRL, &h));
	}
	return (refused);
#undef TRY
}

#define VNET_HDR_LEN 12

/* A garbage virtio-net header: every field random, most of them near plausible values. */
static void
garbage_hdr(uint8_t *h, unsigned int frame_len)
{
	static const uint8_t gso[] = { 0, 1, 3, 4, 5, 0x81, 0x84, 0x80, 2, 0xff };
	uint16_t v[5];
	unsigned int i;

	h[0] = (uint8_t)(rnd() % 4 ? rnd() % 4 : rnd());
	h[1] = rnd() % 4 ? gso[rnd() % sizeof(gso)] : (uint8_t)rnd();
	v[0] = (uint16_t)rnd();                                      /* hdr_len */
	v[1] = (uint16_t)(rnd() % 4 ? rnd() % 2000 : rnd());        /* gso_size */
	v[2] = (uint16_t)(rnd() % 4 ? rnd() % (frame_len + 8) : rnd()); /* csum_start */
	v[3] = (uint16_t)(rnd() % 4 ? rnd() % 24 : rnd());          /* csum_offset */
	v[4] = (uint16_t)rnd();                                      /* num_buffers */
	for (i = 0; i < 5; i++) {
		h[2 + 2 * i] = (uint8_t)v[i];
		h[3 + 2 * i] = (uint8_t)(v[i] >> 8);
	}
	if (rnd() % 8 == 0) { /* now and then a consistent TCPv4 TSO header */
		h[0] = 1;
		h[1] = 1;
		h[6] = 34, h[7] = 0;  /* csum_start: Ethernet 14 + IPv4 20 */
		h[8] = 16, h[9] = 0;  /* csum_offset: TCP checksum */
	}
}

/* A broadcast TCP/IPv4 frame of `len` bytes to 10.0.0.1 with random TCP fields. */
static void
tcp_frame(uint8_t *f, unsigned int len)
{
	static const uint8_t eth[14] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0x02, 0x70, 0x74, 0x00, 0x00, 0x66, 0x08, 0x00 };
	unsigned int i, ip_len = len > 14 ? len - 14 : 0;

	for (i = 0; i < len; i++)
		f[i] = (uint8_t)rnd();
	memcpy(f, eth, len < 14 ? len : 14);
	if (len < 34)
		return;
	f[14] = 0x45, f[15] = 0;
	f[16] = (uint8_t)(ip_len >> 8), f[17] = (uint8_t)ip_len;
	f[20] = 0x40, f[21] = 0;      /* DF */
	f[22] = 64, f[23] = 6;        /* TTL, TCP */
	f[24] = f[25] = 0;            /* checksum: left wrong, as garbage may be */
	f[26] = 10, f[27] = 0, f[28] = 0, f[29] = 66;
	f[30] = 10, f[31] = 0, f[32] = 0, f[33] = 1;
	if (len >= 54)
		f[46] = 0x50;             /* TCP data offset 5 */
}

/* -v: FRAMES frames behind garbage virtio-net headers on TX ring 0. */
static int
vnet_garbage(const char *port, unsigned long frames)
{
	struct ptnet_nmreq_header h;
	struct ptnet_nmreq_register reg;
	struct ptnet_nm_ring *ring;
	struct ptnet_nm_if *nifp;
	unsigned long sent = 0, waits = 0;
	void *mem;
	int fd;

	fd = open("/dev/netmap", O_RDWR);
	if (fd < 0)
		die("open /dev/netmap");
	memset(&reg, 0, sizeof(reg));
	reg.nr_mode = PTNET_NR_REG_ALL_NIC;
	reg.nr_flags = PTNET_NR_ACCEPT_VNET_HDR | PTNET_NR_TX_RINGS_ONLY;
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, &reg);
	if (ioctl(fd, PTNET_NIOCCTRL, &h) != 0)
		die("NIOCCTRL register with NR_ACCEPT_VNET_HDR");
	mem = mmap(NULL, reg.nr_memsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	nifp = NETMAP_IF(mem, reg.nr_offset);
	ring = (struct ptnet_nm_ring *)(void *)((char *)nifp + nifp->ring_ofs[0]);
	while (sent < frames) {
		struct ptnet_nm_slot *slot;
		unsigned int len, max;
		uint8_t *buf;

		if (ring->head == ring->tail) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			if (poll(&pfd, 1, 1000) <= 0 && ++waits > 10) {
				fprintf(stderr, "nm-hostile: TX ring stuck\n");
				return (1);
			}
			continue;
		}
		slot = &ring->slot[ring->head];
		buf = (uint8_t *)ring + ring->buf_ofs + (size_t)slot->buf_idx * ring->nr_buf_size;
		max = ring->nr_buf_size - VNET_HDR_LEN;
		if (max > 1514)
			max = 1514;
		len = rnd() % 8 ? 54 + (unsigned int)(rnd() % (max - 53)) :
		    (unsigned int)(rnd() % 60);
		tcp_frame(buf + VNET_HDR_LEN, len);
		garbage_hdr(buf, len);
		slot->len = (uint16_t)(VNET_HDR_LEN + len);
		slot->flags = 0;
		ring->head = ring->cur = ring->head + 1 == ring->num_slots ? 0 : ring->head + 1;
		sent++;
		if (sent % 64 == 0)
			ioctl(fd, PTNET_NIOCTXSYNC, NULL);
	}
	ioctl(fd, PTNET_NIOCTXSYNC, NULL);
	printf("nm-hostile: %lu frames behind garbage headers\n", sent);
	munmap(mem, reg.nr_memsize);
	close(fd);
	return (0);
}

/*
 * The hostile guest of the ivshmem transport (SPEC §6), as root in the guest with no driver
 * bound: finds QEMU's ivshmem-doorbell device (1af4:1110), enables it, maps its register
 * BAR and BAR 2 through sysfs, and for ROUNDS rounds rings the doorbell with random values
 * (bogus peers and vectors included), rings the device's own vectors (kicks and the control
 * vector) with random start and reset requests in the block, and writes random bytes over
 * its device block (header and CSB) and the directory. The device must refuse or survive
 * all of it, and serve the next VM normally. Prints "nm-hostile: ivshmem peer P, N rounds,
 * D doorbells".
 */
static int
sysfs_write(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0)
		return (-1);
	if (write(fd, value, strlen(value)) < 0) {
		close(fd);
		return (-1);
	}
	return (close(fd));
}

static int
read_hex(const char *path, unsigned long *v)
{
	char buf[32];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return (-1);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return (-1);
	buf[n] = 0;
	*v = strtoul(buf, NULL, 16);
	return (0);
}

static int
ivshmem_garbage(unsigned long rounds)
{
	char dev[256], path[320];
	struct ptnet_ivshmem_dir dir;
	struct ptnet_ivshmem_header hdr;
	unsigned long vendor, device, r, bells = 0;
	volatile uint32_t *regs;
	volatile uint8_t *bar2;
	uint64_t block;
	off_t size;
	int i, fd;

	dev[0] = 0;
	for (i = 0; i < 32 && !dev[0]; i++) {
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/0000:00:%02x.0/vendor", i);
		if (read_hex(path, &vendor) != 0 || vendor != PTNET_PCI_VENDOR_ID_IVSHMEM)
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/0000:00:%02x.0/device", i);
		if (read_hex(path, &device) == 0 && device == PTNET_PCI_DEVICE_ID_IVSHMEM)
			snprintf(dev, sizeof(dev), "/sys/bus/pci/devices/0000:00:%02x.0", i);
	}
	if (!dev[0]) {
		fprintf(stderr, "nm-hostile: no ivshmem device on bus 0\n");
		return (2);
	}
	snprintf(path, sizeof(path), "%s/enable", dev);
	if (sysfs_write(path, "1") != 0)
		die("enable the device");
	snprintf(path, sizeof(path), "%s/resource0", dev);
	if ((fd = open(path, O_RDWR | O_SYNC)) < 0)
		die("open resource0");
	regs = mmap(NULL, 256, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (regs == MAP_FAILED)
		die("mmap resource0");
	snprintf(path, sizeof(path), "%s/resource2", dev);
	if ((fd = open(path, O_RDWR | O_SYNC)) < 0)
		die("open resource2");
	size = lseek(fd, 0, SEEK_END);
	bar2 = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (size < 8192 || bar2 == MAP_FAILED)
		die("mmap resource2");
	memcpy(&dir, (const void *)(bar2 + size - PTNET_IVSHMEM_DIR_SIZE), sizeof(dir));
	if (dir.signature != PTNET_IVSHMEM_DIR_SIGNATURE || regs[2] == 0 ||
	    regs[2] > dir.num_blocks) {
		fprintf(stderr, "nm-hostile: no ptnet directory for peer %u\n", regs[2]);
		return (2);
	}
	block = dir.blocks_offset + (uint64_t)(regs[2] - 1) * dir.block_size;
	memcpy(&hdr, (const void *)(bar2 + block), sizeof(hdr));
	printf("nm-hostile: ivshmem peer %u, block at %#llx, %u vectors\n", regs[2],
	    (unsigned long long)block, hdr.num_vectors);
	for (r = 0; r < rounds; r++) {
		uint64_t x = rnd();
		uint32_t v = (uint32_t)(x >> 32);

		switch (x % 6) {
		case 0:	/* anyone, any vector */
			regs[PTNET_IVSHMEM_REG_DOORBELL / 4] = v;
			bells++;
			break;
		case 1:	/* the daemon, any vector (kicks, control, beyond) */
			regs[PTNET_IVSHMEM_REG_DOORBELL / 4] =
			    (uint32_t)hdr.daemon_peer << 16 | (v & 0xff);
			bells++;
			break;
		case 2:	/* a start (features offered or not) or a reset, then the control vector */
			*(volatile uint32_t *)(bar2 + block + 20) = (x & 8) ? v & 3 : v;
			*(volatile uint32_t *)(bar2 + block + 24) = v & 1;
			regs[PTNET_IVSHMEM_REG_DOORBELL / 4] =
			    (uint32_t)hdr.daemon_peer << 16 | hdr.ctrl_vector;
			bells++;
			break;
		case 3:	/* the header page */
			bar2[block + v % PTNET_IVSHMEM_HDR_SIZE] = (uint8_t)x;
			break;
		case 4:	/* the CSB */
			bar2[block + PTNET_IVSHMEM_HDR_SIZE +
			    v % (dir.block_size - PTNET_IVSHMEM_HDR_SIZE)] = (uint8_t)x;
			break;
		default:	/* the directory */
			bar2[size - PTNET_IVSHMEM_DIR_SIZE + v % PTNET_IVSHMEM_DIR_SIZE] = (uint8_t)x;
			break;
		}
	}
	printf("nm-hostile: ivshmem peer %u, %lu rounds, %lu doorbells\n", regs[2], rounds, bells);
	return (0);
}

int
main(int argc, char **argv)
{
	struct ptnet_nmreq_header h;
	struct ptnet_nmreq_register reg;
	unsigned long rounds = 20000, r, errors = 0, refused = 0;
	struct ptnet_nm_if *nifp;
	const char *port;
	uint32_t nrings, k;
	void *mem;
	int fd, c, vnet = 0;

	if (argc < 2)
		goto usage;
	port = argv[1];
	if (strcmp(port, "--ivshmem") == 0) {
		optind = 2;
		while ((c = getopt(argc, argv, "n:s:")) != -1) {
			if (c == 'n')
				rounds = strtoul(optarg, NULL, 0);
			else if (c == 's')
				rng_state = strtoull(optarg, NULL, 0) | 1;
			else
				goto usage;
		}
		return (ivshmem_garbage(rounds));
	}
	if (strncmp(port, "netmap:", 7) == 0)
		port += 7;
	optind = 2;
	while ((c = getopt(argc, argv, "n:s:v")) != -1) {
		switch (c) {
		case 'v':
			vnet = 1;
			break;
		case 'n':
			rounds = strtoul(optarg, NULL, 0);
			break;
		case 's':
			rng_state = strtoull(optarg, NULL, 0) | 1;
			break;
		default:
			goto usage;
		}
	}

	if (vnet)
		return (vnet_garbage(port, rounds));
	fd = open("/dev/netmap", O_RDWR);
	if (fd < 0)
		die("open /dev/netmap");
	/* Before registering: syncs, poll and mmap must fail cleanly. */
	if (ioctl(fd, PTNET_NIOCTXSYNC, NULL) == 0 || ioctl(fd, PTNET_NIOCRXSYNC, NULL) == 0) {
		fprintf(stderr, "nm-hostile: a sync before REGISTER succeeded\n");
		return (1);
	}
	if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED) {
		fprintf(stderr, "nm-hostile: mmap before REGISTER succeeded\n");
		return (1);
	}
	refused += bad_requests(fd, port);

	memset(&reg, 0, sizeof(reg));
	reg.nr_mode = PTNET_NR_REG_ALL_NIC;
	hdr_init(&h, port, PTNET_NETMAP_REQ_REGISTER, &reg);
	if (ioctl(fd, PTNET_NIOCCTRL, &h) != 0)
		die("NIOCCTRL register");
	/* Too big, at an offset: refused. */
	if (mmap(NULL, reg.nr_memsize + 2 * 4096, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED ||
	    mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 4096) != MAP_FAILED) {
		fprintf(stderr, "nm-hostile: an oversized or offset mmap succeeded\n");
		return (1);
	}
	mem = mmap(NULL, reg.nr_memsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	nifp = NETMAP_IF(mem, reg.nr_offset);
	nrings = reg.nr_tx_rings + reg.nr_rx_rings;
	/* Keep the ring pointers now: the garbage below rewrites ring_ofs[]. */
	struct ptnet_nm_ring *rings[128];
	for (k = 0; k < nrings && k < 128; k++)
		rings[k] = (struct ptnet_nm_ring *)(void *)((char *)nifp + nifp->ring_ofs[k]);
	/* A second REGISTER on the same file: refused. */
	if (ioctl(fd, PTNET_NIOCCTRL, &h) == 0) {
		fprintf(stderr, "nm-hostile: a second REGISTER succeeded\n");
		return (1);
	}

	for (r = 0; r < rounds; r++) {
		struct ptnet_nm_ring *ring = rings[rnd() % nrings];
		uint32_t n = reg.nr_tx_slots > reg.nr_rx_slots ? reg.nr_tx_slots : reg.nr_rx_slots;
		struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLOUT };
		int ret = 0;

		switch (rnd() % 6) {
		case 0: /* indices, mostly near the ring, sometimes anything */
			ring->head = (uint32_t)(rnd() % 4 ? rnd() % (n + 4) : rnd());
			ring->cur = (uint32_t)(rnd() % 4 ? rnd() % (n + 4) : rnd());
			ring->tail = (uint32_t)rnd();
			break;
		case 1: { /* slots */
			uint32_t s = (uint32_t)(rnd() % n), j;

			for (j = 0; j < 64; j++) {
				struct ptnet_nm_slot *slot = &ring->slot[(s + j) % n];

				slot->buf_idx = (uint32_t)(rnd() % 3 ? rnd() % 8192 : rnd());
				slot->len = (uint16_t)rnd();
				slot->flags = (uint16_t)(rnd() % 2 ? PTNET_NS_MOREFRAG : rnd());
			}
			ring->head = (uint32_t)(rnd() % n);
			ring->cur = ring->head;
			break;
		}
		case 2: /* the ring header itself */
			((uint64_t *)(void *)ring)[rnd() % 16] = rnd();
			break;
		case 3: /* the netmap_if: ring offsets */
			nifp->ring_ofs[rnd() % nrings] = (int64_t)rnd();
			break;
		default:
			break;
		}
		switch (rnd() % 3) {
		case 0:
			ret = ioctl(fd, PTNET_NIOCTXSYNC, NULL);
			break;
		case 1:
			ret = ioctl(fd, PTNET_NIOCRXSYNC, NULL);
			break;
		default:
			ret = poll(&pfd, 1, 0) < 0;
			break;
		}
		if (ret != 0)
			errors++;
		if (r % 5000 == 4999)
			refused += bad_requests(fd, port);
	}
	printf("nm-hostile: %lu rounds, %lu sync errors, %lu requests refused, %lu accepted\n",
	    rounds, errors, refused, accepted);
	munmap(mem, reg.nr_memsize);
	close(fd);
	return (accepted == 0 ? 0 : 1);
usage:
	fprintf(stderr, "usage: nm-hostile PORT [-v] [-n ROUNDS] [-s SEED]\n"
	    "       nm-hostile --ivshmem [-n ROUNDS] [-s SEED]\n");
	return (2);
}
