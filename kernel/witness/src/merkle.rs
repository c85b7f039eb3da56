//! RFC 6962 / RFC 9162 Merkle tree over the log's records.
//!
//! * leaf hash: `SHA-256(0x00 ‖ record)` over the 64 record bytes;
//! * node hash: `SHA-256(0x01 ‖ left ‖ right)`;
//! * the root of an empty tree is `SHA-256("")`.
//!
//! The kernel keeps only a [`CompactRange`] (at most 64 hashes, 2 KiB, no
//! heap): enough to produce the root for a checkpoint. The host keeps a
//! whole [`MerkleTree`] to build inclusion and consistency proofs. Both sides
//! verify proofs with [`verify_inclusion`] and [`verify_consistency`], which
//! follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step.

use crate::hash::Hash;
use core::fmt;

/// Domain separation byte of a leaf hash.
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain separation byte of an interior node hash.
pub const NODE_PREFIX: u8 = 0x01;
/// Most hashes a compact range holds: one per bit of a `u64` size.
pub const COMPACT_RANGE_CAPACITY: usize = 64;

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    crate::sha256::two_blocks(&[&[LEAF_PREFIX], data])
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    crate::sha256::two_blocks(&[&[NODE_PREFIX], &left.0, &right.0])
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Hash::of(&[])
}

/// Why a proof or a proof request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofError {
    /// The leaf index is not inside the tree (`index >= size`).
    IndexOutOfRange { index: u64, size: u64 },
    /// The tree sizes are not `old <= new`, or exceed the leaves known.
    SizeOutOfRange { old: u64, new: u64 },
    /// The proof has more or fewer hashes than the sizes call for.
    WrongLength,
    /// The proof is well formed but leads to a different root.
    RootMismatch,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofError::IndexOutOfRange { index, size } => {
                write!(f, "leaf {index} is not in a tree of {size} leaves")
            }
            ProofError::SizeOutOfRange { old, new } => {
                write!(f, "no consistency proof from size {old} to size {new}")
            }
            ProofError::WrongLength => write!(f, "the proof has the wrong number of hashes"),
            ProofError::RootMismatch => write!(f, "the proof does not lead to the signed root"),
        }
    }
}

/// The right edge of a Merkle tree: the roots of its perfect subtrees, from
/// the largest (leftmost) to the smallest. Appending a leaf costs one leaf
/// hash plus, amortised, one node hash; the root costs `popcount(size) - 1`
/// node hashes. Fixed size, no heap: suitable for EL2.
#[derive(Clone)]
pub struct CompactRange {
    nodes: [Hash; COMPACT_RANGE_CAPACITY],
    count: usize,
    size: u64,
}

impl Default for CompactRange {
    fn default() -> Self {
        Self::new()
    }
}

impl CompactRange {
    /// The range of the empty tree.
    pub const fn new() -> Self {
        Self {
            nodes: [Hash::ZERO; COMPACT_RANGE_CAPACITY],
            count: 0,
            size: 0,
        }
    }

    /// The range of a tree of `size` leaves from its right edge, the roots
    /// of its perfect subtrees from the largest to the smallest
    /// ([`CompactRange::frontier`]); `None` unless there is exactly one per
    /// set bit of `size`.
    pub fn from_frontier(size: u64, frontier: &[Hash]) -> Option<Self> {
        if frontier.len() != size.count_ones() as usize {
            return None;
        }
        let mut r = Self::new();
        r.nodes[..frontier.len()].copy_from_slice(frontier);
        r.count = frontier.len();
        r.size = size;
        Some(r)
    }

    /// The right edge: the roots of the perfect subtrees, largest first.
    pub fn frontier(&self) -> &[Hash] {
        &self.nodes[..self.count]
    }

    /// Number of leaves folded in.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// Fold in one more leaf, given as its leaf hash. A tree of `u64::MAX`
    /// leaves is full; further pushes are ignored (`false`).
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> bool {
        let Some(next) = self.size.checked_add(1) else {
            return false;
        };
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing 1 bit of the old size is a perfect subtree the new
        // leaf completes.
        while s & 1 == 1 {
            self.count -= 1;
            h = node_hash(&self.nodes[self.count], &h);
            s >>= 1;
        }
        self.nodes[self.count] = h;
        self.count += 1;
        self.size = next;
        true
    }

    /// Fold in one more leaf, given as the record bytes.
    pub fn push(&mut self, record: &[u8]) -> bool {
        self.push_leaf_hash(leaf_hash(record))
    }

    /// The RFC 6962 root of the leaves folded in so far.
    pub fn root(&self) -> Hash {
        let Some((last, rest)) = self.nodes[..self.count].split_last() else {
            return empty_root();
        };
        rest.iter()
            .rev()
            .fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2 steps 1–4).
pub fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    Ok(r)
}

