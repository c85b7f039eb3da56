//! Secondary CPUs: started through PSCI `CPU_ON` (conduit and CPU ids from
//! the device tree), each with its own stack (guard page below), the boot
//! CPU's EL2 map (`wx`), its own vectors, EL2 configuration,
//! GIC redistributor and hypervisor timer. Once the boot CPU has built the
//! kernel and put it behind the kernel lock ([`KERNEL`]), every CPU runs
//! partitions from its own run queue (`rvm_kernel::running::smp::cpu_main`). When the
//! run is over the secondaries park; the boot CPU waits for them to stop,
//! finishes the run (signs the logs, prints the summary) and powers off.
//! Secondaries reach the console only through the kernel, under the lock.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rvm_abi::hypercall::psci;
use rvm_hal::dtb::Platform;
use rvm_hal::machine::{Cpu, Machine};
use rvm_hal::vectors::PerCpu;
use rvm_kernel::running::smp::{cpu_main, KernelLock};
use rvm_kernel::{CpuArch, CpuId, Hypervisor};

/// CPUs the image has stacks for (see `linker.ld`; `wx::install` checks
/// the two agree).
pub const MAX_CPUS: usize = 4;

/// CPUs that finished their bring-up (the boot CPU counts).
static ONLINE: AtomicU32 = AtomicU32::new(1);

/// Per CPU index: its affinity (MPIDR Aff fields), where a kick is sent.
static AFFINITY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The affinities of the first `online` CPUs, by CPU index (for
/// `Machine::with_kicks`).
pub fn affinities(online: u32) -> heapless::Vec<u64, MAX_CPUS> {
    AFFINITY.iter().take(online as usize).map(|a| a.load(Ordering::Acquire)).collect()
}

/// GIC bases and the hypervisor timer's INTID for the secondaries (set
/// before any is started).
static GIC: spin::Once<(usize, usize, u32)> = spin::Once::new();

/// The kernel lock, set once by the boot CPU before the run starts.
static KERNEL: spin::Once<KernelLock<Machine>> = spin::Once::new();

/// How many CPUs take part in the run (set with [`KERNEL`]).
static RUN_CPUS: AtomicU32 = AtomicU32::new(1);

static mut PERCPU: [PerCpu; MAX_CPUS] = [PerCpu::EMPTY; MAX_CPUS];

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
pub fn start_secondaries(p: &Platform, has_gic: bool) -> u32 {
    let Some(conduit) = p.psci else { return 1 };
    if let (true, Some(d), Some(r)) = (has_gic, p.gicd, p.gicr) {
        let intid = p.hyp_timer_intid;
        GIC.call_once(|| (d, r, intid));
    }
    let me = rvm_hal::sysreg::mpidr();
    AFFINITY[0].store(me, Ordering::Release);
    let entry = rvm_secondary_entry as *const () as u64;
    let mut index = 1u64;
    for &id in p.cpu_ids.iter().filter(|&&id| id != me) {
        if index as usize >= MAX_CPUS {
            break;
        }
        let before = ONLINE.load(Ordering::Acquire);
        AFFINITY[index as usize].store(id, Ordering::Release);
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
    crate::wx::install_secondary();
    rvm_hal::vectors::install(percpu(n));
    rvm_hal::cpu::init_el2();
    rvm_hal::pmu::enable();
    crate::wx::self_test(n);
    let mut timer_intid = 0;
    let mut has_gic = false;
    if let Some(&(d, r, intid)) = GIC.get() {
        // SAFETY: the device tree's GICv3 blocks; this CPU's redistributor
        // is found by its own affinity, and the distributor write is the
        // same idempotent enable the boot CPU made.
        if let Some(gic) = unsafe { rvm_hal::gic::Gic::init(d, r, rvm_hal::sysreg::mpidr()) } {
            gic.enable_ppi(intid);
            gic.enable_sgi(rvm_hal::gic::KICK_SGI);
            timer_intid = intid;
            has_gic = true;
        }
    }
    let mut cpu = Cpu::new(CpuId(u8::try_from(n).unwrap_or(u8::MAX)), has_gic, timer_intid);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    // Wait for the kernel, napping (timer and `wfi`) rather than spinning:
    // under QEMU every CPU is a host thread, and the boot CPU is busy
    // building the partitions.
    let clock = rvm_hal::timer::Clock::new();
    let kernel = loop {
        if let Some(k) = KERNEL.get() {
            break k;
        }
        cpu.idle(clock.now_ns().saturating_add(WAIT_NAP_NS));
    };
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    if n32 < RUN_CPUS.load(Ordering::Acquire) {
        cpu_main(kernel, &mut cpu);
    }
    park()
}

/// How long a CPU naps between looks while it waits for the kernel or for
/// the other CPUs to stop.
const WAIT_NAP_NS: u64 = 100_000;

/// Wait for power-off. `wfi` with the timer disarmed sleeps until then
/// (`wfe` would not: QEMU treats it as a no-op with several CPUs).
fn park() -> ! {
    loop {
        // Parked: waits for an interrupt; none is enabled and armed, so only
        // power-off ends this loop.
        aarch64_cpu::asm::wfi();
    }
}

/// Run the kernel on `cpus` CPUs (the boot CPU, `boot`, and the
/// secondaries that came online), then, once every CPU has stopped, finish
/// the run on the boot CPU. Returns when the machine may power off.
pub fn run_all(mut hv: Hypervisor<Machine>, cpus: u32, boot: &mut Cpu) {
    let cpus = cpus.clamp(1, MAX_CPUS as u32);
    hv.set_cpus(cpus as usize);
    RUN_CPUS.store(cpus, Ordering::Release);
    let kernel = KERNEL.call_once(|| KernelLock::new(hv));
    cpu_main(kernel, boot);
    // The run is over here; wait for the other CPUs to leave their guests.
    loop {
        let mut hv = kernel.lock(boot);
        if hv.all_cpus_stopped() {
            hv.finish_run();
            return;
        }
        drop(hv);
        let now = rvm_hal::timer::Clock::new().now_ns();
        CpuArch::idle(boot, now.saturating_add(WAIT_NAP_NS));
    }
}
