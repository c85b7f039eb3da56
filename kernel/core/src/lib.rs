//! RVM's hypervisor logic, in safe Rust.
//!
//! Everything here reaches the machine only through [`arch::Arch`]; the
//! AArch64 implementation lives in the `hal` crate and an in-memory one in
//! [`fake`], so the whole kernel runs under `cargo test` on the host.
//!
//! * [`hypervisor`] — partitions from the bundle, the run loop, exits.
//! * [`load`], [`image`], [`elf`] — building partitions from the bundle.
//! * [`stage2`], [`frames`], [`guest_mem`] — memory isolation.
//! * [`dispatch`], [`psci`] — hypercalls and emulated PSCI.
//! * [`caps`], [`witness`] — capability checks and the witness logs.
//! * [`channel`], [`store`] — inter-partition messages, the state store.
//! * [`fault`], [`recovery`], [`restart`] — what a partition's fault does to
//!   it (and nobody else): the F1–F4 policy and its steps.
//! * [`checkpoint`] — checkpoints kept by EL2 and their state hashes.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addr;
pub mod arch;
pub mod caps;
pub mod channel;
pub mod checkpoint;
pub mod console;
pub mod digest;
pub mod dispatch;
pub mod elf;
pub mod fake;
pub mod fault;
pub mod frames;
pub mod guest_mem;
pub mod hypervisor;
pub mod image;
pub mod load;
pub mod partition;
pub mod psci;
pub mod sched;
pub mod recovery;
mod report;
pub mod restart;
pub mod stage2;
pub mod store;
pub mod trap;
pub mod vcpu;
pub mod witness;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_caps;
#[cfg(test)]
mod tests_recovery;

pub use arch::Arch;
pub use hypervisor::{BootError, Hypervisor, RunSummary};
