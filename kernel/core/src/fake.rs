//! An in-memory machine for host tests: sparse RAM, a settable clock, a
//! captured console, and guests written as Rust closures that see their
//! memory only through the stage-2 tables, as hardware would.
//!
//! [`FakeArch`] is the shared machine; [`FakeCpu`]s are its CPUs, which share
//! its RAM, guests and clock. [`Hypervisor::run_on_cpus`] drives N of them
//! through the same per-CPU steps real CPUs take ([`crate::running::smp`]),
//! interleaved deterministically: each round, every CPU in turn either
//! picks its next partition or runs its leased guest once and hands the
//! exit back — so while one CPU handles an exit, the others' guests are out
//! on their CPUs, as on hardware.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::memory::addr::{Ipa, PhysAddr, PAGE_BYTES, PAGE_SIZE};
use crate::arch::{Arch, CpuArch, CpuId, Stage2Context, TrapInfo, TrapKind};
use crate::report::RunSummary;
use crate::state::Hypervisor;
use crate::running::smp::Step;
use crate::memory::stage2::{self, S2Perm};
use crate::running::vcpu::Vcpu;

/// ESR values the fake guests use to leave.
pub mod esr {
    /// `hvc #0`.
    pub const HVC0: u64 = 0x16 << 26 | 1 << 25;
    /// `smc #0`.
    pub const SMC0: u64 = 0x17 << 26 | 1 << 25;
    /// `wfi`.
    pub const WFI: u64 = 0x01 << 26 | 1 << 25;
    /// An undefined instruction.
    pub const UNDEF: u64 = 1 << 25;
}

/// What a fake guest sees: its registers and its memory through stage 2.
pub struct GuestView<'a> {
    mem: &'a mut BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
    root: PhysAddr,
}

/// A stage-2 fault raised by a fake guest's access.
#[derive(Clone, Copy, Debug)]
pub struct Fault(pub TrapInfo);

impl GuestView<'_> {
    fn translate(&self, ipa: Ipa, write: bool) -> Result<PhysAddr, Fault> {
        let probe = PteReader { mem: self.mem };
        match stage2::walk(&probe, self.root, ipa) {
            Some(t) if !write || t.perm == S2Perm::ReadWrite => Ok(t.pa),
            found => {
                // Translation fault level 3, or permission fault level 3.
                let fsc = if found.is_some() { 0x0f } else { 0x07 };
                let wnr = if write { 1 << 6 } else { 0 };
                Err(Fault(TrapInfo {
                    kind: TrapKind::Sync,
                    esr: 0x24 << 26 | 1 << 25 | wnr | fsc,
                    far: ipa.raw(),
                    hpfar: (ipa.raw() >> 12) << 4,
                }))
            }
        }
    }

    /// Read guest memory, faulting like hardware would.
    pub fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        for (i, b) in buf.iter_mut().enumerate() {
            let pa = self.translate(Ipa::new(ipa + i as u64), false)?;
            *b = self.mem.get(&(pa.raw() / PAGE_SIZE)).map_or(0, |p| p[(pa.raw() % PAGE_SIZE) as usize]);
        }
        Ok(())
    }

    /// Write guest memory, faulting like hardware would.
    pub fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), Fault> {
        for (i, b) in data.iter().enumerate() {
            let pa = self.translate(Ipa::new(ipa + i as u64), true)?;
            let page = self.mem.entry(pa.raw() / PAGE_SIZE).or_insert_with(|| Box::new([0; PAGE_BYTES]));
            page[(pa.raw() % PAGE_SIZE) as usize] = *b;
        }
        Ok(())
    }
}

struct PteReader<'a> {
    mem: &'a BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
}

impl PteReader<'_> {
    fn pte(&self, table: PhysAddr, index: usize) -> u64 {
        self.mem.get(&(table.raw() / PAGE_SIZE)).map_or(0, |p| {
            u64::from_le_bytes(p[index * 8..index * 8 + 8].try_into().unwrap_or([0; 8]))
        })
    }
}

