//! Admitting tenants into a running instance, on the host: this test
//! process stands in for the instance's background loader (it holds the
//! instance's lock, `instance.json`, with its own pid, and serves the
//! control socket with `rvm_loader::control::ControlServer`, the
//! hypervisor's control channel captured), and the real `rvm-loader`
//! binary runs `deploy`, `guest boot` and `up` against it. The real
//! hypervisor's side (it checks, admits, answers, names the new log) is
//! the kernel's, tested under QEMU.

mod common;

use common::*;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rvm_abi::bundle::{BootConfig, Bundle, EntryKind, BOOT_FLAG_INSTANCE, GLOBAL};
use rvm_abi::witness::KernelEvent;
use rvm_loader::control::{self, ControlServer, Input};
use rvm_loader::home::{Home, RunState};
use rvm_loader::keys::KeyRole;
use rvm_loader::model::PartitionName;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

/// What the booted bundle of the stand-in instance hashes from.
const BOOTED: &[u8] = b"the bundle the instance booted";
/// Its boot id.
const BOOT_ID: &str = "abababababababababababababababababababababababababababababababab";

/// The hypervisor's input, captured: every write as it came.
struct Pipe(Sender<Vec<u8>>);

impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(b.to_vec());
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running instance of `env`'s home, served by this process: its lock
/// (booted with `partitions`), the operator key, and the control socket,
/// whose input is the control channel (`on_channel`) or the UART.
fn instance(env: &Env, partitions: &[&str], on_channel: bool) -> (ControlServer, Receiver<Vec<u8>>) {
    let dir = env.home().join("instance");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = serde_json::json!({
        "pid": std::process::id(),
        "started_unix": 1,
        "partitions": partitions,
        "running": true,
        "boot_id": BOOT_ID,
    });
    std::fs::write(dir.join("instance.json"), lock.to_string()).unwrap();
    Home::new(env.home()).key_or_create(&KeyRole::Operator).unwrap();
    let mut server = ControlServer::listen(control::socket_path(env.home(), std::process::id()), BOOTED).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = Box::new(Pipe(tx));
    server.attach(if on_channel { Input::Channel(pipe) } else { Input::Uart(pipe) });
    server.output(b"RVM 0.1.0\n");
    (server, rx)
}

/// Start `rvm-loader args` against `env`.
fn spawn(env: &Env, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rvm-loader"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RVM_HOME", env.home())
        .env("RVM_IMAGE_DIR", env.images.path())
        .env_remove("RVM_QEMU")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Out {
    let o = child.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// An admission as the hypervisor reads it from the writes on `rx` (one
/// whole frame per write, the `Admission` frame then its data), checked:
/// its nonce and bundle, its signature verified with this home's operator
/// key over the booted bundle's digest.
fn admission(env: &Env, rx: &Receiver<Vec<u8>>) -> (u64, Vec<u8>) {
    use rvm_abi::control::{Inbound, InboundDecoder};
    let mut decoder = InboundDecoder::new();
    let (mut begun, mut bundle) = (None, Vec::new());
    loop {
        let frame = rx.recv_timeout(Duration::from_secs(30)).expect("the admission reached the channel");
        assert_eq!(&frame[..2], b"RC", "a frame per write");
        let len = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        assert_eq!(frame.len(), 8 + len, "a whole frame per write");
        for &b in &frame {
            match decoder.push(b) {
                None => {}
                Some(Ok(Inbound::AdmissionBegins { nonce, signature, len })) => begun = Some((nonce, signature, len)),
                Some(Ok(Inbound::AdmissionByte(x))) => bundle.push(x),
                Some(other) => panic!("not an admission: {other:?}"),
            }
        }
        if begun.is_some_and(|(_, _, len)| bundle.len() == len) {
            break;
        }
    }
    let (nonce, signature, _) = begun.unwrap();
    let key = Home::new(env.home()).key(&KeyRole::Operator).unwrap().unwrap();
    let message = rvm_abi::control::admission_message(
        nonce,
        &rvm_loader::bundler::digest(&bundle),
        &rvm_loader::bundler::digest(BOOTED),
    );
    VerifyingKey::from_bytes(&key.public)
        .unwrap()
        .verify(&message, &Signature::from_bytes(&signature))
        .expect("signed by the operator key");
    (nonce, bundle)
}

fn with_guest() -> (Env, TempDir) {
    let env = Env::new();
    let t = TempDir::new("mod");
    std::fs::write(t.join("a.wasm"), agent_module()).unwrap();
    env.ok(&["guest", "add", "@metaharness/kernel@0.1.0", t.join("a.wasm").to_str().unwrap()]);
    (env, t)
}

fn last_run(env: &Env, name: &str) -> Option<rvm_loader::home::RunRecord> {
    let reg = Home::new(env.home()).load().unwrap();
    reg.partitions[&PartitionName::new(name).unwrap()].last_run.clone()
}

#[test]
fn deploy_admits_into_the_running_instance_and_a_refusal_changes_no_run() {
    let (env, _m) = with_guest();
    let (mut server, rx) = instance(&env, &["booted-one"], true);
    let child = spawn(&env, &["deploy", fixture("template-minimal").to_str().unwrap()]);
    let (nonce, bundle) = admission(&env, &rx);
    let parsed = Bundle::parse(&bundle).unwrap();
    let names: Vec<String> = parsed.partitions().map(|p| p.name().to_string()).collect();
    assert_eq!(names, ["demo-minimal"]);
    assert!(parsed.entries().all(|e| e.owner != GLOBAL), "no global entry");
    let answer = format!("rvm: admission {nonce} done: admitted demo-minimal as partition 2");
    server.output(format!("[booted-one] busy\n{answer}\n").as_bytes());
    let out = finish(child);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains(&answer), "{out:#?}");
    assert!(!out.stderr.contains("booting"), "no hypervisor of its own: {out:#?}");
    let run = last_run(&env, "demo-minimal").expect("a run record");
    assert_eq!(run.loader_pid, Some(std::process::id()));
    assert_eq!((run.state, run.ended_unix, run.partition_id), (RunState::Running, None, Some(2)));
    assert_eq!(run.boot_id.as_deref(), Some(BOOT_ID));
    let list = env.ok(&["partition", "list"]).stdout;
    assert!(list.contains(&format!("running (loader pid {})", std::process::id())), "{list}");

    // The hypervisor refuses the next one: exit 2 with its reason, no run.
    let child = spawn(&env, &["deploy", fixture("template-vertical_coding").to_str().unwrap()]);
    let (nonce, _) = admission(&env, &rx);
    server.output(format!("rvm: admission {nonce} refused: no memory for its reservation\n").as_bytes());
    let out = finish(child);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("the hypervisor refused it: no memory for its reservation"), "{out:#?}");
    assert_eq!(last_run(&env, "demo-coding"), None);
}

