//! The checkpoint signing key and its public half.
//!
//! One Ed25519 key signs every log's checkpoints. It is derived from a
//! 32-byte seed (RFC 8032 secret key); see the crate docs for where the seed
//! comes from. The public key is named, in signed notes, by [`KEY_NAME`] and
//! its 4-byte [`KeyId`]; people compare it by its [`fingerprint`]
//! (`SHA-256` of the 32 public key bytes, shown as hex), which is what a
//! manifest's `witness_key_fingerprint` holds.
//!
//! [`fingerprint`]: PublicKey::fingerprint

use crate::base64;
use crate::hash::Hash;
use core::fmt;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Key name in signature lines and verifier keys.
pub const KEY_NAME: &str = "rvm.witness";
/// Signed-note signature type byte of Ed25519.
pub const SIG_TYPE_ED25519: u8 = 0x01;
/// Length of an Ed25519 seed (secret key).
pub const SEED_LEN: usize = 32;
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The 4-byte key hash that starts each signature in a signed note:
/// the first 4 bytes of `SHA-256(KEY_NAME ‖ "\n" ‖ 0x01 ‖ public key)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An Ed25519 public key that verifies checkpoints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(fingerprint {})", self.fingerprint())
    }
}

/// Why a signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The 32 bytes are not a valid Ed25519 public key.
    BadPublicKey,
    /// The note names a different key.
    WrongKey { expected: KeyId, found: KeyId },
    /// The signature does not verify over the note text.
    Invalid,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::BadPublicKey => write!(f, "the public key is not a valid Ed25519 key"),
            SignatureError::WrongKey { expected, found } => {
                write!(f, "signed by key {found}, not by the log's key {expected}")
            }
            SignatureError::Invalid => write!(f, "the Ed25519 signature does not verify"),
        }
    }
}

impl PublicKey {
    /// `SHA-256` of the 32 key bytes: what people compare.
    pub fn fingerprint(&self) -> Hash {
        Hash::of(&self.0)
    }

    /// The signed-note key hash.
    pub fn key_id(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(KEY_NAME.as_bytes());
        h.update(b"\n");
        h.update([SIG_TYPE_ED25519]);
        h.update(self.0);
        let d = h.finalize();
        KeyId([d[0], d[1], d[2], d[3]])
    }

    /// Check an Ed25519 signature over `message` (strict verification: no
    /// malleable or small-order signatures).
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadPublicKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(message, &sig)
            .map_err(|_| SignatureError::Invalid)
    }

    /// The `@K` frame announcing this key on the console UART.
    pub fn frame(&self) -> rvm_abi::frame::Frame {
        rvm_abi::frame::Frame::Key { public: self.0 }
    }

    /// The signed-note verifier key:
    /// `rvm.witness+<8 hex digits of the key id>+<base64(0x01 ‖ public key)>`.
    pub fn to_verifier_key(&self) -> alloc::string::String {
        let mut raw = [0u8; 1 + PUBLIC_KEY_LEN];
        raw[0] = SIG_TYPE_ED25519;
        raw[1..].copy_from_slice(&self.0);
        let mut b64 = [0u8; base64::encoded_len(1 + PUBLIC_KEY_LEN)];
        let b64 = base64::encode(&raw, &mut b64).unwrap_or_default();
        alloc::format!(
            "{KEY_NAME}+{}+{}",
            self.key_id(),
            core::str::from_utf8(b64).unwrap_or("")
        )
    }

    /// Parse a verifier key written by [`to_verifier_key`](Self::to_verifier_key);
    /// the name, the algorithm byte and the key id must all agree.
    pub fn from_verifier_key(text: &str) -> Result<PublicKey, KeyParseError> {
        let text = text.trim_end_matches(['\n', '\r']);
        // The base64 key may itself contain '+': split off two fields only.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyParseError::Shape);
        };
        if name != KEY_NAME {
            return Err(KeyParseError::Name);
        }
        let mut raw = [0u8; 1 + PUBLIC_KEY_LEN];
        base64::decode(b64.as_bytes(), &mut raw).ok_or(KeyParseError::Encoding)?;
        if raw[0] != SIG_TYPE_ED25519 {
            return Err(KeyParseError::Algorithm(raw[0]));
        }
        let mut key = [0u8; PUBLIC_KEY_LEN];
        key.copy_from_slice(&raw[1..]);
        let key = PublicKey(key);
        let mut want = [0u8; 4];
        rvm_abi::hex::decode(id.as_bytes(), &mut want).ok_or(KeyParseError::Encoding)?;
        if KeyId(want) != key.key_id() {
            return Err(KeyParseError::KeyIdMismatch);
        }
        VerifyingKey::from_bytes(&key.0).map_err(|_| KeyParseError::NotAKey)?;
        Ok(key)
    }
}

