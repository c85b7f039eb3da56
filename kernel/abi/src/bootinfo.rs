//! What a partition's guest runtime finds when it starts.
//!
//! The hypervisor enters the runtime at its ELF entry point with `x0` = IPA of
//! a 4 KiB boot-info page (read-only to the guest) laid out as below, all
//! little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic [`MAGIC`] |
//! | 8 | 4 | partition id |
//! | 12 | 4 | number of capability handles listed |
//! | 16 | 8 | IPA of the agent's WASM module |
//! | 24 | 8 | its length in bytes |
//! | 32 | 8 | IPA of the start of the runtime's heap |
//! | 40 | 8 | heap length in bytes |
//! | 48 | 4 | WASM memory budget, in 64 KiB pages |
//! | 52 | 4 | restart count (0 on first start; each restart — F1, F2, unfence — adds one) |
//! | 56 | 8 | fuel per slice (0 = none) |
//! | 64 | 32 | partition name, NUL-padded |
//! | 96 | 16 × n | handles: raw handle u64, object kind u8, rights u8, agent u8 ([`HandleInfo::agent`]), 5 reserved |
//! | 4064 | 32 | [`RestoreInfo`]: the snapshot to resume from, if any |

/// `RVMINF1` and a NUL, read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RVMINF1\0");
pub const HANDLES_OFFSET: usize = 96;
pub const HANDLE_ENTRY_LEN: usize = 16;
/// Where the [`RestoreInfo`] block starts: the last 32 bytes of the page.
pub const RESTORE_OFFSET: usize = 4096 - RESTORE_LEN;
/// Length of the [`RestoreInfo`] block.
pub const RESTORE_LEN: usize = 32;
/// Most handles listed on the page (the table ends where [`RestoreInfo`] starts).
pub const MAX_HANDLES: usize = (RESTORE_OFFSET - HANDLES_OFFSET) / HANDLE_ENTRY_LEN;

/// A handle the partition starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleInfo {
    pub raw: u64,
    pub kind: u8,
    pub rights: u8,
    /// Which agent of the partition the handle is for: 0 = every agent (a
    /// single-agent partition's handles, the partition's state store),
    /// `s + 1` = only the agent in slot `s` (its channels).
    pub agent: u8,
}

/// The boot-info page, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    pub partition: u32,
    pub handle_count: u32,
    pub wasm_ipa: u64,
    pub wasm_len: u64,
    pub heap_ipa: u64,
    pub heap_len: u64,
    pub wasm_pages: u32,
    pub restarts: u32,
    pub fuel_per_slice: u64,
    pub name: [u8; 32],
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

