//! The hypervisor's own address space (EL2 stage 1), W^X.
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
//!   checkpoints; it never executes them);
//! * the image's sections, over the RAM they lie in: text read-only and
//!   executable, rodata read-only, data/bss/stacks read/write;
//! * holes: unmapped (the guard page under every CPU's stack).
//!
//! Later ranges override earlier ones. 2 MiB blocks are used where a range
//! covers one whole, 4 KiB pages elsewhere (a block is split when a later
//! range lands inside it). Tables come from a fixed pool (the map is built
//! before the heap exists). [`activate`] then switches this CPU to the map
//! with `SCTLR_EL2.WXN` set, so nothing writable is ever executable, even
//! if a later change got an entry wrong. Every CPU activates the same map.
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

core::arch::global_asm!(
    r#"
.section .text, "ax"
// Switch this CPU to another identity map: x0 = root table, x1 = MAIR,
// x2 = SCTLR_EL2 bits to set. The MMU is off between the two SCTLR
// writes (both maps translate this code to where it is, and nothing here
// touches memory), so no TLB entry of the early map's blocks can meet
// one of the new map's pages: no break-before-make needed.
.global rvm_el2_map_switch
rvm_el2_map_switch:
    dsb     ishst                   // the tables' writes reach the walker
    mrs     x3, sctlr_el2
    bic     x4, x3, #1              // M off
    msr     sctlr_el2, x4
    isb
    msr     mair_el2, x1
    msr     ttbr0_el2, x0
    isb
    tlbi    alle2                   // drop every early-map entry
    dsb     ish
    isb
    orr     x3, x3, x2
    msr     sctlr_el2, x3           // M on again, with WXN
    isb
    ret
"#
);

extern "C" {
    fn rvm_el2_map_switch(root: u64, mair: u64, sctlr_set: u64);
}

/// Switch this CPU to the map whose level-1 table is at `root`, with
/// [`MAIR`] and `SCTLR_EL2.WXN`.
///
/// # Safety
/// `root` must be a complete map built by [`El2Map`] that maps the code
/// running now (text), this CPU's stack, the tables themselves, and every
/// device and RAM range the hypervisor will touch, identity, and its
/// tables must not change afterwards.
pub unsafe fn activate(root: u64) {
    // SAFETY: the caller's contract: the new map translates everything the
    // CPU touches from here on exactly as the early map did (identity),
    // only with fewer permissions.
    unsafe { rvm_el2_map_switch(root, MAIR, SCTLR_WXN) }
}

/// Whether `SCTLR_EL2.WXN` is set on this CPU.
pub fn wxn_enabled() -> bool {
    crate::sysreg_read!("sctlr_el2") & SCTLR_WXN != 0
}
