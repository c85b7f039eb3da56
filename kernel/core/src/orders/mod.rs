//! Operator orders from the host: `unfence` and `evict`, given while the
//! hypervisor runs.
//!
//! Orders arrive on the console UART's receive side as one line each,
//! `@O <nonce> <order> <partition> <signature>` ([`OrderFrame`]), or on
//! the control channel as binary `Order` frames (`rvm_abi::control`). The
//! run loop's housekeeping calls [`poll`], which reads whatever input is
//! waiting on both (never blocking), assembles lines and frames and handles
//! each complete one:
//!
//! 1. parse it (a damaged `@O` line is refused; other input is ignored with
//!    a console line saying so);
//! 2. find the partition by name (unknown → refused);
//! 3. verify the Ed25519 signature over [`OrderFrame::message`] — which
//!    binds the order, the nonce, the partition and the digest of the bundle
//!    this hypervisor booted — with the operator key the bundle binds
//!    ([`EntryKind::OperatorKey`](rvm_abi::bundle::EntryKind::OperatorKey));
//!    no key or a bad signature → refused (`BadProof`);
//! 4. check the nonce exceeds every nonce accepted since boot (else
//!    `Replay`); a verified nonce is used up even if the order then has
//!    nothing to do;
//! 5. check there is something to do (unfence: the partition is fenced;
//!    evict: it is not already evicted), else refused;
//! 6. witness `OperatorOrder` in the partition's log, then apply the order
//!    through the kernel's own entry points ([`unfence`],
//!    [`evict`]), which witness the step itself.
//!
//! Every refusal is witnessed (`OrderRefused`, outcome = the reason; in the
//! partition's log, or the hypervisor's when no partition has the name)
//! and printed. The console lines start `rvm: order <nonce> ` so the host
//! can match the answer to the order it sent.
//!
//! Replay protection lasts one boot: the nonce floor starts at 0 when the
//! hypervisor boots, so the loader uses a clock-based nonce; the bundle
//! digest in the signed message confines an order to one boot, because every
//! bundle the host builds carries a fresh random
//! [`BootId`](rvm_abi::bundle::EntryKind::BootId) — a second boot of the same
//! deployment, even from a byte-identical rebuild of everything else, has
//! another digest. A bundle without a boot id accepts no order
//! ([`OrderRefusal::NoBootId`]).


use rvm_abi::control::Inbound;
use rvm_abi::frame::{OrderArgs, OrderFrame, OrderKind, HYPERVISOR_TARGET, MAX_ORDER_LINE};
use rvm_abi::witness::KernelEvent;
use rvm_abi::Outcome;

pub mod admission;
pub mod desk;

pub use desk::OrderRefusal;

use crate::arch::Arch;
use crate::console;
use crate::state::Hypervisor;
use crate::partition::{PartitionId, PartitionState};

/// Bytes read from the console or the control channel per read call (a
/// buffer on the housekeeping path, zeroed on every pass: 512 bytes cost a
/// yield 260 instructions).
const READ_CHUNK: usize = 64;
/// Most input bytes one [`poll`] consumes from the console, so a flood of
/// input cannot hold the run loop.
const POLL_BUDGET: usize = 4 * (MAX_ORDER_LINE + 2);
/// Most bytes one [`poll`] consumes from the control channel: enough that
/// an admission (megabytes) arrives in well under a second of housekeeping
/// turns, few enough that one turn stays short.
const CHANNEL_POLL_BUDGET: usize = 64 << 10;


/// Read and handle whatever operator input is waiting, on the console and
/// on the control channel. Called by the run loop's housekeeping, between
/// slices.
pub(crate) fn poll<A: Arch>(hv: &mut Hypervisor<A>) {
    let mut consumed = 0;
    let mut buf = [0u8; READ_CHUNK];
    while consumed < POLL_BUDGET {
        let n = hv.arch.console_read(&mut buf).min(READ_CHUNK);
        if n == 0 {
            break;
        }
        consumed += n;
        for &b in &buf[..n] {
            if let Some(line) = hv.orders.take(b) {
                handle_line(hv, &line);
            }
        }
    }
    poll_channel(hv);
}

