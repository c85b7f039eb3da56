//! Every `unsafe` of the EL1 images: the entry, the exception vectors, the
//! `hvc` instruction, the heap, and the views of the memory the hypervisor
//! hands over (boot-info page, WASM module, boot stack). What leaves this
//! module is safe to use.
#![allow(unsafe_code)]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

use linked_list_allocator::LockedHeap;
use rvm_abi::bootinfo::exit as exit_code;
use rvm_abi::bootinfo::layout;
use rvm_abi::hypercall::psci;
use rvm_abi::{HvError, Hypercall};

/// Size of the boot-info page.
pub const BOOT_PAGE_LEN: usize = 4096;

// Entry: the hypervisor starts us here at EL1h with x0 = IPA of the boot-info
// page, MMU off (HCR_EL2.DC=1 makes every access Normal cacheable), IRQs
// masked and SP undefined. Zero .bss and the boot stack (so its high-water
// mark can be measured), take the boot stack, install the EL1 vectors, and
// call the image's `rvm_el1_main(x0)`, which never returns.
global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    mov     x19, x0
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
    bl      2f
    adrp    x1, __stack_bottom
    add     x1, x1, :lo12:__stack_bottom
    adrp    x2, __stack_top
    add     x2, x2, :lo12:__stack_top
    bl      2f
    mov     sp, x2
    adrp    x1, rvm_el1_vectors
    add     x1, x1, :lo12:rvm_el1_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      rvm_el1_main
1:  wfi
    b       1b
    // Zero [x1, x2), both 16-byte aligned; uses no stack.
2:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       2b
3:  ret

    // EL1 exception vectors: every entry records its index and reports.
    .section .text.vectors, "ax"
    .balign 2048
    .global rvm_el1_vectors
rvm_el1_vectors:
    .irp    n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    mov     x0, #\n
    b       4f
    .endr
    // A fresh stack: the fault may have been the boot stack itself.
4:  adrp    x9, __exception_stack_top
    add     x9, x9, :lo12:__exception_stack_top
    mov     sp, x9
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    bl      rvm_el1_exception
5:  wfi
    b       5b
"#
);

/// Declare the image's main function: `el1_main!(path)` makes `path`, a
/// `fn(u64) -> !` taking the boot-info IPA, what the entry calls.
#[macro_export]
macro_rules! el1_main {
    ($main:path) => {
        // SAFETY: exactly one function of this name exists in an image (this
        // macro is used once per binary); the entry calls it with the
        // boot-info IPA, the C ABI's first argument register.
        #[unsafe(no_mangle)]
        extern "C" fn rvm_el1_main(boot_info_ipa: u64) -> ! {
            let main: fn(u64) -> ! = $main;
            main(boot_info_ipa)
        }
    };
}

/// An exception taken to EL1 (from the vectors): report it and exit.
/// `vector` is the entry index (0–3 current EL with SP_EL0, 4–7 SP_ELx,
/// 8–15 lower EL; within each group sync, IRQ, FIQ, SError).
#[unsafe(no_mangle)]
extern "C" fn rvm_el1_exception(vector: u64, esr: u64, elr: u64, far: u64) -> ! {
    crate::console::print(format_args!(
        "el1: exception at vector {vector}: ESR_EL1={esr:#x} ELR_EL1={elr:#x} FAR_EL1={far:#x}\n"
    ));
    exit(exit_code::RUNTIME_PANIC)
}

