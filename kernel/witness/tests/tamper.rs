//! Every tamper class of the witness log, detected by the verifier, and a
//! property test that random corruption of a random log always is.

use core::num::{NonZeroU64, NonZeroUsize};
use proptest::prelude::*;
use rvm_abi::witness::{KernelEvent, Outcome, WitnessOp, WitnessRecord, RECORD_LEN};
use rvm_abi::{HvError, Hypercall};
use rvm_witness::{
    chain_step, verify_log, CheckpointPolicy, CheckpointSigner, FailReason, Hash, Location,
    LogConfig, LogId, Outgoing, RootCheck, SignatureError, SignedCheckpoint, VerifyFailure,
    VerifyInput, VerifySummary, WitnessLog,
};

struct Built {
    log: LogId,
    records: Vec<u8>,
    checkpoints: Vec<SignedCheckpoint>,
}

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_seed(&[0x5a; 32])
}

/// A log of `n` records (the last a shutdown event) as the host receives it:
/// everything the streamer drains.
fn build(log: LogId, n: usize, every: u64, salt: u64, key: &CheckpointSigner) -> Built {
    let config = LogConfig {
        ring_capacity: NonZeroUsize::new(4096).unwrap(),
        checkpoints: CheckpointPolicy::every(NonZeroU64::new(every).unwrap()),
    };
    let mut w = WitnessLog::new(log, config).unwrap();
    let ops = [
        WitnessOp::Call(Hypercall::ChannelSend),
        WitnessOp::Call(Hypercall::ConsoleWrite),
        WitnessOp::Event(KernelEvent::Fault),
    ];
    for i in 0..n {
        let op = if i + 1 == n {
            WitnessOp::Event(KernelEvent::Shutdown)
        } else {
            ops[i % ops.len()]
        };
        let outcome = if i % 5 == 3 {
            Outcome::Denied(HvError::NoRights)
        } else {
            Outcome::Done
        };
        let mut r = WitnessRecord::new(op, outcome, log.0);
        r.timestamp = 1000 * i as u64 + salt;
        r.tier = 1 + (i % 2) as u8;
        r.cap = i as u32;
        r.args = [(i as u8) ^ (salt as u8); 16];
        let a = w.append(r).unwrap();
        if a.checkpoint_due {
            w.checkpoint(key).unwrap();
        }
    }
    let mut out = Built {
        log,
        records: Vec::new(),
        checkpoints: Vec::new(),
    };
    while let Some(o) = w.drain_next() {
        match o {
            Outgoing::Record { bytes, .. } => out.records.extend_from_slice(&bytes),
            Outgoing::Checkpoint(c) => out.checkpoints.push(c),
        }
    }
    out
}

fn verify(
    log: LogId,
    records: &[u8],
    cps: &[SignedCheckpoint],
) -> Result<VerifySummary, VerifyFailure> {
    let key = signer().public_key();
    verify_log(VerifyInput {
        log,
        records,
        checkpoints: cps,
        key: &key,
        roots: RootCheck::Check,
    })
}

fn rec_count(b: &[u8]) -> usize {
    b.len() / RECORD_LEN
}

