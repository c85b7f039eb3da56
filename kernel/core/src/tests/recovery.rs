//! Whole-kernel tests of recovery (F1–F4) and snapshots on the fake
//! machine.
//!
//! Guests play a guest runtime: the kernel starts them at the image's entry
//! (pc = [`ENTRY`]) on every start — the first and each restart — and
//! [`runtime`] tells the test closure which start this is (counting from
//! 0) and which step of it (each exit is a step), with the boot-info page's
//! contents as the kernel wrote them for that start.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use rvm_abi::bootinfo::{exit, layout, BootInfo, RestoreInfo};
use rvm_abi::bundle::{BootConfig, BundleWriter, EntryKind, PartitionDesc, RecoveryDesc, GLOBAL};
use rvm_abi::frame::Frame;
use rvm_abi::recovery::{class, trigger, RecoveryArgs, StateEncoder};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Hypercall, ObjectKind, WitnessRecord};
use sha2::{Digest, Sha256};

use crate::memory::addr::{PhysAddr, PhysRange};
use crate::arch::TrapInfo;
use crate::fake::{esr, FakeArch, GuestView};
use crate::memory::frames::FrameAllocator;
use crate::state::Hypervisor;
use crate::partition::{PartitionId, PartitionState};
use rvm_state::store::{StateStore, StoreLimits};
use crate::running::vcpu::Vcpu;

/// Entry of the test runtime image.
const ENTRY: u64 = 0x4000_0000;
/// Its writable data page (16 file bytes, then zeros).
const DATA: u64 = 0x4000_1000;
const HEAP: u64 = layout::HEAP_IPA;

/// A runtime image: one RX text page, two RW data pages.
fn runtime_image() -> Vec<u8> {
    crate::load::elf::tests::build(ENTRY, &[(ENTRY, 5, 64, 64), (DATA, 6, 16, 0x2000)])
}

fn desc(name: &str, recovery: RecoveryDesc) -> PartitionDesc {
    PartitionDesc { recovery, ..crate::tests::desc(name) }
}

fn boot_with(parts: &[(&str, RecoveryDesc)], budget_ms: u32) -> Hypervisor<FakeArch> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime_image());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: budget_ms, ..BootConfig::DEFAULT }.to_bytes());
    for (n, r) in parts {
        let i = w.partition(&desc(n, *r));
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
    }
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &w.finish()).unwrap()
}

/// One exit of a guest, as the test closure sees it.
struct Step<'a, 'b> {
    v: &'a mut Vcpu,
    m: &'a mut GuestView<'b>,
    /// Which start of the guest this is (0 = the first).
    start: u32,
    /// Which exit of this start (0 = the first).
    step: u32,
    info: BootInfo,
    restore: RestoreInfo,
}

impl Step<'_, '_> {
    fn call(&mut self, c: Hypercall, args: &[u64]) -> TrapInfo {
        self.v.regs.x[0] = u64::from(c.function_id());
        for (i, a) in args.iter().enumerate() {
            self.v.regs.x[1 + i] = *a;
        }
        FakeArch::hvc()
    }

    fn status(&self) -> i64 {
        self.v.regs.x[0] as i64
    }

    fn store(&self) -> u64 {
        self.handle(ObjectKind::StateStore)
    }

    fn handle(&self, kind: ObjectKind) -> u64 {
        let mut page = [0u8; 4096];
        self.m.read(layout::BOOTINFO_IPA, &mut page).unwrap();
        (0..self.info.handle_count as usize)
            .filter_map(|n| BootInfo::read_handle(&page, n))
            .find(|h| h.kind == kind as u8)
            .map(|h| h.raw)
            .unwrap()
    }

    /// Stage `key` = `value` (written to the heap first).
    fn stage(&mut self, key: &[u8], value: &[u8]) -> Result<TrapInfo, TrapInfo> {
        self.m.write(HEAP, key).map_err(|f| f.0)?;
        self.m.write(HEAP + 0x100, value).map_err(|f| f.0)?;
        let h = self.store();
        Ok(self.call(Hypercall::StateStage, &[h, HEAP, key.len() as u64, HEAP + 0x100, value.len() as u64]))
    }

