//! The cycle counter as a deterministic cost metric: under QEMU with
//! `-icount shift=0`, PMCCNTR counts instructions. PMCCFILTR bit 27 (NSH)
//! makes it count at EL2 as well as EL1.
//!
//! The PMU and the debug registers are one set per CPU, shared by every
//! partition that runs there and not switched: a partition that could read
//! the cycle counter (which counts the hypervisor's work too) or program
//! a breakpoint or watchpoint would see, or disturb, its neighbours.
//! `MDCR_EL2` therefore traps every EL1/EL0 access to them to EL2 (EC 0x18,
//! a fault of the partition): TPM and TPMCR (PMU), TDA (debug registers),
//! TDOSA (OS lock and power-down registers), TDRA (the debug ROM address).
//! The hypervisor's own use at EL2 is not affected.
//!
//! The instruction-count benchmark (`make bench-qemu`) measures hypercall
//! round trips from EL1 with this counter; it boots with `rvm.bench=pmu`,
//! which [`lend_to_el1`] turns into leaving the PMU (only the PMU) to EL1.
//! No tenant chooses the kernel command line; the loader never sets it.

use core::sync::atomic::{AtomicBool, Ordering};

const PMCR_E: u64 = 1 << 0;
const PMCR_C: u64 = 1 << 2;
const PMCNTEN_C: u64 = 1 << 31;
const PMCCFILTR_NSH: u64 = 1 << 27;

/// MDCR_EL2 trap bits.
const MDCR_TPMCR: u64 = 1 << 5;
const MDCR_TPM: u64 = 1 << 6;
const MDCR_TDA: u64 = 1 << 9;
const MDCR_TDOSA: u64 = 1 << 10;
const MDCR_TDRA: u64 = 1 << 11;

/// `rvm.bench=pmu`: leave the PMU to EL1 (benchmarks only).
static LENT_TO_EL1: AtomicBool = AtomicBool::new(false);

/// Leave the PMU untrapped at EL1 on every CPU that calls [`enable`] after
/// this (`rvm.bench=pmu`, for the instruction-count benchmark only).
pub fn lend_to_el1(lend: bool) {
    LENT_TO_EL1.store(lend, Ordering::Release);
    if lend {
        crate::print!("rvm: warning: PMU left to EL1 (rvm.bench=pmu): partitions can read the cycle counter\n");
    }
}

/// Whether EL1 may use the PMU (see [`lend_to_el1`]).
pub fn lent_to_el1() -> bool {
    LENT_TO_EL1.load(Ordering::Acquire)
}

/// MDCR_EL2 for this boot: HPMN = every event counter (`n`), and the
/// PMU, debug, OS lock and debug ROM traps (the PMU ones unless lent).
pub fn mdcr_el2(n: u64) -> u64 {
    let pmu = if lent_to_el1() { 0 } else { MDCR_TPM | MDCR_TPMCR };
    (n & 0x1f) | pmu | MDCR_TDA | MDCR_TDOSA | MDCR_TDRA
}

/// Start the cycle counter counting at EL1 and EL2, and trap EL1's access
/// to the PMU and debug registers. Call once per CPU.
pub fn enable() {
    crate::sysreg_write!("pmccfiltr_el0", PMCCFILTR_NSH);
    crate::sysreg_write!("pmcntenset_el0", PMCNTEN_C);
    let pmcr = crate::sysreg_read!("pmcr_el0");
    crate::sysreg_write!("pmcr_el0", pmcr | PMCR_E | PMCR_C);
    let n = (crate::sysreg_read!("pmcr_el0") >> 11) & 0x1f;
    crate::sysreg_write!("mdcr_el2", mdcr_el2(n));
    crate::sysreg::isb();
}

/// The cycle (instruction, under `-icount`) counter.
pub fn read() -> u64 {
    crate::sysreg::isb();
    crate::sysreg_read!("pmccntr_el0")
}
