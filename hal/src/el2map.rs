//! Switching a CPU to the hypervisor's own W^X map, which
//! [`rvm_kernel::memory::el2map::El2Map`] builds (descriptors in safe Rust, tested
//! on the host).

pub use rvm_kernel::memory::el2map::{El2Map, MapError, Perm, Table, MAIR, SCTLR_WXN, VA_LIMIT};

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
    use aarch64_cpu::registers::{Readable, SCTLR_EL2};
    SCTLR_EL2.is_set(SCTLR_EL2::WXN)
}

// The kernel's descriptor builder and the register type agree on the bit.
const _: () = assert!(SCTLR_WXN == 1 << 19);
