//! Per-CPU scheduling on the fake machine: placement, fairness per run
//! queue, leases that keep a running vCPU out of reach, deferred orders,
//! and the end of a run on several CPUs.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use rvm_abi::bundle::{BootConfig, BundleWriter, EntryKind, PartitionDesc, GLOBAL};
use rvm_abi::frame::Frame;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{Hypercall, WitnessOp, WitnessRecord};

use crate::memory::addr::{PhysAddr, PhysRange};
use crate::arch::{CpuId, TrapInfo};
use crate::fake::FakeArch;
use crate::memory::frames::FrameAllocator;
use crate::state::Hypervisor;
use crate::partition::{PartitionId, PartitionState};
use crate::running::smp::{cpu_main, KernelLock, Step};
use crate::running::vcpu::Vcpu;

fn desc(name: &str, urgency: u8) -> PartitionDesc {
    PartitionDesc { deadline_urgency: urgency, cut_pressure: 0, ..crate::tests::desc(name) }
}

fn runtime() -> Vec<u8> {
    crate::load::elf::tests::build(0x4000_0000, &[(0x4000_0000, 5, 64, 64), (0x4000_1000, 6, 16, 0x2000)])
}

/// Boot partitions named by `parts` (name, deadline urgency) with a run
/// budget and a slice length.
fn boot(parts: &[(&str, u8)], budget_ms: u32, slice_us: u32) -> Hypervisor<FakeArch> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[9u8; 32]);
    w.entry(EntryKind::BootConfig, GLOBAL, &BootConfig { run_budget_ms: budget_ms, slice_us, ..BootConfig::DEFAULT }.to_bytes());
    for (name, urgency) in parts {
        let i = w.partition(&desc(name, *urgency));
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
    }
    let frames = FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), 64 << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &w.finish()).unwrap()
}

fn call(v: &mut Vcpu, c: Hypercall, args: &[u64]) -> TrapInfo {
    v.regs.x[0] = u64::from(c.function_id());
    for (i, a) in args.iter().enumerate() {
        v.regs.x[1 + i] = *a;
    }
    FakeArch::hvc()
}

/// A guest that makes `calls` yields, then exits.
fn finisher(calls: u32) -> crate::fake::GuestFn {
    let mut n = 0;
    Box::new(move |v, _| {
        n += 1;
        if n > calls {
            call(v, Hypercall::Exit, &[0])
        } else {
            call(v, Hypercall::Yield, &[])
        }
    })
}

/// Every log streamed on the console chains from its first record.
fn assert_chains_verify(hv: &Hypervisor<FakeArch>) -> usize {
    let mut logs: BTreeMap<u32, Vec<[u8; 64]>> = BTreeMap::new();
    for f in hv.arch.console_text().lines().filter_map(Frame::parse) {
        if let Frame::Record { log, bytes } = f {
            logs.entry(log).or_default().push(bytes);
        }
    }
    for (log, recs) in &logs {
        let mut head = rvm_witness::Hash::ZERO;
        for (i, bytes) in recs.iter().enumerate() {
            let r = WitnessRecord::from_bytes(bytes).unwrap();
            assert_eq!(r.seq, i as u64, "log {log}: seq");
            assert_eq!(r.prev, head.prefix16(), "log {log}: record {i} links its predecessor");
            head = rvm_witness::chain::chain_step(&head, bytes);
        }
    }
    logs.len()
}

#[test]
fn partitions_are_placed_on_the_least_loaded_cpu_and_run_only_there() {
    let names = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
    let parts: Vec<(&str, u8)> = names.iter().map(|n| (*n, 50)).collect();
    let mut hv = boot(&parts, 0, 1_000);
    for vmid in 1..=8u8 {
        hv.arch.set_guest(vmid, finisher(20 + u32::from(vmid)));
    }
    let summary = hv.run_on_cpus(4);
    assert_eq!(summary.finished, 8);
    // Equal weights: two per CPU, in admission order round the CPUs.
    for idx in 0..8 {
        let home = hv.home_cpu(idx).unwrap();
        assert_eq!(home, CpuId((idx % 4) as u8), "partition {idx}");
        let ran: Vec<CpuId> = hv.ran_on(idx).cpus().collect();
        assert_eq!(ran, [home], "partition {idx} ran only on its home CPU");
    }
    assert!(hv.arch.console_text().contains(" cpu 3"), "the summary names the CPU");
    for cpu in 0..4 {
        assert!(hv.arch.console_text().contains(&alloc::format!("  cpu {cpu}: 2 partitions, ")), "a summary line per CPU");
    }
    assert_eq!(assert_chains_verify(&hv), 9, "eight partition logs and the hypervisor's");
}

