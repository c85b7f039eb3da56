//! Admissions on the fake machine: tenants sent to a running instance on
//! the control channel, signed by the operator, created while the others
//! run; forged, replayed, over-reaching and oversized ones refused,
//! witnessed, and leaving nothing behind.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::Cell;

use ed25519_dalek::{Signer, SigningKey};
use rvm_abi::bundle::{BootConfig, BundleWriter, EntryKind, PartitionDesc, BOOT_FLAG_INSTANCE, GLOBAL};
use rvm_abi::frame::{OrderArgs, ADMISSION_ORDER_CODE};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Hypercall, Outcome};

use crate::fake::FakeArch;
use crate::memory::addr::{PhysAddr, PhysRange};
use crate::memory::frames::FrameAllocator;
use crate::partition::PartitionState;
use crate::state::Hypervisor;
use crate::tests::orders::{assert_chains_verify, bundle_with_config, events, fresh_boot_id, Part, OPERATOR_SEED};

/// An instance's boot configuration: it runs until its budget (the test's
/// backstop) or a shutdown order.
fn instance_config() -> BootConfig {
    BootConfig { run_budget_ms: 20, flags: BOOT_FLAG_INSTANCE, ..BootConfig::DEFAULT }
}

/// A module of `len` bytes (its first byte tells tenants apart).
fn module(len: usize, tag: u8) -> Vec<u8> {
    let mut m = alloc::vec![tag; len];
    m[..8].copy_from_slice(b"\0asm\x01\0\0\0");
    m
}

/// An admission bundle of `tenants` (name, module length, memory pages).
fn admission(tenants: &[(&str, usize, u32)]) -> Vec<u8> {
    let mut w = BundleWriter::new();
    for (n, &(name, len, pages)) in tenants.iter().enumerate() {
        let i = w.partition(&PartitionDesc { wasm_pages: pages, ..crate::tests::desc(name) });
        w.entry(EntryKind::Wasm, i, &module(len, n as u8));
    }
    w.finish()
}

/// The control-channel frame admitting `adm` into the instance that booted
/// `boot_bundle`, signed with `seed`.
fn frame(boot_bundle: &[u8], seed: &[u8; 32], nonce: u64, adm: &[u8]) -> Vec<u8> {
    let message = rvm_abi::control::admission_message(nonce, &rvm_state::digest::full(adm), &rvm_state::digest::full(boot_bundle));
    let signature = SigningKey::from_bytes(seed).sign(&message).to_bytes();
    let mut out = Vec::new();
    rvm_abi::control::write_admission(&mut |b| out.extend_from_slice(b), nonce, &signature, adm);
    out
}

/// A partition that yields for ever, counting its turns.
fn resident(turns: Rc<Cell<u32>>) -> crate::fake::GuestFn {
    Box::new(move |v, _| {
        turns.set(turns.get() + 1);
        crate::tests::call(v, Hypercall::Yield, &[])
    })
}

fn boot_instance(parts: &[Part], heap_bytes: usize) -> (Hypervisor<FakeArch>, Vec<u8>) {
    let bundle = bundle_with_config(parts, &[], true, Some(fresh_boot_id()), instance_config());
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    let memory = crate::memory::Memory { frames, heap_bytes };
    (Hypervisor::boot(FakeArch::new(), memory, &bundle).unwrap(), bundle)
}

