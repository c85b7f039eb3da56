//! The hypervisor's own address space (EL2 stage 1), W^X: the tables.
//!
//! The early map `boot` turns the MMU on with (1 GiB blocks, everything
//! RWX) only gets Rust running. [`El2Map`] builds the map the hypervisor
//! runs on from then on, identity-mapped (VA = PA), from ranges it is
//! given rather than from anything hard-coded:
//!
//! * device ranges: Device-nGnRE, read/write, execute-never;
//! * RAM ranges: Normal write-back, read/write, execute-never: the heap,
//!   the device tree, the bundle and every frame a partition gets
//!   (the hypervisor writes guest frames: stage-2 tables, images,
//!   snapshots; it never executes them);
//! * the image's sections, over the RAM they lie in: text read-only and
//!   executable, rodata read-only, data/bss/stacks read/write;
//! * holes: unmapped (the guard page under every CPU's stack).
//!
//! Later ranges override earlier ones. 2 MiB blocks are used where a range
//! covers one whole, 4 KiB pages elsewhere (a block is split when a later
//! range lands inside it). Tables come from a fixed pool (the map is built
//! before the heap exists). `rvm_hal::el2map::activate` then switches a CPU
//! to the map with `SCTLR_EL2.WXN` set, so nothing writable is ever
//! executable, even if a later change got an entry wrong. Every CPU
//! activates the same map. Like [`crate::memory::stage2`], the descriptors are
//! built here, in safe Rust, and tested on the host.
//!
//! Written by hand rather than with the `aarch64-paging` crate: that crate's
//! ready-made maps allocate their tables on the heap (which does not exist
//! yet when the map is built) and it is not in this workspace's
//! dependencies; the map needed here is two levels of one 4 GiB table.

/// The input address range the map covers: `TCR_EL2.T0SZ` = 32 (the early
/// map's, kept), walked from level 1.
pub const VA_LIMIT: u64 = 1 << 32;

const PAGE: u64 = 4096;
const BLOCK: u64 = 2 << 20;
const ENTRIES: usize = 512;

/// MAIR_EL2 for this map: attr0 Device-nGnRE, attr1 Normal write-back
/// (inner and outer, read/write-allocate).
pub const MAIR: u64 = 0xff04;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
/// AP[1]: RES1 in the EL2 regime (no EL0 there).
const AP_RES1: u64 = 1 << 6;
/// AP[2]: read-only.
const AP_RO: u64 = 1 << 7;
const SH_INNER: u64 = 3 << 8;
const AF: u64 = 1 << 10;
/// XN (the EL2 regime has one execute-never bit, bit 54).
const XN: u64 = 1 << 54;
const VALID: u64 = 1;
const TABLE_OR_PAGE: u64 = 1 << 1;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// SCTLR_EL2.WXN: every writable mapping is also execute-never.
pub const SCTLR_WXN: u64 = 1 << 19;

/// What a range is mapped as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Hypervisor code: read and execute.
    Text,
    /// Read-only data.
    ReadOnly,
    /// Read/write data, execute-never.
    ReadWrite,
    /// Device registers: Device-nGnRE, read/write, execute-never.
    Device,
    /// Not mapped (a guard page).
    Unmapped,
}

impl Perm {
    /// Leaf attributes (without the address and the level's type bits).
    fn attrs(self) -> u64 {
        match self {
            Perm::Text => ATTR_NORMAL | AP_RES1 | AP_RO | SH_INNER | AF,
            Perm::ReadOnly => ATTR_NORMAL | AP_RES1 | AP_RO | SH_INNER | AF | XN,
            Perm::ReadWrite => ATTR_NORMAL | AP_RES1 | SH_INNER | AF | XN,
            Perm::Device => ATTR_DEVICE | AP_RES1 | AF | XN,
            Perm::Unmapped => 0,
        }
    }
}

/// Why a range could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The table pool is used up.
    OutOfTables,
    /// The range is not page-aligned or reaches past [`VA_LIMIT`].
    BadRange { start: u64, end: u64 },
}

/// One translation table (level 1, 2 or 3).
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES]);

impl Table {
    pub const EMPTY: Table = Table([0; ENTRIES]);
}

/// A map under construction, its tables taken from `pool` (table 0 is the
/// level-1 root). Tables are reached through their index in the pool, and
/// each entry holds the table's physical address: the pool must be
/// identity-mapped memory when the map is activated.
pub struct El2Map<'a> {
    pool: &'a mut [Table],
    used: usize,
}

