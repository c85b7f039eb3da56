//! The capability system attacked from inside a guest, and the hypercall
//! fuzzer, under QEMU.
//!
//! `probe-cap-attacks` makes one hypercall per attack and prints what each
//! returned; this test pairs every line with the attacker's witness record
//! of the same call and checks both against the expected refusal (status,
//! proof tier, capability id). The P3 approvals it needs are signed here
//! with the host-side signer and handed to the probe in the bundle.
//! `probe-cap-peer` runs beside it, with two reference agents, and must
//! finish untouched.
//!
//! `probe-hvc-fuzz` makes ≥ 100 000 seeded random hypercalls; the seed comes
//! from `RVM_FUZZ_SEED` (decimal or 0x-hex) or the clock, and is printed so a
//! failure can be rerun. `RVM_FUZZ_CALLS` overrides the number of calls,
//! `RVM_FUZZ_BUDGET_MS` the run budget (900 s). `RVM_SERIAL_DUMP=<dir>`
//! keeps each run's serial output.

use std::collections::HashMap;

use rvm_abi::bundle::{CapDesc, RecoveryDesc};
use rvm_abi::witness::NO_CAP;
use rvm_abi::{HvError, Hypercall, ObjectKind, Rights, WitnessRecord};
use rvm_cap::attest::{verify_attestation, Attestation};
use rvm_cap::proof::{approval_message, authority_key, revoke_args_digest, sign_operation, RootRef};
use rvm_cap::{ArgsDigest, AuthorityKey, DeriveParams, Nonce, ObjectRef, PartitionId, Signature, Timestamp};
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions, QemuRun};

const AUTHORITY_SEED: [u8; 32] = [0xa7; 32];
const STRANGER_SEED: [u8; 32] = [0x5a; 32];
/// Partition ids: bundle position + 1.
const ATTACKER: u32 = 1;
const PEER: u32 = 2;

const R: Rights = Rights::READ;
const W: Rights = Rights::WRITE;
const G: Rights = Rights::GRANT;
const REV: Rights = Rights::REVOKE;
const PRV: Rights = Rights::PROVE;
const ONCE: Rights = Rights::GRANT_ONCE;

/// A capability for `object` of `kind` with each right at the tier beside it.
fn cap(kind: ObjectKind, object: u32, rights: &[(Rights, u8)]) -> CapDesc {
    let mut all = Rights::empty();
    let mut tiers = [0u8; 7];
    for (r, t) in rights {
        all |= *r;
        tiers[r.index().expect("one right")] = *t;
    }
    CapDesc {
        kind,
        rights: all,
        tiers,
        object,
        quota: 0,
        expires_at: 0,
        window_start: 0,
        window_len: 0,
        resource_digest: [0; 16],
    }
}

fn store(p: u32, rights: &[(Rights, u8)]) -> CapDesc {
    cap(ObjectKind::StateStore, p, rights)
}

/// An approval by the attacker, through the tree rooted at its boot handle
/// `root`, in the boot `boot_id`.
fn sign(seed: &[u8; 32], op: Hypercall, root: u16, nonce: u64, boot_id: [u8; 32], args: &ArgsDigest) -> [u8; 64] {
    let object = ObjectRef::new(ObjectKind::StateStore, ATTACKER);
    let root = RootRef { partition: ATTACKER, index: root, generation: 0 };
    sign_operation(seed, &approval_message(op, object, PartitionId(ATTACKER), root, Nonce(nonce), boot_id, args)).0
}

/// The attacker's input: the approvals its P3 attacks present (layout in
/// the probe's documentation), for the boot `boot_id`.
fn attacker_input(boot_id: [u8; 32]) -> Vec<u8> {
    let derive = |rights: Rights| DeriveParams::rights(rights).args_digest(PartitionId(ATTACKER));
    let none = ArgsDigest::of(&[], &[]);
    let mut input = b"RVMATK01".to_vec();
    input.extend_from_slice(&[0; 8]);
    for sig in [
        sign(&AUTHORITY_SEED, Hypercall::CapRevoke, 6, 1, boot_id, &revoke_args_digest()),
        sign(&STRANGER_SEED, Hypercall::CapRevoke, 6, 1, boot_id, &revoke_args_digest()),
        sign(&AUTHORITY_SEED, Hypercall::CapDerive, 7, 1, boot_id, &derive(W | G | PRV)),
        sign(&AUTHORITY_SEED, Hypercall::CapDerive, 7, 2, boot_id, &derive(W | PRV)),
        sign(&AUTHORITY_SEED, Hypercall::Prove, 7, 3, boot_id, &none),
        sign(&AUTHORITY_SEED, Hypercall::Prove, 7, 4, boot_id, &none),
    ] {
        input.extend_from_slice(&sig);
    }
    assert_eq!(input.len(), 400);
    input
}

