//! The hypervisor: partitions built from the bundle, the run loop, and what
//! happens on every guest exit.


use rvm_abi::bundle::{BootConfig, Bundle, EntryKind};
use rvm_abi::witness::{KernelEvent, HVC_IMMEDIATE_OP};
use rvm_abi::Outcome;

use crate::arch::Arch;
pub use crate::load::refusal::BootError;
use crate::console;
use crate::load::image::SharedImage;
use crate::memory::addr::PAGE_BYTES;
use crate::memory::Memory;
use crate::memory::stage2::{MemType, S2Perm};
use crate::partition::{name_str, PartitionId, PartitionState, MAX_PARTITIONS};
use crate::report::RunSummary;
use crate::running::trap::{Exit, FaultStatus};
use crate::running::trap::Flow;
use crate::state::Hypervisor;
use crate::witness::Witness;


impl<A: Arch> Hypervisor<A> {
    /// Build every partition the bundle describes. A partition whose image or
    /// module cannot be loaded is refused (witnessed, printed) and the others
    /// still start; only a bundle that cannot be read at all is an error.
    pub fn boot(arch: A, memory: impl Into<Memory>, bundle_bytes: &[u8]) -> Result<Self, BootError> {
        Self::boot_with(arch, memory.into(), bundle_bytes, |_| {})
    }

    /// [`Hypervisor::boot`], with `setup` applied to the witness before the
    /// first record (host tests inject failures there).
    pub(crate) fn boot_with(
        arch: A,
        memory: Memory,
        bundle_bytes: &[u8],
        setup: impl FnOnce(&mut Witness),
    ) -> Result<Self, BootError> {
        let bundle = Bundle::parse(bundle_bytes).map_err(BootError::Bundle)?;
        let count = bundle.partition_count() as usize;
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
        let orders = crate::orders::desk::OrderDesk::new(
            bundle.global(EntryKind::OperatorKey).and_then(|e| e.data.try_into().ok()),
            bundle_digest,
            bundle.boot_id().is_some(),
        );
        // Ids run to the largest the bundle gives (vacancies below it).
        let ids = count.checked_sub(1).map_or(0, |last| bundle.partition_id(last as u32) as usize);
        let mut hv = Self::new(arch, memory, witness, orders, &config, ids);
        // An instance may start empty: tenants are admitted into it.
        if count == 0 && !hv.policy.instance {
            return Err(BootError::Empty);
        }
        if let Some(id) = bundle.boot_id() {
            hv.caps.set_boot_id(id);
        }
        hv.witness.announce_key(&mut hv.arch);
        let mut boot_digest = [0u8; 16];
        boot_digest.copy_from_slice(&bundle_digest[..16]);
        // An instance that restarted continues its own log.
        if let Some(from) = bundle.log_resume(None) {
            hv.witness.resume(PartitionId::HYPERVISOR.0, &from).map_err(BootError::LogResume)?;
        }
        // A boot that cannot be witnessed runs nothing (the run stops at once).
        hv.must_witness(PartitionId::HYPERVISOR, KernelEvent::Boot, Outcome::Done, boot_digest);
        if let Some(from) = bundle.log_resume(None) {
            crate::load::witness_resumed(&mut hv, PartitionId::HYPERVISOR, from.size);
        }
        if let Some(rt) = bundle.global(EntryKind::GuestRuntime) {
            let image = SharedImage::load(&mut hv.arch, &mut hv.frames, rt.data)
                .map_err(|e| match e {
                    crate::load::image::ImageError::Elf(e) => BootError::Runtime(e),
                    crate::load::image::ImageError::OutOfMemory => BootError::OutOfMemory,
                })?;
            hv.set_runtime(image);
        }
        for (index, desc) in bundle.partitions().enumerate() {
            let index = u32::try_from(index).map_err(|_| BootError::TooManyPartitions)?;
            crate::load::boot_partition(&mut hv, &bundle, index, desc)?;
        }
        // Ids earlier boots of an instance gave stay vacant.
        if let Some(first) = bundle.first_free_id() {
            crate::load::fill_vacancies(&mut hv, PartitionId(first))?;
        }
        crate::load::connect_channels(&mut hv, &bundle, 0);
        crate::load::write_all_boot_info(&mut hv, 0);
        Ok(hv)
    }

