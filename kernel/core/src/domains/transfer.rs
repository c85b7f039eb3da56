//! The steps every move shares, whether a [`split`](super::split) or a
//! [`merge`](super::merge): transplanting the mover's capabilities (each
//! witnessed), re-pointing its channel ends and relocating it in the
//! registry, and recording the move.

use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome, WitnessOp, WitnessRecord};

use crate::arch::Arch;
use crate::channel::{Endpoint, Repointed};
use crate::domains::agent_table;
use crate::domains::moves::{Departure, Move};
use crate::partition::PartitionId;
use crate::state::Hypervisor;
use crate::witness::Reservation;

/// Transplant capability `raw` of partition `src` into `dst`'s table (same
/// slot and generation), witnessed in `dst`'s log with room `held`.
pub(crate) fn transplant_cap<A: Arch>(
    hv: &mut Hypervisor<A>,
    held: &mut Reservation,
    src: PartitionId,
    raw: u64,
    dst: PartitionId,
) -> Result<(), HvError> {
    let handle = hv.caps.transplant(src, raw, dst)?;
    let mut rec = WitnessRecord::new(WitnessOp::Event(KernelEvent::CapInstall), Outcome::Done, dst.0);
    rec.cap = handle.witness_id();
    rec.args = rvm_state::digest::of_parts(&[&src.0.to_le_bytes(), &raw.to_le_bytes()]);
    rec.timestamp = hv.arch.now_ns();
    hv.held_record(held, rec);
    Ok(())
}

/// `dep`'s agent now is `to`, in the partition at `into`: its channel ends
/// re-pointed, the registry told, its old table slot vacated (a restarted
/// runtime does not start it there again).
pub(crate) fn relocate<A: Arch>(hv: &mut Hypervisor<A>, dep: &Departure, to: Endpoint, into: usize) -> Repointed {
    let from = Endpoint { partition: hv.partitions[dep.partition].id(), slot: dep.slot };
    let repointed = crate::channel::repoint_all(&mut hv.channels, from, to);
    hv.domains.relocate(dep.agent, into);
    agent_table::vacate(hv, dep.partition, dep.slot);
    repointed
}

/// Record `dep`'s move to partition `to`, carried out at `now`.
pub(crate) fn record_move<A: Arch>(
    hv: &mut Hypervisor<A>,
    dep: &Departure,
    to: PartitionId,
    repointed: Repointed,
    handles: u32,
    image_bytes: u64,
    now: u64,
) {
    let (cut, internal) = dep.plan.weights();
    let from = hv.partitions[dep.partition].id();
    hv.domains.record_move(Move {
        kind: dep.plan.kind(),
        agent: dep.agent,
        from,
        to,
        cut,
        internal,
        channels: repointed.channels,
        queued: repointed.queued,
        handles,
        image_bytes,
        at_ns: now,
        took_ns: 0,
    });
}
