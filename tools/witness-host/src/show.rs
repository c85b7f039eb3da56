//! `witness show` and `witness export --format jsonl`: records decoded.

use crate::error::HostError;
use crate::log_folder::{LogFiles, LogNames, HYPERVISOR_NAME};
use crate::read::read_checkpoints;
use rvm_abi::witness::{flags, Outcome, WitnessRecord, NO_CAP, RECORD_LEN};
use rvm_abi::ProofTier;
use rvm_witness::{chain_step, Hash};
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::path::Path;

/// One record, decoded for people and for JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShowLine {
    /// Position in the file.
    pub index: u64,
    /// The record's own `seq` (equal to `index` in a sound log).
    pub seq: u64,
    /// Nanoseconds since the hypervisor booted.
    pub time_ns: u64,
    pub partition: u32,
    pub partition_name: String,
    /// Operation name (`WitnessOp::name`), or `unknown(0x....)`.
    pub op: String,
    pub op_code: u16,
    pub kernel_event: bool,
    /// `P1`..`P3`, or `-` for kernel events.
    pub tier: String,
    /// `Done`, an `HvError` name, or `unknown(n)`.
    pub outcome: String,
    pub outcome_code: i16,
    /// Capability id (`generation << 16 | index`), if any.
    pub cap: Option<u32>,
    pub flags: u16,
    pub checkpointed: bool,
    /// Hex of the 16-byte argument digest.
    pub args: String,
    /// Hex of the 16-byte link to the previous head.
    pub prev: String,
    /// Chain head after this record, recomputed from the file.
    pub head: String,
    /// The record could not be decoded (unknown version): only `index` and
    /// `head` are meaningful.
    pub undecodable: bool,
}

fn partition_name(p: u32, names: &LogNames, files: &LogFiles, own: Option<u32>) -> String {
    if let Some(n) = names.get(p) {
        return n.to_string();
    }
    if own == Some(p) {
        return files.name.clone();
    }
    if p == rvm_abi::witness::HYPERVISOR_LOG {
        return HYPERVISOR_NAME.to_string();
    }
    format!("partition-{p}")
}

/// Decode a record (any 64 bytes) for display.
pub fn decode_line(
    index: u64,
    bytes: &[u8; RECORD_LEN],
    head: &Hash,
    name_of: impl Fn(u32) -> String,
) -> ShowLine {
    match WitnessRecord::from_bytes(bytes) {
        Ok(r) => {
            let (op, kernel_event) = match r.operation() {
                Some(op) => (
                    op.name().to_string(),
                    matches!(op, rvm_abi::WitnessOp::Event(_)),
                ),
                None => (format!("unknown({:#06x})", r.op), r.op & 0x8000 != 0),
            };
            let tier = match ProofTier::from_u8(r.tier) {
                Some(t) => t.name().to_string(),
                None if r.tier == 0 => "-".to_string(),
                None => format!("tier{}", r.tier),
            };
            let outcome = match r.outcome() {
                Some(Outcome::Done) => "Done".to_string(),
                Some(Outcome::Denied(e)) => e.name().to_string(),
                None => format!("unknown({})", r.outcome),
            };
            ShowLine {
                index,
                seq: r.seq,
                time_ns: r.timestamp,
                partition: r.partition,
                partition_name: name_of(r.partition),
                op,
                op_code: r.op,
                kernel_event,
                tier,
                outcome,
                outcome_code: r.outcome,
                cap: (r.cap != NO_CAP).then_some(r.cap),
                flags: r.flags,
                checkpointed: r.flags & flags::CHECKPOINTED != 0,
                args: rvm_abi::hex::to_string(&r.args),
                prev: rvm_abi::hex::to_string(&r.prev),
                head: head.to_string(),
                undecodable: false,
            }
        }
        Err(_) => ShowLine {
            index,
            seq: index,
            time_ns: 0,
            partition: 0,
            partition_name: String::new(),
            op: format!("undecodable (version {})", bytes[0]),
            op_code: 0,
            kernel_event: false,
            tier: "-".into(),
            outcome: "-".into(),
            outcome_code: 0,
            cap: None,
            flags: 0,
            checkpointed: false,
            args: String::new(),
            prev: String::new(),
            head: head.to_string(),
            undecodable: true,
        },
    }
}

impl fmt::Display for ShowLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.time_ns / 1_000_000_000;
        let nanos = self.time_ns % 1_000_000_000;
        write!(
            f,
            "{:>8} {:>6}.{:09}s {:<16} {:<18} {:<4} {:<18}",
            self.seq, secs, nanos, self.partition_name, self.op, self.tier, self.outcome
        )?;
        match self.cap {
            Some(c) => write!(f, " cap {:#010x}", c)?,
            None => write!(f, " cap -")?,
        }
        if self.checkpointed {
            write!(f, " [checkpoint]")?;
        }
        Ok(())
    }
}

/// Read a log file and decode its records. Needs no key: showing is not
/// verifying.
pub fn show(path: &Path, names: &LogNames) -> Result<Vec<ShowLine>, HostError> {
    let files = LogFiles::for_log_path(path)?;
    let records = std::fs::read(&files.log).map_err(HostError::io(&files.log, "read"))?;
    // The log id: for a partition log, the name's id if the caller knows it,
    // else the first checkpoint's origin.
    let own = names
        .id_of(&files.name)
        .or_else(|| {
            read_checkpoints(&files.checkpoints)
                .ok()
                .and_then(|c| c.first().map(|c| c.checkpoint.log.0))
        })
        .or_else(|| {
            let first = records
                .get(..RECORD_LEN)
                .and_then(|b| <&[u8; RECORD_LEN]>::try_from(b).ok())?;
            let r = WitnessRecord::from_bytes(first).ok()?;
            (files.name != HYPERVISOR_NAME).then_some(r.partition)
        });
    let mut head = Hash::ZERO;
    Ok(records
        .chunks_exact(RECORD_LEN)
        .enumerate()
        .map(|(i, c)| {
            let bytes: &[u8; RECORD_LEN] = c.try_into().unwrap_or(&[0; RECORD_LEN]);
            head = chain_step(&head, bytes);
            decode_line(i as u64, bytes, &head, |p| {
                partition_name(p, names, &files, own)
            })
        })
        .collect())
}

/// `witness export --format jsonl`: one JSON object per record to `out`;
/// returns the number written.
pub fn export_jsonl(path: &Path, names: &LogNames, out: &mut dyn Write) -> Result<u64, HostError> {
    let lines = show(path, names)?;
    let mut n = 0;
    for l in &lines {
        let json = serde_json::to_string(l).map_err(|e| HostError::Io {
            path: path.into(),
            op: "encode as JSON",
            source: std::io::Error::other(e),
        })?;
        writeln!(out, "{json}").map_err(HostError::io("<output>", "write"))?;
        n += 1;
    }
    Ok(n)
}