/// One argument of a hypercall, and how it lands in registers.
pub enum Arg<'a> {
    /// A value: one register.
    Val(u64),
    /// A buffer the hypervisor reads: two registers, IPA then length.
    In(&'a [u8]),
    /// A buffer the hypervisor may write: two registers, IPA then capacity.
    Out(&'a mut [u8]),
    /// A buffer of a length fixed by the call, read: one register, its IPA
    /// (0 for none).
    InPtr(Option<&'a [u8]>),
    /// A buffer of a length fixed by the call, written: one register, its IPA.
    OutPtr(&'a mut [u8]),
}

/// The IPA of a buffer: with stage 1 off, a pointer's address is its IPA.
fn ipa(p: *const u8) -> u64 {
    p as usize as u64
}

fn len(b: &[u8]) -> u64 {
    b.len() as u64
}

/// Issue hypercall `call` with `args` laid out in `x1..x6`; `x1..x3` on success.
///
/// Buffers are borrowed for the call, so the hypervisor only ever reads a
/// slice it was lent, or writes one lent mutably (and no more of it than
/// its length).
pub fn hypercall(call: Hypercall, args: &mut [Arg<'_>]) -> Result<[u64; 3], HvError> {
    let mut x = [0u64; 7];
    x[0] = u64::from(call.function_id());
    let mut r = 1;
    for arg in args.iter_mut() {
        let regs: &[u64] = &match arg {
            Arg::Val(v) => [*v, 0],
            Arg::In(b) => [ipa(b.as_ptr()), len(b)],
            Arg::Out(b) => [ipa(b.as_mut_ptr()), len(b)],
            Arg::InPtr(b) => [b.map_or(0, |b| ipa(b.as_ptr())), 0],
            Arg::OutPtr(b) => [ipa(b.as_mut_ptr()), 0],
        }[..match arg {
            Arg::In(_) | Arg::Out(_) => 2,
            _ => 1,
        }];
        for &v in regs {
            if r > 6 {
                return Err(HvError::InvalidArgument);
            }
            x[r] = v;
            r += 1;
        }
    }
    let (status, r1, r2, r3) = raw_hvc(x);
    match status {
        0 => Ok([r1, r2, r3]),
        code => Err(HvError::from_code(i64::from_ne_bytes(code.to_ne_bytes()))
            .unwrap_or(HvError::NotSupported)),
    }
}

/// Issue `hvc #0` with `x0`–`x6` exactly as given and return `x0`–`x3` as
/// the hypervisor left them, the status uninterpreted: for test guests (the
/// hypercall fuzzer) that must see every status, including any that no
/// [`HvError`] names.
///
/// `None`, and nothing issued, if the heap has been initialised or if an
/// argument lies in this image (`IMAGE_BASE..image_end()`). That keeps the
/// call from naming Rust memory: without a heap, every Rust object of an
/// EL1 image lives in the image, nothing is mapped below it or between its
/// end and the boot-info page, and the hypervisor checks a whole buffer
/// before it moves a byte — so a buffer that starts below the image or past
/// its end is refused, or lies above it, and never reaches it.
pub fn hvc_raw(x: [u64; 7]) -> Option<[u64; 4]> {
    let end = image_end();
    let in_image = |v: &u64| (layout::IMAGE_BASE..end).contains(v);
    if HEAP_READY.load(Ordering::Acquire) || x[1..].iter().any(in_image) {
        return None;
    }
    let (r0, r1, r2, r3) = raw_hvc(x);
    Some([r0, r1, r2, r3])
}

fn raw_hvc(x: [u64; 7]) -> (u64, u64, u64, u64) {
    let (r0, r1, r2, r3);
    // SAFETY: `hvc #0` traps to the hypervisor, which follows the SMCCC: it
    // reads x0-x6, writes x0-x3, and may clobber x4-x17 (declared). Memory it
    // touches is memory the caller lent it for the call (see `hypercall`),
    // so the asm is not `nomem`. It does not use our stack.
    unsafe {
        asm!(
            "hvc #0",
            inlateout("x0") x[0] => r0,
            inlateout("x1") x[1] => r1,
            inlateout("x2") x[2] => r2,
            inlateout("x3") x[3] => r3,
            inlateout("x4") x[4] => _,
            inlateout("x5") x[5] => _,
            inlateout("x6") x[6] => _,
            lateout("x7") _, lateout("x8") _, lateout("x9") _, lateout("x10") _,
            lateout("x11") _, lateout("x12") _, lateout("x13") _, lateout("x14") _,
            lateout("x15") _, lateout("x16") _, lateout("x17") _,
            options(nostack),
        );
    }
    (r0, r1, r2, r3)
}

/// End this partition with `code` (an agent's code, or one of
/// `rvm_abi::bootinfo::exit`): the `Exit` hypercall; should it return, PSCI
/// `SYSTEM_OFF`; should that return too, wait for interrupts forever.
pub fn exit(code: u64) -> ! {
    let _ = hypercall(Hypercall::Exit, &mut [Arg::Val(code)]);
    let _ = raw_hvc([u64::from(psci::SYSTEM_OFF), 0, 0, 0, 0, 0, 0]);
    loop {
        // With interrupts masked, `wfi` may return at once.
        aarch64_cpu::asm::wfi();
    }
}

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();
static HEAP_READY: AtomicBool = AtomicBool::new(false);

/// Why the heap could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    AlreadyInitialised,
    /// The range is empty, wraps, or lies inside the image window.
    BadRange {
        ipa: u64,
        len: u64,
    },
}

/// Give the global allocator the heap the boot-info page names. Once only.
pub fn init_heap(ipa: u64, len: u64) -> Result<(), HeapError> {
    let end = ipa.checked_add(len);
    let overlaps_image = ipa < layout::IMAGE_LIMIT && end.is_some_and(|e| e > layout::IMAGE_BASE);
    if len == 0 || end.is_none() || overlaps_image {
        return Err(HeapError::BadRange { ipa, len });
    }
    let (Ok(start), Ok(size)) = (usize::try_from(ipa), usize::try_from(len)) else {
        return Err(HeapError::BadRange { ipa, len });
    };
    if HEAP_READY.swap(true, Ordering::AcqRel) {
        return Err(HeapError::AlreadyInitialised);
    }
    // SAFETY: the hypervisor maps [ipa, ipa+len) read-write for this
    // partition and nothing else in the image uses it (checked: outside the
    // image window); `HEAP_READY` makes this the only initialisation.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
    Ok(())
}

/// Bytes of heap in use and free.
pub fn heap_usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.free())
}

/// The boot-info page at `ipa`, if the address is the one the layout names.
pub fn boot_page(ipa: u64) -> Option<&'static [u8]> {
    if ipa != layout::BOOTINFO_IPA {
        return None;
    }
    let start = usize::try_from(ipa).ok()?;
    // SAFETY: the hypervisor maps the boot-info page read-only at
    // layout::BOOTINFO_IPA for the partition's life; the guest never writes
    // it. (The hypervisor rewrites it only when an agent arrives, during an
    // `AgentSwitch`; the runtime reads the new content with
    // `read_page_now`, never through a view taken before.)
    Some(unsafe { core::slice::from_raw_parts(start as *const u8, BOOT_PAGE_LEN) })
}

