//! Why a module was refused, and how a run ended.

use alloc::string::String;
use core::fmt;

use rvm_abi::bootinfo::exit;
use rvm_abi::imports::HostImport;
use rvm_abi::HvError;
use wasmi::TrapCode;

/// Why [`Agent::load`](crate::Agent::load) refused a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The bytes are not a valid WASM module (parse or validation error).
    Invalid { detail: String },
    /// The module has a `start` function; agents start only at their entry.
    StartFunction,
    /// An import outside the `rvm` host-function table.
    ForbiddenImport {
        module: String,
        name: String,
        kind: &'static str,
    },
    /// An `rvm` import whose signature differs from the table's.
    ImportSignature { import: HostImport },
    /// A WASI import whose signature differs from WASI's.
    WasiSignature { name: &'static str },
    /// The declared minimum memory exceeds the budget.
    MemoryOverBudget {
        declared_pages: u64,
        budget_pages: u32,
    },
    /// No exported `run` or `_start` of type `[] -> []`.
    NoEntry,
    /// Instantiation failed (data segment out of bounds, limits, ...).
    Instantiation { detail: String },
}

impl LoadError {
    /// The exit code ([`rvm_abi::bootinfo::exit`]) that reports this refusal
    /// to the hypervisor. A wrong signature counts as an unknown import (the
    /// table provides no such function); a failed instantiation (say, a data
    /// segment out of bounds) as an invalid module.
    pub fn exit_code(&self) -> u64 {
        match self {
            LoadError::Invalid { .. }
            | LoadError::StartFunction
            | LoadError::Instantiation { .. } => exit::MODULE_INVALID,
            LoadError::ForbiddenImport { .. } | LoadError::ImportSignature { .. } | LoadError::WasiSignature { .. } => {
                exit::IMPORT_UNKNOWN
            }
            LoadError::MemoryOverBudget { .. } => exit::MEMORY_BUDGET,
            LoadError::NoEntry => exit::NO_ENTRY,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Invalid { detail } => write!(f, "invalid module: {detail}"),
            LoadError::StartFunction => f.write_str("module has a start function"),
            LoadError::ForbiddenImport { module, name, kind } => {
                write!(f, "forbidden import {kind} {module}.{name}")
            }
            LoadError::ImportSignature { import } => write!(
                f,
                "import {}.{} has the wrong signature (want {:?} -> {:?})",
                rvm_abi::imports::MODULE,
                import.name(),
                import.params(),
                import.results()
            ),
            LoadError::WasiSignature { name } => {
                write!(f, "import {}.{name} has the wrong signature", rvm_abi::imports::wasi::MODULE)
            }
            LoadError::MemoryOverBudget { declared_pages, budget_pages } => write!(
                f,
                "declared memory minimum {declared_pages} pages exceeds the budget of {budget_pages} pages"
            ),
            LoadError::NoEntry => f.write_str("no exported entry `run` or `_start` of type [] -> []"),
            LoadError::Instantiation { detail } => write!(f, "instantiation failed: {detail}"),
        }
    }
}

/// Why an agent's execution stopped abnormally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trap {
    /// A WASM trap (unreachable, out-of-bounds access, stack overflow, ...).
    Wasm(TrapCode),
    /// Any other execution error, described.
    Other(String),
    /// A turn ran past its CPU budget: the partition's fuel per slice is
    /// each turn's budget (a turn agent is preempted by its turns ending, so
    /// a turn that does not end within it is a fault, F1).
    TurnOverBudget { fuel: u64 },
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trap::Wasm(code) => write!(f, "wasm trap: {code}"),
            Trap::Other(detail) => write!(f, "execution error: {detail}"),
            Trap::TurnOverBudget { fuel } => write!(f, "a turn ran past its budget of {fuel} fuel"),
        }
    }
}

/// How a run of the agent's entry ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The entry returned (code 0) or the agent called `exit(code)`.
    Finished { code: i32 },
    /// The agent trapped.
    Trapped(Trap),
    /// The host refused a fuel-exhaustion yield, so the run was stopped.
    Stopped(HvError),
}

/// A run's outcome and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: RunOutcome,
    /// Fuel slices used (1 if the run never ran out of fuel; 0 unmetered).
    pub slices: u64,
    /// Host-function calls the agent made.
    pub host_calls: u64,
    /// Turns completed in this run (turn agents; 0 for a `run` entry).
    pub turns: u64,
    /// Snapshots taken at turn ends, and those the hypervisor refused.
    pub snapshots: u64,
    pub snapshots_refused: u64,
}

/// Why [`Agent::restore`](crate::Agent::restore) refused an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// Only turn agents resume from an image.
    NotTurnAgent,
    /// The image does not decode.
    Image(crate::snapshot::ImageError),
    /// The image holds a different number of mutable globals.
    GlobalCount { image: usize, agent: usize },
    /// Global `index` has another type in the image.
    GlobalType { index: usize },
    /// The image's memory is not a whole number of pages, is smaller than
    /// the fresh instance's, or exceeds the budget.
    MemorySize {
        image_bytes: usize,
        agent_bytes: usize,
    },
    /// The image's table length differs from the fresh instance's.
    TableLength { image: u32, agent: u32 },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::NotTurnAgent => f.write_str("the agent has no `turn` export"),
            RestoreError::Image(e) => write!(f, "image does not decode: {e:?}"),
            RestoreError::GlobalCount { image, agent } => {
                write!(f, "image has {image} mutable globals, the agent {agent}")
            }
            RestoreError::GlobalType { index } => write!(f, "global {index} has another type"),
            RestoreError::MemorySize { image_bytes, agent_bytes } => write!(
                f,
                "image memory of {image_bytes} bytes cannot replace the agent's {agent_bytes} within its budget"
            ),
            RestoreError::TableLength { image, agent } => {
                write!(f, "image table of {image} elements, the agent's has {agent}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn every_refusal_reports_a_refusal_code() {
        let all = [
            LoadError::Invalid {
                detail: "x".to_string(),
            },
            LoadError::StartFunction,
            LoadError::ForbiddenImport {
                module: "env".to_string(),
                name: "f".to_string(),
                kind: "function",
            },
            LoadError::ImportSignature {
                import: HostImport::Clock,
            },
            LoadError::MemoryOverBudget {
                declared_pages: 2,
                budget_pages: 1,
            },
            LoadError::NoEntry,
            LoadError::Instantiation {
                detail: "x".to_string(),
            },
        ];
        for e in &all {
            assert!(exit::is_refusal(e.exit_code()), "{e}: {:#x}", e.exit_code());
        }
        assert_eq!(LoadError::NoEntry.exit_code(), exit::NO_ENTRY);
        assert_eq!(
            LoadError::MemoryOverBudget {
                declared_pages: 2,
                budget_pages: 1
            }
            .exit_code(),
            exit::MEMORY_BUDGET
        );
    }
}