impl BootInfo {
    pub fn write(&self, page: &mut [u8]) {
        page[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        page[8..12].copy_from_slice(&self.partition.to_le_bytes());
        page[12..16].copy_from_slice(&self.handle_count.to_le_bytes());
        page[16..24].copy_from_slice(&self.wasm_ipa.to_le_bytes());
        page[24..32].copy_from_slice(&self.wasm_len.to_le_bytes());
        page[32..40].copy_from_slice(&self.heap_ipa.to_le_bytes());
        page[40..48].copy_from_slice(&self.heap_len.to_le_bytes());
        page[48..52].copy_from_slice(&self.wasm_pages.to_le_bytes());
        page[52..56].copy_from_slice(&self.restarts.to_le_bytes());
        page[56..64].copy_from_slice(&self.fuel_per_slice.to_le_bytes());
        page[64..96].copy_from_slice(&self.name);
    }

    pub fn read(page: &[u8]) -> Option<Self> {
        if page.len() < HANDLES_OFFSET || u64_at(page, 0) != MAGIC {
            return None;
        }
        let mut name = [0u8; 32];
        name.copy_from_slice(&page[64..96]);
        Some(Self {
            partition: u32_at(page, 8),
            handle_count: u32_at(page, 12),
            wasm_ipa: u64_at(page, 16),
            wasm_len: u64_at(page, 24),
            heap_ipa: u64_at(page, 32),
            heap_len: u64_at(page, 40),
            wasm_pages: u32_at(page, 48),
            restarts: u32_at(page, 52),
            fuel_per_slice: u64_at(page, 56),
            name,
        })
    }

    pub fn write_handle(page: &mut [u8], n: usize, h: HandleInfo) -> bool {
        if n >= MAX_HANDLES {
            return false;
        }
        let o = HANDLES_OFFSET + n * HANDLE_ENTRY_LEN;
        page[o..o + 8].copy_from_slice(&h.raw.to_le_bytes());
        page[o + 8] = h.kind;
        page[o + 9] = h.rights;
        page[o + 10] = h.agent;
        true
    }

    pub fn read_handle(page: &[u8], n: usize) -> Option<HandleInfo> {
        if n >= MAX_HANDLES {
            return None;
        }
        let o = HANDLES_OFFSET + n * HANDLE_ENTRY_LEN;
        Some(HandleInfo { raw: u64_at(page, o), kind: page[o + 8], rights: page[o + 9], agent: page[o + 10] })
    }

    pub fn name(&self) -> &str {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(32);
        core::str::from_utf8(&self.name[..end]).unwrap_or("?")
    }
}

/// What the guest runtime resumes from after an F2 rollback or an operator
/// unfence: a snapshot the hypervisor kept, mapped read-only into the
/// partition. All zero on a fresh start or an F1 restart (pristine image,
/// committed state kept).
///
/// | offset (in the block) | size | field |
/// |---|---|---|
/// | 0 | 8 | IPA of the snapshot image (inside [`layout::SNAPSHOT_IPA`]'s window) |
/// | 8 | 8 | its length in bytes (0 = nothing to restore) |
/// | 16 | 8 | the snapshot's id (the `x1` its `Snapshot` call returned) |
/// | 24 | 4 | rollbacks so far (F2 restores and unfences) |
/// | 28 | 4 | agents in the [`AgentTable`] (0 = one agent: the module above); not part of this struct, see [`agent_count`] |
///
/// The image is the agent engine's snapshot format exactly as the runtime
/// handed it over; the committed state store is restored by the hypervisor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreInfo {
    pub image_ipa: u64,
    pub image_len: u64,
    pub snapshot_id: u64,
    pub rollbacks: u32,
}

impl RestoreInfo {
    /// Nothing to restore.
    pub const NONE: RestoreInfo = RestoreInfo { image_ipa: 0, image_len: 0, snapshot_id: 0, rollbacks: 0 };

    /// Whether there is a snapshot to resume from.
    pub const fn is_restore(&self) -> bool {
        self.image_len != 0
    }

    /// Write the block into a boot-info page.
    pub fn write(&self, page: &mut [u8]) {
        let b = &mut page[RESTORE_OFFSET..RESTORE_OFFSET + RESTORE_LEN];
        b[0..8].copy_from_slice(&self.image_ipa.to_le_bytes());
        b[8..16].copy_from_slice(&self.image_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.snapshot_id.to_le_bytes());
        b[24..28].copy_from_slice(&self.rollbacks.to_le_bytes());
        b[28..32].copy_from_slice(&[0; 4]);
    }

    /// Read the block from a boot-info page (`None` if the page is short).
    pub fn read(page: &[u8]) -> Option<Self> {
        let b = page.get(RESTORE_OFFSET..RESTORE_OFFSET + RESTORE_LEN)?;
        Some(Self {
            image_ipa: u64_at(b, 0),
            image_len: u64_at(b, 8),
            snapshot_id: u64_at(b, 16),
            rollbacks: u32_at(b, 24),
        })
    }
}

/// Offset in the boot-info page of the agent count (see [`agent_count`]).
pub const AGENT_COUNT_OFFSET: usize = RESTORE_OFFSET + 28;

/// How many agents the partition's [`AgentTable`] lists: 0 for a
/// single-agent partition (no table is mapped; the boot-info page's module
/// is the agent).
pub fn agent_count(page: &[u8]) -> u32 {
    page.get(AGENT_COUNT_OFFSET..AGENT_COUNT_OFFSET + 4).map_or(0, |b| u32_at(b, 0))
}

