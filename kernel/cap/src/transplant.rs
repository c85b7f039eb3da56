//! Moving a capability with the agent that holds its handle: when the
//! kernel moves an agent to another partition (a coherence-domain split),
//! the handles the agent cached in its memory must keep working there. A
//! transplant derives a child of the original into the new partition's
//! table at exactly the original's slot and generation, so the same raw
//! handle resolves to it, and revoking the original (or anything above it)
//! still reaches the copy.
//!
//! This is a kernel decision, not a guest's use of a right: no GRANT is
//! needed or consumed and no policy is charged. The child keeps the
//! original's rights, tiers, window, expiry, quota and authority; its depth
//! is one more (bounded by [`MAX_DERIVATION_DEPTH`]). Its own quota usage
//! starts fresh, but every use is charged to the original (and up to the
//! root) too, and it shares the root's nonce floor.

use rvm_abi::{CapHandle, HvError};

use crate::capability::{CapRef, Capability, Links};
use crate::ids::PartitionId;
use crate::policy::MAX_DERIVATION_DEPTH;
use crate::quota::Usage;
use crate::space::CapabilitySpace;
use crate::table::PartitionCapState;

impl CapabilitySpace {
    /// Whether [`CapabilitySpace::transplant`] of `handle` from `from` into
    /// `to` would succeed, without changing anything: the same refusals
    /// (bar `NoMemory`). A move of several handles checks them all first,
    /// so it either moves every one or none.
    pub fn can_transplant(
        &self,
        from: PartitionId,
        handle: CapHandle,
        to: PartitionId,
    ) -> Result<(), HvError> {
        let parent = self.resolve(from, handle)?;
        match parent.depth.checked_add(1) {
            Some(d) if d <= MAX_DERIVATION_DEPTH => {}
            _ => return Err(HvError::DepthExceeded),
        }
        let table = self.table(to).ok_or(HvError::InvalidArgument)?;
        match table.state {
            PartitionCapState::Active => {}
            PartitionCapState::Suspended => return Err(HvError::Suspended),
            PartitionCapState::Evicted => return Err(HvError::InvalidArgument),
        }
        if handle.index >= self.policy().slots_per_partition {
            return Err(HvError::Full);
        }
        match table.slots.get(usize::from(handle.index)) {
            Some(slot) if !matches!(slot.state, crate::table::SlotState::Vacant) => {
                Err(HvError::InvalidArgument)
            }
            _ => Ok(()),
        }
    }

    /// Derive `handle` of partition `from` into partition `to`'s table at
    /// the same slot and generation; returns the handle (equal to
    /// `handle`). Refusals: the original does not resolve (its error), the
    /// target has no table or is evicted (`InvalidArgument`) or fenced
    /// (`Suspended`), the slot was ever used in the target
    /// (`InvalidArgument`), the depth bound (`DepthExceeded`), the table's
    /// limit (`Full`). Nothing changes unless it succeeds.
    pub fn transplant(
        &mut self,
        from: PartitionId,
        handle: CapHandle,
        to: PartitionId,
    ) -> Result<CapHandle, HvError> {
        let parent = self.resolve(from, handle)?;
        let depth = match parent.depth.checked_add(1) {
            Some(d) if d <= MAX_DERIVATION_DEPTH => d,
            _ => return Err(HvError::DepthExceeded),
        };
        let at = CapRef {
            partition: from,
            index: handle.index,
        };
        let old_first = parent.links.first_child;
        let child = Capability {
            depth,
            grant_once_used: false,
            usage: Usage::default(),
            last_nonce: 0,
            links: Links {
                parent: Some(at),
                first_child: None,
                prev_sibling: None,
                next_sibling: old_first,
            },
            ..parent.clone()
        };
        let table = self.table_mut(to).ok_or(HvError::InvalidArgument)?;
        match table.state {
            PartitionCapState::Active => {}
            PartitionCapState::Suspended => return Err(HvError::Suspended),
            PartitionCapState::Evicted => return Err(HvError::InvalidArgument),
        }
        let index = table.claim_exact(handle.index, handle.generation)?;
        let placed = table.fill(index, child).ok_or(HvError::Full)?;
        let child_ref = CapRef {
            partition: to,
            index,
        };
        if let Some(first) = old_first.and_then(|r| self.cap_mut(r)) {
            first.links.prev_sibling = Some(child_ref);
        }
        if let Some(p) = self.cap_mut(at) {
            p.links.first_child = Some(child_ref);
        }
        Ok(placed)
    }
}
