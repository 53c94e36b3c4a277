//! Who may do what on the control socket. The socket's owner, group and mode decide who can
//! connect at all; this decides, from the kernel's word on who connected ([`PeerCred`]), what
//! each request may do:
//!
//! * **administrators** — root, the user the daemon runs as, and members of
//!   `[daemon] admin_group` — may do everything;
//! * **clients** — anyone else who can connect — may `list`; `attach` to a port of a switch
//!   that `[[switch]] open_to_users` / `open_to_groups` opens to them (a port created on demand
//!   goes when they detach); `create-port` on such a switch; and `destroy-port` of a port they
//!   created. Always in the untrusted profile: a trusted port maps the switch's shared buffers.
//!   Host interfaces, taps, pipes, VMs, switches and other people's ports are for
//!   administrators.
//!
//! A refusal names the rule that refused.

use std::collections::BTreeMap;

use ptnet_proto::{Profile, Request};
use ptnet_spec::name::{Base, PortName};

use crate::config::{Config, ConfigError};
use crate::creds::{self, PeerCred};

/// What a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// May do everything.
    Admin,
    /// May use the switches opened to it, and destroy what it created.
    Client {
        /// Its user id.
        uid: u32,
    },
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// An administrative request from a client.
    #[error(
        "refused: {what} is for administrators (root, the daemon's user{admin}); uid {uid} is not one"
    )]
    AdminOnly {
        /// The request.
        what: &'static str,
        /// The caller.
        uid: u32,
        /// ", or group G" when the configuration names one.
        admin: String,
    },
    /// A client asked for a port of a switch not opened to it.
    #[error(
        "refused: switch {switch} is not open to uid {uid} (its [[switch]] open_to_users / open_to_groups)"
    )]
    NotOpen {
        /// The switch.
        switch: String,
        /// The caller.
        uid: u32,
    },
    /// A client asked for something other than a VALE port.
    #[error(
        "refused: {port} is not a port of a switch; pipes and host interfaces are for administrators (uid {uid} is not one)"
    )]
    NotSwitchPort {
        /// The port.
        port: String,
        /// The caller.
        uid: u32,
    },
    /// A client asked for the trusted profile.
    #[error(
        "refused: the trusted profile maps a switch's shared buffers and is for administrators (uid {uid} is not one)"
    )]
    Trusted {
        /// The caller.
        uid: u32,
    },
    /// A client tried to destroy a port it did not create.
    #[error(
        "refused: uid {uid} did not create {port}; clients destroy only the ports they created"
    )]
    NotOwner {
        /// The port.
        port: String,
        /// The caller.
        uid: u32,
    },
}

/// Who a switch is opened to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Opening {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

/// The rules, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    daemon_uid: u32,
    admin_group: Option<(String, u32)>,
    open: BTreeMap<String, Opening>,
}

impl Policy {
    /// Resolves the configuration's user and group names; `daemon_uid` is the user the daemon
    /// runs as.
    pub fn new(cfg: &Config, daemon_uid: u32) -> Result<Self, ConfigError> {
        let admin_group = match &cfg.daemon.admin_group {
            Some(g) => {
                let gid = creds::gid_of(g)
                    .ok_or_else(|| unknown(cfg, ("daemon", None, "admin_group"), "group", g))?;
                Some((g.clone(), gid))
            }
            None => None,
        };
        let mut open = BTreeMap::new();
        for (i, s) in cfg.switches.iter().enumerate() {
            let at = ("switch", Some(i), "open_to_users");
            let uids = s
                .open_to_users
                .iter()
                .map(|u| creds::uid_of(u).ok_or_else(|| unknown(cfg, at, "user", u)))
                .collect::<Result<_, _>>()?;
            let at = ("switch", Some(i), "open_to_groups");
            let gids = s
                .open_to_groups
                .iter()
                .map(|g| creds::gid_of(g).ok_or_else(|| unknown(cfg, at, "group", g)))
                .collect::<Result<_, _>>()?;
            open.insert(s.name.clone(), Opening { uids, gids });
        }
        Ok(Policy {
            daemon_uid,
            admin_group,
            open,
        })
    }

    /// What `who` is.
    pub fn caller(&self, who: &PeerCred) -> Caller {
        let admin = who.uid == 0
            || who.uid == self.daemon_uid
            || self
                .admin_group
                .as_ref()
                .is_some_and(|(_, g)| who.in_group(*g));
        if admin {
            Caller::Admin
        } else {
            Caller::Client { uid: who.uid }
        }
    }

    /// Whether `who` may make `req` (ownership, for `destroy-port`, is the registry's to
    /// check: see [`Caller`]).
    pub fn check(&self, who: &PeerCred, req: &Request) -> Result<Caller, Refusal> {
        let caller = self.caller(who);
        let Caller::Client { uid } = caller else {
            return Ok(caller);
        };
        match req {
            Request::List | Request::DestroyPort { .. } => Ok(caller),
            Request::Attach(p) | Request::CreatePort(p) => {
                if p.profile == Profile::Trusted {
                    return Err(Refusal::Trusted { uid });
                }
                self.open_switch_port(who, &p.port)?;
                Ok(caller)
            }
            other => Err(Refusal::AdminOnly {
                what: request_name(other),
                uid,
                admin: self
                    .admin_group
                    .as_ref()
                    .map_or(String::new(), |(g, _)| format!(", or group {g}")),
            }),
        }
    }

