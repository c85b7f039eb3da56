//! The bundle: everything the hypervisor runs, in one image that the loader
//! writes and the hypervisor receives as its initrd.
//!
//! ```text
//! header   32 bytes  magic "RVMBNDL\0", version u32, entry count u32,
//!                    total length u64, reserved u64
//! entries  16 bytes each: kind u16, flags u16, owner u32, offset u32, length u32
//! payloads each at an 8-byte aligned offset from the start of the bundle
//! ```
//!
//! `owner` is the index of the partition (in bundle order of the
//! [`EntryKind::Partition`] entries) an entry belongs to, or [`GLOBAL`].
//! All integers are little-endian. The parser checks every offset and length
//! against the bundle; nothing in a bundle is trusted.

/// First eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"RVMBNDL\0";
/// Format version this crate writes and reads.
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
pub const ENTRY_LEN: usize = 16;
/// Owner of entries that belong to no partition.
pub const GLOBAL: u32 = u32::MAX;
/// Most entries a bundle may carry.
pub const MAX_ENTRIES: u32 = 1024;

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum EntryKind {
    /// The EL1 guest runtime, an AArch64 ELF executable (global).
    GuestRuntime = 1,
    /// A [`PartitionDesc`] (owner = its own index).
    Partition = 2,
    /// An agent's WebAssembly module (owner = its partition). A partition
    /// may carry several: each is one agent of the partition's coherence
    /// domain, its *slot* the module's position among the partition's
    /// `Wasm` entries in bundle order (slot 0 first). At most
    /// [`MAX_AGENTS_PER_PARTITION`].
    Wasm = 3,
    /// A [`CapDesc`] installed into the owner's capability table.
    Capability = 4,
    /// An Ed25519 public key authorising the owner's P3 operations (32 bytes).
    AuthorityKey = 5,
    /// A [`ChannelDesc`] connecting two partitions (global).
    Channel = 6,
    /// 32-byte seed of the hypervisor's witness checkpoint signing key (global).
    WitnessKeySeed = 7,
    /// A raw EL1 program (AArch64 ELF) that the owner runs instead of the
    /// shared guest runtime: arch tests and hostile test guests.
    GuestImage = 8,
    /// A [`BootConfig`] (global, at most one).
    BootConfig = 9,
    /// The Ed25519 public key (32 bytes) whose signature an operator's order
    /// (`@O` line, [`crate::frame::OrderFrame`]) must carry (global, at most
    /// one; without it the hypervisor refuses every order).
    OperatorKey = 10,
    /// An [`AgentChannelDesc`] connecting two agents (global).
    AgentChannel = 11,
    /// [`BOOT_ID_LEN`] random bytes, fresh for every bundle the host builds
    /// (global, at most one). Operator orders and P3 approvals sign it (the
    /// orders through the bundle digest, the approvals explicitly in
    /// [`crate::approval::ApprovalMessage`]), so neither is accepted by a
    /// boot of another bundle, even a byte-identical rebuild. Without it the
    /// hypervisor refuses every P3 approval and every order.
    BootId = 12,
    /// A [`LogResume`]: the log continues an earlier boot's (owner = its
    /// partition, or [`GLOBAL`] for the hypervisor's log). At most one per
    /// log.
    LogResume = 13,
    /// The ids of the bundle's partitions (global, at most one): u32 LE
    /// each, in partition order, strictly increasing, from 1 to
    /// [`MAX_PARTITION_ID`]. Without it partition `n` has id `n + 1`. Ids
    /// below the largest that no partition has are vacant: an instance that
    /// restarts keeps each tenant's id (and so its log) where it was.
    PartitionIds = 14,
    /// The first id a partition admitted while this boot runs may get
    /// (global, at most one; u32 LE, above every id of the bundle, at most
    /// [`MAX_PARTITION_ID`] + 1): the ids below it that no partition has
    /// are vacant, so an id a tenant had in an earlier boot of an instance
    /// is never another tenant's.
    FirstFreeId = 15,
    /// A [`StateRestore`]: the committed set partition `owner` had when an
    /// earlier boot of an instance ended, as the host kept it (at most one
    /// per partition, and only beside its [`EntryKind::LogResume`]). The
    /// hypervisor takes it only if the witness record it names is in the
    /// resumed log and carries its digest.
    StateRestore = 16,
    /// The claim of one of the owner's `Resource` capabilities: the
    /// position of its [`EntryKind::Capability`] entry among the owner's
    /// capability entries (u32 LE), then the resource pattern as text
    /// (UTF-8, 1 to [`MAX_CLAIM`] bytes) whose SHA-256 begins with the
    /// capability's `resource_digest`. The kernel matches tool calls
    /// against it ([`crate::tool`]). At most one per capability.
    Claim = 17,
}

/// Longest claim pattern a [`EntryKind::Claim`] entry carries.
pub const MAX_CLAIM: usize = 256;

/// The largest partition id a bundle may give (ids are VMIDs).
pub const MAX_PARTITION_ID: u32 = 255;

/// The start of a log that continues an earlier boot's: that boot's last
/// signed checkpoint of it and the right edge of its Merkle tree.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | size (records so far), u64 LE |
/// | 8 | 32 | chain head after the last record |
/// | 40 | 32 | Merkle root |
/// | 72 | 64 | the checkpoint's Ed25519 signature |
/// | 136 | 32 × popcount(size) | the roots of the tree's perfect subtrees, largest first |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogResume<'a> {
    pub size: u64,
    pub head: [u8; 32],
    pub root: [u8; 32],
    pub signature: [u8; 64],
    frontier: &'a [u8],
}

