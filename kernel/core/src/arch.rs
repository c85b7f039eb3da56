//! The boundary between the kernel's logic and the machine.
//!
//! The kernel reaches hardware only through two traits: [`Arch`], the
//! machine every CPU shares (RAM, stage-2 tables, console, clock), used only
//! under the kernel lock; and [`CpuArch`], one physical CPU (its world switch,
//! the EL1/FP state it holds lazily, its hypervisor timer), used by that CPU
//! alone, also while the kernel lock is free. On AArch64 the `hal` crate
//! implements them with real system registers, stage-2 tables in RAM and a
//! world switch; on the host, [`crate::fake::FakeArch`] and
//! [`crate::fake::FakeCpu`] implement them in memory so the whole kernel is
//! tested with `cargo test`.

use crate::memory::addr::PhysAddr;
use crate::running::vcpu::Vcpu;

/// Why control came back from a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    /// A synchronous exception from the guest: decode `esr`.
    Sync,
    /// A physical interrupt arrived while the guest ran (the hypervisor timer).
    Irq,
}

/// Raw syndrome of a guest exit, as the hardware reported it. The kernel
/// decodes it ([`crate::running::trap::Exit::decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapInfo {
    pub kind: TrapKind,
    /// ESR_EL2.
    pub esr: u64,
    /// FAR_EL2 (faulting virtual address, when valid).
    pub far: u64,
    /// HPFAR_EL2 (faulting IPA bits [47:12] in bits [43:4], when valid).
    pub hpfar: u64,
}

/// Stage-2 context the hardware needs to run a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Context {
    /// Physical address of the level-1 table.
    pub root: PhysAddr,
    /// 8-bit VMID.
    pub vmid: u8,
}

/// What the kernel needs from the machine as a whole: memory, tables, the
/// console, the clock. One value, shared by every CPU behind the kernel lock
/// ([`crate::running::smp::KernelLock`]).
pub trait Arch {
    /// Monotonic time since boot, in nanoseconds.
    fn now_ns(&self) -> u64;

    /// Write bytes to the console UART. The machine may buffer them and
    /// send them with the kernel lock released; it never drops them.
    fn console_write(&mut self, bytes: &[u8]);

    /// Send everything [`Arch::console_write`] buffered (the run's end).
    fn console_flush(&mut self) {}

    /// Bytes written but not sent yet.
    fn console_backlog(&self) -> usize {
        0
    }

    /// Read host-physical memory that the kernel owns (frames, the bundle).
    fn phys_read(&self, pa: PhysAddr, buf: &mut [u8]);

    /// Write host-physical memory that the kernel owns.
    fn phys_write(&mut self, pa: PhysAddr, data: &[u8]);

    /// Fill a frame with zeros.
    fn phys_zero(&mut self, pa: PhysAddr, len: usize);

    /// Copy between two host-physical ranges the kernel owns.
    fn phys_copy(&mut self, dst: PhysAddr, src: PhysAddr, len: usize);

    /// Read one 64-bit table entry.
    fn read_pte(&self, table: PhysAddr, index: usize) -> u64;

    /// Write one 64-bit table entry (with the barriers the walker needs).
    fn write_pte(&mut self, table: PhysAddr, index: usize, value: u64);

    /// Invalidate cached stage-2 translations of a VMID after a change that
    /// removed or reduced a mapping.
    fn flush_stage2(&mut self, vmid: u8);

    /// Make freshly written instructions visible to guest instruction fetch.
    fn sync_icache(&mut self, pa: PhysAddr, len: usize);

    /// Read what the console's receive side holds now, without waiting:
    /// returns how many bytes were put in `buf` (0 = nothing). The host's
    /// operator orders arrive here ([`crate::orders`]). A machine without
    /// console input keeps the default.
    fn console_read(&mut self, buf: &mut [u8]) -> usize {
        let _ = buf;
        0
    }

