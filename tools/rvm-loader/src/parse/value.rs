//! One tree for JSON and TOML input, read strictly (duplicate keys are
//! errors), and a walker that takes the fields a format knows and reports
//! every other one as a warning naming it.

use crate::diag::{quote, Diagnostic, Location, Warnings};
use crate::source::line_col;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A parsed value of either format.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    /// Keys in file order; never two equal keys.
    Object(Vec<(String, Value)>),
    /// A TOML date/time: no field of ours takes one.
    DateTime,
}

impl Value {
    /// The type's name as messages say it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "a table/object",
            Value::DateTime => "a date-time",
        }
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(i128::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            // toml's date-time travels as a one-entry map with this key.
            if key == "$__toml_private_datetime" {
                let _: de::IgnoredAny = map.next_value()?;
                return Ok(Value::DateTime);
            }
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key {}", quote(&key))));
            }
            let v = map.next_value_seed(Strict)?;
            entries.push((key, v));
        }
        Ok(Value::Object(entries))
    }
}

/// Deserialize seed for [`Value`].
struct Strict;

impl<'de> de::DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

/// Parse JSON text; a syntax error or duplicate key names its line and column.
pub fn parse_json(file: &str, text: &str) -> Result<Value, Diagnostic> {
    serde_json::from_str::<Value>(text).map_err(|e| {
        let msg = e.to_string();
        // serde_json appends " at line L column C"; the location is ours to print.
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        Diagnostic::new(
            file,
            Location::LineCol(e.line(), e.column()),
            format!("invalid JSON: {msg}"),
        )
    })
}

/// Parse TOML text; a syntax error or duplicate key names its line and column.
pub fn parse_toml(file: &str, text: &str) -> Result<Value, Diagnostic> {
    let de = toml::Deserializer::new(text);
    <Value as de::Deserialize>::deserialize(de).map_err(|e| {
        let location = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                Location::LineCol(l, c)
            }
            None => Location::File,
        };
        let msg = e.message().trim().replace('\n', "; ");
        Diagnostic::new(file, location, format!("invalid TOML: {msg}"))
    })
}

/// Join a field path.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An object being read: fields are taken by name; whatever is left when
/// it is finished becomes a warning.
pub struct Fields<'v> {
    file: &'v str,
    path: String,
    entries: &'v [(String, Value)],
    taken: Vec<bool>,
}

impl<'v> Fields<'v> {
    /// Expect `v` (at `path`) to be an object.
    pub fn of(file: &'v str, path: &str, v: &'v Value) -> Result<Self, Diagnostic> {
        match v {
            Value::Object(entries) => Ok(Self {
                file,
                path: path.to_string(),
                entries,
                taken: vec![false; entries.len()],
            }),
            other => Err(Diagnostic::new(
                file,
                location(path),
                format!("expected a table/object, found {}", other.type_name()),
            )),
        }
    }

    pub fn file(&self) -> &'v str {
        self.file
    }

    /// The path of field `key`.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Take a field if present.
    pub fn take(&mut self, key: &str) -> Option<&'v Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        self.taken[i] = true;
        Some(&self.entries[i].1)
    }

    /// Take a field that must be present.
    pub fn require(&mut self, key: &str) -> Result<&'v Value, Diagnostic> {
        let path = self.path_of(key);
        self.take(key)
            .ok_or_else(|| Diagnostic::field(self.file, path, "missing"))
    }

    /// A string field, at most `max` bytes, without control characters
    /// unless `multiline` (then tab, newline and carriage return are allowed).
    pub fn string(
        &mut self,
        key: &str,
        max: usize,
        multiline: bool,
    ) -> Result<Option<String>, Diagnostic> {
        let path = self.path_of(key);
        match self.take(key) {
            None => Ok(None),
            Some(v) => text(self.file, &path, v, max, multiline).map(Some),
        }
    }

    /// A string field that must be present.
    pub fn required_string(&mut self, key: &str, max: usize) -> Result<String, Diagnostic> {
        let path = self.path_of(key);
        let v = self.require(key)?;
        text(self.file, &path, v, max, false)
    }

    /// A string field that must be present, bounded but otherwise taken as
    /// it is: for names, whose own check gives the better message.
    pub fn required_raw(&mut self, key: &str, max: usize) -> Result<String, Diagnostic> {
        let path = self.path_of(key);
        let file = self.file;
        match self.require(key)? {
            Value::Str(s) if s.len() <= max => Ok(s.clone()),
            Value::Str(s) => Err(Diagnostic::field(
                file,
                path,
                format!("is {} bytes long; at most {max} are accepted", s.len()),
            )),
            other => Err(Diagnostic::field(
                file,
                path,
                format!("expected a string, found {}", other.type_name()),
            )),
        }
    }

    /// Report every field that was not taken.
    pub fn finish(self, warnings: &mut Warnings) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if !self.taken[i] {
                warnings.push(Diagnostic::field(
                    self.file,
                    join(&self.path, &safe_key(k)),
                    "unknown field (ignored)",
                ));
            }
        }
    }
}

