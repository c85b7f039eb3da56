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
//! Tools the partition's claims allow are called with `tool_call`, or
//! `bash` and `mcp` for the two kinds of tool the host serves
//! ([`rvm_abi::tool`]):
//!
//! ```ignore
//! let mut response = [0u8; 1024];
//! let n = rvm_guest::bash("echo hello", &mut response)?;
//! let n = rvm_guest::mcp("demo", "echo", r#"{"text":"hi"}"#, &mut response)?;
//! ```
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

/// The name of MCP tool `tool` of server `server`, `mcp__<server>__<tool>`,
/// built in `buf`. `InvalidArgument` when it is longer than
/// [`rvm_abi::tool::MAX_NAME`].
pub fn mcp_name<'a>(
    server: &str,
    tool: &str,
    buf: &'a mut [u8; rvm_abi::tool::MAX_NAME],
) -> Result<&'a str, HvError> {
    let mut n = 0;
    for part in ["mcp__", server, "__", tool] {
        let to = buf
            .get_mut(n..n + part.len())
            .ok_or(HvError::InvalidArgument)?;
        to.copy_from_slice(part.as_bytes());
        n += part.len();
    }
    // Whole `str`s, so whole UTF-8 characters.
    core::str::from_utf8(&buf[..n]).map_err(|_| HvError::InvalidArgument)
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

    #[test]
    fn mcp_names_are_built_and_bounded() {
        let mut buf = [0u8; rvm_abi::tool::MAX_NAME];
        assert_eq!(mcp_name("demo", "echo", &mut buf), Ok("mcp__demo__echo"));
        let server = "s".repeat(rvm_abi::tool::MAX_NAME - 9);
        assert_eq!(
            mcp_name(&server, "ab", &mut buf).map(str::len),
            Ok(rvm_abi::tool::MAX_NAME)
        );
        assert_eq!(
            mcp_name(&server, "abc", &mut buf),
            Err(HvError::InvalidArgument)
        );
        assert_eq!(decode_status(-22), Err(HvError::TimedOut));
        assert_eq!(decode_status(-23), Err(HvError::ToolFailed));
    }
}
