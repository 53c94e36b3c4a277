//! The frames ptnet-pktgen sends, and the receiver's checks.
//!
//! Every frame is an Ethernet frame (no CRC) with the local experimental EtherType 0x88B5,
//! followed by a fixed header and a pattern:
//!
//! | offset | size | field                                                      |
//! |-------:|-----:|------------------------------------------------------------|
//! |      0 |    6 | destination MAC                                            |
//! |      6 |    6 | source MAC                                                 |
//! |     12 |    2 | EtherType 0x88B5 (big endian, as on the wire)              |
//! |     14 |    4 | magic `PTPG` (little endian [`MAGIC`])                     |
//! |     18 |    1 | [`Kind`]: data, ping, pong                                 |
//! |     19 |    1 | reserved, 0                                                |
//! |     20 |    2 | frame length (little endian)                               |
//! |     22 |    8 | sequence number (little endian), from 0 in each run        |
//! |     30 |    8 | sender timestamp in ns (ping/pong; 0 for data)             |
//! |     38 |  ... | pattern: 8-byte words `seed(seq) + i * STEP`, little endian |
//!
//! The pattern depends on the whole sequence number, so a stale or misdelivered buffer, a
//! short copy or a flipped byte all show up as `bad_payload`.

/// EtherType of pktgen frames (IEEE 802 local experimental 1).
pub const ETHERTYPE: u16 = 0x88b5;
/// Magic number after the Ethernet header.
pub const MAGIC: u32 = u32::from_le_bytes(*b"PTPG");
/// Bytes before the pattern: the smallest frame pktgen sends.
pub const HEADER_LEN: usize = 38;
/// Largest frame (a slot's `len` is 16 bits).
pub const MAX_FRAME: usize = u16::MAX as usize;

const OFS_MAGIC: usize = 14;
const OFS_KIND: usize = 18;
const OFS_LEN: usize = 20;
const OFS_SEQ: usize = 22;
const OFS_TS: usize = 30;
/// Increment between pattern words (an odd constant, so every word differs).
const STEP: u64 = 0x9e37_79b9_7f4a_7c15;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Traffic from `tx`.
    Data = 0,
    /// A `ping` request.
    Ping = 1,
    /// A `pong` reply.
    Pong = 2,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Kind::Data),
            1 => Some(Kind::Ping),
            2 => Some(Kind::Pong),
            _ => None,
        }
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &Mac) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// The constant part of the frames of one sender.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// Frame length (at least [`HEADER_LEN`]).
    pub len: u16,
    /// Kind of the frames.
    pub kind: Kind,
}

fn seed(seq: u64) -> u64 {
    // A bijective mix, so neighbouring sequence numbers get unrelated patterns.
    let x = seq.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 31)
}

/// Writes the pattern of frame `seq` into `p` (the bytes from [`HEADER_LEN`] on).
fn write_pattern(p: &mut [u8], seq: u64) {
    let mut w = seed(seq);
    let mut chunks = p.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&w.to_le_bytes());
        w = w.wrapping_add(STEP);
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&w.to_le_bytes()[..n]);
}

/// Whether `p` holds the pattern of frame `seq`.
fn pattern_ok(p: &[u8], seq: u64) -> bool {
    let mut w = seed(seq);
    let mut chunks = p.chunks_exact(8);
    let mut ok = true;
    for c in &mut chunks {
        ok &= *c == w.to_le_bytes();
        w = w.wrapping_add(STEP);
    }
    let rest = chunks.remainder();
    ok && *rest == w.to_le_bytes()[..rest.len()]
}

