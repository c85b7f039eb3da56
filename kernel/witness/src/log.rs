//! One log's writer, as the kernel holds it: chain head, record ring,
//! Merkle compact range, checkpoints waiting to be streamed.

use crate::chain::chain_step;
use crate::checkpoint::{Checkpoint, CheckpointPolicy, SignedCheckpoint};
use crate::hash::Hash;
use crate::key::CheckpointSigner;
use crate::merkle::CompactRange;
use crate::ring::RecordRing;
use alloc::collections::VecDeque;
use core::fmt;
use core::num::NonZeroUsize;
use rvm_abi::frame::Frame;
use rvm_abi::witness::{flags, WitnessRecord, HYPERVISOR_LOG, RECORD_LEN, RECORD_VERSION};

/// Which chain: the partition id, or [`HYPERVISOR_LOG`] for the
/// hypervisor's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(pub u32);

impl LogId {
    /// The hypervisor's own log.
    pub const HYPERVISOR: LogId = LogId(HYPERVISOR_LOG);

    /// Whether a record naming `partition` belongs in this log. A
    /// partition's log holds only records of that partition; the
    /// hypervisor's log may name any partition its events concern.
    pub fn admits(self, partition: u32) -> bool {
        self == Self::HYPERVISOR || partition == self.0
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a log is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Records the ring holds. When that many are waiting for the streamer,
    /// appends fail.
    pub ring_capacity: NonZeroUsize,
    /// When checkpoints are due.
    pub checkpoints: CheckpointPolicy,
}

impl LogConfig {
    /// Ring records by default (64 KiB).
    pub const DEFAULT_RING: NonZeroUsize = match NonZeroUsize::new(1024) {
        Some(n) => n,
        None => unreachable!(),
    };
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            ring_capacity: Self::DEFAULT_RING,
            checkpoints: CheckpointPolicy::default(),
        }
    }
}

/// Why a record was not appended. In every case the log is unchanged and
/// the operation the record describes must not take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WitnessError {
    /// Every ring slot holds a record the host has not drained yet.
    RingFull { capacity: NonZeroUsize },
    /// The record's `version` is not [`RECORD_VERSION`].
    Version { found: u8 },
    /// The record names a partition whose records do not go to this log.
    WrongPartition { log: LogId, partition: u32 },
    /// The log has used every sequence number.
    SequenceExhausted,
    /// The previous record required a checkpoint that has not been signed.
    CheckpointOwed { size: u64 },
    /// The heap could not provide memory the log needs.
    NoMemory,
    /// A record the Merkle range still needs has left the ring (a bug; the
    /// log refuses to sign rather than sign a wrong root).
    MerkleGap { seq: u64 },
}

impl fmt::Display for WitnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WitnessError::RingFull { capacity } => {
                write!(
                    f,
                    "all {capacity} ring slots hold records the host has not drained"
                )
            }
            WitnessError::Version { found } => {
                write!(
                    f,
                    "record version {found}, this log writes version {RECORD_VERSION}"
                )
            }
            WitnessError::WrongPartition { log, partition } => {
                write!(
                    f,
                    "a record of partition {partition} does not belong in log {log}"
                )
            }
            WitnessError::SequenceExhausted => write!(f, "the log has used every sequence number"),
            WitnessError::CheckpointOwed { size } => {
                write!(f, "the checkpoint due at size {size} has not been signed")
            }
            WitnessError::NoMemory => write!(f, "out of memory"),
            WitnessError::MerkleGap { seq } => {
                write!(
                    f,
                    "record {seq} left the ring before it entered the Merkle tree"
                )
            }
        }
    }
}

impl From<WitnessError> for rvm_abi::HvError {
    fn from(_: WitnessError) -> Self {
        rvm_abi::HvError::WitnessUnavailable
    }
}

/// Why a log could not continue an earlier boot's ([`WitnessLog::resume`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeError {
    /// The checkpoint is of another log.
    OtherLog { found: LogId },
    /// Its signature does not verify under this hypervisor's key.
    Signature,
    /// The frontier does not fold to the checkpoint's root.
    Frontier,
    /// The heap could not provide the ring.
    NoMemory,
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeError::OtherLog { found } => write!(f, "the checkpoint is of log {found}"),
            ResumeError::Signature => write!(f, "the checkpoint's signature does not verify under this hypervisor's witness key"),
            ResumeError::Frontier => write!(f, "the Merkle frontier does not fold to the checkpoint's root"),
            ResumeError::NoMemory => write!(f, "out of memory"),
        }
    }
}

