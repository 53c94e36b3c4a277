//! The NIC worker: the application side of the port's rings (it plays the host client's part
//! with an [`AppRing`] per ring), the interface's backend, and the loop between them.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::backend::{Link, NicBackend, NicOpener, RX_CSUM_PARTIAL, error_chain};
use super::stats::{NicStats, add, backend_code};
use crate::app::AppRing;
use crate::csb::CsbRef;
use crate::switch::vale::{MAX_FRAGS, ValePortSync};
use crate::switch::vnet;

/// The NIC worker's side of its VALE port: both rings and the sync entry points.
pub(crate) struct AppSide {
    pub(crate) sync: ValePortSync,
    tx: AppRing,
    rx: AppRing,
}

/// Frames and bytes of one batch.
#[derive(Debug, Default, Clone, Copy)]
struct Batch {
    packets: u64,
    bytes: u64,
    drops: u64,
}

impl AppSide {
    pub(crate) fn new(sync: ValePortSync, csb: CsbRef) -> Self {
        let ifc = sync.port.interface();
        let ntx = ifc.tx.len() as u32;
        // The worker never sleeps on its TX ring (txsync frees it at once) and asks for RX
        // interrupts only before sleeping (AppRing starts with them off).
        let tx = AppRing::new(ifc.tx[0].clone(), csb.clone(), 0, 0);
        let rx = AppRing::new(ifc.rx[0].clone(), csb, 0, ntx);
        AppSide { sync, tx, rx }
    }

    /// Copies one frame from the wire into the TX ring (finishing its checksum if `csum`);
    /// false if the ring is full. The caller dropped frames larger than a buffer.
    #[inline]
    fn push(&mut self, frame: &[u8], csum: bool) -> bool {
        if self.tx.avail() == 0 {
            return false;
        }
        let first = self.tx.head();
        self.tx.put_frame(frame);
        if csum {
            if let (Some((at, c)), Some((b, _))) =
                (vnet::partial_checksum(frame), self.tx.buffer(first))
            {
                b.write(at, &c.to_be_bytes());
            }
        }
        true
    }

    /// Publishes the TX ring and runs txsync: the switch forwards every queued frame.
    fn flush_tx(&mut self) {
        self.tx.txsync(&self.sync);
    }

    /// Sends what the switch delivered through `b`, whole frames, until TX is full. Returns
    /// the batch and whether TX filled up.
    fn send_to_wire(&mut self, b: &mut dyn NicBackend) -> (Batch, bool) {
        let mut out = Batch::default();
        let mut full = false;
        let r = &mut self.rx;
        while r.avail() > 0 {
            // One frame: its fragments, up to MAX_FRAGS, all held (the switch publishes whole
            // frames).
            let (frags, total) = r.frame_at(r.head(), MAX_FRAGS as u32);
            let Some(dst) = b.tx_slot() else {
                full = true;
                break;
            };
            if total > dst.len() || total < 14 {
                out.drops += 1;
            } else {
                let mut ofs = 0;
                let mut k = r.head();
                for _ in 0..frags {
                    if let Some((src, s)) = r.buffer(k) {
                        let len = usize::from(s.len);
                        // ofs + len <= total <= dst.len(): each slot's length was bounded the
                        // same way when the frame was measured.
                        ofs += src.read(0, &mut dst[ofs..ofs + len]);
                    }
                    k = r.next(k);
                }
                b.tx_commit(total);
                out.packets += 1;
                out.bytes += total as u64;
            }
            r.advance(frags);
        }
        (out, full)
    }

    /// Drops everything delivered (the link is down). Returns the frames dropped.
    fn drop_rx(&mut self) -> u64 {
        let r = &mut self.rx;
        let mut frames = 0;
        while r.avail() > 0 {
            let (slots, _) = r.frame_at(r.head(), MAX_FRAGS as u32);
            r.advance(slots);
            frames += 1;
        }
        r.publish();
        frames
    }
}

/// How often the worker looks at the interface's state while it is up (a socket error makes
/// it look at once) and while it is down or gone.
const LINK_CHECK_UP: Duration = Duration::from_secs(1);
const LINK_CHECK_DOWN: Duration = Duration::from_millis(200);

