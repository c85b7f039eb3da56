//! The real machine as the kernel's [`Arch`] (shared by every CPU, used
//! under the kernel lock), and each physical CPU as its [`CpuArch`] (used by
//! that CPU alone).

use core::sync::atomic::{AtomicBool, Ordering};

use rvm_kernel::memory::addr::{PhysAddr, PhysRange};
use rvm_kernel::arch::{Arch, CpuArch, CpuId, Stage2Context, TrapInfo, TrapKind};
use rvm_kernel::running::vcpu::Vcpu;

use aarch64_cpu::registers::{Readable, ESR_EL2, FAR_EL2, HPFAR_EL2};

use crate::gic::Gic;
use crate::uart::Pl011;
use crate::{cpu, timer, vectors};

/// How long console input may pause within a line before a read returns
/// what it has (operator orders arrive a FIFO at a time).
const INPUT_GAP_NS: u64 = 2_000_000;

/// The console, shared with the panic and exception paths. Lock order:
/// `CONSOLE` before [`OUTPUT`], never the other way round.
pub static CONSOLE: spin::Mutex<Option<Pl011>> = spin::Mutex::new(None);

/// Bytes the console output buffer holds.
pub const OUTPUT_BYTES: usize = 64 << 10;

/// Most bytes one guest entry moves from the buffer to the UART: a CPU that
/// enters a guest pays for a bounded share of what is waiting, the rest is
/// left to the next entry (mostly the producer's own: its vCPU goes on after
/// the call that wrote) or an idling CPU (which drains it all).
pub const DRAIN_PER_ENTRY: usize = 512;

/// Console output written under the kernel lock, waiting for the UART: the
/// kernel never waits on the UART while it holds its lock; each CPU drains
/// the buffer with the lock released ([`drain`]). Nothing is dropped: when
/// it is full, the writer drains it first (the kernel keeps every
/// partition's share of the output bounded with credits, so only a burst
/// of the hypervisor's own lines can fill it).
pub static OUTPUT: spin::Mutex<OutputBuffer> = spin::Mutex::new(OutputBuffer::new());

/// A byte ring.
pub struct OutputBuffer {
    bytes: [u8; OUTPUT_BYTES],
    head: usize,
    len: usize,
}

impl OutputBuffer {
    const fn new() -> Self {
        Self { bytes: [0; OUTPUT_BYTES], head: 0, len: 0 }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append all of `data`, or nothing if it does not fit.
    fn push(&mut self, data: &[u8]) -> bool {
        if OUTPUT_BYTES - self.len < data.len() {
            return false;
        }
        let tail = (self.head + self.len) % OUTPUT_BYTES;
        let first = data.len().min(OUTPUT_BYTES - tail);
        self.bytes[tail..tail + first].copy_from_slice(&data[..first]);
        self.bytes[..data.len() - first].copy_from_slice(&data[first..]);
        self.len += data.len();
        PENDING.store(true, Ordering::Relaxed);
        true
    }

    /// Copy up to `out.len()` of the oldest bytes, leaving them in place.
    fn peek(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        let first = n.min(OUTPUT_BYTES - self.head);
        out[..first].copy_from_slice(&self.bytes[self.head..self.head + first]);
        out[first..n].copy_from_slice(&self.bytes[..n - first]);
        n
    }

    /// Drop the `n` oldest bytes (at most what is held).
    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = (self.head + n) % OUTPUT_BYTES;
        self.len -= n;
        if self.len == 0 {
            PENDING.store(false, Ordering::Relaxed);
        }
    }
}

/// Whether [`OUTPUT`] may hold bytes: read without its lock on every guest
/// entry (a stale answer only moves a drain to the next entry).
static PENDING: AtomicBool = AtomicBool::new(false);

/// Move up to `max` buffered bytes to `uart` (the caller holds `CONSOLE`):
/// as many as its FIFO takes now, or, with `wait`, all of them.
fn drain_into(uart: &mut Pl011, max: usize, wait: bool) {
    let mut chunk = [0u8; 128];
    let mut moved = 0;
    while moved < max {
        let mut out = OUTPUT.lock();
        let n = out.peek(&mut chunk[..(max - moved).min(128)]);
        if n == 0 {
            break;
        }
        let sent = if wait {
            uart.write_bytes(&chunk[..n]);
            n
        } else {
            uart.try_write_bytes(&chunk[..n])
        };
        out.consume(sent);
        moved += sent;
        if sent < n {
            break;
        }
    }
}

