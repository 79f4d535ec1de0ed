//! RFC 6962 / RFC 9162 §2.1 Merkle tree hashing, proof generation and proof verification.
//!
//! Leaves are hashed as `SHA-256(0x00 ‖ data)` and interior nodes as `SHA-256(0x01 ‖ left ‖
//! right)`, so a leaf can never be passed off as a node. [`MerkleTree`] is the append-only
//! in-memory view a log keeps to answer proof requests; [`verify_inclusion`] and
//! [`verify_consistency`] are what everyone else runs on proofs they were sent. Verification
//! follows the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and never trusts a proof's
//! length: a proof longer than [`MAX_PROOF_LEN`] hashes is refused before any hashing.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Bytes in a SHA-256 hash.
pub const HASH_LEN: usize = 32;

/// Longest proof accepted: a tree of at most 2^64 leaves never needs more hashes than this.
pub const MAX_PROOF_LEN: usize = 64;

/// Length of the base64 text of a [`Hash`](struct@Hash) (44 characters, one `=` of padding).
const HASH_BASE64_LEN: usize = 44;

/// A SHA-256 hash of a leaf, a node or a tree.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; HASH_LEN]);

/// Why a text is not the base64 of a [`Hash`](struct@Hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashParseError {
    /// Not 44 characters of canonical, padded standard base64 of 32 bytes.
    #[error("a hash is 44 characters of padded standard base64 (32 bytes)")]
    Malformed,
}

impl Hash {
    /// Wraps raw hash bytes.
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Hash(bytes)
    }

    /// The raw hash bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Wraps a slice if it is exactly [`HASH_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Hash)
    }

    /// Parses the canonical padded standard base64 form used by checkpoints and proofs.
    pub fn from_base64(text: &str) -> Result<Self, HashParseError> {
        // Checking the length first bounds the decoder's allocation on hostile input.
        if text.len() != HASH_BASE64_LEN {
            return Err(HashParseError::Malformed);
        }
        let bytes = BASE64.decode(text).map_err(|_| HashParseError::Malformed)?;
        Hash::from_slice(&bytes).ok_or(HashParseError::Malformed)
    }

    /// The padded standard base64 form.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_base64())
    }
}

impl FromStr for Hash {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash::from_base64(s)
    }
}

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The hash of a leaf holding `data`: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// Why a proof did not verify. Every variant is the prover's fault (or a forgery).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The proof has more than [`MAX_PROOF_LEN`] hashes.
    #[error("proof of {len} hashes exceeds the {MAX_PROOF_LEN}-hash limit")]
    TooLong {
        /// Hashes in the proof.
        len: usize,
    },
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// The older tree is larger than the newer one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesOutOfOrder {
        /// Claimed old size.
        old_size: u64,
        /// Claimed new size.
        new_size: u64,
    },
    /// A consistency proof from the empty tree proves nothing, so none is accepted.
    #[error("a consistency proof from the empty tree is meaningless")]
    FromEmptyTree,
    /// The proof has the wrong number of hashes for the claimed sizes and index.
    #[error("proof has the wrong number of hashes for the claimed tree sizes")]
    WrongLength,
    /// The proof leads to a different (new) root than the one claimed.
    #[error("proof does not lead to the claimed root")]
    RootMismatch,
    /// A consistency proof leads to a different old root than the one claimed.
    #[error("consistency proof does not lead to the claimed old root")]
    OldRootMismatch,
}

/// A local misuse of [`MerkleTree`]: asking about leaves or sizes it does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A size larger than the tree was requested.
    #[error("size {requested} is larger than the tree ({size} leaves)")]
    SizeOutOfRange {
        /// Requested size.
        requested: u64,
        /// Leaves in the tree.
        size: u64,
    },
    /// A leaf index outside the requested tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Requested tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one was requested.
    #[error("old size {old_size} is larger than new size {new_size}")]
    SizesOutOfOrder {
        /// Requested old size.
        old_size: u64,
        /// Requested new size.
        new_size: u64,
    },
}

