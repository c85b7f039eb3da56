//! Volatile access to device registers.

/// A block of device registers at a fixed physical address, identity-mapped
/// as Device memory by the early MMU.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: usize,
}

impl Mmio {
    /// # Safety
    /// `base` must be the physical address of a device register block that
    /// is mapped as Device memory and is not accessed through any other
    /// path that could race with this one.
    pub const unsafe fn new(base: usize) -> Self {
        Self { base }
    }

    pub fn read32(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract makes `base + offset` a device register.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    pub fn write32(&self, offset: usize, v: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, v) }
    }

    pub fn write8(&self, offset: usize, v: u8) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u8, v) }
    }
}
