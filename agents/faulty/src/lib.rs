//! Fault injection for the recovery tests (issue 6, scenario 2).
//!
//! A turn agent. Every turn `k` commits `faulty/item-k` and its last turn,
//! then asks for a snapshot (so the last snapshot always holds every
//! commit made so far). Its [`Plan`] — patched into the module by the test —
//! says which fault to inject from turn `at` on, how often, and how many
//! turns to run after the faults before it is done:
//!
//! * **trap**: the turn that reaches `at` commits `faulty/faults = n + 1`
//!   and arms; the next turn traps (`unreachable`). A fresh instance (the
//!   F1 restart) reads the count from the store and arms again until the
//!   plan's count is reached. So `faults = 3` traps three times in the
//!   window — F1, F1, then F2, whose snapshot is armed and traps once more
//!   (F1) before the agent carries on.
//! * **abuse**: at turn `at`, calls with a forged handle until fenced.
//! * **validation**: every turn also commits 64 items of 4 KiB; at turn
//!   `at` it stages more than the store holds, and validation fails.
//!
//! Optionally it first grows its memory to `grow_mib` MiB (for the
//! snapshot cost figures).
//!
//! It prints `faulty: turn k committed n items` after every commit.
#![no_std]

#[cfg(target_arch = "wasm32")]
mod agent;

/// Plan byte offsets.
pub mod plan {
    /// 0 none, 1 trap, 2 abuse, 3 validation.
    pub const KIND: usize = 0;
    pub const FAULTS: usize = 1;
    pub const AT: usize = 2;
    pub const AFTER: usize = 3;
    pub const GROW_MIB: usize = 4;
    pub const LEN: usize = 8;

    pub const NONE: u8 = 0;
    pub const TRAP: u8 = 1;
    pub const ABUSE: u8 = 2;
    pub const VALIDATION: u8 = 3;
}

/// The plan a test patches in (defaults: no fault, 4 turns).
pub static PLAN: rvm_guest::plan::Plan<{ plan::LEN }> =
    rvm_guest::plan::Plan::new(*b"RVM-FAULTY-PLAN1", [plan::NONE, 0, 3, 2, 0, 0, 0, 0]);

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn turn() -> i32 {
    agent::turn()
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::println!("faulty: panic: {}", info.message());
    rvm_guest::exit(101)
}
