//! Malformed, hostile and inconsistent input: one clear message (file,
//! field or line, reason), exit code 2, and `RVM_HOME` byte-for-byte as it
//! was — checked both on a fresh home (which must not even be created) and on
//! a populated one.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A home with one partition deployed (so there is something to disturb).
fn populated() -> (Env, TempDir) {
    let env = Env::new();
    let t = TempDir::new("mod");
    std::fs::write(t.join("a.wasm"), agent_module()).unwrap();
    env.ok(&[
        "guest",
        "add",
        "@metaharness/kernel@0.1.0",
        t.join("a.wasm").to_str().unwrap(),
    ]);
    env.ok(&[
        "deploy",
        fixture("template-minimal").to_str().unwrap(),
        "--no-boot",
    ]);
    (env, t)
}

/// A copy of `case` with `file` replaced by `content`.
fn edited(tmp: &TempDir, case: &str, file: &str, content: &[u8]) -> PathBuf {
    let dir = copy_fixture(case, tmp.path());
    std::fs::write(dir.join(file), content).unwrap();
    dir
}

/// Run `args` in `dir` on a fresh and on a populated home; both refuse with
/// a first line equal to `want` (with `{dir}` replaced).
fn refused_everywhere(dir: &Path, args: &[&str], want: &str) {
    let want = want.replace("{dir}", &dir.display().to_string());
    let fresh = Env::new();
    let o = fresh.refused_in(dir, args);
    assert_eq!(
        o.stderr.lines().next().unwrap_or(""),
        want,
        "fresh home: {o:?}"
    );
    assert!(!fresh.home().exists(), "a refusal created RVM_HOME");
    let (env, _m) = populated();
    let o = env.refused_in(dir, args);
    assert_eq!(
        o.stderr.lines().next().unwrap_or(""),
        want,
        "populated home: {o:?}"
    );
}

const REGISTER: &[&str] = &[
    "partition",
    "register",
    "--manifest",
    "./rvm-partition.toml",
];
const CAPS: &[&str] = &[
    "caps",
    "install",
    "--table",
    "./capability-table.json",
    "--partition",
    "demo-minimal",
];

#[test]
fn unknown_right() {
    let t = TempDir::new("t");
    let dir = edited(
        &t,
        "template-minimal",
        "capability-table.json",
        br#"[{"rights":["EXECUTE","ADMIN"],"proof_tier":"P2","expires_at":0}]"#,
    );
    refused_everywhere(&dir, CAPS, "./capability-table.json: [0].rights[1]: unknown right \"ADMIN\" (RVM's rights: READ, WRITE, GRANT, REVOKE, EXECUTE, PROVE, GRANT_ONCE)");
}

#[test]
fn rights_tier_mismatch() {
    let t = TempDir::new("t");
    let dir = edited(
        &t,
        "template-minimal",
        "capability-table.json",
        br#"[{"rights":["READ","PROVE"],"resource":"r","proof_tier":"P2","expires_at":0}]"#,
    );
    refused_everywhere(&dir, CAPS, "./capability-table.json: [0].proof_tier: P2 is below P3 required for PROVE (tier rule: READ, GRANT_ONCE P1; WRITE, EXECUTE P2; GRANT, REVOKE, PROVE P3)");
    let o = Env::new().refused(&["check", dir.to_str().unwrap()]);
    assert!(
        o.stderr
            .contains("[0].proof_tier: P2 is below P3 required for PROVE"),
        "{o:?}"
    );
}

