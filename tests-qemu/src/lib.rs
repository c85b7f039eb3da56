//! The QEMU side of RVM's tests: make a bundle, boot a fresh
//! `qemu-system-aarch64` (or `$RVM_QEMU`) on it with a timeout, and hand back everything the
//! serial line said and how the machine ended. QEMU is killed on every path
//! (timeout, panic in the test, drop).
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rvm_abi::bundle::{
    AgentChannelDesc, AgentRef, BootConfig, BundleWriter, CapDesc, ChannelDesc, EntryKind, MemoryTier, PartitionDesc,
    RecoveryDesc, BOOT_ID_LEN, GLOBAL,
};
use rvm_abi::frame::{ExitFrame, Frame};
use rvm_abi::WitnessRecord;

/// Where the Makefile puts the cross-built artifacts.
pub fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RVM_IMAGE_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rvm")
}

/// Read an artifact, with a message that says how to build it.
pub fn artifact(rel: &str) -> Vec<u8> {
    let path = artifacts_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; build the images first with `make images` (make test does it)", path.display())
    })
}

/// What runs in one partition.
#[derive(Clone, Debug)]
pub enum Guest {
    /// The shared guest runtime with this WASM module.
    Wasm(Vec<u8>),
    /// A raw EL1 program (AArch64 ELF) instead of the runtime.
    Image(Vec<u8>),
}

/// A partition to put in a test bundle.
#[derive(Clone, Debug)]
pub struct PartitionSpec {
    pub name: String,
    pub guest: Guest,
    pub wasm_pages: u32,
    pub fuel_per_slice: u64,
    /// Capability-table entries installed after the partition's own state
    /// store (so the first is handle 1), before its channel handles.
    pub caps: Vec<CapDesc>,
    /// Ed25519 public key bound to the partition's capabilities: the key
    /// whose signatures approve their P3 operations.
    pub authority: Option<[u8; 32]>,
    /// For a raw image: bytes mapped read-only where a module would be (the
    /// probe's input: seeds, approvals signed on the host).
    pub input: Option<Vec<u8>>,
    /// Recovery thresholds (the manifest's recovery map).
    pub recovery: RecoveryDesc,
    /// Modules of the partition's agents after the first (slots 1, 2, ...):
    /// a coherence domain of several agents.
    pub more_agents: Vec<Vec<u8>>,
    /// The manifest's memory tier (default `Warm`).
    pub tier: MemoryTier,
}

impl PartitionSpec {
    pub fn wasm(name: &str, module: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            guest: Guest::Wasm(module),
            wasm_pages: 16,
            fuel_per_slice: 0,
            caps: Vec::new(),
            authority: None,
            input: None,
            recovery: RecoveryDesc::DEFAULT,
            more_agents: Vec::new(),
            tier: MemoryTier::Warm,
        }
    }

    /// Use this memory tier.
    pub fn tier(mut self, tier: MemoryTier) -> Self {
        self.tier = tier;
        self
    }

    /// Add another agent (the next slot) running `module`.
    pub fn agent(mut self, module: Vec<u8>) -> Self {
        self.more_agents.push(module);
        self
    }
    pub fn image(name: &str, elf: Vec<u8>) -> Self {
        Self { guest: Guest::Image(elf), ..Self::wasm(name, Vec::new()) }
    }

    /// Add a capability-table entry.
    pub fn cap(mut self, desc: CapDesc) -> Self {
        self.caps.push(desc);
        self
    }

    /// Bind an authority public key.
    pub fn authority(mut self, public_key: [u8; 32]) -> Self {
        self.authority = Some(public_key);
        self
    }

    /// Use these recovery thresholds.
    pub fn recovery(mut self, recovery: RecoveryDesc) -> Self {
        self.recovery = recovery;
        self
    }

    /// Give a raw image its input bytes.
    pub fn input(mut self, bytes: Vec<u8>) -> Self {
        self.input = Some(bytes);
        self
    }
}

