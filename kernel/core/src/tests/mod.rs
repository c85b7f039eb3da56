//! Whole-kernel tests on the fake machine: bundles in, guests as closures,
//! witness frames and console lines out.

mod admission;
mod caps;
mod console;
mod domains;
mod dormant;
mod durable;
mod failclosed;
pub(crate) mod orders;
mod recovery;
pub(crate) mod resume;
mod smp;
mod tools;
mod waits;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use rvm_abi::bootinfo::{layout, BootInfo};
use rvm_abi::bundle::{BootConfig, BundleWriter, ChannelDesc, EntryKind, MemoryTier, PartitionDesc, RecoveryDesc, GLOBAL};
use rvm_abi::frame::Frame;
use rvm_abi::{HvError, Hypercall, ObjectKind, WitnessRecord};

use crate::memory::addr::{PhysAddr, PhysRange};
use crate::arch::TrapInfo;
use crate::fake::{esr, FakeArch, GuestView};
use crate::memory::frames::FrameAllocator;
use crate::state::Hypervisor;
use crate::partition::PartitionState;
use crate::running::vcpu::Vcpu;

/// A partition description with the test defaults (Warm, one page).
pub(crate) fn desc(name: &str) -> PartitionDesc {
    PartitionDesc {
        name: PartitionDesc::name_field(name).unwrap(),
        memory_tier: MemoryTier::Warm,
        deadline_urgency: 50,
        cut_pressure: 30,
        default_tier: 2,
        wasm_pages: 1,
        fuel_per_slice: 0,
        recovery: RecoveryDesc::DEFAULT,
        witness_key_fingerprint: None,
        dormant_after_ms: 0,
    }
}

/// A runtime image: one RX text page, one RW data page.
fn runtime() -> Vec<u8> {
    crate::load::elf::tests::build(0x4000_0000, &[(0x4000_0000, 5, 64, 64), (0x4000_1000, 6, 16, 0x2000)])
}

/// Partitions `names` joined by `channels` (pairs of their positions).
fn bundle(names: &[&str], channels: &[(u32, u32)]) -> Vec<u8> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: 50, ..BootConfig::DEFAULT }.to_bytes());
    for n in names {
        let i = w.partition(&desc(n));
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
    }
    for &(a, b) in channels {
        w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a, b, capacity: 4 }.to_bytes());
    }
    w.finish()
}

/// Boot `names`, the first two joined by a channel if `channel`.
pub(crate) fn boot(names: &[&str], channel: bool) -> Hypervisor<FakeArch> {
    boot_with_channels(names, if channel { &[(0, 1)] } else { &[] })
}

/// Boot `names` joined by `channels`.
pub(crate) fn boot_with_channels(names: &[&str], channels: &[(u32, u32)]) -> Hypervisor<FakeArch> {
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &bundle(names, channels)).unwrap()
}

/// Put a hypercall in the registers.
pub(crate) fn call(v: &mut Vcpu, c: Hypercall, args: &[u64]) -> TrapInfo {
    v.regs.x[0] = u64::from(c.function_id());
    for (i, a) in args.iter().enumerate() {
        v.regs.x[1 + i] = *a;
    }
    FakeArch::hvc()
}

fn status(v: &Vcpu) -> i64 {
    v.regs.x[0] as i64
}

/// The raw handles of every boot handle of `kind`, in order.
fn handles_of(view: &GuestView<'_>, kind: ObjectKind) -> Vec<u64> {
    let mut page = [0u8; 4096];
    view.read(layout::BOOTINFO_IPA, &mut page).unwrap();
    let info = BootInfo::read(&page).unwrap();
    (0..info.handle_count as usize)
        .filter_map(|n| BootInfo::read_handle(&page, n))
        .filter(|h| h.kind == kind as u8)
        .map(|h| h.raw)
        .collect()
}

/// The handle of the first boot handle of `kind`.
pub(crate) fn handle(view: &GuestView<'_>, kind: ObjectKind) -> u64 {
    handles_of(view, kind)[0]
}

/// Records streamed for each log, decoded from the console.
fn records(console: &str) -> Vec<(u32, WitnessRecord)> {
    console
        .lines()
        .filter_map(Frame::parse)
        .filter_map(|f| match f {
            Frame::Record { log, bytes } => Some((log, WitnessRecord::from_bytes(&bytes).unwrap())),
            _ => None,
        })
        .collect()
}

