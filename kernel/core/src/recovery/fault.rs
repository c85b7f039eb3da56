//! Faults of a partition and the recovery steps that answer them. A fault
//! touches that partition only; the others keep running.
//!
//! Every fault goes through the partition's [`RecoveryState`](crate::recovery::policy::RecoveryState),
//! which picks the class (F1–F4, escalating with the history); this module
//! applies it. Each step is witnessed in the partition's log — the fault
//! (`Fault`, with what happened), then the step (`RecoverRestart`,
//! `RecoverRollback`, `RecoverFence`, `RecoverEvict`, `Unfence`, with
//! [`RecoveryArgs`]). A restart or rollback whose record cannot be written
//! does not happen: the partition is fenced instead (stopping a faulty
//! partition is always safe).

use rvm_abi::hypercall::{smccc_owner, SMCCC_OWNER_STANDARD};
use rvm_abi::recovery::{self, RecoveryArgs};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Hypercall, Outcome};

use crate::arch::Arch;
use crate::console;
use crate::partition::name_str;
use crate::running::trap::Flow;
use crate::state::Hypervisor;
use crate::partition::PartitionState;
use crate::recovery::policy::{RecoveryClass, Trigger, ValidationResponse};
use crate::recovery::restart::StartFrom;
use crate::running::trap::{Exit, FaultStatus};

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
            Exit::Undefined { esr } if (esr >> 26) & 0x3f == crate::running::trap::ec::SYSREG => {
                // ISS: Op0 [21:20], Op2 [19:17], Op1 [16:14], CRn [13:10],
                // CRm [4:1], direction [0] (1 = read).
                let field = |at: u32, bits: u32| (esr >> at) & ((1 << bits) - 1);
                write!(
                    f,
                    "trapped system register access (esr {esr:#x}): {} S{}_{}_C{}_C{}_{}",
                    if esr & 1 == 1 { "mrs" } else { "msr" },
                    field(20, 2),
                    field(14, 3),
                    field(10, 4),
                    field(1, 4),
                    field(17, 3)
                )
            }
            Exit::Undefined { esr } => write!(f, "undefined instruction (esr {esr:#x})"),
            Exit::Other { esr } => write!(f, "unhandled exception (esr {esr:#x})"),
            Exit::Hvc { imm } => write!(f, "hvc #{imm}"),
            Exit::WaitForInterrupt => write!(f, "wfi"),
            Exit::Timer => write!(f, "timer"),
        }
    }
}

/// Why an operator's order was not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// No partition has that id.
    NoSuchPartition,
    /// Unfence of a partition that is not fenced.
    NotFenced,
    /// Eviction of a partition already evicted (or refused).
    AlreadyEvicted,
    /// The guest could not be recreated (out of frames); it stays fenced.
    Recreate(HvError),
}

fn class_code(class: RecoveryClass) -> u8 {
    match class {
        RecoveryClass::Restart => recovery::class::RESTART,
        RecoveryClass::Rollback => recovery::class::ROLLBACK,
        RecoveryClass::Fence => recovery::class::FENCE,
        RecoveryClass::Evict => recovery::class::EVICT,
    }
}

fn event_of(class: RecoveryClass) -> KernelEvent {
    match class {
        RecoveryClass::Restart => KernelEvent::RecoverRestart,
        RecoveryClass::Rollback => KernelEvent::RecoverRollback,
        RecoveryClass::Fence => KernelEvent::RecoverFence,
        RecoveryClass::Evict => KernelEvent::RecoverEvict,
    }
}

fn args<A: Arch>(hv: &Hypervisor<A>, idx: usize, class: u8, trigger: u8, snapshot_id: u64) -> [u8; 16] {
    RecoveryArgs {
        class,
        trigger,
        committed_items: u32::try_from(hv.stores[idx].committed_items()).unwrap_or(u32::MAX),
        snapshot_id,
    }
    .to_bytes()
}