#[test]
fn a_signed_admission_creates_a_tenant_that_runs_while_the_resident_runs_on() {
    let (mut hv, boot_bundle) = boot_instance(&[Part::new("resident")], crate::memory::quota::EL2_HEAP_BYTES);
    let turns = Rc::new(Cell::new(0));
    hv.arch.set_guest(1, resident(turns.clone()));
    // The tenant notes how far the resident was when it first ran.
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let t = turns.clone();
    hv.arch.set_guest(2, Box::new(move |v, _| {
        s.set(s.get().or(Some(t.get())));
        crate::tests::call(v, Hypercall::Exit, &[0])
    }));
    // 200 KB: it arrives over several housekeeping turns.
    let adm = admission(&[("tenant", 200_000, 1)]);
    hv.arch.send_on_channel(&frame(&boot_bundle, &OPERATOR_SEED, 10, &adm));
    hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: admission 10 done: admitted tenant as partition 2"), "{text}");
    assert_eq!(hv.partitions()[1].state(), PartitionState::Finished, "{text}");
    let first = seen.get().expect("the tenant ran");
    assert!(first > 0, "the resident ran before the admission was whole");
    assert!(turns.get() > first, "the resident runs on after the tenant came");
    // Everything taken was credited to the host, a piece at a time.
    let sent = frame(&boot_bundle, &OPERATOR_SEED, 10, &adm).len() as u64;
    assert_eq!(hv.arch.credits.last(), Some(&sent));
    assert!(hv.arch.credits.len() > 1 && hv.arch.credits.windows(2).all(|w| w[0] < w[1]), "{:?}", hv.arch.credits);
    // Witnessed: the order in the hypervisor's log, the admission's digest
    // in the tenant's creation record.
    let order = events(&hv, 0, &[KernelEvent::OperatorOrder]);
    assert_eq!(order.len(), 1);
    assert_eq!(OrderArgs::from_bytes(&order[0].1.args), OrderArgs { order: ADMISSION_ORDER_CODE, nonce: 10 });
    let created = events(&hv, 2, &[KernelEvent::PartitionCreate]);
    assert_eq!(created[0].1.args[..], rvm_state::digest::full(&adm)[..16]);
    // The host learns the log's name before its first record.
    let name_at = text.find("@N 2 tenant\n").expect("the log's name went to the host");
    let first_record = text.find("@W 2 ").expect("the tenant's records went to the host");
    assert!(name_at < first_record, "the name comes first");
    assert_chains_verify(&hv);
}

