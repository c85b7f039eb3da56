//! Partition manifests: the adapter's `rvm-partition.toml` and the
//! scaffolder's `rvm.manifest.toml`.
//!
//! Adapter format: `[partition]` (`name`, `memory_tier` Hot/Warm/Dormant/Cold
//! default Warm, `deadline_urgency` default 0.50, `cut_pressure` default
//! 0.30, optional `witness_key_fingerprint`), optional `[wasm_guest]`
//! (`package`, `version`, `lifecycle`), optional `[metadata]`
//! (`description`, `system_prompt`).
//!
//! Scaffolder format: `[harness]` (`name`, `isolation` = "hardware",
//! `witness` = "ed25519"); the scheduling fields take the adapter's defaults.

use super::names;
use super::value::{self, Fields, Value};
use crate::diag::{quote, Diagnostic, Warnings};
use crate::limits;
use crate::model::{
    GuestPackage, Hundredths, KeyFingerprint, Lifecycle, ManifestFormat, Metadata, PartitionSpec,
};
use rvm_abi::bundle::MemoryTier;

/// The adapter's default memory tier.
pub const DEFAULT_MEMORY_TIER: MemoryTier = MemoryTier::Warm;
/// The adapter's default deadline urgency, in hundredths.
pub const DEFAULT_DEADLINE_URGENCY: u8 = 50;
/// The adapter's default cut pressure, in hundredths.
pub const DEFAULT_CUT_PRESSURE: u8 = 30;

/// What the scaffolder's `isolation` must say: partitions are hardware VMs.
pub const SCAFFOLD_ISOLATION: &str = "hardware";
/// What the scaffolder's `witness` must say: checkpoints are Ed25519-signed.
pub const SCAFFOLD_WITNESS: &str = "ed25519";

/// Parse a manifest of either format.
pub fn parse(file: &str, text: &str) -> Result<(PartitionSpec, Warnings), Diagnostic> {
    let root = value::parse_toml(file, text)?;
    let mut warnings = Warnings::default();
    let mut top = Fields::of(file, "", &root)?;
    let partition = top.take("partition");
    let harness = top.take("harness");
    let spec = match (partition, harness) {
        (Some(p), None) => adapter(&mut top, p, &mut warnings)?,
        (None, Some(h)) => scaffold(file, h, &mut warnings)?,
        (Some(_), Some(_)) => {
            return Err(Diagnostic::file(file, "has both [partition] and [harness]: one manifest per file"))
        }
        (None, None) => {
            return Err(Diagnostic::file(
                file,
                "is not a partition manifest: no [partition] (rvm-partition.toml) or [harness] (rvm.manifest.toml) table",
            ))
        }
    };
    top.finish(&mut warnings);
    Ok((spec, warnings))
}

