//! The packet scenario (issue 6, scenario 1), one module in two roles.
//!
//! * **Agent** (the default): a turn agent. Turn `k` asks the source for
//!   packet `k`, stages it with its running sum and the turn number, commits,
//!   compiles its context (the turn, the sum and the last [`WINDOW`] packets,
//!   in a fixed order) and prints the compiled bytes' hash:
//!   `packet: turn k out <hash>`. At turn [`SNAPSHOT_TURN`] it asks for a
//!   snapshot. When the source says `Fault` it traps; when it says `End`
//!   it asks for a final snapshot and is done.
//! * **Source** (plan byte 0 = 1): answers `Req k` with packet `k` for
//!   `k <= TURNS`; past that, with `Fault` for the first `plan[1]` requests,
//!   then with `End`, and is done.
//!
//! The agent's state lives in its memory and in the state store; a fresh
//! instance (first start or an F1 restart) rebuilds it from the store, so
//! it continues where the committed state says. Before each turn it checks
//! that the store's last turn is the one its memory holds — after a
//! rollback, a commit made after the snapshot would show up here.
#![no_std]

#[cfg(target_arch = "wasm32")]
mod agent;
pub mod protocol;
#[cfg(target_arch = "wasm32")]
mod source;

/// Turns the source has packets for.
pub const TURNS: u32 = 500;
/// The turn after which the agent asks for a snapshot.
pub const SNAPSHOT_TURN: u32 = 250;
/// Packets the compiled context holds.
pub const WINDOW: usize = 8;

/// The plan a test patches in: role (0 agent, 1 source), faults the source
/// sends past the last packet.
pub static PLAN: rvm_guest::plan::Plan<2> =
    rvm_guest::plan::Plan::new(*b"RVM-PACKET-PLAN1", [0, 0]);

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn turn() -> i32 {
    let _ = PLAN.marker();
    match PLAN.read()[0] {
        1 => source::turn(),
        _ => agent::turn(),
    }
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::println!("packet: panic: {}", info.message());
    rvm_guest::exit(101)
}
