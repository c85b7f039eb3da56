//! One partition's capability table: slots addressed by handle index, each
//! with a generation so that a handle outliving its capability is detected.
//!
//! # What a handle resolves to
//!
//! A slot's generation is the generation of the capability it holds or last
//! held; it is bumped only when the slot is reused. So, for a handle
//! `(index, generation)`:
//!
//! | slot | handle generation | result |
//! |---|---|---|
//! | index beyond the table | any | `BadHandle` |
//! | never used | any | `BadHandle` |
//! | live | equal | the capability |
//! | live, revoked or retired | lower | `StaleHandle` (the slot was reused since) |
//! | revoked or retired | equal | `Revoked` (this very capability was revoked) |
//! | any | higher | `BadHandle` (never issued: forged) |
//!
//! A table fills never-used slots first and reuses revoked slots oldest
//! first, so a revoked capability's handle answers `Revoked` for as long as
//! possible and `StaleHandle` only after its slot was given to another
//! capability. A slot whose generation reaches `u32::MAX` is retired rather
//! than wrapped, so a generation is never issued twice.

extern crate alloc;

use alloc::vec::Vec;
use rvm_abi::{CapHandle, HvError};

use crate::capability::Capability;

/// Whether the partition's capabilities may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionCapState {
    /// Usable.
    Active,
    /// F3 fence: every use of the partition's handles returns `Suspended`.
    Suspended,
    /// F4 evict: every capability was revoked; nothing can be installed or
    /// derived into the table again.
    Evicted,
}

#[derive(Clone, Debug)]
pub(crate) enum SlotState {
    Vacant,
    Live(Capability),
    /// Revoked, waiting in the reuse queue (`next` = the next queued slot).
    Revoked {
        next: Option<u16>,
    },
    /// Generation space exhausted; never reused.
    Retired,
}

#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub generation: u32,
    pub state: SlotState,
}

/// A partition's capability table.
#[derive(Debug)]
pub(crate) struct Table {
    pub state: PartitionCapState,
    pub slots: Vec<Slot>,
    limit: u16,
    /// Reuse queue of revoked slots, oldest first.
    free_head: Option<u16>,
    free_tail: Option<u16>,
    live: u16,
    /// Never-used slots [`Table::claim_exact`] skipped over, still vacant.
    skipped: u16,
}

impl Table {
    /// A table of `limit` slots, allocated now: installs and derives never
    /// allocate afterwards.
    pub fn new(limit: u16) -> Result<Table, HvError> {
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(usize::from(limit))
            .map_err(|_| HvError::NoMemory)?;
        Ok(Table {
            state: PartitionCapState::Active,
            slots,
            limit,
            free_head: None,
            free_tail: None,
            live: 0,
            skipped: 0,
        })
    }

    /// Number of live capabilities.
    pub fn live(&self) -> u16 {
        self.live
    }

    /// Resolve a handle to its capability, or say exactly why not.
    #[inline]
    pub fn resolve(&self, handle: CapHandle) -> Result<&Capability, HvError> {
        let slot = self
            .slots
            .get(usize::from(handle.index))
            .ok_or(HvError::BadHandle)?;
        decode(slot, handle.generation)?;
        match &slot.state {
            SlotState::Live(cap) => Ok(cap),
            _ => Err(HvError::BadHandle),
        }
    }

