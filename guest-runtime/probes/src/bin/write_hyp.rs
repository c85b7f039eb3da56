//! Probe: write to the hypervisor's physical load address, used as an IPA;
//! expect a stage-2 abort (hypervisor memory is never mapped into a partition).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_el1::arch::probe;
use rvm_el1::el1_println as println;
use rvm_guest_probes::{not_isolated, require_outside_image, HYPERVISOR_PA};

rvm_el1::el1_main!(main);

fn main(_boot_info: u64) -> ! {
    require_outside_image("write-hyp", HYPERVISOR_PA);
    println!("probe write-hyp: writing hypervisor memory at {HYPERVISOR_PA:#x}");
    probe::write_u64(HYPERVISOR_PA, 0xdead_beef_dead_beef);
    not_isolated("write-hyp", HYPERVISOR_PA)
}
