//! System registers: `aarch64-cpu`'s typed registers wherever it names
//! one, and a raw accessor for the few it does not.
//!
//! `aarch64_cpu::registers` has no type for `CNTHP_CVAL_EL2`, the PMU's
//! `PMCR_EL0`, `PMCNTENSET_EL0`, `PMCCFILTR_EL0` and `PMCCNTR_EL0`, or the
//! GICv3 CPU interface's `ICC_PMR_EL1`, `ICC_IGRPEN1_EL1`, `ICC_IAR1_EL1`,
//! `ICC_EOIR1_EL1` and `ICC_SGI1R_EL1`: those go through [`sysreg_read!`]
//! and [`sysreg_write!`], one `mrs`/`msr` each, as the typed ones do.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{CurrentEL, Readable, MPIDR_EL1};

/// Read a system register `aarch64-cpu` does not name:
/// `sysreg_read!("pmccntr_el0")`.
#[macro_export]
macro_rules! sysreg_read {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: `mrs` only copies a system register into a general
        // register: no memory is touched, and the caller names a register
        // that exists and is readable at EL2.
        unsafe { core::arch::asm!(concat!("mrs {0}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Write a system register `aarch64-cpu` does not name:
/// `sysreg_write!("cnthp_cval_el2", v)`.
#[macro_export]
macro_rules! sysreg_write {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the caller writes a value valid for this EL2-accessible
        // register; registers written this way configure the timer, the PMU
        // or the interrupt controller's CPU interface and never alias memory
        // Rust owns. Without `nomem`, the write also stays in program order
        // with the memory accesses around it.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {0}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

/// Instruction synchronization barrier.
#[inline(always)]
pub fn isb() {
    barrier::isb(barrier::SY);
}

/// Full-system data synchronization barrier.
#[inline(always)]
pub fn dsb_sy() {
    barrier::dsb(barrier::SY);
}

/// Inner-shareable store barrier (before a table walker may see a write).
#[inline(always)]
pub fn dsb_ishst() {
    barrier::dsb(barrier::ISHST);
}

/// The exception level the CPU is running at.
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// This CPU's affinity (MPIDR_EL1 Aff3, Aff2, Aff1, Aff0 in their places).
pub fn mpidr() -> u64 {
    let m = MPIDR_EL1.extract();
    m.read(MPIDR_EL1::Aff3) << 32 | m.read(MPIDR_EL1::Aff2) << 16 | m.read(MPIDR_EL1::Aff1) << 8 | m.read(MPIDR_EL1::Aff0)
}
