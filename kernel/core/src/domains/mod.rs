//! Coherence domains (DESIGN section 8) in the kernel: the agents each
//! partition runs, which of them is running, the communication graph fed by
//! every delivered message, and the split and merge decisions of the
//! coherence engine, witnessed with their cut value.
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
//!   engine's graph (one message, its bytes, between the two agents).
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
//! (several movers) stay witnessed decisions, pending in the engine so the
//! same domains are not decided again. With [`BOOT_FLAG_COHERENCE`] every
//! partition of the shared runtime has an agent table (one entry for a
//! single agent), so its runtime reaches those turn boundaries.
//!
//! **Checkpoints in a multi-agent partition** are refused (`NotSupported`,
//! witnessed), except a departing agent's (its move): a checkpoint image
//! holds one agent's memory, and the kernel keeps one checkpoint per
//! partition. So F1 and F2 of a multi-agent
//! partition both restart every agent of it from the pristine image, with
//! the partition's committed state store kept.

pub mod dormant;
pub mod migrate;

use alloc::vec::Vec;

use rvm_abi::bundle::BOOT_FLAG_COHERENCE;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome};
use rvm_coherence::{
    AgentId, Coherence, CoherencePolicy, CommGraph, DecayPolicy, Decision, DomainId, GraphLimits, TrafficPolicy, Weight,
};

use crate::arch::Arch;
use crate::channel::{AgentSlot, Endpoint};
use crate::dispatch::{allow, deny, Witnessed};
use crate::hypervisor::{Flow, Hypervisor};
use crate::partition::PartitionId;

/// Decisions remembered for [`Domains::decisions`].
pub const DECISIONS_KEPT: usize = 16;

/// One agent the kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentInfo {
    pub id: AgentId,
    /// Its partition's position in the hypervisor's table.
    pub partition: usize,
    pub slot: AgentSlot,
}

/// A decision the kernel witnessed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// `SplitDecided` or `MergeDecided`.
    pub event: KernelEvent,
    pub at_ns: u64,
    /// The split partition, or the one merged into.
    pub partition: PartitionId,
    /// The partition merged from (a merge only).
    pub other: Option<PartitionId>,
    /// The agents that would move (a split only).
    pub movers: Vec<AgentId>,
    /// The cut value: a split's minimum cut, the traffic between merging partitions.
    pub cut: Weight,
    /// The internal traffic it was weighed against.
    pub internal: Weight,
}

/// The kernel's view of coherence domains.
pub struct Domains {
    agents: Vec<AgentInfo>,
    /// Per partition (by position): its agents' ids, by slot.
    slots: Vec<Vec<AgentId>>,
    /// Per partition (by position): the agent running now.
    running: Vec<AgentSlot>,
    pub(crate) engine: Option<Coherence>,
    /// Whether decisions are evaluated and witnessed ([`BOOT_FLAG_COHERENCE`]).
    evaluating: bool,
    epoch_ns: u64,
    next_evaluation_ns: u64,
    decisions: Vec<DecisionRecord>,
    /// The split being carried out: its mover leaves at its next turn boundary.
    pub(crate) departing: Option<crate::domains::migrate::Departure>,
    /// Moves carried out, oldest first.
    pub(crate) moves: Vec<crate::domains::migrate::Move>,
    /// Per partition (by position): whether an agent table is mapped.
    tables: Vec<bool>,
    /// An agent that arrived (a merge) and has not yet run its first turn:
    /// its checkpoint stays mapped for its runtime to restore it.
    pub(crate) arrival: Option<crate::domains::migrate::Arrival>,
}

impl Domains {
    /// No agents yet; decisions evaluated when `boot_flags` has [`BOOT_FLAG_COHERENCE`].
    pub fn new(boot_flags: u32) -> Self {
        let decay = DecayPolicy::DEFAULT;
        let graph = CommGraph::new(GraphLimits::DEFAULT, TrafficPolicy::DEFAULT, decay);
        Self {
            agents: Vec::new(),
            slots: Vec::new(),
            running: Vec::new(),
            engine: Coherence::new(graph, CoherencePolicy::DEFAULT).ok(),
            evaluating: boot_flags & BOOT_FLAG_COHERENCE != 0,
            epoch_ns: decay.epoch_ns(),
            next_evaluation_ns: 0,
            decisions: Vec::new(),
            departing: None,
            moves: Vec::new(),
            tables: Vec::new(),
            arrival: None,
        }
    }

