//! Boot RVM under QEMU with two reference agents and show the run: the
//! console as it happens, then each witness log checked link by link.

use std::io::Write;

use rvm_abi::frame::Frame;
use rvm_abi::{HvError, WitnessOp, WitnessRecord};
use rvm_tests_qemu::{artifact, boot_with, BundleSpec, PartitionSpec, QemuOptions};

fn main() -> std::process::ExitCode {
    let spec = BundleSpec::new()
        .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .channel(0, 1);
    let names = ["hypervisor", "agent-a", "agent-b"];
    let mut pending = Vec::new();
    let mut out = std::io::stdout();
    let run = boot_with(&spec.build(), &QemuOptions::default(), |chunk| {
        pending.extend_from_slice(chunk);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            match Frame::parse(&line) {
                Some(Frame::Record { log, bytes }) => {
                    if let Ok(r) = WitnessRecord::from_bytes(&bytes) {
                        let op = r.operation().map_or("unknown", |o| o.name());
                        let outcome = match r.outcome {
                            0 => "ok".to_string(),
                            c => HvError::from_code(i64::from(c)).map_or(c.to_string(), |e| e.name().to_string()),
                        };
                        let kind = match r.operation() {
                            Some(WitnessOp::Event(_)) => "event",
                            _ => "call ",
                        };
                        let name = names.get(log as usize).copied().unwrap_or("?");
                        let tier = match r.tier {
                            0 => "  ".to_string(),
                            t => format!("P{t}"),
                        };
                        let _ = writeln!(out, "  witness {name:<10} #{:<3} {kind} {op:<16} {tier} {outcome}", r.seq);
                    }
                }
                Some(Frame::Checkpoint { log, size, .. }) => {
                    let name = names.get(log as usize).copied().unwrap_or("?");
                    let _ = writeln!(out, "  witness {name:<10} signed checkpoint at size {size}");
                }
                Some(Frame::Key { .. }) => {}
                None => {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    });
    if run.timed_out {
        eprintln!("rvm-demo: QEMU timed out after {:?}", run.elapsed);
        return std::process::ExitCode::FAILURE;
    }
    println!("QEMU exited with {:?} after {:.1} s", run.exit, run.elapsed.as_secs_f64());
    if run.exit == Some(0) { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}
