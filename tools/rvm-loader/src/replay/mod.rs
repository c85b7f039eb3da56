//! Deterministic replay of a partition on the host (`witness replay`).
//!
//! Input: the partition's witness log, its input journal
//! ([`rvm_abi::journal`]) and the agent's WASM module. The agent runs in the
//! same engine the EL1 runtime runs (`rvm-agent-engine`), behind a
//! [`ReplayHost`] that answers each hypercall from the journal. The state
//! store and the digests are the kernel's own ([`rvm_state`]).
//!
//! 1. Every journal entry is checked against its record first: the record's
//!    `args` digest is recomputed from the entry, its outcome compared with
//!    the entry's status. A changed journal (or log) is named by the first
//!    record whose binding fails. The log's own chain is checked too.
//! 2. Each call the agent makes must be the log's next call record of this
//!    partition (the runtime's own console lines, `runtime: ...`, and its
//!    `Exit` are skipped), with the same handle, lengths and outgoing bytes.
//!    The journaled status and incoming bytes are handed back.
//! 3. The committed state store is rebuilt from the agent's own stage /
//!    validate / commit calls, following their journaled statuses; every
//!    `StateGet` the journal answers is checked against it.
//! 4. At every `Snapshot`, the state hash is recomputed (the kernel's
//!    [`rvm_state::digest::state_hash`]) over the image the agent hands over
//!    and the replayed store, and compared with the journaled hash and the
//!    `SnapshotTaken` record.
//! 5. A `ToolCall` runs no tool: the call must match its record (lengths,
//!    and the name and request where the kernel read them), and an allowed
//!    one is answered from the record that follows it with
//!    [`flags::ANSWER`](rvm_abi::witness::flags::ANSWER) (its status, or
//!    the response bytes it journaled).
//! 6. The log's recovery steps are followed: F1 (`RecoverRestart`) starts a
//!    fresh instance with the committed store kept; F2 (`RecoverRollback`)
//!    restores the replay's own snapshot of the id the record names and
//!    rolls the replayed store back to it.
//!
//! Limits: one agent per partition (the slot-0 module); capability
//! derivation, revocation and `Prove` are not replayed (such a record stops
//! the replay with a clear message); an instance that ended while its tool
//! call waited for the answer (a recovery step where the answer record
//! would be) is reported as a divergence there.
//!
//! The parts, in the order a replay uses them:
//! * `journal` — reading the journal and binding it to the log (1).
//! * `run` — re-executing the agent, instance after instance (6).
//! * `host` — its hypercalls answered from the journal and compared (2–5).
//! * `log` — following the log: which record is the agent's next call, and
//!   what follows an instance's end.
//! * `outcome` — what a replay reports.

use rvm_abi::journal::Entry;
use rvm_abi::witness::WitnessOp;

mod host;
mod journal;
mod log;
mod outcome;
mod run;

pub use host::ReplayHost;
pub use journal::{check_bindings, parse_journal};
pub use outcome::{Progress, ReplayFailure, ReplayReport};
pub use run::{replay, replay_on_own_stack, REPLAY_STACK_BYTES};

/// How the guest runtime's own console lines begin (they are not the
/// agent's and are skipped).
pub const RUNTIME_LINE_PREFIX: &[u8] = b"runtime: ";

/// Fuel per slice the replay uses for an unmetered partition: it only
/// bounds how long a diverged agent may spin before the replay stops it
/// (fuel yields are not witnessed, so metering changes nothing replayed).
pub const REPLAY_FUEL_SLICE: u64 = 50_000_000;

/// `ReplayFailure::Diverged::turn` before the instance has stopped.
const TURN_UNKNOWN: u64 = u64::MAX;

/// What the replay needs.
pub struct ReplayInput<'a> {
    /// The partition's log id.
    pub log: u32,
    /// Its name (what a WASI program's arguments and random seed come from).
    pub name: &'a str,
    /// Its records, in log order (the raw 64 bytes).
    pub records: Vec<[u8; 64]>,
    /// Its journal entries, in any order.
    pub journal: Vec<Entry>,
    /// The agent's module.
    pub wasm: &'a [u8],
    /// The partition's WASM memory budget and fuel policy (from its bundle entry).
    pub wasm_pages: u32,
    pub fuel_per_slice: u64,
}

use rvm_abi::hex::to_string as hex;

fn op_name(code: u16) -> String {
    WitnessOp::from_code(code).map_or_else(|| format!("op {code:#x}"), |o| o.name().to_string())
}
