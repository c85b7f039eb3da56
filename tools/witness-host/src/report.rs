//! `witness verify`: a log file in, a structured report out.

use crate::error::HostError;
use crate::read::{load, KeySource, LoadedLog, LogIdSource};
use rvm_witness::{
    verify_log, Hash, LogId, PublicKey, RootCheck, VerifyFailure, VerifyInput, VerifySummary,
};
use std::fmt;
use std::path::{Path, PathBuf};

/// What `verify` is told beyond the path.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Verify with this key instead of the `.pub` file beside the log.
    pub key: Option<PublicKey>,
    /// The key's fingerprint must be this (e.g. the manifest's
    /// `witness_key_fingerprint`).
    pub expected_fingerprint: Option<Hash>,
    /// The log id, instead of inferring it.
    pub log: Option<LogId>,
    /// Recompute Merkle roots (default) or check chain heads only.
    pub roots: RootCheck,
    /// Accept records after the last signed checkpoint (a live log whose
    /// run has not finished). By default every record must be covered by a
    /// signed checkpoint: a finished run's log ends with its final record
    /// signed, so records after the last checkpoint were appended by
    /// someone else, or the checkpoints were removed.
    pub allow_unsigned_tail: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            key: None,
            expected_fingerprint: None,
            log: None,
            roots: RootCheck::Check,
            allow_unsigned_tail: false,
        }
    }
}

/// Whether the key is the one the operator expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// No expected fingerprint was given: the log is consistent with the
    /// key beside it, which says nothing about who holds that key.
    NotChecked,
    Matches,
    Mismatch {
        expected: Hash,
    },
}

/// The result of verifying one log file.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub path: PathBuf,
    pub name: String,
    pub log: LogId,
    pub log_source: LogIdSource,
    pub key_fingerprint: Hash,
    pub key_source: KeySource,
    pub key_check: KeyCheck,
    /// Whole records in the file.
    pub records: u64,
    /// Checkpoints in the checkpoint file.
    pub checkpoints: usize,
    pub result: Result<VerifySummary, VerifyFailure>,
    /// Records after the last checkpoint were accepted
    /// ([`VerifyOptions::allow_unsigned_tail`]).
    pub unsigned_tail_allowed: bool,
}

impl VerifyReport {
    /// Everything checked out (the key included, when an expected
    /// fingerprint was given).
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
            && !matches!(self.key_check, KeyCheck::Mismatch { .. })
            && self.first_unsigned_record().is_none()
    }

    /// The first record no signed checkpoint covers, when that fails the
    /// log (not with [`VerifyOptions::allow_unsigned_tail`]).
    pub fn first_unsigned_record(&self) -> Option<u64> {
        match &self.result {
            Ok(s) if s.unsigned > 0 && !self.unsigned_tail_allowed => Some(s.signed),
            _ => None,
        }
    }

    /// The first record that cannot be trusted, when verification failed
    /// (a broken chain, or a record no signed checkpoint covers).
    pub fn first_bad_record(&self) -> Option<u64> {
        self.result
            .as_ref()
            .err()
            .and_then(VerifyFailure::first_bad_record)
            .or_else(|| self.first_unsigned_record())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: log {} ({}), {} records, {} checkpoints",
            self.path.display(),
            self.log,
            self.name,
            self.records,
            self.checkpoints
        )?;
        let source = match self.key_source {
            KeySource::Given => "given",
            KeySource::File => "from the .pub file",
        };
        write!(f, "key {} ({source})", self.key_fingerprint)?;
        match self.key_check {
            KeyCheck::NotChecked => writeln!(f, ", not compared with an expected fingerprint")?,
            KeyCheck::Matches => writeln!(f, ", matches the expected fingerprint")?,
            KeyCheck::Mismatch { expected } => {
                writeln!(f, "\nFAILED: the key is not the expected one ({expected})")?
            }
        }
        match &self.result {
            Ok(s) => {
                write!(f, "OK: records 0..{} chained and signed", s.signed)?;
                if s.roots_checked {
                    write!(f, ", Merkle roots match")?;
                }
                writeln!(f)?;
                if s.unsigned > 0 && !self.unsigned_tail_allowed {
                    write!(
                        f,
                        "FAILED: records {}..{} are not signed by any checkpoint ({} records after the last checkpoint{}); \
                         first unsigned record: {}",
                        s.signed,
                        s.records,
                        s.unsigned,
                        if self.checkpoints == 0 { ", and there is no checkpoint at all" } else { "" },
                        s.signed
                    )?;
                    if s.final_checkpoint_missing {
                        write!(
                            f,
                            "; the last record announced a checkpoint that never arrived"
                        )?;
                    }
                    writeln!(f)?;
                } else if s.unsigned > 0 {
                    write!(
                        f,
                        "not yet signed: records {}..{} ({} records after the last checkpoint)",
                        s.signed, s.records, s.unsigned
                    )?;
                    if s.final_checkpoint_missing {
                        write!(
                            f,
                            "; the last record announced a checkpoint that never arrived"
                        )?;
                    }
                    writeln!(f)?;
                }
                Ok(())
            }
            Err(e) => {
                write!(f, "FAILED at {e}")?;
                if let Some(i) = e.first_bad_record() {
                    write!(f, "\nfirst bad record: {i}")?;
                }
                writeln!(f)
            }
        }
    }
}

/// Verify the loaded files.
pub fn verify_loaded(loaded: &LoadedLog, opts: &VerifyOptions) -> VerifyReport {
    let fp = loaded.key.fingerprint();
    let key_check = match opts.expected_fingerprint {
        None => KeyCheck::NotChecked,
        Some(e) if e == fp => KeyCheck::Matches,
        Some(expected) => KeyCheck::Mismatch { expected },
    };
    let result = verify_log(VerifyInput {
        log: loaded.log,
        records: &loaded.records,
        checkpoints: &loaded.checkpoints,
        key: &loaded.key,
        roots: opts.roots,
    });
    VerifyReport {
        path: loaded.files.log.clone(),
        name: loaded.files.name.clone(),
        log: loaded.log,
        log_source: loaded.log_source,
        key_fingerprint: fp,
        key_source: loaded.key_source,
        key_check,
        records: loaded.record_count(),
        checkpoints: loaded.checkpoints.len(),
        result,
        unsigned_tail_allowed: opts.allow_unsigned_tail,
    }
}

/// `witness verify <log>`: read `<name>.log` and its neighbours and check
/// chain, links, signatures and checkpoints. `Err` is for files that cannot
/// be read or parsed; a log that reads but does not verify is an `Ok`
/// report whose `is_ok()` is false and which names the first bad record.
pub fn verify(path: &Path, opts: &VerifyOptions) -> Result<VerifyReport, HostError> {
    let loaded = load(path, opts.key, opts.log)?;
    Ok(verify_loaded(&loaded, opts))
}
