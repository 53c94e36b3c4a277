//! The virtqueue type the vhost-user handler manages for us: vhost-user-backend's
//! `VringRwLock`, plus a hook that tells the device whenever a queue's kick, call, enabled or
//! ready state changes (the crate has no such callback, and the device must start when the
//! last queue is set up and stop as soon as one is taken away).
//!
//! It also screens the frontend's descriptors: a kick or call descriptor that is not an
//! eventfd is dropped (the queue then never becomes ready), and accepted ones are made
//! non-blocking. The frontend keeps sharing them, so the daemon reads kicks and signals calls
//! only through `ptnet_datapath::peer` (a frontend that clears `O_NONBLOCK` again cannot make
//! a daemon thread wait): [`HookedVring::call`] hands out the call eventfd for that, to be
//! signalled after the queue's lock is dropped.
//!
//! The handler creates the queues itself (`VringT::new`, inside `VhostUserDaemon::new`, on the
//! calling thread), so the device collects them through [`collect`].

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use ptnet_datapath::peer::{self, PeerEventFd};

use vhost_user_backend::{VringRwLock, VringState, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::{Error as VirtQueError, QueueT};

use crate::guest::{GuestMem, checked_eventfd};

/// What changed on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new kick eventfd (or none).
    Kick,
    /// A new call eventfd (or none).
    Call,
    /// Enabled or disabled (`SET_VRING_ENABLE`).
    Enabled(bool),
    /// Started (first kick) or stopped (`GET_VRING_BASE`).
    Ready(bool),
}

/// Receives the changes of the queues it was registered with.
pub trait VringHook: Send + Sync {
    /// Queue `index` changed.
    fn changed(&self, index: u16, what: Change);
}

/// A virtqueue: vhost-user-backend's `VringRwLock` with a change hook.
#[derive(Clone)]
pub struct HookedVring {
    inner: VringRwLock<GuestMem>,
    hook: Arc<OnceLock<(Weak<dyn VringHook>, u16)>>,
    /// A duplicate of the call eventfd the queue holds, for signalling without its lock.
    call: Arc<Mutex<Option<Arc<PeerEventFd>>>>,
}

thread_local! {
    /// Queues created on this thread while [`collect`] runs. vhost-user-backend creates the
    /// queues inside `VhostUserDaemon::new` through `VringT::new(mem, size)`, which takes
    /// nothing the device could recognise, and offers no way to reach them afterwards (its
    /// handler keeps them private; only vring worker threads, which these devices do not use,
    /// see them): the thread creating the daemon is the one link there is.
    static CREATED: RefCell<Option<Vec<HookedVring>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns what it returned with the queues it created, in creation order (the
/// handler creates queue 0 first).
pub fn collect<R>(f: impl FnOnce() -> R) -> (R, Vec<HookedVring>) {
    CREATED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let v = CREATED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, v)
}

impl HookedVring {
    /// Registers the hook that hears about this queue, as queue `index`.
    pub fn set_hook(&self, hook: Weak<dyn VringHook>, index: u16) {
        let _ = self.hook.set((hook, index));
    }

    /// The queue itself, for the interrupt path.
    pub fn inner(&self) -> &VringRwLock<GuestMem> {
        &self.inner
    }

    /// The queue's call eventfd, if the frontend gave one: signal it with no lock held.
    pub fn call(&self) -> Option<Arc<PeerEventFd>> {
        self.call.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Signals the call eventfd (interrupts the guest), never waiting on the frontend.
    pub fn signal_guest(&self) {
        if let Some(c) = self.call() {
            c.signal();
        }
    }

    fn notify(&self, what: Change) {
        if let Some((hook, index)) = self.hook.get() {
            if let Some(h) = hook.upgrade() {
                h.changed(*index, what);
            }
        }
    }

    fn screen(&self, file: Option<File>, what: &str) -> Option<File> {
        let file = file?;
        match checked_eventfd(file) {
            Ok(f) => Some(f),
            Err(e) => {
                let index = self.hook.get().map_or(u16::MAX, |h| h.1);
                log::warn!("virtqueue {index}: {what} descriptor refused: {e}");
                None
            }
        }
    }
}

impl<'a> VringStateGuard<'a, GuestMem> for HookedVring {
    type G = <VringRwLock<GuestMem> as VringStateGuard<'a, GuestMem>>::G;
}

impl<'a> VringStateMutGuard<'a, GuestMem> for HookedVring {
    type G = <VringRwLock<GuestMem> as VringStateMutGuard<'a, GuestMem>>::G;
}

impl VringT<GuestMem> for HookedVring {
    fn new(mem: GuestMem, max_queue_size: u16) -> Result<Self, VirtQueError> {
        let v = HookedVring {
            inner: VringRwLock::new(mem, max_queue_size)?,
            hook: Arc::new(OnceLock::new()),
            call: Arc::new(Mutex::new(None)),
        };
        CREATED.with(|c| {
            if let Some(list) = c.borrow_mut().as_mut() {
                list.push(v.clone());
            }
        });
        Ok(v)
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, GuestMem>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, GuestMem>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.inner.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        self.signal_guest();
        Ok(())
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled);
        self.notify(Change::Enabled(enabled));
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), VirtQueError> {
        self.inner.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready);
        self.notify(Change::Ready(ready));
    }

    fn set_kick(&self, file: Option<File>) {
        let file = self.screen(file, "kick");
        self.inner.set_kick(file);
        self.notify(Change::Kick);
    }

    fn read_kick(&self) -> io::Result<bool> {
        let st = self.inner.get_ref();
        if let Some(k) = st.get_kick() {
            peer::drain(k);
        }
        Ok(st.is_enabled())
    }

    fn set_call(&self, file: Option<File>) {
        let file = self.screen(file, "call");
        let dup = match file.as_ref().map(File::try_clone) {
            Some(Ok(f)) => Some(Arc::new(PeerEventFd::new(
                ptnet_datapath::sys::file_eventfd(f),
            ))),
            Some(Err(e)) => {
                log::warn!(
                    "call descriptor: cannot duplicate it ({e}); the guest gets no interrupts"
                );
                None
            }
            None => None,
        };
        *self.call.lock().unwrap_or_else(|e| e.into_inner()) = dup;
        self.inner.set_call(file);
        self.notify(Change::Call);
    }

    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file)
    }
}

/// A queue's state as the device needs it to decide whether to run.
pub fn is_live(v: &VringState<GuestMem>) -> bool {
    v.get_queue().ready() && v.is_enabled() && v.get_kick().is_some() && v.get_call().is_some()
}
