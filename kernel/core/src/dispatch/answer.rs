//! Answers for the calls whose effect reaches past the caller's [`Call`]:
//! switching agents, moving one, going dormant. The order is the one every
//! call keeps — the record first (through the caller's call context), then
//! the effect — with the effect applied to the whole hypervisor.

use rvm_abi::{HvError, Outcome};

use crate::arch::Arch;
use crate::running::trap::Flow;
use crate::state::Hypervisor;

use super::call::Witnessed;

/// Witness a denial and return its status to the guest.
pub(crate) fn deny<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: &Witnessed, err: HvError) -> Flow {
    hv.call(idx).deny(w, err)
}

/// Witness success, then run `apply` (which must not fail) on the whole
/// hypervisor and return its results.
pub(crate) fn allow<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    w: &Witnessed,
    apply: impl FnOnce(&mut Hypervisor<A>) -> [u64; 3],
) -> Flow {
    let seq = {
        let mut call = hv.call(idx);
        match call.witness_seq(w, Outcome::Done, true) {
            Ok(seq) => seq,
            Err(e) => {
                call.answer(e.code(), &[]);
                return Flow::Resume;
            }
        }
    };
    let results = apply(hv);
    let mut call = hv.call(idx);
    call.answer(0, &results);
    call.journal_call(w, seq, 0, &results);
    Flow::Resume
}
