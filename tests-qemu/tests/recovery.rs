//! Recovery under QEMU (issue 6): fault injection per class with other
//! partitions running alongside, and the 500-turn packet scenario with a
//! snapshot at turn 250, a restore, and byte-identical outputs.
//!
//! The agents take their test plans from bytes patched into their modules
//! (`rvm_guest::plan`); recovery thresholds come from the bundle.

use rvm_abi::bundle::{BootConfig, BundleWriter, ChannelDesc, EntryKind, MemoryTier, PartitionDesc, RecoveryDesc, GLOBAL};
use rvm_abi::recovery::{class, trigger, RecoveryArgs};
use rvm_abi::witness::KernelEvent;
use rvm_tests_qemu::{artifact, boot, QemuOptions, QemuRun};

const FAULTY_MARKER: &[u8; 16] = b"RVM-FAULTY-PLAN1";
const PACKET_MARKER: &[u8; 16] = b"RVM-PACKET-PLAN1";

/// `module` with the bytes after `marker` replaced by `plan`.
fn patched(module: &str, marker: &[u8; 16], plan: &[u8]) -> Vec<u8> {
    let mut wasm = artifact(module);
    let at = wasm.windows(marker.len()).position(|w| w == marker).expect("the module carries its plan marker") + marker.len();
    wasm[at..at + plan.len()].copy_from_slice(plan);
    wasm
}

/// The faulty agent with `kind`, `faults`, fault turn `at`, `after` turns.
fn faulty(kind: u8, faults: u8, at: u8, after: u8) -> Vec<u8> {
    patched("agents/faulty.wasm", FAULTY_MARKER, &[kind, faults, at, after, 0, 0, 0, 0])
}

struct Part {
    name: &'static str,
    wasm: Vec<u8>,
    pages: u32,
    recovery: RecoveryDesc,
}

fn part(name: &'static str, wasm: Vec<u8>) -> Part {
    Part { name, wasm, pages: 16, recovery: RecoveryDesc::DEFAULT }
}

/// A bundle with per-partition recovery thresholds (the harness's
/// `BundleSpec` has none).
fn bundle(parts: &[Part], channels: &[(u32, u32)], budget_ms: u32) -> Vec<u8> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &artifact("guest-runtime.elf"));
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[0x42; 32]);
    let config = BootConfig { run_budget_ms: budget_ms, ..BootConfig::DEFAULT };
    w.entry(EntryKind::BootConfig, GLOBAL, &config.to_bytes());
    for p in parts {
        let desc = PartitionDesc {
            name: PartitionDesc::name_field(p.name).unwrap(),
            memory_tier: MemoryTier::Warm,
            deadline_urgency: 50,
            cut_pressure: 30,
            default_tier: 2,
            wasm_pages: p.pages,
            fuel_per_slice: 0,
            recovery: p.recovery,
            witness_key_fingerprint: None,
            dormant_after_ms: 0,
        };
        let i = w.partition(&desc);
        w.entry(EntryKind::Wasm, i, &p.wasm);
    }
    for (a, b) in channels {
        w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: *a, b: *b, capacity: 16 }.to_bytes());
    }
    w.finish()
}

/// The reference pair, as partitions `first` and `first + 1`.
fn reference_pair() -> [Part; 2] {
    [part("agent-a", artifact("agents/reference.wasm")), part("agent-b", artifact("agents/reference.wasm"))]
}

fn run(parts: &[Part], channels: &[(u32, u32)], budget_ms: u32) -> QemuRun {
    boot(&bundle(parts, channels, budget_ms), &QemuOptions::default())
}

/// Recovery steps in a log.
fn steps(run: &QemuRun, log: u32) -> Vec<(KernelEvent, RecoveryArgs)> {
    run.log(log)
        .iter()
        .filter_map(|r| {
            let e = KernelEvent::from_code(r.op)?;
            matches!(
                e,
                KernelEvent::RecoverRestart
                    | KernelEvent::RecoverRollback
                    | KernelEvent::RecoverFence
                    | KernelEvent::RecoverEvict
                    | KernelEvent::Unfence
            )
            .then(|| (e, RecoveryArgs::from_bytes(&r.args)))
        })
        .collect()
}

