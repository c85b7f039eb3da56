//! Probe: write a character to the PL011 data register's physical address;
//! expect a stage-2 abort (devices are never mapped without a capability),
//! and no `!` on the host's serial console.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_el1::arch::probe;
use rvm_el1::el1_println as println;
use rvm_guest_probes::{not_isolated, DEVICE_PA};

rvm_el1::el1_main!(main);

fn main(_boot_info: u64) -> ! {
    println!("probe write-device: writing the UART at {DEVICE_PA:#x}");
    probe::write_u64(DEVICE_PA, u64::from(b'!'));
    not_isolated("write-device", DEVICE_PA)
}
