//! Building partitions from the bundle.

pub mod elf;
pub mod image;
pub mod refusal;

use alloc::vec::Vec;

use rvm_abi::bootinfo::{layout, AgentEntry, AgentTable, BootInfo, HandleInfo, RestoreInfo};
use rvm_abi::bundle::{
    AgentChannelDesc, AgentRef, Bundle, CapDesc, ChannelDesc, EntryKind, PartitionDesc, MAX_AGENTS_PER_PARTITION,
};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{ObjectKind, Outcome, Rights};

use crate::memory::addr::{Ipa, PhysAddr, PAGE_BYTES, PAGE_SIZE};
use crate::arch::Arch;
use crate::channel::{AgentSlot, Channel, Endpoint};
use crate::console;
pub use crate::load::refusal::{BootError, Refusal};
use crate::state::Hypervisor;
use crate::load::image::SharedImage;
use crate::partition::{Partition, PartitionId, PartitionState};
use crate::memory::stage2::{MemType, S2Perm, Stage2Table};
use rvm_state::store::StoreLimits;

/// Messages a bundle channel holds per direction.
const CHANNEL_CAPACITY: usize = 64;


/// The most frames partition `idx` can ever hold once loaded: what it holds
/// now (images, modules, boot page), its whole heap window, two snapshots
/// of its largest size (a new one is taken before the last is released), and
/// the stage-2 tables that map them.
pub(crate) fn footprint<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> u64 {
    const PAGE: u64 = 4096;
    const TABLE_SPAN: u64 = 2 << 20;
    let p = &hv.partitions[idx];
    let held = p.private_frames().len() as u64;
    let heap = p.heap().len.div_ceil(PAGE);
    let ck = p.snapshot_limit().max_bytes.div_ceil(PAGE);
    // A level-3 table per 2 MiB mapped, the level-1/2 tables above them.
    let tables = p.heap().len.div_ceil(TABLE_SPAN) + p.snapshot_limit().max_bytes.div_ceil(TABLE_SPAN) + held.div_ceil(512) + 8;
    held + heap + 2 * ck + tables
}

/// Where a partition of a bundle goes: its id (its position + 1, its
/// VMID), and what its `PartitionCreate` record binds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub id: PartitionId,
    /// The record's argument: the digest of the partition's description
    /// (a boot's partition), or of the signed admission that brought it.
    pub created_by: [u8; 16],
    /// Created while the hypervisor runs: its log's name goes to the host
    /// before its first record ([`rvm_abi::control::Outgoing::Name`]).
    pub at_run_time: bool,
}

impl Placement {
    /// Partition `index` of the boot bundle.
    pub(crate) fn at_boot(bundle: &Bundle<'_>, index: u32, desc: &PartitionDesc) -> Self {
        Self {
            id: PartitionId(bundle.partition_id(index)),
            created_by: rvm_state::digest::of_parts(&[&desc.to_bytes()]),
            at_run_time: false,
        }
    }
}

/// Partition `index` (`desc`) of the boot bundle: placed at its id, its
/// log continued and its kept committed set checked when the bundle says
/// so (refused, witnessed, when either does not hold), loaded, admitted to
/// the scheduler, and its kept set restored.
pub(crate) fn boot_partition<A: Arch>(
    hv: &mut Hypervisor<A>,
    bundle: &Bundle<'_>,
    index: u32,
    desc: PartitionDesc,
) -> Result<(), BootError> {
    let place = Placement::at_boot(bundle, index, &desc);
    fill_vacancies(hv, place.id)?;
    let resumed = bundle.log_resume(Some(index));
    let kept = bundle.state_restore(index);
    if let Some(from) = &resumed {
        if let Err(e) = hv.witness.resume(place.id.0, from) {
            return refuse_continuation(hv, place.id, &desc, Refusal::LogResume(e));
        }
        witness_resumed(hv, place.id, from.size);
        // The set kept for it must be the one its log vouches for.
        if let Some(Err(e)) = kept.as_ref().map(|k| crate::durable::check_restore(place.id, from, k)) {
            return refuse_continuation(hv, place.id, &desc, Refusal::KeptState(e));
        }
    }
    let refused = load_partition(hv, bundle, index, desc, place)?;
    let idx = hv.partitions.len() - 1;
    hv.sched.admit(idx, &desc);
    if let (None, Some(from), Some(kept)) = (refused, &resumed, &kept) {
        // Checked above; taken and witnessed now.
        let _ = crate::durable::restore(hv, idx, from, kept);
    }
    Ok(())
}

