//! PSCI calls from partitions, emulated per partition and never passed
//! through: SYSTEM_OFF ends the partition, not the machine.

use rvm_abi::hypercall::psci;
use rvm_abi::witness::KernelEvent;
use rvm_abi::Outcome;

use crate::arch::Arch;
use crate::console;
use crate::partition::name_str;
use crate::running::trap::Flow;
use crate::state::Hypervisor;
use crate::partition::PartitionState;

/// PSCI 1.1.
const PSCI_VERSION_1_1: i64 = 0x0001_0001;

pub(crate) fn call<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Flow {
    let x = hv.partitions[idx].vcpu().regs.x;
    let function = u32::try_from(x[0]).unwrap_or(0);
    let id = hv.partitions[idx].id();
    let args = rvm_state::digest::of_parts(&[&x[0].to_le_bytes(), &x[1].to_le_bytes()]);
    let witnessed = hv.kernel_event(id, KernelEvent::Psci, Outcome::Done, args);
    if !witnessed && !matches!(function, psci::SYSTEM_OFF | psci::CPU_OFF) {
        // Fail-closed: an unwitnessed call is not answered. Turning off is
        // carried out regardless (stopping is the safe answer; `finish`
        // witnesses it as it can).
        hv.partitions[idx].vcpu_mut().set_return(psci::DENIED, &[]);
        return Flow::Resume;
    }
    let vcpu = hv.partitions[idx].vcpu_mut();
    match function {
        psci::VERSION => vcpu.set_return(PSCI_VERSION_1_1, &[]),
        psci::FEATURES => {
            let supported = matches!(
                u32::try_from(x[1]).unwrap_or(0),
                psci::VERSION | psci::FEATURES | psci::SYSTEM_OFF | psci::CPU_OFF
            );
            vcpu.set_return(if supported { psci::SUCCESS } else { psci::NOT_SUPPORTED }, &[]);
        }
        psci::SYSTEM_OFF | psci::CPU_OFF => {
            finish(hv, idx, 0);
            return Flow::Reschedule;
        }
        psci::SYSTEM_RESET => vcpu.set_return(psci::DENIED, &[]),
        // One vCPU per partition so far: there is no other vCPU to start.
        psci::CPU_ON_64 => vcpu.set_return(psci::NOT_SUPPORTED, &[]),
        _ => vcpu.set_return(psci::NOT_SUPPORTED, &[]),
    }
    Flow::Resume
}

/// The partition's agent is done: record why and stop scheduling it. A code
/// that reports a failure (a trap, a runtime panic, a failed restore) is not
/// an end but a fault: the recovery policy answers it.
pub(crate) fn finish<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, code: u64) {
    if rvm_abi::bootinfo::exit::is_failure(code) && hv.partitions[idx].is_runnable() {
        crate::recovery::fault::guest_failure(hv, idx, code);
        return;
    }
    let p = &mut hv.partitions[idx];
    p.set_exit_code(code);
    let (id, name) = (p.id(), p.desc().name);
    hv.partitions[idx].console_flush(&mut hv.arch);
    if rvm_abi::bootinfo::exit::is_refusal(code) {
        console::hyp_line(
            &mut hv.arch,
            format_args!(
                "partition {} '{}' refused its module: {}",
                id.0,
                name_str(&name),
                rvm_abi::bootinfo::exit::reason(code)
            ),
        );
        hv.must_witness(
            id,
            KernelEvent::PartitionRefused,
            Outcome::Denied(rvm_abi::HvError::InvalidArgument),
            rvm_state::digest::of_parts(&[&code.to_le_bytes()]),
        );
        hv.note_refused();
    } else {
        console::hyp_line(
            &mut hv.arch,
            format_args!("partition {} '{}' exited: code {:#x} ({})", id.0, name_str(&name), code, rvm_abi::bootinfo::exit::reason(code)),
        );
    }
    hv.transition(idx, PartitionState::Finished, KernelEvent::PartitionExit, rvm_state::digest::of_parts(&[&code.to_le_bytes()]));
}
