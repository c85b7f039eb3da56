//! Probe: a hypercall fuzzer. From a seed the test passes in, it makes a
//! fixed number of hypercalls with pseudo-random function IDs (RVM's calls,
//! unknown RVM numbers, PSCI, anything), handles (its own, derived, forged,
//! random), addresses (its scratch pages, read-only pages, unmapped IPAs,
//! addresses near the top that wrap) and lengths (small, at the limits,
//! huge, wrapping), and checks that every status is a defined one: 0 or an
//! [`HvError`] for RVM's range, a PSCI status for PSCI's.
//!
//! Prints `fuzz seed <hex> calls <n>` first (rerun with that seed to
//! reproduce), then `fuzz done calls <n> skipped <n> unwitnessed <n> ns <t>
//! per-second <r>` and one
//! `fuzz status <name> <count>` line per status seen, sends
//! [`DONE_MESSAGE`] to its peer and exits 0. An undefined status prints
//! `fuzz FAILED call <i> x0 <hex> ... status <hex>` and exits 1.
//!
//! It never calls `Exit`, PSCI `SYSTEM_OFF` or `CPU_OFF` (they would end it
//! early), and never passes an argument inside its own image (see
//! [`hvc_raw`]): the hypervisor may write only its scratch pages.
//!
//! # Input (the bundle's module slot, 24 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RVMFUZ01` |
//! | 8 | 8 | seed |
//! | 16 | 8 | number of calls |
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::bootinfo::layout;
use rvm_abi::hypercall::{psci, smccc_owner, RVM_CALL_BASE, SMCCC_OWNER_STANDARD};
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind};
use rvm_el1::arch::{hvc_raw, hypercall, image_end, probe, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start, u64_at, DONE_MESSAGE, HYPERVISOR_PA, UNMAPPED_IPA};

rvm_el1::el1_main!(main);

const MAGIC: [u8; 8] = *b"RVMFUZ01";
/// Scratch pages at the start of the heap window: the only memory the
/// hypervisor may write for the fuzzer.
const SCRATCH: u64 = layout::HEAP_IPA;
const SCRATCH_LEN: u64 = 64 << 10;
/// Handles remembered from successful derives.
const DERIVED: usize = 8;

/// SplitMix64: small, fast, and good enough to spread the inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), close enough.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What the fuzzer knows about its own partition.
struct World {
    handles: [u64; 32],
    count: usize,
    derived: [u64; DERIVED],
    partition: u64,
    boot_info: u64,
    input: (u64, u64),
    heap_end: u64,
}

/// How one argument register is chosen.
#[derive(Clone, Copy)]
enum Class {
    Handle,
    Addr,
    /// A signature address: mostly none (0), else any address.
    Proof,
    Len,
    /// A short key length (0 or 1 mostly): keeps the store's items bounded
    /// so a commit never fails validation (which would roll the fuzzer back).
    KeyLen,
    /// A value length of at most 1 KiB mostly.
    ValueLen,
    Small,
    /// How long a `ChannelWait` may wait: not at all, a few µs, or up to
    /// 1 ms; never long, so a wait on a channel nobody sends to does not
    /// hold the fuzzer for its run.
    WaitNs,
    Any,
}

use Class::*;

/// The argument classes of `x1..x6` for each RVM call.
fn classes(call: Option<Hypercall>) -> [Class; 6] {
    match call {
        Some(Hypercall::ConsoleWrite) => [Addr, Len, Any, Any, Any, Any],
        Some(Hypercall::CapQuery | Hypercall::Spawn) => [Handle, Any, Any, Any, Any, Any],
        Some(Hypercall::CapDerive) => [Handle, Small, Small, Any, Proof, Small],
        Some(Hypercall::CapRevoke | Hypercall::StateValidate | Hypercall::StateCommit) => {
            [Handle, Any, Any, Any, Proof, Small]
        }
        Some(Hypercall::RegionRead | Hypercall::RegionWrite) => [Handle, Small, Addr, Len, Proof, Small],
        Some(Hypercall::RegionMap) => [Handle, Addr, Any, Any, Any, Any],
        Some(Hypercall::ChannelSend | Hypercall::ChannelRecv) => [Handle, Addr, Len, Any, Proof, Small],
        Some(Hypercall::ChannelWait) => [Handle, Addr, Len, WaitNs, Proof, Small],
        Some(Hypercall::WaitAny) => [Addr, Small, WaitNs, Any, Any, Any],
        Some(Hypercall::StateStage) => [Handle, Addr, KeyLen, Addr, ValueLen, Any],
        Some(Hypercall::StateGet) => [Handle, Addr, KeyLen, Addr, Len, Any],
        Some(Hypercall::Snapshot) => [Addr, Len, Addr, Len, Any, Any],
        // The fuzzer holds no claims: every call is refused at once, never
        // sent to a host that would hold it.
        Some(Hypercall::ToolCall) => [Addr, Len, Addr, Len, Addr, Len],
        Some(Hypercall::Prove) => [Handle, Addr, Any, Any, Proof, Small],
        Some(Hypercall::WitnessQuery) => [Small, Addr, Len, Any, Any, Any],
        Some(Hypercall::AgentSwitch) => [Small, Any, Any, Any, Any, Any],
        Some(Hypercall::Idle) => [Small, Any, Any, Any, Any, Any],
        Some(Hypercall::Null | Hypercall::Yield | Hypercall::Exit | Hypercall::ClockRead) | None => {
            [Any, Any, Any, Any, Any, Any]
        }
    }
}

