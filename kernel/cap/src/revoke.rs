//! Revocation: removing a derived subtree (REVOKE) or everything a partition
//! holds (F4 evict), in one operation, across partitions, without recursion.

use rvm_abi::{CapHandle, HvError, Hypercall, Rights};

use crate::capability::CapRef;
use crate::ids::PartitionId;
use crate::outcome::{Denied, Request, RevokeReport};
use crate::proof::{revoke_args_digest, Signature};
use crate::space::CapabilitySpace;
use crate::table::PartitionCapState;

impl CapabilitySpace {
    /// Revoke every capability derived from `handle`'s, in whichever
    /// partition it lives; `handle`'s own capability stays. Needs REVOKE,
    /// checked like [`CapabilitySpace::check`] at its tier (a P3 approval
    /// signs `CapRevoke` with [`revoke_args_digest`]).
    ///
    /// Takes effect at once: the next use of any removed capability's handle
    /// answers `Revoked`, or `StaleHandle` once its slot has been reused
    /// (see the [`table`](crate::table) module).
    pub fn revoke(
        &mut self,
        caller: PartitionId,
        handle: CapHandle,
        req: &Request,
        signature: Option<&Signature>,
    ) -> Result<RevokeReport, Denied> {
        let proof = signature.map(|s| (Hypercall::CapRevoke, revoke_args_digest(), s));
        let verdict = self.evaluate(caller, handle, Rights::REVOKE, req, proof)?;
        let removed = self.remove_subtree(verdict.at, false);
        self.commit(&verdict);
        Ok(RevokeReport {
            granted: verdict.granted,
            removed,
        })
    }

    /// F4 evict: revoke every capability of `p` and every capability derived
    /// from them, in any partition, and close `p`'s table for good (installs
    /// and derives into it fail with `InvalidArgument`; its handles answer
    /// `Revoked`). Returns how many capabilities were removed.
    /// `InvalidArgument` for an unknown partition.
    pub fn revoke_partition(&mut self, p: PartitionId) -> Result<u32, HvError> {
        let len = self.table(p).ok_or(HvError::InvalidArgument)?.slots.len();
        let mut removed = 0u32;
        for i in 0..len {
            let Ok(index) = u16::try_from(i) else { break };
            let at = CapRef {
                partition: p,
                index,
            };
            if self.cap(at).is_some() {
                removed = removed.saturating_add(self.remove_subtree(at, true));
            }
        }
        if let Some(t) = self.table_mut(p) {
            t.state = PartitionCapState::Evicted;
        }
        Ok(removed)
    }

    /// Remove the subtree under `root` (and `root` itself if
    /// `include_root`). Iterative post-order: go down to a leaf, remove it,
    /// return to its parent, repeat. Each capability is visited a bounded
    /// number of times, so the cost is O(subtree) and the stack use constant.
    pub(crate) fn remove_subtree(&mut self, root: CapRef, include_root: bool) -> u32 {
        let mut removed = 0u32;
        let mut cur = root;
        while let Some(cap) = self.cap(cur) {
            if let Some(child) = cap.links.first_child {
                cur = child;
                continue;
            }
            let parent = cap.links.parent;
            let at_root = cur == root;
            if !at_root || include_root {
                self.detach(cur);
                if self
                    .table_mut(cur.partition)
                    .is_some_and(|t| t.release(cur.index))
                {
                    removed = removed.saturating_add(1);
                }
            }
            if at_root {
                break;
            }
            match parent {
                Some(p) => cur = p,
                None => break,
            }
        }
        removed
    }

    /// Take `r` out of its parent's list of children.
    fn detach(&mut self, r: CapRef) {
        let Some(links) = self.cap(r).map(|c| c.links) else {
            return;
        };
        match links.prev_sibling {
            Some(prev) => {
                if let Some(c) = self.cap_mut(prev) {
                    c.links.next_sibling = links.next_sibling;
                }
            }
            None => {
                if let Some(c) = links.parent.and_then(|p| self.cap_mut(p)) {
                    c.links.first_child = links.next_sibling;
                }
            }
        }
        if let Some(c) = links.next_sibling.and_then(|n| self.cap_mut(n)) {
            c.links.prev_sibling = links.prev_sibling;
        }
    }
}
