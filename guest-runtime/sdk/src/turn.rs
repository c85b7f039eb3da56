//! Turn agents: an agent that exports `turn` (see [`rvm_abi::imports::turn`])
//! keeps its state between turns in statics; [`TurnCell`] holds such state.
//!
//! ```ignore
//! static STATE: TurnCell<u32> = TurnCell::new(0);
//!
//! #[no_mangle]
//! pub extern "C" fn turn() -> i32 {
//!     let n = STATE.with(|n| { *n += 1; *n });
//!     if n < 10 { rvm_guest::turn::CONTINUE } else { rvm_guest::turn::DONE }
//! }
//! ```

pub use rvm_abi::imports::turn::{CONTINUE, DONE, EXPORT};

/// A value that lives in the agent's linear memory across turns (and so in
/// its snapshots). A nested [`with`](TurnCell::with) on the same cell
/// panics instead of aliasing or waiting forever.
pub struct TurnCell<T>(spin::Mutex<T>);

impl<T> TurnCell<T> {
    pub const fn new(value: T) -> Self {
        Self(spin::Mutex::new(value))
    }

    /// Run `f` with the value. Panics if called from inside another `with`
    /// on the same cell.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.0.try_lock().expect("TurnCell::with re-entered");
        f(&mut guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_persist_and_reentry_is_refused() {
        let c = TurnCell::new(1u32);
        c.with(|v| *v += 1);
        assert_eq!(c.with(|v| *v), 2);
        let nested = std::panic::catch_unwind(|| {
            let c = TurnCell::new(0u8);
            c.with(|_| c.with(|_| ()));
        });
        assert!(nested.is_err());
    }
}