/// A hardware-level fault (stage-2 abort outside the heap, SMC, undefined
/// instruction, anything else from EL1): recorded, then F3.
pub(crate) fn partition_fault<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, exit: Exit) {
    let trigger = match exit {
        Exit::DataAbort { .. } | Exit::InstructionAbort { .. } => Trigger::Stage2Violation,
        _ => Trigger::HardwareFault,
    };
    let p = &mut hv.partitions[idx];
    p.count_fault();
    let pc = p.vcpu().regs.pc;
    let detail = match exit {
        Exit::DataAbort { ipa, .. } | Exit::InstructionAbort { ipa, .. } => ipa.raw(),
        Exit::Undefined { esr } | Exit::Other { esr } => esr,
        _ => 0,
    };
    record_fault(hv, idx, trigger, HvError::BadAddress, &[&detail.to_le_bytes(), &pc.to_le_bytes()]);
    respond(hv, idx, trigger, format_args!("fault: {} at pc {:#x}", Described(exit), pc));
}

/// The guest runtime reported a failure through `Exit` (`exit::is_failure`).
pub(crate) fn guest_failure<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, code: u64) {
    let trigger = match code {
        rvm_abi::bootinfo::exit::RUNTIME_PANIC => Trigger::RuntimePanic,
        rvm_abi::bootinfo::exit::RESTORE_FAILED => Trigger::RestoreFailed,
        _ => Trigger::Trap,
    };
    hv.partitions[idx].count_fault();
    record_fault(hv, idx, trigger, HvError::InvalidArgument, &[&code.to_le_bytes()]);
    respond(hv, idx, trigger, format_args!("{} (exit code {code:#x})", trigger.describe()));
}

/// Look at a hypercall's status once it was handled (`function` is the `x0`
/// the guest passed): a failed validation or the last straw of abuse starts
/// a recovery step. Calls that succeeded cost one comparison here.
#[inline]
pub(crate) fn after_call<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, function: u64, flow: Flow) -> Flow {
    let status = i64::from_ne_bytes(hv.partitions[idx].vcpu().regs.x[0].to_ne_bytes());
    if status >= 0 {
        return flow;
    }
    denied_call(hv, idx, function, status, flow)
}

/// The slow half of [`after_call`]: a call that was refused.
#[cold]
#[inline(never)]
fn denied_call<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, function: u64, status: i64, flow: Flow) -> Flow {
    // PSCI and other standard SMCCC services answer with their own codes.
    if u32::try_from(function).is_ok_and(|id| smccc_owner(id) == SMCCC_OWNER_STANDARD) {
        return flow;
    }
    let Some(error) = HvError::from_code(status) else {
        return flow;
    };
    if !hv.partitions[idx].is_runnable() {
        return flow;
    }
    let call = Hypercall::from_function_id(function);
    let p = &hv.partitions[idx];
    if let Some(call) = call.filter(|c| matches!(c, Hypercall::StateValidate | Hypercall::StateCommit)) {
        if error == HvError::ValidationFailed && p.recovery().policy.on_failed_validation == ValidationResponse::Rollback {
            record_fault(hv, idx, Trigger::FailedValidation, error, &[&[call as u8]]);
            respond(hv, idx, Trigger::FailedValidation, format_args!("{}: {}", call.name(), Trigger::FailedValidation.describe()));
            return Flow::Reschedule;
        }
    }
    // An unknown function ID counts like any other refusal.
    let op = call.map_or((function & 0x7fff) as u16, |c| c as u16);
    note_refusal(hv, idx, op, error, flow)
}

/// A refused `hvc` that is no RVM call at all (`hvc #imm` with `imm ≠ 0`,
/// `op` = [`HVC_IMMEDIATE_OP`]): counted toward abuse like any refusal.
pub(crate) fn after_refusal<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, op: u16, flow: Flow) -> Flow {
    let status = i64::from_ne_bytes(hv.partitions[idx].vcpu().regs.x[0].to_ne_bytes());
    match HvError::from_code(status) {
        Some(error) if hv.partitions[idx].is_runnable() => note_refusal(hv, idx, op, error, flow),
        _ => flow,
    }
}

