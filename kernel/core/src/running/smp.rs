//! Running partitions on several physical CPUs.
//!
//! # Locks
//!
//! There is one lock, the **kernel lock** ([`KernelLock`]): a ticket spin
//! lock around the whole [`Hypervisor`], so CPUs take turns in the order
//! they asked. A CPU holds it for all EL2 work —
//! choosing the next partition, handling a guest exit (hypercall dispatch,
//! witness appends, channels, capabilities, recovery), housekeeping — and
//! releases it while a guest runs. The machine's own locks (the console
//! UART's, the heap allocator's) are taken inside it and never the other way
//! round, so there is no order to get wrong.
//!
//! # The running vCPU
//!
//! While a partition's guest runs on a CPU, its vCPU is not in the
//! partition: it is moved out in a [`Lease`] that the CPU owns with the lock
//! released (the partition keeps a placeholder), and `running_on` names that
//! CPU. Nothing else can reach the running registers. An order that would
//! tear the partition down or recreate it (an operator's eviction, …) is
//! [deferred](Hypervisor::defer) and carried out by the CPU that runs it when
//! its guest exits — at the latest at the end of the slice.
//!
//! # One CPU's loop
//!
//! [`Hypervisor::cpu_next`] (under the lock) does the housekeeping and picks
//! from the CPU's own run queue ([`crate::running::sched`]); the CPU runs the lease
//! with the lock free ([`Lease::run`]); [`Hypervisor::cpu_exit`] (under the
//! lock) hands the vCPU back, handles the exit and says what comes next.
//! [`cpu_main`] is that loop for real CPUs; the fake machine interleaves the
//! same steps deterministically ([`crate::fake`]).
//!
//! # Waking an idle CPU
//!
//! A CPU with nothing runnable on its queue idles ([`Step::Idle`]): the boot
//! CPU until its next tick at the latest (it keeps the housekeeping), a
//! secondary until a kick when the machine has them (or its tick when not,
//! or when one of its partitions waits for its output credit). Work for it
//! appears on other CPUs, under the
//! lock: a message wakes a `Dormant` partition homed on it, an unfence, a
//! partition created by a split is admitted to its queue. Every state
//! transition into a runnable state marks the kernel (`woke`); before the
//! CPU that made it releases the lock, it kicks ([`Arch::kick`]) each idling
//! CPU whose queue now has a partition to run, once per wait. The idle CPU's
//! wait ends on the kick and it picks at once, instead of a tick later. When
//! the run ends, idling CPUs are kicked so they stop at once too.
//!
//! A partition waiting in a receive ([`crate::dispatch::waits`]) is
//! runnable but does not run; an idle CPU wakes for the earliest such
//! receive's deadline at the latest.
//!
//! The run ends for everyone when no partition anywhere can run (none runs
//! either) and none waits with a deadline, or the run budget is spent: every CPU then stops; the boot CPU waits for the others
//! ([`Hypervisor::all_cpus_stopped`]) and calls [`Hypervisor::finish_run`],
//! which signs the logs and prints the summary.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{Arch, CpuArch, CpuId, Stage2Context, TrapInfo};
use crate::report::RunSummary;
use crate::running::trap::Flow;
use crate::state::Hypervisor;
use crate::running::trap::Exit;
use crate::running::cpus::DeferredOrder;
use crate::running::vcpu::Vcpu;

/// Longest a secondary CPU with nothing to do sleeps without a kick: a
/// safety net (everything that makes work for it kicks it).
const SECONDARY_IDLE_MAX_NS: u64 = 1_000_000_000;

/// How often an idle boot CPU looks for the host's frames while a partition
/// waits for one (`StateSaved`, `ToolAnswer`): the answer's latency, at the
/// cost of a wake-up per period only while someone waits.
const HOST_POLL_NS: u64 = 250_000;
use rvm_abi::Hypercall;

/// The kernel lock: the one lock around all kernel state. CPUs get it in
/// the order they asked (a ticket lock), so a CPU whose guest exits often
/// cannot keep the others out.
pub struct KernelLock<A: Arch> {
    /// The next ticket to hand out.
    next: AtomicU64,
    /// The ticket whose holder may take the kernel now.
    serving: AtomicU64,
    kernel: spin::Mutex<Hypervisor<A>>,
}

