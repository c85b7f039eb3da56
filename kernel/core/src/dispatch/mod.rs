//! Hypercall dispatch: decode, check the capability, witness, then act.
//!
//! Every privileged call — allowed or denied — appends one witness record
//! *before* it takes effect; if the record cannot be written the call fails
//! with `WitnessUnavailable` and nothing happens (fail-closed). `Null` and
//! `Yield` change no state and are not witnessed.

use alloc::vec;
use alloc::vec::Vec;

use rvm_abi::hypercall::{smccc_owner, SMCCC_OWNER_STANDARD};
use rvm_abi::witness::NO_CAP;
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, Outcome, Rights, WitnessOp, WitnessRecord};

use crate::addr::Ipa;
use crate::arch::Arch;
use crate::caps::Granted;
use crate::guest_mem;

mod cap;
mod channel;
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
}

impl Witnessed {
    pub(crate) fn new(call: Hypercall, regs: &[u64; 6]) -> Self {
        Self { call: call as u16, tier: 0, cap: NO_CAP, regs: *regs, args: None }
    }

    fn digest(&self) -> [u8; 16] {
        self.args.unwrap_or_else(|| crate::digest::of_call(&self.regs, &[]))
    }

    pub(crate) fn granted(mut self, g: &Granted) -> Self {
        self.tier = g.tier as u8;
        self.cap = g.cap_id;
        self
    }

    pub(crate) fn handle(mut self, raw: u64) -> Self {
        self.cap = CapHandle::from_raw(raw).map_or(NO_CAP, CapHandle::witness_id);
        self
    }

    pub(crate) fn data(mut self, regs: &[u64; 6], data: &[u8]) -> Self {
        self.args = Some(crate::digest::of_call(regs, data));
        self
    }
}

pub(crate) fn regs_of<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> [u64; 6] {
    let x = &hv.partitions[idx].vcpu.regs.x;
    [x[1], x[2], x[3], x[4], x[5], x[6]]
}

/// Append the call's record; `Err` if the log could not take it.
pub(crate) fn witness<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, outcome: Outcome) -> Result<(), HvError> {
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
    rec.timestamp = hv.arch.now_ns();
    let log = p.id.0;
    hv.witness.append(&mut hv.arch, log, rec).map(|_| ()).map_err(|_| HvError::WitnessUnavailable)
}

/// Witness a denial and return its status to the guest.
pub(crate) fn deny<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, err: HvError) -> Flow {
    let status = match witness(hv, idx, w, Outcome::Denied(err)) {
        Ok(()) => err,
        Err(e) => e,
    };
    hv.partitions[idx].vcpu.set_return(status.code(), &[]);
    Flow::Resume
}

/// Witness success, then run `apply` (which must not fail) and return its results.
pub(crate) fn allow<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    w: &Witnessed,
    apply: impl FnOnce(&mut Hypervisor<A>) -> [u64; 3],
) -> Flow {
    if let Err(e) = witness(hv, idx, w, Outcome::Done) {
        hv.partitions[idx].vcpu.set_return(e.code(), &[]);
        return Flow::Resume;
    }
    let results = apply(hv);
    hv.partitions[idx].vcpu.set_return(0, &results);
    Flow::Resume
}

pub(crate) fn read_guest<A: Arch>(hv: &Hypervisor<A>, idx: usize, ipa: u64, len: u64, max: u64) -> Result<Vec<u8>, HvError> {
    if len > max {
        return Err(HvError::InvalidArgument);
    }
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| HvError::InvalidArgument)?];
    guest_mem::read(&hv.arch, &hv.partitions[idx].stage2, Ipa::new(ipa), &mut buf)?;
    Ok(buf)
}

pub(crate) fn check<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, raw: u64, kind: ObjectKind, need: Rights) -> Result<Granted, HvError> {
    let id = hv.partitions[idx].id;
    let now = hv.arch.now_ns();
    hv.caps.check(id, raw, kind, need, now)
}

/// Handle `hvc #0` from partition `idx`.
pub(crate) fn hypercall<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Flow {
    let x0 = hv.partitions[idx].vcpu.regs.x[0];
    if u32::try_from(x0).is_ok_and(|id| smccc_owner(id) == SMCCC_OWNER_STANDARD) {
        return crate::psci::call(hv, idx);
    }
    let regs = regs_of(hv, idx);
    let Some(call) = Hypercall::from_function_id(x0) else {
        let w = Witnessed { call: (x0 & 0x7fff) as u16, tier: 0, cap: NO_CAP, regs, args: None };
        return deny(hv, idx, &w, HvError::NotSupported);
    };
    let w = Witnessed::new(call, &regs);
    match call {
        Hypercall::Null => {
            hv.partitions[idx].vcpu.set_return(0, &[]);
            Flow::Resume
        }
        Hypercall::Yield => {
            hv.partitions[idx].vcpu.set_return(0, &[]);
            Flow::Reschedule
        }
        Hypercall::ConsoleWrite => console::write(hv, idx, w, &regs),
        Hypercall::ChannelSend => channel::send(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::ChannelRecv => channel::recv(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::StateStage => state::stage(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::StateValidate | Hypercall::StateCommit => state::finish(hv, idx, call, w.handle(regs[0]), &regs),
        Hypercall::StateGet => state::get(hv, idx, w.handle(regs[0]), &regs),
        Hypercall::CapQuery => cap::query(hv, idx, w.handle(regs[0]), &regs),
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
        Hypercall::CapDerive
        | Hypercall::CapRevoke
        | Hypercall::RegionRead
        | Hypercall::RegionWrite
        | Hypercall::RegionMap
        | Hypercall::Checkpoint
        | Hypercall::Spawn
        | Hypercall::Prove
        | Hypercall::WitnessQuery => deny(hv, idx, &w, HvError::NotSupported),
    }
}

