//! Coherence domains (docs/DESIGN.md section 8) in the kernel: the agents each
//! partition runs, which of them is running, the communication graph fed by
//! every delivered message, and the split and merge decisions of the
//! coherence evaluator, witnessed with their cut value.
//!
//! * A partition runs one or more **agents** (one per `Wasm` bundle entry);
//!   each has a kernel-wide [`AgentId`] and a [`AgentSlot`] in its
//!   partition. A partition with a raw guest image has one agent, slot 0.
//! * The guest runtime of a partition with several agents tells the kernel
//!   which one runs with `AgentSwitch` at every turn boundary; every call
//!   until the next switch is that agent's (the witness chain shows it: the
//!   `AgentSwitch` record precedes them). A channel end is an agent, so only
//!   that agent may use it.
//! * Every successful `ChannelSend` is recorded in the [`Coherence`]
//!   evaluator's graph (one message, its bytes, between the two agents).
//! * With [`BOOT_FLAG_COHERENCE`] set, [`housekeeping`] evaluates the graph
//!   once per epoch and witnesses every decision: `SplitDecided` in the
//!   split domain's log, `MergeDecided` in both partitions' logs, `args` =
//!   [`Decision::witness_args`] (cut value in bytes 0–7, internal traffic in
//!   8–15).
//!
//! **Migration** ([`crate::domains::migrate`]): a split decision that moves one
//! agent out of a partition running the shared runtime, and a merge whose
//! emptied partition runs one agent, are carried out at that agent's next
//! turn boundary (its `AgentSwitch` answers `DEPART`); other decisions
//! (several movers) stay witnessed decisions, pending in the evaluator so the
//! same domains are not decided again. With [`BOOT_FLAG_COHERENCE`] every
//! partition of the shared runtime has an agent table (one entry for a
//! single agent), so its runtime reaches those turn boundaries.
//!
//! **Snapshots in a multi-agent partition** are refused (`NotSupported`,
//! witnessed), except a departing agent's (its move): a snapshot image
//! holds one agent's memory, and the kernel keeps one snapshot per
//! partition. So F1 and F2 of a multi-agent
//! partition both restart every agent of it from the pristine image, with
//! the partition's committed state store kept.

mod agent_table;
pub mod dormancy;
pub mod dormant;
mod merge;
pub mod migrate;
pub mod moves;
pub mod registry;
mod split;
mod transfer;

pub use registry::{AgentInfo, DecisionRecord, Domains, DECISIONS_KEPT};

use alloc::vec::Vec;

use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome};
use rvm_coherence::{
    Decision, Weight,
};

use crate::arch::Arch;
use crate::channel::{AgentSlot, Endpoint};
use crate::dispatch::answer::{allow, deny};
use crate::dispatch::call::Witnessed;
use crate::running::trap::Flow;
use crate::state::Hypervisor;
use crate::partition::PartitionId;

/// The agent making partition `idx`'s calls now.
pub(crate) fn caller<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> Endpoint {
    Endpoint { partition: hv.partitions[idx].id(), slot: hv.domains.running(idx) }
}

/// `AgentSwitch`: `x1` = the slot of the agent whose calls follow.
pub(crate) fn switch<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let slot = u16::try_from(regs[0]).ok().map(AgentSlot).filter(|&s| hv.domains.agent_at(idx, s).is_some());
    match slot {
        None => deny(hv, idx, &w, HvError::InvalidArgument),
        Some(slot) => allow(hv, idx, &w, |hv| {
            hv.domains.set_running(idx, slot);
            // An arrived agent's first turn: its runtime restored it.
            crate::domains::migrate::arrived(hv, idx, slot);
            let listed = if hv.domains.has_table(idx) { hv.domains.agent_count(idx) } else { 0 };
            [crate::domains::migrate::switch_result(hv, idx, slot), u64::try_from(listed).unwrap_or(0), 0]
        }),
    }
}

/// Whether partition `idx`'s `Snapshot` is refused (it runs several
/// agents; a departing agent's snapshot is [`crate::domains::migrate`]'s).
pub(crate) fn refuses_snapshot<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
    hv.domains.is_multi_agent(idx)
}

/// A message of `bytes` bytes was queued on channel `ch` by `from`: weigh
/// it in the graph.
pub(crate) fn record_send<A: Arch>(hv: &mut Hypervisor<A>, ch: usize, from: Endpoint, bytes: usize) {
    let Some(to) = hv.channels.get(ch).and_then(|c| c.peer_endpoint(from)) else { return };
    let agent = |e: Endpoint| {
        // Partition `n` sits at position `n - 1` (load order); look further
        // only if that ever changes.
        let at = usize::try_from(e.partition.0).ok()?.checked_sub(1);
        let idx = at
            .filter(|&i| hv.partitions.get(i).is_some_and(|p| p.id() == e.partition))
            .or_else(|| hv.partitions.iter().position(|p| p.id() == e.partition))?;
        hv.domains.agent_at(idx, e.slot).map(|a| a.id)
    };
    let (Some(x), Some(y)) = (agent(from), agent(to)) else { return };
    let now = hv.arch.now_ns();
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    hv.domains.record_traffic(x, y, bytes, now);
}

