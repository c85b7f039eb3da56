//! Which partition runs next: weighted fair share (virtual runtime) over the
//! runnable partitions, each weighted by its manifest's priority — a blend of
//! `deadline_urgency` and `cut_pressure` (`rvm_coherence::Priority`).
//!
//! A partition that gives up the CPU (`Yield`, `wfi`) is charged the whole
//! slice it forfeited, so a polling agent passes the CPU on instead of being
//! picked again at once for having run only briefly.

use rvm_abi::bundle::PartitionDesc;
use rvm_coherence::{BlendPolicy, FairShare, Priority, SchedEntity, ShareWeight, WeightCurve};

/// The boot CPU's run queue.
pub struct Scheduler {
    share: FairShare,
    curve: WeightCurve,
    blend: BlendPolicy,
}

fn entity(idx: usize) -> SchedEntity {
    SchedEntity(u32::try_from(idx).unwrap_or(u32::MAX))
}

impl Scheduler {
    pub fn new(partitions: usize) -> Self {
        Self { share: FairShare::new(partitions), curve: WeightCurve::DEFAULT, blend: BlendPolicy::DEFAULT }
    }

    /// The share weight a partition's manifest earns.
    pub fn weight_for(&self, desc: &PartitionDesc) -> ShareWeight {
        self.curve.weight(Priority::of_partition(desc, None, self.blend))
    }

    /// Add partition `idx` (not yet runnable).
    pub fn admit(&mut self, idx: usize, desc: &PartitionDesc) {
        let _ = self.share.add(entity(idx), self.weight_for(desc), false);
    }

    /// The runnable partition with the least virtual runtime; `runnable`
    /// says which of the `n` partitions may run now.
    pub fn pick(&mut self, n: usize, runnable: impl Fn(usize) -> bool) -> Option<usize> {
        for idx in 0..n {
            let _ = self.share.set_runnable(entity(idx), runnable(idx));
        }
        self.share.pick().and_then(|e| usize::try_from(e.0).ok())
    }

    /// Partition `idx` used `ran_ns` of CPU.
    pub fn charge(&mut self, idx: usize, ran_ns: u64) {
        let _ = self.share.charge(entity(idx), ran_ns);
    }

    /// CPU time partition `idx` has been charged.
    pub fn ran_ns(&self, idx: usize) -> u64 {
        self.share.ran_ns(entity(idx)).unwrap_or(0)
    }
}
