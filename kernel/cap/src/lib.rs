//! RVM's capability kernel: every capability in the system, the P1–P3 proof
//! tiers that guard their use, derivation with monotonic attenuation, and
//! revocation of whole derived subtrees across partitions.
//!
//! * [`CapabilitySpace`] — per-partition tables of slots addressed by
//!   [`CapHandle`](rvm_abi::CapHandle) (index + generation), and every
//!   operation on them: [`install`](CapabilitySpace::install),
//!   [`check`](CapabilitySpace::check), [`derive`](CapabilitySpace::derive),
//!   [`revoke`](CapabilitySpace::revoke), [`query`](CapabilitySpace::query),
//!   [`suspend_partition`](CapabilitySpace::suspend_partition),
//!   [`revoke_partition`](CapabilitySpace::revoke_partition).
//! * [`table`] — how a handle resolves, and which error a dead handle gets.
//! * [`proof`] — the P3 verifier (the message is `rvm_abi::approval`), the
//!   arguments digests, and the host-side signer
//!   (feature `signer`).
//! * [`attest`] — the kernel's signed attestation for PROVE.
//! * [`claim`] — what a `Resource` capability's resource pattern lets a
//!   tool call name (the adapter's claim semantics).
//! * [`window`], [`quota`], [`tiers`], [`ids`], [`policy`] — the pieces of
//!   a capability's policy and the space's bounds.
//!
//! The crate does no witnessing and decodes no hypercall: the kernel's
//! dispatcher calls it and records every outcome; [`Granted`] and [`Denied`]
//! carry what a witness record needs (capability id, tier, exact error).
//! Time and quota epochs are parameters; there is no global state.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod attest;
pub mod claim;
mod capability;
mod derive;
pub mod ids;
mod outcome;
pub mod policy;
pub mod proof;
pub mod quota;
mod revoke;
mod transplant;
mod space;
pub mod table;
pub mod tiers;
pub mod window;

pub use capability::CapInfo;
pub use derive::DeriveParams;
pub use ed25519_dalek;
pub use ids::{Epoch, Nonce, ObjectId, ObjectRef, PartitionId, Timestamp};
pub use outcome::{Denied, Derived, Granted, Request, RevokeReport};
pub use policy::{SpacePolicy, MAX_DERIVATION_DEPTH};
pub use proof::{ArgsDigest, AuthorityKey, Proof, Signature};
pub use quota::Quota;
pub use space::{CapParams, CapabilitySpace};
pub use table::PartitionCapState;
pub use window::{Access, ByteWindow};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tree;
