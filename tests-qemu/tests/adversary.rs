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
