//! The boundary between the kernel's logic and the machine.
//!
//! The kernel reaches hardware only through [`Arch`]. On AArch64 the `hal`
//! crate implements it with real system registers, stage-2 tables in RAM and
//! a world switch; on the host, [`crate::fake::FakeArch`] implements it in
//! memory so the whole kernel is tested with `cargo test`.

use crate::addr::PhysAddr;
use crate::vcpu::Vcpu;

/// Why control came back from a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    /// A synchronous exception from the guest: decode `esr`.
    Sync,
    /// A physical interrupt arrived while the guest ran (the hypervisor timer).
    Irq,
}

/// Raw syndrome of a guest exit, as the hardware reported it. The kernel
/// decodes it ([`crate::trap::Exit::decode`]).
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

/// What the kernel needs from the machine.
pub trait Arch {
    /// Monotonic time since boot, in nanoseconds.
    fn now_ns(&self) -> u64;

    /// Write bytes to the console UART.
    fn console_write(&mut self, bytes: &[u8]);

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

    /// Save the EL1 and FP/SIMD state the CPU holds for `vcpu` before another
    /// vCPU runs on this CPU.
    fn save_vcpu_state(&mut self, vcpu: &mut Vcpu);

    /// Run `vcpu` under `stage2` until it traps or the clock reaches
    /// `deadline_ns` (the end of its time slice, in `now_ns` time).
    /// `switched` is true when another vCPU ran on this CPU since `vcpu` last
    /// did, so EL1 and FP state must be reloaded.
    fn run_vcpu(&mut self, vcpu: &mut Vcpu, stage2: Stage2Context, deadline_ns: u64, switched: bool)
        -> TrapInfo;
}
