//! The RVM EL2 image. `entry` brings the boot CPU to Rust with the MMU on;
//! `rvm_boot_main` discovers the machine from the device tree, sets up the
//! console, heap, vectors, GIC and timer, hands the bundle to the kernel and
//! runs it, then powers off.
#![no_std]
#![no_main]

extern crate alloc;

mod entry;
mod heap;
mod memory;
mod smp;
mod wx;

use rvm_hal::dtb::Platform;
use rvm_hal::gic::Gic;
use rvm_hal::machine::{Cpu, Machine, CONSOLE, POWER_OFF};
use rvm_hal::power::{power_off, PowerOff};
use rvm_hal::uart::Pl011;
use rvm_hal::{print, sysreg};
use rvm_kernel::memory::frames::FrameAllocator;
use rvm_kernel::memory::Memory;
use rvm_kernel::{CpuId, Hypervisor};

/// Exit codes the image reports in its exit frame (`@X <code>`) before it
/// powers off, for the loader and test harnesses.
mod exit_code {
    pub const OK: u32 = 0;
    pub const NO_BUNDLE: u32 = 2;
    pub const WRONG_EL: u32 = 3;
    pub const BAD_BUNDLE: u32 = 4;
    pub const NO_DTB: u32 = 5;
    pub const NO_MEMORY: u32 = 6;
    pub const PANIC: u32 = 101;
}

/// Where QEMU puts the device tree for a bare-metal ELF (start of RAM).
const DTB_FALLBACK: usize = 0x4000_0000;