/// Bytes of a [`LogResume`] before its frontier.
pub const LOG_RESUME_FIXED: usize = 136;

impl<'a> LogResume<'a> {
    /// Read one; `None` if its length is not what its size calls for.
    pub fn from_bytes(b: &'a [u8]) -> Option<Self> {
        let size = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        if b.len() != LOG_RESUME_FIXED + 32 * size.count_ones() as usize {
            return None;
        }
        Some(Self {
            size,
            head: b[8..40].try_into().ok()?,
            root: b[40..72].try_into().ok()?,
            signature: b[72..136].try_into().ok()?,
            frontier: &b[LOG_RESUME_FIXED..],
        })
    }

    /// The frontier's hashes, largest subtree first.
    pub fn frontier(&self) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.frontier.chunks_exact(32).filter_map(|c| c.try_into().ok())
    }

    /// Write one (host side).
    #[cfg(feature = "alloc")]
    pub fn encode(size: u64, head: &[u8; 32], root: &[u8; 32], signature: &[u8; 64], frontier: &[[u8; 32]]) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec::Vec::with_capacity(LOG_RESUME_FIXED + 32 * frontier.len());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(head);
        v.extend_from_slice(root);
        v.extend_from_slice(signature);
        for h in frontier {
            v.extend_from_slice(h);
        }
        v
    }
}

/// A committed set an instance restores, and the witness record that
/// vouches for it.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | seq of the record in the partition's resumed log, u64 LE |
/// | 8 | 64 | the record (a `CommittedSet` event of the partition) |
/// | 72 | 4 | proof length n, u32 LE |
/// | 76 | 32 × n | its Merkle inclusion proof in the tree the log resumes |
/// | … | 4 | item count, u32 LE |
/// | … | | each item: key length u16 LE, key, value length u32 LE, value; keys strictly ascending |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRestore<'a> {
    pub seq: u64,
    pub record: [u8; 64],
    proof: &'a [u8],
    items: &'a [u8],
    count: u32,
}

/// Most hashes an inclusion proof holds (a tree of at most 2^64 leaves).
pub const MAX_PROOF_HASHES: usize = 64;

impl<'a> StateRestore<'a> {
    /// Read one; `None` unless every field is whole and the keys are
    /// non-empty and strictly ascending.
    pub fn from_bytes(b: &'a [u8]) -> Option<Self> {
        let seq = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let record: [u8; 64] = b.get(8..72)?.try_into().ok()?;
        let n = u32::from_le_bytes(b.get(72..76)?.try_into().ok()?) as usize;
        if n > MAX_PROOF_HASHES {
            return None;
        }
        let proof = b.get(76..76 + 32 * n)?;
        let at = 76 + 32 * n;
        let count = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        let items = &b[at + 4..];
        let r = Self { seq, record, proof, items, count };
        // Walk them once: whole, and in order.
        let mut walked = 0u32;
        let mut last: Option<&[u8]> = None;
        let mut rest = items;
        while !rest.is_empty() {
            let (k, v, tail) = Self::split_item(rest)?;
            if k.is_empty() || last.is_some_and(|l| l >= k) {
                return None;
            }
            let _ = v;
            last = Some(k);
            rest = tail;
            walked = walked.checked_add(1)?;
        }
        (walked == count).then_some(r)
    }

    fn split_item(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
        let kl = usize::from(u16::from_le_bytes(b.get(0..2)?.try_into().ok()?));
        let key = b.get(2..2 + kl)?;
        let vl = u32::from_le_bytes(b.get(2 + kl..6 + kl)?.try_into().ok()?) as usize;
        let value = b.get(6 + kl..(6 + kl).checked_add(vl)?)?;
        Some((key, value, &b[6 + kl + vl..]))
    }

    /// The inclusion proof's hashes, in order.
    pub fn proof(&self) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.proof.chunks_exact(32).filter_map(|c| c.try_into().ok())
    }

    /// How many items.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Every item, in ascending key order.
    pub fn items(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut rest = self.items;
        core::iter::from_fn(move || {
            let (k, v, tail) = Self::split_item(rest)?;
            rest = tail;
            Some((k, v))
        })
    }

    /// Write one (host side): `items` in ascending key order.
    #[cfg(feature = "alloc")]
    pub fn encode(seq: u64, record: &[u8; 64], proof: &[[u8; 32]], items: &[(&[u8], &[u8])]) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec::Vec::new();
        v.extend_from_slice(&seq.to_le_bytes());
        v.extend_from_slice(record);
        v.extend_from_slice(&(proof.len() as u32).to_le_bytes());
        for h in proof {
            v.extend_from_slice(h);
        }
        v.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for (k, val) in items {
            v.extend_from_slice(&(k.len() as u16).to_le_bytes());
            v.extend_from_slice(k);
            v.extend_from_slice(&(val.len() as u32).to_le_bytes());
            v.extend_from_slice(val);
        }
        v
    }
}

/// Length of a [`EntryKind::BootId`] entry.
pub const BOOT_ID_LEN: usize = 32;

impl EntryKind {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => EntryKind::GuestRuntime,
            2 => EntryKind::Partition,
            3 => EntryKind::Wasm,
            4 => EntryKind::Capability,
            5 => EntryKind::AuthorityKey,
            6 => EntryKind::Channel,
            7 => EntryKind::WitnessKeySeed,
            8 => EntryKind::GuestImage,
            9 => EntryKind::BootConfig,
            10 => EntryKind::OperatorKey,
            11 => EntryKind::AgentChannel,
            12 => EntryKind::BootId,
            13 => EntryKind::LogResume,
            14 => EntryKind::PartitionIds,
            15 => EntryKind::FirstFreeId,
            16 => EntryKind::StateRestore,
            17 => EntryKind::Claim,
            _ => return None,
        })
    }
}

