//! Partitions: EL1 virtual machines with their own VMID, stage-2 tables and vCPU.

use alloc::vec::Vec;

use rvm_abi::bundle::PartitionDesc;

use crate::memory::addr::{Ipa, PhysAddr};
use crate::recovery::checkpoint::{Checkpoint, CheckpointLimit};
use crate::load::image::SharedImage;
use crate::recovery::policy::RecoveryState;
use crate::memory::stage2::Stage2Table;
use crate::running::vcpu::Vcpu;
use crate::arch::Arch;
use crate::console::{hyp_line, sanitize, OutputCredit};
use rvm_abi::ident::MAX_IDENT_LEN;

/// A partition's id: its index in the bundle plus one (0 is the hypervisor's
/// own log). Also the id of its witness log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

impl PartitionId {
    pub const HYPERVISOR: PartitionId = PartitionId(rvm_abi::witness::HYPERVISOR_LOG);
}

/// Life cycle (docs/DESIGN.md section 3). Every transition is witnessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionState {
    /// VMID and tables allocated, nothing loaded.
    Created,
    /// Image, module and capabilities in place; not yet run.
    Loaded,
    /// Runnable.
    Running,
    /// Not runnable for now (waiting, or parked by the scheduler).
    Suspended,
    /// Stopped after a fault: vCPU halted, capabilities suspended, memory kept.
    Fenced,
    /// Gone: capabilities revoked, memory scrubbed and returned.
    Evicted,
    /// The agent finished (its `Exit` call or PSCI SYSTEM_OFF).
    Finished,
    /// Memory tier `Dormant`, idle at a turn boundary: checkpointed, its
    /// memory scrubbed and returned to the pool, its stage-2 tables torn
    /// down; VMID, capabilities, channels, state store and log kept. The
    /// next message sent to it recreates it from the pristine image and
    /// that checkpoint ([`crate::domains::dormant`]).
    Dormant,
}

impl PartitionState {
    pub const fn name(self) -> &'static str {
        match self {
            PartitionState::Created => "created",
            PartitionState::Loaded => "loaded",
            PartitionState::Running => "running",
            PartitionState::Suspended => "suspended",
            PartitionState::Fenced => "fenced",
            PartitionState::Evicted => "evicted",
            PartitionState::Finished => "finished",
            PartitionState::Dormant => "dormant",
        }
    }

    /// Whether the kernel may move a partition from `self` to `to`.
    pub fn may_become(self, to: PartitionState) -> bool {
        use PartitionState::*;
        matches!(
            (self, to),
            (Created, Loaded)
                | (Created, Fenced)
                | (Created, Evicted)
                | (Loaded, Evicted)
                | (Loaded, Running)
                | (Loaded, Fenced)
                | (Running, Suspended)
                | (Suspended, Running)
                | (Running, Fenced)
                | (Suspended, Fenced)
                | (Running, Finished)
                | (Suspended, Finished)
                | (Fenced, Running)
                | (Fenced, Evicted)
                | (Finished, Evicted)
                | (Running, Dormant)
                | (Suspended, Dormant)
                | (Dormant, Running)
                | (Dormant, Fenced)
                | (Dormant, Evicted)
        )
    }
}

/// Counters shown in the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    pub hypercalls: u64,
    pub denied: u64,
    pub preemptions: u64,
    pub faults: u64,
    pub demand_pages: u64,
}

/// A window of IPA space backed on first touch by fresh zeroed frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemandWindow {
    pub base: Ipa,
    pub len: u64,
}

impl DemandWindow {
    pub fn contains(&self, ipa: Ipa) -> bool {
        ipa >= self.base && ipa.raw() - self.base.raw() < self.len
    }
}

/// Longest console line buffered before it is flushed anyway.
pub const CONSOLE_LINE_MAX: usize = 200;

/// One partition.
pub struct Partition {
    pub id: PartitionId,
    pub desc: PartitionDesc,
    pub state: PartitionState,
    pub vmid: u8,
    pub stage2: Stage2Table,
    /// Boxed so a CPU can take it out cheaply while the guest runs
    /// ([`crate::running::smp::Lease`]); a placeholder stands in meanwhile.
    pub vcpu: alloc::boxed::Box<Vcpu>,
    /// Frames only this partition maps (scrubbed and freed on eviction).
    pub private_frames: Vec<PhysAddr>,
    /// Frames reserved for it at admission ([`crate::load::footprint`]),
    /// given back when it is evicted.
    pub frames_committed: u64,
    /// EL2 heap reserved for it at admission ([`crate::memory::quota`]).
    pub heap_committed: usize,
    pub heap: DemandWindow,
    /// Heap pages backed so far (IPA, frame): scrubbed and unmapped when the
    /// guest is restarted, freed on eviction.
    pub heap_pages: Vec<(Ipa, PhysAddr)>,
    /// Where the guest image is entered (every start begins here).
    pub entry: Ipa,
    /// The partition's own raw image, kept pristine for restarts (partitions
    /// running the shared runtime restart from the hypervisor's copy).
    pub own_image: Option<SharedImage>,
    /// The last checkpoint the runtime handed over.
    pub checkpoint: Option<Checkpoint>,
    /// Bound on a checkpoint's size.
    pub checkpoint_limit: CheckpointLimit,
    /// Id the next checkpoint gets.
    pub next_checkpoint_id: u64,
    /// Pages of the restore window mapped now.
    pub checkpoint_mapped: u64,
    /// Recovery policy and history.
    pub recovery: RecoveryState,
    /// Guest starts after the first (restarts, rollbacks, unfences).
    pub restarts: u32,
    /// Starts that resumed from a checkpoint.
    pub rollbacks: u32,
    pub console_line: heapless::Vec<u8, CONSOLE_LINE_MAX>,
    /// Its share of the console: text beyond it is dropped, witness frames
    /// beyond it hold the partition back ([`OutputCredit`]).
    pub output: OutputCredit,
    pub exit_code: Option<u64>,
    pub stats: PartitionStats,
    /// When the partition was first run, for its virtual clock.
    pub started_ns: Option<u64>,
    /// Handles it starts with, listed on its boot-info page.
    pub boot_handles: Vec<rvm_abi::bootinfo::HandleInfo>,
    /// Where its WASM module is mapped (IPA, length); (0, 0) for raw guests.
    pub wasm: (u64, u64),
}

