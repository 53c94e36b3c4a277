#!/usr/bin/env python3
"""The far end of tier-2 NIC tests, run inside a network namespace with `ip netns exec`.

  nsframes.py send IF COUNT DST SRC LEN [--burst N --pause-ms MS] [--ethertype HEX]
  nsframes.py recv IF COUNT [--timeout S]
  nsframes.py flood IF SECONDS DST SRC           (paced raw frames, send errors ignored)
  nsframes.py tcp-server ADDR PORT                 (prints "ready", then bytes and sha256)
  nsframes.py tcp-client ADDR PORT BYTES           (prints bytes and sha256)

Frames use ptnet-host-tests' format (ethertype 0x88b5, u64 LE sequence number at 14, then
byte k of the payload = seq * 31 + k mod 256), so the Rust test client checks them too.
Every mode prints one JSON line at the end."""
import argparse
import hashlib
import json
import socket
import struct
import sys
import time

ETH_P = 0x88B5
SEQ_ANNOUNCE = (1 << 64) - 1
SEQ_ACK = (1 << 64) - 2


def payload(seq, n):
    b = (seq & 0xFF) * 31
    return bytes((b + k) & 0xFF for k in range(n))


def frame(dst, src, seq, length, ethertype=ETH_P):
    head = dst + src + struct.pack("!H", ethertype) + struct.pack("<Q", seq)
    return head + payload(seq, max(length, 22) - 22)


def check(f):
    if len(f) < 22:
        return None
    seq = struct.unpack("<Q", f[14:22])[0]
    return seq if f[22:] == payload(seq, len(f) - 22) else None


def raw(ifname, proto=ETH_P):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.bind((ifname, 0))
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--pause-ms", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--ethertype", default="88b5")
    a = ap.parse_args()
    if a.mode == "send":
        ifname, count, dst, src, length = a.args
        s = raw(ifname)
        dst, src = bytes.fromhex(dst), bytes.fromhex(src)
        for seq in range(int(count)):
            s.send(frame(dst, src, seq, int(length), int(a.ethertype, 16)))
            if seq % a.burst == a.burst - 1:
                time.sleep(a.pause_ms / 1000)
        print(json.dumps({"sent": int(count)}))
    elif a.mode == "recv":
        ifname, count = a.args[0], int(a.args[1])
        s = raw(ifname)
        s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (root)
        s.settimeout(0.5)
        print("ready", flush=True)
        got = bad = out_of_order = 0
        nxt = 0
        until = time.time() + a.timeout
        while got < count and time.time() < until:
            try:
                f = s.recv(65536)
            except socket.timeout:
                continue
            seq = check(f)
            if seq in (SEQ_ANNOUNCE, SEQ_ACK):
                continue
            if seq is None:
                bad += 1
                continue
            if seq != nxt:
                out_of_order += 1
            nxt = seq + 1
            got += 1
        print(json.dumps({"received": got, "bad_payload": bad, "out_of_order": out_of_order}))
        sys.exit(0 if got == count and bad == 0 and out_of_order == 0 else 1)
    elif a.mode == "flood":
        ifname, secs, dst, src = a.args
        s = raw(ifname, 0x88B6)
        dst, src = bytes.fromhex(dst), bytes.fromhex(src)
        f = frame(dst, src, 0, 200, 0x88B6)
        sent = errors = 0
        until = time.time() + float(secs)
        while time.time() < until:
            for _ in range(a.burst):
                try:
                    s.send(f)
                    sent += 1
                except OSError:
                    errors += 1
            time.sleep(a.pause_ms / 1000)
        print(json.dumps({"sent": sent, "errors": errors}))
    elif a.mode == "tcp-server":
        addr, port = a.args
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, int(port)))
        ls.listen(1)
        ls.settimeout(a.timeout)
        print("ready", flush=True)
        c, _ = ls.accept()
        c.settimeout(a.timeout)
        h, n = hashlib.sha256(), 0
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        print(json.dumps({"bytes": n, "sha256": h.hexdigest()}))
    elif a.mode == "tcp-client":
        addr, port, total = a.args[0], int(a.args[1]), int(a.args[2])
        block = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(1 << 16))
        c = socket.create_connection((addr, port), timeout=a.timeout)
        h, n = hashlib.sha256(), 0
        while n < total:
            d = block[: min(len(block), total - n)]
            c.sendall(d)
            h.update(d)
            n += len(d)
        c.close()
        print(json.dumps({"bytes": n, "sha256": h.hexdigest()}))
    else:
        sys.exit("unknown mode " + a.mode)


if __name__ == "__main__":
    main()
