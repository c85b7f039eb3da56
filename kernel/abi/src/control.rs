//! The control channel: a byte stream from the hypervisor to the host, on
//! machines that have one (a virtio console on QEMU `virt`: `hal/src/control.rs`),
//! beside the console UART. It carries the witness and journal frames of
//! [`crate::frame`] and [`crate::journal`] in binary instead of as hex text
//! lines, so the UART is left to console text and a frame costs its bytes,
//! not twice its bytes plus a trap per byte. A machine without one sends
//! every frame on the UART as before; the frames are the same either way.
//!
//! Every frame is a header and a payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `"RC"` |
//! | 2 | 1 | kind ([`Kind`]) |
//! | 3 | 1 | reserved, zero |
//! | 4 | 4 | payload length, u32 LE, at most [`MAX_PAYLOAD`] |
//!
//! Payloads, all integers little-endian:
//!
//! * `Record` (1): log u32, the 64-byte witness record;
//! * `Checkpoint` (2): log u32, size u64, head (32), Merkle root (32),
//!   signature (64): the fields of an `@C` line;
//! * `Key` (3): the 32-byte Ed25519 public key of an `@K` line;
//! * `Journal` (4): log u32, entry kind (`b'c'` or `b's'`), seq u64, then
//!   the entry's body ([`crate::journal::write_call_body`],
//!   [`crate::journal::write_start_body`]: what an `@J` line carries in hex).
//! * `Credit` (6): u64, the bytes of host frames the kernel has taken (see
//!   below); channel only, it has no console line.
//! * `Name` (5): log u32, the partition's name (32 bytes, zero-padded): sent
//!   before the first record of a partition created while the hypervisor
//!   runs (an admission), so the host files its log under its name; on the
//!   console, the line `@N <log> <name>`.
//! * `StateBegins` (7): log u32, seq u64, digest (32), items u32: partition
//!   `log`'s committed set is now the one whose digest
//!   ([`crate::recovery::encode_committed`]) is `digest`, as witness record
//!   `seq` of its log (a `CommittedSet` event) says;
//!   its `items` items follow, one `StateItem` (8) each — log u32, key
//!   length u16, key, value — in ascending key order. Sent only when the
//!   boot asks for it ([`crate::bundle::BOOT_FLAG_SAVE_STATE`]); channel
//!   only, no console line.
//! * `ToolRequest` (9): log u32, seq u64, capacity u32, name length u16,
//!   the tool's name, the request: partition `log` called a tool
//!   ([`crate::tool`]) in the call witnessed as record `seq`, and takes at
//!   most `capacity` response bytes. Channel only, no console line; sent
//!   only when the boot asks for it ([`crate::bundle::BOOT_FLAG_TOOLS`]).
//!
//! From the host to the hypervisor, the same framing carries:
//!
//! * `Order` (16): an operator's order, [`OrderFrame::to_bytes`] (nonce
//!   u64, order code u8, partition name 32, signature 64), checked exactly
//!   as an `@O` line on the UART's receive side;
//! * `StateSaved` (20): log u32, seq u64: the host holds partition `log`'s
//!   committed set as of record `seq` durably (written and synced, with
//!   the log that far); the partition, parked since that record, runs on.
//! * `ToolAnswer` (21): log u32, seq u64, status i32
//!   ([`crate::tool::AnswerStatus`]), then the response (at most
//!   [`crate::tool::MAX_RESPONSE`] bytes, and at most the capacity the
//!   request named): the answer to the tool call of record `seq`. One frame
//!   whole; it may come between two chunks of an admission.
//! * `Admission` (18): nonce u64, signature (64), the admission bundle's
//!   length u64 (at most [`MAX_ADMISSION`]): tenants to create in the
//!   running hypervisor. The bundle follows in `AdmissionData` (19) frames
//!   of at most [`ADMISSION_CHUNK`] bytes each, nothing else between them
//!   but acknowledgements and `StateSaved` answers. Another frame before
//!   the bundle is whole (a host that gave up on it between two frames)
//!   abandons it: the hypervisor
//!   refuses it and reads that frame as usual. The operator key signs [`admission_message`],
//!   which binds the nonce, the admission's SHA-256 and the digest of the
//!   bundle the hypervisor booted (so an admission is good for one boot,
//!   once).
//!
//! The host sends at most [`HOST_WINDOW`] bytes of frames for the kernel
//! (everything but acknowledgements) beyond what the hypervisor has said it
//! took: `Credit` (6, hypervisor to host) carries that total, u64. So the
//! bytes waiting for the kernel always fit the device driver's buffer, and
//! an acknowledgement the host sends is never stuck behind megabytes of an
//! admission while the hypervisor waits for it to send its own frames.
//! * `Ack` (17): u64, the bytes of the stream the host has read so far.
//!   The hypervisor keeps at most [`WINDOW`] bytes unacknowledged, so the
//!   device (QEMU's virtio console drops what its chardev cannot take at
//!   once) never holds more than the host's socket buffer does; a host that
//!   stops reading stalls the hypervisor's frames instead of losing them.
//!
//! A stream that breaks these rules (bad magic, unknown kind, a payload too
//! long or of the wrong length) cannot be resynchronised: a host stops
//! reading it and fails the run; the hypervisor ignores what follows on it
//! (and says so once).

