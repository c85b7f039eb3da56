//! Attacks on the loader's side of "a hostile tenant gets nothing" (issue
//! 12): the witness key's seed on the host's disk (item 3), a witness log
//! that passes verification after records were appended or its checkpoints
//! removed (item 4), and tenants wired together without the operator
//! asking (item 9). QEMU is a stand-in script here (as in `boot.rs`): it
//! records what it was given and prints a prepared serial stream. The real
//! hypervisor is booted for these items in `e2e.rs` and `tests-qemu`.

mod common;

use common::*;
use rvm_abi::bundle::{Bundle, ChannelDesc, EntryKind};
use rvm_abi::witness::KernelEvent;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A QEMU stand-in: records its arguments, the initrd's path, mode and
/// bytes, prints `serial`, runs `tail` (shell) and exits `code`.
struct FakeQemu {
    dir: TempDir,
}

impl FakeQemu {
    fn new(serial: &str, tail: &str, code: i32) -> Self {
        let dir = TempDir::new("adv-qemu");
        std::fs::write(dir.join("serial.txt"), serial).unwrap();
        let d = dir.path().display();
        // `@DIR@` in `tail` names this stand-in's folder.
        let tail = tail.replace("@DIR@", &d.to_string());
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/args.txt\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -initrd ]; then\n    printf '%s' \"$a\" > {d}/initrd-path\n    stat -c '%a' \"$a\" > {d}/initrd-mode\n    cp \"$a\" {d}/bundle.bin\n  fi\n  prev=$a\ndone\necho $$ > {d}/pid\ncat {d}/serial.txt\n{tail}\nexit {code}\n"
        );
        let path = dir.join("qemu-system-aarch64");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }
    fn path(&self) -> String {
        self.dir.join("qemu-system-aarch64").display().to_string()
    }
    fn initrd(&self) -> PathBuf {
        PathBuf::from(std::fs::read_to_string(self.dir.join("initrd-path")).unwrap())
    }
    fn initrd_mode(&self) -> String {
        std::fs::read_to_string(self.dir.join("initrd-mode"))
            .unwrap()
            .trim()
            .to_string()
    }
    fn bundle(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("bundle.bin")).unwrap()
    }
}

/// A tenant folder (manifest, capability table, guest) for partition
/// `name`, whose guest is the module registered by [`with_guest`].
fn tenant(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rvm-partition.toml"),
        format!(
            "[partition]\nname = \"{name}\"\nmemory_tier = \"Warm\"\ndeadline_urgency = 0.5\ncut_pressure = 0.3\n\n\
             [wasm_guest]\npackage = \"@metaharness/kernel\"\nversion = \"0.1.0\"\nlifecycle = \"managed\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("wasm-guest.json"),
        format!(
            r#"{{"schema": 1, "partition": "{name}",
            "guest": {{"package": "@metaharness/kernel", "version": "0.1.0", "entrypoint": "k.wasm"}},
            "lifecycle": "managed", "proof_tier_default": "P2",
            "failure_class_recovery": {{"F1": "restart-guest", "F2": "rollback-to-checkpoint",
                                       "F3": "partition-fence", "F4": "partition-evict"}}}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("capability-table.json"),
        format!(
            r#"[{{"rights": ["READ"], "resource": "memory/{name}", "proof_tier": "P1", "expires_at": 0}}]"#
        ),
    )
    .unwrap();
    dir
}

