//! Capability hypercalls: `CapQuery`, `CapDerive`, `CapRevoke`, `Prove`.
//!
//! Each follows the dispatch pattern — check, witness, act — with one
//! difference for `CapDerive` and `CapRevoke`: `rvm-cap` decides and applies
//! those in one step (a denied derive or revoke changes nothing), and their
//! record carries the result (the new handle, the count removed). So the
//! caller's log is *reserved* first — ring slot, sequence number, memory for
//! a snapshot — which makes the record's append after the change unable to
//! fail; if the reservation fails the call answers `WitnessUnavailable` and
//! nothing changes. Still fail-closed.
//!
//! # P3 approvals
//!
//! `x5` = IPA of the 64-byte Ed25519 signature, `x6` = nonce (see
//! [`rvm_cap::proof`] for the signed message). The arguments digest each call
//! binds:
//!
//! | call | arguments digest |
//! |---|---|
//! | `CapDerive` | [`DeriveParams::args_digest`](rvm_cap::DeriveParams::args_digest) of (target, rights, expiry) |
//! | `CapRevoke` | [`revoke_args_digest`](rvm_cap::proof::revoke_args_digest) (no arguments) |
//! | `Prove` | `ArgsDigest::of(&[], &[])` (its only argument is where to write) |

use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::{HvError, Hypercall, ObjectKind, Outcome, ProofTier, Rights};
use rvm_cap::attest::Attestation;
use rvm_cap::{ArgsDigest, ObjectRef, Timestamp};
use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::caps::{DeriveArgs, Refused, UseParams};
use crate::running::trap::Flow;
use rvm_state::store::{StateStore, StoreSnapshot};

use super::call::{Call, CapUse, ProofRegs, Witnessed};

/// Domain-separation prefix of a state store's state digest.
pub const STORE_DIGEST_TAG: [u8; 16] = *b"RVM-STORE-STATE\0";

/// `CapQuery`: `x1` = object kind, `x2` = rights, `x3` = tier mask. Needs no
/// right; witnessed at P1.
pub(super) fn query<A: Arch>(call: &mut Call<'_, A>, w: Witnessed, regs: &[u64; 6]) -> Flow {
    match call.caps.query(call.caller.id(), regs[0]) {
        Ok(q) => {
            let w = w.at(ProofTier::P1);
            call.allow(&w, |_| [q.kind as u64, u64::from(q.rights.bits()), q.tier_mask])
        }
        Err(e) => call.refuse(w, Refused::at(e, ProofTier::P1, regs[0])),
    }
}

/// The arguments of `CapDerive` after the parent handle: `x2` target
/// partition, `x3` rights, `x4` expiry (absolute, kernel clock, 0 = the
/// parent's). `None` if one is out of range.
fn derive_args(regs: &[u64; 6]) -> Option<DeriveArgs> {
    let target = u32::try_from(regs[1]).ok()?;
    let rights = Rights::from_bits(u8::try_from(regs[2]).ok()?)?;
    let expiry_ns = (regs[3] != 0).then_some(regs[3]);
    Some(DeriveArgs { target, rights, expiry_ns })
}

/// Witness a change `rvm-cap` has already made and return `results`.
fn applied<A: Arch>(call: &mut Call<'_, A>, w: &Witnessed, results: [u64; 3]) -> Flow {
    match call.witness(w, Outcome::Done) {
        Ok(()) => call.answer(0, &results),
        Err(e) => call.answer(e.code(), &[]),
    }
    Flow::Resume
}

/// `CapDerive`: `x1` = parent, `x2` = target partition, `x3` = rights,
/// `x4` = expiry, `x5`/`x6` = approval and nonce; `x1` = the new handle, in
/// the target's table. The record names the parent, the tier its GRANT (or
/// GRANT_ONCE) was used at, and digests the registers with the new handle.
pub(super) fn derive<A: Arch>(call: &mut Call<'_, A>, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let (id, raw) = (call.caller.id(), regs[0]);
    let tier = match call.caps.derive_tier(id, raw) {
        Ok(t) => t,
        Err(r) => return call.refuse(w, r),
    };
    let Some(args) = derive_args(regs) else {
        return call.refuse(w, Refused::at(HvError::InvalidArgument, tier, raw));
    };
    let signature = match tier {
        ProofTier::P3 => match call.read_signature(regs[4], raw) {
            Ok(s) => s,
            Err(r) => return call.refuse(w, r),
        },
        ProofTier::P1 | ProofTier::P2 => None,
    };
    let params = UseParams { now_ns: call.arch.now_ns(), access: None, nonce: regs[5] };
    if let Err(e) = call.witness.reserve(id.0) {
        call.answer(e.code(), &[]);
        return Flow::Resume;
    }
    match call.caps.derive(id, raw, &args, &params, signature.as_ref()) {
        Ok((handle, g)) => {
            let new = handle.to_raw();
            let w = w.granted(&g).data(regs, &new.to_le_bytes());
            applied(call, &w, [new, 0, 0])
        }
        Err(r) => call.refuse(w, r),
    }
}