/// Largest power of two strictly below `n` (the `k` of RFC 6962 §2.1). `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree held in memory, answering roots and proofs for any past size.
///
/// Besides the leaf hashes it keeps every complete perfect subtree hash (about one extra hash per
/// leaf), so roots and proofs cost O(log n) hashes instead of rehashing the whole log on each
/// request.
#[derive(Clone, Default)]
pub struct MerkleTree {
    /// `levels[h][i]` is the hash of the perfect subtree of `2^h` leaves starting at leaf
    /// `i * 2^h`; `levels[0]` holds the leaf hashes. Only complete subtrees are stored.
    levels: Vec<Vec<Hash>>,
}

impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("size", &self.size())
            .field("root", &self.root())
            .finish()
    }
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        MerkleTree {
            levels: vec![Vec::new()],
        }
    }

    /// Rebuilds a tree from stored leaf hashes, in order.
    pub fn from_leaf_hashes(leaf_hashes: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = MerkleTree::new();
        for hash in leaf_hashes {
            tree.append_leaf_hash(hash);
        }
        tree
    }

    /// Appends a leaf holding `data` and returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(data))
    }

    /// Appends an already hashed leaf (see [`leaf_hash`]) and returns its index.
    pub fn append_leaf_hash(&mut self, hash: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let index = self.levels[0].len() as u64;
        self.levels[0].push(hash);
        // Each time a level gets an even number of entries, its last two close a subtree one
        // level up.
        let mut level = 0;
        while self.levels[level].len() & 1 == 0 {
            let len = self.levels[level].len();
            let parent = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
        index
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The hash of leaf `index`, if it exists.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        let index = usize::try_from(index).ok()?;
        self.levels.first()?.get(index).copied()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_unchecked(self.size())
    }

    /// The root the tree had when it held `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        self.check_size(size)?;
        Ok(self.root_unchecked(size))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves
    /// (RFC 6962 §2.1.1 `PATH`), ordered from the leaf's sibling up to the root's child.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TreeError::IndexOutOfRange { index, size });
        }
        // Walk from the root down to the leaf, collecting the sibling subtree at each split;
        // the proof lists them bottom-up.
        let mut proof = Vec::new();
        let (mut start, mut len, mut m) = (0u64, size, index);
        while len > 1 {
            let k = split_point(len);
            if m < k {
                proof.push(self.subtree_hash(start + k, len - k));
                len = k;
            } else {
                proof.push(self.subtree_hash(start, k));
                start += k;
                len -= k;
                m -= k;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// The consistency proof from the tree of `old_size` leaves to the tree of `new_size` leaves
    /// (RFC 6962 §2.1.2 `PROOF`). Empty when `old_size` is 0 or equal to `new_size`: the empty
    /// tree is consistent with every tree and a tree with itself, so there is nothing to prove.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(new_size)?;
        if old_size > new_size {
            return Err(TreeError::SizesOutOfOrder { old_size, new_size });
        }
        if old_size == 0 || old_size == new_size {
            return Ok(Vec::new());
        }
        // SUBPROOF(m, D[start..start+len], whole_old_tree), unrolled top-down and reversed.
        let mut proof = Vec::new();
        let (mut start, mut len, mut m, mut whole_old_tree) = (0u64, new_size, old_size, true);
        loop {
            if m == len {
                if !whole_old_tree {
                    proof.push(self.subtree_hash(start, len));
                }
                break;
            }
            let k = split_point(len);
            if m <= k {
                proof.push(self.subtree_hash(start + k, len - k));
                len = k;
            } else {
                proof.push(self.subtree_hash(start, k));
                start += k;
                len -= k;
                m -= k;
                whole_old_tree = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, requested: u64) -> Result<(), TreeError> {
        let size = self.size();
        if requested > size {
            return Err(TreeError::SizeOutOfRange { requested, size });
        }
        Ok(())
    }

    fn root_unchecked(&self, size: u64) -> Hash {
        if size == 0 {
            empty_root()
        } else {
            self.subtree_hash(0, size)
        }
    }

    /// MTH(D[start..start+len]) for `len >= 1` and `start + len <= size()`.
    ///
    /// Every range the RFC 6962 recursion visits has its left part a perfect subtree aligned to its
    /// own size (the recursion only ever splits at powers of two from an aligned start), so each
    /// perfect range is one lookup in `levels`.
    fn subtree_hash(&self, start: u64, len: u64) -> Hash {
        if len.is_power_of_two() {
            let level = len.trailing_zeros() as usize;
            debug_assert_eq!(start % len, 0, "perfect subtrees are aligned");
            // In range: the caller checked start + len <= size(), and a complete aligned subtree
            // below size() has been stored when its last leaf was appended.
            self.levels[level][(start >> level) as usize]
        } else {
            let k = split_point(len);
            node_hash(
                &self.subtree_hash(start, k),
                &self.subtree_hash(start + k, len - k),
            )
        }
    }
}

/// The right edge of an append-only tree: the roots of the perfect subtrees its leaves split
/// into (one per set bit of the size, largest first). That is all it takes to append leaves
/// and compute the root, in O(log n) memory, for a follower that checks a log's entries
/// against its signed roots without answering proofs itself (which needs a [`MerkleTree`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MerkleFrontier {
    size: u64,
    /// Perfect subtree roots, leftmost (largest) first.
    peaks: Vec<Hash>,
}

impl fmt::Debug for MerkleFrontier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleFrontier")
            .field("size", &self.size)
            .field("root", &self.root())
            .finish()
    }
}

