//! `ChannelSend`, `ChannelRecv`, `ChannelWait` and `WaitAny`: the caller's
//! [`Call`] and the channels.
//! What a delivered message means beyond the channel (traffic between
//! domains, a dormant receiver to wake) is the dispatcher's to carry out
//! ([`Sent`]).

use rvm_abi::{HvError, Hypercall, ObjectKind, Rights};
use rvm_cap::ArgsDigest;

use crate::arch::Arch;
use crate::caps::Granted;
use crate::channel::{Channel, Endpoint, MAX_MESSAGE};
use crate::partition::{ChannelWait, MAX_WAIT_CHANNELS};
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
    // A Dormant-tier agent does not park: its empty inbox ends its turn,
    // and the idle turn puts it to sleep until a message wakes it.
    let parks = op == Hypercall::ChannelWait && call.caller.dormant_after_ns() != Some(0);
    let wait_ns = if parks { regs[WAIT] } else { 0 };
    if wait_ns != 0 && matches!(channels.get(ch).map(|c| c.peek_len(me)), Some(Ok(None))) {
        let mut list = heapless::Vec::new();
        let _ = list.push((regs[0], ch));
        park(call, Hypercall::ChannelWait, regs, list, &w, wait_ns);
        return Flow::Waiting;
    }
    deliver(call, channels, me, w, ch, regs, 0)
}

/// Park the caller in `op` on `channels` for at most `wait_ns`
/// (`u64::MAX`: no deadline).
fn park<A: Arch>(
    call: &mut Call<'_, A>,
    op: Hypercall,
    regs: &[u64; 6],
    channels: heapless::Vec<(u64, usize), MAX_WAIT_CHANNELS>,
    w: &Witnessed,
    wait_ns: u64,
) {
    let now = call.arch.now_ns();
    // A wait a message can answer may be ended by the partition's dormancy
    // policy (a sleep cannot: a message would not wake it).
    let sleep_at_ns = call.caller.dormant_after_ns().filter(|_| !channels.is_empty()).map(|after| now.saturating_add(after));
    call.caller.park(ChannelWait {
        op,
        regs: *regs,
        channels,
        tier: w.tier,
        cap: w.cap,
        since_ns: now,
        deadline_ns: (wait_ns != u64::MAX).then(|| now.saturating_add(wait_ns)),
        sleep_at_ns,
    });
}

/// `x2` (`regs[1]`) of a `WaitAny`: how many handles its list holds; `x3`
/// (`regs[2]`): how long it may wait.
const COUNT: usize = 1;
const ANY_WAIT: usize = 2;

/// `WaitAny`: `x1` = IPA of a list of `x2` channel handles (u64 LE, 1 to
/// [`MAX_WAIT_CHANNELS`]), `x3` = how long it may wait (ns; `u64::MAX` no
/// deadline, 0 just looks). Each handle needs READ (no proof: a handle at
/// P3 is refused `BadProof`). Answers `x1` = the position in the list of
/// the first channel with a message for the caller (the message stays
/// queued), or parks the caller like `ChannelWait`; `WouldBlock` when the
/// deadline passed. The record's `args` digest covers the registers and
/// the list as read, once, when the call was made.
pub(super) fn wait_any<A: Arch>(call: &mut Call<'_, A>, channels: &mut [Channel], me: Endpoint, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let count = regs[COUNT];
    // No channel is a sleep: it needs a deadline (nothing else could end it).
    if count > MAX_WAIT_CHANNELS as u64 || (count == 0 && regs[ANY_WAIT] == u64::MAX) {
        return call.deny(&w, HvError::InvalidArgument);
    }
    let list = match count {
        0 => alloc::vec::Vec::new(),
        _ => match call.read_guest(regs[0], count * 8, (MAX_WAIT_CHANNELS * 8) as u64) {
            Ok(l) => l,
            Err(e) => return call.deny(&w, e),
        },
    };
    let w = w.data(regs, &list);
    let mut waits_on: heapless::Vec<(u64, usize), MAX_WAIT_CHANNELS> = heapless::Vec::new();
    // The record names the first handle and the tier it was granted at.
    let mut first: Option<(u64, u8, u32)> = None;
    for raw in list.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))) {
        let g = match call.authorize(&any_use(raw), |_| Ok(ArgsDigest::of(&[], &[]))) {
            Ok(g) => g,
            Err(r) => return call.refuse(w.handle(raw), r),
        };
        first.get_or_insert((raw, g.tier as u8, g.cap_id));
        let _ = waits_on.push((raw, channel_index(&g)));
    }
    let w = match first {
        Some((raw, tier, cap)) => w.handle(raw).at_grant(tier, cap),
        None => w,
    };
    // As for `ChannelWait`: a Dormant-tier agent only looks (a sleep still
    // parks).
    let looks = call.caller.dormant_after_ns() == Some(0) && !waits_on.is_empty();
    let wait_ns = if looks { 0 } else { regs[ANY_WAIT] };
    if wait_ns != 0 && ready(channels, me, &waits_on).is_none() {
        park(call, Hypercall::WaitAny, regs, waits_on, &w, wait_ns);
        return Flow::Waiting;
    }
    answer_any(call, channels, me, &w, &waits_on, 0)
}