/// Why a bundle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    TooShort,
    BadMagic,
    Version(u32),
    TooManyEntries(u32),
    /// Entry `n` points outside the bundle or is misaligned.
    EntryBounds(u32),
    /// Entry `n` has an unknown kind.
    EntryKind(u32),
    /// Entry `n` has the wrong size for its kind.
    EntrySize(u32),
    /// Entry `n` names a partition that does not exist.
    EntryOwner(u32),
    /// Partition `n`'s name is not a safe identifier.
    PartitionName(u32),
    /// The partition ids are not one per partition, strictly increasing,
    /// within 1..=[`MAX_PARTITION_ID`]; or a log is resumed twice.
    PartitionIds,
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BundleError::TooShort => write!(f, "shorter than its header"),
            BundleError::BadMagic => write!(f, "not an RVM bundle (bad magic)"),
            BundleError::Version(v) => write!(f, "format version {v} is not supported"),
            BundleError::TooManyEntries(n) => write!(f, "{n} entries (at most {MAX_ENTRIES})"),
            BundleError::EntryBounds(n) => write!(f, "entry {n} lies outside the bundle"),
            BundleError::EntryKind(n) => write!(f, "entry {n} has an unknown kind"),
            BundleError::EntrySize(n) => write!(f, "entry {n} has the wrong size for its kind"),
            BundleError::PartitionIds => write!(f, "its partition ids are not one per partition, increasing, within 1..={MAX_PARTITION_ID}, or a log is resumed twice"),
            BundleError::EntryOwner(n) => write!(f, "entry {n} names no partition"),
            BundleError::PartitionName(n) => write!(f, "partition {n} has an unsafe name"),
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

/// Memory tier from the partition manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MemoryTier {
    Hot = 0,
    Warm = 1,
    Dormant = 2,
    Cold = 3,
}

impl MemoryTier {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => MemoryTier::Hot,
            1 => MemoryTier::Warm,
            2 => MemoryTier::Dormant,
            3 => MemoryTier::Cold,
            _ => return None,
        })
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "Hot" => MemoryTier::Hot,
            "Warm" => MemoryTier::Warm,
            "Dormant" => MemoryTier::Dormant,
            "Cold" => MemoryTier::Cold,
            _ => return None,
        })
    }
    pub const fn name(self) -> &'static str {
        match self {
            MemoryTier::Hot => "Hot",
            MemoryTier::Warm => "Warm",
            MemoryTier::Dormant => "Dormant",
            MemoryTier::Cold => "Cold",
        }
    }
}

/// Per-partition recovery thresholds (docs/DESIGN.md section 7). A zero limit or
/// window means the kernel's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryDesc {
    /// The `f1_limit`-th F1-class fault (trap, runtime panic) within
    /// `window_ms` is answered with F2 instead of F1.
    pub f1_limit: u8,
    /// The `f2_limit`-th F2 within `window_ms` is answered with F3 instead.
    pub f2_limit: u8,
    /// The escalation window.
    pub window_ms: u32,
    /// How long a fence may stand before F4 eviction (0 = until the operator acts).
    pub fence_timeout_ms: u32,
    /// Invalid hypercalls (`BadAddress`, `BadHandle`) within one second that
    /// make hypercall abuse (F3): 0 = the kernel's default,
    /// [`RecoveryDesc::ABUSE_NEVER`] = never (a fuzzing test partition).
    pub abuse_limit: u16,
}

impl RecoveryDesc {
    pub const DEFAULT: RecoveryDesc =
        RecoveryDesc { f1_limit: 3, f2_limit: 2, window_ms: 10_000, fence_timeout_ms: 0, abuse_limit: 0 };
    /// `abuse_limit` that turns abuse fencing off.
    pub const ABUSE_NEVER: u16 = u16::MAX;
}

/// A partition as the bundle describes it (104 bytes).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 32 | name, NUL-padded safe identifier |
/// | 32 | 1 | memory tier |
/// | 33 | 1 | deadline urgency, hundredths (0–100) |
/// | 34 | 1 | cut pressure, hundredths (0–100) |
/// | 35 | 1 | default proof tier (1–3) |
/// | 36 | 4 | memory budget for the agent's WASM memory, in 64 KiB WASM pages |
/// | 40 | 8 | fuel per time slice (0 = timer preemption only) |
/// | 48 | 1 | F1 limit |
/// | 49 | 1 | F2 limit |
/// | 50 | 2 | abuse limit (0 = default, 0xffff = never) |
/// | 52 | 4 | recovery window, ms |
/// | 56 | 4 | fence timeout, ms |
/// | 60 | 4 | flags (bit 0: a witness key fingerprint is given) |
/// | 64 | 32 | SHA-256 fingerprint of the expected witness public key |
/// | 96 | 4 | dormant after, ms: a `Warm` partition parked in a wait this long may go dormant (0 = never) |
/// | 100 | 4 | reserved, zero |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionDesc {
    pub name: [u8; 32],
    pub memory_tier: MemoryTier,
    pub deadline_urgency: u8,
    pub cut_pressure: u8,
    pub default_tier: u8,
    pub wasm_pages: u32,
    pub fuel_per_slice: u64,
    pub recovery: RecoveryDesc,
    pub witness_key_fingerprint: Option<[u8; 32]>,
    /// A `Warm` partition parked in a wait this long (ms) may go dormant
    /// (the kernel's `domains::dormant`); 0: never. Only `Warm` partitions
    /// carry one (`Dormant` ones sleep at once).
    pub dormant_after_ms: u32,
}