impl<'a> El2Map<'a> {
    /// Start an empty map (everything unmapped) in `pool` (at least one
    /// table; it is cleared).
    pub fn new(pool: &'a mut [Table]) -> Self {
        assert!(!pool.is_empty());
        for t in pool.iter_mut() {
            t.0 = [0; ENTRIES];
        }
        Self { pool, used: 1 }
    }

    /// Physical address of the level-1 table (for TTBR0_EL2).
    pub fn root(&self) -> u64 {
        self.addr_of(0)
    }

    /// Tables used so far.
    pub fn tables_used(&self) -> usize {
        self.used
    }

    fn addr_of(&self, index: usize) -> u64 {
        core::ptr::addr_of!(self.pool[index]) as u64
    }

    fn index_of(&self, pa: u64) -> usize {
        let base = self.addr_of(0);
        usize::try_from((pa - base) / core::mem::size_of::<Table>() as u64).unwrap_or(usize::MAX)
    }

    fn new_table(&mut self, fill: [u64; ENTRIES]) -> Result<usize, MapError> {
        if self.used >= self.pool.len() {
            return Err(MapError::OutOfTables);
        }
        let i = self.used;
        self.used += 1;
        self.pool[i].0 = fill;
        Ok(i)
    }

    /// The level-2 table covering `va`, created on first use.
    fn l2(&mut self, va: u64) -> Result<usize, MapError> {
        let i1 = (va >> 30) as usize & (ENTRIES - 1);
        let e = self.pool[0].0[i1];
        if e & VALID != 0 {
            return Ok(self.index_of(e & ADDR_MASK));
        }
        let t = self.new_table([0; ENTRIES])?;
        self.pool[0].0[i1] = self.addr_of(t) | TABLE_OR_PAGE | VALID;
        Ok(t)
    }

    /// The level-3 table covering `va`, created on first use; a 2 MiB block
    /// there is split into 512 pages with its attributes first.
    fn l3(&mut self, va: u64) -> Result<usize, MapError> {
        let t2 = self.l2(va)?;
        let i2 = (va >> 21) as usize & (ENTRIES - 1);
        let e = self.pool[t2].0[i2];
        if e & VALID != 0 && e & TABLE_OR_PAGE != 0 {
            return Ok(self.index_of(e & ADDR_MASK));
        }
        let mut fill = [0u64; ENTRIES];
        if e & VALID != 0 {
            let base = e & ADDR_MASK & !(BLOCK - 1);
            let attrs = e & !ADDR_MASK & !TABLE_OR_PAGE;
            for (n, f) in fill.iter_mut().enumerate() {
                *f = (base + n as u64 * PAGE) | attrs | TABLE_OR_PAGE;
            }
        }
        let t = self.new_table(fill)?;
        self.pool[t2].0[i2] = self.addr_of(t) | TABLE_OR_PAGE | VALID;
        Ok(t)
    }

    /// Map `[start, end)` (page-aligned, below [`VA_LIMIT`]) identity as
    /// `perm`, replacing whatever was mapped there.
    pub fn map(&mut self, start: u64, end: u64, perm: Perm) -> Result<(), MapError> {
        if !start.is_multiple_of(PAGE) || !end.is_multiple_of(PAGE) || start > end || end > VA_LIMIT {
            return Err(MapError::BadRange { start, end });
        }
        let attrs = perm.attrs();
        let mut va = start;
        while va < end {
            let t2 = self.l2(va)?;
            let i2 = (va >> 21) as usize & (ENTRIES - 1);
            if va.is_multiple_of(BLOCK) && end - va >= BLOCK {
                // A whole block: one level-2 entry (any level-3 table that
                // was there is dropped; its pool slot is not reused).
                self.pool[t2].0[i2] = if perm == Perm::Unmapped { 0 } else { va | attrs | VALID };
                va += BLOCK;
                continue;
            }
            let t3 = self.l3(va)?;
            let i3 = (va >> 12) as usize & (ENTRIES - 1);
            self.pool[t3].0[i3] = if perm == Perm::Unmapped { 0 } else { va | attrs | TABLE_OR_PAGE | VALID };
            va += PAGE;
        }
        Ok(())
    }

