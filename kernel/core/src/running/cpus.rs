//! What the kernel keeps about the CPUs: which partition runs where, which
//! EL1 state each CPU holds, orders waiting for a partition to come back,
//! and whether the run is ending. The run loop that changes it is
//! [`crate::running::smp`].

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::arch::CpuId;
use crate::running::vcpu::Vcpu;

/// An order that must wait until the partition is back from its CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeferredOrder {
    /// F4 eviction ordered by the operator.
    Evict,
}

/// What the kernel keeps about one CPU.
#[derive(Debug, Default)]
pub(crate) struct CpuSlot {
    /// The partition whose EL1/FP state this CPU's registers hold.
    pub(super) loaded: Option<usize>,
    /// The placeholder a partition holds while its vCPU is leased.
    pub(super) spare: Option<Box<Vcpu>>,
    /// This CPU has left the run.
    pub(super) stopped: bool,
    /// Slices it ran, and times it idled.
    pub(super) slices: u64,
    pub(super) idles: u64,
    /// It is in (or on its way to) an idle wait: its last step was
    /// [`Step::Idle`].
    pub(super) idling: bool,
    /// It was kicked during this wait (one kick per wait is enough).
    pub(super) kicked: bool,
    /// Kicks the machine sent it over the run.
    pub(super) kicks: u64,
}

/// Per-CPU kernel state: the CPUs, which partition runs where, deferred
/// orders, and whether the run is ending.
#[derive(Debug, Default)]
pub struct SmpState {
    pub(super) cpus: Vec<CpuSlot>,
    /// Per partition: the CPU its guest runs on right now.
    pub(super) running_on: Vec<Option<CpuId>>,
    /// Per partition: a bit per CPU it has run on.
    pub(super) ran_on: Vec<u32>,
    pub(super) deferred: Vec<(usize, DeferredOrder)>,
    pub(super) started_ns: Option<u64>,
    pub(super) stopping: bool,
    /// A partition became runnable since idle CPUs were last looked at.
    pub(super) woke: bool,
}

impl SmpState {
    /// One CPU, the boot CPU.
    pub fn new() -> Self {
        Self { cpus: alloc::vec![CpuSlot::default()], ..Self::default() }
    }

    /// Partition `idx` was recreated: whatever EL1/FP state a CPU holds for
    /// it is stale, so it must be neither saved nor kept.
    pub(crate) fn forget_loaded(&mut self, idx: usize) {
        for c in &mut self.cpus {
            if c.loaded == Some(idx) {
                c.loaded = None;
            }
        }
    }

    /// A partition moved into a runnable state: idle CPUs are looked at
    /// (and kicked if it is theirs) before the kernel lock is released.
    pub(crate) fn note_runnable(&mut self) {
        self.woke = true;
    }

    /// Use `cpus` CPUs (slots for each). Before any CPU runs.
    pub(crate) fn set_cpus(&mut self, cpus: usize) {
        self.cpus = (0..cpus).map(|_| CpuSlot::default()).collect();
    }

    /// CPUs the run uses.
    pub(crate) fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    /// The CPUs partition `idx` has run on so far.
    pub(crate) fn ran_on(&self, idx: usize) -> RanOn {
        RanOn(self.ran_on.get(idx).copied().unwrap_or(0))
    }

    /// Orders waiting for their partition to come back from its CPU.
    pub(crate) fn deferred_count(&self) -> usize {
        self.deferred.len()
    }

    /// Carry out `order` against partition `idx` when it is back.
    pub(crate) fn defer(&mut self, idx: usize, order: DeferredOrder) {
        if !self.deferred.contains(&(idx, order)) {
            self.deferred.push((idx, order));
        }
    }

    /// Per CPU: slices run, idle waits, kicks that ended a wait early.
    pub(crate) fn cpu_figures(&self) -> impl Iterator<Item = (CpuId, u64, u64, u64)> + '_ {
        self.cpus.iter().enumerate().map(|(n, c)| (CpuId(u8::try_from(n).unwrap_or(u8::MAX)), c.slices, c.idles, c.kicks))
    }

    /// Whether every CPU has left the run.
    pub(crate) fn all_stopped(&self) -> bool {
        self.cpus.iter().all(|c| c.stopped)
    }

    /// Whether the run is ending.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping
    }

    /// Kicks sent to CPU `cpu` over the run.
    pub(crate) fn kicks_sent(&self, cpu: CpuId) -> u64 {
        self.cpus.get(cpu.index()).map_or(0, |c| c.kicks)
    }

    /// The run's start (first pick on any CPU).
    pub(crate) fn started_ns(&self) -> Option<u64> {
        self.started_ns
    }

    /// Start the run afresh; `stopping` if it must not start at all.
    #[cfg(any(test, feature = "fake"))]
    pub(crate) fn restart(&mut self, stopping: bool) {
        self.stopping = stopping;
        self.started_ns = None;
        for c in &mut self.cpus {
            c.stopped = false;
        }
    }

    /// Stop every CPU at its next step.
    pub(crate) fn stop(&mut self) {
        self.stopping = true;
    }

    pub(crate) fn running_on(&self, idx: usize) -> Option<CpuId> {
        self.running_on.get(idx).copied().flatten()
    }

    pub(super) fn set_running(&mut self, idx: usize, cpu: Option<CpuId>) {
        if self.running_on.len() <= idx {
            self.running_on.resize(idx + 1, None);
            self.ran_on.resize(idx + 1, 0);
        }
        self.running_on[idx] = cpu;
        if let Some(c) = cpu {
            self.ran_on[idx] |= 1u32.checked_shl(u32::from(c.0)).unwrap_or(0);
        }
    }
}

/// The CPUs partition `idx` ran on, lowest first.
pub struct RanOn(pub(super) u32);

impl RanOn {
    /// Whether it ran at all.
    pub fn any(&self) -> bool {
        self.0 != 0
    }

    /// The CPUs, lowest first.
    pub fn cpus(&self) -> impl Iterator<Item = CpuId> + '_ {
        (0u8..32).filter(|c| self.0 & (1 << c) != 0).map(CpuId)
    }
}

impl core::fmt::Display for RanOn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if !self.any() {
            return f.write_str("-");
        }
        for (n, c) in self.cpus().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

