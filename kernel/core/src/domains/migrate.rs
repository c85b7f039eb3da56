//! Migration: carrying out a coherence decision by moving an agent between
//! partitions at a turn boundary, through snapshot and restore
//! (docs/DESIGN.md section 8). This module is the move's life cycle; the
//! move itself is [`split`](crate::domains::split) (to a new partition) or
//! [`merge`](crate::domains::merge) (into one that stays).
//!
//! 1. **Decision.** When the coherence evaluator decides to split one agent out of a
//!    partition running the shared runtime ([`begin_split`]), or to merge a
//!    partition of one agent into another ([`begin_merge`]), that agent is
//!    marked departing (one move at a time; a decision moving several
//!    agents stays a witnessed decision, pending).
//! 2. **Departure.** At the mover's next `AgentSwitch` (a turn boundary) the
//!    kernel answers [`agent_switch::DEPART`]; the runtime snapshots that
//!    one agent with `Snapshot` and drops its instance. That snapshot
//!    is [`depart`]'s: captured like any snapshot (image + the committed
//!    store it can reach, hashed), then the move happens before the call
//!    returns. If anything fails, nothing moved: the call is refused, the
//!    agent stays, and the decision is cancelled in the evaluator (evaluated
//!    again later). A departure that does not happen in time is abandoned
//!    ([`expire`]).
//! 3. **Move.** Both kinds share their steps: the capabilities the mover
//!    could use are transplanted by [`crate::caps::Caps`], each witnessed
//!    ([`crate::domains::transfer::transplant_cap`]); its channel ends are re-pointed
//!    ([`crate::channel::repoint_all`]) and the agent relocated in the
//!    registry ([`crate::domains::transfer::relocate`]); the move is recorded
//!    ([`crate::domains::transfer::record_move`]).
//! 4. **Witness.** `Split`/`Merge` (`args` = cut value, internal traffic)
//!    in the mover's old partition's log, after its `Snapshot` call
//!    record, and in the partition it joined.
//! 5. **After.** A merge's emptied partition is retired on the CPU it runs
//!    on (it is the caller): `Finished` (witnessed), its memory scrubbed
//!    and returned. Its capability table stays (the moved copies derive
//!    from it), and so does its committed store (the moved agent's store
//!    handle names it). A merged agent's image stays mapped in its new
//!    partition until its first `AgentSwitch` ([`arrived`]).

use alloc::vec::Vec;

use rvm_abi::hypercall::agent_switch;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome};
use rvm_coherence::{MergeDecision, SplitDecision};

use crate::arch::Arch;
use crate::channel::AgentSlot;
use crate::dispatch::answer::{allow, deny};
use crate::dispatch::call::Witnessed;
use crate::domains::agent_table;
use crate::domains::registry::AgentInfo;
use crate::memory::addr::Ipa;
use crate::partition::{PartitionId, PartitionState};
use crate::recovery::snapshot::{Snapshot, GuestPart};
use crate::running::trap::Flow;
use crate::state::Hypervisor;

pub use crate::domains::moves::{Arrival, Departure, Move, MoveError, MoveKind, Plan, DEPARTURE_TIMEOUT_NS};

/// Why a decision is not carried out now but will be decided again: one
/// move at a time. [`crate::domains`] cancels such a decision in the evaluator
/// (other refusals leave it pending, so the same domains are not decided
/// again and again).
pub(crate) const BUSY: &str = "another move is under way; decided again later";

/// Whether an agent arrived in partition `idx` and has not run yet (its
/// image still occupies the restore window): no other move touches `idx`
/// until it has.
fn arriving<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
    hv.domains.arrival().is_some_and(|a| a.partition == idx)
}

/// Start carrying out `s` if it can be: one mover, in a partition of the
/// shared runtime with several agents, and no other move under way.
pub(crate) fn begin_split<A: Arch>(hv: &mut Hypervisor<A>, s: &SplitDecision) -> Result<(), &'static str> {
    if hv.domains.departing().is_some() {
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
    hv.domains.begin_departure(Departure {
        agent: *agent,
        partition: info.partition,
        slot: info.slot,
        plan: Plan::Split(s.clone()),
        since_ns,
    });
    Ok(())
}