fn adapter(
    top: &mut Fields<'_>,
    p: &Value,
    warnings: &mut Warnings,
) -> Result<PartitionSpec, Diagnostic> {
    let file = top.file();
    let mut f = Fields::of(file, "partition", p)?;
    let name_text = f.required_raw("name", limits::SHORT_TEXT_MAX)?;
    let name = names::partition_name(file, "partition.name", &name_text)?;
    let memory_tier = match f.string("memory_tier", limits::SHORT_TEXT_MAX, false)? {
        None => DEFAULT_MEMORY_TIER,
        Some(s) => MemoryTier::from_name(&s).ok_or_else(|| {
            Diagnostic::field(
                file,
                "partition.memory_tier",
                format!(
                    "{} is not a memory tier (Hot, Warm, Dormant or Cold)",
                    quote(&s)
                ),
            )
        })?,
    };
    let deadline_urgency = signal(
        &mut f,
        "deadline_urgency",
        DEFAULT_DEADLINE_URGENCY,
        warnings,
    )?;
    let cut_pressure = signal(&mut f, "cut_pressure", DEFAULT_CUT_PRESSURE, warnings)?;
    let witness_key_fingerprint = match f.string("witness_key_fingerprint", limits::SHORT_TEXT_MAX, false)? {
        None => None,
        Some(s) => Some(KeyFingerprint::parse(&s).ok_or_else(|| {
            Diagnostic::field(
                file,
                "partition.witness_key_fingerprint",
                format!(
                    "{} is not a key fingerprint: expected the SHA-256 of the witness public key as 64 hex digits, optionally prefixed \"sha256:\"",
                    quote(&s)
                ),
            )
        })?),
    };
    let dormant_after_ms = dormant_after(&mut f, memory_tier)?;
    f.finish(warnings);

    let wasm_guest = match top.take("wasm_guest") {
        None => None,
        Some(v) => {
            let mut g = Fields::of(file, "wasm_guest", v)?;
            let package = g.required_string("package", limits::PACKAGE_NAME_MAX)?;
            names::package_name(file, "wasm_guest.package", &package)?;
            let version = g.required_string("version", limits::VERSION_MAX)?;
            names::exact_version(file, "wasm_guest.version", &version)?;
            let lifecycle = lifecycle(
                file,
                "wasm_guest.lifecycle",
                g.string("lifecycle", limits::SHORT_TEXT_MAX, false)?,
            )?;
            g.finish(warnings);
            Some((GuestPackage { package, version }, lifecycle))
        }
    };

    let metadata = match top.take("metadata") {
        None => Metadata::default(),
        Some(v) => {
            let mut m = Fields::of(file, "metadata", v)?;
            let description = m.string("description", limits::DESCRIPTION_MAX, true)?;
            let system_prompt = m.string("system_prompt", limits::SYSTEM_PROMPT_MAX, true)?;
            m.finish(warnings);
            Metadata {
                description,
                system_prompt,
            }
        }
    };

    Ok(PartitionSpec {
        name,
        memory_tier,
        deadline_urgency,
        cut_pressure,
        witness_key_fingerprint,
        dormant_after_ms,
        wasm_guest,
        metadata,
        format: ManifestFormat::Adapter,
    })
}

fn scaffold(file: &str, h: &Value, warnings: &mut Warnings) -> Result<PartitionSpec, Diagnostic> {
    let mut f = Fields::of(file, "harness", h)?;
    let name_text = f.required_raw("name", limits::SHORT_TEXT_MAX)?;
    let name = names::partition_name(file, "harness.name", &name_text)?;
    let isolation = f
        .string("isolation", limits::SHORT_TEXT_MAX, false)?
        .unwrap_or_else(|| SCAFFOLD_ISOLATION.into());
    if isolation != SCAFFOLD_ISOLATION {
        return Err(Diagnostic::field(
            file,
            "harness.isolation",
            format!(
                "{} cannot be honoured: RVM isolates every partition in hardware (\"hardware\")",
                quote(&isolation)
            ),
        ));
    }
    let witness = f
        .string("witness", limits::SHORT_TEXT_MAX, false)?
        .unwrap_or_else(|| SCAFFOLD_WITNESS.into());
    if witness != SCAFFOLD_WITNESS {
        return Err(Diagnostic::field(
            file,
            "harness.witness",
            format!(
                "{} cannot be honoured: RVM signs witness checkpoints with Ed25519 (\"ed25519\")",
                quote(&witness)
            ),
        ));
    }
    f.finish(warnings);
    Ok(PartitionSpec {
        name,
        memory_tier: DEFAULT_MEMORY_TIER,
        deadline_urgency: Hundredths::new(DEFAULT_DEADLINE_URGENCY)
            .unwrap_or_else(|| unreachable!()),
        cut_pressure: Hundredths::new(DEFAULT_CUT_PRESSURE).unwrap_or_else(|| unreachable!()),
        witness_key_fingerprint: None,
        dormant_after_ms: 0,
        wasm_guest: None,
        metadata: Metadata::default(),
        format: ManifestFormat::Scaffold { isolation, witness },
    })
}

/// A lifecycle value (absent = managed).
pub fn lifecycle(file: &str, path: &str, v: Option<String>) -> Result<Lifecycle, Diagnostic> {
    match v {
        None => Ok(Lifecycle::Managed),
        Some(s) => Lifecycle::from_name(&s).ok_or_else(|| {
            Diagnostic::field(
                file,
                path,
                format!(
                    "{} is not supported: RVM runs guests \"managed\"",
                    quote(&s)
                ),
            )
        }),
    }
}

