//! The EL1 guest runtime: reads the boot-info page, sets up the heap, loads
//! the partition's agent with the agent engine and runs it; every host
//! function is a hypercall. It ends with the `Exit` hypercall: the agent's
//! own code when it finished, else one of `rvm_abi::bootinfo::exit`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use rvm_abi::bootinfo::exit;
use rvm_abi::bootinfo::{BootInfo, RestoreInfo};
use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, RunOutcome};
use rvm_el1::arch;
use rvm_el1::el1_println as println;
use rvm_el1::hostcalls::El1Host;

mod domain;

rvm_el1::el1_main!(main);

fn fail(code: u64) -> ! {
    report_resources();
    arch::exit(code)
}

fn report_resources() {
    let (stack, stack_used) = arch::stack_usage();
    let (heap_used, heap_free) = arch::heap_usage();
    println!(
        "runtime: stack {stack_used}/{stack} bytes used; heap {heap_used} used, {heap_free} free"
    );
}

fn main(boot_info_ipa: u64) -> ! {
    let Some(page) = arch::boot_page(boot_info_ipa) else {
        println!("runtime: no boot-info page at {boot_info_ipa:#x}");
        fail(exit::RUNTIME_PANIC)
    };
    let Some(info) = BootInfo::read(page) else {
        println!("runtime: boot-info page at {boot_info_ipa:#x} has a bad magic");
        fail(exit::RUNTIME_PANIC)
    };
    if let Err(e) = arch::init_heap(info.heap_ipa, info.heap_len) {
        println!("runtime: cannot use the heap: {e:?}");
        fail(exit::RUNTIME_PANIC)
    }
    // Several agents: each its own instance, round-robin by turn.
    let agents = rvm_abi::bootinfo::agent_count(page);
    if agents != 0 {
        domain::run(&info, page, agents, fail)
    }
    let Some(wasm) = arch::wasm_module(info.wasm_ipa, info.wasm_len) else {
        println!(
            "runtime: module at {:#x} (+{:#x}) is outside the module window",
            info.wasm_ipa, info.wasm_len
        );
        fail(exit::RUNTIME_PANIC)
    };
    let config = AgentConfig::from_boot_info(&info, page);
    let fuel = match config.fuel {
        FuelPolicy::Unmetered => 0,
        FuelPolicy::PerSlice(f) => f.get(),
    };
    println!(
        "runtime: partition {} ({}): module {} bytes, budget {} pages, fuel/slice {}, {} handles, restart {}",
        info.partition,
        info.name(),
        wasm.len(),
        info.wasm_pages,
        fuel,
        config.handles.entries().len(),
        info.restarts
    );

    let mut agent = match Agent::load(wasm, config, El1Host::ALONE) {
        Ok(agent) => agent,
        Err(e) => {
            println!("runtime: module refused: {e}");
            fail(e.exit_code())
        }
    };
    // One agent: its snapshot is the partition's state, so an idle turn
    // may put a `Dormant`-tier partition to sleep (the kernel decides).
    agent.allow_dormancy(true);
    if let Some(restore) = RestoreInfo::read(page).filter(RestoreInfo::is_restore) {
        let before = arch::bench::now_ns();
        let restored = arch::with_snapshot_image(restore.image_ipa, restore.image_len, |image| {
            agent.restore(image)
        });
        let ns = arch::bench::now_ns().wrapping_sub(before);
        match restored {
            Some(Ok(())) => println!(
                "runtime: restored snapshot {} ({} bytes) in {ns} ns; resuming after turn {}",
                restore.snapshot_id,
                restore.image_len,
                agent.turns()
            ),
            Some(Err(e)) => {
                println!("runtime: snapshot {} not restored: {e}", restore.snapshot_id);
                fail(exit::RESTORE_FAILED)
            }
            None => {
                println!(
                    "runtime: snapshot at {:#x} (+{:#x}) is outside the restore window",
                    restore.image_ipa, restore.image_len
                );
                fail(exit::RESTORE_FAILED)
            }
        }
    }
    println!("runtime: running `{}`", agent.entry_name());
    let report = agent.run();
    match report.outcome {
        RunOutcome::Finished { code } => {
            println!(
                "runtime: agent finished with code {code} ({} host calls, {} fuel slices, {} turns, {} snapshots)",
                report.host_calls, report.slices, report.turns, report.snapshots
            );
            report_resources();
            // The agent's code, sign-extended into x1.
            arch::exit(u64::from_ne_bytes(i64::from(code).to_ne_bytes()))
        }
        RunOutcome::Trapped(trap) => {
            println!("runtime: agent trapped: {trap}");
            fail(exit::TRAP)
        }
        RunOutcome::Stopped(e) => {
            println!("runtime: a fuel yield was refused ({}); stopping", e.name());
            fail(exit::TRAP)
        }
    }
}
