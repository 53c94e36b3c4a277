//! What a netmap application may pass to the preload library (`libptnet_netmap.so`): any
//! control request (version, type, name, options, body), then any sequence of syncs, polls,
//! `mmap` checks and ring headers holding any `head`/`cur`, on a port of an in-process VALE
//! switch. Nothing panics, no index leaves the ring, and the port keeps working.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use ptnet_client::{ClientError, Port};
use ptnet_client::proto::PortRequest;
use ptnet_datapath::host::HostClient;
use ptnet_datapath::kloop::Mode;
use ptnet_datapath::mem::Region;
use ptnet_datapath::port::SyncPort;
use ptnet_datapath::switch::vale::{Switch, VPortSpec, ValePortSync};
use ptnet_netmap::{Body, NmFile};
use ptnet_spec::netmap::{NETMAP_API, NETMAP_IF_RING_OFS, NmreqHeader};

fn switch() -> &'static Arc<Switch> {
    static S: OnceLock<Arc<Switch>> = OnceLock::new();
    S.get_or_init(|| Switch::new("fz0"))
}

/// Attachments made by the target, detached when the next input starts.
static HELD: Mutex<Vec<HostClient>> = Mutex::new(Vec::new());

fn attach(req: PortRequest) -> Result<Port, ClientError> {
    let sw = switch();
    let spec = VPortSpec {
        slots: req.slots.unwrap_or(64).clamp(2, 256),
        tx_rings: req.tx_rings.unwrap_or(1).clamp(1, 2),
        rx_rings: req.rx_rings.unwrap_or(1).clamp(1, 2),
        ..Default::default()
    };
    let port: Arc<dyn SyncPort> = Arc::new(ValePortSync {
        switch: Arc::clone(sw),
        port: sw.add_port(&req.port, &spec).map_err(|e| ClientError::Refused(e.to_string()))?,
    });
    let (hc, files) = HostClient::attach(port, Mode::default())?;
    let p = Port::from_parts(hc.info().clone(), files)?;
    HELD.lock().unwrap().push(hc);
    Ok(p)
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }
}

fuzz_target!(|data: &[u8]| {
    HELD.lock().unwrap().clear();
    let mut b = Bytes(data);
    let Some(sel) = b.u8() else { return };
    let mut hdr = NmreqHeader {
        nr_version: if sel & 1 == 0 { NETMAP_API } else { b.u16().unwrap_or(0) },
        nr_reqtype: u16::from(sel >> 1 & 15),
        nr_reserved: 0,
        nr_name: [0; 64],
        nr_options: if sel & 0x20 != 0 { b.u64().unwrap_or(0) } else { 0 },
        nr_body: 0,
    };
    let name_len = usize::from(b.u8().unwrap_or(0) % 66);
    let names: [&[u8]; 4] = [b"fz0:a", b"fz0:b", b"", b"fz0:a{1"];
    if name_len < 64 {
        let n = names[name_len % 4];
        hdr.nr_name[..n.len()].copy_from_slice(n);
    } else {
        for c in hdr.nr_name.iter_mut() {
            *c = b.u8().unwrap_or(b'x');
        }
    }
    let Some(mut body) = Body::for_reqtype(hdr.nr_reqtype) else { return };
    match &mut body {
        Body::Register(r) => {
            r.nr_tx_slots = b.u32().unwrap_or(0) % 300;
            r.nr_rx_slots = b.u32().unwrap_or(0) % 300;
            r.nr_tx_rings = b.u16().unwrap_or(0) % 4;
            r.nr_rx_rings = b.u16().unwrap_or(0) % 4;
            r.nr_ringid = b.u16().unwrap_or(0);
            r.nr_mode = b.u32().unwrap_or(0) % 10;
            r.nr_extra_bufs = b.u32().unwrap_or(0);
            r.nr_flags = b.u64().unwrap_or(0);
        }
        Body::PortHdr(h) => h.nr_hdr_len = b.u32().unwrap_or(0),
        Body::PortInfo(_) => {}
    }
    let mut f = NmFile::default();
    let _ = f.ctrl(&hdr, &mut body, attach);
    let Some(port) = f.port() else { return };
    // The application's view of its rings: the region mapped again, as mmap gives it.
    let info = port.info().clone();
    let Ok(file) = port.region_file().try_clone() else { return };
    let Ok(region) = Region::attach(file, info.region_size as usize, info.mem_id) else {
        return;
    };
    let region = Arc::new(region);
    let nrings = (info.num_tx_rings + info.num_rx_rings) as u64;
    let views: Vec<_> = (0..nrings)
        .filter_map(|k| {
            let ofs: i64 = region.read(info.nifp_offset + NETMAP_IF_RING_OFS as u64 + 8 * k)?;
            let n = if k < u64::from(info.num_tx_rings) { info.num_tx_slots } else { info.num_rx_slots };
            region.ring((info.nifp_offset as i64 + ofs) as u64, n)
        })
        .collect();
    while let Some(op) = b.u8() {
        match op % 6 {
            0 => {
                let _ = f.sync(op & 8 != 0);
            }
            1 => {
                let _ = f.poll_events(i16::from(op >> 3) & (libc_poll()));
            }
            2 => {
                let _ = f.poll_arm(libc_poll());
                f.poll_disarm();
            }
            3 => {
                let len = b.u32().unwrap_or(0) as usize;
                let off = b.u32().unwrap_or(0) as i32 as i64;
                let _ = f.mmap_target(len, off);
            }
            _ => {
                if let (Some(k), Some(h), Some(c)) = (b.u8(), b.u16(), b.u16()) {
                    if let Some(v) = views.get(usize::from(k) % views.len().max(1)) {
                        v.publish_head_cur(u32::from(h), u32::from(c));
                    }
                }
            }
        }
    }
    // Whatever the application did, the rings' tails stay inside them.
    for v in &views {
        assert!(v.tail() < v.num_slots(), "tail {} of {}", v.tail(), v.num_slots());
    }
});

/// POLLIN | POLLOUT.
fn libc_poll() -> i16 {
    0x1 | 0x4
}
