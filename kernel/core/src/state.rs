//! The hypervisor's state: one [`Hypervisor`] owns every subsystem, and
//! the mechanisms every handler shares — witnessing a kernel decision
//! (fail-closed), moving a partition through its life cycle — live here,
//! beside the state they touch. What happens on a guest exit is built on top
//! ([`crate::hypervisor`], [`crate::dispatch`], [`crate::recovery`]).

use alloc::vec::Vec;

use rvm_abi::bundle::BootConfig;
use rvm_abi::witness::KernelEvent;
use rvm_abi::{Outcome, WitnessRecord};

use crate::arch::{Arch, CpuId};
use crate::running::cpus::{DeferredOrder, RanOn};
use crate::caps::Caps;
use crate::channel::Channel;
use crate::console;
use crate::dispatch::call::Call;
use crate::memory::addr::{PhysAddr, PAGE_BYTES};
use crate::memory::frames::FrameAllocator;
use crate::load::image::SharedImage;
use crate::partition::{name_str, Partition, PartitionId, PartitionState};
use rvm_state::store::{StateStore, StoreLimits};
use crate::witness::{Reservation, Witness};

/// Scheduling and run-time policy, from the bundle's boot configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunPolicy {
    /// Time slice before the hypervisor timer preempts a vCPU.
    pub slice_ns: u64,
    /// Stop the run after this long (0 = when every partition is done).
    pub budget_ns: u64,
    /// A long-lived instance ([`rvm_abi::bundle::BOOT_FLAG_INSTANCE`]): the
    /// run does not end when nothing can run, only at a `shutdown` order or
    /// its budget.
    pub instance: bool,
    /// The host keeps committed sets durably
    /// ([`rvm_abi::bundle::BOOT_FLAG_SAVE_STATE`], [`crate::durable`]).
    pub save_state: bool,
    /// The host serves tool calls ([`rvm_abi::bundle::BOOT_FLAG_TOOLS`],
    /// [`crate::tool_calls`]).
    pub serve_tools: bool,
    /// How long the kernel waits for the host's answer to a tool call
    /// ([`rvm_abi::tool::DEADLINE_NS`]).
    pub tool_deadline_ns: u64,
}

impl RunPolicy {
    pub fn from_config(c: &BootConfig) -> Self {
        Self {
            slice_ns: u64::from(c.slice_us.max(100)) * 1_000,
            budget_ns: u64::from(c.run_budget_ms) * 1_000_000,
            instance: c.flags & rvm_abi::bundle::BOOT_FLAG_INSTANCE != 0,
            save_state: c.flags & rvm_abi::bundle::BOOT_FLAG_SAVE_STATE != 0,
            serve_tools: c.flags & rvm_abi::bundle::BOOT_FLAG_TOOLS != 0,
            tool_deadline_ns: rvm_abi::tool::DEADLINE_NS,
        }
    }
}

/// What some calls use beside their [`Call`]: the channels (messages), the
/// state stores (the store calls, `Prove`, snapshots), the frame pool
/// (snapshots), the tool desk (tool calls' claims).
pub(crate) struct CallServices<'a> {
    pub channels: &'a mut [Channel],
    pub stores: &'a mut [StateStore],
    pub frames: &'a mut FrameAllocator,
    pub tools: &'a crate::tool_calls::desk::ToolDesk,
}

