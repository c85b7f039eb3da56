//! The offline verifier: records, checkpoints and the public key in, a
//! summary or the first problem out.
//!
//! First every checkpoint on its own, in file order: signature, log id, no
//! roll-back. Then records and checkpoints are walked as one stream in
//! which each checkpoint sits right after the last record it covers. For
//! each record: version, `seq`, partition, `prev` link, then one SHA-256 to
//! advance the head (and, when roots are checked, a leaf hash into a
//! compact range). At each checkpoint: the head (and root) it signs
//! against the ones recomputed, and whether the record before it announced
//! it.

use crate::chain::chain_step;
use crate::checkpoint::SignedCheckpoint;
use crate::hash::Hash;
use crate::key::{PublicKey, SignatureError};
use crate::log::LogId;
use crate::merkle::CompactRange;
use core::fmt;
use rvm_abi::witness::{flags, WitnessRecord, RECORD_LEN};

/// Whether the verifier recomputes Merkle roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootCheck {
    /// Recompute the RFC 6962 root at every checkpoint (two more SHA-256
    /// per record, amortised).
    Check,
    /// Check the chain heads only. Tampering is still detected (the signed
    /// head covers every record byte); a wrong root would only show when a
    /// proof is checked.
    Skip,
}

/// Everything the verifier reads.
#[derive(Clone, Copy, Debug)]
pub struct VerifyInput<'a> {
    /// The log these records must belong to.
    pub log: LogId,
    /// Records back to back, 64 bytes each.
    pub records: &'a [u8],
    /// Checkpoints in the order they were written.
    pub checkpoints: &'a [SignedCheckpoint],
    /// The key that must have signed them.
    pub key: &'a PublicKey,
    pub roots: RootCheck,
}

/// A log that verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifySummary {
    pub log: LogId,
    /// Whole records checked.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Records covered by the newest checkpoint.
    pub signed: u64,
    /// Records after the newest checkpoint: chained, but not yet signed.
    pub unsigned: u64,
    /// Chain head after the last record.
    pub head: Hash,
    /// Whether Merkle roots were recomputed and matched.
    pub roots_checked: bool,
    /// The last record announced a checkpoint that is not there (the stream
    /// ended between the two); it is counted in `unsigned`.
    pub final_checkpoint_missing: bool,
}

/// Where verification stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The record with this index (0-based position in the file).
    Record(u64),
    /// The checkpoint with this ordinal (0-based position in the
    /// checkpoint file), which claims `size` records.
    Checkpoint { ordinal: usize, size: u64 },
}

/// What was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The file ends inside a record: `len` bytes after the last whole one.
    PartialRecord { len: usize },
    /// The record's format version is not one this verifier reads.
    BadVersion { found: u8 },
    /// The record's `seq` is not its position: a record was deleted,
    /// inserted or moved.
    SeqMismatch { expected: u64, found: u64 },
    /// The record's `prev` does not match the head after the record
    /// before it: that record's bytes, or this record's `prev`, changed.
    PrevMismatch,
    /// The record names a partition that does not write to this log (a
    /// record from another log).
    PartitionMismatch { found: u32 },
    /// The checkpoint's signature does not verify.
    BadSignature(SignatureError),
    /// The checkpoint is for another log.
    WrongLog { found: LogId },
    /// The checkpoint covers fewer records than one written before it.
    RolledBack { previous: u64 },
    /// The records since the previous checkpoint (from `from`) do not hash
    /// to the signed head.
    HeadMismatch { from: u64 },
    /// The records do not hash to the signed Merkle root.
    RootMismatch,
    /// The checkpoint covers more records than the file holds.
    Truncated { records: u64 },
    /// The record announced a checkpoint (`CHECKPOINTED` flag) that is not
    /// in the checkpoint file, though later records are.
    CheckpointMissing,
}

/// The first problem found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    pub at: Location,
    pub reason: FailReason,
}

impl VerifyFailure {
    /// The first record that cannot be trusted: the failing record, or the
    /// last record a failing checkpoint covers.
    pub fn first_bad_record(&self) -> Option<u64> {
        match (self.at, self.reason) {
            (Location::Record(i), _) => Some(i),
            (
                Location::Checkpoint { size, .. },
                FailReason::HeadMismatch { .. } | FailReason::RootMismatch,
            ) => size.checked_sub(1),
            (Location::Checkpoint { .. }, FailReason::Truncated { records }) => Some(records),
            _ => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Record(i) => write!(f, "record {i}"),
            Location::Checkpoint { ordinal, size } => {
                write!(f, "checkpoint #{ordinal} (size {size})")
            }
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::PartialRecord { len } => {
                write!(f, "the file ends {len} bytes into a record (cut short)")
            }
            FailReason::BadVersion { found } => write!(f, "unknown record version {found}"),
            FailReason::SeqMismatch { expected, found } => write!(
                f,
                "has seq {found} where seq {expected} belongs (a record was deleted, inserted or moved)"
            ),
            FailReason::PrevMismatch => write!(
                f,
                "does not link to the record before it (that record was altered, or this record's prev field was)"
            ),
            FailReason::PartitionMismatch { found } => {
                write!(f, "belongs to partition {found}, not this log (spliced from another log)")
            }
            FailReason::BadSignature(e) => write!(f, "bad signature: {e}"),
            FailReason::WrongLog { found } => write!(f, "is a checkpoint of log {found}, not this log"),
            FailReason::RolledBack { previous } => write!(
                f,
                "covers fewer records than checkpoint of size {previous} before it (rolled back)"
            ),
            FailReason::HeadMismatch { from } => write!(
                f,
                "signs a chain head that records {from} onwards do not hash to (altered or replaced records)"
            ),
            FailReason::RootMismatch => write!(f, "signs a Merkle root the records do not hash to"),
            FailReason::Truncated { records } => write!(
                f,
                "covers more records than the {records} in the file (truncated after a checkpoint)"
            ),
            FailReason::CheckpointMissing => write!(
                f,
                "announces a checkpoint that is missing from the checkpoint file"
            ),
        }
    }
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

fn fail<T>(at: Location, reason: FailReason) -> Result<T, VerifyFailure> {
    Err(VerifyFailure { at, reason })
}

struct Walk<'a> {
    input: VerifyInput<'a>,
    next_cp: usize,
    newest: Option<u64>,
    /// Size of the newest checkpoint whose head matched (start of the
    /// range a head mismatch is blamed on).
    checked_to: u64,
}