use crate::bootinfo::HandleInfo;
use crate::frame::{Frame, OrderFrame, ORDER_BYTES};
use crate::journal::{self, CallEntry};
use crate::witness::RECORD_LEN;

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"RC";
/// Bytes of a frame's header.
pub const HEADER_LEN: usize = 8;
/// Largest payload: a journal call entry with the most data. (An
/// admission, host to hypervisor, may be longer: [`max_payload`].)
pub const MAX_PAYLOAD: usize = 4 + 1 + 8 + journal::CALL_HEADER_LEN + journal::MAX_DATA;
/// Largest admission bundle: a module of the largest size the WASM window
/// takes, and room for a partition record, a raw image and capabilities.
pub const MAX_ADMISSION: usize = crate::bootinfo::layout::WASM_MAX_LEN as usize + (8 << 20);
/// An `Admission` frame's payload: nonce u64, signature (64), length u64.
pub const ADMISSION_HEADER: usize = 8 + 64 + 8;
/// Most bytes of an admission bundle one `AdmissionData` frame carries.
pub const ADMISSION_CHUNK: usize = 4096;
/// Most bytes of frames for the kernel the host sends beyond the
/// hypervisor's last `Credit` (the device driver buffers at least this).
pub const HOST_WINDOW: u64 = 16 << 10;
/// Bytes of [`admission_message`].
pub const ADMISSION_MESSAGE_LEN: usize = 96;
/// Domain separation of [`admission_message`].
pub const ADMISSION_TAG: [u8; 16] = *b"RVM-ADMISSION-01";
/// A `Name` frame's payload: log u32, name (32).
pub const NAME_PAYLOAD: usize = 4 + 32;
/// A `StateBegins` frame's payload: log u32, seq u64, digest (32), items u32.
pub const STATE_BEGINS_PAYLOAD: usize = 4 + 8 + 32 + 4;
/// A `StateSaved` frame's payload: log u32, seq u64.
pub const STATE_SAVED_PAYLOAD: usize = 4 + 8;
/// A `ToolRequest` frame's payload before the name: log u32, seq u64,
/// capacity u32, name length u16.
pub const TOOL_REQUEST_HEADER: usize = 4 + 8 + 4 + 2;
/// A `ToolAnswer` frame's payload before the response: log u32, seq u64,
/// status i32.
pub const TOOL_ANSWER_HEADER: usize = 4 + 8 + 4;

/// The start of a `ToolAnswer` frame (host to hypervisor) whose response
/// is `len` bytes: its header and fixed part. The response follows; a host
/// writes the two as one piece.
pub fn tool_answer_start(log: u32, seq: u64, status: crate::tool::AnswerStatus, len: usize) -> [u8; HEADER_LEN + TOOL_ANSWER_HEADER] {
    let mut f = [0u8; HEADER_LEN + TOOL_ANSWER_HEADER];
    f[..HEADER_LEN].copy_from_slice(&header(Kind::ToolAnswer, TOOL_ANSWER_HEADER + len));
    f[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&log.to_le_bytes());
    f[HEADER_LEN + 4..HEADER_LEN + 12].copy_from_slice(&seq.to_le_bytes());
    f[HEADER_LEN + 12..].copy_from_slice(&(status as i32).to_le_bytes());
    f
}

/// Write a `StateSaved` frame (host to hypervisor).
pub fn write_state_saved(out: &mut dyn FnMut(&[u8]), log: u32, seq: u64) {
    let mut f = [0u8; HEADER_LEN + STATE_SAVED_PAYLOAD];
    f[..HEADER_LEN].copy_from_slice(&header(Kind::StateSaved, STATE_SAVED_PAYLOAD));
    f[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&log.to_le_bytes());
    f[HEADER_LEN + 4..].copy_from_slice(&seq.to_le_bytes());
    out(&f);
}

/// The longest payload a frame of `kind` may carry.
pub const fn max_payload(kind: u8) -> usize {
    if kind == Kind::Admission as u8 {
        ADMISSION_HEADER
    } else if kind == Kind::AdmissionData as u8 {
        ADMISSION_CHUNK
    } else if kind == Kind::ToolAnswer as u8 {
        TOOL_ANSWER_HEADER + crate::tool::MAX_RESPONSE
    } else {
        MAX_PAYLOAD
    }
}

/// What the operator key signs to admit tenants into a running hypervisor:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 16 | [`ADMISSION_TAG`] |
/// | 16 | 8 | nonce, u64 LE |
/// | 24 | 8 | zero |
/// | 32 | 32 | SHA-256 of the admission bundle |
/// | 64 | 32 | SHA-256 of the bundle the hypervisor booted |
///
/// Nonces share one floor with orders: each must exceed every nonce the
/// hypervisor accepted since it booted.
pub fn admission_message(nonce: u64, admission_digest: &[u8; 32], boot_bundle_digest: &[u8; 32]) -> [u8; ADMISSION_MESSAGE_LEN] {
    let mut m = [0u8; ADMISSION_MESSAGE_LEN];
    m[0..16].copy_from_slice(&ADMISSION_TAG);
    m[16..24].copy_from_slice(&nonce.to_le_bytes());
    m[32..64].copy_from_slice(admission_digest);
    m[64..96].copy_from_slice(boot_bundle_digest);
    m
}

/// Write an admission's frames (host to hypervisor): `frame` is called
/// once per whole frame, the `Admission` frame first, then each
/// `AdmissionData` frame (a host may write acknowledgements between them).
pub fn write_admission(frame: &mut dyn FnMut(&[u8]), nonce: u64, signature: &[u8; 64], bundle: &[u8]) {
    let mut head = [0u8; HEADER_LEN + ADMISSION_HEADER];
    head[..HEADER_LEN].copy_from_slice(&header(Kind::Admission, ADMISSION_HEADER));
    head[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&nonce.to_le_bytes());
    head[HEADER_LEN + 8..HEADER_LEN + 72].copy_from_slice(signature);
    head[HEADER_LEN + 72..].copy_from_slice(&(bundle.len() as u64).to_le_bytes());
    frame(&head);
    let mut chunk = [0u8; HEADER_LEN + ADMISSION_CHUNK];
    for part in bundle.chunks(ADMISSION_CHUNK) {
        chunk[..HEADER_LEN].copy_from_slice(&header(Kind::AdmissionData, part.len()));
        chunk[HEADER_LEN..HEADER_LEN + part.len()].copy_from_slice(part);
        frame(&chunk[..HEADER_LEN + part.len()]);
    }
}
/// Most bytes the hypervisor sends beyond what the host acknowledged
/// (below a Unix socket's default buffer, 208 KiB on Linux).
pub const WINDOW: u64 = 128 << 10;
/// A host acknowledges at least every this many bytes it read (more often
/// only costs acknowledgements): the hypervisor's buffer plus this stays
/// inside [`WINDOW`], so it never waits for an acknowledgement that a host
/// keeping this rule holds back.
pub const ACK_EVERY: u64 = 16 << 10;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Record = 1,
    Checkpoint = 2,
    Key = 3,
    Journal = 4,
    /// The name of a log created at run time.
    Name = 5,
    /// The bytes of host frames the kernel took.
    Credit = 6,
    /// A partition's committed set begins (hypervisor to host).
    StateBegins = 7,
    /// One item of it.
    StateItem = 8,
    /// A partition called a tool (hypervisor to host).
    ToolRequest = 9,
    /// Host to hypervisor.
    Order = 16,
    /// Host to hypervisor: bytes read so far.
    Ack = 17,
    /// Host to hypervisor: tenants to admit.
    Admission = 18,
    /// Host to hypervisor: the next bytes of the admission's bundle.
    AdmissionData = 19,
    /// The host saved a partition's committed set (host to hypervisor).
    StateSaved = 20,
    /// The answer to a tool call (host to hypervisor).
    ToolAnswer = 21,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Kind::Record,
            2 => Kind::Checkpoint,
            3 => Kind::Key,
            4 => Kind::Journal,
            5 => Kind::Name,
            6 => Kind::Credit,
            7 => Kind::StateBegins,
            8 => Kind::StateItem,
            9 => Kind::ToolRequest,
            16 => Kind::Order,
            17 => Kind::Ack,
            18 => Kind::Admission,
            19 => Kind::AdmissionData,
            20 => Kind::StateSaved,
            21 => Kind::ToolAnswer,
            _ => return None,
        })
    }
}