/// What [`WitnessLog::append`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedRecord {
    /// The record's sequence number.
    pub seq: u64,
    /// The chain head after it.
    pub head: Hash,
    /// A checkpoint is due now: call [`WitnessLog::checkpoint`] before the
    /// next append (which otherwise fails with
    /// [`WitnessError::CheckpointOwed`]). The record carries
    /// [`flags::CHECKPOINTED`].
    pub checkpoint_due: bool,
}

/// The next thing the console streamer should send for a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A record, as an `@W` frame.
    Record { seq: u64, bytes: [u8; RECORD_LEN] },
    /// A signed checkpoint, as an `@C` frame (sent after the records it covers).
    Checkpoint(SignedCheckpoint),
}

impl Outgoing {
    /// The frame for the console UART.
    pub fn to_frame(&self, log: LogId) -> Frame {
        match self {
            Outgoing::Record { bytes, .. } => Frame::Record {
                log: log.0,
                bytes: *bytes,
            },
            Outgoing::Checkpoint(c) => c.to_frame(),
        }
    }
}

/// One log: the kernel calls [`append`](Self::append) *before* the
/// operation takes effect, [`checkpoint`](Self::checkpoint) when an append
/// says one is due (or on demand), and the console streamer calls
/// [`drain_next`](Self::drain_next) to send frames in order.
pub struct WitnessLog {
    id: LogId,
    policy: CheckpointPolicy,
    head: Hash,
    ring: RecordRing,
    /// Covers records `0..merkle.size()`; always at or past the drain cursor.
    merkle: CompactRange,
    /// Signed checkpoints not yet streamed, in size order.
    pending: VecDeque<SignedCheckpoint>,
    last_checkpoint: Option<SignedCheckpoint>,
    /// The size a checkpoint is owed at.
    owed: Option<u64>,
    /// Appends the log has room held for ([`WitnessLog::reserve`]).
    held: usize,
}

impl WitnessLog {
    /// An empty log; takes the ring's memory now.
    pub fn new(id: LogId, config: LogConfig) -> Result<Self, WitnessError> {
        let ring = RecordRing::new(config.ring_capacity).map_err(|_| WitnessError::NoMemory)?;
        let mut pending = VecDeque::new();
        pending.try_reserve(4).map_err(|_| WitnessError::NoMemory)?;
        Ok(Self {
            id,
            policy: config.checkpoints,
            head: Hash::ZERO,
            ring,
            merkle: CompactRange::new(),
            pending,
            last_checkpoint: None,
            owed: None,
            held: 0,
        })
    }

    /// The log that continues an earlier boot's: `from` is that boot's
    /// last signed checkpoint of this log, `frontier` the right edge of its
    /// Merkle tree at that size ([`CompactRange::frontier`]). Accepted only
    /// if the checkpoint is this log's, verifies under `key`, and the
    /// frontier folds to its root; the next record then has seq
    /// `from.size` and chains to `from.head`, and the tree grows on.
    pub fn resume(
        id: LogId,
        config: LogConfig,
        from: &SignedCheckpoint,
        frontier: &[Hash],
        key: &crate::key::PublicKey,
    ) -> Result<Self, ResumeError> {
        let cp = &from.checkpoint;
        if cp.log != id {
            return Err(ResumeError::OtherLog { found: cp.log });
        }
        from.verify(key).map_err(|_| ResumeError::Signature)?;
        let merkle = CompactRange::from_frontier(cp.size, frontier).ok_or(ResumeError::Frontier)?;
        if merkle.root() != cp.root {
            return Err(ResumeError::Frontier);
        }
        let ring = RecordRing::starting_at(config.ring_capacity, cp.size).map_err(|_| ResumeError::NoMemory)?;
        let mut pending = VecDeque::new();
        pending.try_reserve(4).map_err(|_| ResumeError::NoMemory)?;
        Ok(Self {
            id,
            policy: config.checkpoints,
            head: cp.head,
            ring,
            merkle,
            pending,
            last_checkpoint: Some(*from),
            owed: None,
            held: 0,
        })
    }

