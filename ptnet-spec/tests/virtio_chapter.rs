//! The draft virtio chapter (`virtio-ptnet.md`) says what the crate says: every table of it
//! is parsed and compared with the constants and layouts here, so the prose cannot drift.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;

use ptnet_spec::csb::{CsbAtok, CsbKtoa, CSB_ENTRY_SIZE, NAF_FORCE_READ, NAF_FORCE_RECLAIM};
use ptnet_spec::device::*;

fn chapter() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("virtio-ptnet.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The rows of every table under the heading `heading` (until the next `## `), each a list of
/// its cells without backticks; the header and separator rows are left out.
fn tables(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let body = &text[start + heading.len() + 5..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut rows = Vec::new();
    let mut in_table = 0;
    for line in body.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_table = 0;
            continue;
        }
        in_table += 1;
        if in_table <= 2 {
            continue; // header and separator
        }
        rows.push(
            line.trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect(),
        );
    }
    rows
}

/// `name | value` tables of a section, as a map.
fn values(text: &str, heading: &str) -> BTreeMap<String, u64> {
    tables(text, heading)
        .into_iter()
        .filter(|r| r.len() == 2)
        .map(|r| {
            let v = &r[1];
            let n = match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            }
            .unwrap_or_else(|e| panic!("{r:?}: {e}"));
            (r[0].clone(), n)
        })
        .collect()
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn ids_queues_and_shared_memory_match_the_crate() {
    let t = chapter();
    let ids = values(&t, "Device ID");
    assert_eq!(ids["device id"], u64::from(VIRTIO_ID_PTNET));
    assert_eq!(ids["PCI device id"], u64::from(PCI_DEVICE_ID_PTNET));
    assert_eq!(
        values(&t, "Virtqueues")["max rings per direction"],
        u64::from(PTNET_MAX_RINGS)
    );
    assert_eq!(
        values(&t, "Shared memory region")["shmid of the port's memory"],
        u64::from(PTNET_SHMID_ALLOCATOR)
    );
}

#[test]
fn feature_bits_match_the_crate() {
    let rows = tables(&chapter(), "Feature bits");
    let want = [
        ("PTNET_F_VNET_HDR", PTNET_F_VNET_HDR),
        ("PTNET_F_STATUS", PTNET_F_STATUS),
        ("VIRTIO_F_VERSION_1", VIRTIO_F_VERSION_1),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (row, (name, bit)) in rows.iter().zip(want) {
        assert_eq!((row[1].as_str(), num(&row[0])), (name, u64::from(bit)));
    }
}

#[test]
fn configuration_layout_matches_ptnet_config() {
    let rows = tables(&chapter(), "Device configuration layout");
    let fields: Vec<&Vec<String>> = rows.iter().filter(|r| r.len() == 4).collect();
    let want = [
        ("mac", offset_of!(PtnetConfig, mac), 6),
        ("status", offset_of!(PtnetConfig, status), 2),
        ("num_tx_rings", offset_of!(PtnetConfig, num_tx_rings), 4),
        ("num_rx_rings", offset_of!(PtnetConfig, num_rx_rings), 4),
        ("num_tx_slots", offset_of!(PtnetConfig, num_tx_slots), 4),
        ("num_rx_slots", offset_of!(PtnetConfig, num_rx_slots), 4),
        ("nifp_offset", offset_of!(PtnetConfig, nifp_offset), 8),
        ("mem_size", offset_of!(PtnetConfig, mem_size), 8),
        ("mem_id", offset_of!(PtnetConfig, mem_id), 2),
        ("vnet_hdr_len", offset_of!(PtnetConfig, vnet_hdr_len), 2),
        ("buf_size", offset_of!(PtnetConfig, buf_size), 4),
        ("csb_atok_gpa", PTNET_CONFIG_CSB_ATOK_OFFSET, 8),
        ("csb_ktoa_gpa", PTNET_CONFIG_CSB_KTOA_OFFSET, 8),
    ];
    assert_eq!(fields.len(), want.len(), "{fields:?}");
    let mut end = 0;
    for (row, (name, ofs, size)) in fields.iter().zip(want) {
        assert_eq!(row[2], name);
        assert_eq!((num(&row[0]), num(&row[1])), (ofs as u64, size), "{name}");
        let writable = row[3] == "driver-written";
        assert_eq!(writable, name.starts_with("csb_"), "{name}'s access");
        end = ofs + size as usize;
    }
    assert_eq!(end, size_of::<PtnetConfig>());
    assert_eq!(end, PTNET_CONFIG_SIZE as usize);
    let bits: Vec<&Vec<String>> = rows.iter().filter(|r| r.len() == 3).collect();
    assert_eq!(bits.len(), 2, "{bits:?}");
    assert_eq!(
        (bits[0][1].as_str(), num(&bits[0][0])),
        ("PTNET_S_LINK_UP", 1)
    );
    assert_eq!(
        (bits[1][1].as_str(), num(&bits[1][0])),
        ("PTNET_S_MEM_READY", 2)
    );
    assert_eq!((PTNET_S_LINK_UP, PTNET_S_MEM_READY), (1, 2));
}

#[test]
fn csb_entries_match_the_crate() {
    let t = chapter();
    let heading = "The Communication Status Block";
    let rows: Vec<Vec<String>> = tables(&t, heading)
        .into_iter()
        .filter(|r| r.len() == 3)
        .collect();
    let want = [
        ("atok", offset_of!(CsbAtok, head), "head"),
        ("atok", offset_of!(CsbAtok, cur), "cur"),
        (
            "atok",
            offset_of!(CsbAtok, appl_need_kick),
            "appl_need_kick",
        ),
        ("atok", offset_of!(CsbAtok, sync_flags), "sync_flags"),
        ("ktoa", offset_of!(CsbKtoa, hwcur), "hwcur"),
        ("ktoa", offset_of!(CsbKtoa, hwtail), "hwtail"),
        (
            "ktoa",
            offset_of!(CsbKtoa, kern_need_kick),
            "kern_need_kick",
        ),
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (row, (array, ofs, field)) in rows.iter().zip(want) {
        assert_eq!(
            (row[0].as_str(), num(&row[1]), row[2].as_str()),
            (array, ofs as u64, field)
        );
    }
    let v = values(&t, heading);
    assert_eq!(v["entry size"], u64::from(CSB_ENTRY_SIZE));
    assert_eq!(v["NAF_FORCE_READ"], u64::from(NAF_FORCE_READ));
    assert_eq!(v["NAF_FORCE_RECLAIM"], u64::from(NAF_FORCE_RECLAIM));
    assert_eq!(size_of::<CsbAtok>(), CSB_ENTRY_SIZE as usize);
    assert_eq!(size_of::<CsbKtoa>(), CSB_ENTRY_SIZE as usize);
}
