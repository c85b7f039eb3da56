//! The real machine as the kernel's [`Arch`].

use rvm_kernel::addr::{PhysAddr, PhysRange};
use rvm_kernel::arch::{Arch, Stage2Context, TrapInfo, TrapKind};
use rvm_kernel::vcpu::Vcpu;

use crate::gic::Gic;
use crate::uart::Pl011;
use crate::{cpu, timer, vectors};

/// The console, shared with the panic and exception paths.
pub static CONSOLE: spin::Mutex<Option<Pl011>> = spin::Mutex::new(None);

/// Write to the console if there is one.
pub fn console_write(bytes: &[u8]) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        uart.write_bytes(bytes);
    }
}

/// Formatted console output for the boot path: `hal::print!(...)`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        if let Some(uart) = $crate::machine::CONSOLE.lock().as_mut() {
            let _ = write!(uart, $($arg)*);
        }
    }};
}

/// The machine RVM runs on.
pub struct Machine {
    /// RAM the kernel may read and write through `phys_*` (checked on use).
    ram: heapless::Vec<PhysRange, 4>,
    gic: Option<Gic>,
    timer_intid: u32,
    clock: timer::Clock,
    /// The deadline the hypervisor timer is armed for (0 = disarmed).
    armed_ns: u64,
    /// Interrupts seen that were not the hypervisor timer.
    pub stray_irqs: u64,
}

impl Machine {
    pub fn new(ram: heapless::Vec<PhysRange, 4>, gic: Option<Gic>, timer_intid: u32) -> Self {
        Self { ram, gic, timer_intid, clock: timer::Clock::new(), armed_ns: 0, stray_irqs: 0 }
    }

    /// Panic unless `[pa, pa+len)` is RAM: the kernel only ever hands the
    /// `phys_*` calls frames and the bundle, so anything else is a bug.
    fn check(&self, pa: PhysAddr, len: usize) -> usize {
        let ok = self.ram.iter().any(|r| {
            r.contains(pa) && pa.raw().checked_add(len as u64).is_some_and(|end| end <= r.end.raw())
        });
        assert!(ok, "physical access outside RAM: {pa} + {len:#x}");
        pa.raw() as usize
    }

    pub fn has_gic(&self) -> bool {
        self.gic.is_some()
    }
}

impl Arch for Machine {
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn console_write(&mut self, bytes: &[u8]) {
        console_write(bytes);
    }

    fn phys_read(&self, pa: PhysAddr, buf: &mut [u8]) {
        let src = self.check(pa, buf.len());
        // SAFETY: `check` proved the range is RAM, identity-mapped at EL2;
        // the kernel owns it (frames, bundle) and nothing else writes it now.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) }
    }

    fn phys_write(&mut self, pa: PhysAddr, data: &[u8]) {
        let dst = self.check(pa, data.len());
        // SAFETY: as in `phys_read`; `data` is a Rust slice elsewhere in RAM
        // that the kernel never hands out as a frame, so they do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) }
    }

    fn phys_zero(&mut self, pa: PhysAddr, len: usize) {
        let dst = self.check(pa, len);
        // SAFETY: as in `phys_write`.
        unsafe { core::ptr::write_bytes(dst as *mut u8, 0, len) }
    }

    fn phys_copy(&mut self, dst: PhysAddr, src: PhysAddr, len: usize) {
        let d = self.check(dst, len);
        let s = self.check(src, len);
        // SAFETY: both ranges are RAM the kernel owns; frames never overlap.
        unsafe { core::ptr::copy(s as *const u8, d as *mut u8, len) }
    }

    fn read_pte(&self, table: PhysAddr, index: usize) -> u64 {
        let at = self.check(PhysAddr::new(table.raw() + index as u64 * 8), 8);
        // SAFETY: an aligned u64 inside a table frame the kernel owns.
        unsafe { core::ptr::read_volatile(at as *const u64) }
    }

    fn write_pte(&mut self, table: PhysAddr, index: usize, value: u64) {
        let at = self.check(PhysAddr::new(table.raw() + index as u64 * 8), 8);
        // SAFETY: as in `read_pte`; the barrier orders it before any walk.
        unsafe { core::ptr::write_volatile(at as *mut u64, value) };
        crate::sysreg::dsb_ishst();
    }

    fn flush_stage2(&mut self, vmid: u8) {
        cpu::flush_vmid(vmid);
    }

    fn sync_icache(&mut self, pa: PhysAddr, len: usize) {
        let start = self.check(pa, len);
        let mut line = start & !63;
        while line < start + len {
            // SAFETY: cache maintenance by address on RAM we own.
            unsafe { core::arch::asm!("dc cvau, {0}", in(reg) line, options(nostack, preserves_flags)) };
            line += 64;
        }
        // SAFETY: invalidate all instruction caches to the point of unification.
        unsafe { core::arch::asm!("dsb ish", "ic ialluis", "dsb ish", "isb", options(nostack, preserves_flags)) };
    }

    fn save_vcpu_state(&mut self, vcpu: &mut Vcpu) {
        cpu::save_el1(&mut vcpu.el1);
        cpu::save_fp(&mut vcpu.fp);
    }

    fn run_vcpu(&mut self, vcpu: &mut Vcpu, s2: Stage2Context, deadline_ns: u64, switched: bool) -> TrapInfo {
        if switched {
            cpu::set_stage2(s2.root.raw(), s2.vmid);
            cpu::load_el1(&vcpu.el1);
            cpu::restore_fp(&vcpu.fp);
        }
        if self.gic.is_some() && self.armed_ns != deadline_ns {
            timer::arm_hyp_timer_at(self.clock.ns_to_ticks(deadline_ns));
            crate::sysreg::isb();
            self.armed_ns = deadline_ns;
        }
        let kind = vectors::enter_guest(&mut vcpu.regs);
        match kind {
            vectors::EXIT_IRQ => {
                let intid = Gic::ack();
                if intid != crate::gic::SPURIOUS {
                    Gic::eoi(intid);
                }
                if intid != self.timer_intid {
                    self.stray_irqs += 1;
                }
                timer::disarm_hyp_timer();
                self.armed_ns = 0;
                TrapInfo { kind: TrapKind::Irq, esr: 0, far: 0, hpfar: 0 }
            }
            vectors::EXIT_SYNC => TrapInfo {
                kind: TrapKind::Sync,
                esr: crate::sysreg_read!("esr_el2"),
                far: crate::sysreg_read!("far_el2"),
                hpfar: crate::sysreg_read!("hpfar_el2"),
            },
            // SError or AArch32: report as an unknown exception of the guest.
            other => TrapInfo { kind: TrapKind::Sync, esr: 0x2f << 26 | other, far: 0, hpfar: 0 },
        }
    }
}

/// Called by the vectors on an exception taken at EL2 itself: a hypervisor
/// bug. Print what is known and stop.
#[no_mangle]
extern "C" fn rvm_hyp_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    crate::print!("\nrvm: FATAL: EL2 exception (vector {kind}): esr {esr:#x} elr {elr:#x} far {far:#x}\n");
    crate::power::power_off(*POWER_OFF.lock(), 70)
}

/// How to power off, set at boot from the DTB and boot arguments.
pub static POWER_OFF: spin::Mutex<Option<crate::power::PowerOff>> = spin::Mutex::new(None);
