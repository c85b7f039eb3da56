//! What a replay reports: the figures of one that reproduced the log, why
//! one did not, and its progress along the way.

use std::fmt;

/// A replay that reproduced the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Turns the agent completed, over all its instances.
    pub turns: u64,
    /// Agent instances run (1 + restarts and rollbacks followed).
    pub instances: u32,
    /// Hypercalls answered from the journal.
    pub calls: u64,
    /// Snapshots whose state hash the replay reproduced.
    pub snapshots_matched: u64,
    /// Records in the log.
    pub records: u64,
    /// The log ended while the agent was still running (the run was stopped).
    pub log_ended_mid_run: bool,
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed {} turns in {} instance(s), {} calls over {} records; ",
            self.turns, self.instances, self.calls, self.records
        )?;
        match self.snapshots_matched {
            0 => write!(f, "no snapshot in the log: every call reproduced")?,
            n => write!(
                f,
                "{n} snapshots matched: all {n} state hashes reproduced"
            )?,
        }
        if self.log_ended_mid_run {
            write!(f, " (the log ends while the agent was still running)")?;
        }
        Ok(())
    }
}

/// Why a replay did not reproduce the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayFailure {
    /// The log or journal cannot be used at all (exit 2).
    Input(String),
    /// The journal or log was changed: a record and its entry disagree, or
    /// the chain breaks (exit 1).
    Tampered { seq: u64, reason: String },
    /// The replayed agent did something the log does not say (exit 1).
    Diverged {
        seq: u64,
        turn: u64,
        expected: String,
        got: String,
    },
    /// The log holds something the replay cannot re-execute (exit 2).
    Unsupported { seq: u64, what: String },
}

impl ReplayFailure {
    /// The loader's exit code for it.
    pub fn exit_code(&self) -> i32 {
        match self {
            ReplayFailure::Tampered { .. } | ReplayFailure::Diverged { .. } => 1,
            ReplayFailure::Input(_) | ReplayFailure::Unsupported { .. } => 2,
        }
    }
}

impl fmt::Display for ReplayFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayFailure::Input(m) => write!(f, "{m}"),
            ReplayFailure::Tampered { seq, reason } => {
                write!(
                    f,
                    "record #{seq}: {reason}: the log or its journal was changed"
                )
            }
            ReplayFailure::Diverged {
                seq,
                turn,
                expected,
                got,
            } => write!(
                f,
                "replay differs at record #{seq} in turn {turn}: expected {expected}, got {got}"
            ),
            ReplayFailure::Unsupported { seq, what } => {
                write!(f, "record #{seq}: {what} cannot be replayed yet")
            }
        }
    }
}

/// Progress of a long replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A snapshot's state hash was reproduced.
    Snapshot { id: u64, turn: u64, seq: u64 },
    /// An instance ended; the log says what follows.
    Instance { n: u32, turns: u64, next: String },
}
