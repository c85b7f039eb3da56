//! A virtual CPU's architectural state.
//!
//! The layouts are `repr(C)` because the hal's world switch saves and restores
//! them by offset; the offsets are checked by const assertions there.

/// General-purpose registers, PC and PSTATE of a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegs {
    /// x0–x30.
    pub x: [u64; 31],
    /// Where the guest resumes (ELR_EL2).
    pub pc: u64,
    /// Its PSTATE (SPSR_EL2).
    pub pstate: u64,
}

/// EL1 system registers a partition owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct El1Regs {
    pub sctlr: u64,
    pub cpacr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub tcr: u64,
    pub mair: u64,
    pub amair: u64,
    pub vbar: u64,
    pub contextidr: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub tpidr_el1: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub esr_el1: u64,
    pub far_el1: u64,
    pub afsr0: u64,
    pub afsr1: u64,
    pub par: u64,
    pub csselr: u64,
    pub cntkctl: u64,
    pub cntv_ctl: u64,
    pub cntv_cval: u64,
}

/// FP/SIMD state: v0–v31, FPCR, FPSR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct FpRegs {
    pub v: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
}

/// PSTATE for EL1h with D, A, I, F masked.
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;
/// SCTLR_EL1 RES1 bits with the MMU and caches off (HCR_EL2.DC gives the
/// guest normal cacheable memory instead).
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// CPACR_EL1 with FP/SIMD enabled at EL1 and EL0.
pub const CPACR_EL1_FP_ON: u64 = 3 << 20;

/// One virtual CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Vcpu {
    pub regs: GuestRegs,
    pub el1: El1Regs,
    pub fp: FpRegs,
}

impl Vcpu {
    /// A vCPU that starts at `entry` in EL1h with `x0 = arg`.
    pub fn new(entry: u64, arg: u64) -> Self {
        let mut x = [0u64; 31];
        x[0] = arg;
        Self {
            regs: GuestRegs { x, pc: entry, pstate: PSTATE_EL1H_MASKED },
            el1: El1Regs {
                sctlr: SCTLR_EL1_RESET,
                cpacr: CPACR_EL1_FP_ON,
                ..El1Regs::default()
            },
            fp: FpRegs::default(),
        }
    }

    /// Argument register `n` (x1..x6 for hypercalls).
    pub fn arg(&self, n: usize) -> u64 {
        self.regs.x[n]
    }

    /// Set the hypercall return registers: x0 = status, x1.. = results.
    pub fn set_return(&mut self, status: i64, results: &[u64]) {
        self.regs.x[0] = status as u64;
        for (i, r) in results.iter().enumerate().take(3) {
            self.regs.x[1 + i] = *r;
        }
    }

    /// Step over the trapping instruction (a 4-byte `smc`, `wfi`, or a
    /// data access the hypervisor emulated). HVC returns past itself already.
    pub fn skip_instruction(&mut self) {
        self.regs.pc = self.regs.pc.wrapping_add(4);
    }
}