/// Fill the ids below `id` that no partition has with vacancies
/// ([`Partition::vacancy`]), so that partition `id` is at position
/// `id - 1`.
pub(crate) fn fill_vacancies<A: Arch>(hv: &mut Hypervisor<A>, id: PartitionId) -> Result<(), BootError> {
    while hv.partitions.len() + 1 < id.0 as usize {
        let at = PartitionId(u32::try_from(hv.partitions.len() + 1).map_err(|_| BootError::TooManyPartitions)?);
        let vmid = u8::try_from(at.0).map_err(|_| BootError::TooManyPartitions)?;
        let stage2 = Stage2Table::new(&mut hv.arch, &mut hv.frames).ok_or(BootError::OutOfMemory)?;
        hv.add_partition(Partition::vacancy(at, vmid, stage2));
    }
    Ok(())
}

/// Log `log` continues an earlier boot's from `size` records: said in the
/// hypervisor's log (`LogResumed`), so every continuation is auditable.
pub(crate) fn witness_resumed<A: Arch>(hv: &mut Hypervisor<A>, log: PartitionId, size: u64) {
    let mut args = [0u8; 16];
    args[..4].copy_from_slice(&log.0.to_le_bytes());
    args[8..].copy_from_slice(&size.to_le_bytes());
    hv.must_witness(PartitionId::HYPERVISOR, KernelEvent::LogResumed, Outcome::Done, args);
}

/// Partition `id` (`desc`) cannot continue where the earlier boot left it
/// (`refusal`: its log does not continue, or the committed set kept for
/// it is not the one its log vouches for): it does not run, its log gets
/// no record (the host's copy stays as it was), and the refusal is
/// witnessed in the hypervisor's log; its id stays vacant.
pub(crate) fn refuse_continuation<A: Arch>(
    hv: &mut Hypervisor<A>,
    id: PartitionId,
    desc: &PartitionDesc,
    refusal: Refusal,
) -> Result<(), BootError> {
    let vmid = u8::try_from(id.0).map_err(|_| BootError::TooManyPartitions)?;
    let stage2 = Stage2Table::new(&mut hv.arch, &mut hv.frames).ok_or(BootError::OutOfMemory)?;
    hv.add_partition(Partition::vacancy(id, vmid, stage2));
    match refusal {
        Refusal::LogResume(why) => console::hyp_line(
            &mut hv.arch,
            format_args!("partition {} '{}' refused: {} ({why})", id.0, desc.name(), refusal.reason()),
        ),
        Refusal::KeptState(why) => console::hyp_line(
            &mut hv.arch,
            format_args!("partition {} '{}' refused: {} ({why})", id.0, desc.name(), refusal.reason()),
        ),
        other => console::hyp_line(&mut hv.arch, format_args!("partition {} '{}' refused: {}", id.0, desc.name(), other.reason())),
    }
    let mut args = [0u8; 16];
    args[..4].copy_from_slice(&id.0.to_le_bytes());
    hv.must_witness(PartitionId::HYPERVISOR, KernelEvent::PartitionRefused, Outcome::Denied(refusal.error()), args);
    hv.note_refused();
    Ok(())
}

