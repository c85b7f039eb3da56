//! The turn.

use rvm_guest::{println, CapHandle, HvError, StateStore, TurnCell};

use crate::plan;

const KEY_LAST_TURN: &[u8] = b"faulty/last-turn";
const KEY_FAULTS: &[u8] = b"faulty/faults";
/// Items and size of the bulk writes of the validation plan: with this
/// turn's item and the last turn, one full transaction (64 staged items); four
/// turns of them fit the store's 1 MiB, the fifth does not.
const BULK_ITEMS: u32 = 62;
const BULK_VALUE: usize = 4096;
/// Calls the abuse plan makes at most (the kernel fences well before).
const ABUSE_CALLS: u32 = 1000;

struct State {
    started: bool,
    turn: u32,
    faults: u8,
    /// The next turn traps.
    armed: bool,
    /// Items committed in all (as the agent counts them).
    items: u32,
}

static STATE: TurnCell<State> = TurnCell::new(State {
    started: false,
    turn: 0,
    faults: 0,
    armed: false,
    items: 0,
});
static BULK: [u8; BULK_VALUE] = [0x5a; BULK_VALUE];

fn item_key(k: u32) -> [u8; 16] {
    let mut key = *b"faulty/item-0000";
    let mut n = k;
    for d in key[12..].iter_mut().rev() {
        *d = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
    }
    key
}

fn bulk_key(k: u32, i: u32) -> [u8; 16] {
    let mut key = item_key(k * 100 + i);
    key[7..11].copy_from_slice(b"bulk");
    key
}

fn get_u64(store: &StateStore, key: &[u8]) -> Option<u64> {
    let mut b = [0u8; 8];
    matches!(store.get(key, &mut b), Ok(8)).then(|| u64::from_le_bytes(b))
}

fn die(what: &str, e: HvError) -> ! {
    println!("faulty: {what} failed: {}", e.name());
    rvm_guest::exit(6)
}

/// Grow the memory to `mib` MiB. The new pages stay zero: what a
/// snapshot costs does not depend on what the bytes are.
fn grow(mib: u8) {
    const PAGE: usize = 65536;
    let want = usize::from(mib) * (1 << 20) / PAGE;
    let have = core::arch::wasm32::memory_size(0);
    if have < want && core::arch::wasm32::memory_grow(0, want - have) == usize::MAX {
        println!("faulty: cannot grow to {mib} MiB");
        rvm_guest::exit(7)
    }
    println!(
        "faulty: memory is {} pages",
        core::arch::wasm32::memory_size(0)
    );
}

pub(crate) fn turn() -> i32 {
    let p = crate::PLAN.read();
    let store = StateStore::nth(0).unwrap_or_else(|e| die("state store lookup", e));
    STATE.with(|s| {
        if !s.started {
            s.turn = get_u64(&store, KEY_LAST_TURN)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(0);
            s.faults = get_u64(&store, KEY_FAULTS)
                .and_then(|f| u8::try_from(f).ok())
                .unwrap_or(0);
            let bulk = if p[plan::KIND] == plan::VALIDATION {
                BULK_ITEMS
            } else {
                0
            };
            s.items = s.turn * (1 + bulk) + u32::from(s.turn > 0) + u32::from(s.faults > 0);
            s.started = true;
            if p[plan::GROW_MIB] != 0 {
                grow(p[plan::GROW_MIB]);
            }
            println!(
                "faulty: starting at turn {} with {} faults committed",
                s.turn + 1,
                s.faults
            );
        }
        let k = s.turn + 1;
        if s.armed {
            println!("faulty: trap at turn {k}");
            core::arch::wasm32::unreachable()
        }
        let kind = p[plan::KIND];
        let at = u32::from(p[plan::AT]);
        if kind == plan::ABUSE && k >= at {
            println!("faulty: forged handles at turn {k}");
            let forged = StateStore(CapHandle::new(0x7ff, 0xdead));
            let mut buf = [0u8; 8];
            for n in 1..=ABUSE_CALLS {
                if let Err(HvError::Abuse) = forged.get(KEY_FAULTS, &mut buf) {
                    println!("faulty: told Abuse after {n} calls");
                }
            }
            println!("faulty: still running after {ABUSE_CALLS} forged calls");
            rvm_guest::exit(8)
        }
        // One transaction per turn: this turn's item, the last turn, the
        // fault count when arming, and (validation plan) bulk items.
        let mut staged = store.stage(&item_key(k), &k.to_le_bytes());
        staged = staged.and_then(|()| store.stage(KEY_LAST_TURN, &u64::from(k).to_le_bytes()));
        let mut new_items = 1 + u32::from(k == 1);
        if kind == plan::TRAP && k >= at && s.faults < p[plan::FAULTS] {
            staged = staged
                .and_then(|()| store.stage(KEY_FAULTS, &u64::from(s.faults + 1).to_le_bytes()));
            new_items += u32::from(s.faults == 0);
            s.faults += 1;
            s.armed = true;
        }
        if kind == plan::VALIDATION {
            for i in 0..BULK_ITEMS {
                staged = staged.and_then(|()| store.stage(&bulk_key(k, i), &BULK));
            }
            new_items += BULK_ITEMS;
        }
        if let Err(e) = staged {
            die("stage", e);
        }
        if let Err(e) = store.validate() {
            println!("faulty: validation failed at turn {k}: {}", e.name());
            rvm_guest::exit(9)
        }
        if let Err(e) = store.commit() {
            die("commit", e);
        }
        s.items += new_items;
        s.turn = k;
        println!("faulty: turn {k} committed {} items", s.items);
        if let Err(e) = rvm_guest::snapshot() {
            die("snapshot", e);
        }
        let done = !s.armed && s.faults >= p[plan::FAULTS] && k >= at + u32::from(p[plan::AFTER]);
        if done {
            println!("faulty: done after turn {k}");
            rvm_guest::turn::DONE
        } else {
            rvm_guest::turn::CONTINUE
        }
    })
}
