//! The 64-byte witness record (format version 1).
//!
//! Every privileged hypercall, allowed or denied, and every kernel decision
//! about a partition appends one record to a hash chain:
//! `head[i] = SHA-256(head[i-1] ‖ record[i])` over all 64 bytes, with
//! `head[-1]` = 32 zero bytes. Each record also carries the first 16 bytes of
//! `head[i-1]` (`prev`), so a record out of place is visible on its own.
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 1 | `version` | [`RECORD_VERSION`] |
//! | 1 | 1 | `tier` | proof tier 1–3 the operation ran at; 0 for kernel events |
//! | 2 | 2 | `op` | [`WitnessOp`] code: a hypercall number, or `0x8000+` kernel event |
//! | 4 | 2 | `outcome` | 0 = done, else the negative [`HvError`](crate::HvError) code |
//! | 6 | 2 | `flags` | [`flags`] bits |
//! | 8 | 8 | `seq` | position in this log, from 0 |
//! | 16 | 8 | `timestamp` | nanoseconds since the hypervisor booted |
//! | 24 | 4 | `partition` | partition id; 0 = the hypervisor itself |
//! | 28 | 4 | `cap` | capability handle (generation << 16 \| index); `u32::MAX` = none |
//! | 32 | 16 | `args` | first 16 bytes of SHA-256 of the arguments (registers, then buffer bytes) |
//! | 48 | 16 | `prev` | first 16 bytes of `head[i-1]` |
//!
//! All integers are little-endian.

use crate::hypercall::Hypercall;

/// Size of one record in bytes.
pub const RECORD_LEN: usize = 64;
/// The layout version this crate writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// `cap` field value for "no capability involved".
pub const NO_CAP: u32 = u32::MAX;
/// `op` of a refused `hvc #imm` with `imm ≠ 0` (only `hvc #0` is a call);
/// its `args` digest covers `x1..x6`, then the immediate (2 bytes) and `x0`
/// (8 bytes). A function ID that names no call is recorded with its low 15
/// bits as `op` (at most `HVC_IMMEDIATE_OP - 1`) and `x0` after `x1..x6`.
pub const HVC_IMMEDIATE_OP: u16 = 0x7fff;
/// Partition id of the hypervisor's own log.
pub const HYPERVISOR_LOG: u32 = 0;

/// Bits of the `flags` field.
pub mod flags {
    /// The record is a kernel decision, not a guest's hypercall.
    pub const KERNEL_EVENT: u16 = 1 << 0;
    /// A signed checkpoint of the head after this record was emitted.
    pub const CHECKPOINTED: u16 = 1 << 1;
    /// A journal entry with the call's input data is bound to this record.
    pub const JOURNALED: u16 = 1 << 2;
    /// The answer of a call made earlier, whose own record is the log's
    /// previous record of the same op (a `ToolCall`'s response).
    pub const ANSWER: u16 = 1 << 3;
}

