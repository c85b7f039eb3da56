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
//! * the checkpoint signing key: `@K <64 hex digits of the Ed25519 public key>`;
//! * the hypervisor's exit status, its last line before it powers off with
//!   PSCI `SYSTEM_OFF`: `@X <decimal code>` ([`ExitFrame`]; 0 = a clean run).
//!
//! `<log>` is the decimal partition id (0 = the hypervisor's own log).
//! Frames always start at the beginning of a line and end with `\n`. Only
//! the hypervisor starts lines, so a whole line that parses as a frame is the
//! hypervisor's; a guest's text always follows its `[name] ` prefix.
//!
//! One frame travels the other way, from the host into the UART's receive
//! side: an operator's signed order,
//! `@O <nonce> <order> <partition name> <128 hex digits of signature>`
//! ([`OrderFrame`]).

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

/// The hypervisor's exit status: `@X <code>`, printed once, just before it
/// powers off (PSCI `SYSTEM_OFF`, after which QEMU exits 0 whatever the
/// code). The code says how the run ended: 0 a clean run, anything else why
/// not (docs/ARCHITECTURE.md lists them). A host reads the run's status from
/// this line only, and only as a whole line: a machine that stops without
/// it did not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitFrame {
    pub code: u32,
}

impl ExitFrame {
    /// How the line starts.
    pub const TAG: &'static str = "@X ";

    /// Encode as one line ending in `\n`.
    pub fn encode(&self) -> FrameLine {
        let mut l = FrameLine::new();
        l.push(Self::TAG.as_bytes());
        l.push_dec(u64::from(self.code));
        l.push(b"\n");
        l
    }

    /// Decode one whole line (with or without its `\n`/`\r\n`): the tag at
    /// its very start, then decimal digits only, up to the end of the line.
    /// `None` for anything else, a damaged exit frame included.
    pub fn parse(line: &str) -> Option<ExitFrame> {
        let digits = line.trim_end_matches(['\n', '\r']).strip_prefix(Self::TAG)?;
        if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ExitFrame { code: digits.parse().ok()? })
    }

    /// Whether a line is meant as an exit frame (damaged or not).
    pub fn is_exit_line(line: &str) -> bool {
        line.starts_with(Self::TAG)
    }
}

/// What an operator may order from the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OrderKind {
    /// Clear a partition's fence (F3): it resumes from its last snapshot.
    Unfence = 1,
    /// Evict a partition (F4).
    Evict = 2,
    /// End the run: every log checkpointed and signed, then power off. Its
    /// target is the hypervisor itself ([`HYPERVISOR_TARGET`]).
    Shutdown = 3,
    /// Report the hypervisor's state on its answer line (CPUs, memory,
    /// every partition's state and log size). Its target is the hypervisor.
    Status = 4,
}

/// The target name of an order for the hypervisor itself (no partition may
/// take this name).
pub const HYPERVISOR_TARGET: &str = "hypervisor";

impl OrderKind {
    pub const ALL: [OrderKind; 4] = [OrderKind::Unfence, OrderKind::Evict, OrderKind::Shutdown, OrderKind::Status];

    /// The word on the `@O` line and on the loader's command line.
    pub const fn name(self) -> &'static str {
        match self {
            OrderKind::Unfence => "unfence",
            OrderKind::Evict => "evict",
            OrderKind::Shutdown => "shutdown",
            OrderKind::Status => "status",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

/// Domain-separation prefix of a signed order.
pub const ORDER_TAG: [u8; 16] = *b"RVM-OPERATOR-ORD";
/// Length of the message an order's signature covers.
pub const ORDER_MESSAGE_LEN: usize = 96;
/// Longest `@O` line, without its newline.
pub const MAX_ORDER_LINE: usize = 3 + 20 + 1 + 7 + 1 + 32 + 1 + 128;

/// An operator's order as it arrives on the UART's receive side:
/// `@O <nonce> <order> <partition name> <signature>`, where `nonce` is a
/// decimal `u64` that must exceed every nonce the hypervisor accepted since
/// it booted, and `signature` the Ed25519 signature, by the operator key the
/// bundle binds ([`EntryKind::OperatorKey`](crate::bundle::EntryKind::OperatorKey)),
/// over [`OrderFrame::message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderFrame {
    pub kind: OrderKind,
    pub nonce: u64,
    /// The target's name, NUL-padded (a safe identifier).
    pub partition: [u8; 32],
    pub signature: [u8; 64],
}

impl OrderFrame {
    /// The signed message (96 bytes, little-endian):
    ///
    /// | offset | size | field |
    /// |---|---|---|
    /// | 0 | 16 | [`ORDER_TAG`] |
    /// | 16 | 1 | order ([`OrderKind`] code) |
    /// | 17 | 7 | reserved, 0 |
    /// | 24 | 8 | nonce |
    /// | 32 | 32 | partition name, NUL-padded |
    /// | 64 | 32 | SHA-256 of the bundle the hypervisor booted (an order is good for one deployment only) |
    pub fn message(kind: OrderKind, nonce: u64, partition: &[u8; 32], bundle_digest: &[u8; 32]) -> [u8; ORDER_MESSAGE_LEN] {
        let mut m = [0u8; ORDER_MESSAGE_LEN];
        m[0..16].copy_from_slice(&ORDER_TAG);
        m[16] = kind as u8;
        m[24..32].copy_from_slice(&nonce.to_le_bytes());
        m[32..64].copy_from_slice(partition);
        m[64..96].copy_from_slice(bundle_digest);
        m
    }

