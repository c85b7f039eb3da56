//! An agent's committed state and the digests that bind it to the witness
//! log, as one definition for the hypervisor (`rvm-kernel`) and the host's
//! replay (`rvm-loader`'s `witness replay`).
//!
//! * [`store`] — a partition's state store: staged, validated, then
//!   committed atomically; copies kept with snapshots and for rollbacks.
//! * [`digest`] — the argument digests witness records carry.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod digest;
pub mod store;

pub use store::{StateStore, StoreLimits, StoreSnapshot};
