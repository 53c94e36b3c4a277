//! A running NIC port: the worker bound to its VALE port, its thread and its counters.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::backend::{NicError, NicOpener};
use super::stats::{NicSnapshot, NicStats, add, backend_code};
use super::worker::{AppSide, Worker};
use crate::csb::CsbMem;
use crate::kring::ClientBinding;
use crate::port::SyncPort;
use crate::switch::vale::{Switch, VPort, ValePortSync};

/// A running NIC port: the worker thread and its counters. Stopping it (or dropping it) joins
/// the worker and unbinds the VALE port; removing the port from the switch is the caller's.
pub struct NicPort {
    ifname: String,
    port: Arc<VPort>,
    switch: Arc<Switch>,
    stats: Arc<NicStats>,
    stop: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for NicPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NicPort")
            .field("ifname", &self.ifname)
            .field("port", &self.port.name())
            .finish()
    }
}

impl NicPort {
    /// Binds the worker to `port` (a port of `switch` with one TX and one RX ring), opens the
    /// interface through `opener` and starts the worker. The first open must succeed: its
    /// error (no such interface, MTU too large, no privileges) is returned.
    pub fn start(
        switch: Arc<Switch>,
        port: Arc<VPort>,
        mut opener: Box<dyn NicOpener>,
    ) -> Result<Self, NicError> {
        let ifname = opener.ifname().to_owned();
        let ioerr = |what| NicError::io(what, &ifname);
        let (backend, note) = opener.open()?;
        let ifc = port.interface();
        let n = (ifc.tx.len() + ifc.rx.len()) as u32;
        let csb_mem = CsbMem::new(n).map_err(ioerr("creating the port's CSB"))?;
        let csb = csb_mem.csb();
        let irqs = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()
            .map_err(ioerr("creating eventfds"))?;
        let rx_irq = Arc::clone(&irqs[ifc.tx.len()]);
        let binding = ClientBinding::new(csb.clone(), irqs)
            .ok_or_else(|| NicError::Config("binding does not match the CSB".into()))?;
        let sync = ValePortSync {
            switch: Arc::clone(&switch),
            port: Arc::clone(&port),
        };
        if !sync.bind(Some(&binding)) {
            sync.bind(None);
            return Err(NicError::Config(format!(
                "{}: cannot bind the NIC worker to every ring",
                port.name()
            )));
        }
        let stats = Arc::new(NicStats::default());
        *stats.note.lock().unwrap_or_else(|e| e.into_inner()) = note;
        stats
            .backend
            .store(backend_code(Some(backend.kind())), Ordering::Relaxed);
        add(&stats.opens, 1);
        let stop = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(ioerr("creating eventfds"))?);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut w = Worker::new(
            opener,
            backend,
            AppSide::new(sync, csb),
            rx_irq,
            (Arc::clone(&stop), Arc::clone(&stopping)),
            Arc::clone(&stats),
        );
        let name: String = format!("nic-{ifname}").chars().take(15).collect();
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || w.run())
            .map_err(ioerr("starting the worker thread"));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                ValePortSync {
                    switch: Arc::clone(&switch),
                    port: Arc::clone(&port),
                }
                .bind(None);
                return Err(e);
            }
        };
        log::info!("{}: attached {ifname}", port.name());
        Ok(NicPort {
            ifname,
            port,
            switch,
            stats,
            stop,
            stopping,
            thread: Some(thread),
        })
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The VALE port.
    pub fn port(&self) -> &Arc<VPort> {
        &self.port
    }

    /// The counters now.
    pub fn snapshot(&self) -> NicSnapshot {
        self.stats.snapshot(&self.ifname)
    }

    /// Stops the worker and unbinds the port.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        let _ = self.stop.write(1);
        if t.join().is_err() {
            log::error!("{}: the NIC worker panicked", self.ifname);
        }
        ValePortSync {
            switch: Arc::clone(&self.switch),
            port: Arc::clone(&self.port),
        }
        .bind(None);
        log::info!("{}: detached {}", self.port.name(), self.ifname);
    }
}

impl Drop for NicPort {
    fn drop(&mut self) {
        self.stop_now();
    }
}
