//! Secondary CPUs: started through PSCI `CPU_ON` (conduit and CPU ids from
//! the device tree), each with its own stack, vectors, EL2 configuration and
//! GIC redistributor. They then park: scheduling partitions on them is not
//! built yet, and the boot CPU runs every vCPU.

use core::sync::atomic::{AtomicU32, Ordering};

use rvm_abi::hypercall::psci;
use rvm_hal::dtb::Platform;
use rvm_hal::vectors::PerCpu;

/// CPUs the image has stacks for (see `linker.ld`).
pub const MAX_CPUS: usize = 4;

/// CPUs that finished their bring-up (the boot CPU counts).
static ONLINE: AtomicU32 = AtomicU32::new(1);

/// GIC bases for the secondaries (set before any is started).
static GIC: spin::Once<(usize, usize)> = spin::Once::new();

const NO_GUEST: PerCpu = PerCpu { scratch: 0, guest: core::ptr::null_mut() };
static mut PERCPU: [PerCpu; MAX_CPUS] = [NO_GUEST; MAX_CPUS];

/// CPU `n`'s per-CPU block.
pub fn percpu(n: usize) -> &'static mut PerCpu {
    assert!(n < MAX_CPUS);
    // SAFETY: each CPU takes only its own element, once, at bring-up; the
    // vectors reach it through TPIDR_EL2 on that same CPU only.
    unsafe { &mut (*core::ptr::addr_of_mut!(PERCPU))[n] }
}

extern "C" {
    fn rvm_secondary_entry();
}

/// Start every other CPU the device tree lists; returns how many are online.
pub fn start_secondaries(p: &Platform) -> u32 {
    let Some(conduit) = p.psci else { return 1 };
    if let (Some(d), Some(r)) = (p.gicd, p.gicr) {
        GIC.call_once(|| (d, r));
    }
    let me = rvm_hal::sysreg::mpidr();
    let entry = rvm_secondary_entry as *const () as u64;
    let mut index = 1u64;
    for &id in p.cpu_ids.iter().filter(|&&id| id != me) {
        if index as usize >= MAX_CPUS {
            break;
        }
        let before = ONLINE.load(Ordering::Acquire);
        let status = rvm_hal::power::psci_call(conduit, psci::CPU_ON_64, id, entry, index);
        if status != psci::SUCCESS {
            rvm_hal::print!("rvm: CPU {:#x} did not start: PSCI status {}\n", id, status);
            continue;
        }
        // Wait (bounded) for it to report in.
        let mut spins = 0u64;
        while ONLINE.load(Ordering::Acquire) == before && spins < 50_000_000 {
            core::hint::spin_loop();
            spins += 1;
        }
        index += 1;
    }
    ONLINE.load(Ordering::Acquire)
}

/// First Rust code of a secondary CPU (called from `rvm_secondary_entry`).
#[no_mangle]
extern "C" fn rvm_secondary_main(index: u64) -> ! {
    let n = usize::try_from(index).unwrap_or(MAX_CPUS - 1);
    rvm_hal::vectors::install(percpu(n));
    rvm_hal::cpu::init_el2();
    rvm_hal::pmu::enable();
    if let Some(&(d, r)) = GIC.get() {
        // SAFETY: the device tree's GICv3 blocks; this CPU's redistributor
        // is found by its own affinity, and the distributor write is the
        // same idempotent enable the boot CPU made.
        let _ = unsafe { rvm_hal::gic::Gic::init(d, r, rvm_hal::sysreg::mpidr()) };
    }
    ONLINE.fetch_add(1, Ordering::AcqRel);
    loop {
        // SAFETY: parked: wait for an event that only power-off ends.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}
