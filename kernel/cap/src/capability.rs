//! One capability as the kernel stores it, and what `CapQuery` reports of it.

use rvm_abi::{ProofTier, Rights};

use crate::ids::{Epoch, ObjectRef, PartitionId, Timestamp};
use crate::quota::{Quota, Usage};
use crate::tiers::TierMap;
use crate::window::ByteWindow;

/// Where a capability lives: a slot of a partition's table. Kernel-internal;
/// guests hold [`CapHandle`](rvm_abi::CapHandle)s, which add a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CapRef {
    pub partition: PartitionId,
    pub index: u16,
}

/// Index of an interned authority key in the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AuthorityId(pub u16);

/// Derivation-tree links. Children of one parent form a doubly linked list,
/// so unlinking is O(1) and a subtree is walked without recursion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Links {
    pub parent: Option<CapRef>,
    pub first_child: Option<CapRef>,
    pub prev_sibling: Option<CapRef>,
    pub next_sibling: Option<CapRef>,
}

/// A capability: an object, rights with their proof tiers, and the policy
/// P2 and P3 enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Capability {
    pub object: ObjectRef,
    /// The rights usable now (GRANT_ONCE is removed when it is consumed).
    pub rights: Rights,
    pub tiers: TierMap,
    /// 0 for an installed capability, parent's + 1 for a derived one.
    pub depth: u8,
    /// The GRANT_ONCE right was held and used by a successful derive (and so
    /// removed from `rights`).
    pub grant_once_used: bool,
    pub authority: Option<AuthorityId>,
    pub expiry: Timestamp,
    pub window: ByteWindow,
    pub quota: Quota,
    pub usage: Usage,
    /// Last nonce accepted (0 = none yet).
    pub last_nonce: u64,
    /// First 16 bytes of SHA-256 of the resource name, for
    /// [`ObjectKind::Resource`](rvm_abi::ObjectKind::Resource) objects.
    pub resource: [u8; 16],
    pub links: Links,
}

impl Capability {
    /// The rights the capability was created with, a consumed GRANT_ONCE
    /// included: what its derivation chain is checked against.
    pub fn original_rights(&self) -> Rights {
        if self.grant_once_used {
            self.rights | Rights::GRANT_ONCE
        } else {
            self.rights
        }
    }

    /// Consume GRANT_ONCE.
    pub fn consume_grant_once(&mut self) {
        self.rights.remove(Rights::GRANT_ONCE);
        self.grant_once_used = true;
    }
}

/// What the kernel tells about a capability (the `CapQuery` hypercall and
/// kernel diagnostics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapInfo {
    pub object: ObjectRef,
    /// Rights usable now (a consumed GRANT_ONCE is not listed).
    pub rights: Rights,
    /// Proof tier of each usable right, in
    /// [`RIGHT_NAMES`](rvm_abi::rights::RIGHT_NAMES) order, 0 = not held.
    pub tiers: [u8; 7],
    pub expiry: Timestamp,
    pub window: ByteWindow,
    pub quota: Quota,
    /// Epoch of the usage figures and the calls and bytes used in it.
    pub usage_epoch: Epoch,
    pub calls_used: u32,
    pub bytes_used: u64,
    pub depth: u8,
    /// GRANT_ONCE was held and has been used.
    pub grant_once_consumed: bool,
    /// An authority key is bound, so P3 operations can be approved.
    pub has_authority: bool,
    pub resource: [u8; 16],
}

impl CapInfo {
    pub(crate) fn of(cap: &Capability) -> CapInfo {
        let rights = cap.rights;
        CapInfo {
            object: cap.object,
            rights,
            tiers: cap.tiers.to_table(rights),
            expiry: cap.expiry,
            window: cap.window,
            quota: cap.quota,
            usage_epoch: cap.usage.epoch,
            calls_used: cap.usage.calls,
            bytes_used: cap.usage.bytes,
            depth: cap.depth,
            grant_once_consumed: cap.grant_once_used,
            has_authority: cap.authority.is_some(),
            resource: cap.resource,
        }
    }

    /// The proof tier an operation needing `needed` would run at.
    pub fn tier_for(&self, needed: Rights) -> ProofTier {
        needed
            .each()
            .filter_map(|(r, _)| r.index().and_then(|i| ProofTier::from_u8(self.tiers[i])))
            .max()
            .unwrap_or(ProofTier::P1)
    }
}
