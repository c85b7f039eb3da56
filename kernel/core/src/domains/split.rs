//! A split carried out: the departing agent of a partition running several
//! goes to a new partition created at run time, from its snapshot.
//!
//! 1. **Create.** The next id and VMID, its own stage-2, a capability
//!    table, a fresh state store ([`new_partition`]); `PartitionCreate` in
//!    its log.
//! 2. **Populate.** The shared runtime image, a copy of the mover's module,
//!    its boot-info page with the snapshot mapped for restore
//!    (`RestoreInfo`), an agent table of one when coherence is evaluated.
//!    The capabilities the mover could use (those listed for it or for
//!    every agent) are transplanted at the same slot and generation
//!    ([`rvm_cap::CapabilitySpace::transplant`]: derived from the
//!    originals, so revocation reaches them), each witnessed: the raw
//!    handles the agent cached still work. Then its memory is reserved, as
//!    for any admission. Any refusal undoes the move: the new partition is
//!    refused and its memory returned.
//! 3. **Move.** Past the point of no return: the agent's channel ends are
//!    re-pointed (queued messages stay queued), the agent is relocated in
//!    the registry and the evaluator, the partition is `Loaded` and `Split` is
//!    witnessed in its log, and the scheduler admits it.
//!
//! **Committed state.** A state store belongs to the partition it was
//! created for, and a capability names it. The mover's store handle is
//! transplanted, so it keeps committing to the same store: nothing is
//! copied, forked or lost. The new partition's own store starts empty and
//! no handle names it.

use alloc::vec::Vec;

use rvm_abi::bootinfo::{layout, AgentEntry, AgentTable, HandleInfo, RestoreInfo};
use rvm_abi::bundle::PartitionDesc;
use rvm_abi::witness::KernelEvent;
use rvm_abi::Outcome;
use rvm_coherence::{AgentId, DomainId, SplitDecision};

use crate::arch::Arch;
use crate::channel::{AgentSlot, Endpoint};
use crate::domains::agent_table;
use crate::domains::transfer::{record_move, relocate, transplant_cap};
use crate::domains::moves::{Departure, MoveError};
use crate::memory::addr::{Ipa, PAGE_BYTES};
use crate::memory::stage2::{MemType, S2Perm, Stage2Table};
use crate::partition::{Partition, PartitionId, PartitionState};
use crate::recovery::snapshot::Snapshot;
use crate::state::Hypervisor;

