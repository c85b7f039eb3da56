//! Decoding why a guest stopped running (ESR_EL2 and friends).

use crate::memory::addr::Ipa;
use crate::arch::{TrapInfo, TrapKind};

/// What to do after handling an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Re-enter the same vCPU.
    Resume,
    /// Give the CPU to the next partition.
    Reschedule,
    /// The guest gave up the rest of its slice (`Yield`, `wfi`).
    Yielded,
    /// The guest waits in a call (a `ChannelRecv` that may block): it gives
    /// up the CPU until the call is answered, charged only what it ran.
    Waiting,
}

/// Exception classes (ESR_ELx.EC) the kernel handles.
pub(crate) mod ec {
    pub const WFX: u64 = 0x01;
    pub const HVC64: u64 = 0x16;
    pub const SMC64: u64 = 0x17;
    pub const SYSREG: u64 = 0x18;
    pub const IABT_LOWER: u64 = 0x20;
    pub const DABT_LOWER: u64 = 0x24;
    pub const UNKNOWN: u64 = 0x00;
}

/// A guest exit, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `hvc #imm`: a hypercall or PSCI call; arguments are in the registers.
    Hvc { imm: u16 },
    /// `smc`: partitions may not call the secure monitor.
    Smc,
    /// `wfi`/`wfe`: the guest is idle; treat as a yield.
    WaitForInterrupt,
    /// A data access the stage-2 tables did not allow.
    DataAbort { ipa: Ipa, write: bool, fault: FaultStatus },
    /// An instruction fetch the stage-2 tables did not allow.
    InstructionAbort { ipa: Ipa, fault: FaultStatus },
    /// The hypervisor's timer fired: the slice is over.
    Timer,
    /// An undefined instruction or a trapped system register access (EC
    /// 0x18: the PMU, debug and physical-timer registers the hypervisor
    /// traps because every partition on a CPU would share them). Either is
    /// a fault of the partition.
    Undefined { esr: u64 },
    /// Anything else: a fault of the partition.
    Other { esr: u64 },
}

/// The kind of a stage-2 fault (DFSC/IFSC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// No mapping at some level.
    Translation(u8),
    /// A mapping without the access flag.
    AccessFlag(u8),
    /// A mapping without the permission (e.g. a write to a read-only page).
    Permission(u8),
    /// Anything else (external abort, alignment, ...), raw code.
    Other(u8),
}

impl FaultStatus {
    fn decode(fsc: u64) -> Self {
        let fsc = (fsc & 0x3f) as u8;
        let level = fsc & 0x3;
        match fsc & 0x3c {
            0x04 => FaultStatus::Translation(level),
            0x08 => FaultStatus::AccessFlag(level),
            0x0c => FaultStatus::Permission(level),
            _ => FaultStatus::Other(fsc),
        }
    }
}

impl Exit {
    /// Decode the raw syndrome.
    pub fn decode(t: &TrapInfo) -> Exit {
        if t.kind == TrapKind::Irq {
            return Exit::Timer;
        }
        let class = (t.esr >> 26) & 0x3f;
        let iss = t.esr & 0x01ff_ffff;
        // HPFAR_EL2.FIPA holds IPA[47:12] in bits [43:4]; FAR gives the page offset.
        let ipa = Ipa::new(((t.hpfar >> 4) << 12) | (t.far & 0xfff));
        match class {
            ec::HVC64 => Exit::Hvc { imm: (iss & 0xffff) as u16 },
            ec::SMC64 => Exit::Smc,
            ec::WFX => Exit::WaitForInterrupt,
            ec::DABT_LOWER => Exit::DataAbort {
                ipa,
                write: iss & (1 << 6) != 0,
                fault: FaultStatus::decode(iss),
            },
            ec::IABT_LOWER => Exit::InstructionAbort { ipa, fault: FaultStatus::decode(iss) },
            ec::UNKNOWN | ec::SYSREG => Exit::Undefined { esr: t.esr },
            _ => Exit::Other { esr: t.esr },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(esr: u64, far: u64, hpfar: u64) -> TrapInfo {
        TrapInfo { kind: TrapKind::Sync, esr, far, hpfar }
    }

    #[test]
    fn decodes_the_exits_the_kernel_handles() {
        assert_eq!(Exit::decode(&sync(0x5a00_0000, 0, 0)), Exit::Hvc { imm: 0 });
        assert_eq!(Exit::decode(&sync(0x5e00_0000, 0, 0)), Exit::Smc);
        assert_eq!(Exit::decode(&sync(0x0600_0001, 0, 0)), Exit::WaitForInterrupt);
        // Data abort, write (WnR), level-3 translation fault at IPA 0x1234.
        let esr = (0x24 << 26) | (1 << 25) | (1 << 6) | 0x07;
        assert_eq!(
            Exit::decode(&sync(esr, 0x1234, 0x1 << 4)),
            Exit::DataAbort {
                ipa: Ipa::new(0x1234),
                write: true,
                fault: FaultStatus::Translation(3)
            }
        );
        let esr = (0x24 << 26) | 0x0f;
        assert!(matches!(
            Exit::decode(&sync(esr, 0, 0x40000 << 4)),
            Exit::DataAbort { write: false, fault: FaultStatus::Permission(3), .. }
        ));
        let irq = TrapInfo { kind: TrapKind::Irq, esr: 0, far: 0, hpfar: 0 };
        assert_eq!(Exit::decode(&irq), Exit::Timer);
        assert_eq!(Exit::decode(&sync(0x0200_0000, 0, 0)), Exit::Undefined { esr: 0x0200_0000 });
    }

    #[test]
    fn a_trapped_register_access_is_a_fault_of_the_partition() {
        // `mrs x0, pmccntr_el0` (S3_3_C9_C13_0, read) trapped by MDCR_EL2.TPM.
        let esr = (0x18 << 26) | (1 << 25) | (3 << 20) | (3 << 14) | (9 << 10) | (13 << 1) | 1;
        let exit = Exit::decode(&sync(esr, 0, 0));
        assert_eq!(exit, Exit::Undefined { esr });
        let text = alloc::format!("{}", crate::recovery::fault::Described(exit));
        assert_eq!(text, alloc::format!("trapped system register access (esr {esr:#x}): mrs S3_3_C9_C13_0"));
        // `msr cntp_ctl_el0, x0` (S3_3_C14_C2_1, write) trapped by CNTHCTL_EL2.EL1PCEN.
        let esr = (0x18 << 26) | (1 << 25) | (3 << 20) | (1 << 17) | (3 << 14) | (14 << 10) | (2 << 1);
        let text = alloc::format!("{}", crate::recovery::fault::Described(Exit::decode(&sync(esr, 0, 0))));
        assert!(text.ends_with("msr S3_3_C14_C2_1"), "{text}");
    }
}