fn header(kind: Kind, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..2].copy_from_slice(&MAGIC);
    h[2] = kind as u8;
    h[4..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    h
}

/// Write an order's frame (host to hypervisor) to `out`.
pub fn write_order(out: &mut dyn FnMut(&[u8]), order: &OrderFrame) {
    out(&header(Kind::Order, ORDER_BYTES));
    out(&order.to_bytes());
}

/// Write an acknowledgement of the first `total` bytes of the stream (host
/// to hypervisor) to `out`.
pub fn write_ack(out: &mut dyn FnMut(&[u8]), total: u64) {
    out(&header(Kind::Ack, 8));
    out(&total.to_le_bytes());
}

/// Splits what the host sends into acknowledgements, which the device's
/// driver keeps ([`AckSplitter::take`] answers them), and every other byte,
/// which goes on to the kernel's [`InboundDecoder`] as it came. Once the
/// stream breaks (a bad header) every byte goes on, so the kernel sees and
/// reports the break.
#[derive(Default)]
pub struct AckSplitter {
    header: [u8; HEADER_LEN],
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The current frame is an acknowledgement: its payload so far.
    ack: Option<([u8; 8], usize)>,
    raw: bool,
}

/// What one byte from the host was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split<'a> {
    /// Part of an acknowledgement (not yet whole).
    Held,
    /// The last byte of an acknowledgement of this many bytes.
    Ack(u64),
    /// Bytes for the kernel (a header once it is whole, else the byte).
    Pass(&'a [u8]),
}

impl AckSplitter {
    pub const fn new() -> Self {
        Self { header: [0; HEADER_LEN], have: 0, left: 0, ack: None, raw: false }
    }

    /// Take one byte from the host.
    pub fn take(&mut self, b: u8) -> Split<'_> {
        if self.raw {
            self.header[0] = b;
            return Split::Pass(&self.header[..1]);
        }
        if let Some((mut bytes, n)) = self.ack.take() {
            bytes[n] = b;
            if n + 1 < 8 {
                self.ack = Some((bytes, n + 1));
                return Split::Held;
            }
            return Split::Ack(u64::from_le_bytes(bytes));
        }
        if self.left > 0 {
            self.left -= 1;
            self.header[0] = b;
            return Split::Pass(&self.header[..1]);
        }
        self.header[self.have] = b;
        self.have += 1;
        if self.have < HEADER_LEN {
            return Split::Held;
        }
        self.have = 0;
        let len = u32::from_le_bytes([self.header[4], self.header[5], self.header[6], self.header[7]]) as usize;
        if self.header[..2] != MAGIC || self.header[3] != 0 {
            self.raw = true;
            return Split::Pass(&self.header);
        }
        if self.header[2] == Kind::Ack as u8 && len == 8 {
            self.ack = Some(([0; 8], 0));
            return Split::Held;
        }
        self.left = len.min(max_payload(self.header[2]));
        Split::Pass(&self.header)
    }
}

/// What the host sent the hypervisor, as [`InboundDecoder`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A whole order.
    Order(OrderFrame),
    /// An admission starts: its nonce and signature; `len` bundle bytes follow.
    AdmissionBegins { nonce: u64, signature: [u8; 64], len: usize },
    /// The next byte of the admission's bundle (the reader counts them:
    /// `len` of them make it whole).
    AdmissionByte(u8),
    /// Another frame began before the admission's bundle was whole: the
    /// admission is abandoned (the frame is read on as usual).
    AdmissionAbandoned,
    /// The host saved log `log`'s committed set as of record `seq`.
    StateSaved { log: u32, seq: u64 },
    /// The answer to the tool call of record `seq` of log `log` begins:
    /// `status` as the host sent it (not checked here), `len` response
    /// bytes follow, one [`Inbound::ToolAnswerByte`] each.
    ToolAnswerBegins { log: u32, seq: u64, status: i32, len: usize },
    /// The next byte of the answer's response.
    ToolAnswerByte(u8),
}

/// Reads the frames the host sends the hypervisor (orders, admissions), a
/// byte at a time, without allocating: an admission's bundle is handed on
/// byte by byte for its reader to keep. After the first broken frame it
/// reads nothing more.
pub struct InboundDecoder {
    buf: [u8; HEADER_LEN + ORDER_BYTES],
    len: usize,
    /// Bundle bytes of the current admission still to come.
    admission_left: u64,
    /// Bytes of the current `AdmissionData` frame still to come.
    chunk_left: usize,
    /// Response bytes of the current `ToolAnswer` frame still to come.
    answer_left: usize,
    broken: bool,
}

impl Default for InboundDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl InboundDecoder {
    pub const fn new() -> Self {
        Self { buf: [0; HEADER_LEN + ORDER_BYTES], len: 0, admission_left: 0, chunk_left: 0, answer_left: 0, broken: false }
    }

    /// Whether a broken frame ended the stream.
    pub fn broken(&self) -> bool {
        self.broken
    }

    fn fail(&mut self, e: DecodeError) -> Option<Result<Inbound, DecodeError>> {
        self.broken = true;
        Some(Err(e))
    }