impl World {
    fn value(&self, rng: &mut Rng, class: Class) -> u64 {
        match class {
            Handle => match rng.below(10) {
                0..=3 => self.handles[rng.below(self.count.max(1) as u64) as usize],
                4 | 5 => rng.pick(&self.derived),
                6 => CapHandle::new(rng.below(300) as u16, 0).to_raw(),
                7 => CapHandle::new(rng.below(self.count.max(1) as u64) as u16, rng.below(4) as u32 + 1).to_raw(),
                8 => rng.next(),
                _ => rng.pick(&[0, u64::MAX, CapHandle::NONE, 1 << 48]),
            },
            Addr | Proof => {
                if matches!(class, Proof) && rng.chance(60) {
                    return 0;
                }
                match rng.below(20) {
                    0..=7 => SCRATCH + rng.below(SCRATCH_LEN),
                    8 => rng.below(layout::IMAGE_BASE),
                    9 => rng.pick(&[UNMAPPED_IPA, 0x0900_0000, 0x0800_0000, HYPERVISOR_PA]),
                    10 => self.boot_info + rng.below(4096),
                    11 => self.input.0 + rng.below(self.input.1.max(1)),
                    12 => u64::MAX - rng.below(4096),
                    13 => self.heap_end - rng.below(64),
                    14 => SCRATCH + SCRATCH_LEN - rng.below(64),
                    15 => layout::SNAPSHOT_IPA + rng.below(1 << 20),
                    16 => 0,
                    _ => rng.next(),
                }
            }
            WaitNs => match rng.below(4) {
                0 => 0,
                1 => rng.below(10_000),
                _ => rng.below(1_000_000) + 1,
            },
            Len => match rng.below(10) {
                0..=3 => rng.below(64),
                4 | 5 => rng.below(4097),
                6 => rng.pick(&[0, 1, 4096, 4097, 1 << 20, (1 << 20) + 1, 1 << 16]),
                7 => u64::MAX - rng.below(4096),
                8 => rng.next(),
                _ => rng.below(SCRATCH_LEN + 1),
            },
            KeyLen => match rng.below(10) {
                0..=6 => 1,
                7 => 0,
                8 => u64::MAX - rng.below(16),
                _ => rng.next(),
            },
            ValueLen => match rng.below(10) {
                0..=7 => rng.below(1025),
                8 => u64::MAX - rng.below(16),
                _ => rng.next(),
            },
            Small => match rng.below(4) {
                0 => rng.below(8),
                1 => rng.below(256),
                2 => self.partition + rng.below(3),
                _ => rng.below(1 << 20),
            },
            Any => match rng.below(4) {
                0 => 0,
                1 => rng.below(1 << 16),
                _ => rng.next(),
            },
        }
    }

    /// A function ID: mostly RVM's calls, sometimes unknown numbers, PSCI,
    /// or anything. Never one that would end the partition.
    fn function(&self, rng: &mut Rng) -> u64 {
        let x0 = match rng.below(20) {
            0..=13 => u64::from(Hypercall::ALL[rng.below(Hypercall::ALL.len() as u64) as usize].function_id()),
            14 | 15 => u64::from(RVM_CALL_BASE | (rng.below(0xffff - 0x14) as u32 + 0x15)),
            16 => {
                u64::from(rng.pick(&[psci::VERSION, psci::FEATURES, psci::SYSTEM_RESET, psci::CPU_ON_64, 0x8400_0001]))
            }
            17 => rng.next() & 0xffff_ffff,
            18 => u64::from(RVM_CALL_BASE) | (rng.next() & 0xffff),
            _ => rng.next(),
        };
        let ends_it = Hypercall::from_function_id(x0) == Some(Hypercall::Exit)
            || u32::try_from(x0).is_ok_and(|id| id == psci::SYSTEM_OFF || id == psci::CPU_OFF);
        if ends_it {
            u64::from(Hypercall::Null.function_id())
        } else {
            x0
        }
    }

    fn remember(&mut self, rng: &mut Rng, handle: u64) {
        let at = rng.below(DERIVED as u64) as usize;
        self.derived[at] = handle;
    }
}

/// Whether `status` is one the hypervisor defines for function `x0`.
fn defined(x0: u64, status: u64) -> bool {
    let signed = i64::from_ne_bytes(status.to_ne_bytes());
    let is_psci = u32::try_from(x0).is_ok_and(|id| smccc_owner(id) == SMCCC_OWNER_STANDARD);
    if is_psci {
        const PSCI_1_1: i64 = 0x0001_0001;
        return [
            psci::SUCCESS,
            PSCI_1_1,
            psci::NOT_SUPPORTED,
            psci::INVALID_PARAMETERS,
            psci::DENIED,
            psci::ALREADY_ON,
        ]
        .contains(&signed);
    }
    signed == 0 || HvError::from_code(signed).is_some()
}

