//! [`PeerTable`]: a map from node id to a value with the iteration order of a `BTreeMap`
//! (ascending `PeerId`, so everything built on it is deterministic) and hash lookups.
//!
//! Every heartbeat looks its sender up in the member table, so the lookup is laid out for the
//! cache: at a thousand members a node's table is far larger than the caches, and each lookup
//! lands somewhere cold. The ids, the values and the index are three separate arrays:
//! - the index is open addressing over 8-byte buckets (a 32-bit tag of the hash and the
//!   position), 16 KiB at a thousand members, instead of a hash map whose buckets held a copy
//!   of each 80-byte `PeerId`;
//! - a lookup reads one bucket, the one id it must compare, and the one value it returns.
//!
//! Inserting a new id or removing one (a join, a removal: rare) costs O(n): the positions
//! after it move and the index is rebuilt.

use libp2p::PeerId;

/// A multiply-rotate hash of a node id (the FxHash construction): fixed, so every run is the
/// same, and cheap. Node ids are hashes of public keys, so their bytes are already uniform and
/// need no keyed hash; they come from members admitted by a token (or from messages whose MAC
/// verified), not from an attacker who could choose them to collide. Its order is never
/// observed: iteration goes through the sorted ids.
fn hash_id(id: &PeerId) -> u64 {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let multihash = id.as_ref();
    let mut hash = multihash.code().wrapping_mul(SEED);
    let mut add = |word: u64| hash = (hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    let digest = multihash.digest();
    let mut chunks = digest.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        add(u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        add(u64::from_le_bytes(word));
    }
    // The low bits pick the bucket, the high bits are the tag: mix them together.
    hash ^ (hash >> 29)
}

/// An index bucket: 0 when empty, else the tag (high half of the id's hash) and position + 1.
type Bucket = u64;

fn bucket(hash: u64, position: usize) -> Bucket {
    (hash & !0xffff_ffff) | (position as u64 + 1)
}

/// A map keyed by [`PeerId`], iterated in ascending id order.
#[derive(Debug, Clone)]
pub struct PeerTable<V> {
    /// The ids in ascending order.
    ids: Vec<PeerId>,
    /// `values[i]` belongs to `ids[i]`.
    values: Vec<V>,
    /// Open addressing with linear probing; a power of two, at least twice the length.
    index: Vec<Bucket>,
}

impl<V> Default for PeerTable<V> {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            values: Vec::new(),
            index: Vec::new(),
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
        self.ids.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The position of `id` in the sorted arrays.
    fn position(&self, id: &PeerId) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let hash = hash_id(id);
        let mask = self.index.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let found = self.index[at];
            if found == 0 {
                return None;
            }
            let position = (found & 0xffff_ffff) as usize - 1;
            if found >> 32 == hash >> 32 && self.ids[position] == *id {
                return Some(position);
            }
            at = (at + 1) & mask;
        }
    }

    /// The place of `id` in the iteration order: a scan that must tell one id apart compares
    /// places instead of ids (an id comparison is a call to `memcmp`).
    pub fn place_of(&self, id: &PeerId) -> Option<usize> {
        self.position(id)
    }

    /// The value of `id`, to change, looked for first at `place` (a hint from the caller,
    /// e.g. where `id` sits in another table with the same ids: checked, and a wrong one costs
    /// the ordinary lookup). A right hint skips the index and its cache miss.
    pub fn get_mut_near(&mut self, id: &PeerId, place: Option<usize>) -> Option<&mut V> {
        if let Some(place) = place
            && self.ids.get(place) == Some(id)
        {
            return self.values.get_mut(place);
        }
        self.get_mut(id)
    }

    /// Whether `id` is in it.
    pub fn contains_key(&self, id: &PeerId) -> bool {
        self.position(id).is_some()
    }

    /// The value of `id`.
    pub fn get(&self, id: &PeerId) -> Option<&V> {
        self.position(id).map(|i| &self.values[i])
    }

    /// The value of `id`, to change.
    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut V> {
        self.position(id).map(|i| &mut self.values[i])
    }

    /// Sets the value of `id`; returns the one it replaced.
    pub fn insert(&mut self, id: PeerId, value: V) -> Option<V> {
        if let Some(i) = self.position(&id) {
            return Some(std::mem::replace(&mut self.values[i], value));
        }
        let at = self.ids.partition_point(|other| *other < id);
        self.ids.insert(at, id);
        self.values.insert(at, value);
        if self.index.len() < self.ids.len() * 2 {
            self.reindex();
            return None;
        }
        if at + 1 < self.ids.len() {
            // The ids after it moved one place up (ids arriving in order, as from a state
            // file, skip this).
            for found in self.index.iter_mut().filter(|b| **b != 0) {
                if (*found & 0xffff_ffff) as usize > at {
                    *found += 1;
                }
            }
        }
        self.place(at);
        None
    }

    /// Takes `id` out; returns its value.
    pub fn remove(&mut self, id: &PeerId) -> Option<V> {
        let i = self.position(id)?;
        self.ids.remove(i);
        let value = self.values.remove(i);
        self.reindex();
        Some(value)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.values.clear();
        self.index.clear();
    }

    /// Keeps only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&PeerId, &mut V) -> bool) {
        let mut kept = 0;
        for i in 0..self.ids.len() {
            if keep(&self.ids[i], &mut self.values[i]) {
                self.ids.swap(kept, i);
                self.values.swap(kept, i);
                kept += 1;
            }
        }
        self.ids.truncate(kept);
        self.values.truncate(kept);
        self.reindex();
    }

    /// The entries in ascending id order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&PeerId, &V)> + ExactSizeIterator {
        self.ids.iter().zip(self.values.iter())
    }

    /// The entries in ascending id order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut V)> {
        self.ids.iter().zip(self.values.iter_mut())
    }

    /// The ids in ascending order.
    pub fn keys(&self) -> impl Iterator<Item = &PeerId> {
        self.ids.iter()
    }

    /// The values in ascending id order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }

    /// Rebuilds the index for the current positions, with room to grow to twice the length.
    fn reindex(&mut self) {
        let size = (self.ids.len() * 4).next_power_of_two().max(8);
        self.index.clear();
        self.index.resize(size, 0);
        for position in 0..self.ids.len() {
            self.place(position);
        }
    }

    /// Puts the id at `position` into the index (which has room for it).
    fn place(&mut self, position: usize) {
        let hash = hash_id(&self.ids[position]);
        let mask = self.index.len() - 1;
        let mut at = hash as usize & mask;
        while self.index[at] != 0 {
            at = (at + 1) & mask;
        }
        self.index[at] = bucket(hash, position);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any sequence of inserts, removes and retains leaves the table equal to a `BTreeMap`
        /// given the same sequence, in content and in iteration order (enough ids that the
        /// index grows and probes past occupied buckets).
        #[test]
        fn behaves_like_a_btree_map(ops in proptest::collection::vec((0usize..64, 0u8..3, any::<u8>()), 0..200)) {
            let ids: Vec<PeerId> = (0..64).map(|_| PeerId::random()).collect();
            let mut table = PeerTable::new();
            let mut model = BTreeMap::new();
            for (which, op, value) in ops {
                let id = ids[which];
                match op {
                    0 => prop_assert_eq!(table.remove(&id), model.remove(&id)),
                    1 => {
                        table.retain(|_, v| *v != value);
                        model.retain(|_, v| *v != value);
                    }
                    _ => prop_assert_eq!(table.insert(id, value), model.insert(id, value)),
                }
                prop_assert_eq!(table.len(), model.len());
                let ours: Vec<(PeerId, u8)> = table.iter().map(|(k, v)| (*k, *v)).collect();
                let theirs: Vec<(PeerId, u8)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(&ours, &theirs);
                for (k, id) in ids.iter().enumerate() {
                    prop_assert_eq!(table.get(id), model.get(id));
                    // A place hint, right or wrong, finds the same value as a lookup.
                    let expected = model.get(id).copied();
                    let hint = (usize::from(value) + k) % (table.len() + 2);
                    prop_assert_eq!(table.get_mut_near(id, Some(hint)).map(|v| *v), expected);
                    let place = table.place_of(id);
                    prop_assert_eq!(place.map(|p| ours[p].0), expected.map(|_| *id));
                    if let Some(place) = place {
                        prop_assert_eq!(table.get_mut_near(id, Some(place)).map(|v| *v), expected);
                    }
                }
            }
        }
    }
}