impl MerkleFrontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        MerkleFrontier::default()
    }

    /// Number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf holding `data` and returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(data))
    }

    /// Appends an already hashed leaf (see [`leaf_hash`]) and returns its index.
    pub fn append_leaf_hash(&mut self, hash: Hash) -> u64 {
        let index = self.size;
        // Every trailing set bit of the old size is a subtree of the new leaf's size, left of
        // it: merge them, smallest first, like a binary counter carrying.
        let mut merged = hash;
        let mut carry = index;
        while carry & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            merged = node_hash(&left, &merged);
            carry >>= 1;
        }
        self.peaks.push(merged);
        self.size += 1;
        index
    }

    /// The root of the leaves appended so far (RFC 6962 `MTH`): the peaks folded from the right.
    pub fn root(&self) -> Hash {
        match self.peaks.split_last() {
            None => empty_root(),
            Some((last, rest)) => rest
                .iter()
                .rev()
                .fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// Checks that `proof` shows the leaf with hash `leaf` at `index` in the tree of `size` leaves
/// with root `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong { len: proof.len() });
    }
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
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
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that `proof` shows the tree of `old_size` leaves with root `old_root` to be a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Conventions of the published transparency-dev test suite, which this follows: a proof from
/// size 0 is refused ([`ProofError::FromEmptyTree`]; callers that accept the empty tree as a
/// starting point, such as the witness, special-case it), and equal sizes need an empty proof
/// and equal roots.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong { len: proof.len() });
    }
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // When the old tree is a perfect subtree its root is the first node of the path, and the
    // proof leaves it out.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(ProofError::WrongLength),
        }
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MTH straight from RFC 6962 §2.1, recursing over the leaf hashes: the reference the cached
    /// tree is checked against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn tree_of(n: u64) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for i in 0..n {
            assert_eq!(tree.append(&i.to_be_bytes()), i);
        }
        tree
    }

    #[test]
    fn known_answers_from_rfc6962_test_data() {
        // The empty-tree root and the 1-leaf tree over the empty leaf, as in every RFC 6962
        // implementation's tests (and in the published vectors' roots).
        assert_eq!(
            empty_root().to_base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            leaf_hash(b"").to_base64(),
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="
        );
        // The 8-leaf reference tree of the published vectors (leaves "", 0x00, 0x10, 0x2021,
        // 0x3031, 0x40414243, 0x5051525354555657, 0x606162636465666768696a6b6c6d6e6f).
        let leaves: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let mut tree = MerkleTree::new();
        for leaf in leaves {
            tree.append(leaf);
        }
        assert_eq!(
            tree.root().to_base64(),
            "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
        );
        assert_eq!(
            tree.consistency_proof(1, 8)
                .unwrap()
                .iter()
                .map(Hash::to_base64)
                .collect::<Vec<_>>(),
            [
                "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
                "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
                "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
            ]
        );
    }

    #[test]
    fn hash_text_is_strict() {
        let h = leaf_hash(b"x");
        assert_eq!(h.to_string().parse::<Hash>(), Ok(h));
        for bad in [
            "",
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0",
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB1=",
            "bjQLnP-zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
            "ZG9uJ3QgY2FyZSAy",
        ] {
            assert_eq!(bad.parse::<Hash>(), Err(HashParseError::Malformed), "{bad}");
        }
    }

    #[test]
    fn tree_misuse_is_a_typed_error() {
        let tree = tree_of(5);
        assert_eq!(
            tree.root_at(6),
            Err(TreeError::SizeOutOfRange {
                requested: 6,
                size: 5
            })
        );
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(TreeError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 0),
            Err(TreeError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(TreeError::SizesOutOfOrder {
                old_size: 4,
                new_size: 3
            })
        );
        assert!(tree.consistency_proof(3, 6).is_err());
        assert_eq!(tree.consistency_proof(0, 5), Ok(vec![]));
        assert_eq!(tree.consistency_proof(5, 5), Ok(vec![]));
        assert_eq!(MerkleTree::new().root(), empty_root());
        assert_eq!(tree.leaf_hash(5), None);
        assert_eq!(tree.leaf_hash(4), Some(leaf_hash(&4u64.to_be_bytes())));
    }

    #[test]
    fn overlong_proofs_are_refused_before_hashing() {
        let proof = vec![empty_root(); MAX_PROOF_LEN + 1];
        let h = empty_root();
        assert_eq!(
            verify_inclusion(&h, 0, u64::MAX, &proof, &h),
            Err(ProofError::TooLong { len: 65 })
        );
        assert_eq!(
            verify_consistency(1, u64::MAX, &proof, &h, &h),
            Err(ProofError::TooLong { len: 65 })
        );
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let h = empty_root();
        let proof = vec![h; MAX_PROOF_LEN];
        assert!(verify_inclusion(&h, u64::MAX - 1, u64::MAX, &proof, &h).is_err());
        assert!(verify_consistency(u64::MAX - 1, u64::MAX, &proof, &h, &h).is_err());
        assert!(verify_consistency(1 << 63, u64::MAX, &proof, &h, &h).is_err());
    }

    /// One way of damaging a proof.
    #[derive(Debug, Clone)]
    enum Mutation {
        FlipBit { position: usize, bit: u8 },
        Drop { position: usize },
        Insert { position: usize },
        Duplicate { position: usize },
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 0u8..=255)
                .prop_map(|(position, bit)| Mutation::FlipBit { position, bit }),
            any::<usize>().prop_map(|position| Mutation::Drop { position }),
            any::<usize>().prop_map(|position| Mutation::Insert { position }),
            any::<usize>().prop_map(|position| Mutation::Duplicate { position }),
        ]
    }

    /// Applies `m`; `None` when it cannot apply (e.g. flipping a bit of an empty proof).
    fn mutate(proof: &[Hash], m: &Mutation) -> Option<Vec<Hash>> {
        let mut out = proof.to_vec();
        match *m {
            Mutation::FlipBit { position, bit } => {
                if out.is_empty() {
                    return None;
                }
                let i = position % out.len();
                let mut bytes = *out[i].as_bytes();
                bytes[usize::from(bit / 8)] ^= 1 << (bit % 8);
                out[i] = Hash::from_bytes(bytes);
            }
            Mutation::Drop { position } => {
                if out.is_empty() {
                    return None;
                }
                out.remove(position % out.len());
            }
            Mutation::Insert { position } => {
                out.insert(position % (out.len() + 1), leaf_hash(b"inserted"));
            }
            Mutation::Duplicate { position } => {
                if out.is_empty() {
                    return None;
                }
                let i = position % out.len();
                out.insert(i, out[i]);
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn cached_roots_match_the_rfc_recursion(n in 0u64..300) {
            let tree = tree_of(n);
            let leaves: Vec<Hash> = (0..n).map(|i| tree.leaf_hash(i).unwrap()).collect();
            for size in 0..=n {
                prop_assert_eq!(tree.root_at(size).unwrap(), reference_root(&leaves[..size as usize]));
            }
        }

        #[test]
        fn generated_inclusion_proofs_verify_and_mutated_ones_fail(
            n in 1u64..300, index_seed in any::<u64>(), size_seed in any::<u64>(), m in mutation(),
        ) {
            let tree = tree_of(n);
            let size = 1 + size_seed % n;
            let index = index_seed % size;
            let root = tree.root_at(size).unwrap();
            let leaf = tree.leaf_hash(index).unwrap();
            let proof = tree.inclusion_proof(index, size).unwrap();
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
            if let Some(bad) = mutate(&proof, &m) {
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
            }
            // The right proof for the wrong leaf, index, size or root fails too.
            prop_assert!(verify_inclusion(&leaf_hash(b"other"), index, size, &proof, &root).is_err());
            if size > 1 {
                let other_index = (index + 1) % size;
                prop_assert!(verify_inclusion(&leaf, other_index, size, &proof, &root).is_err());
            }
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &leaf_hash(b"root")).is_err());
        }

        #[test]
        fn generated_consistency_proofs_verify_and_mutated_ones_fail(
            n in 1u64..300, a in any::<u64>(), b in any::<u64>(), m in mutation(),
        ) {
            let tree = tree_of(n);
            let new_size = 1 + b % n;
            let old_size = 1 + a % new_size;
            let old_root = tree.root_at(old_size).unwrap();
            let new_root = tree.root_at(new_size).unwrap();
            let proof = tree.consistency_proof(old_size, new_size).unwrap();
            prop_assert!(proof.len() <= MAX_PROOF_LEN);
            prop_assert!(verify_consistency(old_size, new_size, &proof, &old_root, &new_root).is_ok());
            if let Some(bad) = mutate(&proof, &m) {
                prop_assert!(verify_consistency(old_size, new_size, &bad, &old_root, &new_root).is_err());
            }
            let wrong = leaf_hash(b"wrong root");
            prop_assert!(verify_consistency(old_size, new_size, &proof, &wrong, &new_root).is_err());
            prop_assert!(verify_consistency(old_size, new_size, &proof, &old_root, &wrong).is_err());
            // (A claimed new size is not checked against the root here: an RFC 6962 root does not
            // commit to its size, which is why sizes only count inside signed checkpoints.)
        }

        #[test]
        fn the_frontier_has_the_roots_of_the_full_tree(n in 0u64..300) {
            let tree = tree_of(n);
            let mut frontier = MerkleFrontier::new();
            prop_assert_eq!(frontier.root(), empty_root());
            for i in 0..n {
                prop_assert_eq!(frontier.append(&i.to_be_bytes()), i);
                prop_assert_eq!(frontier.root(), tree.root_at(i + 1).unwrap());
                prop_assert_eq!(frontier.size(), i + 1);
            }
            // O(log n): one peak per set bit of the size.
            prop_assert_eq!(frontier.peaks.len() as u32, n.count_ones());
        }

        #[test]
        fn arbitrary_proofs_never_panic(
            index in any::<u64>(), size in any::<u64>(), old in any::<u64>(),
            proof in proptest::collection::vec(any::<[u8; 32]>().prop_map(Hash::from_bytes), 0..70),
        ) {
            let h = empty_root();
            let _ = verify_inclusion(&h, index, size, &proof, &h);
            let _ = verify_consistency(old, size, &proof, &h, &h);
        }
    }
}
