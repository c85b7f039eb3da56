//! Per-CPU scheduling under QEMU: partitions spread over the CPUs, each
//! running only on its home CPU, every one progressing, every witness chain
//! intact, and a clean power-off — with 4 CPUs and with 1. Idle CPUs are
//! kicked awake when work arrives for them, and messages flow across CPUs
//! (counts reported for 1 CPU, 4 CPUs without kicks and 4 CPUs with them).

use std::collections::{BTreeMap, BTreeSet};

use rvm_abi::bundle::MemoryTier;
use rvm_abi::witness::KernelEvent;
use rvm_abi::Hypercall;
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions, QemuRun};

/// One partition's line of the run summary.
#[derive(Debug)]
struct Summary {
    state: String,
    preempted: u64,
    calls: u64,
    cpus: Vec<u32>,
    charged_us: u64,
}

/// The run summary's per-partition lines, by name.
fn summary(run: &QemuRun) -> BTreeMap<String, Summary> {
    let mut out = BTreeMap::new();
    for line in run.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(cpu_at) = words.iter().position(|w| *w == "cpu") else { continue };
        if words.len() < 4 || words[0].parse::<u32>().is_err() || !line.contains(" witness records ") {
            continue;
        }
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).and_then(|v| v.parse::<u64>().ok());
        let cpus = words[cpu_at + 1].split(',').filter_map(|c| c.parse().ok()).collect();
        out.insert(
            words[1].to_string(),
            Summary {
                state: words[2].to_string(),
                preempted: after("preempted").unwrap_or(0),
                calls: after("calls").unwrap_or(0),
                cpus,
                charged_us: after("charged").unwrap_or(0),
            },
        );
    }
    out
}

/// Two reference agents talking over a channel and two spinners that run
/// until the budget (generous: QEMU's CPUs share a loaded host).
fn mixed(budget_ms: u32) -> BundleSpec {
    BundleSpec::new()
        .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("wasm-spinner", artifact("agents/spin.wasm")))
        .partition(PartitionSpec::image("raw-spinner", artifact("probes/probe-spin-masked.elf")))
        .channel(0, 1)
        .budget_ms(budget_ms)
}

#[test]
fn four_partitions_run_on_four_distinct_cpus_and_all_progress() {
    let run = boot(&mixed(10_000).build(), &QemuOptions::default());
    run.assert(!run.timed_out && run.exit == Some(0), "clean power-off");
    run.assert(run.contains("4 of 4 CPUs online"), "all CPUs online");
    let s = summary(&run);
    run.assert(s.len() == 4, "a summary line per partition");
    let mut cpus = BTreeSet::new();
    for (name, p) in &s {
        run.assert(p.cpus.len() == 1, &format!("{name} ran on exactly one CPU: {:?}", p.cpus));
        cpus.extend(p.cpus.iter().copied());
    }
    run.assert(cpus == BTreeSet::from([0, 1, 2, 3]), "each on its own CPU");
    // The agents finished, talking across CPUs; the spinners were preempted
    // on theirs until the budget.
    run.assert(run.contains("'agent-a' exited: code 0x0"), "agent-a finished");
    run.assert(run.contains("'agent-b' exited: code 0x0"), "agent-b finished");
    let sends_a = run.log(1).iter().filter(|r| r.op == Hypercall::ChannelSend as u16 && r.outcome == 0).count();
    // The reference agent receives with `ChannelWait`.
    let recvs_b = run.log(2).iter().filter(|r| r.op == Hypercall::ChannelWait as u16 && r.outcome == 0).count();
    run.assert(sends_a > 0 && sends_a == recvs_b, "every message a sent, b received");
    for spinner in ["wasm-spinner", "raw-spinner"] {
        let p = &s[spinner];
        run.assert(p.preempted > 0 && p.charged_us > 0, &format!("{spinner} ran and was preempted: {p:?}"));
        run.assert(p.state == "suspended", &format!("{spinner} ran until the budget"));
    }
    run.assert(assert_chains(&run) == 5, "the hypervisor's log and four partition logs verify");
}

