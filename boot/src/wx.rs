//! The hypervisor's W^X map ([`rvm_hal::el2map`]) fed with this image's
//! sections (from `linker.ld`), the device tree's RAM and device ranges,
//! and a guard page under every CPU's stack; and the boot self-test
//! (`rvm.selftest=wx`) that shows the map holds.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rvm_hal::dtb::Platform;
use rvm_hal::el2map::{self, El2Map, Perm, Table, VA_LIMIT};
use rvm_hal::print;
use rvm_hal::vectors::{self, Fault};

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
    static __stacks_start: u8;
    static __stacks_end: u8;
    /// Absolute symbols (their address is the value).
    static __stack_slot: u8;
    static __stack_guard: u8;
}

fn sym(s: *const u8) -> u64 {
    s as u64
}

/// One CPU's stack slot: `[base, base + guard)` unmapped, the stack above.
fn stack_slot(cpu: usize) -> (u64, u64) {
    let slot = sym(core::ptr::addr_of!(__stack_slot));
    let base = sym(core::ptr::addr_of!(__stacks_start)) + cpu as u64 * slot;
    (base, base + sym(core::ptr::addr_of!(__stack_guard)))
}

/// Tables for the map: the root, one level-2 table per GiB, level-3 tables
/// where the image's sections, the guard pages and the devices need pages.
const POOL_TABLES: usize = 24;
static mut POOL: [Table; POOL_TABLES] = [const { Table::EMPTY }; POOL_TABLES];

/// The map's root, once built (every CPU activates the same one).
static ROOT: AtomicU64 = AtomicU64::new(0);

/// `rvm.selftest=wx` was given: each CPU probes the map as it comes up.
static SELF_TEST: AtomicBool = AtomicBool::new(false);

/// `rvm.selftest=stack-overflow` was given: the boot CPU overflows its
/// stack on purpose (the run ends there).
static OVERFLOW_TEST: AtomicBool = AtomicBool::new(false);

/// Build the map from `p` and this image, and switch the boot CPU to it.
/// Call once, on the boot CPU, before any secondary starts.
pub fn install(p: &Platform) {
    let image_start = sym(core::ptr::addr_of!(__image_start));
    let text_end = sym(core::ptr::addr_of!(__text_end));
    let rodata_end = sym(core::ptr::addr_of!(__rodata_end));
    let image_end = sym(core::ptr::addr_of!(__image_end));
    let stacks = sym(core::ptr::addr_of!(__stacks_end)) - sym(core::ptr::addr_of!(__stacks_start));
    assert_eq!(stacks / sym(core::ptr::addr_of!(__stack_slot)), crate::smp::MAX_CPUS as u64, "linker.ld stacks");
    // SAFETY: the pool is used only here, once, on the boot CPU before any
    // other CPU runs; afterwards the tables are only read (by the walkers).
    let pool = unsafe { &mut *core::ptr::addr_of_mut!(POOL) };
    let mut map = El2Map::new(pool);
    let result = (|| {
        for d in &p.devices {
            map.map_rounded(d.start.raw(), d.end.raw(), Perm::Device)?;
        }
        for r in &p.memory {
            if r.end.raw() > VA_LIMIT {
                print!("rvm: warning: RAM above {:#x} is not mapped at EL2\n", VA_LIMIT);
            }
            map.map_rounded(r.start.raw(), r.end.raw(), Perm::ReadWrite)?;
        }
        map.map(image_start, text_end, Perm::Text)?;
        map.map(text_end, rodata_end, Perm::ReadOnly)?;
        map.map(rodata_end, image_end, Perm::ReadWrite)?;
        for cpu in 0..crate::smp::MAX_CPUS {
            let (guard, top) = stack_slot(cpu);
            map.map(guard, top, Perm::Unmapped)?;
        }
        Ok::<(), el2map::MapError>(())
    })();
    if let Err(e) = result {
        panic!("EL2 map: {e:?}");
    }
    // Before switching (a gap would fault with no console to say so): the
    // code running now, this stack, the console and the bundle are mapped
    // as they must be.
    let here = 0u8;
    let stack = core::hint::black_box(&here) as *const u8 as u64;
    let perm = |va: u64| map.perm_of(va).map(|(perm, _)| perm);
    assert_eq!(perm(install as *const () as u64), Some(Perm::Text), "EL2 map: text");
    assert_eq!(perm(stack), Some(Perm::ReadWrite), "EL2 map: stack");
    if let Some(uart) = p.uart {
        assert_eq!(perm(uart as u64), Some(Perm::Device), "EL2 map: console");
    }
    if let Some(initrd) = p.initrd {
        assert_eq!(perm(initrd.start.raw()), Some(Perm::ReadWrite), "EL2 map: bundle");
    }
    let root = map.root();
    let used = map.tables_used();
    ROOT.store(root, Ordering::Release);
    // SAFETY: the map just built covers, identity: this image's text (the
    // code running now), its data, bss and stacks (this CPU's stack, the
    // pool), all RAM (heap, device tree, bundle, frames) and the device
    // tree's devices (UART, GIC); its tables are never written again.
    unsafe { el2map::activate(root) };
    print!(
        "rvm: EL2 map: text {:#x}..{:#x} RX, rodata ..{:#x} R, data/bss/stacks ..{:#x} RW+XN, \
         guard page under each of {} stacks, RAM RW+XN, devices XN, WXN {}; {} tables\n",
        image_start,
        text_end,
        rodata_end,
        image_end,
        crate::smp::MAX_CPUS,
        if el2map::wxn_enabled() { "on" } else { "off" },
        used
    );
    match p.bootarg("rvm.selftest") {
        Some("wx") => SELF_TEST.store(true, Ordering::Release),
        Some("stack-overflow") => OVERFLOW_TEST.store(true, Ordering::Release),
        _ => {}
    }
}