/// Write the agent count (after [`RestoreInfo::write`], which clears it).
pub fn write_agent_count(page: &mut [u8], count: u32) {
    page[AGENT_COUNT_OFFSET..AGENT_COUNT_OFFSET + 4].copy_from_slice(&count.to_le_bytes());
}

/// The agent table of a partition with several agents: one read-only page at
/// [`layout::AGENTS_IPA`], mapped only when the boot-info page's
/// [`agent_count`] is not 0.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic [`AgentTable::MAGIC`] |
/// | 8 | 4 | number of agents |
/// | 12 | 4 | reserved, 0 |
/// | 16 + 32 × s | 32 | slot `s`: module IPA u64, module length u64, kernel agent id u32, 4 reserved, restore length u64 |
///
/// Modules lie one after the other (page-aligned) in the WASM window; slot 0
/// is also the boot-info page's module.
///
/// In a bundle with [`crate::bundle::BOOT_FLAG_COHERENCE`], every partition
/// of the shared runtime has a table (a single agent: one entry), so its
/// runtime reaches the turn boundaries where the kernel moves agents.
/// An agent that **arrives** at run time (a coherence merge) is appended
/// with a nonzero restore length: its snapshot image lies at
/// [`layout::SNAPSHOT_IPA`] until its first `AgentSwitch`, and the
/// runtime restores it from there when it admits it.
pub struct AgentTable;

/// One agent as the [`AgentTable`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentEntry {
    pub module_ipa: u64,
    pub module_len: u64,
    /// The kernel-wide agent id (as `rvm-loader status` and the witness
    /// log name it).
    pub agent_id: u32,
    /// Nonzero for an agent arriving at run time: the length of its
    /// snapshot image at [`layout::SNAPSHOT_IPA`], to restore it from.
    pub restore_len: u64,
}

impl AgentTable {
    pub const MAGIC: u64 = 0x0031_5447_414d_5652; // "RVMAGT1" little-endian
    pub const HEADER_LEN: usize = 16;
    pub const ENTRY_LEN: usize = 32;
    /// Most entries the page holds.
    pub const MAX: usize = (4096 - Self::HEADER_LEN) / Self::ENTRY_LEN;

    /// Write the table into `page` (at most [`AgentTable::MAX`] entries).
    pub fn write(page: &mut [u8], agents: &[AgentEntry]) {
        let n = agents.len().min(Self::MAX);
        page[0..8].copy_from_slice(&Self::MAGIC.to_le_bytes());
        page[8..12].copy_from_slice(&u32::try_from(n).unwrap_or(0).to_le_bytes());
        page[12..16].copy_from_slice(&[0; 4]);
        for (s, a) in agents.iter().take(n).enumerate() {
            let o = Self::HEADER_LEN + s * Self::ENTRY_LEN;
            page[o..o + 8].copy_from_slice(&a.module_ipa.to_le_bytes());
            page[o + 8..o + 16].copy_from_slice(&a.module_len.to_le_bytes());
            page[o + 16..o + 20].copy_from_slice(&a.agent_id.to_le_bytes());
            page[o + 20..o + 24].copy_from_slice(&[0; 4]);
            page[o + 24..o + 32].copy_from_slice(&a.restore_len.to_le_bytes());
        }
    }

    /// Agent `slot` from a table page (`None`: bad magic or no such slot).
    pub fn read(page: &[u8], slot: usize) -> Option<AgentEntry> {
        if page.len() < Self::HEADER_LEN || u64_at(page, 0) != Self::MAGIC {
            return None;
        }
        let n = usize::try_from(u32_at(page, 8)).ok()?;
        if slot >= n.min(Self::MAX) {
            return None;
        }
        let o = Self::HEADER_LEN + slot * Self::ENTRY_LEN;
        Some(AgentEntry {
            module_ipa: u64_at(page, o),
            module_len: u64_at(page, o + 8),
            agent_id: u32_at(page, o + 16),
            restore_len: u64_at(page, o + 24),
        })
    }