/// Why a verifier key line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyParseError {
    /// Not `name+id+key`.
    Shape,
    /// The name is not [`KEY_NAME`].
    Name,
    /// Bad hex or base64.
    Encoding,
    /// The algorithm byte is not Ed25519.
    Algorithm(u8),
    /// The key id does not belong to the key.
    KeyIdMismatch,
    /// The 32 bytes are not an Ed25519 point.
    NotAKey,
}

impl fmt::Display for KeyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyParseError::Shape => write!(f, "expected <name>+<key id>+<base64 key>"),
            KeyParseError::Name => write!(f, "the key name is not {KEY_NAME}"),
            KeyParseError::Encoding => write!(f, "bad hex or base64"),
            KeyParseError::Algorithm(a) => write!(f, "algorithm byte {a:#04x} is not Ed25519"),
            KeyParseError::KeyIdMismatch => write!(f, "the key id does not match the key"),
            KeyParseError::NotAKey => write!(f, "not a valid Ed25519 public key"),
        }
    }
}

/// The private half: signs checkpoint notes.
pub struct CheckpointSigner {
    key: SigningKey,
    public: PublicKey,
}

impl CheckpointSigner {
    /// The key whose RFC 8032 secret is `seed`.
    pub fn from_seed(seed: &[u8; SEED_LEN]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public = PublicKey(key.verifying_key().to_bytes());
        Self { key, public }
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointSigner({:?})", self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test_1_public_key_and_signature() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let seed: [u8; 32] =
            hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let s = CheckpointSigner::from_seed(&seed);
        assert_eq!(
            s.public_key().0,
            hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        let sig = s.sign(b"");
        assert_eq!(
            std::format!(
                "{}{}",
                Hash(sig[..32].try_into().unwrap()),
                Hash(sig[32..].try_into().unwrap())
            ),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        s.public_key().verify(b"", &sig).unwrap();
        assert_eq!(
            s.public_key().verify(b"x", &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn verifier_key_round_trip_and_refusals() {
        let k = CheckpointSigner::from_seed(&[3; 32]).public_key();
        let text = k.to_verifier_key();
        assert!(text.starts_with("rvm.witness+"));
        assert_eq!(PublicKey::from_verifier_key(&text), Ok(k));
        let other = CheckpointSigner::from_seed(&[4; 32]).public_key();
        let (_, tail) = text.split_at(KEY_NAME.len() + 1 + 8);
        let other_id = std::format!("{KEY_NAME}+{}{tail}", other.key_id());
        assert_eq!(
            PublicKey::from_verifier_key(&other_id),
            Err(KeyParseError::KeyIdMismatch)
        );
        assert_eq!(
            PublicKey::from_verifier_key("a+b"),
            Err(KeyParseError::Shape)
        );
        assert_eq!(
            PublicKey::from_verifier_key(&text.replacen("rvm.witness", "other", 1)),
            Err(KeyParseError::Name)
        );
        assert_ne!(k.key_id(), other.key_id());
        assert_eq!(k.fingerprint(), Hash::of(&k.0));
        // Keys whose base64 contains '+' (the separator) parse too.
        let mut plus = 0;
        for s in 0..64u8 {
            let k = CheckpointSigner::from_seed(&[s; 32]).public_key();
            let text = k.to_verifier_key();
            plus += usize::from(text[KEY_NAME.len() + 10..].contains('+'));
            assert_eq!(PublicKey::from_verifier_key(&text), Ok(k), "{text}");
        }
        assert!(plus > 0, "no key with '+' in its base64 was tried");
    }

    fn hex32(s: &str) -> [u8; 32] {
        Hash::from_hex(s).unwrap().0
    }
}