    /// Give partition `partition` (id `id`) its next agent; returns it.
    pub fn register(&mut self, partition: usize, id: PartitionId) -> AgentInfo {
        if self.slots.len() <= partition {
            self.slots.resize(partition + 1, Vec::new());
            self.running.resize(partition + 1, AgentSlot::FIRST);
        }
        let slot = AgentSlot(u16::try_from(self.slots[partition].len()).unwrap_or(u16::MAX));
        let agent = AgentInfo {
            id: AgentId(u32::try_from(self.agents.len()).unwrap_or(u32::MAX)),
            partition,
            slot,
        };
        self.agents.push(agent);
        self.slots[partition].push(agent.id);
        if let Some(engine) = self.engine.as_mut() {
            // A full graph leaves the agent out of it: its traffic is not
            // weighed, nothing else changes.
            let _ = engine.graph_mut().add_agent(agent.id, DomainId(id.0));
        }
        agent
    }

    /// Partition `partition` was refused: its agents leave the graph.
    pub fn forget_partition(&mut self, partition: usize) {
        if let Some(engine) = self.engine.as_mut() {
            for a in self.agents.iter().filter(|a| a.partition == partition) {
                let _ = engine.graph_mut().remove_agent(a.id);
            }
        }
    }

    /// Every agent, by id.
    pub fn agents(&self) -> &[AgentInfo] {
        &self.agents
    }

    /// The agents of partition `partition`, by slot.
    pub fn agents_of(&self, partition: usize) -> impl Iterator<Item = &AgentInfo> + '_ {
        self.agents.iter().filter(move |a| a.partition == partition)
    }

    /// The agent in `slot` of partition `partition` (`None` once it moved
    /// to another partition).
    pub fn agent_at(&self, partition: usize, slot: AgentSlot) -> Option<AgentInfo> {
        let id = self.slots.get(partition)?.get(usize::from(slot.0))?;
        self.agents
            .get(usize::try_from(id.0).ok()?)
            .copied()
            .filter(|a| a.partition == partition && a.slot == slot)
    }

    /// Agent `id` now runs in partition `partition` (a new one), slot 0
    /// there; its old slot stays taken (the runtime's table keeps its
    /// numbering) but names nobody. Returns its new identity.
    pub(crate) fn relocate(&mut self, id: AgentId, partition: usize) -> Option<AgentInfo> {
        if self.slots.len() <= partition {
            self.slots.resize(partition + 1, Vec::new());
            self.running.resize(partition + 1, AgentSlot::FIRST);
        }
        let slot = AgentSlot(u16::try_from(self.slots[partition].len()).ok()?);
        let agent = self.agents.get_mut(usize::try_from(id.0).ok()?)?;
        agent.partition = partition;
        agent.slot = slot;
        self.slots[partition].push(id);
        Some(*agent)
    }

    /// The agent moves carried out so far, oldest first.
    pub fn moves(&self) -> &[crate::domains::migrate::Move] {
        &self.moves
    }

    /// Partition `partition` has an agent table mapped.
    pub(crate) fn mark_table(&mut self, partition: usize) {
        if self.tables.len() <= partition {
            self.tables.resize(partition + 1, false);
        }
        self.tables[partition] = true;
    }

    /// Whether partition `partition` has an agent table (several agents, or
    /// one in a bundle that evaluates coherence).
    pub fn has_table(&self, partition: usize) -> bool {
        self.tables.get(partition).copied().unwrap_or(false)
    }

    /// How many slots partition `partition`'s agents take (a slot an agent
    /// moved away from stays taken).
    pub fn agent_count(&self, partition: usize) -> usize {
        self.slots.get(partition).map_or(0, Vec::len)
    }

    /// Whether partition `partition` runs more than one agent.
    pub fn is_multi_agent(&self, partition: usize) -> bool {
        self.agent_count(partition) > 1
    }

    /// The agent of partition `partition` running now.
    pub fn running(&self, partition: usize) -> AgentSlot {
        self.running.get(partition).copied().unwrap_or(AgentSlot::FIRST)
    }

    /// The coherence engine (its graph and per-domain reports).
    pub fn engine(&self) -> Option<&Coherence> {
        self.engine.as_ref()
    }

    /// The decisions witnessed so far (the last [`DECISIONS_KEPT`]).
    pub fn decisions(&self) -> &[DecisionRecord] {
        &self.decisions
    }

    /// Whether decisions are evaluated.
    pub fn evaluating(&self) -> bool {
        self.evaluating
    }
}

