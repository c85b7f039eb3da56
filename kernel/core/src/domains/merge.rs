//! A merge carried out: the departing agent, the only one of its
//! partition, joins the partition that stays, from its snapshot.
//!
//! 1. **Check.** Everything that can fail is checked before the first
//!    change: its module is read from its table, the target has room (a
//!    table slot, the module window, a free restore window), every
//!    capability it could use lands at its own slot in the target's table
//!    (a coherence bundle spreads each partition's boot handles over its
//!    own slot range so they do not meet, [`crate::load::HandleSpread`]),
//!    and the target's log has room for their records and the `Merge`.
//! 2. **Map.** Its module after the target's modules in the WASM window,
//!    its snapshot at the target's restore window (new mappings only: the
//!    target's runtime looks at them after its next `AgentSwitch`).
//! 3. **Move.** Past the point of no return: the capabilities are
//!    transplanted slot-exact (each witnessed), the channel ends re-pointed
//!    (queued messages stay queued), the agent relocated in the registry,
//!    the target's table gains its entry (restore length nonzero), the
//!    evaluator applies the merge, and `Merge` is witnessed in the target's
//!    log. The target's runtime learns of it from `AgentSwitch`'s `x2` (the
//!    slots its table lists), instantiates the module and restores the agent
//!    ([`Arrival`]; the image is unmapped and returned at the arrival's
//!    first `AgentSwitch`).
//!
//! The emptied partition is then retired by [`crate::domains::migrate`].

use alloc::vec::Vec;

use rvm_abi::bootinfo::{layout, AgentEntry, AgentTable, HandleInfo, RestoreInfo};
use rvm_abi::witness::KernelEvent;
use rvm_abi::Outcome;
use rvm_coherence::MergeDecision;

use crate::arch::Arch;
use crate::channel::{AgentSlot, Endpoint};
use crate::domains::agent_table;
use crate::domains::transfer::{record_move, relocate, transplant_cap};
use crate::domains::moves::{Arrival, Departure, MoveError};
use crate::memory::addr::{Ipa, PAGE_SIZE};
use crate::memory::stage2::S2Perm;
use crate::recovery::snapshot::Snapshot;
use crate::state::Hypervisor;
use crate::witness::Reservation;

/// Move `dep`'s agent, the only one of its partition, into the partition
/// at `into` from its snapshot `ck` (see the module documentation).
/// Returns `into`. On `Err` nothing moved: every step that can fail is
/// checked before the first change.
pub(super) fn merge<A: Arch>(
    hv: &mut Hypervisor<A>,
    dep: &Departure,
    decision: &MergeDecision,
    into: usize,
    ck: Snapshot,
) -> Result<usize, MoveError> {
    let src_idx = dep.partition;
    let (src, dst) = (hv.partitions[src_idx].id(), hv.partitions[into].id());
    let refuse = |hv: &mut Hypervisor<A>, ck: Snapshot, e: MoveError| {
        ck.release(&mut hv.arch, &mut hv.frames);
        Err(e)
    };
    // The mover's module, from its partition's agent table.
    let Some(module) = agent_table::module_of(hv, src_idx, dep.slot, dep.agent) else {
        return refuse(hv, ck, MoveError::Module);
    };
    // Room in the target: a table slot, the module window, the restore window.
    let Some(Room { mut table, slot, at }) = room(hv, into, module.len() as u64) else {
        return refuse(hv, ck, MoveError::TargetBusy);
    };
    // Every capability the mover could use must land at its own slot.
    let mine: Vec<HandleInfo> = hv.partitions[src_idx].boot_handles().to_vec();
    if let Some(e) = mine.iter().find_map(|h| hv.caps.can_transplant(src, h.raw, dst).err()) {
        return refuse(hv, ck, MoveError::Capability(e));
    }
    // Room in the target's log for every capability and the `Merge`.
    let Some(mut held) = u32::try_from(mine.len() + 1).ok().and_then(|n| hv.hold(dst, n)) else {
        return refuse(hv, ck, MoveError::Witness);
    };
    let pages = match map_arrival(hv, into, at, &module, &ck) {
        Ok(pages) => pages,
        Err(e) => {
            hv.release(held);
            return refuse(hv, ck, e);
        }
    };
    // The point of no return. The target now runs several agents, whose
    // restarts start every agent afresh: a snapshot it kept as a single
    // agent (not mapped: checked above) would only mislead a rollback.
    if let Some(old) = hv.partitions[into].take_snapshot() {
        old.release(&mut hv.arch, &mut hv.frames);
    }
    let handles = transplant_caps(hv, &mut held, src_idx, into, slot, mine);
    let repointed = relocate(hv, dep, Endpoint { partition: dst, slot }, into);
    table.push(AgentEntry { module_ipa: at, module_len: module.len() as u64, agent_id: dep.agent.0, restore_len: ck.len });
    agent_table::write(hv, into, &table);
    crate::load::write_boot_info(hv, into, RestoreInfo::NONE);
    let now = hv.arch.now_ns();
    hv.domains.apply_merge(decision, now);
    let image_bytes = ck.len;
    hv.domains.note_arrival(Arrival { partition: into, slot, snapshot: ck, pages });
    hv.held_event(&mut held, KernelEvent::Merge, Outcome::Done, dep.plan.witness_args());
    hv.release(held);
    record_move(hv, dep, dst, repointed, handles, image_bytes, now);
    Ok(into)
}

