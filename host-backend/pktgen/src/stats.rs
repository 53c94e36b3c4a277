//! Measurements: the process's CPU time, an RTT histogram, the live per-second lines and the
//! final report (text or one JSON object).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::payload::CheckCounts;

/// CPU time the process used, user and system.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User seconds.
    pub user_s: f64,
    /// System seconds.
    pub sys_s: f64,
}

impl CpuTimes {
    /// The whole process's CPU time so far (`getrusage(RUSAGE_SELF)`: all its threads).
    pub fn now() -> Self {
        crate::sys::cpu_times().map_or(CpuTimes::default(), |(user_s, sys_s)| CpuTimes {
            user_s,
            sys_s,
        })
    }

    /// CPU used since `earlier`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            sys_s: (self.sys_s - earlier.sys_s).max(0.0),
        }
    }
}

/// A log-linear histogram of nanosecond values: exact below 128 ns, then 128 buckets per
/// power of two (relative error under 0.8%). Fixed size, so recording never allocates.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
    sum: u128,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every u64 value.
const NUM_BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * SUB as usize;

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let q = v >> (e - SUB_BITS); // in [SUB, 2 * SUB)
    ((e - SUB_BITS + 1) as u64 * SUB + (q - SUB)) as usize
}

/// The smallest value of bucket `b`.
fn bucket_floor(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let e = b / SUB + u64::from(SUB_BITS) - 1;
    let q = b % SUB + SUB;
    q << (e - u64::from(SUB_BITS))
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; NUM_BUCKETS],
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.buckets[bucket_of(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest value (exact), if any.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest value (exact), if any.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0..=1): the floor of its bucket, clamped to [min, max]; the
    /// exact maximum for the last rank.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return Some(self.max);
        }
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_floor(b).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// Where live lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Nowhere (`--quiet`).
    Off,
    /// Standard output.
    Stdout,
    /// Standard error (with `--json`, which keeps stdout for the summary).
    Stderr,
}

impl Live {
    /// Prints one line.
    pub fn line(self, s: &str) {
        match self {
            Live::Off => {}
            Live::Stdout => println!("{s}"),
            Live::Stderr => eprintln!("{s}"),
        }
    }
}

/// Prints a rate line about once a second.
#[derive(Debug)]
pub struct Meter {
    label: String,
    live: Live,
    last: Instant,
    last_packets: u64,
    last_bytes: u64,
}

/// Packets per second and bits per second as Mpps and Gbit/s.
pub fn rates(packets: u64, bytes: u64, d: Duration) -> (f64, f64) {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return (0.0, 0.0);
    }
    (packets as f64 / s / 1e6, bytes as f64 * 8.0 / s / 1e9)
}

impl Meter {
    /// A meter labelled `label` (mode and port), starting now.
    pub fn new(label: String, live: Live, now: Instant) -> Self {
        Meter {
            label,
            live,
            last: now,
            last_packets: 0,
            last_bytes: 0,
        }
    }

    /// Reports if a second has passed; `extra()` is appended to the line (called only then,
    /// so the per-batch path formats nothing). Returns whether it printed (callers with
    /// per-second state reset it then).
    pub fn tick(
        &mut self,
        now: Instant,
        packets: u64,
        bytes: u64,
        extra: impl FnOnce() -> String,
    ) -> bool {
        let d = now.saturating_duration_since(self.last);
        if d < Duration::from_secs(1) {
            return false;
        }
        let (mpps, gbps) = rates(packets - self.last_packets, bytes - self.last_bytes, d);
        self.live.line(&format!(
            "{}: {mpps:8.3} Mpps {gbps:8.3} Gbit/s{}",
            self.label,
            extra()
        ));
        self.last = now;
        self.last_packets = packets;
        self.last_bytes = bytes;
        true
    }
}

/// Ping results.
#[derive(Debug, Clone, Default)]
pub struct PingCounts {
    /// Pings sent.
    pub sent: u64,
    /// Matching pongs received.
    pub received: u64,
    /// Pings whose pong did not come in time.
    pub timeouts: u64,
    /// Round-trip times in ns.
    pub rtt_ns: Histogram,
}

