//! Line-buffered formatted console output without a heap: a line is built
//! in a fixed buffer and written with one host call.

use core::fmt;

/// Longest line [`println!`](crate::println) writes in one call; longer
/// text is written in pieces of this size.
pub const LINE_CAP: usize = 192;

/// A fixed-capacity line buffer that flushes to `sink` when full.
pub struct LineWriter<F: FnMut(&[u8])> {
    buf: [u8; LINE_CAP],
    len: usize,
    sink: F,
}

impl<F: FnMut(&[u8])> LineWriter<F> {
    /// An empty line writing to `sink`.
    pub fn new(sink: F) -> Self {
        Self {
            buf: [0; LINE_CAP],
            len: 0,
            sink,
        }
    }

    /// Write out what is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<F: FnMut(&[u8])> fmt::Write for LineWriter<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.len == LINE_CAP {
                self.flush();
            }
            let n = rest.len().min(LINE_CAP - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&rest[..n]);
            self.len += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

/// Print a formatted line to the partition's console (one host call per
/// line of up to [`LINE_CAP`] bytes). Errors from the host are ignored.
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        let mut w = $crate::console::LineWriter::new(|b: &[u8]| { let _ = $crate::console_write(b); });
        let _ = ::core::fmt::Write::write_fmt(&mut w, format_args!($($arg)*));
        let _ = ::core::fmt::Write::write_str(&mut w, "\n");
        w.flush();
    }};
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write;
    use std::vec::Vec;

    #[test]
    fn long_text_is_written_in_line_sized_pieces() {
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        {
            let mut w = LineWriter::new(|b: &[u8]| pieces.push(b.to_vec()));
            let long = "x".repeat(LINE_CAP + 10);
            write!(w, "{long}!").unwrap();
            w.flush();
        }
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].len(), LINE_CAP);
        assert_eq!(pieces[1].len(), 11);
        assert_eq!(pieces[1].last(), Some(&b'!'));
    }
}
