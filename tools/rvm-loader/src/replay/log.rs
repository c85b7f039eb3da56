//! Following the log: which record each call of the agent is (the
//! runtime's own console lines and the kernel events that change nothing
//! the agent sees are stepped over), and what the log says follows when an
//! instance ends. [`Shared`] is what every instance's host calls share:
//! the place in the log, the replayed store, the snapshots taken.

use std::collections::BTreeMap;

use rvm_abi::journal::Entry;
use rvm_abi::recovery::RecoveryArgs;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Hypercall, WitnessRecord};
use rvm_state::{StateStore, StoreLimits, StoreSnapshot};

use super::{op_name, Progress, ReplayFailure, RUNTIME_LINE_PREFIX, TURN_UNKNOWN};

/// The replayed store refuses nothing: the kernel's verdicts on staging,
/// validation and commit are the journal's, and the replay follows them.
const FOLLOW_THE_JOURNAL: StoreLimits = StoreLimits {
    max_key: usize::MAX,
    max_value: usize::MAX,
    max_staged: usize::MAX,
    max_items: usize::MAX,
    max_bytes: usize::MAX,
};

/// A snapshot the replay took: the image and the store it was hashed with.
pub(super) struct Taken {
    pub image: Vec<u8>,
    pub store: StoreSnapshot,
}

/// What the host calls of all instances share.
pub(super) struct Shared {
    pub records: Vec<WitnessRecord>,
    pub journal: BTreeMap<u64, Entry>,
    pub cursor: usize,
    /// The committed store as the agent's own calls built it, in the
    /// kernel's own store ([`rvm_state::StateStore`]).
    pub store: StateStore,
    pub taken: BTreeMap<u64, Taken>,
    pub calls: u64,
    pub snapshots: u64,
    /// The first thing that went wrong; every later call fails.
    pub failure: Option<ReplayFailure>,
    /// The log ran out while the agent still called.
    pub exhausted: bool,
    /// Turns completed by the current instance before it started (restore).
    pub turn_base: u64,
    pub progress: Vec<Progress>,
}

impl Shared {
    /// At the start of the log: the agent's calls begin after its
    /// `PartitionStart` record.
    pub fn new(records: Vec<WitnessRecord>, journal: BTreeMap<u64, Entry>) -> Self {
        let cursor = records
            .iter()
            .position(|r| r.op == KernelEvent::PartitionStart as u16)
            .map_or(0, |i| i + 1);
        Self {
            records,
            journal,
            cursor,
            store: StateStore::new(FOLLOW_THE_JOURNAL),
            taken: BTreeMap::new(),
            calls: 0,
            snapshots: 0,
            failure: None,
            exhausted: false,
            turn_base: 0,
            progress: Vec::new(),
        }
    }
}

/// Which record of the log a call of the agent is.
pub(super) struct Matched {
    pub seq: u64,
    /// The record's flags ([`rvm_abi::witness::flags`]).
    pub flags: u16,
    pub regs: [u64; 6],
    pub status: i64,
    pub results: [u64; 3],
    pub data: Vec<u8>,
}

impl Matched {
    /// The journaled status, as the call answers it.
    pub fn status(&self) -> Result<(), HvError> {
        if self.status == 0 {
            Ok(())
        } else {
            Err(HvError::from_code(self.status).unwrap_or(HvError::NotSupported))
        }
    }
}

impl Shared {
    /// Keep the first thing that went wrong; the call answers
    /// `WitnessUnavailable`, so the agent stops.
    pub fn fail(&mut self, f: ReplayFailure) -> HvError {
        if self.failure.is_none() {
            self.failure = Some(f);
        }
        HvError::WitnessUnavailable
    }

    /// A difference inside a turn (its number is filled in when the
    /// instance has stopped: one past the turns it completed).
    pub fn diverged(&mut self, seq: u64, expected: String, got: String) -> HvError {
        self.fail(ReplayFailure::Diverged {
            seq,
            turn: TURN_UNKNOWN,
            expected,
            got,
        })
    }

    /// Whether record `i` is console text the runtime itself wrote: a line
    /// that starts with [`RUNTIME_LINE_PREFIX`], or the rest of one the
    /// runtime's line writer split (it writes at most 192 bytes per call).
    fn is_runtime_line(&self, i: usize) -> bool {
        let text = |i: usize| match (self.records.get(i), self.journal.get(&(i as u64))) {
            (Some(r), Some(Entry::Call { data, .. })) if r.op == Hypercall::ConsoleWrite as u16 => {
                Some(data.as_slice())
            }
            _ => None,
        };
        let Some(data) = text(i) else { return false };
        let mut at = i;
        let mut first = data;
        // Walk back over unterminated pieces to the line's start.
        while let Some(prev) = at
            .checked_sub(1)
            .and_then(text)
            .filter(|p| !p.ends_with(b"\n"))
        {
            first = prev;
            at -= 1;
        }
        first.starts_with(RUNTIME_LINE_PREFIX)
    }

    /// Take the log's next record for a call `call` of the agent (with the
    /// console `text` it writes, for `ConsoleWrite`).
    pub fn next(&mut self, call: Hypercall, text: Option<&[u8]>) -> Result<Matched, HvError> {
        let (seq, r) = self.seek(text, || format!("the agent calling {}", call.name()))?;
        if r.op != call as u16 {
            return Err(self.diverged(seq, op_name(r.op), call.name().to_string()));
        }
        let m = self.take(seq, &r)?;
        self.calls += 1;
        Ok(m)
    }