pub const PARTITION_DESC_LEN: usize = 104;

impl PartitionDesc {
    /// What a vacant id is described as: no name, no memory.
    pub const VACANT: PartitionDesc = PartitionDesc {
        name: [0; 32],
        memory_tier: MemoryTier::Warm,
        deadline_urgency: 0,
        cut_pressure: 0,
        default_tier: 1,
        wasm_pages: 0,
        fuel_per_slice: 0,
        recovery: RecoveryDesc::DEFAULT,
        witness_key_fingerprint: None,
        dormant_after_ms: 0,
    };

    /// The name as text (validated as a safe identifier when parsed).
    pub fn name(&self) -> &str {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..end]).unwrap_or("?")
    }

    pub fn to_bytes(&self) -> [u8; PARTITION_DESC_LEN] {
        let mut b = [0u8; PARTITION_DESC_LEN];
        b[0..32].copy_from_slice(&self.name);
        b[32] = self.memory_tier as u8;
        b[33] = self.deadline_urgency;
        b[34] = self.cut_pressure;
        b[35] = self.default_tier;
        b[36..40].copy_from_slice(&self.wasm_pages.to_le_bytes());
        b[40..48].copy_from_slice(&self.fuel_per_slice.to_le_bytes());
        b[48] = self.recovery.f1_limit;
        b[49] = self.recovery.f2_limit;
        b[50..52].copy_from_slice(&self.recovery.abuse_limit.to_le_bytes());
        b[52..56].copy_from_slice(&self.recovery.window_ms.to_le_bytes());
        b[56..60].copy_from_slice(&self.recovery.fence_timeout_ms.to_le_bytes());
        if let Some(fp) = self.witness_key_fingerprint {
            b[60] = 1;
            b[64..96].copy_from_slice(&fp);
        }
        b[96..100].copy_from_slice(&self.dormant_after_ms.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != PARTITION_DESC_LEN {
            return None;
        }
        let mut name = [0u8; 32];
        name.copy_from_slice(&b[0..32]);
        let end = name.iter().position(|&x| x == 0).unwrap_or(32);
        if name[end..].iter().any(|&x| x != 0) {
            return None;
        }
        let text = core::str::from_utf8(&name[..end]).ok()?;
        crate::ident::check(text).ok()?;
        let flags = u32_at(b, 60);
        let fingerprint = if flags & 1 != 0 {
            let mut fp = [0u8; 32];
            fp.copy_from_slice(&b[64..96]);
            Some(fp)
        } else {
            None
        };
        let pct = |v: u8| if v <= 100 { Some(v) } else { None };
        let memory_tier = MemoryTier::from_u8(b[32])?;
        let dormant_after_ms = u32_at(b, 96);
        // Reserved bytes are zero, and only a Warm partition parks before
        // it sleeps.
        if u32_at(b, 100) != 0 || (dormant_after_ms != 0 && memory_tier != MemoryTier::Warm) {
            return None;
        }
        Some(Self {
            name,
            memory_tier,
            deadline_urgency: pct(b[33])?,
            cut_pressure: pct(b[34])?,
            default_tier: crate::ProofTier::from_u8(b[35])? as u8,
            wasm_pages: u32_at(b, 36),
            fuel_per_slice: u64_at(b, 40),
            recovery: RecoveryDesc {
                f1_limit: b[48],
                f2_limit: b[49],
                window_ms: u32_at(b, 52),
                fence_timeout_ms: u32_at(b, 56),
                abuse_limit: u16_at(b, 50),
            },
            witness_key_fingerprint: fingerprint,
            dormant_after_ms,
        })
    }

    /// Build the fixed-size name field from a safe identifier.
    pub fn name_field(name: &str) -> Result<[u8; 32], crate::ident::IdentError> {
        crate::ident::check(name)?;
        let mut field = [0u8; 32];
        field[..name.len()].copy_from_slice(name.as_bytes());
        Ok(field)
    }
}

/// A capability to install (64 bytes).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | object kind ([`ObjectKind`](crate::ObjectKind)) |
/// | 1 | 1 | rights ([`Rights`](crate::Rights) bits) |
/// | 2 | 7 | proof tier per right, in [`RIGHT_NAMES`](crate::rights::RIGHT_NAMES) order (0 = not held) |
/// | 9 | 7 | reserved |
/// | 16 | 4 | object id (channel index, partition index, ...) |
/// | 20 | 4 | calls per epoch quota (0 = unlimited) |
/// | 24 | 8 | expiry, Unix seconds (0 = never) |
/// | 32 | 8 | byte window start |
/// | 40 | 8 | byte window length (0 = whole object) |
/// | 48 | 16 | first 16 bytes of SHA-256 of the resource name |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapDesc {
    pub kind: crate::ObjectKind,
    pub rights: crate::Rights,
    pub tiers: [u8; 7],
    pub object: u32,
    pub quota: u32,
    pub expires_at: u64,
    pub window_start: u64,
    pub window_len: u64,
    pub resource_digest: [u8; 16],
}

pub const CAP_DESC_LEN: usize = 64;

