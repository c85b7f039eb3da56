//! The kernel's use of the capability space (crate `rvm-cap`): installing
//! the bundle's capabilities, and checking, deriving and revoking them for
//! hypercalls.
//!
//! Every refusal comes back as a [`Refused`], which carries what the witness
//! record of the denied call needs: the exact error, the proof tier the
//! check had reached, and the capability id presented.
//!
//! Guests pass handles as raw registers; a register that is not a handle at
//! all (bits above the 48-bit form set) is refused with `BadHandle` at P1,
//! with no capability id.

use alloc::vec::Vec;

use rvm_abi::bundle::CapDesc;
use rvm_abi::witness::NO_CAP;
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, ProofTier, Rights};
use rvm_cap::{
    Access, ArgsDigest, AuthorityKey, CapInfo, CapParams, CapabilitySpace, DeriveParams, Epoch, Nonce, Proof, Request,
    Signature, SpacePolicy, Timestamp,
};

use crate::partition::PartitionId;

/// Length of a quota epoch: a capability's calls-per-epoch quota refills
/// every second of the kernel clock.
pub const EPOCH_NS: u64 = 1_000_000_000;

/// An allowed use, as dispatch needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The kind of object the capability names.
    pub kind: ObjectKind,
    /// Object id within its kind.
    pub object: u32,
    /// The tier the use was checked at.
    pub tier: ProofTier,
    /// Handle in witness form.
    pub cap_id: u32,
}

impl Granted {
    fn of(g: rvm_cap::Granted) -> Self {
        Self { kind: g.object.kind, object: g.object.id.0, tier: g.tier, cap_id: g.cap }
    }
}

/// A refused use: the exact reason and what its witness record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub error: HvError,
    /// The tier the check had reached (P1 for handle and rights failures).
    pub tier: ProofTier,
    /// Handle in witness form ([`NO_CAP`] if the register was no handle).
    pub cap_id: u32,
}

impl Refused {
    /// A refusal at `tier` of the use of raw handle `raw`.
    pub fn at(error: HvError, tier: ProofTier, raw: u64) -> Self {
        Self { error, tier, cap_id: witness_id(raw) }
    }

    fn from_denied(d: rvm_cap::Denied) -> Self {
        Self { error: d.error, tier: d.tier, cap_id: d.cap }
    }
}

impl From<Refused> for HvError {
    fn from(r: Refused) -> HvError {
        r.error
    }
}

/// The witness form of a raw handle register.
pub fn witness_id(raw: u64) -> u32 {
    CapHandle::from_raw(raw).map_or(NO_CAP, CapHandle::witness_id)
}

fn decode(raw: u64) -> Result<CapHandle, Refused> {
    CapHandle::from_raw(raw).ok_or(Refused { error: HvError::BadHandle, tier: ProofTier::P1, cap_id: NO_CAP })
}

/// A P3 approval as a guest hands it in: the signature it supplied, and the
/// operation and arguments digest the kernel computed for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approval {
    pub op: Hypercall,
    pub args: ArgsDigest,
    pub signature: Signature,
}

/// The policy inputs of one use (read from P2 up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UseParams {
    /// The kernel clock.
    pub now_ns: u64,
    /// The bytes the call touches: `(offset, length)` within the object.
    pub access: Option<(u64, u64)>,
    /// The call's replay nonce; `0` in the register means none.
    pub nonce: u64,
}

impl UseParams {
    fn request(&self) -> Request {
        let mut req = Request::at(Timestamp(self.now_ns), Epoch(self.now_ns / EPOCH_NS));
        if let Some((offset, len)) = self.access {
            req = req.with_access(Access { offset, len });
        }
        if self.nonce != 0 {
            req = req.with_nonce(Nonce(self.nonce));
        }
        req
    }
}