#[test]
fn placement_balances_weight_not_count() {
    // One heavy partition and three light ones on two CPUs: the heavy one
    // alone outweighs the light ones, so they all share the other CPU.
    let mut hv = boot(&[("heavy", 100), ("light-a", 0), ("light-b", 0), ("light-c", 0)], 50, 1_000);
    hv.set_cpus(2);
    let heavy = hv.sched.weight_for(&desc("heavy", 100)).get();
    let light = hv.sched.weight_for(&desc("light", 0)).get();
    assert!(heavy > 3 * light, "the curve gives {heavy} vs {light}");
    assert_eq!(hv.home_cpu(0), Some(CpuId(0)));
    for idx in 1..4 {
        assert_eq!(hv.home_cpu(idx), Some(CpuId(1)), "light partition {idx}");
    }
    assert_eq!(hv.sched.members(CpuId(1)), &[1, 2, 3]);
}

#[test]
fn equal_priority_spinners_share_each_cpu_within_five_percent() {
    // Six spinners on three CPUs: two per queue, always preempted.
    let parts: Vec<(&str, u8)> = ["s0", "s1", "s2", "s3", "s4", "s5"].iter().map(|n| (*n, 50)).collect();
    let mut hv = boot(&parts, 400, 1_000);
    hv.arch.tick_ns = 100_000;
    for vmid in 1..=6u8 {
        hv.arch.set_guest(vmid, Box::new(|_, _| FakeArch::timer()));
    }
    let summary = hv.run_on_cpus(3);
    assert_eq!(summary.stopped, 6, "all ran until the budget");
    for cpu in 0..3u8 {
        let members = hv.sched.members(CpuId(cpu)).to_vec();
        assert_eq!(members.len(), 2);
        let (a, b) = (hv.sched.ran_ns(members[0]) as f64, hv.sched.ran_ns(members[1]) as f64);
        assert!(a > 0.0 && b > 0.0);
        assert!((a / b - 1.0).abs() < 0.05, "cpu {cpu}: {a} vs {b}");
    }
    assert!(hv.partitions().iter().all(|p| p.stats().preemptions > 10));
}

#[test]
fn a_running_vcpu_is_leased_out_and_an_eviction_waits_for_its_cpu() {
    let mut hv = boot(&[("left", 50), ("right", 50)], 0, 1_000);
    hv.set_cpus(2);
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Yield, &[])));
    hv.arch.set_guest(2, Box::new(|v, _| call(v, Hypercall::Yield, &[])));
    let mut cpu1 = hv.arch.cpu(CpuId(1));
    let Step::Run(mut lease) = hv.cpu_next(&mut cpu1) else { panic!("CPU 1 has work") };
    assert_eq!(lease.partition(), 1);
    assert_eq!(hv.running_on(1), Some(CpuId(1)));
    // The partition holds a placeholder while its vCPU is out.
    assert_eq!(hv.partitions()[1].vcpu().regs.pc, 0);
    // The operator orders the eviction of the running partition: deferred.
    crate::orders::evict(&mut hv, PartitionId(2)).unwrap();
    assert_eq!(hv.deferred_orders(), 1);
    assert_eq!(hv.partitions()[1].state(), PartitionState::Running, "not torn down under its CPU");
    assert_eq!(crate::orders::unfence(&mut hv, PartitionId(2)), Err(crate::recovery::fault::OrderError::NotFenced));
    // CPU 1 comes back from the guest: the order is carried out there.
    let trap = lease.run(&mut cpu1);
    let next = hv.cpu_exit(lease, trap, &mut cpu1);
    assert_eq!(hv.deferred_orders(), 0);
    assert_eq!(hv.running_on(1), None);
    assert_eq!(hv.partitions()[1].state(), PartitionState::Evicted);
    assert_ne!(hv.partitions()[1].vcpu().regs.pc, 0, "its own vCPU is back in the partition");
    // Nothing is left on CPU 1; the other partition is untouched.
    assert!(matches!(next, Step::Idle { .. }), "{next:?}");
    assert_eq!(hv.partitions()[0].state(), PartitionState::Loaded, "the other partition is untouched");
    let summary = {
        let mut cpu0 = hv.arch.cpu(CpuId(0));
        let Step::Run(mut lease) = hv.cpu_next(&mut cpu0) else { panic!("CPU 0 has work") };
        let trap = lease.run(&mut cpu0);
        // It yielded; CPU 0 has nothing else, so it runs it again.
        let Step::Run(mut lease) = hv.cpu_exit(lease, trap, &mut cpu0) else { panic!("CPU 0 runs it again") };
        crate::orders::evict(&mut hv, PartitionId(1)).unwrap();
        assert_eq!(hv.deferred_orders(), 1);
        let trap = lease.run(&mut cpu0);
        let next = hv.cpu_exit(lease, trap, &mut cpu0);
        assert_eq!(hv.partitions()[0].state(), PartitionState::Evicted);
        assert!(matches!(next, Step::Stop), "nothing runnable anywhere: {next:?}");
        assert!(!hv.all_cpus_stopped(), "CPU 1 has not seen the end yet");
        assert!(matches!(hv.cpu_next(&mut cpu1), Step::Stop));
        assert!(hv.all_cpus_stopped());
        hv.finish_run()
    };
    assert_eq!(summary.evicted, 2);
    let records: Vec<WitnessRecord> = hv
        .arch
        .console_text()
        .lines()
        .filter_map(Frame::parse)
        .filter_map(|f| match f {
            Frame::Record { log: 2, bytes } => WitnessRecord::from_bytes(&bytes).ok(),
            _ => None,
        })
        .collect();
    let events: Vec<WitnessOp> = records.iter().filter_map(|r| r.operation()).filter(|op| matches!(op, WitnessOp::Event(_))).collect();
    assert!(events.contains(&WitnessOp::Event(KernelEvent::RecoverFence)), "fenced first: {events:?}");
    assert!(events.contains(&WitnessOp::Event(KernelEvent::RecoverEvict)));
    assert_chains_verify(&hv);
}