/// The control channel's orders and admissions: binary frames, each order
/// checked as an `@O` line is. A broken frame ends the channel's input
/// (said once, and witnessed as a malformed order); what follows is still
/// read, and dropped, so the host's acknowledgements keep reaching the
/// driver. What was taken is credited to the host
/// ([`rvm_abi::control::HOST_WINDOW`]).
fn poll_channel<A: Arch>(hv: &mut Hypervisor<A>) {
    let mut consumed = 0;
    let mut buf = [0u8; READ_CHUNK];
    while consumed < CHANNEL_POLL_BUDGET {
        let n = hv.arch.channel_read(&mut buf).min(READ_CHUNK);
        if n == 0 {
            break;
        }
        consumed += n;
        for &b in &buf[..n] {
            take_channel_byte(hv, b);
        }
    }
    if consumed > 0 {
        let taken = hv.orders.note_taken(consumed as u64);
        hv.arch.send_frame(&rvm_abi::control::Outgoing::Credit { taken });
    }
}

/// One byte from the control channel.
fn take_channel_byte<A: Arch>(hv: &mut Hypervisor<A>, b: u8) {
    match hv.orders.inbound.push(b) {
        None => {}
        Some(Ok(Inbound::Order(order))) => handle_order(hv, &order),
        Some(Ok(Inbound::AdmissionBegins { nonce, signature, len })) => admission::begin(hv, nonce, signature, len),
        Some(Ok(Inbound::AdmissionByte(b))) => admission::byte(hv, b),
        Some(Ok(Inbound::AdmissionAbandoned)) => admission::abandon(hv),
        Some(Ok(Inbound::StateSaved { log, seq })) => crate::durable::saved(hv, log, seq),
        Some(Ok(Inbound::ToolAnswerBegins { log, seq, status, len })) => crate::tool_calls::begin(hv, log, seq, status, len),
        Some(Ok(Inbound::ToolAnswerByte(b))) => crate::tool_calls::byte(hv, b),
        Some(Err(e)) => {
            admission::abandon(hv);
            console::hyp_line(&mut hv.arch, format_args!("control channel input ignored from here on: {e}"));
            refuse(hv, None, "?", OrderArgs { order: 0, nonce: 0 }, OrderRefusal::Malformed);
        }
    }
}

/// Handle one complete input line.
fn handle_line<A: Arch>(hv: &mut Hypervisor<A>, line: &[u8]) {
    let Ok(text) = core::str::from_utf8(line) else {
        console::hyp_line(&mut hv.arch, format_args!("console input ignored: not UTF-8"));
        return;
    };
    if text.trim().is_empty() {
        return;
    }
    if !OrderFrame::is_order_line(text) {
        console::hyp_line(&mut hv.arch, format_args!("console input ignored: not an order ({} bytes)", text.len()));
        return;
    }
    let Some(order) = OrderFrame::parse(text) else {
        // The nonce, when it can be read, lets the host match the answer.
        let nonce = text.split(' ').nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        refuse(hv, None, "?", OrderArgs { order: 0, nonce }, OrderRefusal::Malformed);
        return;
    };
    handle_order(hv, &order);
}

