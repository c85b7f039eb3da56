//! Turn agents: snapshots at turn boundaries and restores from them, on
//! the real packet agent (issue 6, scenario 1, on the host) and on forged
//! modules.

mod support;

use std::collections::BTreeMap;
use std::thread;

use rvm_agent_engine::snapshot::{self, GlobalValue, ImageMeta};
use rvm_agent_engine::{Agent, AgentConfig, FuelPolicy, RestoreError, RunOutcome, RunReport};
use support::agent_wasm;
use support::fake::{two_partitions, FakeHost, YieldLimit};
use support::forge::{op, sleb, Module, I32};

const PAGES: u32 = 16;
const PLAN_MARKER: &[u8; 16] = b"RVM-PACKET-PLAN1";

fn config(host: &FakeHost) -> AgentConfig {
    AgentConfig {
        wasm_pages: PAGES,
        fuel: FuelPolicy::Unmetered,
        handles: host.handle_list(),
        wasi: rvm_agent_engine::WasiEnv::default(),
    }
}

/// The packet module with its plan patched to `plan`.
fn packet_module(plan: [u8; 2]) -> Vec<u8> {
    let mut wasm = agent_wasm("rvm-agent-packet");
    let at = wasm
        .windows(16)
        .position(|w| w == PLAN_MARKER)
        .expect("plan marker in the module")
        + 16;
    wasm[at..at + 2].copy_from_slice(&plan);
    wasm
}

/// A committed state store's items.
type Items = BTreeMap<Vec<u8>, Vec<u8>>;

/// What one run of the scenario left behind.
struct Run {
    console: String,
    snapshots: Vec<Vec<u8>>,
    stores: Vec<Items>,
    final_store: Items,
    report: RunReport,
}

/// The packet agent in partition 0 and the source in partition 1, each on
/// its own thread. With `resume`, partition 0 starts from that snapshot
/// image and store instead of from nothing.
fn scenario(resume: Option<(&[u8], &Items)>) -> Run {
    let (a, b) = two_partitions(4, YieldLimit::Panic(10_000_000));
    if let Some((_, store)) = resume {
        a.world.lock().unwrap().stores[0].committed = store.clone();
    }
    let image = resume.map(|(i, _)| i.to_vec());
    let agent = thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut agent =
                Agent::load(&packet_module([0, 0]), config(&a), a).expect("the packet agent loads");
            assert!(agent.is_turn_agent());
            if let Some(image) = image {
                agent.restore(&image).expect("the snapshot restores");
            }
            let report = agent.run();
            (agent.into_host(), report)
        })
        .unwrap();
    let source = thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut source =
                Agent::load(&packet_module([1, 0]), config(&b), b).expect("the source loads");
            source.run()
        })
        .unwrap();
    let (host, report) = agent.join().unwrap();
    assert_eq!(
        source.join().unwrap().outcome,
        RunOutcome::Finished { code: 0 }
    );
    let w = host.world.lock().unwrap();
    Run {
        console: w.consoles[0].clone(),
        snapshots: w.snapshots[0].clone(),
        stores: w.snapshot_stores[0].clone(),
        final_store: w.stores[0].committed.clone(),
        report,
    }
}

/// `turn k out <hash>` lines, by turn.
fn outputs(console: &str) -> BTreeMap<u32, String> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("packet: turn "))
        .filter_map(|l| {
            let (k, rest) = l.split_once(' ')?;
            Some((k.parse().ok()?, rest.to_string()))
        })
        .collect()
}

