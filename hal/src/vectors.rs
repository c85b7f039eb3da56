//! The EL2 exception vectors and the world switch.
//!
//! `rvm_enter_guest(regs)` saves the host's callee-saved registers on the
//! EL2 stack, loads the guest's x0–x30, ELR and SPSR from `regs` and `eret`s.
//! A guest exception lands in the lower-EL vectors, which store the guest's
//! registers back into the same `regs` (found through TPIDR_EL2) and return
//! from `rvm_enter_guest` with the exit kind. EL1 system registers and
//! FP/SIMD are not touched on this path: they are switched only when another
//! partition runs (`cpu`), which keeps a hypercall round trip short.

use rvm_kernel::vcpu::GuestRegs;

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
}

const _: () = {
    assert!(core::mem::offset_of!(GuestRegs, x) == 0);
    assert!(core::mem::offset_of!(GuestRegs, pc) == 248);
    assert!(core::mem::offset_of!(GuestRegs, pstate) == 256);
    assert!(core::mem::offset_of!(PerCpu, guest) == 8);
};

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
    // Current EL with SP_ELx: a hypervisor bug.
    .balign 0x80
    HYP_FAULT 4
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
    crate::sysreg_write!("vbar_el2", vbar);
    crate::sysreg_write!("tpidr_el2", percpu as *mut PerCpu as u64);
    crate::sysreg::isb();
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
