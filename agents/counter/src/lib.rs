//! Soak test agent: a turn agent that counts its turns in its committed
//! state. Each turn reads `counter/turns` (u64 LE; absent = 0), commits it
//! plus one and reads it back; it stops at the planned target. A partition
//! restarted with its kept state (an instance's restart) goes on from the
//! count it committed last, so a count that went back is a lost commit:
//!
//! ```text
//! counter: from 0 to 10000
//! counter: done at 10000
//! ```
//!
//! Plan (patched by the soak): `[target low byte, target high byte]`.
//! Exit codes: 3 no state store; 5 the count read back is not the one
//! committed; 6 a store call failed.
#![no_std]

/// The target, u16 LE.
pub static PLAN: rvm_guest::plan::Plan<2> = rvm_guest::plan::Plan::new(*b"RVM-COUNTER-PLN1", [0x10, 0x27]);

/// The key the count is committed under.
pub const KEY: &[u8] = b"counter/turns";

#[cfg(target_arch = "wasm32")]
mod agent {
    use rvm_guest::{HvError, StateStore, TurnCell};

    use super::{KEY, PLAN};

    /// The count read at the first turn, and the last one committed.
    static STATE: TurnCell<Option<u64>> = TurnCell::new(None);

    fn fail(code: i32, what: &str, e: HvError) -> ! {
        rvm_guest::println!("counter: {what} failed: {}", e.name());
        rvm_guest::exit(code)
    }

    fn read(store: &StateStore) -> u64 {
        let mut buf = [0u8; 8];
        match store.get(KEY, &mut buf) {
            Ok(8) => u64::from_le_bytes(buf),
            Ok(_) => 0,
            Err(HvError::BadHandle) => fail(3, "state get", HvError::BadHandle),
            // A key never committed reads as absent.
            Err(_) => 0,
        }
    }

    pub fn turn() -> i32 {
        let _ = PLAN.marker();
        let plan = PLAN.read();
        let target = u64::from(u16::from_le_bytes(plan));
        let store = StateStore::nth(0).unwrap_or_else(|e| fail(3, "state store lookup", e));
        let count = STATE.with(|s| {
            let count = match *s {
                Some(c) => c,
                None => {
                    let c = read(&store);
                    rvm_guest::println!("counter: from {c} to {target}");
                    c
                }
            };
            *s = Some(count);
            count
        });
        if count >= target {
            rvm_guest::println!("counter: done at {count}");
            return rvm_guest::turn::DONE;
        }
        let next = count + 1;
        if let Err(e) = store.stage(KEY, &next.to_le_bytes()).and_then(|()| store.commit()) {
            fail(6, "state commit", e);
        }
        let back = read(&store);
        if back != next {
            rvm_guest::println!("counter: committed {next} but read back {back}");
            rvm_guest::exit(5);
        }
        STATE.with(|s| *s = Some(next));
        rvm_guest::turn::CONTINUE
    }
}

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn turn() -> i32 {
    agent::turn()
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::println!("counter: panic: {}", info.message());
    rvm_guest::exit(101)
}
