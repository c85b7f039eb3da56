//! The capability space: every partition's table, the authority keys, and
//! the checks of P1, P2 and P3.

extern crate alloc;

use alloc::vec::Vec;
use ed25519_dalek::VerifyingKey;
use rvm_abi::bundle::CapDesc;
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, ProofTier, Rights};

use crate::capability::{AuthorityId, CapInfo, CapRef, Capability, Links};
use crate::ids::{Epoch, Nonce, ObjectRef, PartitionId, Timestamp};
use crate::outcome::{Denied, Granted, Request};
use crate::policy::{SpacePolicy, MAX_DERIVATION_DEPTH};
use crate::proof::{verify_operation, ArgsDigest, AuthorityKey, Proof, Signature};
use crate::quota::{Quota, Usage};
use crate::table::{PartitionCapState, Table};
use crate::tiers::TierMap;
use crate::window::ByteWindow;
use rvm_abi::approval::{ApprovalMessage, RootRef};
use rvm_abi::bundle::BOOT_ID_LEN;

/// A capability to install: the kernel builds one per capability-table entry
/// of the bundle (see [`CapParams::from_desc`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapParams {
    pub object: ObjectRef,
    pub rights: Rights,
    /// Proof tier per right, in [`RIGHT_NAMES`](rvm_abi::rights::RIGHT_NAMES)
    /// order, 0 for rights not held.
    pub tiers: [u8; 7],
    pub expiry: Timestamp,
    pub window: ByteWindow,
    pub quota: Quota,
    /// Required if any right is at P3.
    pub authority: Option<AuthorityKey>,
    pub resource: [u8; 16],
}

impl CapParams {
    /// From a bundle capability descriptor, the partition's authority key,
    /// and the Unix time in seconds at which the kernel clock read zero
    /// (the descriptor's expiry is in Unix seconds).
    pub fn from_desc(
        desc: &CapDesc,
        authority: Option<AuthorityKey>,
        boot_unix_secs: u64,
    ) -> Result<CapParams, HvError> {
        Ok(CapParams {
            object: ObjectRef::new(desc.kind, desc.object),
            rights: desc.rights,
            tiers: desc.tiers,
            expiry: Timestamp::from_unix_expiry(desc.expires_at, boot_unix_secs),
            window: ByteWindow::from_table(desc.window_start, desc.window_len)
                .ok_or(HvError::InvalidArgument)?,
            quota: Quota::from_table(desc.quota),
            authority,
            resource: desc.resource_digest,
        })
    }
}

/// The outcome of evaluating a use before anything is changed.
pub(crate) struct Verdict {
    pub granted: Granted,
    pub at: CapRef,
    /// Nonce to record at the root of `at`'s derivation tree (P2/P3 with a
    /// nonce).
    pub nonce: Option<Nonce>,
    /// The call to charge, in this epoch with this many bytes, to `at` and
    /// every ancestor up to its root (P2/P3).
    pub charge: Option<(Epoch, u64)>,
}

/// A proof as the check needs it: the operation, the kernel's digest of its
/// arguments, the guest's signature.
pub(crate) type ProofParts<'a> = (Hypercall, ArgsDigest, &'a Signature);

/// Every capability in the system.
///
/// Partitions get a table with [`CapabilitySpace::add_partition`]; the
/// kernel installs root capabilities with [`CapabilitySpace::install`];
/// hypercalls use them through [`CapabilitySpace::check`],
/// [`CapabilitySpace::derive`], [`CapabilitySpace::revoke`] and
/// [`CapabilitySpace::query`]; recovery fences and evicts partitions with
/// [`CapabilitySpace::suspend_partition`] and
/// [`CapabilitySpace::revoke_partition`].
///
/// All state changes of an operation happen only once every check has
/// passed: a denied operation changes nothing (no nonce, no quota, no
/// GRANT_ONCE consumed).
pub struct CapabilitySpace {
    policy: SpacePolicy,
    tables: Vec<Option<Table>>,
    authorities: Vec<(AuthorityKey, VerifyingKey)>,
    /// The booted bundle's boot id, which every P3 approval signs; none
    /// set, every P3 approval is refused (`BadProof`).
    boot_id: Option<[u8; BOOT_ID_LEN]>,
}

impl CapabilitySpace {
    /// An empty space with the given bounds.
    pub fn new(policy: SpacePolicy) -> CapabilitySpace {
        CapabilitySpace {
            policy,
            tables: Vec::new(),
            authorities: Vec::new(),
            boot_id: None,
        }
    }

