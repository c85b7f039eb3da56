//! Durable committed state on the fake machine: with
//! `BOOT_FLAG_SAVE_STATE` a commit is witnessed as `CommittedSet`, signed,
//! sent to the host, and its partition parked until the host keeps it; at a
//! restart a kept set is taken only when the resumed log vouches for it.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use rvm_abi::bundle::{BootConfig, EntryKind, StateRestore, BOOT_FLAG_INSTANCE, BOOT_FLAG_SAVE_STATE, GLOBAL};
use rvm_abi::frame::Frame;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{Hypercall, ObjectKind, WitnessRecord};
use rvm_witness::merkle::MerkleTree;

use crate::fake::{state_saved, FakeArch};
use crate::memory::addr::{PhysAddr, PhysRange};
use crate::memory::frames::FrameAllocator;
use crate::partition::PartitionState;
use crate::state::Hypervisor;
use crate::tests::orders::{assert_chains_verify, bundle_with_extra, events, fresh_boot_id, Part};
use crate::tests::resume::{resume_from, sent};
use crate::tests::{call, handle, HEAP};

fn config(save: bool) -> BootConfig {
    let flags = BOOT_FLAG_INSTANCE | if save { BOOT_FLAG_SAVE_STATE } else { 0 };
    BootConfig { run_budget_ms: 5, flags, ..BootConfig::DEFAULT }
}

fn boot(parts: &[Part], save: bool, extra: &[(EntryKind, u32, Vec<u8>)]) -> Hypervisor<FakeArch> {
    let bundle = bundle_with_extra(parts, &[], true, Some(fresh_boot_id()), config(save), extra);
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &bundle).unwrap()
}

/// A guest that commits `key = value`, notes that its commit returned
/// (with the status it got), and exits.
fn committer(key: &'static [u8], value: &'static [u8], returned: Rc<Cell<Option<i64>>>) -> crate::fake::GuestFn {
    let mut step = 0;
    Box::new(move |v, m| {
        let kl = key.len() as u64;
        match step {
            0 => {
                let mut kv = key.to_vec();
                kv.extend_from_slice(value);
                if let Err(f) = m.write(HEAP, &kv) {
                    return f.0;
                }
                step = 1;
                call(v, Hypercall::StateStage, &[handle(m, ObjectKind::StateStore), HEAP, kl, HEAP + kl, value.len() as u64])
            }
            1 => {
                assert_eq!(v.regs.x[0], 0, "staged");
                step = 2;
                call(v, Hypercall::StateCommit, &[handle(m, ObjectKind::StateStore)])
            }
            _ => {
                returned.set(Some(v.regs.x[0] as i64));
                call(v, Hypercall::Exit, &[0])
            }
        }
    })
}

/// A guest that reads `key` from its store into `got` (`None`: absent) and exits.
fn reader(key: &'static [u8], got: Rc<RefCell<Option<Option<Vec<u8>>>>>) -> crate::fake::GuestFn {
    let mut step = 0;
    Box::new(move |v, m| {
        if step == 0 {
            if let Err(f) = m.write(HEAP, key) {
                return f.0;
            }
            step = 1;
            return call(v, Hypercall::StateGet, &[handle(m, ObjectKind::StateStore), HEAP, key.len() as u64, HEAP + 256, 256]);
        }
        let value = (v.regs.x[0] == 0).then(|| {
            let mut buf = alloc::vec![0u8; v.regs.x[1] as usize];
            m.read(HEAP + 256, &mut buf).unwrap();
            buf
        });
        *got.borrow_mut() = Some(value);
        call(v, Hypercall::Exit, &[0])
    })
}

