//! Moves of agents between partitions (splits and merges): what a move in
//! progress carries, what a finished one records, and why one fails. The
//! steps that carry them out are [`crate::domains::migrate`].

use rvm_abi::witness::KernelEvent;
use rvm_abi::HvError;
use rvm_coherence::{AgentId, Decision, DecisionId, MergeDecision, SplitDecision, Weight};

use crate::channel::AgentSlot;
use crate::partition::PartitionId;
use crate::recovery::snapshot::Snapshot;

/// What a departure carries out.
// A split carries its movers inline, as its decision does (one departure
// at a time: the size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Plan {
    /// The mover goes to a new partition.
    Split(SplitDecision),
    /// The mover, its partition's only agent, goes to the partition at
    /// position `into`; its own partition is then retired.
    Merge { decision: MergeDecision, into: usize },
}

impl Plan {
    pub(crate) fn id(&self) -> DecisionId {
        match self {
            Plan::Split(d) => d.id,
            Plan::Merge { decision, .. } => decision.id,
        }
    }

    /// The `Split`/`Merge` record's `args`: cut value, internal traffic.
    pub(crate) fn witness_args(&self) -> [u8; 16] {
        match self {
            Plan::Split(d) => Decision::Split(d.clone()).witness_args(),
            Plan::Merge { decision, .. } => Decision::Merge(*decision).witness_args(),
        }
    }

    pub(crate) fn event(&self) -> KernelEvent {
        match self {
            Plan::Split(_) => KernelEvent::Split,
            Plan::Merge { .. } => KernelEvent::Merge,
        }
    }

    pub(crate) fn kind(&self) -> MoveKind {
        match self {
            Plan::Split(_) => MoveKind::Split,
            Plan::Merge { .. } => MoveKind::Merge,
        }
    }

    /// Cut value and internal traffic.
    pub(crate) fn weights(&self) -> (Weight, Weight) {
        match self {
            Plan::Split(d) => (d.cut, d.internal),
            Plan::Merge { decision, .. } => (decision.cross, decision.internal),
        }
    }
}

/// A move being carried out: its mover leaves at its next turn boundary.
#[derive(Clone, Debug)]
pub struct Departure {
    pub agent: AgentId,
    /// Its partition's position and its slot there.
    pub partition: usize,
    pub slot: AgentSlot,
    pub plan: Plan,
    /// When it was told to leave (kernel clock).
    pub since_ns: u64,
}

/// An agent that arrived in a partition (a merge) and has not yet run:
/// its snapshot stays mapped at the target's restore window until its
/// first `AgentSwitch` (its runtime restored it before that turn).
#[derive(Debug)]
pub struct Arrival {
    pub partition: usize,
    pub slot: AgentSlot,
    pub(crate) snapshot: Snapshot,
    pub(crate) pages: u64,
}

/// Which kind of move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// To a new partition.
    Split,
    /// Into an existing partition, retiring the emptied one.
    Merge,
}

/// How long a departing agent has to reach a turn boundary and hand itself
/// over before the move is abandoned (the decision is cancelled and the
/// domain evaluated again): an agent that never yields a turn, or ignores
/// `DEPART`, does not block every later move.
pub const DEPARTURE_TIMEOUT_NS: u64 = 2_000_000_000;

/// A move carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub kind: MoveKind,
    pub agent: AgentId,
    pub from: PartitionId,
    pub to: PartitionId,
    pub cut: Weight,
    pub internal: Weight,
    /// Channel ends re-pointed.
    pub channels: u32,
    /// Messages waiting in those channels (both directions) when it moved.
    pub queued: u64,
    /// Capabilities transplanted.
    pub handles: u32,
    /// Bytes of the agent's snapshot.
    pub image_bytes: u64,
    /// When the split was carried out (kernel clock).
    pub at_ns: u64,
    /// Kernel clock from the captured snapshot to the `Split` records:
    /// creating the partition and moving the agent (under QEMU `-icount`,
    /// instructions).
    pub took_ns: u64,
}

/// Why a move did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveError {
    /// No VMID or partition id left.
    TooManyPartitions,
    OutOfMemory,
    /// The mover's module could not be read from its partition.
    Module,
    /// A capability could not be transplanted.
    Capability(HvError),
    /// The target partition cannot admit the agent now: its agent table
    /// or module window is full, or its restore window is in use.
    TargetBusy,
    /// A log the move writes to could not take its records.
    Witness,
    /// The new partition's memory reservation does not fit (frames or EL2
    /// heap), as for any admission.
    Reservation(crate::load::refusal::Refusal),
}

impl MoveError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            MoveError::TooManyPartitions => "no partition id or VMID left",
            MoveError::OutOfMemory => "out of memory",
            MoveError::Module => "its module could not be read",
            MoveError::Capability(_) => "a capability could not be transplanted",
            MoveError::TargetBusy => "the target partition cannot admit it now",
            MoveError::Reservation(r) => r.reason(),
            MoveError::Witness => "the witness log refused",
        }
    }

    pub(crate) fn status(self) -> HvError {
        match self {
            MoveError::Capability(e) => e,
            MoveError::TooManyPartitions | MoveError::OutOfMemory => HvError::NoMemory,
            MoveError::Module => HvError::InvalidArgument,
            MoveError::TargetBusy => HvError::Full,
            MoveError::Witness => HvError::WitnessUnavailable,
            MoveError::Reservation(r) => r.error(),
        }
    }
}