    /// Bind this boot's id: P3 approvals must sign it
    /// ([`ApprovalMessage::boot_id`]).
    pub fn set_boot_id(&mut self, id: [u8; BOOT_ID_LEN]) {
        self.boot_id = Some(id);
    }

    /// The boot id P3 approvals must sign, if one is bound.
    pub fn boot_id(&self) -> Option<[u8; BOOT_ID_LEN]> {
        self.boot_id
    }

    pub fn policy(&self) -> SpacePolicy {
        self.policy
    }

    /// Whether partition `p` has a table.
    pub fn has_partition(&self, p: PartitionId) -> bool {
        p.slot().and_then(|at| self.tables.get(at)).is_some_and(Option::is_some)
    }

    /// Give partition `p` an empty capability table, allocated in full now
    /// (`slots_per_partition` slots) so that hypercalls never allocate.
    /// `InvalidArgument` if the id is at or beyond the policy's bound or
    /// already has a table; `NoMemory`.
    pub fn add_partition(&mut self, p: PartitionId) -> Result<(), HvError> {
        if p.0 >= self.policy.max_partitions {
            return Err(HvError::InvalidArgument);
        }
        let at = p.slot().ok_or(HvError::InvalidArgument)?;
        if at >= self.tables.len() {
            let grow = at + 1 - self.tables.len();
            self.tables
                .try_reserve(grow)
                .map_err(|_| HvError::NoMemory)?;
            self.tables.resize_with(at + 1, || None);
        }
        match &mut self.tables[at] {
            Some(_) => Err(HvError::InvalidArgument),
            slot @ None => {
                *slot = Some(Table::new(self.policy.slots_per_partition)?);
                Ok(())
            }
        }
    }

    /// The state of partition `p`'s capabilities, if it has a table.
    pub fn partition_state(&self, p: PartitionId) -> Option<PartitionCapState> {
        self.table(p).map(|t| t.state)
    }

    /// Number of live capabilities in partition `p`'s table.
    pub fn live_count(&self, p: PartitionId) -> Option<u16> {
        self.table(p).map(Table::live)
    }

    #[inline]
    pub(crate) fn table(&self, p: PartitionId) -> Option<&Table> {
        self.tables.get(p.slot()?)?.as_ref()
    }

    #[inline]
    pub(crate) fn table_mut(&mut self, p: PartitionId) -> Option<&mut Table> {
        self.tables.get_mut(p.slot()?)?.as_mut()
    }

    pub(crate) fn cap(&self, r: CapRef) -> Option<&Capability> {
        self.table(r.partition)?.get(r.index)
    }

    pub(crate) fn cap_mut(&mut self, r: CapRef) -> Option<&mut Capability> {
        self.table_mut(r.partition)?.get_mut(r.index)
    }

    /// Install a root capability (depth 0) into partition `p`'s table.
    ///
    /// `InvalidArgument` for no rights, tiers inconsistent with the rights,
    /// a right at P3 without an authority key, a key that is not a valid
    /// Ed25519 point or is weak, an unknown or evicted partition;
    /// `Full` when the table or the authority list is full; `NoMemory`.
    pub fn install(&mut self, p: PartitionId, params: &CapParams) -> Result<CapHandle, HvError> {
        self.install_in(p, params, None)
    }

    /// [`CapabilitySpace::install`] at slot `index` of `p`'s table, which
    /// must never have been used (`InvalidArgument` otherwise; `Full`
    /// beyond the table). The kernel spreads the boot handles of a
    /// coherence bundle's partitions over disjoint slots this way, so an
    /// agent moved between them keeps its handles' slots
    /// ([`CapabilitySpace::transplant`]).
    pub fn install_at(
        &mut self,
        p: PartitionId,
        params: &CapParams,
        index: u16,
    ) -> Result<CapHandle, HvError> {
        self.install_in(p, params, Some(index))
    }

