//! Hypercall dispatch: decode, check the capability, witness, then act.
//!
//! Every privileged call — allowed or denied — appends one witness record
//! *before* it takes effect; if the record cannot be written the call fails
//! with `WitnessUnavailable` and nothing happens (fail-closed). `Null` and
//! `Yield` change no state and are not witnessed.

use alloc::vec::Vec;

use rvm_abi::hypercall::{smccc_owner, SMCCC_OWNER_STANDARD};
use rvm_abi::witness::{HVC_IMMEDIATE_OP, NO_CAP};
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, Outcome, ProofTier, Rights, WitnessOp, WitnessRecord};
use rvm_cap::{ArgsDigest, Signature};

use crate::addr::Ipa;
use crate::arch::Arch;
use crate::caps::{Approval, Granted, Refused, UseParams};
use crate::guest_mem;

mod cap;
pub use cap::{store_digest, STORE_DIGEST_TAG};
mod channel;
mod checkpoint;
mod console;
mod state;
use crate::hypervisor::{Flow, Hypervisor};

/// Longest console write accepted in one call.
pub const MAX_CONSOLE_WRITE: u64 = 4096;

/// What a call wants witnessed about itself.
pub(crate) struct Witnessed {
    call: u16,
    tier: u8,
    cap: u32,
    regs: [u64; 6],
    /// Digest of the registers and buffer bytes, once a buffer was read;
    /// otherwise computed from `regs` only when the record is written, so
    /// calls that are not witnessed never pay for a hash.
    args: Option<[u8; 16]>,
    /// Whether the run journals this call (`crate::journal`).
    journal: bool,
    /// The bytes `args` covers after the registers, kept for the journal.
    kept: Option<Vec<u8>>,
}

impl Witnessed {
    pub(crate) fn new(call: Hypercall, regs: &[u64; 6]) -> Self {
        Self { call: call as u16, tier: 0, cap: NO_CAP, regs: *regs, args: None, journal: false, kept: None }
    }

    /// Keep the digested bytes for the input journal when `on`.
    pub(crate) fn journaled(mut self, on: bool) -> Self {
        self.journal = on;
        self
    }

    fn digest(&self) -> [u8; 16] {
        self.args.unwrap_or_else(|| rvm_state::digest::of_call(&self.regs, &[]))
    }

    pub(crate) fn granted(mut self, g: &Granted) -> Self {
        self.tier = g.tier as u8;
        self.cap = g.cap_id;
        self
    }

    /// A refused capability check: the tier it reached and the handle.
    pub(crate) fn refused(mut self, r: &Refused) -> Self {
        self.tier = r.tier as u8;
        self.cap = r.cap_id;
        self
    }

    pub(crate) fn handle(mut self, raw: u64) -> Self {
        self.cap = CapHandle::from_raw(raw).map_or(NO_CAP, CapHandle::witness_id);
        self
    }

    pub(crate) fn data(mut self, regs: &[u64; 6], data: &[u8]) -> Self {
        self.args = Some(rvm_state::digest::of_call(regs, data));
        if self.journal {
            self.kept = Some(data.to_vec());
        }
        self
    }
}

pub(crate) fn regs_of<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> [u64; 6] {
    let x = &hv.partitions[idx].vcpu.regs.x;
    [x[1], x[2], x[3], x[4], x[5], x[6]]
}

/// Append the call's record; `Err` if the log could not take it.
pub(crate) fn witness<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, outcome: Outcome) -> Result<(), HvError> {
    witness_seq(hv, idx, w, outcome, false).map(|_| ())
}

/// [`witness`], answering the record's sequence number; `journaled`: the
/// caller writes the call's journal entry (the record says so).
fn witness_seq<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, outcome: Outcome, journaled: bool) -> Result<u64, HvError> {
    let p = &mut hv.partitions[idx];
    p.stats.hypercalls += 1;
    if outcome != Outcome::Done {
        p.stats.denied += 1;
    }
    let mut rec = WitnessRecord::new(WitnessOp::Call(Hypercall::Null), outcome, p.id.0);
    rec.op = w.call;
    rec.tier = w.tier;
    rec.cap = w.cap;
    rec.args = w.digest();
    if journaled && w.journal {
        rec.flags |= rvm_abi::witness::flags::JOURNALED;
    }
    rec.timestamp = hv.arch.now_ns();
    p.output.charge_frame(rec.timestamp);
    let log = p.id.0;
    hv.witness.append(&mut hv.arch, log, rec).map_err(|_| HvError::WitnessUnavailable)
}