/// Create partition `index` of `bundle` from `desc` at `place`, load it,
/// or refuse it (witnessed, printed: the reason comes back).
pub(crate) fn load_partition<A: Arch>(
    hv: &mut Hypervisor<A>,
    bundle: &Bundle<'_>,
    index: u32,
    desc: PartitionDesc,
    place: Placement,
) -> Result<Option<Refusal>, BootError> {
    let id = place.id;
    let vmid = u8::try_from(id.0).map_err(|_| BootError::TooManyPartitions)?;
    let stage2 = Stage2Table::new(&mut hv.arch, &mut hv.frames).ok_or(BootError::OutOfMemory)?;
    // Each agent gets the manifest's memory budget and the runtime's overhead.
    let agents = agent_modules(bundle, index);
    let heap_len = u64::from(desc.wasm_pages)
        .saturating_mul(layout::WASM_PAGE)
        .saturating_add(layout::RUNTIME_HEAP_OVERHEAD)
        .saturating_mul(agents);
    let idx = hv.add_partition(Partition::created(id, desc, vmid, stage2, heap_len));
    if place.at_run_time {
        hv.arch.send_frame(&rvm_abi::control::Outgoing::Name { log: id.0, name: &desc.name });
    }
    let created = hv.kernel_event(id, KernelEvent::PartitionCreate, Outcome::Done, place.created_by);
    let heap_fits = layout::HEAP_IPA.checked_add(heap_len).is_some_and(|end| end <= layout::SNAPSHOT_IPA);
    let key_ok = desc.witness_key_fingerprint.is_none_or(|fp| fp == hv.witness.fingerprint());
    let populated = if !created {
        Err(Refusal::Witness)
    } else if !key_ok {
        Err(Refusal::WitnessKey)
    } else if heap_fits {
        populate(hv, bundle, index, idx)
    } else {
        Err(Refusal::HeapWindow)
    };
    // Memory is reserved at admission: refused if it does not fit.
    let populated = populated.and_then(|digest| reserve_memory(hv, idx).map(|()| digest));
    match populated {
        Ok(digest) if !hv.transition(idx, PartitionState::Loaded, KernelEvent::PartitionLoad, digest) => {
            refuse(hv, idx, Refusal::Witness);
            Ok(Some(Refusal::Witness))
        }
        Ok(_) => {
            let p = &hv.partitions[idx];
            let (name, pages) = (p.desc().name, p.private_frames().len());
            console::hyp_line(
                &mut hv.arch,
                format_args!(
                    "partition {} '{}' loaded: vmid {}, {} private pages, heap window {} KiB",
                    id.0,
                    crate::partition::name_str(&name),
                    vmid,
                    pages,
                    heap_len / 1024
                ),
            );
            Ok(None)
        }
        Err(why) => {
            refuse(hv, idx, why);
            Ok(Some(why))
        }
    }
}

/// Reserve what partition `idx` can ever hold, at its admission (a boot's
/// partition or one a split creates): its [`footprint`] in frames and its
/// share of the EL2 heap; refused, with the numbers on the console, when
/// either does not fit beside what other partitions reserved.
pub(crate) fn reserve_memory<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Result<(), Refusal> {
    let need = footprint(hv, idx);
    match hv.frames.commit(need) {
        Ok(()) => {
            hv.partitions[idx].commit_frames(need);
            commit_heap(hv, idx, crate::memory::quota::partition_bytes(&StoreLimits::DEFAULT))
        }
        Err(free) => {
            let (id, name) = (hv.partitions[idx].id(), hv.partitions[idx].desc().name);
            console::hyp_line(
                &mut hv.arch,
                format_args!(
                    "partition {} '{}' needs up to {} KiB, {} KiB are not reserved",
                    id.0,
                    crate::partition::name_str(&name),
                    need * 4,
                    free * 4
                ),
            );
            Err(Refusal::MemoryBudget)
        }
    }
}

/// Reserve `bytes` more of the EL2 heap for partition `idx`.
fn commit_heap<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, bytes: usize) -> Result<(), Refusal> {
    match hv.heap.commit(bytes) {
        Ok(()) => {
            hv.partitions[idx].commit_heap(bytes);
            Ok(())
        }
        Err(free) => {
            let (id, name) = (hv.partitions[idx].id(), hv.partitions[idx].desc().name);
            console::hyp_line(
                &mut hv.arch,
                format_args!(
                    "partition {} '{}' needs {} KiB more of the hypervisor heap, {} KiB are not reserved",
                    id.0,
                    crate::partition::name_str(&name),
                    bytes / 1024,
                    free / 1024
                ),
            );
            Err(Refusal::HeapBudget)
        }
    }
}