    fn exit(&mut self, code: u64) -> TrapInfo {
        self.call(Hypercall::Exit, &[code])
    }
}

type Script = dyn FnMut(&mut Step<'_, '_>) -> TrapInfo;

/// Heap pages a guest touches at each start before its first step (each
/// first touch is a stage-2 fault the kernel answers with a fresh page).
const TOUCHED: u64 = 4;

/// A guest that knows when the kernel (re)started it.
fn runtime(mut f: Box<Script>) -> crate::fake::GuestFn {
    let (mut start, mut step, mut first, mut fresh) = (0u32, 0u32, true, false);
    Box::new(move |v, m| {
        if v.regs.pc == ENTRY {
            assert_eq!(v.regs.x[0], layout::BOOTINFO_IPA, "x0 names the boot-info page");
            if !first {
                start += 1;
            }
            first = false;
            fresh = true;
            v.regs.pc = ENTRY + 4;
        }
        for page in 0..TOUCHED {
            if let Err(fault) = m.read(HEAP + page * 4096, &mut [0u8]) {
                return fault.0;
            }
        }
        if fresh {
            fresh = false;
            step = 0;
        } else {
            step += 1;
        }
        let mut page = [0u8; 4096];
        m.read(layout::BOOTINFO_IPA, &mut page).unwrap();
        let info = BootInfo::read(&page).unwrap();
        let restore = RestoreInfo::read(&page).unwrap();
        f(&mut Step { v, m, start, step, info, restore })
    })
}

/// A partner that only ever uses its time slice (lets the clock run).
fn spinner() -> crate::fake::GuestFn {
    Box::new(|_, _| FakeArch::timer())
}

fn records(hv: &Hypervisor<FakeArch>, log: u32) -> Vec<WitnessRecord> {
    hv.arch
        .console_text()
        .lines()
        .filter_map(Frame::parse)
        .filter_map(|f| match f {
            Frame::Record { log: l, bytes } if l == log => Some(WitnessRecord::from_bytes(&bytes).unwrap()),
            _ => None,
        })
        .collect()
}

/// The recovery steps in a log: (event, args).
fn steps(hv: &Hypervisor<FakeArch>, log: u32) -> Vec<(KernelEvent, RecoveryArgs)> {
    records(hv, log)
        .into_iter()
        .filter_map(|r| {
            let e = KernelEvent::from_code(r.op)?;
            matches!(
                e,
                KernelEvent::RecoverRestart
                    | KernelEvent::RecoverRollback
                    | KernelEvent::RecoverFence
                    | KernelEvent::RecoverEvict
                    | KernelEvent::Unfence
            )
            .then(|| (e, RecoveryArgs::from_bytes(&r.args)))
        })
        .collect()
}

/// The chain of every log on the console is consecutive and linked.
fn assert_chains_verify(hv: &Hypervisor<FakeArch>) {
    let text = hv.arch.console_text();
    let mut logs: alloc::collections::BTreeMap<u32, Vec<[u8; 64]>> = Default::default();
    for f in text.lines().filter_map(Frame::parse) {
        if let Frame::Record { log, bytes } = f {
            logs.entry(log).or_default().push(bytes);
        }
    }
    for (log, recs) in logs {
        let mut head = rvm_witness::Hash::ZERO;
        for (i, bytes) in recs.iter().enumerate() {
            let r = WitnessRecord::from_bytes(bytes).unwrap();
            assert_eq!(r.seq, i as u64, "log {log}: seq");
            assert_eq!(r.prev, head.prefix16(), "log {log}: record {i} links its predecessor");
            head = rvm_witness::chain::chain_step(&head, bytes);
        }
    }
}

fn shared<T: Default>() -> (Rc<RefCell<T>>, Rc<RefCell<T>>) {
    let a: Rc<RefCell<T>> = Rc::default();
    (a.clone(), a)
}