/// A copy of the boot-info page or (when `agent_count` is not 0) the agent
/// table page, read now with volatile loads. The hypervisor rewrites both
/// during an `AgentSwitch` when an agent arrives in this partition (a
/// merge: one more table entry, its handles), so a copy taken after that
/// call sees the new content, whatever views were read before.
pub fn read_page_now(ipa: u64, agent_count: u32) -> Option<[u8; BOOT_PAGE_LEN]> {
    let mapped = ipa == layout::BOOTINFO_IPA || (ipa == layout::AGENTS_IPA && agent_count != 0);
    if !mapped {
        return None;
    }
    let start = usize::try_from(ipa).ok()? as *const u8;
    let mut out = [0u8; BOOT_PAGE_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        // SAFETY: the hypervisor maps the boot-info page, and the agent
        // table whenever the agent count is not 0 (checked above),
        // read-only at these IPAs for the partition's life; `i` stays
        // inside the page. Volatile: the content may have changed since
        // any earlier read (an arrival).
        *byte = unsafe { core::ptr::read_volatile(start.add(i)) };
    }
    Some(out)
}

/// The agent table page of a partition with several agents: present only
/// when the boot-info page's agent count (`agent_count`) is not 0.
pub fn agent_table_page(agent_count: u32) -> Option<&'static [u8]> {
    if agent_count == 0 {
        return None;
    }
    let start = usize::try_from(layout::AGENTS_IPA).ok()?;
    // SAFETY: the hypervisor maps the agent table page read-only at
    // layout::AGENTS_IPA for the partition's life whenever the boot-info
    // page's agent count is not 0 (checked above); the guest never writes
    // it. (The hypervisor appends to it only when an agent arrives, during
    // an `AgentSwitch`; the runtime reads that with `read_page_now`.)
    Some(unsafe { core::slice::from_raw_parts(start as *const u8, BOOT_PAGE_LEN) })
}