    /// The leaf entry (block or page descriptor) that translates `va`, if
    /// any.
    pub fn leaf(&self, va: u64) -> Option<u64> {
        if va >= VA_LIMIT {
            return None;
        }
        let e1 = self.pool[0].0[(va >> 30) as usize & (ENTRIES - 1)];
        if e1 & VALID == 0 {
            return None;
        }
        let e2 = self.pool[self.index_of(e1 & ADDR_MASK)].0[(va >> 21) as usize & (ENTRIES - 1)];
        if e2 & VALID == 0 {
            return None;
        }
        if e2 & TABLE_OR_PAGE == 0 {
            return Some(e2);
        }
        let e3 = self.pool[self.index_of(e2 & ADDR_MASK)].0[(va >> 12) as usize & (ENTRIES - 1)];
        (e3 & VALID != 0).then_some(e3)
    }

    /// How `va` is mapped: its permission and output address, or `None`.
    pub fn perm_of(&self, va: u64) -> Option<(Perm, u64)> {
        let e = self.leaf(va)?;
        let block = e & TABLE_OR_PAGE == 0;
        let base = if block { e & ADDR_MASK & !(BLOCK - 1) } else { e & ADDR_MASK };
        let pa = base + (va & if block { BLOCK - 1 } else { PAGE - 1 });
        let perm = match (e & (7 << 2), e & AP_RO != 0, e & XN != 0) {
            (ATTR_DEVICE, false, true) => Perm::Device,
            (ATTR_NORMAL, true, false) => Perm::Text,
            (ATTR_NORMAL, true, true) => Perm::ReadOnly,
            (ATTR_NORMAL, false, true) => Perm::ReadWrite,
            // Writable and executable: never built (and WXN would make it
            // execute-never anyway).
            _ => return None,
        };
        Some((perm, pa))
    }

