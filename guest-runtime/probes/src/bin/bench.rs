//! Probe: measure hypercall round trips from EL1 in cycles (instructions
//! under `-icount shift=0`), print them, and exit. Prints lines of the form
//! `bench <name> min <n> median <n> samples <n>`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::Hypercall;
use rvm_el1::arch::bench::hvc_round_trip;
use rvm_el1::el1_println as println;

rvm_el1::el1_main!(main);

const SAMPLES: usize = 256;

fn measure(name: &str, call: Hypercall) {
    let mut samples = [0u64; SAMPLES];
    for s in samples.iter_mut() {
        let (cost, status) = hvc_round_trip(u64::from(call.function_id()));
        if status != 0 {
            println!("bench {name}: call failed with status {}", status as i64);
            rvm_guest_probes::finish(1);
        }
        *s = cost;
    }
    samples.sort_unstable();
    println!("bench {name} min {} median {} samples {SAMPLES}", samples[0], samples[SAMPLES / 2]);
}

fn main(_boot_info: u64) -> ! {
    // Null: the floor of a trap, decode and return; not witnessed.
    measure("null_hvc", Hypercall::Null);
    // ClockRead: the same path plus one witness record (SHA-256 chain step,
    // argument digest) streamed to the UART as a frame line.
    measure("witnessed_hvc", Hypercall::ClockRead);
    // Yield: the slice ends and the CPU picks again. Alone on its CPU the
    // partition is picked again at once; with a second one on the same CPU
    // each sample is a switch to it and back (`rvm-bench-qemu` runs both).
    measure("yield", Hypercall::Yield);
    rvm_guest_probes::finish(0)
}
