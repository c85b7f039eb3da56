//! Turning registered partitions into the bundle the hypervisor boots
//! (`rvm_abi::bundle`).
//!
//! Per partition, in boot order: its [`PartitionDesc`], its WASM module, one
//! [`CapDesc`] per token of its capability table, and — when the table has
//! P3 rights — the public half of the partition's own authority key, which
//! the hypervisor binds to its capabilities (the seed stays in `RVM_HOME`
//! and signs approvals, `rvm-loader caps prove`). Global: the guest
//! runtime ELF, the witness checkpoint key seed, the boot configuration
//! (its run budget set below the loader's own timeout, so the hypervisor
//! shuts down and signs its logs' heads before QEMU is killed), and a channel
//! for each pair the operator linked (`--link A:B`) and for no other: tenants
//! booted together cannot talk unless linked.

use crate::error::{Error, Result};
use crate::home::PartitionRecord;
use crate::keys::Key;
use crate::limits;
use crate::model::{PartitionName, Token};
use crate::parse::guestref;
use crate::witness_sink::LogNames;
use rvm_abi::bundle::{
    BootConfig, Bundle, BundleWriter, CapDesc, ChannelDesc, EntryKind, PartitionDesc, RecoveryDesc,
    BOOT_ID_LEN, GLOBAL,
};
use rvm_abi::rights::RIGHT_NAMES;
use rvm_abi::ObjectKind;
use sha2::{Digest, Sha256};

/// The partition id (witness log id, console prefix id) of the partition at
/// bundle index `index`: the hypervisor's own log is 0, so partitions count
/// from 1. (The ABI does not state this yet; it is assumed here only.)
pub fn partition_id(index: u32) -> u32 {
    index + 1
}

/// One partition to boot.
#[derive(Clone, Debug)]
pub struct PlannedPartition {
    pub record: PartitionRecord,
    pub module: Vec<u8>,
    pub wasm_pages: u32,
    /// The public authority key bound to its capabilities (partitions with
    /// P3 rights).
    pub authority: Option<[u8; 32]>,
}

/// Everything one boot needs.
#[derive(Clone, Debug)]
pub struct BootPlan {
    pub partitions: Vec<PlannedPartition>,
    pub runtime: Vec<u8>,
    pub witness_key: Key,
    /// How the hypervisor runs the bundle.
    pub config: BootConfig,
    /// The public half of the operator key whose signed orders the
    /// hypervisor accepts while it runs (`partition unfence|evict`).
    pub operator_key: Option<[u8; 32]>,
    /// Pairs of partitions (indices into `partitions`) that get a channel:
    /// the operator's `--link`s, and nothing else.
    pub links: Vec<(u32, u32)>,
    /// This boot's random id ([`EntryKind::BootId`]): orders and P3
    /// approvals sign it, so none is good for another boot.
    pub boot_id: [u8; BOOT_ID_LEN],
}

/// A fresh random boot id, from the operating system's generator: every
/// bundle built gets its own, so no two bundles are byte-identical.
pub fn fresh_boot_id() -> Result<[u8; BOOT_ID_LEN]> {
    rvm_witness_host::files::random_bytes().map_err(|e| Error::failed(format!("/dev/urandom: {e}")))
}

/// SHA-256 of a bundle: what an operator's order is bound to.
pub fn digest(bundle: &[u8]) -> [u8; 32] {
    Sha256::digest(bundle).into()
}

impl BootPlan {
    /// Log id → partition name for the witness sink.
    pub fn log_names(&self) -> LogNames {
        LogNames(
            self.partitions
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    Some((
                        partition_id(u32::try_from(i).ok()?),
                        p.record.spec.name.clone(),
                    ))
                })
                .collect(),
        )
    }

    pub fn names(&self) -> Vec<PartitionName> {
        self.partitions
            .iter()
            .map(|p| p.record.spec.name.clone())
            .collect()
    }
}

/// First 16 bytes of SHA-256 of a resource name; all zero for a token
/// scoped to no resource.
pub fn resource_digest(resource: Option<&str>) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Some(r) = resource {
        out.copy_from_slice(&Sha256::digest(r.as_bytes())[..16]);
    }
    out
}

/// A token as the bundle carries it.
pub fn cap_desc(t: &Token) -> CapDesc {
    let mut tiers = [0u8; 7];
    for (i, (right, _)) in RIGHT_NAMES.iter().enumerate() {
        if t.rights.contains(*right) {
            tiers[i] = t.proof_tier as u8;
        }
    }
    CapDesc {
        kind: ObjectKind::Resource,
        rights: t.rights,
        tiers,
        object: 0,
        quota: 0,
        expires_at: t.expires_at,
        window_start: 0,
        window_len: 0,
        resource_digest: resource_digest(t.resource.as_deref()),
    }
}

