//! Waiting costs nothing (`ChannelWait`): a receive that waits writes one
//! record when it is answered, none while it waits, and a machine whose
//! partitions all wait leaves the host idle.

use rvm_abi::{HvError, Hypercall};
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions};

/// Receive records (`ChannelRecv` or `ChannelWait`) of one log: (answered
/// with a message, answered otherwise).
fn receives(run: &rvm_tests_qemu::QemuRun, log: u32) -> (usize, usize) {
    let recv = |op: u16| op == Hypercall::ChannelRecv as u16 || op == Hypercall::ChannelWait as u16;
    let all: Vec<_> = run.log(log).into_iter().filter(|r| recv(r.op)).collect();
    let done = all.iter().filter(|r| r.outcome == 0).count();
    (done, all.len() - done)
}

#[test]
fn agents_that_wait_for_their_messages_write_one_receive_record_per_message() {
    // The reference pair: each side waits for the other's next message
    // whenever it has nothing to send.
    let spec = BundleSpec::new()
        .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .channel(0, 1);
    let run = boot(&spec.build(), &QemuOptions::default());
    run.assert(run.exit == Some(0), "exit 0");
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "both finished");
    for (log, peer) in [(1u32, 2u32), (2, 1)] {
        let sent = run.log(peer).iter().filter(|r| r.op == Hypercall::ChannelSend as u16 && r.outcome == 0).count();
        let full = run.log(log).iter().filter(|r| r.op == Hypercall::ChannelSend as u16 && r.outcome == HvError::Full.code() as i16).count();
        let (got, empty) = receives(&run, log);
        run.assert(sent > 0 && got == sent, "every message the peer sent was received, one record each");
        // A side waits with a deadline only while a send of its own was
        // refused for a full queue; the pair's queue never fills.
        run.assert(full == 0 && empty == 0, "no receive answered without a message: no polling");
    }
}

/// The probe's `wait <n> ended after <ns> ns (asked <ns>)` lines: (n,
/// waited, asked) of every partition.
fn waits_of(run: &rvm_tests_qemu::QemuRun) -> Vec<(u32, u64, u64)> {
    run.lines()
        .filter_map(|l| {
            let rest = &l[l.find("] wait ")? + 7..];
            let (n, rest) = rest.split_once(" ended after ")?;
            let (waited, rest) = rest.split_once(" ns (asked ")?;
            Some((n.parse().ok()?, waited.parse().ok()?, rest.strip_suffix(')')?.parse().ok()?))
        })
        .collect()
}

fn waiters(partitions: u32) -> Vec<u8> {
    let mut spec = BundleSpec::new();
    for n in 0..partitions {
        spec = spec.partition(PartitionSpec::image(&format!("waiter-{n}"), artifact("probes/probe-wait.elf")));
    }
    for n in (0..partitions).step_by(2) {
        spec = spec.channel(n, n + 1);
    }
    spec.build()
}

#[test]
fn sixty_four_waiting_partitions_write_nothing_while_they_wait_and_leave_the_host_idle() {
    // Each waits 2 s, then twice 100 ms, on a channel nobody sends to. The
    // machine has the RAM the loader gives 64 tenants: its heap admits them.
    const PARTITIONS: u32 = 64;
    const WAITS: usize = 3;
    let opts = QemuOptions {
        timeout: std::time::Duration::from_secs(240),
        memory_mib: rvm_loader::qemu::memory_for(PARTITIONS as usize),
        ..QemuOptions::default()
    };
    let run = boot(&waiters(PARTITIONS), &opts);
    run.assert(run.exit == Some(0), "exit 0");
    run.assert(run.lines().filter(|l| l.ends_with("wait done")).count() == PARTITIONS as usize, "every waiter saw its deadlines kept");
    // Figures: the host CPU QEMU used while every partition waited (from the
    // last `wait 1 begins` to the first `wait 1 ended`), and over the run.
    match run.cpu_between("wait 1 begins", "wait 1 ended") {
        Some((cpu, wall)) => eprintln!(
            "waits: {PARTITIONS} partitions waiting: QEMU used {:.3} s of host CPU in {:.2} s ({:.1} % of one core); whole run {:.2} s of CPU in {:.2} s",
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            cpu.as_secs_f64() * 100.0 / wall.as_secs_f64(),
            run.cpu.unwrap_or_default().as_secs_f64(),
            run.elapsed.as_secs_f64()
        ),
        None => eprintln!("waits: no CPU samples while the partitions waited (no /proc?)"),
    }
    // Each log: its start-up records, then exactly one record per wait, at
    // its deadline.
    let mut window = (0u64, u64::MAX);
    for log in 1..=PARTITIONS {
        let recs = run.log(log);
        let waits: Vec<_> = recs.iter().filter(|r| r.op == Hypercall::ChannelWait as u16).collect();
        let timed_out = waits.iter().filter(|r| r.outcome == HvError::WouldBlock.code() as i16).count();
        run.assert(waits.len() == WAITS && timed_out == WAITS, "one record per wait, at its deadline");
        let first = recs.iter().position(|r| r.op == Hypercall::ChannelWait as u16).expect("a wait record");
        let before = recs[..first].last().expect("start-up records");
        window = (window.0.max(before.timestamp), window.1.min(recs[first].timestamp));
    }
    // While every partition waited, nothing was written anywhere — no
    // partition's log, nor the hypervisor's.
    run.assert(window.1 > window.0 && window.1 - window.0 >= 1_500_000_000, "every partition waited at once for 1.5 s or more");
    let written: Vec<_> = run.records().into_iter().filter_map(|(log, b)| {
        let r = rvm_abi::witness::WitnessRecord::from_bytes(&b).ok()?;
        (r.timestamp > window.0 && r.timestamp < window.1).then_some((log, r.op))
    }).collect();
    run.assert(written.is_empty(), &format!("no record while they waited: {written:?}"));
}

#[test]
fn a_deadline_is_answered_within_a_tick() {
    // Instruction-count time that jumps over idle stretches: the machine's
    // clock is the same from run to run, whatever the host's load, so the
    // lateness measured is the hypervisor's, not the host's.
    let opts = QemuOptions { icount: true, icount_warp_idle: true, timeout: std::time::Duration::from_secs(120), ..QemuOptions::default() };
    let run = boot(&waiters(4), &opts);
    run.assert(run.exit == Some(0), "exit 0");
    let waits = waits_of(&run);
    run.assert(waits.len() == 4 * 3, "every wait reported");
    let late: Vec<u64> = waits.iter().map(|&(_, waited, asked)| waited - asked).collect();
    eprintln!(
        "waits: deadline lateness (instruction-count ns): max {} ns, mean {} ns over {} waits",
        late.iter().max().unwrap(),
        late.iter().sum::<u64>() / late.len() as u64,
        late.len()
    );
    // One tick is the scheduler's slice (10 ms).
    run.assert(late.iter().all(|&l| l < 10_000_000), &format!("every deadline answered within a tick: {late:?}"));
}