#[no_mangle]
extern "C" fn rvm_boot_main(dtb: usize, el: u64) -> ! {
    let t0 = rvm_hal::timer::counter();
    // SAFETY: the boot protocol passes the DTB in x0; a bare-metal ELF boot
    // finds it at the start of RAM. Both are identity-mapped Normal memory
    // by the early MMU and nothing writes the DTB.
    let platform = unsafe { Platform::discover(dtb) }.or_else(|_| unsafe { Platform::discover(DTB_FALLBACK) });
    let Ok(platform) = platform else { power_off(None, exit_code::NO_DTB) };
    if let Some(base) = platform.uart {
        // SAFETY: the device tree's console UART, inside the Device block of
        // the early map; this is its only driver.
        *CONSOLE.lock() = Some(unsafe { Pl011::new(base) });
    }
    let how = platform.psci.map(PowerOff::Psci);
    *POWER_OFF.lock() = how;
    if el != 2 {
        print!("rvm: RVM must be entered at EL2 (hypervisor mode), but the CPU started at EL{el}.\n");
        print!("rvm: boot QEMU with '-machine virt,virtualization=on', or the board's firmware at EL2. Powering off.\n");
        power_off(how, exit_code::WRONG_EL);
    }
    let Some(heap_at) = heap::place(&platform) else {
        print!("rvm: the RAM bank that holds the image has no room for the hypervisor's heap ({} MiB). Powering off.\n", rvm_kernel::memory::quota::EL2_HEAP_BYTES >> 20);
        power_off(how, exit_code::NO_MEMORY);
    };
    heap::init(heap_at);
    let heap_bytes = usize::try_from(heap_at.len()).unwrap_or(0);
    print!("\nRVM {} — AArch64 microhypervisor at EL2\n", env!("CARGO_PKG_VERSION"));
    print!("rvm: machine '{}', {} CPUs, counter {} Hz\n", platform.model, platform.cpus, rvm_hal::timer::frequency());
    for r in &platform.memory {
        print!("rvm: RAM {:#x}..{:#x} ({} MiB)\n", r.start.raw(), r.end.raw(), r.len() >> 20);
    }
    print!(
        "rvm: UART {:#x}, GICv{} dist {:#x} redist {:#x}, hyp timer INTID {}, PSCI via {:?}\n",
        platform.uart.unwrap_or(0),
        platform.gic_version,
        platform.gicd.unwrap_or(0),
        platform.gicr.unwrap_or(0),
        platform.hyp_timer_intid,
        platform.psci
    );
    wx::install(&platform);
    rvm_hal::vectors::install(smp::percpu(0));
    rvm_hal::cpu::init_el2();
    rvm_hal::pmu::lend_to_el1(platform.bootarg("rvm.bench") == Some("pmu"));
    rvm_hal::pmu::enable();
    wx::self_test(0);
    let sha = if platform.bootarg("rvm.sha2") == Some("off") {
        "portable (rvm.sha2=off)"
    } else if rvm_hal::sha2ce::available() && rvm_witness::sha256::self_test(rvm_hal::sha2ce::compress) {
        rvm_witness::sha256::install_compress(rvm_hal::sha2ce::compress);
        "Armv8 SHA-2 instructions"
    } else {
        "portable"
    };
    print!("rvm: SHA-256 via {sha}\n");
    let gic = match (platform.gic_version, platform.gicd, platform.gicr) {
        // SAFETY: the device tree's GICv3 blocks, Device-mapped; boot CPU only.
        (3, Some(d), Some(r)) => unsafe { Gic::init(d, r, sysreg::mpidr()) },
        _ => None,
    };
    match &gic {
        Some(g) => {
            g.enable_ppi(platform.hyp_timer_intid);
            g.enable_sgi(rvm_hal::gic::KICK_SGI);
        }
        None => print!("rvm: warning: no GICv3: guests are not preempted by the timer\n"),
    }
    // SAFETY: the device tree's virtio-mmio slots, Device-mapped by the
    // EL2 map on every CPU; nothing else drives them; boot CPU only, before
    // the kernel sends any frame.
    match unsafe { rvm_hal::control::init(&platform.virtio_mmio) } {
        Some(base) => print!("rvm: control channel: virtio console at {base:#x} (witness and journal frames in binary)\n"),
        None => print!("rvm: no control channel (no virtio console): witness and journal frames on the console\n"),
    }
    let online = smp::start_secondaries(&platform, gic.is_some());
    print!("rvm: {} of {} CPUs online (secondaries via PSCI CPU_ON), one run queue each\n", online, platform.cpus);
    let Some(initrd) = platform.initrd else {
        print!("rvm: no bundle: pass one as the initrd (qemu -initrd bundle.rvm). Powering off.\n");
        power_off(how, exit_code::NO_BUNDLE);
    };
    print!("rvm: bundle at {:#x} ({} bytes)\n", initrd.start.raw(), initrd.len());
    let free = memory::free_ranges(&platform, &[heap::image(), heap::range()]);
    let frames = FrameAllocator::new(&free);
    print!(
        "rvm: {} MiB free for partitions, hypervisor heap {} MiB\n",
        (frames.frames_total() * 4096) >> 20,
        heap_bytes >> 20
    );
    // SAFETY: the initrd range comes from the device tree, lies in RAM
    // (identity-mapped, writable at EL2), is excluded from the frame pool
    // above, and nothing else refers to it: this is the only reference,
    // and it lives until the end of this function.
    let bundle = unsafe { core::slice::from_raw_parts_mut(initrd.start.raw() as *mut u8, initrd.len() as usize) };
    let mut ram = heapless::Vec::new();
    for r in &platform.memory {
        let _ = ram.push(*r);
    }
    let mut machine = Machine::new(ram);
    // Idle CPUs are woken by a kick (SGI) when work arrives for them;
    // `rvm.kick=off` leaves them to their next tick (to measure the
    // difference).
    let kicks = platform.bootarg("rvm.kick") != Some("off");
    if gic.is_some() && kicks {
        machine = machine.with_kicks(&smp::affinities(online));
    }
    print!("rvm: idle CPUs woken by {}\n", if gic.is_some() && kicks { "a kick (SGI) when work arrives" } else { "their tick only" });
    let boot_ns = rvm_hal::timer::Clock::new().ticks_to_ns(rvm_hal::timer::counter() - t0);
    print!("rvm: platform up in {} us\n", boot_ns / 1000);
    let booted = Hypervisor::boot(machine, Memory { frames, heap_bytes }, bundle);
    // The signer holds the witness key now (or the bundle was refused):
    // the initrd's copy of its seed goes, on either path.
    let scrubbed = rvm_kernel::witness::scrub_bundle_secrets(bundle);
    print!("rvm: witness key seed scrubbed from the bundle ({} bytes zeroed)\n", scrubbed);
    let hv = match booted {
        Ok(hv) => hv,
        Err(e) => {
            print!("rvm: bundle refused: {:?}. Powering off.\n", e);
            power_off(how, exit_code::BAD_BUNDLE);
        }
    };
    let mut cpu = Cpu::new(CpuId::BOOT, gic.is_some(), platform.hyp_timer_intid);
    smp::run_all(hv, online, &mut cpu);
    print!("rvm: powering off\n");
    power_off(how, exit_code::OK)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // The console lock may be held by the code that panicked: take it after
    // a while anyway rather than deadlock on the way out.
    rvm_hal::machine::reclaim_console();
    print!("\nrvm: PANIC: {}\n", info);
    let how = *POWER_OFF.lock();
    power_off(how, exit_code::PANIC)
}
