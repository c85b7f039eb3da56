//! Operator orders from the host: `unfence` and `evict`, given while the
//! hypervisor runs.
//!
//! Orders arrive on the console UART's receive side as one line each,
//! `@O <nonce> <order> <partition> <signature>` ([`OrderFrame`]). The run
//! loop's housekeeping calls [`poll`], which reads whatever input is waiting
//! (never blocking), assembles lines and handles each complete one:
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
//!    through the kernel's own entry points ([`Hypervisor::unfence`],
//!    [`Hypervisor::evict`]), which witness the step itself.
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

use ed25519_dalek::{Signature, VerifyingKey};
use rvm_abi::frame::{OrderArgs, OrderFrame, OrderKind, MAX_ORDER_LINE};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome};

use crate::arch::Arch;
use crate::console;
use crate::hypervisor::Hypervisor;
use crate::partition::{PartitionId, PartitionState};

/// Bytes read from the console per read call.
const READ_CHUNK: usize = 64;
/// Most input bytes one [`poll`] consumes, so a flood of input cannot hold
/// the run loop.
const POLL_BUDGET: usize = 4 * (MAX_ORDER_LINE + 2);

/// The hypervisor's side of the operator channel: the key, the nonce floor
/// and the line being assembled.
pub(crate) struct OrderDesk {
    key: Option<[u8; 32]>,
    bundle_digest: [u8; 32],
    /// The bundle carries a boot id, so its digest names this boot alone.
    boot_bound: bool,
    last_nonce: u64,
    line: heapless::Vec<u8, MAX_ORDER_LINE>,
    /// The current line outgrew the buffer: drop it up to its newline.
    overlong: bool,
    /// Orders applied and refused since boot.
    pub(crate) applied: u32,
    pub(crate) refused: u32,
}

/// Why an order was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderRefusal {
    /// The `@O` line could not be decoded.
    Malformed,
    /// The bundle binds no operator key.
    NoOperatorKey,
    /// The bundle carries no boot id: an order signed for it would be
    /// good for every boot of a byte-identical bundle.
    NoBootId,
    /// No partition has that name.
    UnknownPartition,
    /// The signature does not verify with the operator key.
    BadSignature,
    /// The nonce does not exceed the last accepted one.
    Replayed { last: u64 },
    /// Unfence of a partition that is not fenced.
    NotFenced(PartitionState),
    /// Eviction of a partition already evicted.
    AlreadyEvicted,
    /// The guest could not be recreated.
    Failed(HvError),
}

impl OrderRefusal {
    /// The status the `OrderRefused` record states.
    pub fn error(self) -> HvError {
        match self {
            OrderRefusal::Malformed | OrderRefusal::UnknownPartition => HvError::InvalidArgument,
            OrderRefusal::NoOperatorKey | OrderRefusal::NoBootId | OrderRefusal::BadSignature => HvError::BadProof,
            OrderRefusal::Replayed { .. } => HvError::Replay,
            OrderRefusal::NotFenced(_) | OrderRefusal::AlreadyEvicted => HvError::InvalidArgument,
            OrderRefusal::Failed(e) => e,
        }
    }
}

impl core::fmt::Display for OrderRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OrderRefusal::Malformed => write!(f, "malformed order line"),
            OrderRefusal::NoOperatorKey => write!(f, "the bundle binds no operator key"),
            OrderRefusal::NoBootId => write!(f, "the bundle carries no boot id"),
            OrderRefusal::UnknownPartition => write!(f, "no partition has that name"),
            OrderRefusal::BadSignature => write!(f, "signature does not verify with the operator key"),
            OrderRefusal::Replayed { last } => write!(f, "nonce replayed (must exceed {last})"),
            OrderRefusal::NotFenced(s) => write!(f, "partition is not fenced (it is {})", s.name()),
            OrderRefusal::AlreadyEvicted => write!(f, "partition is already evicted"),
            OrderRefusal::Failed(e) => write!(f, "could not be carried out ({})", e.name()),
        }
    }
}

impl OrderDesk {
    /// `key`: the bundle's operator key, if any; `bundle_digest`: SHA-256 of
    /// the bundle this hypervisor booted; `boot_bound`: the bundle carries a
    /// boot id (else every order is refused).
    pub(crate) fn new(key: Option<[u8; 32]>, bundle_digest: [u8; 32], boot_bound: bool) -> Self {
        Self {
            key,
            bundle_digest,
            boot_bound,
            last_nonce: 0,
            line: heapless::Vec::new(),
            overlong: false,
            applied: 0,
            refused: 0,
        }
    }

    /// Take one input byte; a finished line comes back.
    fn take(&mut self, b: u8) -> Option<heapless::Vec<u8, MAX_ORDER_LINE>> {
        match b {
            b'\n' => {
                let line = core::mem::take(&mut self.line);
                let was_overlong = core::mem::replace(&mut self.overlong, false);
                (!was_overlong).then_some(line)
            }
            b'\r' => None,
            _ if self.overlong => None,
            _ => {
                if self.line.push(b).is_err() {
                    self.line.clear();
                    self.overlong = true;
                }
                None
            }
        }
    }

