//! The WASI subset through the engine: a `_start` program writes to its
//! standard output and error (the console), reads its arguments (the
//! partition's name), gets `BADF` for any other descriptor, and ends with
//! `proc_exit`'s code.

mod support;

use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, RunOutcome, WasiEnv};
use support::fake::{two_partitions, YieldLimit};
use support::forge::{op, sleb, Module, I32};

const WASI: &str = "wasi_snapshot_preview1";

fn i32_const(v: i32, body: &mut Vec<u8>) {
    body.push(op::I32_CONST);
    sleb(i64::from(v), body);
}

/// Store the 32-bit word `v` at `at`.
fn store(at: i32, v: i32, body: &mut Vec<u8>) {
    i32_const(at, body);
    i32_const(v, body);
    // i32.store align=2 offset=0
    body.extend([0x36, 2, 0]);
}

fn program() -> Vec<u8> {
    let mut m = Module::new();
    let fd_write = m.import(WASI, "fd_write", &[I32; 4], &[I32]);
    let args_get = m.import(WASI, "args_get", &[I32, I32], &[I32]);
    let proc_exit = m.import(WASI, "proc_exit", &[I32], &[]);
    let mut body = Vec::new();
    // "hi\n" at 100; iovec {100, 3} at 0.
    store(100, i32::from_le_bytes(*b"hi\n\0"), &mut body);
    store(0, 100, &mut body);
    store(4, 3, &mut body);
    // fd_write(1, iovs 0, 1 iovec, nwritten at 8)
    for a in [1, 0, 1, 8] {
        i32_const(a, &mut body);
    }
    body.extend([op::CALL, fd_write as u8, op::DROP]);
    // argv list at 24, strings from 32; then iovec {32, 6} at 40 to stderr.
    i32_const(24, &mut body);
    i32_const(32, &mut body);
    body.extend([op::CALL, args_get as u8, op::DROP]);
    store(40, 32, &mut body);
    store(44, 6, &mut body);
    for a in [2, 40, 1, 8] {
        i32_const(a, &mut body);
    }
    body.extend([op::CALL, fd_write as u8, op::DROP]);
    // proc_exit(fd_write(3, ...)): the errno of a descriptor it does not have.
    for a in [3, 0, 1, 8] {
        i32_const(a, &mut body);
    }
    body.extend([op::CALL, fd_write as u8, op::CALL, proc_exit as u8]);
    let start = m.func(&[], &[], &body);
    m.memory(1).export("_start", start);
    m.encode()
}

#[test]
fn a_wasi_program_writes_its_console_reads_its_arguments_and_exits_with_its_code() {
    let (a, _b) = two_partitions(4, YieldLimit::Refuse(0));
    let cfg = AgentConfig {
        wasm_pages: 1,
        fuel: FuelPolicy::Unmetered,
        handles: a.handle_list(),
        wasi: WasiEnv::for_partition("tenant"),
    };
    let mut agent = Agent::load(&program(), cfg, a).expect("a WASI program loads");
    let outcome = agent.run().outcome;
    // 8: WASI's BADF, for descriptor 3.
    assert_eq!(outcome, RunOutcome::Finished { code: 8 });
    assert_eq!(agent.into_host().console(), "hi\ntenant");
}

#[test]
fn a_wasi_import_with_another_signature_is_refused() {
    let mut m = Module::new();
    let _ = m.import(WASI, "proc_exit", &[I32, I32], &[]);
    let start = m.func(&[], &[], &[]);
    m.memory(1).export("_start", start);
    let (a, _b) = two_partitions(4, YieldLimit::Refuse(0));
    let cfg = AgentConfig { wasm_pages: 1, fuel: FuelPolicy::Unmetered, handles: a.handle_list(), wasi: WasiEnv::default() };
    let e = Agent::load(&m.encode(), cfg, a).err().expect("refused");
    assert_eq!(e.to_string(), "import wasi_snapshot_preview1.proc_exit has the wrong signature");
}