#[test]
fn a_trap_restarts_the_guest_from_the_pristine_image_with_committed_state_kept() {
    let mut hv = boot_with(&[("agent", RecoveryDesc::DEFAULT)], 0);
    let boot_frames = hv.frames_in_use();
    let (seen, log) = shared::<Vec<String>>();
    hv.arch.set_guest(1, runtime(Box::new(move |g| {
        match (g.start, g.step) {
            // First start: dirty the data page and the heap, commit, trap.
            (0, 0) => {
                let mut pristine = [0u8; 16];
                g.m.read(DATA, &mut pristine).unwrap();
                log.borrow_mut().push(alloc::format!("pristine {pristine:?}"));
                g.m.write(DATA, &[0xee; 64]).unwrap();
                g.stage(b"kept", b"1").unwrap()
            }
            (0, 1) => {
                let h = g.store();
                g.call(Hypercall::StateCommit, &[h])
            }
            (0, 2) => g.stage(b"lost", b"staged only").unwrap(),
            (0, 3) => g.exit(exit::TRAP),
            // Second start: pristine data, an empty heap, the commit kept.
            (1, 0) => {
                let mut data = [0u8; 16];
                g.m.read(DATA, &mut data).unwrap();
                let mut heap = [0xffu8; 4];
                g.m.read(HEAP, &mut heap).unwrap();
                log.borrow_mut().push(alloc::format!("pristine {data:?}"));
                log.borrow_mut().push(alloc::format!("heap {heap:?}"));
                log.borrow_mut().push(alloc::format!("restarts {} restore {}", g.info.restarts, g.restore.is_restore()));
                g.m.write(HEAP, b"kept").unwrap();
                let h = g.store();
                g.call(Hypercall::StateGet, &[h, HEAP, 4, HEAP + 0x100, 16])
            }
            (1, 1) => {
                log.borrow_mut().push(alloc::format!("get {}", g.status()));
                g.m.write(HEAP, b"lost").unwrap();
                let h = g.store();
                g.call(Hypercall::StateGet, &[h, HEAP, 4, HEAP + 0x100, 16])
            }
            (1, 2) => {
                log.borrow_mut().push(alloc::format!("get lost {}", g.status()));
                g.exit(0)
            }
            other => panic!("ran at {other:?}"),
        }
    })));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 1, "{text}");
    let seen = seen.borrow();
    assert_eq!(seen[0], seen[1], "the data page is the pristine one again");
    assert_eq!(seen[2], "heap [0, 0, 0, 0]", "the heap the first start wrote was scrubbed");
    assert_eq!(seen[3], "restarts 1 restore false");
    assert_eq!(seen[4], "get 0", "the committed item survived");
    assert_eq!(seen[5], alloc::format!("get lost {}", HvError::InvalidArgument.code()), "the open transaction did not");
    assert_eq!(
        steps(&hv, 1),
        [(KernelEvent::RecoverRestart, RecoveryArgs { class: class::RESTART, trigger: trigger::TRAP, committed_items: 1, snapshot_id: 0 })]
    );
    assert!(text.contains("'agent' agent trapped (exit code 0x103); restarted from the pristine image (F1) in "), "{text}");
    assert!(text.contains(" ns, 1 committed items before, 1 after"), "{text}");
    assert_eq!(hv.partitions()[0].restarts(), 1);
    // The first start's heap pages were scrubbed and returned; the second
    // touched as many again (plus the table that maps them, once).
    let p = &hv.partitions()[0];
    assert_eq!(p.heap_pages().len() as u64, TOUCHED);
    assert_eq!(hv.frames_in_use(), boot_frames + TOUCHED + 1);
    assert_chains_verify(&hv);
}

/// The bytes the test guests hand over as their snapshot image.
fn image_bytes(tag: u8) -> Vec<u8> {
    (0..5000u32).map(|i| (i as u8).wrapping_mul(tag)).collect()
}

