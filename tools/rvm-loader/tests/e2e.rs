//! End to end, with the real images under QEMU: the adapter's files →
//! `rvm-loader` → the hypervisor → witness logs filed under `RVM_HOME` →
//! `rvm-loader witness verify`.
//!
//! The images come from `$RVM_IMAGE_DIR`, else `target/rvm/` of the
//! workspace; `make images` builds them (`make test` does it first). Every
//! command runs in its own process group with a deadline; on the deadline
//! the whole group (the loader and its QEMU) is killed. The loader itself
//! kills QEMU at its `--timeout`.

mod common;

use common::*;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One QEMU at a time: the machine has few cores, and boots are short.
static QEMU: Mutex<()> = Mutex::new(());

/// How long the loader may let QEMU run (its `--timeout`).
const LOADER_TIMEOUT: &str = "60";
/// How long a command may take before the test kills its process group.
const DEADLINE: Duration = Duration::from_secs(180);

/// The image folder, checked.
fn images() -> PathBuf {
    let dir = std::env::var_os("RVM_IMAGE_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/rvm"),
            PathBuf::from,
        );
    for f in ["rvm.bin", "guest-runtime.elf", "agents/reference.wasm"] {
        assert!(
            dir.join(f).is_file(),
            "{}: missing; build the images first with `make images` (`make test` does it), or set RVM_IMAGE_DIR",
            dir.join(f).display()
        );
    }
    dir
}

/// A fresh RVM_HOME and the real images.
struct Real {
    home: TempDir,
    images: PathBuf,
    /// A folder holding `rvm-loader` for PATH.
    bin: TempDir,
}

impl Real {
    fn new() -> Self {
        let images = images();
        let home = TempDir::new("e2e-home");
        std::fs::remove_dir(home.path()).unwrap();
        let bin = TempDir::new("e2e-bin");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rvm-loader"), bin.join("rvm-loader"))
            .unwrap();
        Self { home, images, bin }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn witness(&self, file: &str) -> PathBuf {
        self.home().join("witness").join(file)
    }

    fn command(&self, program: &Path, cwd: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .current_dir(cwd)
            .env("RVM_HOME", self.home())
            .env("RVM_IMAGE_DIR", &self.images)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bin.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("RVM_QEMU");
        c
    }

    /// Run `rvm-loader` with a deadline.
    fn loader(&self, args: &[&str]) -> Out {
        let c = self.command(
            Path::new(env!("CARGO_BIN_EXE_rvm-loader")),
            Path::new(env!("CARGO_MANIFEST_DIR")),
            args,
        );
        bounded(c, &format!("rvm-loader {}", args.join(" ")))
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.loader(args);
        assert_eq!(o.code, 0, "{args:?}: {o:#?}");
        o
    }

    /// Register the reference agent as the guest of the adapter's package.
    fn add_reference(&self) {
        let wasm = self.images.join("agents/reference.wasm");
        self.ok(&[
            "guest",
            "add",
            "@metaharness/kernel@0.1.0",
            wasm.to_str().unwrap(),
        ]);
    }
}

/// Run `cmd` in its own process group; kill the group at the deadline.
fn bounded(mut cmd: Command, what: &str) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let pgid = child.id();
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > DEADLINE {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        // The loader and its QEMU: the whole group.
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{pgid}")])
            .status();
        let _ = child.wait();
        panic!(
            "{what}: still running after {DEADLINE:?}; its process group was killed\nstdout:\n{}\nstderr:\n{}",
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default()
        );
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn qemu_lock() -> std::sync::MutexGuard<'static, ()> {
    QEMU.lock().unwrap_or_else(|p| p.into_inner())
}

/// The log's three files are there and `witness verify` passes, with every
/// record signed.
fn assert_filed_and_verified(env: &Real, name: &str) -> String {
    for ext in ["log", "checkpoints", "pub"] {
        assert!(
            env.witness(&format!("{name}.{ext}")).is_file(),
            "{name}.{ext} not filed"
        );
    }
    let o = env.ok(&["witness", "verify", name, "--require-signed"]);
    assert!(
        o.stdout.contains("matches the expected fingerprint")
            && o.stdout.contains("chained and signed, Merkle roots match"),
        "{o:#?}"
    );
    o.stdout
}

/// `witness show NAME`, as lines.
fn show(env: &Real, name: &str) -> String {
    env.ok(&["witness", "show", name]).stdout
}

#[test]
fn the_emitted_install_script_runs_unmodified_under_qemu() {
    let env = Real::new();
    env.add_reference();
    let dir = fixture("template-minimal");
    let _q = qemu_lock();
    let c = env.command(
        Path::new("bash"),
        &dir,
        &[dir.join("install-rvm.sh").to_str().unwrap()],
    );
    let o = bounded(c, "install-rvm.sh");
    assert_eq!(o.code, 0, "{o:#?}");
    // The three commands ran, the agent ran in its partition under QEMU.
    for s in [
        "partition demo-minimal registered",
        "installed 2 capabilities for partition demo-minimal",
        "rvm: partition 1 'demo-minimal' loaded",
        "[demo-minimal] runtime: running `run`",
        "rvm: partition 1 'demo-minimal' exited",
        "RVM partition 'demo-minimal' is up.",
    ] {
        assert!(o.stdout.contains(s), "missing {s:?}: {o:#?}");
    }
    for s in [
        "rvm-loader: demo-minimal: running",
        "rvm-loader: witness demo-minimal.log verified",
    ] {
        assert!(o.stderr.contains(s), "missing {s:?}: {o:#?}");
    }
    // Filed, and it verifies on its own.
    assert_filed_and_verified(&env, "demo-minimal");
    assert_filed_and_verified(&env, "hypervisor");
    let log = show(&env, "demo-minimal");
    for op in [
        "PartitionCreate",
        "PartitionStart",
        "ConsoleWrite",
        "Exit",
        "PartitionExit",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(" demo-minimal ") && l.contains(op)),
            "no {op} record: {log}"
        );
    }
}

#[test]
fn deploy_of_a_fixture_folder_boots_files_and_verifies() {
    let env = Real::new();
    env.add_reference();
    let dir = fixture("template-vertical_devops");
    let _q = qemu_lock();
    let o = env.ok(&["deploy", dir.to_str().unwrap(), "--timeout", LOADER_TIMEOUT]);
    assert!(
        o.stdout.contains("deployed partition demo-devops")
            && o.stdout.contains("[demo-devops] runtime: running `run`"),
        "{o:#?}"
    );
    // The script was linted, never run.
    assert!(!o.stderr.contains("not run"), "{o:#?}");
    let v = assert_filed_and_verified(&env, "demo-devops");
    assert!(v.contains("log 1 (demo-devops)"), "{v}");
    let status = env.ok(&["status"]).stdout;
    assert!(
        status.contains("partition demo-devops: exited")
            && status.contains(&format!(
                "witness log {}",
                env.witness("demo-devops.log").display()
            )),
        "{status}"
    );
    // JSON lines and an inclusion proof of a record, checked.
    let jsonl = env
        .ok(&["witness", "export", "--format", "jsonl", "demo-devops"])
        .stdout;
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["partition_name"], "demo-devops");
    assert_eq!(first["op"], "PartitionCreate");
    let proof = env.home().join("proof.txt");
    env.ok(&[
        "witness",
        "prove",
        "--seq",
        "3",
        "demo-devops",
        "--out",
        proof.to_str().unwrap(),
    ]);
    let ok = env.ok(&[
        "witness",
        "verify-proof",
        proof.to_str().unwrap(),
        "--log",
        "demo-devops",
    ]);
    assert!(ok.stdout.starts_with("OK: record 3 of log 1"), "{ok:#?}");
    // A proof whose record was changed does not verify.
    let text = std::fs::read_to_string(&proof).unwrap();
    let rec = text.lines().find(|l| l.starts_with("record ")).unwrap();
    let flipped = rec.replacen("record 01", "record 02", 1);
    std::fs::write(&proof, text.replace(rec, &flipped)).unwrap();
    let bad = env.loader(&["witness", "verify-proof", proof.to_str().unwrap()]);
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(bad.stderr.contains("the proof does not verify"), "{bad:#?}");
}

