//! Whole-kernel tests of the capability hypercalls on the fake machine:
//! every refusal with its exact status and the witness record it leaves
//! (operation, outcome, proof tier, capability id), the P3 approvals made
//! with the host-side signer, and `Prove` attestations checked against the
//! hypervisor's public key.
//!
//! Guests are scripts: a list of steps, each returning the registers of one
//! call; the results come back in a shared trace. Witnessed calls and the
//! partition's call records correspond one to one, in order.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use rvm_abi::bootinfo::layout;
use rvm_abi::bundle::{
    BootConfig, BundleWriter, CapDesc, ChannelDesc, EntryKind, GLOBAL,
};
use rvm_abi::frame::Frame;
use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::witness::{flags, NO_CAP};
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, Rights, WitnessRecord};
use rvm_cap::attest::{verify_attestation, Attestation};
use rvm_cap::proof::{approval_message, authority_key, revoke_args_digest, sign_operation, staged_args_digest, RootRef};
use rvm_cap::{ArgsDigest, AuthorityKey, DeriveParams, Nonce, ObjectRef, PartitionId, Signature, Timestamp};

use crate::memory::addr::{PhysAddr, PhysRange};
use crate::arch::TrapInfo;
use crate::fake::{FakeArch, GuestView};
use crate::memory::frames::FrameAllocator;
use crate::state::Hypervisor;
use crate::partition::PartitionState;

const WITNESS_SEED: [u8; 32] = [7; 32];
/// The boot id of the test bundles: the boot every approval here signs.
const BOOT_ID: [u8; 32] = [0xb1; 32];
const AUTHORITY: [u8; 32] = [0x11; 32];
const STRANGER: [u8; 32] = [0x22; 32];
const HEAP: u64 = layout::HEAP_IPA;
/// Where scripts put signatures and buffers: heap pages touched before the
/// first step.
const SIG: u64 = HEAP;
const BUF: u64 = HEAP + 0x100;
const OUT: u64 = HEAP + 0x1000;
const TOUCHED_PAGES: u64 = 2;

// ------------------------------------------------------------------ bundles

/// One partition of a test bundle.
#[derive(Clone, Default)]
struct Part {
    caps: Vec<CapDesc>,
    authority: Option<[u8; 32]>,
}

/// `rights`, each at the tier given beside it.
fn cap(kind: ObjectKind, object: u32, rights: &[(Rights, u8)]) -> CapDesc {
    let mut all = Rights::empty();
    let mut tiers = [0u8; 7];
    for (r, t) in rights {
        all |= *r;
        let i = r.index().expect("one right");
        tiers[i] = *t;
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

fn runtime() -> Vec<u8> {
    crate::load::elf::tests::build(0x4000_0000, &[(0x4000_0000, 5, 64, 64), (0x4000_1000, 6, 16, 0x2000)])
}

fn boot(parts: &[Part], channels: &[(u32, u32)]) -> Hypervisor<FakeArch> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &WITNESS_SEED);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: 200, ..BootConfig::DEFAULT }.to_bytes());
    w.entry(EntryKind::BootId, GLOBAL, &BOOT_ID);
    for (n, p) in parts.iter().enumerate() {
        let desc = crate::tests::desc(&alloc::format!("p{}", n + 1));
        let i = w.partition(&desc);
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
        if let Some(seed) = p.authority {
            w.entry(EntryKind::AuthorityKey, i, &authority_key(&seed).0);
        }
        for c in &p.caps {
            w.entry(EntryKind::Capability, i, &c.to_bytes());
        }
    }
    for (a, b) in channels {
        w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: *a, b: *b, capacity: 4 }.to_bytes());
    }
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &w.finish()).unwrap()
}

// ------------------------------------------------------------------ scripts

/// What one call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ret {
    call: u64,
    status: i64,
    x: [u64; 3],
}

impl Ret {
    fn ok(&self) -> bool {
        self.status == 0
    }
    fn err(&self) -> Option<HvError> {
        HvError::from_code(self.status)
    }
}

type Trace = Rc<RefCell<Vec<Ret>>>;

/// What a script does next.
enum Do {
    Call(Hypercall, [u64; 6]),
    Yield,
    /// Take a stage-2 fault (a write to an IPA nothing maps).
    Fault,
}