macro_rules! kernel_events {
    ($( $(#[$doc:meta])* $name:ident = $num:expr, )*) => {
        /// Kernel decisions recorded in the log (codes `0x8000` and up).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum KernelEvent {
            $( $(#[$doc])* $name = $num, )*
        }

        impl KernelEvent {
            pub const ALL: &'static [KernelEvent] = &[$(KernelEvent::$name,)*];
            pub const fn name(self) -> &'static str {
                match self { $(KernelEvent::$name => stringify!($name),)* }
            }
            pub const fn from_code(n: u16) -> Option<Self> {
                match n { $($num => Some(KernelEvent::$name),)* _ => None }
            }
        }
    };
}

kernel_events! {
    /// The hypervisor started; `args` = digest of the boot configuration.
    Boot = 0x8000,
    /// A partition was created (VMID and stage-2 tables allocated).
    PartitionCreate = 0x8001,
    /// The guest runtime and the agent module were loaded.
    PartitionLoad = 0x8002,
    /// The partition's bundle entry or module was refused.
    PartitionRefused = 0x8003,
    /// The partition's vCPU was first scheduled; `args` = the binding
    /// digest of the handles it started with (see [`crate::journal`]).
    PartitionStart = 0x8004,
    /// The agent finished (its `Exit` call or PSCI `SYSTEM_OFF`).
    PartitionExit = 0x8005,
    /// The partition faulted (stage-2 abort, undefined instruction, SMC...).
    Fault = 0x8010,
    /// F1: the guest was restarted from the pristine image; `args` =
    /// [`RecoveryArgs`](crate::recovery::RecoveryArgs) (as for every recovery step).
    RecoverRestart = 0x8011,
    /// F2: the guest was rolled back to its last snapshot.
    RecoverRollback = 0x8012,
    /// F3: the partition was fenced.
    RecoverFence = 0x8013,
    /// F4: the partition was evicted.
    RecoverEvict = 0x8014,
    /// An operator cleared a fence.
    Unfence = 0x8015,
    /// A signed operator order (`@O` line) was verified and is being
    /// applied; `args` = [`OrderArgs`](crate::frame::OrderArgs). Written
    /// to the target partition's log, before the step it orders.
    OperatorOrder = 0x8016,
    /// An operator order was refused (bad signature, replayed nonce, unknown
    /// partition, nothing to do); `outcome` = the reason, `args` =
    /// [`OrderArgs`](crate::frame::OrderArgs). Written to the target's log,
    /// or the hypervisor's when no partition has that name.
    OrderRefused = 0x8017,
    /// A snapshot was taken; `args` = the first 16 bytes of its state hash
    /// (SHA-256 over [`StateEncoder`](crate::recovery::StateEncoder)'s encoding).
    SnapshotTaken = 0x8020,
    /// A signed checkpoint of this log's head was emitted.
    LogCheckpoint = 0x8021,
    /// This boot continues a log of an earlier boot (the bundle's
    /// `LogResume`, verified): `args` = the log id u32 LE, 4 reserved bytes,
    /// then the records it held, u64 LE. In the hypervisor's log, after its
    /// `Boot` record.
    LogResumed = 0x8022,
    /// A partition's committed set is now the one whose digest
    /// ([`crate::recovery::encode_committed`]) `args` begins with (its
    /// first 16 bytes). Written to the store owner's log, only when the
    /// boot keeps state durably ([`crate::bundle::BOOT_FLAG_SAVE_STATE`]),
    /// after every change: a commit, an F2 rollback or unfence that resumed
    /// a snapshot, and the restore of a kept set at boot
    /// ([`crate::bundle::EntryKind::StateRestore`]). The host's durable copy
    /// is checked against the last one.
    CommittedSet = 0x8023,
    /// A coherence domain split.
    Split = 0x8030,
    /// Two coherence domains merged.
    Merge = 0x8031,
    /// The coherence evaluator decided that a domain should split; `args` as
    /// for `Split` (cut value, internal traffic). A decision, not a move:
    /// `Split` records a split that happened.
    SplitDecided = 0x8032,
    /// The coherence evaluator decided that two domains should merge; `args`
    /// as for `Merge`. A decision, not a move.
    MergeDecided = 0x8033,
    /// A capability was installed from the bundle's table.
    CapInstall = 0x8040,
    /// A PSCI call from a partition was emulated.
    Psci = 0x8050,
    /// A `Dormant`-tier partition went dormant at a turn boundary: its
    /// memory was reclaimed; `args` = [`DormantArgs`](crate::recovery::DormantArgs).
    DormantEnter = 0x8060,
    /// A message woke a dormant partition: it was recreated from the
    /// pristine image and its snapshot; `args` = [`DormantArgs`](crate::recovery::DormantArgs).
    DormantExit = 0x8061,
    /// The hypervisor is powering off.
    Shutdown = 0x80ff,
}

/// What a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WitnessOp {
    Call(Hypercall),
    Event(KernelEvent),
}

impl WitnessOp {
    pub const fn code(self) -> u16 {
        match self {
            WitnessOp::Call(c) => c as u16,
            WitnessOp::Event(e) => e as u16,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        if code & 0x8000 != 0 {
            KernelEvent::from_code(code).map(WitnessOp::Event)
        } else {
            Hypercall::from_number(code).map(WitnessOp::Call)
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            WitnessOp::Call(c) => c.name(),
            WitnessOp::Event(e) => e.name(),
        }
    }
}

/// The result a record states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Denied(crate::HvError),
}

impl Outcome {
    pub fn code(self) -> i16 {
        match self {
            Outcome::Done => 0,
            Outcome::Denied(e) => e.outcome_code(),
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        if code == 0 {
            Some(Outcome::Done)
        } else {
            crate::HvError::from_code(i64::from(code)).map(Outcome::Denied)
        }
    }
}

/// One witness record, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WitnessRecord {
    pub version: u8,
    pub tier: u8,
    pub op: u16,
    pub outcome: i16,
    pub flags: u16,
    pub seq: u64,
    pub timestamp: u64,
    pub partition: u32,
    pub cap: u32,
    pub args: [u8; 16],
    pub prev: [u8; 16],
}

/// Why 64 bytes are not a record this version understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    Version(u8),
}