// Only the table reads are needed for a walk; everything else is unreachable
// for this read-only view.
impl Arch for PteReader<'_> {
    fn now_ns(&self) -> u64 {
        0
    }
    fn console_write(&mut self, _: &[u8]) {}
    fn phys_read(&self, _: PhysAddr, _: &mut [u8]) {}
    fn phys_write(&mut self, _: PhysAddr, _: &[u8]) {}
    fn phys_zero(&mut self, _: PhysAddr, _: usize) {}
    fn phys_copy(&mut self, _: PhysAddr, _: PhysAddr, _: usize) {}
    fn read_pte(&self, table: PhysAddr, index: usize) -> u64 {
        self.pte(table, index)
    }
    fn write_pte(&mut self, _: PhysAddr, _: usize, _: u64) {}
    fn flush_stage2(&mut self, _: u8) {}
    fn sync_icache(&mut self, _: PhysAddr, _: usize) {}
}

/// A guest program: called each time its vCPU is run; returns how it left.
pub type GuestFn = Box<dyn FnMut(&mut Vcpu, &mut GuestView<'_>) -> TrapInfo>;

/// What the fake machine's CPUs share: RAM, the guest programs, the clock.
#[derive(Default)]
struct FakeWorld {
    mem: BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
    guests: BTreeMap<u8, GuestFn>,
    clock_ns: u64,
    /// Every idle wait: the CPU, the clock then, and until when it was asked
    /// to wait.
    idles: Vec<(CpuId, u64, u64)>,
}

/// The fake machine.
#[derive(Default)]
pub struct FakeArch {
    world: Rc<RefCell<FakeWorld>>,
    /// Nanoseconds the clock advances on every guest entry.
    pub tick_ns: u64,
    pub console: Vec<u8>,
    /// Where each console write ended in [`FakeArch::console`], in order
    /// (one entry per `console_write`, to check that lines are written whole).
    pub console_writes: Vec<usize>,
    /// Bytes waiting on the console's receive side ([`FakeArch::type_input`]).
    pub input: alloc::collections::VecDeque<u8>,
    /// Bytes the host sent on the control channel ([`FakeArch::send_on_channel`]).
    pub channel_input: alloc::collections::VecDeque<u8>,
    /// Guest entries, EL1/FP reloads and saves, over all CPUs (updated when
    /// a run on the fake CPUs returns).
    pub runs: u64,
    pub flushes: u64,
    pub switches: u64,
    pub saves: u64,
    /// Every [kick](Arch::kick) the kernel sent, in order: the CPU it woke.
    pub kicks: Vec<CpuId>,
    /// Every `Credit` the kernel sent the host (the other frames go to the
    /// console as their lines).
    pub credits: Vec<u64>,
    /// Every committed set the kernel sent the host to keep (`StateBegins`
    /// and its `StateItem`s), in order.
    pub sets: Vec<SentSet>,
    /// Answer each whole set with `StateSaved` on the control channel, as
    /// a host that keeps it does (off: [`FakeArch::host`] answers, or
    /// nothing does).
    pub keep_sets: bool,
    /// A host that answers each whole set it is sent with frames, each
    /// arriving on the control channel a delay (ns) after the set was sent.
    pub host: Option<HostFn>,
    /// Host bytes not arrived yet: when (clock, ns) and what.
    pub arriving: Vec<(u64, Vec<u8>)>,
    /// Every tool call the kernel sent the host (`ToolRequest`), in order.
    pub tool_requests: Vec<SentToolRequest>,
    /// A host that answers each tool request with frames, each arriving a
    /// delay (ns) after the request was sent (none: nobody answers).
    pub tool_host: Option<ToolHostFn>,
}

/// A host's answers to a tool request: (delay ns, frame bytes) each.
pub type ToolHostFn = Box<dyn FnMut(&SentToolRequest) -> Vec<(u64, Vec<u8>)>>;

/// A tool call the kernel sent the host ([`FakeArch::tool_requests`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentToolRequest {
    pub log: u32,
    pub seq: u64,
    pub capacity: u32,
    pub name: Vec<u8>,
    pub request: Vec<u8>,
}