/// The agent's WASM module, if it lies where the layout puts modules.
pub fn wasm_module(ipa: u64, len: u64) -> Option<&'static [u8]> {
    let inside = ipa >= layout::WASM_IPA
        && len <= layout::WASM_MAX_LEN
        && ipa.checked_add(len)? <= layout::WASM_IPA + layout::WASM_MAX_LEN;
    if !inside {
        return None;
    }
    let (start, len) = (usize::try_from(ipa).ok()?, usize::try_from(len).ok()?);
    // SAFETY: the hypervisor maps the module read-only at [ipa, ipa+len)
    // (inside the layout's module window, checked) for the partition's life.
    Some(unsafe { core::slice::from_raw_parts(start as *const u8, len) })
}

/// Run `f` on the snapshot image the hypervisor mapped read-only at
/// `[ipa, ipa + len)` for this start, if the range lies in the layout's
/// restore window. The slice cannot outlive `f`: the mapping goes away once
/// the runtime hands over a new snapshot.
pub fn with_snapshot_image<R>(ipa: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let inside = ipa >= layout::SNAPSHOT_IPA
        && len <= layout::SNAPSHOT_MAX_LEN
        && ipa.checked_add(len)? <= layout::SNAPSHOT_IPA + layout::SNAPSHOT_MAX_LEN;
    if !inside || len == 0 {
        return None;
    }
    let (start, len) = (usize::try_from(ipa).ok()?, usize::try_from(len).ok()?);
    // SAFETY: the boot-info page names [ipa, ipa+len) as the snapshot the
    // hypervisor mapped read-only for this start (inside the restore window,
    // checked); it stays mapped until this runtime issues a `Snapshot`
    // call, which cannot happen while `f` holds the slice (the slice is not
    // handed to anything that outlives `f`).
    let image = unsafe { core::slice::from_raw_parts(start as *const u8, len) };
    Some(f(image))
}

unsafe extern "C" {
    static __stack_bottom: u8;
    static __stack_top: u8;
    static __image_end: u8;
}

/// The boot stack's size and the most of it ever used (the entry zeroes it;
/// the deepest non-zero word marks the high water).
pub fn stack_usage() -> (usize, usize) {
    // Only the linker symbols' addresses are taken, never their contents.
    let (bottom, top) = (
        &raw const __stack_bottom as usize,
        &raw const __stack_top as usize,
    );
    let words = (top - bottom) / 8;
    let mut untouched = 0;
    while untouched < words {
        // SAFETY: [bottom, top) is the boot stack, mapped read-write and
        // 8-byte aligned; the words below the current SP are not in use.
        let w = unsafe { core::ptr::read_volatile((bottom + untouched * 8) as *const u64) };
        if w != 0 {
            break;
        }
        untouched += 1;
    }
    (top - bottom, (words - untouched) * 8)
}

/// The first IPA past the image.
pub fn image_end() -> u64 {
    // Only the linker symbol's address is taken, never its contents.
    (&raw const __image_end) as usize as u64
}

/// Raw accesses for the isolation probes: loads and stores to an IPA that
/// is no Rust object's memory, done in asm so no Rust pointer is formed.
/// The virtual counter (after an `isb`, so it is not read early) and its
/// frequency in Hz, both always readable at EL1.
fn virtual_counter() -> (u64, u64) {
    use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTVCT_EL0};
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    (CNTVCT_EL0.get(), CNTFRQ_EL0.get())
}

pub mod probe {
    use core::arch::asm;

    /// Load 8 bytes from `ipa`.
    pub fn read_u64(ipa: u64) -> u64 {
        let v: u64;
        // SAFETY: a single load from an address outside every Rust
        // allocation; its only effects are the load or a fault that the
        // hypervisor takes at EL2.
        unsafe {
            asm!("ldr {v}, [{a}]", a = in(reg) ipa, v = out(reg) v, options(nostack, readonly))
        };
        v
    }

    /// Store 8 bytes to `ipa`.
    pub fn write_u64(ipa: u64, value: u64) {
        // SAFETY: a single store to an address outside every Rust
        // allocation; its only effects are the store or a fault that the
        // hypervisor takes at EL2.
        unsafe { asm!("str {v}, [{a}]", a = in(reg) ipa, v = in(reg) value, options(nostack)) };
    }