    /// Take one byte: what it completes, or the error that broke the
    /// stream (reported once).
    pub fn push(&mut self, byte: u8) -> Option<Result<Inbound, DecodeError>> {
        if self.broken {
            return None;
        }
        if self.chunk_left > 0 {
            self.chunk_left -= 1;
            self.admission_left -= 1;
            return Some(Ok(Inbound::AdmissionByte(byte)));
        }
        if self.answer_left > 0 {
            self.answer_left -= 1;
            return Some(Ok(Inbound::ToolAnswerByte(byte)));
        }
        self.buf[self.len] = byte;
        self.len += 1;
        if self.len < HEADER_LEN {
            return None;
        }
        let len = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        let kind = Kind::from_u8(self.buf[2]);
        if self.len == HEADER_LEN {
            if self.buf[..2] != MAGIC || self.buf[3] != 0 {
                return self.fail(DecodeError::BadHeader);
            }
            let mut abandoned = false;
            if self.admission_left > 0 {
                if kind == Some(Kind::AdmissionData) {
                    let most = ADMISSION_CHUNK.min(usize::try_from(self.admission_left).unwrap_or(usize::MAX));
                    if len == 0 || len > most {
                        return self.fail(DecodeError::BadPayload(Kind::AdmissionData));
                    }
                    self.chunk_left = len;
                    self.len = 0;
                    return None;
                }
                // A `StateSaved` or a `ToolAnswer` may come between two
                // chunks (the host keeps sets and serves tools while it
                // sends tenants); any other frame means the host gave up
                // on the admission.
                if !matches!(kind, Some(Kind::StateSaved | Kind::ToolAnswer)) {
                    self.admission_left = 0;
                    abandoned = true;
                }
            }
            if kind == Some(Kind::ToolAnswer) {
                if !(TOOL_ANSWER_HEADER..=TOOL_ANSWER_HEADER + crate::tool::MAX_RESPONSE).contains(&len) {
                    return self.fail(DecodeError::BadPayload(Kind::ToolAnswer));
                }
                return abandoned.then_some(Ok(Inbound::AdmissionAbandoned));
            }
            let want = match kind {
                Some(Kind::Order) => ORDER_BYTES,
                Some(Kind::Admission) => ADMISSION_HEADER,
                Some(Kind::StateSaved) => STATE_SAVED_PAYLOAD,
                Some(k) => return self.fail(DecodeError::BadPayload(k)),
                None => {
                    let k = self.buf[2];
                    return self.fail(DecodeError::UnknownKind(k));
                }
            };
            if len != want {
                return self.fail(DecodeError::BadPayload(kind.unwrap_or(Kind::Order)));
            }
            return abandoned.then_some(Ok(Inbound::AdmissionAbandoned));
        }
        if kind == Some(Kind::ToolAnswer) {
            // Its fixed part, then the response handed on byte by byte.
            if self.len < HEADER_LEN + TOOL_ANSWER_HEADER {
                return None;
            }
            self.len = 0;
            let p = &self.buf[HEADER_LEN..HEADER_LEN + TOOL_ANSWER_HEADER];
            let log = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&p[4..12]);
            let status = i32::from_le_bytes([p[12], p[13], p[14], p[15]]);
            self.answer_left = len - TOOL_ANSWER_HEADER;
            return Some(Ok(Inbound::ToolAnswerBegins { log, seq: u64::from_le_bytes(seq), status, len: len - TOOL_ANSWER_HEADER }));
        }
        if self.len < HEADER_LEN + len {
            return None;
        }
        self.len = 0;
        let p = &self.buf[HEADER_LEN..HEADER_LEN + len];
        if kind == Some(Kind::Admission) {
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&p[..8]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&p[8..72]);
            let mut total = [0u8; 8];
            total.copy_from_slice(&p[72..80]);
            let total = u64::from_le_bytes(total);
            if total > MAX_ADMISSION as u64 {
                return self.fail(DecodeError::TooLong(u32::try_from(total).unwrap_or(u32::MAX)));
            }
            self.admission_left = total;
            return Some(Ok(Inbound::AdmissionBegins {
                nonce: u64::from_le_bytes(nonce),
                signature,
                len: usize::try_from(total).unwrap_or(usize::MAX),
            }));
        }
        if kind == Some(Kind::StateSaved) {
            let mut log = [0u8; 4];
            log.copy_from_slice(&p[..4]);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&p[4..12]);
            return Some(Ok(Inbound::StateSaved { log: u32::from_le_bytes(log), seq: u64::from_le_bytes(seq) }));
        }
        match OrderFrame::from_bytes(p) {
            Some(o) => Some(Ok(Inbound::Order(o))),
            None => self.fail(DecodeError::BadPayload(Kind::Order)),
        }
    }
}

