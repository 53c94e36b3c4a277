#!/usr/bin/env python3
"""Starts a ptnet device in a real (patched) QEMU without a guest driver.

QEMU runs with the qtest accelerator: no guest CPU, and this script performs the guest's
memory and port accesses through QEMU's qtest protocol. It plays the part of a ptnet guest
driver just far enough to prove the chain daemon <-> QEMU <-> guest:

 1. finds the device (1af4:107f) on PCI bus 0, sizes and places its BARs, enables MSI-X with
    message addresses in guest RAM (so an interrupt becomes a RAM write we can read back);
 2. virtio-pci init: reset, ACKNOWLEDGE, DRIVER, features (VERSION_1, PTNET_F_STATUS; VNET_HDR offered, not acked),
    FEATURES_OK, reads and checks the config space (geometry against the daemon's);
 3. per queue: size, vector, rings in guest RAM with every descriptor posted as an event
    buffer, enable; writes the CSB addresses into the config space (four 32-bit writes,
    low words first, as Linux does) and sets DRIVER_OK;
 4. waits for status MEM_READY | LINK_UP, then reads the port's netmap_if through BAR 4
    (region 0) and the CSB the daemon initialised in guest RAM;
 5. transmits a frame through the TX ring in BAR 4 + a kick (notify write = ioeventfd), and
    asks for an RX interrupt; the daemon's host client broadcasts frames, one lands in the RX
    ring, and the interrupt arrives as an MSI-X write after the daemon completed an event
    buffer (used index 1);
 6. resets the device (status 0): the daemon stops, the mapping goes away;
 7. does 2-6 again, STARTS times in all (default 3; PTNET_QTEST_STARTS): QEMU dropped its
    mapping at each reset while vhost was stopped, the daemon maps again after DRIVER_OK,
    and QEMU must tell the daemon's memory table about both (a stale region there crashed
    the patched QEMU at the second start until qemu-patches patch 5 fixed vhost-user).
    The reset before the last start happens while the VM is paused (HMP stop/cont), when
    vhost was already stopped by the run-state change rather than by the reset.

Usage: qtest_driver.py QTEST_SOCKET HMP_SOCKET REGION_SIZE NIFP_OFFSET
(QEMU is started by qtest-start.sh; it connects to QTEST_SOCKET, which this script listens
on.) Prints what it checks; exits 1 on the first failure.
"""

import os
import socket
import struct
import sys
import time

VENDOR, DEVICE = 0x1AF4, 0x107F
SLOT = 4
BAR1, BAR2, BAR4 = 0xC0010000, 0xC0000000, 0x8_0000_0000
QUEUES_GPA = 0x100000
ATOK_GPA, KTOA_GPA = 0x200000, 0x201000
MSI_GPA = 0x300000
EVENT_BUFS_GPA = 0x400000
QSIZE = 64

failures = 0


ROUND = 0


def check(what, ok, detail=""):
    global failures
    prefix = f"[start {ROUND}] " if ROUND else ""
    print(("PASS  " if ok else "FAIL  ") + prefix + what + (f"  ({detail})" if detail else ""))
    if not ok:
        failures += 1
        sys.exit(1)


class QTest:
    def __init__(self, path):
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(30)
        self.s, _ = srv.accept()
        self.s.settimeout(30)
        self.buf = b""

    def cmd(self, line):
        self.s.sendall(line.encode() + b"\n")
        while True:
            while b"\n" not in self.buf:
                data = self.s.recv(65536)
                if not data:
                    raise RuntimeError("qtest closed")
                self.buf += data
            reply, self.buf = self.buf.split(b"\n", 1)
            reply = reply.decode()
            if reply.startswith("IRQ"):
                continue
            if not reply.startswith("OK"):
                raise RuntimeError(f"{line}: {reply}")
            return reply[3:].strip()

    def rd(self, size, addr):
        return int(self.cmd(f"read{size} {addr:#x}"), 16)

    def wr(self, size, addr, val):
        self.cmd(f"write{size} {addr:#x} {val:#x}")

    def memread(self, addr, n):
        return bytes.fromhex(self.cmd(f"read {addr:#x} {n}")[2:])

    def memwrite(self, addr, data):
        self.cmd(f"write {addr:#x} {len(data)} 0x{data.hex()}")

    # PCI configuration space through ports 0xcf8/0xcfc.
    def cfg_addr(self, reg):
        return 0x80000000 | (SLOT << 11) | (reg & 0xFC)

    def cfg_rd(self, reg, size=4):
        self.cmd(f"outl 0xcf8 {self.cfg_addr(reg):#x}")
        v = int(self.cmd("inl 0xcfc"), 16) >> (8 * (reg & 3))
        return v & ((1 << (8 * size)) - 1)

    def cfg_wr32(self, reg, val):
        self.cmd(f"outl 0xcf8 {self.cfg_addr(reg):#x}")
        self.cmd(f"outl 0xcfc {val:#x}")