impl CapDesc {
    pub fn to_bytes(&self) -> [u8; CAP_DESC_LEN] {
        let mut b = [0u8; CAP_DESC_LEN];
        b[0] = self.kind as u8;
        b[1] = self.rights.bits();
        b[2..9].copy_from_slice(&self.tiers);
        b[16..20].copy_from_slice(&self.object.to_le_bytes());
        b[20..24].copy_from_slice(&self.quota.to_le_bytes());
        b[24..32].copy_from_slice(&self.expires_at.to_le_bytes());
        b[32..40].copy_from_slice(&self.window_start.to_le_bytes());
        b[40..48].copy_from_slice(&self.window_len.to_le_bytes());
        b[48..64].copy_from_slice(&self.resource_digest);
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != CAP_DESC_LEN {
            return None;
        }
        let rights = crate::Rights::from_bits(b[1])?;
        let mut tiers = [0u8; 7];
        tiers.copy_from_slice(&b[2..9]);
        for (i, (r, _)) in crate::rights::RIGHT_NAMES.iter().enumerate() {
            let ok = if rights.contains(*r) { (1..=3).contains(&tiers[i]) } else { tiers[i] == 0 };
            if !ok {
                return None;
            }
        }
        let mut resource_digest = [0u8; 16];
        resource_digest.copy_from_slice(&b[48..64]);
        Some(Self {
            kind: crate::ObjectKind::from_u8(b[0])?,
            rights,
            tiers,
            object: u32_at(b, 16),
            quota: u32_at(b, 20),
            expires_at: u64_at(b, 24),
            window_start: u64_at(b, 32),
            window_len: u64_at(b, 40),
            resource_digest,
        })
    }
}

/// A channel between two partitions (12 bytes): `a` u32, `b` u32, capacity in
/// messages u32. Each endpoint gets a channel capability with READ and WRITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelDesc {
    pub a: u32,
    pub b: u32,
    pub capacity: u32,
}

pub const CHANNEL_DESC_LEN: usize = 12;

impl ChannelDesc {
    pub fn to_bytes(&self) -> [u8; CHANNEL_DESC_LEN] {
        let mut out = [0u8; CHANNEL_DESC_LEN];
        out[0..4].copy_from_slice(&self.a.to_le_bytes());
        out[4..8].copy_from_slice(&self.b.to_le_bytes());
        out[8..12].copy_from_slice(&self.capacity.to_le_bytes());
        out
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != CHANNEL_DESC_LEN {
            return None;
        }
        Some(Self { a: u32_at(b, 0), b: u32_at(b, 4), capacity: u32_at(b, 8) })
    }
}

/// Most agents (WASM modules) one partition carries.
pub const MAX_AGENTS_PER_PARTITION: usize = 16;

/// One agent: its partition (bundle index) and its slot there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentRef {
    pub partition: u32,
    pub slot: u32,
}

/// A channel between two agents (20 bytes): `a.partition` u32, `a.slot`
/// u32, `b.partition` u32, `b.slot` u32, capacity in messages u32. The two
/// agents may share a partition (not the same slot). Each end's partition
/// gets a channel capability with READ and WRITE listed for that agent
/// (see [`HandleInfo::agent`](crate::bootinfo::HandleInfo::agent)); only
/// that agent may use the channel. A [`ChannelDesc`] is the same as an
/// agent channel between the slot-0 agents of its two partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentChannelDesc {
    pub a: AgentRef,
    pub b: AgentRef,
    pub capacity: u32,
}

pub const AGENT_CHANNEL_DESC_LEN: usize = 20;

impl AgentChannelDesc {
    pub fn to_bytes(&self) -> [u8; AGENT_CHANNEL_DESC_LEN] {
        let mut out = [0u8; AGENT_CHANNEL_DESC_LEN];
        out[0..4].copy_from_slice(&self.a.partition.to_le_bytes());
        out[4..8].copy_from_slice(&self.a.slot.to_le_bytes());
        out[8..12].copy_from_slice(&self.b.partition.to_le_bytes());
        out[12..16].copy_from_slice(&self.b.slot.to_le_bytes());
        out[16..20].copy_from_slice(&self.capacity.to_le_bytes());
        out
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != AGENT_CHANNEL_DESC_LEN {
            return None;
        }
        Some(Self {
            a: AgentRef { partition: u32_at(b, 0), slot: u32_at(b, 4) },
            b: AgentRef { partition: u32_at(b, 8), slot: u32_at(b, 12) },
            capacity: u32_at(b, 16),
        })
    }
}

/// How the hypervisor runs this bundle (16 bytes): run budget ms u32 (0 =
/// until every partition has finished), time slice µs u32, signed checkpoint
/// every N records u32 (0 = only at P3 operations and shutdown), flags u32
/// (bit 0: [`BOOT_FLAG_JOURNAL`](crate::journal::BOOT_FLAG_JOURNAL), the
/// input journal; bit 1: [`BOOT_FLAG_COHERENCE`]; other bits reserved, 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootConfig {
    pub run_budget_ms: u32,
    pub slice_us: u32,
    pub checkpoint_every: u32,
    pub flags: u32,
}

pub const BOOT_CONFIG_LEN: usize = 16;

