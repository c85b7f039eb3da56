//! P3 proofs: the one definition of the message an authority signs to approve
//! an operation, its verification in the kernel, and (feature `signer`) the
//! host-side signer used by `rvm-loader caps prove`.
//!
//! # The signed message (72 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | [`OPERATION_TAG`] (domain separation) |
//! | 16 | 2 | operation: the [`Hypercall`] number |
//! | 18 | 1 | object kind ([`ObjectKind`](rvm_abi::ObjectKind) code) |
//! | 19 | 1 | reserved, 0 |
//! | 20 | 4 | object id |
//! | 24 | 4 | partition performing the operation |
//! | 28 | 4 | reserved, 0 |
//! | 32 | 8 | nonce (must exceed the capability's last nonce) |
//! | 40 | 32 | [`ArgsDigest`] of the operation's arguments |
//!
//! The partition is bound in addition to (operation, object, arguments,
//! nonce) so that an approval given to one partition cannot be replayed by
//! another partition holding a capability for the same object under the same
//! authority.
//!
//! The arguments digest is computed by the kernel from the arguments it is
//! about to act on (never taken from the guest), with [`ArgsDigest::of`]; for
//! `CapDerive` and `CapRevoke` this crate computes it itself
//! ([`DeriveParams::args_digest`](crate::DeriveParams::args_digest),
//! [`revoke_args_digest`]). The proof's own address and the nonce register are
//! not arguments.

use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use rvm_abi::Hypercall;
use sha2::{Digest, Sha256};

use crate::ids::{Nonce, ObjectRef, PartitionId};

/// Domain-separation prefix of every P3 operation message.
pub const OPERATION_TAG: [u8; 16] = *b"RVM-P3-OPERATION";
/// Domain-separation prefix of every arguments digest.
pub const ARGS_TAG: [u8; 12] = *b"RVM-P3-ARGS\0";
/// Length of the signed operation message.
pub const OPERATION_MESSAGE_LEN: usize = 72;

/// An Ed25519 public key that authorises P3 operations on the capabilities
/// it was bound to at install (and on everything derived from them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AuthorityKey(pub [u8; 32]);

impl AuthorityKey {
    /// Decode the key, refusing encodings that are not a curve point and weak
    /// (small-order) keys, for which signatures prove nothing.
    pub fn decode(&self) -> Option<VerifyingKey> {
        let key = VerifyingKey::from_bytes(&self.0).ok()?;
        (!key.is_weak()).then_some(key)
    }
}

/// A 64-byte Ed25519 signature as the guest hands it to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

/// SHA-256 of an operation's arguments, bound into the signed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArgsDigest(pub [u8; 32]);

impl ArgsDigest {
    /// `SHA-256(ARGS_TAG ‖ count u32 ‖ each word u64 ‖ data)`, all integers
    /// little-endian: the operation's register arguments (without the proof
    /// address and the nonce), then the bytes of any buffer it acts on.
    pub fn of(words: &[u64], data: &[u8]) -> ArgsDigest {
        let mut h = Sha256::new();
        h.update(ARGS_TAG);
        // A slice of u64 longer than u32::MAX words cannot exist on the
        // targets RVM supports; saturate rather than truncate if it did.
        let count = u32::try_from(words.len()).unwrap_or(u32::MAX);
        h.update(count.to_le_bytes());
        for w in words {
            h.update(w.to_le_bytes());
        }
        h.update(data);
        ArgsDigest(h.finalize().into())
    }
}

/// The arguments digest of `CapRevoke`: it has no arguments beyond the
/// capability's object, which the message already names.
pub fn revoke_args_digest() -> ArgsDigest {
    ArgsDigest::of(&[], &[])
}

/// The exact bytes an authority signs to approve `op` on `object` by
/// `partition` with `nonce` and arguments `args`.
pub fn operation_message(
    op: Hypercall,
    object: ObjectRef,
    partition: PartitionId,
    nonce: Nonce,
    args: &ArgsDigest,
) -> [u8; OPERATION_MESSAGE_LEN] {
    let mut m = [0u8; OPERATION_MESSAGE_LEN];
    m[0..16].copy_from_slice(&OPERATION_TAG);
    m[16..18].copy_from_slice(&(op as u16).to_le_bytes());
    m[18] = object.kind as u8;
    m[20..24].copy_from_slice(&object.id.0.to_le_bytes());
    m[24..28].copy_from_slice(&partition.0.to_le_bytes());
    m[32..40].copy_from_slice(&nonce.0.to_le_bytes());
    m[40..72].copy_from_slice(&args.0);
    m
}

/// An operation's P3 proof as the kernel presents it to
/// [`CapabilitySpace::check`](crate::CapabilitySpace::check): the call being
/// made, the digest the kernel computed of its arguments, and the signature
/// the guest supplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof<'a> {
    pub op: Hypercall,
    pub args: ArgsDigest,
    pub signature: &'a Signature,
}

