//! The agent role: one packet per turn.

use rvm_guest::{println, yield_now, Channel, HvError, StateStore, TurnCell};

use crate::protocol::{compile, fnv1a, Message, FNV_BASIS, MAX_MESSAGE, PAYLOAD};
use crate::{SNAPSHOT_TURN, WINDOW};

const EXIT_NO_CHANNEL: i32 = 2;
const EXIT_NO_STORE: i32 = 3;
const EXIT_PROTOCOL: i32 = 4;
const EXIT_STATE_MISMATCH: i32 = 5;
const EXIT_HOST_ERROR: i32 = 6;

const KEY_LAST_TURN: &[u8] = b"packet/last-turn";
const KEY_SUM: &[u8] = b"packet/sum";

/// The store key of window slot `slot`.
fn slot_key(slot: usize) -> [u8; 12] {
    let mut k = *b"packet/win-0";
    k[11] = b'0' + u8::try_from(slot % WINDOW).unwrap_or(0);
    k
}

/// What the agent keeps in memory between turns.
struct State {
    /// Rebuilt from the store (first start or F1 restart) once.
    started: bool,
    /// Turns completed.
    turn: u32,
    sum: u64,
    window: [[u8; PAYLOAD]; WINDOW],
}

static STATE: TurnCell<State> = TurnCell::new(State {
    started: false,
    turn: 0,
    sum: FNV_BASIS,
    window: [[0; PAYLOAD]; WINDOW],
});

fn fail(code: i32, what: &str, e: HvError) -> ! {
    println!("packet: {what} failed: {}", e.name());
    rvm_guest::exit(code)
}

/// The committed value of `key`, if any, into `buf`.
fn get(store: &StateStore, key: &[u8], buf: &mut [u8]) -> Option<usize> {
    match store.get(key, buf) {
        Ok(n) if n <= buf.len() => Some(n),
        Ok(_) => None,
        Err(HvError::BadHandle) => fail(EXIT_NO_STORE, "state get", HvError::BadHandle),
        Err(_) => None,
    }
}

fn get_u64(store: &StateStore, key: &[u8]) -> Option<u64> {
    let mut b = [0u8; 8];
    (get(store, key, &mut b) == Some(8)).then(|| u64::from_le_bytes(b))
}

/// Rebuild memory from the committed state.
fn rebuild(s: &mut State, store: &StateStore) {
    s.turn = get_u64(store, KEY_LAST_TURN)
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or(0);
    s.sum = get_u64(store, KEY_SUM).unwrap_or(FNV_BASIS);
    for slot in 0..WINDOW {
        let mut p = [0u8; PAYLOAD];
        if get(store, &slot_key(slot), &mut p) != Some(PAYLOAD) {
            p = [0; PAYLOAD];
        }
        s.window[slot] = p;
    }
    s.started = true;
    println!(
        "packet: starting at turn {} from committed state",
        s.turn + 1
    );
}

/// Ask the source for packet `k` and wait for its answer.
fn request(channel: &Channel, k: u32) -> Message {
    let mut buf = [0u8; MAX_MESSAGE];
    let n = Message::Req(k).encode(&mut buf);
    loop {
        match channel.send(&buf[..n]) {
            Ok(()) => break,
            Err(HvError::Full) => {
                let _ = yield_now();
            }
            Err(e) => fail(EXIT_HOST_ERROR, "channel send", e),
        }
    }
    loop {
        // Parked until the answer comes (in a partition of several agents
        // this only looks, and the agent yields below).
        match channel.recv_wait(&mut buf, None) {
            Ok(n) => match Message::decode(&buf[..n.min(MAX_MESSAGE)]) {
                Some(m @ (Message::Packet(j, _) | Message::Fault(j) | Message::End(j)))
                    if j == k =>
                {
                    return m
                }
                _ => {
                    println!("packet: unexpected answer of {n} bytes to request {k}");
                    rvm_guest::exit(EXIT_PROTOCOL)
                }
            },
            Err(HvError::WouldBlock) => {
                let _ = yield_now();
            }
            Err(e) => fail(EXIT_HOST_ERROR, "channel recv", e),
        }
    }
}

pub(crate) fn turn() -> i32 {
    let channel = Channel::nth(0).unwrap_or_else(|e| fail(EXIT_NO_CHANNEL, "channel lookup", e));
    let store = StateStore::nth(0).unwrap_or_else(|e| fail(EXIT_NO_STORE, "state store lookup", e));
    STATE.with(|s| {
        if !s.started {
            rebuild(s, &store);
        }
        // What memory says and what the store says must agree.
        let committed = get_u64(&store, KEY_LAST_TURN).unwrap_or(0);
        if committed != u64::from(s.turn) {
            println!(
                "packet: state mismatch: memory at turn {}, store at turn {committed}",
                s.turn
            );
            rvm_guest::exit(EXIT_STATE_MISMATCH)
        }
        let k = s.turn + 1;
        match request(&channel, k) {
            Message::Packet(_, payload) => {
                let slot = usize::try_from(k).unwrap_or(0) % WINDOW;
                s.sum = fnv1a(s.sum, &payload);
                s.window[slot] = payload;
                let staged = store
                    .stage(&slot_key(slot), &payload)
                    .and_then(|()| store.stage(KEY_LAST_TURN, &u64::from(k).to_le_bytes()))
                    .and_then(|()| store.stage(KEY_SUM, &s.sum.to_le_bytes()))
                    .and_then(|()| store.validate())
                    .and_then(|()| store.commit());
                if let Err(e) = staged {
                    fail(EXIT_HOST_ERROR, "state commit", e);
                }
                s.turn = k;
                println!("packet: turn {k} out {:016x}", compile(k, s.sum, &s.window));
                if k == SNAPSHOT_TURN {
                    match rvm_guest::snapshot() {
                        Ok(()) => println!("packet: snapshot requested after turn {k}"),
                        Err(e) => fail(EXIT_HOST_ERROR, "snapshot", e),
                    }
                }
                rvm_guest::turn::CONTINUE
            }
            Message::Fault(_) => {
                println!("packet: fault injected at turn {k}");
                core::arch::wasm32::unreachable()
            }
            _ => {
                println!(
                    "packet: end after turn {}: final sum {:016x}",
                    s.turn, s.sum
                );
                if let Err(e) = rvm_guest::snapshot() {
                    fail(EXIT_HOST_ERROR, "snapshot", e);
                }
                rvm_guest::turn::DONE
            }
        }
    })
}