    /// Round `[start, end)` out to whole pages and map it (for ranges from
    /// the device tree, which need not be page-aligned).
    pub fn map_rounded(&mut self, start: u64, end: u64, perm: Perm) -> Result<(), MapError> {
        let s = start & !(PAGE - 1);
        let e = end.min(VA_LIMIT).checked_add(PAGE - 1).map_or(VA_LIMIT, |x| x & !(PAGE - 1));
        if s >= e {
            return Ok(());
        }
        self.map(s, e, perm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn pool(n: usize) -> Vec<Table> {
        (0..n).map(|_| Table::EMPTY).collect()
    }

    /// The map `boot` builds for QEMU virt (512 MiB at 1 GiB, image at
    /// 1 GiB + 2 MiB): devices, RAM, then the image's sections and guards.
    fn qemu_like(map: &mut El2Map<'_>) {
        map.map_rounded(0x0800_0000, 0x0801_0000, Perm::Device).unwrap();
        map.map_rounded(0x080a_0000, 0x0900_0000, Perm::Device).unwrap();
        map.map_rounded(0x0900_0000, 0x0900_1000, Perm::Device).unwrap();
        map.map_rounded(GIB, GIB + 512 * MIB, Perm::ReadWrite).unwrap();
        map.map(0x4020_0000, 0x4024_c000, Perm::Text).unwrap();
        map.map(0x4024_c000, 0x4025_3000, Perm::ReadOnly).unwrap();
        map.map(0x4025_3000, 0x4030_0000, Perm::ReadWrite).unwrap();
        for slot in 0..4u64 {
            let guard = 0x4028_0000 + slot * 0x2_0000;
            map.map(guard, guard + PAGE, Perm::Unmapped).unwrap();
        }
    }

    #[test]
    fn sections_get_their_permissions_and_ram_stays_blocks() {
        let mut p = pool(16);
        let mut map = El2Map::new(&mut p);
        qemu_like(&mut map);
        assert_eq!(map.perm_of(0x4020_0000), Some((Perm::Text, 0x4020_0000)));
        assert_eq!(map.perm_of(0x4024_bffc), Some((Perm::Text, 0x4024_bffc)));
        assert_eq!(map.perm_of(0x4024_c000), Some((Perm::ReadOnly, 0x4024_c000)));
        assert_eq!(map.perm_of(0x4025_3008), Some((Perm::ReadWrite, 0x4025_3008)));
        // Guard pages: unmapped; the page above each is the stack.
        for slot in 0..4u64 {
            let guard = 0x4028_0000 + slot * 0x2_0000;
            assert_eq!(map.perm_of(guard), None);
            assert_eq!(map.perm_of(guard + PAGE - 8), None);
            assert_eq!(map.perm_of(guard + PAGE), Some((Perm::ReadWrite, guard + PAGE)));
        }
        // The block the image split keeps RAM's attributes around it.
        assert_eq!(map.perm_of(0x4000_0000), Some((Perm::ReadWrite, 0x4000_0000)));
        assert_eq!(map.perm_of(0x4030_0000), Some((Perm::ReadWrite, 0x4030_0000)));
        // Guest frames further up: 2 MiB blocks, read/write, execute-never.
        let frame = 0x4800_1000;
        assert_eq!(map.perm_of(frame), Some((Perm::ReadWrite, frame)));
        assert_eq!(map.leaf(frame).unwrap() & TABLE_OR_PAGE, 0, "a block");
        assert_ne!(map.leaf(frame).unwrap() & XN, 0);
        // Devices: Device memory, execute-never; nothing between them.
        assert_eq!(map.perm_of(0x0900_0000), Some((Perm::Device, 0x0900_0000)));
        assert_eq!(map.perm_of(0x080a_0000), Some((Perm::Device, 0x080a_0000)));
        assert_eq!(map.perm_of(0x0801_0000), None);
        assert_eq!(map.perm_of(0x0900_1000), None);
        // Beyond RAM and below the devices: nothing.
        assert_eq!(map.perm_of(GIB + 512 * MIB), None);
        assert_eq!(map.perm_of(0), None);
        assert_eq!(map.perm_of(VA_LIMIT), None);
        assert!(map.tables_used() <= 8, "{} tables", map.tables_used());
    }

    #[test]
    fn no_leaf_is_writable_and_executable() {
        let mut p = pool(16);
        let mut map = El2Map::new(&mut p);
        qemu_like(&mut map);
        let mut va = 0;
        let mut executable = 0;
        while va < VA_LIMIT {
            if let Some(e) = map.leaf(va) {
                assert!(e & AF != 0, "{va:#x}: access flag");
                if e & XN == 0 {
                    assert!(e & AP_RO != 0, "{va:#x} is writable and executable");
                    executable += 1;
                }
            }
            va += PAGE;
        }
        // Exactly the text pages are executable.
        assert_eq!(executable, (0x4024_c000 - 0x4020_0000) / PAGE);
    }

    #[test]
    fn a_block_is_split_into_pages_with_its_attributes_and_later_ranges_win() {
        let mut p = pool(8);
        let mut map = El2Map::new(&mut p);
        map.map(GIB, GIB + 4 * MIB, Perm::ReadWrite).unwrap();
        assert_eq!(map.tables_used(), 2, "root + one level-2 table, blocks only");
        map.map(GIB + 2 * MIB + 3 * PAGE, GIB + 2 * MIB + 4 * PAGE, Perm::Text).unwrap();
        assert_eq!(map.tables_used(), 3, "one block split");
        for n in 0..512u64 {
            let va = GIB + 2 * MIB + n * PAGE;
            let want = if n == 3 { Perm::Text } else { Perm::ReadWrite };
            assert_eq!(map.perm_of(va), Some((want, va)), "page {n}");
        }
        // A whole block over the split one replaces it.
        map.map(GIB + 2 * MIB, GIB + 4 * MIB, Perm::ReadOnly).unwrap();
        assert_eq!(map.perm_of(GIB + 2 * MIB + 3 * PAGE), Some((Perm::ReadOnly, GIB + 2 * MIB + 3 * PAGE)));
        map.map(GIB, GIB + 2 * MIB, Perm::Unmapped).unwrap();
        assert_eq!(map.perm_of(GIB), None);
    }

    #[test]
    fn bad_ranges_and_an_exhausted_pool_are_errors() {
        let mut p = pool(2);
        let mut map = El2Map::new(&mut p);
        assert_eq!(map.map(GIB + 1, GIB + PAGE, Perm::ReadWrite), Err(MapError::BadRange { start: GIB + 1, end: GIB + PAGE }));
        assert!(matches!(map.map(GIB, VA_LIMIT + PAGE, Perm::ReadWrite), Err(MapError::BadRange { .. })));
        map.map(GIB, GIB + BLOCK, Perm::ReadWrite).unwrap();
        assert_eq!(map.map(GIB + BLOCK, GIB + BLOCK + PAGE, Perm::ReadWrite), Err(MapError::OutOfTables));
        // Rounded out: a device range that is not page-aligned.
        let mut p = pool(4);
        let mut map = El2Map::new(&mut p);
        map.map_rounded(0x0900_0010, 0x0900_0020, Perm::Device).unwrap();
        assert_eq!(map.perm_of(0x0900_0000), Some((Perm::Device, 0x0900_0000)));
        assert_eq!(map.perm_of(0x0900_1000), None);
    }
}