/// [`BootConfig::flags`] bit: run the coherence evaluator — evaluate the
/// communication graph once per epoch and witness its split and merge
/// decisions (`SplitDecided`, `MergeDecided`). Traffic is recorded either way.
pub const BOOT_FLAG_COHERENCE: u32 = 1 << 1;
/// Bit of [`BootConfig::flags`]: the run is a long-lived instance. It does
/// not end when nothing can run (its partitions may all have finished or
/// wait with no deadline); it ends at an operator's `shutdown` order
/// ([`crate::frame::OrderKind::Shutdown`]) or its run budget.
pub const BOOT_FLAG_INSTANCE: u32 = 1 << 2;
/// Bit of [`BootConfig::flags`]: the host keeps every partition's committed
/// set durably. After every change of a committed set (a commit, a
/// rollback, a restore at boot) the hypervisor witnesses `CommittedSet` in
/// the store owner's log and signs a checkpoint of that log; after a commit
/// or a rollback it also sends the new set
/// (`StateBegins`, `StateItem`: [`crate::control`]) and parks the partition
/// until the host answers `StateSaved`: a guest never sees a commit
/// succeed before the host holds it. Set only with a control channel.
pub const BOOT_FLAG_SAVE_STATE: u32 = 1 << 3;
/// Bit of [`BootConfig::flags`]: the host serves tool calls
/// ([`crate::tool`]): an allowed `ToolCall` is sent to it (`ToolRequest`)
/// and its caller parked until it answers (`ToolAnswer`). Without it an
/// allowed call is refused with `NotSupported`. Set only with a control
/// channel.
pub const BOOT_FLAG_TOOLS: u32 = 1 << 4;

impl BootConfig {
    pub const DEFAULT: BootConfig =
        BootConfig { run_budget_ms: 0, slice_us: 10_000, checkpoint_every: 64, flags: 0 };

    pub fn to_bytes(&self) -> [u8; BOOT_CONFIG_LEN] {
        let mut out = [0u8; BOOT_CONFIG_LEN];
        out[0..4].copy_from_slice(&self.run_budget_ms.to_le_bytes());
        out[4..8].copy_from_slice(&self.slice_us.to_le_bytes());
        out[8..12].copy_from_slice(&self.checkpoint_every.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != BOOT_CONFIG_LEN {
            return None;
        }
        Some(Self {
            run_budget_ms: u32_at(b, 0),
            slice_us: u32_at(b, 4),
            checkpoint_every: u32_at(b, 8),
            flags: u32_at(b, 12),
        })
    }
}

/// One entry of a parsed bundle.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub kind: EntryKind,
    pub owner: u32,
    pub data: &'a [u8],
}

/// A bundle whose header and entry table have been checked.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    count: u32,
    partitions: u32,
}

