//! Helpers shared by the integration tests: temporary folders, a hash of a
//! whole directory tree, the fixtures, and running the built binaries.
#![allow(dead_code)]

pub mod modules;

use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary folder removed when dropped.
pub struct TempDir(pub PathBuf);

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("rvm-loader-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SHA-256 over every path, type, mode and content under `root` (in sorted
/// order); a missing root hashes as such.
pub fn tree_hash(root: &Path) -> String {
    fn walk(dir: &Path, base: &Path, h: &mut Sha256) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            h.update(rel.as_bytes());
            h.update([0]);
            h.update(meta.permissions().mode().to_le_bytes());
            if meta.is_dir() {
                h.update(b"d");
                walk(&p, base, h);
            } else {
                h.update(b"f");
                h.update(std::fs::read(&p).unwrap());
            }
        }
    }
    let mut h = Sha256::new();
    if root.exists() {
        walk(root, root, &mut h);
    } else {
        h.update(b"missing");
    }
    rvm_abi::hex::to_string(&h.finalize())
}

/// The adapter fixtures folder: the adapter's real output, kept in the
/// repository (`tests/data/host-rvm/README.md` says where each case comes from).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/host-rvm")
}

pub fn fixture(case: &str) -> PathBuf {
    fixtures().join(case)
}

/// Every fixture case.
pub const CASES: &[&str] = &[
    "claims-all-rules",
    "hostile-name",
    "permissions-empty",
    "permissions-star",
    "readme-claims",
    "scaffold-default",
    "template-minimal",
    "template-vertical_coding",
    "template-vertical_devops",
];

/// The valid cases emitted by the adapter (all four files).
pub const ADAPTER_CASES: &[(&str, &str)] = &[
    ("claims-all-rules", "all-rules"),
    ("permissions-empty", "no-perms"),
    ("permissions-star", "star-perms"),
    ("readme-claims", "my-bot"),
    ("template-minimal", "demo-minimal"),
    ("template-vertical_coding", "demo-coding"),
    ("template-vertical_devops", "demo-devops"),
];

/// Copy a fixture folder (to edit it or to add node_modules).
pub fn copy_fixture(case: &str, to: &Path) -> PathBuf {
    let dst = to.join(case);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(case)).unwrap() {
        let e = e.unwrap();
        let target = dst.join(e.file_name());
        std::fs::copy(e.path(), &target).unwrap();
        let mut perm = std::fs::metadata(&target).unwrap().permissions();
        perm.set_mode(0o644);
        std::fs::set_permissions(&target, perm).unwrap();
    }
    dst
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A loader home plus the environment the binary runs with.
pub struct Env {
    pub home: TempDir,
    pub images: TempDir,
    pub runtime: Vec<u8>,
}

impl Env {
    pub fn new() -> Self {
        let home = TempDir::new("home");
        // The home itself does not exist until a command writes to it.
        std::fs::remove_dir(home.path()).unwrap();
        let images = TempDir::new("images");
        let runtime = b"\x7fELF stand-in guest runtime for bundle tests".to_vec();
        std::fs::write(images.join("guest-runtime.elf"), &runtime).unwrap();
        std::fs::write(images.join("rvm.bin"), b"stand-in hypervisor image").unwrap();
        Self {
            home,
            images,
            runtime,
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn hash(&self) -> String {
        tree_hash(self.home())
    }

    /// Run `rvm-loader` in `cwd`.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Out {
        self.run_bin(env!("CARGO_BIN_EXE_rvm-loader"), cwd, args)
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
    }

    pub fn run_bin(&self, bin: &str, cwd: &Path, args: &[&str]) -> Out {
        let o = Command::new(bin)
            .args(args)
            .current_dir(cwd)
            .env("RVM_HOME", self.home())
            .env("RVM_IMAGE_DIR", self.images.path())
            .env_remove("RVM_QEMU")
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Run and expect success.
    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "{args:?} failed: {o:?}");
        o
    }

    /// Run, expect a refusal, and check the home did not change.
    pub fn refused(&self, args: &[&str]) -> Out {
        self.refused_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
    }

    pub fn refused_in(&self, cwd: &Path, args: &[&str]) -> Out {
        let before = self.hash();
        let o = self.run_in(cwd, args);
        assert_eq!(o.code, 2, "{args:?} should be refused: {o:?}");
        assert_eq!(self.hash(), before, "{args:?} changed RVM_HOME: {o:?}");
        o
    }
}

