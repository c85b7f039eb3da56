//! Probe: ask for the host through Arm semihosting (`hlt #0xf000`): run a
//! host shell command (`SYS_SYSTEM`), write straight to the host's console
//! (`SYS_WRITE0`, bypassing the hypervisor's `[name]` prefix), open a host
//! file (`SYS_OPEN`), end the whole machine with a code of its choosing
//! (`SYS_EXIT_EXTENDED`). RVM never enables semihosting: the first `hlt`
//! must be an undefined instruction, taken by this image's EL1 vectors and
//! reported as a runtime failure (a fault of this partition). If a call
//! returns instead, the probe says so, goes on with the next one, and
//! exits with [`EXIT_NOT_ISOLATED`].
//!
//! Input (the bundle's module bytes): pairs of NUL-terminated strings,
//! `op\0arg\0`, run in order. `op` is `system` (arg: the command), `write0`
//! (arg: the text), `open` (arg: a path, opened for writing, which creates
//! it), `exit` (arg: the decimal exit code) or `wait` (arg: milliseconds to
//! spin first, so that a neighbour's calls come before this one's).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_el1::arch::probe;
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start, EXIT_BAD_TARGET, EXIT_NOT_ISOLATED};

rvm_el1::el1_main!(main);

// Arm semihosting operation numbers ("Semihosting for AArch32 and AArch64").
const SYS_OPEN: u64 = 0x01;
const SYS_WRITE0: u64 = 0x04;
const SYS_SYSTEM: u64 = 0x12;
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// `SYS_OPEN` mode "w".
const OPEN_WRITE: u64 = 4;
/// `SYS_EXIT_EXTENDED` reason: the application exited.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

fn main(boot_info: u64) -> ! {
    let input = start("semihosting", boot_info).input();
    let mut tokens = input.split_inclusive(|&b| b == 0);
    let mut served = 0u32;
    while let (Some(op), Some(arg)) = (tokens.next(), tokens.next()) {
        // Each token ends in its NUL: `arg` is a C string in place.
        let op = text(&op[..op.len() - 1]);
        let len = (arg.len() - 1) as u64;
        let ptr = arg.as_ptr() as u64;
        let r = match op {
            "wait" => {
                wait_ms(text(&arg[..arg.len() - 1]).parse().unwrap_or(0));
                continue;
            }
            "system" => {
                println!("probe semihosting: hlt #0xf000 SYS_SYSTEM {}", text(&arg[..arg.len() - 1]));
                let block = [ptr, len];
                probe::semihosting(SYS_SYSTEM, block.as_ptr() as u64)
            }
            "write0" => {
                println!("probe semihosting: hlt #0xf000 SYS_WRITE0");
                probe::semihosting(SYS_WRITE0, ptr)
            }
            "open" => {
                println!("probe semihosting: hlt #0xf000 SYS_OPEN {}", text(&arg[..arg.len() - 1]));
                let block = [ptr, OPEN_WRITE, len];
                probe::semihosting(SYS_OPEN, block.as_ptr() as u64)
            }
            "exit" => {
                let code: u64 = text(&arg[..arg.len() - 1]).parse().unwrap_or(1);
                println!("probe semihosting: hlt #0xf000 SYS_EXIT_EXTENDED {code}");
                let block = [ADP_STOPPED_APPLICATION_EXIT, code];
                probe::semihosting(SYS_EXIT_EXTENDED, block.as_ptr() as u64)
            }
            other => {
                println!("probe semihosting: unknown operation {other:?}");
                finish(EXIT_BAD_TARGET)
            }
        };
        println!("probe semihosting: FAILED: {op} was served by the host (returned {r:#x})");
        served += 1;
    }
    if served == 0 {
        println!("probe semihosting: no operation in the input");
        finish(EXIT_BAD_TARGET)
    }
    finish(EXIT_NOT_ISOLATED)
}

fn text(b: &[u8]) -> &str {
    core::str::from_utf8(b).unwrap_or("?")
}

fn wait_ms(ms: u64) {
    let (t0, hz) = probe::counter();
    let ticks = hz / 1000 * ms;
    while probe::counter().0.wrapping_sub(t0) < ticks {}
}
