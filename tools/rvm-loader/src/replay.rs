//! Deterministic replay of a partition on the host (`witness replay`).
//!
//! Input: the partition's witness log, its input journal
//! ([`rvm_abi::journal`]) and the agent's WASM module. The agent runs in the
//! same engine the EL1 runtime runs (`rvm-agent-engine`), behind a
//! [`ReplayHost`] that answers each hypercall from the journal:
//!
//! 1. Every journal entry is checked against its record first: the record's
//!    `args` digest is recomputed from the entry, its outcome compared with
//!    the entry's status. A changed journal (or log) is named by the first
//!    record whose binding fails. The log's own chain is checked too.
//! 2. Each call the agent makes must be the log's next call record of this
//!    partition (the runtime's own console lines, `runtime: ...`, and its
//!    `Exit` are skipped), with the same handle, lengths and outgoing bytes.
//!    The journaled status and incoming bytes are handed back.
//! 3. The committed state store is modelled from the agent's own stage /
//!    validate / commit calls and their journaled statuses; every `StateGet`
//!    the journal answers is checked against the model.
//! 4. At every `Checkpoint`, the state hash is recomputed with the kernel's
//!    encoding ([`rvm_abi::recovery::StateEncoder`]) over the image the agent
//!    hands over and the modelled store, and compared with the journaled
//!    hash and the `CheckpointTaken` record.
//! 5. The log's recovery steps are followed: F1 (`RecoverRestart`) starts a
//!    fresh instance with the committed store kept; F2 (`RecoverRollback`)
//!    restores the replay's own checkpoint of the id the record names and
//!    rolls the modelled store back to it.
//!
//! Limits: one agent per partition (the slot-0 module); capability
//! derivation, revocation and `Prove` are not replayed (such a record stops
//! the replay with a clear message).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use rvm_abi::bootinfo::HandleInfo;
use rvm_abi::hex::to_string as hex;
use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::journal::{self, Entry};
use rvm_abi::recovery::{RecoveryArgs, StateEncoder};
use rvm_abi::witness::{KernelEvent, WitnessOp};
use rvm_abi::{CapHandle, HvError, Hypercall, WitnessRecord};
use rvm_agent_engine::{
    Agent, AgentConfig, CheckpointReceipt, DeriveRequest, FuelPolicy, HandleList, HostCalls,
    RunOutcome,
};
use sha2::{Digest, Sha256};

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

/// A replay that reproduced the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Turns the agent completed, over all its instances.
    pub turns: u64,
    /// Agent instances run (1 + restarts and rollbacks followed).
    pub instances: u32,
    /// Hypercalls answered from the journal.
    pub calls: u64,
    /// Checkpoints whose state hash the replay reproduced.
    pub checkpoints_matched: u64,
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
        match self.checkpoints_matched {
            0 => write!(f, "no checkpoint in the log: every call reproduced")?,
            n => write!(
                f,
                "{n} checkpoints matched: all {n} state hashes reproduced"
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
    /// A checkpoint's state hash was reproduced.
    Checkpoint { id: u64, turn: u64, seq: u64 },
    /// An instance ended; the log says what follows.
    Instance { n: u32, turns: u64, next: String },
}

fn sha256_16(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

fn op_name(code: u16) -> String {
    WitnessOp::from_code(code).map_or_else(|| format!("op {code:#x}"), |o| o.name().to_string())
}

/// Check the log's chain and every journal entry's binding to its record.
/// Returns the records decoded and the entries by sequence number.
pub fn check_bindings(
    log: u32,
    raw: &[[u8; 64]],
    journal: Vec<Entry>,
) -> Result<(Vec<WitnessRecord>, BTreeMap<u64, Entry>), ReplayFailure> {
    let mut records = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        let seq = i as u64;
        let r = WitnessRecord::from_bytes(bytes).map_err(|e| ReplayFailure::Tampered {
            seq,
            reason: format!("not a record ({e:?})"),
        })?;
        if r.seq != seq {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: format!("says it is #{}", r.seq),
            });
        }
        if r.partition != log {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: format!("belongs to partition {}", r.partition),
            });
        }
        records.push(r);
    }
    // Entries before links: a changed call record is named by its own
    // binding, not by the link of the record after it.
    let by_seq = bind_entries(&records, journal)?;
    let mut head = rvm_witness::Hash::ZERO;
    for (i, (bytes, r)) in raw.iter().zip(&records).enumerate() {
        if r.prev != head.prefix16() {
            return Err(ReplayFailure::Tampered {
                seq: i as u64,
                reason: "does not link its predecessor (this record or the one before was changed)"
                    .into(),
            });
        }
        head = rvm_witness::chain::chain_step(&head, bytes);
    }
    Ok((records, by_seq))
}

