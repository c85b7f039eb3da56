//! Engine-side cost of the WASI layer (`wasi_snapshot_preview1`, built on
//! the `rvm` calls in `src/wasi.rs`) against the `rvm` imports themselves,
//! with a host whose calls do nothing (each returns `Ok` at once; console
//! writes only count their bytes). Each pair runs the same loop of
//! [`CALLS`] calls in a module's entry; one iteration is one `run()` of a
//! freshly loaded agent (the load is in the untimed setup), so the time per
//! call is the figure over [`CALLS`]. Unmetered, as the snapshot bench.
//!
//! * `console/rvm`: `console_write(ptr, 64)`; `console/wasi`:
//!   `fd_write(1, iovs, 1, nwritten)` with one 64-byte iovec;
//!   `console/wasi-4iov`: the same 64 bytes as 4 × 16-byte iovecs.
//! * `clock/rvm`: `clock()`; `clock/wasi`: `clock_time_get(1, 0, ptr)`.
//! * `yield/rvm`: `yield()`; `yield/wasi`: `sched_yield()`.
//! * `loop/empty`: the loop alone, to read the pairs' absolute figures by.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::{CapHandle, HvError};
use rvm_agent_engine::{
    Agent, AgentConfig, DeriveRequest, FuelPolicy, HandleList, HostCalls, RunOutcome,
    SnapshotReceipt, WasiEnv,
};

/// The tests' module builder.
#[path = "../tests/support/forge.rs"]
#[allow(dead_code)]
mod forge;

use forge::{op, sleb, I32, I64};

/// Calls per run.
const CALLS: i32 = 1000;
/// Bytes per console write.
const TEXT: i32 = 64;
/// Where the text is, and where the iovecs and the results go.
const TEXT_AT: i32 = 1024;
const IOVS_AT: i32 = 64;
const OUT_AT: i32 = 256;

const WASI: &str = "wasi_snapshot_preview1";
const RVM: &str = rvm_abi::imports::MODULE;

/// A host whose calls return at once; console writes count their bytes.
#[derive(Default)]
struct Null {
    bytes: u64,
}

