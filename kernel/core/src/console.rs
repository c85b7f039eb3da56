//! Console output: guest text is line-buffered per partition and printed as
//! `[name] text`, so a guest can never start a line of its own (and so can
//! never forge a witness frame or the exit frame); control characters are
//! replaced, `\r` dropped, `\n` ends the guest's line. Every line, a
//! guest's or the hypervisor's, goes to the UART in one write, so no output
//! from elsewhere (another CPU's panic, say) can land inside it and leave
//! the rest of a guest's line at the start of one.

use crate::arch::Arch;
use crate::partition::{Partition, CONSOLE_LINE_MAX};
use rvm_abi::ident::MAX_IDENT_LEN;

/// Print a hypervisor line: `rvm: ...`, in one write (a line longer than
/// [`HYP_LINE_MAX`] goes out in pieces of that size; all of it is the
/// hypervisor's own text).
pub fn hyp_line(arch: &mut dyn Arch, args: core::fmt::Arguments<'_>) {
    let mut w = LineWriter {
        arch,
        buf: [0; HYP_LINE_MAX],
        len: 0,
    };
    let _ = core::fmt::write(&mut w, format_args!("rvm: {}\n", args));
    w.flush();
}

/// The longest hypervisor line written in one piece.
pub const HYP_LINE_MAX: usize = 512;

struct LineWriter<'a> {
    arch: &'a mut dyn Arch,
    buf: [u8; HYP_LINE_MAX],
    len: usize,
}

impl LineWriter<'_> {
    fn flush(&mut self) {
        if self.len > 0 {
            self.arch.console_write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl core::fmt::Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == HYP_LINE_MAX {
                self.flush();
            }
            let n = rest.len().min(HYP_LINE_MAX - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// Printable form of a guest byte.
fn sanitize(b: u8) -> u8 {
    match b {
        b'\t' | 0x20..=0x7e => b,
        _ if b >= 0x80 => b, // UTF-8 continuation and lead bytes pass
        _ => b'?',
    }
}

/// Append guest text to the partition's line buffer, printing full lines.
pub fn guest_write(arch: &mut dyn Arch, p: &mut Partition, text: &[u8]) {
    for &b in text {
        if b == b'\n' {
            flush_line(arch, p);
            continue;
        }
        if b == b'\r' {
            continue;
        }
        if p.console_line.len() >= CONSOLE_LINE_MAX {
            flush_line(arch, p);
        }
        let _ = p.console_line.push(sanitize(b));
    }
}

/// Print whatever is buffered as one line.
pub fn flush_line(arch: &mut dyn Arch, p: &mut Partition) {
    if p.console_line.is_empty() {
        return;
    }
    let mut line = heapless::Vec::<u8, { MAX_IDENT_LEN + CONSOLE_LINE_MAX + 4 }>::new();
    let name = p.desc.name().as_bytes();
    for part in [
        &b"["[..],
        &name[..name.len().min(MAX_IDENT_LEN)],
        b"] ",
        &p.console_line,
        b"\n",
    ] {
        // Cannot fail: the capacity covers the longest name and line.
        let _ = line.extend_from_slice(part);
    }
    arch.console_write(&line);
    p.console_line.clear();
}
