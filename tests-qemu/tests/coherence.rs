//! Coherence domains under QEMU (issue 7): three agents in one partition —
//! two chatting heavily, one quiet — and two single-agent partitions that
//! chat heavily with each other. The kernel records the real channel
//! traffic, cuts the domain, and witnesses its decisions with their cut
//! values: the quiet agent splits out (`SplitDecided`), and the kernel
//! carries it out: at its next turn boundary the agent is checkpointed,
//! dropped from its runtime, and restored in a new partition, where it
//! keeps talking on the same channel with the same handles until its end
//! (`Split` in both logs). The chatty partitions are decided together
//! (`MergeDecided`); merge migration is not built, so no `Merge` record may
//! appear. Message counts on both ends of every channel match exactly, and
//! every witness chain verifies.

use std::collections::BTreeMap;

use rvm_abi::bundle::BOOT_FLAG_COHERENCE;
use rvm_abi::witness::KernelEvent;
use rvm_abi::WitnessRecord;
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions, QemuRun};

const PLAN_MARKER: &[u8; 16] = b"RVM-CHATTER-PLN1";
/// Seconds each agent talks before it closes its channels.
const TALK_SECONDS: u8 = 1;
/// Messages a chatty agent sends per turn.
const BURST: u8 = 4;

/// The chatter agent with its plan patched: `burst` messages every `every`
/// turns on the channels in `mask`.
fn chatter(every: u8, mask: u8, burst: u8) -> Vec<u8> {
    let mut wasm = artifact("agents/chatter.wasm");
    let at = wasm.windows(16).position(|w| w == PLAN_MARKER).expect("plan marker in the chatter module") + 16;
    wasm[at..at + 4].copy_from_slice(&[every, mask, TALK_SECONDS, burst]);
    wasm
}

fn scenario() -> BundleSpec {
    // Partition 0 "domain": agent slot 0 talks to slot 1 on its channel 0
    // (a burst every turn) and hears slot 2 on its channel 1; slot 1 talks
    // back the same way; slot 2 says one message every 40th turn.
    // Partitions 1 and 2 chat over a partition channel, a burst every turn.
    BundleSpec::new()
        .partition(
            PartitionSpec::wasm("domain", chatter(1, 0b01, BURST)).agent(chatter(1, 0b1, BURST)).agent(chatter(40, 0b1, 1)),
        )
        .partition(PartitionSpec::wasm("left", chatter(1, 0b1, BURST)))
        .partition(PartitionSpec::wasm("right", chatter(1, 0b1, BURST)))
        .channel(1, 2)
        .agent_channel((0, 0), (0, 1))
        .agent_channel((0, 0), (0, 2))
        .flags(BOOT_FLAG_COHERENCE)
}

/// One agent's final counts: per channel (its k-th channel) sent, received.
type Counts = Vec<(u64, u64)>;

/// The counts each agent printed, by kernel agent id (from the runtime's
/// "agent N finished" line after a domain agent's block; `single` for the
/// agent of a single-agent partition).
fn agent_counts(run: &QemuRun, partition: &str, single: Option<u32>) -> BTreeMap<u32, Counts> {
    let mut out = BTreeMap::new();
    let mut block: Counts = Vec::new();
    let mut finished: Option<Counts> = None;
    for line in run.console_of(partition) {
        if let Some(rest) = line.strip_prefix("chatter: channel ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            // "<k> sent <S> received <R>"
            let (k, s, r) = (w[0].parse::<usize>().unwrap(), w[2].parse().unwrap(), w[4].parse().unwrap());
            run.assert(k == block.len(), "channel lines in order");
            block.push((s, r));
        } else if line.starts_with("chatter: done after") {
            finished = Some(std::mem::take(&mut block));
            if let Some(id) = single {
                out.insert(id, finished.take().unwrap());
            }
        } else if let Some(rest) = line.strip_prefix("runtime: agent ") {
            if rest.contains(" finished with code 0") && single.is_none() {
                let id: u32 = rest.split_whitespace().next().unwrap().parse().unwrap();
                out.insert(id, finished.take().expect("the agent printed its counts before it finished"));
            }
        }
    }
    out
}

