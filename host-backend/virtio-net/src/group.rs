//! Poll groups: one thread serves the queue pairs of many virtio-net devices, as OVS's PMD
//! threads serve many ports. With a thread per pair, two ports on one core hand the core back
//! and forth (a context switch, or a wake-up, per batch); in a group, the frames one pair puts
//! into the switch are taken out by the next pair's pass in the same thread.
//!
//! A group runs its members' passes in turn. When a round finds no work it lingers (busy-poll:
//! yields and goes on), then arms every member's notifications, checks once more, and sleeps
//! in one epoll on all their kick and interrupt eventfds — the rule of a pair's own thread
//! ([`crate::worker`]), applied to the group. A member joins and leaves through a command
//! queue; leaving is synchronous (its last pass done, its eventfds out of the epoll) so a
//! device stops exactly as it does with a thread of its own. A pair whose queue breaks leaves
//! the group; the others go on.
//!
//! The thread never blocks on a file descriptor a frontend holds: kicks are drained
//! non-blocking, and the only wait is the epoll.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ptnet_datapath::kloop::Mode;
use ptnet_datapath::peer;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::stats::NetStats;
use crate::worker::Pair;

/// Most members one group serves (each brings up to four eventfds).
pub const MAX_MEMBERS: usize = 256;
/// Epoll data of the group's own command eventfd.
const WAKE: u64 = u64::MAX;
/// Rounds between two clock reads while lingering.
const LINGER_CHECK: u32 = 16;

/// The groups of a daemon: a member joins the one with the fewest members.
#[derive(Debug)]
pub struct PollGroups {
    groups: Vec<PollGroup>,
}

impl PollGroups {
    /// `n` groups (at least one) whose threads are named `vnet-gI` and wait as `mode` says.
    pub fn spawn(n: usize, mode: Mode) -> io::Result<Arc<PollGroups>> {
        let groups = (0..n.max(1))
            .map(|i| PollGroup::spawn(&format!("vnet-g{i}"), mode))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Arc::new(PollGroups { groups }))
    }

    /// The group with the fewest members, for the next pair to join.
    pub fn least_loaded(&self) -> &PollGroup {
        // PANIC-free: `spawn` makes at least one group.
        self.groups
            .iter()
            .min_by_key(|g| g.inner.members.load(Ordering::Relaxed))
            .unwrap_or(&self.groups[0])
    }

    /// Members of each group now.
    pub fn loads(&self) -> Vec<usize> {
        self.groups
            .iter()
            .map(|g| g.inner.members.load(Ordering::Relaxed))
            .collect()
    }
}

/// One group: its thread and its command queue.
#[derive(Debug)]
pub struct PollGroup {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    /// `None` once the thread has ended: a command then goes nowhere (a leave's answer
    /// channel is dropped, which ends the wait).
    cmds: Mutex<Option<Vec<Cmd>>>,
    /// Commands wait in `cmds` (read without the lock while polling).
    pending: AtomicBool,
    /// Written after a command is queued (the group's only other wake-up).
    wake: EventFd,
    members: AtomicUsize,
    next_id: AtomicU64,
    exit: AtomicBool,
}

enum Cmd {
    Join(Box<Member>),
    Leave { id: u64, done: mpsc::Sender<()> },
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Join(m) => write!(f, "Join({})", m.id),
            Cmd::Leave { id, .. } => write!(f, "Leave({id})"),
        }
    }
}

struct Member {
    id: u64,
    pair: Pair,
    kicks: Vec<EventFd>,
    stats: Arc<NetStats>,
}

/// A pair's place in a group; [`Membership::leave`] (or dropping it) takes it out after one
/// last pass.
#[derive(Debug)]
pub struct Membership {
    group: Arc<Inner>,
    id: u64,
    left: bool,
}

impl Membership {
    /// Takes the pair out of its group and waits until the group is done with it.
    pub fn leave(mut self) {
        self.leave_now();
    }

    fn leave_now(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let (tx, rx) = mpsc::channel();
        self.group.push(Cmd::Leave {
            id: self.id,
            done: tx,
        });
        // The group answers once the pair is out (or drops the sender if it has exited).
        let _ = rx.recv();
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave_now();
    }
}

impl Inner {
    fn push(&self, c: Cmd) {
        if let Some(q) = self.cmds.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            q.push(c);
            self.pending.store(true, Ordering::Release);
        }
        let _ = self.wake.write(1);
    }

    /// The commands queued so far; with `close`, none are taken after these.
    fn take(&self, close: bool) -> Vec<Cmd> {
        let mut q = self.cmds.lock().unwrap_or_else(|e| e.into_inner());
        self.pending.store(false, Ordering::Release);
        if close {
            q.take().unwrap_or_default()
        } else {
            q.as_mut().map(std::mem::take).unwrap_or_default()
        }
    }

    fn cmds_empty(&self) -> bool {
        !self.pending.load(Ordering::Acquire)
    }
}