#[test]
fn equal_spinners_share_each_cpu() {
    // Eight equal spinners on four CPUs: two per run queue.
    let mut spec = BundleSpec::new();
    for n in 0..8 {
        spec = spec.partition(PartitionSpec::wasm(&format!("spin-{n}"), artifact("agents/spin.wasm")));
    }
    let run = boot(&spec.budget_ms(4_000).build(), &QemuOptions { timeout: std::time::Duration::from_secs(120), ..QemuOptions::default() });
    run.assert(!run.timed_out && run.exit == Some(0), "clean power-off");
    let s = summary(&run);
    run.assert(s.len() == 8, "a summary line per partition");
    let mut per_cpu: BTreeMap<u32, Vec<(&str, u64)>> = BTreeMap::new();
    for (name, p) in &s {
        run.assert(p.cpus.len() == 1, &format!("{name} stayed on its CPU"));
        per_cpu.entry(p.cpus[0]).or_default().push((name, p.charged_us));
    }
    run.assert(per_cpu.len() == 4, "all four CPUs used");
    for (cpu, parts) in &per_cpu {
        run.assert(parts.len() == 2, &format!("cpu {cpu} runs two spinners"));
        let total: u64 = parts.iter().map(|p| p.1).sum();
        for (name, charged) in parts {
            let share = *charged as f64 / total.max(1) as f64;
            // The share is the scheduler's decision (charged time of equal
            // weights), so it is checked loosely here and reported exactly.
            println!("cpu {cpu}: {name} {charged} us, share {:.2}%", share * 100.0);
            run.assert(*charged > 0, &format!("{name} progressed"));
            run.assert((0.35..0.65).contains(&share), &format!("{name} got a fair share of cpu {cpu}"));
        }
    }
    run.assert(assert_chains(&run) == 9, "every log verifies");
}

#[test]
fn one_cpu_still_runs_everything() {
    let run = boot(&mixed(10_000).build(), &QemuOptions { smp: 1, ..QemuOptions::default() });
    run.assert(!run.timed_out && run.exit == Some(0), "clean power-off");
    run.assert(run.contains("1 of 1 CPUs online"), "one CPU");
    let s = summary(&run);
    run.assert(s.values().all(|p| p.cpus == [0]), "everything on CPU 0");
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "agents finished");
    run.assert(s.values().all(|p| p.calls > 0 || p.preempted > 0), "all progressed");
    run.assert(assert_chains(&run) == 5, "every log verifies");
}

const PLAN_MARKER: &[u8; 16] = b"RVM-CHATTER-PLN1";

/// The chatter agent talking for `seconds` of its guest clock: `burst`
/// messages every `every` turns on the channels in `mask`.
fn chatter(every: u8, mask: u8, seconds: u8, burst: u8) -> Vec<u8> {
    let mut wasm = artifact("agents/chatter.wasm");
    let at = wasm.windows(16).position(|w| w == PLAN_MARKER).expect("plan marker in the chatter module") + 16;
    wasm[at..at + 4].copy_from_slice(&[every, mask, seconds, burst]);
    wasm
}

/// Two chatty partitions (a burst of 4 every turn, each way) and a sleeper
/// (`Dormant` tier, says nothing while talking) that a pinger sends one
/// message every 20th turn: the sleeper's CPU idles between messages, and
/// each message wakes it from another CPU. One second of talk each.
fn chatting() -> BundleSpec {
    BundleSpec::new()
        .partition(PartitionSpec::wasm("chat-a", chatter(1, 0b1, 1, 4)))
        .partition(PartitionSpec::wasm("chat-b", chatter(1, 0b1, 1, 4)))
        .partition(PartitionSpec::wasm("sleeper", chatter(1, 0b0, 1, 1)).tier(MemoryTier::Dormant))
        .partition(PartitionSpec::wasm("pinger", chatter(20, 0b1, 1, 1)))
        .channel(0, 1)
        .channel(2, 3)
}

/// `(sent, received)` a single-channel chatter printed at its end.
fn counts(run: &QemuRun, name: &str) -> (u64, u64) {
    let line = run
        .console_of(name)
        .find(|l| l.starts_with("chatter: channel 0 sent "))
        .unwrap_or_else(|| panic!("{name} printed its counts\n{}", run.serial));
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[4].parse().unwrap(), w[6].parse().unwrap())
}

