//! `capability-table.json`: a JSON array of tokens
//! `{ rights, resource?, proof_tier, expires_at, grant_once? }`.
//!
//! # The tier rule
//!
//! A token's `proof_tier` applies to every right it holds, and must be at
//! least the tier the adapter itself assigns to those rights
//! ([`minimum_tier`]): P3 if the token holds GRANT, REVOKE or PROVE; else P2
//! if it holds WRITE or EXECUTE; else P1 (READ alone, GRANT_ONCE alone). A
//! higher tier than the rule is accepted (more checking is always allowed);
//! a lower one is refused, because it would let a right run with less
//! checking than the adapter promised the user. Both emitters' tables pass:
//! the scaffolder's mapping (P2 when EXECUTE, else P1) never goes below it.
//!
//! Other checks: rights are the seven names of [`rvm_abi::rights::RIGHT_NAMES`]
//! (exact upper case; a repeated right is a warning); `grant_once` must agree
//! with the GRANT_ONCE right; `expires_at` is whole Unix seconds (0 = never).
//! An expiry already past, and an expiry on a P1 token (P1 does not check
//! expiry: docs/DESIGN.md section 4), are warnings.

use super::value::{self, Fields, Value};
use crate::diag::{quote, Diagnostic, Warnings};
use crate::limits;
use crate::model::Token;
use rvm_abi::rights::RIGHT_NAMES;
use rvm_abi::{ProofTier, Rights};

/// The least tier a token holding `rights` may run at (see the module doc).
pub fn minimum_tier(rights: Rights) -> ProofTier {
    if rights.intersects(Rights::GRANT | Rights::REVOKE | Rights::PROVE) {
        ProofTier::P3
    } else if rights.intersects(Rights::WRITE | Rights::EXECUTE) {
        ProofTier::P2
    } else {
        ProofTier::P1
    }
}

/// The rights in `rights` that call for `tier`.
fn rights_needing(rights: Rights, tier: ProofTier) -> String {
    let names: Vec<&str> = rights
        .each()
        .filter(|(r, _)| minimum_tier(*r) == tier)
        .map(|(_, n)| n)
        .collect();
    names.join(", ")
}

/// Parse a capability table. `now` (Unix seconds) decides which expiries
/// are already past.
pub fn parse(file: &str, text: &str, now: u64) -> Result<(Vec<Token>, Warnings), Diagnostic> {
    let root = value::parse_json(file, text)?;
    let items = match &root {
        Value::Array(items) => items,
        other => {
            return Err(Diagnostic::file(
                file,
                format!(
                    "expected a JSON array of capability tokens, found {}",
                    other.type_name()
                ),
            ))
        }
    };
    if items.len() > limits::TOKENS_MAX {
        return Err(Diagnostic::file(
            file,
            format!(
                "has {} tokens; a partition's table holds at most {}",
                items.len(),
                limits::TOKENS_MAX
            ),
        ));
    }
    let mut warnings = Warnings::default();
    let mut tokens = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        tokens.push(token(file, i, item, now, &mut warnings)?);
    }
    Ok((tokens, warnings))
}