/// A bundle for one test run.
#[derive(Clone, Debug, Default)]
pub struct BundleSpec {
    pub partitions: Vec<PartitionSpec>,
    /// Pairs of partition indexes to connect with a channel.
    pub channels: Vec<(u32, u32)>,
    pub run_budget_ms: u32,
    pub slice_us: u32,
    /// Channels between agents: (partition index, slot) pairs.
    pub agent_channels: Vec<((u32, u32), (u32, u32))>,
    /// [`BootConfig::flags`] bits.
    pub flags: u32,
    /// [`BootConfig::checkpoint_every`]; 0 = the default.
    pub checkpoint_every: u32,
    /// The operator's Ed25519 public key (orders from the host).
    pub operator_key: Option<[u8; 32]>,
    /// The bundle's boot id ([`EntryKind::BootId`]): random per
    /// [`BundleSpec::new`], as the loader's are; orders and P3 approvals
    /// sign it.
    pub boot_id: [u8; BOOT_ID_LEN],
}

/// A fresh random boot id from the operating system's generator.
pub fn fresh_boot_id() -> [u8; BOOT_ID_LEN] {
    rvm_witness_host::files::random_bytes().expect("/dev/urandom gives a boot id")
}

impl BundleSpec {
    /// An empty spec with a fresh random boot id.
    pub fn new() -> Self {
        Self { run_budget_ms: 0, slice_us: BootConfig::DEFAULT.slice_us, boot_id: fresh_boot_id(), ..Self::default() }
    }

    /// Use this boot id instead of the fresh one.
    pub fn boot_id(mut self, id: [u8; BOOT_ID_LEN]) -> Self {
        self.boot_id = id;
        self
    }

    /// Bind the operator key whose signed orders the hypervisor accepts.
    pub fn operator_key(mut self, public: [u8; 32]) -> Self {
        self.operator_key = Some(public);
        self
    }

    pub fn partition(mut self, p: PartitionSpec) -> Self {
        self.partitions.push(p);
        self
    }

    pub fn channel(mut self, a: u32, b: u32) -> Self {
        self.channels.push((a, b));
        self
    }

    /// Connect agent `a` = (partition index, slot) with agent `b`.
    pub fn agent_channel(mut self, a: (u32, u32), b: (u32, u32)) -> Self {
        self.agent_channels.push((a, b));
        self
    }

    /// Set [`BootConfig::flags`] bits.
    pub fn flags(mut self, bits: u32) -> Self {
        self.flags |= bits;
        self
    }

    /// Sign a checkpoint every `n` records ([`BootConfig::checkpoint_every`]).
    pub fn checkpoint_every(mut self, n: u32) -> Self {
        self.checkpoint_every = n;
        self
    }

    /// Stop the run after `ms` milliseconds ([`BootConfig::run_budget_ms`]).
    pub fn budget_ms(mut self, ms: u32) -> Self {
        self.run_budget_ms = ms;
        self
    }

    /// Lay out the bundle (the guest runtime comes from the artifacts).
    pub fn build(&self) -> Vec<u8> {
        let mut w = BundleWriter::new();
        if self.partitions.iter().any(|p| matches!(p.guest, Guest::Wasm(_))) {
            w.entry(EntryKind::GuestRuntime, GLOBAL, &artifact("guest-runtime.elf"));
        }
        w.entry(EntryKind::WitnessKeySeed, GLOBAL, &[0x42; 32]);
        let config = BootConfig {
            run_budget_ms: self.run_budget_ms,
            slice_us: self.slice_us,
            flags: self.flags,
            checkpoint_every: if self.checkpoint_every == 0 { BootConfig::DEFAULT.checkpoint_every } else { self.checkpoint_every },
        };
        w.entry(EntryKind::BootConfig, GLOBAL, &config.to_bytes());
        w.entry(EntryKind::BootId, GLOBAL, &self.boot_id);
        if let Some(key) = &self.operator_key {
            w.entry(EntryKind::OperatorKey, GLOBAL, key);
        }
        for p in &self.partitions {
            let desc = PartitionDesc {
                name: PartitionDesc::name_field(&p.name).expect("test partition names are safe"),
                memory_tier: p.tier,
                deadline_urgency: 50,
                cut_pressure: 30,
                default_tier: 2,
                wasm_pages: p.wasm_pages,
                fuel_per_slice: p.fuel_per_slice,
                recovery: p.recovery,
                witness_key_fingerprint: None,
                dormant_after_ms: 0,
            };
            let i = w.partition(&desc);
            match &p.guest {
                Guest::Wasm(m) => {
                    w.entry(EntryKind::Wasm, i, m);
                    for more in &p.more_agents {
                        w.entry(EntryKind::Wasm, i, more);
                    }
                }
                Guest::Image(elf) => {
                    w.entry(EntryKind::GuestImage, i, elf);
                    if let Some(input) = &p.input {
                        w.entry(EntryKind::Wasm, i, input);
                    }
                }
            }
            if let Some(key) = &p.authority {
                w.entry(EntryKind::AuthorityKey, i, key);
            }
            for c in &p.caps {
                w.entry(EntryKind::Capability, i, &c.to_bytes());
            }
        }
        for (a, b) in &self.channels {
            w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a: *a, b: *b, capacity: 16 }.to_bytes());
        }
        for ((pa, sa), (pb, sb)) in &self.agent_channels {
            let c = AgentChannelDesc {
                a: AgentRef { partition: *pa, slot: *sa },
                b: AgentRef { partition: *pb, slot: *sb },
                capacity: 16,
            };
            w.entry(EntryKind::AgentChannel, GLOBAL, &c.to_bytes());
        }
        w.finish()
    }
}

