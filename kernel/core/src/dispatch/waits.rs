//! Calls that wait for a message: `ChannelWait`, `WaitAny`.
//!
//! A waiting partition's vCPU is parked at EL2 ([`ChannelWait`] in the
//! partition): it does not run, is not witnessed and costs no CPU until its
//! receive is answered — by the send that gives it a message
//! ([`message_queued`], on the sender's CPU, under the kernel lock), or by
//! housekeeping once its deadline passed ([`expire`]). Either way the
//! answer is made by [`answer`]: one record, what a receive made at that
//! moment would get, and the partition can run again (its CPU kicked if it
//! idles). A partition that leaves `Running` (a fault, an eviction, going
//! dormant) or restarts forgets its wait with its vCPU.
//!
//! [`ChannelWait`]: crate::partition::ChannelWait

use crate::arch::Arch;
use crate::partition::PartitionState;
use crate::state::Hypervisor;

/// Answer the receive partition `idx` waits in, now.
pub(crate) fn answer<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) {
    let Some(wait) = hv.partitions[idx].unpark() else { return };
    if hv.partitions[idx].state() != PartitionState::Running {
        return;
    }
    let me = crate::domains::caller(hv, idx);
    let function = hv.partitions[idx].vcpu().regs.x[0];
    let flow = {
        let (mut call, services) = hv.call_with(idx);
        super::channel::answer_wait(&mut call, services.channels, me, &wait)
    };
    // A refusal counts toward the partition's abuse policy like any other.
    crate::recovery::fault::after_call(hv, idx, function, flow);
    if hv.partitions[idx].can_run() {
        hv.smp.note_runnable();
    }
}

/// A message was queued on channel `ch`: answer every partition that waits
/// on it and has a message there now.
pub(crate) fn message_queued<A: Arch>(hv: &mut Hypervisor<A>, ch: usize) {
    for idx in 0..hv.partitions.len() {
        if hv.partitions[idx].waiting().is_none_or(|w| !w.channels.iter().any(|&(_, c)| c == ch)) {
            continue;
        }
        let me = crate::domains::caller(hv, idx);
        if hv.channels.get(ch).is_some_and(|c| matches!(c.peek_len(me), Ok(Some(_)))) {
            answer(hv, idx);
        }
    }
}

/// Housekeeping: answer every receive whose deadline has passed, or that
/// waited as long as its partition's dormancy policy allows (the partition
/// may then sleep at its next idle turn: `crate::domains::dormant`).
pub(crate) fn expire<A: Arch>(hv: &mut Hypervisor<A>) {
    let now = hv.arch.now_ns();
    for idx in 0..hv.partitions.len() {
        let Some(w) = hv.partitions[idx].waiting() else { continue };
        let idled_out = w.sleep_at_ns.is_some_and(|s| s <= now) && w.deadline_ns.is_none_or(|d| d > now);
        if w.ends_at().is_some_and(|t| t <= now) {
            if idled_out {
                hv.partitions[idx].note_idled_out();
            }
            answer(hv, idx);
        }
    }
}

/// The earliest moment a waiting partition's wait ends without a message
/// (its deadline, or its dormancy policy), if any.
pub(crate) fn next_deadline<A: Arch>(hv: &Hypervisor<A>) -> Option<u64> {
    hv.partitions.iter().filter_map(|p| p.waiting()?.ends_at()).min()
}