/// Committed items the agent printed after its last turn before `line_no`.
fn agent_count_before(run: &QemuRun, name: &str, line_no: usize) -> Option<u32> {
    let prefix = format!("[{name}] faulty: turn ");
    run.serial.lines().take(line_no).filter_map(|l| l.strip_prefix(prefix.as_str())).last().and_then(|l| {
        let n = l.split(" committed ").nth(1)?.split(' ').next()?;
        n.parse().ok()
    })
}

/// Each recovery line of partition `name`: (line number, items before, items after).
fn recovery_lines(run: &QemuRun, name: &str) -> Vec<(usize, String, u32, u32)> {
    let needle = format!("'{name}' ");
    run.serial
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("rvm: partition ") && l.contains(&needle) && l.contains("committed items"))
        .map(|(i, l)| {
            // "..., B committed items before, A after" or "..., N committed items kept..."
            let number_before = |word: &str| -> u32 {
                let head = &l[..l.find(word).unwrap_or(0)];
                head.rsplit(|c: char| !c.is_ascii_digit()).next().unwrap_or("").parse().unwrap_or(u32::MAX)
            };
            if l.ends_with(" after") {
                let before = number_before(" committed items before");
                let after = l.trim_end_matches(" after").rsplit(' ').next().unwrap().parse().unwrap_or(u32::MAX);
                (i, l.to_string(), before, after)
            } else {
                let n = number_before(" committed items kept");
                (i, l.to_string(), n, n)
            }
        })
        .collect()
}

#[test]
fn a_trap_restarts_the_agent_which_continues_with_its_committed_state() {
    let [a, b] = reference_pair();
    let parts = [a, b, part("faulty", faulty(1, 1, 3, 2))];
    let run = run(&parts, &[(0, 1)], 0);
    run.assert(run.exit == Some(0), "clean power-off");
    let s = steps(&run, 3);
    run.assert(s.len() == 1 && s[0].0 == KernelEvent::RecoverRestart, "one F1");
    run.assert(s[0].1.trigger == trigger::TRAP && s[0].1.class == class::RESTART, "caused by the trap");
    let lines = recovery_lines(&run, "faulty");
    run.assert(lines.len() == 1, "one recovery line");
    let (at, _, before, after) = &lines[0];
    run.assert(before == after, "nothing committed is lost");
    run.assert(agent_count_before(&run, "faulty", *at) == Some(*after), "the agent's own count matches the kernel's");
    run.assert(run.contains("[faulty] faulty: starting at turn 4 with 1 faults committed"), "the restarted agent continues from its committed state");
    run.assert(run.contains("'faulty' exited: code 0x0"), "and finishes");
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "the others finished");
    assert_chains(&run);
}

#[test]
fn three_traps_in_the_window_roll_back_to_the_last_snapshot() {
    let [a, b] = reference_pair();
    let parts = [a, b, part("faulty", faulty(1, 3, 3, 2))];
    let run = run(&parts, &[(0, 1)], 0);
    run.assert(run.exit == Some(0), "clean power-off");
    let s = steps(&run, 3);
    let classes: Vec<u8> = s.iter().map(|(_, a)| a.class).collect();
    // F1, F1, F2; the snapshot it restores is armed, so it traps once more (F1).
    run.assert(classes == [class::RESTART, class::RESTART, class::ROLLBACK, class::RESTART], "F1 F1 F2 F1");
    let rollback = s[2].1;
    run.assert(rollback.snapshot_id > 0, "rolled back to a snapshot");
    run.assert(run.contains("runtime: restored snapshot"), "the runtime restored it");
    for (at, line, before, after) in recovery_lines(&run, "faulty") {
        run.assert(before == after, &format!("nothing committed is lost: {line}"));
        run.assert(agent_count_before(&run, "faulty", at) == Some(after), &format!("agent count matches: {line}"));
    }
    run.assert(run.contains("'faulty' exited: code 0x0"), "the agent finishes");
    run.assert(run.contains("'agent-b' exited: code 0x0"), "the others finished");
    assert_chains(&run);
}