/// How to boot QEMU.
#[derive(Clone, Debug)]
pub struct QemuOptions {
    pub timeout: Duration,
    pub smp: u32,
    /// `-icount shift=0`: instruction-count time (one ns per instruction
    /// while a CPU runs; while every CPU idles, time still follows the host's
    /// clock unless `icount_warp_idle` is set).
    pub icount: bool,
    /// With `icount`: `sleep=off`, so an idle machine's time jumps to its
    /// next timer at once instead of following the host's clock. Time is
    /// then the same from run to run, whatever the host's load (the bench's
    /// reset-to-first-record figure varied from 1.7 to 6.4 million on one
    /// image without it).
    pub icount_warp_idle: bool,
    /// Kernel command line (`-append`, given when not empty).
    pub append: String,
    /// Machine flags after `virt,` (default `virtualization=on,gic-version=3`).
    pub machine: String,
    /// RAM in MiB (`-m`).
    pub memory_mib: u64,
    /// Give the machine a control channel (a virtio console on a socket the
    /// harness reads): the hypervisor then sends witness and journal frames
    /// there, in binary ([`QemuRun::control_lines`]).
    pub control: bool,
    /// More QEMU arguments, after all the others (e.g. a `-monitor` for a
    /// test that reads guest memory from outside).
    pub extra_args: Vec<String>,
}

impl Default for QemuOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(90),
            smp: 4,
            icount: false,
            icount_warp_idle: false,
            append: String::new(),
            machine: "virtualization=on,gic-version=3".into(),
            memory_mib: 512,
            control: false,
            extra_args: Vec::new(),
        }
    }
}

/// How a run ended and what it printed.
#[derive(Debug)]
pub struct QemuRun {
    pub serial: String,
    /// The hypervisor's exit status: the code of its exit frame (`@X`, the
    /// first whole line that is one), if QEMU then exited by itself with 0
    /// (PSCI `SYSTEM_OFF`). `None` for a run that ended any other way: no
    /// exit frame, a timeout, QEMU failing or killed.
    pub exit: Option<i32>,
    /// QEMU's own exit status, if it exited by itself.
    pub qemu_exit: Option<i32>,
    /// What QEMU wrote to its standard error.
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Host CPU time QEMU used (user + system), as last sampled before it
    /// exited (every 20 ms); `None` where `/proc` cannot tell.
    pub cpu: Option<Duration>,
    /// QEMU's CPU time sampled every 20 ms while it ran, with how much
    /// serial output had arrived by then ([`QemuRun::cpu_between`]).
    pub samples: Vec<CpuSample>,
    /// With [`QemuOptions::control`]: every frame of the control channel,
    /// as the console line that would have carried it; the bytes that came;
    /// and why the stream could not be read to its end, if it could not.
    pub control_lines: Vec<String>,
    pub control_bytes: usize,
    pub control_error: Option<String>,
}