    /// Issue the A64 semihosting trap `hlt #0xf000` with operation `op` in
    /// `w0` and parameter `param` in `x1`; return `x0` as it comes back.
    /// RVM never enables semihosting, so at EL1 this is an undefined
    /// instruction taken by the image's own EL1 vectors; only a machine that
    /// serves semihosting (a debugger, QEMU with `-semihosting`) returns.
    pub fn semihosting(op: u64, param: u64) -> u64 {
        let r;
        // SAFETY: `hlt` either raises an exception at EL1 (handled by the
        // vectors, which never return here) or is served by a semihosting
        // host, which reads the parameter block `param` points to (memory
        // the caller lends for the call) and writes x0 only.
        unsafe { asm!("hlt #0xf000", inlateout("x0") op => r, in("x1") param, options(nostack)) };
        r
    }

    /// The virtual counter and its frequency in Hz.
    pub fn counter() -> (u64, u64) {
        super::virtual_counter()
    }

    /// A CPU register every partition on a physical CPU would share if the
    /// hypervisor let EL1 reach it: the PMU, the debug registers, the
    /// physical timer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SharedReg {
        /// `mrs PMCCNTR_EL0`: the cycle counter (counts EL2 work too).
        PmccntrRead,
        /// `msr PMCR_EL0, E|C`: reset the cycle counter under everyone.
        PmcrWrite,
        /// `mrs MDSCR_EL1`: debug control.
        MdscrRead,
        /// `mrs DBGBVR0_EL1`: breakpoint 0's address.
        Dbgbvr0Read,
        /// `msr DBGBVR0_EL1`: set breakpoint 0's address.
        Dbgbvr0Write,
        /// `mrs OSLSR_EL1`: the OS lock.
        OslsrRead,
        /// `mrs MDRAR_EL1`: the debug ROM's address.
        MdrarRead,
        /// `mrs CNTP_CTL_EL0`: the physical timer's control.
        CntpCtlRead,
        /// `msr CNTP_CTL_EL0, 1`: arm the physical timer.
        CntpCtlWrite,
        /// `mrs CNTP_CVAL_EL0`: its compare value (another's deadline).
        CntpCvalRead,
        /// `msr CNTP_CVAL_EL0, 0`: fire it now.
        CntpCvalWrite,
        /// `msr ACTLR_EL1, 0`: auxiliary (implementation-defined) control.
        ActlrWrite,
        /// `dc cisw`: clean and invalidate a cache line by set/way, whoever
        /// owns it.
        DcSetWay,
    }

    /// Access `reg` once from EL1; what a read returned (0 for a write). The
    /// hypervisor traps every one of these: the call should never return.
    /// Each is the one raw instruction under test, written out here rather
    /// than through `aarch64-cpu` (which names only some of these registers),
    /// so what the probe executes is exactly what the variant says.
    pub fn shared_reg(reg: SharedReg) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: one system-register access or cache operation each, no
        // memory touched. If the hypervisor let it through, a write changes
        // only CPU state the probe is testing (counter reset, a breakpoint
        // address with breakpoints disabled, a timer whose interrupt nobody
        // enabled, ACTLR's defaults, one cache line cleaned to memory).
        unsafe {
            match reg {
                SharedReg::PmccntrRead => asm!("mrs {v}, pmccntr_el0", v = out(reg) v, options(nomem, nostack)),
                SharedReg::PmcrWrite => asm!("msr pmcr_el0, {v}", v = in(reg) 0b101u64, options(nomem, nostack)),
                SharedReg::MdscrRead => asm!("mrs {v}, mdscr_el1", v = out(reg) v, options(nomem, nostack)),
                SharedReg::Dbgbvr0Read => asm!("mrs {v}, dbgbvr0_el1", v = out(reg) v, options(nomem, nostack)),
                SharedReg::Dbgbvr0Write => asm!("msr dbgbvr0_el1, {v}", v = in(reg) 0x4000_0000u64, options(nomem, nostack)),
                SharedReg::OslsrRead => asm!("mrs {v}, oslsr_el1", v = out(reg) v, options(nomem, nostack)),
                SharedReg::MdrarRead => asm!("mrs {v}, mdrar_el1", v = out(reg) v, options(nomem, nostack)),
                SharedReg::CntpCtlRead => asm!("mrs {v}, cntp_ctl_el0", v = out(reg) v, options(nomem, nostack)),
                SharedReg::CntpCtlWrite => asm!("msr cntp_ctl_el0, {v}", v = in(reg) 1u64, options(nomem, nostack)),
                SharedReg::CntpCvalRead => asm!("mrs {v}, cntp_cval_el0", v = out(reg) v, options(nomem, nostack)),
                SharedReg::CntpCvalWrite => asm!("msr cntp_cval_el0, {v}", v = in(reg) 0u64, options(nomem, nostack)),
                SharedReg::ActlrWrite => asm!("msr actlr_el1, {v}", v = in(reg) 0u64, options(nomem, nostack)),
                SharedReg::DcSetWay => asm!("dc cisw, {v}", v = in(reg) 0u64, options(nostack)),
            }
        }
        v
    }

    /// `hvc #1` with `x0` = `function`: no RVM call (only `hvc #0` is one);
    /// answers `x0`.
    pub fn hvc_imm1(function: u64) -> u64 {
        let r0;
        // SAFETY: `hvc #1` traps to the hypervisor, which answers in `x0`
        // and changes no other register of ours or any memory.
        unsafe { asm!("hvc #1", inout("x0") function => r0, options(nostack)) };
        r0
    }

    /// Mask every exception (D, A, I, F) at EL1 and spin forever without a
    /// host call: only the hypervisor's own timer can take the CPU back.
    pub fn spin_masked() -> ! {
        // SAFETY: masking DAIF at EL1 affects only this vCPU; the loop
        // touches no memory.
        unsafe {
            asm!(
                "msr daifset, #0xf",
                "2: b 2b",
                options(nomem, nostack, noreturn)
            )
        }
    }
}

