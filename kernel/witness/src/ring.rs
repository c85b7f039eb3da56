//! The bounded in-memory ring of a log's recent records, with a drain
//! cursor.
//!
//! Records `first..next` are held. Those below `drained` have been handed to
//! the console streamer and may be overwritten; those from `drained` on may
//! not. A ring whose every slot holds an undrained record refuses the next
//! record: the witness log is fail-closed, so the operation that record
//! describes does not happen.

use alloc::vec::Vec;
use core::num::NonZeroUsize;
use rvm_abi::witness::RECORD_LEN;

/// The ring itself.
pub(crate) struct RecordRing {
    slots: Vec<[u8; RECORD_LEN]>,
    capacity: NonZeroUsize,
    /// Seq of the oldest record held.
    first: u64,
    /// Seq the next record will get.
    next: u64,
    /// Seq of the oldest record not yet drained.
    drained: u64,
    /// Slot the next record goes to (kept as a wrapping counter, so the
    /// append path has no division).
    next_slot: usize,
}

/// The heap could not provide the ring's slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoMemory;

impl RecordRing {
    /// An empty ring of `capacity` records; the memory is taken now, once.
    pub(crate) fn new(capacity: NonZeroUsize) -> Result<Self, NoMemory> {
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(capacity.get())
            .map_err(|_| NoMemory)?;
        Ok(Self {
            slots,
            capacity,
            first: 0,
            next: 0,
            drained: 0,
            next_slot: 0,
        })
    }

    /// An empty ring whose first record will have seq `next` (a log that
    /// continues an earlier boot's).
    pub(crate) fn starting_at(capacity: NonZeroUsize, next: u64) -> Result<Self, NoMemory> {
        let mut r = Self::new(capacity)?;
        r.first = next;
        r.next = next;
        r.drained = next;
        Ok(r)
    }

    pub(crate) fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }

    /// The slot of a held record (`first <= seq < next`).
    fn slot(&self, seq: u64) -> usize {
        // `next - seq` is at most `capacity`, a usize.
        let back = usize::try_from(self.next - seq).unwrap_or(usize::MAX);
        let cap = self.capacity.get();
        if self.next_slot >= back {
            self.next_slot - back
        } else {
            self.next_slot + cap - back
        }
    }

    /// Records appended and not yet drained.
    pub(crate) fn undrained(&self) -> u64 {
        self.next - self.drained
    }

    /// Records that fit without overwriting an undrained one.
    pub(crate) fn free(&self) -> u64 {
        (self.capacity.get() as u64).saturating_sub(self.undrained())
    }

    /// Whether one more record fits without overwriting an undrained one.
    pub(crate) fn has_room(&self) -> bool {
        self.undrained() < self.capacity.get() as u64
    }

    /// Store the record with seq `self.next`. The caller checked
    /// [`has_room`](Self::has_room); a full ring refuses (`false`).
    pub(crate) fn push(&mut self, record: [u8; RECORD_LEN]) -> bool {
        if !self.has_room() {
            return false;
        }
        let i = self.next_slot;
        if i == self.slots.len() {
            // Still filling the reserved memory: no reallocation happens.
            self.slots.push(record);
        } else {
            self.slots[i] = record;
        }
        self.next += 1;
        self.next_slot = if i + 1 == self.capacity.get() {
            0
        } else {
            i + 1
        };
        if self.next - self.first > self.capacity.get() as u64 {
            // The overwritten record was drained (has_room held).
            self.first += 1;
        }
        true
    }

    /// The record with this seq, if the ring still holds it.
    pub(crate) fn get(&self, seq: u64) -> Option<&[u8; RECORD_LEN]> {
        if seq < self.first || seq >= self.next {
            return None;
        }
        self.slots.get(self.slot(seq))
    }

    /// Seq of the oldest record still held.
    #[cfg(test)]
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// The next record to drain.
    pub(crate) fn drain_cursor(&self) -> u64 {
        self.drained
    }

    /// Mark the record at the drain cursor as handed over.
    pub(crate) fn advance_drain(&mut self) -> bool {
        if self.drained < self.next {
            self.drained += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> [u8; RECORD_LEN] {
        [n; RECORD_LEN]
    }

    #[test]
    fn refuses_when_full_of_undrained_and_overwrites_only_drained() {
        let mut r = RecordRing::new(NonZeroUsize::new(3).unwrap()).unwrap();
        assert!(r.push(rec(0)) && r.push(rec(1)) && r.push(rec(2)));
        assert!(!r.has_room());
        assert!(!r.push(rec(3)));
        assert_eq!(r.get(3), None);
        assert!(r.advance_drain());
        assert!(r.push(rec(3)));
        assert_eq!(r.first(), 1);
        assert_eq!(r.get(0), None, "drained record 0 was overwritten");
        assert_eq!(r.get(1), Some(&rec(1)));
        assert_eq!(r.get(3), Some(&rec(3)));
        assert!(!r.push(rec(4)));
        for _ in 0..3 {
            assert!(r.advance_drain());
        }
        assert!(!r.advance_drain());
        assert_eq!(r.undrained(), 0);
        assert_eq!(r.drain_cursor(), 4);
    }

    #[test]
    fn wraps_many_times_like_a_model() {
        let cap = 5;
        let mut r = RecordRing::new(NonZeroUsize::new(cap).unwrap()).unwrap();
        let mut model: std::collections::VecDeque<(u64, u8)> = std::collections::VecDeque::new();
        let mut drained = 0u64;
        let mut next = 0u64;
        for step in 0..500u64 {
            if step % 3 == 0 || step % 7 == 0 {
                if r.advance_drain() {
                    drained += 1;
                }
            } else {
                let ok = r.push(rec(next as u8));
                assert_eq!(ok, next - drained < cap as u64);
                if ok {
                    model.push_back((next, next as u8));
                    if model.len() > cap {
                        model.pop_front();
                    }
                    next += 1;
                }
            }
            for &(seq, v) in &model {
                assert_eq!(r.get(seq), Some(&rec(v)), "step {step} seq {seq}");
            }
            assert_eq!(r.get(next), None);
            if let Some(&(oldest, _)) = model.front() {
                assert_eq!(r.first(), oldest);
            }
        }
    }
}
