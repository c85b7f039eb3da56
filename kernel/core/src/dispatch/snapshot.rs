//! `Snapshot`: the runtime hands over its agent's image at a turn boundary.
//!
//! `x1`/`x2` name the image (or its header), `x3`/`x4` an optional second
//! part appended to it (the linear memory, passed in place so the runtime
//! needs no second copy). The kernel copies both into frames of its own,
//! adds a snapshot of the committed state store, hashes the whole
//! ([`crate::recovery::snapshot`]), and keeps it as the partition's last snapshot.
//!
//! A partition snapshots only itself, into space bounded by its
//! [`SnapshotLimit`](crate::recovery::snapshot::SnapshotLimit), so the call
//! needs no capability. Records: the call's own (its `args` digest covers the
//! registers and the state hash), then `SnapshotTaken` with the hash's
//! first 16 bytes. Results: `x1` = snapshot id, `x2`/`x3` = the hash's first
//! 16 bytes.

use rvm_abi::witness::KernelEvent;
use rvm_abi::Outcome;

use crate::memory::addr::Ipa;
use crate::arch::Arch;
use crate::memory::frames::FrameAllocator;
use crate::recovery::snapshot::{Snapshot, GuestPart};
use crate::running::trap::Flow;
use crate::witness::event_record;
use rvm_state::store::StateStore;

use super::call::{Call, Witnessed};

/// `store`: the caller's own committed state store (a snapshot carries
/// a snapshot of it); `frames`: where the image is copied to.
pub(super) fn take<A: Arch>(call: &mut Call<'_, A>, frames: &mut FrameAllocator, store: &StateStore, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let parts = [GuestPart { ipa: Ipa::new(regs[0]), len: regs[1] }, GuestPart { ipa: Ipa::new(regs[2]), len: regs[3] }];
    let id = call.caller.next_snapshot_id();
    let captured =
        Snapshot::capture(&mut *call.arch, frames, call.caller.stage2(), &parts, call.caller.snapshot_limit(), id, store.snapshot());
    let ck = match captured {
        Ok(ck) => ck,
        Err(e) => return call.deny(&w, e),
    };
    let hash = ck.hash;
    // Charged to the partition: past its snapshot credit it gives up its
    // CPU until the credit refilled ([`crate::console::OutputCredit`]).
    let now = call.arch.now_ns();
    call.caller.output_mut().charge_snapshot(now, ck.len);
    let w = w.data(regs, &hash.0);
    // Room for both records (the call's, `SnapshotTaken`) before either:
    // a snapshot is installed witnessed or not at all.
    let log = call.caller.id().0;
    let Ok(held) = call.witness.hold(log, 2) else {
        ck.release(&mut *call.arch, frames);
        return call.deny(&w, rvm_abi::HvError::WitnessUnavailable);
    };
    let mut ck = Some(ck);
    let flow = call.allow(&w, |call| {
        let [lo, hi] = hash.prefix_words();
        if let Some(ck) = ck.take() {
            install(call, frames, ck);
        }
        [id, lo, hi]
    });
    // The record was refused: the snapshot was not taken.
    if let Some(ck) = ck {
        ck.release(&mut *call.arch, frames);
    }
    call.witness.release(held);
    flow
}

/// Make `ck` the partition's last snapshot, releasing the one before
/// (taking it out of the restore window first if it is mapped there), and
/// witness `SnapshotTaken`.
fn install<A: Arch>(call: &mut Call<'_, A>, frames: &mut FrameAllocator, ck: Snapshot) {
    let prefix = ck.hash.prefix16();
    call.caller.clear_restore_window(&mut *call.arch);
    if let Some(old) = call.caller.install_snapshot(ck) {
        old.release(&mut *call.arch, frames);
    }
    let log = call.caller.id().0;
    let rec = event_record(log, KernelEvent::SnapshotTaken, Outcome::Done, prefix, call.arch.now_ns());
    // Room was held by `take`: this append cannot fail.
    let _ = call.witness.append(&mut *call.arch, log, rec);
}
