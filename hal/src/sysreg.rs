//! Raw system-register access for registers `aarch64-cpu` does not name.

/// Read a system register by name: `read!("cnthp_ctl_el2")`.
#[macro_export]
macro_rules! sysreg_read {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no side effects on memory;
        // the caller names a register that exists at EL2.
        unsafe { core::arch::asm!(concat!("mrs {0}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Write a system register by name: `write!("cnthp_tval_el2", v)`.
#[macro_export]
macro_rules! sysreg_write {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the caller writes a value valid for this EL2-accessible
        // register; registers used this way configure timers, traps or guest
        // state and never alias memory Rust owns.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {0}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

/// Instruction synchronization barrier.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no memory effects Rust can observe.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

/// Full-system data synchronization barrier.
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: as above.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Inner-shareable store barrier (before a table walker may see a write).
#[inline(always)]
pub fn dsb_ishst() {
    // SAFETY: as above.
    unsafe { core::arch::asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// The exception level the CPU is running at.
pub fn current_el() -> u64 {
    (sysreg_read!("CurrentEL") >> 2) & 3
}

/// This CPU's affinity (MPIDR_EL1 Aff0..Aff3).
pub fn mpidr() -> u64 {
    sysreg_read!("mpidr_el1") & 0xff_00ff_ffff
}
