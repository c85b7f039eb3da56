//! No tenant can stall or crash the machine: every refused call counts
//! toward abuse and is witnessed; output is credited per partition.

use super::*;

/// `hvc #imm` as the hardware reports it.
/// A neighbour that yields `calls - 1` times, then exits 0.
fn yields_then_exits(calls: u32) -> crate::fake::GuestFn {
    let mut n = 0;
    Box::new(move |v, _| {
        n += 1;
        let call = if n < calls { Hypercall::Yield } else { Hypercall::Exit };
        v.regs.x[0] = u64::from(call.function_id());
        v.regs.x[1] = 0;
        FakeArch::hvc()
    })
}

fn hvc_imm(imm: u16) -> TrapInfo {
    FakeArch::trap(crate::fake::esr::HVC0 | u64::from(imm))
}

/// A function ID in RVM's range that names no call.
const UNKNOWN_RVM_CALL: u64 = (rvm_abi::hypercall::RVM_CALL_BASE | 0x7ff) as u64;

#[test]
fn unknown_function_ids_and_hvc_immediates_are_witnessed_and_count_as_abuse() {
    // A budget ends the run if the abuser is never fenced.
    let mut hv = boot_with(
        &[
            ("abuser", RecoveryDesc::DEFAULT),
            ("other", RecoveryDesc::DEFAULT),
        ],
        2_000,
    );
    let limit = u32::from(crate::recovery::policy::AbusePolicy::DEFAULT.limit.unwrap());
    let (seen, log) = shared::<Vec<i64>>();
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| {
            if g.step > 0 {
                log.borrow_mut().push(g.status());
            }
            match g.step % 3 {
                0 => {
                    g.v.regs.x[0] = UNKNOWN_RVM_CALL;
                    FakeArch::hvc()
                }
                1 => {
                    g.v.regs.x[0] = 0xdead_beef_0000_0001;
                    FakeArch::hvc()
                }
                _ => {
                    g.v.regs.x[0] = u64::from(Hypercall::ClockRead.function_id());
                    hvc_imm(7)
                }
            }
        })),
    );
    hv.arch.set_guest(2, yields_then_exits(50));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!((summary.fenced, summary.finished), (1, 1), "{text}");
    let seen = seen.borrow();
    assert_eq!(
        seen.len() as u32,
        limit - 1,
        "the call that made {limit} was the last: {seen:?}"
    );
    assert!(
        seen.iter().all(|s| *s == HvError::NotSupported.code()),
        "{seen:?}"
    );
    assert!(
        text.contains(&alloc::format!(
            "'abuser' hypercall abuse: {limit} invalid calls within 1000 ms; fenced (F3)"
        )),
        "{text}"
    );
    let s = steps(&hv, 1);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1.trigger, trigger::HYPERCALL_ABUSE);
    // Every refused call is in the log, the `hvc #7` ones included.
    let refused: Vec<WitnessRecord> = records(&hv, 1)
        .into_iter()
        .filter(|r| {
            r.flags & rvm_abi::witness::flags::KERNEL_EVENT == 0
                && r.outcome == HvError::NotSupported.outcome_code()
        })
        .collect();
    assert_eq!(refused.len() as u32, limit, "every refused call witnessed");
    let imm = refused
        .iter()
        .filter(|r| r.op == rvm_abi::witness::HVC_IMMEDIATE_OP)
        .count() as u32;
    assert_eq!(imm, limit / 3, "the hvc #7 calls are witnessed as such");
    assert_chains_verify(&hv);
}

#[test]
fn every_refusal_counts_but_flow_control_does_not() {
    use crate::recovery::policy::AbusePolicy;
    for e in HvError::ALL {
        let flow = matches!(
            e,
            HvError::WouldBlock
                | HvError::Full
                | HvError::ValidationFailed
                | HvError::WitnessUnavailable
                | HvError::Abuse
        );
        assert_eq!(AbusePolicy::counts(*e), !flow, "{e:?}");
    }
}

#[test]
fn refused_arguments_and_rights_fence_a_partition_with_the_default_policy() {
    let mut hv = boot_with(&[("abuser", RecoveryDesc::DEFAULT)], 2_000);
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| {
            // A console write longer than the limit (InvalidArgument), forever.
            g.call(
                Hypercall::ConsoleWrite,
                &[HEAP, crate::dispatch::MAX_CONSOLE_WRITE + 1],
            )
        })),
    );
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.fenced, 1, "{text}");
    assert_eq!(steps(&hv, 1)[0].1.trigger, trigger::HYPERCALL_ABUSE);
}

