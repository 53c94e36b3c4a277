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


# Scenarios that are peers, not ptnet (their bars are grey).
PEERS = {"dpdk-memif", "veth-af_packet", "veth-af_packet-v3", "bridge", "dpdk-vhost", "ovs-dpdk"}


def virtio_net_table(rows):
    """The unpinned virtio-net rows of 2026-11-22 (virtio-net.sh before it pinned anything):
    rates only. The polling switches time-shared two vCPUs with polling clients there, so a
    ratio between them would measure the scheduler, and none is printed."""
    out = ["| path | frame B | sent Mpps | received Mpps (min–max) | received Gbit/s "
           "| switch CPU | switch ns / frame |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        spread = ""
        if "rx_mpps_min" in r:
            spread = " (%.2f–%.2f)" % (r["rx_mpps_min"], r["rx_mpps_max"])
        ns = r.get("switch_ns_per_packet")
        out.append("| %s | %d | %.2f | %.2f%s | %.2f | %.2f | %s |" % (
            label(r), r["size"], r["tx_mpps"], r["rx_mpps"], spread, r["rx_gbps"],
            r.get("switch_cpu", 0.0), "%.0f" % ns if ns else "–"))
    return "\n".join(out)


DIRECTIONS = {  # virtio-net.sh's directions
    "tx": "guest TX (client txonly → switch consumes)",
    "rx": "guest RX (switch side produces → client rxonly)",
    "gg": "guest → switch → guest (client mac-forwards both ways)",
}
PER_CORE = {  # virtio-net.sh's switches
    "ptnetd-eventfd": "ptnetd VALE, eventfd",
    "ptnetd-busypoll": "ptnetd VALE, busy poll",
    "ptnetd-group-eventfd": "ptnetd VALE, 1 poll group, eventfd",
    "ptnetd-group-busypoll": "ptnetd VALE, 1 poll group, busy poll",
    "dpdk-vhost": "peer: DPDK net_vhost (testpmd)",
    "ovs-flows": "peer: OVS-DPDK, port flows",
    "ovs-normal": "peer: OVS-DPDK, NORMAL (learning)",
}


def per_core_table(rows):
    """virtio-net.sh: each switch alone on one CPU, the client on another; the ratio is to
    DPDK's vhost PMD in the same direction at the same frame size."""
    peer = {(r["direction"], r["size"]): r["rx_mpps"] for r in rows
            if r["scenario"] == "dpdk-vhost"}
    out = ["| direction | switch (pinned, 1 core) | frame B | Mpps (min–max) | Gbit/s "
           "| switch core busy | switch ns / frame | × DPDK vhost |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = peer.get((r["direction"], r["size"]))
        ns = r.get("switch_ns_per_frame")
        out.append("| %s | %s | %d | %.2f (%.2f–%.2f) | %.2f | %.2f | %s | %s |" % (
            DIRECTIONS[r["direction"]], PER_CORE[r["scenario"]], r["size"], r["rx_mpps"],
            r.get("rx_mpps_min", r["rx_mpps"]), r.get("rx_mpps_max", r["rx_mpps"]),
            r["rx_gbps"], r["switch_core_busy"], "%.0f" % ns if ns else "–",
            "%.2f" % (r["rx_mpps"] / p) if p else "–"))
    return "\n".join(out)


def per_core_svg(rows, path):
    """One bar per row: Mpps per switch core, ptnet blue, peers grey."""
    bars = [("%s · %s, %d B" % (r["direction"], PER_CORE[r["scenario"]], r["size"]),
             r["rx_mpps"], BLUE if r["scenario"].startswith("ptnetd") else GREY,
             "%.2f" % r["rx_mpps"]) for r in rows]
    bar_chart(path, "virtio-net per switch core (switch pinned alone on one CPU, client on "
              "another): Mpps", bars, left=360)


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


def bar_chart(path, title, bars, left=430):
    """A horizontal bar chart: `bars` is a list of (label, value, colour, value text)."""
    w, bar, gap = 900, 22, 8
    h = 40 + len(bars) * (bar + gap)
    top = max([v for _, v, _, _ in bars] + [1.0])
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="12">' % (w, h),
             '<text x="10" y="20" font-size="14">%s</text>' % title]
    for i, (what, value, color, text) in enumerate(bars):
        y = 35 + i * (bar + gap)
        length = (w - left - 80) * value / top
        parts.append('<text x="10" y="%d">%s</text>' % (y + 15, what))
        parts.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>'
                     % (left, y, length, bar, color))
        parts.append('<text x="%.1f" y="%d">%s</text>' % (left + length + 5, y + 15, text))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


BLUE, GREY = "#2a6fdb", "#999999"


def svg(rows, path, title="64-byte frames: Mpps received (ptnet in blue, peers in grey)",
        sizes=(64,)):
    """A bar per row of `sizes` (frame sizes up to 64 count as 64): received Mpps, ptnet's
    rows blue, peers' grey, the frame size in the label when several are drawn."""
    def size_of(r):
        return 64 if r["size"] <= 64 else r["size"]
    bars = []
    for r in (r for r in rows if size_of(r) in sizes):
        peer = r.get("peer") or r["mode"] == "kernel" or r["scenario"] in PEERS
        what = "%s (%s)" % (label(r), r["mode"]) if len(sizes) == 1 else \
            "%s, %d B" % (label(r), r["size"])
        bars.append((what, r["rx_mpps"], GREY if peer else BLUE, "%.2f" % r["rx_mpps"]))
    bar_chart(path, title, bars)