/// Count a refusal with `error` of the call `op`; the last straw of the
/// partition's abuse policy fences it (F3).
fn note_refusal<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, op: u16, error: HvError, flow: Flow) -> Flow {
    let now = hv.arch.now_ns();
    if hv.partitions[idx].recovery_mut().note_denial(error, now) {
        let a = hv.partitions[idx].recovery().policy.abuse;
        hv.partitions[idx].vcpu_mut().set_return(HvError::Abuse.code(), &[]);
        record_fault(hv, idx, Trigger::HypercallAbuse, HvError::Abuse, &[&op.to_le_bytes()]);
        respond(
            hv,
            idx,
            Trigger::HypercallAbuse,
            format_args!(
                "{}: {} invalid calls within {} ms",
                Trigger::HypercallAbuse.describe(),
                a.limit.unwrap_or(0),
                a.window_ns / 1_000_000
            ),
        );
        return Flow::Reschedule;
    }
    flow
}

/// Append the `Fault` record: what happened, before anything is done.
fn record_fault<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, trigger: Trigger, error: HvError, detail: &[&[u8]]) {
    let id = hv.partitions[idx].id();
    let code = [trigger.code()];
    let mut parts: heapless::Vec<&[u8], 4> = heapless::Vec::new();
    let _ = parts.push(&code);
    for d in detail.iter().take(3) {
        let _ = parts.push(d);
    }
    let args = rvm_state::digest::of_parts(&parts);
    // A fault happened whether or not a log takes its record.
    hv.must_witness(id, KernelEvent::Fault, Outcome::Denied(error), args);
}

/// Decide the class for `trigger` and apply it; `what` says what happened.
pub(crate) fn respond<A: Arch>(
    hv: &mut Hypervisor<A>,
    idx: usize,
    trigger: Trigger,
    what: core::fmt::Arguments<'_>,
) -> RecoveryClass {
    let now = hv.arch.now_ns();
    let class = hv.partitions[idx].recovery_mut().decide(trigger, now);
    let (id, name) = (hv.partitions[idx].id(), hv.partitions[idx].desc().name);
    hv.partitions[idx].console_flush(&mut hv.arch);
    match class {
        RecoveryClass::Restart | RecoveryClass::Rollback => {
            let (from, resume) = if class == RecoveryClass::Rollback {
                (StartFrom::LastSnapshot, hv.partitions[idx].snapshot().map_or(0, |c| c.id))
            } else {
                (StartFrom::Pristine, 0)
            };
            let items = match (class, hv.partitions[idx].snapshot()) {
                (RecoveryClass::Rollback, Some(ck)) => ck.store.len(),
                _ => hv.stores[idx].committed_items(),
            };
            let before = hv.stores[idx].committed_items();
            let mut a = RecoveryArgs::from_bytes(&args(hv, idx, class_code(class), trigger.code(), resume));
            a.committed_items = u32::try_from(items).unwrap_or(u32::MAX);
            if !hv.kernel_event(id, event_of(class), Outcome::Done, a.to_bytes()) {
                console::hyp_line(&mut hv.arch, format_args!("partition {} '{}' {what}; recovery record refused: fenced (F3)", id.0, name_str(&name)));
                fence(hv, idx, trigger);
                return RecoveryClass::Fence;
            }
            let started = hv.arch.now_ns();
            if let Err(e) = crate::recovery::restart::recreate(hv, idx, from) {
                console::hyp_line(
                    &mut hv.arch,
                    format_args!("partition {} '{}' {what}; could not be recreated ({}): fenced (F3)", id.0, name_str(&name), e.name()),
                );
                fence(hv, idx, trigger);
                return RecoveryClass::Fence;
            }
            let took = hv.arch.now_ns().saturating_sub(started);
            hv.partitions[idx].recovery_mut().record(class, now);
            let from_text = match (class, resume) {
                (RecoveryClass::Restart, _) => alloc::string::String::from("from the pristine image"),
                (_, 0) => alloc::string::String::from("to the pristine image (no snapshot yet)"),
                (_, ck) => alloc::format!("to snapshot {ck}"),
            };
            console::hyp_line(
                &mut hv.arch,
                format_args!(
                    "partition {} '{}' {what}; {} {from_text} ({}) in {took} ns, {before} committed items before, {} after",
                    id.0,
                    name_str(&name),
                    class.action(),
                    class.label(),
                    hv.stores[idx].committed_items()
                ),
            );
        }
        RecoveryClass::Fence => {
            let items = hv.stores[idx].committed_items();
            console::hyp_line(
                &mut hv.arch,
                format_args!("partition {} '{}' {what}; fenced (F3), {items} committed items kept", id.0, name_str(&name)),
            );
            fence(hv, idx, trigger);
        }
        RecoveryClass::Evict => {
            if hv.partitions[idx].state() != PartitionState::Fenced && hv.partitions[idx].state() != PartitionState::Finished {
                fence(hv, idx, trigger);
            }
            let items = hv.stores[idx].committed_items();
            console::hyp_line(
                &mut hv.arch,
                format_args!("partition {} '{}' {what}; evicted (F4), {items} committed items kept by the hypervisor", id.0, name_str(&name)),
            );
            evict(hv, idx, trigger);
        }
    }
    class
}

