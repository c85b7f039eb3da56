//! What the kernel passes into a check and what it gets back: everything a
//! witness record needs, allowed or denied.

use rvm_abi::{CapHandle, HvError, ProofTier, Rights};

use crate::ids::{Epoch, Nonce, ObjectRef, Timestamp};
use crate::window::Access;

/// The policy inputs of one operation (used from P2 up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The kernel clock now.
    pub now: Timestamp,
    /// The current quota epoch.
    pub epoch: Epoch,
    /// The bytes the operation touches, if it is a byte access: checked
    /// against the window and charged to the byte quota at P2 and P3.
    pub access: Option<Access>,
    /// The operation's nonce, if it carries one. At P2 a nonce, when given,
    /// must exceed the capability's last; at P3 one is required (it is part
    /// of the signed message). Ignored at P1.
    pub nonce: Option<Nonce>,
}

impl Request {
    /// A request at `now` in `epoch` with no byte access and no nonce.
    pub const fn at(now: Timestamp, epoch: Epoch) -> Request {
        Request {
            now,
            epoch,
            access: None,
            nonce: None,
        }
    }

    pub const fn with_access(mut self, access: Access) -> Request {
        self.access = Some(access);
        self
    }

    pub const fn with_nonce(mut self, nonce: Nonce) -> Request {
        self.nonce = Some(nonce);
        self
    }
}

/// An allowed use of a capability: the object to act on and what the
/// witness record needs. Twelve bytes, so `Result<Granted, Denied>` comes
/// back in registers; [`CapabilitySpace::query`](crate::CapabilitySpace::query)
/// tells the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The handle presented, in witness form.
    pub cap: u32,
    /// The tier the operation ran at.
    pub tier: ProofTier,
    /// The object the capability names.
    pub object: ObjectRef,
}

/// A refused use of a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The exact reason.
    pub error: HvError,
    /// The tier the operation was being checked at (P1 when the refusal came
    /// before the tier was known: a bad handle or missing rights).
    pub tier: ProofTier,
    /// The handle presented, in witness form.
    pub cap: u32,
}

impl Denied {
    pub(crate) fn new(error: HvError, tier: ProofTier, handle: CapHandle) -> Denied {
        Denied {
            error,
            tier,
            cap: handle.witness_id(),
        }
    }
}

impl From<Denied> for HvError {
    fn from(d: Denied) -> HvError {
        d.error
    }
}

/// A successful derive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Derived {
    /// The new capability's handle, in the target partition's table.
    pub handle: CapHandle,
    /// The use of the parent capability that authorised it.
    pub granted: Granted,
    /// The right used: GRANT, or GRANT_ONCE (now consumed).
    pub used: Rights,
}

/// A successful revoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevokeReport {
    /// The use of the revoking capability.
    pub granted: Granted,
    /// How many capabilities were removed.
    pub removed: u32,
}