fn attacker(boot_id: [u8; 32]) -> PartitionSpec {
    let mut quota = store(ATTACKER, &[(W, 2)]);
    quota.quota = 3;
    let mut expiring = store(ATTACKER, &[(W, 2), (G, 1)]);
    // Unix seconds; the bundle gives the kernel no wall clock, so this is
    // read as seconds after boot: far away, but not never.
    expiring.expires_at = 4_000_000_000;
    // Every refused call counts toward abuse (F3 after 16 within a second);
    // the attacker is refused on purpose, so its recovery map turns abuse
    // fencing off (its calls are still refused and witnessed).
    PartitionSpec::image("attacker", artifact("probes/probe-cap-attacks.elf"))
        .recovery(RecoveryDesc { abuse_limit: RecoveryDesc::ABUSE_NEVER, ..RecoveryDesc::DEFAULT })
        .authority(authority_key(&AUTHORITY_SEED).0)
        .cap(store(ATTACKER, &[(R, 1), (W, 1), (G, 1), (REV, 1), (PRV, 1)]))
        .cap(store(ATTACKER, &[(R, 1), (W, 1), (ONCE, 1)]))
        .cap(quota)
        .cap(store(ATTACKER, &[(W, 2)]))
        .cap(expiring)
        .cap(store(ATTACKER, &[(R, 1), (G, 1), (REV, 3)]))
        .cap(store(ATTACKER, &[(W, 1), (G, 3), (REV, 1), (PRV, 3)]))
        .cap(cap(ObjectKind::WitnessLog, ATTACKER, &[(PRV, 1)]))
        .input(attacker_input(boot_id))
}

/// The peer holds more capabilities than the attacker, so its last handle
/// names nothing in the attacker's table.
fn peer() -> PartitionSpec {
    let mut p = PartitionSpec::image("peer", artifact("probes/probe-cap-peer.elf"));
    for _ in 0..12 {
        p = p.cap(store(PEER, &[(R, 1)]));
    }
    p
}

fn with_reference_pair(spec: BundleSpec) -> BundleSpec {
    spec.partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .channel(0, 1)
        .channel(2, 3)
}

/// What each attack must answer: the status and the proof tier its check
/// reached.
fn expectations() -> HashMap<&'static str, (Result<(), HvError>, u8)> {
    use HvError::*;
    let mut e: HashMap<&'static str, (Result<(), HvError>, u8)> = HashMap::new();
    let ok = |tier| (Ok(()), tier);
    for (name, err) in [
        ("forged-index", BadHandle),
        ("forged-generation", BadHandle),
        ("forged-high-bits", BadHandle),
        ("wrong-kind", BadHandle),
        ("peer-handle", BadHandle),
        ("peer-handle-revoke", BadHandle),
        ("amplify-rights", NoRights),
        ("use-without-right", NoRights),
        ("amplify-expiry", InvalidArgument),
        ("unknown-right", InvalidArgument),
        ("derive-to-hypervisor", InvalidArgument),
        ("depth-9", DepthExceeded),
        ("grant-once-reuse", GrantConsumed),
        ("revoked-use", Revoked),
        ("stale-use", StaleHandle),
        ("p3-revoked-ancestor", Revoked),
    ] {
        e.insert(name, (Err(err), 1));
    }
    for (name, err) in
        [("expired-use", Expired), ("quota-4", QuotaExceeded), ("nonce-replay", Replay), ("nonce-older", Replay)]
    {
        e.insert(name, (Err(err), 2));
    }
    for (name, err) in [
        ("p3-no-proof", BadProof),
        ("p3-bad-signature", BadProof),
        ("p3-wrong-key", BadProof),
        ("p3-proof-unmapped", BadAddress),
        ("p3-replay", Replay),
        ("p3-derive-no-proof", BadProof),
    ] {
        e.insert(name, (Err(err), 3));
    }
    for name in [
        "derive-read-grant",
        "depth-1",
        "depth-2",
        "depth-3",
        "depth-4",
        "depth-5",
        "depth-6",
        "depth-7",
        "depth-8",
        "grant-once-first",
        "stale-derive",
        "stale-revoke",
        "stale-cleanup",
        "expired-derive",
        "p3-setup-derive",
        "p3-revoke-ancestor",
        "prove-log",
        "done",
    ] {
        e.insert(name, ok(1));
    }
    for name in ["quota-1", "quota-2", "quota-3", "nonce-10", "nonce-11"] {
        e.insert(name, ok(2));
    }
    for name in ["p3-approved", "p3-derive-c1", "p3-derive-c2", "p3-prove-c2"] {
        e.insert(name, ok(3));
    }
    e
}

