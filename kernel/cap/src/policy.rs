//! Sizing and structural policy: every bound the capability space enforces,
//! named once.

/// Deepest derivation allowed: an installed (root) capability has depth 0, so
/// a chain holds at most `MAX_DERIVATION_DEPTH + 1` capabilities. A derive
/// that would create depth `MAX_DERIVATION_DEPTH + 1` fails with
/// [`HvError::DepthExceeded`](rvm_abi::HvError::DepthExceeded).
pub const MAX_DERIVATION_DEPTH: u8 = 8;

/// Default number of slots in one partition's capability table.
pub const DEFAULT_SLOTS_PER_PARTITION: u16 = 256;

/// Default number of partition tables (partition ids `0..N`).
pub const DEFAULT_MAX_PARTITIONS: u32 = 256;

/// Default number of distinct authority keys the space will intern.
pub const DEFAULT_MAX_AUTHORITIES: u16 = 64;

/// Bounds of a [`CapabilitySpace`](crate::CapabilitySpace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpacePolicy {
    /// Slots per partition table. Handles index `0..slots_per_partition`;
    /// a table that is full refuses installs and derives with
    /// [`HvError::Full`](rvm_abi::HvError::Full).
    pub slots_per_partition: u16,
    /// Partition ids must be below this.
    pub max_partitions: u32,
    /// Distinct Ed25519 authority keys bound to capabilities.
    pub max_authorities: u16,
}

impl SpacePolicy {
    pub const DEFAULT: SpacePolicy = SpacePolicy {
        slots_per_partition: DEFAULT_SLOTS_PER_PARTITION,
        max_partitions: DEFAULT_MAX_PARTITIONS,
        max_authorities: DEFAULT_MAX_AUTHORITIES,
    };
}

impl Default for SpacePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}