    fn verify(&self, order: &OrderFrame) -> Result<(), OrderRefusal> {
        let key = self.key.ok_or(OrderRefusal::NoOperatorKey)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| OrderRefusal::NoOperatorKey)?;
        if key.is_weak() {
            return Err(OrderRefusal::NoOperatorKey);
        }
        if !self.boot_bound {
            return Err(OrderRefusal::NoBootId);
        }
        let message = OrderFrame::message(order.kind, order.nonce, &order.partition, &self.bundle_digest);
        key.verify_strict(&message, &Signature::from_bytes(&order.signature))
            .map_err(|_| OrderRefusal::BadSignature)
    }
}

/// Read and handle whatever operator input is waiting. Called by the run
/// loop's housekeeping, between slices.
pub(crate) fn poll<A: Arch>(hv: &mut Hypervisor<A>) {
    let mut consumed = 0;
    let mut buf = [0u8; READ_CHUNK];
    while consumed < POLL_BUDGET {
        let n = hv.arch.console_read(&mut buf).min(READ_CHUNK);
        if n == 0 {
            return;
        }
        consumed += n;
        for &b in &buf[..n] {
            if let Some(line) = hv.orders.take(b) {
                handle_line(hv, &line);
            }
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
    let args = OrderArgs { order: order.kind as u8, nonce: order.nonce };
    let Some(idx) = hv.partitions.iter().position(|p| p.desc.name == order.partition) else {
        refuse(hv, None, order.partition_name(), args, OrderRefusal::UnknownPartition);
        return;
    };
    if let Err(r) = hv.orders.verify(&order) {
        refuse(hv, Some(idx), order.partition_name(), args, r);
        return;
    }
    if order.nonce <= hv.orders.last_nonce {
        let last = hv.orders.last_nonce;
        refuse(hv, Some(idx), order.partition_name(), args, OrderRefusal::Replayed { last });
        return;
    }
    hv.orders.last_nonce = order.nonce;
    let state = hv.partitions[idx].state;
    let nothing_to_do = match order.kind {
        OrderKind::Unfence if state != PartitionState::Fenced => Some(OrderRefusal::NotFenced(state)),
        OrderKind::Evict if state == PartitionState::Evicted => Some(OrderRefusal::AlreadyEvicted),
        _ => None,
    };
    if let Some(r) = nothing_to_do {
        refuse(hv, Some(idx), order.partition_name(), args, r);
        return;
    }
    let id = hv.partitions[idx].id;
    if !hv.kernel_event(id, KernelEvent::OperatorOrder, Outcome::Done, args.to_bytes()) {
        // Fail-closed: an order that cannot be witnessed is not carried out.
        console::hyp_line(
            &mut hv.arch,
            format_args!("order {} {} '{}' refused: its record could not be written", order.nonce, order.kind.name(), order.partition_name()),
        );
        hv.orders.refused += 1;
        return;
    }
    let result = match order.kind {
        OrderKind::Unfence => hv.unfence(id),
        OrderKind::Evict => hv.evict(id).map(|()| 0),
    };
    match result {
        Ok(ck) => {
            hv.orders.applied += 1;
            let how = match order.kind {
                OrderKind::Unfence => alloc::format!("resumed from checkpoint {ck}"),
                OrderKind::Evict if hv.partitions[idx].state == PartitionState::Evicted => {
                    alloc::string::String::from("evicted (F4)")
                }
                // Its guest is on another CPU: evicted when that CPU comes back.
                OrderKind::Evict => alloc::string::String::from("eviction deferred until it leaves its CPU"),
            };
            console::hyp_line(
                &mut hv.arch,
                format_args!("order {} {} '{}' done: {how}", order.nonce, order.kind.name(), order.partition_name()),
            );
        }
        Err(e) => {
            let r = match e {
                crate::recovery::fault::OrderError::Recreate(e) => OrderRefusal::Failed(e),
                crate::recovery::fault::OrderError::NotFenced => OrderRefusal::NotFenced(hv.partitions[idx].state),
                crate::recovery::fault::OrderError::AlreadyEvicted => OrderRefusal::AlreadyEvicted,
                crate::recovery::fault::OrderError::NoSuchPartition => OrderRefusal::UnknownPartition,
            };
            refuse(hv, Some(idx), order.partition_name(), args, r);
        }
    }
}

/// Witness and print a refused order.
fn refuse<A: Arch>(hv: &mut Hypervisor<A>, idx: Option<usize>, name: &str, args: OrderArgs, why: OrderRefusal) {
    hv.orders.refused += 1;
    let log = idx.map_or(PartitionId::HYPERVISOR, |i| hv.partitions[i].id);
    hv.kernel_event(log, KernelEvent::OrderRefused, Outcome::Denied(why.error()), args.to_bytes());
    let what = OrderKind::from_u8(args.order).map_or("?", OrderKind::name);
    console::hyp_line(&mut hv.arch, format_args!("order {} {what} '{name}' refused: {why}", args.nonce));
}