#[test]
fn restoring_the_turn_250_snapshot_reruns_251_to_500_byte_identically() {
    let first = scenario(None);
    assert_eq!(
        first.report.outcome,
        RunOutcome::Finished { code: 0 },
        "{}",
        first.console
    );
    assert_eq!(first.report.turns, 501, "500 packet turns and the end turn");
    assert_eq!(first.report.snapshots, 2, "after turn 250 and at the end");
    let out1 = outputs(&first.console);
    assert_eq!(out1.len(), 500);

    let at_250 = snapshot::decode(&first.snapshots[0]).unwrap();
    assert_eq!(
        at_250.meta.turn, 250,
        "the snapshot asked for in turn 250 is taken when it ends"
    );
    assert_eq!(at_250.meta.globals.len(), 1, "__stack_pointer");
    let store_250 = first.stores[0].clone();
    assert_eq!(
        store_250.get(&b"packet/last-turn"[..]),
        Some(&250u64.to_le_bytes().to_vec())
    );

    // A commit made after the snapshot must not survive a restore; were it
    // there, the agent would see its store ahead of its memory and stop.
    let mut tampered = store_250.clone();
    tampered.insert(b"packet/last-turn".to_vec(), 251u64.to_le_bytes().to_vec());
    let (host, _) = two_partitions(4, YieldLimit::Refuse(0));
    host.world.lock().unwrap().stores[0].committed = tampered;
    let mut agent = Agent::load(&packet_module([0, 0]), config(&host), host).unwrap();
    agent.restore(&first.snapshots[0]).unwrap();
    assert_eq!(
        agent.run().outcome,
        RunOutcome::Finished { code: 5 },
        "state mismatch detected"
    );

    let second = scenario(Some((&first.snapshots[0], &store_250)));
    assert_eq!(
        second.report.outcome,
        RunOutcome::Finished { code: 0 },
        "{}",
        second.console
    );
    assert_eq!(second.report.turns, 251, "turns 251..=500 and the end turn");
    let out2 = outputs(&second.console);
    assert_eq!(
        out2.keys().next(),
        Some(&251),
        "resumed at the turn after the snapshot"
    );
    assert_eq!(out2.len(), 250);
    for (k, h) in &out2 {
        assert_eq!(out1.get(k), Some(h), "turn {k}");
    }
    // The final state — memory image and committed store — is byte-identical.
    assert_eq!(first.snapshots[1], second.snapshots[0], "final images");
    assert_eq!(first.final_store, second.final_store, "final stores");
}

/// `turn` = `g += 1; [snapshot if g == 2]; g < 3 ? CONTINUE : DONE`, with
/// `g` a mutable global exported as `g` (or hidden).
fn counter(export_global: bool) -> Vec<u8> {
    let mut m = Module::new();
    let ck = m.import("rvm", "snapshot", &[], &[I32]);
    let g = m.global_i32(0, export_global.then_some("g"));
    let mut body = vec![op::GLOBAL_GET, g as u8];
    body.push(op::I32_CONST);
    sleb(1, &mut body);
    body.extend([op::I32_ADD, op::GLOBAL_SET, g as u8]);
    // if g == 2 { drop(snapshot()) }
    body.extend([op::GLOBAL_GET, g as u8, op::I32_CONST]);
    sleb(2, &mut body);
    body.extend([
        0x46, /* i32.eq */
        0x04,
        0x40, /* if */
        op::CALL,
        ck as u8,
        op::DROP,
        op::END,
    ]);
    // g >= 3 (DONE = 1, CONTINUE = 0)
    body.extend([op::GLOBAL_GET, g as u8, op::I32_CONST]);
    sleb(3, &mut body);
    body.push(0x4e /* i32.ge_s */);
    let f = m.func(&[], &[I32], &body);
    m.memory(1).export("turn", f);
    m.encode()
}

fn load(wasm: &[u8]) -> Agent<FakeHost> {
    let (host, _) = two_partitions(1, YieldLimit::Refuse(0));
    Agent::load(wasm, config(&host), host).unwrap()
}

#[test]
fn a_snapshot_asked_for_mid_turn_is_taken_when_the_turn_ends() {
    let mut agent = load(&counter(true));
    let report = agent.run();
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    assert_eq!((report.turns, report.snapshots), (3, 1));
    let host = agent.into_host();
    let w = host.world.lock().unwrap();
    let image = snapshot::decode(&w.snapshots[0][0]).unwrap();
    assert_eq!(
        image.meta,
        ImageMeta {
            globals: vec![GlobalValue::I32(2)],
            table_len: 0,
            turn: 2
        }
    );
    assert_eq!(image.memory.len(), 1 << 16);

    // Resumed from it, the agent runs only its third turn.
    let mut again = load(&counter(true));
    again.restore(&w.snapshots[0][0]).unwrap();
    assert_eq!(again.turns(), 2);
    let report = again.run();
    assert_eq!(
        (report.outcome, report.turns),
        (RunOutcome::Finished { code: 0 }, 1)
    );
}