fn token(
    file: &str,
    i: usize,
    item: &Value,
    now: u64,
    warnings: &mut Warnings,
) -> Result<Token, Diagnostic> {
    let at = format!("[{i}]");
    let mut f = Fields::of(file, &at, item)?;

    let rights_path = format!("{at}.rights");
    let names = value::array(file, &rights_path, f.require("rights")?)?;
    let mut rights = Rights::empty();
    for (j, n) in names.iter().enumerate() {
        let path = format!("{rights_path}[{j}]");
        let name = value::text(file, &path, n, limits::SHORT_TEXT_MAX, false)?;
        let right = Rights::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = RIGHT_NAMES.iter().map(|(_, n)| *n).collect();
            Diagnostic::field(
                file,
                &path,
                format!(
                    "unknown right {} (RVM's rights: {})",
                    quote(&name),
                    known.join(", ")
                ),
            )
        })?;
        if rights.contains(right) {
            warnings.push(Diagnostic::field(
                file,
                &path,
                format!("{name} is listed twice"),
            ));
        }
        rights |= right;
    }
    if rights.is_empty() {
        return Err(Diagnostic::field(
            file,
            rights_path,
            "no rights: a token must carry at least one",
        ));
    }

    let tier_path = format!("{at}.proof_tier");
    let tier_name = value::text(
        file,
        &tier_path,
        f.require("proof_tier")?,
        limits::SHORT_TEXT_MAX,
        false,
    )?;
    let proof_tier = ProofTier::from_name(&tier_name).ok_or_else(|| {
        Diagnostic::field(
            file,
            &tier_path,
            format!("{} is not a proof tier (P1, P2 or P3)", quote(&tier_name)),
        )
    })?;
    let least = minimum_tier(rights);
    if proof_tier < least {
        return Err(Diagnostic::field(
            file,
            tier_path,
            format!(
                "{} is below {} required for {} (tier rule: READ, GRANT_ONCE P1; WRITE, EXECUTE P2; GRANT, REVOKE, PROVE P3)",
                proof_tier.name(),
                least.name(),
                rights_needing(rights, least)
            ),
        ));
    }

    let resource = match f.string("resource", limits::RESOURCE_MAX, false)? {
        Some(r) if r.is_empty() => {
            return Err(Diagnostic::field(
                file,
                format!("{at}.resource"),
                "is empty (leave it out for an unscoped token)",
            ))
        }
        r => r,
    };

    let exp_path = format!("{at}.expires_at");
    let expires_at = match f.require("expires_at")? {
        Value::Int(n) => u64::try_from(*n).map_err(|_| {
            Diagnostic::field(
                file,
                &exp_path,
                format!("{n} is not a Unix time (whole seconds >= 0)"),
            )
        })?,
        other => {
            return Err(Diagnostic::field(
                file,
                exp_path,
                format!("expected whole Unix seconds, found {}", other.type_name()),
            ))
        }
    };
    if expires_at != 0 {
        let past = expires_at <= now;
        let reason = match (proof_tier, past) {
            (ProofTier::P1, true) => format!(
                "expired at {} UTC, but a P1 token's expiry is not checked (only P2 and P3 check policy): it stays usable",
                utc(expires_at)
            ),
            (ProofTier::P1, false) => "is set, but a P1 token's expiry is not checked (only P2 and P3 check policy)".to_string(),
            (_, true) => format!("expired at {} UTC: the kernel will refuse every use of this token", utc(expires_at)),
            (_, false) => String::new(),
        };
        if !reason.is_empty() {
            warnings.push(Diagnostic::field(file, &exp_path, reason));
        }
    }
    let once_path = format!("{at}.grant_once");
    match f.take("grant_once") {
        None => {}
        Some(Value::Bool(flag)) if *flag != rights.contains(Rights::GRANT_ONCE) => {
            return Err(Diagnostic::field(
                file,
                once_path,
                if *flag {
                    "is true but the token does not hold GRANT_ONCE"
                } else {
                    "is false but the token holds GRANT_ONCE"
                },
            ));
        }
        Some(Value::Bool(_)) => {}
        Some(other) => {
            return Err(Diagnostic::field(
                file,
                once_path,
                format!("expected true or false, found {}", other.type_name()),
            ))
        }
    }
    f.finish(warnings);
    Ok(Token {
        rights,
        proof_tier,
        resource,
        expires_at,
    })
}

