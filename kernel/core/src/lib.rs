//! RVM's hypervisor logic, in safe Rust.
//!
//! Everything here reaches the machine only through [`arch::Arch`]; the
//! AArch64 implementation lives in the `hal` crate and an in-memory one in
//! [`fake`], so the whole kernel runs under `cargo test` on the host.
//!
//! * [`hypervisor`] — partitions from the bundle, exits, housekeeping.
//! * [`running`] — vCPUs, exits, one run queue per CPU, the kernel lock,
//!   leases of running vCPUs, deferred orders, the end of a run.
//! * [`load`] — building partitions from the bundle.
//! * [`memory`] — frames, stage-2 tables, guest memory, the EL2 map.
//! * [`dispatch`] — hypercalls and emulated PSCI.
//! * [`caps`], [`witness`] — capability checks and the witness logs.
//! * [`channel`] — inter-partition messages (the state store is
//!   `rvm_state::store`).
//! * [`recovery`] — what a partition's fault does to it (and nobody else):
//!   the F1–F4 policy, its steps, and snapshots.
//! * [`domains`] — coherence domains, moving agents, the Dormant tier.
//! * [`orders`], [`journal`] — operator orders, the replay journal.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod arch;
pub mod caps;
pub mod channel;
pub mod console;
pub mod dispatch;
pub mod durable;
pub mod domains;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod hypervisor;
pub mod journal;
pub mod load;
pub mod memory;
pub mod orders;
pub mod partition;
pub mod recovery;
pub mod report;
pub mod running;
pub mod state;
pub mod tool_calls;
pub mod witness;

#[cfg(test)]
mod tests;

pub use arch::{Arch, CpuArch, CpuId};
pub use hypervisor::BootError;
pub use report::RunSummary;
pub use state::Hypervisor;
