//! Booting, with a stand-in for QEMU: a shell script that records its
//! command line and the bundle it was given, prints a prepared serial
//! stream (console lines and witness frames chained and signed as the
//! kernel does, `common::Chain`, and the hypervisor's exit frame) and exits
//! with a chosen code. These tests
//! cover the loader's side of the path with exact control over what the
//! "device" says: the command line, the bundle, the stream handling, the
//! witness filing and the key check, the timeout and the run records. The
//! real hypervisor is booted in `e2e.rs`.

mod common;

use common::*;
use rvm_abi::bundle::{Bundle, ChannelDesc, EntryKind};
use rvm_abi::frame::Frame;
use rvm_abi::witness::{KernelEvent, Outcome, WitnessOp, WitnessRecord};
use std::path::Path;

/// A frame that is not part of any chain (for runs cut short).
fn lone_event(e: KernelEvent, partition: u32) -> String {
    let r = WitnessRecord::new(WitnessOp::Event(e), Outcome::Done, partition);
    line(&Frame::Record {
        log: partition,
        bytes: r.to_bytes(),
    })
}

fn with_guest() -> (Env, TempDir) {
    let env = Env::new();
    let t = TempDir::new("mod");
    std::fs::write(t.join("a.wasm"), agent_module()).unwrap();
    env.ok(&[
        "guest",
        "add",
        "@metaharness/kernel@0.1.0",
        t.join("a.wasm").to_str().unwrap(),
    ]);
    (env, t)
}

