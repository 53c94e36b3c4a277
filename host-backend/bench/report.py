#!/usr/bin/env python3
"""Turns ptnet-bench / peer JSON lines into the markdown table of docs/benchmarks.md and an
SVG bar chart (no plotting library needed)."""
import argparse
import json
import sys

LABELS = {  # scenario -> row label
    "pipe": "pipe client → client (zero copy)",
    "vale": "VALE 2 ports (copy)",
    "dpdk-memif": "peer: DPDK memif, testpmd txonly → rxonly",
    "veth-af_packet": "peer: veth + AF_PACKET (DPDK net_af_packet, TPACKET_V2)",
    "veth-af_packet-v3": "peer: veth + AF_PACKET, TPACKET_V3 rings",
    "nic-af_packet": "veth → NIC port (AF_PACKET) → VALE → host client",
    "nic-af_xdp": "veth → NIC port (AF_XDP copy, native XDP) → VALE → host client",
    "bridge": "peer: veth → Linux bridge → veth → AF_PACKET receiver",
    "ptnetd-eventfd": "virtio_user → ptnetd VALE (virtio-net ports, eventfd) → virtio_user",
    "ptnetd-busypoll": "virtio_user → ptnetd VALE (virtio-net ports, busy poll) → virtio_user",
    "dpdk-vhost": "peer: virtio_user → DPDK net_vhost io forward → virtio_user",
    "ovs-dpdk": "peer: virtio_user → OVS-DPDK (netdev bridge, port-to-port flows) → virtio_user",
}


def virtio_net_table(rows):
    """The virtio-net benchmark (bench/virtio-net.sh), with the ratio to DPDK's vhost switch
    at the same frame size."""
    peer = {r["size"]: r["rx_mpps"] for r in rows if r["scenario"] == "dpdk-vhost"}
    out = ["| path | frame B | sent Mpps | received Mpps (min–max) | received Gbit/s "
           "| switch CPU | switch ns / frame | × DPDK vhost |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        spread = ""
        if "rx_mpps_min" in r:
            spread = " (%.2f–%.2f)" % (r["rx_mpps_min"], r["rx_mpps_max"])
        ns = r.get("switch_ns_per_packet")
        ratio = "–"
        if peer.get(r["size"]):
            ratio = "%.2f" % (r["rx_mpps"] / peer[r["size"]])
        out.append("| %s | %d | %.2f | %.2f%s | %.2f | %.2f | %s | %s |" % (
            label(r), r["size"], r["tx_mpps"], r["rx_mpps"], spread, r["rx_gbps"],
            r.get("switch_cpu", 0.0), "%.0f" % ns if ns else "–", ratio))
    return "\n".join(out)


def nic_table(rows):
    """The NIC benchmark (bench/nic.sh): CPU in cores, per side and for the whole machine."""
    out = ["| path | frame B | sent Mpps | received Mpps (min–max) | received Gbit/s "
           "| CPU sender | CPU receiver | softirq | machine | machine ns / frame |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        spread = ""
        if "rx_mpps_min" in r:
            spread = " (%.2f–%.2f)" % (r["rx_mpps_min"], r["rx_mpps_max"])
        recv = r.get("client_cpu", 0.0) + r.get("daemon_cpu", 0.0)
        out.append("| %s | %d | %.2f | %.2f%s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f |" % (
            label(r), r["size"], r["tx_mpps"], r["rx_mpps"], spread, r["rx_gbps"],
            r.get("gen_cpu", 0.0), recv, r.get("softirq_cpu", 0.0), r.get("total_cpu", 0.0),
            r.get("cpu_ns_per_packet", 0.0)))
    return "\n".join(out)


def label(r):
    s = r["scenario"]
    n = r.get("ports", 1)
    if s == "oneton":
        return "VALE 1 → %d" % n
    if s == "ntoone":
        return "VALE %d → 1" % n
    return LABELS.get(s, s)


def table(rows):
    out = ["| scenario | mode | frame B | sent Mpps | received Mpps (min–max) | received Gbit/s "
           "| CPU A | CPU B | daemon ns / frame |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ns = r.get("daemon_ns_per_packet")
        sent = r.get("tx_mpps")
        spread = ""
        if "rx_mpps_min" in r:
            spread = " (%.1f–%.1f)" % (r["rx_mpps_min"], r["rx_mpps_max"])
        out.append("| %s | %s | %d | %s | %.2f%s | %.2f | %.2f | %.2f | %s |" % (
            label(r), r["mode"], r["size"], "%.2f" % sent if sent is not None else "–",
            r["rx_mpps"], spread, r["rx_gbps"], r.get("client_cpu", 0.0),
            r.get("daemon_cpu", 0.0), "%.0f" % ns if ns else "–"))
    return "\n".join(out)


def svg(rows, path):
    rows = [r for r in rows if r["size"] <= 64]
    w, bar, gap, left = 900, 22, 8, 330
    h = 40 + len(rows) * (bar + gap)
    top = max([r["rx_mpps"] for r in rows] + [1.0])
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="12">' % (w, h),
             '<text x="10" y="20" font-size="14">64-byte frames: Mpps received '
             '(ptnet in blue, peers in grey)</text>']
    for i, r in enumerate(rows):
        y = 35 + i * (bar + gap)
        length = (w - left - 80) * r["rx_mpps"] / top
        color = "#999999" if r.get("peer") or r["mode"] == "kernel" else "#2a6fdb"
        parts.append('<text x="10" y="%d">%s (%s)</text>' % (y + 15, label(r), r["mode"]))
        parts.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>'
                     % (left, y, length, bar, color))
        parts.append('<text x="%.1f" y="%d">%.2f</text>' % (left + length + 5, y + 15, r["rx_mpps"]))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--svg")
    ap.add_argument("--nic", action="store_true", help="the NIC benchmark's table (nic.sh)")
    ap.add_argument("--virtio-net", action="store_true",
                    help="the virtio-net benchmark's table (virtio-net.sh)")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    if a.nic:
        print(nic_table(rows))
        return
    if a.virtio_net:
        print(virtio_net_table(rows))
        return
    print(table(rows))
    if a.svg:
        svg(rows, a.svg)
        print("\nplot: %s" % a.svg, file=sys.stderr)


if __name__ == "__main__":
    main()
