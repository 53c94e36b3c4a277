//! Tier 2: the real `ptnetd` binary and client processes, talking through its control socket.
//!
//! Build the daemon first (`cargo build -p ptnetd`, same profile); `ci/tier2.sh` does.
#![cfg(feature = "host-tests")]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ptnet_client::proto::{self, PortRequest, Reply, Request};
use ptnet_client::{ClientError, Port};

mod common;

use common::Daemon;

#[test]
fn two_client_processes_exchange_frames_across_vale0() {
    let d = Daemon::start("vale");
    // VALE drops when a receiver's ring is full: the pair runs a window protocol (an ack
    // frame every 512 frames) so that the count is exact however loaded the machine is.
    let rx = d.client(
        &[
            "recv",
            "-p",
            "vale0:b",
            "--me",
            "2",
            "--to",
            "1",
            "-c",
            "20000",
            "--announce-ms",
            "50",
            "--window",
            "512",
        ],
        true,
    );
    let tx = d.client(
        &[
            "send", "-p", "vale0:a", "--me", "1", "--to", "2", "-c", "20000", "--burst", "64",
            "--window", "512", "-l", "200",
        ],
        false,
    );
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx, "sender: {vtx}");
    assert!(ok_rx, "receiver: {vrx}");
    assert_eq!(vrx["received"], 20000);
    assert_eq!(vrx["bad_payload"], 0);
    // On-demand ports disappear with their clients.
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.port("vale0:a").is_some() || d.port("vale0:b").is_some() {
        assert!(
            Instant::now() < deadline,
            "ports not reclaimed: {:?}",
            d.list()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pipe_between_two_processes_loses_nothing() {
    let d = Daemon::start("pipe");
    let rx = d.client(&["recv", "-p", "pipe0}1", "-c", "200000"], true);
    let tx = d.client(
        &[
            "send", "-p", "pipe0{1", "-c", "200000", "--burst", "512", "-l", "60",
        ],
        false,
    );
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx && ok_rx, "sender {vtx}, receiver {vrx}");
    assert_eq!(vrx["received"], 200000);
    assert_eq!(vrx["out_of_order"], 0);
}

#[test]
fn broadcast_reaches_every_other_port() {
    let d = Daemon::start("bcast");
    let rxs: Vec<_> = (0..4)
        .map(|i| {
            let port = format!("vale0:r{i}");
            let me = (10 + i).to_string();
            d.client(&["recv", "-p", &port, "--me", &me, "-c", "100"], true)
        })
        .collect();
    let tx = d.client(
        &[
            "send",
            "-p",
            "vale0:s",
            "--to",
            "255",
            "-c",
            "100",
            "--burst",
            "10",
            "--pause-us",
            "1000",
        ],
        false,
    );
    assert!(tx.finish().0);
    for (i, rx) in rxs.into_iter().enumerate() {
        let (ok, v) = rx.finish();
        assert!(ok, "receiver {i}: {v}");
        assert_eq!(v["received"], 100);
    }
}

#[test]
fn a_killed_client_is_reclaimed_and_the_others_keep_forwarding() {
    let mut d = Daemon::start("kill");
    // c: a sink for the victim's frames, so they do not flood the a → b pair.
    let sink = d.client(
        &[
            "recv",
            "-p",
            "vale0:c",
            "--me",
            "3",
            "-c",
            "1000000000",
            "--announce-ms",
            "50",
            "--timeout",
            "20",
        ],
        true,
    );
    let rx = d.client(
        &[
            "recv",
            "-p",
            "vale0:b",
            "--me",
            "2",
            "--to",
            "1",
            "-c",
            "30000",
            "--announce-ms",
            "50",
            "--window",
            "512",
        ],
        true,
    );
    let mut victim = d.client(
        &[
            "send", "-p", "vale0:v", "--me", "9", "--to", "3", "-c", "0", "--burst", "128",
        ],
        false,
    );
    let tx = d.client(
        &[
            "send", "-p", "vale0:a", "--me", "1", "--to", "2", "-c", "30000", "--burst", "64",
            "--window", "512",
        ],
        false,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.port("vale0:v").is_some_and(|p| p.attached),
        "victim attached"
    );
    victim.child.kill().expect("kill the victim");
    let _ = victim.child.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.port("vale0:v").is_some() {
        assert!(
            Instant::now() < deadline,
            "killed client's port not reclaimed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok_tx, vtx) = tx.finish();
    let (ok_rx, vrx) = rx.finish();
    assert!(ok_tx && ok_rx, "sender {vtx}, receiver {vrx}");
    assert_eq!(vrx["received"], 30000);
    // The port name is free again.
    let p = Port::attach(
        &d.socket,
        PortRequest {
            port: "vale0:v".into(),
            ..Default::default()
        },
    );
    assert!(p.is_ok(), "re-attach after reclaim: {:?}", p.err());
    drop(p);
    let mut sink = sink;
    let _ = sink.child.kill();
    let _ = sink.child.wait();
    assert!(d.alive(), "the daemon survived");
}

#[test]
fn malformed_requests_are_refused_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start("garbage");
    let garbage: [&[u8]; 5] = [
        b"\xff\xff\xff\xff",
        b"\x05\x00\x00\x00{{{{{",
        b"\x10\x00\x00\x00{\"version\":1,\"op\"",
        b"\x19\x00\x00\x00{\"version\":99,\"op\":\"list\"}",
        b"",
    ];
    for g in garbage {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(g).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = proto::recv::<Reply>(&s);
    }
    // A wrong version gets a clear answer.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let body = br#"{"version":99,"op":"list"}"#;
    s.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
    s.write_all(body).unwrap();
    match proto::recv::<Reply>(&s).unwrap().0 {
        Reply::Error { message } => assert!(message.contains("version"), "{message}"),
        r => panic!("{r:?}"),
    }
    assert!(d.alive());
    assert!(!d.list().0.is_empty(), "still answers");
}

#[test]
fn requests_beyond_the_limits_are_refused_with_the_limit_and_the_daemon_stays_small() {
    let mut d = Daemon::start("limits");
    let refused = |req: PortRequest| match proto::call(&d.socket, Request::CreatePort(req)) {
        Ok((Reply::Error { message }, _, _)) => message,
        other => panic!("not refused: {other:?}"),
    };
    // More extra buffers than any port needs (once: a wrapped count, then a panic; or a
    // region of hundreds of GB touched under the daemon's lock).
    for extra_bufs in [u32::MAX - 1000, u32::MAX, 1 << 20] {
        let m = refused(PortRequest {
            port: "vale0:x".into(),
            extra_bufs,
            ..Default::default()
        });
        assert!(m.contains("at most 65536"), "{extra_bufs}: {m}");
    }
    // More rings than one message carries descriptors for: once created, then unusable.
    let m = refused(PortRequest {
        port: "vale0:y".into(),
        tx_rings: Some(64),
        rx_rings: Some(64),
        ..Default::default()
    });
    assert!(m.contains("at most 121 in all"), "{m}");
    assert!(d.alive());
    assert!(d.port("vale0:x").is_none() && d.port("vale0:y").is_none());
    // The most a client can use still works.
    let p = Port::attach(
        &d.socket,
        PortRequest {
            port: "vale0:z".into(),
            tx_rings: Some(60),
            rx_rings: Some(61),
            slots: Some(64),
            extra_bufs: 65536,
            ..Default::default()
        },
    )
    .expect("121 rings and 65536 extra buffers");
    assert_eq!(p.num_tx_rings() + p.num_rx_rings(), 121);
}

#[test]
fn an_operator_locks_a_port_to_one_source_mac_and_a_vm_served_on_it_keeps_that_lock() {
    use ptnet_client::proto::VmRequest;
    let mut d = Daemon::start("maclock");
    let call = |r: Request| proto::call(&d.socket, r).expect("call").0;
    let create = |port: &str, mac: &str| {
        call(Request::CreatePort(PortRequest {
            port: port.into(),
            mac_lock: Some(mac.into()),
            ..Default::default()
        }))
    };
    let error = |r: Reply| match r {
        Reply::Error { message } => message,
        r => panic!("not refused: {r:?}"),
    };
    assert!(error(create("vale0:a", "02:00:00:00:00")).contains("six hex bytes"));
    assert!(error(create("vale0:a", "03:00:00:00:00:01")).contains("unicast"));
    assert!(error(create("pp{0", "02:00:00:00:00:01")).contains("only switch ports"));
    assert_eq!(create("vale0:a", "02:00:00:00:00:0a"), Reply::Ok);
    assert_eq!(
        d.port("vale0:a").and_then(|e| e.mac_lock).as_deref(),
        Some("02:00:00:00:00:0a")
    );
    let serve = |mac: Option<&str>, mac_lock: Option<bool>| {
        call(Request::ServeVm(VmRequest {
            port: PortRequest {
                port: "vale0:a".into(),
                ..Default::default()
            },
            socket: Some("a.sock".into()),
            mac: mac.map(Into::into),
            device: proto::VmDevice::VirtioNet,
            mac_lock,
            ..Default::default()
        }))
    };
    // A VM given another MAC would send nothing: refused, and the port is free again.
    let m = error(serve(Some("02:00:00:00:00:0b"), None));
    assert!(m.contains("may send from 02:00:00:00:00:0a only"), "{m}");
    // Without --mac the device takes the locked one.
    assert_eq!(serve(None, None), Reply::Ok);
    match call(Request::QemuArgs {
        port: "vale0:a".into(),
    }) {
        Reply::QemuArgs { args } => {
            assert!(args.join(" ").contains("mac=02:00:00:00:00:0a"), "{args:?}")
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(
        call(Request::StopVm {
            port: "vale0:a".into()
        }),
        Reply::Ok
    );
    // --any-mac lifts the lock while the VM is served; it comes back after.
    assert_eq!(serve(Some("02:00:00:00:00:0b"), Some(false)), Reply::Ok);
    assert_eq!(d.port("vale0:a").and_then(|e| e.mac_lock), None);
    assert_eq!(
        call(Request::StopVm {
            port: "vale0:a".into()
        }),
        Reply::Ok
    );
    assert_eq!(
        d.port("vale0:a").and_then(|e| e.mac_lock).as_deref(),
        Some("02:00:00:00:00:0a")
    );
    // By default a virtio-net device's port is locked to its MAC, a ptnet device's is not
    // (netmap applications choose their source addresses).
    for (port, device, locked) in [
        (
            "vale0:v",
            proto::VmDevice::VirtioNet,
            Some("02:00:00:00:00:0c"),
        ),
        ("vale0:p", proto::VmDevice::Ptnet, None),
    ] {
        let r = call(Request::ServeVm(VmRequest {
            port: PortRequest {
                port: port.into(),
                ..Default::default()
            },
            socket: Some(format!("{device}.sock")),
            mac: Some("02:00:00:00:00:0c".into()),
            device,
            mac_lock: None,
            ..Default::default()
        }));
        assert_eq!(r, Reply::Ok, "{port}");
        assert_eq!(d.port(port).and_then(|e| e.mac_lock).as_deref(), locked);
    }
    assert!(d.alive());
}

#[test]
fn attach_errors_say_why() {
    let d = Daemon::start("errors");
    let err = |name: &str| match Port::attach(
        &d.socket,
        PortRequest {
            port: name.into(),
            ..Default::default()
        },
    ) {
        Err(ClientError::Refused(m)) => m,
        Err(e) => panic!("{name}: unexpected error {e}"),
        Ok(_) => panic!("{name}: attached"),
    };
    assert!(err("vale0").contains("':'"), "missing colon");
    assert!(err("vale0:a-1").contains("ring selection"));
    // A bare interface name is a direct NIC port (netmap:IF): only if the interface exists.
    assert!(err("ptnoif0").contains("no interface ptnoif0"));
    assert!(err("netmap:ptnoif0").contains("no interface ptnoif0"));
    let first = Port::attach(
        &d.socket,
        PortRequest {
            port: "vale0:x".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(err("vale0:x").contains("busy"));
    drop(first);
}

#[test]
fn a_port_served_to_a_vm_belongs_to_it_and_gives_qemu_its_arguments() {
    use ptnet_client::proto::VmRequest;
    let d = Daemon::start("vm");
    let vsock = d.dir.join("vm1.sock").to_string_lossy().into_owned();
    let call = |r: Request| proto::call(&d.socket, r).expect("call").0;
    let serve = |port: &str, socket: &str, profile: proto::Profile| {
        call(Request::ServeVm(VmRequest {
            port: PortRequest {
                port: port.into(),
                profile,
                ..Default::default()
            },
            socket: Some(socket.into()),
            mac: Some("02:00:00:00:00:42".into()),
            device: proto::VmDevice::Ptnet,
            // Switch ports locked to the device's MAC (`--mac-lock`); a pipe end cannot be.
            mac_lock: port.starts_with("vale").then_some(true),
            ..Default::default()
        }))
    };
    assert_eq!(
        serve("vale0:vm1", "vm1.sock", proto::Profile::Untrusted),
        Reply::Ok
    );
    assert!(
        std::path::Path::new(&vsock).exists(),
        "the vhost-user socket exists"
    );
    // The port is the VM's: a host client cannot take it, nor can a second VM.
    let taken = Port::attach(
        &d.socket,
        PortRequest {
            port: "vale0:vm1".into(),
            ..Default::default()
        },
    );
    assert!(matches!(taken, Err(ClientError::Refused(m)) if m.contains("busy")));
    let other = "vm1b.sock";
    assert!(matches!(
        serve("vale0:vm1", other, proto::Profile::Untrusted),
        Reply::Error { .. }
    ));
    // A pipe end needs the trusted profile.
    match serve("pp{0", other, proto::Profile::Untrusted) {
        Reply::Error { message } => assert!(message.contains("trusted"), "{message}"),
        r => panic!("{r:?}"),
    }
    let entry = d.port("vale0:vm1").expect("listed");
    // Port security: the VM may send only from its device's MAC.
    assert_eq!(entry.mac_lock.as_deref(), Some("02:00:00:00:00:42"));
    let vm = entry.vm.expect("listed as served to a VM");
    assert_eq!(vm.socket, vsock);
    assert!(!vm.running && !vm.mem_ready, "no QEMU yet");
    match call(Request::QemuArgs {
        port: "vale0:vm1".into(),
    }) {
        Reply::QemuArgs { args } => {
            let all = args.join(" ");
            assert!(all.contains(&format!("path={vsock}")), "{all}");
            assert!(
                all.contains("vhost-user-test-device-pci") && all.contains("virtio-id=63"),
                "{all}"
            );
            assert!(
                all.contains("num_vqs=2") && all.contains("config_size=64"),
                "{all}"
            );
        }
        r => panic!("{r:?}"),
    }
    // Stopping frees the port and removes the socket.
    assert_eq!(
        call(Request::StopVm {
            port: "vale0:vm1".into()
        }),
        Reply::Ok
    );
    assert!(!std::path::Path::new(&vsock).exists());
    assert_eq!(
        d.port("vale0:vm1").and_then(|e| e.mac_lock),
        None,
        "the lock goes with the VM"
    );
    let p = Port::attach(
        &d.socket,
        PortRequest {
            port: "vale0:vm1".into(),
            ..Default::default()
        },
    );
    assert!(p.is_ok(), "free again: {:?}", p.err());
}

/// Issue 13, item 5: only administrators change the daemon, and clients use only the switches
/// the configuration opens to them. Four users made up for the test (numeric ids, no
/// accounts needed): a member of the socket's group that `vale0` is opened to, an
/// administrator (the admin group), and an outsider; root is the fourth.
#[test]
fn only_administrators_change_the_daemon_and_clients_use_only_the_switches_opened_to_them() {
    const MEMBER: u32 = 61_001;
    const ADMIN: u32 = 61_002;
    const OUTSIDER: u32 = 61_003;
    const GROUP: u32 = 61_010;
    const ADMINS: u32 = 61_020;
    let d = Daemon::start_with_config(
        "policy",
        &format!(
            r#"
[daemon]
socket_mode = "0660"
socket_group = "{GROUP}"
admin_group = "{ADMINS}"

[[switch]]
name = "vale0"
open_to_groups = ["{GROUP}"]

[[switch]]
name = "vale1"
"#
        ),
    );
    let ctl = d.public_bin(&common::target_bin("ptnetctl"));
    let client = d.public_bin(Path::new(env!("CARGO_BIN_EXE_ptnet-test-client")));
    let member = |args: &[&str]| d.run_as(MEMBER, &[GROUP], &ctl, args);

    // The socket's mode and group keep the outsider out altogether.
    let (ok, out) = d.run_as(OUTSIDER, &[], &ctl, &["list"]);
    assert!(!ok && out.contains("ermission denied"), "{out}");

    // A member may list, and use vale0: attach (a real client, its frames sent) ...
    let (ok, out) = member(&["list"]);
    assert!(ok, "{out}");
    let (ok, out) = d.run_as(
        MEMBER,
        &[GROUP],
        &client,
        &[
            "send", "-p", "vale0:m1", "--to", "255", "-c", "10", "-s", &d.socket,
        ],
    );
    assert!(ok, "a member's client on vale0: {out}");
    // ... and create a port there, and destroy it, but not root's.
    assert!(d.ctl(&["create-port", "vale0:roots"]).0);
    let (ok, out) = member(&["create-port", "vale0:mine"]);
    assert!(ok, "{out}");
    let (ok, out) = member(&["destroy-port", "vale0:roots"]);
    assert!(!ok && out.contains("did not create vale0:roots"), "{out}");
    let (ok, out) = member(&["destroy-port", "vale0:mine"]);
    assert!(ok, "{out}");
    assert!(d.port("vale0:mine").is_none() && d.port("vale0:roots").is_some());

    // Not vale1, not the trusted profile, not pipes or interfaces.
    let (ok, out) = d.run_as(
        MEMBER,
        &[GROUP],
        &client,
        &[
            "send", "-p", "vale1:m1", "--to", "255", "-c", "1", "-s", &d.socket,
        ],
    );
    assert!(
        !ok && out.contains("switch vale1 is not open to uid 61001"),
        "{out}"
    );
    let (ok, out) = member(&["create-port", "vale0:t", "--trusted"]);
    assert!(!ok && out.contains("trusted profile"), "{out}");
    let (ok, out) = member(&["create-port", "p{0"]);
    assert!(!ok && out.contains("not a port of a switch"), "{out}");

    // Every administrative request is refused, naming the rule.
    for args in [
        &["create-switch", "vale5"][..],
        &["destroy-switch", "vale0"],
        &["attach-nic", "vale0", "lo"],
        &["detach-nic", "vale0", "lo"],
        &["create-nic-port", "lo"],
        &["serve-vm", "vale0:vm", "--socket", "x.sock"],
        &["stop-vm", "vale0:roots"],
        &["qemu-args", "vale0:roots"],
    ] {
        let (ok, out) = member(args);
        assert!(
            !ok && out.contains("is for administrators") && out.contains("uid 61001 is not one"),
            "{args:?}: {out}"
        );
    }
    assert!(d.port("vale0:roots").is_some());

    // The admin group may do what root may.
    let (ok, out) = d.run_as(ADMIN, &[GROUP, ADMINS], &ctl, &["create-switch", "vale5"]);
    assert!(ok, "{out}");
    let (ok, out) = d.run_as(
        ADMIN,
        &[GROUP, ADMINS],
        &ctl,
        &["destroy-port", "vale0:roots"],
    );
    assert!(ok, "{out}");

    // VMs' vhost-user sockets take the control socket's mode and group: a QEMU running in
    // GROUP (libvirt's, say) reaches them, others do not.
    let (ok, out) = d.ctl(&["serve-virtio-net", "vale0:vm"]);
    assert!(ok, "{out}");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(d.dir.join("vale0-vm.sock")).unwrap();
    assert_eq!(
        (m.gid(), m.mode() & 0o777),
        (GROUP, 0o660),
        "the VM socket's group and mode"
    );
}

/// Issue 13, item 4: connections that have not sent their request are bounded per user and
/// in all, each has five seconds to send it whole (not five per read), and administrators
/// are served whatever the crowd. A member of the socket's group opens 1,000 silent
/// connections; another dribbles its request a byte at a time.
#[test]
fn an_idle_crowd_on_the_control_socket_is_bounded_and_root_is_still_served() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    const MEMBER: u32 = 61_101;
    const GROUP: u32 = 61_110;
    let d = Daemon::start_with_config(
        "crowd",
        &format!(
            "[daemon]\nsocket_group = \"{GROUP}\"\n\n[[switch]]\nname = \"vale0\"\nopen_to_groups = [\"{GROUP}\"]\n"
        ),
    );
    let ctl = d.public_bin(&common::target_bin("ptnetctl"));
    let client = d.public_bin(Path::new(env!("CARGO_BIN_EXE_ptnet-test-client")));
    let mut crowd = Command::new("setpriv")
        .args([
            format!("--reuid={MEMBER}"),
            format!("--regid={MEMBER}"),
            format!("--groups={GROUP}"),
        ])
        .arg(&client)
        .args([
            "hold",
            "-p",
            "-",
            "-s",
            &d.socket,
            "-c",
            "1000",
            "--timeout",
            "30",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let mut line = String::new();
    BufReader::new(crowd.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(line.trim().trim_start_matches("ready ")).expect(&line);
    assert!(
        v["refused"].as_u64().unwrap() >= 1000 - 16,
        "the daemon kept more than 16 of one user's silent connections: {v}"
    );

    // Root is served at once, and the daemon's threads and memory did not follow the crowd.
    let t = Instant::now();
    let (ok, out) = d.ctl(&["list"]);
    assert!(ok && t.elapsed() < Duration::from_secs(2), "{out}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    assert!(field("Threads:") < 40, "{status}");
    assert!(field("VmRSS:") < 200 * 1024, "{status}");
    // The member's next connection is refused at once, and says why.
    let (ok, out) = d.run_as(MEMBER, &[GROUP], &ctl, &["list"]);
    assert!(!ok && out.contains("too many connections waiting"), "{out}");

    // A request dribbled a byte every three seconds is cut off five seconds after it began.
    let mut slow = UnixStream::connect(&d.socket).unwrap();
    slow.write_all(&[8]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = slow.write_all(&[0]);
    std::thread::sleep(Duration::from_secs(3));
    slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut b = [0u8; 512];
    assert!(
        slow.read(&mut b).is_ok(),
        "the daemon still waits for a request begun six seconds ago"
    );

    // The crowd's connections timed out too: the member is served again.
    let (ok, out) = d.run_as(MEMBER, &[GROUP], &ctl, &["list"]);
    assert!(ok, "{out}");
    let _ = crowd.kill();
    let _ = crowd.wait();
}

/// Issue 13, item 3: a VM's vhost-user socket is a name in the daemon's own directory, never
/// a path a request chooses: paths and dot-names are refused, a file that is not a socket is
/// left alone, a stale socket is replaced without connecting to it (a live listener that never
/// accepts cannot hang the daemon), and a directory others can write is refused.
#[test]
fn vm_sockets_are_names_in_the_daemons_own_directory() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start("vmdir");
    for bad in ["/etc/passwd", "../x.sock", ".hidden", "a/b.sock", ""] {
        let (ok, out) = d.ctl(&["serve-vm", "vale0:v1", "--socket", bad]);
        assert!(!ok && out.contains("not a path"), "{bad:?}: {out}");
    }
    // A plain file under the name is not taken over.
    std::fs::write(d.dir.join("file.sock"), b"keep").unwrap();
    let (ok, out) = d.ctl(&["serve-vm", "vale0:v1", "--socket", "file.sock"]);
    assert!(!ok && out.contains("not a socket"), "{out}");
    assert_eq!(std::fs::read(d.dir.join("file.sock")).unwrap(), b"keep");
    // A listener that never accepts: replaced at once, without a connection to it.
    let _stuck = std::os::unix::net::UnixListener::bind(d.dir.join("busy.sock")).unwrap();
    let t = Instant::now();
    let (ok, out) = d.ctl(&["serve-vm", "vale0:v1", "--socket", "busy.sock"]);
    assert!(ok && t.elapsed() < Duration::from_secs(3), "{out}");
    // The default name comes from the port; qemu-args gives the path.
    let (ok, out) = d.ctl(&["serve-virtio-net", "vale0:v2"]);
    assert!(ok, "{out}");
    let (ok, out) = d.ctl(&["qemu-args", "vale0:v2"]);
    let want = d.dir.join("vale0-v2.sock");
    assert!(ok && out.contains(&*want.to_string_lossy()), "{out}");
    assert!(d.ctl(&["stop-vm", "vale0:v2"]).0);
    assert!(!want.exists(), "stop-vm removes the socket");

    // A VM socket directory others may write is refused.
    let open = d.dir.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let d2 = Daemon::start_with_config(
        "vmdir-open",
        &format!("[daemon]\nvm_socket_dir = \"{}\"\n", open.display()),
    );
    let (ok, out) = d2.ctl(&["serve-vm", "vale0:v1"]);
    assert!(!ok && out.contains("writable by it only"), "{out}");
}

/// Issue 18: SIGHUP brings the daemon to its edited configuration: what the new file adds is
/// created, what it drops is removed (a port a client still holds is kept, and the log says
/// so), and a file that does not parse changes nothing and the log names its line.
#[test]
fn sighup_brings_the_daemon_to_its_edited_configuration() {
    let d = Daemon::start_with_config(
        "reload",
        "[[switch]]\nname = \"vale0\"\n\n[[switch]]\nname = \"vale1\"\n\n\
         [[port]]\nname = \"vale0:p1\"\n\n[[port]]\nname = \"vale0:held\"\n",
    );
    let _holder = Port::attach(
        &d.socket,
        PortRequest {
            port: "vale0:held".into(),
            ..Default::default()
        },
    )
    .expect("attach to vale0:held");
    let file = d.dir.join("ptnetd.toml");
    let log = || std::fs::read_to_string(d.dir.join("ptnetd.log")).unwrap_or_default();
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &d.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -HUP");
    };
    let names = || {
        let (sw, pipes) = d.list();
        let mut n: Vec<String> = sw.iter().map(|s| s.name.clone()).collect();
        n.extend(sw.into_iter().flat_map(|s| s.ports).map(|p| p.name));
        n.extend(pipes.into_iter().map(|p| p.name));
        n.sort();
        n
    };
    std::fs::write(
        &file,
        "[[switch]]\nname = \"vale0\"\n\n[[switch]]\nname = \"vale2\"\n\n\
         [[port]]\nname = \"vale0:p2\"\nslots = 256\n",
    )
    .unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("SIGHUP: configuration reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload in the log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // vale1 and vale0:p1 are gone, vale2 and vale0:p2 are new; vale0:held is kept (held).
    assert_eq!(
        names(),
        ["vale0", "vale0:held", "vale0:p2", "vale2"],
        "{}",
        log()
    );
    let l = log();
    for line in [
        "reload: port vale0:p1 removed",
        "reload: port vale0:held kept",
        "reload: switch vale1 removed",
        "reload: switch vale2 created",
        "reload: port vale0:p2 created",
    ] {
        assert!(l.contains(line), "{line:?} missing:\n{l}");
    }

    // A file with an error: nothing changes, and the log says where.
    std::fs::write(
        &file,
        "[[switch]]\nname = \"vale0\"\n\n[[port]]\nname = \"vale0:q\"\nslots = 3\n",
    )
    .unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("(nothing changed)") {
        assert!(
            Instant::now() < deadline,
            "no refusal in the log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log().contains(":6: [[port]] slots"), "{}", log());
    assert_eq!(names(), ["vale0", "vale0:held", "vale0:p2", "vale2"]);
}

/// `Type=notify`: systemd hears `READY=1` (with the daemon's PID) only once the control socket
/// answers, `RELOADING=1` then `READY=1` around a `SIGHUP`, and `STOPPING=1` on `SIGTERM`.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = std::env::temp_dir().join(format!("ptnet-t2-{}-notify", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = UnixDatagram::bind(dir.join("notify")).unwrap();
    listen
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = dir.join("ptnetd.toml");
    std::fs::write(&config, "[[switch]]\nname = \"vale0\"\n").unwrap();
    let socket = dir.join("ptnetd.sock");
    /// Kills the daemon if an assertion ends the test early.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(common::target_bin("ptnetd"))
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--vm-socket-dir")
        .arg(&dir)
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .stderr(std::fs::File::create(dir.join("ptnetd.log")).unwrap())
        .spawn()
        .map(Reap)
        .expect("start ptnetd");
    let pid = child.0.id();
    let next = || {
        let mut buf = [0u8; 512];
        let n = listen.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains(&format!("MAINPID={pid}\n")), "{ready:?}");
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "READY=1 before the socket answers"
    );
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    };
    signal("-HUP");
    assert_eq!(next(), "RELOADING=1");
    assert!(next().starts_with("READY=1\n"));
    signal("-TERM");
    assert_eq!(next(), "STOPPING=1");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[daemon] cpus`: every thread of the daemon (a client's worker included) runs on the CPUs
/// listed; `SIGHUP` with another list moves them all, threads started afterwards inherit it,
/// and a file without the key gives them back the CPUs the daemon started with.
#[test]
fn cpus_pin_every_thread_and_sighup_moves_them() {
    // The CPUs this test may run on, as the kernel writes them ("0-1"): the daemon starts with
    // the same.
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned();
    let nums: Vec<usize> = all.split([',', '-']).map(|n| n.parse().unwrap()).collect();
    let (first, last) = (nums[0], *nums.last().unwrap());
    let conf = |cpus: Option<usize>| {
        let key = cpus.map_or(String::new(), |c| format!("[daemon]\ncpus = \"{c}\"\n\n"));
        format!("{key}[[switch]]\nname = \"vale0\"\n")
    };
    let d = Daemon::start_with_config("cpus", &conf(Some(last)));
    let pid = d.child.id();
    // Each thread's name and the CPUs it may run on.
    let threads = || -> Vec<(String, String)> {
        let mut t = Vec::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let Ok(s) = std::fs::read_to_string(e.unwrap().path().join("status")) else {
                continue;
            };
            let field = |k: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            };
            t.push((field("Name:"), field("Cpus_allowed_list:")));
        }
        t
    };
    let all_on = |want: &str, at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = threads();
            if t.len() >= at_least && t.iter().all(|(_, c)| c == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "want every thread on {want}: {t:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let before = threads().len();
    let attach = |port: &str| {
        Port::attach(
            &d.socket,
            PortRequest {
                port: port.into(),
                ..Default::default()
            },
        )
        .expect("attach")
    };
    let _a = attach("vale0:a");
    // The client's worker is one more thread, pinned like the rest.
    all_on(&last.to_string(), before + 1);

    let hup = |toml: String| {
        std::fs::write(d.dir.join("ptnetd.toml"), toml).unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -HUP");
    };
    hup(conf(Some(first)));
    all_on(&first.to_string(), before + 1);
    let _b = attach("vale0:b");
    all_on(&first.to_string(), before + 2);
    let log = std::fs::read_to_string(d.dir.join("ptnetd.log")).unwrap();
    assert!(
        log.contains(&format!("reload: every thread now runs on CPUs {first}")),
        "{log}"
    );

    hup(conf(None));
    all_on(&all, before + 2);
}

/// A list the machine cannot honour stops the daemon at start, saying why; one that does not
/// parse names the file, the line and the key.
#[test]
fn cpus_the_machine_lacks_or_that_do_not_parse_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("ptnet-t2-{}-cpus-bad", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (toml, says) in [
        (
            "[daemon]\ncpus = \"1023\"\n",
            "none of the CPUs 1023 is available",
        ),
        ("[daemon]\ncpus = \"2-1\"\n", "ptnetd.toml:2: [daemon] cpus"),
    ] {
        let path = dir.join("ptnetd.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(common::target_bin("ptnetd"))
            .arg("--config")
            .arg(&path)
            .arg("--socket")
            .arg(dir.join("s.sock"))
            .output()
            .expect("run ptnetd");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(says), "{toml}: want {says:?} in {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