    pub fn get(&self, index: u16) -> Option<&Capability> {
        match &self.slots.get(usize::from(index))?.state {
            SlotState::Live(cap) => Some(cap),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, index: u16) -> Option<&mut Capability> {
        match &mut self.slots.get_mut(usize::from(index))?.state {
            SlotState::Live(cap) => Some(cap),
            _ => None,
        }
    }

    /// The handle of the live capability at `index`.
    pub fn handle_of(&self, index: u16) -> Option<CapHandle> {
        let slot = self.slots.get(usize::from(index))?;
        matches!(slot.state, SlotState::Live(_)).then_some(CapHandle::new(index, slot.generation))
    }

    /// Whether [`Table::claim`] would succeed without growing past the limit.
    pub fn has_room(&self) -> bool {
        self.slots.len() < usize::from(self.limit) || self.free_head.is_some() || self.skipped > 0
    }

    /// Pick the slot the next capability will occupy and make it ready
    /// (vacant, with the generation the new handle will carry). The only
    /// fallible step of an install or derive; nothing observable changes
    /// unless it succeeds, apart from retiring exhausted slots.
    pub fn claim(&mut self) -> Result<u16, HvError> {
        if self.slots.len() < usize::from(self.limit) {
            let index = u16::try_from(self.slots.len()).map_err(|_| HvError::Full)?;
            // Within the capacity reserved by `Table::new`: no allocation.
            self.slots.try_reserve(1).map_err(|_| HvError::NoMemory)?;
            self.slots.push(Slot {
                generation: 0,
                state: SlotState::Vacant,
            });
            return Ok(index);
        }
        if let Some(index) = self.skipped_vacant() {
            self.skipped -= 1;
            return Ok(index);
        }
        while let Some(index) = self.free_head {
            let Some(slot) = self.slots.get_mut(usize::from(index)) else {
                return Err(HvError::Full);
            };
            let next = match slot.state {
                SlotState::Revoked { next } => next,
                // The queue only ever holds revoked slots.
                _ => return Err(HvError::Full),
            };
            self.free_head = next;
            if next.is_none() {
                self.free_tail = None;
            }
            match slot.generation.checked_add(1) {
                Some(g) => {
                    slot.generation = g;
                    slot.state = SlotState::Vacant;
                    return Ok(index);
                }
                None => slot.state = SlotState::Retired,
            }
        }
        Err(HvError::Full)
    }

    /// Make slot `index` ready to carry exactly the handle `(index,
    /// generation)` (a capability moved from another table with the agent
    /// that holds its handle). Only a slot never used in this table
    /// qualifies: beyond the slots in use (the never-used slots skipped on
    /// the way stay vacant and are taken by [`Table::claim`] once the table
    /// has no other room), or such a vacant slot. `Full` beyond the limit;
    /// `InvalidArgument` for a slot that was ever used.
    pub fn claim_exact(&mut self, index: u16, generation: u32) -> Result<u16, HvError> {
        let at = usize::from(index);
        if index >= self.limit {
            return Err(HvError::Full);
        }
        if at >= self.slots.len() {
            // Within the capacity reserved by `Table::new`: no allocation.
            self.slots
                .try_reserve(at + 1 - self.slots.len())
                .map_err(|_| HvError::NoMemory)?;
            while self.slots.len() < at {
                self.slots.push(Slot {
                    generation: 0,
                    state: SlotState::Vacant,
                });
                self.skipped += 1;
            }
            self.slots.push(Slot {
                generation,
                state: SlotState::Vacant,
            });
            return Ok(index);
        }
        let slot = &mut self.slots[at];
        // A vacant slot was never issued (claims are filled at once), so no
        // handle of an earlier generation can exist for it.
        if !matches!(slot.state, SlotState::Vacant) {
            return Err(HvError::InvalidArgument);
        }
        slot.generation = generation;
        self.skipped -= 1;
        Ok(index)
    }

    /// A never-used slot left vacant by [`Table::claim_exact`].
    fn skipped_vacant(&self) -> Option<u16> {
        if self.skipped == 0 {
            return None;
        }
        let at = self
            .slots
            .iter()
            .position(|s| matches!(s.state, SlotState::Vacant))?;
        u16::try_from(at).ok()
    }

    /// Put a capability into a slot returned by [`Table::claim`].
    /// `None` (and nothing changed) for any other slot.
    pub fn fill(&mut self, index: u16, cap: Capability) -> Option<CapHandle> {
        let slot = self.slots.get_mut(usize::from(index))?;
        if !matches!(slot.state, SlotState::Vacant) {
            return None;
        }
        slot.state = SlotState::Live(cap);
        self.live += 1;
        Some(CapHandle::new(index, slot.generation))
    }

    /// Revoke the capability at `index` (its links must already be undone)
    /// and queue the slot for reuse. Returns whether a capability was there.
    pub fn release(&mut self, index: u16) -> bool {
        let Some(slot) = self.slots.get_mut(usize::from(index)) else {
            return false;
        };
        if !matches!(slot.state, SlotState::Live(_)) {
            return false;
        }
        slot.state = SlotState::Revoked { next: None };
        match self.free_tail {
            Some(tail) => {
                if let Some(Slot {
                    state: SlotState::Revoked { next },
                    ..
                }) = self.slots.get_mut(usize::from(tail))
                {
                    *next = Some(index);
                }
            }
            None => self.free_head = Some(index),
        }
        self.free_tail = Some(index);
        self.live -= 1;
        true
    }
}

/// The generation rules of the module documentation.
#[inline]
fn decode(slot: &Slot, generation: u32) -> Result<(), HvError> {
    use core::cmp::Ordering::*;
    if generation == slot.generation && matches!(slot.state, SlotState::Live(_)) {
        return Ok(());
    }
    match (&slot.state, generation.cmp(&slot.generation)) {
        (SlotState::Vacant, _) | (_, Greater) => Err(HvError::BadHandle),
        (_, Less) => Err(HvError::StaleHandle),
        (SlotState::Live(_), Equal) => Ok(()),
        (SlotState::Revoked { .. } | SlotState::Retired, Equal) => Err(HvError::Revoked),
    }
}
