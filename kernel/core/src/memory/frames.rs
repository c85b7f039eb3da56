//! The pool of 4 KiB host-physical frames that partitions and stage-2 tables
//! are built from.

use alloc::vec::Vec;

use crate::memory::addr::{PhysAddr, PhysRange, PAGE_SIZE};

/// Hands out page frames from free RAM ranges; freed frames are reused first.
pub struct FrameAllocator {
    ranges: Vec<PhysRange>,
    /// Next never-used frame in `ranges[cursor_range]`.
    cursor: PhysAddr,
    cursor_range: usize,
    free: Vec<PhysAddr>,
    in_use: u64,
    total: u64,
    /// Frames promised to admitted partitions ([`FrameAllocator::commit`]).
    committed: u64,
    /// Frames in use when the first partition was admitted (the
    /// hypervisor's own: the shared runtime image, ...).
    base: Option<u64>,
}

impl FrameAllocator {
    /// A pool over `ranges` (trimmed to whole pages).
    pub fn new(ranges: &[PhysRange]) -> Self {
        let mut trimmed = Vec::new();
        let mut total = 0;
        for r in ranges {
            let start = crate::memory::addr::page_round_up(r.start.raw()).unwrap_or(u64::MAX);
            let end = r.end.raw() & !(PAGE_SIZE - 1);
            if start < end {
                trimmed.push(PhysRange { start: PhysAddr::new(start), end: PhysAddr::new(end) });
                total += (end - start) / PAGE_SIZE;
            }
        }
        let cursor = trimmed.first().map(|r| r.start).unwrap_or_default();
        Self { ranges: trimmed, cursor, cursor_range: 0, free: Vec::new(), in_use: 0, total, committed: 0, base: None }
    }

    /// Reserve `n` frames for a partition being admitted: its most (its
    /// memory budget, snapshots, tables, images). Admission is refused
    /// (`Err`, with the frames still unpromised) when the promises would
    /// exceed the pool, so partitions are never overcommitted: whatever one
    /// does within its budget, the others' frames are there.
    pub fn commit(&mut self, n: u64) -> Result<(), u64> {
        let base = *self.base.get_or_insert(self.in_use);
        let free = self.total.saturating_sub(base).saturating_sub(self.committed);
        if n > free {
            return Err(free);
        }
        self.committed += n;
        Ok(())
    }

    /// Give back a promise (the partition was refused or evicted).
    pub fn uncommit(&mut self, n: u64) {
        self.committed = self.committed.saturating_sub(n);
    }

    /// Frames promised to partitions.
    pub fn frames_committed(&self) -> u64 {
        self.committed
    }

    /// One frame (not zeroed), or `None` when RAM is exhausted.
    pub fn alloc(&mut self) -> Option<PhysAddr> {
        let pa = match self.free.pop() {
            Some(pa) => pa,
            None => loop {
                let range = self.ranges.get(self.cursor_range)?;
                if self.cursor < range.end {
                    let pa = self.cursor;
                    self.cursor = PhysAddr::new(pa.raw() + PAGE_SIZE);
                    break pa;
                }
                self.cursor_range += 1;
                self.cursor = self.ranges.get(self.cursor_range)?.start;
            },
        };
        self.in_use += 1;
        Some(pa)
    }

    /// Return a frame to the pool.
    pub fn free(&mut self, pa: PhysAddr) {
        debug_assert!(pa.is_page_aligned());
        self.in_use = self.in_use.saturating_sub(1);
        self.free.push(pa);
    }

    pub fn frames_in_use(&self) -> u64 {
        self.in_use
    }

    pub fn frames_total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_across_ranges_and_reuses_freed_frames() {
        let ranges = [
            PhysRange::new(PhysAddr::new(0x1001), 0x2000).unwrap(),
            PhysRange::new(PhysAddr::new(0x10000), 0x1000).unwrap(),
        ];
        let mut a = FrameAllocator::new(&ranges);
        assert_eq!(a.frames_total(), 2);
        let f1 = a.alloc().unwrap();
        let f2 = a.alloc().unwrap();
        assert_eq!((f1.raw(), f2.raw()), (0x2000, 0x10000));
        assert_eq!(a.alloc(), None);
        a.free(f1);
        assert_eq!(a.alloc(), Some(f1));
        assert_eq!(a.frames_in_use(), 2);
    }
}
