//! A client holds the same open files as the daemon for its kick and interrupt eventfds, so
//! it can clear their `O_NONBLOCK`. Then a daemon read of an empty kick counter, or a write to
//! a full interrupt counter, would wait for the client: a VALE sender raising the client's
//! interrupt would stop with the switch's port list locked (no other sender delivers, no
//! port is added or removed), and a sync loop reading a stolen kick would never stop. These
//! tests play that client; the others must not notice, and detaching it must return.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ptnet_client::{Port, Want};
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::peer;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_datapath::sys;

fn port(sw: &Arc<Switch>, name: &str) -> Arc<dyn SyncPort> {
    Arc::new(ValePortSync {
        switch: Arc::clone(sw),
        port: sw.add_port(name, &VPortSpec::default()).unwrap(),
    })
}

/// A client's attachment; if the test fails, it is leaked instead of detached (detaching
/// waits for the sync loop, and a stuck one would hang the failing test instead of failing it).
struct Held(Option<HostClient>);

impl Held {
    fn detach(mut self) {
        if let Some(hc) = self.0.take() {
            hc.detach();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if thread::panicking() {
            std::mem::forget(self.0.take());
        }
    }
}

/// Attaches a client; also returns duplicates of its kick and interrupt eventfds (CSB order),
/// the copies an attacker plays with.
fn attach(port: Arc<dyn SyncPort>) -> (Held, Port, Vec<File>, Vec<File>) {
    let (hc, files) = HostClient::attach(port, Mode::default()).unwrap();
    let n = (files.len() - 2) / 2;
    let dup = |f: &File| f.try_clone().unwrap();
    let kicks = files[2..2 + n].iter().map(dup).collect();
    let irqs = files[2 + n..].iter().map(dup).collect();
    let p = Port::from_parts(hc.info().clone(), files).unwrap();
    (Held(Some(hc)), p, kicks, irqs)
}

/// What the attacker does to its copy: clears `O_NONBLOCK` on the open file it shares.
fn make_blocking(f: &File) {
    let fd = f.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor this test owns.
    let ok = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) == 0
    };
    assert!(ok, "fcntl: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread; panics if it has not returned within `limit`.
fn returns_within(limit: Duration, what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    if rx.recv_timeout(limit).is_err() {
        panic!("{what} did not return within {limit:?}");
    }
}

fn broadcast(buf: &mut [u8], src: u8, seq: u64) -> u16 {
    buf[..6].copy_from_slice(&[0xff; 6]);
    buf[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    buf[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    60
}

/// Sends `n` broadcast frames from `a`; returns how many `b` received before `deadline`.
fn a_reaches_b(a: &mut Port, b: &mut Port, n: u64, deadline: Duration) -> u64 {
    let until = Instant::now() + deadline;
    let (mut sent, mut got) = (0u64, 0u64);
    while got < n && Instant::now() < until {
        if sent < n {
            let k = (n - sent).min(32) as u32;
            let s = a.tx_batch(0, k, |i, buf| broadcast(buf, 0xa, sent + u64::from(i)));
            sent += u64::from(s);
            a.txsync(0);
        }
        let _ = b.wait(Want::Rx, Some(Duration::from_millis(10)));
        got += u64::from(b.rx_batch(0, 256, |_, _| {}));
        b.rxsync(0);
    }
    got
}

#[test]
fn a_client_that_blocks_its_interrupt_eventfd_stops_nobody_but_itself() {
    let sw = Switch::new("vale-fd1");
    let (_ha, mut pa, _, _) = attach(port(&sw, "a"));
    let (_hb, mut pb, _, _) = attach(port(&sw, "b"));
    let (hc, mut pc, _, irqs) = attach(port(&sw, "c"));
    // C's RX interrupt: blocking, its counter one short of the maximum, and asked for, so the
    // first frame delivered to C makes the sender write it.
    let rx = pc.num_tx_rings() as usize;
    make_blocking(&irqs[rx]);
    sys::eventfd_write(&irqs[rx], u64::MAX - 1).unwrap();
    pc.unchecked_enable_notifications(rx);

    let got = a_reaches_b(&mut pa, &mut pb, 2000, Duration::from_secs(10));
    assert_eq!(got, 2000, "B received {got} of A's 2000 broadcast frames");
    assert!(peer::interrupted_calls() >= 1);

    // The switch's port list is free: a fourth port comes and goes, and C detaches.
    let sw2 = Arc::clone(&sw);
    returns_within(
        Duration::from_secs(5),
        "attach and detach of d",
        move || {
            let d = sw2.add_port("d", &VPortSpec::default()).unwrap();
            let (hd, _pd, _, _) = attach(Arc::new(ValePortSync {
                switch: Arc::clone(&sw2),
                port: Arc::clone(&d),
            }));
            hd.detach();
            sw2.remove_port(&d);
        },
    );
    returns_within(Duration::from_secs(5), "detaching c", move || hc.detach());
    let got = a_reaches_b(&mut pa, &mut pb, 500, Duration::from_secs(10));
    assert_eq!(got, 500);
    // C's counter is as it left it: the daemon gave up on it instead of waiting.
    assert_eq!(sys::eventfd_read(&irqs[rx]).unwrap(), u64::MAX - 1);
}

#[test]
fn a_client_that_steals_its_own_kicks_cannot_hold_its_sync_loop() {
    let sw = Switch::new("vale-fd2");
    let (_ha, mut pa, _, _) = attach(port(&sw, "a"));
    let (_hb, mut pb, _, _) = attach(port(&sw, "b"));
    // C kicks its TX ring and reads the kick back at once, on a blocking open file: the sync
    // loop, woken by the kick, finds the counter empty. Each round ends with the kick taken
    // back and nothing more written; then C detaches. (Whether the loop reads before C takes
    // the kick back is a race: ten clients in a row, so that a loop that could wait is caught.)
    for round in 0..10 {
        let (hc, _pc, kicks, _) = attach(port(&sw, &format!("c{round}")));
        make_blocking(&kicks[0]);
        for _ in 0..200 {
            sys::eventfd_write(&kicks[0], 1).unwrap();
            let _ = sys::eventfd_read_nowait(&kicks[0]);
        }
        returns_within(Duration::from_secs(5), "detaching c", move || hc.detach());
    }
    let got = a_reaches_b(&mut pa, &mut pb, 2000, Duration::from_secs(10));
    assert_eq!(got, 2000);
}
