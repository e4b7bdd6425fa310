//! The Merkle tree over the records, exactly as RFC 9162 §2.1 (RFC 6962) defines
//! it: leaf hash `SHA-256(0x00 || leaf)`, interior node `SHA-256(0x01 || left ||
//! right)`, empty tree `SHA-256("")`. The leaf input of record *i* is its 32-byte
//! record hash.
//!
//! [`CompactRange`] keeps only the roots of the perfect subtrees that make up a
//! tree of size *n* (one per set bit of *n*), so the writer extends the tree and
//! computes roots in O(log n) without keeping old leaves. The proof functions
//! (RFC 9162 §2.1.3 and §2.1.4) take all leaf hashes and are for readers.

use sha2::{Digest, Sha256};

use super::hashing::Hash;

/// `SHA-256("")`: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of a leaf input (for the audit log: a record hash).
pub fn leaf_hash(leaf_input: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf_input);
    h.finalize().into()
}

/// An interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The roots of the perfect subtrees covering leaves `0..size`, largest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    subtrees: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> Self {
        CompactRange::default()
    }

    /// Rebuilds a range from its parts, as a `merkle_prefix` fact stores them.
    /// `None` when the number of subtrees does not match `size`.
    pub fn from_parts(size: u64, subtrees: Vec<Hash>) -> Option<Self> {
        (subtrees.len() == size.count_ones() as usize).then_some(CompactRange { size, subtrees })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut size = self.size;
        // Each trailing 1 bit of the old size is a subtree as large as the one being
        // carried: merge them, as adding 1 in binary carries.
        while size & 1 == 1 {
            // popcount(size) == subtrees.len(), so a 1 bit always has its subtree.
            let Some(left) = self.subtrees.pop() else { break };
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.subtrees.push(node);
        self.size += 1;
    }

    /// The root of the tree of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(last) = iter.next() else { return empty_root() };
        iter.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The root over a list of leaf hashes (MTH of RFC 9162 §2.1.1).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two smaller than `n` (n >= 2).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Why a proof could not be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size} is larger than the {available} leaves available")]
    SizeOutOfRange { size: u64, available: u64 },
    #[error("sizes {first} and {second}: the first tree must not be larger than the second")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof leads to a different root")]
    RootMismatch,
}

/// The inclusion proof (audit path) of leaf `index` in the tree of the first
/// `size` leaves (RFC 9162 §2.1.3.1).
pub fn inclusion_proof(leaves: &[Hash], index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
    if size > leaves.len() as u64 {
        return Err(ProofError::SizeOutOfRange { size, available: leaves.len() as u64 });
    }
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(index as usize, &leaves[..size as usize], &mut proof);
    Ok(proof)
}

