//! The `Dormant` memory tier: a partition that sleeps between messages.
//!
//! **The signal.** The guest runtime drives its agent turn by turn. When a
//! turn ended in which the agent found its inbox empty (a receive answered
//! `WouldBlock`) and received nothing, the runtime asks `Idle` with `x1` =
//! 0 whether the partition may sleep (the kernel says yes when no message
//! waits for it and its manifest tier is `Dormant`, or `Warm` with a
//! `dormant_after_ms` its last wait reached: [`crate::partition::Partition::dormant_after_ns`],
//! [`crate::dispatch::waits::expire`]), takes its turn-boundary snapshot,
//! and calls `Idle` with that snapshot's id.
//!
//! **Going dormant** ([`enter`]): unless a message arrived meanwhile, the
//! call is witnessed and does not return. The partition's memory is
//! scrubbed and returned to the frame pool — heap (the agent's linear
//! memory and the runtime's heap), the runtime's private data pages, the
//! boot-info page — and its stage-2 tables are torn down (an empty root
//! stays, so the partition's table remains valid to walk). Kept: VMID,
//! capabilities, channels, the committed state store, the witness log, the
//! snapshot, and the read-only frames of its WASM module (its pristine
//! code, like the shared runtime image). State `Dormant`, witnessed with
//! `DormantEnter` ([`DormantArgs`]: frames returned).
//!
//! **Waking** ([`message_sent`], called by `ChannelSend` once a message is
//! queued): a dormant partition with a message waiting gets fresh stage-2
//! tables, the runtime image mapped again (private pages copied from the
//! pristine image), its module and a new boot-info page, and is recreated
//! by [`crate::recovery::restart::recreate`] from that snapshot; it is `Running`
//! again, witnessed with `DormantExit` (frames taken). The message stays
//! queued and is received by the restored agent: nothing is lost or
//! delivered twice. A partition that cannot be rebuilt (out of frames) is
//! fenced (F3) and says why.

use alloc::vec::Vec;

use rvm_abi::bootinfo::layout;
use rvm_abi::bundle::MemoryTier;
use rvm_abi::recovery::DormantArgs;
use rvm_abi::witness::KernelEvent;
use rvm_abi::HvError;

use crate::memory::addr::{Ipa, PhysAddr, PAGE_BYTES, PAGE_SIZE};
use crate::arch::Arch;
use crate::console;
use crate::dispatch::answer::{allow, deny};
use crate::dispatch::call::Witnessed;
use crate::partition::name_str;
use crate::running::trap::Flow;
use crate::state::Hypervisor;
use crate::partition::PartitionState;
use crate::recovery::restart::StartFrom;
use crate::memory::stage2::{MemType, S2Perm, Stage2Table};
use crate::witness::Reservation;

/// Whether a message waits for any agent of partition `idx`.
fn message_waiting<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
    let id = hv.partitions[idx].id();
    hv.channels
        .iter()
        .any(|c| (0..2).any(|i| c.ends()[i] == id && c.pending_for(c.endpoint(i)) > 0))
}

/// Whether partition `idx` may sleep at an idle turn: it runs an agent
/// module under the shared runtime (only those can be rebuilt on a wake)
/// and is of the `Dormant` tier, or of the `Warm` tier and its last wait
/// was ended by its dormancy policy (it waited its manifest's
/// `dormant_after_ms` for a message: [`crate::dispatch::waits::expire`]).
fn may_sleep<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> bool {
    let p = &hv.partitions[idx];
    let policy = match p.desc().memory_tier {
        MemoryTier::Dormant => true,
        MemoryTier::Warm => p.idled_out(),
        _ => false,
    };
    policy && p.dormant_after_ns().is_some() && hv.runtime.is_some()
}

