//! The first instructions: the Linux arm64 Image header, the boot CPU's
//! stack, .bss, and an early identity map so Rust runs on Normal memory
//! (with the MMU off every access is Device memory and unaligned accesses,
//! which Rust and its libraries make, would fault).
//!
//! The early map uses 1 GiB blocks: 0–1 GiB Device (UART, GIC, ...), 1–4 GiB
//! Normal write-back (RAM on the QEMU virt machine and on boards whose DRAM
//! starts at 1 GiB). It is built for whatever EL the CPU was entered at, so
//! the wrong-EL message can be printed before powering off.
//!
//! This map lets everything be written and executed; it lives only until
//! `wx::install` has built the real one (W^X, 4 KiB pages for the image,
//! guard pages under the stacks) and switched every CPU to it.

core::arch::global_asm!(
    r#"
// Turn on the EL2 MMU with the early tables: x1 = table, x2 = MAIR value.
.macro EL2_MMU_ON
    msr     mair_el2, x2
    ldr     x3, =0x80823520         // T0SZ 32, WB walks, inner shareable, 40-bit PA
    msr     tcr_el2, x3
    msr     ttbr0_el2, x1
    isb
    tlbi    alle2
    dsb     sy
    isb
    mrs     x3, sctlr_el2
    mov     x4, #0x1005             // M, C, I
    orr     x3, x3, x4
    bic     x3, x3, #0x2            // no alignment checks
    bic     x3, x3, #0x80000        // no WXN
    msr     sctlr_el2, x3
    isb
.endm

.section .text.head, "ax"
.global _head
_head:
    b       rvm_primary_entry       // code0
    .long   0                       // code1
    .quad   0x200000                // text_offset: RAM base + 2 MiB
    .quad   __image_size            // image_size
    .quad   0x2                     // flags: little-endian, 4 KiB pages
    .quad   0
    .quad   0
    .quad   0
    .ascii  "ARM\x64"               // magic
    .long   0

.section .text.boot, "ax"
rvm_primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // DTB (Linux boot protocol)
    mrs     x20, CurrentEL
    ubfx    x20, x20, #2, #2
    ldr     x1, =__stacks_start
    ldr     x2, =__stack_slot
    add     x1, x1, x2              // top of slot 0 (linker.ld)
    mov     sp, x1
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  ldr     x1, =rvm_boot_l1
    mov     x2, #0xff00             // MAIR: attr0 Device-nGnRnE, attr1 Normal WB
    cmp     x20, #2
    b.eq    .Lel2
    cmp     x20, #1
    b.eq    .Lel1
    msr     mair_el3, x2
    ldr     x3, =0x80823520         // T0SZ 32, WB walks, inner shareable, 40-bit PA
    msr     tcr_el3, x3
    msr     ttbr0_el3, x1
    isb
    tlbi    alle3
    dsb     sy
    isb
    mrs     x3, sctlr_el3
    mov     x4, #0x1005             // M, C, I
    orr     x3, x3, x4
    bic     x3, x3, #0x2            // no alignment checks
    bic     x3, x3, #0x80000        // no WXN
    msr     sctlr_el3, x3
    isb
    b       .Lrust
.Lel2:
    EL2_MMU_ON
    b       .Lrust
.Lel1:
    msr     mair_el1, x2
    ldr     x3, =0x200803520        // as above, EPD1, IPS 40-bit
    msr     tcr_el1, x3
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    dsb     sy
    isb
    mrs     x3, sctlr_el1
    mov     x4, #0x1005
    orr     x3, x3, x4
    bic     x3, x3, #0x2
    msr     sctlr_el1, x3
    isb
.Lrust:
    mov     x0, x19
    mov     x1, x20
    bl      rvm_boot_main
3:  wfi
    b       3b

// A secondary CPU, started by PSCI CPU_ON at EL2 with x0 = its CPU index.
.global rvm_secondary_entry
rvm_secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    ldr     x1, =__stacks_start
    ldr     x2, =__stack_slot
    madd    x1, x19, x2, x1
    add     x1, x1, x2
    mov     sp, x1
    ldr     x1, =rvm_boot_l1
    mov     x2, #0xff00
    EL2_MMU_ON
    mov     x0, x19
    bl      rvm_secondary_main
4:  wfe
    b       4b

.section .data.boot_tables, "aw"
.balign 4096
.global rvm_boot_l1
rvm_boot_l1:
    .quad   0x0040000000000401      // 0-1 GiB: Device, execute-never
    .quad   0x0000000040000705      // 1-2 GiB: Normal WB, inner shareable
    .quad   0x0000000080000705      // 2-3 GiB
    .quad   0x00000000c0000705      // 3-4 GiB
    .fill   508, 8, 0
"#
);