/// Witness and print a refusal, then release what the partition held.
pub(crate) fn refuse<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, why: Refusal) {
    let id = hv.partitions[idx].id();
    let name = hv.partitions[idx].desc().name;
    console::hyp_line(
        &mut hv.arch,
        format_args!("partition {} '{}' refused: {}", id.0, crate::partition::name_str(&name), why.reason()),
    );
    // A refusal is not refused: witnessed here or in the hypervisor's log.
    hv.must_witness(id, KernelEvent::PartitionRefused, Outcome::Denied(why.error()), [0; 16]);
    // Gone, as an evicted partition is: no capability of it stays.
    hv.caps.evict(id);
    hv.domains.forget_partition(idx);
    crate::load::release(hv, idx);
    hv.partitions[idx].move_to(PartitionState::Evicted);
    hv.note_refused();
}

/// Scrub and return every frame the partition holds: private pages, heap,
/// its snapshot, its own image, and its stage-2 tables (all but an empty
/// root, which stays so the partition's table remains valid to walk).
pub(crate) fn release<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) {
    let committed = hv.partitions[idx].take_frames_committed();
    hv.frames.uncommit(committed);
    let heap = hv.partitions[idx].take_heap_committed();
    hv.heap.uncommit(heap);
    let frames = hv.partitions[idx].take_private_frames();
    for pa in frames {
        hv.scrub_and_free(pa);
    }
    let heap = hv.partitions[idx].take_heap_pages();
    for (_, pa) in heap {
        hv.scrub_and_free(pa);
    }
    // The own image's frames were among the private ones.
    hv.partitions[idx].forget_own_image();
    hv.partitions[idx].forget_restore_window();
    if let Some(ck) = hv.partitions[idx].take_snapshot() {
        ck.release(&mut hv.arch, &mut hv.frames);
    }
    if let Some(empty) = crate::memory::stage2::Stage2Table::new(&mut hv.arch, &mut hv.frames) {
        let old = hv.partitions[idx].replace_stage2(empty);
        old.destroy(&mut hv.arch, &mut hv.frames);
        let vmid = hv.partitions[idx].vmid();
        hv.arch.flush_stage2(vmid);
    }
}

