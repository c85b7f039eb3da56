//! Issue 6, acceptance scenario 3: the 500-turn packet scenario (scenario 1:
//! a snapshot after turn 250, three traps past turn 500 — F1, F1, F2 back
//! to the turn-250 snapshot — and turns 251..=500 again) runs under QEMU
//! with the input journal on; the loader's own stream code files the log
//! and the journal into a fresh RVM_HOME; `witness replay` re-executes the
//! agent on the host and reproduces every state hash. A tampered journal or
//! log is named by its first bad record.

use std::path::PathBuf;
use std::time::Instant;

use rvm_abi::bundle::{BootConfig, BundleWriter, ChannelDesc, EntryKind, MemoryTier, PartitionDesc, RecoveryDesc, GLOBAL};
use rvm_abi::journal::{Entry, BOOT_FLAG_JOURNAL};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{Hypercall, WitnessRecord};
use rvm_loader::home::Home;
use rvm_loader::model::PartitionName;
use rvm_loader::replay::{self, ReplayFailure, ReplayInput};
use rvm_loader::stream::{LineSplitter, Session};
use rvm_loader::witness_sink::{journal_path, Filed, KeyPolicy, LogNames, WitnessSink};
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions};

const PACKET_MARKER: &[u8; 16] = b"RVM-PACKET-PLAN1";
const PAGES: u32 = 16;

fn patched(plan: &[u8]) -> Vec<u8> {
    let mut wasm = artifact("agents/packet.wasm");
    let at = wasm.windows(16).position(|w| w == PACKET_MARKER).expect("the plan marker") + 16;
    wasm[at..at + plan.len()].copy_from_slice(plan);
    wasm
}

fn bundle(packet: &[u8], source: &[u8], flags: u32) -> Vec<u8> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &artifact("guest-runtime.elf"));
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[0x42; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: 0, flags, ..BootConfig::DEFAULT }.to_bytes());
    for (name, wasm) in [("packet", packet), ("source", source)] {
        let i = w.partition(&PartitionDesc {
            name: PartitionDesc::name_field(name).unwrap(),
            memory_tier: MemoryTier::Warm,
            deadline_urgency: 50,
            cut_pressure: 30,
            default_tier: 2,
            wasm_pages: PAGES,
            fuel_per_slice: 0,
            recovery: RecoveryDesc::DEFAULT,
            witness_key_fingerprint: None,
            dormant_after_ms: 0,
        });
        w.entry(EntryKind::Wasm, i, wasm);
    }
    w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: 0, b: 1, capacity: 16 }.to_bytes());
    w.finish()
}

