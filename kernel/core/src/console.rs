//! Console output: guest text is line-buffered per partition and printed as
//! `[name] text`, so a guest can never start a line of its own (and so can
//! never forge a witness frame); control characters are replaced.

use crate::arch::Arch;
use crate::partition::{Partition, CONSOLE_LINE_MAX};

/// Print a hypervisor line: `rvm: ...`.
pub fn hyp_line(arch: &mut dyn Arch, args: core::fmt::Arguments<'_>) {
    let mut w = LineWriter { arch };
    let _ = core::fmt::write(&mut w, format_args!("rvm: {}\n", args));
}

struct LineWriter<'a> {
    arch: &'a mut dyn Arch,
}

impl core::fmt::Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.arch.console_write(s.as_bytes());
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
    arch.console_write(b"[");
    arch.console_write(p.desc.name().as_bytes());
    arch.console_write(b"] ");
    arch.console_write(&p.console_line);
    arch.console_write(b"\n");
    p.console_line.clear();
}