/// Check a log's chain: consecutive seqs, each `prev` the head before it.
fn check_chain(run: &QemuRun, log: u32) -> Vec<[u8; 64]> {
    let records: Vec<[u8; 64]> = run.records().into_iter().filter(|(l, _)| *l == log).map(|(_, b)| b).collect();
    run.assert(!records.is_empty(), "the log has records");
    let mut head = rvm_witness::Hash::ZERO;
    for (i, bytes) in records.iter().enumerate() {
        let r = WitnessRecord::from_bytes(bytes).expect("record version");
        run.assert(r.seq == i as u64, &format!("log {log}: seq {i} consecutive"));
        run.assert(r.prev == head.prefix16(), &format!("log {log}: record {i} links the previous head"));
        head = rvm_witness::chain_step(&head, bytes);
    }
    records
}

/// `attest`, `attest-digest` and `attest-signature` lines of attack `name`.
fn attestation(run: &QemuRun, name: &str) -> (u64, ObjectRef, [u8; 32], Signature) {
    let line = |prefix: &str| -> String {
        let p = format!("{prefix} {name} ");
        run.console_of("attacker")
            .find_map(|l| l.strip_prefix(p.as_str()).map(String::from))
            .unwrap_or_else(|| panic!("no {prefix} line for {name}"))
    };
    let head = line("attest");
    let f: Vec<&str> = head.split_whitespace().collect();
    let at = u64::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap();
    let kind = ObjectKind::from_u8(f[3].parse().unwrap()).unwrap();
    let object = ObjectRef::new(kind, f[5].parse().unwrap());
    let mut digest = [0u8; 32];
    rvm_abi::hex::decode(line("attest-digest").trim().as_bytes(), &mut digest).unwrap();
    let mut sig = [0u8; 64];
    rvm_abi::hex::decode(line("attest-signature").trim().as_bytes(), &mut sig).unwrap();
    (at, object, digest, Signature(sig))
}

