//! The committed state an instance keeps for each partition on the host,
//! and `rvm-loader state show`.
//!
//! ```text
//! state/<partition>/committed.json   the partition's committed set (0700 folders)
//! ```
//!
//! `{"schema":1,"partition":"<name>","log":<u32>,"seq":<u64>,"digest":"<64 hex>",
//! "items":[{"key":"<hex>","value":"<hex>"},...]}`, keys non-empty and
//! strictly ascending: the set as the `CommittedSet` record `seq` of log
//! `log` says it is (its `args` are the first 16 bytes of `digest`,
//! [`rvm_state::digest::committed`] of the items).
//!
//! A file vouches for nothing by itself: [`check`] reads it against the
//! partition's witness log, verified under this home's witness key, and
//! accepts it only if it is the set the last `CommittedSet` among the log's
//! signed records names (or, under the rule [`check`] gives, the one before).
//! A restarted instance hands the checked set to the hypervisor with that
//! record and its inclusion proof ([`restore_entry`]).

use crate::commands::Ctx;
use crate::diag::Diagnostic;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::keys::KeyRole;
use crate::model::PartitionName;
use rvm_abi::witness::{KernelEvent, WitnessOp, WitnessRecord, RECORD_LEN};
use rvm_witness::{LogId, MerkleTree, PublicKey};
use rvm_witness_host::log_folder::LOG_SUFFIX;
use rvm_witness_host::VerifyOptions;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Folder of the kept committed sets under `RVM_HOME`.
pub const STATE_DIR: &str = "state";
/// A partition's committed set, in its folder under [`STATE_DIR`].
pub const COMMITTED_FILE: &str = "committed.json";
/// Layout version of `committed.json`.
pub const SCHEMA: u64 = 1;

/// A partition's committed set as the host keeps it: the set record `seq`
/// of log `log` names, its digest and its items in ascending key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedSet {
    pub log: u32,
    pub seq: u64,
    pub digest: [u8; 32],
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SavedSet {
    /// A set of `items` (ascending keys) with the digest they make.
    pub fn new(log: u32, seq: u64, items: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let digest = digest_of(&items);
        Self {
            log,
            seq,
            digest,
            items,
        }
    }
}

/// A kept set checked against its log: the record that vouches for it, the
/// size of the log's last signed checkpoint and the record's inclusion
/// proof in the tree of that many records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub set: SavedSet,
    /// The seq of the `CommittedSet` that vouches for it (the file's own
    /// `seq` may be older: a restart witnesses the set it restored again).
    pub seq: u64,
    pub record: [u8; 64],
    pub signed_size: u64,
    pub proof: Vec<[u8; 32]>,
    /// The Merkle root of that checkpoint.
    pub root: [u8; 32],
}

/// [`rvm_state::digest::committed`] of `items`.
fn digest_of(items: &[(Vec<u8>, Vec<u8>)]) -> [u8; 32] {
    rvm_state::digest::committed(
        items.len() as u64,
        items.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
}

/// Why item `i`'s key cannot be kept, if it cannot: empty, too long for a
/// bundle, or not after the key before it.
fn bad_key(items: &[(Vec<u8>, Vec<u8>)]) -> Option<(usize, &'static str)> {
    items.iter().enumerate().find_map(|(i, (k, _))| {
        if k.is_empty() {
            Some((i, "an empty key"))
        } else if k.len() > usize::from(u16::MAX) {
            Some((i, "a key longer than 65535 bytes"))
        } else if i > 0 && items[i - 1].0 >= *k {
            Some((i, "not after the key before it (keys are strictly ascending)"))
        } else {
            None
        }
    })
}

/// `RVM_HOME/state/<partition>/`.
pub fn dir(home: &Home, name: &PartitionName) -> PathBuf {
    home.root().join(STATE_DIR).join(name.as_str())
}

/// `RVM_HOME/state/<partition>/committed.json`.
pub fn path(home: &Home, name: &PartitionName) -> PathBuf {
    dir(home, name).join(COMMITTED_FILE)
}

/// The partition's witness log in this home, `RVM_HOME/witness/<partition>.log`.
pub fn log_path(home: &Home, name: &PartitionName) -> PathBuf {
    home.witness_dir().join(format!("{name}{LOG_SUFFIX}"))
}

fn io(what: &Path, e: std::io::Error) -> Error {
    Error::failed(format!("{}: {e}", what.display()))
}

fn not_followed(p: &Path) -> Error {
    Error::refused(
        p.display().to_string(),
        "not a directory (a symbolic link is not followed); remove it",
    )
}

/// Whether `dir` is a directory of its own: `false` when missing; refused
/// when it is a symbolic link or anything else.
fn own_dir(dir: &Path) -> Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(not_followed(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(dir, e)),
    }
}

/// Make `dir` (mode 0700) in its existing parent unless it is there, and
/// make its entry durable; refused if a link or a file is there.
fn make_own_dir(dir: &Path) -> Result<()> {
    if own_dir(dir)? {
        return Ok(());
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Made meanwhile: judged below.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(dir, e)),
    }
    if !own_dir(dir)? {
        return Err(not_followed(dir));
    }
    if let Some(parent) = dir.parent() {
        fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(parent, e))?;
    }
    Ok(())
}

/// One item of `committed.json`.
#[derive(serde::Serialize)]
struct ItemOut {
    key: String,
    value: String,
}

/// `committed.json`, in its field order.
#[derive(serde::Serialize)]
struct FileOut<'a> {
    schema: u64,
    partition: &'a str,
    log: u32,
    seq: u64,
    digest: String,
    items: Vec<ItemOut>,
}

