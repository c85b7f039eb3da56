//! Operator orders on the fake machine: signed `@O` lines typed into the
//! console's receive side, verified, applied and witnessed; forged,
//! replayed, unknown and pointless orders refused and witnessed.
//!
//! The helpers here (a guest that plays the runtime, bundles with an
//! operator key, channels and memory tiers) are shared with
//! `tests_dormant`.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use ed25519_dalek::{Signer, SigningKey};
use rvm_abi::bootinfo::{layout, BootInfo, RestoreInfo};
use rvm_abi::bundle::{BootConfig, BundleWriter, ChannelDesc, EntryKind, MemoryTier, PartitionDesc, RecoveryDesc, GLOBAL};
use rvm_abi::frame::{Frame, OrderArgs, OrderFrame, OrderKind};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Hypercall, ObjectKind, Outcome, WitnessRecord};

use crate::memory::addr::{PhysAddr, PhysRange};
use crate::arch::TrapInfo;
use crate::fake::{FakeArch, GuestView};
use crate::memory::frames::FrameAllocator;
use crate::state::Hypervisor;
use crate::partition::{PartitionId, PartitionState};
use crate::running::vcpu::Vcpu;

/// Entry of the test runtime image.
pub(crate) const ENTRY: u64 = 0x4000_0000;
/// Its writable data pages.
pub(crate) const DATA: u64 = 0x4000_1000;
pub(crate) const HEAP: u64 = layout::HEAP_IPA;
/// Seed of the operator key the test bundles bind.
pub(crate) const OPERATOR_SEED: [u8; 32] = [0x0b; 32];

/// One partition of a test bundle.
pub(crate) struct Part {
    pub name: &'static str,
    pub tier: MemoryTier,
    pub recovery: RecoveryDesc,
    pub dormant_after_ms: u32,
}

impl Part {
    pub(crate) fn new(name: &'static str) -> Self {
        Self { name, tier: MemoryTier::Warm, recovery: RecoveryDesc::DEFAULT, dormant_after_ms: 0 }
    }
    pub(crate) fn dormant_after_ms(mut self, ms: u32) -> Self {
        self.dormant_after_ms = ms;
        self
    }
    pub(crate) fn tier(mut self, tier: MemoryTier) -> Self {
        self.tier = tier;
        self
    }
}

/// A boot id no earlier build of this test process used, as the host's
/// bundle builders draw a random one for every build.
pub(crate) fn fresh_boot_id() -> [u8; 32] {
    static BUILDS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
    let n = BUILDS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let mut id = [0x1d; 32];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id
}

/// A booted test hypervisor and the bundle it booted (orders sign its
/// digest); every build carries a fresh boot id, as the host's do.
pub(crate) fn boot(parts: &[Part], channels: &[(u32, u32)], operator_key: bool) -> (Hypervisor<FakeArch>, Vec<u8>) {
    boot_with_id(parts, channels, operator_key, Some(fresh_boot_id()))
}

/// [`boot`] with this boot id, or none.
pub(crate) fn boot_with_id(
    parts: &[Part],
    channels: &[(u32, u32)],
    operator_key: bool,
    boot_id: Option<[u8; 32]>,
) -> (Hypervisor<FakeArch>, Vec<u8>) {
    boot_with_config(parts, channels, operator_key, boot_id, BootConfig::DEFAULT)
}

/// [`boot_with_id`] with this boot configuration.
pub(crate) fn boot_with_config(
    parts: &[Part],
    channels: &[(u32, u32)],
    operator_key: bool,
    boot_id: Option<[u8; 32]>,
    config: BootConfig,
) -> (Hypervisor<FakeArch>, Vec<u8>) {
    let bundle = bundle_with_config(parts, channels, operator_key, boot_id, config);
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    (Hypervisor::boot(FakeArch::new(), frames, &bundle).unwrap(), bundle)
}

/// The bundle [`boot_with_config`] boots.
pub(crate) fn bundle_with_config(
    parts: &[Part],
    channels: &[(u32, u32)],
    operator_key: bool,
    boot_id: Option<[u8; 32]>,
    config: BootConfig,
) -> Vec<u8> {
    bundle_with_extra(parts, channels, operator_key, boot_id, config, &[])
}

