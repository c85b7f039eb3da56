//! Signed checkpoints of a log, in the C2SP signed-note / tlog-checkpoint
//! format.
//!
//! The signed text (the note *body*) of a checkpoint of log 3 after 1000
//! records is exactly four lines, each ending in `\n`:
//!
//! ```text
//! rvm.witness/3
//! 1000
//! <base64 of the 32-byte RFC 6962 Merkle root of records 0..1000>
//! head <base64 of the 32-byte chain head after record 999>
//! ```
//!
//! The first three lines are a C2SP `tlog-checkpoint` (origin, tree size,
//! root hash); the fourth is an extension line carrying the hash-chain head.
//! The note is the body, one blank line, and one signature line:
//!
//! ```text
//! — rvm.witness <base64 of (4-byte key id ‖ 64-byte Ed25519 signature)>
//! ```
//!
//! (`—` is U+2014 EM DASH, then a space.) The signature is Ed25519 over the
//! body bytes. Further signature lines with other key names (cosignatures)
//! are allowed and ignored. An empty log's checkpoint has size 0, root
//! `SHA-256("")` and head 32 zero bytes.

use crate::base64;
use crate::hash::{Hash, HASH_LEN};
use crate::key::{CheckpointSigner, KeyId, PublicKey, SignatureError, KEY_NAME, SIGNATURE_LEN};
use crate::log::LogId;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::num::NonZeroU64;
use rvm_abi::frame::Frame;
use rvm_abi::witness::{flags, KernelEvent, WitnessRecord};

/// Origin line prefix; the log id follows in decimal.
pub const ORIGIN_PREFIX: &str = "rvm.witness/";
/// Prefix of the extension line that carries the chain head.
pub const HEAD_LINE_PREFIX: &str = "head ";
/// Start of a signature line: U+2014 EM DASH and a space.
pub const SIGNATURE_LINE_PREFIX: &str = "\u{2014} ";
/// Longest note body: origin with a 10-digit id, a 20-digit size, two
/// base64 hashes.
pub const NOTE_BODY_MAX: usize =
    ORIGIN_PREFIX.len() + 10 + 1 + 20 + 1 + 44 + 1 + HEAD_LINE_PREFIX.len() + 44 + 1;

/// What a checkpoint states about a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log (partition id; 0 = the hypervisor's log).
    pub log: LogId,
    /// Records covered: the last one has seq `size - 1`.
    pub size: u64,
    /// RFC 6962 root over records `0..size`.
    pub root: Hash,
    /// Chain head after record `size - 1`.
    pub head: Hash,
}

/// A checkpoint and its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The key the signature line names.
    pub key_id: KeyId,
    pub signature: [u8; SIGNATURE_LEN],
}

/// The signed text of a checkpoint, built without a heap.
pub struct NoteBody {
    buf: [u8; NOTE_BODY_MAX],
    len: usize,
}

impl NoteBody {
    fn push(&mut self, s: &[u8]) {
        // Every part is bounded; NOTE_BODY_MAX is the sum of the maxima.
        let end = self.len + s.len();
        self.buf[self.len..end].copy_from_slice(s);
        self.len = end;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789"[(v % 10) as usize];
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_b64(&mut self, h: &Hash) {
        let mut b = [0u8; base64::encoded_len(HASH_LEN)];
        if let Some(text) = base64::encode(&h.0, &mut b) {
            self.push(text);
        }
    }

    /// The body bytes (what is signed).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The body as text (always ASCII).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl Checkpoint {
    /// The note body this checkpoint is signed as.
    pub fn body(&self) -> NoteBody {
        let mut b = NoteBody {
            buf: [0; NOTE_BODY_MAX],
            len: 0,
        };
        b.push(ORIGIN_PREFIX.as_bytes());
        b.push_dec(u64::from(self.log.0));
        b.push(b"\n");
        b.push_dec(self.size);
        b.push(b"\n");
        b.push_b64(&self.root);
        b.push(b"\n");
        b.push(HEAD_LINE_PREFIX.as_bytes());
        b.push_b64(&self.head);
        b.push(b"\n");
        b
    }

    /// Sign with the log key.
    pub fn sign(&self, signer: &CheckpointSigner) -> SignedCheckpoint {
        SignedCheckpoint {
            checkpoint: *self,
            key_id: signer.public_key().key_id(),
            signature: signer.sign(self.body().as_bytes()),
        }
    }
}

impl SignedCheckpoint {
    /// Check the signature: the note must name `key` and verify under it.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        let expected = key.key_id();
        if self.key_id != expected {
            return Err(SignatureError::WrongKey {
                expected,
                found: self.key_id,
            });
        }
        key.verify(self.checkpoint.body().as_bytes(), &self.signature)
    }

