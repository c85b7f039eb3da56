//! Derivation: a holder of GRANT (or an unused GRANT_ONCE) makes an
//! attenuated copy of a capability in another (or its own) partition.

use rvm_abi::{CapHandle, HvError, Hypercall, ProofTier, Rights};

use crate::capability::{CapRef, Capability, Links};
use crate::ids::{PartitionId, Timestamp};
use crate::outcome::{Denied, Derived, Request};
use crate::policy::MAX_DERIVATION_DEPTH;
use crate::proof::{ArgsDigest, Signature};
use crate::quota::{Quota, Usage};
use crate::space::CapabilitySpace;
use crate::table::PartitionCapState;
use crate::window::ByteWindow;

/// What the new capability gets. `None` fields take the parent's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeriveParams {
    /// Must be non-empty and a subset of the parent's usable rights.
    pub rights: Rights,
    /// At most the parent's.
    pub expiry: Option<Timestamp>,
    /// Inside the parent's.
    pub window: Option<ByteWindow>,
    /// At most the parent's, figure by figure.
    pub quota: Option<Quota>,
}

impl DeriveParams {
    /// Only `rights`; everything else as the parent's.
    pub const fn rights(rights: Rights) -> DeriveParams {
        DeriveParams {
            rights,
            expiry: None,
            window: None,
            quota: None,
        }
    }

    /// The arguments digest a P3 approval of this derive into `target`
    /// signs: [`ArgsDigest::of`] over the words
    /// `[target, rights, has_expiry, expiry, has_window, first, last,
    /// has_quota, calls, bytes]` (absent values as 0).
    pub fn args_digest(&self, target: PartitionId) -> ArgsDigest {
        let flag = |b: bool| u64::from(b);
        let (w_first, w_last) = self.window.map_or((0, 0), |w| (w.first(), w.last()));
        let (q_calls, q_bytes) = self.quota.map_or((0, 0), |q| (u64::from(q.calls), q.bytes));
        ArgsDigest::of(
            &[
                u64::from(target.0),
                u64::from(self.rights.bits()),
                flag(self.expiry.is_some()),
                self.expiry.map_or(0, |t| t.0),
                flag(self.window.is_some()),
                w_first,
                w_last,
                flag(self.quota.is_some()),
                q_calls,
                q_bytes,
            ],
            &[],
        )
    }
}