/// [`bundle_with_config`] with `extra` entries (kind, owner, data) at its end.
pub(crate) fn bundle_with_extra(
    parts: &[Part],
    channels: &[(u32, u32)],
    operator_key: bool,
    boot_id: Option<[u8; 32]>,
    config: BootConfig,
    extra: &[(EntryKind, u32, Vec<u8>)],
) -> Vec<u8> {
    let mut w = BundleWriter::new();
    if let Some(id) = boot_id {
        w.entry(EntryKind::BootId, GLOBAL, &id);
    }
    w.entry(EntryKind::GuestRuntime, GLOBAL, &crate::load::elf::tests::build(ENTRY, &[(ENTRY, 5, 64, 64), (DATA, 6, 16, 0x2000)]));
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &config.to_bytes());
    if operator_key {
        let public = SigningKey::from_bytes(&OPERATOR_SEED).verifying_key().to_bytes();
        w.entry(EntryKind::OperatorKey, GLOBAL, &public);
    }
    for p in parts {
        let i = w.partition(&PartitionDesc { memory_tier: p.tier, recovery: p.recovery, dormant_after_ms: p.dormant_after_ms, ..crate::tests::desc(p.name) });
        // Two pages of module, so its window spans more than one frame.
        let mut module = alloc::vec![0u8; 5000];
        module[..8].copy_from_slice(b"\0asm\x01\0\0\0");
        module[4999] = i as u8;
        w.entry(EntryKind::Wasm, i, &module);
    }
    for &(a, b) in channels {
        w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a, b, capacity: 4 }.to_bytes());
    }
    for (kind, owner, data) in extra {
        w.entry(*kind, *owner, data);
    }
    w.finish()
}

/// A signed `@O` line for the test bundle `bundle`.
pub(crate) fn order_line(bundle: &[u8], seed: &[u8; 32], kind: OrderKind, nonce: u64, name: &str) -> String {
    let partition = PartitionDesc::name_field(name).unwrap();
    let message = OrderFrame::message(kind, nonce, &partition, &rvm_state::digest::full(bundle));
    let signature = SigningKey::from_bytes(seed).sign(&message).to_bytes();
    let line = OrderFrame { kind, nonce, partition, signature }.encode();
    String::from(core::str::from_utf8(line.as_bytes()).unwrap())
}

/// One exit of a guest, as a test script sees it.
pub(crate) struct Step<'a, 'b> {
    pub v: &'a mut Vcpu,
    pub m: &'a mut GuestView<'b>,
    /// Which start of the guest this is (0 = the first).
    pub start: u32,
    /// Which exit of this start (0 = the first).
    pub step: u32,
    pub info: BootInfo,
    pub restore: RestoreInfo,
}

impl Step<'_, '_> {
    pub(crate) fn call(&mut self, c: Hypercall, args: &[u64]) -> TrapInfo {
        self.v.regs.x[0] = u64::from(c.function_id());
        for (i, a) in args.iter().enumerate() {
            self.v.regs.x[1 + i] = *a;
        }
        FakeArch::hvc()
    }

    pub(crate) fn status(&self) -> i64 {
        self.v.regs.x[0] as i64
    }

    pub(crate) fn result(&self, n: usize) -> u64 {
        self.v.regs.x[1 + n]
    }

    pub(crate) fn handle(&self, kind: ObjectKind) -> u64 {
        let mut page = [0u8; 4096];
        self.m.read(layout::BOOTINFO_IPA, &mut page).unwrap();
        (0..self.info.handle_count as usize)
            .filter_map(|n| BootInfo::read_handle(&page, n))
            .find(|h| h.kind == kind as u8)
            .map(|h| h.raw)
            .unwrap()
    }

    pub(crate) fn exit(&mut self, code: u64) -> TrapInfo {
        self.call(Hypercall::Exit, &[code])
    }
}

pub(crate) type Script = dyn FnMut(&mut Step<'_, '_>) -> TrapInfo;

