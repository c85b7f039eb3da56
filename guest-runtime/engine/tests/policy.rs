//! The engine's policy on forged modules: signatures, start functions,
//! entries, traps, memory growth against the budget, exit codes, snapshots.

mod support;

use std::num::NonZeroU64;

use rvm_abi::imports::HostImport;
use rvm_agent_engine::snapshot;
use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, HandleList, LoadError, RunOutcome, Trap};
use support::fake::{two_partitions, YieldLimit};
use support::forge::{op, sleb, Module, I32, I64};

fn load(wasm: &[u8], pages: u32) -> Result<Agent<support::fake::FakeHost>, LoadError> {
    let (host, _) = two_partitions(1, YieldLimit::Refuse(0));
    let cfg = AgentConfig {
        wasm_pages: pages,
        fuel: FuelPolicy::Unmetered,
        handles: host.handle_list(),
        wasi: rvm_agent_engine::WasiEnv::default(),
    };
    Agent::load(wasm, cfg, host)
}

fn i32_const(v: i32) -> Vec<u8> {
    let mut b = vec![op::I32_CONST];
    sleb(i64::from(v), &mut b);
    b
}

/// `run` = `exit(memory.grow(delta))` on a memory of `min` pages.
fn grower(min: u32, delta: i32) -> Vec<u8> {
    let mut m = Module::new();
    let exit = m.import("rvm", "exit", &[I32], &[]);
    let mut body = i32_const(delta);
    body.extend(op::MEMORY_GROW);
    body.push(op::CALL);
    body.push(exit as u8);
    let run = m.func(&[], &[], &body);
    m.memory(min).export("run", run);
    m.encode()
}

#[test]
fn memory_grows_up_to_the_budget_and_no_further() {
    let mut agent = load(&grower(1, 3), 4).unwrap();
    assert_eq!(
        agent.run().outcome,
        RunOutcome::Finished { code: 1 },
        "grow returns the old size"
    );
    assert_eq!(agent.memory_len(), 4 << 16);

    let mut agent = load(&grower(1, 4), 4).unwrap();
    assert_eq!(
        agent.run().outcome,
        RunOutcome::Finished { code: -1 },
        "grow past the budget fails"
    );
    assert_eq!(agent.memory_len(), 1 << 16);
}

#[test]
fn declared_minimum_equal_to_the_budget_is_accepted_and_one_more_is_refused() {
    assert!(load(&grower(4, 0), 4).is_ok());
    assert_eq!(
        load(&grower(5, 0), 4).err(),
        Some(LoadError::MemoryOverBudget {
            declared_pages: 5,
            budget_pages: 4
        })
    );
}

#[test]
fn wrong_import_signature_is_refused() {
    let mut m = Module::new();
    let f = m.import("rvm", "console_write", &[I32], &[I32]);
    let mut body = i32_const(0);
    body.extend([op::CALL, f as u8, op::DROP]);
    let run = m.func(&[], &[], &body);
    m.memory(1).export("run", run);
    assert_eq!(
        load(&m.encode(), 4).err(),
        Some(LoadError::ImportSignature {
            import: HostImport::ConsoleWrite
        })
    );
}

#[test]
fn every_table_entry_with_its_signature_is_accepted() {
    let mut m = Module::new();
    for &i in HostImport::ALL {
        let ty = |t: &[rvm_abi::imports::ValType]| -> Vec<u8> {
            t.iter()
                .map(|v| {
                    if *v == rvm_abi::imports::ValType::I32 {
                        I32
                    } else {
                        I64
                    }
                })
                .collect()
        };
        m.import("rvm", i.name(), &ty(i.params()), &ty(i.results()));
    }
    let run = m.func(&[], &[], &[]);
    m.memory(1).export("run", run);
    let mut agent = load(&m.encode(), 4).expect("the full table links");
    assert_eq!(agent.run().outcome, RunOutcome::Finished { code: 0 });
}

#[test]
fn imports_from_other_modules_are_refused() {
    let mut m = Module::new();
    m.import("env", "console_write", &[I32, I32], &[I32]);
    let run = m.func(&[], &[], &[]);
    m.export("run", run);
    assert_eq!(
        load(&m.encode(), 4).err(),
        Some(LoadError::ForbiddenImport {
            module: "env".into(),
            name: "console_write".into(),
            kind: "function"
        })
    );
}

#[test]
fn start_function_is_refused() {
    let mut m = Module::new();
    let f = m.func(&[], &[], &[]);
    m.export("run", f).start(f);
    assert_eq!(load(&m.encode(), 4).err(), Some(LoadError::StartFunction));
}

#[test]
fn entry_is_run_then_start_and_must_take_nothing() {
    let mut m = Module::new();
    let f = m.func(&[I32], &[], &[]);
    m.export("run", f);
    assert_eq!(
        load(&m.encode(), 4).err(),
        Some(LoadError::NoEntry),
        "run with a parameter is no entry"
    );

    let mut m = Module::new();
    let f = m.func(&[], &[], &[]);
    m.export("_start", f);
    assert_eq!(load(&m.encode(), 4).unwrap().entry_name(), "_start");
}

#[test]
fn traps_are_reported() {
    let mut m = Module::new();
    let f = m.func(&[], &[], &[op::UNREACHABLE]);
    m.export("run", f);
    let mut agent = load(&m.encode(), 4).unwrap();
    assert_eq!(
        agent.run().outcome,
        RunOutcome::Trapped(Trap::Wasm(wasmi::TrapCode::UnreachableCodeReached))
    );
}

