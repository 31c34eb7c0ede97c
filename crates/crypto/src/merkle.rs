//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs,
//! and their verification.
//!
//! Two forms of the same tree: over a slice of leaf hashes (the reference,
//! checked against the CT vectors), and over stored complete subtrees
//! ([`NodeId`]), which is how the transparency log keeps it: appending a leaf
//! stores the leaf and every subtree it completes, so a proof over any size
//! needs O(log² n) stored nodes fetched in one read, never the leaves.

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The tree head of `leaves` (leaf hashes); the hash of the empty string for none.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` in the tree of `leaves` (RFC 6962 PATH).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(&leaves[..k], m, out);
            out.push(root(&leaves[k..]));
        } else {
            path(&leaves[k..], m - k, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    path(leaves, index, &mut out);
    Some(out)
}

/// The consistency proof from the tree of the first `old_size` leaves to the
/// tree of all `leaves` (RFC 6962 PROOF).
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    if old_size > leaves.len() {
        return None;
    }
    fn subproof(leaves: &[Hash], m: usize, complete: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                out.push(root(leaves));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(&leaves[..k], m, complete, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(&leaves[k..], m - k, false, out);
            out.push(root(&leaves[..k]));
        }
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(leaves, old_size, true, &mut out);
    }
    Some(out)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
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
    snode == 0 && &r == root
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(old_size: u64, new_size: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else { return false };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
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
    snode == 0 && &fr == old_root && &sr == new_root
}

/// A complete subtree: the `2^level` leaves from `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    /// One integer per node, for storage: `level << 48 | index`.
    pub fn key(self) -> i64 {
        (i64::from(self.level) << 48) | (self.index as i64 & ((1 << 48) - 1))
    }

    pub fn from_key(key: i64) -> Self {
        NodeId { level: (key >> 48) as u8, index: (key & ((1 << 48) - 1)) as u64 }
    }
}