/// A module that imports the given `rvm` host functions with RVM's signatures.
pub fn agent_module() -> Vec<u8> {
    modules::rvm_agent(Some(2))
}

/// A wasm-bindgen JS-glue module.
pub fn glue_module() -> Vec<u8> {
    modules::module(
        &[
            ("wbg", "__wbindgen_throw", &[0x7f, 0x7f], &[]),
            ("wbg", "__wbg_log_1", &[0x7f], &[]),
        ],
        Some(17),
    )
}

/// A hypervisor's witness logs as the kernel keeps them (`rvm_witness`),
/// for stand-in serial streams: records chained, checkpoints signed with a
/// seed, frames as the console carries them.
pub struct Chain {
    signer: rvm_witness::CheckpointSigner,
    logs: std::collections::BTreeMap<u32, rvm_witness::WitnessLog>,
}

impl Chain {
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            signer: rvm_witness::CheckpointSigner::from_seed(&seed),
            logs: std::collections::BTreeMap::new(),
        }
    }

    /// The `@K` line announcing the key.
    pub fn key_line(&self) -> String {
        line(&self.signer.public_key().frame())
    }

    fn drain(log: &mut rvm_witness::WitnessLog) -> String {
        let mut out = Vec::new();
        while let Some(o) = log.drain_next() {
            out.push(line(&o.to_frame(log.id())));
        }
        out.join("\n")
    }

    /// The frame lines of a kernel event about `partition`, in its own log.
    pub fn event(&mut self, e: rvm_abi::witness::KernelEvent, partition: u32) -> String {
        use rvm_abi::witness::{Outcome, WitnessOp, WitnessRecord};
        let log = self.logs.entry(partition).or_insert_with(|| {
            rvm_witness::WitnessLog::new(rvm_witness::LogId(partition), Default::default()).unwrap()
        });
        let a = log
            .append(WitnessRecord::new(
                WitnessOp::Event(e),
                Outcome::Done,
                partition,
            ))
            .unwrap();
        if a.checkpoint_due {
            log.checkpoint(&self.signer).unwrap();
        }
        Self::drain(log)
    }

    /// Shutdown: every log's head signed.
    pub fn finish(&mut self) -> String {
        let mut out = Vec::new();
        for log in self.logs.values_mut() {
            log.checkpoint(&self.signer).unwrap();
            out.push(Self::drain(log));
        }
        out.join("\n")
    }
}

/// A frame as one console line, without its line end.
pub fn line(f: &rvm_abi::frame::Frame) -> String {
    String::from_utf8(f.encode().as_bytes().to_vec())
        .unwrap()
        .trim_end()
        .to_string()
}

/// This home's witness key seed (created if needed) — what the loader puts
/// in the bundle, so a stand-in can sign as the hypervisor would.
pub fn witness_seed(env: &Env) -> [u8; 32] {
    env.ok(&["keys", "--create"]);
    std::fs::read(env.home().join("keys/witness.seed"))
        .unwrap()
        .try_into()
        .unwrap()
}

/// A stand-in for QEMU: a shell script that records its command line and
/// the bundle it was given, prints a prepared serial stream and exits with a
/// chosen code.
pub struct FakeQemu {
    dir: TempDir,
}

impl FakeQemu {
    /// `serial` is printed; then the script runs `tail` (shell) and exits `code`.
    pub fn new(serial: &str, tail: &str, code: i32) -> Self {
        let dir = TempDir::new("qemu");
        std::fs::write(dir.join("serial.txt"), serial).unwrap();
        let d = dir.path().display();
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/args.txt\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -initrd ]; then cp \"$a\" {d}/bundle.bin; fi\n  prev=$a\ndone\necho $$ > {d}/pid\ncat {d}/serial.txt\n{tail}\nexit {code}\n"
        );
        let path = dir.join("qemu-system-aarch64");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.join("qemu-system-aarch64")
    }
    pub fn args(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("args.txt"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
    pub fn bundle(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("bundle.bin")).unwrap()
    }
    pub fn pid(&self) -> String {
        std::fs::read_to_string(self.dir.join("pid"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// The hypervisor's exit frame as one console line, without its line end.
pub fn exit_line(code: u32) -> String {
    String::from_utf8(rvm_abi::frame::ExitFrame { code }.encode().as_bytes().to_vec())
        .unwrap()
        .trim_end()
        .to_string()
}
