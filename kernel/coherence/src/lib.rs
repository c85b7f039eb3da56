//! Coherence domains (docs/DESIGN.md section 8): which agents should share a
//! partition, decided from the traffic they really exchange.
//!
//! A *coherence domain* is the set of agents that share one partition; its
//! [`DomainId`] is the partition's id. The kernel feeds every delivered
//! channel message into a [`CommGraph`]; periodically it asks a
//! [`Coherence`] evaluator to [`evaluate`](Coherence::evaluate) the graph, and
//! applies the [`Decision`]s it returns (a split moves the agents on the
//! lighter side of a domain's weakest cut to a new partition; a merge moves
//! one partition's agents into another), witnessing each one with its cut
//! value ([`Decision::witness_args`]).
//!
//! * [`weight`] — traffic as fixed-point [`Weight`]s, and what a message costs.
//! * [`decay`] — exponential decay by epochs, in integer arithmetic.
//! * [`graph`] — the communication graph of agents.
//! * [`mincut`] — exact global minimum cut (Stoer–Wagner with
//!   Nagamochi–Ono–Ibaraki contraction) in preallocated buffers, under a
//!   deterministic work budget.
//! * [`policy`] — split and merge thresholds and their hysteresis.
//! * [`decision`] — the decision records the kernel applies and witnesses.
//! * [`evaluator`] — the evaluation loop and its per-domain state.
//! * [`priority`] — the scheduler's blend of deadline urgency and cut pressure.
//! * [`fair`] — virtual-runtime fair share among runnable entities.
//!
//! Everything is integer arithmetic, so a decision is the same on the host and
//! on the soft-float EL2 target, and the same when a run is replayed. Time is
//! always a parameter (nanoseconds since boot); there is no global state.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod decay;
pub mod decision;
pub mod evaluator;
pub mod fair;
pub mod graph;
pub mod ids;
pub mod mincut;
pub mod policy;
pub mod priority;
pub mod weight;

#[cfg(test)]
mod tests;

pub use decay::{DecayPolicy, Retention};
pub use decision::{AgentList, Decision, DecisionId, MergeDecision, SplitDecision};
pub use evaluator::{
    ApplyError, Coherence, CutReport, CutResult, DomainReport, Evaluation, MAX_DECISIONS,
};
pub use fair::{FairError, FairShare, SchedEntity, ShareWeight, WeightCurve};
pub use graph::{CommGraph, EdgeTraffic, GraphError, GraphLimits};
pub use ids::{AgentId, DomainId};
pub use mincut::{
    CutError, CutGraph, CutOutcome, MinCut, MinCutSolver, NodeSet, Strategy, WorkBudget,
};
pub use policy::{CoherencePolicy, MergePolicy, Permille, PolicyError, SplitPolicy};
pub use priority::{BlendPolicy, Hundredths, Priority};
pub use weight::{TrafficPolicy, Weight};
