//! EL2 configuration and the parts of a vCPU's state that live in system
//! registers: EL1 registers and FP/SIMD, switched only when another
//! partition's vCPU is loaded.

use rvm_kernel::running::vcpu::{El1Regs, FpRegs};

use aarch64_cpu::registers::{
    Readable, Writeable, CNTHCTL_EL2, CNTVOFF_EL2, CPTR_EL2, HCR_EL2, VTCR_EL2, VTTBR_EL2,
};
use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// CPTR_EL2 with HCR_EL2.E2H = 0, the fields `aarch64-cpu` does not name
    /// (it has only TAM).
    CPTR [
        /// Trap EL1's access to the trace unit's system registers.
        TTA OFFSET(20) NUMBITS(1) [],
        /// RES1 (bits 12 and 13).
        RES1_HIGH OFFSET(12) NUMBITS(2) [],
        /// Trap FP/SIMD.
        TFP OFFSET(10) NUMBITS(1) [],
        /// RES1 (bits 0 to 9).
        RES1_LOW OFFSET(0) NUMBITS(10) []
    ]
}

/// Configure EL2 for running partitions. Call once per CPU.
///
/// - VTCR_EL2: 32-bit IPA space (T0SZ 32) walked from level 1 (SL0 1),
///   inner and outer write-back walks, inner shareable, 4 KiB granule,
///   40-bit PA.
/// - CPTR_EL2: its RES1 bits and FP/SIMD not trapped: guests use FP/SIMD
///   directly; EL2 is built soft-float and never touches those registers.
///   TTA traps EL1's access to the trace unit's system registers, per-CPU
///   state shared by every partition like the PMU (see `pmu`).
/// - CNTHCTL_EL2: EL1PCTEN set, EL1PCEN clear. The physical timer
///   (`CNTP_CTL_EL0`, `CNTP_CVAL_EL0`, `CNTP_TVAL_EL0`) is one per CPU and
///   not switched between partitions, so an EL1 access to it traps to EL2
///   (EC 0x18) and faults the partition: no partition can arm, read or stop
///   a timer another one left behind. Partitions time themselves with the
///   virtual timer and counter, which are part of the vCPU state. Reading
///   the physical counter (`CNTPCT_EL0`) stays allowed: with `CNTVOFF_EL2`
///   = 0 it shows exactly what the virtual counter shows, so trapping it
///   would only cost.
/// - HCR_EL2 while a partition runs: stage 2 on (VM), set/way as
///   clean+invalidate (SWIO), FIQ/IRQ/SError to EL2 (FMO/IMO/AMO), default
///   cacheable (DC: the guest runs with its MMU off on Normal memory), trap
///   WFI (TWI) and SMC (TSC), EL1 is AArch64 (RW). Also trapped, as state
///   every partition on a CPU shares: `ACTLR_EL1` (TACR), data-cache
///   maintenance by set/way (TSW: it cleans or invalidates lines of every
///   partition) and the implementation-defined registers (TIDCP: CPU and L2
///   control such as prefetch and cache behaviour; QEMU 7.2 ignores this
///   bit). Each arrives as EC 0x18, a fault of the partition.
pub fn init_el2() {
    VTCR_EL2.write(
        VTCR_EL2::RES1::SET
            + VTCR_EL2::PS::PA_40B_1TB
            + VTCR_EL2::TG0::Granule4KB
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::SL0::Granule4KBLevel1
            + VTCR_EL2::T0SZ.val(64 - rvm_kernel::memory::stage2::IPA_BITS as u64),
    );
    let cptr = CPTR::RES1_LOW::SET + CPTR::RES1_HIGH::SET + CPTR::TFP::CLEAR + CPTR::TTA::SET;
    CPTR_EL2.set(cptr.value);
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::CLEAR);
    CNTVOFF_EL2.set(0);
    HCR_EL2.write(
        HCR_EL2::VM::Enable
            + HCR_EL2::SWIO::SET
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::DC::SET
            + HCR_EL2::TWI::SET
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            + HCR_EL2::TACR::SET
            + HCR_EL2::TSW::SET
            + HCR_EL2::RW::EL1IsAarch64
            + HCR_EL2::TIDCP::SET,
    );
    crate::sysreg::isb();
}

/// Point stage 2 at a partition's tables.
pub fn set_stage2(root: u64, vmid: u8) {
    VTTBR_EL2.set(vttbr(root, vmid));
    crate::sysreg::isb();
}

/// VTTBR_EL2 for the tables at `root` (4 KiB aligned, so CnP is 0) and
/// `vmid` (8-bit VMIDs: VTCR_EL2.VS is 0).
#[inline(always)]
fn vttbr(root: u64, vmid: u8) -> u64 {
    (VTTBR_EL2::VMID.val(u64::from(vmid)) + VTTBR_EL2::BADDR.val(root >> 1)).value
}

/// Invalidate every stage-1 and stage-2 TLB entry of `vmid`.
pub fn flush_vmid(vmid: u8) {
    let saved = VTTBR_EL2.get();
    VTTBR_EL2.set(VTTBR_EL2::VMID.val(u64::from(vmid)).modify(saved));
    crate::sysreg::isb();
    // SAFETY: TLB maintenance for the VMID now in VTTBR_EL2; it only drops
    // cached translations, which the tables in memory can always refill.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack, preserves_flags)) };
    VTTBR_EL2.set(saved);
    crate::sysreg::isb();
}

macro_rules! el1_regs {
    ($m:ident) => {
        $m!(sctlr, SCTLR_EL1);
        $m!(cpacr, CPACR_EL1);
        $m!(ttbr0, TTBR0_EL1);
        $m!(ttbr1, TTBR1_EL1);
        $m!(tcr, TCR_EL1);
        $m!(mair, MAIR_EL1);
        $m!(amair, AMAIR_EL1);
        $m!(vbar, VBAR_EL1);
        $m!(contextidr, CONTEXTIDR_EL1);
        $m!(tpidr_el0, TPIDR_EL0);
        $m!(tpidrro_el0, TPIDRRO_EL0);
        $m!(tpidr_el1, TPIDR_EL1);
        $m!(sp_el0, SP_EL0);
        $m!(sp_el1, SP_EL1);
        $m!(elr_el1, ELR_EL1);
        $m!(spsr_el1, SPSR_EL1);
        $m!(esr_el1, ESR_EL1);
        $m!(far_el1, FAR_EL1);
        $m!(afsr0, AFSR0_EL1);
        $m!(afsr1, AFSR1_EL1);
        $m!(par, PAR_EL1);
        $m!(csselr, CSSELR_EL1);
        $m!(cntkctl, CNTKCTL_EL1);
        $m!(cntv_ctl, CNTV_CTL_EL0);
        $m!(cntv_cval, CNTV_CVAL_EL0);
    };
}

/// Load a vCPU's EL1 registers into the CPU.
pub fn load_el1(r: &El1Regs) {
    macro_rules! load {
        ($f:ident, $reg:ident) => {
            aarch64_cpu::registers::$reg.set(r.$f)
        };
    }
    el1_regs!(load);
    crate::sysreg::isb();
}

/// Save the CPU's EL1 registers into a vCPU.
pub fn save_el1(r: &mut El1Regs) {
    macro_rules! save {
        ($f:ident, $reg:ident) => {
            r.$f = aarch64_cpu::registers::$reg.get()
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
