//! Recreating a partition's guest in place (F1 restart, F2 rollback, an
//! operator's unfence): the image's writable pages are copied again from the
//! pristine image, the demand-paged heap is scrubbed and unmapped, the vCPU
//! starts over at the entry, and the boot-info page says how often the guest
//! was restarted and which snapshot, if any, to resume from.
//!
//! What is kept: the partition's identity, stage-2 tables, shared pages, the
//! WASM module, its capabilities and channels, and its committed state
//! store — except that resuming from a snapshot makes the store what it
//! was when the snapshot was taken. An open (staged, uncommitted)
//! transaction is dropped either way.

use alloc::vec::Vec;

use rvm_abi::bootinfo::{layout, RestoreInfo};
use rvm_abi::HvError;

use crate::memory::addr::{Ipa, PhysAddr, PAGE_BYTES};
use crate::arch::Arch;
use crate::state::Hypervisor;
use crate::memory::stage2::S2Perm;

/// Where a recreated guest begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The pristine image, with the committed state as it stands (F1).
    Pristine,
    /// The last snapshot, memory and committed state (F2, unfence); the
    /// pristine image when there is none.
    LastSnapshot,
}

/// Recreate partition `idx`'s guest. Returns the id of the snapshot it
/// resumes from (0 = the pristine image). On `Err` the guest must not run
/// again (the caller fences it): its memory may be half reset.
pub(crate) fn recreate<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, from: StartFrom) -> Result<u64, HvError> {
    hv.partitions[idx].console_flush(&mut hv.arch);
    hv.stores[idx].abort();
    reset_image_data(hv, idx)?;
    scrub_heap(hv, idx);
    let restore = map_snapshot(hv, idx, from)?;
    let p = &mut hv.partitions[idx];
    p.note_restart(restore.is_restore());
    hv.forget_loaded_vcpu(idx);
    crate::load::write_boot_info(hv, idx, RestoreInfo { rollbacks: hv.partitions[idx].rollbacks(), ..restore });
    // Resuming a snapshot replaced the committed set: a host that keeps
    // sets holds the rolled-back one before the guest runs again.
    if restore.is_restore() {
        crate::durable::changed(hv, idx, idx);
    }
    Ok(restore.snapshot_id)
}

/// Copy every writable page of the guest image from its pristine version
/// over the partition's private copy.
fn reset_image_data<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Result<(), HvError> {
    let Hypervisor { arch, partitions, runtime, .. } = hv;
    let p = &mut partitions[idx];
    let image = p.own_image().or(runtime.as_ref()).ok_or(HvError::NotSupported)?;
    let pristine: Vec<(Ipa, PhysAddr)> =
        image.pages.iter().filter(|pg| pg.perm == S2Perm::ReadWrite).map(|pg| (pg.ipa, pg.pa)).collect();
    for (ipa, src) in pristine {
        let t = p.stage2().translate(arch, ipa).ok_or(HvError::BadAddress)?;
        arch.phys_copy(t.pa, src, PAGE_BYTES);
    }
    Ok(())
}

/// Unmap, scrub and return every demand-paged heap page.
fn scrub_heap<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) {
    let pages = hv.partitions[idx].take_heap_pages();
    let vmid = hv.partitions[idx].vmid();
    hv.partitions[idx].stage2_mut().unmap_many(&mut hv.arch, pages.iter().map(|&(ipa, _)| ipa), vmid);
    for (_, pa) in pages {
        hv.scrub_and_free(pa);
    }
}

/// Unmap whatever the restore window held, then map the last snapshot
/// there and restore its store when resuming from it.
fn map_snapshot<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, from: StartFrom) -> Result<RestoreInfo, HvError> {
    let Hypervisor { arch, frames, partitions, stores, .. } = hv;
    let p = &mut partitions[idx];
    p.clear_restore_window(arch);
    if !matches!(from, StartFrom::LastSnapshot) {
        return Ok(RestoreInfo::NONE);
    }
    let ck = match p.map_last_snapshot(arch, frames) {
        Ok(Some(ck)) => ck,
        Ok(None) => return Ok(RestoreInfo::NONE),
        Err(_) => return Err(HvError::NoMemory),
    };
    stores[idx].restore(&ck.store);
    Ok(RestoreInfo { image_ipa: layout::SNAPSHOT_IPA, image_len: ck.len, snapshot_id: ck.id, rollbacks: 0 })
}