/// The final summary of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `tx`, `rx`, `ping`, `pong`, `fwd`: also the prefix of the rate metrics.
    pub mode: &'static str,
    /// Port names.
    pub ports: Vec<String>,
    /// Frame size asked for (tx, ping).
    pub size_bytes: Option<usize>,
    /// Batch size.
    pub batch: u32,
    /// Whether the daemon busy-polls for us and we spin.
    pub busy_poll: bool,
    /// Packets counted (sent, received, echoed or forwarded, depending on the mode).
    pub packets: u64,
    /// Their bytes (frames without CRC).
    pub bytes: u64,
    /// From the first to the last packet (whole run if none).
    pub duration: Duration,
    /// CPU used over `duration`.
    pub cpu: CpuTimes,
    /// Receiver checks (`rx --check`).
    pub check: Option<CheckCounts>,
    /// Ping results.
    pub ping: Option<PingCounts>,
    /// Frames still queued when a sender gave up draining its rings.
    pub tx_pending_at_exit: Option<u64>,
    /// fwd: slots of multi-slot frames, forwarded slot by slot.
    pub frag_slots: Option<u64>,
}

fn us(ns: Option<u64>) -> Value {
    ns.map_or(Value::Null, |v| json!(round3(v as f64 / 1e3)))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// CPU use as a percentage of one core over the measured duration.
    pub fn cpu_percent(&self) -> f64 {
        let s = self.duration.as_secs_f64();
        if s <= 0.0 {
            0.0
        } else {
            100.0 * (self.cpu.user_s + self.cpu.sys_s) / s
        }
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> Value {
        let (mpps, gbps) = rates(self.packets, self.bytes, self.duration);
        let m = self.mode;
        let mut o = Map::new();
        o.insert("mode".into(), json!(m));
        o.insert(
            "port".into(),
            if self.ports.len() == 1 {
                json!(self.ports[0])
            } else {
                json!(self.ports)
            },
        );
        if let Some(s) = self.size_bytes {
            o.insert("size_bytes".into(), json!(s));
        }
        o.insert("batch".into(), json!(self.batch));
        o.insert("busy_poll".into(), json!(self.busy_poll));
        o.insert("packets".into(), json!(self.packets));
        o.insert("bytes".into(), json!(self.bytes));
        o.insert(
            "duration_s".into(),
            json!((self.duration.as_secs_f64() * 1e6).round() / 1e6),
        );
        o.insert(format!("{m}_mpps"), json!(round3(mpps)));
        o.insert(format!("{m}_gbps"), json!(round3(gbps)));
        o.insert("cpu_user_s".into(), json!(round3(self.cpu.user_s)));
        o.insert("cpu_sys_s".into(), json!(round3(self.cpu.sys_s)));
        o.insert("cpu_percent".into(), json!(round3(self.cpu_percent())));
        if let Some(c) = &self.check {
            o.insert("good".into(), json!(c.good));
            o.insert("lost".into(), json!(c.lost));
            o.insert("out_of_order".into(), json!(c.out_of_order));
            o.insert("bad_payload".into(), json!(c.bad_payload));
        }
        if let Some(p) = &self.ping {
            o.insert("pings_sent".into(), json!(p.sent));
            o.insert("pongs_received".into(), json!(p.received));
            o.insert("timeouts".into(), json!(p.timeouts));
            let h = &p.rtt_ns;
            o.insert("rtt_us_min".into(), us(h.min()));
            o.insert("rtt_us_p50".into(), us(h.quantile(0.5)));
            o.insert("rtt_us_p90".into(), us(h.quantile(0.9)));
            o.insert("rtt_us_p99".into(), us(h.quantile(0.99)));
            o.insert("rtt_us_max".into(), us(h.max()));
            o.insert(
                "rtt_us_mean".into(),
                h.mean().map_or(Value::Null, |v| json!(round3(v / 1e3))),
            );
        }
        if let Some(n) = self.tx_pending_at_exit {
            o.insert("tx_pending_at_exit".into(), json!(n));
        }
        if let Some(n) = self.frag_slots {
            o.insert("frag_slots".into(), json!(n));
        }
        Value::Object(o)
    }

    /// The summary for people, several lines.
    pub fn to_text(&self) -> String {
        let (mpps, gbps) = rates(self.packets, self.bytes, self.duration);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {}: {} packets, {} bytes in {:.3} s: {mpps:.3} Mpps, {gbps:.3} Gbit/s",
            self.mode,
            self.ports.join(" <-> "),
            self.packets,
            self.bytes,
            self.duration.as_secs_f64(),
        );
        let _ = writeln!(
            s,
            "  cpu {:.1}% of a core (user {:.3} s, sys {:.3} s){}",
            self.cpu_percent(),
            self.cpu.user_s,
            self.cpu.sys_s,
            if self.busy_poll { ", busy-poll" } else { "" }
        );
        if let Some(c) = &self.check {
            let _ = writeln!(
                s,
                "  check: good {}, lost {}, out_of_order {}, bad_payload {}",
                c.good, c.lost, c.out_of_order, c.bad_payload
            );
        }
        if let Some(p) = &self.ping {
            let h = &p.rtt_ns;
            let f = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{:.2}", v as f64 / 1e3));
            let _ = writeln!(
                s,
                "  pings {} sent, {} answered, {} timed out",
                p.sent, p.received, p.timeouts
            );
            let _ = writeln!(
                s,
                "  rtt µs: min {} p50 {} p90 {} p99 {} max {}",
                f(h.min()),
                f(h.quantile(0.5)),
                f(h.quantile(0.9)),
                f(h.quantile(0.99)),
                f(h.max())
            );
        }
        if let Some(n) = self.tx_pending_at_exit.filter(|n| *n > 0) {
            let _ = writeln!(s, "  {n} frames were still queued at exit");
        }
        if let Some(n) = self.frag_slots.filter(|n| *n > 0) {
            let _ = writeln!(s, "  {n} slots of multi-slot frames forwarded one by one");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_their_floors_invert_them() {
        let mut prev = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < NUM_BUCKETS);
            assert!(b >= prev, "monotonic at {v}");
            assert!(b <= prev + 1 || v > 100_000, "contiguous at {v}");
            prev = b;
            let f = bucket_floor(b);
            assert!(f <= v && bucket_of(f) == b, "floor of {v}");
            assert!((v - f) as f64 <= v as f64 / SUB as f64, "error at {v}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_distribution() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.min(), Some(1000));
        assert_eq!(h.max(), Some(10_000_000));
        for (q, want) in [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Some(10_000_000));
        assert_eq!(Histogram::new().quantile(0.5), None);
    }

    #[test]
    fn json_metrics_carry_units_and_the_mode() {
        let mut ping = PingCounts {
            sent: 3,
            received: 3,
            ..Default::default()
        };
        // Values at bucket floors, so the percentiles are exact.
        for v in [10_240, 20_480, 30_720] {
            ping.rtt_ns.record(v);
        }
        let r = Report {
            mode: "ping",
            ports: vec!["vale0:a".into()],
            size_bytes: Some(60),
            batch: 512,
            busy_poll: false,
            packets: 2_000_000,
            bytes: 120_000_000,
            duration: Duration::from_secs(2),
            cpu: CpuTimes {
                user_s: 1.0,
                sys_s: 0.5,
            },
            check: None,
            ping: Some(ping),
            tx_pending_at_exit: None,
            frag_slots: None,
        };
        let j = r.to_json();
        assert_eq!(j["ping_mpps"], json!(1.0));
        assert_eq!(j["ping_gbps"], json!(0.48));
        assert_eq!(j["cpu_percent"], json!(75.0));
        assert_eq!(j["rtt_us_min"], json!(10.24));
        assert_eq!(j["rtt_us_p50"], json!(20.48));
        assert_eq!(j["rtt_us_max"], json!(30.72));
        assert_eq!(j["port"], json!("vale0:a"));
        assert!(r.to_text().contains("p50 20.48"));
    }
}
