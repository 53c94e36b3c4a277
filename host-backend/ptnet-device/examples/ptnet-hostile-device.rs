//! A ptnet device that lies to the guest driver about its geometry, for the driver's
//! hostile-device test (tier 3, `tests/vmtest`): serves one VALE port per lie, each on
//! `DIR/<lie>.sock`, whose config space tells the guest something absurd (a buffer size that is
//! no multiple of 64 or beyond any frame, no rings or a million, 3 slots, the `netmap_if`
//! outside the memory, memory larger than the BAR). The driver must refuse every one of them
//! without an oops.
//!
//! ```sh
//! cargo run -p ptnet-device --example ptnet-hostile-device -- DIR [SECONDS]
//! ```
//!
//! Prints one line per lie, `lie NAME ARGS...` (QEMU's arguments for that device, separated
//! by tabs), then `ready`, and serves for SECONDS (default 600).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_device::{ServeConfig, qemu_args, serve};
use ptnet_spec::device::PtnetConfig;

/// A lie: what a device does to the config space its driver reads.
type Lie = fn(&mut PtnetConfig);

/// What each device says.
const LIES: [(&str, Lie); 7] = [
    ("buf-size-100", |c| c.buf_size = 100),
    ("buf-size-max", |c| c.buf_size = u32::MAX),
    ("no-tx-rings", |c| c.num_tx_rings = 0),
    ("million-rx-rings", |c| c.num_rx_rings = 1_000_000),
    ("three-slots", |c| c.num_tx_slots = 3),
    ("nifp-outside", |c| c.nifp_offset = c.mem_size + 4096),
    ("memory-beyond-bar", |c| c.mem_size += 1 << 30),
];

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: ptnet-hostile-device DIR [SECONDS]");
        std::process::exit(2);
    };
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(600);
    let sw = Switch::new("vale0");
    let spec = VPortSpec {
        slots: 256,
        ..Default::default()
    };
    let mut handles = Vec::new();
    for (i, (name, lie)) in LIES.iter().enumerate() {
        let port: Arc<dyn SyncPort> = Arc::new(ValePortSync {
            switch: Arc::clone(&sw),
            port: sw.add_port(name, &spec).expect("port"),
        });
        let socket = dir.join(format!("{name}.sock"));
        let cfg = ServeConfig {
            tamper: Some(*lie),
            ..Default::default()
        };
        handles.push(serve(&socket, Arc::clone(&port), cfg).expect("serve"));
        println!(
            "lie {name} {}",
            qemu_args(&socket, &format!("lie{i}"), &*port).join("\t")
        );
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(seconds));
    drop(handles);
}