pub(crate) const HEAP: u64 = layout::HEAP_IPA;

#[test]
fn two_partitions_exchange_messages_and_every_call_is_witnessed() {
    let mut hv = boot(&["alpha", "beta"], true);
    // alpha: print, send "ping", commit state, exit 0.
    let mut step = 0;
    hv.arch.set_guest(1, Box::new(move |v, m| {
        let t = 'step: {
            match step {
                0 => {
                    if let Err(f) = m.write(HEAP, b"hello from alpha\nping") {
                        break 'step f.0;
                    }
                    step = 1;
                    break 'step call(v, Hypercall::ConsoleWrite, &[HEAP, 17]);
                }
                1 => {
                    assert_eq!(status(v), 0);
                    step = 2;
                    break 'step call(v, Hypercall::ChannelSend, &[handle(m, ObjectKind::Channel), HEAP + 17, 4]);
                }
                2 => {
                    assert_eq!(status(v), 0);
                    m.write(HEAP + 100, b"turns1").unwrap();
                    step = 3;
                    break 'step call(v, Hypercall::StateStage, &[handle(m, ObjectKind::StateStore), HEAP + 100, 5, HEAP + 105, 1]);
                }
                3 => {
                    assert_eq!(status(v), 0);
                    step = 4;
                    break 'step call(v, Hypercall::StateCommit, &[handle(m, ObjectKind::StateStore)]);
                }
                4 => {
                    assert_eq!(status(v), 0);
                    step = 5;
                    break 'step call(v, Hypercall::Exit, &[0]);
                }
                _ => panic!("alpha ran after exit"),
            }
        };
        t
    }));
    // beta: receive until the message arrives, then exit 0.
    let mut got = false;
    hv.arch.set_guest(2, Box::new(move |v, m| {
        if got {
            return call(v, Hypercall::Exit, &[0]);
        }
        if v.regs.x[0] == 0 && v.regs.x[1] == 4 && v.regs.x[9] == 1 {
            let mut buf = [0u8; 4];
            m.read(HEAP, &mut buf).unwrap();
            assert_eq!(&buf, b"ping");
            got = true;
            return call(v, Hypercall::ConsoleWrite, &[HEAP, 4]);
        }
        if let Err(f) = m.write(HEAP, &[0; 8]) {
            return f.0;
        }
        v.regs.x[9] = 1;
        call(v, Hypercall::ChannelRecv, &[handle(m, ObjectKind::Channel), HEAP, 64])
    }));
    let summary = hv.run();
    assert_eq!(summary.finished, 2, "{}", hv.arch.console_text());
    let text = hv.arch.console_text();
    assert!(text.contains("[alpha] hello from alpha\n"), "{text}");
    assert!(text.contains("[beta] ping\n"), "{text}");
    let recs = records(&text);
    // Chain fields are consecutive per log.
    for log in [0u32, 1, 2] {
        let seqs: Vec<u64> = recs.iter().filter(|(l, _)| *l == log).map(|(_, r)| r.seq).collect();
        assert!(!seqs.is_empty(), "log {log} empty");
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    }
    let sends = recs.iter().filter(|(l, r)| *l == 1 && r.op == Hypercall::ChannelSend as u16).count();
    assert_eq!(sends, 1);
    let recv = recs.iter().find(|(l, r)| *l == 2 && r.op == Hypercall::ChannelRecv as u16).unwrap().1;
    assert_eq!(recv.outcome, 0);
    assert_eq!(recv.tier, 1, "channel capabilities are P1");
    assert_eq!(hv.stores[0].committed_items(), 1);
    assert!(text.lines().any(|l| l.starts_with("@C 1 ")), "alpha's log signed at shutdown");
}

#[test]
fn a_stage2_violation_fences_only_the_offender() {
    let mut hv = boot(&["good", "evil"], false);
    let mut done = false;
    hv.arch.set_guest(1, Box::new(move |v, _| {
        if done {
            return call(v, Hypercall::Exit, &[0]);
        }
        done = true;
        call(v, Hypercall::Yield, &[])
    }));
    hv.arch.set_guest(2, Box::new(|_, m| {
        // Hypervisor memory, another partition's frames, nothing at all: all unmapped.
        m.write(0x4800_0000, b"x").unwrap_err().0
    }));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 1, "{text}");
    assert_eq!(summary.fenced, 1, "{text}");
    assert_eq!(hv.partitions()[1].state(), PartitionState::Fenced);
    assert!(text.contains("'evil' fault: stage-2 unmapped fault on write of ipa:0x48000000"), "{text}");
    // The fault and the fence are in evil's own log.
    let recs = records(&text);
    assert!(recs.iter().any(|(l, r)| *l == 2 && r.op == rvm_abi::witness::KernelEvent::RecoverFence as u16));
}

