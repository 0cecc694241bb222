//! An RFC 9162 (Certificate Transparency 2.0) Merkle tree over named leaves, with SHA-256.
//!
//! ```text
//! leaf hash = SHA-256(0x00 || u16_be(len(name)) || name || SHA-256(value))
//! node hash = SHA-256(0x01 || left || right)
//! ```
//!
//! Leaves are sorted by name (bytewise UTF-8) and names are unique, so the same configuration
//! always gives the same root. The tree shape is RFC 9162's: for n > 1 leaves, the left subtree
//! holds the largest power of two smaller than n. The root of an empty tree is SHA-256 of the
//! empty string. Names are committed, not just values: two configurations that swap values between
//! names have different roots, which a flat hash of values would not show.

use ring::digest::{Context, SHA256, digest};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A 32-byte SHA-256 value.
pub type Hash = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;
const MANIFEST_FORMAT: &str = "enclave-os-config-tree/v1";

/// Why a tree could not be built or a proof not checked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TreeError {
    /// Two inputs have the same name.
    #[error("configuration input '{0}' appears twice; names must be unique")]
    DuplicateName(String),
    /// A name is empty or too long to encode.
    #[error("configuration input name {0:?} is empty or longer than 65535 bytes")]
    BadName(String),
    /// No leaf has that name.
    #[error("no configuration input named '{0}'")]
    UnknownName(String),
    /// A proof does not lead to the expected root.
    #[error("inclusion proof for '{name}' does not lead to root {expected}: {reason}")]
    ProofMismatch {
        /// The leaf's name.
        name: String,
        /// The root the proof was checked against, hex.
        expected: String,
        /// What went wrong.
        reason: String,
    },
    /// A manifest could not be read.
    #[error("manifest: {0}")]
    Manifest(String),
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hash of a leaf named `name` whose value hashes to `value_hash`.
pub fn leaf_hash(name: &str, value_hash: &Hash) -> Result<Hash, TreeError> {
    let len = u16::try_from(name.len()).map_err(|_| TreeError::BadName(name.into()))?;
    if name.is_empty() {
        return Err(TreeError::BadName(name.into()));
    }
    Ok(sha256(&[
        &[LEAF_PREFIX],
        &len.to_be_bytes(),
        name.as_bytes(),
        value_hash,
    ]))
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[NODE_PREFIX], left, right])
}

/// The largest power of two strictly smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn root_of(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => sha256(&[]),
        [one] => *one,
        _ => {
            let k = split(leaves.len());
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// RFC 9162 PATH(m, D[n]): the audit path for leaf `m`, bottom-up.
fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(root_of(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(root_of(&leaves[..k]));
        p
    }
}

/// One committed input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaf {
    /// The input's name, for example `workload/hello/code`.
    pub name: String,
    /// SHA-256 of the input's value.
    #[serde(with = "hex::serde")]
    pub value_hash: Hash,
    /// The leaf hash.
    #[serde(with = "hex::serde")]
    pub leaf_hash: Hash,
}

/// The tree over a configuration's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTree {
    leaves: Vec<Leaf>,
    root: Hash,
}

/// An inclusion proof for one leaf, as served beside the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The leaf's name.
    pub name: String,
    /// SHA-256 of its value.
    #[serde(with = "hex::serde")]
    pub value_hash: Hash,
    /// Its index among the sorted leaves.
    pub index: usize,
    /// The number of leaves.
    pub tree_size: usize,
    /// The audit path, bottom-up, hex.
    pub path: Vec<String>,
}

/// The manifest: every name and leaf hash, and the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `enclave-os-config-tree/v1`.
    pub format: String,
    /// The root, hex.
    pub root: String,
    /// The leaves, sorted by name.
    pub leaves: Vec<Leaf>,
}

impl ConfigTree {
    /// Build a tree from `(name, value)` inputs, in any order.
    pub fn from_values<'a>(
        inputs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, TreeError> {
        Self::from_hashes(inputs.into_iter().map(|(n, v)| {
            let mut h = [0u8; 32];
            h.copy_from_slice(digest(&SHA256, v).as_ref());
            (n.to_string(), h)
        }))
    }