#[test]
fn the_third_trap_in_the_window_rolls_back_to_the_last_snapshot() {
    let mut hv = boot_with(&[("agent", RecoveryDesc::DEFAULT)], 0);
    let (seen, log) = shared::<Vec<String>>();
    let image = image_bytes(3);
    let header_len = 100u64;
    hv.arch.set_guest(1, runtime(Box::new(move |g| {
        match (g.start, g.step) {
            (0, 0) => g.stage(b"before", b"1").unwrap(),
            (0, 1) => {
                let h = g.store();
                g.call(Hypercall::StateCommit, &[h])
            }
            // The image in two parts, as the runtime passes it.
            (0, 2) => {
                g.m.write(HEAP + 0x1000, &image).unwrap();
                let rest = image.len() as u64 - header_len;
                g.call(Hypercall::Snapshot, &[HEAP + 0x1000, header_len, HEAP + 0x1000 + header_len, rest])
            }
            (0, 3) => {
                log.borrow_mut().push(alloc::format!("ck {} {} {:x} {:x}", g.status(), g.v.regs.x[1], g.v.regs.x[2], g.v.regs.x[3]));
                g.stage(b"after", b"2").unwrap()
            }
            (0, 4) => {
                let h = g.store();
                g.call(Hypercall::StateCommit, &[h])
            }
            (0, 5) | (1, 0) | (2, 0) => g.exit(exit::TRAP),
            (3, 0) => {
                log.borrow_mut().push(alloc::format!(
                    "start 3: restarts {} rollbacks {} id {} len {} at {:#x}",
                    g.info.restarts, g.restore.rollbacks, g.restore.snapshot_id, g.restore.image_len, g.restore.image_ipa
                ));
                let mut back = vec![0u8; g.restore.image_len as usize];
                g.m.read(g.restore.image_ipa, &mut back).unwrap();
                log.borrow_mut().push(alloc::format!("image intact {}", back == image));
                // The restore window is read-only to the guest.
                log.borrow_mut().push(alloc::format!("window writable {}", g.m.write(g.restore.image_ipa, b"x").is_ok()));
                g.m.write(HEAP, b"after").unwrap();
                let h = g.store();
                g.call(Hypercall::StateGet, &[h, HEAP, 5, HEAP + 0x100, 16])
            }
            (3, 1) => {
                log.borrow_mut().push(alloc::format!("after {}", g.status()));
                g.m.write(HEAP, b"before").unwrap();
                let h = g.store();
                g.call(Hypercall::StateGet, &[h, HEAP, 6, HEAP + 0x100, 16])
            }
            (3, 2) => {
                log.borrow_mut().push(alloc::format!("before {}", g.status()));
                g.exit(0)
            }
            other => panic!("ran at {other:?}"),
        }
    })));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 1, "{text}");
    let seen = seen.borrow();
    // The hash the kernel reports is SHA-256 over the documented encoding.
    let mut h = Sha256::new();
    {
        let image = image_bytes(3);
        let mut e = StateEncoder::new(|b: &[u8]| h.update(b), image.len() as u64);
        e.image(&image);
        e.items(1);
        e.item(b"before", b"1");
    }
    let hash = h.finalize();
    let lo = u64::from_le_bytes(hash[..8].try_into().unwrap());
    let hi = u64::from_le_bytes(hash[8..16].try_into().unwrap());
    assert_eq!(seen[0], alloc::format!("ck 0 1 {lo:x} {hi:x}"));
    let taken = records(&hv, 1).into_iter().find(|r| r.op == KernelEvent::SnapshotTaken as u16).unwrap();
    assert_eq!(taken.args[..], hash[..16], "SnapshotTaken carries the hash prefix");
    assert_eq!(seen[1], alloc::format!("start 3: restarts 3 rollbacks 1 id 1 len 5000 at {:#x}", layout::SNAPSHOT_IPA));
    assert_eq!(seen[2], "image intact true");
    assert_eq!(seen[3], "window writable false");
    assert_eq!(seen[4], alloc::format!("after {}", HvError::InvalidArgument.code()), "the commit after the snapshot is gone");
    assert_eq!(seen[5], "before 0", "the commit before it is there");
    let s = steps(&hv, 1);
    let classes: Vec<u8> = s.iter().map(|(_, a)| a.class).collect();
    assert_eq!(classes, [class::RESTART, class::RESTART, class::ROLLBACK]);
    assert_eq!(s[2].1, RecoveryArgs { class: class::ROLLBACK, trigger: trigger::TRAP, committed_items: 1, snapshot_id: 1 });
    assert!(text.contains("rolled back to snapshot 1 (F2) in "), "{text}");
    assert!(text.contains(" ns, 2 committed items before, 1 after"), "{text}");
    assert_chains_verify(&hv);
}

