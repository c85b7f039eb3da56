//! The generic timer: the counter as the kernel's clock, and the EL2
//! physical timer (CNTHP) that preempts guests.

use aarch64_cpu::registers::{Readable, Writeable, CNTFRQ_EL0, CNTHP_CTL_EL2, CNTPCT_EL0};

/// Counter frequency in Hz.
pub fn frequency() -> u64 {
    CNTFRQ_EL0.get().max(1)
}

/// The physical counter.
pub fn counter() -> u64 {
    crate::sysreg::isb();
    CNTPCT_EL0.get()
}

/// Conversions between counter ticks and nanoseconds as 32.32 fixed-point
/// multipliers, computed once, so the hot path never divides.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    ns_per_tick: u64,
    ticks_per_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        let f = u128::from(frequency());
        let ns_per_tick = u64::try_from((1_000_000_000u128 << 32) / f).unwrap_or(u64::MAX);
        let ticks_per_ns = u64::try_from((f << 32) / 1_000_000_000).unwrap_or(u64::MAX);
        Self { ns_per_tick, ticks_per_ns }
    }

    /// Nanoseconds since the counter started.
    pub fn now_ns(&self) -> u64 {
        self.ticks_to_ns(counter())
    }

    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.ns_per_tick)) >> 32) as u64
    }

    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        ((u128::from(ns) * u128::from(self.ticks_per_ns)) >> 32) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Arm the hypervisor timer to fire when the counter reaches `ticks`.
/// (`aarch64-cpu` has no type for `CNTHP_CVAL_EL2`: see `sysreg`.)
pub fn arm_hyp_timer_at(ticks: u64) {
    crate::sysreg_write!("cnthp_cval_el2", ticks);
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
}

/// Stop the hypervisor timer (and clear its interrupt).
pub fn disarm_hyp_timer() {
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR + CNTHP_CTL_EL2::IMASK::SET);
}
