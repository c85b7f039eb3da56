//! `rvm-loader witness ...`: the witness logs a boot filed under
//! `RVM_HOME/witness/`, shown, verified, exported and proven, through
//! `rvm-witness-host`.
//!
//! A log is named either by its partition (`demo-minimal`, or `hypervisor`
//! for the hypervisor's own log), meaning `RVM_HOME/witness/<name>.log`, or
//! by a path to any `<name>.log` file (a log handed over from elsewhere;
//! its `.checkpoints` and `.pub` files are read from beside it).
//!
//! Exit codes: 0 when everything verifies; 2 when a log or proof does not
//! verify (the report names the first bad record) or an argument is wrong
//! (no such log, a malformed proof file); 1 for I/O failures.

use crate::commands::Ctx;
use crate::diag::Diagnostic;
use crate::error::{Error, Result};
use crate::home::{self, Registry};
use crate::keys::KeyRole;
use crate::model::{KeyFingerprint, PartitionName};
use rvm_abi::witness::HYPERVISOR_LOG;
use rvm_witness::{Hash, PublicKey};
use rvm_witness_host::log_folder::{HYPERVISOR_NAME, LOG_SUFFIX};
use rvm_witness_host::{HostError, LogNames, VerifyOptions};
use std::path::{Path, PathBuf};

/// One log the user named.
#[derive(Clone, Debug)]
pub struct LogTarget {
    pub path: PathBuf,
    /// File stem: the partition name (or `hypervisor`).
    pub name: String,
    /// Whether it is this home's current log of that name.
    pub in_home: bool,
}

fn host_error(e: HostError) -> Error {
    match e {
        HostError::Io { .. } => Error::failed(e.to_string()),
        other => Error::Refused(vec![Diagnostic::file("witness", other.to_string())]),
    }
}

/// Resolve `<partition|file>`: a path if it contains `/` or ends in `.log`,
/// else a log name in this home.
pub fn target(ctx: &Ctx, t: &str) -> Result<LogTarget> {
    if t.contains('/') || t.ends_with(LOG_SUFFIX) {
        let path = PathBuf::from(t);
        if !path.is_file() {
            return Err(Error::refused(t, "no such log file"));
        }
        let name = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(LOG_SUFFIX))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::refused(t, "a witness log file name ends in .log"))?
            .to_string();
        let in_home = std::fs::canonicalize(&path).ok().and_then(|p| {
            p.parent().map(|d| {
                Some(d.to_path_buf()) == std::fs::canonicalize(ctx.home.witness_dir()).ok()
            })
        }) == Some(true);
        return Ok(LogTarget {
            path,
            name,
            in_home,
        });
    }
    if t != HYPERVISOR_NAME {
        crate::parse::names::partition_name("<partition|file>", "value", t)?;
    }
    let path = ctx.home.witness_dir().join(format!("{t}{LOG_SUFFIX}"));
    if !path.is_file() {
        let reg = ctx.home.load()?;
        let why = match PartitionName::new(t)
            .ok()
            .and_then(|n| reg.partitions.get(&n))
        {
            Some(r) if r.last_run.is_none() => "it is registered but has not booted yet",
            Some(_) => "its runs filed no record",
            None if t == HYPERVISOR_NAME => "nothing has booted from this RVM_HOME yet",
            None => "no partition of that name is registered",
        };
        return Err(Error::refused(
            t,
            format!("no witness log {}: {why}", path.display()),
        ));
    }
    Ok(LogTarget {
        path,
        name: t.to_string(),
        in_home: true,
    })
}

