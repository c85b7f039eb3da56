//! Ending a run: PSCI SYSTEM_OFF for a clean power-off, semihosting
//! SYS_EXIT_EXTENDED when a test harness wants an exit code.

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
    /// PSCI SYSTEM_OFF (boards, and QEMU exits 0).
    Psci(Conduit),
    /// Semihosting SYS_EXIT_EXTENDED with the exit code (QEMU tests;
    /// selected by the boot argument `rvm.exit=semihosting`).
    Semihosting,
}

const SYS_EXIT_EXTENDED: u64 = 0x20;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

fn semihosting_exit(code: u32) {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // SAFETY: `hlt #0xf000` is the A64 semihosting trap; with semihosting
    // enabled the debugger (QEMU) reads the two-word parameter block we pass
    // in x1, which lives on this stack frame for the duration of the call.
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") SYS_EXIT_EXTENDED => _, in("x1") block.as_ptr(), options(nostack));
    }
}

/// Power off with `code` (0 = success). Never returns.
pub fn power_off(how: Option<PowerOff>, code: u32) -> ! {
    match how {
        Some(PowerOff::Semihosting) => semihosting_exit(code),
        Some(PowerOff::Psci(c)) => {
            psci_call(c, psci::SYSTEM_OFF, 0, 0, 0);
        }
        None => {}
    }
    loop {
        // SAFETY: waiting for an interrupt that will not come; nothing else runs.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