/// Create the new partition for `dep`'s agent from its snapshot `ck`,
/// move the agent, its channel ends and its capabilities there. Returns the
/// new partition's position. On `Err` nothing moved (a partition created
/// on the way is refused and its memory returned).
pub(super) fn split<A: Arch>(hv: &mut Hypervisor<A>, dep: &Departure, decision: &SplitDecision, ck: Snapshot) -> Result<usize, MoveError> {
    let src_idx = dep.partition;
    let src = hv.partitions[src_idx].id();
    let created = agent_table::module_of(hv, src_idx, dep.slot, dep.agent)
        .ok_or(MoveError::Module)
        .and_then(|module| new_partition(hv, dep, &ck, module.len() as u64).map(|idx| (module, idx)));
    let (module, idx) = match created {
        Ok(created) => created,
        Err(e) => {
            ck.release(&mut hv.arch, &mut hv.frames);
            return Err(e);
        }
    };
    let id = hv.partitions[idx].id();
    let desc = *hv.partitions[idx].desc();
    // Its creation, capabilities, load and the `Split` all in its log:
    // room for the creation record now, for each capability as it is
    // transplanted, for the load and the `Split` before the point of no
    // return. Any refusal undoes the move.
    let created = hv.kernel_event(id, KernelEvent::PartitionCreate, Outcome::Done, rvm_state::digest::of_parts(&[&desc.to_bytes()]));
    let populated = if created { populate(hv, idx, src, dep, &module, ck) } else { Err(MoveError::Witness) };
    // A split admits a partition: it reserves its memory like any other.
    let populated = populated.and_then(|restore| {
        crate::load::reserve_memory(hv, idx).map(|()| restore).map_err(MoveError::Reservation)
    });
    let held = match populated {
        Ok(restore) => hv.hold(id, 2).map(|h| (restore, h)).ok_or(MoveError::Witness),
        Err(e) => Err(e),
    };
    let (restore, mut held) = match held {
        Ok(restore) => restore,
        Err(e) => {
            undo(hv, idx, e);
            return Err(e);
        }
    };
    // The point of no return: the agent, its channel ends, the evaluator.
    let repointed = relocate(hv, dep, Endpoint { partition: id, slot: AgentSlot::FIRST }, idx);
    // Again, now that it lists its agent (the count of its table).
    crate::load::write_boot_info(hv, idx, restore);
    let now = hv.arch.now_ns();
    hv.domains.apply_split(decision, DomainId(id.0), now);
    let digest = rvm_state::digest::of_parts(&[&module]);
    hv.transition_held(&mut held, idx, PartitionState::Loaded, KernelEvent::PartitionLoad, digest);
    hv.held_event(&mut held, KernelEvent::Split, Outcome::Done, dep.plan.witness_args());
    hv.release(held);
    hv.sched.admit(idx, &desc);
    let p = &hv.partitions[idx];
    let handles = u32::try_from(p.boot_handles().len()).unwrap_or(u32::MAX);
    let image_bytes = p.snapshot().map_or(0, |c| c.len);
    record_move(hv, dep, id, repointed, handles, image_bytes, now);
    Ok(idx)
}

/// A new partition for `dep`'s agent (its module `module_len` bytes),
/// created like its own (same description under a new name, its
/// snapshot limit and clock), with an empty capability table and state
/// store. Returns its position.
fn new_partition<A: Arch>(hv: &mut Hypervisor<A>, dep: &Departure, ck: &Snapshot, module_len: u64) -> Result<usize, MoveError> {
    let src_idx = dep.partition;
    let idx = hv.partitions.len();
    let vmid = u32::try_from(idx + 1).ok().and_then(|n| u8::try_from(n).ok()).ok_or(MoveError::TooManyPartitions)?;
    let id = PartitionId(u32::from(vmid));
    hv.caps.add_partition(id).map_err(|_| MoveError::TooManyPartitions)?;
    let Some(stage2) = Stage2Table::new(&mut hv.arch, &mut hv.frames) else {
        hv.caps.evict(id);
        return Err(MoveError::OutOfMemory);
    };
    let from_desc = *hv.partitions[src_idx].desc();
    let desc = PartitionDesc { name: name_for(&from_desc, dep.agent), ..from_desc };
    let heap_len = u64::from(desc.wasm_pages).saturating_mul(layout::WASM_PAGE).saturating_add(layout::RUNTIME_HEAP_OVERHEAD);
    let moved = Partition::created(id, desc, vmid, stage2, heap_len).moved_in(
        &hv.partitions[src_idx],
        ck.id,
        (layout::WASM_IPA, module_len),
    );
    Ok(hv.add_partition(moved))
}

/// The new partition at `idx` was not completed (`e`): its capabilities
/// go, and it is refused (its memory returned) as an admission would be.
fn undo<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, e: MoveError) {
    let id = hv.partitions[idx].id();
    hv.caps.evict(id);
    let why = match e {
        MoveError::Capability(_) => crate::load::Refusal::BadCapability,
        MoveError::Module => crate::load::Refusal::NoModule,
        MoveError::TooManyPartitions | MoveError::OutOfMemory | MoveError::TargetBusy => crate::load::Refusal::OutOfMemory,
        MoveError::Witness => crate::load::Refusal::Witness,
        MoveError::Reservation(r) => r,
    };
    crate::load::refuse(hv, idx, why);
}

