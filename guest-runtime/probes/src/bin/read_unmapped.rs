//! Probe: read an IPA the layout never maps; expect a stage-2 abort.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_el1::arch::probe;
use rvm_el1::el1_println as println;
use rvm_guest_probes::{not_isolated, UNMAPPED_IPA};

rvm_el1::el1_main!(main);

fn main(_boot_info: u64) -> ! {
    println!("probe read-unmapped: reading unmapped IPA {UNMAPPED_IPA:#x}");
    let v = probe::read_u64(UNMAPPED_IPA);
    println!("probe read-unmapped: read {v:#x}");
    not_isolated("read-unmapped", UNMAPPED_IPA)
}
