//! `witness prove` / `witness verify-proof`: RFC 6962 inclusion proofs of
//! one record against a signed checkpoint, and consistency proofs between
//! two checkpoints, as text or JSON.
//!
//! Text form of an inclusion proof (every line ends in `\n`):
//!
//! ```text
//! rvm-witness inclusion proof v1
//! log <log id>
//! seq <record seq>
//! size <tree size = checkpoint size>
//! record <128 hex digits: the 64 record bytes>
//! path <64 hex digits>          (one line per hash, leaf to root)
//! checkpoint
//! <the signed checkpoint note, verbatim>
//! ```
//!
//! The JSON form has the same fields: `format`, `log`, `seq`, `size`,
//! `record`, `leaf_hash`, `path` (array), `root`, `checkpoint` (the note
//! text). `leaf_hash` and `root` are informative; a verifier recomputes
//! them.

use crate::error::HostError;
use crate::read::{load, LoadedLog};
use rvm_abi::witness::{WitnessRecord, RECORD_LEN};
use rvm_witness::merkle::{leaf_hash, root_from_inclusion, verify_consistency};
use rvm_witness::{
    parse_note, Hash, LogId, MerkleTree, ProofError, PublicKey, SignatureError, SignedCheckpoint,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// First line of the text form.
pub const PROOF_TEXT_HEADER: &str = "rvm-witness inclusion proof v1";
/// `format` field of the JSON form.
pub const PROOF_JSON_FORMAT: &str = "rvm-witness-inclusion-proof/1";

/// That record `seq` is leaf `seq` of the tree a signed checkpoint commits to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    pub log: LogId,
    pub seq: u64,
    /// Tree size: the checkpoint's size.
    pub size: u64,
    pub record: [u8; RECORD_LEN],
    /// Audit path, leaf to root.
    pub path: Vec<Hash>,
    /// The checkpoint the proof is against.
    pub checkpoint: SignedCheckpoint,
}

#[derive(Serialize, Deserialize)]
struct ProofJson {
    format: String,
    log: u32,
    seq: u64,
    size: u64,
    record: String,
    leaf_hash: String,
    path: Vec<String>,
    root: String,
    checkpoint: String,
}

fn bad(reason: impl Into<String>) -> HostError {
    HostError::BadProof {
        reason: reason.into(),
    }
}

fn parse_record_hex(s: &str) -> Result<[u8; RECORD_LEN], HostError> {
    let mut r = [0u8; RECORD_LEN];
    rvm_abi::hex::decode(s.as_bytes(), &mut r)
        .ok_or_else(|| bad("the record is not 128 hex digits"))?;
    Ok(r)
}

fn parse_hash_hex(s: &str, what: &str) -> Result<Hash, HostError> {
    Hash::from_hex(s).ok_or_else(|| bad(format!("{what} is not 64 hex digits")))
}

impl InclusionProof {
    /// The JSON form (pretty-printed).
    pub fn to_json(&self) -> String {
        let j = ProofJson {
            format: PROOF_JSON_FORMAT.into(),
            log: self.log.0,
            seq: self.seq,
            size: self.size,
            record: rvm_abi::hex::to_string(&self.record),
            leaf_hash: leaf_hash(&self.record).to_string(),
            path: self.path.iter().map(Hash::to_string).collect(),
            root: self.checkpoint.checkpoint.root.to_string(),
            checkpoint: self.checkpoint.to_note(),
        };
        serde_json::to_string_pretty(&j).unwrap_or_default()
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{PROOF_TEXT_HEADER}\nlog {}\nseq {}\nsize {}\nrecord {}\n",
            self.log,
            self.seq,
            self.size,
            rvm_abi::hex::to_string(&self.record)
        );
        for p in &self.path {
            s.push_str(&format!("path {p}\n"));
        }
        s.push_str("checkpoint\n");
        s.push_str(&self.checkpoint.to_note());
        s
    }

    /// Parse either form (JSON if it starts with `{`).
    pub fn parse(text: &str) -> Result<Self, HostError> {
        if text.trim_start().starts_with('{') {
            Self::from_json(text)
        } else {
            Self::from_text(text)
        }
    }

    /// Parse the JSON form.
    pub fn from_json(text: &str) -> Result<Self, HostError> {
        let j: ProofJson = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if j.format != PROOF_JSON_FORMAT {
            return Err(bad(format!(
                "format {:?} is not {PROOF_JSON_FORMAT}",
                j.format
            )));
        }
        let path = j
            .path
            .iter()
            .map(|p| parse_hash_hex(p, "a path entry"))
            .collect::<Result<_, _>>()?;
        let checkpoint = parse_note(&j.checkpoint).map_err(|e| bad(format!("checkpoint {e}")))?;
        Ok(Self {
            log: LogId(j.log),
            seq: j.seq,
            size: j.size,
            record: parse_record_hex(&j.record)?,
            path,
            checkpoint,
        })
    }

    /// Parse the text form.
    pub fn from_text(text: &str) -> Result<Self, HostError> {
        let (head, note) = text
            .split_once("\ncheckpoint\n")
            .ok_or_else(|| bad("no `checkpoint` line"))?;
        let mut lines = head.lines();
        if lines.next() != Some(PROOF_TEXT_HEADER) {
            return Err(bad(format!("the first line is not {PROOF_TEXT_HEADER:?}")));
        }
        let mut field = |name: &str| -> Result<String, HostError> {
            let l = lines
                .next()
                .ok_or_else(|| bad(format!("no `{name}` line")))?;
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| bad(format!("expected `{name} ...`, found {l:?}")))
        };
        let num = |s: String, what: &str| {
            s.parse::<u64>()
                .map_err(|_| bad(format!("{what} is not a number")))
        };
        let log =
            u32::try_from(num(field("log")?, "log")?).map_err(|_| bad("log is out of range"))?;
        let seq = num(field("seq")?, "seq")?;
        let size = num(field("size")?, "size")?;
        let record = parse_record_hex(&field("record")?)?;
        let mut path = Vec::new();
        for l in lines {
            let h = l
                .strip_prefix("path ")
                .ok_or_else(|| bad(format!("expected `path <hash>`, found {l:?}")))?;
            path.push(parse_hash_hex(h, "a path entry")?);
        }
        let checkpoint = parse_note(note).map_err(|e| bad(format!("checkpoint {e}")))?;
        Ok(Self {
            log: LogId(log),
            seq,
            size,
            record,
            path,
            checkpoint,
        })
    }
}

