//! Stream → demultiplexer → files → verify / show / export / prove, and
//! tampering with the files.

use core::num::{NonZeroU64, NonZeroUsize};
use rvm_abi::frame::Frame;
use rvm_abi::witness::{KernelEvent, Outcome, WitnessOp, WitnessRecord, RECORD_LEN};
use rvm_abi::{HvError, Hypercall};
use rvm_witness::{
    CheckpointPolicy, CheckpointSigner, FailReason, Location, LogConfig, LogId, RootCheck,
    SignatureError, WitnessLog,
};
use rvm_witness_host::{
    export_jsonl, load, prove, prove_consistency_loaded, show, verify, verify_consistency_proof,
    verify_proof, verify_proof_embedded, Demux, HostError, InclusionProof, KeyCheck, LogNames,
    ProofFailure, Recorder, StreamItem, VerifyOptions,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

struct TempHome(PathBuf);

impl TempHome {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rvm-witness-host-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn witness(&self) -> PathBuf {
        self.0.join("witness")
    }
    fn log(&self, name: &str) -> PathBuf {
        self.witness().join(format!("{name}.log"))
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn seed() -> [u8; 32] {
    [0x42; 32]
}

fn names() -> LogNames {
    LogNames::from_pairs([(1, "agent-a"), (2, "agent-b")]).unwrap()
}

/// What a hypervisor run writes on its console: boot text, the key, and
/// three logs' records and checkpoints interleaved with guest output.
fn serial_stream(salt: u64) -> Vec<u8> {
    serial_stream_with_tail(salt, false)
}

/// [`serial_stream`], with `tail`: one more agent-a record after the
/// final checkpoints (chained, never signed).
fn serial_stream_with_tail(salt: u64, tail: bool) -> Vec<u8> {
    let signer = CheckpointSigner::from_seed(&seed());
    let config = LogConfig {
        ring_capacity: NonZeroUsize::new(64).unwrap(),
        checkpoints: CheckpointPolicy::every(NonZeroU64::new(10).unwrap()),
    };
    let mut logs: Vec<WitnessLog> = [0, 1, 2]
        .iter()
        .map(|&i| WitnessLog::new(LogId(i), config).unwrap())
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"rvm: RVM booting\r\n");
    out.extend_from_slice(signer.public_key().frame().encode().as_bytes());
    let emit = |log: &mut WitnessLog, out: &mut Vec<u8>, rec: WitnessRecord| {
        let a = log.append(rec).unwrap();
        if a.checkpoint_due {
            log.checkpoint(&signer).unwrap();
        }
        while let Some(o) = log.drain_next() {
            out.extend_from_slice(o.to_frame(log.id()).encode().as_bytes());
        }
    };
    let boot = WitnessRecord::new(WitnessOp::Event(KernelEvent::Boot), Outcome::Done, 0);
    emit(&mut logs[0], &mut out, boot);
    for p in [1u32, 2] {
        let ev = WitnessRecord::new(
            WitnessOp::Event(KernelEvent::PartitionCreate),
            Outcome::Done,
            p,
        );
        emit(&mut logs[0], &mut out, ev);
    }
    for i in 0..57u64 {
        let p = 1 + (i % 2) as u32;
        let (op, outcome) = match i % 4 {
            0 => (Hypercall::ConsoleWrite, Outcome::Done),
            1 => (Hypercall::ChannelSend, Outcome::Done),
            2 => (Hypercall::ChannelSend, Outcome::Denied(HvError::NoRights)),
            _ => (Hypercall::CapQuery, Outcome::Done),
        };
        let mut r = WitnessRecord::new(WitnessOp::Call(op), outcome, p);
        r.timestamp = 1_000_000 * i + salt;
        r.tier = if i == 30 { 3 } else { 1 };
        r.cap = 0x0001_0000 | i as u32;
        r.args = [i as u8; 16];
        emit(&mut logs[p as usize], &mut out, r);
        out.extend_from_slice(
            format!("[agent-{}] turn {i}\n", if p == 1 { 'a' } else { 'b' }).as_bytes(),
        );
    }
    for (i, log) in logs.iter_mut().enumerate() {
        let p = i as u32;
        let r = if p == 0 {
            WitnessRecord::new(WitnessOp::Event(KernelEvent::Shutdown), Outcome::Done, 0)
        } else {
            WitnessRecord::new(
                WitnessOp::Event(KernelEvent::PartitionExit),
                Outcome::Done,
                p,
            )
        };
        emit(log, &mut out, r);
        log.checkpoint(&signer).unwrap();
        while let Some(o) = log.drain_next() {
            out.extend_from_slice(o.to_frame(log.id()).encode().as_bytes());
        }
    }
    if tail {
        let r = WitnessRecord::new(WitnessOp::Call(Hypercall::ChannelSend), Outcome::Done, 1);
        logs[1].append(r).unwrap();
        while let Some(o) = logs[1].drain_next() {
            out.extend_from_slice(o.to_frame(logs[1].id()).encode().as_bytes());
        }
    }
    out.extend_from_slice(b"rvm: powering off\n");
    out
}

/// Demultiplex `stream` in odd-sized chunks and file it.
fn record_run(home: &Path, stream: &[u8]) -> (Vec<String>, rvm_witness_host::RecorderSummary) {
    let mut demux = Demux::new();
    let mut rec = Recorder::new(home, names()).unwrap();
    let mut console = Vec::new();
    let mut handle = |item: StreamItem, rec: &mut Recorder| match item {
        StreamItem::Console(l) => console.push(l),
        StreamItem::Frame(f) => rec.frame(&f).unwrap(),
        StreamItem::Damaged(d) => rec.damaged(&d.to_string()),
    };
    for chunk in stream.chunks(97) {
        for item in demux.feed(chunk) {
            handle(item, &mut rec);
        }
    }
    if let Some(item) = demux.finish() {
        handle(item, &mut rec);
    }
    (console, rec.finish().unwrap())
}

#[test]
fn round_trip_stream_to_files_to_verify() {
    let home = TempHome::new();
    let (console, summary) = record_run(&home.0, &serial_stream(0));
    assert_eq!(
        console.first().map(String::as_str),
        Some("rvm: RVM booting")
    );
    assert_eq!(
        console.iter().filter(|l| l.starts_with("[agent-")).count(),
        57
    );
    assert_eq!(summary.damaged, 0);
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let by_name: Vec<(String, u64)> = summary
        .logs
        .iter()
        .map(|l| (l.name.clone(), l.records))
        .collect();
    assert_eq!(
        by_name,
        [
            ("hypervisor".to_string(), 4),
            ("agent-a".to_string(), 30),
            ("agent-b".to_string(), 29)
        ]
    );
    let key = CheckpointSigner::from_seed(&seed()).public_key();
    assert_eq!(summary.key_fingerprint, Some(key.fingerprint()));

    for (name, n) in [("hypervisor", 4), ("agent-a", 30), ("agent-b", 29)] {
        let opts = VerifyOptions {
            expected_fingerprint: Some(key.fingerprint()),
            ..VerifyOptions::default()
        };
        let r = verify(&home.log(name), &opts).unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.key_check, KeyCheck::Matches);
        let s = r.result.unwrap();
        assert_eq!((s.records, s.signed, s.unsigned), (n, n, 0), "{name}");
        assert!(s.roots_checked);
        assert_eq!(
            std::fs::metadata(home.log(name)).unwrap().len(),
            n * RECORD_LEN as u64
        );
    }
    // agent-a has its P3 record (i = 30 is agent-a's 16th) checkpointed.
    let text = std::fs::read_to_string(home.witness().join("agent-a.checkpoints")).unwrap();
    assert!(text.starts_with("rvm.witness/1\n10\n"));
    assert!(text.contains("\n16\n"), "P3 checkpoint at size 16:\n{text}");
    let pubtext = std::fs::read_to_string(home.witness().join("agent-a.pub")).unwrap();
    assert_eq!(pubtext, format!("{}\n", key.to_verifier_key()));
}

#[test]
fn show_and_export_decode_records() {
    let home = TempHome::new();
    record_run(&home.0, &serial_stream(0));
    let lines = show(&home.log("agent-a"), &LogNames::new()).unwrap();
    assert_eq!(lines.len(), 30);
    assert_eq!(lines[0].op, "ConsoleWrite");
    assert_eq!(lines[0].partition_name, "agent-a");
    assert_eq!(lines[0].tier, "P1");
    assert_eq!(lines[0].outcome, "Done");
    assert_eq!(lines[0].cap, Some(0x0001_0000));
    let denied = lines.iter().find(|l| l.outcome == "NoRights").unwrap();
    assert_eq!(denied.op, "ChannelSend");
    assert_eq!(lines[29].op, "PartitionExit");
    assert_eq!(lines[29].tier, "-");
    assert!(lines[29].checkpointed);
    let text = lines[1].to_string();
    assert!(
        text.contains("agent-a") && text.contains("ChannelSend") && text.contains("0.002000000s"),
        "{text}"
    );

    let hv = show(&home.log("hypervisor"), &names()).unwrap();
    assert_eq!(hv[1].op, "PartitionCreate");
    assert_eq!(hv[1].partition_name, "agent-a");
    assert_eq!(hv[2].partition_name, "agent-b");

    let mut out = Vec::new();
    assert_eq!(
        export_jsonl(&home.log("agent-b"), &names(), &mut out).unwrap(),
        29
    );
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 29);
    assert_eq!(rows[0]["op"], "ChannelSend");
    assert_eq!(rows[0]["partition"], 2);
    assert_eq!(rows[0]["partition_name"], "agent-b");
    assert_eq!(rows[0]["seq"], 0);
    assert_eq!(rows[0]["head"].as_str().unwrap().len(), 64);
}

