//! The PL011 UART: the console and the witness stream.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! {u32,
    DR [
        /// Error bits (framing, parity, break, overrun) a received byte
        /// carries.
        ERROR OFFSET(8) NUMBITS(4) [],
        DATA OFFSET(0) NUMBITS(8) []
    ],
    FR [
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) []
    ],
    LCR_H [
        /// FIFOs enabled (16 bytes each way), so input typed faster than
        /// the kernel polls is held rather than paced one byte per poll.
        FEN OFFSET(4) NUMBITS(1) []
    ],
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ]
}

register_structs! {
    /// The PL011 registers the driver uses (PL011 TRM, 3.2).
    Registers {
        (0x00 => dr: ReadWrite<u32, DR::Register>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => cr: ReadWrite<u32, CR::Register>),
        (0x34 => @END),
    }
}

/// A PL011: the console's output, and its input polled without waiting
/// (the host's operator orders).
pub struct Pl011 {
    regs: &'static Registers,
}

// SAFETY: the driver is the only path to its registers (`new`'s contract)
// and every access goes through `&mut self` or the console lock, so moving
// it to another CPU cannot make two accesses race; device registers have
// no affinity to the CPU that mapped them.
unsafe impl Send for Pl011 {}

impl Pl011 {
    /// # Safety
    /// `base` must be the PL011's register block, mapped as Device memory,
    /// and this must be its only driver.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller's contract: `base` is a mapped PL011 register
        // block nothing else accesses, live for the whole run.
        let regs = unsafe { &*(base as *const Registers) };
        let cr = regs.cr.extract();
        // The line control register may only change while the UART is off.
        regs.cr.modify_no_read(cr, CR::UARTEN::CLEAR);
        regs.lcr_h.modify(LCR_H::FEN::SET);
        regs.cr.modify_no_read(cr, CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
        Self { regs }
    }

    fn put(&self, b: u8) {
        self.regs.dr.write(DR::DATA.val(u32::from(b)));
    }

    pub fn write_byte(&mut self, b: u8) {
        while self.regs.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        self.put(b);
    }

    /// The next received byte, if the receive FIFO holds one (never waits).
    /// A byte received with an error (framing, parity, break, overrun) is
    /// dropped: the order it belonged to fails its signature check.
    pub fn read_byte(&mut self) -> Option<u8> {
        loop {
            if self.regs.fr.is_set(FR::RXFE) {
                return None;
            }
            let dr = self.regs.dr.extract();
            if dr.read(DR::ERROR) == 0 {
                return Some(dr.read(DR::DATA) as u8);
            }
        }
    }

    /// Write as many of `bytes` as the transmit FIFO takes now, without
    /// waiting (a newline goes out as `\r\n`; once its `\r` is in, the `\n`
    /// waits for one slot at most). Returns how many were written.
    pub fn try_write_bytes(&mut self, bytes: &[u8]) -> usize {
        for (n, &b) in bytes.iter().enumerate() {
            if self.regs.fr.is_set(FR::TXFF) {
                return n;
            }
            if b == b'\n' {
                self.put(b'\r');
                self.write_byte(b);
            } else {
                self.put(b);
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