#[test]
fn three_tenants_boot_together_and_a_fence_in_one_leaves_the_others() {
    let (env, _m) = with_guest();
    for case in [
        "template-minimal",
        "template-vertical_coding",
        "template-vertical_devops",
    ] {
        env.ok(&["deploy", fixture(case).to_str().unwrap(), "--no-boot"]);
    }
    let mut c = Chain::new(witness_seed(&env));
    let serial = [
        "rvm: booting, 3 partitions".to_string(),
        c.key_line(),
        c.event(KernelEvent::PartitionStart, 1),
        c.event(KernelEvent::PartitionStart, 2),
        c.event(KernelEvent::PartitionStart, 3),
        "[demo-minimal] hello from tenant one".into(),
        "[demo-coding] \u{1b}[2Jtrying to clear the screen".into(),
        c.event(KernelEvent::Fault, 2),
        c.event(KernelEvent::RecoverFence, 2),
        "@W 1 0123damaged".into(),
        c.event(KernelEvent::PartitionExit, 1),
        c.event(KernelEvent::PartitionExit, 3),
        c.finish(),
        "rvm: shutdown".into(),
        exit_line(0),
    ]
    .iter()
    .map(|l| l.trim_end().to_string() + "\r\n")
    .collect::<String>();
    let q = FakeQemu::new(&serial, "", 0);
    let o = env.run(&[
        "up",
        "demo-minimal",
        "demo-coding",
        "demo-devops",
        "--qemu",
        q.path().to_str().unwrap(),
        "--timeout",
        "30",
    ]);
    assert_eq!(o.code, 0, "{o:?}");

    // The console, control characters escaped.
    assert!(
        o.stdout.contains("[demo-minimal] hello from tenant one\n"),
        "{o:?}"
    );
    assert!(o.stdout.contains("[demo-coding] \\u{1b}[2Jtrying"), "{o:?}");
    assert!(
        !o.stdout.contains("@W "),
        "frames leaked to the console: {o:?}"
    );
    // Progress and the final states.
    for l in [
        "rvm-loader: demo-coding: fault",
        "rvm-loader: demo-coding: fenced (F3)",
        "rvm-loader: demo-minimal: exited",
        "rvm-loader: demo-devops: exited",
        "rvm-loader: damaged witness frame on the console",
        "rvm-loader: witness: filed 7 records, 3 checkpoints in ",
        "demo-minimal.log 2 records, 1 checkpoints; demo-coding.log 3 records, 1 checkpoints; demo-devops.log 2 records, 1 checkpoints",
        "rvm-loader: witness warning: damaged witness frame not filed: @W 1 0123damaged",
        "rvm-loader: witness demo-coding.log verified: 3 records, 3 signed",
    ] {
        assert!(o.stderr.contains(l), "missing {l:?}: {o:?}");
    }
    // Each tenant's log on its own, decoded with its name.
    let shown = env.ok(&["witness", "show", "demo-coding"]).stdout;
    let ops: Vec<&str> = shown
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(ops, ["PartitionStart", "Fault", "RecoverFence"], "{shown}");
    assert!(
        shown.lines().skip(2).all(|l| l.contains(" demo-coding ")),
        "{shown}"
    );
    let v = env.ok(&["witness", "verify", "--require-signed"]).stdout;
    assert_eq!(v.matches("OK: records").count(), 3, "{v}");
    let status = env.ok(&["status"]).stdout;
    assert!(
        status.contains("partition demo-coding: fenced (F3)"),
        "{status}"
    );
    assert!(
        status.contains("partition demo-minimal: exited"),
        "{status}"
    );
    assert!(
        status.contains(
            "last run: with demo-minimal, demo-coding, demo-devops; hypervisor exited normally"
        ),
        "{status}"
    );
    // Each partition is a one-agent domain; this run decided no cut.
    assert_eq!(
        status
            .matches("domain: 1 agent (slot 0); last cut decision: none")
            .count(),
        3,
        "{status}"
    );

    // The command line of the reference machine.
    let args = q.args();
    let joined = args.join(" ");
    assert!(joined.starts_with(
        "-machine virt,virtualization=on,gic-version=3 -cpu cortex-a72 -smp 4 -m 512M -nographic -nic none \
         -global virtio-mmio.force-legacy=false -device virtio-serial-device -chardev socket,id=rvmchannel,path="
    ), "{joined}");
    // The control channel's console is on the loader's socket, under RVM_HOME/run/.
    let socket = env.home().join("run").join("channel-");
    assert!(joined.contains(&format!("path={}", socket.display())), "{joined}");
    assert!(joined.contains(".sock -device virtconsole,chardev=rvmchannel -kernel "), "{joined}");
    // No semihosting: QEMU would serve it to every guest.
    assert!(!joined.contains("semihosting"), "{joined}");
    assert_eq!(
        args[args.len() - 3],
        env.images
            .join("rvm.bin")
            .display()
            .to_string()
            .replace("//", "/")
    );
    assert_eq!(args[args.len() - 2], "-initrd");
    // The bundle QEMU was given: three partitions in boot order, each with
    // its own capabilities, and no channel (none was linked: issue 12,
    // item 9).
    let bytes = q.bundle();
    let b = Bundle::parse(&bytes).unwrap();
    let names: Vec<String> = b.partitions().map(|p| p.name().to_string()).collect();
    assert_eq!(names, ["demo-minimal", "demo-coding", "demo-devops"]);
    let caps: Vec<usize> = (0..3)
        .map(|i| b.owned(EntryKind::Capability, i).count())
        .collect();
    assert_eq!(caps, [2, 8, 9]);
    let channels: Vec<ChannelDesc> = b
        .entries()
        .filter(|e| e.kind == EntryKind::Channel)
        .map(|e| ChannelDesc::from_bytes(e.data).unwrap())
        .collect();
    assert_eq!(
        channels.iter().map(|c| (c.a, c.b)).collect::<Vec<_>>(),
        []
    );
    // The loader's temporary bundle is gone.
    assert!(!Path::new(&args[args.len() - 1]).exists());
    // The bundle carries a random boot id, recorded with the run of every
    // partition in it (what `caps prove` signs by default).
    let boot_id = b.boot_id().expect("every bundle carries a boot id");
    let hex = rvm_abi::hex::to_string(&boot_id);
    let reg = rvm_loader::home::Home::new(env.home()).load().unwrap();
    for rec in reg.partitions.values() {
        let run = rec.last_run.as_ref().expect("a run record");
        assert_eq!(run.boot_id.as_deref(), Some(hex.as_str()), "{run:?}");
    }
}

#[test]
fn a_run_past_its_timeout_is_killed_and_recorded() {
    let (env, _m) = with_guest();
    env.ok(&[
        "deploy",
        fixture("permissions-star").to_str().unwrap(),
        "--no-boot",
    ]);
    let serial = format!(
        "rvm: booting\n{}",
        lone_event(KernelEvent::PartitionStart, 1)
    );
    let q = FakeQemu::new(&serial, "exec sleep 60", 0);
    let o = env.run(&[
        "up",
        "star-perms",
        "--qemu",
        q.path().to_str().unwrap(),
        "--timeout",
        "1",
    ]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("rvm-loader: star-perms: running"),
        "{o:?}"
    );
    assert!(
        o.stderr
            .trim_end()
            .ends_with("timed out after 1 s; QEMU killed"),
        "{o:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{}", q.pid())).exists(),
        "QEMU stand-in still running"
    );
    let list = env.ok(&["partition", "list"]).stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("star-perms") && l.trim_end().ends_with("stopped")),
        "{list}"
    );
}

