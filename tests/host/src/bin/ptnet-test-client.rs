//! A scripted host client for the tier-2 tests: attaches to a port through ptnetd and sends or
//! receives frames with sequence numbers, then prints a JSON summary.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ptnet_client::proto::PortRequest;
use ptnet_client::{Port, Want};
use ptnet_host_tests::{check, frame, mac, ours};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Send `count` frames (0 = until killed), paced by `--burst`/`--pause-us`.
    Send,
    /// Receive until `count` frames arrived (or `--timeout`), checking order and payload.
    Recv,
    /// Open `count` connections to the control socket and send nothing on them (an idle
    /// crowd); print how many the daemon refused at once, then hold them for `--timeout`.
    Hold,
}

/// Opens `n` silent connections; the number the daemon answered at once with an error (it
/// refused them) is printed with "ready".
fn hold(socket: &str, n: u64, timeout: Duration) -> ExitCode {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let mut held = Vec::new();
    let mut refused = 0u64;
    for _ in 0..n {
        match UnixStream::connect(socket) {
            Ok(c) => held.push(c),
            Err(_) => refused += 1,
        }
    }
    // A refused connection gets its error at once and is closed: readable within a moment,
    // which on a loaded machine (a CI run beside a build) can be more than a few hundred
    // milliseconds. Look again until all but a daemon's allowance (16) are answered, for at
    // most five seconds: a daemon that keeps the crowd never gets there.
    for c in &held {
        let _ = c.set_nonblocking(true);
    }
    let mut answered = vec![false; held.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        for (c, a) in held.iter().zip(answered.iter_mut()) {
            let mut b = [0u8; 1];
            if !*a && (&*c).read(&mut b).is_ok() {
                *a = true;
                refused += 1;
            }
        }
        if refused + 16 >= n || Instant::now() > deadline {
            break;
        }
    }
    println!("ready {{\"refused\": {refused}, \"opened\": {n}}}");
    std::thread::sleep(timeout);
    ExitCode::SUCCESS
}

/// Scripted ptnet host client.
#[derive(Debug, Parser)]
struct Args {
    #[arg(value_enum)]
    role: Role,
    /// Port name.
    #[arg(short, long)]
    port: String,
    /// ptnetd socket.
    #[arg(short, long)]
    socket: String,
    /// Frames to send or expect.
    #[arg(short, long, default_value_t = 1000)]
    count: u64,
    /// Frame length.
    #[arg(short, long, default_value_t = 60)]
    len: usize,
    /// This station's number (its MAC is 02:00:00:00:00:N).
    #[arg(long, default_value_t = 1)]
    me: u8,
    /// Destination station (255 = broadcast).
    #[arg(long, default_value_t = 2)]
    to: u8,
    /// Frames per burst before pausing (the receiver's ring must hold a burst: VALE drops).
    #[arg(long, default_value_t = 64)]
    burst: u32,
    /// Pause between bursts, microseconds.
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Announce this station to the switch first (one broadcast frame) and wait this long.
    #[arg(long, default_value_t = 0)]
    announce_ms: u64,
    /// Flow control over a lossy switch: the sender waits for an acknowledgement frame after
    /// every WINDOW frames, and the receiver sends one back (to station `--to`) every WINDOW
    /// frames. 0 = none.
    #[arg(long, default_value_t = 0)]
    window: u64,
    /// Receive: count every frame, whatever it carries (frames made by other tools); the
    /// summary still gives the count per RX ring.
    #[arg(long)]
    raw: bool,
    /// Ring pairs to ask the port for (0 = the port's own).
    #[arg(long, default_value_t = 0)]
    rings: u32,
}

/// Sequence number of acknowledgement frames.
const ACK: u64 = u64::MAX - 1;

