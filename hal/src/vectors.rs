//! The EL2 exception vectors and the world switch.
//!
//! `rvm_enter_guest(regs)` saves the host's callee-saved registers on the
//! EL2 stack, loads the guest's x0–x30, ELR and SPSR from `regs` and `eret`s.
//! A guest exception lands in the lower-EL vectors, which store the guest's
//! registers back into the same `regs` (found through TPIDR_EL2) and return
//! from `rvm_enter_guest` with the exit kind. EL1 system registers and
//! FP/SIMD are not touched on this path: they are switched only when another
//! partition runs (`cpu`), which keeps a hypercall round trip short.
//!
//! A synchronous exception taken at EL2 itself is a hypervisor bug and
//! stops the machine, with two exceptions: a stack pointer in a guard page
//! (a stack overflow) is reported as such, from the top of the CPU's own
//! stack slot rather than by faulting again; and a probe that expects a
//! fault ([`probe_write_u32`], [`probe_read_u64`], [`probe_exec`], used by
//! the boot self-test) gets it recorded and resumes.

use aarch64_cpu::registers::{Readable, Writeable, TPIDR_EL2, VBAR_EL2};
use rvm_kernel::running::vcpu::GuestRegs;

/// Exit kinds `rvm_enter_guest` returns.
pub const EXIT_SYNC: u64 = 0;
pub const EXIT_IRQ: u64 = 1;
pub const EXIT_SERROR: u64 = 2;
pub const EXIT_AARCH32: u64 = 3;

/// Per-CPU data the vectors reach through TPIDR_EL2.
#[repr(C)]
pub struct PerCpu {
    /// Reserved for the host stack pointer.
    pub scratch: u64,
    /// The guest register file being run.
    pub guest: *mut GuestRegs,
    /// Non-zero while a probe expects a fault at EL2; the exception vector
    /// clears it when the fault is taken.
    pub expect_fault: u64,
    /// ESR_EL2 and FAR_EL2 of the expected fault.
    pub fault_esr: u64,
    pub fault_far: u64,
}

impl PerCpu {
    /// A CPU's block before it runs anything.
    pub const EMPTY: PerCpu =
        PerCpu { scratch: 0, guest: core::ptr::null_mut(), expect_fault: 0, fault_esr: 0, fault_far: 0 };
}

const _: () = {
    assert!(core::mem::offset_of!(GuestRegs, x) == 0);
    assert!(core::mem::offset_of!(GuestRegs, pc) == 248);
    assert!(core::mem::offset_of!(GuestRegs, pstate) == 256);
    assert!(core::mem::offset_of!(PerCpu, guest) == 8);
    assert!(core::mem::offset_of!(PerCpu, expect_fault) == 16);
    assert!(core::mem::offset_of!(PerCpu, fault_esr) == 24);
    assert!(core::mem::offset_of!(PerCpu, fault_far) == 32);
};

/// The `kind` [`rvm_hyp_exception`](crate::machine) gets for a stack
/// overflow (the vector numbers are 0–7).
pub const KIND_STACK_OVERFLOW: u64 = 8;

