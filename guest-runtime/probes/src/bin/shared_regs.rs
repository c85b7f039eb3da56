//! Probe: touch one register the partitions on a CPU would share if EL1
//! could reach it (PMU, debug, physical timer, auxiliary control,
//! set/way cache maintenance), chosen by the probe's input
//! (the register's name and the access, e.g. `pmccntr_el0 read`). The
//! hypervisor traps each such access (EC 0x18) and faults the partition; if
//! the access returns instead, the probe says so and exits with
//! [`EXIT_NOT_ISOLATED`](rvm_guest_probes::EXIT_NOT_ISOLATED).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use rvm_el1::arch::probe::{shared_reg, SharedReg};
use rvm_el1::el1_println as println;
use rvm_guest_probes::{finish, start, EXIT_BAD_TARGET, EXIT_NOT_ISOLATED};

rvm_el1::el1_main!(main);

/// Every access the probe knows, by the name its input gives.
const ACCESSES: [(&str, SharedReg); 13] = [
    ("pmccntr_el0 read", SharedReg::PmccntrRead),
    ("pmcr_el0 write", SharedReg::PmcrWrite),
    ("mdscr_el1 read", SharedReg::MdscrRead),
    ("dbgbvr0_el1 read", SharedReg::Dbgbvr0Read),
    ("dbgbvr0_el1 write", SharedReg::Dbgbvr0Write),
    ("oslsr_el1 read", SharedReg::OslsrRead),
    ("mdrar_el1 read", SharedReg::MdrarRead),
    ("cntp_ctl_el0 read", SharedReg::CntpCtlRead),
    ("cntp_ctl_el0 write", SharedReg::CntpCtlWrite),
    ("cntp_cval_el0 read", SharedReg::CntpCvalRead),
    ("cntp_cval_el0 write", SharedReg::CntpCvalWrite),
    ("actlr_el1 write", SharedReg::ActlrWrite),
    ("dc cisw write", SharedReg::DcSetWay),
];

fn main(boot_info: u64) -> ! {
    let s = start("shared-regs", boot_info);
    let input = core::str::from_utf8(s.input()).unwrap_or("");
    let Some(&(name, reg)) = ACCESSES.iter().find(|(n, _)| *n == input) else {
        println!("probe shared-regs: unknown access {input:?}");
        finish(EXIT_BAD_TARGET)
    };
    println!("probe shared-regs: {name}");
    let v = shared_reg(reg);
    println!("probe shared-regs: FAILED: {name} was not trapped (value {v:#x})");
    finish(EXIT_NOT_ISOLATED)
}
