//! RVM's witness log: the hash chain every privileged operation is recorded
//! in, its signed checkpoints, RFC 6962 Merkle proofs, and the offline
//! verifier.
//!
//! The record layout (64 bytes, little-endian, version 1) is defined once,
//! in [`rvm_abi::witness`]; this crate never restates it.
//!
//! # The chain
//!
//! Each partition has its own log, numbered by its partition id; the
//! hypervisor has one more, log 0 ([`LogId::HYPERVISOR`]), for its own events.
//! A partition's log takes only records naming that partition; the
//! hypervisor's may name any partition an event concerns.
//!
//! ```text
//! head[-1] = 32 zero bytes
//! head[i]  = SHA-256(head[i-1] ‖ record[i])      all 64 record bytes
//! record[i].seq  = i
//! record[i].prev = head[i-1][0..16]
//! ```
//!
//! [`WitnessLog::append`] fills `seq` and `prev`, advances the head and keeps
//! the record in a bounded ring until the console streamer drains it
//! ([`WitnessLog::drain_next`]). The kernel appends **before** the operation
//! takes effect, and the append is **fail-closed**: when the ring is full of
//! undrained records (the host is not reading the console), when the record
//! is malformed, or when a due checkpoint has not been signed, the append
//! fails, nothing changes, and the operation must not happen
//! ([`WitnessError`] converts to [`rvm_abi::HvError::WitnessUnavailable`]).
//!
//! # Checkpoints
//!
//! A [`CheckpointPolicy`] says when a checkpoint is due: every N records
//! (default 1024), after each proof-tier-3 operation and after the shutdown
//! event. The record that triggers one carries the `CHECKPOINTED` flag, and
//! the kernel then calls [`WitnessLog::checkpoint`], which signs
//! (log id, size, Merkle root, chain head) with Ed25519. The signed text is
//! a C2SP signed note in the `tlog-checkpoint` shape; see [`checkpoint`] for
//! the exact bytes:
//!
//! ```text
//! rvm.witness/<log id>
//! <size>
//! <base64 Merkle root>
//! head <base64 chain head>
//!
//! — rvm.witness <base64(4-byte key id ‖ 64-byte signature)>
//! ```
//!
//! On the console UART a checkpoint travels as an `@C` frame
//! ([`rvm_abi::frame`]) carrying the same fields; the host rebuilds the note
//! text from it.
//!
//! # The signing key
//!
//! One key signs every log's checkpoints: [`CheckpointSigner::from_seed`]
//! over a 32-byte seed. For now the loader puts the seed into the bundle as
//! an [`rvm_abi::bundle::EntryKind::WitnessKeySeed`] entry, so the host that
//! builds the bundle knows the secret: that is enough to detect changes made
//! after the fact by anyone else, not to protect against the bundle's
//! author. On boards a per-device secret (a board key in fuses or a secure
//! element, or a key derived from it) replaces the bundle seed; nothing else
//! changes. The public key is announced at boot with an `@K` frame; its
//! fingerprint ([`PublicKey::fingerprint`], SHA-256 of the 32 key bytes,
//! shown as hex) is what the hypervisor prints at boot and what a manifest's
//! `witness_key_fingerprint` is compared with. In signed notes the key is
//! named `rvm.witness` with key id = first 4 bytes of
//! `SHA-256("rvm.witness" ‖ "\n" ‖ 0x01 ‖ public key)`; its verifier-key
//! text is `rvm.witness+<key id hex>+<base64(0x01 ‖ public key)>`.
//!
//! # Merkle tree
//!
//! [`merkle`] is RFC 6962 over the record bytes: leaf `SHA-256(0x00 ‖
//! record)`, node `SHA-256(0x01 ‖ left ‖ right)`. The kernel keeps an O(log n)
//! [`merkle::CompactRange`]; the records are folded into it as the streamer
//! drains them (and the rest at checkpoint time), so the append path costs
//! one SHA-256. Checkpoints carry the root, so an inclusion proof for one
//! record, or a consistency proof between two checkpoints, is checked
//! against a signed checkpoint alone.
//!
//! # Files on the host
//!
//! The host crate (`rvm-witness-host`) keeps, under `$RVM_HOME/witness/`
//! (default `~/.rvm/witness/`), for a partition named `<name>` (the
//! hypervisor's log is `hypervisor`):
//!
//! * `<name>.log` — the raw 64-byte records back to back, nothing else;
//! * `<name>.checkpoints` — the signed notes, one after another;
//! * `<name>.pub` — the verifier key line shown above.
//!
//! # Verification
//!
//! [`verify::verify_log`] walks records and checkpoints together and stops at
//! the first problem, naming the record (or checkpoint) and the reason:
//! version, seq gap, broken `prev` link, record from another partition,
//! bad signature, checkpoint of another log, rolled-back checkpoint, head
//! or root mismatch, truncation after a checkpoint, missing checkpoint.
//! Records after the newest checkpoint are reported as not yet signed: a
//! change to the very last of them is only caught once a checkpoint covers
//! it.
//!
//! # Building for EL2
//!
//! The crate builds for `aarch64-unknown-none-softfloat` as it is (`sha2`
//! and `ed25519-dalek` without default features). There SHA-256 is
//! `sha2`'s portable code: its ARMv8 SHA-2 instruction path needs `sha2`'s
//! `asm` feature (which builds C with an AArch64 cross compiler) and a
//! `+sha2` target feature, since run-time detection is not available on a
//! bare-metal target. The `precomputed-tables` feature adds ~30 KiB of
//! Ed25519 tables and halves the time to sign a checkpoint.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod base64;
pub mod chain;
pub mod checkpoint;
pub mod hash;
pub mod key;
pub mod log;
pub mod merkle;
mod ring;
pub mod sha256;
pub mod verify;

pub use chain::chain_step;
pub use checkpoint::{
    parse_note, parse_notes, Checkpoint, CheckpointPolicy, NoteError, SignedCheckpoint,
};
pub use hash::Hash;
pub use key::{CheckpointSigner, KeyId, PublicKey, SignatureError};
pub use log::{AppendedRecord, LogConfig, LogId, Outgoing, ResumeError, WitnessError, WitnessLog};
pub use merkle::{CompactRange, MerkleTree, ProofError};
pub use verify::{
    verify_log, FailReason, Location, RootCheck, VerifyFailure, VerifyInput, VerifySummary,
};
