//! The hash chain: `head[i] = SHA-256(head[i-1] ‖ record[i])` over all 64
//! record bytes, with `head[-1]` = [`Hash::ZERO`].

use crate::hash::Hash;
use rvm_abi::witness::RECORD_LEN;

/// The head after one more record: `SHA-256(head ‖ record)`.
///
/// One SHA-256 over 96 bytes (two compression-function blocks); the append
/// path and the verifier each do exactly this once per record.
#[inline]
pub fn chain_step(head: &Hash, record: &[u8; RECORD_LEN]) -> Hash {
    crate::sha256::two_blocks(&[&head.0, record])
}

/// The head after every record of `records` (whole 64-byte records only),
/// starting from `head`.
pub fn chain_over(mut head: Hash, records: &[[u8; RECORD_LEN]]) -> Hash {
    for r in records {
        head = chain_step(&head, r);
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_is_sha256_of_the_concatenation() {
        let rec = [0x42u8; RECORD_LEN];
        let mut buf = [0u8; 96];
        buf[..32].copy_from_slice(&[7u8; 32]);
        buf[32..].copy_from_slice(&rec);
        assert_eq!(chain_step(&Hash([7; 32]), &rec), Hash::of(&buf));
        // Every byte of the record matters.
        for i in 0..RECORD_LEN {
            let mut r2 = rec;
            r2[i] ^= 1;
            assert_ne!(chain_step(&Hash::ZERO, &r2), chain_step(&Hash::ZERO, &rec));
        }
        assert_eq!(chain_over(Hash::ZERO, &[rec, rec]), {
            let h1 = chain_step(&Hash::ZERO, &rec);
            chain_step(&h1, &rec)
        });
    }
}
