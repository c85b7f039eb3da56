//! The `tool_call` import, through the engine's glue: its three buffers are
//! checked against the agent's memory, the name and request are read before
//! the response is written (they may overlap), and the host's answer comes
//! back as the response length or a negative error code. Then the toolbox
//! agent, built for wasm32, against the fake host's tools.

mod support;

use std::thread;

use rvm_abi::HvError;
use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, RunOutcome};
use support::agent_wasm;
use support::fake::{fake_tool, two_partitions, FakeHost, YieldLimit};
use support::forge::{op, sleb, Module, I32};

fn i32_const(v: i32, body: &mut Vec<u8>) {
    body.push(op::I32_CONST);
    sleb(i64::from(v), body);
}

/// `run` = write each `(address, bytes)` into memory, then
/// `n = tool_call(args...)`, `console_write(args[4], n)` (the response, when
/// `n` is a length) and `exit(n)`.
fn caller(writes: &[(i32, &[u8])], args: [i32; 6]) -> Vec<u8> {
    let mut m = Module::new();
    let tool_call = m.import("rvm", "tool_call", &[I32; 6], &[I32]);
    let console_write = m.import("rvm", "console_write", &[I32, I32], &[I32]);
    let exit = m.import("rvm", "exit", &[I32], &[]);
    let mut body = Vec::new();
    for &(at, bytes) in writes {
        for (i, &b) in (0..).zip(bytes) {
            i32_const(at + i, &mut body);
            i32_const(i32::from(b), &mut body);
            // i32.store8 align=0 offset=0
            body.extend([0x3a, 0, 0]);
        }
    }
    for a in args {
        i32_const(a, &mut body);
    }
    body.extend([op::CALL, tool_call as u8, op::LOCAL_SET, 0]);
    i32_const(args[4], &mut body);
    body.extend([op::LOCAL_GET, 0, op::CALL, console_write as u8, op::DROP]);
    body.extend([op::LOCAL_GET, 0, op::CALL, exit as u8]);
    let run = m.func_with_locals(&[], &[], 1, &body);
    m.memory(1).export("run", run);
    m.encode()
}

fn len(b: &[u8]) -> i32 {
    i32::try_from(b.len()).unwrap()
}

/// Run `wasm` in partition 0 of the fake world; its exit code and host.
fn run(wasm: &[u8]) -> (i32, FakeHost) {
    let (a, _b) = two_partitions(4, YieldLimit::Refuse(0));
    let cfg = AgentConfig {
        wasm_pages: 1,
        fuel: FuelPolicy::Unmetered,
        handles: a.handle_list(),
        wasi: rvm_agent_engine::WasiEnv::default(),
    };
    let mut agent = Agent::load(wasm, cfg, a).expect("the module loads");
    let outcome = agent.run().outcome;
    let RunOutcome::Finished { code } = outcome else {
        panic!("the module did not finish: {outcome:?}")
    };
    (code, agent.into_host())
}

fn code(e: HvError) -> i32 {
    i32::from(e.outcome_code())
}

