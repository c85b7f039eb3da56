//! Probe: an agent that only waits. It waits on its first channel with
//! `ChannelWait`, once for each deadline of [`WAITS_NS`], and expects each
//! wait to end at its deadline (`WouldBlock`: nobody sends to it) no sooner
//! than asked; then it exits 0. While it waits it does not run, so a
//! machine of such partitions is idle and writes no records but one per
//! wait. The first wait is long (the host's idleness is measured over it),
//! the others short (their lateness is).
//!
//! Prints `wait 1 begins`, then `wait <n> ended after <ns> ns (asked <ns>)`
//! per wait, then `wait done`, or `wait WRONG: <what>` and exits 1.
//!
//! With the input `ping` or `pong` it plays one side of a ping-pong of
//! [`ROUNDS`] messages instead, each side waiting (no deadline) for the
//! other's message: `ping` sends first, `pong` answers each message it
//! gets. Every message wakes a partition parked at EL2 (on another CPU when
//! the machine has two): the host reads the wake-up's cost from the
//! witness records' timestamps. Prints `wait pingpong done`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::{HvError, Hypercall, ObjectKind};
use rvm_el1::arch::{hypercall, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start};

rvm_el1::el1_main!(main);

/// How long each wait may last.
const WAITS_NS: [u64; 3] = [2_000_000_000, 100_000_000, 100_000_000];

fn clock() -> u64 {
    hypercall(Hypercall::ClockRead, &mut []).map_or(0, |[ns, _, _]| ns)
}

fn wrong(what: &str) -> ! {
    println!("wait WRONG: {what}");
    finish(1)
}

/// Messages each side of a ping-pong sends.
const ROUNDS: u64 = 64;

fn pingpong(channel: u64, serves: bool) -> ! {
    let mut buf = [0u8; 8];
    for round in 0..ROUNDS {
        // `pong` gets message `round`; `ping` the answer to the one before.
        if serves || round > 0 {
            let expected = if serves { round } else { round - 1 };
            match hypercall(Hypercall::ChannelWait, &mut [Arg::Val(channel), Arg::Out(&mut buf), Arg::Val(u64::MAX)]) {
                Ok(_) if u64::from_le_bytes(buf) == expected => {}
                Ok(_) => wrong("a message out of turn"),
                Err(e) => wrong(e.name()),
            }
        }
        let msg = round.to_le_bytes();
        if let Err(e) = hypercall(Hypercall::ChannelSend, &mut [Arg::Val(channel), Arg::In(&msg)]) {
            wrong(e.name());
        }
    }
    if !serves {
        // The last answer.
        match hypercall(Hypercall::ChannelWait, &mut [Arg::Val(channel), Arg::Out(&mut buf), Arg::Val(u64::MAX)]) {
            Ok(_) if u64::from_le_bytes(buf) == ROUNDS - 1 => {}
            Ok(_) => wrong("a message out of turn"),
            Err(e) => wrong(e.name()),
        }
    }
    println!("wait pingpong done");
    finish(0)
}

fn main(boot_info: u64) -> ! {
    let s = start("wait", boot_info);
    let Some(channel) = s.first_of(ObjectKind::Channel) else { wrong("no channel handle") };
    match s.input() {
        b"ping" => pingpong(channel, false),
        b"pong" => pingpong(channel, true),
        _ => {}
    }
    let mut buf = [0u8; 64];
    println!("wait 1 begins");
    for (n, wait_ns) in (1..).zip(WAITS_NS) {
        let before = clock();
        match hypercall(Hypercall::ChannelWait, &mut [Arg::Val(channel), Arg::Out(&mut buf), Arg::Val(wait_ns)]) {
            Err(HvError::WouldBlock) => {}
            Ok(_) => wrong("a message came on a channel nobody sends to"),
            Err(e) => wrong(e.name()),
        }
        let waited = clock().saturating_sub(before);
        if waited < wait_ns {
            wrong("the wait ended before its deadline");
        }
        println!("wait {n} ended after {waited} ns (asked {wait_ns})");
    }
    println!("wait done");
    finish(0)
}