/// A guest that knows when the kernel (re)started it; it touches two heap
/// pages at every start before its first step.
pub(crate) fn runtime(mut f: Box<Script>) -> crate::fake::GuestFn {
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
        for page in 0..2 {
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

pub(crate) fn shared<T: Default>() -> (Rc<RefCell<T>>, Rc<RefCell<T>>) {
    let a: Rc<RefCell<T>> = Rc::default();
    (a.clone(), a)
}

pub(crate) fn records(hv: &Hypervisor<FakeArch>, log: u32) -> Vec<WitnessRecord> {
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

/// The kernel events of `log` named in `of`, in order, with their records.
pub(crate) fn events(hv: &Hypervisor<FakeArch>, log: u32, of: &[KernelEvent]) -> Vec<(KernelEvent, WitnessRecord)> {
    records(hv, log)
        .into_iter()
        .filter_map(|r| KernelEvent::from_code(r.op).filter(|e| of.contains(e)).map(|e| (e, r)))
        .collect()
}

/// Every log on the console is consecutive and linked.
pub(crate) fn assert_chains_verify(hv: &Hypervisor<FakeArch>) {
    let mut logs: alloc::collections::BTreeMap<u32, Vec<[u8; 64]>> = Default::default();
    for f in hv.arch.console_text().lines().filter_map(Frame::parse) {
        if let Frame::Record { log, bytes } = f {
            logs.entry(log).or_default().push(bytes);
        }
    }
    assert!(!logs.is_empty());
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

/// An IPA no partition ever has mapped.
const UNMAPPED: u64 = 0x1000;

/// A guest that snapshots `marker` from its heap, then writes outside
/// its memory (F3 with the default policy); restarted from a snapshot,
/// it reports what the restore window holds and finishes.
fn faulting_victim(log: Rc<RefCell<Vec<String>>>) -> crate::fake::GuestFn {
    runtime(Box::new(move |g| match (g.start, g.step) {
        (0, 0) => {
            g.m.write(HEAP, b"marker-1").unwrap();
            g.call(Hypercall::Snapshot, &[HEAP, 8, 0, 0])
        }
        (0, 1) => {
            log.borrow_mut().push(alloc::format!("snapshot {} id {}", g.status(), g.result(0)));
            match g.m.write(UNMAPPED, b"x") {
                Err(f) => f.0,
                Ok(()) => panic!("the write outside the partition succeeded"),
            }
        }
        (1, 0) => {
            let mut image = [0u8; 8];
            g.m.read(g.restore.image_ipa, &mut image).unwrap();
            log.borrow_mut().push(alloc::format!(
                "resumed from {} image {}",
                g.restore.snapshot_id,
                core::str::from_utf8(&image).unwrap_or("?")
            ));
            g.exit(0)
        }
        (s, n) => panic!("unexpected start {s} step {n}"),
    }))
}

/// A partner that commits one item and finishes.
fn bystander() -> crate::fake::GuestFn {
    runtime(Box::new(|g| match g.step {
        0 => {
            g.m.write(HEAP, b"k").unwrap();
            g.m.write(HEAP + 0x100, b"v").unwrap();
            let h = g.handle(ObjectKind::StateStore);
            g.call(Hypercall::StateStage, &[h, HEAP, 1, HEAP + 0x100, 1])
        }
        1 => {
            let h = g.handle(ObjectKind::StateStore);
            g.call(Hypercall::StateCommit, &[h])
        }
        _ => g.exit(0),
    }))
}

#[test]
fn an_operator_unfences_a_fenced_partition_and_it_resumes_from_its_snapshot() {
    let (mut hv, bundle) = boot(&[Part::new("victim"), Part::new("bystander")], &[], true);
    let (log, seen) = shared::<Vec<String>>();
    hv.arch.set_guest(1, faulting_victim(log));
    hv.arch.set_guest(2, bystander());
    hv.run();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced);
    assert_eq!(hv.partitions()[1].state(), PartitionState::Finished, "the other partition is unaffected");

    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Unfence, 17, "victim").as_bytes());
    hv.housekeeping();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: order 17 unfence 'victim' done: resumed from snapshot 1"), "{text}");
    assert_eq!(hv.partitions()[0].state(), PartitionState::Running);
    let summary = hv.run();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Finished);
    assert_eq!(summary.fenced, 0);
    assert_eq!(
        *seen.borrow(),
        ["snapshot 0 id 1", "resumed from 1 image marker-1"],
        "resumed from the snapshot taken before the fault"
    );
    // The order, then the step it ordered, in the victim's log.
    let ev = events(&hv, 1, &[KernelEvent::OperatorOrder, KernelEvent::Unfence, KernelEvent::RecoverFence]);
    let kinds: Vec<KernelEvent> = ev.iter().map(|(e, _)| *e).collect();
    assert_eq!(kinds, [KernelEvent::RecoverFence, KernelEvent::OperatorOrder, KernelEvent::Unfence]);
    assert_eq!(OrderArgs::from_bytes(&ev[1].1.args), OrderArgs { order: OrderKind::Unfence as u8, nonce: 17 });
    assert_chains_verify(&hv);
}