/// Move up to `max` buffered bytes to the UART, unless another CPU is at it
/// (then it does the work and this one goes on). Call with the kernel lock
/// released.
#[inline]
pub fn drain(max: usize) {
    if !PENDING.load(Ordering::Relaxed) {
        return;
    }
    if let Some(mut guard) = CONSOLE.try_lock() {
        if let Some(uart) = guard.as_mut() {
            drain_into(uart, max, false);
        }
    }
}

/// Write everything buffered, then return (the run's end, a fatal error).
pub fn flush() {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        drain_into(uart, usize::MAX, true);
    }
}

/// Write to the console if there is one: into the UART's FIFO while it has
/// room and nothing is buffered, else into the output buffer, or, when that
/// is full, to the UART after what the buffer holds. `CONSOLE` is held
/// throughout, so one write stays one run of bytes on the line: no other
/// write or drain can come between what the FIFO took and the rest (a
/// guest's line never ends up split around another line). Holding it never
/// means waiting on the UART, except when the buffer is full: drains only
/// move what the FIFO takes at once.
pub fn console_write(bytes: &[u8]) {
    let mut guard = CONSOLE.lock();
    let Some(uart) = guard.as_mut() else { return };
    let mut bytes = bytes;
    if !PENDING.load(Ordering::Relaxed) {
        bytes = &bytes[uart.try_write_bytes(bytes)..];
        if bytes.is_empty() {
            return;
        }
    }
    if OUTPUT.lock().push(bytes) {
        return;
    }
    drain_into(uart, usize::MAX, true);
    uart.write_bytes(bytes);
}

/// Make the console available for a last message from a CPU that may have
/// stopped in the middle of anything (a panic, an exception at EL2): wait up
/// to 100 ms for whoever holds it to finish (every line goes out in one
/// write, so it finishes its line and no guest text is left to start the
/// next one), then take it anyway rather than deadlock (the holder may be
/// this very CPU).
pub fn reclaim_console() {
    let t0 = timer::counter();
    let limit = timer::frequency() / 10;
    while CONSOLE.is_locked() {
        if timer::counter().wrapping_sub(t0) > limit {
            // SAFETY: the machine is being stopped; after 100 ms the holder
            // is not going to release the console (it is this CPU, or
            // stuck), and a UART written by two CPUs at once only garbles
            // text.
            unsafe { CONSOLE.force_unlock() };
            return;
        }
        core::hint::spin_loop();
    }
}

/// Formatted console output for the boot path: `hal::print!(...)`, after
/// whatever is buffered.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        $crate::machine::flush();
        if let Some(uart) = $crate::machine::CONSOLE.lock().as_mut() {
            let _ = write!(uart, $($arg)*);
        }
    }};
}

/// The machine RVM runs on, as every CPU shares it: RAM, the console, the
/// counter. Its stage-2 TLB maintenance is broadcast to every CPU in the
/// inner-shareable domain (`tlbi vmalls12e1is`, [`cpu::flush_vmid`]).
pub struct Machine {
    /// RAM the kernel may read and write through `phys_*` (checked on use).
    ram: heapless::Vec<PhysRange, 4>,
    clock: timer::Clock,
    /// Per CPU index (`CpuId`): its affinity, the address of a kick. Empty
    /// without a GICv3 (a kick is then a no-op and idle CPUs wait out
    /// their tick).
    affinities: heapless::Vec<u64, { crate::machine::MAX_KICK_CPUS }>,
}

/// Most CPUs a kick can address.
pub const MAX_KICK_CPUS: usize = 8;

impl Machine {
    pub fn new(ram: heapless::Vec<PhysRange, 4>) -> Self {
        Self { ram, clock: timer::Clock::new(), affinities: heapless::Vec::new() }
    }

    /// Make [`Arch::kick`] reach CPU `n` at `affinities[n]` (MPIDR Aff
    /// fields) with [`crate::gic::KICK_SGI`]. Every CPU must have enabled
    /// that SGI ([`Gic::enable_sgi`]).
    pub fn with_kicks(mut self, affinities: &[u64]) -> Self {
        self.affinities.clear();
        for &a in affinities.iter().take(MAX_KICK_CPUS) {
            let _ = self.affinities.push(a);
        }
        self
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

}

impl Arch for Machine {
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn console_write(&mut self, bytes: &[u8]) {
        console_write(bytes);
    }

    fn console_flush(&mut self) {
        // The end of a run or a fatal error: give the host up to a second
        // to take the last frames.
        let left = crate::control::drain(1_000_000_000);
        if left > 0 {
            crate::print!("rvm: control channel: {left} bytes of frames not taken by the host\n");
        }
        flush();
    }

