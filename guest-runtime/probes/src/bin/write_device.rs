//! Probe: write to a device's physical address — the PL011 data register,
//! or the address given as its input (8 bytes LE: e.g. the control
//! channel's virtio-mmio registers); expect a stage-2 abort (devices are
//! never mapped without a capability), and nothing reaching the device.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_el1::arch::probe;
use rvm_el1::el1_println as println;
use rvm_guest_probes::{not_isolated, start, u64_at, DEVICE_PA};

rvm_el1::el1_main!(main);

fn main(boot_info: u64) -> ! {
    let target = u64_at(start("write-device", boot_info).input(), 0).unwrap_or(DEVICE_PA);
    println!("probe write-device: writing the device at {target:#x}");
    probe::write_u64(target, u64::from(b'!'));
    not_isolated("write-device", target)
}
