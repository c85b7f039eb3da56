//! RVM's application binary interface: the single definition of every number
//! and layout that two sides of the system must agree on.
//!
//! The EL2 kernel, the EL1 guest runtime, the guest SDK and the host tools all
//! take these definitions from here; none of them restates a constant.
//!
//! * [`hypercall`] — SMCCC function identifiers and argument conventions.
//! * [`status`] — the status codes a hypercall returns.
//! * [`rights`], [`object`], [`tier`], [`handle`] — the capability vocabulary.
//! * [`approval`] — the message an authority signs to approve a P3 operation.
//! * [`witness`] — the 64-byte witness record and the operation codes it names.
//! * [`frame`] — how records and checkpoints travel on the console UART.
//! * [`bundle`] — the image the loader hands to the hypervisor as its initrd.
//! * [`bootinfo`] — what a partition's guest runtime finds at boot.
//! * [`imports`] — the host functions an agent's WASM module may import.
//! * [`journal`] — the input journal beside the witness log (`@J` frames), for host replay.
//! * [`tool`] — tool calls: their limits, and what the host answers.
//! * [`recovery`] — recovery records' arguments and the snapshot state-hash encoding.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod approval;
pub mod bootinfo;
pub mod bundle;
pub mod control;
pub mod frame;
pub mod handle;
pub mod hex;
pub mod hypercall;
pub mod ident;
pub mod imports;
pub mod journal;
pub mod object;
pub mod recovery;
pub mod rights;
pub mod status;
pub mod tier;
pub mod tool;
pub mod witness;

pub use handle::CapHandle;
pub use hypercall::Hypercall;
pub use object::ObjectKind;
pub use rights::Rights;
pub use status::HvError;
pub use tier::ProofTier;
pub use witness::{Outcome, WitnessOp, WitnessRecord};

#[cfg(test)]
mod doc_tests {
    extern crate std;

    /// docs/ABI.md must name every hypercall, error, kernel event and import.
    #[test]
    fn abi_table_in_docs_is_complete() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ABI.md")).unwrap();
        let missing: std::vec::Vec<&str> = crate::Hypercall::ALL
            .iter()
            .map(|c| c.name())
            .chain(crate::HvError::ALL.iter().map(|e| e.name()))
            .chain(crate::witness::KernelEvent::ALL.iter().map(|e| e.name()))
            .chain(crate::imports::HostImport::ALL.iter().map(|i| i.name()))
            .filter(|n| !doc.contains(&std::format!("`{n}`")))
            .collect();
        assert!(missing.is_empty(), "docs/ABI.md lacks {missing:?}");
    }
}