#[test]
fn proofs_are_made_and_checked() {
    let home = TempHome::new();
    record_run(&home.0, &serial_stream(0));
    let key = CheckpointSigner::from_seed(&seed()).public_key();
    let path = home.log("agent-a");
    for seq in [0, 9, 10, 17, 29] {
        let p = prove(&path, seq).unwrap();
        assert_eq!(p.size, 30, "against the newest checkpoint");
        let ok = verify_proof_embedded(&p, &key).unwrap();
        assert_eq!(ok.seq, seq);
        assert_eq!(ok.record.seq, seq);
        // Both serialisations round-trip and still verify.
        let t = InclusionProof::parse(&p.to_text()).unwrap();
        let j = InclusionProof::parse(&p.to_json()).unwrap();
        assert_eq!(t, p);
        assert_eq!(j, p);
    }
    let p = prove(&path, 17).unwrap();
    // A changed record, path or index fails.
    let mut bad = p.clone();
    bad.record[20] ^= 1;
    assert!(matches!(
        verify_proof_embedded(&bad, &key),
        Err(ProofFailure::Path(_))
    ));
    let mut bad = p.clone();
    bad.path[0].0[0] ^= 1;
    assert!(matches!(
        verify_proof_embedded(&bad, &key),
        Err(ProofFailure::Path(_))
    ));
    let mut bad = p.clone();
    bad.seq = 16;
    assert!(matches!(
        verify_proof_embedded(&bad, &key),
        Err(ProofFailure::SeqMismatch { .. })
    ));
    // Another key, another checkpoint.
    let other = CheckpointSigner::from_seed(&[1; 32]).public_key();
    assert!(matches!(
        verify_proof_embedded(&p, &other),
        Err(ProofFailure::Signature(SignatureError::WrongKey { .. }))
    ));
    let loaded = load(&path, None, None).unwrap();
    let older = loaded.checkpoints[0];
    assert_eq!(
        verify_proof(&p, &older, &key),
        Err(ProofFailure::WrongSize {
            proof: 30,
            checkpoint: 10
        })
    );
    let b_cp = load(&home.log("agent-b"), None, None).unwrap().checkpoints[0];
    assert!(matches!(
        verify_proof(&p, &b_cp, &key),
        Err(ProofFailure::WrongLog { .. })
    ));
    // Consistency between the first and last checkpoints.
    let c = prove_consistency_loaded(&loaded, 10, 30).unwrap();
    verify_consistency_proof(&c, &key).unwrap();
    let mut bad = c.clone();
    bad.path[0].0[5] ^= 1;
    assert!(verify_consistency_proof(&bad, &key).is_err());
    // Errors name the problem.
    assert!(matches!(
        prove(&path, 30),
        Err(HostError::NoSuchRecord {
            seq: 30,
            records: 30,
            ..
        })
    ));
    assert!(InclusionProof::parse("rvm-witness inclusion proof v1\nlog x\n").is_err());
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn fresh(home: &TempHome) -> (PathBuf, Vec<u8>) {
    record_run(&home.0, &serial_stream(0));
    let p = home.log("agent-a");
    let b = std::fs::read(&p).unwrap();
    (p, b)
}

fn failure(path: &Path) -> rvm_witness::VerifyFailure {
    let r = verify(path, &VerifyOptions::default()).unwrap();
    assert!(!r.is_ok(), "tampering not detected:\n{r}");
    let text = r.to_string();
    assert!(text.contains("FAILED"), "{text}");
    r.result.unwrap_err()
}

#[test]
fn tampered_log_files_are_detected() {
    let home = TempHome::new();
    let (path, clean) = fresh(&home);
    // A flipped bit in every byte position of record 12.
    for byte in 0..RECORD_LEN {
        let mut b = clean.clone();
        b[12 * RECORD_LEN + byte] ^= 0x04;
        write(&path, &b);
        let f = failure(&path);
        let bad = f.first_bad_record().unwrap();
        assert!(bad == 12 || bad == 13, "byte {byte}: {f}");
    }
    // A deleted record.
    let mut b = clean.clone();
    b.drain(5 * RECORD_LEN..6 * RECORD_LEN);
    write(&path, &b);
    assert_eq!(failure(&path).at, Location::Record(5));
    // Two records swapped.
    let mut b = clean.clone();
    let (x, y) = b.split_at_mut(8 * RECORD_LEN);
    x[3 * RECORD_LEN..4 * RECORD_LEN].swap_with_slice(&mut y[..RECORD_LEN]);
    write(&path, &b);
    assert_eq!(failure(&path).at, Location::Record(3));
    // Truncated after a checkpoint (and cut inside a record).
    write(&path, &clean[..25 * RECORD_LEN]);
    assert_eq!(failure(&path).reason, FailReason::Truncated { records: 25 });
    write(&path, &clean[..clean.len() - 3]);
    assert!(matches!(
        failure(&path).reason,
        FailReason::Truncated { .. }
    ));
    // A record spliced in from agent-b's log.
    let other = std::fs::read(home.log("agent-b")).unwrap();
    let mut b = clean.clone();
    b[7 * RECORD_LEN..8 * RECORD_LEN].copy_from_slice(&other[7 * RECORD_LEN..8 * RECORD_LEN]);
    write(&path, &b);
    assert_eq!(
        failure(&path).reason,
        FailReason::PartitionMismatch { found: 2 }
    );
    write(&path, &clean);
    assert!(verify(&path, &VerifyOptions::default()).unwrap().is_ok());
}

#[test]
fn tampered_checkpoint_and_key_files_are_detected() {
    let home = TempHome::new();
    let (path, _) = fresh(&home);
    let cps_path = home.witness().join("agent-a.checkpoints");
    let clean = std::fs::read_to_string(&cps_path).unwrap();
    let notes: Vec<&str> = clean.split_inclusive("\n\u{2014} rvm.witness ").collect();
    assert!(notes.len() >= 3);

    // A forged signature: change one base64 character of the first signature.
    let sig_at = clean.find("\u{2014} rvm.witness ").unwrap() + "\u{2014} rvm.witness ".len() + 10;
    let mut forged = clean.clone().into_bytes();
    forged[sig_at] = if forged[sig_at] == b'A' { b'B' } else { b'A' };
    write(&cps_path, &forged);
    let f = failure(&path);
    assert!(matches!(f.reason, FailReason::BadSignature(_)), "{f}");
    assert_eq!(
        f.at,
        Location::Checkpoint {
            ordinal: 0,
            size: 10
        }
    );

    // A changed size line, signature untouched.
    write(
        &cps_path,
        clean
            .replacen("rvm.witness/1\n10\n", "rvm.witness/1\n11\n", 1)
            .as_bytes(),
    );
    assert_eq!(
        failure(&path).reason,
        FailReason::BadSignature(SignatureError::Invalid)
    );

    // A rolled-back checkpoint: the first note appended again at the end.
    let first_note_end = clean.find('\n').map(|_| {
        let sig_line = clean.find("\u{2014} ").unwrap();
        sig_line + clean[sig_line..].find('\n').unwrap() + 1
    });
    let first = &clean[..first_note_end.unwrap()];
    write(&cps_path, format!("{clean}{first}").as_bytes());
    assert!(matches!(
        failure(&path).reason,
        FailReason::RolledBack { .. }
    ));

    // A checkpoint from agent-b's file in place of agent-a's first.
    let b_text = std::fs::read_to_string(home.witness().join("agent-b.checkpoints")).unwrap();
    let b_first_end = {
        let s = b_text.find("\u{2014} ").unwrap();
        s + b_text[s..].find('\n').unwrap() + 1
    };
    write(
        &cps_path,
        format!("{}{}", &b_text[..b_first_end], &clean[first.len()..]).as_bytes(),
    );
    assert_eq!(
        failure(&path).reason,
        FailReason::WrongLog { found: LogId(2) }
    );

    // A note that no longer parses is an error naming the line.
    write(&cps_path, clean.replacen("head ", "heed ", 1).as_bytes());
    match verify(&path, &VerifyOptions::default()) {
        Err(HostError::Checkpoints { error, .. }) => assert_eq!(error.line, 4),
        other => panic!("{other:?}"),
    }
    write(&cps_path, clean.as_bytes());

    // Another key in the .pub file: every signature is by the wrong key.
    let key_path = home.witness().join("agent-a.pub");
    let other = CheckpointSigner::from_seed(&[7; 32]).public_key();
    write(
        &key_path,
        format!("{}\n", other.to_verifier_key()).as_bytes(),
    );
    assert!(matches!(
        failure(&path).reason,
        FailReason::BadSignature(SignatureError::WrongKey { .. })
    ));
    // The right key, but not the one the operator expects.
    let good = CheckpointSigner::from_seed(&seed()).public_key();
    write(
        &key_path,
        format!("{}\n", good.to_verifier_key()).as_bytes(),
    );
    let r = verify(
        &path,
        &VerifyOptions {
            expected_fingerprint: Some(other.fingerprint()),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(r.result.is_ok() && !r.is_ok());
    assert!(r.to_string().contains("not the expected one"));
    // Chain-only verification also passes on the clean files.
    let r = verify(
        &path,
        &VerifyOptions {
            roots: RootCheck::Skip,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(r.is_ok());
}

#[test]
fn a_second_run_archives_the_first_and_damage_is_counted() {
    let home = TempHome::new();
    record_run(&home.0, &serial_stream(0));
    let first = std::fs::read(home.log("agent-a")).unwrap();
    // The second run loses one record line in transit and damages another.
    let mut stream = serial_stream(5);
    let text = String::from_utf8(stream.clone()).unwrap();
    let mut kept = String::new();
    let mut n_w1 = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("@W 1 ") {
            n_w1 += 1;
            if n_w1 == 4 {
                continue; // lost
            }
            if n_w1 == 6 {
                kept.push_str(&line.replacen("@W 1 ", "@W 1 zz", 1));
                continue; // damaged
            }
        }
        kept.push_str(line);
    }
    stream.clear();
    stream.extend_from_slice(kept.as_bytes());
    let (_, summary) = record_run(&home.0, &stream);
    assert_eq!(summary.damaged, 1);
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("agent-a: record 3 arrived with seq 4")),
        "{:?}",
        summary.warnings
    );
    assert_eq!(summary.archived.len(), 9, "three logs × three files");
    let archived = home.witness().join("archive").join("agent-a.1.log");
    assert_eq!(std::fs::read(&archived).unwrap(), first);
    // The archived log still verifies on its own.
    assert!(verify(&archived, &VerifyOptions::default())
        .unwrap()
        .is_ok());
    // The new one names the first missing record.
    let f = failure(&home.log("agent-a"));
    assert_eq!(
        f,
        rvm_witness::VerifyFailure {
            at: Location::Record(3),
            reason: FailReason::SeqMismatch {
                expected: 3,
                found: 4
            }
        }
    );
    // Frames for an unnamed log are still filed.
    let home2 = TempHome::new();
    let mut rec = Recorder::new(&home2.0, LogNames::new()).unwrap();
    let r = WitnessRecord::new(WitnessOp::Call(Hypercall::ConsoleWrite), Outcome::Done, 9);
    rec.frame(&Frame::Record {
        log: 9,
        bytes: r.to_bytes(),
    })
    .unwrap();
    let s = rec.finish().unwrap();
    assert_eq!(s.logs[0].name, "log-9");
    assert!(s.warnings.iter().any(|w| w.contains("no partition name")));
}

#[test]
fn names_are_checked() {
    assert!(LogNames::from_pairs([(1, "../etc")]).is_err());
    assert!(LogNames::from_pairs([(1, "a"), (2, "a")]).is_err());
    assert!(LogNames::from_pairs([(1, "hypervisor")]).is_err());
    assert!(LogNames::from_pairs([(0, "boss")]).is_err());
    assert!(LogNames::from_pairs([(0, "hypervisor"), (3, "c")]).is_ok());
}

#[test]
fn checkpoints_before_the_key_are_filed_when_it_arrives() {
    let home = TempHome::new();
    let text = String::from_utf8(serial_stream(0)).unwrap();
    // Move the key line to the very end of the stream.
    let key_line = text
        .lines()
        .find(|l| l.starts_with("@K "))
        .unwrap()
        .to_string();
    let reordered = format!(
        "{}{key_line}\n",
        text.replacen(&format!("{key_line}\n"), "", 1)
    );
    let (_, summary) = record_run(&home.0, reordered.as_bytes());
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let r = verify(&home.log("agent-b"), &VerifyOptions::default()).unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.checkpoints, 3);
    // Without any key, the records are kept and the loss is reported.
    let home = TempHome::new();
    let no_key = text.replacen(&format!("{key_line}\n"), "", 1);
    let (_, summary) = record_run(&home.0, no_key.as_bytes());
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("no witness key was announced")),
        "{:?}",
        summary.warnings
    );
    assert_eq!(
        std::fs::metadata(home.log("agent-b")).unwrap().len(),
        29 * RECORD_LEN as u64
    );
}

