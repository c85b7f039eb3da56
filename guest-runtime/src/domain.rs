//! A partition with several agents (a coherence domain): one wasmi instance
//! per agent, driven round-robin one turn at a time. Before each turn the
//! runtime tells the hypervisor which agent runs (`AgentSwitch`), so every
//! hypercall of the turn is that agent's.
//!
//! At a turn boundary the kernel may move an agent to another partition
//! (a coherence-domain split): its `AgentSwitch` answers `DEPART`, the
//! runtime snapshots that agent alone and drops its instance; it resumes
//! from that snapshot in the new partition's runtime.
//!
//! An agent may also **arrive** (a coherence merge): `AgentSwitch` reports
//! how many slots the agent table lists; a new slot is admitted before the
//! next turn: its module instantiated, its state restored from the
//! snapshot the kernel mapped for it. A partition whose last agent
//! departs is retired by the kernel at that agent's snapshot.
//!
//! In a bundle that evaluates coherence, a single agent runs here too (a
//! table of one), so the kernel can move it; it may resume from the
//! partition's snapshot like the single-agent runtime.
//!
//! Each agent gets the partition's memory budget and sees only the handles
//! listed for it (its channels) or for every agent (the partition's state
//! store). A trap or a refused yield in any agent ends the whole partition
//! with that failure (the recovery policy restarts every agent); when all
//! agents have finished, the partition exits with the first nonzero code.

use alloc::vec::Vec;

use rvm_abi::bootinfo::{exit, layout, AgentEntry, AgentTable, BootInfo, RestoreInfo};
use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, HandleList, RunOutcome};
use rvm_el1::arch;
use rvm_el1::el1_println as println;
use rvm_el1::hostcalls::{agent_switch, El1Host, Switch};

/// Turns an agent runs before the next agent's turn.
const TURNS_PER_VISIT: u64 = 1;

/// The handles listed for the agent in `slot` (tag `slot + 1`) or for all (tag 0).
fn handles_for(info: &BootInfo, page: &[u8], slot: usize) -> HandleList {
    let all = HandleList::from_boot_page(info, page);
    let tag = u8::try_from(slot + 1).unwrap_or(u8::MAX);
    HandleList::new(
        all.entries()
            .iter()
            .copied()
            .filter(|h| h.agent == 0 || h.agent == tag)
            .collect(),
    )
}

/// Load every agent of the table and run them to their end; never returns.
pub fn run(info: &BootInfo, page: &[u8], count: u32, fail: fn(u64) -> !) -> ! {
    let Some(table) = arch::agent_table_page(count) else {
        println!("runtime: no agent table page");
        fail(exit::RUNTIME_PANIC)
    };
    let n = AgentTable::count(table);
    if n == 0 || u32::try_from(n).ok() != Some(count) {
        println!("runtime: agent table lists {n} agents, the boot-info page {count}");
        fail(exit::RUNTIME_PANIC)
    }
    let restore = RestoreInfo::read(page).filter(RestoreInfo::is_restore);
    if restore.is_some() && n > 1 {
        println!("runtime: a partition with several agents does not resume from a snapshot");
        fail(exit::RESTORE_FAILED)
    }
    let fuel = FuelPolicy::from_boot_info(info.fuel_per_slice);
    let mut agents: Vec<(usize, u32, Agent<El1Host>)> = Vec::with_capacity(n);
    for slot in 0..n {
        let Some(entry) = AgentTable::read(table, slot) else {
            println!("runtime: agent table slot {slot} unreadable");
            fail(exit::RUNTIME_PANIC)
        };
        if entry.module_len == 0 {
            // The agent moved to another partition (a split): not ours.
            println!("runtime: agent {} (slot {slot}) moved away", entry.agent_id);
            continue;
        }
        let Some(wasm) = arch::wasm_module(entry.module_ipa, entry.module_len) else {
            println!("runtime: agent {slot}'s module lies outside the module window");
            fail(exit::RUNTIME_PANIC)
        };
        let config = AgentConfig {
            wasm_pages: info.wasm_pages,
            fuel,
            handles: handles_for(info, page, slot),
            wasi: rvm_agent_engine::WasiEnv::for_partition(info.name()),
        };
        let handles = config.handles.entries().len();
        match Agent::load(wasm, config, El1Host::SHARED) {
            Ok(mut agent) => {
                if n == 1 {
                    // One agent: its snapshot is the partition's state.
                    agent.allow_dormancy(true);
                    if let Some(r) = restore {
                        restore_from(&mut agent, r.image_ipa, r.image_len, r.snapshot_id, fail);
                    }
                }
                println!(
                    "runtime: agent {} (slot {slot}): module {} bytes, {handles} handles, `{}`",
                    entry.agent_id,
                    wasm.len(),
                    agent.entry_name()
                );
                agents.push((slot, entry.agent_id, agent));
            }
            Err(e) => {
                println!(
                    "runtime: agent {} (slot {slot}) refused: {e}",
                    entry.agent_id
                );
                fail(e.exit_code())
            }
        }
    }
    println!(
        "runtime: partition {} ({}): {n} agents, round-robin by turn, restart {}",
        info.partition,
        info.name(),
        info.restarts
    );
    let mut code: i32 = 0;
    let mut at = 0;
    let mut known = n;
    while !agents.is_empty() {
        at %= agents.len();
        let (slot, id) = (agents[at].0, agents[at].1);
        let answer = agent_switch(slot);
        if let Ok(Switch { listed, .. }) = answer {
            // Agents that arrived (a merge) join after this turn.
            while known < listed.min(AgentTable::MAX) {
                if let Some(arrived) = admit(info.wasm_pages, fuel, known, listed, fail) {
                    // Several agents now: no agent's snapshot is the
                    // partition's state, so none may put it to sleep.
                    for (_, _, a) in agents.iter_mut() {
                        a.allow_dormancy(false);
                    }
                    agents.push(arrived);
                }
                known += 1;
            }
        }
        let (_, _, agent) = &mut agents[at];
        match answer {
            Ok(Switch { depart: false, .. }) => {}
            Ok(Switch { depart: true, .. }) => {
                // A turn boundary: the agent moves to another partition.
                // Its snapshot is its state there; the kernel keeps it.
                // Refused, the agent stays and runs its turn.
                let before = arch::bench::now_ns();
                let handed = agent.snapshot();
                let ns = arch::bench::now_ns().wrapping_sub(before);
                if handed.is_ok() {
                    println!(
                        "runtime: agent {id} (slot {slot}) moved out after {} turns; hand-over took {ns} ns",
                        agent.turns()
                    );
                    agents.remove(at);
                    continue;
                }
                println!("runtime: agent {id} (slot {slot}) stays: its snapshot was refused");
            }
            Err(e) => {
                println!(
                    "runtime: the hypervisor refused agent slot {slot}: {}",
                    e.name()
                );
                fail(exit::RUNTIME_PANIC)
            }
        }
        let Some(report) = agent.run_turns(TURNS_PER_VISIT) else {
            at += 1;
            continue;
        };
        match report.outcome {
            RunOutcome::Finished { code: c } => {
                println!(
                    "runtime: agent {id} finished with code {c} after {} turns",
                    agent.turns()
                );
                if code == 0 {
                    code = c;
                }
                agents.remove(at);
            }
            RunOutcome::Trapped(trap) => {
                println!("runtime: agent {id} trapped: {trap}");
                fail(exit::TRAP)
            }
            RunOutcome::Stopped(e) => {
                println!(
                    "runtime: agent {id}: a fuel yield was refused ({}); stopping",
                    e.name()
                );
                fail(exit::TRAP)
            }
        }
    }
    println!("runtime: every agent finished");
    let (stack, stack_used) = arch::stack_usage();
    let (heap_used, heap_free) = arch::heap_usage();
    println!(
        "runtime: stack {stack_used}/{stack} bytes used; heap {heap_used} used, {heap_free} free"
    );
    arch::exit(u64::from_ne_bytes(i64::from(code).to_ne_bytes()))
}

