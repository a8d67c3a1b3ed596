//! Rate limits for log lines that outsiders can cause (refused RPCs, refused joins): one line
//! per peer per window, and the count of what was held back in the next line for that peer, so
//! a flood of refused requests costs a few lines a minute instead of filling the disk.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long after a logged line the same peer's next ones are only counted.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered at most; beyond, the table starts again (a few extra lines, never more).
const MAX_PEERS: usize = 4096;

/// Per-peer log rate limiter.
#[derive(Debug, Default)]
pub struct LogLimit {
    peers: HashMap<PeerId, (Instant, u64)>,
}

impl LogLimit {
    /// `Some(held_back)` when a line for `peer` may be written now (`held_back` lines were
    /// suppressed since the last one); `None` when it must only be counted.
    pub fn admit(&mut self, peer: PeerId, now: Instant) -> Option<u64> {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer) {
            self.peers
                .retain(|_, (at, _)| now.duration_since(*at) < WINDOW);
            if self.peers.len() >= MAX_PEERS {
                self.peers.clear();
            }
        }
        match self.peers.get_mut(&peer) {
            Some((at, held)) if now.duration_since(*at) < WINDOW => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let suppressed = *held;
                *at = now;
                *held = 0;
                Some(suppressed)
            }
            None => {
                self.peers.insert(peer, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_then_the_count() {
        let mut limit = LogLimit::default();
        let (peer, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert_eq!(limit.admit(peer, t0), Some(0));
        for i in 1..=100 {
            assert_eq!(limit.admit(peer, t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.admit(other, t0), Some(0), "per peer");
        assert_eq!(limit.admit(peer, t0 + WINDOW), Some(100));
        assert_eq!(
            limit.admit(peer, t0 + WINDOW + Duration::from_secs(1)),
            None
        );
    }
}
