//! Durable committed state: the host keeps every partition's committed set
//! ([`rvm_abi::bundle::BOOT_FLAG_SAVE_STATE`]).
//!
//! Every change of a committed set — a commit, a rollback to a snapshot,
//! the restore of a kept set at boot — is witnessed as `CommittedSet` in
//! the store owner's log, with the new set's digest, and a checkpoint of
//! that log is signed at once: so the record that vouches for a set is
//! always covered by a signature before the host is asked to keep the set.
//! After a commit or a rollback the set goes to the host (`StateBegins`,
//! then a `StateItem` per item: `rvm_abi::control`) and the partition that
//! made the change is parked until the host answers `StateSaved` for that
//! record ([`saved`]): a guest never sees its commit succeed, and a rolled
//! back guest never runs, before the host holds the set, synced, with the
//! log that vouches for it. A host that never answers leaves it parked.
//!
//! At an instance's restart the bundle brings each continuing partition's
//! kept set ([`rvm_abi::bundle::StateRestore`]) with the `CommittedSet`
//! record it was kept for and that record's inclusion proof in the resumed
//! log's tree; [`restore`] takes the set only if the proof leads to the
//! signed root the log resumed from and the record is the partition's
//! `CommittedSet` carrying the set's digest.

use rvm_abi::bundle::{LogResume, StateRestore};
use rvm_abi::control::Outgoing;
use rvm_abi::witness::{KernelEvent, WitnessOp, NO_CAP};
use rvm_abi::{Outcome, WitnessRecord};
use rvm_witness::merkle::{leaf_hash, verify_inclusion};
use rvm_witness::Hash;

use crate::arch::Arch;

pub mod ledger;
pub use crate::load::refusal::RestoreError;
use crate::partition::PartitionId;
use crate::state::Hypervisor;

/// The first 16 bytes of a digest: what a `CommittedSet` record carries.
fn args_of(digest: &[u8; 32]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&digest[..16]);
    a
}

/// Store `s`'s committed set changed (its partition's, at position `s`):
/// witness it and sign its log's head. The record's seq, or `None` when the
/// record could not be written (the run then stops: a change that cannot
/// be witnessed does not go on).
fn witness_set<A: Arch>(hv: &mut Hypervisor<A>, s: usize, digest: &[u8; 32]) -> Option<u64> {
    let owner = hv.partitions[s].id();
    let args = args_of(digest);
    let rec = crate::witness::event_record(owner.0, KernelEvent::CommittedSet, Outcome::Done, args, hv.arch.now_ns());
    match hv.witness.append(&mut hv.arch, owner.0, rec) {
        Ok(seq) => {
            hv.witness.checkpoint(&mut hv.arch, owner.0);
            Some(seq)
        }
        Err(_) => {
            hv.witness_lost();
            None
        }
    }
}

/// Store `s`'s set may have changed, by partition `by` (a commit through a
/// store handle, or its own rollback): if it did, witnessed, sent to the
/// host, and `by` parked until the host has kept it. Nothing when the boot
/// does not keep state, or the set is as it was last witnessed.
pub(crate) fn changed<A: Arch>(hv: &mut Hypervisor<A>, by: usize, s: usize) {
    if !hv.policy.save_state {
        return;
    }
    let digest = hv.stores[s].digest();
    if !hv.kept.note(s, digest) {
        return;
    }
    let Some(seq) = witness_set(hv, s, &digest) else { return };
    let log = hv.partitions[s].id().0;
    let store = &hv.stores[s];
    let items = u32::try_from(store.committed_items()).unwrap_or(u32::MAX);
    hv.arch.send_frame(&Outgoing::StateBegins { log, seq, digest: &digest, items });
    for (key, value) in store.items() {
        hv.arch.send_frame(&Outgoing::StateItem { log, key, value });
    }
    hv.partitions[by].await_saved(log, seq);
}

/// The host says it keeps log `log`'s set as of record `seq`: every
/// partition parked for that record (or an earlier one of that log) runs on.
pub(crate) fn saved<A: Arch>(hv: &mut Hypervisor<A>, log: u32, seq: u64) {
    for idx in 0..hv.partitions.len() {
        if hv.partitions[idx].saving().is_some_and(|(l, s)| l == log && s <= seq) {
            hv.partitions[idx].note_saved();
            if hv.partitions[idx].can_run() {
                hv.smp.note_runnable();
            }
        }
    }
}

/// Check kept set `kept` of partition `id`, whose log resumed from `from`.
pub fn check_restore(id: PartitionId, from: &LogResume<'_>, kept: &StateRestore<'_>) -> Result<(), RestoreError> {
    let rec = WitnessRecord::from_bytes(&kept.record).map_err(|_| RestoreError::NotItsRecord)?;
    let its = rec.op == WitnessOp::Event(KernelEvent::CommittedSet).code()
        && rec.partition == id.0
        && rec.outcome == Outcome::Done.code()
        && rec.seq == kept.seq
        && rec.cap == NO_CAP;
    if !its {
        return Err(RestoreError::NotItsRecord);
    }
    let digest = rvm_state::digest::committed(u64::from(kept.count()), kept.items());
    if rec.args != args_of(&digest) {
        return Err(RestoreError::DigestMismatch);
    }
    let mut path = heapless::Vec::<Hash, { rvm_abi::bundle::MAX_PROOF_HASHES }>::new();
    for h in kept.proof() {
        path.push(Hash(h)).map_err(|_| RestoreError::NotInLog)?;
    }
    verify_inclusion(&leaf_hash(&kept.record), kept.seq, from.size, &path, &Hash(from.root))
        .map_err(|_| RestoreError::NotInLog)
}

/// Partition `idx` (whose log resumed from `from`) starts with kept set
/// `kept`: checked ([`check_restore`]), taken, and witnessed as
/// `CommittedSet` (so the host's copy is vouched for by this boot's log
/// too). Not sent back: the host has it.
pub(crate) fn restore<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    from: &LogResume<'_>,
    kept: &StateRestore<'_>,
) -> Result<(), RestoreError> {
    check_restore(hv.partitions[idx].id(), from, kept)?;
    hv.stores[idx].replace(kept.items());
    let digest = hv.stores[idx].digest();
    hv.kept.note(idx, digest);
    let _ = witness_set(hv, idx, &digest);
    Ok(())
}