/// Interrupt moderation: after a wake-up that brought fewer than [`COALESCE_BELOW`] frames
/// from the wire, the worker lets frames accumulate this long before looking again, instead
/// of waking once per frame. AF_XDP signals every frame: at 0.4 Mpps of 60-byte frames the
/// worker and the host client used 1.15 cores without it, 0.29 with it (`bench/nic.sh`);
/// AF_PACKET's TPACKET_V3 blocks batch already. The added latency is at most this, and only
/// while frames keep coming (the first frame after an idle period is handled at once).
const COALESCE: Duration = Duration::from_micros(50);
const COALESCE_BELOW: usize = 32;

pub(crate) struct Worker {
    opener: Box<dyn NicOpener>,
    backend: Option<Box<dyn NicBackend>>,
    app: AppSide,
    rx_irq: Arc<EventFd>,
    stop: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
    stats: Arc<NicStats>,
    link: Link,
    /// Frames dropped on the way in since the last log line (rate limit).
    logged_oversize: u64,
    /// Failed reopenings in a row (rate limit of their log lines).
    reopen_failures: u64,
}

impl Worker {
    /// A worker over `app`, with `backend` already opened through `opener`.
    pub(crate) fn new(
        opener: Box<dyn NicOpener>,
        backend: Box<dyn NicBackend>,
        app: AppSide,
        rx_irq: Arc<EventFd>,
        (stop, stopping): (Arc<EventFd>, Arc<AtomicBool>),
        stats: Arc<NicStats>,
    ) -> Self {
        Worker {
            opener,
            backend: Some(backend),
            app,
            rx_irq,
            stop,
            stopping,
            stats,
            link: Link::Up,
            logged_oversize: 0,
            reopen_failures: 0,
        }
    }

    fn set_link(&mut self, l: Link) {
        if l != self.link {
            log::info!(
                "{}: link {} -> {}",
                self.opener.ifname(),
                self.link.name(),
                l.name()
            );
            self.link = l;
            self.stats.link.store(l.to_u8(), Ordering::Relaxed);
            add(&self.stats.link_changes, 1);
        }
    }

    fn set_backend(&mut self, b: Option<Box<dyn NicBackend>>) {
        self.stats.backend.store(
            backend_code(b.as_ref().map(|b| b.kind())),
            Ordering::Relaxed,
        );
        self.backend = b;
    }

    /// Looks at the interface; closes the backend when it is not usable and opens it again
    /// when it is back (a new interface of the same name included).
    fn check_link(&mut self) {
        let (l, idx) = self.opener.link();
        if l != Link::Up {
            if self.backend.is_some() {
                self.set_backend(None);
            }
            self.set_link(l);
            return;
        }
        let stale = self.backend.as_ref().is_some_and(|b| b.ifindex() != idx);
        if self.backend.is_none() || stale || self.link != Link::Up {
            self.set_backend(None);
            match self.opener.open() {
                Ok((b, note)) => {
                    self.reopen_failures = 0;
                    *self.stats.note.lock().unwrap_or_else(|e| e.into_inner()) = note;
                    add(&self.stats.opens, 1);
                    self.set_backend(Some(b));
                    self.set_link(Link::Up);
                }
                Err(e) => {
                    // Retried every LINK_CHECK_DOWN: say it the first time, then now and then.
                    self.reopen_failures += 1;
                    if self.reopen_failures % 50 == 1 {
                        log::warn!(
                            "{}: cannot reopen (attempt {}): {}",
                            self.opener.ifname(),
                            self.reopen_failures,
                            error_chain(&e)
                        );
                    }
                    self.set_link(Link::Down);
                }
            }
        }
    }

