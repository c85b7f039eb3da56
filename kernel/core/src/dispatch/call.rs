//! One call in progress, as its handler sees it ([`Call`]): the calling
//! partition and the services every call uses — the clock and guest memory
//! (the machine), the witness log, the capability tables, the journal —
//! borrowed apart from the rest of the hypervisor. With it: what the call
//! wants witnessed about itself ([`Witnessed`]), how it uses its capability
//! ([`CapUse`]) and the checks at every tier ([`Call::authorize`]), and its
//! witnessed answer ([`Call::allow`], [`Call::deny`], [`Call::refuse`]).
//!
//! Every answer follows one order: the record first, then the effect. If
//! the record cannot be written the call answers `WitnessUnavailable` and
//! nothing happens (fail-closed).

use alloc::vec::Vec;

use rvm_abi::witness::NO_CAP;
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, Outcome, ProofTier, Rights, WitnessOp, WitnessRecord};
use rvm_cap::{ArgsDigest, Signature};

use crate::arch::Arch;
use crate::caps::{Approval, Caps, Granted, Refused, UseParams};
use crate::journal::Journal;
use crate::memory::addr::Ipa;
use crate::memory::guest_mem;
use crate::partition::Partition;
use crate::running::trap::Flow;
use crate::witness::Witness;

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
    /// The record answers a call made earlier ([`flags::ANSWER`]).
    ///
    /// [`flags::ANSWER`]: rvm_abi::witness::flags::ANSWER
    pub(super) answer: bool,
}

impl Witnessed {
    pub(crate) fn new(call: Hypercall, regs: &[u64; 6]) -> Self {
        Self::op(call as u16, regs)
    }

    /// A call whose `op` is not one of the ABI's calls (a refused unknown
    /// function ID, `hvc #imm`).
    pub(crate) fn op(op: u16, regs: &[u64; 6]) -> Self {
        Self { call: op, tier: 0, cap: NO_CAP, regs: *regs, args: None, journal: false, kept: None, answer: false }
    }

    /// The record of the answer to a call made earlier (a tool call's
    /// response), whose own record came before it.
    pub(crate) fn answering(mut self) -> Self {
        self.answer = true;
        self
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

    /// [`Witnessed::granted`] from the tier and handle a grant left (a
    /// call answered after it waited).
    pub(crate) fn at_grant(mut self, tier: u8, cap: u32) -> Self {
        self.tier = tier;
        self.cap = cap;
        self
    }

    /// A refused capability check: the tier it reached and the handle.
    pub(crate) fn refused(mut self, r: &Refused) -> Self {
        self.tier = r.tier as u8;
        self.cap = r.cap_id;
        self
    }

    /// Witnessed at `tier` (a call that needs no right).
    pub(crate) fn at(mut self, tier: ProofTier) -> Self {
        self.tier = tier as u8;
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

/// One hypercall in progress: the calling partition and the services every
/// call uses, borrowed apart from the rest of the hypervisor
/// ([`crate::state::Hypervisor::call`]). A handler that needs more (the
/// channels, the state stores, the frame pool) is handed that too, and
/// nothing else.
pub(crate) struct Call<'a, A: Arch> {
    /// The calling partition.
    pub caller: &'a mut Partition,
    pub arch: &'a mut A,
    pub witness: &'a mut Witness,
    pub caps: &'a mut Caps,
    pub journal: Journal,
}

impl<A: Arch> Call<'_, A> {
    /// The function ID the guest called (`x0`).
    pub(crate) fn function(&self) -> u64 {
        self.caller.vcpu().regs.x[0]
    }

    /// The call's argument registers, `x1..=x6`.
    pub(crate) fn regs(&self) -> [u64; 6] {
        let x = &self.caller.vcpu().regs.x;
        [x[1], x[2], x[3], x[4], x[5], x[6]]
    }

    /// Set the guest's return registers: `x0` = `status`, then `results`.
    pub(crate) fn answer(&mut self, status: i64, results: &[u64]) {
        self.caller.vcpu_mut().set_return(status, results);
    }

    /// Append the call's record; `Err` if the log could not take it.
    pub(crate) fn witness(&mut self, w: &Witnessed, outcome: Outcome) -> Result<(), HvError> {
        self.witness_seq(w, outcome, false).map(|_| ())
    }

    /// [`Call::witness`], answering the record's sequence number;
    /// `journaled`: the caller writes the call's journal entry (the record
    /// says so).
    pub(super) fn witness_seq(&mut self, w: &Witnessed, outcome: Outcome, journaled: bool) -> Result<u64, HvError> {
        let p = &mut *self.caller;
        // Waiting for a message is no refusal: `WouldBlock` is not counted.
        p.count_call(!matches!(outcome, Outcome::Done | Outcome::Denied(HvError::WouldBlock)));
        let mut rec = WitnessRecord::new(WitnessOp::Call(Hypercall::Null), outcome, p.id().0);
        rec.op = w.call;
        rec.tier = w.tier;
        rec.cap = w.cap;
        rec.args = w.digest();
        if journaled && w.journal {
            rec.flags |= rvm_abi::witness::flags::JOURNALED;
        }
        if w.answer {
            rec.flags |= rvm_abi::witness::flags::ANSWER;
        }
        rec.timestamp = self.arch.now_ns();
        p.output_mut().charge_frame(rec.timestamp);
        let log = p.id().0;
        self.witness.append(&mut *self.arch, log, rec).map_err(|_| HvError::WitnessUnavailable)
    }

    /// The journal entry of a witnessed call (see [`crate::journal`]).
    pub(super) fn journal_call(&mut self, w: &Witnessed, seq: u64, status: i64, results: &[u64]) {
        let input = crate::journal::CallInput { seq, regs: &w.regs, data: w.kept.as_deref().unwrap_or(&[]) };
        let log = self.caller.id().0;
        crate::journal::call(self.journal, &mut *self.arch, log, &input, status, results);
    }

    /// Witness a denial and return its status to the guest.
    pub(crate) fn deny(&mut self, w: &Witnessed, err: HvError) -> Flow {
        let (status, seq) = match self.witness_seq(w, Outcome::Denied(err), true) {
            Ok(seq) => (err, Some(seq)),
            Err(e) => (e, None),
        };
        self.answer(status.code(), &[]);
        if let Some(seq) = seq {
            self.journal_call(w, seq, status.code(), &[]);
        }
        Flow::Resume
    }

    /// Witness success, then run `apply` (which must not fail) and return
    /// its results.
    pub(crate) fn allow(&mut self, w: &Witnessed, apply: impl FnOnce(&mut Self) -> [u64; 3]) -> Flow {
        let seq = match self.witness_seq(w, Outcome::Done, true) {
            Ok(seq) => seq,
            Err(e) => {
                self.answer(e.code(), &[]);
                return Flow::Resume;
            }
        };
        let results = apply(self);
        self.answer(0, &results);
        self.journal_call(w, seq, 0, &results);
        Flow::Resume
    }

    /// Witness a refused capability use (its tier, its handle, the exact
    /// error) and return the error to the guest.
    pub(crate) fn refuse(&mut self, w: Witnessed, r: Refused) -> Flow {
        let w = w.refused(&r);
        self.deny(&w, r.error)
    }

    /// `len` bytes of guest memory at `ipa`, at most `max`.
    pub(crate) fn read_guest(&self, ipa: u64, len: u64, max: u64) -> Result<Vec<u8>, HvError> {
        if len > max {
            return Err(HvError::InvalidArgument);
        }
        // The guest names the size: allocated fallibly (`NoMemory`, never an abort).
        let len = usize::try_from(len).map_err(|_| HvError::InvalidArgument)?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| HvError::NoMemory)?;
        buf.resize(len, 0);
        guest_mem::read(&*self.arch, self.caller.stage2(), Ipa::new(ipa), &mut buf)?;
        Ok(buf)
    }