#[test]
fn repeated_rollbacks_fence_and_an_unresolved_fence_is_evicted() {
    // Every trap is an F2 (limit 1); the second F2 fences; the fence stands 1 ms.
    let r = RecoveryDesc { f1_limit: 1, f2_limit: 2, window_ms: 10_000, fence_timeout_ms: 1, abuse_limit: 0 };
    let mut hv = boot_with(&[("agent", r), ("other", RecoveryDesc::DEFAULT)], 20);
    let held = {
        let p = &hv.partitions()[0];
        p.private_frames().len() as u64 + u64::from(p.stage2().table_frames())
    };
    let boot_frames = hv.frames_in_use();
    let store_handle: Rc<RefCell<u64>> = Rc::default();
    let sh = store_handle.clone();
    hv.arch.set_guest(1, runtime(Box::new(move |g| match (g.start, g.step) {
        (0, 0) => {
            *sh.borrow_mut() = g.store();
            g.stage(b"item", b"1").unwrap()
        }
        (0, 1) => {
            let h = g.store();
            g.call(Hypercall::StateCommit, &[h])
        }
        (0, 2) => {
            g.m.write(HEAP + 0x1000, b"image").unwrap();
            g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 5, 0, 0])
        }
        (_, _) => g.exit(exit::TRAP),
    })));
    hv.arch.set_guest(2, spinner());
    let summary = hv.run();
    let text = hv.arch.console_text();
    let classes: Vec<u8> = steps(&hv, 1).iter().map(|(_, a)| a.class).collect();
    assert_eq!(classes, [class::ROLLBACK, class::FENCE, class::EVICT], "{text}");
    let evict = steps(&hv, 1)[2].1;
    assert_eq!((evict.trigger, evict.committed_items), (trigger::FENCE_TIMEOUT, 1));
    assert_eq!(summary.evicted, 1, "{text}");
    assert!(text.contains("'agent' fence not cleared within 1 ms; evicted (F4)"), "{text}");
    let p = &hv.partitions()[0];
    assert_eq!(p.state(), PartitionState::Evicted);
    assert!(p.private_frames().is_empty() && p.heap_pages().is_empty() && p.snapshot().is_none());
    // Every frame it held came back (its stage-2 root is replaced by an empty one).
    assert_eq!(hv.frames_in_use(), boot_frames - held + 1);
    // Its capabilities are revoked, not merely suspended.
    assert_eq!(hv.caps.query(PartitionId(1), *store_handle.borrow()).map(|_| ()), Err(HvError::Revoked));
    // The committed state stays with the hypervisor.
    assert_eq!(hv.store(PartitionId(1)).unwrap().committed_items(), 1);
    assert_eq!(hv.partitions()[1].state(), PartitionState::Suspended, "the other partition ran to the budget");
    assert_chains_verify(&hv);
}

#[test]
fn hypercall_abuse_fences_and_keeps_memory_and_state() {
    let mut hv = boot_with(&[("abuser", RecoveryDesc::DEFAULT), ("other", RecoveryDesc::DEFAULT)], 0);
    let limit = u32::from(crate::recovery::policy::AbusePolicy::DEFAULT.limit.unwrap());
    let (seen, log) = shared::<Vec<i64>>();
    hv.arch.set_guest(1, runtime(Box::new(move |g| match g.step {
        0 => g.stage(b"item", b"1").unwrap(),
        1 => {
            let h = g.store();
            g.call(Hypercall::StateCommit, &[h])
        }
        n => {
            if n > 2 {
                log.borrow_mut().push(g.status());
            }
            // Forged handles, and a buffer outside the partition, in turn.
            if n % 2 == 0 {
                g.call(Hypercall::StateGet, &[0x7fff, HEAP, 4, HEAP, 4])
            } else {
                g.call(Hypercall::ConsoleWrite, &[0x1000, 4])
            }
        }
    })));
    let mut n = 0;
    hv.arch.set_guest(2, Box::new(move |v, _| {
        n += 1;
        v.regs.x[0] = u64::from(if n < 50 { Hypercall::Yield } else { Hypercall::Exit }.function_id());
        v.regs.x[1] = 0;
        FakeArch::hvc()
    }));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!((summary.fenced, summary.finished), (1, 1), "{text}");
    let seen = seen.borrow();
    assert_eq!(seen.len() as u32, limit - 1, "the call that made {limit} was the last");
    assert!(seen.iter().all(|s| *s == HvError::BadHandle.code() || *s == HvError::BadAddress.code()));
    assert_eq!(hv.partitions()[0].vcpu().regs.x[0] as i64, HvError::Abuse.code(), "the last call answers Abuse");
    assert!(text.contains(&alloc::format!("'abuser' hypercall abuse: {limit} invalid calls within 1000 ms; fenced (F3)")), "{text}");
    let s = steps(&hv, 1);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1, RecoveryArgs { class: class::FENCE, trigger: trigger::HYPERCALL_ABUSE, committed_items: 1, snapshot_id: 0 });
    assert!(!hv.partitions()[0].heap_pages().is_empty(), "memory kept for forensics");
    assert_chains_verify(&hv);
}