/// Check and carry out one decoded order, from either input.
fn handle_order<A: Arch>(hv: &mut Hypervisor<A>, order: &OrderFrame) {
    let order = *order;
    let args = OrderArgs { order: order.kind as u8, nonce: order.nonce };
    if matches!(order.kind, OrderKind::Shutdown | OrderKind::Status) {
        for_the_hypervisor(hv, &order, args);
        return;
    }
    let Some(idx) = hv.partitions.iter().position(|p| p.desc().name == order.partition) else {
        refuse(hv, None, order.partition_name(), args, OrderRefusal::UnknownPartition);
        return;
    };
    if let Err(r) = hv.orders.verify(&order) {
        refuse(hv, Some(idx), order.partition_name(), args, r);
        return;
    }
    if let Err(r) = hv.orders.use_nonce(order.nonce) {
        refuse(hv, Some(idx), order.partition_name(), args, r);
        return;
    }
    let state = hv.partitions[idx].state();
    let nothing_to_do = match order.kind {
        OrderKind::Unfence if state != PartitionState::Fenced => Some(OrderRefusal::NotFenced(state)),
        OrderKind::Evict if state == PartitionState::Evicted => Some(OrderRefusal::AlreadyEvicted),
        _ => None,
    };
    if let Some(r) = nothing_to_do {
        refuse(hv, Some(idx), order.partition_name(), args, r);
        return;
    }
    let id = hv.partitions[idx].id();
    if !hv.kernel_event(id, KernelEvent::OperatorOrder, Outcome::Done, args.to_bytes()) {
        // Fail-closed: an order that cannot be witnessed is not carried out.
        console::hyp_line(
            &mut hv.arch,
            format_args!("order {} {} '{}' refused: its record could not be written", order.nonce, order.kind.name(), order.partition_name()),
        );
        hv.orders.note_refused();
        return;
    }
    let result = match order.kind {
        OrderKind::Unfence => unfence(hv, id),
        OrderKind::Evict => evict(hv, id).map(|()| 0),
        // Orders for the hypervisor were carried out above.
        OrderKind::Shutdown | OrderKind::Status => return,
    };
    match result {
        Ok(ck) => {
            hv.orders.note_applied();
            let how = match order.kind {
                OrderKind::Unfence => alloc::format!("resumed from snapshot {ck}"),
                OrderKind::Evict if hv.partitions[idx].state() == PartitionState::Evicted => {
                    alloc::string::String::from("evicted (F4)")
                }
                // Its guest is on another CPU: evicted when that CPU comes back.
                _ => alloc::string::String::from("eviction deferred until it leaves its CPU"),
            };
            console::hyp_line(
                &mut hv.arch,
                format_args!("order {} {} '{}' done: {how}", order.nonce, order.kind.name(), order.partition_name()),
            );
        }
        Err(e) => {
            let r = match e {
                crate::recovery::fault::OrderError::Recreate(e) => OrderRefusal::Failed(e),
                crate::recovery::fault::OrderError::NotFenced => OrderRefusal::NotFenced(hv.partitions[idx].state()),
                crate::recovery::fault::OrderError::AlreadyEvicted => OrderRefusal::AlreadyEvicted,
                crate::recovery::fault::OrderError::NoSuchPartition => OrderRefusal::UnknownPartition,
            };
            refuse(hv, Some(idx), order.partition_name(), args, r);
        }
    }
}

/// The orders for the hypervisor itself (target [`HYPERVISOR_TARGET`]),
/// checked like any order and witnessed in the hypervisor's log:
/// `shutdown` stops the run as at the end of its budget (every log
/// checkpointed and signed, the summary printed, power off); `status`
/// answers with the hypervisor's state ([`status_line`]).
fn for_the_hypervisor<A: Arch>(hv: &mut Hypervisor<A>, order: &OrderFrame, args: OrderArgs) {
    let name = order.partition_name();
    let what = order.kind.name();
    if name != HYPERVISOR_TARGET {
        refuse(hv, None, name, args, OrderRefusal::NotTheHypervisor);
        return;
    }
    if let Err(r) = hv.orders.verify(order).and_then(|()| hv.orders.use_nonce(order.nonce)) {
        refuse(hv, None, name, args, r);
        return;
    }
    if !hv.kernel_event(PartitionId::HYPERVISOR, KernelEvent::OperatorOrder, Outcome::Done, args.to_bytes()) {
        console::hyp_line(&mut hv.arch, format_args!("order {} {what} '{name}' refused: its record could not be written", order.nonce));
        hv.orders.note_refused();
        return;
    }
    hv.orders.note_applied();
    if order.kind == OrderKind::Status {
        let line = status_line(hv);
        console::hyp_line(&mut hv.arch, format_args!("order {} status '{name}' done: {line}", order.nonce));
        return;
    }
    console::hyp_line(&mut hv.arch, format_args!("order {} shutdown '{name}' done: stopping the run", order.nonce));
    hv.stop_run();
}

