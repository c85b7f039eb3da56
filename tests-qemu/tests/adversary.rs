//! A hostile tenant gets nothing: attacks on RVM's promises, each from a
//! guest under QEMU. One section per promise.

// ===================================================================
// item 5: no stall — no tenant can stall or crash the machine
// ===================================================================
//
// A hostile partition (`probe-stall`, its input picks the attack) runs
// beside the reference agent pair; in each test the pair finishes and the
// hypervisor powers off cleanly. The console flood also measures the pair's
// exchange time beside the flooder against beside a spinner
// (`RVM_STALL_RATIO_MAX`, default 2.0, bounds the ratio).
mod item5_no_stall {
    use rvm_abi::bundle::RecoveryDesc;
    use rvm_abi::witness::{KernelEvent, HVC_IMMEDIATE_OP};
    use rvm_abi::{HvError, WitnessRecord};
    use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions, QemuRun};
    use std::time::Duration;

    const FLOOD: u64 = 1;
    const SPIN: u64 = 2;
    const UNKNOWN_CALLS: u64 = 3;
    const STORE_STORM: u64 = 5;
    const TOUCH_HEAP: u64 = 6;

    /// The hostile partition, making `calls` attacks of `mode` (0 = forever).
    fn stall(name: &str, mode: u64, calls: u64) -> PartitionSpec {
        let mut input = b"RVMSTL01".to_vec();
        input.extend_from_slice(&mode.to_le_bytes());
        input.extend_from_slice(&calls.to_le_bytes());
        PartitionSpec::image(name, artifact("probes/probe-stall.elf")).input(input)
    }

    /// The reference pair after `spec`'s partitions (`first` = the index
    /// the pair's first agent gets).
    fn with_pair(spec: BundleSpec, first: u32) -> BundleSpec {
        spec.partition(PartitionSpec::wasm(
            "agent-a",
            artifact("agents/reference.wasm"),
        ))
        .partition(PartitionSpec::wasm(
            "agent-b",
            artifact("agents/reference.wasm"),
        ))
        .channel(first, first + 1)
    }

    fn run(spec: &BundleSpec, timeout_s: u64) -> QemuRun {
        let opts = QemuOptions {
            timeout: Duration::from_secs(timeout_s),
            ..QemuOptions::default()
        };
        boot(&spec.build(), &opts)
    }

    /// The pair finished, and its exchange time (µs, the slower agent's).
    fn pair_finished(run: &QemuRun) -> u64 {
        let mut worst = 0;
        for p in ["agent-a", "agent-b"] {
            run.assert(
                run.contains(&format!("'{p}' exited: code 0x0")),
                &format!("{p} finished"),
            );
            let us = run
                .console_of(p)
                .find_map(|l| {
                    l.strip_prefix("reference: done: ")
                        .and_then(|r| r.rsplit_once('('))
                        .map(|(_, t)| t.to_string())
                })
                .and_then(|t| t.trim_end_matches(" us)").parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{p} printed its exchange time"));
            worst = worst.max(us);
        }
        worst
    }

    fn clean_power_off(run: &QemuRun) {
        run.assert(!run.timed_out, "QEMU finished in time");
        run.assert(run.exit == Some(0), "the hypervisor powered off cleanly");
    }

    /// Log `log`'s records, checked to form one chain.
    fn chain(run: &QemuRun, log: u32) -> Vec<WitnessRecord> {
        let mut head = rvm_witness::Hash::ZERO;
        let mut out = Vec::new();
        for (i, (_, bytes)) in run
            .records()
            .into_iter()
            .filter(|(l, _)| *l == log)
            .enumerate()
        {
            let r = WitnessRecord::from_bytes(&bytes).expect("record version");
            run.assert(
                r.seq == i as u64 && r.prev == head.prefix16(),
                &format!("log {log}: record {i} chained"),
            );
            head = rvm_witness::chain_step(&head, &bytes);
            out.push(r);
        }
        out
    }

    fn ratio_max() -> f64 {
        std::env::var("RVM_STALL_RATIO_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2.0)
    }

    #[test]
    fn console_flood_does_not_slow_the_neighbours() {
        // Runs alternate (spinner, flooder) so both see the same host load;
        // the medians of `RVM_STALL_SAMPLES` (default 3) runs each compare.
        let samples = std::env::var("RVM_STALL_SAMPLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize)
            .max(1);
        let beside = |mode| {
            with_pair(BundleSpec::new().partition(stall("hostile", mode, 0)), 1).budget_ms(20_000)
        };
        let (mut spin_us, mut flood_us) = (Vec::new(), Vec::new());
        let mut last_flood = None;
        for _ in 0..samples {
            let spin = run(&beside(SPIN), 240);
            clean_power_off(&spin);
            spin_us.push(pair_finished(&spin));
            let flood = run(&beside(FLOOD), 240);
            clean_power_off(&flood);
            flood_us.push(pair_finished(&flood));
            last_flood = Some(flood);
        }
        let median = |v: &mut Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let (s, f) = (median(&mut spin_us.clone()), median(&mut flood_us.clone()));
        let ratio = f as f64 / s.max(1) as f64;
        eprintln!("pair exchange (us): beside a spinner {spin_us:?}, beside a console flooder {flood_us:?}: median ratio {ratio:.2}");
        let flood = last_flood.expect("one run");
        // The flood was cut to its credit, the rest dropped and counted.
        flood.assert(
            flood.contains("'hostile' console output over its credit"),
            "the flood is cut to its credit",
        );
        flood.assert(
            flood
                .lines()
                .any(|l| l.contains("console bytes dropped over its credit")),
            "and the drop counted",
        );
        // Its witness frames were not dropped: its log is one whole chain.
        let records = chain(&flood, 1);
        flood.assert(records.len() > 1, "the flooder's calls are witnessed");
        flood.assert(
            ratio <= ratio_max(),
            &format!(
                "flood/spin exchange-time ratio {ratio:.2} <= {}",
                ratio_max()
            ),
        );
    }

    #[test]
    fn unknown_call_storm_is_fenced_and_witnessed() {
        let spec = with_pair(
            BundleSpec::new().partition(stall("hostile", UNKNOWN_CALLS, 0)),
            1,
        )
        .budget_ms(60_000);
        let run = run(&spec, 240);
        clean_power_off(&run);
        pair_finished(&run);
        run.assert(
            run.contains("'hostile' hypercall abuse: 16 invalid calls within 1000 ms; fenced (F3)"),
            "the storm is fenced (F3)",
        );
        let records = chain(&run, 1);
        let refused = |op: u16| {
            records
                .iter()
                .filter(|r| r.op == op && r.outcome == HvError::NotSupported.outcome_code())
                .count()
        };
        run.assert(refused(HVC_IMMEDIATE_OP) >= 7, "each hvc #1 is witnessed");
        run.assert(refused(0x7ff) >= 7, "each unknown function ID is witnessed");
        run.assert(
            records
                .iter()
                .any(|r| r.op == KernelEvent::RecoverFence as u16),
            "the fence is witnessed",
        );
    }

    #[test]
    fn the_fuzzer_with_abuse_fencing_on_is_fenced() {
        let mut input = b"RVMFUZ01".to_vec();
        input.extend_from_slice(&0x5eed_5eedu64.to_le_bytes());
        input.extend_from_slice(&100_000u64.to_le_bytes());
        let fuzzer = PartitionSpec::image("fuzzer", artifact("probes/probe-hvc-fuzz.elf"))
            .recovery(RecoveryDesc::DEFAULT)
            .input(input);
        let spec = with_pair(BundleSpec::new().partition(fuzzer), 1).budget_ms(120_000);
        let run = run(&spec, 300);
        clean_power_off(&run);
        pair_finished(&run);
        run.assert(
            run.contains("'fuzzer' hypercall abuse: 16 invalid calls within 1000 ms; fenced (F3)"),
            "the fuzzer is fenced (F3)",
        );
        run.assert(
            !run.contains("fuzz done"),
            "it was stopped before its 100 000 calls",
        );
        let records = chain(&run, 1);
        run.assert(
            records
                .iter()
                .any(|r| r.op == KernelEvent::RecoverFence as u16),
            "the fence is witnessed",
        );
    }

    #[test]
    fn frames_are_reserved_at_admission_and_a_greedy_tenant_is_refused() {
        // Each greedy tenant's budget (128 MiB of heap, and checkpoints as
        // large) fits the machine's 512 MiB alone; four touching their whole
        // heap would not.
        let mut spec = BundleSpec::new();
        for n in 0..4 {
            let mut g = stall(&format!("greedy-{n}"), TOUCH_HEAP, 0);
            g.wasm_pages = 2048;
            spec = spec.partition(g);
        }
        let spec = with_pair(spec, 4).budget_ms(120_000);
        let run = run(&spec, 300);
        clean_power_off(&run);
        pair_finished(&run);
        run.assert(
            run.contains("'greedy-0' exited: code 0x0"),
            "the first greedy tenant ran within its reservation",
        );
        run.assert(
            run.contains("'greedy-3' refused: its memory budget does not fit in the frames not reserved for other partitions"),
            "the last greedy tenant is refused at admission",
        );
        let refused = chain(&run, 4);
        run.assert(
            refused.iter().any(|r| {
                r.op == KernelEvent::PartitionRefused as u16
                    && r.outcome == HvError::NoMemory.outcome_code()
            }),
            "the refusal is witnessed",
        );
        run.assert(
            !run.lines().any(|l| l.contains("fault:")),
            "no admitted partition faulted for want of memory",
        );
    }

    #[test]
    fn a_store_storm_cannot_exhaust_the_hypervisor_heap() {
        // Sixteen tenants fill their state stores (1 MiB each, the store's
        // bound) beside the pair: more than the heap holds unless each is
        // admitted with its share reserved.
        let mut spec = with_pair(BundleSpec::new(), 0);
        for n in 0..16 {
            spec = spec.partition(stall(&format!("storm-{n}"), STORE_STORM, 2048));
        }
        let run = run(&spec.budget_ms(120_000), 300);
        clean_power_off(&run);
        pair_finished(&run);
        let refused = run
            .lines()
            .filter(|l| l.contains("refused: its share of the hypervisor heap (store, snapshots, queues) does not fit"))
            .count();
        run.assert(
            refused > 0,
            "the tenants beyond the heap are refused at admission",
        );
        let done = run
            .lines()
            .filter(|l| l.contains("stall 5 done") || l.contains("fenced (F3)"))
            .count();
        run.assert(
            done + refused >= 16,
            "every admitted tenant filled its store or was fenced for its refusals",
        );
    }
}
