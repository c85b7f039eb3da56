//! Tool calls on the fake machine: a call is checked against the caller's
//! claims, witnessed before the host sees it, parked while the host runs
//! the tool (others run meanwhile), and answered with a second record that
//! binds the response; whatever the claims do not allow never reaches the
//! host.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use rvm_abi::bundle::{BootConfig, CapDesc, EntryKind, BOOT_FLAG_INSTANCE, BOOT_FLAG_TOOLS};
use rvm_abi::tool::AnswerStatus;
use rvm_abi::witness::{flags, KernelEvent};
use rvm_abi::{HvError, Hypercall, ObjectKind, Outcome, ProofTier, Rights, WitnessRecord};
use sha2::{Digest, Sha256};

use crate::fake::{tool_answer, FakeArch};
use crate::memory::addr::{PhysAddr, PhysRange};
use crate::memory::frames::FrameAllocator;
use crate::partition::PartitionState;
use crate::state::Hypervisor;
use crate::tests::orders::{assert_chains_verify, bundle_with_extra, events, fresh_boot_id, records, runtime, Part};
use crate::tests::HEAP;

/// Where a test guest keeps its name, request and response.
const NAME: u64 = HEAP;
const REQUEST: u64 = HEAP + 256;
const RESPONSE: u64 = HEAP + 4096;

/// A `Resource` capability with EXECUTE at `tier`, scoped to `pattern`.
fn token(pattern: &str, tier: ProofTier, quota: u32, expires_at: u64) -> CapDesc {
    let mut resource_digest = [0u8; 16];
    resource_digest.copy_from_slice(&Sha256::digest(pattern.as_bytes())[..16]);
    CapDesc {
        kind: ObjectKind::Resource,
        rights: Rights::EXECUTE,
        tiers: crate::load::tiers_for(Rights::EXECUTE, tier as u8),
        object: 0,
        quota,
        expires_at,
        window_start: 0,
        window_len: 0,
        resource_digest,
    }
}

/// The entries that give partition `owner` these tokens and their claims.
fn claims(owner: u32, tokens: &[(&str, CapDesc)]) -> Vec<(EntryKind, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for (at, (pattern, desc)) in tokens.iter().enumerate() {
        out.push((EntryKind::Capability, owner, desc.to_bytes().to_vec()));
        let mut claim = (at as u32).to_le_bytes().to_vec();
        claim.extend_from_slice(pattern.as_bytes());
        out.push((EntryKind::Claim, owner, claim));
    }
    out
}

fn config(serve: bool, budget_ms: u32) -> BootConfig {
    let flags = BOOT_FLAG_INSTANCE | if serve { BOOT_FLAG_TOOLS } else { 0 };
    BootConfig { run_budget_ms: budget_ms, flags, ..BootConfig::DEFAULT }
}

fn boot(parts: &[Part], serve: bool, budget_ms: u32, extra: &[(EntryKind, u32, Vec<u8>)]) -> Hypervisor<FakeArch> {
    let bundle = bundle_with_extra(parts, &[], false, Some(fresh_boot_id()), config(serve, budget_ms), extra);
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &bundle).unwrap()
}

/// What a caller saw of each of its calls: status, x1, the response bytes.
type Seen = Rc<RefCell<Vec<(i64, u64, Vec<u8>)>>>;

