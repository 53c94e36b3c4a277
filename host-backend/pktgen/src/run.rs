//! The traffic loops: `tx`, `rx`, `ping`, `pong`, `fwd`, generic over the [`Backend`].
//!
//! Every loop works a batch at a time and checks its stop conditions (count, duration, idle
//! time, a termination signal) once per batch. When a ring is full (tx) or empty (rx) the
//! loop sleeps in [`Backend::wait`] with a bounded timeout, or spins if the port was attached
//! in busy-poll mode. Buffers are allocated once, before the first packet.

use std::time::{Duration, Instant};

use ptnet_spec::name::{Base, PortName};
use ptnet_spec::netmap::NS_MOREFRAG;

use crate::backend::{AttachOptions, Backend, Geometry, Want};
use crate::config::{Config, Error, MAX_FRAGS, Mode};
use crate::payload::{self, Checker, Kind, MAX_FRAME, Mac, Template};
use crate::rate::TokenBucket;
use crate::stats::{CpuTimes, Live, Meter, PingCounts, Report};

/// Longest single sleep in a loop, so that stop conditions are seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How long a sender keeps syncing at exit for the other side to take its last frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::sys::install_signal_handlers;
use crate::sys::stop_requested;

/// One round of busy-polling that found nothing: let other runnable threads have the core
/// first. On a machine with fewer cores than polling threads (the sender, the receiver and
/// ptnetd's busy sync loops), pure spinning starves the very threads being waited for; with
/// a core to spare, `sched_yield` returns at once.
fn idle_spin() {
    std::thread::yield_now();
}

/// Attaches the configured ports with backend `B` and runs the configured mode. The caller
/// prints the report, then applies [`verdict`].
pub fn run<B: Backend>(cfg: &Config) -> Result<Report, Error> {
    cfg.validate()?;
    let attach = |port: &String| {
        B::attach(&AttachOptions {
            port: port.clone(),
            socket: cfg.socket.clone(),
            busy_poll: cfg.busy_poll,
            all_ethertypes: cfg.mode == Mode::Fwd,
        })
        .map_err(|e| Error::Attach {
            port: port.clone(),
            socket: cfg.socket.clone(),
            source: Box::new(e),
        })
    };
    let mut a = attach(&cfg.ports[0])?;
    let cfg = &with_port_mac(cfg, &a);
    match cfg.mode {
        Mode::Tx => tx(&mut a, cfg),
        Mode::Rx => rx(&mut a, cfg),
        Mode::Ping => ping(&mut a, cfg),
        Mode::Pong => pong(&mut a, cfg),
        Mode::Fwd => {
            let mut b = attach(&cfg.ports[1])?;
            fwd(&mut a, &mut b, cfg)
        }
    }
}

/// `cfg` with the port's own MAC as source, if it asks for that
/// ([`Config::src_mac_from_port`]) and the port has one.
pub fn with_port_mac<B: Backend>(cfg: &Config, p: &B) -> Config {
    let mut c = cfg.clone();
    if let Some(mac) = p.own_mac().filter(|_| cfg.src_mac_from_port) {
        c.src_mac = mac;
    }
    c
}

/// Applies `--expect-no-loss` to a finished run.
pub fn verdict(cfg: &Config, r: &Report) -> Result<(), Error> {
    if !cfg.expect_no_loss {
        return Ok(());
    }
    if let Some(c) = &r.check {
        if c.lost + c.out_of_order + c.bad_payload > 0 {
            return Err(Error::Check(format!(
                "{} lost, {} out of order, {} with a bad payload",
                c.lost, c.out_of_order, c.bad_payload
            )));
        }
    }
    if let Some(p) = &r.ping {
        if p.timeouts > 0 {
            return Err(Error::Check(format!("{} pings unanswered", p.timeouts)));
        }
    }
    Ok(())
}

fn live(cfg: &Config) -> Live {
    match (cfg.quiet, cfg.json) {
        (true, _) => Live::Off,
        (false, true) => Live::Stderr,
        (false, false) => Live::Stdout,
    }
}

/// When a loop stops.
struct Limits {
    count: Option<u64>,
    deadline: Option<Instant>,
    idle: Option<Duration>,
}

impl Limits {
    fn new(cfg: &Config, start: Instant) -> Self {
        Limits {
            count: cfg.count,
            deadline: cfg.duration.map(|d| start + d),
            idle: cfg.idle,
        }
    }

