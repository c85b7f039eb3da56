//! The input journal: what entered a partition, bound to its witness log.
//!
//! A witness record carries only a 16-byte digest of a call's arguments. To
//! replay a partition on the host, the replayer also needs the data behind
//! the digests: the bytes a `ChannelRecv` or `StateGet` wrote into the guest,
//! the value a `ClockRead` returned, every call's status. With journaling on
//! (bit [`BOOT_FLAG_JOURNAL`] of the bundle's boot configuration), the
//! hypervisor writes one journal frame beside each witnessed hypercall of a
//! partition and one when the partition starts:
//!
//! ```text
//! @J <log> c <seq> <hex of: x1..x6 (6 × u64 LE), status (i64 LE),
//!                           results x1..x3 (3 × u64 LE), data>
//! @J <log> s <seq> <hex of: handle count (u32 LE), handles (16 bytes each,
//!                           the boot-info encoding: raw u64, kind u8,
//!                           rights u8, agent u8, 5 reserved)>
//! ```
//!
//! `<log>` is the decimal partition id, `<seq>` the decimal sequence number
//! of the witness record the entry is bound to, in the same log.
//!
//! **Binding.** A call entry (`c`) is bound to the record of its hypercall:
//! `data` is exactly the bytes the record's `args` digest covers after the
//! registers, so `args == SHA-256(x1..x6 LE ‖ data)[..16]`, and the record's
//! `outcome` equals `status` (0 = done). A start entry (`s`) is bound to the
//! partition's `PartitionStart` record: `args == SHA-256(`[`START_DOMAIN`]
//! `‖ handle count ‖ handles)[..16]`. A changed, dropped or foreign entry is
//! therefore found by recomputing the digest; the results registers are not
//! covered and a replayer re-derives what it uses of them.
//!
//! What `data` holds per call: `ConsoleWrite` the text, `ChannelSend` and
//! `ChannelRecv` the message, `StateStage` key ‖ value, `StateGet` key ‖ value
//! (the key alone when the key has no value), `ClockRead` the value returned
//! (u64 LE), `Snapshot` the full 32-byte state hash; empty when the call was
//! refused before its buffers were read.

use crate::bootinfo::{HandleInfo, HANDLE_ENTRY_LEN};
use crate::hex;

/// Bit of [`BootConfig::flags`](crate::bundle::BootConfig) that turns the
/// journal on for every partition of the bundle.
pub const BOOT_FLAG_JOURNAL: u32 = 1 << 0;

/// The frame tag.
pub const TAG: &str = "@J";

/// Kind letter of a call entry.
pub const KIND_CALL: &str = "c";
/// Kind letter of a start entry.
pub const KIND_START: &str = "s";

/// Domain separation of a start entry's binding digest.
pub const START_DOMAIN: [u8; 16] = *b"RVM-JOURNAL-BOOT";

/// Bytes of a call entry before its data: x1..x6, status, results.
pub const CALL_HEADER_LEN: usize = 6 * 8 + 8 + 3 * 8;

/// Most data bytes one call entry carries (a `StateStage`/`StateGet` key of
/// up to 4 KiB with a value of up to 64 KiB is the largest digested input).
pub const MAX_DATA: usize = 4096 + 65536;

/// Longest journal frame line, without the newline.
pub const MAX_LINE_LEN: usize = 3 + 10 + 3 + 20 + 1 + 2 * (CALL_HEADER_LEN + MAX_DATA);

/// One call's entry, borrowed (what the hypervisor writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallEntry<'a> {
    /// Sequence number of the call's witness record.
    pub seq: u64,
    /// The call's argument registers x1..x6 as the guest passed them.
    pub regs: [u64; 6],
    /// The status returned in x0 (0 ok, else the negative error code).
    pub status: i64,
    /// The results returned in x1..x3.
    pub results: [u64; 3],
    /// The bytes the record's digest covers after the registers.
    pub data: &'a [u8],
}

impl CallEntry<'_> {
    /// The fixed part before the data.
    pub fn header(&self) -> [u8; CALL_HEADER_LEN] {
        let mut h = [0u8; CALL_HEADER_LEN];
        let words = self.regs.iter().copied().chain([u64::from_le_bytes(self.status.to_le_bytes())]).chain(self.results);
        for (chunk, v) in h.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// The registers as the digest takes them (x1..x6 LE).
    pub fn regs_bytes(&self) -> [u8; 48] {
        regs_bytes(&self.regs)
    }
}

/// x1..x6 little-endian, as a record's `args` digest starts.
pub fn regs_bytes(regs: &[u64; 6]) -> [u8; 48] {
    let mut r = [0u8; 48];
    for (chunk, v) in r.chunks_exact_mut(8).zip(regs) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    r
}

