//! `wasm-guest.json`: which guest a partition runs and how it is kept.
//!
//! `schema` (1), `partition`, `guest` {`package`, `version`, `entrypoint`},
//! optional `companion` {`vector_format` {...}} (informational: shown, never
//! deployed), `lifecycle` ("managed"), `proof_tier_default` (P1-P3; default
//! P2), `failure_class_recovery` {F1..F4}: each class must name the response
//! RVM gives it (restart-guest, rollback-to-checkpoint — the adapter's word
//! for rolling back to the agent's snapshot —, partition-fence,
//! partition-evict); RVM cannot give another.

use super::manifest::lifecycle;
use super::names;
use super::value::{self, Fields, Value};
use crate::diag::{quote, Diagnostic, Warnings};
use crate::limits;
use crate::model::{Companion, FailureClass, GuestPackage, GuestRef};
use rvm_abi::ProofTier;

/// The `schema` this loader reads.
pub const SCHEMA: i128 = 1;
/// `proof_tier_default` when the file leaves it out (the adapter's value).
pub const DEFAULT_TIER: ProofTier = ProofTier::P2;

pub fn parse(file: &str, text: &str) -> Result<(GuestRef, Warnings), Diagnostic> {
    let root = value::parse_json(file, text)?;
    let mut warnings = Warnings::default();
    let mut f = Fields::of(file, "", &root)?;

    match f.require("schema")? {
        Value::Int(SCHEMA) => {}
        other => {
            return Err(Diagnostic::field(
                file,
                "schema",
                format!(
                    "{} is not supported (this loader reads schema {SCHEMA})",
                    describe(other)
                ),
            ))
        }
    }
    let partition_text = f.required_raw("partition", limits::SHORT_TEXT_MAX)?;
    let partition = names::partition_name(file, "partition", &partition_text)?;

    let mut g = Fields::of(file, "guest", f.require("guest")?)?;
    let package = g.required_string("package", limits::PACKAGE_NAME_MAX)?;
    names::package_name(file, "guest.package", &package)?;
    let version = g.required_string("version", limits::VERSION_MAX)?;
    names::exact_version(file, "guest.version", &version)?;
    let entrypoint = g.required_string("entrypoint", limits::ENTRYPOINT_MAX)?;
    names::package_path(file, "guest.entrypoint", &entrypoint)?;
    g.finish(&mut warnings);

    let companion = match f.take("companion") {
        None => None,
        Some(v) => Some(companion(file, v, &mut warnings)?),
    };
    let lifecycle = lifecycle(
        file,
        "lifecycle",
        f.string("lifecycle", limits::SHORT_TEXT_MAX, false)?,
    )?;
    let proof_tier_default = match f.string("proof_tier_default", limits::SHORT_TEXT_MAX, false)? {
        None => DEFAULT_TIER,
        Some(s) => ProofTier::from_name(&s).ok_or_else(|| {
            Diagnostic::field(
                file,
                "proof_tier_default",
                format!("{} is not a proof tier (P1, P2 or P3)", quote(&s)),
            )
        })?,
    };
    let failure_class_recovery = match f.take("failure_class_recovery") {
        None => FailureClass::ALL
            .iter()
            .map(|c| (*c, c.response().to_string()))
            .collect(),
        Some(v) => recovery(file, v, &mut warnings)?,
    };
    f.finish(&mut warnings);

    Ok((
        GuestRef {
            partition,
            guest: GuestPackage { package, version },
            entrypoint,
            companion,
            lifecycle,
            proof_tier_default,
            failure_class_recovery,
        },
        warnings,
    ))
}

fn describe(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Str(s) => quote(s),
        other => other.type_name().to_string(),
    }
}

fn recovery(
    file: &str,
    v: &Value,
    warnings: &mut Warnings,
) -> Result<Vec<(FailureClass, String)>, Diagnostic> {
    let mut f = Fields::of(file, "failure_class_recovery", v)?;
    let mut out = Vec::new();
    for class in FailureClass::ALL {
        let path = f.path_of(class.name());
        match f.string(class.name(), limits::SHORT_TEXT_MAX, false)? {
            Some(r) if r == class.response() => out.push((class, r)),
            Some(r) => {
                return Err(Diagnostic::field(
                    file,
                    path,
                    format!(
                        "{} cannot be honoured: RVM answers {} with {}",
                        quote(&r),
                        class.name(),
                        class.response()
                    ),
                ))
            }
            None => {
                warnings.push(Diagnostic::field(
                    file,
                    path,
                    format!(
                        "missing: RVM answers {} with {}",
                        class.name(),
                        class.response()
                    ),
                ));
                out.push((class, class.response().to_string()));
            }
        }
    }
    f.finish(warnings);
    Ok(out)
}

