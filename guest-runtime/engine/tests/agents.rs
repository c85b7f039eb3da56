//! The real agents (built for wasm32 from `agents/`) on the engine with a
//! fake two-partition hypervisor.

mod support;

use std::num::NonZeroU64;
use std::thread;

use rvm_abi::HvError;
use rvm_agent_engine::{
    Agent, AgentConfig, FuelPolicy, HandleList, LoadError, RunOutcome, RunReport,
};
use support::agent_wasm;
use support::fake::{two_partitions, FakeHost, YieldLimit};

/// The budget the tests give every agent.
const PAGES: u32 = 16;

fn config(host: &FakeHost, fuel: FuelPolicy) -> AgentConfig {
    AgentConfig {
        wasm_pages: PAGES,
        fuel,
        handles: host.handle_list(),
        wasi: rvm_agent_engine::WasiEnv::default(),
    }
}

/// Run the reference agent in both partitions, each on its own thread.
fn exchange(fuel: FuelPolicy, channel_capacity: usize) -> (FakeHost, [RunReport; 2]) {
    let wasm = agent_wasm("rvm-agent-reference");
    let (a, b) = two_partitions(channel_capacity, YieldLimit::Panic(1_000_000));
    let spawn = |host: FakeHost| {
        let wasm = wasm.clone();
        // A large stack: in a debug build wasmi's host-call path is not
        // tail-call optimised and a long exchange nests deeply (see
        // `many_host_calls_run_in_bounded_native_stack`); the memory is only reserved.
        thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let cfg = config(&host, fuel);
                let mut agent = Agent::load(&wasm, cfg, host).expect("the reference agent loads");
                assert_eq!(agent.entry_name(), "run");
                let report = agent.run();
                (agent.into_host(), report)
            })
            .expect("spawn a partition thread")
    };
    let (ta, tb) = (spawn(a), spawn(b));
    let (a, ra) = ta.join().expect("partition 0 ran");
    let (_b, rb) = tb.join().expect("partition 1 ran");
    (a, [ra, rb])
}

fn assert_exchange_completed(host: &FakeHost, reports: &[RunReport; 2]) {
    let world = host.world.lock().unwrap();
    for (p, report) in reports.iter().enumerate() {
        assert_eq!(
            report.outcome,
            RunOutcome::Finished { code: 0 },
            "partition {p}: {}",
            world.consoles[p]
        );
        let console = &world.consoles[p];
        assert!(
            console.contains("reference: starting 8 rounds"),
            "{console}"
        );
        assert!(console.contains("reference: got pong 8/8"), "{console}");
        assert!(
            console.contains("done: 8 pongs received, 8 pings answered"),
            "{console}"
        );
        let store = &world.stores[p];
        assert_eq!(
            store.committed.get(&b"reference/pongs"[..]),
            Some(&8u32.to_le_bytes().to_vec())
        );
        assert_eq!(
            store.committed.get(&b"reference/pings"[..]),
            Some(&8u32.to_le_bytes().to_vec())
        );
        assert!(store.staged.is_empty());
    }
    assert_eq!(world.channel_backlog(0), 0, "every message was received");
}

#[test]
fn reference_agents_exchange_messages_and_commit_state() {
    let (host, reports) = exchange(FuelPolicy::Unmetered, 4);
    assert_exchange_completed(&host, &reports);
    for r in &reports {
        assert_eq!(r.slices, 0, "unmetered runs count no slices");
        assert!(r.host_calls > 40, "{r:?}");
    }
}

#[test]
fn reference_agents_finish_with_fuel_slicing_and_a_one_slot_channel() {
    let fuel = FuelPolicy::PerSlice(NonZeroU64::new(2_000).unwrap());
    let (host, reports) = exchange(fuel, 1);
    assert_exchange_completed(&host, &reports);
    assert!(reports.iter().all(|r| r.slices >= 1));
}

#[test]
fn spinning_agent_is_preempted_by_fuel() {
    let wasm = agent_wasm("rvm-agent-spin");
    let (host, _) = two_partitions(1, YieldLimit::Refuse(25));
    let cfg = config(
        &host,
        FuelPolicy::PerSlice(NonZeroU64::new(10_000).unwrap()),
    );
    let mut agent = Agent::load(&wasm, cfg, host).expect("the spin agent is a valid module");
    let report = agent.run();
    // 25 yields were granted, the 26th refused: 26 slices of fuel were used,
    // so the loop was interrupted 26 times without a single host call of its own.
    assert_eq!(report.outcome, RunOutcome::Stopped(HvError::QuotaExceeded));
    assert_eq!(report.slices, 26);
    let host = agent.into_host();
    assert_eq!(host.world.lock().unwrap().yields[0], 26);
    assert_eq!(host.console(), "spin: spinning forever\n");
}

#[test]
fn agent_with_an_unknown_import_is_refused() {
    let wasm = agent_wasm("rvm-agent-bad-import");
    let (host, _) = two_partitions(1, YieldLimit::Panic(10));
    let cfg = config(&host, FuelPolicy::Unmetered);
    let err = Agent::load(&wasm, cfg, host).err().expect("refused");
    assert_eq!(
        err,
        LoadError::ForbiddenImport {
            module: "rvm".into(),
            name: "open_socket".into(),
            kind: "function"
        }
    );
    assert_eq!(err.to_string(), "forbidden import function rvm.open_socket");
}

#[test]
fn agent_over_its_memory_budget_is_refused() {
    let wasm = agent_wasm("rvm-agent-over-budget");
    let (host, _) = two_partitions(1, YieldLimit::Panic(10));
    let cfg = config(&host, FuelPolicy::Unmetered);
    let err = Agent::load(&wasm, cfg, host).err().expect("refused");
    assert_eq!(
        err,
        LoadError::MemoryOverBudget {
            declared_pages: 16384,
            budget_pages: PAGES
        }
    );
}

#[test]
fn truncated_module_is_refused_and_its_whole_form_runs() {
    let (host, _) = two_partitions(1, YieldLimit::Panic(10));
    let err = Agent::load(
        rvm_agent_invalid::INVALID,
        AgentConfig {
            wasm_pages: PAGES,
            fuel: FuelPolicy::Unmetered,
            handles: HandleList::default(),
            wasi: rvm_agent_engine::WasiEnv::default(),
        },
        host,
    )
    .err()
    .expect("refused");
    assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");

    let (host, _) = two_partitions(1, YieldLimit::Panic(10));
    let cfg = AgentConfig {
        wasm_pages: PAGES,
        fuel: FuelPolicy::Unmetered,
        handles: HandleList::default(),
        wasi: rvm_agent_engine::WasiEnv::default(),
    };
    let mut agent = Agent::load(rvm_agent_invalid::WHOLE, cfg, host).expect("whole module loads");
    assert_eq!(agent.run().outcome, RunOutcome::Finished { code: 0 });
}