/// The encoding of a start entry's handles (count, then each handle).
pub fn encode_handle(h: &HandleInfo) -> [u8; HANDLE_ENTRY_LEN] {
    let mut b = [0u8; HANDLE_ENTRY_LEN];
    b[0..8].copy_from_slice(&h.raw.to_le_bytes());
    b[8] = h.kind;
    b[9] = h.rights;
    b[10] = h.agent;
    b
}

fn write_dec(out: &mut dyn FnMut(&[u8]), mut v: u64) {
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
    out(&digits[i..]);
}

fn write_hex(out: &mut dyn FnMut(&[u8]), bytes: &[u8]) {
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        if let Some(text) = hex::encode(chunk, &mut buf) {
            out(text);
        }
    }
}

fn write_prefix(out: &mut dyn FnMut(&[u8]), log: u32, kind: &str, seq: u64) {
    out(TAG.as_bytes());
    out(b" ");
    write_dec(out, u64::from(log));
    out(b" ");
    out(kind.as_bytes());
    out(b" ");
    write_dec(out, seq);
    out(b" ");
}

/// Write a call entry's body (what its frame line carries in hex, and its
/// control-channel frame as it is: [`crate::control`]) to `out`.
pub fn write_call_body(out: &mut dyn FnMut(&[u8]), e: &CallEntry<'_>) {
    out(&e.header());
    out(e.data);
}

/// Bytes [`write_call_body`] writes.
pub fn call_body_len(e: &CallEntry<'_>) -> usize {
    CALL_HEADER_LEN + e.data.len()
}

/// Write a start entry's body for `handles` to `out`.
pub fn write_start_body(out: &mut dyn FnMut(&[u8]), handles: &[HandleInfo]) {
    let count = u32::try_from(handles.len()).unwrap_or(u32::MAX);
    out(&count.to_le_bytes());
    for h in handles {
        out(&encode_handle(h));
    }
}

/// Bytes [`write_start_body`] writes.
pub fn start_body_len(handles: &[HandleInfo]) -> usize {
    4 + handles.len() * HANDLE_ENTRY_LEN
}

/// Write a call entry's frame line (ending in `\n`) to `out`, in pieces:
/// no buffer the size of the line is needed.
pub fn write_call(out: &mut dyn FnMut(&[u8]), log: u32, e: &CallEntry<'_>) {
    write_prefix(out, log, KIND_CALL, e.seq);
    write_call_body(&mut |b| write_hex(out, b), e);
    out(b"\n");
}

/// Write a start entry's frame line for `handles`, bound to record `seq`.
pub fn write_start(out: &mut dyn FnMut(&[u8]), log: u32, seq: u64, handles: &[HandleInfo]) {
    write_prefix(out, log, KIND_START, seq);
    write_start_body(&mut |b| write_hex(out, b), handles);
    out(b"\n");
}

/// Feed a start entry's binding digest input (before SHA-256) to `sink`.
pub fn start_digest_input(sink: &mut dyn FnMut(&[u8]), handles: &[HandleInfo]) {
    sink(&START_DOMAIN);
    sink(&u32::try_from(handles.len()).unwrap_or(u32::MAX).to_le_bytes());
    for h in handles {
        sink(&encode_handle(h));
    }
}

/// Whether a console line is meant as a journal frame, damaged or not.
pub fn is_journal_line(line: &str) -> bool {
    line.starts_with("@J ")
}

#[cfg(feature = "alloc")]
pub use owned::*;