    fn install_in(
        &mut self,
        p: PartitionId,
        params: &CapParams,
        at: Option<u16>,
    ) -> Result<CapHandle, HvError> {
        if params.rights.is_empty() {
            return Err(HvError::InvalidArgument);
        }
        let tiers =
            TierMap::from_table(params.rights, &params.tiers).ok_or(HvError::InvalidArgument)?;
        if !tiers.p3_rights().is_empty() && params.authority.is_none() {
            return Err(HvError::InvalidArgument);
        }
        let table = self.table(p).ok_or(HvError::InvalidArgument)?;
        if table.state == PartitionCapState::Evicted {
            return Err(HvError::InvalidArgument);
        }
        if !table.has_room() {
            return Err(HvError::Full);
        }
        let authority = match params.authority {
            Some(key) => Some(self.intern_authority(key)?),
            None => None,
        };
        let cap = Capability {
            object: params.object,
            rights: params.rights,
            tiers,
            depth: 0,
            grant_once_used: false,
            authority,
            expiry: params.expiry,
            window: params.window,
            quota: params.quota,
            usage: Usage::default(),
            last_nonce: 0,
            resource: params.resource,
            links: Links::default(),
        };
        let table = self.table_mut(p).ok_or(HvError::InvalidArgument)?;
        let index = match at {
            Some(index) => table.claim_exact(index, 0)?,
            None => table.claim()?,
        };
        table.fill(index, cap).ok_or(HvError::Full)
    }

    fn intern_authority(&mut self, key: AuthorityKey) -> Result<AuthorityId, HvError> {
        let found = self.authorities.iter().position(|(k, _)| *k == key);
        let at = match found {
            Some(at) => at,
            None => {
                let decoded = key.decode().ok_or(HvError::InvalidArgument)?;
                if self.authorities.len() >= usize::from(self.policy.max_authorities) {
                    return Err(HvError::Full);
                }
                self.authorities
                    .try_reserve(1)
                    .map_err(|_| HvError::NoMemory)?;
                self.authorities.push((key, decoded));
                self.authorities.len() - 1
            }
        };
        u16::try_from(at)
            .map(AuthorityId)
            .map_err(|_| HvError::Full)
    }

    /// Resolve `handle` in `caller`'s table, or say why not: `BadHandle`
    /// (no such table, index out of range, never issued), `Suspended`
    /// (partition fenced), `StaleHandle`, `Revoked` (see the
    /// [`table`](crate::table) module for the exact rules).
    #[inline]
    pub(crate) fn resolve(
        &self,
        caller: PartitionId,
        handle: CapHandle,
    ) -> Result<&Capability, HvError> {
        let table = self.table(caller).ok_or(HvError::BadHandle)?;
        if table.state == PartitionCapState::Suspended {
            return Err(HvError::Suspended);
        }
        table.resolve(handle)
    }

    /// What `CapQuery` reports about `handle`. Needs no right.
    pub fn query(&self, caller: PartitionId, handle: CapHandle) -> Result<CapInfo, HvError> {
        self.resolve(caller, handle).map(CapInfo::of)
    }

