//! One log across boots, on the fake machine: an instance that restarts
//! continues its logs from their last signed checkpoints (the bundle's
//! `LogResume` entries), keeps its tenants' ids (`PartitionIds`, a gap
//! for one that left), and refuses a log whose checkpoint or frontier was
//! changed without writing to it.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use rvm_abi::bundle::{BootConfig, EntryKind, LogResume, BOOT_FLAG_INSTANCE, GLOBAL};
use rvm_abi::frame::Frame;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{Hypercall, WitnessRecord};
use rvm_witness::{CompactRange, Hash};

use crate::fake::FakeArch;
use crate::memory::addr::{PhysAddr, PhysRange};
use crate::memory::frames::FrameAllocator;
use crate::partition::PartitionState;
use crate::state::Hypervisor;
use crate::tests::orders::{bundle_with_extra, fresh_boot_id, Part};

/// What a boot sent the host: every log's records and its last checkpoint.
#[derive(Default)]
pub(crate) struct Sent {
    pub(crate) records: BTreeMap<u32, Vec<[u8; 64]>>,
    pub(crate) checkpoints: BTreeMap<u32, Frame>,
}

pub(crate) fn sent(hv: &Hypervisor<FakeArch>) -> Sent {
    let mut s = Sent::default();
    for f in hv.arch.console_text().lines().filter_map(Frame::parse) {
        match f {
            Frame::Record { log, bytes } => s.records.entry(log).or_default().push(bytes),
            Frame::Checkpoint { log, .. } => {
                s.checkpoints.insert(log, f);
            }
            Frame::Key { .. } => {}
        }
    }
    s
}

/// The `LogResume` continuing `log` from what `s` holds.
pub(crate) fn resume_from(s: &Sent, log: u32) -> Vec<u8> {
    let Some(Frame::Checkpoint { size, head, root, signature, .. }) = s.checkpoints.get(&log).copied() else {
        panic!("log {log} has no checkpoint");
    };
    let mut range = CompactRange::new();
    for r in &s.records[&log][..size as usize] {
        range.push(r);
    }
    let frontier: Vec<[u8; 32]> = range.frontier().iter().map(|h| h.0).collect();
    LogResume::encode(size, &head, &root, &signature, &frontier)
}

fn ids(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.to_le_bytes()).collect()
}

fn config() -> BootConfig {
    BootConfig { run_budget_ms: 5, flags: BOOT_FLAG_INSTANCE, ..BootConfig::DEFAULT }
}

/// Boot `parts` with `extra` entries, every guest exiting at once; run it
/// to its budget.
fn boot_and_run(parts: &[Part], extra: &[(EntryKind, u32, Vec<u8>)]) -> Result<Hypervisor<FakeArch>, crate::load::BootError> {
    let bundle = bundle_with_extra(parts, &[], true, Some(fresh_boot_id()), config(), extra);
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    let mut hv = Hypervisor::boot(FakeArch::new(), frames, &bundle)?;
    for vmid in 1..=8 {
        hv.arch.set_guest(vmid, Box::new(|v, _| crate::tests::call(v, Hypercall::Exit, &[0])));
    }
    hv.run();
    Ok(hv)
}

/// `records` are one chain from seq 0.
fn assert_one_chain(log: u32, records: &[[u8; 64]]) -> Hash {
    let mut head = Hash::ZERO;
    for (i, bytes) in records.iter().enumerate() {
        let r = WitnessRecord::from_bytes(bytes).unwrap();
        assert_eq!(r.seq, i as u64, "log {log}: record {i}'s seq");
        assert_eq!(r.prev, head.prefix16(), "log {log}: record {i} links its predecessor");
        head = rvm_witness::chain::chain_step(&head, bytes);
    }
    head
}

