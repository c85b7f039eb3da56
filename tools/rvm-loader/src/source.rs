//! Reading an input file: bounded size, not empty, valid UTF-8.

use crate::diag::{Diagnostic, Location};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A text file read for parsing.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    /// How messages name the file (the path as given).
    pub name: String,
    pub text: String,
    /// SHA-256 of the bytes read.
    pub sha256: [u8; 32],
}

/// Read at most `limit` bytes of a regular file.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, Diagnostic> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| Diagnostic::file(&name, format!("cannot read: {}", io_reason(&e))))?;
    if !meta.is_file() {
        return Err(Diagnostic::file(&name, "not a regular file"));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| Diagnostic::file(&name, format!("cannot read: {}", io_reason(&e))))?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "too large" from "exactly at it",
    // even if the file grows while it is read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Diagnostic::file(&name, format!("cannot read: {}", io_reason(&e))))?;
    if bytes.len() as u64 > limit {
        return Err(Diagnostic::file(
            &name,
            format!("file is larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// Read a text input: refused if larger than `limit`, empty (or only
/// whitespace), or not UTF-8.
pub fn read_text(path: &Path, limit: u64) -> Result<Source, Diagnostic> {
    let bytes = read_bytes(path, limit)?;
    let name = path.display().to_string();
    text_from_bytes(&name, bytes).map(|(text, sha256)| Source {
        path: path.to_path_buf(),
        name,
        text,
        sha256,
    })
}

/// Check bytes as text input (shared with the fuzz tests).
pub fn text_from_bytes(name: &str, bytes: Vec<u8>) -> Result<(String, [u8; 32]), Diagnostic> {
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Diagnostic::file(name, "empty file"));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok((text, sha256)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let good = &e.as_bytes()[..at];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = at - good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
            Err(Diagnostic::new(
                name,
                Location::LineCol(line, col),
                format!(
                    "not UTF-8 (invalid byte 0x{:02x} at offset {at})",
                    e.as_bytes()[at]
                ),
            ))
        }
    }
}

/// An I/O error as a short reason.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Line and column (1-based) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_non_utf8() {
        assert_eq!(
            text_from_bytes("f", b" \n\t".to_vec()).unwrap_err().reason,
            "empty file"
        );
        assert_eq!(
            text_from_bytes("f", vec![]).unwrap_err().reason,
            "empty file"
        );
        let e = text_from_bytes("f", b"ab\ncd\xffe".to_vec()).unwrap_err();
        assert_eq!(e.location, Location::LineCol(2, 3));
        assert!(e.reason.contains("0xff"), "{e}");
        assert!(text_from_bytes("f", "é".as_bytes().to_vec()).is_ok());
    }

    #[test]
    fn line_col_counts() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
