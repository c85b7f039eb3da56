//! Instruction counts of the hypervisor's paths under QEMU `-icount shift=0,sleep=off`
//! (one instruction = one nanosecond of virtual time, and the cycle counter
//! counts instructions at EL1 and EL2):
//!
//! * a null hypercall round trip from EL1 (trap, decode, return);
//! * a witnessed hypercall round trip (plus a SHA-256 chain step, the
//!   argument digest and the frame streamed on the UART);
//! * reset to the first witness record (the timestamp of the hypervisor's
//!   `Boot` record, in virtual ns = instructions);
//! * a `Yield` round trip alone on the CPU (the slice ends, the scheduler
//!   picks the same partition again), and with two partitions on one CPU,
//!   where every `Yield` is a context switch to the other partition and one
//!   back (EL1 and FP/SIMD state saved and loaded, VTTBR switched): half of
//!   that round trip is one partition-to-partition switch, hypercall
//!   included;
//! * waking a partition parked in `ChannelWait` on another CPU: two
//!   partitions on two CPUs play ping-pong, each waiting for the other's
//!   message; from a send's witness record to the record of the woken
//!   side's answer (its CPU woken by a kick, the receive answered, the
//!   guest entered, its next send witnessed), with kicks and without them
//!   (`rvm.kick=off`: the idle CPU notices at its next tick);
//! * witness throughput, UART against the control channel: 32 partitions
//!   on one CPU make witnessed calls as fast as their output credit lets
//!   them (each may produce 512 KiB/s of text frames: 3,590 records/s, so
//!   115,000/s for 32), without `-icount` (the transport's cost is the
//!   host's); frames and bytes per second of the hypervisor's clock, first
//!   call record to last. One CPU: on this 2-core host four vCPUs spend
//!   most of their time spinning on the kernel lock when every partition
//!   makes calls back to back, which hides the transport.
//!
//! `sleep=off` makes an idle machine's time jump to its next timer instead
//! of following the host's clock, so every figure, the reset-to-first-record
//! one too, is the same from run to run whatever the host's load.
//!
//! The probe reads the cycle counter from EL1, which the hypervisor traps
//! unless booted with `rvm.bench=pmu` ([`BENCH_ARG`]), as every run here is.

/// The kernel argument that leaves the PMU to EL1 for the bench probe.
const BENCH_ARG: &str = "rvm.bench=pmu";

use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions};

fn main() -> std::process::ExitCode {
    for (label, append) in [("SHA-256 with the Armv8 SHA-2 instructions", ""), ("SHA-256 portable (rvm.sha2=off)", "rvm.sha2=off")] {
        if measure(label, append) != std::process::ExitCode::SUCCESS {
            return std::process::ExitCode::FAILURE;
        }
    }
    if context_switch() != std::process::ExitCode::SUCCESS || wake() != std::process::ExitCode::SUCCESS {
        return std::process::ExitCode::FAILURE;
    }
    witness_throughput()
}

/// 32 partitions each make 2000 witnessed `ClockRead`s on one CPU; frames
/// and bytes per second, over the UART and over the control channel.
fn witness_throughput() -> std::process::ExitCode {
    use rvm_abi::Hypercall;
    const PARTITIONS: u32 = 32;
    const CALLS: u64 = 2000;
    let mut input = b"RVMSTL01".to_vec();
    input.extend_from_slice(&7u64.to_le_bytes());
    input.extend_from_slice(&CALLS.to_le_bytes());
    let mut spec = BundleSpec::new();
    for n in 0..PARTITIONS {
        spec = spec.partition(PartitionSpec::image(&format!("storm-{n}"), artifact("probes/probe-stall.elf")).input(input.clone()));
    }
    println!("RVM witness throughput, QEMU without -icount (host time), one CPU, {PARTITIONS} partitions x {CALLS} witnessed calls, a checkpoint every 64 records");
    let bundle = spec.build();
    for (label, control) in [("UART (@W text lines)", false), ("control channel (virtio console, binary)", true)] {
        let memory_mib = rvm_loader::qemu::memory_for(PARTITIONS as usize);
        let opts = QemuOptions { control, smp: 1, memory_mib, timeout: std::time::Duration::from_secs(300), ..QemuOptions::default() };
        let run = boot(&bundle, &opts);
        let finished = run.lines().filter(|l| l.contains("stall 7 done")).count();
        if run.timed_out || run.exit != Some(0) || finished != PARTITIONS as usize || run.control_error.is_some() {
            eprintln!("rvm-bench-qemu: the storm failed (exit {:?}, {finished} finished, control {:?})\n{}", run.exit, run.control_error, run.serial);
            return std::process::ExitCode::FAILURE;
        }
        let calls: Vec<u64> = (1..=PARTITIONS)
            .flat_map(|log| run.log(log))
            .filter(|r| r.op == Hypercall::ClockRead as u16)
            .map(|r| r.timestamp)
            .collect();
        let (first, last) = (calls.iter().min().copied().unwrap_or(0), calls.iter().max().copied().unwrap_or(0));
        let secs = (last - first) as f64 / 1e9;
        let bytes = if control {
            run.control_bytes
        } else {
            run.lines().filter(|l| rvm_abi::frame::Frame::is_frame_line(l)).map(|l| l.len() + 2).sum()
        };
        println!(
            "  {label}: {} call records in {secs:.3} s: {:.0} frames/s, {:.2} MB/s of frames; QEMU ran {:.2} s",
            calls.len(),
            calls.len() as f64 / secs,
            bytes as f64 / secs / 1e6,
            run.elapsed.as_secs_f64()
        );
    }
    std::process::ExitCode::SUCCESS
}