impl Template {
    /// Writes frame `seq` with timestamp `ts_ns` at the start of `buf` and returns its length,
    /// or 0 if `buf` is too small (the caller validated the size against the buffers).
    pub fn write(&self, buf: &mut [u8], seq: u64, ts_ns: u64) -> u16 {
        let len = usize::from(self.len);
        let Some(f) = buf.get_mut(..len) else {
            return 0;
        };
        if len < HEADER_LEN {
            return 0;
        }
        f[0..6].copy_from_slice(&self.dst);
        f[6..12].copy_from_slice(&self.src);
        f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
        f[OFS_MAGIC..OFS_KIND].copy_from_slice(&MAGIC.to_le_bytes());
        f[OFS_KIND] = self.kind as u8;
        f[OFS_KIND + 1] = 0;
        f[OFS_LEN..OFS_SEQ].copy_from_slice(&self.len.to_le_bytes());
        f[OFS_SEQ..OFS_TS].copy_from_slice(&seq.to_le_bytes());
        f[OFS_TS..HEADER_LEN].copy_from_slice(&ts_ns.to_le_bytes());
        write_pattern(&mut f[HEADER_LEN..], seq);
        self.len
    }
}

/// The header fields of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Kind.
    pub kind: Kind,
    /// Sequence number.
    pub seq: u64,
    /// Sender timestamp (ns).
    pub ts_ns: u64,
}

/// Reads the header of a pktgen frame; `None` if `f` is not one (too short, wrong EtherType,
/// magic, kind, or a length field that differs from the frame's length).
pub fn parse(f: &[u8]) -> Option<Header> {
    if f.len() < HEADER_LEN
        || f[12..14] != ETHERTYPE.to_be_bytes()
        || f[OFS_MAGIC..OFS_KIND] != MAGIC.to_le_bytes()
        || f[OFS_KIND + 1] != 0
        || usize::from(u16::from_le_bytes([f[OFS_LEN], f[OFS_LEN + 1]])) != f.len()
    {
        return None;
    }
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&f[o..o + 8]);
        u64::from_le_bytes(b)
    };
    Some(Header {
        kind: Kind::from_u8(f[OFS_KIND])?,
        seq: u64_at(OFS_SEQ),
        ts_ns: u64_at(OFS_TS),
    })
}

/// Reads and fully verifies a frame: header and pattern.
pub fn verify(f: &[u8]) -> Option<Header> {
    let h = parse(f)?;
    pattern_ok(&f[HEADER_LEN..], h.seq).then_some(h)
}

/// Turns a received ping in `f` into its pong, in place: the destination becomes the ping's
/// source, the source becomes `src`. Returns false if `f` is not a ping.
pub fn make_pong(f: &mut [u8], src: &Mac) -> bool {
    if !parse(f).is_some_and(|h| h.kind == Kind::Ping) {
        return false;
    }
    f.copy_within(6..12, 0);
    f[6..12].copy_from_slice(src);
    f[OFS_KIND] = Kind::Pong as u8;
    true
}

/// Loss, order and integrity counters of a receiver (`rx --check`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckCounts {
    /// Frames that verified (header and pattern).
    pub good: u64,
    /// Sequence numbers never seen (gaps, minus late arrivals that filled them).
    pub lost: u64,
    /// Frames older than one already seen (reordered or duplicated).
    pub out_of_order: u64,
    /// Frames that are not intact pktgen data frames.
    pub bad_payload: u64,
}

/// Verifies a stream of data frames whose sequence numbers start at 0.
#[derive(Debug, Clone, Default)]
pub struct Checker {
    next: u64,
    counts: CheckCounts,
}

impl Checker {
    /// A checker expecting sequence number 0 first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one received frame.
    pub fn frame(&mut self, f: &[u8]) {
        let Some(h) = verify(f).filter(|h| h.kind == Kind::Data) else {
            self.counts.bad_payload += 1;
            return;
        };
        self.counts.good += 1;
        if h.seq >= self.next {
            self.counts.lost += h.seq - self.next;
            self.next = h.seq + 1;
        } else {
            self.counts.out_of_order += 1;
            // A late frame fills one of the gaps counted as lost (a duplicate may make this
            // undercount loss; telling them apart would need a per-frame bitmap).
            self.counts.lost = self.counts.lost.saturating_sub(1);
        }
    }

