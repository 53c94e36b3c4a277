//! Software offloads: what a port without a virtio-net header needs done to a frame that
//! came with one (netmap's `bdg_mismatch_datapath`).
//!
//! A frame whose header asks for a checksum (`NEEDS_CSUM`) gets it computed and stored; a TCP
//! segmentation frame (`GSO_TCPV4`, `GSO_TCPV6`) is cut into `gso_size`-byte segments, each
//! with its own copy of the headers, IPv4 total length, id and header checksum or IPv6
//! payload length, TCP sequence number, flags (FIN and PSH on the last segment only, CWR on
//! the first only) and TCP checksum. Everything in the frame is hostile: every offset is
//! checked, a frame that cannot be resolved is refused with a reason, and nothing panics.
//!
//! The output goes into a caller-provided [`Segments`] buffer whose capacity is reserved
//! once: resolving never allocates.

use crate::mem::Buf;
use ptnet_spec::vnet::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VnetHdr,
};

/// Largest frame (without its header) the resolver takes: an IP datagram of 64 KiB behind an
/// Ethernet header with one VLAN tag.
pub const MAX_GSO_FRAME: usize = 65535 + 18;

/// Why a frame cannot be resolved (it is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unresolvable {
    /// The checksum position lies outside the frame.
    #[error("checksum offset outside the frame")]
    CsumOutside,
    /// A GSO type ptnet does not implement (UDP fragmentation, unknown values).
    #[error("unsupported GSO type {0:#x}")]
    GsoType(u8),
    /// The headers of a GSO frame are not Ethernet / IPv4 or IPv6 / TCP as announced.
    #[error("malformed headers for segmentation")]
    Headers,
    /// `gso_size` is 0.
    #[error("GSO size 0")]
    GsoSize,
    /// The output buffer cannot take the result; flush it and retry.
    #[error("output buffer full")]
    Full,
}

/// Frames produced by resolving: one byte arena and the `(offset, length)` of each frame.
#[derive(Debug)]
pub struct Segments {
    bytes: Vec<u8>,
    frames: Vec<(u32, u32)>,
}

impl Segments {
    /// An empty buffer able to hold `bytes` bytes in at most `frames` frames.
    pub fn with_capacity(bytes: usize, frames: usize) -> Self {
        Segments {
            bytes: Vec::with_capacity(bytes),
            frames: Vec::with_capacity(frames),
        }
    }

    /// Forgets every frame.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }

    /// Number of frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let (o, l) = self.frames[i];
        &self.bytes[o as usize..(o + l) as usize]
    }

    /// The frames, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.frame(i))
    }

    /// Whether `bytes` more bytes in `frames` more frames fit without growing.
    fn room(&self, bytes: usize, frames: usize) -> bool {
        self.bytes.len() + bytes <= self.bytes.capacity()
            && self.frames.len() + frames <= self.frames.capacity()
    }

    /// Appends `parts` concatenated as one frame; the caller checked the room.
    fn push(&mut self, parts: &[&[u8]]) -> usize {
        let start = self.bytes.len();
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.frames
            .push((start as u32, (self.bytes.len() - start) as u32));
        start
    }
}

/// Appends `hdr` and `frame` as one frame with a virtio-net header of length `hdr_len` in
/// front (the header's `num_buffers` zeroed): the direction toward a port with a header.
pub fn with_header(
    hdr: &VnetHdr,
    frame: &[u8],
    hdr_len: usize,
    out: &mut Segments,
) -> Result<(), Unresolvable> {
    if !out.room(hdr_len + frame.len(), 1) {
        return Err(Unresolvable::Full);
    }
    let h = VnetHdr {
        num_buffers: 0,
        ..*hdr
    }
    .to_le_bytes();
    out.push(&[&h[..hdr_len.min(h.len())], frame]);
    Ok(())
}

