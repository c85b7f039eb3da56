//! `caps prove` (P3 approvals signed with a partition's authority key) and
//! the witness commands' refusals, without booting.

mod common;

use common::*;
use rvm_abi::bundle::{Bundle, EntryKind};
use rvm_abi::{Hypercall, ObjectKind};
use rvm_abi::approval::{RootRef, APPROVAL_MESSAGE_LEN};
use rvm_cap::proof::{approval_message, revoke_args_digest, ArgsDigest};
use rvm_cap::{Nonce, ObjectRef, PartitionId};

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

fn unhex(s: &str) -> Vec<u8> {
    rvm_abi::hex::decode_vec(s.as_bytes()).unwrap()
}

#[test]
fn an_approval_verifies_under_the_key_bound_in_the_bundle() {
    let (env, _m) = with_guest();
    let bundle = env.images.join("star.bundle");
    let o = env.ok(&[
        "deploy",
        fixture("permissions-star").to_str().unwrap(),
        "--no-boot",
        "--bundle-out",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        o.stdout.contains("authority key of star-perms sha256:"),
        "{o:?}"
    );
    let bytes = std::fs::read(&bundle).unwrap();
    let b = Bundle::parse(&bytes).unwrap();
    let bound: [u8; 32] = b
        .owned(EntryKind::AuthorityKey, 0)
        .next()
        .unwrap()
        .data
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bound).unwrap();
    // The bundle's boot id: the approval is for a boot of this bundle.
    let boot_id = b.boot_id().expect("every bundle carries a boot id");
    let boot_hex = rvm_abi::hex::to_string(&boot_id);
    let root = RootRef {
        partition: 1,
        index: 3,
        generation: 0,
    };
    let message = |op, object, nonce, args: &ArgsDigest| {
        approval_message(
            op,
            object,
            PartitionId(1),
            root,
            Nonce(nonce),
            boot_id,
            args,
        )
        .to_bytes()
    };

    let approve = |args: &[&str]| -> serde_json::Value {
        let mut all = vec![
            "caps",
            "prove",
            "--partition",
            "star-perms",
            "--partition-id",
            "1",
            "--root",
            "3",
            "--boot-id",
            &boot_hex,
            "--json",
        ];
        all.extend_from_slice(args);
        serde_json::from_str(&env.ok(&all).stdout).unwrap()
    };
    let check = |a: &serde_json::Value, want: [u8; APPROVAL_MESSAGE_LEN]| {
        assert_eq!(unhex(a["message"].as_str().unwrap()), want, "{a}");
        assert_eq!(unhex(a["authority"].as_str().unwrap()), bound, "{a}");
        let sig: [u8; 64] = unhex(a["signature"].as_str().unwrap()).try_into().unwrap();
        key.verify_strict(&want, &ed25519_dalek::Signature::from_bytes(&sig))
            .unwrap();
        // Any other message does not verify with this signature.
        let mut other = want;
        other[32] ^= 1;
        assert!(key
            .verify_strict(&other, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_err());
    };

    // CapRevoke binds no arguments.
    let a = approve(&[
        "--op",
        "cap-revoke",
        "--object",
        "channel:0",
        "--nonce",
        "7",
    ]);
    check(
        &a,
        message(
            Hypercall::CapRevoke,
            ObjectRef::new(ObjectKind::Channel, 0),
            7,
            &revoke_args_digest(),
        ),
    );
    // ChannelSend binds the message bytes.
    let a = approve(&[
        "--op",
        "ChannelSend",
        "--object",
        "channel:2",
        "--nonce",
        "0x10",
        "--data-hex",
        "68656c6c6f",
    ]);
    check(
        &a,
        message(
            Hypercall::ChannelSend,
            ObjectRef::new(ObjectKind::Channel, 2),
            16,
            &ArgsDigest::of(&[], b"hello"),
        ),
    );
    // Words, for CapDerive.
    let a = approve(&[
        "--op",
        "CapDerive",
        "--object",
        "resource:0",
        "--nonce",
        "8",
        "--words",
        "2,3,0,0,0,0,0,0,0,0",
    ]);
    check(
        &a,
        message(
            Hypercall::CapDerive,
            ObjectRef::new(ObjectKind::Resource, 0),
            8,
            &ArgsDigest::of(&[2, 3, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
        ),
    );
    // The text form carries the same fields.
    let text = env
        .ok(&[
            "caps",
            "prove",
            "--partition",
            "star-perms",
            "--partition-id",
            "1",
            "--root",
            "3",
            "--boot-id",
            &boot_hex,
            "--op",
            "cap-revoke",
            "--object",
            "channel:0",
            "--nonce",
            "7",
        ])
        .stdout;
    assert!(text.starts_with(&format!("rvm P3 approval v2\npartition star-perms\npartition-id 1\noperation CapRevoke\nobject channel:0\nroot 1:0x3\nboot-id {boot_hex}\nnonce 7\n")), "{text}");
    // Another build of the same deployment carries another boot id.
    let again = env.images.join("star2.bundle");
    env.ok(&[
        "deploy",
        fixture("permissions-star").to_str().unwrap(),
        "--no-boot",
        "--bundle-out",
        again.to_str().unwrap(),
    ]);
    let again = std::fs::read(&again).unwrap();
    let again_id = Bundle::parse(&again).unwrap().boot_id().unwrap();
    assert_ne!(again_id, boot_id, "every bundle gets a fresh boot id");
    assert_eq!(again.len(), bytes.len(), "and nothing else differs in size");
    // Removing the partition removes its authority key.
    env.ok(&["partition", "remove", "star-perms"]);
    assert!(!env.home().join("keys/authority/star-perms.seed").exists());
}

#[test]
fn caps_prove_refusals() {
    let (env, _m) = with_guest();
    env.ok(&[
        "deploy",
        fixture("template-minimal").to_str().unwrap(),
        "--no-boot",
    ]);
    env.ok(&[
        "deploy",
        fixture("permissions-star").to_str().unwrap(),
        "--no-boot",
    ]);
    let base = |p: &str| -> Vec<String> {
        [
            "caps",
            "prove",
            "--partition",
            p,
            "--op",
            "cap-revoke",
            "--object",
            "channel:0",
            "--root",
            "1",
            "--nonce",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        env.refused(&a)
    };
    // No P3 right, no key.
    let mut a = base("demo-minimal");
    a.extend(["--partition-id".into(), "1".into()]);
    let o = run(a);
    assert!(
        o.stderr
            .contains("partition demo-minimal: has no authority key"),
        "{o:?}"
    );
    assert!(!env.home().join("keys/authority/demo-minimal.seed").exists());
    // Never booted: the id must be given.
    let o = run(base("star-perms"));
    assert!(
        o.stderr
            .contains("has not booted yet, so its partition id is not known"),
        "{o:?}"
    );
    // Unknown operation and object kind, bad id.
    let mut a = base("star-perms");
    a[5] = "fork".into();
    let o = run(a);
    assert!(
        o.stderr
            .contains("\"fork\" is not a hypercall; one of Null, ConsoleWrite"),
        "{o:?}"
    );
    let mut a = base("star-perms");
    a[7] = "pipe:1".into();
    let o = run(a);
    assert!(o.stderr.contains("\"pipe\" is not an object kind"), "{o:?}");
    let mut a = base("star-perms");
    a.extend(["--partition-id".into(), "0".into()]);
    let o = run(a);
    assert!(o.stderr.contains("partition ids count from 1"), "{o:?}");
    // Never booted: no boot id is known either, so it must be given.
    let mut a = base("star-perms");
    a.extend(["--partition-id".into(), "1".into()]);
    let o = run(a);
    assert!(o.stderr.contains("has no recorded boot id"), "{o:?}");
    let mut a = base("star-perms");
    a.extend([
        "--partition-id".into(),
        "1".into(),
        "--boot-id".into(),
        "ab".into(),
    ]);
    let o = run(a);
    assert!(o.stderr.contains("--boot-id: is not 32 bytes"), "{o:?}");
    // Unregistered partition.
    let mut a = base("nobody");
    a.extend(["--partition-id".into(), "1".into()]);
    let o = run(a);
    assert!(
        o.stderr.contains("partition nobody: is not registered"),
        "{o:?}"
    );
}

#[test]
fn witness_commands_refuse_what_is_not_there() {
    let (env, _m) = with_guest();
    let o = env.refused(&["witness", "verify"]);
    assert!(
        o.stderr
            .contains("no witness logs: nothing has booted from this RVM_HOME yet"),
        "{o:?}"
    );
    env.ok(&[
        "deploy",
        fixture("template-minimal").to_str().unwrap(),
        "--no-boot",
    ]);
    let o = env.refused(&["witness", "show", "demo-minimal"]);
    assert!(
        o.stderr.contains("it is registered but has not booted yet"),
        "{o:?}"
    );
    let o = env.refused(&["witness", "show", "nobody"]);
    assert!(
        o.stderr.contains("no partition of that name is registered"),
        "{o:?}"
    );
    let o = env.refused(&["witness", "show", "../etc/passwd.log"]);
    assert!(o.stderr.contains("no such log file"), "{o:?}");
    let o = env.refused(&["witness", "export", "bad name!"]);
    assert!(o.stderr.contains("is not a safe identifier"), "{o:?}");
    let o = env.refused(&["witness", "verify-proof", "/nonexistent/proof"]);
    assert!(
        o.stderr.contains("/nonexistent/proof: no such file"),
        "{o:?}"
    );
    let junk = env.images.join("junk.proof");
    std::fs::write(&junk, "not a proof\n").unwrap();
    let o = env.refused(&["witness", "verify-proof", junk.to_str().unwrap()]);
    assert!(o.stderr.contains("not an inclusion proof"), "{o:?}");
}