/// The journal entry of a witnessed call (see [`crate::journal`]).
fn journal_call<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, seq: u64, status: i64, results: &[u64]) {
    let input = crate::journal::CallInput { seq, regs: &w.regs, data: w.kept.as_deref().unwrap_or(&[]) };
    crate::journal::call(hv, idx, &input, status, results);
}

/// Witness a denial and return its status to the guest.
pub(crate) fn deny<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, err: HvError) -> Flow {
    let (status, seq) = match witness_seq(hv, idx, w, Outcome::Denied(err), true) {
        Ok(seq) => (err, Some(seq)),
        Err(e) => (e, None),
    };
    hv.partitions[idx].vcpu.set_return(status.code(), &[]);
    if let Some(seq) = seq {
        journal_call(hv, idx, w, seq, status.code(), &[]);
    }
    Flow::Resume
}

/// Witness success, then run `apply` (which must not fail) and return its results.
pub(crate) fn allow<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    w: &Witnessed,
    apply: impl FnOnce(&mut Hypervisor<A>) -> [u64; 3],
) -> Flow {
    let seq = match witness_seq(hv, idx, w, Outcome::Done, true) {
        Ok(seq) => seq,
        Err(e) => {
            hv.partitions[idx].vcpu.set_return(e.code(), &[]);
            return Flow::Resume;
        }
    };
    let results = apply(hv);
    hv.partitions[idx].vcpu.set_return(0, &results);
    journal_call(hv, idx, w, seq, 0, &results);
    Flow::Resume
}

pub(crate) fn read_guest<A: Arch>(hv: &Hypervisor<A>, idx: usize, ipa: u64, len: u64, max: u64) -> Result<Vec<u8>, HvError> {
    if len > max {
        return Err(HvError::InvalidArgument);
    }
    // The guest names the size: allocated fallibly (`NoMemory`, never an abort).
    let len = usize::try_from(len).map_err(|_| HvError::InvalidArgument)?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(len).map_err(|_| HvError::NoMemory)?;
    buf.resize(len, 0);
    guest_mem::read(&hv.arch, &hv.partitions[idx].stage2, Ipa::new(ipa), &mut buf)?;
    Ok(buf)
}

/// Witness a refused capability use (its tier, its handle, the exact error)
/// and return the error to the guest.
pub(crate) fn refuse<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, r: Refused) -> Flow {
    let w = w.refused(&r);
    deny(hv, idx, &w, r.error)
}

/// Where a call carries its P3 approval and its replay nonce.
///
/// Every call whose `x5` and `x6` are free uses them the same way: `x5` =
/// IPA of the 64-byte Ed25519 signature (0 = none), `x6` = nonce (0 =
/// none). Calls that use `x5` for an argument (`StateStage`, `StateGet`)
/// carry neither: at P3 they are refused with `BadProof`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProofRegs {
    /// IPA of the signature, 0 = none.
    pub signature_ipa: u64,
    /// The nonce, 0 = none.
    pub nonce: u64,
}

impl ProofRegs {
    /// A call with no room for a proof or a nonce.
    pub(crate) const NONE: ProofRegs = ProofRegs { signature_ipa: 0, nonce: 0 };

    /// `x5` = signature IPA, `x6` = nonce.
    pub(crate) fn x5_x6(regs: &[u64; 6]) -> Self {
        Self { signature_ipa: regs[4], nonce: regs[5] }
    }
}

