//! The coherence evaluator: the graph, the solver, the policy and the state each
//! domain carries between evaluations (holds, cooldowns, pending decisions,
//! the last cut).
//!
//! The kernel's side of the protocol:
//!
//! 1. [`Coherence::record`] on every delivered message between two agents;
//! 2. [`Coherence::evaluate`] now and then (say every epoch) — it returns
//!    at most [`MAX_DECISIONS`] decisions, no domain in two of them;
//! 3. for each decision, at the agents' next turn boundary, either carry it
//!    out (snapshot, restore elsewhere, witness with
//!    [`Decision::witness_args`]) and call [`Coherence::apply_split`] /
//!    [`Coherence::apply_merge`], or give it up with [`Coherence::cancel`].
//!    Until then the domains involved are not evaluated again.
//!
//! Evaluation allocates nothing: its scratch tables are sized from the
//! graph's limits when the evaluator is made.

use alloc::vec::Vec;

use crate::decision::{AgentList, Decision, DecisionId, MergeDecision, SplitDecision};
use crate::graph::{CommGraph, GraphError};
use crate::ids::{AgentId, DomainId};
use crate::mincut::{CutError, CutGraph, CutOutcome, MinCutSolver, NodeSet, MAX_NODES};
use crate::policy::{CoherencePolicy, MergePolicy, PolicyError, SplitPolicy};
use crate::priority::Hundredths;
use crate::weight::Weight;

/// Most decisions one evaluation returns.
pub const MAX_DECISIONS: usize = 4;

/// The last attempt to cut a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutReport {
    /// When it was made.
    pub at_ns: u64,
    pub result: CutResult,
}

/// What cutting a domain gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutResult {
    /// The exact minimum cut.
    Cut {
        /// Its value.
        value: Weight,
        /// The domain's internal traffic.
        internal: Weight,
        /// Agents on the lighter side (the ones a split would move).
        lighter: usize,
        /// Work units spent.
        work: u64,
    },
    /// The work budget would have been exceeded: no decision.
    OverBudget { work: u64 },
    /// More agents than the solver takes ([`MAX_NODES`]): no decision.
    TooLarge { agents: usize },
    /// The domain's graph could not be built: no decision.
    Refused(CutError),
}

/// What [`Coherence::domain_report`] shows about a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainReport {
    pub domain: DomainId,
    /// Agents in it, at the last evaluation.
    pub agents: usize,
    /// Traffic among its agents, at the last evaluation.
    pub internal: Weight,
    /// Traffic between its agents and other domains', at the last evaluation.
    pub external: Weight,
    /// The last cut attempted, if any.
    pub last_cut: Option<CutReport>,
    /// The decision it waits on, if any.
    pub pending: Option<DecisionId>,
    /// Not evaluated before this time.
    pub cooldown_until: u64,
}

impl DomainReport {
    /// Share of the domain's traffic that crosses its boundary: the live
    /// cut pressure fed to [`Priority::of_partition`](crate::priority::Priority::of_partition).
    pub fn live_pressure(&self) -> Hundredths {
        let total = u128::from(self.internal.raw()) + u128::from(self.external.raw());
        if total == 0 {
            return Hundredths::ZERO;
        }
        let share = u128::from(self.external.raw()) * 100 / total;
        Hundredths::saturating(u8::try_from(share).unwrap_or(u8::MAX))
    }
}

/// What one evaluation found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Decisions to carry out; no domain appears in two.
    pub decisions: heapless::Vec<Decision, MAX_DECISIONS>,
    /// Domains whose minimum cut was computed.
    pub cuts: u32,
    /// Domains left undecided because their cut was over budget or too large.
    pub undecided: u32,
    /// Work units spent on cuts.
    pub work: u64,
}

/// Why a decision could not be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// The decision is not the one pending on its domains (applied,
    /// cancelled, or never made).
    NotPending(DecisionId),
    /// The split's new domain already has agents, or is the split domain.
    DomainInUse(DomainId),
    /// An agent the decision names is no longer where it was; cancel it.
    Stale(AgentId),
    Graph(GraphError),
}

