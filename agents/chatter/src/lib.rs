//! Coherence-domain test agent: a turn agent that talks on its channels at
//! a planned rate for a planned time, so a test can make some agents chatty
//! and others quiet.
//!
//! Plan (patched by the test): `[every, mask, seconds, burst]` — every
//! `every`-th turn (the first turn included) it sends `burst` messages on
//! each channel whose bit is set in `mask` (channel `k` = its `k`-th channel
//! handle; a full queue takes fewer), until its clock passes `seconds`. Then it sends a done marker on every channel, keeps draining
//! until it has the peer's done marker on every channel, prints exact
//! counts and is done:
//!
//! ```text
//! chatter: channel 0 sent 812 received 790
//! chatter: done after 3120 turns: sent 812 received 790
//! ```
//!
//! The done marker is the last message in each direction, so once both
//! markers are through, nothing is in flight: the counts of both ends of a
//! channel must match exactly.
#![no_std]

/// `[every, mask, seconds, burst]`.
pub static PLAN: rvm_guest::plan::Plan<4> =
    rvm_guest::plan::Plan::new(*b"RVM-CHATTER-PLN1", [1, 1, 3, 1]);

/// Most channels an agent talks on.
pub const MAX_CHANNELS: usize = 4;

/// The payload of an ordinary message (its length is what the graph weighs).
pub const MESSAGE: &[u8; 48] = b"chatter: a message of forty-eight bytes ........";
/// The done marker: the last message in each direction.
pub const DONE: &[u8; 4] = b"DONE";

#[cfg(target_arch = "wasm32")]
mod agent {
    use rvm_guest::{Channel, HvError, TurnCell};

    use super::{DONE, MAX_CHANNELS, MESSAGE, PLAN};

    #[derive(Clone, Copy)]
    struct End {
        channel: Channel,
        sent: u64,
        received: u64,
        /// Our done marker went out.
        closed: bool,
        /// The peer's done marker came in.
        peer_closed: bool,
    }

    struct State {
        ends: [Option<End>; MAX_CHANNELS],
        turns: u64,
        started: bool,
    }

    static STATE: TurnCell<State> = TurnCell::new(State {
        ends: [None; MAX_CHANNELS],
        turns: 0,
        started: false,
    });

    fn start(s: &mut State) {
        for (k, slot) in s.ends.iter_mut().enumerate() {
            *slot = Channel::nth(k as u32).ok().map(|channel| End {
                channel,
                sent: 0,
                received: 0,
                closed: false,
                peer_closed: false,
            });
        }
        let n = s.ends.iter().flatten().count();
        let plan = PLAN.read();
        rvm_guest::println!(
            "chatter: {n} channels, {} messages every {} turns on mask {:#x} for {} s",
            plan[3],
            plan[0],
            plan[1],
            plan[2]
        );
        s.started = true;
    }

    /// One turn: drain, talk or close, and say whether everything is through.
    pub fn turn() -> i32 {
        let _ = PLAN.marker();
        let plan = PLAN.read();
        let (every, mask, seconds, burst) = (
            u64::from(plan[0].max(1)),
            plan[1],
            u64::from(plan[2]),
            plan[3].max(1),
        );
        let now = rvm_guest::clock().unwrap_or(u64::MAX);
        let done = STATE.with(|s| {
            if !s.started {
                start(s);
            }
            s.turns += 1;
            let mut busy = false;
            let mut buf = [0u8; 64];
            for end in s.ends.iter_mut().flatten() {
                loop {
                    match end.channel.recv(&mut buf) {
                        Ok(n) if &buf[..n] == DONE => end.peer_closed = true,
                        Ok(_) => end.received += 1,
                        Err(_) => break,
                    }
                    busy = true;
                }
            }
            let talking = now < seconds * 1_000_000_000;
            // A peer's queue was full: it is behind.
            let mut backed_up = false;
            for (k, end) in s.ends.iter_mut().enumerate() {
                let Some(end) = end else { continue };
                if talking {
                    if mask & (1 << k) != 0 && s.turns % every == 1 % every {
                        for _ in 0..burst {
                            if let Err(e) = end.channel.send(MESSAGE) {
                                backed_up |= e == HvError::Full;
                                break;
                            }
                            end.sent += 1;
                            busy = true;
                        }
                    }
                } else if !end.closed {
                    // A full queue refuses the marker: try again next turn.
                    end.closed = end.channel.send(DONE).is_ok();
                    busy |= end.closed;
                }
            }
            if backed_up {
                // A peer is behind: let the others run.
                let _: Result<(), HvError> = rvm_guest::yield_now();
            } else if !busy && !talking {
                // We only wait for the peers' markers and nothing moved:
                // wait (parked) for the next message on any end, up to a
                // millisecond (a full queue may still hold our own marker
                // back). In a partition of several agents this only looks:
                // then yield. (An idle quiet agent does not yield while
                // talking, so it does not take the CPU from its chatty
                // neighbours.)
                let mut channels = [Channel(rvm_guest::CapHandle::new(0, 0)); MAX_CHANNELS];
                let mut n = 0;
                for (slot, end) in channels.iter_mut().zip(s.ends.iter().flatten()) {
                    *slot = end.channel;
                    n += 1;
                }
                if rvm_guest::wait_any(&channels[..n], Some(1_000_000)) == Err(HvError::WouldBlock) {
                    let _: Result<(), HvError> = rvm_guest::yield_now();
                }
            }
            let through = !talking && s.ends.iter().flatten().all(|e| e.closed && e.peer_closed);
            if through {
                let (mut sent, mut received) = (0, 0);
                for (k, end) in s.ends.iter().enumerate() {
                    let Some(end) = end else { continue };
                    rvm_guest::println!(
                        "chatter: channel {k} sent {} received {}",
                        end.sent,
                        end.received
                    );
                    sent += end.sent;
                    received += end.received;
                }
                rvm_guest::println!(
                    "chatter: done after {} turns: sent {sent} received {received}",
                    s.turns
                );
            }
            through
        });
        if done {
            rvm_guest::turn::DONE
        } else {
            rvm_guest::turn::CONTINUE
        }
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
    rvm_guest::println!("chatter: panic: {}", info.message());
    rvm_guest::exit(101)
}
