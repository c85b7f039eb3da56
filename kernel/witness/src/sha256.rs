//! SHA-256 of the three short, fixed-shape messages the log hashes, straight
//! through the compression function.
//!
//! The chain step (32 + 64 = 96 bytes), a leaf (1 + 64 = 65 bytes) and a
//! node (1 + 32 + 32 = 65 bytes) are all exactly two 64-byte blocks once
//! padded. Laying the blocks out on the stack and calling `compress256`
//! twice skips the streaming hasher's buffer bookkeeping; the result is
//! plain FIPS 180-4 SHA-256, checked against `sha2::Sha256` in the tests.

use crate::hash::{Hash, HASH_LEN};
use sha2::digest::generic_array::{typenum::U64, GenericArray};

/// FIPS 180-4 §5.3.3 initial hash value.
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Longest message that pads into two blocks (128 − 1 − 8).
pub const TWO_BLOCK_MAX: usize = 119;

/// Copy `bytes` to offset `at` of the 128 bytes the two blocks make up.
#[inline(always)]
fn put(blocks: &mut [GenericArray<u8, U64>; 2], at: usize, bytes: &[u8]) {
    let first = bytes.len().min(64usize.saturating_sub(at));
    if first > 0 {
        blocks[0][at..at + first].copy_from_slice(&bytes[..first]);
    }
    let rest = &bytes[first..];
    if !rest.is_empty() {
        let o = (at + first) - 64;
        blocks[1][o..o + rest.len()].copy_from_slice(rest);
    }
}

/// SHA-256 of the concatenation of `parts`, whose total length must be
/// 56..=119 bytes (exactly two blocks after padding). Longer or shorter
/// input falls back to the streaming hasher.
#[inline]
pub fn two_blocks(parts: &[&[u8]]) -> Hash {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if !(56..=TWO_BLOCK_MAX).contains(&len) {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update(p);
        }
        return Hash(h.finalize().into());
    }
    // Lay the message and its padding straight into the two blocks.
    let mut blocks: [GenericArray<u8, U64>; 2] = Default::default();
    let mut at = 0;
    for p in parts {
        put(&mut blocks, at, p);
        at += p.len();
    }
    put(&mut blocks, at, &[0x80]);
    // Message length in bits, big-endian, in the last 8 bytes.
    let bits = (len as u64) * 8;
    blocks[1][56..].copy_from_slice(&bits.to_be_bytes());
    let mut state = H0;
    sha2::compress256(&mut state, &blocks);
    let mut out = [0u8; HASH_LEN];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    Hash(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn equals_sha256_for_every_length_and_split() {
        let data: std::vec::Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..160 {
            let want = Hash(Sha256::digest(&data[..len]).into());
            for split in [0, 1.min(len), len / 2, len] {
                let got = two_blocks(&[&data[..split], &data[split..len]]);
                assert_eq!(got, want, "len {len} split {split}");
            }
        }
    }
}
