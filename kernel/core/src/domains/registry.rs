//! The kernel's record of its agents and their domains: which agents each
//! partition runs, the communication graph, the coherence evaluator and the
//! decisions it took. Changed only through [`Domains`]' methods.

use alloc::vec::Vec;

use rvm_abi::bundle::BOOT_FLAG_COHERENCE;
use rvm_abi::witness::KernelEvent;
use rvm_coherence::{
    AgentId, Coherence, CoherencePolicy, CommGraph, DecayPolicy, DecisionId, DomainId, Evaluation, GraphLimits,
    MergeDecision, SplitDecision, TrafficPolicy, Weight,
};

use crate::channel::AgentSlot;
use crate::domains::moves::{Arrival, Departure, Move};
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
    evaluator: Option<Coherence>,
    /// Whether decisions are evaluated and witnessed ([`BOOT_FLAG_COHERENCE`]).
    evaluating: bool,
    epoch_ns: u64,
    next_evaluation_ns: u64,
    decisions: Vec<DecisionRecord>,
    /// The split being carried out: its mover leaves at its next turn boundary.
    departing: Option<Departure>,
    /// Moves carried out, oldest first.
    moves: Vec<Move>,
    /// Per partition (by position): whether an agent table is mapped.
    tables: Vec<bool>,
    /// An agent that arrived (a merge) and has not yet run its first turn:
    /// its snapshot stays mapped for its runtime to restore it.
    arrival: Option<Arrival>,
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
            evaluator: Coherence::new(graph, CoherencePolicy::DEFAULT).ok(),
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
        if let Some(evaluator) = self.evaluator.as_mut() {
            // A full graph leaves the agent out of it: its traffic is not
            // weighed, nothing else changes.
            let _ = evaluator.graph_mut().add_agent(agent.id, DomainId(id.0));
        }
        agent
    }

    /// Partition `partition` was refused: its agents leave the graph.
    pub fn forget_partition(&mut self, partition: usize) {
        if let Some(evaluator) = self.evaluator.as_mut() {
            for a in self.agents.iter().filter(|a| a.partition == partition) {
                let _ = evaluator.graph_mut().remove_agent(a.id);
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
    pub fn moves(&self) -> &[Move] {
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

    /// The coherence evaluator (its graph and per-domain reports).
    pub fn evaluator(&self) -> Option<&Coherence> {
        self.evaluator.as_ref()
    }

    /// The decisions witnessed so far (the last [`DECISIONS_KEPT`]).
    pub fn decisions(&self) -> &[DecisionRecord] {
        &self.decisions
    }

    /// Whether decisions are evaluated.
    pub fn evaluating(&self) -> bool {
        self.evaluating
    }

    /// Agent `slot` makes partition `idx`'s calls from now on.
    pub(crate) fn set_running(&mut self, idx: usize, slot: AgentSlot) {
        if let Some(r) = self.running.get_mut(idx) {
            *r = slot;
        }
    }

    /// Whether an epoch starts at `now` (the graph is evaluated once per
    /// epoch); if so, the next one is scheduled.
    pub(crate) fn start_epoch(&mut self, now: u64) -> bool {
        if now < self.next_evaluation_ns {
            return false;
        }
        self.next_evaluation_ns = now.saturating_add(self.epoch_ns);
        true
    }

    /// Keep `record` among the last [`DECISIONS_KEPT`] decisions.
    pub(crate) fn remember(&mut self, record: DecisionRecord) {
        if self.decisions.len() == DECISIONS_KEPT {
            self.decisions.remove(0);
        }
        self.decisions.push(record);
    }

    /// Weigh a message of `bytes` bytes from agent `from` to agent `to` in
    /// the graph. An agent left out of a full graph, or a full edge table:
    /// that message is not weighed.
    pub(crate) fn record_traffic(&mut self, from: AgentId, to: AgentId, bytes: u32, now: u64) {
        if let Some(evaluator) = self.evaluator.as_mut() {
            let _ = evaluator.record(from, to, bytes, now);
        }
    }

    /// Evaluate the graph at `now` (`None` without an evaluator).
    pub(crate) fn evaluate(&mut self, now: u64) -> Option<Evaluation> {
        self.evaluator.as_mut().map(|evaluator| evaluator.evaluate(now))
    }

    /// Decision `id` will not be carried out: the evaluator evaluates its
    /// domains again.
    pub(crate) fn cancel(&mut self, id: DecisionId) {
        if let Some(evaluator) = self.evaluator.as_mut() {
            let _ = evaluator.cancel(id);
        }
    }

    /// Split `decision` was carried out: its movers now form domain `into`.
    /// Only fails if the graph no longer matches the decision; the move
    /// stands either way (the graph then still lists the agent where it was).
    pub(crate) fn apply_split(&mut self, decision: &SplitDecision, into: DomainId, now: u64) {
        if let Some(evaluator) = self.evaluator.as_mut() {
            let _ = evaluator.apply_split(decision, into, now);
        }
    }

    /// Merge `decision` was carried out (as [`Domains::apply_split`]: the
    /// move stands even if the graph no longer matches).
    pub(crate) fn apply_merge(&mut self, decision: &MergeDecision, now: u64) {
        if let Some(evaluator) = self.evaluator.as_mut() {
            let _ = evaluator.apply_merge(decision, now);
        }
    }

    /// The move under way, if any: its mover leaves at its next turn boundary.
    pub fn departing(&self) -> Option<&Departure> {
        self.departing.as_ref()
    }

    /// Start move `dep` (one at a time: the caller checked none is under way).
    pub(crate) fn begin_departure(&mut self, dep: Departure) {
        self.departing = Some(dep);
    }

    /// The move under way is being carried out or abandoned: it is no
    /// longer pending.
    pub(crate) fn take_departure(&mut self) -> Option<Departure> {
        self.departing.take()
    }

    /// The agent that arrived (a merge) and has not run yet, if any.
    pub fn arrival(&self) -> Option<&Arrival> {
        self.arrival.as_ref()
    }

    /// Agent `a` arrived; its image stays mapped until its first turn.
    pub(crate) fn note_arrival(&mut self, a: Arrival) {
        self.arrival = Some(a);
    }

    /// The arrival ran its first turn (or its partition stopped): its image
    /// is handed back to be unmapped.
    pub(crate) fn take_arrival(&mut self) -> Option<Arrival> {
        self.arrival.take()
    }

    /// Record move `m`, carried out.
    pub(crate) fn record_move(&mut self, m: Move) {
        self.moves.push(m);
    }

    /// The last move took `took_ns` from its snapshot to its records.
    pub(crate) fn time_last_move(&mut self, took_ns: u64) {
        if let Some(last) = self.moves.last_mut() {
            last.took_ns = took_ns;
        }
    }
}