// ---- issue 12, item 4: verification fails closed by default ----

#[test]
fn an_unsigned_tail_or_missing_checkpoints_fail_unless_allowed() {
    let home = TempHome::new();
    let (path, clean) = fresh(&home);
    let live = VerifyOptions {
        allow_unsigned_tail: true,
        ..VerifyOptions::default()
    };
    // A finished run's log: every record signed.
    let r = verify(&path, &VerifyOptions::default()).unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.first_unsigned_record(), None);
    let n = clean.len() / RECORD_LEN;

    // One record appended, chained to the head: what anyone who can write
    // the file can do. The chain holds; no checkpoint covers it.
    let other = TempHome::new();
    record_run(&other.0, &serial_stream_with_tail(0, true));
    let appended = std::fs::read(other.log("agent-a")).unwrap();
    assert_eq!(appended.len(), clean.len() + RECORD_LEN);
    assert_eq!(appended[..clean.len()], clean[..]);
    write(&path, &appended);
    let r = verify(&path, &VerifyOptions::default()).unwrap();
    assert!(r.result.is_ok(), "the appended record chains: {r}");
    assert!(!r.is_ok(), "an appended unsigned record passed:\n{r}");
    assert_eq!(r.first_unsigned_record(), Some(n as u64));
    assert_eq!(r.first_bad_record(), Some(n as u64));
    let text = r.to_string();
    assert!(
        text.contains(&format!("FAILED: records {n}..{}", n + 1)),
        "{text}"
    );
    assert!(
        text.contains(&format!("first unsigned record: {n}")),
        "{text}"
    );
    // A live log may end unsigned when the caller says so.
    let r = verify(&path, &live).unwrap();
    assert!(r.is_ok(), "{r}");
    assert!(r.to_string().contains("not yet signed"), "{r}");

    // The checkpoints removed: nothing is signed, from record 0. (The log
    // cut to its first 9 records, before the first record that announces a
    // checkpoint, so that the chain alone has nothing to object to.)
    write(&path, &clean[..9 * RECORD_LEN]);
    std::fs::remove_file(home.witness().join("agent-a.checkpoints")).unwrap();
    let r = verify(&path, &VerifyOptions::default()).unwrap();
    assert!(r.result.is_ok(), "{r}");
    assert!(!r.is_ok(), "a log without checkpoints passed:\n{r}");
    assert_eq!(r.first_unsigned_record(), Some(0), "{r}");
    assert!(r.to_string().contains("no checkpoint at all"), "{r}");
    assert!(verify(&path, &live).unwrap().is_ok());
    // The whole log without its checkpoints fails too (at the first record
    // that announced one).
    write(&path, &clean);
    assert!(!verify(&path, &VerifyOptions::default()).unwrap().is_ok());
    write(&path, &clean[..9 * RECORD_LEN]);
    // An empty checkpoints file is the same.
    write(&home.witness().join("agent-a.checkpoints"), b"");
    let r = verify(&path, &VerifyOptions::default()).unwrap();
    assert_eq!(r.first_unsigned_record(), Some(0), "{r}");
}

