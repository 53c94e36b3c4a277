//! Host interfaces given directly to one client, as netmap's `netmap:eth0` is: a stand-alone
//! port (named `eth0` or `netmap:eth0`, no switch) whose TX rings go out of the interface and
//! whose RX rings the interface's frames fill.
//!
//! **How.** The port is built from the parts a NIC on a switch uses, on a private two-sided
//! switch whose forwarding module ([`DirectLookup`]) is a fixed cross-connect instead of a
//! learning bridge: port 0 is the client's (N TX and N RX rings), ports 1..=N are the
//! interface's, each driven by a NIC worker ([`crate::nic::NicPort`]). Every frame the client
//! sends goes to the interface (nothing is learned, nothing flooded, nothing dropped for being
//! "local"), every frame from the interface goes to the client, whatever its addresses.
//!
//! **Several rings.** With N > 1 each worker's AF_PACKET RX socket joins one
//! `PACKET_FANOUT_HASH` group: the kernel spreads the interface's frames over the N sockets
//! by flow hash, and socket k fills the client's RX ring k. The client's TX rings are spread
//! over the N workers by a flow hash of the frame ([`flow_hash`]), so one flow keeps its
//! order. Fanout is AF_PACKET's: several rings need that backend.
//!
//! **Cost.** One copy more than netmap's zero-copy `netmap:eth0`: the client's buffers are
//! copied into the worker's port (the switch's copy between regions, which keeps the client
//! in its own memory) and from there into the socket's ring, as for a NIC on a switch.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use super::afpacket::AfPacketBackend;
use super::backend::{BackendChoice, BackendKind, Link, NicBackend, NicError, NicOpener};
use super::opener::HostInterface;
use super::port::NicPort;
use super::stats::NicSnapshot;
use crate::switch::vale::{
    Dest, FrameHead, Lookup, MAX_HEADER, Switch, VPort, VPortSpec, ValePortSync,
};

/// Most rings of a direct NIC port (one worker thread each).
pub const MAX_DIRECT_RINGS: u32 = 16;

/// The switch index of the client's port.
const CLIENT: u8 = 0;

/// A flow hash of a frame's head: IPv4/IPv6 addresses and TCP/UDP ports (one VLAN tag at
/// most), or the MAC addresses of anything else. Only a local copy of the head is read.
pub fn flow_hash(b: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |bytes: &[u8]| {
        for &x in bytes {
            h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
        }
    };
    let get = |r: std::ops::Range<usize>| b.get(r);
    let mut l3 = 14;
    let mut et = get(12..14).map(|e| u16::from_be_bytes([e[0], e[1]]));
    if et == Some(0x8100) {
        l3 = 18;
        et = get(16..18).map(|e| u16::from_be_bytes([e[0], e[1]]));
    }
    let (addrs, proto, l4) = match et {
        Some(0x0800) => {
            let ihl = b.get(l3).map_or(0, |v| usize::from(v & 0xf) * 4);
            let frag = get(l3 + 6..l3 + 8).is_some_and(|f| (f[0] & 0x3f) != 0 || f[1] != 0);
            (
                get(l3 + 12..l3 + 20),
                b.get(l3 + 9).copied().filter(|_| !frag && ihl >= 20),
                l3 + ihl,
            )
        }
        Some(0x86dd) => (get(l3 + 8..l3 + 40), b.get(l3 + 6).copied(), l3 + 40),
        _ => (None, None, 0),
    };
    match addrs {
        Some(a) => {
            mix(a);
            if let (Some(6 | 17), Some(p)) = (proto, get(l4..l4 + 4)) {
                mix(p);
            }
        }
        None => mix(b.get(..12).unwrap_or(b)),
    }
    h
}

/// The cross-connect of a direct NIC port: client (port 0) → interface workers (ports
/// 1..=wires, by flow hash); worker k → the client's RX ring k - 1.
#[derive(Debug)]
pub struct DirectLookup {
    wires: u8,
}

impl Lookup for DirectLookup {
    fn header_len(&self) -> usize {
        MAX_HEADER
    }

    fn lookup(&self, frame: &FrameHead<'_>, src: u8) -> Dest {
        if src == CLIENT {
            let w = if self.wires > 1 {
                (flow_hash(frame.bytes) % u32::from(self.wires)) as u8
            } else {
                0
            };
            Dest::Port {
                port: 1 + w,
                ring: 0,
            }
        } else if src <= self.wires {
            Dest::Port {
                port: CLIENT,
                ring: u16::from(src - 1),
            }
        } else {
            Dest::Drop
        }
    }
}

