//! The hypervisor's own heap: a fixed region right after the image.

use linked_list_allocator::LockedHeap;
use rvm_kernel::memory::addr::{PhysAddr, PhysRange};

/// Size of the EL2 heap: the kernel shares it out among partitions
/// (`rvm_kernel::memory::quota`).
pub const HEAP_SIZE: usize = rvm_kernel::memory::quota::EL2_HEAP_BYTES;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

fn image_end() -> usize {
    core::ptr::addr_of!(__image_end) as usize
}

/// Everything the image and its heap occupy.
pub fn range() -> PhysRange {
    let start = core::ptr::addr_of!(__image_start) as u64;
    PhysRange { start: PhysAddr::new(start), end: PhysAddr::new((image_end() + HEAP_SIZE) as u64) }
}

/// Hand the region after the image to the allocator.
pub fn init() {
    // SAFETY: [image_end, image_end + HEAP_SIZE) is RAM (QEMU virt and the
    // boards we support have far more RAM after the image), is excluded from
    // the frame pool by `range`, and is given to the allocator exactly once.
    unsafe { ALLOCATOR.lock().init(image_end() as *mut u8, HEAP_SIZE) };
}
