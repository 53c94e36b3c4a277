//! `ptnetctl top` and `list --watch`: the daemon's listing again and again, refreshed in place
//! (`top` turns the counters into rates per second, busiest ports first).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ptnet_proto::{self as proto, Counters, PortEntry, Reply, Request};

/// Clears the terminal and puts the cursor home (ANSI), so the next table replaces this one.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Every port of a listing, switches' first.
fn ports(reply: Reply) -> Option<Vec<PortEntry>> {
    match reply {
        Reply::Listing { switches, pipes } => Some(
            switches
                .into_iter()
                .flat_map(|s| s.ports)
                .chain(pipes)
                .collect(),
        ),
        _ => None,
    }
}

/// Calls `each` with every fresh listing, `interval` apart, `count` times (forever if none);
/// `each` returns false to stop.
pub fn repeat(
    socket: &str,
    interval: Duration,
    count: Option<u64>,
    mut each: impl FnMut(Reply) -> bool,
) -> ExitCode {
    let mut n = 0u64;
    loop {
        let started = Instant::now();
        match proto::call(socket, Request::List) {
            Ok((reply, _, _)) => {
                if !each(reply) {
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!(
                    "ptnetctl: cannot reach ptnetd at {socket}: {}",
                    proto::error_chain(&e)
                );
                return ExitCode::FAILURE;
            }
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// One port's rates between two listings.
struct Rates {
    name: String,
    kind: String,
    rx_fps: f64,
    tx_fps: f64,
    rx_mbps: f64,
    tx_mbps: f64,
    drops: f64,
    kicks: f64,
    irqs: f64,
}

fn rates(p: &PortEntry, before: &Counters, secs: f64) -> Rates {
    let d = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
    let s = &p.stats;
    Rates {
        name: p.name.clone(),
        kind: p.kind.clone(),
        rx_fps: d(s.rx_packets, before.rx_packets),
        tx_fps: d(s.tx_packets, before.tx_packets),
        rx_mbps: d(s.rx_bytes, before.rx_bytes) * 8.0 / 1e6,
        tx_mbps: d(s.tx_bytes, before.tx_bytes) * 8.0 / 1e6,
        drops: d(s.rx_drops + s.tx_drops, before.rx_drops + before.tx_drops),
        kicks: d(s.kicks, before.kicks),
        irqs: d(s.irqs, before.irqs),
    }
}

/// `ptnetctl top`: rates per port over each interval, busiest first; `in_place` clears the
/// screen before each table.
pub fn top(socket: &str, interval: Duration, count: Option<u64>, in_place: bool) -> ExitCode {
    let mut last: Option<(Instant, HashMap<String, Counters>)> = None;
    // The first listing only gives the starting counters: one more than asked.
    repeat(socket, interval, count.map(|c| c + 1), |reply| {
        let now = Instant::now();
        let Some(ports) = ports(reply) else {
            eprintln!("ptnetctl: unexpected reply");
            return false;
        };
        if let Some((then, before)) = &last {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            let mut rows: Vec<Rates> = ports
                .iter()
                .map(|p| rates(p, before.get(&p.name).unwrap_or(&p.stats), secs))
                .collect();
            rows.sort_by(|a, b| (b.rx_fps + b.tx_fps).total_cmp(&(a.rx_fps + a.tx_fps)));
            let mut out = String::new();
            if in_place {
                out.push_str(CLEAR);
            }
            out.push_str(&format!(
                "ptnetd at {socket}: {} ports, rates over {secs:.1} s\n",
                rows.len()
            ));
            out.push_str(&format!(
                "{:<24} {:<5} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9}\n",
                "port",
                "kind",
                "rx frames/s",
                "tx frames/s",
                "rx Mbit/s",
                "tx Mbit/s",
                "drops/s",
                "kicks/s",
                "irqs/s"
            ));
            for r in &rows {
                out.push_str(&format!(
                    "{:<24} {:<5} {:>12.0} {:>12.0} {:>10.2} {:>10.2} {:>9.0} {:>9.0} {:>9.0}\n",
                    r.name,
                    r.kind,
                    r.rx_fps,
                    r.tx_fps,
                    r.rx_mbps,
                    r.tx_mbps,
                    r.drops,
                    r.kicks,
                    r.irqs
                ));
            }
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return false;
            }
        }
        last = Some((now, ports.into_iter().map(|p| (p.name, p.stats)).collect()));
        true
    })
}
