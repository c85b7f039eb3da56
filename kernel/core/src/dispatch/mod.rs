//! Hypercall dispatch: decode, check the capability, witness, then act.
//!
//! Every privileged call — allowed or denied — appends one witness record
//! *before* it takes effect; if the record cannot be written the call fails
//! with `WitnessUnavailable` and nothing happens (fail-closed). `Null` and
//! `Yield` change no state and are not witnessed.
//!
//! A handler gets a [`Call`](call::Call) — the caller's partition and the
//! services every call uses — and only the other services its call needs
//! (the channels, the state stores, the frame pool); what a call means
//! beyond them is carried out here, after the handler answered.
//!
//! * [`call`] — the call context, the capability checks, the answers.
//! * `console`, `channel`, `store`, `cap`, `snapshot` — the handlers.
//! * [`answer`] — answers of calls whose effect reaches the whole
//!   hypervisor (agent switches and moves, going dormant).
//! * [`psci`] — emulated PSCI.
//! * [`waits`] — receives that wait for a message, answered later.
//! * `tool` — tool calls, checked against the caller's claims and sent to
//!   the host; their answers come back through [`crate::tool_calls`].

pub(crate) mod answer;
pub(crate) mod call;
mod cap;
mod channel;
mod snapshot;
mod console;
pub mod psci;
mod store;
mod tool;
pub(crate) mod waits;

pub use cap::{store_digest, STORE_DIGEST_TAG};

use rvm_abi::hypercall::{smccc_owner, SMCCC_OWNER_STANDARD};
use rvm_abi::witness::HVC_IMMEDIATE_OP;
use rvm_abi::{HvError, Hypercall};

use crate::arch::Arch;
use crate::running::trap::Flow;
use crate::state::Hypervisor;

use call::Witnessed;

/// Longest console write accepted in one call.
pub const MAX_CONSOLE_WRITE: u64 = 4096;

/// `Null` and `Yield`: no state changes and no witness record; status 0.
/// `None` for every other call.
#[inline]
fn unwitnessed<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, op: Hypercall) -> Option<Flow> {
    let flow = match op {
        Hypercall::Null => Flow::Resume,
        Hypercall::Yield => Flow::Yielded,
        _ => return None,
    };
    hv.call(idx).answer(0, &[]);
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
    let mut call = hv.call(idx);
    let regs = call.regs();
    let x0 = call.function();
    let mut data = [0u8; 10];
    data[..2].copy_from_slice(&imm.to_le_bytes());
    data[2..].copy_from_slice(&x0.to_le_bytes());
    let w = Witnessed::op(HVC_IMMEDIATE_OP, &regs).data(&regs, &data);
    call.deny(&w, HvError::NotSupported)
}