fn path(m: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(m, &leaves[..k], proof);
        proof.push(root_of(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], proof);
        proof.push(root_of(&leaves[..k]));
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The consistency proof between the trees of the first `first` and `second`
/// leaves (RFC 9162 §2.1.4.1). Empty when `first` is 0 or equals `second`.
pub fn consistency_proof(leaves: &[Hash], first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
    if second > leaves.len() as u64 {
        return Err(ProofError::SizeOutOfRange { size: second, available: leaves.len() as u64 });
    }
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    let mut proof = Vec::new();
    if first > 0 && first < second {
        subproof(first as usize, &leaves[..second as usize], true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], whole_first_tree: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole_first_tree {
            proof.push(root_of(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], whole_first_tree, proof);
        proof.push(root_of(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root_of(&leaves[..k]));
    }
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2), including the two trivial
/// cases: an empty first tree (any second tree extends it; the proof must be
/// empty) and equal sizes (the roots must be equal; the proof must be empty).
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == 0 || first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if first == 0 {
            return if first_root == &empty_root() { Ok(()) } else { Err(ProofError::RootMismatch) };
        }
        return if first_root == second_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != first_root || &sr != second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::audit::hashing::{hash_from_hex, to_hex};

    // The RFC 6962 reference leaves and roots (as used by Certificate Transparency's tests).
    fn reference_leaves() -> Vec<Hash> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|h| {
                let bytes: Vec<u8> = (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect();
                leaf_hash(&bytes)
            })
            .collect()
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn h(s: &str) -> Hash {
        hash_from_hex(s).unwrap()
    }

    #[test]
    fn roots_match_rfc6962_reference() {
        let leaves = reference_leaves();
        let mut range = CompactRange::new();
        assert_eq!(to_hex(&range.root()), ROOTS[0]);
        for n in 1..=8 {
            range.push(leaves[n - 1]);
            assert_eq!(to_hex(&range.root()), ROOTS[n], "compact range, size {n}");
            assert_eq!(to_hex(&root_of(&leaves[..n])), ROOTS[n], "recursive, size {n}");
        }
    }

    #[test]
    fn reference_proofs() {
        let leaves = reference_leaves();
        let p = inclusion_proof(&leaves, 0, 8).unwrap();
        assert_eq!(
            p,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        let p = inclusion_proof(&leaves, 5, 8).unwrap();
        assert_eq!(
            p,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        assert_eq!(
            consistency_proof(&leaves, 2, 8).unwrap(),
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        assert_eq!(
            consistency_proof(&leaves, 6, 8).unwrap(),
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
    }

    fn many(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect()
    }

    #[test]
    fn compact_range_agrees_with_recursive_root_and_round_trips_through_parts() {
        let leaves = many(300);
        let mut range = CompactRange::new();
        for (i, leaf) in leaves.iter().enumerate() {
            range.push(*leaf);
            assert_eq!(range.root(), root_of(&leaves[..=i]), "size {}", i + 1);
            let again = CompactRange::from_parts(range.size(), range.subtrees().to_vec()).unwrap();
            assert_eq!(again, range);
        }
        assert!(CompactRange::from_parts(3, vec![[0; 32]]).is_none());
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        let leaves = many(40);
        for size in 1..=40u64 {
            let root = root_of(&leaves[..size as usize]);
            for index in 0..size {
                let proof = inclusion_proof(&leaves, index, size).unwrap();
                let leaf = &leaves[index as usize];
                verify_inclusion(leaf, index, size, &proof, &root).unwrap();
                assert!(verify_inclusion(&leaves[(index as usize + 1) % 40], index, size, &proof, &root).is_err());
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(leaf, index, size, &bad, &root).is_err());
                    assert!(verify_inclusion(leaf, index, size, &proof[..proof.len() - 1], &root).is_err());
                }
                let mut longer = proof.clone();
                longer.push([0xab; 32]);
                assert!(verify_inclusion(leaf, index, size, &longer, &root).is_err());
                if index + 1 < size {
                    assert!(verify_inclusion(leaf, index + 1, size, &proof, &root).is_err());
                }
            }
        }
        assert_eq!(inclusion_proof(&leaves, 5, 5), Err(ProofError::IndexOutOfRange { index: 5, size: 5 }));
        assert_eq!(inclusion_proof(&leaves, 0, 41), Err(ProofError::SizeOutOfRange { size: 41, available: 40 }));
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        let leaves = many(40);
        let roots: Vec<Hash> = (0..=40).map(|n| root_of(&leaves[..n])).collect();
        for second in 0..=40u64 {
            for first in 0..=second {
                let proof = consistency_proof(&leaves, first, second).unwrap();
                let (r1, r2) = (&roots[first as usize], &roots[second as usize]);
                verify_consistency(first, second, r1, r2, &proof).unwrap();
                if first > 0 && first < second {
                    let mut bad = proof.clone();
                    bad[0][3] ^= 0x80;
                    assert!(verify_consistency(first, second, r1, r2, &bad).is_err(), "{first}->{second}");
                    assert!(verify_consistency(first, second, r1, r2, &proof[..proof.len() - 1]).is_err());
                    let mut longer = proof.clone();
                    longer.push([0xcd; 32]);
                    assert!(verify_consistency(first, second, r1, r2, &longer).is_err());
                    // A first tree that is not a prefix of the second.
                    let other = root_of(&many(first as usize + 1)[1..]);
                    assert!(verify_consistency(first, second, &other, r2, &proof).is_err());
                }
            }
        }
        assert!(verify_consistency(4, 4, &roots[4], &roots[5], &[]).is_err());
        assert!(verify_consistency(0, 8, &roots[1], &roots[8], &[]).is_err());
        assert!(verify_consistency(6, 8, &roots[6], &roots[8], &[]).is_err());
        assert!(verify_consistency(8, 6, &roots[8], &roots[6], &[]).is_err());
    }
}