/// A guest that makes each tool call of `calls` (name, request) with a
/// response buffer of `capacity` bytes, notes what it got, and exits.
fn caller(calls: Vec<(&'static str, Vec<u8>)>, capacity: u64, seen: Seen) -> crate::fake::GuestFn {
    let (mut next, mut noted) = (0usize, 0usize);
    runtime(Box::new(move |s| {
        // The answer to the last call, once (a step that faulted runs again).
        if noted < next {
            noted = next;
            let len = s.result(0);
            let mut got = alloc::vec![0u8; if s.status() == 0 { len as usize } else { 0 }];
            s.m.read(RESPONSE, &mut got).unwrap();
            seen.borrow_mut().push((s.status(), len, got));
        }
        let Some((name, request)) = calls.get(next) else { return s.exit(0) };
        // A page not yet touched faults in first (the kernel maps it and
        // this step runs again).
        for (at, bytes) in [(NAME, name.as_bytes()), (REQUEST, request.as_slice())] {
            if let Err(f) = s.m.write(at, bytes) {
                return f.0;
            }
        }
        next += 1;
        s.call(Hypercall::ToolCall, &[NAME, name.len() as u64, REQUEST, request.len() as u64, RESPONSE, capacity])
    }))
}

/// The records of op `ToolCall` in log `log`.
fn tool_records(hv: &Hypervisor<FakeArch>, log: u32) -> Vec<WitnessRecord> {
    records(hv, log).into_iter().filter(|r| r.op == Hypercall::ToolCall as u16).collect()
}

fn denied(e: HvError) -> i16 {
    Outcome::Denied(e).code()
}

#[test]
fn an_allowed_call_is_witnessed_before_the_host_runs_it_and_its_answer_is_bound_to_a_second_record() {
    let extra = claims(0, &[("Bash(echo *)", token("Bash(echo *)", ProofTier::P2, 0, 0))]);
    let mut hv = boot(&[Part::new("agent"), Part::new("bystander")], true, 200, &extra);
    let seen = Seen::default();
    hv.arch.set_guest(1, caller(alloc::vec![("Bash", b"echo hi".to_vec())], 64, seen.clone()));
    // The bystander keeps making calls while the tool runs.
    let bystander_calls = Rc::new(RefCell::new(0u32));
    let counted = bystander_calls.clone();
    hv.arch.set_guest(2, runtime(Box::new(move |s| {
        *counted.borrow_mut() += 1;
        if *counted.borrow() > 200 {
            return s.exit(0);
        }
        s.call(Hypercall::ClockRead, &[])
    })));
    const RUNS_FOR: u64 = 20_000_000;
    hv.arch.tool_host = Some(Box::new(|r| alloc::vec![(RUNS_FOR, tool_answer(r.log, r.seq, AnswerStatus::Ran, b"{\"exit_code\":0}"))]));
    hv.run();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Finished, "{}", hv.arch.console_text());
    assert_eq!(*seen.borrow(), [(0, 15, b"{\"exit_code\":0}".to_vec())]);

    // The host was asked once, for exactly what the agent named.
    let sent = hv.arch.tool_requests.clone();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].log, sent[0].name.as_slice(), sent[0].request.as_slice(), sent[0].capacity), (1, &b"Bash"[..], &b"echo hi"[..], 64));

    // Two records: the call (its token named, before the host was asked)
    // and the answer, bound to the response.
    let recs = tool_records(&hv, 1);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let (call, answer) = (&recs[0], &recs[1]);
    assert_eq!((call.seq, call.outcome, call.flags & flags::ANSWER), (sent[0].seq, 0, 0));
    assert_ne!(call.cap, rvm_abi::witness::NO_CAP, "the matched token is named");
    // The call was signed before the host heard of it: a checkpoint of its
    // log covers it, streamed before the request.
    let console = hv.arch.console_text();
    let signed = console.lines().filter_map(rvm_abi::frame::Frame::parse).any(|f| matches!(f, rvm_abi::frame::Frame::Checkpoint { log: 1, size, .. } if size == call.seq + 1));
    assert!(signed, "no checkpoint covering the call record");
    assert_eq!(call.tier, ProofTier::P2 as u8);
    let regs = [NAME, 4, REQUEST, 7, RESPONSE, 64];
    assert_eq!(call.args, rvm_state::digest::of_call(&regs, b"Bashecho hi"));
    assert_eq!((answer.outcome, answer.flags & flags::ANSWER, answer.cap), (0, flags::ANSWER, call.cap));
    assert_eq!(answer.args, rvm_state::digest::of_call(&regs, b"{\"exit_code\":0}"));
    // The caller did not run while the tool did; the bystander did.
    assert!(answer.timestamp >= call.timestamp + RUNS_FOR, "{} < {} + {RUNS_FOR}", answer.timestamp, call.timestamp);
    let bystander_during = records(&hv, 2).iter().filter(|r| r.timestamp > call.timestamp && r.timestamp < answer.timestamp).count();
    assert!(bystander_during > 10, "the bystander made {bystander_during} calls while the tool ran");
    assert_eq!(hv.tools.counts(), (1, 1));
    assert_chains_verify(&hv);
}