    /// The right edge of the Merkle tree over the records folded in so far
    /// (all drained ones; after a checkpoint, every record it covers).
    pub fn frontier(&self) -> (u64, &[Hash]) {
        (self.merkle.size(), self.merkle.frontier())
    }

    /// The log's id.
    pub fn id(&self) -> LogId {
        self.id
    }

    /// Records appended so far (the next record's seq).
    pub fn size(&self) -> u64 {
        self.ring_next()
    }

    fn ring_next(&self) -> u64 {
        self.ring.drain_cursor() + self.ring.undrained()
    }

    /// The chain head after the last record (`Hash::ZERO` when empty).
    pub fn head(&self) -> Hash {
        self.head
    }

    /// Records appended but not yet drained.
    pub fn undrained(&self) -> u64 {
        self.ring.undrained()
    }

    /// The ring's capacity.
    pub fn ring_capacity(&self) -> NonZeroUsize {
        self.ring.capacity()
    }

    /// A recent record by seq, while the ring still holds it.
    pub fn record(&self, seq: u64) -> Option<&[u8; RECORD_LEN]> {
        self.ring.get(seq)
    }

    /// The newest signed checkpoint.
    pub fn last_checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.last_checkpoint.as_ref()
    }

    /// Make room for the next record now (see [`reserve`](Self::reserve)).
    pub fn reserve_next(&mut self) -> Result<(), WitnessError> {
        self.reserve(1)
    }

    /// Hold room for `n` more records, on top of what is held already, so
    /// that the next appends of well-formed records of this log cannot fail:
    /// no checkpoint owed, sequence numbers left, free ring slots (held: no
    /// other append takes them), and memory for the checkpoints they may
    /// announce. For operations that must be decided and applied before their
    /// records can be written (a record carries a result, or a change must
    /// not be half witnessed): reserve, apply, append. A due checkpoint must
    /// still be signed before the next append (as it always must). On `Err`
    /// nothing is held.
    pub fn reserve(&mut self, n: usize) -> Result<(), WitnessError> {
        if let Some(size) = self.owed {
            return Err(WitnessError::CheckpointOwed { size });
        }
        let total = self.held.checked_add(n).ok_or(WitnessError::SequenceExhausted)?;
        self.size()
            .checked_add(total as u64)
            .ok_or(WitnessError::SequenceExhausted)?;
        if self.ring.free() < total as u64 {
            return Err(WitnessError::RingFull {
                capacity: self.ring.capacity(),
            });
        }
        let owed = self.pending.len();
        self.pending
            .try_reserve(total)
            .map_err(|_| WitnessError::NoMemory)?;
        debug_assert!(self.pending.capacity() >= owed + total);
        self.held = total;
        Ok(())
    }

    /// Give back `n` held slots (an operation that wrote fewer records).
    pub fn unreserve(&mut self, n: usize) {
        self.held = self.held.saturating_sub(n);
    }

    /// Appends room is held for.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether a checkpoint is due and not signed yet (appends and
    /// reservations are refused until it is).
    pub fn owes_checkpoint(&self) -> bool {
        self.owed.is_some()
    }

    /// Append a record: fill `seq` and `prev`, set [`flags::CHECKPOINTED`]
    /// if the policy calls for a checkpoint, advance the head. Exactly two
    /// outcomes: `Ok`, the record is in the chain; `Err`, nothing changed
    /// and the caller must not perform the operation. Takes a held slot if
    /// there is one; an append without one must leave the held slots free.
    #[inline]
    pub fn append(&mut self, mut record: WitnessRecord) -> Result<AppendedRecord, WitnessError> {
        if let Some(size) = self.owed {
            return Err(WitnessError::CheckpointOwed { size });
        }
        if record.version != RECORD_VERSION {
            return Err(WitnessError::Version {
                found: record.version,
            });
        }
        if !self.id.admits(record.partition) {
            return Err(WitnessError::WrongPartition {
                log: self.id,
                partition: record.partition,
            });
        }
        let seq = self.size();
        let size_after = seq.checked_add(1).ok_or(WitnessError::SequenceExhausted)?;
        if !self.ring.has_room() {
            return Err(WitnessError::RingFull {
                capacity: self.ring.capacity(),
            });
        }
        record.seq = seq;
        record.prev = self.head.prefix16();
        let due = self.policy.is_due(&record, size_after);
        if due {
            record.flags |= flags::CHECKPOINTED;
            // The checkpoint this record announces must not fail for lack
            // of memory after the record is in: take the queue slot now.
            self.pending
                .try_reserve(1)
                .map_err(|_| WitnessError::NoMemory)?;
        }
        let bytes = record.to_bytes();
        let head = chain_step(&self.head, &bytes);
        // has_room held, so the push cannot refuse; check anyway rather than
        // let the head move without the record.
        if !self.ring.push(bytes) {
            return Err(WitnessError::RingFull {
                capacity: self.ring.capacity(),
            });
        }
        self.head = head;
        self.held = self.held.saturating_sub(1);
        if due {
            self.owed = Some(size_after);
        }
        Ok(AppendedRecord {
            seq,
            head,
            checkpoint_due: due,
        })
    }

    /// Fold records into the Merkle range up to `size`.
    fn fold_to(&mut self, size: u64) -> Result<(), WitnessError> {
        while self.merkle.size() < size {
            let seq = self.merkle.size();
            let rec = self.ring.get(seq).ok_or(WitnessError::MerkleGap { seq })?;
            let rec = *rec;
            self.merkle.push(&rec);
        }
        Ok(())
    }

    /// Sign a checkpoint of the current head (and Merkle root) and queue it
    /// for the streamer. A checkpoint of the same size as the last one is
    /// not signed again; the last one is returned. Right after an append
    /// that reported `checkpoint_due` this cannot fail (the memory was
    /// reserved by the append, and every record not yet in the Merkle range
    /// is still undrained, hence in the ring).
    pub fn checkpoint(
        &mut self,
        signer: &CheckpointSigner,
    ) -> Result<SignedCheckpoint, WitnessError> {
        let size = self.size();
        if let Some(last) = self.last_checkpoint.filter(|c| c.checkpoint.size == size) {
            self.owed = None;
            return Ok(last);
        }
        self.fold_to(size)?;
        self.pending
            .try_reserve(1)
            .map_err(|_| WitnessError::NoMemory)?;
        let cp = Checkpoint {
            log: self.id,
            size,
            root: self.merkle.root(),
            head: self.head,
        };
        let signed = cp.sign(signer);
        self.pending.push_back(signed);
        self.last_checkpoint = Some(signed);
        self.owed = None;
        Ok(signed)
    }

    /// What the streamer should send next, without taking it.
    pub fn peek_outgoing(&self) -> Option<Outgoing> {
        if let Some(cp) = self.pending.front() {
            if cp.checkpoint.size <= self.ring.drain_cursor() {
                return Some(Outgoing::Checkpoint(*cp));
            }
        }
        let seq = self.ring.drain_cursor();
        self.ring
            .get(seq)
            .map(|bytes| Outgoing::Record { seq, bytes: *bytes })
    }

    /// Mark what [`peek_outgoing`](Self::peek_outgoing) returned as sent.
    /// A drained record is folded into the Merkle range before its slot may
    /// be reused.
    pub fn advance_outgoing(&mut self) -> Result<(), WitnessError> {
        if let Some(cp) = self.pending.front() {
            if cp.checkpoint.size <= self.ring.drain_cursor() {
                self.pending.pop_front();
                return Ok(());
            }
        }
        let seq = self.ring.drain_cursor();
        if seq < self.size() {
            self.fold_to(seq + 1)?;
            self.ring.advance_drain();
        }
        Ok(())
    }

    /// Take the next thing to send (a record or a checkpoint), in order.
    pub fn drain_next(&mut self) -> Option<Outgoing> {
        let next = self.peek_outgoing()?;
        self.advance_outgoing().ok()?;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MerkleTree;
    use core::num::NonZeroU64;
    use rvm_abi::witness::{KernelEvent, Outcome, WitnessOp};
    use rvm_abi::Hypercall;
    use std::vec::Vec;

    fn signer() -> CheckpointSigner {
        CheckpointSigner::from_seed(&[9; 32])
    }

    fn config(ring: usize, every: u64) -> LogConfig {
        LogConfig {
            ring_capacity: NonZeroUsize::new(ring).unwrap(),
            checkpoints: CheckpointPolicy::every(NonZeroU64::new(every).unwrap()),
        }
    }

    fn call(partition: u32) -> WitnessRecord {
        let mut r = WitnessRecord::new(
            WitnessOp::Call(Hypercall::ChannelSend),
            Outcome::Done,
            partition,
        );
        r.timestamp = 5;
        r
    }

    /// Append `n` records to `log`, signing checkpoints as they fall due
    /// and draining as a host would; every record drained, in order.
    fn run(log: &mut WitnessLog, n: usize, id: u32, out: &mut Vec<[u8; RECORD_LEN]>) {
        for _ in 0..n {
            if log.append(call(id)).unwrap().checkpoint_due {
                log.checkpoint(&signer()).unwrap();
            }
            while let Some(o) = log.drain_next() {
                if let Outgoing::Record { bytes, .. } = o {
                    out.push(bytes);
                }
            }
        }
    }

    #[test]
    fn a_resumed_log_grows_the_same_chain_and_tree_as_one_that_never_stopped() {
        let key = signer().public_key();
        // One boot of 13 records, then 8 more after a restart...
        let mut first = WitnessLog::new(LogId(3), config(8, 5)).unwrap();
        let mut records = Vec::new();
        run(&mut first, 13, 3, &mut records);
        let last = first.checkpoint(&signer()).unwrap();
        let (size, frontier) = first.frontier();
        assert_eq!(size, 13);
        let frontier: Vec<Hash> = frontier.to_vec();
        let mut second = WitnessLog::resume(LogId(3), config(8, 5), &last, &frontier, &key).unwrap();
        assert_eq!(second.size(), 13);
        run(&mut second, 8, 3, &mut records);
        let across = second.checkpoint(&signer()).unwrap();
        // ... is the log of one boot of 21.
        let mut whole = WitnessLog::new(LogId(3), config(8, 5)).unwrap();
        let mut once = Vec::new();
        run(&mut whole, 21, 3, &mut once);
        let straight = whole.checkpoint(&signer()).unwrap();
        assert_eq!(records, once, "the same records, seq and prev included");
        assert_eq!(across, straight, "the same head, root and signature");
        let tree = MerkleTree::from_leaves(records.iter().map(|r| &r[..]));
        assert_eq!(tree.root(21).unwrap(), across.checkpoint.root);
        // A consistency proof spans the restart.
        let proof = tree.consistency_proof(13, 21).unwrap();
        crate::merkle::verify_consistency(13, 21, &last.checkpoint.root, &across.checkpoint.root, &proof).unwrap();
    }

    #[test]
    fn a_log_resumes_only_from_its_own_checkpoint_signed_by_this_key_with_its_frontier() {
        let key = signer().public_key();
        let mut log = WitnessLog::new(LogId(3), config(8, 100)).unwrap();
        run(&mut log, 6, 3, &mut Vec::new());
        let cp = log.checkpoint(&signer()).unwrap();
        let frontier: Vec<Hash> = log.frontier().1.to_vec();
        let other_key = CheckpointSigner::from_seed(&[1; 32]).public_key();
        assert!(matches!(
            WitnessLog::resume(LogId(4), config(8, 100), &cp, &frontier, &key),
            Err(ResumeError::OtherLog { found: LogId(3) })
        ));
        assert!(matches!(WitnessLog::resume(LogId(3), config(8, 100), &cp, &frontier, &other_key), Err(ResumeError::Signature)));
        let mut moved = cp;
        moved.checkpoint.head = Hash([1; 32]);
        assert!(matches!(WitnessLog::resume(LogId(3), config(8, 100), &moved, &frontier, &key), Err(ResumeError::Signature)));
        let mut bent = frontier.clone();
        bent[0] = Hash([2; 32]);
        assert!(matches!(WitnessLog::resume(LogId(3), config(8, 100), &cp, &bent, &key), Err(ResumeError::Frontier)));
        assert!(matches!(WitnessLog::resume(LogId(3), config(8, 100), &cp, &frontier[..1], &key), Err(ResumeError::Frontier)));
    }

    #[test]
    fn a_reservation_makes_the_next_append_succeed_and_a_full_ring_refuses_it() {
        let mut log = WitnessLog::new(LogId(2), config(2, 100)).unwrap();
        log.reserve_next().unwrap();
        log.append(call(2)).unwrap();
        log.append(call(2)).unwrap();
        // Two undrained records fill a ring of two: no room to reserve.
        assert!(matches!(log.reserve_next(), Err(WitnessError::RingFull { .. })));
        assert!(log.drain_next().is_some());
        log.reserve_next().unwrap();
        log.append(call(2)).unwrap();
    }

    #[test]
    fn room_held_for_several_records_is_not_promised_twice() {
        let mut log = WitnessLog::new(LogId(2), config(4, 3)).unwrap();
        log.reserve(3).unwrap();
        assert_eq!(log.held(), 3);
        // One slot left beyond the three held: two more cannot be promised.
        assert!(matches!(log.reserve(2), Err(WitnessError::RingFull { .. })));
        assert_eq!(log.held(), 3, "a refused reservation holds nothing");
        for _ in 0..3 {
            let a = log.append(call(2)).unwrap();
            if a.checkpoint_due {
                assert!(log.owes_checkpoint());
                assert!(matches!(log.reserve(1), Err(WitnessError::CheckpointOwed { .. })));
                log.checkpoint(&signer()).unwrap();
            }
        }
        assert_eq!(log.held(), 0);
        log.reserve(1).unwrap();
        log.unreserve(1);
        assert_eq!(log.held(), 0);
    }

    #[test]
    fn append_has_two_outcomes_under_random_operations() {
        // Err: size and head unchanged; Ok: exactly one more record, linked.
        let s = signer();
        let mut log = WitnessLog::new(LogId(1), config(3, 4)).unwrap();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let (mut oks, mut errs) = (0, 0);
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 5 {
                0 => {
                    let _ = log.drain_next();
                }
                1 if x & 0x100 != 0 => {
                    let _ = log.checkpoint(&s);
                }
                2 => {
                    let _ = log.reserve((x >> 20) as usize % 3);
                }
                _ => {
                    let (size, head) = (log.size(), log.head());
                    match log.append(call(1)) {
                        Ok(a) => {
                            oks += 1;
                            assert_eq!((a.seq, log.size()), (size, size + 1));
                            let rec = WitnessRecord::from_bytes(log.record(a.seq).unwrap()).unwrap();
                            assert_eq!(rec.prev, head.prefix16());
                        }
                        Err(_) => {
                            errs += 1;
                            assert_eq!((log.size(), log.head()), (size, head));
                        }
                    }
                }
            }
        }
        assert!(oks > 100 && errs > 100, "{oks} {errs}");
    }

    #[test]
    fn append_fills_chain_fields() {
        let mut log = WitnessLog::new(LogId(2), config(8, 100)).unwrap();
        let a = log.append(call(2)).unwrap();
        let b = log.append(call(2)).unwrap();
        assert_eq!((a.seq, b.seq), (0, 1));
        let (a_bytes, b_bytes) = (*log.record(0).unwrap(), *log.record(1).unwrap());
        let ra = WitnessRecord::from_bytes(&a_bytes).unwrap();
        let rb = WitnessRecord::from_bytes(&b_bytes).unwrap();
        assert_eq!(ra.prev, [0; 16]);
        assert_eq!(rb.prev, a.head.prefix16());
        assert_eq!(a.head, chain_step(&Hash::ZERO, &a_bytes));
        assert_eq!(b.head, chain_step(&a.head, &b_bytes));
        assert_eq!(log.head(), b.head);
    }

    #[test]
    fn full_ring_fails_closed_and_changes_nothing() {
        let mut log = WitnessLog::new(LogId(1), config(2, 100)).unwrap();
        log.append(call(1)).unwrap();
        log.append(call(1)).unwrap();
        let head = log.head();
        let err = log.append(call(1)).unwrap_err();
        assert_eq!(
            err,
            WitnessError::RingFull {
                capacity: NonZeroUsize::new(2).unwrap()
            }
        );
        assert_eq!(
            rvm_abi::HvError::from(err),
            rvm_abi::HvError::WitnessUnavailable
        );
        assert_eq!((log.size(), log.head(), log.undrained()), (2, head, 2));
        // Draining one frees one slot.
        assert!(matches!(
            log.drain_next(),
            Some(Outgoing::Record { seq: 0, .. })
        ));
        assert_eq!(log.append(call(1)).unwrap().seq, 2);
        assert_eq!(log.record(0), None);
    }

    #[test]
    fn refuses_bad_records_without_change() {
        let mut log = WitnessLog::new(LogId(1), config(4, 100)).unwrap();
        let mut v = call(1);
        v.version = 9;
        assert_eq!(log.append(v), Err(WitnessError::Version { found: 9 }));
        assert_eq!(
            log.append(call(2)),
            Err(WitnessError::WrongPartition {
                log: LogId(1),
                partition: 2
            })
        );
        assert_eq!((log.size(), log.head()), (0, Hash::ZERO));
        // The hypervisor's log takes events about any partition.
        let mut hv = WitnessLog::new(LogId::HYPERVISOR, config(4, 100)).unwrap();
        let ev = WitnessRecord::new(
            WitnessOp::Event(KernelEvent::PartitionCreate),
            Outcome::Done,
            7,
        );
        assert!(hv.append(ev).is_ok());
    }

    #[test]
    fn checkpoints_are_due_owed_signed_and_streamed_in_order() {
        let s = signer();
        let mut log = WitnessLog::new(LogId(4), config(16, 3)).unwrap();
        let mut all = Vec::new();
        for i in 0..3 {
            let a = log.append(call(4)).unwrap();
            assert_eq!(a.checkpoint_due, i == 2);
            all.push(*log.record(a.seq).unwrap());
        }
        let flagged = WitnessRecord::from_bytes(&all[2]).unwrap();
        assert_ne!(flagged.flags & flags::CHECKPOINTED, 0);
        assert_eq!(
            log.append(call(4)),
            Err(WitnessError::CheckpointOwed { size: 3 })
        );
        let cp = log.checkpoint(&s).unwrap();
        cp.verify(&s.public_key()).unwrap();
        assert_eq!(cp.checkpoint.size, 3);
        assert_eq!(cp.checkpoint.head, log.head());
        let tree = MerkleTree::from_leaves(all.iter().map(|r| &r[..]));
        assert_eq!(cp.checkpoint.root, tree.root(3).unwrap());
        // Same size again: the same checkpoint, not queued twice.
        assert_eq!(log.checkpoint(&s).unwrap(), cp);
        let a = log.append(call(4)).unwrap();
        all.push(*log.record(a.seq).unwrap());
        let mut p3 = call(4);
        p3.tier = rvm_abi::ProofTier::P3 as u8;
        let a = log.append(p3).unwrap();
        assert!(a.checkpoint_due, "P3 operations are checkpointed");
        all.push(*log.record(a.seq).unwrap());
        let cp2 = log.checkpoint(&s).unwrap();
        let tree = MerkleTree::from_leaves(all.iter().map(|r| &r[..]));
        assert_eq!(cp2.checkpoint.root, tree.root(5).unwrap());

        // The streamer sees records 0..3, checkpoint 3, records 3..5, checkpoint 5.
        let mut seen = Vec::new();
        while let Some(o) = log.drain_next() {
            seen.push(match o {
                Outgoing::Record { seq, .. } => std::format!("r{seq}"),
                Outgoing::Checkpoint(c) => std::format!("c{}", c.checkpoint.size),
            });
        }
        assert_eq!(seen, ["r0", "r1", "r2", "c3", "r3", "r4", "c5"]);
        assert!(log.drain_next().is_none());
    }

    #[test]
    fn merkle_root_survives_ring_reuse() {
        // A small ring, drained continuously: the compact range must fold
        // records before their slots are reused.
        let s = signer();
        let mut log = WitnessLog::new(LogId(1), config(2, 1000)).unwrap();
        let mut all = Vec::new();
        for _ in 0..50 {
            let a = log.append(call(1)).unwrap();
            all.push(*log.record(a.seq).unwrap());
            assert!(log.drain_next().is_some());
        }
        let cp = log.checkpoint(&s).unwrap();
        let tree = MerkleTree::from_leaves(all.iter().map(|r| &r[..]));
        assert_eq!(cp.checkpoint.root, tree.root(50).unwrap());
        let o = log.drain_next();
        assert_eq!(o, Some(Outgoing::Checkpoint(cp)));
        assert_eq!(o.unwrap().to_frame(LogId(1)), cp.to_frame(),);
    }

    #[test]
    fn empty_log_checkpoint() {
        let s = signer();
        let mut log = WitnessLog::new(LogId(6), LogConfig::default()).unwrap();
        let cp = log.checkpoint(&s).unwrap();
        assert_eq!(cp.checkpoint.size, 0);
        assert_eq!(cp.checkpoint.head, Hash::ZERO);
        assert_eq!(cp.checkpoint.root, crate::merkle::empty_root());
        assert_eq!(log.drain_next(), Some(Outgoing::Checkpoint(cp)));
    }
}