#[test]
fn a_guest_for_a_partition_that_does_not_exist() {
    let t = TempDir::new("t");
    let dir = copy_fixture("template-minimal", t.path());
    let args = [
        "guest",
        "boot",
        "--partition",
        "demo-minimal",
        "--wasm-ref",
        "./wasm-guest.json",
        "--no-boot",
    ];
    let fresh = Env::new();
    let o = fresh.refused_in(&dir, &args);
    assert_eq!(
        o.stderr.trim(),
        "./wasm-guest.json: is a guest for partition demo-minimal, which is not registered (run `rvm-loader partition register --manifest FILE` first)"
    );
    assert!(!fresh.home().exists());
    // A guest reference naming another partition than --partition.
    let (env, _m) = populated();
    let dir2 = edited(
        &t,
        "readme-claims",
        "wasm-guest.json",
        &std::fs::read(fixture("readme-claims/wasm-guest.json")).unwrap(),
    );
    let o = env.refused_in(
        &dir2,
        &[
            "guest",
            "boot",
            "--partition",
            "demo-minimal",
            "--wasm-ref",
            "./wasm-guest.json",
            "--no-boot",
        ],
    );
    assert_eq!(
        o.stderr.trim(),
        "./wasm-guest.json: partition: names partition my-bot but --partition names demo-minimal"
    );
    // In a folder, the names must agree.
    let g = std::fs::read_to_string(fixture("template-minimal/wasm-guest.json"))
        .unwrap()
        .replace("\"demo-minimal\"", "\"someone-else\"");
    let dir3 = edited(
        &t,
        "template-vertical_coding",
        "wasm-guest.json",
        g.as_bytes(),
    );
    let o = env.refused(&["check", dir3.to_str().unwrap()]);
    assert!(
        o.stderr
            .contains("wasm-guest.json: partition: names partition someone-else but"),
        "{o:?}"
    );
    let o = env.refused(&["deploy", dir3.to_str().unwrap(), "--no-boot"]);
    assert!(o.stderr.contains("names partition someone-else"), "{o:?}");
}

#[test]
fn a_100_kb_description_is_accepted_stored_whole_and_shown_shortened() {
    // The adapter emits a harness's description as it is.
    let t = TempDir::new("t");
    let text = format!(
        "[partition]\nname = \"big\"\n\n[metadata]\ndescription = \"{}\"\n",
        "A".repeat(100 * 1024)
    );
    let dir = edited(
        &t,
        "template-minimal",
        "rvm-partition.toml",
        text.as_bytes(),
    );
    let env = Env::new();
    let o = env.run_in(&dir, REGISTER);
    assert_eq!(o.code, 0, "{o:?}");
    let listed = env.ok(&["status"]).stdout;
    let line = listed.lines().find(|l| l.trim_start().starts_with("description ")).expect("a description line");
    assert!(line.len() < 120 && line.contains("...\" (102400 bytes)"), "{line}");
    // Still bounded: the manifest file's own limit (1 MiB) refuses more.
    let huge = format!(
        "[partition]\nname = \"big\"\n\n[metadata]\ndescription = \"{}\"\n",
        "A".repeat(1 << 20)
    );
    let dir = edited(&t, "template-minimal", "rvm-partition.toml", huge.as_bytes());
    let o = env.refused_in(&dir, REGISTER);
    assert!(o.stderr.contains("rvm-partition.toml"), "{o:?}");
}