#[test]
fn the_run_ends_on_every_cpu_when_nothing_is_runnable_anywhere() {
    // Three finishers on four CPUs: one CPU never has work and idles.
    let mut hv = boot(&[("a", 50), ("b", 50), ("c", 50)], 0, 1_000);
    hv.arch.set_guest(1, finisher(5));
    hv.arch.set_guest(2, finisher(50));
    hv.arch.set_guest(3, finisher(500));
    let summary = hv.run_on_cpus(4);
    assert_eq!(summary.finished, 3);
    assert!(hv.all_cpus_stopped());
    let homes: Vec<CpuId> = (0..3).map(|i| hv.home_cpu(i).unwrap()).collect();
    assert_eq!(homes, [CpuId(0), CpuId(1), CpuId(2)]);
    assert!(hv.arch.console_text().contains("run complete"));
    assert_chains_verify(&hv);
}

#[test]
fn a_run_budget_stops_every_cpu() {
    let mut hv = boot(&[("a", 50), ("b", 50)], 20, 1_000);
    hv.arch.tick_ns = 50_000;
    hv.arch.set_guest(1, Box::new(|_, _| FakeArch::timer()));
    hv.arch.set_guest(2, Box::new(|_, _| FakeArch::timer()));
    let summary = hv.run_on_cpus(2);
    assert_eq!(summary.stopped, 2);
    // The budget is checked between slices: the run overshoots it by at
    // most a slice and a round of entries.
    assert!(summary.elapsed_ns >= 20_000_000 && summary.elapsed_ns < 22_000_000, "{}", summary.elapsed_ns);
    assert_chains_verify(&hv);
}

#[test]
fn cpus_run_their_queues_through_the_kernel_lock_and_the_boot_cpu_finishes() {
    // The loop real CPUs run, on one thread: CPU 0 runs its queue until the
    // budget; CPU 1, late, finds the run over at once; then the boot CPU
    // finishes the run.
    let mut hv = boot(&[("zero", 50), ("one", 50)], 20, 1_000);
    hv.arch.tick_ns = 50_000;
    hv.arch.set_guest(1, Box::new(|_, _| FakeArch::timer()));
    hv.arch.set_guest(2, Box::new(|_, _| FakeArch::timer()));
    hv.set_cpus(2);
    let (mut cpu0, mut cpu1) = (hv.arch.cpu(CpuId(0)), hv.arch.cpu(CpuId(1)));
    let kernel = KernelLock::new(hv);
    cpu_main(&kernel, &mut cpu0);
    assert!(kernel.lock(&mut cpu0).stopping());
    assert!(!kernel.lock(&mut cpu0).all_cpus_stopped(), "CPU 1 has not looked yet");
    cpu_main(&kernel, &mut cpu1);
    let mut hv = kernel.lock(&mut cpu0);
    assert!(hv.all_cpus_stopped());
    let summary = hv.finish_run();
    assert_eq!(summary.stopped, 2);
    assert!(cpu0.runs > 10 && cpu1.runs == 0, "{} {}", cpu0.runs, cpu1.runs);
    assert_eq!(hv.ran_on(0).cpus().collect::<Vec<_>>(), [CpuId(0)]);
    assert!(!hv.ran_on(1).any());
    assert!(hv.arch.console_text().contains("  cpu 1: 1 partitions, 0 slices"));
}

