//! Admissions: tenants the operator loads into the running hypervisor.
//!
//! An admission arrives on the control channel as one `Admission` frame
//! (`rvm_abi::control`): a nonce, the operator's signature, and an
//! *admission bundle* — the boot bundle's format holding only tenants:
//! their `Partition`, `Wasm`, `GuestImage`, `Capability` and
//! `AuthorityKey` entries, and `Channel`/`AgentChannel` links among
//! them. What the whole machine shares (the runtime, the witness key, the
//! boot configuration, the operator key, the boot id) is the boot's and
//! cannot be replaced by one.
//!
//! While it arrives its bytes are kept in the EL2 heap, charged to the
//! heap ledger ([`crate::memory::quota`]) for as long as they are kept; an
//! admission that does not fit is read to its end and refused. Then
//! [`admit`]:
//!
//! 1. checks the signature over [`admission_message`] (which binds the
//!    nonce, the admission's SHA-256 and the digest of the bundle this
//!    hypervisor booted) with the bundle's operator key, and uses up the
//!    nonce (one floor with the orders');
//! 2. reads the bundle and checks it holds only tenants, at least one,
//!    with names no partition of this boot has had;
//! 3. witnesses `OperatorOrder` (order code [`ADMISSION_ORDER_CODE`]) in
//!    the hypervisor's log;
//! 4. creates and loads each partition as the boot does
//!    ([`crate::load::load_partition`]): its log's name goes to the host
//!    first, its `PartitionCreate` record binds the admission's digest, its
//!    memory is reserved. If any partition is refused, the admission is
//!    refused whole: the others of it are refused too (witnessed, their
//!    memory returned) before any of them ran.
//! 5. connects its links and writes the boot-info pages; the scheduler
//!    places each partition and idle CPUs are kicked.
//!
//! Every refusal is witnessed (`OrderRefused` in the hypervisor's log,
//! outcome = the reason's status) and answered with one console line,
//! `rvm: admission <nonce> refused: <reason>`; success with `rvm:
//! admission <nonce> done: admitted <name> as partition <id>, …`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use rvm_abi::bundle::{Bundle, EntryKind, PartitionDesc};
use rvm_abi::control::{admission_message, name_text};
use rvm_abi::frame::{OrderArgs, ADMISSION_ORDER_CODE};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome};

use crate::arch::Arch;
use crate::console;
use crate::load::{Placement, Refusal};
use crate::orders::desk::{Arriving, OrderRefusal};
use crate::partition::{PartitionId, PartitionState, MAX_PARTITIONS};
use crate::state::Hypervisor;

/// Why an admission was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionRefusal {
    /// The operator check (key, boot binding, signature, nonce) failed.
    Order(OrderRefusal),
    /// Its bytes did not fit in the hypervisor heap beside the partitions'
    /// reservations.
    NoRoom { len: usize, free: usize },
    /// The bundle does not read.
    Bundle(rvm_abi::bundle::BundleError),
    /// It carries an entry only a boot may carry.
    NotATenant(EntryKind),
    /// It holds no partition.
    Empty,
    /// This boot is not an instance (`BOOT_FLAG_INSTANCE`): it takes no
    /// tenant after boot.
    NotAnInstance,
    /// A partition of this boot already had the name.
    NameTaken(String),
    /// More partitions than the machine names.
    TooManyPartitions,
    /// Partition `name` was refused (the admission with it).
    Partition { name: String, why: Refusal },
    /// Its record could not be written.
    Witness,
    /// The host began another frame after `received` of its `len` bytes.
    Abandoned { received: usize, len: usize },
}

impl AdmissionRefusal {
    /// The status its `OrderRefused` record states.
    pub fn error(&self) -> HvError {
        match self {
            AdmissionRefusal::Order(r) => r.error(),
            AdmissionRefusal::NoRoom { .. } | AdmissionRefusal::TooManyPartitions => HvError::QuotaExceeded,
            AdmissionRefusal::Partition { why, .. } => why.error(),
            AdmissionRefusal::Witness => HvError::WitnessUnavailable,
            AdmissionRefusal::Abandoned { .. } => HvError::InvalidArgument,
            AdmissionRefusal::Bundle(_)
            | AdmissionRefusal::NotATenant(_)
            | AdmissionRefusal::Empty
            | AdmissionRefusal::NotAnInstance
            | AdmissionRefusal::NameTaken(_) => HvError::InvalidArgument,
        }
    }
}

