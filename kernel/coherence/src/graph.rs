//! The communication graph: agents as nodes, decayed traffic as edge weights.
//!
//! Edges are undirected (traffic a→b and b→a add to the same edge) and kept
//! in one vector sorted by their (lower id, higher id) pair, so a message is
//! accounted in `O(log E)` without allocating: both tables are allocated at
//! their full [`GraphLimits`] when the graph is made. When the edge table is
//! full, a new pair replaces the lightest edge if that edge weighs no more
//! than the new message; otherwise the sample is refused
//! ([`GraphError::EdgeTableFull`]). Traffic is advice for placement, never
//! accounting: losing a light edge costs at most a less informed decision.

use alloc::vec::Vec;

use crate::decay::{DecayPolicy, Retention};
use crate::ids::{AgentId, DomainId};
use crate::weight::{TrafficPolicy, Weight};

/// Table sizes, fixed when the graph is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphLimits {
    /// Most agents in the whole system.
    pub max_agents: usize,
    /// Most pairs of agents with traffic between them.
    pub max_edges: usize,
}

impl GraphLimits {
    /// 256 agents, 2 048 communicating pairs (eight peers per agent): 66 KiB
    /// of graph tables, ≈ 390 KiB for a whole [`Coherence`] evaluator
    /// ([`Coherence::footprint_bytes`]).
    ///
    /// [`Coherence`]: crate::evaluator::Coherence
    /// [`Coherence::footprint_bytes`]: crate::evaluator::Coherence::footprint_bytes
    pub const DEFAULT: GraphLimits = GraphLimits {
        max_agents: 256,
        max_edges: 2048,
    };
}

impl Default for GraphLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why the graph refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphError {
    /// No agent with this id was added.
    UnknownAgent(AgentId),
    /// An agent with this id is already in the graph.
    DuplicateAgent(AgentId),
    /// The agent table holds `capacity` agents already.
    AgentTableFull { capacity: usize },
    /// The edge table holds `capacity` edges, all heavier than the new sample.
    EdgeTableFull { capacity: usize },
    /// An agent's messages to itself are not traffic between agents.
    SelfTraffic(AgentId),
}

/// The traffic between two agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeTraffic {
    /// The lower agent id.
    pub a: AgentId,
    /// The higher agent id.
    pub b: AgentId,
    /// Decayed weight of the messages exchanged (both directions).
    pub weight: Weight,
    /// Messages exchanged since the edge appeared, not decayed.
    pub messages: u64,
    /// Payload bytes exchanged since the edge appeared, not decayed.
    pub bytes: u64,
}

