//! The hypervisor's own heap: a region of free RAM sized from the RAM the
//! device tree describes.

use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::LockedHeap;
use rvm_hal::dtb::Platform;
use rvm_kernel::memory::addr::{PhysAddr, PhysRange};
use rvm_kernel::memory::quota::EL2_HEAP_BYTES;

/// The largest heap: past this, more RAM goes to partitions' frames.
const MAX_HEAP: u64 = 1 << 30;

/// Where the heap starts (aligned to this).
const ALIGN: u64 = 2 << 20;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// The heap's range, once [`init`] placed it.
static START: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// What the image occupies.
pub fn image() -> PhysRange {
    let start = core::ptr::addr_of!(__image_start) as u64;
    let end = core::ptr::addr_of!(__image_end) as u64;
    PhysRange { start: PhysAddr::new(start), end: PhysAddr::new(end) }
}

/// Where the heap goes on a machine `p`: a quarter of its RAM (the kernel
/// shares the heap out among partitions, `rvm_kernel::memory::quota`, so
/// the partitions a machine admits grow with its RAM), at least
/// [`EL2_HEAP_BYTES`] and at most [`MAX_HEAP`], at the start of the largest
/// free RAM range (not the image, the device tree or the bundle), smaller
/// if that range is; `None` when no range holds the smallest heap.
pub fn place(p: &Platform) -> Option<PhysRange> {
    let ram: u64 = p.memory.iter().map(|r| r.len()).sum();
    let want = (ram / 4).clamp(EL2_HEAP_BYTES as u64, MAX_HEAP) & !(ALIGN - 1);
    let free = crate::memory::free_ranges(p, &[image()]);
    let (start, room) = free
        .iter()
        .filter_map(|r| {
            let start = r.start.raw().checked_next_multiple_of(ALIGN)?;
            Some((start, r.end.raw().checked_sub(start)?))
        })
        .max_by_key(|&(_, room)| room)?;
    let size = want.min(room & !(ALIGN - 1));
    (size >= EL2_HEAP_BYTES as u64).then(|| PhysRange { start: PhysAddr::new(start), end: PhysAddr::new(start + size) })
}

/// The heap's range ([`place`]'s answer, once [`init`] took it).
pub fn range() -> PhysRange {
    PhysRange { start: PhysAddr::new(START.load(Ordering::Acquire)), end: PhysAddr::new(END.load(Ordering::Acquire)) }
}

/// Hand `at` to the allocator (once, on the boot CPU, before anything
/// allocates).
pub fn init(at: PhysRange) {
    assert_eq!(END.swap(at.end.raw(), Ordering::AcqRel), 0, "the heap is set up once");
    START.store(at.start.raw(), Ordering::Release);
    let size = usize::try_from(at.len()).unwrap_or(EL2_HEAP_BYTES);
    // SAFETY: `at` is RAM the device tree describes, identity-mapped
    // writable by the early map, and used by nothing else: `place` took it
    // from the free ranges (not the image, device tree or bundle), the frame
    // pool excludes it (`range`), and it is given to the allocator exactly
    // once (the swap above).
    unsafe { ALLOCATOR.lock().init(at.start.raw() as *mut u8, size) };
}