/// How to build a direct NIC port.
#[derive(Debug, Clone)]
pub struct DirectSpec {
    /// Ring pairs of the client's port: one worker and one fanout socket each.
    pub rings: u32,
    /// Slots per ring.
    pub slots: u32,
    /// Buffer size: the largest frame.
    pub buf_size: u32,
    /// Backend (several rings need AF_PACKET).
    pub choice: BackendChoice,
}

/// Opens AF_PACKET on an interface with the RX socket in a fanout group.
#[derive(Debug)]
struct FanoutOpener {
    iface: HostInterface,
    group: u16,
}

impl NicOpener for FanoutOpener {
    fn ifname(&self) -> &str {
        &self.iface.ifname
    }

    fn link(&self) -> (Link, u32) {
        crate::nic::link_state(&self.iface.ifname)
    }

    fn open(&mut self) -> Result<(Box<dyn NicBackend>, Option<String>), NicError> {
        self.iface.check()?;
        let b = AfPacketBackend::open_fanout(
            &self.iface.ifname,
            self.iface.max_frame,
            Some(self.group),
        )?;
        Ok((Box::new(b), None))
    }
}

/// A fanout group id unlikely to be taken by another process on the same interface.
fn fanout_group() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16)
        .rotate_left(5)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A running direct NIC port: the private switch, the client's port, one worker per ring.
pub struct DirectNic {
    ifname: String,
    switch: Arc<Switch>,
    client: Arc<VPort>,
    wires: Vec<NicPort>,
}

impl fmt::Debug for DirectNic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectNic")
            .field("ifname", &self.ifname)
            .field("rings", &self.wires.len())
            .finish()
    }
}

impl DirectNic {
    /// Checks the interface (exists, frames fit), builds the port and starts its workers.
    pub fn start(ifname: &str, spec: &DirectSpec) -> Result<Self, NicError> {
        if !(1..=MAX_DIRECT_RINGS).contains(&spec.rings) {
            return Err(NicError::Config(format!(
                "{ifname}: {} rings: a direct NIC port has 1 to {MAX_DIRECT_RINGS}",
                spec.rings
            )));
        }
        let several = spec.rings > 1;
        if several
            && !matches!(
                spec.choice,
                BackendChoice::Auto | BackendChoice::Only(BackendKind::AfPacket)
            )
        {
            return Err(NicError::Config(format!(
                "{ifname}: several rings come from AF_PACKET's fanout: use backend af_packet \
                 (or auto)"
            )));
        }
        let iface = HostInterface {
            ifname: ifname.to_owned(),
            choice: spec.choice,
            max_frame: spec.buf_size,
        };
        iface.check()?;
        let group = fanout_group();
        let openers = (0..spec.rings)
            .map(|_| -> Box<dyn NicOpener> {
                if several {
                    Box::new(FanoutOpener {
                        iface: iface.clone(),
                        group,
                    })
                } else {
                    Box::new(iface.clone())
                }
            })
            .collect();
        Self::start_with(ifname, spec, openers)
    }

    /// Builds the port with one worker per opener (ring k's worker opens through
    /// `openers[k]`): [`DirectNic::start`] passes real interfaces, tests fake wires.
    pub fn start_with(
        ifname: &str,
        spec: &DirectSpec,
        openers: Vec<Box<dyn NicOpener>>,
    ) -> Result<Self, NicError> {
        if !(1..=MAX_DIRECT_RINGS).contains(&spec.rings) || openers.len() != spec.rings as usize {
            return Err(NicError::Config(format!(
                "{ifname}: {} openers for {} rings",
                openers.len(),
                spec.rings
            )));
        }
        let config = |e: crate::switch::vale::ValeError| NicError::Config(format!("{ifname}: {e}"));
        let switch = Switch::with_lookup(
            ifname,
            Box::new(DirectLookup {
                wires: spec.rings as u8,
            }),
        );
        let client = switch
            .add_port(
                "client",
                &VPortSpec {
                    tx_rings: spec.rings,
                    rx_rings: spec.rings,
                    slots: spec.slots,
                    buf_size: spec.buf_size,
                    ..Default::default()
                },
            )
            .map_err(config)?;
        let mut wires = Vec::with_capacity(spec.rings as usize);
        for (k, opener) in (0..spec.rings).zip(openers) {
            let vport = switch
                .add_port(
                    &format!("wire{k}"),
                    &VPortSpec {
                        slots: spec.slots,
                        buf_size: spec.buf_size,
                        ..Default::default()
                    },
                )
                .map_err(config)?;
            if vport.index() != k as u8 + 1 || client.index() != CLIENT {
                return Err(NicError::Config(format!(
                    "{ifname}: unexpected port index {} for ring {k}",
                    vport.index()
                )));
            }
            // On error the workers started so far stop as `wires` drops.
            wires.push(NicPort::start(Arc::clone(&switch), vport, opener)?);
        }
        log::info!(
            "{ifname}: direct NIC port, {} ring pair(s), {}",
            spec.rings,
            wires[0]
                .snapshot()
                .backend
                .map_or("no backend", BackendKind::name)
        );
        Ok(DirectNic {
            ifname: ifname.to_owned(),
            switch,
            client,
            wires,
        })
    }

