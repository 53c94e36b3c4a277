//! How each reply prints: tables for people, JSON with `--json`.

use std::process::ExitCode;

use ptnet_proto::{NicEntry, PortEntry, Reply, VmTransport};

use crate::cli::View;

/// Prints `reply` (as JSON with `json`), a listing as `view` says; the exit code says whether
/// the request succeeded.
pub fn show(reply: Reply, json: bool, view: &View) -> ExitCode {
    match reply {
        Reply::Ok => {
            if json {
                println!("{{\"result\":\"ok\"}}");
            }
            ExitCode::SUCCESS
        }
        Reply::Error { message } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "result": "error", "message": message })
                );
            } else {
                eprintln!("ptnetctl: {message}");
            }
            ExitCode::FAILURE
        }
        Reply::Listing { switches, pipes } => {
            let mut ports: Vec<&PortEntry> = switches
                .iter()
                .flat_map(|s| &s.ports)
                .chain(&pipes)
                .collect();
            if let View::Ports(Some(p)) = view {
                ports.retain(|e| &e.name == p);
                if ports.is_empty() {
                    eprintln!("ptnetctl: no port {p}");
                    return ExitCode::FAILURE;
                }
            }
            if json {
                let v = match view {
                    View::Ports(_) => serde_json::to_value(&ports),
                    View::All | View::QemuArgs { .. } => serde_json::to_value(
                        serde_json::json!({ "switches": switches, "pipes": pipes }),
                    ),
                };
                println!("{}", v.unwrap_or_default());
            } else if let View::All = view {
                for s in &switches {
                    let learned = s.learned.map(|n| format!(", {n} stations learned"));
                    println!(
                        "{} ({} ports, {} frames looked up, {} flooded{})",
                        s.name,
                        s.ports.len(),
                        s.lookups,
                        s.floods,
                        learned.unwrap_or_default()
                    );
                }
                print_ports(&ports);
                print_vms(&ports);
            } else {
                print_ports(&ports);
                print_vms(&ports);
            }
            ExitCode::SUCCESS
        }
        Reply::NicAttached {
            port,
            host_stack,
            nic,
        } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "result": "ok", "port": port, "host_stack": host_stack, "nic": nic
                    })
                );
            } else {
                println!(
                    "{port}: {} attached, backend {}",
                    nic.ifname,
                    nic.backend.as_deref().unwrap_or("-")
                );
                if let Some(t) = host_stack {
                    println!("host stack: tap {t} (port on the same switch)");
                }
                if let Some(n) = &nic.note {
                    println!("note: {n}");
                }
            }
            ExitCode::SUCCESS
        }
        Reply::QemuArgs { args } => {
            let mem = match view {
                View::QemuArgs { mem } => mem.as_str(),
                _ => "1G",
            };
            // Guest RAM must be shared with the daemon, as large as the VM's -m; not on the
            // ivshmem transport, where the daemon never maps guest RAM.
            let ivshmem = args.iter().any(|a| a.starts_with("ivshmem-doorbell,"));
            let memory = if ivshmem {
                Vec::new()
            } else {
                vec![
                    "-m".to_owned(),
                    mem.to_owned(),
                    "-object".to_owned(),
                    format!("memory-backend-memfd,id=mem,size={mem},share=on"),
                    "-machine".to_owned(),
                    "memory-backend=mem".to_owned(),
                ]
            };
            if json {
                println!("{}", serde_json::json!({ "args": args, "memory": memory }));
            } else {
                for c in memory.chunks(2) {
                    println!("{} {} \\", c[0], shell_quote(&c[1]));
                }
                let line: Vec<String> = args
                    .chunks(2)
                    .map(|c| {
                        c.iter()
                            .map(|a| shell_quote(a))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                println!("{}", line.join(" \\\n"));
            }
            ExitCode::SUCCESS
        }
        Reply::Attached(_) => {
            eprintln!("ptnetctl: unexpected reply");
            ExitCode::FAILURE
        }
    }
}

fn print_vms(ports: &[&PortEntry]) {
    let vms: Vec<_> = ports
        .iter()
        .filter_map(|p| p.vm.as_ref().map(|v| (&p.name, v)))
        .collect();
    if vms.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:<13} {:<32} {:<8} {:<9} {:>6} {:>7} {:>10} {:>7}",
        "vm port", "kind", "socket", "device", "memory", "starts", "refused", "irqs", "vnethdr"
    );
    for (name, v) in vms {
        println!(
            "{:<20} {:<13} {:<32} {:<8} {:<9} {:>6} {:>7} {:>10} {:>7}",
            name,
            match v.transport {
                VmTransport::VhostUser => v.device.to_string(),
                VmTransport::Ivshmem => format!("{}/ivshmem", v.device),
            },
            v.socket,
            if v.running { "running" } else { "stopped" },
            if v.mem_ready { "mapped" } else { "-" },
            v.starts,
            v.refused,
            v.irqs,
            v.vnet_hdr_len
        );
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_=,./:".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn print_ports(ports: &[&PortEntry]) {
    if ports.is_empty() {
        return;
    }
    println!(
        "{:<20} {:<5} {:<8} {:>4} {:>9} {:>12} {:>12} {:>10} {:>10} {:>6}  sends from",
        "port",
        "kind",
        "client",
        "mem",
        "rings",
        "tx_packets",
        "rx_packets",
        "rx_drops",
        "tx_drops",
        "resets"
    );
    for p in ports {
        println!(
            "{:<20} {:<5} {:<8} {:>4} {:>9} {:>12} {:>12} {:>10} {:>10} {:>6}  {}",
            p.name,
            p.kind,
            if p.attached { "attached" } else { "-" },
            p.mem_id,
            format!("{}x{}", p.tx_rings, p.slots),
            p.stats.tx_packets,
            p.stats.rx_packets,
            p.stats.rx_drops,
            p.stats.tx_drops,
            p.stats.ring_resets,
            p.mac_lock.as_deref().unwrap_or("any")
        );
    }
    let nics: Vec<(&str, &NicEntry)> = ports
        .iter()
        .filter_map(|p| p.nic.as_ref().map(|n| (p.name.as_str(), n)))
        .collect();
    if nics.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:<9} {:<5} {:>12} {:>14} {:>9} {:>12} {:>14} {:>9} {:>5}",
        "nic port",
        "backend",
        "link",
        "rx_packets",
        "rx_bytes",
        "rx_drops",
        "tx_packets",
        "tx_bytes",
        "tx_drops",
        "flaps"
    );
    for (name, n) in &nics {
        println!(
            "{:<20} {:<9} {:<5} {:>12} {:>14} {:>9} {:>12} {:>14} {:>9} {:>5}",
            name,
            n.backend.as_deref().unwrap_or("-"),
            n.link,
            n.rx_packets,
            n.rx_bytes,
            n.rx_drops,
            n.tx_packets,
            n.tx_bytes,
            n.tx_drops,
            n.link_changes
        );
    }
    for (name, n) in &nics {
        if let Some(note) = &n.note {
            println!("{name}: {note}");
        }
    }
}
