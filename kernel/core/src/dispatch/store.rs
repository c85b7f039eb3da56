//! The state store: `StateStage`, `StateValidate`, `StateCommit`,
//! `StateGet` — the caller's [`Call`] and the state stores.

use rvm_abi::{HvError, Hypercall, ObjectKind, Rights};
use rvm_cap::proof::staged_args_digest;
use rvm_cap::ArgsDigest;
use rvm_state::store::StateStore;

use crate::arch::Arch;
use crate::caps::Granted;
use crate::running::trap::Flow;

use super::call::{Call, CapUse, ProofRegs, Witnessed};

/// The store a granted capability names: a state-store object id is the
/// id of the partition that owns it.
fn store_index(stores: &[StateStore], g: &Granted) -> Option<usize> {
    let id = usize::try_from(g.object).ok()?;
    (id >= 1 && id <= stores.len()).then(|| id - 1)
}

/// `x5` is the value length, so staging carries no P3 approval and no
/// nonce: a store whose WRITE is at P3 refuses it with `BadProof`. The item
/// is the byte range `0..key length + value length` for the window and the
/// byte quota.
pub(super) fn stage<A: Arch>(call: &mut Call<'_, A>, stores: &mut [StateStore], w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call: Hypercall::StateStage,
        raw: regs[0],
        kind: Some(ObjectKind::StateStore),
        need: Rights::WRITE,
        access: Some((0, regs[2].saturating_add(regs[4]))),
        proof: ProofRegs::NONE,
    };
    let g = match call.authorize(&u, |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return call.refuse(w, r),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(stores, &g) else { return call.deny(&w, HvError::BadHandle) };
    let key = match call.read_guest(regs[1], regs[2], 4096) {
        Ok(k) => k,
        Err(e) => return call.deny(&w, e),
    };
    let value = match call.read_guest(regs[3], regs[4], 1 << 16) {
        Ok(v) => v,
        Err(e) => return call.deny(&w, e),
    };
    let w = w.data(regs, &[key.as_slice(), value.as_slice()].concat());
    if let Err(e) = stores[s].check_stage(&key, &value) {
        return call.deny(&w, e);
    }
    call.allow(&w, |_| {
        let staged = stores[s].stage(&key, &value);
        debug_assert!(staged.is_ok());
        [stores[s].staged_items() as u64, 0, 0]
    })
}

/// The digest a P3 approval of `StateValidate` or `StateCommit` through
/// `raw` signs: the store's staged set as it stands
/// ([`staged_args_digest`]), so an approval covers exactly the items it was
/// given for and no other set staged later.
fn staged_digest<A: Arch>(call: &Call<'_, A>, stores: &[StateStore], raw: u64) -> Result<ArgsDigest, HvError> {
    let info = call.caps.info(call.caller.id(), raw)?;
    let s = usize::try_from(info.object.id.0)
        .ok()
        .and_then(|id| id.checked_sub(1))
        .filter(|s| *s < stores.len())
        .ok_or(HvError::BadHandle)?;
    Ok(staged_args_digest(stores[s].staged()))
}

/// `StateValidate` and `StateCommit`; a P3 approval signs the digest of
/// the staged set ([`staged_args_digest`]). With the flow, the store a
/// commit changed (its position), if one did.
pub(super) fn finish<A: Arch>(
    call: &mut Call<'_, A>,
    stores: &mut [StateStore],
    op: Hypercall,
    w: Witnessed,
    regs: &[u64; 6],
) -> (Flow, Option<usize>) {
    let u = CapUse {
        call: op,
        raw: regs[0],
        kind: Some(ObjectKind::StateStore),
        need: Rights::WRITE,
        access: None,
        proof: ProofRegs::x5_x6(regs),
    };
    let g = match call.authorize(&u, |call| staged_digest(call, stores, u.raw)) {
        Ok(g) => g,
        Err(r) => return (call.refuse(w, r), None),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(stores, &g) else { return (call.deny(&w, HvError::BadHandle), None) };
    if let Err(e) = stores[s].would_validate() {
        // A failed validation discards the transaction: nothing is committed.
        let flow = call.deny(&w, e);
        let _ = stores[s].validate();
        return (flow, None);
    }
    let commits = stores[s].commits;
    let flow = call.allow(&w, |_| {
        let store = &mut stores[s];
        let n = if op == Hypercall::StateCommit {
            store.commit().unwrap_or(0)
        } else {
            let _ = store.validate();
            store.staged_items()
        };
        [n as u64, store.committed_items() as u64, 0]
    });
    (flow, (stores[s].commits != commits).then_some(s))
}

/// `x5` is the capacity, so reading carries no P3 approval and no nonce:
/// a store whose READ is at P3 refuses it with `BadProof`.
pub(super) fn get<A: Arch>(call: &mut Call<'_, A>, stores: &[StateStore], w: Witnessed, regs: &[u64; 6]) -> Flow {
    let u = CapUse {
        call: Hypercall::StateGet,
        raw: regs[0],
        kind: Some(ObjectKind::StateStore),
        need: Rights::READ,
        access: None,
        proof: ProofRegs::NONE,
    };
    let g = match call.authorize(&u, |_| Ok(ArgsDigest::of(&[], &[]))) {
        Ok(g) => g,
        Err(r) => return call.refuse(w, r),
    };
    let w = w.granted(&g);
    let Some(s) = store_index(stores, &g) else { return call.deny(&w, HvError::BadHandle) };
    let key = match call.read_guest(regs[1], regs[2], 4096) {
        Ok(k) => k,
        Err(e) => return call.deny(&w, e),
    };
    let Some(value) = stores[s].get(&key).map(<[u8]>::to_vec) else {
        let w = w.data(regs, &key);
        return call.deny(&w, HvError::InvalidArgument);
    };
    if value.len() as u64 > regs[4] {
        return call.deny(&w, HvError::Full);
    }
    if let Err(e) = call.check_writable(regs[3], value.len() as u64) {
        return call.deny(&w, e);
    }
    let w = w.data(regs, &[key.as_slice(), value.as_slice()].concat());
    call.allow(&w, |call| {
        call.write_guest(regs[3], &value);
        [value.len() as u64, 0, 0]
    })
}
