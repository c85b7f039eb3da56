//! Tool calls answered by the host ([`rvm_abi::tool`]).
//!
//! A `ToolCall` is checked and witnessed by its handler
//! (`dispatch::tool`), which parks the caller ([`ToolWait`]) and has a
//! `ToolRequest` frame sent to the host. The host runs the tool and sends
//! a `ToolAnswer`, read here a byte at a time off the control channel
//! ([`begin`], [`byte`]); or the deadline passes first ([`expire`]). Either
//! way [`answer`] makes the call's second record (flag `ANSWER`, `args`
//! over the registers and the response, journaled with the response),
//! writes the response into the guest and lets the partition run. An
//! answer that matches no waiting call (its partition faulted, was evicted
//! or restarted meanwhile, or the kernel already answered `TimedOut`) is
//! read and dropped.
//!
//! The claims each partition's calls are checked against are bound at load
//! ([`claims_of`]): every `Claim` entry names one of the partition's
//! `Resource` capabilities, and its pattern must hash to that capability's
//! resource digest.
//!
//! [`ToolWait`]: crate::partition::ToolWait

use alloc::string::String;
use alloc::vec::Vec;

use rvm_abi::bundle::{Bundle, CapDesc, EntryKind};
use rvm_abi::tool::AnswerStatus;
use rvm_abi::{HvError, Hypercall, ObjectKind};
use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::dispatch::call::Witnessed;
use crate::partition::PartitionState;
use crate::state::Hypervisor;

pub mod desk;

pub use desk::ClaimError;
use desk::{AnswerIn, ClaimOf};

/// The claims of partition `index` of `bundle`, given the handles its
/// capability entries were installed as (`caps`, in entry order).
pub(crate) fn claims_of(bundle: &Bundle<'_>, index: u32, caps: &[(u64, CapDesc)]) -> Result<Vec<ClaimOf>, ClaimError> {
    let mut out: Vec<ClaimOf> = Vec::new();
    let mut taken = Vec::new();
    for e in bundle.owned(EntryKind::Claim, index) {
        // The entry's size and UTF-8 were checked with the bundle.
        let at = u32::from_le_bytes([e.data[0], e.data[1], e.data[2], e.data[3]]) as usize;
        let pattern = core::str::from_utf8(&e.data[4..]).map_err(|_| ClaimError::NotAClaim)?;
        let Some((raw, desc)) = caps.get(at) else { return Err(ClaimError::NoSuchCapability) };
        if taken.contains(&at) {
            return Err(ClaimError::NoSuchCapability);
        }
        taken.push(at);
        let digest = Sha256::digest(pattern.as_bytes());
        if desc.kind != ObjectKind::Resource || digest[..16] != desc.resource_digest {
            return Err(ClaimError::NotItsResource);
        }
        rvm_cap::claim::parse(pattern).map_err(|_| ClaimError::NotAClaim)?;
        out.push(ClaimOf { raw: *raw, pattern: String::from(pattern) });
    }
    Ok(out)
}

/// A `ToolAnswer` frame began.
pub(crate) fn begin<A: Arch>(hv: &mut Hypervisor<A>, log: u32, seq: u64, status: i32, len: usize) {
    hv.tools.begin(log, seq, status, len);
    if let Some(a) = hv.tools.take_if_complete() {
        finish(hv, a);
    }
}

/// The next byte of its response.
pub(crate) fn byte<A: Arch>(hv: &mut Hypervisor<A>, b: u8) {
    if let Some(a) = hv.tools.byte(b) {
        finish(hv, a);
    }
}

/// A whole answer: given to the call it answers, if one still waits.
fn finish<A: Arch>(hv: &mut Hypervisor<A>, a: AnswerIn) {
    let Some(idx) = hv.partitions.iter().position(|p| {
        p.id().0 == a.log && p.state() == PartitionState::Running && p.tool_wait().is_some_and(|w| w.seq == a.seq)
    }) else {
        return;
    };
    let capacity = hv.partitions[idx].tool_wait().map_or(0, |w| w.capacity);
    let result = match (AnswerStatus::from_i32(a.status), a.bytes) {
        (Some(s), Some(bytes)) => match s.error() {
            Some(e) => Err(e),
            // A host that sends more than the guest takes broke the rule.
            None if bytes.len() as u64 > capacity => Err(HvError::ToolFailed),
            None => Ok(bytes),
        },
        _ => Err(HvError::ToolFailed),
    };
    answer(hv, idx, result.as_deref().map_err(|e| *e));
}

/// Answer partition `idx`'s tool call now: its second record, the
/// response into the guest, and the partition runs again.
fn answer<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, result: Result<&[u8], HvError>) {
    let Some(wait) = hv.partitions[idx].end_tool_wait() else { return };
    hv.tools.note_answered();
    let mut call = hv.call(idx);
    let w = Witnessed::new(Hypercall::ToolCall, &wait.regs).journaled(call.journal.on()).answering().at_grant(wait.tier, wait.cap);
    match result {
        Ok(response) => {
            let w = w.data(&wait.regs, response);
            let _ = call.allow(&w, |c| {
                c.write_guest(wait.regs[4], response);
                [response.len() as u64, 0, 0]
            });
        }
        Err(e) => {
            let w = w.data(&wait.regs, &[]);
            let _ = call.deny(&w, e);
        }
    }
    if hv.partitions[idx].can_run() {
        hv.smp.note_runnable();
    }
}

/// Housekeeping: answer `TimedOut` to every tool call whose deadline passed.
pub(crate) fn expire<A: Arch>(hv: &mut Hypervisor<A>) {
    let now = hv.arch.now_ns();
    for idx in 0..hv.partitions.len() {
        if hv.partitions[idx].tool_wait().is_some_and(|w| w.deadline_ns <= now) {
            answer(hv, idx, Err(HvError::TimedOut));
        }
    }
}

/// The earliest deadline of a tool call waiting for its answer, if any.
pub(crate) fn next_deadline<A: Arch>(hv: &Hypervisor<A>) -> Option<u64> {
    hv.partitions.iter().filter_map(|p| Some(p.tool_wait()?.deadline_ns)).min()
}