    /// How many agents the table lists (0 for a bad magic).
    pub fn count(page: &[u8]) -> usize {
        if page.len() < Self::HEADER_LEN || u64_at(page, 0) != Self::MAGIC {
            return 0;
        }
        usize::try_from(u32_at(page, 8)).map_or(0, |n| n.min(Self::MAX))
    }
}

/// The guest-physical address map every partition sees.
///
/// ```text
/// 0x0000_0000 .. 0x4000_0000   never mapped: any access is a stage-2 fault
/// 0x4000_0000 ..               the guest image's ELF segments, as linked
///                              (the shared runtime: text read-only+exec, one
///                              physical copy; data/bss private, read-write)
/// 0x8000_0000                  the boot-info page (read-only)
/// 0x8000_1000 .. +16 MiB       the agent's WASM module (read-only); with
///                              several agents, their modules one after
///                              the other, page-aligned
/// 0x8100_1000                  the agent table (read-only), only in a
///                              partition with several agents
/// 0x9000_0000 .. +heap_len     the runtime's heap (read-write); must end
///                              at or below 0xC000_0000
/// 0xC000_0000 .. 0x1_0000_0000 a snapshot being restored (read-only,
///                              mapped only while the runtime restores it)
/// ```
pub mod layout {
    /// Lowest IPA a guest image may be linked at.
    pub const IMAGE_BASE: u64 = 0x4000_0000;
    /// Highest IPA (exclusive) a guest image may occupy.
    pub const IMAGE_LIMIT: u64 = 0x8000_0000;
    pub const BOOTINFO_IPA: u64 = 0x8000_0000;
    pub const WASM_IPA: u64 = 0x8000_1000;
    pub const WASM_MAX_LEN: u64 = 16 << 20;
    /// The [`AgentTable`](super::AgentTable) page, right after the WASM window.
    pub const AGENTS_IPA: u64 = WASM_IPA + WASM_MAX_LEN;
    pub const HEAP_IPA: u64 = 0x9000_0000;
    /// Heap the runtime gets beyond the agent's WASM memory budget.
    pub const RUNTIME_HEAP_OVERHEAD: u64 = 2 << 20;
    /// Size of a WASM page.
    pub const WASM_PAGE: u64 = 64 << 10;
    /// Where a snapshot to restore is mapped (read-only). The heap window
    /// must end at or below it.
    pub const SNAPSHOT_IPA: u64 = 0xC000_0000;
    /// Largest snapshot image the window holds.
    pub const SNAPSHOT_MAX_LEN: u64 = 0x4000_0000;
}

/// Exit codes a guest runtime passes to the `Exit` hypercall. Codes below
/// `REFUSED_BASE` are the agent's own; the others say why the runtime gave up.
pub mod exit {
    /// The agent finished normally.
    pub const OK: u64 = 0;
    /// First runtime-defined code.
    pub const REFUSED_BASE: u64 = 0x100;
    /// The WASM module failed validation.
    pub const MODULE_INVALID: u64 = 0x100;
    /// The module imports something RVM does not provide.
    pub const IMPORT_UNKNOWN: u64 = 0x101;
    /// The module's memory exceeds the partition's budget.
    pub const MEMORY_BUDGET: u64 = 0x102;
    /// The agent trapped (unreachable, out-of-bounds access, ...).
    pub const TRAP: u64 = 0x103;
    /// The guest runtime panicked.
    pub const RUNTIME_PANIC: u64 = 0x104;
    /// The module has no entry export.
    pub const NO_ENTRY: u64 = 0x105;
    /// The snapshot named in the boot-info page could not be restored.
    pub const RESTORE_FAILED: u64 = 0x106;

    /// Whether the code means the module was refused before it ran.
    pub const fn is_refusal(code: u64) -> bool {
        matches!(code, MODULE_INVALID | IMPORT_UNKNOWN | MEMORY_BUDGET | NO_ENTRY)
    }

