//! Support for the tier-2 tests: frames with sequence numbers and checkable payloads, shared
//! by the test client binary and the tests.

/// Writes a frame `dst` ← `src` carrying `seq`, `len` bytes long; returns the length.
pub fn frame(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> u16 {
    let len = len.clamp(22, buf.len());
    buf[..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&[0x88, 0xb5]);
    buf[14..22].copy_from_slice(&seq.to_le_bytes());
    for (k, b) in buf[22..len].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(k as u8);
    }
    len as u16
}

/// Whether `buf` carries [`frame`]'s ethertype (0x88b5). Other frames on the same switch
/// (the namespaces' paced flood uses 0x88b6; ARP, IPv6 neighbour discovery) are not the
/// test's: a receiver skips them instead of counting them.
pub fn ours(buf: &[u8]) -> bool {
    buf.len() >= 14 && buf[12..14] == [0x88, 0xb5]
}

/// The sequence number of a frame written by [`frame`], if its payload is intact.
pub fn check(buf: &[u8]) -> Option<u64> {
    if buf.len() < 22 {
        return None;
    }
    let seq = u64::from_le_bytes(buf[14..22].try_into().ok()?);
    let ok = buf[22..]
        .iter()
        .enumerate()
        .all(|(k, b)| *b == (seq as u8).wrapping_mul(31).wrapping_add(k as u8));
    ok.then_some(seq)
}

/// A locally administered MAC for station `i`.
pub fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_check_and_corruption_is_caught() {
        let mut b = [0u8; 128];
        let n = frame(&mut b, mac(1), mac(2), 77, 100) as usize;
        assert_eq!(check(&b[..n]), Some(77));
        b[50] ^= 1;
        assert_eq!(check(&b[..n]), None);
    }
}