#[test]
fn a_failed_validation_rolls_back_and_repeated_rollbacks_fence() {
    let [a, b] = reference_pair();
    let parts = [a, b, part("faulty", faulty(3, 0, 5, 0))];
    let run = run(&parts, &[(0, 1)], 0);
    run.assert(run.exit == Some(0), "clean power-off");
    let s = steps(&run, 3);
    let got: Vec<(u8, u8)> = s.iter().map(|(_, a)| (a.class, a.trigger)).collect();
    run.assert(
        got == [(class::ROLLBACK, trigger::FAILED_VALIDATION), (class::FENCE, trigger::FAILED_VALIDATION)],
        "F2, then F3 on the second F2",
    );
    for (at, line, before, after) in recovery_lines(&run, "faulty") {
        run.assert(before == after, &format!("nothing committed is lost: {line}"));
        run.assert(agent_count_before(&run, "faulty", at) == Some(after), &format!("agent count matches: {line}"));
    }
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "the others finished");
    assert_chains(&run);
}

#[test]
fn hypercall_abuse_fences_and_the_others_are_unaffected() {
    let [a, b] = reference_pair();
    let parts = [a, b, part("faulty", faulty(2, 0, 3, 0))];
    let run = run(&parts, &[(0, 1)], 0);
    run.assert(run.exit == Some(0), "clean power-off");
    let s = steps(&run, 3);
    run.assert(s.len() == 1 && s[0].1.class == class::FENCE && s[0].1.trigger == trigger::HYPERCALL_ABUSE, "F3 for abuse");
    let lines = recovery_lines(&run, "faulty");
    let (at, _, before, after) = &lines[0];
    run.assert(before == after && agent_count_before(&run, "faulty", *at) == Some(*after), "committed state kept");
    run.assert(!run.contains("still running after"), "fenced before its calls ran out");
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "the others finished");
    assert_chains(&run);
}

#[test]
fn a_stage2_write_fences_only_the_offender() {
    let [a, b] = reference_pair();
    let parts = [a, b, part("hostile", artifact("probes/probe-write-hyp.elf")), part("faulty", faulty(0, 0, 3, 1))];
    // The probe is a raw image, not a WASM module: build its entry by hand.
    let mut bundle = BundleWriter::new();
    bundle.entry(EntryKind::GuestRuntime, GLOBAL, &artifact("guest-runtime.elf"));
    bundle.entry(EntryKind::WitnessKeySeed, GLOBAL, &[0x42; 32]);
    bundle.entry(EntryKind::BootConfig, GLOBAL, &BootConfig::DEFAULT.to_bytes());
    for p in &parts {
        let desc = PartitionDesc {
            name: PartitionDesc::name_field(p.name).unwrap(),
            memory_tier: MemoryTier::Warm,
            deadline_urgency: 50,
            cut_pressure: 30,
            default_tier: 2,
            wasm_pages: p.pages,
            fuel_per_slice: 0,
            recovery: p.recovery,
            witness_key_fingerprint: None,
            dormant_after_ms: 0,
        };
        let i = bundle.partition(&desc);
        let kind = if p.name == "hostile" { EntryKind::GuestImage } else { EntryKind::Wasm };
        bundle.entry(kind, i, &p.wasm);
    }
    bundle.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: 0, b: 1, capacity: 16 }.to_bytes());
    let run = boot(&bundle.finish(), &QemuOptions::default());
    run.assert(run.exit == Some(0), "clean power-off");
    let s = steps(&run, 3);
    run.assert(s.len() == 1 && s[0].1.class == class::FENCE && s[0].1.trigger == trigger::STAGE2_VIOLATION, "F3 at once");
    run.assert(steps(&run, 4).is_empty(), "the faulty agent (no fault planned) saw no recovery");
    run.assert(run.contains("'faulty' exited: code 0x0"), "and finished");
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "the others finished");
    assert_chains(&run);
}

