//! The `wait_any` import, through the engine's glue: the handle list is
//! read from the agent's memory, bounded, and handed to the host; the
//! answer is the position of the first channel with a message.

mod support;

use rvm_abi::{CapHandle, HvError, ObjectKind};
use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, HostCalls, RunOutcome};
use support::fake::{two_partitions, YieldLimit};
use support::forge::{op, sleb, Module, I32, I64};

/// `run` = store `handle(Channel, 0)` at 0, then
/// `exit(wait_any(0, count, -1 or 0))`.
fn waiter(count: i32, forever: bool) -> Vec<u8> {
    let mut m = Module::new();
    let handle = m.import("rvm", "handle", &[I32, I32], &[I64]);
    let wait_any = m.import("rvm", "wait_any", &[I32, I32, I64], &[I32]);
    let exit = m.import("rvm", "exit", &[I32], &[]);
    let mut body = vec![op::I32_CONST, 0, op::I32_CONST];
    sleb(ObjectKind::Channel as i64, &mut body);
    body.extend([op::I32_CONST, 0, op::CALL, handle as u8]);
    // i64.store align=3 offset=0
    body.extend([0x37, 3, 0]);
    body.extend([op::I32_CONST, 0, op::I32_CONST]);
    sleb(i64::from(count), &mut body);
    body.push(0x42); // i64.const
    sleb(if forever { -1 } else { 0 }, &mut body);
    body.extend([op::CALL, wait_any as u8, op::CALL, exit as u8]);
    let run = m.func(&[], &[], &body);
    m.memory(1).export("run", run);
    m.encode()
}

fn run(wasm: &[u8], message_queued: bool) -> RunOutcome {
    let (mut a, b) = two_partitions(4, YieldLimit::Refuse(0));
    if message_queued {
        // a's channel end is its first handle (index 2, generation 1).
        a.channel_send(CapHandle::new(2, 1), b"hi").unwrap();
    }
    let cfg = AgentConfig { wasm_pages: 1, fuel: FuelPolicy::Unmetered, handles: b.handle_list(), wasi: rvm_agent_engine::WasiEnv::default() };
    Agent::load(wasm, cfg, b).expect("the module loads").run().outcome
}

#[test]
fn wait_any_answers_the_position_of_the_channel_with_a_message() {
    assert_eq!(run(&waiter(1, true), true), RunOutcome::Finished { code: 0 });
}

#[test]
fn wait_any_on_empty_channels_answers_would_block_from_the_host() {
    let code = i32::from(HvError::WouldBlock.outcome_code());
    assert_eq!(run(&waiter(1, false), false), RunOutcome::Finished { code });
}

#[test]
fn wait_any_refuses_a_sleep_with_no_deadline_or_more_than_sixteen() {
    let code = i32::from(HvError::InvalidArgument.outcome_code());
    assert_eq!(run(&waiter(0, true), true), RunOutcome::Finished { code });
    assert_eq!(run(&waiter(17, false), true), RunOutcome::Finished { code });
    // A negative count too.
    assert_eq!(run(&waiter(-1, false), true), RunOutcome::Finished { code });
}

#[test]
fn wait_any_of_no_channel_with_a_deadline_is_a_sleep_the_host_answers() {
    // The fake host answers a wait on nothing with its deadline's answer.
    let code = i32::from(HvError::WouldBlock.outcome_code());
    assert_eq!(run(&waiter(0, false), true), RunOutcome::Finished { code });
}