/// A fresh RVM_HOME under the test's target directory.
fn fresh_home(tag: &str) -> Home {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("replay-home-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Home::new(dir)
}

fn load_filed(home: &Home, name: &str) -> (Vec<[u8; 64]>, Vec<Entry>, u32) {
    let log_path = home.witness_dir().join(format!("{name}.log"));
    let bytes = std::fs::read(&log_path).expect("the log was filed");
    let records: Vec<[u8; 64]> = bytes.chunks_exact(64).map(|c| c.try_into().unwrap()).collect();
    let log = WitnessRecord::from_bytes(&records[0]).unwrap().partition;
    let text = std::fs::read_to_string(journal_path(&log_path)).expect("the journal was filed beside it");
    let journal = replay::parse_journal(&text, log).expect("the filed journal parses");
    (records, journal, log)
}

#[test]
fn the_packet_scenario_replays_on_the_host_with_every_state_hash() {
    let packet = artifact("agents/packet.wasm");
    let source = patched(&[1, 3]);
    let opts = QemuOptions { timeout: std::time::Duration::from_secs(900), ..QemuOptions::default() };
    let run = boot(&bundle(&packet, &source, BOOT_FLAG_JOURNAL), &opts);
    // Kept for a look after a failure.
    let _ = std::fs::write(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay-scenario-serial.txt"), &run.serial);
    run.assert(run.exit == Some(0), "clean power-off");
    run.assert(run.contains("'packet' exited: code 0x0"), "the packet agent finished");
    run.assert(run.contains("[packet] runtime: restored snapshot 1"), "rolled back to the turn-250 snapshot");

    // File the serial stream exactly as `rvm-loader up` does.
    let home = fresh_home("scenario");
    let names = LogNames(vec![(1, PartitionName::new("packet").unwrap()), (2, PartitionName::new("source").unwrap())]);
    let mut sink = Filed::open(&home, &names, KeyPolicy::default(), &[]).expect("the witness store opens");
    {
        let mut session = Session::new(names.clone(), &mut sink);
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        splitter.push(run.serial.as_bytes(), &mut |l| lines.push(l));
        splitter.finish(&mut |l| lines.push(l));
        for l in &lines {
            session.line(l, &mut |_| {});
        }
        assert!(session.sink_error().is_none(), "{:?}", session.sink_error());
        assert_eq!(session.damaged, 0, "no damaged frame on the serial line");
    }
    let summary = sink.finish().expect("filed");
    assert!(summary.journal_entries > 7000, "{} journal entries", summary.journal_entries);
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);

    let (records, journal, log) = load_filed(&home, "packet");
    // Every call record of the packet's log has its journal entry.
    let calls = records.iter().filter(|b| WitnessRecord::from_bytes(b).unwrap().flags & rvm_abi::witness::flags::KERNEL_EVENT == 0).count();
    assert_eq!(journal.iter().filter(|e| matches!(e, Entry::Call { .. })).count(), calls);
    let taken = records.iter().filter(|b| WitnessRecord::from_bytes(b).unwrap().op == KernelEvent::SnapshotTaken as u16).count();
    assert_eq!(taken, 2, "snapshots after turn 250 and at the end");

    let input = |records: Vec<[u8; 64]>, journal: Vec<Entry>| ReplayInput {
        log,
        name: "packet",
        records,
        journal,
        wasm: &packet,
        wasm_pages: PAGES,
        fuel_per_slice: 0,
    };
    let started = Instant::now();
    let mut progress = Vec::new();
    let report = replay::replay_on_own_stack(input(records.clone(), journal.clone()), &mut |p| progress.push(format!("{p:?}")))
        .unwrap_or_else(|e| panic!("replay failed: {e}\n{progress:#?}"));
    let secs = started.elapsed().as_secs_f64();
    println!("replay of the QEMU run: {report}");
    println!("replay speed: {:.0} turns/s, {:.0} calls/s ({secs:.3} s, debug build of the engine)", report.turns as f64 / secs, report.calls as f64 / secs);
    for p in &progress {
        println!("  {p}");
    }
    assert_eq!(report.snapshots_matched, 2);
    assert_eq!(report.instances, 4, "the first run, two F1 restarts, the F2 rollback");
    assert_eq!(report.turns, 500 + 250 + 1, "turns 1..=500, 251..=500 again, the end turn");
    assert!(!report.log_ended_mid_run);

    // A tampered journal: one byte of a packet the agent received.
    let mut tampered = journal.clone();
    let (i, seq) = tampered
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Entry::Call { seq, data, .. } if data.len() == 72 && data.starts_with(b"PK") => Some((i, *seq)),
            _ => None,
        })
        .nth(300)
        .expect("a received packet");
    if let Entry::Call { data, .. } = &mut tampered[i] {
        data[40] ^= 1;
    }
    let err = replay::replay_on_own_stack(input(records.clone(), tampered), &mut |_| {}).unwrap_err();
    println!("tampered journal: {err}");
    assert!(matches!(err, ReplayFailure::Tampered { seq: s, .. } if s == seq), "{err}");

    // A tampered log: the outcome of a StateCommit record flipped.
    let mut bad = records.clone();
    let at = bad
        .iter()
        .position(|b| WitnessRecord::from_bytes(b).unwrap().op == Hypercall::StateCommit as u16)
        .expect("a commit");
    let mut r = WitnessRecord::from_bytes(&bad[at]).unwrap();
    r.outcome = rvm_abi::HvError::ValidationFailed.outcome_code();
    bad[at] = r.to_bytes();
    let err = replay::replay_on_own_stack(input(bad, journal.clone()), &mut |_| {}).unwrap_err();
    println!("tampered log: {err}");
    assert!(matches!(err, ReplayFailure::Tampered { seq, .. } if seq == at as u64), "{err}");

    // The wrong module for the log is refused before anything runs.
    let err = replay::replay_on_own_stack(ReplayInput { wasm: &source, ..input(records, journal) }, &mut |_| {}).unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    let _ = std::fs::remove_dir_all(home.root());
}

