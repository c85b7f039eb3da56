//! Reading one log's files back: records, checkpoints, key, and which log
//! id the records belong to.

use crate::error::HostError;
use crate::log_folder::{LogFiles, HYPERVISOR_NAME};
use rvm_abi::witness::{WitnessRecord, RECORD_LEN};
use rvm_witness::{parse_notes, LogId, PublicKey, SignedCheckpoint};
use std::fs;
use std::path::Path;

/// Where the key to verify with comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Given by the caller.
    Given,
    /// The `.pub` file beside the log.
    File,
}

/// How the log id was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogIdSource {
    /// Given by the caller.
    Given,
    /// The log is named `hypervisor`.
    HypervisorName,
    /// The origin line of the first checkpoint whose signature verifies.
    SignedCheckpoint,
    /// The partition field of the first record (nothing signed says more).
    FirstRecord,
    /// No records and no checkpoints: nothing to say.
    Empty,
}

/// One log's files, read.
#[derive(Clone, Debug)]
pub struct LoadedLog {
    pub files: LogFiles,
    pub log: LogId,
    pub log_source: LogIdSource,
    /// Records back to back (possibly with a partial one at the end).
    pub records: Vec<u8>,
    pub checkpoints: Vec<SignedCheckpoint>,
    pub key: PublicKey,
    pub key_source: KeySource,
}

impl LoadedLog {
    /// Whole records in the file.
    pub fn record_count(&self) -> u64 {
        (self.records.len() / RECORD_LEN) as u64
    }

    /// The record at `index`, if whole.
    pub fn record(&self, index: u64) -> Option<&[u8; RECORD_LEN]> {
        let i = usize::try_from(index).ok()?;
        self.records
            .chunks_exact(RECORD_LEN)
            .nth(i)
            .and_then(|c| c.try_into().ok())
    }
}

/// Read the verifier key from a `.pub` file.
pub fn read_key(path: &Path) -> Result<PublicKey, HostError> {
    let text = fs::read_to_string(path).map_err(|e| HostError::Key {
        path: path.into(),
        reason: format!("cannot read: {e}"),
    })?;
    PublicKey::from_verifier_key(text.trim_end()).map_err(|e| HostError::Key {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Read the checkpoints file (a missing file means no checkpoints).
pub fn read_checkpoints(path: &Path) -> Result<Vec<SignedCheckpoint>, HostError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(HostError::Io {
                path: path.into(),
                op: "read",
                source: e,
            })
        }
    };
    parse_notes(&text).map_err(|error| HostError::Checkpoints {
        path: path.into(),
        error,
    })
}

/// Read a log and its neighbours. `key` and `log` override the `.pub` file
/// and the inferred log id.
pub fn load(
    path: &Path,
    key: Option<PublicKey>,
    log: Option<LogId>,
) -> Result<LoadedLog, HostError> {
    let files = LogFiles::for_log_path(path)?;
    let records = fs::read(&files.log).map_err(HostError::io(&files.log, "read"))?;
    let checkpoints = read_checkpoints(&files.checkpoints)?;
    let (key, key_source) = match key {
        Some(k) => (k, KeySource::Given),
        None => (read_key(&files.key)?, KeySource::File),
    };
    let (log, log_source) = match log {
        Some(l) => (l, LogIdSource::Given),
        None if files.name == HYPERVISOR_NAME => (LogId::HYPERVISOR, LogIdSource::HypervisorName),
        None => infer_log(&records, &checkpoints, &key),
    };
    Ok(LoadedLog {
        files,
        log,
        log_source,
        records,
        checkpoints,
        key,
        key_source,
    })
}

fn infer_log(
    records: &[u8],
    checkpoints: &[SignedCheckpoint],
    key: &PublicKey,
) -> (LogId, LogIdSource) {
    let first = records
        .get(..RECORD_LEN)
        .and_then(|b| <&[u8; RECORD_LEN]>::try_from(b).ok())
        .map(WitnessRecord::from_bytes);
    let first_partition = match first {
        Some(Ok(r)) => Some(LogId(r.partition)),
        _ => None,
    };
    let mut signed = checkpoints
        .iter()
        .filter(|c| c.verify(key).is_ok())
        .map(|c| c.checkpoint.log);
    // A signed origin the records agree with; else the first signed one
    // (a record from elsewhere then shows as a partition mismatch).
    if let Some(p) = first_partition {
        if signed.clone().any(|l| l == p) {
            return (p, LogIdSource::SignedCheckpoint);
        }
    }
    if let Some(l) = signed.next() {
        return (l, LogIdSource::SignedCheckpoint);
    }
    match (first, first_partition) {
        (_, Some(p)) => (p, LogIdSource::FirstRecord),
        // An unreadable first record: the verifier will name it.
        (Some(_), None) => (LogId::HYPERVISOR, LogIdSource::FirstRecord),
        (None, _) => (LogId::HYPERVISOR, LogIdSource::Empty),
    }
}