type Step = Box<dyn FnMut(&[Ret], &mut GuestView<'_>) -> Do>;

fn step(f: impl FnMut(&[Ret], &mut GuestView<'_>) -> Do + 'static) -> Step {
    Box::new(f)
}

/// A call with fixed registers.
fn call(c: Hypercall, args: &[u64]) -> Step {
    let mut regs = [0u64; 6];
    regs[..args.len()].copy_from_slice(args);
    step(move |_, _| Do::Call(c, regs))
}

/// Write `bytes` into guest memory at `ipa`, then make the call.
fn call_with(c: Hypercall, args: &[u64], ipa: u64, bytes: Vec<u8>) -> Step {
    let mut regs = [0u64; 6];
    regs[..args.len()].copy_from_slice(args);
    step(move |_, m| {
        m.write(ipa, &bytes).expect("script buffers are in touched heap pages");
        Do::Call(c, regs)
    })
}

/// A guest that touches its first heap pages, runs `steps`, then exits 0.
fn scripted(mut steps: Vec<Step>, trace: Trace) -> crate::fake::GuestFn {
    steps.reverse();
    let mut last: Option<u64> = None;
    let mut touched = 0;
    Box::new(move |v, m| {
        if let Some(c) = last.take() {
            let x = &v.regs.x;
            trace.borrow_mut().push(Ret { call: c, status: x[0] as i64, x: [x[1], x[2], x[3]] });
        }
        // The first touch of each heap page faults; the kernel backs it.
        while touched < TOUCHED_PAGES {
            if let Err(f) = m.write(HEAP + touched * 4096, &[0]) {
                return f.0;
            }
            touched += 1;
        }
        let Some(mut s) = steps.pop() else {
            return hvc(v, Hypercall::Exit, &[0; 6]);
        };
        let done = trace.borrow().clone();
        match s(&done, m) {
            Do::Call(c, regs) => {
                last = Some(c as u64);
                hvc(v, c, &regs)
            }
            Do::Yield => {
                last = Some(Hypercall::Yield as u64);
                hvc(v, Hypercall::Yield, &[0; 6])
            }
            Do::Fault => m.write(0x1000, b"x").unwrap_err().0,
        }
    })
}

fn hvc(v: &mut crate::running::vcpu::Vcpu, c: Hypercall, regs: &[u64; 6]) -> TrapInfo {
    v.regs.x[0] = u64::from(c.function_id());
    v.regs.x[1..7].copy_from_slice(regs);
    FakeArch::hvc()
}

fn new_trace() -> Trace {
    Rc::new(RefCell::new(Vec::new()))
}

/// Every record of log `log`, decoded from the console.
fn log_records(text: &str, log: u32) -> Vec<WitnessRecord> {
    text.lines()
        .filter_map(Frame::parse)
        .filter_map(|f| match f {
            Frame::Record { log: l, bytes } if l == log => Some(WitnessRecord::from_bytes(&bytes).unwrap()),
            _ => None,
        })
        .collect()
}

/// The call records of a log (kernel events left out).
fn call_records(text: &str, log: u32) -> Vec<WitnessRecord> {
    log_records(text, log).into_iter().filter(|r| r.op < 0x8000).collect()
}

/// The witnessed calls of a trace (`Null` and `Yield` are not witnessed).
fn witnessed(trace: &Trace) -> Vec<Ret> {
    trace
        .borrow()
        .iter()
        .copied()
        .filter(|r| r.call != Hypercall::Yield as u64 && r.call != Hypercall::Null as u64)
        .collect()
}

/// What one call must have answered and recorded.
struct Expect {
    status: Result<(), HvError>,
    tier: u8,
    cap: u32,
}

fn ok(tier: u8, handle: u64) -> Expect {
    Expect { status: Ok(()), tier, cap: witness_id(handle) }
}

fn no(e: HvError, tier: u8, handle: u64) -> Expect {
    Expect { status: Err(e), tier, cap: witness_id(handle) }
}

fn witness_id(raw: u64) -> u32 {
    CapHandle::from_raw(raw).map_or(NO_CAP, CapHandle::witness_id)
}

/// Check every witnessed call of partition `log`'s trace against `expect`:
/// its status, and its record's operation, outcome, tier and capability.
fn check_all(text: &str, log: u32, trace: &Trace, expect: &[Expect]) {
    let calls = witnessed(trace);
    let recs = call_records(text, log);
    assert!(calls.len() >= expect.len(), "only {} calls made: {calls:?}", calls.len());
    for (i, (e, c)) in expect.iter().zip(&calls).enumerate() {
        let r = &recs[i];
        let want_status = e.status.map_or_else(|e| e.code(), |()| 0);
        assert_eq!(c.status, want_status, "call {i} ({c:?}): status {:?}", c.err());
        assert_eq!(u64::from(r.op), c.call & 0xffff, "call {i}: record op");
        assert_eq!(i64::from(r.outcome), want_status, "call {i}: record outcome");
        assert_eq!(r.tier, e.tier, "call {i}: record tier");
        assert_eq!(r.cap, e.cap, "call {i}: record cap");
    }
}

fn run(hv: &mut Hypervisor<FakeArch>) -> String {
    hv.run();
    hv.arch.console_text()
}

// ------------------------------------------------------------------ helpers

const R: Rights = Rights::READ;
const W: Rights = Rights::WRITE;
const G: Rights = Rights::GRANT;
const REV: Rights = Rights::REVOKE;
const PRV: Rights = Rights::PROVE;
const ONCE: Rights = Rights::GRANT_ONCE;

fn store(p: u32, rights: &[(Rights, u8)]) -> CapDesc {
    cap(ObjectKind::StateStore, p, rights)
}

fn derive(parent: u64, target: u64, rights: Rights, expiry: u64) -> Step {
    call(Hypercall::CapDerive, &[parent, target, u64::from(rights.bits()), expiry])
}

/// The handle a derive at trace index `i` returned.
fn derived(done: &[Ret], i: usize) -> u64 {
    assert!(done[i].ok(), "derive {i} failed: {:?}", done[i]);
    done[i].x[0]
}

/// An approval of `op` on `object` by partition `p`, through the tree whose
/// root is `root` = (partition, handle index; generation 0: the boot's
/// installs), in this boot.
#[allow(clippy::too_many_arguments)]
fn sign(seed: &[u8; 32], op: Hypercall, object: ObjectRef, p: u32, root: (u32, u16), nonce: u64, args: &ArgsDigest) -> Vec<u8> {
    let root = RootRef { partition: root.0, index: root.1, generation: 0 };
    sign_operation(seed, &approval_message(op, object, PartitionId(p), root, Nonce(nonce), BOOT_ID, args)).0.to_vec()
}

/// The digest a `StateValidate` or `StateCommit` approval signs when
/// `items` are staged.
fn staged(items: &[(&[u8], &[u8])]) -> ArgsDigest {
    staged_args_digest(items.iter().copied())
}

fn store_ref(p: u32) -> ObjectRef {
    ObjectRef::new(ObjectKind::StateStore, p)
}

fn empty_args() -> ArgsDigest {
    ArgsDigest::of(&[], &[])
}

fn derive_digest(rights: Rights, target: u32) -> ArgsDigest {
    DeriveParams::rights(rights).args_digest(PartitionId(target))
}

fn witness_public() -> AuthorityKey {
    AuthorityKey(rvm_witness::CheckpointSigner::from_seed(&WITNESS_SEED).public_key().0)
}

// ------------------------------------------------------------------ tests

#[test]
fn forged_handles_and_other_partitions_handles_are_bad() {
    // p2 has more capabilities than p1: its last handle names nothing in p1's table.
    let many = (0..6).map(|_| store(2, &[(R, 1)])).collect();
    let mut hv = boot(
        &[Part { caps: vec![store(1, &[(W, 1)])], ..Part::default() }, Part { caps: many, ..Part::default() }],
        &[],
    );
    let theirs = Rc::new(Cell::new(0u64));
    let (t1, t2) = (new_trace(), new_trace());
    let seen = theirs.clone();
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                Box::new(|_, _| Do::Yield),
                call(Hypercall::StateValidate, &[1]),
                call(Hypercall::StateValidate, &[200]),
                call(Hypercall::StateValidate, &[CapHandle::new(1, 5).to_raw()]),
                call(Hypercall::StateValidate, &[1 << 50]),
                call(Hypercall::ChannelSend, &[1, BUF, 1]),
                step(move |_, _| Do::Call(Hypercall::StateValidate, [seen.get(), 0, 0, 0, 0, 0])),
                step(move |_, _| Do::Call(Hypercall::CapRevoke, [6, 0, 0, 0, 0, 0])),
            ],
            t1.clone(),
        ),
    );
    let publish = theirs.clone();
    hv.arch.set_guest(
        2,
        scripted(
            vec![step(move |_, m| {
                let mut page = [0u8; 4096];
                m.read(layout::BOOTINFO_IPA, &mut page).unwrap();
                let info = rvm_abi::bootinfo::BootInfo::read(&page).unwrap();
                let last = rvm_abi::bootinfo::BootInfo::read_handle(&page, info.handle_count as usize - 1).unwrap();
                publish.set(last.raw);
                Do::Call(Hypercall::CapQuery, [last.raw, 0, 0, 0, 0, 0])
            })],
            t2.clone(),
        ),
    );
    let text = run(&mut hv);
    assert_eq!(theirs.get(), 6, "p2's sixth capability");
    assert!(witnessed(&t2)[0].ok());
    check_all(
        &text,
        1,
        &t1,
        &[
            ok(1, 1),
            no(HvError::BadHandle, 1, 200),
            // A generation never issued is forged, not stale.
            no(HvError::BadHandle, 1, CapHandle::new(1, 5).to_raw()),
            // Not a handle at all: no capability id in the record.
            no(HvError::BadHandle, 1, 1 << 50),
            // A store handle presented as a channel.
            no(HvError::BadHandle, 1, 1),
            // p2's handle 6 in p1's table.
            no(HvError::BadHandle, 1, 6),
            no(HvError::BadHandle, 1, 6),
        ],
    );
    assert_eq!(call_records(&text, 1)[3].cap, NO_CAP);
}

