//! RVM's hypervisor logic, in safe Rust.
//!
//! Everything here reaches the machine only through [`arch::Arch`]; the
//! AArch64 implementation lives in the `hal` crate and an in-memory one in
//! [`fake`], so the whole kernel runs under `cargo test` on the host.
//!
//! * [`hypervisor`] — partitions from the bundle, exits, housekeeping.
//! * [`smp`], [`sched`] — one run queue per CPU, the kernel lock, leases of
//!   running vCPUs, deferred orders, the end of a run.
//! * [`load`], [`image`], [`elf`] — building partitions from the bundle.
//! * [`stage2`], [`frames`], [`guest_mem`] — memory isolation.
//! * [`dispatch`], [`psci`] — hypercalls and emulated PSCI.
//! * [`caps`], [`witness`] — capability checks and the witness logs.
//! * [`channel`] — inter-partition messages (the state store is
//!   `rvm_state::store`).
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
pub mod dormant;
pub mod dispatch;
pub mod domains;
pub mod migrate;
pub mod el2map;
pub mod elf;
pub mod fake;
pub mod fault;
pub mod frames;
pub mod guest_mem;
pub mod hypervisor;
pub mod image;
pub mod journal;
pub mod load;
pub mod orders;
pub mod partition;
pub mod psci;
pub mod quota;
pub mod sched;
pub mod smp;
pub mod recovery;
mod report;
pub mod restart;
pub mod stage2;
pub mod trap;
pub mod vcpu;
pub mod witness;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_caps;
#[cfg(test)]
mod tests_domains;
#[cfg(test)]
mod tests_recovery;
#[cfg(test)]
mod tests_smp;
#[cfg(test)]
mod tests_orders;
#[cfg(test)]
mod tests_dormant;
#[cfg(test)]
mod tests_console;
#[cfg(test)]
mod tests_failclosed;

pub use arch::{Arch, CpuArch, CpuId};
pub use hypervisor::{BootError, Hypervisor, RunSummary};
