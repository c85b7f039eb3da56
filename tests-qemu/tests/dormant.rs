//! The `Dormant` memory tier under QEMU: the packet scenario's source is a
//! `Dormant`-tier partition. Between requests it finds its inbox empty,
//! snapshots and sleeps (its memory returned to the pool); each request
//! wakes it from the pristine runtime image and that snapshot, and it
//! answers. The agent gets all 500 packets, every wake is witnessed, and
//! every chain verifies.

use rvm_abi::bundle::MemoryTier;
use rvm_abi::recovery::DormantArgs;
use rvm_abi::witness::KernelEvent;
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions, QemuRun};

const PACKET_MARKER: &[u8; 16] = b"RVM-PACKET-PLAN1";
const TURNS: usize = 500;

fn packet(role: u8) -> Vec<u8> {
    let mut wasm = artifact("agents/packet.wasm");
    let at = wasm.windows(16).position(|w| w == PACKET_MARKER).expect("plan marker") + 16;
    wasm[at..at + 2].copy_from_slice(&[role, 0]);
    wasm
}

/// `(frames, snapshot)` of every `event` record in `log`.
fn dormant_records(run: &QemuRun, log: u32, event: KernelEvent) -> Vec<DormantArgs> {
    run.log(log)
        .iter()
        .filter(|r| KernelEvent::from_code(r.op) == Some(event))
        .map(|r| DormantArgs::from_bytes(&r.args))
        .collect()
}

/// The numbers after `key` on lines containing `needle`.
fn numbers<'a>(run: &'a QemuRun, needle: &'a str, key: &'a str) -> Vec<u64> {
    run.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split(key).nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn a_dormant_source_sleeps_between_requests_and_answers_every_one() {
    let bundle = BundleSpec::new()
        .partition(PartitionSpec::wasm("agent", packet(0)))
        .partition(PartitionSpec::wasm("source", packet(1)).tier(MemoryTier::Dormant))
        .channel(0, 1)
        .build();
    // RVM_DORMANT_ICOUNT=1: run under `-icount shift=0`, where the clock
    // advances one ns per instruction, so the wake figure is instructions.
    let icount = std::env::var_os("RVM_DORMANT_ICOUNT").is_some();
    let opts = QemuOptions { timeout: std::time::Duration::from_secs(600), icount, ..QemuOptions::default() };
    let run = boot(&bundle, &opts);
    run.assert(run.exit == Some(0), "clean power-off");
    // Every request answered, in order, once.
    let turns: Vec<u64> = run
        .console_of("agent")
        .filter_map(|l| l.strip_prefix("packet: turn "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    run.assert(turns == (1..=TURNS as u64).collect::<Vec<_>>(), "the agent got packets 1..=500 in order");
    run.assert(run.console_of("agent").any(|l| l.starts_with("packet: end after turn 500")), "and the end");
    run.assert(run.contains("'agent' exited: code 0x0") && run.contains("'source' exited: code 0x0"), "both finished");
    // The source slept and woke, witnessed with the frames moved.
    let enters = dormant_records(&run, 2, KernelEvent::DormantEnter);
    let exits = dormant_records(&run, 2, KernelEvent::DormantExit);
    run.assert(!enters.is_empty() && exits.len() == enters.len(), "every sleep ended in a wake");
    run.assert(enters.iter().all(|a| a.frames > 0) && exits.iter().all(|a| a.frames > 0), "frames returned and taken");
    run.assert(
        enters.iter().zip(&exits).all(|(e, x)| e.snapshot_id == x.snapshot_id),
        "each wake resumes from the snapshot it slept on",
    );
    run.assert(dormant_records(&run, 1, KernelEvent::DormantEnter).is_empty(), "the Warm-tier agent never slept");
    // Figures, from the console.
    let returned = numbers(&run, "'source' dormant on snapshot", "snapshot ");
    let reclaimed: Vec<u64> = run
        .lines()
        .filter(|l| l.contains("'source' dormant on snapshot"))
        .filter_map(|l| l.split(" frames (").next()?.rsplit(' ').next()?.parse().ok())
        .collect();
    let wake_ns = numbers(&run, "'source' woken by a message", "(");
    let restore_cycles = run
        .console_of("source")
        .filter(|l| l.starts_with("runtime: restored snapshot"))
        .filter_map(|l| l.split(" in ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .collect::<Vec<_>>();
    run.assert(reclaimed.len() == enters.len() && reclaimed.iter().all(|&n| n > 0), "each sleep said what it returned");
    let avg = |v: &[u64]| if v.is_empty() { 0 } else { v.iter().sum::<u64>() / v.len() as u64 };
    eprintln!(
        "dormant figures: {} sleeps, {} wakes; frames reclaimed per sleep avg {} (max {}); \
         kernel wake (rebuild + recreate) avg {} ns; runtime restore avg {} ns; snapshots slept on {}",
        enters.len(),
        exits.len(),
        avg(&reclaimed),
        reclaimed.iter().max().copied().unwrap_or(0),
        avg(&wake_ns),
        avg(&restore_cycles),
        returned.len()
    );
    assert_chains(&run);
}

/// Every log on the serial line is consecutive and hash-linked.
fn assert_chains(run: &QemuRun) {
    run.assert(run.assert_chains_linked() >= 2, "logs streamed");
}
