//! Lower-case hexadecimal, the one form every side writes and reads: frames
//! and listings (no allocation), and with the `alloc` feature the host tools'
//! strings.
//!
//! Written here rather than taken from the `hex` or `base16ct` crate: the EL2
//! kernel and the EL1 runtime need it without a heap, every crate in their
//! image is one more to audit, and the whole of it is the few lines below,
//! tested here.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Write `bytes` as hex into `out` (which must be twice as long); returns the
/// written prefix of `out`.
pub fn encode<'a>(bytes: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
    let len = bytes.len().checked_mul(2)?;
    let out = out.get_mut(..len)?;
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode exactly `out.len()` bytes from `text`; `None` on any bad digit or a
/// length that does not match.
pub fn decode(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len().checked_mul(2)? {
        return None;
    }
    for (b, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *b = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

/// `bytes` as a lower-case hex string.
#[cfg(feature = "alloc")]
pub fn to_string(bytes: &[u8]) -> alloc::string::String {
    let mut out = alloc::vec![0u8; bytes.len() * 2];
    encode(bytes, &mut out);
    out.into_iter().map(char::from).collect()
}

/// Decode hex of any even length (two digits per byte, either case); `None`
/// on a bad digit or an odd count.
#[cfg(feature = "alloc")]
pub fn decode_vec(text: &[u8]) -> Option<alloc::vec::Vec<u8>> {
    let mut out = alloc::vec![0u8; text.len() / 2];
    // `decode` wants exactly two digits per byte: an odd count is refused.
    decode(text, &mut out)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let mut buf = [0u8; 8];
        let text = super::encode(&[0x01, 0xab, 0xff, 0x00], &mut buf).unwrap();
        assert_eq!(text, b"01abff00");
        let mut back = [0u8; 4];
        super::decode(text, &mut back).unwrap();
        assert_eq!(back, [0x01, 0xab, 0xff, 0x00]);
        assert!(super::decode(b"0g", &mut [0u8; 1]).is_none());
        assert!(super::decode(b"00", &mut [0u8; 2]).is_none());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn strings() {
        assert_eq!(super::to_string(&[0x01, 0xab, 0xff]), "01abff");
        assert_eq!(super::to_string(&[]), "");
        assert_eq!(
            super::decode_vec(b"01ABff"),
            Some(alloc::vec![0x01, 0xab, 0xff])
        );
        assert_eq!(super::decode_vec(b""), Some(alloc::vec![]));
        assert_eq!(super::decode_vec(b"012"), None);
        assert_eq!(super::decode_vec(b"0g"), None);
    }
}