/// Reads the control channel's socket while QEMU runs: accepts QEMU's
/// connection, then collects every byte until told to stop and the socket
/// has nothing more.
struct ControlReader {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl ControlReader {
    fn start(listener: std::os::unix::net::UnixListener) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut all = Vec::new();
            listener.set_nonblocking(true).expect("nonblocking listener");
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if flag.load(Ordering::Acquire) => return all,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            conn.set_nonblocking(false).expect("blocking socket");
            conn.set_read_timeout(Some(Duration::from_millis(20))).expect("read timeout");
            let mut buf = vec![0u8; 64 << 10];
            let mut acked = 0u64;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        all.extend_from_slice(&buf[..n]);
                        // Acknowledged every ACK_EVERY bytes: the
                        // hypervisor may send more.
                        if all.len() as u64 - acked >= rvm_abi::control::ACK_EVERY {
                            acked = all.len() as u64;
                            let mut ack = Vec::new();
                            rvm_abi::control::write_ack(&mut |b| ack.extend_from_slice(b), acked);
                            let _ = std::io::Write::write_all(&mut conn, &ack);
                        }
                    }
                    Err(_) if flag.load(Ordering::Acquire) => break,
                    Err(_) => {}
                }
            }
            all
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<u8> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.join().unwrap_or_default()
    }
}

/// One sample of QEMU's CPU time.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// Since QEMU started.
    pub at: Duration,
    /// Host CPU time QEMU had used.
    pub cpu: Duration,
    /// Whole lines of serial output read by then.
    pub serial_lines: usize,
}

/// CPU time (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat` (fields 14 and 15, in the ABI's fixed 100 ticks per
/// second).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Kills QEMU when dropped, whatever happened.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boot the RVM image on `bundle` and wait for it to power off.
pub fn boot(bundle: &[u8], opts: &QemuOptions) -> QemuRun {
    boot_with(bundle, opts, |_| {})
}

/// As [`boot`], handing every chunk of serial output to `on_output` as it
/// arrives.
pub fn boot_with(bundle: &[u8], opts: &QemuOptions, mut on_output: impl FnMut(&[u8])) -> QemuRun {
    boot_driven(bundle, opts, false, |chunk, _| on_output(chunk))
}

/// As [`boot_with`], with QEMU's standard input (the serial line's receive
/// side) open: `on_output` may write to it, e.g. an operator's order once
/// the serial output shows it is due. Standard input is closed when QEMU
/// is reaped.
pub fn boot_interactive(bundle: &[u8], opts: &QemuOptions, on_output: impl FnMut(&[u8], &mut dyn std::io::Write)) -> QemuRun {
    boot_driven(bundle, opts, true, on_output)
}