    /// Whether to stop at `now`, having done `done` packets, the last one at `last`.
    fn reached(&self, now: Instant, done: u64, last: Option<Instant>) -> bool {
        stop_requested()
            || self.count.is_some_and(|c| done >= c)
            || self.deadline.is_some_and(|d| now >= d)
            || matches!((self.idle, last), (Some(i), Some(l)) if now.saturating_duration_since(l) >= i)
    }

    /// Packets left before the count is reached, at most `batch`.
    fn budget(&self, done: u64, batch: u32) -> u32 {
        self.count.map_or(batch, |c| {
            c.saturating_sub(done).min(u64::from(batch)) as u32
        })
    }

    /// A sleep bounded by [`MAX_SLEEP`] and the deadline.
    fn sleep_bound(&self, now: Instant) -> Duration {
        self.deadline.map_or(MAX_SLEEP, |d| {
            d.saturating_duration_since(now)
                .min(MAX_SLEEP)
                .max(Duration::from_millis(1))
        })
    }
}

fn wait<B: Backend>(p: &mut B, want: Want, t: Duration) -> Result<bool, Error> {
    p.wait(want, Some(t)).map_err(|source| Error::Wait {
        port: p.name().to_owned(),
        source,
    })
}

/// A receiver's pass found nothing: unless frames are already waiting, spin once (busy
/// polling) or sleep until frames arrive, at most `bound`.
fn idle_rx<B: Backend>(p: &mut B, g: &Geometry, busy: bool, bound: Duration) -> Result<(), Error> {
    if (0..g.rx_rings).all(|r| p.rx_pending(r) == 0) {
        if busy {
            idle_spin();
        } else {
            wait(p, Want::Rx, bound)?;
        }
    }
    Ok(())
}

/// Where the traffic of a run starts and ends, for rates and CPU over the active period.
#[derive(Debug, Clone, Copy)]
struct Window {
    first: Option<(Instant, CpuTimes)>,
    last: Option<Instant>,
}

impl Window {
    fn new() -> Self {
        Window {
            first: None,
            last: None,
        }
    }

    /// Marks traffic seen at `started` (the start of the batch) and now.
    fn saw(&mut self, started: Instant) {
        if self.first.is_none() {
            self.first = Some((started, CpuTimes::now()));
        }
        self.last = Some(Instant::now());
    }

    /// Duration and CPU of the active period (the whole run if no traffic).
    fn close(&self, start: Instant, cpu0: CpuTimes) -> (Duration, CpuTimes) {
        let now = Instant::now();
        let cpu = CpuTimes::now();
        match (self.first, self.last) {
            (Some((f, c)), Some(l)) => (l - f, cpu.since(c)),
            _ => (now - start, cpu.since(cpu0)),
        }
    }
}

fn base_report<B: Backend>(cfg: &Config, ports: &[&B], busy: bool) -> Report {
    Report {
        mode: cfg.mode.name(),
        ports: ports.iter().map(|p| p.name().to_owned()).collect(),
        size_bytes: matches!(cfg.mode, Mode::Tx | Mode::Ping).then_some(cfg.size),
        batch: cfg.batch,
        busy_poll: busy,
        packets: 0,
        bytes: 0,
        duration: Duration::ZERO,
        cpu: CpuTimes::default(),
        check: None,
        ping: None,
        tx_pending_at_exit: None,
        frag_slots: None,
    }
}

/// Whether `name` is a port of a VALE switch (not a pipe), which learns addresses from the
/// frames it is sent.
fn is_vale_port(name: &str) -> bool {
    PortName::parse(name).is_ok_and(|n| matches!(n.base, Base::Vale { .. }) && n.pipe.is_none())
}

/// Teaches a VALE switch that `mac` is behind port `p`, so that frames to it are not flooded
/// to every port: one frame from `mac` to `mac`, which the switch learns from and then drops
/// (it never sends a frame back to its source port; the port's `tx_drops` counts it).
/// Receivers (`rx`, `pong`) do this once at start; senders teach the switch as they send.
fn announce<B: Backend>(p: &mut B, mac: Mac) {
    if !is_vale_port(p.name()) {
        return;
    }
    let t = Template {
        dst: mac,
        src: mac,
        len: 60,
        kind: Kind::Data,
    };
    p.tx_batch(0, 1, |_, buf| t.write(buf, 0, 0));
    p.txsync(0);
}

