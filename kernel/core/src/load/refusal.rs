//! Why a bundle, or one partition of it, is not admitted.


/// Why the hypervisor could not start from a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    Bundle(rvm_abi::bundle::BundleError),
    /// No partitions to run.
    Empty,
    /// More partitions than VMIDs.
    TooManyPartitions,
    OutOfMemory,
    /// The shared guest runtime image is not a loadable AArch64 ELF.
    Runtime(crate::load::elf::ElfError),
    /// The hypervisor's log does not continue the one the bundle names.
    LogResume(rvm_witness::ResumeError),
}

/// Why one partition was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoImage,
    Image(crate::load::elf::ElfError),
    ModuleTooLarge,
    NoModule,
    OutOfMemory,
    BadCapability,
    /// The memory budget makes the heap window overlap the restore window.
    HeapWindow,
    /// The manifest pins a witness key this hypervisor does not sign with.
    WitnessKey,
    /// More agents than [`MAX_AGENTS_PER_PARTITION`], or their modules
    /// together larger than the WASM window.
    TooManyAgents,
    /// The frames its budget needs at most ([`footprint`]) are not free of
    /// other partitions' reservations.
    MemoryBudget,
    /// Its share of the EL2 heap ([`crate::memory::quota`]) does not fit.
    HeapBudget,
    /// Its witness log could not take a record of its creation, load or
    /// capabilities (nothing unwitnessed is admitted).
    Witness,
    /// Another partition of the same admission was refused: an admission
    /// is taken whole or not at all.
    WithAdmission,
    /// Its log cannot continue the earlier boot's the bundle names.
    LogResume(rvm_witness::ResumeError),
    /// The committed set kept for it ([`crate::durable`]) is not the one
    /// its log vouches for.
    KeptState(RestoreError),
    /// A claim of its capability table does not belong to the capability
    /// it names ([`crate::tool_calls::claims_of`]).
    BadClaim(crate::tool_calls::desk::ClaimError),
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoImage => "no guest runtime or guest image in the bundle",
            Refusal::Image(_) => "guest image is not a loadable AArch64 ELF",
            Refusal::ModuleTooLarge => "WASM module larger than 16 MiB",
            Refusal::NoModule => "no WASM module for the partition",
            Refusal::OutOfMemory => "out of memory",
            Refusal::BadCapability => "capability table entry could not be installed",
            Refusal::HeapWindow => "memory budget too large for the partition's heap window",
            Refusal::WitnessKey => "its witness_key_fingerprint does not match this hypervisor's witness key",
            Refusal::TooManyAgents => "more than 16 agents, or their modules together larger than 16 MiB",
            Refusal::MemoryBudget => "its memory budget does not fit in the frames not reserved for other partitions",
            Refusal::HeapBudget => "its share of the hypervisor heap (store, snapshots, queues) does not fit",
            Refusal::Witness => "its witness log could not take the record",
            Refusal::WithAdmission => "another partition of its admission was refused",
            Refusal::LogResume(_) => "its witness log does not continue the earlier boot's (its last checkpoint or Merkle frontier does not verify)",
            Refusal::KeptState(_) => "the committed state kept for it is not the state its witness log vouches for",
            Refusal::BadClaim(_) => "a claim of its capability table does not belong to the capability it names",
        }
    }

    /// The outcome its `PartitionRefused` record carries.
    pub fn error(self) -> rvm_abi::HvError {
        match self {
            Refusal::OutOfMemory | Refusal::MemoryBudget | Refusal::HeapBudget => rvm_abi::HvError::NoMemory,
            Refusal::Witness => rvm_abi::HvError::WitnessUnavailable,
            Refusal::LogResume(_) | Refusal::KeptState(_) => rvm_abi::HvError::BadProof,
            _ => rvm_abi::HvError::InvalidArgument,
        }
    }
}

/// Why a kept set was not taken at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The record is not a `CommittedSet` of this partition.
    NotItsRecord,
    /// The record's digest is not the digest of the items (the kept set
    /// was changed).
    DigestMismatch,
    /// The record is not in the log the partition resumed (its proof does
    /// not lead to the signed root).
    NotInLog,
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RestoreError::NotItsRecord => "the record it names is not a CommittedSet of this partition",
            RestoreError::DigestMismatch => "its items are not the set its record vouches for (the kept set was changed)",
            RestoreError::NotInLog => "the record it names is not in the log the partition continues",
        })
    }
}
