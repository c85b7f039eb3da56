//! The two ways a command fails, and their exit codes.

use crate::diag::Diagnostic;
use std::fmt;

/// Exit code of a refused input: nothing was changed.
pub const EXIT_REFUSED: u8 = 2;
/// Exit code of a failure of the machine or the run (I/O, QEMU, timeout).
pub const EXIT_FAILED: u8 = 1;

/// A command's failure.
#[derive(Debug)]
pub enum Error {
    /// Input refused (bad file, unknown name, inconsistency): exit 2, and
    /// `RVM_HOME` is left as it was.
    Refused(Vec<Diagnostic>),
    /// Something else went wrong: exit 1.
    Failed(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Refused(_) => EXIT_REFUSED,
            Error::Failed(_) => EXIT_FAILED,
        }
    }

    /// A refusal about something other than a file's content (a name on the
    /// command line, the state of `RVM_HOME`).
    pub fn refused(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Refused(vec![Diagnostic::file(what, reason)])
    }

    pub fn failed(msg: impl Into<String>) -> Self {
        Error::Failed(msg.into())
    }
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Refused(vec![d])
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(ds) => {
                for (i, d) in ds.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
            Error::Failed(m) => f.write_str(m),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