impl<A: Arch> KernelLock<A> {
    /// Put `hv` behind the lock.
    pub fn new(hv: Hypervisor<A>) -> Self {
        Self { next: AtomicU64::new(0), serving: AtomicU64::new(0), kernel: spin::Mutex::new(hv) }
    }

    /// Take the lock on CPU `hw`, waiting the way that CPU waits
    /// ([`CpuArch::wait_for_lock`]) until its turn.
    pub fn lock<C: CpuArch>(&self, hw: &mut C) -> KernelGuard<'_, A> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        loop {
            let serving = self.serving.load(Ordering::Acquire);
            if serving == ticket {
                break;
            }
            hw.wait_for_lock(ticket.wrapping_sub(serving));
        }
        // Our turn: the previous holder released the mutex before it
        // advanced `serving`, so this does not wait.
        KernelGuard { guard: Some(self.kernel.lock()), serving: &self.serving }
    }
}

/// The kernel, held under the kernel lock; dropping it passes the lock on.
pub struct KernelGuard<'a, A: Arch> {
    guard: Option<spin::MutexGuard<'a, Hypervisor<A>>>,
    serving: &'a AtomicU64,
}

impl<A: Arch> core::ops::Deref for KernelGuard<'_, A> {
    type Target = Hypervisor<A>;
    fn deref(&self) -> &Hypervisor<A> {
        self.guard.as_deref().expect("the kernel is held until the guard drops")
    }
}

impl<A: Arch> core::ops::DerefMut for KernelGuard<'_, A> {
    fn deref_mut(&mut self) -> &mut Hypervisor<A> {
        self.guard.as_deref_mut().expect("the kernel is held until the guard drops")
    }
}

impl<A: Arch> Drop for KernelGuard<'_, A> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.serving.fetch_add(1, Ordering::Release);
    }
}

/// What a CPU does next.
#[derive(Debug)]
pub enum Step {
    /// Run this vCPU (release the kernel lock first).
    Run(Lease),
    /// Nothing runnable here: wait (lock released) until about `until_ns`.
    Idle { until_ns: u64 },
    /// The run is over for this CPU.
    Stop,
}

/// A partition's vCPU, taken out of the kernel for the time its guest runs
/// on one CPU.
#[derive(Debug)]
pub struct Lease {
    cpu: CpuId,
    idx: usize,
    vcpu: Box<Vcpu>,
    stage2: Stage2Context,
    slice_start: u64,
    slice_end: u64,
    switched: bool,
    /// The vCPU went back to its partition (`vcpu` is the placeholder) and
    /// the guest left the CPU with `flow`.
    returned: bool,
    flow: Flow,
}

impl Lease {
    /// Index of the partition whose vCPU this is.
    pub fn partition(&self) -> usize {
        self.idx
    }

    /// The CPU it was leased to.
    pub fn cpu(&self) -> CpuId {
        self.cpu
    }

    /// Answer an exit that needs no kernel state, on the leased CPU without
    /// the kernel lock: the `Null` hypercall (it changes nothing, is not
    /// witnessed, and answers status 0). True if answered: the guest goes on
    /// at once. Anything else — including every witnessed call and `Yield` —
    /// is handled under the lock ([`Hypervisor::cpu_exit_fast`]). Orders
    /// deferred against the partition wait for that next locked exit, at the
    /// latest the end of the slice (the timer's exit), as before.
    #[inline]
    pub fn answer_without_lock(&mut self, trap: &TrapInfo) -> bool {
        // x0 first: the cheapest test, and it rules out nearly every other
        // exit before the syndrome is decoded.
        if self.vcpu.regs.x[0] != u64::from(Hypercall::Null.function_id()) {
            return false;
        }
        if !matches!(Exit::decode(trap), Exit::Hvc { imm: 0 }) {
            return false;
        }
        self.vcpu.set_return(0, &[]);
        true
    }

