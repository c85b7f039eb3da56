//! What each CLI command does. Every command validates all of its input
//! before it changes anything under `RVM_HOME`; a refusal (exit 2) leaves
//! the home exactly as it was.

use crate::diag::{quote, Diagnostic, Warnings};
use crate::error::{Error, Result};
use crate::folder::{self, LoadedGuest};
use crate::home::{
    self, FileStamp, GuestBinding, GuestModule, Home, InstalledCaps, PartitionRecord, Registry,
};
use crate::keys::KeyRole;
use crate::model::{PartitionName, PartitionSpec, Token};
use crate::parse::names;
use crate::resolve::{self, Resolved};
use rvm_abi::bundle::RecoveryDesc;
use rvm_abi::ProofTier;
use sha2::{Digest, Sha256};
use std::path::Path;

/// What every command needs.
pub struct Ctx {
    pub home: Home,
    /// Unix seconds, for expiry checks and run records.
    pub now: u64,
}

use crate::boot::boot;
pub use crate::boot::{BootOptions, Link};

fn warn(w: &Warnings) {
    for d in w.iter() {
        eprintln!("warning: {d}");
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// A name given on the command line.
fn name_arg(flag: &str, s: &str) -> Result<PartitionName> {
    Ok(names::partition_name(flag, "value", s)?)
}

enum Registered {
    New,
    Unchanged,
    Replaced,
}

fn register(
    reg: &mut Registry,
    spec: &PartitionSpec,
    stamp: &FileStamp,
    file: &str,
    replace: bool,
    now: u64,
) -> Result<Registered> {
    match reg.partitions.get_mut(&spec.name) {
        Some(rec) if rec.spec == *spec => Ok(Registered::Unchanged),
        Some(rec) if replace => {
            rec.spec = spec.clone();
            rec.manifest = stamp.clone();
            Ok(Registered::Replaced)
        }
        Some(rec) => Err(Error::refused(
            file,
            format!(
                "partition {} is already registered from {} with different settings; pass --replace to replace it",
                spec.name, rec.manifest.path
            ),
        )),
        None => {
            reg.partitions.insert(
                spec.name.clone(),
                PartitionRecord {
                    spec: spec.clone(),
                    manifest: stamp.clone(),
                    registered_unix: now,
                    caps: None,
                    guest: None,
                    last_run: None,
                },
            );
            Ok(Registered::New)
        }
    }
}

fn describe_spec(s: &PartitionSpec) -> String {
    format!(
        "tier {}, deadline urgency {}, cut pressure {}{}",
        s.memory_tier.name(),
        s.deadline_urgency,
        s.cut_pressure,
        s.witness_key_fingerprint
            .map_or(String::new(), |f| format!(", witness key {f}"))
    )
}

/// `partition register --manifest FILE`.
pub fn partition_register(ctx: &Ctx, manifest: &Path, replace: bool) -> Result<()> {
    let m = folder::load_manifest(manifest)?;
    warn(&m.warnings);
    let file = shown(manifest);
    let r = ctx
        .home
        .update(|reg| register(reg, &m.spec, &m.stamp, &file, replace, ctx.now))?;
    let verb = match r {
        Registered::New => "registered",
        Registered::Unchanged => "already registered (unchanged)",
        Registered::Replaced => "re-registered (replaced)",
    };
    println!(
        "partition {} {verb}: {}",
        m.spec.name,
        describe_spec(&m.spec)
    );
    Ok(())
}

/// `partition remove NAME`.
pub fn partition_remove(ctx: &Ctx, name: &str) -> Result<()> {
    let name = name_arg("NAME", name)?;
    // Running (in an instance, or a boot still on): evicted first, by the
    // operator's signed order, so nothing runs unregistered.
    let running = ctx.home.load()?.partitions.get(&name).and_then(|r| r.last_run.clone()).filter(|r| r.ended_unix.is_none());
    if let Some(pid) = running.and_then(|r| r.loader_pid).filter(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        match crate::control::deliver(&ctx.home, rvm_abi::frame::OrderKind::Evict, name.as_str(), pid) {
            Ok(text) => println!("{text}"),
            Err(e) if e.to_string().contains("already evicted") => {}
            Err(e) => {
                return Err(Error::failed(format!(
                    "partition {name} runs (loader pid {pid}) and could not be evicted, so it stays registered: {e}"
                )))
            }
        }
    }
    ctx.home.update(|reg| {
        reg.partition(&name)?;
        reg.partitions.remove(&name);
        Ok(())
    })?;
    let key = ctx.home.remove_key(&KeyRole::Authority(name.clone()))?;
    println!(
        "partition {name} removed{}",
        if key { ", with its authority key" } else { "" }
    );
    Ok(())
}

fn tier_counts(tokens: &[Token]) -> String {
    let count = |t: ProofTier| tokens.iter().filter(|x| x.proof_tier == t).count();
    format!(
        "P1: {}, P2: {}, P3: {}",
        count(ProofTier::P1),
        count(ProofTier::P2),
        count(ProofTier::P3)
    )
}

/// `caps install --table FILE [--partition NAME]`.
pub fn caps_install(ctx: &Ctx, table: &Path, partition: Option<&str>) -> Result<()> {
    let t = folder::load_table(table, ctx.now)?;
    let file = shown(table);
    let sibling = folder::sibling_manifest(table);
    let name = match (partition, &sibling) {
        (Some(p), sib) => {
            let n = name_arg("--partition", p)?;
            if let Some(sib) = sib {
                match folder::load_manifest(sib) {
                    Ok(m) if m.spec.name != n => {
                        return Err(Error::refused(
                            &file,
                            format!(
                                "belongs to the manifest beside it, {}, which names partition {}; --partition names {n}",
                                shown(sib),
                                m.spec.name
                            ),
                        ))
                    }
                    Ok(_) => {}
                    Err(d) => eprintln!("warning: {d} (the manifest beside the table; --partition {n} is used)"),
                }
            }
            n
        }
        (None, Some(sib)) => folder::load_manifest(sib)?.spec.name,
        (None, None) => {
            return Err(Error::refused(
                &file,
                format!(
                    "the table does not name its partition and no {} or {} is beside it: pass --partition NAME",
                    folder::ADAPTER_MANIFEST,
                    folder::SCAFFOLD_MANIFEST
                ),
            ))
        }
    };
    warn(&t.warnings);
    let replaced = ctx.home.update(|reg| {
        let rec = reg.partition_mut(&name)?;
        let old = rec.caps.replace(InstalledCaps {
            tokens: t.tokens.clone(),
            table: t.stamp.clone(),
        });
        Ok(old.map(|o| o.tokens.len()))
    })?;
    println!(
        "installed {} capabilities for partition {name} ({}){}",
        t.tokens.len(),
        tier_counts(&t.tokens),
        replaced.map_or(String::new(), |n| format!(", replacing {n}"))
    );
    authority_for(ctx, &name, &t.tokens)
}

/// Create the partition's authority key when its table has P3 rights (it
/// is kept when a later table has none, so approvals already given stay
/// checkable; `partition remove` deletes it).
fn authority_for(ctx: &Ctx, name: &PartitionName, tokens: &[Token]) -> Result<()> {
    if !crate::boot::has_p3(tokens) {
        return Ok(());
    }
    let role = KeyRole::Authority(name.clone());
    let existed = ctx.home.key(&role)?.is_some();
    let k = ctx.home.key_or_create(&role)?;
    println!(
        "authority key of {name} {}{} (P3 approvals: rvm-loader caps prove --partition {name} ...)",
        k.fingerprint(),
        if existed { "" } else { " created" }
    );
    Ok(())
}

/// `caps show NAME`.
pub fn caps_show(ctx: &Ctx, name: &str) -> Result<()> {
    let name = name_arg("NAME", name)?;
    let reg = ctx.home.load()?;
    let rec = reg.partition(&name)?;
    let Some(caps) = &rec.caps else {
        println!("partition {name}: no capability table installed");
        return Ok(());
    };
    println!(
        "partition {name}: {} capabilities from {}",
        caps.tokens.len(),
        caps.table.path
    );
    for (i, t) in caps.tokens.iter().enumerate() {
        let rights: Vec<&str> = t.rights.each().map(|(_, n)| n).collect();
        println!(
            "  [{i}] {} {} resource {} expires {}",
            t.proof_tier.name(),
            rights.join("|"),
            t.resource
                .as_deref()
                .map_or_else(|| "(any)".to_string(), quote),
            if t.expires_at == 0 {
                "never".into()
            } else {
                crate::parse::captable::utc(t.expires_at) + " UTC"
            }
        );
    }
    Ok(())
}

/// Split `<package>@<version>`.
fn package_arg(spec: &str) -> Result<(String, String)> {
    let file = "PACKAGE@VERSION";
    let (pkg, ver) = spec
        .rsplit_once('@')
        .filter(|(p, _)| !p.is_empty())
        .ok_or_else(|| {
            Error::refused(file, format!("{} is not <package>@<version>", quote(spec)))
        })?;
    names::package_name(file, "package", pkg)?;
    names::exact_version(file, "version", ver)?;
    Ok((pkg.to_string(), ver.to_string()))
}

/// `guest add <package>@<version> FILE`.
pub fn guest_add(ctx: &Ctx, spec: &str, file: &Path) -> Result<()> {
    let (pkg, ver) = package_arg(spec)?;
    let (bytes, info) = resolve::read_module(file)?;
    let key = format!("{pkg}@{ver}");
    let sha = rvm_abi::hex::to_string(&Sha256::digest(&bytes));
    let entry = GuestModule {
        sha256: sha.clone(),
        size: bytes.len() as u64,
        added_from: resolve_abs(file),
    };
    ctx.home.put_module(&bytes)?;
    let old = ctx
        .home
        .update(|reg| Ok(reg.guests.insert(key.clone(), entry.clone())))?;
    let imports: Vec<&str> = info.imports.iter().map(|i| i.name.as_str()).collect();
    println!(
        "guest {key} {}: module sha256:{sha}, {} bytes, imports {}",
        if old.is_some() {
            "replaced"
        } else {
            "registered"
        },
        bytes.len(),
        if imports.is_empty() {
            "nothing".to_string()
        } else {
            imports.join(", ")
        }
    );
    Ok(())
}

fn resolve_abs(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// `guest list`.
pub fn guest_list(ctx: &Ctx) -> Result<()> {
    let reg = ctx.home.load()?;
    if reg.guests.is_empty() {
        println!("no guest modules registered");
    }
    for (k, g) in &reg.guests {
        println!(
            "{k}  sha256:{}  {} bytes  (from {})",
            g.sha256, g.size, g.added_from
        );
    }
    Ok(())
}

/// A binding about to be stored, with its module.
struct Binding {
    binding: GuestBinding,
    module: Vec<u8>,
}

fn binding(guest: Option<&LoadedGuest>, r: Resolved) -> Binding {
    let sha = rvm_abi::hex::to_string(&Sha256::digest(&r.bytes));
    Binding {
        binding: GuestBinding {
            guest: guest.map(|g| g.guest.clone()),
            wasm_ref: guest.map(|g| g.stamp.clone()),
            module_sha256: sha,
            source: r.source,
        },
        module: r.bytes,
    }
}

/// `guest boot --partition NAME --wasm-ref FILE [--wasm FILE]`.
pub fn guest_boot(
    ctx: &Ctx,
    partition: &str,
    wasm_ref: &Path,
    wasm: Option<&Path>,
    opts: &BootOptions,
) -> Result<()> {
    one_partition_boot("guest boot", opts)?;
    let name = name_arg("--partition", partition)?;
    let g = folder::load_guest(wasm_ref)?;
    warn(&g.warnings);
    let file = shown(wasm_ref);
    if g.guest.partition != name {
        return Err(Diagnostic::field(
            &file,
            "partition",
            format!(
                "names partition {} but --partition names {name}",
                g.guest.partition
            ),
        )
        .into());
    }
    let reg = ctx.home.load()?;
    let rec = reg.partitions.get(&name).ok_or_else(|| {
        Error::refused(
            &file,
            format!("is a guest for partition {name}, which is not registered (run `rvm-loader partition register --manifest FILE` first)"),
        )
    })?;
    let misfits = folder::guest_fits(&rec.spec, "the registered manifest", &g.guest, &file);
    if !misfits.is_empty() {
        return Err(Error::Refused(misfits));
    }
    if rec.caps.is_none() {
        eprintln!("warning: partition {name} has no capability table installed: its agent holds no capabilities");
    }
    let r = resolve::resolve(&g.guest, wasm_ref, wasm, &reg, &ctx.home)?;
    println!("guest {} for {name}: {}", g.guest.guest, r.shown);
    let b = binding(Some(&g), r);
    ctx.home.put_module(&b.module)?;
    ctx.home.update(|reg| {
        reg.partition_mut(&name)?.guest = Some(b.binding.clone());
        Ok(())
    })?;
    boot_or_admit(ctx, &[name], opts)
}

/// `deploy FOLDER` (and `launch --partition MANIFEST`): register, install
/// capabilities and bind the guest in one atomic update, then boot. The
/// folder's `install-rvm.sh` is linted, never run.
pub fn deploy(
    ctx: &Ctx,
    dir: &Path,
    manifest: Option<&Path>,
    wasm: Option<&Path>,
    replace: bool,
    opts: &BootOptions,
) -> Result<()> {
    one_partition_boot(
        if manifest.is_some() {
            "launch"
        } else {
            "deploy"
        },
        opts,
    )?;
    let ex = folder::examine(dir, manifest, ctx.now);
    warn(&ex.warnings);
    for d in &ex.script {
        eprintln!("warning: {d} (the script is not run)");
    }
    if !ex.errors.is_empty() {
        return Err(Error::Refused(ex.errors));
    }
    let Some(m) = ex.manifest else {
        return Err(Error::refused(shown(dir), "no partition manifest"));
    };
    let reg = ctx.home.load()?;
    let b = match (&ex.guest, wasm) {
        (Some(g), _) => Some(binding(
            Some(g),
            resolve::resolve(&g.guest, &g.path, wasm, &reg, &ctx.home)?,
        )),
        (None, Some(w)) => {
            let (bytes, info) = resolve::read_module(w)?;
            Some(binding(
                None,
                Resolved {
                    bytes,
                    source: home::ModuleSource::Explicit {
                        path: resolve_abs(w),
                    },
                    info,
                    shown: shown(w),
                },
            ))
        }
        (None, None) if opts.no_boot => None,
        (None, None) => {
            return Err(Error::refused(
                shown(dir),
                format!(
                    "has no {}: pass --wasm FILE to boot it, or --no-boot to register only",
                    folder::GUEST_REF
                ),
            ))
        }
    };
    let file = m.stamp.path.clone();
    let change = |reg: &mut Registry| {
        let r = register(reg, &m.spec, &m.stamp, &file, replace, ctx.now)?;
        let rec = reg.partition_mut(&m.spec.name)?;
        if let Some(t) = &ex.table {
            rec.caps = Some(InstalledCaps {
                tokens: t.tokens.clone(),
                table: t.stamp.clone(),
            });
        }
        if let Some(b) = &b {
            rec.guest = Some(b.binding.clone());
        }
        Ok(r)
    };
    // Check the change before the module is stored: a refusal writes nothing.
    change(&mut reg.clone())?;
    if let Some(b) = &b {
        ctx.home.put_module(&b.module)?;
    }
    ctx.home.update(change)?;
    let tokens = ex.table.as_ref().map_or(0, |t| t.tokens.len());
    if let Some(t) = &ex.table {
        authority_for(ctx, &m.spec.name, &t.tokens)?;
    }
    println!(
        "deployed partition {} ({}), {tokens} capabilities{}",
        m.spec.name,
        describe_spec(&m.spec),
        b.as_ref().map_or(String::new(), |b| format!(
            ", guest module sha256:{}",
            b.binding.module_sha256
        ))
    );
    if b.is_none() {
        println!("not booted: no guest module (--no-boot)");
        return Ok(());
    }
    boot_or_admit(ctx, &[m.spec.name], opts)
}

/// Boot `names`, or, while this home's instance runs, admit them into it
/// ([`crate::admission`]). `--no-boot` only builds the bundle, as ever.
fn boot_or_admit(ctx: &Ctx, names: &[PartitionName], opts: &BootOptions) -> Result<()> {
    match crate::instance::running(ctx.home.root()) {
        Some(r) if !opts.no_boot => {
            for flag in unused_by_admission(opts) {
                eprintln!("warning: {flag} does nothing for an admission into the running instance (loader pid {}): the instance's own settings apply", r.pid);
            }
            crate::admission::admit(ctx, names, r.pid)
        }
        _ => boot(ctx, names, opts),
    }
}

/// The boot options given that an admission does not use (the instance
/// was booted with its own).
fn unused_by_admission(opts: &BootOptions) -> Vec<&'static str> {
    [
        (opts.image_dir.is_some(), "--image-dir"),
        (opts.qemu.is_some(), "--qemu"),
        (opts.bundle_out.is_some(), "--bundle-out"),
        (opts.live_witness, "--show-witness"),
        (opts.journal, "--journal"),
        (opts.coherence, "--coherence"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect()
}

/// `launch --partition MANIFEST`: deploy the folder the manifest is in.
pub fn launch(
    ctx: &Ctx,
    manifest: &Path,
    wasm: Option<&Path>,
    replace: bool,
    opts: &BootOptions,
) -> Result<()> {
    let dir = manifest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    deploy(ctx, dir, Some(manifest), wasm, replace, opts)
}

/// `check FOLDER`.
pub fn check(ctx: &Ctx, dir: &Path) -> Result<()> {
    let ex = folder::examine(dir, None, ctx.now);
    warn(&ex.warnings);
    let mut problems = ex.errors;
    problems.extend(ex.script);
    if !problems.is_empty() {
        return Err(Error::Refused(problems));
    }
    let m = ex
        .manifest
        .as_ref()
        .map(|m| m.spec.name.to_string())
        .unwrap_or_default();
    println!(
        "ok: {}: partition {m}, {} capabilities{}{}",
        shown(dir),
        ex.table.as_ref().map_or(0, |t| t.tokens.len()),
        ex.guest
            .as_ref()
            .map_or(String::new(), |g| format!(", guest {}", g.guest.guest)),
        if ex.adapter {
            ", install script safe"
        } else {
            ""
        }
    );
    Ok(())
}

/// A command that boots one partition has nothing to link: a `--link` is
/// refused before anything is registered.
fn one_partition_boot(command: &str, opts: &BootOptions) -> Result<()> {
    match opts.links.first() {
        None => Ok(()),
        Some(l) => Err(Error::refused(
            format!("--link {l}"),
            format!(
                "names {} and {}, but `{command}` boots one partition; link partitions booted together with `up A B --link A:B`",
                l.a, l.b
            ),
        )),
    }
}

/// `up [NAME...]`: boot registered partitions together (all that have a guest
/// when no name is given). Refused while this home's instance runs (both
/// would file the same witness logs), except as that instance
/// (`instance serve`), which boots with no partition at all when none has a
/// guest yet, and with `--no-boot`.
pub fn up(ctx: &Ctx, names: &[String], opts: &BootOptions) -> Result<()> {
    if opts.instance.is_none() && !opts.no_boot {
        if let Some(r) = crate::instance::running(ctx.home.root()) {
            return Err(Error::refused(
                "up",
                format!(
                    "an instance of this RVM_HOME is running (loader pid {}), and a second hypervisor would write the same witness logs: admit partitions into it with `rvm-loader deploy FOLDER` or `rvm-loader guest boot`, or stop it first with `rvm-loader instance stop`",
                    r.pid
                ),
            ));
        }
    }
    let names: Vec<PartitionName> = if names.is_empty() {
        let reg = ctx.home.load()?;
        let all: Vec<PartitionName> = reg
            .partitions
            .iter()
            .filter(|(_, r)| r.guest.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        if all.is_empty() && opts.instance.is_none() {
            return Err(Error::refused(
                "up",
                "no registered partition has a guest (deploy one first)",
            ));
        }
        all
    } else {
        names
            .iter()
            .map(|n| name_arg("NAME", n))
            .collect::<Result<_>>()?
    };
    boot(ctx, &names, opts)
}

fn run_state(r: &PartitionRecord) -> String {
    match &r.last_run {
        None => "registered".to_string(),
        Some(run) => match (run.ended_unix, run.loader_pid) {
            (None, Some(pid)) if Path::new(&format!("/proc/{pid}")).exists() => {
                format!("{} (loader pid {pid})", run.state.name())
            }
            (None, _) => "stopped (its loader is gone)".to_string(),
            (Some(_), _) => run.state.name().to_string(),
        },
    }
}

fn recovery_text(r: &RecoveryDesc) -> String {
    format!(
        "F1 restart x{} then F2 rollback x{} within {} ms, then F3 fence, F4 evict {}",
        r.f1_limit,
        r.f2_limit,
        r.window_ms,
        if r.fence_timeout_ms == 0 {
            "on operator order".to_string()
        } else {
            format!("after {} ms", r.fence_timeout_ms)
        }
    )
}

/// `partition unfence|evict NAME`: an operator's order to the running
/// instance that booted `NAME` ([`crate::control`]).
pub fn partition_order(ctx: &Ctx, kind: rvm_abi::frame::OrderKind, name: &str) -> Result<()> {
    let name = name_arg("NAME", name)?;
    crate::control::order(&ctx.home, kind, &name)
}

/// `partition list`.
pub fn partition_list(ctx: &Ctx) -> Result<()> {
    let reg = ctx.home.load()?;
    if reg.partitions.is_empty() {
        println!("no partitions registered in {}", ctx.home.root().display());
        return Ok(());
    }
    println!(
        "{:<32} {:<8} {:>8} {:>8} {:>5}  {:<28} STATE",
        "NAME", "TIER", "URGENCY", "PRESSURE", "CAPS", "GUEST"
    );
    for (n, r) in &reg.partitions {
        let guest = match &r.guest {
            None => "-".to_string(),
            Some(g) => g
                .guest
                .as_ref()
                .map_or_else(|| "(explicit module)".to_string(), |g| g.guest.to_string()),
        };
        println!(
            "{:<32} {:<8} {:>8} {:>8} {:>5}  {:<28} {}",
            n.as_str(),
            r.spec.memory_tier.name(),
            r.spec.deadline_urgency.to_string(),
            r.spec.cut_pressure.to_string(),
            r.caps
                .as_ref()
                .map_or("-".to_string(), |c| c.tokens.len().to_string()),
            guest,
            run_state(r)
        );
    }
    Ok(())
}

/// `status`.
pub fn status(ctx: &Ctx) -> Result<()> {
    let reg = ctx.home.load()?;
    println!("RVM_HOME {}", ctx.home.root().display());
    match ctx.home.key(&KeyRole::Witness)? {
        Some(k) => println!("witness key {}", k.fingerprint()),
        None => println!("witness key: not created yet (created at the first boot)"),
    }
    println!("witness logs in {}", ctx.home.witness_dir().display());
    println!(
        "{} partitions, {} guest modules registered",
        reg.partitions.len(),
        reg.guests.len()
    );
    for (n, r) in &reg.partitions {
        println!("\npartition {n}: {}", run_state(r));
        println!(
            "  manifest {} ({})",
            r.manifest.path,
            describe_spec(&r.spec)
        );
        if let Some(d) = &r.spec.metadata.description {
            // `quote` shortens it; say how long the whole is.
            match d.chars().count() {
                n if n > crate::diag::QUOTE_LIMIT => println!("  description {} ({} bytes)", quote(d), d.len()),
                _ => println!("  description {}", quote(d)),
            }
        }
        if let Some(p) = &r.spec.metadata.system_prompt {
            println!("  system prompt: {} bytes", p.len());
        }
        match &r.caps {
            None => println!("  capabilities: none installed"),
            Some(c) => println!(
                "  capabilities: {} ({}) from {}",
                c.tokens.len(),
                tier_counts(&c.tokens),
                c.table.path
            ),
        }
        match &r.guest {
            None => println!("  guest: none"),
            Some(g) => {
                let tier = g
                    .guest
                    .as_ref()
                    .map_or(crate::parse::guestref::DEFAULT_TIER, |x| {
                        x.proof_tier_default
                    });
                let what = g
                    .guest
                    .as_ref()
                    .map_or_else(|| "explicit module".to_string(), |x| x.guest.to_string());
                println!(
                    "  guest: {what}, module sha256:{}, default tier {}",
                    g.module_sha256,
                    tier.name()
                );
                if let Some(c) = g.guest.as_ref().and_then(|x| x.companion.as_ref()) {
                    if let Some(p) = &c.package {
                        println!("  companion (informational, not deployed): {p}");
                    }
                }
            }
        }
        match ctx.home.key(&KeyRole::Authority(n.clone()))? {
            Some(k) => println!(
                "  authority key {} (signs P3 approvals: caps prove)",
                k.fingerprint()
            ),
            None => println!("  authority key: none (no P3 rights)"),
        }
        let log = ctx.home.witness_dir().join(format!("{n}.log"));
        if let Ok(m) = std::fs::metadata(&log) {
            println!(
                "  witness log {} ({} records)",
                log.display(),
                m.len() / rvm_abi::witness::RECORD_LEN as u64
            );
        }
        // Its coherence domain: the loader deploys one agent per partition.
        let last = crate::domains::last_decision_in(&log)
            .map_or_else(|| "none".to_string(), |d| d.describe());
        println!("  domain: 1 agent (slot 0); last cut decision: {last}");
        println!("  recovery: {}", recovery_text(&RecoveryDesc::DEFAULT));
        if let Some(run) = &r.last_run {
            let with: Vec<&str> = run.with.iter().map(PartitionName::as_str).collect();
            println!(
                "  last run: with {}; {}",
                with.join(", "),
                run.outcome.as_deref().unwrap_or("in progress")
            );
        }
    }
    Ok(())
}

/// `keys [--create]`: the witness key (created with `--create`) and every
/// partition's authority key.
pub fn keys(ctx: &Ctx, create: bool) -> Result<()> {
    let witness = if create {
        Some(ctx.home.key_or_create(&KeyRole::Witness)?)
    } else {
        ctx.home.key(&KeyRole::Witness)?
    };
    match witness {
        Some(k) => println!(
            "witness key {} (public {})",
            k.fingerprint(),
            rvm_abi::hex::to_string(&k.public)
        ),
        None => println!("witness key: not created yet (rvm-loader keys --create)"),
    }
    for n in ctx.home.authority_keys()? {
        if let Some(k) = ctx.home.key(&KeyRole::Authority(n.clone()))? {
            println!(
                "authority key of {n} {} (public {})",
                k.fingerprint(),
                rvm_abi::hex::to_string(&k.public)
            );
        }
    }
    Ok(())
}