#[derive(Clone, Copy, Debug)]
struct DomainState {
    id: DomainId,
    agents: usize,
    internal: Weight,
    external: Weight,
    /// Since when the split condition has held without a break.
    split_since: Option<u64>,
    cooldown_until: u64,
    pending: Option<DecisionId>,
    last_cut: Option<CutReport>,
}

impl DomainState {
    fn new(id: DomainId) -> Self {
        Self {
            id,
            agents: 0,
            internal: Weight::ZERO,
            external: Weight::ZERO,
            split_since: None,
            cooldown_until: 0,
            pending: None,
            last_cut: None,
        }
    }

    fn idle(&self, now_ns: u64) -> bool {
        self.pending.is_none() && now_ns >= self.cooldown_until
    }
}

/// A pair of domains whose merge condition has held since `since`.
#[derive(Clone, Copy, Debug)]
struct HeldPair {
    a: DomainId,
    b: DomainId,
    since: u64,
}

/// A merge ready to be decided this round.
#[derive(Clone, Copy, Debug)]
struct MergeCandidate {
    a: DomainId,
    b: DomainId,
    cross: Weight,
    internal: Weight,
}

/// Per-evaluation tables, allocated once.
#[derive(Clone, Debug)]
struct Scratch {
    /// Every agent as (domain, agent), sorted.
    members: Vec<(DomainId, AgentId)>,
    /// Edges inside a domain as (domain, a, b, weight), sorted.
    internal: Vec<(DomainId, AgentId, AgentId, Weight)>,
    /// Traffic between two domains as (lower, higher, weight), one per pair.
    cross: Vec<(DomainId, DomainId, Weight)>,
    held: Vec<HeldPair>,
    ready: Vec<MergeCandidate>,
}

/// The coherence evaluator.
#[derive(Clone, Debug)]
pub struct Coherence {
    graph: CommGraph,
    policy: CoherencePolicy,
    input: CutGraph,
    solver: MinCutSolver,
    domains: Vec<DomainState>,
    held: Vec<HeldPair>,
    scratch: Scratch,
    next_id: u64,
}

impl Coherence {
    /// An evaluator over `graph` (usually empty) with `policy`, its tables
    /// sized from the graph's limits.
    pub fn new(graph: CommGraph, policy: CoherencePolicy) -> Result<Self, PolicyError> {
        policy.validate()?;
        let limits = graph.limits();
        let domains = limits.max_agents + 2 * MAX_DECISIONS;
        Ok(Self {
            graph,
            policy,
            input: CutGraph::new(),
            solver: MinCutSolver::new(),
            domains: Vec::with_capacity(domains),
            held: Vec::with_capacity(limits.max_edges),
            scratch: Scratch {
                members: Vec::with_capacity(limits.max_agents),
                internal: Vec::with_capacity(limits.max_edges),
                cross: Vec::with_capacity(limits.max_edges),
                held: Vec::with_capacity(limits.max_edges),
                ready: Vec::with_capacity(limits.max_edges),
            },
            next_id: 1,
        })
    }

    /// The graph.
    pub fn graph(&self) -> &CommGraph {
        &self.graph
    }

    /// The graph, to add, move or remove agents.
    pub fn graph_mut(&mut self) -> &mut CommGraph {
        &mut self.graph
    }

    /// Bytes the evaluator allocated when it was made (graph, solver, scratch
    /// tables); evaluation allocates nothing more.
    pub fn footprint_bytes(&self) -> usize {
        use core::mem::size_of;
        let sc = &self.scratch;
        self.graph.footprint_bytes()
            + self.input.footprint_bytes()
            + self.solver.footprint_bytes()
            + self.domains.capacity() * size_of::<DomainState>()
            + (self.held.capacity() + sc.held.capacity()) * size_of::<HeldPair>()
            + sc.members.capacity() * size_of::<(DomainId, AgentId)>()
            + sc.internal.capacity() * size_of::<(DomainId, AgentId, AgentId, Weight)>()
            + sc.cross.capacity() * size_of::<(DomainId, DomainId, Weight)>()
            + sc.ready.capacity() * size_of::<MergeCandidate>()
    }

