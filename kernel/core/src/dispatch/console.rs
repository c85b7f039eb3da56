//! `ConsoleWrite`.

use crate::arch::Arch;
use crate::hypervisor::{Flow, Hypervisor};

use super::{allow, deny, read_guest, Witnessed, MAX_CONSOLE_WRITE};

pub(super) fn write<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let text = match read_guest(hv, idx, regs[0], regs[1], MAX_CONSOLE_WRITE) {
        Ok(t) => t,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &text);
    allow(hv, idx, &w, |hv| {
        crate::console::guest_write(&mut hv.arch, &mut hv.partitions[idx], &text);
        [text.len() as u64, 0, 0]
    })
}

