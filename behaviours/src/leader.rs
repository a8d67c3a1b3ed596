//! Leader election: the alive member with the smallest [`LeaderKey`] leads.
//!
//! The order is total and the same on every node: first the priority number (lower wins), then
//! the PeerId's canonical bytes (its multihash, `PeerId::to_bytes`) compared lexicographically
//! (smaller wins). Two nodes that see the same alive set therefore name the same leader, with no
//! messages exchanged.

use std::cmp::Ordering;

use libp2p::PeerId;

/// The key that orders candidates for leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    /// Lower numbers win.
    pub priority: u32,
    /// Breaks ties between equal priorities.
    pub node_id: PeerId,
}

impl Ord for LeaderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| self.node_id.to_bytes().cmp(&other.node_id.to_bytes()))
    }
}

impl PartialOrd for LeaderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The leader among `candidates`, or `None` when there are none.
pub fn elect(candidates: impl IntoIterator<Item = LeaderKey>) -> Option<PeerId> {
    candidates.into_iter().min().map(|key| key.node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_beats_peer_id() {
        let mut ids: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
        ids.sort_by_key(|id| id.to_bytes());
        let (small, large) = (ids[0], ids[1]);
        let winner = elect([
            LeaderKey {
                priority: 10,
                node_id: small,
            },
            LeaderKey {
                priority: 5,
                node_id: large,
            },
        ]);
        assert_eq!(winner, Some(large));
        let tie = elect([
            LeaderKey {
                priority: 5,
                node_id: large,
            },
            LeaderKey {
                priority: 5,
                node_id: small,
            },
        ]);
        assert_eq!(tie, Some(small));
    }

    #[test]
    fn order_of_candidates_does_not_matter() {
        let keys: Vec<LeaderKey> = (0..20)
            .map(|i| LeaderKey {
                priority: i % 3,
                node_id: PeerId::random(),
            })
            .collect();
        let forward = elect(keys.clone());
        let backward = elect(keys.into_iter().rev());
        assert_eq!(forward, backward);
        assert_eq!(elect([]), None);
    }
}