#[test]
fn a_failed_validation_rolls_back_and_a_second_one_fences() {
    let mut hv = boot_with(&[("agent", RecoveryDesc::DEFAULT)], 0);
    hv.stores[0] = StateStore::new(StoreLimits { max_items: 2, ..StoreLimits::DEFAULT });
    hv.arch.set_guest(1, runtime(Box::new(move |g| match (g.start, g.step) {
        (0, 0) => g.stage(b"a", b"1").unwrap(),
        (0, 1) => g.stage(b"b", b"2").unwrap(),
        (0, 2) => {
            let h = g.store();
            g.call(Hypercall::StateCommit, &[h])
        }
        (0, 3) => {
            g.m.write(HEAP + 0x1000, b"image").unwrap();
            g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 5, 0, 0])
        }
        // One item too many: validation fails, twice.
        (_, 0) | (0, 4) => g.stage(b"c", b"3").unwrap(),
        (_, _) => {
            let h = g.store();
            g.call(Hypercall::StateValidate, &[h])
        }
    })));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.fenced, 1, "{text}");
    let s = steps(&hv, 1);
    let got: Vec<(u8, u8, u32)> = s.iter().map(|(_, a)| (a.class, a.trigger, a.committed_items)).collect();
    assert_eq!(got, [(class::ROLLBACK, trigger::FAILED_VALIDATION, 2), (class::FENCE, trigger::FAILED_VALIDATION, 2)]);
    assert!(text.contains("StateValidate: state validation failed; rolled back to snapshot 1 (F2) in "), "{text}");
    assert_eq!(hv.stores[0].committed_items(), 2, "nothing committed was lost");
    assert_chains_verify(&hv);
}

#[test]
fn a_stage2_violation_fences_at_once_with_committed_state_kept() {
    let mut hv = boot_with(&[("evil", RecoveryDesc::DEFAULT)], 0);
    hv.arch.set_guest(1, runtime(Box::new(|g| match g.step {
        0 => g.stage(b"item", b"1").unwrap(),
        1 => {
            let h = g.store();
            g.call(Hypercall::StateCommit, &[h])
        }
        _ => g.m.write(0x4800_0000, b"x").unwrap_err().0,
    })));
    let summary = hv.run();
    assert_eq!(summary.fenced, 1);
    let s = steps(&hv, 1);
    assert_eq!(s, [(KernelEvent::RecoverFence, RecoveryArgs { class: class::FENCE, trigger: trigger::STAGE2_VIOLATION, committed_items: 1, snapshot_id: 0 })]);
    assert!(hv.partitions()[0].recovery().fenced_at.is_some());
}