/// Map the image, the module and the boot-info page; install capabilities.
/// Returns the digest witnessed with `PartitionLoad`.
fn populate<A: Arch>(hv: &mut Hypervisor<A>, bundle: &Bundle<'_>, index: u32, idx: usize) -> Result<[u8; 16], Refusal> {
    // The guest image: the partition's own raw program, or the shared runtime.
    let own = bundle.owned(EntryKind::GuestImage, index).next();
    let entry = match own {
        Some(e) => {
            let img = match SharedImage::load(&mut hv.arch, &mut hv.frames, e.data) {
                Ok(img) => img,
                Err(crate::load::image::ImageError::Elf(err)) => return Err(Refusal::Image(err)),
                Err(crate::load::image::ImageError::OutOfMemory) => return Err(Refusal::OutOfMemory),
            };
            let p = &mut hv.partitions[idx];
            // A private image: its pages belong to this partition alone; the
            // pristine copies of its writable pages are kept for restarts.
            for page in &img.pages {
                p.add_private_frame(page.pa);
            }
            let entry = img.entry;
            let mapped = p.map_image(&mut hv.arch, &mut hv.frames, &img);
            p.keep_own_image(img);
            mapped.map_err(|_| Refusal::OutOfMemory)?;
            entry
        }
        None => {
            let Hypervisor { arch, frames, partitions, runtime, .. } = hv;
            let Some(rt) = runtime.as_ref() else { return Err(Refusal::NoImage) };
            let p = &mut partitions[idx];
            p.map_image(arch, frames, rt)
                .map_err(|_| Refusal::OutOfMemory)?;
            rt.entry
        }
    };
    // The agent's module, read-only at WASM_IPA.
    let module = bundle.owned(EntryKind::Wasm, index).next();
    let mut digest_src: &[u8] = &[];
    let (wasm_ipa, wasm_len) = match module {
        Some(m) => {
            let len = m.data.len() as u64;
            if len > layout::WASM_MAX_LEN {
                return Err(Refusal::ModuleTooLarge);
            }
            map_bytes(hv, idx, Ipa::new(layout::WASM_IPA), m.data, S2Perm::ReadOnly)?;
            digest_src = m.data;
            (layout::WASM_IPA, len)
        }
        None if own.is_some() => (0, 0),
        None => return Err(Refusal::NoModule),
    };
    // Its agents: slot 0 is the module above (or the raw image); more
    // modules follow it in the WASM window, listed by the agent table.
    let pid = hv.partitions[idx].id();
    hv.domains.register(idx, pid);
    if own.is_none() {
        map_more_agents(hv, bundle, index, idx, wasm_len)?;
    }
    // The boot-info page (content written once channels are connected).
    let page = hv.frames.alloc().ok_or(Refusal::OutOfMemory)?;
    hv.arch.phys_zero(page, PAGE_BYTES);
    {
        let p = &mut hv.partitions[idx];
        p.add_private_frame(page);
        p.stage2_mut()
            .map(&mut hv.arch, &mut hv.frames, Ipa::new(layout::BOOTINFO_IPA), page, S2Perm::ReadOnly, MemType::Normal)
            .map_err(|_| Refusal::OutOfMemory)?;
        p.start_at(entry);
        p.set_wasm(wasm_ipa, wasm_len);
    }
    // Capabilities: the authority key first (bound to what follows), the
    // partition's own state store, then its table.
    let id = hv.partitions[idx].id();
    for e in bundle.owned(EntryKind::AuthorityKey, index) {
        let mut key = [0u8; 32];
        key.copy_from_slice(e.data);
        hv.caps.bind_authority(id, key);
    }
    let store = CapDesc {
        kind: ObjectKind::StateStore,
        rights: Rights::READ | Rights::WRITE,
        tiers: tiers_for(Rights::READ | Rights::WRITE, 1),
        object: id.0,
        quota: 0,
        expires_at: 0,
        window_start: 0,
        window_len: 0,
        resource_digest: [0; 16],
    };
    install(hv, idx, &store)?;
    let mut caps = Vec::new();
    for e in bundle.owned(EntryKind::Capability, index) {
        let desc = CapDesc::from_bytes(e.data).ok_or(Refusal::BadCapability)?;
        caps.push((install(hv, idx, &desc)?, desc));
    }
    let claims = crate::tool_calls::claims_of(bundle, index, &caps).map_err(Refusal::BadClaim)?;
    hv.tools.set_claims(idx, claims);
    if own.is_none() && hv.domains.is_multi_agent(idx) {
        // Several agents: the load record binds every module, in slot order.
        let modules: Vec<&[u8]> = bundle.owned(EntryKind::Wasm, index).map(|e| e.data).collect();
        return Ok(rvm_state::digest::of_parts(&modules));
    }
    Ok(rvm_state::digest::of_parts(&[digest_src]))
}

/// How many agents partition `index` runs: one per `Wasm` entry, at least
/// one (a raw guest image is one agent; its `Wasm` entry is its input).
fn agent_modules(bundle: &Bundle<'_>, index: u32) -> u64 {
    if bundle.owned(EntryKind::GuestImage, index).next().is_some() {
        return 1;
    }
    (bundle.owned(EntryKind::Wasm, index).count() as u64).max(1)
}

