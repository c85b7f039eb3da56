//! Probe: the well-behaved neighbour of a hostile partition (the capability
//! attacker, the hypercall fuzzer). It publishes its last handle on its
//! channel (so the attacker can try it in its own table), then keeps
//! receiving — draining whatever arrives — until [`DONE_MESSAGE`], checking
//! between rounds that a pattern in its own memory is intact. At the end it
//! checks that every handle it started with still names the same kind of
//! object and that its state store still validates, and exits 0; any damage
//! is printed and exits 1.
//!
//! Prints `peer published <raw>`, `peer rounds <n> messages <n>`, and
//! `peer intact` or `peer DAMAGED: <what>`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::{HvError, Hypercall, ObjectKind};
use rvm_el1::arch::{hypercall, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start, DONE_MESSAGE};

rvm_el1::el1_main!(main);

/// Yields before the peer gives up waiting (the run budget normally ends a
/// stuck test long before).
const MAX_ROUNDS: u64 = 50_000_000;
const PATTERN_WORDS: usize = 512;

fn pattern(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed_cafe
}

/// The pattern is still there. `black_box` makes the compiler assume the
/// words may have changed since they were written, so the check is real.
fn intact(guard: &mut [u64; PATTERN_WORDS]) -> bool {
    let g = core::hint::black_box(guard);
    g.iter().enumerate().all(|(i, w)| *w == pattern(i))
}

fn damaged(what: &str) -> ! {
    println!("peer DAMAGED: {what}");
    finish(1)
}

fn main(boot_info: u64) -> ! {
    let s = start("cap-peer", boot_info);
    let Some(channel) = s.first_of(ObjectKind::Channel) else { damaged("no channel handle") };
    let Some(last) = s.handle(s.handle_count().saturating_sub(1)) else { damaged("no handles") };
    let mut guard = [0u64; PATTERN_WORDS];
    for (i, w) in guard.iter_mut().enumerate() {
        *w = pattern(i);
    }
    // Publish the last handle (retrying while the channel is full).
    let raw = last.raw.to_le_bytes();
    loop {
        match hypercall(Hypercall::ChannelSend, &mut [Arg::Val(channel), Arg::In(&raw)]) {
            Ok(_) => break,
            Err(HvError::Full) => {
                let _ = hypercall(Hypercall::Yield, &mut []);
            }
            Err(e) => damaged(e.name()),
        }
    }
    println!("peer published {:#x}", last.raw);
    let mut buf = [0u8; 4096];
    let (mut rounds, mut messages) = (0u64, 0u64);
    loop {
        rounds += 1;
        if rounds > MAX_ROUNDS {
            damaged("no done message");
        }
        match hypercall(Hypercall::ChannelRecv, &mut [Arg::Val(channel), Arg::Out(&mut buf)]) {
            Ok([len, _, _]) => {
                messages += 1;
                if usize::try_from(len).ok() == Some(DONE_MESSAGE.len()) && buf[..DONE_MESSAGE.len()] == DONE_MESSAGE {
                    break;
                }
            }
            Err(HvError::WouldBlock) => {
                let _ = hypercall(Hypercall::Yield, &mut []);
            }
            Err(e) => damaged(e.name()),
        }
        if !intact(&mut guard) {
            damaged("memory pattern changed");
        }
    }
    println!("peer rounds {rounds} messages {messages}");
    for n in 0..s.handle_count() {
        let Some(h) = s.handle(n) else { damaged("handle table") };
        match hypercall(Hypercall::CapQuery, &mut [Arg::Val(h.raw)]) {
            Ok([kind, _, _]) if kind == u64::from(h.kind) => {}
            Ok(_) => damaged("a handle names another kind of object"),
            Err(e) => damaged(e.name()),
        }
    }
    let Some(store) = s.first_of(ObjectKind::StateStore) else { damaged("no store handle") };
    if let Err(e) = hypercall(Hypercall::StateValidate, &mut [Arg::Val(store)]) {
        damaged(e.name());
    }
    if !intact(&mut guard) {
        damaged("memory pattern changed");
    }
    println!("peer intact");
    finish(0)
}