/// The `ToolAnswer` frame a host sends for the call of record `seq` of
/// log `log`.
pub fn tool_answer(log: u32, seq: u64, status: rvm_abi::tool::AnswerStatus, response: &[u8]) -> Vec<u8> {
    let mut out = rvm_abi::control::tool_answer_start(log, seq, status, response.len()).to_vec();
    out.extend_from_slice(response);
    out
}

/// A host's answers to a set: (delay ns, frame bytes) each.
pub type HostFn = Box<dyn FnMut(&SentSet) -> Vec<(u64, Vec<u8>)>>;

/// A committed set the kernel sent the host ([`FakeArch::sets`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentSet {
    pub log: u32,
    pub seq: u64,
    pub digest: [u8; 32],
    /// How many items its `StateBegins` announced.
    pub count: u32,
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The `StateSaved` frame a host sends once it keeps log `log`'s set as of
/// record `seq`.
pub fn state_saved(log: u32, seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    rvm_abi::control::write_state_saved(&mut |b| out.extend_from_slice(b), log, seq);
    out
}

impl FakeArch {
    pub fn new() -> Self {
        Self { tick_ns: 1_000, ..Self::default() }
    }

    /// Install the program that runs whenever VMID `vmid` is entered.
    pub fn set_guest(&mut self, vmid: u8, guest: GuestFn) {
        self.world.borrow_mut().guests.insert(vmid, guest);
    }

    pub fn console_text(&self) -> alloc::string::String {
        alloc::string::String::from_utf8_lossy(&self.console).into_owned()
    }

    /// Put bytes on the console's receive side, as the host would send them.
    pub fn type_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes.iter().copied());
    }

    /// Send bytes on the control channel, as the host would.
    pub fn send_on_channel(&mut self, bytes: &[u8]) {
        self.channel_input.extend(bytes.iter().copied());
    }

    /// The clock, in nanoseconds.
    pub fn clock_ns(&self) -> u64 {
        self.world.borrow().clock_ns
    }

    /// Set the clock.
    pub fn set_clock_ns(&mut self, ns: u64) {
        self.world.borrow_mut().clock_ns = ns;
    }

    /// Every idle wait any CPU made: (CPU, clock then, until when asked).
    pub fn idle_waits(&self) -> Vec<(CpuId, u64, u64)> {
        self.world.borrow().idles.clone()
    }

    /// CPU `id` of this machine.
    pub fn cpu(&self, id: CpuId) -> FakeCpu {
        FakeCpu { id, world: Rc::clone(&self.world), tick_ns: self.tick_ns, runs: 0, switches: 0, saves: 0, idles: 0 }
    }

    /// Hypercall exit as the fake hardware reports it.
    pub fn hvc() -> TrapInfo {
        TrapInfo { kind: TrapKind::Sync, esr: esr::HVC0, far: 0, hpfar: 0 }
    }

    /// Timer interrupt exit.
    pub fn timer() -> TrapInfo {
        TrapInfo { kind: TrapKind::Irq, esr: 0, far: 0, hpfar: 0 }
    }

    /// A trap with the given syndrome.
    pub fn trap(esr: u64) -> TrapInfo {
        TrapInfo { kind: TrapKind::Sync, esr, far: 0, hpfar: 0 }
    }

    fn absorb(&mut self, cpu: &FakeCpu) {
        self.runs += cpu.runs;
        self.switches += cpu.switches;
        self.saves += cpu.saves;
    }
}

fn page_mut(mem: &mut BTreeMap<u64, Box<[u8; PAGE_BYTES]>>, pa: u64) -> &mut [u8; PAGE_BYTES] {
    mem.entry(pa / PAGE_SIZE).or_insert_with(|| Box::new([0; PAGE_BYTES]))
}

impl Arch for FakeArch {
    fn now_ns(&self) -> u64 {
        self.world.borrow().clock_ns
    }