#[test]
fn an_unresolved_fence_is_evicted_after_its_timeout() {
    let [a, b] = reference_pair();
    let mut abuser = part("faulty", faulty(2, 0, 3, 0));
    abuser.recovery = RecoveryDesc { fence_timeout_ms: 100, ..RecoveryDesc::DEFAULT };
    let parts = [a, b, abuser, part("spinner", artifact("agents/spin.wasm"))];
    let run = run(&parts, &[(0, 1)], 3_000);
    run.assert(run.exit == Some(0), "clean power-off");
    let s = steps(&run, 3);
    let got: Vec<(u8, u8)> = s.iter().map(|(_, a)| (a.class, a.trigger)).collect();
    run.assert(got == [(class::FENCE, trigger::HYPERCALL_ABUSE), (class::EVICT, trigger::FENCE_TIMEOUT)], "F3, then F4");
    run.assert(s[0].1.committed_items == s[1].1.committed_items, "the final record names every committed item");
    run.assert(run.contains("'faulty' fence not cleared within 100 ms; evicted (F4)"), "eviction said");
    run.assert(run.contains("1 evicted"), "summary counts it");
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "the others finished");
    assert_chains(&run);
}

// ------------------------------------------------------------------ scenario 1

/// `turn k out <hash>` lines of `name`, in order of appearance.
fn outputs(run: &QemuRun, name: &str) -> Vec<(u32, String)> {
    run.console_of(name)
        .filter_map(|l| l.strip_prefix("packet: turn "))
        .filter_map(|l| {
            let (k, rest) = l.split_once(' ')?;
            Some((k.parse().ok()?, rest.to_string()))
        })
        .collect()
}

/// The state-hash prefixes of a log's `SnapshotTaken` records, in order.
fn snapshot_hashes(run: &QemuRun, log: u32) -> Vec<[u8; 16]> {
    run.log(log).iter().filter(|r| r.op == KernelEvent::SnapshotTaken as u16).map(|r| r.args).collect()
}

/// Issue 6, scenario 1: the packet agent runs 500 turns with a snapshot
/// after turn 250; the source then makes it trap three times (F1, F1, F2),
/// the rollback restores turn 250's snapshot, and turns 251..=500 run
/// again. A second pair in the same machine runs the same 500 turns with no
/// fault. Every output, and the state hash at turn 250 and at the end,
/// must be byte-identical.
#[test]
fn packet_scenario_restores_turn_250_and_reruns_byte_identically() {
    let packet = artifact("agents/packet.wasm");
    let parts = [
        part("packet", packet.clone()),
        part("source", patched("agents/packet.wasm", PACKET_MARKER, &[1, 3])),
        part("clean", packet),
        part("clean-source", patched("agents/packet.wasm", PACKET_MARKER, &[1, 0])),
    ];
    let opts = QemuOptions { timeout: std::time::Duration::from_secs(600), ..QemuOptions::default() };
    let run = boot(&bundle(&parts, &[(0, 1), (2, 3)], 0), &opts);
    run.assert(run.exit == Some(0), "clean power-off");
    for name in ["packet", "source", "clean", "clean-source"] {
        run.assert(run.contains(&format!("'{name}' exited: code 0x0")), &format!("{name} finished"));
    }
    let faulted = outputs(&run, "packet");
    let clean = outputs(&run, "clean");
    let want: Vec<u32> = (1..=500).chain(251..=500).collect();
    run.assert(faulted.iter().map(|(k, _)| *k).collect::<Vec<_>>() == want, "turns 1..=500, then 251..=500 again");
    run.assert(clean.iter().map(|(k, _)| *k).collect::<Vec<_>>() == (1..=500).collect::<Vec<_>>(), "the clean run: 1..=500");
    for (i, (k, out)) in faulted.iter().enumerate() {
        let reference = &clean[*k as usize - 1].1;
        run.assert(out == reference, &format!("turn {k} (output {i}) identical to the clean run"));
    }
    let s = steps(&run, 1);
    let classes: Vec<u8> = s.iter().map(|(_, a)| a.class).collect();
    run.assert(classes == [class::RESTART, class::RESTART, class::ROLLBACK], "F1, F1, F2");
    run.assert(s[2].1.snapshot_id == 1, "back to the turn-250 snapshot");
    run.assert(run.contains("[packet] runtime: restored snapshot 1"), "restored by the runtime");
    // The agent checks its store against its memory before every turn: a
    // commit made after the snapshot that survived the rollback would stop it.
    run.assert(!run.contains("state mismatch"), "no commit after the snapshot survived the rollback");
    run.assert(run.contains("[packet] packet: starting at turn 501 from committed state"), "F1 restarts resume from the store");
    let h_faulted = snapshot_hashes(&run, 1);
    let h_clean = snapshot_hashes(&run, 3);
    run.assert(h_faulted.len() == 2 && h_clean.len() == 2, "snapshots at turn 250 and at the end");
    run.assert(h_faulted == h_clean, "state hashes at turn 250 and at the end are byte-identical");
    assert_chains(&run);
}