impl Partition {
    /// A partition just created from `desc`: tables and VMID in place,
    /// nothing loaded, its heap window `heap_len` bytes from
    /// `layout::HEAP_IPA`, the recovery policy its manifest asks for.
    pub fn created(id: PartitionId, desc: PartitionDesc, vmid: u8, stage2: Stage2Table, heap_len: u64) -> Self {
        use rvm_abi::bootinfo::layout;
        Self {
            id,
            desc,
            state: PartitionState::Created,
            vmid,
            stage2,
            vcpu: alloc::boxed::Box::new(Vcpu::new(0, layout::BOOTINFO_IPA)),
            private_frames: Vec::new(),
            frames_committed: 0,
            heap_committed: 0,
            heap: DemandWindow { base: Ipa::new(layout::HEAP_IPA), len: heap_len },
            heap_pages: Vec::new(),
            entry: Ipa::new(0),
            own_image: None,
            checkpoint: None,
            checkpoint_limit: CheckpointLimit::for_budget(desc.wasm_pages),
            next_checkpoint_id: 1,
            checkpoint_mapped: 0,
            recovery: RecoveryState::new(crate::recovery::policy::RecoveryPolicy::from_desc(&desc.recovery)),
            restarts: 0,
            rollbacks: 0,
            console_line: heapless::Vec::new(),
            output: OutputCredit::new(),
            exit_code: None,
            stats: PartitionStats::default(),
            started_ns: None,
            boot_handles: Vec::new(),
            wasm: (0, 0),
        }
    }

    pub fn name(&self) -> &str {
        self.desc.name()
    }

    /// `n` bytes of its text were dropped over its credit: counted, and the
    /// first drop noted in a line of the hypervisor.
    pub fn console_dropped(&mut self, arch: &mut dyn Arch, n: usize) {
        if self.output.note_dropped(n) {
            self.console_flush(arch);
            hyp_line(
                arch,
                format_args!(
                    "partition {} '{}' console output over its credit ({} bytes/s): dropped",
                    self.id.0,
                    self.name(),
                    crate::console::TEXT_RATE
                ),
            );
        }
    }

    /// Append guest text to its line buffer, printing full lines (the
    /// caller took the bytes from its credit, [`OutputCredit::take_text`]).
    pub fn console_write(&mut self, arch: &mut dyn Arch, text: &[u8]) {
        for &b in text {
            if b == b'\n' {
                self.console_flush(arch);
                continue;
            }
            if b == b'\r' {
                continue;
            }
            if self.console_line.len() >= CONSOLE_LINE_MAX {
                self.console_flush(arch);
            }
            let _ = self.console_line.push(sanitize(b));
        }
    }

    /// Print whatever text is buffered as one line, `[name] text`.
    pub fn console_flush(&mut self, arch: &mut dyn Arch) {
        if self.console_line.is_empty() {
            return;
        }
        let mut line = heapless::Vec::<u8, { MAX_IDENT_LEN + CONSOLE_LINE_MAX + 4 }>::new();
        let name = self.desc.name().as_bytes();
        for part in [&b"["[..], &name[..name.len().min(MAX_IDENT_LEN)], b"] ", &self.console_line, b"\n"] {
            // Cannot fail: the capacity covers the longest name and line.
            let _ = line.extend_from_slice(part);
        }
        arch.console_write(&line);
        self.console_line.clear();
    }

    pub fn is_runnable(&self) -> bool {
        matches!(self.state, PartitionState::Loaded | PartitionState::Running)
    }
}

/// Most partitions one hypervisor runs (VMIDs 1..=255).
pub const MAX_PARTITIONS: usize = 255;

/// A NUL-padded name field as text.
pub fn name_str(field: &[u8; 32]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(32);
    core::str::from_utf8(&field[..end]).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::PartitionState::*;

    #[test]
    fn life_cycle_only_moves_forward_where_the_design_allows() {
        assert!(Created.may_become(Loaded));
        assert!(Running.may_become(Fenced));
        assert!(Fenced.may_become(Evicted));
        assert!(!Evicted.may_become(Running));
        assert!(!Finished.may_become(Running));
        assert!(!Created.may_become(Running));
        assert!(Running.may_become(Dormant) && Dormant.may_become(Running));
        assert!(Dormant.may_become(Fenced) && Dormant.may_become(Evicted));
        assert!(!Dormant.may_become(Finished) && !Loaded.may_become(Dormant));
    }
}