#[test]
fn forged_replayed_and_over_reaching_admissions_are_refused_witnessed_and_leave_nothing() {
    let (mut hv, boot_bundle) = boot_instance(&[Part::new("resident")], crate::memory::quota::EL2_HEAP_BYTES);
    hv.arch.set_guest(1, resident(Rc::default()));
    let good = admission(&[("tenant", 5000, 1)]);
    // A boot's global in an admission: it would replace the witness key.
    let mut w = BundleWriter::new();
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[1u8; 32]);
    let i = w.partition(&crate::tests::desc("sneaky"));
    w.entry(EntryKind::Wasm, i, &module(5000, 1));
    let with_seed = w.finish();
    // Two tenants, the second too large for the frames left: neither stays.
    let too_big = admission(&[("first", 5000, 1), ("second", 5000, 256 * 4)]);
    let mut input = Vec::new();
    input.extend(frame(&boot_bundle, &[9u8; 32], 5, &good)); // another key
    input.extend(frame(b"an earlier boot", &OPERATOR_SEED, 6, &good)); // another boot
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 7, &with_seed));
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 8, &admission(&[("resident", 5000, 1)])));
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 9, &admission(&[])));
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 12, &admission(&[("hypervisor", 5000, 1)])));
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 20, &too_big));
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 21, &good));
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 21, &admission(&[("again", 5000, 1)]))); // replayed nonce
    hv.arch.send_on_channel(&input);
    hv.arch.set_guest(4, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    hv.run();
    let text = hv.arch.console_text();
    for want in [
        "rvm: admission 5 refused: signature does not verify",
        "rvm: admission 6 refused: signature does not verify",
        "rvm: admission 7 refused: it carries a WitnessKeySeed entry",
        "rvm: admission 8 refused: a partition named 'resident' is already in this instance",
        "rvm: admission 9 refused: it holds no partition",
        "rvm: admission 12 refused: a partition named 'hypervisor' is already in this instance",
        "rvm: admission 20 refused: partition 'second': its memory budget does not fit",
        "rvm: admission 21 done: admitted tenant as partition 4",
        "rvm: admission 21 refused: nonce replayed",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // The two partitions of the refused admission were created, refused
    // whole, and never ran; the good one after them finished.
    let states: Vec<_> = hv.partitions().iter().map(|p| p.state()).collect();
    assert_eq!(states[1..], [PartitionState::Evicted, PartitionState::Evicted, PartitionState::Finished], "{text}");
    assert!(text.contains("partition 2 'first' refused: another partition of its admission was refused"), "{text}");
    for log in [2, 3] {
        assert_eq!(hv.caps.space().live_count(rvm_cap::PartitionId(log)), Some(0), "log {log}: a refused tenant keeps no capability");
        assert!(events(&hv, log, &[KernelEvent::PartitionStart]).is_empty(), "log {log}: a refused tenant never starts");
        assert_eq!(events(&hv, log, &[KernelEvent::PartitionRefused]).len(), 1);
    }
    // Every refusal is in the hypervisor's log with its reason.
    let refused: Vec<HvError> = events(&hv, 0, &[KernelEvent::OrderRefused])
        .iter()
        .map(|(_, r)| match r.outcome().unwrap() {
            Outcome::Denied(e) => e,
            other => panic!("a refusal recorded as {other:?}"),
        })
        .collect();
    assert_eq!(
        refused,
        [
            HvError::BadProof,
            HvError::BadProof,
            HvError::InvalidArgument,
            HvError::InvalidArgument,
            HvError::InvalidArgument,
            HvError::InvalidArgument,
            HvError::NoMemory,
            HvError::Replay
        ]
    );
    assert_chains_verify(&hv);
}

#[test]
fn an_admission_larger_than_the_heap_left_is_read_to_its_end_and_refused_and_the_next_one_is_taken() {
    // A heap with room for the resident's share and 64 KiB more.
    let heap = crate::memory::quota::HYPERVISOR_HEAP_BYTES
        + crate::memory::quota::partition_bytes(&rvm_state::store::StoreLimits::DEFAULT)
        + (64 << 10);
    let (mut hv, boot_bundle) = boot_instance(&[Part::new("resident")], heap);
    hv.arch.set_guest(1, resident(Rc::default()));
    hv.arch.set_guest(2, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    let mut input = frame(&boot_bundle, &OPERATOR_SEED, 3, &admission(&[("large", 200_000, 1)]));
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 4, &admission(&[("small", 5000, 1)])));
    hv.arch.send_on_channel(&input);
    hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: admission 3 refused: its 195 KiB do not fit in the hypervisor heap"), "{text}");
    // The stream stayed in step: the next admission is read and checked
    // (its tenant needs a heap share too, which this heap does not have).
    assert!(text.contains("rvm: admission 4 refused: partition 'small': its share of the hypervisor heap"), "{text}");
    assert_eq!(hv.heap.committed(), crate::memory::quota::partition_bytes(&rvm_state::store::StoreLimits::DEFAULT), "nothing of the admissions stays reserved");
    assert_chains_verify(&hv);
}