#[test]
fn three_tenants_from_three_templates_and_a_trapping_one_leaves_the_others_intact() {
    let env = Real::new();
    env.add_reference();
    let t = TempDir::new("trap");
    let trap_path = t.join("trap.wasm");
    std::fs::write(&trap_path, common::modules::trapping()).unwrap();
    env.ok(&[
        "deploy",
        fixture("template-minimal").to_str().unwrap(),
        "--no-boot",
    ]);
    env.ok(&[
        "deploy",
        fixture("template-vertical_coding").to_str().unwrap(),
        "--no-boot",
    ]);
    // The third tenant gets the hostile module instead of the reference agent.
    env.ok(&[
        "deploy",
        fixture("template-vertical_devops").to_str().unwrap(),
        "--wasm",
        trap_path.to_str().unwrap(),
        "--no-boot",
    ]);
    let _q = qemu_lock();
    // The two reference agents are linked; the hostile one is linked to
    // nobody.
    let o = env.ok(&[
        "up",
        "demo-minimal",
        "demo-coding",
        "demo-devops",
        "--link",
        "demo-minimal:demo-coding",
        "--timeout",
        LOADER_TIMEOUT,
    ]);
    // The hostile one trapped at run time ...
    assert!(
        o.stdout.contains("[demo-devops] runtime: agent trapped"),
        "{o:#?}"
    );
    // ... and the other two played their whole exchange and committed.
    for n in ["demo-minimal", "demo-coding"] {
        assert!(
            o.stdout.contains(&format!(
                "[{n}] reference: done: 8 pongs received, 8 pings answered, state committed"
            )),
            "{n}: {o:#?}"
        );
        assert!(
            o.stderr
                .contains(&format!("rvm-loader: {n} at the end of the run: exited")),
            "{o:#?}"
        );
    }
    // Each tenant has its own log file, each verifies, and each holds only
    // its own partition's records.
    for (id, n) in [(1, "demo-minimal"), (2, "demo-coding"), (3, "demo-devops")] {
        let v = assert_filed_and_verified(&env, n);
        assert!(v.contains(&format!("log {id} ({n})")), "{v}");
        let log = show(&env, n);
        let records: Vec<&str> = log.lines().skip(2).collect();
        assert!(!records.is_empty(), "{log}");
        assert!(
            records
                .iter()
                .all(|l| l.split_whitespace().nth(2) == Some(n)),
            "{n}'s log names another partition: {log}"
        );
    }
    // The fault is in the hostile tenant's log, not in the others'. A
    // kernel with the F1-F4 policy restarts it, rolls it back and fences
    // it, every step witnessed; a kernel without ends the partition.
    let devops = show(&env, "demo-devops");
    assert!(devops.lines().any(|l| l.contains(" Exit ")), "{devops}");
    if devops.contains(" Fault ") {
        for step in ["RecoverRestart", "RecoverFence"] {
            assert!(devops.contains(step), "no {step}: {devops}");
        }
        assert!(
            o.stderr.contains("rvm-loader: demo-devops: fault")
                && o.stderr
                    .contains("rvm-loader: demo-devops at the end of the run: fenced (F3)"),
            "{o:#?}"
        );
    } else {
        assert!(devops.contains("PartitionExit"), "{devops}");
    }
    for n in ["demo-minimal", "demo-coding"] {
        let log = show(&env, n);
        assert!(
            log.contains("StateCommit") && log.contains("ChannelSend"),
            "{log}"
        );
        assert!(
            !log.contains(" Fault ") && !log.contains("Recover"),
            "{log}"
        );
    }
    assert_filed_and_verified(&env, "hypervisor");
    // Everything at once, as `make run` does it.
    let all = env.ok(&["witness", "verify", "--require-signed"]).stdout;
    assert_eq!(all.matches("OK: records").count(), 4, "{all}");
}

#[test]
fn a_tampered_log_byte_is_named_by_witness_verify() {
    let env = Real::new();
    env.add_reference();
    let _q = qemu_lock();
    env.ok(&[
        "deploy",
        fixture("template-minimal").to_str().unwrap(),
        "--timeout",
        LOADER_TIMEOUT,
    ]);
    drop(_q);
    assert_filed_and_verified(&env, "demo-minimal");
    let log = env.witness("demo-minimal.log");
    let pristine = std::fs::read(&log).unwrap();
    let records = pristine.len() / 64;
    assert!(records > 8, "{records} records");
    let flip = |offset: usize| {
        let mut b = pristine.clone();
        b[offset] ^= 0x01;
        std::fs::write(&log, b).unwrap();
        env.loader(&["witness", "verify", "demo-minimal"])
    };

    // A record's seq field (bytes 8..16): that very record is named.
    let k = records / 2;
    let o = flip(k * 64 + 8);
    assert_eq!(o.code, 2, "{o:#?}");
    assert!(
        o.stdout.contains(&format!("first bad record: {k}\n")),
        "{o:#?}"
    );
    assert!(
        o.stderr.contains(&format!(
            "demo-minimal.log: does not verify; first bad record {k}"
        )),
        "{o:#?}"
    );

    // A byte of its timestamp: the chain breaks at the next record, whose
    // link no longer matches (the verifier says which two records it is
    // between).
    let o = flip(k * 64 + 20);
    assert_eq!(o.code, 2, "{o:#?}");
    assert!(
        o.stdout.contains(&format!(
            "FAILED at record {}: does not link to the record before it",
            k + 1
        )),
        "{o:#?}"
    );

    // The last record: caught by the signed checkpoint that covers it.
    let last = records - 1;
    let o = flip(last * 64 + 20);
    assert_eq!(o.code, 2, "{o:#?}");
    assert!(
        o.stdout.contains(&format!("first bad record: {last}\n")),
        "{o:#?}"
    );

    // Put back, it verifies again.
    std::fs::write(&log, &pristine).unwrap();
    assert_filed_and_verified(&env, "demo-minimal");
}