#[test]
fn forged_replayed_unknown_and_pointless_orders_are_refused_and_witnessed() {
    let (mut hv, bundle) = boot(&[Part::new("victim"), Part::new("bystander")], &[], true);
    let (log, _seen) = shared::<Vec<String>>();
    hv.arch.set_guest(1, faulting_victim(log));
    hv.arch.set_guest(2, bystander());
    hv.run();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced);

    let forged = order_line(&bundle, &[0x99; 32], OrderKind::Unfence, 5, "victim");
    let other_bundle = order_line(b"another deployment", &OPERATOR_SEED, OrderKind::Unfence, 6, "victim");
    let good = order_line(&bundle, &OPERATOR_SEED, OrderKind::Unfence, 7, "victim");
    let pointless = order_line(&bundle, &OPERATOR_SEED, OrderKind::Unfence, 8, "bystander");
    let unknown = order_line(&bundle, &OPERATOR_SEED, OrderKind::Evict, 9, "nobody");
    let mut input = String::new();
    for line in [&forged, &other_bundle, "hello there\n", "@O 12 unfence victim 00\n", &good, &good, &pointless, &unknown] {
        input.push_str(line);
    }
    hv.arch.type_input(input.as_bytes());
    // One poll takes a bounded amount of input; the rest waits for the next.
    hv.housekeeping();
    assert!(!hv.arch.input.is_empty(), "a flood of input is not swallowed by one poll");
    while !hv.arch.input.is_empty() {
        hv.housekeeping();
    }
    let text = hv.arch.console_text();
    for expect in [
        "rvm: order 5 unfence 'victim' refused: signature does not verify with the operator key",
        "rvm: order 6 unfence 'victim' refused: signature does not verify with the operator key",
        "rvm: console input ignored: not an order",
        "rvm: order 12 ? '?' refused: malformed order line",
        "rvm: order 7 unfence 'victim' done: resumed from snapshot 1",
        "rvm: order 7 unfence 'victim' refused: nonce replayed (must exceed 7)",
        "rvm: order 8 unfence 'bystander' refused: partition is not fenced (it is finished)",
        "rvm: order 9 evict 'nobody' refused: no partition has that name",
    ] {
        assert!(text.contains(expect), "missing `{expect}` in:\n{text}");
    }
    // Exactly one order carried out.
    assert_eq!(hv.partitions()[0].state(), PartitionState::Running);
    let refused = |log| -> Vec<(HvError, u64)> {
        events(&hv, log, &[KernelEvent::OrderRefused])
            .into_iter()
            .map(|(_, r)| match r.outcome() {
                Some(Outcome::Denied(e)) => (e, OrderArgs::from_bytes(&r.args).nonce),
                other => panic!("a refusal with outcome {other:?}"),
            })
            .collect()
    };
    assert_eq!(refused(1), [(HvError::BadProof, 5), (HvError::BadProof, 6), (HvError::Replay, 7)]);
    assert_eq!(refused(2), [(HvError::InvalidArgument, 8)]);
    assert_eq!(refused(0), [(HvError::InvalidArgument, 12), (HvError::InvalidArgument, 9)]);
    assert_eq!(events(&hv, 1, &[KernelEvent::OperatorOrder]).len(), 1);
    assert_chains_verify(&hv);
}