#[test]
fn capability_attacks_from_a_guest_are_refused_exactly_and_witnessed() {
    let spec = BundleSpec::new();
    let boot_id = spec.boot_id;
    let spec = with_reference_pair(spec.partition(attacker(boot_id)).partition(peer()));
    let run = boot(&spec.build(), &QemuOptions::default());
    dump(&run, "attacks");
    run.assert(run.exit == Some(0), "the hypervisor powered off cleanly");
    run.assert(run.contains("'attacker' exited: code 0x0"), "the attacker ran to its end");
    run.assert(run.console_of("peer").any(|l| l == "peer intact"), "the peer's memory and capabilities are intact");
    for p in ["peer", "agent-a", "agent-b"] {
        run.assert(run.contains(&format!("'{p}' exited: code 0x0")), &format!("{p} finished"));
    }
    let published =
        run.console_of("peer").find_map(|l| l.strip_prefix("peer published ")).expect("peer published its handle");
    run.assert(
        run.console_of("attacker").any(|l| l.ends_with(&format!("peer's handle {published}"))),
        "the attacker received the peer's handle",
    );

    let lines = run.attack_lines("attacker");
    let records = check_chain(&run, ATTACKER);
    // The attacker's calls, without its console writes and the polls while
    // it waited for the peer's handle; the last is its Exit.
    let calls: Vec<WitnessRecord> = records
        .iter()
        .map(|b| WitnessRecord::from_bytes(b).unwrap())
        .filter(|r| r.op < 0x8000 && r.op != Hypercall::ConsoleWrite as u16)
        .skip_while(|r| r.op == Hypercall::ChannelRecv as u16)
        .collect();
    run.assert(calls.len() == lines.len() + 1, &format!("{} attack lines, {} call records", lines.len(), calls.len()));
    run.assert(calls.last().map(|r| r.op) == Some(Hypercall::Exit as u16), "then Exit");

    let expect = expectations();
    let slots = rvm_cap::policy::DEFAULT_SLOTS_PER_PARTITION as usize;
    let fills = lines.iter().filter(|l| l.name == "fill").count();
    let mut fill_seen = 0;
    let mut checked = 0;
    for (line, rec) in lines.iter().zip(&calls) {
        let (status, tier) = if line.name == "fill" {
            fill_seen += 1;
            if fill_seen == fills {
                (Err(HvError::Full), 1)
            } else {
                (Ok(()), 1)
            }
        } else {
            *expect.get(line.name.as_str()).unwrap_or_else(|| panic!("unexpected attack {}", line.name))
        };
        let code = status.map_or_else(|e| e.code(), |()| 0);
        let what = format!("{line:?} / record {rec:?}");
        run.assert(line.status == code, &format!("status of {what}: want {status:?}"));
        run.assert(i64::from(rec.outcome) == code, &format!("record outcome of {what}"));
        run.assert(rec.op == line.op, &format!("record op of {what}"));
        run.assert(rec.cap == line.cap, &format!("record capability of {what}"));
        run.assert(rec.tier == tier, &format!("record tier of {what}: want {tier}"));
        checked += 1;
    }
    let named: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
    for name in expect.keys() {
        run.assert(named.contains(name), &format!("attack {name} was made"));
    }
    let by_name = |n: &str| lines.iter().find(|l| l.name == n).unwrap();
    run.assert(by_name("forged-high-bits").cap == NO_CAP, "a register that is no handle names no capability");
    // Live when the table was filled: 10 boot handles and the GRANT_ONCE child.
    run.assert(fills - 1 == slots - 11, &format!("{} derives filled the table", fills - 1));
    run.assert(
        by_name("stale-revoke").x1 == 10,
        "the revoke removed the read-grant child, the chain of 8 and the stale one",
    );
    run.assert(by_name("p3-approved").x1 == 1, "the approved revoke removed the one child");
    run.assert(by_name("p3-revoke-ancestor").x1 == 2, "c1 and c2");
    eprintln!("{checked} attack calls checked ({} fills)", fills);

    // Both attestations verify against the hypervisor's announced key; the
    // log's is of the head just before the Prove record.
    let key = AuthorityKey(run.witness_key().expect("@K frame"));
    for name in ["prove-log", "p3-prove-c2"] {
        let (at, object, digest, sig) = attestation(&run, name);
        let a = Attestation { object, partition: PartitionId(ATTACKER), at: Timestamp(at), state_digest: digest };
        run.assert(verify_attestation(&key, &a, &sig), &format!("{name}'s attestation verifies"));
        let forged = Attestation { partition: PartitionId(PEER), ..a };
        run.assert(!verify_attestation(&key, &forged, &sig), "and binds the partition");
    }
    let (_, object, digest, _) = attestation(&run, "prove-log");
    run.assert(object == ObjectRef::new(ObjectKind::WitnessLog, ATTACKER), "the attacker's log");
    let prove_seq = records
        .iter()
        .position(|b| {
            let r = WitnessRecord::from_bytes(b).unwrap();
            r.op == Hypercall::Prove as u16 && r.outcome == 0 && r.tier == 1
        })
        .expect("prove-log record");
    let mut head = rvm_witness::Hash::ZERO;
    for b in &records[..prove_seq] {
        head = rvm_witness::chain_step(&head, b);
    }
    run.assert(digest == head.0, "the attested head is the log's head before the Prove record");
    // Every P3 record is covered by a signed checkpoint.
    let p3 = calls.iter().filter(|r| r.tier == 3).count();
    let signed = run.lines().filter(|l| l.starts_with(&format!("@C {ATTACKER} "))).count();
    run.assert(signed >= p3, &format!("{signed} signed checkpoints for {p3} P3 records"));
}