/// A tenant folder whose guest spins forever (only preemption stops it).
fn spinner_folder(env: &Real, dir: &Path) {
    let wasm = env.images.join("agents/spin.wasm");
    env.ok(&["guest", "add", "@rvm/spin@0.1.0", wasm.to_str().unwrap()]);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("rvm-partition.toml"),
        "[partition]\nname = \"spinner\"\nmemory_tier = \"Hot\"\ndeadline_urgency = 0.5\ncut_pressure = 0.3\n\n\
         [wasm_guest]\npackage = \"@rvm/spin\"\nversion = \"0.1.0\"\nlifecycle = \"managed\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("wasm-guest.json"),
        r#"{"schema": 1, "partition": "spinner",
            "guest": {"package": "@rvm/spin", "version": "0.1.0", "entrypoint": "spin.wasm"},
            "lifecycle": "managed", "proof_tier_default": "P2",
            "failure_class_recovery": {"F1": "restart-guest", "F2": "rollback-to-checkpoint",
                                       "F3": "partition-fence", "F4": "partition-evict"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("capability-table.json"),
        r#"[{"rights": ["READ"], "resource": "memory/spinner", "proof_tier": "P1", "expires_at": 0}]"#,
    )
    .unwrap();
}

#[test]
fn operator_orders_reach_a_running_instance_through_its_control_socket() {
    let env = Real::new();
    let dir = env.home().with_extension("spinner");
    spinner_folder(&env, &dir);
    env.ok(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    // Not running: nothing to deliver to.
    let idle = env.loader(&["partition", "evict", "spinner"]);
    assert_eq!(idle.code, 1, "{idle:#?}");
    assert!(idle.stderr.contains("spinner is not running"), "{idle:#?}");
    let _q = qemu_lock();
    let up = env.command(
        Path::new(env!("CARGO_BIN_EXE_rvm-loader")),
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["up", "spinner", "--timeout", LOADER_TIMEOUT],
    );
    std::thread::scope(|s| {
        let run = s.spawn(move || bounded(up, "rvm-loader up spinner"));
        // Wait for the instance's order socket (run/ also holds the boot's
        // bundle for a moment, and the control channel's socket).
        let run_dir = env.home().join("run");
        let start = Instant::now();
        let has_socket = |mut d: std::fs::ReadDir| {
            d.any(|e| {
                e.is_ok_and(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("loader-") && n.ends_with(".sock")
                })
            })
        };
        while !std::fs::read_dir(&run_dir).is_ok_and(has_socket) {
            assert!(start.elapsed() < DEADLINE, "no control socket appeared in {}", run_dir.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        let bad = env.loader(&["partition", "unfence", "../x"]);
        assert_eq!(bad.code, 2, "{bad:#?}");
        let unknown = env.loader(&["partition", "evict", "nobody"]);
        assert_eq!(unknown.code, 2, "{unknown:#?}");
        assert!(unknown.stderr.contains("no partition named nobody is registered"), "{unknown:#?}");
        // The hypervisor answers; it may take a moment to boot.
        let pointless = env.loader(&["partition", "unfence", "spinner"]);
        assert_eq!(pointless.code, 2, "{pointless:#?}");
        assert!(
            pointless.stderr.contains("refused: partition is not fenced (it is"),
            "{pointless:#?}"
        );
        let evict = env.ok(&["partition", "evict", "spinner"]);
        // Evicted at once, or when its CPU comes back (a guest on a CPU).
        assert!(evict.stdout.contains("evict 'spinner' done: "), "{evict:#?}");
        let o = run.join().unwrap();
        assert_eq!(o.code, 0, "{o:#?}");
        assert!(o.stderr.contains("spinner at the end of the run: evicted (F4)"), "{o:#?}");
    });
    assert!(
        std::fs::read_dir(env.home().join("run")).is_ok_and(|mut d| d.next().is_none()),
        "the control socket is removed when the run ends"
    );
    let shown = show(&env, "spinner");
    assert!(shown.contains("OperatorOrder") && shown.contains("OrderRefused"), "{shown}");
    assert_filed_and_verified(&env, "spinner");
}

// ---------------------------------------------------------------------
// issue 12, item 9: no default channels
// ---------------------------------------------------------------------

/// The two reference tenants of `examples/reference`, deployed.
fn reference_pair(env: &Real) {
    let wasm = env.images.join("agents/reference.wasm");
    env.ok(&[
        "guest",
        "add",
        "@rvm/reference-agent@0.1.0",
        wasm.to_str().unwrap(),
    ]);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/reference");
    for t in ["agent-a", "agent-b"] {
        env.ok(&["deploy", examples.join(t).to_str().unwrap(), "--no-boot"]);
    }
}

#[test]
fn item9_two_tenants_booted_together_without_a_link_cannot_message_each_other() {
    let env = Real::new();
    reference_pair(&env);
    let _q = qemu_lock();
    let o = env.ok(&["up", "agent-a", "agent-b", "--timeout", LOADER_TIMEOUT]);
    // Each reference agent looks for a peer channel and finds none.
    for n in ["agent-a", "agent-b"] {
        assert!(
            o.stdout
                .contains(&format!("[{n}] reference: no peer channel: running solo")),
            "{n} found a channel nobody linked: {o:#?}"
        );
        let log = show(&env, n);
        assert!(
            !log.contains("ChannelSend") && !log.contains("ChannelRecv") && !log.contains("ChannelWait"),
            "{n} messaged: {log}"
        );
        assert_filed_and_verified(&env, n);
    }
    assert!(!o.stdout.contains("pongs received"), "{o:#?}");
}

#[test]
fn a_linked_pair_that_waits_for_its_messages_replays_from_its_journal() {
    // The reference agents wait (`ChannelWait`) for each other's messages;
    // those calls are answered later, on the sender's CPU, and must be
    // journaled like any other for `witness replay` to reproduce the run.
    let env = Real::new();
    reference_pair(&env);
    let _q = qemu_lock();
    env.ok(&["up", "agent-a", "agent-b", "--link", "agent-a:agent-b", "--journal", "--timeout", LOADER_TIMEOUT]);
    for n in ["agent-a", "agent-b"] {
        let log = show(&env, n);
        assert!(log.contains("ChannelWait"), "{n} waited for its messages: {log}");
        let o = env.ok(&["witness", "replay", n]);
        assert!(o.stdout.contains("every call reproduced"), "{n}: {o:#?}");
    }
}

// ---------------------------------------------------------------------
// issue 14, item 1: a long-lived instance
// ---------------------------------------------------------------------

/// Kills the instance's background loader (and so its QEMU) if a test
/// leaves it running.
struct InstanceGuard(PathBuf);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        let lock = self.0.join("instance").join("instance.json");
        if let Some(pid) = std::fs::read_to_string(lock)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["pid"].as_u64())
        {
            // Its own session: the whole group goes.
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }
}

