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

#[test]
fn waiting_partitions_write_nothing_while_they_wait_and_leave_the_host_idle() {
    // As many as the EL2 heap admits with the default store bounds (each
    // reserves about 3.8 MiB of it: 14 fit), less two.
    const PARTITIONS: u32 = 12;
    const WAITS: usize = 3;
    let mut spec = BundleSpec::new();
    for n in 0..PARTITIONS {
        spec = spec.partition(PartitionSpec::image(&format!("waiter-{n}"), artifact("probes/probe-wait.elf")));
    }
    for n in (0..PARTITIONS).step_by(2) {
        spec = spec.channel(n, n + 1);
    }
    let run = boot(&spec.build(), &QemuOptions { timeout: std::time::Duration::from_secs(180), ..QemuOptions::default() });
    // Figures: the host CPU QEMU used while the partitions waited 3 × 500 ms.
    if let Some(cpu) = run.cpu {
        let share = cpu.as_secs_f64() / run.elapsed.as_secs_f64();
        eprintln!(
            "waits: {PARTITIONS} partitions waiting {WAITS} x 500 ms: QEMU used {:.2} s of host CPU in {:.2} s ({:.0} % of one core)",
            cpu.as_secs_f64(),
            run.elapsed.as_secs_f64(),
            share * 100.0
        );
    }
    run.assert(run.exit == Some(0), "exit 0");
    for log in 1..=PARTITIONS {
        let recs = run.log(log);
        let waits = recs.iter().filter(|r| r.op == Hypercall::ChannelWait as u16).count();
        let timed_out = recs.iter().filter(|r| r.op == Hypercall::ChannelWait as u16 && r.outcome == HvError::WouldBlock.code() as i16).count();
        run.assert(waits == WAITS && timed_out == WAITS, "one record per wait, at its deadline");
    }
    run.assert(run.lines().filter(|l| l.ends_with("wait done")).count() == PARTITIONS as usize, "every waiter saw its deadlines kept");
}
