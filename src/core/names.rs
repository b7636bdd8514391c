//! [`NameIndex`]: names to positions, the one map type behind every index the policy
//! compiles at load (trusted issuers by `iss`, keys by `kid`, exact paths, path segments,
//! route names).
//!
//! One type keeps the module small (each map type is its own copy of the hash table code),
//! and its hasher is fixed (SipHash-1-3 with zero keys) rather than std's `RandomState`, which
//! asks the host for randomness at load and panics if it fails. A fixed hash is safe here:
//! the keys are the policy's own, requests only look names up and never insert, so no request
//! can lengthen another's probe.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// Names to positions.
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    map: HashMap<Box<str>, usize, BuildHasherDefault<DefaultHasher>>,
}

impl NameIndex {
    /// The position of `name`.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.map.get(name).copied()
    }

    /// Files `name` at `position` unless it is already there; returns the position in force.
    pub fn insert_first(&mut self, name: &str, position: usize) -> usize {
        *self.map.entry(name.into()).or_insert(position)
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it holds no name.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
