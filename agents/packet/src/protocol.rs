//! Messages between the agent and the source, the packet generator, and the
//! compiled context — free of host calls, so they are tested on the host.

/// Length of a packet's payload.
pub const PAYLOAD: usize = 64;
/// Header of every message: a 2-byte tag, 2 zero bytes, the turn (u32 LE).
pub const HEADER: usize = 8;
/// Longest message.
pub const MAX_MESSAGE: usize = HEADER + PAYLOAD;

/// One message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Agent → source: send packet `k`.
    Req(u32),
    /// Source → agent: packet `k`.
    Packet(u32, [u8; PAYLOAD]),
    /// Source → agent: trap now (fault injection).
    Fault(u32),
    /// Source → agent: no more packets.
    End(u32),
}

impl Message {
    /// Encode into `out`; the length used.
    pub fn encode(&self, out: &mut [u8; MAX_MESSAGE]) -> usize {
        let (tag, k) = match self {
            Message::Req(k) => (*b"RQ", *k),
            Message::Packet(k, _) => (*b"PK", *k),
            Message::Fault(k) => (*b"FT", *k),
            Message::End(k) => (*b"EN", *k),
        };
        out[..2].copy_from_slice(&tag);
        out[2..4].copy_from_slice(&[0, 0]);
        out[4..8].copy_from_slice(&k.to_le_bytes());
        match self {
            Message::Packet(_, p) => {
                out[HEADER..].copy_from_slice(p);
                MAX_MESSAGE
            }
            _ => HEADER,
        }
    }

    /// Decode a message, if `b` is one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < HEADER || b[2..4] != [0, 0] {
            return None;
        }
        let k = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match (&b[..2], b.len()) {
            (b"RQ", HEADER) => Some(Message::Req(k)),
            (b"FT", HEADER) => Some(Message::Fault(k)),
            (b"EN", HEADER) => Some(Message::End(k)),
            (b"PK", MAX_MESSAGE) => {
                let mut p = [0u8; PAYLOAD];
                p.copy_from_slice(&b[HEADER..]);
                Some(Message::Packet(k, p))
            }
            _ => None,
        }
    }
}

/// Packet `k`: xorshift64* words seeded by `k`.
pub fn packet(k: u32) -> [u8; PAYLOAD] {
    let mut x = u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = [0u8; PAYLOAD];
    for chunk in out.chunks_exact_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        chunk.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out
}

/// FNV-1a, 64 bits, continuing from `h`.
pub fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a's offset basis.
pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The agent's context after turn `k`: `k`, the running sum, and the
/// packets of the window, oldest first (slot `(k + 1 + j) % W` for
/// `j = 0..W`), concatenated; returns its FNV-1a hash.
pub fn compile(k: u32, sum: u64, window: &[[u8; PAYLOAD]; crate::WINDOW]) -> u64 {
    let mut h = fnv1a(FNV_BASIS, &k.to_le_bytes());
    h = fnv1a(h, &sum.to_le_bytes());
    let w = crate::WINDOW;
    let k = usize::try_from(k).unwrap_or(0);
    for j in 0..w {
        h = fnv1a(h, &window[(k + 1 + j) % w]);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        let mut buf = [0u8; MAX_MESSAGE];
        for m in [
            Message::Req(7),
            Message::Fault(501),
            Message::End(501),
            Message::Packet(3, packet(3)),
        ] {
            let n = m.encode(&mut buf);
            assert_eq!(Message::decode(&buf[..n]), Some(m));
        }
        assert_eq!(Message::decode(b"RQ\0\0\x01\0\0\0x"), None);
        assert_eq!(Message::decode(b"XX\0\0\x01\0\0\0"), None);
    }

    #[test]
    fn packets_differ_by_turn_and_compile_is_order_sensitive() {
        assert_ne!(packet(1), packet(2));
        assert_eq!(packet(9), packet(9));
        let mut w = [[0u8; PAYLOAD]; crate::WINDOW];
        w[0] = packet(1);
        let a = compile(8, 5, &w);
        w.swap(0, 1);
        assert_ne!(a, compile(8, 5, &w));
        assert_ne!(compile(8, 5, &w), compile(8, 6, &w));
    }
}