#[test]
fn derivation_only_attenuates_and_depth_and_grant_once_are_enforced() {
    let mut hv = boot(
        &[Part {
            caps: vec![store(1, &[(R, 1), (W, 1), (G, 1), (REV, 1), (PRV, 1)]), store(1, &[(R, 1), (W, 1), (ONCE, 1)])],
            ..Part::default()
        }],
        &[],
    );
    let t = new_trace();
    let rg = (R | G).bits();
    let mut steps = vec![
        derive(1, 1, R | G, 0), // 0: handle 3
        step(|d, _| Do::Call(Hypercall::CapDerive, [derived(d, 0), 1, u64::from((R | W).bits()), 0, 0, 0])), // 1
        step(|d, _| Do::Call(Hypercall::StateValidate, [derived(d, 0), 0, 0, 0, 0, 0])), // 2
        call(Hypercall::CapDerive, &[1, 1, 0x80]), // 3: unknown right bit
        call(Hypercall::CapDerive, &[1, 1, 0]), // 4: no rights
        call(Hypercall::CapDerive, &[1, 0, u64::from(R.bits())]), // 5: the hypervisor
        call(Hypercall::CapDerive, &[1, 9, u64::from(R.bits())]), // 6: no such partition
        derive(2, 1, R, 0),     // 7: GRANT_ONCE used
        derive(2, 1, R, 0),     // 8: and consumed
        derive(1, 1, R | G, 0), // 9: depth 1
    ];
    // 10..=16: depths 2..=8; 17: depth 9.
    for i in 10..=17usize {
        steps.push(step(move |d, _| Do::Call(Hypercall::CapDerive, [derived(d, i - 1), 1, u64::from(rg), 0, 0, 0])));
    }
    steps.push(call(Hypercall::CapRevoke, &[1])); // 18
    steps.push(step(|d, _| Do::Call(Hypercall::CapQuery, [derived(d, 0), 0, 0, 0, 0, 0]))); // 19
    steps.push(step(|d, _| Do::Call(Hypercall::CapDerive, [derived(d, 16), 1, u64::from(R.bits()), 0, 0, 0]))); // 20
    steps.push(step(|d, _| Do::Call(Hypercall::CapQuery, [derived(d, 7), 0, 0, 0, 0, 0]))); // 21
    hv.arch.set_guest(1, scripted(steps, t.clone()));
    let text = run(&mut hv);
    let calls = witnessed(&t);
    let h = |i: usize| calls[i].x[0];
    let mut expect = vec![
        ok(1, 1),
        no(HvError::NoRights, 1, h(0)),
        no(HvError::NoRights, 1, h(0)),
        no(HvError::InvalidArgument, 1, 1),
        no(HvError::InvalidArgument, 1, 1),
        no(HvError::InvalidArgument, 1, 1),
        no(HvError::InvalidArgument, 1, 1),
        ok(1, 2),
        no(HvError::GrantConsumed, 1, 2),
        ok(1, 1),
    ];
    for i in 10..=16 {
        expect.push(ok(1, h(i - 1)));
    }
    expect.push(no(HvError::DepthExceeded, 1, h(16)));
    expect.push(ok(1, 1));
    expect.push(no(HvError::Revoked, 1, h(0)));
    expect.push(no(HvError::Revoked, 1, h(16)));
    expect.push(ok(1, h(7)));
    check_all(&text, 1, &t, &expect);
    // The revoke removed the READ|GRANT child and the whole chain of 8, not
    // the GRANT_ONCE child (another root's).
    assert_eq!(calls[18].x[0], 1 + 8);
    let info = hv.caps.info(crate::partition::PartitionId(1), 2).unwrap();
    assert!(info.grant_once_consumed && !info.rights.contains(ONCE));
    // The derive's record binds the new handle (its args digest covers it).
    let regs = [1, 1, u64::from(rg), 0, 0, 0];
    assert_eq!(call_records(&text, 1)[0].args, rvm_state::digest::of_call(&regs, &h(0).to_le_bytes()));
}