impl core::fmt::Display for AdmissionRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AdmissionRefusal::Order(r) => write!(f, "{r}"),
            AdmissionRefusal::NoRoom { len, free } => write!(
                f,
                "its {} KiB do not fit in the hypervisor heap ({} KiB are not reserved)",
                len / 1024,
                free / 1024
            ),
            AdmissionRefusal::Bundle(e) => write!(f, "its bundle does not read: {e}"),
            AdmissionRefusal::NotATenant(k) => write!(f, "it carries a {k:?} entry, which only a boot bundle may carry"),
            AdmissionRefusal::Empty => write!(f, "it holds no partition"),
            AdmissionRefusal::NotAnInstance => write!(f, "this boot is not an instance: it takes no tenant after boot"),
            AdmissionRefusal::NameTaken(n) => write!(f, "a partition named '{n}' is already in this instance"),
            AdmissionRefusal::TooManyPartitions => write!(f, "the instance holds {MAX_PARTITIONS} partitions, its most"),
            AdmissionRefusal::Partition { name, why } => write!(f, "partition '{name}': {} (nothing admitted)", why.reason()),
            AdmissionRefusal::Witness => write!(f, "its record could not be written"),
            AdmissionRefusal::Abandoned { received, len } => {
                write!(f, "the host sent another frame after {received} of its {len} bytes (abandoned)")
            }
        }
    }
}

/// An `Admission` frame's nonce and signature arrived; `len` bundle bytes
/// follow. Room for them is reserved from the heap ledger now.
pub(crate) fn begin<A: Arch>(hv: &mut Hypervisor<A>, nonce: u64, signature: [u8; 64], len: usize) {
    let bytes = match hv.heap.commit(len) {
        Ok(()) => {
            let mut v = Vec::new();
            if v.try_reserve_exact(len).is_ok() {
                Some(v)
            } else {
                hv.heap.uncommit(len);
                None
            }
        }
        Err(_) => None,
    };
    if let Some(whole) = hv.orders.begin_admission(Arriving { nonce, signature, len, bytes, received: 0 }) {
        finish(hv, whole);
    }
}

/// The next byte of the admission arriving.
pub(crate) fn byte<A: Arch>(hv: &mut Hypervisor<A>, b: u8) {
    if let Some(whole) = hv.orders.admission_byte(b) {
        finish(hv, whole);
    }
}

/// The admission arriving was abandoned (another frame began, or the
/// stream broke): refused, its room given back.
pub(crate) fn abandon<A: Arch>(hv: &mut Hypervisor<A>) {
    let Some(a) = hv.orders.take_admission() else { return };
    // `begin` charged its whole length when it could keep it.
    if a.bytes.is_some() {
        hv.heap.uncommit(a.len);
    }
    let args = OrderArgs { order: ADMISSION_ORDER_CODE, nonce: a.nonce };
    refuse(hv, args, &AdmissionRefusal::Abandoned { received: a.received, len: a.len });
}

/// The whole admission arrived: admit it or refuse it, then give its
/// bytes' room back.
fn finish<A: Arch>(hv: &mut Hypervisor<A>, a: Arriving) {
    let args = OrderArgs { order: ADMISSION_ORDER_CODE, nonce: a.nonce };
    let Some(bytes) = a.bytes else {
        let free = hv.heap.capacity().saturating_sub(hv.heap.committed());
        refuse(hv, args, &AdmissionRefusal::NoRoom { len: a.len, free });
        return;
    };
    let result = admit(hv, a.nonce, &a.signature, &bytes);
    let len = bytes.len();
    drop(bytes);
    hv.heap.uncommit(len);
    match result {
        Ok(admitted) => {
            let mut line = String::new();
            for (n, (name, id)) in admitted.iter().enumerate() {
                let _ = write!(line, "{}{name} as partition {}", if n == 0 { "" } else { ", " }, id.0);
            }
            hv.orders.note_applied();
            console::hyp_line(&mut hv.arch, format_args!("admission {} done: admitted {line}", a.nonce));
        }
        Err(why) => refuse(hv, args, &why),
    }
}