/// How a call uses its capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CapUse {
    /// The call (the operation a P3 approval names).
    pub call: Hypercall,
    /// The handle register.
    pub raw: u64,
    /// The kind of object the call acts on (`None`: any kind).
    pub kind: Option<ObjectKind>,
    /// The rights it needs.
    pub need: Rights,
    /// The bytes it touches within the object, `(offset, length)`: checked
    /// against the byte window and charged to the byte quota from P2 up.
    pub access: Option<(u64, u64)>,
    pub proof: ProofRegs,
}

/// P1 of a use, changing nothing: handle, rights, object kind. The tier the
/// use runs at.
pub(crate) fn preflight<A: Arch>(hv: &Hypervisor<A>, idx: usize, u: &CapUse) -> Result<ProofTier, Refused> {
    hv.caps.required_tier(hv.partitions[idx].id, u.raw, u.kind, u.need)
}

/// Check a use at every tier and record it (nonce, quota). At P3 the
/// guest's signature is read and the arguments digest computed by `args`
/// (only then: P1 and P2 calls never pay for it). A call that passed no
/// signature goes straight to the check, which refuses a P3 use without one
/// (`BadProof`).
pub(crate) fn authorize<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    u: &CapUse,
    args: impl FnOnce(&Hypervisor<A>) -> Result<ArgsDigest, HvError>,
) -> Result<Granted, Refused> {
    let tier = match u.proof.signature_ipa {
        0 => ProofTier::P1,
        _ => preflight(hv, idx, u)?,
    };
    authorize_at(hv, idx, u, tier, args)
}

/// [`authorize`] once [`preflight`] has answered `tier` (only a P3 tier
/// changes anything here: it reads the approval).
pub(crate) fn authorize_at<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    u: &CapUse,
    tier: ProofTier,
    args: impl FnOnce(&Hypervisor<A>) -> Result<ArgsDigest, HvError>,
) -> Result<Granted, Refused> {
    let approval = match tier {
        ProofTier::P3 => match read_signature(hv, idx, u.proof.signature_ipa, u.raw)? {
            Some(signature) => {
                let args = args(hv).map_err(|e| Refused::at(e, ProofTier::P3, u.raw))?;
                Some(Approval { op: u.call, args, signature })
            }
            None => None,
        },
        ProofTier::P1 | ProofTier::P2 => None,
    };
    let id = hv.partitions[idx].id;
    let params = UseParams { now_ns: hv.arch.now_ns(), access: u.access, nonce: u.proof.nonce };
    match u.kind {
        Some(kind) => hv.caps.check(id, u.raw, kind, u.need, &params, approval.as_ref()),
        None => hv.caps.check_any(id, u.raw, u.need, &params, approval.as_ref()),
    }
}

/// The 64-byte signature a guest passed at `ipa` (0 = none). An unreadable
/// buffer is `BadAddress`, refused at P3 (only P3 uses read it).
pub(crate) fn read_signature<A: Arch>(hv: &Hypervisor<A>, idx: usize, ipa: u64, raw: u64) -> Result<Option<Signature>, Refused> {
    if ipa == 0 {
        return Ok(None);
    }
    let mut sig = [0u8; 64];
    guest_mem::read(&hv.arch, &hv.partitions[idx].stage2, Ipa::new(ipa), &mut sig)
        .map_err(|e| Refused::at(e, ProofTier::P3, raw))?;
    Ok(Some(Signature(sig)))
}

/// `Null` and `Yield`: no state changes and no witness record; status 0.
/// `None` for every other call.
#[inline]
fn unwitnessed<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, call: Hypercall) -> Option<Flow> {
    let flow = match call {
        Hypercall::Null => Flow::Resume,
        Hypercall::Yield => Flow::Yielded,
        _ => return None,
    };
    hv.partitions[idx].vcpu.set_return(0, &[]);
    Some(flow)
}

/// The `op` of a refused call whose function ID names no RVM call: its low
/// 15 bits, kept clear of [`HVC_IMMEDIATE_OP`].
fn unknown_call_op(x0: u64) -> u16 {
    ((x0 & 0x7fff) as u16).min(HVC_IMMEDIATE_OP - 1)
}