/// Every current log in this home, the hypervisor's first.
pub fn all_logs(ctx: &Ctx) -> Result<Vec<LogTarget>> {
    let dir = ctx.home.witness_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::refused(
                dir.display().to_string(),
                "no witness logs: nothing has booted from this RVM_HOME yet",
            ))
        }
        Err(e) => return Err(Error::failed(format!("{}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(LOG_SUFFIX))
            .map(str::to_string)
        else {
            continue;
        };
        if path.is_file() {
            out.push(LogTarget {
                path,
                name,
                in_home: true,
            });
        }
    }
    out.sort_by_key(|l| (l.name != HYPERVISOR_NAME, l.name.clone()));
    if out.is_empty() {
        return Err(Error::refused(
            dir.display().to_string(),
            "no witness logs: nothing has booted from this RVM_HOME yet",
        ));
    }
    Ok(out)
}

/// Which partition id had which name in the run that filed `log`: the
/// partition's last run, or for the hypervisor's log the newest run.
pub fn names_for(reg: &Registry, log: &LogTarget) -> LogNames {
    if !log.in_home {
        return LogNames::new();
    }
    let run = if log.name == HYPERVISOR_NAME {
        reg.partitions
            .values()
            .filter_map(|r| r.last_run.as_ref())
            .max_by_key(|r| r.started_unix)
    } else {
        PartitionName::new(&log.name)
            .ok()
            .and_then(|n| reg.partitions.get(&n))
            .and_then(|r| r.last_run.as_ref())
    };
    let Some(run) = run else {
        return LogNames::new();
    };
    // Every partition of that boot (an instance's admitted ones too, each
    // under the id the hypervisor gave it); without a boot id, those the
    // run booted, by position.
    let id_in = |r: &crate::home::RunRecord, n: &PartitionName| {
        r.partition_id.or_else(|| {
            let i = r.with.iter().position(|x| x == n)?;
            Some(crate::bundler::partition_id(u32::try_from(i).ok()?))
        })
    };
    let pairs: Vec<(u32, &str)> = match &run.boot_id {
        Some(boot) => reg
            .partitions
            .iter()
            .filter_map(|(n, p)| {
                let r = p.last_run.as_ref().filter(|r| r.boot_id.as_ref() == Some(boot))?;
                Some((id_in(r, n)?, n.as_str()))
            })
            .collect(),
        None => run.with.iter().filter_map(|n| Some((id_in(run, n)?, n.as_str()))).collect(),
    };
    LogNames::from_pairs(pairs).unwrap_or_default()
}

/// The header of `witness show`, in the columns of
/// `rvm_witness_host::ShowLine`'s display.
pub fn show_header() -> String {
    format!(
        "{:>8} {:>17} {:<16} {:<18} {:<4} {:<18} CAPABILITY",
        "SEQ", "TIME", "PARTITION", "OPERATION", "TIER", "OUTCOME"
    )
}

/// `witness show [<partition|file>]`.
pub fn show(ctx: &Ctx, which: Option<&str>) -> Result<()> {
    let logs = match which {
        Some(t) => vec![target(ctx, t)?],
        None => all_logs(ctx)?,
    };
    let reg = ctx.home.load()?;
    for (i, log) in logs.iter().enumerate() {
        let lines = rvm_witness_host::show(&log.path, &names_for(&reg, log)).map_err(host_error)?;
        if i > 0 {
            println!();
        }
        println!("{} ({} records)", log.path.display(), lines.len());
        println!("{}", show_header());
        for l in &lines {
            println!("{l}");
        }
        if let Some(entries) = journal_beside(log)? {
            println!();
            println!(
                "{} ({} entries)",
                crate::witness_sink::journal_path(&log.path).display(),
                entries.len()
            );
            println!(
                "{:>8} {:<6} {:>6} {:>10} DATA",
                "SEQ", "KIND", "STATUS", "RESULT"
            );
            for f in &entries {
                match &f.entry {
                    rvm_abi::journal::Entry::Call {
                        seq,
                        status,
                        results,
                        data,
                        ..
                    } => {
                        let shown = &data[..data.len().min(16)];
                        let more = if data.len() > 16 { "..." } else { "" };
                        println!(
                            "{seq:>8} {:<6} {status:>6} {:>10} {} bytes {}{more}",
                            "call",
                            results[0],
                            data.len(),
                            rvm_abi::hex::to_string(shown)
                        );
                    }
                    rvm_abi::journal::Entry::Start { seq, handles } => {
                        let hs: Vec<String> =
                            handles.iter().map(|h| format!("{:#x}", h.raw)).collect();
                        println!(
                            "{seq:>8} {:<6} {:>6} {:>10} handles {}",
                            "start",
                            "",
                            "",
                            hs.join(" ")
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// How `witness verify` judges the key.
#[derive(Clone, Debug, Default)]
pub struct VerifyArgs {
    /// Expect this key fingerprint (overrides the defaults).
    pub key_fingerprint: Option<KeyFingerprint>,
    /// Verify with the key in this `.pub` file instead of the one beside the log.
    pub pub_file: Option<PathBuf>,
    /// Accept records after the newest checkpoint (a live log); by default
    /// they fail verification.
    pub allow_unsigned_tail: bool,
}

/// The fingerprint a home's log is expected to carry: the manifest's pin,
/// else this home's witness key (whose seed went into the bundle).
fn expected_for(ctx: &Ctx, reg: &Registry, log: &LogTarget) -> Result<Option<(Hash, String)>> {
    if !log.in_home {
        return Ok(None);
    }
    let pin = PartitionName::new(&log.name)
        .ok()
        .and_then(|n| reg.partitions.get(&n))
        .and_then(|r| r.spec.witness_key_fingerprint);
    if let Some(p) = pin {
        return Ok(Some((
            Hash(p.0),
            "the manifest's witness_key_fingerprint".into(),
        )));
    }
    Ok(ctx.home.key(&KeyRole::Witness)?.map(|k| {
        (
            Hash(k.fingerprint().0),
            "this RVM_HOME's witness key".into(),
        )
    }))
}

/// `witness verify [<partition|file>]`: every log when none is named.
pub fn verify(ctx: &Ctx, which: Option<&str>, args: &VerifyArgs) -> Result<()> {
    let logs = match which {
        Some(t) => vec![target(ctx, t)?],
        None => all_logs(ctx)?,
    };
    let reg = ctx.home.load()?;
    let given_key = match &args.pub_file {
        Some(p) => Some(rvm_witness_host::read_key(p).map_err(host_error)?),
        None => None,
    };
    let mut failed = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let (expected, why) = match args.key_fingerprint {
            Some(f) => (Some(Hash(f.0)), "--key-fingerprint".to_string()),
            None => match expected_for(ctx, &reg, log)? {
                Some((h, w)) => (Some(h), w),
                None => (None, String::new()),
            },
        };
        let opts = VerifyOptions {
            key: given_key,
            expected_fingerprint: expected,
            allow_unsigned_tail: args.allow_unsigned_tail,
            ..VerifyOptions::default()
        };
        let rep = rvm_witness_host::verify(&log.path, &opts).map_err(host_error)?;
        if i > 0 {
            println!();
        }
        print!("{rep}");
        if expected.is_some() {
            println!("(expected key: {why})");
        }
        let key_mismatch = matches!(rep.key_check, rvm_witness_host::KeyCheck::Mismatch { .. });
        if let Some(first) = rep.first_unsigned_record().filter(|_| !key_mismatch) {
            let unsigned = rep.result.as_ref().map_or(0, |s| s.unsigned);
            failed.push(format!(
                "{}: {unsigned} records are not signed by a checkpoint; first unsigned record {first} \
                 (pass --allow-unsigned-tail for a log whose run is still going)",
                log.path.display()
            ));
        } else if !rep.is_ok() {
            failed.push(match rep.first_bad_record() {
                Some(r) => format!(
                    "{}: does not verify; first bad record {r}",
                    log.path.display()
                ),
                None => format!("{}: does not verify", log.path.display()),
            });
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(
        failed
            .into_iter()
            .map(|f| Diagnostic::file("witness verify", f))
            .collect(),
    ))
}

/// Output formats of `witness export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per record, one per line.
    Jsonl,
    /// The input journal beside the log: one JSON object per entry, one per
    /// line (`kind`, `seq`, `regs`, `status`, `results`, `data` hex; or the
    /// start entry's `handles`).
    JournalJsonl,
}

/// The journal entries filed beside `log` (`None` when it has no journal).
fn journal_beside(log: &LogTarget) -> Result<Option<Vec<rvm_abi::journal::JournalFrame>>> {
    let path = crate::witness_sink::journal_path(&log.path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::failed(format!("{}: {e}", path.display()))),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f = rvm_abi::journal::JournalFrame::parse(line).ok_or_else(|| {
            Error::refused(
                path.display().to_string(),
                format!("line {}: not a journal entry", n + 1),
            )
        })?;
        out.push(f);
    }
    Ok(Some(out))
}

/// One journal entry as a JSON object.
fn journal_json(f: &rvm_abi::journal::JournalFrame) -> serde_json::Value {
    use rvm_abi::journal::Entry;
    match &f.entry {
        Entry::Call {
            seq,
            regs,
            status,
            results,
            data,
        } => serde_json::json!({
            "log": f.log, "kind": "call", "seq": seq, "regs": regs, "status": status,
            "results": results, "data": rvm_abi::hex::to_string(data),
        }),
        Entry::Start { seq, handles } => serde_json::json!({
            "log": f.log, "kind": "start", "seq": seq,
            "handles": handles.iter().map(|h| serde_json::json!({
                "raw": h.raw, "kind": h.kind, "rights": h.rights, "agent": h.agent,
            })).collect::<Vec<_>>(),
        }),
    }
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match out {
        Some(p) => home::write_atomic(p, bytes, 0o644),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(bytes)
                .map_err(|e| Error::failed(format!("<stdout>: {e}")))
        }
    }
}

/// `witness export --format jsonl <partition|file> [--out FILE]`.
pub fn export(ctx: &Ctx, which: &str, format: ExportFormat, out: Option<&Path>) -> Result<()> {
    let log = target(ctx, which)?;
    let reg = ctx.home.load()?;
    let mut buf = Vec::new();
    let n = match format {
        ExportFormat::Jsonl => {
            rvm_witness_host::export_jsonl(&log.path, &names_for(&reg, &log), &mut buf)
                .map_err(host_error)?
        }
        ExportFormat::JournalJsonl => {
            let entries = journal_beside(&log)?.ok_or_else(|| {
                Error::refused(
                    log.path.display().to_string(),
                    "no journal beside this log (boot with --journal)",
                )
            })?;
            for f in &entries {
                buf.extend_from_slice(journal_json(f).to_string().as_bytes());
                buf.push(b'\n');
            }
            entries.len() as u64
        }
    };
    write_out(out, &buf)?;
    if let Some(p) = out {
        eprintln!(
            "{n} records of {} written to {}",
            log.path.display(),
            p.display()
        );
    }
    Ok(())
}

/// `witness prove --seq N <partition|file> [--json] [--out FILE]`.
pub fn prove(ctx: &Ctx, which: &str, seq: u64, json: bool, out: Option<&Path>) -> Result<()> {
    let log = target(ctx, which)?;
    let proof = rvm_witness_host::prove(&log.path, seq).map_err(host_error)?;
    let text = if json {
        proof.to_json() + "\n"
    } else {
        proof.to_text()
    };
    write_out(out, text.as_bytes())?;
    eprintln!(
        "inclusion proof of record {seq} of {} (log {}) against its signed checkpoint of size {}{}",
        log.path.display(),
        proof.log,
        proof.size,
        out.map_or(String::new(), |p| format!(", written to {}", p.display()))
    );
    Ok(())
}

/// Where `witness verify-proof` takes the key from.
#[derive(Clone, Debug)]
pub enum ProofKey {
    /// A verifier-key file (`<name>.pub`).
    PubFile(PathBuf),
    /// The `.pub` beside a log of this home.
    Log(String),
    /// This home's witness key.
    Home,
}

/// `witness verify-proof <FILE> [--pub FILE | --log NAME]`.
pub fn verify_proof(ctx: &Ctx, file: &Path, key: &ProofKey) -> Result<()> {
    let shown = file.display().to_string();
    let text = if shown == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Error::failed(format!("<stdin>: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::refused(&shown, "no such file"),
            _ => Error::failed(format!("{shown}: {e}")),
        })?
    };
    let proof = rvm_witness_host::InclusionProof::parse(&text)
        .map_err(|e| Error::refused(&shown, e.to_string()))?;
    let mut own: Option<String> = None;
    let (public, source) = match key {
        ProofKey::PubFile(p) => (
            rvm_witness_host::read_key(p).map_err(host_error)?,
            p.display().to_string(),
        ),
        ProofKey::Log(name) => {
            let log = target(ctx, name)?;
            let files = rvm_witness_host::LogFiles::for_log_path(&log.path).map_err(host_error)?;
            own = Some(log.name);
            (
                rvm_witness_host::read_key(&files.key).map_err(host_error)?,
                files.key.display().to_string(),
            )
        }
        ProofKey::Home => {
            let k = ctx.home.key(&KeyRole::Witness)?.ok_or_else(|| {
                Error::refused(
                    &shown,
                    "this RVM_HOME has no witness key to check the proof with: pass --pub FILE",
                )
            })?;
            (
                PublicKey(k.public),
                "this RVM_HOME's witness key".to_string(),
            )
        }
    };
    match rvm_witness_host::verify_proof_embedded(&proof, &public) {
        Ok(p) => {
            let line = rvm_witness_host::show::decode_line(
                p.seq,
                &proof.record,
                &Hash::ZERO,
                |id| match (id, own.as_deref()) {
                    (HYPERVISOR_LOG, _) => HYPERVISOR_NAME.to_string(),
                    (id, Some(n)) if id == p.log.0 => n.to_string(),
                    (id, _) => format!("partition-{id}"),
                },
            );
            println!(
                "OK: record {} of log {} is leaf {} of the tree of size {} (root {}), whose checkpoint is signed by key {} ({source})",
                p.seq,
                p.log,
                p.seq,
                p.size,
                p.root,
                KeyFingerprint(public.fingerprint().0),
            );
            println!("{}", show_header());
            println!("{line}");
            Ok(())
        }
        Err(e) => Err(Error::refused(
            &shown,
            format!("the proof does not verify: {e}"),
        )),
    }
}

/// `witness replay <partition> [--wasm FILE] [--quiet]`: re-execute the
/// partition's agent from its filed log and journal (see [`crate::replay`]).
/// Exit 0 when every state hash is reproduced; 1 when the replay differs or
/// the journal or log was changed; 2 for a missing partition, log, journal
/// or module, or a log the replay cannot re-execute.
pub fn replay(ctx: &Ctx, partition: &str, wasm: Option<&Path>, quiet: bool) -> Result<()> {
    use crate::replay::{self as rp, Progress, ReplayFailure, ReplayInput};
    let name = crate::parse::names::partition_name("<partition>", "value", partition)?;
    let reg = ctx.home.load()?;
    let module = match wasm {
        Some(p) => std::fs::read(p).map_err(|e| {
            Error::refused(
                p.display().to_string(),
                format!("cannot read the module: {e}"),
            )
        })?,
        None => {
            let rec = reg.partitions.get(&name).ok_or_else(|| {
                Error::refused(
                    partition,
                    "no partition of that name is registered (or give the module with --wasm FILE)",
                )
            })?;
            let g = rec.guest.as_ref().ok_or_else(|| {
                Error::refused(
                    partition,
                    "the partition has no guest module bound (give it with --wasm FILE)",
                )
            })?;
            ctx.home.module(&g.module_sha256)?
        }
    };
    let info = crate::resolve::check_module(&format!("module of partition {partition}"), &module)?;
    let log = target(ctx, partition)?;
    let bytes = std::fs::read(&log.path)
        .map_err(|e| Error::failed(format!("{}: {e}", log.path.display())))?;
    if bytes.len() % rvm_abi::witness::RECORD_LEN != 0 {
        return Err(Error::refused(
            log.path.display().to_string(),
            "not a whole number of 64-byte records",
        ));
    }
    let records: Vec<[u8; 64]> = bytes
        .chunks_exact(rvm_abi::witness::RECORD_LEN)
        .map(|c| <[u8; 64]>::try_from(c).unwrap_or([0; 64]))
        .collect();
    let first = records
        .first()
        .and_then(|b| rvm_abi::WitnessRecord::from_bytes(b).ok());
    let Some(log_id) = first.map(|r| r.partition) else {
        return Err(Error::refused(
            log.path.display().to_string(),
            "the log is empty",
        ));
    };
    let journal_path = crate::witness_sink::journal_path(&log.path);
    let text = match std::fs::read_to_string(&journal_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::refused(
                journal_path.display().to_string(),
                "no journal beside the log: boot with --journal to record what replay needs",
            ))
        }
        Err(e) => return Err(Error::failed(format!("{}: {e}", journal_path.display()))),
    };
    let journal = rp::parse_journal(&text, log_id).map_err(|e| {
        Error::Failed(format!(
            "{}: {e}: the journal was changed or damaged",
            journal_path.display()
        ))
    })?;
    if !quiet {
        eprintln!(
            "replaying {} ({} records, {} journal entries) with a module of {} bytes",
            log.path.display(),
            records.len(),
            journal.len(),
            module.len()
        );
    }
    let input = ReplayInput {
        log: log_id,
        name: &log.name,
        records,
        journal,
        wasm: &module,
        wasm_pages: crate::resolve::wasm_pages(&info),
        fuel_per_slice: 0,
    };
    let started = std::time::Instant::now();
    let mut show = |p: &Progress| {
        if quiet {
            return;
        }
        match p {
            Progress::Snapshot { id, turn, seq } => {
                eprintln!(
                    "  snapshot {id} after turn {turn} (record #{seq}): state hash reproduced"
                )
            }
            Progress::Instance { n, turns, next } => {
                eprintln!("  instance {n} ended after turn {turns}: {next}")
            }
        }
    };
    match rp::replay_on_own_stack(input, &mut show) {
        Ok(report) => {
            let secs = started.elapsed().as_secs_f64();
            println!("{partition}: {report}");
            if !quiet && secs > 0.0 {
                eprintln!(
                    "  {:.0} turns/s, {:.0} calls/s ({secs:.3} s)",
                    report.turns as f64 / secs,
                    report.calls as f64 / secs
                );
            }
            Ok(())
        }
        Err(f) => {
            let msg = format!("{partition}: {f}");
            match f {
                ReplayFailure::Tampered { .. } | ReplayFailure::Diverged { .. } => {
                    Err(Error::Failed(msg))
                }
                ReplayFailure::Input(_) | ReplayFailure::Unsupported { .. } => {
                    Err(Error::refused(partition, f.to_string()))
                }
            }
        }
    }
}