impl CapabilitySpace {
    /// Derive a capability from `parent` (in `caller`'s table) into
    /// `target`'s table.
    ///
    /// The parent is used with GRANT if it holds it, else with GRANT_ONCE
    /// (consumed by this derive if it succeeds; `GrantConsumed` if already
    /// used), else `NoRights`; that use is checked like
    /// [`CapabilitySpace::check`] at the right's tier (a P3 approval signs
    /// `CapDerive` with [`DeriveParams::args_digest`]). Then, attenuation:
    /// no rights requested → `InvalidArgument`; a right the parent cannot
    /// use → `NoRights`; a window not inside the parent's → `OutOfWindow`;
    /// a later expiry or a larger quota → `InvalidArgument`; depth beyond
    /// [`MAX_DERIVATION_DEPTH`] → `DepthExceeded`. The target must have a
    /// table (`InvalidArgument`), not be fenced (`Suspended`) or evicted
    /// (`InvalidArgument`), and have room (`Full`, `NoMemory`).
    ///
    /// The child inherits the parent's object, per-right tiers, authority key
    /// and resource; its own quota usage starts fresh in `req.epoch`, but
    /// each of its uses is charged to every ancestor up to the root too, and
    /// its nonces must exceed the root's floor (shared by the whole tree).
    pub fn derive(
        &mut self,
        caller: PartitionId,
        parent: CapHandle,
        target: PartitionId,
        params: &DeriveParams,
        req: &Request,
        signature: Option<&Signature>,
    ) -> Result<Derived, Denied> {
        let deny = |e, tier| Denied::new(e, tier, parent);
        let used = {
            let cap = self
                .resolve(caller, parent)
                .map_err(|e| deny(e, ProofTier::P1))?;
            if cap.rights.contains(Rights::GRANT) {
                Rights::GRANT
            } else if cap.rights.contains(Rights::GRANT_ONCE) || cap.grant_once_used {
                Rights::GRANT_ONCE
            } else {
                return Err(deny(HvError::NoRights, ProofTier::P1));
            }
        };
        let proof = signature.map(|s| (Hypercall::CapDerive, params.args_digest(target), s));
        let verdict = self.evaluate(caller, parent, used, req, proof)?;
        let tier = verdict.granted.tier;
        let at = verdict.at;

        let child = {
            let cap = self.cap(at).ok_or_else(|| deny(HvError::Revoked, tier))?;
            attenuate(cap, params, req).map_err(|e| deny(e, tier))?
        };
        let table = self
            .table(target)
            .ok_or_else(|| deny(HvError::InvalidArgument, tier))?;
        match table.state {
            PartitionCapState::Active => {}
            PartitionCapState::Suspended => return Err(deny(HvError::Suspended, tier)),
            PartitionCapState::Evicted => return Err(deny(HvError::InvalidArgument, tier)),
        }

        // Every check passed; from here on nothing may fail but the claim.
        let table = self
            .table_mut(target)
            .ok_or_else(|| deny(HvError::InvalidArgument, tier))?;
        let index = table.claim().map_err(|e| deny(e, tier))?;
        let child_ref = CapRef {
            partition: target,
            index,
        };
        let old_first = self.cap(at).and_then(|c| c.links.first_child);
        let links = Links {
            parent: Some(at),
            first_child: None,
            prev_sibling: None,
            next_sibling: old_first,
        };
        let handle = self
            .table_mut(target)
            .and_then(|t| t.fill(index, Capability { links, ..child }))
            .ok_or_else(|| deny(HvError::Full, tier))?;
        if let Some(first) = old_first.and_then(|r| self.cap_mut(r)) {
            first.links.prev_sibling = Some(child_ref);
        }
        if let Some(p) = self.cap_mut(at) {
            p.links.first_child = Some(child_ref);
            if used == Rights::GRANT_ONCE {
                p.consume_grant_once();
            }
        }
        self.commit(&verdict);
        Ok(Derived {
            handle,
            granted: verdict.granted,
            used,
        })
    }
}

/// The child capability `params` asks for, if it attenuates `parent`
/// (links left empty).
fn attenuate(
    parent: &Capability,
    params: &DeriveParams,
    req: &Request,
) -> Result<Capability, HvError> {
    if params.rights.is_empty() {
        return Err(HvError::InvalidArgument);
    }
    if !parent.rights.contains(params.rights) {
        return Err(HvError::NoRights);
    }
    let window = params.window.unwrap_or(parent.window);
    if !parent.window.contains(window) {
        return Err(HvError::OutOfWindow);
    }
    let expiry = params.expiry.unwrap_or(parent.expiry);
    if expiry > parent.expiry {
        return Err(HvError::InvalidArgument);
    }
    let quota = params.quota.unwrap_or(parent.quota);
    if !quota.within(parent.quota) {
        return Err(HvError::InvalidArgument);
    }
    let depth = match parent.depth.checked_add(1) {
        Some(d) if d <= MAX_DERIVATION_DEPTH => d,
        _ => return Err(HvError::DepthExceeded),
    };
    Ok(Capability {
        object: parent.object,
        rights: params.rights,
        tiers: parent.tiers.restricted_to(params.rights),
        depth,
        grant_once_used: false,
        authority: parent.authority,
        expiry,
        window,
        quota,
        usage: Usage::starting(req.epoch),
        last_nonce: 0,
        resource: parent.resource,
        links: Links::default(),
    })
}