/// Verify `signature` over the operation message with `key` (strict
/// verification: non-canonical signatures are refused).
pub(crate) fn verify_operation(
    key: &VerifyingKey,
    op: Hypercall,
    object: ObjectRef,
    partition: PartitionId,
    nonce: Nonce,
    args: &ArgsDigest,
    signature: &Signature,
) -> bool {
    let message = operation_message(op, object, partition, nonce, args);
    let sig = DalekSignature::from_bytes(&signature.0);
    key.verify_strict(&message, &sig).is_ok()
}

/// The authority public key for a 32-byte Ed25519 secret seed.
#[cfg(any(test, feature = "signer"))]
pub fn authority_key(secret_seed: &[u8; 32]) -> AuthorityKey {
    AuthorityKey(
        ed25519_dalek::SigningKey::from_bytes(secret_seed)
            .verifying_key()
            .to_bytes(),
    )
}

/// Sign an approval of `op` on `object` by `partition` with `nonce` and
/// arguments `args`, with the authority's 32-byte secret seed. Host side only
/// (feature `signer`): `rvm-loader caps prove` calls this.
#[cfg(any(test, feature = "signer"))]
pub fn sign_operation(
    secret_seed: &[u8; 32],
    op: Hypercall,
    object: ObjectRef,
    partition: PartitionId,
    nonce: Nonce,
    args: &ArgsDigest,
) -> Signature {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(secret_seed);
    Signature(
        key.sign(&operation_message(op, object, partition, nonce, args))
            .to_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::ObjectKind;

    const SEED: [u8; 32] = [7; 32];

    #[test]
    fn message_layout_is_fixed() {
        let args = ArgsDigest([0xaa; 32]);
        let m = operation_message(
            Hypercall::CapRevoke,
            ObjectRef::new(ObjectKind::Channel, 0x0102_0304),
            PartitionId(9),
            Nonce(0x1122_3344_5566_7788),
            &args,
        );
        assert_eq!(&m[0..16], b"RVM-P3-OPERATION");
        assert_eq!(m[16..18], [0x04, 0x00]);
        assert_eq!(m[18], ObjectKind::Channel as u8);
        assert_eq!(m[19], 0);
        assert_eq!(m[20..24], [0x04, 0x03, 0x02, 0x01]);
        assert_eq!(m[24..28], [9, 0, 0, 0]);
        assert_eq!(m[28..32], [0; 4]);
        assert_eq!(m[32..40], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(m[40..72], [0xaa; 32]);
    }

    #[test]
    fn args_digest_separates_words_from_data() {
        // One word 1 versus the same eight bytes as data.
        assert_ne!(
            ArgsDigest::of(&[1], &[]),
            ArgsDigest::of(&[], &1u64.to_le_bytes())
        );
        assert_ne!(ArgsDigest::of(&[1, 2], &[]), ArgsDigest::of(&[2, 1], &[]));
        assert_eq!(ArgsDigest::of(&[3], b"x"), ArgsDigest::of(&[3], b"x"));
    }

    #[test]
    fn signer_and_verifier_agree_and_every_field_is_bound() {
        let key = authority_key(&SEED).decode().unwrap();
        let obj = ObjectRef::new(ObjectKind::Region, 1);
        let args = ArgsDigest::of(&[0, 16], b"payload");
        let sig = sign_operation(
            &SEED,
            Hypercall::RegionWrite,
            obj,
            PartitionId(1),
            Nonce(5),
            &args,
        );
        let ok = |op, o, p, n, a: &ArgsDigest| verify_operation(&key, op, o, p, n, a, &sig);
        assert!(ok(
            Hypercall::RegionWrite,
            obj,
            PartitionId(1),
            Nonce(5),
            &args
        ));
        assert!(!ok(
            Hypercall::RegionRead,
            obj,
            PartitionId(1),
            Nonce(5),
            &args
        ));
        assert!(!ok(
            Hypercall::RegionWrite,
            ObjectRef::new(ObjectKind::Region, 2),
            PartitionId(1),
            Nonce(5),
            &args
        ));
        assert!(!ok(
            Hypercall::RegionWrite,
            ObjectRef::new(ObjectKind::Channel, 1),
            PartitionId(1),
            Nonce(5),
            &args
        ));
        assert!(!ok(
            Hypercall::RegionWrite,
            obj,
            PartitionId(2),
            Nonce(5),
            &args
        ));
        assert!(!ok(
            Hypercall::RegionWrite,
            obj,
            PartitionId(1),
            Nonce(6),
            &args
        ));
        assert!(!ok(
            Hypercall::RegionWrite,
            obj,
            PartitionId(1),
            Nonce(5),
            &ArgsDigest::of(&[0, 16], b"payloaD")
        ));
        let other = authority_key(&[8; 32]).decode().unwrap();
        assert!(!verify_operation(
            &other,
            Hypercall::RegionWrite,
            obj,
            PartitionId(1),
            Nonce(5),
            &args,
            &sig
        ));
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order) encodes as 1 followed by zeros.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(AuthorityKey(identity).decode().is_none());
        // y = 2 is not the y of any curve point: (y² - 1) / (d·y² + 1) is
        // not a square modulo 2^255 - 19.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(AuthorityKey(off_curve).decode().is_none());
        assert!(authority_key(&SEED).decode().is_some());
    }
}
