//! Decisions: what the kernel is asked to do, and what it witnesses.

use rvm_abi::witness::KernelEvent;

use crate::ids::{AgentId, DomainId};
use crate::mincut::MAX_NODES;
use crate::weight::Weight;

/// Names one decision, so the kernel applies or cancels exactly the one it
/// was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DecisionId(pub u64);

/// Agents named by a decision.
pub type AgentList = heapless::Vec<AgentId, MAX_NODES>;

/// Split `domain`: move `movers` to a new partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitDecision {
    pub id: DecisionId,
    /// The domain to split.
    pub domain: DomainId,
    /// The agents that move, by id: the lighter side of the minimum cut
    /// (less traffic touching it, then fewer agents, then the side without
    /// the domain's lowest id); when the domain falls apart (a cut of zero),
    /// every part but the busiest, in one move.
    pub movers: AgentList,
    /// Agents that stay.
    pub stayers: usize,
    /// Value of the domain's minimum cut.
    pub cut: Weight,
    /// The domain's internal traffic when it was cut.
    pub internal: Weight,
    /// Work units the cut took.
    pub work: u64,
    /// When the decision was made.
    pub at_ns: u64,
}

/// Merge `from` into `into`: every agent of `from` moves to `into`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeDecision {
    pub id: DecisionId,
    /// The domain that stays (the one with more agents; the lower id on a tie).
    pub into: DomainId,
    /// The domain that empties.
    pub from: DomainId,
    /// Traffic between the two: the value of the cut that separates them.
    pub cross: Weight,
    /// Their internal traffic together.
    pub internal: Weight,
    /// When the decision was made.
    pub at_ns: u64,
}

/// A decision of the coherence evaluator.
// A split carries its movers inline (≈ 320 bytes) so that deciding never
// allocates; an evaluation returns at most four decisions, rarely.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Split(SplitDecision),
    Merge(MergeDecision),
}

impl Decision {
    /// Its id.
    pub fn id(&self) -> DecisionId {
        match self {
            Decision::Split(s) => s.id,
            Decision::Merge(m) => m.id,
        }
    }

    /// The kernel event that records it.
    pub fn event(&self) -> KernelEvent {
        match self {
            Decision::Split(_) => KernelEvent::Split,
            Decision::Merge(_) => KernelEvent::Merge,
        }
    }

    /// The cut value the decision rests on: a split's minimum cut, or the
    /// traffic between two merging domains.
    pub fn cut_value(&self) -> Weight {
        match self {
            Decision::Split(s) => s.cut,
            Decision::Merge(m) => m.cross,
        }
    }

    /// The internal traffic it was weighed against.
    pub fn internal(&self) -> Weight {
        match self {
            Decision::Split(s) => s.internal,
            Decision::Merge(m) => m.internal,
        }
    }

    /// The domain whose log records it: the split one, or the one merged into.
    pub fn domain(&self) -> DomainId {
        match self {
            Decision::Split(s) => s.domain,
            Decision::Merge(m) => m.into,
        }
    }

    /// The 16 bytes the witness record's `args` field carries for this
    /// decision: the cut value (bytes 0–7) and the internal traffic
    /// (bytes 8–15), each the raw Q48.16 [`Weight`], little-endian. The
    /// record's `op` ([`event`](Self::event)) says which kind it is.
    pub fn witness_args(&self) -> [u8; 16] {
        let mut args = [0u8; 16];
        args[..8].copy_from_slice(&self.cut_value().raw().to_le_bytes());
        args[8..].copy_from_slice(&self.internal().raw().to_le_bytes());
        args
    }

    /// The cut value and internal traffic back from a record's `args`.
    pub fn parse_witness_args(args: &[u8; 16]) -> (Weight, Weight) {
        let mut cut = [0u8; 8];
        let mut internal = [0u8; 8];
        cut.copy_from_slice(&args[..8]);
        internal.copy_from_slice(&args[8..]);
        (
            Weight::from_raw(u64::from_le_bytes(cut)),
            Weight::from_raw(u64::from_le_bytes(internal)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_args_carry_the_cut_and_round_trip() {
        let d = Decision::Merge(MergeDecision {
            id: DecisionId(7),
            into: DomainId(1),
            from: DomainId(2),
            cross: Weight::from_raw(0x0102_0304_0506_0708),
            internal: Weight::from_units(3),
            at_ns: 5,
        });
        let args = d.witness_args();
        assert_eq!(args[0], 0x08);
        assert_eq!(args[7], 0x01);
        assert_eq!(
            Decision::parse_witness_args(&args),
            (d.cut_value(), Weight::from_units(3))
        );
        assert_eq!(d.event(), KernelEvent::Merge);
        assert_eq!(d.domain(), DomainId(1));
        assert_eq!(d.id(), DecisionId(7));
    }
}