/// Check each entry against its record; the entries by sequence number.
fn bind_entries(
    records: &[WitnessRecord],
    journal: Vec<Entry>,
) -> Result<BTreeMap<u64, Entry>, ReplayFailure> {
    let mut journal = journal;
    journal.sort_by_key(Entry::seq);
    let mut by_seq = BTreeMap::new();
    for e in journal {
        let seq = e.seq();
        let Some(r) = records.get(usize::try_from(seq).unwrap_or(usize::MAX)) else {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: "a journal entry names a record the log does not hold".into(),
            });
        };
        match &e {
            Entry::Call {
                regs, status, data, ..
            } => {
                if r.flags & rvm_abi::witness::flags::KERNEL_EVENT != 0 {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: "a call's journal entry is bound to a kernel event".into(),
                    });
                }
                if i64::from(r.outcome) != *status {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: format!(
                            "journal status {status} but the record's outcome is {}",
                            r.outcome
                        ),
                    });
                }
                let digest = sha256_16(&[&journal::regs_bytes(regs), data]);
                if digest != r.args {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: format!(
                            "{}: the journal entry's digest {} is not the record's args {}",
                            op_name(r.op),
                            hex(&digest),
                            hex(&r.args)
                        ),
                    });
                }
            }
            Entry::Start { handles, .. } => {
                if r.op != KernelEvent::PartitionStart as u16 {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: "a start entry is not bound to PartitionStart".into(),
                    });
                }
                let mut input = Vec::new();
                journal::start_digest_input(&mut |b: &[u8]| input.extend_from_slice(b), handles);
                if sha256_16(&[&input]) != r.args {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: "the start entry's handles are not the ones the record binds"
                            .into(),
                    });
                }
            }
        }
        if by_seq.insert(seq, e).is_some() {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: "two journal entries for one record".into(),
            });
        }
    }
    // A record that says it has an entry must have one: a dropped entry is
    // named at its record.
    if !by_seq.is_empty() {
        if let Some(r) = records.iter().find(|r| {
            r.flags & rvm_abi::witness::flags::JOURNALED != 0 && !by_seq.contains_key(&r.seq)
        }) {
            return Err(ReplayFailure::Tampered {
                seq: r.seq,
                reason: format!(
                    "{} says it is journaled, but the journal has no entry for it",
                    op_name(r.op)
                ),
            });
        }
    }
    Ok(by_seq)
}

/// The committed store as the agent's own calls built it.
#[derive(Clone, Debug, Default)]
struct StoreModel {
    committed: BTreeMap<Vec<u8>, Vec<u8>>,
    staged: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StoreModel {
    fn commit(&mut self) {
        for (k, v) in self.staged.drain(..) {
            self.committed.insert(k, v);
        }
    }
}

/// A checkpoint the replay took: the image and the store it was hashed with.
struct Taken {
    image: Vec<u8>,
    store: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What the host calls of all instances share.
struct Shared {
    records: Vec<WitnessRecord>,
    journal: BTreeMap<u64, Entry>,
    cursor: usize,
    store: StoreModel,
    taken: BTreeMap<u64, Taken>,
    calls: u64,
    checkpoints: u64,
    /// The first thing that went wrong; every later call fails.
    failure: Option<ReplayFailure>,
    /// The log ran out while the agent still called.
    exhausted: bool,
    /// Turns completed by the current instance before it started (restore).
    turn_base: u64,
    progress: Vec<Progress>,
}

/// Which record of the log a call of the agent is.
struct Matched {
    seq: u64,
    regs: [u64; 6],
    status: i64,
    results: [u64; 3],
    data: Vec<u8>,
}

impl Matched {
    fn status(&self) -> Result<(), HvError> {
        if self.status == 0 {
            Ok(())
        } else {
            Err(HvError::from_code(self.status).unwrap_or(HvError::NotSupported))
        }
    }
}

impl Shared {
    fn fail(&mut self, f: ReplayFailure) -> HvError {
        if self.failure.is_none() {
            self.failure = Some(f);
        }
        HvError::WitnessUnavailable
    }

