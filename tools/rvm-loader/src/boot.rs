//! Booting registered partitions together: the plan (checked before
//! anything is written), the bundle, QEMU with a timeout, the console
//! stream, the witness logs filed under `RVM_HOME/witness/`, and a check
//! of what was filed.
//!
//! Order of events, and what each failure means:
//!
//! 1. [`plan`]: every partition registered, with a guest whose module
//!    still passes the import check; no name twice; each manifest's
//!    `witness_key_fingerprint` pin equal to this home's witness key (whose
//!    seed goes into the bundle); every `--link A:B` names two partitions of
//!    this boot (the only channels the bundle gets). Any problem is a
//!    refusal (exit 2) before anything is written.
//! 2. Keys are created if missing (the witness key; an authority key for a
//!    partition with P3 rights), the bundle is laid out and read back, the
//!    witness store is opened. The bundle QEMU reads holds the witness
//!    key's seed: it is written to `RVM_HOME/run/` (0700) as a 0600 file
//!    created `O_EXCL|O_NOFOLLOW` under an unpredictable name, removed when
//!    the hypervisor first speaks and on every way out of [`boot`].
//!    `--bundle-out` leaves the seed out unless `--include-witness-seed`.
//!    QEMU starts only if all of that worked.
//! 3. The run: console lines are printed, witness frames filed as they
//!    arrive (with `--show-witness`, also printed compactly). The run stops
//!    early — QEMU killed — when the announced witness key is not the one a
//!    manifest pins, or when a frame cannot be filed.
//! 4. The run's status is the hypervisor's exit frame (`@X <code>`, its
//!    last line before PSCI `SYSTEM_OFF`, after which QEMU exits 0): code 0
//!    is a clean run; any other code, no exit frame, or a nonzero exit of
//!    QEMU itself fails the command (exit 1).
//! 5. After the run every filed log is verified (chain, links, signatures,
//!    checkpoints, and every record signed: the rule of `witness verify`
//!    without `--allow-unsigned-tail`). A log that does not verify fails the
//!    command (exit 1).

use crate::bundler::{self, BootPlan, PlannedPartition};
use crate::error::{Error, Result};
use crate::home::{self, RunRecord, RunState};
use crate::keys::KeyRole;
use crate::limits;
use crate::model::{PartitionName, Token};
use crate::qemu::{self, Exit, Flow, Watch};
use crate::resolve;
use crate::source;
use crate::stream::{LineSplitter, Session, Shown};
use crate::witness_sink::{Filed, KeyPolicy, SinkError, WitnessSink};
use rvm_abi::bundle::BootConfig;
use rvm_abi::ProofTier;
use rvm_witness_host::files::TempFile;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::commands::Ctx;

/// Options of every command that boots.
#[derive(Clone, Debug)]
pub struct BootOptions {
    pub image_dir: Option<PathBuf>,
    pub qemu: Option<PathBuf>,
    pub timeout: Duration,
    /// Also write the bundle here.
    pub bundle_out: Option<PathBuf>,
    /// Build (and write) the bundle but do not start QEMU.
    pub no_boot: bool,
    /// Print every witness frame compactly as it arrives.
    pub live_witness: bool,
    /// Journal every partition's inputs (`@J` frames) for `witness replay`.
    pub journal: bool,
    /// Evaluate coherence domains: the hypervisor cuts the partitions'
    /// communication graph and splits or merges agents
    /// ([`BOOT_FLAG_COHERENCE`](rvm_abi::bundle::BOOT_FLAG_COHERENCE)).
    pub coherence: bool,
    /// Channels the operator asked for (`--link A:B`); no other channel
    /// exists between the partitions of a boot.
    pub links: Vec<Link>,
    /// `--bundle-out` keeps the witness key's seed (`--include-witness-seed`).
    pub include_witness_seed: bool,
    /// Run as the instance of this RVM_HOME (`instance start`), with its
    /// folder: the lock, live status and end are written there
    /// ([`crate::instance`]).
    pub instance: Option<PathBuf>,
    /// The instance continues the last one ([`crate::roster`]): the
    /// partitions' ids and the logs that go on.
    pub continuation: Option<crate::roster::Continuation>,
}

/// `--link A:B`: a channel between two partitions booted together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub a: PartitionName,
    pub b: PartitionName,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.a, self.b)
    }
}