    /// The partition name as text.
    pub fn partition_name(&self) -> &str {
        let end = self.partition.iter().position(|&b| b == 0).unwrap_or(32);
        core::str::from_utf8(&self.partition[..end]).unwrap_or("?")
    }

    /// Encode as one line ending in `\n`.
    pub fn encode(&self) -> FrameLine {
        let mut l = FrameLine::new();
        l.push(b"@O ");
        l.push_dec(self.nonce);
        l.push(b" ");
        l.push(self.kind.name().as_bytes());
        l.push(b" ");
        l.push(self.partition_name().as_bytes());
        l.push(b" ");
        l.push_hex(&self.signature);
        l.push(b"\n");
        l
    }

    /// Decode one `@O` line (with or without its `\n`/`\r\n`). `None` for
    /// anything else or a damaged line: an unknown order, a name that is not
    /// a safe identifier, a nonce of 0, a signature of the wrong length.
    pub fn parse(line: &str) -> Option<OrderFrame> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.len() > MAX_ORDER_LINE {
            return None;
        }
        let mut parts = line.split(' ');
        if parts.next()? != "@O" {
            return None;
        }
        let nonce: u64 = parts.next()?.parse().ok().filter(|&n| n != 0)?;
        let kind = OrderKind::from_name(parts.next()?)?;
        let name = parts.next()?;
        crate::ident::check(name).ok()?;
        let mut partition = [0u8; 32];
        partition.get_mut(..name.len())?.copy_from_slice(name.as_bytes());
        let mut signature = [0u8; 64];
        hex::decode(parts.next()?.as_bytes(), &mut signature)?;
        if parts.next().is_some() {
            return None;
        }
        Some(OrderFrame { kind, nonce, partition, signature })
    }

    /// Whether a line is meant as an order (damaged or not).
    pub fn is_order_line(line: &str) -> bool {
        line.starts_with("@O ")
    }

    /// The binary form (the control channel's `Order` payload,
    /// [`crate::control`]): nonce u64 LE, order code u8, partition name
    /// (32, NUL-padded), signature (64).
    pub fn to_bytes(&self) -> [u8; ORDER_BYTES] {
        let mut b = [0u8; ORDER_BYTES];
        b[0..8].copy_from_slice(&self.nonce.to_le_bytes());
        b[8] = self.kind as u8;
        b[9..41].copy_from_slice(&self.partition);
        b[41..105].copy_from_slice(&self.signature);
        b
    }

    /// Decode the binary form; `None` under the same rules as
    /// [`OrderFrame::parse`] (a nonce of 0, an unknown order, a name that
    /// is not a safe identifier or not NUL-padded).
    pub fn from_bytes(b: &[u8]) -> Option<OrderFrame> {
        if b.len() != ORDER_BYTES {
            return None;
        }
        let nonce = u64::from_le_bytes(b[0..8].try_into().ok()?);
        let kind = OrderKind::from_u8(b[8])?;
        let mut partition = [0u8; 32];
        partition.copy_from_slice(&b[9..41]);
        let end = partition.iter().position(|&c| c == 0).unwrap_or(32);
        if nonce == 0 || partition[end..].iter().any(|&c| c != 0) {
            return None;
        }
        crate::ident::check(core::str::from_utf8(&partition[..end]).ok()?).ok()?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[41..105]);
        Some(OrderFrame { kind, nonce, partition, signature })
    }
}

