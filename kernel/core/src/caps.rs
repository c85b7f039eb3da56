//! The kernel's use of the capability space (crate `rvm-cap`): installing
//! the bundle's capabilities and checking every hypercall's handle.

use rvm_abi::bundle::CapDesc;
use rvm_abi::{CapHandle, HvError, ObjectKind, ProofTier, Rights};
use rvm_cap::{AuthorityKey, CapParams, CapabilitySpace, Epoch, Request, SpacePolicy, Timestamp};

use crate::partition::PartitionId;

/// Length of a quota epoch.
pub const EPOCH_NS: u64 = 1_000_000_000;

/// An allowed use, as dispatch needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// Object id within its kind.
    pub object: u32,
    pub tier: ProofTier,
    /// Handle in witness form.
    pub cap_id: u32,
}

/// What `CapQuery` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryInfo {
    pub kind: ObjectKind,
    pub rights: Rights,
    /// Bit `t` set when some right runs at tier `t` (1..=3).
    pub tier_mask: u64,
}

/// Every partition's capability table.
pub struct Caps {
    space: CapabilitySpace,
    /// Authority key per partition (bound at install to its P3 capabilities).
    authority: alloc::vec::Vec<Option<AuthorityKey>>,
    /// Unix seconds at which the kernel clock read zero (for table expiries).
    pub boot_unix_secs: u64,
}

impl Caps {
    pub fn new(partitions: usize) -> Self {
        let mut space = CapabilitySpace::new(SpacePolicy::DEFAULT);
        for id in 0..=partitions {
            let _ = space.add_partition(rvm_cap::PartitionId(u32::try_from(id).unwrap_or(u32::MAX)));
        }
        Self { space, authority: alloc::vec![None; partitions + 1], boot_unix_secs: 0 }
    }

    fn pid(p: PartitionId) -> rvm_cap::PartitionId {
        rvm_cap::PartitionId(p.0)
    }

    /// Bind the partition's authority key for the capabilities installed after.
    pub fn bind_authority(&mut self, p: PartitionId, key: [u8; 32]) {
        if let Some(slot) = usize::try_from(p.0).ok().and_then(|i| self.authority.get_mut(i)) {
            *slot = Some(AuthorityKey(key));
        }
    }

    /// Install a root capability from the bundle.
    pub fn install(&mut self, p: PartitionId, desc: &CapDesc, _now_ns: u64) -> Result<CapHandle, HvError> {
        let authority = usize::try_from(p.0).ok().and_then(|i| self.authority.get(i).copied().flatten());
        let params = CapParams::from_desc(desc, authority, self.boot_unix_secs)?;
        self.space.install(Self::pid(p), &params)
    }

    /// Check a use of `raw` needing `need` on an object of `kind`.
    pub fn check(&mut self, p: PartitionId, raw: u64, kind: ObjectKind, need: Rights, now_ns: u64) -> Result<Granted, HvError> {
        let handle = CapHandle::from_raw(raw).ok_or(HvError::BadHandle)?;
        let req = Request::at(Timestamp(now_ns), Epoch(now_ns / EPOCH_NS));
        let g = self.space.check(Self::pid(p), handle, need, &req, None).map_err(|d| d.error)?;
        if g.object.kind != kind {
            return Err(HvError::BadHandle);
        }
        Ok(Granted { object: g.object.id.0, tier: g.tier, cap_id: g.cap })
    }

    /// What a handle names, for `CapQuery`.
    pub fn query(&self, p: PartitionId, raw: u64) -> Result<QueryInfo, HvError> {
        let handle = CapHandle::from_raw(raw).ok_or(HvError::BadHandle)?;
        let info = self.space.query(Self::pid(p), handle)?;
        let tier_mask = info.tiers.iter().filter(|t| **t != 0).fold(0u64, |m, t| m | 1 << t);
        Ok(QueryInfo { kind: info.object.kind, rights: info.rights, tier_mask })
    }

    /// F3: every capability of `p` answers `Suspended` until resumed.
    pub fn suspend(&mut self, p: PartitionId) {
        let _ = self.space.suspend_partition(Self::pid(p));
    }
}