    /// Whether the code says the agent or its runtime failed while running
    /// (a trap, a panic, a failed restore): a fault the recovery policy
    /// answers (F1 restart, escalating), not a normal end.
    pub const fn is_failure(code: u64) -> bool {
        matches!(code, TRAP | RUNTIME_PANIC | RESTORE_FAILED)
    }

    /// A short reason for a runtime-defined code.
    pub const fn reason(code: u64) -> &'static str {
        match code {
            OK => "finished",
            MODULE_INVALID => "module failed validation",
            IMPORT_UNKNOWN => "module imports a function RVM does not provide",
            MEMORY_BUDGET => "module memory exceeds the partition's budget",
            TRAP => "agent trapped",
            RUNTIME_PANIC => "guest runtime panicked",
            NO_ENTRY => "module exports no entry function",
            RESTORE_FAILED => "snapshot could not be restored",
            _ => "agent-defined exit code",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_block_round_trips_and_leaves_the_handle_table_alone() {
        let mut page = [0u8; 4096];
        let info = RestoreInfo { image_ipa: layout::SNAPSHOT_IPA, image_len: 12345, snapshot_id: 7, rollbacks: 2 };
        info.write(&mut page);
        assert_eq!(RestoreInfo::read(&page), Some(info));
        assert!(info.is_restore() && !RestoreInfo::NONE.is_restore());
        // The last handle entry ends where the block starts.
        const { assert!(HANDLES_OFFSET + MAX_HANDLES * HANDLE_ENTRY_LEN <= RESTORE_OFFSET) };
        let last = HandleInfo { raw: u64::MAX, kind: 0xff, rights: 0xff, agent: 3 };
        assert!(BootInfo::write_handle(&mut page, MAX_HANDLES - 1, last));
        assert_eq!(RestoreInfo::read(&page), Some(info));
        assert!(!BootInfo::write_handle(&mut page, MAX_HANDLES, last));
    }

    #[test]
    fn agent_table_and_count_round_trip_beside_the_restore_block() {
        let mut page = [0u8; 4096];
        let info = RestoreInfo { image_ipa: layout::SNAPSHOT_IPA, image_len: 9, snapshot_id: 1, rollbacks: 0 };
        info.write(&mut page);
        assert_eq!(agent_count(&page), 0);
        write_agent_count(&mut page, 3);
        assert_eq!(agent_count(&page), 3);
        assert_eq!(RestoreInfo::read(&page), Some(info));
        let agents = [
            AgentEntry { module_ipa: layout::WASM_IPA, module_len: 100, agent_id: 4, restore_len: 0 },
            AgentEntry { module_ipa: layout::WASM_IPA + 0x1000, module_len: 5000, agent_id: 5, restore_len: 0x2345 },
        ];
        let mut table = [0u8; 4096];
        AgentTable::write(&mut table, &agents);
        assert_eq!(AgentTable::count(&table), 2);
        assert_eq!(AgentTable::read(&table, 1), Some(agents[1]));
        assert_eq!(AgentTable::read(&table, 2), None);
        assert_eq!(AgentTable::read(&[0u8; 64], 0), None);
        const { assert!(layout::AGENTS_IPA < layout::HEAP_IPA) };
    }

    #[test]
    fn failures_are_neither_refusals_nor_agent_codes() {
        for code in [exit::TRAP, exit::RUNTIME_PANIC, exit::RESTORE_FAILED] {
            assert!(exit::is_failure(code) && !exit::is_refusal(code));
        }
        assert!(!exit::is_failure(exit::OK) && !exit::is_failure(exit::NO_ENTRY));
    }

    #[test]
    fn the_snapshot_window_is_inside_a_32_bit_ipa_space_and_above_the_heap() {
        const { assert!(layout::SNAPSHOT_IPA > layout::HEAP_IPA) };
        assert_eq!(layout::SNAPSHOT_IPA + layout::SNAPSHOT_MAX_LEN, 1 << 32);
    }
}