#[test]
fn run_turns_pauses_at_turn_boundaries_and_reports_only_the_end() {
    // Several agents share a runtime by being driven a few turns at a time.
    let mut agent = load(&counter(true));
    assert_eq!(agent.run_turns(1), None);
    assert_eq!(agent.turns(), 1);
    assert_eq!(agent.run_turns(1), None);
    assert_eq!(agent.turns(), 2);
    let report = agent.run_turns(5).expect("the third turn is its last");
    assert_eq!(
        (report.outcome, report.turns),
        (RunOutcome::Finished { code: 0 }, 1)
    );
    assert_eq!(agent.turns(), 3);
    // A `run` entry ends in one call whatever the limit.
    let mut m = Module::new();
    let f = m.func(&[], &[], &[]);
    m.memory(1).export("run", f);
    let mut once = load(&m.encode());
    assert_eq!(
        once.run_turns(1).map(|r| r.outcome),
        Some(RunOutcome::Finished { code: 0 })
    );
}

#[test]
fn an_agent_with_a_hidden_mutable_global_cannot_snapshot() {
    let mut agent = load(&counter(false));
    let report = agent.run();
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    assert_eq!(
        report.snapshots, 0,
        "the import answers NotSupported: nothing is handed over"
    );
    assert!(agent.into_host().world.lock().unwrap().snapshots[0].is_empty());
}

/// A turn agent with a table that asks for a snapshot in its first turn
/// and finishes in its second; with `grow`, the turn also runs `table.grow`.
fn table_agent(grow: bool) -> Vec<u8> {
    let mut m = Module::new();
    let ck = m.import("rvm", "snapshot", &[], &[I32]);
    let g = m.global_i32(0, Some("g"));
    let mut body = Vec::new();
    if grow {
        // drop(table.grow 0 (ref.null func) (i32.const 1))
        body.extend([0xd0, 0x70, op::I32_CONST]);
        sleb(1, &mut body);
        body.extend([0xfc, 0x0f, 0x00, op::DROP]);
    }
    // g += 1; if g == 1 { drop(snapshot()) }; g >= 2
    body.extend([op::GLOBAL_GET, g as u8, op::I32_CONST]);
    sleb(1, &mut body);
    body.extend([op::I32_ADD, op::GLOBAL_SET, g as u8, op::GLOBAL_GET, g as u8, op::I32_CONST]);
    sleb(1, &mut body);
    body.extend([0x46, 0x04, 0x40, op::CALL, ck as u8, op::DROP, op::END]);
    body.extend([op::GLOBAL_GET, g as u8, op::I32_CONST]);
    sleb(2, &mut body);
    body.push(0x4e);
    let f = m.func(&[], &[I32], &body);
    m.table(1).memory(1).export("turn", f);
    m.encode()
}

#[test]
fn an_agent_that_changes_its_table_cannot_snapshot() {
    // Control: a table that only instantiation fills is rebuilt exactly by a
    // restore, so the snapshot is taken.
    let mut steady = load(&table_agent(false));
    let report = steady.run();
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    assert_eq!(report.snapshots, 1);
    // `table.grow` changes what no image can hold: the import answers
    // NotSupported and nothing is handed over.
    let mut growing = load(&table_agent(true));
    let report = growing.run();
    assert_eq!(report.outcome, RunOutcome::Finished { code: 0 });
    assert_eq!(report.snapshots, 0);
    assert!(growing.into_host().world.lock().unwrap().snapshots[0].is_empty());
}