    /// The interface.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Ring pairs.
    pub fn rings(&self) -> u32 {
        self.wires.len() as u32
    }

    /// The client's port.
    pub fn client_port(&self) -> &Arc<VPort> {
        &self.client
    }

    /// What the sync loop of the port's client drives.
    pub fn sync(&self) -> ValePortSync {
        ValePortSync {
            switch: Arc::clone(&self.switch),
            port: Arc::clone(&self.client),
        }
    }

    /// The interface's counters, summed over the rings (backend, note and link: ring 0's).
    pub fn snapshot(&self) -> NicSnapshot {
        let mut it = self.wires.iter().map(NicPort::snapshot);
        let Some(mut s) = it.next() else {
            return NicSnapshot {
                ifname: self.ifname.clone(),
                backend: None,
                note: None,
                link: Link::Gone,
                rx_packets: 0,
                rx_bytes: 0,
                rx_drops: 0,
                tx_packets: 0,
                tx_bytes: 0,
                tx_drops: 0,
                link_changes: 0,
                opens: 0,
            };
        };
        for w in it {
            s.rx_packets += w.rx_packets;
            s.rx_bytes += w.rx_bytes;
            s.rx_drops += w.rx_drops;
            s.tx_packets += w.tx_packets;
            s.tx_bytes += w.tx_bytes;
            s.tx_drops += w.tx_drops;
        }
        s
    }

    /// Per-ring counters (ring k: the frames the fanout gave socket k, and those sent by its
    /// worker).
    pub fn ring_snapshots(&self) -> Vec<NicSnapshot> {
        self.wires.iter().map(NicPort::snapshot).collect()
    }
}

impl Drop for DirectNic {
    fn drop(&mut self) {
        for w in self.wires.drain(..) {
            let port = Arc::clone(w.port());
            w.stop();
            self.switch.remove_port(&port);
        }
        self.switch.remove_port(&self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> FrameHead<'_> {
        FrameHead {
            bytes,
            len: bytes.len() as u32,
            flags: 0,
        }
    }

    fn udp4(sport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&9u16.to_be_bytes());
        f
    }

    #[test]
    fn the_client_sends_to_the_interface_and_the_interface_to_the_client_ring_of_its_worker() {
        let l = DirectLookup { wires: 1 };
        let f = udp4(1);
        assert_eq!(l.lookup(&head(&f), 0), Dest::Port { port: 1, ring: 0 });
        assert_eq!(l.lookup(&head(&f), 1), Dest::Port { port: 0, ring: 0 });
        assert_eq!(l.lookup(&head(&f), 2), Dest::Drop);
        let l = DirectLookup { wires: 3 };
        assert_eq!(l.lookup(&head(&f), 3), Dest::Port { port: 0, ring: 2 });
        assert_eq!(l.lookup(&head(&f), 4), Dest::Drop);
    }

    #[test]
    fn client_flows_spread_over_the_workers_and_each_flow_keeps_one() {
        let l = DirectLookup { wires: 2 };
        let mut used = [0u32; 2];
        for sport in 0..64 {
            let f = udp4(sport);
            let d = l.lookup(&head(&f), 0);
            assert_eq!(d, l.lookup(&head(&f), 0), "one flow, one worker");
            match d {
                Dest::Port { port, ring: 0 } if (1..=2).contains(&port) => {
                    used[usize::from(port - 1)] += 1
                }
                d => panic!("{d:?}"),
            }
        }
        assert!(used.iter().all(|&n| n > 10), "{used:?}");
    }

    #[test]
    fn flow_hash_reads_no_further_than_the_head_it_is_given() {
        let f = udp4(7);
        for n in 0..f.len() {
            let _ = flow_hash(&f[..n]);
        }
        assert_ne!(flow_hash(&udp4(1)), flow_hash(&udp4(2)));
    }
}
