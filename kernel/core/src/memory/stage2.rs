//! Stage-2 translation tables: what a partition may touch, and how.
//!
//! 4 KiB granule, a 32-bit IPA space (VTCR_EL2.T0SZ = 32) walked from level 1,
//! so the root table is one page with four used entries. Only whole pages are
//! mapped (level 3). A mapping is read-only, read-write or read-execute —
//! never writable and executable at once, which [`S2Perm`] cannot express.

use crate::memory::addr::{Ipa, PhysAddr};
use crate::arch::Arch;
use crate::memory::frames::FrameAllocator;

/// Width of every partition's IPA space.
pub const IPA_BITS: u32 = 32;
/// First IPA past the space.
pub const IPA_LIMIT: u64 = 1 << IPA_BITS;
/// Level the walk starts at (VTCR_EL2.SL0 = 1 for a 4 KiB granule).
pub const START_LEVEL: u8 = 1;

const ENTRIES: usize = 512;
const VALID: u64 = 1 << 0;
const TABLE_OR_PAGE: u64 = 1 << 1;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const S2AP_RO: u64 = 1 << 6;
const S2AP_RW: u64 = 3 << 6;
const S2AP_MASK: u64 = 3 << 6;
/// XN[1:0] = 0b10: not executable at EL1 or EL0.
const XN: u64 = 1 << 54;
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const MEMATTR_DEVICE_NGNRNE: u64 = 0b0000 << 2;
const MEMATTR_MASK: u64 = 0b1111 << 2;

/// Access a partition gets to a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S2Perm {
    ReadOnly,
    ReadWrite,
    ReadExec,
}

impl S2Perm {
    pub fn writable(self) -> bool {
        self == S2Perm::ReadWrite
    }
}

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    Normal,
    /// Only ever mapped when a device capability grants it.
    Device,
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    Unaligned,
    OutOfRange,
    AlreadyMapped(Ipa),
    OutOfFrames,
}

/// A resolved mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub pa: PhysAddr,
    pub perm: S2Perm,
    pub mem: MemType,
}

/// One partition's stage-2 tables.
#[derive(Debug)]
pub struct Stage2Table {
    root: PhysAddr,
    tables: u32,
}

fn index(ipa: Ipa, level: u8) -> usize {
    let shift = 12 + 9 * (3 - u32::from(level));
    ((ipa.raw() >> shift) & 0x1ff) as usize
}

