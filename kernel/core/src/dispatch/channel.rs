//! `ChannelSend` and `ChannelRecv`.

use rvm_abi::{HvError, ObjectKind, Rights};

use crate::addr::Ipa;
use crate::arch::Arch;
use crate::caps::Granted;
use crate::guest_mem;
use crate::hypervisor::{Flow, Hypervisor};

use super::{allow, check, deny, read_guest, Witnessed};

fn channel_index(g: &Granted) -> usize {
    usize::try_from(g.object).unwrap_or(usize::MAX)
}

pub(super) fn send<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let g = match check(hv, idx, regs[0], ObjectKind::Channel, Rights::WRITE) {
        Ok(g) => g,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.granted(&g);
    let msg = match read_guest(hv, idx, regs[1], regs[2], crate::channel::MAX_MESSAGE as u64) {
        Ok(m) => m,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &msg);
    let ch = channel_index(&g);
    let me = hv.partitions[idx].id;
    // Would the queue take it? Ask without changing anything.
    let room = hv.channels.get(ch).ok_or(HvError::BadHandle).and_then(|c| c.check_send(me, msg.len()));
    if let Err(e) = room {
        return deny(hv, idx, &w, e);
    }
    allow(hv, idx, &w, |hv| {
        let sent = hv.channels[ch].send(me, &msg);
        debug_assert!(sent.is_ok());
        [msg.len() as u64, 0, 0]
    })
}

pub(super) fn recv<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let g = match check(hv, idx, regs[0], ObjectKind::Channel, Rights::READ) {
        Ok(g) => g,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.granted(&g);
    let ch = channel_index(&g);
    let me = hv.partitions[idx].id;
    let len = match hv.channels.get(ch).map(|c| c.peek_len(me)) {
        None => return deny(hv, idx, &w, HvError::BadHandle),
        Some(Err(e)) => return deny(hv, idx, &w, e),
        Some(Ok(None)) => return deny(hv, idx, &w, HvError::WouldBlock),
        Some(Ok(Some(len))) => len,
    };
    if len as u64 > regs[2] {
        return deny(hv, idx, &w, HvError::InvalidArgument);
    }
    if let Err(e) = guest_mem::check_writable(&hv.arch, &hv.partitions[idx].stage2, Ipa::new(regs[1]), len as u64) {
        return deny(hv, idx, &w, e);
    }
    let msg = match hv.channels[ch].peek(me) {
        Some(m) => m.to_vec(),
        None => return deny(hv, idx, &w, HvError::WouldBlock),
    };
    let w = w.data(regs, &msg);
    allow(hv, idx, &w, |hv| {
        let _ = hv.channels[ch].receive(me);
        let s2 = &hv.partitions[idx].stage2;
        let wrote = guest_mem::write(&mut hv.arch, s2, Ipa::new(regs[1]), &msg);
        debug_assert!(wrote.is_ok());
        [msg.len() as u64, 0, 0]
    })
}