#[test]
fn an_instance_runs_on_after_its_partitions_finish_until_it_is_stopped() {
    let env = Real::new();
    reference_pair(&env);
    let _q = qemu_lock();
    let _guard = InstanceGuard(env.home().to_path_buf());
    let idle = env.loader(&["instance", "stop"]);
    assert_eq!(idle.code, 1, "nothing to stop: {idle:#?}");
    let started = env.ok(&["instance", "start", "agent-a", "agent-b", "--link", "agent-a:agent-b"]);
    assert!(started.stdout.contains("instance started: loader pid "), "{started:#?}");
    // A second instance of the same RVM_HOME is refused, naming the first.
    let again = env.loader(&["instance", "start"]);
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.stderr.contains("an instance is already running in this RVM_HOME"), "{again:#?}");
    // Both agents finish their exchange; the instance runs on.
    let start = Instant::now();
    let status = loop {
        let s = env.ok(&["instance", "status", "--json"]).stdout;
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["running"], true, "{s}");
        if v["partitions"].as_array().unwrap().iter().all(|p| p["state"] == "exited") {
            break v;
        }
        assert!(start.elapsed() < DEADLINE, "the agents did not finish: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status["partitions"].as_array().unwrap().iter().all(|p| p["records"].as_u64() > Some(0)), "{status}");
    std::thread::sleep(Duration::from_millis(500));
    let text = env.ok(&["instance", "status"]).stdout;
    assert!(text.contains("instance running: loader pid") && text.contains("agent-a: exited"), "{text}");
    let stopped = env.ok(&["instance", "stop"]);
    assert!(stopped.stdout.contains("shutdown 'hypervisor' done: stopping the run"), "{stopped:#?}");
    assert!(stopped.stdout.contains("instance stopped: hypervisor exited normally"), "{stopped:#?}");
    assert_eq!(env.ok(&["instance", "status"]).stdout.trim(), format!("no instance running in {}", env.home().display()));
    for n in ["agent-a", "agent-b", "hypervisor"] {
        assert_filed_and_verified(&env, n);
    }
    // The shutdown order is in the hypervisor's log.
    assert!(show(&env, "hypervisor").contains("OperatorOrder"));
    assert!(std::fs::read_dir(env.home().join("run")).is_ok_and(|mut d| d.next().is_none()), "sockets removed");
}

