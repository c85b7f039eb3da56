//! Hostile agent: announces itself, then spins forever without a host call
//! (compiles to a `loop br` with an add), so only preemption — the
//! hypervisor's timer or the engine's fuel — stops it.
#![no_std]

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn run() {
    rvm_guest::println!("spin: spinning forever");
    let mut n: u64 = 0;
    loop {
        // black_box keeps the counter observable, so the loop is not folded away.
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::exit(101)
}
