//! Diagnostics: every message the loader prints about an input file has the
//! form `file: where: reason`, where `where` is a line, a field path or a
//! byte offset.

use std::fmt;

/// Where in a file a diagnostic points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole.
    File,
    /// A 1-based line.
    Line(usize),
    /// A 1-based line and column.
    LineCol(usize, usize),
    /// A field path such as `partition.memory_tier` or `[3].rights[1]`.
    Field(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Line(l) => write!(f, "line {l}"),
            Location::LineCol(l, c) => write!(f, "line {l}, column {c}"),
            Location::Field(p) => f.write_str(p),
        }
    }
}

/// One message about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    pub location: Location,
    pub reason: String,
}

impl Diagnostic {
    pub fn new(file: impl Into<String>, location: Location, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            location,
            reason: reason.into(),
        }
    }

    pub fn file(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(file, Location::File, reason)
    }

    pub fn field(
        file: impl Into<String>,
        path: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::new(file, Location::Field(path.into()), reason)
    }

    pub fn line(file: impl Into<String>, line: usize, reason: impl Into<String>) -> Self {
        Self::new(file, Location::Line(line), reason)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::File => write!(f, "{}: {}", self.file, self.reason),
            _ => write!(f, "{}: {}: {}", self.file, self.location, self.reason),
        }
    }
}

/// Warnings gathered while reading input; printed, never fatal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warnings(pub Vec<Diagnostic>);

impl Warnings {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Warnings) {
        self.0.extend(other.0);
    }
}

/// Longest excerpt of untrusted text quoted back in a message.
pub const QUOTE_LIMIT: usize = 60;

/// Quote untrusted text for a message: escaped (no raw newline, quote or
/// control character reaches the terminal) and cut to a short excerpt.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for (n, c) in s.chars().enumerate() {
        if n == QUOTE_LIMIT {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let d = Diagnostic::field("a/b.toml", "partition.name", "is empty");
        assert_eq!(d.to_string(), "a/b.toml: partition.name: is empty");
        assert_eq!(
            Diagnostic::line("s.sh", 4, "bad").to_string(),
            "s.sh: line 4: bad"
        );
        assert_eq!(
            Diagnostic::file("x.json", "empty file").to_string(),
            "x.json: empty file"
        );
    }

    #[test]
    fn quote_escapes_and_truncates() {
        assert_eq!(quote("a\"\n$(id)"), "\"a\\\"\\n$(id)\"");
        let long = quote(&"x".repeat(1000));
        assert!(long.len() < 70 && long.ends_with("...\""));
    }
}