    fn console_write(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes);
        self.console_writes.push(self.console.len());
    }

    fn phys_read(&self, pa: PhysAddr, buf: &mut [u8]) {
        let w = self.world.borrow();
        for (i, b) in buf.iter_mut().enumerate() {
            let a = pa.raw() + i as u64;
            *b = w.mem.get(&(a / PAGE_SIZE)).map_or(0, |p| p[(a % PAGE_SIZE) as usize]);
        }
    }

    fn phys_write(&mut self, pa: PhysAddr, data: &[u8]) {
        let mut w = self.world.borrow_mut();
        for (i, b) in data.iter().enumerate() {
            let a = pa.raw() + i as u64;
            page_mut(&mut w.mem, a)[(a % PAGE_SIZE) as usize] = *b;
        }
    }

    fn phys_zero(&mut self, pa: PhysAddr, len: usize) {
        let mut w = self.world.borrow_mut();
        for i in 0..len {
            let a = pa.raw() + i as u64;
            page_mut(&mut w.mem, a)[(a % PAGE_SIZE) as usize] = 0;
        }
    }

    fn phys_copy(&mut self, dst: PhysAddr, src: PhysAddr, len: usize) {
        let mut buf = alloc::vec![0u8; len];
        self.phys_read(src, &mut buf);
        self.phys_write(dst, &buf);
    }

    fn read_pte(&self, table: PhysAddr, index: usize) -> u64 {
        PteReader { mem: &self.world.borrow().mem }.pte(table, index)
    }

    fn write_pte(&mut self, table: PhysAddr, index: usize, value: u64) {
        self.phys_write(PhysAddr::new(table.raw() + index as u64 * 8), &value.to_le_bytes());
    }

    fn flush_stage2(&mut self, _vmid: u8) {
        self.flushes += 1;
    }

    fn sync_icache(&mut self, _pa: PhysAddr, _len: usize) {}

    fn kick(&mut self, cpu: CpuId) -> bool {
        self.kicks.push(cpu);
        true
    }

    fn kicks(&self) -> bool {
        true
    }

    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.input.len());
        for (slot, b) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = b;
        }
        n
    }

    /// The fake machine has a channel: the host's side is
    /// [`FakeArch::send_on_channel`] and what the kernel sends is kept.
    fn has_control_channel(&self) -> bool {
        true
    }

    fn send_frame(&mut self, frame: &rvm_abi::control::Outgoing<'_>) {
        use rvm_abi::control::Outgoing;
        match *frame {
            Outgoing::Credit { taken } => self.credits.push(taken),
            Outgoing::StateBegins { log, seq, digest, items } => {
                self.sets.push(SentSet { log, seq, digest: *digest, count: items, items: Vec::new() });
            }
            Outgoing::StateItem { log, key, value } => {
                if let Some(set) = self.sets.last_mut().filter(|s| s.log == log) {
                    set.items.push((key.to_vec(), value.to_vec()));
                }
            }
            Outgoing::ToolRequest { log, seq, capacity, name, request } => {
                let sent = SentToolRequest { log, seq, capacity, name: name.to_vec(), request: request.to_vec() };
                if let Some(host) = self.tool_host.as_mut() {
                    let now = self.world.borrow().clock_ns;
                    for (delay, bytes) in host(&sent) {
                        self.arriving.push((now + delay, bytes));
                    }
                }
                self.tool_requests.push(sent);
            }
            _ => self.console_frame(frame),
        }
        // A whole set is answered: at once when the fake host keeps sets,
        // or as the test's host says.
        let whole = self.sets.last().filter(|s| s.items.len() == s.count as usize).cloned();
        if let Some(set) = whole.filter(|_| matches!(frame, Outgoing::StateBegins { .. } | Outgoing::StateItem { .. })) {
            if self.keep_sets {
                self.channel_input.extend(state_saved(set.log, set.seq));
            }
            if let Some(host) = self.host.as_mut() {
                let now = self.world.borrow().clock_ns;
                for (delay, bytes) in host(&set) {
                    self.arriving.push((now + delay, bytes));
                }
            }
        }
    }

    fn channel_read(&mut self, buf: &mut [u8]) -> usize {
        let now = self.world.borrow().clock_ns;
        while let Some(at) = self.arriving.iter().position(|(t, _)| *t <= now) {
            let (_, bytes) = self.arriving.remove(at);
            self.channel_input.extend(bytes);
        }
        let n = buf.len().min(self.channel_input.len());
        for (slot, b) in buf.iter_mut().zip(self.channel_input.drain(..n)) {
            *slot = b;
        }
        n
    }
}

