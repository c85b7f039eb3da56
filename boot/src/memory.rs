//! Which RAM is free: all of it, minus the image (and, for the frame pool,
//! the heap), the device tree and the bundle.

use rvm_hal::dtb::Platform;
use rvm_kernel::memory::addr::PhysRange;

/// RAM ranges left after removing `taken`, the device tree and the bundle.
pub fn free_ranges(p: &Platform, taken: &[PhysRange]) -> heapless::Vec<PhysRange, 16> {
    let mut reserved: heapless::Vec<PhysRange, 4> = heapless::Vec::new();
    for t in taken {
        let _ = reserved.push(*t);
    }
    let _ = reserved.push(p.dtb);
    if let Some(i) = p.initrd {
        let _ = reserved.push(i);
    }
    let mut free: heapless::Vec<PhysRange, 16> = p.memory.iter().copied().collect();
    for r in &reserved {
        let mut next: heapless::Vec<PhysRange, 16> = heapless::Vec::new();
        for f in &free {
            if !f.overlaps(r) {
                let _ = next.push(*f);
                continue;
            }
            if f.start < r.start {
                let _ = next.push(PhysRange { start: f.start, end: r.start });
            }
            if r.end < f.end {
                let _ = next.push(PhysRange { start: r.end, end: f.end });
            }
        }
        free = next;
    }
    free
}