#[test]
fn a_tool_call_hands_name_and_request_to_the_host_and_returns_its_response() {
    let (name, request) = (b"Bash", b"echo hello");
    let wasm = caller(
        &[(0, name), (256, request)],
        [0, len(name), 256, len(request), 1024, 512],
    );
    let (n, host) = run(&wasm);
    let want = fake_tool(name, request).unwrap();
    assert_eq!(n, len(&want));
    assert_eq!(host.console(), String::from_utf8(want).unwrap());
    assert!(
        host.console().contains(r#""stdout":"hello\n""#),
        "{}",
        host.console()
    );
    let w = host.world.lock().unwrap();
    assert_eq!(w.tool_calls, vec![(0, name.to_vec(), request.to_vec())]);
}

#[test]
fn the_response_may_overwrite_the_name_and_request() {
    let (name, request) = (b"mcp__demo__echo", &br#"{"text":"in place"}"#[..]);
    // The response buffer starts at the name and covers the request.
    let wasm = caller(
        &[(0, name), (32, request)],
        [0, len(name), 32, len(request), 0, 256],
    );
    let (n, host) = run(&wasm);
    let want = fake_tool(name, request).unwrap();
    assert_eq!(n, len(&want));
    assert_eq!(host.console().as_bytes(), want);
    assert_eq!(
        host.world.lock().unwrap().tool_calls,
        vec![(0, name.to_vec(), request.to_vec())],
        "the host saw the name and request as they were before the response"
    );
}

#[test]
fn a_response_is_cut_to_the_capacity_the_agent_gives() {
    let (name, request) = (b"Bash", b"echo a long enough line");
    let wasm = caller(
        &[(0, name), (64, request)],
        [0, 4, 64, len(request), 512, 10],
    );
    let (n, host) = run(&wasm);
    assert_eq!(n, 10);
    assert_eq!(
        host.console().as_bytes(),
        &fake_tool(name, request).unwrap()[..10]
    );
}

#[test]
fn host_errors_come_back_as_their_codes() {
    let cases: [(&[u8], &[u8], HvError); 4] = [
        (b"mcp__demo__sleep", b"{}", HvError::TimedOut),
        (b"mcp__demo__missing", b"{}", HvError::ToolFailed),
        (b"Bash", b"rm -rf /tmp/x", HvError::NoRights),
        (b"no such tool", b"", HvError::InvalidArgument),
    ];
    for (name, request, e) in cases {
        let wasm = caller(
            &[(0, name), (256, request)],
            [0, len(name), 256, len(request), 1024, 512],
        );
        let (n, host) = run(&wasm);
        assert_eq!(n, code(e), "{}", String::from_utf8_lossy(name));
        assert_eq!(host.world.lock().unwrap().tool_calls.len(), 1);
    }
}

#[test]
fn buffers_outside_memory_and_lengths_past_the_abi_are_refused_before_the_host() {
    let page = 1 << 16;
    let name = b"Bash";
    let cases = [
        // The name, the request or the response past the end of memory.
        ([page - 2, 4, 0, 0, 0, 16], HvError::BadAddress),
        ([0, 4, page - 1, 2, 64, 16], HvError::BadAddress),
        ([0, 4, 64, 0, page - 8, 16], HvError::BadAddress),
        ([0, 4, 64, 0, -1, 16], HvError::BadAddress),
        // No name, a name or a request longer than the ABI allows: refused
        // before their buffers are looked at.
        ([0, 0, 64, 0, 128, 16], HvError::InvalidArgument),
        ([0, 129, 64, 0, 256, 16], HvError::InvalidArgument),
        (
            [page * 2, 4, 64, (16 << 10) + 1, 128, 16],
            HvError::InvalidArgument,
        ),
        ([0, -1, 64, 0, 128, 16], HvError::InvalidArgument),
    ];
    for (args, e) in cases {
        let (n, host) = run(&caller(&[(0, name)], args));
        assert_eq!(n, code(e), "{args:?}");
        assert!(host.world.lock().unwrap().tool_calls.is_empty(), "{args:?}");
    }
}

#[test]
fn the_toolbox_agent_prints_one_line_per_call_and_commits_the_echo() {
    let wasm = agent_wasm("rvm-agent-toolbox");
    let (a, _b) = two_partitions(4, YieldLimit::Panic(1_000_000));
    let (report, host) = thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let cfg = AgentConfig {
                wasm_pages: 16,
                fuel: FuelPolicy::Unmetered,
                handles: a.handle_list(),
                wasi: rvm_agent_engine::WasiEnv::default(),
            };
            let mut agent = Agent::load(&wasm, cfg, a).expect("the toolbox agent loads");
            assert_eq!(agent.entry_name(), "run");
            let report = agent.run();
            (report, agent.into_host())
        })
        .unwrap()
        .join()
        .unwrap();
    let console = host.console();
    assert_eq!(
        report.outcome,
        RunOutcome::Finished { code: 0 },
        "{console}"
    );
    let echo = fake_tool(b"Bash", b"echo hello-from-rvm").unwrap();
    let echo_text = String::from_utf8(echo.clone()).unwrap();
    let inject = fake_tool(b"Bash", b"echo a; rm -rf / $(id) `id` |cat").unwrap();
    let inject_text = String::from_utf8(inject.clone()).unwrap();
    let want = [
        format!("toolbox: echo ok {} {echo_text}", echo.len()),
        format!("toolbox: inject ok {} {inject_text}", inject.len()),
        "toolbox: dotdot err NoRights".into(),
        "toolbox: newline err NoRights".into(),
        "toolbox: denied err NoRights".into(),
        r#"toolbox: mcp ok 35 {"echo":{"text":"hi from toolbox"}}"#.into(),
        r#"toolbox: mcp-add ok 10 {"sum":42}"#.into(),
        "toolbox: mcp-denied err NoRights".into(),
        "toolbox: slow err TimedOut".into(),
        // The fake clock moves 1 µs per reading.
        "toolbox: round trips (us): echo=1 inject=1 dotdot=1 newline=1 denied=1 mcp=1 mcp-add=1 mcp-denied=1 slow=1".into(),
        "toolbox: done".into(),
    ];
    let lines: Vec<&str> = console.lines().collect();
    assert_eq!(lines, want, "{console}");
    // The injection stayed words of echo.
    assert!(inject_text.contains(r#""stdout":"a; rm -rf / $(id) `id` |cat\n""#));
    let w = host.world.lock().unwrap();
    assert_eq!(w.tool_calls.len(), 9);
    assert_eq!(w.stores[0].committed.get(&b"toolbox/echo"[..]), Some(&echo));
}