/// The `Idle` hypercall (see [`rvm_abi::Hypercall::Idle`]).
pub(crate) fn idle<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, w: Witnessed, regs: &[u64; 6]) -> Flow {
    let snapshot_id = regs[0];
    if snapshot_id == 0 {
        // The question changes nothing and is not witnessed.
        let may = may_sleep(hv, idx) && !message_waiting(hv, idx);
        hv.partitions[idx].vcpu_mut().set_return(0, &[u64::from(may)]);
        return Flow::Resume;
    }
    if !may_sleep(hv, idx) {
        return deny(hv, idx, &w, HvError::NotSupported);
    }
    let last = hv.partitions[idx].snapshot().map(|c| c.id);
    if last != Some(snapshot_id) {
        return deny(hv, idx, &w, HvError::InvalidArgument);
    }
    if message_waiting(hv, idx) {
        // Something arrived since the runtime asked: carry on.
        return allow(hv, idx, &w, |_| [0; 3]);
    }
    // Room for the call's record and `DormantEnter` before either: the
    // partition does not lose its memory unwitnessed.
    let id = hv.partitions[idx].id();
    let Some(mut held) = hv.hold(id, 2) else {
        return deny(hv, idx, &w, HvError::WitnessUnavailable);
    };
    let flow = allow(hv, idx, &w, |_| [1, 0, 0]);
    if hv.partitions[idx].vcpu().regs.x[0] != 0 {
        // The record was refused: the partition stays awake.
        hv.release(held);
        return flow;
    }
    enter(hv, idx, &mut held);
    hv.release(held);
    Flow::Reschedule
}

/// Put partition `idx` to sleep: scrub and return its memory, tear down
/// its stage-2 tables, keep its module frames and its snapshot.
pub(crate) fn enter<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, held: &mut Reservation) {
    let before = hv.frames.frames_in_use();
    hv.partitions[idx].clear_idled_out();
    hv.partitions[idx].console_flush(&mut hv.arch);
    hv.stores[idx].abort();
    let module = module_frames(hv, idx);
    // Heap pages: the agent's linear memory and the runtime's heap.
    let heap = hv.partitions[idx].take_heap_pages();
    for (_, pa) in heap {
        hv.scrub_and_free(pa);
    }
    // Private pages (runtime data, boot-info page) except the module's.
    let private = hv.partitions[idx].take_private_frames();
    for pa in private {
        if !module.contains(&pa) {
            hv.scrub_and_free(pa);
        }
    }
    hv.partitions[idx].keep_private_frames(module);
    hv.partitions[idx].forget_restore_window();
    if let Some(empty) = Stage2Table::new(&mut hv.arch, &mut hv.frames) {
        let old = hv.partitions[idx].replace_stage2(empty);
        old.destroy(&mut hv.arch, &mut hv.frames);
    }
    let vmid = hv.partitions[idx].vmid();
    hv.arch.flush_stage2(vmid);
    hv.forget_loaded_vcpu(idx);
    let reclaimed = before.saturating_sub(hv.frames.frames_in_use());
    let ck = hv.partitions[idx].snapshot().map_or(0, |c| c.id);
    let args = DormantArgs {
        frames: u32::try_from(reclaimed).unwrap_or(u32::MAX),
        committed_items: u32::try_from(hv.stores[idx].committed_items()).unwrap_or(u32::MAX),
        snapshot_id: ck,
    };
    hv.transition_held(held, idx, PartitionState::Dormant, KernelEvent::DormantEnter, args.to_bytes());
    hv.dormant.note_sleep(idx, reclaimed);
    let (id, name) = (hv.partitions[idx].id(), hv.partitions[idx].desc().name);
    console::hyp_line(
        &mut hv.arch,
        format_args!(
            "partition {} '{}' dormant on snapshot {ck}: {reclaimed} frames ({} KiB) returned",
            id.0,
            name_str(&name),
            reclaimed * PAGE_SIZE / 1024
        ),
    );
}

/// The frames backing the partition's WASM module window.
fn module_frames<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> Vec<PhysAddr> {
    let p = &hv.partitions[idx];
    let (ipa, len) = p.wasm();
    let pages = len.div_ceil(PAGE_SIZE);
    (0..pages)
        .filter_map(|n| p.stage2().translate(&hv.arch, Ipa::new(ipa + n * PAGE_SIZE)))
        .map(|t| t.pa)
        .collect()
}

