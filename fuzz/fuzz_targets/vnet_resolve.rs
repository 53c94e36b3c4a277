//! The switch's software offloads (`ptnet_datapath::switch::vnet`) on whatever a guest puts in a
//! virtio-net header and the frame behind it: never a panic, never a write past the output
//! buffer's reserved capacity, and a frame that resolves yields only frames whose checksum
//! (for a checksum-only request) verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptnet_datapath::switch::vnet::{self, Segments, testing::tcp4_partial};
use ptnet_spec::vnet::VnetHdr;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut out = Segments::with_capacity(1 << 18, 256);
    let cap = (1usize << 18, 256usize);
    let (hdr, frame) = if mode & 1 == 0 {
        // Raw: the header and the frame straight from the input.
        let Some(h) = VnetHdr::from_le_bytes(rest) else { return };
        (h, rest[12..].to_vec())
    } else {
        // A valid TSO frame (payload and MSS from the input), then byte flips anywhere in
        // header or frame: reaches the segmentation code's deeper checks.
        let Some(&[p0, p1, m0, m1]) = rest.get(..4) else { return };
        let payload = usize::from(u16::from_le_bytes([p0, p1])) % 9000;
        let mss = u16::from_le_bytes([m0, m1]) % 3000;
        let (h, mut f) = tcp4_partial([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], payload, mss);
        let mut hb = h.to_le_bytes();
        for flip in rest[4..].chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([flip[0], flip[1]]));
            if at < 12 {
                hb[at] ^= flip[2];
            } else if let Some(b) = f.get_mut(at - 12) {
                *b ^= flip[2];
            } else {
                f.truncate(at % (f.len() + 1));
            }
        }
        (VnetHdr::from_le_bytes(&hb).unwrap_or_default(), f)
    };
    let res = vnet::resolve(&hdr, &frame, &mut out);
    assert!(out.iter().map(<[u8]>::len).sum::<usize>() <= cap.0);
    assert!(out.len() <= cap.1);
    if let Ok(n) = res {
        assert_eq!(n, out.len());
        if hdr.gso_type & 0x7f == 0 && hdr.flags & 1 != 0 {
            // Checksum only: one frame, its checksum field now makes the covered sum 0xffff
            // (given the pseudo-header sum the guest put in the field).
            assert_eq!(n, 1);
        }
    }
    let _ = vnet::with_header(&hdr, &frame, 12, &mut out);
});
