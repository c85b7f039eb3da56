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
    /// The partitions' ids, in order (an instance that continues keeps
    /// them, [`crate::roster`]); empty: 1, 2, ... in order.
    pub ids: Vec<u32>,
    /// Logs that continue an earlier boot's: (log id, where).
    pub resumes: Vec<(u32, rvm_witness_host::ResumePoint)>,
    /// Committed sets continuing partitions start with: (id, the
    /// `StateRestore` entry, [`crate::state`]).
    pub restores: Vec<(u32, Vec<u8>)>,
    /// The first id a partition admitted during the run may get (an
    /// instance that continues: above every id it ever gave).
    pub first_free: Option<u32>,
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
    /// The id of the partition at `index`.
    pub fn id_of(&self, index: usize) -> u32 {
        self.ids
            .get(index)
            .copied()
            .unwrap_or_else(|| partition_id(u32::try_from(index).unwrap_or(u32::MAX)))
    }

    /// Log id → partition name for the witness sink.
    pub fn log_names(&self) -> LogNames {
        LogNames(
            self.partitions
                .iter()
                .enumerate()
                .map(|(i, p)| (self.id_of(i), p.record.spec.name.clone()))
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

/// The `Claim` entry of the token at position `at` of a partition's
/// table: its resource pattern, when it is one the hypervisor understands
/// (`rvm_cap::claim`); `None` for a token with no resource or another kind
/// of name (it then allows no tool call).
pub fn claim_entry(at: usize, t: &Token) -> Option<Vec<u8>> {
    let pattern = t.resource.as_deref()?;
    rvm_cap::claim::parse(pattern).ok()?;
    let mut entry = u32::try_from(at).ok()?.to_le_bytes().to_vec();
    entry.extend_from_slice(pattern.as_bytes());
    Some(entry)
}

/// The claims a partition's tool calls are checked against, as the host
/// re-checks them: the resources of its tokens with EXECUTE that are claims.
pub fn tool_claims(record: &crate::home::PartitionRecord) -> Vec<String> {
    record
        .caps
        .iter()
        .flat_map(|c| &c.tokens)
        .filter(|t| t.rights.contains(rvm_abi::Rights::EXECUTE))
        .filter_map(|t| t.resource.clone())
        .filter(|r| rvm_cap::claim::parse(r).is_ok())
        .collect()
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

/// Refuse a plan of more partitions than boot (or are admitted) together;
/// an empty one only when `empty_ok` (an instance may boot with none).
fn check_count(what: &str, count: usize, empty_ok: bool) -> Result<()> {
    if count == 0 && !empty_ok {
        return Err(Error::refused(what, format!("no partition to {what}")));
    }
    if count > limits::PARTITIONS_PER_BOOT_MAX {
        return Err(Error::refused(
            what,
            format!("{count} partitions; at most {} {what} together", limits::PARTITIONS_PER_BOOT_MAX),
        ));
    }
    Ok(())
}

/// Write each partition's entries (its record, module, authority key and
/// capabilities, in that order) and a channel for each linked pair
/// (indices into `parts`); the number of capability entries written.
fn write_partitions(w: &mut BundleWriter, parts: &[PlannedPartition], links: &[(u32, u32)]) -> Result<usize> {
    let mut caps = 0usize;
    let mut indices = Vec::new();
    for p in parts {
        let idx = w.partition(&partition_desc(p)?);
        w.entry(EntryKind::Wasm, idx, &p.module);
        // The key first: the hypervisor binds it to the capabilities after it.
        if let Some(key) = &p.authority {
            w.entry(EntryKind::AuthorityKey, idx, key);
        }
        for (at, t) in p.record.caps.iter().flat_map(|c| &c.tokens).enumerate() {
            w.entry(EntryKind::Capability, idx, &cap_desc(t).to_bytes());
            caps += 1;
            // Its resource, when it is a claim, for the hypervisor to
            // match tool calls against (the digest alone cannot be matched).
            if let Some(claim) = claim_entry(at, t) {
                w.entry(EntryKind::Claim, idx, &claim);
            }
        }
        indices.push(idx);
    }
    for &(a, b) in links {
        let (Some(&a), Some(&b)) = (indices.get(a as usize), indices.get(b as usize)) else {
            return Err(Error::failed(format!("link {a}:{b} names no partition of the plan")));
        };
        let ch = ChannelDesc { a, b, capacity: limits::CHANNEL_CAPACITY };
        w.entry(EntryKind::Channel, GLOBAL, &ch.to_bytes());
    }
    Ok(caps)
}

/// Read `bytes` back with the hypervisor's own parser: `partitions`
/// partitions holding `caps` capabilities between them.
fn read_back(bytes: &[u8], partitions: usize, caps: usize) -> Result<()> {
    let parsed = Bundle::parse(bytes).map_err(|e| Error::failed(format!("bundle does not parse back: {e}")))?;
    let n = u32::try_from(partitions).map_err(|_| Error::failed("too many partitions"))?;
    let parsed_caps = (0..n).map(|i| parsed.owned(EntryKind::Capability, i).count()).sum::<usize>();
    if parsed.partition_count() != n || parsed_caps != caps {
        return Err(Error::failed("bundle does not read back as written"));
    }
    Ok(())
}

/// Lay out the bundle and check it reads back as written. A plan without
/// partitions is refused unless it boots an instance
/// ([`BOOT_FLAG_INSTANCE`](rvm_abi::bundle::BOOT_FLAG_INSTANCE)), which
/// takes its tenants later by admission.
pub fn build(plan: &BootPlan) -> Result<Vec<u8>> {
    let instance = plan.config.flags & rvm_abi::bundle::BOOT_FLAG_INSTANCE != 0;
    check_count("boot", plan.partitions.len(), instance)?;
    let mut w = BundleWriter::new();
    w.entry(EntryKind::GuestRuntime, GLOBAL, &plan.runtime);
    w.entry(EntryKind::WitnessKeySeed, GLOBAL, &plan.witness_key.seed);
    w.entry(EntryKind::BootConfig, GLOBAL, &plan.config.to_bytes());
    w.entry(EntryKind::BootId, GLOBAL, &plan.boot_id);
    if let Some(key) = &plan.operator_key {
        w.entry(EntryKind::OperatorKey, GLOBAL, key);
    }
    let caps = write_partitions(&mut w, &plan.partitions, &plan.links)?;
    write_continuation(&mut w, plan)?;
    let bytes = w.finish();
    read_back(&bytes, plan.partitions.len(), caps)?;
    Ok(bytes)
}

/// The ids a continuing instance keeps (`PartitionIds`) and the logs that
/// continue (`LogResume`), when the plan has them.
fn write_continuation(w: &mut BundleWriter, plan: &BootPlan) -> Result<()> {
    if !plan.ids.is_empty() {
        if plan.ids.len() != plan.partitions.len() {
            return Err(Error::failed("the plan gives ids to some partitions only"));
        }
        let ids: Vec<u8> = plan.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        w.entry(EntryKind::PartitionIds, GLOBAL, &ids);
    }
    if let Some(first) = plan.first_free {
        w.entry(EntryKind::FirstFreeId, GLOBAL, &first.to_le_bytes());
    }
    for (log, point) in &plan.resumes {
        let owner = if *log == 0 {
            GLOBAL
        } else {
            let at = (0..plan.partitions.len())
                .find(|&i| plan.id_of(i) == *log)
                .ok_or_else(|| Error::failed(format!("log {log} continues, but no partition of the plan has that id")))?;
            u32::try_from(at).map_err(|_| Error::failed("too many partitions"))?
        };
        w.entry(EntryKind::LogResume, owner, &point.entry());
    }
    for (id, entry) in &plan.restores {
        let at = (0..plan.partitions.len())
            .find(|&i| plan.id_of(i) == *id)
            .ok_or_else(|| Error::failed(format!("partition {id}'s state is restored, but no partition of the plan has that id")))?;
        w.entry(EntryKind::StateRestore, u32::try_from(at).map_err(|_| Error::failed("too many partitions"))?, entry);
    }
    Ok(())
}

/// Lay out an admission: tenants for a running instance
/// (`rvm_abi::control`'s `Admission` frame). The same format as a boot
/// bundle, with the same entries per partition, but no global entry (the
/// instance has its runtime, keys, configuration and boot id already).
/// Refused when empty, or longer than the hypervisor takes
/// ([`MAX_ADMISSION`](rvm_abi::control::MAX_ADMISSION)).
pub fn build_admission(parts: &[PlannedPartition]) -> Result<Vec<u8>> {
    check_count("admit", parts.len(), false)?;
    let mut w = BundleWriter::new();
    let caps = write_partitions(&mut w, parts, &[])?;
    let bytes = w.finish();
    read_back(&bytes, parts.len(), caps)?;
    if bytes.len() > rvm_abi::control::MAX_ADMISSION {
        return Err(Error::refused(
            "admit",
            format!(
                "the admission is {} bytes; a running instance takes at most {}",
                bytes.len(),
                rvm_abi::control::MAX_ADMISSION
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::{GuestBinding, InstalledCaps, ModuleSource};
    use rvm_abi::bundle::{BootConfig, BOOT_FLAG_INSTANCE};
    use std::path::Path;

    /// A partition of an adapter fixture, with a stand-in module.
    fn planned(case: &str, module: &[u8]) -> PlannedPartition {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/host-rvm").join(case);
        let m = crate::folder::load_manifest(&dir.join("rvm-partition.toml")).unwrap();
        let t = crate::folder::load_table(&dir.join("capability-table.json"), 0).unwrap();
        PlannedPartition {
            record: PartitionRecord {
                spec: m.spec,
                manifest: m.stamp,
                registered_unix: 0,
                caps: Some(InstalledCaps { tokens: t.tokens, table: t.stamp }),
                guest: Some(GuestBinding {
                    guest: None,
                    wasm_ref: None,
                    module_sha256: String::new(),
                    source: ModuleSource::Explicit { path: "a.wasm".into() },
                }),
                last_run: None,
            },
            module: module.to_vec(),
            wasm_pages: 16,
            authority: Some([7; 32]),
        }
    }

    fn plan(partitions: Vec<PlannedPartition>, flags: u32) -> BootPlan {
        BootPlan {
            ids: Vec::new(),
            resumes: Vec::new(),
            restores: Vec::new(),
            first_free: None,
            partitions,
            runtime: b"\x7fELF runtime".to_vec(),
            witness_key: Key::from_seed([1; 32]),
            config: BootConfig { flags, ..BootConfig::DEFAULT },
            operator_key: Some([2; 32]),
            links: Vec::new(),
            boot_id: [3; BOOT_ID_LEN],
        }
    }

    #[test]
    fn an_admission_carries_its_partitions_and_no_global_entry() {
        let parts = [planned("template-minimal", b"module-a"), planned("template-vertical_coding", b"module-b")];
        let bytes = build_admission(&parts).unwrap();
        let parsed = Bundle::parse(&bytes).unwrap();
        assert_eq!(parsed.partition_count(), 2);
        assert!(parsed.entries().all(|e| e.owner != GLOBAL), "an admission has no global entry");
        let names: Vec<String> = parsed.partitions().map(|p| p.name().to_string()).collect();
        let want: Vec<String> = parts.iter().map(|p| p.record.spec.name.to_string()).collect();
        assert_eq!(names, want);
        for (i, p) in (0u32..).zip(&parts) {
            let wasm: Vec<&[u8]> = parsed.owned(EntryKind::Wasm, i).map(|e| e.data).collect();
            assert_eq!(wasm, [p.module.as_slice()]);
            assert_eq!(parsed.owned(EntryKind::AuthorityKey, i).count(), 1);
            let tokens = p.record.caps.as_ref().map_or(0, |c| c.tokens.len());
            assert!(tokens > 0);
            assert_eq!(parsed.owned(EntryKind::Capability, i).count(), tokens);
        }
        // The same entries, in the same order, as the boot bundle of the
        // same partitions carries after its globals.
        let boot = build(&plan(parts.to_vec(), 0)).unwrap();
        let boot = Bundle::parse(&boot).unwrap();
        let owned = |b: &Bundle<'_>| -> Vec<(u16, u32, Vec<u8>)> {
            b.entries().filter(|e| e.owner != GLOBAL).map(|e| (e.kind as u16, e.owner, e.data.to_vec())).collect()
        };
        assert_eq!(owned(&parsed), owned(&boot));
        assert!(matches!(build_admission(&[]), Err(Error::Refused(_))), "nothing to admit");
    }

    #[test]
    fn only_an_instance_boots_without_partitions() {
        let e = build(&plan(Vec::new(), 0)).unwrap_err();
        assert!(e.to_string().contains("no partition to boot"), "{e}");
        let bytes = build(&plan(Vec::new(), BOOT_FLAG_INSTANCE)).unwrap();
        let parsed = Bundle::parse(&bytes).unwrap();
        assert_eq!(parsed.partition_count(), 0);
        let config = parsed.global(EntryKind::BootConfig).and_then(|e| BootConfig::from_bytes(e.data)).unwrap();
        assert_eq!(config.flags & BOOT_FLAG_INSTANCE, BOOT_FLAG_INSTANCE);
        assert!(parsed.global(EntryKind::OperatorKey).is_some(), "its admissions need the operator key");
    }
}
