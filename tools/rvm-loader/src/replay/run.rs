//! Re-executing: the agent runs in the engine the EL1 runtime runs, one
//! instance after another as the log's recovery steps say, until the log
//! ends. F1 (`RecoverRestart`) starts a fresh instance with the committed
//! store kept; F2 (`RecoverRollback`) restores the replay's own snapshot
//! of the id the record names and rolls the replayed store back to it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use rvm_abi::bootinfo::HandleInfo;
use rvm_abi::journal::Entry;
use rvm_abi::witness::KernelEvent;
use rvm_abi::WitnessRecord;
use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, HandleList, RunOutcome};
use rvm_state::digest;

use super::host::ReplayHost;
use super::journal::check_bindings;
use super::log::{after_instance, Next, Shared};
use super::{
    hex, Progress, ReplayFailure, ReplayInput, ReplayReport, REPLAY_FUEL_SLICE, TURN_UNKNOWN,
};

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

/// Replay `input`; `progress` hears of every snapshot reproduced and
/// every instance ended.
pub fn replay(
    input: ReplayInput<'_>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<ReplayReport, ReplayFailure> {
    let (records, journal) = check_bindings(input.log, &input.records, input.journal)?;
    check_module(&records, input.wasm)?;
    let config = agent_config(input.name, input.wasm_pages, input.fuel_per_slice, &journal)?;
    let mut report = ReplayReport {
        records: records.len() as u64,
        ..ReplayReport::default()
    };
    let shared = Rc::new(RefCell::new(Shared::new(records, journal)));
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
                    "the log resumes from snapshot {id}, which the replay did not take"
                ))
            })?;
            agent.restore(&taken.image).map_err(|e| {
                ReplayFailure::Input(format!("snapshot {id} does not restore: {e}"))
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
                snapshot,
                committed_items,
                seq,
            } => {
                recover(&mut s, rollback, snapshot, committed_items, seq, turns)?;
                let what = if rollback {
                    "F2 rollback"
                } else {
                    "F1 restart"
                };
                let from = if snapshot == 0 {
                    "the pristine image".to_string()
                } else {
                    format!("snapshot {snapshot}")
                };
                progress(&Progress::Instance {
                    n: report.instances,
                    turns,
                    next: format!("{ended}; {what} (record #{seq}) from {from}"),
                });
                resume = (snapshot != 0).then_some(snapshot);
            }
        }
    }
    let s = shared.borrow();
    report.calls = s.calls;
    report.snapshots_matched = s.snapshots;
    let in_log = s
        .records
        .iter()
        .filter(|r| r.op == KernelEvent::SnapshotTaken as u16)
        .count() as u64;
    if in_log != s.snapshots && !report.log_ended_mid_run {
        return Err(ReplayFailure::Diverged {
            seq: s.cursor as u64,
            turn: 0,
            expected: format!("{in_log} snapshots"),
            got: format!("{} reproduced", s.snapshots),
        });
    }
    Ok(report)
}

/// `PartitionLoad` binds the module the partition loaded.
fn check_module(records: &[WitnessRecord], wasm: &[u8]) -> Result<(), ReplayFailure> {
    if let Some(load) = records
        .iter()
        .find(|r| r.op == KernelEvent::PartitionLoad as u16)
    {
        let have = digest::of_parts(&[wasm]);
        if load.args != have {
            return Err(ReplayFailure::Input(format!(
                "the module (digest {}) is not the one record #{} says the partition loaded ({})",
                hex(&have),
                load.seq,
                hex(&load.args)
            )));
        }
    }
    Ok(())
}

/// The agent as the partition ran it: its memory budget, its fuel policy
/// (or [`REPLAY_FUEL_SLICE`] for an unmetered one) and the handles its
/// journal's start entry names.
fn agent_config(
    name: &str,
    wasm_pages: u32,
    fuel_per_slice: u64,
    journal: &BTreeMap<u64, Entry>,
) -> Result<AgentConfig, ReplayFailure> {
    let handles: Vec<HandleInfo> = journal
        .values()
        .find_map(|e| match e {
            Entry::Start { handles, .. } => Some(handles.clone()),
            Entry::Call { .. } => None,
        })
        .ok_or_else(|| {
            ReplayFailure::Input("the journal has no start entry (the handles the partition started with): was the run journaled (`--journal`)?".into())
        })?;
    let fuel = std::num::NonZeroU64::new(if fuel_per_slice == 0 {
        REPLAY_FUEL_SLICE
    } else {
        fuel_per_slice
    })
    .map_or(FuelPolicy::Unmetered, FuelPolicy::PerSlice);
    Ok(AgentConfig {
        wasm_pages,
        fuel,
        handles: HandleList::new(handles),
        wasi: rvm_agent_engine::WasiEnv::for_partition(name),
    })
}

/// The recovery step of record `seq` on the replayed store: the open
/// transaction dropped and, for a rollback, the committed items of
/// `snapshot` restored; the store must then hold the `committed_items`
/// the record says.
fn recover(
    s: &mut Shared,
    rollback: bool,
    snapshot: u64,
    committed_items: u32,
    seq: u64,
    turns: u64,
) -> Result<(), ReplayFailure> {
    if rollback {
        let taken = s.taken.get(&snapshot).ok_or_else(|| {
            ReplayFailure::Input(format!(
                "record #{seq} rolls back to snapshot {snapshot}, which the replay did not take"
            ))
        })?;
        s.store.restore(&taken.store);
    } else {
        s.store.abort();
    }
    let have = s.store.committed_items();
    if have as u64 != u64::from(committed_items) {
        return Err(ReplayFailure::Diverged {
            seq,
            turn: turns,
            expected: format!("{committed_items} committed items after the recovery step"),
            got: format!("{have} in the replayed store"),
        });
    }
    Ok(())
}