impl HostCalls for Null {
    fn console_write(&mut self, text: &[u8]) -> Result<(), HvError> {
        self.bytes += text.len() as u64;
        Ok(())
    }
    fn channel_send(&mut self, _: CapHandle, _: &[u8]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn channel_recv(&mut self, _: CapHandle, _: &mut [u8]) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn channel_wait(&mut self, _: CapHandle, _: &mut [u8], _: u64) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn wait_any(&mut self, _: &[CapHandle], _: u64) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn state_stage(&mut self, _: CapHandle, _: &[u8], _: &[u8]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn state_validate(&mut self, _: CapHandle) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn state_commit(&mut self, _: CapHandle) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn state_get(&mut self, _: CapHandle, _: &[u8], _: &mut [u8]) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn clock_read(&mut self) -> Result<u64, HvError> {
        Ok(0)
    }
    fn yield_now(&mut self) -> Result<(), HvError> {
        Ok(())
    }
    fn cap_derive(&mut self, _: &DeriveRequest<'_>) -> Result<CapHandle, HvError> {
        Err(HvError::NotSupported)
    }
    fn cap_revoke(&mut self, _: CapHandle, _: Option<&[u8]>, _: u64) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn prove(&mut self, _: CapHandle, _: &mut [u8; PROVE_BUFFER_LEN]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn tool_call(&mut self, _: &[u8], _: &[u8], _: &mut [u8]) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn snapshot(&mut self, _: &[u8], _: &[u8]) -> Result<SnapshotReceipt, HvError> {
        Err(HvError::NotSupported)
    }
}

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

/// What the loop calls.
#[derive(Clone, Copy)]
enum Call {
    /// Nothing: the loop alone.
    Nothing,
    RvmConsole,
    /// `fd_write` with this many iovecs sharing the 64 bytes.
    WasiConsole(i32),
    RvmClock,
    WasiClock,
    RvmYield,
    WasiYield,
}

/// A module whose entry (`run` for the `rvm` calls, `_start` for WASI)
/// makes [`CALLS`] calls of `call`, dropping each result.
fn module(call: Call) -> Vec<u8> {
    let mut m = forge::Module::new();
    let mut body = Vec::new();
    // The call's arguments, then its import's index (none for the empty loop).
    let (entry, args, import): (&str, Vec<u8>, Option<u32>) = match call {
        Call::Nothing => ("run", Vec::new(), None),
        Call::RvmConsole => {
            let f = m.import(RVM, "console_write", &[I32, I32], &[I32]);
            let mut a = Vec::new();
            i32_const(TEXT_AT, &mut a);
            i32_const(TEXT, &mut a);
            ("run", a, Some(f))
        }
        Call::WasiConsole(iovs) => {
            let f = m.import(WASI, "fd_write", &[I32; 4], &[I32]);
            let part = TEXT / iovs;
            for i in 0..iovs {
                store(IOVS_AT + 8 * i, TEXT_AT + part * i, &mut body);
                store(IOVS_AT + 8 * i + 4, part, &mut body);
            }
            let mut a = Vec::new();
            for v in [1, IOVS_AT, iovs, OUT_AT] {
                i32_const(v, &mut a);
            }
            ("_start", a, Some(f))
        }
        Call::RvmClock => ("run", Vec::new(), Some(m.import(RVM, "clock", &[], &[I64]))),
        Call::WasiClock => {
            let f = m.import(WASI, "clock_time_get", &[I32, I64, I32], &[I32]);
            let mut a = Vec::new();
            i32_const(1, &mut a);
            // i64.const 0
            a.extend([0x42, 0]);
            i32_const(OUT_AT, &mut a);
            ("_start", a, Some(f))
        }
        Call::RvmYield => ("run", Vec::new(), Some(m.import(RVM, "yield", &[], &[I32]))),
        Call::WasiYield => (
            "_start",
            Vec::new(),
            Some(m.import(WASI, "sched_yield", &[], &[I32])),
        ),
    };
    // loop: call; i += 1; br_if (i < CALLS)
    body.extend(op::LOOP);
    if let Some(f) = import {
        body.extend(&args);
        body.push(op::CALL);
        // Imports are the first functions: one-byte LEB indices.
        body.push(u8::try_from(f).expect("a small index"));
        body.push(op::DROP);
    }
    body.extend([op::LOCAL_GET, 0]);
    i32_const(1, &mut body);
    body.extend([op::I32_ADD, op::LOCAL_SET, 0, op::LOCAL_GET, 0]);
    i32_const(CALLS, &mut body);
    // i32.lt_u
    body.extend([0x49, op::BR_IF, 0, op::END]);
    let f = m.func_with_locals(&[], &[], 1, &body);
    m.memory(1).export(entry, f);
    m.encode()
}

fn load(wasm: &[u8]) -> Agent<Null> {
    let cfg = AgentConfig {
        wasm_pages: 1,
        fuel: FuelPolicy::Unmetered,
        handles: HandleList::default(),
        wasi: WasiEnv::default(),
    };
    Agent::load(wasm, cfg, Null::default()).expect("the bench module loads")
}

/// One run outside the timing: it ends well, makes its calls and writes
/// what it should, so a broken module cannot pass for a fast one.
fn check(wasm: &[u8], call: Call) {
    let mut agent = load(wasm);
    let report = agent.run();
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    let (calls, bytes) = match call {
        Call::Nothing => (0, 0),
        Call::RvmConsole | Call::WasiConsole(_) => (CALLS as u64, (CALLS * TEXT) as u64),
        _ => (CALLS as u64, 0),
    };
    assert_eq!(report.host_calls, calls);
    assert_eq!(agent.host().bytes, bytes);
}

fn bench(c: &mut Criterion) {
    let groups: [(&str, &[(&str, Call)]); 4] = [
        (
            "console",
            &[
                ("rvm", Call::RvmConsole),
                ("wasi", Call::WasiConsole(1)),
                ("wasi-4iov", Call::WasiConsole(4)),
            ],
        ),
        (
            "clock",
            &[("rvm", Call::RvmClock), ("wasi", Call::WasiClock)],
        ),
        (
            "yield",
            &[("rvm", Call::RvmYield), ("wasi", Call::WasiYield)],
        ),
        ("loop", &[("empty", Call::Nothing)]),
    ];
    for (group, cases) in groups {
        let mut g = c.benchmark_group(group);
        g.sample_size(20).measurement_time(Duration::from_secs(3));
        for &(name, call) in cases {
            let wasm = module(call);
            check(&wasm, call);
            g.bench_function(name, |b| {
                // The agents are loaded and dropped outside the timing.
                b.iter_batched_ref(|| load(&wasm), Agent::run, BatchSize::SmallInput)
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
