//! `ToolCall`: an agent calls a tool under its partition's claims — the
//! caller's [`Call`] and its claims ([`ClaimOf`]). The call is checked and
//! witnessed here; the host runs the tool, and its answer is taken by
//! [`crate::tool_calls`].
//!
//! The checks, in order: the name's and the request's lengths
//! (`InvalidArgument`), the buffers (`BadAddress`), the name's characters
//! (`InvalidArgument`), then the claims — the first `Resource` capability
//! whose pattern allows the name and request (`rvm_cap::claim`) and whose
//! use with EXECUTE passes at its tier (expiry and quota at P2; a P3 token
//! needs an approval no tool call carries yet, so it is refused with
//! `BadProof`). None allows it: `NoRights`, witnessed with no token. A
//! boot whose host serves no tools refuses an allowed call with
//! `NotSupported`.

use alloc::vec::Vec;

use rvm_abi::tool::{MAX_NAME, MAX_REQUEST, MAX_RESPONSE};
use rvm_abi::{HvError, Hypercall, ObjectKind, Outcome, Rights};
use rvm_cap::claim;
use rvm_cap::ArgsDigest;

use crate::arch::Arch;
use crate::caps::{Granted, Refused};
use crate::partition::ToolWait;
use crate::running::trap::Flow;
use crate::tool_calls::desk::ClaimOf;

use super::call::{Call, CapUse, ProofRegs, Witnessed};

/// A call the host is to run: what the dispatcher sends it.
pub(crate) struct ToolRequest {
    pub seq: u64,
    pub capacity: u64,
    pub name: Vec<u8>,
    pub request: Vec<u8>,
}

/// The first claim that allows `name` with `request` and passes its use
/// check; else the first refusal among the claims that allowed it, or
/// `NoRights` when none did.
fn grant<A: Arch>(call: &mut Call<'_, A>, claims: &[ClaimOf], name: &str, request: &[u8]) -> Result<Granted, Option<Refused>> {
    let mut first_refusal = None;
    for c in claims {
        let allows = claim::parse(&c.pattern).is_ok_and(|p| p.allows(name, request).is_ok());
        if !allows {
            continue;
        }
        let u = CapUse {
            call: Hypercall::ToolCall,
            raw: c.raw,
            kind: Some(ObjectKind::Resource),
            need: Rights::EXECUTE,
            access: None,
            proof: ProofRegs::NONE,
        };
        match call.authorize(&u, |_| Ok(ArgsDigest::of(&[], &[]))) {
            Ok(g) => return Ok(g),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    Err(first_refusal)
}

/// Check, witness and park a tool call; what to send the host when it was
/// allowed.
///
/// `serve`: the host serves tools, answering within `deadline_ns` (else
/// the kernel answers `TimedOut`); `None`: it does not.
pub(super) fn call<A: Arch>(call: &mut Call<'_, A>, claims: &[ClaimOf], w: Witnessed, regs: &[u64; 6], serve: Option<u64>) -> (Flow, Option<ToolRequest>) {
    let name_len = regs[1];
    if name_len == 0 || name_len > MAX_NAME as u64 || regs[3] > MAX_REQUEST as u64 {
        return (call.deny(&w, HvError::InvalidArgument), None);
    }
    let name = match call.read_guest(regs[0], name_len, MAX_NAME as u64) {
        Ok(n) => n,
        Err(e) => return (call.deny(&w, e), None),
    };
    let request = match call.read_guest(regs[2], regs[3], MAX_REQUEST as u64) {
        Ok(r) => r,
        Err(e) => return (call.deny(&w, e), None),
    };
    let w = w.data(regs, &[name.as_slice(), request.as_slice()].concat());
    let capacity = regs[5].min(MAX_RESPONSE as u64);
    if let Err(e) = call.check_writable(regs[4], capacity) {
        return (call.deny(&w, e), None);
    }
    let Some(tool) = core::str::from_utf8(&name).ok().filter(|t| claim::valid_tool(t)) else {
        return (call.deny(&w, HvError::InvalidArgument), None);
    };
    let g = match grant(call, claims, tool, &request) {
        Ok(g) => g,
        Err(Some(r)) => return (call.refuse(w, r), None),
        Err(None) => return (call.deny(&w, HvError::NoRights), None),
    };
    let w = w.granted(&g);
    let Some(deadline_ns) = serve else {
        return (call.deny(&w, HvError::NotSupported), None);
    };
    // The record before the effect: the host runs nothing unwitnessed.
    let seq = match call.witness_seq(&w, Outcome::Done, true) {
        Ok(seq) => seq,
        Err(e) => {
            call.answer(e.code(), &[]);
            return (Flow::Resume, None);
        }
    };
    call.journal_call(&w, seq, 0, &[]);
    // The host acts on it and that cannot be undone: the record is signed
    // before the host hears of it, as a committed set's is.
    let log = call.caller.id().0;
    call.witness.checkpoint(&mut *call.arch, log);
    let deadline_ns = call.arch.now_ns().saturating_add(deadline_ns);
    call.caller.await_tool(ToolWait { seq, regs: *regs, tier: w.tier, cap: w.cap, capacity, deadline_ns });
    (Flow::Waiting, Some(ToolRequest { seq, capacity, name, request }))
}
