//! The hypervisor's side of the operator channel: the operator's key, the
//! nonce floor, the line being assembled, and why an order is refused.

use ed25519_dalek::{Signature, VerifyingKey};
use rvm_abi::frame::{OrderFrame, MAX_ORDER_LINE};
use rvm_abi::HvError;

use crate::partition::PartitionState;

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
    /// Orders arriving on the control channel (binary frames).
    pub(crate) inbound: rvm_abi::control::InboundDecoder,
    /// The admission arriving on it, if one is.
    admission: Option<Arriving>,
    /// Bytes taken from the control channel so far (credited to the host).
    taken: u64,
    /// Orders applied and refused since boot.
    applied: u32,
    refused: u32,
}

/// An admission on its way in ([`crate::orders::admission`]).
pub(crate) struct Arriving {
    pub nonce: u64,
    pub signature: [u8; 64],
    /// Bytes of its bundle.
    pub len: usize,
    /// Its bundle so far; `None` when it could not be kept (it is still
    /// read to its end, then refused).
    pub bytes: Option<alloc::vec::Vec<u8>>,
    pub received: usize,
}

impl Arriving {
    /// Whether the whole bundle has arrived.
    fn whole(&self) -> bool {
        self.received == self.len
    }
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
    /// A `shutdown` or `status` order names a partition: it is for the hypervisor.
    NotTheHypervisor,
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
            OrderRefusal::Malformed | OrderRefusal::UnknownPartition | OrderRefusal::NotTheHypervisor => HvError::InvalidArgument,
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
            OrderRefusal::NotTheHypervisor => write!(f, "it is an order for the hypervisor (target 'hypervisor')"),
            OrderRefusal::BadSignature => write!(f, "signature does not verify with the operator key"),
            OrderRefusal::Replayed { last } => write!(f, "nonce replayed (must exceed {last})"),
            OrderRefusal::NotFenced(s) => write!(f, "partition is not fenced (it is {})", s.name()),
            OrderRefusal::AlreadyEvicted => write!(f, "partition is already evicted"),
            OrderRefusal::Failed(e) => write!(f, "could not be carried out ({})", e.name()),
        }
    }
}

impl OrderDesk {
    /// An order was carried out.
    pub(crate) fn note_applied(&mut self) {
        self.applied += 1;
    }

    /// An order was refused.
    pub(crate) fn note_refused(&mut self) {
        self.refused += 1;
    }

    /// Orders applied since boot.
    #[cfg(test)]
    pub(crate) fn applied(&self) -> u32 {
        self.applied
    }

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
            inbound: rvm_abi::control::InboundDecoder::new(),
            admission: None,
            taken: 0,
            applied: 0,
            refused: 0,
        }
    }

    /// Take one input byte; a finished line comes back.
    pub(crate) fn take(&mut self, b: u8) -> Option<heapless::Vec<u8, MAX_ORDER_LINE>> {
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

    /// Use up `nonce`: it must exceed every nonce accepted since boot.
    pub(crate) fn use_nonce(&mut self, nonce: u64) -> Result<(), OrderRefusal> {
        if nonce <= self.last_nonce {
            return Err(OrderRefusal::Replayed { last: self.last_nonce });
        }
        self.last_nonce = nonce;
        Ok(())
    }

    pub(crate) fn verify(&self, order: &OrderFrame) -> Result<(), OrderRefusal> {
        let message = OrderFrame::message(order.kind, order.nonce, &order.partition, &self.bundle_digest);
        self.verify_signed(&message, &order.signature)
    }

    /// Check `signature` over `message` (which must bind this boot's
    /// bundle digest) with the operator key, in a boot-bound bundle.
    pub(crate) fn verify_signed(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), OrderRefusal> {
        let key = self.key.ok_or(OrderRefusal::NoOperatorKey)?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| OrderRefusal::NoOperatorKey)?;
        if key.is_weak() {
            return Err(OrderRefusal::NoOperatorKey);
        }
        if !self.boot_bound {
            return Err(OrderRefusal::NoBootId);
        }
        key.verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| OrderRefusal::BadSignature)
    }

    /// An admission starts arriving; it comes back if it is already whole.
    pub(crate) fn begin_admission(&mut self, a: Arriving) -> Option<Arriving> {
        if a.whole() {
            return Some(a);
        }
        self.admission = Some(a);
        None
    }

    /// The next byte of the arriving admission; the admission once whole.
    pub(crate) fn admission_byte(&mut self, b: u8) -> Option<Arriving> {
        let a = self.admission.as_mut()?;
        if let Some(v) = a.bytes.as_mut() {
            v.push(b);
        }
        a.received += 1;
        if a.whole() {
            self.admission.take()
        } else {
            None
        }
    }

    /// `n` more bytes were taken from the control channel; the total.
    pub(crate) fn note_taken(&mut self, n: u64) -> u64 {
        self.taken = self.taken.saturating_add(n);
        self.taken
    }

    /// The admission arriving, taken away (it was abandoned).
    pub(crate) fn take_admission(&mut self) -> Option<Arriving> {
        self.admission.take()
    }

    /// SHA-256 of the bundle this hypervisor booted.
    pub(crate) fn bundle_digest(&self) -> &[u8; 32] {
        &self.bundle_digest
    }
}