/// What `CapDerive` asks for, decoded from its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeriveArgs {
    /// The partition that receives the new capability (kernel id, 1-based).
    pub target: u32,
    pub rights: Rights,
    /// Absolute expiry on the kernel clock; `None` = the parent's.
    pub expiry_ns: Option<u64>,
}

impl DeriveArgs {
    fn params(&self) -> DeriveParams {
        DeriveParams { expiry: self.expiry_ns.map(Timestamp), ..DeriveParams::rights(self.rights) }
    }

    /// The arguments digest a P3 approval of this derive signs (defined by
    /// `rvm-cap`: [`DeriveParams::args_digest`]).
    pub fn args_digest(&self) -> ArgsDigest {
        self.params().args_digest(rvm_cap::PartitionId(self.target))
    }
}

/// What `CapQuery` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryInfo {
    pub kind: ObjectKind,
    pub rights: Rights,
    /// Bit `t` set when some right runs at tier `t` (1..=3).
    pub tier_mask: u64,
}

/// Every partition's capability table, and the authority key each
/// partition's P3 capabilities are bound to at install.
pub struct Caps {
    space: CapabilitySpace,
    /// Authority key per partition id (bound at install to its capabilities).
    authority: Vec<Option<AuthorityKey>>,
    /// Unix seconds at which the kernel clock read zero: the base of the
    /// capability table's expiries (which are Unix seconds).
    boot_unix_secs: u64,
}

impl Caps {
    /// Tables for partitions `1..=partitions`. Id 0 (the hypervisor) holds
    /// no capabilities and cannot be derived into.
    pub fn new(partitions: usize) -> Self {
        let mut space = CapabilitySpace::new(SpacePolicy::DEFAULT);
        let count = u32::try_from(partitions).unwrap_or(u32::MAX);
        for id in 1..=count {
            let _ = space.add_partition(rvm_cap::PartitionId(id));
        }
        Self { space, authority: alloc::vec![None; partitions + 1], boot_unix_secs: 0 }
    }

    /// A table for partition `p`, created at run time (an admission): the
    /// one it has (a table made for an admission that failed before
    /// anything was installed), else an empty one.
    pub fn ensure_partition(&mut self, p: PartitionId) -> Result<(), HvError> {
        if self.space.has_partition(Self::pid(p)) {
            return Ok(());
        }
        self.add_partition(p)
    }

    /// An empty table for partition `p`, created at run time (a split).
    /// `InvalidArgument` beyond the space's bound or if `p` has one.
    pub fn add_partition(&mut self, p: PartitionId) -> Result<(), HvError> {
        self.space.add_partition(Self::pid(p))?;
        let at = usize::try_from(p.0).map_err(|_| HvError::InvalidArgument)?;
        if self.authority.len() <= at {
            self.authority.resize(at + 1, None);
        }
        Ok(())
    }

    /// Move the capability behind `raw` of partition `from` into `to`'s
    /// table at the same slot and generation (derived from it, so
    /// revocation reaches it): the raw handle works in `to` as it did in
    /// `from`. Kernel use only (migration); see
    /// [`rvm_cap::CapabilitySpace::transplant`].
    pub fn transplant(&mut self, from: PartitionId, raw: u64, to: PartitionId) -> Result<CapHandle, HvError> {
        let handle = CapHandle::from_raw(raw).ok_or(HvError::BadHandle)?;
        let placed = self.space.transplant(Self::pid(from), handle, Self::pid(to))?;
        if let (Some(key), Ok(at)) = (
            usize::try_from(from.0).ok().and_then(|i| self.authority.get(i).copied().flatten()),
            usize::try_from(to.0),
        ) {
            if let Some(slot) = self.authority.get_mut(at) {
                slot.get_or_insert(key);
            }
        }
        Ok(placed)
    }

    /// Whether [`Caps::transplant`] of `raw` would succeed (nothing changes).
    pub fn can_transplant(&self, from: PartitionId, raw: u64, to: PartitionId) -> Result<(), HvError> {
        let handle = CapHandle::from_raw(raw).ok_or(HvError::BadHandle)?;
        self.space.can_transplant(Self::pid(from), handle, Self::pid(to))
    }