#[test]
fn a_revoked_handle_turns_stale_once_its_slot_is_reused() {
    let mut hv = boot(&[Part { caps: vec![store(1, &[(R, 1), (G, 1), (REV, 1)])], ..Part::default() }], &[]);
    let t = new_trace();
    let stale = Rc::new(Cell::new(0u64));
    let (s1, s2, s3) = (stale.clone(), stale.clone(), stale.clone());
    let mut steps = vec![
        step(move |_, _| Do::Call(Hypercall::CapDerive, [1, 1, u64::from(R.bits()), 0, 0, 0])),
        step(move |d, _| {
            s1.set(derived(d, 0));
            Do::Call(Hypercall::CapRevoke, [1, 0, 0, 0, 0, 0])
        }),
        step(move |_, _| Do::Call(Hypercall::CapQuery, [s2.get(), 0, 0, 0, 0, 0])),
    ];
    // Fill the table: 256 slots, two taken by the store capabilities.
    for _ in 0..254 {
        steps.push(derive(1, 1, R, 0));
    }
    steps.push(derive(1, 1, R, 0)); // Full
    steps.push(step(move |_, _| Do::Call(Hypercall::CapQuery, [s3.get(), 0, 0, 0, 0, 0])));
    hv.arch.set_guest(1, scripted(steps, t.clone()));
    let text = run(&mut hv);
    let old = stale.get();
    let mut expect = vec![ok(1, 1), ok(1, 1), no(HvError::Revoked, 1, old)];
    expect.extend((0..254).map(|_| ok(1, 1)));
    expect.push(no(HvError::Full, 1, 1));
    expect.push(no(HvError::StaleHandle, 1, old));
    check_all(&text, 1, &t, &expect);
    // The reused slot carries the next generation.
    let calls = witnessed(&t);
    let reused = calls[3..257].iter().map(|c| CapHandle::from_raw(c.x[0]).unwrap()).find(|h| h.index == 2).unwrap();
    assert_eq!(reused.generation, 1);
}

