//! The state store: `StateStage`, `StateValidate`, `StateCommit`, `StateGet`.

use rvm_abi::{HvError, Hypercall, ObjectKind, Rights};
use rvm_cap::proof::staged_args_digest;
use rvm_cap::ArgsDigest;

use crate::memory::addr::Ipa;
use crate::arch::Arch;
use crate::caps::Granted;
use crate::memory::guest_mem;
use crate::state::{Flow, Hypervisor};

use super::{allow, authorize, deny, read_guest, refuse, CapUse, ProofRegs, Witnessed};

fn store_index<A: Arch>(hv: &Hypervisor<A>, g: &Granted) -> Option<usize> {
    // A state-store object id is the id of the partition that owns it.
    let id = usize::try_from(g.object).ok()?;
    (id >= 1 && id <= hv.stores.len()).then(|| id - 1)
}

/// `x5` is the value length, so staging carries no P3 approval and no
/// nonce: a store whose WRITE is at P3 refuses it with `BadProof`. The item
/// is the byte range `0..key length + value length` for the window and the
/// byte quota.
pub(super) fn stage<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call: Hypercall::StateStage,
        raw: regs[0],
        kind: Some(ObjectKind::StateStore),
        need: Rights::WRITE,
        access: Some((0, regs[2].saturating_add(regs[4]))),
        proof: ProofRegs::NONE,
    };
    let g = match authorize(hv, idx, &u, |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return refuse(hv, idx, w, r),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(hv, &g) else { return deny(hv, idx, &w, HvError::BadHandle) };
    let key = match read_guest(hv, idx, regs[1], regs[2], 4096) {
        Ok(k) => k,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let value = match read_guest(hv, idx, regs[3], regs[4], 1 << 16) {
        Ok(v) => v,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let w = w.data(regs, &[key.as_slice(), value.as_slice()].concat());
    if let Err(e) = hv.stores[s].check_stage(&key, &value) {
        return deny(hv, idx, &w, e);
    }
    allow(hv, idx, &w, |hv| {
        let staged = hv.stores[s].stage(&key, &value);
        debug_assert!(staged.is_ok());
        [hv.stores[s].staged_items() as u64, 0, 0]
    })
}

/// The digest a P3 approval of `StateValidate` or `StateCommit` through
/// `raw` signs: the store's staged set as it stands
/// ([`staged_args_digest`]), so an approval covers exactly the items it was
/// given for and no other set staged later.
fn staged_digest<A: Arch>(hv: &Hypervisor<A>, idx: usize, raw: u64) -> Result<ArgsDigest, HvError> {
    let info = hv.caps.info(hv.partitions[idx].id(), raw)?;
    let s = usize::try_from(info.object.id.0)
        .ok()
        .and_then(|id| id.checked_sub(1))
        .filter(|s| *s < hv.stores.len())
        .ok_or(HvError::BadHandle)?;
    Ok(staged_args_digest(hv.stores[s].staged()))
}

/// `StateValidate` and `StateCommit`; a P3 approval signs the digest of
/// the staged set ([`staged_args_digest`]).
pub(super) fn finish<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, call: Hypercall, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call,
        raw: regs[0],
        kind: Some(ObjectKind::StateStore),
        need: Rights::WRITE,
        access: None,
        proof: ProofRegs::x5_x6(regs),
    };
    let g = match authorize(hv, idx, &u, |hv| staged_digest(hv, idx, u.raw)) {
        Ok(g) => g,
        Err(r) => return refuse(hv, idx, w, r),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(hv, &g) else { return deny(hv, idx, &w, HvError::BadHandle) };
    if let Err(e) = hv.stores[s].would_validate() {
        // A failed validation discards the transaction: nothing is committed.
        let flow = deny(hv, idx, &w, e);
        let _ = hv.stores[s].validate();
        return flow;
    }
    allow(hv, idx, &w, |hv| {
        let store = &mut hv.stores[s];
        let n = if call == Hypercall::StateCommit {
            store.commit().unwrap_or(0)
        } else {
            let _ = store.validate();
            store.staged_items()
        };
        [n as u64, store.committed_items() as u64, 0]
    })
}

/// `x5` is the capacity, so reading carries no P3 approval and no nonce:
/// a store whose READ is at P3 refuses it with `BadProof`.
pub(super) fn get<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call: Hypercall::StateGet,
        raw: regs[0],
        kind: Some(ObjectKind::StateStore),
        need: Rights::READ,
        access: None,
        proof: ProofRegs::NONE,
    };
    let g = match authorize(hv, idx, &u, |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return refuse(hv, idx, w, r),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(hv, &g) else { return deny(hv, idx, &w, HvError::BadHandle) };
    let key = match read_guest(hv, idx, regs[1], regs[2], 4096) {
        Ok(k) => k,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let Some(value) = hv.stores[s].get(&key).map(<[u8]>::to_vec) else {
        let w = w.data(regs, &key);
        return deny(hv, idx, &w, HvError::InvalidArgument);
    };
    if value.len() as u64 > regs[4] {
        return deny(hv, idx, &w, HvError::Full);
    }
    if let Err(e) = guest_mem::check_writable(&hv.arch, hv.partitions[idx].stage2(), Ipa::new(regs[3]), value.len() as u64) {
        return deny(hv, idx, &w, e);
    }
    let w = w.data(regs, &[key.as_slice(), value.as_slice()].concat());
    allow(hv, idx, &w, |hv| {
        let s2 = hv.partitions[idx].stage2();
        let wrote = guest_mem::write(&mut hv.arch, s2, Ipa::new(regs[3]), &value);
        debug_assert!(wrote.is_ok());
        [value.len() as u64, 0, 0]
    })
}

