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

//!
//! `aarch64-cpu` types `MDCR_EL2` but none of the PMU's own registers
//! (`PMCR_EL0`, `PMCNTENSET_EL0`, `PMCCFILTR_EL0`, `PMCCNTR_EL0`): those are
//! read and written raw (`sysreg`), with their fields here.

use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{Writeable, MDCR_EL2};
use tock_registers::fields::FieldValue;
use tock_registers::register_bitfields;
use tock_registers::LocalRegisterCopy;

register_bitfields! {u64,
    PMCR [
        /// Number of event counters implemented.
        N OFFSET(11) NUMBITS(5) [],
        /// Reset the cycle counter.
        C OFFSET(2) NUMBITS(1) [],
        /// Enable the counters.
        E OFFSET(0) NUMBITS(1) []
    ],
    PMCNTENSET [
        /// Enable the cycle counter.
        C OFFSET(31) NUMBITS(1) []
    ],
    PMCCFILTR [
        /// Count at EL2.
        NSH OFFSET(27) NUMBITS(1) []
    ]
}

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
pub fn mdcr_el2(n: u64) -> FieldValue<u64, MDCR_EL2::Register> {
    let pmu = if lent_to_el1() {
        MDCR_EL2::TPM::CLEAR + MDCR_EL2::TPMCR::CLEAR
    } else {
        MDCR_EL2::TPM::SET + MDCR_EL2::TPMCR::SET
    };
    MDCR_EL2::HPMN.val(n) + pmu + MDCR_EL2::TDA::SET + MDCR_EL2::TDOSA::SET + MDCR_EL2::TDRA::SET
}

/// Start the cycle counter counting at EL1 and EL2, and trap EL1's access
/// to the PMU and debug registers. Call once per CPU.
pub fn enable() {
    crate::sysreg_write!("pmccfiltr_el0", PMCCFILTR::NSH::SET.value);
    crate::sysreg_write!("pmcntenset_el0", PMCNTENSET::C::SET.value);
    let pmcr = (PMCR::E::SET + PMCR::C::SET).modify(crate::sysreg_read!("pmcr_el0"));
    crate::sysreg_write!("pmcr_el0", pmcr);
    let n = LocalRegisterCopy::<u64, PMCR::Register>::new(crate::sysreg_read!("pmcr_el0")).read(PMCR::N);
    MDCR_EL2.write(mdcr_el2(n));
    crate::sysreg::isb();
}

/// The cycle (instruction, under `-icount`) counter.
pub fn read() -> u64 {
    crate::sysreg::isb();
    crate::sysreg_read!("pmccntr_el0")
}