/// F3: stop the vCPU and suspend the partition's capabilities; memory is
/// kept for forensics.
pub(crate) fn fence<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, trigger: Trigger) {
    let id = hv.partitions[idx].id();
    let a = args(hv, idx, recovery::class::FENCE, trigger.code(), 0);
    hv.caps.suspend(id);
    hv.transition(idx, PartitionState::Fenced, KernelEvent::RecoverFence, a);
    let now = hv.arch.now_ns();
    hv.partitions[idx].recovery_mut().record(RecoveryClass::Fence, now);
}

/// F4: the final record, then every capability revoked (with what was
/// derived from them) and all memory scrubbed and returned. The committed
/// state store stays with the hypervisor (it is what an operator exports).
pub(crate) fn evict<A: Arch>(hv: &mut Hypervisor<A>, idx: usize, trigger: Trigger) {
    let id = hv.partitions[idx].id();
    let a = args(hv, idx, recovery::class::EVICT, trigger.code(), 0);
    hv.transition(idx, PartitionState::Evicted, KernelEvent::RecoverEvict, a);
    hv.caps.evict(id);
    crate::load::release(hv, idx);
    let now = hv.arch.now_ns();
    hv.partitions[idx].recovery_mut().record(RecoveryClass::Evict, now);
    hv.note_evicted();
    // Its log takes no more records: its head is signed now, so a machine
    // that dies later leaves that log whole.
    hv.witness.checkpoint(&mut hv.arch, id.0);
}

/// An operator's unfence: capabilities resumed, the guest recreated from
/// its last snapshot (or the pristine image), running again.
pub(crate) fn unfence<A: Arch>(hv: &mut Hypervisor<A>, idx: usize) -> Result<u64, OrderError> {
    if hv.partitions[idx].state() != PartitionState::Fenced {
        return Err(OrderError::NotFenced);
    }
    let id = hv.partitions[idx].id();
    // Room for the `Unfence` record before anything changes: a partition is
    // never let run again unwitnessed.
    let mut held = hv.hold(id, 1).ok_or(OrderError::Recreate(HvError::WitnessUnavailable))?;
    let resume = match crate::recovery::restart::recreate(hv, idx, StartFrom::LastSnapshot) {
        Ok(resume) => resume,
        Err(e) => {
            hv.release(held);
            return Err(OrderError::Recreate(e));
        }
    };
    hv.caps.resume(id);
    let a = args(hv, idx, recovery::class::UNFENCE, recovery::trigger::OPERATOR, resume);
    hv.transition_held(&mut held, idx, PartitionState::Running, KernelEvent::Unfence, a);
    hv.partitions[idx].recovery_mut().unfenced();
    let name = hv.partitions[idx].desc().name;
    console::hyp_line(
        &mut hv.arch,
        format_args!("partition {} '{}' unfenced by the operator; resumed from snapshot {resume}", id.0, name_str(&name)),
    );
    Ok(resume)
}

/// Evict every fenced partition whose fence timed out.
pub(crate) fn expire_fences<A: Arch>(hv: &mut Hypervisor<A>) {
    let now = hv.arch.now_ns();
    for idx in 0..hv.partitions.len() {
        let p = &hv.partitions[idx];
        if p.state() == PartitionState::Fenced && p.recovery().fence_expired(now) {
            let ms = p.recovery().policy.fence_timeout_ns.unwrap_or(0) / 1_000_000;
            respond(hv, idx, Trigger::FenceTimeout, format_args!("fence not cleared within {ms} ms"));
        }
    }
}

