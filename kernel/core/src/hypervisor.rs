//! The hypervisor: partitions built from the bundle, the run loop, and what
//! happens on every guest exit.

use alloc::vec::Vec;

use rvm_abi::bundle::{BootConfig, Bundle, EntryKind};
use rvm_abi::witness::{KernelEvent, HVC_IMMEDIATE_OP};
use rvm_abi::{Outcome, WitnessOp, WitnessRecord};

use crate::addr::{PhysAddr, PAGE_BYTES};
use crate::arch::Arch;
use crate::caps::Caps;
use crate::channel::Channel;
use crate::console;
use crate::frames::FrameAllocator;
use crate::image::SharedImage;
use crate::partition::{Partition, PartitionId, PartitionState};
use crate::stage2::{MemType, S2Perm};
use rvm_state::store::StateStore;
use crate::trap::{Exit, FaultStatus};
use crate::witness::{Reservation, Witness};

/// Why the hypervisor could not start from a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    Bundle(rvm_abi::bundle::BundleError),
    /// No partitions to run.
    Empty,
    /// More partitions than VMIDs.
    TooManyPartitions,
    OutOfMemory,
    /// The shared guest runtime image is not a loadable AArch64 ELF.
    Runtime(crate::elf::ElfError),
}

/// Scheduling and run-time policy, from the bundle's boot configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunPolicy {
    /// Time slice before the hypervisor timer preempts a vCPU.
    pub slice_ns: u64,
    /// Stop the run after this long (0 = when every partition is done).
    pub budget_ns: u64,
}

impl RunPolicy {
    pub fn from_config(c: &BootConfig) -> Self {
        Self {
            slice_ns: u64::from(c.slice_us.max(100)) * 1_000,
            budget_ns: u64::from(c.run_budget_ms) * 1_000_000,
        }
    }
}

/// Most partitions one hypervisor runs (VMIDs 1..=255).
pub const MAX_PARTITIONS: usize = 255;

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub finished: u32,
    pub fenced: u32,
    pub refused: u32,
    /// Partitions still running when the budget ran out.
    pub stopped: u32,
    /// Partitions evicted (F4) during the run.
    pub evicted: u32,
    pub elapsed_ns: u64,
}

/// What to do after handling an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Re-enter the same vCPU.
    Resume,
    /// Give the CPU to the next partition.
    Reschedule,
    /// The guest gave up the rest of its slice (`Yield`, `wfi`).
    Yielded,
}

/// The hypervisor's state.
pub struct Hypervisor<A: Arch> {
    pub arch: A,
    pub(crate) frames: FrameAllocator,
    /// The EL2 heap reserved for partitions ([`crate::quota`]).
    pub(crate) heap: crate::quota::HeapLedger,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) stores: Vec<StateStore>,
    pub(crate) channels: Vec<Channel>,
    pub(crate) caps: Caps,
    pub(crate) witness: Witness,
    /// Agents per partition, the communication graph, split/merge decisions.
    pub(crate) domains: crate::domains::Domains,
    pub(crate) journal: crate::journal::Journal,
    /// Operator orders from the host ([`crate::orders`]).
    pub(crate) orders: crate::orders::OrderDesk,
    /// Dormant-tier figures ([`crate::dormant`]).
    pub(crate) dormant: crate::dormant::DormantLedger,
    pub(crate) policy: RunPolicy,
    pub(crate) runtime: Option<SharedImage>,
    /// The CPUs, which partition runs where, deferred orders ([`crate::smp`]).
    pub(crate) smp: crate::smp::SmpState,
    pub(crate) sched: crate::sched::Scheduler,
    refused: u32,
    evicted: u32,
}

impl<A: Arch> Hypervisor<A> {
    /// Build every partition the bundle describes. A partition whose image or
    /// module cannot be loaded is refused (witnessed, printed) and the others
    /// still start; only a bundle that cannot be read at all is an error.
    pub fn boot(arch: A, frames: FrameAllocator, bundle_bytes: &[u8]) -> Result<Self, BootError> {
        Self::boot_with(arch, frames, bundle_bytes, |_| {})
    }

