//! Serves one VALE port as a ptnet device on a vhost-user socket, with a host client on the
//! same switch, for trying the device with a real QEMU (`qemu/qtest-start.sh` drives it).
//!
//! ```sh
//! cargo run -p ptnet-device --example ptnet-device-demo -- /tmp/ptnet-vm.sock [SECONDS]
//! ```
//!
//! It prints the QEMU arguments and the port's geometry, then every 100 ms the host client
//! broadcasts one frame (`PTNET-HOST-<n>`) and reports every frame it receives (`host rx
//! ...`) and every change of the device's counters (`device ...`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptnet_client::Port;
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_device::{ServeConfig, qemu_args, serve};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let Some(socket) = args.next().map(PathBuf::from) else {
        eprintln!("usage: ptnet-device-demo SOCKET [SECONDS]");
        std::process::exit(2);
    };
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3600);

    let sw = Switch::new("vale0");
    let spec = VPortSpec {
        slots: 256,
        ..Default::default()
    };
    let vm: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw.add_port("vm", &spec).expect("port vm"),
    });
    let h: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(&sw),
        port: sw.add_port("h", &spec).expect("port h"),
    });
    let handle = serve(&socket, Arc::clone(&vm), ServeConfig::default()).expect("serve");
    let ifc = vm.interface();
    println!(
        "qemu args: {}",
        qemu_args(&socket, "ptnet0", &*vm).join(" ")
    );
    println!(
        "port vale0:vm region_size={} nifp_offset={} mem_id={} tx_slots={} rx_slots={}",
        ifc.region().size(),
        ifc.nifp_offset(),
        ifc.region().id(),
        ifc.tx[0].num_slots(),
        ifc.rx[0].num_slots()
    );

    let (hc, files) = HostClient::attach(Arc::clone(&h), Mode::default()).expect("attach");
    let mut hp = Port::from_parts(hc.info().clone(), files).expect("host client");
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    let mut last = handle.stats();
    println!("device {last:?}");
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let text = format!("PTNET-HOST-{n}");
        n += 1;
        hp.tx_batch(0, 1, |_, buf| {
            buf[..6].copy_from_slice(&[0xff; 6]);
            buf[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
            buf[12..14].copy_from_slice(&[0x88, 0xb5]);
            buf[14..14 + text.len()].copy_from_slice(text.as_bytes());
            60
        });
        hp.txsync(0);
        hp.rxsync(0);
        hp.rx_batch(0, u32::MAX, |buf, _| {
            let payload: String = buf
                .iter()
                .skip(14)
                .take(32)
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                .collect();
            println!(
                "host rx len={} src={:02x?} payload={payload}",
                buf.len(),
                &buf[6..12.min(buf.len())]
            );
        });
        hp.rxsync(0);
        let s = handle.stats();
        if s != last {
            println!("device {s:?}");
            last = s;
        }
    }
}