impl PollGroup {
    /// A group thread named `name`.
    pub fn spawn(name: &str, mode: Mode) -> io::Result<PollGroup> {
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            cmds: Mutex::new(Some(Vec::new())),
            pending: AtomicBool::new(false),
            wake: EventFd::new(EFD_NONBLOCK)?,
            members: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            exit: AtomicBool::new(false),
        });
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            inner.wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, WAKE),
        )?;
        let i2 = Arc::clone(&inner);
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || Runner::new(i2, epoll, mode).run())?;
        Ok(PollGroup {
            inner,
            thread: Some(thread),
        })
    }

    /// Adds `pair`, woken by `kicks` (its queues' kicks and its port's interrupt).
    pub fn join(
        &self,
        pair: Pair,
        kicks: Vec<EventFd>,
        stats: Arc<NetStats>,
    ) -> io::Result<Membership> {
        if self.inner.members.fetch_add(1, Ordering::Relaxed) >= MAX_MEMBERS {
            self.inner.members.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "poll group {} serves {MAX_MEMBERS} queue pairs already",
                self.inner.name
            )));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.push(Cmd::Join(Box::new(Member {
            id,
            pair,
            kicks,
            stats,
        })));
        Ok(Membership {
            group: Arc::clone(&self.inner),
            id,
            left: false,
        })
    }
}

