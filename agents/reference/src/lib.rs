//! The reference agent.
//!
//! Two instances, one per partition, each holding one channel to the other
//! and one state store, play a symmetric ping/pong: each sends `ping k` for
//! `k = 1..=ROUNDS`, waiting for the peer's `pong k` before the next ping,
//! and answers every `ping j` from the peer with `pong j`. Neither side needs
//! a role — both run the same code, so it makes no difference which
//! partition starts first or how the two are scheduled. A side finishes once
//! it has had all its pongs and answered all the peer's pings; then it
//! commits its tally to the state store, reads it back and exits 0.
//!
//! Exit codes: 0 done; 2 no channel; 3 no state store; 4 a protocol error
//! (unexpected message); 5 the state read back differs from what was
//! committed; 6 a hypercall failed unexpectedly.
#![no_std]

#[cfg(target_arch = "wasm32")]
mod agent;
pub mod protocol;

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::println!("reference: panic: {}", info.message());
    rvm_guest::exit(101)
}
