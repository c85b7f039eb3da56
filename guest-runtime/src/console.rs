//! The partition console: formatted lines through `ConsoleWrite`.

use core::fmt;

use rvm_abi::Hypercall;
use rvm_guest::console::LineWriter;

use crate::arch::{hypercall, Arg};

/// Write bytes to the console; errors are dropped (there is nowhere else to
/// report them).
pub fn write(bytes: &[u8]) {
    let _ = hypercall(Hypercall::ConsoleWrite, &mut [Arg::In(bytes)]);
}

/// Write formatted text, buffered into lines of
/// [`LINE_CAP`](rvm_guest::console::LINE_CAP) bytes: no heap needed, so it
/// works before the heap exists and inside the panic handler.
pub fn print(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::new(write);
    let _ = fmt::Write::write_fmt(&mut w, args);
    w.flush();
}

/// `println!` for EL1 images.
#[macro_export]
macro_rules! el1_println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
