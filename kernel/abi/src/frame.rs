//! Framing of witness data on the console UART.
//!
//! The hypervisor writes three kinds of line on one serial port:
//!
//! * console text: `[<partition>] text` for a guest (the hypervisor adds the
//!   prefix, so a guest can never start a line of its own) or `rvm: text`;
//! * a witness record: `@W <log> <128 hex digits>`;
//! * a signed checkpoint of a log's head:
//!   `@C <log> <size> <64 hex digits of head> <64 hex digits of root> <128 hex digits of signature>`,
//!   where `size` is the number of records covered (last seq + 1), `head`
//!   the hash-chain head after the last of them and `root` the RFC 6962
//!   Merkle root over them (`rvm-witness` documents the signed note);
//! * the checkpoint signing key: `@K <64 hex digits of the Ed25519 public key>`.
//!
//! `<log>` is the decimal partition id (0 = the hypervisor's own log).
//! Frames always start at the beginning of a line and end with `\n`.

use crate::hex;
use crate::witness::RECORD_LEN;

/// Longest frame line, without the newline.
pub const MAX_FRAME_LEN: usize = 3 + 10 + 1 + 20 + 1 + 64 + 1 + 64 + 1 + 128;

/// A decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Record { log: u32, bytes: [u8; RECORD_LEN] },
    Checkpoint { log: u32, size: u64, head: [u8; 32], root: [u8; 32], signature: [u8; 64] },
    Key { public: [u8; 32] },
}

/// Fixed-capacity line buffer for encoding a frame without a heap.
pub struct FrameLine {
    buf: [u8; MAX_FRAME_LEN + 1],
    len: usize,
}

impl FrameLine {
    fn new() -> Self {
        Self { buf: [0; MAX_FRAME_LEN + 1], len: 0 }
    }

    fn push(&mut self, s: &[u8]) {
        // Frames are built from bounded parts; MAX_FRAME_LEN covers the largest.
        let end = self.len + s.len();
        self.buf[self.len..end].copy_from_slice(s);
        self.len = end;
    }

    fn push_hex(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len() * 2;
        hex::encode(bytes, &mut self.buf[self.len..end]);
        self.len = end;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// The line including its trailing newline.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Frame {
    /// Encode as one line ending in `\n`.
    pub fn encode(&self) -> FrameLine {
        let mut l = FrameLine::new();
        match self {
            Frame::Record { log, bytes } => {
                l.push(b"@W ");
                l.push_dec(u64::from(*log));
                l.push(b" ");
                l.push_hex(bytes);
            }
            Frame::Checkpoint { log, size, head, root, signature } => {
                l.push(b"@C ");
                l.push_dec(u64::from(*log));
                l.push(b" ");
                l.push_dec(*size);
                l.push(b" ");
                l.push_hex(head);
                l.push(b" ");
                l.push_hex(root);
                l.push(b" ");
                l.push_hex(signature);
            }
            Frame::Key { public } => {
                l.push(b"@K ");
                l.push_hex(public);
            }
        }
        l.push(b"\n");
        l
    }

    /// Decode one line (without or with its `\n`/`\r\n`). `None` means the
    /// line is not a frame (console text) or is a damaged frame.
    pub fn parse(line: &str) -> Option<Frame> {
        let line = line.trim_end_matches(['\n', '\r']);
        let mut parts = line.split(' ');
        let tag = parts.next()?;
        let frame = match tag {
            "@W" => {
                let log = parts.next()?.parse().ok()?;
                let mut bytes = [0u8; RECORD_LEN];
                hex::decode(parts.next()?.as_bytes(), &mut bytes)?;
                Frame::Record { log, bytes }
            }
            "@C" => {
                let log = parts.next()?.parse().ok()?;
                let size = parts.next()?.parse().ok()?;
                let mut head = [0u8; 32];
                hex::decode(parts.next()?.as_bytes(), &mut head)?;
                let mut root = [0u8; 32];
                hex::decode(parts.next()?.as_bytes(), &mut root)?;
                let mut signature = [0u8; 64];
                hex::decode(parts.next()?.as_bytes(), &mut signature)?;
                Frame::Checkpoint { log, size, head, root, signature }
            }
            "@K" => {
                let mut public = [0u8; 32];
                hex::decode(parts.next()?.as_bytes(), &mut public)?;
                Frame::Key { public }
            }
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(frame)
    }

    /// Whether a line is meant as a frame (starts with a frame tag), damaged or not.
    pub fn is_frame_line(line: &str) -> bool {
        line.starts_with("@W ") || line.starts_with("@C ") || line.starts_with("@K ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Record { log: 4_000_000_000, bytes: [0x5a; RECORD_LEN] },
            Frame::Checkpoint {
                log: u32::MAX,
                size: u64::MAX,
                head: [1; 32],
                root: [3; 32],
                signature: [2; 64],
            },
            Frame::Key { public: [9; 32] },
        ];
        for f in frames {
            let line = f.encode();
            let text = core::str::from_utf8(line.as_bytes()).unwrap();
            assert!(text.ends_with('\n'));
            assert!(text.len() <= MAX_FRAME_LEN + 1);
            assert_eq!(Frame::parse(text), Some(f));
        }
    }

    #[test]
    fn console_text_and_damage_are_not_frames() {
        assert_eq!(Frame::parse("[agent-a] hello"), None);
        assert_eq!(Frame::parse("@W 1 abc"), None);
        assert_eq!(Frame::parse("@K 00 extra"), None);
        assert!(Frame::is_frame_line("@W 1 abc"));
        // A checkpoint without its Merkle root is damaged, not a frame.
        let mut old = [b'a'; 7 + 64 + 1 + 128];
        old[..7].copy_from_slice(b"@C 0 1 ");
        old[7 + 64] = b' ';
        assert_eq!(Frame::parse(core::str::from_utf8(&old).unwrap()), None);
    }

    #[test]
    fn largest_checkpoint_frame_fills_max_frame_len() {
        let f = Frame::Checkpoint {
            log: u32::MAX,
            size: u64::MAX,
            head: [0; 32],
            root: [0; 32],
            signature: [0; 64],
        };
        assert_eq!(f.encode().as_bytes().len(), MAX_FRAME_LEN + 1);
    }
}