#[test]
fn without_an_operator_key_every_order_is_refused() {
    let (mut hv, bundle) = boot(&[Part::new("victim")], &[], false);
    hv.arch.set_guest(1, faulting_victim(Rc::default()));
    hv.run();
    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Unfence, 1, "victim").as_bytes());
    hv.housekeeping();
    assert!(hv.arch.console_text().contains("refused: the bundle binds no operator key"));
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced);
}

#[test]
fn an_eviction_order_evicts_scrubs_and_returns_the_memory() {
    let (mut hv, bundle) = boot(&[Part::new("victim"), Part::new("bystander")], &[], true);
    hv.arch.set_guest(1, faulting_victim(Rc::default()));
    hv.arch.set_guest(2, bystander());
    hv.run();
    let fenced_frames = hv.frames_in_use();
    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Evict, 3, "victim").as_bytes());
    hv.housekeeping();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Evicted);
    assert!(hv.frames_in_use() < fenced_frames, "evicted memory returned");
    assert!(hv.arch.console_text().contains("rvm: order 3 evict 'victim' done: evicted (F4)"));
    let ev = events(&hv, 1, &[KernelEvent::OperatorOrder, KernelEvent::RecoverEvict]);
    assert_eq!(ev.iter().map(|(e, _)| *e).collect::<Vec<_>>(), [KernelEvent::OperatorOrder, KernelEvent::RecoverEvict]);
    // Its log takes no more records, and is signed to its end at once.
    let last_checkpoint = hv.arch.console_text().lines().filter_map(Frame::parse).rev().find_map(|f| match f {
        Frame::Checkpoint { log: 1, size, .. } => Some(size),
        _ => None,
    });
    assert_eq!(last_checkpoint, Some(records(&hv, 1).len() as u64));
    // A second eviction has nothing to do.
    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Evict, 4, "victim").as_bytes());
    hv.housekeeping();
    assert!(hv.arch.console_text().contains("rvm: order 4 evict 'victim' refused: partition is already evicted"));
    assert_eq!(hv.partitions()[1].state(), PartitionState::Finished);
    assert_chains_verify(&hv);
}

#[test]
fn an_order_split_across_reads_and_an_overlong_line_are_handled() {
    let (mut hv, bundle) = boot(&[Part::new("victim")], &[], true);
    hv.arch.set_guest(1, faulting_victim(Rc::default()));
    hv.run();
    let junk = "x".repeat(1000) + "\n";
    hv.arch.type_input(junk.as_bytes());
    let line = order_line(&bundle, &OPERATOR_SEED, OrderKind::Unfence, 2, "victim");
    let (a, b) = line.as_bytes().split_at(40);
    hv.arch.type_input(a);
    hv.housekeeping();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced, "half a line is not an order");
    hv.arch.type_input(b);
    hv.housekeeping();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Running);
    assert_eq!(hv.partitions()[0].id(), PartitionId(1));
}

#[test]
fn orders_on_the_control_channel_are_checked_like_console_orders_and_a_broken_frame_ends_its_input() {
    let (mut hv, bundle) = boot(&[Part::new("victim")], &[], true);
    hv.arch.set_guest(1, faulting_victim(Rc::default()));
    hv.run();
    let frame = |kind, nonce| {
        let order = OrderFrame::parse(&order_line(&bundle, &OPERATOR_SEED, kind, nonce, "victim")).unwrap();
        let mut b = Vec::new();
        rvm_abi::control::write_order(&mut |x| b.extend_from_slice(x), &order);
        b
    };
    // Forged: the signature of another nonce.
    let mut forged = frame(OrderKind::Unfence, 2);
    forged[rvm_abi::control::HEADER_LEN..rvm_abi::control::HEADER_LEN + 8].copy_from_slice(&9u64.to_le_bytes());
    hv.arch.send_on_channel(&forged);
    hv.housekeeping();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced, "a forged order does nothing");
    assert!(hv.arch.console_text().contains("rvm: order 9 unfence 'victim' refused: signature does not verify"), "{}", hv.arch.console_text());
    // A good one, split across reads.
    let good = frame(OrderKind::Unfence, 3);
    let (a, b) = good.split_at(50);
    hv.arch.send_on_channel(a);
    hv.housekeeping();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced, "half a frame is not an order");
    hv.arch.send_on_channel(b);
    hv.housekeeping();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Running);
    // A broken frame, then a good eviction: nothing after the break counts.
    hv.arch.send_on_channel(b"XX\x10\x00\x69\x00\x00\x00");
    hv.arch.send_on_channel(&frame(OrderKind::Evict, 4));
    hv.housekeeping();
    assert!(hv.arch.console_text().contains("control channel input ignored from here on: a frame header without"));
    assert_ne!(hv.partitions()[0].state(), PartitionState::Evicted);
    assert_chains_verify(&hv);
}

