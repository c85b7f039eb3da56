//! Partitions: EL1 virtual machines with their own VMID, stage-2 tables and vCPU.

use alloc::vec::Vec;

use rvm_abi::bundle::PartitionDesc;

use crate::memory::addr::{Ipa, PhysAddr};
use crate::recovery::snapshot::{Snapshot, SnapshotLimit};
use crate::load::image::SharedImage;
use crate::recovery::policy::RecoveryState;
use crate::memory::frames::FrameAllocator;
use crate::memory::stage2::{MapError, Stage2Table};
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
    /// Memory tier `Dormant`, idle at a turn boundary: snapshoted, its
    /// memory scrubbed and returned to the pool, its stage-2 tables torn
    /// down; VMID, capabilities, channels, state store and log kept. The
    /// next message sent to it recreates it from the pristine image and
    /// that snapshot ([`crate::domains::dormant`]).
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
    id: PartitionId,
    desc: PartitionDesc,
    state: PartitionState,
    vmid: u8,
    stage2: Stage2Table,
    /// Boxed so a CPU can take it out cheaply while the guest runs
    /// ([`crate::running::smp::Lease`]); a placeholder stands in meanwhile.
    vcpu: alloc::boxed::Box<Vcpu>,
    /// Frames only this partition maps (scrubbed and freed on eviction).
    private_frames: Vec<PhysAddr>,
    /// Frames reserved for it at admission ([`crate::load::footprint`]),
    /// given back when it is evicted.
    frames_committed: u64,
    /// EL2 heap reserved for it at admission ([`crate::memory::quota`]).
    heap_committed: usize,
    heap: DemandWindow,
    /// Heap pages backed so far (IPA, frame): scrubbed and unmapped when the
    /// guest is restarted, freed on eviction.
    heap_pages: Vec<(Ipa, PhysAddr)>,
    /// Where the guest image is entered (every start begins here).
    entry: Ipa,
    /// The partition's own raw image, kept pristine for restarts (partitions
    /// running the shared runtime restart from the hypervisor's copy).
    own_image: Option<SharedImage>,
    /// The last snapshot the runtime handed over.
    snapshot: Option<Snapshot>,
    /// Bound on a snapshot's size.
    snapshot_limit: SnapshotLimit,
    /// Id the next snapshot gets.
    next_snapshot_id: u64,
    /// Pages of the restore window mapped now.
    snapshot_mapped: u64,
    /// Recovery policy and history.
    recovery: RecoveryState,
    /// Guest starts after the first (restarts, rollbacks, unfences).
    restarts: u32,
    /// Starts that resumed from a snapshot.
    rollbacks: u32,
    console_line: heapless::Vec<u8, CONSOLE_LINE_MAX>,
    /// Its share of the console: text beyond it is dropped, witness frames
    /// beyond it hold the partition back ([`OutputCredit`]).
    output: OutputCredit,
    exit_code: Option<u64>,
    stats: PartitionStats,
    /// When the partition was first run, for its virtual clock.
    started_ns: Option<u64>,
    /// Handles it starts with, listed on its boot-info page.
    boot_handles: Vec<rvm_abi::bootinfo::HandleInfo>,
    /// Where its WASM module is mapped (IPA, length); (0, 0) for raw guests.
    wasm: (u64, u64),
    /// A `ChannelRecv` it waits in (its vCPU parked at EL2), if any.
    wait: Option<ChannelWait>,
    /// The record (log, seq) whose committed set the host must keep before
    /// this partition runs again ([`crate::durable`]).
    saving: Option<(u32, u64)>,
    /// A tool call it waits in for the host's answer ([`crate::tool_calls`]).
    tool: Option<ToolWait>,
    /// Its last wait was ended by its dormancy policy
    /// ([`Partition::dormant_after_ns`]): an idle turn may now put it to
    /// sleep.
    idled_out: bool,
    /// A vacancy: an id no partition of this boot has (an instance that
    /// restarted keeps its tenants' ids; one that left keeps its gap).
    vacant: bool,
}

/// A `ToolCall` the host is running: allowed and witnessed (record `seq`),
/// answered later — by the host's `ToolAnswer` or at `deadline_ns` — with
/// a second record. Until then the partition does not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToolWait {
    /// The call's record.
    pub seq: u64,
    /// The call's registers `x1..x6`, as the guest passed them.
    pub regs: [u64; 6],
    /// The tier and token (witness id) the call was allowed at.
    pub tier: u8,
    pub cap: u32,
    /// Most response bytes the guest takes (checked writable at `regs[4]`).
    pub capacity: u64,
    /// When the kernel answers `TimedOut` itself.
    pub deadline_ns: u64,
}