#[test]
fn what_no_claim_allows_is_refused_witnessed_and_never_reaches_the_host() {
    let extra = claims(
        0,
        &[
            ("Bash(echo *)", token("Bash(echo *)", ProofTier::P1, 0, 0)),
            ("mcp__demo__*", token("mcp__demo__*", ProofTier::P1, 0, 0)),
        ],
    );
    let mut hv = boot(&[Part::new("agent")], true, 50, &extra);
    let seen = Seen::default();
    let attempts: Vec<(&'static str, Vec<u8>)> = alloc::vec![
        ("Bash", b"rm -rf /".to_vec()),
        ("Bash", b"echo a\nrm -rf /".to_vec()),
        ("Bash", b"echo ../../etc/passwd".to_vec()),
        ("Bash", b"echox hi".to_vec()),
        ("mcp__other__echo", b"{}".to_vec()),
        ("mcp__demo", b"{}".to_vec()),
        ("Bash; rm", b"echo hi".to_vec()),
        ("Read", b"/etc/passwd".to_vec()),
    ];
    let n = attempts.len();
    hv.arch.set_guest(1, caller(attempts, 64, seen.clone()));
    hv.arch.tool_host = Some(Box::new(|r| alloc::vec![(0, tool_answer(r.log, r.seq, AnswerStatus::Ran, b"ran"))]));
    hv.run();
    assert!(hv.arch.tool_requests.is_empty(), "{:?}", hv.arch.tool_requests);
    let got: Vec<i64> = seen.borrow().iter().map(|s| s.0).collect();
    let mut expected = alloc::vec![HvError::NoRights.code(); n];
    expected[6] = HvError::InvalidArgument.code(); // not a tool name at all
    assert_eq!(got, expected);
    let recs = tool_records(&hv, 1);
    assert_eq!(recs.len(), n, "every refusal is witnessed");
    assert!(recs.iter().all(|r| r.outcome != 0 && r.cap == rvm_abi::witness::NO_CAP && r.flags & flags::ANSWER == 0));
    assert_eq!(recs[0].outcome, denied(HvError::NoRights));
    assert_chains_verify(&hv);
}

#[test]
fn the_token_s_tier_applies_expiry_quota_and_p3() {
    // One call per epoch; an expired token beside a live one; a P3 token.
    let extra = claims(
        0,
        &[
            ("Bash(date)", token("Bash(date)", ProofTier::P2, 0, 1)),
            ("Bash(echo *)", token("Bash(echo *)", ProofTier::P2, 1, 0)),
            ("mcp__vault__*", token("mcp__vault__*", ProofTier::P3, 0, 0)),
        ],
    );
    // P3 rights need an authority key to approve them.
    let mut extra = extra;
    let authority = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes();
    extra.push((EntryKind::AuthorityKey, 0, authority.to_vec()));
    // The run's budget counts from the kernel clock's zero.
    let mut hv = boot(&[Part::new("agent")], true, 2_050, &extra);
    // Past the expiry (1 s after the kernel clock's zero).
    hv.arch.set_clock_ns(2_000_000_000);
    let seen = Seen::default();
    let calls: Vec<(&'static str, Vec<u8>)> = alloc::vec![
        ("Bash", b"date".to_vec()),
        ("Bash", b"echo one".to_vec()),
        ("Bash", b"echo two".to_vec()),
        ("mcp__vault__read", b"{}".to_vec()),
    ];
    hv.arch.set_guest(1, caller(calls, 64, seen.clone()));
    hv.arch.tool_host = Some(Box::new(|r| alloc::vec![(0, tool_answer(r.log, r.seq, AnswerStatus::Ran, b"ok"))]));
    hv.run();
    let got: Vec<i64> = seen.borrow().iter().map(|s| s.0).collect();
    assert_eq!(got, [HvError::Expired.code(), 0, HvError::QuotaExceeded.code(), HvError::BadProof.code()], "{}", hv.arch.console_text());
    // Only the one allowed call reached the host.
    assert_eq!(hv.arch.tool_requests.len(), 1);
    assert_eq!(hv.arch.tool_requests[0].request, b"echo one");
    // The refusals name the token that refused them.
    let recs = tool_records(&hv, 1);
    assert_eq!(recs.len(), 5);
    assert!(recs.iter().all(|r| r.cap != rvm_abi::witness::NO_CAP));
}