/// The largest power of two smaller than `n` (n > 1), for u64 ranges.
fn split64(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees that make up the leaves `[lo, hi)` of an RFC 6962
/// (sub)tree, left to right. `lo` must be aligned as the tree's recursion
/// aligns it (true for every range a proof or tree head asks for).
pub fn range_nodes(lo: u64, hi: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut at = lo;
    while at < hi {
        let size = hi - at;
        let level = 63 - size.leading_zeros();
        let level = (level as u8).min(at.trailing_zeros().min(63) as u8);
        out.push(NodeId { level, index: at >> level });
        at += 1 << level;
    }
    out
}

/// MTH of the leaves `[lo, hi)` from stored complete subtrees (`get`).
pub fn range_hash(lo: u64, hi: u64, get: &dyn Fn(NodeId) -> Option<Hash>) -> Option<Hash> {
    if lo == hi {
        return Some(Sha256::digest([]).into());
    }
    let nodes = range_nodes(lo, hi);
    let mut it = nodes.iter().rev();
    let mut acc = get(*it.next()?)?;
    for n in it {
        acc = node_hash(&get(*n)?, &acc);
    }
    Some(acc)
}

/// The leaf ranges whose hashes form the audit path of leaf `m` in a tree of
/// `n` leaves, in proof order (RFC 6962 PATH).
pub fn inclusion_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    fn path(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
        if hi - lo <= 1 {
            return;
        }
        let k = split64(hi - lo);
        if m < lo + k {
            path(m, lo, lo + k, out);
            out.push((lo + k, hi));
        } else {
            path(m, lo + k, hi, out);
            out.push((lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if m < n {
        path(m, 0, n, &mut out);
    }
    out
}

/// The leaf ranges whose hashes form the consistency proof from size `m` to
/// size `n`, in proof order (RFC 6962 PROOF).
pub fn consistency_ranges(m: u64, n: u64) -> Vec<(u64, u64)> {
    fn sub(m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<(u64, u64)>) {
        if m == hi - lo {
            if !complete {
                out.push((lo, hi));
            }
            return;
        }
        let k = split64(hi - lo);
        if m <= k {
            sub(m, lo, lo + k, complete, out);
            out.push((lo + k, hi));
        } else {
            sub(m - k, lo + k, hi, false, out);
            out.push((lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if m > 0 && m < n {
        sub(m, 0, n, true, &mut out);
    }
    out
}

/// Every stored node the hashes of `ranges` need.
pub fn nodes_for(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = ranges.iter().flat_map(|&(lo, hi)| range_nodes(lo, hi)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The right edge of a tree of `size` leaves: the complete subtrees an
/// append may combine with, largest first.
pub fn frontier(size: u64) -> Vec<NodeId> {
    range_nodes(0, size)
}

/// Appends `leaves` to a tree of `size` leaves whose [`frontier`] is
/// `edge`: every node to store (each new leaf and each subtree it
/// completes), in creation order. `None` if `edge` lacks a frontier node.
pub fn append(
    size: u64,
    edge: &std::collections::HashMap<NodeId, Hash>,
    leaves: &[Hash],
) -> Option<Vec<(NodeId, Hash)>> {
    let mut made: std::collections::HashMap<NodeId, Hash> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(leaves.len() * 2);
    for (i, leaf) in leaves.iter().enumerate() {
        let mut id = NodeId { level: 0, index: size + i as u64 };
        let mut h = *leaf;
        made.insert(id, h);
        out.push((id, h));
        while id.index & 1 == 1 {
            let left = NodeId { level: id.level, index: id.index - 1 };
            let l = made.get(&left).or_else(|| edge.get(&left))?;
            h = node_hash(l, &h);
            id = NodeId { level: id.level + 1, index: id.index >> 1 };
            made.insert(id, h);
            out.push((id, h));
        }
    }
    Some(out)
}

/// The right edge of a tree kept in memory: the roots of its complete
/// subtrees, largest (leftmost) first. Enough to append leaves and compute
/// the tree head without the leaves, as a monitor rebuilding another
/// library's log does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// A range from its size and subtree roots; `None` if their number does
    /// not match the size (one per set bit).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (hashes.len() == size.count_ones() as usize).then_some(CompactRange { size, hashes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            // Every set bit has its subtree on the stack.
            let left = self.hashes.pop().unwrap_or_default();
            h = node_hash(&left, &h);
            n >>= 1;
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// The tree head (RFC 6962 MTH) of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else { return Sha256::digest([]).into() };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The leaves of the Certificate Transparency reference tests.
    fn ct_leaves() -> Vec<Hash> {
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f],
        ];
        inputs.iter().map(|d| leaf_hash(d)).collect()
    }

    #[test]
    fn roots_match_the_ct_reference_vectors() {
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves = ct_leaves();
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(hex(&root(&leaves[..=n])), *want, "tree of {} leaves", n + 1);
        }
        assert_eq!(hex(&root(&[])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn tampering_is_caught() {
        let leaves = ct_leaves();
        let r = root(&leaves);
        let mut proof = inclusion_proof(&leaves, 5).unwrap();
        assert!(verify_inclusion(5, 8, &leaves[5], &proof, &r));
        assert!(!verify_inclusion(4, 8, &leaves[5], &proof, &r));
        proof[1][0] ^= 1;
        assert!(!verify_inclusion(5, 8, &leaves[5], &proof, &r));
        let c = consistency_proof(&leaves, 3).unwrap();
        assert!(verify_consistency(3, 8, &root(&leaves[..3]), &r, &c));
        let mut rewritten = leaves.clone();
        rewritten[1] = leaf_hash(b"rewritten");
        assert!(!verify_consistency(
            3,
            8,
            &root(&leaves[..3]),
            &root(&rewritten),
            &consistency_proof(&rewritten, 3).unwrap()
        ));
    }

    /// An independent RFC 6962 implementation (`ct-merkle`) computes the same
    /// roots, accepts our inclusion and consistency proofs, and its proofs
    /// pass our verifiers.
    #[test]
    fn ct_merkle_agrees_in_both_directions() {
        use ct_merkle::mem_backed_tree::MemoryBackedTree;
        use ct_merkle::{ConsistencyProof, InclusionProof};
        let items: Vec<Vec<u8>> = (0..40u32).map(|i| format!("leaf {i}").into_bytes()).collect();
        let leaves: Vec<Hash> = items.iter().map(|i| leaf_hash(i)).collect();
        let split = |bytes: &[u8]| -> Vec<Hash> { bytes.chunks(32).map(|c| c.try_into().unwrap()).collect() };
        let mut tree = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        let mut old_roots = Vec::new();
        for (n, item) in items.iter().enumerate() {
            tree.push(item.clone());
            let size = n + 1;
            let prefix = &leaves[..size];
            let ours = root(prefix);
            let theirs = tree.root();
            assert_eq!(theirs.as_bytes().as_slice(), &ours[..], "root of {size}");
            for m in 0..size {
                let proof = InclusionProof::<Sha256>::from_bytes(inclusion_proof(prefix, m).unwrap().concat());
                theirs.verify_inclusion(&items[m], m as u64, &proof).unwrap();
                let their_proof = split(tree.prove_inclusion(m).as_bytes());
                assert!(verify_inclusion(m as u64, size as u64, &leaves[m], &their_proof, &ours));
            }
            for (old, old_root) in old_roots.iter().enumerate().map(|(i, r)| (i + 1, r)) {
                let proof =
                    ConsistencyProof::<Sha256>::try_from_bytes(consistency_proof(prefix, old).unwrap().concat())
                        .unwrap();
                theirs.verify_consistency(old_root, &proof).unwrap();
                let their_proof = split(tree.prove_consistency(size - old).as_bytes());
                assert!(verify_consistency(old as u64, size as u64, &root(&leaves[..old]), &ours, &their_proof));
            }
            old_roots.push(theirs);
        }
    }

    /// The stored-node form agrees with the slice form for every size,
    /// however the leaves arrive in batches.
    #[test]
    fn stored_nodes_agree_with_the_reference_for_every_size() {
        use std::collections::HashMap;
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut store: HashMap<NodeId, Hash> = HashMap::new();
        let mut size = 0u64;
        for batch in [1usize, 2, 3, 1, 7, 16, 5, 35] {
            let edge: HashMap<NodeId, Hash> = frontier(size).into_iter().map(|id| (id, store[&id])).collect();
            let end = (size as usize + batch).min(leaves.len());
            for (id, h) in append(size, &edge, &leaves[size as usize..end]).unwrap() {
                assert!(store.insert(id, h).is_none(), "node {id:?} written twice");
            }
            size = end as u64;
        }
        assert_eq!(size, 70);
        let get = |id: NodeId| store.get(&id).copied();
        for n in 0..=70u64 {
            let prefix = &leaves[..n as usize];
            assert_eq!(range_hash(0, n, &get), Some(root(prefix)), "root of {n}");
            for m in 0..n {
                let proof: Vec<Hash> =
                    inclusion_ranges(m, n).iter().map(|&(lo, hi)| range_hash(lo, hi, &get).unwrap()).collect();
                assert_eq!(Some(proof), inclusion_proof(prefix, m as usize), "path {m} of {n}");
            }
            for m in 0..=n {
                let proof: Vec<Hash> =
                    consistency_ranges(m, n).iter().map(|&(lo, hi)| range_hash(lo, hi, &get).unwrap()).collect();
                assert_eq!(Some(proof), consistency_proof(prefix, m as usize), "consistency {m} to {n}");
            }
        }
        assert_eq!(
            NodeId::from_key(NodeId { level: 23, index: 10_000_000 }.key()),
            NodeId { level: 23, index: 10_000_000 }
        );
        assert!(nodes_for(&inclusion_ranges(5_000_000, 10_000_000)).len() < 600);
    }

    proptest! {
        #[test]
        fn every_proof_verifies(n in 1usize..70, seed in any::<u64>()) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&(seed ^ i as u64).to_be_bytes())).collect();
            let r = root(&leaves);
            for i in 0..n {
                let p = inclusion_proof(&leaves, i).unwrap();
                prop_assert!(verify_inclusion(i as u64, n as u64, &leaves[i], &p, &r));
            }
            for m in 0..=n {
                let p = consistency_proof(&leaves, m).unwrap();
                prop_assert!(verify_consistency(m as u64, n as u64, &root(&leaves[..m]), &r, &p), "m={} n={}", m, n);
            }
        }

        #[test]
        fn verifiers_never_panic(i in 0u64..100, n in 0u64..100, proof in proptest::collection::vec(any::<[u8; 32]>(), 0..10)) {
            let _ = verify_inclusion(i, n, &[0; 32], &proof, &[0; 32]);
            let _ = verify_consistency(i, n, &[0; 32], &[1; 32], &proof);
        }
    }

    proptest! {
        #[test]
        fn a_compact_range_has_the_tree_head_of_its_leaves(n in 0usize..300) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let mut range = CompactRange::default();
            for (i, l) in leaves.iter().enumerate() {
                prop_assert_eq!(range.root(), root(&leaves[..i]));
                range.push(*l);
            }
            prop_assert_eq!(range.root(), root(&leaves));
            let again = CompactRange::from_parts(range.size(), range.hashes().to_vec());
            prop_assert_eq!(again.as_ref(), Some(&range));
            let mut short = range.hashes().to_vec();
            if short.pop().is_some() {
                prop_assert!(CompactRange::from_parts(range.size(), short).is_none());
            }
        }
    }
}
