//! What two sides must agree on about recovery and snapshots: the `args`
//! of the recovery steps' witness records, and the canonical encoding a
//! snapshot's state hash is computed over (the kernel hashes it when a
//! snapshot is taken; a host replay recomputes it).

/// The `args` of a `RecoverRestart`, `RecoverRollback`, `RecoverFence`,
/// `RecoverEvict` or `Unfence` record (16 bytes, all little-endian):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | class: 1 = F1 restart, 2 = F2 rollback, 3 = F3 fence, 4 = F4 evict, 5 = unfence |
/// | 1 | 1 | trigger code (see [`trigger`]) |
/// | 2 | 2 | reserved, 0 |
/// | 4 | 4 | committed state items after the step |
/// | 8 | 8 | snapshot id resumed from (0 = the pristine image) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryArgs {
    pub class: u8,
    pub trigger: u8,
    pub committed_items: u32,
    pub snapshot_id: u64,
}

/// The `args` of a `DormantEnter` or `DormantExit` record (16 bytes,
/// little-endian):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | frames: returned to the pool (enter) or taken from it (exit) |
/// | 4 | 4 | committed state items |
/// | 8 | 8 | the snapshot the partition sleeps on / resumes from |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DormantArgs {
    pub frames: u32,
    pub committed_items: u32,
    pub snapshot_id: u64,
}

impl DormantArgs {
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.frames.to_le_bytes());
        b[4..8].copy_from_slice(&self.committed_items.to_le_bytes());
        b[8..16].copy_from_slice(&self.snapshot_id.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[8..16]);
        Self { frames: u32_at(0), committed_items: u32_at(4), snapshot_id: u64::from_le_bytes(id) }
    }
}

/// Class codes of [`RecoveryArgs::class`].
pub mod class {
    pub const RESTART: u8 = 1;
    pub const ROLLBACK: u8 = 2;
    pub const FENCE: u8 = 3;
    pub const EVICT: u8 = 4;
    pub const UNFENCE: u8 = 5;
}

/// Trigger codes of [`RecoveryArgs::trigger`].
pub mod trigger {
    pub const TRAP: u8 = 1;
    pub const RUNTIME_PANIC: u8 = 2;
    pub const RESTORE_FAILED: u8 = 3;
    pub const FAILED_VALIDATION: u8 = 4;
    pub const STAGE2_VIOLATION: u8 = 5;
    pub const HARDWARE_FAULT: u8 = 6;
    pub const HYPERCALL_ABUSE: u8 = 7;
    pub const FENCE_TIMEOUT: u8 = 8;
    pub const OPERATOR: u8 = 9;
}

impl RecoveryArgs {
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.class;
        b[1] = self.trigger;
        b[4..8].copy_from_slice(&self.committed_items.to_le_bytes());
        b[8..16].copy_from_slice(&self.snapshot_id.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let mut items = [0u8; 4];
        items.copy_from_slice(&b[4..8]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[8..16]);
        Self {
            class: b[0],
            trigger: b[1],
            committed_items: u32::from_le_bytes(items),
            snapshot_id: u64::from_le_bytes(id),
        }
    }
}

/// First bytes of the state-hash encoding.
pub const STATE_HASH_DOMAIN: [u8; 16] = *b"RVM-STATE-HASH-1";

/// Feeds the canonical encoding of a snapshot's state to a sink, which
/// hashes it (SHA-256):
///
/// ```text
/// STATE_HASH_DOMAIN
/// image length        u64 LE, then the agent image's bytes as the runtime
///                     handed them over (the engine's own canonical format)
/// item count          u64 LE, then for each committed state item in
///                     ascending byte order of its key:
///                     key length u32 LE, key, value length u32 LE, value
/// ```
///
/// Call [`StateEncoder::image`] until the image's bytes are all fed, then
/// [`StateEncoder::items`] once and [`StateEncoder::item`] per item, in order.
pub struct StateEncoder<F: FnMut(&[u8])> {
    sink: F,
}

impl<F: FnMut(&[u8])> StateEncoder<F> {
    /// Start the encoding of a state whose agent image is `image_len` bytes.
    pub fn new(mut sink: F, image_len: u64) -> Self {
        sink(&STATE_HASH_DOMAIN);
        sink(&image_len.to_le_bytes());
        Self { sink }
    }

    /// The next bytes of the agent image.
    pub fn image(&mut self, bytes: &[u8]) {
        (self.sink)(bytes);
    }

    /// The number of committed items that follow.
    pub fn items(&mut self, count: u64) {
        (self.sink)(&count.to_le_bytes());
    }

    /// One committed item (keys and values are bounded far below 4 GiB by
    /// the store's limits; longer ones saturate the length field).
    pub fn item(&mut self, key: &[u8], value: &[u8]) {
        let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
        (self.sink)(&len(key));
        (self.sink)(key);
        (self.sink)(&len(value));
        (self.sink)(value);
    }
}

/// Domain separation of a committed set's digest ([`encode_committed`]).
pub const COMMITTED_DOMAIN: [u8; 16] = *b"RVM-COMMITTED-01";

/// Feed the canonical encoding of a partition's committed set to `sink`,
/// which hashes it (SHA-256: the set's digest, which a `CommittedSet`
/// record's `args` begin with and a `StateBegins` frame carries whole):
///
/// ```text
/// COMMITTED_DOMAIN
/// item count          u64 LE, then each item in ascending byte order of
///                     its key, as [`StateEncoder::item`] writes it
/// ```
pub fn encode_committed<'a>(sink: &mut dyn FnMut(&[u8]), count: u64, items: impl Iterator<Item = (&'a [u8], &'a [u8])>) {
    sink(&COMMITTED_DOMAIN);
    sink(&count.to_le_bytes());
    let mut enc = StateEncoder { sink };
    for (k, v) in items {
        enc.item(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_args_round_trip() {
        let a = RecoveryArgs { class: class::ROLLBACK, trigger: trigger::TRAP, committed_items: 42, snapshot_id: 9 };
        assert_eq!(RecoveryArgs::from_bytes(&a.to_bytes()), a);
        assert_eq!(a.to_bytes()[2..4], [0, 0]);
    }

    #[test]
    fn the_encoding_is_what_the_doc_says() {
        let mut out = [0u8; 128];
        let mut n = 0;
        {
            let mut e = StateEncoder::new(
                |b: &[u8]| {
                    out[n..n + b.len()].copy_from_slice(b);
                    n += b.len();
                },
                3,
            );
            e.image(b"ab");
            e.image(b"c");
            e.items(1);
            e.item(b"k", b"vv");
        }
        let mut want = [0u8; 128];
        let parts: [&[u8]; 8] = [&STATE_HASH_DOMAIN, &3u64.to_le_bytes(), b"abc", &1u64.to_le_bytes(), &1u32.to_le_bytes(), b"k", &2u32.to_le_bytes(), b"vv"];
        let mut m = 0;
        for p in parts {
            want[m..m + p.len()].copy_from_slice(p);
            m += p.len();
        }
        assert_eq!(n, m);
        assert_eq!(out[..n], want[..m]);
    }
}