/// Why a proof was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofFailure {
    /// The checkpoint's signature does not verify under the key.
    Signature(SignatureError),
    /// The proof is for another log than the checkpoint.
    WrongLog { proof: LogId, checkpoint: LogId },
    /// The proof's tree size is not the checkpoint's size.
    WrongSize { proof: u64, checkpoint: u64 },
    /// The record's own `seq` is not the leaf index claimed.
    SeqMismatch { claimed: u64, record: u64 },
    /// The record does not belong to the log (partition or version).
    NotThisLog,
    /// The audit path does not lead to the checkpoint's root.
    Path(ProofError),
}

impl fmt::Display for ProofFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofFailure::Signature(e) => write!(f, "the checkpoint: {e}"),
            ProofFailure::WrongLog { proof, checkpoint } => {
                write!(
                    f,
                    "the proof is for log {proof}, the checkpoint for log {checkpoint}"
                )
            }
            ProofFailure::WrongSize { proof, checkpoint } => {
                write!(
                    f,
                    "the proof is against size {proof}, the checkpoint has size {checkpoint}"
                )
            }
            ProofFailure::SeqMismatch { claimed, record } => {
                write!(
                    f,
                    "the proof claims seq {claimed}, the record says {record}"
                )
            }
            ProofFailure::NotThisLog => write!(f, "the record does not belong to this log"),
            ProofFailure::Path(e) => write!(f, "{e}"),
        }
    }
}

/// What a verified proof establishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProvenRecord {
    pub log: LogId,
    pub seq: u64,
    pub size: u64,
    pub root: Hash,
    pub record: WitnessRecord,
}

/// Check `proof` against `checkpoint` (which must be signed by `key`).
pub fn verify_proof(
    proof: &InclusionProof,
    checkpoint: &SignedCheckpoint,
    key: &PublicKey,
) -> Result<ProvenRecord, ProofFailure> {
    checkpoint.verify(key).map_err(ProofFailure::Signature)?;
    let c = &checkpoint.checkpoint;
    if proof.log != c.log {
        return Err(ProofFailure::WrongLog {
            proof: proof.log,
            checkpoint: c.log,
        });
    }
    if proof.size != c.size {
        return Err(ProofFailure::WrongSize {
            proof: proof.size,
            checkpoint: c.size,
        });
    }
    let record = WitnessRecord::from_bytes(&proof.record).map_err(|_| ProofFailure::NotThisLog)?;
    if record.seq != proof.seq {
        return Err(ProofFailure::SeqMismatch {
            claimed: proof.seq,
            record: record.seq,
        });
    }
    if !c.log.admits(record.partition) {
        return Err(ProofFailure::NotThisLog);
    }
    let root = root_from_inclusion(
        &leaf_hash(&proof.record),
        proof.seq,
        proof.size,
        &proof.path,
    )
    .map_err(ProofFailure::Path)?;
    if root != c.root {
        return Err(ProofFailure::Path(ProofError::RootMismatch));
    }
    Ok(ProvenRecord {
        log: c.log,
        seq: proof.seq,
        size: c.size,
        root,
        record,
    })
}

/// Check a proof against the checkpoint it carries.
pub fn verify_proof_embedded(
    proof: &InclusionProof,
    key: &PublicKey,
) -> Result<ProvenRecord, ProofFailure> {
    verify_proof(proof, &proof.checkpoint, key)
}

