//! `ChannelSend` and `ChannelRecv`: the caller's [`Call`] and the channels.
//! What a delivered message means beyond the channel (traffic between
//! domains, a dormant receiver to wake) is the dispatcher's to carry out
//! ([`Sent`]).

use rvm_abi::{HvError, Hypercall, ObjectKind, Rights};
use rvm_cap::ArgsDigest;

use crate::arch::Arch;
use crate::caps::Granted;
use crate::channel::{Channel, Endpoint, MAX_MESSAGE};
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

/// A P3 approval signs `ArgsDigest::of(&[], &[])`.
pub(super) fn recv<A: Arch>(call: &mut Call<'_, A>, channels: &mut [Channel], me: Endpoint, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call: Hypercall::ChannelRecv,
        raw: regs[0],
        kind: Some(ObjectKind::Channel),
        need: Rights::READ,
        access: None,
        proof: ProofRegs::x5_x6(regs),
    };
    let g = match call.authorize(&u, |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return call.refuse(w, r),
    };
    let w = w.granted(&g);
    let ch = channel_index(&g);
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
        [msg.len() as u64, 0, 0]
    })
}
