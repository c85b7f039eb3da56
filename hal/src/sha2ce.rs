//! SHA-256 compression with the Armv8 SHA-2 instructions.
//!
//! EL2 is built soft-float and never keeps values in FP/SIMD registers, but
//! those registers hold the current guest's state (it is switched lazily), so
//! the routine saves every vector register it uses on the EL2 stack and
//! restores it before returning. Installed into the witness crate at boot
//! only if the CPU has the instructions and a self-test against the portable
//! code passes.

core::arch::global_asm!(
    r#"
.arch_extension fp
.arch_extension simd
.arch_extension sha2
.section .text, "ax"
.global rvm_sha256_blocks
// x0 = state (8 x u32), x1 = blocks, x2 = number of 64-byte blocks (> 0)
rvm_sha256_blocks:
    sub     sp, sp, #192
    stp     q0, q1, [sp, #0]
    stp     q2, q3, [sp, #32]
    stp     q4, q5, [sp, #64]
    stp     q6, q7, [sp, #96]
    stp     q16, q17, [sp, #128]
    add     x4, sp, #160
    st1     {{v18.16b}}, [x4]
    ld1     {{v0.4s, v1.4s}}, [x0]
1:
    adr     x3, rvm_sha256_k
    ld1     {{v4.16b, v5.16b, v6.16b, v7.16b}}, [x1], #64
    rev32   v4.16b, v4.16b
    rev32   v5.16b, v5.16b
    rev32   v6.16b, v6.16b
    rev32   v7.16b, v7.16b
    mov     v2.16b, v0.16b
    mov     v3.16b, v1.16b
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v4.4s
    sha256su0 v4.4s, v5.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v4.4s, v6.4s, v7.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v5.4s
    sha256su0 v5.4s, v6.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v5.4s, v7.4s, v4.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v6.4s
    sha256su0 v6.4s, v7.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v6.4s, v4.4s, v5.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v7.4s
    sha256su0 v7.4s, v4.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v7.4s, v5.4s, v6.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v4.4s
    sha256su0 v4.4s, v5.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v4.4s, v6.4s, v7.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v5.4s
    sha256su0 v5.4s, v6.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v5.4s, v7.4s, v4.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v6.4s
    sha256su0 v6.4s, v7.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v6.4s, v4.4s, v5.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v7.4s
    sha256su0 v7.4s, v4.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v7.4s, v5.4s, v6.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v4.4s
    sha256su0 v4.4s, v5.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v4.4s, v6.4s, v7.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v5.4s
    sha256su0 v5.4s, v6.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v5.4s, v7.4s, v4.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v6.4s
    sha256su0 v6.4s, v7.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v6.4s, v4.4s, v5.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v7.4s
    sha256su0 v7.4s, v4.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    sha256su1 v7.4s, v5.4s, v6.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v4.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v5.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v6.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    ld1     {{v16.4s}}, [x3], #16
    add     v16.4s, v16.4s, v7.4s
    mov     v17.16b, v0.16b
    sha256h  q0, q1, v16.4s
    sha256h2 q1, q17, v16.4s
    add     v0.4s, v0.4s, v2.4s
    add     v1.4s, v1.4s, v3.4s
    subs    x2, x2, #1
    b.ne    1b
    st1     {{v0.4s, v1.4s}}, [x0]
    ldp     q0, q1, [sp, #0]
    ldp     q2, q3, [sp, #32]
    ldp     q4, q5, [sp, #64]
    ldp     q6, q7, [sp, #96]
    ldp     q16, q17, [sp, #128]
    add     x4, sp, #160
    ld1     {{v18.16b}}, [x4]
    add     sp, sp, #192
    ret

.balign 16
rvm_sha256_k:
    .word   0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5
    .word   0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5
    .word   0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3
    .word   0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174
    .word   0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc
    .word   0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da
    .word   0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7
    .word   0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967
    .word   0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13
    .word   0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85
    .word   0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3
    .word   0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070
    .word   0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5
    .word   0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3
    .word   0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208
    .word   0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
"#
);

extern "C" {
    fn rvm_sha256_blocks(state: *mut u32, blocks: *const u8, count: usize);
}

tock_registers::register_bitfields! {u64,
    /// The ID_AA64ISAR0_EL1 field `aarch64-cpu` does not name.
    ISAR0 [
        /// SHA-2 instructions: 1 = SHA-256, 2 = SHA-256 and SHA-512.
        SHA2 OFFSET(12) NUMBITS(4) []
    ]
}

/// Whether the CPU implements the SHA-256 instructions (ID_AA64ISAR0_EL1.SHA2).
pub fn available() -> bool {
    use aarch64_cpu::registers::{Readable, ID_AA64ISAR0_EL1};
    let isar0 = tock_registers::LocalRegisterCopy::<u64, ISAR0::Register>::new(ID_AA64ISAR0_EL1.get());
    isar0.read(ISAR0::SHA2) >= 1
}

/// Fold `blocks` into `state`. Call only when [`available`].
pub fn compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    if blocks.is_empty() {
        return;
    }
    // SAFETY: `rvm_sha256_blocks` reads `blocks.len()` whole 64-byte blocks
    // from `blocks`, reads and writes the eight words of `state`, uses only
    // x0-x4 and the vector registers it saves and restores on its own stack
    // frame, and needs the SHA-2 instructions, which the caller checked.
    unsafe { rvm_sha256_blocks(state.as_mut_ptr(), blocks.as_ptr().cast(), blocks.len()) }
}
