//! Probe: mask every exception at EL1 and spin forever without a host call.
//! Physical IRQs route to EL2, so the hypervisor's timer must still preempt
//! this vCPU and the other partitions must still run.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_el1::arch::probe;
use rvm_el1::el1_println as println;

rvm_el1::el1_main!(main);

fn main(_boot_info: u64) -> ! {
    println!("probe spin-masked: spinning with DAIF masked");
    probe::spin_masked()
}
