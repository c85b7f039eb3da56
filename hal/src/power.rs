//! Ending a run: the exit status on the console as the exit frame
//! (`rvm_abi::frame::ExitFrame`, `@X <code>`), then PSCI SYSTEM_OFF. RVM
//! never uses semihosting: a machine that serves it would serve its guests
//! too (`hlt #0xf000` at EL1 reaches QEMU before EL2 sees it).

use rvm_abi::frame::ExitFrame;
use rvm_abi::hypercall::psci;

use crate::dtb::Conduit;

/// Call the firmware's PSCI through `conduit`.
pub fn psci_call(conduit: Conduit, function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let mut x0 = u64::from(function);
    // SAFETY: a PSCI call through the firmware's advertised conduit follows
    // the SMC calling convention: x0-x3 in, x0 out, x4-x17 may be clobbered.
    unsafe {
        match conduit {
            Conduit::Smc => core::arch::asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
            Conduit::Hvc => core::arch::asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
        }
    }
    x0 as i64
}

/// How the machine is switched off at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOff {
    /// PSCI SYSTEM_OFF (boards, and QEMU, which then exits 0).
    Psci(Conduit),
}

/// Print the exit frame with `code` (0 = success), then power off. Never
/// returns. The frame is one console write, so it is a whole line of its
/// own; without a console (no device tree) nothing can say how the run
/// ended, and a host reading the console sees a run that did not finish.
pub fn power_off(how: Option<PowerOff>, code: u32) -> ! {
    // Frames still buffered for the control channel (a panic, an EL2
    // exception) go before the exit frame, if the host takes them within
    // 200 ms; a channel held by the CPU that failed is left as it is.
    let _ = crate::control::drain(200_000_000);
    crate::machine::console_write(ExitFrame { code }.encode().as_bytes());
    match how {
        Some(PowerOff::Psci(c)) => {
            psci_call(c, psci::SYSTEM_OFF, 0, 0, 0);
        }
        None => {}
    }
    loop {
        // Waiting for an interrupt that will not come; nothing else runs.
        aarch64_cpu::asm::wfi();
    }
}
