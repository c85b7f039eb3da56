//! Every adapter fixture case through the built binary: what the loader
//! accepts (and what it stores and puts in the bundle), what it refuses and
//! why, with exit code 2 and `RVM_HOME` unchanged for every refusal.

mod common;

use common::*;
use rvm_abi::bundle::{BootConfig, Bundle, CapDesc, EntryKind, MemoryTier, PartitionDesc, GLOBAL};
use rvm_abi::{ObjectKind, ProofTier, Rights};
use rvm_loader::home::Home;
use sha2::{Digest, Sha256};

fn names_of(case: &str) -> &'static str {
    ADAPTER_CASES
        .iter()
        .find(|(c, _)| *c == case)
        .map(|(_, n)| *n)
        .unwrap()
}

#[test]
fn check_accepts_every_valid_case() {
    let env = Env::new();
    for case in CASES.iter().filter(|c| **c != "hostile-name") {
        let o = env.run(&["check", fixture(case).to_str().unwrap()]);
        assert_eq!(o.code, 0, "{case}: {o:?}");
        assert!(o.stdout.starts_with("ok: "), "{case}: {o:?}");
    }
    // check never writes anything.
    assert!(!env.home().exists());
}

#[test]
fn check_refuses_the_hostile_case_with_every_reason() {
    let env = Env::new();
    let dir = fixture("hostile-name");
    let o = env.refused(&["check", dir.to_str().unwrap()]);
    let d = dir.display();
    let lines: Vec<&str> = o.stderr.lines().collect();
    let expect = [
        format!("{d}/rvm-partition.toml: line 4, column 12: invalid TOML: expected newline, `#`"),
        format!("{d}/wasm-guest.json: partition: \"x\\\"\\n[partition]\\nname=\\\"evil\\\"; $(touch /tmp/rvm-pwned) `id` ]\" is not a safe identifier: it is longer than 32 bytes"),
        format!("{d}/install-rvm.sh: line 3: unsafe: unexpected command \"[partition]\" (and it runs before `set -euo pipefail`)"),
        format!("{d}/install-rvm.sh: line 4: unsafe: command substitution \"$(touch /tmp/rvm-pwned)\" would run when the script runs (and it runs before `set -euo pipefail`)"),
        format!("{d}/install-rvm.sh: line 4: unsafe: command substitution \"`id`\" would run when the script runs (and it runs before `set -euo pipefail`)"),
        format!("{d}/install-rvm.sh: line 29: unsafe: command substitution \"$(touch /tmp/rvm-pwned)\" would run when the script runs"),
    ];
    for e in &expect {
        assert!(
            lines.contains(&e.as_str()),
            "missing line {e:?} in:\n{}",
            o.stderr
        );
    }
}

#[test]
fn the_hostile_case_is_refused_by_every_command() {
    let env = Env::new();
    let dir = fixture("hostile-name");
    let d = dir.display().to_string();
    // Nothing registered yet: the home must not even be created.
    let o = env.refused_in(
        &dir,
        &[
            "partition",
            "register",
            "--manifest",
            "./rvm-partition.toml",
        ],
    );
    assert_eq!(
        o.stderr.trim(),
        "./rvm-partition.toml: line 4, column 12: invalid TOML: expected newline, `#`"
    );
    let o = env.refused_in(
        &dir,
        &["caps", "install", "--table", "./capability-table.json"],
    );
    assert_eq!(
        o.stderr.trim(),
        "./rvm-partition.toml: line 4, column 12: invalid TOML: expected newline, `#`"
    );
    let o = env.refused_in(
        &dir,
        &[
            "guest",
            "boot",
            "--partition",
            "x",
            "--wasm-ref",
            "./wasm-guest.json",
        ],
    );
    assert!(
        o.stderr
            .starts_with("./wasm-guest.json: partition: \"x\\\""),
        "{o:?}"
    );
    let o = env.refused(&["deploy", &d, "--no-boot"]);
    assert!(
        o.stderr
            .contains("rvm-partition.toml: line 4, column 12: invalid TOML"),
        "{o:?}"
    );
    assert!(!env.home().exists());

    // And with a populated home.
    let t = TempDir::new("m");
    std::fs::write(t.join("a.wasm"), agent_module()).unwrap();
    env.ok(&[
        "deploy",
        fixture("template-minimal").to_str().unwrap(),
        "--wasm",
        t.join("a.wasm").to_str().unwrap(),
        "--no-boot",
    ]);
    env.refused_in(
        &dir,
        &[
            "partition",
            "register",
            "--manifest",
            "./rvm-partition.toml",
        ],
    );
    env.refused(&["deploy", &d, "--no-boot"]);
    env.refused(&[
        "launch",
        "--partition",
        &format!("{d}/rvm-partition.toml"),
        "--no-boot",
    ]);
}