#[test]
fn a_spinning_guest_is_preempted_and_the_other_finishes() {
    let mut hv = boot(&["spinner", "worker"], false);
    hv.arch.set_guest(1, Box::new(|_, _| FakeArch::timer()));
    let mut n = 0;
    hv.arch.set_guest(2, Box::new(move |v, _| {
        n += 1;
        if n < 5 {
            return FakeArch::timer();
        }
        call(v, Hypercall::Exit, &[0])
    }));
    let summary = hv.run();
    assert_eq!(summary.finished, 1);
    assert_eq!(summary.stopped, 1, "the spinner ran until the budget");
    assert!(hv.partitions()[0].stats().preemptions > 5);
}

#[test]
fn guest_buffers_outside_the_partition_are_refused_and_witnessed() {
    let mut hv = boot(&["probe"], false);
    let mut step = 0u32;
    let results: alloc::rc::Rc<core::cell::RefCell<Vec<i64>>> = Default::default();
    let seen = results.clone();
    hv.arch.set_guest(1, Box::new(move |v, _| {
        if step > 0 {
            seen.borrow_mut().push(status(v));
        }
        step += 1;
        match step {
            1 => call(v, Hypercall::ConsoleWrite, &[0x1000, 4]),            // unmapped
            2 => call(v, Hypercall::ConsoleWrite, &[u64::MAX - 1, 4]),       // wraps
            3 => call(v, Hypercall::ConsoleWrite, &[layout::WASM_IPA, 1 << 30]), // too long
            4 => call(v, Hypercall::ChannelSend, &[0xffff, HEAP, 1]),       // forged handle
            5 => FakeArch::trap(esr::SMC0),
            _ => unreachable!(),
        }
    }));
    hv.run();
    let r = results.borrow().clone();
    assert_eq!(r, [HvError::BadAddress.code(), HvError::BadAddress.code(), HvError::InvalidArgument.code(), HvError::BadHandle.code()]);
    let text: String = hv.arch.console_text();
    assert!(text.contains("SMC from a partition"), "{text}");
    let denied = records(&text).iter().filter(|(l, r)| *l == 1 && r.outcome < 0 && r.op < 0x8000).count();
    assert_eq!(denied, 4);
}

#[test]
fn a_partition_pinning_another_witness_key_is_refused_and_the_rest_run() {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: 50, ..BootConfig::DEFAULT }.to_bytes());
    let key = rvm_witness::CheckpointSigner::from_seed(&[7u8; 32]).public_key().fingerprint().0;
    for (name, fp) in [("pinned-right", key), ("pinned-wrong", [0xee; 32])] {
        let i = w.partition(&PartitionDesc { witness_key_fingerprint: Some(fp), ..desc(name) });
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
    }
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    let mut hv = Hypervisor::boot(FakeArch::new(), frames, &w.finish()).unwrap();
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("'pinned-wrong' refused: its witness_key_fingerprint does not match"), "{text}");
    assert_eq!(summary.finished, 1, "{text}");
    assert_eq!(hv.partitions()[1].state(), PartitionState::Evicted);
}

#[test]
fn cpu_time_follows_the_manifest_priority_and_yields_pass_the_cpu() {
    // Two spinners, one urgent, one not; and a poller that only yields.
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: 2_000, slice_us: 1_000, ..BootConfig::DEFAULT }.to_bytes());
    let urgent = PartitionDesc { deadline_urgency: 100, cut_pressure: 0, ..desc("urgent") };
    let relaxed = PartitionDesc { deadline_urgency: 0, cut_pressure: 0, ..desc("relaxed") };
    for d in [urgent, relaxed, desc("poller")] {
        let i = w.partition(&d);
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
    }
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    let mut hv = Hypervisor::boot(FakeArch::new(), frames, &w.finish()).unwrap();
    hv.arch.tick_ns = 100_000; // every entry costs 100 us of virtual time
    hv.arch.set_guest(1, Box::new(|_, _| FakeArch::timer()));
    hv.arch.set_guest(2, Box::new(|_, _| FakeArch::timer()));
    hv.arch.set_guest(3, Box::new(|v, _| call(v, Hypercall::Yield, &[])));
    hv.run();
    let w_urgent = hv.sched.weight_for(&urgent).get();
    let w_relaxed = hv.sched.weight_for(&relaxed).get();
    assert!(w_urgent > w_relaxed);
    let (a, b) = (hv.sched.ran_ns(0) as f64, hv.sched.ran_ns(1) as f64);
    let want = f64::from(w_urgent) / f64::from(w_relaxed);
    assert!(((a / b) / want - 1.0).abs() < 0.05, "ran {a} vs {b}, ratio {} want {want}", a / b);
    // The poller yields every time it runs, yet does not starve the others
    // nor take more than its share.
    assert!(hv.arch.runs > 100);
    assert!(hv.partitions()[2].stats().preemptions == 0);
}