/// Map the modules of agents 1.. after slot 0's (`first_len` bytes) in the
/// WASM window, register them, and write the agent table page. A single
/// agent has a table (of one) only when coherence is evaluated, so its
/// runtime reaches the turn boundaries where the kernel moves agents.
fn map_more_agents<A: Arch>(hv: &mut Hypervisor<A>, bundle: &Bundle<'_>, index: u32, idx: usize, first_len: u64) -> Result<(), Refusal> {
    let modules: Vec<&[u8]> = bundle.owned(EntryKind::Wasm, index).map(|e| e.data).collect();
    if modules.len() < 2 && !hv.domains.evaluating() {
        return Ok(());
    }
    if modules.len() > MAX_AGENTS_PER_PARTITION {
        return Err(Refusal::TooManyAgents);
    }
    let pid = hv.partitions[idx].id();
    let mut table = Vec::with_capacity(modules.len());
    let first = hv.domains.agent_at(idx, AgentSlot::FIRST).map_or(0, |a| a.id.0);
    table.push(AgentEntry { module_ipa: layout::WASM_IPA, module_len: first_len, agent_id: first, restore_len: 0 });
    let mut at = layout::WASM_IPA + first_len.next_multiple_of(PAGE_SIZE);
    for m in modules.iter().skip(1) {
        let len = m.len() as u64;
        let end = at.checked_add(len).ok_or(Refusal::TooManyAgents)?;
        if end > layout::WASM_IPA + layout::WASM_MAX_LEN {
            return Err(Refusal::TooManyAgents);
        }
        map_bytes(hv, idx, Ipa::new(at), m, S2Perm::ReadOnly)?;
        let agent = hv.domains.register(idx, pid);
        table.push(AgentEntry { module_ipa: at, module_len: len, agent_id: agent.id.0, restore_len: 0 });
        at = end.next_multiple_of(PAGE_SIZE);
    }
    let mut page = [0u8; PAGE_BYTES];
    AgentTable::write(&mut page, &table);
    map_bytes(hv, idx, Ipa::new(layout::AGENTS_IPA), &page, S2Perm::ReadOnly)?;
    hv.domains.mark_table(idx);
    Ok(())
}

/// Copy `data` into fresh frames mapped at `base` with `perm`.
pub(crate) fn map_bytes<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, base: Ipa, data: &[u8], perm: S2Perm) -> Result<(), Refusal> {
    let p = &mut hv.partitions[idx];
    for (n, chunk) in data.chunks(PAGE_BYTES).enumerate() {
        let pa = hv.frames.alloc().ok_or(Refusal::OutOfMemory)?;
        p.add_private_frame(pa);
        hv.arch.phys_zero(pa, PAGE_BYTES);
        hv.arch.phys_write(pa, chunk);
        let ipa = Ipa::new(base.raw() + n as u64 * PAGE_SIZE);
        p.stage2_mut()
            .map(&mut hv.arch, &mut hv.frames, ipa, pa, perm, MemType::Normal)
            .map_err(|_| Refusal::OutOfMemory)?;
    }
    Ok(())
}

/// Per-right tiers for `rights`, all at `tier`.
pub(crate) fn tiers_for(rights: Rights, tier: u8) -> [u8; 7] {
    let mut t = [0u8; 7];
    for (i, (r, _)) in rvm_abi::rights::RIGHT_NAMES.iter().enumerate() {
        if rights.contains(*r) {
            t[i] = tier;
        }
    }
    t
}

/// Where the boot handles of a coherence bundle's partitions go: partition
/// `n`'s from slot `(n - 1) × stride` of its table, so the slots of
/// different partitions do not meet and an agent moved between them
/// (a merge) keeps its handles at the same slots
/// ([`crate::caps::Caps::transplant`]). Without coherence, handles fill
/// each table from slot 0 as always.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandleSpread {
    /// Slots per partition's range.
    pub stride: u16,
}

impl HandleSpread {
    pub(crate) const COHERENCE: HandleSpread = HandleSpread { stride: 16 };

    /// The slot for partition `idx`'s next boot handle, or `None`: fill
    /// as usual (no coherence, a raw image, or beyond its range).
    fn slot_for<A: Arch>(self, hv: &Hypervisor<A>, idx: usize) -> Option<u16> {
        let p = &hv.partitions[idx];
        if !hv.domains.evaluating() || p.own_image().is_some() {
            return None;
        }
        let n = u16::try_from(p.boot_handles().len()).ok().filter(|&n| n < self.stride)?;
        let base = u16::try_from(p.id().0.checked_sub(1)?).ok()?.checked_mul(self.stride)?;
        let at = base.checked_add(n)?;
        (at < hv.caps.space().policy().slots_per_partition).then_some(at)
    }
}