impl Drop for PollGroup {
    fn drop(&mut self) {
        self.inner.exit.store(true, Ordering::Release);
        let _ = self.inner.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The group thread's state.
struct Runner {
    inner: Arc<Inner>,
    epoll: Epoll,
    mode: Mode,
    /// Members by slot; a slot's epoll data is `slot << 8 | kick index`.
    slots: Vec<Option<Member>>,
    events: Vec<EpollEvent>,
    linger: Linger,
}

impl Runner {
    fn new(inner: Arc<Inner>, epoll: Epoll, mode: Mode) -> Self {
        Runner {
            inner,
            epoll,
            mode,
            slots: Vec::new(),
            events: vec![EpollEvent::default(); 64],
            linger: Linger::default(),
        }
    }

    fn run(mut self) {
        log::info!("{}: poll group running ({:?})", self.inner.name, self.mode);
        while !self.inner.exit.load(Ordering::Acquire) {
            if !self.inner.cmds_empty() {
                self.commands(false);
            }
            if self.round() > 0 {
                continue;
            }
            let linger = match self.mode {
                Mode::BusyPoll => {
                    thread::yield_now();
                    continue;
                }
                Mode::Eventfd { linger } => linger,
            };
            let now = self.linger.now(linger);
            if !now.is_zero() {
                let caught = self.linger(now);
                self.linger.adapt(caught, linger);
                if caught {
                    continue;
                }
            }
            if self.arm() {
                self.disarm();
                continue;
            }
            self.sleep();
            self.linger.woken(linger);
            self.disarm();
        }
        // Members still here when the group ends get their last pass; commands queued until
        // now are answered, later ones go nowhere.
        for slot in 0..self.slots.len() {
            self.remove(slot);
        }
        self.commands(true);
    }

    /// Joins and leaves queued since the last look (`close`: the last look).
    fn commands(&mut self, close: bool) {
        for c in self.inner.take(close) {
            match c {
                Cmd::Join(m) if close => {
                    // Never served: it still counted.
                    self.inner.members.fetch_sub(1, Ordering::Relaxed);
                    drop(m);
                }
                Cmd::Join(m) => self.add(*m),
                Cmd::Leave { id, done } => {
                    if let Some(slot) = self
                        .slots
                        .iter()
                        .position(|s| s.as_ref().is_some_and(|m| m.id == id))
                    {
                        self.remove(slot);
                    }
                    let _ = done.send(());
                }
            }
        }
    }

    fn add(&mut self, mut m: Member) {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        for (k, fd) in m.kicks.iter().enumerate() {
            let data = ((slot as u64) << 8) | k as u64;
            if let Err(e) = self.epoll.ctl(
                ControlOperation::Add,
                fd.as_raw_fd(),
                EpollEvent::new(EventSet::IN, data),
            ) {
                log::error!("{}: {}: epoll: {e}", self.inner.name, m.pair.label());
            }
        }
        m.pair.disarm();
        log::info!(
            "{}: {} joined ({:?}, {}; {} members)",
            self.inner.name,
            m.pair.label(),
            self.mode,
            m.pair.layout(),
            self.slots.iter().flatten().count() + 1
        );
        self.slots[slot] = Some(m);
        if self.events.len() < 4 * self.slots.len() + 1 {
            self.events
                .resize(4 * self.slots.len() + 1, EpollEvent::default());
        }
    }

    /// Takes the member in `slot` out: its eventfds leave the epoll (they are duplicates of
    /// the frontend's, which stay open, so closing ours would not), then one last pass, as a
    /// pair's own thread does when it stops.
    fn remove(&mut self, slot: usize) {
        let Some(mut m) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        for fd in &m.kicks {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                fd.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        if let Err(e) = m.pair.pass() {
            Self::broken(&m, &e);
        }
        self.inner.members.fetch_sub(1, Ordering::Relaxed);
        log::info!("{}: {} left", self.inner.name, m.pair.label());
    }

    fn broken(m: &Member, e: &crate::worker::Broken) {
        m.stats.broken.fetch_add(1, Ordering::Relaxed);
        log::error!(
            "{}: {e}; the queue pair stops until the frontend resets the device",
            m.pair.label()
        );
    }

    /// One pass of every member; a member whose queue broke leaves (the device's stop finds
    /// it gone). Returns the work done.
    fn round(&mut self) -> u32 {
        let mut work = 0u32;
        let mut broke = Vec::new();
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if let Some(m) = s {
                match m.pair.pass() {
                    Ok(n) => work += n,
                    Err(e) => {
                        Self::broken(m, &e);
                        broke.push(slot);
                    }
                }
            }
        }
        for slot in broke {
            self.drop_broken(slot);
        }
        work
    }

    /// A broken member leaves without the last pass (its queue cannot be trusted).
    fn drop_broken(&mut self, slot: usize) {
        if let Some(m) = self.slots.get_mut(slot).and_then(Option::take) {
            for fd in &m.kicks {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    fd.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
            self.inner.members.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Polls for up to `linger`; true as soon as a round found work.
    fn linger(&mut self, linger: Duration) -> bool {
        let until = Instant::now() + linger;
        loop {
            for _ in 0..LINGER_CHECK {
                if self.round() > 0 {
                    return true;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until || !self.inner.cmds_empty() {
                return false;
            }
        }
    }

    /// Every member's notifications on; true if one of them has work already.
    fn arm(&mut self) -> bool {
        let mut work = false;
        let mut broke = Vec::new();
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if let Some(m) = s {
                match m.pair.arm() {
                    Ok(w) => work |= w,
                    Err(e) => {
                        Self::broken(m, &e);
                        broke.push(slot);
                    }
                }
            }
        }
        for slot in broke {
            self.drop_broken(slot);
        }
        work || !self.inner.cmds_empty()
    }

    fn disarm(&mut self) {
        for m in self.slots.iter_mut().flatten() {
            m.pair.disarm();
        }
    }

    /// Sleeps until a kick, an interrupt or a command; drains what woke it.
    fn sleep(&mut self) {
        let n = match self.epoll.wait(-1, &mut self.events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                log::error!("{}: epoll: {e}", self.inner.name);
                thread::sleep(Duration::from_millis(1));
                0
            }
        };
        for ev in &self.events[..n] {
            let data = ev.data();
            if data == WAKE {
                let _ = self.inner.wake.read();
                continue;
            }
            let (slot, k) = ((data >> 8) as usize, (data & 0xff) as usize);
            if let Some(fd) = self
                .slots
                .get(slot)
                .and_then(Option::as_ref)
                .and_then(|m| m.kicks.get(k))
            {
                // The frontend holds the kick eventfd too: never a read that could wait.
                peer::drain(fd);
                if let Some(m) = self.slots[slot].as_ref() {
                    NetStats::add(&m.stats.wakeups, 1);
                }
            }
        }
    }
}

/// How long an idle worker (or poll group) polls before it sleeps: it adapts between 0 and
/// the mode's linger (doubling when lingering caught the guest's next batch, halving when it
/// did not), so a guest that is not coming back soon stops costing polling time — the sync
/// loop's rule (ptnet-datapath's `kloop`).
#[derive(Debug)]
struct Linger {
    ns: u64,
}

impl Default for Linger {
    fn default() -> Self {
        Linger { ns: u64::MAX }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Linger {
    /// How long to poll now, at most `max` (zero: go to sleep at once).
    fn now(&mut self, max: Duration) -> Duration {
        self.ns = self.ns.min(nanos(max));
        Duration::from_nanos(self.ns)
    }

    /// After polling: longer next time if it `caught` work, shorter if not.
    fn adapt(&mut self, caught: bool, max: Duration) {
        let max = nanos(max);
        self.ns = if caught {
            self.ns
                .saturating_mul(2)
                .clamp(1000, max.max(1000))
                .min(max)
        } else {
            self.ns / 2
        };
    }

    /// Woken by a kick: the guest is active again, lingering may try again.
    fn woken(&mut self, max: Duration) {
        self.ns = self.ns.max(nanos(max) / 4);
    }
}