/// Wait until `instance status --json` shows `name` in one of `states`.
fn wait_for_state(env: &Real, name: &str, states: &[&str]) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = env.ok(&["instance", "status", "--json"]).stdout;
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let state = v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["state"].as_str().unwrap_or("").to_string());
        if state.as_deref().is_some_and(|s| states.contains(&s)) {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "{name} never reached {states:?}: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn tenants_join_a_running_instance_with_their_unmodified_install_scripts_and_leave_it() {
    let env = Real::new();
    env.add_reference();
    let _q = qemu_lock();
    let _guard = InstanceGuard(env.home().to_path_buf());
    // Nothing deployed yet: the instance starts empty.
    let started = env.ok(&["instance", "start"]);
    assert!(started.stdout.contains("instance started: loader pid "), "{started:#?}");
    // Three tenants, one after another, each with the adapter's script as
    // it was emitted: its `guest boot` admits the tenant into the instance.
    for (case, name) in [
        ("template-minimal", "demo-minimal"),
        ("template-vertical_coding", "demo-coding"),
    ] {
        let dir = fixture(case);
        let c = env.command(Path::new("bash"), &dir, &[dir.join("install-rvm.sh").to_str().unwrap()]);
        let o = bounded(c, "install-rvm.sh");
        assert_eq!(o.code, 0, "{o:#?}");
        assert!(
            o.stdout.contains(&format!("done: admitted {name} as partition ")),
            "{name} was not admitted: {o:#?}"
        );
        wait_for_state(&env, name, &["running", "exited"]);
    }
    let status = wait_for_state(&env, "demo-minimal", &["exited"]);
    assert_eq!(status["running"], true, "{status}");
    // What the hypervisor itself says, live.
    let live = &status["live"];
    assert!(live["cpus"].as_u64() >= Some(1) && live["heap_kib"].as_u64() > Some(0), "{status}");
    let coding = live["partitions"].as_array().unwrap().iter().find(|p| p["name"] == "demo-coding").cloned();
    assert!(coding.as_ref().is_some_and(|p| p["id"] == 2 && p["records"].as_u64() > Some(0)), "{status}");
    let coding = coding.unwrap();
    assert!(coding["log_head"].as_str().is_some_and(|h| h.len() == 16) && coding["agents"] == 1 && coding["keeping_state"] == false, "{status}");
    let text = env.ok(&["instance", "status"]).stdout;
    assert!(text.contains("the hypervisor says: ") && text.contains("partition 2, "), "{text}");
    // The same tenant again is refused: it is in the instance already.
    let again = env.loader(&["guest", "boot", "--partition", "demo-minimal", "--wasm-ref", fixture("template-minimal").join("wasm-guest.json").to_str().unwrap()]);
    assert_eq!(again.code, 2, "{again:#?}");
    // A one-shot run would fight the instance over its files.
    let up = env.loader(&["up", "demo-coding"]);
    assert_eq!(up.code, 2, "{up:#?}");
    // One leaves, another joins (by `deploy` this time).
    let evicted = env.ok(&["partition", "evict", "demo-minimal"]);
    assert!(evicted.stdout.contains("evict 'demo-minimal' done"), "{evicted:#?}");
    let deployed = env.ok(&["deploy", fixture("template-vertical_devops").to_str().unwrap()]);
    assert!(deployed.stdout.contains("done: admitted demo-devops as partition 3"), "{deployed:#?}");
    wait_for_state(&env, "demo-devops", &["running", "exited"]);
    wait_for_state(&env, "demo-minimal", &["evicted (F4)"]);
    let stopped = env.ok(&["instance", "stop"]);
    assert!(stopped.stdout.contains("instance stopped: hypervisor exited normally"), "{stopped:#?}");
    for n in ["demo-minimal", "demo-coding", "demo-devops", "hypervisor"] {
        assert_filed_and_verified(&env, n);
    }
    // Each admission is in the hypervisor's log; each tenant's log starts
    // with its creation.
    let hv = show(&env, "hypervisor");
    // 3 admissions, the shutdown, and the status orders `instance status` gave.
    assert!(hv.lines().filter(|l| l.contains("OperatorOrder")).count() >= 4, "{hv}");
    assert!(show(&env, "demo-minimal").contains("OperatorOrder"), "the eviction is in its target's log");
    for n in ["demo-minimal", "demo-coding", "demo-devops"] {
        let log = show(&env, n);
        assert!(log.lines().find(|l| l.contains(&format!(" {n} "))).is_some_and(|l| l.contains("PartitionCreate")), "{n}: {log}");
    }

    // The instance starts again: those that stayed boot again under their
    // ids (the evicted one's stays vacant), and every log goes on.
    let records = |n: &str| std::fs::metadata(env.witness(&format!("{n}.log"))).unwrap().len() / 64;
    let before: Vec<u64> = ["demo-coding", "demo-devops", "hypervisor", "demo-minimal"].iter().map(|n| records(n)).collect();
    // Each tenant's agent counted its run in its committed state.
    for n in ["demo-minimal", "demo-coding", "demo-devops"] {
        assert_eq!(solo_runs(&env, n), 1, "{n}");
    }
    let again = env.ok(&["instance", "start"]);
    assert!(again.stdout.contains("continuing the last instance: demo-coding, demo-devops (3 logs go on)"), "{again:#?}");
    wait_for_state(&env, "demo-coding", &["exited"]);
    wait_for_state(&env, "demo-devops", &["exited"]);
    env.ok(&["instance", "stop"]);
    // Every committed item is back: the count went on from it.
    for n in ["demo-coding", "demo-devops"] {
        assert_eq!(solo_runs(&env, n), 2, "{n}");
    }
    assert_eq!(solo_runs(&env, "demo-minimal"), 1, "the evicted tenant's state is left as it was");
    let after: Vec<u64> = ["demo-coding", "demo-devops", "hypervisor", "demo-minimal"].iter().map(|n| records(n)).collect();
    for (i, n) in ["demo-coding", "demo-devops", "hypervisor"].iter().enumerate() {
        assert!(after[i] > before[i], "{n}: {} records, {} before the restart", after[i], before[i]);
        let verified = assert_filed_and_verified(&env, n);
        assert!(verified.contains(&format!("{} records", after[i])), "{n}: the whole history verifies: {verified}");
    }
    assert_eq!(after[3], before[3], "the evicted tenant's log is left as it was");
    let log = show(&env, "demo-devops");
    assert_eq!(log.lines().filter(|l| l.contains("PartitionCreate")).count(), 2, "one creation per boot, one log: {log}");
    assert!(!env.witness("archive").join("demo-coding.1.log").exists(), "a continued log is not archived");
    // Someone who can change files under RVM_HOME, without the operator's
    // keys, cannot roll the instance back: each of these refuses the start.
    let refuses = |what: &str, needle: &str| {
        let o = env.loader(&["instance", "start"]);
        assert_eq!(o.code, 2, "{what}: {o:#?}");
        assert!(o.stderr.contains(needle), "{what}: {o:#?}");
        assert!(crate_instance_not_running(&env), "{what}: nothing started");
    };
    let keep = |p: &Path| (p.to_path_buf(), std::fs::read(p).unwrap());
    let put_back = |(p, b): &(PathBuf, Vec<u8>)| std::fs::write(p, b).unwrap();
    // The last checkpoint of a log removed (an older copy put back).
    let cps = keep(&env.witness("demo-coding.checkpoints"));
    let text = String::from_utf8(cps.1.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&cps.0, format!("{}\n", lines[..lines.len() - 6].join("\n"))).unwrap();
    refuses("a checkpoint removed", "rolled back");
    put_back(&cps);
    // A log removed.
    let hv_log = keep(&env.witness("hypervisor.log"));
    std::fs::remove_file(&hv_log.0).unwrap();
    refuses("the hypervisor's log removed", "is missing");
    put_back(&hv_log);
    // The roster changed, or removed.
    let roster = keep(&env.home().join("instance/roster.json"));
    std::fs::write(&roster.0, String::from_utf8(roster.1.clone()).unwrap().replace("\"left\": true", "\"left\": false")).unwrap();
    refuses("the roster changed", "does not verify under this RVM_HOME's operator key");
    std::fs::remove_file(&roster.0).unwrap();
    refuses("the roster removed", "is missing");
    put_back(&roster);
    // A changed record: the next start is refused, naming the file; with
    // --fresh it starts anew and the old logs go to the archive.
    let path = env.witness("demo-coding.log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[64 * 3 + 30] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let refused = env.loader(&["instance", "start"]);
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(refused.stderr.contains("demo-coding.log") && refused.stderr.contains("cannot continue"), "{refused:#?}");
    assert!(crate_instance_not_running(&env), "nothing started");
    let fresh = env.ok(&["instance", "start", "--fresh", "demo-devops"]);
    assert!(!fresh.stdout.contains("continuing"), "{fresh:#?}");
    wait_for_state(&env, "demo-devops", &["exited"]);
    // Removed while it is in the instance: evicted there first.
    let removed = env.ok(&["partition", "remove", "demo-devops"]);
    assert!(removed.stdout.contains("evict 'demo-devops' done") && removed.stdout.contains("partition demo-devops removed"), "{removed:#?}");
    wait_for_state(&env, "demo-devops", &["evicted (F4)"]);
    env.ok(&["instance", "stop"]);
    assert!(env.witness("archive").join("demo-devops.1.log").exists(), "the earlier log went to the archive");
    assert_filed_and_verified(&env, "demo-devops");
}

/// The solo runs `name`'s reference agent counted in its committed state,
/// read from the durable copy by `state show` (which checks it against the
/// log).
fn solo_runs(env: &Real, name: &str) -> u32 {
    let o = env.ok(&["state", "show", name, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["checked"], true, "{v}");
    let item = v["items"].as_array().unwrap().iter().find(|i| i["key"] == "reference/solo-runs").cloned();
    let hex = item.unwrap_or_else(|| panic!("no solo-runs item: {v}"))["value_hex"].as_str().unwrap().to_string();
    let mut b = [0u8; 4];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    u32::from_le_bytes(b)
}

/// The pid of the QEMU the instance's loader runs.
fn instance_qemu(env: &Real) -> u32 {
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.home().join("instance/instance.json")).unwrap()).unwrap();
    let loader = lock["pid"].as_u64().unwrap().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let ppid = stat[close + 2..].split(' ').nth(1).unwrap_or("");
        if ppid == loader && comm.starts_with("qemu") {
            return e.file_name().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("the instance's loader {loader} runs no QEMU");
}

#[test]
fn committed_state_survives_a_stop_and_a_killed_machine_and_a_changed_copy_is_refused() {
    let env = Real::new();
    env.add_reference();
    let _q = qemu_lock();
    let _guard = InstanceGuard(env.home().to_path_buf());
    env.ok(&["instance", "start", "--journal"]);
    // Admitted with its unmodified script; its agent counts its solo runs
    // in its committed state, which the host keeps before the agent sees
    // its commit succeed.
    let dir = fixture("template-minimal");
    let o = bounded(env.command(Path::new("bash"), &dir, &[dir.join("install-rvm.sh").to_str().unwrap()]), "install-rvm.sh");
    assert_eq!(o.code, 0, "{o:#?}");
    wait_for_state(&env, "demo-minimal", &["exited"]);
    assert_eq!(solo_runs(&env, "demo-minimal"), 1);
    let text = env.ok(&["state", "show", "demo-minimal"]).stdout;
    assert!(text.starts_with("committed state of demo-minimal as of record ") && text.contains("reference/solo-runs  0x01000000"), "{text}");
    // A clean stop; the run replays on the host, its kept set included.
    env.ok(&["instance", "stop"]);
    let replayed = env.ok(&["witness", "replay", "demo-minimal"]);
    assert!(replayed.stdout.contains("every call reproduced"), "{replayed:#?}");
    // A start: the count goes on from the kept state.
    env.ok(&["instance", "start"]);
    wait_for_state(&env, "demo-minimal", &["exited"]);
    assert_eq!(solo_runs(&env, "demo-minimal"), 2, "the restored state was the starting point");
    // The machine killed outright: nothing the agent saw committed is lost.
    let qemu = instance_qemu(&env);
    let _ = std::process::Command::new("kill").args(["-KILL", &qemu.to_string()]).status();
    let start = Instant::now();
    while !crate_instance_not_running(&env) {
        assert!(start.elapsed() < DEADLINE, "the loader did not notice its QEMU died");
        std::thread::sleep(Duration::from_millis(200));
    }
    env.ok(&["instance", "start"]);
    wait_for_state(&env, "demo-minimal", &["exited"]);
    assert_eq!(solo_runs(&env, "demo-minimal"), 3);
    env.ok(&["instance", "stop"]);
    for n in ["demo-minimal", "hypervisor"] {
        assert_filed_and_verified(&env, n);
    }
    // The kept copy changed by hand: `state show` names it, and the next
    // start sends it as it is, for the hypervisor to refuse (and witness)
    // while the instance starts.
    let file = env.home().join("state/demo-minimal/committed.json");
    let kept = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, kept.replace("\"03000000\"", "\"63000000\"")).unwrap();
    let shown = env.loader(&["state", "show", "demo-minimal"]);
    assert_eq!(shown.code, 2, "{shown:#?}");
    assert!(shown.stderr.contains("committed.json") && shown.stderr.contains("the file was changed"), "{shown:#?}");
    let started = env.ok(&["instance", "start"]);
    assert!(started.stderr.contains("committed.json") && started.stderr.contains("the hypervisor will refuse demo-minimal"), "{started:#?}");
    let start = Instant::now();
    while !show(&env, "hypervisor").contains("PartitionRefused") {
        assert!(start.elapsed() < DEADLINE, "the refusal was not witnessed: {}", show(&env, "hypervisor"));
        std::thread::sleep(Duration::from_millis(300));
    }
    env.ok(&["instance", "stop"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), kept.replace("\"03000000\"", "\"63000000\""), "the refused copy is left as it is");
}

