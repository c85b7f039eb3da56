//! Host side of RVM's witness log.
//!
//! * [`demux`] — split the console UART stream into console lines, witness
//!   frames and damaged frame lines;
//! * [`log_folder`] — file a run's frames under `$RVM_HOME/witness/` (file
//!   formats documented there) with [`Recorder`];
//! * [`report`] — `witness verify`: [`verify`] a log file, naming the first
//!   bad record;
//! * [`show`](mod@show) — `witness show` and `witness export --format jsonl`;
//! * [`proof`] — `witness prove` and `witness verify-proof`;
//! * [`resume`] — where a filed log continues in a new boot;
//! * [`files`] — exclusive, no-follow file creation and atomic writes (also
//!   used by the loader for everything it writes).
//!
//! Chain, checkpoint note format and signing key are described in the
//! `rvm-witness` crate.
#![forbid(unsafe_code)]

pub mod demux;
pub mod error;
pub mod files;
pub mod log_folder;
pub mod proof;
pub mod read;
pub mod report;
pub mod resume;
pub mod show;

pub use demux::{DamageReason, DamagedLine, Demux, StreamItem};
pub use error::HostError;
pub use log_folder::{
    home_from_env, witness_dir, FiledLog, LogFiles, LogNames, Recorder, RecorderSummary,
};
pub use proof::{
    prove, prove_consistency_loaded, prove_loaded, verify_consistency_proof, verify_proof,
    verify_proof_embedded, ConsistencyProof, InclusionProof, ProofFailure, ProvenRecord,
};
pub use read::{load, read_checkpoints, read_key, KeySource, LoadedLog, LogIdSource};
pub use report::{verify, verify_loaded, KeyCheck, VerifyOptions, VerifyReport};
pub use resume::{resume_point, ResumePoint};
pub use show::{export_jsonl, show, ShowLine};