/// A partition record as the bundle describes it.
pub fn partition_desc(p: &PlannedPartition) -> Result<PartitionDesc> {
    let spec = &p.record.spec;
    let guest = p.record.guest.as_ref().ok_or_else(|| {
        Error::refused(
            format!("partition {}", spec.name),
            "has no guest (run `rvm-loader guest boot` for it)",
        )
    })?;
    Ok(PartitionDesc {
        name: PartitionDesc::name_field(spec.name.as_str())
            .map_err(|e| Error::failed(format!("partition name {e}")))?,
        memory_tier: spec.memory_tier,
        deadline_urgency: spec.deadline_urgency.get(),
        cut_pressure: spec.cut_pressure.get(),
        default_tier: guest
            .guest
            .as_ref()
            .map_or(guestref::DEFAULT_TIER, |g| g.proof_tier_default) as u8,
        wasm_pages: p.wasm_pages,
        fuel_per_slice: 0,
        recovery: RecoveryDesc::DEFAULT,
        witness_key_fingerprint: spec.witness_key_fingerprint.map(|f| f.0),
        dormant_after_ms: spec.dormant_after_ms,
    })
}

/// The same bundle without its [`EntryKind::WitnessKeySeed`] entry (what
/// `--bundle-out` writes unless asked for the seed): every other entry, in
/// the same order, with the same owners.
pub fn without_witness_seed(bytes: &[u8]) -> Result<Vec<u8>> {
    let parsed =
        Bundle::parse(bytes).map_err(|e| Error::failed(format!("bundle does not parse: {e}")))?;
    let mut w = BundleWriter::new();
    for e in parsed.entries() {
        match e.kind {
            EntryKind::WitnessKeySeed => {}
            EntryKind::Partition => {
                let desc = PartitionDesc::from_bytes(e.data)
                    .ok_or_else(|| Error::failed("bundle: a partition entry does not read"))?;
                w.partition(&desc);
            }
            kind => w.entry(kind, e.owner, e.data),
        }
    }
    Ok(w.finish())
}

/// Lay out the bundle and check it reads back as written.
pub fn build(plan: &BootPlan) -> Result<Vec<u8>> {
    if plan.partitions.is_empty() {
        return Err(Error::refused("boot", "no partition to boot"));
    }
    if plan.partitions.len() > limits::PARTITIONS_PER_BOOT_MAX {
        return Err(Error::refused(
            "boot",
            format!(
                "{} partitions; at most {} boot together",
                plan.partitions.len(),
                limits::PARTITIONS_PER_BOOT_MAX
            ),
        ));
    }
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &plan.runtime);
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &plan.witness_key.seed);
    w.entry(EntryKind::BootConfig, GLOBAL, &plan.config.to_bytes());
    w.entry(EntryKind::BootId, GLOBAL, &plan.boot_id);
    if let Some(key) = &plan.operator_key {
        w.entry(EntryKind::OperatorKey, GLOBAL, key);
    }
    let mut caps = 0usize;
    let mut indices = Vec::new();
    for p in &plan.partitions {
        let idx = w.partition(&partition_desc(p)?);
        w.entry(EntryKind::Wasm, idx, &p.module);
        // The key first: the hypervisor binds it to the capabilities after it.
        if let Some(key) = &p.authority {
            w.entry(EntryKind::AuthorityKey, idx, key);
        }
        for t in p.record.caps.iter().flat_map(|c| &c.tokens) {
            w.entry(EntryKind::Capability, idx, &cap_desc(t).to_bytes());
            caps += 1;
        }
        indices.push(idx);
    }
    for &(a, b) in &plan.links {
        let (Some(&a), Some(&b)) = (indices.get(a as usize), indices.get(b as usize)) else {
            return Err(Error::failed(format!(
                "link {a}:{b} names no partition of the plan"
            )));
        };
        let ch = ChannelDesc {
            a,
            b,
            capacity: limits::CHANNEL_CAPACITY,
        };
        w.entry(EntryKind::Channel, GLOBAL, &ch.to_bytes());
    }
    let bytes = w.finish();

    // Read it back with the hypervisor's own parser.
    let parsed = Bundle::parse(&bytes)
        .map_err(|e| Error::failed(format!("bundle does not parse back: {e}")))?;
    let n =
        u32::try_from(plan.partitions.len()).map_err(|_| Error::failed("too many partitions"))?;
    let parsed_caps = (0..n)
        .map(|i| parsed.owned(EntryKind::Capability, i).count())
        .sum::<usize>();
    if parsed.partition_count() != n || parsed_caps != caps {
        return Err(Error::failed("bundle does not read back as written"));
    }
    Ok(bytes)
}