impl Stage2Table {
    /// Allocate an empty root table.
    pub fn new(arch: &mut dyn Arch, frames: &mut FrameAllocator) -> Option<Self> {
        let root = frames.alloc()?;
        arch.phys_zero(root, crate::memory::addr::PAGE_BYTES);
        Some(Self { root, tables: 1 })
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Frames used by the tables themselves.
    pub fn table_frames(&self) -> u32 {
        self.tables
    }

    fn descriptor(pa: PhysAddr, perm: S2Perm, mem: MemType) -> u64 {
        let ap = match perm {
            S2Perm::ReadOnly | S2Perm::ReadExec => S2AP_RO,
            S2Perm::ReadWrite => S2AP_RW,
        };
        let xn = if perm == S2Perm::ReadExec { 0 } else { XN };
        let attr = match mem {
            MemType::Normal => MEMATTR_NORMAL_WB,
            MemType::Device => MEMATTR_DEVICE_NGNRNE,
        };
        (pa.raw() & ADDR_MASK) | VALID | TABLE_OR_PAGE | AF | SH_INNER | ap | xn | attr
    }

    /// Walk to the level-3 table for `ipa`, creating tables when `create`.
    fn leaf_table(
        &mut self,
        arch: &mut dyn Arch,
        frames: Option<&mut FrameAllocator>,
        ipa: Ipa,
    ) -> Result<Option<PhysAddr>, MapError> {
        let mut frames = frames;
        let mut table = self.root;
        for level in START_LEVEL..3 {
            let i = index(ipa, level);
            let entry = arch.read_pte(table, i);
            table = if entry & VALID != 0 {
                PhysAddr::new(entry & ADDR_MASK)
            } else {
                let Some(frames) = frames.as_deref_mut() else { return Ok(None) };
                let next = frames.alloc().ok_or(MapError::OutOfFrames)?;
                arch.phys_zero(next, crate::memory::addr::PAGE_BYTES);
                arch.write_pte(table, i, next.raw() | VALID | TABLE_OR_PAGE);
                self.tables += 1;
                next
            };
        }
        Ok(Some(table))
    }

    /// Map one page.
    pub fn map(
        &mut self,
        arch: &mut dyn Arch,
        frames: &mut FrameAllocator,
        ipa: Ipa,
        pa: PhysAddr,
        perm: S2Perm,
        mem: MemType,
    ) -> Result<(), MapError> {
        if !ipa.is_page_aligned() || !pa.is_page_aligned() {
            return Err(MapError::Unaligned);
        }
        if ipa.raw() >= IPA_LIMIT {
            return Err(MapError::OutOfRange);
        }
        let leaf = self.leaf_table(arch, Some(frames), ipa)?.ok_or(MapError::OutOfFrames)?;
        let i = index(ipa, 3);
        if arch.read_pte(leaf, i) & VALID != 0 {
            return Err(MapError::AlreadyMapped(ipa));
        }
        arch.write_pte(leaf, i, Self::descriptor(pa, perm, mem));
        Ok(())
    }

    /// Remove one page's mapping; returns what it mapped.
    pub fn unmap(&mut self, arch: &mut dyn Arch, ipa: Ipa, vmid: u8) -> Option<Translation> {
        let found = self.translate(arch, ipa)?;
        let leaf = self.leaf_table(arch, None, ipa).ok().flatten()?;
        arch.write_pte(leaf, index(ipa, 3), 0);
        arch.flush_stage2(vmid);
        Some(found)
    }

    /// Remove the mappings of the pages at `ipas` (those mapped; the others
    /// are skipped) and invalidate the VMID's translations once.
    pub fn unmap_many(&mut self, arch: &mut dyn Arch, ipas: impl IntoIterator<Item = Ipa>, vmid: u8) {
        for ipa in ipas {
            if let Ok(Some(leaf)) = self.leaf_table(arch, None, ipa) {
                arch.write_pte(leaf, index(ipa, 3), 0);
            }
        }
        arch.flush_stage2(vmid);
    }

    /// Where `ipa`'s page lives and with which access, if mapped.
    pub fn translate(&self, arch: &dyn Arch, ipa: Ipa) -> Option<Translation> {
        walk(arch, self.root, ipa)
    }

    /// Call `f` with every mapped page (IPA, translation), in IPA order.
    pub fn for_each_mapping(&self, arch: &dyn Arch, mut f: impl FnMut(Ipa, Translation)) {
        let l1_entries = (IPA_LIMIT >> 30) as usize;
        for i1 in 0..l1_entries.min(ENTRIES) {
            let e1 = arch.read_pte(self.root, i1);
            if e1 & VALID == 0 {
                continue;
            }
            let t2 = PhysAddr::new(e1 & ADDR_MASK);
            for i2 in 0..ENTRIES {
                let e2 = arch.read_pte(t2, i2);
                if e2 & VALID == 0 {
                    continue;
                }
                let t3 = PhysAddr::new(e2 & ADDR_MASK);
                for i3 in 0..ENTRIES {
                    if arch.read_pte(t3, i3) & VALID == 0 {
                        continue;
                    }
                    let ipa = Ipa::new(((i1 as u64) << 30) | ((i2 as u64) << 21) | ((i3 as u64) << 12));
                    if let Some(t) = self.translate(arch, ipa) {
                        f(ipa, t);
                    }
                }
            }
        }
    }

    /// Free the table frames (not the pages they map).
    pub fn destroy(self, arch: &mut dyn Arch, frames: &mut FrameAllocator) {
        let l1_entries = (IPA_LIMIT >> 30) as usize;
        for i1 in 0..l1_entries.min(ENTRIES) {
            let e1 = arch.read_pte(self.root, i1);
            if e1 & VALID == 0 {
                continue;
            }
            let t2 = PhysAddr::new(e1 & ADDR_MASK);
            for i2 in 0..ENTRIES {
                let e2 = arch.read_pte(t2, i2);
                if e2 & VALID != 0 {
                    frames.free(PhysAddr::new(e2 & ADDR_MASK));
                }
            }
            frames.free(t2);
        }
        frames.free(self.root);
    }
}

/// Walk the tables under `root` for `ipa` the way the MMU does.
pub fn walk(arch: &dyn Arch, root: PhysAddr, ipa: Ipa) -> Option<Translation> {
    if ipa.raw() >= IPA_LIMIT {
        return None;
    }
    let mut table = root;
    for level in START_LEVEL..=3 {
        let entry = arch.read_pte(table, index(ipa, level));
        if entry & VALID == 0 || entry & TABLE_OR_PAGE == 0 {
            return None;
        }
        if level == 3 {
            let perm = match (entry & S2AP_MASK, entry & XN != 0) {
                (S2AP_RW, _) => S2Perm::ReadWrite,
                (S2AP_RO, false) => S2Perm::ReadExec,
                (S2AP_RO, true) => S2Perm::ReadOnly,
                _ => return None,
            };
            let mem = if entry & MEMATTR_MASK == MEMATTR_NORMAL_WB {
                MemType::Normal
            } else {
                MemType::Device
            };
            let pa = PhysAddr::new((entry & ADDR_MASK) | ipa.page_offset());
            return Some(Translation { pa, perm, mem });
        }
        table = PhysAddr::new(entry & ADDR_MASK);
    }
    None
}