/// The agent making partition `idx`'s calls now.
pub(crate) fn caller<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> Endpoint {
    Endpoint { partition: hv.partitions[idx].id, slot: hv.domains.running(idx) }
}

/// `AgentSwitch`: `x1` = the slot of the agent whose calls follow.
pub(crate) fn switch<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let slot = u16::try_from(regs[0]).ok().map(AgentSlot).filter(|&s| hv.domains.agent_at(idx, s).is_some());
    match slot {
        None => deny(hv, idx, &w, HvError::InvalidArgument),
        Some(slot) => allow(hv, idx, &w, |hv| {
            if let Some(r) = hv.domains.running.get_mut(idx) {
                *r = slot;
            }
            // An arrived agent's first turn: its runtime restored it.
            crate::domains::migrate::arrived(hv, idx, slot);
            let listed = if hv.domains.has_table(idx) { hv.domains.agent_count(idx) } else { 0 };
            [crate::domains::migrate::switch_result(hv, idx, slot), u64::try_from(listed).unwrap_or(0), 0]
        }),
    }
}

/// Whether partition `idx`'s `Checkpoint` is refused (it runs several
/// agents; a departing agent's checkpoint is [`crate::domains::migrate`]'s).
pub(crate) fn refuses_checkpoint<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
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
            .filter(|&i| hv.partitions.get(i).is_some_and(|p| p.id == e.partition))
            .or_else(|| hv.partitions.iter().position(|p| p.id == e.partition))?;
        hv.domains.agent_at(idx, e.slot).map(|a| a.id)
    };
    let (Some(x), Some(y)) = (agent(from), agent(to)) else { return };
    let now = hv.arch.now_ns();
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    if let Some(engine) = hv.domains.engine.as_mut() {
        // An agent left out of a full graph, or a full edge table: that
        // message is not weighed.
        let _ = engine.record(x, y, bytes, now);
    }
}

/// Once per epoch (with [`BOOT_FLAG_COHERENCE`]): evaluate the graph and
/// witness every decision. Called from the run loop.
pub(crate) fn housekeeping<A: Arch>(hv: &mut Hypervisor<A>) {
    if !hv.domains.evaluating {
        return;
    }
    let now = hv.arch.now_ns();
    crate::domains::migrate::expire(hv, now);
    if now < hv.domains.next_evaluation_ns {
        return;
    }
    hv.domains.next_evaluation_ns = now.saturating_add(hv.domains.epoch_ns);
    let Some(engine) = hv.domains.engine.as_mut() else { return };
    let evaluation = engine.evaluate(now);
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
/// pending in the engine.
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
                if let Some(engine) = hv.domains.engine.as_mut() {
                    let _ = engine.cancel(decision.id());
                }
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
        if let Some(engine) = hv.domains.engine.as_mut() {
            let _ = engine.cancel(decision.id());
        }
    }
    print_decision(hv, &record, carried);
    if hv.domains.decisions.len() == DECISIONS_KEPT {
        hv.domains.decisions.remove(0);
    }
    hv.domains.decisions.push(record);
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
        hv.partitions.iter().find(|p| p.id == id).map_or([0u8; 32], |p| p.desc.name)
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
                    crate::hypervisor::name_str(&this),
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
                    crate::hypervisor::name_str(&from),
                    r.partition.0,
                    crate::hypervisor::name_str(&this),
                    Units(r.cut),
                    Units(r.internal)
                ),
            );
        }
    }
}