/// The turns a chatter made (its last line).
fn turns(run: &QemuRun, name: &str) -> u64 {
    run.console_of(name)
        .find_map(|l| l.strip_prefix("chatter: done after ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Kicks per CPU from the run summary's CPU lines.
fn kicks(run: &QemuRun) -> Vec<u64> {
    run.lines()
        .filter(|l| l.trim_start().starts_with("cpu ") && l.contains(" idle waits, "))
        .filter_map(|l| l.rsplit(", ").next()?.strip_suffix(" kicks")?.parse().ok())
        .collect()
}

/// One run of [`chatting`]: asserts both ends of each channel agree and
/// every chain verifies; prints the run's figures and returns (chat
/// messages, sleeper messages, wakes, kicks).
fn chat_run(label: &str, smp: u32, append: &str) -> (u64, u64, usize, u64) {
    let opts = QemuOptions { smp, append: append.into(), timeout: std::time::Duration::from_secs(180), ..QemuOptions::default() };
    let run = boot(&chatting().build(), &opts);
    run.assert(!run.timed_out && run.exit == Some(0), "clean power-off");
    run.assert(run.contains(&format!("{smp} of {smp} CPUs online")), "all CPUs online");
    let (a, b, sleeper, pinger) = (counts(&run, "chat-a"), counts(&run, "chat-b"), counts(&run, "sleeper"), counts(&run, "pinger"));
    run.assert(a.0 == b.1 && b.0 == a.1, &format!("chat-a/chat-b: every message sent was received once: {a:?} {b:?}"));
    run.assert(pinger.0 == sleeper.1 && sleeper.0 == pinger.1, &format!("pinger/sleeper counts match: {pinger:?} {sleeper:?}"));
    run.assert(a.0 > 0 && b.0 > 0 && pinger.0 > 0, "messages flowed");
    let wakes = run.log(3).iter().filter(|r| KernelEvent::from_code(r.op) == Some(KernelEvent::DormantExit)).count();
    let kicks: u64 = kicks(&run).iter().sum();
    run.assert(assert_chains(&run) == 5, "the hypervisor's log and four partition logs verify");
    println!(
        "smp chatter, {label}: chat-a+chat-b exchanged {} messages in 1 s of guest time ({} and {} turns); \
         sleeper got {} messages ({} turns), woke {wakes} times; pinger {} turns; {kicks} kicks",
        a.0 + b.0,
        turns(&run, "chat-a"),
        turns(&run, "chat-b"),
        sleeper.1,
        turns(&run, "sleeper"),
        turns(&run, "pinger"),
    );
    (a.0 + b.0, sleeper.1, wakes, kicks)
}

#[test]
fn idle_cpus_are_kicked_awake_and_messages_flow_across_cpus() {
    let one = chat_run("1 CPU", 1, "");
    let untouched = chat_run("4 CPUs, tick only (rvm.kick=off)", 4, "rvm.kick=off");
    let kicked = chat_run("4 CPUs, kicks", 4, "");
    // With one CPU nothing is idle to kick, and `rvm.kick=off` sends none.
    assert_eq!(one.3, 0, "no kicks on one CPU");
    assert_eq!(untouched.3, 0, "no kicks with rvm.kick=off");
    // With kicks, the sleeper's CPU idles between messages and each wake
    // from the pinger's CPU kicks it.
    assert!(kicked.2 > 0, "the sleeper slept and woke: {kicked:?}");
    assert!(kicked.3 > 0, "the kick path was used: {kicked:?}");
}

#[test]
fn a_chatting_pair_alone_exchanges_messages_on_one_cpu_and_on_four() {
    // The chatty pair of `chatting` without the sleeper and the pinger: what
    // the pair exchanges when no other partition takes the kernel lock.
    for smp in [1, 4] {
        let spec = BundleSpec::new()
            .partition(PartitionSpec::wasm("chat-a", chatter(1, 0b1, 1, 4)))
            .partition(PartitionSpec::wasm("chat-b", chatter(1, 0b1, 1, 4)))
            .channel(0, 1);
        let opts = QemuOptions { smp, timeout: std::time::Duration::from_secs(180), ..QemuOptions::default() };
        let run = boot(&spec.build(), &opts);
        run.assert(!run.timed_out && run.exit == Some(0), "clean power-off");
        let (a, b) = (counts(&run, "chat-a"), counts(&run, "chat-b"));
        run.assert(a.0 == b.1 && b.0 == a.1, &format!("every message sent was received once: {a:?} {b:?}"));
        run.assert(a.0 > 0 && b.0 > 0, "messages flowed");
        println!(
            "smp chatter pair alone, {smp} CPU(s): exchanged {} messages in 1 s of guest time ({} and {} turns)",
            a.0 + b.0,
            turns(&run, "chat-a"),
            turns(&run, "chat-b")
        );
    }
}

/// Every log on the console chains from its first record and its head is
/// signed; returns how many logs there were.
fn assert_chains(run: &QemuRun) -> usize {
    let logs = run.assert_chains_linked();
    for (log, _) in run.records().into_iter().collect::<BTreeMap<u32, [u8; 64]>>() {
        run.assert(run.lines().any(|l| l.starts_with(&format!("@C {log} "))), &format!("log {log}'s head is signed"));
    }
    logs
}
