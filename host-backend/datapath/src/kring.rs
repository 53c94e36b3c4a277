//! Kernel-side rings ("krings"): the daemon's private copy of a ring's indices, the client's
//! CSB entry and interrupt it is bound to, the sync prologue and the publication step, and
//! the leases that let several senders fill one RX ring at once.

use std::fmt;
use std::sync::Arc;

use ptnet_spec::csb::{CsbAtok, CsbKtoa};
use ptnet_spec::ring::{KringIndices, Validated, distance, nm_add, nm_prev};
use vmm_sys_util::eventfd::EventFd;

use crate::csb::CsbRef;
use crate::mem::RingView;
use crate::peer::PeerEventFd;

/// How the daemon interrupts a client about one ring.
///
/// A host client's interrupt is an eventfd the client shares ([`PeerEventFd`]); a port the
/// daemon drives itself (a NIC worker, a virtio-net queue worker) has a private eventfd. A VM's
/// is a virtqueue: Linux's
/// `vring_interrupt()` ignores an interrupt that completed no buffer, so raising it first
/// completes one driver-posted event buffer, then signals the call eventfd (see ptnet-device).
///
/// `raise` is called after the kring lock is dropped, from whichever sync loop published the
/// ring (a VALE sender's loop raises the receiver's RX interrupts), possibly from several
/// threads at once. It must not block: a full or gone interrupt channel loses nothing the
/// client cannot recover by looking at the CSB.
pub trait Interrupt: Send + Sync + fmt::Debug {
    /// Interrupts the client.
    fn raise(&self);
}

/// A private eventfd: only the daemon holds it, so its `O_NONBLOCK` holds and a full counter
/// (`EAGAIN`) already means "pending": nothing is lost.
impl Interrupt for EventFd {
    #[inline]
    fn raise(&self) {
        let _ = self.write(1);
    }
}

/// An eventfd a client shares: written so that the client cannot make the writer wait
/// (see [`crate::peer`]).
impl Interrupt for PeerEventFd {
    #[inline]
    fn raise(&self) {
        self.signal();
    }
}

/// A ring's link to its client: the CSB entry and the interrupt.
#[derive(Debug, Clone)]
pub struct ClientRing {
    /// The client's CSB.
    pub csb: CsbRef,
    /// This ring's entry in it (checked to exist when bound).
    pub index: u32,
    /// Raised to interrupt the client about this ring.
    pub irq: Arc<dyn Interrupt>,
}

/// What binds a client to a port's rings: its CSB and one interrupt per ring.
#[derive(Debug, Clone)]
pub struct ClientBinding {
    csb: CsbRef,
    irqs: Vec<Arc<dyn Interrupt>>,
}

impl ClientBinding {
    /// A binding whose interrupts are all of one kind (eventfds); `irqs` must have one per
    /// CSB entry.
    pub fn new<I: Interrupt + 'static>(csb: CsbRef, irqs: Vec<Arc<I>>) -> Option<Self> {
        Self::with_interrupts(
            csb,
            irqs.into_iter().map(|e| e as Arc<dyn Interrupt>).collect(),
        )
    }

    /// A binding with any kind of interrupt (a VM's are virtqueues); `irqs` must have one
    /// interrupt per CSB entry.
    pub fn with_interrupts(csb: CsbRef, irqs: Vec<Arc<dyn Interrupt>>) -> Option<Self> {
        (!irqs.is_empty() && irqs.len() == csb.len() as usize)
            .then_some(ClientBinding { csb, irqs })
    }

    /// The link of ring `i` (CSB order).
    pub fn ring(&self, i: u32) -> ClientRing {
        let irq = self
            .irqs
            .get(i as usize)
            .cloned()
            // PANIC-free: a ring past the end gets the last eventfd; `Kring::bind` then
            // refuses it because the CSB has no such entry.
            .unwrap_or_else(|| Arc::clone(self.irqs.last().expect("at least one ring")));
        ClientRing {
            csb: self.csb.clone(),
            index: i,
            irq,
        }
    }

    /// The CSB.
    pub fn csb(&self) -> &CsbRef {
        &self.csb
    }
}

