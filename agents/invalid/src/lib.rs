//! The invalid-module fixture, produced at build time (see `build.rs`).

/// A module truncated inside its code section: must fail validation.
pub const INVALID: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/invalid.wasm"));

/// The same module, whole: valid, exports `run`, does nothing. Tests use it
/// to show that the truncation alone is what makes [`INVALID`] invalid.
pub const WHOLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/whole.wasm"));