/// Ping-pong between two partitions on two CPUs, each parked while it
/// waits: the instructions from one side's send to the other side's answer.
fn wake() -> std::process::ExitCode {
    use rvm_abi::Hypercall;
    let spec = BundleSpec::new()
        .partition(PartitionSpec::image("ping", artifact("probes/probe-wait.elf")).input(b"ping".to_vec()))
        .partition(PartitionSpec::image("pong", artifact("probes/probe-wait.elf")).input(b"pong".to_vec()))
        .channel(0, 1);
    println!("RVM wake-up of a partition parked in ChannelWait, QEMU -icount shift=0,sleep=off, cortex-a72, two partitions on two CPUs (instructions)");
    for (label, append) in [("woken by a kick", ""), ("woken by its tick (rvm.kick=off)", "rvm.kick=off")] {
        let opts = QemuOptions { icount: true, icount_warp_idle: true, smp: 2, append: append.into(), ..QemuOptions::default() };
        let run = boot(&spec.build(), &opts);
        if run.timed_out || run.exit != Some(0) || run.lines().filter(|l| l.ends_with("wait pingpong done")).count() != 2 {
            eprintln!("rvm-bench-qemu: ping-pong failed (exit {:?}, timed out {})\n{}", run.exit, run.timed_out, run.serial);
            return std::process::ExitCode::FAILURE;
        }
        let sends = |log: u32| -> Vec<u64> {
            run.log(log).iter().filter(|r| r.op == Hypercall::ChannelSend as u16 && r.outcome == 0).map(|r| r.timestamp).collect()
        };
        let (ping, pong) = (sends(1), sends(2));
        // ping[i] wakes pong, whose answer is pong[i]; pong[i] wakes ping,
        // whose next message is ping[i + 1].
        let mut hops: Vec<u64> = ping.iter().zip(&pong).map(|(a, b)| b.saturating_sub(*a)).collect();
        hops.extend(pong.iter().zip(ping.iter().skip(1)).map(|(a, b)| b.saturating_sub(*a)));
        hops.sort_unstable();
        if hops.is_empty() {
            eprintln!("rvm-bench-qemu: no ping-pong records\n{}", run.serial);
            return std::process::ExitCode::FAILURE;
        }
        println!(
            "  send_to_parked_partition_answered ({label}) min {} median {} samples {}",
            hops[0],
            hops[hops.len() / 2],
            hops.len()
        );
    }
    std::process::ExitCode::SUCCESS
}

/// Two bench partitions on one CPU: their `Yield` samples are switches.
fn context_switch() -> std::process::ExitCode {
    let spec = BundleSpec::new()
        .partition(PartitionSpec::image("bench-a", artifact("probes/probe-bench.elf")))
        .partition(PartitionSpec::image("bench-b", artifact("probes/probe-bench.elf")));
    let opts = QemuOptions { icount: true, icount_warp_idle: true, smp: 1, append: BENCH_ARG.into(), ..QemuOptions::default() };
    let run = boot(&spec.build(), &opts);
    if run.timed_out || run.exit != Some(0) {
        eprintln!("rvm-bench-qemu: run failed (exit {:?}, timed out {})\n{}", run.exit, run.timed_out, run.serial);
        return std::process::ExitCode::FAILURE;
    }
    println!("RVM context switch, QEMU -icount shift=0,sleep=off, cortex-a72, two partitions on one CPU (instructions)");
    let mut medians = Vec::new();
    for name in ["bench-a", "bench-b"] {
        for line in run.console_of(name) {
            if let Some(rest) = line.strip_prefix("bench yield ") {
                println!("  {name} yield_to_other_and_back {rest}");
                let median = rest.split_whitespace().skip_while(|w| *w != "median").nth(1).and_then(|m| m.parse::<u64>().ok());
                medians.extend(median);
            }
        }
    }
    if medians.len() != 2 {
        eprintln!("rvm-bench-qemu: the probes printed no yield figures\n{}", run.serial);
        return std::process::ExitCode::FAILURE;
    }
    let per_switch = medians.iter().sum::<u64>() / 4;
    println!("  context_switch_one_way {per_switch} (half the median round trip, Yield hypercall included)");
    std::process::ExitCode::SUCCESS
}

fn measure(label: &str, append: &str) -> std::process::ExitCode {
    let spec = BundleSpec::new().partition(PartitionSpec::image("bench", artifact("probes/probe-bench.elf")));
    let opts = QemuOptions { icount: true, icount_warp_idle: true, smp: 1, append: format!("{BENCH_ARG} {append}"), ..QemuOptions::default() };
    let run = boot(&spec.build(), &opts);
    if run.timed_out || run.exit != Some(0) {
        eprintln!("rvm-bench-qemu: run failed (exit {:?}, timed out {})\n{}", run.exit, run.timed_out, run.serial);
        return std::process::ExitCode::FAILURE;
    }
    println!("RVM hypervisor paths, QEMU -icount shift=0,sleep=off, cortex-a72, {label} (instructions)");
    let mut found = 0;
    for line in run.console_of("bench") {
        if let Some(rest) = line.strip_prefix("bench ") {
            println!("  {rest}");
            found += 1;
        }
    }
    match run.log(0).first() {
        Some(boot_record) => println!("  reset_to_first_witness_record {} (Boot record timestamp, ns = instructions)", boot_record.timestamp),
        None => {
            eprintln!("rvm-bench-qemu: no hypervisor witness record");
            return std::process::ExitCode::FAILURE;
        }
    }
    if found < 2 {
        eprintln!("rvm-bench-qemu: the probe printed no figures\n{}", run.serial);
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