#[test]
fn a_nonzero_hypervisor_exit_is_a_failure() {
    let (env, _m) = with_guest();
    env.ok(&[
        "deploy",
        fixture("permissions-empty").to_str().unwrap(),
        "--no-boot",
    ]);
    // QEMU exits 0 after the hypervisor's SYSTEM_OFF; the code is the frame's.
    let q = FakeQemu::new(
        &format!("rvm: panic\n{}\n", exit_line(101)),
        "echo 'qemu: fatal thing' >&2",
        0,
    );
    let o = env.run(&["up", "--qemu", q.path().to_str().unwrap()]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .trim_end()
            .ends_with("hypervisor exited with code 101; QEMU said: qemu: fatal thing"),
        "{o:?}"
    );
}

#[test]
fn a_run_without_the_hypervisors_exit_frame_is_a_failure() {
    let (env, _m) = with_guest();
    env.ok(&[
        "deploy",
        fixture("permissions-empty").to_str().unwrap(),
        "--no-boot",
    ]);
    // A guest's line that carries a clean exit frame, and QEMU exiting 0 (a
    // guest that could end QEMU would do just this): no exit status.
    let q = FakeQemu::new(
        &format!("[empty-perms] {}\n\r{}trailing\n", exit_line(0), exit_line(0)),
        "",
        0,
    );
    let o = env.run(&["up", "--qemu", q.path().to_str().unwrap()]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.trim_end().ends_with(
            "QEMU exited without the hypervisor's exit frame: the run did not finish"
        ),
        "{o:?}"
    );
    // A clean exit frame does not excuse QEMU failing.
    let q = FakeQemu::new(&format!("{}\n", exit_line(0)), "", 5);
    let o = env.run(&["up", "--qemu", q.path().to_str().unwrap()]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.trim_end().ends_with("QEMU exited with code 5"),
        "{o:?}"
    );
}