def kick_path(rows, path):
    """The kick-path measurement (ptnet-device's kick_path test): median round trips, with
    the stream rate in each label."""
    bars = [("%s, %.2f Mpps stream" % (r["path"], r["stream_mpps"]), r["rtt_p50_us"],
             GREY if r["path"].startswith("host") else BLUE,
             "%.1f µs (%.1f–%.1f)" % (r["rtt_p50_us"], r["rtt_p50_us_min"], r["rtt_p50_us_max"]))
            for r in rows]
    bar_chart(path, "One-frame round trip, median µs (lower is better; the host client in grey)",
              bars, left=480)


def pair_cost(rows, path=None):
    """pair-cost runs (virtio-net's example): per frame size and flooding, the median ns per
    frame with its range; the table, and bars if `path`."""
    groups = {}
    for r in rows:
        groups.setdefault((r["frame_bytes"], r.get("flooded", False)), []).append(r["ns_per_frame"])
    out = ["| frame B | ns / frame, whole daemon path (3 copies, VALE, both used rings) "
           "(min–max) | Mpps per core | runs |", "|---:|---:|---:|---:|"]
    bars = []
    for (size, flooded), v in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        v.sort()
        med = v[len(v) // 2]
        what = "%d%s" % (size, ", receiver unknown (flooded)" if flooded else "")
        out.append("| %s | %.0f (%.0f–%.0f) | %.2f | %d |" % (what, med, v[0], v[-1], 1e3 / med,
                                                            len(v)))
        bars.append(("%s B" % what, med, BLUE, "%.0f ns (%.0f–%.0f)" % (med, v[0], v[-1])))
    if path:
        bar_chart(path, "virtio-net → VALE → virtio-net on one core: ns per frame (lower is "
                  "better)", bars)
    return "\n".join(out)


def netmap_preload(rows, path):
    """netmap-preload.sh: senders' median Mpps with their range; the library's rows blue,
    ptnet-pktgen on ptnet-client grey."""
    bars = [(r["sender"], r["tx_mpps"], GREY if r["sender"] == "ptnet-pktgen" else BLUE,
             "%.2f (%.2f–%.2f)" % (r["tx_mpps"], r["tx_mpps_min"], r["tx_mpps_max"]))
            for r in rows]
    bar_chart(path, "60-byte frames into vale0, sender on CPU 0, ptnetd on CPU 1: Mpps "
              "(through libptnet_netmap.so in blue)", bars, left=220)


def fuzz(rows, path):
    """fuzz/campaign.sh: executions per second of each target's run (the latest line of each)."""
    last = {}
    for r in rows:
        last[r["target"]] = r
    bars = [(t, r["executions"] / max(r["seconds"], 1), BLUE,
             "%.0f k/s (%s M in %d s)" % (r["executions"] / max(r["seconds"], 1) / 1e3,
                                          "%.1f" % (r["executions"] / 1e6), r["seconds"]))
            for t, r in sorted(last.items())]
    bar_chart(path, "Fuzzing campaign: executions per second per target (no crash)", bars,
              left=180)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--svg")
    ap.add_argument("--nic", action="store_true", help="the NIC benchmark's table (nic.sh)")
    ap.add_argument("--virtio-net", action="store_true",
                    help="the unpinned virtio-net rows of 2026-11-22 (virtio-net.sh before --per-core)")
    ap.add_argument("--per-core", action="store_true",
                    help="the pinned virtio-net benchmark's table (virtio-net.sh)")
    ap.add_argument("--pair-cost", action="store_true",
                    help="pair-cost runs (ptnet-virtio-net's example): table and plot")
    ap.add_argument("--kick-path", action="store_true",
                    help="the kick-path measurement's plot (PTNET_KICK_PATH_OUT lines)")
    ap.add_argument("--netmap-preload", action="store_true",
                    help="netmap-preload.sh's plot")
    ap.add_argument("--fuzz", action="store_true", help="fuzz/campaign.sh's plot")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    if a.pair_cost:
        print(pair_cost(rows, a.svg))
        return
    if a.kick_path:
        kick_path(rows, a.svg or "kick-path.svg")
        return
    if a.fuzz:
        fuzz(rows, a.svg or "fuzz-campaign.svg")
        return
    if a.netmap_preload:
        netmap_preload(rows, a.svg or "netmap-preload.svg")
        return
    if a.nic:
        print(nic_table(rows))
        if a.svg:
            svg(rows, a.svg, "NIC ports and the Linux bridge: Mpps received (ptnet in blue, "
                "the peer in grey)", sizes=(64, 1514))
            print("\nplot: %s" % a.svg, file=sys.stderr)
        return
    if a.per_core:
        print(per_core_table(rows))
        if a.svg:
            per_core_svg(rows, a.svg)
            print("\nplot: %s" % a.svg, file=sys.stderr)
        return
    if a.virtio_net:
        print(virtio_net_table(rows))
        if a.svg:
            svg(rows, a.svg, "virtio_user → switch → virtio_user: Mpps received (ptnet in blue, "
                "peers in grey; unpinned, 2 vCPUs)", sizes=(64, 1514))
            print("\nplot: %s" % a.svg, file=sys.stderr)
        return
    print(table(rows))
    if a.svg:
        svg(rows, a.svg)
        print("\nplot: %s" % a.svg, file=sys.stderr)


if __name__ == "__main__":
    main()
