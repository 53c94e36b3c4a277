//! The control socket: one thread per connection reads one request, checks it against the
//! [`policy`](crate::policy) for the peer the kernel says connected, and answers it. An
//! `attach` keeps the connection (and the thread, asleep in `read`) for as long as the client
//! stays; when the connection closes, for whatever reason, the client's sync loop stops and
//! its port is released (an on-demand port is removed, a configured one stays).

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ptnet_datapath::switch::vale::mac_str;
use ptnet_proto::{
    self as proto, Envelope, PROTO_VERSION, PortEntry, Profile, Reply, Request, SwitchEntry,
};

use crate::creds::{self, PeerCred};
use crate::daemon::Daemon;
use crate::error::{DaemonError, error_chain};
use crate::nic::{HostStack, NicRequest, nic_entry};
use crate::policy::{Caller, Refusal};
use crate::registry::{DEFAULT_SLOTS, State, counters};
use crate::vm::vm_entry;

impl Daemon {
    /// Answers a management request from `caller` (the policy let it through).
    pub fn handle(&self, req: Request, caller: Caller) -> Reply {
        let mut st = self.lock();
        let r = match req {
            Request::Attach(_) => Err(DaemonError::Invalid(
                "attach is handled by the connection".into(),
            )),
            Request::List => return listing(&st),
            Request::CreateSwitch { name } => st.create_switch(&name, 8),
            Request::DestroySwitch { name } => st.destroy_switch(&name),
            Request::CreatePort(req) => st.create_port(&req, true).map(|name| {
                if let Caller::Client { uid } = caller {
                    st.set_port_owner(&name, uid);
                }
            }),
            Request::DestroyPort { port } => match caller {
                Caller::Client { uid } if st.port_owner(&port) != Some(uid) => {
                    return refusal(&Refusal::NotOwner { port, uid });
                }
                _ => st.destroy_port(&port),
            },
            Request::AttachNic {
                switch,
                ifname,
                backend,
                buf_size,
                host_stack,
                host_stack_tap,
            } => {
                let req = NicRequest {
                    switch: &switch,
                    ifname: &ifname,
                    backend: backend.as_deref(),
                    buf_size,
                    slots: DEFAULT_SLOTS,
                    host_stack: HostStack::new(host_stack_tap.as_deref(), host_stack),
                };
                return match st.attach_nic(&req) {
                    Ok(nic) => Reply::NicAttached {
                        port: format!("{switch}:{ifname}"),
                        host_stack: st
                            .switches
                            .get(&switch)
                            .and_then(|s| s.ports.get(&ifname))
                            .and_then(|p| p.host_stack.clone()),
                        nic,
                    },
                    Err(e) => Reply::Error {
                        message: e.to_string(),
                    },
                };
            }
            Request::DetachNic { switch, ifname } => st.detach_nic(&switch, &ifname),
            Request::CreateNicPort {
                ifname,
                backend,
                buf_size,
                rings,
            } => st.create_direct(
                &ifname,
                backend.as_deref(),
                buf_size,
                rings.unwrap_or(1),
                None,
                true,
            ),
            Request::ServeVm(req) => {
                let mode = self.mode(req.port.busy_poll);
                let cfg = self.cfg();
                st.serve_vm(
                    &req,
                    mode,
                    &cfg.daemon.vm_socket_dir,
                    cfg.vm_socket_access(),
                )
            }
            Request::StopVm { port } => st.stop_vm(&port),
            Request::QemuArgs { port } => {
                return match st.qemu_args(&port) {
                    Ok(args) => Reply::QemuArgs { args },
                    Err(e) => Reply::Error {
                        message: e.to_string(),
                    },
                };
            }
        };
        match r {
            Ok(()) => Reply::Ok,
            Err(e) => Reply::Error {
                message: e.to_string(),
            },
        }
    }