/// The first TX ring from `r` on with room, if any.
fn ring_with_space<B: Backend>(p: &B, r: u32, n: u32) -> Option<u32> {
    (0..n).map(|k| (r + k) % n).find(|&k| p.tx_space(k) > 0)
}

/// `tx`: sends numbered frames as fast as allowed.
pub fn tx<B: Backend>(p: &mut B, cfg: &Config) -> Result<Report, Error> {
    cfg.check_max_frame(p.name(), p.max_frame())?;
    let g = p.rings();
    let slots_per_frame = cfg.slots_per_frame(g.buf_size, g.tx_slots)?;
    let busy = p.busy_poll();
    let tpl = Template {
        dst: cfg.dst_mac,
        src: cfg.src_mac,
        len: cfg.size as u16,
        kind: Kind::Data,
    };
    let frame_bytes = cfg.size as u64;
    // Multi-slot frames are built here, then copied out in buffer-sized fragments.
    let mut scratch = vec![0u8; if slots_per_frame > 1 { cfg.size } else { 0 }];
    let start = Instant::now();
    let cpu0 = CpuTimes::now();
    let lim = Limits::new(cfg, start);
    let mut meter = Meter::new(format!("tx {}", p.name()), live(cfg), start);
    let mut bucket = cfg
        .rate_pps
        .map(|r| TokenBucket::new(r, cfg.batch, Duration::ZERO));
    let mut sent = 0u64;
    let mut r = 0u32;
    loop {
        let now = Instant::now();
        if lim.reached(now, sent, None) {
            break;
        }
        meter.tick(now, sent, sent * frame_bytes, String::new);
        let mut want = lim.budget(sent, cfg.batch);
        if let Some(b) = &mut bucket {
            let avail = b.available(now - start);
            if avail == 0 {
                std::thread::sleep(b.time_until(want).min(lim.sleep_bound(now)));
                continue;
            }
            want = want.min(avail);
        }
        let Some(ring) = ring_with_space(p, r, g.tx_rings) else {
            for k in 0..g.tx_rings {
                p.txsync(k);
            }
            if ring_with_space(p, r, g.tx_rings).is_none() {
                if busy {
                    idle_spin();
                } else {
                    wait(p, Want::Tx, lim.sleep_bound(now))?;
                }
            }
            continue;
        };
        r = ring;
        let n = if slots_per_frame == 1 {
            p.tx_batch(r, want, |i, buf| tpl.write(buf, sent + u64::from(i), 0))
        } else {
            let mut n = 0;
            while n < want {
                tpl.write(&mut scratch, sent + u64::from(n), 0);
                let mut frags: [&[u8]; MAX_FRAGS] = [&[]; MAX_FRAGS];
                for (f, c) in frags.iter_mut().zip(scratch.chunks(g.buf_size as usize)) {
                    *f = c;
                }
                if !p.tx_frags(r, &frags[..slots_per_frame]) {
                    break;
                }
                n += 1;
            }
            n
        };
        if let Some(b) = &mut bucket {
            b.take(n);
        }
        sent += u64::from(n);
        p.txsync(r);
        if n == 0 && want > 0 {
            // Some room, but not for a whole multi-slot frame: wait until there is (the
            // client library tells the daemon this ring would block).
            if busy {
                idle_spin();
            } else {
                wait(p, Want::Tx, lim.sleep_bound(Instant::now()))?;
            }
        }
        r = (r + 1) % g.tx_rings;
    }
    let (duration, cpu) = (start.elapsed(), CpuTimes::now().since(cpu0));
    let pending = drain(p, busy)?;
    let mut rep = base_report(cfg, &[&*p], busy);
    rep.packets = sent;
    rep.bytes = sent * frame_bytes;
    rep.duration = duration;
    rep.cpu = cpu;
    rep.tx_pending_at_exit = Some(pending);
    Ok(rep)
}