    fn channel_read(&mut self, buf: &mut [u8]) -> usize {
        crate::control::read(buf)
    }

    fn has_control_channel(&self) -> bool {
        crate::control::present()
    }

    fn send_frame(&mut self, frame: &rvm_abi::control::Outgoing<'_>) {
        if !crate::control::send(frame) {
            self.console_frame(frame);
        }
    }

    fn console_backlog(&self) -> usize {
        OUTPUT.lock().len()
    }

    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        let mut guard = CONSOLE.lock();
        let Some(uart) = guard.as_mut() else { return 0 };
        let mut n = 0;
        let mut last_byte_ns = None;
        while n < buf.len() {
            match uart.read_byte() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                    last_byte_ns = Some(self.clock.now_ns());
                    if b == b'\n' {
                        break;
                    }
                }
                // A line is arriving: its next bytes are on their way (the
                // host feeds the FIFO between reads), so wait a moment for
                // them rather than take one FIFO's worth per poll.
                None => match last_byte_ns {
                    Some(t) if self.clock.now_ns().saturating_sub(t) < INPUT_GAP_NS => core::hint::spin_loop(),
                    _ => break,
                },
            }
        }
        n
    }

    fn phys_read(&self, pa: PhysAddr, buf: &mut [u8]) {
        let src = self.check(pa, buf.len());
        // SAFETY: `check` proved the range is RAM, identity-mapped at EL2;
        // the kernel owns it (frames, bundle) and nothing else writes it now.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) }
    }

    fn phys_write(&mut self, pa: PhysAddr, data: &[u8]) {
        let dst = self.check(pa, data.len());
        // SAFETY: `check` proved the range is RAM, identity-mapped at EL2;
        // the kernel owns it and nothing else accesses it now. `data` is a
        // Rust slice elsewhere in RAM that the kernel never hands out as a
        // frame, so the two do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) }
    }

    fn phys_zero(&mut self, pa: PhysAddr, len: usize) {
        let dst = self.check(pa, len);
        // SAFETY: `check` proved the range is RAM, identity-mapped at EL2,
        // that the kernel owns and nothing else accesses now; no Rust
        // reference points into it.
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
        // SAFETY: `check` proved this aligned u64 lies inside a table frame
        // the kernel owns (no Rust reference points into it); the barrier
        // below orders the store before any table walk.
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

    fn kick(&mut self, cpu: CpuId) -> bool {
        let Some(&affinity) = self.affinities.get(cpu.index()) else { return false };
        Gic::send_sgi(crate::gic::KICK_SGI, affinity);
        true
    }

    fn kicks(&self) -> bool {
        !self.affinities.is_empty()
    }
}

/// One physical CPU: its world switch, the EL1/FP state it holds, and its
/// EL2 physical timer (CNTHP), which ends a guest's slice.
pub struct Cpu {
    id: CpuId,
    /// The GIC delivers this CPU's timer interrupt (otherwise guests are not
    /// preempted and idling spins).
    has_gic: bool,
    timer_intid: u32,
    clock: timer::Clock,
    /// The deadline the hypervisor timer is armed for (0 = disarmed).
    armed_ns: u64,
    /// Interrupts seen that were neither the hypervisor timer nor a kick.
    pub stray_irqs: u64,
    /// Kicks taken (another CPU ended this one's idle wait).
    pub kicks: u64,
    /// Failed tries for the kernel lock.
    pub lock_waits: u64,
}

/// Most interrupts one exit acknowledges (the timer, a kick, a stray one).
const MAX_IRQS_PER_TAKE: usize = 4;

/// Looks at the kernel lock between two naps while this CPU is next in line
/// (a power of two).
const LOCK_SPINS_PER_NAP: u64 = 64;

/// How long a CPU naps (timer armed, `wfi`) while it waits for the kernel
/// lock: always when other CPUs are before it, now and then when it is next.
/// Under QEMU each CPU is a host thread and `wfe` does not sleep, so a
/// waiting CPU that only spun would take host time from the holder.
const LOCK_NAP_NS: u64 = 10_000;

impl Cpu {
    /// The calling CPU as `id`. Its vectors, EL2 configuration and GIC
    /// redistributor (with `timer_intid` enabled) must be set up already.
    pub fn new(id: CpuId, has_gic: bool, timer_intid: u32) -> Self {
        Self { id, has_gic, timer_intid, clock: timer::Clock::new(), armed_ns: 0, stray_irqs: 0, kicks: 0, lock_waits: 0 }
    }

