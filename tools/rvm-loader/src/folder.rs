//! A folder of adapter files: loading each file, and the cross-checks
//! between them that `check` and `deploy` share.

use crate::diag::{quote, Diagnostic, Warnings};
use crate::home::FileStamp;
use crate::limits;
use crate::model::{GuestRef, PartitionSpec, Token};
use crate::parse::{captable, guestref, manifest, script};
use crate::source;
use std::path::{Path, PathBuf};

/// The adapter's partition manifest.
pub const ADAPTER_MANIFEST: &str = "rvm-partition.toml";
/// The scaffolder's partition manifest.
pub const SCAFFOLD_MANIFEST: &str = "rvm.manifest.toml";
pub const CAP_TABLE: &str = "capability-table.json";
pub const GUEST_REF: &str = "wasm-guest.json";
pub const INSTALL_SCRIPT: &str = "install-rvm.sh";

/// A manifest, read and validated.
#[derive(Clone, Debug)]
pub struct LoadedManifest {
    pub spec: PartitionSpec,
    pub stamp: FileStamp,
    pub warnings: Warnings,
}

pub fn load_manifest(path: &Path) -> Result<LoadedManifest, Diagnostic> {
    let src = source::read_text(path, limits::TEXT_FILE_MAX)?;
    let (spec, warnings) = manifest::parse(&src.name, &src.text)?;
    Ok(LoadedManifest {
        spec,
        stamp: FileStamp::new(path, &src.sha256),
        warnings,
    })
}

/// A capability table, read and validated.
#[derive(Clone, Debug)]
pub struct LoadedTable {
    pub tokens: Vec<Token>,
    pub stamp: FileStamp,
    pub warnings: Warnings,
}

pub fn load_table(path: &Path, now: u64) -> Result<LoadedTable, Diagnostic> {
    let src = source::read_text(path, limits::TEXT_FILE_MAX)?;
    let (tokens, warnings) = captable::parse(&src.name, &src.text, now)?;
    Ok(LoadedTable {
        tokens,
        stamp: FileStamp::new(path, &src.sha256),
        warnings,
    })
}

/// A guest reference, read and validated.
#[derive(Clone, Debug)]
pub struct LoadedGuest {
    pub guest: GuestRef,
    pub stamp: FileStamp,
    pub path: PathBuf,
    pub warnings: Warnings,
}

pub fn load_guest(path: &Path) -> Result<LoadedGuest, Diagnostic> {
    let src = source::read_text(path, limits::TEXT_FILE_MAX)?;
    let (guest, warnings) = guestref::parse(&src.name, &src.text)?;
    Ok(LoadedGuest {
        guest,
        stamp: FileStamp::new(path, &src.sha256),
        path: path.to_path_buf(),
        warnings,
    })
}