/// Resolves `frame` (the bytes after its header `hdr`) for a port without a header:
/// appends the one or more plain frames it becomes to `out`.
pub fn resolve(hdr: &VnetHdr, frame: &[u8], out: &mut Segments) -> Result<usize, Unresolvable> {
    let gso = hdr.gso_type & !(VIRTIO_NET_HDR_GSO_ECN as u8);
    match u32::from(gso) {
        VIRTIO_NET_HDR_GSO_NONE => {
            if !out.room(frame.len(), 1) {
                return Err(Unresolvable::Full);
            }
            if u32::from(hdr.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
                out.push(&[frame]);
                return Ok(1);
            }
            let start = usize::from(hdr.csum_start);
            let at = start + usize::from(hdr.csum_offset);
            if start >= frame.len() || at + 2 > frame.len() {
                return Err(Unresolvable::CsumOutside);
            }
            let o = out.push(&[frame]);
            let f = &mut out.bytes[o..o + frame.len()];
            // The field holds the pseudo-header sum; the sum over it and the rest is the
            // checksum (0 is sent as 0xffff, its other one's-complement form).
            let c = match !fold(sum(&f[start..], 0)) {
                0 => 0xffff,
                c => c,
            };
            f[at..at + 2].copy_from_slice(&c.to_be_bytes());
            Ok(1)
        }
        VIRTIO_NET_HDR_GSO_TCPV4 => segment_tcp(hdr, frame, false, out),
        VIRTIO_NET_HDR_GSO_TCPV6 => segment_tcp(hdr, frame, true, out),
        _ => Err(Unresolvable::GsoType(hdr.gso_type)),
    }
}

/// Clears, in the virtio-net header at the start of buffer `b`, the flags only a device may
/// set (`DATA_VALID`, `RSC_INFO`): virtio 1.x (5.1.6.2) forbids a driver to send them, so on a
/// frame from another port they would be that port's client vouching that a checksum was
/// verified, and the receiver would skip checking it. VALE clears them in every frame it
/// delivers with a header (one byte read, and written only when a sender set one).
pub fn clear_device_only_flags(b: Buf<'_>) {
    let mut f = [0u8];
    if b.read(0, &mut f) == 1 {
        let keep = f[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        if keep != f[0] {
            b.write(0, &[keep]);
        }
    }
}

/// Where the transport checksum of a frame received with `CHECKSUM_PARTIAL` goes, and its
/// value: the frame's TCP or UDP checksum field holds the pseudo-header sum, and the sum over
/// the segment from there is the checksum, as the kernel's `skb_checksum_help` computes it
/// (a NIC port finishes it before the frame enters the switch). IPv4 or IPv6 (no extension
/// headers), one VLAN tag at most; `None` for anything else or any inconsistent length.
pub fn partial_checksum(f: &[u8]) -> Option<(usize, u16)> {
    let be16 = |i: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *f.get(i)?,
            *f.get(i + 1)?,
        ])))
    };
    let (l3, ethertype) = l3(f)?;
    let (proto, l4, end) = match ethertype {
        0x0800 => {
            let vihl = *f.get(l3)?;
            let frag = be16(l3 + 6)? & 0x3fff;
            if vihl >> 4 != 4 || frag != 0 {
                return None;
            }
            (
                *f.get(l3 + 9)?,
                l3 + usize::from(vihl & 0xf) * 4,
                l3 + be16(l3 + 2)?,
            )
        }
        0x86dd => (*f.get(l3 + 6)?, l3 + 40, l3 + 40 + be16(l3 + 4)?),
        _ => return None,
    };
    let ofs = match proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    if end > f.len() || l4 + ofs + 2 > end {
        return None;
    }
    let c = match !fold(sum(&f[l4..end], 0)) {
        // UDP sends a zero checksum as 0xffff (0 means "none").
        0 if proto == 17 => 0xffff,
        c => c,
    };
    Some((l4 + ofs, c))
}

/// Where the L3 header starts (after Ethernet and at most one VLAN tag) and its ethertype.
fn l3(frame: &[u8]) -> Option<(usize, u16)> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if et == 0x8100 || et == 0x88a8 {
        Some((18, u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?])))
    } else {
        Some((14, et))
    }
}