    /// Disarm the timer, then acknowledge and end every interrupt pending
    /// (the timer's, a kick, both), so none is left to cut the next guest
    /// entry or wait short.
    fn take_irq(&mut self) {
        timer::disarm_hyp_timer();
        self.armed_ns = 0;
        for _ in 0..MAX_IRQS_PER_TAKE {
            let intid = Gic::ack();
            if intid == crate::gic::SPURIOUS {
                break;
            }
            Gic::eoi(intid);
            if intid == crate::gic::KICK_SGI {
                self.kicks += 1;
            } else if intid != self.timer_intid {
                self.stray_irqs += 1;
            }
        }
    }
}

impl CpuArch for Cpu {
    fn cpu(&self) -> CpuId {
        self.id
    }

    fn save_vcpu_state(&mut self, vcpu: &mut Vcpu) {
        cpu::save_el1(&mut vcpu.el1);
        cpu::save_fp(&mut vcpu.fp);
    }

    fn run_vcpu(&mut self, vcpu: &mut Vcpu, s2: Stage2Context, deadline_ns: u64, switched: bool) -> TrapInfo {
        // The kernel lock is free here: a bounded share of the console
        // output goes out now.
        drain(DRAIN_PER_ENTRY);
        if switched {
            cpu::set_stage2(s2.root.raw(), s2.vmid);
            cpu::load_el1(&vcpu.el1);
            cpu::restore_fp(&vcpu.fp);
        }
        if self.has_gic && self.armed_ns != deadline_ns {
            timer::arm_hyp_timer_at(self.clock.ns_to_ticks(deadline_ns));
            crate::sysreg::isb();
            self.armed_ns = deadline_ns;
        }
        let kind = vectors::enter_guest(&mut vcpu.regs);
        match kind {
            vectors::EXIT_IRQ => {
                self.take_irq();
                TrapInfo { kind: TrapKind::Irq, esr: 0, far: 0, hpfar: 0 }
            }
            vectors::EXIT_SYNC => TrapInfo {
                kind: TrapKind::Sync,
                esr: ESR_EL2.get(),
                far: FAR_EL2.get(),
                hpfar: HPFAR_EL2.get(),
            },
            // SError or AArch32: report as an unknown exception of the guest.
            other => TrapInfo { kind: TrapKind::Sync, esr: 0x2f << 26 | other, far: 0, hpfar: 0 },
        }
    }

    fn idle(&mut self, until_ns: u64) {
        drain(usize::MAX);
        crate::control::flush();
        if !self.has_gic {
            // No interrupt to wake on: wait by the counter.
            while self.clock.now_ns() < until_ns {
                core::hint::spin_loop();
            }
            return;
        }
        if self.clock.now_ns() >= until_ns {
            return;
        }
        timer::arm_hyp_timer_at(self.clock.ns_to_ticks(until_ns));
        crate::sysreg::isb();
        self.armed_ns = until_ns;
        // IRQs are masked at EL2, so the timer's interrupt wakes the CPU
        // from `wfi` without being taken, and is acknowledged below.
        aarch64_cpu::asm::wfi();
        self.take_irq();
    }

    fn wait_for_lock(&mut self, ahead: u64) {
        self.lock_waits = self.lock_waits.wrapping_add(1);
        if ahead > 1 || self.lock_waits & (LOCK_SPINS_PER_NAP - 1) == 0 {
            let until = self.clock.now_ns().saturating_add(LOCK_NAP_NS);
            self.idle(until);
        } else {
            core::hint::spin_loop();
        }
    }
}

/// Called by the vectors on an exception taken at EL2 itself: a hypervisor
/// bug. Print what is known and stop.
#[no_mangle]
extern "C" fn rvm_hyp_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    reclaim_console();
    if kind == vectors::KIND_STACK_OVERFLOW {
        crate::print!("\nrvm: FATAL: EL2 stack overflow (guard page hit): esr {esr:#x} elr {elr:#x} far {far:#x}\n");
        crate::power::power_off(*POWER_OFF.lock(), 70)
    }
    crate::print!("\nrvm: FATAL: EL2 exception (vector {kind}): esr {esr:#x} elr {elr:#x} far {far:#x}\n");
    crate::power::power_off(*POWER_OFF.lock(), 70)
}

/// How to power off, set at boot from the DTB and boot arguments.
pub static POWER_OFF: spin::Mutex<Option<crate::power::PowerOff>> = spin::Mutex::new(None);