fn fails_at(res: Result<VerifySummary, VerifyFailure>) -> VerifyFailure {
    match res {
        Ok(s) => panic!("tampering not detected: {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn an_untouched_log_verifies_and_counts_signed_records() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    let s = verify(b.log, &b.records, &b.checkpoints).unwrap();
    assert_eq!(
        (s.records, s.signed, s.unsigned, s.checkpoints),
        (20, 20, 0, 3)
    );
    assert!(s.roots_checked && !s.final_checkpoint_missing);
    // The unsigned tail: drop the final checkpoint (and its record's claim
    // stays): the last 4 records are reported as not yet signed.
    let s = verify(b.log, &b.records, &b.checkpoints[..2]).unwrap();
    assert_eq!((s.signed, s.unsigned), (16, 4));
    assert!(s.final_checkpoint_missing);
    // No checkpoints at all: everything chained, nothing signed.
    let s = verify(b.log, &b.records[..5 * RECORD_LEN], &[]).unwrap();
    assert_eq!((s.records, s.signed, s.unsigned), (5, 0, 5));
    // Skipping roots still verifies heads.
    let key = signer().public_key();
    let s = verify_log(VerifyInput {
        log: b.log,
        records: &b.records,
        checkpoints: &b.checkpoints,
        key: &key,
        roots: RootCheck::Skip,
    })
    .unwrap();
    assert!(!s.roots_checked);
}

#[test]
fn every_bit_of_every_record_is_covered() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    for i in 0..20 {
        for byte in 0..RECORD_LEN {
            for bit in 0..8 {
                let mut r = b.records.clone();
                r[i * RECORD_LEN + byte] ^= 1 << bit;
                let e = fails_at(verify(b.log, &r, &b.checkpoints));
                let bad = e.first_bad_record().unwrap_or_else(|| panic!("{e}"));
                assert!(
                    bad == i as u64 || bad == i as u64 + 1,
                    "flip in record {i} byte {byte} bit {bit} blamed on {bad}: {e}"
                );
            }
        }
    }
}

#[test]
fn specific_fields_give_specific_reasons() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    let at = |i: usize, off: usize| i * RECORD_LEN + off;
    let mut r = b.records.clone();
    r[at(4, 0)] = 2;
    assert_eq!(
        fails_at(verify(b.log, &r, &b.checkpoints)),
        VerifyFailure {
            at: Location::Record(4),
            reason: FailReason::BadVersion { found: 2 }
        }
    );
    let mut r = b.records.clone();
    r[at(4, 50)] ^= 1; // prev
    assert_eq!(
        fails_at(verify(b.log, &r, &b.checkpoints)),
        VerifyFailure {
            at: Location::Record(4),
            reason: FailReason::PrevMismatch
        }
    );
    let mut r = b.records.clone();
    r[at(4, 20)] ^= 1; // timestamp: record 5 no longer links
    assert_eq!(
        fails_at(verify(b.log, &r, &b.checkpoints)),
        VerifyFailure {
            at: Location::Record(5),
            reason: FailReason::PrevMismatch
        }
    );
    let mut r = b.records.clone();
    r[at(7, 40)] ^= 1; // args of the last record before checkpoint 8
    assert_eq!(
        fails_at(verify(b.log, &r, &b.checkpoints)),
        VerifyFailure {
            at: Location::Checkpoint {
                ordinal: 0,
                size: 8
            },
            reason: FailReason::HeadMismatch { from: 0 }
        }
    );
}

#[test]
fn deleted_records_are_detected() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    for i in 0..20 {
        let mut r = b.records.clone();
        r.drain(i * RECORD_LEN..(i + 1) * RECORD_LEN);
        let e = fails_at(verify(b.log, &r, &b.checkpoints));
        if i == 19 {
            assert_eq!(e.reason, FailReason::Truncated { records: 19 });
        } else {
            assert_eq!(
                e,
                VerifyFailure {
                    at: Location::Record(i as u64),
                    reason: FailReason::SeqMismatch {
                        expected: i as u64,
                        found: i as u64 + 1
                    }
                }
            );
        }
    }
}

#[test]
fn swapped_records_are_detected() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    for i in 0..20 {
        for j in i + 1..20 {
            let mut r = b.records.clone();
            for k in 0..RECORD_LEN {
                r.swap(i * RECORD_LEN + k, j * RECORD_LEN + k);
            }
            let e = fails_at(verify(b.log, &r, &b.checkpoints));
            assert_eq!(e.at, Location::Record(i as u64), "swap {i} {j}");
        }
    }
}

#[test]
fn truncation_after_a_checkpoint_is_detected() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    for keep in 0..20 {
        let e = fails_at(verify(
            b.log,
            &b.records[..keep * RECORD_LEN],
            &b.checkpoints,
        ));
        assert_eq!(
            e.reason,
            FailReason::Truncated {
                records: keep as u64
            },
            "keep {keep}"
        );
    }
    // Cut inside a record.
    let cut = &b.records[..b.records.len() - 1];
    assert!(verify(b.log, cut, &b.checkpoints).is_err());
    let e = fails_at(verify(b.log, &b.records[..5 * RECORD_LEN + 10], &[]));
    assert_eq!(
        e,
        VerifyFailure {
            at: Location::Record(5),
            reason: FailReason::PartialRecord { len: 10 }
        }
    );
}

