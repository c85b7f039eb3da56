//! Finding the WebAssembly module for a guest reference.
//!
//! Resolution order (first match wins):
//!
//! 1. an explicit `--wasm FILE`;
//! 2. a module registered for exactly `<package>@<version>` with
//!    `rvm-loader guest add`;
//! 3. the package's own files under a `node_modules/<package>/` in the folder
//!    of `wasm-guest.json` or any folder above it (as Node resolves), whose
//!    `package.json` has the same version: the entrypoint itself if it is a
//!    `.wasm`, else wasm-bindgen's `<stem>_bg.wasm` beside the JS entry, else
//!    `<stem>.wasm`.
//!
//! Whatever is found is checked ([`crate::wasm::check`]) before it is used:
//! a wasm-bindgen JS-glue module or any import RVM does not provide is refused.

use crate::diag::{quote, Diagnostic};
use crate::error::{Error, Result};
use crate::home::{Home, ModuleSource, Registry};
use crate::limits;
use crate::model::GuestRef;
use crate::source;
use crate::wasm::{self, ModuleInfo};
use std::path::{Path, PathBuf};

/// A module found and checked.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub bytes: Vec<u8>,
    pub source: ModuleSource,
    pub info: ModuleInfo,
    /// How messages name it.
    pub shown: String,
}

/// Check module bytes; a refusal names `shown`.
pub fn check_module(shown: &str, bytes: &[u8]) -> Result<ModuleInfo> {
    let info = wasm::check(bytes).map_err(|r| Diagnostic::file(shown, r.to_string()))?;
    for m in &info.memories {
        if m.max.is_some_and(|max| max < m.min) {
            return Err(Diagnostic::file(
                shown,
                "declares a memory whose maximum is below its minimum",
            )
            .into());
        }
        if m.min > u64::from(limits::WASM_PAGES_MAX) {
            return Err(Diagnostic::file(
                shown,
                format!(
                    "needs {} WASM pages of memory; a partition gets at most {}",
                    m.min,
                    limits::WASM_PAGES_MAX
                ),
            )
            .into());
        }
    }
    Ok(info)
}

/// The WASM memory budget (pages) for a module.
pub fn wasm_pages(info: &ModuleInfo) -> u32 {
    let Some(m) = info.memories.first() else {
        return limits::WASM_PAGES_DEFAULT;
    };
    let mut pages = m.min.max(u64::from(limits::WASM_PAGES_DEFAULT));
    if let Some(max) = m.max {
        pages = pages.min(max);
    }
    // Bounded by WASM_PAGES_MAX in `check_module` when min is large; a
    // large default never exceeds it.
    u32::try_from(pages.min(u64::from(limits::WASM_PAGES_MAX))).unwrap_or(limits::WASM_PAGES_MAX)
}

/// Read and check a module file.
pub fn read_module(path: &Path) -> Result<(Vec<u8>, ModuleInfo)> {
    let bytes = source::read_bytes(path, limits::WASM_MAX)?;
    let info = check_module(&path.display().to_string(), &bytes)?;
    Ok((bytes, info))
}

/// Resolve the module for `guest` (whose `wasm-guest.json` is at `wasm_ref`).
pub fn resolve(
    guest: &GuestRef,
    wasm_ref: &Path,
    explicit: Option<&Path>,
    reg: &Registry,
    home: &Home,
) -> Result<Resolved> {
    if let Some(path) = explicit {
        let (bytes, info) = read_module(path)?;
        let shown = path.display().to_string();
        return Ok(Resolved {
            bytes,
            source: ModuleSource::Explicit { path: abs(path) },
            info,
            shown,
        });
    }
    let key = guest.guest.to_string();
    if let Some(m) = reg.guests.get(&key) {
        let bytes = home.module(&m.sha256)?;
        let shown = format!("guest {key} (registered from {})", m.added_from);
        let info = check_module(&shown, &bytes)?;
        return Ok(Resolved {
            bytes,
            source: ModuleSource::Registered,
            info,
            shown,
        });
    }
    let start = wasm_ref.parent().map(Path::to_path_buf).unwrap_or_default();
    let start = std::fs::canonicalize(if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &start
    })
    .unwrap_or(start);
    let mut looked = Vec::new();
    for dir in start.ancestors() {
        let pkg = dir.join("node_modules").join(&guest.guest.package);
        looked.push(pkg.display().to_string());
        if pkg.is_dir() {
            return from_node_modules(guest, &pkg);
        }
    }
    Err(Error::Refused(vec![Diagnostic::file(
        wasm_ref.display().to_string(),
        format!(
            "no WebAssembly module for guest {key}: pass --wasm FILE, or register one with `rvm-loader guest add {key} FILE`, or install the package (looked for {})",
            looked.first().map_or_else(String::new, |l| format!("{l} and the same under every parent folder"))
        ),
    )]))
}

fn from_node_modules(guest: &GuestRef, pkg: &Path) -> Result<Resolved> {
    let manifest = pkg.join("package.json");
    let src = source::read_text(&manifest, limits::TEXT_FILE_MAX)?;
    let v = crate::parse::value::parse_json(&src.name, &src.text)?;
    let mut f = crate::parse::value::Fields::of(&src.name, "", &v)?;
    let version = f.string("version", limits::VERSION_MAX, false)?;
    if version.as_deref() != Some(guest.guest.version.as_str()) {
        return Err(Diagnostic::field(
            &src.name,
            "version",
            format!(
                "{} is installed, but the guest asks for {}",
                version
                    .as_deref()
                    .map_or_else(|| "no version".to_string(), quote),
                guest.guest.version
            ),
        )
        .into());
    }
    let entry = &guest.entrypoint;
    let mut candidates: Vec<PathBuf> = Vec::new();
    if entry.ends_with(".wasm") {
        candidates.push(pkg.join(entry));
    } else {
        let stem = [".js", ".mjs", ".cjs"]
            .iter()
            .find_map(|ext| entry.strip_suffix(ext))
            .unwrap_or(entry);
        candidates.push(pkg.join(format!("{stem}_bg.wasm")));
        candidates.push(pkg.join(format!("{stem}.wasm")));
    }
    for c in &candidates {
        if c.is_file() {
            let (bytes, info) = read_module(c)?;
            return Ok(Resolved {
                bytes,
                source: ModuleSource::NodeModules { path: abs(c) },
                info,
                shown: c.display().to_string(),
            });
        }
    }
    let list: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    Err(Diagnostic::file(
        pkg.display().to_string(),
        format!(
            "package {} ships no WebAssembly module for entrypoint {} (looked for {}); register one with `rvm-loader guest add {} FILE`",
            guest.guest, quote(entry), list.join(", "), guest.guest
        ),
    )
    .into())
}

fn abs(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}
