//! One frontend connection's virtio-net device: what it offers, the vhost-user callbacks, and
//! its life cycle.
//!
//! * **Queues**: `2 × pairs` data queues (receive `2i`, transmit `2i + 1`) and the control
//!   queue last. Pair `i` is served by port TX ring `i` and RX ring `i`; the device offers as
//!   many pairs as the port has ring pairs (`VIRTIO_NET_F_MQ` when more than one).
//! * **Start**, as soon as pair 0's queues have a kick eventfd and are ready and enabled: the
//!   port is bound to a private CSB (the device is the port's client, as a host process
//!   would be) and each live pair ([`crate::worker::Pair`], pair 0 also serving the control
//!   queue when it is live) joins a poll group ([`crate::group`]): the daemon's, or one of
//!   its own (its own thread). The crate's own vring worker threads are not
//!   used (`queues_per_thread` is empty): the pair workers are the only readers of their kick
//!   eventfds (they read duplicates), so no wake-up is lost to a second reader.
//! * **Restart** when any queue's kick, enabled or ready state changes while running (a
//!   driver enabling more pairs, a reconnecting frontend re-sending its rings): stop, then
//!   start over with the queues live now.
//! * **Stop**, on `GET_VRING_BASE`, `RESET_DEVICE` or disconnect: synchronously, before the
//!   handler replies (the driver may reuse its memory right after), the pairs leave their
//!   groups (after a last pass), their own threads are joined, and the port is unbound. The queues' `next_avail` stays where the workers left
//!   it, so `GET_VRING_BASE` returns the right base.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ptnet_datapath::csb::{CsbMem, CsbRef};
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::kring::ClientBinding;
use ptnet_datapath::port::SyncPort;
use ptnet_spec::vnet::VNET_HDR_LEN;
use ptnet_vhost_user::guest::{self, GuestMem, MemWatch};
use ptnet_vhost_user::vring::{Change, HookedVring, VringHook};
use ptnet_vhost_user::{PortDevice, thread_name};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::config::NetConfig;
use crate::ctrl::Ctrl;
use crate::group::{Membership, PollGroup, PollGroups};
pub use crate::stats::{NetStats, NetStatsSnapshot};
use crate::worker::{Pair, PairConfig};

/// Most queue pairs a device offers.
pub const MAX_PAIRS: u16 = 8;

/// What the device offers and how it runs.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// MAC address in the config space.
    pub mac: [u8; 6],
    /// How the workers wait (the daemon's sync loop mode).
    pub mode: Mode,
    /// Largest virtqueue the frontend may configure.
    pub max_queue_size: u16,
    /// Serve the queue pairs in these poll groups instead of a thread each (the groups'
    /// mode then applies, not `mode`).
    pub groups: Option<Arc<PollGroups>>,
}

/// The virtio feature bits a device with `pairs` queue pairs offers.
pub fn features(pairs: u16) -> u64 {
    let mut f = (1u64 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_NET_F_MAC)
        | (1 << VIRTIO_NET_F_STATUS)
        | (1 << VIRTIO_NET_F_MRG_RXBUF)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_NET_F_CTRL_VQ)
        | (1 << VIRTIO_NET_F_CTRL_RX)
        | (1 << VIRTIO_NET_F_CTRL_MAC_ADDR)
        // Offloads: the guest's TX checksums and TSO frames cross the switch with their
        // header to ports that carry it, and are resolved in software for the others.
        | (1 << VIRTIO_NET_F_CSUM)
        | (1 << VIRTIO_NET_F_HOST_TSO4)
        | (1 << VIRTIO_NET_F_HOST_TSO6)
        | (1 << VIRTIO_NET_F_HOST_ECN)
        | (1 << VIRTIO_NET_F_GUEST_CSUM)
        | (1 << VIRTIO_NET_F_GUEST_TSO4)
        | (1 << VIRTIO_NET_F_GUEST_TSO6)
        | (1 << VIRTIO_NET_F_GUEST_ECN)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    if pairs > 1 {
        f |= 1 << VIRTIO_NET_F_MQ;
    }
    f
}