def hmp(path, command):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)

    def until(end):
        buf = b""
        while not buf.endswith(end):
            data = s.recv(65536)
            if not data:
                break
            buf += data
        return buf.decode(errors="replace")

    until(b"(qemu) ")
    s.sendall(command.encode() + b"\n")
    out = until(b"(qemu) ").split("\r\n")[1:-1]
    s.close()
    return "\n".join(out)


def session(q, hmp_sock, region_size, nifp, ctx, rnd, paused_reset=False):
    """One driver session: init, start, a frame each way, reset (with the VM paused if
    paused_reset)."""
    common, notify, notify_mult, devcfg = ctx
    global ROUND
    ROUND = rnd
    # 2. virtio init and config.
    q.wr("b", common + 0x14, 0)
    q.wr("b", common + 0x14, 1)
    q.wr("b", common + 0x14, 3)
    q.wr("l", common + 0x00, 0)
    f_lo = q.rd("l", common + 0x04)
    q.wr("l", common + 0x00, 1)
    f_hi = q.rd("l", common + 0x04)
    features = f_hi << 32 | f_lo
    # VNET_HDR is offered (vale0:vm takes the header) but not acked: plain frames below.
    check("features: VERSION_1, PTNET_F_STATUS and VNET_HDR (a VALE port) offered",
          features & (1 << 32) and features & 2 and features & 1, f"{features:#x}")
    q.wr("l", common + 0x08, 0)
    q.wr("l", common + 0x0C, 2)
    q.wr("l", common + 0x08, 1)
    q.wr("l", common + 0x0C, 1)
    q.wr("b", common + 0x14, 0xB)
    check("FEATURES_OK accepted", q.rd("b", common + 0x14) & 8 == 8)
    cfg = q.memread(devcfg, 64)
    (status, ntx, nrx, tx_slots, rx_slots, nifp_ofs, mem_size, mem_id, vhl, buf_size) = (
        struct.unpack_from("<H", cfg, 6)[0],
        *struct.unpack_from("<IIII", cfg, 8),
        *struct.unpack_from("<QQHHI", cfg, 24),
    )
    check(
        "config space: the port's geometry",
        (ntx, nrx, nifp_ofs, mem_size) == (1, 1, nifp, region_size) and status == 0 and vhl == 0,
        f"mac {cfg[:6].hex(':')} rings {ntx}+{nrx} slots {tx_slots}/{rx_slots} nifp {nifp_ofs:#x} "
        f"mem {mem_size:#x} id {mem_id} buf {buf_size} status {status}",
    )
    nq = q.rd("w", common + 0x12)
    check("one virtqueue per ring", nq == ntx + nrx, str(nq))

    # 3. Queues with event buffers, CSB addresses, DRIVER_OK.
    q.wr("w", common + 0x10, nq)  # config vector
    qaddr = []
    for i in range(nq):
        base = QUEUES_GPA + i * 0x4000
        desc, avail, used = base, base + 0x800, base + 0x1000
        bufs = EVENT_BUFS_GPA + i * 0x1000
        d = b"".join(struct.pack("<QIHH", bufs + 8 * j, 8, 2, 0) for j in range(QSIZE))
        q.memwrite(desc, d)
        q.memwrite(avail, struct.pack("<HH", 0, QSIZE) + b"".join(struct.pack("<H", j) for j in range(QSIZE)))
        q.memwrite(used, bytes(4 + 8 * QSIZE))
        q.wr("w", common + 0x16, i)
        q.wr("w", common + 0x18, QSIZE)
        q.wr("w", common + 0x1A, i)
        q.wr("q", common + 0x20, desc)
        q.wr("q", common + 0x28, avail)
        q.wr("q", common + 0x30, used)
        q.wr("w", common + 0x1C, 1)
        qaddr.append((used, q.rd("w", common + 0x1E)))
    q.memwrite(ATOK_GPA, bytes(64 * nq))
    q.memwrite(KTOA_GPA, bytes(64 * nq))
    q.memwrite(MSI_GPA, bytes(4 * (nq + 1)))
    for off, val in ((48, ATOK_GPA), (56, KTOA_GPA)):
        q.wr("l", devcfg + off, val & 0xFFFFFFFF)
        q.wr("l", devcfg + off + 4, val >> 32)
    q.wr("b", common + 0x14, 0xF)  # DRIVER_OK

    # 4. MEM_READY, the region and the CSB.
    deadline = time.time() + 10
    while time.time() < deadline and q.rd("w", devcfg + 6) & 2 == 0:
        time.sleep(0.01)
    status = q.rd("w", devcfg + 6)
    check("status MEM_READY | LINK_UP after DRIVER_OK", status == 3, str(status))
    mtree = hmp(hmp_sock, "info mtree")
    # Listed once per address space that shows BAR 4: count distinct mappings.
    mapped = sorted({line.strip() for line in mtree.splitlines() if "virtio-shmem-0-map" in line})
    check("QEMU mapped the port's memfd into BAR 4 (SHMEM_MAP), once", len(mapped) == 1, "; ".join(mapped) or "none")
    name = q.memread(BAR4 + nifp, 16).split(b"\0")[0].decode(errors="replace")
    check("BAR 4 + nifp_offset holds the port's netmap_if", name == "vale0:vm", repr(name))
    ktoa_tx = struct.unpack("<III", q.memread(KTOA_GPA, 12))
    atok_rx = struct.unpack("<IIII", q.memread(ATOK_GPA + 64, 16))
    check(
        "the daemon initialised the CSB in guest RAM",
        ktoa_tx[1] == tx_slots - 1 and ktoa_tx[2] == 1 and atok_rx[2] == 1,
        f"TX ktoa hwcur/hwtail/kern_need_kick {ktoa_tx}, RX atok {atok_rx}",
    )

    # 5. Transmit one frame through the TX ring in BAR 4, kick.
    ring_ofs = struct.unpack("<q", q.memread(BAR4 + nifp + 56, 8))[0]
    tx_ring = BAR4 + nifp + ring_ofs
    buf_ofs = struct.unpack("<q", q.memread(tx_ring, 8))[0]
    slot = struct.unpack("<IHHQ", q.memread(tx_ring + 256, 16))
    frame = b"\xff" * 6 + bytes([2, 0, 0, 0, 0, 0xbb]) + b"\x88\xb5" + b"PTNET-GUEST-QTEST"
    frame += bytes(60 - len(frame))
    q.memwrite(tx_ring + buf_ofs + slot[0] * buf_size, frame)
    q.memwrite(tx_ring + 256, struct.pack("<IHHQ", slot[0], 60, 0, 0))
    q.wr("l", ATOK_GPA + 4, 1)  # cur
    q.wr("l", ATOK_GPA, 1)  # head
    q.wr("w", notify + qaddr[0][1] * notify_mult, 0)  # kick queue 0
    deadline = time.time() + 5
    while time.time() < deadline and struct.unpack("<I", q.memread(KTOA_GPA, 4))[0] != 1:
        time.sleep(0.01)
    hwcur = struct.unpack("<I", q.memread(KTOA_GPA, 4))[0]
    check("the kick reached the sync loop: the frame was consumed (TX hwcur 1)", hwcur == 1, str(hwcur))

    # Ask for an RX interrupt and wait for the host client's next broadcast.
    rx_k = ntx  # CSB entry / queue of RX ring 0
    q.wr("l", ATOK_GPA + 64 * rx_k + 8, 1)  # appl_need_kick
    used_rx = qaddr[rx_k][0]
    deadline = time.time() + 5
    while time.time() < deadline and q.rd("w", used_rx + 2) == 0:
        time.sleep(0.01)
    used_idx = q.rd("w", used_rx + 2)
    elem = struct.unpack("<II", q.memread(used_rx + 4, 8))
    msi = q.rd("l", MSI_GPA + 4 * rx_k)
    hwtail = struct.unpack("<I", q.memread(KTOA_GPA + 64 * rx_k + 4, 4))[0]
    check(
        "an RX interrupt: one event buffer completed (used len 0), then the MSI-X message",
        used_idx >= 1 and elem[1] == 0 and msi == 0xC0DE0000 + rx_k,
        f"used idx {used_idx} elem {elem} msi {msi:#x} RX hwtail {hwtail}",
    )
    rx_ring = BAR4 + nifp + struct.unpack("<q", q.memread(BAR4 + nifp + 64, 8))[0]
    rbuf_ofs = struct.unpack("<q", q.memread(rx_ring, 8))[0]
    rslot = struct.unpack("<IHHQ", q.memread(rx_ring + 256, 16))
    rframe = q.memread(rx_ring + rbuf_ofs + rslot[0] * buf_size, rslot[1])
    check("the received frame is the host client's", b"PTNET-HOST-" in rframe, rframe[14:30].decode(errors="replace"))

    # 6. Device reset: the daemon stops and region 0 goes away.
    if paused_reset:
        hmp(hmp_sock, "stop")
        status = hmp(hmp_sock, "info status")
        check("the VM is paused before the reset", "paused" in status, status.strip())
    q.wr("b", common + 0x14, 0)
    time.sleep(0.3)
    mtree = hmp(hmp_sock, "info mtree")
    check("after a device reset region 0 is unmapped"
          + (" (VM paused)" if paused_reset else ""), "virtio-shmem-0-map" not in mtree)
    if paused_reset:
        hmp(hmp_sock, "cont")
        status = hmp(hmp_sock, "info status")
        check("the VM runs again", "running" in status, status.strip())