/// A frame on its way to the host, borrowed from its owner: written as its
/// console line ([`Outgoing::write_text`]) or its control-channel frame
/// ([`Outgoing::write_binary`]).
#[derive(Clone, Copy, Debug)]
pub enum Outgoing<'a> {
    /// A witness record, checkpoint or key.
    Witness(&'a Frame),
    /// A journal call entry of log `log`.
    JournalCall { log: u32, entry: &'a CallEntry<'a> },
    /// A journal start entry of log `log`, bound to record `seq`.
    JournalStart { log: u32, seq: u64, handles: &'a [HandleInfo] },
    /// The name of log `log`, created at run time.
    Name { log: u32, name: &'a [u8; 32] },
    /// The bytes of host frames the kernel has taken so far (channel
    /// only: it has no console line).
    Credit { taken: u64 },
    /// Log `log`'s committed set, as record `seq` says, begins: `items`
    /// [`Outgoing::StateItem`]s follow (channel only).
    StateBegins { log: u32, seq: u64, digest: &'a [u8; 32], items: u32 },
    /// One committed item of log `log`'s partition (channel only).
    StateItem { log: u32, key: &'a [u8], value: &'a [u8] },
    /// Partition `log` called tool `name` with `request` in the call of
    /// record `seq`, and takes at most `capacity` response bytes (channel
    /// only).
    ToolRequest { log: u32, seq: u64, capacity: u32, name: &'a [u8], request: &'a [u8] },
}

/// The text of a name field: up to its first zero byte ("?" if that is
/// not UTF-8).
pub fn name_text(name: &[u8; 32]) -> &str {
    let end = name.iter().position(|&b| b == 0).unwrap_or(32);
    core::str::from_utf8(&name[..end]).unwrap_or("?")
}

/// Write the console line of a `Name` frame.
fn write_name_line(out: &mut dyn FnMut(&[u8]), log: u32, name: &[u8; 32]) {
    let mut digits = [0u8; 10];
    let mut n = log;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out(b"@N ");
    out(&digits[at..]);
    out(b" ");
    out(name_text(name).as_bytes());
    out(b"\n");
}

impl Outgoing<'_> {
    /// Write the console line (ending in `\n`) to `out`.
    pub fn write_text(&self, out: &mut dyn FnMut(&[u8])) {
        match *self {
            Outgoing::Witness(f) => out(f.encode().as_bytes()),
            Outgoing::JournalCall { log, entry } => journal::write_call(out, log, entry),
            Outgoing::JournalStart { log, seq, handles } => journal::write_start(out, log, seq, handles),
            Outgoing::Name { log, name } => write_name_line(out, log, name),
            Outgoing::Credit { .. } | Outgoing::StateBegins { .. } | Outgoing::StateItem { .. } | Outgoing::ToolRequest { .. } => {}
        }
    }

    /// The frame's kind and payload length.
    pub fn header(&self) -> (Kind, usize) {
        match *self {
            Outgoing::Witness(Frame::Record { .. }) => (Kind::Record, 4 + RECORD_LEN),
            Outgoing::Witness(Frame::Checkpoint { .. }) => (Kind::Checkpoint, 4 + 8 + 32 + 32 + 64),
            Outgoing::Witness(Frame::Key { .. }) => (Kind::Key, 32),
            Outgoing::JournalCall { entry, .. } => (Kind::Journal, 4 + 1 + 8 + journal::call_body_len(entry)),
            Outgoing::JournalStart { handles, .. } => (Kind::Journal, 4 + 1 + 8 + journal::start_body_len(handles)),
            Outgoing::Name { .. } => (Kind::Name, NAME_PAYLOAD),
            Outgoing::Credit { .. } => (Kind::Credit, 8),
            Outgoing::StateBegins { .. } => (Kind::StateBegins, STATE_BEGINS_PAYLOAD),
            Outgoing::StateItem { key, value, .. } => (Kind::StateItem, 4 + 2 + key.len() + value.len()),
            Outgoing::ToolRequest { name, request, .. } => (Kind::ToolRequest, TOOL_REQUEST_HEADER + name.len() + request.len()),
        }
    }

    /// Bytes [`Outgoing::write_binary`] writes.
    pub fn binary_len(&self) -> usize {
        HEADER_LEN + self.header().1
    }

    /// Write the control-channel frame (header, then payload) to `out`.
    pub fn write_binary(&self, out: &mut dyn FnMut(&[u8])) {
        let (kind, len) = self.header();
        out(&header(kind, len));
        match *self {
            Outgoing::Witness(Frame::Record { log, bytes }) => {
                out(&log.to_le_bytes());
                out(bytes);
            }
            Outgoing::Witness(Frame::Checkpoint { log, size, head, root, signature }) => {
                out(&log.to_le_bytes());
                out(&size.to_le_bytes());
                out(head);
                out(root);
                out(signature);
            }
            Outgoing::Witness(Frame::Key { public }) => out(public),
            Outgoing::JournalCall { log, entry } => {
                out(&log.to_le_bytes());
                out(journal::KIND_CALL.as_bytes());
                out(&entry.seq.to_le_bytes());
                journal::write_call_body(out, entry);
            }
            Outgoing::JournalStart { log, seq, handles } => {
                out(&log.to_le_bytes());
                out(journal::KIND_START.as_bytes());
                out(&seq.to_le_bytes());
                journal::write_start_body(out, handles);
            }
            Outgoing::Name { log, name } => {
                out(&log.to_le_bytes());
                out(name);
            }
            Outgoing::Credit { taken } => out(&taken.to_le_bytes()),
            Outgoing::StateBegins { log, seq, digest, items } => {
                out(&log.to_le_bytes());
                out(&seq.to_le_bytes());
                out(digest);
                out(&items.to_le_bytes());
            }
            Outgoing::StateItem { log, key, value } => {
                out(&log.to_le_bytes());
                // A key is at most the store's key limit (64 bytes).
                out(&(key.len() as u16).to_le_bytes());
                out(key);
                out(value);
            }
            Outgoing::ToolRequest { log, seq, capacity, name, request } => {
                out(&log.to_le_bytes());
                out(&seq.to_le_bytes());
                out(&capacity.to_le_bytes());
                // A name is at most `tool::MAX_NAME` bytes.
                out(&(name.len() as u16).to_le_bytes());
                out(name);
                out(request);
            }
        }
    }
}

/// Why a control stream cannot be read on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A header without the magic, or with its reserved byte set.
    BadHeader,
    /// A kind this version does not know.
    UnknownKind(u8),
    /// A payload longer than [`MAX_PAYLOAD`].
    TooLong(u32),
    /// A payload that is not what its kind says.
    BadPayload(Kind),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::BadHeader => write!(f, "a frame header without the \"RC\" magic"),
            DecodeError::UnknownKind(k) => write!(f, "a frame of unknown kind {k}"),
            DecodeError::TooLong(n) => write!(f, "a frame payload of {n} bytes (longer than its kind allows)"),
            DecodeError::BadPayload(k) => write!(f, "a {k:?} frame whose payload does not decode"),
        }
    }
}

#[cfg(feature = "alloc")]
pub use decode::*;

#[cfg(feature = "alloc")]
mod decode {
    use alloc::vec::Vec;

    use super::*;
    use crate::journal::JournalFrame;