/// `hvc #imm` with `imm ≠ 0` from partition `idx`: refused with
/// `NotSupported` and witnessed (op [`HVC_IMMEDIATE_OP`], the digest over
/// `x1..x6`, the immediate and `x0`), like any refused call.
pub(crate) fn bad_immediate<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, imm: u16) -> Flow {
    let regs = regs_of(hv, idx);
    let x0 = hv.partitions[idx].vcpu.regs.x[0];
    let mut data = [0u8; 10];
    data[..2].copy_from_slice(&imm.to_le_bytes());
    data[2..].copy_from_slice(&x0.to_le_bytes());
    let w = Witnessed { call: HVC_IMMEDIATE_OP, tier: 0, cap: NO_CAP, regs, args: None, journal: false, kept: None };
    let w = w.data(&regs, &data);
    deny(hv, idx, &w, HvError::NotSupported)
}

/// Handle `hvc #0` from partition `idx`.
pub(crate) fn hypercall<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Flow {
    let x0 = hv.partitions[idx].vcpu.regs.x[0];
    if u32::try_from(x0).is_ok_and(|id| smccc_owner(id) == SMCCC_OWNER_STANDARD) {
        return crate::psci::call(hv, idx);
    }
    let Some(call) = Hypercall::from_function_id(x0) else {
        let regs = regs_of(hv, idx);
        let w = Witnessed { call: unknown_call_op(x0), tier: 0, cap: NO_CAP, regs, args: None, journal: false, kept: None };
        let w = w.data(&regs, &x0.to_le_bytes());
        return deny(hv, idx, &w, HvError::NotSupported);
    };
    // The calls that change no state and are not witnessed are answered
    // before anything is gathered for a witness record.
    if let Some(flow) = unwitnessed(hv, idx, call) {
        return flow;
    }
    let regs = regs_of(hv, idx);
    let w = Witnessed::new(call, &regs).journaled(hv.journal.on());
    match call {
        Hypercall::Null | Hypercall::Yield => unwitnessed(hv, idx, call).unwrap_or(Flow::Resume),
        Hypercall::ConsoleWrite => console::write(hv, idx, w, &regs),
        Hypercall::ChannelSend => channel::send(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::ChannelRecv => channel::recv(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::StateStage => state::stage(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::StateValidate | Hypercall::StateCommit => state::finish(hv, idx, call, w.handle(regs[0]), &regs),
        Hypercall::StateGet => state::get(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::CapQuery => cap::query(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::CapDerive => cap::derive(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::CapRevoke => cap::revoke(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::Prove => cap::prove(hv, idx, w.handle(regs[0]), &regs),
        // One checkpoint per partition holds one agent: refused when it runs several.
        // A departing agent's checkpoint carries out its move.
        Hypercall::Checkpoint if crate::migrate::departs(hv, idx) => crate::migrate::depart(hv, idx, w, &regs),
        Hypercall::Checkpoint if crate::domains::refuses_checkpoint(hv, idx) => deny(hv, idx, &w, HvError::NotSupported),
        Hypercall::Checkpoint => checkpoint::take(hv, idx, w, &regs),
        Hypercall::AgentSwitch => crate::domains::switch(hv, idx, w, &regs),
        Hypercall::Idle => crate::dormant::idle(hv, idx, w, &regs),
        Hypercall::ClockRead => {
            let p = &hv.partitions[idx];
            let now = hv.arch.now_ns().saturating_sub(p.started_ns.unwrap_or(0));
            let w = w.data(&regs, &now.to_le_bytes());
            allow(hv, idx, &w, |_| [now, 0, 0])
        }
        Hypercall::Exit => {
            let code = regs[0];
            let _ = allow(hv, idx, &w, |_| [0; 3]);
            crate::psci::finish(hv, idx, code);
            Flow::Reschedule
        }
        // Not built yet: refused honestly, and witnessed like any denial.
        Hypercall::RegionRead
        | Hypercall::RegionWrite
        | Hypercall::RegionMap
        | Hypercall::Spawn
        | Hypercall::WitnessQuery => deny(hv, idx, &w, HvError::NotSupported),
    }
}