/// Keep `set` as partition `name`'s committed set: refused unless its keys
/// are non-empty and strictly ascending and its items make its digest;
/// written through a synced temporary file renamed over the old one (the
/// folder synced too). Returns the file's path.
pub fn save(home: &Home, name: &PartitionName, set: &SavedSet) -> Result<PathBuf> {
    let file = path(home, name);
    let shown = file.display().to_string();
    if let Some((i, why)) = bad_key(&set.items) {
        return Err(Diagnostic::field(&shown, format!("items[{i}].key"), format!("{why}: not saved")).into());
    }
    if digest_of(&set.items) != set.digest {
        return Err(Error::refused(
            &shown,
            format!(
                "the items of record {} of log {} do not make its digest: not saved",
                set.seq, set.log
            ),
        ));
    }
    let out = FileOut {
        schema: SCHEMA,
        partition: name.as_str(),
        log: set.log,
        seq: set.seq,
        digest: rvm_abi::hex::to_string(&set.digest),
        items: set
            .items
            .iter()
            .map(|(k, v)| ItemOut {
                key: rvm_abi::hex::to_string(k),
                value: rvm_abi::hex::to_string(v),
            })
            .collect(),
    };
    let mut text =
        serde_json::to_vec_pretty(&out).map_err(|e| Error::failed(format!("{shown}: {e}")))?;
    text.push(b'\n');
    let root = home.root();
    if !root.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| io(root, e))?;
    }
    make_own_dir(&root.join(STATE_DIR))?;
    make_own_dir(&dir(home, name))?;
    crate::home::write_atomic(&file, &text, 0o600)?;
    Ok(file)
}

/// Partition `name`'s kept committed set, read and checked on its own
/// (fields, hex, key order, digest); `None` if there is none.
pub fn load(home: &Home, name: &PartitionName) -> Result<Option<SavedSet>> {
    let file = path(home, name);
    let shown = file.display().to_string();
    for d in [home.root().join(STATE_DIR), dir(home, name)] {
        if !own_dir(&d)? {
            return Ok(None);
        }
    }
    match fs::symlink_metadata(&file) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(Error::refused(
                &shown,
                "not a regular file (a symbolic link is not followed); remove it",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&file, e)),
    }
    let bytes = fs::read(&file).map_err(|e| io(&file, e))?;
    parse(&shown, name, &bytes, true).map(Some)
}

/// Read `committed.json` (`shown` names it in errors); `whole`: its items
/// must make its digest.
fn parse(shown: &str, name: &PartitionName, bytes: &[u8], whole: bool) -> Result<SavedSet> {
    let field_err = |f: &str, why: &str| -> Error { Diagnostic::field(shown, f, why).into() };
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::refused(shown, format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::refused(shown, "not a JSON object"))?;
    let get = |f: &str| obj.get(f).ok_or_else(|| field_err(f, "missing"));
    let schema = get("schema")?
        .as_u64()
        .ok_or_else(|| field_err("schema", "not a number"))?;
    if schema != SCHEMA {
        return Err(field_err(
            "schema",
            &format!("{schema}: this loader reads schema {SCHEMA}"),
        ));
    }
    let partition = get("partition")?
        .as_str()
        .ok_or_else(|| field_err("partition", "not a string"))?;
    if partition != name.as_str() {
        return Err(field_err(
            "partition",
            &format!("{partition:?}, but the file is kept for partition {name}"),
        ));
    }
    let log = get("log")?
        .as_u64()
        .and_then(|l| u32::try_from(l).ok())
        .ok_or_else(|| field_err("log", "not a number from 0 to 4294967295"))?;
    let seq = get("seq")?
        .as_u64()
        .ok_or_else(|| field_err("seq", "not a number from 0 to 2^64-1"))?;
    let mut digest = [0u8; 32];
    get("digest")?
        .as_str()
        .and_then(|d| rvm_abi::hex::decode(d.as_bytes(), &mut digest))
        .ok_or_else(|| field_err("digest", "not 64 hex digits"))?;
    let list = get("items")?
        .as_array()
        .ok_or_else(|| field_err("items", "not an array"))?;
    let mut items = Vec::with_capacity(list.len());
    for (i, it) in list.iter().enumerate() {
        let o = it
            .as_object()
            .ok_or_else(|| field_err(&format!("items[{i}]"), "not an object"))?;
        let hex = |f: &str| -> Result<Vec<u8>> {
            let at = format!("items[{i}].{f}");
            o.get(f)
                .ok_or_else(|| field_err(&at, "missing"))?
                .as_str()
                .and_then(|s| rvm_abi::hex::decode_vec(s.as_bytes()))
                .ok_or_else(|| field_err(&at, "not hex (two digits per byte)"))
        };
        items.push((hex("key")?, hex("value")?));
    }
    if let Some((i, why)) = bad_key(&items) {
        return Err(field_err(&format!("items[{i}].key"), why));
    }
    if whole && digest_of(&items) != digest {
        return Err(Error::refused(
            shown,
            "its items do not make its digest (the file was changed)",
        ));
    }
    Ok(SavedSet {
        log,
        seq,
        digest,
        items,
    })
}

/// Whether `r` vouches for a committed set: a `CommittedSet` event (the
/// hypervisor writes one after every change of a set it has the host keep;
/// a `StateCommit` record carries its call's digest, not the set's).
fn sets_state(r: &WitnessRecord) -> bool {
    r.outcome == 0 && r.op == WitnessOp::Event(KernelEvent::CommittedSet).code()
}

