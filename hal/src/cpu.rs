//! EL2 configuration and the parts of a vCPU's state that live in system
//! registers: EL1 registers and FP/SIMD, switched only when another
//! partition's vCPU is loaded.

use rvm_kernel::running::vcpu::{El1Regs, FpRegs};

/// HCR_EL2 while a partition runs: stage 2 on (VM), set/way as clean+inv
/// (SWIO), FIQ/IRQ/SError to EL2 (FMO/IMO/AMO), default cacheable (DC: the
/// guest runs with its MMU off on Normal memory), trap WFI (TWI) and SMC
/// (TSC), EL1 is AArch64 (RW). Also trapped, as state every partition on a
/// CPU shares: `ACTLR_EL1` (TACR), data-cache maintenance by set/way (TSW:
/// it cleans or invalidates lines of every partition) and the
/// implementation-defined registers (TIDCP: CPU and L2 control such as
/// prefetch and cache behaviour; QEMU 7.2 ignores this bit). Each arrives
/// as EC 0x18, a fault of the partition.
pub const HCR_EL2_GUEST: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 12)
    | (1 << 13)
    | (1 << 19)
    | (1 << 21)
    | (1 << 22)
    | (1 << 31)
    | (1 << 53);

/// VTCR_EL2: 32-bit IPA space (T0SZ 32) walked from level 1 (SL0 1), inner
/// and outer write-back walks, inner shareable, 4 KiB granule, 40-bit PA.
pub const VTCR_EL2_VALUE: u64 = {
    let t0sz = 64 - rvm_kernel::memory::stage2::IPA_BITS as u64;
    (1 << 31) | (2 << 16) | (3 << 12) | (1 << 10) | (1 << 8) | (1 << 6) | t0sz
};

/// CPTR_EL2 with its RES1 bits and FP/SIMD not trapped: guests use FP/SIMD
/// directly; EL2 is built soft-float and never touches those registers.
/// TTA (bit 20) traps EL1's access to the trace unit's system registers,
/// per-CPU state shared by every partition like the PMU (see `pmu`).
const CPTR_EL2_VALUE: u64 = 0x33ff | (1 << 20);

/// CNTHCTL_EL2: EL1PCTEN (bit 0) set, EL1PCEN (bit 1) clear. The physical
/// timer (`CNTP_CTL_EL0`, `CNTP_CVAL_EL0`, `CNTP_TVAL_EL0`) is one per CPU
/// and not switched between partitions, so an EL1 access to it traps to EL2
/// (EC 0x18) and faults the partition: no partition can arm, read or stop
/// a timer another one left behind. Partitions time themselves with the
/// virtual timer and counter, which are part of the vCPU state. Reading the
/// physical counter (`CNTPCT_EL0`) stays allowed: with `CNTVOFF_EL2` = 0
/// it shows exactly what the virtual counter shows, so trapping it would
/// only cost.
const CNTHCTL_EL2_EL1_ACCESS: u64 = 0b01;

/// Configure EL2 for running partitions. Call once per CPU.
pub fn init_el2() {
    crate::sysreg_write!("vtcr_el2", VTCR_EL2_VALUE);
    crate::sysreg_write!("cptr_el2", CPTR_EL2_VALUE);
    crate::sysreg_write!("cnthctl_el2", CNTHCTL_EL2_EL1_ACCESS);
    crate::sysreg_write!("cntvoff_el2", 0);
    crate::sysreg_write!("hcr_el2", HCR_EL2_GUEST);
    crate::sysreg::isb();
}

/// Point stage 2 at a partition's tables.
pub fn set_stage2(root: u64, vmid: u8) {
    crate::sysreg_write!("vttbr_el2", (u64::from(vmid) << 48) | root);
    crate::sysreg::isb();
}

/// Invalidate every stage-1 and stage-2 TLB entry of `vmid`.
pub fn flush_vmid(vmid: u8) {
    let saved = crate::sysreg_read!("vttbr_el2");
    crate::sysreg_write!("vttbr_el2", (u64::from(vmid) << 48) | (saved & 0x0000_ffff_ffff_ffff));
    crate::sysreg::isb();
    // SAFETY: TLB maintenance for the VMID now in VTTBR_EL2; it only drops
    // cached translations.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack, preserves_flags)) };
    crate::sysreg_write!("vttbr_el2", saved);
    crate::sysreg::isb();
}

macro_rules! el1_regs {
    ($m:ident) => {
        $m!(sctlr, "sctlr_el1");
        $m!(cpacr, "cpacr_el1");
        $m!(ttbr0, "ttbr0_el1");
        $m!(ttbr1, "ttbr1_el1");
        $m!(tcr, "tcr_el1");
        $m!(mair, "mair_el1");
        $m!(amair, "amair_el1");
        $m!(vbar, "vbar_el1");
        $m!(contextidr, "contextidr_el1");
        $m!(tpidr_el0, "tpidr_el0");
        $m!(tpidrro_el0, "tpidrro_el0");
        $m!(tpidr_el1, "tpidr_el1");
        $m!(sp_el0, "sp_el0");
        $m!(sp_el1, "sp_el1");
        $m!(elr_el1, "elr_el1");
        $m!(spsr_el1, "spsr_el1");
        $m!(esr_el1, "esr_el1");
        $m!(far_el1, "far_el1");
        $m!(afsr0, "afsr0_el1");
        $m!(afsr1, "afsr1_el1");
        $m!(par, "par_el1");
        $m!(csselr, "csselr_el1");
        $m!(cntkctl, "cntkctl_el1");
        $m!(cntv_ctl, "cntv_ctl_el0");
        $m!(cntv_cval, "cntv_cval_el0");
    };
}

/// Load a vCPU's EL1 registers into the CPU.
pub fn load_el1(r: &El1Regs) {
    macro_rules! load {
        ($f:ident, $name:literal) => {
            crate::sysreg_write!($name, r.$f)
        };
    }
    el1_regs!(load);
    crate::sysreg::isb();
}

/// Save the CPU's EL1 registers into a vCPU.
pub fn save_el1(r: &mut El1Regs) {
    macro_rules! save {
        ($f:ident, $name:literal) => {
            r.$f = crate::sysreg_read!($name)
        };
    }
    el1_regs!(save);
}

extern "C" {
    fn rvm_fp_save(regs: *mut FpRegs);
    fn rvm_fp_restore(regs: *const FpRegs);
}

/// Save FP/SIMD registers.
pub fn save_fp(r: &mut FpRegs) {
    // SAFETY: `rvm_fp_save` writes exactly `size_of::<FpRegs>()` bytes to a
    // valid, 16-byte aligned `FpRegs` we hold mutably.
    unsafe { rvm_fp_save(r) }
}

/// Load FP/SIMD registers.
pub fn restore_fp(r: &FpRegs) {
    // SAFETY: `rvm_fp_restore` only reads a valid `FpRegs`.
    unsafe { rvm_fp_restore(r) }
}

const _: () = {
    assert!(core::mem::offset_of!(FpRegs, fpcr) == 512);
    assert!(core::mem::offset_of!(FpRegs, fpsr) == 520);
};
