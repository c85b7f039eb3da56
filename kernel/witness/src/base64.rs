//! Standard base64 (RFC 4648 §4, with padding), as signed notes use it.
//! Fixed-size encode for the kernel; strict decode (canonical padding,
//! no whitespace) for the host.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Length of the encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Encode `data` into the front of `out`; returns the written prefix, or
/// `None` if `out` is too short.
pub fn encode<'a>(data: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
    let out = out.get_mut(..encoded_len(data.len()))?;
    for (chunk, quad) in data.chunks(3).zip(out.chunks_exact_mut(4)) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, q) in quad.iter_mut().enumerate() {
            // Six bits at a time, masked, so the index is always < 64.
            *q = ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize];
        }
        if chunk.len() < 3 {
            quad[3] = b'=';
        }
        if chunk.len() < 2 {
            quad[2] = b'=';
        }
    }
    Some(out)
}

fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decode `text` into exactly `out.len()` bytes. Refuses a wrong length,
/// characters outside the alphabet, misplaced padding and non-zero pad bits
/// (so each byte string has exactly one accepted encoding).
pub fn decode(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != encoded_len(out.len()) {
        return None;
    }
    let tail = out.len() % 3;
    let quads = text.chunks_exact(4).count();
    for (qi, (quad, dst)) in text.chunks_exact(4).zip(out.chunks_mut(3)).enumerate() {
        let last = qi + 1 == quads;
        let pads = match (last, tail) {
            (true, 1) => 2,
            (true, 2) => 1,
            _ => 0,
        };
        let mut n = 0u32;
        for (i, &c) in quad.iter().enumerate() {
            let v = if i >= 4 - pads {
                if c != b'=' {
                    return None;
                }
                0
            } else {
                value(c)?
            };
            n = n << 6 | v;
        }
        let be = n.to_be_bytes();
        let bytes = [be[1], be[2], be[3]];
        // Pad bits must be zero.
        if bytes[dst.len()..].iter().any(|&b| b != 0) {
            return None;
        }
        dst.copy_from_slice(&bytes[..dst.len()]);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, text) in cases {
            let mut buf = [0u8; 16];
            assert_eq!(encode(raw, &mut buf).unwrap(), text.as_bytes());
            let mut back = [0u8; 6];
            decode(text.as_bytes(), &mut back[..raw.len()]).unwrap();
            assert_eq!(&back[..raw.len()], raw);
        }
    }

    #[test]
    fn decode_is_strict() {
        let mut out = [0u8; 1];
        assert!(decode(b"Zh==", &mut out).is_none(), "non-zero pad bits");
        assert!(decode(b"Zg=", &mut out).is_none(), "short");
        assert!(decode(b"Z===", &mut out).is_none(), "too much padding");
        assert!(decode(b"Zg*=", &mut out).is_none(), "bad character");
        let mut two = [0u8; 2];
        assert!(decode(b"Zm8A", &mut two).is_none(), "missing padding");
        assert!(decode(b"Zm9v", &mut [0u8; 2]).is_none(), "length mismatch");
        let mut three = [0u8; 3];
        assert!(decode(b"Zm=v", &mut three).is_none(), "padding inside");
    }

    #[test]
    fn round_trip_all_lengths() {
        let data: std::vec::Vec<u8> = (0..=255u8).collect();
        for n in 0..70 {
            let mut buf = [0u8; 100];
            let text = encode(&data[n..2 * n], &mut buf).unwrap().to_vec();
            let mut back = std::vec![0u8; n];
            decode(&text, &mut back).unwrap();
            assert_eq!(back, &data[n..2 * n]);
        }
        assert!(encode(b"abcd", &mut [0u8; 7]).is_none());
    }
}
