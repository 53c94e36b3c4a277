//! Host interfaces: attached to a switch (a NIC port, and the host stack's tap beside it if
//! asked), or given directly to one client (`netmap:eth0`).

use std::sync::Arc;

use ptnet_datapath::nic::tap::TapOpener;
use ptnet_datapath::nic::{HostInterface, NicOpener, NicPort, NicSnapshot};
use ptnet_datapath::switch::vale::VPortSpec;
use ptnet_proto::{NicEntry, Profile};
use ptnet_spec::name::{Base, PortName};

use crate::config::PortSection;
use crate::error::{DaemonError, Result, error_chain};
use crate::registry::{PortState, State, SwitchState, nic_options, remove_switch_port};

/// Whether the host's own stack joins the switch beside an interface, through a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostStack<'a> {
    /// No.
    No,
    /// Through a tap named `ptnet-IF`.
    DefaultTap,
    /// Through a tap of this name.
    Tap(&'a str),
}

impl<'a> HostStack<'a> {
    /// From a request or a `[[port]]` section: a tap name, or just "yes".
    pub(crate) fn new(tap: Option<&'a str>, on: bool) -> Self {
        match (tap, on) {
            (Some(t), _) => HostStack::Tap(t),
            (None, true) => HostStack::DefaultTap,
            (None, false) => HostStack::No,
        }
    }

    /// The tap's name for interface `ifname`, if there is one.
    fn tap_name(self, ifname: &str) -> Option<String> {
        match self {
            HostStack::No => None,
            HostStack::DefaultTap => Some(format!("ptnet-{ifname}").chars().take(15).collect()),
            HostStack::Tap(t) => Some(t.to_owned()),
        }
    }
}

/// What attaching a host interface to a switch asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NicRequest<'a> {
    /// The switch (created if needed).
    pub(crate) switch: &'a str,
    /// The interface; the port is `switch:ifname`.
    pub(crate) ifname: &'a str,
    /// Backend name (`auto` when absent).
    pub(crate) backend: Option<&'a str>,
    /// Buffer size of the port (the default when absent).
    pub(crate) buf_size: Option<u32>,
    /// Slots of each ring.
    pub(crate) slots: u32,
    /// The host stack's tap.
    pub(crate) host_stack: HostStack<'a>,
}

impl State {
    /// Attaches host interface `r.ifname` to `r.switch` (created if needed) as port
    /// `switch:ifname`, with a worker that moves frames between them, and the host's own
    /// stack beside it through a tap if `r.host_stack` says so.
    pub(crate) fn attach_nic(&mut self, r: &NicRequest<'_>) -> Result<NicEntry> {
        let NicRequest {
            switch,
            ifname,
            backend,
            buf_size,
            slots,
            ..
        } = *r;
        let (choice, buf_size, slots) = nic_options(backend, buf_size, slots)?;
        if !valid_ifname(ifname) {
            return Err(DaemonError::Invalid(format!(
                "{ifname:?} is not an interface name (1 to 15 printable bytes, no '/', ':', '%')"
            )));
        }
        let tap_name = r.host_stack.tap_name(ifname);
        if let Some(t) = &tap_name {
            if !valid_ifname(t) || t == ifname {
                return Err(DaemonError::Invalid(format!(
                    "{t:?} cannot name the host-stack tap (1 to 15 printable bytes, no '/', \
                     ':', '%', not the interface's own name)"
                )));
            }
        }
        if !self.switches.contains_key(switch) {
            self.create_switch(switch, 8)?;
        }
        if self.directs.contains_key(ifname) {
            return Err(DaemonError::Busy(format!(
                "{ifname} (the interface is given directly to a client: destroy-port {ifname})"
            )));
        }
        // PANIC: created just above if it was missing.
        let ss = self.switches.get_mut(switch).expect("switch exists");
        if let Some(t) = tap_name.as_deref().filter(|t| ss.ports.contains_key(*t)) {
            return Err(DaemonError::Exists(format!("port {switch}:{t}")));
        }
        if let Some(ps) = ss.ports.get(ifname) {
            return Err(DaemonError::Exists(if ps.nic.is_some() {
                format!("{switch}:{ifname} (the interface is attached already)")
            } else {
                format!("port {switch}:{ifname} (a virtual port)")
            }));
        }
        let iface = HostInterface {
            ifname: ifname.to_owned(),
            choice,
            max_frame: buf_size,
        };
        // Clear errors before any memory is allocated: no such interface, frames too large.
        iface
            .check()
            .map_err(|e| DaemonError::Invalid(error_chain(&e)))?;
        let (mut ps, entry) = nic_port(ss, ifname, Box::new(iface), buf_size, slots)?;
        // The host stack's tap, a port of its own beside the interface's.
        let tap = match tap_name.as_deref().map(|t| {
            let opener = TapOpener::create(t, None, buf_size)
                .map_err(|e| DaemonError::Invalid(error_chain(&e)))?;
            nic_port(ss, t, Box::new(opener), buf_size, slots).map(|(p, _)| p)
        }) {
            Some(Err(e)) => {
                if let Some(n) = ps.nic.take() {
                    n.stop();
                }
                ss.sw.remove_port(&ps.vport);
                return Err(e);
            }
            Some(Ok(tps)) => Some(tps),
            None => None,
        };
        log::info!(
            "{switch}:{ifname}: host interface attached ({}{})",
            entry.backend.as_deref().unwrap_or("-"),
            tap_name
                .as_deref()
                .map(|t| format!(", host stack on tap {t}"))
                .unwrap_or_default()
        );
        if let (Some(t), Some(ps)) = (&tap_name, tap) {
            ss.ports.insert(t.clone(), ps);
        }
        ps.host_stack = tap_name;
        ss.ports.insert(ifname.to_owned(), ps);
        Ok(entry)
    }
}