fn crate_instance_not_running(env: &Real) -> bool {
    env.ok(&["instance", "status"]).stdout.starts_with("no instance running")
}

#[test]
fn coherence_turned_on_from_the_command_line_merges_two_chatty_tenants() {
    let env = Real::new();
    let chatter = env.images.join("agents/chatter.wasm");
    for case in ["template-minimal", "template-vertical_coding"] {
        env.ok(&["deploy", fixture(case).to_str().unwrap(), "--wasm", chatter.to_str().unwrap(), "--no-boot"]);
    }
    let _q = qemu_lock();
    let up = env.ok(&[
        "up",
        "demo-minimal",
        "demo-coding",
        "--link",
        "demo-minimal:demo-coding",
        "--coherence",
        "--timeout",
        LOADER_TIMEOUT,
    ]);
    let logs = format!("{}{}", show(&env, "demo-minimal"), show(&env, "demo-coding"));
    assert!(logs.contains("MergeDecided") && logs.contains("Merge "), "no merge witnessed: {up:#?}\n{logs}");
    let status = env.ok(&["status"]).stdout;
    assert!(status.contains("last cut decision: merge"), "{status}");
    for n in ["demo-minimal", "demo-coding", "hypervisor"] {
        assert_filed_and_verified(&env, n);
    }
}

// ---------------------------------------------------------------------
// The soak (`make soak`; not in CI)
// ---------------------------------------------------------------------

