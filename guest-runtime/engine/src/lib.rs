//! The agent engine: loads an agent's WASM module with wasmi, screens it
//! against the partition's policy, and runs its entry point.
//!
//! Every effect outside the module goes through [`HostCalls`], one method per
//! hypercall. The EL1 guest runtime implements it with `hvc`; host tests
//! implement it with an in-memory fake, and the host replayer
//! (`rvm-loader witness replay`) implements it from a partition's input
//! journal — the engine itself is the same in all three.
//!
//! # The agent contract
//!
//! * Imports: only functions of module [`rvm_abi::imports::MODULE`] listed in
//!   [`rvm_abi::imports::HostImport`], and of the WASI subset
//!   [`rvm_abi::imports::wasi`], each with exactly its signature. Any other
//!   import (another module, an unknown name, a memory, table or global)
//!   refuses the module.
//! * Memory: at most one linear memory, whose declared minimum must fit the
//!   partition's budget (`wasm_pages`); growth past the budget fails
//!   (`memory.grow` returns -1).
//! * No `start` function: all work happens in the entry.
//! * Entry: the exported function [`ENTRY_NAMES`]`[0]` (`run`), or failing that
//!   `_start`, of type `[] -> []`. Returning from it finishes with exit code 0;
//!   the `exit(code)` import finishes with `code`.
//! * Fuel: with a fuel budget per slice, the engine yields the time slice each
//!   time the slice's fuel runs out and then refuels, so a spinning agent
//!   gives way even where no timer would preempt it.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod agent;
mod budget;
pub mod snapshot;
mod config;
mod error;
mod glue;
mod host;
mod screen;
mod wasi;

pub use agent::{validate, Agent, ENTRY_NAMES};
pub use budget::MAX_TABLE_ELEMENTS;
pub use config::{AgentConfig, FuelPolicy, HandleList};
pub use error::{LoadError, RestoreError, RunOutcome, RunReport, Trap};
pub use host::{SnapshotReceipt, DeriveRequest, HostCalls};
pub use wasi::WasiEnv;