    /// The `@C` frame that carries this checkpoint on the console UART.
    pub fn to_frame(&self) -> Frame {
        Frame::Checkpoint {
            log: self.checkpoint.log.0,
            size: self.checkpoint.size,
            head: self.checkpoint.head.0,
            root: self.checkpoint.root.0,
            signature: self.signature,
        }
    }

    /// A checkpoint from its `@C` frame. The frame carries no key id: it is
    /// the id of `key`, the key the same stream announced with `@K`.
    pub fn from_frame(frame: &Frame, key: &PublicKey) -> Option<Self> {
        match *frame {
            Frame::Checkpoint {
                log,
                size,
                head,
                root,
                signature,
            } => Some(Self {
                checkpoint: Checkpoint {
                    log: LogId(log),
                    size,
                    root: Hash(root),
                    head: Hash(head),
                },
                key_id: key.key_id(),
                signature,
            }),
            _ => None,
        }
    }

    /// The whole signed note: body, blank line, signature line.
    pub fn to_note(&self) -> String {
        let mut raw = [0u8; 4 + SIGNATURE_LEN];
        raw[..4].copy_from_slice(&self.key_id.0);
        raw[4..].copy_from_slice(&self.signature);
        let mut b64 = [0u8; base64::encoded_len(4 + SIGNATURE_LEN)];
        let sig = base64::encode(&raw, &mut b64).unwrap_or_default();
        let mut s = String::with_capacity(NOTE_BODY_MAX + 128);
        s.push_str(self.checkpoint.body().as_str());
        s.push('\n');
        s.push_str(SIGNATURE_LINE_PREFIX);
        s.push_str(KEY_NAME);
        s.push(' ');
        s.push_str(core::str::from_utf8(sig).unwrap_or(""));
        s.push('\n');
        s
    }
}

/// Why a note's text was refused. `line` is 1-based within the text given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteError {
    pub line: usize,
    pub reason: NoteErrorKind,
}

/// What was wrong with a note line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteErrorKind {
    /// The origin line is not `rvm.witness/<decimal log id>`.
    Origin,
    /// The size line is not a canonical decimal `u64`.
    Size,
    /// The root line is not 32 bytes of base64.
    Root,
    /// The extension line is not `head <base64 of 32 bytes>`.
    Head,
    /// An unexpected line where the blank line between body and signatures belongs.
    MissingBlankLine,
    /// A signature line is malformed.
    SignatureLine,
    /// No signature line by [`KEY_NAME`].
    NoSignature,
    /// The text ended inside a note, or a line has no `\n`.
    Truncated,
}

impl fmt::Display for NoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            NoteErrorKind::Origin => "expected the origin line `rvm.witness/<log id>`",
            NoteErrorKind::Size => "expected the tree size in decimal",
            NoteErrorKind::Root => "expected the base64 Merkle root",
            NoteErrorKind::Head => "expected `head <base64 chain head>`",
            NoteErrorKind::MissingBlankLine => "expected the blank line before the signatures",
            NoteErrorKind::SignatureLine => "malformed signature line",
            NoteErrorKind::NoSignature => "no signature line by rvm.witness",
            NoteErrorKind::Truncated => "the note is cut short",
        };
        write!(f, "line {}: {what}", self.line)
    }
}