#[cfg(feature = "alloc")]
mod owned {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    /// A decoded journal entry.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Entry {
        /// A hypercall's inputs and results.
        Call { seq: u64, regs: [u64; 6], status: i64, results: [u64; 3], data: Vec<u8> },
        /// The handles the partition started with.
        Start { seq: u64, handles: Vec<HandleInfo> },
    }

    impl Entry {
        /// The sequence number of the record the entry is bound to.
        pub fn seq(&self) -> u64 {
            match self {
                Entry::Call { seq, .. } | Entry::Start { seq, .. } => *seq,
            }
        }

        /// Encode as one frame line ending in `\n` for log `log`.
        pub fn encode(&self, log: u32) -> Vec<u8> {
            let mut line = Vec::new();
            let mut out = |b: &[u8]| line.extend_from_slice(b);
            match self {
                Entry::Call { seq, regs, status, results, data } => write_call(
                    &mut out,
                    log,
                    &CallEntry { seq: *seq, regs: *regs, status: *status, results: *results, data },
                ),
                Entry::Start { seq, handles } => write_start(&mut out, log, *seq, handles),
            }
            line
        }
    }

    /// A decoded journal frame.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct JournalFrame {
        pub log: u32,
        pub entry: Entry,
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    }

    impl JournalFrame {
        /// Decode one line (with or without its `\n`). `None`: not a journal
        /// frame, or a damaged one.
        pub fn parse(line: &str) -> Option<Self> {
            let line = line.trim_end_matches(['\n', '\r']);
            if line.len() > MAX_LINE_LEN {
                return None;
            }
            let mut parts = line.split(' ');
            if parts.next()? != TAG {
                return None;
            }
            let log: u32 = parts.next()?.parse().ok()?;
            let kind = parts.next()?;
            let seq: u64 = parts.next()?.parse().ok()?;
            let text = parts.next()?;
            if parts.next().is_some() || text.len() % 2 != 0 {
                return None;
            }
            let mut bytes = vec![0u8; text.len() / 2];
            hex::decode(text.as_bytes(), &mut bytes)?;
            Self::from_body(log, kind, seq, &bytes)
        }

        /// The entry of log `log` whose kind is `kind` ([`KIND_CALL`] or
        /// [`KIND_START`]), bound to record `seq`, from its body (what
        /// [`write_call_body`] or [`write_start_body`] wrote). `None`: a
        /// damaged body or an unknown kind.
        pub fn from_body(log: u32, kind: &str, seq: u64, bytes: &[u8]) -> Option<Self> {
            if bytes.len() > CALL_HEADER_LEN + MAX_DATA {
                return None;
            }
            let entry = match kind {
                KIND_CALL => {
                    if bytes.len() < CALL_HEADER_LEN {
                        return None;
                    }
                    let mut regs = [0u64; 6];
                    for (i, r) in regs.iter_mut().enumerate() {
                        *r = u64_at(bytes, i * 8);
                    }
                    let status = i64::from_le_bytes(u64_at(bytes, 48).to_le_bytes());
                    let results = [u64_at(bytes, 56), u64_at(bytes, 64), u64_at(bytes, 72)];
                    Entry::Call { seq, regs, status, results, data: bytes[CALL_HEADER_LEN..].to_vec() }
                }
                KIND_START => {
                    let count = usize::try_from(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
                    let rest = &bytes[4..];
                    if rest.len() != count.checked_mul(HANDLE_ENTRY_LEN)? {
                        return None;
                    }
                    let handles = rest
                        .chunks_exact(HANDLE_ENTRY_LEN)
                        .map(|c| HandleInfo { raw: u64_at(c, 0), kind: c[8], rights: c[9], agent: c[10] })
                        .collect();
                    Entry::Start { seq, handles }
                }
                _ => return None,
            };
            Some(Self { log, entry })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn entries_round_trip() {
            let entries = [
                Entry::Call {
                    seq: u64::MAX,
                    regs: [1, 2, 3, u64::MAX, 5, 6],
                    status: -7,
                    results: [8, 9, 10],
                    data: b"hello".to_vec(),
                },
                Entry::Call { seq: 0, regs: [0; 6], status: 0, results: [0; 3], data: Vec::new() },
                Entry::Start { seq: 3, handles: vec![HandleInfo { raw: 0x1_0002, kind: 4, rights: 3, agent: 1 }] },
                Entry::Start { seq: 4, handles: Vec::new() },
            ];
            for e in entries {
                let line = e.encode(u32::MAX);
                let text = core::str::from_utf8(&line).unwrap();
                assert!(text.ends_with('\n') && is_journal_line(text));
                assert_eq!(JournalFrame::parse(text), Some(JournalFrame { log: u32::MAX, entry: e }));
            }
        }

        #[test]
        fn damage_is_not_an_entry() {
            let e = Entry::Call { seq: 1, regs: [0; 6], status: 0, results: [0; 3], data: vec![1, 2] };
            let line = alloc::string::String::from_utf8(e.encode(1)).unwrap();
            assert!(JournalFrame::parse(&line[..line.len() - 2]).is_none(), "odd hex length");
            assert!(JournalFrame::parse(&line.replace(" c ", " x ")).is_none(), "unknown kind");
            assert!(JournalFrame::parse("@J 1 c 2 00").is_none(), "short header");
            assert!(JournalFrame::parse("@J 1 s 2 01000000").is_none(), "count without handles");
            assert!(JournalFrame::parse("@W 1 c 2 00").is_none());
        }

        #[test]
        fn the_largest_entry_fits_max_line_len() {
            let e = Entry::Call { seq: u64::MAX, regs: [0; 6], status: 0, results: [0; 3], data: vec![0; MAX_DATA] };
            assert_eq!(e.encode(u32::MAX).len(), MAX_LINE_LEN + 1);
        }
    }
}