#[test]
fn the_emitted_install_script_runs_unmodified() {
    let (env, _m) = with_guest();
    let dir = fixture("template-minimal");
    // Lint it first: it is only run because `check` finds it safe.
    env.ok(&["check", dir.to_str().unwrap()]);
    let bin = TempDir::new("bin");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rvm-loader"), bin.join("rvm-loader")).unwrap();
    let mut c = Chain::new(witness_seed(&env));
    let q = FakeQemu::new(
        &format!(
            "{}\n{}\n[demo-minimal] up\n{}\n{}\n{}\n",
            c.key_line(),
            c.event(KernelEvent::PartitionStart, 1),
            c.event(KernelEvent::PartitionExit, 1),
            c.finish(),
            exit_line(0)
        ),
        "",
        0,
    );
    let o = std::process::Command::new("bash")
        .arg(dir.join("install-rvm.sh"))
        .current_dir(&dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("RVM_HOME", env.home())
        .env("RVM_IMAGE_DIR", env.images.path())
        .env("RVM_QEMU", q.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("partition demo-minimal registered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("installed 2 capabilities for partition demo-minimal"),
        "{stdout}"
    );
    assert!(stdout.contains("[demo-minimal] up"), "{stdout}");
    assert!(
        stdout.contains("RVM partition 'demo-minimal' is up."),
        "{stdout}"
    );
    assert!(
        stderr.contains("rvm-loader: demo-minimal: exited"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rvm-loader: witness demo-minimal.log verified: 2 records, 2 signed"),
        "{stderr}"
    );
}

#[test]
fn rvm_launch_is_the_same_program() {
    let (env, _m) = with_guest();
    let dir = fixture("template-vertical_coding");
    let o = env.run_bin(
        env!("CARGO_BIN_EXE_rvm"),
        &dir,
        &["launch", "--partition", "./rvm-partition.toml", "--no-boot"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("deployed partition demo-coding"), "{o:?}");
    let help = env.run_bin(env!("CARGO_BIN_EXE_rvm"), &dir, &["--help"]);
    assert!(
        help.stdout
            .starts_with("Deploy @metaharness/host-rvm adapter files")
            && help.stdout.contains("Usage: rvm "),
        "{help:?}"
    );
}

#[test]
fn guest_resolution_reads_node_modules_and_refuses_js_glue() {
    let (env, _m) = with_guest();
    let t = TempDir::new("proj");
    let dir = copy_fixture("readme-claims", &t.join("harness"));
    let pkg = t.join("node_modules/@metaharness/kernel");
    std::fs::create_dir_all(pkg.join("pkg")).unwrap();
    std::fs::write(
        pkg.join("package.json"),
        r#"{"name":"@metaharness/kernel","version":"0.1.0"}"#,
    )
    .unwrap();
    let bg = pkg.join("pkg/ruflo_kernel_wasm_bg.wasm");
    std::fs::write(&bg, glue_module()).unwrap();
    // node_modules comes after a registered module: use a home without one.
    let fresh = Env::new();
    let o = fresh.refused(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    assert!(
        o.stderr.contains(&format!(
            "{}: is a wasm-bindgen JS-glue module",
            bg.display()
        )),
        "{o:?}"
    );
    // A module built for RVM's imports is found and used.
    std::fs::write(&bg, agent_module()).unwrap();
    let o = fresh.run(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    assert_eq!(o.code, 0, "{o:?}");
    let reg = rvm_loader::home::Home::new(fresh.home()).load().unwrap();
    let g = reg
        .partitions
        .values()
        .next()
        .unwrap()
        .guest
        .clone()
        .unwrap();
    assert!(
        matches!(g.source, rvm_loader::home::ModuleSource::NodeModules { .. }),
        "{g:?}"
    );
    // Another installed version is refused.
    std::fs::write(pkg.join("package.json"), r#"{"version":"0.2.0"}"#).unwrap();
    let other = Env::new();
    let o = other.refused(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    assert!(
        o.stderr.contains(
            "package.json: version: \"0.2.0\" is installed, but the guest asks for 0.1.0"
        ),
        "{o:?}"
    );
    // The registered module wins over node_modules; --wasm wins over both.
    let o = env.run(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    assert_eq!(o.code, 0, "{o:?}");
    let explicit = t.join("explicit.wasm");
    std::fs::write(&explicit, common::modules::rvm_agent(Some(40))).unwrap();
    env.ok(&[
        "deploy",
        dir.to_str().unwrap(),
        "--wasm",
        explicit.to_str().unwrap(),
        "--no-boot",
    ]);
    let reg = rvm_loader::home::Home::new(env.home()).load().unwrap();
    let g = reg
        .partitions
        .values()
        .next()
        .unwrap()
        .guest
        .clone()
        .unwrap();
    assert!(
        matches!(g.source, rvm_loader::home::ModuleSource::Explicit { .. }),
        "{g:?}"
    );
    // Its memory minimum (40 pages) sets the partition's budget.
    let out = env.images.join("b.bin");
    env.ok(&[
        "up",
        "my-bot",
        "--no-boot",
        "--bundle-out",
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        Bundle::parse(&bytes)
            .unwrap()
            .partitions()
            .next()
            .unwrap()
            .wasm_pages,
        40
    );
}

#[test]
fn an_announced_key_other_than_the_pinned_one_stops_the_run_and_files_nothing() {
    let (env, _m) = with_guest();
    let seed = witness_seed(&env);
    let keys = env.ok(&["keys"]).stdout;
    let fp = keys
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert!(fp.starts_with("sha256:"), "{keys}");
    // The manifest pins this home's key, so the check before boot passes ...
    let t = TempDir::new("pin");
    let dir = copy_fixture("template-minimal", t.path());
    let manifest = dir.join("rvm-partition.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "cut_pressure = 0.30\n",
        &format!("cut_pressure = 0.30\nwitness_key_fingerprint = \"{fp}\"\n"),
    );
    std::fs::write(&manifest, text).unwrap();
    env.ok(&["deploy", dir.to_str().unwrap(), "--no-boot"]);
    // ... but the device announces another key, then keeps running.
    let mut other = seed;
    other[0] ^= 0xff;
    let mut c = Chain::new(other);
    let serial = format!(
        "rvm: booting\n{}\n{}\n[demo-minimal] must not be reached\n",
        c.key_line(),
        c.event(KernelEvent::PartitionStart, 1)
    );
    let q = FakeQemu::new(&serial, "exec sleep 30", 0);
    let start = std::time::Instant::now();
    let o = env.run(&[
        "up",
        "--qemu",
        q.path().to_str().unwrap(),
        "--timeout",
        "60",
    ]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "not stopped at once"
    );
    assert!(
        o.stderr
            .contains(&format!("but partition demo-minimal pins {fp}"))
            && o.stderr
                .contains("the run was stopped before its agents ran, and nothing was filed"),
        "{o:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{}", q.pid())).exists(),
        "QEMU stand-in still running"
    );
    assert!(!env.home().join("witness/demo-minimal.log").exists());
    let status = env.ok(&["status"]).stdout;
    assert!(status.contains("last run: with demo-minimal; stopped by the loader: the hypervisor announced witness key"), "{status}");
}