#[test]
fn records_spliced_from_another_log_are_detected() {
    let key = signer();
    let ours = build(LogId(3), 20, 8, 0, &key);
    let theirs = build(LogId(4), 20, 8, 0, &key);
    // Same position, other partition.
    for i in 0..20 {
        let mut r = ours.records.clone();
        r[i * RECORD_LEN..(i + 1) * RECORD_LEN]
            .copy_from_slice(&theirs.records[i * RECORD_LEN..(i + 1) * RECORD_LEN]);
        let e = fails_at(verify(ours.log, &r, &ours.checkpoints));
        assert_eq!(
            e,
            VerifyFailure {
                at: Location::Record(i as u64),
                reason: FailReason::PartitionMismatch { found: 4 }
            }
        );
    }
    // Same partition, another run (e.g. an earlier boot): the chain breaks.
    let earlier = build(LogId(3), 20, 8, 77, &key);
    for i in 0..20 {
        let mut r = ours.records.clone();
        r[i * RECORD_LEN..(i + 1) * RECORD_LEN]
            .copy_from_slice(&earlier.records[i * RECORD_LEN..(i + 1) * RECORD_LEN]);
        let e = fails_at(verify(ours.log, &r, &ours.checkpoints));
        assert!(
            e.first_bad_record() == Some(i as u64) || e.first_bad_record() == Some(i as u64 + 1)
        );
    }
    // A whole other log with its own valid checkpoints: wrong log.
    let e = fails_at(verify(ours.log, &theirs.records, &theirs.checkpoints));
    assert_eq!(e.reason, FailReason::WrongLog { found: LogId(4) });
    let e = fails_at(verify(ours.log, &theirs.records, &ours.checkpoints));
    assert_eq!(
        e,
        VerifyFailure {
            at: Location::Record(0),
            reason: FailReason::PartitionMismatch { found: 4 }
        }
    );
    let e = fails_at(verify(ours.log, &ours.records, &theirs.checkpoints));
    assert_eq!(e.reason, FailReason::WrongLog { found: LogId(4) });
    // The other run's checkpoints, same log id: signatures fine, heads differ.
    let e = fails_at(verify(ours.log, &ours.records, &earlier.checkpoints));
    assert_eq!(e.reason, FailReason::HeadMismatch { from: 0 });
}

#[test]
fn forged_checkpoints_are_detected() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    let key = signer().public_key();
    // A flipped bit anywhere in the signature.
    for byte in 0..64 {
        let mut cps = b.checkpoints.clone();
        cps[1].signature[byte] ^= 0x10;
        let e = fails_at(verify(b.log, &b.records, &cps));
        assert_eq!(
            e.at,
            Location::Checkpoint {
                ordinal: 1,
                size: 16
            }
        );
        assert!(matches!(e.reason, FailReason::BadSignature(_)), "{e}");
    }
    // Fields changed without re-signing.
    let mut cps = b.checkpoints.clone();
    cps[1].checkpoint.head = Hash([0; 32]);
    assert_eq!(
        fails_at(verify(b.log, &b.records, &cps)).reason,
        FailReason::BadSignature(SignatureError::Invalid)
    );
    // A log rewritten from record 10 on, re-chained and re-signed with
    // another key under our key id.
    let forger = CheckpointSigner::from_seed(&[1; 32]);
    let mut r = b.records.clone();
    let mut head = Hash::ZERO;
    for i in 0..20 {
        let mut rec =
            WitnessRecord::from_bytes(r[i * 64..(i + 1) * 64].try_into().unwrap()).unwrap();
        if i >= 10 {
            rec.args = [0xee; 16];
        }
        rec.prev = head.prefix16();
        let bytes = rec.to_bytes();
        r[i * 64..(i + 1) * 64].copy_from_slice(&bytes);
        head = chain_step(&head, &bytes);
    }
    // With the original checkpoints: the head signed at 16 does not match.
    let e = fails_at(verify(b.log, &r, &b.checkpoints));
    assert_eq!(
        e,
        VerifyFailure {
            at: Location::Checkpoint {
                ordinal: 1,
                size: 16
            },
            reason: FailReason::HeadMismatch { from: 8 }
        }
    );
    assert_eq!(e.first_bad_record(), Some(15));
    // With forged checkpoints: the signature does not verify.
    let mut forged = b.checkpoints.clone();
    forged[2].checkpoint.head = head;
    forged[2] = forged[2].checkpoint.sign(&forger);
    let e = fails_at(verify(b.log, &b.records, &forged));
    assert!(matches!(
        e.reason,
        FailReason::BadSignature(SignatureError::WrongKey { .. })
    ));
    forged[2].key_id = key.key_id();
    let e = fails_at(verify(b.log, &b.records, &forged));
    assert_eq!(e.reason, FailReason::BadSignature(SignatureError::Invalid));
}