/// A message was queued by `ChannelSend` on channel `ch`: wake its other
/// end if that partition is dormant.
pub(crate) fn message_sent<A: Arch>(hv: &mut Hypervisor<A>, ch: usize) {
    let Some(c) = hv.channels.get(ch) else { return };
    let ends = c.ends();
    for end in ends {
        let Some(idx) = hv.partitions.iter().position(|p| p.id() == end) else { continue };
        if hv.partitions[idx].state() == PartitionState::Dormant && message_waiting(hv, idx) {
            wake(hv, idx);
        }
    }
}

/// Rebuild partition `idx` and recreate its guest from its snapshot.
pub(crate) fn wake<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) {
    let started = hv.arch.now_ns();
    let before = hv.frames.frames_in_use();
    let (id, name) = (hv.partitions[idx].id(), hv.partitions[idx].desc().name);
    // Room for `DormantExit` first: a wake that cannot be witnessed does
    // not happen (the partition sleeps on; the message waits).
    let Some(mut held) = hv.hold(id, 1) else { return };
    let rebuilt = rebuild(hv, idx).and_then(|()| crate::recovery::restart::recreate(hv, idx, StartFrom::LastSnapshot));
    let ck = match rebuilt {
        Ok(ck) => ck,
        Err(e) => {
            console::hyp_line(
                &mut hv.arch,
                format_args!("partition {} '{}' could not be woken ({}): fenced (F3)", id.0, name_str(&name), e.name()),
            );
            hv.release(held);
            crate::recovery::fault::fence(hv, idx, crate::recovery::policy::Trigger::RestoreFailed);
            return;
        }
    };
    let taken = hv.frames.frames_in_use().saturating_sub(before);
    let args = DormantArgs {
        frames: u32::try_from(taken).unwrap_or(u32::MAX),
        committed_items: u32::try_from(hv.stores[idx].committed_items()).unwrap_or(u32::MAX),
        snapshot_id: ck,
    };
    hv.transition_held(&mut held, idx, PartitionState::Running, KernelEvent::DormantExit, args.to_bytes());
    let took = hv.arch.now_ns().saturating_sub(started);
    hv.dormant.note_wake(idx, taken, took);
    console::hyp_line(
        &mut hv.arch,
        format_args!(
            "partition {} '{}' woken by a message: {taken} frames taken, resuming from snapshot {ck} ({took} ns)",
            id.0,
            name_str(&name)
        ),
    );
}

/// Fresh stage-2 tables with the runtime image, the module and a new
/// boot-info page mapped (its contents are written by `recreate`).
fn rebuild<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Result<(), HvError> {
    let Hypervisor { arch, frames, partitions, runtime, .. } = &mut *hv;
    let rt = runtime.as_ref().ok_or(HvError::NotSupported)?;
    let p = &mut partitions[idx];
    let fresh = Stage2Table::new(arch, frames).ok_or(HvError::NoMemory)?;
    let empty = p.replace_stage2(fresh);
    empty.destroy(arch, frames);
    let module = p.private_frames().to_vec();
    p.map_image(arch, frames, rt).map_err(|_| HvError::NoMemory)?;
    for (n, pa) in module.into_iter().enumerate() {
        let ipa = Ipa::new(layout::WASM_IPA + n as u64 * PAGE_SIZE);
        p.stage2_mut().map(arch, frames, ipa, pa, S2Perm::ReadOnly, MemType::Normal).map_err(|_| HvError::NoMemory)?;
    }
    let page = frames.alloc().ok_or(HvError::NoMemory)?;
    arch.phys_zero(page, PAGE_BYTES);
    p.add_private_frame(page);
    p.stage2_mut()
        .map(arch, frames, Ipa::new(layout::BOOTINFO_IPA), page, S2Perm::ReadOnly, MemType::Normal)
        .map_err(|_| HvError::NoMemory)?;
    Ok(())
}
