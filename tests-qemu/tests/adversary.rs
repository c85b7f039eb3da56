//! The adversary suite of issue 12 ("a hostile tenant gets nothing"): one
//! section per item, each an attack that failed before the item was closed.
//! Sections are independent; helpers stay inside their section.

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