#[test]
fn a_commit_waits_until_the_host_keeps_the_set_its_log_vouches_for() {
    let mut hv = boot(&[Part::new("alpha")], true, &[]);
    let returned = Rc::new(Cell::new(None));
    hv.arch.set_guest(1, committer(b"turns", b"41", returned.clone()));
    // The host first says it kept another log's set, and an earlier record
    // of this one; 2 ms later, the right one.
    const LATER: u64 = 2_000_000;
    hv.arch.host = Some(Box::new(|set| {
        alloc::vec![(0, state_saved(2, set.seq)), (0, state_saved(1, set.seq - 1)), (LATER, state_saved(1, set.seq))]
    }));
    hv.run();
    assert_eq!(returned.get(), Some(0), "{}", hv.arch.console_text());
    assert_eq!(hv.partitions()[0].state(), PartitionState::Finished);
    assert_eq!(hv.arch.sets.len(), 1);
    let set = hv.arch.sets[0].clone();
    assert_eq!((set.log, set.count), (1, 1));
    assert_eq!(set.items, [(b"turns".to_vec(), b"41".to_vec())]);
    assert_eq!(set.digest, hv.store(crate::partition::PartitionId(1)).unwrap().digest());
    // Its log vouches for it: a CommittedSet with its digest, at that seq,
    // under a signed checkpoint that was streamed before the set.
    let vouching = events(&hv, 1, &[KernelEvent::CommittedSet]);
    assert_eq!(vouching.len(), 1);
    assert_eq!((vouching[0].1.seq, vouching[0].1.args), (set.seq, set.digest[..16].try_into().unwrap()));
    let signed = sent(&hv).checkpoints.get(&1).copied();
    assert!(matches!(signed, Some(Frame::Checkpoint { size, .. }) if size > set.seq), "{signed:?}");
    // The guest ran on only once the right answer came: its next record
    // (its exit) is stamped at least that much later than the set's.
    let recs: Vec<WitnessRecord> = crate::tests::orders::records(&hv, 1);
    let at = recs.iter().position(|r| r.seq == set.seq).unwrap();
    let next = &recs[at + 1];
    assert_eq!(next.op, Hypercall::Exit as u16);
    assert!(next.timestamp >= recs[at].timestamp + LATER, "{} < {} + {LATER}", next.timestamp, recs[at].timestamp);
    assert_chains_verify(&hv);
}

#[test]
fn without_durable_state_a_commit_is_neither_sent_nor_held() {
    let mut hv = boot(&[Part::new("alpha")], false, &[]);
    let returned = Rc::new(Cell::new(None));
    hv.arch.set_guest(1, committer(b"turns", b"41", returned.clone()));
    hv.run();
    assert_eq!(returned.get(), Some(0));
    assert!(hv.arch.sets.is_empty());
    assert!(events(&hv, 1, &[KernelEvent::CommittedSet]).is_empty());
}

/// The `StateRestore` of what `set` kept, vouched for by `record` (at
/// `seq`) of `records`, the log as the host holds it, signed at `size`.
fn kept(records: &[[u8; 64]], size: u64, seq: u64, items: &[(&[u8], &[u8])]) -> Vec<u8> {
    let tree = MerkleTree::from_leaves(records[..size as usize].iter().map(|r| &r[..]));
    let proof: Vec<[u8; 32]> = tree.inclusion_proof(seq, size).unwrap().iter().map(|h| h.0).collect();
    StateRestore::encode(seq, &records[seq as usize], &proof, items)
}