    /// Serves the control socket forever (until the listener fails).
    pub fn serve(self: &Arc<Self>, listener: UnixListener) -> io::Result<()> {
        let pending = Arc::new(Mutex::new(Pending::default()));
        for conn in listener.incoming() {
            let conn = match conn {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            // Replies never wait long for a client that does not read them.
            let _ = conn.set_write_timeout(Some(REQUEST_DEADLINE));
            let who = match creds::peer_cred(&conn) {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("cannot read a caller's credentials: {e}");
                    continue;
                }
            };
            let slot = match Pending::admit(&pending, &who, self.policy().caller(&who)) {
                Ok(s) => s,
                Err(why) => {
                    let _ = conn.set_nonblocking(true);
                    let _ = proto::send(&conn, &Reply::Error { message: why }, &[]);
                    continue;
                }
            };
            let d = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name("ctl-conn".into())
                .stack_size(CONN_STACK)
                .spawn(move || d.connection(conn, who, slot));
            if let Err(e) = spawned {
                log::error!("cannot start a connection thread: {e}");
            }
        }
        Ok(())
    }

    fn connection(&self, conn: UnixStream, who: PeerCred, slot: PendingSlot) {
        let got = proto::recv_within(&conn, Instant::now() + REQUEST_DEADLINE);
        // The request is in (or never will be): the connection no longer counts as pending.
        drop(slot);
        let env: Envelope = match got {
            Ok((env, _)) => env,
            Err(proto::ProtoError::Closed) => return,
            Err(e) => {
                let _ = proto::send(
                    &conn,
                    &Reply::Error {
                        message: format!("bad request: {}", error_chain(&e)),
                    },
                    &[],
                );
                return;
            }
        };
        if env.version != PROTO_VERSION {
            let _ = proto::send(
                &conn,
                &Reply::Error {
                    message: format!(
                        "protocol version {} not supported (this daemon speaks {PROTO_VERSION})",
                        env.version
                    ),
                },
                &[],
            );
            return;
        }
        let caller = match self.policy().check(&who, &env.request) {
            Ok(c) => c,
            Err(r) => {
                log::info!("pid {} uid {}: {r}", who.pid, who.uid);
                let _ = proto::send(&conn, &refusal(&r), &[]);
                return;
            }
        };
        let Request::Attach(req) = env.request else {
            let reply = self.handle(env.request, caller);
            if let Err(e) = proto::send(&conn, &reply, &[]) {
                log::debug!("reply lost: {e}");
            }
            return;
        };
        let (att, files) = match self.attach(&req) {
            Ok(x) => x,
            Err(e) => {
                log::info!("attach {}: {e}", req.port);
                let _ = proto::send(
                    &conn,
                    &Reply::Error {
                        message: e.to_string(),
                    },
                    &[],
                );
                return;
            }
        };
        let fds: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
        let sent = proto::send(&conn, &Reply::Attached(att.client.info().clone()), &fds);
        drop(files);
        if let Err(e) = sent {
            log::warn!("{}: attach reply failed: {}", req.port, error_chain(&e));
        } else {
            // Attached: sleep until the client goes away (EOF, error or anything it sends).
            let _ = conn.set_read_timeout(None);
            let mut b = [0u8; 64];
            loop {
                match (&conn).read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        self.detach(att);
    }
}

/// How long a connection has to send its whole request (and a client to take a reply).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections that have not sent their request yet: at most this many per user who is not
/// an administrator...
pub const MAX_PENDING_PER_USER: usize = 16;
/// ... and this many from all such users together (administrators are always served).
pub const MAX_PENDING: usize = 256;
/// A connection thread's stack: it parses one request and sleeps in `read` while attached.
const CONN_STACK: usize = 256 * 1024;

/// The connections that have not sent their request, by user (administrators' not counted).
#[derive(Debug, Default)]
struct Pending {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// One pending connection's place; given back when dropped.
struct PendingSlot(Option<(Arc<Mutex<Pending>>, u32)>);

impl Pending {
    /// Admits a new connection from `who`, or says why not.
    fn admit(
        this: &Arc<Mutex<Pending>>,
        who: &PeerCred,
        caller: Caller,
    ) -> Result<PendingSlot, String> {
        if caller == Caller::Admin {
            return Ok(PendingSlot(None));
        }
        let mut p = this.lock().unwrap_or_else(|e| e.into_inner());
        let mine = p.by_uid.get(&who.uid).copied().unwrap_or(0);
        if mine >= MAX_PENDING_PER_USER || p.total >= MAX_PENDING {
            log::info!(
                "pid {} uid {}: connection refused ({mine} of its own and {} in all waiting for their request)",
                who.pid,
                who.uid,
                p.total
            );
            return Err(format!(
                "refused: too many connections waiting to send their request (uid {} has {mine}; at most {MAX_PENDING_PER_USER} per user and {MAX_PENDING} in all)",
                who.uid
            ));
        }
        p.total += 1;
        *p.by_uid.entry(who.uid).or_insert(0) += 1;
        Ok(PendingSlot(Some((Arc::clone(this), who.uid))))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        if let Some((pending, uid)) = self.0.take() {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            p.total = p.total.saturating_sub(1);
            if let Some(n) = p.by_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    p.by_uid.remove(&uid);
                }
            }
        }
    }
}

fn refusal(r: &Refusal) -> Reply {
    Reply::Error {
        message: r.to_string(),
    }
}

/// The `list` reply: every switch and its ports, pipes and direct NIC ports.
pub(crate) fn listing(st: &State) -> Reply {
    let switches = st
        .switches
        .iter()
        .map(|(name, ss)| (name, ss, ss.sw.counters()))
        .map(|(name, ss, c)| SwitchEntry {
            name: name.clone(),
            lookups: c.lookups,
            floods: c.floods,
            learned: c.learned,
            ports: ss
                .ports
                .values()
                .map(|ps| {
                    let ifc = ps.vport.interface();
                    PortEntry {
                        name: ps.vport.name().to_owned(),
                        kind: if ps.nic.is_some() { "nic" } else { "vale" }.into(),
                        attached: ps.attached,
                        mem_id: ifc.region().id(),
                        profile: ps.profile,
                        tx_rings: ifc.tx.len() as u32,
                        rx_rings: ifc.rx.len() as u32,
                        slots: ps.slots,
                        stats: counters(ps.vport.stats()),
                        nic: ps.nic.as_ref().map(|n| nic_entry(&n.snapshot())),
                        vm: vm_entry(st, ps.vport.name()),
                        mac_lock: ps.vport.mac_lock().map(mac_str),
                        ring_use: ps.vport.ring_use(),
                    }
                })
                .collect(),
        })
        .collect();
    let mut pipes = Vec::new();
    for ps in st.pipes.values() {
        for (i, end) in [&ps.pipe.master, &ps.pipe.slave].into_iter().enumerate() {
            pipes.push(PortEntry {
                name: end.name().to_owned(),
                kind: "pipe".into(),
                attached: ps.attached[i],
                mem_id: end.interface().region().id(),
                profile: Profile::Trusted,
                tx_rings: ps.rings,
                rx_rings: ps.rings,
                slots: ps.slots,
                stats: counters(end.stats()),
                nic: None,
                vm: vm_entry(st, end.name()),
                mac_lock: None,
                ring_use: end.ring_use(),
            });
        }
    }
    for (ifname, ds) in &st.directs {
        let vp = ds.nic.client_port();
        let ifc = vp.interface();
        pipes.push(PortEntry {
            name: ifname.clone(),
            kind: "nic".into(),
            attached: ds.attached,
            mem_id: ifc.region().id(),
            profile: Profile::Untrusted,
            tx_rings: ifc.tx.len() as u32,
            rx_rings: ifc.rx.len() as u32,
            slots: ds.slots,
            stats: counters(vp.stats()),
            nic: Some(nic_entry(&ds.nic.snapshot())),
            vm: vm_entry(st, ifname),
            mac_lock: None,
            ring_use: vp.ring_use(),
        });
    }
    Reply::Listing { switches, pipes }
}

/// Binds the control socket: creates its directory, replaces a stale socket (one nobody
/// listens on), refuses to steal a live one, and sets its group (`gid`) and permissions.
pub fn bind_socket(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    if gid.is_some() {
        std::os::unix::fs::lchown(path, None, gid)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}
