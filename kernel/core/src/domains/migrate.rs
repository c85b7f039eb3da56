//! Migration: carrying out a coherence split by moving an agent to a new
//! partition at a turn boundary, through checkpoint and restore
//! (docs/DESIGN.md section 8).
//!
//! 1. **Decision.** When the engine decides to split one agent out of a
//!    partition running the shared runtime, [`begin_split`] marks it
//!    departing (one move at a time; a split of several agents stays a
//!    witnessed decision, pending).
//! 2. **Departure.** At the mover's next `AgentSwitch` (a turn boundary) the
//!    kernel answers [`agent_switch::DEPART`]; the runtime checkpoints that
//!    one agent with `Checkpoint` and drops its instance. That checkpoint
//!    is [`depart`]'s: captured like any checkpoint (image + the committed
//!    store it can reach, hashed), then the split happens before the call
//!    returns. If anything fails, nothing moved: the call is refused, the
//!    agent stays, and the decision is cancelled in the engine (evaluated
//!    again later).
//! 3. **Split.** A new partition at run time: the next id and VMID, its own
//!    stage-2, the shared runtime image, a copy of the mover's module, its
//!    boot-info page with the checkpoint mapped for restore
//!    (`RestoreInfo`), an empty capability table, admitted to the
//!    scheduler. The capabilities the mover could use (those listed for it
//!    or for every agent) are transplanted into the new table at the same
//!    slot and generation ([`rvm_cap::CapabilitySpace::transplant`]: derived
//!    from the originals, so revocation reaches them), so the raw handles
//!    the agent cached still work; each is witnessed. Its channel ends are
//!    re-pointed ([`Channel::repoint`]): queued messages stay in the kernel
//!    queues, nothing lost or duplicated.
//! 4. **Committed state.** A state store belongs to the partition it was
//!    created for, and a capability names it. The mover's store handle is
//!    transplanted, so it keeps committing to the same store it committed to
//!    before: nothing is copied, forked or lost. The new partition's own
//!    store starts empty and no handle names it.
//! 5. **Witness.** `Split` (`args` = cut value, internal traffic) in the
//!    split partition's log, after its `Checkpoint` call record, and in the
//!    new partition's log after its creation and load records.
//!
//! **Merge** ([`begin_merge`]): when two partitions chat heavily, the
//! agent of the one that empties (it must run one agent; several movers
//! are not built) leaves at its next turn boundary the same way, and
//! arrives in the partition that stays:
//!
//! * its module is mapped after the target's modules in the WASM window,
//!   its checkpoint at the target's restore window, and the target's agent
//!   table gains its entry (restore length nonzero); the target's runtime
//!   learns it from `AgentSwitch`'s `x2` (the slots its table lists) at its
//!   next turn boundary, instantiates the module and restores the agent
//!   ([`Arrival`]; the image is unmapped and returned at the arrival's
//!   first `AgentSwitch`);
//! * its capabilities are transplanted slot-exact into the target's table
//!   (every one checked first: a slot the target uses refuses the whole
//!   move, nothing changes); a coherence bundle spreads each partition's
//!   boot handles over its own slot range so they do not meet
//!   ([`crate::load::HandleSpread`]);
//! * its channel ends are re-pointed (queued messages stay queued);
//! * `Merge` (`args` = traffic between the two, their internal traffic) is
//!   witnessed in the target's log after the move, and in the emptied
//!   partition's log after its `Checkpoint` call record; that partition is
//!   then retired on the CPU it runs on (it is the caller): `Finished`
//!   (witnessed), its memory scrubbed and returned. Its capability table
//!   stays: the moved copies derive from it. Its committed store stays
//!   where it is, named by the moved agent's store handle (as for a split).

use alloc::vec::Vec;

use rvm_abi::bootinfo::{layout, AgentEntry, AgentTable, HandleInfo, RestoreInfo};
use rvm_abi::bundle::PartitionDesc;
use rvm_abi::hypercall::agent_switch;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome, WitnessOp, WitnessRecord};
use rvm_coherence::{AgentId, DomainId, MergeDecision, SplitDecision};