    /// Enter the guest on `hw` (the CPU it was leased to) until it exits.
    pub fn run(&mut self, hw: &mut impl CpuArch) -> TrapInfo {
        debug_assert_eq!(hw.cpu(), self.cpu);
        debug_assert!(!self.returned);
        let trap = hw.run_vcpu(&mut self.vcpu, self.stage2, self.slice_end, self.switched);
        self.switched = false;
        trap
    }
}

impl<A: Arch> Hypervisor<A> {
    /// Under the kernel lock: global housekeeping, then the next thing CPU
    /// `hw` does — run a partition from its queue, idle, or stop.
    pub fn cpu_next(&mut self, hw: &mut impl CpuArch) -> Step {
        let cpu = hw.cpu();
        let now = self.arch.now_ns();
        self.smp.started_ns.get_or_insert(now);
        if !self.smp.stopping {
            self.housekeeping();
        }
        // The run is over when nothing can run and nothing waits for a
        // deadline (a receiver waiting with none can only be woken by a
        // partition that runs).
        let next_deadline = match (crate::dispatch::waits::next_deadline(self), crate::tool_calls::next_deadline(self)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // An instance goes on idle: a `shutdown` order ends it.
        if !self.smp.stopping && !self.policy.instance && !self.partitions.iter().any(|p| p.can_run()) && next_deadline.is_none() {
            self.smp.stopping = true;
        }
        if let Some(slot) = self.smp.cpus.get_mut(cpu.index()) {
            slot.idling = false;
            slot.kicked = false;
        }
        // Housekeeping may have woken partitions (a fence timed out into
        // recovery, an operator's unfence), or ended the run.
        if self.smp.woke || self.smp.stopping {
            self.kick_idle_cpus();
        }
        let Some(slot) = self.smp.cpus.get_mut(cpu.index()) else { return Step::Stop };
        if self.smp.stopping {
            slot.stopped = true;
            return Step::Stop;
        }
        let (parts, running) = (&self.partitions, &self.smp.running_on);
        // A partition in debt for its witness frames waits for its credit
        // ([`crate::console::OutputCredit`]).
        let pick = self.sched.pick(cpu, |i| {
            parts[i].can_run() && running.get(i).copied().flatten().is_none() && !parts[i].output().in_debt(now)
        });
        let Some(idx) = pick else {
            slot.idles += 1;
            slot.idling = true;
            // The boot CPU keeps the housekeeping's tick (orders from the
            // console, fence timeouts, the run budget, coherence epochs). A
            // secondary sleeps until a kick, or a wait's deadline, when
            // kicks reach it and none of its partitions only waits for its
            // output credit (nothing kicks for that); else until its tick.
            // While a partition waits for the host (a committed set to be
            // kept, a tool's answer), the host's frame is looked for
            // sooner: the wait is the partition's, not the slice's.
            let waits_for_host = parts.iter().any(|p| p.saving().is_some() || p.tool_wait().is_some());
            let tick = now.saturating_add(if waits_for_host { HOST_POLL_NS.min(self.policy.slice_ns) } else { self.policy.slice_ns });
            let in_debt = self.sched.members(cpu).iter().any(|&i| parts[i].can_run() && parts[i].output().in_debt(now));
            let sleeps = cpu.index() != 0 && self.arch.kicks() && !in_debt;
            let until = if sleeps { now.saturating_add(SECONDARY_IDLE_MAX_NS) } else { tick };
            return Step::Idle { until_ns: next_deadline.map_or(until, |d| d.min(until)) };
        };
        slot.slices += 1;
        self.start_if_loaded(idx);
        if !self.partitions[idx].is_runnable() {
            // Its start could not be witnessed: it was fenced instead.
            return self.cpu_next(hw);
        }
        let start = self.arch.now_ns();
        Step::Run(self.lease(hw, idx, start, start.saturating_add(self.policy.slice_ns)))
    }

    /// Under the kernel lock: `lease`'s guest exited with `trap`. The vCPU
    /// goes back into its partition, the exit is handled, deferred orders
    /// against the partition are carried out, and the CPU gets its next step
    /// (the same partition again while its slice lasts).
    pub fn cpu_exit(&mut self, mut lease: Lease, trap: TrapInfo, hw: &mut impl CpuArch) -> Step {
        if lease.answer_without_lock(&trap) || self.cpu_exit_fast(&mut lease, trap) {
            return Step::Run(lease);
        }
        match self.slice_over(lease, hw) {
            Some(again) => Step::Run(again),
            None => self.cpu_next(hw),
        }
    }

    /// The common case of [`Hypervisor::cpu_exit`], without moving the
    /// lease: the vCPU goes back into its partition, the exit is handled,
    /// and if the guest simply goes on (nothing deferred, still runnable),
    /// the vCPU is leased out again in place and this returns true. Otherwise
    /// the vCPU stays in its partition, the lease is spent, and the caller
    /// hands it to [`Hypervisor::cpu_after`].
    pub fn cpu_exit_fast(&mut self, lease: &mut Lease, trap: TrapInfo) -> bool {
        let idx = lease.idx;
        self.partitions[idx].exchange_vcpu(&mut lease.vcpu);
        self.smp.running_on[idx] = None;
        let mut flow = self.handle_exit(idx, Exit::decode(&trap));
        // Back-pressure: a partition in debt for its witness frames gives up
        // the CPU until its credit refilled.
        if flow == Flow::Resume && self.partitions[idx].output().owes() && self.partitions[idx].output().in_debt(self.arch.now_ns()) {
            flow = Flow::Yielded;
        }
        if self.smp.woke {
            self.kick_idle_cpus();
        }
        let p = &mut self.partitions[idx];
        if flow == Flow::Resume && self.smp.deferred.is_empty() && p.can_run() && !self.witness.lost() {
            lease.stage2 = Stage2Context { root: p.stage2().root(), vmid: p.vmid() };
            p.exchange_vcpu(&mut lease.vcpu);
            self.smp.running_on[idx] = Some(lease.cpu);
            let slot = &mut self.smp.cpus[lease.cpu.index()];
            if slot.loaded != Some(idx) {
                // Recreated while it was back: its EL1/FP state is new.
                slot.loaded = Some(idx);
                lease.switched = true;
            }
            return true;
        }
        lease.flow = flow;
        lease.returned = true;
        false
    }

    /// Under the kernel lock, after [`Hypervisor::cpu_exit_fast`] said no:
    /// carry out deferred orders, charge the slice, and give the CPU its
    /// next step.
    pub fn cpu_after(&mut self, lease: Lease, hw: &mut impl CpuArch) -> Step {
        match self.slice_over(lease, hw) {
            Some(again) => Step::Run(again),
            None => self.cpu_next(hw),
        }
    }

    /// A spent lease: the lease to run next if the slice goes on after all
    /// (orders deferred against other partitions only), `None` once the
    /// partition gave up the CPU (its slice is then charged).
    pub(crate) fn slice_over(&mut self, lease: Lease, hw: &mut impl CpuArch) -> Option<Lease> {
        debug_assert!(lease.returned);
        let (idx, start, end, mut flow) = (lease.idx, lease.slice_start, lease.slice_end, lease.flow);
        if let Some(slot) = self.smp.cpus.get_mut(lease.cpu.index()) {
            slot.spare = Some(lease.vcpu);
        }
        if self.apply_deferred(idx) {
            flow = Flow::Reschedule;
        }
        if flow == Flow::Resume && self.partitions[idx].can_run() && !self.witness.lost() {
            return Some(self.lease(hw, idx, start, end));
        }
        self.end_slice(idx, start, flow);
        None
    }

    /// Charge the slice that started at `start` and ended with `flow`.
    pub(crate) fn end_slice(&mut self, idx: usize, start: u64, flow: Flow) {
        let ran = self.arch.now_ns().saturating_sub(start);
        // A yield forfeits the rest of the slice: charge all of it. A
        // partition that waits in a call is charged what it ran.
        let charged = if flow == Flow::Yielded { ran.max(self.policy.slice_ns) } else { ran };
        self.sched.charge(idx, charged);
    }

    /// Move partition `idx`'s vCPU out to CPU `hw`, saving the EL1/FP state
    /// of the partition that last ran there first if it was another.
    pub(crate) fn lease(&mut self, hw: &mut impl CpuArch, idx: usize, slice_start: u64, slice_end: u64) -> Lease {
        let cpu = hw.cpu();
        let slot = &mut self.smp.cpus[cpu.index()];
        let switched = slot.loaded != Some(idx);
        let prev = slot.loaded.filter(|&p| p != idx);
        slot.loaded = Some(idx);
        let spare = slot.spare.take().unwrap_or_else(|| Box::new(Vcpu::new(0, 0)));
        if let Some(prev) = prev {
            hw.save_vcpu_state(self.partitions[prev].vcpu_mut());
        }
        let p = &mut self.partitions[idx];
        let stage2 = Stage2Context { root: p.stage2().root(), vmid: p.vmid() };
        let vcpu = p.lend_vcpu(spare);
        self.smp.set_running(idx, Some(cpu));
        Lease { cpu, idx, vcpu, stage2, slice_start, slice_end, switched, returned: false, flow: Flow::Resume }
    }

    /// Kick every idling CPU that has a partition to run now (after a
    /// partition became runnable), or every idling CPU once the run is
    /// ending — each at most once per wait. Under the kernel lock, before
    /// it is released.
    #[cold]
    #[inline(never)]
    fn kick_idle_cpus(&mut self) {
        let woke = core::mem::take(&mut self.smp.woke);
        if !woke && !self.smp.stopping {
            return;
        }
        for n in 0..self.smp.cpus.len() {
            let slot = &self.smp.cpus[n];
            if !slot.idling || slot.kicked {
                continue;
            }
            let cpu = CpuId(u8::try_from(n).unwrap_or(u8::MAX));
            let has_work = self.smp.stopping
                || self
                    .sched
                    .members(cpu)
                    .iter()
                    .any(|&i| self.partitions[i].can_run() && self.smp.running_on(i).is_none());
            if has_work {
                let sent = self.arch.kick(cpu);
                let slot = &mut self.smp.cpus[n];
                slot.kicked = true;
                slot.kicks += u64::from(sent);
            }
        }
    }

    /// Carry out the orders that waited for partition `idx`; true if any.
    fn apply_deferred(&mut self, idx: usize) -> bool {
        if !self.smp.deferred.iter().any(|&(i, _)| i == idx) {
            return false;
        }
        let mine: Vec<DeferredOrder> = self.smp.deferred.iter().filter(|&&(i, _)| i == idx).map(|&(_, o)| o).collect();
        self.smp.deferred.retain(|&(i, _)| i != idx);
        for order in mine {
            match order {
                DeferredOrder::Evict => {
                    if self.partitions[idx].state() != crate::partition::PartitionState::Evicted {
                        crate::recovery::fault::respond(
                            self,
                            idx,
                            crate::recovery::policy::Trigger::OperatorEvict,
                            format_args!("eviction ordered by the operator (carried out when its CPU came back)"),
                        );
                    }
                }
            }
        }
        true
    }

    /// Under the kernel lock, on the boot CPU once [`all_cpus_stopped`]:
    /// stop what still runs, sign every log's head, print the summary.
    ///
    /// [`all_cpus_stopped`]: Hypervisor::all_cpus_stopped
    pub fn finish_run(&mut self) -> RunSummary {
        let start = self.smp.started_ns.unwrap_or_else(|| self.arch.now_ns());
        self.shutdown(start)
    }

}

/// One CPU's loop: take the kernel lock, take the next step, release the
/// lock, run the guest (or idle), and again, until the run is over. Returns
/// when this CPU has stopped; the boot CPU then waits for
/// [`Hypervisor::all_cpus_stopped`] and calls [`Hypervisor::finish_run`].
pub fn cpu_main<A: Arch, C: CpuArch>(kernel: &KernelLock<A>, hw: &mut C) {
    let mut step = kernel.lock(hw).cpu_next(hw);
    loop {
        step = match step {
            Step::Run(mut lease) => loop {
                let trap = lease.run(hw);
                if lease.answer_without_lock(&trap) {
                    continue;
                }
                let mut hv = kernel.lock(hw);
                if !hv.cpu_exit_fast(&mut lease, trap) {
                    break hv.cpu_after(lease, hw);
                }
            },
            Step::Idle { until_ns } => {
                hw.idle(until_ns);
                kernel.lock(hw).cpu_next(hw)
            }
            Step::Stop => return,
        };
    }
}