fn parse_dec(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

fn parse_b64_hash(s: &str) -> Option<Hash> {
    let mut h = [0u8; HASH_LEN];
    base64::decode(s.as_bytes(), &mut h)?;
    Some(Hash(h))
}

/// Parse every note in `text`: notes one after another (blank lines between
/// them are allowed). Stops at the first malformed note.
pub fn parse_notes(text: &str) -> Result<Vec<SignedCheckpoint>, NoteError> {
    let mut lines = Lines {
        rest: text,
        line: 0,
    };
    let mut out = Vec::new();
    loop {
        // Skip blank separators.
        while lines.rest.starts_with('\n') {
            lines.next();
        }
        if lines.rest.is_empty() {
            return Ok(out);
        }
        out.push(parse_one(&mut lines)?);
    }
}

/// Parse exactly one note (trailing blank lines allowed).
pub fn parse_note(text: &str) -> Result<SignedCheckpoint, NoteError> {
    let mut v = parse_notes(text)?;
    match (v.pop(), v.is_empty()) {
        (Some(n), true) => Ok(n),
        (None, _) => Err(NoteError {
            line: 1,
            reason: NoteErrorKind::Truncated,
        }),
        (Some(_), false) => Err(NoteError {
            line: 1,
            reason: NoteErrorKind::MissingBlankLine,
        }),
    }
}

struct Lines<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Lines<'a> {
    /// The next whole line without its `\n`; `None` at the end or when the
    /// last line has no newline.
    fn next(&mut self) -> Option<&'a str> {
        let i = self.rest.find('\n')?;
        let (l, r) = self.rest.split_at(i);
        self.rest = &r[1..];
        self.line += 1;
        Some(l)
    }

    fn need(&mut self, kind: NoteErrorKind) -> Result<&'a str, NoteError> {
        let line = self.line + 1;
        self.next().ok_or(NoteError { line, reason: kind })
    }

    fn err(&self, reason: NoteErrorKind) -> NoteError {
        NoteError {
            line: self.line,
            reason,
        }
    }
}

fn parse_one(lines: &mut Lines<'_>) -> Result<SignedCheckpoint, NoteError> {
    use NoteErrorKind as K;
    let origin = lines.need(K::Truncated)?;
    let log = origin
        .strip_prefix(ORIGIN_PREFIX)
        .and_then(parse_dec)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(lines.err(K::Origin))?;
    let size = parse_dec(lines.need(K::Truncated)?).ok_or(lines.err(K::Size))?;
    let root = parse_b64_hash(lines.need(K::Truncated)?).ok_or(lines.err(K::Root))?;
    let head = lines
        .need(K::Truncated)?
        .strip_prefix(HEAD_LINE_PREFIX)
        .and_then(parse_b64_hash)
        .ok_or(lines.err(K::Head))?;
    if !lines.need(K::Truncated)?.is_empty() {
        return Err(lines.err(K::MissingBlankLine));
    }
    let mut ours: Option<(KeyId, [u8; SIGNATURE_LEN])> = None;
    while lines.rest.starts_with(SIGNATURE_LINE_PREFIX) {
        let l = lines.need(K::Truncated)?;
        let body = &l[SIGNATURE_LINE_PREFIX.len()..];
        let (name, sig) = body.split_once(' ').ok_or(lines.err(K::SignatureLine))?;
        if name.is_empty() || sig.contains(' ') {
            return Err(lines.err(K::SignatureLine));
        }
        if name != KEY_NAME || ours.is_some() {
            continue;
        }
        let mut raw = [0u8; 4 + SIGNATURE_LEN];
        base64::decode(sig.as_bytes(), &mut raw).ok_or(lines.err(K::SignatureLine))?;
        let mut id = [0u8; 4];
        id.copy_from_slice(&raw[..4]);
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(&raw[4..]);
        ours = Some((KeyId(id), s));
    }
    let (key_id, signature) = ours.ok_or(NoteError {
        line: lines.line + 1,
        reason: K::NoSignature,
    })?;
    Ok(SignedCheckpoint {
        checkpoint: Checkpoint {
            log: LogId(log),
            size,
            root,
            head,
        },
        key_id,
        signature,
    })
}