/// Most channels one `WaitAny` may name.
pub const MAX_WAIT_CHANNELS: usize = 16;

/// A `ChannelWait` or `WaitAny` that found its channels empty and may wait:
/// the call, already authorized, is answered later — when a message
/// arrives, when its deadline passes, or when a capability no longer
/// allows it — with one witness record, as if it had been made then. Until
/// then the partition does not run ([`Partition::can_run`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelWait {
    /// `ChannelWait` or `WaitAny`.
    pub op: rvm_abi::Hypercall,
    /// The call's registers `x1..x6`, as the guest passed them.
    pub regs: [u64; 6],
    /// The channels it waits on: each handle as the guest passed it (read
    /// once, when the call was made) and the channel (its index) it names.
    pub channels: heapless::Vec<(u64, usize), MAX_WAIT_CHANNELS>,
    /// The proof tier and handle (witness form) it was authorized at.
    pub tier: u8,
    pub cap: u32,
    /// When it started waiting, and when it stops (`None`: no deadline).
    pub since_ns: u64,
    pub deadline_ns: Option<u64>,
    /// When its partition's dormancy policy ends the wait if nothing came
    /// first ([`Partition::dormant_after_ns`]).
    pub sleep_at_ns: Option<u64>,
}

impl ChannelWait {
    /// The earliest moment something other than a message ends it.
    pub fn ends_at(&self) -> Option<u64> {
        match (self.deadline_ns, self.sleep_at_ns) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        }
    }
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
            snapshot: None,
            snapshot_limit: SnapshotLimit::for_budget(desc.wasm_pages),
            next_snapshot_id: 1,
            snapshot_mapped: 0,
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
            wait: None,
            saving: None,
            tool: None,
            idled_out: false,
            vacant: false,
        }
    }

    /// The vacancy at `id`: no name, no memory but its (empty) stage-2
    /// root, never runnable, in no log.
    pub fn vacancy(id: PartitionId, vmid: u8, stage2: Stage2Table) -> Self {
        let desc = PartitionDesc { name: [0; 32], ..PartitionDesc::VACANT };
        let mut p = Self::created(id, desc, vmid, stage2, 0);
        p.state = PartitionState::Evicted;
        p.vacant = true;
        p
    }

    /// Whether this id is a vacancy ([`Partition::vacancy`]).
    pub fn is_vacant(&self) -> bool {
        self.vacant
    }

    /// [`Partition::created`] for an agent moved in from `from` with its
    /// snapshot `snapshot_id`: the same bound on snapshots, the next
    /// one after that snapshot, the agent's clock (`ClockRead`) going on
    /// from its old partition's, its module at `wasm` (IPA, length).
    pub(crate) fn moved_in(mut self, from: &Partition, snapshot_id: u64, wasm: (u64, u64)) -> Self {
        self.snapshot_limit = from.snapshot_limit;
        self.next_snapshot_id = snapshot_id + 1;
        self.started_ns = from.started_ns;
        self.wasm = wasm;
        self
    }

    pub fn name(&self) -> &str {
        self.desc.name()
    }

    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// What the bundle asked for it.
    pub fn desc(&self) -> &PartitionDesc {
        &self.desc
    }

    pub fn state(&self) -> PartitionState {
        self.state
    }

    /// Move it to `to`. Only the life-cycle mechanism
    /// ([`crate::state::Hypervisor::transition`]) and a refusal at boot or
    /// admission (which is its own record) move a partition.
    pub(crate) fn move_to(&mut self, to: PartitionState) {
        self.state = to;
        if to != PartitionState::Running {
            // Whatever its guest waited for is gone with the guest's run.
            self.wait = None;
            self.tool = None;
        }
    }

    /// Park its vCPU in `wait` (the guest gave up the CPU in the call).
    pub(crate) fn park(&mut self, wait: ChannelWait) {
        self.idled_out = false;
        self.wait = Some(wait);
    }

    /// How long a wait for a message may park it before it may go dormant
    /// instead (its memory returned, a message waking it: the kernel's
    /// `domains::dormant`). Only a partition that runs an agent module
    /// under the shared runtime can sleep; of those a `Dormant`-tier one
    /// does not park at all (0: an empty inbox ends its turn, and an idle
    /// turn puts it to sleep) and a `Warm` one parks for its manifest's
    /// `dormant_after_ms` (none: it parks as long as the wait allows).
    pub fn dormant_after_ns(&self) -> Option<u64> {
        if self.own_image.is_some() || self.wasm.1 == 0 {
            return None;
        }
        match self.desc.memory_tier {
            rvm_abi::bundle::MemoryTier::Dormant => Some(0),
            rvm_abi::bundle::MemoryTier::Warm if self.desc.dormant_after_ms != 0 => {
                Some(u64::from(self.desc.dormant_after_ms) * 1_000_000)
            }
            _ => None,
        }
    }

    /// Its dormancy policy ended its wait: it may sleep at its next idle
    /// turn.
    pub(crate) fn note_idled_out(&mut self) {
        self.idled_out = true;
    }

    /// Whether its dormancy policy ended its last wait (and it has not
    /// waited again or slept since).
    pub fn idled_out(&self) -> bool {
        self.idled_out
    }

    /// It went dormant, or received a message: the policy's permission is
    /// spent.
    pub(crate) fn clear_idled_out(&mut self) {
        self.idled_out = false;
    }

    /// The receive it waits in, if it does.
    pub fn waiting(&self) -> Option<&ChannelWait> {
        self.wait.as_ref()
    }

    /// Stop waiting: the call is answered now.
    pub(crate) fn unpark(&mut self) -> Option<ChannelWait> {
        self.wait.take()
    }

    /// Whether a CPU may run it now: runnable, not waiting in a call, and
    /// not waiting for the host to keep its committed set.
    pub fn can_run(&self) -> bool {
        self.is_runnable() && self.wait.is_none() && self.saving.is_none() && self.tool.is_none()
    }

    /// It may not run until the host answers its tool call ([`ToolWait`]).
    pub(crate) fn await_tool(&mut self, wait: ToolWait) {
        self.tool = Some(wait);
    }

    /// The tool call it waits in, if any.
    pub fn tool_wait(&self) -> Option<&ToolWait> {
        self.tool.as_ref()
    }

    /// Its tool call is answered now.
    pub(crate) fn end_tool_wait(&mut self) -> Option<ToolWait> {
        self.tool.take()
    }

    /// It may not run until the host keeps the set record `seq` of log
    /// `log` vouches for ([`crate::durable`]).
    pub(crate) fn await_saved(&mut self, log: u32, seq: u64) {
        self.saving = Some((log, seq));
    }

    /// The record whose set it waits for the host to keep, if any.
    pub fn saving(&self) -> Option<(u32, u64)> {
        self.saving
    }

    /// The host keeps the set it waited for.
    pub(crate) fn note_saved(&mut self) {
        self.saving = None;
    }

    pub fn vmid(&self) -> u8 {
        self.vmid
    }

    pub fn stage2(&self) -> &Stage2Table {
        &self.stage2
    }

    pub(crate) fn stage2_mut(&mut self) -> &mut Stage2Table {
        &mut self.stage2
    }

    /// Put `fresh` tables in place of its own, returned (to be destroyed).
    pub(crate) fn replace_stage2(&mut self, fresh: Stage2Table) -> Stage2Table {
        core::mem::replace(&mut self.stage2, fresh)
    }

    /// Its vCPU (a placeholder while the guest runs on a CPU).
    pub fn vcpu(&self) -> &Vcpu {
        &self.vcpu
    }

    pub(crate) fn vcpu_mut(&mut self) -> &mut Vcpu {
        &mut self.vcpu
    }

    /// Swap its vCPU with the one `other` holds (a lease going out or
    /// coming back, [`crate::running::smp::Lease`]).
    pub(crate) fn exchange_vcpu(&mut self, other: &mut alloc::boxed::Box<Vcpu>) {
        core::mem::swap(&mut self.vcpu, other);
    }

    /// Take its vCPU out to run it, leaving `spare` in its place.
    pub(crate) fn lend_vcpu(&mut self, spare: alloc::boxed::Box<Vcpu>) -> alloc::boxed::Box<Vcpu> {
        core::mem::replace(&mut self.vcpu, spare)
    }

    /// Its guest is entered at `entry` from now on: a fresh vCPU there.
    pub(crate) fn start_at(&mut self, entry: Ipa) {
        self.wait = None;
        self.tool = None;
        *self.vcpu = Vcpu::new(entry.raw(), rvm_abi::bootinfo::layout::BOOTINFO_IPA);
        self.entry = entry;
    }

    /// Its guest starts again (`rolled_back`: from a snapshot): counted,
    /// its exit code forgotten, a fresh vCPU at its entry.
    pub(crate) fn note_restart(&mut self, rolled_back: bool) {
        self.restarts = self.restarts.saturating_add(1);
        if rolled_back {
            self.rollbacks = self.rollbacks.saturating_add(1);
        }
        self.exit_code = None;
        self.wait = None;
        self.tool = None;
        *self.vcpu = Vcpu::new(self.entry.raw(), rvm_abi::bootinfo::layout::BOOTINFO_IPA);
    }

    /// Frames only this partition maps.
    pub fn private_frames(&self) -> &[PhysAddr] {
        &self.private_frames
    }

    /// `pa` is mapped by this partition alone (scrubbed and freed with it).
    pub(crate) fn add_private_frame(&mut self, pa: PhysAddr) {
        self.private_frames.push(pa);
    }

    /// Its private frames, handed over to be scrubbed and freed.
    pub(crate) fn take_private_frames(&mut self) -> Vec<PhysAddr> {
        core::mem::take(&mut self.private_frames)
    }

    /// After its private frames were taken: the ones it keeps.
    pub(crate) fn keep_private_frames(&mut self, kept: Vec<PhysAddr>) {
        self.private_frames = kept;
    }

    /// Map `img` into it; the copies of its writable pages become private.
    pub(crate) fn map_image(
        &mut self,
        arch: &mut dyn Arch,
        frames: &mut FrameAllocator,
        img: &SharedImage,
    ) -> Result<(), MapError> {
        img.map_into(arch, frames, &mut self.stage2, &mut self.private_frames)
    }

    /// Frames reserved for it at admission.
    pub fn frames_committed(&self) -> u64 {
        self.frames_committed
    }

    pub(crate) fn commit_frames(&mut self, n: u64) {
        self.frames_committed = n;
    }

    /// Its frame reservation, handed back (zero from now on).
    pub(crate) fn take_frames_committed(&mut self) -> u64 {
        core::mem::take(&mut self.frames_committed)
    }

    /// EL2 heap reserved for it at admission.
    pub fn heap_committed(&self) -> usize {
        self.heap_committed
    }

    pub(crate) fn commit_heap(&mut self, bytes: usize) {
        self.heap_committed += bytes;
    }

    /// Its EL2 heap reservation, handed back (zero from now on).
    pub(crate) fn take_heap_committed(&mut self) -> usize {
        core::mem::take(&mut self.heap_committed)
    }

    /// Its demand-paged heap window.
    pub fn heap(&self) -> DemandWindow {
        self.heap
    }

    /// Heap pages backed so far (IPA, frame).
    pub fn heap_pages(&self) -> &[(Ipa, PhysAddr)] {
        &self.heap_pages
    }

    /// A first touch of its heap at `ipa` was backed by `pa` (counted as a
    /// demand page).
    pub(crate) fn add_heap_page(&mut self, ipa: Ipa, pa: PhysAddr) {
        self.heap_pages.push((ipa, pa));
        self.stats.demand_pages += 1;
    }

    /// Its heap pages, handed over to be unmapped, scrubbed and freed.
    pub(crate) fn take_heap_pages(&mut self) -> Vec<(Ipa, PhysAddr)> {
        core::mem::take(&mut self.heap_pages)
    }

    /// Where its guest image is entered.
    pub fn entry(&self) -> Ipa {
        self.entry
    }

    /// Its own raw image (`None`: it runs the shared runtime).
    pub fn own_image(&self) -> Option<&SharedImage> {
        self.own_image.as_ref()
    }

    pub(crate) fn keep_own_image(&mut self, img: SharedImage) {
        self.own_image = Some(img);
    }

    /// Its own image's frames were released (they were among the private ones).
    pub(crate) fn forget_own_image(&mut self) {
        self.own_image = None;
    }

    /// The last snapshot the runtime handed over.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// `ck`, which it took, becomes its last snapshot (the next one gets
    /// the id after it); the one before is returned, to be released.
    pub(crate) fn install_snapshot(&mut self, ck: Snapshot) -> Option<Snapshot> {
        self.next_snapshot_id = ck.id + 1;
        self.snapshot.replace(ck)
    }

    /// `ck` (brought along by a moving agent) becomes its last snapshot;
    /// the one before is returned, to be released.
    pub(crate) fn receive_snapshot(&mut self, ck: Snapshot) -> Option<Snapshot> {
        self.snapshot.replace(ck)
    }

    /// Its last snapshot, handed over to be released.
    pub(crate) fn take_snapshot(&mut self) -> Option<Snapshot> {
        self.snapshot.take()
    }

    pub fn snapshot_limit(&self) -> SnapshotLimit {
        self.snapshot_limit
    }

    /// Id the next snapshot gets.
    pub fn next_snapshot_id(&self) -> u64 {
        self.next_snapshot_id
    }

    /// Pages of the restore window mapped now.
    pub fn snapshot_mapped(&self) -> u64 {
        self.snapshot_mapped
    }

    /// `pages` of the restore window are mapped now.
    pub(crate) fn note_snapshot_mapped(&mut self, pages: u64) {
        self.snapshot_mapped = pages;
    }

    /// The restore window is gone with its tables (nothing to unmap).
    pub(crate) fn forget_restore_window(&mut self) {
        self.snapshot_mapped = 0;
    }

    /// Unmap the first `pages` pages of the restore window.
    pub(crate) fn unmap_restore_pages(&mut self, arch: &mut dyn Arch, pages: u64) {
        crate::recovery::snapshot::unmap_window(arch, &mut self.stage2, pages, self.vmid);
    }

    /// Unmap whatever the restore window holds.
    pub(crate) fn clear_restore_window(&mut self, arch: &mut dyn Arch) {
        if self.snapshot_mapped != 0 {
            self.unmap_restore_pages(arch, self.snapshot_mapped);
            self.snapshot_mapped = 0;
        }
    }

    /// Map its last snapshot into the (empty) restore window: `Ok(None)`
    /// if it has none; on an error nothing of it stays mapped.
    pub(crate) fn map_last_snapshot(
        &mut self,
        arch: &mut dyn Arch,
        frames: &mut FrameAllocator,
    ) -> Result<Option<&Snapshot>, MapError> {
        let Some(ck) = self.snapshot.as_ref() else { return Ok(None) };
        match ck.map_into(arch, frames, &mut self.stage2) {
            Ok(pages) => {
                self.snapshot_mapped = pages;
                Ok(Some(ck))
            }
            Err(e) => {
                // Some pages may be mapped: take them all out again.
                crate::recovery::snapshot::unmap_window(arch, &mut self.stage2, ck.pages(), self.vmid);
                Err(e)
            }
        }
    }

    /// Recovery policy and history.
    pub fn recovery(&self) -> &RecoveryState {
        &self.recovery
    }

    pub(crate) fn recovery_mut(&mut self) -> &mut RecoveryState {
        &mut self.recovery
    }

    /// Guest starts after the first.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Starts that resumed from a snapshot.
    pub fn rollbacks(&self) -> u32 {
        self.rollbacks
    }

    /// Its share of the console.
    pub fn output(&self) -> &OutputCredit {
        &self.output
    }

    pub(crate) fn output_mut(&mut self) -> &mut OutputCredit {
        &mut self.output
    }

    pub fn exit_code(&self) -> Option<u64> {
        self.exit_code
    }

    /// Its agent finished with `code`.
    pub(crate) fn set_exit_code(&mut self, code: u64) {
        self.exit_code = Some(code);
    }

    pub fn stats(&self) -> PartitionStats {
        self.stats
    }

    /// One hypercall answered (`denied`: refused).
    pub(crate) fn count_call(&mut self, denied: bool) {
        self.stats.hypercalls += 1;
        if denied {
            self.stats.denied += 1;
        }
    }

    /// Its slice ran out.
    pub(crate) fn count_preemption(&mut self) {
        self.stats.preemptions += 1;
    }

    pub(crate) fn count_fault(&mut self) {
        self.stats.faults += 1;
    }

    /// When it was first run.
    pub fn started_ns(&self) -> Option<u64> {
        self.started_ns
    }

    /// It runs at `now`: its virtual clock starts now unless it already had.
    pub(crate) fn note_started(&mut self, now: u64) {
        self.started_ns.get_or_insert(now);
    }

    /// Handles it starts with.
    pub fn boot_handles(&self) -> &[rvm_abi::bootinfo::HandleInfo] {
        &self.boot_handles
    }

    pub(crate) fn add_boot_handle(&mut self, h: rvm_abi::bootinfo::HandleInfo) {
        self.boot_handles.push(h);
    }

    /// The handles listed for all its agents (agent 0) become agent `agent`'s.
    pub(crate) fn assign_shared_handles(&mut self, agent: u8) {
        for h in self.boot_handles.iter_mut().filter(|h| h.agent == 0) {
            h.agent = agent;
        }
    }

    /// Where its WASM module is mapped (IPA, length); (0, 0) for raw guests.
    pub fn wasm(&self) -> (u64, u64) {
        self.wasm
    }

    pub(crate) fn set_wasm(&mut self, ipa: u64, len: u64) {
        self.wasm = (ipa, len);
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