impl EdgeTraffic {
    fn key(&self) -> (AgentId, AgentId) {
        (self.a, self.b)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AgentEntry {
    id: AgentId,
    domain: DomainId,
}

/// The weighted communication graph of all agents.
#[derive(Clone, Debug)]
pub struct CommGraph {
    agents: Vec<AgentEntry>,
    edges: Vec<EdgeTraffic>,
    limits: GraphLimits,
    traffic: TrafficPolicy,
    decay: DecayPolicy,
    /// The epoch every stored weight is expressed in.
    epoch: u64,
}

impl CommGraph {
    /// An empty graph with its tables allocated to `limits`.
    pub fn new(limits: GraphLimits, traffic: TrafficPolicy, decay: DecayPolicy) -> Self {
        Self {
            agents: Vec::with_capacity(limits.max_agents),
            edges: Vec::with_capacity(limits.max_edges),
            limits,
            traffic,
            decay,
            epoch: 0,
        }
    }

    /// Bytes allocated for the graph's tables.
    pub fn footprint_bytes(&self) -> usize {
        self.agents.capacity() * core::mem::size_of::<AgentEntry>()
            + self.edges.capacity() * core::mem::size_of::<EdgeTraffic>()
    }

    /// The table sizes.
    pub fn limits(&self) -> GraphLimits {
        self.limits
    }

    /// The decay rule in force.
    pub fn decay(&self) -> DecayPolicy {
        self.decay
    }

    /// The epoch the weights are expressed in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn agent_index(&self, id: AgentId) -> Result<usize, usize> {
        self.agents.binary_search_by_key(&id, |a| a.id)
    }

    /// Add `agent` to `domain`.
    pub fn add_agent(&mut self, agent: AgentId, domain: DomainId) -> Result<(), GraphError> {
        match self.agent_index(agent) {
            Ok(_) => Err(GraphError::DuplicateAgent(agent)),
            Err(_) if self.agents.len() >= self.limits.max_agents => {
                Err(GraphError::AgentTableFull {
                    capacity: self.limits.max_agents,
                })
            }
            Err(at) => {
                self.agents.insert(at, AgentEntry { id: agent, domain });
                Ok(())
            }
        }
    }

    /// Remove `agent` and every edge it has.
    pub fn remove_agent(&mut self, agent: AgentId) -> Result<(), GraphError> {
        let at = self
            .agent_index(agent)
            .map_err(|_| GraphError::UnknownAgent(agent))?;
        self.agents.remove(at);
        self.edges.retain(|e| e.a != agent && e.b != agent);
        Ok(())
    }

    /// Move `agent` to domain `to` (after its migration); its edges stay.
    /// Returns the domain it left.
    pub fn move_agent(&mut self, agent: AgentId, to: DomainId) -> Result<DomainId, GraphError> {
        let at = self
            .agent_index(agent)
            .map_err(|_| GraphError::UnknownAgent(agent))?;
        Ok(core::mem::replace(&mut self.agents[at].domain, to))
    }

    /// The domain `agent` belongs to.
    pub fn domain_of(&self, agent: AgentId) -> Option<DomainId> {
        self.agent_index(agent).ok().map(|i| self.agents[i].domain)
    }

    /// Every agent and its domain, by agent id.
    pub fn agents(&self) -> impl Iterator<Item = (AgentId, DomainId)> + '_ {
        self.agents.iter().map(|a| (a.id, a.domain))
    }