/// When the kernel signs a checkpoint of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After every this many records (`None`: never by count).
    pub every: Option<NonZeroU64>,
    /// After every record of a proof-tier-3 operation.
    pub on_p3: bool,
    /// After the [`KernelEvent::Shutdown`] record.
    pub on_shutdown: bool,
}

impl CheckpointPolicy {
    /// Records between count-triggered checkpoints by default. Each
    /// checkpoint costs one Ed25519 signature on the device and one
    /// verification (~40 µs on the host, about 400 chain steps) offline;
    /// 1024 keeps that under a third of the verifier's per-record cost,
    /// while bounding the unsigned tail after a crash to 1023 records.
    pub const DEFAULT_INTERVAL: NonZeroU64 = match NonZeroU64::new(1024) {
        Some(n) => n,
        None => unreachable!(),
    };

    /// Every `n` records, on P3 and at shutdown.
    pub const fn every(n: NonZeroU64) -> Self {
        Self {
            every: Some(n),
            on_p3: true,
            on_shutdown: true,
        }
    }

    /// Whether a checkpoint must follow `record`, which makes the log
    /// `size_after` records long. A record whose caller already set
    /// [`flags::CHECKPOINTED`] always gets one.
    pub fn is_due(&self, record: &WitnessRecord, size_after: u64) -> bool {
        record.flags & flags::CHECKPOINTED != 0
            || self
                .every
                .is_some_and(|n| size_after.is_multiple_of(n.get()))
            || (self.on_p3 && record.tier == rvm_abi::ProofTier::P3 as u8)
            || (self.on_shutdown && record.op == KernelEvent::Shutdown as u16)
    }
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self::every(Self::DEFAULT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::witness::{Outcome, WitnessOp};
    use rvm_abi::Hypercall;

    fn sample() -> (CheckpointSigner, SignedCheckpoint) {
        let signer = CheckpointSigner::from_seed(&[1; 32]);
        let cp = Checkpoint {
            log: LogId(3),
            size: 1000,
            root: Hash([0xab; 32]),
            head: Hash([0xcd; 32]),
        };
        let signed = cp.sign(&signer);
        (signer, signed)
    }

    #[test]
    fn note_text_is_exactly_as_documented() {
        let (signer, signed) = sample();
        let note = signed.to_note();
        let mut lines = note.split('\n');
        assert_eq!(lines.next(), Some("rvm.witness/3"));
        assert_eq!(lines.next(), Some("1000"));
        assert_eq!(
            lines.next(),
            Some("q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=")
        );
        assert_eq!(
            lines.next(),
            Some("head zc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc0=")
        );
        assert_eq!(lines.next(), Some(""));
        let sig_line = lines.next().unwrap();
        assert!(sig_line.starts_with("\u{2014} rvm.witness "));
        assert_eq!(lines.next(), Some(""));
        assert_eq!(lines.next(), None);
        // The signature verifies over the body and names the key.
        signed.verify(&signer.public_key()).unwrap();
        let mut raw = [0u8; 68];
        base64::decode(sig_line.rsplit(' ').next().unwrap().as_bytes(), &mut raw).unwrap();
        assert_eq!(raw[..4], signer.public_key().key_id().0);
        assert_eq!(parse_note(&note), Ok(signed));
    }

    #[test]
    fn changed_fields_or_other_keys_do_not_verify() {
        let (signer, signed) = sample();
        let key = signer.public_key();
        let mut s = signed;
        s.checkpoint.size += 1;
        assert_eq!(s.verify(&key), Err(SignatureError::Invalid));
        let mut s = signed;
        s.checkpoint.log = LogId(4);
        assert_eq!(s.verify(&key), Err(SignatureError::Invalid));
        let mut s = signed;
        s.checkpoint.root.0[31] ^= 1;
        assert_eq!(s.verify(&key), Err(SignatureError::Invalid));
        let mut s = signed;
        s.checkpoint.head.0[0] ^= 0x80;
        assert_eq!(s.verify(&key), Err(SignatureError::Invalid));
        let mut s = signed;
        s.signature[10] ^= 4;
        assert_eq!(s.verify(&key), Err(SignatureError::Invalid));
        let other = CheckpointSigner::from_seed(&[2; 32]);
        assert!(matches!(
            signed.verify(&other.public_key()),
            Err(SignatureError::WrongKey { .. })
        ));
        // Re-signed by another key under our key id: the signature fails.
        let mut forged = signed.checkpoint.sign(&other);
        forged.key_id = key.key_id();
        assert_eq!(forged.verify(&key), Err(SignatureError::Invalid));
    }

    #[test]
    fn frames_round_trip() {
        let (signer, signed) = sample();
        let f = signed.to_frame();
        let line = f.encode();
        let parsed = Frame::parse(core::str::from_utf8(line.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            SignedCheckpoint::from_frame(&parsed, &signer.public_key()),
            Some(signed)
        );
    }

    #[test]
    fn several_notes_with_cosignatures_parse() {
        let (_, a) = sample();
        let mut b = a;
        b.checkpoint.size = 2000;
        let mut text = a.to_note();
        // A cosignature by another name is kept out of the way.
        text.insert_str(text.len(), "\u{2014} other.witness AAAA\n");
        text.push('\n');
        text.push_str(&b.to_note());
        assert_eq!(parse_notes(&text).unwrap(), std::vec![a, b]);
        assert_eq!(parse_notes("").unwrap(), std::vec![]);
    }

    #[test]
    fn malformed_notes_name_the_line() {
        let (_, a) = sample();
        let note = a.to_note();
        let cases: [(&str, &str, usize, NoteErrorKind); 7] = [
            (
                "rvm.witness/3\n",
                "rvm.witness/03\n",
                1,
                NoteErrorKind::Origin,
            ),
            ("rvm.witness/3\n", "other/3\n", 1, NoteErrorKind::Origin),
            ("\n1000\n", "\n1000x\n", 2, NoteErrorKind::Size),
            ("q6urq6urq6ur", "q6urq6ur*6ur", 3, NoteErrorKind::Root),
            ("head ", "hed ", 4, NoteErrorKind::Head),
            (
                "=\n\n\u{2014}",
                "=\nx\n\u{2014}",
                5,
                NoteErrorKind::MissingBlankLine,
            ),
            (
                "\u{2014} rvm.witness ",
                "\u{2014} rvm.witness x",
                6,
                NoteErrorKind::SignatureLine,
            ),
        ];
        for (from, to, line, reason) in cases {
            let bad = note.replacen(from, to, 1);
            assert_ne!(bad, note, "{from}");
            assert_eq!(
                parse_notes(&bad),
                Err(NoteError { line, reason }),
                "{from} -> {to}"
            );
        }
        let cut = &note[..note.len() - 1];
        assert_eq!(
            parse_notes(cut),
            Err(NoteError {
                line: 6,
                reason: NoteErrorKind::Truncated
            })
        );
        let unsigned = note.split('\u{2014}').next().unwrap();
        assert_eq!(
            parse_notes(unsigned).unwrap_err().reason,
            NoteErrorKind::NoSignature
        );
        assert_eq!(
            parse_notes("rvm.witness/3\n12").unwrap_err().reason,
            NoteErrorKind::Truncated
        );
    }

    #[test]
    fn policy() {
        let p = CheckpointPolicy::every(NonZeroU64::new(4).unwrap());
        let call = WitnessRecord::new(WitnessOp::Call(Hypercall::ChannelSend), Outcome::Done, 1);
        assert!(!p.is_due(&call, 3));
        assert!(p.is_due(&call, 4));
        assert!(p.is_due(&call, 8));
        let mut p3 = call;
        p3.tier = rvm_abi::ProofTier::P3 as u8;
        assert!(p.is_due(&p3, 5));
        let shut = WitnessRecord::new(WitnessOp::Event(KernelEvent::Shutdown), Outcome::Done, 0);
        assert!(p.is_due(&shut, 5));
        let mut flagged = call;
        flagged.flags |= flags::CHECKPOINTED;
        assert!(p.is_due(&flagged, 5));
        let never = CheckpointPolicy {
            every: None,
            on_p3: false,
            on_shutdown: false,
        };
        assert!(!never.is_due(&p3, 4));
        assert!(!never.is_due(&shut, 4));
    }
}