    /// Build a tree from `(name, SHA-256 of value)` inputs, in any order.
    pub fn from_hashes(
        inputs: impl IntoIterator<Item = (String, Hash)>,
    ) -> Result<Self, TreeError> {
        let mut leaves = inputs
            .into_iter()
            .map(|(name, value_hash)| {
                Ok(Leaf {
                    leaf_hash: leaf_hash(&name, &value_hash)?,
                    name,
                    value_hash,
                })
            })
            .collect::<Result<Vec<_>, TreeError>>()?;
        leaves.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        if let Some(w) = leaves.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(TreeError::DuplicateName(w[0].name.clone()));
        }
        let hashes: Vec<Hash> = leaves.iter().map(|l| l.leaf_hash).collect();
        Ok(Self {
            root: root_of(&hashes),
            leaves,
        })
    }

    /// The root.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The leaves, sorted by name.
    pub fn leaves(&self) -> &[Leaf] {
        &self.leaves
    }

    /// The manifest to serve.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            root: hex::encode(self.root),
            leaves: self.leaves.clone(),
        }
    }

    /// The inclusion proof for the leaf named `name`.
    pub fn prove(&self, name: &str) -> Result<InclusionProof, TreeError> {
        let index = self
            .leaves
            .binary_search_by(|l| l.name.as_bytes().cmp(name.as_bytes()))
            .map_err(|_| TreeError::UnknownName(name.into()))?;
        let hashes: Vec<Hash> = self.leaves.iter().map(|l| l.leaf_hash).collect();
        Ok(InclusionProof {
            name: name.into(),
            value_hash: self.leaves[index].value_hash,
            index,
            tree_size: hashes.len(),
            path: path(index, &hashes).iter().map(hex::encode).collect(),
        })
    }
}

impl InclusionProof {
    /// Check that this proof puts its leaf under `root` (RFC 9162 §2.1.3.2).
    pub fn verify(&self, root: &Hash) -> Result<(), TreeError> {
        let fail = |reason: &str| TreeError::ProofMismatch {
            name: self.name.clone(),
            expected: hex::encode(root),
            reason: reason.into(),
        };
        if self.index >= self.tree_size {
            return Err(fail("index is outside the tree"));
        }
        let mut fnode = self.index;
        let mut snode = self.tree_size - 1;
        let mut r = leaf_hash(&self.name, &self.value_hash)?;
        for p in &self.path {
            let p: Hash = hex::decode(p)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| fail("a path element is not 32 bytes of hex"))?;
            if snode == 0 {
                return Err(fail("the path is longer than the tree is deep"));
            }
            if fnode & 1 == 1 || fnode == snode {
                r = node_hash(&p, &r);
                if fnode & 1 == 0 {
                    while fnode & 1 == 0 && fnode != 0 {
                        fnode >>= 1;
                        snode >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, &p);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        if snode != 0 {
            return Err(fail("the path is shorter than the tree is deep"));
        }
        if r != *root {
            return Err(fail("the recomputed root differs"));
        }
        Ok(())
    }
}

impl Manifest {
    /// Recompute the root from the leaves, checking each leaf hash against its name and value
    /// hash, and compare it with the stated root.
    pub fn verify(&self) -> Result<Hash, TreeError> {
        if self.format != MANIFEST_FORMAT {
            return Err(TreeError::Manifest(format!(
                "unknown format '{}'",
                self.format
            )));
        }
        let tree =
            ConfigTree::from_hashes(self.leaves.iter().map(|l| (l.name.clone(), l.value_hash)))?;
        for (ours, theirs) in tree.leaves.iter().zip(&self.leaves) {
            if ours != theirs {
                return Err(TreeError::Manifest(format!(
                    "leaf '{}' is out of order or its leaf hash does not match its name and value",
                    theirs.name
                )));
            }
        }
        if hex::encode(tree.root) != self.root.to_ascii_lowercase() {
            return Err(TreeError::Manifest(format!(
                "the leaves give root {}, the manifest states {}",
                hex::encode(tree.root),
                self.root
            )));
        }
        Ok(tree.root)
    }
}