def main():
    qsock, hmp_sock, region_size, nifp = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    q = QTest(qsock)

    # 1. PCI: identity, BARs, capabilities.
    vid = q.cfg_rd(0, 4)
    check("device 1af4:107f at 00:04.0", vid == (DEVICE << 16 | VENDOR), f"{vid:#x}")
    sizes = {}
    for bar, base in ((1, BAR1), (2, BAR2), (4, BAR4)):
        reg = 0x10 + 4 * bar
        low = q.cfg_rd(reg)
        is64 = (low >> 1) & 3 == 2
        q.cfg_wr32(reg, 0xFFFFFFFF)
        mask = q.cfg_rd(reg) & ~0xF
        if is64:
            q.cfg_wr32(reg + 4, 0xFFFFFFFF)
            mask |= q.cfg_rd(reg + 4) << 32
            mask |= 0xFFFFFFFF00000000 if mask < (1 << 32) else 0
        else:
            mask |= 0xFFFFFFFF00000000
        sizes[bar] = (~mask + 1) & 0xFFFFFFFFFFFFFFFF
        q.cfg_wr32(reg, base & 0xFFFFFFFF)
        if is64:
            q.cfg_wr32(reg + 4, base >> 32)
    pow2 = 1 << (region_size - 1).bit_length()
    check(
        "BAR 4 (shared memory) is the port's region rounded to a power of two",
        sizes[4] == pow2,
        f"{sizes[4]:#x} for a region of {region_size:#x}",
    )
    cmdreg = q.cfg_rd(4, 2)
    q.cfg_wr32(4, cmdreg | 0x6)  # memory space + bus master
    caps = {}
    msix_cap = None
    shm_caps = []
    ptr = q.cfg_rd(0x34, 1)
    while ptr:
        cid = q.cfg_rd(ptr, 1)
        if cid == 0x11:
            msix_cap = ptr
        elif cid == 0x09:
            cfg_type = q.cfg_rd(ptr + 3, 1)
            bar = q.cfg_rd(ptr + 4, 1)
            off = q.cfg_rd(ptr + 8)
            length = q.cfg_rd(ptr + 12)
            if cfg_type == 8:
                shmid = q.cfg_rd(ptr + 5, 1)
                off |= q.cfg_rd(ptr + 16) << 32
                length |= q.cfg_rd(ptr + 20) << 32
                shm_caps.append((shmid, bar, off, length))
            elif cfg_type not in caps:
                caps[cfg_type] = (bar, off, length, ptr)
        ptr = q.cfg_rd(ptr + 1, 1)
    check(
        "one shared memory capability: region 0 in BAR 4",
        len(shm_caps) == 1 and shm_caps[0][:3] == (0, 4, 0) and shm_caps[0][3] >= region_size,
        str(shm_caps),
    )
    bars = {1: BAR1, 2: BAR2, 4: BAR4}
    common = bars[caps[1][0]] + caps[1][1]
    notify = bars[caps[2][0]] + caps[2][1]
    notify_mult = q.cfg_rd(caps[2][3] + 16)
    devcfg = bars[caps[4][0]] + caps[4][1]

    # MSI-X: every vector's message goes to a word of guest RAM.
    ctl = q.cfg_rd(msix_cap + 2, 2)
    nvec = (ctl & 0x7FF) + 1
    table = q.cfg_rd(msix_cap + 4)
    table_addr = bars[table & 7] + (table & ~7)
    for v in range(nvec):
        e = table_addr + 16 * v
        q.wr("l", e, MSI_GPA + 4 * v)
        q.wr("l", e + 4, 0)
        q.wr("l", e + 8, 0xC0DE0000 + v)
        q.wr("l", e + 12, 0)  # unmasked
    q.cfg_wr32(msix_cap, (ctl | 0x8000) << 16 | q.cfg_rd(msix_cap, 2))

    ctx = (common, notify, notify_mult, devcfg)
    # A driver reset drops QEMU's mappings; the next start maps region 0 again.
    starts = int(os.environ.get("PTNET_QTEST_STARTS", "3"))
    for rnd in range(1, starts + 1):
        try:
            session(q, hmp_sock, region_size, nifp, ctx, rnd if starts > 1 else 0,
                    paused_reset=starts > 2 and rnd == starts - 1)
        except (RuntimeError, OSError) as e:
            check("QEMU answers the driver", False, f"{type(e).__name__}: {e}; did QEMU crash?")
    q.s.close()


if __name__ == "__main__":
    main()
