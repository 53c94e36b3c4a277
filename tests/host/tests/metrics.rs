//! Tier 2, issue 18: Prometheus metrics and `ptnetctl top`. The real daemon serves the
//! metrics, `ptnetctl top` shows the traffic as rates, Debian's `promtool` accepts a scrape,
//! and a real Prometheus server (Debian's, a private instance) scrapes the
//! daemon while two clients exchange frames and answers a query for a port's frame rate.
//! Needs `promtool` and `prometheus` (`ci/prereqs.sh prometheus`): without them the test
//! fails, it does not skip.
#![cfg(feature = "host-tests")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;

/// A TCP port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// The value of the sample `series` (name and labels exactly as exposed) in `text`.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Kills a child process (by PID) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_scrape_passes_promtool_and_a_prometheus_server_sees_a_ports_frame_rate() {
    let mport = free_port();
    let d = Daemon::start_with_config(
        "metrics",
        &format!("[daemon]\nmetrics = \"127.0.0.1:{mport}\"\n\n[[switch]]\nname = \"vale0\"\n"),
    );
    // Two clients on vale0, frames from a to b for the whole test.
    let _rx = d.client(
        &[
            "recv",
            "-p",
            "vale0:b",
            "--me",
            "2",
            "--to",
            "1",
            "-c",
            "1000000000",
            "--timeout",
            "120",
            "--announce-ms",
            "50",
        ],
        true,
    );
    let _tx = d.client(
        &[
            "send",
            "-p",
            "vale0:a",
            "--me",
            "1",
            "--to",
            "2",
            "-c",
            "0",
            "--burst",
            "32",
            "--pause-us",
            "2000",
            "--timeout",
            "120",
        ],
        false,
    );
    let b = "ptnet_port_rx_frames_total{port=\"vale0:b\",switch=\"vale0\",kind=\"vale\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let (code, text) = get(mport, "/metrics").expect("scrape");
        assert_eq!(code, 200, "{text}");
        if sample(&text, b).is_some_and(|v| v > 0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "vale0:b received nothing:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(get(mport, "/other").unwrap().0, 404);
    for family in [
        "ptnet_port_tx_frames_total",
        "ptnet_port_kicks_total",
        "ptnet_switch_ports",
        "ptnet_port_ring_used_slots",
        "ptnet_daemon_threads",
        "ptnet_daemon_resident_memory_bytes",
    ] {
        assert!(scrape.contains(&format!("# TYPE {family} ")), "{family}");
    }
    // The switch looked the traffic up and learned its stations (the receiver announces
    // itself, the sender's frames teach the rest).
    let lookups = sample(&scrape, "ptnet_switch_lookups_total{switch=\"vale0\"}");
    assert!(lookups.is_some_and(|v| v > 0), "{scrape}");
    assert!(sample(&scrape, "ptnet_switch_floods_total{switch=\"vale0\"}").is_some());
    let learned = sample(&scrape, "ptnet_switch_learned_addresses{switch=\"vale0\"}");
    assert!(learned.is_some_and(|v| v >= 1), "{scrape}");

    // `ptnetctl top` sees the same traffic as rates.
    let (ok, out) = d.ctl(&["top", "--count", "1", "--interval", "1"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("vale0:b "))
        .unwrap_or_else(|| panic!("no vale0:b row:\n{out}"));
    let rx: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(rx > 0.0, "{out}");
    assert!(out.contains("rx frames/s"), "{out}");
    eprintln!("ptnetctl top:\n{out}");

    // Debian's promtool: the exposition follows the format and the naming conventions.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (ci/prereqs.sh prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A Prometheus server of our own scrapes every second; the rate of vale0:b's frames is
    // above zero once it has two samples.
    let pport = free_port();
    let cfg = d.dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ptnetd\n    \
             static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.dir.join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                d.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (ci/prereqs.sh prometheus)"),
    );
    // rate(ptnet_port_rx_frames_total{port="vale0:b"}[5s]), URL-encoded.
    let query =
        "/api/v1/query?query=rate(ptnet_port_rx_frames_total%7Bport%3D%22vale0%3Ab%22%7D%5B5s%5D)";
    let deadline = Instant::now() + Duration::from_secs(60);
    let rate = loop {
        let answer = get(pport, query).ok().and_then(|(code, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200).then_some(())?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|r| r.parse::<f64>().ok())
        });
        if let Some(r) = answer.filter(|r| *r > 0.0) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus gave no rate for vale0:b within 60 s (its log: {})",
            d.dir.join("prometheus.log").display()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("Prometheus: vale0:b receives {rate:.0} frames/s");
}