#[test]
fn buffers_outside_linear_memory_get_bad_address() {
    // run = exit(console_write(65530, 10)) on a one-page memory: 6 bytes past the end.
    let mut m = Module::new();
    let cw = m.import("rvm", "console_write", &[I32, I32], &[I32]);
    let exit = m.import("rvm", "exit", &[I32], &[]);
    let mut body = i32_const(65530);
    body.extend(i32_const(10));
    body.extend([op::CALL, cw as u8, op::CALL, exit as u8]);
    let run = m.func(&[], &[], &body);
    m.memory(1).export("run", run);
    let mut agent = load(&m.encode(), 4).unwrap();
    let code = i32::from(rvm_abi::HvError::BadAddress.outcome_code());
    assert_eq!(agent.run().outcome, RunOutcome::Finished { code });
    assert_eq!(agent.host().console(), "", "nothing was written");
}

#[test]
fn snapshot_hands_memory_to_the_host() {
    let mut m = Module::new();
    let ck = m.import("rvm", "snapshot", &[], &[I32]);
    let exit = m.import("rvm", "exit", &[I32], &[]);
    let run = m.func(&[], &[], &[op::CALL, ck as u8, op::CALL, exit as u8]);
    m.memory(2).export("run", run);
    let mut agent = load(&m.encode(), 4).unwrap();
    assert_eq!(agent.run().outcome, RunOutcome::Finished { code: 0 });
    let host = agent.into_host();
    let world = host.world.lock().unwrap();
    let image = snapshot::decode(&world.snapshots[0][0]).expect("a well-formed image");
    assert_eq!(image.memory.len(), 2 << 16);
    assert!(image.meta.globals.is_empty());
    assert_eq!(image.meta.turn, 0, "a `run` agent has no turns");
}

/// An agent built against the import's former name still loads and its
/// snapshot is still taken.
#[test]
fn the_former_snapshot_import_name_still_links() {
    let mut m = Module::new();
    let ck = m.import("rvm", rvm_abi::imports::SNAPSHOT_FORMER_NAME, &[], &[I32]);
    let exit = m.import("rvm", "exit", &[I32], &[]);
    let run = m.func(&[], &[], &[op::CALL, ck as u8, op::CALL, exit as u8]);
    m.memory(1).export("run", run);
    let mut agent = load(&m.encode(), 4).unwrap();
    assert_eq!(agent.run().outcome, RunOutcome::Finished { code: 0 });
    let host = agent.into_host();
    let world = host.world.lock().unwrap();
    assert_eq!(world.snapshots[0].len(), 1, "one snapshot taken");
    let image = snapshot::decode(&world.snapshots[0][0]).expect("a well-formed image");
    assert_eq!(image.memory.len(), 1 << 16);
}

#[test]
fn a_block_dearer_than_a_slice_still_runs() {
    // One straight-line block of 400 instructions; wasmi charges a block's
    // fuel up front, so a slice of 3 can never cover it. The engine must
    // grant what the block needs instead of yielding forever.
    let mut body = Vec::new();
    for i in 0..200 {
        body.extend(i32_const(i));
        body.push(op::DROP);
    }
    let mut m = Module::new();
    let f = m.func(&[], &[], &body);
    m.export("run", f);
    let (host, _) = two_partitions(1, YieldLimit::Refuse(1_000_000));
    let cfg = AgentConfig {
        wasm_pages: 1,
        fuel: FuelPolicy::PerSlice(NonZeroU64::new(3).unwrap()),
        handles: HandleList::default(),
        wasi: rvm_agent_engine::WasiEnv::default(),
    };
    let mut agent = Agent::load(&m.encode(), cfg, host).unwrap();
    let report = agent.run();
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    assert!(report.slices > 1, "{report:?}");
    assert!(report.slices < 10, "{report:?}");
}

/// `run` = `for i in 0..n { yield() }` then `exit(0)`.
fn yield_loop(n: i32) -> Vec<u8> {
    let mut m = Module::new();
    let y = m.import("rvm", "yield", &[], &[I32]);
    let mut body = Vec::new();
    body.extend(op::BLOCK);
    body.extend(op::LOOP);
    body.extend([op::LOCAL_GET, 0]);
    body.extend(i32_const(n));
    body.extend([
        op::I32_GE_U,
        op::BR_IF,
        1,
        op::CALL,
        y as u8,
        op::DROP,
        op::LOCAL_GET,
        0,
    ]);
    body.extend(i32_const(1));
    body.extend([op::I32_ADD, op::LOCAL_SET, 0, op::BR, 0, op::END, op::END]);
    let run = m.func_with_locals(&[], &[], 1, &body);
    m.export("run", run);
    m.encode()
}

/// Host calls must not deepen the native stack: the EL1 runtime runs the
/// engine on a fixed stack of a few tens of KiB, and an agent may make
/// millions of calls. 200 000 yields on a 256 KiB thread would overflow if
/// each call left even 2 bytes behind.
///
/// Only meaningful with optimisation: in a debug build wasmi keeps its
/// debug assertions, which stop its handlers' sibling calls from becoming
/// jumps, so each host call does leave frames behind. Run it with
/// `cargo test --release -p rvm-agent-engine`.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "needs an optimised wasmi: run with --release"
)]
fn many_host_calls_run_in_bounded_native_stack() {
    let wasm = yield_loop(200_000);
    let run = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let (host, _) = two_partitions(1, YieldLimit::Refuse(u64::MAX));
            let cfg = AgentConfig {
                wasm_pages: 0,
                fuel: FuelPolicy::Unmetered,
                handles: HandleList::default(),
                wasi: rvm_agent_engine::WasiEnv::default(),
            };
            let mut agent = Agent::load(&wasm, cfg, host).unwrap();
            let report = agent.run();
            (report, agent.into_host().world.lock().unwrap().yields[0])
        })
        .unwrap();
    let (report, yields) = run.join().expect("no stack overflow");
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    assert_eq!(yields, 200_000);
}
