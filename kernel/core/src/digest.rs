//! Argument digests written into witness records (SHA-256 through the
//! witness crate, so the platform's accelerated compression is used).

use rvm_witness::sha256::Sha256;

/// First 16 bytes of SHA-256 over the concatenation of `parts`.
pub fn of_parts(parts: &[&[u8]]) -> [u8; 16] {
    Sha256::digest_parts(parts).prefix16()
}

/// Digest of hypercall argument registers x1..x6 followed by buffer bytes.
pub fn of_call(regs: &[u64; 6], data: &[u8]) -> [u8; 16] {
    let mut r = [0u8; 48];
    for (chunk, v) in r.chunks_exact_mut(8).zip(regs) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    of_parts(&[&r, data])
}

/// Full SHA-256 of `data`.
pub fn full(data: &[u8]) -> [u8; 32] {
    Sha256::digest_parts(&[data]).0
}