use crate::memory::addr::{Ipa, PAGE_BYTES, PAGE_SIZE};
use crate::arch::Arch;
use crate::channel::{AgentSlot, Endpoint};
use crate::domains::registry::AgentInfo;
use crate::recovery::checkpoint::{Checkpoint, GuestPart};
use crate::dispatch::answer::{allow, deny};
use crate::dispatch::call::Witnessed;
use crate::running::trap::Flow;
use crate::state::Hypervisor;
use crate::partition::{Partition, PartitionId, PartitionState};
use crate::memory::stage2::{MemType, S2Perm, Stage2Table};

pub use crate::domains::moves::{Arrival, Departure, Move, MoveError, MoveKind, Plan, DEPARTURE_TIMEOUT_NS};

/// Why a decision is not carried out now but will be decided again: one
/// move at a time. [`crate::domains`] cancels such a decision in the engine
/// (other refusals leave it pending, so the same domains are not decided
/// again and again).
pub(crate) const BUSY: &str = "another move is under way; decided again later";

/// Whether an agent arrived in partition `idx` and has not run yet (its
/// image still occupies the restore window): no other move touches `idx`
/// until it has.
fn arriving<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
    hv.domains.arrival.as_ref().is_some_and(|a| a.partition == idx)
}

/// Start carrying out `s` if it can be: one mover, in a partition of the
/// shared runtime with several agents, and no other move under way.
pub(crate) fn begin_split<A: Arch>(hv: &mut Hypervisor<A>, s: &SplitDecision) -> Result<(), &'static str> {
    if hv.domains.departing.is_some() {
        return Err(BUSY);
    }
    let [agent] = s.movers.as_slice() else {
        return Err("migration of several agents at once not built");
    };
    let Some(info) = hv.domains.agents().get(usize::try_from(agent.0).unwrap_or(usize::MAX)).copied() else {
        return Err("unknown agent");
    };
    if arriving(hv, info.partition) {
        return Err(BUSY);
    }
    let p = &hv.partitions[info.partition];
    if p.own_image().is_some() || !hv.domains.is_multi_agent(info.partition) || !p.is_runnable() {
        return Err("its partition cannot hand over one agent");
    }
    let since_ns = hv.arch.now_ns();
    hv.domains.departing =
        Some(Departure { agent: *agent, partition: info.partition, slot: info.slot, plan: Plan::Split(s.clone()), since_ns });
    Ok(())
}

/// Start carrying out merge `m` if it can be: the partition that empties
/// runs one agent, both run the shared runtime with an agent table (so
/// their runtimes reach turn boundaries), both are running, and no other
/// move is under way.
pub(crate) fn begin_merge<A: Arch>(hv: &mut Hypervisor<A>, m: &MergeDecision) -> Result<(), &'static str> {
    if hv.domains.departing.is_some() {
        return Err(BUSY);
    }
    let index_of = |id: u32| hv.partitions.iter().position(|p| p.id() == PartitionId(id));
    let (Some(from), Some(into)) = (index_of(m.from.0), index_of(m.into.0)) else {
        return Err("unknown partition");
    };
    if arriving(hv, from) || arriving(hv, into) {
        return Err(BUSY);
    }
    let movers: Vec<AgentInfo> = hv.domains.agents_of(from).copied().collect();
    let [mover] = movers.as_slice() else {
        return Err("merge of a partition with several agents not built");
    };
    for idx in [from, into] {
        let p = &hv.partitions[idx];
        if p.own_image().is_some() || !hv.domains.has_table(idx) {
            return Err("a partition without the shared runtime's agent table cannot hand over or admit an agent");
        }
        if !p.is_runnable() {
            return Err("a partition is not running");
        }
    }
    let since_ns = hv.arch.now_ns();
    hv.domains.departing = Some(Departure {
        agent: mover.id,
        partition: from,
        slot: mover.slot,
        plan: Plan::Merge { decision: *m, into },
        since_ns,
    });
    Ok(())
}

