//! The cycle counter as a deterministic cost metric: under QEMU with
//! `-icount shift=0`, PMCCNTR counts instructions. PMCCFILTR bit 27 (NSH)
//! makes it count at EL2 as well as EL1.

const PMCR_E: u64 = 1 << 0;
const PMCR_C: u64 = 1 << 2;
const PMCNTEN_C: u64 = 1 << 31;
const PMCCFILTR_NSH: u64 = 1 << 27;

/// Start the cycle counter counting at EL1 and EL2; let EL1 read it.
pub fn enable() {
    crate::sysreg_write!("pmccfiltr_el0", PMCCFILTR_NSH);
    crate::sysreg_write!("pmcntenset_el0", PMCNTEN_C);
    let pmcr = crate::sysreg_read!("pmcr_el0");
    crate::sysreg_write!("pmcr_el0", pmcr | PMCR_E | PMCR_C);
    // MDCR_EL2: keep EL1 access to the PMU (TPM/TPMCR clear), HPMN = all.
    let n = (crate::sysreg_read!("pmcr_el0") >> 11) & 0x1f;
    crate::sysreg_write!("mdcr_el2", n);
    crate::sysreg::isb();
}

/// The cycle (instruction, under `-icount`) counter.
pub fn read() -> u64 {
    crate::sysreg::isb();
    crate::sysreg_read!("pmccntr_el0")
}