/// Direction of a kring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Application transmits, the daemon consumes.
    Tx,
    /// The daemon fills, the application receives.
    Rx,
}

/// What a failed prologue looked like, for the log and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRing {
    /// The application's head as read.
    pub head: u32,
    /// The application's cur as read.
    pub cur: u32,
    /// The kring at that moment.
    pub k: KringIndices,
}

/// One kernel-side ring.
#[derive(Debug)]
pub struct Kring {
    /// The indices (daemon-private, authoritative).
    pub k: KringIndices,
    /// The ring's slots in the shared region.
    pub ring: RingView,
    /// TX or RX.
    pub dir: Dir,
    /// The bound client, if any.
    pub client: Option<ClientRing>,
    /// Prologue failures since creation.
    pub resets: u64,
    /// Interrupts raised.
    pub irqs: u64,
}

impl Kring {
    /// A kring over `ring`, in its reset state.
    pub fn new(ring: RingView, dir: Dir) -> Self {
        let mut kr = Kring {
            k: KringIndices::default(),
            ring,
            dir,
            client: None,
            resets: 0,
            irqs: 0,
        };
        kr.reset();
        kr
    }

    /// Ring size.
    #[inline]
    pub fn num_slots(&self) -> u32 {
        self.k.num_slots
    }

    /// Back to the initial state: a TX ring entirely free, an RX ring empty. The shared ring
    /// header and the bound CSB entry (if any) are rewritten to match.
    pub fn reset(&mut self) {
        let n = self.ring.num_slots();
        self.k = match self.dir {
            Dir::Tx => KringIndices::new_tx(n),
            Dir::Rx => KringIndices::new_rx(n),
        };
        self.ring
            .reset_pointers(self.k.rhead, self.k.rcur, self.k.rtail);
        self.init_csb();
    }

    /// Writes the kring's state into the bound client's CSB entry and asks for kicks and
    /// interrupts (netmap's CSB_ENABLE).
    fn init_csb(&self) {
        if let Some((atok, ktoa)) = self.entries() {
            ktoa.kern_init(self.k.hwcur, self.k.hwtail);
            atok.kern_init(self.k.rhead, self.k.rcur);
        }
    }

    /// Binds a client, keeping the kring's state (call [`Kring::reset`] for a fresh ring), and
    /// initialises its CSB entry from it. Returns false if the CSB has no entry `c.index`.
    pub fn bind(&mut self, c: ClientRing) -> bool {
        if c.csb.atok(c.index).is_none() {
            return false;
        }
        self.client = Some(c);
        self.init_csb();
        true
    }

    /// Unbinds the client (the kring keeps its state until the next bind resets it).
    pub fn unbind(&mut self) {
        self.client = None;
    }

    /// The bound client's CSB entry pair.
    #[inline]
    pub fn entries(&self) -> Option<(&CsbAtok, &CsbKtoa)> {
        let c = self.client.as_ref()?;
        Some((c.csb.atok(c.index)?, c.csb.ktoa(c.index)?))
    }

    /// Reads the client's `head`/`cur` and validates them for this ring's direction. On
    /// failure the ring is reset to the kring's state (the client's pointers are overwritten
    /// with the last valid ones) and the failure returned for logging.
    pub fn prologue(&mut self) -> Result<(Validated, u32), BadRing> {
        let Some((atok, _)) = self.entries() else {
            // No client: nothing new from the application side.
            return Ok((
                Validated {
                    head: self.k.rhead,
                    cur: self.k.rcur,
                },
                0,
            ));
        };
        let a = atok.kern_read();
        let r = match self.dir {
            Dir::Tx => self.k.txsync_prologue(a.head, a.cur),
            Dir::Rx => self.k.rxsync_prologue(a.head, a.cur),
        };
        match r {
            Ok(v) => {
                self.k.rhead = v.head;
                self.k.rcur = v.cur;
                Ok((v, a.sync_flags))
            }
            Err(_) => {
                let bad = BadRing {
                    head: a.head,
                    cur: a.cur,
                    k: self.k,
                };
                atok.appl_write(self.k.rhead, self.k.rcur);
                self.resets += 1;
                Err(bad)
            }
        }
    }