/// Where an arriving agent goes in its target.
struct Room {
    /// The target's agent table as it is.
    table: Vec<AgentEntry>,
    /// The arrival's slot: the next one.
    slot: AgentSlot,
    /// Where its module goes in the WASM window.
    at: u64,
}

/// Room in partition `into` for an agent whose module is `module_len`
/// bytes: a slot in its table, the module window, a free restore window.
fn room<A: Arch>(hv: &Hypervisor<A>, into: usize, module_len: u64) -> Option<Room> {
    let table = agent_table::read(hv, into);
    let slot = AgentSlot(u16::try_from(hv.domains.agent_count(into)).unwrap_or(u16::MAX));
    let window_end = layout::WASM_IPA + layout::WASM_MAX_LEN;
    let at = table.iter().map(|e| e.module_ipa.saturating_add(e.module_len)).max().unwrap_or(layout::WASM_IPA).next_multiple_of(PAGE_SIZE);
    let fits = at.checked_add(module_len).is_some_and(|end| end <= window_end);
    let busy = table.is_empty()
        || table.len() != usize::from(slot.0)
        || table.len() >= AgentTable::MAX
        || !fits
        || hv.partitions[into].snapshot_mapped() != 0;
    (!busy).then_some(Room { table, slot, at })
}

/// Map the arrival's module at `at` and its snapshot `ck` at the restore
/// window of partition `into`; returns the snapshot's pages mapped.
fn map_arrival<A: Arch>(hv: &mut Hypervisor<A>, into: usize, at: u64, module: &[u8], ck: &Snapshot) -> Result<u64, MoveError> {
    if crate::load::map_bytes(hv, into, Ipa::new(at), module, S2Perm::ReadOnly).is_err() {
        return Err(MoveError::OutOfMemory);
    }
    let mapped = {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        ck.map_into(arch, frames, partitions[into].stage2_mut())
    };
    mapped.map_err(|_| {
        let Hypervisor { arch, partitions, .. } = &mut *hv;
        partitions[into].unmap_restore_pages(arch, ck.pages());
        MoveError::OutOfMemory
    })
}

/// Transplant the mover's capabilities `mine` (checked: each lands at its
/// own slot) from partition `src_idx` into `into`, listed for the arrival
/// in `slot`; each witnessed with room `held`. Returns how many moved.
fn transplant_caps<A: Arch>(
    hv: &mut Hypervisor<A>,
    held: &mut Reservation,
    src_idx: usize,
    into: usize,
    slot: AgentSlot,
    mine: Vec<HandleInfo>,
) -> u32 {
    let (src, dst) = (hv.partitions[src_idx].id(), hv.partitions[into].id());
    let tag = u8::try_from(slot.0 + 1).unwrap_or(u8::MAX);
    if hv.domains.agent_count(into) == 1 {
        // The target's own agent: its handles were listed for all.
        hv.partitions[into].assign_shared_handles(1);
    }
    let mut handles = 0u32;
    for h in mine {
        if transplant_cap(hv, held, src, h.raw, dst).is_err() {
            continue;
        }
        hv.partitions[into].add_boot_handle(HandleInfo { agent: tag, ..h });
        handles += 1;
    }
    handles
}