core::arch::global_asm!(
    r#"
.macro GUEST_EXIT kind
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #8]
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #248]
    mov     x0, #\kind
    b       rvm_guest_exit
.endm

.macro HYP_FAULT kind
    mov     x0, #\kind
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    bl      rvm_hyp_exception
    b       .
.endm

.section .text.vectors, "ax"
.balign 2048
.global rvm_el2_vectors
rvm_el2_vectors:
    // Current EL with SP_EL0: never used.
    .balign 0x80
    HYP_FAULT 0
    .balign 0x80
    HYP_FAULT 1
    .balign 0x80
    HYP_FAULT 2
    .balign 0x80
    HYP_FAULT 3
    // Current EL with SP_ELx: a hypervisor bug, a stack overflow, or a
    // fault a probe expects.
    .balign 0x80
    b       rvm_el2_sync_self
    .balign 0x80
    HYP_FAULT 5
    .balign 0x80
    HYP_FAULT 6
    .balign 0x80
    HYP_FAULT 7
    // Lower EL, AArch64: guest exits.
    .balign 0x80
    GUEST_EXIT 0
    .balign 0x80
    GUEST_EXIT 1
    .balign 0x80
    GUEST_EXIT 1
    .balign 0x80
    GUEST_EXIT 2
    // Lower EL, AArch32: not supported; the partition is faulted.
    .balign 0x80
    GUEST_EXIT 3
    .balign 0x80
    GUEST_EXIT 3
    .balign 0x80
    GUEST_EXIT 3
    .balign 0x80
    GUEST_EXIT 3

.section .text, "ax"
// A synchronous exception at EL2 itself. First, without touching memory
// (the stack pointer may be in a guard page): swap x0 with sp's value
// through sp itself and check whether the 32 bytes pushed below would land
// in the lowest page of a 128 KiB stack slot (linker.ld: slots are aligned
// to their size and that page is the unmapped guard).
rvm_el2_sync_self:
    add     sp, sp, x0              // sp = sp + x0
    sub     x0, sp, x0              // x0 = old sp
    sub     x0, x0, #32
    tst     x0, #0x1f000            // page index within the slot
    b.eq    9f
    add     x0, x0, #32
    sub     x0, sp, x0              // x0 = old x0
    sub     sp, sp, x0              // sp = old sp
    stp     x0, x1, [sp, #-32]!
    stp     x2, x30, [sp, #16]
    mrs     x0, tpidr_el2
    ldr     x1, [x0, #16]           // PerCpu.expect_fault
    cbz     x1, 8f
    str     xzr, [x0, #16]
    mrs     x1, esr_el2
    str     x1, [x0, #24]
    mrs     x2, far_el2
    str     x2, [x0, #32]
    lsr     x1, x1, #26
    cmp     x1, #0x21               // instruction abort: back to the caller
    b.ne    1f
    ldr     x1, [sp, #24]           // its x30 (the probe branched with blr)
    b       2f
1:  mrs     x1, elr_el2             // data abort: skip the access
    add     x1, x1, #4
2:  msr     elr_el2, x1
    ldp     x2, x30, [sp, #16]
    ldp     x0, x1, [sp], #32
    eret
8:  ldp     x2, x30, [sp, #16]
    ldp     x0, x1, [sp], #32
    HYP_FAULT 4
9:  // Stack overflow: report it from the top of this CPU's own slot.
    and     x0, x0, #0xfffffffffffe0000
    add     x0, x0, #0x20000
    mov     sp, x0
    HYP_FAULT 8

.global rvm_enter_guest
rvm_enter_guest:
    sub     sp, sp, #96
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    mrs     x1, tpidr_el2
    str     x0, [x1, #8]
    ldp     x2, x3, [x0, #248]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret

rvm_guest_exit:
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    add     sp, sp, #96
    ret

.arch_extension fp
.arch_extension simd
.global rvm_fp_save
rvm_fp_save:
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpcr
    mrs     x2, fpsr
    add     x0, x0, #512
    stp     x1, x2, [x0]
    ret

.global rvm_fp_restore
rvm_fp_restore:
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    add     x0, x0, #512
    ldp     x1, x2, [x0]
    msr     fpcr, x1
    msr     fpsr, x2
    ret
"#
);

extern "C" {
    static rvm_el2_vectors: u8;
    fn rvm_enter_guest(regs: *mut GuestRegs) -> u64;
}

/// Install the vector table and this CPU's per-CPU block.
pub fn install(percpu: &'static mut PerCpu) {
    // SAFETY: taking the address of a linker-placed symbol reads nothing.
    let vbar = core::ptr::addr_of!(rvm_el2_vectors) as u64;
    VBAR_EL2.set(vbar);
    TPIDR_EL2.set(percpu as *mut PerCpu as u64);
    crate::sysreg::isb();
}

/// What an expected fault left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub esr: u64,
    pub far: u64,
}

/// Run `access` (one instruction that may fault) with this CPU's
/// expect-fault flag set; the fault it took, if any.
fn expecting(access: impl FnOnce()) -> Option<Fault> {
    let percpu = TPIDR_EL2.get() as *mut PerCpu;
    assert!(!percpu.is_null(), "vectors not installed");
    // SAFETY: TPIDR_EL2 points at this CPU's own `PerCpu` (`install`); only
    // this CPU and its exception vector touch it, and the vector runs only
    // inside `access` (synchronously, on this CPU). Volatile accesses keep
    // the flag's writes and reads on either side of the access.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*percpu).expect_fault), 1);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        access();
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        if core::ptr::read_volatile(core::ptr::addr_of!((*percpu).expect_fault)) != 0 {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*percpu).expect_fault), 0);
            return None;
        }
        Some(Fault {
            esr: core::ptr::read_volatile(core::ptr::addr_of!((*percpu).fault_esr)),
            far: core::ptr::read_volatile(core::ptr::addr_of!((*percpu).fault_far)),
        })
    }
}

/// Store `value` at `addr` from EL2, expecting a fault (the self-test of
/// the EL2 map). If the store goes through, it wrote `value`: pass what is
/// there already.
pub fn probe_write_u32(addr: usize, value: u32) -> Option<Fault> {
    expecting(|| {
        // SAFETY: one store of 4 bytes the caller chose (normally to memory
        // the map forbids writing, so it faults and is skipped; if it does
        // not fault it writes back the value that is there).
        unsafe { core::arch::asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)) }
    })
}

/// Load 8 bytes at `addr` from EL2, expecting a fault.
pub fn probe_read_u64(addr: usize) -> Option<Fault> {
    expecting(|| {
        // SAFETY: one load into a scratch register; faults are expected and
        // skipped.
        unsafe { core::arch::asm!("ldr {t}, [{a}]", a = in(reg) addr, t = out(reg) _, options(nostack)) }
    })
}

/// Branch to `addr` at EL2, expecting an instruction abort (execution of
/// memory the map marks execute-never). The target should hold `ret`, so
/// a branch that is not stopped comes straight back.
pub fn probe_exec(addr: usize) -> Option<Fault> {
    expecting(|| {
        // SAFETY: the target is a `ret` (or faults before executing): either
        // way control returns here through x30 with the C ABI's clobbers.
        unsafe { core::arch::asm!("blr {a}", a = in(reg) addr, clobber_abi("C")) }
    })
}

/// Run the guest whose registers are `regs` until it exits; returns the
/// exit kind (`EXIT_*`). Stage 2, EL1 state and the timer must be set up.
pub fn enter_guest(regs: &mut GuestRegs) -> u64 {
    // SAFETY: `rvm_enter_guest` saves and restores every callee-saved
    // register, returns on the same stack, and writes only `*regs` (through
    // TPIDR_EL2's per-CPU block, which `install` set up and which points at
    // `regs` for exactly this call). The guest runs under stage 2 and cannot
    // reach EL2 memory.
    unsafe { rvm_enter_guest(regs) }
}