    /// Global housekeeping, under the kernel lock, by whichever CPU is
    /// about to pick its next partition: fence timeouts first, then the run
    /// budget. Other global steps (operator orders, tiering, coherence)
    /// belong here too, one call each.
    pub fn housekeeping(&mut self) {
        crate::recovery::fault::expire_fences(self);
        crate::dispatch::waits::expire(self);
        crate::tool_calls::expire(self);
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
        if self.partitions[idx].state() == PartitionState::Loaded {
            // A partition created by a split keeps its agent's clock (set
            // at creation, [`crate::domains::migrate`]).
            let now = self.arch.now_ns();
            self.partitions[idx].note_started(now);
            let handles = crate::journal::start_args(self.partitions[idx].boot_handles());
            if self.transition(idx, PartitionState::Running, KernelEvent::PartitionStart, handles) {
                let log = self.partitions[idx].id().0;
                if let Some(seq) = self.witness.records(log).checked_sub(1) {
                    crate::journal::started(self.journal, &mut self.arch, log, seq, self.partitions[idx].boot_handles());
                }
            }
        }
    }

    pub(crate) fn handle_exit(&mut self, idx: usize, exit: Exit) -> Flow {
        match exit {
            Exit::Hvc { imm: 0 } => {
                let function = self.partitions[idx].vcpu().regs.x[0];
                let flow = crate::dispatch::hypercall(self, idx);
                crate::recovery::fault::after_call(self, idx, function, flow)
            }
            Exit::Hvc { imm } => {
                let flow = crate::dispatch::bad_immediate(self, idx, imm);
                crate::recovery::fault::after_refusal(self, idx, HVC_IMMEDIATE_OP, flow)
            }
            Exit::Timer => {
                self.partitions[idx].count_preemption();
                Flow::Reschedule
            }
            Exit::WaitForInterrupt => {
                self.partitions[idx].vcpu_mut().skip_instruction();
                Flow::Yielded
            }
            Exit::DataAbort { ipa, fault: FaultStatus::Translation(_), .. }
                if self.partitions[idx].heap().contains(ipa) =>
            {
                self.demand_page(idx, ipa)
            }
            other => {
                crate::recovery::fault::partition_fault(self, idx, other);
                Flow::Reschedule
            }
        }
    }

    /// Back a first touch of the heap window with a zeroed frame.
    fn demand_page(&mut self, idx: usize, ipa: crate::memory::addr::Ipa) -> Flow {
        let Some(frame) = self.frames.alloc() else {
            crate::recovery::fault::partition_fault(self, idx, Exit::Other { esr: 0 });
            return Flow::Reschedule;
        };
        self.arch.phys_zero(frame, PAGE_BYTES);
        let p = &mut self.partitions[idx];
        match p.stage2_mut().map(&mut self.arch, &mut self.frames, ipa.page_base(), frame, S2Perm::ReadWrite, MemType::Normal) {
            Ok(()) => {
                p.add_heap_page(ipa.page_base(), frame);
                Flow::Resume
            }
            Err(_) => {
                self.frames.free(frame);
                crate::recovery::fault::partition_fault(self, idx, Exit::Other { esr: 0 });
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
            refused: self.refused(),
            stopped: 0,
            evicted: self.evicted(),
            elapsed_ns: self.arch.now_ns() - start,
        };
        for idx in 0..self.partitions.len() {
            self.partitions[idx].console_flush(&mut self.arch);
            match self.partitions[idx].state() {
                PartitionState::Finished => summary.finished += 1,
                PartitionState::Fenced => {
                    summary.fenced += 1;
                    if let Some(deadline) = self.partitions[idx].recovery().fence_deadline() {
                        let name = self.partitions[idx].desc().name;
                        let left_ms = deadline.saturating_sub(self.arch.now_ns()) / 1_000_000;
                        console::hyp_line(
                            &mut self.arch,
                            format_args!("{} stays fenced: the run ended {left_ms} ms before its fence timeout", name_str(&name)),
                        );
                    }
                }
                PartitionState::Running | PartitionState::Suspended | PartitionState::Loaded => {
                    summary.stopped += 1;
                    let name = self.partitions[idx].desc().name;
                    let why = if self.partitions[idx].waiting().is_some() { " (waiting for a message)" } else { "" };
                    console::hyp_line(
                        &mut self.arch,
                        format_args!("run budget spent: stopping {}{why}", name_str(&name)),
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

}