    /// The counters, with the frames the sender was expected to send (`expected`: sequence
    /// numbers `0..expected`) but that never arrived after the last one seen counted as lost.
    pub fn finish(&self, expected: Option<u64>) -> CheckCounts {
        let mut c = self.counts;
        if let Some(n) = expected {
            c.lost += n.saturating_sub(self.next);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(len: u16) -> Template {
        Template {
            dst: [2, 0, 0, 0, 0, 2],
            src: [2, 0, 0, 0, 0, 1],
            len,
            kind: Kind::Data,
        }
    }

    fn frame(len: u16, seq: u64) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        assert_eq!(template(len).write(&mut b, seq, 0), len);
        b.truncate(len.into());
        b
    }

    #[test]
    fn frames_of_every_size_verify() {
        for len in HEADER_LEN as u16..200 {
            let f = frame(len, 1234 + u64::from(len));
            let h = verify(&f).expect("verifies");
            assert_eq!((h.kind, h.seq), (Kind::Data, 1234 + u64::from(len)));
        }
        assert!(verify(&frame(1514, u64::MAX)).is_some());
    }

    #[test]
    fn a_frame_shorter_than_the_header_is_not_written() {
        let mut b = [0u8; 64];
        assert_eq!(template(37).write(&mut b, 0, 0), 0);
        assert_eq!(
            template(65).write(&mut b, 0, 0),
            0,
            "does not fit the buffer"
        );
    }

    #[test]
    fn any_flipped_byte_is_bad_payload() {
        let f = frame(97, 7);
        // Everything but the MACs and the timestamp (free-form) is checked.
        for i in (12..OFS_TS).chain(HEADER_LEN..f.len()) {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(verify(&g).is_none(), "byte {i} flipped");
        }
    }

    #[test]
    fn a_truncated_or_stale_frame_is_bad_payload() {
        let f = frame(128, 9);
        assert!(verify(&f[..127]).is_none(), "length field differs");
        // The same header on another frame's pattern (a stale buffer) fails.
        let mut g = frame(128, 9 + 256);
        g[..HEADER_LEN].copy_from_slice(&f[..HEADER_LEN]);
        assert!(verify(&g).is_none());
    }

    #[test]
    fn a_pong_swaps_addresses_and_keeps_the_payload() {
        let mut t = template(60);
        t.kind = Kind::Ping;
        let mut b = vec![0u8; 60];
        t.write(&mut b, 5, 42);
        let me = [2, 0, 0, 0, 0, 9];
        assert!(make_pong(&mut b, &me));
        assert_eq!(&b[0..6], &t.src);
        assert_eq!(&b[6..12], &me);
        let h = verify(&b).unwrap();
        assert_eq!((h.kind, h.seq, h.ts_ns), (Kind::Pong, 5, 42));
        assert!(!make_pong(&mut b, &me), "a pong is not answered");
    }

    #[test]
    fn checker_counts_gaps_as_lost_and_late_frames_as_out_of_order() {
        let mut c = Checker::new();
        for s in [0, 1, 2, 5, 6, 4, 7] {
            c.frame(&frame(60, s));
        }
        let r = c.finish(None);
        assert_eq!(
            r,
            CheckCounts {
                good: 7,
                lost: 1, // 3; 4 arrived late
                out_of_order: 1,
                bad_payload: 0
            }
        );
        assert_eq!(c.finish(Some(10)).lost, 3, "8 and 9 never came");
    }

    #[test]
    fn checker_counts_foreign_and_corrupt_frames_as_bad_payload() {
        let mut c = Checker::new();
        c.frame(&[0u8; 60]);
        let mut f = frame(60, 0);
        f[50] ^= 1;
        c.frame(&f);
        c.frame(&frame(60, 0));
        let r = c.finish(Some(1));
        assert_eq!((r.good, r.bad_payload, r.lost), (1, 2, 0));
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:70:74:0a:0B:ff"),
            Some([2, 0x70, 0x74, 10, 11, 255])
        );
        for bad in [
            "",
            "02:70:74:00:00",
            "02:70:74:00:00:00:01",
            "0g:00:00:00:00:00",
            "020:0:0:0:0:0",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