/// The journal's cost per call, in instructions under `-icount shift=0`
/// (the cycle counter counts instructions at EL1 and EL2): the bench probe
/// times 256 witnessed `ClockRead` round trips from EL1 (the kernel's
/// record, its frame, and with the journal its `@J` entry of 8 data bytes),
/// once without and once with the journal. The difference is the cost of
/// one journal entry; divided by its line's bytes it gives the cost per
/// byte on the UART, from which a `ChannelRecv` of a 72-byte packet's entry
/// is estimated. Figures, not pass/fail bounds.
#[test]
fn journal_cost_per_call_in_instructions() {
    let median = |flags: u32| -> (u64, u64) {
        let spec = BundleSpec::new().partition(PartitionSpec::image("bench", artifact("probes/probe-bench.elf"))).flags(flags);
        // `rvm.bench=pmu`: the probe reads the cycle counter from EL1.
        let opts = QemuOptions { icount: true, smp: 1, append: "rvm.bench=pmu".into(), ..QemuOptions::default() };
        let run = boot(&spec.build(), &opts);
        run.assert(run.exit == Some(0), "clean power-off");
        let m = run
            .console_of("bench")
            .find_map(|l| l.strip_prefix("bench witnessed_hvc "))
            .and_then(|rest| rest.split_whitespace().skip_while(|w| *w != "median").nth(1)?.parse::<u64>().ok());
        run.assert(m.is_some(), "the probe printed the witnessed_hvc figure");
        let clock_lines: Vec<&str> = run
            .lines()
            .filter(|l| l.starts_with("@J 1 c "))
            .filter(|l| {
                let e = rvm_abi::journal::JournalFrame::parse(l);
                matches!(e, Some(rvm_abi::journal::JournalFrame { entry: Entry::Call { ref data, .. }, .. }) if data.len() == 8)
            })
            .collect();
        run.assert(clock_lines.is_empty() == (flags == 0), "journal entries exactly when asked for");
        (m.unwrap_or(0), clock_lines.first().map_or(0, |l| l.len() as u64 + 1))
    };
    let (off, _) = median(0);
    let (on, line) = median(BOOT_FLAG_JOURNAL);
    let entry = on.saturating_sub(off);
    println!("witnessed ClockRead round trip from EL1: {off} instructions without the journal, {on} with it (median of 256)");
    println!("journal entry of a ClockRead ({line} bytes on the UART): {entry} instructions");
    let per_byte = entry as f64 / line as f64;
    // A ChannelRecv entry of a 72-byte message: prefix, 80-byte header and
    // the message in hex, newline.
    let recv_line = "@J 1 c 12345 ".len() as f64 + 2.0 * (rvm_abi::journal::CALL_HEADER_LEN as f64 + 72.0) + 1.0;
    println!("  {per_byte:.1} instructions per journal byte; a ChannelRecv of a 72-byte packet ({recv_line} bytes): ~{:.0} instructions (estimate)", per_byte * recv_line);
    assert!(off > 0 && on > 0 && line > 0);
}