/// The hypervisor's state as `key=value` words: `cpus`, `frames_free_kib`,
/// `frames_kib` (RAM frames for partitions), `heap_reserved_kib`,
/// `heap_kib` (the EL2 heap ledger), and `partitions=` a comma-separated
/// list of `id:name:state:records:head:agents:keeping` — its log's size and
/// the first 8 bytes of its chain head in hex (`-` for a log with no
/// record), its agents, and `keeping` when it is parked until the host
/// keeps its committed set (else `-`) (vacancies left out; names are safe
/// identifiers, so neither `:` nor `,` occurs in them).
pub(crate) fn status_line<A: Arch>(hv: &Hypervisor<A>) -> alloc::string::String {
    use core::fmt::Write as _;
    let total = hv.frames.frames_total();
    let mut s = alloc::format!(
        "cpus={} frames_free_kib={} frames_kib={} heap_reserved_kib={} heap_kib={} partitions=",
        hv.smp.cpu_count().max(1),
        total.saturating_sub(hv.frames.frames_in_use()) * 4,
        total * 4,
        hv.heap.committed() / 1024,
        hv.heap.capacity() / 1024,
    );
    let mut first = true;
    for (idx, p) in hv.partitions.iter().enumerate().filter(|(_, p)| !p.is_vacant()) {
        let _ = write!(
            s,
            "{}{}:{}:{}:{}:",
            if first { "" } else { "," },
            p.id().0,
            p.name(),
            p.state().name(),
            hv.witness.records(p.id().0)
        );
        match hv.witness.head(p.id().0).filter(|_| hv.witness.records(p.id().0) > 0) {
            Some(head) => head[..8].iter().for_each(|b| {
                let _ = write!(s, "{b:02x}");
            }),
            None => s.push('-'),
        }
        let _ = write!(
            s,
            ":{}:{}",
            hv.domains.agent_count(idx).max(1),
            if p.saving().is_some() { "keeping" } else { "-" }
        );
        first = false;
    }
    s
}

/// Witness and print a refused order.
fn refuse<A: Arch>(hv: &mut Hypervisor<A>, idx: Option<usize>, name: &str, args: OrderArgs, why: OrderRefusal) {
    hv.orders.note_refused();
    let log = idx.map_or(PartitionId::HYPERVISOR, |i| hv.partitions[i].id());
    hv.kernel_event(log, KernelEvent::OrderRefused, Outcome::Denied(why.error()), args.to_bytes());
    let what = OrderKind::from_u8(args.order).map_or("?", OrderKind::name);
    console::hyp_line(&mut hv.arch, format_args!("order {} {what} '{name}' refused: {why}", args.nonce));
}

/// Operator order: clear the fence of partition `id`. Its capabilities
/// answer again and its guest is recreated from its last snapshot (or
/// the pristine image). Returns the snapshot id resumed from (0 =
/// pristine). Given by a verified order from the host ([`poll`]).
pub fn unfence<A: Arch>(hv: &mut Hypervisor<A>, id: PartitionId) -> Result<u64, crate::recovery::fault::OrderError> {
    let idx = hv.index_of(id).ok_or(crate::recovery::fault::OrderError::NoSuchPartition)?;
    if hv.running_on(idx).is_some() {
        // Only a fenced partition is unfenced, and a fenced one never runs.
        return Err(crate::recovery::fault::OrderError::NotFenced);
    }
    crate::recovery::fault::unfence(hv, idx)
}

/// Operator order: evict partition `id` (F4). A partition that still
/// runs is fenced first (F3), so no class is skipped. If its guest is on a CPU right now, the
/// eviction is [deferred](Hypervisor::defer) until that CPU comes back
/// (at the latest at the end of the slice).
pub fn evict<A: Arch>(hv: &mut Hypervisor<A>, id: PartitionId) -> Result<(), crate::recovery::fault::OrderError> {
    let idx = hv.index_of(id).ok_or(crate::recovery::fault::OrderError::NoSuchPartition)?;
    if hv.partitions[idx].state() == PartitionState::Evicted {
        return Err(crate::recovery::fault::OrderError::AlreadyEvicted);
    }
    if hv.running_on(idx).is_some() {
        hv.defer(idx, crate::running::cpus::DeferredOrder::Evict);
        return Ok(());
    }
    crate::recovery::fault::respond(hv, idx, crate::recovery::policy::Trigger::OperatorEvict, format_args!("eviction ordered by the operator"));
    Ok(())
}