#[test]
fn an_instance_runs_on_when_its_partitions_are_done_until_a_shutdown_order() {
    use rvm_abi::bundle::BOOT_FLAG_INSTANCE;
    // Budget 50 ms as a backstop: an instance whose partitions finished at
    // once is still running when it is spent.
    let config = BootConfig { run_budget_ms: 50, flags: BOOT_FLAG_INSTANCE, ..BootConfig::DEFAULT };
    let (mut hv, _) = boot_with_config(&[Part::new("quick")], &[], true, Some(fresh_boot_id()), config);
    hv.arch.set_guest(1, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 1, "{text}");
    assert!(hv.arch.clock_ns() >= 50_000_000, "ran on for its budget after its partition finished: {} ns", hv.arch.clock_ns());

    // The same instance stopped by a shutdown order: forged, aimed at a
    // partition, then good.
    let config = BootConfig { flags: BOOT_FLAG_INSTANCE, ..BootConfig::DEFAULT };
    let (mut hv, bundle) = boot_with_config(&[Part::new("quick")], &[], true, Some(fresh_boot_id()), config);
    hv.arch.set_guest(1, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    let mut forged = order_line(&bundle, &[9u8; 32], OrderKind::Shutdown, 5, "hypervisor");
    forged.push_str(&order_line(&bundle, &OPERATOR_SEED, OrderKind::Shutdown, 6, "quick"));
    forged.push_str(&order_line(&bundle, &OPERATOR_SEED, OrderKind::Shutdown, 7, "hypervisor"));
    hv.arch.type_input(forged.as_bytes());
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: order 5 shutdown 'hypervisor' refused: signature does not verify"), "{text}");
    assert!(text.contains("rvm: order 6 shutdown 'quick' refused: it is an order for the hypervisor"), "{text}");
    assert!(text.contains("rvm: order 7 shutdown 'hypervisor' done: stopping the run"), "{text}");
    assert!(summary.finished + summary.stopped == 1, "{text}");
    let ev = events(&hv, 0, &[KernelEvent::OperatorOrder, KernelEvent::OrderRefused, KernelEvent::Shutdown]);
    assert_eq!(
        ev.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
        [KernelEvent::OrderRefused, KernelEvent::OrderRefused, KernelEvent::OperatorOrder, KernelEvent::Shutdown],
        "refusals and the order witnessed in the hypervisor's log, then its shutdown"
    );
    assert_chains_verify(&hv);
}

#[test]
fn an_order_for_an_earlier_boot_of_the_same_deployment_is_refused() {
    let deployment = || [Part::new("victim"), Part::new("bystander")];
    // The first boot: the operator unfences the victim; the order line is
    // captured on its way.
    let (mut first, bundle_a) = boot(&deployment(), &[], true);
    first.arch.set_guest(1, faulting_victim(Rc::default()));
    first.arch.set_guest(2, bystander());
    first.run();
    let captured = order_line(&bundle_a, &OPERATOR_SEED, OrderKind::Unfence, 40, "victim");
    first.arch.type_input(captured.as_bytes());
    first.housekeeping();
    assert_eq!(first.partitions()[0].state(), PartitionState::Running);

    // The same deployment booted again (same partitions, modules, keys):
    // the captured line replayed into it is refused and witnessed, and the
    // victim stays fenced.
    let (mut second, bundle_b) = boot(&deployment(), &[], true);
    assert_eq!(bundle_a.len(), bundle_b.len(), "the same deployment");
    second.arch.set_guest(1, faulting_victim(Rc::default()));
    second.arch.set_guest(2, bystander());
    second.run();
    assert_eq!(second.partitions()[0].state(), PartitionState::Fenced);
    second.arch.type_input(captured.as_bytes());
    second.housekeeping();
    let text = second.arch.console_text();
    assert!(
        text.contains("rvm: order 40 unfence 'victim' refused: signature does not verify with the operator key"),
        "{text}"
    );
    assert_eq!(second.partitions()[0].state(), PartitionState::Fenced);
    let refused: Vec<(Option<Outcome>, u64)> = events(&second, 1, &[KernelEvent::OrderRefused])
        .into_iter()
        .map(|(_, r)| (r.outcome(), OrderArgs::from_bytes(&r.args).nonce))
        .collect();
    assert_eq!(refused, [(Some(Outcome::Denied(HvError::BadProof)), 40)]);
    assert!(events(&second, 1, &[KernelEvent::OperatorOrder]).is_empty());
    // The order signed for this boot is carried out.
    second.arch.type_input(order_line(&bundle_b, &OPERATOR_SEED, OrderKind::Unfence, 41, "victim").as_bytes());
    second.housekeeping();
    assert_eq!(second.partitions()[0].state(), PartitionState::Running);
    assert_chains_verify(&second);
}

#[test]
fn a_bundle_without_a_boot_id_accepts_no_order() {
    let (mut hv, bundle) = boot_with_id(&[Part::new("victim")], &[], true, None);
    hv.arch.set_guest(1, faulting_victim(Rc::default()));
    hv.run();
    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Unfence, 1, "victim").as_bytes());
    hv.housekeeping();
    assert!(hv.arch.console_text().contains("rvm: order 1 unfence 'victim' refused: the bundle carries no boot id"));
    assert_eq!(hv.partitions()[0].state(), PartitionState::Fenced);
    let ev = events(&hv, 1, &[KernelEvent::OrderRefused]);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1.outcome(), Some(Outcome::Denied(HvError::BadProof)));
}

