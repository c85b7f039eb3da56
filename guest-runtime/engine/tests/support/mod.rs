//! Shared test support: building the real agents, forging small modules,
//! and a fake hypervisor with two partitions.
#![allow(dead_code)]

pub mod fake;
pub mod forge;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The agents under `agents/` that compile to wasm32.
pub const WASM_AGENTS: [&str; 7] = [
    "rvm-agent-reference",
    "rvm-agent-spin",
    "rvm-agent-bad-import",
    "rvm-agent-over-budget",
    "rvm-agent-packet",
    "rvm-agent-faulty",
    "rvm-agent-toolbox",
];

static BUILD: Mutex<bool> = Mutex::new(false);

/// The `.wasm` of agent package `package`, built for `wasm32-unknown-unknown`
/// (release) the first time it is asked for. `RVM_AGENT_WASM_DIR` points at
/// a directory of prebuilt agents instead (the Makefile sets it).
pub fn agent_wasm(package: &str) -> Vec<u8> {
    let file = format!("{}.wasm", package.replace('-', "_"));
    if let Some(dir) = std::env::var_os("RVM_AGENT_WASM_DIR") {
        let path = PathBuf::from(dir).join(&file);
        return std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    // A target directory of its own: the outer cargo may hold the lock on its own.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wasm-agents");
    let mut built = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if !*built {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--release")
            .arg("--target")
            .arg("wasm32-unknown-unknown");
        cmd.arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target);
        for p in WASM_AGENTS {
            cmd.arg("-p").arg(p);
        }
        let status = cmd.status().expect("run cargo to build the wasm agents");
        assert!(
            status.success(),
            "building the wasm agents failed: {status}"
        );
        *built = true;
    }
    let path = target.join("wasm32-unknown-unknown/release").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