    /// Publishes `hwcur`/`hwtail` to the client. If `news` (something changed for the
    /// client) and the client asked for interrupts, returns the interrupt to raise.
    #[inline]
    pub fn publish(&mut self, news: bool) -> Option<Arc<dyn Interrupt>> {
        let (atok, ktoa) = self.entries()?;
        let wants = ktoa.kern_publish(atok, self.k.hwcur, self.k.hwtail);
        if news && wants {
            self.irqs += 1;
            self.client.as_ref().map(|c| Arc::clone(&c.irq))
        } else {
            None
        }
    }

    /// Slots in use now: TX, filled by the client and not yet consumed (`hwcur` to its
    /// `head`); RX, holding frames the client has not released (its `head` to `hwtail`). The
    /// client's `head` is read from the CSB and used only if it passes the sync prologue's
    /// checks (else the last validated one), so a hostile value cannot skew the count; it is
    /// read because ports reclaim released RX slots lazily.
    pub fn used(&self) -> u32 {
        let n = self.k.num_slots;
        let head = self
            .entries()
            .map(|(atok, _)| atok.kern_read())
            .and_then(|a| match self.dir {
                Dir::Tx => self.k.txsync_prologue(a.head, a.cur).ok(),
                Dir::Rx => self.k.rxsync_prologue(a.head, a.cur).ok(),
            })
            .map_or(self.k.rhead, |v| v.head);
        match self.dir {
            Dir::Tx => ptnet_spec::ring::distance(self.k.hwcur, head, n),
            Dir::Rx => ptnet_spec::ring::distance(head, self.k.hwtail, n),
        }
    }

    /// TX: everything up to `rhead` was consumed; the whole ring is free again (VALE).
    #[inline]
    pub fn tx_consumed_all(&mut self, upto: u32) {
        self.k.hwcur = upto;
        self.k.hwtail = nm_prev(upto, self.k.num_slots);
        self.k.rtail = self.k.hwtail;
    }
}

/// Raises an interrupt returned by [`Kring::publish`] (after the kring lock is dropped).
#[inline]
pub fn raise(irq: Option<Arc<dyn Interrupt>>) {
    if let Some(irq) = irq {
        irq.raise();
    }
}

/// Most leases outstanding on one RX ring (one per concurrent sender).
pub const MAX_LEASES: usize = 256;

/// A reservation of consecutive RX slots, filled outside the kring lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// First slot.
    pub start: u32,
    /// Number of slots.
    pub len: u32,
    id: usize,
    generation: u64,
}

/// The lease state of an RX kring (netmap's `nkr_hwlease` and lease array).
#[derive(Debug)]
pub struct Leases {
    hwlease: u32,
    /// Circular queue of (end, done), oldest first.
    q: Box<[(u32, bool); MAX_LEASES]>,
    first: usize,
    count: usize,
    generation: u64,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            hwlease: 0,
            q: Box::new([(0, false); MAX_LEASES]),
            first: 0,
            count: 0,
            generation: 0,
        }
    }
}

impl Leases {
    /// Forgets every outstanding lease (after a ring reset); late completions are ignored.
    pub fn reset(&mut self, k: &KringIndices) {
        self.hwlease = k.hwtail;
        self.first = 0;
        self.count = 0;
        self.generation += 1;
    }

