//! EL1 support shared by every guest image (the runtime and the probes):
//! entry and exception vectors, hypercalls, the console, the heap and the
//! panic handler. All `unsafe` is in [`arch`].
#![no_std]
#![deny(unsafe_code)]

pub mod arch;
pub mod console;
pub mod hostcalls;

use rvm_abi::bootinfo::exit;

/// A panic in an EL1 image: print it and exit with [`exit::RUNTIME_PANIC`].
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::print(format_args!("el1: panic: {info}\n"));
    arch::exit(exit::RUNTIME_PANIC)
}
