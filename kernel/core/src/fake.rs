//! An in-memory machine for host tests: sparse RAM, a settable clock, a
//! captured console, and guests written as Rust closures that see their
//! memory only through the stage-2 tables, as hardware would.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::addr::{Ipa, PhysAddr, PAGE_BYTES, PAGE_SIZE};
use crate::arch::{Arch, Stage2Context, TrapInfo, TrapKind};
use crate::stage2::{self, S2Perm};
use crate::vcpu::Vcpu;

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
    fn save_vcpu_state(&mut self, _: &mut Vcpu) {}
    fn run_vcpu(&mut self, _: &mut Vcpu, _: Stage2Context, _: u64, _: bool) -> TrapInfo {
        TrapInfo { kind: TrapKind::Irq, esr: 0, far: 0, hpfar: 0 }
    }
}

/// A guest program: called each time its vCPU is run; returns how it left.
pub type GuestFn = Box<dyn FnMut(&mut Vcpu, &mut GuestView<'_>) -> TrapInfo>;

/// The fake machine.
#[derive(Default)]
pub struct FakeArch {
    mem: BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
    pub clock_ns: u64,
    /// Nanoseconds the clock advances on every guest entry.
    pub tick_ns: u64,
    pub console: Vec<u8>,
    guests: BTreeMap<u8, GuestFn>,
    pub runs: u64,
    pub flushes: u64,
    pub switches: u64,
    pub saves: u64,
}

impl FakeArch {
    pub fn new() -> Self {
        Self { tick_ns: 1_000, ..Self::default() }
    }

    /// Install the program that runs whenever VMID `vmid` is entered.
    pub fn set_guest(&mut self, vmid: u8, guest: GuestFn) {
        self.guests.insert(vmid, guest);
    }

    pub fn console_text(&self) -> alloc::string::String {
        alloc::string::String::from_utf8_lossy(&self.console).into_owned()
    }

    fn page_mut(&mut self, pa: u64) -> &mut [u8; PAGE_BYTES] {
        self.mem.entry(pa / PAGE_SIZE).or_insert_with(|| Box::new([0; PAGE_BYTES]))
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
}

impl Arch for FakeArch {
    fn now_ns(&self) -> u64 {
        self.clock_ns
    }

    fn console_write(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes);
    }

    fn phys_read(&self, pa: PhysAddr, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = pa.raw() + i as u64;
            *b = self.mem.get(&(a / PAGE_SIZE)).map_or(0, |p| p[(a % PAGE_SIZE) as usize]);
        }
    }

    fn phys_write(&mut self, pa: PhysAddr, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = pa.raw() + i as u64;
            self.page_mut(a)[(a % PAGE_SIZE) as usize] = *b;
        }
    }

    fn phys_zero(&mut self, pa: PhysAddr, len: usize) {
        for i in 0..len {
            let a = pa.raw() + i as u64;
            self.page_mut(a)[(a % PAGE_SIZE) as usize] = 0;
        }
    }

    fn phys_copy(&mut self, dst: PhysAddr, src: PhysAddr, len: usize) {
        let mut buf = alloc::vec![0u8; len];
        self.phys_read(src, &mut buf);
        self.phys_write(dst, &buf);
    }

    fn read_pte(&self, table: PhysAddr, index: usize) -> u64 {
        PteReader { mem: &self.mem }.pte(table, index)
    }

    fn write_pte(&mut self, table: PhysAddr, index: usize, value: u64) {
        self.phys_write(PhysAddr::new(table.raw() + index as u64 * 8), &value.to_le_bytes());
    }

    fn flush_stage2(&mut self, _vmid: u8) {
        self.flushes += 1;
    }

    fn sync_icache(&mut self, _pa: PhysAddr, _len: usize) {}

    fn save_vcpu_state(&mut self, _vcpu: &mut Vcpu) {
        self.saves += 1;
    }

    fn run_vcpu(&mut self, vcpu: &mut Vcpu, s2: Stage2Context, deadline_ns: u64, switched: bool) -> TrapInfo {
        self.runs += 1;
        if switched {
            self.switches += 1;
        }
        if self.clock_ns >= deadline_ns {
            // The slice's timer interrupt is pending: the guest exits at once.
            return Self::timer();
        }
        self.clock_ns += self.tick_ns;
        let Some(mut guest) = self.guests.remove(&s2.vmid) else {
            // No program: the guest idles.
            return Self::trap(esr::WFI);
        };
        let mut view = GuestView { mem: &mut self.mem, root: s2.root };
        let trap = guest(vcpu, &mut view);
        self.guests.insert(s2.vmid, guest);
        trap
    }
}