    /// Take the log's next record as the answer to the call `request` (a
    /// `ToolCall`, whose agent waits for it): a record of the same op with
    /// [`flags::ANSWER`](rvm_abi::witness::flags::ANSWER). Only what
    /// [`Shared::next`] steps over may come between them (kernel events
    /// that change nothing the agent sees).
    pub fn answer(&mut self, call: Hypercall, request: &Matched) -> Result<Matched, HvError> {
        let want = || {
            format!(
                "an answer record after the {} call (record #{})",
                call.name(),
                request.seq
            )
        };
        let (seq, r) = self.seek(None, want)?;
        if r.op != call as u16 || r.flags & rvm_abi::witness::flags::ANSWER == 0 {
            let found = if r.op == call as u16 {
                format!("another {} call", call.name())
            } else {
                op_name(r.op)
            };
            return Err(self.diverged(seq, found, want()));
        }
        self.take(seq, &r)
    }

    /// The index and record of the log's next record for the agent: the
    /// kernel events that change nothing it sees and the runtime's own
    /// console lines are stepped over (console `text` the agent writes
    /// itself is its own). `want`: what the agent waits for, for a
    /// divergence at any other kernel event.
    fn seek(
        &mut self,
        text: Option<&[u8]>,
        want: impl Fn() -> String,
    ) -> Result<(u64, WitnessRecord), HvError> {
        if self.failure.is_some() {
            return Err(HvError::WitnessUnavailable);
        }
        loop {
            let i = self.cursor;
            let Some(r) = self.records.get(i).copied() else {
                self.exhausted = true;
                return Err(HvError::WitnessUnavailable);
            };
            let seq = i as u64;
            if r.flags & rvm_abi::witness::flags::KERNEL_EVENT != 0 {
                match KernelEvent::from_code(r.op) {
                    // Events that change nothing the agent sees.
                    Some(
                        KernelEvent::PartitionStart
                        | KernelEvent::LogCheckpoint
                        | KernelEvent::Psci
                        | KernelEvent::CapInstall,
                    ) => {
                        self.cursor += 1;
                        continue;
                    }
                    // A kept set (an instance that keeps state): the set the
                    // agent's own calls built must be the one it vouches for.
                    Some(KernelEvent::CommittedSet) if r.args[..] == self.store.digest()[..16] => {
                        self.cursor += 1;
                        continue;
                    }
                    Some(KernelEvent::CommittedSet) => {
                        return Err(self.diverged(
                            seq,
                            "the committed set the log vouches for".into(),
                            "another set in the replayed store".into(),
                        ))
                    }
                    _ => return Err(self.diverged(seq, op_name(r.op), want())),
                }
            }
            let own_text = text.is_some_and(
                |t| matches!(self.journal.get(&seq), Some(Entry::Call { data, .. }) if data == t),
            );
            if !own_text && self.is_runtime_line(i) {
                self.cursor += 1;
                continue;
            }
            return Ok((seq, r));
        }
    }

    /// Record `seq`'s journal entry, and the cursor moved past it.
    fn take(&mut self, seq: u64, r: &WitnessRecord) -> Result<Matched, HvError> {
        let Some(Entry::Call {
            regs,
            status,
            results,
            data,
            ..
        }) = self.journal.get(&seq).cloned()
        else {
            return Err(self.fail(ReplayFailure::Input(format!(
                "record #{seq} ({}) has no journal entry: was the run journaled (`--journal`)?",
                op_name(r.op)
            ))));
        };
        self.cursor += 1;
        Ok(Matched {
            seq,
            flags: r.flags,
            regs,
            status,
            results,
            data,
        })
    }

    pub fn expect(&mut self, m: &Matched, what: &str, want: u64, got: u64) -> Result<(), HvError> {
        if want == got {
            Ok(())
        } else {
            Err(self.diverged(m.seq, format!("{what} {want}"), format!("{what} {got}")))
        }
    }
}

/// What follows an instance's end in the log.
pub(super) enum Next {
    /// A new instance: F1 fresh, or resumed from snapshot `id`, store rolled back.
    Instance {
        rollback: bool,
        snapshot: u64,
        committed_items: u32,
        seq: u64,
    },
    /// The log ends (or the partition was fenced / evicted).
    End,
}

/// After an instance ended: skip the runtime's records (its console lines,
/// its `Exit`) and kernel events up to the next recovery step.
pub(super) fn after_instance(s: &mut Shared) -> Result<Next, ReplayFailure> {
    while let Some(r) = s.records.get(s.cursor).copied() {
        let seq = s.cursor as u64;
        s.cursor += 1;
        if r.flags & rvm_abi::witness::flags::KERNEL_EVENT != 0 {
            let a = RecoveryArgs::from_bytes(&r.args);
            match KernelEvent::from_code(r.op) {
                Some(KernelEvent::RecoverRestart) | Some(KernelEvent::Unfence) => {
                    return Ok(Next::Instance {
                        rollback: false,
                        snapshot: a.snapshot_id,
                        committed_items: a.committed_items,
                        seq,
                    })
                }
                Some(KernelEvent::RecoverRollback) => {
                    return Ok(Next::Instance {
                        rollback: true,
                        snapshot: a.snapshot_id,
                        committed_items: a.committed_items,
                        seq,
                    })
                }
                _ => continue,
            }
        }
        if r.op == Hypercall::Exit as u16 || s.is_runtime_line(seq as usize) {
            continue;
        }
        if r.op == Hypercall::ConsoleWrite as u16 {
            // Text after the agent ended is the runtime's (a trap message,
            // a panic): it changes nothing the replay models.
            continue;
        }
        return Err(ReplayFailure::Diverged {
            seq,
            turn: s.turn_base + 1,
            expected: format!("the agent to call {}", op_name(r.op)),
            got: "the replayed agent had ended".into(),
        });
    }
    Ok(Next::End)
}
