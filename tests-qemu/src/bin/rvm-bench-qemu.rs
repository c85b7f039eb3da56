//! Instruction counts of the hypervisor's paths under QEMU `-icount shift=0`
//! (one instruction = one nanosecond of virtual time, and the cycle counter
//! counts instructions at EL1 and EL2):
//!
//! * a null hypercall round trip from EL1 (trap, decode, return);
//! * a witnessed hypercall round trip (plus a SHA-256 chain step, the
//!   argument digest and the frame streamed on the UART);
//! * reset to the first witness record (the timestamp of the hypervisor's
//!   `Boot` record, in virtual ns = instructions).

use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions};

fn main() -> std::process::ExitCode {
    for (label, append) in [("SHA-256 with the Armv8 SHA-2 instructions", ""), ("SHA-256 portable (rvm.sha2=off)", "rvm.sha2=off")] {
        if measure(label, append) != std::process::ExitCode::SUCCESS {
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}

fn measure(label: &str, append: &str) -> std::process::ExitCode {
    let spec = BundleSpec::new().partition(PartitionSpec::image("bench", artifact("probes/probe-bench.elf")));
    let opts = QemuOptions { icount: true, smp: 1, append: append.into(), ..QemuOptions::default() };
    let run = boot(&spec.build(), &opts);
    if run.timed_out || run.exit != Some(0) {
        eprintln!("rvm-bench-qemu: run failed (exit {:?}, timed out {})\n{}", run.exit, run.timed_out, run.serial);
        return std::process::ExitCode::FAILURE;
    }
    println!("RVM hypervisor paths, QEMU -icount shift=0, cortex-a72, {label} (instructions)");
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