/// Housekeeping: abandon a departure whose partition stopped running, or
/// that did not happen within [`DEPARTURE_TIMEOUT_NS`].
pub(crate) fn expire<A: Arch>(hv: &mut Hypervisor<A>, now_ns: u64) {
    if hv.domains.arrival.as_ref().is_some_and(|a| !hv.partitions[a.partition].is_runnable()) {
        // Its partition stopped before the arrival ran: return the image.
        release_arrival(hv);
    }
    let Some(dep) = hv.domains.departing.as_ref() else { return };
    let target_stopped = matches!(dep.plan, Plan::Merge { into, .. } if !hv.partitions[into].is_runnable());
    let why = if !hv.partitions[dep.partition].is_runnable() {
        "its partition stopped running"
    } else if target_stopped {
        "the partition it would join stopped running"
    } else if now_ns.saturating_sub(dep.since_ns) > DEPARTURE_TIMEOUT_NS {
        "it did not reach a turn boundary in time"
    } else {
        return;
    };
    if let Some(dep) = hv.domains.departing.take() {
        abandon(hv, &dep, why);
    }
}

/// `AgentSwitch`'s `x1` for agent `slot` of partition `idx`.
pub(crate) fn switch_result<A: Arch>(hv: &Hypervisor<A>, idx: usize, slot: AgentSlot) -> u64 {
    match &hv.domains.departing {
        Some(d) if d.partition == idx && d.slot == slot => agent_switch::DEPART,
        _ => agent_switch::STAY,
    }
}

/// Whether partition `idx`'s running agent is departing (its `Checkpoint`
/// is [`depart`]'s).
pub(crate) fn departs<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
    hv.domains.departing.as_ref().is_some_and(|d| d.partition == idx && d.slot == hv.domains.running(idx))
}

/// `Checkpoint` of a departing agent: capture it, split it out, answer as
/// `Checkpoint` does (`x1` = checkpoint id, `x2`/`x3` = state hash prefix).
pub(crate) fn depart<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let Some(dep) = hv.domains.departing.take() else { return deny(hv, idx, &w, HvError::NotSupported) };
    let parts = [GuestPart { ipa: Ipa::new(regs[0]), len: regs[1] }, GuestPart { ipa: Ipa::new(regs[2]), len: regs[3] }];
    let snapshot = hv.stores[idx].snapshot();
    let captured = {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        let p = &partitions[idx];
        Checkpoint::capture(arch, frames, p.stage2(), &parts, p.checkpoint_limit(), 1, snapshot)
    };
    let ck = match captured {
        Ok(ck) => ck,
        Err(e) => {
            abandon(hv, &dep, "its checkpoint was refused");
            return deny(hv, idx, &w, e);
        }
    };
    let hash = ck.hash;
    let w = w.data(regs, &hash.0);
    let src = hv.partitions[idx].id();
    // The call's record and the move's (`Split`/`Merge`) must follow the
    // move: room for both first.
    let Some(held) = hv.hold(src, 2) else {
        ck.release(&mut hv.arch, &mut hv.frames);
        abandon(hv, &dep, "the witness log refused");
        return deny(hv, idx, &w, HvError::WitnessUnavailable);
    };
    let before = hv.arch.now_ns();
    let result = match &dep.plan {
        Plan::Split(decision) => split(hv, &dep, decision, ck),
        Plan::Merge { decision, into } => merge(hv, &dep, decision, *into, ck),
    };
    let moved = match result {
        Ok(m) => m,
        Err(e) => {
            abandon(hv, &dep, e.reason());
            let flow = deny(hv, idx, &w, e.status());
            hv.release(held);
            return flow;
        }
    };
    let flow = allow(hv, idx, &w, |_| {
        let [lo, hi] = hash.prefix_words();
        [1, lo, hi]
    });
    hv.kernel_event(src, dep.plan.event(), Outcome::Done, dep.plan.witness_args());
    hv.release(held);
    let took = hv.arch.now_ns().saturating_sub(before);
    if let Some(last) = hv.domains.moves.last_mut() {
        last.took_ns = took;
    }
    let (from_name, to_name) = (hv.partitions[idx].desc().name, hv.partitions[moved].desc().name);
    if let Some(m) = hv.domains.moves.last().cloned() {
        let what = match m.kind {
            MoveKind::Split => "split",
            MoveKind::Merge => "merge",
        };
        crate::console::hyp_line(
            &mut hv.arch,
            format_args!(
                "coherence: {what} of partition {} '{}': agent {} moved to partition {} '{}' ({} channels re-pointed, {} messages queued kept, {} handles transplanted, image {} bytes) in {} ns",
                src.0,
                crate::partition::name_str(&from_name),
                m.agent.0,
                m.to.0,
                crate::partition::name_str(&to_name),
                m.channels,
                m.queued,
                m.handles,
                m.image_bytes,
                m.took_ns,
            ),
        );
    }
    if matches!(dep.plan, Plan::Merge { .. }) {
        retire(hv, idx);
        return Flow::Reschedule;
    }
    flow
}