impl WitnessRecord {
    /// A record with everything but the chain fields (`seq`, `prev`) filled in.
    pub fn new(op: WitnessOp, outcome: Outcome, partition: u32) -> Self {
        let flags = match op {
            WitnessOp::Event(_) => flags::KERNEL_EVENT,
            WitnessOp::Call(_) => 0,
        };
        Self {
            version: RECORD_VERSION,
            tier: 0,
            op: op.code(),
            outcome: outcome.code(),
            flags,
            seq: 0,
            timestamp: 0,
            partition,
            cap: NO_CAP,
            args: [0; 16],
            prev: [0; 16],
        }
    }

    /// The fixed little-endian encoding.
    pub fn to_bytes(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0] = self.version;
        b[1] = self.tier;
        b[2..4].copy_from_slice(&self.op.to_le_bytes());
        b[4..6].copy_from_slice(&self.outcome.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.timestamp.to_le_bytes());
        b[24..28].copy_from_slice(&self.partition.to_le_bytes());
        b[28..32].copy_from_slice(&self.cap.to_le_bytes());
        b[32..48].copy_from_slice(&self.args);
        b[48..64].copy_from_slice(&self.prev);
        b
    }

    /// Decode 64 bytes. Fields are taken as they are; only the version is
    /// checked here (chain checks belong to the verifier).
    pub fn from_bytes(b: &[u8; RECORD_LEN]) -> Result<Self, RecordError> {
        if b[0] != RECORD_VERSION {
            return Err(RecordError::Version(b[0]));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let mut args = [0u8; 16];
        args.copy_from_slice(&b[32..48]);
        let mut prev = [0u8; 16];
        prev.copy_from_slice(&b[48..64]);
        Ok(Self {
            version: b[0],
            tier: b[1],
            op: u16_at(2),
            outcome: i16::from_le_bytes([b[4], b[5]]),
            flags: u16_at(6),
            seq: u64_at(8),
            timestamp: u64_at(16),
            partition: u32_at(24),
            cap: u32_at(28),
            args,
            prev,
        })
    }

    pub fn operation(&self) -> Option<WitnessOp> {
        WitnessOp::from_code(self.op)
    }

    pub fn outcome(&self) -> Option<Outcome> {
        Outcome::from_code(self.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_every_field() {
        let mut r = WitnessRecord::new(
            WitnessOp::Call(Hypercall::ChannelSend),
            Outcome::Denied(crate::HvError::NoRights),
            3,
        );
        r.tier = 2;
        r.seq = 0x0102_0304_0506_0708;
        r.timestamp = 99;
        r.cap = 0x0001_0002;
        r.args = [0xaa; 16];
        r.prev = [0x55; 16];
        let b = r.to_bytes();
        assert_eq!(&b[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(i16::from_le_bytes([b[4], b[5]]), -5);
        assert_eq!(WitnessRecord::from_bytes(&b), Ok(r));
        assert_eq!(r.operation(), Some(WitnessOp::Call(Hypercall::ChannelSend)));
        let mut bad = b;
        bad[0] = 2;
        assert_eq!(WitnessRecord::from_bytes(&bad), Err(RecordError::Version(2)));
    }

    #[test]
    fn op_codes_do_not_collide() {
        for &e in KernelEvent::ALL {
            assert_eq!(WitnessOp::from_code(e as u16), Some(WitnessOp::Event(e)));
        }
        for &c in Hypercall::ALL {
            assert_eq!(WitnessOp::from_code(c as u16), Some(WitnessOp::Call(c)));
        }
    }
}
