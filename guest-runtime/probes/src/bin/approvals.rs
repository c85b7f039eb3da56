//! Probe: a partition that tries to stretch P3 approvals and a quota by
//! copying its capabilities into its own table, replays an approval from an
//! earlier boot, and commits other items than the ones approved; it reports
//! exactly what each call returned.
//!
//! Every hypercall it makes, except console writes and its `Exit`, prints
//! one line
//!
//! ```text
//! attack <name> op <call number> cap <witness id, hex> status <code> x1 <hex>
//! ```
//!
//! in the order made, so the test can pair each line with the partition's
//! witness record of the same call. The probe judges nothing: it exits 0.
//!
//! # What the test installs (handles in boot order)
//!
//! | n | capability |
//! |---|---|
//! | 0 | its own state store, READ WRITE at P1 (every partition has it) |
//! | 1 | own store: WRITE at P3, GRANT at P1 |
//! | 2 | own store: WRITE at P2, GRANT at P1, quota 1 call per epoch |
//! | 3 | own store: WRITE at P1 (staging) |
//! | 4 | own store: WRITE at P3 (commits) |
//!
//! # Input (the bundle's module slot, 272 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RVMAPR01` |
//! | 8 | 8 | reserved |
//! | 16 | 64 | approval of `StateValidate` through handle 1, nothing staged, nonce 1, this boot |
//! | 80 | 64 | the same with nonce 2, signed for an earlier boot of the same deployment |
//! | 144 | 64 | approval of `StateCommit` through handle 4 of the staged set `k` = `good`, nonce 1 |
//! | 208 | 64 | the same approval with nonce 2 |
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::witness::NO_CAP;
use rvm_abi::{CapHandle, HvError, Hypercall, Rights};
use rvm_el1::arch::{hypercall, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start, Start};

rvm_el1::el1_main!(main);

const MAGIC: [u8; 8] = *b"RVMAPR01";
const INPUT_LEN: usize = 272;
/// Copies made of each capability.
const COPIES: usize = 6;

/// Approvals in the input, by offset.
mod approval {
    pub const VALIDATE: usize = 16;
    pub const VALIDATE_EARLIER_BOOT: usize = 80;
    pub const COMMIT_1: usize = 144;
    pub const COMMIT_2: usize = 208;
}

fn witness_id(raw: u64) -> u32 {
    CapHandle::from_raw(raw).map_or(NO_CAP, CapHandle::witness_id)
}

/// Make one call with `handle` in `x1` and `rest` after it; print its line.
fn attack<'a>(name: &str, n: usize, call: Hypercall, handle: u64, rest: &mut [Arg<'a>]) -> Result<[u64; 3], HvError> {
    let mut args: [Arg<'a>; 6] = [Arg::Val(handle), Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::Val(0)];
    let count = rest.len().min(5);
    for (slot, a) in args[1..].iter_mut().zip(rest.iter_mut()) {
        *slot = core::mem::replace(a, Arg::Val(0));
    }
    let r = hypercall(call, &mut args[..1 + count]);
    let (status, x1) = match r {
        Ok([x1, _, _]) => (0, x1),
        Err(e) => (e.code(), 0),
    };
    println!("attack {name}-{n} op {} cap {:#x} status {status} x1 {x1:#x}", call as u16, witness_id(handle));
    r
}

/// A copy of `parent` (WRITE only) in the caller's own table.
fn copy(name: &str, n: usize, parent: u64, me: u64) -> u64 {
    let w = u64::from(Rights::WRITE.bits());
    attack(name, n, Hypercall::CapDerive, parent, &mut [Arg::Val(me), Arg::Val(w), Arg::Val(0), Arg::Val(0), Arg::Val(0)])
        .map_or(0, |[h, _, _]| h)
}

/// `StateValidate` or `StateCommit` through `handle` with an optional
/// approval and its nonce.
fn finish_call(name: &str, n: usize, call: Hypercall, handle: u64, proof: Option<&[u8]>, nonce: u64) {
    let _ = attack(name, n, call, handle, &mut [Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::InPtr(proof), Arg::Val(nonce)]);
}

/// Stage `key` = `value` through `handle`.
fn stage(name: &str, handle: u64, key: &[u8], value: &[u8]) {
    let _ = attack(name, 0, Hypercall::StateStage, handle, &mut [Arg::In(key), Arg::In(value)]);
}

fn handle(s: &Start, n: usize) -> u64 {
    match s.handle(n) {
        Some(h) => h.raw,
        None => {
            println!("approvals: handle {n} missing");
            finish(1)
        }
    }
}

fn main(boot_info: u64) -> ! {
    let s = start("approvals", boot_info);
    let input = s.input();
    if input.len() != INPUT_LEN || input[..8] != MAGIC {
        println!("approvals: input is not {INPUT_LEN} bytes starting {MAGIC:?}");
        finish(1)
    }
    let sig = |at: usize| -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(&input[at..at + 64]);
        s
    };
    let me = u64::from(s.info.partition);
    let (p3, quota, stager, committer) = (handle(&s, 1), handle(&s, 2), handle(&s, 3), handle(&s, 4));
    let validate = sig(approval::VALIDATE);

    // One approval, used, replayed, then replayed through copies of the
    // capability made in the partition's own table.
    finish_call("approved", 0, Hypercall::StateValidate, p3, Some(&validate), 1);
    finish_call("replay", 0, Hypercall::StateValidate, p3, Some(&validate), 1);
    for n in 1..=COPIES {
        let c = copy("self-copy", n, p3, me);
        finish_call("copy-replay", n, Hypercall::StateValidate, c, Some(&validate), 1);
    }
    // An approval from an earlier boot of the same deployment.
    finish_call("earlier-boot", 0, Hypercall::StateValidate, p3, Some(&sig(approval::VALIDATE_EARLIER_BOOT)), 2);

    // One call per epoch, split over copies.
    for n in 1..=COPIES {
        let c = copy("quota-copy", n, quota, me);
        finish_call("quota-use", n, Hypercall::StateValidate, c, None, 0);
    }

    // A commit approval covers the items it was given for, not others.
    stage("stage-good", stager, b"k", b"good");
    finish_call("commit-approved", 0, Hypercall::StateCommit, committer, Some(&sig(approval::COMMIT_1)), 1);
    stage("stage-evil", stager, b"k", b"evil");
    finish_call("commit-other-items", 0, Hypercall::StateCommit, committer, Some(&sig(approval::COMMIT_2)), 2);

    println!("approvals: finished");
    finish(0)
}