    /// Slots free for new leases: from `hwlease` up to one before `hwcur`.
    #[inline]
    pub fn free(&self, k: &KringIndices) -> u32 {
        distance(self.hwlease, nm_prev(k.hwcur, k.num_slots), k.num_slots)
    }

    /// Reserves up to `want` slots; `None` if the ring is full or too many leases are out.
    pub fn reserve(&mut self, k: &KringIndices, want: u32) -> Option<Lease> {
        let len = want.min(self.free(k));
        if len == 0 || self.count == MAX_LEASES {
            return None;
        }
        let start = self.hwlease;
        self.hwlease = nm_add(start, len, k.num_slots);
        let id = (self.first + self.count) % MAX_LEASES;
        self.q[id] = (self.hwlease, false);
        self.count += 1;
        Some(Lease {
            start,
            len,
            id,
            generation: self.generation,
        })
    }

    /// Gives back the unused end of `lease` (only `used` slots were filled) if it is the
    /// newest lease; returns false if younger leases exist (the caller must then fill the rest).
    pub fn shrink(&mut self, k: &KringIndices, lease: &mut Lease, used: u32) -> bool {
        let newest = (self.first + self.count + MAX_LEASES - 1) % MAX_LEASES;
        if lease.generation != self.generation || self.count == 0 || lease.id != newest {
            return false;
        }
        let end = nm_add(lease.start, used, k.num_slots);
        self.hwlease = end;
        self.q[lease.id].0 = end;
        lease.len = used;
        true
    }

    /// Marks `lease` filled. Returns the new `hwtail` if the oldest leases are now all
    /// complete (the caller then publishes it), `None` if older leases are still being filled.
    pub fn complete(&mut self, lease: Lease) -> Option<u32> {
        if lease.generation != self.generation {
            return None;
        }
        self.q[lease.id].1 = true;
        let mut tail = None;
        while self.count > 0 && self.q[self.first].1 {
            tail = Some(self.q[self.first].0);
            self.first = (self.first + 1) % MAX_LEASES;
            self.count -= 1;
        }
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(n: u32) -> KringIndices {
        KringIndices::new_rx(n)
    }

    #[test]
    fn leases_never_cover_the_last_free_slot() {
        let k = rx(8);
        let mut l = Leases::default();
        l.reset(&k);
        let a = l.reserve(&k, 100).unwrap();
        assert_eq!((a.start, a.len), (0, 7));
        assert!(l.reserve(&k, 1).is_none());
    }

    #[test]
    fn hwtail_advances_only_over_completed_oldest_leases() {
        let mut k = rx(16);
        let mut l = Leases::default();
        l.reset(&k);
        let a = l.reserve(&k, 3).unwrap();
        let b = l.reserve(&k, 4).unwrap();
        assert_eq!(b.start, 3);
        assert_eq!(l.complete(b), None);
        assert_eq!(l.complete(a), Some(7));
        k.hwtail = 7;
        // After a reset, a late completion of an old lease is ignored.
        let c = l.reserve(&k, 2).unwrap();
        l.reset(&k);
        assert_eq!(l.complete(c), None);
    }

    #[test]
    fn only_the_newest_lease_can_shrink() {
        let k = rx(16);
        let mut l = Leases::default();
        l.reset(&k);
        let mut a = l.reserve(&k, 4).unwrap();
        let mut b = l.reserve(&k, 4).unwrap();
        assert!(!l.shrink(&k, &mut a, 2));
        assert!(l.shrink(&k, &mut b, 1));
        assert_eq!(l.free(&k), 16 - 1 - 5);
        assert_eq!(l.complete(a), Some(4));
        assert_eq!(l.complete(b), Some(5));
    }

    #[test]
    fn too_many_leases_are_refused() {
        let k = rx(4096);
        let mut l = Leases::default();
        l.reset(&k);
        for _ in 0..MAX_LEASES {
            assert!(l.reserve(&k, 1).is_some());
        }
        assert!(l.reserve(&k, 1).is_none());
    }
}
