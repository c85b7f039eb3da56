//! The generic timer: the counter as the kernel's clock, and the EL2
//! physical timer (CNTHP) that preempts guests.

/// Counter frequency in Hz.
pub fn frequency() -> u64 {
    crate::sysreg_read!("cntfrq_el0").max(1)
}

/// The physical counter.
pub fn counter() -> u64 {
    crate::sysreg::isb();
    crate::sysreg_read!("cntpct_el0")
}

/// Nanoseconds since the counter started.
pub fn now_ns() -> u64 {
    let f = u128::from(frequency());
    u64::try_from(u128::from(counter()) * 1_000_000_000 / f).unwrap_or(u64::MAX)
}

/// Arm the hypervisor timer to fire `ns` from now.
pub fn arm_hyp_timer(ns: u64) {
    let ticks = u128::from(ns) * u128::from(frequency()) / 1_000_000_000;
    let ticks = u64::try_from(ticks).unwrap_or(u64::from(u32::MAX)).clamp(1, u64::from(i32::MAX as u32));
    crate::sysreg_write!("cnthp_tval_el2", ticks);
    crate::sysreg_write!("cnthp_ctl_el2", 1);
    crate::sysreg::isb();
}

/// Stop the hypervisor timer (and clear its interrupt).
pub fn disarm_hyp_timer() {
    crate::sysreg_write!("cnthp_ctl_el2", 0b10);
    crate::sysreg::isb();
}
