//! `SIGHUP`: the configuration file read again and the daemon brought to it. Switches, ports
//! and VMs the new file adds are created; those it drops are removed (a switch or port a
//! client still holds is kept, and said so: remove it again once it is free); the control
//! socket's policy is replaced; the threads move to new `cpus`. Sections that changed in place, and settings that only take
//! effect at start (the sockets, the metrics address, the VM socket directory), are reported,
//! not applied. A file that does not parse changes nothing.

use crate::config::Config;
use crate::creds;
use crate::daemon::{Daemon, create_sections};
use crate::error::{DaemonError, Result};
use crate::nic::nic_section;
use crate::policy::Policy;

impl Daemon {
    /// Brings the daemon to `new`; returns what changed, one line each.
    pub fn reload(&self, new: Config) -> Result<Vec<String>> {
        let policy = Policy::new(&new, creds::effective_uid())
            .map_err(|e| DaemonError::Invalid(e.to_string()))?;
        let old = self.cfg();
        let mut said = Vec::new();
        let mut st = self.lock();
        for v in old
            .vms
            .iter()
            .filter(|v| !new.vms.iter().any(|n| n.port == v.port))
        {
            said.push(match st.stop_vm(&v.port) {
                Ok(()) => format!("VM on {} stopped", v.port),
                Err(e) => format!("VM on {} not stopped: {e}", v.port),
            });
        }
        for p in old
            .ports
            .iter()
            .filter(|p| !new.ports.iter().any(|n| n.name == p.name))
        {
            let gone = match nic_section(p) {
                Some((switch, ifname)) => st.detach_nic(switch, ifname),
                None => st.destroy_port(&p.name),
            };
            said.push(match gone {
                Ok(()) => format!("port {} removed", p.name),
                Err(e) => format!("port {} kept: {e}", p.name),
            });
        }
        for s in old
            .switches
            .iter()
            .filter(|s| !new.switches.iter().any(|n| n.name == s.name))
        {
            said.push(match st.destroy_switch(&s.name) {
                Ok(()) => format!("switch {} removed", s.name),
                Err(e) => format!("switch {} kept: {e}", s.name),
            });
        }
        let created = create_sections(&mut st, &new, Some(&old));
        st.max_switches = new.daemon.max_switches;
        drop(st);
        let failed = match created {
            Ok(c) => {
                said.extend(c.into_iter().map(|c| format!("{c} created")));
                None
            }
            Err(e) => Some(e),
        };
        if old.daemon.cpus != new.daemon.cpus {
            let to = new.cpus().ok().flatten();
            said.push(match crate::cpus::apply(to.as_ref()) {
                Ok(()) => match to {
                    Some(l) => format!("every thread now runs on CPUs {l}"),
                    None => "threads back on the CPUs the daemon started with".into(),
                },
                Err(e) => format!("[daemon] cpus not applied: {e}"),
            });
        }
        said.extend(unapplied(&old, &new));
        self.replace_config(new, policy);
        said.push("policy replaced".into());
        match failed {
            None => Ok(said),
            Some(e) => {
                for s in &said {
                    log::info!("reload: {s}");
                }
                Err(e)
            }
        }
    }
}

/// What changed but takes a restart (or a section removed and added again) to apply.
fn unapplied(old: &Config, new: &Config) -> Vec<String> {
    let mut said = Vec::new();
    let (o, n) = (&old.daemon, &new.daemon);
    if o.socket != n.socket
        || o.socket_mode != n.socket_mode
        || o.socket_group != n.socket_group
        || o.metrics != n.metrics
        || o.vm_socket_dir != n.vm_socket_dir
        || o.poll_groups != n.poll_groups
    {
        said.push(
            "[daemon] socket, socket_mode, socket_group, metrics, vm_socket_dir or poll_groups \
             changed: applied at the next start"
                .into(),
        );
    }
    if o.busy_poll != n.busy_poll || o.linger_us != n.linger_us {
        said.push(
            "[daemon] busy_poll or linger_us changed: for clients that attach from now on".into(),
        );
    }
    let changed = |what: &str, name: &str| {
        format!("{what} {name} changed: not applied (remove it, reload, add it back, reload)")
    };
    for s in &new.switches {
        if old.switches.iter().any(|x| x.name == s.name && x != s) {
            said.push(changed("switch", &s.name));
        }
    }
    for p in &new.ports {
        if old.ports.iter().any(|x| x.name == p.name && x != p) {
            said.push(changed("port", &p.name));
        }
    }
    for v in &new.vms {
        if old.vms.iter().any(|x| x.port == v.port && x != v) {
            said.push(changed("VM on", &v.port));
        }
    }
    said
}