/// The partition at `idx` gave its last agent away (a merge) and is the
/// caller, on this CPU: it finishes (witnessed) and its memory is scrubbed
/// and returned. Its capability table stays (the moved copies derive from
/// it) and so does its state store (the moved agent's handle names it).
fn retire<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) {
    let code: u64 = 0;
    hv.partitions[idx].set_exit_code(code);
    {
        let Hypervisor { arch, partitions, .. } = &mut *hv;
        partitions[idx].console_flush(arch);
    }
    hv.transition(idx, PartitionState::Finished, KernelEvent::PartitionExit, rvm_state::digest::of_parts(&[&code.to_le_bytes()]));
    let before = hv.frames.frames_in_use();
    crate::load::release(hv, idx);
    let returned = before.saturating_sub(hv.frames.frames_in_use());
    let (id, name) = (hv.partitions[idx].id(), hv.partitions[idx].desc().name);
    crate::console::hyp_line(
        &mut hv.arch,
        format_args!(
            "coherence: partition {} '{}' retired: emptied by the merge, {returned} frames scrubbed and returned",
            id.0,
            crate::partition::name_str(&name)
        ),
    );
}

/// Agent `slot` of partition `idx` runs a turn: if it is the arrival, its
/// runtime restored it, so its image is unmapped and returned.
pub(crate) fn arrived<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, slot: AgentSlot) {
    if hv.domains.arrival.as_ref().is_some_and(|a| a.partition == idx && a.slot == slot) {
        release_arrival(hv);
    }
}

/// Unmap the arrival's image from its partition, return its frames, and
/// clear its restore length in the agent table (a restart starts it from
/// its module, as every agent of a partition with several).
fn release_arrival<A: Arch>(hv: &mut Hypervisor<A>) {
    let Some(a) = hv.domains.arrival.take() else { return };
    {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        let p = &mut partitions[a.partition];
        p.unmap_restore_pages(arch, a.pages);
        a.checkpoint.release(arch, frames);
    }
    let Some(t) = hv.partitions[a.partition].stage2().translate(&hv.arch, Ipa::new(layout::AGENTS_IPA)) else { return };
    let mut page = [0u8; PAGE_BYTES];
    hv.arch.phys_read(t.pa, &mut page);
    let mut entries: Vec<_> = (0..AgentTable::count(&page)).filter_map(|s| AgentTable::read(&page, s)).collect();
    if let Some(e) = entries.get_mut(usize::from(a.slot.0)) {
        e.restore_len = 0;
    }
    AgentTable::write(&mut page, &entries);
    hv.arch.phys_write(t.pa, &page);
}