    /// `port` must be a VALE port (no pipe) of a switch opened to `who`.
    fn open_switch_port(&self, who: &PeerCred, port: &str) -> Result<(), Refusal> {
        let not_switch = || Refusal::NotSwitchPort {
            port: port.to_owned(),
            uid: who.uid,
        };
        let switch = match PortName::parse(port) {
            Ok(PortName {
                base: Base::Vale { switch, .. },
                pipe: None,
                ..
            }) => switch,
            _ => return Err(not_switch()),
        };
        let opened = self
            .open
            .get(switch)
            .is_some_and(|o| o.uids.contains(&who.uid) || o.gids.iter().any(|g| who.in_group(*g)));
        if opened {
            Ok(())
        } else {
            Err(Refusal::NotOpen {
                switch: switch.to_owned(),
                uid: who.uid,
            })
        }
    }
}

/// A user or group name the system does not know, at `(table, index, key)` of `cfg`.
fn unknown(
    cfg: &Config,
    (table, index, key): (&str, Option<usize>, &str),
    kind: &str,
    name: &str,
) -> ConfigError {
    cfg.bad(
        table,
        index,
        key,
        format!("no {kind} {name:?} on this system"),
    )
}

/// The `ptnetctl` command a request comes from, for refusals.
fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Attach(_) => "attach",
        Request::CreatePort(_) => "create-port",
        Request::DestroyPort { .. } => "destroy-port",
        Request::CreateSwitch { .. } => "create-switch",
        Request::DestroySwitch { .. } => "destroy-switch",
        Request::List => "list",
        Request::AttachNic { .. } => "attach-nic",
        Request::DetachNic { .. } => "detach-nic",
        Request::CreateNicPort { .. } => "create-nic-port",
        Request::ServeVm(_) => "serve-vm",
        Request::StopVm { .. } => "stop-vm",
        Request::QemuArgs { .. } => "qemu-args",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptnet_proto::PortRequest;

    fn policy(toml: &str) -> Policy {
        Policy::new(&Config::parse(toml, "t".into()).unwrap(), 4000).unwrap()
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> PeerCred {
        PeerCred {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn attach(port: &str, profile: Profile) -> Request {
        Request::Attach(PortRequest {
            port: port.into(),
            profile,
            ..Default::default()
        })
    }

    const CFG: &str = r#"
        [daemon]
        admin_group = "5000"
        [[switch]]
        name = "vale0"
        open_to_groups = ["6000"]
        [[switch]]
        name = "vale1"
        open_to_users = ["7000"]
        [[switch]]
        name = "vale2"
    "#;

    #[test]
    fn root_the_daemon_user_and_the_admin_group_may_do_everything() {
        let p = policy(CFG);
        let req = Request::CreateSwitch {
            name: "vale9".into(),
        };
        for who in [peer(0, 0, &[]), peer(4000, 4000, &[]), peer(1, 1, &[5000])] {
            assert_eq!(p.check(&who, &req), Ok(Caller::Admin));
        }
    }

    #[test]
    fn clients_reach_only_the_switches_opened_to_them_untrusted() {
        let p = policy(CFG);
        let member = peer(6500, 6500, &[6000]);
        let client = Caller::Client { uid: 6500 };
        assert_eq!(
            p.check(&member, &attach("vale0:x", Profile::Untrusted)),
            Ok(client)
        );
        assert_eq!(
            p.check(&member, &attach("vale0:x", Profile::Trusted)),
            Err(Refusal::Trusted { uid: 6500 })
        );
        assert!(matches!(
            p.check(&member, &attach("vale1:x", Profile::Untrusted)),
            Err(Refusal::NotOpen { .. })
        ));
        assert!(matches!(
            p.check(&member, &attach("vale2:x", Profile::Untrusted)),
            Err(Refusal::NotOpen { .. })
        ));
        for port in ["vale0:x{1", "eth0", "netmap:eth0", "p{0"] {
            assert!(
                matches!(
                    p.check(&member, &attach(port, Profile::Untrusted)),
                    Err(Refusal::NotSwitchPort { .. })
                ),
                "{port}"
            );
        }
        assert_eq!(
            p.check(&peer(7000, 1, &[]), &attach("vale1:y", Profile::Untrusted)),
            Ok(Caller::Client { uid: 7000 })
        );
        assert_eq!(p.check(&member, &Request::List), Ok(client));
    }

    #[test]
    fn administrative_requests_from_clients_name_the_rule() {
        let p = policy(CFG);
        let e = p
            .check(
                &peer(6500, 6500, &[6000]),
                &Request::StopVm {
                    port: "vale0:vm".into(),
                },
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused: stop-vm is for administrators (root, the daemon's user, or group 5000); uid 6500 is not one"
        );
    }

    #[test]
    fn unknown_names_are_configuration_errors() {
        let cfg = Config::parse(
            "[[switch]]\nname = \"vale0\"\nopen_to_groups = [\"no-such-group-ptnet\"]\n",
            "t".into(),
        )
        .unwrap();
        let e = Policy::new(&cfg, 0).unwrap_err().to_string();
        assert!(
            e.contains("open_to_groups") && e.contains("no-such-group-ptnet"),
            "{e}"
        );
    }
}
