//! Probe: a hostile partition that attacks the capability system from EL1,
//! one hypercall per attack, and reports exactly what each returned.
//!
//! Every hypercall it makes, except console writes and the channel polls
//! while it waits for its peer's handle, prints one line
//!
//! ```text
//! attack <name> op <call number> cap <witness id, hex> status <code> x1 <hex>
//! ```
//!
//! in the order made, so the test can pair each line with the partition's
//! witness record of the same call and judge both. The probe itself judges
//! nothing: it always exits 0.
//!
//! # What the test installs (handles in boot order)
//!
//! | n | capability |
//! |---|---|
//! | 0 | its own state store, READ WRITE at P1 (every partition has it) |
//! | 1 | own store: READ WRITE GRANT REVOKE PROVE, all P1 |
//! | 2 | own store: READ WRITE GRANT_ONCE, P1 |
//! | 3 | own store: WRITE at P2, quota 3 calls per epoch |
//! | 4 | own store: WRITE at P2 (the replay guard) |
//! | 5 | own store: WRITE at P2, GRANT at P1, a finite expiry |
//! | 6 | own store: READ GRANT at P1, REVOKE at P3 |
//! | 7 | own store: WRITE REVOKE at P1, GRANT PROVE at P3 |
//! | 8 | its own witness log: PROVE at P1 |
//! | 9 | the channel to its peer |
//!
//! # Input (the bundle's module slot, 400 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RVMATK01` |
//! | 8 | 8 | reserved |
//! | 16 | 64 | approval of `CapRevoke` on handle 6's object, nonce 1, by the bound key |
//! | 80 | 64 | the same message signed by a key that is not bound |
//! | 144 | 64 | approval of `CapDerive` WRITE GRANT PROVE into itself, nonce 1 |
//! | 208 | 64 | approval of `CapDerive` WRITE PROVE into itself, nonce 2 |
//! | 272 | 64 | approval of `Prove`, nonce 3 |
//! | 336 | 64 | approval of `Prove`, nonce 4 |
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::witness::NO_CAP;
use rvm_abi::{CapHandle, HvError, Hypercall, Rights};
use rvm_el1::arch::{hypercall, Arg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start, Start, DONE_MESSAGE};

rvm_el1::el1_main!(main);

const MAGIC: [u8; 8] = *b"RVMATK01";
const INPUT_LEN: usize = 400;
/// An IPA nothing maps.
const UNMAPPED: u64 = rvm_guest_probes::UNMAPPED_IPA;

/// Handles by boot position (see the module documentation).
mod at {
    pub const P1_ALL: usize = 1;
    pub const ONCE: usize = 2;
    pub const QUOTA: usize = 3;
    pub const NONCE: usize = 4;
    pub const EXPIRING: usize = 5;
    pub const P3_REVOKE: usize = 6;
    pub const P3_CHAIN: usize = 7;
    pub const LOG: usize = 8;
    pub const CHANNEL: usize = 9;
}

/// Approvals in the input, by offset.
mod approval {
    pub const REVOKE: usize = 16;
    pub const REVOKE_WRONG_KEY: usize = 80;
    pub const DERIVE_C1: usize = 144;
    pub const DERIVE_C2: usize = 208;
    pub const PROVE_1: usize = 272;
    pub const PROVE_2: usize = 336;
}

fn witness_id(raw: u64) -> u32 {
    CapHandle::from_raw(raw).map_or(NO_CAP, CapHandle::witness_id)
}