    /// A difference inside a turn (its number is filled in when the
    /// instance has stopped: one past the turns it completed).
    fn diverged(&mut self, seq: u64, expected: String, got: String) -> HvError {
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
    fn next(&mut self, call: Hypercall, text: Option<&[u8]>) -> Result<Matched, HvError> {
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
                    _ => {
                        return Err(self.diverged(
                            seq,
                            op_name(r.op),
                            format!("the agent calling {}", call.name()),
                        ))
                    }
                }
            }
            let own_text = text.is_some_and(
                |t| matches!(self.journal.get(&seq), Some(Entry::Call { data, .. }) if data == t),
            );
            if !own_text && self.is_runtime_line(i) {
                self.cursor += 1;
                continue;
            }
            if r.op != call as u16 {
                return Err(self.diverged(seq, op_name(r.op), call.name().to_string()));
            }
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
                    call.name()
                ))));
            };
            self.cursor += 1;
            self.calls += 1;
            return Ok(Matched {
                seq,
                regs,
                status,
                results,
                data,
            });
        }
    }

    fn expect(&mut self, m: &Matched, what: &str, want: u64, got: u64) -> Result<(), HvError> {
        if want == got {
            Ok(())
        } else {
            Err(self.diverged(m.seq, format!("{what} {want}"), format!("{what} {got}")))
        }
    }
}

/// The engine's host calls, answered from the journal.
pub struct ReplayHost {
    shared: Rc<RefCell<Shared>>,
}

impl ReplayHost {
    fn call(&self) -> std::cell::RefMut<'_, Shared> {
        self.shared.borrow_mut()
    }
}