/// Map the runtime, the module, the boot-info page and the snapshot into
/// the new partition `idx`; transplant the mover's capabilities.
fn populate<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    src: PartitionId,
    dep: &Departure,
    module: &[u8],
    ck: Snapshot,
) -> Result<RestoreInfo, MoveError> {
    // Kept first, so a failure below returns its frames with the partition's.
    let ck_pages = {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        let p = &mut partitions[idx];
        let mapped = ck.map_into(arch, frames, p.stage2_mut());
        p.receive_snapshot(ck);
        mapped.map_err(|_| MoveError::OutOfMemory)?
    };
    hv.partitions[idx].note_snapshot_mapped(ck_pages);
    let entry = {
        let Hypervisor { arch, frames, partitions, runtime, .. } = &mut *hv;
        let rt = runtime.as_ref().ok_or(MoveError::Module)?;
        let p = &mut partitions[idx];
        p.map_image(arch, frames, rt).map_err(|_| MoveError::OutOfMemory)?;
        rt.entry
    };
    crate::load::map_bytes(hv, idx, Ipa::new(layout::WASM_IPA), module, S2Perm::ReadOnly)
        .map_err(|_| MoveError::OutOfMemory)?;
    let page = hv.frames.alloc().ok_or(MoveError::OutOfMemory)?;
    hv.arch.phys_zero(page, PAGE_BYTES);
    {
        let p = &mut hv.partitions[idx];
        p.add_private_frame(page);
        p.stage2_mut()
            .map(&mut hv.arch, &mut hv.frames, Ipa::new(layout::BOOTINFO_IPA), page, S2Perm::ReadOnly, MemType::Normal)
            .map_err(|_| MoveError::OutOfMemory)?;
        p.start_at(entry);
    }
    // The handles the mover saw, in the order it saw them.
    let tag = u8::try_from(dep.slot.0 + 1).unwrap_or(u8::MAX);
    let mine: Vec<HandleInfo> =
        hv.partitions[dep.partition].boot_handles().iter().copied().filter(|h| h.agent == 0 || h.agent == tag).collect();
    let id = hv.partitions[idx].id();
    for h in mine {
        let mut held = hv.hold(id, 1).ok_or(MoveError::Witness)?;
        if let Err(e) = transplant_cap(hv, &mut held, src, h.raw, id) {
            hv.release(held);
            return Err(MoveError::Capability(e));
        }
        hv.partitions[idx].add_boot_handle(HandleInfo { agent: 0, ..h });
    }
    if hv.domains.evaluating() {
        // An agent table of one, so its runtime reaches turn boundaries
        // (and the agent can move again).
        let mut page = [0u8; PAGE_BYTES];
        let entry = AgentEntry { module_ipa: layout::WASM_IPA, module_len: module.len() as u64, agent_id: dep.agent.0, restore_len: 0 };
        AgentTable::write(&mut page, &[entry]);
        crate::load::map_bytes(hv, idx, Ipa::new(layout::AGENTS_IPA), &page, S2Perm::ReadOnly)
            .map_err(|_| MoveError::OutOfMemory)?;
        hv.domains.mark_table(idx);
    }
    let restore = {
        let p = &hv.partitions[idx];
        let ck = p.snapshot().ok_or(MoveError::OutOfMemory)?;
        RestoreInfo { image_ipa: layout::SNAPSHOT_IPA, image_len: ck.len, snapshot_id: ck.id, rollbacks: 0 }
    };
    crate::load::write_boot_info(hv, idx, restore);
    Ok(restore)
}

/// The new partition's name: `<from>.a<agent>`, or `agent-<agent>` when
/// that is too long.
fn name_for(from: &PartitionDesc, agent: AgentId) -> [u8; 32] {
    let long = alloc::format!("{}.a{}", from.name(), agent.0);
    PartitionDesc::name_field(&long)
        .or_else(|_| PartitionDesc::name_field(&alloc::format!("agent-{}", agent.0)))
        .unwrap_or([0; 32])
}
