//! One call in progress: what it wants witnessed about itself
//! ([`Witnessed`]), how it uses its capability ([`CapUse`]) and the checks
//! at every tier ([`authorize`]), and its witnessed answer ([`allow`],
//! [`deny`], [`refuse`]) — the steps every handler shares.

use alloc::vec::Vec;

use rvm_abi::witness::NO_CAP;
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, Outcome, ProofTier, Rights, WitnessOp, WitnessRecord};
use rvm_cap::{ArgsDigest, Signature};

use crate::arch::Arch;
use crate::caps::{Approval, Granted, Refused, UseParams};
use crate::memory::addr::Ipa;
use crate::memory::guest_mem;
use crate::state::{Flow, Hypervisor};

/// What a call wants witnessed about itself.
pub(crate) struct Witnessed {
    pub(super) call: u16,
    pub(super) tier: u8,
    pub(super) cap: u32,
    pub(super) regs: [u64; 6],
    /// Digest of the registers and buffer bytes, once a buffer was read;
    /// otherwise computed from `regs` only when the record is written, so
    /// calls that are not witnessed never pay for a hash.
    pub(super) args: Option<[u8; 16]>,
    /// Whether the run journals this call (`crate::journal`).
    pub(super) journal: bool,
    /// The bytes `args` covers after the registers, kept for the journal.
    pub(super) kept: Option<Vec<u8>>,
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
    let x = &hv.partitions[idx].vcpu().regs.x;
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
    p.count_call(outcome != Outcome::Done);
    let mut rec = WitnessRecord::new(WitnessOp::Call(Hypercall::Null), outcome, p.id().0);
    rec.op = w.call;
    rec.tier = w.tier;
    rec.cap = w.cap;
    rec.args = w.digest();
    if journaled && w.journal {
        rec.flags |= rvm_abi::witness::flags::JOURNALED;
    }
    rec.timestamp = hv.arch.now_ns();
    p.output_mut().charge_frame(rec.timestamp);
    let log = p.id().0;
    hv.witness.append(&mut hv.arch, log, rec).map_err(|_| HvError::WitnessUnavailable)
}

/// The journal entry of a witnessed call (see [`crate::journal`]).
fn journal_call<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, seq: u64, status: i64, results: &[u64]) {
    let input = crate::journal::CallInput { seq, regs: &w.regs, data: w.kept.as_deref().unwrap_or(&[]) };
    let log = hv.partitions[idx].id().0;
    crate::journal::call(hv.journal, &mut hv.arch, log, &input, status, results);
}

/// Witness a denial and return its status to the guest.
pub(crate) fn deny<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, err: HvError) -> Flow {
    let (status, seq) = match witness_seq(hv, idx, w, Outcome::Denied(err), true) {
        Ok(seq) => (err, Some(seq)),
        Err(e) => (e, None),
    };
    hv.partitions[idx].vcpu_mut().set_return(status.code(), &[]);
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
            hv.partitions[idx].vcpu_mut().set_return(e.code(), &[]);
            return Flow::Resume;
        }
    };
    let results = apply(hv);
    hv.partitions[idx].vcpu_mut().set_return(0, &results);
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
    guest_mem::read(&hv.arch, hv.partitions[idx].stage2(), Ipa::new(ipa), &mut buf)?;
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
    hv.caps.required_tier(hv.partitions[idx].id(), u.raw, u.kind, u.need)
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
    let id = hv.partitions[idx].id();
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
    guest_mem::read(&hv.arch, hv.partitions[idx].stage2(), Ipa::new(ipa), &mut sig)
        .map_err(|e| Refused::at(e, ProofTier::P3, raw))?;
    Ok(Some(Signature(sig)))
}