/// Partition `name`'s kept committed set, checked against its witness log
/// at `log_path` under `key`: the log verifies (chain, signatures, roots;
/// records after its last signed checkpoint are allowed but count for
/// nothing), and the file holds the set the last `CommittedSet` among the
/// signed records vouches for. `kept` is the seq of the last `CommittedSet`
/// of this log the host acknowledged (the signed roster's, written before
/// each `StateSaved`): a log cut back below it is refused, and the set of
/// the `CommittedSet` before the last is taken only while the last one was
/// never acknowledged — the hypervisor parks a partition after every
/// change until the host has kept it, so a host that went down between
/// filing the last record and writing the file loses only a change its
/// partition never saw, and someone who puts an older file back cannot
/// pass it off as that. `None` when there is no file and no such record.
pub fn check(
    home: &Home,
    name: &PartitionName,
    log_path: &Path,
    key: &PublicKey,
    kept: Option<u64>,
) -> Result<Option<Checked>> {
    let file = path(home, name);
    let shown = file.display().to_string();
    let refuse = |why: String| Error::refused(&shown, why);
    let set = load(home, name)?;
    if !log_path.is_file() {
        return match set {
            None => Ok(None),
            Some(_) => Err(refuse(format!(
                "no record in its log vouches for it: there is no log {}",
                log_path.display()
            ))),
        };
    }
    let logs = log_path.display();
    let loaded = rvm_witness_host::load(log_path, Some(*key), None)
        .map_err(|e| match e {
            rvm_witness_host::HostError::Io { .. } => Error::failed(e.to_string()),
            other => refuse(format!("its log cannot be read: {other}")),
        })?;
    let opts = VerifyOptions {
        key: Some(*key),
        log: Some(loaded.log),
        allow_unsigned_tail: true,
        ..VerifyOptions::default()
    };
    let report = rvm_witness_host::verify_loaded(&loaded, &opts);
    let signed_size = match (&report.result, report.is_ok()) {
        (Ok(s), true) => s.signed,
        _ => {
            return Err(refuse(format!(
                "its log {logs} does not verify: {}",
                report.to_string().trim_end().replace('\n', "; ")
            )))
        }
    };
    if let Some(s) = &set {
        if LogId(s.log) != loaded.log {
            return Err(refuse(format!(
                "it is of log {} but its log {logs} is log {}",
                s.log, loaded.log
            )));
        }
    }
    let signed = usize::try_from(signed_size).unwrap_or(usize::MAX);
    let vouching: Vec<(u64, [u8; RECORD_LEN], WitnessRecord)> = loaded
        .records
        .chunks_exact(RECORD_LEN)
        .take(signed)
        .enumerate()
        .filter_map(|(i, c)| {
            let bytes: [u8; RECORD_LEN] = c.try_into().ok()?;
            let r = WitnessRecord::from_bytes(&bytes).ok()?;
            sets_state(&r).then_some((i as u64, bytes, r))
        })
        .collect();
    let last = vouching.last().copied();
    let (set, (seq, record, r)) = match (set, last) {
        (None, None) => return Ok(None),
        (None, Some((seq, _, _))) => {
            return Err(Error::refused(
                format!("partition {name}"),
                format!(
                    "its state file {shown} is missing: record {seq} of its log {logs} sets its committed state"
                ),
            ))
        }
        (Some(_), None) => {
            return Err(refuse(format!(
                "no record in its log vouches for it: none of the {signed_size} signed records of {logs} sets the partition's committed state"
            )))
        }
        (Some(set), Some(found)) => (set, found),
    };
    if let Some(k) = kept.filter(|&k| k > seq) {
        return Err(refuse(format!(
            "its log {logs} was cut back: the host kept the state record {k} vouches for, and the log's last is {seq}"
        )));
    }
    let vouches = |r: &WitnessRecord| r.args[..] == set.digest[..16];
    let one_before = vouching.len().checked_sub(2).map(|i| vouching[i]);
    let never_kept = kept.is_none_or(|k| k < seq);
    let (seq, record) = match one_before {
        _ if vouches(&r) => (seq, record),
        // The last change was filed but never kept: its partition never
        // ran on after it.
        Some((before, bytes, b)) if never_kept && vouches(&b) => (before, bytes),
        _ => {
            if let Some((at, _, _)) = vouching.iter().find(|(at, _, v)| *at == set.seq && !vouches(v)) {
                return Err(refuse(format!(
                    "record {at}'s digest is not its items' digest (the file was changed)"
                )));
            }
            return Err(refuse(format!(
                "its log's last state record is {seq}, and the file holds another set (as of record {}: a stale, rolled-back or changed file)",
                set.seq
            )));
        }
    };
    let tree = MerkleTree::from_leaves(loaded.records.chunks_exact(RECORD_LEN).take(signed));
    let proof_err = |e: rvm_witness::ProofError| refuse(format!("record {seq} of {logs}: {e}"));
    let root = tree.root(signed_size).map_err(proof_err)?;
    let audit = tree.inclusion_proof(seq, signed_size).map_err(proof_err)?;
    let signed_root = loaded
        .checkpoints
        .iter()
        .rev()
        .find(|c| c.checkpoint.size == signed_size)
        .map(|c| c.checkpoint.root);
    if signed_root != Some(root) {
        return Err(refuse(format!(
            "its log {logs}: its records do not make the root of its checkpoint at {signed_size}"
        )));
    }
    rvm_witness::merkle::verify_inclusion(
        &rvm_witness::merkle::leaf_hash(&record),
        seq,
        signed_size,
        &audit,
        &root,
    )
    .map_err(proof_err)?;
    Ok(Some(Checked {
        set,
        seq,
        record,
        signed_size,
        proof: audit.iter().map(|h| h.0).collect(),
        root: root.0,
    }))
}

