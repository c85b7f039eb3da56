//! Safe identifiers: the only names that may reach a file path, a shell, a
//! console prefix or the device.

/// Longest identifier accepted anywhere (fits the bundle's name field).
pub const MAX_IDENT_LEN: usize = 32;

/// Why a name is not a safe identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentError {
    Empty,
    TooLong,
    /// The first character must be an ASCII letter or digit.
    BadStart,
    /// Byte at this position is outside `[A-Za-z0-9._-]`.
    BadChar(usize),
}

impl core::fmt::Display for IdentError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IdentError::Empty => write!(f, "is empty"),
            IdentError::TooLong => write!(f, "is longer than {MAX_IDENT_LEN} bytes"),
            IdentError::BadStart => write!(f, "must start with a letter or digit"),
            IdentError::BadChar(i) => {
                write!(f, "has a character outside [A-Za-z0-9._-] at byte {i}")
            }
        }
    }
}

/// Check that `name` is `[A-Za-z0-9][A-Za-z0-9._-]{0,31}`.
pub fn check(name: &str) -> Result<(), IdentError> {
    let bytes = name.as_bytes();
    let first = *bytes.first().ok_or(IdentError::Empty)?;
    if bytes.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong);
    }
    if !first.is_ascii_alphanumeric() {
        return Err(IdentError::BadStart);
    }
    match bytes
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        Some(i) => Err(IdentError::BadChar(i)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(check("demo-minimal").is_ok());
        assert!(check("a.b_c-9").is_ok());
        assert_eq!(check(""), Err(IdentError::Empty));
        assert_eq!(check("-x"), Err(IdentError::BadStart));
        assert_eq!(check("..").unwrap_err(), IdentError::BadStart);
        assert_eq!(check("a/b"), Err(IdentError::BadChar(1)));
        assert_eq!(check("a$(id)"), Err(IdentError::BadChar(1)));
        assert_eq!(check(&"a".repeat(33)), Err(IdentError::TooLong));
    }
}