    /// Whether `len` bytes at `ipa` are writable guest memory.
    pub(crate) fn check_writable(&self, ipa: u64, len: u64) -> Result<(), HvError> {
        guest_mem::check_writable(&*self.arch, self.caller.stage2(), Ipa::new(ipa), len)
    }

    /// Write `data` into guest memory at `ipa` (checked writable before the
    /// call was witnessed, so it cannot fail).
    pub(crate) fn write_guest(&mut self, ipa: u64, data: &[u8]) {
        let wrote = guest_mem::write(&mut *self.arch, self.caller.stage2(), Ipa::new(ipa), data);
        debug_assert!(wrote.is_ok());
    }

    /// P1 of a use, changing nothing: handle, rights, object kind. The tier
    /// the use runs at.
    pub(crate) fn preflight(&self, u: &CapUse) -> Result<ProofTier, Refused> {
        self.caps.required_tier(self.caller.id(), u.raw, u.kind, u.need)
    }

    /// Check a use at every tier and record it (nonce, quota). At P3 the
    /// guest's signature is read and the arguments digest computed by `args`
    /// (only then: P1 and P2 calls never pay for it). A call that passed no
    /// signature goes straight to the check, which refuses a P3 use without
    /// one (`BadProof`).
    pub(crate) fn authorize(&mut self, u: &CapUse, args: impl FnOnce(&Self) -> Result<ArgsDigest, HvError>) -> Result<Granted, Refused> {
        let tier = match u.proof.signature_ipa {
            0 => ProofTier::P1,
            _ => self.preflight(u)?,
        };
        self.authorize_at(u, tier, args)
    }

    /// [`Call::authorize`] once [`Call::preflight`] has answered `tier`
    /// (only a P3 tier changes anything here: it reads the approval).
    pub(crate) fn authorize_at(
        &mut self,
        u: &CapUse,
        tier: ProofTier,
        args: impl FnOnce(&Self) -> Result<ArgsDigest, HvError>,
    ) -> Result<Granted, Refused> {
        let approval = match tier {
            ProofTier::P3 => match self.read_signature(u.proof.signature_ipa, u.raw)? {
                Some(signature) => {
                    let args = args(self).map_err(|e| Refused::at(e, ProofTier::P3, u.raw))?;
                    Some(Approval { op: u.call, args, signature })
                }
                None => None,
            },
            ProofTier::P1 | ProofTier::P2 => None,
        };
        let id = self.caller.id();
        let params = UseParams { now_ns: self.arch.now_ns(), access: u.access, nonce: u.proof.nonce };
        match u.kind {
            Some(kind) => self.caps.check(id, u.raw, kind, u.need, &params, approval.as_ref()),
            None => self.caps.check_any(id, u.raw, u.need, &params, approval.as_ref()),
        }
    }

    /// The 64-byte signature a guest passed at `ipa` (0 = none). An
    /// unreadable buffer is `BadAddress`, refused at P3 (only P3 uses read
    /// it).
    pub(crate) fn read_signature(&self, ipa: u64, raw: u64) -> Result<Option<Signature>, Refused> {
        if ipa == 0 {
            return Ok(None);
        }
        let mut sig = [0u8; 64];
        guest_mem::read(&*self.arch, self.caller.stage2(), Ipa::new(ipa), &mut sig).map_err(|e| Refused::at(e, ProofTier::P3, raw))?;
        Ok(Some(Signature(sig)))
    }
}
