//! `ConsoleWrite`: the text within the partition's console credit is read,
//! witnessed and printed; the rest is dropped and counted
//! ([`crate::console::OutputCredit`]). `x1` answers the bytes taken.

use rvm_abi::HvError;

use crate::arch::Arch;
use crate::running::trap::Flow;

use super::call::{Call, Witnessed};
use super::MAX_CONSOLE_WRITE;

pub(super) fn write<A: Arch>(call: &mut Call<'_, A>, w: Witnessed, regs: &[u64; 6]) -> Flow {
    if regs[1] > MAX_CONSOLE_WRITE {
        return call.deny(&w, HvError::InvalidArgument);
    }
    let asked = regs[1] as usize;
    let now = call.arch.now_ns();
    let taken = call.caller.output_mut().take_text(now, asked);
    let text = match call.read_guest(regs[0], taken as u64, MAX_CONSOLE_WRITE) {
        Ok(t) => t,
        Err(e) => return call.deny(&w, e),
    };
    let w = w.data(regs, &text);
    call.allow(&w, |call| {
        call.caller.console_write(&mut *call.arch, &text);
        if taken < asked {
            call.caller.console_dropped(&mut *call.arch, asked - taken);
        }
        [text.len() as u64, 0, 0]
    })
}