#[test]
fn abuse_fencing_off_in_the_manifest_keeps_a_refusing_partition_running() {
    let never = RecoveryDesc {
        abuse_limit: RecoveryDesc::ABUSE_NEVER,
        ..RecoveryDesc::DEFAULT
    };
    let mut hv = boot_with(&[("fuzzer", never)], 0);
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| {
            if g.step < 100 {
                g.v.regs.x[0] = UNKNOWN_RVM_CALL;
                if g.step % 2 == 0 {
                    FakeArch::hvc()
                } else {
                    hvc_imm(1)
                }
            } else {
                g.exit(0)
            }
        })),
    );
    let summary = hv.run();
    assert_eq!(
        (summary.fenced, summary.finished),
        (0, 1),
        "{}",
        hv.arch.console_text()
    );
}

#[test]
fn a_console_flood_is_cut_to_its_credit_and_its_frames_hold_it_back() {
    use crate::console::{TEXT_BURST, TEXT_RATE};
    let mut hv = boot_with(
        &[
            ("flooder", RecoveryDesc::DEFAULT),
            ("quiet", RecoveryDesc::DEFAULT),
        ],
        0,
    );
    const CALLS: u32 = 1_000;
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| {
            if g.step < CALLS {
                let mut line = [b'#'; 4096];
                line[4095] = b'\n';
                g.m.write(HEAP, &line).unwrap();
                g.call(Hypercall::ConsoleWrite, &[HEAP, 4096])
            } else {
                g.exit(0)
            }
        })),
    );
    hv.arch.set_guest(
        2,
        runtime(Box::new(move |g| {
            if g.step < 40 {
                let text = alloc::format!("quiet line {}\n", g.step);
                g.m.write(HEAP, text.as_bytes()).unwrap();
                g.call(Hypercall::ConsoleWrite, &[HEAP, text.len() as u64])
            } else {
                g.exit(0)
            }
        })),
    );
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(
        summary.finished,
        2,
        "{}",
        &text[text.len().saturating_sub(3000)..]
    );
    for n in 0..40 {
        assert!(
            text.contains(&alloc::format!("[quiet] quiet line {n}\n")),
            "the neighbour's line {n} is printed"
        );
    }
    let flooded: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("[flooder] "))
        .map(|l| l.len() as u64)
        .sum();
    let elapsed_s = hv.arch.clock_ns() / 1_000_000_000 + 1;
    assert!(
        flooded <= TEXT_BURST + TEXT_RATE * elapsed_s,
        "{flooded} flooder bytes printed in {elapsed_s} s"
    );
    let out = hv.partitions()[0].output();
    assert!(
        out.dropped >= u64::from(CALLS) * 4095 - flooded - 4096,
        "dropped {} printed {flooded}",
        out.dropped
    );
    assert!(
        out.held > 0,
        "the flooder was held back for its witness frames"
    );
    assert!(
        text.contains("'flooder' console output over its credit"),
        "the drop is noted"
    );
    assert!(
        text.contains(&alloc::format!(
            "output: {} console bytes dropped",
            out.dropped
        )),
        "and counted in the summary"
    );
    // Not one witness frame was dropped: every call is in the chain.
    let calls = records(&hv, 1)
        .iter()
        .filter(|r| r.op == Hypercall::ConsoleWrite as u16)
        .count() as u32;
    assert_eq!(calls, CALLS);
    assert_chains_verify(&hv);
}

/// A hypervisor over a `pool_mib` MiB frame pool with one partition per
/// entry of `budgets` (WASM pages each).
fn boot_pool(budgets: &[u32], pool_mib: u64) -> Hypervisor<FakeArch> {
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &runtime_image());
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[7u8; 32]);
    w.entry(
        EntryKind::BootConfig,
        GLOBAL,
        &BootConfig::DEFAULT.to_bytes(),
    );
    for (n, pages) in budgets.iter().enumerate() {
        let d = PartitionDesc {
            wasm_pages: *pages,
            ..desc(&alloc::format!("p{n}"), RecoveryDesc::DEFAULT)
        };
        let i = w.partition(&d);
        w.entry(EntryKind::Wasm, i, b"\0asm\x01\0\0\0");
    }
    let frames =
        FrameAllocator::new(&[PhysRange::new(PhysAddr::new(0x4800_0000), pool_mib << 20).unwrap()]);
    Hypervisor::boot(FakeArch::new(), frames, &w.finish()).unwrap()
}