/// With `RVM_SERIAL_DUMP=<dir>`, keep the serial output as `<dir>/<test>.log`.
fn dump(run: &QemuRun, test: &str) {
    if let Some(dir) = std::env::var_os("RVM_SERIAL_DUMP") {
        let path = std::path::Path::new(&dir).join(format!("{test}.log"));
        std::fs::write(&path, &run.serial).expect("write the serial dump");
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn the_hypervisor_survives_a_hypercall_fuzzer() {
    let seed = env_u64("RVM_FUZZ_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        t.as_nanos() as u64 ^ 0x5eed_0000_0000_0000
    });
    let calls = env_u64("RVM_FUZZ_CALLS").unwrap_or(100_000);
    eprintln!("fuzz seed {seed:#018x} calls {calls} (RVM_FUZZ_SEED={seed:#x} reruns it)");
    let mut input = b"RVMFUZ01".to_vec();
    input.extend_from_slice(&seed.to_le_bytes());
    input.extend_from_slice(&calls.to_le_bytes());
    // P2 with a small quota, a window and GRANT, so fuzzed derives make
    // children that expire and fuzzed uses run out of quota.
    let mut quota = store(1, &[(W, 2), (G, 1)]);
    quota.quota = 20;
    quota.window_len = 256;
    // Abuse fencing (F3 after 16 invalid calls within a second) would stop
    // the fuzzer within its first hundred calls: its recovery map turns it off
    // (its calls are still refused and witnessed).
    let fuzzer = PartitionSpec::image("fuzzer", artifact("probes/probe-hvc-fuzz.elf"))
        .recovery(RecoveryDesc { abuse_limit: RecoveryDesc::ABUSE_NEVER, ..RecoveryDesc::DEFAULT })
        .authority(authority_key(&AUTHORITY_SEED).0)
        .cap(store(1, &[(R, 1), (W, 1), (G, 1), (REV, 1), (PRV, 1)]))
        .cap(quota)
        .cap(store(1, &[(R, 3), (W, 3), (G, 3), (REV, 3), (PRV, 3)]))
        .cap(cap(ObjectKind::WitnessLog, 1, &[(PRV, 1)]))
        .cap(store(1, &[(R, 1), (ONCE, 1)]))
        .input(input);
    // A fenced fuzzer would leave its peer waiting: the run budget ends
    // such a run (and the test then fails on the missing lines).
    let budget_ms = env_u64("RVM_FUZZ_BUDGET_MS").map_or(420_000, |b| u32::try_from(b).unwrap_or(u32::MAX));
    let spec = with_reference_pair(BundleSpec::new().partition(fuzzer).partition(peer())).budget_ms(budget_ms);
    let timeout = std::time::Duration::from_millis(u64::from(budget_ms) + 120_000);
    let opts = QemuOptions { timeout, ..QemuOptions::default() };
    let run = boot(&spec.build(), &opts);
    dump(&run, "fuzz");
    let fuzz: Vec<&str> = run.console_of("fuzzer").filter(|l| l.starts_with("fuzz ")).collect();
    for l in &fuzz {
        eprintln!("{l}");
    }
    eprintln!("qemu ran {:.1} s", run.elapsed.as_secs_f64());
    run.assert(!run.timed_out, "QEMU finished in time");
    run.assert(run.exit == Some(0), "the hypervisor survived and powered off cleanly");
    run.assert(
        fuzz.first() == Some(&format!("fuzz seed {seed:#018x} calls {calls}").as_str()),
        "the seed is printed first",
    );
    run.assert(!run.contains("fuzz FAILED"), "every status was a defined one");
    let done = fuzz.iter().find_map(|l| l.strip_prefix("fuzz done ")).expect("the fuzzer finished");
    let field = |name: &str| -> u64 {
        let f: Vec<&str> = done.split_whitespace().collect();
        let at = f.iter().position(|w| *w == name).unwrap_or_else(|| panic!("no {name} in {done:?}"));
        f[at + 1].parse().unwrap()
    };
    let (made, unwitnessed) = (field("calls"), field("unwitnessed"));
    run.assert(made == calls, "every generated call was made");
    run.assert(calls >= 100_000 || std::env::var_os("RVM_FUZZ_CALLS").is_some(), "at least 100 000 calls");
    run.assert(run.contains("'fuzzer' exited: code 0x0"), "the fuzzer exited 0");
    run.assert(run.console_of("peer").any(|l| l == "peer intact"), "the peer's memory and capabilities are intact");
    for p in ["peer", "agent-a", "agent-b"] {
        run.assert(run.contains(&format!("'{p}' exited: code 0x0")), &format!("{p} finished"));
    }
    // The fuzzer's chain is whole, every call but `Null`, `Yield` and `Idle(0)` is in
    // it (PSCI calls as `Psci` events), and its head is signed.
    let records = check_chain(&run, 1);
    let psci = rvm_abi::witness::KernelEvent::Psci as u16;
    let witnessed_calls = records
        .iter()
        .map(|b| WitnessRecord::from_bytes(b).unwrap().op)
        .filter(|op| *op < 0x8000 || *op == psci)
        .count() as u64;
    run.assert(
        witnessed_calls >= made - unwitnessed,
        &format!("{witnessed_calls} call records for {made} calls, {unwitnessed} unwitnessed"),
    );
    run.assert(run.lines().any(|l| l.starts_with("@C 1 ")), "the fuzzer's log head is signed");
}
