//! Prometheus metrics: `ptnetd --metrics ADDR` (or `[daemon] metrics`) serves the text
//! exposition format on `http://ADDR/metrics`, from the same counters `ptnetctl list` shows.
//!
//! One thread answers one scrape at a time (a scrape is a few kilobytes, built under the
//! daemon's lock from counters it keeps anyway); a request must arrive within 2 s and be at
//! most 8 KiB, and the answer waits 2 s at most for its reader, so a stuck scraper holds
//! nothing. Names follow Prometheus' conventions: `ptnet_` prefix, units, `_total` for
//! counters.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ptnet_proto::{PortEntry, Reply};

use crate::control::listing;
use crate::daemon::Daemon;

/// How long a scraper has to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request read.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves the metrics on `listener` for as long as the daemon runs.
pub fn serve(daemon: Arc<Daemon>, listener: TcpListener) -> io::Result<()> {
    thread::Builder::new()
        .name("metrics".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = answer(&daemon, c) {
                            log::debug!("metrics scrape: {e}");
                        }
                    }
                    Err(e) => {
                        log::warn!("metrics: accept failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

fn answer(daemon: &Daemon, mut conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = req.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else if path == "/metrics" || path.starts_with("/metrics?") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(daemon),
        )
    } else {
        ("404 Not Found", "text/plain", "see /metrics\n".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}

/// The whole exposition, now.
pub fn render(daemon: &Daemon) -> String {
    let (switches, others, vms) = {
        let st = daemon.lock();
        let vms = st.vms.len();
        match listing(&st) {
            Reply::Listing { switches, pipes } => (switches, pipes, vms),
            _ => (Vec::new(), Vec::new(), vms),
        }
    };
    let mut ports: Vec<(Option<&str>, &PortEntry)> = Vec::new();
    for s in &switches {
        ports.extend(s.ports.iter().map(|p| (Some(s.name.as_str()), p)));
    }
    ports.extend(others.iter().map(|p| (None, p)));
    let mut out = Exposition::default();

    let port_labels = |sw: Option<&str>, p: &PortEntry| {
        format!(
            "port=\"{}\",switch=\"{}\",kind=\"{}\"",
            escape(&p.name),
            escape(sw.unwrap_or("")),
            escape(&p.kind)
        )
    };
    type PortValue = fn(&PortEntry) -> u64;
    let port_counters: [(&str, &str, PortValue); 8] = [
        (
            "ptnet_port_tx_frames_total",
            "Frames the port's client transmitted and the port accepted.",
            |p| p.stats.tx_packets,
        ),
        ("ptnet_port_tx_bytes_total", "Bytes of those frames.", |p| {
            p.stats.tx_bytes
        }),
        (
            "ptnet_port_rx_frames_total",
            "Frames delivered to the port's client.",
            |p| p.stats.rx_packets,
        ),
        ("ptnet_port_rx_bytes_total", "Bytes of those frames.", |p| {
            p.stats.rx_bytes
        }),
        (
            "ptnet_port_rx_dropped_frames_total",
            "Frames for the port dropped because its RX ring was full.",
            |p| p.stats.rx_drops,
        ),
        (
            "ptnet_port_ring_resets_total",
            "Rings reset after invalid indices from the client.",
            |p| p.stats.ring_resets,
        ),
        (
            "ptnet_port_kicks_total",
            "Kicks received from the client.",
            |p| p.stats.kicks,
        ),
        (
            "ptnet_port_interrupts_total",
            "Interrupts raised to the client.",
            |p| p.stats.irqs,
        ),
    ];
    for (name, help, value) in port_counters {
        out.family(name, help, "counter");
        for (sw, p) in &ports {
            out.sample(name, &port_labels(*sw, p), value(p));
        }
    }
    // Sums to the listing's tx_drops.
    let tx_drop_causes: [(&str, PortValue); 4] = [
        ("bad_slot", |p| p.stats.tx_drops_bad_slot),
        ("no_destination", |p| p.stats.tx_drops_no_destination),
        ("lookup", |p| p.stats.tx_drops_lookup),
        ("mac_lock", |p| p.stats.tx_drops_mac_lock),
    ];
    out.family(
        "ptnet_port_tx_dropped_frames_total",
        "Frames from the port dropped, by cause: bad_slot (buffer index or length outside its \
         memory), no_destination, lookup (the switch's module dropped it: a runt), mac_lock \
         (a source MAC the port is not locked to).",
        "counter",
    );
    for (sw, p) in &ports {
        for (cause, value) in tx_drop_causes {
            let labels = format!("{},cause=\"{cause}\"", port_labels(*sw, p));
            out.sample("ptnet_port_tx_dropped_frames_total", &labels, value(p));
        }
    }
    out.family(
        "ptnet_port_attached",
        "1 while a client (host process, VM or NIC worker) holds the port.",
        "gauge",
    );
    for (sw, p) in &ports {
        out.sample(
            "ptnet_port_attached",
            &port_labels(*sw, p),
            u64::from(p.attached),
        );
    }
    out.family(
        "ptnet_port_ring_slots",
        "Slots per ring of the port.",
        "gauge",
    );
    for (sw, p) in &ports {
        out.sample(
            "ptnet_port_ring_slots",
            &port_labels(*sw, p),
            u64::from(p.slots),
        );
    }
    out.family(
        "ptnet_port_ring_used_slots",
        "Slots in use now, over all the port's rings of a direction: tx, filled by the client \
         and not yet consumed; rx, holding frames the client has not released.",
        "gauge",
    );
    for (sw, p) in &ports {
        for (dir, v) in [("tx", p.ring_use.tx), ("rx", p.ring_use.rx)] {
            let labels = format!("{},direction=\"{dir}\"", port_labels(*sw, p));
            out.sample("ptnet_port_ring_used_slots", &labels, v);
        }
    }

    // One family per switch counter; a switch whose module does not learn has no sample in
    // the last.
    type PerSwitch = fn(&ptnet_proto::SwitchEntry) -> Option<u64>;
    let per_switch: [(&str, &str, &str, PerSwitch); 4] = [
        ("ptnet_switch_ports", "Ports of the switch.", "gauge", |s| {
            Some(s.ports.len() as u64)
        }),
        (
            "ptnet_switch_lookups_total",
            "Frames the switch's forwarding module looked up.",
            "counter",
            |s| Some(s.lookups),
        ),
        (
            "ptnet_switch_floods_total",
            "Frames the switch flooded to every other port (broadcast, multicast, unknown \
             unicast).",
            "counter",
            |s| Some(s.floods),
        ),
        (
            "ptnet_switch_learned_addresses",
            "Stations (source MACs) the switch has learned.",
            "gauge",
            |s| s.learned,
        ),
    ];
    for (family, help, kind, value) in per_switch {
        out.family(family, help, kind);
        for s in &switches {
            if let Some(v) = value(s) {
                out.sample(family, &format!("switch=\"{}\"", escape(&s.name)), v);
            }
        }
    }

    let nics: Vec<_> = ports
        .iter()
        .filter_map(|(_, p)| p.nic.as_ref().map(|n| (p, n)))
        .collect();
    let nic_labels = |n: &ptnet_proto::NicEntry| {
        format!(
            "ifname=\"{}\",backend=\"{}\"",
            escape(&n.ifname),
            escape(n.backend.as_deref().unwrap_or(""))
        )
    };
    type NicValue = fn(&ptnet_proto::NicEntry) -> u64;
    let nic_counters: [(&str, &str, NicValue); 7] = [
        (
            "ptnet_nic_rx_frames_total",
            "Frames received from the interface.",
            |n| n.rx_packets,
        ),
        ("ptnet_nic_rx_bytes_total", "Their bytes.", |n| n.rx_bytes),
        (
            "ptnet_nic_rx_dropped_frames_total",
            "Frames from the interface dropped.",
            |n| n.rx_drops,
        ),
        (
            "ptnet_nic_tx_frames_total",
            "Frames sent out of the interface.",
            |n| n.tx_packets,
        ),
        ("ptnet_nic_tx_bytes_total", "Their bytes.", |n| n.tx_bytes),
        (
            "ptnet_nic_tx_dropped_frames_total",
            "Frames for the interface dropped.",
            |n| n.tx_drops,
        ),
        (
            "ptnet_nic_link_changes_total",
            "Link state changes seen (flaps).",
            |n| n.link_changes,
        ),
    ];
    for (name, help, value) in nic_counters {
        out.family(name, help, "counter");
        for (_, n) in &nics {
            out.sample(name, &nic_labels(n), value(n));
        }
    }
    out.family(
        "ptnet_nic_link_up",
        "1 while the interface's link is up.",
        "gauge",
    );
    for (_, n) in &nics {
        out.sample(
            "ptnet_nic_link_up",
            &nic_labels(n),
            u64::from(n.link == "up"),
        );
    }

    let served: Vec<_> = ports
        .iter()
        .filter_map(|(_, p)| p.vm.as_ref().map(|v| (p, v)))
        .collect();
    let vm_labels = |p: &PortEntry, v: &ptnet_proto::VmEntry| {
        format!("port=\"{}\",device=\"{}\"", escape(&p.name), v.device)
    };
    type VmValue = fn(&ptnet_proto::VmEntry) -> u64;
    let vm_values: [(&str, &str, &str, VmValue); 6] = [
        (
            "ptnet_vm_running",
            "1 while the VM's device runs.",
            "gauge",
            |v| u64::from(v.running),
        ),
        (
            "ptnet_vm_memory_mapped",
            "1 while the port's memory is mapped into the guest (ptnet devices).",
            "gauge",
            |v| u64::from(v.mem_ready),
        ),
        (
            "ptnet_vm_connections_total",
            "Frontend (QEMU) connections.",
            "counter",
            |v| v.connections,
        ),
        (
            "ptnet_vm_starts_total",
            "Device starts (restarts included).",
            "counter",
            |v| v.starts,
        ),
        (
            "ptnet_vm_refused_total",
            "Starts refused, or queues found broken.",
            "counter",
            |v| v.refused,
        ),
        (
            "ptnet_vm_interrupts_total",
            "Interrupts signalled to the guest.",
            "counter",
            |v| v.irqs,
        ),
    ];
    for (name, help, kind, value) in vm_values {
        out.family(name, help, kind);
        for (p, v) in &served {
            out.sample(name, &vm_labels(p, v), value(v));
        }
    }

    let attached = ports.iter().filter(|(_, p)| p.attached).count() as u64;
    out.family(
        "ptnet_daemon_attached_ports",
        "Ports a client holds.",
        "gauge",
    );
    out.sample("ptnet_daemon_attached_ports", "", attached);
    out.family("ptnet_daemon_vms", "Ports served to VMs.", "gauge");
    out.sample("ptnet_daemon_vms", "", vms as u64);
    let (threads, rss) = own_status();
    out.family("ptnet_daemon_threads", "Threads of the daemon.", "gauge");
    out.sample("ptnet_daemon_threads", "", threads);
    out.family(
        "ptnet_daemon_resident_memory_bytes",
        "Resident memory of the daemon.",
        "gauge",
    );
    out.sample("ptnet_daemon_resident_memory_bytes", "", rss);
    out.family(
        "ptnet_daemon_memory_faults_total",
        "SIGBUS faults survived in memory another process took away (guest RAM cut short, \
         huge pages punched out of a region).",
        "counter",
    );
    out.sample(
        "ptnet_daemon_memory_faults_total",
        "",
        ptnet_datapath::fault::faults(),
    );
    out.text
}

/// Threads and resident bytes, from `/proc/self/status` (0 when unreadable).
fn own_status() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}

/// A label value as the format wants it: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_family_has_help_and_type_and_samples_are_well_formed() {
        let d = Daemon::new(Config::embedded()).unwrap();
        let text = render(&d);
        assert!(text.contains("# TYPE ptnet_port_tx_frames_total counter"));
        assert!(text.contains("ptnet_switch_ports{switch=\"vale0\"} 0"));
        assert!(text.contains("ptnet_daemon_threads "));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = l.rsplit_once(' ').expect(l);
            assert!(value.parse::<u64>().is_ok(), "{l}");
            assert!(series.starts_with("ptnet_"), "{l}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