fn wait_ack(p: &mut Port, deadline: Instant) -> bool {
    loop {
        if Instant::now() > deadline {
            return false;
        }
        p.rxsync(0);
        let mut acked = false;
        let n = p.rx_batch(0, u32::MAX, |b, _| acked |= check(b) == Some(ACK));
        if n > 0 {
            p.rxsync(0);
        }
        if acked {
            return true;
        }
        if n == 0 {
            let _ = p.wait(Want::Rx, Some(Duration::from_millis(100)));
        }
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.role == Role::Hold {
        return hold(&a.socket, a.count, Duration::from_secs(a.timeout));
    }
    let req = PortRequest {
        port: a.port.clone(),
        tx_rings: (a.rings > 0).then_some(a.rings),
        rx_rings: (a.rings > 0).then_some(a.rings),
        ..Default::default()
    };
    let mut p = match Port::attach(&a.socket, req) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("attach {}: {e}", a.port);
            return ExitCode::from(2);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    if a.announce_ms > 0 {
        p.tx_batch(0, 1, |_, b| frame(b, [0xff; 6], mac(a.me), u64::MAX, 60));
        p.txsync(0);
        std::thread::sleep(Duration::from_millis(a.announce_ms));
    }
    let dst = if a.to == 255 { [0xff; 6] } else { mac(a.to) };
    match a.role {
        Role::Send => {
            let mut sent = 0u64;
            while a.count == 0 || sent < a.count {
                if Instant::now() > deadline {
                    break;
                }
                let mut want = if a.count == 0 {
                    a.burst
                } else {
                    a.burst.min((a.count - sent) as u32)
                };
                if a.window > 0 {
                    // Stop at the window's edge, then wait for its acknowledgement.
                    want = want.min((a.window - sent % a.window) as u32);
                }
                let mut queued = 0;
                while queued < want {
                    let s0 = sent;
                    let n = p.tx_batch(0, want - queued, |i, b| {
                        frame(b, dst, mac(a.me), s0 + u64::from(i), a.len)
                    });
                    sent += u64::from(n);
                    queued += n;
                    p.txsync(0);
                    if queued < want {
                        let _ = p.wait(Want::Tx, Some(Duration::from_millis(100)));
                    }
                }
                if a.window > 0 && sent % a.window == 0 && !wait_ack(&mut p, deadline) {
                    eprintln!("no acknowledgement after {sent} frames");
                    break;
                }
                if a.pause_us > 0 {
                    std::thread::sleep(Duration::from_micros(a.pause_us));
                }
            }
            println!(
                "{}",
                serde_json::json!({ "role": "send", "port": a.port, "sent": sent })
            );
            ExitCode::SUCCESS
        }
        Role::Recv => {
            let (mut got, mut bad, mut out_of_order, mut next) = (0u64, 0u64, 0u64, 0u64);
            println!("{}", serde_json::json!({ "ready": a.port }));
            // Frames arrive in order on each ring; across rings (a fanout), only per flow.
            let nrx = p.num_rx_rings();
            let mut per_ring = vec![0u64; nrx as usize];
            while got < a.count && Instant::now() < deadline {
                let before = got;
                let mut n = 0;
                for r in 0..nrx {
                    p.rxsync(r);
                    let mut on_ring = 0u64;
                    let k = p.rx_batch(r, u32::MAX, |b, _| match check(b) {
                        _ if a.raw => on_ring += 1,
                        // Not the test's frames (a flood that reaches this port once its
                        // own destination is gone, say): neither counted nor bad.
                        _ if !ours(b) => {}
                        Some(u64::MAX) | Some(ACK) => {}
                        Some(seq) => {
                            if seq != next && nrx == 1 {
                                out_of_order += 1;
                            }
                            next = seq + 1;
                            on_ring += 1;
                        }
                        None => bad += 1,
                    });
                    got += on_ring;
                    per_ring[r as usize] += on_ring;
                    if k > 0 {
                        p.rxsync(r);
                    }
                    n += k;
                }
                if n == 0 {
                    let _ = p.wait(Want::Rx, Some(Duration::from_millis(100)));
                }
                if a.window > 0 && got / a.window > before / a.window {
                    while p.tx_batch(0, 1, |_, b| frame(b, dst, mac(a.me), ACK, 60)) == 0 {
                        p.txsync(0);
                        let _ = p.wait(Want::Tx, Some(Duration::from_millis(100)));
                    }
                    p.txsync(0);
                }
            }
            println!(
                "{}",
                serde_json::json!({ "role": "recv", "port": a.port, "received": got,
                                    "bad_payload": bad, "out_of_order": out_of_order,
                                    "per_ring": per_ring })
            );
            if got == a.count && bad == 0 && out_of_order == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        // Handled before attaching.
        Role::Hold => ExitCode::SUCCESS,
    }
}