    /// Wake CPU `cpu` from [`CpuArch::idle`]: a partition homed on it became
    /// runnable while it waits (a message woke a `Dormant` partition, an
    /// unfence, a partition created by a split), or the run is ending. Called
    /// under the kernel lock, only for a CPU that is idling
    /// ([`crate::running::smp`]). A kick that arrives before the CPU reaches its wait
    /// must still end that wait (on AArch64 the SGI stays pending, so `wfi`
    /// returns at once). Returns whether the machine sent it; one that
    /// cannot (one CPU, no interrupt controller) keeps the default, and its
    /// idle CPUs wait out their tick.
    fn kick(&mut self, cpu: CpuId) -> bool {
        let _ = cpu;
        false
    }

    /// Send a witness or journal frame to the host. By default (and on a
    /// machine without a control channel) it is written as its console
    /// line, in one write; a machine with a control channel sends it there
    /// in binary (`rvm_abi::control`).
    fn send_frame(&mut self, frame: &rvm_abi::control::Outgoing<'_>) {
        self.console_frame(frame);
    }

    /// Whether the machine has a control channel to the host (frames that
    /// have no console line — tool requests, committed sets — reach the
    /// host only through it).
    fn has_control_channel(&self) -> bool {
        false
    }

    /// Bytes the host sent on the control channel (binary frames,
    /// `rvm_abi::control`: operators' orders), as many as are waiting and
    /// fit `buf`, without waiting; 0 on a machine without one.
    fn channel_read(&mut self, buf: &mut [u8]) -> usize {
        let _ = buf;
        0
    }

    /// Write `frame` as its console line, in one write (so no other output
    /// lands inside it).
    fn console_frame(&mut self, frame: &rvm_abi::control::Outgoing<'_>) {
        match frame {
            rvm_abi::control::Outgoing::Witness(f) => self.console_write(f.encode().as_bytes()),
            other => {
                let mut line = alloc::vec::Vec::new();
                other.write_text(&mut |b| line.extend_from_slice(b));
                // A frame without a line (a credit) writes nothing.
                if line.is_empty() {
                    return;
                }
                self.console_write(&line);
            }
        }
    }

    /// Whether [`Arch::kick`] reaches idle CPUs. Then a secondary CPU with
    /// nothing to do sleeps until a kick or the next deadline a wait has,
    /// not until its next tick: everything that makes work for it kicks it,
    /// and the boot CPU's tick keeps the housekeeping.
    fn kicks(&self) -> bool {
        false
    }
}

/// A physical CPU's index: 0 is the boot CPU, secondaries count up in the
/// order they came online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(pub u8);

impl CpuId {
    /// The boot CPU.
    pub const BOOT: CpuId = CpuId(0);

    /// As an index into per-CPU tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl core::fmt::Display for CpuId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What one physical CPU does for the kernel. Each CPU owns its own value;
/// [`CpuArch::run_vcpu`] and [`CpuArch::idle`] are called with the kernel
/// lock released, [`CpuArch::save_vcpu_state`] with it held.
pub trait CpuArch {
    /// Which CPU this is.
    fn cpu(&self) -> CpuId;

    /// Save the EL1 and FP/SIMD state this CPU holds for `vcpu` before another
    /// vCPU runs on it.
    fn save_vcpu_state(&mut self, vcpu: &mut Vcpu);

    /// Run `vcpu` under `stage2` until it traps or the clock reaches
    /// `deadline_ns` (the end of its time slice, in `now_ns` time).
    /// `switched` is true when another vCPU ran on this CPU since `vcpu` last
    /// did, so EL1 and FP state must be reloaded.
    fn run_vcpu(&mut self, vcpu: &mut Vcpu, stage2: Stage2Context, deadline_ns: u64, switched: bool)
        -> TrapInfo;

    /// Nothing to run here: wait until the clock reaches `until_ns` at the
    /// latest. A [kick](Arch::kick) ends the wait sooner (as may any other
    /// interrupt).
    fn idle(&mut self, until_ns: u64);

    /// The kernel lock is not this CPU's yet: `ahead` CPUs come before it
    /// (1 = it is next). Wait a little before looking again. A real CPU
    /// spins; one that may be a thread of a loaded host (QEMU) should sleep
    /// briefly when its turn is not near, so the holder can run.
    fn wait_for_lock(&mut self, ahead: u64) {
        let _ = ahead;
        core::hint::spin_loop();
    }
}