impl HostCalls for ReplayHost {
    fn console_write(&mut self, text: &[u8]) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ConsoleWrite, Some(text))?;
        if !m.data.is_empty() && m.data != text {
            return Err(s.diverged(
                m.seq,
                format!("console text {:?}", String::from_utf8_lossy(&m.data)),
                format!("{:?}", String::from_utf8_lossy(text)),
            ));
        }
        m.status()
    }

    fn channel_send(&mut self, channel: CapHandle, message: &[u8]) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ChannelSend, None)?;
        s.expect(&m, "channel handle", m.regs[0], channel.to_raw())?;
        s.expect(&m, "message length", m.regs[2], message.len() as u64)?;
        if !m.data.is_empty() && m.data != message {
            return Err(s.diverged(
                m.seq,
                format!("message {}", hex(&m.data)),
                format!("message {}", hex(message)),
            ));
        }
        m.status()
    }

    fn channel_recv(&mut self, channel: CapHandle, buf: &mut [u8]) -> Result<usize, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ChannelRecv, None)?;
        s.expect(&m, "channel handle", m.regs[0], channel.to_raw())?;
        s.expect(&m, "receive capacity", m.regs[2], buf.len() as u64)?;
        m.status()?;
        if m.data.len() > buf.len() {
            return Err(s.diverged(
                m.seq,
                format!("a message of {} bytes", m.data.len()),
                format!("room for {}", buf.len()),
            ));
        }
        buf[..m.data.len()].copy_from_slice(&m.data);
        Ok(m.data.len())
    }

    fn state_stage(&mut self, store: CapHandle, key: &[u8], value: &[u8]) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateStage, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        s.expect(&m, "key length", m.regs[2], key.len() as u64)?;
        s.expect(&m, "value length", m.regs[4], value.len() as u64)?;
        if !m.data.is_empty() && m.data != [key, value].concat() {
            return Err(s.diverged(
                m.seq,
                format!("staged item {}", hex(&m.data)),
                format!("{}{}", hex(key), hex(value)),
            ));
        }
        m.status()?;
        s.store.staged.push((key.to_vec(), value.to_vec()));
        Ok(())
    }

    fn state_validate(&mut self, store: CapHandle) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateValidate, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        let r = m.status();
        if r == Err(HvError::ValidationFailed) {
            s.store.staged.clear();
        }
        r
    }

    fn state_commit(&mut self, store: CapHandle) -> Result<(), HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateCommit, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        match m.status() {
            Ok(()) => {
                s.store.commit();
                Ok(())
            }
            Err(HvError::ValidationFailed) => {
                s.store.staged.clear();
                Err(HvError::ValidationFailed)
            }
            Err(e) => Err(e),
        }
    }

    fn state_get(
        &mut self,
        store: CapHandle,
        key: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::StateGet, None)?;
        s.expect(&m, "store handle", m.regs[0], store.to_raw())?;
        s.expect(&m, "key length", m.regs[2], key.len() as u64)?;
        s.expect(&m, "value capacity", m.regs[4], buf.len() as u64)?;
        if m.data.len() >= key.len() && !m.data.is_empty() && &m.data[..key.len()] != key {
            return Err(s.diverged(
                m.seq,
                format!("key {}", hex(&m.data[..key.len()])),
                format!("key {}", hex(key)),
            ));
        }
        let modelled = s.store.committed.get(key).cloned();
        if let Err(e) = m.status() {
            // A key with no value is `InvalidArgument`; the model must agree.
            if e == HvError::InvalidArgument && modelled.is_some() {
                return Err(s.diverged(
                    m.seq,
                    "no committed value".into(),
                    "a value in the replayed store".into(),
                ));
            }
            return Err(e);
        }
        let value = &m.data[key.len().min(m.data.len())..];
        if modelled.as_deref() != Some(value) {
            return Err(s.diverged(
                m.seq,
                format!("committed value {}", hex(value)),
                format!(
                    "{} in the replayed store",
                    modelled.map_or("no value".into(), |v| hex(&v))
                ),
            ));
        }
        let n = value.len().min(buf.len());
        buf[..n].copy_from_slice(&value[..n]);
        Ok(value.len())
    }

    fn clock_read(&mut self) -> Result<u64, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::ClockRead, None)?;
        m.status()?;
        let v = m.results[0];
        if m.data != v.to_le_bytes() {
            return Err(s.diverged(
                m.seq,
                format!("clock {}", hex(&m.data)),
                format!("result register {v}"),
            ));
        }
        Ok(v)
    }

    fn yield_now(&mut self) -> Result<(), HvError> {
        // Not witnessed; a replay that has failed stops the agent here.
        if self.call().failure.is_some() {
            Err(HvError::WitnessUnavailable)
        } else {
            Ok(())
        }
    }

    fn cap_derive(&mut self, _request: &DeriveRequest<'_>) -> Result<CapHandle, HvError> {
        let mut s = self.call();
        let seq = s.cursor as u64;
        Err(s.fail(ReplayFailure::Unsupported {
            seq,
            what: "CapDerive".into(),
        }))
    }

    fn cap_revoke(
        &mut self,
        _handle: CapHandle,
        _proof: Option<&[u8]>,
        _nonce: u64,
    ) -> Result<(), HvError> {
        let mut s = self.call();
        let seq = s.cursor as u64;
        Err(s.fail(ReplayFailure::Unsupported {
            seq,
            what: "CapRevoke".into(),
        }))
    }

    fn prove(
        &mut self,
        _handle: CapHandle,
        _out: &mut [u8; PROVE_BUFFER_LEN],
    ) -> Result<(), HvError> {
        let mut s = self.call();
        let seq = s.cursor as u64;
        Err(s.fail(ReplayFailure::Unsupported {
            seq,
            what: "Prove".into(),
        }))
    }

    fn checkpoint(&mut self, header: &[u8], memory: &[u8]) -> Result<CheckpointReceipt, HvError> {
        let mut s = self.call();
        let m = s.next(Hypercall::Checkpoint, None)?;
        s.expect(&m, "image header length", m.regs[1], header.len() as u64)?;
        s.expect(&m, "image memory length", m.regs[3], memory.len() as u64)?;
        m.status()?;
        let image = [header, memory].concat();
        let turn =
            rvm_agent_engine::checkpoint::decode(&image).map_or(s.turn_base, |i| i.meta.turn);
        let mut h = Sha256::new();
        {
            let mut enc =
                StateEncoder::new(|b: &[u8]| h.update(b), (header.len() + memory.len()) as u64);
            enc.image(header);
            enc.image(memory);
            enc.items(s.store.committed.len() as u64);
            for (k, v) in &s.store.committed {
                enc.item(k, v);
            }
        }
        let hash: [u8; 32] = h.finalize().into();
        if m.data != hash {
            // Taken as turn `turn` ended: the difference shows in that turn.
            let (expected, got) = (
                format!("state hash {}", hex(&m.data)),
                format!("state hash {}", hex(&hash)),
            );
            return Err(s.fail(ReplayFailure::Diverged {
                seq: m.seq,
                turn,
                expected,
                got,
            }));
        }
        // The kernel's CheckpointTaken record follows the call's.
        let i = s.cursor;
        let taken = s.records.get(i).copied();
        match taken {
            Some(r) if r.op == KernelEvent::CheckpointTaken as u16 => {
                if r.args[..] != hash[..16] {
                    let (expected, got) = (
                        format!("CheckpointTaken {}", hex(&r.args)),
                        format!("state hash {}", hex(&hash[..16])),
                    );
                    return Err(s.fail(ReplayFailure::Diverged {
                        seq: i as u64,
                        turn,
                        expected,
                        got,
                    }));
                }
                s.cursor += 1;
            }
            _ => {
                return Err(s.diverged(
                    i as u64,
                    "the log to go on".into(),
                    "a CheckpointTaken record after the Checkpoint call".into(),
                ))
            }
        }
        let id = m.results[0];
        let store = s.store.committed.clone();
        s.taken.insert(id, Taken { image, store });
        s.checkpoints += 1;
        s.progress.push(Progress::Checkpoint {
            id,
            turn,
            seq: m.seq,
        });
        let mut hash_prefix = [0u8; 16];
        hash_prefix.copy_from_slice(&hash[..16]);
        Ok(CheckpointReceipt { id, hash_prefix })
    }
}

