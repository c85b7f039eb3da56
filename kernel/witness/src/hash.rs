//! The one hash the witness log uses: SHA-256, as a 32-byte newtype.

use core::fmt;

/// Length of a SHA-256 digest in bytes.
pub const HASH_LEN: usize = 32;

/// A SHA-256 digest: a chain head, a Merkle node, a key fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// All zero bytes: the chain head before the first record (`head[-1]`).
    pub const ZERO: Hash = Hash([0; HASH_LEN]);

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Hash {
        crate::sha256::Sha256::digest_parts(&[data])
    }

    /// The digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// The first 16 bytes, as carried in a record's `prev` field.
    pub fn prefix16(&self) -> [u8; 16] {
        let mut p = [0u8; 16];
        p.copy_from_slice(&self.0[..16]);
        p
    }

    /// Parse 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Hash> {
        let mut b = [0u8; HASH_LEN];
        rvm_abi::hex::decode(text.as_bytes(), &mut b)?;
        Some(Hash(b))
    }
}

impl From<[u8; HASH_LEN]> for Hash {
    fn from(b: [u8; HASH_LEN]) -> Self {
        Hash(b)
    }
}

/// Lower-case hex, 64 digits.
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_hex() {
        // FIPS 180-2 example: SHA-256("abc").
        let h = Hash::of(b"abc");
        let text = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(std::format!("{h}"), text);
        assert_eq!(Hash::from_hex(text), Some(h));
        assert_eq!(Hash::from_hex(&text[1..]), None);
        assert_eq!(h.prefix16()[..], h.0[..16]);
    }
}