    /// A frame the host received.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Incoming {
        Witness(Frame),
        Journal(JournalFrame),
        /// Log `log` belongs to the partition `name` (created at run time).
        Name { log: u32, name: [u8; 32] },
        /// The hypervisor took this many bytes of the host's frames.
        Credit(u64),
        /// Log `log`'s committed set as of record `seq` begins: `items`
        /// `StateItem`s follow.
        StateBegins { log: u32, seq: u64, digest: [u8; 32], items: u32 },
        /// One committed item of log `log`'s partition.
        StateItem { log: u32, key: Vec<u8>, value: Vec<u8> },
        /// Partition `log` called tool `name` (record `seq`).
        ToolRequest { log: u32, seq: u64, capacity: u32, name: Vec<u8>, request: Vec<u8> },
    }

    impl Incoming {
        /// The same frame as its console line would carry it (without the
        /// line end): what a host that reads both transports keeps.
        pub fn to_line(&self) -> alloc::string::String {
            let bytes = match self {
                Incoming::Witness(f) => f.encode().as_bytes().to_vec(),
                Incoming::Journal(j) => j.entry.encode(j.log),
                Incoming::Name { log, name } => {
                    let mut v = Vec::new();
                    write_name_line(&mut |b| v.extend_from_slice(b), *log, name);
                    v
                }
                // Channel only: no line.
                Incoming::Credit(_) | Incoming::StateBegins { .. } | Incoming::StateItem { .. } | Incoming::ToolRequest { .. } => Vec::new(),
            };
            alloc::string::String::from_utf8_lossy(&bytes).trim_end().into()
        }
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[o..o + 4]);
        u32::from_le_bytes(x)
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    }

    fn array<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut x = [0u8; N];
        x.copy_from_slice(&b[..N]);
        x
    }

    /// Decode one payload of `kind`.
    pub fn decode_payload(kind: Kind, p: &[u8]) -> Result<Incoming, DecodeError> {
        let bad = DecodeError::BadPayload(kind);
        Ok(match kind {
            Kind::Record if p.len() == 4 + RECORD_LEN => Incoming::Witness(Frame::Record { log: u32_at(p, 0), bytes: array(&p[4..]) }),
            Kind::Checkpoint if p.len() == 4 + 8 + 32 + 32 + 64 => Incoming::Witness(Frame::Checkpoint {
                log: u32_at(p, 0),
                size: u64_at(p, 4),
                head: array(&p[12..]),
                root: array(&p[44..]),
                signature: array(&p[76..]),
            }),
            Kind::Key if p.len() == 32 => Incoming::Witness(Frame::Key { public: array(p) }),
            Kind::Name if p.len() == NAME_PAYLOAD => Incoming::Name { log: u32_at(p, 0), name: array(&p[4..]) },
            Kind::Credit if p.len() == 8 => Incoming::Credit(u64_at(p, 0)),
            Kind::StateBegins if p.len() == STATE_BEGINS_PAYLOAD => Incoming::StateBegins {
                log: u32_at(p, 0),
                seq: u64_at(p, 4),
                digest: array(&p[12..]),
                items: u32_at(p, 44),
            },
            Kind::StateItem if p.len() >= 6 => {
                let key_len = usize::from(u16::from_le_bytes([p[4], p[5]]));
                if key_len == 0 || p.len() < 6 + key_len {
                    return Err(bad);
                }
                Incoming::StateItem { log: u32_at(p, 0), key: p[6..6 + key_len].to_vec(), value: p[6 + key_len..].to_vec() }
            }
            Kind::ToolRequest if p.len() >= TOOL_REQUEST_HEADER => {
                let name_len = usize::from(u16::from_le_bytes([p[16], p[17]]));
                if name_len == 0 || name_len > crate::tool::MAX_NAME || p.len() < TOOL_REQUEST_HEADER + name_len {
                    return Err(bad);
                }
                let name_end = TOOL_REQUEST_HEADER + name_len;
                Incoming::ToolRequest {
                    log: u32_at(p, 0),
                    seq: u64_at(p, 4),
                    capacity: u32_at(p, 12),
                    name: p[TOOL_REQUEST_HEADER..name_end].to_vec(),
                    request: p[name_end..].to_vec(),
                }
            }
            Kind::Journal if p.len() >= 13 => {
                let kind = match p[4] {
                    b'c' => journal::KIND_CALL,
                    b's' => journal::KIND_START,
                    _ => return Err(bad),
                };
                Incoming::Journal(JournalFrame::from_body(u32_at(p, 0), kind, u64_at(p, 5), &p[13..]).ok_or(bad)?)
            }
            _ => return Err(bad),
        })
    }

    /// Reads frames out of a control stream as its bytes arrive, in any
    /// pieces.
    #[derive(Default)]
    pub struct Decoder {
        buf: Vec<u8>,
        failed: Option<DecodeError>,
    }

    impl Decoder {
        pub fn new() -> Self {
            Self::default()
        }

        /// Bytes that arrived.
        pub fn push(&mut self, bytes: &[u8]) {
            if self.failed.is_none() {
                self.buf.extend_from_slice(bytes);
            }
        }

        /// The next whole frame, `None` until one has arrived, or the error
        /// that ends the stream (then always that error).
        pub fn next_frame(&mut self) -> Option<Result<Incoming, DecodeError>> {
            if let Some(e) = self.failed {
                return Some(Err(e));
            }
            if self.buf.len() < HEADER_LEN {
                return None;
            }
            let fail = |d: &mut Self, e: DecodeError| {
                d.failed = Some(e);
                d.buf = Vec::new();
                Some(Err(e))
            };
            if self.buf[..2] != MAGIC || self.buf[3] != 0 {
                return fail(self, DecodeError::BadHeader);
            }
            let Some(kind) = Kind::from_u8(self.buf[2]) else {
                let k = self.buf[2];
                return fail(self, DecodeError::UnknownKind(k));
            };
            let len = u32_at(&self.buf, 4);
            if len as usize > MAX_PAYLOAD {
                return fail(self, DecodeError::TooLong(len));
            }
            let end = HEADER_LEN + len as usize;
            if self.buf.len() < end {
                return None;
            }
            let frame = decode_payload(kind, &self.buf[HEADER_LEN..end]);
            self.buf.drain(..end);
            match frame {
                Ok(f) => Some(Ok(f)),
                Err(e) => fail(self, e),
            }
        }

        /// Bytes received that do not make a whole frame yet.
        pub fn pending(&self) -> usize {
            self.buf.len()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use alloc::vec;

        fn binary(o: &Outgoing<'_>) -> Vec<u8> {
            let mut v = Vec::new();
            o.write_binary(&mut |b| v.extend_from_slice(b));
            assert_eq!(v.len(), o.binary_len());
            v
        }

        fn text(o: &Outgoing<'_>) -> alloc::string::String {
            let mut v = Vec::new();
            o.write_text(&mut |b| v.extend_from_slice(b));
            alloc::string::String::from_utf8(v).unwrap().trim_end().into()
        }

        #[test]
        fn every_frame_reads_back_as_the_line_the_console_would_carry() {
            let record = Frame::Record { log: 7, bytes: [0xab; RECORD_LEN] };
            let checkpoint = Frame::Checkpoint { log: 0, size: 99, head: [1; 32], root: [2; 32], signature: [3; 64] };
            let key = Frame::Key { public: [9; 32] };
            let data = vec![5u8; 300];
            let call = CallEntry { seq: 12, regs: [1, 2, 3, 4, 5, 6], status: -3, results: [7, 8, 9], data: &data };
            let handles = [HandleInfo { raw: 0x1_0000_0002, kind: 1, rights: 3, agent: 0 }];
            let mut name = [0u8; 32];
            name[..6].copy_from_slice(b"tenant");
            let frames = [
                Outgoing::Witness(&record),
                Outgoing::Witness(&checkpoint),
                Outgoing::Witness(&key),
                Outgoing::JournalCall { log: 3, entry: &call },
                Outgoing::JournalStart { log: 3, seq: 1, handles: &handles },
                Outgoing::Name { log: 12, name: &name },
            ];
            let mut stream = Vec::new();
            for f in &frames {
                stream.extend(binary(f));
            }
            // Fed in awkward pieces.
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in stream.chunks(7) {
                d.push(piece);
                while let Some(f) = d.next_frame() {
                    got.push(f.unwrap());
                }
            }
            assert_eq!(d.pending(), 0);
            let want: Vec<_> = frames.iter().map(text).collect();
            assert_eq!(got.iter().map(Incoming::to_line).collect::<Vec<_>>(), want);
            assert_eq!(want[5], "@N 12 tenant");
            // A binary frame is smaller than its line.
            assert!(binary(&frames[0]).len() < text(&frames[0]).len());
        }

        #[test]
        fn a_committed_set_reaches_the_host_whole_and_its_answer_the_hypervisor() {
            let digest = [0x5a; 32];
            let frames = [
                Outgoing::StateBegins { log: 3, seq: 41, digest: &digest, items: 2 },
                Outgoing::StateItem { log: 3, key: b"k", value: b"" },
                Outgoing::StateItem { log: 3, key: b"key", value: &[0, 1, 2] },
            ];
            let mut stream = Vec::new();
            for f in &frames {
                stream.extend(binary(f));
                assert!(text(f).is_empty(), "channel only: no console line");
            }
            let mut d = Decoder::new();
            d.push(&stream);
            let got: Vec<Incoming> = core::iter::from_fn(|| d.next_frame()).map(Result::unwrap).collect();
            assert_eq!(
                got,
                [
                    Incoming::StateBegins { log: 3, seq: 41, digest, items: 2 },
                    Incoming::StateItem { log: 3, key: b"k".to_vec(), value: Vec::new() },
                    Incoming::StateItem { log: 3, key: b"key".to_vec(), value: vec![0, 1, 2] },
                ]
            );
            // An item without a key does not decode.
            let mut bad = binary(&Outgoing::StateItem { log: 3, key: b"", value: b"v" });
            bad[HEADER_LEN + 4] = 0;
            let mut d = Decoder::new();
            d.push(&bad);
            assert_eq!(d.next_frame(), Some(Err(DecodeError::BadPayload(Kind::StateItem))));
            // The host's answer, read by the hypervisor a byte at a time.
            let mut saved = Vec::new();
            write_state_saved(&mut |b| saved.extend_from_slice(b), 3, 41);
            let mut inbound = InboundDecoder::new();
            let read: Vec<_> = saved.iter().filter_map(|&b| inbound.push(b)).collect();
            assert_eq!(read, [Ok(Inbound::StateSaved { log: 3, seq: 41 })]);
            // Between two chunks of an admission it is read, and the
            // admission goes on.
            let mut stream = Vec::new();
            write_admission(&mut |f| stream.extend_from_slice(f), 7, &[1; 64], &[9u8; ADMISSION_CHUNK + 10]);
            let second_chunk = HEADER_LEN + ADMISSION_HEADER + HEADER_LEN + ADMISSION_CHUNK;
            stream.splice(second_chunk..second_chunk, saved.iter().copied());
            let mut inbound = InboundDecoder::new();
            let read: Vec<_> = stream.iter().filter_map(|&b| inbound.push(b)).map(Result::unwrap).collect();
            assert_eq!(read.len(), 1 + ADMISSION_CHUNK + 10 + 1, "{:?}", &read[..2]);
            assert_eq!(read[1 + ADMISSION_CHUNK], Inbound::StateSaved { log: 3, seq: 41 });
            assert!(!read.contains(&Inbound::AdmissionAbandoned));
            // One of the wrong length breaks the stream.
            let mut short = saved.clone();
            short[4] = 11;
            let mut inbound = InboundDecoder::new();
            let read: Vec<_> = short.iter().filter_map(|&b| inbound.push(b)).collect();
            assert_eq!(read, [Err(DecodeError::BadPayload(Kind::StateSaved))]);
        }

        #[test]
        fn orders_travel_to_the_hypervisor_and_a_broken_one_ends_the_stream() {
            let mut partition = [0u8; 32];
            partition[..5].copy_from_slice(b"alpha");
            let order = OrderFrame { kind: crate::frame::OrderKind::Evict, nonce: 77, partition, signature: [5; 64] };
            let mut bytes = Vec::new();
            write_order(&mut |b| bytes.extend_from_slice(b), &order);
            write_order(&mut |b| bytes.extend_from_slice(b), &order);
            let mut d = InboundDecoder::new();
            let got: Vec<_> = bytes.iter().filter_map(|&b| d.push(b)).collect();
            assert_eq!(got, [Ok(Inbound::Order(order)), Ok(Inbound::Order(order))]);
            // A name that is no safe identifier, then a good order: the
            // stream is over at the first.
            let mut bad = bytes.clone();
            bad[HEADER_LEN + 9] = b'/';
            let mut d = InboundDecoder::new();
            let got: Vec<_> = bad.iter().filter_map(|&b| d.push(b)).collect();
            assert_eq!(got, [Err(DecodeError::BadPayload(Kind::Order))]);
            assert!(d.broken());
            // A record sent the wrong way.
            let record = Frame::Record { log: 1, bytes: [0; RECORD_LEN] };
            let mut d = InboundDecoder::new();
            let got: Vec<_> = binary(&Outgoing::Witness(&record)).iter().filter_map(|&b| d.push(b)).collect();
            assert_eq!(got, [Err(DecodeError::BadPayload(Kind::Record))]);
        }

        #[test]
        fn acknowledgements_are_split_from_the_orders_that_go_on() {
            let mut partition = [0u8; 32];
            partition[..1].copy_from_slice(b"a");
            let order = OrderFrame { kind: crate::frame::OrderKind::Unfence, nonce: 3, partition, signature: [1; 64] };
            let mut stream = Vec::new();
            write_ack(&mut |b| stream.extend_from_slice(b), 1000);
            write_order(&mut |b| stream.extend_from_slice(b), &order);
            write_ack(&mut |b| stream.extend_from_slice(b), 5000);
            let (mut split, mut kernel, mut acks) = (AckSplitter::new(), Vec::new(), Vec::new());
            for &b in &stream {
                match split.take(b) {
                    Split::Held => {}
                    Split::Ack(n) => acks.push(n),
                    Split::Pass(bytes) => kernel.extend_from_slice(bytes),
                }
            }
            assert_eq!(acks, [1000, 5000]);
            let mut d = InboundDecoder::new();
            let got: Vec<_> = kernel.iter().filter_map(|&b| d.push(b)).collect();
            assert_eq!(got, [Ok(Inbound::Order(order))], "the order reaches the kernel whole");
            // A broken header: everything goes on to the kernel, which says so.
            let (mut split, mut kernel) = (AckSplitter::new(), Vec::new());
            for &b in b"XXjunk-and-more" {
                if let Split::Pass(bytes) = split.take(b) {
                    kernel.extend_from_slice(bytes);
                }
            }
            assert_eq!(kernel, b"XXjunk-and-more");
        }

        #[test]
        fn an_admission_passes_the_splitter_in_chunks_with_acknowledgements_between_and_reaches_the_kernel_whole() {
            let bundle: Vec<u8> = (0..(3 * ADMISSION_CHUNK + 300)).map(|i| i as u8).collect();
            let mut partition = [0u8; 32];
            partition[..1].copy_from_slice(b"a");
            let order = OrderFrame { kind: crate::frame::OrderKind::Evict, nonce: 9, partition, signature: [2; 64] };
            // Acknowledgements between the admission's frames, as a host writes them.
            let mut stream = Vec::new();
            let mut frames = 0;
            write_admission(
                &mut |f| {
                    stream.extend_from_slice(f);
                    write_ack(&mut |b| stream.extend_from_slice(b), 64 * frames);
                    frames += 1;
                },
                8,
                &[7; 64],
                &bundle,
            );
            assert_eq!(frames, 5, "a header and four chunks");
            write_admission(&mut |b| stream.extend_from_slice(b), 10, &[1; 64], &[]);
            write_order(&mut |b| stream.extend_from_slice(b), &order);
            let (mut split, mut kernel, mut acks) = (AckSplitter::new(), Vec::new(), Vec::new());
            for &b in &stream {
                match split.take(b) {
                    Split::Held => {}
                    Split::Ack(n) => acks.push(n),
                    Split::Pass(bytes) => kernel.extend_from_slice(bytes),
                }
            }
            assert_eq!(acks, [0, 64, 128, 192, 256]);
            let mut d = InboundDecoder::new();
            let (mut got, mut body) = (Vec::new(), Vec::new());
            for &b in &kernel {
                match d.push(b) {
                    Some(Ok(Inbound::AdmissionByte(x))) => body.push(x),
                    Some(other) => got.push(other),
                    None => {}
                }
            }
            assert_eq!(
                got,
                [
                    Ok(Inbound::AdmissionBegins { nonce: 8, signature: [7; 64], len: bundle.len() }),
                    Ok(Inbound::AdmissionBegins { nonce: 10, signature: [1; 64], len: 0 }),
                    Ok(Inbound::Order(order)),
                ]
            );
            assert_eq!(body, bundle);
            // An order inside an admission's data, a chunk longer than what is
            // left, data without an admission, an admission too long.
            let mut head = Vec::new();
            write_admission(&mut |f| if head.is_empty() { head.extend_from_slice(f) }, 1, &[0; 64], &[5; 100]);
            let mut order_inside = head.clone();
            write_order(&mut |b| order_inside.extend_from_slice(b), &order);
            let mut long_chunk = head.clone();
            long_chunk.extend_from_slice(&header(Kind::AdmissionData, 101));
            let stray = header(Kind::AdmissionData, 4).to_vec();
            let mut too_long = head.clone();
            too_long[HEADER_LEN + 72..HEADER_LEN + 80].copy_from_slice(&(MAX_ADMISSION as u64 + 1).to_le_bytes());
            // A host that gave up between two frames: the next frame abandons it.
            let mut d = InboundDecoder::new();
            let got: Vec<_> = order_inside.iter().filter_map(|&b| d.push(b)).collect();
            assert_eq!(got, [Ok(Inbound::AdmissionBegins { nonce: 1, signature: [0; 64], len: 100 }), Ok(Inbound::AdmissionAbandoned), Ok(Inbound::Order(order))]);
            for (bytes, want) in [
                (stray, DecodeError::BadPayload(Kind::AdmissionData)),
                (too_long, DecodeError::TooLong(u32::try_from(MAX_ADMISSION + 1).unwrap())),
            ] {
                let mut d = InboundDecoder::new();
                let got: Vec<_> = bytes.iter().filter_map(|&b| d.push(b)).filter(|r| r.is_err()).collect();
                assert_eq!(got, [Err(want)]);
            }
            // The signed message binds nonce, admission and boot.
            let m = admission_message(5, &[1; 32], &[2; 32]);
            assert_ne!(m, admission_message(6, &[1; 32], &[2; 32]));
            assert_ne!(m, admission_message(5, &[3; 32], &[2; 32]));
            assert_ne!(m, admission_message(5, &[1; 32], &[3; 32]));
        }

        #[test]
        fn a_broken_stream_is_an_error_for_good() {
            let record = Frame::Record { log: 1, bytes: [0; RECORD_LEN] };
            let good = binary(&Outgoing::Witness(&record));
            let cases: [(Vec<u8>, DecodeError); 4] = [
                ({ let mut b = good.clone(); b[0] = b'X'; b }, DecodeError::BadHeader),
                ({ let mut b = good.clone(); b[2] = 42; b }, DecodeError::UnknownKind(42)),
                ({ let mut b = good.clone(); b[4..8].copy_from_slice(&u32::MAX.to_le_bytes()); b }, DecodeError::TooLong(u32::MAX)),
                ({ let mut b = good.clone(); b[4] = 3; b.truncate(11); b }, DecodeError::BadPayload(Kind::Record)),
            ];
            for (bytes, want) in cases {
                let mut d = Decoder::new();
                d.push(&bytes);
                assert_eq!(d.next_frame(), Some(Err(want)));
                d.push(&good);
                assert_eq!(d.next_frame(), Some(Err(want)), "no resynchronising");
            }
        }
    }
}