#[test]
fn restore_refuses_images_that_do_not_fit_and_changes_nothing() {
    let good = ImageMeta {
        globals: vec![GlobalValue::I32(7)],
        table_len: 0,
        turn: 9,
    };
    let cases: [(Vec<u8>, RestoreError); 4] = [
        (
            snapshot::encode(
                &ImageMeta {
                    globals: vec![],
                    ..good.clone()
                },
                &[0; 1 << 16],
            ),
            RestoreError::GlobalCount { image: 0, agent: 1 },
        ),
        (
            snapshot::encode(
                &ImageMeta {
                    globals: vec![GlobalValue::I64(7)],
                    ..good.clone()
                },
                &[0; 1 << 16],
            ),
            RestoreError::GlobalType { index: 0 },
        ),
        (
            snapshot::encode(&good, &[0; 100]),
            RestoreError::MemorySize {
                image_bytes: 100,
                agent_bytes: 1 << 16,
            },
        ),
        (
            snapshot::encode(&good, &vec![0; (PAGES as usize + 1) << 16]),
            RestoreError::MemorySize {
                image_bytes: (PAGES as usize + 1) << 16,
                agent_bytes: 1 << 16,
            },
        ),
    ];
    for (image, want) in cases {
        let mut agent = load(&counter(true));
        assert_eq!(agent.restore(&image), Err(want));
        assert_eq!(agent.turns(), 0);
        assert_eq!(agent.memory_len(), 1 << 16);
    }
    let mut agent = load(&counter(true));
    assert!(matches!(
        agent.restore(b"RVMCKPT1"),
        Err(RestoreError::Image(_))
    ));
    // A bigger image grows the memory (within the budget) and carries the turn.
    let mut memory = vec![0u8; 3 << 16];
    memory[(2 << 16) + 5] = 0xab;
    agent.restore(&snapshot::encode(&good, &memory)).unwrap();
    assert_eq!((agent.memory_len(), agent.turns()), (3 << 16, 9));

    // A `run` agent has no turns to resume.
    let mut m = Module::new();
    let f = m.func(&[], &[], &[]);
    m.memory(1).export("run", f);
    let mut run_agent = load(&m.encode());
    assert_eq!(
        run_agent.restore(&snapshot::encode(&good, &[0; 1 << 16])),
        Err(RestoreError::NotTurnAgent)
    );
}

#[test]
fn a_turn_that_returns_something_else_is_a_trap() {
    let mut m = Module::new();
    let mut body = vec![op::I32_CONST];
    sleb(7, &mut body);
    let f = m.func(&[], &[I32], &body);
    m.memory(1).export("turn", f);
    let mut agent = load(&m.encode());
    assert!(matches!(
        agent.run().outcome,
        RunOutcome::Trapped(rvm_agent_engine::Trap::Other(_))
    ));
}

/// A turn agent whose turn never ends (`loop br 0 end`).
fn endless_turn() -> Vec<u8> {
    let mut m = Module::new();
    let body = vec![0x03 /* loop */, 0x40, 0x0c /* br */, 0x00, op::END, op::I32_CONST, 0x00];
    let f = m.func(&[], &[I32], &body);
    m.memory(1).export("turn", f);
    m.encode()
}

#[test]
fn a_turn_past_its_fuel_budget_is_a_trap_not_a_yield() {
    // The host refuses the 50th yield: before, the endless turn yielded
    // slice after slice until then (Stopped); now its first slice's fuel is
    // its budget and running past it is a trap (the runtime's F1).
    let (host, _) = two_partitions(1, YieldLimit::Refuse(50));
    let cfg = AgentConfig { fuel: FuelPolicy::PerSlice(std::num::NonZeroU64::new(10_000).unwrap()), ..config(&host) };
    let mut agent = Agent::load(&endless_turn(), cfg, host).unwrap();
    assert_eq!(
        agent.run().outcome,
        RunOutcome::Trapped(rvm_agent_engine::Trap::TurnOverBudget { fuel: 10_000 })
    );
}

#[test]
fn many_cheap_turns_do_not_add_up_to_an_overrun() {
    // `counter` runs three cheap turns (one costs 13 to 20 fuel); with a
    // budget that one turn fits in but not three, the run finishes: the
    // budget is per turn, refilled each turn.
    let (host, _) = two_partitions(1, YieldLimit::Refuse(0));
    let cfg = AgentConfig { fuel: FuelPolicy::PerSlice(std::num::NonZeroU64::new(20).unwrap()), ..config(&host) };
    let mut agent = Agent::load(&counter(true), cfg, host).unwrap();
    assert_eq!(agent.run().outcome, RunOutcome::Finished { code: 0 });
}