/// Bytes of an order's binary form ([`OrderFrame::to_bytes`]).
pub const ORDER_BYTES: usize = 8 + 1 + 32 + 64;

/// The order code an admission's `OperatorOrder` and `OrderRefused`
/// records carry (an admission is not an `@O` order: it travels as a
/// control-channel `Admission` frame, [`crate::control`]).
pub const ADMISSION_ORDER_CODE: u8 = 16;

/// The `args` of an `OperatorOrder` or `OrderRefused` record (16 bytes):
/// order code u8, 7 reserved bytes, nonce u64 LE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderArgs {
    /// [`OrderKind`] code (0 when the line named no known order).
    pub order: u8,
    pub nonce: u64,
}

impl OrderArgs {
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.order;
        b[8..16].copy_from_slice(&self.nonce.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let mut n = [0u8; 8];
        n.copy_from_slice(&b[8..16]);
        Self { order: b[0], nonce: u64::from_le_bytes(n) }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
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
    fn exit_frames_round_trip_and_only_whole_lines_count() {
        for code in [0, 2, 101, u32::MAX] {
            let f = ExitFrame { code };
            let line = f.encode();
            let text = core::str::from_utf8(line.as_bytes()).unwrap();
            assert!(text.starts_with("@X ") && text.ends_with('\n'));
            assert!(text.len() <= MAX_FRAME_LEN + 1);
            assert!(ExitFrame::is_exit_line(text));
            assert_eq!(ExitFrame::parse(text), Some(f));
            assert_eq!(Frame::parse(text), None, "not a witness frame");
        }
        assert_eq!(ExitFrame::parse("@X 7\r\n"), Some(ExitFrame { code: 7 }));
        // A guest's line never starts with the tag: its prefix comes first.
        assert_eq!(ExitFrame::parse("[agent-a] @X 0"), None);
        assert_eq!(ExitFrame::parse(" @X 0"), None);
        for damaged in ["@X", "@X ", "@X +1", "@X -1", "@X 1 2", "@X 0x1", "@X 4294967296", "@X 1\n@X 0", "@X  0", "@X 0 "] {
            assert_eq!(ExitFrame::parse(damaged), None, "{damaged:?}");
        }
        assert!(ExitFrame::is_exit_line("@X damaged"));
    }

    #[test]
    fn orders_round_trip_and_damage_is_refused() {
        let mut partition = [0u8; 32];
        partition[..7].copy_from_slice(b"agent-a");
        for kind in OrderKind::ALL {
            let o = OrderFrame { kind, nonce: u64::MAX, partition, signature: [0xab; 64] };
            let line = o.encode();
            let text = core::str::from_utf8(line.as_bytes()).unwrap();
            assert!(text.starts_with("@O ") && text.ends_with('\n'));
            assert_eq!(OrderFrame::parse(text), Some(o));
        }
        let sig = "ab".repeat(64);
        assert!(OrderFrame::parse(&alloc_free_line("@O 1 unfence agent-a ", &sig)).is_some());
        assert_eq!(OrderFrame::parse(&alloc_free_line("@O 0 unfence agent-a ", &sig)), None, "nonce 0");
        assert_eq!(OrderFrame::parse(&alloc_free_line("@O 1 reboot agent-a ", &sig)), None, "unknown order");
        assert_eq!(OrderFrame::parse(&alloc_free_line("@O 1 evict ../x ", &sig)), None, "unsafe name");
        assert_eq!(OrderFrame::parse(&alloc_free_line("@O 1 evict agent-a ", &sig[2..])), None, "short signature");
        assert_eq!(OrderFrame::parse("@W 1 00"), None);
        // The message binds every field.
        let m = OrderFrame::message(OrderKind::Evict, 7, &partition, &[9; 32]);
        assert_ne!(m, OrderFrame::message(OrderKind::Unfence, 7, &partition, &[9; 32]));
        assert_ne!(m, OrderFrame::message(OrderKind::Evict, 8, &partition, &[9; 32]));
        assert_ne!(m, OrderFrame::message(OrderKind::Evict, 7, &partition, &[8; 32]));
        assert_eq!(OrderArgs::from_bytes(&OrderArgs { order: 2, nonce: 5 }.to_bytes()), OrderArgs { order: 2, nonce: 5 });
    }

    fn alloc_free_line(prefix: &str, rest: &str) -> std::string::String {
        std::format!("{prefix}{rest}")
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