/// Recurse with 1 KiB frames until the stack runs out.
#[inline(never)]
fn deeper(n: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[(n % 1024) as usize] = n as u8;
    let frame = core::hint::black_box(frame);
    if n == u64::MAX {
        return 0;
    }
    deeper(n + 1).wrapping_add(u64::from(frame[0]))
}

/// Switch a secondary CPU to the boot CPU's map (before it touches
/// anything the early map alone allowed).
pub fn install_secondary() {
    let root = ROOT.load(Ordering::Acquire);
    assert!(root != 0, "EL2 map not built");
    // SAFETY: the boot CPU built this map before starting any secondary
    // and never changes it; it covers this CPU's stack slot (less its
    // guard page, below the stack) and the code it runs.
    unsafe { el2map::activate(root) };
}

/// `ret`, placed in .data: executing it must fault.
static mut RET_IN_DATA: u32 = 0xd65f_03c0;

/// A function in .text that the probe tries to overwrite (with its own
/// first instruction, so a write that went through changes nothing).
#[inline(never)]
extern "C" fn text_target() -> u64 {
    0x5758
}

const EC_IABT_SELF: u64 = 0x21;
const EC_DABT_SELF: u64 = 0x25;

/// Fault status code kinds (DFSC/IFSC bits [5:2]).
const FSC_TRANSLATION: u64 = 0x04;
const FSC_PERMISSION: u64 = 0x0c;

fn expect(what: &str, cpu: usize, got: Option<Fault>, ec: u64, fsc: u64) -> bool {
    match got {
        Some(f) if (f.esr >> 26) & 0x3f == ec && f.esr & 0x3c == fsc => {
            print!("rvm: selftest wx cpu{cpu}: {what}: faulted as expected (esr {:#x} far {:#x})\n", f.esr, f.far);
            true
        }
        Some(f) => {
            print!("rvm: selftest wx cpu{cpu}: {what}: FAILED: unexpected fault (esr {:#x} far {:#x})\n", f.esr, f.far);
            false
        }
        None => {
            print!("rvm: selftest wx cpu{cpu}: {what}: FAILED: no fault\n");
            false
        }
    }
}

/// Run the W^X self-test on this CPU if `rvm.selftest=wx` was given: a
/// write to text, an execute from data and from the heap (RAM outside the
/// image, mapped like every guest frame), and a read of every stack's guard
/// page must each fault. Returns whether all did (true if not asked).
pub fn self_test(cpu: usize) -> bool {
    if cpu == 0 && OVERFLOW_TEST.load(Ordering::Acquire) {
        print!("rvm: selftest stack-overflow: recursing on the boot CPU's stack\n");
        let n = deeper(0);
        print!("rvm: selftest stack-overflow: FAILED: came back ({n})\n");
    }
    if !SELF_TEST.load(Ordering::Acquire) {
        return true;
    }
    let mut ok = true;
    let text = text_target as *const () as usize;
    // SAFETY: text is readable; this reads one instruction word.
    let word = unsafe { core::ptr::read_volatile(text as *const u32) };
    ok &= expect("write to .text", cpu, vectors::probe_write_u32(text, word), EC_DABT_SELF, FSC_PERMISSION);
    let data = core::ptr::addr_of!(RET_IN_DATA) as usize;
    ok &= expect("execute from .data", cpu, vectors::probe_exec(data), EC_IABT_SELF, FSC_PERMISSION);
    let heap = alloc::boxed::Box::new(0xd65f_03c0u32);
    let at = &*heap as *const u32 as usize;
    ok &= expect("execute from RAM outside the image (heap, guest frames)", cpu, vectors::probe_exec(at), EC_IABT_SELF, FSC_PERMISSION);
    drop(heap);
    let rodata: &'static [u8; 8] = b"rodata!\0";
    let ro = core::hint::black_box(rodata.as_ptr()) as usize;
    ok &= expect("write to .rodata", cpu, vectors::probe_write_u32(ro, u32::from_le_bytes(*b"roda")), EC_DABT_SELF, FSC_PERMISSION);
    for slot in 0..crate::smp::MAX_CPUS {
        let (guard, _) = stack_slot(slot);
        let what = alloc::format!("read of stack {slot}'s guard page {guard:#x}");
        ok &= expect(&what, cpu, vectors::probe_read_u64(guard as usize), EC_DABT_SELF, FSC_TRANSLATION);
    }
    // The text target still works (the write did not land).
    ok &= text_target() == 0x5758;
    print!("rvm: selftest wx cpu{cpu}: {}\n", if ok { "passed" } else { "FAILED" });
    ok
}
