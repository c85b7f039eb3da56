//! The agent's entry: drives [`Side`] with real host calls.

use rvm_guest::{clock, println, yield_now, Channel, HvError, StateStore};

use crate::protocol::{Message, Side, MESSAGE_LEN, ROUNDS};

const EXIT_NO_STORE: i32 = 3;
const EXIT_PROTOCOL: i32 = 4;
const EXIT_STATE_MISMATCH: i32 = 5;
const EXIT_HOST_ERROR: i32 = 6;

/// The state-store keys this agent commits.
const KEY_PINGS: &[u8] = b"reference/pings";
const KEY_PONGS: &[u8] = b"reference/pongs";
const KEY_SOLO_RUNS: &[u8] = b"reference/solo-runs";

/// Alone in its partition set (no channel handle): count the run in the
/// state store, read it back, and finish.
fn run_solo(store: &StateStore) {
    println!("reference: no peer channel: running solo");
    let runs = match read_u32(store, KEY_SOLO_RUNS) {
        Ok(prev) => prev.unwrap_or(0) + 1,
        Err(e) => fail(EXIT_NO_STORE, "state get", e),
    };
    let staged = store
        .stage(KEY_SOLO_RUNS, &runs.to_le_bytes())
        .and_then(|()| store.validate())
        .and_then(|()| store.commit());
    if let Err(e) = staged {
        fail(EXIT_HOST_ERROR, "state commit", e);
    }
    match read_u32(store, KEY_SOLO_RUNS) {
        Ok(Some(n)) if n == runs => println!("reference: done: solo run {runs} committed"),
        other => {
            println!("reference: state read back wrong: {other:?}");
            rvm_guest::exit(EXIT_STATE_MISMATCH)
        }
    }
}

fn fail(code: i32, what: &str, e: HvError) -> ! {
    println!("reference: {what} failed: {}", e.name());
    rvm_guest::exit(code)
}

fn read_u32(store: &StateStore, key: &[u8]) -> Result<Option<u32>, HvError> {
    let mut buf = [0u8; 4];
    match store.get(key, &mut buf) {
        Ok(4) => Ok(Some(u32::from_le_bytes(buf))),
        Ok(_) => Ok(None),
        Err(HvError::BadHandle) => Err(HvError::BadHandle),
        // A key never committed reads as absent, whatever code the store uses for it.
        Err(_) => Ok(None),
    }
}

/// The entry point (see the agent engine's entry convention).
#[no_mangle]
pub extern "C" fn run() {
    let store = StateStore::nth(0).unwrap_or_else(|e| fail(EXIT_NO_STORE, "state store lookup", e));
    let Ok(channel) = Channel::nth(0) else {
        run_solo(&store);
        return;
    };
    match read_u32(&store, KEY_PONGS) {
        Ok(Some(prev)) => println!("reference: a previous run committed {prev} pongs"),
        Ok(None) => {}
        Err(e) => fail(EXIT_NO_STORE, "state get", e),
    }
    let started = clock().unwrap_or_else(|e| fail(EXIT_HOST_ERROR, "clock", e));
    println!("reference: starting {ROUNDS} rounds of ping/pong");

    let mut side = Side::new();
    let mut buf = [0u8; MESSAGE_LEN];
    while !side.done() {
        let mut progressed = false;
        if let Some(m) = side.next_outgoing() {
            match channel.send(&m.encode()) {
                Ok(()) => {
                    side.sent();
                    progressed = true;
                    if let Message::Ping(k) = m {
                        println!("reference: sent ping {k}/{ROUNDS}");
                    }
                }
                Err(HvError::Full | HvError::WouldBlock) => {}
                Err(e) => fail(EXIT_HOST_ERROR, "channel send", e),
            }
        }
        if !side.pong_pending() {
            // Nothing left to send: only the peer's next message moves this
            // side on, so wait for it (the partition does not run, and no
            // record is written, until it comes). A message the queue had no
            // room for is tried again after at most 1 ms.
            let wait = if side.next_outgoing().is_some() { Some(1_000_000) } else { None };
            match channel.recv_wait(&mut buf, wait) {
                Ok(n) => {
                    progressed = true;
                    let Some(m) =
                        Message::decode(&buf[..n.min(MESSAGE_LEN)]).filter(|_| n == MESSAGE_LEN)
                    else {
                        println!("reference: malformed message of {n} bytes");
                        rvm_guest::exit(EXIT_PROTOCOL)
                    };
                    if let Err(e) = side.received(m) {
                        println!("reference: unexpected {:?}", e.0);
                        rvm_guest::exit(EXIT_PROTOCOL)
                    }
                    if let Message::Pong(k) = m {
                        println!("reference: got pong {k}/{ROUNDS}");
                    }
                }
                Err(HvError::WouldBlock) => {}
                Err(e) => fail(EXIT_HOST_ERROR, "channel wait", e),
            }
        }
        if !progressed {
            let _ = yield_now();
        }
    }

    let staged = store
        .stage(KEY_PINGS, &side.pings_answered.to_le_bytes())
        .and_then(|()| store.stage(KEY_PONGS, &side.pongs_received.to_le_bytes()))
        .and_then(|()| store.validate())
        .and_then(|()| store.commit());
    if let Err(e) = staged {
        fail(EXIT_HOST_ERROR, "state commit", e);
    }
    match (read_u32(&store, KEY_PINGS), read_u32(&store, KEY_PONGS)) {
        (Ok(Some(pings)), Ok(Some(pongs))) if pings == ROUNDS && pongs == ROUNDS => {
            let elapsed_us = clock().map_or(0, |now| now.saturating_sub(started) / 1_000);
            println!(
                "reference: done: {pongs} pongs received, {pings} pings answered, state committed ({elapsed_us} us)"
            );
        }
        (pings, pongs) => {
            println!("reference: state read back wrong: pings {pings:?}, pongs {pongs:?}");
            rvm_guest::exit(EXIT_STATE_MISMATCH)
        }
    }
}