/// What follows an instance's end in the log.
enum Next {
    /// A new instance: F1 fresh, or resumed from checkpoint `id`, store rolled back.
    Instance {
        rollback: bool,
        checkpoint: u64,
        committed_items: u32,
        seq: u64,
    },
    /// The log ends (or the partition was fenced / evicted).
    End,
}

/// After an instance ended: skip the runtime's records (its console lines,
/// its `Exit`) and kernel events up to the next recovery step.
fn after_instance(s: &mut Shared) -> Result<Next, ReplayFailure> {
    while let Some(r) = s.records.get(s.cursor).copied() {
        let seq = s.cursor as u64;
        s.cursor += 1;
        if r.flags & rvm_abi::witness::flags::KERNEL_EVENT != 0 {
            let a = RecoveryArgs::from_bytes(&r.args);
            match KernelEvent::from_code(r.op) {
                Some(KernelEvent::RecoverRestart) | Some(KernelEvent::Unfence) => {
                    return Ok(Next::Instance {
                        rollback: false,
                        checkpoint: a.checkpoint_id,
                        committed_items: a.committed_items,
                        seq,
                    })
                }
                Some(KernelEvent::RecoverRollback) => {
                    return Ok(Next::Instance {
                        rollback: true,
                        checkpoint: a.checkpoint_id,
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

/// Stack for the thread [`replay_on_own_stack`] runs a replay on: wasmi's
/// interpreter and the host calls nest deeply in unoptimised builds.
pub const REPLAY_STACK_BYTES: usize = 64 << 20;

/// [`replay`] on a thread of its own with [`REPLAY_STACK_BYTES`] of stack.
pub fn replay_on_own_stack(
    input: ReplayInput<'_>,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<ReplayReport, ReplayFailure> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("replay".into())
            .stack_size(REPLAY_STACK_BYTES)
            .spawn_scoped(scope, move || replay(input, progress))
            .map_err(|e| ReplayFailure::Input(format!("cannot start the replay thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(ReplayFailure::Input("the replay thread panicked".into())))
    })
}

/// Replay `input`; `progress` hears of every checkpoint reproduced and
/// every instance ended.
pub fn replay(
    input: ReplayInput<'_>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<ReplayReport, ReplayFailure> {
    let (records, journal) = check_bindings(input.log, &input.records, input.journal)?;
    // `PartitionLoad` binds the module the partition loaded.
    if let Some(load) = records
        .iter()
        .find(|r| r.op == KernelEvent::PartitionLoad as u16)
    {
        let have = sha256_16(&[input.wasm]);
        if load.args != have {
            return Err(ReplayFailure::Input(format!(
                "the module (digest {}) is not the one record #{} says the partition loaded ({})",
                hex(&have),
                load.seq,
                hex(&load.args)
            )));
        }
    }
    let handles: Vec<HandleInfo> = journal
        .values()
        .find_map(|e| match e {
            Entry::Start { handles, .. } => Some(handles.clone()),
            Entry::Call { .. } => None,
        })
        .ok_or_else(|| {
            ReplayFailure::Input("the journal has no start entry (the handles the partition started with): was the run journaled (`--journal`)?".into())
        })?;
    let fuel = std::num::NonZeroU64::new(if input.fuel_per_slice == 0 {
        REPLAY_FUEL_SLICE
    } else {
        input.fuel_per_slice
    })
    .map_or(FuelPolicy::Unmetered, FuelPolicy::PerSlice);
    let config = AgentConfig {
        wasm_pages: input.wasm_pages,
        fuel,
        handles: HandleList::new(handles),
    };
    let mut report = ReplayReport {
        records: records.len() as u64,
        ..ReplayReport::default()
    };
    let shared = Rc::new(RefCell::new(Shared {
        records,
        journal,
        cursor: 0,
        store: StoreModel::default(),
        taken: BTreeMap::new(),
        calls: 0,
        checkpoints: 0,
        failure: None,
        exhausted: false,
        turn_base: 0,
        progress: Vec::new(),
    }));
    // The agent's calls begin after its PartitionStart record.
    let start = shared
        .borrow()
        .records
        .iter()
        .position(|r| r.op == KernelEvent::PartitionStart as u16)
        .map_or(0, |i| i + 1);
    shared.borrow_mut().cursor = start;
    let mut resume: Option<u64> = None;
    loop {
        let host = ReplayHost {
            shared: Rc::clone(&shared),
        };
        let mut agent = Agent::load(input.wasm, config.clone(), host)
            .map_err(|e| ReplayFailure::Input(format!("the module does not load: {e}")))?;
        if let Some(id) = resume {
            let s = shared.borrow();
            let taken = s.taken.get(&id).ok_or_else(|| {
                ReplayFailure::Input(format!(
                    "the log resumes from checkpoint {id}, which the replay did not take"
                ))
            })?;
            agent.restore(&taken.image).map_err(|e| {
                ReplayFailure::Input(format!("checkpoint {id} does not restore: {e}"))
            })?;
        }
        shared.borrow_mut().turn_base = agent.turns();
        report.instances += 1;
        let run = agent.run();
        let turns = agent.turns();
        report.turns += run.turns;
        let mut s = shared.borrow_mut();
        for p in s.progress.drain(..) {
            progress(&p);
        }
        if let Some(mut f) = s.failure.take() {
            if let ReplayFailure::Diverged { turn, .. } = &mut f {
                if *turn == TURN_UNKNOWN {
                    // The turn the agent was in: one past those it completed.
                    *turn = turns + 1;
                }
            }
            return Err(f);
        }
        if s.exhausted {
            report.log_ended_mid_run = true;
            break;
        }
        let ended = match &run.outcome {
            RunOutcome::Finished { code } => format!("finished with code {code}"),
            RunOutcome::Trapped(t) => format!("trapped: {t}"),
            RunOutcome::Stopped(e) => format!("stopped: {}", e.name()),
        };
        s.turn_base = turns;
        match after_instance(&mut s)? {
            Next::End => {
                progress(&Progress::Instance {
                    n: report.instances,
                    turns,
                    next: format!("{ended}; the log ends"),
                });
                break;
            }
            Next::Instance {
                rollback,
                checkpoint,
                committed_items,
                seq,
            } => {
                if rollback {
                    let snapshot = s.taken.get(&checkpoint).map(|t| t.store.clone()).ok_or_else(|| {
                        ReplayFailure::Input(format!("record #{seq} rolls back to checkpoint {checkpoint}, which the replay did not take"))
                    })?;
                    s.store.committed = snapshot;
                }
                s.store.staged.clear();
                if s.store.committed.len() as u64 != u64::from(committed_items) {
                    return Err(ReplayFailure::Diverged {
                        seq,
                        turn: turns,
                        expected: format!(
                            "{committed_items} committed items after the recovery step"
                        ),
                        got: format!("{} in the replayed store", s.store.committed.len()),
                    });
                }
                let what = if rollback {
                    "F2 rollback"
                } else {
                    "F1 restart"
                };
                let from = if checkpoint == 0 {
                    "the pristine image".to_string()
                } else {
                    format!("checkpoint {checkpoint}")
                };
                progress(&Progress::Instance {
                    n: report.instances,
                    turns,
                    next: format!("{ended}; {what} (record #{seq}) from {from}"),
                });
                resume = (checkpoint != 0).then_some(checkpoint);
            }
        }
    }
    let s = shared.borrow();
    report.calls = s.calls;
    report.checkpoints_matched = s.checkpoints;
    let in_log = s
        .records
        .iter()
        .filter(|r| r.op == KernelEvent::CheckpointTaken as u16)
        .count() as u64;
    if in_log != s.checkpoints && !report.log_ended_mid_run {
        return Err(ReplayFailure::Diverged {
            seq: s.cursor as u64,
            turn: 0,
            expected: format!("{in_log} checkpoints"),
            got: format!("{} reproduced", s.checkpoints),
        });
    }
    Ok(report)
}

/// The entries of log `log` among journal frame lines (other lines and
/// other logs' entries are skipped; a damaged journal line is an error
/// naming its line number).
pub fn parse_journal(text: &str, log: u32) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if !journal::is_journal_line(line) {
            continue;
        }
        let f = journal::JournalFrame::parse(line)
            .ok_or_else(|| format!("line {}: a damaged journal frame", n + 1))?;
        if f.log == log {
            out.push(f.entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::witness::{Outcome, RECORD_VERSION};

    /// A chained log of `recs` (op, outcome, args) for partition 1.
    fn chain(recs: &[(u16, i16, [u8; 16])]) -> Vec<[u8; 64]> {
        let mut head = rvm_witness::Hash::ZERO;
        let mut out = Vec::new();
        for (i, (op, outcome, args)) in recs.iter().enumerate() {
            let mut r = WitnessRecord::new(WitnessOp::Call(Hypercall::Null), Outcome::Done, 1);
            r.version = RECORD_VERSION;
            r.op = *op;
            if op & 0x8000 != 0 {
                r.flags = rvm_abi::witness::flags::KERNEL_EVENT;
            }
            r.outcome = *outcome;
            r.seq = i as u64;
            r.args = *args;
            r.prev = head.prefix16();
            let b = r.to_bytes();
            head = rvm_witness::chain::chain_step(&head, &b);
            out.push(b);
        }
        out
    }

    fn call_entry(seq: u64, regs: [u64; 6], status: i64, data: &[u8]) -> (Entry, [u8; 16]) {
        let e = Entry::Call {
            seq,
            regs,
            status,
            results: [data.len() as u64, 0, 0],
            data: data.to_vec(),
        };
        (e, sha256_16(&[&journal::regs_bytes(&regs), data]))
    }

    #[test]
    fn bindings_hold_and_a_changed_entry_is_named() {
        let handles = vec![HandleInfo {
            raw: 0x1_0000,
            kind: 4,
            rights: 3,
            agent: 0,
        }];
        let mut start_input = Vec::new();
        journal::start_digest_input(&mut |b: &[u8]| start_input.extend_from_slice(b), &handles);
        let (recv, recv_args) = call_entry(1, [0x1_0000, 0x4000, 64, 0, 0, 0], 0, b"packet-1");
        let (block, block_args) = call_entry(
            2,
            [0x1_0000, 0x4000, 64, 0, 0, 0],
            HvError::WouldBlock.code(),
            b"",
        );
        let log = chain(&[
            (
                KernelEvent::PartitionStart as u16,
                0,
                sha256_16(&[&start_input]),
            ),
            (Hypercall::ChannelRecv as u16, 0, recv_args),
            (
                Hypercall::ChannelRecv as u16,
                HvError::WouldBlock.outcome_code(),
                block_args,
            ),
        ]);
        let good = vec![
            Entry::Start {
                seq: 0,
                handles: handles.clone(),
            },
            recv.clone(),
            block.clone(),
        ];
        let (records, by_seq) = check_bindings(1, &log, good).expect("an untouched journal binds");
        assert_eq!((records.len(), by_seq.len()), (3, 3));

        // One byte of a received message changed.
        let Entry::Call {
            seq,
            regs,
            status,
            results,
            mut data,
        } = recv.clone()
        else {
            unreachable!()
        };
        data[0] ^= 1;
        let changed = Entry::Call {
            seq,
            regs,
            status,
            results,
            data,
        };
        let err = check_bindings(1, &log, vec![changed, block.clone()]).unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 1, .. }),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);

        // A WouldBlock turned into success.
        let Entry::Call {
            seq,
            regs,
            results,
            data,
            ..
        } = block
        else {
            unreachable!()
        };
        let err = check_bindings(
            1,
            &log,
            vec![Entry::Call {
                seq,
                regs,
                status: 0,
                results,
                data,
            }],
        )
        .unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 2, .. }),
            "{err}"
        );

        // Foreign handles in the start entry.
        let other = vec![HandleInfo {
            raw: 0x2_0000,
            ..handles[0]
        }];
        let err = check_bindings(
            1,
            &log,
            vec![Entry::Start {
                seq: 0,
                handles: other,
            }],
        )
        .unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 0, .. }),
            "{err}"
        );

        // A changed call record is named by its entry's binding...
        let mut bad_log = log.clone();
        bad_log[1][40] ^= 1;
        let err = check_bindings(1, &bad_log, vec![recv.clone()]).unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 1, .. }),
            "{err}"
        );
        // ... and one without an entry by the link of the record after it.
        let err = check_bindings(1, &bad_log, vec![]).unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn journal_lines_are_picked_out_of_a_console_stream() {
        let (e, _) = call_entry(4, [1, 2, 3, 4, 5, 6], 0, b"x");
        let line = String::from_utf8(e.encode(7)).unwrap();
        let text = format!(
            "rvm: hello\n{line}[agent] text\n{}",
            String::from_utf8(e.encode(8)).unwrap()
        );
        assert_eq!(parse_journal(&text, 7), Ok(vec![e.clone()]));
        assert_eq!(parse_journal(&text, 9), Ok(vec![]));
        // One hex digit lost in transit.
        let damaged = format!("{}\n", &line[..line.len() - 2]);
        assert!(parse_journal(&damaged, 7).unwrap_err().contains("line 1"));
    }
}