    /// The agents of `domain`, by id.
    pub fn agents_in(&self, domain: DomainId) -> impl Iterator<Item = AgentId> + '_ {
        self.agents
            .iter()
            .filter(move |a| a.domain == domain)
            .map(|a| a.id)
    }

    /// Every edge, by (lower id, higher id).
    pub fn edges(&self) -> &[EdgeTraffic] {
        &self.edges
    }

    /// The edge between `x` and `y`, if they exchanged anything not yet
    /// decayed away.
    pub fn edge(&self, x: AgentId, y: AgentId) -> Option<&EdgeTraffic> {
        let key = (x.min(y), x.max(y));
        self.edges
            .binary_search_by_key(&key, EdgeTraffic::key)
            .ok()
            .map(|i| &self.edges[i])
    }

    /// Account one delivered message of `bytes` bytes from `from` to `to` at
    /// `now_ns`. Decays the graph first if an epoch boundary has passed.
    pub fn record(
        &mut self,
        from: AgentId,
        to: AgentId,
        bytes: u32,
        now_ns: u64,
    ) -> Result<(), GraphError> {
        if from == to {
            return Err(GraphError::SelfTraffic(from));
        }
        for agent in [from, to] {
            self.agent_index(agent)
                .map_err(|_| GraphError::UnknownAgent(agent))?;
        }
        self.advance(now_ns);
        let cost = self.traffic.cost(bytes);
        let key = (from.min(to), from.max(to));
        let at = match self.edges.binary_search_by_key(&key, EdgeTraffic::key) {
            Ok(i) => {
                let e = &mut self.edges[i];
                e.weight = e.weight.edge_add(cost);
                e.messages = e.messages.saturating_add(1);
                e.bytes = e.bytes.saturating_add(u64::from(bytes));
                return Ok(());
            }
            Err(at) if self.edges.len() < self.limits.max_edges => at,
            Err(_) => {
                self.evict_lightest(cost)?;
                self.edges
                    .binary_search_by_key(&key, EdgeTraffic::key)
                    .unwrap_err()
            }
        };
        self.edges.insert(
            at,
            EdgeTraffic {
                a: key.0,
                b: key.1,
                weight: cost,
                messages: 1,
                bytes: u64::from(bytes),
            },
        );
        Ok(())
    }

    /// Make room for a new edge of weight `cost` by dropping the lightest
    /// edge (the first of equals), if it weighs no more than `cost`.
    fn evict_lightest(&mut self, cost: Weight) -> Result<(), GraphError> {
        let full = GraphError::EdgeTableFull {
            capacity: self.limits.max_edges,
        };
        let (at, lightest) = self
            .edges
            .iter()
            .enumerate()
            .min_by_key(|(i, e)| (e.weight, *i))
            .map(|(i, e)| (i, e.weight))
            .ok_or(full)?;
        if lightest > cost {
            return Err(full);
        }
        self.edges.remove(at);
        Ok(())
    }

    /// Bring every weight to the epoch of `now_ns` (see [`crate::decay`]);
    /// edges that decay to nothing are dropped. Time never runs backwards:
    /// an earlier `now_ns` changes nothing.
    pub fn advance(&mut self, now_ns: u64) {
        let epoch = self.decay.epoch_of(now_ns);
        if epoch <= self.epoch {
            return;
        }
        let factor = self.decay.factor(epoch - self.epoch);
        self.epoch = epoch;
        if factor == Retention::ONE {
            return;
        }
        for e in &mut self.edges {
            e.weight = Weight::from_raw(factor.apply(e.weight.raw()));
        }
        self.edges.retain(|e| !e.weight.is_zero());
    }

    /// Traffic between agents of `domain`.
    pub fn internal_traffic(&self, domain: DomainId) -> Weight {
        self.edges
            .iter()
            .filter(|e| self.domain_of(e.a) == Some(domain) && self.domain_of(e.b) == Some(domain))
            .fold(Weight::ZERO, |s, e| s.saturating_add(e.weight))
    }

    /// Traffic between agents of `x` and agents of `y` (`x != y`).
    pub fn cross_traffic(&self, x: DomainId, y: DomainId) -> Weight {
        self.edges
            .iter()
            .filter(|e| {
                let (da, db) = (self.domain_of(e.a), self.domain_of(e.b));
                x != y && ((da == Some(x) && db == Some(y)) || (da == Some(y) && db == Some(x)))
            })
            .fold(Weight::ZERO, |s, e| s.saturating_add(e.weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AgentId = AgentId(1);
    const B: AgentId = AgentId(2);
    const C: AgentId = AgentId(3);
    const P1: DomainId = DomainId(1);
    const P2: DomainId = DomainId(2);
    const EPOCH: u64 = 1_000;

    fn graph(limits: GraphLimits, retention: Retention) -> CommGraph {
        let decay = DecayPolicy::new(EPOCH, retention).unwrap();
        let mut g = CommGraph::new(limits, TrafficPolicy::DEFAULT, decay);
        g.add_agent(A, P1).unwrap();
        g.add_agent(B, P1).unwrap();
        g.add_agent(C, P2).unwrap();
        g
    }

    #[test]
    fn traffic_accumulates_on_one_undirected_edge() {
        let mut g = graph(GraphLimits::DEFAULT, Retention::ONE);
        g.record(A, B, 0, 0).unwrap();
        g.record(B, A, 1024, 10).unwrap();
        let e = *g.edge(B, A).unwrap();
        assert_eq!((e.a, e.b), (A, B));
        assert_eq!(e.weight, Weight::from_units(3));
        assert_eq!((e.messages, e.bytes), (2, 1024));
        assert_eq!(g.edges().len(), 1);
        assert!(g.edge(A, C).is_none());
    }

    #[test]
    fn bad_samples_are_refused_and_change_nothing() {
        let mut g = graph(GraphLimits::DEFAULT, Retention::ONE);
        assert_eq!(g.record(A, A, 8, 0), Err(GraphError::SelfTraffic(A)));
        assert_eq!(
            g.record(A, AgentId(9), 8, 0),
            Err(GraphError::UnknownAgent(AgentId(9)))
        );
        assert_eq!(g.add_agent(A, P2), Err(GraphError::DuplicateAgent(A)));
        assert!(g.edges().is_empty());
        assert_eq!(g.domain_of(A), Some(P1));
    }

    #[test]
    fn decay_halves_per_epoch_and_drops_dead_edges() {
        let mut g = graph(GraphLimits::DEFAULT, Retention::HALF);
        for _ in 0..8 {
            g.record(A, B, 0, 0).unwrap();
        }
        g.record(A, C, 0, 0).unwrap();
        assert_eq!(g.edge(A, B).unwrap().weight, Weight::from_units(8));
        // Still epoch 0: nothing decays.
        g.advance(EPOCH - 1);
        assert_eq!(g.edge(A, B).unwrap().weight, Weight::from_units(8));
        g.advance(EPOCH);
        assert_eq!(g.edge(A, B).unwrap().weight, Weight::from_units(4));
        // Two epochs at once: a quarter.
        g.advance(3 * EPOCH + 5);
        assert_eq!(g.edge(A, B).unwrap().weight, Weight::from_units(1));
        assert_eq!(
            g.edge(A, C).unwrap().weight,
            Weight::from_raw(Weight::UNIT.raw() / 8)
        );
        // Time running backwards changes nothing.
        g.advance(0);
        assert_eq!(g.epoch(), 3);
        // 2^16 raw halves to nothing after 17 epochs; the edge goes.
        g.advance(20 * EPOCH);
        assert!(g.edge(A, B).is_none() && g.edge(A, C).is_none());
        assert!(g.edges().is_empty());
    }

    #[test]
    fn recording_decays_first_then_adds() {
        let mut g = graph(GraphLimits::DEFAULT, Retention::HALF);
        g.record(A, B, 0, 0).unwrap();
        g.record(A, B, 0, 0).unwrap();
        g.record(A, B, 0, EPOCH).unwrap();
        // 2 halved to 1, plus the new message.
        assert_eq!(g.edge(A, B).unwrap().weight, Weight::from_units(2));
        assert_eq!(g.edge(A, B).unwrap().messages, 3);
    }

    #[test]
    fn a_full_edge_table_replaces_its_lightest_edge_only_if_lighter() {
        let limits = GraphLimits {
            max_agents: 8,
            max_edges: 2,
        };
        let mut g = graph(limits, Retention::ONE);
        let d = AgentId(4);
        g.add_agent(d, P2).unwrap();
        g.record(A, B, 0, 0).unwrap();
        g.record(A, B, 0, 0).unwrap();
        g.record(A, C, 0, 0).unwrap();
        // A one-unit sample replaces the one-unit edge A-C.
        g.record(B, d, 0, 0).unwrap();
        assert!(g.edge(A, C).is_none());
        assert!(g.edge(B, d).is_some());
        g.record(B, d, 0, 0).unwrap();
        // Every edge now weighs 2; a one-unit sample is refused.
        assert_eq!(
            g.record(C, d, 0, 0),
            Err(GraphError::EdgeTableFull { capacity: 2 })
        );
        assert_eq!(g.edges().len(), 2);
        // The table never grew past its allocation.
        assert!(g.edges.capacity() == 2);
    }

    #[test]
    fn agents_move_and_leave_with_their_edges() {
        let limits = GraphLimits {
            max_agents: 3,
            max_edges: 8,
        };
        let mut g = graph(limits, Retention::ONE);
        assert_eq!(
            g.add_agent(AgentId(7), P1),
            Err(GraphError::AgentTableFull { capacity: 3 })
        );
        g.record(A, B, 0, 0).unwrap();
        g.record(B, C, 0, 0).unwrap();
        g.record(B, C, 0, 0).unwrap();
        assert_eq!(g.internal_traffic(P1), Weight::from_units(1));
        assert_eq!(g.cross_traffic(P1, P2), Weight::from_units(2));
        assert_eq!(g.cross_traffic(P2, P1), Weight::from_units(2));
        assert_eq!(g.move_agent(B, P2), Ok(P1));
        assert_eq!(g.internal_traffic(P2), Weight::from_units(2));
        assert_eq!(g.cross_traffic(P1, P2), Weight::from_units(1));
        assert_eq!(g.agents_in(P2).collect::<Vec<_>>(), [B, C]);
        g.remove_agent(B).unwrap();
        assert!(g.edges().is_empty());
        assert_eq!(g.remove_agent(B), Err(GraphError::UnknownAgent(B)));
    }
}