/// The move will not happen: cancel the decision (the engine evaluates the
/// domain again) and say why.
fn abandon<A: Arch>(hv: &mut Hypervisor<A>, dep: &Departure, why: &str) {
    if let Some(engine) = hv.domains.engine.as_mut() {
        let _ = engine.cancel(dep.plan.id());
    }
    crate::console::hyp_line(
        &mut hv.arch,
        format_args!("coherence: agent {} stays in its partition: {why}", dep.agent.0),
    );
}

/// The new partition's name: `<from>.a<agent>`, or `agent-<agent>` when
/// that is too long.
fn name_for(from: &PartitionDesc, agent: AgentId) -> [u8; 32] {
    let long = alloc::format!("{}.a{}", from.name(), agent.0);
    PartitionDesc::name_field(&long)
        .or_else(|_| PartitionDesc::name_field(&alloc::format!("agent-{}", agent.0)))
        .unwrap_or([0; 32])
}

/// Read `len` bytes of partition `idx`'s memory at `ipa`.
fn read_guest_bytes<A: Arch>(hv: &Hypervisor<A>, idx: usize, ipa: u64, len: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    let mut out = alloc::vec![0u8; len];
    let mut done = 0usize;
    while done < len {
        let at = Ipa::new(ipa.checked_add(done as u64)?);
        let t = hv.partitions[idx].stage2().translate(&hv.arch, at)?;
        let take = (len - done).min(PAGE_BYTES - usize::try_from(at.page_offset()).ok()?);
        hv.arch.phys_read(t.pa, &mut out[done..done + take]);
        done += take;
    }
    Some(out)
}

/// Create the new partition for `dep`'s agent from its checkpoint `ck`,
/// move the agent, its channel ends and its capabilities there. Returns the
/// new partition's position. On `Err` nothing moved (a partition created
/// on the way is refused and its memory returned).
fn split<A: Arch>(hv: &mut Hypervisor<A>, dep: &Departure, decision: &SplitDecision, ck: Checkpoint) -> Result<usize, MoveError> {
    let src_idx = dep.partition;
    let src = hv.partitions[src_idx].id();
    // The mover's module, from its partition's agent table.
    let entry = read_guest_bytes(hv, src_idx, layout::AGENTS_IPA, PAGE_SIZE)
        .and_then(|page| AgentTable::read(&page, usize::from(dep.slot.0)))
        .filter(|e| e.agent_id == dep.agent.0);
    let Some(module) = entry.and_then(|e| read_guest_bytes(hv, src_idx, e.module_ipa, e.module_len)) else {
        ck.release(&mut hv.arch, &mut hv.frames);
        return Err(MoveError::Module);
    };
    let idx = hv.partitions.len();
    let Some(vmid) = u32::try_from(idx + 1).ok().and_then(|n| u8::try_from(n).ok()) else {
        ck.release(&mut hv.arch, &mut hv.frames);
        return Err(MoveError::TooManyPartitions);
    };
    let id = PartitionId(u32::from(vmid));
    if hv.caps.add_partition(id).is_err() {
        ck.release(&mut hv.arch, &mut hv.frames);
        return Err(MoveError::TooManyPartitions);
    }
    let Some(stage2) = Stage2Table::new(&mut hv.arch, &mut hv.frames) else {
        ck.release(&mut hv.arch, &mut hv.frames);
        hv.caps.evict(id);
        return Err(MoveError::OutOfMemory);
    };
    let from_desc = *hv.partitions[src_idx].desc();
    let desc = PartitionDesc { name: name_for(&from_desc, dep.agent), ..from_desc };
    let heap_len = u64::from(desc.wasm_pages).saturating_mul(layout::WASM_PAGE).saturating_add(layout::RUNTIME_HEAP_OVERHEAD);
    let moved = Partition::created(id, desc, vmid, stage2, heap_len).moved_in(
        &hv.partitions[src_idx],
        ck.id,
        (layout::WASM_IPA, module.len() as u64),
    );
    hv.add_partition(moved);
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
            hv.caps.evict(id);
            let why = match e {
                MoveError::Capability(_) => crate::load::Refusal::BadCapability,
                MoveError::Module => crate::load::Refusal::NoModule,
                MoveError::TooManyPartitions | MoveError::OutOfMemory | MoveError::TargetBusy => {
                    crate::load::Refusal::OutOfMemory
                }
                MoveError::Witness => crate::load::Refusal::Witness,
                MoveError::Reservation(r) => r,
            };
            crate::load::refuse(hv, idx, why);
            return Err(e);
        }
    };
    // The point of no return: the agent, its channel ends, the engine.
    let to = Endpoint { partition: id, slot: AgentSlot::FIRST };
    let from = Endpoint { partition: src, slot: dep.slot };
    let (mut channels, mut queued) = (0u32, 0u64);
    for ch in hv.channels.iter_mut() {
        if ch.repoint(from, to) {
            channels += 1;
            queued += (ch.pending_for(to) + ch.peer_endpoint(to).map_or(0, |p| ch.pending_for(p))) as u64;
        }
    }
    hv.domains.relocate(dep.agent, idx);
    vacate_table_slot(hv, src_idx, dep.slot);
    // Again, now that it lists its agent (the count of its table).
    crate::load::write_boot_info(hv, idx, restore);
    let now = hv.arch.now_ns();
    if let Some(engine) = hv.domains.engine.as_mut() {
        // Only fails if the graph no longer matches the decision; the move
        // stands either way (the graph then still lists the agent where it was).
        let _ = engine.apply_split(decision, DomainId(id.0), now);
    }
    let digest = rvm_state::digest::of_parts(&[&module]);
    hv.transition_held(&mut held, idx, PartitionState::Loaded, KernelEvent::PartitionLoad, digest);
    hv.held_event(&mut held, KernelEvent::Split, Outcome::Done, dep.plan.witness_args());
    hv.release(held);
    hv.sched.admit(idx, &desc);
    let p = &hv.partitions[idx];
    hv.domains.moves.push(Move {
        kind: MoveKind::Split,
        agent: dep.agent,
        from: src,
        to: id,
        cut: decision.cut,
        internal: decision.internal,
        channels,
        queued,
        handles: u32::try_from(p.boot_handles().len()).unwrap_or(u32::MAX),
        image_bytes: p.checkpoint().map_or(0, |c| c.len),
        at_ns: now,
        took_ns: 0,
    });
    Ok(idx)
}

