//! Capability hypercalls: `CapQuery`.

use crate::arch::Arch;
use crate::hypervisor::{Flow, Hypervisor};

use super::{allow, deny, Witnessed};

pub(super) fn query<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let id = hv.partitions[idx].id;
    match hv.caps.query(id, regs[0]) {
        Ok(q) => allow(hv, idx, &w, |_| [q.kind as u64, u64::from(q.rights.bits()), q.tier_mask]),
        Err(e) => deny(hv, idx, &w, e),
    }
}

