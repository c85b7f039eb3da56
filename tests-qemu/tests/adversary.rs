//! A hostile tenant gets nothing: each promise attacked from inside a guest
//! under QEMU, one section per promise. Each test fails on a hypervisor
//! that breaks the promise.

// ---------------------------------------------------------------------------
// item 1: semihosting — no guest reaches the host through QEMU
// ---------------------------------------------------------------------------
mod semihosting {
    use rvm_abi::bundle::RecoveryDesc;
    use rvm_abi::frame::ExitFrame;
    use rvm_abi::witness::KernelEvent;
    use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions, QemuRun};
    use std::path::PathBuf;
    use std::time::Duration;

    /// The code the probes ask QEMU to exit with.
    const PROBE_EXIT: u32 = 77;
    /// The exit status the probes forge on the console (the hypervisor's
    /// own run ends 0).
    const FORGED_EXIT: u32 = 66;
    /// A line the probes print through `SYS_WRITE0`, before the forged frame.
    const FORGED_TEXT: &str = "FORGED-BY-A-GUEST unprefixed";

    /// The probe's input: `op\0arg\0` pairs (see the probe's documentation).
    fn ops(list: &[(&str, String)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (op, arg) in list {
            v.extend_from_slice(op.as_bytes());
            v.push(0);
            v.extend_from_slice(arg.as_bytes());
            v.push(0);
        }
        v
    }

    fn probe(name: &str, input: Vec<u8>) -> PartitionSpec {
        // Second fault: fenced (F3), so a probe restarted from its pristine
        // image does not fault for the rest of the run.
        PartitionSpec::image(name, artifact("probes/probe-semihosting.elf"))
            .input(input)
            .recovery(RecoveryDesc { f1_limit: 2, f2_limit: 1, ..RecoveryDesc::DEFAULT })
    }

    fn scratch() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvm-adversary-semihosting-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch directory");
        d
    }

    /// The hypervisor's exit frames: whole lines that are a frame.
    fn exit_frames(run: &QemuRun) -> Vec<ExitFrame> {
        run.lines().filter_map(ExitFrame::parse).collect()
    }

    #[test]
    fn semihosting_from_el1_reaches_nothing_on_the_host() {
        let dir = scratch();
        let ran = dir.join("system-ran");
        let opened = dir.join("open-created");
        let forged_frame = ExitFrame { code: FORGED_EXIT }.encode();
        let forged_frame = std::str::from_utf8(forged_frame.as_bytes()).expect("frame text");
        let write0 = format!("{FORGED_TEXT}\n{forged_frame}");
        let system = format!("touch {}", ran.display());
        let open = opened.display().to_string();
        let exit = PROBE_EXIT.to_string();
        // One probe issues all four calls in turn; one more per call, so
        // each is tried first in some partition. The exit probe waits, so
        // that on a machine that serves semihosting the others come first.
        let probes = [
            (
                "hlt-all",
                ops(&[
                    ("system", system.clone()),
                    ("write0", write0.clone()),
                    ("open", open.clone()),
                    ("wait", "300".into()),
                    ("exit", exit.clone()),
                ]),
            ),
            ("hlt-write0", ops(&[("write0", write0.clone())])),
            ("hlt-open", ops(&[("open", open.clone())])),
            ("hlt-exit", ops(&[("wait", "600".into()), ("exit", exit.clone())])),
        ];
        let mut spec = BundleSpec::new()
            .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
            .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
            .channel(0, 1);
        for (name, input) in &probes {
            spec = spec.partition(probe(name, input.clone()));
        }
        let run = boot(&spec.build(), &QemuOptions { timeout: Duration::from_secs(300), ..Default::default() });

        let mut problems = Vec::new();
        if ran.exists() {
            problems.push("SYS_SYSTEM ran a command on the host (the marker file exists)".to_string());
        }
        if opened.exists() {
            problems.push("SYS_OPEN created a file on the host".to_string());
        }
        for l in run.lines() {
            if l.starts_with(FORGED_TEXT) || ExitFrame::parse(l) == Some(ExitFrame { code: FORGED_EXIT }) {
                problems.push(format!("a guest line reached the serial stream without its prefix: {l:?}"));
            }
        }
        // QEMU writes a semihosting console to its standard error when it
        // has no chardev for it: nothing of the probes' may get there either.
        if run.stderr.contains(FORGED_TEXT) {
            problems.push(format!("SYS_WRITE0 reached QEMU's output: {:?}", run.stderr));
        }
        if run.timed_out {
            problems.push("the run timed out".into());
        }
        if run.exit != Some(0) {
            problems.push(format!("the run's exit status is {:?}, not the hypervisor's 0", run.exit));
        }
        let frames = exit_frames(&run);
        if frames != [ExitFrame { code: 0 }] {
            problems.push(format!("the hypervisor's exit frames: {frames:?}, want exactly one, code 0"));
        }
        for (i, (name, _)) in probes.iter().enumerate() {
            let id = i as u32 + 3; // partition ids: bundle position + 1
            let console: Vec<&str> = run.console_of(name).collect();
            if console.iter().any(|l| l.contains("FAILED")) {
                problems.push(format!("{name}: a semihosting call was served: {console:?}"));
            }
            // `hlt` at EL1 with semihosting off: undefined (ESR EC 0), taken
            // by the probe's own vectors.
            let undefined = console.iter().any(|l| {
                l.strip_prefix("el1: exception at vector 4: ESR_EL1=0x")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .is_some_and(|esr| esr >> 26 == 0)
            });
            if !undefined {
                problems.push(format!("{name}: no undefined-instruction exception at EL1: {console:?}"));
            }
            if !run.contains(&format!("partition {id} '{name}' guest runtime panicked (exit code 0x104)")) {
                problems.push(format!("{name}: no fault reported by the hypervisor"));
            }
            let events: Vec<KernelEvent> =
                run.log(id).iter().filter_map(|r| KernelEvent::from_code(r.op)).collect();
            if !events.contains(&KernelEvent::Fault) || !events.contains(&KernelEvent::RecoverFence) {
                problems.push(format!("{name}: its log holds no witnessed fault and fence: {events:?}"));
            }
        }
        for n in ["agent-a", "agent-b"] {
            if !run.contains(&format!("'{n}' exited: code 0x0")) {
                problems.push(format!("the neighbour {n} did not finish"));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        run.assert(problems.is_empty(), &format!("semihosting reached past the partition:\n  {}", problems.join("\n  ")));
    }
}