    fn pid(p: PartitionId) -> rvm_cap::PartitionId {
        rvm_cap::PartitionId(p.0)
    }

    /// Bind this boot's id ([`rvm_abi::bundle::EntryKind::BootId`]): every
    /// P3 approval must sign it. Without one, every approval is refused.
    pub fn set_boot_id(&mut self, id: [u8; rvm_abi::bundle::BOOT_ID_LEN]) {
        self.space.set_boot_id(id);
    }

    /// The root of the derivation tree of `raw`'s capability, as a P3
    /// approval names it.
    pub fn root(&self, p: PartitionId, raw: u64) -> Result<rvm_cap::proof::RootRef, HvError> {
        let handle = CapHandle::from_raw(raw).ok_or(HvError::BadHandle)?;
        self.space.root(Self::pid(p), handle)
    }

    /// The capability space itself (kernel diagnostics and tests).
    pub fn space(&self) -> &CapabilitySpace {
        &self.space
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

    /// [`Caps::install`] at slot `index` of `p`'s table (never used before).
    pub fn install_at(&mut self, p: PartitionId, desc: &CapDesc, index: u16) -> Result<CapHandle, HvError> {
        let authority = usize::try_from(p.0).ok().and_then(|i| self.authority.get(i).copied().flatten());
        let params = CapParams::from_desc(desc, authority, self.boot_unix_secs)?;
        self.space.install_at(Self::pid(p), &params, index)
    }

    /// The tier a use of `raw` needing `need` (on an object of `kind`, if
    /// given) would run at, checked at P1 — handle live, rights held, object
    /// of the right kind, in that order, with the errors of [`Caps::check`] —
    /// without changing anything: dispatch asks this first to know whether
    /// to fetch a P3 proof.
    pub fn required_tier(
        &self,
        p: PartitionId,
        raw: u64,
        kind: Option<ObjectKind>,
        need: Rights,
    ) -> Result<ProofTier, Refused> {
        let handle = decode(raw)?;
        let tier = self.space.required_tier(Self::pid(p), handle, need).map_err(Refused::from_denied)?;
        if let Some(kind) = kind {
            let info = self.space.query(Self::pid(p), handle).map_err(|e| Refused::at(e, ProofTier::P1, raw))?;
            if info.object.kind != kind {
                return Err(Refused::at(HvError::BadHandle, ProofTier::P1, raw));
            }
        }
        Ok(tier)
    }

    /// Check a use of `raw` needing `need` on an object of `kind`, at the
    /// tier its capability sets for those rights, and record it (nonce,
    /// quota). A handle naming another kind of object is refused with
    /// `BadHandle` at P1, before any policy is charged.
    pub fn check(
        &mut self,
        p: PartitionId,
        raw: u64,
        kind: ObjectKind,
        need: Rights,
        params: &UseParams,
        approval: Option<&Approval>,
    ) -> Result<Granted, Refused> {
        let handle = decode(raw)?;
        let proof = approval.map(|a| Proof { op: a.op, args: a.args, signature: &a.signature });
        self.space
            .check_kind(Self::pid(p), handle, kind, need, &params.request(), proof.as_ref())
            .map(Granted::of)
            .map_err(Refused::from_denied)
    }

    /// As [`Caps::check`] for an operation that accepts an object of any kind.
    pub fn check_any(
        &mut self,
        p: PartitionId,
        raw: u64,
        need: Rights,
        params: &UseParams,
        approval: Option<&Approval>,
    ) -> Result<Granted, Refused> {
        let handle = decode(raw)?;
        let proof = approval.map(|a| Proof { op: a.op, args: a.args, signature: &a.signature });
        self.space
            .check(Self::pid(p), handle, need, &params.request(), proof.as_ref())
            .map(Granted::of)
            .map_err(Refused::from_denied)
    }

    /// The right a derive from `raw` would use (GRANT if held, else
    /// GRANT_ONCE) and the tier it runs at, checked at P1 without changing
    /// anything.
    pub fn derive_tier(&self, p: PartitionId, raw: u64) -> Result<ProofTier, Refused> {
        let handle = decode(raw)?;
        let info = self.space.query(Self::pid(p), handle).map_err(|e| Refused::at(e, ProofTier::P1, raw))?;
        Ok(info.tier_for(derive_right(&info)))
    }

    /// Derive a capability from `raw` into `args.target`'s table; the new
    /// handle (valid in the target's table) and the tier the parent was
    /// used at. A target that is not a partition (id 0 is the hypervisor)
    /// is `InvalidArgument`; every other refusal is `rvm-cap`'s, at the
    /// tier it was found.
    pub fn derive(
        &mut self,
        p: PartitionId,
        raw: u64,
        args: &DeriveArgs,
        params: &UseParams,
        signature: Option<&Signature>,
    ) -> Result<(CapHandle, Granted), Refused> {
        let handle = decode(raw)?;
        // Only partitions `1..=partitions` have tables: any other target
        // answers `InvalidArgument` from inside the derive, after the
        // parent's checks, so the order of refusals is the crate's.
        let target = rvm_cap::PartitionId(args.target);
        self.space
            .derive(Self::pid(p), handle, target, &args.params(), &params.request(), signature)
            .map(|d| (d.handle, Granted::of(d.granted)))
            .map_err(Refused::from_denied)
    }

    /// Revoke every capability derived from `raw` (in any partition); how
    /// many were removed.
    pub fn revoke(
        &mut self,
        p: PartitionId,
        raw: u64,
        params: &UseParams,
        signature: Option<&Signature>,
    ) -> Result<(u32, Granted), Refused> {
        let handle = decode(raw)?;
        self.space
            .revoke(Self::pid(p), handle, &params.request(), signature)
            .map(|r| (r.removed, Granted::of(r.granted)))
            .map_err(Refused::from_denied)
    }

    /// What a handle names, for `CapQuery`. Needs no right.
    pub fn query(&self, p: PartitionId, raw: u64) -> Result<QueryInfo, HvError> {
        let info = self.info(p, raw)?;
        let tier_mask = info.tiers.iter().filter(|t| **t != 0).fold(0u64, |m, t| m | 1 << t);
        Ok(QueryInfo { kind: info.object.kind, rights: info.rights, tier_mask })
    }

    /// Everything the kernel knows about a handle's capability.
    pub fn info(&self, p: PartitionId, raw: u64) -> Result<CapInfo, HvError> {
        let handle = CapHandle::from_raw(raw).ok_or(HvError::BadHandle)?;
        self.space.query(Self::pid(p), handle)
    }

    /// F3: every capability of `p` answers `Suspended` until resumed.
    pub fn suspend(&mut self, p: PartitionId) {
        let _ = self.space.suspend_partition(Self::pid(p));
    }

    /// Clear an F3 fence of `p`'s capabilities.
    pub fn resume(&mut self, p: PartitionId) {
        let _ = self.space.resume_partition(Self::pid(p));
    }

    /// F4: revoke everything `p` holds and everything derived from it;
    /// how many capabilities were removed.
    pub fn evict(&mut self, p: PartitionId) -> u32 {
        self.space.revoke_partition(Self::pid(p)).unwrap_or(0)
    }
}

/// The right a derive uses: GRANT if the capability holds it, else
/// GRANT_ONCE (which `rvm-cap` refuses with `GrantConsumed` once used, or
/// `NoRights` if it was never held).
fn derive_right(info: &CapInfo) -> Rights {
    if info.rights.contains(Rights::GRANT) {
        Rights::GRANT
    } else {
        Rights::GRANT_ONCE
    }
}