#[test]
fn a_boot_whose_host_serves_no_tools_refuses_an_allowed_call() {
    let extra = claims(0, &[("Bash", token("Bash", ProofTier::P1, 0, 0))]);
    let mut hv = boot(&[Part::new("agent")], false, 50, &extra);
    let seen = Seen::default();
    hv.arch.set_guest(1, caller(alloc::vec![("Bash", b"echo hi".to_vec())], 64, seen.clone()));
    hv.run();
    assert_eq!(seen.borrow()[0].0, HvError::NotSupported.code());
    assert!(hv.arch.tool_requests.is_empty());
    assert_eq!(tool_records(&hv, 1)[0].outcome, denied(HvError::NotSupported));
}

#[test]
fn a_host_that_never_answers_times_out_and_a_late_or_foreign_answer_changes_nothing() {
    let extra = claims(0, &[("Bash", token("Bash", ProofTier::P1, 0, 0))]);
    // A shorter deadline than the ABI's (600 s) keeps the fake run short.
    const DEADLINE_NS: u64 = 30_000_000;
    let mut hv = boot(&[Part::new("agent")], true, 200, &extra);
    hv.policy.tool_deadline_ns = DEADLINE_NS;
    let seen = Seen::default();
    hv.arch.set_guest(1, caller(alloc::vec![("Bash", b"sleep 1000".to_vec()), ("Bash", b"echo next".to_vec())], 64, seen.clone()));
    // The first call: an answer for another record, then one after the
    // deadline. The second: answered with more than the agent takes.
    hv.arch.tool_host = Some(Box::new(|r| {
        if r.request == b"sleep 1000" {
            alloc::vec![(1_000, tool_answer(r.log, r.seq + 7, AnswerStatus::Ran, b"foreign")), (DEADLINE_NS + 5_000_000, tool_answer(r.log, r.seq, AnswerStatus::Ran, b"late"))]
        } else {
            alloc::vec![(1_000, tool_answer(r.log, r.seq, AnswerStatus::Ran, &[b'x'; 65]))]
        }
    }));
    hv.run();
    let got: Vec<i64> = seen.borrow().iter().map(|s| s.0).collect();
    assert_eq!(got, [HvError::TimedOut.code(), HvError::ToolFailed.code()], "{}", hv.arch.console_text());
    let recs = tool_records(&hv, 1);
    assert_eq!(recs.len(), 4, "two calls, two answers: {recs:?}");
    assert_eq!((recs[1].outcome, recs[1].flags & flags::ANSWER), (denied(HvError::TimedOut), flags::ANSWER));
    assert!(recs[1].timestamp >= recs[0].timestamp + DEADLINE_NS);
    assert_eq!(recs[3].outcome, denied(HvError::ToolFailed));
}

#[test]
fn a_claim_that_is_not_its_capability_s_resource_refuses_the_partition() {
    // The capability says `Bash(echo *)`; the claim beside it says `*`.
    let mut extra = claims(0, &[("Bash(echo *)", token("Bash(echo *)", ProofTier::P1, 0, 0))]);
    let mut forged = 0u32.to_le_bytes().to_vec();
    forged.extend_from_slice(b"*");
    extra[1].2 = forged;
    let mut hv = boot(&[Part::new("agent"), Part::new("other")], true, 10, &extra);
    hv.run();
    assert_eq!(refusals(&hv), 1, "{}", hv.arch.console_text());
    assert_eq!(hv.partitions()[0].state(), PartitionState::Evicted);
    assert_ne!(hv.partitions()[1].state(), PartitionState::Evicted);
    // A claim naming a capability the partition does not have.
    let mut extra = claims(0, &[("*", token("*", ProofTier::P1, 0, 0))]);
    extra[1].2[0] = 1;
    let mut hv = boot(&[Part::new("agent")], true, 10, &extra);
    hv.run();
    assert_eq!(refusals(&hv), 1);
}