/// Two partitions, one per CPU; partition 1 sleeps (`Dormant`), so CPU 1
/// has nothing to run and idles. Returns the kernel and both fake CPUs, with
/// CPU 0 running partition 0 and CPU 1 idling.
fn one_busy_one_idle() -> (Hypervisor<FakeArch>, crate::fake::FakeCpu, crate::fake::FakeCpu, crate::running::smp::Lease) {
    let mut hv = boot(&[("busy", 50), ("sleeper", 50)], 0, 1_000);
    hv.set_cpus(2);
    assert_eq!(hv.home_cpu(1), Some(CpuId(1)));
    hv.partitions[1].move_to(PartitionState::Dormant);
    let (mut c0, mut c1) = (hv.arch.cpu(CpuId(0)), hv.arch.cpu(CpuId(1)));
    let Step::Run(lease) = hv.cpu_next(&mut c0) else { panic!("CPU 0 runs partition 0") };
    assert!(matches!(hv.cpu_next(&mut c1), Step::Idle { .. }), "CPU 1 has nothing runnable");
    (hv, c0, c1, lease)
}

#[test]
fn a_partition_woken_for_an_idle_cpu_kicks_that_cpu_once() {
    let (mut hv, mut c0, mut c1, mut lease) = one_busy_one_idle();
    // An ordinary exit on CPU 0 wakes nobody: no kick.
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Null, &[])));
    let trap = lease.run(&mut c0);
    assert!(hv.cpu_exit_fast(&mut lease, trap));
    assert!(hv.arch.kicks.is_empty(), "nothing became runnable");
    // While CPU 0 handles an exit, the sleeper wakes (as a message to a
    // Dormant partition wakes it): CPU 1 is kicked before the lock goes.
    hv.transition(1, PartitionState::Running, KernelEvent::DormantExit, [0; 16]);
    let trap = lease.run(&mut c0);
    assert!(hv.cpu_exit_fast(&mut lease, trap));
    assert_eq!(hv.arch.kicks, [CpuId(1)], "the idle CPU whose queue got work is kicked");
    // Another wake during the same wait sends no second kick.
    hv.partitions[1].move_to(PartitionState::Dormant);
    hv.transition(1, PartitionState::Running, KernelEvent::DormantExit, [0; 16]);
    let trap = lease.run(&mut c0);
    assert!(hv.cpu_exit_fast(&mut lease, trap));
    assert_eq!(hv.arch.kicks.len(), 1, "one kick per wait");
    // The kicked CPU picks the woken partition at once.
    let Step::Run(l1) = hv.cpu_next(&mut c1) else { panic!("CPU 1 runs the woken partition") };
    assert_eq!(l1.partition(), 1);
    assert_eq!(hv.kicks_sent(CpuId(1)), 1);
    assert_eq!(hv.kicks_sent(CpuId(0)), 0);
    let _ = (&mut c0, l1);
}

#[test]
fn a_wake_for_a_busy_or_own_cpu_sends_no_kick() {
    let (mut hv, mut c0, _c1, mut lease) = one_busy_one_idle();
    // Partition 0 (on CPU 0, which is running it) goes to sleep and wakes
    // within one exit: its own CPU is not idling, nobody is kicked.
    hv.partitions[0].move_to(PartitionState::Dormant);
    hv.transition(0, PartitionState::Running, KernelEvent::DormantExit, [0; 16]);
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Null, &[])));
    let trap = lease.run(&mut c0);
    assert!(hv.cpu_exit_fast(&mut lease, trap));
    assert!(hv.arch.kicks.is_empty(), "CPU 1's queue got no work; CPU 0 is not idle");
    let _ = &mut c0;
}

#[test]
fn idle_cpus_are_kicked_when_the_run_ends() {
    let (mut hv, mut c0, _c1, lease) = one_busy_one_idle();
    // The busy partition exits: nothing anywhere is runnable, the run ends,
    // and the idling CPU is kicked so it stops now rather than a tick later.
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Exit, &[0])));
    let mut lease = lease;
    let trap = lease.run(&mut c0);
    assert!(!hv.cpu_exit_fast(&mut lease, trap));
    assert!(matches!(hv.cpu_after(lease, &mut c0), Step::Stop));
    assert_eq!(hv.arch.kicks, [CpuId(1)]);
}

#[test]
fn cross_cpu_wakes_on_the_fake_machine_kick_and_are_counted() {
    // A full run on two fake CPUs: the sleeper is woken (by an order given
    // between runs here) and CPU 1, idle, is kicked; the summary says so.
    let (mut hv, mut c0, mut c1, lease) = one_busy_one_idle();
    hv.transition(1, PartitionState::Running, KernelEvent::DormantExit, [0; 16]);
    hv.arch.set_guest(1, Box::new(|v, _| call(v, Hypercall::Null, &[])));
    let mut lease = lease;
    let trap = lease.run(&mut c0);
    assert!(hv.cpu_exit_fast(&mut lease, trap));
    assert_eq!(hv.kicks_sent(CpuId(1)), 1);
    let _ = (&mut c0, &mut c1);
    let lines = hv.cpu_lines();
    assert!(lines[1].ends_with(", 1 kicks"), "{lines:?}");
}
