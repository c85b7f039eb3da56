//! `ConsoleWrite`: the text within the partition's console credit is read,
//! witnessed and printed; the rest is dropped and counted
//! ([`crate::console::OutputCredit`]). `x1` answers the bytes taken.

use rvm_abi::HvError;

use crate::arch::Arch;
use crate::state::{Flow, Hypervisor};

use super::{allow, deny, read_guest, Witnessed, MAX_CONSOLE_WRITE};

pub(super) fn write<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    if regs[1] > MAX_CONSOLE_WRITE {
        return deny(hv, idx, &w, HvError::InvalidArgument);
    }
    let asked = regs[1] as usize;
    let now = hv.arch.now_ns();
    let taken = hv.partitions[idx].output_mut().take_text(now, asked);
    let text = match read_guest(hv, idx, regs[0], taken as u64, MAX_CONSOLE_WRITE) {
        Ok(t) => t,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &text);
    allow(hv, idx, &w, |hv| {
        let p = &mut hv.partitions[idx];
        p.console_write(&mut hv.arch, &text);
        if taken < asked {
            p.console_dropped(&mut hv.arch, asked - taken);
        }
        [text.len() as u64, 0, 0]
    })
}