/// The use a `WaitAny` makes of one listed handle: READ on a channel, no
/// proof.
fn any_use(raw: u64) -> CapUse {
    CapUse { call: Hypercall::WaitAny, raw, kind: Some(ObjectKind::Channel), need: Rights::READ, access: None, proof: ProofRegs::x5_x6(&[0; 6]) }
}

/// The position of the first of `list` with a message for `me`.
fn ready(channels: &[Channel], me: Endpoint, list: &[(u64, usize)]) -> Option<usize> {
    list.iter().position(|&(_, ch)| channels.get(ch).is_some_and(|c| matches!(c.peek_len(me), Ok(Some(_)))))
}

/// Answer a `WaitAny` on `list`: the first ready position, or `WouldBlock`.
fn answer_any<A: Arch>(call: &mut Call<'_, A>, channels: &[Channel], me: Endpoint, w: &Witnessed, list: &[(u64, usize)], waited: u64) -> Flow {
    match ready(channels, me, list) {
        Some(i) => call.allow(w, |_| [i as u64, waited, 0]),
        None => call.deny(w, HvError::WouldBlock),
    }
}

/// Answer the `ChannelWait` or `WaitAny` partition `call.caller` waits in
/// (`wait`, taken from it): a message arrived or its deadline passed. The
/// capabilities are looked at again (P1, changing nothing: a revocation
/// while it waited refuses it); the answer and its one record are what the
/// call made now would get, with `x2` = ns it waited.
pub(super) fn answer_wait<A: Arch>(call: &mut Call<'_, A>, channels: &mut [Channel], me: Endpoint, wait: &ChannelWait) -> Flow {
    let waited = call.arch.now_ns().saturating_sub(wait.since_ns);
    if wait.op == Hypercall::WaitAny {
        let list: alloc::vec::Vec<u8> = wait.channels.iter().flat_map(|&(raw, _)| raw.to_le_bytes()).collect();
        let w = Witnessed::new(Hypercall::WaitAny, &wait.regs).journaled(call.journal.on()).data(&wait.regs, &list);
        for &(raw, _) in &wait.channels {
            if let Err(r) = call.preflight(&any_use(raw)) {
                return call.refuse(w.handle(raw), r);
            }
        }
        let w = w.handle(wait.channels.first().map_or(0, |c| c.0)).at_grant(wait.tier, wait.cap);
        return answer_any(call, channels, me, &w, &wait.channels, waited);
    }
    let w = Witnessed::new(Hypercall::ChannelWait, &wait.regs).journaled(call.journal.on()).handle(wait.regs[0]);
    if let Err(r) = call.preflight(&recv_use(Hypercall::ChannelWait, &wait.regs)) {
        return call.refuse(w, r);
    }
    let w = w.at_grant(wait.tier, wait.cap);
    let ch = wait.channels.first().map_or(usize::MAX, |c| c.1);
    deliver(call, channels, me, w, ch, &wait.regs, waited)
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
    // A message came: a dormancy policy's permission to sleep is spent.
    call.caller.clear_idled_out();
    call.allow(&w, |call| {
        let _ = channels[ch].receive(me);
        call.write_guest(regs[1], &msg);
        [msg.len() as u64, waited, 0]
    })
}