/// Restore `agent` from the snapshot image at `[ipa, ipa + len)`.
fn restore_from(agent: &mut Agent<El1Host>, ipa: u64, len: u64, id: u64, fail: fn(u64) -> !) {
    let before = arch::bench::now_ns();
    let restored = arch::with_snapshot_image(ipa, len, |image| agent.restore(image));
    let ns = arch::bench::now_ns().wrapping_sub(before);
    match restored {
        Some(Ok(())) => println!(
            "runtime: restored snapshot {id} ({len} bytes) in {ns} ns; resuming after turn {}",
            agent.turns()
        ),
        Some(Err(e)) => {
            println!("runtime: snapshot {id} not restored: {e}");
            fail(exit::RESTORE_FAILED)
        }
        None => {
            println!("runtime: snapshot at {ipa:#x} (+{len:#x}) is outside the restore window");
            fail(exit::RESTORE_FAILED)
        }
    }
}

/// Admit the agent that arrived in `slot` (a merge): read its table entry
/// and its handles from pages read now, instantiate its module, restore it
/// from the snapshot the kernel mapped for it. `None` for a slot that
/// names nobody.
fn admit(
    wasm_pages: u32,
    fuel: FuelPolicy,
    slot: usize,
    listed: usize,
    fail: fn(u64) -> !,
) -> Option<(usize, u32, Agent<El1Host>)> {
    let count = u32::try_from(listed).unwrap_or(0);
    let entry: Option<AgentEntry> = arch::read_page_now(layout::AGENTS_IPA, count)
        .and_then(|table| AgentTable::read(&table, slot));
    let Some(entry) = entry.filter(|e| e.module_len != 0) else {
        println!("runtime: agent table slot {slot} names no agent");
        return None;
    };
    let Some(page) = arch::read_page_now(layout::BOOTINFO_IPA, 0) else {
        fail(exit::RUNTIME_PANIC)
    };
    let Some(info) = BootInfo::read(&page) else {
        println!("runtime: the boot-info page lost its magic");
        fail(exit::RUNTIME_PANIC)
    };
    let Some(wasm) = arch::wasm_module(entry.module_ipa, entry.module_len) else {
        println!(
            "runtime: arriving agent {}'s module lies outside the module window",
            entry.agent_id
        );
        fail(exit::RUNTIME_PANIC)
    };
    let config = AgentConfig {
        wasm_pages,
        fuel,
        handles: handles_for(&info, &page, slot),
        wasi: rvm_agent_engine::WasiEnv::for_partition(info.name()),
    };
    let handles = config.handles.entries().len();
    let mut agent = match Agent::load(wasm, config, El1Host::SHARED) {
        Ok(agent) => agent,
        Err(e) => {
            println!(
                "runtime: arriving agent {} (slot {slot}) refused: {e}",
                entry.agent_id
            );
            fail(e.exit_code())
        }
    };
    if entry.restore_len != 0 {
        restore_from(
            &mut agent,
            layout::SNAPSHOT_IPA,
            entry.restore_len,
            0,
            fail,
        );
    }
    println!(
        "runtime: agent {} (slot {slot}) arrived: module {} bytes, {handles} handles, `{}`, after turn {}",
        entry.agent_id,
        wasm.len(),
        agent.entry_name(),
        agent.turns()
    );
    Some((slot, entry.agent_id, agent))
}