#[test]
fn an_instance_may_boot_empty_and_take_its_first_tenant_later() {
    let bundle = bundle_with_config(&[], &[], true, Some(fresh_boot_id()), instance_config());
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    let mut hv = Hypervisor::boot(FakeArch::new(), frames, &bundle).unwrap();
    hv.arch.set_guest(1, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    hv.arch.send_on_channel(&frame(&bundle, &OPERATOR_SEED, 1, &admission(&[("first", 5000, 1)])));
    hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: admission 1 done: admitted first as partition 1"), "{text}");
    assert_eq!(hv.partitions()[0].state(), PartitionState::Finished, "{text}");
    // A one-shot boot without partitions is still an error.
    let one_shot = bundle_with_config(&[], &[], true, Some(fresh_boot_id()), BootConfig::DEFAULT);
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    assert!(matches!(Hypervisor::boot(FakeArch::new(), frames, &one_shot), Err(crate::load::BootError::Empty)));
}

#[test]
fn a_one_shot_boot_takes_no_tenant_after_boot() {
    let config = BootConfig { run_budget_ms: 5, ..BootConfig::DEFAULT };
    let (mut hv, bundle) = crate::tests::orders::boot_with_config(&[Part::new("resident")], &[], true, Some(fresh_boot_id()), config);
    hv.arch.set_guest(1, resident(Rc::default()));
    hv.arch.send_on_channel(&frame(&bundle, &OPERATOR_SEED, 1, &admission(&[("late", 5000, 1)])));
    hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: admission 1 refused: this boot is not an instance"), "{text}");
    assert_eq!(hv.partitions().len(), 1, "nothing was created");
}

#[test]
fn an_id_an_earlier_boot_gave_is_never_given_to_another_tenant() {
    // The instance had ids 1..=3; only 1 stays, and admissions start at 4.
    let extra = [
        (EntryKind::PartitionIds, GLOBAL, 1u32.to_le_bytes().to_vec()),
        (EntryKind::FirstFreeId, GLOBAL, 4u32.to_le_bytes().to_vec()),
    ];
    let bundle = crate::tests::orders::bundle_with_extra(&[Part::new("stays")], &[], true, Some(fresh_boot_id()), instance_config(), &extra);
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    let mut hv = Hypervisor::boot(FakeArch::new(), frames, &bundle).unwrap();
    hv.arch.set_guest(1, resident(Rc::default()));
    hv.arch.set_guest(4, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    hv.arch.send_on_channel(&frame(&bundle, &OPERATOR_SEED, 1, &admission(&[("newcomer", 5000, 1)])));
    hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: admission 1 done: admitted newcomer as partition 4"), "{text}");
    assert!(hv.partitions()[1].is_vacant() && hv.partitions()[2].is_vacant());
    // A first free id at or below a partition's, or beyond the VMIDs, does not read.
    for bad in [1u32, 257] {
        let extra = [(EntryKind::FirstFreeId, GLOBAL, bad.to_le_bytes().to_vec())];
        let b = crate::tests::orders::bundle_with_extra(&[Part::new("a")], &[], true, Some(fresh_boot_id()), instance_config(), &extra);
        let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
        assert!(matches!(
            Hypervisor::boot(FakeArch::new(), frames, &b),
            Err(crate::load::BootError::Bundle(rvm_abi::bundle::BundleError::PartitionIds))
        ));
    }
}

#[test]
fn an_admission_the_host_gave_up_on_is_refused_and_the_channel_goes_on() {
    let (mut hv, boot_bundle) = boot_instance(&[Part::new("resident")], crate::memory::quota::EL2_HEAP_BYTES);
    hv.arch.set_guest(1, resident(Rc::default()));
    hv.arch.set_guest(2, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    let reserved = hv.heap.committed();
    // The admission's header and first chunk, then the host gives up and
    // sends another admission (whole).
    let mut frames = Vec::new();
    let adm = admission(&[("cut", 20_000, 1)]);
    let message = rvm_abi::control::admission_message(3, &rvm_state::digest::full(&adm), &rvm_state::digest::full(&boot_bundle));
    let signature = SigningKey::from_bytes(&OPERATOR_SEED).sign(&message).to_bytes();
    rvm_abi::control::write_admission(&mut |f| frames.push(f.to_vec()), 3, &signature, &adm);
    let mut input: Vec<u8> = frames[..2].concat();
    input.extend(frame(&boot_bundle, &OPERATOR_SEED, 4, &admission(&[("whole", 5000, 1)])));
    hv.arch.send_on_channel(&input);
    hv.run();
    let text = hv.arch.console_text();
    assert!(text.contains("rvm: admission 3 refused: the host sent another frame after 4096 of its"), "{text}");
    assert!(text.contains("rvm: admission 4 done: admitted whole as partition 2"), "{text}");
    assert_eq!(
        hv.heap.committed(),
        reserved + crate::memory::quota::partition_bytes(&rvm_state::store::StoreLimits::DEFAULT),
        "the abandoned admission's room was given back"
    );
    assert_chains_verify(&hv);
}
