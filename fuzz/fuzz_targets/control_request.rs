//! Any bytes on the control socket: decoding never panics, and management requests decoded
//! from them are answered (not attach: that needs a connection) without panicking.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ptnet_proto::{Envelope, Request};
use ptnetd::config::Config;
use ptnetd::daemon::Daemon;
use ptnetd::policy::Caller;

fn daemon() -> &'static Arc<Daemon> {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| Daemon::new(Config::embedded()).expect("daemon"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml".into());
    }
    let Ok(env) = serde_json::from_slice::<Envelope>(data) else { return };
    match env.request {
        // Creating ports allocates megabytes each: keep the daemon small. Attaching host
        // interfaces would put the machine's real ones on a switch (or give them to a port).
        Request::Attach(_)
        | Request::CreatePort(_)
        | Request::CreateSwitch { .. }
        | Request::AttachNic { .. }
        | Request::CreateNicPort { .. }
        // Would bind sockets at paths the input chooses.
        | Request::ServeVm(_) => {}
        r => {
            // As an administrator, or as a client (the policy let the request through; the
            // ownership checks are the daemon's).
            let caller = if data.len() % 2 == 1 {
                Caller::Client { uid: 1000 }
            } else {
                Caller::Admin
            };
            let _ = daemon().handle(r, caller);
        }
    }
});