/// Syncs until the other side took every queued frame (or [`DRAIN_TIMEOUT`]); returns the
/// slots still queued.
fn drain<B: Backend>(p: &mut B, busy: bool) -> Result<u64, Error> {
    let g = p.rings();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let mut queued = 0u64;
        for k in 0..g.tx_rings {
            p.txsync_reclaim(k);
            queued += u64::from((g.tx_slots - 1).saturating_sub(p.tx_space(k)));
        }
        if queued == 0 || Instant::now() >= deadline {
            return Ok(queued);
        }
        if busy {
            idle_spin();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Reassembles multi-slot frames for the checker, in a buffer allocated once.
struct Reassembly {
    buf: Vec<u8>,
    in_frame: bool,
}

impl Reassembly {
    fn new(enabled: bool) -> Self {
        Reassembly {
            buf: Vec::with_capacity(if enabled { MAX_FRAME } else { 0 }),
            in_frame: false,
        }
    }

    /// Feeds one slot; returns the complete frame when `more` is false.
    fn push(&mut self, frag: &[u8], more: bool) -> Option<&[u8]> {
        if !self.in_frame {
            self.buf.clear();
        }
        // Bounded by the capacity: an overlong chain is cut and then fails the check.
        let room = self.buf.capacity() - self.buf.len();
        self.buf.extend_from_slice(&frag[..frag.len().min(room)]);
        self.in_frame = more;
        (!more).then_some(&self.buf[..])
    }
}

/// `rx`: receives frames, counting them and, with `--check`, verifying them.
pub fn rx<B: Backend>(p: &mut B, cfg: &Config) -> Result<Report, Error> {
    let g = p.rings();
    let busy = p.busy_poll();
    announce(p, cfg.src_mac);
    let start = Instant::now();
    let cpu0 = CpuTimes::now();
    let lim = Limits::new(cfg, start);
    let mut meter = Meter::new(format!("rx {}", p.name()), live(cfg), start);
    let check = cfg.check || cfg.expect_no_loss;
    let mut checker = Checker::new();
    let mut reasm = Reassembly::new(check);
    let mut chained = false;
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut win = Window::new();
    loop {
        let now = Instant::now();
        if lim.reached(now, packets, win.last) {
            break;
        }
        meter.tick(now, packets, bytes, || {
            if check {
                format!("  lost {}", checker.finish(None).lost)
            } else {
                String::new()
            }
        });
        let mut got = 0;
        for r in 0..g.rx_rings {
            let max = lim.budget(packets, cfg.batch);
            got += p.rx_batch(r, max, |buf, slot| {
                let more = slot.flags & NS_MOREFRAG != 0;
                bytes += buf.len() as u64;
                if check {
                    if more || chained {
                        if let Some(f) = reasm.push(buf, more) {
                            checker.frame(f);
                        }
                    } else {
                        checker.frame(buf);
                    }
                }
                chained = more;
                packets += u64::from(!more);
            });
            p.rxsync(r);
        }
        if got > 0 {
            win.saw(now);
        } else {
            idle_rx(p, &g, busy, lim.sleep_bound(now))?;
        }
    }
    let (duration, cpu) = win.close(start, cpu0);
    let mut rep = base_report(cfg, &[&*p], busy);
    rep.packets = packets;
    rep.bytes = bytes;
    rep.duration = duration;
    rep.cpu = cpu;
    rep.check = check.then(|| checker.finish(cfg.count));
    Ok(rep)
}

/// Per-second RTT accumulators for the live line.
#[derive(Default)]
struct SecondRtt {
    n: u64,
    sum: u64,
    min: u64,
    max: u64,
}

impl SecondRtt {
    fn add(&mut self, v: u64) {
        self.min = if self.n == 0 { v } else { self.min.min(v) };
        self.max = self.max.max(v);
        self.sum += v;
        self.n += 1;
    }

    fn line(&self) -> String {
        if self.n == 0 {
            return "  rtt µs -".into();
        }
        format!(
            "  rtt µs min {:.2} avg {:.2} max {:.2}",
            self.min as f64 / 1e3,
            self.sum as f64 / self.n as f64 / 1e3,
            self.max as f64 / 1e3
        )
    }
}

/// `ping`: one frame at a time, each timed until its pong comes back.
pub fn ping<B: Backend>(p: &mut B, cfg: &Config) -> Result<Report, Error> {
    cfg.check_max_frame(p.name(), p.max_frame())?;
    let g = p.rings();
    cfg.slots_per_frame(g.buf_size, g.tx_slots)?;
    let busy = p.busy_poll();
    let tpl = Template {
        dst: cfg.dst_mac,
        src: cfg.src_mac,
        len: cfg.size as u16,
        kind: Kind::Ping,
    };
    let start = Instant::now();
    let ns = |t: Instant| (t - start).as_nanos() as u64;
    let cpu0 = CpuTimes::now();
    let lim = Limits::new(cfg, start);
    let mut meter = Meter::new(format!("ping {}", p.name()), live(cfg), start);
    let mut bucket = cfg.rate_pps.map(|r| TokenBucket::new(r, 1, Duration::ZERO));
    let mut pc = PingCounts::default();
    let mut sec = SecondRtt::default();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if lim.reached(now, pc.sent, None) {
            break;
        }
        if meter.tick(now, pc.received, pc.received * cfg.size as u64, || {
            sec.line()
        }) {
            sec = SecondRtt::default();
        }
        if let Some(b) = &mut bucket {
            if b.available(now - start) == 0 {
                std::thread::sleep(b.time_until(1).min(lim.sleep_bound(now)));
                continue;
            }
            b.take(1);
        }
        p.txsync(0);
        if p.tx_space(0) == 0 {
            if busy {
                idle_spin();
            } else {
                wait(p, Want::Tx, lim.sleep_bound(now))?;
            }
            continue;
        }
        let sent_at = Instant::now();
        p.tx_batch(0, 1, |_, buf| tpl.write(buf, seq, ns(sent_at)));
        p.txsync(0);
        pc.sent += 1;
        let reply_by = sent_at + cfg.ping_timeout;
        let mut rtt = None;
        while rtt.is_none() {
            for r in 0..g.rx_rings {
                p.rx_batch(r, u32::MAX, |buf, _| {
                    match payload::verify(buf) {
                        Some(h) if h.kind == Kind::Pong && h.seq == seq => {
                            rtt = Some(ns(Instant::now()).saturating_sub(h.ts_ns));
                        }
                        // Late pongs of timed-out pings, and foreign frames.
                        _ => {}
                    }
                });
                p.rxsync(r);
            }
            let now = Instant::now();
            if rtt.is_some() {
                break;
            }
            if now >= reply_by || stop_requested() {
                pc.timeouts += 1;
                break;
            }
            if (0..g.rx_rings).all(|r| p.rx_pending(r) == 0) {
                if busy {
                    idle_spin();
                } else {
                    let left = reply_by - now;
                    wait(p, Want::Rx, left.clamp(Duration::from_millis(1), MAX_SLEEP))?;
                }
            }
        }
        if let Some(v) = rtt {
            pc.received += 1;
            pc.rtt_ns.record(v);
            sec.add(v);
        }
        seq += 1;
    }
    let (duration, cpu) = (start.elapsed(), CpuTimes::now().since(cpu0));
    let mut rep = base_report(cfg, &[&*p], busy);
    rep.packets = pc.received;
    rep.bytes = pc.received * cfg.size as u64;
    rep.duration = duration;
    rep.cpu = cpu;
    rep.ping = Some(pc);
    Ok(rep)
}

/// `pong`: answers every ping with a pong to its sender, in batches.
pub fn pong<B: Backend>(p: &mut B, cfg: &Config) -> Result<Report, Error> {
    let g = p.rings();
    let busy = p.busy_poll();
    let buf_size = g.buf_size as usize;
    let batch = cfg.batch.min(g.tx_slots - 1).max(1);
    announce(p, cfg.src_mac);
    // The same port receives and sends, so replies are staged here (allocated once).
    let mut stage = vec![0u8; batch as usize * buf_size];
    let mut lens = vec![0u16; batch as usize];
    let start = Instant::now();
    let cpu0 = CpuTimes::now();
    let lim = Limits::new(cfg, start);
    let mut meter = Meter::new(format!("pong {}", p.name()), live(cfg), start);
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut win = Window::new();
    let mut chained = false;
    loop {
        let now = Instant::now();
        if lim.reached(now, packets, win.last) {
            break;
        }
        meter.tick(now, packets, bytes, String::new);
        p.txsync(0);
        let room = p.tx_space(0).min(lim.budget(packets, batch));
        if room == 0 {
            if busy {
                idle_spin();
            } else {
                wait(p, Want::Tx, lim.sleep_bound(now))?;
            }
            continue;
        }
        let mut staged = 0u32;
        let mut seen = 0;
        for r in 0..g.rx_rings {
            seen += p.rx_batch(r, room - staged, |buf, slot| {
                let more = slot.flags & NS_MOREFRAG != 0;
                // Pings fit one buffer: chained frames are not pings.
                if !more && !chained && buf.len() <= buf_size {
                    let k = staged as usize;
                    let f = &mut stage[k * buf_size..k * buf_size + buf.len()];
                    f.copy_from_slice(buf);
                    if payload::make_pong(f, &cfg.src_mac) {
                        lens[k] = buf.len() as u16;
                        staged += 1;
                    }
                }
                chained = more;
            });
            p.rxsync(r);
            if staged == room {
                break;
            }
        }
        if staged > 0 {
            let n = p.tx_batch(0, staged, |i, out| {
                let k = i as usize;
                let len = usize::from(lens[k]);
                out[..len].copy_from_slice(&stage[k * buf_size..k * buf_size + len]);
                lens[k]
            });
            p.txsync(0);
            packets += u64::from(n);
            bytes += lens[..n as usize]
                .iter()
                .map(|&l| u64::from(l))
                .sum::<u64>();
        }
        if seen > 0 {
            win.saw(now);
        } else {
            idle_rx(p, &g, busy, lim.sleep_bound(now))?;
        }
    }
    let (duration, cpu) = win.close(start, cpu0);
    let pending = drain(p, busy)?;
    let mut rep = base_report(cfg, &[&*p], busy);
    rep.packets = packets;
    rep.bytes = bytes;
    rep.duration = duration;
    rep.cpu = cpu;
    rep.tx_pending_at_exit = Some(pending);
    Ok(rep)
}

/// Counters of one direction of `fwd`.
#[derive(Default)]
struct FwdCounts {
    packets: u64,
    bytes: u64,
    frag_slots: u64,
}

/// Copies what `src` received to `dst`, ring by ring, as far as `dst` has room. Returns the
/// slots moved.
fn forward<B: Backend>(src: &mut B, dst: &mut B, max: u32, c: &mut FwdCounts) -> u32 {
    let (gs, gd) = (src.rings(), dst.rings());
    let mut moved = 0;
    for r in 0..gs.rx_rings {
        src.rxsync(r);
        let t = r % gd.tx_rings;
        let k = src.rx_pending(r).min(dst.tx_space(t)).min(max);
        if k == 0 {
            continue;
        }
        // One copy per slot: each of dst's slots is filled from the next slot of src.
        let n = dst.tx_batch(t, k, |_, out| {
            let mut len = 0;
            src.rx_batch(r, 1, |buf, slot| {
                len = buf.len().min(out.len());
                out[..len].copy_from_slice(&buf[..len]);
                c.bytes += len as u64;
                c.frag_slots += u64::from(slot.flags & NS_MOREFRAG != 0);
            });
            len as u16
        });
        c.packets += u64::from(n);
        moved += n;
        dst.txsync(t);
        src.rxsync(r);
    }
    moved
}

/// `fwd`: copies everything received on one port to the other, both ways.
///
/// Frames take one slot each here; the slots of a multi-slot frame are forwarded one by one
/// (counted in `frag_slots`). With eventfd waits, an idle forwarder sleeps on one port at a
/// time for at most a millisecond, so traffic resuming on the other port waits up to that.
pub fn fwd<B: Backend>(a: &mut B, b: &mut B, cfg: &Config) -> Result<Report, Error> {
    const IDLE_WAIT: Duration = Duration::from_millis(1);
    const SPINS_BEFORE_SLEEP: u32 = 256;
    let busy = a.busy_poll() && b.busy_poll();
    let start = Instant::now();
    let cpu0 = CpuTimes::now();
    let lim = Limits::new(cfg, start);
    let mut meter = Meter::new(
        format!("fwd {} <-> {}", a.name(), b.name()),
        live(cfg),
        start,
    );
    let (mut ab, mut ba) = (FwdCounts::default(), FwdCounts::default());
    let mut win = Window::new();
    let mut idle_spins = 0u32;
    let mut turn = false;
    loop {
        let now = Instant::now();
        let done = ab.packets + ba.packets;
        if lim.reached(now, done, win.last) {
            break;
        }
        meter.tick(now, done, ab.bytes + ba.bytes, String::new);
        let max = lim.budget(done, cfg.batch);
        let moved = forward(a, b, max, &mut ab) + forward(b, a, max, &mut ba);
        if moved > 0 {
            win.saw(now);
            idle_spins = 0;
            continue;
        }
        if busy || idle_spins < SPINS_BEFORE_SLEEP {
            idle_spins += 1;
            idle_spin();
            continue;
        }
        // Sleep on whichever side blocks: a full TX ring, else (alternately) an empty RX
        // ring.
        let (ga, gb) = (a.rings(), b.rings());
        let a_pending = (0..ga.rx_rings).any(|r| a.rx_pending(r) > 0);
        let b_pending = (0..gb.rx_rings).any(|r| b.rx_pending(r) > 0);
        if a_pending {
            wait(b, Want::Tx, IDLE_WAIT)?;
        } else if b_pending {
            wait(a, Want::Tx, IDLE_WAIT)?;
        } else if turn {
            wait(a, Want::Rx, IDLE_WAIT)?;
        } else {
            wait(b, Want::Rx, IDLE_WAIT)?;
        }
        turn = !turn;
    }
    let (duration, cpu) = win.close(start, cpu0);
    let pending = drain(a, busy)? + drain(b, busy)?;
    let mut rep = base_report(cfg, &[&*a, &*b], busy);
    rep.tx_pending_at_exit = Some(pending);
    rep.packets = ab.packets + ba.packets;
    rep.bytes = ab.bytes + ba.bytes;
    rep.duration = duration;
    rep.cpu = cpu;
    rep.frag_slots = Some(ab.frag_slots + ba.frag_slots);
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::config::DEFAULT_DST_MAC;
    use crate::fake::{FakePort, wire};
    use crate::payload::Template;

    fn cfg(mode: Mode, n: u64) -> Config {
        let ports = if mode == Mode::Fwd { 2 } else { 1 };
        let mut c = Config::new(
            mode,
            (0..ports).map(|i| format!("fake:{i}")).collect(),
            String::new(),
        );
        c.count = Some(n);
        c.duration = Some(Duration::from_secs(20));
        c.quiet = true;
        c.batch = 7;
        c
    }

    /// A sender and a receiver on one wire.
    fn link() -> (FakePort, FakePort) {
        let w = wire();
        (
            FakePort::new("a", Rc::clone(&w), wire()),
            FakePort::new("b", wire(), w),
        )
    }

    #[test]
    fn tx_sends_exactly_the_count_and_rx_checks_every_frame() {
        for size in [60, 1514, 5000] {
            let (mut a, mut b) = link();
            let mut c = cfg(Mode::Tx, 1000);
            c.size = size;
            let t = tx(&mut a, &c).unwrap();
            assert_eq!((t.packets, t.bytes), (1000, 1000 * size as u64));
            assert_eq!(t.tx_pending_at_exit, Some(0));
            let mut c = cfg(Mode::Rx, 1000);
            c.check = true;
            let r = rx(&mut b, &c).unwrap();
            assert_eq!(r.packets, 1000, "size {size}");
            let k = r.check.unwrap();
            assert_eq!(
                (k.good, k.lost, k.out_of_order, k.bad_payload),
                (1000, 0, 0, 0)
            );
            assert!(verdict(&c, &r).is_ok());
        }
    }

    #[test]
    fn rx_check_reports_loss_reordering_and_corruption() {
        let (mut a, mut b) = link();
        tx(&mut a, &cfg(Mode::Tx, 100)).unwrap();
        {
            let mut w = a_wire(&b);
            w.remove(10); // lost
            w.swap(20, 21); // one late frame
            w[30].0[50] ^= 1; // corrupt
            w.pop_back(); // the last one never comes
        }
        let mut c = cfg(Mode::Rx, 100);
        c.expect_no_loss = true;
        c.check = true;
        c.idle = Some(Duration::from_millis(50));
        let r = rx(&mut b, &c).unwrap();
        let k = r.check.unwrap();
        assert_eq!(k.lost, 3, "seq 10, corrupt 31 and the last");
        assert_eq!(k.out_of_order, 1);
        assert_eq!(k.bad_payload, 1);
        let e = verdict(&c, &r).unwrap_err();
        assert_eq!(e.exit_code(), 1);
    }

    fn a_wire(
        b: &FakePort,
    ) -> std::cell::RefMut<'_, std::collections::VecDeque<crate::fake::Slot>> {
        b.input_wire()
    }

    #[test]
    fn ping_times_every_round_trip_against_an_echoing_port() {
        let mut p = FakePort::echo("e", DEFAULT_DST_MAC);
        let r = ping(&mut p, &cfg(Mode::Ping, 50)).unwrap();
        let pc = r.ping.unwrap();
        assert_eq!((pc.sent, pc.received, pc.timeouts), (50, 50, 0));
        assert_eq!(pc.rtt_ns.count(), 50);
        assert!(pc.rtt_ns.max().unwrap() < 1_000_000_000);
    }

    #[test]
    fn an_unanswered_ping_times_out_and_fails_the_verdict() {
        let (mut a, _b) = link();
        let mut c = cfg(Mode::Ping, 2);
        c.ping_timeout = Duration::from_millis(5);
        c.expect_no_loss = true;
        let r = ping(&mut a, &c).unwrap();
        let pc = r.ping.as_ref().unwrap();
        assert_eq!((pc.sent, pc.received, pc.timeouts), (2, 0, 2));
        assert!(verdict(&c, &r).is_err());
    }

    #[test]
    fn pong_answers_pings_to_their_sender_and_ignores_other_frames() {
        let (into, out) = (wire(), wire());
        let mut p = FakePort::new("p", Rc::clone(&out), Rc::clone(&into));
        let mut buf = [0u8; 128];
        for seq in 0..20u64 {
            let kind = if seq % 2 == 0 { Kind::Ping } else { Kind::Data };
            let t = Template {
                dst: DEFAULT_DST_MAC,
                src: [2, 0, 0, 0, 0, seq as u8],
                len: 100,
                kind,
            };
            let n = usize::from(t.write(&mut buf, seq, 77));
            into.borrow_mut().push_back((buf[..n].to_vec(), 0));
        }
        let mut c = cfg(Mode::Pong, 10);
        c.src_mac = DEFAULT_DST_MAC;
        let r = pong(&mut p, &c).unwrap();
        assert_eq!((r.packets, r.bytes), (10, 1000));
        let out = out.borrow();
        assert_eq!(out.len(), 10);
        for (i, (f, _)) in out.iter().enumerate() {
            let h = payload::verify(f).unwrap();
            assert_eq!((h.kind, h.seq, h.ts_ns), (Kind::Pong, 2 * i as u64, 77));
            assert_eq!(f[0..6], [2, 0, 0, 0, 0, 2 * i as u8], "back to the sender");
            assert_eq!(f[6..12], DEFAULT_DST_MAC);
        }
    }

    #[test]
    fn fwd_copies_both_ways_until_the_count() {
        let (a_in, a_out, b_in, b_out) = (wire(), wire(), wire(), wire());
        let mut a = FakePort::new("a", Rc::clone(&a_out), Rc::clone(&a_in));
        let mut b = FakePort::new("b", Rc::clone(&b_out), Rc::clone(&b_in));
        for i in 0..300u32 {
            let w = if i % 3 == 0 { &b_in } else { &a_in };
            let v = (i % 200) as u8;
            w.borrow_mut().push_back((vec![v; 60 + usize::from(v)], 0));
        }
        let r = fwd(&mut a, &mut b, &cfg(Mode::Fwd, 300)).unwrap();
        assert_eq!(r.packets, 300);
        assert_eq!(b_out.borrow().len(), 200, "a -> b");
        assert_eq!(a_out.borrow().len(), 100, "b -> a");
        assert!(
            b_out
                .borrow()
                .iter()
                .all(|(f, _)| f.len() == 60 + usize::from(f[0]))
        );
        assert_eq!(r.frag_slots, Some(0));
    }

    #[test]
    fn a_rate_limited_sender_takes_the_time_the_rate_implies() {
        let (mut a, _b) = link();
        let mut c = cfg(Mode::Tx, 2000);
        c.rate_pps = Some(20_000);
        c.batch = 512;
        let t0 = Instant::now();
        let r = tx(&mut a, &c).unwrap();
        let took = t0.elapsed();
        assert_eq!(r.packets, 2000);
        // The bucket starts with 2 ms of tokens (40 packets).
        assert!(took >= Duration::from_millis(97), "took {took:?}");
    }

    #[test]
    fn tx_stops_at_the_duration() {
        let (mut a, _b) = link();
        let mut c = cfg(Mode::Tx, u64::MAX);
        c.rate_pps = Some(1000);
        c.duration = Some(Duration::from_millis(100));
        let r = tx(&mut a, &c).unwrap();
        // Ends at the deadline (promptly), never above the rate. No tight lower bound on the
        // count: the bucket holds 2 ms of tokens, so a sender starved on a loaded machine
        // loses tokens and sends fewer (the rate tests above cover the count).
        assert!(
            r.duration >= Duration::from_millis(100) && r.duration < Duration::from_secs(2),
            "ran {:?}",
            r.duration
        );
        assert!((1..=110).contains(&r.packets), "{} packets", r.packets);
    }
}
