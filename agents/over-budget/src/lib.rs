//! Hostile agent: a normal agent whose declared memory minimum (1 GiB, set
//! at link time by its build script) exceeds any partition's budget.
#![no_std]

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn run() {
    rvm_guest::println!("over-budget: this line must never print");
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::exit(101)
}