#[test]
fn a_restarted_instance_restores_a_kept_set_only_when_its_log_vouches_for_it() {
    // First boot: alpha commits, the host keeps the set.
    let mut first = boot(&[Part::new("alpha")], true, &[]);
    first.arch.keep_sets = true;
    let returned = Rc::new(Cell::new(None));
    first.arch.set_guest(1, committer(b"turns", b"41", returned.clone()));
    first.run();
    assert_eq!(returned.get(), Some(0), "{}", first.arch.console_text());
    let one = sent(&first);
    let set = first.arch.sets[0].clone();
    let Some(Frame::Checkpoint { size, .. }) = one.checkpoints.get(&1).copied() else { panic!("no checkpoint") };
    let restart = |items: &[(&[u8], &[u8])], seq: u64| {
        let extra = [
            (EntryKind::LogResume, GLOBAL, resume_from(&one, 0)),
            (EntryKind::LogResume, 0, resume_from(&one, 1)),
            (EntryKind::StateRestore, 0, kept(&one.records[&1], size, seq, items)),
        ];
        let mut hv = boot(&[Part::new("alpha")], true, &extra);
        hv.arch.keep_sets = true;
        let got = Rc::new(RefCell::new(None));
        hv.arch.set_guest(1, reader(b"turns", got.clone()));
        hv.run();
        let value = got.borrow().clone();
        (hv, value)
    };
    // As kept: the guest reads its committed value, and the log says the
    // set was restored (a CommittedSet with the same digest).
    let (hv, value) = restart(&[(b"turns", b"41")], set.seq);
    assert_eq!(value, Some(Some(b"41".to_vec())), "{}", hv.arch.console_text());
    let restored = events(&hv, 1, &[KernelEvent::CommittedSet]);
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].1.args[..], set.digest[..16]);
    // A changed value: refused, said, witnessed in the hypervisor's log.
    let (hv, value) = restart(&[(b"turns", b"99")], set.seq);
    assert_eq!(value, None, "a refused partition does not run");
    let text = hv.arch.console_text();
    assert!(text.contains("partition 1 'alpha' refused: the committed state kept for it is not the state its witness log vouches for (its items are not the set its record vouches for"), "{text}");
    assert!(hv.partitions()[0].is_vacant());
    assert_eq!(events(&hv, 0, &[KernelEvent::PartitionRefused]).len(), 1);
    // Another record of its log (its creation) named as the one that vouches.
    let (hv, _) = restart(&[(b"turns", b"41")], 0);
    assert!(hv.arch.console_text().contains("(the record it names is not a CommittedSet of this partition)"), "{}", hv.arch.console_text());
    // The right record with a proof for another position: not in the log.
    let mut forged = kept(&one.records[&1], size, set.seq, &[(b"turns", b"41")]);
    forged[..8].copy_from_slice(&(set.seq - 1).to_le_bytes());
    let r = WitnessRecord::from_bytes(&forged[8..72].try_into().unwrap()).unwrap();
    let mut moved = r;
    moved.seq = set.seq - 1;
    forged[8..72].copy_from_slice(&moved.to_bytes());
    let extra = [
        (EntryKind::LogResume, GLOBAL, resume_from(&one, 0)),
        (EntryKind::LogResume, 0, resume_from(&one, 1)),
        (EntryKind::StateRestore, 0, forged),
    ];
    let hv = boot(&[Part::new("alpha")], true, &extra);
    assert!(hv.arch.console_text().contains("(the record it names is not in the log the partition continues)"), "{}", hv.arch.console_text());
}

#[test]
fn a_commit_that_leaves_the_set_as_it_was_is_neither_witnessed_nor_sent_again() {
    let mut hv = boot(&[Part::new("alpha")], true, &[]);
    hv.arch.keep_sets = true;
    // The same item committed twice, then an empty commit.
    let mut step = 0;
    hv.arch.set_guest(1, Box::new(move |v, m| {
        let store = handle(m, ObjectKind::StateStore);
        step += 1;
        match step {
            1 => {
                if let Err(f) = m.write(HEAP, b"k1") {
                    step = 0;
                    return f.0;
                }
                call(v, Hypercall::StateStage, &[store, HEAP, 1, HEAP + 1, 1])
            }
            2 | 4 | 5 => call(v, Hypercall::StateCommit, &[store]),
            3 => call(v, Hypercall::StateStage, &[store, HEAP, 1, HEAP + 1, 1]),
            _ => call(v, Hypercall::Exit, &[0]),
        }
    }));
    hv.run();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Finished, "{}", hv.arch.console_text());
    let commits = crate::tests::orders::records(&hv, 1).iter().filter(|r| r.op == Hypercall::StateCommit as u16 && r.outcome == 0).count();
    assert_eq!(commits, 3);
    assert_eq!(hv.arch.sets.len(), 1, "one change, one set sent");
    assert_eq!(events(&hv, 1, &[KernelEvent::CommittedSet]).len(), 1);
}