/// Check that the leaf with hash `leaf` sits at `index` of the tree of
/// `size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(leaf, index, size, path)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Check that the tree of `old_size` leaves with root `old_root` is a prefix
/// of the tree of `new_size` leaves with root `new_root` (RFC 9162
/// §2.1.4.2). Equal sizes need an empty proof and equal roots; the empty
/// tree is a prefix of every tree.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOutOfRange {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    // Step 1–2: a power-of-two old tree is itself the first node.
    let (first, rest): (Hash, &[Hash]) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((f, r)) => (*f, r),
            None => return Err(ProofError::WrongLength),
        }
    };
    // Steps 3–4.
    let mut f = old_size - 1;
    let mut s = new_size - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // Step 5.
    let mut fr = first;
    let mut sr = first;
    // Step 6.
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 7.
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

pub use tree::MerkleTree;

mod tree {
    use super::*;
    use alloc::vec::Vec;

    /// A whole tree, every level kept: `levels[j][i]` is the root of the
    /// perfect subtree over leaves `[i·2^j, (i+1)·2^j)`. Two hashes of
    /// memory per leaf; any subtree root in O(log n), a proof in O(log² n).
    #[derive(Clone, Debug, Default)]
    pub struct MerkleTree {
        levels: Vec<Vec<Hash>>,
    }

    fn largest_power_of_two_below(n: u64) -> u64 {
        debug_assert!(n > 1);
        1 << (63 - (n - 1).leading_zeros())
    }

    impl MerkleTree {
        /// An empty tree.
        pub fn new() -> Self {
            Self {
                levels: alloc::vec![Vec::new()],
            }
        }

        /// A tree over the given records (any number of 64-byte records
        /// back to back; each whole chunk of `leaf_len` bytes is one leaf).
        pub fn from_leaves<'a>(leaves: impl IntoIterator<Item = &'a [u8]>) -> Self {
            let mut t = Self::new();
            for l in leaves {
                t.push_leaf_hash(leaf_hash(l));
            }
            t
        }

        /// Add one leaf, given as its leaf hash.
        pub fn push_leaf_hash(&mut self, leaf: Hash) {
            let mut h = leaf;
            let mut level = 0;
            loop {
                if self.levels.len() == level {
                    self.levels.push(Vec::new());
                }
                let row = &mut self.levels[level];
                row.push(h);
                let n = row.len();
                if n % 2 == 1 {
                    break;
                }
                h = node_hash(&row[n - 2], &row[n - 1]);
                level += 1;
            }
        }

        /// Number of leaves.
        pub fn len(&self) -> u64 {
            self.levels.first().map_or(0, |r| r.len() as u64)
        }

        /// Whether the tree has no leaves.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// The leaf hash at `index`.
        pub fn leaf(&self, index: u64) -> Option<Hash> {
            self.levels
                .first()?
                .get(usize::try_from(index).ok()?)
                .copied()
        }

        /// `MTH(D[a:b])`, for `a < b <= len`.
        fn range_root(&self, a: u64, b: u64) -> Hash {
            let n = b - a;
            if n.is_power_of_two() && a.is_multiple_of(n) {
                let level = n.trailing_zeros() as usize;
                // Both indices are bounded by the leaf count, which fits usize.
                return self.levels[level][(a >> level) as usize];
            }
            let k = largest_power_of_two_below(n);
            node_hash(&self.range_root(a, a + k), &self.range_root(a + k, b))
        }