/// Once per epoch (with [`BOOT_FLAG_COHERENCE`]): evaluate the graph and
/// witness every decision. Called from the run loop.
pub(crate) fn housekeeping<A: Arch>(hv: &mut Hypervisor<A>) {
    if !hv.domains.evaluating() {
        return;
    }
    let now = hv.arch.now_ns();
    crate::domains::migrate::expire(hv, now);
    if !hv.domains.start_epoch(now) {
        return;
    }
    let Some(evaluation) = hv.domains.evaluate(now) else { return };
    // Splits first: one move runs at a time, and a merge whose partition
    // never reaches a turn boundary must not keep a split from starting.
    let (splits, merges): (Vec<&Decision>, Vec<&Decision>) =
        evaluation.decisions.iter().partition(|d| matches!(d, Decision::Split(_)));
    for decision in splits.into_iter().chain(merges) {
        witness_decision(hv, decision, now);
    }
}

/// Write a decision into the logs it concerns, print it, remember it, and
/// start carrying it out if [`crate::domains::migrate`] can; otherwise it stays
/// pending in the evaluator.
fn witness_decision<A: Arch>(hv: &mut Hypervisor<A>, decision: &Decision, now: u64) {
    let args = decision.witness_args();
    let record = match decision {
        Decision::Split(s) => DecisionRecord {
            event: KernelEvent::SplitDecided,
            at_ns: now,
            partition: PartitionId(s.domain.0),
            other: None,
            movers: s.movers.iter().copied().collect(),
            cut: s.cut,
            internal: s.internal,
        },
        Decision::Merge(m) => DecisionRecord {
            event: KernelEvent::MergeDecided,
            at_ns: now,
            partition: PartitionId(m.into.0),
            other: Some(PartitionId(m.from.0)),
            movers: Vec::new(),
            cut: m.cross,
            internal: m.internal,
        },
    };
    // Room in every log it concerns first: a decision is carried out only
    // if all of them record it (otherwise it is cancelled, as a busy one is).
    let mut held: Vec<crate::witness::Reservation> = Vec::new();
    for log in [Some(record.partition), record.other].into_iter().flatten() {
        match hv.hold(log, 1) {
            Some(r) => held.push(r),
            None => {
                for r in held.into_iter().rev() {
                    hv.release(r);
                }
                hv.domains.cancel(decision.id());
                return;
            }
        }
    }
    for mut r in held {
        hv.held_event(&mut r, record.event, Outcome::Done, args);
    }
    let carried = match decision {
        Decision::Split(s) => crate::domains::migrate::begin_split(hv, s),
        Decision::Merge(m) => crate::domains::migrate::begin_merge(hv, m),
    };
    if carried == Err(crate::domains::migrate::BUSY) {
        hv.domains.cancel(decision.id());
    }
    print_decision(hv, &record, carried);
    hv.domains.remember(record);
}

/// A weight as whole units with two decimals.
struct Units(Weight);

impl core::fmt::Display for Units {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let raw = self.0.raw();
        let frac = ((raw & 0xffff) * 100) >> 16;
        write!(f, "{}.{frac:02}", raw >> 16)
    }
}

fn print_decision<A: Arch>(hv: &mut Hypervisor<A>, r: &DecisionRecord, carried: Result<(), &'static str>) {
    let next = match carried {
        Ok(()) => "moving at its next turn boundary",
        Err(why) => why,
    };
    let name = |hv: &Hypervisor<A>, id: PartitionId| {
        hv.partitions.iter().find(|p| p.id() == id).map_or([0u8; 32], |p| p.desc().name)
    };
    let this = name(hv, r.partition);
    match r.other {
        None => {
            let mut movers = heapless::String::<96>::new();
            for (n, a) in r.movers.iter().enumerate() {
                let _ = core::fmt::Write::write_fmt(&mut movers, format_args!("{}{}", if n > 0 { "," } else { "" }, a.0));
            }
            crate::console::hyp_line(
                &mut hv.arch,
                format_args!(
                    "coherence: split of partition {} '{}' decided: agents [{}] would move (cut {} of internal {}); {next}",
                    r.partition.0,
                    crate::partition::name_str(&this),
                    movers,
                    Units(r.cut),
                    Units(r.internal)
                ),
            );
        }
        Some(other) => {
            let from = name(hv, other);
            crate::console::hyp_line(
                &mut hv.arch,
                format_args!(
                    "coherence: merge of partition {} '{}' into {} '{}' decided (cross traffic {}, internal {}); {next}",
                    other.0,
                    crate::partition::name_str(&from),
                    r.partition.0,
                    crate::partition::name_str(&this),
                    Units(r.cut),
                    Units(r.internal)
                ),
            );
        }
    }
}