/// The expected tokens of a case, as (rights, tier, resource, expiry).
fn tokens_of(case: &str) -> Vec<(Rights, ProofTier, Option<String>, u64)> {
    let text = std::fs::read_to_string(fixture(case).join("capability-table.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut r = Rights::empty();
            for n in t["rights"].as_array().unwrap() {
                r |= Rights::from_name(n.as_str().unwrap()).unwrap();
            }
            (
                r,
                ProofTier::from_name(t["proof_tier"].as_str().unwrap()).unwrap(),
                t.get("resource").map(|s| s.as_str().unwrap().to_string()),
                t["expires_at"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_install_script_commands_register_every_adapter_case() {
    for (case, name) in ADAPTER_CASES {
        let env = Env::new();
        let dir = fixture(case);
        let module = TempDir::new("module");
        let wasm = module.join("agent.wasm");
        std::fs::write(&wasm, agent_module()).unwrap();
        // The reference agent stands in for the adapter's package.
        env.ok(&[
            "guest",
            "add",
            "@metaharness/kernel@0.1.0",
            wasm.to_str().unwrap(),
        ]);

        // The three commands of install-rvm.sh, run from the case's folder.
        let o = env.run_in(
            &dir,
            &[
                "partition",
                "register",
                "--manifest",
                "./rvm-partition.toml",
            ],
        );
        assert_eq!(o.code, 0, "{case}: {o:?}");
        assert!(
            o.stdout.contains(&format!(
                "partition {name} registered: tier Warm, deadline urgency 0.50, cut pressure 0.30"
            )),
            "{o:?}"
        );
        let o = env.run_in(
            &dir,
            &["caps", "install", "--table", "./capability-table.json"],
        );
        assert_eq!(o.code, 0, "{case}: {o:?}");
        let bundle = env.images.join(&format!("{name}.bundle"));
        let o = env.run_in(
            &dir,
            &[
                "guest",
                "boot",
                "--partition",
                name,
                "--wasm-ref",
                "./wasm-guest.json",
                "--no-boot",
                "--bundle-out",
                bundle.to_str().unwrap(),
            ],
        );
        assert_eq!(o.code, 0, "{case}: {o:?}");

        // What the registry holds.
        let reg = Home::new(env.home()).load().unwrap();
        let rec = &reg.partitions.values().next().unwrap();
        assert_eq!(rec.spec.name.as_str(), *name);
        assert_eq!(rec.spec.memory_tier, MemoryTier::Warm);
        let stored: Vec<_> = rec
            .caps
            .as_ref()
            .unwrap()
            .tokens
            .iter()
            .map(|t| (t.rights, t.proof_tier, t.resource.clone(), t.expires_at))
            .collect();
        assert_eq!(stored, tokens_of(case), "{case}");
        let g = rec.guest.as_ref().unwrap();
        assert_eq!(
            g.guest.as_ref().unwrap().guest.to_string(),
            "@metaharness/kernel@0.1.0"
        );

        // What the bundle says, read with the hypervisor's parser.
        let bytes = std::fs::read(&bundle).unwrap();
        let b = Bundle::parse(&bytes).unwrap();
        assert_eq!(b.partition_count(), 1);
        let p: PartitionDesc = b.partitions().next().unwrap();
        assert_eq!(p.name(), *name);
        assert_eq!(
            (
                p.memory_tier,
                p.deadline_urgency,
                p.cut_pressure,
                p.default_tier
            ),
            (MemoryTier::Warm, 50, 30, 2)
        );
        assert_eq!(p.witness_key_fingerprint, None);
        assert_eq!(
            b.owned(EntryKind::Wasm, 0).next().unwrap().data,
            agent_module().as_slice()
        );
        assert_eq!(
            b.global(EntryKind::GuestRuntime).unwrap().data,
            env.runtime.as_slice()
        );
        // `--bundle-out` leaves the witness key's seed out (issue 12, item 3).
        assert!(b.global(EntryKind::WitnessKeySeed).is_none());
        // A table with P3 rights gets the partition's own authority key,
        // made at `caps install` and bound ahead of its capabilities.
        let p3 = tokens_of(case).iter().any(|t| t.1 == ProofTier::P3);
        let key_file = env.home().join(format!("keys/authority/{name}.seed"));
        assert_eq!(key_file.is_file(), p3, "{case}");
        let bound: Vec<&[u8]> = b
            .owned(EntryKind::AuthorityKey, 0)
            .map(|e| e.data)
            .collect();
        if p3 {
            let seed: [u8; 32] = std::fs::read(&key_file).unwrap().try_into().unwrap();
            let public = rvm_loader::keys::Key::from_seed(seed).public;
            assert_eq!(bound, [public.as_slice()], "{case}");
        } else {
            assert!(bound.is_empty(), "{case}");
        }
        let config = BootConfig::from_bytes(b.global(EntryKind::BootConfig).unwrap().data).unwrap();
        assert_eq!(
            config.run_budget_ms, 90_000,
            "three quarters of the 120 s default timeout"
        );
        let caps: Vec<CapDesc> = b
            .owned(EntryKind::Capability, 0)
            .map(|e| CapDesc::from_bytes(e.data).unwrap())
            .collect();
        let want = tokens_of(case);
        assert_eq!(caps.len(), want.len());
        for (c, (rights, tier, resource, expiry)) in caps.iter().zip(&want) {
            assert_eq!(c.kind, ObjectKind::Resource);
            assert_eq!(c.rights, *rights);
            assert_eq!(c.expires_at, *expiry);
            for (i, (r, _)) in rvm_abi::rights::RIGHT_NAMES.iter().enumerate() {
                assert_eq!(
                    c.tiers[i],
                    if rights.contains(*r) { *tier as u8 } else { 0 }
                );
            }
            let digest = match resource {
                Some(r) => Sha256::digest(r.as_bytes())[..16].try_into().unwrap(),
                None => [0u8; 16],
            };
            assert_eq!(c.resource_digest, digest);
        }
        assert_eq!(
            b.entries().filter(|e| e.kind == EntryKind::Channel).count(),
            0
        );
        assert!(b.entries().all(|e| e.owner == GLOBAL || e.owner == 0));
    }
}

#[test]
fn the_scaffolder_pair_is_accepted() {
    let env = Env::new();
    let dir = fixture("scaffold-default");
    let o = env.run_in(
        &dir,
        &["partition", "register", "--manifest", "./rvm.manifest.toml"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    // The table resolves its partition from the rvm.manifest.toml beside it.
    let o = env.run_in(
        &dir,
        &["caps", "install", "--table", "./capability-table.json"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout
            .contains("installed 1 capabilities for partition scaffolded (P1: 0, P2: 1, P3: 0)"),
        "{o:?}"
    );
    // Deploying needs a module: there is no wasm-guest.json.
    let o = env.refused(&["deploy", dir.to_str().unwrap()]);
    assert!(
        o.stderr
            .contains("has no wasm-guest.json: pass --wasm FILE"),
        "{o:?}"
    );
    let t = TempDir::new("m");
    std::fs::write(t.join("a.wasm"), agent_module()).unwrap();
    let o = env.run(&[
        "deploy",
        dir.to_str().unwrap(),
        "--wasm",
        t.join("a.wasm").to_str().unwrap(),
        "--no-boot",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn the_adapters_own_package_is_refused_until_a_module_is_registered() {
    let env = Env::new();
    let dir = fixture("template-minimal");
    env.run_in(
        &dir,
        &[
            "partition",
            "register",
            "--manifest",
            "./rvm-partition.toml",
        ],
    );
    env.run_in(
        &dir,
        &["caps", "install", "--table", "./capability-table.json"],
    );
    let o = env.refused_in(
        &dir,
        &[
            "guest",
            "boot",
            "--partition",
            "demo-minimal",
            "--wasm-ref",
            "./wasm-guest.json",
        ],
    );
    assert!(
        o.stderr.starts_with("./wasm-guest.json: no WebAssembly module for guest @metaharness/kernel@0.1.0: pass --wasm FILE, or register one with `rvm-loader guest add @metaharness/kernel@0.1.0 FILE`"),
        "{o:?}"
    );
}

#[test]
fn deploy_takes_every_valid_folder_in_one_step() {
    let env = Env::new();
    let t = TempDir::new("m");
    std::fs::write(t.join("a.wasm"), agent_module()).unwrap();
    env.ok(&[
        "guest",
        "add",
        "@metaharness/kernel@0.1.0",
        t.join("a.wasm").to_str().unwrap(),
    ]);
    for (case, name) in ADAPTER_CASES {
        let o = env.run(&["deploy", fixture(case).to_str().unwrap(), "--no-boot"]);
        assert_eq!(o.code, 0, "{case}: {o:?}");
        assert!(
            o.stdout.contains(&format!("deployed partition {name}")),
            "{o:?}"
        );
    }
    let o = env.ok(&["partition", "list"]);
    for (_, name) in ADAPTER_CASES {
        assert!(o.stdout.contains(name), "{o:?}");
    }
    // Deploying the same folder again changes nothing but the run records.
    let o = env.ok(&[
        "deploy",
        fixture("readme-claims").to_str().unwrap(),
        "--no-boot",
    ]);
    assert!(o.stdout.contains("deployed partition my-bot"), "{o:?}");
    assert_eq!(names_of("readme-claims"), "my-bot");
}

#[test]
fn readme_claims_warns_about_expiry() {
    let env = Env::new();
    let o = env.ok(&["check", fixture("readme-claims").to_str().unwrap()]);
    assert!(o.stderr.contains("capability-table.json: [1].expires_at: expired at 2023-11-15 22:13:20 UTC: the kernel will refuse every use of this token"), "{o:?}");
    assert!(o.stderr.contains("capability-table.json: [0].expires_at: expired at 2023-11-15 22:13:20 UTC, but a P1 token's expiry is not checked"), "{o:?}");
}