    pub(crate) fn run(&mut self) {
        let mut next_check = Instant::now() + LINK_CHECK_UP;
        let mut next_stats = Instant::now();
        let mut tx_full = false;
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 8];
        log::info!(
            "{}: NIC worker started ({})",
            self.opener.ifname(),
            self.backend
                .as_ref()
                .map_or("no backend", |b| b.kind().name())
        );
        while !self.stopping.load(Ordering::Acquire) {
            let mut work = false;
            let mut error = false;
            let mut from_wire = 0;
            let buf_size = self.app.tx.buf_size();
            if let Some(b) = self.backend.as_deref_mut() {
                // Wire → switch.
                let app = &mut self.app;
                let mut batch = Batch::default();
                let n = b.rx(&mut |frame, wire_len, flags| {
                    let len = frame.len();
                    if wire_len as usize != len || len > buf_size || len < 14 {
                        batch.drops += 1;
                        return;
                    }
                    let csum = flags & RX_CSUM_PARTIAL != 0;
                    if !app.push(frame, csum) {
                        app.flush_tx();
                        if !app.push(frame, csum) {
                            batch.drops += 1;
                            return;
                        }
                    }
                    batch.packets += 1;
                    batch.bytes += len as u64;
                });
                if batch.packets > 0 {
                    app.flush_tx();
                }
                work |= n > 0;
                from_wire = n;
                add(&self.stats.rx_packets, batch.packets);
                add(&self.stats.rx_bytes, batch.bytes);
                add(&self.stats.rx_drops, batch.drops);
                if batch.drops > 0 {
                    self.logged_oversize += batch.drops;
                    if self.logged_oversize == batch.drops || self.logged_oversize % 10000 == 0 {
                        log::warn!(
                            "{}: dropped received frames larger than the port's {buf_size}-byte \
                             buffers, truncated or runt ({} so far; are GRO/LRO or the \
                             senders' TSO on?)",
                            self.opener.ifname(),
                            self.logged_oversize
                        );
                    }
                }
                // Switch → wire.
                if self.app.rx.refresh() || self.app.rx.avail() > 0 {
                    let (out, full) = self.app.send_to_wire(b);
                    tx_full = full;
                    let sent = b.tx_flush();
                    // VALE reclaims RX slots lazily: publishing them is enough.
                    self.app.rx.publish();
                    work |= out.packets + out.drops > 0;
                    match sent {
                        Ok(()) => {
                            add(&self.stats.tx_packets, out.packets);
                            add(&self.stats.tx_bytes, out.bytes);
                            add(&self.stats.tx_drops, out.drops);
                        }
                        Err(e) => {
                            add(&self.stats.tx_drops, out.packets + out.drops);
                            log::debug!("{}: send failed: {e}", self.opener.ifname());
                            error = true;
                        }
                    }
                } else {
                    tx_full = false;
                }
                if Instant::now() >= next_stats {
                    add(&self.stats.rx_drops, b.kernel_drops());
                    next_stats = Instant::now() + Duration::from_millis(500);
                }
            } else if self.app.rx.refresh() || self.app.rx.avail() > 0 {
                add(&self.stats.tx_drops, self.app.drop_rx());
            }
            if let Some(b) = self.backend.as_deref_mut() {
                if let Some(e) = b.take_error() {
                    log::info!("{}: socket error: {e}", self.opener.ifname());
                    error = true;
                }
            }
            let now = Instant::now();
            if error || now >= next_check {
                self.check_link();
                next_check = now
                    + if self.link == Link::Up {
                        LINK_CHECK_UP
                    } else {
                        LINK_CHECK_DOWN
                    };
            }
            if work && !tx_full {
                if (1..COALESCE_BELOW).contains(&from_wire) {
                    thread::sleep(COALESCE);
                }
                continue;
            }
            // Sleep until the wire, the switch, TX room, a stop or the next link check.
            if !tx_full && self.app.rx.enable_notifications() {
                self.app.rx.disable_notifications();
                continue;
            }
            let mut n = 0;
            for (fd, ev) in [
                (self.rx_irq.as_raw_fd(), libc::POLLIN),
                (self.stop.as_raw_fd(), libc::POLLIN),
            ] {
                fds[n] = libc::pollfd {
                    fd,
                    events: ev,
                    revents: 0,
                };
                n += 1;
            }
            if let Some(b) = self.backend.as_deref() {
                n += b.poll_fds(tx_full, &mut fds[n..]);
            }
            let timeout = next_check
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, 1000) as i32;
            let r = crate::sys::poll(&mut fds[..n], timeout).unwrap_or(0);
            if r > 0 {
                if fds[0].revents & libc::POLLIN != 0 {
                    let _ = self.rx_irq.read();
                }
                if fds[2..n]
                    .iter()
                    .any(|p| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
                {
                    next_check = Instant::now();
                }
            }
            self.app.rx.disable_notifications();
        }
        log::info!("{}: NIC worker stopped", self.opener.ifname());
    }
}
