//! Hypercall status codes. `0` is success; every failure has its own negative
//! code so a guest (and the witness log) can tell exactly why a call was denied.

macro_rules! errors {
    ($( $(#[$doc:meta])* $name:ident = $code:expr, )*) => {
        /// Why a hypercall did not take effect.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i16)]
        pub enum HvError {
            $( $(#[$doc])* $name = $code, )*
        }

        impl HvError {
            /// Every error, in code order.
            pub const ALL: &'static [HvError] = &[$(HvError::$name,)*];

            /// The error's stable name.
            pub const fn name(self) -> &'static str {
                match self { $(HvError::$name => stringify!($name),)* }
            }

            /// The error for a status code, if it is one.
            pub const fn from_code(code: i64) -> Option<Self> {
                match code { $($code => Some(HvError::$name),)* _ => None }
            }
        }
    };
}

errors! {
    /// Unknown function ID or a call this build does not provide.
    NotSupported = -1,
    /// An argument is out of its range or inconsistent with the others.
    InvalidArgument = -2,
    /// The handle is out of range, empty, or belongs to nobody in this table.
    BadHandle = -3,
    /// The handle's generation is stale: the slot was revoked and reused.
    StaleHandle = -4,
    /// The capability lacks a right the operation needs.
    NoRights = -5,
    /// The capability has expired (P2).
    Expired = -6,
    /// The access falls outside the capability's byte window (P2).
    OutOfWindow = -7,
    /// The capability's per-epoch quota is used up (P2).
    QuotaExceeded = -8,
    /// The nonce is not greater than the last one used (P2 replay guard).
    Replay = -9,
    /// The P3 proof is missing, malformed or its signature does not verify.
    BadProof = -10,
    /// The capability, or one of its ancestors, was revoked.
    Revoked = -11,
    /// A guest buffer is not mapped, not writable, or its length wraps.
    BadAddress = -12,
    /// Nothing to receive yet; try again after a yield.
    WouldBlock = -13,
    /// Out of memory for the object or the partition's budget.
    NoMemory = -14,
    /// The witness log could not take the record, so the operation did not happen.
    WitnessUnavailable = -15,
    /// Derivation would exceed the maximum depth.
    DepthExceeded = -16,
    /// A GRANT_ONCE right was already consumed.
    GrantConsumed = -17,
    /// The capability is suspended because its partition is fenced.
    Suspended = -18,
    /// The staged state failed validation; nothing was committed.
    ValidationFailed = -19,
    /// The destination's buffer or table is full.
    Full = -20,
    /// The caller made too many invalid calls and has been fenced.
    Abuse = -21,
    /// The call's deadline passed before its answer came (a tool call).
    TimedOut = -22,
    /// The host could not run the tool the call named (no server for it,
    /// it could not be started, it broke its protocol).
    ToolFailed = -23,
}

impl HvError {
    /// The value placed in `x0`.
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// The value as the 16-bit outcome field of a witness record.
    pub const fn outcome_code(self) -> i16 {
        self as i16
    }
}

/// Convert a hypercall result into its `x0` status.
pub fn status_of<T>(result: &Result<T, HvError>) -> i64 {
    match result {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for (i, &a) in HvError::ALL.iter().enumerate() {
            assert!(a.code() < 0);
            assert_eq!(HvError::from_code(a.code()), Some(a));
            for &b in &HvError::ALL[i + 1..] {
                assert_ne!(a.code(), b.code(), "{} and {}", a.name(), b.name());
            }
        }
        assert_eq!(HvError::from_code(0), None);
    }
}
