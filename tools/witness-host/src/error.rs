//! What can go wrong reading or writing witness files.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A host-side witness error: always names the file and the reason.
#[derive(Debug)]
pub enum HostError {
    /// An I/O operation on `path` failed.
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    /// A log path that does not end in `.log`.
    NotALogPath(PathBuf),
    /// A partition name that is not a safe identifier.
    BadName {
        name: String,
        reason: rvm_abi::ident::IdentError,
    },
    /// Two log ids were given the same name.
    NameTaken { name: String, log: u32, other: u32 },
    /// A log that already has a name was given another.
    Renamed { log: u32, name: String, current: String },
    /// A log was named after its first frame was filed (under another name).
    NamedLate { log: u32, name: String, filed_as: String },
    /// The checkpoint file does not parse (`error.line` is the file's line).
    Checkpoints {
        path: PathBuf,
        error: rvm_witness::NoteError,
    },
    /// The public key file is missing or does not parse.
    Key { path: PathBuf, reason: String },
    /// No record with this seq in the file.
    NoSuchRecord {
        path: PathBuf,
        seq: u64,
        records: u64,
    },
    /// No checkpoint covers the record yet.
    NotSigned {
        path: PathBuf,
        seq: u64,
        signed: u64,
    },
    /// A proof file does not parse.
    BadProof { reason: String },
    /// The log does not match its own checkpoint, so no proof can be made.
    LogDoesNotVerify { path: PathBuf, reason: String },
}

impl HostError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        op: &'static str,
    ) -> impl FnOnce(io::Error) -> HostError {
        let path = path.into();
        move |source| HostError::Io { path, op, source }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Io { path, op, source } => {
                write!(f, "{}: cannot {op}: {source}", path.display())
            }
            HostError::NotALogPath(p) => {
                write!(f, "{}: a witness log file name ends in .log", p.display())
            }
            HostError::BadName { name, reason } => write!(f, "partition name {name:?} {reason}"),
            HostError::NameTaken { name, log, other } => {
                write!(f, "logs {other} and {log} cannot both be named {name:?}")
            }
            HostError::Renamed { log, name, current } => {
                write!(f, "log {log} is named {current:?} and cannot be renamed {name:?}")
            }
            HostError::NamedLate { log, name, filed_as } => write!(
                f,
                "log {log} cannot be named {name:?}: its records are already filed as {filed_as:?}"
            ),
            HostError::Checkpoints { path, error } => write!(f, "{}: {error}", path.display()),
            HostError::Key { path, reason } => write!(f, "{}: {reason}", path.display()),
            HostError::NoSuchRecord { path, seq, records } => {
                write!(
                    f,
                    "{}: no record {seq} (the log has {records})",
                    path.display()
                )
            }
            HostError::NotSigned { path, seq, signed } => write!(
                f,
                "{}: record {seq} is not covered by a checkpoint yet (signed: {signed} records)",
                path.display()
            ),
            HostError::BadProof { reason } => write!(f, "not an inclusion proof: {reason}"),
            HostError::LogDoesNotVerify { path, reason } => {
                write!(f, "{}: the log does not verify: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HostError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