// ------------------------------------------------------------------ figures

/// The numbers after `key` on each line containing `needle`.
fn numbers_after<'a>(run: &'a QemuRun, needle: &'a str, key: &'a str) -> impl Iterator<Item = (u64, &'a str)> + 'a {
    run.lines().filter(move |l| l.contains(needle)).filter_map(move |l| {
        let rest = &l[l.find(key)? + key.len()..];
        let n = rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
        Some((n, l))
    })
}

/// Instruction counts of a snapshot and a restore of a 1 MiB and a 16 MiB
/// linear memory, under `-icount shift=0` (one instruction per cycle of the
/// counter). Figures, not assertions: run with
/// `cargo test -p rvm-tests-qemu --test recovery -- --ignored --nocapture`.
///
/// The faulty agent grows its memory to the size, snapshots every turn
/// and traps three times (F1, F1, F2): the F2 restores its last snapshot.
/// Snapshot = the runtime's `Snapshot` call as seen from EL1 (EL2 copies
/// the image into its frames, hashes it with the committed store, witnesses
/// it). Restore = EL2 recreating the guest with the image mapped (kernel
/// clock, ns = instructions under icount) plus the runtime decoding it and
/// copying it into a fresh instance (virtual-counter ns at EL1); the runtime's own
/// re-initialisation (loading the module) is not included.
#[test]
#[ignore = "figures: run with --ignored --nocapture"]
fn snapshot_and_restore_instruction_counts() {
    println!("| linear memory | image bytes | snapshot (instr., EL1 view of the call) | restore: EL2 recreate (instr.) | restore: runtime (instr.) |");
    println!("|---|---|---|---|---|");
    for mib in [1u8, 16] {
        let pages = u32::from(mib) * 16;
        let wasm = patched("agents/faulty.wasm", FAULTY_MARKER, &[1, 3, 2, 0, mib, 0, 0, 0]);
        let parts = [Part { name: "bench", wasm, pages, recovery: RecoveryDesc::DEFAULT }];
        let opts = QemuOptions { icount: true, timeout: std::time::Duration::from_secs(900), ..QemuOptions::default() };
        let run = boot(&bundle(&parts, &[], 0), &opts);
        run.assert(run.exit == Some(0) && run.contains("'bench' exited: code 0x0"), "the bench agent finished");
        let min = u64::from(mib) << 20;
        let snapshots: Vec<(u64, u64)> = numbers_after(&run, "runtime: snapshot ", " handed over in ")
            .filter_map(|(c, l)| {
                let bytes: u64 = l.split(" of ").nth(1)?.split(' ').next()?.parse().ok()?;
                (bytes >= min).then_some((bytes, c))
            })
            .collect();
        let restores: Vec<u64> = numbers_after(&run, "runtime: restored snapshot", " bytes) in ").map(|(c, _)| c).collect();
        let recreate: Vec<u64> = numbers_after(&run, "rolled back to snapshot", "(F2) in ").map(|(n, _)| n).collect();
        run.assert(!snapshots.is_empty() && !restores.is_empty() && !recreate.is_empty(), "figures printed");
        let median = |v: &mut Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let mut ck: Vec<u64> = snapshots.iter().map(|(_, c)| *c).collect();
        println!(
            "| {mib} MiB | {} | {} (median of {}) | {} | {} |",
            snapshots[0].0,
            median(&mut ck),
            ck.len(),
            recreate[0],
            restores[0]
        );
    }
}

/// Every log on the serial line is consecutive and hash-linked.
fn assert_chains(run: &QemuRun) {
    run.assert(run.assert_chains_linked() >= 2, "logs streamed");
}