/// `CapRevoke`: `x1` = handle, `x5`/`x6` = approval and nonce; revokes
/// everything derived from the handle, in every partition; `x1` = how many
/// capabilities were removed.
pub(super) fn revoke<A: Arch>(call: &mut Call<'_, A>, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let (id, raw) = (call.caller.id(), regs[0]);
    let u = CapUse {
        call: Hypercall::CapRevoke,
        raw,
        kind: None,
        need: Rights::REVOKE,
        access: None,
        proof: ProofRegs::x5_x6(regs),
    };
    let tier = match call.preflight(&u) {
        Ok(t) => t,
        Err(r) => return call.refuse(w, r),
    };
    let signature = match tier {
        ProofTier::P3 => match call.read_signature(u.proof.signature_ipa, raw) {
            Ok(s) => s,
            Err(r) => return call.refuse(w, r),
        },
        ProofTier::P1 | ProofTier::P2 => None,
    };
    let params = UseParams { now_ns: call.arch.now_ns(), access: None, nonce: u.proof.nonce };
    if let Err(e) = call.witness.reserve(id.0) {
        call.answer(e.code(), &[]);
        return Flow::Resume;
    }
    match call.caps.revoke(id, raw, &params, signature.as_ref()) {
        Ok((removed, g)) => {
            let w = w.granted(&g).data(regs, &removed.to_le_bytes());
            applied(call, &w, [u64::from(removed), 0, 0])
        }
        Err(r) => call.refuse(w, r),
    }
}

/// The state digest `Prove` attests for an object: a witness log's chain
/// head (as it stands before the `Prove` call's own record), or a state
/// store's committed items. Other kinds have no state to attest
/// (`NotSupported`); an object that does not exist is `InvalidArgument`.
fn state_digest(witness: &crate::witness::Witness, stores: &[StateStore], object: ObjectRef) -> Result<[u8; 32], HvError> {
    match object.kind {
        ObjectKind::WitnessLog => witness.head(object.id.0).ok_or(HvError::InvalidArgument),
        ObjectKind::StateStore => {
            let at = usize::try_from(object.id.0).map_err(|_| HvError::InvalidArgument)?;
            let store = at.checked_sub(1).and_then(|i| stores.get(i)).ok_or(HvError::InvalidArgument)?;
            Ok(store_digest(&store.snapshot()))
        }
        ObjectKind::Partition
        | ObjectKind::Region
        | ObjectKind::Channel
        | ObjectKind::Device
        | ObjectKind::Resource => Err(HvError::NotSupported),
    }
}

/// `SHA-256(STORE_DIGEST_TAG ‖ count u64 ‖ (key length u32 ‖ key ‖ value
/// length u32 ‖ value)*)`, items in ascending key order, integers
/// little-endian.
pub fn store_digest(snapshot: &StoreSnapshot) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(STORE_DIGEST_TAG);
    h.update(u64::try_from(snapshot.len()).unwrap_or(u64::MAX).to_le_bytes());
    for (k, v) in snapshot.items() {
        // Keys and values are bounded by the store's limits (far below 4 GiB).
        h.update(u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.update(k);
        h.update(u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.update(v);
    }
    h.finalize().into()
}

/// `Prove`: `x1` = handle (PROVE), `x2` = IPA of a 96-byte buffer,
/// `x5`/`x6` = approval and nonce. Writes the 32-byte state digest and the
/// hypervisor's 64-byte signature over the
/// [`Attestation`](rvm_cap::attest::Attestation) message; `x1` = the
/// attestation's timestamp (kernel clock), `x2` = object kind, `x3` = object
/// id — with the caller's partition id, everything a verifier needs to
/// rebuild the signed message.
pub(super) fn prove<A: Arch>(call: &mut Call<'_, A>, stores: &[StateStore], w: Witnessed, regs: &[u64; 6]) -> Flow {
    let (id, raw) = (call.caller.id(), regs[0]);
    let u = CapUse {
        call: Hypercall::Prove,
        raw,
        kind: None,
        need: Rights::PROVE,
        access: None,
        proof: ProofRegs::x5_x6(regs),
    };
    let tier = match call.preflight(&u) {
        Ok(t) => t,
        Err(r) => return call.refuse(w, r),
    };
    // Everything that needs no policy is checked before the policy is charged.
    let object = match call.caps.info(id, raw) {
        Ok(info) => info.object,
        Err(e) => return call.refuse(w, Refused::at(e, ProofTier::P1, raw)),
    };
    let digest = match state_digest(call.witness, stores, object) {
        Ok(d) => d,
        Err(e) => return call.refuse(w, Refused::at(e, tier, raw)),
    };
    let out_len = PROVE_BUFFER_LEN as u64;
    if let Err(e) = call.check_writable(regs[1], out_len) {
        return call.refuse(w, Refused::at(e, tier, raw));
    }
    let g = match call.authorize_at(&u, tier, |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return call.refuse(w, r),
    };
    let at = call.arch.now_ns();
    let attestation =
        Attestation { object, partition: rvm_cap::PartitionId(id.0), at: Timestamp(at), state_digest: digest };
    let signature = call.witness.sign(&attestation.message());
    let mut out = [0u8; PROVE_BUFFER_LEN];
    out[..32].copy_from_slice(&digest);
    out[32..].copy_from_slice(&signature);
    let w = w.granted(&g).data(regs, &out);
    call.allow(&w, |call| {
        call.write_guest(regs[1], &out);
        [at, object.kind as u64, u64::from(object.id.0)]
    })
}