/// A key quoted if it is not plain, so a hostile key cannot forge a message.
fn safe_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && k.len() <= 64
    {
        k.to_string()
    } else {
        quote(k)
    }
}

fn location(path: &str) -> Location {
    if path.is_empty() {
        Location::File
    } else {
        Location::Field(path.to_string())
    }
}

/// A string value, bounded and free of control characters.
pub fn text(
    file: &str,
    path: &str,
    v: &Value,
    max: usize,
    multiline: bool,
) -> Result<String, Diagnostic> {
    let Value::Str(s) = v else {
        return Err(Diagnostic::field(
            file,
            path,
            format!("expected a string, found {}", v.type_name()),
        ));
    };
    if s.len() > max {
        return Err(Diagnostic::field(
            file,
            path,
            format!("is {} bytes long; at most {max} are accepted", s.len()),
        ));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if let Some((i, c)) = s
        .char_indices()
        .find(|&(_, c)| c.is_control() && !allowed(c))
    {
        return Err(Diagnostic::field(
            file,
            path,
            format!(
                "contains control character U+{:04X} at byte {i}",
                u32::from(c)
            ),
        ));
    }
    Ok(s.clone())
}

/// An array value.
pub fn array<'v>(file: &str, path: &str, v: &'v Value) -> Result<&'v [Value], Diagnostic> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(Diagnostic::field(
            file,
            path,
            format!("expected an array, found {}", other.type_name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_duplicate_keys_are_errors() {
        let e = parse_json("t.json", "{\"a\": 1,\n \"a\": 2}").unwrap_err();
        assert!(e.reason.contains("duplicate key \"a\""), "{e}");
        assert!(matches!(e.location, Location::LineCol(2, _)), "{e:?}");
    }

    #[test]
    fn toml_errors_have_lines() {
        let e = parse_toml("t.toml", "[a]\nx = 1\nx = 2\n").unwrap_err();
        assert!(matches!(e.location, Location::LineCol(3, _)), "{e:?}");
        assert!(e.reason.starts_with("invalid TOML"), "{e}");
    }

    #[test]
    fn unknown_fields_warn_with_path() {
        let v = parse_json("t.json", r#"{"a": "x", "b\n": 1}"#).unwrap();
        let mut f = Fields::of("t.json", "top", &v).unwrap();
        assert_eq!(f.string("a", 10, false).unwrap().as_deref(), Some("x"));
        let mut w = Warnings::default();
        f.finish(&mut w);
        assert_eq!(w.0.len(), 1);
        assert_eq!(
            w.0[0].to_string(),
            "t.json: top.\"b\\n\": unknown field (ignored)"
        );
    }

    #[test]
    fn strings_are_bounded_and_clean() {
        let long = Value::Str("x".repeat(11));
        assert!(text("f", "p", &long, 10, false)
            .unwrap_err()
            .reason
            .contains("11 bytes"));
        let ctl = Value::Str("a\nb".into());
        assert!(text("f", "p", &ctl, 10, false).is_err());
        assert!(text("f", "p", &ctl, 10, true).is_ok());
        assert!(text("f", "p", &Value::Int(1), 10, true)
            .unwrap_err()
            .reason
            .contains("integer"));
    }
}