// ---- issue 12, item 3: the witness key seed leaves the bundle ----

#[test]
fn the_witness_seed_is_scrubbed_from_the_bundle_and_the_signer_still_signs() {
    let mut bytes = bundle(&["alpha"], &[]);
    let before = bytes.clone();
    let seed = [7u8; 32];
    let at = before.windows(32).position(|w| w == seed).expect("the test bundle carries the seed");
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    let mut hv = Hypervisor::boot(FakeArch::new(), frames, &bytes).unwrap();
    assert_eq!(crate::witness::scrub_bundle_secrets(&mut bytes), 32);
    assert!(!bytes.windows(32).any(|w| w == seed), "the seed is still in the bundle");
    assert_eq!(&bytes[at..at + 32], &[0u8; 32]);
    // Nothing else changed.
    assert_eq!(&bytes[..at], &before[..at]);
    assert_eq!(&bytes[at + 32..], &before[at + 32..]);
    // A second scrub finds nothing left to do but zeroes the same range.
    assert_eq!(crate::witness::scrub_bundle_secrets(&mut bytes), 32);
    // The hypervisor signs with the key derived before the scrub.
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    hv.run();
    let want = rvm_witness::CheckpointSigner::from_seed(&seed).public_key().0;
    assert_eq!(hv.witness.public_key(), want);
    let text = hv.arch.console_text();
    assert!(text.lines().any(|l| l.starts_with("@C 1 ")), "{text}");
    // A bundle without a seed, or not a bundle at all: nothing is touched.
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime());
    let i = w.partition(&desc("x"));
    w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
    let mut no_seed = w.finish();
    let copy = no_seed.clone();
    assert_eq!(crate::witness::scrub_bundle_secrets(&mut no_seed), 0);
    assert_eq!(no_seed, copy);
    let mut junk = alloc::vec![7u8; 100];
    assert_eq!(crate::witness::scrub_bundle_secrets(&mut junk), 0);
    assert_eq!(junk, alloc::vec![7u8; 100]);
}

// ---- issue 12, item 4: a finished run's logs end signed ----

#[test]
fn at_shutdown_every_log_ends_with_its_final_record_signed() {
    // One partition exits, one faults (fenced), one spins until the budget.
    let mut hv = boot(&["quits", "faults", "spins"], false);
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    hv.arch.set_guest(2, Box::new(|_, m| m.write(0x4800_0000, b"x").unwrap_err().0));
    hv.arch.set_guest(3, Box::new(|_, _| FakeArch::timer()));
    hv.run();
    let text = hv.arch.console_text();
    let mut records: alloc::collections::BTreeMap<u32, u64> = Default::default();
    let mut signed: alloc::collections::BTreeMap<u32, u64> = Default::default();
    let mut last_frame_of: alloc::collections::BTreeMap<u32, char> = Default::default();
    for f in text.lines().filter_map(Frame::parse) {
        match f {
            Frame::Record { log, .. } => {
                *records.entry(log).or_default() += 1;
                last_frame_of.insert(log, 'W');
            }
            Frame::Checkpoint { log, size, .. } => {
                signed.insert(log, size);
                last_frame_of.insert(log, 'C');
            }
            Frame::Key { .. } => {}
        }
    }
    assert_eq!(records.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3], "{text}");
    for (log, n) in &records {
        assert_eq!(signed.get(log), Some(n), "log {log}: {n} records, last checkpoint covers {:?}", signed.get(log));
        assert_eq!(last_frame_of[log], 'C', "log {log} ends with a record after its last checkpoint");
    }
}