#[test]
fn a_log_named_at_run_time_is_filed_under_its_name_and_collisions_are_refused() {
    let home = TempHome::new();
    let mut rec = Recorder::new(&home.0, names()).unwrap();
    let record = |log: u32| Frame::Record {
        log,
        bytes: WitnessRecord::new(WitnessOp::Event(KernelEvent::PartitionCreate), Outcome::Done, log).to_bytes(),
    };
    // A name another log has, or another name for a named log: refused.
    assert!(matches!(rec.name(3, "agent-a"), Err(HostError::NameTaken { other: 1, .. })));
    assert!(matches!(rec.name(1, "tenant"), Err(HostError::Renamed { log: 1, .. })));
    // Announced before its first frame: the log is filed under its name.
    rec.name(3, "tenant").unwrap();
    rec.name(3, "tenant").unwrap();
    rec.frame(&record(3)).unwrap();
    // A log whose records are filed already cannot be named afterwards.
    rec.frame(&record(4)).unwrap();
    let late = rec.name(4, "late").unwrap_err();
    assert!(matches!(late, HostError::NamedLate { log: 4, .. }), "{late}");
    assert!(late.to_string().contains("already filed as \"log-4\""), "{late}");
    let summary = rec.finish().unwrap();
    let filed: Vec<(u32, &str)> = summary.logs.iter().map(|l| (l.log, l.name.as_str())).collect();
    assert_eq!(filed, [(3, "tenant"), (4, "log-4")]);
    assert_eq!(std::fs::metadata(home.log("tenant")).unwrap().len(), RECORD_LEN as u64);
}