impl<'a> Bundle<'a> {
    /// Check the header, every entry's bounds, kind, size and owner, and
    /// every partition's name.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.len() < HEADER_LEN {
            return Err(BundleError::TooShort);
        }
        if bytes[0..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(BundleError::Version(version));
        }
        let count = u32_at(bytes, 12);
        if count > MAX_ENTRIES {
            return Err(BundleError::TooManyEntries(count));
        }
        let total = usize::try_from(u64_at(bytes, 16)).map_err(|_| BundleError::TooShort)?;
        if total > bytes.len() || total < HEADER_LEN {
            return Err(BundleError::TooShort);
        }
        let bytes = &bytes[..total];
        let table_end = HEADER_LEN + count as usize * ENTRY_LEN;
        if table_end > bytes.len() {
            return Err(BundleError::TooShort);
        }
        let mut b = Bundle { bytes, count, partitions: 0 };
        let mut partitions = 0u32;
        for n in 0..count {
            let e = b.raw_entry(n)?;
            let size_ok = match e.kind {
                EntryKind::Partition => e.data.len() == PARTITION_DESC_LEN,
                EntryKind::Capability => e.data.len() == CAP_DESC_LEN,
                EntryKind::AuthorityKey | EntryKind::WitnessKeySeed | EntryKind::OperatorKey => {
                    e.data.len() == 32
                }
                EntryKind::Channel => e.data.len() == CHANNEL_DESC_LEN,
                EntryKind::AgentChannel => e.data.len() == AGENT_CHANNEL_DESC_LEN,
                EntryKind::BootConfig => e.data.len() == BOOT_CONFIG_LEN,
                EntryKind::BootId => e.data.len() == BOOT_ID_LEN,
                EntryKind::GuestRuntime | EntryKind::Wasm | EntryKind::GuestImage => {
                    !e.data.is_empty()
                }
                EntryKind::LogResume => LogResume::from_bytes(e.data).is_some(),
                // Its length is checked against the partition count below.
                EntryKind::PartitionIds => e.data.len().is_multiple_of(4),
                EntryKind::FirstFreeId => e.data.len() == 4,
                EntryKind::StateRestore => StateRestore::from_bytes(e.data).is_some(),
                EntryKind::Claim => (5..=4 + MAX_CLAIM).contains(&e.data.len()) && core::str::from_utf8(&e.data[4..]).is_ok(),
            };
            if !size_ok {
                return Err(BundleError::EntrySize(n));
            }
            if e.kind == EntryKind::Partition {
                if e.owner != partitions {
                    return Err(BundleError::EntryOwner(n));
                }
                PartitionDesc::from_bytes(e.data).ok_or(BundleError::PartitionName(partitions))?;
                partitions += 1;
            }
            if e.kind == EntryKind::Capability && CapDesc::from_bytes(e.data).is_none() {
                return Err(BundleError::EntrySize(n));
            }
        }
        for n in 0..count {
            let e = b.raw_entry(n)?;
            let global = matches!(
                e.kind,
                EntryKind::GuestRuntime
                    | EntryKind::Channel
                    | EntryKind::AgentChannel
                    | EntryKind::WitnessKeySeed
                    | EntryKind::BootConfig
                    | EntryKind::OperatorKey
                    | EntryKind::BootId
                    | EntryKind::PartitionIds
                    | EntryKind::FirstFreeId
            );
            // A log resumed is a partition's or (global) the hypervisor's.
            let either = e.kind == EntryKind::LogResume && e.owner == GLOBAL;
            if !either && (global != (e.owner == GLOBAL) || (!global && e.owner >= partitions)) {
                return Err(BundleError::EntryOwner(n));
            }
        }
        b.partitions = partitions;
        if let Some(ids) = b.global(EntryKind::PartitionIds) {
            let ok = ids.data.len() == 4 * partitions as usize
                && b.entries().filter(|e| e.kind == EntryKind::PartitionIds).count() == 1
                && ids
                    .data
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .try_fold(0u32, |last, id| (id > last && id <= MAX_PARTITION_ID).then_some(id))
                    .is_some();
            if !ok {
                return Err(BundleError::PartitionIds);
            }
        }
        if let Some(first) = b.first_free_id() {
            let highest = partitions.checked_sub(1).map_or(0, |last| b.partition_id(last));
            let once = b.entries().filter(|e| e.kind == EntryKind::FirstFreeId).count() == 1;
            if !once || first <= highest || first > MAX_PARTITION_ID + 1 {
                return Err(BundleError::PartitionIds);
            }
        }
        let mut resumed = [false; MAX_PARTITION_ID as usize + 2];
        for e in b.entries().filter(|e| e.kind == EntryKind::LogResume) {
            let at = if e.owner == GLOBAL { 0 } else { e.owner as usize + 1 };
            match resumed.get_mut(at) {
                Some(seen) if !*seen => *seen = true,
                _ => return Err(BundleError::PartitionIds),
            }
        }
        // A committed set is restored only into a log that continues, once.
        let mut restored = [false; MAX_PARTITION_ID as usize + 2];
        for e in b.entries().filter(|e| e.kind == EntryKind::StateRestore) {
            let at = e.owner as usize + 1;
            match restored.get_mut(at) {
                Some(seen) if !*seen && resumed[at] => *seen = true,
                _ => return Err(BundleError::PartitionIds),
            }
        }
        Ok(b)
    }

    /// The id of partition `index` (see [`EntryKind::PartitionIds`]).
    pub fn partition_id(&self, index: u32) -> u32 {
        self.global(EntryKind::PartitionIds)
            .and_then(|e| e.data.get(index as usize * 4..index as usize * 4 + 4))
            .map_or(index + 1, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The first id a partition admitted at run time may get, if the bundle
    /// says ([`EntryKind::FirstFreeId`]).
    pub fn first_free_id(&self) -> Option<u32> {
        self.global(EntryKind::FirstFreeId)
            .and_then(|e| e.data.try_into().ok())
            .map(u32::from_le_bytes)
    }

    /// The committed set partition `index` restores, if any.
    pub fn state_restore(&self, index: u32) -> Option<StateRestore<'a>> {
        self.entries()
            .find(|e| e.kind == EntryKind::StateRestore && e.owner == index)
            .and_then(|e| StateRestore::from_bytes(e.data))
    }

    /// The log resumption of partition `index` (`None`: the hypervisor's).
    pub fn log_resume(&self, index: Option<u32>) -> Option<LogResume<'a>> {
        let owner = index.unwrap_or(GLOBAL);
        self.entries()
            .find(|e| e.kind == EntryKind::LogResume && e.owner == owner)
            .and_then(|e| LogResume::from_bytes(e.data))
    }

    fn raw_entry(&self, n: u32) -> Result<Entry<'a>, BundleError> {
        let at = HEADER_LEN + n as usize * ENTRY_LEN;
        let e = &self.bytes[at..at + ENTRY_LEN];
        let kind = EntryKind::from_u16(u16_at(e, 0)).ok_or(BundleError::EntryKind(n))?;
        let owner = u32_at(e, 4);
        let offset = u32_at(e, 8) as usize;
        let len = u32_at(e, 12) as usize;
        let end = offset.checked_add(len).ok_or(BundleError::EntryBounds(n))?;
        if !offset.is_multiple_of(8) || offset < HEADER_LEN || end > self.bytes.len() {
            return Err(BundleError::EntryBounds(n));
        }
        Ok(Entry { kind, owner, data: &self.bytes[offset..end] })
    }

    /// Every entry, in bundle order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        // Bounds were checked by `parse`.
        (0..self.count).filter_map(move |n| self.raw_entry(n).ok())
    }

    /// Number of partitions described.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// The entries of one kind that belong to `owner`.
    pub fn owned(&self, kind: EntryKind, owner: u32) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.entries().filter(move |e| e.kind == kind && e.owner == owner)
    }

    /// The first global entry of a kind.
    pub fn global(&self, kind: EntryKind) -> Option<Entry<'a>> {
        self.entries().find(|e| e.kind == kind && e.owner == GLOBAL)
    }

    /// The bundle's boot id ([`EntryKind::BootId`]), if it has one.
    pub fn boot_id(&self) -> Option<[u8; BOOT_ID_LEN]> {
        self.global(EntryKind::BootId).and_then(|e| e.data.try_into().ok())
    }

    /// Partition descriptors, in index order.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionDesc> + '_ {
        self.entries()
            .filter(|e| e.kind == EntryKind::Partition)
            .filter_map(|e| PartitionDesc::from_bytes(e.data))
    }
}

/// Builds a bundle on the host.
#[cfg(feature = "alloc")]
#[derive(Default)]
pub struct BundleWriter {
    entries: alloc::vec::Vec<(EntryKind, u32, alloc::vec::Vec<u8>)>,
    partitions: u32,
}

