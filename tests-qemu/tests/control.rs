//! The control channel: on a machine with a virtio console the hypervisor
//! sends every witness and journal frame there, in binary, and none on the
//! UART; the loader's own stream code files what arrives, and the logs and
//! journals verify as they do from the UART.

use std::path::PathBuf;

use rvm_abi::frame::Frame;
use rvm_abi::journal::{is_journal_line, BOOT_FLAG_JOURNAL};
use rvm_loader::home::Home;
use rvm_loader::model::PartitionName;
use rvm_loader::stream::Session;
use rvm_loader::witness_sink::{Filed, KeyPolicy, LogNames, WitnessSink};
use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions, QemuRun};

fn pair(flags: u32) -> Vec<u8> {
    BundleSpec::new()
        .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .channel(0, 1)
        .flags(flags)
        .build()
}

/// File `lines` into a fresh RVM_HOME as `rvm-loader up` does; the summary.
fn file(tag: &str, lines: &[&str]) -> rvm_loader::witness_sink::SinkSummary {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("control-home-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let home = Home::new(dir);
    let names = LogNames(vec![(1, PartitionName::new("agent-a").unwrap()), (2, PartitionName::new("agent-b").unwrap())]);
    let mut sink = Filed::open(&home, &names, KeyPolicy::default(), &[]).expect("the witness store opens");
    {
        let mut session = Session::new(names.clone(), &mut sink);
        for l in lines {
            session.line(l, &mut |_| {});
        }
        assert!(session.sink_error().is_none(), "{:?}", session.sink_error());
        assert_eq!(session.damaged, 0, "no damaged frame");
    }
    sink.finish().expect("every log verifies")
}

fn frames_on_serial(run: &QemuRun) -> usize {
    run.lines().filter(|l| Frame::is_frame_line(l) || is_journal_line(l)).count()
}

#[test]
fn with_a_control_channel_every_frame_travels_there_in_binary_and_files_as_from_the_uart() {
    let opts = QemuOptions { control: true, ..QemuOptions::default() };
    let run = boot(&pair(BOOT_FLAG_JOURNAL), &opts);
    run.assert(run.exit == Some(0), "clean power-off");
    run.assert(run.contains("rvm: control channel: virtio console at"), "the control channel was found");
    run.assert(run.control_error.is_none(), &format!("the stream reads to its end: {:?}", run.control_error));
    run.assert(frames_on_serial(&run) == 0, "no frame on the UART");
    let journal = run.control_lines.iter().filter(|l| is_journal_line(l)).count();
    run.assert(journal > 0, "journal frames came on the control channel");
    run.assert(run.assert_chains_linked() == 3, "three logs, each consecutive and hash-linked");
    // The loader's stream code files it: every log and its checkpoints verify.
    let lines: Vec<&str> = run.frame_lines().collect();
    let summary = file("control", &lines);
    assert_eq!(summary.journal_entries as usize, journal, "every journal entry filed");
    // The same run over the UART carries the same records.
    let uart = boot(&pair(BOOT_FLAG_JOURNAL), &QemuOptions::default());
    uart.assert(uart.exit == Some(0), "clean power-off");
    uart.assert(uart.contains("rvm: no control channel"), "no control channel without the device");
    uart.assert(frames_on_serial(&uart) > 0 && uart.control_lines.is_empty(), "frames on the UART");
    eprintln!(
        "control: {} frames in {} bytes on the control channel; {} frame lines on the UART without it",
        run.control_lines.len(),
        run.control_bytes,
        frames_on_serial(&uart)
    );
}

#[test]
fn a_guest_cannot_reach_the_control_channel_s_device() {
    // QEMU puts the virtio console in its last virtio-mmio slot; the probe
    // writes its QueueNotify register (offset 0x50).
    const SLOT: u64 = 0x0a00_3e00;
    let spec = BundleSpec::new()
        .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::image("hostile", artifact("probes/probe-write-device.elf")).input((SLOT + 0x50).to_le_bytes().to_vec()))
        .channel(0, 1);
    let run = boot(&spec.build(), &QemuOptions { control: true, ..QemuOptions::default() });
    run.assert(run.exit == Some(0), "clean power-off");
    run.assert(run.contains(&format!("rvm: control channel: virtio console at {SLOT:#x}")), "the console is in the slot the probe aims at");
    run.assert(run.contains("'hostile' fault: stage-2"), "the write faulted at stage 2");
    run.assert(run.contains("fenced (F3)"), "and the probe was fenced");
    run.assert(run.control_error.is_none(), &format!("the channel's stream is intact: {:?}", run.control_error));
    run.assert(run.assert_chains_linked() == 4, "every log consecutive and hash-linked, from the channel");
    run.assert(run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"), "the others finished");
}