impl Walk<'_> {
    /// Check the checkpoints that sit at position `count` (after `count`
    /// records), and with `ended`, every checkpoint left over.
    fn checkpoints_at(
        &mut self,
        count: u64,
        head: &Hash,
        range: &CompactRange,
        ended: bool,
    ) -> Result<bool, VerifyFailure> {
        let mut saw_this_size = false;
        while let Some(cp) = self.input.checkpoints.get(self.next_cp) {
            let c = &cp.checkpoint;
            if c.size > count && !ended {
                break;
            }
            let at = Location::Checkpoint {
                ordinal: self.next_cp,
                size: c.size,
            };
            // Signatures, log ids and order were checked up front.
            if c.size > count {
                return fail(at, FailReason::Truncated { records: count });
            }
            // Here c.size == count: sizes never decrease (checked up front)
            // and smaller ones were handled when the walk passed them.
            if c.head != *head {
                return fail(
                    at,
                    FailReason::HeadMismatch {
                        from: self.checked_to,
                    },
                );
            }
            if self.input.roots == RootCheck::Check && c.root != range.root() {
                return fail(at, FailReason::RootMismatch);
            }
            self.checked_to = c.size;
            self.newest = Some(c.size);
            saw_this_size = true;
            self.next_cp += 1;
        }
        Ok(saw_this_size)
    }
}

/// Every checkpoint on its own, in file order: signed by the key, for this
/// log, and not smaller than one before it.
fn check_checkpoints(input: &VerifyInput<'_>) -> Result<(), VerifyFailure> {
    let mut newest: Option<u64> = None;
    for (ordinal, cp) in input.checkpoints.iter().enumerate() {
        let c = &cp.checkpoint;
        let at = Location::Checkpoint {
            ordinal,
            size: c.size,
        };
        if let Err(e) = cp.verify(input.key) {
            return fail(at, FailReason::BadSignature(e));
        }
        if c.log != input.log {
            return fail(at, FailReason::WrongLog { found: c.log });
        }
        if let Some(previous) = newest.filter(|&p| c.size < p) {
            return fail(at, FailReason::RolledBack { previous });
        }
        newest = Some(c.size);
    }
    Ok(())
}

/// Verify a log. `Ok` means every record is in place and linked and every
/// checkpoint is genuine and matches; records after the newest checkpoint
/// are reported as not yet signed.
pub fn verify_log(input: VerifyInput<'_>) -> Result<VerifySummary, VerifyFailure> {
    check_checkpoints(&input)?;
    let mut walk = Walk {
        input,
        next_cp: 0,
        newest: None,
        checked_to: 0,
    };
    let mut head = Hash::ZERO;
    let mut range = CompactRange::new();
    let mut count: u64 = 0;
    // A checkpoint announced by the previous record.
    let mut announced = false;
    let mut chunks = input.records.chunks_exact(RECORD_LEN);
    for chunk in chunks.by_ref() {
        let at = Location::Record(count);
        let found = walk.checkpoints_at(count, &head, &range, false)?;
        if announced && !found {
            return fail(Location::Record(count - 1), FailReason::CheckpointMissing);
        }
        let bytes: &[u8; RECORD_LEN] = chunk.try_into().unwrap_or(&[0; RECORD_LEN]);
        let rec = match WitnessRecord::from_bytes(bytes) {
            Ok(r) => r,
            Err(rvm_abi::witness::RecordError::Version(found)) => {
                return fail(at, FailReason::BadVersion { found })
            }
        };
        if rec.seq != count {
            return fail(
                at,
                FailReason::SeqMismatch {
                    expected: count,
                    found: rec.seq,
                },
            );
        }
        if !input.log.admits(rec.partition) {
            return fail(
                at,
                FailReason::PartitionMismatch {
                    found: rec.partition,
                },
            );
        }
        if rec.prev != head.prefix16() {
            return fail(at, FailReason::PrevMismatch);
        }
        head = chain_step(&head, bytes);
        if input.roots == RootCheck::Check {
            range.push(bytes);
        }
        announced = rec.flags & flags::CHECKPOINTED != 0;
        count += 1;
    }
    let found = walk.checkpoints_at(count, &head, &range, false)?;
    // Checkpoints beyond the end: the file was cut after them.
    walk.checkpoints_at(count, &head, &range, true)?;
    let partial = chunks.remainder().len();
    if partial != 0 {
        return fail(
            Location::Record(count),
            FailReason::PartialRecord { len: partial },
        );
    }
    let signed = walk.newest.unwrap_or(0);
    Ok(VerifySummary {
        log: input.log,
        records: count,
        checkpoints: walk.next_cp,
        signed,
        unsigned: count - signed,
        head,
        roots_checked: input.roots == RootCheck::Check,
        final_checkpoint_missing: announced && !found,
    })
}
