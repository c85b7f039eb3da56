//! Names of the things the coherence graph relates.

use core::fmt;

/// An agent: one WASM instance inside a partition, named by the kernel.
///
/// Ids are opaque to this crate; the kernel must keep an agent's id stable
/// while it migrates between partitions (split and merge move agents, they do
/// not rename them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(pub u32);

/// A coherence domain: the agents that share one partition. Its id is the
/// partition's id (`rvm_kernel::partition::PartitionId`'s value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u32);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent {}", self.0)
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "domain {}", self.0)
    }
}