    /// [`Hypervisor::boot`], with `setup` applied to the witness before the
    /// first record (host tests inject failures there).
    pub(crate) fn boot_with(
        arch: A,
        frames: FrameAllocator,
        bundle_bytes: &[u8],
        setup: impl FnOnce(&mut Witness),
    ) -> Result<Self, BootError> {
        let bundle = Bundle::parse(bundle_bytes).map_err(BootError::Bundle)?;
        let count = bundle.partition_count() as usize;
        if count == 0 {
            return Err(BootError::Empty);
        }
        if count > MAX_PARTITIONS {
            return Err(BootError::TooManyPartitions);
        }
        let config = bundle
            .global(EntryKind::BootConfig)
            .and_then(|e| BootConfig::from_bytes(e.data))
            .unwrap_or(BootConfig::DEFAULT);
        // The seed is borrowed from the bundle, never copied: the signer
        // holds the only copy, and the boot code scrubs the bundle's
        // ([`crate::witness::scrub_bundle_secrets`]) once this returns.
        let seed: Option<&[u8; 32]> =
            bundle.global(EntryKind::WitnessKeySeed).and_then(|e| e.data.try_into().ok());
        let bundle_digest = rvm_state::digest::full(bundle_bytes);
        let mut witness = Witness::new(seed, config.checkpoint_every, bundle_digest);
        setup(&mut witness);
        let mut hv = Self {
            arch,
            frames,
            heap: crate::quota::HeapLedger::default(),
            partitions: Vec::with_capacity(count),
            stores: Vec::with_capacity(count),
            channels: Vec::new(),
            caps: Caps::new(count),
            witness,
            domains: crate::domains::Domains::new(config.flags),
            journal: crate::journal::Journal::from_config(&config),
            orders: crate::orders::OrderDesk::new(
                bundle.global(EntryKind::OperatorKey).and_then(|e| e.data.try_into().ok()),
                bundle_digest,
                bundle.boot_id().is_some(),
            ),
            dormant: crate::dormant::DormantLedger::default(),
            policy: RunPolicy::from_config(&config),
            runtime: None,
            smp: crate::smp::SmpState::new(),
            sched: crate::sched::Scheduler::new(count),
            refused: 0,
            evicted: 0,
        };
        if let Some(id) = bundle.boot_id() {
            hv.caps.set_boot_id(id);
        }
        hv.witness.announce_key(&mut hv.arch);
        let mut boot_digest = [0u8; 16];
        boot_digest.copy_from_slice(&bundle_digest[..16]);
        // A boot that cannot be witnessed runs nothing (the run stops at once).
        hv.must_witness(PartitionId::HYPERVISOR, KernelEvent::Boot, Outcome::Done, boot_digest);
        if let Some(rt) = bundle.global(EntryKind::GuestRuntime) {
            let image = SharedImage::load(&mut hv.arch, &mut hv.frames, rt.data)
                .map_err(|e| match e {
                    crate::image::ImageError::Elf(e) => BootError::Runtime(e),
                    crate::image::ImageError::OutOfMemory => BootError::OutOfMemory,
                })?;
            hv.runtime = Some(image);
        }
        for (index, desc) in bundle.partitions().enumerate() {
            let index = u32::try_from(index).map_err(|_| BootError::TooManyPartitions)?;
            crate::load::load_partition(&mut hv, &bundle, index, desc)?;
            hv.sched.admit(hv.partitions.len() - 1, &desc);
        }
        for e in bundle.entries().filter(|e| e.kind == EntryKind::Channel) {
            if let Some(c) = rvm_abi::bundle::ChannelDesc::from_bytes(e.data) {
                crate::load::connect(&mut hv, c);
            }
        }
        crate::load::connect_agent_channels(&mut hv, &bundle);
        crate::load::write_all_boot_info(&mut hv);
        Ok(hv)
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
        self.partitions.iter().position(|p| p.id == id)
    }

    /// Operator order: clear the fence of partition `id`. Its capabilities
    /// answer again and its guest is recreated from its last checkpoint (or
    /// the pristine image). Returns the checkpoint id resumed from (0 =
    /// pristine). There is no run-time channel from the host yet, so only
    /// code in the hypervisor (and host tests) can give this order.
    pub fn unfence(&mut self, id: PartitionId) -> Result<u64, crate::fault::OrderError> {
        let idx = self.index_of(id).ok_or(crate::fault::OrderError::NoSuchPartition)?;
        if self.running_on(idx).is_some() {
            // Only a fenced partition is unfenced, and a fenced one never runs.
            return Err(crate::fault::OrderError::NotFenced);
        }
        crate::fault::unfence(self, idx)
    }