        /// The root of the tree made of the first `size` leaves.
        pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
            if size > self.len() {
                return Err(ProofError::SizeOutOfRange {
                    old: size,
                    new: self.len(),
                });
            }
            Ok(if size == 0 {
                empty_root()
            } else {
                self.range_root(0, size)
            })
        }

        /// RFC 6962 `PATH(index, D[0:size])`.
        pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
            if size > self.len() {
                return Err(ProofError::SizeOutOfRange {
                    old: size,
                    new: self.len(),
                });
            }
            if index >= size {
                return Err(ProofError::IndexOutOfRange { index, size });
            }
            let mut path = Vec::new();
            self.path(index, 0, size, &mut path);
            Ok(path)
        }

        fn path(&self, m: u64, a: u64, b: u64, out: &mut Vec<Hash>) {
            let n = b - a;
            if n <= 1 {
                return;
            }
            let k = largest_power_of_two_below(n);
            if m < k {
                self.path(m, a, a + k, out);
                out.push(self.range_root(a + k, b));
            } else {
                self.path(m - k, a + k, b, out);
                out.push(self.range_root(a, a + k));
            }
        }

        /// RFC 6962 `PROOF(old, D[0:new])`.
        pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
            if old > new || new > self.len() {
                return Err(ProofError::SizeOutOfRange { old, new });
            }
            let mut out = Vec::new();
            if old == 0 || old == new {
                return Ok(out);
            }
            self.subproof(old, 0, new, true, &mut out);
            Ok(out)
        }

        fn subproof(&self, m: u64, a: u64, b: u64, whole: bool, out: &mut Vec<Hash>) {
            let n = b - a;
            if m == n {
                if !whole {
                    out.push(self.range_root(a, b));
                }
                return;
            }
            let k = largest_power_of_two_below(n);
            if m <= k {
                self.subproof(m, a, a + k, whole, out);
                out.push(self.range_root(a + k, b));
            } else {
                self.subproof(m - k, a + k, b, false, out);
                out.push(self.range_root(a, a + k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    // A literal transcription of RFC 6962 §2.1 over byte strings: the
    // reference the optimised code is checked against.
    fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => Hash::of(&[]),
            1 => {
                let mut v = std::vec![0u8];
                v.extend_from_slice(&d[0]);
                Hash::of(&v)
            }
            n => {
                let k = naive_k(n);
                let mut v = std::vec![1u8];
                v.extend_from_slice(&mth(&d[..k]).0);
                v.extend_from_slice(&mth(&d[k..]).0);
                Hash::of(&v)
            }
        }
    }
    fn naive_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }
    fn naive_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        if d.len() <= 1 {
            return Vec::new();
        }
        let k = naive_k(d.len());
        if m < k {
            let mut p = naive_path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }
    fn naive_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { std::vec![mth(d)] };
        }
        let k = naive_k(n);
        if m <= k {
            let mut p = naive_subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| std::vec![(i % 251) as u8; 64 + i % 3])
            .collect()
    }

    #[test]
    fn rfc6962_empty_root_known_value() {
        assert_eq!(
            std::format!("{}", empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn roots_match_the_reference_for_every_size() {
        let d = leaves(70);
        let tree = MerkleTree::from_leaves(d.iter().map(|v| v.as_slice()));
        let mut compact = CompactRange::new();
        assert_eq!(compact.root(), mth(&[]));
        for n in 0..=d.len() {
            let want = mth(&d[..n]);
            assert_eq!(tree.root(n as u64).unwrap(), want, "tree root at {n}");
            assert_eq!(compact.root(), want, "compact root at {n}");
            if n < d.len() {
                compact.push(&d[n]);
            }
        }
        assert!(tree.root(71).is_err());
    }

    #[test]
    fn inclusion_proofs_match_the_reference_and_verify() {
        let d = leaves(37);
        let tree = MerkleTree::from_leaves(d.iter().map(|v| v.as_slice()));
        for size in 1..=d.len() {
            let root = mth(&d[..size]);
            for m in 0..size {
                let path = tree.inclusion_proof(m as u64, size as u64).unwrap();
                assert_eq!(path, naive_path(m, &d[..size]), "m={m} size={size}");
                let leaf = leaf_hash(&d[m]);
                verify_inclusion(&leaf, m as u64, size as u64, &path, &root).unwrap();
                // Wrong index, wrong leaf, short and long paths all fail.
                if size > 1 {
                    let other = (m + 1) % size;
                    assert!(
                        verify_inclusion(&leaf, other as u64, size as u64, &path, &root).is_err()
                    );
                    assert!(verify_inclusion(
                        &leaf_hash(b"x"),
                        m as u64,
                        size as u64,
                        &path,
                        &root
                    )
                    .is_err());
                    assert!(
                        verify_inclusion(&leaf, m as u64, size as u64, &path[1..], &root).is_err()
                    );
                }
                let mut long = path.clone();
                long.push(root);
                assert!(verify_inclusion(&leaf, m as u64, size as u64, &long, &root).is_err());
            }
            assert_eq!(
                tree.inclusion_proof(size as u64, size as u64),
                Err(ProofError::IndexOutOfRange {
                    index: size as u64,
                    size: size as u64
                })
            );
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_and_verify() {
        let d = leaves(33);
        let tree = MerkleTree::from_leaves(d.iter().map(|v| v.as_slice()));
        for new in 0..=d.len() {
            let new_root = mth(&d[..new]);
            for old in 0..=new {
                let old_root = mth(&d[..old]);
                let proof = tree.consistency_proof(old as u64, new as u64).unwrap();
                let want = if old == 0 || old == new {
                    Vec::new()
                } else {
                    naive_subproof(old, &d[..new], true)
                };
                assert_eq!(proof, want, "old={old} new={new}");
                verify_consistency(old as u64, new as u64, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("old={old} new={new}: {e}"));
                if old > 0 && old < new {
                    // A different old root, or a tampered proof hash, fails.
                    assert!(verify_consistency(
                        old as u64,
                        new as u64,
                        &leaf_hash(b"x"),
                        &new_root,
                        &proof
                    )
                    .is_err());
                    for i in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[i].0[0] ^= 1;
                        assert!(
                            verify_consistency(old as u64, new as u64, &old_root, &new_root, &bad)
                                .is_err(),
                            "old={old} new={new} i={i}"
                        );
                    }
                }
            }
        }
        assert!(tree.consistency_proof(5, 4).is_err());
        assert!(verify_consistency(5, 4, &empty_root(), &empty_root(), &[]).is_err());
    }
}
