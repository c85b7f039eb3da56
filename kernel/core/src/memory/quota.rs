//! The EL2 heap, shared out: every partition is admitted with a reservation
//! of the hypervisor's heap for what its guest controls there — its state
//! store (committed and staged items), the store snapshots its snapshots
//! keep, its witness log's ring, and the receive queues of its channels —
//! and refused (witnessed, like a frame budget that does not fit) when the
//! reservation does not fit. Each of those is bounded per partition
//! ([`StoreLimits`], [`MAX_MESSAGE`], the queue capacity), so no partition
//! can exhaust the heap for the others; a partition that reaches its bounds
//! is refused (`Full`, `NoMemory`), and refusals count toward its abuse
//! policy (F3). Buffers whose size the guest names are allocated fallibly
//! (`NoMemory` instead of an abort).

use crate::channel::MAX_MESSAGE;
use rvm_state::store::StoreLimits;

/// The smallest EL2 heap the hypervisor runs with (and the one host tests
/// get): the boot code gives the allocator more when the machine has the
/// RAM ([`crate::memory::Memory`]).
pub const EL2_HEAP_BYTES: usize = 64 << 20;

/// Heap the hypervisor keeps for itself: the capability tables, its own log,
/// partitions' fixed state, transient buffers of one call.
pub const HYPERVISOR_HEAP_BYTES: usize = 8 << 20;

/// Allocator and map overhead counted per stored item or queued message.
const ITEM_OVERHEAD: usize = 128;

/// Fixed heap per partition beside its store: its witness log ring (1024
/// records), its descriptors and tables.
const PARTITION_FIXED: usize = 128 << 10;

/// The heap a partition whose store has `limits` may use at most: its
/// committed items three times over (the live store, the snapshot its last
/// snapshot keeps, the one a new snapshot takes before the last is
/// dropped), one transaction of staged items, and its fixed state.
pub const fn partition_bytes(limits: &StoreLimits) -> usize {
    let committed = limits.max_bytes + limits.max_items * ITEM_OVERHEAD;
    let staged = limits.max_staged * (limits.max_key + limits.max_value + ITEM_OVERHEAD);
    3 * committed + staged + PARTITION_FIXED
}

/// The heap one receive queue of `capacity` messages may use.
pub const fn queue_bytes(capacity: usize) -> usize {
    capacity * (MAX_MESSAGE + ITEM_OVERHEAD)
}

/// The heap reserved for partitions.
#[derive(Debug)]
pub struct HeapLedger {
    /// What partitions may reserve: the heap less the hypervisor's own.
    capacity: usize,
    committed: usize,
}

impl HeapLedger {
    /// The ledger of a heap of `heap_bytes`.
    pub fn new(heap_bytes: usize) -> Self {
        Self { capacity: heap_bytes.saturating_sub(HYPERVISOR_HEAP_BYTES), committed: 0 }
    }

    /// Bytes partitions may reserve in all.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Reserve `n` bytes, or answer how many are left (nothing reserved).
    pub fn commit(&mut self, n: usize) -> Result<(), usize> {
        let free = self.capacity.saturating_sub(self.committed);
        if n > free {
            return Err(free);
        }
        self.committed += n;
        Ok(())
    }

    pub fn uncommit(&mut self, n: usize) {
        self.committed = self.committed.saturating_sub(n);
    }

    /// Bytes reserved for partitions.
    pub fn committed(&self) -> usize {
        self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_refuses_what_does_not_fit_and_takes_back_what_is_released() {
        let mut l = HeapLedger::new(EL2_HEAP_BYTES);
        let per = partition_bytes(&StoreLimits::DEFAULT);
        let fits = l.capacity() / per;
        assert_eq!(l.capacity(), EL2_HEAP_BYTES - HYPERVISOR_HEAP_BYTES);
        assert!(
            fits >= 8,
            "the default heap admits at least 8 partitions with default stores ({fits})"
        );
        for _ in 0..fits {
            l.commit(per).unwrap();
        }
        let left = l.commit(per).unwrap_err();
        assert!(left < per);
        l.uncommit(per);
        l.commit(per).unwrap();
    }

    #[test]
    fn a_larger_heap_admits_more_partitions() {
        let per = partition_bytes(&StoreLimits::DEFAULT);
        let small = HeapLedger::new(EL2_HEAP_BYTES).capacity() / per;
        let large = HeapLedger::new(256 << 20).capacity() / per;
        assert!(large >= 64 && large > 4 * small - 4, "{small} then {large}");
    }
}