/// The hypervisor's state.
pub struct Hypervisor<A: Arch> {
    pub arch: A,
    pub(crate) frames: FrameAllocator,
    /// The EL2 heap reserved for partitions ([`crate::memory::quota`]).
    pub(crate) heap: crate::memory::quota::HeapLedger,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) stores: Vec<StateStore>,
    pub(crate) channels: Vec<Channel>,
    pub(crate) caps: Caps,
    pub(crate) witness: Witness,
    /// Agents per partition, the communication graph, split/merge decisions.
    pub(crate) domains: crate::domains::registry::Domains,
    pub(crate) journal: crate::journal::Journal,
    /// Operator orders from the host ([`crate::orders`]).
    pub(crate) orders: crate::orders::desk::OrderDesk,
    /// Dormant-tier figures ([`crate::domains::dormancy`]).
    pub(crate) dormant: crate::domains::dormancy::DormantLedger,
    /// The committed sets as last witnessed, when the host keeps them
    /// ([`crate::durable`]).
    pub(crate) kept: crate::durable::ledger::SetDigests,
    /// Claims, and the host's tool answers ([`crate::tool_calls`]).
    pub(crate) tools: crate::tool_calls::desk::ToolDesk,
    pub(crate) policy: RunPolicy,
    pub(crate) runtime: Option<SharedImage>,
    /// The CPUs, which partition runs where, deferred orders ([`crate::running::smp`]).
    pub(crate) smp: crate::running::cpus::SmpState,
    pub(crate) sched: crate::running::sched::Scheduler,
    refused: u32,
    evicted: u32,
}

impl<A: Arch> Hypervisor<A> {
    /// A hypervisor with no partitions yet, run as `config` says.
    pub(crate) fn new(
        arch: A,
        memory: crate::memory::Memory,
        witness: Witness,
        orders: crate::orders::desk::OrderDesk,
        config: &BootConfig,
        partitions: usize,
    ) -> Self {
        let mut policy = RunPolicy::from_config(config);
        if policy.serve_tools && !arch.has_control_channel() {
            // The host's answers could never come: refused at once instead.
            policy.serve_tools = false;
        }
        Self {
            arch,
            frames: memory.frames,
            heap: crate::memory::quota::HeapLedger::new(memory.heap_bytes),
            partitions: Vec::with_capacity(partitions),
            stores: Vec::with_capacity(partitions),
            channels: Vec::new(),
            caps: Caps::new(partitions),
            witness,
            domains: crate::domains::registry::Domains::new(config.flags),
            journal: crate::journal::Journal::from_config(config),
            orders,
            dormant: crate::domains::dormancy::DormantLedger::default(),
            kept: crate::durable::ledger::SetDigests::default(),
            tools: crate::tool_calls::desk::ToolDesk::default(),
            policy,
            runtime: None,
            smp: crate::running::cpus::SmpState::new(),
            sched: crate::running::sched::Scheduler::new(partitions),
            refused: 0,
            evicted: 0,
        }
    }

    /// Dormancy figures of partition `id` (all zero for one that never slept).
    pub fn dormancy(&self, id: PartitionId) -> crate::domains::dormancy::Dormancy {
        self.index_of(id).map_or(Default::default(), |idx| self.dormant.get(idx))
    }

    /// Admit `p` with an empty state store of its own; its position.
    pub(crate) fn add_partition(&mut self, p: Partition) -> usize {
        self.partitions.push(p);
        self.stores.push(StateStore::new(StoreLimits::DEFAULT));
        self.partitions.len() - 1
    }

    /// Add a channel; its position (the object id its capabilities name).
    pub(crate) fn add_channel(&mut self, c: Channel) -> usize {
        self.channels.push(c);
        self.channels.len() - 1
    }

    /// The shared guest runtime every partition of the bundle maps.
    pub(crate) fn set_runtime(&mut self, image: SharedImage) {
        self.runtime = Some(image);
    }