/// `PartitionRefused` records in any log.
fn refusals(hv: &Hypervisor<FakeArch>) -> usize {
    (0..3).map(|log| events(hv, log, &[KernelEvent::PartitionRefused]).len()).sum()
}

#[test]
fn a_partition_running_several_agents_may_not_call_tools() {
    // Two modules: two agents in one partition (a coherence domain).
    let mut extra = claims(0, &[("Bash", token("Bash", ProofTier::P1, 0, 0))]);
    let mut module = alloc::vec![0u8; 64];
    module[..8].copy_from_slice(b"\0asm\x01\0\0\0");
    extra.push((EntryKind::Wasm, 0, module));
    let mut hv = boot(&[Part::new("domain")], true, 50, &extra);
    let seen = Seen::default();
    hv.arch.set_guest(1, caller(alloc::vec![("Bash", b"echo hi".to_vec())], 64, seen.clone()));
    hv.run();
    assert_eq!(seen.borrow().first().map(|s| s.0), Some(HvError::NotSupported.code()), "{}", hv.arch.console_text());
    assert!(hv.arch.tool_requests.is_empty());
}

#[test]
fn an_idle_machine_looks_for_the_host_s_answer_often_while_a_call_waits() {
    let extra = claims(0, &[("Bash", token("Bash", ProofTier::P1, 0, 0))]);
    let mut hv = boot(&[Part::new("agent")], true, 200, &extra);
    let seen = Seen::default();
    hv.arch.set_guest(1, caller(alloc::vec![("Bash", b"sleep 1".to_vec())], 64, seen.clone()));
    const RUNS_FOR: u64 = 30_000_000;
    hv.arch.tool_host = Some(Box::new(|r| alloc::vec![(RUNS_FOR, tool_answer(r.log, r.seq, AnswerStatus::Ran, b"{}"))]));
    hv.run();
    assert_eq!(seen.borrow()[0].0, 0);
    let call = tool_records(&hv, 1)[0];
    let answer = tool_records(&hv, 1)[1];
    // The boot CPU's naps while the call waited were short ones, so the
    // answer was taken soon after it arrived (not a whole slice later).
    let naps: Vec<u64> = hv.arch.idle_waits().iter().filter(|(cpu, at, _)| cpu.index() == 0 && *at > call.timestamp && *at < answer.timestamp).map(|(_, at, until)| until - at).collect();
    assert!(!naps.is_empty() && naps.iter().all(|&n| n <= 250_000), "{naps:?}");
    assert!(answer.timestamp < call.timestamp + RUNS_FOR + 1_000_000, "answered {} ns after the call", answer.timestamp - call.timestamp);
}

#[test]
fn a_partition_that_floods_the_host_with_requests_is_held_back() {
    let extra = claims(0, &[("mcp__x__*", token("mcp__x__*", ProofTier::P1, 0, 0))]);
    let mut hv = boot(&[Part::new("flooder")], true, 200, &extra);
    let seen = Seen::default();
    // Twenty requests of 16 KiB, each answered at once: 320 KiB of frames,
    // five times the partition's burst.
    let calls = (0..20).map(|_| ("mcp__x__y", alloc::vec![b'x'; rvm_abi::tool::MAX_REQUEST])).collect();
    hv.arch.set_guest(1, caller(calls, 64, seen.clone()));
    hv.arch.tool_host = Some(Box::new(|r| alloc::vec![(0, tool_answer(r.log, r.seq, AnswerStatus::Ran, b"{}"))]));
    hv.run();
    // At 512 KiB/s after a 64 KiB burst, the 200 ms run lets about ten go;
    // answered at once and never held, all twenty would.
    let made = seen.borrow().len();
    assert!(hv.partitions()[0].output().held > 0, "the flooder was never held back");
    assert!((5..20).contains(&made), "{made} calls: {}", hv.arch.console_text());
}