#[test]
fn p2_refuses_expired_over_quota_replayed_and_out_of_window_uses() {
    let mut finite = store(1, &[(W, 2), (G, 1)]);
    finite.expires_at = 1_000; // 1000 s after boot (the bundle gives no wall clock)
    let mut quota = store(1, &[(W, 2)]);
    quota.quota = 2;
    let mut once = store(1, &[(W, 2)]);
    once.quota = 1;
    let mut window = cap(ObjectKind::Channel, 0, &[(W, 2)]);
    window.window_len = 16;
    let mut hv = boot(
        &[Part { caps: vec![finite, quota, store(1, &[(W, 2)]), window, once], ..Part::default() }, Part::default()],
        &[(0, 1)],
    );
    let t = new_trace();
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                derive(1, 1, W, 1),                                                              // 0: expires at 1 ns
                step(|d, _| Do::Call(Hypercall::StateValidate, [derived(d, 0), 0, 0, 0, 0, 0])), // 1
                derive(1, 1, W, 2_000 * 1_000_000_000), // 2: later than the parent
                call(Hypercall::StateValidate, &[2]),   // 3
                call(Hypercall::StateValidate, &[2]),   // 4
                call(Hypercall::StateValidate, &[2]),   // 5: quota 2
                call(Hypercall::StateValidate, &[3, 0, 0, 0, 0, 5]), // 6: nonce 5
                call(Hypercall::StateValidate, &[3, 0, 0, 0, 0, 5]), // 7: replay
                call(Hypercall::StateValidate, &[3, 0, 0, 0, 0, 4]), // 8: older
                call(Hypercall::StateValidate, &[3, 0, 0, 0, 0, 6]), // 9
                call(Hypercall::ChannelSend, &[4, BUF, 17]), // 10: window 16
                call(Hypercall::ChannelSend, &[4, BUF, 16]), // 11
                call(Hypercall::ChannelSend, &[5, BUF, 1]), // 12: wrong kind
                call(Hypercall::StateValidate, &[5]),   // 13: quota intact
                call(Hypercall::StateValidate, &[5]),   // 14
            ],
            t.clone(),
        ),
    );
    let text = run(&mut hv);
    let child = witnessed(&t)[0].x[0];
    check_all(
        &text,
        1,
        &t,
        &[
            ok(1, 1),
            no(HvError::Expired, 2, child),
            no(HvError::InvalidArgument, 1, 1),
            ok(2, 2),
            ok(2, 2),
            no(HvError::QuotaExceeded, 2, 2),
            ok(2, 3),
            no(HvError::Replay, 2, 3),
            no(HvError::Replay, 2, 3),
            ok(2, 3),
            no(HvError::OutOfWindow, 2, 4),
            ok(2, 4),
            no(HvError::BadHandle, 1, 5),
            ok(2, 5),
            no(HvError::QuotaExceeded, 2, 5),
        ],
    );
}

#[test]
fn p3_needs_a_valid_approval_by_the_bound_key_and_refuses_replays() {
    let mut hv = boot(
        &[Part {
            caps: vec![store(1, &[(R, 1), (W, 1), (G, 1), (REV, 3)]), store(1, &[(W, 1), (G, 3), (REV, 1), (PRV, 3)])],
            authority: Some(AUTHORITY),
        }],
        &[],
    );
    let obj = store_ref(1);
    let revoke1 = sign(&AUTHORITY, Hypercall::CapRevoke, obj, 1, (1, 1), 1, &revoke_args_digest());
    let wrong_key = sign(&STRANGER, Hypercall::CapRevoke, obj, 1, (1, 1), 1, &revoke_args_digest());
    let mut garbage = revoke1.clone();
    garbage[7] ^= 0x40;
    let wpg = W | G | PRV;
    let derive_c1 = sign(&AUTHORITY, Hypercall::CapDerive, obj, 1, (1, 2), 1, &derive_digest(wpg, 1));
    let derive_other = sign(&AUTHORITY, Hypercall::CapDerive, obj, 1, (1, 2), 1, &derive_digest(W, 1));
    let derive_c2 = sign(&AUTHORITY, Hypercall::CapDerive, obj, 1, (1, 2), 2, &derive_digest(W | PRV, 1));
    let prove1 = sign(&AUTHORITY, Hypercall::Prove, obj, 1, (1, 2), 3, &empty_args());
    let prove2 = sign(&AUTHORITY, Hypercall::Prove, obj, 1, (1, 2), 4, &empty_args());
    let t = new_trace();
    let d = |rights: Rights| u64::from(rights.bits());
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                derive(1, 1, R, 0),                                                             // 0
                call(Hypercall::CapRevoke, &[1]),                                               // 1: no proof
                call_with(Hypercall::CapRevoke, &[1, 0, 0, 0, SIG, 1], SIG, garbage),           // 2
                call_with(Hypercall::CapRevoke, &[1, 0, 0, 0, SIG, 1], SIG, wrong_key),         // 3
                call(Hypercall::CapRevoke, &[1, 0, 0, 0, 0x1000, 1]),                           // 4: unmapped
                call_with(Hypercall::CapRevoke, &[1, 0, 0, 0, SIG, 0], SIG, revoke1.clone()),   // 5: no nonce
                call_with(Hypercall::CapRevoke, &[1, 0, 0, 0, SIG, 1], SIG, revoke1.clone()),   // 6: approved
                call_with(Hypercall::CapRevoke, &[1, 0, 0, 0, SIG, 1], SIG, revoke1),           // 7: replayed
                call(Hypercall::CapDerive, &[2, 1, d(wpg), 0, 0, 1]),                           // 8: no proof
                call_with(Hypercall::CapDerive, &[2, 1, d(wpg), 0, SIG, 1], SIG, derive_other), // 9
                call_with(Hypercall::CapDerive, &[2, 1, d(wpg), 0, SIG, 1], SIG, derive_c1),    // 10
                step(move |dd, m| {
                    m.write(SIG, &derive_c2).unwrap();
                    Do::Call(Hypercall::CapDerive, [derived(dd, 10), 1, d(W | PRV), 0, SIG, 2])
                }), // 11
                step(move |dd, m| {
                    m.write(SIG, &prove1).unwrap();
                    Do::Call(Hypercall::Prove, [derived(dd, 11), OUT, 0, 0, SIG, 3])
                }), // 12
                call(Hypercall::CapRevoke, &[2]),                                               // 13: REVOKE at P1
                step(move |dd, m| {
                    m.write(SIG, &prove2).unwrap();
                    Do::Call(Hypercall::Prove, [derived(dd, 11), OUT, 0, 0, SIG, 4])
                }), // 14: its ancestors are gone
            ],
            t.clone(),
        ),
    );
    let text = run(&mut hv);
    let calls = witnessed(&t);
    let (c1, c2) = (calls[10].x[0], calls[11].x[0]);
    check_all(
        &text,
        1,
        &t,
        &[
            ok(1, 1),
            no(HvError::BadProof, 3, 1),
            no(HvError::BadProof, 3, 1),
            no(HvError::BadProof, 3, 1),
            no(HvError::BadAddress, 3, 1),
            no(HvError::BadProof, 3, 1),
            ok(3, 1),
            no(HvError::Replay, 3, 1),
            no(HvError::BadProof, 3, 2),
            no(HvError::BadProof, 3, 2),
            ok(3, 2),
            ok(3, c1),
            ok(3, c2),
            ok(1, 2),
            no(HvError::Revoked, 1, c2),
        ],
    );
    assert_eq!(calls[6].x[0], 1, "the approved revoke removed the one child");
    assert_eq!(calls[13].x[0], 2, "c1 and c2");
    // Each P3 record is followed by a signed checkpoint of the log.
    let recs = log_records(&text, 1);
    let p3 = recs.iter().filter(|r| r.tier == 3).count();
    assert!(recs.iter().filter(|r| r.tier == 3).all(|r| r.flags & flags::CHECKPOINTED != 0));
    assert!(p3 >= 8);
    assert!(text.lines().filter(|l| l.starts_with("@C 1 ")).count() >= p3);
}

