//! The sync loop ("kloop"): one thread per attached client, playing netmap's kernel for that
//! client's port. It sleeps in epoll on the client's kick eventfds (no core spins while the
//! client is idle), and on a kick runs txsync/rxsync on the port's rings with the CSB
//! protocol: kicks disabled while working, re-enabled with the double check before sleeping.
//! An optional busy-poll mode never sleeps and never asks for kicks, for peak rate.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use ptnet_spec::csb::CsbAtok;

use crate::csb::CsbRef;
use crate::peer;
use crate::port::{PortStats, SyncOutcome, SyncPort};

/// Syncs of one ring per wake-up before the loop moves on to the others (fairness against a
/// client that keeps publishing, or keeps publishing garbage).
const RING_BUDGET: u32 = 64;

/// How long an eventfd-mode loop keeps polling a ring for more work before it re-enables
/// kicks and sleeps, by default. A sender refilling its ring is usually back within a few
/// microseconds: catching it saves a kick and two context switches per batch (VALE 2 ports on
/// the project machine: 11.9 → 17.5 Mpps received, `ptnet-bench vale`, see docs/benchmarks.md).
/// An idle client still costs nothing after this.
pub const DEFAULT_LINGER: Duration = Duration::from_micros(20);

/// How a sync loop waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sleep on the kick eventfds (no polling core), after polling for `linger` first.
    Eventfd {
        /// Polling time before sleeping (zero: sleep at once).
        linger: Duration,
    },
    /// Never sleep; the client never needs to kick.
    BusyPoll,
}

impl Default for Mode {
    fn default() -> Self {
        Mode::Eventfd {
            linger: DEFAULT_LINGER,
        }
    }
}

/// A running sync loop; stopping it (or dropping the handle) joins the thread.
#[derive(Debug)]
pub struct KloopHandle {
    stop: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KloopHandle {
    /// Stops the loop and waits for it.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("a sync loop thread panicked");
            }
        }
    }
}

impl Drop for KloopHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

struct Kloop {
    /// Current linger per ring, in nanoseconds: it adapts between 0 and the configured
    /// maximum (doubling when lingering caught the client's next batch, halving when it did
    /// not), so a client that is not coming back soon stops costing polling time.
    linger_ns: Vec<Cell<u64>>,
    port: Arc<dyn SyncPort>,
    csb: CsbRef,
    kicks: Vec<EventFd>,
    ntx: u32,
    nrx: u32,
    mode: Mode,
    stopping: Arc<AtomicBool>,
}

/// Starts the sync loop of a client: `kicks` holds one eventfd per ring in CSB order (TX rings
/// then RX rings), matching `csb`.
pub fn spawn(
    port: Arc<dyn SyncPort>,
    csb: CsbRef,
    kicks: Vec<EventFd>,
    mode: Mode,
) -> io::Result<KloopHandle> {
    let ntx = port.interface().tx.len() as u32;
    let nrx = port.interface().rx.len() as u32;
    if kicks.len() != (ntx + nrx) as usize || csb.len() != ntx + nrx {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "one kick eventfd and one CSB entry per ring are needed",
        ));
    }
    // Rings whose client must not kick for now: every ring in busy-poll mode, and every RX
    // ring (ports that want to hear about released RX slots arm the request themselves, when
    // they need it). Done before the client gets going, so it never sees a stale request.
    for i in 0..ntx + nrx {
        if mode == Mode::BusyPoll || i >= ntx {
            if let Some(k) = csb.ktoa(i) {
                k.kern_disable_kicks();
            }
        }
    }
    let stop = Arc::new(EventFd::new(EFD_NONBLOCK)?);
    let stopping = Arc::new(AtomicBool::new(false));
    let mode = match mode {
        Mode::Eventfd { .. } if !port.linger_helps() => Mode::Eventfd {
            linger: Duration::ZERO,
        },
        m => m,
    };
    let max_linger = match mode {
        Mode::Eventfd { linger } => linger.as_nanos().min(u128::from(u64::MAX)) as u64,
        Mode::BusyPoll => 0,
    };
    let kl = Kloop {
        linger_ns: (0..ntx + nrx).map(|_| Cell::new(max_linger)).collect(),
        port,
        csb,
        kicks,
        ntx,
        nrx,
        mode,
        stopping: Arc::clone(&stopping),
    };
    let stop2 = Arc::clone(&stop);
    let name = format!("kloop-{}", kl.port.name());
    let thread = thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            if let Err(e) = kl.run(&stop2) {
                log::error!("{}: sync loop failed: {e}", kl.port.name());
            }
        })?;
    Ok(KloopHandle {
        stop,
        stopping,
        thread: Some(thread),
    })
}

