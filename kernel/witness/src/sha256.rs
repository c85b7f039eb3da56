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

/// A SHA-256 compression function: fold 64-byte blocks into the state.
pub type CompressFn = fn(&mut [u32; 8], &[[u8; 64]]);

/// A faster compression function the platform installed (the EL2 image
/// installs one using the Armv8 SHA-2 instructions when the CPU has them).
static BACKEND: spin::Once<CompressFn> = spin::Once::new();

/// Install `f` as the compression function for every SHA-256 this crate
/// (and the kernel's digests) compute. The first call wins. The caller must
/// have checked that `f` computes FIPS 180-4 SHA-256 (see [`self_test`]).
pub fn install_compress(f: CompressFn) {
    BACKEND.call_once(|| f);
}

/// Whether a platform compression function is in use.
pub fn accelerated() -> bool {
    BACKEND.get().is_some()
}

/// Check `f` against the portable implementation on a few messages.
pub fn self_test(f: CompressFn) -> bool {
    let mut block = [[0u8; 64]; 2];
    for (i, b) in block.iter_mut().flatten().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    let mut a = H0;
    let mut b = H0;
    f(&mut a, &block);
    portable(&mut b, &block);
    a == b
}

fn portable(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    for block in blocks {
        sha2::compress256(state, core::slice::from_ref(GenericArray::<u8, U64>::from_slice(block)));
    }
}

/// Fold `blocks` into `state` with the installed or the portable function.
#[inline]
pub fn compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    match BACKEND.get() {
        Some(f) => f(state, blocks),
        None => portable(state, blocks),
    }
}

/// Streaming SHA-256 over [`compress`].
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    buf: [u8; 64],
    buffered: usize,
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub const fn new() -> Self {
        Self { state: H0, buf: [0; 64], buffered: 0, len: 0 }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let take = (64 - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 64 {
                return;
            }
            let block = self.buf;
            compress(&mut self.state, core::slice::from_ref(&block));
            self.buffered = 0;
        }
        let whole = data.len() / 64 * 64;
        if whole > 0 {
            let (blocks, rest) = data.split_at(whole);
            let (chunks, _) = blocks.as_chunks::<64>();
            compress(&mut self.state, chunks);
            data = rest;
        }
        self.buf[..data.len()].copy_from_slice(data);
        self.buffered = data.len();
    }

    pub fn finalize(mut self) -> Hash {
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        let zeros = (55usize.wrapping_sub(self.buffered)) % 64;
        let n = 1 + zeros;
        pad[n..n + 8].copy_from_slice(&bits.to_be_bytes());
        let len = self.len;
        self.update(&pad[..n + 8]);
        self.len = len;
        let mut out = [0u8; HASH_LEN];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        Hash(out)
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn digest_parts(parts: &[&[u8]]) -> Hash {
        let mut h = Self::new();
        for p in parts {
            h.update(p);
        }
        h.finalize()
    }
}

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
fn put(blocks: &mut [[u8; 64]; 2], at: usize, bytes: &[u8]) {
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
        return Sha256::digest_parts(parts);
    }
    // Lay the message and its padding straight into the two blocks.
    let mut blocks = [[0u8; 64]; 2];
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
    compress(&mut state, &blocks);
    let mut out = [0u8; HASH_LEN];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    Hash(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn streaming_hasher_matches_sha2_at_every_length_and_split() {
        let data: alloc::vec::Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            for split in [0, 1, len / 2, len.saturating_sub(1), len] {
                let split = split.min(len);
                let mut h = super::Sha256::new();
                h.update(&data[..split]);
                h.update(&data[split..len]);
                let want: [u8; 32] = sha2::Sha256::digest(&data[..len]).into();
                assert_eq!(h.finalize().0, want, "len {len} split {split}");
            }
        }
        assert!(self_test(portable));
        let broken: CompressFn = |state, _| state[0] ^= 1;
        assert!(!self_test(broken));
    }

    #[test]
    fn equals_sha256_for_every_length_and_split() {
        let data: std::vec::Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..160 {
            let want = Hash(sha2::Sha256::digest(&data[..len]).into());
            for split in [0, 1.min(len), len / 2, len] {
                let got = two_blocks(&[&data[..split], &data[split..len]]);
                assert_eq!(got, want, "len {len} split {split}");
            }
        }
    }
}