    /// The call context of partition `idx`'s hypercall: its partition and
    /// the services every call uses, borrowed apart from the rest.
    pub(crate) fn call(&mut self, idx: usize) -> Call<'_, A> {
        self.call_with(idx).0
    }

    /// [`Hypervisor::call`], with the services some calls use beside it.
    pub(crate) fn call_with(&mut self, idx: usize) -> (Call<'_, A>, CallServices<'_>) {
        let call = Call {
            caller: &mut self.partitions[idx],
            arch: &mut self.arch,
            witness: &mut self.witness,
            caps: &mut self.caps,
            journal: self.journal,
        };
        (call, CallServices { channels: &mut self.channels, stores: &mut self.stores, frames: &mut self.frames, tools: &self.tools })
    }

    /// Partitions refused at boot or admission.
    pub(crate) fn refused(&self) -> u32 {
        self.refused
    }

    /// Partitions evicted (F4) so far.
    pub(crate) fn evicted(&self) -> u32 {
        self.evicted
    }

    pub(crate) fn note_refused(&mut self) {
        self.refused += 1;
    }

    pub(crate) fn note_evicted(&mut self) {
        self.evicted += 1;
    }

    /// Partition `idx`'s guest was recreated: whatever EL1 and FP state the
    /// CPU still holds for it is stale, so it must be neither saved nor kept.
    pub(crate) fn forget_loaded_vcpu(&mut self, idx: usize) {
        self.smp.forget_loaded(idx);
    }

    /// The committed state store of partition `id`.
    pub fn store(&self, id: PartitionId) -> Option<&StateStore> {
        self.index_of(id).map(|idx| &self.stores[idx])
    }

    pub(crate) fn index_of(&self, id: PartitionId) -> Option<usize> {
        self.partitions.iter().position(|p| p.id() == id)
    }

    /// The partitions, in id order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// Agents per partition, the communication graph, witnessed decisions.
    pub fn domains(&self) -> &crate::domains::registry::Domains {
        &self.domains
    }

    /// Frames the pool has handed out.
    pub fn frames_in_use(&self) -> u64 {
        self.frames.frames_in_use()
    }

    /// A kernel-decision record about `partition`, stamped now.
    fn event_record(&self, partition: PartitionId, event: KernelEvent, outcome: Outcome, args: [u8; 16]) -> WitnessRecord {
        crate::witness::event_record(partition.0, event, outcome, args, self.arch.now_ns())
    }

    /// Append a kernel-decision record to `log`. Fail-closed: `false` means
    /// nothing was written, and the decision must not take effect (use
    /// [`Hypervisor::hold`] first when the change comes before the record,
    /// and [`Hypervisor::must_witness`] for a decision that cannot be
    /// refused).
    pub(crate) fn kernel_event(
        &mut self,
        log: PartitionId,
        event: KernelEvent,
        outcome: Outcome,
        args: [u8; 16],
    ) -> bool {
        let rec = self.event_record(log, event, outcome, args);
        self.witness.append(&mut self.arch, log.0, rec).is_ok()
    }

    /// Hold room for `n` records in `log` before a change they describe;
    /// `None`: nothing held, the change must not happen.
    pub(crate) fn hold(&mut self, log: PartitionId, n: u32) -> Option<Reservation> {
        self.witness.hold(log.0, n).ok()
    }

    /// Append a kernel-decision record with room held by `r`: cannot fail.
    pub(crate) fn held_event(&mut self, r: &mut Reservation, event: KernelEvent, outcome: Outcome, args: [u8; 16]) {
        let rec = self.event_record(PartitionId(r.log()), event, outcome, args);
        let was_lost = self.witness.lost();
        if self.witness.append_held(&mut self.arch, r, rec).is_none() {
            self.stop_unwitnessed(was_lost);
        }
    }

    /// Append `rec` (a record of `r`'s log) with room held by `r`: cannot fail.
    pub(crate) fn held_record(&mut self, r: &mut Reservation, rec: WitnessRecord) {
        let was_lost = self.witness.lost();
        if self.witness.append_held(&mut self.arch, r, rec).is_none() {
            self.stop_unwitnessed(was_lost);
        }
    }

    /// Give back what is left of `r` (see [`Witness::release`]).
    pub(crate) fn release(&mut self, r: Reservation) {
        self.witness.release(r);
    }

    /// [`Hypervisor::transition`] with room already held by `r` (a move
    /// that must not be refused once the operation it ends has begun).
    pub(crate) fn transition_held(&mut self, r: &mut Reservation, idx: usize, to: PartitionState, event: KernelEvent, args: [u8; 16]) {
        let p = &self.partitions[idx];
        if p.state() == to || !p.state().may_become(to) {
            return;
        }
        self.set_state(idx, to);
        self.held_event(r, event, Outcome::Done, args);
    }

    /// Record a decision the kernel cannot refuse (a fault, a fence, an
    /// exit, the end of the run): in `log`; if that log cannot take it, in
    /// the hypervisor's own log (which may name any partition); if neither
    /// can, the witness is lost and the hypervisor stops the run rather
    /// than go on unwitnessed. True if the record was written.
    pub(crate) fn must_witness(&mut self, log: PartitionId, event: KernelEvent, outcome: Outcome, args: [u8; 16]) -> bool {
        if self.kernel_event(log, event, outcome, args) {
            return true;
        }
        if log != PartitionId::HYPERVISOR {
            let rec = self.event_record(log, event, outcome, args);
            if self.witness.append(&mut self.arch, PartitionId::HYPERVISOR.0, rec).is_ok() {
                return true;
            }
        }
        self.witness_lost();
        false
    }

    /// A record the kernel could not refuse was not written: stop every CPU
    /// at its next step (a run that cannot be witnessed does not go on).
    #[cold]
    pub(crate) fn witness_lost(&mut self) {
        let was_lost = self.witness.lost();
        self.witness.set_lost();
        self.stop_unwitnessed(was_lost);
    }

    /// The witness is lost: say so (once) and stop every CPU.
    #[cold]
    fn stop_unwitnessed(&mut self, said: bool) {
        if !said {
            console::hyp_line(&mut self.arch, format_args!("witness log refused a record the kernel cannot refuse: stopping"));
        }
        self.stop_run();
    }

    /// Move partition `idx` to `to`, witnessed in its log: room for the
    /// record is held before the state changes. A move the kernel may
    /// refuse (to `Loaded`, `Running`, `Dormant`) that cannot be witnessed
    /// does not happen, and a partition it would leave runnable is fenced
    /// instead (the safe answer; never running unwitnessed). A move to a
    /// stopped state (`Suspended`, `Fenced`, `Finished`, `Evicted`) always
    /// happens: witnessed as [`Hypervisor::must_witness`] says. Returns
    /// whether the partition is now in `to`.
    pub(crate) fn transition(&mut self, idx: usize, to: PartitionState, event: KernelEvent, args: [u8; 16]) -> bool {
        let p = &self.partitions[idx];
        if p.state() == to || !p.state().may_become(to) {
            return p.state() == to;
        }
        let id = p.id();
        match self.hold(id, 1) {
            Some(mut r) => {
                self.set_state(idx, to);
                self.held_event(&mut r, event, Outcome::Done, args);
                true
            }
            None if !matches!(to, PartitionState::Loaded | PartitionState::Running | PartitionState::Dormant) => {
                self.set_state(idx, to);
                self.must_witness(id, event, Outcome::Done, args);
                true
            }
            None => {
                if self.partitions[idx].is_runnable() {
                    self.fence_unwitnessed(idx);
                }
                false
            }
        }
    }

    fn set_state(&mut self, idx: usize, to: PartitionState) {
        let p = &mut self.partitions[idx];
        let was_runnable = p.is_runnable();
        p.move_to(to);
        if !was_runnable && p.is_runnable() {
            // Its home CPU may be idling: kick it before the lock goes.
            self.smp.note_runnable();
        }
    }

    /// A runnable partition whose own change could not be witnessed is
    /// fenced (F3, trigger 0: the kernel's own decision): its capabilities
    /// suspended, its vCPU not run again until an operator unfences it.
    #[cold]
    fn fence_unwitnessed(&mut self, idx: usize) {
        let id = self.partitions[idx].id();
        let name = self.partitions[idx].desc().name;
        console::hyp_line(
            &mut self.arch,
            format_args!("partition {} '{}': a change could not be witnessed: fenced (F3)", id.0, name_str(&name)),
        );
        self.caps.suspend(id);
        let args = rvm_abi::recovery::RecoveryArgs {
            class: rvm_abi::recovery::class::FENCE,
            trigger: 0,
            committed_items: u32::try_from(self.stores[idx].committed_items()).unwrap_or(u32::MAX),
            snapshot_id: 0,
        };
        self.transition(idx, PartitionState::Fenced, KernelEvent::RecoverFence, args.to_bytes());
        let now = self.arch.now_ns();
        self.partitions[idx].recovery_mut().record(crate::recovery::policy::RecoveryClass::Fence, now);
    }

    /// Release a frame that only one partition used, scrubbing it first.
    pub(crate) fn scrub_and_free(&mut self, pa: PhysAddr) {
        self.arch.phys_zero(pa, PAGE_BYTES);
        self.frames.free(pa);
    }

    /// Spread the partitions over `cpus` CPUs (their run queues and slots).
    /// Call once, before any CPU runs.
    pub fn set_cpus(&mut self, cpus: usize) {
        let cpus = cpus.clamp(1, crate::running::sched::MAX_CPUS);
        self.sched.set_cpus(cpus);
        self.smp.set_cpus(cpus);
    }

    /// CPUs the run uses.
    pub fn cpus(&self) -> usize {
        self.smp.cpu_count()
    }

    /// The CPU partition `idx`'s guest is running on right now, if any.
    /// While it runs, its vCPU is out of reach (the partition holds a
    /// placeholder); anything that would change or tear down the partition
    /// must [defer](Hypervisor::defer) instead.
    pub fn running_on(&self, idx: usize) -> Option<CpuId> {
        self.smp.running_on(idx)
    }

    /// Partition `idx`'s home CPU (where its run queue entry lives).
    pub fn home_cpu(&self, idx: usize) -> Option<CpuId> {
        self.sched.home(idx)
    }

    /// The CPUs partition `idx` has run on so far.
    pub fn ran_on(&self, idx: usize) -> RanOn {
        self.smp.ran_on(idx)
    }

    /// Orders waiting for their partition to come back from its CPU.
    pub fn deferred_orders(&self) -> usize {
        self.smp.deferred_count()
    }

    /// Carry out `order` against partition `idx` when its guest next exits
    /// (it does at the latest at the end of its slice).
    pub fn defer(&mut self, idx: usize, order: DeferredOrder) {
        self.smp.defer(idx, order);
    }

    /// One line per CPU for the run summary: the partitions homed there,
    /// slices run, idle waits, kicks that ended a wait early.
    pub(crate) fn cpu_lines(&self) -> Vec<alloc::string::String> {
        self.smp
            .cpu_figures()
            .map(|(cpu, slices, idles, kicks)| {
                let homed = self.sched.members(cpu).len();
                alloc::format!("  cpu {cpu}: {homed} partitions, {slices} slices, {idles} idle waits, {kicks} kicks")
            })
            .collect()
    }

    /// Whether every CPU has left the run (the boot CPU may then finish it).
    pub fn all_cpus_stopped(&self) -> bool {
        self.smp.all_stopped()
    }

    /// Whether the run is ending (no CPU starts another slice).
    pub fn stopping(&self) -> bool {
        self.smp.stopping()
    }

    /// Kicks sent to CPU `cpu` over the run (each ended one idle wait early).
    pub fn kicks_sent(&self, cpu: CpuId) -> u64 {
        self.smp.kicks_sent(cpu)
    }

    /// The run's start (first pick on any CPU).
    pub(crate) fn run_started_ns(&self) -> Option<u64> {
        self.smp.started_ns()
    }

    /// Make the run start afresh (a host test may run the same hypervisor
    /// again after an order).
    #[cfg(any(test, feature = "fake"))]
    pub(crate) fn restart_run(&mut self) {
        // A run whose witness was lost does not start again.
        let lost = self.witness.lost();
        self.smp.restart(lost);
    }

    /// Stop every CPU at its next step.
    pub(crate) fn stop_run(&mut self) {
        self.smp.stop();
    }
}