/// A run of log 1 (`agent-a`): `n` records from `log`, signing as due
/// and at the end, filed by `rec`.
fn file_run(rec: &mut Recorder, log: &mut WitnessLog, n: usize, signer: &CheckpointSigner, sign_at_end: bool) {
    rec.frame(&signer.public_key().frame()).unwrap();
    for i in 0..n {
        let mut r = WitnessRecord::new(WitnessOp::Call(Hypercall::ChannelSend), Outcome::Done, 1);
        r.timestamp = i as u64;
        if log.append(r).unwrap().checkpoint_due {
            log.checkpoint(signer).unwrap();
        }
        while let Some(o) = log.drain_next() {
            rec.frame(&o.to_frame(LogId(1))).unwrap();
        }
    }
    if sign_at_end {
        log.checkpoint(signer).unwrap();
        while let Some(o) = log.drain_next() {
            rec.frame(&o.to_frame(LogId(1))).unwrap();
        }
    }
}

#[test]
fn a_log_continues_in_its_files_across_boots_and_verifies_whole() {
    let home = TempHome::new();
    let signer = CheckpointSigner::from_seed(&seed());
    let key = signer.public_key();
    let config = LogConfig { ring_capacity: NonZeroUsize::new(64).unwrap(), checkpoints: CheckpointPolicy::every(NonZeroU64::new(4).unwrap()) };
    // The first boot: 10 records, all signed.
    let mut first = WitnessLog::new(LogId(1), config).unwrap();
    let mut rec = Recorder::new(&home.0, names()).unwrap();
    file_run(&mut rec, &mut first, 10, &signer, true);
    rec.finish().unwrap();
    // The restart continues it where its last checkpoint is.
    let point = rvm_witness_host::resume_point(&home.log("agent-a"), 1, &key, None).unwrap();
    assert_eq!((point.size, point.unsigned), (10, 0));
    let entry = point.entry();
    let parsed = rvm_abi::bundle::LogResume::from_bytes(&entry).unwrap();
    let frontier: Vec<rvm_witness::Hash> = parsed.frontier().map(rvm_witness::Hash).collect();
    let last = rvm_witness::SignedCheckpoint {
        checkpoint: rvm_witness::Checkpoint { log: LogId(1), size: 10, root: rvm_witness::Hash(point.root), head: rvm_witness::Hash(point.head) },
        key_id: key.key_id(),
        signature: point.signature,
    };
    let mut second = WitnessLog::resume(LogId(1), config, &last, &frontier, &key).unwrap();
    let mut rec = Recorder::new(&home.0, names()).unwrap();
    rec.resume(1, "agent-a", &point).unwrap();
    // This boot dies before signing its last three records.
    file_run(&mut rec, &mut second, 7, &signer, false);
    let filed = rec.finish().unwrap();
    assert!(filed.archived.is_empty(), "a continued log is not archived");
    let report = verify(&home.log("agent-a"), &VerifyOptions { allow_unsigned_tail: true, ..VerifyOptions::default() }).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, 17, "one file, one chain across both boots");
    // The next restart continues from the checkpoint at 16: the record
    // after it was never signed and leaves for the archive.
    let point = rvm_witness_host::resume_point(&home.log("agent-a"), 1, &key, None).unwrap();
    assert_eq!((point.size, point.unsigned), (16, 1));
    let mut rec = Recorder::new(&home.0, names()).unwrap();
    rec.resume(1, "agent-a", &point).unwrap();
    let filed = rec.finish().unwrap();
    assert!(filed.warnings.iter().any(|w| w.contains("never signed")), "{:?}", filed.warnings);
    assert_eq!(std::fs::read(home.witness().join("archive/agent-a.1.unsigned")).unwrap().len(), RECORD_LEN);
    assert!(verify(&home.log("agent-a"), &VerifyOptions::default()).unwrap().is_ok());
    // The checkpoint at 16 was recorded: the file rolled back to the one
    // at 12 (an older copy) does not continue.
    let at16 = (point.size, point.root);
    let cps = home.witness().join("agent-a.checkpoints");
    let notes = std::fs::read_to_string(&cps).unwrap();
    // A note is its four body lines, a blank line and its signature line.
    let lines: Vec<&str> = notes.lines().collect();
    let cut = format!("{}\n", lines[..lines.len() - 6].join("\n"));
    let full_cps = notes.clone();
    std::fs::write(&cps, &cut).unwrap();
    let rolled = rvm_witness_host::resume_point(&home.log("agent-a"), 1, &key, Some(at16));
    assert!(matches!(&rolled, Err(HostError::LogDoesNotVerify { reason, .. }) if reason.contains("rolled back")), "{rolled:?}");
    std::fs::write(&cps, &full_cps).unwrap();
    assert!(rvm_witness_host::resume_point(&home.log("agent-a"), 1, &key, Some(at16)).is_ok());
    // A changed record: the log does not continue.
    let mut bytes = std::fs::read(home.log("agent-a")).unwrap();
    bytes[3 * RECORD_LEN + 20] ^= 1;
    std::fs::write(home.log("agent-a"), &bytes).unwrap();
    let refused = rvm_witness_host::resume_point(&home.log("agent-a"), 1, &key, None);
    assert!(matches!(refused, Err(HostError::LogDoesNotVerify { .. })), "{refused:?}");
    // Another key: neither.
    let other = CheckpointSigner::from_seed(&[1; 32]).public_key();
    bytes[3 * RECORD_LEN + 20] ^= 1;
    std::fs::write(home.log("agent-a"), &bytes).unwrap();
    assert!(rvm_witness_host::resume_point(&home.log("agent-a"), 1, &other, None).is_err());
}

#[test]
fn an_archive_that_is_a_link_is_not_followed() {
    let home = TempHome::new();
    let elsewhere = home.0.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(home.witness()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, home.witness().join("archive")).unwrap();
    // An earlier run's log, which a new run would archive.
    std::fs::write(home.log("agent-a"), [0u8; RECORD_LEN]).unwrap();
    let signer = CheckpointSigner::from_seed(&seed());
    let mut rec = Recorder::new(&home.0, names()).unwrap();
    rec.frame(&signer.public_key().frame()).unwrap();
    let mut r = WitnessRecord::new(WitnessOp::Call(Hypercall::ChannelSend), Outcome::Done, 1);
    r.seq = 0;
    let refused = rec.frame(&Frame::Record { log: 1, bytes: r.to_bytes() });
    assert!(refused.is_err(), "the archive link was followed");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "nothing went through the link");
}