#[test]
fn duplicate_names() {
    let t = TempDir::new("t");
    // A key twice in the manifest.
    let dir = edited(
        &t,
        "template-minimal",
        "rvm-partition.toml",
        b"[partition]\nname = \"a\"\nname = \"b\"\n",
    );
    refused_everywhere(&dir, REGISTER, "./rvm-partition.toml: line 3, column 1: invalid TOML: duplicate key `name` in table `partition`");
    // A key twice in a JSON object.
    let dir = edited(
        &t,
        "template-vertical_coding",
        "capability-table.json",
        br#"[{"rights":["READ"],"proof_tier":"P1","proof_tier":"P3","expires_at":0}]"#,
    );
    refused_everywhere(
        &dir,
        &[
            "caps",
            "install",
            "--table",
            "./capability-table.json",
            "--partition",
            "demo-coding",
        ],
        "./capability-table.json: line 1, column 50: invalid JSON: duplicate key \"proof_tier\"",
    );
    // A second partition of the same name with other settings.
    let (env, _m) = populated();
    let other = std::fs::read_to_string(fixture("template-minimal/rvm-partition.toml"))
        .unwrap()
        .replace("\"Warm\"", "\"Hot\"");
    let dir = edited(
        &t,
        "permissions-star",
        "rvm-partition.toml",
        other.as_bytes(),
    );
    let o = env.refused_in(&dir, REGISTER);
    assert!(
        o.stderr.starts_with(
            "./rvm-partition.toml: partition demo-minimal is already registered from "
        ),
        "{o:?}"
    );
    assert!(
        o.stderr
            .trim_end()
            .ends_with("with different settings; pass --replace to replace it"),
        "{o:?}"
    );
    // ... accepted with --replace.
    let o = env.run_in(
        &dir,
        &[
            "partition",
            "register",
            "--manifest",
            "./rvm-partition.toml",
            "--replace",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("re-registered (replaced): tier Hot"),
        "{o:?}"
    );
    // The same partition twice in one boot.
    let o = env.refused(&["up", "demo-minimal", "demo-minimal", "--no-boot"]);
    assert_eq!(
        o.stderr.trim(),
        "boot: partition demo-minimal is named twice"
    );
}

#[test]
fn non_utf8_and_empty_files() {
    let t = TempDir::new("t");
    let dir = edited(
        &t,
        "template-minimal",
        "rvm-partition.toml",
        b"[partition]\nname = \"caf\xe9\"\n",
    );
    refused_everywhere(
        &dir,
        REGISTER,
        "./rvm-partition.toml: line 2, column 12: not UTF-8 (invalid byte 0xe9 at offset 23)",
    );
    let dir = edited(&t, "template-vertical_devops", "rvm-partition.toml", b"");
    refused_everywhere(&dir, REGISTER, "./rvm-partition.toml: empty file");
    let dir = edited(&t, "permissions-star", "capability-table.json", b"  \n\n");
    refused_everywhere(
        &dir,
        &[
            "caps",
            "install",
            "--table",
            "./capability-table.json",
            "--partition",
            "star-perms",
        ],
        "./capability-table.json: empty file",
    );
    let dir = edited(&t, "readme-claims", "wasm-guest.json", b"\xff\xfe{}");
    let o = Env::new().refused_in(
        &dir,
        &[
            "guest",
            "boot",
            "--partition",
            "my-bot",
            "--wasm-ref",
            "./wasm-guest.json",
        ],
    );
    assert_eq!(
        o.stderr.trim(),
        "./wasm-guest.json: line 1, column 1: not UTF-8 (invalid byte 0xff at offset 0)"
    );
}

#[test]
fn unsafe_names() {
    let t = TempDir::new("t");
    let dir = edited(
        &t,
        "template-minimal",
        "rvm-partition.toml",
        b"[partition]\nname = \"../../etc\"\n",
    );
    refused_everywhere(&dir, REGISTER, "./rvm-partition.toml: partition.name: \"../../etc\" is not a safe identifier: it must start with a letter or digit");
    let dir = edited(
        &t,
        "template-vertical_coding",
        "rvm-partition.toml",
        b"[partition]\nname = \"a;rm -rf\"\n",
    );
    refused_everywhere(&dir, REGISTER, "./rvm-partition.toml: partition.name: \"a;rm -rf\" is not a safe identifier: it has a character outside [A-Za-z0-9._-] at byte 1");
    let o = Env::new().refused(&["caps", "show", "$(id)"]);
    assert_eq!(
        o.stderr.trim(),
        "NAME: value: \"$(id)\" is not a safe identifier: it must start with a letter or digit"
    );
}

#[test]
fn unsupported_wasm_imports_and_js_glue() {
    let (env, _m) = populated();
    let t = TempDir::new("w");
    let glue = t.join("glue.wasm");
    std::fs::write(&glue, glue_module()).unwrap();
    let o = env.refused(&[
        "guest",
        "add",
        "@metaharness/kernel@0.2.0",
        glue.to_str().unwrap(),
    ]);
    assert!(o.stderr.starts_with(&format!(
        "{}: is a wasm-bindgen JS-glue module (it imports \"wbg\".\"__wbindgen_throw\" (wasm-bindgen), \"wbg\".\"__wbg_log_1\" (wasm-bindgen)); it needs a JavaScript host",
        glue.display()
    )), "{o:?}");
    let bad = t.join("bad.wasm");
    std::fs::write(
        &bad,
        common::modules::module(
            &[
                ("env", "memcpy", &[0x7f], &[]),
                ("rvm", "open_file", &[], &[0x7f]),
                ("rvm", "yield", &[], &[0x7f]),
            ],
            None,
        ),
    )
    .unwrap();
    let o = env.refused(&["guest", "add", "@x/y@1.0.0", bad.to_str().unwrap()]);
    assert!(o.stderr.starts_with(&format!(
        "{}: imports what RVM does not provide: \"env\".\"memcpy\" (unknown module), \"rvm\".\"open_file\" (no such function) (RVM provides only functions of module \"rvm\": console_write,",
        bad.display()
    )), "{o:?}");
    let junk = t.join("junk.wasm");
    std::fs::write(&junk, b"MZ not wasm").unwrap();
    let o = env.refused(&[
        "deploy",
        fixture("readme-claims").to_str().unwrap(),
        "--wasm",
        junk.to_str().unwrap(),
        "--no-boot",
    ]);
    assert!(
        o.stderr
            .contains("junk.wasm: not a valid WebAssembly module: no WebAssembly version-1 header"),
        "{o:?}"
    );
    let o = env.refused(&["guest", "add", "kernel", glue.to_str().unwrap()]);
    assert_eq!(
        o.stderr.trim(),
        "PACKAGE@VERSION: \"kernel\" is not <package>@<version>"
    );
}

#[test]
fn a_table_without_its_manifest_needs_partition() {
    let (env, _m) = populated();
    let t = TempDir::new("t");
    std::fs::copy(
        fixture("template-minimal/capability-table.json"),
        t.join("capability-table.json"),
    )
    .unwrap();
    let o = env.refused_in(
        t.path(),
        &["caps", "install", "--table", "./capability-table.json"],
    );
    assert_eq!(
        o.stderr.trim(),
        "./capability-table.json: the table does not name its partition and no rvm-partition.toml or rvm.manifest.toml is beside it: pass --partition NAME"
    );
    let o = env.run_in(
        t.path(),
        &[
            "caps",
            "install",
            "--table",
            "./capability-table.json",
            "--partition",
            "demo-minimal",
        ],
    );
    assert_eq!(o.code, 0, "{o:?}");
    // With a manifest beside it that names another partition.
    let o = env.refused_in(
        &fixture("template-vertical_coding"),
        &[
            "caps",
            "install",
            "--table",
            "./capability-table.json",
            "--partition",
            "demo-minimal",
        ],
    );
    assert_eq!(
        o.stderr.trim(),
        "./capability-table.json: belongs to the manifest beside it, ./rvm-partition.toml, which names partition demo-coding; --partition names demo-minimal"
    );
    // A table for a partition that is not registered.
    let o = env.refused_in(
        &fixture("template-vertical_coding"),
        &["caps", "install", "--table", "./capability-table.json"],
    );
    assert_eq!(o.stderr.trim(), "partition demo-coding: is not registered (run `rvm-loader partition register --manifest FILE` first)");
}

#[test]
fn a_pinned_witness_key_must_match() {
    let (env, _m) = populated();
    let t = TempDir::new("t");
    let text = std::fs::read_to_string(fixture("template-minimal/rvm-partition.toml"))
        .unwrap()
        .replace(
            "cut_pressure = 0.30\n",
            &format!(
                "cut_pressure = 0.30\nwitness_key_fingerprint = \"sha256:{}\"\n",
                "ab".repeat(32)
            ),
        );
    let dir = edited(
        &t,
        "template-minimal",
        "rvm-partition.toml",
        text.as_bytes(),
    );
    let o = env.run(&["deploy", dir.to_str().unwrap(), "--replace", "--no-boot"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains(&format!("partition.witness_key_fingerprint: pins sha256:{}, but this RVM_HOME's witness key is sha256:", "ab".repeat(32))), "{o:?}");
    // Pinning the home's own key is accepted.
    let keys = env.ok(&["keys"]).stdout;
    let fp = keys
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    let text = text.replace(&format!("sha256:{}", "ab".repeat(32)), &fp);
    let dir = edited(
        &t,
        "template-minimal",
        "rvm-partition.toml",
        text.as_bytes(),
    );
    env.ok(&["deploy", dir.to_str().unwrap(), "--replace", "--no-boot"]);
}

#[test]
fn booting_without_an_image_is_a_failure_not_a_refusal() {
    let (env, _m) = populated();
    let o = env.run(&["up", "demo-minimal", "--image-dir", "/nonexistent/images"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("/nonexistent/images/rvm.bin not found (image directory from --image-dir)"),
        "{o:?}"
    );
}