/// A Unix time as `YYYY-MM-DD hh:mm:ss` (proleptic Gregorian, UTC).
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, on days since 1970-01-01.
    let z = days as i128 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn minimum_tiers() {
        assert_eq!(minimum_tier(Rights::READ), ProofTier::P1);
        assert_eq!(minimum_tier(Rights::GRANT_ONCE), ProofTier::P1);
        assert_eq!(
            minimum_tier(Rights::READ | Rights::WRITE | Rights::EXECUTE),
            ProofTier::P2
        );
        assert_eq!(minimum_tier(Rights::EXECUTE | Rights::PROVE), ProofTier::P3);
        assert_eq!(minimum_tier(Rights::all()), ProofTier::P3);
    }

    #[test]
    fn accepts_a_full_token() {
        let t = r#"[{"rights":["READ","WRITE","GRANT","REVOKE","EXECUTE","PROVE","GRANT_ONCE"],"resource":"*","proof_tier":"P3","expires_at":0,"grant_once":true}]"#;
        let (tokens, w) = parse("c.json", t, NOW).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(tokens[0].rights, Rights::all());
        assert_eq!(tokens[0].proof_tier, ProofTier::P3);
        assert_eq!(tokens[0].resource.as_deref(), Some("*"));
    }

    #[test]
    fn refusals() {
        let cases = [
            (r#"{}"#, "c.json: expected a JSON array"),
            (
                r#"[{"rights":["ADMIN"],"proof_tier":"P1","expires_at":0}]"#,
                "c.json: [0].rights[0]: unknown right \"ADMIN\"",
            ),
            (
                r#"[{"rights":["read"],"proof_tier":"P1","expires_at":0}]"#,
                "c.json: [0].rights[0]: unknown right \"read\"",
            ),
            (
                r#"[{"rights":["WRITE"],"proof_tier":"P1","expires_at":0}]"#,
                "c.json: [0].proof_tier: P1 is below P2 required for WRITE",
            ),
            (
                r#"[{"rights":["READ","GRANT"],"proof_tier":"P2","expires_at":0}]"#,
                "c.json: [0].proof_tier: P2 is below P3 required for GRANT",
            ),
            (
                r#"[{"rights":[],"proof_tier":"P1","expires_at":0}]"#,
                "c.json: [0].rights: no rights",
            ),
            (
                r#"[{"rights":["READ"],"proof_tier":"P4","expires_at":0}]"#,
                "c.json: [0].proof_tier: \"P4\" is not a proof tier",
            ),
            (
                r#"[{"rights":["READ"],"proof_tier":"P1"}]"#,
                "c.json: [0].expires_at: missing",
            ),
            (
                r#"[{"rights":["READ"],"proof_tier":"P1","expires_at":-1}]"#,
                "c.json: [0].expires_at: -1 is not a Unix time",
            ),
            (
                r#"[{"rights":["READ"],"proof_tier":"P1","expires_at":1.5}]"#,
                "c.json: [0].expires_at: expected whole Unix seconds",
            ),
            (
                r#"[{"rights":["READ"],"proof_tier":"P1","expires_at":0,"grant_once":true}]"#,
                "c.json: [0].grant_once: is true but",
            ),
            (
                r#"[{"rights":["GRANT_ONCE"],"proof_tier":"P1","expires_at":0,"grant_once":false}]"#,
                "c.json: [0].grant_once: is false but",
            ),
            (
                r#"[{"rights":["READ"],"proof_tier":"P1","expires_at":0,"resource":""}]"#,
                "c.json: [0].resource: is empty",
            ),
            (
                r#"[{"rights":["READ"],"rights":["WRITE"],"proof_tier":"P1","expires_at":0}]"#,
                "c.json: line 1, column",
            ),
        ];
        for (text, want) in cases {
            let e = parse("c.json", text, NOW).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}\n  wanted: {want}");
        }
    }

    #[test]
    fn warnings_for_expiry_and_unknown_fields() {
        let t = r#"[{"rights":["READ","READ"],"resource":"ns/x","proof_tier":"P1","expires_at":1700086400,"deny":true},
                   {"rights":["EXECUTE"],"proof_tier":"P2","expires_at":1700086400}]"#;
        let (_, w) = parse("c.json", t, NOW).unwrap();
        let msgs: Vec<String> = w.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "c.json: [0].rights[1]: READ is listed twice",
                "c.json: [0].expires_at: expired at 2023-11-15 22:13:20 UTC, but a P1 token's expiry is not checked (only P2 and P3 check policy): it stays usable",
                "c.json: [0].deny: unknown field (ignored)",
                "c.json: [1].expires_at: expired at 2023-11-15 22:13:20 UTC: the kernel will refuse every use of this token",
            ]
        );
    }

    #[test]
    fn too_many_tokens() {
        let one = r#"{"rights":["READ"],"proof_tier":"P1","expires_at":0}"#;
        let t = format!("[{}]", vec![one; limits::TOKENS_MAX + 1].join(","));
        assert!(parse("c.json", &t, NOW)
            .unwrap_err()
            .reason
            .contains("at most"));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(4_102_444_800), "2100-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
    }
}