/// Mark `slot` of partition `idx`'s agent table as moved away (module
/// length 0), so a restarted runtime does not start that agent again.
fn vacate_table_slot<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, slot: AgentSlot) {
    let Some(t) = hv.partitions[idx].stage2().translate(&hv.arch, Ipa::new(layout::AGENTS_IPA)) else { return };
    let mut page = [0u8; PAGE_BYTES];
    hv.arch.phys_read(t.pa, &mut page);
    let mut entries: Vec<_> = (0..AgentTable::count(&page)).filter_map(|s| AgentTable::read(&page, s)).collect();
    if let Some(e) = entries.get_mut(usize::from(slot.0)) {
        e.module_len = 0;
    }
    AgentTable::write(&mut page, &entries);
    hv.arch.phys_write(t.pa, &page);
}

/// Map the runtime, the module, the boot-info page and the checkpoint into
/// the new partition `idx`; transplant the mover's capabilities.
fn populate<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    src: PartitionId,
    dep: &Departure,
    module: &[u8],
    ck: Checkpoint,
) -> Result<RestoreInfo, MoveError> {
    // Kept first, so a failure below returns its frames with the partition's.
    let ck_pages = {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        let p = &mut partitions[idx];
        let mapped = ck.map_into(arch, frames, p.stage2_mut());
        p.receive_checkpoint(ck);
        mapped.map_err(|_| MoveError::OutOfMemory)?
    };
    hv.partitions[idx].note_checkpoint_mapped(ck_pages);
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
        let handle = match hv.caps.transplant(src, h.raw, id) {
            Ok(handle) => handle,
            Err(e) => {
                hv.release(held);
                return Err(MoveError::Capability(e));
            }
        };
        let mut rec = WitnessRecord::new(WitnessOp::Event(KernelEvent::CapInstall), Outcome::Done, id.0);
        rec.cap = handle.witness_id();
        rec.args = rvm_state::digest::of_parts(&[&src.0.to_le_bytes(), &h.raw.to_le_bytes()]);
        rec.timestamp = hv.arch.now_ns();
        hv.held_record(&mut held, rec);
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
        let ck = p.checkpoint().ok_or(MoveError::OutOfMemory)?;
        RestoreInfo { image_ipa: layout::SNAPSHOT_IPA, image_len: ck.len, snapshot_id: ck.id, rollbacks: 0 }
    };
    crate::load::write_boot_info(hv, idx, restore);
    Ok(restore)
}