    /// Operator order: evict partition `id` (F4). A partition that still
    /// runs is fenced first (F3), so no class is skipped. Same caveat as
    /// [`Hypervisor::unfence`]. If its guest is on a CPU right now, the
    /// eviction is [deferred](Hypervisor::defer) until that CPU comes back
    /// (at the latest at the end of the slice).
    pub fn evict(&mut self, id: PartitionId) -> Result<(), crate::fault::OrderError> {
        let idx = self.index_of(id).ok_or(crate::fault::OrderError::NoSuchPartition)?;
        if self.partitions[idx].state == PartitionState::Evicted {
            return Err(crate::fault::OrderError::AlreadyEvicted);
        }
        if self.running_on(idx).is_some() {
            self.defer(idx, crate::smp::DeferredOrder::Evict);
            return Ok(());
        }
        crate::fault::respond(self, idx, crate::recovery::Trigger::OperatorEvict, format_args!("eviction ordered by the operator"));
        Ok(())
    }

    /// The partitions, in id order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// Agents per partition, the communication graph, witnessed decisions.
    pub fn domains(&self) -> &crate::domains::Domains {
        &self.domains
    }

    /// Frames the pool has handed out.
    pub fn frames_in_use(&self) -> u64 {
        self.frames.frames_in_use()
    }