#[test]
fn rolled_back_and_missing_checkpoints_are_detected() {
    let b = build(LogId(3), 20, 8, 0, &signer());
    // An older checkpoint presented after a newer one.
    let mut cps = b.checkpoints.clone();
    cps.push(b.checkpoints[0]);
    let e = fails_at(verify(b.log, &b.records, &cps));
    assert_eq!(
        e,
        VerifyFailure {
            at: Location::Checkpoint {
                ordinal: 3,
                size: 8
            },
            reason: FailReason::RolledBack { previous: 20 }
        }
    );
    // The newest checkpoint replaced by an older one.
    let mut cps = b.checkpoints.clone();
    cps[2] = cps[0];
    assert_eq!(
        fails_at(verify(b.log, &b.records, &cps)).reason,
        FailReason::RolledBack { previous: 16 }
    );
    // Two checkpoints swapped.
    let mut cps = b.checkpoints.clone();
    cps.swap(0, 1);
    assert!(verify(b.log, &b.records, &cps).is_err());
    // A checkpoint removed from the middle: its record announced it.
    let mut cps = b.checkpoints.clone();
    cps.remove(1);
    assert_eq!(
        fails_at(verify(b.log, &b.records, &cps)),
        VerifyFailure {
            at: Location::Record(15),
            reason: FailReason::CheckpointMissing
        }
    );
    // The same checkpoint twice is harmless.
    let mut cps = b.checkpoints.clone();
    cps.insert(1, cps[1]);
    assert!(verify(b.log, &b.records, &cps).is_ok());
}

#[derive(Clone, Debug)]
enum Corruption {
    FlipRecordBit { record: usize, byte: usize, bit: u8 },
    DeleteRecord(usize),
    SwapRecords(usize, usize),
    DuplicateRecord(usize),
    Truncate(usize),
    SpliceForeign { at: usize, from_partition: u32 },
    FlipCheckpointBit { cp: usize, byte: usize, bit: u8 },
    DeleteCheckpoint(usize),
    ReplayOldCheckpoint(usize),
    SwapCheckpoints(usize, usize),
}

fn corruption(n: usize, cps: usize) -> impl Strategy<Value = Corruption> {
    let cps = cps.max(1);
    prop_oneof![
        (0..n, 0..RECORD_LEN, 0..8u8).prop_map(|(record, byte, bit)| Corruption::FlipRecordBit {
            record,
            byte,
            bit
        }),
        (0..n).prop_map(Corruption::DeleteRecord),
        (0..n, 0..n).prop_map(|(a, b)| Corruption::SwapRecords(a, b)),
        (0..n).prop_map(Corruption::DuplicateRecord),
        (0..n).prop_map(Corruption::Truncate),
        (0..n, 5..9u32)
            .prop_map(|(at, from_partition)| Corruption::SpliceForeign { at, from_partition }),
        (0..cps, 0..(8 + 8 + 32 + 32 + 4 + 64usize), 0..8u8)
            .prop_map(|(cp, byte, bit)| Corruption::FlipCheckpointBit { cp, byte, bit }),
        (0..cps).prop_map(Corruption::DeleteCheckpoint),
        (0..cps).prop_map(Corruption::ReplayOldCheckpoint),
        (0..cps, 0..cps).prop_map(|(a, b)| Corruption::SwapCheckpoints(a, b)),
    ]
}