fn segment_tcp(
    hdr: &VnetHdr,
    frame: &[u8],
    v6: bool,
    out: &mut Segments,
) -> Result<usize, Unresolvable> {
    let bad = Unresolvable::Headers;
    let (l3o, et) = l3(frame).ok_or(bad)?;
    let l4o = if v6 {
        if et != 0x86dd || frame.len() < l3o + 40 {
            return Err(bad);
        }
        // Extension headers are allowed between: the driver's csum_start says where TCP is.
        let s = usize::from(hdr.csum_start);
        // PANIC: byte l3o + 6 is inside: frame.len() >= l3o + 40, checked just above.
        if u32::from(hdr.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && s >= l3o + 40 {
            s
        } else if frame[l3o + 6] == 6 {
            l3o + 40
        } else {
            return Err(bad);
        }
    } else {
        // PANIC: byte l3o is read only once frame.len() >= l3o + 20, byte l3o + 9 only once
        // frame.len() >= l3o + ihl >= l3o + 20 (the `||` stops at the first failed check).
        if et != 0x0800 || frame.len() < l3o + 20 || frame[l3o] >> 4 != 4 {
            return Err(bad);
        }
        let ihl = usize::from(frame[l3o] & 0xf) * 4;
        if ihl < 20 || frame.len() < l3o + ihl || frame[l3o + 9] != 6 {
            return Err(bad);
        }
        l3o + ihl
    };
    let thl = usize::from(*frame.get(l4o + 12).ok_or(bad)? >> 4) * 4;
    let hdrs = l4o + thl;
    if thl < 20 || frame.len() < hdrs {
        return Err(bad);
    }
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(Unresolvable::GsoSize);
    }
    let payload = &frame[hdrs..];
    let nseg = payload.len().div_ceil(mss).max(1);
    if !out.room(frame.len() + (nseg - 1) * hdrs, nseg) {
        return Err(Unresolvable::Full);
    }
    // PANIC: every index from here on lies inside the headers, which every segment `s`
    // starts with too: l3o + 6 <= l4o (IPv4: ihl >= 20; IPv6: l4o >= l3o + 40, and bytes up to
    // l3o + 40 for the pseudo-header), l4o + 20 <= hdrs (thl >= 20), hdrs <= frame.len(); an
    // IPv6 segment's l3 length is at least hdrs - l3o >= 60.
    let seq0 = u32::from_be_bytes([
        frame[l4o + 4],
        frame[l4o + 5],
        frame[l4o + 6],
        frame[l4o + 7],
    ]);
    let flags0 = frame[l4o + 13];
    let id0 = u16::from_be_bytes([frame[l3o + 4], frame[l3o + 5]]);
    let ecn = hdr.gso_type & VIRTIO_NET_HDR_GSO_ECN as u8 != 0;
    for i in 0..nseg {
        let p = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let o = out.push(&[&frame[..hdrs], p]);
        let s = &mut out.bytes[o..o + hdrs + p.len()];
        let l3len = s.len() - l3o;
        if v6 {
            let pl = (l3len - 40) as u16;
            s[l3o + 4..l3o + 6].copy_from_slice(&pl.to_be_bytes());
        } else {
            s[l3o + 2..l3o + 4].copy_from_slice(&(l3len as u16).to_be_bytes());
            s[l3o + 4..l3o + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            s[l3o + 10..l3o + 12].copy_from_slice(&[0, 0]);
            let ihl = l4o - l3o;
            let c = !fold(sum(&s[l3o..l3o + ihl], 0));
            s[l3o + 10..l3o + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        s[l4o + 4..l4o + 8].copy_from_slice(&seq.to_be_bytes());
        let mut fl = flags0;
        if i + 1 < nseg {
            fl &= !(0x01 | 0x08); // FIN, PSH
        }
        if i > 0 && ecn {
            fl &= !0x80; // CWR
        }
        s[l4o + 13] = fl;
        // TCP checksum over the pseudo header and the segment.
        s[l4o + 16..l4o + 18].copy_from_slice(&[0, 0]);
        let tcp_len = (s.len() - l4o) as u32;
        let pseudo = if v6 {
            sum(&s[l3o + 8..l3o + 40], 6 + tcp_len)
        } else {
            sum(&s[l3o + 12..l3o + 20], 6 + tcp_len)
        };
        let c = !fold(sum(&s[l4o..], pseudo));
        s[l4o + 16..l4o + 18].copy_from_slice(&c.to_be_bytes());
    }
    Ok(nseg)
}

/// The one's-complement sum of `b` (big-endian 16-bit words, an odd last byte padded) added to
/// `init`, not folded.
pub fn sum(b: &[u8], init: u32) -> u32 {
    let mut acc = u64::from(init);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        // Four 16-bit words at once; carries accumulate in the upper bits of the u64.
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit one's-complement sum to 16 bits.
pub fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Frames for tests of the offload paths (here and in other crates' tests).
#[doc(hidden)]
pub mod testing {
    use super::{fold, sum};
    use ptnet_spec::vnet::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VnetHdr};

    /// A TCP/IPv4 frame of `payload` bytes (10.0.0.1:1000 → 10.0.0.2, sequence 1000, PSH|ACK)
    /// from `src` to `dst` whose TCP checksum is left to the receiver (the pseudo-header sum
    /// in the field, as a Linux driver hands it over with CHECKSUM_PARTIAL), and the
    /// virtio-net header asking for segmentation at `mss` (0: checksum only).
    pub fn tcp4_partial(
        dst: [u8; 6],
        src: [u8; 6],
        payload: usize,
        mss: u16,
    ) -> (VnetHdr, Vec<u8>) {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let c = !fold(sum(&f[14..34], 0));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[38..42].copy_from_slice(&1000u32.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = 0x18; // PSH|ACK
        f.extend((0..payload).map(|i| (i % 251) as u8));
        let pseudo = fold(sum(&f[26..34], 6 + 20 + payload as u32));
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let h = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
            gso_type: if mss > 0 {
                VIRTIO_NET_HDR_GSO_TCPV4 as u8
            } else {
                0
            },
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        };
        (h, f)
    }

    /// Checks one plain TCP/IPv4 segment as [`tcp4_partial`] makes them: lengths, IPv4 and
    /// TCP checksums. Returns its sequence number and payload.
    pub fn check_tcp4(s: &[u8]) -> Result<(u32, &[u8]), String> {
        if s.len() < 54 {
            return Err(format!("segment of {} bytes", s.len()));
        }
        if usize::from(u16::from_be_bytes([s[16], s[17]])) != s.len() - 14 {
            return Err("IPv4 total length".into());
        }
        if fold(sum(&s[14..34], 0)) != 0xffff {
            return Err("IPv4 header checksum".into());
        }
        let pseudo = sum(&s[26..34], 6 + (s.len() - 34) as u32);
        if fold(sum(&s[34..], pseudo)) != 0xffff {
            return Err("TCP checksum".into());
        }
        Ok((u32::from_be_bytes([s[38], s[39], s[40], s[41]]), &s[54..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verifies a checksum: the sum over the covered bytes (with the field) folds to 0xffff.
    fn verify(b: &[u8], init: u32) -> bool {
        fold(sum(b, init)) == 0xffff
    }

    fn tcp_frame(v6: bool, payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let l4len = 32 + payload;
        if v6 {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ip);
        } else {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
            ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
            let c = !fold(sum(&ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        let mut tcp = vec![0u8; 32];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0xffff_f000u32.to_be_bytes());
        tcp[12] = 8 << 4;
        tcp[13] = flags;
        f.extend_from_slice(&tcp);
        f.extend((0..payload).map(|i| (i * 7 + 3) as u8));
        f
    }

    /// The header a Linux driver sends with a CHECKSUM_PARTIAL TCP frame: the pseudo-header
    /// sum (length included) in the checksum field.
    fn partial(f: &mut [u8], v6: bool, gso: u8, mss: u16) -> VnetHdr {
        let l4o = if v6 { 54 } else { 34 };
        let pseudo = if v6 {
            sum(&f[22..54], 6 + (f.len() - l4o) as u32)
        } else {
            sum(&f[26..34], 6 + (f.len() - l4o) as u32)
        };
        let p = fold(pseudo);
        f[l4o + 16..l4o + 18].copy_from_slice(&p.to_be_bytes());
        VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
            gso_type: gso,
            hdr_len: (l4o + 32) as u16,
            gso_size: mss,
            csum_start: l4o as u16,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    fn check_tcp(s: &[u8], v6: bool) {
        let l4o = if v6 { 54 } else { 34 };
        let tcp_len = (s.len() - l4o) as u32;
        let pseudo = if v6 {
            assert_eq!(
                usize::from(u16::from_be_bytes([s[18], s[19]])),
                s.len() - 54
            );
            sum(&s[22..54], 6 + tcp_len)
        } else {
            assert_eq!(
                usize::from(u16::from_be_bytes([s[16], s[17]])),
                s.len() - 14
            );
            assert!(verify(&s[14..34], 0), "IPv4 header checksum");
            sum(&s[26..34], 6 + tcp_len)
        };
        assert!(verify(&s[l4o..], pseudo), "TCP checksum");
    }

    #[test]
    fn checksum_only_frames_get_their_checksum() {
        for v6 in [false, true] {
            let mut f = tcp_frame(v6, 333, 0x18);
            let h = partial(&mut f, v6, 0, 0);
            let mut out = Segments::with_capacity(4096, 4);
            assert_eq!(resolve(&h, &f, &mut out), Ok(1));
            check_tcp(out.frame(0), v6);
        }
    }

    #[test]
    fn tso_frames_become_valid_segments() {
        for v6 in [false, true] {
            let gso = if v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            } as u8;
            let mut f = tcp_frame(v6, 4000, 0x19); // FIN|PSH|ACK
            let h = partial(&mut f, v6, gso, 1448);
            let mut out = Segments::with_capacity(MAX_GSO_FRAME * 2, 64);
            assert_eq!(resolve(&h, &f, &mut out), Ok(3));
            let l4o = if v6 { 54 } else { 34 };
            let mut payload = Vec::new();
            for (i, s) in out.iter().enumerate() {
                check_tcp(s, v6);
                let seq = u32::from_be_bytes([s[l4o + 4], s[l4o + 5], s[l4o + 6], s[l4o + 7]]);
                assert_eq!(seq, 0xffff_f000u32.wrapping_add(i as u32 * 1448));
                let fl = s[l4o + 13];
                assert_eq!(fl, if i == 2 { 0x19 } else { 0x10 }, "segment {i}");
                if !v6 {
                    let id = u16::from_be_bytes([s[18], s[19]]);
                    assert_eq!(id, 0xfffeu16.wrapping_add(i as u16));
                }
                payload.extend_from_slice(&s[l4o + 32..]);
            }
            assert_eq!(payload, f[l4o + 32..]);
            assert_eq!(out.frame(2).len(), l4o + 32 + 4000 - 2 * 1448);
        }
    }

    #[test]
    fn hostile_headers_are_refused_without_panicking() {
        let f = tcp_frame(false, 100, 0x10);
        let mut out = Segments::with_capacity(8192, 8);
        let h = VnetHdr {
            flags: 1,
            csum_start: 200,
            csum_offset: 0,
            ..Default::default()
        };
        assert_eq!(resolve(&h, &f, &mut out), Err(Unresolvable::CsumOutside));
        let h = VnetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 65535,
            ..Default::default()
        };
        assert_eq!(resolve(&h, &f, &mut out), Err(Unresolvable::CsumOutside));
        let h = VnetHdr {
            gso_type: 3,
            ..Default::default()
        };
        assert_eq!(resolve(&h, &f, &mut out), Err(Unresolvable::GsoType(3)));
        let h = VnetHdr {
            gso_type: 1,
            gso_size: 0,
            ..Default::default()
        };
        assert_eq!(resolve(&h, &f, &mut out), Err(Unresolvable::GsoSize));
        // Every truncation of a valid TSO frame, v4 and v6: refused or resolved, never a panic.
        for v6 in [false, true] {
            let mut f = tcp_frame(v6, 3000, 0x10);
            let h = partial(&mut f, v6, if v6 { 4 } else { 1 }, 1000);
            for n in 0..f.len() {
                out.clear();
                let _ = resolve(&h, &f[..n], &mut out);
            }
        }
        // Output buffer too small: refused, nothing half written.
        let mut f = tcp_frame(false, 3000, 0x10);
        let h = partial(&mut f, false, 1, 1000);
        let mut small = Segments::with_capacity(1000, 8);
        assert_eq!(resolve(&h, &f, &mut small), Err(Unresolvable::Full));
        assert!(small.is_empty());
    }

    #[test]
    fn sum_matches_a_plain_word_sum() {
        let b: Vec<u8> = (0..1001u32).map(|i| (i * 31 + 7) as u8).collect();
        let mut s = 0u32;
        for c in b.chunks(2) {
            s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
        }
        assert_eq!(fold(sum(&b, 5)), fold(s + 5));
    }
}

#[cfg(test)]
mod partial_checksum_tests {
    use super::partial_checksum;

    /// What a NIC port does with the result.
    fn finish_checksum(f: &mut [u8]) -> bool {
        match partial_checksum(f) {
            Some((at, c)) => {
                f[at..at + 2].copy_from_slice(&c.to_be_bytes());
                true
            }
            None => false,
        }
    }

    /// The reference: the one's complement sum over the pseudo-header and the segment.
    fn reference(src: [u8; 4], dst: [u8; 4], proto: u8, seg: &[u8]) -> u16 {
        let mut sum = 0u32;
        for w in src.chunks(2).chain(dst.chunks(2)) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        sum += u32::from(proto) + seg.len() as u32;
        for c in seg.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn ipv4(proto: u8, seg_len: usize) -> (Vec<u8>, usize) {
        let mut f = vec![0u8; 14 + 20 + seg_len];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + seg_len) as u16).to_be_bytes());
        f[23] = proto;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        for (k, b) in f[34..].iter_mut().enumerate() {
            *b = (k as u8).wrapping_mul(13).wrapping_add(7);
        }
        (f, 34)
    }

    #[test]
    fn partial_tcp_and_udp_checksums_are_finished_like_the_kernel_does() {
        for (proto, ofs, len) in [(6u8, 16usize, 61usize), (17, 6, 40), (6, 16, 1460)] {
            let (mut f, l4) = ipv4(proto, len);
            f[l4 + ofs..l4 + ofs + 2].copy_from_slice(&[0, 0]);
            let want = reference([198, 18, 0, 1], [198, 18, 0, 2], proto, &f[l4..]);
            // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not inverted.
            let pseudo = !reference([198, 18, 0, 1], [198, 18, 0, 2], proto, &vec![0; len]);
            f[l4 + ofs..l4 + ofs + 2].copy_from_slice(&pseudo.to_be_bytes());
            assert!(finish_checksum(&mut f));
            let got = u16::from_be_bytes([f[l4 + ofs], f[l4 + ofs + 1]]);
            assert_eq!(got, want, "proto {proto} len {len}");
        }
    }

    #[test]
    fn frames_it_does_not_understand_are_left_alone() {
        let (mut f, _) = ipv4(1, 30);
        let before = f.clone();
        assert!(!finish_checksum(&mut f), "ICMP");
        assert_eq!(f, before);
        let (mut f, _) = ipv4(6, 30);
        f[16..18].copy_from_slice(&9000u16.to_be_bytes());
        assert!(!finish_checksum(&mut f), "IP length beyond the frame");
        assert!(!finish_checksum(&mut [0u8; 10]), "runt");
        let (mut f, _) = ipv4(17, 30);
        f[20] = 0x20;
        assert!(!finish_checksum(&mut f), "fragment");
    }
}
