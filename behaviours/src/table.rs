//! [`PeerTable`]: a map from node id to a value with the iteration order of a `BTreeMap`
//! (ascending `PeerId`, so everything built on it is deterministic) and hash lookups.
//!
//! Every heartbeat looks its sender up in the member table; with a `BTreeMap` that was about
//! ten comparisons of 64-byte multihash digests per lookup, two thirds of the simulator's CPU
//! time at 300 nodes. Here a lookup is one hash and one comparison. Inserting a new id or
//! removing one (a join, a removal: rare) costs O(n).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use libp2p::PeerId;

/// The index's hasher: fixed (the same in every run) and cheap. Node ids are hashes of public
/// keys, so their bytes are already uniform and need no keyed hash; they come from members
/// admitted by a token (or from messages whose MAC verified), not from an attacker who could
/// choose them to collide. Its order is never observed: iteration goes through the sorted
/// entries.
type FixedState = BuildHasherDefault<IdHasher>;

/// A multiply-rotate hash over 8-byte words (the FxHash construction).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// A map keyed by [`PeerId`], iterated in ascending id order.
#[derive(Debug, Clone)]
pub struct PeerTable<V> {
    entries: Vec<(PeerId, V)>,
    index: HashMap<PeerId, usize, FixedState>,
}

impl<V> Default for PeerTable<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<V> PeerTable<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is in it.
    pub fn contains_key(&self, id: &PeerId) -> bool {
        self.index.contains_key(id)
    }

    /// The value of `id`.
    pub fn get(&self, id: &PeerId) -> Option<&V> {
        self.index.get(id).map(|&i| &self.entries[i].1)
    }

    /// The value of `id`, to change.
    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut V> {
        match self.index.get(id) {
            Some(&i) => Some(&mut self.entries[i].1),
            None => None,
        }
    }

    /// Sets the value of `id`; returns the one it replaced.
    pub fn insert(&mut self, id: PeerId, value: V) -> Option<V> {
        if let Some(&i) = self.index.get(&id) {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        let at = self.entries.partition_point(|(other, _)| *other < id);
        self.entries.insert(at, (id, value));
        self.reindex(at);
        None
    }

    /// Takes `id` out; returns its value.
    pub fn remove(&mut self, id: &PeerId) -> Option<V> {
        let i = self.index.remove(id)?;
        let (_, value) = self.entries.remove(i);
        self.reindex(i);
        Some(value)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    /// Keeps only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&PeerId, &mut V) -> bool) {
        self.entries.retain_mut(|(id, value)| keep(id, value));
        self.index.clear();
        self.reindex(0);
    }

    /// The entries in ascending id order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &V)> {
        self.entries.iter().map(|(id, value)| (id, value))
    }

    /// The entries in ascending id order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut V)> {
        self.entries.iter_mut().map(|(id, value)| (&*id, value))
    }

    /// The ids in ascending order.
    pub fn keys(&self) -> impl Iterator<Item = &PeerId> {
        self.entries.iter().map(|(id, _)| id)
    }

    /// The values in ascending id order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, value)| value)
    }

    /// Points the index at the entries from position `from` on (they moved).
    fn reindex(&mut self, from: usize) {
        for (i, (id, _)) in self.entries.iter().enumerate().skip(from) {
            self.index.insert(*id, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any sequence of inserts and removes leaves the table equal to a `BTreeMap` given
        /// the same sequence, in content and in iteration order.
        #[test]
        fn behaves_like_a_btree_map(ops in proptest::collection::vec((0usize..12, any::<bool>(), any::<u8>()), 0..80)) {
            let ids: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
            let mut table = PeerTable::new();
            let mut model = BTreeMap::new();
            for (which, insert, value) in ops {
                let id = ids[which];
                if insert {
                    prop_assert_eq!(table.insert(id, value), model.insert(id, value));
                } else {
                    prop_assert_eq!(table.remove(&id), model.remove(&id));
                }
                prop_assert_eq!(table.len(), model.len());
                let ours: Vec<(PeerId, u8)> = table.iter().map(|(k, v)| (*k, *v)).collect();
                let theirs: Vec<(PeerId, u8)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(ours, theirs);
                for id in &ids {
                    prop_assert_eq!(table.get(id), model.get(id));
                }
            }
        }
    }
}
