//! Dormant-tier figures per partition: how often it slept and woke, and
//! what each cost.

use alloc::vec::Vec;

/// Per-partition dormancy figures (indexed like the partitions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dormancy {
    /// Times the partition went dormant.
    pub sleeps: u32,
    /// Times a message woke it.
    pub wakes: u32,
    /// Frames returned to the pool by the last sleep.
    pub last_reclaimed: u64,
    /// Frames taken from the pool by the last wake.
    pub last_restored: u64,
    /// Clock time the last wake took (rebuild and recreate, not the
    /// runtime's own restore, which runs in the guest).
    pub last_wake_ns: u64,
}

/// The hypervisor's dormancy ledger.
#[derive(Default)]
pub(crate) struct DormantLedger {
    per_partition: Vec<Dormancy>,
}

impl DormantLedger {
    /// Partition `idx` went dormant, returning `reclaimed` frames.
    pub(crate) fn note_sleep(&mut self, idx: usize, reclaimed: u64) {
        let d = self.entry(idx);
        d.sleeps += 1;
        d.last_reclaimed = reclaimed;
    }

    /// A message woke partition `idx`: it took `restored` frames and
    /// `took_ns` of clock time.
    pub(crate) fn note_wake(&mut self, idx: usize, restored: u64, took_ns: u64) {
        let d = self.entry(idx);
        d.wakes += 1;
        d.last_restored = restored;
        d.last_wake_ns = took_ns;
    }

    fn entry(&mut self, idx: usize) -> &mut Dormancy {
        if self.per_partition.len() <= idx {
            self.per_partition.resize(idx + 1, Dormancy::default());
        }
        &mut self.per_partition[idx]
    }

    /// Figures for partition `idx`.
    pub(crate) fn get(&self, idx: usize) -> Dormancy {
        self.per_partition.get(idx).copied().unwrap_or_default()
    }
}

