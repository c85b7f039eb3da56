//! Faults of a partition. A fault stops that partition only; the others keep
//! running.
//!
//! The walking skeleton applies F3 (fence) to every hardware-level fault — a
//! stage-2 violation, an SMC, an undefined instruction — as DESIGN section 7
//! prescribes for stage-2 violations. The graduated F1/F2 steps for agent
//! traps belong to the recovery policy.

use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome};

use crate::arch::Arch;
use crate::console;
use crate::hypervisor::{name_str, Hypervisor};
use crate::partition::PartitionState;
use crate::trap::{Exit, FaultStatus};

/// A short description of a faulting exit.
pub struct Described(pub Exit);

impl core::fmt::Display for Described {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = |fs: FaultStatus| match fs {
            FaultStatus::Translation(_) => "unmapped",
            FaultStatus::Permission(_) => "permission",
            FaultStatus::AccessFlag(_) => "access flag",
            FaultStatus::Other(_) => "other",
        };
        match self.0 {
            Exit::DataAbort { ipa, write, fault } => write!(
                f,
                "stage-2 {} fault on {} of {}",
                kind(fault),
                if write { "write" } else { "read" },
                ipa
            ),
            Exit::InstructionAbort { ipa, fault } => {
                write!(f, "stage-2 {} fault on instruction fetch at {}", kind(fault), ipa)
            }
            Exit::Smc => write!(f, "SMC from a partition"),
            Exit::Undefined { esr } => write!(f, "undefined instruction (esr {esr:#x})"),
            Exit::Other { esr } => write!(f, "unhandled exception (esr {esr:#x})"),
            Exit::Hvc { imm } => write!(f, "hvc #{imm}"),
            Exit::WaitForInterrupt => write!(f, "wfi"),
            Exit::Timer => write!(f, "timer"),
        }
    }
}

/// Record the fault and fence the partition (F3): vCPU stopped, capabilities
/// suspended, memory kept for forensics.
pub(crate) fn partition_fault<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, exit: Exit) {
    let p = &mut hv.partitions[idx];
    p.stats.faults += 1;
    let (id, name, pc) = (p.id, p.desc.name, p.vcpu.regs.pc);
    console::flush_line(&mut hv.arch, &mut hv.partitions[idx]);
    console::hyp_line(
        &mut hv.arch,
        format_args!("partition {} '{}' fault: {} at pc {:#x}; fenced (F3)", id.0, name_str(&name), Described(exit), pc),
    );
    let detail = match exit {
        Exit::DataAbort { ipa, .. } | Exit::InstructionAbort { ipa, .. } => ipa.raw(),
        Exit::Undefined { esr } | Exit::Other { esr } => esr,
        _ => 0,
    };
    let args = crate::digest::of_parts(&[&detail.to_le_bytes(), &pc.to_le_bytes()]);
    hv.kernel_event(id, KernelEvent::Fault, Outcome::Denied(HvError::BadAddress), args);
    fence(hv, idx);
}

/// F3: stop the vCPU and suspend the partition's capabilities.
pub(crate) fn fence<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) {
    let id = hv.partitions[idx].id;
    hv.caps.suspend(id);
    hv.transition(idx, PartitionState::Fenced, KernelEvent::RecoverFence, [0; 16]);
}

/// Return every private frame (scrubbed) and the stage-2 tables' frames.
pub(crate) fn release<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) {
    let frames = core::mem::take(&mut hv.partitions[idx].private_frames);
    for pa in frames {
        hv.scrub_and_free(pa);
    }
}