/// Check and carry out the admission `bundle`, signed `signature` with
/// nonce `nonce`: the partitions admitted (name, id), or why not.
pub(crate) fn admit<A: Arch>(
    hv: &mut Hypervisor<A>,
    nonce: u64,
    signature: &[u8; 64],
    bundle: &[u8],
) -> Result<Vec<(String, PartitionId)>, AdmissionRefusal> {
    let digest = rvm_state::digest::full(bundle);
    let message = admission_message(nonce, &digest, hv.orders.bundle_digest());
    hv.orders.verify_signed(&message, signature).map_err(AdmissionRefusal::Order)?;
    hv.orders.use_nonce(nonce).map_err(AdmissionRefusal::Order)?;
    let parsed = Bundle::parse(bundle).map_err(AdmissionRefusal::Bundle)?;
    check_tenants(hv, &parsed)?;
    let args = OrderArgs { order: ADMISSION_ORDER_CODE, nonce };
    if !hv.kernel_event(PartitionId::HYPERVISOR, KernelEvent::OperatorOrder, Outcome::Done, args.to_bytes()) {
        return Err(AdmissionRefusal::Witness);
    }
    let mut created_by = [0u8; 16];
    created_by.copy_from_slice(&digest[..16]);
    let base = hv.partitions.len();
    for (index, desc) in parsed.partitions().enumerate() {
        let index = u32::try_from(index).map_err(|_| AdmissionRefusal::TooManyPartitions)?;
        let idx = hv.partitions.len();
        let id = u32::try_from(idx + 1).map(PartitionId).map_err(|_| AdmissionRefusal::TooManyPartitions)?;
        if hv.caps.ensure_partition(id).is_err() {
            return Err(undo(hv, base, name_text(&desc.name), Refusal::OutOfMemory));
        }
        let place = Placement { id, created_by, at_run_time: true };
        match crate::load::load_partition(hv, &parsed, index, desc, place) {
            Ok(None) => hv.sched.admit(idx, &desc),
            Ok(Some(why)) => return Err(undo(hv, base, name_text(&desc.name), why)),
            // Not even created (no frame for its stage-2 root): its empty
            // table stays for the next admission at this id.
            Err(_) => return Err(undo(hv, base, name_text(&desc.name), Refusal::OutOfMemory)),
        };
    }
    crate::load::connect_channels(hv, &parsed, base);
    // A link refused an end (its queue did not fit): the admission goes whole.
    if let Some(idx) = (base..hv.partitions.len()).find(|&i| hv.partitions[i].state() != PartitionState::Loaded) {
        let name = String::from(crate::partition::name_str(&hv.partitions[idx].desc().name));
        return Err(undo(hv, base, &name, Refusal::HeapBudget));
    }
    crate::load::write_all_boot_info(hv, base);
    hv.smp.note_runnable();
    Ok((base..hv.partitions.len())
        .map(|i| (String::from(crate::partition::name_str(&hv.partitions[i].desc().name)), hv.partitions[i].id()))
        .collect())
}

/// Check `bundle` holds only tenants (at least one), with names no
/// partition of this boot had, that fit the machine.
fn check_tenants<A: Arch>(hv: &Hypervisor<A>, bundle: &Bundle<'_>) -> Result<(), AdmissionRefusal> {
    if !hv.policy.instance {
        return Err(AdmissionRefusal::NotAnInstance);
    }
    for e in bundle.entries() {
        match e.kind {
            EntryKind::Partition
            | EntryKind::Wasm
            | EntryKind::GuestImage
            | EntryKind::Capability
            | EntryKind::Claim
            | EntryKind::AuthorityKey
            | EntryKind::Channel
            | EntryKind::AgentChannel => {}
            other => return Err(AdmissionRefusal::NotATenant(other)),
        }
    }
    let descs: Vec<PartitionDesc> = bundle.partitions().collect();
    if descs.is_empty() {
        return Err(AdmissionRefusal::Empty);
    }
    if hv.partitions.len() + descs.len() > MAX_PARTITIONS {
        return Err(AdmissionRefusal::TooManyPartitions);
    }
    for (n, d) in descs.iter().enumerate() {
        // `hypervisor` names the hypervisor's own log (and orders to it).
        let reserved = name_text(&d.name) == rvm_abi::frame::HYPERVISOR_TARGET;
        let taken = reserved || hv.partitions.iter().any(|p| p.desc().name == d.name) || descs[..n].iter().any(|o| o.name == d.name);
        if taken {
            return Err(AdmissionRefusal::NameTaken(String::from(name_text(&d.name))));
        }
    }
    Ok(())
}

/// Partition `name` of the admission whose first partition is at `base`
/// was refused for `why`: refuse every other partition of it that was
/// created (witnessed, memory returned), none of which ran.
fn undo<A: Arch>(hv: &mut Hypervisor<A>, base: usize, name: &str, why: Refusal) -> AdmissionRefusal {
    for idx in base..hv.partitions.len() {
        if hv.partitions[idx].state() == PartitionState::Loaded {
            crate::load::refuse(hv, idx, Refusal::WithAdmission);
        }
    }
    AdmissionRefusal::Partition { name: String::from(name), why }
}

/// Witness and answer a refused admission.
fn refuse<A: Arch>(hv: &mut Hypervisor<A>, args: OrderArgs, why: &AdmissionRefusal) {
    hv.orders.note_refused();
    hv.kernel_event(PartitionId::HYPERVISOR, KernelEvent::OrderRefused, Outcome::Denied(why.error()), args.to_bytes());
    console::hyp_line(&mut hv.arch, format_args!("admission {} refused: {why}", args.nonce));
}