#[test]
fn a_partition_whose_budget_does_not_fit_is_refused_at_admission_and_witnessed() {
    // 256 WASM pages = 16 MiB of heap (+ runtime overhead) and two 16 MiB
    // snapshots: about 50 MiB each. One fits a 64 MiB pool, two do not.
    let hv = boot_pool(&[256, 256, 1], 64);
    let text = hv.arch.console_text();
    assert_eq!(hv.partitions()[0].state(), PartitionState::Loaded, "{text}");
    assert_eq!(
        hv.partitions()[1].state(),
        PartitionState::Evicted,
        "the second is refused: {text}"
    );
    assert!(
        text.contains("partition 2 'p1' refused: its memory budget does not fit"),
        "{text}"
    );
    assert_eq!(
        hv.partitions()[2].state(),
        PartitionState::Loaded,
        "a small one still fits: {text}"
    );
    let refused = records(&hv, 2)
        .into_iter()
        .find(|r| r.op == KernelEvent::PartitionRefused as u16)
        .expect("witnessed");
    assert_eq!(refused.outcome, HvError::NoMemory.outcome_code());
    // What the admitted partitions may ever use is reserved and free.
    let promised = hv
        .partitions()
        .iter()
        .map(|p| p.frames_committed())
        .sum::<u64>();
    assert_eq!(hv.frames.frames_committed(), promised);
    assert!(promised <= hv.frames.frames_total());
}

#[test]
fn partitions_beyond_the_el2_heap_are_refused_at_admission_and_witnessed() {
    use crate::memory::quota::{partition_bytes, EL2_HEAP_BYTES, HYPERVISOR_HEAP_BYTES};
    // Host tests boot with the smallest heap the hypervisor runs with.
    let per = partition_bytes(&rvm_state::store::StoreLimits::DEFAULT);
    let fit = (EL2_HEAP_BYTES - HYPERVISOR_HEAP_BYTES) / per;
    let budgets = alloc::vec![1u32; fit + 3];
    let hv = boot_pool(&budgets, 256);
    let text = hv.arch.console_text();
    let loaded = hv
        .partitions()
        .iter()
        .filter(|p| p.state() == PartitionState::Loaded)
        .count();
    assert_eq!(loaded, fit, "{text}");
    for p in &hv.partitions()[fit..] {
        assert_eq!(p.state(), PartitionState::Evicted);
        assert!(text.contains(&alloc::format!(
            "partition {} '{}' refused: its share of the hypervisor heap (store, snapshots, queues) does not fit",
            p.id().0,
            p.name()
        )));
        let r = records(&hv, p.id().0)
            .into_iter()
            .find(|r| r.op == KernelEvent::PartitionRefused as u16)
            .expect("witnessed");
        assert_eq!(r.outcome, HvError::NoMemory.outcome_code());
    }
    assert!(hv.heap.committed() <= EL2_HEAP_BYTES - HYPERVISOR_HEAP_BYTES);
}

#[test]
fn a_snapshot_storm_holds_back_the_partition_that_storms() {
    use crate::console::{SNAPSHOT_BURST, SNAPSHOT_RATE};
    // Two parts over the 16 KiB the runtime touched: 32 KiB per snapshot,
    // so the snapshot credit, not the frame credit, is what holds it back.
    const PART: u64 = 16 << 10;
    const LEN: u64 = 2 * PART;
    const CALLS: u32 = 1_500;
    let mut hv = boot_with(
        &[
            ("storm", RecoveryDesc::DEFAULT),
            ("quiet", RecoveryDesc::DEFAULT),
        ],
        0,
    );
    let (taken, log) = shared::<u32>();
    hv.arch.set_guest(
        1,
        runtime(Box::new(move |g| {
            if g.step > 0 && g.status() == 0 {
                *log.borrow_mut() += 1;
            }
            if g.step < CALLS {
                g.call(Hypercall::Snapshot, &[HEAP, PART, HEAP, PART])
            } else {
                g.exit(0)
            }
        })),
    );
    hv.arch.set_guest(2, yields_then_exits(50));
    let summary = hv.run();
    assert_eq!(summary.finished, 2);
    assert_eq!(
        *taken.borrow(),
        CALLS,
        "every snapshot was taken: none refused"
    );
    // What went beyond the burst took the storm its own time, at the rate.
    let beyond = u64::from(CALLS) * LEN - SNAPSHOT_BURST;
    let at_least_ns = beyond * 1_000_000_000 / SNAPSHOT_RATE;
    assert!(
        hv.arch.clock_ns() >= at_least_ns,
        "{} ns < {at_least_ns} ns",
        hv.arch.clock_ns()
    );
    assert!(hv.partitions()[0].output().held > 0);
}
