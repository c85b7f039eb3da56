//! How a partition's guest runtime ended, as it tells the hypervisor.
//!
//! The runtime finishes with the [`Exit`](crate::Hypercall::Exit) hypercall:
//! `x1` = exit code (the agent's own code, sign-extended, when it finished; a
//! runtime code otherwise), `x2` = [`ExitReason`], `x3` = detail (a
//! [`Refusal`] for [`ExitReason::Refused`], else 0). The hypervisor uses the
//! reason to pick its response: a refusal is witnessed as a refused partition,
//! a trap or panic is an F1 fault, a finish is a clean exit.

macro_rules! codes {
    ($(#[$tdoc:meta])* $ty:ident { $( $(#[$doc:meta])* $name:ident = $num:expr, )* }) => {
        $(#[$tdoc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $ty {
            $( $(#[$doc])* $name = $num, )*
        }

        impl $ty {
            /// Every value, in code order.
            pub const ALL: &'static [$ty] = &[$($ty::$name,)*];

            /// The stable name.
            pub const fn name(self) -> &'static str {
                match self { $($ty::$name => stringify!($name),)* }
            }

            /// The value for a register, if it is one.
            pub const fn from_code(code: u64) -> Option<Self> {
                match code { $($num => Some($ty::$name),)* _ => None }
            }

            /// The register form.
            pub const fn code(self) -> u64 {
                self as u64
            }
        }
    };
}

codes! {
    /// Why the guest runtime ended (`x2` of `Exit`).
    ExitReason {
        /// The agent's entry returned or it called `exit`: `x1` is its code.
        Finished = 0,
        /// The agent's module was refused before it ran: `x3` is the [`Refusal`].
        Refused = 1,
        /// The agent trapped (including running out of fuel with no refuel).
        Trapped = 2,
        /// The guest runtime itself panicked.
        Panicked = 3,
        /// The boot-info page was missing or malformed.
        BadBootInfo = 4,
    }
}

codes! {
    /// Why a module was refused (`x3` of `Exit` with [`ExitReason::Refused`]).
    Refusal {
        /// The bytes are not a valid WASM module.
        Invalid = 1,
        /// It imports something outside the `rvm` host-function table.
        ForbiddenImport = 2,
        /// It imports an `rvm` function with the wrong signature.
        ImportSignature = 3,
        /// Its declared minimum memory exceeds the partition's budget.
        MemoryOverBudget = 4,
        /// It exports no entry point of the expected type.
        NoEntry = 5,
        /// Instantiation failed (e.g. a data segment out of bounds).
        Instantiation = 6,
        /// The module is larger than the runtime's heap can hold.
        TooLarge = 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for &r in ExitReason::ALL {
            assert_eq!(ExitReason::from_code(r.code()), Some(r));
        }
        for &r in Refusal::ALL {
            assert_eq!(Refusal::from_code(r.code()), Some(r));
        }
        assert_eq!(ExitReason::from_code(99), None);
        assert_eq!(Refusal::from_code(0), None);
    }
}