#[test]
fn a_restarted_instance_continues_every_log_and_keeps_its_tenants_ids() {
    let first = boot_and_run(&[Part::new("a"), Part::new("b"), Part::new("c")], &[]).unwrap();
    let one = sent(&first);
    // The restart: `b` left, `a` and `c` keep ids 1 and 3.
    let extra = [
        (EntryKind::PartitionIds, GLOBAL, ids(&[1, 3])),
        (EntryKind::LogResume, GLOBAL, resume_from(&one, 0)),
        (EntryKind::LogResume, 0, resume_from(&one, 1)),
        (EntryKind::LogResume, 1, resume_from(&one, 3)),
    ];
    let second = boot_and_run(&[Part::new("a"), Part::new("c")], &extra).unwrap();
    let two = sent(&second);
    let text = second.arch.console_text();
    assert!(text.contains("partition 3 'c' loaded"), "{text}");
    assert!(second.partitions()[1].is_vacant() && second.partitions()[2].state() == PartitionState::Finished, "{text}");
    assert!(!two.records.contains_key(&2), "the id that left has no record");
    for log in [0, 1, 3] {
        let mut all = one.records[&log].clone();
        all.extend_from_slice(&two.records[&log]);
        let head = assert_one_chain(log, &all);
        // The last checkpoint covers both boots: its head, and its root
        // over every record.
        let Some(Frame::Checkpoint { size, head: signed_head, root, .. }) = two.checkpoints.get(&log).copied() else {
            panic!("log {log}: no checkpoint in the second boot");
        };
        assert_eq!(size, all.len() as u64);
        assert_eq!(signed_head, head.0);
        let mut range = CompactRange::new();
        for r in &all {
            range.push(r);
        }
        assert_eq!(range.root().0, root, "log {log}: one Merkle tree across both boots");
    }
    // The hypervisor's log says which logs continued, from where.
    let resumed: Vec<(u32, u64)> = two.records[&0]
        .iter()
        .map(|b| WitnessRecord::from_bytes(b).unwrap())
        .filter(|r| r.op == KernelEvent::LogResumed as u16)
        .map(|r| (u32::from_le_bytes(r.args[..4].try_into().unwrap()), u64::from_le_bytes(r.args[8..].try_into().unwrap())))
        .collect();
    let size = |log: u32| one.records[&log].len() as u64;
    assert_eq!(resumed, [(0, size(0)), (1, size(1)), (3, size(3))]);
    // The second boot's first record of each log follows the first boot's last.
    let created = WitnessRecord::from_bytes(&two.records[&3][0]).unwrap();
    assert_eq!(created.op, KernelEvent::PartitionCreate as u16);
    assert_eq!(created.seq, one.records[&3].len() as u64);
}

#[test]
fn a_log_whose_checkpoint_or_frontier_was_changed_does_not_continue_and_gets_no_record() {
    let first = boot_and_run(&[Part::new("a"), Part::new("b")], &[]).unwrap();
    let one = sent(&first);
    // `b`'s checkpoint claims another head (a rewritten history).
    let mut forged = resume_from(&one, 2);
    forged[8] ^= 1;
    let extra = [
        (EntryKind::LogResume, GLOBAL, resume_from(&one, 0)),
        (EntryKind::LogResume, 0, resume_from(&one, 1)),
        (EntryKind::LogResume, 1, forged),
    ];
    let second = boot_and_run(&[Part::new("a"), Part::new("b")], &extra).unwrap();
    let text = second.arch.console_text();
    assert!(text.contains("partition 2 'b' refused: its witness log does not continue"), "{text}");
    let two = sent(&second);
    assert!(!two.records.contains_key(&2), "nothing is written to a log that does not continue");
    assert_eq!(second.partitions()[0].state(), PartitionState::Finished, "the other tenant runs: {text}");
    let refused: Vec<WitnessRecord> = two.records[&0]
        .iter()
        .map(|b| WitnessRecord::from_bytes(b).unwrap())
        .filter(|r| r.op == KernelEvent::PartitionRefused as u16)
        .collect();
    assert_eq!(refused.len(), 1, "the refusal is in the hypervisor's log");
    assert_eq!(refused[0].args[..4], 2u32.to_le_bytes());
    // A frontier that does not fold to the root.
    let mut bent = resume_from(&one, 1);
    let last = bent.len() - 1;
    bent[last] ^= 1;
    let third = boot_and_run(&[Part::new("a")], &[(EntryKind::LogResume, 0, bent)]).unwrap();
    assert!(third.arch.console_text().contains("Merkle frontier does not fold"), "{}", third.arch.console_text());
    // The hypervisor's own log, changed: the boot stops.
    let mut forged = resume_from(&one, 0);
    forged[40] ^= 1;
    assert!(matches!(
        boot_and_run(&[Part::new("a")], &[(EntryKind::LogResume, GLOBAL, forged)]),
        Err(crate::load::BootError::LogResume(_))
    ));
}

#[test]
fn partition_ids_must_increase_within_the_vmids_and_a_log_resumes_once() {
    let bad = [
        ids(&[2, 2]),
        ids(&[3, 1]),
        ids(&[0, 1]),
        ids(&[1, 256]),
        ids(&[1]),
    ];
    for b in bad {
        let r = boot_and_run(&[Part::new("a"), Part::new("b")], &[(EntryKind::PartitionIds, GLOBAL, b.clone())]);
        assert!(
            matches!(r, Err(crate::load::BootError::Bundle(rvm_abi::bundle::BundleError::PartitionIds))),
            "ids {b:?} accepted"
        );
    }
    let one = sent(&boot_and_run(&[Part::new("a")], &[]).unwrap());
    let twice = [(EntryKind::LogResume, 0, resume_from(&one, 1)), (EntryKind::LogResume, 0, resume_from(&one, 1))];
    assert!(matches!(
        boot_and_run(&[Part::new("a")], &twice),
        Err(crate::load::BootError::Bundle(rvm_abi::bundle::BundleError::PartitionIds))
    ));
}