#[test]
fn the_operator_unfences_to_the_last_snapshot_and_evicts_by_fencing_first() {
    let mut hv = boot_with(&[("agent", RecoveryDesc::DEFAULT)], 0);
    let (seen, log) = shared::<Vec<String>>();
    hv.arch.set_guest(1, runtime(Box::new(move |g| match (g.start, g.step) {
        (0, 0) => {
            g.m.write(HEAP + 0x1000, b"state the snapshot kept").unwrap();
            g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 23, 0, 0])
        }
        (0, 1) => FakeArch::trap(esr::SMC0),
        (1, 0) => {
            let mut back = [0u8; 23];
            g.m.read(g.restore.image_ipa, &mut back).unwrap();
            log.borrow_mut().push(String::from_utf8_lossy(&back).into_owned());
            g.call(Hypercall::Yield, &[])
        }
        (1, _) => g.call(Hypercall::Yield, &[]),
        other => panic!("ran at {other:?}"),
    })));
    let summary = hv.run();
    assert_eq!(summary.fenced, 1);
    let id = PartitionId(1);
    assert_eq!(crate::orders::evict(&mut hv, PartitionId(9)), Err(crate::recovery::fault::OrderError::NoSuchPartition));
    assert_eq!(crate::orders::unfence(&mut hv, id), Ok(1), "resumed from snapshot 1");
    assert_eq!(crate::orders::unfence(&mut hv, id), Err(crate::recovery::fault::OrderError::NotFenced));
    assert_eq!(hv.partitions()[0].state(), PartitionState::Running);
    // Run a little: the guest reads its snapshot, its capabilities answer again.
    for _ in 0..3 {
        hv.run_slice(0);
    }
    assert_eq!(seen.borrow().as_slice(), ["state the snapshot kept"]);
    crate::orders::evict(&mut hv, id).unwrap();
    assert_eq!(crate::orders::evict(&mut hv, id), Err(crate::recovery::fault::OrderError::AlreadyEvicted));
    let events: Vec<KernelEvent> = steps(&hv, 1).iter().map(|(e, _)| *e).collect();
    assert_eq!(
        events,
        [KernelEvent::RecoverFence, KernelEvent::Unfence, KernelEvent::RecoverFence, KernelEvent::RecoverEvict],
        "an operator's eviction of a running partition fences it first"
    );
    assert_eq!(steps(&hv, 1)[1].1.snapshot_id, 1);
    assert_chains_verify(&hv);
}

#[test]
fn snapshots_are_bounded_checked_and_replace_the_last_one() {
    let mut hv = boot_with(&[("agent", RecoveryDesc::DEFAULT)], 0);
    let limit = hv.partitions()[0].snapshot_limit().max_bytes;
    let tables_at_boot = hv.partitions()[0].stage2().table_frames();
    let (seen, log) = shared::<Vec<(i64, u64)>>();
    hv.arch.set_guest(1, runtime(Box::new(move |g| {
        if g.step > 0 {
            log.borrow_mut().push((g.status(), g.v.regs.x[1]));
        }
        match g.step {
            0 => {
                g.m.write(HEAP + 0x1000, &[1; 64]).unwrap();
                g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 64, 0, 0])
            }
            1 => g.call(Hypercall::Snapshot, &[0x1000, 64, 0, 0]),
            2 => g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 64, HEAP + 0x1000, limit]),
            3 => g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 0, 0, 0]),
            4 => g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 64, 0, 0]),
            5 => g.call(Hypercall::Snapshot, &[HEAP + 0x1000, 64, 0, 0]),
            _ => g.exit(0),
        }
    })));
    let before = hv.frames_in_use();
    hv.run();
    let seen = seen.borrow();
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        [0, HvError::BadAddress.code(), HvError::InvalidArgument.code(), HvError::InvalidArgument.code(), 0, 0]
    );
    assert_eq!(seen.iter().filter(|s| s.0 == 0).map(|s| s.1).collect::<Vec<_>>(), [1, 2, 3], "ids count up");
    // What the partition holds now accounts for every frame taken: the
    // snapshots it replaced were returned.
    let p = &hv.partitions()[0];
    let held = p.heap_pages().len() as u64 + p.snapshot().unwrap().pages() + u64::from(p.stage2().table_frames() - tables_at_boot);
    assert_eq!(p.snapshot().unwrap().pages(), 1);
    assert_eq!(hv.frames_in_use(), before + held);
    assert_eq!(p.snapshot().map(|c| c.id), Some(3));
    let denied = records(&hv, 1).iter().filter(|r| r.op == Hypercall::Snapshot as u16 && r.outcome < 0).count();
    assert_eq!(denied, 3, "denials are witnessed");
}

// No tenant can stall or crash the machine: its host tests, beside these
// (they use this file's guest scripting).

#[path = "stall.rs"]
mod stall;
