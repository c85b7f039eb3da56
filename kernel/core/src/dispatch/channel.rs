//! `ChannelSend` and `ChannelRecv`: the caller's [`Call`] and the channels.
//! What a delivered message means beyond the channel (traffic between
//! domains, a dormant receiver to wake) is the dispatcher's to carry out
//! ([`Sent`]).

use rvm_abi::{HvError, Hypercall, ObjectKind, Rights};
use rvm_cap::ArgsDigest;

use crate::arch::Arch;
use crate::caps::Granted;
use crate::channel::{Channel, Endpoint, MAX_MESSAGE};
use crate::partition::ChannelWait;
use crate::running::trap::Flow;

use super::call::{Call, CapUse, ProofRegs, Witnessed};

fn channel_index(g: &Granted) -> usize {
    usize::try_from(g.object).unwrap_or(usize::MAX)
}

/// A send that got as far as its answer: channel `channel` may now hold a
/// message from `from` of `bytes` bytes.
pub(super) struct Sent {
    pub channel: usize,
    pub from: Endpoint,
    pub bytes: usize,
    /// The message was queued (the call was allowed and witnessed).
    pub queued: bool,
}

/// A message is the byte range `0..length` of the channel: a channel
/// capability's byte window bounds message lengths, its byte quota the bytes
/// sent per epoch. A P3 approval signs `ArgsDigest::of(&[], message)`.
pub(super) fn send<A: Arch>(
    call: &mut Call<'_, A>,
    channels: &mut [Channel],
    me: Endpoint,
    w: Witnessed,
    regs: &[u64; 6],
) -> (Flow, Option<Sent>) {
    let u = CapUse {
        call: Hypercall::ChannelSend,
        raw: regs[0],
        kind: Some(ObjectKind::Channel),
        need: Rights::WRITE,
        access: Some((0, regs[2])),
        proof: ProofRegs::x5_x6(regs),
    };
    let message_digest = |call: &Call<'_, A>| call.read_guest(regs[1], regs[2], MAX_MESSAGE as u64).map(|m| ArgsDigest::of(&[], &m));
    let g = match call.authorize(&u, message_digest) {
        Ok(g) => g,
        Err(r) => return (call.refuse(w, r), None),
    };
    let w = w.granted(&g);
    let msg = match call.read_guest(regs[1], regs[2], MAX_MESSAGE as u64) {
        Ok(m) => m,
        Err(e) => return (call.deny(&w, e), None),
    };
    let w = w.data(regs, &msg);
    let ch = channel_index(&g);
    // Would the queue take it? Ask without changing anything.
    let room = channels.get(ch).ok_or(HvError::BadHandle).and_then(|c| c.check_send(me, msg.len()));
    if let Err(e) = room {
        return (call.deny(&w, e), None);
    }
    let mut queued = false;
    let flow = call.allow(&w, |_| {
        let sent = channels[ch].send(me, &msg);
        debug_assert!(sent.is_ok());
        queued = true;
        [msg.len() as u64, 0, 0]
    });
    (flow, Some(Sent { channel: ch, from: me, bytes: msg.len(), queued }))
}

/// The capability use a receive (`ChannelRecv` or `ChannelWait`, `op`)
/// makes, `regs` as the guest passed them.
fn recv_use(op: Hypercall, regs: &[u64; 6]) -> CapUse {
    CapUse {
        call: op,
        raw: regs[0],
        kind: Some(ObjectKind::Channel),
        need: Rights::READ,
        access: None,
        proof: ProofRegs::x5_x6(regs),
    }
}

/// `x4` (`regs[3]`) of a `ChannelWait`: how long it may wait for a
/// message, in ns; 0 answers at once, `u64::MAX` waits with no deadline.
const WAIT: usize = 3;

/// `ChannelRecv`, or `ChannelWait` (`op`). A P3 approval signs
/// `ArgsDigest::of(&[], &[])`. A `ChannelWait` that finds its channel
/// empty and may wait parks the caller ([`Flow::Waiting`], nothing
/// witnessed yet); [`answer_wait`] answers it.
pub(super) fn recv<A: Arch>(
    call: &mut Call<'_, A>,
    channels: &mut [Channel],
    me: Endpoint,
    op: Hypercall,
    w: Witnessed,
    regs: &[u64; 6],
) -> Flow {
    let g = match call.authorize(&recv_use(op, regs), |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return call.refuse(w, r),
    };
    let w = w.granted(&g);
    let ch = channel_index(&g);
    let wait_ns = if op == Hypercall::ChannelWait { regs[WAIT] } else { 0 };
    if wait_ns != 0 && matches!(channels.get(ch).map(|c| c.peek_len(me)), Some(Ok(None))) {
        let now = call.arch.now_ns();
        call.caller.park(ChannelWait {
            regs: *regs,
            channel: ch,
            tier: w.tier,
            cap: w.cap,
            since_ns: now,
            deadline_ns: (wait_ns != u64::MAX).then(|| now.saturating_add(wait_ns)),
        });
        return Flow::Waiting;
    }
    deliver(call, channels, me, w, ch, regs, 0)
}

/// Answer the `ChannelWait` partition `call.caller` waits in (`wait`, taken
/// from it): a message arrived or its deadline passed. The
/// capability is looked at again (P1, changing nothing: a revocation while
/// it waited refuses it); the answer and its one record are what a receive
/// made now would get, with `x2` = ns it waited.
pub(super) fn answer_wait<A: Arch>(call: &mut Call<'_, A>, channels: &mut [Channel], me: Endpoint, wait: &ChannelWait) -> Flow {
    let w = Witnessed::new(Hypercall::ChannelWait, &wait.regs).handle(wait.regs[0]);
    if let Err(r) = call.preflight(&recv_use(Hypercall::ChannelWait, &wait.regs)) {
        return call.refuse(w, r);
    }
    let w = w.at_grant(wait.tier, wait.cap);
    let waited = call.arch.now_ns().saturating_sub(wait.since_ns);
    deliver(call, channels, me, w, wait.channel, &wait.regs, waited)
}

/// The authorized receive `w` on channel `ch`: the next message for `me`
/// into the guest's buffer (`x1` = its length, `x2` = `waited`), or why not.
fn deliver<A: Arch>(
    call: &mut Call<'_, A>,
    channels: &mut [Channel],
    me: Endpoint,
    w: Witnessed,
    ch: usize,
    regs: &[u64; 6],
    waited: u64,
) -> Flow {
    let len = match channels.get(ch).map(|c| c.peek_len(me)) {
        None => return call.deny(&w, HvError::BadHandle),
        Some(Err(e)) => return call.deny(&w, e),
        Some(Ok(None)) => return call.deny(&w, HvError::WouldBlock),
        Some(Ok(Some(len))) => len,
    };
    if len as u64 > regs[2] {
        return call.deny(&w, HvError::InvalidArgument);
    }
    if let Err(e) = call.check_writable(regs[1], len as u64) {
        return call.deny(&w, e);
    }
    let msg = match channels[ch].peek(me) {
        Some(m) => m.to_vec(),
        None => return call.deny(&w, HvError::WouldBlock),
    };
    let w = w.data(regs, &msg);
    call.allow(&w, |call| {
        let _ = channels[ch].receive(me);
        call.write_guest(regs[1], &msg);
        [msg.len() as u64, waited, 0]
    })
}