#[test]
fn a_p3_use_is_suspended_while_an_ancestor_s_partition_is_fenced() {
    let mut hv =
        boot(&[Part { caps: vec![store(1, &[(W, 3), (G, 1)])], authority: Some(AUTHORITY) }, Part::default()], &[]);
    let given = Rc::new(Cell::new(0u64));
    let (t1, t2) = (new_trace(), new_trace());
    let g = given.clone();
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                derive(1, 2, W, 0),
                step(move |d, _| {
                    g.set(derived(d, 0));
                    Do::Yield
                }),
                step(|_, _| Do::Fault),
            ],
            t1.clone(),
        ),
    );
    let obj = store_ref(1);
    let a1 = sign(&AUTHORITY, Hypercall::StateValidate, obj, 2, (1, 1), 1, &staged(&[]));
    let a2 = sign(&AUTHORITY, Hypercall::StateValidate, obj, 2, (1, 1), 2, &staged(&[]));
    let (g1, g2) = (given.clone(), given.clone());
    hv.arch.set_guest(
        2,
        scripted(
            vec![
                step(move |_, m| {
                    m.write(SIG, &a1).unwrap();
                    Do::Call(Hypercall::StateValidate, [g1.get(), 0, 0, 0, SIG, 1])
                }),
                Box::new(|_, _| Do::Yield),
                step(move |_, m| {
                    m.write(SIG, &a2).unwrap();
                    Do::Call(Hypercall::StateValidate, [g2.get(), 0, 0, 0, SIG, 2])
                }),
            ],
            t2.clone(),
        ),
    );
    let text = run(&mut hv);
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced, "{text}");
    let h = given.get();
    check_all(&text, 2, &t2, &[ok(3, h), no(HvError::Suspended, 3, h)]);
}

#[test]
fn revocation_reaches_other_partitions_by_their_next_call() {
    let mut hv =
        boot(&[Part { caps: vec![store(1, &[(W, 1), (G, 1), (REV, 1)])], ..Part::default() }, Part::default()], &[]);
    let given = Rc::new(Cell::new(0u64));
    let (t1, t2) = (new_trace(), new_trace());
    let g = given.clone();
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                derive(1, 2, W, 0),
                step(move |d, _| {
                    g.set(derived(d, 0));
                    Do::Yield
                }),
                call(Hypercall::CapRevoke, &[1]),
            ],
            t1.clone(),
        ),
    );
    let (g1, g2) = (given.clone(), given.clone());
    hv.arch.set_guest(
        2,
        scripted(
            vec![
                step(move |_, _| Do::Call(Hypercall::StateValidate, [g1.get(), 0, 0, 0, 0, 0])),
                Box::new(|_, _| Do::Yield),
                step(move |_, _| Do::Call(Hypercall::StateValidate, [g2.get(), 0, 0, 0, 0, 0])),
            ],
            t2.clone(),
        ),
    );
    let text = run(&mut hv);
    let h = given.get();
    check_all(&text, 1, &t1, &[ok(1, 1), ok(1, 1)]);
    check_all(&text, 2, &t2, &[ok(1, h), no(HvError::Revoked, 1, h)]);
    // The derive into p2 and the revoke are in p1's log; p2's uses in p2's.
    assert_eq!(witnessed(&t1)[1].x[0], 1);
}