fn flip_checkpoint(c: &mut SignedCheckpoint, byte: usize, bit: u8) {
    let m = 1u8 << bit;
    let cp = &mut c.checkpoint;
    match byte {
        0..=7 => {
            // The log id's 4 bytes, then again (so the range is 8 wide).
            cp.log.0 ^= u32::from(m) << (8 * (byte % 4));
        }
        8..=15 => cp.size ^= u64::from(m) << (8 * (byte - 8)),
        16..=47 => cp.root.0[byte - 16] ^= m,
        48..=79 => cp.head.0[byte - 48] ^= m,
        80..=83 => c.key_id.0[byte - 80] ^= m,
        _ => c.signature[byte - 84] ^= m,
    }
}

/// Apply; `None` when the corruption is a no-op (nothing to detect).
fn apply(b: &Built, c: &Corruption) -> Option<(Vec<u8>, Vec<SignedCheckpoint>)> {
    let mut r = b.records.clone();
    let mut cps = b.checkpoints.clone();
    let span = |i: usize| i * RECORD_LEN..(i + 1) * RECORD_LEN;
    match *c {
        Corruption::FlipRecordBit { record, byte, bit } => {
            r[record * RECORD_LEN + byte] ^= 1 << bit
        }
        Corruption::DeleteRecord(i) => {
            r.drain(span(i));
        }
        Corruption::SwapRecords(a, b) => {
            if a == b {
                return None;
            }
            for k in 0..RECORD_LEN {
                r.swap(a * RECORD_LEN + k, b * RECORD_LEN + k);
            }
        }
        Corruption::DuplicateRecord(i) => {
            let rec = r[span(i)].to_vec();
            r.splice(span(i).start..span(i).start, rec);
        }
        Corruption::Truncate(keep) => r.truncate(keep * RECORD_LEN),
        Corruption::SpliceForeign { at, from_partition } => {
            let other = build(
                LogId(from_partition),
                rec_count(&b.records),
                4,
                1,
                &signer(),
            );
            r[span(at)].copy_from_slice(&other.records[span(at)]);
        }
        Corruption::FlipCheckpointBit { cp, byte, bit } => flip_checkpoint(&mut cps[cp], byte, bit),
        Corruption::DeleteCheckpoint(i) => {
            cps.remove(i);
        }
        Corruption::ReplayOldCheckpoint(i) => {
            if cps[i].checkpoint.size == cps.last()?.checkpoint.size {
                return None;
            }
            cps.push(cps[i]);
        }
        Corruption::SwapCheckpoints(a, b) => {
            if cps[a].checkpoint.size == cps[b].checkpoint.size {
                return None;
            }
            cps.swap(a, b);
        }
    }
    Some((r, cps))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// A random log ending in a shutdown checkpoint, corrupted at random,
    /// never verifies as fully signed: either verification fails, or the
    /// records past the surviving checkpoints are reported as not signed.
    #[test]
    fn random_corruption_is_always_detected(
        (n, every, part, c) in (1usize..48, 1u64..12, 1u32..5)
            .prop_flat_map(|(n, every, part)| {
                let cps = n.div_ceil(every as usize) + 1;
                (Just(n), Just(every), Just(part), corruption(n, cps))
            })
    ) {
        let b = build(LogId(part), n, every, 0, &signer());
        let clean = verify(b.log, &b.records, &b.checkpoints).unwrap();
        prop_assert_eq!((clean.signed, clean.unsigned), (n as u64, 0));
        let c = match c {
            Corruption::FlipCheckpointBit { cp, .. }
            | Corruption::DeleteCheckpoint(cp)
            | Corruption::ReplayOldCheckpoint(cp) if cp >= b.checkpoints.len() => return Ok(()),
            Corruption::SwapCheckpoints(x, y) if x.max(y) >= b.checkpoints.len() => return Ok(()),
            Corruption::SpliceForeign { from_partition, .. } if from_partition == part => return Ok(()),
            c => c,
        };
        if let Some((r, cps)) = apply(&b, &c) {
            match verify(b.log, &r, &cps) {
                Err(_) => {}
                Ok(s) => prop_assert!(
                    s.signed < n as u64,
                    "{:?} undetected: {:?}", c, s
                ),
            }
        }
    }
}
