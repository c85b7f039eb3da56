//! Which partition runs next, per physical CPU: every CPU has its own run
//! queue, a weighted fair share (virtual runtime) over the partitions homed
//! on it, each weighted by its manifest's priority — a blend of
//! `deadline_urgency` and `cut_pressure` (`rvm_coherence::Priority`).
//!
//! A partition gets its home CPU when it is admitted: the CPU whose queue
//! carries the least weight (ties: the lowest CPU). It then runs only there,
//! so the EL1 and FP/SIMD state a CPU keeps loaded for its last partition
//! stays valid (nothing migrates, so nothing has to be saved to move it).
//!
//! A partition that gives up the CPU (`Yield`, `wfi`) is charged the whole
//! slice it forfeited, so a polling agent passes the CPU on instead of being
//! picked again at once for having run only briefly.

use alloc::vec::Vec;

use rvm_abi::bundle::PartitionDesc;
use rvm_coherence::{BlendPolicy, FairShare, Priority, SchedEntity, ShareWeight, WeightCurve};

use crate::arch::CpuId;

/// Most CPUs the scheduler spreads partitions over.
pub const MAX_CPUS: usize = 8;

/// One CPU's run queue.
struct RunQueue {
    share: FairShare,
    /// Partitions homed here, in admission order.
    members: Vec<usize>,
    /// Sum of their weights: what placement balances.
    load: u64,
}

impl RunQueue {
    fn new(capacity: usize) -> Self {
        Self { share: FairShare::new(capacity), members: Vec::new(), load: 0 }
    }
}

/// The run queues of every CPU and where each partition lives.
pub struct Scheduler {
    queues: Vec<RunQueue>,
    /// Per partition: its weight and home CPU (`None` until admitted).
    placed: Vec<Option<(ShareWeight, CpuId)>>,
    capacity: usize,
    curve: WeightCurve,
    blend: BlendPolicy,
}

fn entity(idx: usize) -> SchedEntity {
    SchedEntity(u32::try_from(idx).unwrap_or(u32::MAX))
}

impl Scheduler {
    /// A scheduler for up to `partitions` partitions on one CPU (the boot
    /// CPU); [`Scheduler::set_cpus`] spreads them over more.
    pub fn new(partitions: usize) -> Self {
        Self {
            queues: alloc::vec![RunQueue::new(partitions.max(crate::partition::MAX_PARTITIONS))],
            placed: Vec::with_capacity(partitions),
            // Room for partitions created during the run (splits) as well.
            capacity: partitions.max(crate::partition::MAX_PARTITIONS),
            curve: WeightCurve::DEFAULT,
            blend: BlendPolicy::DEFAULT,
        }
    }

    /// CPUs with a run queue.
    pub fn cpus(&self) -> usize {
        self.queues.len()
    }

    /// The share weight a partition's manifest earns.
    pub fn weight_for(&self, desc: &PartitionDesc) -> ShareWeight {
        self.curve.weight(Priority::of_partition(desc, None, self.blend))
    }

    /// Add partition `idx` (not yet runnable) on the least loaded CPU;
    /// returns its home.
    pub fn admit(&mut self, idx: usize, desc: &PartitionDesc) -> CpuId {
        let weight = self.weight_for(desc);
        self.place(idx, weight)
    }

    fn place(&mut self, idx: usize, weight: ShareWeight) -> CpuId {
        let cpu = self
            .queues
            .iter()
            .enumerate()
            .min_by_key(|(n, q)| (q.load, *n))
            .map_or(0, |(n, _)| n);
        let q = &mut self.queues[cpu];
        if q.share.add(entity(idx), weight, false).is_ok() {
            q.members.push(idx);
            q.load += u64::from(weight.get());
        }
        if self.placed.len() <= idx {
            self.placed.resize(idx + 1, None);
        }
        let home = CpuId(u8::try_from(cpu).unwrap_or(u8::MAX));
        self.placed[idx] = Some((weight, home));
        home
    }

    /// Spread the admitted partitions over `cpus` run queues (1 ..=
    /// [`MAX_CPUS`]), in admission order, each on the least loaded. Only
    /// before the run starts: charged time is forgotten.
    pub fn set_cpus(&mut self, cpus: usize) {
        let cpus = cpus.clamp(1, MAX_CPUS);
        let placed = core::mem::take(&mut self.placed);
        self.queues = (0..cpus).map(|_| RunQueue::new(self.capacity)).collect();
        for (idx, p) in placed.iter().enumerate() {
            if let Some((weight, _)) = p {
                self.place(idx, *weight);
            }
        }
    }

    /// Partition `idx`'s home CPU.
    pub fn home(&self, idx: usize) -> Option<CpuId> {
        self.placed.get(idx).copied().flatten().map(|(_, cpu)| cpu)
    }

    /// Partitions homed on `cpu`.
    pub fn members(&self, cpu: CpuId) -> &[usize] {
        self.queues.get(cpu.index()).map_or(&[], |q| q.members.as_slice())
    }

    /// The runnable partition homed on `cpu` with the least virtual runtime;
    /// `runnable` says which partitions may run now.
    pub fn pick(&mut self, cpu: CpuId, runnable: impl Fn(usize) -> bool) -> Option<usize> {
        let q = self.queues.get_mut(cpu.index())?;
        for &idx in &q.members {
            let _ = q.share.set_runnable(entity(idx), runnable(idx));
        }
        q.share.pick().and_then(|e| usize::try_from(e.0).ok())
    }

    /// Partition `idx` used `ran_ns` of its home CPU.
    pub fn charge(&mut self, idx: usize, ran_ns: u64) {
        if let Some(cpu) = self.home(idx) {
            let _ = self.queues[cpu.index()].share.charge(entity(idx), ran_ns);
        }
    }

    /// CPU time partition `idx` has been charged.
    pub fn ran_ns(&self, idx: usize) -> u64 {
        self.home(idx)
            .and_then(|cpu| self.queues[cpu.index()].share.ran_ns(entity(idx)))
            .unwrap_or(0)
    }
}