/// Install a capability and remember its handle for the boot-info page.
fn install<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, desc: &CapDesc) -> Result<u64, Refusal> {
    install_for(hv, idx, desc, None)
}

/// [`install`], listed for one agent (`Some(slot)`) or for all of them.
/// A single-agent partition lists every handle for all (tag 0).
fn install_for<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, desc: &CapDesc, slot: Option<AgentSlot>) -> Result<u64, Refusal> {
    let agent = match slot {
        Some(s) if hv.domains.is_multi_agent(idx) => u8::try_from(s.0 + 1).map_err(|_| Refusal::BadCapability)?,
        _ => 0,
    };
    let id = hv.partitions[idx].id();
    let now = hv.arch.now_ns();
    // Room for the record first: a capability is never installed unwitnessed.
    let mut held = hv.hold(id, 1).ok_or(Refusal::Witness)?;
    let handle = match HandleSpread::COHERENCE.slot_for(hv, idx) {
        Some(at) => hv.caps.install_at(id, desc, at),
        None => hv.caps.install(id, desc, now),
    };
    let handle = match handle {
        Ok(h) => h,
        Err(_) => {
            hv.release(held);
            return Err(Refusal::BadCapability);
        }
    };
    let mut rec = rvm_abi::WitnessRecord::new(
        rvm_abi::WitnessOp::Event(KernelEvent::CapInstall),
        Outcome::Done,
        id.0,
    );
    rec.cap = handle.witness_id();
    rec.args = rvm_state::digest::of_parts(&[&desc.to_bytes()]);
    rec.timestamp = now;
    hv.held_record(&mut held, rec);
    hv.partitions[idx].add_boot_handle(HandleInfo {
        raw: handle.to_raw(),
        kind: desc.kind as u8,
        rights: desc.rights.bits(),
        agent,
    });
    Ok(handle.to_raw())
}

/// Create a channel between two partitions and give each end a handle.
/// The description's partition indices count from `base` (the position
/// of its bundle's first partition).
pub(crate) fn connect<A: Arch>(hv: &mut Hypervisor<A>, bundle: &Bundle<'_>, c: ChannelDesc, base: usize) {
    let (Some(a), Some(b)) = (index_of(hv, bundle, c.a, base), index_of(hv, bundle, c.b, base)) else { return };
    if a == b || !hv.partitions[a].is_runnable() || !hv.partitions[b].is_runnable() {
        return;
    }
    let object = hv.channels.len() as u32;
    let cap = usize::try_from(c.capacity).unwrap_or(CHANNEL_CAPACITY).clamp(1, CHANNEL_CAPACITY);
    // Each end's receive queue is its own: reserved from its heap share.
    for idx in [a, b] {
        if let Err(why) = commit_heap(hv, idx, crate::memory::quota::queue_bytes(cap)) {
            refuse(hv, idx, why);
            return;
        }
    }
    let channel = Channel::new(hv.partitions[a].id(), hv.partitions[b].id(), cap);
    hv.add_channel(channel);
    let desc = channel_cap(object);
    for idx in [a, b] {
        if let Err(why) = install_for(hv, idx, &desc, Some(AgentSlot::FIRST)) {
            refuse(hv, idx, why);
        }
    }
}

/// The capability each end of a bundle channel starts with: send and
/// receive at P1, no quota, window or expiry.
fn channel_cap(object: u32) -> CapDesc {
    CapDesc {
        kind: ObjectKind::Channel,
        rights: Rights::READ | Rights::WRITE,
        tiers: tiers_for(Rights::READ | Rights::WRITE, 1),
        object,
        quota: 0,
        expires_at: 0,
        window_start: 0,
        window_len: 0,
        resource_digest: [0; 16],
    }
}

/// Create every channel and agent channel of the bundle, whose first
/// partition is at `base`.
pub(crate) fn connect_channels<A: Arch>(hv: &mut Hypervisor<A>, bundle: &Bundle<'_>, base: usize) {
    for e in bundle.entries().filter(|e| e.kind == EntryKind::Channel) {
        if let Some(c) = ChannelDesc::from_bytes(e.data) {
            connect(hv, bundle, c, base);
        }
    }
    for e in bundle.entries().filter(|e| e.kind == EntryKind::AgentChannel) {
        if let Some(c) = AgentChannelDesc::from_bytes(e.data) {
            connect_agents(hv, bundle, c, base);
        }
    }
}