#[cfg(feature = "alloc")]
impl BundleWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a partition; returns its index for owned entries.
    pub fn partition(&mut self, desc: &PartitionDesc) -> u32 {
        let idx = self.partitions;
        self.partitions += 1;
        self.entries.push((EntryKind::Partition, idx, desc.to_bytes().to_vec()));
        idx
    }

    /// Add any other entry.
    pub fn entry(&mut self, kind: EntryKind, owner: u32, data: &[u8]) {
        self.entries.push((kind, owner, data.to_vec()));
    }

    /// Lay the bundle out.
    pub fn finish(&self) -> alloc::vec::Vec<u8> {
        let table_end = HEADER_LEN + self.entries.len() * ENTRY_LEN;
        let mut offset = table_end.next_multiple_of(8);
        let mut table = alloc::vec::Vec::new();
        let mut payload = alloc::vec::Vec::new();
        for (kind, owner, data) in &self.entries {
            table.extend_from_slice(&(*kind as u16).to_le_bytes());
            table.extend_from_slice(&0u16.to_le_bytes());
            table.extend_from_slice(&owner.to_le_bytes());
            table.extend_from_slice(&(offset as u32).to_le_bytes());
            table.extend_from_slice(&(data.len() as u32).to_le_bytes());
            payload.extend_from_slice(data);
            let padded = data.len().next_multiple_of(8);
            payload.resize(payload.len() + padded - data.len(), 0);
            offset += padded;
        }
        let mut out = alloc::vec::Vec::with_capacity(offset);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&table);
        out.resize(table_end.next_multiple_of(8), 0);
        out.extend_from_slice(&payload);
        out
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn desc(name: &str) -> PartitionDesc {
        PartitionDesc {
            name: PartitionDesc::name_field(name).unwrap(),
            memory_tier: MemoryTier::Warm,
            deadline_urgency: 50,
            cut_pressure: 30,
            default_tier: 2,
            wasm_pages: 16,
            fuel_per_slice: 0,
            recovery: RecoveryDesc::DEFAULT,
            witness_key_fingerprint: Some([7; 32]),
            dormant_after_ms: 0,
        }
    }

    #[test]
    fn writer_and_parser_agree() {
        let mut w = BundleWriter::new();
        w.entry(EntryKind::GuestRuntime, GLOBAL, b"\x7fELF...");
        let a = w.partition(&desc("agent-a"));
        let b = w.partition(&desc("agent-b"));
        w.entry(EntryKind::Wasm, a, b"\0asm\x01\0\0\0");
        w.entry(EntryKind::Channel, GLOBAL, &ChannelDesc { a, b, capacity: 8 }.to_bytes());
        let bytes = w.finish();
        let parsed = Bundle::parse(&bytes).unwrap();
        assert_eq!(parsed.partition_count(), 2);
        let names: alloc::vec::Vec<_> =
            parsed.partitions().map(|p| alloc::string::String::from(p.name())).collect();
        assert_eq!(names, ["agent-a", "agent-b"]);
        assert_eq!(parsed.owned(EntryKind::Wasm, a).count(), 1);
        assert_eq!(parsed.owned(EntryKind::Wasm, b).count(), 0);
        assert_eq!(parsed.partitions().next().unwrap(), desc("agent-a"));
    }

    #[test]
    fn hostile_bundles_are_refused() {
        let mut w = BundleWriter::new();
        w.partition(&desc("agent-a"));
        let good = w.finish();
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::BadMagic);
        let mut bad = good.clone();
        bad[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&0xffff_fff8u32.to_le_bytes());
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::EntryBounds(0));
        let mut bad = good.clone();
        let off = u32::from_le_bytes(bad[HEADER_LEN + 8..HEADER_LEN + 12].try_into().unwrap());
        bad[off as usize] = b'/';
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::PartitionName(0));
        assert_eq!(Bundle::parse(&good[..20]).unwrap_err(), BundleError::TooShort);
    }

    #[test]
    fn agent_channels_round_trip_and_are_global() {
        let c = AgentChannelDesc {
            a: AgentRef { partition: 0, slot: 1 },
            b: AgentRef { partition: 0, slot: 2 },
            capacity: 16,
        };
        assert_eq!(AgentChannelDesc::from_bytes(&c.to_bytes()), Some(c));
        let mut w = BundleWriter::new();
        let p = w.partition(&desc("domain"));
        w.entry(EntryKind::Wasm, p, b"\0asm\x01\0\0\0");
        w.entry(EntryKind::Wasm, p, b"\0asm\x01\0\0\0");
        w.entry(EntryKind::AgentChannel, GLOBAL, &c.to_bytes());
        let bytes = w.finish();
        let parsed = Bundle::parse(&bytes).unwrap();
        assert_eq!(parsed.owned(EntryKind::Wasm, p).count(), 2);
        assert_eq!(parsed.global(EntryKind::AgentChannel).map(|e| e.data.len()), Some(AGENT_CHANNEL_DESC_LEN));
        // Owned by a partition instead of global: refused.
        let mut w = BundleWriter::new();
        let p = w.partition(&desc("domain"));
        w.entry(EntryKind::AgentChannel, p, &c.to_bytes());
        assert_eq!(Bundle::parse(&w.finish()).unwrap_err(), BundleError::EntryOwner(1));
    }

    #[test]
    fn recovery_thresholds_round_trip() {
        let mut d = desc("agent-a");
        d.recovery = RecoveryDesc { f1_limit: 1, f2_limit: 4, window_ms: 50, fence_timeout_ms: 200, abuse_limit: RecoveryDesc::ABUSE_NEVER };
        let b = d.to_bytes();
        assert_eq!(b[50..52], [0xff, 0xff]);
        assert_eq!(PartitionDesc::from_bytes(&b), Some(d));
    }
}
