//! The message an authority signs to approve one P3 operation: its one
//! definition, used by the kernel's verifier (`rvm-cap`), the host's signer
//! (`rvm-loader caps prove`) and the tests.
//!
//! # Layout (112 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | [`APPROVAL_TAG`] (domain separation) |
//! | 16 | 2 | operation: the [`Hypercall`] number |
//! | 18 | 1 | object kind ([`ObjectKind`] code) |
//! | 19 | 1 | reserved, 0 |
//! | 20 | 4 | object id |
//! | 24 | 4 | partition performing the operation |
//! | 28 | 4 | root partition: whose table holds the root of the capability's derivation tree |
//! | 32 | 2 | root slot: the root capability's index in that table |
//! | 34 | 2 | reserved, 0 |
//! | 36 | 4 | root generation: the root capability's slot generation |
//! | 40 | 8 | nonce (must exceed the tree's nonce floor) |
//! | 48 | 32 | boot id: the booted bundle's [`BootId`](crate::bundle::EntryKind::BootId) entry |
//! | 80 | 32 | arguments digest (computed by the kernel from the arguments it acts on) |
//!
//! The root `(partition, slot, generation)` names one capability for the
//! whole boot (a table never issues a generation twice), and every
//! capability derived from it, in any partition, shares its nonce floor and
//! is charged to its quota: an approval is accepted once per tree, not once
//! per copy. The boot id confines it to one boot: a later boot of the same
//! deployment carries another id.

use crate::bundle::BOOT_ID_LEN;
use crate::{Hypercall, ObjectKind};

/// Domain-separation prefix of every P3 approval message.
pub const APPROVAL_TAG: [u8; 16] = *b"RVM-P3-APPROVAL2";
/// Length of the signed message.
pub const APPROVAL_MESSAGE_LEN: usize = 112;

/// The root capability of a derivation tree, as an approval names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootRef {
    /// The partition whose table holds the root.
    pub partition: u32,
    /// Its slot in that table.
    pub index: u16,
    /// The slot's generation when the root was installed.
    pub generation: u32,
}

/// Every field of an approval message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovalMessage {
    pub op: Hypercall,
    pub object_kind: ObjectKind,
    pub object_id: u32,
    /// The partition performing the operation.
    pub partition: u32,
    pub root: RootRef,
    pub nonce: u64,
    pub boot_id: [u8; BOOT_ID_LEN],
    pub args_digest: [u8; 32],
}

impl ApprovalMessage {
    /// The exact bytes signed.
    pub fn to_bytes(&self) -> [u8; APPROVAL_MESSAGE_LEN] {
        let mut m = [0u8; APPROVAL_MESSAGE_LEN];
        m[0..16].copy_from_slice(&APPROVAL_TAG);
        m[16..18].copy_from_slice(&(self.op as u16).to_le_bytes());
        m[18] = self.object_kind as u8;
        m[20..24].copy_from_slice(&self.object_id.to_le_bytes());
        m[24..28].copy_from_slice(&self.partition.to_le_bytes());
        m[28..32].copy_from_slice(&self.root.partition.to_le_bytes());
        m[32..34].copy_from_slice(&self.root.index.to_le_bytes());
        m[36..40].copy_from_slice(&self.root.generation.to_le_bytes());
        m[40..48].copy_from_slice(&self.nonce.to_le_bytes());
        m[48..80].copy_from_slice(&self.boot_id);
        m[80..112].copy_from_slice(&self.args_digest);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_what_the_doc_says() {
        let m = ApprovalMessage {
            op: Hypercall::CapRevoke,
            object_kind: ObjectKind::Channel,
            object_id: 0x0102_0304,
            partition: 9,
            root: RootRef {
                partition: 3,
                index: 0x0506,
                generation: 0x0a0b_0c0d,
            },
            nonce: 0x1122_3344_5566_7788,
            boot_id: [0xbb; 32],
            args_digest: [0xaa; 32],
        }
        .to_bytes();
        assert_eq!(&m[0..16], b"RVM-P3-APPROVAL2");
        assert_eq!(m[16..18], (Hypercall::CapRevoke as u16).to_le_bytes());
        assert_eq!(m[18], ObjectKind::Channel as u8);
        assert_eq!(m[19], 0);
        assert_eq!(m[20..24], [0x04, 0x03, 0x02, 0x01]);
        assert_eq!(m[24..28], [9, 0, 0, 0]);
        assert_eq!(m[28..32], [3, 0, 0, 0]);
        assert_eq!(m[32..34], [0x06, 0x05]);
        assert_eq!(m[34..36], [0, 0]);
        assert_eq!(m[36..40], [0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(m[40..48], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(m[48..80], [0xbb; 32]);
        assert_eq!(m[80..112], [0xaa; 32]);
    }
}