/// A number from the environment, or `default`.
fn soak_setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The count `name`'s counter agent committed last, from its kept file
/// (read directly: cheap enough to poll; `state show` checks it at the end).
fn kept_count(env: &Real, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(env.home().join("state").join(name).join("committed.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let hex = v["items"].as_array()?.iter().find(|i| i["key"] == "636f756e7465722f7475726e73")?["value"].as_str()?.to_string();
    let mut b = [0u8; 8];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(u64::from_le_bytes(b))
}

/// A harness folder like the adapter's `template-minimal`, for partition `name`.
fn soak_harness(root: &Path, name: &str) -> PathBuf {
    let from = fixture("template-minimal");
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["rvm-partition.toml", "capability-table.json", "wasm-guest.json", "install-rvm.sh"] {
        let text = std::fs::read_to_string(from.join(f)).unwrap().replace("demo-minimal", name);
        std::fs::write(dir.join(f), text).unwrap();
    }
    dir
}

/// An instance with RVM_SOAK_TENANTS tenants (16) running the counter agent
/// (one commit per turn) up to RVM_SOAK_TURNS turns each (10 000), admitted
/// one by one; every RVM_SOAK_EVERY turns (300) of the slowest tenant one of:
/// a clean restart, an eviction and a new tenant admitted in its place, the
/// machine killed (SIGKILL to QEMU) and the instance started again. Checked
/// throughout: no kept count ever goes back, and a restarted agent goes on
/// from at least the count kept before. At the end: every tenant that stayed
/// reached its target, every log verifies, every kept state checks against
/// its log. Prints its figures.
#[test]
#[ignore = "the soak: `make soak`"]
fn soak_an_instance_with_tenants_that_commit_every_turn_through_restarts_evictions_and_kills() {
    let tenants = soak_setting("RVM_SOAK_TENANTS", 16) as usize;
    let turns = soak_setting("RVM_SOAK_TURNS", 10_000).min(u64::from(u16::MAX));
    let every = soak_setting("RVM_SOAK_EVERY", 300).max(1);
    let env = Real::new();
    let _q = qemu_lock();
    let _guard = InstanceGuard(env.home().to_path_buf());
    let began = Instant::now();
    // The counter agent, its target patched in.
    let mut wasm = std::fs::read(env.images.join("agents/counter.wasm")).unwrap();
    let at = wasm.windows(16).position(|w| w == b"RVM-COUNTER-PLN1").expect("plan marker in the counter module") + 16;
    wasm[at..at + 2].copy_from_slice(&(turns as u16).to_le_bytes());
    let work = TempDir::new("soak");
    let module = work.join("counter.wasm");
    std::fs::write(&module, &wasm).unwrap();
    let module = module.to_str().unwrap().to_string();
    let admit = |name: &str| {
        let dir = soak_harness(work.path(), name);
        let t = Instant::now();
        let o = env.ok(&["deploy", dir.to_str().unwrap(), "--wasm", &module]);
        assert!(o.stdout.contains(&format!("done: admitted {name} as partition ")), "{o:#?}");
        t.elapsed()
    };
    env.ok(&["instance", "start"]);
    let mut running: Vec<String> = Vec::new();
    let mut admissions = Vec::new();
    for i in 0..tenants {
        let name = format!("soak-{i:02}");
        admissions.push(admit(&name));
        running.push(name);
    }
    let mut evicted: Vec<(String, u64)> = Vec::new();
    let mut last: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut restarts, mut kills, mut evictions) = (0u32, 0u32, 0u32);
    let mut restart_times = Vec::new();
    let mut next_event = every;
    let mut event = 0u32;
    let mut fresh = tenants;
    // Every kept count, polled: none goes back.
    let poll = |running: &[String], last: &mut std::collections::BTreeMap<String, u64>| -> u64 {
        let mut slowest = u64::MAX;
        for n in running {
            let c = kept_count(&env, n).unwrap_or(0);
            let before = last.get(n).copied().unwrap_or(0);
            assert!(c >= before, "{n}: its kept count went back from {before} to {c}");
            last.insert(n.clone(), c);
            slowest = slowest.min(c);
        }
        slowest
    };
    loop {
        let slowest = poll(&running, &mut last);
        if slowest >= turns {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(4 * 3600), "the soak ran over four hours: {last:?}");
        if slowest < next_event {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        next_event = slowest + every;
        let before = last.clone();
        let t = Instant::now();
        match event % 3 {
            0 => {
                env.ok(&["instance", "stop"]);
                env.ok(&["instance", "start"]);
                restarts += 1;
            }
            1 if slowest + 2 * every < turns => {
                // The tenant furthest ahead leaves; a new one comes.
                let (at, _) = running.iter().enumerate().max_by_key(|(_, n)| last[*n]).unwrap();
                let gone = running.remove(at);
                env.ok(&["partition", "evict", &gone]);
                // Kept as of now: at most the one commit in flight when the
                // order came may still be kept after it.
                let kept = kept_count(&env, &gone).unwrap_or(0);
                assert!(kept >= last[&gone], "{gone}: its kept count went back at its eviction");
                evicted.push((gone.clone(), kept));
                let name = format!("soak-{fresh:02}");
                fresh += 1;
                admissions.push(admit(&name));
                running.push(name);
                evictions += 1;
            }
            _ => {
                let qemu = instance_qemu(&env);
                let _ = Command::new("kill").args(["-KILL", &qemu.to_string()]).status();
                let t = Instant::now();
                while !crate_instance_not_running(&env) {
                    assert!(t.elapsed() < DEADLINE, "the loader did not notice its QEMU died");
                    std::thread::sleep(Duration::from_millis(200));
                }
                env.ok(&["instance", "start"]);
                kills += 1;
            }
        }
        restart_times.push(t.elapsed());
        event += 1;
        // What was kept before stays kept.
        for (n, c) in &before {
            if let Some(now) = kept_count(&env, n) {
                assert!(now >= *c, "{n}: kept {c} before event {event}, {now} after");
            }
        }
        eprintln!(
            "soak: {:>5} s: event {event} done in {:.1} s; slowest tenant at {slowest} of {turns}",
            began.elapsed().as_secs(),
            t.elapsed().as_secs_f64()
        );
    }
    let ran = began.elapsed();
    env.ok(&["instance", "stop"]);
    // Every log verifies, every kept state checks against its log.
    let verify_start = Instant::now();
    let mut records = 0u64;
    for n in running.iter().chain(evicted.iter().map(|(n, _)| n)).map(String::as_str).chain(["hypervisor"]) {
        assert_filed_and_verified(&env, n);
        records += std::fs::metadata(env.witness(&format!("{n}.log"))).unwrap().len() / 64;
    }
    for n in &running {
        let o = env.ok(&["state", "show", n, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["checked"], true);
        assert_eq!(kept_count(&env, n), Some(turns), "{n}");
    }
    for (n, c) in &evicted {
        let now = kept_count(&env, n).unwrap_or(0);
        assert!(now == *c || now == *c + 1, "{n}: an evicted tenant's state is left as it was ({c} at its eviction, {now} now)");
    }
    let verify = verify_start.elapsed();
    let commits: u64 = running.iter().chain(evicted.iter().map(|(n, _)| n)).filter_map(|n| kept_count(&env, n)).sum();
    let mean = |d: &[Duration]| d.iter().map(Duration::as_secs_f64).sum::<f64>() / d.len().max(1) as f64;
    let console = std::fs::read(env.home().join("instance/console.log")).map(|b| b.len()).unwrap_or(0);
    println!("soak figures:");
    println!("  tenants: {tenants} at a time, {} in all; {turns} turns each (one commit per turn)", running.len() + evicted.len());
    println!("  commits kept: {commits} in {:.0} s ({:.1} commits/s)", ran.as_secs_f64(), commits as f64 / ran.as_secs_f64());
    println!(
        "  events: {restarts} clean restarts, {kills} machines killed, {evictions} evictions with an admission; {:.1} s each on average",
        mean(&restart_times)
    );
    println!("  admissions: {} at {:.2} s each on average", admissions.len(), mean(&admissions));
    println!("  witness records filed: {records}; every log verified, every kept state checked, in {:.1} s", verify.as_secs_f64());
    println!("  last instance's console: {console} bytes");
}

// ---------------------------------------------------------------------
// issue 15, items 1 and 2: tool calls under the partition's claims
// ---------------------------------------------------------------------

/// A tenant folder for the toolbox agent, whose claims are `Bash(echo *)`
/// and `mcp__demo__*`.
fn toolbox_folder(env: &Real, dir: &Path) {
    let wasm = env.images.join("agents/toolbox.wasm");
    env.ok(&["guest", "add", "@rvm/toolbox@0.1.0", wasm.to_str().unwrap()]);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("rvm-partition.toml"),
        "[partition]\nname = \"toolbox\"\nmemory_tier = \"Hot\"\ndeadline_urgency = 0.5\ncut_pressure = 0.3\n\n\
         [wasm_guest]\npackage = \"@rvm/toolbox\"\nversion = \"0.1.0\"\nlifecycle = \"managed\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("wasm-guest.json"),
        r#"{"schema": 1, "partition": "toolbox",
            "guest": {"package": "@rvm/toolbox", "version": "0.1.0", "entrypoint": "toolbox.wasm"},
            "lifecycle": "managed", "proof_tier_default": "P2",
            "failure_class_recovery": {"F1": "restart-guest", "F2": "rollback-to-checkpoint",
                                       "F3": "partition-fence", "F4": "partition-evict"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("capability-table.json"),
        r#"[{"rights": ["EXECUTE"], "resource": "Bash(echo *)", "proof_tier": "P2", "expires_at": 0},
            {"rights": ["EXECUTE"], "resource": "mcp__demo__*", "proof_tier": "P2", "expires_at": 0},
            {"rights": ["READ"], "resource": "memory/toolbox", "proof_tier": "P1", "expires_at": 0}]"#,
    )
    .unwrap();
}

#[test]
fn tool_calls_run_on_the_host_under_the_partition_s_claims_and_replay_from_the_journal() {
    let env = Real::new();
    let dir = env.home().with_extension("toolbox");
    toolbox_folder(&env, &dir);
    env.ok(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    // Its MCP server, with a timeout shorter than the agent's slow call.
    env.ok(&["tool", "add", "toolbox", "mcp", "demo", "--timeout", "1", "--", env!("CARGO_BIN_EXE_rvm-mcp-demo")]);
    // Its commands are served once the operator says how they run.
    env.ok(&["tool", "set", "toolbox", "--timeout", "10"]);
    let _q = qemu_lock();
    let started = Instant::now();
    let o = env.ok(&["up", "toolbox", "--journal", "--timeout", LOADER_TIMEOUT]);
    let line = |label: &str| -> String {
        let prefix = format!("[toolbox] toolbox: {label} ");
        o.stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no `{label}` line: {o:#?}")).to_string()
    };
    // Allowed: run on the host, answered.
    assert!(line("echo").contains(r#"\"stdout\":\"hello-from-rvm\n"#) || line("echo").contains("hello-from-rvm"), "{}", line("echo"));
    assert!(line("echo").contains(" ok "), "{}", line("echo"));
    // The injection attempt ran as one program with inert arguments.
    let inject = line("inject");
    assert!(inject.contains(" ok ") && inject.contains("a; rm -rf / $(id) `id` |cat"), "{inject}");
    // Refused by the hypervisor: never reached the host.
    for label in ["dotdot", "newline", "denied", "mcp-denied"] {
        assert!(line(label).ends_with(" err NoRights"), "{}", line(label));
    }
    // The MCP server answered, and the slow call timed out at its limit.
    assert!(line("mcp").contains(" ok ") && line("mcp").contains("hi from toolbox"), "{}", line("mcp"));
    assert!(line("mcp-add").contains(" ok ") && line("mcp-add").contains("42"), "{}", line("mcp-add"));
    assert!(line("slow").ends_with(" err TimedOut"), "{}", line("slow"));
    assert!(o.stdout.contains("[toolbox] toolbox: done"), "{o:#?}");
    assert!(started.elapsed() < Duration::from_secs(50), "the slow call held the run for its whole 4 s and more");
    // Every call is witnessed: 9 calls and 5 answers (those the host ran).
    let log = show(&env, "toolbox");
    assert_eq!(log.matches("ToolCall").count(), 14, "{log}");
    assert_filed_and_verified(&env, "toolbox");
    // The replay re-executes the agent from the journal, tools and all
    // (no tool runs: the journal holds their responses).
    let r = env.ok(&["witness", "replay", "toolbox"]);
    assert!(r.stdout.contains("every call reproduced"), "{r:#?}");
    // No server is left running.
    let ps = Command::new("pgrep").args(["-f", env!("CARGO_BIN_EXE_rvm-mcp-demo")]).output().unwrap();
    assert!(ps.stdout.is_empty(), "an MCP server outlived the run: {}", String::from_utf8_lossy(&ps.stdout));

    // A running instance serves them too, and keeps what the agent
    // committed of a tool's answer.
    let _guard = InstanceGuard(env.home().to_path_buf());
    env.ok(&["instance", "start"]);
    wait_for_state(&env, "toolbox", &["exited"]);
    let stopped = env.ok(&["instance", "stop"]);
    assert!(stopped.stdout.contains("instance stopped: hypervisor exited normally"), "{stopped:#?}");
    assert_eq!(show(&env, "toolbox").matches("ToolCall").count(), 14, "the instance's log (the one-shot run's was archived)");
    assert_filed_and_verified(&env, "toolbox");
    let kept = env.ok(&["state", "show", "toolbox"]);
    assert!(kept.stdout.contains("toolbox/echo") && kept.stdout.contains("hello-from-rvm"), "{kept:#?}");
}

// ---------------------------------------------------------------------
// issue 15, item 4: ordinary WASI programs as guests
// ---------------------------------------------------------------------

#[test]
fn an_ordinary_rust_wasi_program_runs_unmodified_and_replays() {
    let env = Real::new();
    let wasm = env.images.join("agents/wasi-hello.wasm");
    env.ok(&["guest", "add", "@rvm/wasi-hello@0.1.0", wasm.to_str().unwrap()]);
    let dir = env.home().with_extension("wasi");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rvm-partition.toml"),
        "[partition]\nname = \"wasi-hello\"\nmemory_tier = \"Hot\"\ndeadline_urgency = 0.5\ncut_pressure = 0.3\n\n\
         [wasm_guest]\npackage = \"@rvm/wasi-hello\"\nversion = \"0.1.0\"\nlifecycle = \"managed\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("wasm-guest.json"),
        r#"{"schema": 1, "partition": "wasi-hello",
            "guest": {"package": "@rvm/wasi-hello", "version": "0.1.0", "entrypoint": "wasi-hello.wasm"},
            "lifecycle": "managed", "proof_tier_default": "P2",
            "failure_class_recovery": {"F1": "restart-guest", "F2": "rollback-to-checkpoint",
                                       "F3": "partition-fence", "F4": "partition-evict"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("capability-table.json"),
        r#"[{"rights": ["READ"], "resource": "memory/wasi-hello", "proof_tier": "P1", "expires_at": 0}]"#,
    )
    .unwrap();
    env.ok(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    let _q = qemu_lock();
    let o = env.ok(&["up", "wasi-hello", "--journal", "--timeout", LOADER_TIMEOUT]);
    for line in [
        "[wasi-hello] wasi-hello: args [\"wasi-hello\"]",
        "[wasi-hello] wasi-hello: 0 environment variables",
        "[wasi-hello] wasi-hello: standard input gave Ok(0) bytes",
        "[wasi-hello] wasi-hello: counted [(\"brown\", 1), (\"dog\", 1), (\"end\", 1), (\"fox\", 1), (\"jumps\", 1), (\"lazy\", 1), (\"over\", 1), (\"quick\", 1), (\"the\", 3)]",
        "[wasi-hello] wasi-hello: a line on standard error",
    ] {
        assert!(o.stdout.lines().any(|l| l == line), "no line {line:?}: {o:#?}");
    }
    assert!(o.stdout.contains("[wasi-hello] wasi-hello: done after "), "{o:#?}");
    assert!(o.stdout.contains("'wasi-hello' exited: code 0x0"), "{o:#?}");
    let log = show(&env, "wasi-hello");
    assert!(log.contains("ConsoleWrite") && log.contains("ClockRead"), "{log}");
    assert_filed_and_verified(&env, "wasi-hello");
    let r = env.ok(&["witness", "replay", "wasi-hello"]);
    assert!(r.stdout.contains("every call reproduced"), "{r:#?}");

    // A WASI program that needs what RVM does not provide is refused at
    // deploy, every missing function named.
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // type 0: (i32 × 9) -> i32; imports path_open and sock_accept of it.
    let ty = [&[0x60, 9][..], &[0x7f; 9], &[1, 0x7f]].concat();
    let section = |id: u8, body: &[u8]| [&[id, body.len() as u8][..], body].concat();
    module.extend(section(1, &[&[1][..], &ty].concat()));
    let import = |name: &str| [&[22][..], b"wasi_snapshot_preview1", &[name.len() as u8], name.as_bytes(), &[0, 0]].concat();
    module.extend(section(2, &[&[2][..], &import("path_open"), &import("sock_accept")].concat()));
    let bad = dir.join("needs-files.wasm");
    std::fs::write(&bad, &module).unwrap();
    let refused = env.loader(&["guest", "add", "@rvm/needs-files@0.1.0", bad.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(
        refused.stderr.contains("path_open") && refused.stderr.contains("sock_accept") && refused.stderr.contains("a WASI function RVM does not provide"),
        "{refused:#?}"
    );
}

// ---------------------------------------------------------------------
// issue 15, item 5: the example tenant whose agent does real work
// ---------------------------------------------------------------------

#[test]
fn the_researcher_example_runs_its_install_script_and_keeps_what_its_tools_told_it() {
    let env = Real::new();
    let wasm = env.images.join("agents/researcher.wasm");
    env.ok(&["guest", "add", "@rvm/researcher@0.1.0", wasm.to_str().unwrap()]);
    // The runbook finds the demo server beside rvm-loader.
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rvm-mcp-demo"), env.bin.join("rvm-mcp-demo")).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/researcher");
    let _q = qemu_lock();
    let c = env.command(Path::new("bash"), &dir, &[dir.join("install-rvm.sh").to_str().unwrap()]);
    let o = bounded(c, "install-rvm.sh");
    assert_eq!(o.code, 0, "{o:#?}");
    for line in [
        "[researcher] researcher: the demo server says 19 + 23 = 42",
        "[researcher] researcher: the demo server echoed \"tools answer under claims\"",
        "[researcher] researcher: the host runs Linux",
        "[researcher] researcher: curl refused: NoRights",
        "[researcher] researcher: done, 3 findings kept",
    ] {
        assert!(o.stdout.lines().any(|l| l == line), "no line {line:?}: {o:#?}");
    }
    assert!(o.stdout.contains("'researcher' exited: code 0x0"), "{o:#?}");
    let log = show(&env, "researcher");
    // 3 allowed calls (each a call and an answer) and the refused one.
    assert_eq!(log.matches("ToolCall").count(), 7, "{log}");
    assert_filed_and_verified(&env, "researcher");
}
