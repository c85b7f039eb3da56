//! Probe: an agent that only waits. It waits [`WAITS`] times on its first
//! channel with `ChannelWait`, each time for at most [`WAIT_NS`], and
//! expects each wait to end at its deadline (`WouldBlock`: nobody sends to
//! it) no sooner than asked; then it exits 0. While it waits it does not
//! run, so a machine of such partitions is idle and writes no records but
//! one per wait.
//!
//! Prints `wait <n> ended after <ns> ns` per wait, then `wait done`, or
//! `wait WRONG: <what>` and exits 1.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::{HvError, Hypercall, ObjectKind};
use rvm_el1::arch::{hypercall, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start};

rvm_el1::el1_main!(main);

/// How many waits, and how long each may last.
const WAITS: u32 = 3;
const WAIT_NS: u64 = 500_000_000;

fn clock() -> u64 {
    hypercall(Hypercall::ClockRead, &mut []).map_or(0, |[ns, _, _]| ns)
}

fn wrong(what: &str) -> ! {
    println!("wait WRONG: {what}");
    finish(1)
}

fn main(boot_info: u64) -> ! {
    let s = start("wait", boot_info);
    let Some(channel) = s.first_of(ObjectKind::Channel) else { wrong("no channel handle") };
    let mut buf = [0u8; 64];
    for n in 1..=WAITS {
        let before = clock();
        match hypercall(Hypercall::ChannelWait, &mut [Arg::Val(channel), Arg::Out(&mut buf), Arg::Val(WAIT_NS)]) {
            Err(HvError::WouldBlock) => {}
            Ok(_) => wrong("a message came on a channel nobody sends to"),
            Err(e) => wrong(e.name()),
        }
        let waited = clock().saturating_sub(before);
        if waited < WAIT_NS {
            wrong("the wait ended before its deadline");
        }
        println!("wait {n} ended after {waited} ns");
    }
    println!("wait done");
    finish(0)
}
