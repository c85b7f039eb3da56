//! Continuing a filed log in a new boot (one log across an instance's
//! restarts): what the bundle tells the hypervisor ([`ResumePoint`], its
//! `LogResume` entry) and how the recorder goes on appending
//! ([`crate::Recorder::resume`]).
//!
//! A log continues from its last signed checkpoint, and only if the whole
//! file verifies (chain, links, signatures, Merkle roots) under the key
//! the hypervisor signs with: the new boot's records then follow that
//! checkpoint's record, and the file stays one chain. Records after the
//! last checkpoint (a machine that died before signing them) cannot be
//! continued — nothing proves them — so they leave the log for the archive
//! (`archive/<name>.<n>.unsigned`), and the recorder says so.

use std::path::Path;

use rvm_witness::{CompactRange, LogId, PublicKey};

use crate::error::HostError;
use crate::read::load;
use crate::report::{verify_loaded, VerifyOptions};

/// Where a log continues: its last signed checkpoint and the right edge
/// of its Merkle tree there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    pub log: u32,
    pub size: u64,
    pub head: [u8; 32],
    pub root: [u8; 32],
    pub signature: [u8; 64],
    pub frontier: Vec<[u8; 32]>,
    /// Records in the file after that checkpoint (they leave the log).
    pub unsigned: u64,
}

impl ResumePoint {
    /// The bundle's `LogResume` entry for it.
    pub fn entry(&self) -> Vec<u8> {
        rvm_abi::bundle::LogResume::encode(self.size, &self.head, &self.root, &self.signature, &self.frontier)
    }
}

/// Where the log at `path` (of log id `log`) continues, checked: the
/// whole file verifies under `key`, it has a signed checkpoint, and — when
/// `reached` names a checkpoint (size, root) the log is known to have had
/// — that checkpoint is in it (the file was not rolled back past it).
pub fn resume_point(path: &Path, log: u32, key: &PublicKey, reached: Option<(u64, [u8; 32])>) -> Result<ResumePoint, HostError> {
    let loaded = load(path, Some(*key), Some(LogId(log)))?;
    let opts = VerifyOptions { key: Some(*key), log: Some(LogId(log)), allow_unsigned_tail: true, ..VerifyOptions::default() };
    let report = verify_loaded(&loaded, &opts);
    if !report.is_ok() {
        return Err(HostError::LogDoesNotVerify { path: path.into(), reason: report.to_string().trim_end().to_string() });
    }
    if let Some((size, root)) = reached {
        let kept = loaded.checkpoints.iter().any(|c| c.checkpoint.size == size && c.checkpoint.root.0 == root);
        if !kept {
            return Err(HostError::LogDoesNotVerify {
                path: path.into(),
                reason: format!("it was rolled back: its checkpoint at {size} records, which the instance recorded, is not in it"),
            });
        }
    }
    let Some(cp) = loaded.checkpoints.last() else {
        return Err(HostError::LogDoesNotVerify { path: path.into(), reason: "it has no signed checkpoint to continue from".into() });
    };
    let size = cp.checkpoint.size;
    let mut range = CompactRange::new();
    for i in 0..size {
        let rec = loaded.record(i).ok_or_else(|| HostError::LogDoesNotVerify {
            path: path.into(),
            reason: format!("record {i}, which its last checkpoint covers, is missing"),
        })?;
        range.push(rec);
    }
    if range.root() != cp.checkpoint.root {
        return Err(HostError::LogDoesNotVerify { path: path.into(), reason: "its records do not make its last checkpoint's root".into() });
    }
    Ok(ResumePoint {
        log,
        size,
        head: cp.checkpoint.head.0,
        root: cp.checkpoint.root.0,
        signature: cp.signature,
        frontier: range.frontier().iter().map(|h| h.0).collect(),
        unsigned: loaded.record_count() - size,
    })
}
