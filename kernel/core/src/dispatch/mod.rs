//! Hypercall dispatch: decode, check the capability, witness, then act.
//!
//! Every privileged call — allowed or denied — appends one witness record
//! *before* it takes effect; if the record cannot be written the call fails
//! with `WitnessUnavailable` and nothing happens (fail-closed). `Null` and
//! `Yield` change no state and are not witnessed.

pub mod psci;

use rvm_abi::hypercall::{smccc_owner, SMCCC_OWNER_STANDARD};
use rvm_abi::witness::{HVC_IMMEDIATE_OP, NO_CAP};
use rvm_abi::{HvError, Hypercall};

use crate::arch::Arch;

pub(crate) mod call;
mod cap;
pub use cap::{store_digest, STORE_DIGEST_TAG};
mod channel;
mod checkpoint;
mod console;
mod state;
use crate::state::{Flow, Hypervisor};

pub(crate) use call::{allow, authorize, authorize_at, deny, preflight, read_guest, read_signature, refuse, regs_of, witness, CapUse, ProofRegs, Witnessed};

/// Longest console write accepted in one call.
pub const MAX_CONSOLE_WRITE: u64 = 4096;

/// `Null` and `Yield`: no state changes and no witness record; status 0.
/// `None` for every other call.
#[inline]
fn unwitnessed<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, call: Hypercall) -> Option<Flow> {
    let flow = match call {
        Hypercall::Null => Flow::Resume,
        Hypercall::Yield => Flow::Yielded,
        _ => return None,
    };
    hv.partitions[idx].vcpu_mut().set_return(0, &[]);
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
    let x0 = hv.partitions[idx].vcpu().regs.x[0];
    let mut data = [0u8; 10];
    data[..2].copy_from_slice(&imm.to_le_bytes());
    data[2..].copy_from_slice(&x0.to_le_bytes());
    let w = Witnessed { call: HVC_IMMEDIATE_OP, tier: 0, cap: NO_CAP, regs, args: None, journal: false, kept: None };
    let w = w.data(&regs, &data);
    deny(hv, idx, &w, HvError::NotSupported)
}

/// Handle `hvc #0` from partition `idx`.
pub(crate) fn hypercall<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Flow {
    let x0 = hv.partitions[idx].vcpu().regs.x[0];
    if u32::try_from(x0).is_ok_and(|id| smccc_owner(id) == SMCCC_OWNER_STANDARD) {
        return crate::dispatch::psci::call(hv, idx);
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
        Hypercall::Snapshot if crate::domains::migrate::departs(hv, idx) => crate::domains::migrate::depart(hv, idx, w, &regs),
        Hypercall::Snapshot if crate::domains::refuses_checkpoint(hv, idx) => deny(hv, idx, &w, HvError::NotSupported),
        Hypercall::Snapshot => checkpoint::take(hv, idx, w, &regs),
        Hypercall::AgentSwitch => crate::domains::switch(hv, idx, w, &regs),
        Hypercall::Idle => crate::domains::dormant::idle(hv, idx, w, &regs),
        Hypercall::ClockRead => {
            let p = &hv.partitions[idx];
            let now = hv.arch.now_ns().saturating_sub(p.started_ns().unwrap_or(0));
            let w = w.data(&regs, &now.to_le_bytes());
            allow(hv, idx, &w, |_| [now, 0, 0])
        }
        Hypercall::Exit => {
            let code = regs[0];
            let _ = allow(hv, idx, &w, |_| [0; 3]);
            crate::dispatch::psci::finish(hv, idx, code);
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