    /// Every live capability of partition `p` with its handle (kernel
    /// diagnostics, boot info for the guest).
    pub fn capabilities(&self, p: PartitionId) -> impl Iterator<Item = (CapHandle, CapInfo)> + '_ {
        let table = self.table(p);
        let len = table.map_or(0, |t| t.slots.len());
        (0..len).filter_map(move |i| {
            let t = table?;
            let index = u16::try_from(i).ok()?;
            Some((t.handle_of(index)?, CapInfo::of(t.get(index)?)))
        })
    }

    /// The proof tier an operation needing `needed` through `handle` would
    /// run at, so the kernel knows whether to fetch a proof before
    /// [`CapabilitySpace::check`]. Fails like `check` does at P1.
    pub fn required_tier(
        &self,
        caller: PartitionId,
        handle: CapHandle,
        needed: Rights,
    ) -> Result<ProofTier, Denied> {
        self.grant_p1(caller, handle, needed).map(|g| g.tier)
    }

    /// Check a use of `handle` by `caller` needing every right in `needed`,
    /// at the strictest tier configured for those rights, and on success
    /// record it (nonce, quota).
    ///
    /// * P1: handle live in the caller's table, generation current,
    ///   partition not suspended, rights ⊇ `needed`
    ///   (`BadHandle`, `StaleHandle`, `Revoked`, `Suspended`, `NoRights`,
    ///   `GrantConsumed` for a used GRANT_ONCE).
    /// * P2: and not expired (`Expired`), `req.access` inside the window
    ///   (`OutOfWindow`), `req.nonce` (if any) above the nonce floor of the
    ///   capability's derivation tree — kept at its root, shared by every
    ///   capability derived from it (`Replay`), one more call and
    ///   `access.len` more bytes within the epoch's quota of the capability
    ///   and of every ancestor up to the root (`QuotaExceeded`): a copy of a
    ///   capability is never a fresh start.
    /// * P3: and the derivation chain re-checked to its root: every ancestor
    ///   live (`Revoked`), its partition not fenced (`Suspended`), unexpired
    ///   (`Expired`), holding at least this capability's rights, window,
    ///   expiry and quota (`NoRights`); and `proof` present with a nonce and
    ///   a valid signature by the authority key over the
    ///   [`ApprovalMessage`] naming the tree's root and this boot's id
    ///   ([`CapabilitySpace::set_boot_id`]; none set: `BadProof`)
    ///   (`BadProof`).
    ///
    /// `proof` is ignored below P3. Nothing changes unless the use is
    /// granted.
    #[inline(always)]
    pub fn check(
        &mut self,
        caller: PartitionId,
        handle: CapHandle,
        needed: Rights,
        req: &Request,
        proof: Option<&Proof<'_>>,
    ) -> Result<Granted, Denied> {
        // P1 is decided here, inline and without touching memory beyond the
        // table and the slot; P2 and P3 go out of line.
        let granted = self.grant_p1(caller, handle, needed)?;
        if granted.tier != ProofTier::P1 {
            self.check_policy(caller, handle, granted, req, proof)?;
        }
        Ok(granted)
    }

    /// [`CapabilitySpace::check`] for an operation that acts on an object of
    /// `kind`: a handle naming an object of another kind is refused with
    /// `BadHandle` at P1, before any policy is evaluated or charged.
    #[inline(always)]
    pub fn check_kind(
        &mut self,
        caller: PartitionId,
        handle: CapHandle,
        kind: ObjectKind,
        needed: Rights,
        req: &Request,
        proof: Option<&Proof<'_>>,
    ) -> Result<Granted, Denied> {
        let granted = self.grant_p1(caller, handle, needed)?;
        if granted.object.kind != kind {
            return Err(Denied::new(HvError::BadHandle, ProofTier::P1, handle));
        }
        if granted.tier != ProofTier::P1 {
            self.check_policy(caller, handle, granted, req, proof)?;
        }
        Ok(granted)
    }

    /// P2 and P3 of [`CapabilitySpace::check`], out of line. Returns only
    /// the verdict (small enough for registers), so the P1 result never
    /// travels through memory.
    #[inline(never)]
    fn check_policy(
        &mut self,
        caller: PartitionId,
        handle: CapHandle,
        granted: Granted,
        req: &Request,
        proof: Option<&Proof<'_>>,
    ) -> Result<(), Denied> {
        let parts = proof.map(|p| (p.op, p.args, p.signature));
        let verdict = self.evaluate_policy(caller, handle, granted, req, parts)?;
        self.commit(&verdict);
        Ok(())
    }

    /// P1: resolve the handle and test the rights; on success, the tier the
    /// use runs at.
    #[inline(always)]
    fn grant_p1(
        &self,
        caller: PartitionId,
        handle: CapHandle,
        needed: Rights,
    ) -> Result<Granted, Denied> {
        let cap = self
            .resolve(caller, handle)
            .map_err(|e| Denied::new(e, ProofTier::P1, handle))?;
        rights_check(cap, needed).map_err(|e| Denied::new(e, ProofTier::P1, handle))?;
        Ok(Granted {
            cap: handle.witness_id(),
            tier: cap.tiers.tier_for(needed),
            object: cap.object,
        })
    }

    /// Evaluate a use without changing anything.
    pub(crate) fn evaluate(
        &self,
        caller: PartitionId,
        handle: CapHandle,
        needed: Rights,
        req: &Request,
        proof: Option<ProofParts<'_>>,
    ) -> Result<Verdict, Denied> {
        let granted = self.grant_p1(caller, handle, needed)?;
        if granted.tier == ProofTier::P1 {
            let at = CapRef {
                partition: caller,
                index: handle.index,
            };
            return Ok(Verdict {
                granted,
                at,
                nonce: None,
                charge: None,
            });
        }
        self.evaluate_policy(caller, handle, granted, req, proof)
    }

    /// P2 and P3 for a use P1 has granted at tier `granted.tier`. Inlined
    /// into its two callers so the verdict stays in registers.
    #[inline(always)]
    fn evaluate_policy(
        &self,
        caller: PartitionId,
        handle: CapHandle,
        granted: Granted,
        req: &Request,
        proof: Option<ProofParts<'_>>,
    ) -> Result<Verdict, Denied> {
        let tier = granted.tier;
        let deny = |e| Denied::new(e, tier, handle);
        let at = CapRef {
            partition: caller,
            index: handle.index,
        };
        let cap = self.cap(at).ok_or_else(|| deny(HvError::BadHandle))?;

        // P2: the capability's own policy.
        if cap.expiry.is_reached_at(req.now) {
            return Err(deny(HvError::Expired));
        }
        if let Some(access) = req.access {
            if !cap.window.admits(access) {
                return Err(deny(HvError::OutOfWindow));
            }
        }
        // The tree's nonce floor and quotas: the root's, and every
        // ancestor's on the way (a copy of a capability is no fresh start).
        let (root_at, root) = self.root_of(at, cap).map_err(deny)?;
        if let Some(n) = req.nonce {
            if n.0 <= root.last_nonce {
                return Err(deny(HvError::Replay));
            }
        }
        let bytes = req.access.map_or(0, |a| a.len);
        if !self.chain_charge(cap, req.epoch, bytes) {
            return Err(deny(HvError::QuotaExceeded));
        }

        if tier == ProofTier::P3 {
            self.chain_check(cap, req.now).map_err(deny)?;
            let (op, args, signature) = proof.ok_or_else(|| deny(HvError::BadProof))?;
            let nonce = req.nonce.ok_or_else(|| deny(HvError::BadProof))?;
            let boot_id = self.boot_id.ok_or_else(|| deny(HvError::BadProof))?;
            let key = cap
                .authority
                .and_then(|a| self.authorities.get(usize::from(a.0)))
                .ok_or_else(|| deny(HvError::BadProof))?;
            let generation = self
                .table(root_at.partition)
                .and_then(|t| t.slots.get(usize::from(root_at.index)))
                .map(|slot| slot.generation)
                .ok_or_else(|| deny(HvError::Revoked))?;
            let message = ApprovalMessage {
                op,
                object_kind: cap.object.kind,
                object_id: cap.object.id.0,
                partition: caller.0,
                root: RootRef {
                    partition: root_at.partition.0,
                    index: root_at.index,
                    generation,
                },
                nonce: nonce.0,
                boot_id,
                args_digest: args.0,
            };
            if !verify_operation(&key.1, &message, signature) {
                return Err(deny(HvError::BadProof));
            }
        }
        Ok(Verdict {
            granted,
            at,
            nonce: req.nonce,
            charge: Some((req.epoch, bytes)),
        })
    }

    /// The root of `cap`'s derivation tree (`cap` itself for a root) and
    /// where it lives. `Revoked` for a broken chain (never the case while
    /// the tree's links are intact: a root outlives its subtree).
    fn root_of<'s>(
        &'s self,
        at: CapRef,
        cap: &'s Capability,
    ) -> Result<(CapRef, &'s Capability), HvError> {
        let (mut at, mut cap) = (at, cap);
        let mut steps: u8 = 0;
        while let Some(up) = cap.links.parent {
            steps += 1;
            if steps > MAX_DERIVATION_DEPTH {
                return Err(HvError::Revoked);
            }
            cap = self.cap(up).ok_or(HvError::Revoked)?;
            at = up;
        }
        Ok((at, cap))
    }

    /// Whether one more call of `bytes` bytes in `epoch` fits the quota of
    /// `cap` and of every ancestor up to its root.
    fn chain_charge(&self, cap: &Capability, epoch: Epoch, bytes: u64) -> bool {
        let mut cur = cap;
        let mut steps: u8 = 0;
        loop {
            if cur.usage.charge(cur.quota, epoch, bytes).is_none() {
                return false;
            }
            let Some(up) = cur.links.parent else {
                return true;
            };
            steps += 1;
            if steps > MAX_DERIVATION_DEPTH {
                return false;
            }
            match self.cap(up) {
                Some(parent) => cur = parent,
                None => return false,
            }
        }
    }

    /// The root of the derivation tree of `handle`'s capability in
    /// `caller`'s table, as a P3 approval names it.
    pub fn root(&self, caller: PartitionId, handle: CapHandle) -> Result<RootRef, HvError> {
        let cap = self.resolve(caller, handle)?;
        let at = CapRef {
            partition: caller,
            index: handle.index,
        };
        let (root_at, _) = self.root_of(at, cap)?;
        let generation = self
            .table(root_at.partition)
            .and_then(|t| t.slots.get(usize::from(root_at.index)))
            .map(|slot| slot.generation)
            .ok_or(HvError::Revoked)?;
        Ok(RootRef {
            partition: root_at.partition.0,
            index: root_at.index,
            generation,
        })
    }

    /// Record an allowed use: the call charged to the capability and every
    /// ancestor, the nonce at the root.
    pub(crate) fn commit(&mut self, verdict: &Verdict) {
        if verdict.nonce.is_none() && verdict.charge.is_none() {
            return;
        }
        let mut cur = Some(verdict.at);
        let mut steps: u8 = 0;
        while let Some(at) = cur {
            let Some(cap) = self.cap_mut(at) else { return };
            if let Some((epoch, bytes)) = verdict.charge {
                if let Some(u) = cap.usage.charge(cap.quota, epoch, bytes) {
                    cap.usage = u;
                }
            }
            cur = cap.links.parent;
            if cur.is_none() {
                if let Some(n) = verdict.nonce {
                    cap.last_nonce = n.0;
                }
            }
            steps += 1;
            if steps > MAX_DERIVATION_DEPTH {
                return;
            }
        }
    }

    /// The derivation-chain part of P3 on its own (no signature): walk from
    /// `handle`'s capability to its root, re-checking each ancestor. Errors
    /// as for [`CapabilitySpace::check`] at P3.
    pub fn verify_chain(
        &self,
        caller: PartitionId,
        handle: CapHandle,
        now: Timestamp,
    ) -> Result<(), Denied> {
        let cap = self
            .resolve(caller, handle)
            .map_err(|e| Denied::new(e, ProofTier::P3, handle))?;
        self.chain_check(cap, now)
            .map_err(|e| Denied::new(e, ProofTier::P3, handle))
    }

    /// Iterative walk to the root; at most [`MAX_DERIVATION_DEPTH`] steps.
    fn chain_check(&self, cap: &Capability, now: Timestamp) -> Result<(), HvError> {
        let mut child = cap;
        let mut steps: u8 = 0;
        while let Some(up) = child.links.parent {
            steps += 1;
            if steps > MAX_DERIVATION_DEPTH {
                return Err(HvError::Revoked);
            }
            let table = self.table(up.partition).ok_or(HvError::Revoked)?;
            match table.state {
                PartitionCapState::Active => {}
                PartitionCapState::Suspended => return Err(HvError::Suspended),
                PartitionCapState::Evicted => return Err(HvError::Revoked),
            }
            let parent = table.get(up.index).ok_or(HvError::Revoked)?;
            if parent.depth.checked_add(1) != Some(child.depth) || parent.object != child.object {
                return Err(HvError::Revoked);
            }
            if parent.expiry.is_reached_at(now) {
                return Err(HvError::Expired);
            }
            if !parent.original_rights().contains(child.original_rights())
                || !parent.window.contains(child.window)
                || child.expiry > parent.expiry
                || !child.quota.within(parent.quota)
            {
                return Err(HvError::NoRights);
            }
            child = parent;
        }
        if child.depth != 0 {
            return Err(HvError::Revoked);
        }
        Ok(())
    }

    /// F3 fence: every use of `p`'s handles returns `Suspended` until
    /// [`CapabilitySpace::resume_partition`]; P3 checks of capabilities
    /// derived from `p`'s return `Suspended` too. Idempotent.
    /// `InvalidArgument` for an unknown or evicted partition.
    pub fn suspend_partition(&mut self, p: PartitionId) -> Result<(), HvError> {
        self.set_state(p, PartitionCapState::Suspended)
    }

    /// Clear an F3 fence. Idempotent. `InvalidArgument` for an unknown or
    /// evicted partition.
    pub fn resume_partition(&mut self, p: PartitionId) -> Result<(), HvError> {
        self.set_state(p, PartitionCapState::Active)
    }

    fn set_state(&mut self, p: PartitionId, state: PartitionCapState) -> Result<(), HvError> {
        let table = self.table_mut(p).ok_or(HvError::InvalidArgument)?;
        if table.state == PartitionCapState::Evicted {
            return Err(HvError::InvalidArgument);
        }
        table.state = state;
        Ok(())
    }
}

impl Default for CapabilitySpace {
    fn default() -> Self {
        Self::new(SpacePolicy::DEFAULT)
    }
}

/// P1's rights test: `NoRights`, or `GrantConsumed` when the only missing
/// right is a GRANT_ONCE already used.
#[inline]
fn rights_check(cap: &Capability, needed: Rights) -> Result<(), HvError> {
    let have = cap.rights;
    if have.contains(needed) {
        return Ok(());
    }
    let only_grant_once_missing = needed.difference(have) == Rights::GRANT_ONCE;
    if only_grant_once_missing && cap.grant_once_used {
        Err(HvError::GrantConsumed)
    } else {
        Err(HvError::NoRights)
    }
}