/// The `StateRestore` entry of partition `name`'s kept set as its file
/// holds it (its items, whatever its digest says), vouched for by the last
/// `CommittedSet` among its log's signed records: what an instance's
/// restart sends for a file [`check`] refused, so that the hypervisor
/// refuses the partition itself and witnesses the refusal while the
/// others start. `None` when no such entry can be made (no readable file,
/// or no log or no `CommittedSet` in it).
pub fn as_filed(home: &Home, name: &PartitionName, log_path: &Path, key: &PublicKey) -> Option<Vec<u8>> {
    let file = path(home, name);
    let items = match fs::symlink_metadata(&file) {
        Ok(m) if m.is_file() => {
            let bytes = fs::read(&file).ok()?;
            parse(&file.display().to_string(), name, &bytes, false).ok()?.items
        }
        // Missing: the empty set stands for it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        _ => return None,
    };
    let loaded = rvm_witness_host::load(log_path, Some(*key), None).ok()?;
    let signed = usize::try_from(loaded.checkpoints.last()?.checkpoint.size).ok()?;
    let (seq, record) = loaded
        .records
        .chunks_exact(RECORD_LEN)
        .take(signed)
        .enumerate()
        .rev()
        .find_map(|(i, c)| {
            let bytes: [u8; RECORD_LEN] = c.try_into().ok()?;
            sets_state(&WitnessRecord::from_bytes(&bytes).ok()?).then_some((i as u64, bytes))
        })?;
    let tree = MerkleTree::from_leaves(loaded.records.chunks_exact(RECORD_LEN).take(signed));
    let proof: Vec<[u8; 32]> = tree.inclusion_proof(seq, signed as u64).ok()?.iter().map(|h| h.0).collect();
    let pairs: Vec<(&[u8], &[u8])> = items.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    Some(rvm_abi::bundle::StateRestore::encode(seq, &record, &proof, &pairs))
}

/// Move the kept state of every partition aside (`instance start
/// --fresh`: every log starts anew, so no kept set is vouched for any
/// more) to `$RVM_HOME/archive/state-<unix seconds>`; where it went, if
/// there was any.
pub fn set_aside(home: &Home) -> Result<Option<PathBuf>> {
    let from = home.root().join(STATE_DIR);
    match fs::symlink_metadata(&from) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::refused(from.display().to_string(), "not a folder (a symbolic link is not followed); remove it")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&from, e)),
    }
    let archive = home.root().join("archive");
    fs::create_dir_all(&archive).map_err(|e| io(&archive, e))?;
    let stamp = crate::home::now_unix();
    let to = (0..).map(|n| archive.join(if n == 0 { format!("state-{stamp}") } else { format!("state-{stamp}.{n}") })).find(|p| !p.exists()).unwrap_or_else(|| archive.join("state"));
    fs::rename(&from, &to).map_err(|e| io(&to, e))?;
    Ok(Some(to))
}

/// The bundle's `StateRestore` entry of a checked set.
pub fn restore_entry(checked: &Checked) -> Vec<u8> {
    let items: Vec<(&[u8], &[u8])> = checked
        .set
        .items
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    rvm_abi::bundle::StateRestore::encode(checked.seq, &checked.record, &checked.proof, &items)
}

/// The key partition `name`'s log is checked with: this home's witness key
/// (the one its bundles carry), which the manifest's
/// `witness_key_fingerprint`, when it pins one, must be.
pub fn witness_key(home: &Home, name: &PartitionName) -> Result<PublicKey> {
    let key = home.key(&KeyRole::Witness)?.ok_or_else(|| {
        Error::refused(
            format!("partition {name}"),
            "this RVM_HOME has no witness key to check its log with",
        )
    })?;
    let pin = home
        .load()?
        .partitions
        .get(name)
        .and_then(|r| r.spec.witness_key_fingerprint);
    if let Some(p) = pin {
        if p != key.fingerprint() {
            return Err(Error::refused(
                format!("partition {name}"),
                format!(
                    "its manifest pins witness key {p}, not this RVM_HOME's ({})",
                    key.fingerprint()
                ),
            ));
        }
    }
    Ok(PublicKey(key.public))
}

/// `bytes` as text when they are UTF-8 without control characters.
fn printable(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.chars().any(char::is_control))
}

/// `bytes` as text, else `0x<hex>`.
fn shown_bytes(bytes: &[u8]) -> String {
    match printable(bytes) {
        Some(s) => s.to_string(),
        None => format!("0x{}", rvm_abi::hex::to_string(bytes)),
    }
}

/// `state show`'s lines.
pub fn show_text(name: &PartitionName, c: &Checked) -> String {
    let digest = rvm_abi::hex::to_string(&c.set.digest);
    let mut out = format!(
        "committed state of {name} as of record {} of its log (digest {}…), checked against the log: {} items\n",
        c.seq,
        &digest[..16],
        c.set.items.len()
    );
    for (k, v) in &c.set.items {
        out.push_str(&format!("{}  {}\n", shown_bytes(k), shown_bytes(v)));
    }
    out
}