#[test]
fn an_instance_without_a_channel_cannot_take_an_admission_and_up_is_refused() {
    let (env, _m) = with_guest();
    let (_server, rx) = instance(&env, &[], false);
    let out = finish(spawn(&env, &["deploy", fixture("template-minimal").to_str().unwrap()]));
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("no control channel"), "{out:#?}");
    assert!(rx.try_recv().is_err(), "nothing went to the UART");
    assert_eq!(last_run(&env, "demo-minimal"), None);
    // `up` would start a second hypervisor on the same witness logs.
    let up = env.run(&["up", "demo-minimal"]);
    assert_eq!(up.code, 2, "{up:#?}");
    assert_eq!(last_run(&env, "demo-minimal"), None);
    assert!(up.stderr.contains("an instance of this RVM_HOME is running"), "{up:#?}");
    assert!(up.stderr.contains("instance stop"), "{up:#?}");
    // --no-boot only builds a bundle: still allowed.
    env.ok(&["up", "demo-minimal", "--no-boot"]);
}

#[test]
fn a_partition_in_the_instance_already_is_not_admitted_again() {
    let (env, _m) = with_guest();
    env.ok(&["deploy", fixture("template-minimal").to_str().unwrap(), "--no-boot"]);
    let (_server, rx) = instance(&env, &["demo-minimal"], true);
    let wasm_ref = fixture("template-minimal").join("wasm-guest.json");
    let out = finish(spawn(&env, &["guest", "boot", "--partition", "demo-minimal", "--wasm-ref", wasm_ref.to_str().unwrap()]));
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("is in the running instance already"), "{out:#?}");
    assert!(rx.try_recv().is_err(), "nothing was sent");
    assert!(!Path::new(&env.home().join("instance").join("status.json")).exists());
}

#[test]
fn an_instance_boots_without_partitions_and_files_one_named_at_run_time() {
    // No partition has a guest: the instance boots with none.
    let env = Env::new();
    let mut c = Chain::new(witness_seed(&env));
    let serial = [
        "rvm: booting an instance, 0 partitions".to_string(),
        c.key_line(),
        // A partition admitted while it runs: its log's name, then its records.
        "@N 1 tenant".to_string(),
        c.event(KernelEvent::PartitionCreate, 1),
        c.event(KernelEvent::PartitionStart, 1),
        "[tenant] hello".to_string(),
        c.event(KernelEvent::PartitionExit, 1),
        c.finish(),
        exit_line(0),
    ]
    .iter()
    .map(|l| l.trim_end().to_string() + "\n")
    .collect::<String>();
    let q = FakeQemu::new(&serial, "", 0);
    let out = env.run(&["instance", "serve", "--qemu", q.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:#?}");
    let bundle = q.bundle();
    let parsed = Bundle::parse(&bundle).unwrap();
    assert_eq!(parsed.partition_count(), 0);
    let config = parsed.global(EntryKind::BootConfig).and_then(|e| BootConfig::from_bytes(e.data)).unwrap();
    assert_ne!(config.flags & BOOT_FLAG_INSTANCE, 0);
    assert!(q.args().join(" ").contains("-m 512M"), "{:?}", q.args());
    for l in [
        "rvm-loader: booting no partition under",
        "rvm-loader: tenant: admitted as partition 1",
        "rvm-loader: tenant: exited",
        "rvm-loader: tenant at the end of the run: exited",
        "rvm-loader: witness tenant.log verified: 3 records, 3 signed",
    ] {
        assert!(out.stderr.contains(l), "missing {l:?}: {out:#?}");
    }
    assert!(out.stdout.contains("[tenant] hello"), "{out:#?}");
    // The live status listed it; the lock is gone and the end is noted.
    let dir = env.home().join("instance");
    let status: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["partitions"], serde_json::json!([["tenant", "exited"]]));
    assert!(!dir.join("instance.json").exists());
    let ended: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ended.json")).unwrap()).unwrap();
    assert_eq!(ended["ok"], true, "{ended}");
}
