//! Probe: a tenant that tries to stall the machine, in one of several ways
//! (its input picks one), so a test can check that its neighbours finish
//! beside it.
//!
//! # Input (the bundle's module slot, 24 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RVMSTL01` |
//! | 8 | 8 | mode: 1 console flood, 2 spin, 3 unknown-call storm, 4 snapshot storm, 5 store stage storm, 6 touch its whole heap window once, 7 witnessed-call storm (`ClockRead`, each allowed and witnessed) |
//! | 16 | 8 | calls to make (0 = until stopped) |
//!
//! Prints `stall <mode> start`, then (if it ever gets there)
//! `stall <mode> done calls <n> refused <n>` and exits 0.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::bootinfo::layout;
use rvm_abi::hypercall::RVM_CALL_BASE;
use rvm_abi::{HvError, Hypercall, ObjectKind};
use rvm_el1::arch::{hvc_raw, hypercall, probe, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start, u64_at, EXIT_BAD_TARGET};

rvm_el1::el1_main!(main);

const MAGIC: [u8; 8] = *b"RVMSTL01";

/// A 4 KiB console line: 4095 bytes of text and its newline.
static LINE: [u8; 4096] = {
    let mut l = [b'#'; 4096];
    l[4095] = b'\n';
    l
};

fn main(boot_info: u64) -> ! {
    let s = start("stall", boot_info);
    let input = s.input();
    if input.get(..8) != Some(&MAGIC[..]) {
        println!("stall: no input");
        finish(EXIT_BAD_TARGET)
    }
    let mode = u64_at(input, 8).unwrap_or(0);
    let calls = u64_at(input, 16).unwrap_or(0);
    println!("stall {mode} start");
    let mut refused = 0u64;
    let mut n = 0u64;
    let store = s.first_of(ObjectKind::StateStore).unwrap_or(0);
    // The snapshot storm's image: its whole WASM memory budget, every page
    // touched (a snapshot covers only memory the partition has).
    let image_len = s.info.heap_len.saturating_sub(layout::RUNTIME_HEAP_OVERHEAD);
    if mode == 4 {
        for page in 0..image_len / 4096 {
            probe::write_u64(layout::HEAP_IPA + page * 4096, page);
        }
    }
    while calls == 0 || n < calls {
        let status = match mode {
            1 => hypercall(Hypercall::ConsoleWrite, &mut [Arg::In(&LINE)]).err(),
            2 => {
                n = n.wrapping_add(1);
                continue;
            }
            3 => {
                let unknown = u64::from(RVM_CALL_BASE | 0x7ff);
                let x0 = if n.is_multiple_of(2) {
                    hvc_raw([unknown, 0, 0, 0, 0, 0, 0]).map_or(0, |r| r[0])
                } else {
                    probe::hvc_imm1(unknown)
                };
                HvError::from_code(x0 as i64)
            }
            4 => {
                // Its whole WASM memory budget (the heap window less the
                // runtime's share): as large a snapshot as it may ask.
                hvc_raw([
                    u64::from(Hypercall::Snapshot.function_id()),
                    layout::HEAP_IPA,
                    image_len,
                    0,
                    0,
                    0,
                    0,
                ])
                .and_then(|r| HvError::from_code(r[0] as i64))
            }
            5 => {
                // Distinct keys, the largest values, committed 64 at a time:
                // the store grows until refused.
                probe::write_u64(layout::HEAP_IPA, n);
                probe::write_u64(layout::HEAP_IPA + 4096, n);
                let stage = u64::from(Hypercall::StateStage.function_id());
                let mut status = hvc_raw([
                    stage,
                    store,
                    layout::HEAP_IPA,
                    8,
                    layout::HEAP_IPA + 4096,
                    4096,
                    0,
                ])
                .and_then(|r| HvError::from_code(r[0] as i64));
                if n % 64 == 63 {
                    for call in [Hypercall::StateValidate, Hypercall::StateCommit] {
                        let r = hvc_raw([u64::from(call.function_id()), store, 0, 0, 0, 0, 0]);
                        status = status.or(r.and_then(|r| HvError::from_code(r[0] as i64)));
                    }
                }
                status
            }
            6 => {
                let pages = s.info.heap_len / 4096;
                for page in 0..pages {
                    probe::write_u64(layout::HEAP_IPA + page * 4096, page);
                }
                println!("stall 6 touched {pages} pages");
                finish(0)
            }
            7 => hypercall(Hypercall::ClockRead, &mut []).err(),
            _ => {
                println!("stall: unknown mode {mode}");
                finish(EXIT_BAD_TARGET)
            }
        };
        if status.is_some() {
            refused += 1;
        }
        n += 1;
    }
    println!("stall {mode} done calls {n} refused {refused}");
    finish(0)
}
