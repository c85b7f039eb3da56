//! Memory: addresses, the frame pool, stage-2 tables (what isolates one
//! partition from another), guest-memory access from EL2, the EL2 map, and
//! the reservations that admission charges against.
//!
//! * [`addr`] — physical addresses, IPAs, pages.
//! * [`frames`] — the pool of 4 KiB frames.
//! * [`stage2`] — a partition's stage-2 translation tables.
//! * [`guest_mem`] — reading and writing a guest's memory through its tables.
//! * [`el2map`] — the hypervisor's own W^X map.
//! * [`quota`] — frames and EL2 heap reserved at admission.

pub mod addr;
pub mod el2map;
pub mod frames;
pub mod guest_mem;
pub mod quota;
pub mod stage2;

use frames::FrameAllocator;

/// What the hypervisor is given to share out: the frame pool (guest
/// memory, tables) and the size of its own heap (charged per partition by
/// [`quota::HeapLedger`]).
pub struct Memory {
    pub frames: FrameAllocator,
    pub heap_bytes: usize,
}

/// A frame pool alone runs with the smallest heap ([`quota::EL2_HEAP_BYTES`]).
impl From<FrameAllocator> for Memory {
    fn from(frames: FrameAllocator) -> Self {
        Self { frames, heap_bytes: quota::EL2_HEAP_BYTES }
    }
}