fn boot_driven(
    bundle: &[u8],
    opts: &QemuOptions,
    interactive: bool,
    mut on_output: impl FnMut(&[u8], &mut dyn std::io::Write),
) -> QemuRun {
    let dir = tempdir();
    let bundle_path = dir.join("bundle.rvm");
    std::fs::write(&bundle_path, bundle).expect("write bundle");
    let image = artifacts_dir().join("rvm.bin");
    assert!(image.exists(), "{} missing; build it with `make images`", image.display());
    let qemu = rvm_loader::qemu::qemu_binary(None);
    let mut cmd = Command::new(&qemu);
    cmd.args(["-machine", &format!("virt,{}", opts.machine)])
        .args(["-cpu", "cortex-a72", "-smp", &opts.smp.to_string(), "-m", &format!("{}M", opts.memory_mib)])
        .args(["-nographic", "-nic", "none"])
        .arg("-kernel")
        .arg(&image)
        .arg("-initrd")
        .arg(&bundle_path);
    if !opts.append.is_empty() {
        cmd.args(["-append", &opts.append]);
    }
    if opts.icount {
        cmd.args(["-icount", if opts.icount_warp_idle { "shift=0,sleep=off" } else { "shift=0" }]);
    }
    let control = opts.control.then(|| {
        let path = dir.join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind the control socket");
        cmd.args(["-global", "virtio-mmio.force-legacy=false", "-device", "virtio-serial-device"])
            .arg("-chardev")
            .arg(format!("socket,id=rvmctl,path={}", path.display()))
            .args(["-device", "virtconsole,chardev=rvmctl"]);
        ControlReader::start(listener)
    });
    cmd.args(&opts.extra_args);
    let stdin = if interactive { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = Reaper(cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "start {}: {e} (apt-get install qemu-system-arm, or set {} to a qemu-system-aarch64)",
            qemu.to_string_lossy(),
            rvm_loader::qemu::QEMU_ENV
        )
    }));
    let mut stdout = child.0.stdout.take().expect("stdout");
    let mut stderr = child.0.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    let mut input: Box<dyn std::io::Write> = match child.0.stdin.take() {
        Some(pipe) => Box::new(pipe),
        None => Box::new(std::io::sink()),
    };
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut serial = Vec::new();
    let mut qemu_exit = None;
    let mut timed_out = false;
    let mut cpu = None;
    let mut samples = Vec::new();
    loop {
        let sample = cpu_time(child.0.id());
        cpu = sample.or(cpu);
        while let Ok(chunk) = rx.try_recv() {
            on_output(&chunk, &mut *input);
            let _ = input.flush();
            serial.extend_from_slice(&chunk);
        }
        if let Some(cpu) = sample {
            let serial_lines = serial.iter().filter(|&&b| b == b'\n').count();
            samples.push(CpuSample { at: start.elapsed(), cpu, serial_lines });
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            qemu_exit = status.code();
            break;
        }
        if start.elapsed() > opts.timeout {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    drop(input);
    drop(child);
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    while let Ok(chunk) = rx.try_recv() {
        on_output(&chunk, &mut std::io::sink());
        serial.extend_from_slice(&chunk);
    }
    let control_raw = control.map(ControlReader::finish).unwrap_or_default();
    let (mut control_lines, mut control_error) = (Vec::new(), None);
    let mut decoder = rvm_abi::control::Decoder::new();
    decoder.push(&control_raw);
    while let Some(frame) = decoder.next_frame() {
        match frame {
            Ok(f) => control_lines.push(f.to_line()),
            Err(e) => {
                control_error = Some(e.to_string());
                break;
            }
        }
    }
    if control_error.is_none() && decoder.pending() > 0 {
        control_error = Some(format!("the stream ended inside a frame ({} bytes left)", decoder.pending()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let serial = String::from_utf8_lossy(&serial).replace('\r', "");
    let exit = match qemu_exit {
        Some(0) => exit_status(&serial),
        _ => None,
    };
    QemuRun { serial, exit, qemu_exit, stderr, timed_out, elapsed, cpu, samples, control_lines, control_bytes: control_raw.len(), control_error }
}

/// The code of the hypervisor's exit frame: the first whole line of the
/// serial output that is one. A guest's lines all start with `[name] `, so
/// no guest can print one.
pub fn exit_status(serial: &str) -> Option<i32> {
    serial.lines().find_map(ExitFrame::parse).and_then(|f| i32::try_from(f.code).ok())
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("rvm-qemu-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// One `attack <name> op <op> cap <id> status <status> x1 <x1>` line of an
/// attacking probe (`probe-cap-attacks`, `probe-approvals`): what one call
/// answered, to be paired with its witness record.
#[derive(Debug)]
pub struct AttackLine {
    pub name: String,
    pub op: u16,
    pub cap: u32,
    pub status: i64,
    pub x1: u64,
}

impl QemuRun {
    /// Host CPU time QEMU used, and wall time, between the last line that
    /// contains `from` and the first line after it that contains `to`: from
    /// the first sample taken once the former had arrived to the last taken
    /// before the latter did. `None` if either line is missing or no two
    /// samples fall between them.
    pub fn cpu_between(&self, from: &str, to: &str) -> Option<(Duration, Duration)> {
        let lines: Vec<&str> = self.serial.lines().collect();
        let first = lines.iter().rposition(|l| l.contains(from))?;
        let last = first + lines[first..].iter().position(|l| l.contains(to))?;
        let a = self.samples.iter().find(|s| s.serial_lines > first)?;
        let b = self.samples.iter().rev().find(|s| s.serial_lines <= last)?;
        (b.at > a.at).then(|| (b.cpu.saturating_sub(a.cpu), b.at - a.at))
    }

    /// Lines of serial output.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.serial.lines()
    }

    /// The `attack ...` lines partition `name` printed, in order.
    pub fn attack_lines(&self, name: &str) -> Vec<AttackLine> {
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
        self.console_of(name)
            .filter_map(|l| l.strip_prefix("attack "))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 9, "attack line {l:?}");
                AttackLine {
                    name: f[0].into(),
                    op: f[2].parse().expect("op"),
                    cap: u32::try_from(hex(f[4])).expect("cap id"),
                    status: f[6].parse().expect("status"),
                    x1: hex(f[8]),
                }
            })
            .collect()
    }

    /// Console lines of partition `name`, without the `[name] ` prefix.
    pub fn console_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("[{name}] ");
        self.serial.lines().filter_map(move |l| l.strip_prefix(prefix.as_str()))
    }

    /// Lines of serial output, then the control channel's frames as lines:
    /// every frame the hypervisor sent, whichever way.
    pub fn frame_lines(&self) -> impl Iterator<Item = &str> {
        self.serial.lines().chain(self.control_lines.iter().map(String::as_str))
    }

    /// Every witness record frame, with its log id.
    pub fn records(&self) -> Vec<(u32, [u8; 64])> {
        self.frame_lines()
            .filter_map(Frame::parse)
            .filter_map(|f| match f {
                Frame::Record { log, bytes } => Some((log, bytes)),
                _ => None,
            })
            .collect()
    }

    /// The hypervisor's public key, from its `@K` frame (it signs
    /// checkpoints and `Prove` attestations).
    pub fn witness_key(&self) -> Option<[u8; 32]> {
        self.frame_lines().filter_map(Frame::parse).find_map(|f| match f {
            Frame::Key { public } => Some(public),
            _ => None,
        })
    }

    /// Decoded records of one log, in order.
    pub fn log(&self, log: u32) -> Vec<WitnessRecord> {
        self.records()
            .into_iter()
            .filter(|(l, _)| *l == log)
            .map(|(_, b)| WitnessRecord::from_bytes(&b).expect("record version"))
            .collect()
    }

    /// Check that every log on the serial line is consecutive from sequence 0
    /// and hash-linked record by record (each record's `prev` is the prefix of
    /// the head before it); returns how many logs there were.
    pub fn assert_chains_linked(&self) -> usize {
        let mut logs: std::collections::BTreeMap<u32, Vec<[u8; 64]>> = std::collections::BTreeMap::new();
        for (log, bytes) in self.records() {
            logs.entry(log).or_default().push(bytes);
        }
        for (log, records) in &logs {
            let mut head = rvm_witness::Hash::ZERO;
            for (i, bytes) in records.iter().enumerate() {
                let r = WitnessRecord::from_bytes(bytes).expect("record version");
                self.assert(r.seq == i as u64, &format!("log {log}: seq {i} consecutive"));
                self.assert(r.prev == head.prefix16(), &format!("log {log}: record {i} links its predecessor"));
                head = rvm_witness::chain::chain_step(&head, bytes);
            }
        }
        logs.len()
    }

    /// Panic with the whole serial output if `cond` fails.
    pub fn assert(&self, cond: bool, what: &str) {
        assert!(
            cond,
            "{what}\n--- serial ---\n{}\n--- end (exit {:?}, QEMU exit {:?}, timed out {}) ---{}",
            self.serial,
            self.exit,
            self.qemu_exit,
            self.timed_out,
            if self.stderr.is_empty() { String::new() } else { format!("\n--- QEMU stderr ---\n{}", self.stderr) }
        );
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.serial.contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::exit_status;

    #[test]
    fn the_exit_status_is_the_first_whole_exit_frame_line() {
        assert_eq!(exit_status("rvm: powering off\n@X 0\n"), Some(0));
        assert_eq!(exit_status("rvm: PANIC: x\n@X 101\n@X 0\n"), Some(101));
        // A guest's line is prefixed; a damaged or partial frame is none.
        assert_eq!(exit_status("[evil] @X 0\nrvm: powering off\n"), None);
        assert_eq!(exit_status("[evil] x\n@X 0 trailing\n@X +0\n"), None);
        assert_eq!(exit_status("@X 3\n[evil] @X 0\n"), Some(3));
        assert_eq!(exit_status(""), None);
    }
}