/// The bundle indices of the partitions each `--link` joins. Refused (exit
/// 2) when a name does not boot in this run, a partition is linked to
/// itself, or a pair is named twice.
pub fn link_indices(names: &[PartitionName], links: &[Link]) -> Result<Vec<(u32, u32)>> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for l in links {
        let index = |n: &PartitionName| {
            names
                .iter()
                .position(|x| x == n)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| {
                    Error::refused(
                        format!("--link {l}"),
                        format!(
                            "names {n}, which does not boot in this run (booting: {})",
                            names
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
        };
        let (a, b) = (index(&l.a)?, index(&l.b)?);
        if a == b {
            return Err(Error::refused(
                format!("--link {l}"),
                "links a partition to itself",
            ));
        }
        let pair = (a.min(b), a.max(b));
        if out.contains(&pair) {
            return Err(Error::refused(
                format!("--link {l}"),
                "links the same two partitions twice",
            ));
        }
        out.push(pair);
    }
    Ok(out)
}

/// Whether a capability table holds any right at proof tier 3 (and so
/// needs an authority key).
pub fn has_p3(tokens: &[Token]) -> bool {
    tokens.iter().any(|t| t.proof_tier == ProofTier::P3)
}

/// Refuse a name given twice, or more partitions than `what` (boot,
/// admit) together.
pub fn check_names(what: &str, names: &[PartitionName]) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(Error::refused(what, format!("partition {n} is named twice")));
        }
    }
    if names.len() > limits::PARTITIONS_PER_BOOT_MAX {
        return Err(Error::refused(
            what,
            format!("{} partitions; at most {} {what} together", names.len(), limits::PARTITIONS_PER_BOOT_MAX),
        ));
    }
    Ok(())
}

/// The registered partitions `names`, in that order, each with its
/// guest's module, checked again. Refused when one is not registered, has
/// no guest, or its module no longer passes the import check, or when a
/// manifest pins a witness key other than this home's
/// ([`check_witness_pins`]). Writes nothing; no authority key is bound yet
/// ([`bind_authority_keys`]).
pub fn planned_partitions(ctx: &Ctx, names: &[PartitionName]) -> Result<Vec<PlannedPartition>> {
    let reg = ctx.home.load()?;
    let mut parts = Vec::new();
    for n in names {
        let rec = reg.partition(n)?.clone();
        let Some(g) = &rec.guest else {
            return Err(Error::refused(
                format!("partition {n}"),
                format!("has no guest: run `rvm-loader guest boot --partition {n} --wasm-ref FILE` or `rvm-loader deploy FOLDER`"),
            ));
        };
        let module = ctx.home.module(&g.module_sha256)?;
        let info = resolve::check_module(&format!("module of partition {n}"), &module)?;
        parts.push(PlannedPartition {
            wasm_pages: resolve::wasm_pages(&info),
            module,
            record: rec,
            authority: None,
        });
    }
    check_witness_pins(ctx, &parts)?;
    Ok(parts)
}

