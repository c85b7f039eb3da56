//! PROVE: the kernel's signed attestation of an object's state digest.
//!
//! The kernel signs with its own Ed25519 key (the one that signs witness
//! checkpoints); anyone holding the matching public key can check the
//! attestation offline with [`verify_attestation`].
//!
//! # The signed message (72 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | [`ATTESTATION_TAG`] |
//! | 16 | 1 | object kind |
//! | 17 | 3 | reserved, 0 |
//! | 20 | 4 | object id |
//! | 24 | 4 | partition that asked for the attestation |
//! | 28 | 4 | reserved, 0 |
//! | 32 | 8 | kernel timestamp when it was made (ns since boot) |
//! | 40 | 32 | the object's state digest (for a witness log: its head) |
//!
//! The `Prove` hypercall's 96-byte result is the 32-byte state digest
//! followed by the 64-byte signature.

use ed25519_dalek::{Signature as DalekSignature, Signer, SigningKey, VerifyingKey};

use crate::ids::{ObjectRef, PartitionId, Timestamp};
use crate::proof::{AuthorityKey, Signature};

/// Domain-separation prefix of every attestation.
pub const ATTESTATION_TAG: [u8; 16] = *b"RVM-ATTESTATION\0";
/// Length of the signed attestation message.
pub const ATTESTATION_MESSAGE_LEN: usize = 72;

/// What the kernel attests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attestation {
    pub object: ObjectRef,
    pub partition: PartitionId,
    pub at: Timestamp,
    pub state_digest: [u8; 32],
}

impl Attestation {
    /// The exact bytes signed.
    pub fn message(&self) -> [u8; ATTESTATION_MESSAGE_LEN] {
        let mut m = [0u8; ATTESTATION_MESSAGE_LEN];
        m[0..16].copy_from_slice(&ATTESTATION_TAG);
        m[16] = self.object.kind as u8;
        m[20..24].copy_from_slice(&self.object.id.0.to_le_bytes());
        m[24..28].copy_from_slice(&self.partition.0.to_le_bytes());
        m[32..40].copy_from_slice(&self.at.0.to_le_bytes());
        m[40..72].copy_from_slice(&self.state_digest);
        m
    }

    /// Sign with the kernel's key.
    pub fn sign(&self, kernel_key: &SigningKey) -> Signature {
        Signature(kernel_key.sign(&self.message()).to_bytes())
    }
}

/// Check an attestation against the kernel's public key.
pub fn verify_attestation(
    kernel_public: &AuthorityKey,
    attestation: &Attestation,
    signature: &Signature,
) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&kernel_public.0) else {
        return false;
    };
    key.verify_strict(
        &attestation.message(),
        &DalekSignature::from_bytes(&signature.0),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::ObjectKind;

    #[test]
    fn attestation_signs_and_binds_its_fields() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = AuthorityKey(key.verifying_key().to_bytes());
        let a = Attestation {
            object: ObjectRef::new(ObjectKind::StateStore, 4),
            partition: PartitionId(2),
            at: Timestamp(1234),
            state_digest: [0x5a; 32],
        };
        let sig = a.sign(&key);
        assert!(verify_attestation(&public, &a, &sig));
        let mut b = a;
        b.state_digest[31] ^= 1;
        assert!(!verify_attestation(&public, &b, &sig));
        let mut c = a;
        c.partition = PartitionId(3);
        assert!(!verify_attestation(&public, &c, &sig));
        let mut d = a;
        d.at = Timestamp(1235);
        assert!(!verify_attestation(&public, &d, &sig));
        let other = AuthorityKey(SigningKey::from_bytes(&[4; 32]).verifying_key().to_bytes());
        assert!(!verify_attestation(&other, &a, &sig));
        assert_eq!(&a.message()[0..16], b"RVM-ATTESTATION\0");
    }
}