/// Handle `hvc #0` from partition `idx`: decode the call, hand its handler
/// the [`Call`] and the services it uses, and carry out what a call means
/// beyond them (traffic between domains, a dormant receiver woken, an agent
/// moved, the partition finished).
pub(crate) fn hypercall<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Flow {
    let x0 = hv.call(idx).function();
    if u32::try_from(x0).is_ok_and(|id| smccc_owner(id) == SMCCC_OWNER_STANDARD) {
        return psci::call(hv, idx);
    }
    let Some(op) = Hypercall::from_function_id(x0) else {
        let mut call = hv.call(idx);
        let regs = call.regs();
        let w = Witnessed::op(unknown_call_op(x0), &regs).data(&regs, &x0.to_le_bytes());
        return call.deny(&w, HvError::NotSupported);
    };
    // The calls that change no state and are not witnessed are answered
    // before anything is gathered for a witness record.
    if let Some(flow) = unwitnessed(hv, idx, op) {
        return flow;
    }
    let regs = hv.call(idx).regs();
    let w = Witnessed::new(op, &regs).journaled(hv.call(idx).journal.on());
    match op {
        Hypercall::Null | Hypercall::Yield => unwitnessed(hv, idx, op).unwrap_or(Flow::Resume),
        Hypercall::ConsoleWrite => console::write(&mut hv.call(idx), w, &regs),
        Hypercall::ChannelSend => {
            let me = crate::domains::caller(hv, idx);
            let (mut call, services) = hv.call_with(idx);
            let (flow, sent) = channel::send(&mut call, services.channels, me, w.handle(regs[0]), &regs);
            if let Some(sent) = sent {
                if sent.queued {
                    crate::domains::record_send(hv, sent.channel, sent.from, sent.bytes);
                }
                // A dormant receiver wakes for the message (it stays queued for it).
                crate::domains::dormant::message_sent(hv, sent.channel);
                if sent.queued {
                    // A receiver waiting for it gets it now.
                    waits::message_queued(hv, sent.channel);
                }
            }
            flow
        }
        Hypercall::ChannelRecv | Hypercall::ChannelWait => {
            let me = crate::domains::caller(hv, idx);
            let (mut call, services) = hv.call_with(idx);
            channel::recv(&mut call, services.channels, me, op, w.handle(regs[0]), &regs)
        }
        Hypercall::WaitAny => {
            let me = crate::domains::caller(hv, idx);
            let (mut call, services) = hv.call_with(idx);
            channel::wait_any(&mut call, services.channels, me, w, &regs)
        }
        Hypercall::StateStage => {
            let (mut call, services) = hv.call_with(idx);
            store::stage(&mut call, services.stores, w.handle(regs[0]), &regs)
        }
        Hypercall::StateValidate | Hypercall::StateCommit => {
            let (mut call, services) = hv.call_with(idx);
            let (flow, committed) = store::finish(&mut call, services.stores, op, w.handle(regs[0]), &regs);
            // A host that keeps committed sets holds the new one before
            // the caller runs on.
            if let Some(s) = committed {
                crate::durable::changed(hv, idx, s);
            }
            flow
        }
        Hypercall::StateGet => {
            let (mut call, services) = hv.call_with(idx);
            store::get(&mut call, services.stores, w.handle(regs[0]), &regs)
        }
        Hypercall::CapQuery => cap::query(&mut hv.call(idx), w.handle(regs[0]), &regs),
        Hypercall::CapDerive => cap::derive(&mut hv.call(idx), w.handle(regs[0]), &regs),
        Hypercall::CapRevoke => cap::revoke(&mut hv.call(idx), w.handle(regs[0]), &regs),
        Hypercall::Prove => {
            let (mut call, services) = hv.call_with(idx);
            cap::prove(&mut call, services.stores, w.handle(regs[0]), &regs)
        }
        // One snapshot per partition holds one agent: refused when it runs several.
        // A departing agent's snapshot carries out its move.
        Hypercall::Snapshot if crate::domains::migrate::departs(hv, idx) => crate::domains::migrate::depart(hv, idx, w, &regs),
        Hypercall::Snapshot if crate::domains::refuses_snapshot(hv, idx) => hv.call(idx).deny(&w, HvError::NotSupported),
        Hypercall::Snapshot => {
            let (mut call, services) = hv.call_with(idx);
            snapshot::take(&mut call, services.frames, &services.stores[idx], w, &regs)
        }
        Hypercall::AgentSwitch => crate::domains::switch(hv, idx, w, &regs),
        Hypercall::Idle => crate::domains::dormant::idle(hv, idx, w, &regs),
        Hypercall::ClockRead => {
            let mut call = hv.call(idx);
            let now = call.arch.now_ns().saturating_sub(call.caller.started_ns().unwrap_or(0));
            let w = w.data(&regs, &now.to_le_bytes());
            call.allow(&w, |_| [now, 0, 0])
        }
        Hypercall::Exit => {
            let code = regs[0];
            let _ = hv.call(idx).allow(&w, |_| [0; 3]);
            psci::finish(hv, idx, code);
            Flow::Reschedule
        }
        // Claims are the partition's, not each agent's: an agent moved into
        // another agent's partition must not call that one's tools, and one
        // agent's wait would stop the others. Refused where several run.
        Hypercall::ToolCall if hv.domains.is_multi_agent(idx) => hv.call(idx).deny(&w, HvError::NotSupported),
        Hypercall::ToolCall => {
            let serve = hv.policy.serve_tools.then_some(hv.policy.tool_deadline_ns);
            let (flow, sent) = {
                let (mut call, services) = hv.call_with(idx);
                tool::call(&mut call, services.tools.claims(idx), w, &regs, serve)
            };
            if let Some(r) = sent {
                hv.tools.note_sent();
                let log = hv.partitions[idx].id().0;
                let capacity = u32::try_from(r.capacity).unwrap_or(u32::MAX);
                let frame = rvm_abi::control::Outgoing::ToolRequest { log, seq: r.seq, capacity, name: &r.name, request: &r.request };
                hv.arch.send_frame(&frame);
                // The request's bytes are the caller's share of the channel,
                // as its records are: a partition that floods it is held back.
                let now = hv.arch.now_ns();
                hv.partitions[idx].output_mut().charge_frame_bytes(now, frame.binary_len() as u64);
            }
            flow
        }
        // Reserved: refused honestly, and witnessed like any denial.
        Hypercall::RegionRead
        | Hypercall::RegionWrite
        | Hypercall::RegionMap
        | Hypercall::Spawn
        | Hypercall::WitnessQuery => hv.call(idx).deny(&w, HvError::NotSupported),
    }
}
