//! The walking skeleton under QEMU: each test boots a fresh machine.

use rvm_abi::witness::KernelEvent;
use rvm_abi::Hypercall;
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions};

fn reference_pair() -> BundleSpec {
    BundleSpec::new()
        .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .channel(0, 1)
}

#[test]
fn boot_banner_names_the_discovered_hardware() {
    let run = boot(&reference_pair().build(), &QemuOptions::default());
    run.assert(run.contains("AArch64 microhypervisor at EL2"), "banner");
    run.assert(run.contains("RAM 0x40000000..0x60000000 (512 MiB)"), "memory from the DTB");
    run.assert(run.contains("GICv3 dist 0x8000000 redist 0x80a0000"), "GIC from the DTB");
    run.assert(run.contains("hyp timer INTID 26"), "timer from the DTB");
    run.assert(run.contains("4 of 4 CPUs online"), "secondaries started with PSCI CPU_ON");
    run.assert(run.exit == Some(0), "clean power-off");
}

#[test]
fn two_partitions_exchange_messages_and_finish() {
    let run = boot(&reference_pair().build(), &QemuOptions::default());
    run.assert(run.exit == Some(0), "exit 0");
    run.assert(run.contains("'agent-a' exited: code 0x0"), "agent-a finished");
    run.assert(run.contains("'agent-b' exited: code 0x0"), "agent-b finished");
    let sends_a = run.log(1).iter().filter(|r| r.op == Hypercall::ChannelSend as u16 && r.outcome == 0).count();
    // The reference agent receives with `ChannelWait`.
    let recvs_b = run.log(2).iter().filter(|r| r.op == Hypercall::ChannelWait as u16 && r.outcome == 0).count();
    run.assert(sends_a > 0 && sends_a == recvs_b, "every message a sent, b received");
}

#[test]
fn witness_frames_form_consistent_chains() {
    let run = boot(&reference_pair().build(), &QemuOptions::default());
    run.assert(run.exit == Some(0), "exit 0");
    for log in [0u32, 1, 2] {
        let records: Vec<[u8; 64]> = run.records().into_iter().filter(|(l, _)| *l == log).map(|(_, b)| b).collect();
        run.assert(!records.is_empty(), "log has records");
        let mut head = rvm_witness::Hash::ZERO;
        for (i, bytes) in records.iter().enumerate() {
            let r = rvm_abi::WitnessRecord::from_bytes(bytes).unwrap();
            run.assert(r.seq == i as u64, "seq consecutive");
            run.assert(r.prev == head.prefix16(), "prev links the previous head");
            head = rvm_witness::chain::chain_step(&head, bytes);
        }
    }
    run.assert(run.log(0).iter().any(|r| r.op == KernelEvent::Boot as u16), "boot witnessed");
    run.assert(run.lines().any(|l| l.starts_with("@C 1 ")), "agent-a's head is signed");
}

#[test]
fn stage2_violations_are_isolated() {
    for probe in ["probe-read-unmapped", "probe-write-hyp", "probe-write-device"] {
        let spec = reference_pair()
            .partition(PartitionSpec::image("hostile", artifact(&format!("probes/{probe}.elf"))));
        let run = boot(&spec.build(), &QemuOptions::default());
        run.assert(run.exit == Some(0), probe);
        run.assert(run.contains("'hostile' fault: stage-2"), "the probe faulted at stage 2");
        run.assert(run.contains("fenced (F3)"), "and was fenced");
        run.assert(run.contains("'agent-a' exited: code 0x0"), "the others completed");
        run.assert(run.contains("'agent-b' exited: code 0x0"), "the others completed");
        run.assert(run.log(3).iter().any(|r| r.op == KernelEvent::RecoverFence as u16), "fence witnessed");
    }
}

#[test]
fn spinning_guests_are_preempted() {
    let spec = reference_pair()
        .partition(PartitionSpec::image("spinner", artifact("probes/probe-spin-masked.elf")))
        .partition(PartitionSpec::wasm("wasm-spinner", artifact("agents/spin.wasm")))
        .budget_ms(20_000);
    let run = boot(&spec.build(), &QemuOptions::default());
    run.assert(run.exit == Some(0), "exit 0");
    run.assert(run.contains("'agent-a' exited: code 0x0"), "agent-a not starved");
    run.assert(run.contains("'agent-b' exited: code 0x0"), "agent-b not starved");
    run.assert(run.contains("run budget spent: stopping spinner"), "the raw spinner ran until the budget");
}

#[test]
fn bad_modules_are_refused_and_the_rest_run() {
    let spec = reference_pair()
        .partition(PartitionSpec::wasm("invalid", artifact("agents/invalid.wasm")))
        .partition(PartitionSpec::wasm("bad-import", artifact("agents/bad-import.wasm")))
        .partition(PartitionSpec { wasm_pages: 2, ..PartitionSpec::wasm("over-budget", artifact("agents/over-budget.wasm")) });
    let run = boot(&spec.build(), &QemuOptions::default());
    run.assert(run.exit == Some(0), "exit 0");
    run.assert(run.contains("'invalid' refused its module: module failed validation"), "invalid refused");
    run.assert(run.contains("'bad-import' refused its module: module imports a function RVM does not provide"), "bad import refused");
    run.assert(run.contains("'over-budget' refused its module: module memory exceeds the partition's budget"), "budget refused");
    for log in [3u32, 4, 5] {
        run.assert(run.log(log).iter().any(|r| r.op == KernelEvent::PartitionRefused as u16), "refusal witnessed");
    }
    run.assert(run.contains("'agent-b' exited: code 0x0"), "others ran");
}

#[test]
fn entering_at_el1_is_refused_cleanly() {
    let opts = QemuOptions { machine: "gic-version=3".into(), ..QemuOptions::default() };
    let run = boot(&reference_pair().build(), &opts);
    run.assert(run.contains("RVM must be entered at EL2"), "clear message");
    run.assert(run.exit == Some(3), "distinct exit code");
}

#[test]
fn a_reference_agent_alone_runs_solo_and_commits() {
    let spec = BundleSpec::new().partition(PartitionSpec::wasm("alone", artifact("agents/reference.wasm")));
    let run = boot(&spec.build(), &QemuOptions::default());
    run.assert(run.exit == Some(0), "exit 0");
    run.assert(run.console_of("alone").any(|l| l == "reference: done: solo run 1 committed"), "solo run committed");
    run.assert(run.contains("'alone' exited: code 0x0"), "finished cleanly");
    run.assert(run.log(1).iter().any(|r| r.op == Hypercall::StateCommit as u16 && r.outcome == 0), "commit witnessed");
}