/// Make one attack call with `handle` in `x1` and `rest` after it; print its line.
fn attack<'a>(name: &str, call: Hypercall, handle: u64, rest: &mut [Arg<'a>]) -> Result<[u64; 3], HvError> {
    let mut args: [Arg<'a>; 6] = [Arg::Val(handle), Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::Val(0)];
    let n = rest.len().min(5);
    for (slot, a) in args[1..].iter_mut().zip(rest.iter_mut()) {
        *slot = core::mem::replace(a, Arg::Val(0));
    }
    let r = hypercall(call, &mut args[..1 + n]);
    let (status, x1) = match r {
        Ok([x1, _, _]) => (0, x1),
        Err(e) => (e.code(), 0),
    };
    println!("attack {name} op {} cap {:#x} status {status} x1 {x1:#x}", call as u16, witness_id(handle));
    r
}

/// `CapDerive` from `parent` into `target` with `rights`, expiry and an
/// optional approval with its nonce.
fn derive(
    name: &str,
    parent: u64,
    target: u64,
    rights: u64,
    expiry: u64,
    proof: Option<&[u8]>,
    nonce: u64,
) -> Result<u64, HvError> {
    attack(
        name,
        Hypercall::CapDerive,
        parent,
        &mut [Arg::Val(target), Arg::Val(rights), Arg::Val(expiry), Arg::InPtr(proof), Arg::Val(nonce)],
    )
    .map(|[h, _, _]| h)
}

/// `CapRevoke` of `handle` with an optional approval and nonce.
fn revoke(name: &str, handle: u64, proof: Option<&[u8]>, nonce: u64) -> Result<u64, HvError> {
    attack(
        name,
        Hypercall::CapRevoke,
        handle,
        &mut [Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::InPtr(proof), Arg::Val(nonce)],
    )
    .map(|[n, _, _]| n)
}

/// `CapRevoke` with `x5` = an IPA of our choosing.
fn revoke_at(name: &str, handle: u64, proof_ipa: u64, nonce: u64) -> Result<u64, HvError> {
    attack(
        name,
        Hypercall::CapRevoke,
        handle,
        &mut [Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::Val(proof_ipa), Arg::Val(nonce)],
    )
    .map(|[n, _, _]| n)
}

/// `StateValidate` (needs WRITE) with an optional nonce: the cheapest use.
fn use_cap(name: &str, handle: u64, nonce: u64) -> Result<[u64; 3], HvError> {
    attack(
        name,
        Hypercall::StateValidate,
        handle,
        &mut [Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::Val(0), Arg::Val(nonce)],
    )
}

/// `Prove` into `out`, with an optional approval and nonce; prints the 96
/// bytes (`attest`, `attest-digest`, `attest-signature` lines) when it succeeds.
fn prove(name: &str, handle: u64, proof: Option<&[u8]>, nonce: u64) -> Result<[u64; 3], HvError> {
    let mut out = [0u8; PROVE_BUFFER_LEN];
    let r = attack(
        name,
        Hypercall::Prove,
        handle,
        &mut [Arg::OutPtr(&mut out), Arg::Val(0), Arg::Val(0), Arg::InPtr(proof), Arg::Val(nonce)],
    );
    if let Ok([at, kind, object]) = r {
        let mut hex = [0u8; 2 * PROVE_BUFFER_LEN];
        let text = rvm_abi::hex::encode(&out, &mut hex).and_then(|t| core::str::from_utf8(t).ok()).unwrap_or("?");
        // Console lines are at most 192 bytes: the digest and the signature
        // go on lines of their own.
        let (digest, signature) = text.split_at(text.len().min(64));
        println!("attest {name} at {at:#x} kind {kind} object {object}");
        println!("attest-digest {name} {digest}");
        println!("attest-signature {name} {signature}");
    }
    r
}

fn bits(r: Rights) -> u64 {
    u64::from(r.bits())
}

/// Wait for the peer's first message: the raw value of its last handle.
fn peer_handle(channel: u64) -> u64 {
    let mut buf = [0u8; 64];
    loop {
        match hypercall(Hypercall::ChannelRecv, &mut [Arg::Val(channel), Arg::Out(&mut buf)]) {
            Ok([8, _, _]) => return rvm_guest_probes::u64_at(&buf, 0).unwrap_or(0),
            Ok(_) => {}
            Err(HvError::WouldBlock) => {
                let _ = hypercall(Hypercall::Yield, &mut []);
            }
            Err(e) => {
                println!("attacker: waiting for the peer failed: {}", e.name());
                finish(1)
            }
        }
    }
}

fn handle(s: &Start, n: usize) -> u64 {
    match s.handle(n) {
        Some(h) => h.raw,
        None => {
            println!("attacker: handle {n} missing");
            finish(1)
        }
    }
}

fn main(boot_info: u64) -> ! {
    let s = start("cap-attacks", boot_info);
    let input = s.input();
    if input.len() != INPUT_LEN || input[..8] != MAGIC {
        println!("attacker: input is not {INPUT_LEN} bytes starting {MAGIC:?}");
        finish(1)
    }
    let sig = |at: usize| -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(&input[at..at + 64]);
        s
    };
    let me = u64::from(s.info.partition);
    let h = |n| handle(&s, n);
    let p1 = h(at::P1_ALL);
    let theirs = peer_handle(h(at::CHANNEL));
    println!("attacker: partition {me}, peer's handle {theirs:#x}");

    // Forged and foreign handles.
    let _ = use_cap("forged-index", CapHandle::new(200, 0).to_raw(), 0);
    let _ = use_cap("forged-generation", CapHandle::new(1, 7).to_raw(), 0);
    let _ = use_cap("forged-high-bits", 1 << 52, 0);
    let msg = [0u8; 4];
    let _ = attack("wrong-kind", Hypercall::ChannelSend, p1, &mut [Arg::In(&msg)]);
    let _ = use_cap("peer-handle", theirs, 0);
    let _ = revoke("peer-handle-revoke", theirs, None, 0);

    // Rights, expiry and target amplification through derive.
    let rg = derive("derive-read-grant", p1, me, bits(Rights::READ | Rights::GRANT), 0, None, 0).unwrap_or(0);
    let _ = derive("amplify-rights", rg, me, bits(Rights::READ | Rights::WRITE), 0, None, 0);
    let _ = use_cap("use-without-right", rg, 0);
    let _ = derive("amplify-expiry", h(at::EXPIRING), me, bits(Rights::WRITE), u64::MAX - 1, None, 0);
    let _ = derive("unknown-right", p1, me, 0x80, 0, None, 0);
    let _ = derive("derive-to-hypervisor", p1, 0, bits(Rights::READ), 0, None, 0);

    // Depth: eight derives succeed, the ninth is refused.
    let mut parent = p1;
    for name in ["depth-1", "depth-2", "depth-3", "depth-4", "depth-5", "depth-6", "depth-7", "depth-8", "depth-9"] {
        match derive(name, parent, me, bits(Rights::READ | Rights::GRANT), 0, None, 0) {
            Ok(child) => parent = child,
            Err(_) => break,
        }
    }

    // GRANT_ONCE is consumed by its first derive.
    let _ = derive("grant-once-first", h(at::ONCE), me, bits(Rights::READ), 0, None, 0);
    let _ = derive("grant-once-reuse", h(at::ONCE), me, bits(Rights::READ), 0, None, 0);

    // A revoked handle answers Revoked, then StaleHandle once its slot is reused.
    let x = derive("stale-derive", p1, me, bits(Rights::READ | Rights::WRITE), 0, None, 0).unwrap_or(0);
    let _ = revoke("stale-revoke", p1, None, 0);
    let _ = use_cap("revoked-use", x, 0);
    loop {
        match derive("fill", p1, me, bits(Rights::READ), 0, None, 0) {
            Ok(_) => {}
            Err(HvError::Full) => break,
            Err(_) => break,
        }
    }
    let _ = use_cap("stale-use", x, 0);
    let _ = revoke("stale-cleanup", p1, None, 0);

    // P2: expiry, quota, replay.
    let e = derive("expired-derive", h(at::EXPIRING), me, bits(Rights::WRITE), 1, None, 0).unwrap_or(0);
    let _ = use_cap("expired-use", e, 0);
    for name in ["quota-1", "quota-2", "quota-3", "quota-4"] {
        let _ = use_cap(name, h(at::QUOTA), 0);
    }
    let _ = use_cap("nonce-10", h(at::NONCE), 10);
    let _ = use_cap("nonce-replay", h(at::NONCE), 10);
    let _ = use_cap("nonce-older", h(at::NONCE), 9);
    let _ = use_cap("nonce-11", h(at::NONCE), 11);

    // P3 revoke: approvals missing, forged, by the wrong key, unreadable,
    // then a valid one, then the valid one replayed.
    let p3 = h(at::P3_REVOKE);
    let _ = derive("p3-setup-derive", p3, me, bits(Rights::READ), 0, None, 0);
    let good = sig(approval::REVOKE);
    let mut forged = good;
    forged[10] ^= 0x01;
    let _ = revoke("p3-no-proof", p3, None, 1);
    let _ = revoke("p3-bad-signature", p3, Some(&forged), 1);
    let _ = revoke("p3-wrong-key", p3, Some(&sig(approval::REVOKE_WRONG_KEY)), 1);
    let _ = revoke_at("p3-proof-unmapped", p3, UNMAPPED, 1);
    let _ = revoke("p3-approved", p3, Some(&good), 1);
    let _ = revoke("p3-replay", p3, Some(&good), 1);

    // P3 along a chain, then with a revoked ancestor.
    let chain = h(at::P3_CHAIN);
    let wgp = bits(Rights::WRITE | Rights::GRANT | Rights::PROVE);
    let _ = derive("p3-derive-no-proof", chain, me, wgp, 0, None, 1);
    let c1 = derive("p3-derive-c1", chain, me, wgp, 0, Some(&sig(approval::DERIVE_C1)), 1).unwrap_or(0);
    let wp = bits(Rights::WRITE | Rights::PROVE);
    let c2 = derive("p3-derive-c2", c1, me, wp, 0, Some(&sig(approval::DERIVE_C2)), 2).unwrap_or(0);
    let _ = prove("p3-prove-c2", c2, Some(&sig(approval::PROVE_1)), 3);
    let _ = revoke("p3-revoke-ancestor", chain, None, 0);
    let _ = prove("p3-revoked-ancestor", c2, Some(&sig(approval::PROVE_2)), 4);

    // PROVE on its own log, checked by the test against the hypervisor's key.
    let _ = prove("prove-log", h(at::LOG), None, 0);

    let _ = attack("done", Hypercall::ChannelSend, h(at::CHANNEL), &mut [Arg::In(&DONE_MESSAGE)]);
    println!("attacker: finished");
    finish(0)
}
