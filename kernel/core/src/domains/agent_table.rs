//! A partition's agent table as its runtime reads it: the page at
//! `layout::AGENTS_IPA` in guest memory ([`AgentTable`]), and the agents'
//! modules it points to. A move reads the mover's module from it, marks the
//! slot the mover left, and lists an arrival in its target's table.

use alloc::vec::Vec;

use rvm_abi::bootinfo::{layout, AgentEntry, AgentTable};
use rvm_coherence::AgentId;

use crate::arch::Arch;
use crate::channel::AgentSlot;
use crate::memory::addr::{Ipa, PAGE_BYTES, PAGE_SIZE};
use crate::state::Hypervisor;

/// Read `len` bytes of partition `idx`'s memory at `ipa`.
fn read_guest_bytes<A: Arch>(hv: &Hypervisor<A>, idx: usize, ipa: u64, len: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    let mut out = alloc::vec![0u8; len];
    let mut done = 0usize;
    while done < len {
        let at = Ipa::new(ipa.checked_add(done as u64)?);
        let t = hv.partitions[idx].stage2().translate(&hv.arch, at)?;
        let take = (len - done).min(PAGE_BYTES - usize::try_from(at.page_offset()).ok()?);
        hv.arch.phys_read(t.pa, &mut out[done..done + take]);
        done += take;
    }
    Some(out)
}

/// Partition `idx`'s agent table (empty if it has none).
pub(super) fn read<A: Arch>(hv: &Hypervisor<A>, idx: usize) -> Vec<AgentEntry> {
    read_guest_bytes(hv, idx, layout::AGENTS_IPA, PAGE_SIZE)
        .map(|page| (0..AgentTable::count(&page)).filter_map(|s| AgentTable::read(&page, s)).collect())
        .unwrap_or_default()
}

/// The module of agent `agent`, listed at `slot` of partition `idx`'s table.
pub(super) fn module_of<A: Arch>(hv: &Hypervisor<A>, idx: usize, slot: AgentSlot, agent: AgentId) -> Option<Vec<u8>> {
    let entry = read(hv, idx).get(usize::from(slot.0)).copied().filter(|e| e.agent_id == agent.0)?;
    read_guest_bytes(hv, idx, entry.module_ipa, entry.module_len)
}

/// Write `entries` as partition `idx`'s agent table (if it has one mapped).
pub(super) fn write<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, entries: &[AgentEntry]) {
    if let Some(t) = hv.partitions[idx].stage2().translate(&hv.arch, Ipa::new(layout::AGENTS_IPA)) {
        let mut page = [0u8; PAGE_BYTES];
        AgentTable::write(&mut page, entries);
        hv.arch.phys_write(t.pa, &page);
    }
}

/// Change the entry at `slot` of partition `idx`'s table in place.
fn edit<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, slot: AgentSlot, change: impl FnOnce(&mut AgentEntry)) {
    let Some(t) = hv.partitions[idx].stage2().translate(&hv.arch, Ipa::new(layout::AGENTS_IPA)) else { return };
    let mut page = [0u8; PAGE_BYTES];
    hv.arch.phys_read(t.pa, &mut page);
    let mut entries: Vec<_> = (0..AgentTable::count(&page)).filter_map(|s| AgentTable::read(&page, s)).collect();
    if let Some(e) = entries.get_mut(usize::from(slot.0)) {
        change(e);
    }
    AgentTable::write(&mut page, &entries);
    hv.arch.phys_write(t.pa, &page);
}

/// Mark `slot` of partition `idx`'s table as moved away (module length 0),
/// so a restarted runtime does not start that agent again.
pub(super) fn vacate<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, slot: AgentSlot) {
    edit(hv, idx, slot, |e| e.module_len = 0);
}

/// The agent at `slot` of partition `idx` was restored: a restart starts it
/// from its module (restore length 0), as every agent of a partition with
/// several.
pub(super) fn restored<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, slot: AgentSlot) {
    edit(hv, idx, slot, |e| e.restore_len = 0);
}
