//! Tier 2, issue 13: what a local user (or root's own scripts gone wrong) can throw at the
//! control plane, all against one daemon held to a memory limit (a memory cgroup of 256 MiB,
//! or `RLIMIT_AS` where the machine has no memory controller): absurd and wrapping extra
//! buffers, 70,000 attach/detach cycles, 1,000 idle connections, a `ServeVm` onto a listener
//! whose backlog is full, a `StopVm` after the socket directory was swapped for a symlink.
//! Each is refused or survived; the daemon's memory stays bounded, `list` still answers, and
//! no file outside the daemon's own directories is touched.
#![cfg(feature = "host-tests")]

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Daemon;
use ptnet_client::Port;
use ptnet_client::proto::{self, PortRequest, Reply, Request};

const LIMIT: u64 = 256 << 20;

/// The daemon's memory limit; removed (the daemon gone first) when dropped.
enum Limit {
    Cgroup(PathBuf),
    AddressSpace,
}

impl Limit {
    fn apply(pid: u32) -> Self {
        for (root, file) in [
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
            ("/sys/fs/cgroup", "memory.max"),
        ] {
            let has = Path::new(root).join(file).exists()
                || std::fs::read_to_string(Path::new(root).join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"));
            if !has {
                continue;
            }
            let cg = Path::new(root).join(format!("ptnet-abuse-{}", std::process::id()));
            if std::fs::create_dir(&cg).is_err() {
                continue;
            }
            std::fs::write(cg.join(file), LIMIT.to_string()).expect("set the memory limit");
            std::fs::write(cg.join("cgroup.procs"), pid.to_string()).expect("join the cgroup");
            return Limit::Cgroup(cg);
        }
        // No memory controller: bound the address space instead (regions, stacks and all).
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), "--as=4294967296"])
            .status()
            .expect("prlimit (util-linux)")
            .success();
        assert!(ok, "no way to limit the daemon's memory here");
        Limit::AddressSpace
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        if let Limit::Cgroup(cg) = self {
            // Normally the daemon is gone already; after a failed assertion it may not be:
            // whatever is left moves back to the root group.
            let root = cg.parent().map(|p| p.join("cgroup.procs"));
            if let (Ok(procs), Some(root)) =
                (std::fs::read_to_string(cg.join("cgroup.procs")), root)
            {
                for p in procs.lines() {
                    let _ = std::fs::write(&root, p);
                }
            }
            for _ in 0..50 {
                if std::fs::remove_dir(&*cg).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `VmRSS` of `pid`, KiB.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A listening Unix socket at `path` with a backlog of one, filled until the kernel refuses
/// more connections. Returns the listener and the connections that filled it.
fn full_listener(path: &Path) -> (OwnedFd, Vec<OwnedFd>) {
    let sock = || {
        // SAFETY: socket(2) takes no pointers; the result is owned by the OwnedFd.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    // SAFETY: a zeroed sockaddr_un is valid; the path is copied within its bounds.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let p = path.as_os_str().as_encoded_bytes();
    assert!(p.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(p) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let l = sock();
    // SAFETY: bind and listen on our socket with a valid address.
    unsafe {
        assert_eq!(libc::bind(l.as_raw_fd(), (&raw const addr).cast(), len), 0);
        assert_eq!(libc::listen(l.as_raw_fd(), 1), 0);
    }
    let mut conns = Vec::new();
    loop {
        let c = sock();
        // SAFETY: connect our socket to a valid address.
        let r = unsafe { libc::connect(c.as_raw_fd(), (&raw const addr).cast(), len) };
        if r != 0 {
            break;
        }
        conns.push(c);
        assert!(conns.len() < 1000, "the backlog never filled");
    }
    (l, conns)
}

#[test]
fn control_plane_abuse_under_a_memory_limit_is_refused_or_survived() {
    // The VM socket directory, and a victim directory beside it with a file root must never
    // remove.
    let base = std::env::temp_dir().join(format!("ptnet-abuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let vms = base.join("vms");
    let victim = base.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o755).create(&vms).unwrap();
    }
    std::fs::write(victim.join("v2.sock"), b"precious").unwrap();
    let mut d = Daemon::start_with_config(
        "abuse",
        &format!(
            "[daemon]\nvm_socket_dir = \"{}\"\n\n[[switch]]\nname = \"vale0\"\n",
            vms.display()
        ),
    );
    let pid = d.child.id();
    let limit = Limit::apply(pid);
    let rss0 = rss(pid);

    // Absurd and wrapping extra buffers: refused with the limit.
    for extra_bufs in [u32::MAX, u32::MAX - 1000, 1 << 24] {
        match proto::call(
            &d.socket,
            Request::CreatePort(PortRequest {
                port: "vale0:x".into(),
                extra_bufs,
                ..Default::default()
            }),
        ) {
            Ok((Reply::Error { message }, _, _)) => {
                assert!(message.contains("at most 65536"), "{message}")
            }
            other => panic!("{extra_bufs} extra buffers not refused: {other:?}"),
        }
    }

    // 70,000 attach/detach cycles (more than there are region ids), two clients at a time.
    let t = Instant::now();
    std::thread::scope(|s| {
        for c in 0..2 {
            let socket = d.socket.clone();
            s.spawn(move || {
                for i in 0..35_000 {
                    // Detaching is asynchronous: a name comes back a little later, so the
                    // names rotate (and the last one is retried while it is still busy).
                    let req = PortRequest {
                        port: format!("vale0:c{c}x{}", i % 50),
                        slots: Some(64),
                        ..Default::default()
                    };
                    let mut tries = 0;
                    let p = loop {
                        match Port::attach(&socket, req.clone()) {
                            Ok(p) => break p,
                            Err(e) if e.to_string().contains("busy") && tries < 1000 => {
                                tries += 1;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err(e) => panic!("cycle {i} of client {c}: {e}"),
                        }
                    };
                    drop(p);
                }
            });
        }
    });
    eprintln!("70,000 attach/detach cycles in {:?}", t.elapsed());
    assert!(d.alive());

    // 1,000 idle connections: the daemon answers root all the same, at once.
    let idle: Vec<std::os::unix::net::UnixStream> = (0..1000)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&d.socket).ok())
        .collect();
    let t = Instant::now();
    let (ok, out) = d.ctl(&["list"]);
    assert!(ok && t.elapsed() < Duration::from_secs(3), "{out}");
    drop(idle);

    // A listener with a full backlog under a VM socket's name: replaced at once, no
    // connection to it attempted.
    let (_listener, _conns) = full_listener(&vms.join("full.sock"));
    let t = Instant::now();
    let (ok, out) = d.ctl(&["serve-vm", "vale0:v1", "--socket", "full.sock"]);
    assert!(ok && t.elapsed() < Duration::from_secs(3), "{out}");

    // The socket directory swapped for a symlink to the victim's: stop-vm removes its own
    // socket where it made it, and nothing in the victim's directory.
    let (ok, out) = d.ctl(&["serve-vm", "vale0:v2", "--socket", "v2.sock"]);
    assert!(ok, "{out}");
    let old = base.join("vms.old");
    std::fs::rename(&vms, &old).unwrap();
    std::os::unix::fs::symlink(&victim, &vms).unwrap();
    let (ok, out) = d.ctl(&["stop-vm", "vale0:v2"]);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read(victim.join("v2.sock")).unwrap(),
        b"precious",
        "root removed a file through a swapped directory"
    );
    assert!(!old.join("v2.sock").exists(), "its own socket is removed");

    // Bounded: the daemon is alive, answers, and did not grow.
    assert!(d.alive());
    let (ok, out) = d.ctl(&["list"]);
    assert!(ok, "{out}");
    let rss1 = rss(pid);
    eprintln!(
        "daemon RSS {rss0} → {rss1} KiB under a {} MiB limit",
        LIMIT >> 20
    );
    assert!(
        rss1 < rss0 + 64 * 1024,
        "the daemon grew from {rss0} to {rss1} KiB"
    );
    drop(d);
    drop(limit);
    let _ = std::fs::remove_dir_all(&base);
}