/// An epoll set over `kicks` (event data: the kick's index) and `stop` (event data:
/// `u64::MAX`): what a sync loop, or any thread that serves rings, sleeps on.
pub fn kick_epoll(kicks: &[EventFd], stop: &EventFd) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    for (i, k) in kicks.iter().enumerate() {
        epoll.ctl(
            ControlOperation::Add,
            k.as_raw_fd(),
            EpollEvent::new(EventSet::IN, i as u64),
        )?;
    }
    epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, u64::MAX),
    )?;
    Ok(epoll)
}

impl Kloop {
    fn run(&self, stop: &EventFd) -> io::Result<()> {
        let epoll = kick_epoll(&self.kicks, stop)?;
        let rx_kicks = self.port.rx_needs_kicks();
        log::info!(
            "{}: sync loop started ({} TX, {} RX rings, {:?})",
            self.port.name(),
            self.ntx,
            self.nrx,
            self.mode
        );
        let mut events = vec![EpollEvent::default(); self.kicks.len() + 1];
        let mut last_heads = 0u64;
        loop {
            let mut pending = false;
            for i in 0..self.ntx {
                pending |= self.sync_ring(i, |p| p.txsync(i));
            }
            if rx_kicks {
                // The port arms and disarms RX kicks itself (see `SyncPort::rx_needs_kicks`).
                for i in 0..self.nrx {
                    self.port.rxsync(i);
                }
            }
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            if pending {
                continue;
            }
            if self.mode == Mode::BusyPoll {
                // Poll again at once while the client keeps publishing; when a whole pass
                // found nothing new, let other runnable threads have the core first (on a
                // machine with fewer cores than polling threads, pure spinning starves the
                // very clients this loop waits for).
                let heads: u64 = (0..self.ntx + self.nrx)
                    .filter_map(|i| self.csb.atok(i))
                    .map(|a| u64::from(a.head.load(Ordering::Relaxed)))
                    .fold(0, |h, x| h.wrapping_mul(0x100_0000_01b3) ^ x);
                if heads == last_heads {
                    thread::yield_now();
                }
                last_heads = heads;
                continue;
            }
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut kicks = 0;
            for ev in &events[..n] {
                match self.kicks.get(ev.data() as usize) {
                    Some(k) => {
                        // The client holds this eventfd too: never a read that could wait.
                        peer::drain(k);
                        kicks += 1;
                        // The client is active again: let lingering try again.
                        if let (Mode::Eventfd { linger }, Some(c)) =
                            (self.mode, self.linger_ns.get(ev.data() as usize))
                        {
                            c.set(c.get().max(linger.as_nanos() as u64 / 4));
                        }
                    }
                    None => {
                        if self.stopping.load(Ordering::Acquire) {
                            break;
                        }
                    }
                }
            }
            PortStats::add(&self.port.stats().kicks, kicks);
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
        }
        // What the client published before it left (a clean exit or a crash right after a
        // txsync) is still delivered: one last pass over its TX rings.
        for i in 0..self.ntx {
            let _ = self.sync_ring(i, |p| p.txsync(i));
        }
        log::info!("{}: sync loop stopped", self.port.name());
        Ok(())
    }

    /// Syncs CSB entry `i` until the client stops publishing, then (eventfd mode) re-enables
    /// kicks with the double check. Returns true if the budget ran out with work left.
    fn sync_ring(&self, i: u32, sync: impl Fn(&dyn SyncPort) -> SyncOutcome) -> bool {
        let (Some(atok), Some(ktoa)) = (self.csb.atok(i), self.csb.ktoa(i)) else {
            return false;
        };
        let busy = self.mode == Mode::BusyPoll;
        if !busy {
            ktoa.kern_disable_kicks();
        }
        for _ in 0..RING_BUDGET {
            let o = sync(&*self.port);
            if o.more || o.superseded_by(&atok.kern_read()) {
                continue;
            }
            if busy {
                return false;
            }
            if let (Mode::Eventfd { linger }, Some(cell)) =
                (self.mode, self.linger_ns.get(i as usize))
            {
                let now = cell.get();
                if now > 0 {
                    let max = linger.as_nanos() as u64;
                    if lingered(atok, &o, Duration::from_nanos(now)) {
                        cell.set(now.saturating_mul(2).clamp(1000, max.max(1000)).min(max));
                        continue;
                    }
                    cell.set(now / 2);
                }
            }
            if o.superseded_by(&ktoa.kern_enable_kicks(atok)) {
                ktoa.kern_disable_kicks();
                continue;
            }
            return false;
        }
        true
    }
}

/// Polls `atok` for up to `linger`; true as soon as the client publishes past `o`.
fn lingered(atok: &CsbAtok, o: &SyncOutcome, linger: Duration) -> bool {
    let until = Instant::now() + linger;
    loop {
        for _ in 0..64 {
            if o.superseded_by(&atok.kern_read()) {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= until {
            return false;
        }
    }
}