fn tree_of(loaded: &LoadedLog) -> MerkleTree {
    MerkleTree::from_leaves(loaded.records.chunks_exact(RECORD_LEN))
}

/// The checkpoints in the file that are signed by the key, belong to the
/// log and commit to the records' own Merkle tree.
fn usable_checkpoints<'a>(
    loaded: &'a LoadedLog,
    tree: &MerkleTree,
) -> impl Iterator<Item = &'a SignedCheckpoint> {
    let key = loaded.key;
    let log = loaded.log;
    let roots: Vec<Option<Hash>> = loaded
        .checkpoints
        .iter()
        .map(|c| tree.root(c.checkpoint.size).ok())
        .collect();
    loaded
        .checkpoints
        .iter()
        .zip(roots)
        .filter(move |(c, root)| {
            c.checkpoint.log == log && c.verify(&key).is_ok() && *root == Some(c.checkpoint.root)
        })
        .map(|(c, _)| c)
}

/// Prove record `seq` of a loaded log against the newest checkpoint that
/// covers it. The proof is checked before it is returned.
pub fn prove_loaded(loaded: &LoadedLog, seq: u64) -> Result<InclusionProof, HostError> {
    let path = &loaded.files.log;
    let records = loaded.record_count();
    let record = *loaded.record(seq).ok_or_else(|| HostError::NoSuchRecord {
        path: path.clone(),
        seq,
        records,
    })?;
    let tree = tree_of(loaded);
    let newest_signed = usable_checkpoints(loaded, &tree)
        .map(|c| c.checkpoint.size)
        .max()
        .unwrap_or(0);
    let checkpoint = usable_checkpoints(loaded, &tree)
        .filter(|c| c.checkpoint.size > seq)
        .max_by_key(|c| c.checkpoint.size)
        .copied()
        .ok_or_else(|| {
            if loaded.checkpoints.iter().any(|c| c.checkpoint.size > seq) {
                HostError::LogDoesNotVerify {
                    path: path.clone(),
                    reason: format!(
                        "no checkpoint covering record {seq} matches the records and the key"
                    ),
                }
            } else {
                HostError::NotSigned {
                    path: path.clone(),
                    seq,
                    signed: newest_signed,
                }
            }
        })?;
    let size = checkpoint.checkpoint.size;
    let audit = tree
        .inclusion_proof(seq, size)
        .map_err(|e| HostError::LogDoesNotVerify {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let proof = InclusionProof {
        log: loaded.log,
        seq,
        size,
        record,
        path: audit,
        checkpoint,
    };
    verify_proof(&proof, &checkpoint, &loaded.key).map_err(|e| HostError::LogDoesNotVerify {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(proof)
}

/// `witness prove --seq N <log>`: read the log and prove record `seq`.
pub fn prove(path: &Path, seq: u64) -> Result<InclusionProof, HostError> {
    prove_loaded(&load(path, None, None)?, seq)
}

/// That the tree of one checkpoint is a prefix of the tree of a later one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old: SignedCheckpoint,
    pub new: SignedCheckpoint,
    pub path: Vec<Hash>,
}

/// Prove that checkpoint sizes `old` and `new` of a loaded log are
/// consistent (both must be checkpoints in the file).
pub fn prove_consistency_loaded(
    loaded: &LoadedLog,
    old: u64,
    new: u64,
) -> Result<ConsistencyProof, HostError> {
    let path = &loaded.files.log;
    let tree = tree_of(loaded);
    let find = |size: u64| {
        usable_checkpoints(loaded, &tree)
            .find(|c| c.checkpoint.size == size)
            .copied()
            .ok_or_else(|| HostError::LogDoesNotVerify {
                path: path.clone(),
                reason: format!("no verified checkpoint of size {size}"),
            })
    };
    let (o, n) = (find(old)?, find(new)?);
    let proof = tree
        .consistency_proof(old, new)
        .map_err(|e| HostError::LogDoesNotVerify {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let cp = ConsistencyProof {
        old: o,
        new: n,
        path: proof,
    };
    verify_consistency_proof(&cp, &loaded.key).map_err(|e| HostError::LogDoesNotVerify {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(cp)
}

/// Check a consistency proof: both checkpoints signed by `key`, same log,
/// and the old tree a prefix of the new.
pub fn verify_consistency_proof(
    proof: &ConsistencyProof,
    key: &PublicKey,
) -> Result<(), ProofFailure> {
    proof.old.verify(key).map_err(ProofFailure::Signature)?;
    proof.new.verify(key).map_err(ProofFailure::Signature)?;
    let (o, n) = (&proof.old.checkpoint, &proof.new.checkpoint);
    if o.log != n.log {
        return Err(ProofFailure::WrongLog {
            proof: o.log,
            checkpoint: n.log,
        });
    }
    verify_consistency(o.size, n.size, &o.root, &n.root, &proof.path).map_err(ProofFailure::Path)
}
