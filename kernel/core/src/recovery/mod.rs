//! Recovery: what a partition's fault does to it, and to nobody else.
//!
//! * [`policy`] — the F1–F4 classes and escalation, decided without
//!   touching the machine.
//! * [`fault`] — applying a class: restart, rollback, fence, evict.
//! * [`restart`] — recreating a guest from its pristine image.
//! * [`snapshot`] — snapshots kept by EL2 and their state hashes.

pub mod snapshot;
pub mod fault;
pub mod policy;
pub mod restart;