fn companion(file: &str, v: &Value, warnings: &mut Warnings) -> Result<Companion, Diagnostic> {
    let mut f = Fields::of(file, "companion", v)?;
    let c = match f.take("vector_format") {
        None => Companion::default(),
        Some(vf) => {
            let mut g = Fields::of(file, "companion.vector_format", vf)?;
            let package = g.string("package", limits::PACKAGE_NAME_MAX, false)?;
            if let Some(p) = &package {
                names::package_name(file, "companion.vector_format.package", p)?;
            }
            let version = g.string("version", limits::VERSION_MAX, false)?;
            let wasm_addon = g.string("wasm_addon", limits::PACKAGE_NAME_MAX, false)?;
            if let Some(p) = &wasm_addon {
                names::package_name(file, "companion.vector_format.wasm_addon", p)?;
            }
            let recommended = match g.take("recommended") {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    return Err(Diagnostic::field(
                        file,
                        "companion.vector_format.recommended",
                        format!("expected true or false, found {}", other.type_name()),
                    ))
                }
            };
            let reason = g.string("reason", limits::SHORT_TEXT_MAX, false)?;
            g.finish(warnings);
            Companion {
                package,
                version,
                wasm_addon,
                recommended,
                reason,
            }
        }
    };
    f.finish(warnings);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
  "schema": 1,
  "partition": "my-bot",
  "guest": { "package": "@metaharness/kernel", "version": "0.1.0", "entrypoint": "pkg/ruflo_kernel_wasm.js" },
  "companion": { "vector_format": { "package": "@ruvector/rvf", "version": "^0.2.0", "wasm_addon": "@ruvector/rvf-wasm", "recommended": true, "reason": "r" } },
  "lifecycle": "managed",
  "proof_tier_default": "P3",
  "failure_class_recovery": { "F1": "restart-guest", "F2": "rollback-to-checkpoint", "F3": "partition-fence", "F4": "partition-evict" }
}"#;

    #[test]
    fn every_field_is_carried() {
        let (g, w) = parse("w.json", GOOD).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(g.partition.as_str(), "my-bot");
        assert_eq!(g.guest.to_string(), "@metaharness/kernel@0.1.0");
        assert_eq!(g.entrypoint, "pkg/ruflo_kernel_wasm.js");
        assert_eq!(g.proof_tier_default, ProofTier::P3);
        assert_eq!(
            g.companion.unwrap().wasm_addon.as_deref(),
            Some("@ruvector/rvf-wasm")
        );
        assert_eq!(g.failure_class_recovery.len(), 4);
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                GOOD.replace("\"schema\": 1", "\"schema\": 2"),
                "w.json: schema: 2 is not supported",
            ),
            (
                GOOD.replace("\"my-bot\"", "\"my bot\""),
                "w.json: partition: \"my bot\" is not a safe identifier",
            ),
            (
                GOOD.replace(
                    "\"F2\": \"rollback-to-checkpoint\"",
                    "\"F2\": \"restart-guest\"",
                ),
                "w.json: failure_class_recovery.F2: \"restart-guest\" cannot be honoured",
            ),
            (
                GOOD.replace("pkg/ruflo_kernel_wasm.js", "../../etc/passwd"),
                "w.json: guest.entrypoint: \"../../etc/passwd\" is not a relative path",
            ),
            (
                GOOD.replace("\"P3\"", "\"P0\""),
                "w.json: proof_tier_default: \"P0\" is not a proof tier",
            ),
            (
                GOOD.replace("\"managed\"", "\"manual\""),
                "w.json: lifecycle: \"manual\" is not supported",
            ),
            (
                GOOD.replace("\"version\": \"0.1.0\"", "\"version\": \"latest\""),
                "w.json: guest.version: \"latest\" is not an exact version",
            ),
            ("[]".to_string(), "w.json: expected a table/object"),
        ];
        for (text, want) in cases {
            let e = parse("w.json", &text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
    }

    #[test]
    fn missing_class_and_unknown_field_warn() {
        let text = GOOD.replace("\"F4\": \"partition-evict\"", "\"F5\": \"x\"");
        let (_, w) = parse("w.json", &text).unwrap();
        let msgs: Vec<String> = w.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "w.json: failure_class_recovery.F4: missing: RVM answers F4 with partition-evict",
                "w.json: failure_class_recovery.F5: unknown field (ignored)"
            ]
        );
    }
}
