//! The PL011 UART: the console and the witness stream.

use crate::mmio::Mmio;

const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;
const CR: usize = 0x30;
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;

/// A PL011 used for output only.
pub struct Pl011 {
    regs: Mmio,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the PL011's register block, mapped as Device memory,
    /// and this must be its only driver.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: forwarded from the caller.
        let regs = unsafe { Mmio::new(base) };
        let cr = regs.read32(CR);
        regs.write32(CR, cr | CR_UARTEN | CR_TXE);
        Self { regs }
    }

    pub fn write_byte(&mut self, b: u8) {
        while self.regs.read32(FR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        self.regs.write8(DR, b);
    }

    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }
}

impl core::fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}