/// The `[[port]]` sections that attach a host interface: `valeX:IF` with `nic = true`, a
/// `backend`, or an `IF` that exists when the daemon starts (unless `nic = false`).
pub(crate) fn nic_section(p: &PortSection) -> Option<(&str, &str)> {
    let n = PortName::parse(&p.name).ok()?;
    let (Base::Vale { switch, port }, None) = (n.base, n.pipe) else {
        return None;
    };
    let exists = ptnet_datapath::nic::ifindex(port) != 0;
    let nic = p.nic.unwrap_or(p.backend.is_some() || exists);
    nic.then_some((switch, port))
}

pub(crate) fn nic_entry(s: &NicSnapshot) -> NicEntry {
    NicEntry {
        ifname: s.ifname.clone(),
        backend: s.backend.map(|b| b.name().to_owned()),
        note: s.note.clone(),
        link: s.link.name().to_owned(),
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        rx_drops: s.rx_drops,
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        tx_drops: s.tx_drops,
        link_changes: s.link_changes,
    }
}

impl State {
    /// Detaches host interface `ifname` from `switch` (its host-stack tap goes too).
    pub(crate) fn detach_nic(&mut self, switch: &str, ifname: &str) -> Result<()> {
        let ss = self
            .switches
            .get_mut(switch)
            .ok_or_else(|| DaemonError::Missing(format!("switch {switch}")))?;
        if ss.ports.get(ifname).is_none_or(|p| p.nic.is_none()) {
            return Err(DaemonError::Missing(format!(
                "host interface {ifname} on {switch}"
            )));
        }
        remove_switch_port(ss, ifname);
        Ok(())
    }
}

/// Whether `name` can name a host interface: 1 to 15 printable bytes, none of '/', ':', '%'.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'%'))
}

/// Adds port `name` to the switch of `ss` with a NIC worker that opens its interface through
/// `opener` (a host interface, the host stack's tap); returns it and its NIC's state.
fn nic_port(
    ss: &mut SwitchState,
    name: &str,
    opener: Box<dyn NicOpener>,
    buf_size: u32,
    slots: u32,
) -> Result<(PortState, NicEntry)> {
    let spec = VPortSpec {
        slots,
        buf_size,
        ..Default::default()
    };
    let vport = ss
        .sw
        .add_port(name, &spec)
        .map_err(|e| DaemonError::Datapath(error_chain(&e)))?;
    match NicPort::start(Arc::clone(&ss.sw), Arc::clone(&vport), opener) {
        Ok(nic) => {
            let entry = nic_entry(&nic.snapshot());
            let ps = PortState {
                vport,
                persistent: true,
                attached: false,
                profile: Profile::Untrusted,
                slots,
                nic: Some(nic),
                host_stack: None,
                mac_lock: None,
                owner: None,
            };
            Ok((ps, entry))
        }
        Err(e) => {
            ss.sw.remove_port(&vport);
            Err(DaemonError::Datapath(error_chain(&e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortSection;
    use ptnet_proto::Profile;

    fn section(name: &str, nic: Option<bool>, backend: Option<&str>) -> PortSection {
        PortSection {
            name: name.into(),
            tx_rings: 1,
            rx_rings: 1,
            slots: 1024,
            extra_bufs: 0,
            profile: Profile::Untrusted,
            nic,
            backend: backend.map(Into::into),
            buf_size: None,
            host_stack: None,
            host_stack_tap: None,
            mac_lock: None,
        }
    }

    #[test]
    fn config_ports_naming_existing_interfaces_are_nic_ports_unless_told_otherwise() {
        // Classification only: nothing is attached here.
        assert_eq!(
            nic_section(&section("vale0:lo", None, None)),
            Some(("vale0", "lo"))
        );
        assert_eq!(nic_section(&section("vale0:lo", Some(false), None)), None);
        assert_eq!(nic_section(&section("vale0:ptnoif9", None, None)), None);
        assert_eq!(
            nic_section(&section("vale0:ptnoif9", None, Some("af_packet"))),
            Some(("vale0", "ptnoif9"))
        );
        assert_eq!(nic_section(&section("pipe0{1", Some(true), None)), None);
    }
}