/// A home with the guest module registered and tenants `names` deployed
/// (not booted).
fn with_tenants(names: &[&str]) -> (Env, TempDir) {
    let env = Env::new();
    let t = TempDir::new("adv-tenants");
    std::fs::write(t.join("k.wasm"), agent_module()).unwrap();
    env.ok(&[
        "guest",
        "add",
        "@metaharness/kernel@0.1.0",
        t.join("k.wasm").to_str().unwrap(),
    ]);
    for n in names {
        let dir = tenant(t.path(), n);
        env.ok(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    }
    (env, t)
}

/// A finished run's serial stream for partitions 1..=n: each starts and
/// exits, every log signed at shutdown; `extra` frame lines after that.
fn finished_run(env: &Env, n: u32, extra: impl FnOnce(&mut Chain) -> Vec<String>) -> String {
    signed_run(witness_seed(env), n, extra)
}

fn signed_run(seed: [u8; 32], n: u32, extra: impl FnOnce(&mut Chain) -> Vec<String>) -> String {
    let mut c = Chain::new(seed);
    let mut lines = vec!["rvm: booting".to_string(), c.key_line()];
    lines.push(c.event(KernelEvent::Boot, 0));
    for p in 1..=n {
        lines.push(c.event(KernelEvent::PartitionStart, p));
    }
    for p in 1..=n {
        lines.push(c.event(KernelEvent::PartitionExit, p));
    }
    lines.push(c.finish());
    lines.extend(extra(&mut c));
    lines.push("rvm: powering off".into());
    lines.push(String::from_utf8_lossy(rvm_abi::frame::ExitFrame { code: 0 }.encode().as_bytes()).into_owned());
    lines
        .iter()
        .map(|l| l.trim_end().to_string() + "\n")
        .collect()
}

fn run_files(env: &Env) -> Vec<String> {
    match std::fs::read_dir(env.home().join("run")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------------
// item 3: witness seed — never on the host's disk where others can read it
// ---------------------------------------------------------------------

#[test]
fn item3_the_boot_bundle_is_private_under_rvm_home_run_and_gone_after_every_run() {
    let (env, _t) = with_tenants(&["solo"]);
    let seed = witness_seed(&env);
    // A bundle a killed loader left behind (its process is gone) is swept.
    let run = env.home().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let stale = run.join("bundle-999999999-0123abcd.bin");
    std::fs::write(&stale, seed).unwrap();

    // Success.
    let q = FakeQemu::new(&finished_run(&env, 1, |_| Vec::new()), "", 0);
    let o = env.run(&["up", "solo", "--qemu", &q.path(), "--timeout", "30"]);
    assert_eq!(o.code, 0, "{o:?}");
    let initrd = q.initrd();
    assert_eq!(
        initrd.parent().unwrap(),
        env.home().join("run"),
        "the bundle is written under RVM_HOME/run/, not a shared temporary directory"
    );
    assert!(
        initrd
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("bundle-"),
        "{initrd:?}"
    );
    assert_eq!(q.initrd_mode(), "600", "the bundle QEMU reads is 0600");
    assert!(
        q.bundle().windows(32).any(|w| w == seed),
        "QEMU still gets the seed"
    );
    assert!(!initrd.exists(), "the bundle is removed after the run");
    assert!(!stale.exists(), "a dead loader's bundle is swept");
    let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "run/ is private");
    // Two boots never share a name.
    let q2 = FakeQemu::new(&finished_run(&env, 1, |_| Vec::new()), "", 0);
    env.ok(&["up", "solo", "--qemu", &q2.path(), "--timeout", "30"]);
    assert_ne!(q.initrd(), q2.initrd());

    // Failure: a nonzero exit.
    let q = FakeQemu::new("rvm: panic\n", "", 3);
    let o = env.run(&["up", "solo", "--qemu", &q.path(), "--timeout", "30"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(!q.initrd().exists(), "bundle left after a failed run");

    // Timeout: QEMU killed.
    let q = FakeQemu::new("rvm: booting\n", "exec sleep 60", 0);
    let o = env.run(&["up", "solo", "--qemu", &q.path(), "--timeout", "1"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(!q.initrd().exists(), "bundle left after a timeout");

    // QEMU that never starts.
    let o = env.run(&[
        "up",
        "solo",
        "--qemu",
        "/nonexistent/qemu",
        "--timeout",
        "5",
    ]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        run_files(&env).iter().all(|f| !f.starts_with("bundle-")),
        "{:?}",
        run_files(&env)
    );
}

#[test]
fn item3_a_planted_run_directory_link_is_refused() {
    let (env, t) = with_tenants(&["solo"]);
    // Someone replaced run/ with a link to a folder they read.
    let theirs = t.join("attacker");
    std::fs::create_dir_all(&theirs).unwrap();
    std::os::unix::fs::symlink(&theirs, env.home().join("run")).unwrap();
    let q = FakeQemu::new(&finished_run(&env, 1, |_| Vec::new()), "", 0);
    let o = env.run(&["up", "solo", "--qemu", &q.path(), "--timeout", "30"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("run: not a directory"), "{o:?}");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    assert!(!q.dir.join("args.txt").exists(), "QEMU was started");
}

#[test]
fn item3_bundle_out_leaves_the_seed_out_unless_asked() {
    let (env, t) = with_tenants(&["solo"]);
    let seed = witness_seed(&env);
    let out = t.join("b.bin");
    let o = env.ok(&[
        "up",
        "solo",
        "--no-boot",
        "--bundle-out",
        out.to_str().unwrap(),
    ]);
    assert!(o.stdout.contains("seed left out"), "{o:?}");
    let bytes = std::fs::read(&out).unwrap();
    let b = Bundle::parse(&bytes).unwrap();
    assert!(
        b.global(EntryKind::WitnessKeySeed).is_none(),
        "a WitnessKeySeed entry was written"
    );
    assert!(
        !bytes.windows(32).any(|w| w == seed),
        "the seed's bytes are in the file"
    );
    assert_eq!(b.partitions().next().unwrap().name(), "solo");

    // Asked for: there, 0600, and a warning.
    let with = t.join("with-seed.bin");
    let o = env.ok(&[
        "up",
        "solo",
        "--no-boot",
        "--bundle-out",
        with.to_str().unwrap(),
        "--include-witness-seed",
    ]);
    assert!(
        o.stderr.contains("warning:") && o.stderr.contains("holds the witness key's seed"),
        "{o:?}"
    );
    let bytes = std::fs::read(&with).unwrap();
    assert_eq!(
        Bundle::parse(&bytes)
            .unwrap()
            .global(EntryKind::WitnessKeySeed)
            .unwrap()
            .data,
        seed
    );
    let mode = std::fs::metadata(&with).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A link planted at the output path is replaced, never written through.
    let target = t.join("attacker-reads-this");
    std::fs::write(&target, b"").unwrap();
    let planted = t.join("planted.bin");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    env.ok(&[
        "up",
        "solo",
        "--no-boot",
        "--bundle-out",
        planted.to_str().unwrap(),
        "--include-witness-seed",
    ]);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "written through the link"
    );
    assert!(std::fs::symlink_metadata(&planted).unwrap().is_file());

    // The flag alone means nothing.
    let o = env.run(&["up", "solo", "--no-boot", "--include-witness-seed"]);
    assert_eq!(o.code, 2, "{o:?}");
}

#[test]
fn item3_the_bundle_is_gone_once_the_hypervisor_speaks_so_ctrl_c_leaves_no_seed() {
    let (env, _t) = with_tenants(&["solo"]);
    // QEMU prints, then looks for its initrd a moment later, then hangs.
    let q = FakeQemu::new(
        "rvm: booting\n",
        "sleep 1; if [ -e \"$(cat @DIR@/initrd-path)\" ]; then echo present; else echo gone; fi > @DIR@/after; exec sleep 30",
        0,
    );
    let mut loader = std::process::Command::new(env!("CARGO_BIN_EXE_rvm-loader"))
        .args(["up", "solo", "--qemu", &q.path(), "--timeout", "60"])
        .env("RVM_HOME", env.home())
        .env("RVM_IMAGE_DIR", env.images.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !q.dir.join("after").exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "QEMU stand-in never looked"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        std::fs::read_to_string(q.dir.join("after")).unwrap().trim(),
        "gone",
        "the bundle is still on disk while the machine runs"
    );
    // Ctrl-C: the loader ends without running any cleanup.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &loader.id().to_string()])
        .status();
    let _ = loader.wait();
    if let Ok(pid) = std::fs::read_to_string(q.dir.join("pid")) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status();
    }
    assert!(
        run_files(&env).iter().all(|f| !f.starts_with("bundle-")),
        "a bundle is left: {:?}",
        run_files(&env)
    );
}

// ---------------------------------------------------------------------
// item 4: witness verify fails closed by default
// ---------------------------------------------------------------------

#[test]
fn item4_records_after_the_last_checkpoint_or_no_checkpoints_fail_by_default() {
    let (env, _t) = with_tenants(&["solo"]);
    // A good finished run: every log ends signed.
    let good = finished_run(&env, 1, |_| Vec::new());
    let q = FakeQemu::new(&good, "", 0);
    let o = env.run(&["up", "solo", "--qemu", &q.path(), "--timeout", "30"]);
    assert_eq!(o.code, 0, "{o:?}");
    let v = env.ok(&["witness", "verify"]);
    assert_eq!(v.stdout.matches("OK: records").count(), 2, "{v:?}");
    env.ok(&["witness", "verify", "solo"]);
    // --require-signed is still accepted (now the default).
    env.ok(&["witness", "verify", "solo", "--require-signed"]);

    // The same run with one more record, chained but never signed: what
    // someone appending to the log file produces.
    let log = env.home().join("witness/solo.log");
    let clean = std::fs::read(&log).unwrap();
    let signed_records = clean.len() / 64;
    let (env2, _t2) = with_tenants(&["solo"]);
    env2.ok(&["keys", "--create"]);
    std::fs::copy(
        env.home().join("keys/witness.seed"),
        env2.home().join("keys/witness.seed"),
    )
    .unwrap();
    let longer = signed_run(witness_seed(&env), 1, |c| {
        vec![c.event(KernelEvent::Fault, 1)]
    });
    let q = FakeQemu::new(&longer, "", 0);
    let o = env2.run(&["up", "solo", "--qemu", &q.path(), "--timeout", "30"]);
    // The loader's own check after the run uses the same rule.
    assert_eq!(
        o.code, 1,
        "an unsigned tail passed the check after the boot: {o:?}"
    );
    assert!(o.stderr.contains("solo.log does NOT verify"), "{o:?}");
    assert!(
        o.stderr
            .contains(&format!("first unsigned record: {signed_records}")),
        "{o:?}"
    );
    let appended = std::fs::read(env2.home().join("witness/solo.log")).unwrap();
    assert_eq!(
        appended[..clean.len()],
        clean[..],
        "same chain, one record longer"
    );
    std::fs::write(&log, &appended).unwrap();

    let o = env.run(&["witness", "verify", "solo"]);
    assert_eq!(o.code, 2, "an appended record passed: {o:?}");
    assert!(
        o.stderr
            .contains(&format!("first unsigned record {signed_records}")),
        "{o:?}"
    );
    assert!(
        o.stdout
            .contains(&format!("first unsigned record: {signed_records}")),
        "{o:?}"
    );
    let o = env.run(&["witness", "verify", "solo", "--require-signed"]);
    assert_eq!(o.code, 2, "{o:?}");
    // A live log may have an unsigned tail, when the operator says so.
    let o = env.ok(&["witness", "verify", "solo", "--allow-unsigned-tail"]);
    assert!(o.stdout.contains("not yet signed: records"), "{o:?}");
    env.ok(&["witness", "verify", "solo", "--live"]);
    let o = env.run(&["witness", "verify", "solo", "--live", "--require-signed"]);
    assert_eq!(o.code, 2, "contradictory flags: {o:?}");

    // The checkpoints file removed: nothing is signed.
    std::fs::write(&log, &clean).unwrap();
    env.ok(&["witness", "verify", "solo"]);
    std::fs::remove_file(env.home().join("witness/solo.checkpoints")).unwrap();
    let o = env.run(&["witness", "verify", "solo"]);
    assert_eq!(o.code, 2, "a log without its checkpoints passed: {o:?}");
    assert!(o.stderr.contains("first unsigned record 0"), "{o:?}");
    assert!(o.stdout.contains("no checkpoint at all"), "{o:?}");
    // Every log at once fails too.
    assert_eq!(env.run(&["witness", "verify"]).code, 2);
}

// ---------------------------------------------------------------------
// item 9: no default channels
// ---------------------------------------------------------------------

fn channels(bytes: &[u8]) -> Vec<(u32, u32)> {
    Bundle::parse(bytes)
        .unwrap()
        .entries()
        .filter(|e| e.kind == EntryKind::Channel)
        .map(|e| {
            let c = ChannelDesc::from_bytes(e.data).unwrap();
            (c.a, c.b)
        })
        .collect()
}

#[test]
fn item9_tenants_booted_together_share_no_channel_unless_linked() {
    let (env, t) = with_tenants(&["ten-a", "ten-b", "ten-c"]);
    let out = t.join("b.bin");
    let o = out.to_str().unwrap();
    env.ok(&["up", "ten-a", "ten-b", "--no-boot", "--bundle-out", o]);
    assert_eq!(
        channels(&std::fs::read(&out).unwrap()),
        [],
        "a channel nobody asked for"
    );
    // All registered, none named: still none.
    env.ok(&["up", "--no-boot", "--bundle-out", o]);
    assert_eq!(channels(&std::fs::read(&out).unwrap()), []);
    // Linked: exactly the pairs asked for.
    env.ok(&[
        "up",
        "ten-a",
        "ten-b",
        "--link",
        "ten-a:ten-b",
        "--no-boot",
        "--bundle-out",
        o,
    ]);
    assert_eq!(channels(&std::fs::read(&out).unwrap()), [(0, 1)]);
    env.ok(&[
        "up",
        "ten-a",
        "ten-b",
        "ten-c",
        "--link",
        "ten-c:ten-a",
        "--no-boot",
        "--bundle-out",
        o,
    ]);
    assert_eq!(channels(&std::fs::read(&out).unwrap()), [(0, 2)]);
    env.ok(&[
        "up",
        "ten-a",
        "ten-b",
        "ten-c",
        "--link",
        "ten-a:ten-b",
        "--link",
        "ten-b:ten-c",
        "--no-boot",
        "--bundle-out",
        o,
    ]);
    assert_eq!(channels(&std::fs::read(&out).unwrap()), [(0, 1), (1, 2)]);
    // And what QEMU is given is the same.
    let q = FakeQemu::new(&finished_run(&env, 2, |_| Vec::new()), "", 0);
    env.ok(&[
        "up",
        "ten-a",
        "ten-b",
        "--qemu",
        &q.path(),
        "--timeout",
        "30",
    ]);
    assert_eq!(channels(&q.bundle()), []);
}

#[test]
fn item9_a_link_naming_a_partition_not_booted_is_refused() {
    let (env, t) = with_tenants(&["ten-a", "ten-b", "ten-c"]);
    for (args, want) in [
        (
            vec!["up", "ten-a", "ten-b", "--link", "ten-a:nobody"],
            "--link ten-a:nobody: names nobody, which does not boot in this run (booting: ten-a, ten-b)",
        ),
        (
            vec!["up", "ten-a", "ten-b", "--link", "ten-a:ten-c"],
            "names ten-c, which does not boot in this run",
        ),
        (vec!["up", "ten-a", "ten-b", "--link", "ten-a:ten-a"], "links a partition to itself"),
        (
            vec!["up", "ten-a", "ten-b", "--link", "ten-a:ten-b", "--link", "ten-b:ten-a"],
            "links the same two partitions twice",
        ),
        (vec!["up", "ten-a", "ten-b", "--link", "ten-a"], "expected A:B"),
        (vec!["up", "ten-a", "ten-b", "--link", "ten-a:../x"], "partition name"),
    ] {
        let mut args = args;
        args.push("--no-boot");
        let o = env.refused(&args);
        assert!(o.stderr.contains(want), "{args:?}: {o:?}");
    }
    // Commands that boot one partition have nothing to link; refused
    // before anything is registered.
    let dir = tenant(t.path(), "ten-d");
    let o = env.refused(&[
        "deploy",
        dir.to_str().unwrap(),
        "--link",
        "ten-d:ten-a",
        "--no-boot",
    ]);
    assert!(o.stderr.contains("boots one partition"), "{o:?}");
}
