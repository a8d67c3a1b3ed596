//! [`PeerTable`]: a map from node id to a value with the iteration order of a `BTreeMap`
//! (ascending `PeerId`, so everything built on it is deterministic) and hash lookups.
//!
//! Every heartbeat looks its sender up in the member table, so the lookup is laid out for the
//! cache: at a thousand members a node's table is far larger than the caches, and each lookup
//! lands somewhere cold. The entries (id and value side by side) sit in an open-addressing
//! array with linear probing, so a lookup goes straight from the hash to the entry: the id it
//! compares and the value it returns are adjacent, one cold region instead of three (an index
//! bucket, then the id, then the value, as in the layout this replaced). The ascending order
//! is a separate list of slot numbers, read only by iteration.
//!
//! Inserting a new id costs O(n) (its place in the order); removing one (a removal or a
//! retain: rare) rebuilds the table.

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
    // The low bits pick the slot: fold the high bits in.
    hash ^ (hash >> 29)
}

/// A map keyed by [`PeerId`], iterated in ascending id order.
#[derive(Debug, Clone)]
pub struct PeerTable<V> {
    /// Open addressing with linear probing; empty or a power of two, at least twice the length.
    slots: Vec<Option<(PeerId, V)>>,
    /// The occupied slots in ascending id order.
    order: Vec<u32>,
}

impl<V> Default for PeerTable<V> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            order: Vec::new(),
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
        self.order.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The slot holding `id`, or the empty slot where it would go (`Err`); `None` when the
    /// table has no slots yet.
    fn probe(&self, id: &PeerId) -> Option<Result<usize, usize>> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = hash_id(id) as usize & mask;
        loop {
            match &self.slots[at] {
                None => return Some(Err(at)),
                Some((other, _)) if other == id => return Some(Ok(at)),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    /// The slot of `id`.
    fn position(&self, id: &PeerId) -> Option<usize> {
        self.probe(id)?.ok()
    }

    /// The entry in slot `at` (one the order lists, so occupied).
    fn entry(&self, at: u32) -> Option<(&PeerId, &V)> {
        self.slots[at as usize].as_ref().map(|(id, v)| (id, v))
    }

    /// Whether `id` is in it.
    pub fn contains_key(&self, id: &PeerId) -> bool {
        self.position(id).is_some()
    }

    /// The value of `id`.
    pub fn get(&self, id: &PeerId) -> Option<&V> {
        let at = self.position(id)?;
        self.slots[at].as_ref().map(|(_, v)| v)
    }

    /// The value of `id`, to change.
    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut V> {
        let at = self.position(id)?;
        self.slots[at].as_mut().map(|(_, v)| v)
    }

    /// Sets the value of `id`; returns the one it replaced.
    pub fn insert(&mut self, id: PeerId, value: V) -> Option<V> {
        if let Some(Ok(at)) = self.probe(&id)
            && let Some((_, old)) = self.slots[at].as_mut()
        {
            return Some(std::mem::replace(old, value));
        }
        if self.slots.len() < (self.order.len() + 1) * 2 {
            self.grow((self.order.len() + 1) * 4);
        }
        let Some(Err(at)) = self.probe(&id) else {
            unreachable!("a table with room has an empty slot for a new id");
        };
        let place = self
            .order
            .partition_point(|&o| self.entry(o).is_some_and(|(other, _)| *other < id));
        self.slots[at] = Some((id, value));
        self.order.insert(place, at as u32);
        None
    }

    /// Takes `id` out; returns its value.
    pub fn remove(&mut self, id: &PeerId) -> Option<V> {
        let at = self.position(id)?;
        let (_, value) = self.slots[at].take()?;
        self.order.retain(|&o| o as usize != at);
        // The ids probed past this slot must be found again: rebuild.
        self.rebuild(self.slots.len());
        Some(value)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.order.clear();
    }

    /// Keeps only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&PeerId, &mut V) -> bool) {
        for &at in &self.order {
            let slot = &mut self.slots[at as usize];
            if let Some((id, value)) = slot.as_mut()
                && !keep(id, value)
            {
                *slot = None;
            }
        }
        let slots = &self.slots;
        self.order.retain(|&at| slots[at as usize].is_some());
        self.rebuild(self.slots.len());
    }

    /// The entries in ascending id order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &V)> {
        self.order.iter().filter_map(|&at| self.entry(at))
    }

    /// The entries in ascending id order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut V)> {
        let mut by_slot: Vec<Option<(&PeerId, &mut V)>> = self
            .slots
            .iter_mut()
            .map(|slot| slot.as_mut().map(|(id, v)| (&*id, v)))
            .collect();
        let ordered: Vec<(&PeerId, &mut V)> = self
            .order
            .iter()
            .filter_map(|&at| by_slot[at as usize].take())
            .collect();
        ordered.into_iter()
    }

    /// The ids in ascending order.
    pub fn keys(&self) -> impl Iterator<Item = &PeerId> {
        self.iter().map(|(id, _)| id)
    }

    /// The values in ascending id order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Grows to `size` slots (rounded up to a power of two, at least 8).
    fn grow(&mut self, size: usize) {
        self.rebuild(size);
    }

    /// Places every entry again in a table of at least `size` slots, keeping the order.
    fn rebuild(&mut self, size: usize) {
        let size = size.next_power_of_two().max(8);
        let mut old = std::mem::take(&mut self.slots);
        self.slots.resize_with(size, || None);
        let mask = size - 1;
        for at in &mut self.order {
            let Some((id, value)) = old[*at as usize].take() else {
                continue;
            };
            let mut to = hash_id(&id) as usize & mask;
            while self.slots[to].is_some() {
                to = (to + 1) & mask;
            }
            self.slots[to] = Some((id, value));
            *at = to as u32;
        }
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
                prop_assert_eq!(ours, theirs);
                for id in &ids {
                    prop_assert_eq!(table.get(id), model.get(id));
                }
            }
        }
    }
}