/// Read partition `idx`'s agent table (empty if it has none).
fn table_of<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> Vec<AgentEntry> {
    read_guest_bytes(hv, idx, layout::AGENTS_IPA, PAGE_SIZE)
        .map(|page| (0..AgentTable::count(&page)).filter_map(|s| AgentTable::read(&page, s)).collect())
        .unwrap_or_default()
}

/// Move `dep`'s agent, the only one of its partition, into the partition
/// at `into` from its checkpoint `ck` (see the module documentation).
/// Returns `into`. On `Err` nothing moved: every step that can fail is
/// checked before the first change.
fn merge<A: Arch>(
    hv: &mut Hypervisor<A>,
    dep: &Departure,
    decision: &MergeDecision,
    into: usize,
    ck: Checkpoint,
) -> Result<usize, MoveError> {
    let src_idx = dep.partition;
    let (src, dst) = (hv.partitions[src_idx].id(), hv.partitions[into].id());
    let refuse = |hv: &mut Hypervisor<A>, ck: Checkpoint, e: MoveError| {
        ck.release(&mut hv.arch, &mut hv.frames);
        Err(e)
    };
    // The mover's module, from its partition's agent table.
    let entry = table_of(hv, src_idx).get(usize::from(dep.slot.0)).copied().filter(|e| e.agent_id == dep.agent.0);
    let Some(module) = entry.and_then(|e| read_guest_bytes(hv, src_idx, e.module_ipa, e.module_len)) else {
        return refuse(hv, ck, MoveError::Module);
    };
    // Room in the target: a table slot, the module window, the restore window.
    let mut table = table_of(hv, into);
    let slot = AgentSlot(u16::try_from(hv.domains.agent_count(into)).unwrap_or(u16::MAX));
    let window_end = layout::WASM_IPA + layout::WASM_MAX_LEN;
    let at = table.iter().map(|e| e.module_ipa.saturating_add(e.module_len)).max().unwrap_or(layout::WASM_IPA).next_multiple_of(PAGE_SIZE);
    let fits = at.checked_add(module.len() as u64).is_some_and(|end| end <= window_end);
    let busy = table.is_empty()
        || table.len() != usize::from(slot.0)
        || table.len() >= AgentTable::MAX
        || !fits
        || hv.partitions[into].checkpoint_mapped() != 0;
    if busy {
        return refuse(hv, ck, MoveError::TargetBusy);
    }
    // Every capability the mover could use must land at its own slot.
    let mine: Vec<HandleInfo> = hv.partitions[src_idx].boot_handles().to_vec();
    if let Some(e) = mine.iter().find_map(|h| hv.caps.can_transplant(src, h.raw, dst).err()) {
        return refuse(hv, ck, MoveError::Capability(e));
    }
    // Room in the target's log for every capability and the `Merge`.
    let Some(mut held) = u32::try_from(mine.len() + 1).ok().and_then(|n| hv.hold(dst, n)) else {
        return refuse(hv, ck, MoveError::Witness);
    };
    let refuse = |hv: &mut Hypervisor<A>, ck: Checkpoint, e: MoveError, held: crate::witness::Reservation| {
        hv.release(held);
        refuse(hv, ck, e)
    };
    // Module and image into the target (new mappings only: the target's
    // runtime looks at them after its next `AgentSwitch`).
    if crate::load::map_bytes(hv, into, Ipa::new(at), &module, S2Perm::ReadOnly).is_err() {
        return refuse(hv, ck, MoveError::OutOfMemory, held);
    }
    let mapped = {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        ck.map_into(arch, frames, partitions[into].stage2_mut())
    };
    let pages = match mapped {
        Ok(pages) => pages,
        Err(_) => {
            let Hypervisor { arch, partitions, .. } = &mut *hv;
            let p = &mut partitions[into];
            p.unmap_restore_pages(arch, ck.pages());
            return refuse(hv, ck, MoveError::OutOfMemory, held);
        }
    };
    // The point of no return. The target now runs several agents, whose
    // restarts start every agent afresh: a checkpoint it kept as a single
    // agent (not mapped: checked above) would only mislead a rollback.
    if let Some(old) = hv.partitions[into].take_checkpoint() {
        old.release(&mut hv.arch, &mut hv.frames);
    }
    // Capabilities (checked above).
    let tag = u8::try_from(slot.0 + 1).unwrap_or(u8::MAX);
    if hv.domains.agent_count(into) == 1 {
        // The target's own agent: its handles were listed for all.
        hv.partitions[into].assign_shared_handles(1);
    }
    let mut handles = 0u32;
    for h in mine {
        let Ok(handle) = hv.caps.transplant(src, h.raw, dst) else { continue };
        let mut rec = WitnessRecord::new(WitnessOp::Event(KernelEvent::CapInstall), Outcome::Done, dst.0);
        rec.cap = handle.witness_id();
        rec.args = rvm_state::digest::of_parts(&[&src.0.to_le_bytes(), &h.raw.to_le_bytes()]);
        rec.timestamp = hv.arch.now_ns();
        hv.held_record(&mut held, rec);
        hv.partitions[into].add_boot_handle(HandleInfo { agent: tag, ..h });
        handles += 1;
    }
    // Channel ends.
    let to = Endpoint { partition: dst, slot };
    let from = Endpoint { partition: src, slot: dep.slot };
    let (mut channels, mut queued) = (0u32, 0u64);
    for ch in hv.channels.iter_mut() {
        if ch.repoint(from, to) {
            channels += 1;
            queued += (ch.pending_for(to) + ch.peer_endpoint(to).map_or(0, |p| ch.pending_for(p))) as u64;
        }
    }
    // The agent table, the kernel's view, the boot-info page, the engine.
    table.push(AgentEntry { module_ipa: at, module_len: module.len() as u64, agent_id: dep.agent.0, restore_len: ck.len });
    if let Some(t) = hv.partitions[into].stage2().translate(&hv.arch, Ipa::new(layout::AGENTS_IPA)) {
        let mut page = [0u8; PAGE_BYTES];
        AgentTable::write(&mut page, &table);
        hv.arch.phys_write(t.pa, &page);
    }
    hv.domains.relocate(dep.agent, into);
    vacate_table_slot(hv, src_idx, dep.slot);
    crate::load::write_boot_info(hv, into, RestoreInfo::NONE);
    let now = hv.arch.now_ns();
    if let Some(engine) = hv.domains.engine.as_mut() {
        // Only fails if the graph no longer matches the decision; the move
        // stands either way.
        let _ = engine.apply_merge(decision, now);
    }
    let image_bytes = ck.len;
    hv.domains.arrival = Some(Arrival { partition: into, slot, checkpoint: ck, pages });
    hv.held_event(&mut held, KernelEvent::Merge, Outcome::Done, dep.plan.witness_args());
    hv.release(held);
    let (cut, internal) = dep.plan.weights();
    hv.domains.moves.push(Move {
        kind: dep.plan.kind(),
        agent: dep.agent,
        from: src,
        to: dst,
        cut,
        internal,
        channels,
        queued,
        handles,
        image_bytes,
        at_ns: now,
        took_ns: 0,
    });
    Ok(into)
}
