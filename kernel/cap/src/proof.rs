//! P3 proofs: the verification in the kernel of an authority's signed
//! approval of one operation, and (feature `signer`) the host-side signer
//! used by `rvm-loader caps prove`.
//!
//! The signed message is [`ApprovalMessage`] (defined in `rvm-abi`, module
//! [`rvm_abi::approval`]): operation, object, the partition performing it,
//! the root of the capability's derivation tree, the nonce, the boot id of
//! the booted bundle, and the digest of the arguments.
//!
//! The partition is bound so that an approval given to one partition cannot
//! be replayed by another holding a capability for the same object under
//! the same authority; the root so that it cannot be replayed through
//! another tree (the nonce floor is the root's, shared by every copy); the
//! boot id so that it cannot be replayed in a later boot.
//!
//! The arguments digest is computed by the kernel from the arguments it is
//! about to act on (never taken from the guest), with [`ArgsDigest::of`]; for
//! `CapDerive` and `CapRevoke` this crate computes it itself
//! ([`DeriveParams::args_digest`](crate::DeriveParams::args_digest),
//! [`revoke_args_digest`]), and for `StateValidate` and `StateCommit` it is
//! the digest of the staged set ([`staged_args_digest`]). The proof's own
//! address and the nonce register are not arguments.

use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
pub use rvm_abi::approval::{ApprovalMessage, RootRef, APPROVAL_MESSAGE_LEN};
use rvm_abi::Hypercall;
use sha2::{Digest, Sha256};

use crate::ids::{Nonce, ObjectRef, PartitionId};

/// Domain-separation prefix of every arguments digest.
pub const ARGS_TAG: [u8; 12] = *b"RVM-P3-ARGS\0";

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

/// The arguments digest of `StateValidate` and `StateCommit`: the staged
/// set the call acts on, in staging order. Equal to
/// `ArgsDigest::of(&[], data)` where `data` is `count u64 ‖ (key length u32
/// ‖ key ‖ value length u32 ‖ value)*`, integers little-endian — so
/// `rvm-loader caps prove --data-hex` of that encoding produces it.
pub fn staged_args_digest<'a>(
    items: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) -> ArgsDigest {
    let mut h = Sha256::new();
    h.update(ARGS_TAG);
    h.update(0u32.to_le_bytes());
    h.update(u64::try_from(items.len()).unwrap_or(u64::MAX).to_le_bytes());
    for (k, v) in items {
        // Keys and values are bounded by the store's limits (far below 4 GiB).
        h.update(u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.update(k);
        h.update(u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        h.update(v);
    }
    ArgsDigest(h.finalize().into())
}

/// The approval message of `op` on `object` by `partition`, through the
/// tree rooted at `root`, with `nonce`, in the boot `boot_id`, over
/// arguments `args`.
pub fn approval_message(
    op: Hypercall,
    object: ObjectRef,
    partition: PartitionId,
    root: RootRef,
    nonce: Nonce,
    boot_id: [u8; 32],
    args: &ArgsDigest,
) -> ApprovalMessage {
    ApprovalMessage {
        op,
        object_kind: object.kind,
        object_id: object.id.0,
        partition: partition.0,
        root,
        nonce: nonce.0,
        boot_id,
        args_digest: args.0,
    }
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

/// Verify `signature` over `message` with `key` (strict verification:
/// non-canonical signatures are refused).
pub(crate) fn verify_operation(
    key: &VerifyingKey,
    message: &ApprovalMessage,
    signature: &Signature,
) -> bool {
    let sig = DalekSignature::from_bytes(&signature.0);
    key.verify_strict(&message.to_bytes(), &sig).is_ok()
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

/// Sign `message` with the authority's 32-byte secret seed. Host side
/// only (feature `signer`): `rvm-loader caps prove` calls this.
#[cfg(any(test, feature = "signer"))]
pub fn sign_operation(secret_seed: &[u8; 32], message: &ApprovalMessage) -> Signature {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(secret_seed);
    Signature(key.sign(&message.to_bytes()).to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::ObjectKind;

    const SEED: [u8; 32] = [7; 32];
    const ROOT: RootRef = RootRef {
        partition: 1,
        index: 3,
        generation: 0,
    };

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
    fn the_staged_digest_is_the_args_digest_of_its_encoding() {
        let items: [(&[u8], &[u8]); 2] = [(b"k1", b"v"), (b"key2", b"")];
        let mut enc = Vec::new();
        enc.extend_from_slice(&2u64.to_le_bytes());
        for (k, v) in items {
            enc.extend_from_slice(&(k.len() as u32).to_le_bytes());
            enc.extend_from_slice(k);
            enc.extend_from_slice(&(v.len() as u32).to_le_bytes());
            enc.extend_from_slice(v);
        }
        assert_eq!(
            staged_args_digest(items.into_iter()),
            ArgsDigest::of(&[], &enc)
        );
        assert_ne!(
            staged_args_digest(items.into_iter()),
            staged_args_digest(items.into_iter().rev())
        );
    }

    #[test]
    fn signer_and_verifier_agree_and_every_field_is_bound() {
        let key = authority_key(&SEED).decode().unwrap();
        let obj = ObjectRef::new(ObjectKind::Region, 1);
        let args = ArgsDigest::of(&[0, 16], b"payload");
        let good = approval_message(
            Hypercall::RegionWrite,
            obj,
            PartitionId(1),
            ROOT,
            Nonce(5),
            [9; 32],
            &args,
        );
        let sig = sign_operation(&SEED, &good);
        assert!(verify_operation(&key, &good, &sig));
        let changed: [ApprovalMessage; 9] = [
            ApprovalMessage {
                op: Hypercall::RegionRead,
                ..good
            },
            ApprovalMessage {
                object_id: 2,
                ..good
            },
            ApprovalMessage {
                object_kind: ObjectKind::Channel,
                ..good
            },
            ApprovalMessage {
                partition: 2,
                ..good
            },
            ApprovalMessage { nonce: 6, ..good },
            ApprovalMessage {
                root: RootRef { index: 4, ..ROOT },
                ..good
            },
            ApprovalMessage {
                root: RootRef {
                    generation: 1,
                    ..ROOT
                },
                ..good
            },
            ApprovalMessage {
                boot_id: [8; 32],
                ..good
            },
            ApprovalMessage {
                args_digest: ArgsDigest::of(&[0, 16], b"payloaD").0,
                ..good
            },
        ];
        for m in &changed {
            assert!(!verify_operation(&key, m, &sig), "{m:?}");
        }
        let other = authority_key(&[8; 32]).decode().unwrap();
        assert!(!verify_operation(&other, &good, &sig));
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
