//! Any bytes on the control socket: decoding never panics, and every request kind decoded
//! from them is answered without panicking, as an administrator or as a client. What a
//! request creates is undone after it (a switch, a port, an attachment, a VM's socket), so the
//! daemon stays small however long the run; requests for host interfaces that exist are
//! skipped (they would put the machine's real interfaces on a switch), and so are geometries
//! that would allocate more than a few megabytes (the limits themselves are tier-2 tests).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ptnet_proto::{Envelope, PortRequest, Request};
use ptnet_spec::name::{Base, PortName};
use ptnetd::config::Config;
use ptnetd::daemon::Daemon;
use ptnetd::policy::Caller;

fn daemon() -> &'static Arc<Daemon> {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        // VMs' sockets in a directory of the fuzzer's own (the daemon refuses one others may
        // write; the same one every run, so that runs leave no trail of directories).
        let dir = std::env::temp_dir().join("ptnet-fuzz-vm");
        let text = format!(
            "[daemon]\nmax_switches = 4\nvm_socket_dir = \"{}\"\n\n[[switch]]\nname = \"vale0\"\n",
            dir.display()
        );
        let cfg = Config::parse(&text, "fuzz.toml".into()).expect("the fuzz configuration");
        Daemon::new(cfg).expect("daemon")
    })
}

/// A port request small enough to run every time, for no host interface of this machine.
fn small(p: &PortRequest) -> bool {
    let nic = match PortName::parse(&p.port) {
        Ok(PortName {
            base: Base::Nic { ifname },
            ..
        }) => real_interface(ifname),
        _ => false,
    };
    !nic && p.slots.is_none_or(|s| s <= 256)
        && p.tx_rings.is_none_or(|r| r <= 4)
        && p.rx_rings.is_none_or(|r| r <= 4)
        && p.extra_bufs <= 64
}

/// Whether `ifname` could be a host interface of this machine.
fn real_interface(ifname: &str) -> bool {
    ifname.is_empty()
        || ifname.contains('/')
        || ifname.contains("..")
        || std::path::Path::new("/sys/class/net").join(ifname).exists()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml".into());
    }
    let Ok(env) = serde_json::from_slice::<Envelope>(data) else {
        return;
    };
    let d = daemon();
    // As an administrator, or as a client (the policy let the request through; the
    // ownership checks are the daemon's).
    let caller = if data.len() % 2 == 1 {
        Caller::Client { uid: 1000 }
    } else {
        Caller::Admin
    };
    match env.request {
        Request::Attach(req) => {
            if small(&req) {
                if let Ok((att, _files)) = d.attach(&req) {
                    d.detach(att);
                }
            }
        }
        Request::CreatePort(req) => {
            if small(&req) {
                let port = req.port.clone();
                let _ = d.handle(Request::CreatePort(req), caller);
                let _ = d.handle(Request::DestroyPort { port }, Caller::Admin);
            }
        }
        Request::CreateSwitch { name } => {
            let _ = d.handle(Request::CreateSwitch { name: name.clone() }, caller);
            if name != "vale0" {
                let _ = d.handle(Request::DestroySwitch { name }, Caller::Admin);
            }
        }
        Request::ServeVm(req) => {
            if small(&req.port) {
                let port = req.port.port.clone();
                let _ = d.handle(Request::ServeVm(req), caller);
                let _ = d.handle(Request::StopVm { port }, Caller::Admin);
            }
        }
        Request::AttachNic { ref ifname, .. } | Request::CreateNicPort { ref ifname, .. } => {
            if !real_interface(ifname) {
                let _ = d.handle(env.request, caller);
            }
        }
        Request::DestroySwitch { ref name } if name == "vale0" => {}
        r => {
            let _ = d.handle(r, caller);
        }
    }
});
