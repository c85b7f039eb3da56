//! The Ed25519 keys a loader home keeps: the hypervisor's witness
//! checkpoint signing key (one per home; its seed travels in the bundle)
//! and one authority key per partition that holds P3 capabilities (its
//! public half is bound to the partition's capabilities in the bundle; its
//! seed stays in the home and signs approvals, `caps prove`), and the
//! operator key that signs orders to a running hypervisor (`partition
//! unfence|evict`; its public half travels in every bundle). Seeds are
//! generated once, kept `0600`.

use crate::model::{KeyFingerprint, PartitionName};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs witness checkpoints on the device.
    Witness,
    /// Authorises one partition's P3 operations (operator approvals).
    Authority(PartitionName),
    /// Signs the operator's orders to a running hypervisor
    /// (`partition unfence|evict`); its public half travels in every bundle.
    Operator,
}

/// Folder of the authority keys under `RVM_HOME/keys/`.
pub const AUTHORITY_DIR: &str = "authority";

impl KeyRole {
    /// Path under `RVM_HOME/keys/`.
    pub fn file_name(&self) -> PathBuf {
        match self {
            KeyRole::Witness => PathBuf::from("witness.seed"),
            KeyRole::Authority(p) => PathBuf::from(AUTHORITY_DIR).join(format!("{p}.seed")),
            KeyRole::Operator => PathBuf::from("operator.seed"),
        }
    }

    /// How the key is named in messages.
    pub fn name(&self) -> String {
        match self {
            KeyRole::Witness => "witness".to_string(),
            KeyRole::Authority(p) => format!("authority ({p})"),
            KeyRole::Operator => "operator".to_string(),
        }
    }
}

/// A key: its 32-byte seed and public half.
#[derive(Clone)]
pub struct Key {
    pub seed: [u8; 32],
    pub public: [u8; 32],
}

impl Key {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        Self { seed, public }
    }

    /// SHA-256 of the public key: what a manifest's `witness_key_fingerprint` pins.
    pub fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint(Sha256::digest(self.public).into())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        write!(f, "Key({})", self.fingerprint())
    }
}

/// 32 bytes from the operating system's random source.
pub fn random_seed() -> std::io::Result<[u8; 32]> {
    rvm_witness_host::files::random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test_vector_1() {
        let mut seed = [0u8; 32];
        rvm_abi::hex::decode(
            b"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            &mut seed,
        )
        .unwrap();
        let k = Key::from_seed(seed);
        let mut public = [0u8; 32];
        rvm_abi::hex::decode(
            b"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            &mut public,
        )
        .unwrap();
        assert_eq!(k.public, public);
        assert!(!format!("{k:?}").contains("9d61"));
    }
}