    /// The policy.
    pub fn policy(&self) -> &CoherencePolicy {
        &self.policy
    }

    /// Account a delivered message (see [`CommGraph::record`]).
    pub fn record(
        &mut self,
        from: AgentId,
        to: AgentId,
        bytes: u32,
        now_ns: u64,
    ) -> Result<(), GraphError> {
        self.graph.record(from, to, bytes, now_ns)
    }

    fn state_index(&self, d: DomainId) -> Result<usize, usize> {
        self.domains.binary_search_by_key(&d, |s| s.id)
    }

    fn state_mut(&mut self, d: DomainId) -> &mut DomainState {
        let at = match self.state_index(d) {
            Ok(i) => i,
            Err(i) => {
                self.domains.insert(i, DomainState::new(d));
                i
            }
        };
        &mut self.domains[at]
    }

    /// What is known about `domain`, as of the last evaluation.
    pub fn domain_report(&self, domain: DomainId) -> Option<DomainReport> {
        let s = &self.domains[self.state_index(domain).ok()?];
        Some(DomainReport {
            domain: s.id,
            agents: s.agents,
            internal: s.internal,
            external: s.external,
            last_cut: s.last_cut,
            pending: s.pending,
            cooldown_until: s.cooldown_until,
        })
    }

    /// Every domain known at the last evaluation, by id.
    pub fn domains(&self) -> impl Iterator<Item = DomainReport> + '_ {
        self.domains.iter().filter_map(|s| self.domain_report(s.id))
    }

    /// Decay the graph to `now_ns`, cut the domains that may split, weigh
    /// the pairs that may merge, and return what should happen.
    pub fn evaluate(&mut self, now_ns: u64) -> Evaluation {
        self.graph.advance(now_ns);
        self.collect();
        let mut out = Evaluation::default();
        if let Some(split) = self.policy.split {
            for i in 0..self.domains.len() {
                self.consider_split(i, split, now_ns, &mut out);
            }
        }
        if let Some(merge) = self.policy.merge {
            self.consider_merges(merge, now_ns, &mut out);
        } else {
            self.held.clear();
        }
        out
    }

    /// Fill the scratch tables and each domain's counts from the graph.
    fn collect(&mut self) {
        let sc = &mut self.scratch;
        sc.members.clear();
        sc.members.extend(self.graph.agents().map(|(a, d)| (d, a)));
        sc.members.sort_unstable();
        sc.internal.clear();
        sc.cross.clear();
        for e in self.graph.edges() {
            // The graph drops an agent's edges with the agent.
            let (Some(da), Some(db)) = (self.graph.domain_of(e.a), self.graph.domain_of(e.b))
            else {
                continue;
            };
            if da == db {
                sc.internal.push((da, e.a, e.b, e.weight));
            } else {
                sc.cross.push((da.min(db), da.max(db), e.weight));
            }
        }
        sc.internal.sort_unstable_by_key(|&(d, a, b, _)| (d, a, b));
        sc.cross.sort_unstable_by_key(|&(x, y, _)| (x, y));
        sc.cross.dedup_by(|later, earlier| {
            let same = (later.0, later.1) == (earlier.0, earlier.1);
            if same {
                earlier.2 = earlier.2.saturating_add(later.2);
            }
            same
        });

        // Domains: keep those with agents or a pending decision.
        let members = &self.scratch.members;
        self.domains.retain(|s| {
            s.pending.is_some() || members.binary_search_by_key(&s.id, |m| m.0).is_ok()
        });
        for s in &mut self.domains {
            (s.agents, s.internal, s.external) = (0, Weight::ZERO, Weight::ZERO);
        }
        for i in 0..self.scratch.members.len() {
            let d = self.scratch.members[i].0;
            self.state_mut(d).agents += 1;
        }
        for i in 0..self.scratch.internal.len() {
            let (d, _, _, w) = self.scratch.internal[i];
            let s = self.state_mut(d);
            s.internal = s.internal.saturating_add(w);
        }
        for i in 0..self.scratch.cross.len() {
            let (x, y, w) = self.scratch.cross[i];
            for d in [x, y] {
                let s = self.state_mut(d);
                s.external = s.external.saturating_add(w);
            }
        }
    }

    fn consider_split(&mut self, i: usize, policy: SplitPolicy, now_ns: u64, out: &mut Evaluation) {
        let s = self.domains[i];
        if !s.idle(now_ns) || s.agents < 2 || s.internal < policy.min_internal {
            self.domains[i].split_since = None;
            return;
        }
        let members = domain_slice(&self.scratch.members, s.id, |m| m.0);
        let result = self.cut_domain(s.id, members.len());
        let report = match &result {
            Ok(cut) => cut.report,
            Err(refusal) => *refusal,
        };
        self.domains[i].last_cut = Some(CutReport {
            at_ns: now_ns,
            result: report,
        });
        let Ok(cut) = result else {
            out.undecided += 1;
            self.domains[i].split_since = None;
            return;
        };
        out.cuts += 1;
        out.work += cut.work;
        if !policy.max_cut_share.value_below(cut.value, s.internal) {
            self.domains[i].split_since = None;
            return;
        }
        let since = *self.domains[i].split_since.get_or_insert(now_ns);
        if now_ns.saturating_sub(since) < policy.hold_ns || out.decisions.is_full() {
            return;
        }
        let members = domain_slice(&self.scratch.members, s.id, |m| m.0);
        let mut movers = AgentList::new();
        for node in cut.movers.iter() {
            // At most MAX_NODES movers, the list's capacity.
            let _ = movers.push(members[node].1);
        }
        let stayers = members.len() - movers.len();
        let id = self.take_id();
        let decision = Decision::Split(SplitDecision {
            id,
            domain: s.id,
            stayers,
            movers,
            cut: cut.value,
            internal: s.internal,
            work: cut.work,
            at_ns: now_ns,
        });
        if out.decisions.push(decision).is_ok() {
            let st = &mut self.domains[i];
            st.pending = Some(id);
            st.split_since = None;
        }
    }

    /// The minimum cut of domain `d` (its `n` agents are its slice of the
    /// member table, its edges its slice of the internal-edge table).
    fn cut_domain(&mut self, d: DomainId, n: usize) -> Result<DomainCut, CutResult> {
        if n > MAX_NODES {
            return Err(CutResult::TooLarge { agents: n });
        }
        let members = domain_slice(&self.scratch.members, d, |m| m.0);
        let edges = domain_slice(&self.scratch.internal, d, |e| e.0);
        self.input.reset(n).map_err(CutResult::Refused)?;
        for &(_, a, b, w) in edges {
            let node = |x: AgentId| members.binary_search_by_key(&x, |m| m.1);
            if let (Ok(i), Ok(j)) = (node(a), node(b)) {
                self.input
                    .add_edge(i, j, w.raw())
                    .map_err(CutResult::Refused)?;
            }
        }
        let internal = Weight::from_raw(self.input.total());
        match self
            .solver
            .solve(&self.input, self.policy.cut_budget)
            .map_err(CutResult::Refused)?
        {
            CutOutcome::OverBudget { work } => Err(CutResult::OverBudget { work }),
            CutOutcome::Cut(c) => {
                let movers = if c.value == 0 {
                    all_but_heaviest_component(&self.input)
                } else {
                    lighter_side(&self.input, c.side, c.other_side())
                };
                let value = Weight::from_raw(c.value);
                let report = CutResult::Cut {
                    value,
                    internal,
                    lighter: movers.len(),
                    work: c.work,
                };
                Ok(DomainCut {
                    value,
                    movers,
                    work: c.work,
                    report,
                })
            }
        }
    }

    fn consider_merges(&mut self, policy: MergePolicy, now_ns: u64, out: &mut Evaluation) {
        // Pairs meeting the condition now keep (or start) their hold; the
        // others lose it.
        self.scratch.held.clear();
        self.scratch.ready.clear();
        for k in 0..self.scratch.cross.len() {
            let (a, b, cross) = self.scratch.cross[k];
            let (Ok(ia), Ok(ib)) = (self.state_index(a), self.state_index(b)) else {
                continue;
            };
            let (sa, sb) = (self.domains[ia], self.domains[ib]);
            let internal = sa.internal.saturating_add(sb.internal);
            let meets = sa.idle(now_ns)
                && sb.idle(now_ns)
                && sa.agents + sb.agents <= policy.max_agents
                && cross >= policy.min_cross
                && policy.min_cross_share.value_reaches(cross, internal);
            if !meets {
                continue;
            }
            let since = self
                .held
                .binary_search_by_key(&(a, b), |h| (h.a, h.b))
                .map_or(now_ns, |at| self.held[at].since);
            self.scratch.held.push(HeldPair { a, b, since });
            if now_ns.saturating_sub(since) >= policy.hold_ns {
                self.scratch.ready.push(MergeCandidate {
                    a,
                    b,
                    cross,
                    internal,
                });
            }
        }
        core::mem::swap(&mut self.held, &mut self.scratch.held);
        // Strongest attraction first: the highest cross / internal ratio,
        // then the most cross traffic, then the lowest ids.
        self.scratch.ready.sort_unstable_by(|x, y| {
            let lhs = u128::from(x.cross.raw()) * u128::from(y.internal.raw());
            let rhs = u128::from(y.cross.raw()) * u128::from(x.internal.raw());
            rhs.cmp(&lhs)
                .then(y.cross.cmp(&x.cross))
                .then((x.a, x.b).cmp(&(y.a, y.b)))
        });
        for k in 0..self.scratch.ready.len() {
            if out.decisions.is_full() {
                break;
            }
            let c = self.scratch.ready[k];
            let (Ok(ia), Ok(ib)) = (self.state_index(c.a), self.state_index(c.b)) else {
                continue;
            };
            if self.domains[ia].pending.is_some() || self.domains[ib].pending.is_some() {
                continue;
            }
            let (into, from) = if self.domains[ib].agents > self.domains[ia].agents {
                (c.b, c.a)
            } else {
                (c.a, c.b)
            };
            let id = self.take_id();
            let decision = Decision::Merge(MergeDecision {
                id,
                into,
                from,
                cross: c.cross,
                internal: c.internal,
                at_ns: now_ns,
            });
            if out.decisions.push(decision).is_ok() {
                self.domains[ia].pending = Some(id);
                self.domains[ib].pending = Some(id);
            }
        }
    }

    fn take_id(&mut self) -> DecisionId {
        let id = DecisionId(self.next_id);
        self.next_id += 1;
        id
    }

    fn check_pending(&self, d: DomainId, id: DecisionId) -> Result<usize, ApplyError> {
        match self.state_index(d) {
            Ok(i) if self.domains[i].pending == Some(id) => Ok(i),
            _ => Err(ApplyError::NotPending(id)),
        }
    }

    /// The kernel moved `decision.movers` into the new partition
    /// `new_domain`: record it and start both domains' cooldown.
    pub fn apply_split(
        &mut self,
        decision: &SplitDecision,
        new_domain: DomainId,
        now_ns: u64,
    ) -> Result<(), ApplyError> {
        self.check_pending(decision.domain, decision.id)?;
        if new_domain == decision.domain || self.graph.agents_in(new_domain).next().is_some() {
            return Err(ApplyError::DomainInUse(new_domain));
        }
        if let Some(&a) = decision
            .movers
            .iter()
            .find(|&&a| self.graph.domain_of(a) != Some(decision.domain))
        {
            return Err(ApplyError::Stale(a));
        }
        for &a in &decision.movers {
            self.graph
                .move_agent(a, new_domain)
                .map_err(ApplyError::Graph)?;
        }
        let until = now_ns.saturating_add(self.policy.cooldown_ns);
        for d in [decision.domain, new_domain] {
            let s = self.state_mut(d);
            s.pending = None;
            s.split_since = None;
            s.cooldown_until = until;
        }
        Ok(())
    }

    /// The kernel moved every agent of `decision.from` into `decision.into`:
    /// record it and start the merged domain's cooldown.
    pub fn apply_merge(&mut self, decision: &MergeDecision, now_ns: u64) -> Result<(), ApplyError> {
        self.check_pending(decision.into, decision.id)?;
        let from = self.check_pending(decision.from, decision.id)?;
        let mut moved = 0;
        loop {
            let next = self.graph.agents_in(decision.from).next();
            let Some(a) = next else { break };
            self.graph
                .move_agent(a, decision.into)
                .map_err(ApplyError::Graph)?;
            moved += 1;
        }
        self.domains.remove(from);
        let until = now_ns.saturating_add(self.policy.cooldown_ns);
        let s = self.state_mut(decision.into);
        s.pending = None;
        s.split_since = None;
        s.cooldown_until = until;
        s.agents += moved;
        Ok(())
    }

    /// The kernel will not carry out `id`: its domains are evaluated again
    /// from the next evaluation. Returns whether it was pending.
    pub fn cancel(&mut self, id: DecisionId) -> bool {
        let mut found = false;
        for s in self.domains.iter_mut().filter(|s| s.pending == Some(id)) {
            s.pending = None;
            found = true;
        }
        found
    }
}

