//! The agent SDK: typed, safe wrappers over the `rvm` host functions a WASM
//! agent imports (the table is [`rvm_abi::imports::HostImport`]).
//!
//! Agents are `no_std` `cdylib` crates built for `wasm32-unknown-unknown`
//! that export `run` (see the agent engine for the entry convention):
//!
//! ```ignore
//! #[no_mangle]
//! pub extern "C" fn run() {
//!     rvm_guest::println!("hello from {}", "an agent");
//! }
//! ```
//!
//! A *turn agent* exports `turn` instead ([`turn`]): the runtime calls it
//! once per turn, and snapshots it between turns.
//!
//! The raw imports exist only on `wasm32`; on other targets this crate still
//! compiles (its pure parts are host-testable) but has no host functions.
#![no_std]

#[cfg(test)]
extern crate std;

#[cfg(target_arch = "wasm32")]
mod calls;
pub mod console;
pub mod plan;
#[cfg(target_arch = "wasm32")]
mod raw;
pub mod turn;

#[cfg(target_arch = "wasm32")]
pub use calls::*;
pub use rvm_abi::{CapHandle, HvError, ObjectKind, Rights};
pub use turn::TurnCell;

/// Decode an `i32` status: `>= 0` is a success value, negative an error.
pub fn decode_status(status: i32) -> Result<u32, HvError> {
    u32::try_from(status).map_err(|_| error_of(i64::from(status)))
}

/// Decode an `i64` result: `>= 0` is the value, negative an error.
pub fn decode_value(v: i64) -> Result<u64, HvError> {
    u64::try_from(v).map_err(|_| error_of(v))
}

/// The error a negative code names; `InvalidArgument` for a code this build
/// does not know (a newer hypervisor).
fn error_of(code: i64) -> HvError {
    HvError::from_code(code).unwrap_or(HvError::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode() {
        assert_eq!(decode_status(0), Ok(0));
        assert_eq!(decode_status(12), Ok(12));
        assert_eq!(decode_status(-13), Err(HvError::WouldBlock));
        assert_eq!(decode_status(-999), Err(HvError::InvalidArgument));
        assert_eq!(decode_value(1 << 40), Ok(1 << 40));
        assert_eq!(decode_value(-3), Err(HvError::BadHandle));
    }
}