#[test]
fn prove_attests_a_log_head_and_a_store_with_the_hypervisor_key() {
    let mut hv = boot(
        &[Part {
            caps: vec![
                cap(ObjectKind::WitnessLog, 1, &[(PRV, 1)]),
                store(1, &[(R, 1), (W, 1), (PRV, 1)]),
                cap(ObjectKind::Channel, 0, &[(PRV, 1)]),
                store(1, &[(R, 1)]),
            ],
            ..Part::default()
        }],
        &[],
    );
    let t = new_trace();
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                call(Hypercall::Prove, &[1, OUT]),
                call_with(Hypercall::StateStage, &[2, BUF, 3, BUF + 3, 2], BUF, b"keyv1".to_vec()),
                call(Hypercall::StateCommit, &[2]),
                call(Hypercall::Prove, &[2, OUT + 0x100]),
                call(Hypercall::Prove, &[3, OUT]),
                call(Hypercall::Prove, &[4, OUT]),
                call(Hypercall::Prove, &[1, layout::BOOTINFO_IPA]),
            ],
            t.clone(),
        ),
    );
    let text = run(&mut hv);
    check_all(
        &text,
        1,
        &t,
        &[
            ok(1, 1),
            ok(1, 2),
            ok(1, 2),
            ok(1, 2),
            no(HvError::NotSupported, 1, 3),
            no(HvError::NoRights, 1, 4),
            no(HvError::BadAddress, 1, 1),
        ],
    );
    let calls = witnessed(&t);
    // Read back what the two Prove calls wrote, through p1's stage 2.
    let mut out = [0u8; 0x200];
    let s2 = hv.partitions()[0].stage2();
    crate::memory::guest_mem::read(&hv.arch, s2, crate::memory::addr::Ipa::new(OUT), &mut out).unwrap();
    let key = witness_public();
    // The log head attested is the head before the Prove record (seq n).
    let all: Vec<[u8; 64]> = text
        .lines()
        .filter_map(Frame::parse)
        .filter_map(|f| match f {
            Frame::Record { log: 1, bytes } => Some(bytes),
            _ => None,
        })
        .collect();
    let prove_at =
        all.iter().position(|b| WitnessRecord::from_bytes(b).unwrap().op == Hypercall::Prove as u16).unwrap();
    let mut head = rvm_witness::Hash::ZERO;
    for b in &all[..prove_at] {
        head = rvm_witness::chain::chain_step(&head, b);
    }
    let attest = |ret: &Ret, digest: [u8; 32]| Attestation {
        object: ObjectRef::new(ObjectKind::from_u8(ret.x[1] as u8).unwrap(), ret.x[2] as u32),
        partition: PartitionId(1),
        at: Timestamp(ret.x[0]),
        state_digest: digest,
    };
    let sig = |at: usize| {
        let mut s = [0u8; 64];
        s.copy_from_slice(&out[at + 32..at + PROVE_BUFFER_LEN]);
        Signature(s)
    };
    assert_eq!(out[..32], head.0, "the attested head");
    let a = attest(&calls[0], head.0);
    assert_eq!(a.object, ObjectRef::new(ObjectKind::WitnessLog, 1));
    assert!(verify_attestation(&key, &a, &sig(0)));
    let mut forged = a;
    forged.partition = PartitionId(2);
    assert!(!verify_attestation(&key, &forged, &sig(0)));
    // The store: one committed item, "key" = "v1".
    let snapshot = hv.stores[0].snapshot();
    let digest = crate::dispatch::store_digest(&snapshot);
    assert_eq!(snapshot.len(), 1);
    assert_eq!(out[0x100..0x120], digest);
    assert!(verify_attestation(&key, &attest(&calls[3], digest), &sig(0x100)));
}

#[test]
fn p3_channel_sends_bind_the_message_and_staging_cannot_carry_a_proof() {
    let mut hv = boot(
        &[
            Part {
                caps: vec![cap(ObjectKind::Channel, 0, &[(W, 3)]), store(1, &[(W, 3)])],
                authority: Some(AUTHORITY),
            },
            Part::default(),
        ],
        &[(0, 1)],
    );
    let chan = ObjectRef::new(ObjectKind::Channel, 0);
    let hello = sign(&AUTHORITY, Hypercall::ChannelSend, chan, 1, (1, 1), 1, &ArgsDigest::of(&[], b"hello"));
    let hello2 = sign(&AUTHORITY, Hypercall::ChannelSend, chan, 1, (1, 1), 2, &ArgsDigest::of(&[], b"hello"));
    let t = new_trace();
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                step(move |_, m| {
                    m.write(BUF, b"hello").unwrap();
                    m.write(SIG, &hello).unwrap();
                    Do::Call(Hypercall::ChannelSend, [1, BUF, 5, 0, SIG, 1])
                }),
                step(move |_, m| {
                    m.write(BUF, b"hellO").unwrap();
                    m.write(SIG, &hello2).unwrap();
                    Do::Call(Hypercall::ChannelSend, [1, BUF, 5, 0, SIG, 2])
                }),
                call(Hypercall::StateStage, &[2, BUF, 1, BUF, 1]),
            ],
            t.clone(),
        ),
    );
    let text = run(&mut hv);
    check_all(&text, 1, &t, &[ok(3, 1), no(HvError::BadProof, 3, 1), no(HvError::BadProof, 3, 2)]);
}