/// The kernel's per-channel delivered counts from the run summary:
/// channel n → (end 0 → end 1, end 1 → end 0).
fn kernel_channels(run: &QemuRun) -> BTreeMap<usize, (u64, u64)> {
    let mut out = BTreeMap::new();
    for line in run.lines() {
        let Some(rest) = line.trim_start().strip_prefix("channel ") else { continue };
        let Some((n, rest)) = rest.split_once(": ") else { continue };
        let counts: Vec<u64> = rest
            .split("; ")
            .filter_map(|half| half.split(": ").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect();
        if let (Ok(n), [x, y]) = (n.parse(), counts.as_slice()) {
            out.insert(n, (*x, *y));
        }
    }
    out
}

fn events(run: &QemuRun, log: u32, e: KernelEvent) -> Vec<WitnessRecord> {
    run.log(log).into_iter().filter(|r| r.op == e as u16).collect()
}

/// Cut value and internal traffic (Q48.16) from a decision record's args.
fn cut_args(r: &WitnessRecord) -> (u64, u64) {
    let cut = u64::from_le_bytes(r.args[..8].try_into().unwrap());
    let internal = u64::from_le_bytes(r.args[8..].try_into().unwrap());
    (cut, internal)
}

#[test]
fn the_quiet_agent_is_split_out_and_keeps_running_and_chatty_partitions_are_decided_together() {
    // Instruction-count time: the agents talk for a fixed amount of guest
    // work, so the traffic rate the kernel sees does not depend on how busy
    // the host is. One CPU: a yield hands the CPU straight to the peer. (On
    // four, a message to a partition whose CPU idles waits for that CPU's
    // next timer tick, up to a slice: the partitions chat about 40 times
    // less and the decisions rest on thin margins.)
    let opts = QemuOptions { timeout: std::time::Duration::from_secs(240), icount: true, smp: 1, ..QemuOptions::default() };
    let run = boot(&scenario().build(), &opts);
    // What happened, for `--nocapture`.
    for l in run.lines().filter(|l| l.contains("coherence:") || l.contains("chatter: done") || l.contains("  channel ")) {
        eprintln!("{l}");
    }
    run.assert(run.exit == Some(0), "clean power-off");
    for name in ["domain", "left", "right", "domain.a2"] {
        run.assert(run.contains(&format!("'{name}' exited: code 0x0")), &format!("{name} finished"));
    }
    run.assert(run.contains("runtime: partition 1 (domain): 3 agents, round-robin by turn"), "three agents in one partition");

    // The split: the quiet agent (kernel agent id 2) is decided out, with
    // a weak cut, witnessed in the domain's log...
    run.assert(
        run.contains("coherence: split of partition 1 'domain' decided: agents [2] would move"),
        "the quiet agent is decided out",
    );
    let splits = events(&run, 1, KernelEvent::SplitDecided);
    run.assert(splits.len() == 1, "one SplitDecided in the domain's log");
    let (cut, internal) = cut_args(&splits[0]);
    run.assert(cut > 0 && cut * 10 < internal, &format!("a weak cut: {cut} of {internal} (Q48.16)"));
    // ... and carried out: the runtime hands it over at a turn boundary, the
    // kernel creates partition 4 for it, and it runs there to its end.
    run.assert(run.contains("runtime: agent 2 (slot 2) moved out after"), "the runtime handed the agent over");
    run.assert(
        run.contains("coherence: split of partition 1 'domain': agent 2 moved to partition 4 'domain.a2' (1 channels re-pointed"),
        "the kernel moved it",
    );
    run.assert(run.console_of("domain.a2").any(|l| l.starts_with("runtime: restored checkpoint 1")), "restored in the new partition");
    run.assert(run.contains("'domain.a2' exited: code 0x0"), "the moved agent finished in its new partition");
    for log in [1, 4] {
        let moved = events(&run, log, KernelEvent::Split);
        run.assert(moved.len() == 1, &format!("one Split in log {log}"));
        run.assert(moved[0].args == splits[0].args, &format!("log {log}: the Split carries the decision's cut"));
    }
    run.assert(events(&run, 4, KernelEvent::PartitionCreate).len() == 1, "the new partition's creation witnessed");
    run.assert(events(&run, 4, KernelEvent::CapInstall).len() == 2, "its two transplanted handles witnessed");

    // The merge: witnessed in both chatty partitions' logs.
    run.assert(
        run.contains("coherence: merge of partition 3 'right' into 2 'left' decided")
            || run.contains("coherence: merge of partition 2 'left' into 3 'right' decided"),
        "the chatty partitions are decided together",
    );
    for log in [2, 3] {
        let merges = events(&run, log, KernelEvent::MergeDecided);
        run.assert(merges.len() == 1, &format!("one MergeDecided in log {log}"));
        run.assert(cut_args(&merges[0]).0 >= 32 << 16, "cross traffic over the merge floor");
    }
    // Figures, for `--nocapture`: how long after its partition started each
    // decision came (kernel clock), and its cut.
    let started = |log: u32| events(&run, log, KernelEvent::PartitionStart).first().map_or(0, |r| r.timestamp);
    let merge = &events(&run, 2, KernelEvent::MergeDecided)[0];
    eprintln!(
        "figure: split decided {} ms after the domain started (cut {:.2} of {:.2} units); merge decided {} ms after 'left' started (cross {:.2} units)",
        splits[0].timestamp.saturating_sub(started(1)) / 1_000_000,
        cut as f64 / 65536.0,
        internal as f64 / 65536.0,
        merge.timestamp.saturating_sub(started(2)) / 1_000_000,
        cut_args(merge).0 as f64 / 65536.0,
    );
    // Figures, for `--nocapture`: one migration under `-icount shift=0`
    // (one instruction per ns of the virtual clock; the runtime's counts
    // are PMCCNTR cycles).
    for l in run.lines().filter(|l| {
        l.contains("moved out after") || l.contains("moved to partition") || l.contains("restored checkpoint") || l.contains("handed over in")
    }) {
        eprintln!("figure: {l}");
    }
    // The merge stays a decision (merge migration is not built), and
    // nothing else was decided.
    for log in 0..=4 {
        run.assert(events(&run, log, KernelEvent::Merge).is_empty(), "no Merge claimed");
    }
    run.assert(events(&run, 1, KernelEvent::MergeDecided).is_empty(), "the domain merges with nobody");

    // Exact counts on both ends of every channel. Channel 0 is left↔right,
    // 1 is domain slot 0 ↔ slot 1, 2 is slot 0 ↔ slot 2 (bundle order).
    // Each direction also carried one done marker.
    // Agent 2 finished in its new partition, as that partition's one agent.
    let mut agents = agent_counts(&run, "domain", None);
    agents.extend(agent_counts(&run, "domain.a2", Some(2)));
    agents.extend(agent_counts(&run, "left", Some(3)));
    agents.extend(agent_counts(&run, "right", Some(4)));
    run.assert(agents.len() == 5, &format!("five agents reported: {agents:?}"));
    let kernel = kernel_channels(&run);
    // (channel, end 0 = (agent, its channel k), end 1 = ...)
    let ends = [(0, (3, 0), (4, 0)), (1, (0, 0), (1, 0)), (2, (0, 1), (2, 0))];
    for (ch, (a, ka), (b, kb)) in ends {
        let (a_sent, a_recv) = agents[&a][ka];
        let (b_sent, b_recv) = agents[&b][kb];
        let (ab, ba) = kernel[&ch];
        run.assert(a_sent == b_recv && b_sent == a_recv, &format!("channel {ch}: both ends agree"));
        run.assert(ab == a_sent + 1 && ba == b_sent + 1, &format!("channel {ch}: the kernel delivered exactly that"));
    }
    let (quiet, _) = agents[&2][0];
    let (chatty, _) = agents[&1][0];
    run.assert(quiet > 0 && quiet * 10 < chatty, &format!("quiet sent {quiet}, chatty {chatty}"));

    // Every chain verifies.
    let mut logs: BTreeMap<u32, Vec<[u8; 64]>> = BTreeMap::new();
    for (log, bytes) in run.records() {
        logs.entry(log).or_default().push(bytes);
    }
    run.assert(logs.len() == 5, "the hypervisor's log and four partitions'");
    for (log, records) in logs {
        let mut head = rvm_witness::Hash::ZERO;
        for (i, bytes) in records.iter().enumerate() {
            let r = WitnessRecord::from_bytes(bytes).unwrap();
            run.assert(r.seq == i as u64, &format!("log {log}: seq consecutive"));
            run.assert(r.prev == head.prefix16(), &format!("log {log}: record {i} links its predecessor"));
            head = rvm_witness::chain::chain_step(&head, bytes);
        }
    }
}
