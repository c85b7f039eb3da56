//! The adversary suite of issue 12 ("a hostile tenant gets nothing"): one
//! section per item, each an attack that failed before the item was closed.
//! Sections are independent.

// ---------------------------------------------------------------------
// item 3: witness seed
// ---------------------------------------------------------------------
//
// The bundle (QEMU's initrd) carries the witness key's seed. Once the
// hypervisor has made its signer, the seed must be gone from the initrd's
// memory: read from outside the machine (QEMU's monitor, `xp`, physical
// memory) while the partition runs, the seed's bytes are zeros and the rest
// of the bundle is still there.

mod item3 {
    use rvm_abi::frame::Frame;
    use rvm_abi::WitnessRecord;
    use rvm_tests_qemu::{artifact, boot_with, BundleSpec, PartitionSpec, QemuOptions};
    use std::io::{BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// The seed `BundleSpec::build` puts in every test bundle.
    const SEED: [u8; 32] = [0x42; 32];

    /// A human monitor session over a Unix socket.
    struct Monitor {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
    }

    impl Monitor {
        fn connect(path: &Path) -> Self {
            let start = Instant::now();
            let s = loop {
                match UnixStream::connect(path) {
                    Ok(s) => break s,
                    Err(e) if start.elapsed() < Duration::from_secs(30) => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("monitor {}: {e}", path.display()),
                }
            };
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut m = Self {
                reader: BufReader::new(s.try_clone().unwrap()),
                writer: s,
            };
            m.until_prompt();
            m
        }

        /// Everything up to the next `(qemu) ` prompt.
        fn until_prompt(&mut self) -> String {
            let mut out = Vec::new();
            let mut byte = [0u8; 1];
            while !out.ends_with(b"(qemu) ") {
                match self.reader.read(&mut byte) {
                    Ok(1) => out.push(byte[0]),
                    other => panic!(
                        "monitor: {other:?} after {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }

        /// `n` bytes of guest physical memory at `pa` (`xp /nxb`).
        fn read_phys(&mut self, pa: u64, n: usize) -> Vec<u8> {
            writeln!(self.writer, "xp /{n}xb {pa:#x}").unwrap();
            let text = self.until_prompt();
            let bytes: Vec<u8> = text
                .lines()
                .filter_map(|l| l.split_once(": ").map(|(_, rest)| rest))
                .flat_map(|rest| rest.split_whitespace())
                .filter_map(|t| t.strip_prefix("0x"))
                .filter_map(|h| {
                    u8::from_str_radix(h.trim_end_matches(|c: char| !c.is_ascii_hexdigit()), 16)
                        .ok()
                })
                .collect();
            assert_eq!(bytes.len(), n, "xp answered: {text:?}");
            bytes
        }
    }

    /// The initrd's physical address, from the boot line `rvm: bundle at
    /// 0x... (N bytes)`.
    fn bundle_address(serial: &str) -> Option<u64> {
        let l = serial.lines().find(|l| l.starts_with("rvm: bundle at "))?;
        let hex = l
            .strip_prefix("rvm: bundle at 0x")?
            .split_whitespace()
            .next()?;
        u64::from_str_radix(hex, 16).ok()
    }

    /// True once partition 1 has made a hypercall: the hypervisor has
    /// finished booting (and, with the fix, scrubbed the bundle).
    fn guest_running(serial: &str) -> bool {
        serial.lines().filter_map(Frame::parse).any(|f| match f {
            Frame::Record { log: 1, bytes } => {
                WitnessRecord::from_bytes(&bytes).is_ok_and(|r| r.op < 0x8000)
            }
            _ => false,
        })
    }

    #[test]
    fn item3_the_witness_seed_is_gone_from_the_initrd_memory_after_boot() {
        let bundle = BundleSpec::new()
            .partition(PartitionSpec::wasm("spinner", artifact("agents/spin.wasm")))
            .budget_ms(8_000)
            .build();
        let at: Vec<usize> = (0..bundle.len() - 32)
            .filter(|&i| bundle[i..i + 32] == SEED)
            .collect();
        assert_eq!(at.len(), 1, "the seed is in the bundle once");
        let seed_offset = at[0] as u64;
        let sock =
            std::env::temp_dir().join(format!("rvm-adv-monitor-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let opts = QemuOptions {
            timeout: Duration::from_secs(180),
            extra_args: vec![
                "-monitor".into(),
                format!("unix:{},server=on,wait=off", sock.display()),
            ],
            ..QemuOptions::default()
        };
        let mut serial = String::new();
        let mut seen: Option<(Vec<u8>, Vec<u8>)> = None;
        let run = boot_with(&bundle, &opts, |chunk| {
            serial.push_str(&String::from_utf8_lossy(chunk).replace('\r', ""));
            if seen.is_some() || !guest_running(&serial) {
                return;
            }
            let base = bundle_address(&serial).expect("the boot prints the bundle's address");
            let mut m = Monitor::connect(&sock);
            let header = m.read_phys(base, 8);
            let seed = m.read_phys(base + seed_offset, 32);
            seen = Some((header, seed));
        });
        let _ = std::fs::remove_file(&sock);
        let (header, seed) = seen.unwrap_or_else(|| panic!("the guest never ran:\n{}", run.serial));
        // The probe reads the initrd: its header is intact ...
        assert_eq!(header, b"RVMBNDL\0", "not the bundle: {header:02x?}");
        // ... and the seed's 32 bytes are zeros.
        assert_eq!(
            seed, [0u8; 32],
            "the witness seed is still in the initrd's memory"
        );
        assert!(
            run.serial
                .contains("rvm: witness key seed scrubbed from the bundle (32 bytes zeroed)"),
            "{}",
            run.serial
        );
        // The run still signs with the key made from it.
        assert!(
            run.serial.lines().any(|l| l.starts_with("@C 1 ")),
            "{}",
            run.serial
        );
        assert_eq!(run.exit, Some(0), "{}", run.serial);
    }
}

// ===================================================================
// item 2: approvals and quotas
// ===================================================================
//
// `probe-approvals` copies a P3 capability into its own table and replays
// one approval through each copy, replays an approval signed for an earlier
// boot of the same deployment, splits a quota of one call per epoch over
// six copies, and commits other staged items than the approved ones. Each
// line it prints is paired with its witness record of the same call.

mod item2 {
    use rvm_abi::bundle::CapDesc;
    use rvm_abi::{HvError, Hypercall, ObjectKind, Rights, WitnessRecord};
    use rvm_cap::proof::{approval_message, authority_key, sign_operation, staged_args_digest, RootRef};
    use rvm_cap::{ArgsDigest, Nonce, ObjectRef, PartitionId};
    use rvm_tests_qemu::{artifact, boot, fresh_boot_id, BundleSpec, PartitionSpec, QemuOptions, AttackLine as Line};

    const AUTHORITY_SEED: [u8; 32] = [0x3c; 32];
    /// Partition id of the probe: first in the bundle.
    const PROBE: u32 = 1;
    /// Epoch of the kernel's quotas (one second of its clock).
    const EPOCH_NS: u64 = 1_000_000_000;

    fn store(rights: &[(Rights, u8)], quota: u32) -> CapDesc {
        let mut all = Rights::empty();
        let mut tiers = [0u8; 7];
        for (r, t) in rights {
            all |= *r;
            tiers[r.index().expect("one right")] = *t;
        }
        CapDesc {
            kind: ObjectKind::StateStore,
            rights: all,
            tiers,
            object: PROBE,
            quota,
            expires_at: 0,
            window_start: 0,
            window_len: 0,
            resource_digest: [0; 16],
        }
    }

    /// An approval of `op` by the probe through its boot handle `root`.
    fn sign(op: Hypercall, root: u16, nonce: u64, boot_id: [u8; 32], args: &ArgsDigest) -> [u8; 64] {
        let object = ObjectRef::new(ObjectKind::StateStore, PROBE);
        let root = RootRef { partition: PROBE, index: root, generation: 0 };
        sign_operation(&AUTHORITY_SEED, &approval_message(op, object, PartitionId(PROBE), root, Nonce(nonce), boot_id, args))
            .0
    }

    /// The probe's input (layout in its documentation).
    fn input(boot_id: [u8; 32], earlier_boot_id: [u8; 32]) -> Vec<u8> {
        let nothing = staged_args_digest(std::iter::empty());
        let good = staged_args_digest([(&b"k"[..], &b"good"[..])].into_iter());
        let mut input = b"RVMAPR01".to_vec();
        input.extend_from_slice(&[0; 8]);
        for sig in [
            sign(Hypercall::StateValidate, 1, 1, boot_id, &nothing),
            sign(Hypercall::StateValidate, 1, 2, earlier_boot_id, &nothing),
            sign(Hypercall::StateCommit, 4, 1, boot_id, &good),
            sign(Hypercall::StateCommit, 4, 2, boot_id, &good),
        ] {
            input.extend_from_slice(&sig);
        }
        assert_eq!(input.len(), 272);
        input
    }

    #[test]
    fn item2_approvals_are_good_once_per_tree_and_boot_and_a_quota_is_one_quota() {
        // The deployment's earlier boot: its bundle had a boot id of its own;
        // an approval made for it is what a replaying tenant still holds.
        let earlier = fresh_boot_id();
        let spec = BundleSpec::new();
        assert_ne!(spec.boot_id, earlier);
        let probe = PartitionSpec::image("approvals", artifact("probes/probe-approvals.elf"))
            .authority(authority_key(&AUTHORITY_SEED).0)
            .cap(store(&[(Rights::WRITE, 3), (Rights::GRANT, 1)], 0))
            .cap(store(&[(Rights::WRITE, 2), (Rights::GRANT, 1)], 1))
            .cap(store(&[(Rights::WRITE, 1)], 0))
            .cap(store(&[(Rights::WRITE, 3)], 0))
            .input(input(spec.boot_id, earlier));
        let bundle = spec
            .partition(probe)
            .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
            .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
            .channel(1, 2)
            .build();
        let run = boot(&bundle, &QemuOptions::default());
        run.assert(run.exit == Some(0), "the hypervisor powered off cleanly");
        run.assert(run.contains("'approvals' exited: code 0x0"), "the probe ran to its end");
        for p in ["agent-a", "agent-b"] {
            run.assert(run.contains(&format!("'{p}' exited: code 0x0")), &format!("{p} finished"));
        }
        run.assert_chains_linked();

        let lines = run.attack_lines("approvals");
        let calls: Vec<WitnessRecord> = run
            .log(PROBE)
            .into_iter()
            .filter(|r| r.op < 0x8000 && r.op != Hypercall::ConsoleWrite as u16 && r.op != Hypercall::Exit as u16)
            .collect();
        run.assert(calls.len() == lines.len(), &format!("{} lines, {} call records", lines.len(), calls.len()));
        let pairs: Vec<(&Line, &WitnessRecord)> = lines.iter().zip(&calls).collect();
        // Every line and its record agree on the call, capability and outcome.
        for (l, r) in &pairs {
            let what = format!("{l:?} / {r:?}");
            run.assert(r.op == l.op, &format!("record op of {what}"));
            run.assert(r.cap == l.cap, &format!("record capability of {what}"));
            run.assert(i64::from(r.outcome) == l.status, &format!("record outcome of {what}"));
        }
        let expect = |prefix: &str, want: Result<(), HvError>, tier: u8| -> usize {
            let code = want.map_or_else(|e| e.code(), |()| 0);
            let mut n = 0;
            for (l, r) in pairs.iter().filter(|(l, _)| l.name.starts_with(prefix)) {
                run.assert(l.status == code, &format!("{l:?}: want {want:?}"));
                run.assert(r.tier == tier, &format!("{l:?}: record tier {} want {tier}", r.tier));
                n += 1;
            }
            run.assert(n > 0, &format!("{prefix} calls were made"));
            n
        };
        expect("approved-", Ok(()), 3);
        expect("replay-", Err(HvError::Replay), 3);
        run.assert(expect("self-copy-", Ok(()), 1) == 6, "six copies made");
        run.assert(expect("copy-replay-", Err(HvError::Replay), 3) == 6, "the approval refused through every copy");
        expect("earlier-boot-", Err(HvError::BadProof), 3);
        expect("quota-copy-", Ok(()), 1);
        expect("stage-", Ok(()), 1);
        expect("commit-approved-", Ok(()), 3);
        expect("commit-other-items-", Err(HvError::BadProof), 3);
        // Quota 1 per epoch over six copies: one call allowed per epoch the
        // six calls touched, every other refused with QuotaExceeded.
        let uses: Vec<(&Line, &WitnessRecord)> =
            pairs.iter().copied().filter(|(l, _)| l.name.starts_with("quota-use-")).collect();
        run.assert(uses.len() == 6, "six quota uses");
        let mut epochs: Vec<u64> = uses.iter().map(|(_, r)| r.timestamp / EPOCH_NS).collect();
        epochs.dedup();
        let allowed = uses.iter().filter(|(l, _)| l.status == 0).count();
        run.assert(allowed == epochs.len(), &format!("{allowed} calls allowed in {} epoch(s)", epochs.len()));
        for (l, r) in &uses {
            let code = if l.status == 0 { 0 } else { HvError::QuotaExceeded.code() };
            run.assert(l.status == code, &format!("{l:?}: allowed or QuotaExceeded"));
            run.assert(r.tier == 2, &format!("{l:?}: at P2"));
        }
        run.assert(run.console_of("approvals").any(|l| l == "approvals: finished"), "the probe finished its attacks");
    }
}

// ===================================================================
// item 10: boot-bound orders
// ===================================================================
//
// The same deployment booted twice (two bundles built from the same spec,
// as `rvm-loader up` does on every boot): an operator's `unfence` order
// captured from the first boot's serial input is replayed into the second
// boot and refused (`BadProof`, witnessed); the second boot's own order is
// carried out.

mod item10 {
    use ed25519_dalek::{Signer, SigningKey};
    use rvm_abi::bundle::{PartitionDesc, RecoveryDesc};
    use rvm_abi::frame::{OrderArgs, OrderFrame, OrderKind};
    use rvm_abi::witness::KernelEvent;
    use rvm_abi::{HvError, Outcome};
    use rvm_tests_qemu::{artifact, boot_interactive, BundleSpec, PartitionSpec, QemuOptions, QemuRun};
    use sha2::{Digest, Sha256};

    const OPERATOR_SEED: [u8; 32] = [0x6e; 32];
    /// The victim's partition id (first in the bundle).
    const VICTIM: u32 = 1;

    /// A signed order line for `bundle`.
    fn order(bundle: &[u8], kind: OrderKind, nonce: u64, name: &str) -> Vec<u8> {
        let partition = PartitionDesc::name_field(name).unwrap();
        let digest: [u8; 32] = Sha256::digest(bundle).into();
        let signature =
            SigningKey::from_bytes(&OPERATOR_SEED).sign(&OrderFrame::message(kind, nonce, &partition, &digest)).to_bytes();
        OrderFrame { kind, nonce, partition, signature }.encode().as_bytes().to_vec()
    }

    /// One build of the deployment: a probe that snapshots and is then
    /// fenced with no timeout (only the operator can end it), beside the
    /// reference pair.
    fn build() -> Vec<u8> {
        let operator = SigningKey::from_bytes(&OPERATOR_SEED).verifying_key().to_bytes();
        let victim = PartitionSpec::image("victim", artifact("probes/probe-fence-resume.elf"))
            .recovery(RecoveryDesc { fence_timeout_ms: 0, ..RecoveryDesc::DEFAULT });
        BundleSpec::new()
            .operator_key(operator)
            .partition(victim)
            .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
            .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
            .channel(1, 2)
            .budget_ms(60_000)
            .build()
    }

    /// Boot `bundle`; once the victim is fenced, write each of `orders` in
    /// turn, the next once the previous was answered.
    fn run_with_orders(bundle: &[u8], orders: &[Vec<u8>]) -> QemuRun {
        let mut seen = String::new();
        let mut sent = 0;
        let opts = QemuOptions { timeout: std::time::Duration::from_secs(240), ..QemuOptions::default() };
        boot_interactive(bundle, &opts, |chunk, stdin| {
            seen.push_str(&String::from_utf8_lossy(chunk));
            let fenced = seen.lines().any(|l| l.contains("'victim'") && l.contains("fenced (F3)"));
            let answered = seen.lines().filter(|l| l.starts_with("rvm: order ")).count();
            if fenced && sent < orders.len() && answered == sent {
                let _ = stdin.write_all(&orders[sent]);
                sent += 1;
            }
        })
    }

    fn refusals(run: &QemuRun) -> Vec<(Option<Outcome>, u64)> {
        run.log(VICTIM)
            .into_iter()
            .filter(|r| KernelEvent::from_code(r.op) == Some(KernelEvent::OrderRefused))
            .map(|r| (r.outcome(), OrderArgs::from_bytes(&r.args).nonce))
            .collect()
    }

    #[test]
    fn item10_an_order_replayed_from_an_earlier_boot_of_the_same_deployment_is_refused() {
        // First boot: the operator unfences the victim; the line is captured.
        let first = build();
        let captured = order(&first, OrderKind::Unfence, 1, "victim");
        let run = run_with_orders(&first, std::slice::from_ref(&captured));
        run.assert(run.contains("rvm: order 1 unfence 'victim' done: "), "the order is carried out in its own boot");
        run.assert(run.contains("'victim' exited: code 0x0"), "and the victim finishes");

        // Second boot of the same deployment: the captured line is replayed
        // first, then the operator's order for this boot.
        let second = build();
        run.assert(second.len() == first.len(), "the same deployment");
        run.assert(second != first, "each build carries its own boot id");
        let own = order(&second, OrderKind::Unfence, 2, "victim");
        let run = run_with_orders(&second, &[captured, own]);
        run.assert(run.exit == Some(0), "clean power-off");
        run.assert(
            run.contains("rvm: order 1 unfence 'victim' refused: signature does not verify with the operator key"),
            "the replayed order is refused",
        );
        run.assert(
            refusals(&run) == [(Some(Outcome::Denied(HvError::BadProof)), 1)],
            &format!("the refusal is witnessed in the victim's log: {:?}", refusals(&run)),
        );
        run.assert(run.contains("rvm: order 2 unfence 'victim' done: "), "this boot's own order is carried out");
        let orders = run.log(VICTIM).iter().filter(|r| KernelEvent::from_code(r.op) == Some(KernelEvent::OperatorOrder)).count();
        run.assert(orders == 1, "only this boot's order was applied");
        for p in ["victim", "agent-a", "agent-b"] {
            run.assert(run.contains(&format!("'{p}' exited: code 0x0")), &format!("{p} finished"));
        }
        run.assert_chains_linked();
    }
}

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

// ---------------------------------------------------------------------
// item 6: W^X at EL2
// ---------------------------------------------------------------------
mod item6_wx {
    use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions};

    const CPUS: u32 = 4;

    /// The ESR a self-test line reports.
    fn esr_of(line: &str) -> Option<u64> {
        let hex = line.split("(esr 0x").nth(1)?.split(' ').next()?;
        u64::from_str_radix(hex, 16).ok()
    }

    /// With `rvm.selftest=wx` every CPU, once on the hypervisor's map, tries
    /// to write its text and rodata, to execute from its data and from RAM
    /// outside the image (where the heap and every guest frame are), and to
    /// read each stack's guard page; each must fault at EL2, be recognised
    /// as the fault the probe expected, and the boot go on to run the
    /// partitions. Before the map existed (one RWX block over RAM, no guard
    /// pages) the write and the executes went through.
    #[test]
    fn el2_text_is_not_writable_and_data_is_not_executable() {
        let spec = BundleSpec::new()
            .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
            .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
            .channel(0, 1);
        let opts = QemuOptions { smp: CPUS, append: "rvm.selftest=wx".into(), ..QemuOptions::default() };
        let run = boot(&spec.build(), &opts);
        run.assert(run.contains("rvm: EL2 map: text 0x40200000.."), "the EL2 map was built");
        run.assert(run.contains("WXN on"), "SCTLR_EL2.WXN is set");
        run.assert(!run.contains("FAILED"), "no check failed");
        let checks = [
            "write to .text",
            "write to .rodata",
            "execute from .data",
            "execute from RAM outside the image (heap, guest frames)",
        ];
        for cpu in 0..CPUS {
            for what in checks {
                let line = format!("rvm: selftest wx cpu{cpu}: {what}: faulted as expected (esr ");
                run.assert(run.contains(&line), &line);
            }
            for slot in 0..CPUS {
                let line = format!("rvm: selftest wx cpu{cpu}: read of stack {slot}'s guard page ");
                let hit = run.lines().any(|l| l.starts_with(&line) && l.contains(": faulted as expected"));
                run.assert(hit, &line);
            }
            run.assert(run.contains(&format!("rvm: selftest wx cpu{cpu}: passed")), "every check on this CPU");
        }
        // The writes were data aborts (EC 0x25) with WnR set, the executes
        // instruction aborts (EC 0x21), all permission faults (FSC 0b0011xx);
        // the guard-page reads translation faults (0b0001xx).
        for (what, ec, write, fsc) in [
            ("write to .text", 0x25, true, 0x0c),
            ("write to .rodata", 0x25, true, 0x0c),
            ("execute from .data", 0x21, false, 0x0c),
            ("guard page", 0x25, false, 0x04),
        ] {
            let esrs: Vec<u64> = run.lines().filter(|l| l.contains(what)).filter_map(esr_of).collect();
            run.assert(esrs.len() >= CPUS as usize, what);
            for esr in esrs {
                let ok = (esr >> 26) & 0x3f == ec && (esr & 0x3c) == fsc && (ec != 0x25 || ((esr >> 6) & 1 == 1) == write);
                run.assert(ok, &format!("{what}: syndrome {esr:#x}"));
            }
        }
        run.assert(run.exit == Some(0), "clean power-off");
        run.assert(run.contains("'agent-a' exited: code 0x0"), "partitions run on the map");
        run.assert(run.contains("'agent-b' exited: code 0x0"), "partitions run on the map");
    }

    /// `rvm.selftest=stack-overflow` makes the boot CPU recurse until its
    /// stack runs out: the store into the guard page faults, the vector sees
    /// the stack pointer in a guard page and reports a stack overflow from
    /// the top of the CPU's own stack, and the machine powers off. Before the
    /// guard pages the stack ran on into .bss (and, with a writable text,
    /// through the code) with no report.
    #[test]
    fn an_el2_stack_overflow_hits_the_guard_page() {
        let spec = BundleSpec::new().partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")));
        let opts = QemuOptions { smp: 1, append: "rvm.selftest=stack-overflow".into(), ..QemuOptions::default() };
        let run = boot(&spec.build(), &opts);
        run.assert(run.contains("rvm: selftest stack-overflow: recursing"), "the overflow was started");
        let line = run.lines().find(|l| l.starts_with("rvm: FATAL: EL2 stack overflow (guard page hit)"));
        run.assert(line.is_some(), "reported as a stack overflow");
        // The fault address is in the boot CPU's guard page (stack slot 0's
        // lowest page, right after .bss).
        let far = line.and_then(|l| l.split("far 0x").nth(1)).and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
        run.assert(far.is_some_and(|f| f % 0x20000 < 0x1000), "the fault is in a guard page");
        eprintln!("{}", line.unwrap_or_default());
        run.assert(!run.contains("FAILED"), "the recursion never came back");
        run.assert(!run.timed_out && run.exit != Some(0), "the machine stopped");
    }
}

// ---------------------------------------------------------------------
// item 7: side channels
// ---------------------------------------------------------------------
mod item7_side_channels {
    use rvm_abi::witness::KernelEvent;
    use rvm_tests_qemu::{artifact, boot, BundleSpec, PartitionSpec, QemuOptions};

    /// Each access `probe-shared-regs` can make: the PMU (cycle counter,
    /// its control), the debug registers (debug control, a breakpoint, the
    /// OS lock, the debug ROM address), the physical timer, the auxiliary
    /// control register, and a data-cache operation by set/way (a `sys`
    /// instruction: a "write" in the syndrome). (`HCR_EL2.TIDCP` also traps
    /// the implementation-defined registers, but QEMU 7.2 does not implement
    /// that trap, so it is not tested here.)
    const ACCESSES: [&str; 13] = [
        "pmccntr_el0 read",
        "pmcr_el0 write",
        "mdscr_el1 read",
        "dbgbvr0_el1 read",
        "dbgbvr0_el1 write",
        "oslsr_el1 read",
        "mdrar_el1 read",
        "cntp_ctl_el0 read",
        "cntp_cval_el0 read",
        "cntp_ctl_el0 write",
        "cntp_cval_el0 write",
        "actlr_el1 write",
        "dc cisw write",
    ];

    /// One hostile partition per access, beside a pair of reference agents
    /// exchanging messages. Every access must trap to EL2 (EC 0x18, a
    /// trapped system-register access) and fault only that partition,
    /// witnessed (its `Fault` and `RecoverFence` records); the neighbours
    /// finish and the hypervisor powers off cleanly. Before, EL1 reached the
    /// PMU, the debug registers and the physical timer directly, and every
    /// probe printed the value it read and exited.
    #[test]
    fn pmu_debug_and_physical_timer_are_trapped() {
        // Several boots, so that no boot holds more partitions than the
        // hypervisor admits.
        for chunk in ACCESSES.chunks(5) {
            let mut spec = BundleSpec::new()
                .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
                .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
                .channel(0, 1);
            for (i, access) in chunk.iter().enumerate() {
                let name = format!("sc{i}");
                spec = spec.partition(
                    PartitionSpec::image(&name, artifact("probes/probe-shared-regs.elf")).input(access.as_bytes().to_vec()),
                );
            }
            let run = boot(&spec.build(), &QemuOptions::default());
            run.assert(!run.contains("FAILED"), "no access went through");
            for (i, access) in chunk.iter().enumerate() {
                let name = format!("sc{i}");
                let log = 3 + i as u32;
                run.assert(run.console_of(&name).any(|l| l == format!("probe shared-regs: {access}")), access);
                let fault = format!("'{name}' fault: trapped system register access (esr 0x");
                let line = run.lines().find(|l| l.contains(&fault));
                run.assert(line.is_some(), &format!("{access}: faulted as a trapped register access"));
                let esr = line
                    .and_then(|l| l.split("(esr 0x").nth(1))
                    .and_then(|h| u64::from_str_radix(h.split(')').next()?, 16).ok());
                run.assert(esr.is_some_and(|e| (e >> 26) & 0x3f == 0x18), &format!("{access}: EC 0x18"));
                let write = access.ends_with("write");
                run.assert(esr.is_some_and(|e| (e & 1 == 0) == write), &format!("{access}: direction in the syndrome"));
                let records = run.log(log);
                run.assert(records.iter().any(|r| r.op == KernelEvent::Fault as u16), &format!("{access}: fault witnessed"));
                run.assert(records.iter().any(|r| r.op == KernelEvent::RecoverFence as u16), &format!("{access}: fence witnessed"));
            }
            run.assert(run.contains("'agent-a' exited: code 0x0"), "the neighbours finished");
            run.assert(run.contains("'agent-b' exited: code 0x0"), "the neighbours finished");
            run.assert(!run.timed_out && run.exit == Some(0), "clean power-off");
            run.assert_chains_linked();
        }
    }
}

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
    const SNAPSHOT_STORM: u64 = 4;
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
        run_with_ram(spec, timeout_s, QemuOptions::default().memory_mib)
    }

    /// [`run`] on a machine with `memory_mib` of RAM (the hypervisor's heap
    /// is a quarter of it, at least 64 MiB).
    fn run_with_ram(spec: &BundleSpec, timeout_s: u64, memory_mib: u64) -> QemuRun {
        let opts = QemuOptions {
            timeout: Duration::from_secs(timeout_s),
            memory_mib,
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
    fn a_snapshot_storm_is_held_to_its_credit_and_the_neighbours_finish() {
        // The hostile partition asks for its whole heap window as a
        // snapshot, again and again; each one is charged to its snapshot
        // credit (a burst, then a rate), so it is held back, not its
        // neighbours.
        let spec = with_pair(
            BundleSpec::new().partition(stall("hostile", SNAPSHOT_STORM, 0)),
            1,
        )
        .budget_ms(10_000);
        let run = run(&spec, 240);
        clean_power_off(&run);
        pair_finished(&run);
        let records = chain(&run, 1);
        let taken: Vec<&WitnessRecord> = records
            .iter()
            .filter(|r| r.op == KernelEvent::SnapshotTaken as u16)
            .collect();
        run.assert(taken.len() >= 2, "the storm took snapshots (the attack ran)");
        // Within the run's guest time (at most its wall time), no more than
        // the credit's burst and rate allow for images of this size (the
        // probe's WASM budget: its heap window less the runtime's share).
        use rvm_kernel::console::{SNAPSHOT_BURST, SNAPSHOT_RATE};
        let window = run
            .lines()
            .find_map(|l| l.strip_prefix("rvm: partition 1 'hostile' loaded: ")?.split("heap window ").nth(1)?.strip_suffix(" KiB")?.parse::<u64>().ok())
            .expect("the hostile partition's heap window")
            * 1024
            - rvm_abi::bootinfo::layout::RUNTIME_HEAP_OVERHEAD;
        let allowed = (SNAPSHOT_BURST + SNAPSHOT_RATE * (run.elapsed.as_secs() + 1)).div_ceil(window) + 1;
        eprintln!(
            "snapshot storm: {} snapshots in {:.1} s (credit allows {allowed})",
            taken.len(),
            run.elapsed.as_secs_f64()
        );
        run.assert(
            taken.len() as u64 <= allowed,
            &format!("{} snapshots <= {allowed}: the storm is held to its credit", taken.len()),
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
        // Each greedy tenant's budget (128 MiB of heap, and snapshots as
        // large: 387 MiB of frames) fits the frames of a 768 MiB machine
        // (576 MiB once its heap is taken) alone; two would not, four
        // touching their whole heap even less.
        let mut spec = BundleSpec::new();
        for n in 0..4 {
            let mut g = stall(&format!("greedy-{n}"), TOUCH_HEAP, 0);
            g.wasm_pages = 2048;
            spec = spec.partition(g);
        }
        let spec = with_pair(spec, 4).budget_ms(120_000);
        let run = run_with_ram(&spec, 300, 768);
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
        // bound) beside the pair: more than the smallest heap (64 MiB, a
        // 256 MiB machine's) holds unless each is admitted with its share
        // reserved.
        let mut spec = with_pair(BundleSpec::new(), 0);
        for n in 0..16 {
            spec = spec.partition(stall(&format!("storm-{n}"), STORE_STORM, 2048));
        }
        let run = run_with_ram(&spec.budget_ms(120_000), 300, 256);
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