// ------------------------------------------------ approvals and quotas of a tree

#[test]
fn a_derive_to_self_replays_no_approval_and_splits_no_quota() {
    // Handle 1: WRITE at P3 with GRANT at P1; handle 2: WRITE at P2, one
    // call per epoch.
    let mut quota1 = store(1, &[(W, 2), (G, 1)]);
    quota1.quota = 1;
    let mut hv = boot(&[Part { caps: vec![store(1, &[(W, 3), (G, 1)]), quota1], authority: Some(AUTHORITY) }], &[]);
    let approval = sign(&AUTHORITY, Hypercall::StateValidate, store_ref(1), 1, (1, 1), 1, &staged(&[]));
    let t = new_trace();
    let mut steps = vec![
        call_with(Hypercall::StateValidate, &[1, 0, 0, 0, SIG, 1], SIG, approval.clone()), // 0: approved
        call_with(Hypercall::StateValidate, &[1, 0, 0, 0, SIG, 1], SIG, approval.clone()), // 1: replayed
    ];
    // Three copies of handle 1 in the caller's own table, each presenting
    // the same approval.
    for k in 0..3 {
        let at = 2 + 2 * k;
        steps.push(derive(1, 1, W, 0));
        let a = approval.clone();
        steps.push(step(move |d, m| {
            m.write(SIG, &a).unwrap();
            Do::Call(Hypercall::StateValidate, [derived(d, at), 0, 0, 0, SIG, 1])
        }));
    }
    // Six copies of handle 2, one call each: one call in the epoch in all.
    for k in 0..6 {
        let at = 8 + 2 * k;
        steps.push(derive(2, 1, W, 0));
        steps.push(step(move |d, _| Do::Call(Hypercall::StateValidate, [derived(d, at), 0, 0, 0, 0, 0])));
    }
    hv.arch.set_guest(1, scripted(steps, t.clone()));
    let text = run(&mut hv);
    let calls = witnessed(&t);
    let mut expect = vec![ok(3, 1), no(HvError::Replay, 3, 1)];
    for k in 0..3 {
        let child = calls[2 + 2 * k].x[0];
        expect.push(ok(1, 1));
        expect.push(no(HvError::Replay, 3, child));
    }
    for k in 0..6 {
        let child = calls[8 + 2 * k].x[0];
        expect.push(ok(1, 2));
        expect.push(if k == 0 { ok(2, child) } else { no(HvError::QuotaExceeded, 2, child) });
    }
    check_all(&text, 1, &t, &expect);
}

#[test]
fn a_commit_approval_covers_exactly_the_staged_items() {
    // Handle 1 stages (WRITE at P1); handle 2 commits (WRITE at P3).
    let mut hv = boot(
        &[Part { caps: vec![store(1, &[(W, 1)]), store(1, &[(W, 3)])], authority: Some(AUTHORITY) }],
        &[],
    );
    let obj = store_ref(1);
    let for_good = sign(&AUTHORITY, Hypercall::StateCommit, obj, 1, (1, 2), 1, &staged(&[(b"k", b"good")]));
    let for_evil = sign(&AUTHORITY, Hypercall::StateCommit, obj, 1, (1, 2), 2, &staged(&[(b"k", b"evil")]));
    let good_again = sign(&AUTHORITY, Hypercall::StateCommit, obj, 1, (1, 2), 3, &staged(&[(b"k", b"good")]));
    let t = new_trace();
    hv.arch.set_guest(
        1,
        scripted(
            vec![
                step(|_, m| {
                    m.write(BUF, b"kevil").unwrap();
                    Do::Call(Hypercall::StateStage, [1, BUF, 1, BUF + 1, 4, 0])
                }), // 0: other items than the approved ones
                call_with(Hypercall::StateCommit, &[2, 0, 0, 0, SIG, 1], SIG, for_good.clone()), // 1
                call_with(Hypercall::StateCommit, &[2, 0, 0, 0, SIG, 2], SIG, for_evil),          // 2: its own approval
                step(|_, m| {
                    m.write(BUF, b"kgood").unwrap();
                    Do::Call(Hypercall::StateStage, [1, BUF, 1, BUF + 1, 4, 0])
                }), // 3
                step(|_, m| {
                    m.write(BUF + 0x10, b"x").unwrap();
                    Do::Call(Hypercall::StateStage, [1, BUF + 0x10, 1, BUF + 0x10, 1, 0])
                }), // 4: one item more than approved
                call_with(Hypercall::StateCommit, &[2, 0, 0, 0, SIG, 3], SIG, good_again), // 5
            ],
            t.clone(),
        ),
    );
    let text = run(&mut hv);
    check_all(
        &text,
        1,
        &t,
        &[ok(1, 1), no(HvError::BadProof, 3, 2), ok(3, 2), ok(1, 1), ok(1, 1), no(HvError::BadProof, 3, 2)],
    );
    assert_eq!(hv.store(crate::partition::PartitionId(1)).unwrap().get(b"k"), Some(&b"evil"[..]));
}