/// One CPU of the fake machine.
pub struct FakeCpu {
    id: CpuId,
    world: Rc<RefCell<FakeWorld>>,
    tick_ns: u64,
    pub runs: u64,
    pub switches: u64,
    pub saves: u64,
    pub idles: u64,
}

impl CpuArch for FakeCpu {
    fn cpu(&self) -> CpuId {
        self.id
    }

    fn save_vcpu_state(&mut self, _vcpu: &mut Vcpu) {
        self.saves += 1;
    }

    fn run_vcpu(&mut self, vcpu: &mut Vcpu, s2: Stage2Context, deadline_ns: u64, switched: bool) -> TrapInfo {
        self.runs += 1;
        if switched {
            self.switches += 1;
        }
        let mut w = self.world.borrow_mut();
        if w.clock_ns >= deadline_ns {
            // The slice's timer interrupt is pending: the guest exits at once.
            return FakeArch::timer();
        }
        w.clock_ns += self.tick_ns;
        let Some(mut guest) = w.guests.remove(&s2.vmid) else {
            // No program: the guest idles.
            return FakeArch::trap(esr::WFI);
        };
        let mut view = GuestView { mem: &mut w.mem, root: s2.root };
        let trap = guest(vcpu, &mut view);
        w.guests.insert(s2.vmid, guest);
        trap
    }

    fn idle(&mut self, until_ns: u64) {
        // One tick of waiting: the other CPUs' guests move the clock on.
        self.idles += 1;
        let mut w = self.world.borrow_mut();
        let now = w.clock_ns;
        w.idles.push((self.id, now, until_ns));
        w.clock_ns += self.tick_ns;
    }
}

impl Hypervisor<FakeArch> {
    /// Run on the boot CPU alone until every partition has finished, been
    /// fenced or refused, or the run budget is spent.
    pub fn run(&mut self) -> RunSummary {
        self.run_on_cpus(1)
    }

    /// Run on `cpus` fake CPUs, interleaved deterministically (see the
    /// module documentation), then finish the run as the boot CPU does.
    pub fn run_on_cpus(&mut self, cpus: usize) -> RunSummary {
        if self.cpus() != cpus {
            self.set_cpus(cpus);
        }
        self.restart_run();
        let mut hw: Vec<FakeCpu> = (0..self.cpus()).map(|c| self.arch.cpu(CpuId(c as u8))).collect();
        let mut steps: Vec<Option<Step>> = (0..hw.len()).map(|_| None).collect();
        loop {
            let mut all_stopped = true;
            for (c, cpu) in hw.iter_mut().enumerate() {
                let next = match steps[c].take() {
                    None => self.cpu_next(cpu),
                    Some(Step::Run(mut lease)) => {
                        let trap = lease.run(cpu);
                        self.cpu_exit(lease, trap, cpu)
                    }
                    Some(Step::Idle { until_ns }) => {
                        cpu.idle(until_ns);
                        self.cpu_next(cpu)
                    }
                    Some(Step::Stop) => Step::Stop,
                };
                all_stopped &= matches!(next, Step::Stop);
                steps[c] = Some(next);
            }
            if all_stopped && self.all_cpus_stopped() {
                break;
            }
        }
        for cpu in &hw {
            self.arch.absorb(cpu);
        }
        self.finish_run()
    }

    /// Run partition `idx` for one slice on its home CPU, whatever the
    /// scheduler would pick.
    pub fn run_slice(&mut self, idx: usize) {
        let home = self.home_cpu(idx).unwrap_or(CpuId::BOOT);
        let mut cpu = self.arch.cpu(home);
        self.start_if_loaded(idx);
        let start = self.arch.now_ns();
        let mut lease = self.lease(&mut cpu, idx, start, start.saturating_add(self.policy.slice_ns));
        loop {
            let trap = lease.run(&mut cpu);
            if lease.answer_without_lock(&trap) || self.cpu_exit_fast(&mut lease, trap) {
                continue;
            }
            match self.slice_over(lease, &mut cpu) {
                Some(again) => lease = again,
                None => break,
            }
        }
        self.arch.absorb(&cpu);
    }
}