/// Cost measurements. The runtime times its own steps (snapshot
/// hand-over, restore) with the virtual counter, which every partition may
/// read: under QEMU with `-icount shift=0` one nanosecond of virtual time
/// is one instruction. The hypercall benchmark (`probe-bench`) reads the
/// cycle counter (instructions under `-icount`, at EL1 and, with
/// PMCCFILTR.NSH, at EL2), which the hypervisor traps unless it was booted
/// with `rvm.bench=pmu` for the benchmark: the PMU is shared by every
/// partition on a CPU.
pub mod bench {
    use core::arch::asm;

    /// Nanoseconds of the virtual counter.
    pub fn now_ns() -> u64 {
        let (count, freq) = super::virtual_counter();
        let ns = u128::from(count) * 1_000_000_000 / u128::from(freq.max(1));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Instructions (cycles) one `hvc #0` with function ID `x0` costs, seen
    /// from EL1: the counter is read right before and right after the call,
    /// so the figure includes the `isb`/`mrs` pair on each side.
    pub fn hvc_round_trip(x0: u64) -> (u64, u64) {
        let (before, after, status): (u64, u64, u64);
        // SAFETY: reads of the cycle counter (left to EL1 by a hypervisor
        // booted with `rvm.bench=pmu`; otherwise the first read traps and
        // the hypervisor faults this partition) around one hypercall that takes no buffers; the
        // hypervisor may clobber x0-x17 (declared) and touches no memory of
        // ours for a call without buffer arguments.
        unsafe {
            asm!(
                "isb",
                "mrs {b}, pmccntr_el0",
                "hvc #0",
                "isb",
                "mrs {a}, pmccntr_el0",
                b = out(reg) before,
                a = out(reg) after,
                inlateout("x0") x0 => status,
                lateout("x1") _, lateout("x2") _, lateout("x3") _, lateout("x4") _,
                lateout("x5") _, lateout("x6") _, lateout("x7") _, lateout("x8") _,
                lateout("x9") _, lateout("x10") _, lateout("x11") _, lateout("x12") _,
                lateout("x13") _, lateout("x14") _, lateout("x15") _, lateout("x16") _,
                lateout("x17") _,
                options(nostack),
            );
        }
        (after.wrapping_sub(before), status)
    }
}