/// A domain's cut, ready to become a decision.
struct DomainCut {
    value: Weight,
    /// Positions (in the domain's member slice) of the agents that would move.
    movers: NodeSet,
    work: u64,
    report: CutResult,
}

/// The entries of a table sorted by domain that belong to `d`.
fn domain_slice<T>(table: &[T], d: DomainId, key: impl Fn(&T) -> DomainId) -> &[T] {
    let start = table.partition_point(|t| key(t) < d);
    let end = table.partition_point(|t| key(t) <= d);
    &table[start..end]
}

/// Traffic touching the nodes of `s`: the sum of their weighted degrees.
fn volume(g: &CutGraph, s: NodeSet) -> u64 {
    s.iter()
        .map(|i| (0..g.nodes()).map(|j| g.weight(i, j)).sum::<u64>())
        .sum()
}

/// The side of a cut that moves: the one with less traffic touching it,
/// then the one with fewer nodes, then the one without node 0 (the domain's
/// lowest agent id stays).
fn lighter_side(g: &CutGraph, x: NodeSet, y: NodeSet) -> NodeSet {
    let key = |s: NodeSet| (volume(g, s), s.len(), s.contains(0));
    if key(x) < key(y) {
        x
    } else {
        y
    }
}

/// When the domain falls apart (a cut of zero), every way of grouping its
/// connected components is a minimum cut; the one that moves all the quiet
/// parts in one migration keeps the component with the most traffic (the
/// one with node 0 on a tie) and moves everything else.
fn all_but_heaviest_component(g: &CutGraph) -> NodeSet {
    let n = g.nodes();
    let all = NodeSet::EMPTY.complement(n);
    let mut adjacent = [0u64; MAX_NODES];
    for (i, adj) in adjacent.iter_mut().enumerate().take(n) {
        *adj = (0..n)
            .filter(|&j| g.weight(i, j) > 0)
            .fold(0, |m, j| m | 1 << j);
    }
    let (mut seen, mut keep, mut keep_volume) = (0u64, 0u64, 0u64);
    for start in 0..n {
        if seen & (1 << start) != 0 {
            continue;
        }
        let mut component = 1u64 << start;
        loop {
            let grown = NodeSet::from_bits(component)
                .iter()
                .fold(component, |m, i| m | adjacent[i]);
            if grown == component {
                break;
            }
            component = grown;
        }
        seen |= component;
        // Components are found in order of their lowest node: on a tie of
        // volume the earlier (node 0's) stays.
        let v = volume(g, NodeSet::from_bits(component));
        if keep == 0 || v > keep_volume {
            (keep, keep_volume) = (component, v);
        }
    }
    NodeSet::from_bits(keep).complement(n).intersect(all)
}