/// A scheduler signal: a number 0..1, kept in hundredths.
/// `partition.dormant_after_ms`: how long (ms, 1 to 2^32 - 1) a `Warm`
/// partition may wait for a message before it may go dormant; absent or 0:
/// never. Only a `Warm` partition takes one (a `Dormant` one sleeps as soon
/// as it is idle, `Hot` and `Cold` ones never do).
fn dormant_after(f: &mut Fields<'_>, tier: MemoryTier) -> Result<u32, Diagnostic> {
    let path = f.path_of("dormant_after_ms");
    let file = f.file();
    let ms = match f.take("dormant_after_ms") {
        None => return Ok(0),
        Some(Value::Int(i)) => u32::try_from(*i).map_err(|_| {
            Diagnostic::field(file, &path, format!("{i} is outside 0..{} (milliseconds)", u32::MAX))
        })?,
        Some(other) => {
            return Err(Diagnostic::field(
                file,
                path,
                format!("expected milliseconds (an integer), found {}", other.type_name()),
            ))
        }
    };
    if ms != 0 && tier != MemoryTier::Warm {
        return Err(Diagnostic::field(
            file,
            path,
            format!(
                "only a Warm partition waits before it may go dormant; this one is {} (Dormant sleeps as soon as it is idle, Hot and Cold never)",
                tier.name()
            ),
        ));
    }
    Ok(ms)
}