/// The manifest beside a file: `rvm-partition.toml`, else `rvm.manifest.toml`.
pub fn sibling_manifest(file: &Path) -> Option<PathBuf> {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    [ADAPTER_MANIFEST, SCAFFOLD_MANIFEST]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Whether a guest reference fits a partition manifest.
pub fn guest_fits(
    spec: &PartitionSpec,
    manifest_name: &str,
    g: &GuestRef,
    guest_file: &str,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if g.partition != spec.name {
        out.push(Diagnostic::field(
            guest_file,
            "partition",
            format!(
                "names partition {} but {manifest_name} names {}",
                g.partition, spec.name
            ),
        ));
    }
    if let Some((pkg, lifecycle)) = &spec.wasm_guest {
        if *pkg != g.guest {
            out.push(Diagnostic::field(
                guest_file,
                "guest",
                format!("is {} but {manifest_name} [wasm_guest] says {pkg}", g.guest),
            ));
        }
        if *lifecycle != g.lifecycle {
            out.push(Diagnostic::field(
                guest_file,
                "lifecycle",
                format!(
                    "is {} but {manifest_name} [wasm_guest] says {}",
                    g.lifecycle.name(),
                    lifecycle.name()
                ),
            ));
        }
    }
    out
}

/// Everything found in a folder.
#[derive(Debug, Default)]
pub struct Examined {
    /// Files that failed to parse, and cross-check failures.
    pub errors: Vec<Diagnostic>,
    /// Unsafe or missing items of `install-rvm.sh`.
    pub script: Vec<Diagnostic>,
    pub warnings: Warnings,
    pub manifest: Option<LoadedManifest>,
    pub table: Option<LoadedTable>,
    pub guest: Option<LoadedGuest>,
    /// Whether the manifest is the adapter's (which always emits all four files).
    pub adapter: bool,
}

/// Read every adapter file of `dir` and cross-check them. `manifest` picks
/// the manifest file (default: the one in `dir`).
pub fn examine(dir: &Path, manifest_path: Option<&Path>, now: u64) -> Examined {
    let mut ex = Examined::default();
    let name = |n: &str| dir.join(n);
    if !dir.is_dir() {
        ex.errors
            .push(Diagnostic::file(dir.display().to_string(), "not a folder"));
        return ex;
    }

    // The manifest(s).
    let candidates: Vec<PathBuf> = match manifest_path {
        Some(p) => vec![p.to_path_buf()],
        None => [ADAPTER_MANIFEST, SCAFFOLD_MANIFEST]
            .iter()
            .map(|n| name(n))
            .filter(|p| p.exists())
            .collect(),
    };
    if candidates.is_empty() {
        ex.errors.push(Diagnostic::file(
            dir.display().to_string(),
            format!("no partition manifest ({ADAPTER_MANIFEST} or {SCAFFOLD_MANIFEST})"),
        ));
    }
    for path in &candidates {
        match load_manifest(path) {
            Err(d) => ex.errors.push(d),
            Ok(m) => {
                ex.warnings.extend(m.warnings.clone());
                match &ex.manifest {
                    None => {
                        ex.adapter = matches!(m.spec.format, crate::model::ManifestFormat::Adapter);
                        ex.manifest = Some(m);
                    }
                    Some(first) if first.spec.name != m.spec.name => {
                        ex.errors.push(Diagnostic::field(
                            path.display().to_string(),
                            "harness.name",
                            format!(
                                "names {} but {} names {}",
                                m.spec.name, first.stamp.path, first.spec.name
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let manifest_failed = ex.manifest.is_none() && !candidates.is_empty();
    let expect_all =
        ex.adapter || manifest_failed && candidates.iter().any(|p| p.ends_with(ADAPTER_MANIFEST));

    // The capability table.
    let table = name(CAP_TABLE);
    if table.exists() {
        match load_table(&table, now) {
            Err(d) => ex.errors.push(d),
            Ok(t) => {
                ex.warnings.extend(t.warnings.clone());
                ex.table = Some(t);
            }
        }
    } else if expect_all {
        ex.errors.push(Diagnostic::file(
            table.display().to_string(),
            "missing (the adapter always emits it)",
        ));
    } else {
        ex.warnings.push(Diagnostic::file(
            table.display().to_string(),
            "missing: the partition gets no capabilities",
        ));
    }

    // The guest reference.
    let guest = name(GUEST_REF);
    if guest.exists() {
        match load_guest(&guest) {
            Err(d) => ex.errors.push(d),
            Ok(g) => {
                ex.warnings.extend(g.warnings.clone());
                if let Some(m) = &ex.manifest {
                    ex.errors.extend(guest_fits(
                        &m.spec,
                        &m.stamp.path,
                        &g.guest,
                        &guest.display().to_string(),
                    ));
                }
                ex.guest = Some(g);
            }
        }
    } else if expect_all {
        ex.errors.push(Diagnostic::file(
            guest.display().to_string(),
            "missing (the adapter always emits it)",
        ));
    }

    // The install script: linted, never run.
    let script_path = name(INSTALL_SCRIPT);
    if script_path.exists() {
        match source::read_text(&script_path, limits::SCRIPT_MAX) {
            Err(d) => ex.script.push(d),
            Ok(src) => {
                let lint = script::lint(&src.name, &src.text);
                ex.script.extend(lint.findings);
                if let (Some(boot), Some(m)) = (&lint.boot_partition, &ex.manifest) {
                    if boot != m.spec.name.as_str() {
                        ex.script.push(Diagnostic::file(
                            src.name.clone(),
                            format!(
                                "boots partition {} but the manifest names {}",
                                quote(boot),
                                m.spec.name
                            ),
                        ));
                    }
                }
            }
        }
    } else if expect_all {
        ex.warnings.push(Diagnostic::file(
            script_path.display().to_string(),
            "missing (the adapter emits it; deploy does not need it)",
        ));
    }
    ex
}
