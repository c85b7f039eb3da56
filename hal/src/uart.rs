//! The PL011 UART: the console and the witness stream.

use crate::mmio::Mmio;

const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;
/// Receive FIFO empty.
const FR_RXFE: u32 = 1 << 4;
/// Error bits (framing, parity, break, overrun) a received byte carries in `DR`.
const DR_ERRORS: u32 = 0xf00;
const LCR_H: usize = 0x2c;
/// Line control: FIFOs enabled (16 bytes each way), so input typed faster
/// than the kernel polls is held rather than paced one byte per poll.
const LCR_H_FEN: u32 = 1 << 4;
const CR: usize = 0x30;
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;
const CR_RXE: u32 = 1 << 9;

/// A PL011: the console's output, and its input polled without waiting
/// (the host's operator orders).
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
        // The line control register may only change while the UART is off.
        regs.write32(CR, cr & !CR_UARTEN);
        let lcr = regs.read32(LCR_H);
        regs.write32(LCR_H, lcr | LCR_H_FEN);
        regs.write32(CR, cr | CR_UARTEN | CR_TXE | CR_RXE);
        Self { regs }
    }

    pub fn write_byte(&mut self, b: u8) {
        while self.regs.read32(FR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        self.regs.write8(DR, b);
    }

    /// The next received byte, if the receive FIFO holds one (never waits).
    /// A byte received with an error (framing, parity, break, overrun) is
    /// dropped: the order it belonged to fails its signature check.
    pub fn read_byte(&mut self) -> Option<u8> {
        loop {
            if self.regs.read32(FR) & FR_RXFE != 0 {
                return None;
            }
            let dr = self.regs.read32(DR);
            if dr & DR_ERRORS == 0 {
                return Some((dr & 0xff) as u8);
            }
        }
    }

    /// Write as many of `bytes` as the transmit FIFO takes now, without
    /// waiting (a newline goes out as `\r\n`; once its `\r` is in, the `\n`
    /// waits for one slot at most). Returns how many were written.
    pub fn try_write_bytes(&mut self, bytes: &[u8]) -> usize {
        for (n, &b) in bytes.iter().enumerate() {
            if self.regs.read32(FR) & FR_TXFF != 0 {
                return n;
            }
            if b == b'\n' {
                self.regs.write8(DR, b'\r');
                self.write_byte(b);
            } else {
                self.regs.write8(DR, b);
            }
        }
        bytes.len()
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