fn signal(
    f: &mut Fields<'_>,
    key: &str,
    default: u8,
    warnings: &mut Warnings,
) -> Result<Hundredths, Diagnostic> {
    let path = f.path_of(key);
    let file = f.file();
    let x = match f.take(key) {
        None => {
            return Hundredths::new(default)
                .ok_or_else(|| Diagnostic::field(file, &path, "bad default"))
        }
        Some(Value::Float(x)) => *x,
        Some(Value::Int(i)) if (0..=1).contains(i) => *i as f64,
        Some(Value::Int(i)) => {
            return Err(Diagnostic::field(
                file,
                path,
                format!("{i} is outside 0..1"),
            ));
        }
        Some(other) => {
            return Err(Diagnostic::field(
                file,
                path,
                format!("expected a number 0..1, found {}", other.type_name()),
            ));
        }
    };
    if !x.is_finite() || !(0.0..=1.0).contains(&x) {
        return Err(Diagnostic::field(
            file,
            path,
            format!("{x} is outside 0..1"),
        ));
    }
    let scaled = x * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        warnings.push(Diagnostic::field(
            file,
            &path,
            format!("{x} rounded to {:.2} (hundredths)", rounded / 100.0),
        ));
    }
    // 0 <= rounded <= 100 was checked above.
    let v =
        u8::try_from(rounded as i64).map_err(|_| Diagnostic::field(file, &path, "out of range"))?;
    Hundredths::new(v).ok_or_else(|| Diagnostic::field(file, path, "out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[partition]
name = "a-1"
memory_tier = "Hot"
deadline_urgency = 0.9
cut_pressure = 1
witness_key_fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000001"

[wasm_guest]
package = "@metaharness/kernel"
version = "0.1.0"
lifecycle = "managed"

[metadata]
description = "d"
system_prompt = "line1\nline2"
"#;

    #[test]
    fn every_field_is_carried() {
        let (s, w) = parse("m.toml", FULL).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.name.as_str(), "a-1");
        assert_eq!(s.memory_tier, MemoryTier::Hot);
        assert_eq!(s.deadline_urgency.get(), 90);
        assert_eq!(s.cut_pressure.get(), 100);
        assert_eq!(s.witness_key_fingerprint.unwrap().0[31], 1);
        let (g, l) = s.wasm_guest.unwrap();
        assert_eq!(
            (g.package.as_str(), g.version.as_str(), l),
            ("@metaharness/kernel", "0.1.0", Lifecycle::Managed)
        );
        assert_eq!(s.metadata.system_prompt.as_deref(), Some("line1\nline2"));
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let (s, w) = parse(
            "m.toml",
            "[partition]\nname = \"x\"\ncolour = \"red\"\n[extra]\n",
        )
        .unwrap();
        assert_eq!(s.memory_tier, MemoryTier::Warm);
        assert_eq!((s.deadline_urgency.get(), s.cut_pressure.get()), (50, 30));
        let msgs: Vec<String> = w.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "m.toml: partition.colour: unknown field (ignored)",
                "m.toml: extra: unknown field (ignored)"
            ]
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            ("[partition]\nname = \"a/b\"\n", "m.toml: partition.name: \"a/b\" is not a safe identifier"),
            ("[partition]\nname = \"a\"\nmemory_tier = \"Lukewarm\"\n", "m.toml: partition.memory_tier: \"Lukewarm\" is not a memory tier"),
            ("[partition]\nname = \"a\"\ncut_pressure = 1.5\n", "m.toml: partition.cut_pressure: 1.5 is outside 0..1"),
            ("[partition]\nname = \"a\"\ndeadline_urgency = \"high\"\n", "m.toml: partition.deadline_urgency: expected a number"),
            ("[partition]\nname = \"a\"\nwitness_key_fingerprint = \"abc\"\n", "m.toml: partition.witness_key_fingerprint: \"abc\" is not a key fingerprint"),
            ("[partition]\nname = \"a\"\nmemory_tier = \"Dormant\"\ndormant_after_ms = 500\n", "m.toml: partition.dormant_after_ms: only a Warm partition waits before it may go dormant; this one is Dormant"),
            ("[partition]\nname = \"a\"\ndormant_after_ms = -1\n", "m.toml: partition.dormant_after_ms: -1 is outside 0..4294967295"),
            ("[partition]\nname = \"a\"\ndormant_after_ms = \"soon\"\n", "m.toml: partition.dormant_after_ms: expected milliseconds"),
            ("[partition]\n", "m.toml: partition.name: missing"),
            ("[wasm_guest]\n", "m.toml: is not a partition manifest"),
            ("[harness]\nname = \"a\"\nisolation = \"process\"\n", "m.toml: harness.isolation: \"process\" cannot be honoured"),
            ("[partition]\nname = \"a\"\n[wasm_guest]\npackage = \"@x/y\"\nversion = \"1\"\n", "m.toml: wasm_guest.version: \"1\" is not an exact version"),
            ("[partition]\nname = \"a\"\n[wasm_guest]\npackage = \"@x/y\"\nversion = \"1.0.0\"\nlifecycle = \"manual\"\n", "m.toml: wasm_guest.lifecycle: \"manual\" is not supported"),
        ];
        for (text, want) in cases {
            let e = parse("m.toml", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
    }

    #[test]
    fn a_warm_partition_may_name_how_long_it_waits_before_it_may_sleep() {
        let (spec, _) = parse("m.toml", "[partition]\nname = \"a\"\nmemory_tier = \"Warm\"\ndormant_after_ms = 30000\n").unwrap();
        assert_eq!((spec.memory_tier, spec.dormant_after_ms), (MemoryTier::Warm, 30_000));
        let (spec, _) = parse("m.toml", "[partition]\nname = \"a\"\n").unwrap();
        assert_eq!(spec.dormant_after_ms, 0, "absent: never");
    }

    #[test]
    fn a_description_as_long_as_the_adapter_emits_is_kept_whole() {
        let text = format!(
            "[partition]\nname = \"a\"\n[metadata]\ndescription = \"{}\"\n",
            "x".repeat(100 * 1024)
        );
        let (spec, _) = parse("m.toml", &text).unwrap();
        assert_eq!(spec.metadata.description.map(|d| d.len()), Some(100 * 1024));
    }

    #[test]
    fn scaffold_manifest() {
        let (s, w) = parse(
            "rvm.manifest.toml",
            "[harness]\nname = \"scaffolded\"\nisolation = \"hardware\"\nwitness = \"ed25519\"\n",
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(s.name.as_str(), "scaffolded");
        assert!(matches!(s.format, ManifestFormat::Scaffold { .. }));
    }

    #[test]
    fn rounding_warns() {
        let (s, w) = parse(
            "m.toml",
            "[partition]\nname = \"a\"\ncut_pressure = 0.333\n",
        )
        .unwrap();
        assert_eq!(s.cut_pressure.get(), 33);
        assert!(
            w.iter().any(|d| d.reason.contains("rounded to 0.33")),
            "{w:?}"
        );
    }
}