/// Create a channel between two agents and give each end's partition a
/// handle listed for that agent. A channel naming an agent that does not
/// exist, or the same agent twice, is left out.
pub(crate) fn connect_agents<A: Arch>(hv: &mut Hypervisor<A>, bundle: &Bundle<'_>, c: AgentChannelDesc, base: usize) {
    let end = |hv: &Hypervisor<A>, r: AgentRef| {
        let idx = index_of(hv, bundle, r.partition, base)?;
        let slot = AgentSlot(u16::try_from(r.slot).ok()?);
        hv.domains.agent_at(idx, slot)?;
        hv.partitions[idx].is_runnable().then_some((idx, Endpoint { partition: hv.partitions[idx].id(), slot }))
    };
    let (Some((a, ea)), Some((b, eb))) = (end(hv, c.a), end(hv, c.b)) else { return };
    if ea == eb {
        return;
    }
    let object = hv.channels.len() as u32;
    let cap = usize::try_from(c.capacity).unwrap_or(CHANNEL_CAPACITY).clamp(1, CHANNEL_CAPACITY);
    hv.add_channel(Channel::between(ea, eb, cap));
    let desc = channel_cap(object);
    for (idx, e) in [(a, ea), (b, eb)] {
        if let Err(why) = install_for(hv, idx, &desc, Some(e.slot)) {
            refuse(hv, idx, why);
        }
    }
}

/// Bundle partition index → position in `hv.partitions`: its id's
/// position, counted from `base` (where an admission's first partition
/// is). A vacancy is no end.
fn index_of<A: Arch>(hv: &Hypervisor<A>, bundle: &Bundle<'_>, bundle_index: u32, base: usize) -> Option<usize> {
    if bundle_index >= bundle.partition_count() {
        return None;
    }
    let idx = usize::try_from(bundle.partition_id(bundle_index)).ok()?.checked_sub(1)?.checked_add(base)?;
    (idx < hv.partitions.len() && !hv.partitions[idx].is_vacant()).then_some(idx)
}

/// Write the boot-info page of every loaded partition from position `from` on.
pub(crate) fn write_all_boot_info<A: Arch>(hv: &mut Hypervisor<A>, from: usize) {
    for idx in from..hv.partitions.len() {
        if hv.partitions[idx].state() == PartitionState::Loaded {
            write_boot_info(hv, idx, RestoreInfo::NONE);
        }
    }
}

/// Write partition `idx`'s boot-info page: its identity, module, heap,
/// handles, how often it was restarted, and the snapshot to resume from.
pub(crate) fn write_boot_info<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, restore: RestoreInfo) {
    let p = &hv.partitions[idx];
    let Some(t) = p.stage2().translate(&hv.arch, Ipa::new(layout::BOOTINFO_IPA)) else { return };
    let mut page = [0u8; PAGE_BYTES];
    let info = BootInfo {
        partition: p.id().0,
        handle_count: u32::try_from(p.boot_handles().len().min(rvm_abi::bootinfo::MAX_HANDLES)).unwrap_or(0),
        wasm_ipa: p.wasm().0,
        wasm_len: p.wasm().1,
        heap_ipa: p.heap().base.raw(),
        heap_len: p.heap().len,
        wasm_pages: p.desc().wasm_pages,
        restarts: p.restarts(),
        fuel_per_slice: p.desc().fuel_per_slice,
        name: p.desc().name,
    };
    info.write(&mut page);
    for (n, h) in p.boot_handles().iter().enumerate() {
        BootInfo::write_handle(&mut page, n, *h);
    }
    restore.write(&mut page);
    if hv.domains.has_table(idx) {
        let agents = hv.domains.agent_count(idx);
        rvm_abi::bootinfo::write_agent_count(&mut page, u32::try_from(agents).unwrap_or(0));
    }
    let pa: PhysAddr = t.pa;
    hv.arch.phys_write(pa, &page);
}