/// Index into the status histogram: 0 for success, `-code` for an error,
/// the last slot for PSCI's positive version.
fn slot(status: u64) -> usize {
    let signed = i64::from_ne_bytes(status.to_ne_bytes());
    match usize::try_from(signed.unsigned_abs()) {
        Ok(n) if n < 31 => n,
        _ => 31,
    }
}

fn clock() -> u64 {
    hypercall(Hypercall::ClockRead, &mut []).map_or(0, |[t, _, _]| t)
}

fn main(boot_info: u64) -> ! {
    let s = start("hvc-fuzz", boot_info);
    let input = s.input();
    let (Some(seed), Some(calls)) = (u64_at(input, 8), u64_at(input, 16)) else {
        println!("fuzz: input is not 24 bytes starting {MAGIC:?}");
        finish(1)
    };
    if input[..8] != MAGIC {
        println!("fuzz: bad input magic");
        finish(1)
    }
    println!("fuzz seed {seed:#018x} calls {calls}");
    if image_end() > HYPERVISOR_PA {
        println!("fuzz: the image reaches {HYPERVISOR_PA:#x}; not fuzzing");
        finish(1)
    }
    let mut w = World {
        handles: [0; 32],
        count: s.handle_count().min(32),
        derived: [0; DERIVED],
        partition: u64::from(s.info.partition),
        boot_info,
        input: (s.info.wasm_ipa, s.info.wasm_len),
        heap_end: s.info.heap_ipa.saturating_add(s.info.heap_len),
    };
    for n in 0..w.count {
        w.handles[n] = s.handle(n).map_or(0, |h| h.raw);
    }
    let mut rng = Rng(seed);
    // Back the scratch pages (the first touch of each faults and is mapped)
    // and fill them from the seed, so buffers hold reproducible bytes.
    let mut at = SCRATCH;
    while at < SCRATCH + SCRATCH_LEN {
        probe::write_u64(at, rng.next());
        at += 8;
    }
    let mut seen = [0u64; 32];
    let mut skipped = 0u64;
    // `Null`, `Yield` and the `Idle(0)` question are not witnessed; the test
    // counts the rest.
    let mut unwitnessed = 0u64;
    let quiet = [u64::from(Hypercall::Null.function_id()), u64::from(Hypercall::Yield.function_id())];
    let t0 = clock();
    for i in 0..calls {
        let x0 = w.function(&mut rng);
        let classes = classes(Hypercall::from_function_id(x0));
        let mut x = [x0, 0, 0, 0, 0, 0, 0];
        for (reg, class) in x[1..].iter_mut().zip(classes) {
            *reg = w.value(&mut rng, class);
        }
        let Some([status, r1, _, _]) = hvc_raw(x) else {
            skipped += 1;
            continue;
        };
        if !defined(x0, status) {
            println!("fuzz FAILED call {i} x0 {x0:#x} x1 {:#x} x2 {:#x} x3 {:#x}", x[1], x[2], x[3]);
            println!("fuzz FAILED call {i} x4 {:#x} x5 {:#x} x6 {:#x} status {status:#x}", x[4], x[5], x[6]);
            finish(1)
        }
        seen[slot(status)] += 1;
        let idle_question = Hypercall::from_function_id(x0) == Some(Hypercall::Idle) && x[1] == 0;
        if quiet.contains(&x0) || idle_question {
            unwitnessed += 1;
        }
        if status == 0 && Hypercall::from_function_id(x0) == Some(Hypercall::CapDerive) {
            w.remember(&mut rng, r1);
        }
    }
    let t1 = clock();
    // Fuzzed console writes may have left a partial line: end it first.
    rvm_el1::console::write(b"\n");
    let ns = t1.saturating_sub(t0).max(1);
    let made = calls - skipped;
    let rate = u128::from(made) * 1_000_000_000 / u128::from(ns);
    println!("fuzz done calls {made} skipped {skipped} unwitnessed {unwitnessed} ns {ns} per-second {rate}");
    for (n, count) in seen.iter().enumerate().filter(|(_, c)| **c > 0) {
        let name = match n {
            0 => "ok",
            31 => "psci-other",
            _ => HvError::from_code(-(n as i64)).map_or("psci", HvError::name),
        };
        println!("fuzz status {name} {count}");
    }
    let Some(channel) = s.first_of(ObjectKind::Channel) else {
        println!("fuzz: no channel to tell the peer");
        finish(0)
    };
    while let Err(HvError::Full) = hypercall(Hypercall::ChannelSend, &mut [Arg::Val(channel), Arg::In(&DONE_MESSAGE)]) {
        let _ = hypercall(Hypercall::Yield, &mut []);
    }
    finish(0)
}