/// `state show --json`'s object.
pub fn show_json(name: &PartitionName, c: &Checked) -> serde_json::Value {
    serde_json::json!({
        "partition": name.as_str(),
        "log": c.set.log,
        "seq": c.seq,
        "digest": rvm_abi::hex::to_string(&c.set.digest),
        "checked": true,
        "items": c.set.items.iter().map(|(k, v)| serde_json::json!({
            "key": printable(k),
            "key_hex": rvm_abi::hex::to_string(k),
            "value": printable(v),
            "value_hex": rvm_abi::hex::to_string(v),
        })).collect::<Vec<_>>(),
    })
}

/// `state show <partition> [--json]`: the partition's kept committed set,
/// checked against its witness log.
pub fn show(ctx: &Ctx, partition: &str, json: bool) -> Result<()> {
    let name = crate::parse::names::partition_name("<partition>", "value", partition)?;
    let key = witness_key(&ctx.home, &name)?;
    let kept = crate::roster::kept_mark(&ctx.home, name.as_str())?;
    let checked = check(&ctx.home, &name, &log_path(&ctx.home, &name), &key, kept)?.ok_or_else(|| {
        Error::refused(
            format!("partition {name}"),
            "no committed state is kept for it, and its log sets none",
        )
    })?;
    if json {
        println!("{}", show_json(&name, &checked));
    } else {
        print!("{}", show_text(&name, &checked));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::Hypercall;
    use core::num::{NonZeroU64, NonZeroUsize};
    use rvm_abi::witness::Outcome;
    use rvm_witness::{CheckpointPolicy, CheckpointSigner, Hash, LogConfig, WitnessLog};
    use rvm_witness_host::{LogNames, Recorder};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A home under the temporary folder, removed when dropped.
    struct TmpHome(Home);

    impl TmpHome {
        fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "rvm-loader-state-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            Self(Home::new(p))
        }
    }

    impl Drop for TmpHome {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(self.0.root());
        }
    }

    const LOG: u32 = 1;

    fn tenant() -> PartitionName {
        PartitionName::new("tenant").unwrap()
    }

    fn signer() -> CheckpointSigner {
        CheckpointSigner::from_seed(&[0x42; 32])
    }

    fn items(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// One record of the test log.
    enum Rec {
        /// Another call.
        Other,
        /// A `StateCommit` that was done, of a set with this digest.
        Commit([u8; 32]),
        /// A `StateCommit` that was refused.
        Refused([u8; 32]),
        /// A `CommittedSet` event of a set with this digest.
        Set([u8; 32]),
        /// A checkpoint now.
        Sign,
    }

    /// File log 1 (`tenant`) of `recs` under `home`, checkpointed every 4
    /// records and where `Rec::Sign` says; nothing signs the records after
    /// the last of those.
    fn file_log(home: &Home, recs: &[Rec]) -> PathBuf {
        let signer = signer();
        let config = LogConfig {
            ring_capacity: NonZeroUsize::new(256).unwrap(),
            checkpoints: CheckpointPolicy::every(NonZeroU64::new(4).unwrap()),
        };
        let mut log = WitnessLog::new(LogId(LOG), config).unwrap();
        let mut rec = Recorder::new(home.root(), LogNames::from_pairs([(LOG, "tenant")]).unwrap()).unwrap();
        rec.frame(&signer.public_key().frame()).unwrap();
        for (i, r) in recs.iter().enumerate() {
            let record = match r {
                Rec::Sign => {
                    log.checkpoint(&signer).unwrap();
                    None
                }
                Rec::Other => Some(WitnessRecord::new(WitnessOp::Call(Hypercall::ConsoleWrite), Outcome::Done, LOG)),
                Rec::Commit(d) | Rec::Refused(d) => {
                    let outcome = match r {
                        Rec::Refused(_) => Outcome::Denied(rvm_abi::HvError::NoRights),
                        _ => Outcome::Done,
                    };
                    let mut w = WitnessRecord::new(WitnessOp::Call(Hypercall::StateCommit), outcome, LOG);
                    w.args.copy_from_slice(&d[..16]);
                    Some(w)
                }
                Rec::Set(d) => {
                    let mut w = WitnessRecord::new(WitnessOp::Event(KernelEvent::CommittedSet), Outcome::Done, LOG);
                    w.args.copy_from_slice(&d[..16]);
                    Some(w)
                }
            };
            if let Some(mut w) = record {
                w.timestamp = i as u64;
                if log.append(w).unwrap().checkpoint_due {
                    log.checkpoint(&signer).unwrap();
                }
            }
            while let Some(o) = log.drain_next() {
                rec.frame(&o.to_frame(LogId(LOG))).unwrap();
            }
        }
        rec.finish().unwrap();
        log_path(home, &tenant())
    }

    fn check_err(home: &Home, log: &Path) -> String {
        match check(home, &tenant(), log, &signer().public_key(), None) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_saved_set_loads_back_and_the_file_is_private() {
        let h = TmpHome::new("round");
        let home = &h.0;
        assert_eq!(load(home, &tenant()).unwrap(), None);
        let set = SavedSet::new(LOG, 7, vec![(vec![0, 0xff], vec![]), (b"a".to_vec(), b"1".to_vec())]);
        let file = save(home, &tenant(), &set).unwrap();
        assert_eq!(file, home.root().join("state/tenant/committed.json"));
        assert_eq!(load(home, &tenant()).unwrap(), Some(set.clone()));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&home.root().join("state")), 0o700);
        assert_eq!(mode(&home.root().join("state/tenant")), 0o700);
        // Saved again: replaced, no temporary file left.
        let next = SavedSet::new(LOG, 9, items(&[("a", "2")]));
        save(home, &tenant(), &next).unwrap();
        assert_eq!(load(home, &tenant()).unwrap(), Some(next));
        assert_eq!(fs::read_dir(dir(home, &tenant())).unwrap().count(), 1);
    }

    #[test]
    fn a_set_whose_items_do_not_make_its_digest_or_keys_are_out_of_order_is_not_saved() {
        let h = TmpHome::new("refuse");
        let home = &h.0;
        let mut set = SavedSet::new(LOG, 3, items(&[("a", "1")]));
        set.digest[0] ^= 1;
        let e = save(home, &tenant(), &set).unwrap_err().to_string();
        assert!(e.contains("committed.json") && e.contains("do not make its digest"), "{e}");
        let unordered = SavedSet::new(LOG, 3, items(&[("b", "1"), ("a", "2")]));
        let e = save(home, &tenant(), &unordered).unwrap_err().to_string();
        assert!(e.contains("items[1].key") && e.contains("strictly ascending"), "{e}");
        let empty = SavedSet::new(LOG, 3, items(&[("", "1")]));
        assert!(save(home, &tenant(), &empty).unwrap_err().to_string().contains("an empty key"));
        assert!(!home.root().join(STATE_DIR).exists(), "nothing is created");
    }

    #[test]
    fn a_symbolic_link_in_the_path_is_not_followed() {
        let h = TmpHome::new("link");
        let home = &h.0;
        let elsewhere = home.root().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, home.root().join(STATE_DIR)).unwrap();
        let set = SavedSet::new(LOG, 1, items(&[("a", "1")]));
        let e = save(home, &tenant(), &set).unwrap_err().to_string();
        assert!(e.contains("symbolic link is not followed"), "{e}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        let e = load(home, &tenant()).unwrap_err().to_string();
        assert!(e.contains("symbolic link is not followed"), "{e}");
    }

    #[test]
    fn a_changed_file_is_refused_naming_the_file_and_the_field() {
        let h = TmpHome::new("changed");
        let home = &h.0;
        let file = save(home, &tenant(), &SavedSet::new(LOG, 2, items(&[("a", "1"), ("b", "2")]))).unwrap();
        let text = fs::read_to_string(&file).unwrap();
        // "2" (32) becomes "3" (33).
        fs::write(&file, text.replace("\"value\": \"32\"", "\"value\": \"33\"")).unwrap();
        let e = load(home, &tenant()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: its items do not make its digest (the file was changed)", file.display())
        );
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["items"][1]["key"] = "zz".into();
        fs::write(&file, v.to_string()).unwrap();
        let e = load(home, &tenant()).unwrap_err().to_string();
        assert_eq!(e, format!("{}: items[1].key: not hex (two digits per byte)", file.display()));
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("seq");
        fs::write(&file, v.to_string()).unwrap();
        let e = load(home, &tenant()).unwrap_err().to_string();
        assert_eq!(e, format!("{}: seq: missing", file.display()));
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["items"] = serde_json::json!([{"key": "62", "value": ""}, {"key": "61", "value": ""}]);
        fs::write(&file, v.to_string()).unwrap();
        let e = load(home, &tenant()).unwrap_err().to_string();
        assert!(e.contains("items[1].key: not after the key before it"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["partition"] = "other".into();
        fs::write(&file, v.to_string()).unwrap();
        let e = load(home, &tenant()).unwrap_err().to_string();
        assert!(e.contains("partition: \"other\", but the file is kept for partition tenant"), "{e}");
    }

    #[test]
    fn the_file_as_of_the_last_signed_commit_checks_and_its_proof_verifies() {
        let h = TmpHome::new("ok");
        let home = &h.0;
        let old = SavedSet::new(LOG, 1, items(&[("a", "1")]));
        let set = SavedSet::new(LOG, 5, items(&[("a", "1"), ("b", "2")]));
        let log = file_log(
            home,
            &[
                Rec::Other,
                Rec::Set(old.digest),
                Rec::Other,
                Rec::Other,
                Rec::Other,
                Rec::Set(set.digest),
                // A refused commit sets nothing.
                Rec::Refused([9; 32]),
                Rec::Sign,
            ],
        );
        save(home, &tenant(), &set).unwrap();
        let c = check(home, &tenant(), &log, &signer().public_key(), None).unwrap().unwrap();
        assert_eq!((c.set.clone(), c.signed_size), (set.clone(), 7));
        assert_eq!(WitnessRecord::from_bytes(&c.record).unwrap().seq, 5);
        let entry = restore_entry(&c);
        let parsed = rvm_abi::bundle::StateRestore::from_bytes(&entry).unwrap();
        assert_eq!((parsed.seq, parsed.record, parsed.count()), (5, c.record, 2));
        let got: Vec<(Vec<u8>, Vec<u8>)> = parsed.items().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(got, set.items);
        // The proof holds against the root of the log's last checkpoint.
        let loaded = rvm_witness_host::load(&log, None, None).unwrap();
        let cp = loaded.checkpoints.last().unwrap().checkpoint;
        assert_eq!((cp.size, cp.root.0), (7, c.root));
        let proof: Vec<Hash> = parsed.proof().map(Hash).collect();
        assert!(!proof.is_empty());
        rvm_witness::merkle::verify_inclusion(
            &rvm_witness::merkle::leaf_hash(&parsed.record),
            parsed.seq,
            c.signed_size,
            &proof,
            &cp.root,
        )
        .unwrap();
        // Not at another leaf.
        assert!(rvm_witness::merkle::verify_inclusion(
            &rvm_witness::merkle::leaf_hash(&parsed.record),
            4,
            c.signed_size,
            &proof,
            &cp.root
        )
        .is_err());
        // What `state show` prints.
        let text = show_text(&tenant(), &c);
        let digest = rvm_abi::hex::to_string(&set.digest);
        assert_eq!(
            text,
            format!(
                "committed state of tenant as of record 5 of its log (digest {}…), checked against the log: 2 items\na  1\nb  2\n",
                &digest[..16]
            )
        );
    }

    #[test]
    fn a_file_older_than_the_log_is_refused_as_stale() {
        let h = TmpHome::new("stale");
        let home = &h.0;
        let old = SavedSet::new(LOG, 1, items(&[("a", "1")]));
        let mid = SavedSet::new(LOG, 3, items(&[("a", "3")]));
        let new = SavedSet::new(LOG, 5, items(&[("a", "2")]));
        let log = file_log(
            home,
            &[Rec::Other, Rec::Set(old.digest), Rec::Other, Rec::Set(mid.digest), Rec::Other, Rec::Set(new.digest), Rec::Sign],
        );
        save(home, &tenant(), &old).unwrap();
        let e = check_err(home, &log);
        assert!(e.starts_with(&path(home, &tenant()).display().to_string()), "{e}");
        assert!(e.contains("its log's last state record is 5, and the file holds another set (as of record 1: a stale, rolled-back or changed file)"), "{e}");
        // One change behind: the host went down between filing the last
        // record and keeping its set, so its partition never saw it.
        save(home, &tenant(), &mid).unwrap();
        let c = check(home, &tenant(), &log, &signer().public_key(), None).unwrap().unwrap();
        assert_eq!((c.set.clone(), c.seq, WitnessRecord::from_bytes(&c.record).unwrap().seq), (mid.clone(), 3, 3));
        // So too when the host had kept the one before (or an earlier one).
        assert!(check(home, &tenant(), &log, &signer().public_key(), Some(3)).is_ok());
        // Not once the host said it kept the last: then that older file was
        // put back.
        let e = check(home, &tenant(), &log, &signer().public_key(), Some(5)).unwrap_err().to_string();
        assert!(e.contains("its log's last state record is 5, and the file holds another set"), "{e}");
        save(home, &tenant(), &new).unwrap();
        assert!(check(home, &tenant(), &log, &signer().public_key(), Some(5)).is_ok());
        // A log cut back below what the host kept.
        let e = check(home, &tenant(), &log, &signer().public_key(), Some(9)).unwrap_err().to_string();
        assert!(e.contains("was cut back: the host kept the state record 9 vouches for, and the log's last is 5"), "{e}");
    }

    #[test]
    fn a_set_restored_and_witnessed_again_is_vouched_for_by_its_latest_record() {
        let h = TmpHome::new("again");
        let home = &h.0;
        // Committed at 1, kept; restored and witnessed again at 3 by each
        // of two restarts with no commit between.
        let set = SavedSet::new(LOG, 1, items(&[("a", "1")]));
        let log = file_log(home, &[Rec::Other, Rec::Set(set.digest), Rec::Other, Rec::Set(set.digest), Rec::Set(set.digest), Rec::Sign]);
        save(home, &tenant(), &set).unwrap();
        let c = check(home, &tenant(), &log, &signer().public_key(), Some(1)).unwrap().unwrap();
        assert_eq!((c.set.seq, c.seq), (1, 4), "the bundle names the latest record, not the file's");
        let entry = rvm_abi::bundle::StateRestore::from_bytes(&restore_entry(&c)).map(|r| r.seq);
        assert_eq!(entry, Some(4));
    }

    #[test]
    fn a_commit_after_the_last_checkpoint_counts_for_nothing() {
        let h = TmpHome::new("unsigned");
        let home = &h.0;
        let old = SavedSet::new(LOG, 1, items(&[("a", "1")]));
        let tail = SavedSet::new(LOG, 2, items(&[("a", "2")]));
        let log = file_log(home, &[Rec::Other, Rec::Set(old.digest), Rec::Sign, Rec::Set(tail.digest)]);
        save(home, &tenant(), &tail).unwrap();
        let e = check_err(home, &log);
        assert!(e.contains("its log's last state record is 1, and the file holds another set (as of record 2"), "{e}");
        save(home, &tenant(), &old).unwrap();
        let c = check(home, &tenant(), &log, &signer().public_key(), None).unwrap().unwrap();
        assert_eq!((c.seq, c.signed_size), (1, 2));
    }

    #[test]
    fn a_file_no_record_vouches_for_is_refused() {
        let h = TmpHome::new("unvouched");
        let home = &h.0;
        let log = file_log(home, &[Rec::Other, Rec::Other, Rec::Sign]);
        // Neither a file nor a state record: nothing to check.
        assert_eq!(check(home, &tenant(), &log, &signer().public_key(), None).unwrap(), None);
        save(home, &tenant(), &SavedSet::new(LOG, 1, items(&[("a", "1")]))).unwrap();
        let e = check_err(home, &log);
        assert!(e.contains("committed.json: no record in its log vouches for it"), "{e}");
        // No log at all.
        let e = check_err(home, &home.root().join("witness/none.log"));
        assert!(e.contains("no record in its log vouches for it: there is no log"), "{e}");
    }

    #[test]
    fn a_missing_file_is_refused_when_the_log_sets_state() {
        let h = TmpHome::new("missing");
        let home = &h.0;
        let set = SavedSet::new(LOG, 0, items(&[("a", "1")]));
        let log = file_log(home, &[Rec::Set(set.digest), Rec::Sign]);
        let e = check_err(home, &log);
        assert!(e.contains("its state file") && e.contains("committed.json is missing: record 0"), "{e}");
    }

    #[test]
    fn a_file_whose_digest_is_not_its_record_s_is_refused() {
        let h = TmpHome::new("digest");
        let home = &h.0;
        let logged = SavedSet::new(LOG, 1, items(&[("a", "1")]));
        let log = file_log(home, &[Rec::Other, Rec::Set(logged.digest), Rec::Sign]);
        // Other items, a digest made to match them, the record's seq.
        save(home, &tenant(), &SavedSet::new(LOG, 1, items(&[("a", "forged")]))).unwrap();
        let e = check_err(home, &log);
        assert!(e.contains("record 1's digest is not its items' digest (the file was changed)"), "{e}");
        // A file of another log.
        save(home, &tenant(), &SavedSet::new(LOG + 1, 1, logged.items.clone())).unwrap();
        let e = check_err(home, &log);
        assert!(e.contains("it is of log 2 but its log"), "{e}");
    }

    #[test]
    fn a_commit_record_vouches_for_nothing_the_committed_set_after_it_does() {
        let h = TmpHome::new("event");
        let home = &h.0;
        let committed = SavedSet::new(LOG, 1, items(&[("a", "1"), ("b", "2")]));
        let restored = SavedSet::new(LOG, 2, items(&[("a", "1")]));
        let log = file_log(home, &[Rec::Other, Rec::Commit(committed.digest), Rec::Set(restored.digest), Rec::Other, Rec::Sign]);
        save(home, &tenant(), &committed).unwrap();
        let e = check_err(home, &log);
        assert!(e.contains("its log's last state record is 2, and the file holds another set (as of record 1"), "{e}");
        save(home, &tenant(), &restored).unwrap();
        let c = check(home, &tenant(), &log, &signer().public_key(), None).unwrap().unwrap();
        assert_eq!(c.set, restored);
        assert_eq!(WitnessRecord::from_bytes(&c.record).unwrap().op, KernelEvent::CommittedSet as u16);
    }

    #[test]
    fn a_log_that_does_not_verify_or_another_key_is_refused() {
        let h = TmpHome::new("badlog");
        let home = &h.0;
        let set = SavedSet::new(LOG, 0, items(&[("a", "1")]));
        let log = file_log(home, &[Rec::Set(set.digest), Rec::Other, Rec::Sign]);
        save(home, &tenant(), &set).unwrap();
        let other = CheckpointSigner::from_seed(&[1; 32]).public_key();
        let e = check(home, &tenant(), &log, &other, None).unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");
        let mut bytes = fs::read(&log).unwrap();
        bytes[RECORD_LEN + 20] ^= 1;
        fs::write(&log, &bytes).unwrap();
        let e = check_err(home, &log);
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn the_log_is_checked_with_this_home_s_witness_key() {
        use std::os::unix::fs::PermissionsExt;
        let h = TmpHome::new("key");
        let home = &h.0;
        assert!(witness_key(home, &tenant()).unwrap_err().to_string().contains("no witness key"));
        let seed = home.root().join("keys/witness.seed");
        fs::create_dir_all(seed.parent().unwrap()).unwrap();
        fs::write(&seed, [0x42; 32]).unwrap();
        fs::set_permissions(&seed, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(witness_key(home, &tenant()).unwrap(), signer().public_key());
    }

    #[test]
    fn a_fresh_start_sets_the_kept_state_aside_whole() {
        let h = TmpHome::new("aside");
        let home = &h.0;
        assert_eq!(set_aside(home).unwrap(), None, "nothing kept, nothing moved");
        let set = SavedSet::new(LOG, 1, items(&[("a", "1")]));
        save(home, &tenant(), &set).unwrap();
        let to = set_aside(home).unwrap().unwrap();
        assert!(to.starts_with(home.root().join("archive")), "{}", to.display());
        assert!(to.join("tenant/committed.json").is_file());
        assert_eq!(load(home, &tenant()).unwrap(), None, "no kept state is left behind");
        // A link planted where the folder was is not followed.
        std::os::unix::fs::symlink(&to, home.root().join(STATE_DIR)).unwrap();
        assert!(set_aside(home).unwrap_err().to_string().contains("not a folder"));
    }

    #[test]
    fn show_json_gives_text_only_when_printable() {
        let set = SavedSet::new(LOG, 4, vec![(b"k".to_vec(), vec![0, 1]), (b"l".to_vec(), b"a\nb".to_vec())]);
        let c = Checked { set, seq: 4, record: [0; 64], signed_size: 5, proof: vec![], root: [0; 32] };
        let v = show_json(&tenant(), &c);
        assert_eq!(v["checked"], true);
        assert_eq!(v["seq"], 4);
        assert_eq!(v["items"][0]["key"], "k");
        assert_eq!(v["items"][0]["value"], serde_json::Value::Null);
        assert_eq!(v["items"][0]["value_hex"], "0001");
        assert_eq!(v["items"][1]["value"], serde_json::Value::Null);
        assert!(show_text(&tenant(), &c).contains("k  0x0001\nl  0x610a62\n"));
    }
}