#[test]
fn a_status_order_answers_with_the_hypervisors_state_and_is_witnessed() {
    use rvm_abi::bundle::BOOT_FLAG_INSTANCE;
    let config = BootConfig { run_budget_ms: 5, flags: BOOT_FLAG_INSTANCE, ..BootConfig::DEFAULT };
    let (mut hv, bundle) = boot_with_config(&[Part::new("quick"), Part::new("other")], &[], true, Some(fresh_boot_id()), config);
    hv.arch.set_guest(1, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    hv.arch.set_guest(2, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    let mut input = order_line(&bundle, &OPERATOR_SEED, OrderKind::Status, 8, "quick");
    input.push_str(&order_line(&bundle, &[9u8; 32], OrderKind::Status, 9, "hypervisor"));
    hv.arch.type_input(input.as_bytes());
    hv.run();
    // Asked again once the run is over (the answer follows the state).
    hv.arch.type_input(order_line(&bundle, &OPERATOR_SEED, OrderKind::Status, 10, "hypervisor").as_bytes());
    hv.housekeeping();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: order 8 status 'quick' refused: it is an order for the hypervisor"), "{text}");
    assert!(text.contains("rvm: order 9 status 'hypervisor' refused: signature does not verify"), "{text}");
    let line = text.lines().find(|l| l.starts_with("rvm: order 10 status 'hypervisor' done: ")).unwrap_or_else(|| panic!("{text}"));
    let records = |log| records(&hv, log).len();
    // Each log's size and the first 8 bytes of its head; one agent each; not
    // waiting for the host.
    let head = |log: u32| {
        let h = hv.witness.head(log).unwrap();
        h[..8].iter().map(|b| alloc::format!("{b:02x}")).collect::<alloc::string::String>()
    };
    let want = alloc::format!(
        "partitions=1:quick:finished:{}:{}:1:-,2:other:finished:{}:{}:1:-",
        records(1),
        head(1),
        records(2),
        head(2)
    );
    assert!(line.contains("cpus=1 ") && line.contains("frames_kib=65536") && line.ends_with(&want), "{line}");
    let heap = alloc::format!("heap_reserved_kib={} ", hv.heap.committed() / 1024);
    assert!(line.contains(&heap), "{line}");
    assert_eq!(events(&hv, 0, &[KernelEvent::OperatorOrder]).len(), 1, "the status order is witnessed");
}
