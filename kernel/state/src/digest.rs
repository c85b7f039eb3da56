//! The digests witness records carry (SHA-256 through the witness crate,
//! so the platform's accelerated compression is used): a record's `args`
//! digest, and the state hash of a snapshot.

use rvm_abi::bootinfo::HandleInfo;
use rvm_abi::journal;
use rvm_abi::recovery::StateEncoder;
use rvm_witness::sha256::Sha256;

use crate::store::StoreSnapshot;

/// First 16 bytes of SHA-256 over the concatenation of `parts`.
pub fn of_parts(parts: &[&[u8]]) -> [u8; 16] {
    Sha256::digest_parts(parts).prefix16()
}

/// Digest of hypercall argument registers x1..x6 followed by buffer bytes.
pub fn of_call(regs: &[u64; 6], data: &[u8]) -> [u8; 16] {
    of_parts(&[&journal::regs_bytes(regs), data])
}

/// The `args` of a `PartitionStart` record: the binding digest of the
/// handles the partition starts with.
pub fn of_start(handles: &[HandleInfo]) -> [u8; 16] {
    let mut h = Sha256::new();
    journal::start_digest_input(&mut |b: &[u8]| h.update(b), handles);
    h.finalize().prefix16()
}

/// Full SHA-256 of `data`.
pub fn full(data: &[u8]) -> [u8; 32] {
    Sha256::digest_parts(&[data]).0
}

/// The digest of a committed set of `count` items (ascending key order):
/// SHA-256 over [`rvm_abi::recovery::encode_committed`].
pub fn committed<'a>(count: u64, items: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> [u8; 32] {
    let mut h = Sha256::new();
    rvm_abi::recovery::encode_committed(&mut |b: &[u8]| h.update(b), count, items);
    h.finalize().0
}

/// The state hash of a snapshot: SHA-256 over [`StateEncoder`]'s encoding
/// of an agent image of `image_len` bytes, which `image` feeds in order to
/// the sink it is given, and of the committed items of `store`.
pub fn state_hash(image_len: u64, image: impl FnOnce(&mut dyn FnMut(&[u8])), store: &StoreSnapshot) -> [u8; 32] {
    let mut h = Sha256::new();
    {
        let mut enc = StateEncoder::new(|b: &[u8]| h.update(b), image_len);
        image(&mut |b: &[u8]| enc.image(b));
        enc.items(store.len() as u64);
        for (k, v) in store.items() {
            enc.item(k, v);
        }
    }
    h.finalize().0
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::store::{StateStore, StoreLimits};

    /// FIPS 180-2 appendix B.1: SHA-256("abc").
    const ABC: [u8; 32] = [
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03,
        0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
    ];

    #[test]
    fn digests_are_sha256_and_its_prefix() {
        assert_eq!(full(b"abc"), ABC);
        assert_eq!(of_parts(&[b"a", b"", b"bc"])[..], ABC[..16]);
    }

    #[test]
    fn a_call_digest_covers_the_journal_s_register_layout_then_the_bytes() {
        let regs = [1, 2, 3, 4, 5, u64::MAX];
        let mut le = Vec::new();
        for r in regs {
            le.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(of_call(&regs, b"data"), of_parts(&[&le, b"data"]));
        assert_ne!(of_call(&regs, b"data"), of_call(&regs, b"date"));
    }

    #[test]
    fn a_start_digest_binds_the_handles() {
        let h = HandleInfo { raw: 0x1_0000, kind: 4, rights: 3, agent: 0 };
        let mut input = Vec::new();
        journal::start_digest_input(&mut |b: &[u8]| input.extend_from_slice(b), &[h]);
        assert_eq!(of_start(&[h]), of_parts(&[&input]));
        assert_ne!(of_start(&[h]), of_start(&[HandleInfo { raw: 0x2_0000, ..h }]));
    }

    #[test]
    fn a_committed_digest_is_the_encoding_of_its_items_and_sees_every_byte() {
        let items: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"b", b"")];
        let mut encoded = Vec::new();
        rvm_abi::recovery::encode_committed(&mut |b: &[u8]| encoded.extend_from_slice(b), 2, items.iter().copied());
        assert_eq!(&encoded[..16], b"RVM-COMMITTED-01");
        assert_eq!(committed(2, items.iter().copied()), full(&encoded));
        // Moving a byte from a key to its value changes it.
        let moved: [(&[u8], &[u8]); 2] = [(b"a1", b""), (b"b", b"")];
        assert_ne!(committed(2, moved.iter().copied()), committed(2, items.iter().copied()));
        assert_ne!(committed(0, core::iter::empty()), committed(2, items.iter().copied()));
    }

    #[test]
    fn the_state_hash_is_the_encoding_of_image_and_committed_items() {
        let mut s = StateStore::new(StoreLimits::DEFAULT);
        s.stage(b"k", b"v").unwrap();
        s.commit().unwrap();
        let snap = s.snapshot();
        let mut encoded = Vec::new();
        {
            let mut e = StateEncoder::new(|b: &[u8]| encoded.extend_from_slice(b), 5);
            e.image(b"image");
            e.items(1);
            e.item(b"k", b"v");
        }
        let whole = state_hash(5, |feed| feed(b"image"), &snap);
        assert_eq!(whole, full(&encoded));
        // However the image is cut into pieces.
        assert_eq!(state_hash(5, |feed| ["im", "", "age"].iter().for_each(|p| feed(p.as_bytes())), &snap), whole);
        assert_ne!(state_hash(5, |feed| feed(b"image"), &StoreSnapshot::default()), whole);
    }
}