/// Refuse a partition whose manifest pins (`witness_key_fingerprint`) a
/// witness key other than this home's, or pins one before it exists.
fn check_witness_pins(ctx: &Ctx, parts: &[PlannedPartition]) -> Result<()> {
    let witness = ctx.home.key(&KeyRole::Witness)?;
    for p in parts {
        if let Some(pin) = p.record.spec.witness_key_fingerprint {
            let have = witness.as_ref().map(|k| k.fingerprint());
            if have != Some(pin) {
                return Err(Error::refused(
                    p.record.manifest.path.clone(),
                    format!(
                        "partition.witness_key_fingerprint: pins {pin}, but this RVM_HOME's witness key is {} (see `rvm-loader keys`)",
                        have.map_or_else(|| "not created yet".to_string(), |f| f.to_string())
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Bind each partition with P3 rights to the public half of its authority
/// key, creating the key if it is missing (call once everything is checked).
pub fn bind_authority_keys(ctx: &Ctx, parts: &mut [PlannedPartition]) -> Result<()> {
    for p in parts {
        if p.record.caps.as_ref().is_some_and(|c| has_p3(&c.tokens)) {
            let k = ctx.home.key_or_create(&KeyRole::Authority(p.record.spec.name.clone()))?;
            p.authority = Some(k.public);
        }
    }
    Ok(())
}

/// Build the plan for `names` from the registry. Refuses before anything
/// is written; then creates the keys the boot needs.
pub fn plan(
    ctx: &Ctx,
    names: &[PartitionName],
    opts: &BootOptions,
) -> Result<(BootPlan, qemu::Images)> {
    check_names("boot", names)?;
    let links = link_indices(names, &opts.links)?;
    let mut parts = planned_partitions(ctx, names)?;
    let images = qemu::locate(opts.image_dir.as_deref())?;
    let runtime = source::read_bytes(&images.runtime, limits::RUNTIME_MAX)
        .map_err(|d| Error::failed(d.to_string()))?;
    // Everything is checked: create what is missing.
    let witness_key = ctx.home.key_or_create(&KeyRole::Witness)?;
    let operator_key = ctx.home.key_or_create(&KeyRole::Operator)?;
    bind_authority_keys(ctx, &mut parts)?;
    // An instance has no budget: it runs until stopped.
    let budget_ms = match opts.instance {
        Some(_) => 0,
        None => u32::try_from(opts.timeout.as_millis() / 4 * 3).unwrap_or(u32::MAX),
    };
    let mut flags = if opts.journal {
        rvm_abi::journal::BOOT_FLAG_JOURNAL
    } else {
        0
    };
    if opts.instance.is_some() {
        flags |= rvm_abi::bundle::BOOT_FLAG_INSTANCE;
    }
    if opts.instance.is_some() {
        // An instance keeps committed state on the host (its control
        // channel carries the sets; one without a channel is not started).
        flags |= rvm_abi::bundle::BOOT_FLAG_SAVE_STATE;
    }
    if opts.coherence {
        flags |= rvm_abi::bundle::BOOT_FLAG_COHERENCE;
    }
    let config = BootConfig {
        run_budget_ms: budget_ms,
        flags,
        ..BootConfig::DEFAULT
    };
    Ok((
        BootPlan {
            ids: Vec::new(),
            resumes: Vec::new(),
            restores: Vec::new(),
            first_free: None,
            partitions: parts,
            runtime,
            witness_key,
            config,
            operator_key: Some(operator_key.public),
            links,
            boot_id: bundler::fresh_boot_id()?,
        },
        images,
    ))
}

/// Name prefix of a boot's bundle under `RVM_HOME/run/`:
/// `bundle-<loader pid>-<random>.bin`.
const BUNDLE_PREFIX: &str = "bundle-";

/// Remove what a loader left under `run` when it was killed before it
/// could (its process is gone): bundles (they hold the witness key's seed)
/// and its sockets (`loader-<pid>.sock`, `channel-<pid>.sock`).
fn sweep_stale_bundles(run: &Path) {
    let Ok(entries) = std::fs::read_dir(run) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| {
            [BUNDLE_PREFIX, "loader-", "channel-"].into_iter().find_map(|p| n.strip_prefix(p))
        }) else {
            continue;
        };
        let Some(pid) = rest.split(['-', '.']).next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Write the bundle QEMU boots: under `RVM_HOME/run/` (0700), mode 0600,
/// created with `O_EXCL|O_NOFOLLOW` under an unpredictable name. It is
/// removed once QEMU has loaded it (the first output), and on every way out
/// of [`boot`] (dropped).
fn write_run_bundle(ctx: &Ctx, bytes: &[u8]) -> Result<TempFile> {
    let run = ctx.home.run_dir()?;
    sweep_stale_bundles(&run);
    TempFile::write_new(
        &run,
        &format!("{BUNDLE_PREFIX}{}-", std::process::id()),
        ".bin",
        0o600,
        bytes,
    )
    .map_err(|e| Error::failed(format!("{}: bundle: {e}", run.display())))
}

/// `--bundle-out FILE`: the bundle without the witness key's seed, unless
/// `--include-witness-seed` (then mode 0600, and a warning).
fn write_bundle_out(out: &Path, bytes: &[u8], include_seed: bool) -> Result<()> {
    if include_seed {
        eprintln!(
            "rvm-loader: warning: {} holds the witness key's seed (--include-witness-seed): whoever reads it can sign this home's witness checkpoints",
            out.display()
        );
        home::write_atomic(out, bytes, 0o600)?;
        println!(
            "bundle written to {} ({} bytes, with the witness key's seed, mode 0600)",
            out.display(),
            bytes.len()
        );
    } else {
        let stripped = bundler::without_witness_seed(bytes)?;
        home::write_atomic(out, &stripped, 0o644)?;
        println!(
            "bundle written to {} ({} bytes; the witness key's seed left out: pass --include-witness-seed to keep it)",
            out.display(),
            stripped.len()
        );
    }
    Ok(())
}

/// Set the last run of each of `names` that is registered to what `run`
/// makes of it (given its last run so far); `None` leaves it as it is.
pub(crate) fn set_runs(
    ctx: &Ctx,
    names: &[PartitionName],
    run: &dyn Fn(&PartitionName, Option<&RunRecord>) -> Option<RunRecord>,
) -> Result<()> {
    ctx.home.update(|reg| {
        for n in names {
            if let Some(rec) = reg.partitions.get_mut(n) {
                if let Some(r) = run(n, rec.last_run.as_ref()) {
                    rec.last_run = Some(r);
                }
            }
        }
        Ok(())
    })
}

/// Partition names for a message: `a, b`, or `no partition`.
pub(crate) fn listed<T: ToString>(names: &[T]) -> String {
    if names.is_empty() {
        return "no partition".to_string();
    }
    names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn show(s: Shown) {
    match s {
        Shown::Console(l) | Shown::Witness(l) => println!("{l}"),
        Shown::Progress(p) => eprintln!("rvm-loader: {p}"),
    }
}

/// Feeds QEMU's output to the session and reports progress.
struct Watcher<'s, 'a> {
    splitter: LineSplitter,
    session: &'s mut Session<'a>,
    start: Instant,
    first_output: Option<Duration>,
    timeout: Duration,
    /// The bundle file QEMU was given: removed at the first output (QEMU
    /// has loaded it by then), else when the watcher is dropped.
    bundle_file: TempFile,
    /// An instance's lock: it says the hypervisor talks at its first
    /// output, and the live status follows the partitions (those admitted
    /// while it runs too) and their states.
    instance: Option<crate::instance::Lock>,
    /// States last written to the live status.
    shown_states: std::collections::BTreeMap<u32, RunState>,
    /// Named logs when the live status was last written.
    shown_names: usize,
    /// An instance's roster ([`crate::roster`]), rewritten with the status.
    roster: Option<crate::roster::RosterWriter>,
    /// An instance keeps its partitions' committed sets here ([`crate::state`]).
    keeps_state: Option<crate::home::Home>,
    /// Where `StateSaved` answers go, once the control channel is connected.
    reply: Option<crate::channel::FrameWriter>,
    /// Runs the tools partitions call ([`crate::tools`]), when the run
    /// serves them; and the home their claims and registrations are in.
    tools: Option<(std::sync::Arc<crate::tools::serve::ToolServer>, crate::home::Home)>,
}

impl Watcher<'_, '_> {
    /// Write the instance's live status if a state changed or a partition
    /// was admitted.
    fn follow_states(&mut self) {
        let Some(lock) = &self.instance else { return };
        let names = self.session.names();
        if self.session.states() != &self.shown_states || names.0.len() != self.shown_names {
            self.shown_states = self.session.states().clone();
            self.shown_names = names.0.len();
            crate::instance::write_status(&lock.dir(), names, &self.shown_states);
            if let Some(r) = &self.roster {
                r.write(&names.0, &self.shown_states);
            }
        }
    }
}

impl Watch for Watcher<'_, '_> {
    fn output(&mut self, bytes: &[u8]) -> Flow {
        if self.first_output.is_none() {
            let t = self.start.elapsed();
            self.first_output = Some(t);
            self.bundle_file.remove();
            eprintln!(
                "rvm-loader: the hypervisor is talking after {:.2} s",
                t.as_secs_f64()
            );
            if let Some(lock) = &mut self.instance {
                lock.note_running();
                crate::instance::write_status(&lock.dir(), self.session.names(), &self.shown_states);
            }
        }
        let session = &mut *self.session;
        self.splitter
            .push(bytes, &mut |line| session.line(&line, &mut show));
        self.follow_states();
        if self.session.sink_error().is_some() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn started(&mut self, pid: u32) {
        eprintln!("rvm-loader: QEMU started (pid {pid}); waiting for the hypervisor...");
    }

    fn frame(&mut self, line: &str) -> Flow {
        self.session.line(line, &mut show);
        self.follow_states();
        if self.session.sink_error().is_some() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn channel_broken(&mut self, why: &str) -> Flow {
        self.session.channel_broken(why);
        Flow::Stop
    }

    fn channel_open(&mut self, reply: crate::channel::FrameWriter) {
        self.reply = Some(reply);
    }

    /// Keep the set, then tell the hypervisor: its partition is parked
    /// until then. The records that vouch for it came first on the same
    /// stream, and were synced with the checkpoint signed right after
    /// them, so the log on disk already holds them. A set that cannot be
    /// kept is not acknowledged: its partition stays parked, and says so.
    fn state(&mut self, set: crate::state::SavedSet) -> Flow {
        let Some(home) = &self.keeps_state else { return Flow::Continue };
        let name = self.session.names().name(set.log).cloned();
        let Some(name) = name else {
            eprintln!("rvm-loader: warning: a committed set of log {} that has no partition name was not kept", set.log);
            return Flow::Continue;
        };
        if let Err(e) = crate::state::save(home, &name, &set) {
            eprintln!("rvm-loader: error: {name}'s committed state (record {}) was not kept: {e}; the partition waits", set.seq);
            return Flow::Continue;
        }
        // The roster says it was kept before the partition can see it was:
        // a restart then takes no older copy of it.
        if let Some(r) = self.roster.as_mut() {
            let names = self.session.names();
            if let Err(e) = r.keep(set.log, name.as_str(), set.seq, &names.0, self.session.states()) {
                eprintln!("rvm-loader: error: the roster could not say {name}'s committed state (record {}) was kept: {e}; the partition waits", set.seq);
                return Flow::Continue;
            }
        }
        let mut frame = Vec::new();
        rvm_abi::control::write_state_saved(&mut |b| frame.extend_from_slice(b), set.log, set.seq);
        if let Some(w) = self.reply.as_mut() {
            if let Err(e) = std::io::Write::write_all(w, &frame) {
                eprintln!("rvm-loader: error: could not tell the hypervisor {name}'s committed state was kept: {e}");
            }
        }
        Flow::Continue
    }

    /// Run the tool on a thread of its own (a slow tool holds neither the
    /// run nor other calls) and answer the hypervisor when it ends. Its
    /// claims are re-checked against the partition's capability table.
    fn tool(&mut self, call: crate::channel::ToolRequest) -> Flow {
        let Some((server, home)) = &self.tools else { return Flow::Continue };
        let Some(writer) = self.reply.clone() else { return Flow::Continue };
        let name = self.session.names().name(call.log).cloned();
        let claims = name
            .as_ref()
            .and_then(|n| home.load().ok()?.partitions.get(n).map(crate::bundler::tool_claims))
            .unwrap_or_default();
        let server = std::sync::Arc::clone(server);
        let spawned = std::thread::Builder::new().name(format!("tool-{}-{}", call.log, call.seq)).spawn(move || {
            let who = name.as_ref().map_or_else(|| format!("log {}", call.log), |n| n.to_string());
            let answer = match &name {
                Some(n) => server.call(n.as_str(), &claims, &call.name, &call.request, call.capacity as usize),
                None => crate::tools::serve::Answer {
                    status: rvm_abi::tool::AnswerStatus::Failed,
                    response: Vec::new(),
                    note: "a tool call from a log with no partition name".into(),
                },
            };
            eprintln!("rvm-loader: tool call, record {}: {}", call.seq, answer.note);
            let mut frame = rvm_abi::control::tool_answer_start(call.log, call.seq, answer.status, answer.response.len()).to_vec();
            frame.extend_from_slice(&answer.response);
            let mut writer = writer;
            if let Err(e) = std::io::Write::write_all(&mut writer, &frame) {
                eprintln!("rvm-loader: {who}: the answer to tool call (record {}) could not be sent: {e}", call.seq);
            }
        });
        if let Err(e) = spawned {
            eprintln!("rvm-loader: a tool call (log {}, record {}) could not be served: {e}; the kernel answers it at its deadline", call.log, call.seq);
        }
        Flow::Continue
    }

    fn quiet(&mut self, since_output: Duration, elapsed: Duration) {
        eprintln!(
            "rvm-loader: no output for {} s ({} s into the run; QEMU is killed at {} s)",
            since_output.as_secs(),
            elapsed.as_secs(),
            self.timeout.as_secs()
        );
    }
}

/// Boot `names` together.
pub fn boot(ctx: &Ctx, names: &[PartitionName], opts: &BootOptions) -> Result<()> {
    let (mut plan, images) = plan(ctx, names, opts)?;
    let resumes = opts.continuation.as_ref().map_or_else(Vec::new, |c| c.resumes.clone());
    if let Some(c) = &opts.continuation {
        plan.first_free = Some(c.first_free);
        plan.ids = c.ids.clone();
        plan.resumes = c.resumes.iter().map(|(id, _, p)| (*id, p.clone())).collect();
        plan.restores = c.restores.clone();
    }
    // Witness and journal frames come on the control channel when it can
    // be made; else on the console, as before. Tool calls need it: the
    // boot serves them only with it.
    let mut channel = if opts.no_boot {
        None
    } else {
        std::fs::create_dir_all(ctx.home.root().join(crate::control::RUN_DIR))
            .and_then(|()| crate::channel::Channel::listen(crate::channel::socket_path(ctx.home.root(), std::process::id())))
            .map_err(|e| eprintln!("rvm-loader: no control channel for this run ({e}): witness frames come on the console, and tool calls are refused"))
            .ok()
    };
    if channel.is_none() && opts.instance.is_some() && !opts.no_boot {
        return Err(Error::failed(
            "an instance needs its control channel (admissions and durable state travel on it); not started",
        ));
    }
    if channel.is_some() {
        plan.config.flags |= rvm_abi::bundle::BOOT_FLAG_TOOLS;
    }
    let bytes = bundler::build(&plan)?;
    if let Some(out) = &opts.bundle_out {
        write_bundle_out(out, &bytes, opts.include_witness_seed)?;
    }
    let list = plan.names();
    if opts.no_boot {
        println!(
            "bundle for {} built ({} bytes); not booted (--no-boot)",
            listed(&list),
            bytes.len()
        );
        return Ok(());
    }
    let boot_hex = rvm_abi::hex::to_string(&plan.boot_id);
    // An instance holds this RVM_HOME's lock while it runs.
    let instance = match &opts.instance {
        Some(_) => Some(crate::instance::Lock::take(ctx.home.root(), &list, &boot_hex)?),
        None => None,
    };
    let instance_dir = instance.as_ref().map(crate::instance::Lock::dir);
    let roster = match &instance_dir {
        Some(dir) => Some(crate::roster::RosterWriter::new(
            dir.clone(),
            ctx.home.key_or_create(&crate::keys::KeyRole::Operator)?,
            opts.continuation.as_ref(),
        )),
        None => None,
    };
    let log_names = plan.log_names();
    let pins: Vec<(PartitionName, crate::model::KeyFingerprint)> = plan
        .partitions
        .iter()
        .filter_map(|p| {
            p.record
                .spec
                .witness_key_fingerprint
                .map(|f| (p.record.spec.name.clone(), f))
        })
        .collect();
    let policy = KeyPolicy {
        bundle_key: Some(plan.witness_key.public),
        pins: pins.clone(),
    };
    if !resumes.is_empty() {
        eprintln!(
            "rvm-loader: continuing the last instance's logs: {}",
            resumes.iter().map(|(_, n, p)| format!("{n} from record {}", p.size)).collect::<Vec<_>>().join(", ")
        );
    }
    let mut sink = Filed::open(&ctx.home, &log_names, policy, &resumes).map_err(|e| {
        Error::failed(format!(
            "witness store {}: {e}; not booted (a run whose witness log cannot be filed does not start)",
            ctx.home.witness_dir().display()
        ))
    })?;

    let bundle_file = write_run_bundle(ctx, &bytes)?;
    let program = qemu::qemu_binary(opts.qemu.as_deref());
    let memory_mib = qemu::memory_for(list.len());
    let mut args = qemu::machine_args(
        &images.hypervisor,
        bundle_file
            .path()
            .ok_or_else(|| Error::failed("bundle file gone"))?,
        memory_mib,
    );
    if let Some(c) = &channel {
        // Before `-kernel … -initrd …`, which end the command line.
        let at = args.iter().position(|a| a == "-kernel").unwrap_or(args.len());
        args.splice(at..at, c.qemu_args());
    }
    eprintln!(
        "rvm-loader: booting {} under {} ({memory_mib} MiB, timeout {} s)",
        listed(&list),
        Path::new(&program).display(),
        opts.timeout.as_secs()
    );

    let started = home::now_unix();
    let all = plan.names();
    let boot_id = Some(boot_hex);
    // Each partition's id when the plan gives them (a continued instance).
    let id_of = |n: &PartitionName| {
        let at = all.iter().position(|x| x == n)?;
        (!plan.ids.is_empty()).then(|| plan.id_of(at))
    };
    set_runs(ctx, names, &|n, _| {
        Some(RunRecord {
            started_unix: started,
            ended_unix: None,
            loader_pid: Some(std::process::id()),
            state: RunState::Booting,
            with: all.clone(),
            outcome: None,
            boot_id: boot_id.clone(),
            partition_id: id_of(n),
        })
    })?;

    let clock = Instant::now();
    let mut session = Session::new(log_names.clone(), &mut sink);
    session.live = opts.live_witness;
    let mut watcher = Watcher {
        splitter: LineSplitter::default(),
        session: &mut session,
        start: Instant::now(),
        first_output: None,
        timeout: opts.timeout,
        bundle_file,
        instance,
        shown_states: std::collections::BTreeMap::new(),
        shown_names: 0,
        roster,
        keeps_state: opts.instance.as_ref().map(|_| ctx.home.clone()),
        reply: None,
        tools: channel
            .as_ref()
            .map(|_| (std::sync::Arc::new(crate::tools::serve::ToolServer::new(&ctx.home)), ctx.home.clone())),
    };
    // Operator orders (`partition unfence|evict`) reach the run here.
    let control = crate::control::ControlServer::listen(
        crate::control::socket_path(ctx.home.root(), std::process::id()),
        &bytes,
    )
    .map_err(|e| {
        eprintln!("rvm-loader: no control socket, so no operator orders for this run: {e}")
    })
    .ok();
    let run = qemu::run(&program, &args, opts.timeout, &mut watcher, control, channel.as_mut());
    {
        let Watcher {
            splitter, session, ..
        } = &mut watcher;
        splitter.finish(&mut |line| session.line(&line, &mut show));
    }
    // The MCP servers the run started end with it.
    if let Some((server, _)) = &watcher.tools {
        server.shutdown();
    }
    // The roster as the run left it (with the state records the host kept).
    let roster = watcher.roster.take();
    let states = session.states().clone();
    let seen = session.names().clone();
    let sink_error = session.sink_error().cloned();
    let exit_status = session.exit_status();
    drop(session);
    let summary = sink.finish();

    let outcome = match (&run, &sink_error) {
        (_, Some(SinkError::Refused(m))) => format!("stopped by the loader: {m}"),
        (_, Some(SinkError::Store(m))) => {
            format!("stopped by the loader: the witness log could not be filed: {m}")
        }
        (Ok(r), None) => match (&r.exit, exit_status) {
            (Exit::Code(0), Some(0)) => "hypervisor exited normally".to_string(),
            (Exit::Code(0), Some(c)) => format!("hypervisor exited with code {c}"),
            (Exit::Code(0), None) => {
                "QEMU exited without the hypervisor's exit frame: the run did not finish"
                    .to_string()
            }
            (Exit::Code(c), _) => format!("QEMU exited with code {c}"),
            (Exit::Signal, _) => "QEMU was ended by a signal".to_string(),
            (Exit::TimedOut, _) => {
                format!("timed out after {} s; QEMU killed", opts.timeout.as_secs())
            }
            (Exit::Stopped, _) => "stopped by the loader".to_string(),
        },
        (Err(e), None) => e.to_string(),
    };
    let ended = home::now_unix();
    // Partitions the hypervisor admitted while it ran (an instance's).
    let admitted: Vec<PartitionName> = seen.0.iter().map(|(_, n)| n.clone()).filter(|n| !all.contains(n)).collect();
    let final_state = |n: &PartitionName| {
        let id = seen.0.iter().find(|(_, x)| x == n).map(|(id, _)| *id);
        match id.and_then(|id| states.get(&id)) {
            Some(
                RunState::Booting | RunState::Running | RunState::Restarted | RunState::RolledBack,
            )
            | None => RunState::Stopped,
            Some(s) => *s,
        }
    };
    set_runs(ctx, names, &|n, _| {
        Some(RunRecord {
            started_unix: started,
            ended_unix: Some(ended),
            loader_pid: None,
            state: final_state(n),
            with: all.clone(),
            outcome: Some(outcome.clone()),
            boot_id: boot_id.clone(),
            partition_id: id_of(n),
        })
    })?;
    // An admitted partition's run ends with the instance's, if its last
    // run is still this one.
    set_runs(ctx, &admitted, &|n, last| {
        let last = last.filter(|r| r.boot_id == boot_id && r.ended_unix.is_none())?;
        Some(RunRecord {
            ended_unix: Some(ended),
            loader_pid: None,
            state: final_state(n),
            outcome: Some(outcome.clone()),
            ..last.clone()
        })
    })?;
    let pins = [pins, admitted_pins(ctx, &admitted)].concat();
    for n in all.iter().chain(&admitted) {
        eprintln!(
            "rvm-loader: {n} at the end of the run: {}",
            final_state(n).name()
        );
    }
    eprintln!(
        "rvm-loader: run took {:.1} s",
        clock.elapsed().as_secs_f64()
    );
    let mut problems = Vec::new();
    match &summary {
        Ok(s) => {
            eprintln!("rvm-loader: {}", s.note);
            for w in &s.warnings {
                eprintln!("rvm-loader: witness warning: {w}");
            }
            if !s.archived.is_empty() {
                eprintln!(
                    "rvm-loader: witness: {} files of earlier runs moved to {}",
                    s.archived.len(),
                    ctx.home
                        .witness_dir()
                        .join(rvm_witness_host::log_folder::ARCHIVE_DIR)
                        .display()
                );
            }
            problems.extend(verify_filed(s, &pins));
        }
        Err(e) => {
            eprintln!("rvm-loader: witness store: {e}");
            problems.push(format!("witness store ({e})"));
        }
    }
    let ok = run.as_ref().is_ok_and(|r| r.exit == Exit::Code(0)) && exit_status == Some(0) && sink_error.is_none() && problems.is_empty();
    if let Some(dir) = &instance_dir {
        if let (Some(r), Ok(s)) = (&roster, &summary) {
            let filed: Vec<(u32, String, PathBuf)> = s.logs.iter().map(|l| (l.log, l.name.clone(), l.path.clone())).collect();
            r.finish(&seen.0, &states, &filed);
        }
        crate::instance::write_ended(dir, &outcome, ok);
    }
    let r = run?;
    if let Some(e) = sink_error {
        return Err(Error::failed(e.to_string()));
    }
    match (r.exit, exit_status) {
        (Exit::Code(0), Some(0)) => {}
        _ => {
            let tail = r.stderr_tail.trim();
            return Err(Error::failed(if tail.is_empty() {
                outcome
            } else {
                format!("{outcome}; QEMU said: {tail}")
            }));
        }
    }
    if !problems.is_empty() {
        return Err(Error::failed(format!(
            "the witness logs of this run do not verify: {}",
            problems.join(", ")
        )));
    }
    Ok(())
}

/// The witness key pins (`witness_key_fingerprint`) of partitions admitted
/// while the run went on, from the registry (checked at their admission).
fn admitted_pins(ctx: &Ctx, admitted: &[PartitionName]) -> Vec<(PartitionName, crate::model::KeyFingerprint)> {
    let Ok(reg) = ctx.home.load() else { return Vec::new() };
    admitted
        .iter()
        .filter_map(|n| Some((n.clone(), reg.partitions.get(n)?.spec.witness_key_fingerprint?)))
        .collect()
}

/// Verify every log a run filed, printing one line per log (those of
/// partitions admitted while it ran among them); the logs that do not
/// verify are returned.
fn verify_filed(
    s: &crate::witness_sink::SinkSummary,
    pins: &[(PartitionName, crate::model::KeyFingerprint)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for l in &s.logs {
        let pin = pins
            .iter()
            .find(|(n, _)| n.as_str() == l.name)
            .map(|(_, f)| rvm_witness::Hash(f.0));
        // The rule of `witness verify` without --allow-unsigned-tail: the
        // run has ended, so every record must be signed.
        let opts = rvm_witness_host::VerifyOptions {
            expected_fingerprint: pin,
            allow_unsigned_tail: false,
            ..Default::default()
        };
        match rvm_witness_host::verify(&l.path, &opts) {
            Ok(rep) if rep.is_ok() => {
                let signed = rep.result.as_ref().map_or(0, |v| v.signed);
                eprintln!(
                    "rvm-loader: witness {}.log verified: {} records, {signed} signed",
                    l.name, rep.records,
                );
            }
            Ok(rep) => {
                eprint!("rvm-loader: witness {}.log does NOT verify:\n{rep}", l.name);
                problems.push(format!("{}.log", l.name));
            }
            Err(e) => {
                eprintln!("rvm-loader: witness {}.log cannot be verified: {e}", l.name);
                problems.push(format!("{}.log", l.name));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PartitionName {
        PartitionName::new(s).unwrap()
    }

    fn link(a: &str, b: &str) -> Link {
        Link { a: n(a), b: n(b) }
    }

    #[test]
    fn links_name_partitions_of_the_boot_and_nothing_else() {
        let names = [n("a"), n("b"), n("c")];
        assert_eq!(link_indices(&names, &[]).unwrap(), []);
        assert_eq!(
            link_indices(&names, &[link("c", "a"), link("b", "c")]).unwrap(),
            [(0, 2), (1, 2)]
        );
        for bad in [
            vec![link("a", "x")],
            vec![link("a", "a")],
            vec![link("a", "b"), link("b", "a")],
        ] {
            assert!(matches!(link_indices(&names, &bad), Err(Error::Refused(_))));
        }
    }
}
