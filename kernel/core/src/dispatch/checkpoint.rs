//! `Checkpoint`: the runtime hands over its agent's image at a turn boundary.
//!
//! `x1`/`x2` name the image (or its header), `x3`/`x4` an optional second
//! part appended to it (the linear memory, passed in place so the runtime
//! needs no second copy). The kernel copies both into frames of its own,
//! adds a snapshot of the committed state store, hashes the whole
//! ([`crate::recovery::checkpoint`]), and keeps it as the partition's last checkpoint.
//!
//! A partition checkpoints only itself, into space bounded by its
//! [`CheckpointLimit`](crate::recovery::checkpoint::CheckpointLimit), so the call
//! needs no capability. Records: the call's own (its `args` digest covers the
//! registers and the state hash), then `CheckpointTaken` with the hash's
//! first 16 bytes. Results: `x1` = checkpoint id, `x2`/`x3` = the hash's first
//! 16 bytes.

use rvm_abi::witness::KernelEvent;
use rvm_abi::Outcome;

use crate::memory::addr::Ipa;
use crate::arch::Arch;
use crate::recovery::checkpoint::{Checkpoint, GuestPart};
use crate::state::{Flow, Hypervisor};

use super::{allow, deny, Witnessed};

pub(super) fn take<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let parts = [GuestPart { ipa: Ipa::new(regs[0]), len: regs[1] }, GuestPart { ipa: Ipa::new(regs[2]), len: regs[3] }];
    let id = hv.partitions[idx].next_checkpoint_id();
    let snapshot = hv.stores[idx].snapshot();
    let captured = {
        let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
        let p = &partitions[idx];
        Checkpoint::capture(arch, frames, p.stage2(), &parts, p.checkpoint_limit(), id, snapshot)
    };
    let ck = match captured {
        Ok(ck) => ck,
        Err(e) => return deny(hv, idx, &w, e),
    };
    let hash = ck.hash;
    // Charged to the partition: past its checkpoint credit it gives up its
    // CPU until the credit refilled ([`crate::console::OutputCredit`]).
    let now = hv.arch.now_ns();
    hv.partitions[idx].output_mut().charge_checkpoint(now, ck.len);
    let w = w.data(regs, &hash.0);
    // Room for both records (the call's, `CheckpointTaken`) before either:
    // a checkpoint is installed witnessed or not at all.
    let pid = hv.partitions[idx].id();
    let Some(held) = hv.hold(pid, 2) else {
        ck.release(&mut hv.arch, &mut hv.frames);
        return deny(hv, idx, &w, rvm_abi::HvError::WitnessUnavailable);
    };
    let mut ck = Some(ck);
    let flow = allow(hv, idx, &w, |hv| {
        let [lo, hi] = hash.prefix_words();
        if let Some(ck) = ck.take() {
            install(hv, idx, ck);
        }
        [id, lo, hi]
    });
    // The record was refused: the checkpoint was not taken.
    if let Some(ck) = ck {
        ck.release(&mut hv.arch, &mut hv.frames);
    }
    hv.release(held);
    flow
}

/// Make `ck` the partition's last checkpoint, releasing the one before
/// (taking it out of the restore window first if it is mapped there).
fn install<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, ck: Checkpoint) {
    let pid = hv.partitions[idx].id();
    let prefix = ck.hash.prefix16();
    let Hypervisor { arch, frames, partitions, .. } = &mut *hv;
    let p = &mut partitions[idx];
    p.clear_restore_window(arch);
    if let Some(old) = p.install_checkpoint(ck) {
        old.release(arch, frames);
    }
    // Room was held by `take`: this append cannot fail.
    hv.kernel_event(pid, KernelEvent::SnapshotTaken, Outcome::Done, prefix);
}