/// The protocol features the device offers. Not `STATUS`: vhost 0.18's request handler does
/// not know `SET_STATUS`.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
}

/// Why the device did not start (it starts at the next change that completes its set-up).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A virtqueue's rings are not in guest memory.
    #[error("virtqueue {0} lies outside guest memory")]
    QueueOutside(usize),
    /// A live queue has no kick eventfd.
    #[error("{0}: no kick eventfd")]
    NoKick(&'static str),
    /// A queue's kick eventfd cannot be duplicated.
    #[error("{queue} kick eventfd")]
    Kick {
        /// Which queue.
        queue: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The port's CSB cannot be created.
    #[error("CSB")]
    Csb(#[source] io::Error),
    /// An eventfd of ours cannot be created.
    #[error("eventfd")]
    Eventfd(#[source] io::Error),
    /// The port refused the binding (or it does not cover every ring).
    #[error("the port refused the binding")]
    Binding,
    /// A queue pair's worker thread did not start.
    #[error("worker thread")]
    Thread(#[source] io::Error),
}

/// The device's hold on its port: the CSB it drives the rings through and one interrupt
/// eventfd per queue pair (the datapath raises it when the pair's RX ring, or a TX ring
/// whose slots a peer holds, has news).
#[derive(Debug)]
pub struct PortBinding {
    /// The CSB (TX rings, then RX rings).
    pub csb: CsbRef,
    /// Interrupt eventfd of each pair.
    pub irqs: Vec<Arc<EventFd>>,
}

/// Binds `port` to a fresh CSB, as its (only) client, with `pairs` interrupt eventfds.
/// Unbind with `port.bind(None)`.
pub fn bind_port(port: &dyn SyncPort, pairs: u16) -> Result<PortBinding, StartError> {
    let ifc = port.interface();
    let (ntx, nrx) = (ifc.tx.len(), ifc.rx.len());
    let csb_mem = CsbMem::new((ntx + nrx) as u32).map_err(StartError::Csb)?;
    let csb = csb_mem.csb();
    // Rings beyond the pairs share pair 0's interrupt (they see no traffic from this
    // client).
    let irqs = (0..pairs.max(1))
        .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
        .collect::<io::Result<Vec<_>>>()
        .map_err(StartError::Eventfd)?;
    let pick = |i: usize| Arc::clone(irqs.get(i).unwrap_or(&irqs[0]));
    let binding_irqs = (0..ntx).map(pick).chain((0..nrx).map(pick)).collect();
    let binding = ClientBinding::new(csb.clone(), binding_irqs).ok_or(StartError::Binding)?;
    if !port.bind(Some(&binding)) {
        port.bind(None);
        return Err(StartError::Binding);
    }
    Ok(PortBinding { csb, irqs })
}

/// Queue pairs a device over `port` offers: one per TX/RX ring pair, up to [`MAX_PAIRS`].
pub fn pairs_of(port: &dyn SyncPort) -> u16 {
    let ifc = port.interface();
    (ifc.tx.len().min(ifc.rx.len()) as u16).clamp(1, MAX_PAIRS)
}

/// What serves one live pair: its place in a poll group, the daemon's or (`own`) one that
/// is the pair's own thread.
/// (Dropped in field order: the pair leaves, then its own thread ends.)
struct Worker {
    member: Membership,
    own: Option<PollGroup>,
}

struct State {
    acked_features: u64,
    vrings: Vec<HookedVring>,
    workers: Option<Vec<Worker>>,
    last_refusal: Option<String>,
    gone: bool,
}

/// The virtio-net device of one frontend connection.
pub struct NetDevice {
    port: Arc<dyn SyncPort>,
    name: String,
    opts: DeviceOptions,
    pairs: u16,
    mem: GuestMem,
    /// Watches every memory table the frontend sends (see [`MemWatch`]).
    watch: MemWatch,
    stats: Arc<NetStats>,
    config: Arc<Mutex<NetConfig>>,
    state: Mutex<State>,
}

impl NetDevice {
    /// A device for one connection to `port`.
    pub fn new(port: Arc<dyn SyncPort>, opts: DeviceOptions, stats: Arc<NetStats>) -> Arc<Self> {
        let pairs = pairs_of(&*port);
        let watch = MemWatch::new(port.name());
        Arc::new(NetDevice {
            name: port.name().to_owned(),
            port,
            config: Arc::new(Mutex::new(NetConfig::new(opts.mac, pairs))),
            opts,
            pairs,
            mem: GuestMem::new(vm_memory::GuestMemoryMmap::new()),
            watch,
            stats,
            state: Mutex::new(State {
                acked_features: 0,
                vrings: Vec::new(),
                workers: None,
                last_refusal: None,
                gone: false,
            }),
        })
    }

    /// Queue pairs offered.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }

    /// The MAC address the config space holds now.
    pub fn mac(&self) -> [u8; 6] {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).mac()
    }

    /// The frontend went away: stops the workers and unbinds the port.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        self.stop(&mut st, "frontend disconnected");
        st.gone = true;
        st.vrings.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(v: &HookedVring) -> bool {
        let s = v.get_ref();
        s.get_queue().ready() && s.is_enabled() && s.get_kick().is_some()
    }

    fn maybe_start(&self, st: &mut State) {
        if st.workers.is_some() || st.gone {
            return;
        }
        let ctrl_index = 2 * usize::from(self.pairs);
        if st.vrings.len() != ctrl_index + 1 {
            return;
        }
        let live: Vec<u16> = (0..self.pairs)
            .filter(|&p| {
                let p = usize::from(p);
                Self::live(&st.vrings[2 * p]) && Self::live(&st.vrings[2 * p + 1])
            })
            .collect();
        if live.first() != Some(&0) {
            return;
        }
        match self.try_start(st, &live) {
            Ok(w) => {
                st.workers = Some(w);
                st.last_refusal = None;
                self.stats.starts.fetch_add(1, Ordering::Relaxed);
                self.stats.running.store(true, Ordering::Relaxed);
                log::info!(
                    "{}: virtio-net device started: {} of {} queue pairs, features {:#x}",
                    self.name,
                    live.len(),
                    self.pairs,
                    st.acked_features
                );
            }
            Err(e) => {
                self.port.bind(None);
                let why = ptnet_datapath::error_chain(&e);
                if st.last_refusal.as_deref() != Some(why.as_str()) {
                    log::warn!("{}: virtio-net device not started: {why}", self.name);
                    st.last_refusal = Some(why);
                }
            }
        }
    }

    fn try_start(&self, st: &State, live: &[u16]) -> Result<Vec<Worker>, StartError> {
        let mem = self.mem.memory();
        for (i, v) in st.vrings.iter().enumerate() {
            let s = v.get_ref();
            if s.get_queue().ready() && !s.get_queue().is_valid(&*mem) {
                return Err(StartError::QueueOutside(i));
            }
        }
        let PortBinding { csb, irqs } = bind_port(&*self.port, self.pairs)?;
        let carry_hdr = self.carry_header(st.acked_features);
        let ctrl_vring = &st.vrings[2 * usize::from(self.pairs)];
        let ctrl_live = Self::live(ctrl_vring);
        let mut workers = Vec::with_capacity(live.len());
        for &p in live {
            let pi = usize::from(p);
            let (rxq, txq) = (&st.vrings[2 * pi], &st.vrings[2 * pi + 1]);
            let dup = |v: &HookedVring, queue: &'static str| -> Result<EventFd, StartError> {
                let s = v.get_ref();
                let k = s.get_kick().as_ref().ok_or(StartError::NoKick(queue))?;
                guest::dup_eventfd(k).map_err(|source| StartError::Kick { queue, source })
            };
            let mut kicks = vec![
                dup(txq, "TX queue")?,
                dup(rxq, "RX queue")?,
                irqs[pi].try_clone().map_err(StartError::Eventfd)?,
            ];
            let ctrl = if p == 0 && ctrl_live {
                kicks.push(dup(ctrl_vring, "control queue")?);
                Some(Ctrl::new(
                    ctrl_vring.clone(),
                    self.pairs,
                    Arc::clone(&self.config),
                ))
            } else {
                None
            };
            let pair = Pair::new(PairConfig {
                index: p,
                port: Arc::clone(&self.port),
                csb: csb.clone(),
                mem: self.mem.clone(),
                rxq: rxq.clone(),
                txq: txq.clone(),
                ctrl,
                features: st.acked_features,
                carry_hdr,
                stats: Arc::clone(&self.stats),
            });
            let stats = Arc::clone(&self.stats);
            let worker = match &self.opts.groups {
                Some(g) => Worker {
                    member: g
                        .least_loaded()
                        .join(pair, kicks, stats)
                        .map_err(StartError::Thread)?,
                    own: None,
                },
                None => {
                    // A group of one: the pair's own thread.
                    let own = PollGroup::spawn(
                        &thread_name(&format!("vnet{p}"), &self.name),
                        self.opts.mode,
                    )
                    .map_err(StartError::Thread)?;
                    let member = own.join(pair, kicks, stats).map_err(StartError::Thread)?;
                    Worker {
                        member,
                        own: Some(own),
                    }
                }
            };
            workers.push(worker);
        }
        Ok(workers)
    }

    /// Whether the port carries the guest's virtio-net headers: when the guest takes every
    /// offload the switch may hand it (checksums, TSO, ECN) in big merged buffers, and the
    /// port accepts a header. Sets the port's header length accordingly; without it, the
    /// workers resolve the guest's TX offloads in software and hand it plain frames.
    fn carry_header(&self, acked: u64) -> bool {
        let want = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_NET_F_MRG_RXBUF)
            | (1 << VIRTIO_NET_F_GUEST_CSUM)
            | (1 << VIRTIO_NET_F_GUEST_TSO4)
            | (1 << VIRTIO_NET_F_GUEST_TSO6)
            | (1 << VIRTIO_NET_F_GUEST_ECN);
        let len = if acked & want == want {
            VNET_HDR_LEN
        } else {
            0
        };
        match self.port.set_vnet_hdr_len(len) {
            Ok(()) => len != 0,
            Err(why) => {
                log::info!("{}: offloads resolved in software: {why}", self.name);
                false
            }
        }
    }

    fn stop(&self, st: &mut State, why: &str) {
        let Some(workers) = st.workers.take() else {
            return;
        };
        for w in workers {
            // Synchronous: the group has made its last pass over the pair.
            w.member.leave();
            // A pair's own thread ends (and is joined) with its group.
            drop(w.own);
        }
        self.port.bind(None);
        let _ = self.port.set_vnet_hdr_len(0);
        self.stats.running.store(false, Ordering::Relaxed);
        log::info!("{}: virtio-net device stopped: {why}", self.name);
    }
}

impl PortDevice for NetDevice {
    type Options = DeviceOptions;
    type Stats = NetStats;
    type Snapshot = NetStatsSnapshot;
    const KIND: &'static str = "virtio-net device";
    const THREAD: &'static str = "vnet";

    fn connect(
        port: &Arc<dyn SyncPort>,
        opts: &DeviceOptions,
        stats: &Arc<NetStats>,
    ) -> io::Result<Arc<Self>> {
        Ok(NetDevice::new(
            Arc::clone(port),
            opts.clone(),
            Arc::clone(stats),
        ))
    }

    fn guest_memory(&self) -> GuestMem {
        self.mem.clone()
    }

    fn memory_watch(&self) -> &MemWatch {
        &self.watch
    }

    fn set_vrings(&self, vrings: Vec<HookedVring>) {
        self.lock().vrings = vrings;
    }

    fn shutdown(&self) {
        NetDevice::shutdown(self);
    }

    /// A MAC the driver set survives a reconnection (the config space is the device's).
    fn carry_over(&self, opts: &mut DeviceOptions) {
        opts.mac = self.mac();
    }

    fn connections(stats: &NetStats) -> &AtomicU64 {
        &stats.connections
    }

    fn snapshot(stats: &NetStats) -> NetStatsSnapshot {
        stats.snapshot()
    }
}

impl VringHook for NetDevice {
    fn changed(&self, index: u16, what: Change) {
        let mut st = self.lock();
        if st.workers.is_some() && what != Change::Call {
            self.stop(&mut st, &format!("queue {index} changed ({what:?})"));
        }
        self.maybe_start(&mut st);
    }
}

impl VhostUserBackend for NetDevice {
    type Bitmap = ();
    type Vring = HookedVring;

    fn num_queues(&self) -> usize {
        2 * usize::from(self.pairs) + 1
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.opts.max_queue_size)
    }

    fn features(&self) -> u64 {
        features(self.pairs)
    }

    fn acked_features(&self, features: u64) {
        let mut st = self.lock();
        if st.acked_features != features && st.workers.is_some() {
            self.stop(&mut st, "features changed");
        }
        st.acked_features = features;
        self.maybe_start(&mut st);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn reset_device(&self) {
        let mut st = self.lock();
        self.stop(&mut st, "device reset");
        st.acked_features = 0;
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The handler sets it on every queue; the workers read it from the queue.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(offset, size)
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        if !self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(offset, buf)
        {
            log::debug!(
                "{}: SET_CONFIG of {} bytes at {offset} ignored (only the MAC is writable)",
                self.name,
                buf.len()
            );
        }
        // Never an error: the vhost crate would end the connection.
        Ok(())
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        // The workers load the new table at their next pass (they share this handle).
        match self.watch.accept(&mem.memory()) {
            Ok(_) => Ok(()),
            Err(e) => {
                log::warn!("{}: memory table refused: {e}", self.name);
                Err(io::Error::new(io::ErrorKind::InvalidInput, e))
            }
        }
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // No vring worker threads of the crate's: the pair workers read the kicks.
        Vec::new()
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let mut st = self.lock();
        self.stop(&mut st, &format!("GET_VRING_BASE on queue {queue_index}"));
        Ok(())
    }

    fn handle_event(
        &self,
        _device_event: u16,
        _evset: EventSet,
        _vrings: &[HookedVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // Never called: there are no vring worker threads (see `queues_per_thread`).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};

    fn device(rings: u32) -> Arc<NetDevice> {
        let sw = Switch::new("vnet-dev");
        let spec = VPortSpec {
            tx_rings: rings,
            rx_rings: rings,
            ..Default::default()
        };
        let port: Arc<dyn SyncPort> = Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port("p", &spec).unwrap(),
        });
        let opts = DeviceOptions {
            mac: [2, 0, 0, 0, 0, 1],
            mode: Mode::default(),
            max_queue_size: 256,
            groups: None,
        };
        NetDevice::new(port, opts, Arc::new(NetStats::default()))
    }

    #[test]
    fn a_port_with_several_ring_pairs_offers_multiqueue_and_one_control_queue() {
        let one = device(1);
        assert_eq!((one.pairs(), one.num_queues()), (1, 3));
        assert_eq!(one.features() & (1 << VIRTIO_NET_F_MQ), 0);
        let four = device(4);
        assert_eq!((four.pairs(), four.num_queues()), (4, 9));
        assert_ne!(four.features() & (1 << VIRTIO_NET_F_MQ), 0);
        assert_eq!(four.get_config(8, 2), vec![4, 0], "max_virtqueue_pairs");
        for f in [
            VIRTIO_F_VERSION_1,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_CTRL_VQ,
        ] {
            assert_ne!(one.features() & (1 << f), 0, "feature bit {f}");
        }
        assert_ne!(
            one.features() & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0
        );
    }

    #[test]
    fn the_config_space_serves_the_mac_and_takes_a_new_one() {
        let d = device(1);
        assert_eq!(d.get_config(0, 6), vec![2, 0, 0, 0, 0, 1]);
        d.set_config(0, &[2, 9, 9, 9, 9, 9]).unwrap();
        assert_eq!(d.mac(), [2, 9, 9, 9, 9, 9]);
        // Writes elsewhere are ignored, not errors (the vhost crate would hang up).
        assert!(d.set_config(6, &[0, 0]).is_ok());
        assert_eq!(d.get_config(6, 2), vec![1, 0], "link up");
    }
}
