// SPDX-License-Identifier: GPL-2.0

//! What Linux 7.3's kernel crate lacks for deferred work: cancelling work owned through an
//! [`Arc`] (it can enqueue an `Arc<T>` work item but not take it back; a driver that defers
//! work from an interrupt must, before its device goes away: the work would run after
//! remove, and after the module is gone), and the default system queue (its `system()` is
//! `system_wq`, which 7.3 deprecates with a warning in the log).

use kernel::{
    bindings,
    sync::Arc,
    workqueue::{HasWork, Queue, Work, WorkItem},
};

/// `system_dfl_wq`: the queue for work that has no reason to stay on the CPU that queued it.
pub(crate) fn system_dfl() -> &'static Queue {
    // SAFETY: `system_dfl_wq` is a C global set up at boot (before any module loads) and
    // never freed.
    unsafe { Queue::from_raw(bindings::system_dfl_wq) }
}

/// `cancel_work_sync` for the work item of `this`: a queued run is taken off its queue
/// (and the reference it held dropped), a running one is waited for. Afterwards the item
/// runs again only if someone enqueues it again. May sleep.
pub(crate) fn cancel_sync<T>(this: &Arc<T>)
where
    T: WorkItem<Pointer = Arc<T>> + HasWork<T>,
{
    let ptr = Arc::as_ptr(this).cast_mut();
    // SAFETY: `ptr` points at a live `T` (we hold a reference), so its `Work` field is
    // valid; `cancel_work_sync` only needs an initialised `work_struct`, which `Work::new`
    // made when `T` was initialised.
    let pending = unsafe { bindings::cancel_work_sync(Work::raw_get(T::raw_get_work(ptr))) };
    if pending {
        // SAFETY: a pending item was enqueued by `Queue::enqueue`, which leaked one reference
        // with `Arc::into_raw` (of this very `T`) for `run` to take back; the cancelled item
        // will not run, so the reference is ours to drop.
        drop(unsafe { Arc::from_raw(ptr) });
    }
}