    /// A kernel-decision record about `partition`, stamped now.
    fn event_record(&self, partition: PartitionId, event: KernelEvent, outcome: Outcome, args: [u8; 16]) -> WitnessRecord {
        let mut rec = WitnessRecord::new(WitnessOp::Event(event), outcome, partition.0);
        rec.args = args;
        rec.timestamp = self.arch.now_ns();
        rec
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
        if p.state == to || !p.state.may_become(to) {
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
        if p.state == to || !p.state.may_become(to) {
            return p.state == to;
        }
        let id = p.id;
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
        p.state = to;
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
        let id = self.partitions[idx].id;
        let name = self.partitions[idx].desc.name;
        console::hyp_line(
            &mut self.arch,
            format_args!("partition {} '{}': a change could not be witnessed: fenced (F3)", id.0, name_str(&name)),
        );
        self.caps.suspend(id);
        let args = rvm_abi::recovery::RecoveryArgs {
            class: rvm_abi::recovery::class::FENCE,
            trigger: 0,
            committed_items: u32::try_from(self.stores[idx].committed_items()).unwrap_or(u32::MAX),
            checkpoint_id: 0,
        };
        self.transition(idx, PartitionState::Fenced, KernelEvent::RecoverFence, args.to_bytes());
        let now = self.arch.now_ns();
        self.partitions[idx].recovery.record(crate::recovery::RecoveryClass::Fence, now);
    }

    /// Global housekeeping, under the kernel lock, by whichever CPU is
    /// about to pick its next partition: fence timeouts first, then the run
    /// budget. Other global steps (operator orders, tiering, coherence)
    /// belong here too, one call each.
    pub fn housekeeping(&mut self) {
        crate::fault::expire_fences(self);
        crate::orders::poll(self);
        crate::domains::housekeeping(self);
        if let Some(start) = self.run_started_ns() {
            if self.policy.budget_ns != 0 && self.arch.now_ns().saturating_sub(start) >= self.policy.budget_ns {
                self.stop_run();
            }
        }
    }

    /// Partition `idx` runs for the first time: witness its start.
    pub(crate) fn start_if_loaded(&mut self, idx: usize) {
        if self.partitions[idx].state == PartitionState::Loaded {
            // A partition created by a split keeps its agent's clock (set
            // at creation, [`crate::migrate`]).
            let now = self.arch.now_ns();
            self.partitions[idx].started_ns.get_or_insert(now);
            let handles = crate::journal::start_args(self, idx);
            if self.transition(idx, PartitionState::Running, KernelEvent::PartitionStart, handles) {
                crate::journal::started(self, idx);
            }
        }
    }

    pub(crate) fn handle_exit(&mut self, idx: usize, exit: Exit) -> Flow {
        match exit {
            Exit::Hvc { imm: 0 } => {
                let function = self.partitions[idx].vcpu.regs.x[0];
                let flow = crate::dispatch::hypercall(self, idx);
                crate::fault::after_call(self, idx, function, flow)
            }
            Exit::Hvc { imm } => {
                let flow = crate::dispatch::bad_immediate(self, idx, imm);
                crate::fault::after_refusal(self, idx, HVC_IMMEDIATE_OP, flow)
            }
            Exit::Timer => {
                self.partitions[idx].stats.preemptions += 1;
                Flow::Reschedule
            }
            Exit::WaitForInterrupt => {
                self.partitions[idx].vcpu.skip_instruction();
                Flow::Yielded
            }
            Exit::DataAbort { ipa, fault: FaultStatus::Translation(_), .. }
                if self.partitions[idx].heap.contains(ipa) =>
            {
                self.demand_page(idx, ipa)
            }
            other => {
                crate::fault::partition_fault(self, idx, other);
                Flow::Reschedule
            }
        }
    }

    /// Back a first touch of the heap window with a zeroed frame.
    fn demand_page(&mut self, idx: usize, ipa: crate::addr::Ipa) -> Flow {
        let Some(frame) = self.frames.alloc() else {
            crate::fault::partition_fault(self, idx, Exit::Other { esr: 0 });
            return Flow::Reschedule;
        };
        self.arch.phys_zero(frame, PAGE_BYTES);
        let p = &mut self.partitions[idx];
        match p.stage2.map(&mut self.arch, &mut self.frames, ipa.page_base(), frame, S2Perm::ReadWrite, MemType::Normal) {
            Ok(()) => {
                p.heap_pages.push((ipa.page_base(), frame));
                p.stats.demand_pages += 1;
                Flow::Resume
            }
            Err(_) => {
                self.frames.free(frame);
                crate::fault::partition_fault(self, idx, Exit::Other { esr: 0 });
                Flow::Reschedule
            }
        }
    }

    /// Flush consoles, stop what still runs, sign every log's head, print the
    /// summary.
    pub(crate) fn shutdown(&mut self, start: u64) -> RunSummary {
        let mut summary = RunSummary {
            finished: 0,
            fenced: 0,
            refused: self.refused,
            stopped: 0,
            evicted: self.evicted,
            elapsed_ns: self.arch.now_ns() - start,
        };
        for idx in 0..self.partitions.len() {
            console::flush_line(&mut self.arch, &mut self.partitions[idx]);
            match self.partitions[idx].state {
                PartitionState::Finished => summary.finished += 1,
                PartitionState::Fenced => {
                    summary.fenced += 1;
                    if let Some(deadline) = self.partitions[idx].recovery.fence_deadline() {
                        let name = self.partitions[idx].desc.name;
                        let left_ms = deadline.saturating_sub(self.arch.now_ns()) / 1_000_000;
                        console::hyp_line(
                            &mut self.arch,
                            format_args!("{} stays fenced: the run ended {left_ms} ms before its fence timeout", name_str(&name)),
                        );
                    }
                }
                PartitionState::Running | PartitionState::Suspended | PartitionState::Loaded => {
                    summary.stopped += 1;
                    let name = self.partitions[idx].desc.name;
                    console::hyp_line(
                        &mut self.arch,
                        format_args!("run budget spent: stopping {}", name_str(&name)),
                    );
                    self.transition(idx, PartitionState::Suspended, KernelEvent::PartitionExit, [0; 16]);
                }
                _ => {}
            }
        }
        self.must_witness(PartitionId::HYPERVISOR, KernelEvent::Shutdown, Outcome::Done, [0; 16]);
        self.witness.checkpoint_all(&mut self.arch);
        crate::report::print_summary(self, &summary);
        // Everything buffered reaches the console before the power goes off.
        self.arch.console_flush();
        summary
    }

    /// Release a frame that only one partition used, scrubbing it first.
    pub(crate) fn scrub_and_free(&mut self, pa: PhysAddr) {
        self.arch.phys_zero(pa, PAGE_BYTES);
        self.frames.free(pa);
    }
}

/// A NUL-padded name field as text.
pub(crate) fn name_str(field: &[u8; 32]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(32);
    core::str::from_utf8(&field[..end]).unwrap_or("?")
}
