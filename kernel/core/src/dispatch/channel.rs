//! `ChannelSend` and `ChannelRecv`.

use rvm_abi::{HvError, Hypercall, ObjectKind, Rights};
use rvm_cap::ArgsDigest;

use crate::memory::addr::Ipa;
use crate::arch::Arch;
use crate::caps::Granted;
use crate::memory::guest_mem;
use crate::state::{Flow, Hypervisor};

use super::{allow, authorize, deny, read_guest, refuse, CapUse, ProofRegs, Witnessed};

fn channel_index(g: &Granted) -> usize {
    usize::try_from(g.object).unwrap_or(usize::MAX)
}

/// A message is the byte range `0..length` of the channel: a channel
/// capability's byte window bounds message lengths, its byte quota the bytes
/// sent per epoch. A P3 approval signs `ArgsDigest::of(&[], message)`.
pub(super) fn send<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call: Hypercall::ChannelSend,
        raw: regs[0],
        kind: Some(ObjectKind::Channel),
        need: Rights::WRITE,
        access: Some((0, regs[2])),
        proof: ProofRegs::x5_x6(regs),
    };
    let message_digest = |hv: &Hypervisor<A>| {
        read_guest(hv, idx, regs[1], regs[2], crate::channel::MAX_MESSAGE as u64).map(|m| ArgsDigest::of(&[], &m))
    };
    let g = match authorize(hv, idx, &u, message_digest) {
        Ok(g) => g,
        Err(r) => return refuse(hv, idx, w, r),
    };
    let w = w.granted(&g);
    let msg = match read_guest(hv, idx, regs[1], regs[2], crate::channel::MAX_MESSAGE as u64) {
        Ok(m) => m,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &msg);
    let ch = channel_index(&g);
    let me = crate::domains::caller(hv, idx);
    // Would the queue take it? Ask without changing anything.
    let room = hv.channels.get(ch).ok_or(HvError::BadHandle).and_then(|c| c.check_send(me, msg.len()));
    if let Err(e) = room {
        return deny(hv, idx, &w, e);
    }
    let flow = allow(hv, idx, &w, |hv| {
        let sent = hv.channels[ch].send(me, &msg);
        debug_assert!(sent.is_ok());
        crate::domains::record_send(hv, ch, me, msg.len());
        [msg.len() as u64, 0, 0]
    });
    // A dormant receiver wakes for the message (it stays queued for it).
    crate::domains::dormant::message_sent(hv, ch);
    flow
}

/// A P3 approval signs `ArgsDigest::of(&[], &[])`.
pub(super) fn recv<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call: Hypercall::ChannelRecv,
        raw: regs[0],
        kind: Some(ObjectKind::Channel),
        need: Rights::READ,
        access: None,
        proof: ProofRegs::x5_x6(regs),
    };
    let g = match authorize(hv, idx, &u, |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return refuse(hv, idx, w, r),
    };
    let w = w.granted(&g);
    let ch = channel_index(&g);
    let me = crate::domains::caller(hv, idx);
    let len = match hv.channels.get(ch).map(|c| c.peek_len(me)) {
        None => return deny(hv, idx, &w, HvError::BadHandle),
        Some(Err(e)) => return deny(hv, idx, &w, e),
        Some(Ok(None)) => return deny(hv, idx, &w, HvError::WouldBlock),
        Some(Ok(Some(len))) => len,
    };
    if len as u64 > regs[2] {
        return deny(hv, idx, &w, HvError::InvalidArgument);
    }
    if let Err(e) = guest_mem::check_writable(&hv.arch, hv.partitions[idx].stage2(), Ipa::new(regs[1]), len as u64) {
        return deny(hv, idx, &w, e);
    }
    let msg = match hv.channels[ch].peek(me) {
        Some(m) => m.to_vec(),
        None => return deny(hv, idx, &w, HvError::WouldBlock),
    };
    let w = w.data(regs, &msg);
    allow(hv, idx, &w, |hv| {
        let _ = hv.channels[ch].receive(me);
        let s2 = hv.partitions[idx].stage2();
        let wrote = guest_mem::write(&mut hv.arch, s2, Ipa::new(regs[1]), &msg);
        debug_assert!(wrote.is_ok());
        [msg.len() as u64, 0, 0]
    })
}