/// Start carrying out merge `m` if it can be: the partition that empties
/// runs one agent, both run the shared runtime with an agent table (so
/// their runtimes reach turn boundaries), both are running, and no other
/// move is under way.
pub(crate) fn begin_merge<A: Arch>(hv: &mut Hypervisor<A>, m: &MergeDecision) -> Result<(), &'static str> {
    if hv.domains.departing().is_some() {
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
    hv.domains.begin_departure(Departure {
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
    if hv.domains.arrival().is_some_and(|a| !hv.partitions[a.partition].is_runnable()) {
        // Its partition stopped before the arrival ran: return the image.
        release_arrival(hv);
    }
    let Some(dep) = hv.domains.departing() else { return };
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
    if let Some(dep) = hv.domains.take_departure() {
        abandon(hv, &dep, why);
    }
}

/// `AgentSwitch`'s `x1` for agent `slot` of partition `idx`.
pub(crate) fn switch_result<A: Arch>(hv: &Hypervisor<A>, idx: usize, slot: AgentSlot) -> u64 {
    match hv.domains.departing() {
        Some(d) if d.partition == idx && d.slot == slot => agent_switch::DEPART,
        _ => agent_switch::STAY,
    }
}

/// Whether partition `idx`'s running agent is departing (its `Snapshot`
/// is [`depart`]'s).
pub(crate) fn departs<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
    hv.domains.departing().is_some_and(|d| d.partition == idx && d.slot == hv.domains.running(idx))
}

/// `Snapshot` of a departing agent: capture it, move it, answer as
/// `Snapshot` does (`x1` = snapshot id, `x2`/`x3` = state hash prefix).
pub(crate) fn depart<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let Some(dep) = hv.domains.take_departure() else { return deny(hv, idx, &w, HvError::NotSupported) };
    let ck = match capture(hv, idx, regs) {
        Ok(ck) => ck,
        Err(e) => {
            abandon(hv, &dep, "its snapshot was refused");
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
        Plan::Split(decision) => crate::domains::split::split(hv, &dep, decision, ck),
        Plan::Merge { decision, into } => crate::domains::merge::merge(hv, &dep, decision, *into, ck),
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
    hv.domains.time_last_move(hv.arch.now_ns().saturating_sub(before));
    print_move(hv, idx, moved);
    if matches!(dep.plan, Plan::Merge { .. }) {
        retire(hv, idx);
        return Flow::Reschedule;
    }
    flow
}

/// The departing agent of partition `idx`, captured as a snapshot of the
/// guest parts `regs` names (and the committed store it can reach).
fn capture<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, regs: &[u64; 6]) -> Result<Snapshot, HvError> {
    let parts = [GuestPart { ipa: Ipa::new(regs[0]), len: regs[1] }, GuestPart { ipa: Ipa::new(regs[2]), len: regs[3] }];
    let snapshot = hv.stores[idx].snapshot();
    let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
    let p = &partitions[idx];
    Snapshot::capture(arch, frames, p.stage2(), &parts, p.snapshot_limit(), 1, snapshot)
}

/// Print the last move: from partition `idx` to the one at `moved`.
fn print_move<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, moved: usize) {
    let (from_name, to_name) = (hv.partitions[idx].desc().name, hv.partitions[moved].desc().name);
    let src = hv.partitions[idx].id();
    if let Some(m) = hv.domains.moves().last().cloned() {
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
    if hv.domains.arrival().is_some_and(|a| a.partition == idx && a.slot == slot) {
        release_arrival(hv);
    }
}

/// Unmap the arrival's image from its partition, return its frames, and
/// clear its restore length in the agent table (a restart starts it from
/// its module, as every agent of a partition with several).
fn release_arrival<A: Arch>(hv: &mut Hypervisor<A>) {
    let Some(a) = hv.domains.take_arrival() else { return };
    {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        let p = &mut partitions[a.partition];
        p.unmap_restore_pages(arch, a.pages);
        a.snapshot.release(arch, frames);
    }
    agent_table::restored(hv, a.partition, a.slot);
}

/// The move will not happen: cancel the decision (the evaluator weighs the
/// domain again) and say why.
fn abandon<A: Arch>(hv: &mut Hypervisor<A>, dep: &Departure, why: &str) {
    hv.domains.cancel(dep.plan.id());
    crate::console::hyp_line(
        &mut hv.arch,
        format_args!("coherence: agent {} stays in its partition: {why}", dep.agent.0),
    );
}
